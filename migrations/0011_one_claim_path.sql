-- absurd-host schema, part 11: one claim path and one completion path.
--
-- Why: migration 0009 gave the worker per-queue claim/complete functions (then `_hc_<queue>`
-- and `_hd_<queue>`) beside the 0.5.1 interface functions claim_task/complete_run, with their
-- own sweep semantics (sweeps only when the caller asked). So the Absurd SDKs, which call the
-- interface functions, never got the faster code, and the state-machine suite, which drives
-- the interface functions, did not test what the worker runs. Now:
--
--   * absurd.lease_<queue>(worker_id, claim_timeout, qty)  the claim. It leases runs out, hence
--     the word. Its result is claim_task's columns plus `checkpoints` (migration 0010: a run's
--     visible checkpoints, or {"deferred": true, ...} when large).
--   * absurd.done_<queue>(run_ids, results)  the completion of a batch of runs: for each run,
--     its state afterwards and whether this call completed it.
--   * absurd.claim_task / absurd.complete_run (the 0.5.1 interface, signatures and result
--     columns unchanged) call the queue's lease_/done_ function when it exists, and run the
--     generic body otherwise (a queue whose tables some other client made, or a legacy name
--     too long to carry a prefix). The worker calls lease_/done_ directly, with prepared
--     statements, which is the same code minus one dynamic-SQL dispatch.
--
-- Names: queue names are at most 57 bytes and identifiers 63, so a prefix has at most six
-- bytes: "lease_" and "done_". No interface function begins with either, so a queue's name
-- can never make one of them an overload of an interface function (a queue named "task"
-- would have made `claim_` + name = claim_task).
--
-- Sweep semantics, one set for every caller: every claim, from the worker or from any SDK,
-- first runs the two sweeps of Absurd 0.5.1's claim_task: due cancellation policies (skipped
-- without a query while the queue's t_<q>_ci index is empty) and expired leases (at most
-- `qty` per call, skip-locked, through the partial index r_<q>_cei, which holds only leased
-- running runs, so on a healthy queue it is one probe that finds nothing). An expired lease
-- is therefore failed by the next claim on its queue, whoever makes it, exactly as in 0.5.1.
--
-- The fence: AB001 ("the task was cancelled") and AB002 ("this run already failed") are
-- raised by one helper, absurd._host_fence_run, wherever a write is refused because of the
-- run's state; the SQLSTATEs and messages are the ones of migrations 0004/0005, which the
-- SDKs match on.
--
-- Like 0009, this only adds and replaces functions; tables and indexes are unchanged.

-- Raises the error that tells a worker to drop its run, when there is one: AB001 when the run
-- or its task is 'cancelled' (callers pass the state they check; null for one they do not),
-- AB002 when the run 'failed'. Returns otherwise; the caller then raises its own, non-fencing
-- error if it must.
create function absurd._host_fence_run(
    p_queue_name text, p_run_id uuid, p_run_state text, p_task_state text default null)
returns void
language plpgsql
as $$
begin
    if p_run_state = 'cancelled' or p_task_state = 'cancelled' then
        raise exception using errcode = 'AB001', message = 'Task has been cancelled';
    elsif p_run_state = 'failed' then
        raise exception using errcode = 'AB002',
            message = format('Run "%s" has already failed in queue "%s"', p_run_id, p_queue_name);
    end if;
end;
$$;

-- The per-queue functions: migration 0010's generator with the names above, the sweeps on
-- every call, and done_'s completed_now column. Everything else (the claim statement, the
-- bounded checkpoints column, plan settings, autovacuum settings) is 0010's.
create or replace function absurd._host_install_fast_paths(p_queue_name text) returns void
language plpgsql
as $gen$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    -- Two workers starting at once must not both run CREATE OR REPLACE on the same function
    -- (Postgres reports "tuple concurrently updated"); the lock serialises them.
    perform pg_advisory_xact_lock(hashtext('absurd-host fast paths'), hashtext(v_q));

    -- The names of migrations 0009/0010 go: one claim and one completion per queue. (The new
    -- functions are only ever replaced in place, never dropped here: a worker's prepared
    -- statements refer to them, and this runs whenever a queue is created again.)
    execute format('drop function if exists absurd.%I(text, integer, integer, boolean)', '_hc_' || v_q);
    execute format('drop function if exists absurd.%I(uuid[], jsonb[])', '_hd_' || v_q);

    -- %1$I claim function (lease_<q>), %2$I tasks, %3$I runs, %4$I waits, %5$L queue name, %6$I checkpoints,
    -- %7$L the cancellation-policy index.
    execute format($ddl$
create or replace function absurd.%1$I(
    p_worker_id text, p_claim_timeout integer, p_qty integer)
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
    event_payload  jsonb,
    checkpoints    jsonb
)
language plpgsql
-- A custom plan is rebuilt on every call; after five calls Postgres compares it with a generic
-- plan, and for these statements its estimate keeps the custom one, which puts planning back
-- on every call. The generic plans are right here: index probes whatever the values. A generic
-- plan cannot know how many runs a call passes or finds, though, and for a guessed hundred it
-- may hash a whole table; these calls touch a few runs each, by primary key, so joins are
-- nested loops over index probes, always.
set plan_cache_mode = force_generic_plan
set enable_hashjoin = off
set enable_mergejoin = off
set enable_seqscan = off
as $fn$
#variable_conflict use_column
declare
    v_now     timestamptz := absurd.current_time();
    v_timeout integer := greatest(coalesce(p_claim_timeout, 30), 0);
    v_qty     integer := greatest(coalesce(p_qty, 1), 1);
    v_worker  text := coalesce(nullif(p_worker_id, ''), 'worker');
    v_task    uuid;
    v_row     record;
begin
    -- (1) and (2) are the sweeps of Absurd 0.5.1's claim_task, on every call, as there: the
    -- one sweep semantics of this schema (see the top of migration 0011). Both are index
    -- probes that find nothing on a healthy queue, so they cost little.

    -- (1) Cancellation policies. Only tasks with a policy are in the partial index t_<q>_ci; an
    -- index that never held an entry is just its metapage, so a queue whose tasks never had a
    -- policy skips the sweep without running a query.
    if pg_relation_size(%7$L::regclass) > current_setting('block_size')::bigint then
        for v_task in
            select t.task_id from absurd.%2$I t
            where t.cancellation is not null
              and t.state in ('pending', 'sleeping', 'running')
              and ((t.first_started_at is null
                    and extract(epoch from v_now - t.enqueue_at) >= (t.cancellation ->> 'max_delay')::numeric)
                or (t.first_started_at is not null
                    and extract(epoch from v_now - t.first_started_at) >= (t.cancellation ->> 'max_duration')::numeric))
            order by t.task_id
        loop
            perform absurd.cancel_task(%5$L, v_task);
        end loop;
    end if;

    -- (2) Expired leases fail their attempt (so it counts as an attempt and follows the retry
    -- policy): at most as many as the call claims, skip-locked, through the partial index
    -- r_<q>_cei that holds only leased running runs.
    begin
        for v_row in
            select r.run_id, r.claimed_by, r.claim_expires_at, r.attempt from absurd.%3$I r
            where r.state = 'running' and r.claim_expires_at is not null and r.claim_expires_at <= v_now
            order by r.claim_expires_at, r.run_id
            limit v_qty
            for update skip locked
        loop
            perform absurd.fail_run(%5$L, v_row.run_id,
                jsonb_strip_nulls(jsonb_build_object(
                    'name', '$ClaimTimeout',
                    'message', 'worker did not finish task within claim interval',
                    'workerId', v_row.claimed_by,
                    'claimExpiredAt', v_row.claim_expires_at,
                    'attempt', v_row.attempt)),
                null);
        end loop;
    end;

    -- (3) The claim, in one statement: the oldest ready runs (one skip-locked index probe per
    -- claimable state, merged), their tasks marked running, the runs leased, timed-out event
    -- waits of woken runs dropped. Lock order is run, then task, as everywhere else. A ready run
    -- whose task is already terminal (only possible after manual edits) is left alone; unlike
    -- claim_task, this call then returns fewer runs instead of probing again, and the worker
    -- simply claims again.
    return query
    with pending_runs as (
        select r.run_id, r.task_id, r.attempt, r.available_at, false as slept
        from absurd.%3$I r
        where r.state = 'pending' and r.available_at <= v_now
        order by r.available_at, r.run_id
        limit v_qty
        for update skip locked
    ), sleeping_runs as (
        select r.run_id, r.task_id, r.attempt, r.available_at, true as slept
        from absurd.%3$I r
        where r.state = 'sleeping' and r.available_at <= v_now
        order by r.available_at, r.run_id
        limit v_qty
        for update skip locked
    ), picked as (
        select * from pending_runs
        union all
        select * from sleeping_runs
        order by available_at, run_id
        limit v_qty
    ), leased_tasks as (
        update absurd.%2$I t
        set state = 'running',
            first_started_at = coalesce(t.first_started_at, v_now),
            attempts = greatest(t.attempts, p.attempt),
            last_attempt_run = p.run_id
        from picked p
        where t.task_id = p.task_id and t.state in ('pending', 'sleeping', 'running')
        returning p.run_id, p.slept, t.task_id, p.attempt, t.task_name, t.params,
                  t.retry_strategy, t.max_attempts, t.headers
    ), leased_runs as (
        update absurd.%3$I r
        set state = 'running', claimed_by = v_worker,
            claim_expires_at = case when v_timeout > 0 then v_now + v_timeout * interval '1 second' end,
            started_at = v_now, available_at = v_now
        from leased_tasks k
        where r.run_id = k.run_id
        returning r.run_id, r.wake_event, r.event_payload
    ), timed_out_waits as (
        delete from absurd.%4$I w
        where w.run_id = any (array(select k.run_id from leased_tasks k where k.slept))
          and w.timeout_at <= v_now
    )
    select k.run_id, k.task_id, k.attempt, k.task_name, k.params, k.retry_strategy,
           k.max_attempts, k.headers, l.wake_event, l.event_payload,
           -- The checkpoints, aggregated only when they are known to be small (see the top
           -- of migration 0010): otherwise {"deferred": true, ...} and the worker reads them
           -- one by one. `fits` is the same for every row of one task; jsonb_agg sees no row
           -- when it is false, so a large task never reaches the 256 MiB jsonb cap here.
           (select case
                       when count(*) = 0 then null
                       when bool_and(v.fits)
                       then jsonb_agg(jsonb_build_object('name', v.checkpoint_name, 'state', v.state)
                                      order by v.updated_at, v.checkpoint_name)
                                filter (where v.fits)
                       else jsonb_build_object('deferred', true, 'count', count(*),
                                               'stored_bytes', sum(v.stored_bytes))
                   end
            from (select c.checkpoint_name, c.state, c.updated_at,
                         pg_column_size(c.state)::bigint as stored_bytes,
                         -- Sizes read from the value headers, without detoasting: exact for
                         -- uncompressed values; a compressed one could be far larger than
                         -- its stored size, so any compressed value defers the task.
                         bool_and(pg_column_compression(c.state) is null) over ()
                           and sum(octet_length(c.checkpoint_name) + pg_column_size(c.state) + 64)
                                 over () <= 1048576 as fits
                  from absurd.%6$I c
                  left join absurd.%3$I owner on owner.run_id = c.owner_run_id
                  where c.task_id = k.task_id and c.status = 'committed'
                    and (owner.run_id is null or owner.attempt <= k.attempt)) v)
    from leased_tasks k
    join leased_runs l on l.run_id = k.run_id
    order by k.run_id;
end;
$fn$
$ddl$, 'lease_' || v_q, 't_' || v_q, 'r_' || v_q, 'w_' || v_q, v_q, 'c_' || v_q,
      format('absurd.%I', 't_' || v_q || '_ci'));

    -- %1$I complete function (done_<q>), %2$I tasks, %3$I runs, %4$I waits.
    execute format($ddl$
create or replace function absurd.%1$I(p_run_ids uuid[], p_results jsonb[])
returns table (run_id uuid, state text, completed_now boolean)
language plpgsql
-- The same plan settings as the claim function, for the same reasons.
set plan_cache_mode = force_generic_plan
set enable_hashjoin = off
set enable_mergejoin = off
set enable_seqscan = off
as $fn$
#variable_conflict use_column
declare
    v_now timestamptz := absurd.current_time();
begin
    -- As complete_run, for many runs: only a running run completes (the fence); its task takes
    -- the result; its event waits go. Runs are locked before their tasks.
    return query
    with input as (
        select u.run_id, u.result from unnest(p_run_ids, p_results) as u (run_id, result)
    ), done as (
        update absurd.%3$I r
        set state = 'completed', completed_at = v_now, result = i.result
        from input i
        -- Found by primary key. (`is true` keeps the fence out of the (state, available_at)
        -- index, which a generic plan might otherwise walk through every running run.)
        where r.run_id = i.run_id and (r.state = 'running') is true
        returning r.run_id, r.task_id, r.result
    ), done_tasks as (
        update absurd.%2$I t
        set state = 'completed', completed_payload = d.result, last_attempt_run = d.run_id
        from done d
        where t.task_id = d.task_id
    ), done_waits as (
        delete from absurd.%4$I w where w.run_id = any (array(select d.run_id from done d))
    )
    -- For runs not completed here, their state as it was (cancelled, failed, ...), or 'missing';
    -- completed_now tells a run completed by this call from one completed before (which
    -- complete_run refuses, and a worker retrying a write takes as done).
    select i.run_id,
           case when d.run_id is not null then 'completed' else coalesce(r.state, 'missing') end,
           d.run_id is not null
    from input i
    left join done d on d.run_id = i.run_id
    left join absurd.%3$I r on r.run_id = i.run_id;
end;
$fn$
$ddl$, 'done_' || v_q, 't_' || v_q, 'r_' || v_q, 'w_' || v_q);

    -- Every claim and completion rewrites a run row and a task row, and each rewrite leaves a
    -- dead index entry that later claim probes step over until vacuum removes it. Vacuum these
    -- two tables after 2% of their rows changed (the default is 20%), without cost delay.
    execute format('alter table absurd.%I set (autovacuum_vacuum_scale_factor = 0.02, '
                   'autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0)',
                   'r_' || v_q);
    execute format('alter table absurd.%I set (autovacuum_vacuum_scale_factor = 0.02, '
                   'autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0)',
                   't_' || v_q);
end;
$gen$;


alter function absurd.drop_queue(text) rename to _host_drop_queue_v2;
create function absurd.drop_queue(p_queue_name text) returns void
language plpgsql
as $$
begin
    -- No name validation, like the original: over-long legacy names must stay droppable.
    execute format('drop function if exists absurd.%I(text, integer, integer)', 'lease_' || p_queue_name);
    execute format('drop function if exists absurd.%I(uuid[], jsonb[])', 'done_' || p_queue_name);
    -- 0009's wrapper drops the old names and then the queue.
    perform absurd._host_drop_queue_v2(p_queue_name);
end;
$$;

-- claim_task: the 0.5.1 body stays, renamed, for queues without a lease_ function.
alter function absurd.claim_task(text, text, integer, integer) rename to _host_claim_task_generic;
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
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    if to_regprocedure(format('absurd.%I(text,integer,integer)', 'lease_' || v_q)) is null then
        return query select * from absurd._host_claim_task_generic(v_q, p_worker_id, p_claim_timeout, p_qty);
        return;
    end if;
    -- Dynamic SQL here is only this one-line call, cheap to plan; the claim's own statements
    -- are static in lease_<q> and keep their plans. The 0.5.1 columns, in claim_task's order
    -- (lease_ also orders by run_id).
    return query execute format(
        'select f.run_id, f.task_id, f.attempt, f.task_name, f.params, f.retry_strategy, '
        'f.max_attempts, f.headers, f.wake_event, f.event_payload from absurd.%I($1, $2, $3) f',
        'lease_' || v_q)
        using p_worker_id, p_claim_timeout, p_qty;
end;
$$;

-- complete_run: the queue's done_ function when it exists, else the generic statements of
-- migration 0004; either way the same fence and the same errors.
create or replace function absurd.complete_run(p_queue_name text, p_run_id uuid, p_state jsonb default null)
returns void
language plpgsql
as $$
declare
    v_now     timestamptz;
    v_q       text := absurd.validate_queue_name(p_queue_name);
    v_task_id uuid;
    v_state   text;
    v_done    boolean := false;
begin
    if to_regprocedure(format('absurd.%I(uuid[],jsonb[])', 'done_' || v_q)) is not null then
        execute format('select d.state, d.completed_now from absurd.%I($1, $2) d', 'done_' || v_q)
            into v_state, v_done
            using array[p_run_id], array[p_state];
    else
        -- As 0004: the guarded run update takes the run lock, and only then is the task locked.
        v_now := absurd.current_time();
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
        execute format('select r.state from absurd.%I r where r.run_id = $1', 'r_' || v_q)
            into v_state using p_run_id;
        v_state := coalesce(v_state, 'missing');
    end if;
    if v_done then
        return;
    end if;

    -- Not running: say why.
    perform absurd._host_fence_run(v_q, p_run_id, v_state, null);
    if v_state = 'missing' then
        raise exception 'Run "%" not found in queue "%"', p_run_id, v_q;
    end if;
    raise exception 'Run "%" is not currently running in queue "%"', p_run_id, v_q;
end;
$$;

-- The other writes that fence a run, unchanged but for their AB001/AB002 checks, which now
-- call absurd._host_fence_run (bodies as in migrations 0004 and 0005).

create or replace function absurd.fail_run(
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
    end if;
    perform absurd._host_fence_run(v_q, p_run_id, v_state, null);
    if v_state not in ('running', 'sleeping') then
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

create or replace function absurd.extend_claim(p_queue_name text, p_run_id uuid, p_extend_by integer)
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
    end if;
    -- The task's cancellation, then the run's failure (a cancelled run's own state is not
    -- consulted here, as in migration 0004).
    perform absurd._host_fence_run(v_q, p_run_id, nullif(v_state, 'cancelled'), v_task_state);
    if v_state <> 'running' then
        raise exception 'Run "%" is not currently running in queue "%"', p_run_id, v_q;
    end if;
    raise exception 'Run "%" does not have an active claim in queue "%"', p_run_id, v_q;
end;
$$;

create or replace function absurd.set_task_checkpoint_state(
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
    end if;
    perform absurd._host_fence_run(v_q, p_owner_run, nullif(v_state, 'cancelled'), v_task_state);

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

create or replace function absurd.await_event(
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
    end if;
    -- Only the task's cancellation fences an await (a failed run is refused further on).
    perform absurd._host_fence_run(v_q, p_run_id, null, v_task_state);
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

-- Queues that exist already get the new functions (and lose 0009's names). As in 0009, a
-- queue the fast path cannot serve keeps working through the generic bodies.
do $$
declare
    v_q text;
begin
    for v_q in select q.queue_name from absurd.queues q order by q.queue_name loop
        begin
            perform absurd._host_install_fast_paths(v_q);
        exception when others then
            raise notice 'queue %: no per-queue claim (%)', v_q, sqlerrm;
        end;
    end loop;
end;
$$;
