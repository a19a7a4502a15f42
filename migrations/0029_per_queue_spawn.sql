-- absurd-host schema, part 29: each queue's own spawn, with plans Postgres keeps.
--
-- Why: spawn_task serves every queue, so it builds its insert as text for the queue at hand
-- and runs it with EXECUTE, which parses and plans it again on every call. Measured with
-- pg_stat_user_functions on a workflow chain (this project's machine kind), the spawn's own
-- time was about 0.18-0.25 ms of each call, most of it that parse and plan; a workflow makes a
-- spawn per stage, and every client spawns through it (docs/performance.md, "Workflows").
--
-- What this adds, for each queue <q>, generated like migration 0028's ckpt_/wait_/emit_:
--   spwn_<q>(task_name, params, options)      spawn_task
-- The body is spawn_task's for the queue's storage mode (migration 0003 for an ordinary queue,
-- migration 0020's reservation in i_<q> for a partitioned one) with the queue's tables named
-- in the text: same validation and errors, same statements, same idempotency rules, same
-- wake-up. spawn_task keeps its name and signature and calls the queue's own function when it
-- has one, so every caller gets it: the host, the SDKs, absurdctl, retry_task's spawn_new and
-- spawn_child_task. Its former body stays, renamed, for queues without (made before this
-- migration and not made again, or named too long for the prefix).
--
-- The prefix has five characters, like 0028's, so every name fits Postgres' 63-byte
-- identifiers with a queue name of up to 57 bytes. It is not `spawn_`: a queue named `task`
-- would then overload spawn_task itself.

create function absurd._host_install_spawn_path(p_queue_name text) returns void
language plpgsql
as $gen$
declare
    v_q    text := absurd.validate_queue_name(p_queue_name);
    v_mode text;
begin
    -- As for the other per-queue functions: two sessions must not replace the same one at once.
    perform pg_advisory_xact_lock(hashtext('absurd-host spawn path'), hashtext(v_q));
    select q.storage_mode into v_mode from absurd.queues q where q.queue_name = v_q;

    if v_mode is distinct from 'partitioned' then
        -- %1$I tasks, %2$I runs, %3$L the queue name, %4$I the function.
        execute format($ddl$
create or replace function absurd.%4$I(p_task_name text, p_params jsonb, p_options jsonb)
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
as $fn$
#variable_conflict use_column
declare
    v_now      timestamptz := absurd.current_time();
    v_options  jsonb := coalesce(p_options, '{}'::jsonb);
    v_strategy jsonb := v_options -> 'retry_strategy';
    v_key      text := v_options ->> 'idempotency_key';
    v_max      integer;
    v_task_id  uuid;
    v_run_id   uuid;
    v_attempts integer;
begin
    if p_task_name is null or btrim(p_task_name) = '' then
        raise exception 'task_name must be provided';
    end if;
    -- Validate everything before the first write.
    if v_strategy is not null then
        perform absurd.retry_delay_seconds(v_strategy, 1);
    end if;
    if v_options ? 'max_attempts' and jsonb_typeof(v_options -> 'max_attempts') <> 'null' then
        v_max := (v_options ->> 'max_attempts')::integer;
        if v_max < 1 then
            raise exception 'max_attempts must be >= 1';
        end if;
    end if;

    loop
        v_task_id := absurd.portable_uuidv7();
        v_run_id := absurd.portable_uuidv7();
        -- Task and first run in one statement; a taken idempotency key inserts neither, and
        -- ON CONFLICT has waited for its inserter, so the read-back below sees the task.
        with new_task as (
            insert into absurd.%1$I as t
                (task_id, task_name, params, headers, retry_strategy, max_attempts, cancellation,
                 enqueue_at, state, attempts, last_attempt_run, idempotency_key)
            values (v_task_id, p_task_name, coalesce(p_params, 'null'::jsonb),
                    v_options -> 'headers', v_strategy, v_max, v_options -> 'cancellation',
                    v_now, 'pending', 1, v_run_id, v_key)
            on conflict (idempotency_key) do nothing
            returning t.task_id
        )
        insert into absurd.%2$I as r (run_id, task_id, attempt, state, available_at, created_at)
        select v_run_id, new_task.task_id, 1, 'pending', v_now, v_now from new_task
        returning r.run_id into v_run_id;
        if v_run_id is not null then
            perform absurd._host_notify_ready(%3$L);
            return query select v_task_id, v_run_id, 1, true;
            return;
        end if;

        select t.task_id, t.last_attempt_run, t.attempts into v_task_id, v_run_id, v_attempts
        from absurd.%1$I t where t.idempotency_key = v_key;
        if v_task_id is not null then
            return query select v_task_id, v_run_id, v_attempts, false;
            return;
        end if;
        -- The conflicting task was cleaned up between the two statements: the key is free again.
    end loop;
end;
$fn$
$ddl$, 't_' || v_q, 'r_' || v_q, v_q, 'spwn_' || v_q);
        return;
    end if;

    -- %1$I tasks, %2$I runs, %3$L the queue name, %4$I the function, %5$I the idempotency keys.
    execute format($ddl$
create or replace function absurd.%4$I(p_task_name text, p_params jsonb, p_options jsonb)
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
as $fn$
#variable_conflict use_column
declare
    v_now      timestamptz := absurd.current_time();
    v_options  jsonb := coalesce(p_options, '{}'::jsonb);
    v_strategy jsonb := v_options -> 'retry_strategy';
    v_key      text := v_options ->> 'idempotency_key';
    v_max      integer;
    v_task_id  uuid;
    v_run_id   uuid;
    v_attempts integer;
    v_found    uuid;
begin
    if p_task_name is null or btrim(p_task_name) = '' then
        raise exception 'task_name must be provided';
    end if;
    if v_strategy is not null then
        perform absurd.retry_delay_seconds(v_strategy, 1);
    end if;
    if v_options ? 'max_attempts' and jsonb_typeof(v_options -> 'max_attempts') <> 'null' then
        v_max := (v_options ->> 'max_attempts')::integer;
        if v_max < 1 then
            raise exception 'max_attempts must be >= 1';
        end if;
    end if;

    v_task_id := absurd.portable_uuidv7();
    v_run_id := absurd.portable_uuidv7();

    if v_key is not null then
        -- The key is reserved in i_<q> (a partitioned t_<q> cannot have the unique index).
        -- ON CONFLICT waits for a concurrent reservation of the same key to commit or roll
        -- back, so a taken key is read back below with its task in place.
        insert into absurd.%5$I as i (idempotency_key, task_id) values (v_key, v_task_id)
        on conflict (idempotency_key) do nothing
        returning i.task_id into v_found;
        if v_found is null then
            select t.task_id, t.last_attempt_run, t.attempts into v_found, v_run_id, v_attempts
            from absurd.%5$I i
            join absurd.%1$I t on t.task_id = i.task_id
            where i.idempotency_key = v_key;
            if v_found is null then
                raise exception 'Idempotency key "%%" in queue "%%" was concurrently cleaned up', v_key, %3$L
                    using errcode = '40001', hint = 'Retry the spawn.';
            end if;
            return query select v_found, v_run_id, v_attempts, false;
            return;
        end if;
    end if;

    insert into absurd.%1$I (task_id, task_name, params, headers, retry_strategy, max_attempts,
                             cancellation, enqueue_at, state, attempts, last_attempt_run,
                             idempotency_key)
    values (v_task_id, p_task_name, coalesce(p_params, 'null'::jsonb), v_options -> 'headers',
            v_strategy, v_max, v_options -> 'cancellation', v_now, 'pending', 1, v_run_id, v_key);
    insert into absurd.%2$I (run_id, task_id, attempt, state, available_at, created_at)
    values (v_run_id, v_task_id, 1, 'pending', v_now, v_now);
    perform absurd._host_notify_ready(%3$L);
    return query select v_task_id, v_run_id, 1, true;
end;
$fn$
$ddl$, 't_' || v_q, 'r_' || v_q, v_q, 'spwn_' || v_q, 'i_' || v_q);
end;
$gen$;

-- The interface function: the queue's own when it has one, else the former body (migration
-- 0020's, which chooses by storage mode).
alter function absurd.spawn_task(text, text, jsonb, jsonb) rename to _host_spawn_task_generic;
create function absurd.spawn_task(
    p_queue_name text,
    p_task_name  text,
    p_params     jsonb,
    p_options    jsonb default '{}'
)
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    if to_regprocedure(format('absurd.%I(text,jsonb,jsonb)', 'spwn_' || v_q)) is null then
        return query select g.task_id, g.run_id, g.attempt, g.created
            from absurd._host_spawn_task_generic(p_queue_name, p_task_name, p_params, p_options) g;
        return;
    end if;
    return query execute format('select s.task_id, s.run_id, s.attempt, s.created '
                                'from absurd.%I($1, $2, $3) s', 'spwn_' || v_q)
        using p_task_name, p_params, p_options;
end;
$$;

-- Queues get it with their tables, and lose it when they are dropped.
alter function absurd.ensure_queue_tables(text) rename to _host_ensure_queue_tables_before_spawn_path;
create function absurd.ensure_queue_tables(p_queue_name text) returns void
language plpgsql
as $$
begin
    perform absurd._host_ensure_queue_tables_before_spawn_path(p_queue_name);
    perform absurd._host_install_spawn_path(p_queue_name);
end;
$$;

alter function absurd.drop_queue(text) rename to _host_drop_queue_before_spawn_path;
create function absurd.drop_queue(p_queue_name text) returns void
language plpgsql
as $$
begin
    -- No name validation, like the original: over-long legacy names must stay droppable.
    if octet_length(p_queue_name) between 1 and 57 then
        execute format('drop function if exists absurd.%I(text, jsonb, jsonb)', 'spwn_' || p_queue_name);
    end if;
    perform absurd._host_drop_queue_before_spawn_path(p_queue_name);
end;
$$;

-- Queues that exist already. One that cannot have it (a legacy over-long name) keeps the
-- former body.
do $$
declare
    v_q text;
begin
    for v_q in select q.queue_name from absurd.queues q order by q.queue_name loop
        begin
            perform absurd._host_install_spawn_path(v_q);
        exception when others then
            raise notice 'queue %: no per-queue spawn function (%)', v_q, sqlerrm;
        end;
    end loop;
end;
$$;
