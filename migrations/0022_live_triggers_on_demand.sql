-- absurd-host schema, part 22: the live-update triggers of migration 0015 exist only while some
-- API listens.
--
-- Why: a statement-level trigger with transition tables costs every statement on a queue's task
-- table, even when its function returns at once because nobody listens. Postgres captures the
-- transition tables and calls the PL/pgSQL function regardless; measured on the worker's
-- one-at-a-time claim and completion, that was about 25 µs of Postgres CPU per task (a tenth of
-- it), paid by databases no dashboard ever watches. A trigger that does not exist costs nothing.
--
-- So the triggers follow the listeners:
--   * a listener registers under a name of its own (`live_updates_hold`), which installs the
--     triggers on every queue that lacks them and keeps the 0015 lease running;
--   * it unregisters when it stops listening (`live_updates_release`); the last one to leave
--     ends the lease and drops the triggers;
--   * a listener that died without leaving is let go once its lease ran out, by
--     `live_updates_retire`, which `absurd-host maintain`, the maintenance leader and every
--     worker at start call;
--   * a queue created while someone listens gets the triggers with its tables.
--
-- Installing or dropping a trigger locks the task table against writes (CREATE TRIGGER) or
-- everything (DROP TRIGGER) until the transaction ends. On a busy queue that must not become a
-- stall, so each table is tried with a 100 ms lock timeout and skipped when the lock cannot be
-- had: a skipped install is retried by the listener's next renewal (every 20 s), a skipped drop by
-- the next release or retire. Until then the queue is simply not reported live (install) or
-- still pays for the idle trigger (drop); nothing is lost or wrong either way.

-- The listeners, one row each. A row whose `until` passed belongs to a listener that stopped
-- renewing (it died); such rows are deleted by the next hold, release or retire.
create table absurd.live_update_holders (
    holder text primary key check (length(holder) between 1 and 128),
    until  timestamptz not null
);

-- Whether some listener's lease is running now.
create function absurd._host_live_wanted() returns boolean
language sql
stable
as $$
    select exists (
        select 1 from absurd.live_updates l
        where l.singleton = true and l.listening_until >= now()
    )
$$;

-- Applies `p_install` (true: install, false: drop) to the triggers of every queue's task table,
-- each table under a 100 ms lock timeout; returns how many tables could not be changed for
-- lack of the lock (they are left as they were).
create function absurd._host_live_triggers_everywhere(p_install boolean) returns integer
language plpgsql
as $$
declare
    v_q       text;
    v_t       regclass;
    v_skipped integer := 0;
    v_have    integer;
    v_before  text := current_setting('lock_timeout');
begin
    for v_q in select q.queue_name from absurd.queues q order by q.queue_name loop
        v_t := to_regclass(format('absurd.%I', 't_' || v_q));
        if v_t is null then
            continue;
        end if;
        -- Looked up first: the DDL would take its lock even when there is nothing to do.
        select count(*) into v_have from pg_trigger g
         where g.tgrelid = v_t and g.tgname in ('absurd_live_insert', 'absurd_live_update');
        if (p_install and v_have = 2) or (not p_install and v_have = 0) then
            continue;
        end if;
        begin
            perform set_config('lock_timeout', '100ms', true);
            if p_install then
                perform absurd._host_install_live_triggers_now(v_q);
            else
                execute format('drop trigger if exists absurd_live_insert on %s', v_t);
                execute format('drop trigger if exists absurd_live_update on %s', v_t);
            end if;
        exception
            when lock_not_available then
                v_skipped := v_skipped + 1;
            when others then
                -- A legacy queue whose table cannot take the triggers (0015 says the same);
                -- it stays without live updates.
                raise notice 'queue %: live-update triggers unchanged (%)', v_q, sqlerrm;
        end;
    end loop;
    perform set_config('lock_timeout', v_before, true);
    return v_skipped;
end;
$$;

-- Registers (or renews) the listener `p_holder` for `p_seconds` (0 to 3600) and makes sure the
-- triggers exist; returns until when notifications will be sent (the latest of all listeners').
create function absurd.live_updates_hold(p_holder text, p_seconds integer) returns timestamptz
language plpgsql
as $$
declare
    v_until timestamptz := now() + make_interval(secs => least(greatest(coalesce(p_seconds, 0), 0), 3600));
    v_all   timestamptz;
begin
    if p_holder is null or length(p_holder) not between 1 and 128 then
        raise exception 'live-update holder must be 1 to 128 characters, got %', coalesce(length(p_holder)::text, 'NULL')
            using errcode = '22023';
    end if;
    -- The lease row, locked: hold, release and retire of several APIs and workers take turns,
    -- so a release never drops the triggers a concurrent hold has just asked for.
    insert into absurd.live_updates as l (singleton, listening_until) values (true, v_until)
    on conflict (singleton) do update set listening_until = l.listening_until;
    perform 1 from absurd.live_updates l where l.singleton = true for update;

    delete from absurd.live_update_holders h where h.until < now() and h.holder <> p_holder;
    insert into absurd.live_update_holders as h (holder, until) values (p_holder, v_until)
    on conflict (holder) do update set until = greatest(h.until, excluded.until);

    update absurd.live_updates l
       set listening_until = greatest(l.listening_until, v_until)
     where l.singleton = true
    returning l.listening_until into v_all;

    perform absurd._host_live_triggers_everywhere(true);
    return v_all;
end;
$$;

-- Unregisters `p_holder`. When no other listener's lease is running, the lease ends now and the
-- triggers are dropped. Returns true when nobody listens any more.
create function absurd.live_updates_release(p_holder text) returns boolean
language plpgsql
as $$
declare
    v_rest timestamptz;
begin
    perform 1 from absurd.live_updates l where l.singleton = true for update;
    delete from absurd.live_update_holders h where h.holder = p_holder or h.until < now();
    select max(h.until) into v_rest from absurd.live_update_holders h;
    if v_rest is not null then
        -- Someone else still listens: the lease runs until the latest of theirs.
        update absurd.live_updates l set listening_until = v_rest where l.singleton = true;
        return false;
    end if;
    update absurd.live_updates l set listening_until = least(l.listening_until, now() - interval '1 microsecond')
     where l.singleton = true;
    perform absurd._host_live_triggers_everywhere(false);
    return true;
end;
$$;

-- Drops the triggers when nobody's lease is running (a listener died without releasing, or
-- before this migration). Returns how many tables still have them: 0 means none (or someone
-- listens and they are meant to be there, in which case the result is NULL).
create function absurd.live_updates_retire() returns integer
language plpgsql
as $$
begin
    perform 1 from absurd.live_updates l where l.singleton = true for update;
    if absurd._host_live_wanted() then
        return null;
    end if;
    delete from absurd.live_update_holders h where h.until < now();
    return absurd._host_live_triggers_everywhere(false);
end;
$$;

-- The lease of migration 0015, as older absurd-host APIs renew it: now a listener named
-- `(unnamed)`, so that it, too, gets the triggers and is counted by a release.
create or replace function absurd.live_updates_renew(p_seconds integer) returns timestamptz
language sql
as $$
    select absurd.live_updates_hold('(unnamed)', p_seconds)
$$;

-- A queue created (or ensured) while someone listens gets the triggers; otherwise none.
-- Every ensure_queue_tables wrapper (0015's, 0020's for both storage modes) calls
-- _host_install_live_triggers by name, so that name becomes the conditional one, and the
-- unconditional installer of 0015 lives on under another name for the listeners' hold. (The
-- function is renamed, not replaced, so no wrapper needs rewriting.)
alter function absurd._host_install_live_triggers(text) rename to _host_install_live_triggers_now;
create function absurd._host_install_live_triggers(p_queue_name text) returns void
language plpgsql
as $$
begin
    if absurd._host_live_wanted() then
        perform absurd._host_install_live_triggers_now(p_queue_name);
    end if;
end;
$$;

-- The triggers 0015 installed on every queue go, unless someone is listening right now.
select absurd.live_updates_retire();
