-- absurd-host schema, part 18: maintenance that absurd-host does itself, without pg_cron.
--
-- Why: a pipeline that spawns tasks around the clock needs finished tasks and consumed events
-- removed, or the per-queue tables (and the indexes every claim probes) grow for ever. Most
-- PostgreSQL installations have no pg_cron, so `absurd-host maintain` (one shot) and one
-- elected worker (`[maintenance]` in absurd-host.toml) do it. Operators keep failures longer
-- than successes, so retention is per final state; 0007's cleanup_tasks has one TTL for all.
--
-- Every delete is a bounded batch whose candidates are row-locked with SKIP LOCKED, so a
-- maintenance pass never waits for, or blocks, a worker touching the same task.

-- Deletes up to p_limit tasks in final state p_state ('completed', 'failed' or 'cancelled')
-- that reached it strictly before now - p_ttl_seconds, oldest first, with their runs,
-- checkpoints and event waits. Returns how many tasks were deleted.
create function absurd.cleanup_tasks_in_state(
    p_queue_name  text,
    p_state       text,
    p_ttl_seconds integer,
    p_limit       integer
)
returns integer
language plpgsql
as $$
declare
    v_q   text := absurd.validate_queue_name(p_queue_name);
    v_ids uuid[];
begin
    perform absurd._check_cleanup_state(p_state);
    perform absurd._check_cleanup_retention(p_ttl_seconds);
    perform absurd._check_cleanup_batch(p_limit);
    -- The time a task reached its final state: the last run's completion or failure, or the
    -- task's cancellation. The same expression orders the batch, oldest first.
    execute format($sql$
        select coalesce(array_agg(x.task_id), '{}') from (
            select t.task_id
            from absurd.%1$I t
            left join absurd.%2$I r on r.run_id = t.last_attempt_run
            where t.state = $1
              and (case $1 when 'completed' then r.completed_at
                           when 'failed' then r.failed_at
                           else t.cancelled_at end) < $2
            order by (case $1 when 'completed' then r.completed_at
                              when 'failed' then r.failed_at
                              else t.cancelled_at end), t.task_id
            limit $3
            for update of t skip locked
        ) x$sql$, 't_' || v_q, 'r_' || v_q)
        into v_ids
        using p_state, absurd.current_time() - make_interval(secs => p_ttl_seconds), p_limit;

    if cardinality(v_ids) = 0 then
        return 0;
    end if;
    execute format($sql$
        with waits as (delete from absurd.%1$I w where w.task_id = any($1)),
             checkpoints as (delete from absurd.%2$I c where c.task_id = any($1)),
             runs as (delete from absurd.%3$I r where r.task_id = any($1))
        delete from absurd.%4$I t where t.task_id = any($1)$sql$,
        'w_' || v_q, 'c_' || v_q, 'r_' || v_q, 't_' || v_q)
        using v_ids;
    return cardinality(v_ids);
end;
$$;

-- How many tasks cleanup_tasks_in_state would delete with that retention, all batches
-- together (what `absurd-host maintain --dry-run` reports). Reads only.
create function absurd.count_cleanup_candidates(
    p_queue_name  text,
    p_state       text,
    p_ttl_seconds integer
)
returns bigint
language plpgsql
stable
as $$
declare
    v_q     text := absurd.validate_queue_name(p_queue_name);
    v_count bigint;
begin
    perform absurd._check_cleanup_state(p_state);
    perform absurd._check_cleanup_retention(p_ttl_seconds);
    execute format($sql$
        select count(*)
        from absurd.%1$I t
        left join absurd.%2$I r on r.run_id = t.last_attempt_run
        where t.state = $1
          and (case $1 when 'completed' then r.completed_at
                       when 'failed' then r.failed_at
                       else t.cancelled_at end) < $2$sql$, 't_' || v_q, 'r_' || v_q)
        into v_count
        using p_state, absurd.current_time() - make_interval(secs => p_ttl_seconds);
    return v_count;
end;
$$;

-- How many events cleanup_events would delete with that TTL, all batches together.
create function absurd.count_event_cleanup_candidates(p_queue_name text, p_ttl_seconds integer)
returns bigint
language plpgsql
stable
as $$
declare
    v_q     text := absurd.validate_queue_name(p_queue_name);
    v_count bigint;
begin
    perform absurd._check_cleanup_retention(p_ttl_seconds);
    execute format('select count(*) from absurd.%I e where e.emitted_at < $1', 'e_' || v_q)
        into v_count
        using absurd.current_time() - make_interval(secs => p_ttl_seconds);
    return v_count;
end;
$$;

-- The arguments' checks, one per argument, with messages that name the bad value.
create function absurd._check_cleanup_state(p_state text)
returns void
language plpgsql
immutable
as $$
begin
    if p_state is null or p_state not in ('completed', 'failed', 'cancelled') then
        raise exception 'cleanup state must be completed, failed or cancelled, not %',
            coalesce(quote_literal(p_state), 'null');
    end if;
end;
$$;

create function absurd._check_cleanup_retention(p_ttl_seconds integer)
returns void
language plpgsql
immutable
as $$
begin
    if p_ttl_seconds is null or p_ttl_seconds < 0 then
        raise exception 'retention must be a non-negative number of seconds, not %',
            coalesce(p_ttl_seconds::text, 'null');
    end if;
end;
$$;

-- A batch is one statement holding its row locks: keep it short on a busy queue.
create function absurd._check_cleanup_batch(p_limit integer)
returns void
language plpgsql
immutable
as $$
begin
    if p_limit is null or p_limit < 1 or p_limit > 100000 then
        raise exception 'cleanup batch size must be between 1 and 100000, not %',
            coalesce(p_limit::text, 'null');
    end if;
end;
$$;

-- The last maintenance passes, newest first, for the dashboard and `absurd-host maintain`.
-- Bounded: record_maintenance_run keeps the newest 100 rows, and what a row holds is capped.
create table absurd.maintenance_runs (
    run_id      bigint generated always as identity primary key,
    started_at  timestamptz not null,
    finished_at timestamptz not null,
    worker_id   text not null check (octet_length(worker_id) between 1 and 255),
    -- Per queue and in total: tasks deleted by state, events deleted.
    report      jsonb not null check (octet_length(report::text) <= 65536),
    error       text check (octet_length(error) <= 4096)
);

create function absurd.record_maintenance_run(
    p_started_at  timestamptz,
    p_worker_id   text,
    p_report      jsonb,
    p_error       text
)
returns bigint
language sql
as $$
    with added as (
        insert into absurd.maintenance_runs (started_at, finished_at, worker_id, report, error)
        values (p_started_at, absurd.current_time(), p_worker_id, p_report, p_error)
        returning run_id
    ), trimmed as (
        delete from absurd.maintenance_runs m
        where m.run_id <= (select run_id from added) - 100
    )
    select run_id from added;
$$;
