-- absurd-host schema, part 16: what `absurd-host migrate --adopt-seed` keeps of the DSA-110
-- seed's database (its one table, `absurd.tasks`, renamed aside to `absurd_seed.tasks`).
--
--   * absurd.seed_history: the seed's finished tasks (completed, failed, cancelled), copied
--     once, with the seed's own columns, for the API to list (GET /api/absurd/seed/tasks).
--     Read-only: updates, deletes and truncation are refused, so that the record of what ran
--     before the move cannot be changed through absurd-host's schema. Its rows leave only with
--     the schema (drop schema absurd cascade).
--   * absurd.seed_carried: which of the seed's unfinished tasks (pending, claimed, retrying)
--     became which Absurd task, so that a second run carries nothing twice, even after the
--     carried task itself was cleaned up.
--
-- Both stay empty in a database that never held the seed.

create table absurd.seed_history (
    task_id            uuid primary key,
    queue_name         text not null,
    task_name          text not null,
    params             jsonb not null default '{}',
    priority           integer not null default 0,
    timeout_sec        integer,
    status             text not null check (status in ('completed', 'failed', 'cancelled')),
    worker_id          text,
    attempt            integer not null default 0,
    max_retries        integer not null default 3,
    result             jsonb,
    error              text,
    created_at         timestamptz not null,
    claimed_at         timestamptz,
    completed_at       timestamptz,
    wait_time_sec      double precision,
    execution_time_sec double precision,
    copied_at          timestamptz not null default absurd.current_time()
);

-- The listing's order (newest first) and its filters.
create index seed_history_created on absurd.seed_history (created_at desc, task_id desc);
create index seed_history_queue_status on absurd.seed_history (queue_name, status);

create function absurd._host_seed_history_read_only() returns trigger
language plpgsql
as $$
begin
    raise exception 'absurd.seed_history is read-only: it records the seed''s finished tasks as they were adopted';
end;
$$;

create trigger seed_history_read_only
    before update or delete on absurd.seed_history
    for each row execute function absurd._host_seed_history_read_only();

create trigger seed_history_no_truncate
    before truncate on absurd.seed_history
    for each statement execute function absurd._host_seed_history_read_only();

create table absurd.seed_carried (
    seed_task_id  uuid primary key,
    queue_name    text not null,
    task_id       uuid not null,
    seed_status   text not null,
    seed_attempt  integer not null,
    carried_at    timestamptz not null default absurd.current_time()
);
