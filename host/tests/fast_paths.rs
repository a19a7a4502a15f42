//! The per-queue claim and completion (`absurd.lease_<queue>` and `absurd.done_<queue>`,
//! migrations 0009-0011) against the 0.5.1 interface functions they stand in
//! for: same runs, same leases, same task states, and the checkpoints a replay needs; the
//! complete-and-claim `absurd.next_<queue>` and the single-run claim (migration 0012); and
//! failing in one call, `absurd.fail_run_outcome` (migration 0013); the single-run claim
//! without a sort and the cheap state checks (migration 0024); a completion claiming the run
//! it wakes (migration 0025), and sending no wake-up for it (migration 0026); a spawn claiming
//! for a free slot of its worker (migration 0027); each queue's own checkpoint and event
//! functions (migration 0028), and spawn (migration 0029); the trigger that runs for the tasks
//! that end (migration 0030).

mod common;

use std::time::Duration;

use absurd_client::{Client, SpawnOptions, State};
use serde_json::json;

use common::{no_backoff, setup, TestDb};

const Q: &str = "fast";

/// Run ids in order, to compare the runs of a batch claim (whose rows come in run id order)
/// with the runs spawned.
fn sorted(ids: impl IntoIterator<Item = uuid::Uuid>) -> Vec<uuid::Uuid> {
    let mut v: Vec<_> = ids.into_iter().collect();
    v.sort();
    v
}

async fn fake_now(client: &Client, secs_from_now: i64) -> String {
    let ts: String = sqlx::query_scalar("select (now() + make_interval(secs => $1))::text")
        .bind(secs_from_now as f64)
        .fetch_one(client.pool())
        .await
        .unwrap();
    ts
}

#[tokio::test]
async fn queues_get_fast_paths_and_lose_them_when_dropped() {
    let (_db, c) = setup(Q).await;
    assert!(c.has_fast_paths(Q).await.unwrap());
    assert!(c.has_next_path(Q).await.unwrap());
    c.drop_queue(Q).await.unwrap();
    assert!(!c.has_fast_paths(Q).await.unwrap());
    assert!(!c.has_next_path(Q).await.unwrap());
    c.create_queue(Q).await.unwrap();
    assert!(c.has_fast_paths(Q).await.unwrap());
    assert!(c.has_next_path(Q).await.unwrap());

    // A schema installed by absurdctl has none; the worker then uses claim_task.
    let up = TestDb::upstream().await;
    let uc = Client::new(up.pool.clone());
    uc.create_queue(Q).await.unwrap();
    assert!(!uc.has_fast_paths(Q).await.unwrap());
    assert!(!uc.has_next_path(Q).await.unwrap());
    assert!(!uc.has_fail_outcome().await.unwrap());
}

#[tokio::test]
async fn fast_claim_leases_like_claim_task() {
    let (_db, c) = setup(Q).await;
    let opts = SpawnOptions::default();
    let mut spawned = Vec::new();
    for i in 0..5 {
        spawned.push(c.spawn(Q, "t", &json!({"i": i}), &opts).await.unwrap());
    }
    let got = c.claim_fast(Q, "w-fast", 30, 3).await.unwrap();
    assert_eq!(got.len(), 3);
    // The oldest three, as claim_task takes them; fresh tasks have no checkpoints. (A batch's
    // rows come in run id order, and two runs spawned within one millisecond may have their
    // ids in either order: which runs, not their order, is the claim's contract.)
    assert_eq!(
        sorted(got.iter().map(|(r, _)| r.run_id)),
        sorted(spawned[..3].iter().map(|s| s.run_id))
    );
    for (run, cps) in &got {
        let k = spawned.iter().position(|s| s.run_id == run.run_id).unwrap();
        assert_eq!(run.task_id, spawned[k].task_id);
        assert_eq!(run.attempt, 1);
        assert_eq!(run.params, json!({"i": k}));
        assert!(cps.is_empty());
    }
    let rest = c.claim(Q, "w-generic", 30, 10).await.unwrap();
    assert_eq!(rest.len(), 2, "claim_task takes what the fast path left");

    for (run, _) in &got {
        let t = c.get_task(Q, run.task_id).await.unwrap().unwrap();
        assert_eq!(t.summary.state, State::Running);
        let r = t.runs.iter().find(|r| r.run_id == run.run_id).unwrap();
        assert_eq!(r.state, State::Running);
        assert_eq!(r.claimed_by.as_deref(), Some("w-fast"));
        assert!(r.claim_expires_at.is_some());
    }
    assert!(c.claim_fast(Q, "w", 30, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_claim_sweeps_expired_leases() {
    let (_db, c) = setup(Q).await;
    let t = c.spawn(Q, "t", &json!({}), &no_backoff(3)).await.unwrap();
    let first = c.claim_fast(Q, "w1", 1, 1).await.unwrap();
    assert_eq!(first.len(), 1);

    let mut conn = c.pool().acquire().await.unwrap();
    let later = fake_now(&c, 5).await;
    sqlx::query("select set_config('absurd.fake_now', $1, false)")
        .bind(&later)
        .execute(&mut *conn)
        .await
        .unwrap();
    // One sweep semantics (migration 0011): the queue's claim fails the expired attempt and
    // claims its retry in the same call, as 0.5.1's claim_task does, with nothing asked.
    let sql = format!("select count(*) from absurd.\"lease_{Q}\"('w2', 30, 1)");
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let task = c.get_task(Q, t.task_id).await.unwrap().unwrap();
    assert_eq!(task.runs.len(), 2);
    assert_eq!(task.runs[0].state, State::Failed);
    assert_eq!(
        task.runs[0].failure_reason.as_ref().unwrap()["name"],
        json!("$ClaimTimeout")
    );
    assert_eq!(task.runs[1].state, State::Running);
    assert_eq!(task.runs[1].claimed_by.as_deref(), Some("w2"));
}

#[tokio::test]
async fn fast_claim_returns_checkpoints_and_event_payloads() {
    let (_db, c) = setup(Q).await;
    let t = c.spawn(Q, "t", &json!({}), &no_backoff(3)).await.unwrap();
    let (run1, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    c.set_checkpoint(Q, t.task_id, "step-a", &json!({"a": 1}), run1.run_id, None)
        .await
        .unwrap();
    // Wait for an event: the run sleeps; the event wakes it with its payload.
    let out = c
        .await_event(Q, t.task_id, run1.run_id, "wait-1", "go", None)
        .await
        .unwrap();
    assert!(out.should_suspend);
    c.emit_event(Q, "go", Some(&json!({"p": 7}))).await.unwrap();
    let (woken, cps) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(woken.run_id, run1.run_id);
    // emit_event makes the run pending again with the payload (and no wake_event).
    assert_eq!(woken.event_payload, Some(json!({"p": 7})));
    assert!(cps.contains(&("step-a".to_string(), json!({"a": 1}))));

    // What the fast path returned is what get_task_checkpoint_states gives a replay.
    let generic = c.get_checkpoints(Q, t.task_id, woken.run_id).await.unwrap();
    assert_eq!(generic.len(), cps.len());
    for g in generic {
        assert!(cps.contains(&(g.checkpoint_name.clone(), g.state.clone())));
    }

    // A retry sees the first attempt's checkpoints too.
    c.fail_run(Q, woken.run_id, &json!({"name": "x"}), None)
        .await
        .unwrap();
    let (retry, cps) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(retry.attempt, 2);
    assert!(cps.contains(&("step-a".to_string(), json!({"a": 1}))));
}

#[tokio::test]
async fn batch_completion_fences_each_run() {
    let (_db, c) = setup(Q).await;
    let opts = SpawnOptions::default();
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(c.spawn(Q, "t", &json!({"i": i}), &opts).await.unwrap());
    }
    let claimed = c.claim_fast(Q, "w", 30, 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let ids: Vec<_> = tasks[..3].iter().map(|t| t.run_id).collect();
    assert_eq!(
        sorted(claimed.iter().map(|(r, _)| r.run_id)),
        sorted(ids.clone())
    );
    // The second task is cancelled while running: its completion must be refused.
    c.cancel_task(Q, tasks[1].task_id).await.unwrap();
    let results = vec![json!({"r": 0}), json!({"r": 1}), json!(null)];
    let states = c.complete_runs_fast(Q, &ids, &results).await.unwrap();
    let state_of = |id| {
        states
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, s)| s.clone())
            .unwrap()
    };
    assert_eq!(state_of(ids[0]), "completed");
    assert_eq!(state_of(ids[1]), "cancelled");
    assert_eq!(state_of(ids[2]), "completed");

    let r0 = c.task_result(Q, tasks[0].task_id).await.unwrap().unwrap();
    assert_eq!(r0.state, State::Completed);
    assert_eq!(r0.result, Some(json!({"r": 0})));
    let r1 = c.task_result(Q, tasks[1].task_id).await.unwrap().unwrap();
    assert_eq!(r1.state, State::Cancelled);
    let r2 = c.task_result(Q, tasks[2].task_id).await.unwrap().unwrap();
    assert_eq!(r2.state, State::Completed);

    // Completing again changes nothing and reports the run as completed (a retried batch
    // whose first reply was lost); an unknown run is reported missing.
    let again = c
        .complete_runs_fast(Q, &[ids[0], uuid::Uuid::now_v7()], &[json!(1), json!(2)])
        .await
        .unwrap();
    assert_eq!(again[0].1, "completed");
    assert_eq!(again[1].1, "missing");
    let r0 = c.task_result(Q, tasks[0].task_id).await.unwrap().unwrap();
    assert_eq!(r0.result, Some(json!({"r": 0})));
}

#[tokio::test]
async fn worker_completes_through_the_fast_paths() {
    // End to end: a worker process on our schema claims and completes through the fast paths
    // (visible as `lease_`/`next_` calls in pg_stat_user_functions: a one-queue worker claims
    // the next run with each completion, migration 0012), and every task completes.
    let (db, c) = setup(Q).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter database \"{}\" set track_functions = 'pl'",
        db.name
    )))
    .execute(c.pool())
    .await
    .unwrap();
    let opts = SpawnOptions::default();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            c.spawn(Q, "echo", &json!({"i": i}), &opts)
                .await
                .unwrap()
                .task_id,
        );
    }
    let config = common::temp_file("absurd-host.toml", "[tasks.echo]\nkind = \"builtin\"\n");
    let _w = common::WorkerProc::start(&db.url, &config, &["--queue", Q, "--concurrency", "8"]);
    for (i, id) in ids.iter().enumerate() {
        let r = common::terminal(&c, Q, *id, Duration::from_secs(60)).await;
        assert_eq!(r.state, State::Completed);
        assert_eq!(r.result, Some(json!({"i": i})));
    }
    // Function statistics reach the view once the worker's backends report them (at least
    // every second while they are active).
    common::wait_for("function statistics", Duration::from_secs(30), || async {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select funcname::text, calls from pg_stat_user_functions where schemaname = 'absurd' \
             and funcname in ('lease_fast', 'next_fast', 'claim_task', 'complete_run')",
        )
        .fetch_all(c.pool())
        .await
        .unwrap();
        let n = |f: &str| rows.iter().find(|(n, _)| n == f).map_or(0, |(_, n)| *n);
        (n("lease_fast") > 0
            && n("next_fast") > 0
            && n("claim_task") == 0
            && n("complete_run") == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn interface_functions_run_the_queue_functions() {
    // One claim path (migration 0011): on our schema claim_task and complete_run call the
    // queue's lease_/done_ functions, so every Absurd SDK (and the state-machine suite, which
    // drives the interface functions) runs the worker's code. A queue named "task" and one of
    // the longest name work too (their function names fit in 63 bytes and overload nothing).
    let (db, setup_client) = setup(Q).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter database \"{}\" set track_functions = 'pl'",
        db.name
    )))
    .execute(setup_client.pool())
    .await
    .unwrap();
    // Connections made from now on track function calls.
    let c = Client::new(sqlx::PgPool::connect(&db.url).await.unwrap());
    let long = "q".repeat(57);
    for q in [Q, "task", long.as_str()] {
        c.create_queue(q).await.unwrap();
        assert!(c.has_fast_paths(q).await.unwrap(), "{q}");
        let t = c
            .spawn(q, "t", &json!({}), &SpawnOptions::default())
            .await
            .unwrap();
        let got = c.claim(q, "w", 30, 5).await.unwrap();
        assert_eq!(got.len(), 1, "{q}");
        assert_eq!(got[0].run_id, t.run_id);
        c.complete_run(q, t.run_id, &json!({"ok": q}))
            .await
            .unwrap();
        let r = c.task_result(q, t.task_id).await.unwrap().unwrap();
        assert_eq!(r.result, Some(json!({"ok": q})));
        // Completing again is refused as in 0.5.1 (not a fence error: the run completed).
        let again = c.complete_run(q, t.run_id, &json!({})).await.unwrap_err();
        assert!(!again.is_run_lost(), "{again}");
    }
    // No function of migrations 0009/0010's names is left.
    let old: i64 = sqlx::query_scalar(
        "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
         where n.nspname = 'absurd' and (p.proname like '\\_hc\\_%' or p.proname like '\\_hd\\_%')",
    )
    .fetch_one(c.pool())
    .await
    .unwrap();
    assert_eq!(old, 0);
    common::wait_for("function statistics", Duration::from_secs(30), || async {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select funcname::text, calls from pg_stat_user_functions where schemaname = 'absurd' \
             and funcname in ('lease_fast', 'done_fast', 'lease_task', 'done_task')",
        )
        .fetch_all(c.pool())
        .await
        .unwrap();
        (rows.len() == 4 && rows.iter().all(|(_, n)| *n > 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn complete_run_fences_like_0_5_1() {
    // The fence now lives in absurd._host_fence_run; the codes and messages the SDKs match
    // on are unchanged: AB001 for a cancelled run, AB002 for a failed one.
    let (_db, c) = setup(Q).await;
    let code_and_message = |e: sqlx::Error| {
        let d = e.into_database_error().expect("a database error");
        (d.code().map(|c| c.to_string()), d.message().to_string())
    };
    let t1 = c.spawn(Q, "t", &json!({}), &no_backoff(1)).await.unwrap();
    let t2 = c.spawn(Q, "t", &json!({}), &no_backoff(1)).await.unwrap();
    assert_eq!(c.claim(Q, "w", 30, 2).await.unwrap().len(), 2);
    c.cancel_task(Q, t1.task_id).await.unwrap();
    c.fail_run(Q, t2.run_id, &json!({"name": "x"}), None)
        .await
        .unwrap();
    let complete = |run: uuid::Uuid| {
        sqlx::query("select absurd.complete_run($1, $2, '{}')")
            .bind(Q)
            .bind(run)
            .execute(c.pool())
    };
    let e1 = code_and_message(complete(t1.run_id).await.unwrap_err());
    assert_eq!(e1, (Some("AB001".into()), "Task has been cancelled".into()));
    let e2 = code_and_message(complete(t2.run_id).await.unwrap_err());
    assert_eq!(
        e2,
        (
            Some("AB002".into()),
            format!("Run \"{}\" has already failed in queue \"{Q}\"", t2.run_id)
        )
    );
    let missing = uuid::Uuid::nil();
    let e3 = code_and_message(complete(missing).await.unwrap_err());
    assert_eq!(
        e3.1,
        format!("Run \"{missing}\" not found in queue \"{Q}\"")
    );
}

#[tokio::test]
async fn creating_a_queue_again_keeps_its_functions() {
    // create_queue regenerates a queue's functions; it must replace them in place, never drop
    // them, or the prepared statements of workers running on the queue would break.
    let (_db, c) = setup(Q).await;
    let oids = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "select to_regprocedure('absurd.lease_fast(text,integer,integer)')::oid::int8, \
                    to_regprocedure('absurd.done_fast(uuid[],jsonb[])')::oid::int8, \
                    to_regprocedure('absurd.next_fast(uuid[],jsonb[],text,integer,integer)')::oid::int8",
        )
        .fetch_one(c.pool())
        .await
        .unwrap()
    };
    let before = oids().await;
    c.create_queue(Q).await.unwrap();
    assert_eq!(oids().await, before);
}

#[tokio::test]
async fn concurrent_ensure_queue_calls_all_succeed() {
    // Workers dead-lettering at the same moment into a DLQ that does not exist yet all create
    // it. PostgreSQL may abort some of those creations (a deadlock on the DDL's locks, or a
    // duplicate catalog row); each call must still succeed, since the queue exists after it.
    let (_db, c) = setup(Q).await;
    for round in 0..3 {
        let name = format!("race-dlq-{round}");
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (c, name) = (c.clone(), name.clone());
                tokio::spawn(async move { c.ensure_queue(&name).await })
            })
            .collect();
        for call in calls {
            if let Err(e) = call.await.unwrap() {
                panic!("ensure_queue({name:?}) failed beside concurrent ones: {e}");
            }
        }
        assert!(c.queue_exists(&name).await.unwrap());
    }
}

// ---- migration 0012: complete-and-claim, the single-run claim ---------------------------

/// A client on a one-connection pool whose session clock is frozen at `at` (so the claim's
/// sweeps see leases expire without waiting), with the queue created.
async fn frozen_client(db: &TestDb, at: chrono::DateTime<chrono::Utc>) -> Client {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect(&db.url)
        .await
        .unwrap();
    let c = Client::new(pool);
    set_now(&c, at).await;
    c.create_queue(Q).await.unwrap();
    c
}

async fn set_now(c: &Client, at: chrono::DateTime<chrono::Utc>) {
    sqlx::query("select set_config('absurd.fake_now', $1, false)")
        .bind(at.to_rfc3339())
        .execute(c.pool())
        .await
        .unwrap();
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select absurd.current_time()")
        .fetch_one(c.pool())
        .await
        .unwrap();
    assert_eq!(now, at, "absurd.current_time() must follow absurd.fake_now");
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2024-03-01T08:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn state_of(states: &[(uuid::Uuid, String)], run: uuid::Uuid) -> &str {
    states
        .iter()
        .find(|(r, _)| *r == run)
        .map(|(_, s)| s.as_str())
        .unwrap_or_else(|| panic!("no state reported for run {run}: {states:?}"))
}

#[tokio::test]
async fn complete_and_claim_gives_each_completed_run_one_successor() {
    let (_db, c) = setup(Q).await;
    assert!(c.has_next_path(Q).await.unwrap());
    let opts = SpawnOptions::default();
    let mut t = Vec::new();
    for i in 0..7 {
        t.push(c.spawn(Q, "t", &json!({"i": i}), &opts).await.unwrap());
    }
    let first = c.claim_fast(Q, "w1", 30, 2).await.unwrap();
    let ids = vec![t[0].run_id, t[1].run_id];
    assert_eq!(
        sorted(first.iter().map(|(r, _)| r.run_id)),
        sorted(ids.clone())
    );

    // A batch: both complete, and two runs are claimed in the same call, oldest first, leased
    // to the caller as lease_ leases them.
    let (states, next) = c
        .complete_and_claim(Q, &ids, &[json!({"r": 0}), json!({"r": 1})], "w2", 30, 2)
        .await
        .unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(state_of(&states, ids[0]), "completed");
    assert_eq!(state_of(&states, ids[1]), "completed");
    assert_eq!(
        sorted(next.iter().map(|(r, _)| r.run_id)),
        sorted([t[2].run_id, t[3].run_id])
    );
    for (run, cps) in &next {
        assert_eq!(run.attempt, 1);
        assert!(cps.is_empty());
        let task = c.get_task(Q, run.task_id).await.unwrap().unwrap();
        assert_eq!(task.summary.state, State::Running);
        assert_eq!(task.runs[0].state, State::Running);
        assert_eq!(task.runs[0].claimed_by.as_deref(), Some("w2"));
        assert!(task.runs[0].claim_expires_at.is_some());
    }
    for (k, id) in [t[0].task_id, t[1].task_id].into_iter().enumerate() {
        let r = c.task_result(Q, id).await.unwrap().unwrap();
        assert_eq!(r.state, State::Completed);
        assert_eq!(r.result, Some(json!({"r": k})));
    }

    // One run (the plain single-run path): it completes, and at most one run is claimed for
    // its slot however many are asked for.
    let (states, next) = c
        .complete_and_claim(Q, &[t[2].run_id], &[json!(2)], "w2", 30, 5)
        .await
        .unwrap();
    assert_eq!(states, [(t[2].run_id, "completed".to_string())]);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0.run_id, t[4].run_id);
    assert_eq!(next[0].0.params, json!({"i": 4}));

    // Never more than asked for: two completed, one claimed.
    let (_, next) = c
        .complete_and_claim(
            Q,
            &[t[3].run_id, t[4].run_id],
            &[json!(3), json!(4)],
            "w2",
            30,
            1,
        )
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0.run_id, t[5].run_id);

    // Asking for none only completes.
    let (states, next) = c
        .complete_and_claim(Q, &[t[5].run_id], &[json!(5)], "w2", 30, 0)
        .await
        .unwrap();
    assert_eq!(states[0].1, "completed");
    assert!(next.is_empty());
    let pending = c.get_task(Q, t[6].task_id).await.unwrap().unwrap();
    assert_eq!(pending.summary.state, State::Pending);

    // The last one; nothing is left to claim.
    let (last, _) = c.claim_fast(Q, "w1", 30, 1).await.unwrap().remove(0);
    let (states, next) = c
        .complete_and_claim(Q, &[last.run_id], &[json!(6)], "w1", 30, 1)
        .await
        .unwrap();
    assert_eq!(states[0].1, "completed");
    assert!(next.is_empty());
    for task in &t {
        let r = c.task_result(Q, task.task_id).await.unwrap().unwrap();
        assert_eq!(r.state, State::Completed);
    }
}

#[tokio::test]
async fn complete_and_claim_fences_stale_runs() {
    // A run id the call does not complete (its lease expired and a claim failed it, its task
    // was cancelled, it completed before, it does not exist) neither completes nor claims,
    // on the single-run path and in a batch.
    let db = TestDb::migrated().await;
    let c = frozen_client(&db, t0()).await;
    let mut t = Vec::new();
    for i in 0..8 {
        // A millisecond apart, so that claims take them in this order.
        set_now(&c, t0() + chrono::TimeDelta::milliseconds(i)).await;
        t.push(
            c.spawn(Q, "t", &json!({"i": i}), &no_backoff(3))
                .await
                .unwrap(),
        );
    }
    // A is leased for 10 s; at +20 s another worker's claim sweeps it (attempt 1 fails, its
    // retry is pending) and takes B.
    let (a, _) = c.claim_fast(Q, "w-a", 10, 1).await.unwrap().remove(0);
    assert_eq!(a.run_id, t[0].run_id);
    set_now(&c, t0() + chrono::TimeDelta::seconds(20)).await;
    let (b, _) = c.claim_fast(Q, "w-b", 30, 1).await.unwrap().remove(0);
    assert_eq!(b.run_id, t[1].run_id);
    let swept = c.get_task(Q, a.task_id).await.unwrap().unwrap();
    assert_eq!(swept.runs[0].state, State::Failed);
    assert_eq!(swept.runs[1].state, State::Pending);

    let ready_before = c.queue_stats(Q).await.unwrap().pending;
    // The stale worker finishes A: refused, and nothing claimed for it.
    let (states, next) = c
        .complete_and_claim(Q, &[a.run_id], &[json!("late")], "w-a", 30, 1)
        .await
        .unwrap();
    assert_eq!(states, [(a.run_id, "failed".to_string())]);
    assert!(next.is_empty(), "a stale run id claimed {next:?}");
    let after = c.get_task(Q, a.task_id).await.unwrap().unwrap();
    assert_eq!(after.summary.state, State::Pending);
    assert_eq!(after.runs[0].result, None);
    assert_eq!(after.runs[1].state, State::Pending);
    assert_eq!(c.queue_stats(Q).await.unwrap().pending, ready_before);

    // Cancelled while running.
    let (cr, _) = c.claim_fast(Q, "w-c", 30, 1).await.unwrap().remove(0);
    c.cancel_task(Q, cr.task_id).await.unwrap();
    let (states, next) = c
        .complete_and_claim(Q, &[cr.run_id], &[json!(1)], "w-c", 30, 1)
        .await
        .unwrap();
    assert_eq!(states[0].1, "cancelled");
    assert!(next.is_empty());
    assert_eq!(
        c.task_result(Q, cr.task_id).await.unwrap().unwrap().state,
        State::Cancelled
    );

    // Completed before (a retried write): reported completed, result kept, nothing claimed.
    let (states, next) = c
        .complete_and_claim(Q, &[b.run_id], &[json!("first")], "w-b", 30, 1)
        .await
        .unwrap();
    assert_eq!(states[0].1, "completed");
    assert_eq!(next.len(), 1, "a completed run's slot takes the next run");
    let d = next[0].0.clone();
    assert_eq!(d.run_id, t[3].run_id);
    let (states, next) = c
        .complete_and_claim(Q, &[b.run_id], &[json!("second")], "w-b", 30, 1)
        .await
        .unwrap();
    assert_eq!(states[0].1, "completed");
    assert!(next.is_empty());
    assert_eq!(
        c.task_result(Q, b.task_id).await.unwrap().unwrap().result,
        Some(json!("first"))
    );

    // Unknown.
    let unknown = uuid::Uuid::now_v7();
    let (states, next) = c
        .complete_and_claim(Q, &[unknown], &[json!(1)], "w", 30, 1)
        .await
        .unwrap();
    assert_eq!(states, [(unknown, "missing".to_string())]);
    assert!(next.is_empty());

    // A batch of one live run among stale ones claims one run, for the live one.
    let (states, next) = c
        .complete_and_claim(
            Q,
            &[a.run_id, d.run_id, cr.run_id, unknown],
            &[json!(0), json!("d"), json!(2), json!(3)],
            "w-d",
            30,
            4,
        )
        .await
        .unwrap();
    assert_eq!(state_of(&states, a.run_id), "failed");
    assert_eq!(state_of(&states, d.run_id), "completed");
    assert_eq!(state_of(&states, cr.run_id), "cancelled");
    assert_eq!(state_of(&states, unknown), "missing");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0.run_id, t[4].run_id);
    assert_eq!(
        c.task_result(Q, d.task_id).await.unwrap().unwrap().result,
        Some(json!("d"))
    );
    // A's retry (due at +20 s, after the others) was claimed by none of these calls.
    let retry = c.get_task(Q, a.task_id).await.unwrap().unwrap();
    assert_eq!(retry.runs[1].state, State::Pending);
    assert!(retry.runs[1].claimed_by.is_none());
}

#[tokio::test]
async fn complete_and_claim_sweeps_like_every_claim() {
    // The claim half of next_ is lease_'s: it fails an expired lease (one per claimed slot)
    // before it claims.
    let db = TestDb::migrated().await;
    let c = frozen_client(&db, t0()).await;
    let x = c
        .spawn(Q, "t", &json!({"x": 1}), &no_backoff(3))
        .await
        .unwrap();
    let y = c
        .spawn(Q, "t", &json!({"y": 1}), &no_backoff(3))
        .await
        .unwrap();
    let claimed = c.claim_fast(Q, "w", 10, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // y finishes in time... at +20 s, when x's lease has long expired.
    set_now(&c, t0() + chrono::TimeDelta::seconds(20)).await;
    let (states, next) = c
        .complete_and_claim(Q, &[y.run_id], &[json!("y")], "w", 30, 1)
        .await
        .unwrap();
    assert_eq!(states[0].1, "completed");
    let xt = c.get_task(Q, x.task_id).await.unwrap().unwrap();
    assert_eq!(xt.runs[0].state, State::Failed);
    assert_eq!(
        xt.runs[0].failure_reason.as_ref().unwrap()["name"],
        json!("$ClaimTimeout")
    );
    // With the fake clock the retry is due at once and this same call claims it (as 0.5.1's
    // claim_task does).
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0.task_id, x.task_id);
    assert_eq!(next[0].0.attempt, 2);
}

/// A completion whose task has a waiter wakes the waiting run (the task-done trigger) and the
/// same call claims it (migration 0025): the waiter does not wait for a NOTIFY and a claim of
/// its own. Both the single-run and the batch completion, on the real clock.
#[tokio::test]
async fn complete_and_claim_takes_the_run_its_completion_wakes() {
    let (_db, c) = setup(Q).await;
    for batch in [false, true] {
        // The parent claims, spawns its child and waits for the child's result: it sleeps.
        let parent = c
            .spawn(Q, "parent", &json!({}), &SpawnOptions::default())
            .await
            .unwrap();
        let (claimed, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
        assert_eq!(claimed.run_id, parent.run_id);
        let child = c
            .spawn_child(
                Q,
                "child",
                &json!({}),
                &SpawnOptions::default(),
                Q,
                parent.task_id,
            )
            .await
            .unwrap();
        let (suspended, _) = c
            .await_task_result_bounded(
                Q,
                parent.task_id,
                parent.run_id,
                "wait",
                Q,
                child.task_id,
                None,
                1 << 20,
            )
            .await
            .unwrap();
        assert!(
            suspended,
            "the child has not finished, so the parent suspends"
        );
        let (run, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
        assert_eq!(run.run_id, child.run_id);
        // In the batch case a second run completes beside the child.
        let mut runs = vec![child.run_id];
        let mut results = vec![json!("child's result")];
        if batch {
            let other = c
                .spawn(Q, "other", &json!({}), &SpawnOptions::default())
                .await
                .unwrap();
            let (o, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
            assert_eq!(o.run_id, other.run_id);
            runs.push(other.run_id);
            results.push(json!("other"));
        }
        // The child's completion wakes the parent, and the call claims it, with the outcome
        // as the event that woke it.
        let (states, next) = c
            .complete_and_claim(Q, &runs, &results, "w", 30, runs.len() as i32)
            .await
            .unwrap();
        assert!(states.iter().all(|(_, s)| s == "completed"), "{states:?}");
        assert_eq!(next.len(), 1, "batch {batch}: {next:?}");
        let (woken, _) = &next[0];
        assert_eq!(woken.task_id, parent.task_id);
        assert_eq!(woken.run_id, parent.run_id);
        let outcome = woken.event_payload.as_ref().expect("the wake's payload");
        assert_eq!(outcome["state"], "completed", "{outcome}");
        assert_eq!(outcome["result"], "child's result", "{outcome}");
        c.complete_and_claim(Q, &[parent.run_id], &[json!(null)], "w", 30, 0)
            .await
            .unwrap();
    }
}

/// The wake-ups (`absurd_wakeup` payloads) committed by `act`, in order: everything a
/// listener receives between two markers sent around it (notifications arrive in commit order).
async fn wakeups_of<F: std::future::Future<Output = ()>>(
    db: &TestDb,
    listener: &mut sqlx::postgres::PgListener,
    act: F,
) -> Vec<String> {
    async fn mark(db: &TestDb, listener: &mut sqlx::postgres::PgListener, m: &str) -> Vec<String> {
        sqlx::query("select pg_notify('absurd_wakeup', $1)")
            .bind(m)
            .execute(&db.pool)
            .await
            .unwrap();
        let mut seen = Vec::new();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(30), listener.recv())
                .await
                .expect("the marker within 30 s")
                .unwrap();
            if n.payload() == m {
                return seen;
            }
            seen.push(n.payload().to_string());
        }
    }
    mark(db, listener, "marker: before").await;
    act.await;
    mark(db, listener, "marker: after").await
}

#[tokio::test]
async fn a_completion_that_claims_the_run_it_wakes_wakes_no_one_else() {
    const OTHER: &str = "fast_other";
    let (db, c) = setup(Q).await;
    c.create_queue(OTHER).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("absurd_wakeup").await.unwrap();
    // A parent of `parent_queue`, claimed, waiting for a new child of Q; returns the child's
    // run, claimed.
    async fn waiting_parent(c: &Client, parent_queue: &str) -> (uuid::Uuid, uuid::Uuid) {
        let parent = c
            .spawn(parent_queue, "parent", &json!({}), &SpawnOptions::default())
            .await
            .unwrap();
        let (claimed, _) = c
            .claim_fast(parent_queue, "w", 30, 1)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(claimed.run_id, parent.run_id);
        let child = c
            .spawn_child(
                Q,
                "child",
                &json!({}),
                &SpawnOptions::default(),
                parent_queue,
                parent.task_id,
            )
            .await
            .unwrap();
        let (suspended, _) = c
            .await_task_result_bounded(
                parent_queue,
                parent.task_id,
                parent.run_id,
                "wait",
                Q,
                child.task_id,
                None,
                1 << 20,
            )
            .await
            .unwrap();
        assert!(suspended);
        let (run, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
        assert_eq!(run.run_id, child.run_id);
        (parent.run_id, child.run_id)
    }

    // The completion claims the parent it woke: no one else is told.
    let (parent, child) = waiting_parent(&c, Q).await;
    let mut next = Vec::new();
    let seen = wakeups_of(&db, &mut listener, async {
        next = c
            .complete_and_claim(Q, &[child], &[json!(1)], "w", 30, 1)
            .await
            .unwrap()
            .1;
    })
    .await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0.run_id, parent);
    assert_eq!(
        seen,
        Vec::<String>::new(),
        "the woken run was claimed by the call"
    );
    c.complete_and_claim(Q, &[parent], &[json!(null)], "w", 30, 0)
        .await
        .unwrap();

    // A completion that claims nothing: the woken parent is announced, as before.
    let (parent, child) = waiting_parent(&c, Q).await;
    let seen = wakeups_of(&db, &mut listener, async {
        let next = c
            .complete_and_claim(Q, &[child], &[json!(1)], "w", 30, 0)
            .await
            .unwrap()
            .1;
        assert!(next.is_empty());
    })
    .await;
    assert_eq!(seen, vec![Q.to_string()]);
    let (run, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(run.run_id, parent);
    c.complete_and_claim(Q, &[parent], &[json!(null)], "w", 30, 0)
        .await
        .unwrap();

    // A parent in another queue is announced in that queue, whatever the call claims.
    let (parent, child) = waiting_parent(&c, OTHER).await;
    let seen = wakeups_of(&db, &mut listener, async {
        let next = c
            .complete_and_claim(Q, &[child], &[json!(1)], "w", 30, 1)
            .await
            .unwrap()
            .1;
        assert!(next.is_empty(), "{next:?}");
    })
    .await;
    assert_eq!(seen, vec![OTHER.to_string()]);
    let (run, _) = c.claim_fast(OTHER, "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(run.run_id, parent);

    // The hold ends with the call: a spawn later in the same transaction is announced.
    let seen = wakeups_of(&db, &mut listener, async {
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query(
            "select * from absurd.next_fast(array[]::uuid[], array[]::jsonb[], 'w', 30, 1)",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("select * from absurd.spawn_task('fast', 'later', '{}', '{}')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    })
    .await;
    assert_eq!(seen, vec![Q.to_string()]);
}

/// A child of `parent` (whose run `run` is claimed) spawned into Q with the checkpoint `name`,
/// claiming for `claim`'s worker when given.
async fn spawn_child_as(
    c: &Client,
    parent: &absurd_client::Spawned,
    name: &str,
    claim: Option<absurd_client::children::ClaimFor<'_>>,
) -> absurd_client::Result<(absurd_client::Spawned, Option<absurd_client::Claimed>)> {
    let params = json!({"n": name});
    let opts = SpawnOptions::default();
    match claim {
        Some(claim) => {
            c.spawn_child_and_claim(
                Q,
                "child",
                &params,
                &opts,
                Q,
                parent.task_id,
                parent.run_id,
                name,
                Some(30),
                claim,
            )
            .await
        }
        None => c
            .spawn_child_checkpointed(
                Q,
                "child",
                &params,
                &opts,
                Q,
                parent.task_id,
                parent.run_id,
                name,
                Some(30),
            )
            .await
            .map(|s| (s, None)),
    }
}

#[tokio::test]
async fn a_spawn_claims_for_a_free_slot_of_its_worker() {
    let (db, c) = setup(Q).await;
    assert!(c.has_spawn_and_claim().await.unwrap());
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("absurd_wakeup").await.unwrap();
    let limits = absurd_client::ReadLimits::default();
    let claim = Some(absurd_client::children::ClaimFor {
        worker_id: "w2",
        claim_timeout_secs: 30,
        limits: &limits,
    });
    let parent = c
        .spawn(Q, "parent", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let (run, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(run.run_id, parent.run_id);
    let spawn = |name: &'static str, claim| spawn_child_as(&c, &parent, name, claim);

    // Nothing older waits: the new task is claimed for the worker, and no one else is woken.
    let mut got = None;
    let seen = wakeups_of(&db, &mut listener, async {
        got = Some(spawn("first", claim).await.unwrap());
    })
    .await;
    let (first, claimed) = got.unwrap();
    assert!(first.created);
    let claimed = claimed.expect("the new task is claimed");
    assert_eq!(claimed.run.run_id, first.run_id);
    assert_eq!(claimed.run.params, json!({"n": "first"}));
    assert_eq!(seen, Vec::<String>::new());
    let details = c.get_task(Q, first.task_id).await.unwrap().unwrap();
    assert_eq!(details.summary.state, State::Running);
    // The spawner's checkpoint holds the new task's id, as without the claim.
    let cps = c
        .get_checkpoints(Q, parent.task_id, parent.run_id)
        .await
        .unwrap();
    let cp = cps.iter().find(|cp| cp.checkpoint_name == "first").unwrap();
    assert_eq!(cp.state, json!(first.task_id.to_string()));

    // An older ready run goes first, as in any claim; the new task waits its turn.
    let (older, _) = spawn("older", None).await.unwrap();
    let (newer, claimed) = spawn("newer", claim).await.unwrap();
    assert_eq!(claimed.expect("a run is claimed").run.run_id, older.run_id);
    assert_eq!(
        c.get_task(Q, newer.task_id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .state,
        State::Pending
    );

    // Without a worker, nothing is claimed and the spawn wakes the queue's workers.
    let mut got = None;
    let seen = wakeups_of(&db, &mut listener, async {
        got = Some(spawn("alone", None).await.unwrap());
    })
    .await;
    assert!(got.unwrap().1.is_none());
    assert_eq!(seen, vec![Q.to_string()]);

    // A cancelled parent spawns nothing and claims nothing.
    c.cancel_task(Q, parent.task_id).await.unwrap();
    let err = spawn("late", claim).await.unwrap_err();
    assert!(
        matches!(err, absurd_client::ClientError::Cancelled),
        "{err:?}"
    );
}

/// Whether `absurd.<name>` exists.
async fn has_function(c: &Client, signature: &str) -> bool {
    sqlx::query_scalar::<_, bool>("select to_regprocedure($1) is not null")
        .bind(format!("absurd.{signature}"))
        .fetch_one(c.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn checkpoints_and_events_go_through_the_queues_own_functions() {
    let (_db, c) = setup(Q).await;
    let own = [
        "ckpt_fast(uuid,text,jsonb,uuid,integer)",
        "wait_fast(uuid,uuid,text,text,integer)",
        "emit_fast(text,jsonb)",
    ];
    for f in own {
        assert!(has_function(&c, f).await, "{f}");
    }
    // The same steps with the queue's own functions and, once they are gone, with the
    // interface functions' own bodies (a queue made before migration 0028).
    for round in ["own", "generic"] {
        let task = c
            .spawn(Q, "t", &json!({}), &SpawnOptions::default())
            .await
            .unwrap();
        let (run, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
        assert_eq!(run.run_id, task.run_id);
        c.set_checkpoint(
            Q,
            task.task_id,
            "step",
            &json!({"round": round}),
            run.run_id,
            Some(60),
        )
        .await
        .unwrap();
        let event = format!("go-{round}");
        let waited = c
            .await_event(Q, task.task_id, run.run_id, "wait", &event, None)
            .await
            .unwrap();
        assert!(waited.should_suspend, "{round}");
        c.emit_event(Q, &event, Some(&json!({"at": round})))
            .await
            .unwrap();
        // Woken with the payload, which is also the wait's checkpoint.
        let (woken, cps) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
        assert_eq!(woken.run_id, run.run_id, "{round}");
        assert_eq!(woken.event_payload, Some(json!({"at": round})), "{round}");
        let cps: std::collections::HashMap<_, _> = cps.into_iter().collect();
        assert_eq!(cps.get("step"), Some(&json!({"round": round})), "{round}");
        assert_eq!(cps.get("wait"), Some(&json!({"at": round})), "{round}");
        // A replay of the wait returns the payload without suspending.
        let again = c
            .await_event(Q, task.task_id, run.run_id, "wait", &event, None)
            .await
            .unwrap();
        assert!(!again.should_suspend);
        assert_eq!(again.payload, Some(json!({"at": round})));
        // A cancelled task refuses the checkpoint, as every write of a cancelled task.
        c.cancel_task(Q, task.task_id).await.unwrap();
        let err = c
            .set_checkpoint(Q, task.task_id, "late", &json!(1), run.run_id, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, absurd_client::ClientError::Cancelled),
            "{round}: {err:?}"
        );
        for f in own {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "drop function if exists absurd.{f}"
            )))
            .execute(c.pool())
            .await
            .unwrap();
        }
    }
    // Made again, the queue has them again; dropped, it has none.
    c.create_queue(Q).await.unwrap();
    for f in own {
        assert!(has_function(&c, f).await, "{f}");
    }
    c.drop_queue(Q).await.unwrap();
    for f in own {
        assert!(!has_function(&c, f).await, "{f}");
    }
}

/// `select * from absurd.spawn_task(queue, task_name, '{}', options)`'s error message.
async fn spawn_error(c: &Client, queue: &str, task_name: &str, options: &str) -> String {
    let err = sqlx::query("select * from absurd.spawn_task($1, $2, '{}', $3::jsonb)")
        .bind(queue)
        .bind(task_name)
        .bind(options)
        .execute(c.pool())
        .await
        .expect_err("the spawn must be refused");
    err.as_database_error()
        .expect("a database error")
        .message()
        .to_string()
}

#[tokio::test]
async fn spawns_go_through_the_queues_own_function() {
    use absurd_client::partitions::StorageMode;
    let db = TestDb::migrated().await;
    let c = Client::new(db.pool.clone());
    for (q, mode) in [
        ("sq", StorageMode::Unpartitioned),
        ("sqp", StorageMode::Partitioned),
    ] {
        c.create_queue_with_mode(q, mode).await.unwrap();
        let own = format!("spwn_{q}(text,jsonb,jsonb)");
        assert!(has_function(&c, &own).await, "{own}");
        // The same spawns with the queue's own function and, once it is gone, with
        // spawn_task's former body (a queue made before migration 0029).
        for round in ["own", "generic"] {
            let opts = SpawnOptions {
                idempotency_key: Some(format!("key-{round}")),
                max_attempts: Some(2),
                headers: Some(json!({"h": round})),
                ..Default::default()
            };
            let a = c
                .spawn(q, "t", &json!({"round": round}), &opts)
                .await
                .unwrap();
            let b = c.spawn(q, "other", &json!(2), &opts).await.unwrap();
            assert!(a.created && !b.created, "{q} {round}");
            assert_eq!((b.task_id, b.run_id, b.attempt), (a.task_id, a.run_id, 1));
            let task = c.get_task(q, a.task_id).await.unwrap().unwrap();
            assert_eq!(task.summary.task_name, "t");
            assert_eq!(task.summary.state, State::Pending);
            assert_eq!(task.summary.max_attempts, Some(2));
            assert_eq!(task.summary.idempotency_key, opts.idempotency_key);
            assert_eq!(task.params, json!({"round": round}));
            assert_eq!(task.headers, Some(json!({"h": round})));
            let (run, _) = c.claim_fast(q, "w", 30, 1).await.unwrap().remove(0);
            assert_eq!(run.run_id, a.run_id, "{q} {round}");
            // Refused before any write, with the same messages.
            assert_eq!(
                spawn_error(&c, q, " ", "{}").await,
                "task_name must be provided"
            );
            assert_eq!(
                spawn_error(&c, q, "t", r#"{"max_attempts": 0}"#).await,
                "max_attempts must be >= 1"
            );
            if round == "own" {
                // spawn_task did call the queue's function: a broken one breaks the spawn.
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "create or replace function absurd.spwn_{q}(p_task_name text, p_params jsonb, \
                     p_options jsonb) returns table (task_id uuid, run_id uuid, attempt integer, \
                     created boolean) language plpgsql as $$ begin raise exception 'own spawn'; end $$"
                )))
                .execute(c.pool())
                .await
                .unwrap();
                assert_eq!(spawn_error(&c, q, "t", "{}").await, "own spawn");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "drop function absurd.spwn_{q}(text, jsonb, jsonb)"
                )))
                .execute(c.pool())
                .await
                .unwrap();
            }
        }
        let tasks: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from absurd.t_{q}"
        )))
        .fetch_one(c.pool())
        .await
        .unwrap();
        assert_eq!(
            tasks, 2,
            "{q}: one task per key, none for the refused spawns"
        );
        // Made again, the queue has it again; dropped, it has none.
        c.create_queue_with_mode(q, mode).await.unwrap();
        assert!(has_function(&c, &own).await, "{own}");
        c.drop_queue(q).await.unwrap();
        assert!(!has_function(&c, &own).await, "{own}");
    }
}

/// The names of the triggers on `absurd.t_<queue>` itself (not its partitions').
async fn task_triggers(c: &Client, queue: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select g.tgname::text from pg_trigger g \
         where g.tgrelid = to_regclass(format('absurd.%I', 't_' || $1)) and not g.tgisinternal \
           and g.tgname like 'absurd_task_%' order by 1",
    )
    .bind(queue)
    .fetch_all(c.pool())
    .await
    .unwrap()
}

/// Claims one run of `queue` for `worker`: its (run id, task id).
async fn claim_one(c: &Client, queue: &str, worker: &str) -> (uuid::Uuid, uuid::Uuid) {
    let (run, _) = c.claim_fast(queue, worker, 30, 1).await.unwrap().remove(0);
    (run.run_id, run.task_id)
}

#[tokio::test]
async fn a_task_that_ends_wakes_its_waiters_and_no_other_update_calls_the_trigger() {
    use absurd_client::partitions::StorageMode;
    let db = TestDb::migrated().await;
    let c = Client::new(db.pool.clone());
    let opts = SpawnOptions::default();
    for (q, mode) in [
        ("eq", StorageMode::Unpartitioned),
        ("eqp", StorageMode::Partitioned),
    ] {
        c.create_queue_with_mode(q, mode).await.unwrap();
        // Installed by the first child spawn (migration 0030's row trigger, not 0019's).
        let parent = c.spawn(q, "parent", &json!({}), &opts).await.unwrap();
        let (p_run, _) = claim_one(&c, q, "w").await;
        let child = c
            .spawn_child(q, "child", &json!({}), &opts, q, parent.task_id)
            .await
            .unwrap();
        assert_eq!(task_triggers(&c, q).await, vec!["absurd_task_ended"], "{q}");
        let (suspend, _) = c
            .await_task_result_bounded(
                q,
                parent.task_id,
                p_run,
                "wait",
                q,
                child.task_id,
                None,
                1 << 20,
            )
            .await
            .unwrap();
        assert!(suspend, "{q}: the child has not ended");

        // In one transaction: a claim, which updates the child's task row, calls no function;
        // the completion calls it once. The backend's counts of calls not yet reported to the
        // statistics (which can include an earlier transaction's, on a pooled connection) are
        // not reported while a transaction runs, so the differences are this one's.
        let mut tx = c.pool().begin().await.unwrap();
        let calls = "select coalesce(pg_stat_get_xact_function_calls('absurd._host_task_ended'::regproc), 0)";
        sqlx::query("set local track_functions = 'all'")
            .execute(&mut *tx)
            .await
            .unwrap();
        let before: i64 = sqlx::query_scalar(calls).fetch_one(&mut *tx).await.unwrap();
        let claimed: uuid::Uuid = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select run_id from absurd.lease_{q}('w', 30, 1)"
        )))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(claimed, child.run_id);
        let n: i64 = sqlx::query_scalar(calls).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(n - before, 0, "{q}: a claim ends no task");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "select * from absurd.done_{q}(array[$1::uuid], array['{{\"ok\": 1}}'::jsonb])"
        )))
        .bind(child.run_id)
        .execute(&mut *tx)
        .await
        .unwrap();
        let n: i64 = sqlx::query_scalar(calls).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(n - before, 1, "{q}: the completion ends one task");
        tx.commit().await.unwrap();

        // The parent was woken with the outcome, which a replay of the wait returns.
        let (woken, _) = claim_one(&c, q, "w").await;
        assert_eq!(woken, p_run, "{q}");
        let (suspend, outcome) = c
            .await_task_result_bounded(
                q,
                parent.task_id,
                p_run,
                "wait",
                q,
                child.task_id,
                None,
                1 << 20,
            )
            .await
            .unwrap();
        assert!(!suspend);
        assert_eq!(
            outcome.unwrap(),
            Some(json!({"state": "completed", "result": {"ok": 1}}))
        );

        // Any of two tasks: the one that fails first answers, with its failure.
        let once = SpawnOptions {
            max_attempts: Some(1),
            ..Default::default()
        };
        let a = c
            .spawn_child(q, "a", &json!({}), &once, q, parent.task_id)
            .await
            .unwrap();
        let b = c
            .spawn_child(q, "b", &json!({}), &once, q, parent.task_id)
            .await
            .unwrap();
        let both = [(q.to_string(), a.task_id), (q.to_string(), b.task_id)];
        let (suspend, _) = c
            .await_any_task_result_bounded(q, parent.task_id, p_run, "any", &both, None, 1 << 20)
            .await
            .unwrap();
        assert!(suspend);
        let mut runs = [claim_one(&c, q, "w").await, claim_one(&c, q, "w").await];
        runs.sort_by_key(|(_, task)| *task != b.task_id);
        c.fail_run(q, runs[0].0, &json!({"name": "Boom"}), None)
            .await
            .unwrap();
        let (woken, _) = claim_one(&c, q, "w").await;
        assert_eq!(woken, p_run, "{q}");
        let (_, answer) = c
            .await_any_task_result_bounded(q, parent.task_id, p_run, "any", &both, None, 1 << 20)
            .await
            .unwrap();
        let answer = answer.unwrap().unwrap();
        assert_eq!(answer["index"], json!(1), "{q}: {answer}");
        assert_eq!(answer["state"], json!("failed"), "{q}: {answer}");
        assert_eq!(answer["failure"]["name"], json!("Boom"), "{q}: {answer}");

        // Cancelling the parent cancels its child that is still running.
        c.cancel_task(q, parent.task_id).await.unwrap();
        let state = c
            .get_task(q, a.task_id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .state;
        assert_eq!(state, State::Cancelled, "{q}");
    }

    // A queue that still has 0019's statement trigger gets the row trigger instead.
    sqlx::raw_sql(
        "drop trigger absurd_task_ended on absurd.t_eq; \
         create trigger absurd_task_done after update on absurd.t_eq \
           referencing new table as done_new for each statement \
           execute function absurd._host_task_done('eq'); \
         select absurd._host_install_task_done_trigger('eq');",
    )
    .execute(c.pool())
    .await
    .unwrap();
    assert_eq!(task_triggers(&c, "eq").await, vec!["absurd_task_ended"]);
}

#[tokio::test]
async fn single_run_claim_takes_the_oldest_ready_run_of_either_state() {
    // lease_ with qty 1 runs plain statements (migration 0012); it must choose as the batch
    // statement does: oldest available_at first over pending and sleeping runs, due ones only.
    let db = TestDb::migrated().await;
    let c = frozen_client(&db, t0()).await;
    let s1 = c
        .spawn(Q, "t", &json!({"s": 1}), &no_backoff(3))
        .await
        .unwrap();
    let far = c
        .spawn(Q, "t", &json!({"far": 1}), &no_backoff(3))
        .await
        .unwrap();
    let got = c.claim_fast(Q, "w", 30, 2).await.unwrap();
    assert_eq!(got.len(), 2);
    // s1 sleeps until +5 s, `far` until +100 s.
    c.schedule_run(Q, s1.run_id, t0() + chrono::TimeDelta::seconds(5))
        .await
        .unwrap();
    c.schedule_run(Q, far.run_id, t0() + chrono::TimeDelta::seconds(100))
        .await
        .unwrap();
    set_now(&c, t0() + chrono::TimeDelta::seconds(10)).await;
    let p1 = c
        .spawn(Q, "t", &json!({"p": 1}), &no_backoff(3))
        .await
        .unwrap();

    let (first, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(first.run_id, s1.run_id, "the sleeping run is older");
    let (second, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(second.run_id, p1.run_id);
    assert!(
        c.claim_fast(Q, "w", 30, 1).await.unwrap().is_empty(),
        "a sleeping run that is not due stays"
    );
    // The same through claim_task (which calls lease_), the 0.5.1 columns.
    set_now(&c, t0() + chrono::TimeDelta::seconds(100)).await;
    let viaface = c.claim(Q, "w", 30, 1).await.unwrap();
    assert_eq!(viaface.len(), 1);
    assert_eq!(viaface[0].run_id, far.run_id);
    assert_eq!(viaface[0].params, json!({"far": 1}));
    let task = c.get_task(Q, far.task_id).await.unwrap().unwrap();
    assert_eq!(task.summary.state, State::Running);
    assert_eq!(
        task.runs[0].claim_expires_at,
        Some(t0() + chrono::TimeDelta::seconds(130))
    );
}

/// Spawns tasks at the client's frozen instant until their run ids (random within one
/// millisecond on a server without a monotonic `uuidv7()`) are not in spawn order, so the
/// index order of runs with one `available_at` (the order they were written) and the claim
/// order (`available_at`, then `run_id`) differ. Returns them in spawn order.
async fn spawn_with_tied_ids(c: &Client) -> Vec<absurd_client::Spawned> {
    let mut spawned: Vec<absurd_client::Spawned> = Vec::new();
    while spawned.len() < 4 || spawned.windows(2).all(|w| w[0].run_id < w[1].run_id) {
        assert!(
            spawned.len() < 32,
            "32 run ids made at one instant came out in spawn order"
        );
        let i = spawned.len();
        spawned.push(
            c.spawn(Q, "t", &json!({"i": i}), &no_backoff(3))
                .await
                .unwrap(),
        );
    }
    spawned
}

#[tokio::test]
async fn single_run_claims_break_available_at_ties_by_run_id() {
    // Migration 0024's single-run claim takes the first lockable run in index order and sorts
    // only when another run shares its available_at: the order must still be
    // (available_at, run_id), through lease_ and through next_, for pending runs ...
    let db = TestDb::migrated().await;
    let c = frozen_client(&db, t0()).await;
    let spawned = spawn_with_tied_ids(&c).await;
    let mut by_id: Vec<_> = spawned.iter().map(|s| s.run_id).collect();
    by_id.sort();
    let (first, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
    let mut claimed = vec![first.run_id];
    while claimed.len() < by_id.len() {
        let last = *claimed.last().unwrap();
        let (states, next) = c
            .complete_and_claim(Q, &[last], &[json!(null)], "w", 30, 1)
            .await
            .unwrap();
        assert_eq!(state_of(&states, last), "completed");
        assert_eq!(next.len(), 1, "one run claimed per run completed");
        claimed.push(next[0].0.run_id);
    }
    assert_eq!(claimed, by_id, "claimed in run id order");

    // ... and for sleeping ones that wake at one instant (scheduled in spawn order).
    let spawned = spawn_with_tied_ids(&c).await;
    let got = c.claim_fast(Q, "w", 30, 100).await.unwrap();
    assert_eq!(got.len(), spawned.len());
    for s in &spawned {
        c.schedule_run(Q, s.run_id, t0() + chrono::TimeDelta::seconds(5))
            .await
            .unwrap();
    }
    set_now(&c, t0() + chrono::TimeDelta::seconds(10)).await;
    let mut by_id: Vec<_> = spawned.iter().map(|s| s.run_id).collect();
    by_id.sort();
    let mut woke = Vec::new();
    for _ in 0..spawned.len() {
        let (run, _) = c.claim_fast(Q, "w", 30, 1).await.unwrap().remove(0);
        woke.push(run.run_id);
    }
    assert_eq!(woke, by_id, "woken in run id order");
    assert!(c.claim_fast(Q, "w", 30, 1).await.unwrap().is_empty());
}

#[tokio::test]
async fn queues_made_before_0024_get_the_cheap_state_checks() {
    // The schema up to migration 23, a queue of each storage mode with a task, then 0024.
    let db = TestDb::empty().await;
    let full = absurd_client::db::migrator();
    let mut before = absurd_client::db::migrator();
    before.migrations =
        std::borrow::Cow::Owned(full.iter().filter(|m| m.version < 24).cloned().collect());
    before.run(&db.pool).await.unwrap();
    let c = Client::new(db.pool.clone());
    c.create_queue("plain").await.unwrap();
    c.create_queue_with_mode(
        "parted",
        absurd_client::partitions::StorageMode::Partitioned,
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for q in ["plain", "parted"] {
        tasks.push(c.spawn(q, "t", &json!({}), &no_backoff(3)).await.unwrap());
        assert!(state_check(&db, &format!("t_{q}"))
            .await
            .contains("ARRAY['pending'::text"));
    }
    absurd_client::db::migrate(&db.pool).await.unwrap();
    c.create_queue("fresh").await.unwrap();

    for q in ["plain", "parted", "fresh"] {
        for table in [format!("t_{q}"), format!("r_{q}")] {
            assert_eq!(
                state_check(&db, &table).await,
                "CHECK (absurd._host_valid_state(state))",
                "{table}"
            );
            // Still a check: a state outside the six is refused, naming the constraint.
            let err = sqlx::query(sqlx::AssertSqlSafe(format!(
                "update absurd.{table} set state = 'paused'"
            )))
            .execute(&db.pool)
            .await;
            let e = match (q, err) {
                ("fresh", Ok(r)) => {
                    assert_eq!(r.rows_affected(), 0, "{table} is empty");
                    continue;
                }
                (_, Err(e)) => e,
                (_, Ok(_)) => panic!("{table} took the state 'paused'"),
            };
            let e = e.as_database_error().unwrap();
            assert_eq!(e.code().as_deref(), Some("23514"), "{e}");
            assert_eq!(
                e.constraint(),
                Some(format!("{table}_state_check").as_str())
            );
        }
    }
    // The partitions of the partitioned queue follow their parents.
    let children: Vec<String> = sqlx::query_scalar(
        "select distinct pg_get_constraintdef(k.oid) from pg_inherits i \
         join pg_constraint k on k.conrelid = i.inhrelid and k.contype = 'c' \
         where i.inhparent in ('absurd.t_parted'::regclass, 'absurd.r_parted'::regclass)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(children, ["CHECK (absurd._host_valid_state(state))"]);

    // The queues made before work on: their tasks are claimed and completed.
    for (q, t) in ["plain", "parted"].into_iter().zip(&tasks) {
        let (run, _) = c.claim_fast(q, "w", 30, 1).await.unwrap().remove(0);
        assert_eq!(run.run_id, t.run_id);
        let (states, next) = c
            .complete_and_claim(q, &[run.run_id], &[json!({"ok": q})], "w", 30, 1)
            .await
            .unwrap();
        assert_eq!(state_of(&states, run.run_id), "completed");
        assert!(next.is_empty());
        let r = c.task_result(q, t.task_id).await.unwrap().unwrap();
        assert_eq!(r.state, State::Completed);
        assert_eq!(r.result, Some(json!({"ok": q})));
    }
}

/// The definition of the state check of `absurd.<table>`.
async fn state_check(db: &TestDb, table: &str) -> String {
    sqlx::query_scalar(
        "select pg_get_constraintdef(k.oid) from pg_constraint k \
         where k.conrelid = to_regclass(format('absurd.%I', $1::text)) and k.contype = 'c'",
    )
    .bind(table)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

// ---- migration 0013: failing in one call ------------------------------------------------

#[tokio::test]
async fn fail_run_outcome_says_what_the_failure_did() {
    let (_db, c) = setup(Q).await;
    assert!(c.has_fail_outcome().await.unwrap());
    let retried = c
        .spawn(Q, "t", &json!({"k": "r"}), &no_backoff(3))
        .await
        .unwrap();
    let last = c
        .spawn(Q, "t", &json!({"k": "l"}), &no_backoff(1))
        .await
        .unwrap();
    let permanent = c
        .spawn(Q, "t", &json!({"k": "p"}), &no_backoff(3))
        .await
        .unwrap();
    assert_eq!(c.claim_fast(Q, "w-f", 30, 3).await.unwrap().len(), 3);

    // A retry is scheduled: the task is pending again.
    let o = c
        .fail_run_outcome(Q, retried.run_id, &json!({"name": "E"}), false)
        .await
        .unwrap();
    assert_eq!(o.task_state, State::Pending);
    assert_eq!(o.failed_task, None);

    // The last attempt: failed for good, with what a dead-letter copy needs.
    let o = c
        .fail_run_outcome(Q, last.run_id, &json!({"name": "E", "message": "m"}), false)
        .await
        .unwrap();
    assert_eq!(o.task_state, State::Failed);
    let dead = o
        .failed_task
        .expect("a failed task comes back with its dead-letter row");
    assert_eq!(dead.task_id, last.task_id);
    assert_eq!(dead.run_id, last.run_id);
    assert_eq!(dead.task_name, "t");
    assert_eq!(dead.params, Some(json!({"k": "l"})));
    assert_eq!(dead.attempts, 1);
    assert_eq!(
        dead.failure_reason,
        Some(json!({"name": "E", "message": "m"}))
    );
    assert_eq!(dead.claimed_by.as_deref(), Some("w-f"));

    // Permanent: attempt 1 of 3 is the last; max_attempts is lowered in the same call.
    let o = c
        .fail_run_outcome(Q, permanent.run_id, &json!({"name": "P"}), true)
        .await
        .unwrap();
    assert_eq!(o.task_state, State::Failed);
    let t = c.get_task(Q, permanent.task_id).await.unwrap().unwrap();
    assert_eq!(t.summary.max_attempts, Some(1));
    assert_eq!(t.runs.len(), 1);
}

#[tokio::test]
async fn fail_run_outcome_is_fenced_and_changes_nothing_when_refused() {
    let (_db, c) = setup(Q).await;
    let stale = c.spawn(Q, "t", &json!({}), &no_backoff(3)).await.unwrap();
    let cancelled = c.spawn(Q, "t", &json!({}), &no_backoff(3)).await.unwrap();
    assert_eq!(c.claim_fast(Q, "w", 30, 2).await.unwrap().len(), 2);
    // The stale run already failed (as a lease sweep would have failed it); a late permanent
    // failure of it is AB002 and leaves the task's max_attempts and its retry alone.
    c.fail_run(Q, stale.run_id, &json!({"name": "swept"}), None)
        .await
        .unwrap();
    let e = c
        .fail_run_outcome(Q, stale.run_id, &json!({"name": "late"}), true)
        .await
        .unwrap_err();
    assert!(matches!(e, absurd_client::ClientError::RunFailed(_)), "{e}");
    let t = c.get_task(Q, stale.task_id).await.unwrap().unwrap();
    assert_eq!(t.summary.max_attempts, Some(3));
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.runs[0].failure_reason, Some(json!({"name": "swept"})));

    c.cancel_task(Q, cancelled.task_id).await.unwrap();
    let e = c
        .fail_run_outcome(Q, cancelled.run_id, &json!({"name": "x"}), true)
        .await
        .unwrap_err();
    assert!(matches!(e, absurd_client::ClientError::Cancelled), "{e}");
    let t = c.get_task(Q, cancelled.task_id).await.unwrap().unwrap();
    assert_eq!(t.summary.state, State::Cancelled);
    assert_eq!(t.summary.max_attempts, Some(3));

    let unknown = uuid::Uuid::now_v7();
    let e = c
        .fail_run_outcome(Q, unknown, &json!({"name": "x"}), true)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Run \"{unknown}\" cannot be failed in queue \"{Q}\"")
    );
}
