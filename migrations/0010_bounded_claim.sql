-- absurd-host schema, part 10: a claim can never fail because of one task's checkpoints.
--
-- Why: the fast claim of migration 0009 (absurd._hc_<queue>) returned each run's checkpoints as
-- one jsonb_agg. Postgres caps a jsonb value at 256 MiB, and nothing caps what a client writes
-- into c_<queue> (any Absurd client, or plain SQL, may store checkpoints of up to 256 MiB each).
-- One claimable task with three 90 MB checkpoints made every claim on its queue fail ("total
-- size of jsonb array elements exceeds the maximum"), and the lease sweep in the same call
-- rolled back with it: the whole queue stalled.
--
-- Now the claim aggregates a task's visible checkpoints only when the total is at most 1 MiB,
-- judged from the values' headers without reading them:
--   * pg_column_size of an uncompressed value is its size; names are counted with octet_length
--     (also read from the header), plus 64 bytes per checkpoint for the aggregate's own keys.
--   * A compressed value's stored size says little about its real size (a repeated string
--     shrinks more than a hundredfold), and measuring it would mean decompressing it in the
--     claim, so a task with any compressed checkpoint (that is, one of more than about 2 kB)
--     is deferred.
-- Otherwise the column holds {"deferred": true, "count": n, "stored_bytes": b} and the worker
-- reads that task's checkpoints itself, one by one, checking each value's size before it is
-- sent (its max_checkpoint_bytes / max_checkpoint_total_bytes limits). Why 1 MiB: it is
-- 256 times below the cap, so no estimate error can reach it; a claim batch holds at most one
-- such column per free worker slot, which keeps the claim's reply small; and checkpoints
-- above it cost a second round trip that is small beside moving a megabyte.
--
-- Tasks without checkpoints cost what they did (the same single index probe finds no rows);
-- everything else in the claim is unchanged, and so are the functions' signatures: the
-- generator below is 0009's with only the checkpoints column changed, and it is re-run for
-- every existing queue. pg_column_compression needs PostgreSQL 14 or later.

create or replace function absurd._host_install_fast_paths(p_queue_name text) returns void
language plpgsql
as $gen$
declare
    v_q text := absurd.validate_queue_name(p_queue_name);
begin
    -- Two workers starting at once must not both run CREATE OR REPLACE on the same function
    -- (Postgres reports "tuple concurrently updated"); the lock serialises them.
    perform pg_advisory_xact_lock(hashtext('absurd-host fast paths'), hashtext(v_q));

    -- %1$I claim function, %2$I tasks, %3$I runs, %4$I waits, %5$L queue name, %6$I checkpoints,
    -- %7$L the cancellation-policy index.
    execute format($ddl$
create or replace function absurd.%1$I(
    p_worker_id text, p_claim_timeout integer, p_qty integer, p_sweep boolean)
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
    -- (1) and (2) are the sweeps claim_task runs on every call. Here they run only when the
    -- caller asks (the worker asks about once a second per queue): on a busy queue, walking the
    -- running runs for expired leases on every claim costs more than the claim itself.

    -- (1) Cancellation policies. Only tasks with a policy are in the partial index t_<q>_ci; an
    -- index that never held an entry is just its metapage, so a queue whose tasks never had a
    -- policy skips the sweep without running a query.
    if p_sweep and pg_relation_size(%7$L::regclass) > current_setting('block_size')::bigint then
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

    -- (2) Expired leases fail their attempt, as in claim_task (at least 100 per sweep, since
    -- sweeps are less frequent than claims).
    if p_sweep then
        for v_row in
            select r.run_id, r.claimed_by, r.claim_expires_at, r.attempt from absurd.%3$I r
            where r.state = 'running' and r.claim_expires_at is not null and r.claim_expires_at <= v_now
            order by r.claim_expires_at, r.run_id
            limit greatest(v_qty, 100)
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
    end if;

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
$ddl$, '_hc_' || v_q, 't_' || v_q, 'r_' || v_q, 'w_' || v_q, v_q, 'c_' || v_q,
      format('absurd.%I', 't_' || v_q || '_ci'));

    -- %1$I complete function, %2$I tasks, %3$I runs, %4$I waits.
    execute format($ddl$
create or replace function absurd.%1$I(p_run_ids uuid[], p_results jsonb[])
returns table (run_id uuid, state text)
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
    -- For runs not completed here, their state as it was (cancelled, failed, ...), or 'missing'.
    select i.run_id,
           case when d.run_id is not null then 'completed' else coalesce(r.state, 'missing') end
    from input i
    left join done d on d.run_id = i.run_id
    left join absurd.%3$I r on r.run_id = i.run_id;
end;
$fn$
$ddl$, '_hd_' || v_q, 't_' || v_q, 'r_' || v_q, 'w_' || v_q);

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

-- Rewrite the claim (and completion) functions of the queues that exist already. As in 0009,
-- a queue the fast path cannot serve keeps working through claim_task.
do $$
declare
    v_q text;
begin
    for v_q in select q.queue_name from absurd.queues q order by q.queue_name loop
        begin
            perform absurd._host_install_fast_paths(v_q);
        exception when others then
            raise notice 'queue %: no fast paths (%)', v_q, sqlerrm;
        end;
    end loop;
end;
$$;
