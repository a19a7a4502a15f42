-- absurd-host schema, part 6: cancelling tasks, retrying failed tasks, reading task results.

-- Cancels a task and every open run of it. Terminal tasks are left alone (repeat cancels keep the
-- first cancelled_at). A worker still executing a cancelled run learns about it through AB001 on
-- its next heartbeat, checkpoint, await or completion.
--
-- Locking: the task's open runs first (by run_id), and the task row only at the very end. If a
-- worker is finishing one of those runs, this blocks until it commits; the task state is read only
-- afterwards (a new statement, hence a new snapshot), so a task completed meanwhile is seen as
-- terminal and left alone. The task row is not locked before the runs are updated because that
-- update may have to wait for a run that appeared after the first step (a retry created by a
-- concurrent fail_run) and is being claimed right now: the claimer takes the run and then wants
-- the task, so holding the task while waiting for that run would deadlock.
create function absurd.cancel_task(p_queue_name text, p_task_id uuid) returns void
language plpgsql
as $$
declare
    v_now   timestamptz := absurd.current_time();
    v_q     text := absurd.validate_queue_name(p_queue_name);
    v_r     text := format('absurd.%I', 'r_' || v_q);
    v_t     text := format('absurd.%I', 't_' || v_q);
    v_state text;
begin
    execute format('select r.run_id from %s r where r.task_id = $1 '
                   'and r.state not in (''completed'', ''failed'', ''cancelled'') '
                   'order by r.run_id for update', v_r)
        using p_task_id;

    execute format('select t.state from %s t where t.task_id = $1', v_t)
        into v_state
        using p_task_id;
    if v_state is null then
        raise exception 'Task "%" not found in queue "%"', p_task_id, v_q;
    end if;
    if v_state in ('completed', 'failed', 'cancelled') then
        return;
    end if;

    execute format($sql$
        with runs as (
            update %1$s r set state = 'cancelled', claimed_by = null, claim_expires_at = null
            where r.task_id = $1 and r.state not in ('completed', 'failed', 'cancelled')
        )
        delete from absurd.%2$I w where w.task_id = $1$sql$, v_r, 'w_' || v_q)
        using p_task_id;
    execute format('update %s t set state = ''cancelled'', cancelled_at = coalesce(t.cancelled_at, $2) '
                   'where t.task_id = $1 and t.state not in (''completed'', ''failed'', ''cancelled'')', v_t)
        using p_task_id, v_now;
end;
$$;

-- Gives a failed task another chance: in place (a new run of the same task, checkpoints kept) or,
-- with spawn_new, as a brand-new task with the same inputs (the failed one stays failed).
create function absurd.retry_task(p_queue_name text, p_task_id uuid, p_options jsonb default '{}')
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
as $$
declare
    v_now          timestamptz := absurd.current_time();
    v_q            text := absurd.validate_queue_name(p_queue_name);
    v_options      jsonb := coalesce(p_options, '{}'::jsonb);
    v_requested    integer;
    v_task         record;
    v_spawn_opts   jsonb;
    v_new_run      uuid;
begin
    if v_options ? 'max_attempts' and jsonb_typeof(v_options -> 'max_attempts') <> 'null' then
        v_requested := (v_options ->> 'max_attempts')::integer;
        if v_requested < 1 then
            raise exception 'max_attempts must be >= 1';
        end if;
    end if;

    execute format('select t.task_name, t.params, t.headers, t.retry_strategy, t.max_attempts, '
                   't.cancellation, t.state, t.attempts from absurd.%I t where t.task_id = $1 for update',
                   't_' || v_q)
        into v_task
        using p_task_id;
    if v_task.state is null then
        raise exception 'Task "%" not found in queue "%"', p_task_id, v_q;
    end if;
    if v_task.state <> 'failed' then
        raise exception 'Task "%" is not currently failed in queue "%"', p_task_id, v_q;
    end if;

    if coalesce((v_options ->> 'spawn_new')::boolean, false) then
        -- Only the options that were set on the old task are passed on; no idempotency key.
        v_spawn_opts := '{}'::jsonb;
        if v_task.headers is not null then
            v_spawn_opts := v_spawn_opts || jsonb_build_object('headers', v_task.headers);
        end if;
        if v_task.retry_strategy is not null then
            v_spawn_opts := v_spawn_opts || jsonb_build_object('retry_strategy', v_task.retry_strategy);
        end if;
        if coalesce(v_requested, v_task.max_attempts) is not null then
            v_spawn_opts := v_spawn_opts
                || jsonb_build_object('max_attempts', coalesce(v_requested, v_task.max_attempts));
        end if;
        if v_task.cancellation is not null then
            v_spawn_opts := v_spawn_opts || jsonb_build_object('cancellation', v_task.cancellation);
        end if;
        return query select s.task_id, s.run_id, s.attempt, s.created
                     from absurd.spawn_task(v_q, v_task.task_name, v_task.params, v_spawn_opts) s;
        return;
    end if;

    v_requested := coalesce(v_requested, coalesce(v_task.max_attempts, v_task.attempts) + 1);
    if v_requested <= v_task.attempts then
        raise exception 'max_attempts (%) must be greater than current attempts (%)',
            v_requested, v_task.attempts;
    end if;

    v_new_run := absurd.portable_uuidv7();
    execute format($sql$
        with run as (
            insert into absurd.%1$I (run_id, task_id, attempt, state, available_at, created_at)
            values ($1, $2, $3, 'pending', $5, $5)
        )
        update absurd.%2$I t
        set state = 'pending', attempts = $3, max_attempts = $4, last_attempt_run = $1,
            cancelled_at = null
        where t.task_id = $2$sql$, 'r_' || v_q, 't_' || v_q)
        using v_new_run, p_task_id, v_task.attempts + 1, v_requested, v_now;
    perform absurd._host_notify_ready(v_q);
    return query select p_task_id, v_new_run, v_task.attempts + 1, false;
end;
$$;

-- Snapshot of a task's outcome; zero rows for an unknown task.
create function absurd.get_task_result(p_queue_name text, p_task_id uuid)
returns table (task_id uuid, state text, result jsonb, failure_reason jsonb)
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    return query execute format($sql$
        select t.task_id, t.state,
               case when t.state = 'completed' then t.completed_payload end,
               case when t.state = 'failed' then
                   (select r.failure_reason from absurd.%2$I r where r.run_id = t.last_attempt_run)
               end
        from absurd.%1$I t
        where t.task_id = $1$sql$, 't_' || v_q, 'r_' || v_q)
        using p_task_id;
end;
$$;
