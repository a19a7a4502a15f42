-- absurd-host schema, part 5: step checkpoints, event waits and event emission.
--
-- Checkpoints are per task (not per run), so a retry replays the steps earlier attempts finished.
-- A write by an older attempt never overwrites one by a newer attempt: a zombie worker whose lease
-- expired must not clobber the state the current attempt is building on.
--
-- Events are named per queue, first emit wins, and the payload is immutable. An `e_` row whose
-- payload is SQL NULL is a "not emitted yet" sentinel created by await_event; an emitted event
-- without payload stores JSON null. The wake-up protocol relies on that row as a rendezvous:
-- await_event share-locks it (creating the sentinel if needed) before it touches the run or
-- registers its wait, and emit_event writes it before it looks for waiters. Whichever comes second
-- therefore waits for the first to commit and sees its effects, so no wake-up can be lost.

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
    v_now        timestamptz := absurd.current_time();
    v_q          text := absurd.validate_queue_name(p_queue_name);
    v_r          text := format('absurd.%I', 'r_' || v_q);
    v_attempt    integer;
    v_state      text;
    v_task_state text;
begin
    if p_step_name is null or btrim(p_step_name) = '' then
        raise exception 'step_name must be provided';
    end if;

    -- Lock the owner run (the lease may be extended) and fetch its task's state in one probe.
    execute format('select r.attempt, r.state, t.state from %s r '
                   'left join absurd.%I t on t.task_id = r.task_id '
                   'where r.run_id = $1 for update of r', v_r, 't_' || v_q)
        into v_attempt, v_state, v_task_state
        using p_owner_run;
    if v_attempt is null then
        raise exception 'Run "%" not found for checkpoint', p_owner_run;
    elsif v_task_state = 'cancelled' then
        raise exception using errcode = 'AB001', message = 'Task has been cancelled';
    elsif v_state = 'failed' then
        raise exception using errcode = 'AB002',
            message = format('Run "%s" has already failed in queue "%s"', p_owner_run, v_q);
    end if;

    -- Lease extension (only for a running, leased run) and the upsert in one statement. The
    -- upsert is skipped when the existing row belongs to a run with a higher attempt.
    execute format($sql$
        with lease as (
            update %1$s r
            set claim_expires_at = $6 + $7 * interval '1 second'
            where $7 > 0 and r.run_id = $4 and r.state = 'running' and r.claim_expires_at is not null
        )
        insert into absurd.%2$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
        values ($1, $2, $3, 'committed', $4, $6)
        on conflict (task_id, checkpoint_name) do update
        set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
            updated_at = excluded.updated_at
        where coalesce((select prev.attempt from %1$s prev where prev.run_id = c.owner_run_id), 0) <= $5
        $sql$, v_r, 'c_' || v_q)
        using p_task_id, p_step_name, p_state, p_owner_run, v_attempt, v_now, p_extend_claim_by;
end;
$$;

create function absurd.get_task_checkpoint_state(
    p_queue_name      text,
    p_task_id         uuid,
    p_step_name       text,
    p_include_pending boolean default false
)
returns table (checkpoint_name text, state jsonb, status text, owner_run_id uuid, updated_at timestamptz)
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    return query execute format(
        'select c.checkpoint_name, c.state, c.status, c.owner_run_id, c.updated_at '
        'from absurd.%I c where c.task_id = $1 and c.checkpoint_name = $2 '
        'and (c.status = ''committed'' or $3)', 'c_' || v_q)
        using p_task_id, p_step_name, coalesce(p_include_pending, false);
end;
$$;

-- Everything a run needs to replay its task: committed checkpoints except those written by a later
-- attempt (a checkpoint whose owner run was cleaned up stays visible).
create function absurd.get_task_checkpoint_states(p_queue_name text, p_task_id uuid, p_run_id uuid)
returns table (checkpoint_name text, state jsonb, status text, owner_run_id uuid, updated_at timestamptz)
language plpgsql
as $$
declare
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_task_id uuid;
    v_attempt integer;
begin
    execute format('select r.task_id, r.attempt from absurd.%I r where r.run_id = $1', 'r_' || v_q)
        into v_task_id, v_attempt
        using p_run_id;
    if v_task_id is null then
        raise exception 'Run "%" not found in queue "%"', p_run_id, v_q;
    end if;
    if v_task_id is distinct from p_task_id then
        raise exception 'Run "%" does not belong to task "%" in queue "%"', p_run_id, p_task_id, v_q;
    end if;

    return query execute format($sql$
        select c.checkpoint_name, c.state, c.status, c.owner_run_id, c.updated_at
        from absurd.%1$I c
        left join absurd.%2$I owner on owner.run_id = c.owner_run_id
        where c.task_id = $1 and c.status = 'committed'
          and (owner.run_id is null or owner.attempt <= $2)
        order by c.updated_at, c.checkpoint_name$sql$, 'c_' || v_q, 'r_' || v_q)
        using p_task_id, v_attempt;
end;
$$;

-- Returns (false, payload) when the step can proceed (checkpointed, already emitted, or woken by
-- timeout with payload NULL), or (true, NULL) after suspending the run; the worker must then stop
-- executing the task without completing or failing it.
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
    v_now           timestamptz := absurd.current_time();
    v_q             text := absurd.validate_queue_name(p_queue_name);
    v_r             text := format('absurd.%I', 'r_' || v_q);
    v_e             text := format('absurd.%I', 'e_' || v_q);
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
    execute format('select c.state from absurd.%I c where c.task_id = $1 and c.checkpoint_name = $2',
                   'c_' || v_q)
        into v_checkpoint
        using p_task_id, p_step_name;
    if v_checkpoint is not null then
        return query select false, v_checkpoint;
        return;
    end if;

    -- Rendezvous with emit_event: make sure the event row exists, then hold a share lock on it
    -- until commit. The loop only repeats if cleanup_events removed the row in between.
    loop
        execute format('insert into %s (event_name, payload, emitted_at) values ($1, null, ''epoch'') '
                       'on conflict (event_name) do nothing', v_e)
            using p_event_name;
        execute format('select e.payload, true from %s e where e.event_name = $1 for share', v_e)
            into v_payload, v_found
            using p_event_name;
        exit when v_found;
    end loop;

    execute format('select r.state, r.wake_event, r.event_payload, t.state from %s r '
                   'left join absurd.%I t on t.task_id = r.task_id '
                   'where r.run_id = $1 for update of r', v_r, 't_' || v_q)
        into v_run_state, v_wake_event, v_event_payload, v_task_state
        using p_run_id;
    if v_run_state is null then
        raise exception 'Run "%" not found while awaiting event', p_run_id;
    elsif v_task_state = 'cancelled' then
        raise exception using errcode = 'AB001', message = 'Task has been cancelled';
    end if;
    -- A payload delivered for an earlier wait has been consumed by now; do not let it leak into
    -- this one.
    if v_event_payload is not null then
        execute format('update %s r set event_payload = null where r.run_id = $1', v_r) using p_run_id;
    end if;
    if v_run_state <> 'running' then
        raise exception 'Run "%" must be running to await events', p_run_id;
    end if;

    if v_payload is not null then
        -- Already emitted: resolve the step now and remember it for replays.
        execute format($sql$
            insert into absurd.%I (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
            values ($1, $2, $3, 'committed', $4, $5)
            on conflict (task_id, checkpoint_name) do update
            set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
                updated_at = excluded.updated_at$sql$, 'c_' || v_q)
            using p_task_id, p_step_name, v_payload, p_run_id, v_now;
        return query select false, v_payload;
        return;
    end if;

    if v_wake_event = p_event_name and v_event_payload is null then
        -- This run was woken by its wait timing out (claim_task dropped the expired wait).
        execute format('update %s r set wake_event = null where r.run_id = $1', v_r) using p_run_id;
        return query select false, null::jsonb;
        return;
    end if;

    -- Suspend: register the wait and put run and task to sleep until the event or the timeout.
    v_available_at := case when p_timeout is null then 'infinity'::timestamptz
                           else v_now + p_timeout * interval '1 second' end;
    execute format($sql$
        with wait as (
            insert into absurd.%1$I as w (task_id, run_id, step_name, event_name, timeout_at, created_at)
            values ($1, $2, $3, $4, $5, $6)
            on conflict (run_id, step_name) do update
            set task_id = excluded.task_id, event_name = excluded.event_name,
                timeout_at = excluded.timeout_at, created_at = excluded.created_at
        ), run as (
            update %2$s r
            set state = 'sleeping', wake_event = $4, event_payload = null,
                claimed_by = null, claim_expires_at = null, available_at = $7
            where r.run_id = $2
            returning r.task_id
        )
        update absurd.%3$I t set state = 'sleeping' from run where t.task_id = run.task_id$sql$,
        'w_' || v_q, v_r, 't_' || v_q)
        using p_task_id, p_run_id, p_step_name, p_event_name,
              case when p_timeout is null then null else v_available_at end, v_now, v_available_at;
    -- A timeout gives the run a wake-up time: claim it now (zero timeout) or re-arm timers.
    if p_timeout is not null then
        perform absurd._host_notify_ready(v_q);
    end if;
    return query select true, null::jsonb;
end;
$$;

create function absurd.emit_event(p_queue_name text, p_event_name text, p_payload jsonb default null)
returns void
language plpgsql
as $$
declare
    v_now     timestamptz := absurd.current_time();
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_payload jsonb := coalesce(p_payload, 'null'::jsonb);
    v_w       text := format('absurd.%I', 'w_' || v_q);
    v_emitted boolean;
    v_woken   integer;
begin
    if p_event_name is null or btrim(p_event_name) = '' then
        raise exception 'event_name must be provided';
    end if;

    -- The event row first (see the header). Filling a sentinel waits for any await_event holding
    -- its share lock; an already emitted event is left exactly as it is.
    execute format($sql$
        insert into absurd.%I as e (event_name, payload, emitted_at) values ($1, $2, $3)
        on conflict (event_name) do update
        set payload = excluded.payload, emitted_at = excluded.emitted_at
        where e.payload is null
        returning true$sql$, 'e_' || v_q)
        into v_emitted
        using p_event_name, v_payload, v_now;
    if v_emitted is null then
        return;
    end if;

    -- Waits that already timed out are dropped without waking their runs: those runs wake (or
    -- have woken) through their own timeout.
    execute format('delete from %s w where w.event_name = $1 and w.timeout_at <= $2', v_w)
        using p_event_name, v_now;

    -- Wake every sleeping run waiting on the event: run first, then its checkpoint and task.
    execute format($sql$
        with waiting as (
            select w.task_id, w.run_id, w.step_name from %1$s w where w.event_name = $1
        ), run as (
            update absurd.%2$I r
            set state = 'pending', available_at = $3, wake_event = null, event_payload = $2,
                claimed_by = null, claim_expires_at = null
            where r.run_id in (select waiting.run_id from waiting) and r.state = 'sleeping'
            returning r.run_id, r.task_id
        ), checkpoint as (
            insert into absurd.%3$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
            select distinct on (waiting.task_id, waiting.step_name)
                   waiting.task_id, waiting.step_name, $2, 'committed', waiting.run_id, $3
            from waiting join run on run.run_id = waiting.run_id
            order by waiting.task_id, waiting.step_name, waiting.run_id desc
            on conflict (task_id, checkpoint_name) do update
            set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
                updated_at = excluded.updated_at
        ), task as (
            update absurd.%4$I t set state = 'pending' from run where t.task_id = run.task_id
        ), done as (
            delete from %1$s w using run where w.run_id = run.run_id and w.event_name = $1
        )
        select count(*) from run$sql$, v_w, 'r_' || v_q, 'c_' || v_q, 't_' || v_q)
        into v_woken
        using p_event_name, v_payload, v_now;

    if v_woken > 0 then
        perform absurd._host_notify_ready(v_q);
    end if;
end;
$$;
