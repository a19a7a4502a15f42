-- absurd-host schema, part 17: schedules (cron ticks that spawn tasks).
--
-- Why: the DSA-110 pipeline runs some tasks on a clock (its `housekeeping` hourly), and its
-- seed API had `/schedules*`. A schedule is defined in `absurd-host.toml` (`[[schedules]]`,
-- upserted by each worker at start) or through `/api/absurd/schedules`; every worker runs the
-- scheduler loop, and any number of them may share one database.
--
-- Exactly once, across hosts: a tick is spawned in one transaction that first locks the
-- schedule's row where `last_tick` and `revision` still hold what the scheduler read (a
-- compare-and-set: a second host blocks on the lock, then finds the row moved on and does
-- nothing), spawns with the idempotency key `schedule:<name>:<tick, RFC 3339 UTC>` (so even a
-- tick fired again after a reset of `last_tick` finds the task already there), and moves
-- `last_tick` on. The clock is the database's, absurd.current_time(), so `absurd.fake_now`
-- moves schedules too.
--
-- Not an Absurd 0.5.1 object: the SDKs and absurdctl never read it; a schema installed by
-- `absurdctl init` has no schedules (the worker then says so and runs without them).

create table absurd.schedules (
    schedule_name     text primary key,
    -- A five-field cron expression (or @hourly, @daily, ...), checked by absurd-host.
    cron              text not null,
    -- An IANA time zone name (`UTC`, `America/Los_Angeles`); the cron fields are local time there.
    timezone          text not null default 'UTC',
    task_name         text not null,
    queue_name        text not null,
    params            jsonb not null default '{}'::jsonb,
    -- What a scheduler does with ticks it missed (no worker running, the schedule disabled):
    -- `skip` spawns a tick only on time, `one` spawns the latest missed tick, `all` spawns each
    -- (a bounded number per pass).
    catch_up          text not null default 'skip',
    enabled           boolean not null default true,
    -- `config` (a worker's absurd-host.toml) or `api`.
    source            text not null,
    -- Bumped by every change of the definition: a scheduler holding an older one does not fire.
    revision          bigint not null default 1,
    -- Every tick at or before this time has been handled (spawned or skipped). A new schedule
    -- starts at its creation time, so it never fires for the past.
    last_tick         timestamptz not null default absurd.current_time(),
    -- The latest tick that was spawned, the task it spawned and when.
    last_spawned_tick timestamptz,
    last_task_id      uuid,
    last_spawned_at   timestamptz,
    created_at        timestamptz not null default absurd.current_time(),
    updated_at        timestamptz not null default absurd.current_time(),
    constraint schedules_name_length check (length(schedule_name) between 1 and 128),
    constraint schedules_catch_up check (catch_up in ('skip', 'one', 'all')),
    constraint schedules_source check (source in ('config', 'api')),
    constraint schedules_params_object check (jsonb_typeof(params) = 'object')
);

comment on table absurd.schedules is
    'absurd-host schedules: cron ticks that spawn tasks (not part of the Absurd 0.5.1 interface)';
