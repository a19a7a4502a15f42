-- absurd-host schema, part 20: partitioned storage (spec §1.2, §5.3, §5.13).
--
-- Why: a queue that takes tasks around the clock for years grows t_/r_/c_/w_ without bound.
-- Deleting old rows (cleanup, migration 0007/0018) leaves bloat behind; a partitioned queue
-- keeps each UTC week of tasks, runs, checkpoints and waits in its own child table, so a week
-- that has been emptied can be detached and dropped whole.
--
-- Layout of a partitioned queue <q>:
--   t_<q>, c_<q>  partitioned by range of task_id; r_<q>, w_<q> by range of run_id. Task and
--                 run ids are UUIDv7 (absurd.portable_uuidv7), so a row's week is the week of
--                 the (database, possibly fake) clock when it was made.
--   <p>_<q>_<tag> one child per week, p in t/r/c/w, tag = absurd.partition_week_tag(week),
--                 covering uuidv7_floor(monday) .. uuidv7_floor(next monday).
--   <p>_<q>_d     the DEFAULT child, catching rows outside every week child. It can be
--                 switched off (queue policy default_partition = 'disabled') while it is empty.
--   e_<q>         an ordinary table, as for unpartitioned queues.
--   i_<q>         the idempotency registry: a unique index on t_<q>.idempotency_key is
--                 impossible (a unique index of a partitioned table must contain the partition
--                 key), so spawn_task reserves the key here first. A statement trigger on t_<q>
--                 releases the keys of deleted tasks, whoever deletes them.
--
-- Nothing makes partitions on insert: ensure_partitions (from absurd-host maintain, the
-- elected maintaining worker, or pg_cron) keeps partition_lookback behind and
-- partition_lookahead ahead of the clock covered.
--
-- Everything the worker uses works unchanged on these tables (the per-queue lease_/done_/next_
-- functions, claim_task, complete/fail/schedule, checkpoints, events, cancellation, cleanup,
-- NOTIFY wake-ups, live-update triggers) except for three things this migration handles:
--   * spawn_task's `on conflict (idempotency_key)` needs the unique index t_<q> cannot have:
--     spawn_task is wrapped, and partitioned queues take a path through i_<q>;
--   * a partitioned table takes no storage parameters (fillfactor, autovacuum_*): migration
--     0012's generator of the per-queue functions ends by setting autovacuum parameters on
--     t_<q> and r_<q>, so partitioned queues use a variant of it without those two statements,
--     derived from the current generator by absurd._host_derive_partitioned_fast_paths()
--     (a later migration that replaces the generator calls it again), and the parameters go
--     on every week child instead;
--   * set_queue_policy must remove or recreate the DEFAULT children when default_partition
--     changes.

-- ---- the tables of a partitioned queue --------------------------------------------------

-- Creates (if missing) the parents, e_, i_, the indexes of §1.2 on the parents, and the
-- trigger releasing idempotency keys. Children are ensure_partitions' business.
create function absurd._host_ensure_partitioned_tables(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
    v_t text := format('absurd.%I', 't_' || v_q);
    v_r text := format('absurd.%I', 'r_' || v_q);
    v_c text := format('absurd.%I', 'c_' || v_q);
    v_e text := format('absurd.%I', 'e_' || v_q);
    v_w text := format('absurd.%I', 'w_' || v_q);
    v_i text := format('absurd.%I', 'i_' || v_q);
begin
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
            idempotency_key   text
        ) partition by range (task_id)$ddl$, v_t);

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
        ) partition by range (run_id)$ddl$, v_r);

    execute format($ddl$
        create table if not exists %s (
            task_id         uuid,
            checkpoint_name text,
            state           jsonb,
            status          text default 'committed',
            owner_run_id    uuid,
            updated_at      timestamptz default absurd.current_time(),
            primary key (task_id, checkpoint_name)
        ) partition by range (task_id)$ddl$, v_c);

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
        ) partition by range (run_id)$ddl$, v_w);

    execute format($ddl$
        create table if not exists %s (
            idempotency_key text primary key,
            task_id         uuid not null
        )$ddl$, v_i);

    -- The names and definitions of §1.2, on the parents (each child gets its own copy).
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
    execute format('create index if not exists %I on %s (task_id)', 'i_' || v_q || '_ti', v_i);

    if not exists (select from pg_trigger g
                   where g.tgrelid = v_t::regclass and g.tgname = 'absurd_release_idempotency_keys') then
        execute format('create trigger absurd_release_idempotency_keys after delete on %s '
                       'referencing old table as gone for each statement '
                       'execute function absurd._host_release_idempotency_keys(%L)', v_t, v_q);
    end if;
end;
$$;

-- Deleted tasks free their idempotency keys (cleanup_tasks, cleanup_tasks_in_state, a client's
-- own DELETE). Only a key still pointing at the deleted task is removed.
create function absurd._host_release_idempotency_keys() returns trigger
language plpgsql
as $$
begin
    execute format('delete from absurd.%I i using gone g '
                   'where g.idempotency_key is not null and i.task_id = g.task_id '
                   'and i.idempotency_key = g.idempotency_key', 'i_' || tg_argv[0]);
    return null;
end;
$$;

-- ---- week children ------------------------------------------------------------------------

-- Storage parameters a child takes: what unpartitioned queues set on their tables (fillfactor
-- 70 on t/r/c as in 0002, the autovacuum settings of 0009 on t/r).
create function absurd._host_partition_storage(p_prefix text) returns text
language sql immutable
as $$
    select case p_prefix
        when 't' then 'fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02, '
                      'autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0'
        when 'r' then 'fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02, '
                      'autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0'
        when 'c' then 'fillfactor = 70'
        else 'fillfactor = 100'
    end
$$;

-- Whether the DEFAULT child of a queue's parent p holds a row keyed in [p_from, p_to).
create function absurd._host_default_holds(p_queue_name text, p_prefix text, p_from uuid, p_to uuid)
returns boolean
language plpgsql stable
as $$
declare
    v_default text := p_prefix || '_' || p_queue_name || '_d';
    v_found   boolean;
begin
    if to_regclass(format('absurd.%I', v_default)) is null then
        return false;
    end if;
    execute format('select exists (select from absurd.%I where %I >= $1 and %I < $2)', v_default,
                   case when p_prefix in ('t', 'c') then 'task_id' else 'run_id' end,
                   case when p_prefix in ('t', 'c') then 'task_id' else 'run_id' end)
        into v_found using p_from, p_to;
    return v_found;
end;
$$;

create or replace function absurd.ensure_partitions(p_queue_name text default null) returns void
language plpgsql
as $$
declare
    v_now    timestamptz := absurd.current_time();
    v_queue  absurd.queues%rowtype;
    v_week   timestamptz;
    v_last   timestamptz;
    v_tag    text;
    v_from   uuid;
    v_to     uuid;
    v_prefix text;
    v_child  text;
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
        if not exists (select from absurd.queues q where q.queue_name = p_queue_name) then
            raise exception 'Queue "%" does not exist', p_queue_name;
        end if;
    end if;

    for v_queue in
        select * from absurd.queues q
        where q.storage_mode = 'partitioned'
          and (p_queue_name is null or q.queue_name = p_queue_name)
        order by q.queue_name
    loop
        -- One session at a time per queue: two creating the same child would collide.
        perform pg_advisory_xact_lock(hashtext('absurd-host partitions'), hashtext(v_queue.queue_name));

        foreach v_prefix in array array['t', 'r', 'c', 'w'] loop
            if v_queue.default_partition = 'enabled' then
                v_child := v_prefix || '_' || v_queue.queue_name || '_d';
                if to_regclass(format('absurd.%I', v_child)) is null then
                    execute format('create table absurd.%I partition of absurd.%I default with (%s)',
                                   v_child, v_prefix || '_' || v_queue.queue_name,
                                   absurd._host_partition_storage(v_prefix));
                end if;
            end if;
        end loop;

        v_week := absurd.week_bucket_utc(v_now - v_queue.partition_lookback);
        v_last := absurd.week_bucket_utc(v_now + v_queue.partition_lookahead);
        while v_week <= v_last loop
            v_tag := absurd.partition_week_tag(v_week);
            v_from := absurd.uuidv7_floor(v_week);
            -- 168 hours, not 7 days: a day of the session's time zone can be 23 or 25 hours.
            v_to := absurd.uuidv7_floor(v_week + interval '168 hours');
            foreach v_prefix in array array['t', 'r', 'c', 'w'] loop
                v_child := v_prefix || '_' || v_queue.queue_name || '_' || v_tag;
                -- Checked first: CREATE TABLE ... PARTITION OF locks the parent even when the
                -- child exists, and this runs every maintenance pass.
                -- A week whose rows already sit in the DEFAULT child (maintenance fell behind
                -- the clock, or a fake one jumped) cannot get its own child without moving
                -- them: that week stays in the DEFAULT child, and the other weeks are still
                -- made (one such week must not stop every later one from being created).
                if to_regclass(format('absurd.%I', v_child)) is null
                   and absurd._host_default_holds(v_queue.queue_name, v_prefix, v_from, v_to) then
                    raise warning 'queue "%": week % of %_% stays in its DEFAULT partition, which holds rows of it',
                        v_queue.queue_name, v_tag, v_prefix, v_queue.queue_name;
                elsif to_regclass(format('absurd.%I', v_child)) is null then
                    execute format('create table absurd.%I partition of absurd.%I '
                                   'for values from (%L) to (%L) with (%s)',
                                   v_child, v_prefix || '_' || v_queue.queue_name, v_from, v_to,
                                   absurd._host_partition_storage(v_prefix));
                end if;
            end loop;
            v_week := v_week + interval '168 hours';
        end loop;
    end loop;
end;
$$;

-- ---- the per-queue functions of a partitioned queue --------------------------------------

-- Makes absurd._host_install_fast_paths_partitioned from the current generator of the
-- per-queue functions, minus its two storage-parameter statements (see the top). Refuses when
-- the generator no longer has exactly those two statements, so a change there cannot silently
-- leave partitioned queues with a stale or broken generator.
create function absurd._host_derive_partitioned_fast_paths() returns void
language plpgsql
as $$
declare
    v_src    text := pg_get_functiondef('absurd._host_install_fast_paths(text)'::regprocedure);
    v_needle text := 'execute format(''alter table absurd.%I set (autovacuum_';
    v_head   text := 'FUNCTION absurd._host_install_fast_paths(';
    v_n      integer;
begin
    v_n := (length(v_src) - length(replace(v_src, v_needle, ''))) / length(v_needle);
    if v_n <> 2 or position(v_head in v_src) = 0 then
        raise exception 'absurd._host_install_fast_paths has changed shape (% storage-parameter '
                        'statements, expected 2): update absurd._host_derive_partitioned_fast_paths', v_n;
    end if;
    v_src := replace(v_src, v_needle, 'perform format(''alter table absurd.%I set (autovacuum_');
    v_src := replace(v_src, v_head, 'FUNCTION absurd._host_install_fast_paths_partitioned(');
    execute v_src;
end;
$$;

select absurd._host_derive_partitioned_fast_paths();

-- ensure_queue_tables (0015's wrapper) for both modes. The unpartitioned path is untouched.
alter function absurd.ensure_queue_tables(text) rename to _host_ensure_queue_tables_unpartitioned;
create function absurd.ensure_queue_tables(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_q    text := absurd.validate_queue_name(p_queue_name);
    v_mode text;
begin
    select q.storage_mode into v_mode from absurd.queues q where q.queue_name = v_q;
    if v_mode is distinct from 'partitioned' then
        perform absurd._host_ensure_queue_tables_unpartitioned(v_q);
        return;
    end if;
    perform absurd._host_ensure_partitioned_tables(v_q);
    perform absurd.ensure_partitions(v_q);
    perform absurd._host_install_fast_paths_partitioned(v_q);
    perform absurd._host_install_live_triggers(v_q);
end;
$$;

-- §5.3: validated name and mode, the row registered first, a different existing mode refused,
-- the same mode re-running the idempotent table creation.
create or replace function absurd.create_queue(p_queue_name text, p_storage_mode text) returns void
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

    insert into absurd.queues (queue_name, created_at, storage_mode)
    values (v_q, absurd.current_time(), v_mode)
    on conflict (queue_name) do nothing;

    select q.storage_mode into v_existing from absurd.queues q where q.queue_name = v_q;
    if v_existing <> v_mode then
        raise exception 'Queue "%" already exists with storage mode "%"', v_q, v_existing;
    end if;

    perform absurd.ensure_queue_tables(v_q);
end;
$$;

-- ---- spawn ------------------------------------------------------------------------------

-- The original body serves every queue that is not partitioned (and tables without a queue
-- row, as before); partitioned queues reserve an idempotency key in i_<q> first.
alter function absurd.spawn_task(text, text, jsonb, jsonb) rename to _host_spawn_task_unpartitioned;
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
    v_now      timestamptz;
    v_q        text := absurd.validate_queue_name(p_queue_name);
    v_options  jsonb := coalesce(p_options, '{}'::jsonb);
    v_strategy jsonb := v_options -> 'retry_strategy';
    v_key      text := v_options ->> 'idempotency_key';
    v_max      integer;
    v_task_id  uuid;
    v_run_id   uuid;
    v_attempts integer;
    v_found    uuid;
begin
    if not exists (select from absurd.queues q
                   where q.queue_name = v_q and q.storage_mode = 'partitioned') then
        return query select * from absurd._host_spawn_task_unpartitioned(
            p_queue_name, p_task_name, p_params, p_options);
        return;
    end if;

    v_now := absurd.current_time();
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
        -- ON CONFLICT waits for a concurrent reservation of the same key to commit or roll
        -- back, so a taken key is read back below with its task in place.
        execute format('insert into absurd.%I (idempotency_key, task_id) values ($1, $2) '
                       'on conflict (idempotency_key) do nothing returning task_id', 'i_' || v_q)
            into v_found using v_key, v_task_id;
        if v_found is null then
            execute format('select t.task_id, t.last_attempt_run, t.attempts from absurd.%I i '
                           'join absurd.%I t on t.task_id = i.task_id '
                           'where i.idempotency_key = $1', 'i_' || v_q, 't_' || v_q)
                into v_found, v_run_id, v_attempts using v_key;
            if v_found is null then
                raise exception 'Idempotency key "%" in queue "%" was concurrently cleaned up', v_key, v_q
                    using errcode = '40001', hint = 'Retry the spawn.';
            end if;
            return query select v_found, v_run_id, v_attempts, false;
            return;
        end if;
    end if;

    execute format('insert into absurd.%I (task_id, task_name, params, headers, retry_strategy, '
                   'max_attempts, cancellation, enqueue_at, state, attempts, last_attempt_run, '
                   'idempotency_key) values ($1, $2, coalesce($3, ''null''::jsonb), $4, $5, $6, $7, '
                   '$8, ''pending'', 1, $9, $10)', 't_' || v_q)
        using v_task_id, p_task_name, p_params, v_options -> 'headers', v_strategy, v_max,
              v_options -> 'cancellation', v_now, v_run_id, v_key;
    execute format('insert into absurd.%I (run_id, task_id, attempt, state, available_at, created_at) '
                   'values ($1, $2, 1, ''pending'', $3, $3)', 'r_' || v_q)
        using v_run_id, v_task_id, v_now;
    perform absurd._host_notify_ready(v_q);
    return query select v_task_id, v_run_id, 1, true;
end;
$$;

-- ---- queue policy -------------------------------------------------------------------------

-- 0002's body validates and stores the values; switching default_partition also removes the
-- DEFAULT children (only while they are empty) or recreates them.
alter function absurd.set_queue_policy(text, jsonb) rename to _host_set_queue_policy_values;
create function absurd.set_queue_policy(p_queue_name text, p_policy jsonb) returns void
language plpgsql
as $$
declare
    v_before absurd.queues%rowtype;
    v_after  absurd.queues%rowtype;
    v_prefix text;
    v_child  text;
    v_rows   boolean;
begin
    select * into v_before from absurd.queues q where q.queue_name = p_queue_name;
    perform absurd._host_set_queue_policy_values(p_queue_name, p_policy);
    select * into v_after from absurd.queues q where q.queue_name = p_queue_name;
    if v_after.storage_mode <> 'partitioned'
       or v_after.default_partition = v_before.default_partition then
        return;
    end if;

    if v_after.default_partition = 'enabled' then
        perform absurd.ensure_partitions(v_after.queue_name);
        return;
    end if;

    foreach v_prefix in array array['t', 'r', 'c', 'w'] loop
        v_child := v_prefix || '_' || v_after.queue_name || '_d';
        if exists (select from pg_inherits h
                   where h.inhrelid = to_regclass(format('absurd.%I', v_child))
                     and h.inhparent = to_regclass(format('absurd.%I', v_prefix || '_' || v_after.queue_name))) then
            -- Locked before looking, so no row can arrive between the check and the detach.
            execute format('lock table absurd.%I in access exclusive mode', v_child);
            execute format('select exists (select from absurd.%I)', v_child) into v_rows;
            if v_rows then
                raise exception 'Cannot disable default_partition for queue "%": default partition "%" is not empty',
                    v_after.queue_name, v_child;
            end if;
            execute format('alter table absurd.%I detach partition absurd.%I',
                           v_prefix || '_' || v_after.queue_name, v_child);
            execute format('drop table absurd.%I', v_child);
        end if;
    end loop;
end;
$$;

-- ---- detaching and dropping old weeks -----------------------------------------------------

-- The week children of a queue's parent p ('t', 'r', 'c', 'w') still attached, with their upper
-- bound's instant. The DEFAULT child has no bound and is not listed.
create function absurd._host_week_children(p_queue_name text, p_prefix text)
returns table (partition_table text, upper_at timestamptz)
language sql stable
as $$
    select c.relname::text,
           absurd.uuidv7_timestamp(
               substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \(''([0-9a-f-]{36})''\)')::uuid)
    from pg_inherits h
    join pg_class c on c.oid = h.inhrelid
    where h.inhparent = to_regclass(format('absurd.%I', p_prefix || '_' || p_queue_name))
      and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
$$;

create or replace function absurd.list_detach_candidates(p_queue_name text default null)
returns table (queue_name text, parent_table text, partition_table text)
language plpgsql
as $$
declare
    v_now    timestamptz := absurd.current_time();
    v_queue  absurd.queues%rowtype;
    v_prefix text;
    v_child  record;
    v_rows   boolean;
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
        if not exists (select from absurd.queues q where q.queue_name = p_queue_name) then
            raise exception 'Queue "%" does not exist', p_queue_name;
        end if;
    end if;

    for v_queue in
        select * from absurd.queues q
        where q.storage_mode = 'partitioned' and q.detach_mode = 'empty'
          and (p_queue_name is null or q.queue_name = p_queue_name)
        order by q.queue_name
    loop
        foreach v_prefix in array array['t', 'r', 'c', 'w'] loop
            for v_child in
                select w.partition_table, w.upper_at
                from absurd._host_week_children(v_queue.queue_name, v_prefix) w
                where w.upper_at < v_now - v_queue.detach_min_age
                order by w.upper_at, w.partition_table
            loop
                execute format('select exists (select from absurd.%I)', v_child.partition_table)
                    into v_rows;
                if not v_rows then
                    queue_name := v_queue.queue_name;
                    parent_table := v_prefix || '_' || v_queue.queue_name;
                    partition_table := v_child.partition_table;
                    return next;
                end if;
            end loop;
        end loop;
    end loop;
end;
$$;

-- Unschedules pg_cron jobs by name, when pg_cron (or a schema shaped like it) is there.
create function absurd._host_unschedule_jobs(p_names text[]) returns void
language plpgsql
as $$
declare
    v_id bigint;
begin
    if to_regclass('cron.job') is null
       or not exists (select from pg_proc f where f.pronamespace = to_regnamespace('cron')
                      and f.proname = 'unschedule') then
        return;
    end if;
    for v_id in execute 'select j.jobid from cron.job j where j.jobname = any ($1) order by j.jobid'
        using p_names
    loop
        execute 'select cron.unschedule($1::bigint)' using v_id;
    end loop;
end;
$$;

-- §5.13. Only a table that is no (longer a) partition and is shaped like a week or DEFAULT
-- child of a queue's parent is dropped: this never drops a queue's own tables or anything
-- else in the schema.
create function absurd.drop_detached_partition(
    p_partition_table     text,
    p_unschedule_job_name text default null
)
returns boolean
language plpgsql
as $$
declare
    v_table  text := btrim(coalesce(p_partition_table, ''));
    v_job    text := p_unschedule_job_name;
    v_paired text;
    v_rel    regclass;
begin
    if v_table = '' then
        raise exception 'partition table must be provided';
    end if;
    if v_job like 'absurd\_drop\_run\_%' then
        v_paired := 'absurd_detach_run_' || substr(v_job, length('absurd_drop_run_') + 1);
    end if;

    v_rel := to_regclass(format('absurd.%I', v_table));
    if v_rel is null
       or v_table !~ '^[trcw]_.+_([0-9]{3}|d)$'
       or exists (select from absurd.queues q
                  where v_table in ('t_' || q.queue_name, 'r_' || q.queue_name,
                                    'c_' || q.queue_name, 'w_' || q.queue_name))
       or (select c.relkind from pg_class c where c.oid = v_rel) <> 'r' then
        if v_job is not null then
            perform absurd._host_unschedule_jobs(array[v_job, v_paired]);
        end if;
        return false;
    end if;
    if exists (select from pg_inherits h where h.inhrelid = v_rel) then
        return false;
    end if;
    if v_paired is not null then
        perform absurd._host_unschedule_jobs(array[v_paired]);
    end if;
    execute format('drop table absurd.%I', v_table);
    if v_job is not null then
        perform absurd._host_unschedule_jobs(array[v_job]);
    end if;
    return true;
end;
$$;

-- What `absurd-host maintain` and the client's detach run: the DETACH statement for one current
-- detach candidate, identifiers quoted here, CONCURRENTLY only when the parent has no DEFAULT
-- child (PostgreSQL refuses it otherwise). NULL when the table is not a candidate (any more).
create function absurd.detach_partition_statement(p_partition_table text)
returns table (queue_name text, parent_table text, partition_table text, statement text)
language sql volatile
as $$
    select d.queue_name, d.parent_table, d.partition_table,
           format('alter table absurd.%I detach partition absurd.%I', d.parent_table, d.partition_table)
           || case when exists (select from pg_inherits h join pg_class c on c.oid = h.inhrelid
                                where h.inhparent = to_regclass(format('absurd.%I', d.parent_table))
                                  and pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')
                   then '' else ' concurrently' end
    from absurd.list_detach_candidates(null) d
    where d.partition_table = p_partition_table
$$;

-- What `absurd-host maintain --dry-run` reports: the children ensure_partitions would make now,
-- per queue (or for one queue). A week already held by the DEFAULT child is not listed.
create function absurd.missing_partitions(p_queue_name text default null)
returns table (queue_name text, partition_table text)
language plpgsql stable
as $$
declare
    v_now    timestamptz := absurd.current_time();
    v_queue  absurd.queues%rowtype;
    v_week   timestamptz;
    v_last   timestamptz;
    v_prefix text;
    v_child  text;
begin
    for v_queue in
        select * from absurd.queues q
        where q.storage_mode = 'partitioned'
          and (p_queue_name is null or q.queue_name = p_queue_name)
        order by q.queue_name
    loop
        v_week := absurd.week_bucket_utc(v_now - v_queue.partition_lookback);
        v_last := absurd.week_bucket_utc(v_now + v_queue.partition_lookahead);
        while v_week <= v_last loop
            foreach v_prefix in array array['t', 'r', 'c', 'w'] loop
                v_child := v_prefix || '_' || v_queue.queue_name || '_' || absurd.partition_week_tag(v_week);
                if to_regclass(format('absurd.%I', v_child)) is null
                   and not absurd._host_default_holds(v_queue.queue_name, v_prefix, absurd.uuidv7_floor(v_week),
                                                      absurd.uuidv7_floor(v_week + interval '168 hours')) then
                    queue_name := v_queue.queue_name;
                    partition_table := v_child;
                    return next;
                end if;
            end loop;
            v_week := v_week + interval '168 hours';
        end loop;
        if v_queue.default_partition = 'enabled' then
            foreach v_prefix in array array['t', 'r', 'c', 'w'] loop
                v_child := v_prefix || '_' || v_queue.queue_name || '_d';
                if to_regclass(format('absurd.%I', v_child)) is null then
                    queue_name := v_queue.queue_name;
                    partition_table := v_child;
                    return next;
                end if;
            end loop;
        end if;
    end loop;
end;
$$;

-- Tables once detached from a queue's parents and not dropped yet (a detach whose drop did not
-- follow: absurdctl detach-candidate without --drop, an interrupted maintenance pass, or an
-- operator keeping a week aside), with whether they hold rows.
create function absurd.detached_partitions()
returns table (queue_name text, partition_table text, is_empty boolean)
language plpgsql stable
as $$
declare
    v_row record;
begin
    for v_row in
        select q.queue_name as q, c.relname::text as t
        from absurd.queues q
        cross join lateral unnest(array['t', 'r', 'c', 'w']) p(prefix)
        join pg_class c on c.relnamespace = 'absurd'::regnamespace and c.relkind = 'r'
         and left(c.relname, length(p.prefix || '_' || q.queue_name || '_'))
             = p.prefix || '_' || q.queue_name || '_'
         and substr(c.relname, length(p.prefix || '_' || q.queue_name || '_') + 1) ~ '^([0-9]{3}|d)$'
        where q.storage_mode = 'partitioned'
          and not exists (select from pg_inherits h where h.inhrelid = c.oid)
        order by q.queue_name, c.relname
    loop
        queue_name := v_row.q;
        partition_table := v_row.t;
        execute format('select not exists (select from absurd.%I)', v_row.t) into is_empty;
        return next;
    end loop;
end;
$$;
