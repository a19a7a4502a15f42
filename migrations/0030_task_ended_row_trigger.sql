-- absurd-host schema, part 30: the task-done trigger runs for the tasks that end, not for
-- every statement that updates a task.
--
-- Why: migration 0019's trigger is statement-level, with the statement's new rows as a
-- transition table. Once a queue has it (a task of the queue was awaited or had a child), every
-- UPDATE of t_<queue> calls it, whatever the update: a claim, a suspension, a wake-up, a lease
-- renewal's task update. In a workflow queue the registries are never empty while a workflow
-- runs, so each call went on to scan its transition table. Measured with pg_stat_user_functions
-- on a workflow chain, a stage made about five such calls, one of which had a task that ended,
-- and together they took about a third of the stage's database time.
--
-- What this does: the trigger `absurd_task_ended` is a row-level AFTER UPDATE trigger with
--     WHEN (new.state in ('completed', 'failed', 'cancelled'))
-- which Postgres checks for each updated row without calling any function; the function runs
-- only for a row that is terminal after the update, and does for that row what 0019's (as
-- replaced by 0023) did for each such row of its transition table: wake the task's result
-- waiters and its waits for any of several tasks, and cancel its unfinished children when it
-- was cancelled. Row-level AFTER triggers fire at the end of the statement, in the updating
-- transaction, as the statement-level one did, so 0019's lost wake-up argument (the waiter
-- registers, then reads the task FOR SHARE) holds unchanged. A batch that ends N tasks now
-- makes N calls instead of one, each of them the per-row work the one call did anyway, and no
-- statement copies its rows into a transition table any more.
--
-- _host_install_task_done_trigger installs this trigger from now on; the queues that have
-- 0019's trigger get this one instead, below. 0019's function stays, unused.

create function absurd._host_task_ended() returns trigger
language plpgsql
as $$
declare
    v_q       text := tg_argv[0];
    v_w       record;
    v_c       record;
    v_failure jsonb;
    v_outcome jsonb;
    v_open    boolean;
begin
    -- Most tasks that end have nobody waiting and no children: three index probes.
    if not (exists (select 1 from absurd.task_result_waiters w
                    where w.child_queue = v_q and w.child_task_id = new.task_id)
            or exists (select 1 from absurd.task_any_waiters a
                       where a.child_queue = v_q and a.child_task_id = new.task_id)
            or exists (select 1 from absurd.task_children c
                       where c.parent_queue = v_q and c.parent_task_id = new.task_id)) then
        return null;
    end if;

    if new.state = 'failed' then
        execute format('select r.failure_reason from absurd.%I r where r.run_id = $1', 'r_' || v_q)
            into v_failure using new.last_attempt_run;
    end if;
    v_outcome := absurd._host_task_outcome(new.state, new.completed_payload, v_failure);

    for v_w in
        delete from absurd.task_result_waiters w
        where w.child_queue = v_q and w.child_task_id = new.task_id
        returning w.waiter_queue
    loop
        -- A waiting queue dropped since: nobody left to wake there.
        if to_regclass(format('absurd.%I', 'e_' || v_w.waiter_queue)) is not null then
            perform absurd.emit_event(v_w.waiter_queue,
                                      absurd._host_task_done_event(v_q, new.task_id),
                                      v_outcome);
        end if;
    end loop;

    for v_w in
        delete from absurd.task_any_waiters a
        where a.child_queue = v_q and a.child_task_id = new.task_id
        returning a.waiter_queue, a.event_name, a.position
    loop
        if to_regclass(format('absurd.%I', 'e_' || v_w.waiter_queue)) is not null then
            perform absurd.emit_event(v_w.waiter_queue, v_w.event_name,
                v_outcome || jsonb_build_object('index', v_w.position,
                                                'task_id', new.task_id::text,
                                                'queue', v_q));
        end if;
        -- The first to end answers the wait: its other tasks need not wake it.
        delete from absurd.task_any_waiters a
        where a.waiter_queue = v_w.waiter_queue and a.event_name = v_w.event_name;
    end loop;

    -- A parent that ends forgets its children; a cancelled one cancels those still open.
    for v_c in
        delete from absurd.task_children c
        where c.parent_queue = v_q and c.parent_task_id = new.task_id
        returning c.child_queue, c.child_task_id
    loop
        if new.state = 'cancelled'
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
    return null;
end;
$$;

-- Installs the trigger on a queue's task table when it lacks it (checked first: CREATE TRIGGER
-- locks the table against writes), and drops 0019's trigger if the table still has it. Two
-- transactions racing to install it: the second waits for the first's lock, then finds the
-- trigger there. On a partitioned queue the trigger goes on the parent, and Postgres gives it
-- to every partition, present and future.
create or replace function absurd._host_install_task_done_trigger(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
    v_t regclass := to_regclass(format('absurd.%I', 't_' || v_q));
begin
    if v_t is null then
        return;
    end if;
    if not exists (select 1 from pg_trigger g where g.tgrelid = v_t and g.tgname = 'absurd_task_ended') then
        begin
            execute format('create trigger absurd_task_ended after update on %s for each row '
                           'when (new.state in (''completed'', ''failed'', ''cancelled'')) '
                           'execute function absurd._host_task_ended(%L)', v_t, v_q);
        exception when duplicate_object then
            null;
        end;
        -- Asked first: DROP TRIGGER locks the table even against readers, even when there is
        -- nothing to drop.
        if exists (select 1 from pg_trigger g where g.tgrelid = v_t and g.tgname = 'absurd_task_done') then
            execute format('drop trigger absurd_task_done on %s', v_t);
        end if;
    end if;
end;
$$;

-- The queues that have 0019's trigger.
do $$
declare
    v_q text;
begin
    for v_q in
        select substr(c.relname, 3)
        from pg_trigger g
        join pg_class c on c.oid = g.tgrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'absurd' and g.tgname = 'absurd_task_done' and c.relname like 't\_%'
        order by 1
    loop
        perform absurd._host_install_task_done_trigger(v_q);
    end loop;
end;
$$;
