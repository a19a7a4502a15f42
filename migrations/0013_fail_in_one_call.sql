-- absurd-host schema, part 13: settling a failure is one call.
--
-- Why: fail_run (the 0.5.1 interface) returns nothing, so after it a worker had to ask again
-- what the failure did before it could decide on dead-lettering: fail_run, then
-- get_task_result (did the task fail for good?), then a read of the failed task to copy it
-- into the dead-letter queue; and a failure the worker knows to be permanent (a non-retryable
-- error, the task type's own attempt cap) took a transaction of its own around two
-- statements to lower max_attempts first. Three to five round trips, where one does.
--
-- absurd.fail_run_outcome(queue, run_id, reason, final, retry_at) does, in one transaction:
--   * with `final`, lowers the task's max_attempts to this run's attempt (never raises it),
--     so this failure is its last: the worker's "permanent";
--   * absurd.fail_run itself, unchanged: the same fence (AB001 when cancelled, AB002 when the
--     run already failed, so a stale run id changes nothing, max_attempts included, as the
--     whole call rolls back), the same retry and max_duration logic, the same errors;
--   * returns one row: the task's state afterwards ('pending' or 'sleeping' when a retry is
--     scheduled, 'failed' when this was its last attempt, 'cancelled' when the retry would
--     have passed its max_duration) and what a dead-letter copy is made of (task name,
--     params, attempts, the failed run and its failure reason, whose lease it was), so the
--     worker can spawn the copy without reading the task again.
-- The run is locked before its task, as everywhere else. fail_run keeps its 0.5.1 signature
-- and behaviour for the SDKs.

create function absurd.fail_run_outcome(
    p_queue_name text,
    p_run_id     uuid,
    p_reason     jsonb,
    p_final      boolean default false,
    p_retry_at   timestamptz default null
)
returns table (
    task_id        uuid,
    task_state     text,
    task_name      text,
    params         jsonb,
    attempts       integer,
    run_id         uuid,
    failure_reason jsonb,
    claimed_by     text
)
language plpgsql
as $$
#variable_conflict use_column
declare
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_task_id uuid;
    v_attempt integer;
begin
    if p_final then
        -- The run's lock first (fail_run takes it again, which costs nothing), then the task's.
        execute format('select r.task_id, r.attempt from absurd.%I r where r.run_id = $1 for update',
                       'r_' || v_q)
            into v_task_id, v_attempt
            using p_run_id;
        -- An unknown run is left to fail_run, which says so.
        if v_task_id is not null then
            execute format('update absurd.%I t set max_attempts = $2 '
                           'where t.task_id = $1 and (t.max_attempts is null or t.max_attempts > $2)',
                           't_' || v_q)
                using v_task_id, v_attempt;
        end if;
    end if;

    perform absurd.fail_run(v_q, p_run_id, p_reason, p_retry_at);

    return query execute format(
        'select t.task_id, t.state, t.task_name, t.params, t.attempts, r.run_id, r.failure_reason, '
        'r.claimed_by from absurd.%I r join absurd.%I t on t.task_id = r.task_id where r.run_id = $1',
        'r_' || v_q, 't_' || v_q)
        using p_run_id;
end;
$$;
