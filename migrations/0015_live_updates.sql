-- absurd-host schema, part 15: live updates (an absurd-host addition, read by the API's
-- `/api/absurd/ws` and `/api/absurd/stream`; nothing requires it, and upstream Absurd
-- clients keep working unchanged).
--
-- Why in the database: a task changes state in whichever process runs the statement (our
-- worker, the Python absurd-sdk's, `absurdctl`, the API). A trigger on each queue's task table
-- sees every one of them, so the API can tell its subscribers about tasks it never touched.
--
-- Channel: absurd_live
-- Payload: `1 <changes> <queue name>`, where <changes> is a comma-separated list of
--   `<state>:<task_id>` (the task's state after the statement), or `*` when one statement
--   changed more than 128 tasks (the listener then re-reads the queue instead). The queue name
--   comes last because it may hold spaces. At most 128 * 47 + 62 bytes, well under the
--   8000-byte limit of a notification payload.
--
-- Cost, kept off the worker's hot path:
--   * statement-level triggers with transition tables: one call per statement, however many
--     rows it changed (a batched completion is one statement), and one pg_notify per call;
--   * nothing is sent unless an API has live subscribers: it holds a lease in
--     absurd.live_updates (`listening_until`, renewed every 20 s while anyone subscribes), and
--     without one the trigger returns after reading that one-row table. So a database nobody
--     watches pays only for the trigger call, never for NOTIFY (whose commit takes a
--     database-wide lock that serialises every notifying transaction).
--   * Postgres delivers notifications at commit and drops them on rollback, so a subscriber
--     never hears of a change that did not happen.
--
-- Queues get the triggers when their tables are made (ensure_queue_tables, so create_queue and
-- every worker's ensure), queues that exist already get them below. A schema installed by
-- `absurdctl init` has none of this; the API then says so in its log and polls queue
-- statistics instead.

create table absurd.live_updates (
    singleton       boolean primary key default true check (singleton),
    -- Until when some API wants notifications; in the past (or no row) means nobody.
    listening_until timestamptz not null
);

-- Starts or extends the lease; returns the time it now runs until. The API calls it every
-- 20 s with 60 s while it has subscribers, so notifications stop within a minute of the last
-- one leaving, or of the API dying. Several APIs share the one row: the latest end wins.
create function absurd.live_updates_renew(p_seconds integer) returns timestamptz
language sql
as $$
    insert into absurd.live_updates as l (singleton, listening_until)
    values (true, now() + make_interval(secs => least(greatest(coalesce(p_seconds, 0), 0), 3600)))
    on conflict (singleton) do update
        set listening_until = greatest(l.listening_until, excluded.listening_until)
    returning listening_until
$$;

-- The trigger function of every queue's task table; tg_argv[0] is the queue name.
--
-- It runs inside the per-queue claim and completion functions (lease_/next_/done_<queue>),
-- whose settings forbid sequential scans, hash joins and merge joins. So its statements use
-- none of them: the lease is read through its primary key, and the changed rows are found by
-- grouping the old and new transition tables together (an aggregate, linear in the rows),
-- not by joining them. A query costed with a forbidden plan node would also cross the JIT
-- threshold and compile on every call.
create function absurd._host_live_changed() returns trigger
language plpgsql
as $$
declare
    v_until timestamptz;
    v_n     integer;
    v_list  text;
begin
    -- Real time (now(), the transaction's start), not absurd.current_time(): the lease is
    -- about this machine's API, not about a test's fake clock.
    select l.listening_until into v_until from absurd.live_updates l where l.singleton = true;
    if v_until is null or v_until < now() then
        return null;
    end if;
    if tg_op = 'INSERT' then
        select count(*), string_agg(s.x, ',') into v_n, v_list
        from (select n.state || ':' || n.task_id::text as x from live_new n limit 129) s;
    else
        -- Only rows whose state changed: a (task, state) pair found in the new rows and not
        -- in the old ones. Updates that keep the state are no news.
        select count(*), string_agg(s.x, ',') into v_n, v_list
        from (select c.state || ':' || c.task_id::text as x
              from (select n.task_id, n.state, 1 as side from live_new n
                    union all
                    select o.task_id, o.state, 0 as side from live_old o) c
              group by c.task_id, c.state
              having min(c.side) = 1
              limit 129) s;
    end if;
    if v_n = 0 then
        return null;
    end if;
    if v_n > 128 then
        v_list := '*';
    end if;
    perform pg_notify('absurd_live', '1 ' || v_list || ' ' || tg_argv[0]);
    return null;
end;
$$;

-- Adds the two triggers to a queue's task table when it lacks them. Checked first, because
-- CREATE TRIGGER locks the table against writes, and this runs on every ensure of a queue.
create function absurd._host_install_live_triggers(p_queue_name text) returns void
language plpgsql
as $$
declare
    v_q   text := absurd.validate_queue_name(p_queue_name);
    v_t   regclass := to_regclass(format('absurd.%I', 't_' || v_q));
begin
    if v_t is null then
        return;
    end if;
    if not exists (select 1 from pg_trigger g where g.tgrelid = v_t and g.tgname = 'absurd_live_insert') then
        execute format('create trigger absurd_live_insert after insert on %s '
                       'referencing new table as live_new for each statement '
                       'execute function absurd._host_live_changed(%L)', v_t, v_q);
    end if;
    if not exists (select 1 from pg_trigger g where g.tgrelid = v_t and g.tgname = 'absurd_live_update') then
        execute format('create trigger absurd_live_update after update on %s '
                       'referencing old table as live_old new table as live_new for each statement '
                       'execute function absurd._host_live_changed(%L)', v_t, v_q);
    end if;
end;
$$;

-- ensure_queue_tables (migration 0009's wrapper) gains the triggers. Wrapped, not rewritten,
-- under a name no other migration uses.
alter function absurd.ensure_queue_tables(text) rename to _host_ensure_queue_tables_before_live;
create function absurd.ensure_queue_tables(p_queue_name text) returns void
language plpgsql
as $$
begin
    perform absurd._host_ensure_queue_tables_before_live(p_queue_name);
    perform absurd._host_install_live_triggers(p_queue_name);
end;
$$;

-- Queues that exist already. A queue whose tables cannot take the triggers (a legacy
-- over-long name) keeps working, without live updates.
do $$
declare
    v_q text;
begin
    for v_q in select q.queue_name from absurd.queues q order by q.queue_name loop
        begin
            perform absurd._host_install_live_triggers(v_q);
        exception when others then
            raise notice 'queue %: no live updates (%)', v_q, sqlerrm;
        end;
    end loop;
end;
$$;
