-- absurd-host schema, part 4: settling a claimed run (complete, fail/retry, sleep) and heartbeats.
--
-- Lock order, everywhere in this schema: run row(s) first, then the task row. cancel_task,
-- claim_task and emit_event follow the same order, which is what keeps concurrent settle/cancel/
-- claim calls from deadlocking.
--
-- The AB001/AB002 codes are how a worker learns to drop a run silently: AB001 "the task was
-- cancelled", AB002 "this run already failed" (typically its lease expired and a claim_task swept
-- it, so another attempt may already be running).

create function absurd.complete_run(p_queue_name text, p_run_id uuid, p_state jsonb default null)
returns void
language plpgsql
as $$
declare
    v_now     timestamptz := absurd.current_time();
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_task_id uuid;
    v_state   text;
begin
    -- Fast path. The guarded run update takes the run lock, and only then is the task locked.
    -- (Three single-table statements: dynamic SQL is planned on every call, and one combined
    -- statement with CTEs costs more to plan than these three together.) claimed_by and
    -- claim_expires_at are left as they are: they record who finished the run.
    execute format('update absurd.%I r set state = ''completed'', completed_at = $2, result = $3 '
                   'where r.run_id = $1 and r.state = ''running'' returning r.task_id', 'r_' || v_q)
        into v_task_id
        using p_run_id, v_now, p_state;
    if v_task_id is not null then
        execute format('update absurd.%I t set state = ''completed'', completed_payload = $2, '
                       'last_attempt_run = $3 where t.task_id = $1', 't_' || v_q)
            using v_task_id, p_state, p_run_id;
        execute format('delete from absurd.%I w where w.run_id = $1', 'w_' || v_q)
            using p_run_id;
        return;
    end if;

    -- Not running: say why.
    execute format('select r.state from absurd.%I r where r.run_id = $1', 'r_' || v_q)
        into v_state using p_run_id;
    if v_state is null then
        raise exception 'Run "%" not found in queue "%"', p_run_id, v_q;
    elsif v_state = 'cancelled' then
        raise exception using errcode = 'AB001', message = 'Task has been cancelled';
    elsif v_state = 'failed' then
        raise exception using errcode = 'AB002',
            message = format('Run "%s" has already failed in queue "%s"', p_run_id, v_q);
    end if;
    raise exception 'Run "%" is not currently running in queue "%"', p_run_id, v_q;
end;
$$;

-- Fails one attempt, then either schedules the next attempt as a new run, cancels the task (its
-- max_duration would be exceeded by the retry) or fails the task for good.
create function absurd.fail_run(
    p_queue_name text,
    p_run_id     uuid,
    p_reason     jsonb,
    p_retry_at   timestamptz default null
)
returns void
language plpgsql
as $$
declare
    v_now          timestamptz := absurd.current_time();
    v_q            text := absurd.validate_queue_name(p_queue_name);
    v_t            text := format('absurd.%I', 't_' || v_q);
    v_r            text := format('absurd.%I', 'r_' || v_q);
    v_task_id      uuid;
    v_attempt      integer;
    v_state        text;
    v_strategy     jsonb;
    v_max_attempts integer;
    v_cancellation jsonb;
    v_first_start  timestamptz;
    v_retry        boolean;
    v_delay        double precision;
    v_retry_at     timestamptz;
    v_new_run      uuid;
    v_new_state    text;
begin
    execute format('select r.task_id, r.attempt, r.state from %s r where r.run_id = $1 for update', v_r)
        into v_task_id, v_attempt, v_state
        using p_run_id;
    if v_state is null then
        raise exception 'Run "%" cannot be failed in queue "%"', p_run_id, v_q;
    elsif v_state = 'cancelled' then
        raise exception using errcode = 'AB001', message = 'Task has been cancelled';
    elsif v_state = 'failed' then
        raise exception using errcode = 'AB002',
            message = format('Run "%s" has already failed in queue "%s"', p_run_id, v_q);
    elsif v_state not in ('running', 'sleeping') then
        raise exception 'Run "%" cannot be failed in queue "%"', p_run_id, v_q;
    end if;

    execute format('select t.retry_strategy, t.max_attempts, t.cancellation, t.first_started_at '
                   'from %s t where t.task_id = $1 for update', v_t)
        into v_strategy, v_max_attempts, v_cancellation, v_first_start
        using v_task_id;

    -- claimed_by/claim_expires_at stay: they record whose lease this attempt was.
    execute format($sql$
        with run as (
            update %1$s r
            set state = 'failed', failed_at = $2, failure_reason = $3, wake_event = null
            where r.run_id = $1
        )
        delete from %2$s w where w.run_id = $1$sql$, v_r, format('absurd.%I', 'w_' || v_q))
        using p_run_id, v_now, p_reason;

    v_retry := v_max_attempts is null or v_attempt + 1 <= v_max_attempts;
    if v_retry then
        if p_retry_at is not null then
            v_retry_at := p_retry_at;
        else
            -- A strategy stored before validation existed may be invalid: that fails the task
            -- permanently instead of making every failure of it an error. The subtransaction of
            -- this block is only paid when there is a strategy to evaluate.
            if v_strategy is null then
                v_delay := 0;
            else
                begin
                    v_delay := absurd.retry_delay_seconds(v_strategy, v_attempt);
                exception when sqlstate 'AB003' then
                    v_retry := false;
                end;
            end if;
            v_retry_at := v_now + v_delay * interval '1 second';
        end if;
        v_retry_at := greatest(v_retry_at, v_now);
    end if;

    if v_retry
       and v_first_start is not null
       and jsonb_typeof(v_cancellation -> 'max_duration') is not null
       and extract(epoch from v_retry_at - v_first_start) >= (v_cancellation ->> 'max_duration')::numeric
    then
        -- The retry would start after the task's max_duration: cancel instead of retrying.
        execute format('update %s t set state = ''cancelled'', cancelled_at = coalesce(t.cancelled_at, $2) '
                       'where t.task_id = $1', v_t)
            using v_task_id, v_now;
    elsif v_retry then
        v_new_run := absurd.portable_uuidv7();
        v_new_state := case when v_retry_at > v_now then 'sleeping' else 'pending' end;
        execute format($sql$
            with run as (
                insert into %1$s (run_id, task_id, attempt, state, available_at, created_at)
                values ($1, $2, $3, $4, $5, $6)
            )
            update %2$s t
            set state = $4, attempts = $3, last_attempt_run = $1
            where t.task_id = $2$sql$, v_r, v_t)
            using v_new_run, v_task_id, v_attempt + 1, v_new_state, v_retry_at, v_now;
        -- Due now: wake a claimer. Due later: let idle workers re-arm their timers.
        perform absurd._host_notify_ready(v_q);
    else
        execute format('update %s t set state = ''failed'', last_attempt_run = $2 where t.task_id = $1', v_t)
            using v_task_id, p_run_id;
    end if;
end;
$$;

-- Puts a running run to sleep until p_wake_at; the same run (same attempt) is claimed again then.
create function absurd.schedule_run(p_queue_name text, p_run_id uuid, p_wake_at timestamptz)
returns void
language plpgsql
as $$
declare
    v_now     timestamptz := absurd.current_time();
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_done    integer;
begin
    execute format($sql$
        with run as (
            update absurd.%1$I r
            set state = 'sleeping', available_at = $2, wake_event = null,
                claimed_by = null, claim_expires_at = null
            where r.run_id = $1 and r.state = 'running'
            returning r.task_id
        ), task as (
            update absurd.%2$I t set state = 'sleeping' from run where t.task_id = run.task_id
        )
        select count(*) from run$sql$, 'r_' || v_q, 't_' || v_q)
        into v_done
        using p_run_id, p_wake_at;
    if v_done = 0 then
        raise exception 'Run "%" is not currently running in queue "%"', p_run_id, v_q;
    end if;
    -- Due now or later: either way idle workers should look (claim, or re-arm their timer).
    perform absurd._host_notify_ready(v_q);
end;
$$;

-- Heartbeat: the lease now ends p_extend_by seconds from now (not from the old expiry).
create function absurd.extend_claim(p_queue_name text, p_run_id uuid, p_extend_by integer)
returns void
language plpgsql
as $$
declare
    v_now        timestamptz := absurd.current_time();
    v_q          text;
    v_done       integer;
    v_state      text;
    v_task_state text;
    v_expires    timestamptz;
begin
    if p_extend_by is null or p_extend_by <= 0 then
        raise exception 'extend_by must be > 0';
    end if;
    v_q := absurd.validate_queue_name(p_queue_name);

    -- Fast path: a running, leased run of a live task gets its lease moved.
    execute format($sql$
        with run as (
            update absurd.%1$I r
            set claim_expires_at = $2 + $3 * interval '1 second'
            where r.run_id = $1 and r.state = 'running' and r.claim_expires_at is not null
              and not exists (select 1 from absurd.%2$I t
                              where t.task_id = r.task_id and t.state = 'cancelled')
            returning 1
        )
        select count(*) from run$sql$, 'r_' || v_q, 't_' || v_q)
        into v_done
        using p_run_id, v_now, p_extend_by;
    if v_done > 0 then
        return;
    end if;

    execute format('select r.state, r.claim_expires_at, t.state from absurd.%I r '
                   'left join absurd.%I t on t.task_id = r.task_id where r.run_id = $1',
                   'r_' || v_q, 't_' || v_q)
        into v_state, v_expires, v_task_state
        using p_run_id;
    if v_state is null then
        raise exception 'Run "%" not found in queue "%"', p_run_id, v_q;
    elsif v_task_state = 'cancelled' then
        raise exception using errcode = 'AB001', message = 'Task has been cancelled';
    elsif v_state = 'failed' then
        raise exception using errcode = 'AB002',
            message = format('Run "%s" has already failed in queue "%s"', p_run_id, v_q);
    elsif v_state <> 'running' then
        raise exception 'Run "%" is not currently running in queue "%"', p_run_id, v_q;
    end if;
    raise exception 'Run "%" does not have an active claim in queue "%"', p_run_id, v_q;
end;
$$;
