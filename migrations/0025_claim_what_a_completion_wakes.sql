-- absurd-host schema, part 25: a completion claims the run it wakes.
--
-- Why: a worker completes a run and claims the next with one call of next_<queue> (migration
-- 0012). When the completed task has a waiter (a workflow awaiting its node, a parent in
-- `await-task-result`), the task-done trigger (migrations 0019 and 0023) wakes the waiting run
-- at the end of the completion's UPDATE, inside that same call: the run becomes pending with
-- available_at set to the clock at that moment. The claim that follows in the call compared
-- available_at with the time read when the call began, which is earlier, so it never took the
-- run it had just woken. That run then waited for its NOTIFY to reach a worker and for a claim
-- of its own: a round trip and a wake-up per node of a workflow chain (about 2 ms a stage on an
-- idle host, of 10; docs/performance.md, "Workflows").
--
-- What changes: next_<q> reads the clock again after the completions, before it claims, so the
-- claim sees every run the completions made ready, the woken waiter among them. The claim's
-- order, locks, fences and sweep semantics are unchanged; it only looks at a later instant, as
-- a claim made a moment later would.
--
-- How: the generator of the per-queue functions (migration 0024's
-- absurd._host_install_fast_paths) is re-created from its own text with that one statement
-- added, as migration 0020 derives the partitioned variant from it, rather than restated here
-- whole. The derivation refuses to run if the spot it edits is not found exactly once. Then the
-- partitioned variant is derived again (as 0020 asks of every migration that replaces the
-- generator) and every existing queue gets the new functions.

do $$
declare
    v_src    text := pg_get_functiondef('absurd._host_install_fast_paths(text)'::regprocedure);
    -- In next_<q>'s text, the end of the completions, just before the claim.
    v_needle text := E'    run_id := null;\n    done_state := null;\n';
    v_n      integer;
begin
    v_n := (length(v_src) - length(replace(v_src, v_needle, ''))) / length(v_needle);
    if v_n <> 1 then
        raise exception 'absurd._host_install_fast_paths has changed shape (% places end the '
                        'completions of next_<queue>, expected 1): update migration 0025', v_n;
    end if;
    execute replace(v_src, v_needle, v_needle
        || E'    -- The completions above may have woken runs (the task-done trigger): claim as of\n'
        || E'    -- now, so that they are seen (migration 0025).\n'
        || E'    v_now := absurd.current_time();\n');
end;
$$;

select absurd._host_derive_partitioned_fast_paths();

-- Existing queues get the new functions, each with the generator of its storage mode, as in
-- migration 0024.
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
