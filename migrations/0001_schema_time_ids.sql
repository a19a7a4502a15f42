-- absurd-host schema, part 1: the `absurd` schema, the queue registry, the clock, ids and the
-- small pure helpers every other function relies on.
--
-- This implements the Absurd 0.5.1 SQL interface (see shared/spec/absurd-protocol.md) in this
-- project's own SQL. Function names, signatures, parameter names, defaults and result columns are
-- part of the contract with the unmodified Python/TypeScript/Go SDKs and absurdctl, so they must not
-- change; helpers that are ours alone are named `absurd._host_*`.
--
-- Conventions used in every file:
--   * Each migration runs in one transaction and needs no extension (gen_random_uuid() is core).
--   * Per-queue relations are `absurd."<prefix>_<queue>"` with the queue name verbatim, so they are
--     only ever reached through dynamic SQL built with format('%I'); values always travel as
--     `execute ... using` parameters, never spliced into the text.
--   * Every function reads absurd.current_time() once at its start and uses that one reading for all
--     timestamps it writes, so a frozen absurd.fake_now yields exactly predictable values.
--   * PL/pgSQL resolves calls to other functions when they run, not when they are created, so a
--     function may call one defined by a later migration of this set (they are always applied
--     together before anything runs).

create schema if not exists absurd;

-- The database clock, with a per-session override for tests. A blank setting (what
-- `SET absurd.fake_now = DEFAULT` leaves behind) means "no override". Volatile on purpose: the
-- setting must be re-read on every call.
create function absurd.current_time() returns timestamptz
language plpgsql volatile
as $$
declare
    v_fake text := current_setting('absurd.fake_now', true);
begin
    if v_fake is null or btrim(v_fake, E' \t\r\n') = '' then
        return clock_timestamp();
    end if;
    return v_fake::timestamptz;
end;
$$;

-- Queue registry and per-queue retention/partition policy. No constraint on the name itself
-- (validation lives in validate_queue_name) and nothing references this table, so clients can insert
-- a bare queue_name and manage rows by hand.
create table absurd.queues (
    queue_name          text primary key,
    created_at          timestamptz default absurd.current_time(),
    storage_mode        text not null default 'unpartitioned'
                        check (storage_mode in ('unpartitioned', 'partitioned')),
    default_partition   text not null default 'enabled'
                        check (default_partition in ('enabled', 'disabled')),
    partition_lookahead interval not null default '28 days',
    partition_lookback  interval not null default '1 day',
    cleanup_ttl         interval not null default '30 days',
    cleanup_limit       integer not null default 1000 check (cleanup_limit >= 1),
    detach_mode         text not null default 'none' check (detach_mode in ('none', 'empty')),
    detach_min_age      interval not null default '30 days'
);

-- Schema version reported to absurdctl / SDKs. Deliberately a zero-argument `language sql`
-- function so that later migrations (and admins) can swap it with `create or replace`.
create function absurd.get_schema_version() returns text
language sql
as $$ select '0.5.1'::text $$;

-- Queue names end up inside identifiers such as r_<queue>_cei; 57 bytes is what still fits in
-- Postgres' 63-byte identifier limit with the longest prefix/suffix, so longer names are refused
-- here instead of being silently truncated into colliding table names.
create function absurd.validate_queue_name(p_queue_name text) returns text
language plpgsql
as $$
begin
    if p_queue_name is null or p_queue_name = '' then
        raise exception 'Queue name must be provided';
    end if;
    if octet_length(p_queue_name) > 57 then
        raise exception 'Queue name "%" is too long (max 57 bytes).', p_queue_name;
    end if;
    return p_queue_name;
end;
$$;

-- UUIDv7 for task and run ids. Postgres 18 has a native generator; older servers get one built
-- here whose millisecond field comes from absurd.current_time(), so absurd.fake_now also controls
-- the ids (and therefore which weekly bucket a row would fall into). The remaining bits come from
-- gen_random_uuid(), whose RFC-4122 variant bits we keep and whose version nibble we overwrite.
-- The native-function check runs at call time (the branch is only planned when taken), so the same
-- definition works on every supported server version and survives pg_upgrade.
create function absurd.portable_uuidv7() returns uuid
language plpgsql volatile
as $$
declare
    v_ms    bigint;
    v_bytes bytea;
begin
    if to_regprocedure('pg_catalog.uuidv7()') is not null then
        return pg_catalog.uuidv7();
    end if;
    v_ms := floor(extract(epoch from absurd.current_time()) * 1000)::bigint;
    v_bytes := uuid_send(gen_random_uuid());
    v_bytes := overlay(v_bytes placing substring(int8send(v_ms) from 3 for 6) from 1 for 6);
    v_bytes := set_byte(v_bytes, 6, (get_byte(v_bytes, 6) & 15) | 112);   -- version 7
    v_bytes := set_byte(v_bytes, 8, (get_byte(v_bytes, 8) & 63) | 128);   -- RFC-4122 variant
    return encode(v_bytes, 'hex')::uuid;
end;
$$;

-- The instant embedded in a version-7 uuid (NULL for other versions).
create function absurd.uuidv7_timestamp(p_uuid uuid) returns timestamptz
language sql immutable strict
as $$
    select case
        when get_byte(uuid_send(p_uuid), 6) >> 4 = 7 then
            timestamptz 'epoch'
            + ('x' || substr(replace(p_uuid::text, '-', ''), 1, 12))::bit(48)::bigint
              * interval '1 millisecond'
    end
$$;

-- The smallest version-7 uuid of a millisecond: lower bound of a uuid range for a time window.
create function absurd.uuidv7_floor(p_ts timestamptz) returns uuid
language plpgsql immutable strict
as $$
declare
    v_ms numeric := floor(extract(epoch from p_ts) * 1000);
begin
    if v_ms < 0 or v_ms > 281474976710655 then   -- 2^48 - 1
        raise exception 'Timestamp "%" is outside UUIDv7 supported range', p_ts;
    end if;
    return (lpad(to_hex(v_ms::bigint), 12, '0') || '70008000000000000000')::uuid;
end;
$$;

-- Monday 00:00 UTC of the UTC week containing p_ts (independent of the session time zone).
create function absurd.week_bucket_utc(p_ts timestamptz) returns timestamptz
language sql immutable strict
as $$ select date_trunc('week', p_ts at time zone 'UTC') at time zone 'UTC' $$;

-- Partition suffix of a week: last digit of the ISO year + two-digit ISO week of its bucket.
create function absurd.partition_week_tag(p_ts timestamptz) returns text
language sql stable strict
as $$
    select right(to_char(b, 'IYYY'), 1) || to_char(b, 'IW')
    from (select absurd.week_bucket_utc(p_ts) at time zone 'UTC' as b) s
$$;

-- Reads one numeric field of a retry strategy. JSON numbers in double-precision range take the
-- cheap path; anything else (strings, booleans, huge or tiny numbers) is cast inside an exception
-- block, so the subtransaction it costs is only paid for unusual input.
create function absurd._host_strategy_number(p_value jsonb) returns double precision
language plpgsql immutable
as $$
declare
    v_num numeric;
begin
    if p_value is null or jsonb_typeof(p_value) = 'null' then
        return null;
    end if;
    if jsonb_typeof(p_value) = 'number' then
        v_num := p_value::numeric;
        if v_num = 0 or abs(v_num) between 1e-300 and 1e300 then
            return v_num::double precision;
        end if;
    end if;
    begin
        return (p_value #>> '{}')::double precision;
    exception when invalid_text_representation or numeric_value_out_of_range then
        raise exception using errcode = 'AB003',
            message = 'retry_strategy contains an invalid number';
    end;
end;
$$;

-- Delay before the next attempt after attempt p_attempt failed. Also used by spawn_task (attempt
-- 1) purely to validate a strategy before anything is written; all validation errors are AB003.
-- "none" means an immediate retry, not "no retries".
create function absurd.retry_delay_seconds(p_strategy jsonb, p_attempt integer)
returns double precision
language plpgsql
as $$
declare
    v_kind   text;
    v_base   double precision;
    v_factor double precision;
    v_max    double precision;
    v_exp    integer;
    v_log    double precision;
begin
    if p_strategy is null then
        return 0;
    end if;
    if jsonb_typeof(p_strategy) <> 'object' then
        raise exception using errcode = 'AB003', message = 'retry_strategy must be a JSON object';
    end if;

    v_kind := coalesce(p_strategy ->> 'kind', 'none');
    if v_kind not in ('none', 'fixed', 'exponential') then
        raise exception using errcode = 'AB003',
            message = format('Unsupported retry strategy kind "%s"', v_kind);
    end if;
    if v_kind = 'none' then
        return 0;
    end if;

    v_base := coalesce(absurd._host_strategy_number(p_strategy -> 'base_seconds'),
                       case v_kind when 'fixed' then 60 else 30 end);
    if not (v_base between 0 and 86400) then   -- also rejects NaN, which sorts above everything
        raise exception using errcode = 'AB003',
            message = 'retry_strategy.base_seconds must be between 0 and 86400';
    end if;
    if v_kind = 'fixed' then
        return v_base;
    end if;

    v_factor := coalesce(absurd._host_strategy_number(p_strategy -> 'factor'), 2);
    if v_factor < 0 or v_factor = 'NaN'::double precision
       or v_factor in ('Infinity'::double precision, '-Infinity'::double precision) then
        raise exception using errcode = 'AB003',
            message = 'retry_strategy.factor must be a finite non-negative number';
    end if;
    v_max := coalesce(absurd._host_strategy_number(p_strategy -> 'max_seconds'), 86400);
    if not (v_max between 0 and 86400) then
        raise exception using errcode = 'AB003',
            message = 'retry_strategy.max_seconds must be between 0 and 86400';
    end if;
    if v_base = 0 or v_max = 0 then
        return 0;
    end if;

    v_exp := greatest(coalesce(p_attempt, 1) - 1, 0);
    if v_exp = 0 then
        return least(v_base, v_max);
    end if;
    if v_factor = 0 then
        return 0;
    end if;
    -- Decide overflow/underflow in log space instead of trapping the power() error, which would
    -- cost a subtransaction on every call: overflow means the cap, underflow means zero.
    v_log := ln(v_base) + v_exp * ln(v_factor);
    if v_log >= ln(v_max) then
        return v_max;
    end if;
    if v_log < -700 then
        return 0;
    end if;
    return least(v_base * power(v_factor, v_exp), v_max);
end;
$$;
