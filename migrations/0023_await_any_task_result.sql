-- absurd-host schema, part 23: waiting for whichever of several tasks ends first
-- (`await-any-task-result`, WIT absurd:task@0.2.1; absurd-host additions, the 0.5.1 interface is
-- unchanged).
--
-- A run waiting for any of N tasks suspends as for an event, on an event of its own queue that
-- only this wait uses:
--     $absurd_host.any_done:<waiter task id>:<step name>
-- absurd.await_any_task_result registers the wait once per awaited task in
-- absurd.task_any_waiters (with the task's position in the waiter's list), then reads the
-- tasks in list order, each FOR SHARE (the lost wake-up argument of migration 0019): the first
-- one found ended answers at once. If none has, the run waits on the event. The task-done
-- trigger (absurd._host_task_done, replaced here) emits the event when one of them ends, with
-- `{"index", "task_id", "queue", "state", "result" | "failure"}`, and drops the wait's other
-- registrations. Absurd's first emit of an event wins and emit_event writes the payload as the
-- waiter's checkpoint, so the task recorded is the one that ended first, and a replay returns
-- it again whatever ended since.
--
-- The registry is bounded by what runs may do (the host's max_awaits per call) and emptied when
-- the first awaited task ends (or, after a timeout, as the others end).

create table absurd.task_any_waiters (
    child_queue   text not null,
    child_task_id uuid not null,
    waiter_queue  text not null,
    event_name    text not null,
    position      integer not null,
    created_at    timestamptz not null default now(),
    primary key (child_queue, child_task_id, waiter_queue, event_name)
);

create index task_any_waiters_event on absurd.task_any_waiters (waiter_queue, event_name);

-- The event a wait for any of several tasks waits on.
create function absurd._host_any_done_event(p_waiter_task_id uuid, p_step_name text)
returns text
language sql
immutable
as $$
    select '$absurd_host.any_done:' || p_waiter_task_id::text || ':' || p_step_name
$$;

-- Migration 0019's trigger, plus the waits for any of several tasks.
create or replace function absurd._host_task_done() returns trigger
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
       and not exists (select 1 from absurd.task_children c where c.parent_queue = v_q)
       and not exists (select 1 from absurd.task_any_waiters a where a.child_queue = v_q) then
        return null;
    end if;
    for v_row in
        select n.task_id, n.state, n.completed_payload, n.last_attempt_run
        from done_new n
        where n.state in ('completed', 'failed', 'cancelled')
          and (exists (select 1 from absurd.task_result_waiters w
                       where w.child_queue = v_q and w.child_task_id = n.task_id)
               or exists (select 1 from absurd.task_children c
                          where c.parent_queue = v_q and c.parent_task_id = n.task_id)
               or exists (select 1 from absurd.task_any_waiters a
                          where a.child_queue = v_q and a.child_task_id = n.task_id))
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
        for v_w in
            delete from absurd.task_any_waiters a
            where a.child_queue = v_q and a.child_task_id = v_row.task_id
            returning a.waiter_queue, a.event_name, a.position
        loop
            if to_regclass(format('absurd.%I', 'e_' || v_w.waiter_queue)) is not null then
                perform absurd.emit_event(v_w.waiter_queue, v_w.event_name,
                    v_outcome || jsonb_build_object('index', v_w.position,
                                                    'task_id', v_row.task_id::text,
                                                    'queue', v_q));
            end if;
            -- The first to end answers the wait: its other tasks need not wake it.
            delete from absurd.task_any_waiters a
            where a.waiter_queue = v_w.waiter_queue and a.event_name = v_w.event_name;
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

-- Waits, for a running run, until any of the tasks (p_child_queues[i], p_child_task_ids[i])
-- has ended. Returns (false, answer) when one has (or the step's checkpoint holds the answer
-- already), else what await_event returns for the wait's event (suspend, or a timeout's
-- (false, null)). The answer is written as the step's checkpoint.
create function absurd.await_any_task_result(
    p_queue_name     text,
    p_task_id        uuid,
    p_run_id         uuid,
    p_step_name      text,
    p_child_queues   text[],
    p_child_task_ids uuid[],
    p_timeout        integer default null
)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
as $$
declare
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_n       integer := coalesce(cardinality(p_child_task_ids), 0);
    v_event   text;
    v_cq      text;
    v_state   text;
    v_result  jsonb;
    v_failure jsonb;
    v_outcome jsonb;
begin
    if p_step_name is null or length(trim(p_step_name)) = 0 then
        raise exception 'step_name must be provided';
    end if;
    if v_n = 0 or coalesce(cardinality(p_child_queues), 0) <> v_n then
        raise exception 'await_any_task_result needs one queue per task and at least one task (got % queues, % tasks)',
            coalesce(cardinality(p_child_queues), 0), v_n;
    end if;
    execute format('select c.state from absurd.%I c where c.task_id = $1 and c.checkpoint_name = $2 '
                   'and c.state is not null', 'c_' || v_q)
        into v_outcome using p_task_id, p_step_name;
    if v_outcome is not null then
        return query select false, v_outcome;
        return;
    end if;
    v_event := absurd._host_any_done_event(p_task_id, p_step_name);
    for i in 1 .. v_n loop
        v_cq := p_child_queues[i];
        if to_regclass(format('absurd.%I', 't_' || v_cq)) is null then
            raise exception 'Queue "%" does not exist', v_cq;
        end if;
        perform absurd._host_install_task_done_trigger(v_cq);
        insert into absurd.task_any_waiters (child_queue, child_task_id, waiter_queue, event_name, position)
        values (v_cq, p_child_task_ids[i], v_q, v_event, i - 1)
        on conflict do nothing;
    end loop;
    for i in 1 .. v_n loop
        v_cq := p_child_queues[i];
        -- As in await_task_result: the lock alone first, then the payload at a fresh snapshot.
        execute format('select t.state from absurd.%I t where t.task_id = $1 for share', 't_' || v_cq)
            into v_state using p_child_task_ids[i];
        if v_state is null then
            raise exception 'Task "%" not found in queue "%"', p_child_task_ids[i], v_cq;
        end if;
        v_result := null;
        v_failure := null;
        if v_state in ('completed', 'failed') then
            execute format('select t.completed_payload, r.failure_reason from absurd.%I t '
                           'left join absurd.%I r on r.run_id = t.last_attempt_run and t.state = ''failed'' '
                           'where t.task_id = $1', 't_' || v_cq, 'r_' || v_cq)
                into v_result, v_failure using p_child_task_ids[i];
        end if;
        v_outcome := absurd._host_task_outcome(v_state, v_result, v_failure);
        if v_outcome is not null then
            delete from absurd.task_any_waiters a where a.waiter_queue = v_q and a.event_name = v_event;
            v_outcome := v_outcome || jsonb_build_object('index', i - 1,
                                                         'task_id', p_child_task_ids[i]::text,
                                                         'queue', v_cq);
            perform absurd.set_task_checkpoint_state(v_q, p_task_id, p_step_name, v_outcome, p_run_id, null);
            return query select false, v_outcome;
            return;
        end if;
    end loop;
    return query
        select a.should_suspend, a.payload
        from absurd.await_event(v_q, p_task_id, p_run_id, p_step_name, v_event, p_timeout) a;
end;
$$;
