-- absurd-host schema, part 24: a cheaper claim and completion, one run at a time.
--
-- Why: a worker that claims one run at a time (concurrency 1, or any slot that frees alone)
-- completes it and claims the next with one call of next_<queue> (migration 0012), so a task
-- costs one commit. What Postgres did besides the commit was measured in instructions, not
-- seconds, since the machine this project runs on is shared: callgrind on a private server's
-- backend, the worker's own statements (next_<queue> through the claim wrapper of
-- client/src/claimed.rs) on a fresh queue, instructions per task as the difference between a
-- 300-task and a 100-task drain (so connection start-up cancels out):
--
--   0012 as it was                                               1.84 M instructions per task
--   (a) the claim probes without their sort                      1.22 M
--   (b) and three probes asked inside other statements           1.17 M
--   (c) and the state checks in their cheap form                 1.02 M
--   (the state checks dropped altogether, for comparison:        0.95 M)
--
-- (a) The single-run claim took the oldest ready run with ORDER BY available_at, run_id
--     LIMIT 1. The index r_<q>_sai holds (state, available_at), so Postgres sorted by run_id
--     within available_at with an incremental sort, which reads at least 32 rows (heap
--     fetches, tuple copies, a tuplesort) before it returns the first. The probe now takes the
--     first lockable run in the index's order and asks in the same statement whether a run
--     with the same available_at and a smaller run_id exists; only then does the sorted probe
--     run. Same run chosen, same locks (see (3a) below).
-- (b) Three statements of their own become probes inside statements that run anyway: whether a
--     sleeping run is due (with the sweep checks; the sleeping probe runs only then), whether
--     the completed run has event waits (in the run's UPDATE; the DELETE runs only then), and
--     whether the claimed task has checkpoints (in the task's UPDATE). Each statement of a
--     PL/pgSQL function pays executor start-up and shutdown, and the index and relation opens
--     of its plan, whatever it finds.
-- (c) Postgres compiles a table's CHECK constraints for every UPDATE statement: it reads the
--     stored expression back from its text form and plans it. The state checks of t_<q> and
--     r_<q> (`state in ('pending', ..., 'cancelled')`, six constants) cost about 50,000
--     instructions per UPDATE that way, and a task makes four (a claim and a completion each
--     update its run and its task): more than any statement of the claim. The same check
--     written as a call of absurd._host_valid_state(state), which holds the list, is a
--     one-node expression: same rule, same constraint name, same error (23514,
--     check_violation) for a bad state.
--
-- What this adds:
--   * absurd._host_valid_state(text), and absurd._host_cheap_state_checks(queue), which
--     puts the state checks of a queue's t_/r_ tables in that form where they are in the old
--     one (a partitioned queue's parents; their partitions follow). Each replacement checks
--     every row of the table once, under its ACCESS EXCLUSIVE lock, so this migration takes
--     time in proportion to the rows of the existing queues. A check in any other form (a
--     hand-made one) is left alone.
--   * the generator of the per-queue functions, as in 0012 but for (a) and (b), and calling
--     _host_cheap_state_checks for each queue it serves, so new queues get the cheap checks
--     too; and its variant for partitioned queues, derived again from it (migration 0020).
--   * every existing queue gets both.
--
-- Nothing else changes: lease_<q>, done_<q> and next_<q> keep their signatures, columns,
-- sweep semantics, claim order, lock order and fences; claim_task and complete_run still call
-- them. Like 0009-0012 this only adds and replaces functions (and re-creates two constraints
-- per queue in their new form).

-- The states a task or run can be in. The state checks of t_<q> and r_<q> call it.
create function absurd._host_valid_state(p_state text) returns boolean
language plpgsql
immutable
parallel safe
as $$
begin
    return p_state in ('pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled');
end;
$$;

-- Replaces the state checks of the queue's t_<q> and r_<q> that are in migration 0002's (or
-- 0020's) form by calls of _host_valid_state, keeping their names. Does nothing for a table
-- whose check is in the new form already, or in a form of someone else's, or that is missing.
create function absurd._host_cheap_state_checks(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_q     text := absurd.validate_queue_name(p_queue_name);
    v_name  text;
    v_table regclass;
    v_check name;
begin
    foreach v_name in array array['t_' || v_q, 'r_' || v_q] loop
        v_table := to_regclass(format('absurd.%I', v_name));
        continue when v_table is null;
        for v_check in
            select c.conname from pg_constraint c
            where c.conrelid = v_table and c.contype = 'c' and c.conislocal
              and pg_get_constraintdef(c.oid) =
                  'CHECK ((state = ANY (ARRAY[''pending''::text, ''running''::text, '
                  '''sleeping''::text, ''completed''::text, ''failed''::text, ''cancelled''::text])))'
        loop
            execute format('alter table %s drop constraint %I, '
                           'add constraint %I check (absurd._host_valid_state(state))',
                           v_table, v_check, v_check);
        end loop;
    end loop;
end;
$$;

-- The generator of lease_<q>, done_<q> and next_<q>: migration 0012's, with (a) and (b).
create or replace function absurd._host_install_fast_paths(p_queue_name text) returns void
language plpgsql
as $gen$
declare
    v_q     text := absurd.validate_queue_name(p_queue_name);
    -- Pieces of function text that lease_<q> and next_<q> share, each written once here.
    v_cps   text;  -- a claimed run's checkpoints column: %1$s its task id, %2$s its attempt
    v_decl  text;  -- the claim's variables
    v_claim text;  -- the sweeps and the claim of v_qty runs, ending the function (a batch's
                   -- rows end where the comment "more columns" stands)
begin
    -- Two workers starting at once must not both run CREATE OR REPLACE on the same function
    -- (Postgres reports "tuple concurrently updated"); the lock serialises them.
    perform pg_advisory_xact_lock(hashtext('absurd-host fast paths'), hashtext(v_q));

    -- Migration 0009/0010's names, as 0011 drops them (for a queue made again by an old
    -- client). The current functions are only ever replaced in place, never dropped here: a
    -- worker's prepared statements refer to them.
    execute format('drop function if exists absurd.%I(text, integer, integer, boolean)', '_hc_' || v_q);
    execute format('drop function if exists absurd.%I(uuid[], jsonb[])', '_hd_' || v_q);

    -- The checkpoints, aggregated only when they are known to be small (see the top of
    -- migration 0010): otherwise {"deferred": true, ...} and the worker reads them one by one.
    -- `fits` is the same for every row of one task; jsonb_agg sees no row when it is false, so
    -- a large task never reaches the 256 MiB jsonb cap here. Sizes are read from the value
    -- headers, without detoasting: exact for uncompressed values; a compressed one could be
    -- far larger than its stored size, so any compressed value defers the task.
    v_cps := format($frag$(select case
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
                         bool_and(pg_column_compression(c.state) is null) over ()
                           and sum(octet_length(c.checkpoint_name) + pg_column_size(c.state) + 64)
                                 over () <= 1048576 as fits
                  from absurd.%1$I c
                  left join absurd.%2$I owner on owner.run_id = c.owner_run_id
                  where c.task_id = %%1$s and c.status = 'committed'
                    and (owner.run_id is null or owner.attempt <= %%2$s)) v)$frag$,
        'c_' || v_q, 'r_' || v_q);

    v_decl := $frag$
    v_now      timestamptz := absurd.current_time();
    v_timeout  integer := greatest(coalesce(p_claim_timeout, 30), 0);
    v_worker   text := coalesce(nullif(p_worker_id, ''), 'worker');
    v_qty      integer;
    v_policy   boolean;
    v_expired  boolean;
    v_task     uuid;
    v_row      record;
    -- The single-run claim's run: the oldest ready pending run, or a sleeping one if older.
    v_run      uuid;
    v_attempt  integer;
    v_at       timestamptz;
    v_slept    boolean := false;
    v_s_run    uuid;
    v_s_task   uuid;
    v_s_att    integer;
    v_s_at     timestamptz;
    v_sleepy   boolean;   -- any sleeping run due
    v_tied     boolean;   -- a probe's run shares its available_at with a run of smaller id
    v_has_cps  boolean;   -- the claimed run's task has checkpoints$frag$;

    -- %1$I tasks, %2$I runs, %3$I waits, %4$L queue name, %5$I checkpoints, %6$s checkpoints
    -- of the batch form, %7$s of the single-run form.
    v_claim := format($frag$
    -- (1) and (2) are the sweeps of Absurd 0.5.1's claim_task, on every call, as there: the
    -- one sweep semantics of this schema (see the top of migration 0011). One cheap statement
    -- first says whether either can find anything: any task with a cancellation policy (the
    -- partial index t_<q>_ci holds only those), any lease expired (the partial index r_<q>_cei
    -- holds only leased running runs). On a healthy queue both are no, and neither runs. The
    -- same statement says whether any sleeping run is due, which the single-run claim (3a)
    -- looks for only then.
    select exists (select from absurd.%1$I t where t.cancellation is not null),
           exists (select from absurd.%2$I r
                   where r.state = 'running' and r.claim_expires_at is not null
                     and r.claim_expires_at <= v_now),
           exists (select from absurd.%2$I r where r.state = 'sleeping' and r.available_at <= v_now)
    into v_policy, v_expired, v_sleepy;

    -- (1) Cancellation policies that are due cancel their task.
    if v_policy then
        for v_task in
            select t.task_id from absurd.%1$I t
            where t.cancellation is not null
              and t.state in ('pending', 'sleeping', 'running')
              and ((t.first_started_at is null
                    and extract(epoch from v_now - t.enqueue_at) >= (t.cancellation ->> 'max_delay')::numeric)
                or (t.first_started_at is not null
                    and extract(epoch from v_now - t.first_started_at) >= (t.cancellation ->> 'max_duration')::numeric))
            order by t.task_id
        loop
            perform absurd.cancel_task(%4$L, v_task);
        end loop;
    end if;

    -- (2) Expired leases fail their attempt (so it counts as an attempt and follows the retry
    -- policy): at most as many as the call claims, oldest first, skip-locked.
    if v_expired then
        for v_row in
            select r.run_id, r.claimed_by, r.claim_expires_at, r.attempt from absurd.%2$I r
            where r.state = 'running' and r.claim_expires_at is not null and r.claim_expires_at <= v_now
            order by r.claim_expires_at, r.run_id
            limit v_qty
            for update skip locked
        loop
            perform absurd.fail_run(%4$L, v_row.run_id,
                jsonb_strip_nulls(jsonb_build_object(
                    'name', '$ClaimTimeout',
                    'message', 'worker did not finish task within claim interval',
                    'workerId', v_row.claimed_by,
                    'claimExpiredAt', v_row.claim_expires_at,
                    'attempt', v_row.attempt)),
                null);
        end loop;
    end if;

    -- (3a) One run: the steps of (3b) as plain statements, each with a small plan. Same
    -- choice (the oldest ready run by available_at, run_id over both claimable states,
    -- skip-locked), same lock order (run, then task), same writes, same columns.
    --
    -- Each probe takes the first run it can lock in the order of the index r_<q>_sai (state,
    -- available_at), without sorting: a sort by (available_at, run_id) reads at least 32 rows
    -- (Postgres' incremental sort fills a batch before it returns the first), which was a
    -- third of the instructions of a claim and completion (migration 0024). Every run before
    -- the one it took in that order is locked by another claimer, so only a run with the
    -- same available_at and a smaller run_id could come first in the claim order; the probe
    -- says whether one exists, and only then (tasks given one available_at, say) does the
    -- sorted probe run. It takes the same run as before, with every lock it needs (it
    -- does not skip the run this transaction has locked).
    if v_qty = 1 then
        select r.run_id, r.task_id, r.attempt, r.available_at,
               exists (select from absurd.%2$I o
                       where o.state = 'pending' and o.available_at = r.available_at
                         and o.run_id < r.run_id)
        into v_run, v_task, v_attempt, v_at, v_tied
        from absurd.%2$I r
        where r.state = 'pending' and r.available_at <= v_now
        order by r.available_at
        limit 1
        for update skip locked;
        if v_tied then
            select r.run_id, r.task_id, r.attempt, r.available_at
            into v_run, v_task, v_attempt, v_at
            from absurd.%2$I r
            where r.state = 'pending' and r.available_at <= v_now
            order by r.available_at, r.run_id
            limit 1
            for update skip locked;
        end if;
        -- A due sleeping run goes first when it is older. Only such a run is locked (3b locks
        -- up to qty runs of each state).
        if v_sleepy then
            select r.run_id, r.task_id, r.attempt, r.available_at,
                   exists (select from absurd.%2$I o
                           where o.state = 'sleeping' and o.available_at = r.available_at
                             and o.run_id < r.run_id)
            into v_s_run, v_s_task, v_s_att, v_s_at, v_tied
            from absurd.%2$I r
            where r.state = 'sleeping' and r.available_at <= v_now
              and (v_at is null or r.available_at <= v_at)
            order by r.available_at
            limit 1
            for update skip locked;
            if v_tied then
                select r.run_id, r.task_id, r.attempt, r.available_at
                into v_s_run, v_s_task, v_s_att, v_s_at
                from absurd.%2$I r
                where r.state = 'sleeping' and r.available_at <= v_now
                  and (v_at is null or r.available_at <= v_at)
                order by r.available_at, r.run_id
                limit 1
                for update skip locked;
            end if;
            if v_s_run is not null and (v_run is null or (v_s_at, v_s_run) < (v_at, v_run)) then
                v_run := v_s_run;
                v_task := v_s_task;
                v_attempt := v_s_att;
                v_slept := true;
            end if;
        end if;
        if v_run is null then
            return;
        end if;
        -- A ready run whose task is already terminal (only possible after manual edits) is
        -- left alone, and the call returns no run, as (3b) returns fewer.
        update absurd.%1$I t
        set state = 'running',
            first_started_at = coalesce(t.first_started_at, v_now),
            attempts = greatest(t.attempts, v_attempt),
            last_attempt_run = v_run
        where t.task_id = v_task and t.state in ('pending', 'sleeping', 'running')
        -- Most tasks have no checkpoint: a probe of c_<q>'s primary key, asked here rather
        -- than in a statement of its own, says so, which costs less than starting the
        -- aggregate.
        returning t.task_name, t.params, t.retry_strategy, t.max_attempts, t.headers,
                  exists (select from absurd.%5$I c where c.task_id = t.task_id)
        into task_name, params, retry_strategy, max_attempts, headers, v_has_cps;
        if not found then
            return;
        end if;
        update absurd.%2$I r
        set state = 'running', claimed_by = v_worker,
            claim_expires_at = case when v_timeout > 0 then v_now + v_timeout * interval '1 second' end,
            started_at = v_now, available_at = v_now
        where r.run_id = v_run
        returning r.wake_event, r.event_payload
        into wake_event, event_payload;
        if v_slept then
            delete from absurd.%3$I w where w.run_id = v_run and w.timeout_at <= v_now;
        end if;
        run_id := v_run;
        task_id := v_task;
        attempt := v_attempt;
        if v_has_cps then
            checkpoints := %7$s;
        end if;
        return next;
        return;
    end if;

    -- (3b) The claim of a batch, in one statement: the oldest ready runs (one skip-locked index
    -- probe per claimable state, merged), their tasks marked running, the runs leased,
    -- timed-out event waits of woken runs dropped. Lock order is run, then task, as everywhere
    -- else. A ready run whose task is already terminal (only possible after manual edits) is
    -- left alone; unlike claim_task, this call then returns fewer runs instead of probing
    -- again, and the worker simply claims again.
    return query
    with pending_runs as (
        select r.run_id, r.task_id, r.attempt, r.available_at, false as slept
        from absurd.%2$I r
        where r.state = 'pending' and r.available_at <= v_now
        order by r.available_at, r.run_id
        limit v_qty
        for update skip locked
    ), sleeping_runs as (
        select r.run_id, r.task_id, r.attempt, r.available_at, true as slept
        from absurd.%2$I r
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
        update absurd.%1$I t
        set state = 'running',
            first_started_at = coalesce(t.first_started_at, v_now),
            attempts = greatest(t.attempts, p.attempt),
            last_attempt_run = p.run_id
        from picked p
        where t.task_id = p.task_id and t.state in ('pending', 'sleeping', 'running')
        returning p.run_id, p.slept, t.task_id, p.attempt, t.task_name, t.params,
                  t.retry_strategy, t.max_attempts, t.headers
    ), leased_runs as (
        update absurd.%2$I r
        set state = 'running', claimed_by = v_worker,
            claim_expires_at = case when v_timeout > 0 then v_now + v_timeout * interval '1 second' end,
            started_at = v_now, available_at = v_now
        from leased_tasks k
        where r.run_id = k.run_id
        returning r.run_id, r.wake_event, r.event_payload
    ), timed_out_waits as (
        delete from absurd.%3$I w
        where w.run_id = any (array(select k.run_id from leased_tasks k where k.slept))
          and w.timeout_at <= v_now
    )
    select k.run_id, k.task_id, k.attempt, k.task_name, k.params, k.retry_strategy,
           k.max_attempts, k.headers, l.wake_event, l.event_payload, %6$s
           /* more columns */
    from leased_tasks k
    join leased_runs l on l.run_id = k.run_id
    order by k.run_id;$frag$,
        't_' || v_q, 'r_' || v_q, 'w_' || v_q, v_q, 'c_' || v_q,
        format(v_cps, 'k.task_id', 'k.attempt'), format(v_cps, 'v_task', 'v_attempt'));

    -- %1$I the claim function (lease_<q>), %2$s v_decl, %3$s v_claim.
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
declare%2$s
begin
    v_qty := greatest(coalesce(p_qty, 1), 1);
%3$s
end;
$fn$
$ddl$, 'lease_' || v_q, v_decl, v_claim);

    -- %1$I complete function (done_<q>), %2$I tasks, %3$I runs, %4$I waits. As in 0011.
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

    -- %1$I complete-and-claim function (next_<q>), %2$I done_<q>, %3$I tasks, %4$I runs,
    -- %5$I waits, %6$s v_decl, %7$s v_claim.
    execute format($ddl$
create or replace function absurd.%1$I(
    p_run_ids uuid[], p_results jsonb[], p_worker_id text, p_claim_timeout integer, p_qty integer)
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
    checkpoints    jsonb,
    done_state     text
)
language plpgsql
-- The claim function's plan settings, for the same reasons.
set plan_cache_mode = force_generic_plan
set enable_hashjoin = off
set enable_mergejoin = off
set enable_seqscan = off
as $fn$
#variable_conflict use_column
declare%6$s
    v_done     record;
    v_freed    integer := 0;
    v_state    text;
    v_waits    boolean;
begin
    -- The completions: exactly done_<q>'s, one row each with done_state set. One run (a
    -- worker that claims one at a time) as plain statements with small plans, like the
    -- single-run claim; a batch through done_<q> itself.
    if cardinality(p_run_ids) = 1 then
        run_id := p_run_ids[1];
        update absurd.%4$I r
        set state = 'completed', completed_at = v_now, result = p_results[1]
        -- `is true`: see done_<q>.
        where r.run_id = p_run_ids[1] and (r.state = 'running') is true
        -- A running run seldom has event waits left (a wake deletes them): a probe asked
        -- here says whether the DELETE has anything to do.
        returning r.task_id, exists (select from absurd.%5$I w where w.run_id = r.run_id)
        into v_task, v_waits;
        if found then
            update absurd.%3$I t
            set state = 'completed', completed_payload = p_results[1], last_attempt_run = p_run_ids[1]
            where t.task_id = v_task;
            if v_waits then
                delete from absurd.%5$I w where w.run_id = p_run_ids[1];
            end if;
            done_state := 'completed';
            v_freed := 1;
        else
            select r.state into v_state from absurd.%4$I r where r.run_id = p_run_ids[1];
            done_state := coalesce(v_state, 'missing');
        end if;
        return next;
        v_task := null;
    else
        for v_done in select d.run_id, d.state, d.completed_now from absurd.%2$I(p_run_ids, p_results) d loop
            run_id := v_done.run_id;
            done_state := v_done.state;
            return next;
            if v_done.completed_now then
                v_freed := v_freed + 1;
            end if;
        end loop;
    end if;

    -- Each run completed by this call frees one slot, which the claim below fills; a run id it
    -- did not complete (stale, cancelled, completed before, unknown) frees none, so it claims
    -- nothing either.
    v_qty := least(v_freed, greatest(coalesce(p_qty, 0), 0));
    if v_qty = 0 then
        return;
    end if;
    run_id := null;
    done_state := null;
%7$s
end;
$fn$
$ddl$, 'next_' || v_q, 'done_' || v_q, 't_' || v_q, 'r_' || v_q, 'w_' || v_q, v_decl,
      replace(v_claim, '/* more columns */', ', null::text'));

    -- Every claim and completion rewrites a run row and a task row, and each rewrite leaves a
    -- dead index entry that later claim probes step over until vacuum removes it. Vacuum these
    -- two tables after 2% of their rows changed (the default is 20%), without cost delay.
    execute format('alter table absurd.%I set (autovacuum_vacuum_scale_factor = 0.02, '
                   'autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0)',
                   'r_' || v_q);
    execute format('alter table absurd.%I set (autovacuum_vacuum_scale_factor = 0.02, '
                   'autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0)',
                   't_' || v_q);

    -- The state checks of t_<q> and r_<q> in their cheap form (see the top of migration 0024).
    perform absurd._host_cheap_state_checks(v_q);
end;
$gen$;

-- Partitioned queues use a variant of the generator without its storage-parameter statements
-- (migration 0020): derived again, from the generator above.
select absurd._host_derive_partitioned_fast_paths();

-- Queues that exist already get the new functions and checks, each with the generator of its
-- storage mode. As in 0009-0012, a queue the per-queue functions cannot serve keeps working
-- through the generic bodies (and keeps its checks as they were).
do $$
declare
    v_q    text;
    v_mode text;
begin
    for v_q, v_mode in select q.queue_name, q.storage_mode from absurd.queues q order by q.queue_name loop
        begin
            if v_mode = 'partitioned' then
                perform absurd._host_install_fast_paths_partitioned(v_q);
            else
                perform absurd._host_install_fast_paths(v_q);
            end if;
        exception when others then
            raise notice 'queue %: no per-queue claim (%)', v_q, sqlerrm;
        end;
    end loop;
end;
$$;
