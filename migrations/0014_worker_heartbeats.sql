-- absurd-host schema, part 14: heartbeats of workers that report themselves.
--
-- Why: the DSA-110 pipeline's Python workers (and any other process) report that they are
-- alive with `POST /api/absurd/workers/{worker_id}/heartbeat?task_id=`, as they did to the
-- seed's API, which kept them in the memory of one API process. absurd-host's own workers need
-- none of this (a live lease on a run already says a worker is alive), but a worker that
-- heartbeats while idle is then seen as idle rather than gone, from any API process.
--
-- absurd.worker_heartbeats holds one row per worker id: when it was first and last heard
-- from, the task it reported last, how many distinct tasks it has reported and how many
-- heartbeats. Everything a client can make it store is bounded:
--   * a worker id is 1 to 255 bytes (the check below; the API refuses longer ones first);
--   * absurd.record_worker_heartbeat(worker_id, task_id, max_workers, retention_seconds)
--     adds a new worker only while fewer than max_workers rows are left after deleting those
--     not heard from in retention_seconds; otherwise it records nothing and returns
--     recorded = false with the number of rows, so that the caller can refuse the heartbeat
--     naming the limit. A worker already known is always updated.
-- New workers are added under a transaction-level advisory lock, so that concurrent
-- registrations cannot pass the limit together. Times are absurd.current_time(), so tests can
-- move the clock with absurd.fake_now.

create table if not exists absurd.worker_heartbeats (
    worker_id       text primary key
                    check (octet_length(worker_id) between 1 and 255),
    first_seen      timestamptz not null,
    last_seen       timestamptz not null,
    current_task_id uuid,
    task_count      bigint not null default 0,
    heartbeats      bigint not null default 1
);

create index if not exists worker_heartbeats_last_seen on absurd.worker_heartbeats (last_seen);

create function absurd.record_worker_heartbeat(
    p_worker_id         text,
    p_task_id           uuid,
    p_max_workers       integer,
    p_retention_seconds integer
)
returns table (recorded boolean, workers bigint)
language plpgsql
as $$
declare
    v_now timestamptz := absurd.current_time();
    v_count bigint;
begin
    update absurd.worker_heartbeats h
       set last_seen = v_now,
           task_count = h.task_count
               + case when p_task_id is not null and p_task_id is distinct from h.current_task_id
                      then 1 else 0 end,
           current_task_id = p_task_id,
           heartbeats = h.heartbeats + 1
     where h.worker_id = p_worker_id;
    if found then
        return query select true, null::bigint;
        return;
    end if;

    perform pg_advisory_xact_lock(hashtext('absurd.worker_heartbeats'));
    delete from absurd.worker_heartbeats
     where last_seen < v_now - make_interval(secs => p_retention_seconds);
    select count(*) into v_count from absurd.worker_heartbeats;
    if v_count >= p_max_workers then
        return query select false, v_count;
        return;
    end if;
    insert into absurd.worker_heartbeats as h
           (worker_id, first_seen, last_seen, current_task_id, task_count, heartbeats)
    values (p_worker_id, v_now, v_now, p_task_id, case when p_task_id is null then 0 else 1 end, 1)
    on conflict (worker_id) do update
       set last_seen = v_now,
           task_count = h.task_count
               + case when p_task_id is not null and p_task_id is distinct from h.current_task_id
                      then 1 else 0 end,
           current_task_id = p_task_id,
           heartbeats = h.heartbeats + 1;
    return query select true, v_count + 1;
end;
$$;
