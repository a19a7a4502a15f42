-- absurd-host schema, part 21: the pg_cron helpers of Absurd 0.5.1 (spec §5.14).
--
-- Where the pg_cron extension is installed, enable_cron schedules, per queue or for all of them,
-- the periodic calls of ensure_partitions, cleanup_all_queues and schedule_detach_jobs; the
-- last one plans, per partitioned table, one job that detaches its oldest detach candidate and
-- one that drops it once detached (and then unschedules both). disable_cron removes them, and
-- drop_queue does that for the queue it drops.
--
-- pg_cron is reached only through cron.job (jobid, jobname, schedule, command),
-- cron.schedule(name, schedule, command) and cron.unschedule(jobid), looked up at call time
-- and called through dynamic SQL, so this migration applies (and the functions exist) whether
-- or not pg_cron is installed, and a hand-made `cron` schema with just those works too.
-- Without them the helpers fail with "pg_cron is not available (missing ...)", and a hint:
-- `absurd-host maintain` (or a worker's [maintenance] section) does the same work.

-- Refuses, in the order of the spec, when a piece of pg_cron this call needs is missing.
create function absurd._host_require_cron(p_schedule boolean, p_unschedule boolean) returns void
language plpgsql
as $$
declare
    v_hint constant text := 'Install the pg_cron extension, or run `absurd-host maintain` '
                            '(or give absurd-host workers a [maintenance] section), which creates, '
                            'detaches and drops partitions and cleans up without pg_cron.';
begin
    if to_regclass('cron.job') is null then
        raise exception 'pg_cron is not available (missing cron.job)' using hint = v_hint;
    end if;
    if p_schedule and not exists (select from pg_proc f
                                  where f.pronamespace = to_regnamespace('cron')
                                    and f.proname = 'schedule') then
        raise exception 'pg_cron is not available (missing cron.schedule)' using hint = v_hint;
    end if;
    if p_unschedule and not exists (select from pg_proc f
                                    where f.pronamespace = to_regnamespace('cron')
                                      and f.proname = 'unschedule') then
        raise exception 'pg_cron is not available (missing cron.unschedule)' using hint = v_hint;
    end if;
end;
$$;

-- The suffix of a scope's job names: `all`, or the first 12 hex digits of md5(queue).
create function absurd._host_cron_scope(p_queue_name text) returns text
language sql immutable
as $$ select case when p_queue_name is null then 'all' else left(md5(p_queue_name), 12) end $$;

create function absurd._host_cron_schedule(p_name text, p_schedule text, p_command text)
returns bigint
language plpgsql
as $$
declare
    v_id bigint;
begin
    execute 'select cron.schedule($1::text, $2::text, $3::text)' into v_id
        using p_name, p_schedule, p_command;
    return v_id;
end;
$$;

create function absurd.enable_cron(
    p_queue_name         text default null,
    p_partition_schedule text default '5 * * * *',
    p_cleanup_schedule   text default '17 * * * *',
    p_detach_schedule    text default '29 * * * *'
)
returns table (job_name text, job_id bigint)
language plpgsql
as $$
declare
    v_scope text;
    v_lit   text;
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
        if not exists (select from absurd.queues q where q.queue_name = p_queue_name) then
            raise exception 'Queue "%" does not exist', p_queue_name;
        end if;
    end if;
    if p_partition_schedule is null or btrim(p_partition_schedule) = '' then
        raise exception 'Partition schedule must be provided';
    end if;
    if p_cleanup_schedule is null or btrim(p_cleanup_schedule) = '' then
        raise exception 'Cleanup schedule must be provided';
    end if;
    if p_detach_schedule is null or btrim(p_detach_schedule) = '' then
        raise exception 'Detach schedule must be provided';
    end if;
    perform absurd._host_require_cron(true, true);

    v_scope := absurd._host_cron_scope(p_queue_name);
    v_lit := case when p_queue_name is null then 'null::text' else quote_literal(p_queue_name) end;
    perform absurd._host_unschedule_jobs(array['absurd_partitions_' || v_scope,
                                               'absurd_cleanup_' || v_scope,
                                               'absurd_detach_plan_' || v_scope]);

    job_name := 'absurd_partitions_' || v_scope;
    job_id := absurd._host_cron_schedule(job_name, p_partition_schedule,
                                         format('select absurd.ensure_partitions(%s);', v_lit));
    return next;
    job_name := 'absurd_cleanup_' || v_scope;
    job_id := absurd._host_cron_schedule(job_name, p_cleanup_schedule,
                                         format('select * from absurd.cleanup_all_queues(%s);', v_lit));
    return next;
    job_name := 'absurd_detach_plan_' || v_scope;
    job_id := absurd._host_cron_schedule(job_name, p_detach_schedule,
                                         format('select * from absurd.schedule_detach_jobs(%s);', v_lit));
    return next;
end;
$$;

create function absurd.disable_cron(p_queue_name text default null)
returns table (job_name text, job_id bigint)
language plpgsql
as $$
declare
    v_scope text;
    v_job   record;
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
    end if;
    perform absurd._host_require_cron(false, true);
    v_scope := absurd._host_cron_scope(p_queue_name);
    for v_job in
        execute 'select j.jobname::text as n, j.jobid::bigint as id from cron.job j
                 where j.jobname in ($1, $2, $3)
                    or starts_with(j.jobname, $4) or starts_with(j.jobname, $5)
                 order by j.jobname, j.jobid'
            using 'absurd_partitions_' || v_scope, 'absurd_cleanup_' || v_scope,
                  'absurd_detach_plan_' || v_scope,
                  'absurd_detach_run_' || v_scope || '_', 'absurd_drop_run_' || v_scope || '_'
    loop
        execute 'select cron.unschedule($1::bigint)' using v_job.id;
        job_name := v_job.n;
        job_id := v_job.id;
        return next;
    end loop;
end;
$$;

create function absurd.schedule_detach_jobs(p_queue_name text default null)
returns table (job_name text, job_id bigint, queue_name text, partition_table text, job_kind text)
language plpgsql
as $$
declare
    v_scope   text;
    v_cand    record;
    v_pkey    text;
    v_ckey    text;
    v_detach  text;
    v_drop    text;
    v_busy    boolean;
    v_default boolean;
begin
    if p_queue_name is not null then
        perform absurd.validate_queue_name(p_queue_name);
    end if;
    perform absurd._host_require_cron(true, false);
    v_scope := absurd._host_cron_scope(p_queue_name);

    for v_cand in
        -- Each parent's oldest candidate (by upper bound, then name), parents by name.
        select distinct on (d.parent_table) d.queue_name as q, d.parent_table as parent,
               d.partition_table as part
        from absurd.list_detach_candidates(p_queue_name) d
        join absurd._host_week_children(d.queue_name, left(d.parent_table, 1)) w
          on w.partition_table = d.partition_table
        order by d.parent_table, w.upper_at, d.partition_table
    loop
        v_pkey := left(md5(v_cand.parent), 8);
        v_ckey := left(md5(v_cand.parent || ':' || v_cand.part), 12);
        -- A parent with any detach or drop job already planned (of any scope) waits for it.
        execute 'select exists (select from cron.job j
                                where j.jobname like ''absurd\_detach\_run\_%\_'' || $1 || ''\_%''
                                   or j.jobname like ''absurd\_drop\_run\_%\_'' || $1 || ''\_%'')'
            into v_busy using v_pkey;
        continue when v_busy;

        v_detach := 'absurd_detach_run_' || v_scope || '_' || v_pkey || '_' || v_ckey;
        v_drop := 'absurd_drop_run_' || v_scope || '_' || v_pkey || '_' || v_ckey;
        select exists (select from pg_inherits h join pg_class c on c.oid = h.inhrelid
                       where h.inhparent = to_regclass(format('absurd.%I', v_cand.parent))
                         and pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')
        into v_default;

        queue_name := v_cand.q;
        partition_table := v_cand.part;
        execute 'select exists (select from cron.job j where j.jobname like ''absurd\_detach\_run\_%\_'' || $1)'
            into v_busy using v_ckey;
        if not v_busy then
            job_name := v_detach;
            job_kind := 'detach';
            job_id := absurd._host_cron_schedule(v_detach, '* * * * *',
                format('alter table absurd.%s detach partition absurd.%s', quote_ident(v_cand.parent),
                       quote_ident(v_cand.part))
                || case when v_default then '' else ' concurrently' end);
            return next;
        end if;
        execute 'select exists (select from cron.job j where j.jobname like ''absurd\_drop\_run\_%\_'' || $1)'
            into v_busy using v_ckey;
        if not v_busy then
            job_name := v_drop;
            job_kind := 'drop';
            job_id := absurd._host_cron_schedule(v_drop, '* * * * *',
                format('select absurd.drop_detached_partition(%L, %L);', v_cand.part, v_drop));
            return next;
        end if;
    end loop;
end;
$$;

-- drop_queue (0012's) first removes the queue's jobs when pg_cron is there. A legacy name
-- that fails validation has no jobs (enable_cron validates), so it is dropped as before.
alter function absurd.drop_queue(text) rename to _host_drop_queue_before_cron;
create function absurd.drop_queue(p_queue_name text) returns void
language plpgsql
as $$
begin
    if not exists (select from absurd.queues q where q.queue_name = p_queue_name) then
        return;
    end if;
    if to_regclass('cron.job') is not null
       and exists (select from pg_proc f where f.pronamespace = to_regnamespace('cron')
                   and f.proname = 'unschedule')
       and octet_length(p_queue_name) between 1 and 57 then
        perform absurd.disable_cron(p_queue_name);
    end if;
    perform absurd._host_drop_queue_before_cron(p_queue_name);
end;
$$;
