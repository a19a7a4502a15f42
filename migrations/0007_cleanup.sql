-- absurd-host schema, part 7: retention. Removing finished tasks and old events keeps the hot
-- tables (and the indexes the claim path probes) small; absurd-host or cron calls these
-- periodically, absurdctl calls them in loops.

-- Deletes up to p_limit terminal tasks (oldest terminal time first) finished strictly before
-- now - ttl, with their runs, checkpoints and waits. Their idempotency keys become free again.
-- This is maintenance, not the hot path: finding candidates scans the task table.
create function absurd.cleanup_tasks(p_queue_name text, p_ttl_seconds integer, p_limit integer default 1000)
returns integer
language plpgsql
as $$
declare
    v_now     timestamptz := absurd.current_time();
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_ids     uuid[];
begin
    if p_ttl_seconds is null or p_ttl_seconds < 0 then
        raise exception 'TTL must be a non-negative number of seconds';
    end if;

    -- Skip-locked so a cleanup never waits on (or for) a task something else is touching.
    execute format($sql$
        select coalesce(array_agg(x.task_id), '{}') from (
            select t.task_id
            from absurd.%1$I t
            left join absurd.%2$I r on r.run_id = t.last_attempt_run
            where t.state in ('completed', 'failed', 'cancelled')
              and (case t.state when 'completed' then r.completed_at
                                when 'failed' then r.failed_at
                                else t.cancelled_at end) < $1
            order by case t.state when 'completed' then r.completed_at
                                  when 'failed' then r.failed_at
                                  else t.cancelled_at end, t.task_id
            limit $2
            for update of t skip locked
        ) x$sql$, 't_' || v_q, 'r_' || v_q)
        into v_ids
        using v_now - p_ttl_seconds * interval '1 second', greatest(coalesce(p_limit, 1000), 0);

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

-- Deletes up to p_limit events emitted strictly before now - ttl, oldest first. Never-emitted
-- sentinels carry emitted_at = 'epoch' and so go first; one that an await_event is holding is
-- skipped, not waited for.
create function absurd.cleanup_events(p_queue_name text, p_ttl_seconds integer, p_limit integer default 1000)
returns integer
language plpgsql
as $$
declare
    v_now     timestamptz := absurd.current_time();
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_deleted integer;
begin
    if p_ttl_seconds is null or p_ttl_seconds < 0 then
        raise exception 'TTL must be a non-negative number of seconds';
    end if;

    execute format($sql$
        with doomed as (
            select e.event_name from absurd.%1$I e
            where e.emitted_at < $1
            order by e.emitted_at
            limit $2
            for update skip locked
        ), gone as (
            delete from absurd.%1$I e using doomed where e.event_name = doomed.event_name
            returning 1
        )
        select count(*) from gone$sql$, 'e_' || v_q)
        into v_deleted
        using v_now - p_ttl_seconds * interval '1 second', greatest(coalesce(p_limit, 1000), 0);
    return v_deleted;
end;
$$;

-- One cleanup batch per queue with the queue's own policy (cleanup_ttl, cleanup_limit).
create function absurd.cleanup_all_queues(p_queue_name text default null)
returns table (queue_name text, tasks_deleted integer, events_deleted integer)
language plpgsql
as $$
declare
    v_queue record;
    v_ttl   integer;
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
        if not exists (select 1 from absurd.queues q where q.queue_name = p_queue_name) then
            raise exception 'Queue "%" does not exist', p_queue_name;
        end if;
    end if;

    for v_queue in
        select q.queue_name, q.cleanup_ttl, q.cleanup_limit
        from absurd.queues q
        where p_queue_name is null or q.queue_name = p_queue_name
        order by q.queue_name
    loop
        -- An interval longer than an integer number of seconds means "keep everything we could".
        v_ttl := least(floor(extract(epoch from v_queue.cleanup_ttl)), 2147483647)::integer;
        queue_name := v_queue.queue_name;
        tasks_deleted := absurd.cleanup_tasks(v_queue.queue_name, v_ttl, v_queue.cleanup_limit);
        events_deleted := absurd.cleanup_events(v_queue.queue_name, v_ttl, v_queue.cleanup_limit);
        return next;
    end loop;
end;
$$;
