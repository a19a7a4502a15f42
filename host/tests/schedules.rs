//! Schedules (issue #17, part 5): cron ticks spawned exactly once, by the database clock.
//!
//! * the catch-up policies (`skip`, `one`, `all`, and the per-pass bound of `all`) with
//!   `absurd.fake_now` moving the database clock;
//! * exactly once: two schedulers firing from the same snapshot (one wins), several scheduler
//!   loops racing over thirty minutes of ticks, and two `absurd-host worker` processes sharing
//!   one database;
//! * the API's CRUD, and errors naming the bad cron, time zone or catch-up value (API, file).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use absurd_client::schedules::{ScheduleDefinition, ScheduleSource, TickSpawn};
use absurd_client::{Client, TaskFilter};
use absurd_engine::metrics::Counters;
use absurd_engine::schedule::{Scheduler, SchedulerSettings, MAX_SCHEDULES};
use absurd_host::api::ApiSettings;
use axum::body::Body;
use chrono::{DateTime, Utc};
use common::{temp_file, wait_for, TestDb};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;

const T0: &str = "2030-01-01T00:00:30Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A pool of one connection, whose session clock the test sets (`absurd.fake_now`).
async fn clocked_pool(db: &TestDb, at: &str) -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    set_clock(&pool, at).await;
    pool
}

async fn set_clock(pool: &PgPool, at: &str) {
    sqlx::query("select set_config('absurd.fake_now', $1, false)")
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    let now: DateTime<Utc> = sqlx::query_scalar("select absurd.current_time()")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(now, t(at), "absurd.current_time() follows absurd.fake_now");
}

fn definition(name: &str, cron: &str, catch_up: &str, queue: &str) -> ScheduleDefinition {
    ScheduleDefinition {
        schedule_name: name.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        task_name: "echo".into(),
        queue_name: queue.into(),
        params: json!({"from": name}),
        catch_up: catch_up.into(),
        enabled: true,
    }
}

fn settings() -> SchedulerSettings {
    SchedulerSettings::new(Duration::from_millis(10), 3)
}

/// `(idempotency key, task name)` of every task in the queue.
async fn spawned_keys(client: &Client, queue: &str) -> Vec<String> {
    let page = client
        .list_tasks(&TaskFilter {
            queue: Some(queue.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut keys: Vec<String> = page
        .tasks
        .iter()
        .map(|t| {
            t.idempotency_key
                .clone()
                .expect("a scheduled task has a key")
        })
        .collect();
    keys.sort();
    keys
}

fn keys(name: &str, ticks: &[&str]) -> Vec<String> {
    ticks
        .iter()
        .map(|tick| format!("schedule:{name}:{tick}"))
        .collect()
}

// ---- catch-up policies, by the database clock ------------------------------------------------

#[tokio::test]
async fn catch_up_policies_follow_the_database_clock() {
    let db = TestDb::migrated().await;
    let pool = clocked_pool(&db, T0).await;
    let client = Client::new(pool.clone());
    client.create_queue("sched").await.unwrap();
    for policy in ["skip", "one", "all"] {
        let def = definition(&format!("hourly-{policy}"), "0 * * * *", policy, "sched");
        let row = client
            .create_schedule(&def, ScheduleSource::Api, MAX_SCHEDULES)
            .await
            .unwrap()
            .expect("created");
        assert_eq!(
            row.last_tick,
            t(T0),
            "a new schedule starts at its creation"
        );
    }
    let mut scheduler = Scheduler::default();
    // Nothing is due at creation.
    let r = scheduler.pass(&client, &settings()).await.unwrap();
    assert!(r.fired.is_empty(), "{r:?}");

    // 03:30: the ticks of 01:00, 02:00 and 03:00 were missed (no scheduler ran).
    set_clock(&pool, "2030-01-01T03:30:00Z").await;
    let r = scheduler.pass(&client, &settings()).await.unwrap();
    assert!(r.fired.iter().all(|f| f.3), "all created: {r:?}");
    assert_eq!(spawned_keys(&client, "sched").await, {
        let mut k = keys(
            "hourly-all",
            &[
                "2030-01-01T01:00:00Z",
                "2030-01-01T02:00:00Z",
                "2030-01-01T03:00:00Z",
            ],
        );
        k.extend(keys("hourly-one", &["2030-01-01T03:00:00Z"]));
        k
    });
    for policy in ["skip", "one", "all"] {
        let row = client
            .get_schedule(&format!("hourly-{policy}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.last_tick, t("2030-01-01T03:00:00Z"), "{policy}");
    }
    // A second pass at the same time does nothing more.
    assert!(scheduler
        .pass(&client, &settings())
        .await
        .unwrap()
        .fired
        .is_empty());

    // 04:00:20, on time for every policy (within the 60 s grace of `skip`).
    set_clock(&pool, "2030-01-01T04:00:20Z").await;
    let r = scheduler.pass(&client, &settings()).await.unwrap();
    let mut fired: Vec<(String, DateTime<Utc>)> =
        r.fired.iter().map(|f| (f.0.clone(), f.1)).collect();
    fired.sort();
    let tick = t("2030-01-01T04:00:00Z");
    assert_eq!(
        fired,
        vec![
            ("hourly-all".into(), tick),
            ("hourly-one".into(), tick),
            ("hourly-skip".into(), tick)
        ]
    );
    // The task is what the schedule says, with the schedule in its headers.
    let skip = client.get_schedule("hourly-skip").await.unwrap().unwrap();
    assert_eq!(skip.last_spawned_tick, Some(tick));
    let task = client
        .get_task("sched", skip.last_task_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.summary.task_name, "echo");
    assert_eq!(task.params, json!({"from": "hourly-skip"}));
    assert_eq!(
        task.headers,
        Some(json!({"schedule": "hourly-skip", "scheduled_for": "2030-01-01T04:00:00Z"}))
    );
    assert_eq!(task.summary.max_attempts, Some(3));
}

#[tokio::test]
async fn catch_up_all_is_bounded_per_pass() {
    let db = TestDb::migrated().await;
    let pool = clocked_pool(&db, T0).await;
    let client = Client::new(pool.clone());
    client.create_queue("sched").await.unwrap();
    client
        .create_schedule(
            &definition("minutely", "* * * * *", "all", "sched"),
            ScheduleSource::Api,
            MAX_SCHEDULES,
        )
        .await
        .unwrap()
        .unwrap();
    // Five ticks missed (00:01 … 00:05); at most two per pass.
    set_clock(&pool, "2030-01-01T00:05:10Z").await;
    let mut s = settings();
    s.max_catch_up_ticks = 2;
    let mut scheduler = Scheduler::default();
    let mut per_pass = vec![];
    loop {
        let r = scheduler.pass(&client, &s).await.unwrap();
        per_pass.push(r.fired.len());
        if !r.more {
            break;
        }
        assert!(per_pass.len() < 10, "{per_pass:?}");
    }
    assert_eq!(per_pass, vec![2, 2, 1]);
    let expected: Vec<String> = (1..=5)
        .map(|m| format!("schedule:minutely:2030-01-01T00:0{m}:00Z"))
        .collect();
    assert_eq!(spawned_keys(&client, "sched").await, expected);
}

#[tokio::test]
async fn ticks_follow_the_schedules_time_zone() {
    let db = TestDb::migrated().await;
    let pool = clocked_pool(&db, "2030-01-01T16:59:00Z").await;
    let client = Client::new(pool.clone());
    client.create_queue("sched").await.unwrap();
    let mut def = definition("la-morning", "0 9 * * *", "skip", "sched");
    def.timezone = "America/Los_Angeles".into();
    client
        .create_schedule(&def, ScheduleSource::Api, MAX_SCHEDULES)
        .await
        .unwrap()
        .unwrap();
    let mut scheduler = Scheduler::default();
    set_clock(&pool, "2030-01-01T17:00:05Z").await; // 09:00:05 in Los Angeles (PST)
    let r = scheduler.pass(&client, &settings()).await.unwrap();
    assert_eq!(r.fired.len(), 1, "{r:?}");
    assert_eq!(r.fired[0].1, t("2030-01-01T17:00:00Z"));
}

// ---- exactly once ----------------------------------------------------------------------------

/// Two schedulers that read the same row fire it at once: one spawns, the other finds the row
/// moved on. A tick fired again (its `last_tick` set back by hand) finds its task by the
/// idempotency key instead of spawning another.
#[tokio::test]
async fn one_of_two_schedulers_with_the_same_snapshot_fires() {
    let db = TestDb::migrated().await;
    let a = Client::new(clocked_pool(&db, T0).await);
    let b = Client::new(clocked_pool(&db, T0).await);
    a.create_queue("sched").await.unwrap();
    let row = a
        .create_schedule(
            &definition("hourly", "0 * * * *", "all", "sched"),
            ScheduleSource::Api,
            MAX_SCHEDULES,
        )
        .await
        .unwrap()
        .unwrap();
    let tick = t("2030-01-01T01:00:00Z");
    let ticks = vec![TickSpawn {
        tick,
        options: Default::default(),
    }];
    let (ra, rb) = tokio::join!(
        a.fire_schedule("hourly", row.last_tick, row.revision, &ticks, tick),
        b.fire_schedule("hourly", row.last_tick, row.revision, &ticks, tick),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.is_some() != rb.is_some(),
        "exactly one fires: {ra:?} {rb:?}"
    );
    assert_eq!(
        spawned_keys(&a, "sched").await,
        keys("hourly", &["2030-01-01T01:00:00Z"])
    );
    // A stale revision (the definition changed meanwhile) fires nothing.
    let now = a.get_schedule("hourly").await.unwrap().unwrap();
    assert_eq!(now.last_tick, tick);
    assert!(a
        .fire_schedule("hourly", now.last_tick, now.revision + 1, &ticks, tick)
        .await
        .unwrap()
        .is_none());
    // The same tick again (last_tick set back): the idempotency key returns the existing task.
    sqlx::query("update absurd.schedules set last_tick = $1 where schedule_name = 'hourly'")
        .bind(row.last_tick)
        .execute(&db.pool)
        .await
        .unwrap();
    let again = a
        .fire_schedule("hourly", row.last_tick, now.revision, &ticks, tick)
        .await
        .unwrap()
        .expect("fires");
    assert!(!again[0].spawned.created, "{again:?}");
    assert_eq!(again[0].spawned.task_id, now.last_task_id.unwrap());
    assert_eq!(spawned_keys(&a, "sched").await.len(), 1);
}

/// Four scheduler loops, each on its own connection and clock, race over thirty minutes of
/// minute ticks while the clock moves a minute at a time: every tick is spawned exactly once.
#[tokio::test]
async fn racing_schedulers_spawn_every_tick_exactly_once() {
    let db = TestDb::migrated().await;
    let setup = Client::new(clocked_pool(&db, T0).await);
    setup.create_queue("sched").await.unwrap();
    for (name, policy) in [("every-minute-all", "all"), ("every-minute-skip", "skip")] {
        setup
            .create_schedule(
                &definition(name, "* * * * *", policy, "sched"),
                ScheduleSource::Api,
                MAX_SCHEDULES,
            )
            .await
            .unwrap()
            .unwrap();
    }
    let mut pools = vec![];
    for _ in 0..4 {
        pools.push(clocked_pool(&db, T0).await);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let mut loops = vec![];
    for pool in &pools {
        let client = Client::new(pool.clone());
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut scheduler = Scheduler::default();
            let (mut fired, mut lost) = (vec![], 0);
            while !stop.is_cancelled() {
                let r = scheduler.pass(&client, &settings()).await.unwrap();
                fired.extend(r.fired);
                lost += r.lost_races;
                tokio::task::yield_now().await;
            }
            (fired, lost)
        }));
    }
    let base = t("2030-01-01T00:00:00Z");
    for minute in 1..=30 {
        let at =
            (base + chrono::Duration::minutes(minute) + chrono::Duration::seconds(5)).to_rfc3339();
        for pool in &pools {
            set_clock(pool, &at).await;
        }
    }
    let last = t("2030-01-01T00:30:00Z");
    wait_for(
        "both schedules to reach 00:30",
        Duration::from_secs(30),
        || async {
            let rows = setup.list_schedules(10).await.unwrap();
            rows.iter().all(|r| r.last_tick == last).then_some(())
        },
    )
    .await;
    stop.cancel();
    let mut all_fired = vec![];
    let mut lost = 0;
    for l in loops {
        let (f, n) = l.await.unwrap();
        all_fired.extend(f);
        lost += n;
    }
    // `all`: every minute once; `skip`: every minute it was on time for, once.
    let all_ticks: Vec<_> = all_fired
        .iter()
        .filter(|f| f.0 == "every-minute-all")
        .map(|f| f.1)
        .collect();
    let distinct: BTreeSet<_> = all_ticks.iter().collect();
    assert_eq!(all_ticks.len(), 30, "{all_ticks:?}");
    assert_eq!(distinct.len(), 30);
    assert!(all_fired.iter().all(|f| f.3), "no tick fired twice");
    let keys = spawned_keys(&setup, "sched").await;
    let distinct_keys: BTreeSet<_> = keys.iter().collect();
    assert_eq!(keys.len(), distinct_keys.len(), "{keys:?}");
    assert_eq!(keys.len(), all_fired.len());
    eprintln!(
        "{} ticks fired, {lost} races lost to another scheduler",
        all_fired.len()
    );
}

/// Two `absurd-host worker` processes with the same `[[schedules]]`, on one database whose
/// clock is moved forward ten minutes: each tick is spawned once, and run.
#[tokio::test]
async fn two_worker_processes_spawn_each_tick_once() {
    let db = TestDb::migrated().await;
    // Every new connection of the workers sees this clock.
    let alter = |at: &str| {
        format!(
            "alter database \"{}\" set absurd.fake_now = '{at}'",
            db.name
        )
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(alter(T0)))
        .execute(&db.pool)
        .await
        .unwrap();
    let config = temp_file(
        "sched.toml",
        "[tasks.echo]\nkind = \"builtin\"\n\n\
         [[schedules]]\nname = \"minutely\"\ncron = \"* * * * *\"\ntask_name = \"echo\"\n\
         queue_name = \"sched\"\ncatch_up = \"all\"\nparams = { hello = \"world\" }\n",
    );
    let w1 = common::WorkerProc::start(
        &db.url,
        &config,
        &["--queue", "sched", "--poll-interval", "0.1"],
    );
    let w2 = common::WorkerProc::start(
        &db.url,
        &config,
        &["--queue", "sched", "--poll-interval", "0.1"],
    );
    let client = Client::new(db.pool.clone());
    wait_for(
        "the workers to store the schedule",
        Duration::from_secs(60),
        || async {
            let ok = client.schedules_supported().await.unwrap()
                && client.get_schedule("minutely").await.unwrap().is_some();
            (ok && w1.log_text().contains("scheduler started")
                && w2.log_text().contains("scheduler started"))
            .then_some(())
        },
    )
    .await;
    let row = client.get_schedule("minutely").await.unwrap().unwrap();
    assert_eq!(row.source, "config");
    assert_eq!(row.last_tick, t(T0));
    // Move the clock: new connections see it; end the workers' current ones so they reconnect.
    sqlx::raw_sql(sqlx::AssertSqlSafe(alter("2030-01-01T00:10:30Z")))
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = $1 and pid <> pg_backend_pid()",
    )
    .bind(&db.name)
    .execute(&db.pool)
    .await
    .unwrap();
    let client = Client::new(clocked_pool(&db, "2030-01-01T00:10:30Z").await);
    let last = t("2030-01-01T00:10:00Z");
    wait_for(
        "the ten ticks to be spawned and run",
        Duration::from_secs(60),
        || async {
            let row = client.get_schedule("minutely").await.ok()??;
            let page = client
                .list_tasks(&TaskFilter {
                    queue: Some("sched".into()),
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .ok()?;
            (row.last_tick == last
                && page
                    .tasks
                    .iter()
                    .all(|t| t.state == absurd_client::State::Completed))
            .then_some(())
        },
    )
    .await;
    let expected: Vec<String> = (1..=10)
        .map(|m| format!("schedule:minutely:2030-01-01T00:{m:02}:00Z"))
        .collect();
    assert_eq!(spawned_keys(&client, "sched").await, expected);
    let logs = format!("{}{}", w1.log_text(), w2.log_text());
    assert_eq!(
        logs.matches("schedule tick spawned").count(),
        10,
        "one log line per tick spawned, over both workers:\n{logs}"
    );
}

// ---- bad values in the file ------------------------------------------------------------------

#[test]
fn bad_schedules_in_the_file_are_named() {
    let cases = [
        ("cron = \"every hour\"", "\"every hour\""),
        (
            "cron = \"0 * * * *\"\ntimezone = \"Mars/Olympus\"",
            "\"Mars/Olympus\"",
        ),
        ("cron = \"0 * * * *\"\ncatch_up = \"some\"", "\"some\""),
    ];
    for (fields, needle) in cases {
        let config = temp_file(
            "bad.toml",
            &format!("[[schedules]]\nname = \"bad\"\ntask_name = \"echo\"\n{fields}\n"),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .args([
                "worker",
                "--database-url",
                "postgres://nobody@127.0.0.1:1/none",
                "--config",
            ])
            .arg(&config)
            .env_remove("ABSURD_QUEUE_NAME")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{fields}: {stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("[[schedules]] #1"),
            "{fields}: {stderr}"
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .args(["check", "--no-database", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{fields}: {stdout}");
        assert!(stdout.contains(needle), "{fields}: {stdout}");
    }
}

// ---- the API ---------------------------------------------------------------------------------

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", absurd_host::api::DEFAULT_LISTEN);
    let body = match body {
        Some(b) => {
            req = req.header("Content-Type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_api_creates_lists_replaces_and_deletes_schedules() {
    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue("sched").await.unwrap();
    let settings = ApiSettings::default();
    let pool = absurd_host::api::lazy_pool(&db.url, settings.statement_timeout).unwrap();
    let api = absurd_host::api::router(Client::new(pool), settings, Counters::default());
    let base = json!({
        "name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
        "task_name": "housekeeping", "queue_name": "sched", "params": {"inputs": {"a": 1}},
        "catch_up": "one"
    });
    let (status, v) = call(&api, "POST", "/api/absurd/schedules", Some(base.clone())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], "nightly");
    assert_eq!(v["source"], "api");
    assert_eq!(v["catch_up"], "one");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["revision"], 1);
    assert_eq!(v["last_run_at"], Value::Null);
    // The next run is 02:30 in Berlin.
    let next: DateTime<Utc> = v["next_run_at"].as_str().unwrap().parse().unwrap();
    let berlin = absurd_engine::schedule::parse_timezone("Europe/Berlin").unwrap();
    let local = next.with_timezone(&berlin);
    assert_eq!(local.format("%H:%M").to_string(), "02:30", "{v}");

    let (status, v) = call(&api, "POST", "/api/absurd/schedules", Some(base.clone())).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("already exists"));

    // Bad values: 400 naming the value.
    for (field, value, needle) in [
        ("cron", json!("every hour"), "\"every hour\""),
        ("cron", json!("5/10 * * * *"), "\"5/10 * * * *\""),
        ("timezone", json!("Mars/Olympus"), "\"Mars/Olympus\""),
        ("catch_up", json!("some"), "some"),
        ("name", json!("has space"), "\"has space\""),
    ] {
        let mut body = base.clone();
        body["name"] = json!("other");
        body[field] = value;
        let (status, v) = call(&api, "POST", "/api/absurd/schedules", Some(body)).await;
        assert_eq!(status, 400, "{field}: {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{field}: {detail}");
    }
    let mut body = base.clone();
    body["name"] = json!("other");
    body["queue_name"] = json!("nowhere");
    let (status, _) = call(&api, "POST", "/api/absurd/schedules", Some(body)).await;
    assert_eq!(status, 404);
    // No date matches: kept, with a warning, and no next run.
    let mut body = base.clone();
    body["name"] = json!("never");
    body["cron"] = json!("0 0 31 2 *");
    let (status, v) = call(&api, "POST", "/api/absurd/schedules", Some(body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["next_run_at"], Value::Null);
    assert!(
        v["warnings"][0].as_str().unwrap().contains("never fires"),
        "{v}"
    );
    let (status, _) = call(&api, "DELETE", "/api/absurd/schedules/never", None).await;
    assert_eq!(status, 200);

    let (status, v) = call(&api, "GET", "/api/absurd/schedules", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["total"], 1);
    assert_eq!(v["schedules"][0]["name"], "nightly");
    let (status, v) = call(&api, "GET", "/api/absurd/schedules/nightly", None).await;
    assert_eq!((status, v["cron"].clone()), (200, json!("30 2 * * *")));
    let (status, _) = call(&api, "GET", "/api/absurd/schedules/missing", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&api, "GET", "/api/absurd/schedules/bad%20name", None).await;
    assert_eq!(status, 400);

    // Replace: a new definition, revision 2; disabled has no next run.
    let (status, v) = call(
        &api,
        "PUT",
        "/api/absurd/schedules/nightly",
        Some(json!({"cron": "@hourly", "task_name": "housekeeping", "queue_name": "sched", "enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["cron"], "@hourly");
    assert_eq!(v["timezone"], "UTC");
    assert_eq!(v["revision"], 2);
    assert_eq!(v["next_run_at"], Value::Null);
    let (status, v) = call(
        &api,
        "PUT",
        "/api/absurd/schedules/nightly",
        Some(json!({"cron": "61 * * * *", "task_name": "housekeeping", "queue_name": "sched"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("61"));

    // A schedule of a worker's file is edited in the file.
    let mut file_def = definition("from-file", "@daily", "skip", "sched");
    file_def.task_name = "housekeeping".into();
    client
        .upsert_config_schedule(&file_def, MAX_SCHEDULES)
        .await
        .unwrap();
    let (status, v) = call(
        &api,
        "PUT",
        "/api/absurd/schedules/from-file",
        Some(json!({"cron": "@hourly", "task_name": "x", "queue_name": "sched"})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("absurd-host.toml"));

    let (status, v) = call(&api, "DELETE", "/api/absurd/schedules/nightly", None).await;
    assert_eq!(
        (status, v),
        (200, json!({"name": "nightly", "deleted": true}))
    );
    let (status, _) = call(&api, "GET", "/api/absurd/schedules/nightly", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&api, "DELETE", "/api/absurd/schedules/nightly", None).await;
    assert_eq!(status, 404);
}

/// The configuration file wins over a same-named schedule made through the API, and a
/// restart (the same definition again) changes nothing.
#[tokio::test]
async fn the_file_takes_over_a_schedule_of_the_same_name() {
    use absurd_client::schedules::ConfigUpsert;
    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    let api_def = definition("shared", "@daily", "skip", "q");
    client
        .create_schedule(&api_def, ScheduleSource::Api, MAX_SCHEDULES)
        .await
        .unwrap()
        .unwrap();
    let file_def = definition("shared", "@hourly", "one", "q");
    assert_eq!(
        client
            .upsert_config_schedule(&file_def, MAX_SCHEDULES)
            .await
            .unwrap(),
        Some(ConfigUpsert::TookOverApi)
    );
    let row = client.get_schedule("shared").await.unwrap().unwrap();
    assert_eq!(
        (row.source.as_str(), row.cron.as_str(), row.revision),
        ("config", "@hourly", 2)
    );
    assert_eq!(
        client
            .upsert_config_schedule(&file_def, MAX_SCHEDULES)
            .await
            .unwrap(),
        Some(ConfigUpsert::Unchanged)
    );
    assert_eq!(
        client
            .get_schedule("shared")
            .await
            .unwrap()
            .unwrap()
            .revision,
        2
    );
}

/// A schema installed by `absurdctl init` has no schedules table: a worker whose file has
/// `[[schedules]]` refuses to start and says why; the API answers 503 for schedules.
#[tokio::test]
async fn a_schema_without_the_schedules_table_is_told_apart() {
    let db = TestDb::upstream().await;
    let config = temp_file(
        "sched.toml",
        "[tasks.echo]\nkind = \"builtin\"\n\n\
         [[schedules]]\nname = \"hourly\"\ncron = \"@hourly\"\ntask_name = \"echo\"\n",
    );
    let mut w = common::WorkerProc::start(&db.url, &config, &["--queue", "q"]);
    let status = w
        .wait_exit(Duration::from_secs(60))
        .expect("the worker exits");
    assert!(!status.success());
    assert!(
        w.log_text().contains("no schedules table"),
        "{}",
        w.log_text()
    );
    let settings = ApiSettings::default();
    let pool = absurd_host::api::lazy_pool(&db.url, settings.statement_timeout).unwrap();
    let api = absurd_host::api::router(Client::new(pool), settings, Counters::default());
    let (status, v) = call(&api, "GET", "/api/absurd/schedules", None).await;
    assert_eq!(status, 503, "{v}");
}

/// At most 1000 schedules: the API answers 409 naming the limit, and so does a worker's file.
#[tokio::test]
async fn the_number_of_schedules_is_bounded() {
    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue("sched").await.unwrap();
    sqlx::query(
        "insert into absurd.schedules (schedule_name, cron, task_name, queue_name, source) \
         select 's' || i, '@yearly', 'echo', 'sched', 'api' from generate_series(1, $1) i",
    )
    .bind(MAX_SCHEDULES)
    .execute(&db.pool)
    .await
    .unwrap();
    let settings = ApiSettings::default();
    let pool = absurd_host::api::lazy_pool(&db.url, settings.statement_timeout).unwrap();
    let api = absurd_host::api::router(Client::new(pool), settings, Counters::default());
    let body =
        json!({"name": "one-more", "cron": "@hourly", "task_name": "echo", "queue_name": "sched"});
    let (status, v) = call(&api, "POST", "/api/absurd/schedules", Some(body)).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("1000"), "{v}");
    let e = absurd_engine::schedule::install_config(
        &client,
        &absurd_engine::schedule::from_config(
            &[toml::from_str::<absurd_engine::schedule::ScheduleConfig>(
                "name = \"from-file\"\ncron = \"@hourly\"\ntask_name = \"echo\"\n",
            )
            .unwrap()],
            "sched",
        )
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("1000"), "{e}");
    // A pass reads at most the limit, and the list answers them all.
    let (status, v) = call(&api, "GET", "/api/absurd/schedules", None).await;
    assert_eq!((status, v["total"].clone()), (200, json!(1000)));
}
