//! The Absurd 0.5.1 task/run state machine (spec §1.6, details in §5), driven through
//! [`absurd_client::Client`].
//!
//! Every scenario runs twice, each time on its own fresh database: once on the schema made by
//! our migrations (`*_ours`) and once on the upstream schema installed by the real
//! `absurdctl init` (`*_upstream`), so both implementations are held to the same behaviour.
//!
//! The scenarios on our schema run once more on a partitioned queue (`*_partitioned`: every
//! queue a scenario makes is created with storage mode `partitioned`, spec §5.13), so both
//! storage modes are held to the same state machine.
//!
//! Most scenarios freeze the database clock with `absurd.fake_now` (on a one-connection pool,
//! so the session setting sticks) and compare timestamps to the microsecond; the ones that
//! need the real clock (lease expiry, the plain happy path) poll with generous deadlines.

mod common;

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use absurd_client::partitions::StorageMode;
use absurd_client::{
    AwaitOutcome, Cancellation, Client, ClientError, RetryOptions, RetryStrategy, RunInfo,
    SpawnOptions, State, TaskDetails, TaskFilter,
};
use chrono::{DateTime, TimeDelta, Utc};
use common::TestDb;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::Row;
use uuid::Uuid;

/// The queue every scenario works in.
const Q: &str = "sm";

/// Upper bound for one whole scenario, so a hang fails the test instead of blocking the run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

// ---- fixtures --------------------------------------------------------------------------

async fn run_scenario<F, Fut>(db: TestDb, scenario: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = TestDb>,
{
    let db = tokio::time::timeout(SCENARIO_LIMIT, scenario(db))
        .await
        .expect("scenario took longer than its time limit");
    drop(db);
}

tokio::task_local! {
    /// The storage mode of the queues the running scenario creates (see [`make_queue`]).
    static MODE: StorageMode;
}

/// Creates `queue` in the storage mode of the running scenario (unpartitioned outside one).
async fn make_queue(c: &Client, queue: &str) {
    let mode = MODE.try_with(|m| *m).unwrap_or(StorageMode::Unpartitioned);
    c.create_queue_with_mode(queue, mode)
        .await
        .unwrap_or_else(|e| panic!("create {} queue {queue}: {e}", mode.as_str()));
}

/// Declares `$ours` / `$upstream` tests running `$scenario` on a migrated / upstream database,
/// and `$partitioned` running it on a migrated database with partitioned queues.
macro_rules! both_schemas {
    ($scenario:ident => $ours:ident, $upstream:ident, $partitioned:ident) => {
        #[tokio::test]
        async fn $ours() {
            run_scenario(TestDb::migrated().await, |db| async move {
                $scenario(&db).await;
                db
            })
            .await;
        }

        #[tokio::test]
        async fn $upstream() {
            run_scenario(TestDb::upstream().await, |db| async move {
                $scenario(&db).await;
                db
            })
            .await;
        }

        #[tokio::test]
        async fn $partitioned() {
            run_scenario(TestDb::migrated().await, |db| async move {
                MODE.scope(StorageMode::Partitioned, $scenario(&db)).await;
                db
            })
            .await;
        }
    };
}

both_schemas!(scenario_complete => complete_ours, complete_upstream, complete_partitioned);
both_schemas!(scenario_retry_backoff => retry_backoff_ours, retry_backoff_upstream, retry_backoff_partitioned);
both_schemas!(scenario_lease_expiry => lease_expiry_ours, lease_expiry_upstream, lease_expiry_partitioned);
both_schemas!(scenario_lease_expiry_fake_clock => lease_expiry_fake_clock_ours, lease_expiry_fake_clock_upstream, lease_expiry_fake_clock_partitioned);
both_schemas!(scenario_sleep => sleep_ours, sleep_upstream, sleep_partitioned);
both_schemas!(scenario_sleep_real_clock => sleep_real_clock_ours, sleep_real_clock_upstream, sleep_real_clock_partitioned);
both_schemas!(scenario_events => events_ours, events_upstream, events_partitioned);
both_schemas!(scenario_event_timeout => event_timeout_ours, event_timeout_upstream, event_timeout_partitioned);
both_schemas!(scenario_cancel => cancel_ours, cancel_upstream, cancel_partitioned);
both_schemas!(scenario_retry_task => retry_task_ours, retry_task_upstream, retry_task_partitioned);
both_schemas!(scenario_idempotent_spawn => idempotent_spawn_ours, idempotent_spawn_upstream, idempotent_spawn_partitioned);
both_schemas!(scenario_cleanup => cleanup_ours, cleanup_upstream, cleanup_partitioned);
both_schemas!(scenario_checkpoints => checkpoints_ours, checkpoints_upstream, checkpoints_partitioned);
both_schemas!(scenario_cancellation_policy => cancellation_policy_ours, cancellation_policy_upstream, cancellation_policy_partitioned);
both_schemas!(scenario_invalid_spawn => invalid_spawn_ours, invalid_spawn_upstream, invalid_spawn_partitioned);
both_schemas!(scenario_list_tasks => list_tasks_ours, list_tasks_upstream, list_tasks_partitioned);

/// A client on the test database's shared pool (real clock).
async fn real_client(db: &TestDb) -> Client {
    let c = Client::new(db.pool.clone());
    make_queue(&c, Q).await;
    c
}

/// A client on a one-connection pool whose session clock is frozen at `at`.
async fn fake_client(db: &TestDb, at: DateTime<Utc>) -> Client {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&db.url)
        .await
        .expect("connect the fake-clock pool");
    let c = Client::new(pool);
    set_now(&c, at).await;
    make_queue(&c, Q).await;
    c
}

/// Moves the frozen clock of a [`fake_client`] and checks `absurd.current_time()` follows.
async fn set_now(c: &Client, at: DateTime<Utc>) {
    sqlx::query("select set_config('absurd.fake_now', $1, false)")
        .bind(at.to_rfc3339())
        .execute(c.pool())
        .await
        .expect("set absurd.fake_now");
    assert_eq!(
        db_now(c).await,
        at,
        "absurd.current_time() must return absurd.fake_now"
    );
}

async fn db_now(c: &Client) -> DateTime<Utc> {
    sqlx::query_scalar("select absurd.current_time()")
        .fetch_one(c.pool())
        .await
        .expect("absurd.current_time()")
}

/// 2024-03-01T08:00:00Z, the start of every fake-clock scenario.
fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-03-01T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn millis(ms: i64) -> TimeDelta {
    TimeDelta::milliseconds(ms)
}

async fn task(c: &Client, task_id: Uuid) -> TaskDetails {
    c.get_task(Q, task_id)
        .await
        .expect("get_task")
        .unwrap_or_else(|| panic!("task {task_id} not found"))
}

fn run_of(t: &TaskDetails, attempt: i32) -> &RunInfo {
    t.runs
        .iter()
        .find(|r| r.attempt == attempt)
        .unwrap_or_else(|| panic!("task has no run with attempt {attempt}: {:#?}", t.runs))
}

fn opts(max_attempts: i32, retry: RetryStrategy) -> SpawnOptions {
    SpawnOptions {
        max_attempts: Some(max_attempts),
        retry_strategy: Some(retry),
        ..Default::default()
    }
}

/// Claims exactly one run and checks it is `run_id`.
async fn claim_one(
    c: &Client,
    worker: &str,
    timeout: i32,
    run_id: Uuid,
) -> absurd_client::ClaimedRun {
    let mut rows = c.claim(Q, worker, timeout, 1).await.expect("claim_task");
    assert_eq!(
        rows.len(),
        1,
        "expected to claim run {run_id}, got {rows:#?}"
    );
    let row = rows.pop().unwrap();
    assert_eq!(row.run_id, run_id, "claimed the wrong run");
    row
}

async fn assert_nothing_claimable(c: &Client, context: &str) {
    let rows = c.claim(Q, "probe", 30, 10).await.expect("claim_task");
    assert!(
        rows.is_empty(),
        "{context}: nothing should be claimable, got {rows:#?}"
    );
}

fn expect_rejected<T: Debug>(r: Result<T, ClientError>, needle: &str) {
    match r {
        Err(ClientError::Rejected(msg)) if msg.contains(needle) => {}
        other => panic!("expected ClientError::Rejected containing {needle:?}, got {other:?}"),
    }
}

fn expect_cancelled<T: Debug>(r: Result<T, ClientError>, what: &str) {
    match r {
        Err(ClientError::Cancelled) => {}
        other => panic!("{what}: expected ClientError::Cancelled (AB001), got {other:?}"),
    }
}

fn expect_run_failed<T: Debug>(r: Result<T, ClientError>, what: &str) {
    match r {
        Err(ClientError::RunFailed(msg)) if msg.contains("has already failed") => {}
        other => panic!("{what}: expected ClientError::RunFailed (AB002), got {other:?}"),
    }
}

fn expect_invalid_retry<T: Debug>(r: Result<T, ClientError>, needle: &str) {
    match r {
        Err(ClientError::InvalidRetryStrategy(msg)) if msg.contains(needle) => {}
        other => panic!(
            "expected ClientError::InvalidRetryStrategy containing {needle:?}, got {other:?}"
        ),
    }
}

/// Polls `cond` every 100 ms until it returns `Some`, failing after `limit`.
async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stored event row `(payload, emitted_at)`, read from `e_<queue>` directly.
async fn event_row(c: &Client, event: &str) -> Option<(Option<Value>, DateTime<Utc>)> {
    sqlx::query(r#"select payload, emitted_at from absurd."e_sm" where event_name = $1"#)
        .bind(event)
        .fetch_optional(c.pool())
        .await
        .expect("read e_sm")
        .map(|r| (r.get("payload"), r.get("emitted_at")))
}

async fn count_rows(c: &Client, prefix: &str, task_id: Uuid) -> i64 {
    let sql = format!(r#"select count(*) from absurd."{prefix}_sm" where task_id = $1"#);
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(task_id)
        .fetch_one(c.pool())
        .await
        .expect("count rows")
}

// ---- 1. spawn → claim → complete ---------------------------------------------------------

async fn scenario_complete(db: &TestDb) {
    let c = real_client(db).await;
    let params = json!({"a": 1, "b": 2});
    let s = c
        .spawn(
            Q,
            "add",
            &params,
            &SpawnOptions {
                headers: Some(json!({"trace": "t-1"})),
                ..Default::default()
            },
        )
        .await
        .expect("spawn");
    assert!(s.created);
    assert_eq!(s.attempt, 1);

    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.summary.attempts, 1);
    assert_eq!(t.summary.max_attempts, None);
    assert_eq!(t.summary.last_attempt_run, Some(s.run_id));
    assert_eq!(t.summary.first_started_at, None);
    assert_eq!(t.params, params);
    assert_eq!(t.headers, Some(json!({"trace": "t-1"})));
    assert_eq!(t.runs.len(), 1);
    let r = &t.runs[0];
    assert_eq!(
        (r.run_id, r.attempt, r.state),
        (s.run_id, 1, State::Pending)
    );
    assert_eq!(r.claimed_by, None);
    assert_eq!(r.claim_expires_at, None);
    assert_eq!(
        r.available_at,
        Some(t.summary.enqueue_at),
        "run 1 is available at enqueue time"
    );

    let res = c
        .task_result(Q, s.task_id)
        .await
        .unwrap()
        .expect("task result row");
    assert_eq!(res.state, State::Pending);
    assert_eq!((res.result, res.failure_reason), (None, None));

    let before = db_now(&c).await;
    let claimed = claim_one(&c, "worker-1", 30, s.run_id).await;
    let after = db_now(&c).await;
    assert_eq!(claimed.task_id, s.task_id);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.task_name, "add");
    assert_eq!(claimed.params, params);
    assert_eq!(claimed.headers, Some(json!({"trace": "t-1"})));
    assert_eq!(claimed.max_attempts, None);
    assert_eq!((claimed.wake_event, claimed.event_payload), (None, None));

    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Running);
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Running);
    assert_eq!(r.claimed_by.as_deref(), Some("worker-1"));
    let started = r.started_at.expect("started_at set by the claim");
    assert!(
        before <= started && started <= after,
        "started_at {started} not within the claim call"
    );
    assert_eq!(
        r.claim_expires_at,
        Some(started + secs(30)),
        "claim_expires_at = now + timeout"
    );
    assert_eq!(r.available_at, Some(started));
    assert_eq!(t.summary.first_started_at, Some(started));
    assert_nothing_claimable(&c, "while the only run is leased").await;

    c.complete_run(Q, s.run_id, &json!({"sum": 3}))
        .await
        .expect("complete_run");
    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Completed);
    assert_eq!(t.completed_payload, Some(json!({"sum": 3})));
    assert_eq!(t.summary.last_attempt_run, Some(s.run_id));
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Completed);
    assert_eq!(r.result, Some(json!({"sum": 3})));
    assert!(r.completed_at.unwrap() >= started);
    // complete_run keeps the lease history.
    assert_eq!(r.claimed_by.as_deref(), Some("worker-1"));
    assert_eq!(r.claim_expires_at, Some(started + secs(30)));

    let res = c.task_result(Q, s.task_id).await.unwrap().unwrap();
    assert_eq!(res.state, State::Completed);
    assert_eq!(res.result, Some(json!({"sum": 3})));
    assert_eq!(res.failure_reason, None);
    let awaited = c
        .await_result(Q, s.task_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(awaited, res);
    assert_eq!(
        c.task_result(Q, Uuid::now_v7()).await.unwrap(),
        None,
        "unknown task → no row"
    );

    // A terminal run cannot be completed again (plain error, no AB code).
    expect_rejected(
        c.complete_run(Q, s.run_id, &json!(1)).await,
        "is not currently running",
    );
    expect_rejected(
        c.complete_run(Q, Uuid::now_v7(), &json!(1)).await,
        "not found",
    );
    assert_nothing_claimable(&c, "after completion").await;
}

// ---- 2. fail → retry with backoff → failed at max_attempts -----------------------------

/// Claims the run of `attempt`, fails it `fail_after` later and returns the failure time.
async fn claim_and_fail(
    c: &Client,
    task_id: Uuid,
    attempt: i32,
    claim_at: DateTime<Utc>,
    fail_after: TimeDelta,
) -> DateTime<Utc> {
    set_now(c, claim_at).await;
    let t = task(c, task_id).await;
    let run_id = run_of(&t, attempt).run_id;
    claim_one(c, "w", 30, run_id).await;
    let failed_at = claim_at + fail_after;
    set_now(c, failed_at).await;
    let reason =
        json!({"name": "Boom", "message": format!("attempt {attempt}"), "traceback": null});
    c.fail_run(Q, run_id, &reason, None)
        .await
        .expect("fail_run");
    let t = task(c, task_id).await;
    let r = run_of(&t, attempt);
    assert_eq!(r.state, State::Failed);
    assert_eq!(r.failed_at, Some(failed_at));
    assert_eq!(
        r.failure_reason,
        Some(reason),
        "failure_reason is stored verbatim"
    );
    assert_eq!(
        r.claimed_by.as_deref(),
        Some("w"),
        "fail_run keeps claimed_by"
    );
    failed_at
}

/// After the failure of `attempt`, the next run must sleep until exactly `failed_at + delay`,
/// not be claimable a millisecond earlier, and be claimable then. Returns the wake time.
async fn expect_delayed_retry(
    c: &Client,
    task_id: Uuid,
    attempt: i32,
    failed_at: DateTime<Utc>,
    delay: i64,
) -> DateTime<Utc> {
    let t = task(c, task_id).await;
    let next = run_of(&t, attempt + 1);
    let wake = failed_at + secs(delay);
    assert_eq!(
        next.state,
        State::Sleeping,
        "a delayed retry run is sleeping"
    );
    assert_eq!(
        next.available_at,
        Some(wake),
        "retry run available at failed_at + {delay}s"
    );
    assert_eq!(next.claimed_by, None);
    assert_eq!(t.summary.state, State::Sleeping);
    assert_eq!(t.summary.attempts, attempt + 1);
    assert_eq!(t.summary.last_attempt_run, Some(next.run_id));
    set_now(c, wake - millis(1)).await;
    assert_nothing_claimable(c, "just before the retry delay elapsed").await;
    wake
}

async fn scenario_retry_backoff(db: &TestDb) {
    let c = fake_client(db, t0()).await;

    // fixed: 10 s between attempts, 3 attempts in all.
    let s = c
        .spawn(Q, "flaky", &json!({}), &opts(3, RetryStrategy::fixed(10.0)))
        .await
        .unwrap();
    let f1 = claim_and_fail(&c, s.task_id, 1, t0(), secs(1)).await;
    let w2 = expect_delayed_retry(&c, s.task_id, 1, f1, 10).await;
    let f2 = claim_and_fail(&c, s.task_id, 2, w2, secs(2)).await;
    let w3 = expect_delayed_retry(&c, s.task_id, 2, f2, 10).await;
    let f3 = claim_and_fail(&c, s.task_id, 3, w3, secs(3)).await;
    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Failed, "attempts exhausted");
    assert_eq!(t.runs.len(), 3, "no run after the last attempt");
    assert_eq!(t.summary.attempts, 3);
    let last = run_of(&t, 3);
    assert_eq!(t.summary.last_attempt_run, Some(last.run_id));
    assert_eq!(last.failed_at, Some(f3));
    let res = c.task_result(Q, s.task_id).await.unwrap().unwrap();
    assert_eq!(res.state, State::Failed);
    assert_eq!(res.result, None);
    assert_eq!(
        res.failure_reason, last.failure_reason,
        "failure_reason of the last run"
    );
    assert_eq!(
        res.failure_reason.as_ref().unwrap()["message"],
        json!("attempt 3")
    );
    set_now(&c, f3 + secs(3600)).await;
    assert_nothing_claimable(&c, "after the task failed").await;
    expect_run_failed(
        c.fail_run(Q, last.run_id, &json!({}), None).await,
        "fail_run of a failed run",
    );
    expect_run_failed(
        c.complete_run(Q, last.run_id, &json!(null)).await,
        "complete_run of a failed run",
    );

    // exponential: base 2, factor 3, max 10 → 2 s, 6 s, 10 s (capped); 4 attempts.
    let start = f3 + secs(7200);
    set_now(&c, start).await;
    let s = c
        .spawn(
            Q,
            "flaky-exp",
            &json!({}),
            &opts(4, RetryStrategy::exponential(2.0, 3.0, 10.0)),
        )
        .await
        .unwrap();
    let f1 = claim_and_fail(&c, s.task_id, 1, start, secs(1)).await;
    let w2 = expect_delayed_retry(&c, s.task_id, 1, f1, 2).await;
    let f2 = claim_and_fail(&c, s.task_id, 2, w2, secs(1)).await;
    let w3 = expect_delayed_retry(&c, s.task_id, 2, f2, 6).await;
    let f3 = claim_and_fail(&c, s.task_id, 3, w3, secs(1)).await;
    let w4 = expect_delayed_retry(&c, s.task_id, 3, f3, 10).await;
    claim_and_fail(&c, s.task_id, 4, w4, secs(1)).await;
    let t = task(&c, s.task_id).await;
    assert_eq!(
        (t.summary.state, t.summary.attempts, t.runs.len()),
        (State::Failed, 4, 4)
    );

    // kind none: the retry is immediate (pending, available at the failure time).
    let start = w4 + secs(3600);
    set_now(&c, start).await;
    let s = c
        .spawn(Q, "flaky-none", &json!({}), &opts(2, RetryStrategy::none()))
        .await
        .unwrap();
    let f1 = claim_and_fail(&c, s.task_id, 1, start, secs(1)).await;
    let t = task(&c, s.task_id).await;
    let r2 = run_of(&t, 2);
    assert_eq!(r2.state, State::Pending, "kind none retries immediately");
    assert_eq!(r2.available_at, Some(f1));
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.summary.attempts, 2);
    let r2_id = r2.run_id;
    claim_one(&c, "w", 30, r2_id).await;
    c.fail_run(Q, r2_id, &json!({"name": "Boom"}), None)
        .await
        .unwrap();
    let t = task(&c, s.task_id).await;
    assert_eq!((t.summary.state, t.runs.len()), (State::Failed, 2));

    // No retry strategy at all behaves like "none"; p_retry_at overrides the computed time,
    // and a retry time in the past is raised to now.
    let start = f1 + secs(3600);
    set_now(&c, start).await;
    let s = c
        .spawn(
            Q,
            "override",
            &json!({}),
            &opts(3, RetryStrategy::fixed(10.0)),
        )
        .await
        .unwrap();
    claim_one(&c, "w", 30, s.run_id).await;
    c.fail_run(Q, s.run_id, &json!({"n": 1}), Some(start + secs(100)))
        .await
        .unwrap();
    let t = task(&c, s.task_id).await;
    let r2 = run_of(&t, 2);
    assert_eq!(
        (r2.state, r2.available_at),
        (State::Sleeping, Some(start + secs(100)))
    );
    let r2_id = r2.run_id;
    set_now(&c, start + secs(100)).await;
    claim_one(&c, "w", 30, r2_id).await;
    c.fail_run(Q, r2_id, &json!({"n": 2}), Some(start - secs(100)))
        .await
        .unwrap();
    let t = task(&c, s.task_id).await;
    let r3 = run_of(&t, 3);
    assert_eq!(
        r3.state,
        State::Pending,
        "a retry time in the past means retry now"
    );
    assert_eq!(r3.available_at, Some(start + secs(100)));
    assert_eq!(t.summary.state, State::Pending);
}

// ---- 3. lease expiry → $ClaimTimeout -----------------------------------------------------

async fn scenario_lease_expiry(db: &TestDb) {
    let c = real_client(db).await;
    let s = c
        .spawn(Q, "slow", &json!({}), &opts(3, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "old-worker", 1, s.run_id).await;
    let t = task(&c, s.task_id).await;
    let expires = run_of(&t, 1).claim_expires_at.expect("a 1 s lease");

    // Until some later claim_task sweeps the expired lease, the run stays running. Poll
    // claim_task (as a second worker would) until the sweep has failed run 1.
    let mut claimed_by_new = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        claimed_by_new.extend(c.claim(Q, "new-worker", 30, 1).await.expect("claim_task"));
        if run_of(&task(&c, s.task_id).await, 1).state == State::Failed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired lease was never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let t = task(&c, s.task_id).await;
    let r1 = run_of(&t, 1);
    assert_eq!(r1.claimed_by.as_deref(), Some("old-worker"), "history kept");
    assert_eq!(r1.claim_expires_at, Some(expires));
    let failed_at = r1.failed_at.expect("failed_at");
    assert!(
        failed_at >= expires,
        "swept at {failed_at}, before the lease expired at {expires}"
    );
    let reason = r1.failure_reason.clone().expect("failure_reason");
    assert_eq!(reason["name"], json!("$ClaimTimeout"));
    assert_eq!(
        reason["message"],
        json!("worker did not finish task within claim interval")
    );
    assert_eq!(reason["workerId"], json!("old-worker"));
    assert_eq!(reason["attempt"], json!(1));
    let expired_at = reason["claimExpiredAt"]
        .as_str()
        .expect("claimExpiredAt is a string");
    let expired_at = DateTime::parse_from_rfc3339(expired_at)
        .unwrap_or_else(|e| panic!("claimExpiredAt {expired_at:?} is not a timestamp: {e}"));
    assert_eq!(
        expired_at, expires,
        "claimExpiredAt = the run's claim_expires_at"
    );
    assert_eq!(
        reason.as_object().unwrap().len(),
        5,
        "exactly the five documented keys: {reason}"
    );

    // The timeout consumed an attempt: run 2 exists (claimed already, or claimable now).
    let r2 = run_of(&t, 2);
    assert!(
        claimed_by_new.iter().all(|r| r.run_id == r2.run_id),
        "{claimed_by_new:#?}"
    );
    assert_eq!(t.summary.attempts, 2);
    assert_eq!(t.summary.last_attempt_run, Some(r2.run_id));
    assert_ne!(t.summary.state, State::Failed);
    let r2_id = r2.run_id;
    if claimed_by_new.is_empty() {
        poll_until(Duration::from_secs(10), "run 2 to be claimable", || {
            let c = c.clone();
            async move {
                let rows = c.claim(Q, "new-worker", 30, 1).await.expect("claim_task");
                rows.into_iter().next()
            }
        })
        .await;
    }
    let t = task(&c, s.task_id).await;
    assert_eq!(run_of(&t, 2).state, State::Running);
    assert_eq!(run_of(&t, 2).claimed_by.as_deref(), Some("new-worker"));

    // The stale worker learns it lost the run on its next write.
    expect_run_failed(
        c.complete_run(Q, s.run_id, &json!("late")).await,
        "complete_run of the expired run",
    );
    expect_run_failed(
        c.extend_claim(Q, s.run_id, 30).await,
        "extend_claim of the expired run",
    );
    expect_run_failed(
        c.set_checkpoint(Q, s.task_id, "step", &json!(1), s.run_id, Some(30))
            .await,
        "set_checkpoint by the expired run",
    );
    expect_run_failed(
        c.fail_run(Q, s.run_id, &json!({}), None).await,
        "fail_run of the expired run",
    );
    assert_eq!(
        c.get_checkpoint(Q, s.task_id, "step").await.unwrap(),
        None,
        "nothing written"
    );

    c.complete_run(Q, r2_id, &json!("ok"))
        .await
        .expect("complete attempt 2");
    let res = c.task_result(Q, s.task_id).await.unwrap().unwrap();
    assert_eq!(
        (res.state, res.result),
        (State::Completed, Some(json!("ok")))
    );
}

/// With a frozen clock the sweep's retry run is available at exactly `now`, so the same
/// claim_task call that fails the expired run claims its successor (§1.4).
async fn scenario_lease_expiry_fake_clock(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let s = c
        .spawn(Q, "slow", &json!({}), &opts(2, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "old", 30, s.run_id).await;
    set_now(&c, t0() + secs(30) - millis(1)).await;
    assert_nothing_claimable(&c, "before the lease expired").await;
    c.extend_claim(Q, s.run_id, 30)
        .await
        .expect("the lease can still be extended");
    let t = task(&c, s.task_id).await;
    let expires = t0() + secs(60) - millis(1);
    assert_eq!(
        run_of(&t, 1).claim_expires_at,
        Some(expires),
        "extended from now"
    );

    set_now(&c, expires).await;
    let rows = c.claim(Q, "new", 30, 1).await.unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the sweeping call claims the retry run: {rows:#?}"
    );
    assert_eq!(rows[0].attempt, 2);
    let t = task(&c, s.task_id).await;
    let (r1, r2) = (run_of(&t, 1), run_of(&t, 2));
    assert_eq!(rows[0].run_id, r2.run_id);
    assert_eq!(r1.state, State::Failed);
    assert_eq!(
        r1.failed_at,
        Some(expires),
        "claim_expires_at <= now is expired"
    );
    let reason = r1.failure_reason.as_ref().unwrap();
    assert_eq!(reason["name"], json!("$ClaimTimeout"));
    assert_eq!(reason["workerId"], json!("old"));
    assert_eq!(reason["attempt"], json!(1));
    let at = DateTime::parse_from_rfc3339(reason["claimExpiredAt"].as_str().unwrap()).unwrap();
    assert_eq!(at, expires);
    assert_eq!(r2.state, State::Running);
    assert_eq!(r2.claimed_by.as_deref(), Some("new"));
    assert_eq!(r2.claim_expires_at, Some(expires + secs(30)));
    assert_eq!((t.summary.state, t.summary.attempts), (State::Running, 2));

    // Attempt 2 is the last one: its expiry fails the task.
    set_now(&c, expires + secs(30)).await;
    assert_nothing_claimable(&c, "after the last attempt's lease expired").await;
    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Failed);
    let res = c.task_result(Q, s.task_id).await.unwrap().unwrap();
    assert_eq!(res.failure_reason.as_ref().unwrap()["attempt"], json!(2));
    assert_eq!(
        res.failure_reason.as_ref().unwrap()["workerId"],
        json!("new")
    );
    expect_run_failed(
        c.complete_run(Q, r2.run_id, &json!(1)).await,
        "complete after expiry",
    );

    // The sweep handles at most `qty` expired runs per call, oldest lease (then run id)
    // first; an empty worker id means "worker".
    let base = expires + secs(1000);
    set_now(&c, base).await;
    let a = c
        .spawn(Q, "a", &json!({}), &opts(2, RetryStrategy::none()))
        .await
        .unwrap();
    let b = c
        .spawn(Q, "b", &json!({}), &opts(2, RetryStrategy::none()))
        .await
        .unwrap();
    let mut both: Vec<Uuid> = c
        .claim(Q, "", 10, 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id)
        .collect();
    both.sort();
    let mut expected = vec![a.run_id, b.run_id];
    expected.sort();
    assert_eq!(both, expected);
    for id in [a.task_id, b.task_id] {
        assert_eq!(
            run_of(&task(&c, id).await, 1).claimed_by.as_deref(),
            Some("worker")
        );
    }
    set_now(&c, base + secs(10)).await;
    let first = c.claim(Q, "w", 30, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].attempt, 2,
        "the retry of the swept run: {first:#?}"
    );
    let (swept, kept) = if a.run_id < b.run_id { (a, b) } else { (b, a) };
    assert_eq!(first[0].task_id, swept.task_id, "lowest run id swept first");
    assert_eq!(
        run_of(&task(&c, swept.task_id).await, 1).state,
        State::Failed
    );
    assert_eq!(
        run_of(&task(&c, kept.task_id).await, 1).state,
        State::Running,
        "only qty = 1 expired run is swept per call"
    );
    let second = c.claim(Q, "w", 30, 1).await.unwrap();
    assert_eq!(
        second
            .iter()
            .map(|r| (r.task_id, r.attempt))
            .collect::<Vec<_>>(),
        vec![(kept.task_id, 2)]
    );
    assert_eq!(
        run_of(&task(&c, kept.task_id).await, 1).state,
        State::Failed
    );
    for r in first.iter().chain(&second) {
        c.complete_run(Q, r.run_id, &json!("ok")).await.unwrap();
    }

    // A claim timeout of 0 (or negative) means no lease: it never expires.
    let free = c
        .spawn(Q, "free", &json!({}), &opts(2, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "w", 0, free.run_id).await;
    let other = c
        .spawn(Q, "free2", &json!({}), &opts(2, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "w", -5, other.run_id).await;
    for (id, run) in [(free.task_id, free.run_id), (other.task_id, other.run_id)] {
        let r = run_of(&task(&c, id).await, 1).clone();
        assert_eq!(
            (r.state, r.claim_expires_at),
            (State::Running, None),
            "no lease"
        );
        expect_rejected(
            c.extend_claim(Q, run, 10).await,
            "does not have an active claim",
        );
    }
    set_now(&c, base + secs(86_400 * 30)).await;
    assert_nothing_claimable(&c, "lease-free runs are never swept").await;
    for id in [free.task_id, other.task_id] {
        let t = task(&c, id).await;
        assert_eq!(
            (t.runs.len(), run_of(&t, 1).state),
            (1, State::Running),
            "no expiry without a lease"
        );
    }
    // extend_claim on a run that is not running.
    c.schedule_run(Q, free.run_id, base + secs(86_400 * 31))
        .await
        .unwrap();
    expect_rejected(
        c.extend_claim(Q, free.run_id, 10).await,
        "is not currently running",
    );
}

// ---- 4. sleep via schedule_run -----------------------------------------------------------

async fn scenario_sleep(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let s = c
        .spawn(Q, "sleepy", &json!({}), &opts(3, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "w1", 30, s.run_id).await;
    set_now(&c, t0() + secs(5)).await;
    let wake = t0() + secs(65);
    c.schedule_run(Q, s.run_id, wake)
        .await
        .expect("schedule_run");

    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Sleeping);
    assert_eq!(t.runs.len(), 1, "sleeping never creates a run");
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Sleeping);
    assert_eq!(r.available_at, Some(wake));
    assert_eq!(
        (r.claimed_by.as_deref(), r.claim_expires_at),
        (None, None),
        "lease cleared"
    );
    assert_eq!(r.wake_event, None);
    expect_rejected(
        c.schedule_run(Q, s.run_id, wake).await,
        "is not currently running",
    );
    expect_rejected(
        c.complete_run(Q, s.run_id, &json!(1)).await,
        "is not currently running",
    );

    set_now(&c, wake - millis(1)).await;
    assert_nothing_claimable(&c, "before the wake time").await;
    set_now(&c, wake).await;
    let claimed = claim_one(&c, "w2", 30, s.run_id).await;
    assert_eq!(claimed.attempt, 1, "the same run resumes");
    let t = task(&c, s.task_id).await;
    assert_eq!(
        (t.summary.state, t.summary.attempts, t.runs.len()),
        (State::Running, 1, 1)
    );
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Running);
    assert_eq!(r.claimed_by.as_deref(), Some("w2"));
    assert_eq!(r.claim_expires_at, Some(wake + secs(30)));
    assert_eq!(r.started_at, Some(wake));
    assert_eq!(t.summary.first_started_at, Some(t0()), "first start kept");

    // sleeping ─fail_run→ run failed, retry run created.
    c.schedule_run(Q, s.run_id, wake + secs(600)).await.unwrap();
    set_now(&c, wake + secs(1)).await;
    c.fail_run(Q, s.run_id, &json!({"name": "Gone"}), None)
        .await
        .expect("fail a sleeping run");
    let t = task(&c, s.task_id).await;
    assert_eq!(run_of(&t, 1).state, State::Failed);
    assert_eq!(run_of(&t, 1).failed_at, Some(wake + secs(1)));
    let r2 = run_of(&t, 2);
    assert_eq!(
        (r2.state, r2.available_at),
        (State::Pending, Some(wake + secs(1)))
    );
    assert_eq!(t.summary.state, State::Pending);
    let r2_id = r2.run_id;
    claim_one(&c, "w3", 30, r2_id).await;
    c.complete_run(Q, r2_id, &json!({"done": true}))
        .await
        .unwrap();
    assert_eq!(task(&c, s.task_id).await.summary.state, State::Completed);
}

/// schedule_run_in with the real clock: not claimable before the wake time, claimable after.
async fn scenario_sleep_real_clock(db: &TestDb) {
    let c = real_client(db).await;
    let s = c
        .spawn(Q, "sleepy", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one(&c, "w1", 30, s.run_id).await;
    c.schedule_run_in(Q, s.run_id, 1.5)
        .await
        .expect("schedule_run_in");
    let t = task(&c, s.task_id).await;
    let r = run_of(&t, 1);
    assert_eq!(
        (t.summary.state, r.state),
        (State::Sleeping, State::Sleeping)
    );
    let wake = r.available_at.expect("finite wake time");
    let started = r.started_at.unwrap();
    assert!(
        wake >= started + millis(1500),
        "wake {wake} = schedule time + 1.5 s"
    );
    assert_eq!((r.claimed_by.as_deref(), r.claim_expires_at), (None, None));

    let claimed = poll_until(Duration::from_secs(20), "the sleeping run to wake", || {
        let c = c.clone();
        async move {
            let rows = c.claim(Q, "w2", 30, 1).await.expect("claim_task");
            rows.into_iter().next()
        }
    })
    .await;
    assert_eq!((claimed.run_id, claimed.attempt), (s.run_id, 1));
    let t = task(&c, s.task_id).await;
    let r = run_of(&t, 1);
    let resumed = r.started_at.unwrap();
    assert!(
        resumed >= wake,
        "claimed at {resumed}, before its wake time {wake}"
    );
    assert_eq!(r.claimed_by.as_deref(), Some("w2"));
    assert_eq!(t.runs.len(), 1);
}

// ---- 5. events -------------------------------------------------------------------------

async fn scenario_events(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let s = c
        .spawn(Q, "waiter", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one(&c, "w1", 30, s.run_id).await;
    set_now(&c, t0() + secs(1)).await;
    let out = c
        .await_event(Q, s.task_id, s.run_id, "wait-packed", "packed:1", None)
        .await
        .expect("await_event");
    assert_eq!(
        out,
        AwaitOutcome {
            should_suspend: true,
            payload: None
        }
    );

    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Sleeping);
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Sleeping);
    assert_eq!(r.wake_event.as_deref(), Some("packed:1"));
    assert_eq!(
        r.available_at, None,
        "no timeout → available_at = 'infinity'"
    );
    assert_eq!(
        (r.claimed_by.as_deref(), r.claim_expires_at),
        (None, None),
        "lease cleared"
    );
    assert_eq!(r.event_payload, None);
    assert_eq!(t.waits.len(), 1);
    let w = &t.waits[0];
    assert_eq!(
        (w.run_id, w.step_name.as_str(), w.event_name.as_str()),
        (s.run_id, "wait-packed", "packed:1")
    );
    assert_eq!(w.timeout_at, None);
    let (payload, _) = event_row(&c, "packed:1")
        .await
        .expect("await_event creates the sentinel");
    assert_eq!(payload, None, "sentinel: not emitted yet");
    expect_rejected(
        c.complete_run(Q, s.run_id, &json!(1)).await,
        "is not currently running",
    );

    set_now(&c, t0() + secs(86_400 * 365)).await;
    assert_nothing_claimable(&c, "while waiting for an event without timeout").await;

    // emit wakes the run (same run), delivers the payload and writes the checkpoint.
    let t_emit = t0() + secs(86_400 * 365 + 1);
    set_now(&c, t_emit).await;
    c.emit_event(Q, "packed:1", Some(&json!({"box": 7})))
        .await
        .expect("emit_event");
    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.runs.len(), 1);
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Pending);
    assert_eq!(r.available_at, Some(t_emit));
    assert_eq!(r.wake_event, None);
    assert_eq!(r.event_payload, Some(json!({"box": 7})));
    assert!(t.waits.is_empty(), "waits removed: {:?}", t.waits);
    let cp = c
        .get_checkpoint(Q, s.task_id, "wait-packed")
        .await
        .unwrap()
        .expect("checkpoint written");
    assert_eq!(cp.state, json!({"box": 7}));
    assert_eq!(cp.status, "committed");
    assert_eq!(cp.owner_run_id, Some(s.run_id));
    assert_eq!(
        event_row(&c, "packed:1").await,
        Some((Some(json!({"box": 7})), t_emit))
    );

    // First emit wins.
    set_now(&c, t_emit + secs(1)).await;
    c.emit_event(Q, "packed:1", Some(&json!({"box": 8})))
        .await
        .expect("second emit is a no-op");
    assert_eq!(
        event_row(&c, "packed:1").await,
        Some((Some(json!({"box": 7})), t_emit))
    );
    let t = task(&c, s.task_id).await;
    assert_eq!(run_of(&t, 1).event_payload, Some(json!({"box": 7})));
    let cp = c
        .get_checkpoint(Q, s.task_id, "wait-packed")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp.state, json!({"box": 7}));

    // Re-claim: the payload is returned as stored; replaying await_event returns it.
    let claimed = claim_one(&c, "w2", 30, s.run_id).await;
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.wake_event, None);
    assert_eq!(claimed.event_payload, Some(json!({"box": 7})));
    let out = c
        .await_event(Q, s.task_id, s.run_id, "wait-packed", "packed:1", None)
        .await
        .unwrap();
    assert_eq!(
        out,
        AwaitOutcome {
            should_suspend: false,
            payload: Some(json!({"box": 7}))
        }
    );

    // A new step awaiting the already-emitted event returns at once, writes its checkpoint
    // and clears the run's delivered payload.
    let out = c
        .await_event(Q, s.task_id, s.run_id, "again", "packed:1", Some(5))
        .await
        .unwrap();
    assert_eq!(
        out,
        AwaitOutcome {
            should_suspend: false,
            payload: Some(json!({"box": 7}))
        }
    );
    let t = task(&c, s.task_id).await;
    let r = run_of(&t, 1);
    assert_eq!((r.state, r.event_payload.clone()), (State::Running, None));
    assert!(t.waits.is_empty());
    let cp = c
        .get_checkpoint(Q, s.task_id, "again")
        .await
        .unwrap()
        .expect("checkpoint of the new step");
    assert_eq!(
        (cp.state, cp.owner_run_id),
        (json!({"box": 7}), Some(s.run_id))
    );

    // An event emitted without payload is stored as JSON null and still resolves waiters.
    c.emit_event(Q, "bare", None).await.unwrap();
    assert_eq!(
        event_row(&c, "bare").await.map(|(p, _)| p),
        Some(Some(Value::Null))
    );
    let out = c
        .await_event(Q, s.task_id, s.run_id, "bare-step", "bare", None)
        .await
        .unwrap();
    assert!(
        !out.should_suspend,
        "an event emitted with a null payload has been emitted"
    );
    assert_eq!(out.payload, Some(Value::Null));

    c.complete_run(Q, s.run_id, &json!("done")).await.unwrap();
    assert_eq!(task(&c, s.task_id).await.summary.state, State::Completed);

    // One emit wakes every waiter of the event.
    let a = c
        .spawn(Q, "fan-a", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let ra = claim_one(&c, "w", 30, a.run_id).await;
    let b = c
        .spawn(Q, "fan-b", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let rb = claim_one(&c, "w", 30, b.run_id).await;
    assert!(
        c.await_event(Q, a.task_id, ra.run_id, "sa", "fan", None)
            .await
            .unwrap()
            .should_suspend
    );
    assert!(
        c.await_event(Q, b.task_id, rb.run_id, "sb", "fan", Some(3600))
            .await
            .unwrap()
            .should_suspend
    );
    c.emit_event(Q, "fan", Some(&json!(42))).await.unwrap();
    for (id, step) in [(a.task_id, "sa"), (b.task_id, "sb")] {
        let t = task(&c, id).await;
        assert_eq!(
            (t.summary.state, run_of(&t, 1).state),
            (State::Pending, State::Pending)
        );
        assert_eq!(run_of(&t, 1).event_payload, Some(json!(42)));
        assert_eq!(
            c.get_checkpoint(Q, id, step).await.unwrap().unwrap().state,
            json!(42)
        );
    }
}

async fn scenario_event_timeout(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let s = c
        .spawn(Q, "waiter", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one(&c, "w1", 30, s.run_id).await;
    let out = c
        .await_event(Q, s.task_id, s.run_id, "w", "never", Some(1))
        .await
        .unwrap();
    assert_eq!(
        out,
        AwaitOutcome {
            should_suspend: true,
            payload: None
        }
    );
    let t = task(&c, s.task_id).await;
    let r = run_of(&t, 1);
    assert_eq!(
        (t.summary.state, r.state),
        (State::Sleeping, State::Sleeping)
    );
    assert_eq!(
        r.available_at,
        Some(t0() + secs(1)),
        "available_at = now + timeout"
    );
    assert_eq!(r.wake_event.as_deref(), Some("never"));
    assert_eq!(t.waits.len(), 1);
    assert_eq!(t.waits[0].timeout_at, Some(t0() + secs(1)));

    set_now(&c, t0() + millis(999)).await;
    assert_nothing_claimable(&c, "before the event timeout").await;
    set_now(&c, t0() + secs(1)).await;
    let claimed = claim_one(&c, "w2", 30, s.run_id).await;
    assert_eq!(
        claimed.wake_event.as_deref(),
        Some("never"),
        "claim returns wake_event as stored"
    );
    assert_eq!(claimed.event_payload, None, "timeout wake: no payload");
    let t = task(&c, s.task_id).await;
    assert!(
        t.waits.is_empty(),
        "the claim removes the expired wait: {:?}",
        t.waits
    );
    assert_eq!(
        run_of(&t, 1).wake_event.as_deref(),
        Some("never"),
        "not cleared by claiming"
    );

    // §5.8: the timed-out run awaiting the same event gets (false, NULL), nothing registered.
    let out = c
        .await_event(Q, s.task_id, s.run_id, "w", "never", Some(1))
        .await
        .unwrap();
    assert_eq!(
        out,
        AwaitOutcome {
            should_suspend: false,
            payload: None
        }
    );
    let t = task(&c, s.task_id).await;
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Running);
    assert_eq!(r.wake_event, None, "wake_event cleared");
    assert_eq!(r.claimed_by.as_deref(), Some("w2"));
    assert!(t.waits.is_empty());
    assert_eq!(
        c.get_checkpoint(Q, s.task_id, "w").await.unwrap(),
        None,
        "no checkpoint on timeout"
    );
    // A later emit does not touch a run that is no longer waiting.
    c.emit_event(Q, "never", Some(&json!("late")))
        .await
        .unwrap();
    let t = task(&c, s.task_id).await;
    assert_eq!(
        (run_of(&t, 1).state, run_of(&t, 1).event_payload.clone()),
        (State::Running, None)
    );
    c.complete_run(Q, s.run_id, &json!(null)).await.unwrap();

    // An emit after the wait timed out (but before any claim) deletes the wait without
    // waking the run; the run wakes by timeout and then finds the event emitted.
    let start = t0() + secs(100);
    set_now(&c, start).await;
    let s = c
        .spawn(Q, "late", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one(&c, "w1", 30, s.run_id).await;
    assert!(
        c.await_event(Q, s.task_id, s.run_id, "s", "tardy", Some(5))
            .await
            .unwrap()
            .should_suspend
    );
    set_now(&c, start + secs(5)).await;
    c.emit_event(Q, "tardy", Some(&json!({"x": 1})))
        .await
        .unwrap();
    let t = task(&c, s.task_id).await;
    let r = run_of(&t, 1);
    assert_eq!(
        r.state,
        State::Sleeping,
        "an expired wait is not woken by emit"
    );
    assert_eq!(
        (r.wake_event.as_deref(), r.event_payload.clone()),
        (Some("tardy"), None)
    );
    assert_eq!(r.available_at, Some(start + secs(5)));
    assert!(
        t.waits.is_empty(),
        "the expired wait is deleted by the emit"
    );
    assert_eq!(c.get_checkpoint(Q, s.task_id, "s").await.unwrap(), None);
    let claimed = claim_one(&c, "w2", 30, s.run_id).await;
    assert_eq!(
        (claimed.wake_event.as_deref(), claimed.event_payload),
        (Some("tardy"), None)
    );
    let out = c
        .await_event(Q, s.task_id, s.run_id, "s", "tardy", Some(5))
        .await
        .unwrap();
    assert_eq!(
        out,
        AwaitOutcome {
            should_suspend: false,
            payload: Some(json!({"x": 1}))
        }
    );
    assert_eq!(
        c.get_checkpoint(Q, s.task_id, "s")
            .await
            .unwrap()
            .unwrap()
            .state,
        json!({"x": 1})
    );

    c.complete_run(Q, s.run_id, &json!(null)).await.unwrap();

    // Failing a run that waits for an event: wake_event cleared, waits deleted, retried.
    let start = start + secs(100);
    set_now(&c, start).await;
    let f = c
        .spawn(
            Q,
            "fails-while-waiting",
            &json!({}),
            &opts(2, RetryStrategy::none()),
        )
        .await
        .unwrap();
    claim_one(&c, "w1", 30, f.run_id).await;
    assert!(
        c.await_event(Q, f.task_id, f.run_id, "s", "ev-f", None)
            .await
            .unwrap()
            .should_suspend
    );
    c.fail_run(Q, f.run_id, &json!({"name": "E"}), None)
        .await
        .expect("fail a waiting run");
    let t = task(&c, f.task_id).await;
    let r1 = run_of(&t, 1);
    assert_eq!((r1.state, r1.wake_event.as_deref()), (State::Failed, None));
    assert!(
        t.waits.is_empty(),
        "fail_run deletes the run's waits: {:?}",
        t.waits
    );
    assert_eq!(
        (run_of(&t, 2).state, t.summary.state),
        (State::Pending, State::Pending)
    );
    c.emit_event(Q, "ev-f", Some(&json!(1))).await.unwrap();
    let t = task(&c, f.task_id).await;
    assert_eq!(
        run_of(&t, 1).event_payload,
        None,
        "the failed run is not woken"
    );
    assert_eq!(c.get_checkpoint(Q, f.task_id, "s").await.unwrap(), None);

    // Argument checks.
    expect_rejected(
        c.await_event(Q, s.task_id, s.run_id, "z", "", None).await,
        "event_name must be provided",
    );
    expect_rejected(
        c.await_event(Q, s.task_id, s.run_id, "z", "e", Some(-1))
            .await,
        "timeout must be non-negative",
    );
}

// ---- 6. cancellation -------------------------------------------------------------------

async fn scenario_cancel(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let s = c
        .spawn(Q, "victim", &json!({}), &opts(5, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "w1", 30, s.run_id).await;
    c.set_checkpoint(Q, s.task_id, "before", &json!(1), s.run_id, None)
        .await
        .unwrap();
    let t_cancel = t0() + secs(3);
    set_now(&c, t_cancel).await;
    c.cancel_task(Q, s.task_id)
        .await
        .expect("cancel a running task");

    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Cancelled);
    assert_eq!(t.summary.cancelled_at, Some(t_cancel));
    let r = run_of(&t, 1);
    assert_eq!(r.state, State::Cancelled);
    assert_eq!(
        (r.claimed_by.as_deref(), r.claim_expires_at),
        (None, None),
        "lease cleared"
    );
    let res = c.task_result(Q, s.task_id).await.unwrap().unwrap();
    assert_eq!(
        (res.state, res.result, res.failure_reason),
        (State::Cancelled, None, None)
    );

    // The worker finds out at its next write.
    expect_cancelled(c.complete_run(Q, s.run_id, &json!(1)).await, "complete_run");
    expect_cancelled(c.extend_claim(Q, s.run_id, 30).await, "extend_claim");
    expect_cancelled(
        c.set_checkpoint(Q, s.task_id, "after", &json!(2), s.run_id, None)
            .await,
        "set_checkpoint",
    );
    expect_cancelled(
        c.await_event(Q, s.task_id, s.run_id, "ev", "e", None).await,
        "await_event",
    );
    expect_cancelled(c.fail_run(Q, s.run_id, &json!({}), None).await, "fail_run");
    assert_eq!(c.get_checkpoint(Q, s.task_id, "after").await.unwrap(), None);
    assert!(
        c.get_checkpoint(Q, s.task_id, "before")
            .await
            .unwrap()
            .is_some(),
        "history kept"
    );
    assert_nothing_claimable(&c, "after cancellation").await;

    // Cancelling again is a no-op that keeps the first timestamp.
    set_now(&c, t_cancel + secs(10)).await;
    c.cancel_task(Q, s.task_id).await.expect("repeat cancel");
    assert_eq!(
        task(&c, s.task_id).await.summary.cancelled_at,
        Some(t_cancel)
    );

    // Cancelling a completed task is a no-op.
    let done = c
        .spawn(Q, "done", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one(&c, "w1", 30, done.run_id).await;
    c.complete_run(Q, done.run_id, &json!("r")).await.unwrap();
    c.cancel_task(Q, done.task_id)
        .await
        .expect("cancel of a terminal task");
    let t = task(&c, done.task_id).await;
    assert_eq!(
        (t.summary.state, t.summary.cancelled_at),
        (State::Completed, None)
    );
    assert_eq!(run_of(&t, 1).state, State::Completed);

    // A failed task: no-op as well; its failed runs keep their history.
    let failed = c
        .spawn(Q, "failed", &json!({}), &opts(1, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "w1", 30, failed.run_id).await;
    c.fail_run(Q, failed.run_id, &json!({"e": 1}), None)
        .await
        .unwrap();
    c.cancel_task(Q, failed.task_id).await.unwrap();
    let t = task(&c, failed.task_id).await;
    assert_eq!(
        (t.summary.state, run_of(&t, 1).state),
        (State::Failed, State::Failed)
    );

    // A pending task and an event-waiting task: runs cancelled, waits deleted.
    let pending = c
        .spawn(Q, "pending", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    c.cancel_task(Q, pending.task_id).await.unwrap();
    let t = task(&c, pending.task_id).await;
    assert_eq!(
        (t.summary.state, run_of(&t, 1).state),
        (State::Cancelled, State::Cancelled)
    );
    assert_eq!(t.summary.first_started_at, None);

    let waiting = c
        .spawn(Q, "waiting", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one(&c, "w1", 30, waiting.run_id).await;
    assert!(
        c.await_event(Q, waiting.task_id, waiting.run_id, "st", "ev-w", None)
            .await
            .unwrap()
            .should_suspend
    );
    c.cancel_task(Q, waiting.task_id).await.unwrap();
    let t = task(&c, waiting.task_id).await;
    assert_eq!(
        (t.summary.state, run_of(&t, 1).state),
        (State::Cancelled, State::Cancelled)
    );
    assert!(t.waits.is_empty(), "cancel deletes the waits");
    c.emit_event(Q, "ev-w", Some(&json!(1))).await.unwrap();
    let t = task(&c, waiting.task_id).await;
    assert_eq!(
        (t.summary.state, run_of(&t, 1).state),
        (State::Cancelled, State::Cancelled)
    );
    assert_eq!(
        c.get_checkpoint(Q, waiting.task_id, "st").await.unwrap(),
        None
    );
    assert_nothing_claimable(&c, "everything is terminal").await;

    expect_rejected(c.cancel_task(Q, Uuid::now_v7()).await, "not found");
}

// ---- 7. retry_task -----------------------------------------------------------------------

async fn scenario_retry_task(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let s = c
        .spawn(
            Q,
            "fragile",
            &json!({"p": 1}),
            &SpawnOptions {
                max_attempts: Some(1),
                headers: Some(json!({"h": 1})),
                cancellation: Some(Cancellation {
                    max_delay: None,
                    max_duration: Some(86_400),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    expect_rejected(
        c.retry_task(Q, s.task_id, &RetryOptions::default()).await,
        "is not currently failed",
    );
    claim_one(&c, "w1", 30, s.run_id).await;
    c.set_checkpoint(Q, s.task_id, "step-a", &json!({"v": 1}), s.run_id, None)
        .await
        .unwrap();
    set_now(&c, t0() + secs(1)).await;
    c.fail_run(Q, s.run_id, &json!({"name": "E"}), None)
        .await
        .unwrap();
    let before = task(&c, s.task_id).await;
    assert_eq!(
        (before.summary.state, before.summary.attempts),
        (State::Failed, 1)
    );

    // In place.
    let t_retry = t0() + secs(10);
    set_now(&c, t_retry).await;
    let r = c
        .retry_task(Q, s.task_id, &RetryOptions::default())
        .await
        .expect("retry in place");
    assert_eq!((r.task_id, r.attempt, r.created), (s.task_id, 2, false));
    assert_ne!(r.run_id, s.run_id);
    let t = task(&c, s.task_id).await;
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.summary.attempts, 2);
    assert_eq!(
        t.summary.max_attempts,
        Some(2),
        "coalesce(max_attempts, attempts) + 1"
    );
    assert_eq!(t.summary.last_attempt_run, Some(r.run_id));
    assert_eq!(t.summary.cancelled_at, None);
    assert_eq!(
        t.summary.enqueue_at, before.summary.enqueue_at,
        "enqueue_at unchanged"
    );
    assert_eq!(t.summary.first_started_at, before.summary.first_started_at);
    assert_eq!(run_of(&t, 1).state, State::Failed);
    let r2 = run_of(&t, 2);
    assert_eq!(
        (r2.run_id, r2.state, r2.available_at),
        (r.run_id, State::Pending, Some(t_retry))
    );
    let cps = c.get_checkpoints(Q, s.task_id, r.run_id).await.unwrap();
    assert_eq!(cps.len(), 1, "checkpoints kept: {cps:#?}");
    assert_eq!(
        (cps[0].checkpoint_name.as_str(), &cps[0].state),
        ("step-a", &json!({"v": 1}))
    );
    assert_eq!(
        cps[0].owner_run_id,
        Some(s.run_id),
        "the checkpoint keeps its original owner"
    );
    expect_rejected(
        c.retry_task(Q, s.task_id, &RetryOptions::default()).await,
        "is not currently failed",
    );

    // Attempt 2 fails too; a requested max_attempts must exceed the attempts used.
    claim_one(&c, "w1", 30, r.run_id).await;
    c.fail_run(Q, r.run_id, &json!({"name": "E2"}), None)
        .await
        .unwrap();
    assert_eq!(
        task(&c, s.task_id).await.summary.state,
        State::Failed,
        "max_attempts 2 reached"
    );
    expect_rejected(
        c.retry_task(
            Q,
            s.task_id,
            &RetryOptions {
                spawn_new: false,
                max_attempts: Some(2),
            },
        )
        .await,
        "max_attempts (2) must be greater than current attempts (2)",
    );
    expect_rejected(
        c.retry_task(
            Q,
            s.task_id,
            &RetryOptions {
                spawn_new: false,
                max_attempts: Some(0),
            },
        )
        .await,
        "max_attempts must be >= 1",
    );

    // spawn_new: a fresh task with the same definition; the old one stays failed.
    let n = c
        .retry_task(
            Q,
            s.task_id,
            &RetryOptions {
                spawn_new: true,
                max_attempts: None,
            },
        )
        .await
        .expect("retry as a new task");
    assert!(n.created);
    assert_eq!(n.attempt, 1);
    assert_ne!(n.task_id, s.task_id);
    let old = task(&c, s.task_id).await;
    assert_eq!((old.summary.state, old.runs.len()), (State::Failed, 2));
    let new = task(&c, n.task_id).await;
    assert_eq!(new.summary.state, State::Pending);
    assert_eq!(new.summary.task_name, "fragile");
    assert_eq!(new.params, json!({"p": 1}));
    assert_eq!(new.headers, Some(json!({"h": 1})));
    assert_eq!(new.summary.max_attempts, Some(2), "the old max_attempts");
    assert_eq!(new.cancellation, Some(json!({"max_duration": 86_400})));
    assert_eq!(new.summary.idempotency_key, None);
    assert_eq!((new.runs.len(), run_of(&new, 1).run_id), (1, n.run_id));
    assert!(new.checkpoints.is_empty(), "no checkpoints copied");

    // Only failed tasks can be retried.
    claim_one(&c, "w1", 30, n.run_id).await;
    c.complete_run(Q, n.run_id, &json!(1)).await.unwrap();
    expect_rejected(
        c.retry_task(Q, n.task_id, &RetryOptions::default()).await,
        "is not currently failed",
    );

    // spawn_new with an explicit max_attempts.
    let n2 = c
        .retry_task(
            Q,
            s.task_id,
            &RetryOptions {
                spawn_new: true,
                max_attempts: Some(7),
            },
        )
        .await
        .unwrap();
    assert!(n2.created);
    assert_eq!(task(&c, n2.task_id).await.summary.max_attempts, Some(7));
    expect_rejected(
        c.retry_task(Q, Uuid::now_v7(), &RetryOptions::default())
            .await,
        "not found",
    );
}

// ---- 8. idempotent spawn -------------------------------------------------------------------

async fn scenario_idempotent_spawn(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let keyed = |name: &str| SpawnOptions {
        idempotency_key: Some(name.to_string()),
        max_attempts: Some(3),
        ..Default::default()
    };
    let first = c
        .spawn(Q, "order", &json!({"n": 1}), &keyed("order-1"))
        .await
        .unwrap();
    assert!(first.created);
    let again = c
        .spawn(Q, "something-else", &json!({"n": 2}), &keyed("order-1"))
        .await
        .unwrap();
    assert_eq!(
        (again.task_id, again.run_id, again.attempt, again.created),
        (first.task_id, first.run_id, 1, false)
    );
    let t = task(&c, first.task_id).await;
    assert_eq!(
        (t.summary.task_name.as_str(), &t.params),
        ("order", &json!({"n": 1})),
        "nothing rewritten"
    );
    assert_eq!(t.summary.idempotency_key.as_deref(), Some("order-1"));
    assert_eq!(t.runs.len(), 1);

    // After a retry the duplicate spawn reports the current run and attempt.
    claim_one(&c, "w", 30, first.run_id).await;
    c.fail_run(Q, first.run_id, &json!({}), None).await.unwrap();
    let t = task(&c, first.task_id).await;
    let r2 = run_of(&t, 2).run_id;
    let again = c
        .spawn(Q, "order", &json!({"n": 1}), &keyed("order-1"))
        .await
        .unwrap();
    assert_eq!(
        (again.task_id, again.run_id, again.attempt, again.created),
        (first.task_id, r2, 2, false)
    );

    // Also once the task is terminal.
    claim_one(&c, "w", 30, r2).await;
    c.complete_run(Q, r2, &json!("ok")).await.unwrap();
    let again = c
        .spawn(Q, "order", &json!({"n": 1}), &keyed("order-1"))
        .await
        .unwrap();
    assert_eq!(
        (again.task_id, again.run_id, again.attempt, again.created),
        (first.task_id, r2, 2, false)
    );
    assert_eq!(
        task(&c, first.task_id).await.summary.state,
        State::Completed
    );

    // Another key is another task; keys are per queue.
    let other = c
        .spawn(Q, "order", &json!({"n": 1}), &keyed("order-2"))
        .await
        .unwrap();
    assert!(other.created);
    assert_ne!(other.task_id, first.task_id);
    make_queue(&c, "sm-other").await;
    let elsewhere = c
        .spawn("sm-other", "order", &json!({"n": 1}), &keyed("order-1"))
        .await
        .unwrap();
    assert!(elsewhere.created);
    assert_ne!(elsewhere.task_id, first.task_id);
    let page = c
        .list_tasks(&TaskFilter {
            queue: Some(Q.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 2);
}

// ---- 9. cleanup --------------------------------------------------------------------------

async fn scenario_cleanup(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    // completed, failed, cancelled, running, pending — all finishing at t0.
    let done = c
        .spawn(
            Q,
            "done",
            &json!({}),
            &SpawnOptions {
                idempotency_key: Some("k-done".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    claim_one(&c, "w", 30, done.run_id).await;
    c.set_checkpoint(Q, done.task_id, "cp", &json!(1), done.run_id, None)
        .await
        .unwrap();
    c.complete_run(Q, done.run_id, &json!(1)).await.unwrap();
    let failed = c
        .spawn(Q, "failed", &json!({}), &opts(1, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "w", 30, failed.run_id).await;
    c.fail_run(Q, failed.run_id, &json!({}), None)
        .await
        .unwrap();
    let cancelled = c
        .spawn(Q, "cancelled", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    c.cancel_task(Q, cancelled.task_id).await.unwrap();
    let running = c
        .spawn(Q, "running", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one(&c, "w", 0, running.run_id).await;
    let pending = c
        .spawn(
            Q,
            "pending",
            &json!({}),
            &SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c.emit_event(Q, "ev-1", Some(&json!(1))).await.unwrap();
    c.emit_event(Q, "ev-2", Some(&json!(2))).await.unwrap();

    expect_rejected(
        c.cleanup_tasks(Q, -1, 10).await,
        "TTL must be a non-negative number of seconds",
    );
    expect_rejected(
        c.cleanup_events(Q, -1, 10).await,
        "TTL must be a non-negative number of seconds",
    );
    // Terminal time must be strictly before now - ttl.
    assert_eq!(
        c.cleanup_tasks(Q, 0, 1000).await.unwrap(),
        0,
        "terminal time == now is kept"
    );
    assert_eq!(c.cleanup_events(Q, 0, 1000).await.unwrap(), 0);

    set_now(&c, t0() + secs(1)).await;
    assert_eq!(
        c.cleanup_tasks(Q, 3600, 1000).await.unwrap(),
        0,
        "younger than the ttl"
    );
    assert_eq!(
        c.cleanup_tasks(Q, 0, 1000).await.unwrap(),
        3,
        "the three terminal tasks"
    );
    for id in [done.task_id, failed.task_id, cancelled.task_id] {
        assert!(
            c.get_task(Q, id).await.unwrap().is_none(),
            "task {id} deleted"
        );
        assert_eq!(count_rows(&c, "r", id).await, 0, "runs of {id} deleted");
        assert_eq!(
            count_rows(&c, "c", id).await,
            0,
            "checkpoints of {id} deleted"
        );
    }
    assert_eq!(
        task(&c, running.task_id).await.summary.state,
        State::Running
    );
    assert_eq!(
        task(&c, pending.task_id).await.summary.state,
        State::Pending
    );
    assert_eq!(c.cleanup_tasks(Q, 0, 1000).await.unwrap(), 0);
    let reborn = c
        .spawn(
            Q,
            "done",
            &json!({}),
            &SpawnOptions {
                idempotency_key: Some("k-done".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        reborn.created,
        "the idempotency key is reusable after cleanup"
    );

    assert_eq!(
        c.cleanup_events(Q, 0, 1).await.unwrap(),
        1,
        "limit respected"
    );
    assert_eq!(c.cleanup_events(Q, 0, 1000).await.unwrap(), 1);
    assert_eq!(event_row(&c, "ev-1").await, None);
    assert_eq!(event_row(&c, "ev-2").await, None);

    // cleanup_all_queues: one row per queue (ordered by name), using the queue's policy
    // (default ttl 30 days).
    make_queue(&c, "sm-b").await;
    make_queue(&c, "sm-a").await;
    let b = c
        .spawn("sm-b", "x", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    claim_one_in(&c, "sm-b", b.run_id).await;
    c.complete_run("sm-b", b.run_id, &json!(null))
        .await
        .unwrap();
    c.emit_event("sm-b", "ev-b", None).await.unwrap();
    let rows = c.cleanup_all_queues(None).await.unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.queue_name.as_str(), r.tasks_deleted, r.events_deleted))
        .collect();
    assert_eq!(
        got,
        vec![("sm", 0, 0), ("sm-a", 0, 0), ("sm-b", 0, 0)],
        "nothing older than 30 days"
    );
    set_now(&c, t0() + secs(31 * 86_400)).await;
    let rows = c.cleanup_all_queues(Some("sm-a")).await.unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.queue_name.as_str(), r.tasks_deleted, r.events_deleted))
        .collect();
    assert_eq!(got, vec![("sm-a", 0, 0)]);
    let rows = c.cleanup_all_queues(None).await.unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.queue_name.as_str(), r.tasks_deleted, r.events_deleted))
        .collect();
    assert_eq!(got, vec![("sm", 0, 0), ("sm-a", 0, 0), ("sm-b", 1, 1)]);
    assert!(c.get_task("sm-b", b.task_id).await.unwrap().is_none());
    expect_rejected(
        c.cleanup_all_queues(Some("no-such-queue")).await,
        "does not exist",
    );
}

async fn claim_one_in(c: &Client, queue: &str, run_id: Uuid) {
    let rows = c.claim(queue, "w", 30, 1).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        vec![run_id]
    );
}

// ---- 10. checkpoints ---------------------------------------------------------------------

async fn scenario_checkpoints(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let s = c
        .spawn(Q, "steps", &json!({}), &opts(3, RetryStrategy::none()))
        .await
        .unwrap();
    claim_one(&c, "w", 30, s.run_id).await;
    let run1 = s.run_id;
    assert_eq!(c.get_checkpoint(Q, s.task_id, "a").await.unwrap(), None);

    c.set_checkpoint(Q, s.task_id, "a", &json!({"v": 1}), run1, None)
        .await
        .unwrap();
    let cp = c
        .get_checkpoint(Q, s.task_id, "a")
        .await
        .unwrap()
        .expect("checkpoint a");
    assert_eq!(cp.checkpoint_name, "a");
    assert_eq!(
        (cp.state, cp.status.as_str(), cp.owner_run_id, cp.updated_at),
        (json!({"v": 1}), "committed", Some(run1), Some(t0()))
    );
    set_now(&c, t0() + secs(1)).await;
    c.set_checkpoint(Q, s.task_id, "a", &json!({"v": 2}), run1, None)
        .await
        .unwrap();
    let cp = c.get_checkpoint(Q, s.task_id, "a").await.unwrap().unwrap();
    assert_eq!(
        (cp.state, cp.updated_at),
        (json!({"v": 2}), Some(t0() + secs(1))),
        "same attempt overwrites"
    );
    set_now(&c, t0() + secs(2)).await;
    c.set_checkpoint(Q, s.task_id, "shared", &json!({"by": 1}), run1, None)
        .await
        .unwrap();
    let t = task(&c, s.task_id).await;
    assert_eq!(
        run_of(&t, 1).claim_expires_at,
        Some(t0() + secs(30)),
        "no extension without extend_claim_by"
    );

    // Checkpoint writes may extend the lease (from now).
    set_now(&c, t0() + secs(10)).await;
    c.set_checkpoint(Q, s.task_id, "b0", &json!(0), run1, Some(60))
        .await
        .unwrap();
    let t = task(&c, s.task_id).await;
    assert_eq!(
        run_of(&t, 1).claim_expires_at,
        Some(t0() + secs(70)),
        "lease = now + extend_claim_by"
    );
    set_now(&c, t0() + secs(20)).await;
    c.extend_claim(Q, run1, 45).await.unwrap();
    let t = task(&c, s.task_id).await;
    assert_eq!(
        run_of(&t, 1).claim_expires_at,
        Some(t0() + secs(65)),
        "extend_claim = now + n"
    );
    expect_rejected(c.extend_claim(Q, run1, 0).await, "extend_by must be > 0");
    expect_rejected(c.extend_claim(Q, Uuid::now_v7(), 10).await, "not found");
    expect_rejected(
        c.set_checkpoint(Q, s.task_id, "", &json!(1), run1, None)
            .await,
        "step_name must be provided",
    );
    expect_rejected(
        c.set_checkpoint(Q, s.task_id, "x", &json!(1), Uuid::now_v7(), None)
            .await,
        "not found",
    );

    // Attempt 2 sees attempt 1's checkpoints and overwrites "shared".
    set_now(&c, t0() + secs(21)).await;
    c.fail_run(Q, run1, &json!({}), None).await.unwrap();
    let run2 = run_of(&task(&c, s.task_id).await, 2).run_id;
    claim_one(&c, "w", 30, run2).await;
    let names = |cps: &[absurd_client::Checkpoint]| {
        cps.iter()
            .map(|c| c.checkpoint_name.clone())
            .collect::<Vec<_>>()
    };
    let seen = c.get_checkpoints(Q, s.task_id, run2).await.unwrap();
    assert_eq!(
        names(&seen),
        vec!["a", "shared", "b0"],
        "ordered by updated_at"
    );
    set_now(&c, t0() + secs(22)).await;
    c.set_checkpoint(Q, s.task_id, "shared", &json!({"by": 2}), run2, None)
        .await
        .unwrap();
    set_now(&c, t0() + secs(23)).await;
    c.set_checkpoint(Q, s.task_id, "b", &json!("two"), run2, None)
        .await
        .unwrap();
    let cp = c
        .get_checkpoint(Q, s.task_id, "shared")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cp.state, cp.owner_run_id),
        (json!({"by": 2}), Some(run2)),
        "the later attempt wins"
    );

    // Attempt 1 (failed) can no longer write, and does not see attempt 2's checkpoints.
    expect_run_failed(
        c.set_checkpoint(Q, s.task_id, "shared", &json!({"by": "stale"}), run1, None)
            .await,
        "stale write",
    );
    let seen1 = c.get_checkpoints(Q, s.task_id, run1).await.unwrap();
    assert_eq!(
        names(&seen1),
        vec!["a", "b0"],
        "later attempts' checkpoints hidden"
    );
    let seen2 = c.get_checkpoints(Q, s.task_id, run2).await.unwrap();
    assert_eq!(names(&seen2), vec!["a", "b0", "shared", "b"]);
    let a = seen2.iter().find(|c| c.checkpoint_name == "a").unwrap();
    assert_eq!(
        a.owner_run_id,
        Some(run1),
        "attempt 1's checkpoint keeps its owner"
    );

    // An older attempt's run that has not failed (stale replica; made by hand, as tools may
    // edit the tables) cannot overwrite a newer attempt's checkpoint: the write is skipped.
    sqlx::query(r#"update absurd."r_sm" set state = 'completed' where run_id = $1"#)
        .bind(run1)
        .execute(c.pool())
        .await
        .unwrap();
    set_now(&c, t0() + secs(24)).await;
    c.set_checkpoint(Q, s.task_id, "shared", &json!({"by": "old"}), run1, None)
        .await
        .expect("a skipped write is not an error");
    let cp = c
        .get_checkpoint(Q, s.task_id, "shared")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cp.state, cp.owner_run_id, cp.updated_at),
        (json!({"by": 2}), Some(run2), Some(t0() + secs(22)))
    );
    c.set_checkpoint(Q, s.task_id, "fresh", &json!("old-ok"), run1, None)
        .await
        .unwrap();
    assert_eq!(
        c.get_checkpoint(Q, s.task_id, "fresh")
            .await
            .unwrap()
            .unwrap()
            .owner_run_id,
        Some(run1)
    );

    // get_checkpoints checks the run belongs to the task.
    let other = c
        .spawn(Q, "other", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    expect_rejected(
        c.get_checkpoints(Q, s.task_id, other.run_id).await,
        "does not belong to task",
    );
    expect_rejected(
        c.get_checkpoints(Q, s.task_id, Uuid::now_v7()).await,
        "not found",
    );
}

// ---- 11. cancellation policy -------------------------------------------------------------

/// Claims with qty 10 and returns the claimed run ids (sorted).
async fn claim_all(c: &Client) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = c
        .claim(Q, "w", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id)
        .collect();
    ids.sort();
    ids
}

async fn scenario_cancellation_policy(db: &TestDb) {
    let c = fake_client(db, t0()).await;
    let policy = |max_delay, max_duration| SpawnOptions {
        cancellation: Some(Cancellation {
            max_delay,
            max_duration,
        }),
        max_attempts: Some(5),
        retry_strategy: Some(RetryStrategy::fixed(60.0)),
        ..Default::default()
    };

    // `started` begins within its max_delay, so max_delay never applies to it afterwards.
    let started = c
        .spawn(Q, "started", &json!({}), &policy(Some(60), None))
        .await
        .unwrap();
    set_now(&c, t0() + secs(10)).await;
    assert_eq!(claim_all(&c).await, vec![started.run_id]);

    // `late` never starts: the claim at exactly enqueue_at + max_delay cancels it (and claims
    // the task without a policy instead).
    let late = c
        .spawn(Q, "late", &json!({}), &policy(Some(60), None))
        .await
        .unwrap();
    let plain = c
        .spawn(Q, "plain", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let t_cancel = t0() + secs(70);
    set_now(&c, t_cancel).await;
    assert_eq!(
        claim_all(&c).await,
        vec![plain.run_id],
        "late is cancelled, not claimed"
    );
    let t = task(&c, late.task_id).await;
    assert_eq!(t.summary.state, State::Cancelled);
    assert_eq!(t.summary.cancelled_at, Some(t_cancel));
    assert_eq!(t.summary.first_started_at, None);
    assert_eq!(run_of(&t, 1).state, State::Cancelled);
    assert_eq!(
        task(&c, started.task_id).await.summary.state,
        State::Running,
        "started in time"
    );

    // Just before max_delay it is still claimable.
    let in_time = c
        .spawn(Q, "in-time", &json!({}), &policy(Some(60), None))
        .await
        .unwrap();
    set_now(&c, t_cancel + secs(60) - millis(1)).await;
    assert_eq!(claim_all(&c).await, vec![in_time.run_id]);
    assert_eq!(
        task(&c, in_time.task_id).await.summary.state,
        State::Running
    );

    // max_duration counts from the first start, checked by claim_task.
    let x = t_cancel + secs(100);
    set_now(&c, x).await;
    let bounded = c
        .spawn(Q, "bounded", &json!({}), &policy(None, Some(100)))
        .await
        .unwrap();
    assert_eq!(claim_all(&c).await, vec![bounded.run_id]);
    set_now(&c, x + secs(100) - millis(1)).await;
    assert_eq!(claim_all(&c).await, Vec::<Uuid>::new());
    assert_eq!(
        task(&c, bounded.task_id).await.summary.state,
        State::Running
    );
    set_now(&c, x + secs(100)).await;
    assert_eq!(claim_all(&c).await, Vec::<Uuid>::new());
    let t = task(&c, bounded.task_id).await;
    assert_eq!(
        (t.summary.state, t.summary.cancelled_at),
        (State::Cancelled, Some(x + secs(100)))
    );
    let r = run_of(&t, 1);
    assert_eq!(
        (r.state, r.claimed_by.as_deref(), r.claim_expires_at),
        (State::Cancelled, None, None)
    );
    expect_cancelled(
        c.complete_run(Q, r.run_id, &json!(1)).await,
        "complete after max_duration",
    );

    // fail_run: a retry that would start past max_duration cancels the task instead.
    let y = x + secs(1000);
    set_now(&c, y).await;
    let short = c
        .spawn(Q, "short", &json!({}), &policy(None, Some(50)))
        .await
        .unwrap();
    assert_eq!(claim_all(&c).await, vec![short.run_id]);
    set_now(&c, y + secs(1)).await;
    c.fail_run(Q, short.run_id, &json!({"name": "E"}), None)
        .await
        .unwrap();
    let t = task(&c, short.task_id).await;
    assert_eq!(
        t.summary.state,
        State::Cancelled,
        "retry at y+61 ≥ first start + 50"
    );
    assert_eq!(t.summary.cancelled_at, Some(y + secs(1)));
    assert_eq!(t.runs.len(), 1, "no retry run");
    assert_eq!(run_of(&t, 1).state, State::Failed);
    assert_eq!(t.summary.last_attempt_run, Some(short.run_id));
    let res = c.task_result(Q, short.task_id).await.unwrap().unwrap();
    assert_eq!((res.state, res.failure_reason), (State::Cancelled, None));

    // Within max_duration the retry is scheduled; the claim at max_duration cancels the
    // task while its retry run is still sleeping.
    let z = y + secs(1000);
    set_now(&c, z).await;
    let long = c
        .spawn(Q, "long", &json!({}), &policy(None, Some(100)))
        .await
        .unwrap();
    assert_eq!(claim_all(&c).await, vec![long.run_id]);
    set_now(&c, z + secs(1)).await;
    c.fail_run(Q, long.run_id, &json!({"name": "E"}), None)
        .await
        .unwrap();
    let t = task(&c, long.task_id).await;
    assert_eq!(t.summary.state, State::Sleeping);
    assert_eq!(run_of(&t, 2).available_at, Some(z + secs(61)));
    let r2 = run_of(&t, 2).run_id;
    set_now(&c, z + secs(61)).await;
    assert_eq!(claim_all(&c).await, vec![r2]);
    c.schedule_run(Q, r2, z + secs(500)).await.unwrap();
    set_now(&c, z + secs(100)).await;
    assert_eq!(claim_all(&c).await, Vec::<Uuid>::new());
    let t = task(&c, long.task_id).await;
    assert_eq!(t.summary.state, State::Cancelled);
    assert_eq!(
        (run_of(&t, 1).state, run_of(&t, 2).state),
        (State::Failed, State::Cancelled)
    );
}

// ---- 12. invalid spawn options -------------------------------------------------------------

/// Calls spawn_task with raw options JSON and returns the error's (SQLSTATE, message).
async fn raw_spawn_error(c: &Client, name: &str, options: Value) -> (String, String) {
    let err = sqlx::query("select * from absurd.spawn_task($1, $2, $3, $4)")
        .bind(Q)
        .bind(name)
        .bind(json!({}))
        .bind(options.clone())
        .fetch_all(c.pool())
        .await
        .expect_err(&format!("spawn_task with options {options} must fail"));
    match err {
        sqlx::Error::Database(e) => (
            e.code().unwrap_or_default().to_string(),
            e.message().to_string(),
        ),
        other => panic!("expected a database error, got {other:?}"),
    }
}

async fn scenario_invalid_spawn(db: &TestDb) {
    let c = real_client(db).await;
    let strategy = |kind: &str, base, factor, max| RetryStrategy {
        kind: kind.into(),
        base_seconds: base,
        factor,
        max_seconds: max,
    };
    let with = |r: RetryStrategy| SpawnOptions {
        retry_strategy: Some(r),
        ..Default::default()
    };
    let cases = [
        (
            strategy("bogus", None, None, None),
            "Unsupported retry strategy kind \"bogus\"",
        ),
        (
            strategy("fixed", Some(86_401.0), None, None),
            "retry_strategy.base_seconds must be between 0 and 86400",
        ),
        (
            strategy("exponential", Some(-1.0), None, None),
            "retry_strategy.base_seconds must be between 0 and 86400",
        ),
        (
            strategy("exponential", Some(1.0), Some(-2.0), None),
            "retry_strategy.factor must be a finite non-negative number",
        ),
        (
            strategy("exponential", Some(1.0), Some(2.0), Some(100_000.0)),
            "retry_strategy.max_seconds must be between 0 and 86400",
        ),
    ];
    for (r, needle) in cases {
        expect_invalid_retry(c.spawn(Q, "t", &json!({}), &with(r.clone())).await, needle);
    }
    for (options, needle) in [
        (
            json!({"retry_strategy": "fast"}),
            "retry_strategy must be a JSON object",
        ),
        (
            json!({"retry_strategy": {"kind": "fixed", "base_seconds": "soon"}}),
            "retry_strategy contains an invalid number",
        ),
    ] {
        let (code, msg) = raw_spawn_error(&c, "t", options).await;
        assert_eq!(code, "AB003", "{msg}");
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }

    // max_attempts below 1: the client refuses before the database, the database refuses too.
    let zero = SpawnOptions {
        max_attempts: Some(0),
        ..Default::default()
    };
    match c.spawn(Q, "t", &json!({}), &zero).await {
        Err(ClientError::InvalidInput(msg)) => assert!(msg.contains("max_attempts"), "{msg}"),
        other => panic!("expected InvalidInput for max_attempts 0, got {other:?}"),
    }
    for n in [0, -3] {
        let (code, msg) = raw_spawn_error(&c, "t", json!({"max_attempts": n})).await;
        assert_eq!(code, "P0001", "{msg}");
        assert!(msg.contains("max_attempts must be >= 1"), "{msg}");
    }
    let (code, msg) = raw_spawn_error(&c, "  ", json!({})).await;
    assert_eq!(code, "P0001", "{msg}");
    assert!(msg.contains("task_name must be provided"), "{msg}");

    // Nothing was written by the rejected calls.
    let page = c
        .list_tasks(&TaskFilter {
            queue: Some(Q.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 0, "{:#?}", page.tasks);

    // Valid edge cases: JSON null max_attempts = unlimited; base 0 exponential.
    let row = sqlx::query("select task_id from absurd.spawn_task($1, 't', '{}', $2)")
        .bind(Q)
        .bind(json!({"max_attempts": null, "retry_strategy": {"kind": "exponential", "base_seconds": 0}}))
        .fetch_one(c.pool())
        .await
        .expect("valid options");
    let id: Uuid = row.get("task_id");
    let t = task(&c, id).await;
    assert_eq!(
        (t.summary.state, t.summary.max_attempts),
        (State::Pending, None)
    );
    let ok = c
        .spawn(
            Q,
            "t",
            &json!(null),
            &with(RetryStrategy::exponential(86_400.0, 0.0, 86_400.0)),
        )
        .await
        .unwrap();
    assert!(ok.created);
    assert_eq!(task(&c, ok.task_id).await.params, Value::Null);
}

// ---- 13. list_tasks ----------------------------------------------------------------------

async fn scenario_list_tasks(db: &TestDb) {
    let c = real_client(db).await;
    let one = SpawnOptions {
        max_attempts: Some(1),
        ..Default::default()
    };
    let mut alpha = Vec::new();
    let mut beta = Vec::new();
    for i in 0..7 {
        alpha.push(c.spawn(Q, "alpha", &json!({"i": i}), &one).await.unwrap());
    }
    for i in 0..5 {
        beta.push(c.spawn(Q, "beta", &json!({"i": i}), &one).await.unwrap());
    }
    assert_eq!(c.claim(Q, "w", 0, 100).await.unwrap().len(), 12);
    for s in &alpha[..2] {
        c.complete_run(Q, s.run_id, &json!("ok")).await.unwrap();
    }
    c.cancel_task(Q, alpha[2].task_id).await.unwrap();
    c.fail_run(Q, beta[0].run_id, &json!({"name": "E"}), None)
        .await
        .unwrap();
    let gamma = [
        c.spawn(Q, "gamma", &json!({}), &one).await.unwrap(),
        c.spawn(Q, "gamma", &json!({}), &one).await.unwrap(),
    ];

    let list = |state: Option<State>, name: Option<&str>| TaskFilter {
        queue: Some(Q.into()),
        state,
        task_name: name.map(str::to_string),
        limit: Some(1000),
        cursor: None,
        ..Default::default()
    };
    let ids = |page: &absurd_client::TaskPage| {
        page.tasks.iter().map(|t| t.task_id).collect::<HashSet<_>>()
    };
    let set = |v: &[&absurd_client::Spawned]| v.iter().map(|s| s.task_id).collect::<HashSet<_>>();

    let page = c
        .list_tasks(&list(Some(State::Completed), None))
        .await
        .unwrap();
    assert_eq!((page.total, ids(&page)), (2, set(&[&alpha[0], &alpha[1]])));
    assert!(page
        .tasks
        .iter()
        .all(|t| t.state == State::Completed && t.task_name == "alpha"));
    let page = c
        .list_tasks(&list(Some(State::Failed), None))
        .await
        .unwrap();
    assert_eq!((page.total, ids(&page)), (1, set(&[&beta[0]])));
    let page = c
        .list_tasks(&list(Some(State::Cancelled), None))
        .await
        .unwrap();
    assert_eq!((page.total, ids(&page)), (1, set(&[&alpha[2]])));
    let page = c
        .list_tasks(&list(Some(State::Pending), None))
        .await
        .unwrap();
    assert_eq!((page.total, ids(&page)), (2, set(&[&gamma[0], &gamma[1]])));
    let page = c
        .list_tasks(&list(Some(State::Running), None))
        .await
        .unwrap();
    assert_eq!(page.total, 8);
    let page = c
        .list_tasks(&list(Some(State::Running), Some("alpha")))
        .await
        .unwrap();
    assert_eq!(
        (page.total, ids(&page)),
        (4, alpha[3..].iter().map(|s| s.task_id).collect())
    );
    let page = c.list_tasks(&list(None, Some("beta"))).await.unwrap();
    assert_eq!(
        (page.total, ids(&page)),
        (5, beta.iter().map(|s| s.task_id).collect())
    );
    let page = c
        .list_tasks(&list(Some(State::Sleeping), None))
        .await
        .unwrap();
    assert_eq!(
        (page.total, page.tasks.len(), page.next_cursor.clone()),
        (0, 0, None)
    );
    let page = c.list_tasks(&list(None, Some("nope"))).await.unwrap();
    assert_eq!(
        (page.total, page.tasks.len(), page.next_cursor.clone()),
        (0, 0, None)
    );

    // Cursor pagination walks every page exactly once, newest (highest id) first.
    let all: HashSet<Uuid> = alpha
        .iter()
        .chain(&beta)
        .chain(&gamma)
        .map(|s| s.task_id)
        .collect();
    let walk = |filter: TaskFilter| {
        let c = c.clone();
        async move {
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            let mut filter = filter;
            for _ in 0..100 {
                let page = c.list_tasks(&filter).await.unwrap();
                sizes.push((page.tasks.len(), page.total));
                seen.extend(page.tasks.iter().map(|t| t.task_id));
                match page.next_cursor {
                    Some(cur) => filter.cursor = Some(cur),
                    None => return (seen, sizes),
                }
            }
            panic!("pagination did not end");
        }
    };
    let (seen, sizes) = walk(TaskFilter {
        queue: Some(Q.into()),
        limit: Some(3),
        ..Default::default()
    })
    .await;
    assert_eq!(sizes, vec![(3, 14), (3, 14), (3, 14), (3, 14), (2, 14)]);
    assert_eq!(seen.len(), 14);
    assert_eq!(
        seen.iter().copied().collect::<HashSet<_>>(),
        all,
        "every task exactly once"
    );
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "ordered by task_id descending"
    );

    let (seen, sizes) = walk(TaskFilter {
        queue: Some(Q.into()),
        task_name: Some("alpha".into()),
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(sizes, vec![(2, 7), (2, 7), (2, 7), (1, 7)]);
    assert_eq!(
        seen.iter().copied().collect::<HashSet<_>>(),
        alpha.iter().map(|s| s.task_id).collect()
    );

    // An exact multiple of the page size ends without an empty trailing page.
    let (seen, sizes) = walk(TaskFilter {
        queue: Some(Q.into()),
        task_name: Some("beta".into()),
        limit: Some(5),
        ..Default::default()
    })
    .await;
    assert_eq!((seen.len(), sizes), (5, vec![(5, 5)]));

    // Without a queue, every queue is listed.
    make_queue(&c, "sm-2").await;
    let extra = c.spawn("sm-2", "alpha", &json!({}), &one).await.unwrap();
    let page = c
        .list_tasks(&TaskFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 15);
    let found = page
        .tasks
        .iter()
        .find(|t| t.task_id == extra.task_id)
        .expect("task of sm-2 listed");
    assert_eq!(found.queue_name, "sm-2");
    let page = c
        .list_tasks(&TaskFilter {
            task_name: Some("alpha".into()),
            state: Some(State::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((page.total, page.tasks[0].task_id), (1, extra.task_id));
}
