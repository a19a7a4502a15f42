-- absurd-host schema, part 26: a completion that claims the run it wakes does not also wake
-- every idle claimer of the queue.
--
-- Why: when a completed task has a waiter in the same queue (a workflow awaiting its node),
-- next_<queue> completes it, the task-done trigger wakes the waiting run, and the claim that
-- follows in the same call takes that run (migration 0025). The wake-up also sent a NOTIFY on
-- absurd_wakeup, though, so every idle worker of the queue (the completing worker's own claim
-- loop among them) claimed at once and found nothing: one empty claim per stage of a workflow
-- chain, about 0.5 ms of database CPU each, on the two cores the chain's own statements need
-- (docs/performance.md, "Workflows").
--
-- What changes:
--   * next_<q> holds the wake-ups its completions send while they run, and sends them once it
--     knows how many runs it will claim: a wake-up for another queue always; one for its own
--     queue only when its completions woke more runs of the queue than it claims. A claim
--     that takes an older ready run instead of the one woken leaves that run pending without
--     a notification; the queue then has a backlog, and the workers busy with it claim again
--     as each of them finishes a run (or the poll interval does).
--   * absurd._host_notify_ready sends at once, as before, unless a hold is open in the
--     transaction; then it adds the queue to the held list. The list lives in a
--     transaction-local setting, so a hold never outlives the transaction that opened it.
--   * Everything else that notifies (spawn_task, emit_event outside next_, fail_run's retries,
--     schedule_run, await_event with a timeout, done_<q> and complete_run) is unchanged.
--
-- How: the generator of the per-queue functions is edited from its own text (as migration 0025
-- did), refusing to run if a spot it edits is not found exactly once; the partitioned variant
-- is derived again and every existing queue gets the new functions.

-- A hold is the transaction-local setting absurd_host.held_wakeups: a JSON array of queue names
-- (one per wake-up held) while it is open, anything else when none is.

-- Adds a wake-up to the open hold.
create function absurd._host_hold_wakeup(p_queue_name text) returns void
language plpgsql
as $$
begin
    perform set_config('absurd_host.held_wakeups',
                       (current_setting('absurd_host.held_wakeups')::jsonb
                        || jsonb_build_array(p_queue_name))::text,
                       true);
end;
$$;

-- Sends a wake-up, or holds it while a hold is open. Every spawn calls it, so it stays a SQL
-- function that Postgres inlines into its callers' statements (a sub-select in it would stop
-- that, and cost each spawn a fresh parse and plan of this body).
create or replace function absurd._host_notify_ready(p_queue_name text) returns void
language sql
as $$
    select case when current_setting('absurd_host.held_wakeups', true) like '[%'
                then absurd._host_hold_wakeup(p_queue_name)
                else pg_notify('absurd_wakeup', p_queue_name) end
$$;

-- Closes the hold and sends what it collected: every other queue once, and p_own_queue when it
-- was woken more than p_claiming times (the runs the caller is about to claim take the rest).
create function absurd._host_send_held_wakeups(p_own_queue text, p_claiming integer) returns void
language plpgsql
as $$
declare
    v_held text := current_setting('absurd_host.held_wakeups', true);
    v_q    text;
    v_n    bigint;
begin
    perform set_config('absurd_host.held_wakeups', 'none', true);
    if v_held is null or v_held not like '[%' then
        return;
    end if;
    for v_q, v_n in
        select q, count(*) from jsonb_array_elements_text(v_held::jsonb) q group by q
    loop
        if v_q <> p_own_queue or v_n > greatest(p_claiming, 0) then
            perform absurd._host_notify_ready(v_q);
        end if;
    end loop;
end;
$$;

-- next_<q> opens and closes the hold with plain assignments (PL/pgSQL evaluates those without
-- starting a query), and calls _host_send_held_wakeups only when something was held: a
-- completion with nothing to wake pays a few microseconds for this, not two function calls.
do $$
declare
    v_src   text := pg_get_functiondef('absurd._host_install_fast_paths(text)'::regprocedure);
    -- In next_<q>'s text: the end of its declarations; the start of the completions; the
    -- slots they free (the claim's size); the end of the generator's format() call for
    -- next_<q>, which gains the queue name as its eighth argument.
    v_decl  text := E'    v_waits    boolean;\nbegin\n';
    v_start text := E'    -- The completions: exactly done_<q>''s, one row each with done_state set.';
    v_qty   text := E'    v_qty := least(v_freed, greatest(coalesce(p_qty, 0), 0));\n';
    v_args  text := E'replace(v_claim, ''/* more columns */'', '', null::text''));';
    v_n     integer;
begin
    foreach v_n in array array[
        (length(v_src) - length(replace(v_src, v_decl, ''))) / length(v_decl),
        (length(v_src) - length(replace(v_src, v_start, ''))) / length(v_start),
        (length(v_src) - length(replace(v_src, v_qty, ''))) / length(v_qty),
        (length(v_src) - length(replace(v_src, v_args, ''))) / length(v_args)]
    loop
        if v_n <> 1 then
            raise exception 'absurd._host_install_fast_paths has changed shape (a spot migration '
                            '0026 edits is found % times, expected once): update migration 0026', v_n;
        end if;
    end loop;
    v_src := replace(v_src, v_decl,
        E'    v_waits    boolean;\n'
        || E'    v_held     text;      -- the wake-ups held (migration 0026)\n'
        || E'begin\n');
    v_src := replace(v_src, v_start,
        E'    -- Wake-ups the completions send are held until the claim''s size is known\n'
        || E'    -- (migration 0026).\n'
        || E'    v_held := set_config(''absurd_host.held_wakeups'', ''[]'', true);\n'
        || v_start);
    v_src := replace(v_src, v_qty, v_qty
        || E'    if current_setting(''absurd_host.held_wakeups'') = ''[]'' then\n'
        || E'        v_held := set_config(''absurd_host.held_wakeups'', ''none'', true);\n'
        || E'    else\n'
        || E'        perform absurd._host_send_held_wakeups(%8$L, v_qty);\n'
        || E'    end if;\n');
    v_src := replace(v_src, v_args,
        E'replace(v_claim, ''/* more columns */'', '', null::text''), v_q);');
    execute v_src;
end;
$$;

select absurd._host_derive_partitioned_fast_paths();

-- Existing queues get the new functions, each with the generator of its storage mode, as in
-- migrations 0024 and 0025.
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
