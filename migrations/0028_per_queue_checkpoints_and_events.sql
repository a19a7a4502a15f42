-- absurd-host schema, part 28: each queue's own checkpoint write, event wait and event emit,
-- with plans Postgres keeps.
--
-- Why: set_task_checkpoint_state, await_event and emit_event serve every queue, so each builds
-- its statements as text for the queue at hand and runs them with EXECUTE, which parses and
-- plans them again on every call. Measured with auto_explain on a workflow's stage (an idle
-- server of this project's machine kind), the statements themselves ran in about a fifth of
-- each call: set_task_checkpoint_state 0.48 ms of which 0.06 ms executing, await_event 0.71 ms
-- of which 0.25 ms, emit_event (the task-done trigger waking a workflow) 1.20 ms of which
-- 0.55 ms. A workflow chain makes one of each per stage (docs/performance.md, "Workflows").
--
-- What this adds, for each queue <q>, generated like lease_/done_/next_ (migration 0011):
--   ckpt_<q>(task_id, step_name, state, owner_run, extend_claim_by)      set_task_checkpoint_state
--   wait_<q>(task_id, run_id, step_name, event_name, timeout)           await_event
--   emit_<q>(event_name, payload)                                       emit_event
-- Each is the interface function's body (migrations 0005 and 0011) with the queue's tables
-- named in the text instead of formatted in: same statements, same locks and lock order, same
-- fences, same errors, same wake-ups. The interface functions keep their names and signatures
-- and call the queue's own function when it has one (a queue made before this migration and
-- not made again, or one whose name is too long for the prefix, has not), so every caller
-- gets them: the host, the SDKs, absurdctl, and the SQL of migrations 0019-0027. Their former
-- bodies stay, renamed, for the queues without.
--
-- The prefixes are five characters: with a queue name of up to 57 bytes, every name fits
-- Postgres' 63-byte identifiers, as lease_<q> does.

create function absurd._host_install_step_paths(p_queue_name text) returns void
language plpgsql
as $gen$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    -- As for the claim functions: two sessions must not replace the same function at once.
    perform pg_advisory_xact_lock(hashtext('absurd-host step paths'), hashtext(v_q));

    -- %1$I checkpoints, %2$I runs, %3$I tasks, %4$I waits, %5$I events, %6$L the queue name,
    -- %7$I the function.
    execute format($ddl$
create or replace function absurd.%7$I(
    p_task_id uuid, p_step_name text, p_state jsonb, p_owner_run uuid, p_extend_claim_by integer)
returns void
language plpgsql
as $fn$
#variable_conflict use_column
declare
    v_now        timestamptz := absurd.current_time();
    v_attempt    integer;
    v_state      text;
    v_task_state text;
begin
    if p_step_name is null or btrim(p_step_name) = '' then
        raise exception 'step_name must be provided';
    end if;

    -- Lock the owner run (the lease may be extended) and fetch its task's state in one probe.
    select r.attempt, r.state, t.state into v_attempt, v_state, v_task_state
    from absurd.%2$I r
    left join absurd.%3$I t on t.task_id = r.task_id
    where r.run_id = p_owner_run
    for update of r;
    if v_attempt is null then
        raise exception 'Run "%%" not found for checkpoint', p_owner_run;
    end if;
    perform absurd._host_fence_run(%6$L, p_owner_run, nullif(v_state, 'cancelled'), v_task_state);

    -- Lease extension (only for a running, leased run) and the upsert in one statement. The
    -- upsert is skipped when the existing row belongs to a run with a higher attempt.
    with lease as (
        update absurd.%2$I r
        set claim_expires_at = v_now + p_extend_claim_by * interval '1 second'
        where p_extend_claim_by > 0 and r.run_id = p_owner_run and r.state = 'running'
          and r.claim_expires_at is not null
    )
    insert into absurd.%1$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
    values (p_task_id, p_step_name, p_state, 'committed', p_owner_run, v_now)
    on conflict (task_id, checkpoint_name) do update
    set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
        updated_at = excluded.updated_at
    where coalesce((select prev.attempt from absurd.%2$I prev where prev.run_id = c.owner_run_id), 0)
          <= v_attempt;
end;
$fn$
$ddl$, 'c_' || v_q, 'r_' || v_q, 't_' || v_q, 'w_' || v_q, 'e_' || v_q, v_q, 'ckpt_' || v_q);

    execute format($ddl$
create or replace function absurd.%7$I(
    p_task_id uuid, p_run_id uuid, p_step_name text, p_event_name text, p_timeout integer)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
as $fn$
#variable_conflict use_column
declare
    v_now           timestamptz := absurd.current_time();
    v_checkpoint    jsonb;
    v_found         boolean;
    v_payload       jsonb;
    v_run_state     text;
    v_wake_event    text;
    v_event_payload jsonb;
    v_task_state    text;
    v_available_at  timestamptz;
begin
    if p_event_name is null or btrim(p_event_name) = '' then
        raise exception 'event_name must be provided';
    end if;
    if p_timeout < 0 then
        raise exception 'timeout must be non-negative';
    end if;

    -- Replay: the step already resolved in an earlier execution.
    select c.state into v_checkpoint
    from absurd.%1$I c
    where c.task_id = p_task_id and c.checkpoint_name = p_step_name;
    if v_checkpoint is not null then
        return query select false, v_checkpoint;
        return;
    end if;

    -- Rendezvous with emit_event: make sure the event row exists, then hold a share lock on it
    -- until commit. The loop only repeats if cleanup_events removed the row in between.
    loop
        insert into absurd.%5$I (event_name, payload, emitted_at) values (p_event_name, null, 'epoch')
        on conflict (event_name) do nothing;
        select e.payload, true into v_payload, v_found
        from absurd.%5$I e where e.event_name = p_event_name
        for share;
        exit when v_found;
    end loop;

    select r.state, r.wake_event, r.event_payload, t.state
    into v_run_state, v_wake_event, v_event_payload, v_task_state
    from absurd.%2$I r
    left join absurd.%3$I t on t.task_id = r.task_id
    where r.run_id = p_run_id
    for update of r;
    if v_run_state is null then
        raise exception 'Run "%%" not found while awaiting event', p_run_id;
    end if;
    -- Only the task's cancellation fences an await (a failed run is refused further on).
    perform absurd._host_fence_run(%6$L, p_run_id, null, v_task_state);
    -- A payload delivered for an earlier wait has been consumed by now.
    if v_event_payload is not null then
        update absurd.%2$I r set event_payload = null where r.run_id = p_run_id;
    end if;
    if v_run_state <> 'running' then
        raise exception 'Run "%%" must be running to await events', p_run_id;
    end if;

    if v_payload is not null then
        -- Already emitted: resolve the step now and remember it for replays.
        insert into absurd.%1$I (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
        values (p_task_id, p_step_name, v_payload, 'committed', p_run_id, v_now)
        on conflict (task_id, checkpoint_name) do update
        set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
            updated_at = excluded.updated_at;
        return query select false, v_payload;
        return;
    end if;

    if v_wake_event = p_event_name and v_event_payload is null then
        -- This run was woken by its wait timing out (the claim dropped the expired wait).
        update absurd.%2$I r set wake_event = null where r.run_id = p_run_id;
        return query select false, null::jsonb;
        return;
    end if;

    -- Suspend: register the wait and put run and task to sleep until the event or the timeout.
    v_available_at := case when p_timeout is null then 'infinity'::timestamptz
                           else v_now + p_timeout * interval '1 second' end;
    with wait as (
        insert into absurd.%4$I as w (task_id, run_id, step_name, event_name, timeout_at, created_at)
        values (p_task_id, p_run_id, p_step_name, p_event_name,
                case when p_timeout is null then null else v_available_at end, v_now)
        on conflict (run_id, step_name) do update
        set task_id = excluded.task_id, event_name = excluded.event_name,
            timeout_at = excluded.timeout_at, created_at = excluded.created_at
    ), run as (
        update absurd.%2$I r
        set state = 'sleeping', wake_event = p_event_name, event_payload = null,
            claimed_by = null, claim_expires_at = null, available_at = v_available_at
        where r.run_id = p_run_id
        returning r.task_id
    )
    update absurd.%3$I t set state = 'sleeping' from run where t.task_id = run.task_id;
    -- A timeout gives the run a wake-up time: claim it now (zero timeout) or re-arm timers.
    if p_timeout is not null then
        perform absurd._host_notify_ready(%6$L);
    end if;
    return query select true, null::jsonb;
end;
$fn$
$ddl$, 'c_' || v_q, 'r_' || v_q, 't_' || v_q, 'w_' || v_q, 'e_' || v_q, v_q, 'wait_' || v_q);

    execute format($ddl$
create or replace function absurd.%7$I(p_event_name text, p_payload jsonb)
returns void
language plpgsql
as $fn$
#variable_conflict use_column
declare
    v_now     timestamptz := absurd.current_time();
    v_payload jsonb := coalesce(p_payload, 'null'::jsonb);
    v_emitted boolean;
    v_woken   integer;
begin
    if p_event_name is null or btrim(p_event_name) = '' then
        raise exception 'event_name must be provided';
    end if;

    -- The event row first. Filling a sentinel waits for any await_event holding its share
    -- lock; an already emitted event is left exactly as it is.
    insert into absurd.%5$I as e (event_name, payload, emitted_at)
    values (p_event_name, v_payload, v_now)
    on conflict (event_name) do update
    set payload = excluded.payload, emitted_at = excluded.emitted_at
    where e.payload is null
    returning true into v_emitted;
    if v_emitted is null then
        return;
    end if;

    -- Waits that already timed out are dropped without waking their runs.
    delete from absurd.%4$I w where w.event_name = p_event_name and w.timeout_at <= v_now;

    -- Wake every sleeping run waiting on the event: run first, then its checkpoint and task.
    with waiting as (
        select w.task_id, w.run_id, w.step_name from absurd.%4$I w where w.event_name = p_event_name
    ), run as (
        update absurd.%2$I r
        set state = 'pending', available_at = v_now, wake_event = null, event_payload = v_payload,
            claimed_by = null, claim_expires_at = null
        where r.run_id in (select waiting.run_id from waiting) and r.state = 'sleeping'
        returning r.run_id, r.task_id
    ), checkpoint as (
        insert into absurd.%1$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
        select distinct on (waiting.task_id, waiting.step_name)
               waiting.task_id, waiting.step_name, v_payload, 'committed', waiting.run_id, v_now
        from waiting join run on run.run_id = waiting.run_id
        order by waiting.task_id, waiting.step_name, waiting.run_id desc
        on conflict (task_id, checkpoint_name) do update
        set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
            updated_at = excluded.updated_at
    ), task as (
        update absurd.%3$I t set state = 'pending' from run where t.task_id = run.task_id
    ), done as (
        delete from absurd.%4$I w using run where w.run_id = run.run_id and w.event_name = p_event_name
    )
    select count(*) into v_woken from run;

    if v_woken > 0 then
        perform absurd._host_notify_ready(%6$L);
    end if;
end;
$fn$
$ddl$, 'c_' || v_q, 'r_' || v_q, 't_' || v_q, 'w_' || v_q, 'e_' || v_q, v_q, 'emit_' || v_q);
end;
$gen$;

-- The interface functions: the queue's own when it has one, else the former bodies.
alter function absurd.set_task_checkpoint_state(text, uuid, text, jsonb, uuid, integer)
    rename to _host_set_task_checkpoint_state_generic;
create function absurd.set_task_checkpoint_state(
    p_queue_name      text,
    p_task_id         uuid,
    p_step_name       text,
    p_state           jsonb,
    p_owner_run       uuid,
    p_extend_claim_by integer default null
)
returns void
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    if to_regprocedure(format('absurd.%I(uuid,text,jsonb,uuid,integer)', 'ckpt_' || v_q)) is null then
        perform absurd._host_set_task_checkpoint_state_generic(
            p_queue_name, p_task_id, p_step_name, p_state, p_owner_run, p_extend_claim_by);
        return;
    end if;
    execute format('select absurd.%I($1, $2, $3, $4, $5)', 'ckpt_' || v_q)
        using p_task_id, p_step_name, p_state, p_owner_run, p_extend_claim_by;
end;
$$;

alter function absurd.await_event(text, uuid, uuid, text, text, integer)
    rename to _host_await_event_generic;
create function absurd.await_event(
    p_queue_name text,
    p_task_id    uuid,
    p_run_id     uuid,
    p_step_name  text,
    p_event_name text,
    p_timeout    integer default null
)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    if to_regprocedure(format('absurd.%I(uuid,uuid,text,text,integer)', 'wait_' || v_q)) is null then
        return query select g.should_suspend, g.payload
            from absurd._host_await_event_generic(p_queue_name, p_task_id, p_run_id, p_step_name,
                                                  p_event_name, p_timeout) g;
        return;
    end if;
    return query execute format('select w.should_suspend, w.payload from absurd.%I($1, $2, $3, $4, $5) w',
                                'wait_' || v_q)
        using p_task_id, p_run_id, p_step_name, p_event_name, p_timeout;
end;
$$;

alter function absurd.emit_event(text, text, jsonb) rename to _host_emit_event_generic;
create function absurd.emit_event(p_queue_name text, p_event_name text, p_payload jsonb default null)
returns void
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    if to_regprocedure(format('absurd.%I(text,jsonb)', 'emit_' || v_q)) is null then
        perform absurd._host_emit_event_generic(p_queue_name, p_event_name, p_payload);
        return;
    end if;
    execute format('select absurd.%I($1, $2)', 'emit_' || v_q) using p_event_name, p_payload;
end;
$$;

-- Queues get their functions with their tables (both storage modes: the statements are the
-- same on a partitioned queue's parents), and lose them when they are dropped.
alter function absurd.ensure_queue_tables(text) rename to _host_ensure_queue_tables_before_step_paths;
create function absurd.ensure_queue_tables(p_queue_name text) returns void
language plpgsql
as $$
begin
    perform absurd._host_ensure_queue_tables_before_step_paths(p_queue_name);
    perform absurd._host_install_step_paths(p_queue_name);
end;
$$;

alter function absurd.drop_queue(text) rename to _host_drop_queue_before_step_paths;
create function absurd.drop_queue(p_queue_name text) returns void
language plpgsql
as $$
begin
    -- No name validation, like the original: over-long legacy names must stay droppable.
    if octet_length(p_queue_name) between 1 and 57 then
        execute format('drop function if exists absurd.%I(uuid, text, jsonb, uuid, integer)', 'ckpt_' || p_queue_name);
        execute format('drop function if exists absurd.%I(uuid, uuid, text, text, integer)', 'wait_' || p_queue_name);
        execute format('drop function if exists absurd.%I(text, jsonb)', 'emit_' || p_queue_name);
    end if;
    perform absurd._host_drop_queue_before_step_paths(p_queue_name);
end;
$$;

-- Queues that exist already. One that cannot have them (a legacy over-long name) keeps the
-- former bodies.
do $$
declare
    v_q text;
begin
    for v_q in select q.queue_name from absurd.queues q order by q.queue_name loop
        begin
            perform absurd._host_install_step_paths(v_q);
        exception when others then
            raise notice 'queue %: no per-queue checkpoint and event functions (%)', v_q, sqlerrm;
        end;
    end loop;
end;
$$;
