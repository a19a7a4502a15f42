-- absurd-host schema, part 2: queue management and the per-queue tables.
--
-- Each queue owns five tables, named with the queue name verbatim:
--   t_<q> tasks, r_<q> runs (attempts), c_<q> checkpoints, e_<q> events, w_<q> event waits.
-- They carry no foreign keys (to each other or to absurd.queues): clients truncate them together,
-- delete rows directly and sometimes create look-alikes by hand, and every function tolerates that.
--
-- Partitioned storage is NOT implemented by absurd-host yet: create_queue(q, 'partitioned') refuses
-- with an explicit error after the usual validation, ensure_partitions() and
-- list_detach_candidates() keep their 0.5.1 signatures and validation but have nothing to do
-- (no partitioned queue can be created), and the pg_cron helpers of upstream Absurd
-- (enable_cron, disable_cron, schedule_detach_jobs, drop_detached_partition) are not provided at
-- all. drop_queue therefore has no pg_cron step.

-- Creates (if missing) the tables and indexes of an unpartitioned queue. Only `if not exists`
-- forms are used so that create_queue can be re-run for an existing queue.
-- fillfactor 70 on t/r/c leaves room on each page for HOT updates: runs and tasks are updated
-- several times in their life (claim, heartbeat, settle) and checkpoints are overwritten.
create function absurd.ensure_queue_tables(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_q    text := absurd.validate_queue_name(p_queue_name);
    v_mode text;
    v_t    text := format('absurd.%I', 't_' || v_q);
    v_r    text := format('absurd.%I', 'r_' || v_q);
    v_c    text := format('absurd.%I', 'c_' || v_q);
    v_e    text := format('absurd.%I', 'e_' || v_q);
    v_w    text := format('absurd.%I', 'w_' || v_q);
begin
    select q.storage_mode into v_mode from absurd.queues q where q.queue_name = v_q;
    if v_mode = 'partitioned' then
        raise exception 'Partitioned storage is not supported by absurd-host yet (queue "%"); '
                        'create the queue with storage mode ''unpartitioned''', v_q;
    end if;

    execute format($ddl$
        create table if not exists %s (
            task_id           uuid primary key,
            task_name         text not null,
            params            jsonb not null,
            headers           jsonb,
            retry_strategy    jsonb,
            max_attempts      integer,
            cancellation      jsonb,
            enqueue_at        timestamptz not null default absurd.current_time(),
            first_started_at  timestamptz,
            state             text not null check (state in
                                ('pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled')),
            attempts          integer not null default 0,
            last_attempt_run  uuid,
            completed_payload jsonb,
            cancelled_at      timestamptz,
            idempotency_key   text unique
        ) with (fillfactor = 70)$ddl$, v_t);

    execute format($ddl$
        create table if not exists %s (
            run_id           uuid primary key,
            task_id          uuid not null,
            attempt          integer not null,
            state            text not null check (state in
                               ('pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled')),
            claimed_by       text,
            claim_expires_at timestamptz,
            available_at     timestamptz not null,
            wake_event       text,
            event_payload    jsonb,
            started_at       timestamptz,
            completed_at     timestamptz,
            failed_at        timestamptz,
            result           jsonb,
            failure_reason   jsonb,
            created_at       timestamptz default absurd.current_time()
        ) with (fillfactor = 70)$ddl$, v_r);

    execute format($ddl$
        create table if not exists %s (
            task_id         uuid,
            checkpoint_name text,
            state           jsonb,
            status          text default 'committed',
            owner_run_id    uuid,
            updated_at      timestamptz default absurd.current_time(),
            primary key (task_id, checkpoint_name)
        ) with (fillfactor = 70)$ddl$, v_c);

    execute format($ddl$
        create table if not exists %s (
            event_name text primary key,
            payload    jsonb,
            emitted_at timestamptz default absurd.current_time()
        )$ddl$, v_e);

    execute format($ddl$
        create table if not exists %s (
            task_id    uuid,
            run_id     uuid,
            step_name  text,
            event_name text,
            timeout_at timestamptz,
            created_at timestamptz default absurd.current_time(),
            primary key (run_id, step_name)
        )$ddl$, v_w);

    -- Claim order (state, available_at); runs of a task; expired-lease sweep (only leased runs);
    -- claim-time cancellation sweep (only tasks with a policy); waiters of an event; waits of a
    -- task; event retention. Exactly the 0.5.1 set: clients and the planner rely on these names.
    execute format('create index if not exists %I on %s (state, available_at)', 'r_' || v_q || '_sai', v_r);
    execute format('create index if not exists %I on %s (task_id)', 'r_' || v_q || '_ti', v_r);
    execute format('create index if not exists %I on %s (claim_expires_at) '
                   'where state = ''running'' and claim_expires_at is not null',
                   'r_' || v_q || '_cei', v_r);
    execute format('create index if not exists %I on %s (task_id) where cancellation is not null',
                   't_' || v_q || '_ci', v_t);
    execute format('create index if not exists %I on %s (event_name)', 'w_' || v_q || '_eni', v_w);
    execute format('create index if not exists %I on %s (task_id)', 'w_' || v_q || '_ti', v_w);
    execute format('create index if not exists %I on %s (emitted_at)', 'e_' || v_q || '_eai', v_e);
end;
$$;

create function absurd.create_queue(p_queue_name text, p_storage_mode text) returns void
language plpgsql
as $$
declare
    v_q        text := absurd.validate_queue_name(p_queue_name);
    v_mode     text := lower(btrim(coalesce(p_storage_mode, '')));
    v_existing text;
begin
    if v_mode not in ('unpartitioned', 'partitioned') then
        raise exception 'Unsupported queue storage mode "%"', coalesce(p_storage_mode, '');
    end if;

    if v_mode = 'partitioned' then
        -- An existing queue's mode mismatch is the more useful message, so it goes first.
        select q.storage_mode into v_existing from absurd.queues q where q.queue_name = v_q;
        if v_existing is not null and v_existing <> v_mode then
            raise exception 'Queue "%" already exists with storage mode "%"', v_q, v_existing;
        end if;
        raise exception 'Partitioned storage is not supported by absurd-host yet (queue "%"); '
                        'create the queue with storage mode ''unpartitioned''', v_q;
    end if;

    insert into absurd.queues (queue_name, created_at, storage_mode)
    values (v_q, absurd.current_time(), v_mode)
    on conflict (queue_name) do nothing;

    -- Read back what is registered (possibly by a concurrent or earlier call).
    select q.storage_mode into v_existing from absurd.queues q where q.queue_name = v_q;
    if v_existing <> v_mode then
        raise exception 'Queue "%" already exists with storage mode "%"', v_q, v_existing;
    end if;

    perform absurd.ensure_queue_tables(v_q);
end;
$$;

create function absurd.create_queue(p_queue_name text) returns void
language plpgsql
as $$
begin
    perform absurd.create_queue(p_queue_name, 'unpartitioned');
end;
$$;

-- Deliberately no name validation: queues with legacy over-long names must stay droppable. Their
-- tables were created under truncated identifiers, and format('%I') truncates the same way.
create function absurd.drop_queue(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_prefix text;
begin
    if not exists (select 1 from absurd.queues q where q.queue_name = p_queue_name) then
        return;
    end if;
    foreach v_prefix in array array['i_', 'w_', 'e_', 'c_', 'r_', 't_'] loop
        execute format('drop table if exists absurd.%I cascade', v_prefix || p_queue_name);
    end loop;
    delete from absurd.queues q where q.queue_name = p_queue_name;
end;
$$;

create function absurd.list_queues() returns table (queue_name text)
language sql stable
as $$ select q.queue_name from absurd.queues q order by q.queue_name $$;

-- No validation: an unknown (or invalid) name simply has no policy row.
create function absurd.get_queue_policy(p_queue_name text)
returns table (
    queue_name          text,
    storage_mode        text,
    default_partition   text,
    partition_lookahead interval,
    partition_lookback  interval,
    cleanup_ttl         interval,
    cleanup_limit       integer,
    detach_mode         text,
    detach_min_age      interval
)
language sql stable
as $$
    select q.queue_name, q.storage_mode, q.default_partition, q.partition_lookahead,
           q.partition_lookback, q.cleanup_ttl, q.cleanup_limit, q.detach_mode, q.detach_min_age
    from absurd.queues q
    where q.queue_name = p_queue_name
$$;

-- Partial update of a queue's policy. Validation order is part of the contract (clients match the
-- first error): shape, unknown keys, queue existence, then each value.
create function absurd.set_queue_policy(p_queue_name text, p_policy jsonb) returns void
language plpgsql
as $$
declare
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_policy  jsonb := coalesce(p_policy, '{}'::jsonb);
    v_key     text;
    v_row     absurd.queues%rowtype;
begin
    if jsonb_typeof(v_policy) <> 'object' then
        raise exception 'Queue policy must be a JSON object';
    end if;
    for v_key in select k from jsonb_object_keys(v_policy) k loop
        if v_key not in ('partition_lookahead', 'partition_lookback', 'cleanup_ttl', 'cleanup_limit',
                         'detach_mode', 'detach_min_age', 'default_partition') then
            raise exception 'Unsupported queue policy key "%"', v_key;
        end if;
    end loop;

    select * into v_row from absurd.queues q where q.queue_name = v_q for update;
    if not found then
        raise exception 'Queue "%" does not exist', v_q;
    end if;

    -- Absent keys (and JSON nulls) keep the current value.
    v_row.partition_lookahead := coalesce((v_policy ->> 'partition_lookahead')::interval, v_row.partition_lookahead);
    v_row.partition_lookback  := coalesce((v_policy ->> 'partition_lookback')::interval, v_row.partition_lookback);
    v_row.cleanup_ttl         := coalesce((v_policy ->> 'cleanup_ttl')::interval, v_row.cleanup_ttl);
    v_row.cleanup_limit       := coalesce((v_policy ->> 'cleanup_limit')::integer, v_row.cleanup_limit);
    v_row.detach_mode         := coalesce(lower(btrim(v_policy ->> 'detach_mode')), v_row.detach_mode);
    v_row.detach_min_age      := coalesce((v_policy ->> 'detach_min_age')::interval, v_row.detach_min_age);
    v_row.default_partition   := coalesce(lower(btrim(v_policy ->> 'default_partition')), v_row.default_partition);

    if v_row.partition_lookahead < interval '0' then
        raise exception 'partition_lookahead must be non-negative';
    end if;
    if v_row.partition_lookback < interval '0' then
        raise exception 'partition_lookback must be non-negative';
    end if;
    if v_row.cleanup_ttl < interval '0' then
        raise exception 'cleanup_ttl must be non-negative';
    end if;
    if v_row.cleanup_limit < 1 then
        raise exception 'cleanup_limit must be at least 1';
    end if;
    if v_row.detach_mode not in ('none', 'empty') then
        raise exception 'Unsupported detach mode "%"', v_row.detach_mode;
    end if;
    if v_row.detach_min_age < interval '0' then
        raise exception 'detach_min_age must be non-negative';
    end if;
    if v_row.default_partition not in ('enabled', 'disabled') then
        raise exception 'Unsupported default_partition mode "%"', v_row.default_partition;
    end if;
    if v_policy ? 'default_partition' and v_row.storage_mode <> 'partitioned' then
        raise exception 'default_partition policy is only supported for partitioned queues';
    end if;

    update absurd.queues q
    set partition_lookahead = v_row.partition_lookahead,
        partition_lookback  = v_row.partition_lookback,
        cleanup_ttl         = v_row.cleanup_ttl,
        cleanup_limit       = v_row.cleanup_limit,
        detach_mode         = v_row.detach_mode,
        detach_min_age      = v_row.detach_min_age,
        default_partition   = v_row.default_partition
    where q.queue_name = v_q;
end;
$$;

-- Kept for interface compatibility. Only unpartitioned queues can be created by absurd-host, and
-- those have no partitions to maintain, so after validating the argument there is nothing to do.
create function absurd.ensure_partitions(p_queue_name text default null) returns void
language plpgsql
as $$
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
        if not exists (select 1 from absurd.queues q where q.queue_name = p_queue_name) then
            raise exception 'Queue "%" does not exist', p_queue_name;
        end if;
    end if;
end;
$$;

-- Kept for interface compatibility; lists nothing because no queue here is partitioned.
create function absurd.list_detach_candidates(p_queue_name text default null)
returns table (queue_name text, parent_table text, partition_table text)
language plpgsql
as $$
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
        if not exists (select 1 from absurd.queues q where q.queue_name = p_queue_name) then
            raise exception 'Queue "%" does not exist', p_queue_name;
        end if;
    end if;
    return;
end;
$$;
