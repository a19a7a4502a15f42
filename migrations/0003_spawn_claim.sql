-- absurd-host schema, part 3: creating tasks and claiming runs (the worker hot path).

-- Creates a task and its first run, or with an idempotency key that is already taken returns the
-- existing task (its current run and attempt count) without writing anything.
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
    v_now      timestamptz := absurd.current_time();
    v_q        text := absurd.validate_queue_name(p_queue_name);
    v_options  jsonb := coalesce(p_options, '{}'::jsonb);
    v_strategy jsonb := v_options -> 'retry_strategy';
    v_key      text := v_options ->> 'idempotency_key';
    v_max      integer;
    v_task_id  uuid;
    v_run_id   uuid;
    v_attempts integer;
    v_insert   text;
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

    -- Task and first run in one statement. With an idempotency key the task insert may do nothing
    -- (the key is taken); then no run is inserted either and the statement returns no row. ON
    -- CONFLICT waits for a concurrent inserter of the same key, so the read-back below sees it.
    v_insert := format($sql$
        with new_task as (
            insert into absurd.%1$I as t
                (task_id, task_name, params, headers, retry_strategy, max_attempts, cancellation,
                 enqueue_at, state, attempts, last_attempt_run, idempotency_key)
            values ($1, $3, coalesce($4, 'null'::jsonb), $5, $6, $7, $8,
                    $9, 'pending', 1, $2, $10)
            on conflict (idempotency_key) do nothing
            returning t.task_id
        )
        insert into absurd.%2$I (run_id, task_id, attempt, state, available_at, created_at)
        select $2, new_task.task_id, 1, 'pending', $9, $9 from new_task
        returning run_id$sql$, 't_' || v_q, 'r_' || v_q);

    loop
        v_task_id := absurd.portable_uuidv7();
        v_run_id := absurd.portable_uuidv7();
        execute v_insert into v_run_id
            using v_task_id, v_run_id, p_task_name, p_params, v_options -> 'headers', v_strategy,
                  v_max, v_options -> 'cancellation', v_now, v_key;
        if v_run_id is not null then
            perform absurd._host_notify_ready(v_q);
            return query select v_task_id, v_run_id, 1, true;
            return;
        end if;

        execute format('select t.task_id, t.last_attempt_run, t.attempts from absurd.%I t '
                       'where t.idempotency_key = $1', 't_' || v_q)
            into v_task_id, v_run_id, v_attempts
            using v_key;
        if v_task_id is not null then
            return query select v_task_id, v_run_id, v_attempts, false;
            return;
        end if;
        -- The conflicting task was cleaned up between the two statements: the key is free again.
    end loop;
end;
$$;

-- Claims up to p_qty runs for a worker. In one call, in this order (later steps see the effects
-- of earlier ones): claim-time cancellation policies, the expired-lease sweep, then the claim.
--
-- Every idle worker calls this in a tight loop, so it is built for cost:
--   * Per-queue tables force dynamic SQL, which is planned on every execution. Planning dominates
--     the cost of these tiny statements and grows quickly with joins and CTEs, so the work is split
--     into single-table statements (each planned in a few tens of microseconds) rather than one
--     clever statement. Statement texts are built once per call; values travel with USING.
--   * Cancellation sweep: only tasks with a policy are in the partial index t_<q>_ci. An index that
--     has never held an entry is just its metapage, so a queue whose tasks never had a policy skips
--     the sweep without running a query; otherwise the sweep walks that index only.
--   * Lease sweep: the partial index r_<q>_cei holds only leased running runs; at most p_qty rows,
--     skip-locked so concurrent claimers never queue behind each other.
--   * Claim: one ordered, limited, skip-locked probe of r_<q>_sai per claimable state (pending,
--     sleeping), merged by (available_at, run_id). A single `state in (...)` scan cannot return
--     rows in available_at order and would read and sort every ready run.
--   * A ready run whose task is already terminal (only possible after manual edits) is never
--     handed out; it is left alone and the probes are repeated without it.
create function absurd.claim_task(
    p_queue_name    text,
    p_worker_id     text,
    p_claim_timeout integer default 30,
    p_qty           integer default 1
)
returns table (
    run_id         uuid,
    task_id        uuid,
    attempt        integer,
    task_name      text,
    params         jsonb,
    retry_strategy jsonb,
    max_attempts   integer,
    headers        jsonb,
    wake_event     text,
    event_payload  jsonb
)
language plpgsql
as $$
declare
    v_now       timestamptz := absurd.current_time();
    v_q         text := absurd.validate_queue_name(p_queue_name);
    v_t         text := format('absurd.%I', 't_' || v_q);
    v_r         text := format('absurd.%I', 'r_' || v_q);
    v_timeout   integer := case when p_claim_timeout is null then 30
                                when p_claim_timeout < 0 then 0
                                else p_claim_timeout end;
    v_qty       integer := case when p_qty is null or p_qty < 1 then 1 else p_qty end;
    v_worker    text := coalesce(nullif(p_worker_id, ''), 'worker');
    v_expires   timestamptz;
    v_ci        regclass;
    v_task      uuid;
    v_row       record;
    v_probe     text;
    v_lease_task text;
    -- candidates of the current pass, in claim order
    c_run       uuid[];
    c_task      uuid[];
    c_attempt   integer[];
    c_avail     timestamptz[];
    v_pending   integer;
    v_want      integer;
    v_slept     boolean := false;
    -- runs claimed so far, and what is returned for them
    o_run       uuid[] := '{}';
    o_task      uuid[] := '{}';
    o_attempt   integer[] := '{}';
    o_name      text[] := '{}';
    o_params    jsonb[] := '{}';
    o_strategy  jsonb[] := '{}';
    o_max       integer[] := '{}';
    o_headers   jsonb[] := '{}';
    l_run       uuid[] := '{}';
    l_event     text[] := '{}';
    l_payload   jsonb[] := '{}';
    v_skip      uuid[] := '{}';
    v_zombie    boolean;
    v_count     bigint;
    i           integer;
begin
    -- (1) Cancellation policies. Integer seconds are compared as numeric epoch differences, which
    -- cannot overflow the way interval arithmetic on a huge policy value could.
    v_ci := to_regclass(format('absurd.%I', 't_' || v_q || '_ci'));
    if v_ci is null or pg_relation_size(v_ci) > current_setting('block_size')::bigint then
        for v_task in execute format($sql$
            select t.task_id from %s t
            where t.cancellation is not null
              and t.state in ('pending', 'sleeping', 'running')
              and ((t.first_started_at is null
                    and extract(epoch from $1 - t.enqueue_at) >= (t.cancellation ->> 'max_delay')::numeric)
                or (t.first_started_at is not null
                    and extract(epoch from $1 - t.first_started_at) >= (t.cancellation ->> 'max_duration')::numeric))
            order by t.task_id$sql$, v_t)
            using v_now
        loop
            perform absurd.cancel_task(v_q, v_task);
        end loop;
    end if;

    -- (2) Expired leases: each is an ordinary failure of that attempt (so it consumes an attempt
    -- and follows the retry policy). fail_run reads the clock itself, as the interface specifies.
    for v_row in execute format($sql$
        select r.run_id, r.claimed_by, r.claim_expires_at, r.attempt from %s r
        where r.state = 'running' and r.claim_expires_at is not null and r.claim_expires_at <= $1
        order by r.claim_expires_at, r.run_id
        limit $2
        for update skip locked$sql$, v_r)
        using v_now, v_qty
    loop
        perform absurd.fail_run(v_q, v_row.run_id,
            jsonb_strip_nulls(jsonb_build_object(
                'name', '$ClaimTimeout',
                'message', 'worker did not finish task within claim interval',
                'workerId', v_row.claimed_by,
                'claimExpiredAt', v_row.claim_expires_at,
                'attempt', v_row.attempt)),
            null);
    end loop;

    -- (3) Claim.
    v_expires := case when v_timeout > 0 then v_now + v_timeout * interval '1 second' end;
    v_probe := format($sql$
        select r.run_id, r.task_id, r.attempt, r.available_at from %s r
        where r.state = $1 and r.available_at <= $2 and r.run_id <> all($4)
        order by r.available_at, r.run_id
        limit $3
        for update skip locked$sql$, v_r);
    v_lease_task := format($sql$
        update %s t
        set state = 'running',
            first_started_at = coalesce(t.first_started_at, $4),
            attempts = greatest(t.attempts, $3),
            last_attempt_run = $2
        where t.task_id = $1 and t.state in ('pending', 'sleeping', 'running')
        returning t.task_name, t.params, t.retry_strategy, t.max_attempts, t.headers$sql$, v_t);

    loop
        v_want := v_qty - cardinality(o_run);
        c_run := '{}'; c_task := '{}'; c_attempt := '{}'; c_avail := '{}';
        for v_row in execute v_probe using 'pending'::text, v_now, v_want, v_skip || o_run loop
            c_run := c_run || v_row.run_id;
            c_task := c_task || v_row.task_id;
            c_attempt := c_attempt || v_row.attempt;
            c_avail := c_avail || v_row.available_at;
        end loop;
        v_pending := cardinality(c_run);
        for v_row in execute v_probe using 'sleeping'::text, v_now, v_want, v_skip || o_run loop
            c_run := c_run || v_row.run_id;
            c_task := c_task || v_row.task_id;
            c_attempt := c_attempt || v_row.attempt;
            c_avail := c_avail || v_row.available_at;
        end loop;
        exit when cardinality(c_run) = 0;

        -- Each probe returns its rows in (available_at, run_id) order; when both found some, merge
        -- them. Rows locked but not taken stay unclaimed (their locks go at commit).
        if cardinality(c_run) > v_pending then
            v_slept := true;
            select array_agg(u.run_id order by u.available_at, u.run_id),
                   array_agg(u.task_id order by u.available_at, u.run_id),
                   array_agg(u.attempt order by u.available_at, u.run_id)
            into c_run, c_task, c_attempt
            from unnest(c_run, c_task, c_attempt, c_avail) as u (run_id, task_id, attempt, available_at);
        end if;

        v_zombie := false;
        for i in 1 .. least(cardinality(c_run), v_want) loop
            -- The task is updated first in statement order, but the run row is already locked by
            -- the probe, so the lock order is still run before task.
            execute v_lease_task into v_row using c_task[i], c_run[i], c_attempt[i], v_now;
            get diagnostics v_count = row_count;   -- (EXECUTE does not set FOUND)
            if v_count = 0 then
                v_skip := v_skip || c_run[i];
                v_zombie := true;
                continue;
            end if;
            o_run := o_run || c_run[i];
            o_task := o_task || c_task[i];
            o_attempt := o_attempt || c_attempt[i];
            o_name := o_name || v_row.task_name;
            o_params := o_params || v_row.params;
            o_strategy := o_strategy || v_row.retry_strategy;
            o_max := o_max || v_row.max_attempts;
            o_headers := o_headers || v_row.headers;
        end loop;
        exit when not v_zombie or cardinality(o_run) >= v_qty;
    end loop;

    if cardinality(o_run) = 0 then
        return;
    end if;

    -- Only a run that was sleeping can have an event wait; drop the ones that timed out.
    if v_slept then
        execute format('delete from absurd.%I w where w.run_id = any($1) and w.timeout_at <= $2', 'w_' || v_q)
            using o_run, v_now;
    end if;

    -- Lease the runs out. wake_event and event_payload are returned as stored (not cleared).
    for v_row in execute format($sql$
        update %s r
        set state = 'running', claimed_by = $2, claim_expires_at = $3, started_at = $1, available_at = $1
        where r.run_id = any($4)
        returning r.run_id, r.wake_event, r.event_payload$sql$, v_r)
        using v_now, v_worker, v_expires, o_run
    loop
        l_run := l_run || v_row.run_id;
        l_event := l_event || v_row.wake_event;
        l_payload := l_payload || v_row.event_payload;
    end loop;

    -- All claimed runs now share available_at = now, so claim order is run order.
    return query
        select o.run_id, o.task_id, o.attempt, o.task_name, o.params, o.retry_strategy,
               o.max_attempts, o.headers, l.wake_event, l.event_payload
        from unnest(o_run, o_task, o_attempt, o_name, o_params, o_strategy, o_max, o_headers)
             as o (run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts, headers)
        join unnest(l_run, l_event, l_payload) as l (run_id, wake_event, event_payload)
             on l.run_id = o.run_id
        order by o.run_id;
end;
$$;
