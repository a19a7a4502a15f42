-- absurd-host schema, part 19: waiting for another task's result, and cancelling a task's
-- children with it (absurd-host additions; the 0.5.1 interface is unchanged).
--
-- Waiting for a result (`await-task-result`, WIT absurd:task@0.2.0). A waiting run suspends
-- exactly as for an event: absurd.await_task_result registers the waiter, and if the awaited
-- task (the "child", whatever spawned it) is not finished yet, it calls absurd.await_event for
-- an internal event of the waiter's queue,
--     $absurd_host.task_done:<child queue>:<child task id>
-- with the step name the waiter chose (by default `$awaitTaskResult:<task id>`, as the SDKs).
-- When the child reaches a terminal state, a statement-level trigger on its queue's task table
-- emits that event with the outcome `{"state": "completed", "result": …}`,
-- `{"state": "failed", "failure": …}` or `{"state": "cancelled"}`: emit_event writes it as the
-- waiter's checkpoint and wakes the run, which replays it. The trigger sees every writer
-- (absurd-host's batched completions, complete_run/fail_run/cancel_task called by the Python
-- SDK's worker or absurdctl), so the wake-up is prompt whichever worker ran the child.
--
-- Lost wake-ups: the waiter registers itself, then reads the child's row FOR SHARE. A child's
-- transaction that is finishing holds that row's lock, so the read waits for it to commit and
-- sees the terminal state; a child that finishes later waits for the waiter's commit, and its
-- trigger then sees the registration.
--
-- Cancellation cascade. absurd.spawn_child_task spawns a task and records it as the child of
-- the spawning task. When a task is cancelled (by anyone, through cancel_task or a
-- cancellation policy), the same trigger cancels its children that have not finished, and
-- theirs in turn. A parent that finishes otherwise forgets its children (they run on).
--
-- Cost on the hot path: none for a queue whose tasks nobody ever waited for and that never
-- had children. The statement-level trigger is installed on a queue's task table the first
-- time a run waits for one of its tasks (await_task_result) or a task of it spawns a child
-- (spawn_child_task); from then on it costs one call per statement that updates the table,
-- which returns after two index probes of the registries when no task of the queue has
-- waiters or children, and otherwise looks only at the statement's terminal rows. Installing
-- it takes the table's SHARE ROW EXCLUSIVE lock once, for the rest of that short transaction.
--
-- Both registries are bounded by what runs may do (the host's max_awaits and max_spawns per
-- run) and emptied as tasks finish. A schema installed by `absurdctl init` has none of this:
-- the host then polls the child's result (see docs/workflows.md) and does not cascade.

create table absurd.task_result_waiters (
    child_queue   text not null,
    child_task_id uuid not null,
    waiter_queue  text not null,
    created_at    timestamptz not null default now(),
    primary key (child_queue, child_task_id, waiter_queue)
);

create table absurd.task_children (
    parent_queue   text not null,
    parent_task_id uuid not null,
    child_queue    text not null,
    child_task_id  uuid not null,
    created_at     timestamptz not null default now(),
    primary key (parent_queue, parent_task_id, child_queue, child_task_id)
);

-- The internal event a waiter in any queue waits on for the child (queue, task).
create function absurd._host_task_done_event(p_child_queue text, p_child_task_id uuid)
returns text
language sql
immutable
as $$
    select '$absurd_host.task_done:' || p_child_queue || ':' || p_child_task_id::text
$$;

-- The outcome of a finished task as the SDKs checkpoint it; null while it is not finished.
create function absurd._host_task_outcome(p_state text, p_result jsonb, p_failure jsonb)
returns jsonb
language sql
immutable
as $$
    select case p_state
        when 'completed' then jsonb_build_object('state', 'completed', 'result', coalesce(p_result, 'null'::jsonb))
        when 'failed' then jsonb_build_object('state', 'failed', 'failure', coalesce(p_failure, 'null'::jsonb))
        when 'cancelled' then jsonb_build_object('state', 'cancelled')
    end
$$;

-- The trigger: for each task of the statement that is now terminal and has waiters or
-- children, wake the waiters (one emit per waiting queue) and, when it was cancelled, cancel
-- its unfinished children.
create function absurd._host_task_done() returns trigger
language plpgsql
as $$
declare
    v_q       text := tg_argv[0];
    v_row     record;
    v_w       record;
    v_c       record;
    v_failure jsonb;
    v_outcome jsonb;
    v_open    boolean;
begin
    if not exists (select 1 from absurd.task_result_waiters w where w.child_queue = v_q)
       and not exists (select 1 from absurd.task_children c where c.parent_queue = v_q) then
        return null;
    end if;
    for v_row in
        select n.task_id, n.state, n.completed_payload, n.last_attempt_run
        from done_new n
        where n.state in ('completed', 'failed', 'cancelled')
          and (exists (select 1 from absurd.task_result_waiters w
                       where w.child_queue = v_q and w.child_task_id = n.task_id)
               or exists (select 1 from absurd.task_children c
                          where c.parent_queue = v_q and c.parent_task_id = n.task_id))
    loop
        v_failure := null;
        if v_row.state = 'failed' then
            execute format('select r.failure_reason from absurd.%I r where r.run_id = $1', 'r_' || v_q)
                into v_failure using v_row.last_attempt_run;
        end if;
        v_outcome := absurd._host_task_outcome(v_row.state, v_row.completed_payload, v_failure);
        for v_w in
            delete from absurd.task_result_waiters w
            where w.child_queue = v_q and w.child_task_id = v_row.task_id
            returning w.waiter_queue
        loop
            -- A waiting queue dropped since: nobody left to wake there.
            if to_regclass(format('absurd.%I', 'e_' || v_w.waiter_queue)) is not null then
                perform absurd.emit_event(v_w.waiter_queue,
                                          absurd._host_task_done_event(v_q, v_row.task_id),
                                          v_outcome);
            end if;
        end loop;
        for v_c in
            delete from absurd.task_children c
            where c.parent_queue = v_q and c.parent_task_id = v_row.task_id
            returning c.child_queue, c.child_task_id
        loop
            if v_row.state = 'cancelled'
               and to_regclass(format('absurd.%I', 't_' || v_c.child_queue)) is not null then
                execute format('select true from absurd.%I t where t.task_id = $1 '
                               'and t.state not in (''completed'', ''failed'', ''cancelled'')',
                               't_' || v_c.child_queue)
                    into v_open using v_c.child_task_id;
                if v_open then
                    perform absurd.cancel_task(v_c.child_queue, v_c.child_task_id);
                end if;
            end if;
        end loop;
    end loop;
    return null;
end;
$$;

-- Installs the trigger on a queue's task table when it lacks it (checked first: CREATE
-- TRIGGER locks the table against writes). Two transactions racing to install it: the second
-- waits for the first's lock, then finds the trigger there.
create function absurd._host_install_task_done_trigger(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
    v_t regclass := to_regclass(format('absurd.%I', 't_' || v_q));
begin
    if v_t is null then
        return;
    end if;
    if not exists (select 1 from pg_trigger g where g.tgrelid = v_t and g.tgname = 'absurd_task_done') then
        begin
            execute format('create trigger absurd_task_done after update on %s '
                           'referencing new table as done_new for each statement '
                           'execute function absurd._host_task_done(%L)', v_t, v_q);
        exception when duplicate_object then
            null;
        end;
    end if;
end;
$$;

-- Waits for the task p_child_task_id of p_child_queue on behalf of a running run. Returns
-- (false, outcome) when the child has finished (or the step's checkpoint holds it already),
-- else what await_event returns for the internal event (suspend, or a timeout's (false,
-- null)). The outcome is written as the step's checkpoint either way.
create function absurd.await_task_result(
    p_queue_name    text,
    p_task_id       uuid,
    p_run_id        uuid,
    p_step_name     text,
    p_child_queue   text,
    p_child_task_id uuid,
    p_timeout       integer default null
)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
as $$
declare
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_cq      text := absurd.validate_queue_name(p_child_queue);
    v_state   text;
    v_result  jsonb;
    v_failure jsonb;
    v_outcome jsonb;
begin
    if p_step_name is null or length(trim(p_step_name)) = 0 then
        raise exception 'step_name must be provided';
    end if;
    execute format('select c.state from absurd.%I c where c.task_id = $1 and c.checkpoint_name = $2 '
                   'and c.state is not null', 'c_' || v_q)
        into v_outcome using p_task_id, p_step_name;
    if v_outcome is not null then
        return query select false, v_outcome;
        return;
    end if;
    if to_regclass(format('absurd.%I', 't_' || v_cq)) is null then
        raise exception 'Queue "%" does not exist', v_cq;
    end if;
    perform absurd._host_install_task_done_trigger(v_cq);
    insert into absurd.task_result_waiters (child_queue, child_task_id, waiter_queue)
    values (v_cq, p_child_task_id, v_q)
    on conflict do nothing;
    -- The lock first, alone: a row locked after waiting is re-read at its latest version, but
    -- a table joined in the same statement would keep its older one (a failed task with the
    -- failure of its run still running). The next statement reads both at a fresh snapshot.
    execute format('select t.state from absurd.%I t where t.task_id = $1 for share', 't_' || v_cq)
        into v_state using p_child_task_id;
    if v_state is null then
        raise exception 'Task "%" not found in queue "%"', p_child_task_id, v_cq;
    end if;
    if v_state in ('completed', 'failed') then
        execute format('select t.completed_payload, r.failure_reason from absurd.%I t '
                       'left join absurd.%I r on r.run_id = t.last_attempt_run and t.state = ''failed'' '
                       'where t.task_id = $1', 't_' || v_cq, 'r_' || v_cq)
            into v_result, v_failure using p_child_task_id;
    end if;
    v_outcome := absurd._host_task_outcome(v_state, v_result, v_failure);
    if v_outcome is not null then
        -- Finished: no wake-up needed, for this waiter or any later one.
        delete from absurd.task_result_waiters w
        where w.child_queue = v_cq and w.child_task_id = p_child_task_id;
        perform absurd.set_task_checkpoint_state(v_q, p_task_id, p_step_name, v_outcome, p_run_id, null);
        return query select false, v_outcome;
        return;
    end if;
    return query
        select a.should_suspend, a.payload
        from absurd.await_event(v_q, p_task_id, p_run_id, p_step_name,
                                absurd._host_task_done_event(v_cq, p_child_task_id), p_timeout) a;
end;
$$;

-- spawn_task, recording the new task as a child of p_parent_task_id (of p_parent_queue), so
-- that cancelling the parent cancels it. The parent's row is read FOR SHARE first: a parent
-- cancelled meanwhile refuses the spawn (AB001), and a cancel that comes later waits for this
-- transaction and then finds the child.
create function absurd.spawn_child_task(
    p_queue_name     text,
    p_task_name      text,
    p_params         jsonb,
    p_options        jsonb,
    p_parent_queue   text,
    p_parent_task_id uuid
)
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
as $$
declare
    v_pq    text := absurd.validate_queue_name(p_parent_queue);
    v_state text;
    v_s     record;
begin
    perform absurd._host_install_task_done_trigger(v_pq);
    execute format('select t.state from absurd.%I t where t.task_id = $1 for share', 't_' || v_pq)
        into v_state using p_parent_task_id;
    if v_state is null then
        raise exception 'Task "%" not found in queue "%"', p_parent_task_id, v_pq;
    end if;
    if v_state = 'cancelled' then
        raise exception 'Task has been cancelled' using errcode = 'AB001';
    end if;
    select s.task_id, s.run_id, s.attempt, s.created into v_s
    from absurd.spawn_task(p_queue_name, p_task_name, p_params, p_options) s;
    if v_state not in ('completed', 'failed') then
        insert into absurd.task_children (parent_queue, parent_task_id, child_queue, child_task_id)
        values (v_pq, p_parent_task_id, absurd.validate_queue_name(p_queue_name), v_s.task_id)
        on conflict do nothing;
    end if;
    return query select v_s.task_id, v_s.run_id, v_s.attempt, v_s.created;
end;
$$;
