-- absurd-host schema, part 27: a task that spawns into its own worker's queue can claim the
-- new run for a free slot of that worker, in the spawn's transaction.
--
-- Why: a workflow spawns a node, then waits for it. The node was claimed by whichever worker's
-- claim loop the spawn's NOTIFY reached first: after the spawn's commit, the notification's
-- trip to a listener, and a claim of its own (one more statement and commit), usually the
-- spawning worker's own. That is about 1 ms of each stage of a chain (docs/performance.md,
-- "Workflows").
--
-- absurd.spawn_child_and_claim(...) does what the host's checkpointed child spawn did in one
-- statement (spawn_child_task, then the spawner's checkpoint holding the new task's id, which
-- renews its lease and is fenced like any checkpoint write), and then, when p_worker_id is
-- given and the queue has its claim function, claims one run of the queue for p_worker_id
-- through lease_<queue>, exactly as that worker's claim loop would: the oldest ready run (the
-- new one unless older runs wait), with the sweeps every claim runs. The spawn's wake-up is held
-- (migration 0026) and sent only when the claim took fewer runs than the spawn and sweeps
-- readied, so idle workers are not woken to find the run already claimed.
--
-- Rows: the first has the spawn's four columns; when the claim took a run, they are followed by
-- the claimed run's columns (those of lease_<queue>), else those are null.

create function absurd.spawn_child_and_claim(
    p_queue_name      text,
    p_task_name       text,
    p_params          jsonb,
    p_options         jsonb,
    p_parent_queue    text,
    p_parent_task_id  uuid,
    p_parent_run_id   uuid,
    p_checkpoint_name text,
    p_extend_claim_by integer,
    p_worker_id       text,
    p_claim_timeout   integer
)
returns table (
    spawned_task_id uuid,
    spawned_run_id  uuid,
    spawned_attempt integer,
    created         boolean,
    run_id          uuid,
    task_id         uuid,
    attempt         integer,
    task_name       text,
    params          jsonb,
    retry_strategy  jsonb,
    max_attempts    integer,
    headers         jsonb,
    wake_event      text,
    event_payload   jsonb,
    checkpoints     jsonb
)
language plpgsql
as $$
#variable_conflict use_column
declare
    v_q     text := absurd.validate_queue_name(p_queue_name);
    v_claim boolean := p_worker_id is not null
        and to_regprocedure(format('absurd.%I(text,integer,integer)', 'lease_' || v_q)) is not null;
    v_s     record;
    v_n     integer := 0;
begin
    if v_claim then
        perform set_config('absurd_host.held_wakeups', '[]', true);
    end if;
    select s.task_id, s.run_id, s.attempt, s.created into v_s
    from absurd.spawn_child_task(p_queue_name, p_task_name, p_params, p_options,
                                 p_parent_queue, p_parent_task_id) s;
    perform absurd.set_task_checkpoint_state(p_parent_queue, p_parent_task_id, p_checkpoint_name,
                                             to_jsonb(v_s.task_id::text), p_parent_run_id,
                                             p_extend_claim_by);
    spawned_task_id := v_s.task_id;
    spawned_run_id := v_s.run_id;
    spawned_attempt := v_s.attempt;
    created := v_s.created;
    if v_claim then
        for run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts, headers,
            wake_event, event_payload, checkpoints in
            execute format('select * from absurd.%I($1, $2, 1)', 'lease_' || v_q)
            using p_worker_id, p_claim_timeout
        loop
            v_n := v_n + 1;
        end loop;
        perform absurd._host_send_held_wakeups(v_q, v_n);
    end if;
    return next;
end;
$$;
