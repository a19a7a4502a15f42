//! Partitioned storage and queue policies (spec §5.3, §5.13), through SQL and our client, on a
//! database migrated by absurd-host (`*_ours`) and on one installed by `absurdctl init`
//! (`*_upstream`): the same calls must give the same results and the same error messages.
//! The worker-facing behaviour of partitioned queues is covered by the state-machine and chaos
//! suites (`*_partitioned`), the absurdctl/SDK side by `interop_python`, and partition upkeep
//! by `maintain`.

mod common;

use std::time::Duration;

use absurd_client::partitions::{QueuePolicyUpdate, StorageMode};
use absurd_client::{Client, SpawnOptions};
use common::TestDb;
use serde_json::json;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;

macro_rules! both_schemas {
    ($scenario:ident => $ours:ident, $upstream:ident) => {
        #[tokio::test]
        async fn $ours() {
            $scenario(TestDb::migrated().await).await;
        }

        #[tokio::test]
        async fn $upstream() {
            $scenario(TestDb::upstream().await).await;
        }
    };
}

both_schemas!(time_buckets => time_buckets_ours, time_buckets_upstream);
both_schemas!(create_queue_modes => create_queue_modes_ours, create_queue_modes_upstream);
both_schemas!(default_partition_switch => default_partition_switch_ours, default_partition_switch_upstream);
both_schemas!(policy_validation => policy_validation_ours, policy_validation_upstream);
both_schemas!(idempotency_registry => idempotency_registry_ours, idempotency_registry_upstream);
both_schemas!(detach_and_drop => detach_and_drop_ours, detach_and_drop_upstream);

/// A client on one connection whose session clock is frozen at `at`.
async fn client_at(db: &TestDb, at: &str) -> Client {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    set_now(&pool, at).await;
    Client::new(pool)
}

async fn set_now(pool: &PgPool, at: &str) {
    sqlx::query("select set_config('absurd.fake_now', $1, false)")
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
}

async fn text(pool: &PgPool, sql: &str) -> Option<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The message of the error `sql` raises.
async fn error_of(pool: &PgPool, sql: &str) -> String {
    match sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
    {
        Ok(_) => panic!("{sql}: succeeded, an error was expected"),
        Err(sqlx::Error::Database(e)) => e.message().to_string(),
        Err(e) => panic!("{sql}: {e}"),
    }
}

async fn tables(pool: &PgPool, pattern: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "select relname::text, relkind::text from pg_class \
         where relnamespace = 'absurd'::regnamespace and relkind in ('r', 'p') \
           and relname like $1 order by 1",
    )
    .bind(pattern)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn time_buckets(db: TestDb) {
    let p = &db.pool;
    for (ts, tag) in [
        ("2024-01-01T00:00:00Z", "401"),
        ("2021-01-01T00:00:00Z", "053"),
        ("2024-12-31T23:59:59Z", "501"),
    ] {
        let got = text(p, &format!("select absurd.partition_week_tag('{ts}')")).await;
        assert_eq!(got.as_deref(), Some(tag), "{ts}");
    }
    // Sunday late evening in UTC-5 is already Monday in UTC.
    assert_eq!(
        text(
            p,
            "select absurd.week_bucket_utc('2024-03-10T22:00:00-05:00')::text || '' \
             from (select set_config('timezone', 'UTC', false)) s"
        )
        .await
        .as_deref(),
        Some("2024-03-11 00:00:00+00")
    );
    assert_eq!(
        text(
            p,
            "select absurd.uuidv7_floor('2024-03-04T00:00:00.0129Z')::text"
        )
        .await
        .as_deref(),
        Some("018e06c2-980c-7000-8000-000000000000")
    );
    assert_eq!(
        text(
            p,
            "select absurd.uuidv7_timestamp('018e06c2-980c-7000-8000-000000000000')::text || '' \
             from (select set_config('timezone', 'UTC', false)) s"
        )
        .await
        .as_deref(),
        Some("2024-03-04 00:00:00.012+00")
    );
    assert_eq!(
        text(p, "select absurd.uuidv7_timestamp(gen_random_uuid())::text").await,
        None,
        "a version-4 uuid has no instant"
    );
    let e = error_of(p, "select absurd.uuidv7_floor('1969-12-31T23:59:59Z')").await;
    assert!(e.contains("is outside UUIDv7 supported range"), "{e}");
}

async fn create_queue_modes(db: TestDb) {
    let c = client_at(&db, "2024-03-04T00:30:00Z").await;
    let p = c.pool();
    c.create_queue_with_mode("pq", StorageMode::Partitioned)
        .await
        .unwrap();
    c.create_queue_with_mode("pq", StorageMode::Partitioned)
        .await
        .unwrap();
    c.create_queue("uq").await.unwrap();
    c.create_queue_with_mode("uq", StorageMode::Unpartitioned)
        .await
        .unwrap();
    let e = c.create_queue("pq").await.unwrap_err().to_string();
    assert!(
        e.contains(r#"Queue "pq" already exists with storage mode "partitioned""#),
        "{e}"
    );
    let e = c
        .create_queue_with_mode("uq", StorageMode::Partitioned)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"Queue "uq" already exists with storage mode "unpartitioned""#),
        "{e}"
    );
    let e = error_of(p, "select absurd.create_queue('x', ' Sideways ')").await;
    assert_eq!(e, r#"Unsupported queue storage mode " Sideways ""#);
    // Mode text is trimmed and lower-cased.
    sqlx::query("select absurd.create_queue('pq', '  PARTITIONED ')")
        .execute(p)
        .await
        .unwrap();

    // Parents are partitioned, e_ and i_ are plain; weeks 409 (a day back from a Monday
    // 00:30) to 414 (28 days ahead) and the DEFAULT children exist.
    let kinds = tables(p, "_\\_pq").await;
    assert_eq!(
        kinds,
        [
            ("c_pq", "p"),
            ("e_pq", "r"),
            ("i_pq", "r"),
            ("r_pq", "p"),
            ("t_pq", "p"),
            ("w_pq", "p")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .to_vec()
    );
    let weeks: Vec<String> = tables(p, "t\\_pq\\_%")
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(
        weeks,
        ["t_pq_409", "t_pq_410", "t_pq_411", "t_pq_412", "t_pq_413", "t_pq_414", "t_pq_d"]
    );
    assert!(
        tables(p, "i\\_uq").await.is_empty(),
        "unpartitioned queues have no i_ table"
    );
    let indexes: Vec<String> = sqlx::query_scalar(
        "select indexname::text from pg_indexes where schemaname = 'absurd' \
         and tablename in ('t_pq', 'r_pq', 'w_pq', 'e_pq', 'i_pq') \
         and indexname not like '%pkey' order by 1",
    )
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "e_pq_eai", "i_pq_ti", "r_pq_cei", "r_pq_sai", "r_pq_ti", "t_pq_ci", "w_pq_eni",
            "w_pq_ti"
        ]
    );

    // Rows land in the week of the (fake) clock.
    let s = c
        .spawn("pq", "job", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let home = text(
        p,
        &format!(
            "select tableoid::regclass::text from absurd.t_pq where task_id = '{}'",
            s.task_id
        ),
    )
    .await;
    assert_eq!(home.as_deref(), Some("absurd.t_pq_410"));

    // ensure_partitions follows the clock and the policy, idempotently.
    c.set_queue_policy(
        "pq",
        &QueuePolicyUpdate {
            partition_lookahead: Some("0 days".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    set_now(p, "2024-05-13T12:00:00Z").await;
    c.ensure_partitions(Some("pq")).await.unwrap();
    c.ensure_partitions(None).await.unwrap();
    let weeks: Vec<String> = tables(p, "t\\_pq\\_%")
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert!(
        weeks.contains(&"t_pq_420".to_string()) && !weeks.contains(&"t_pq_421".to_string()),
        "{weeks:?}"
    );
    let e = error_of(p, "select absurd.ensure_partitions('nope')").await;
    assert_eq!(e, r#"Queue "nope" does not exist"#);

    c.drop_queue("pq").await.unwrap();
    assert!(
        tables(p, "%pq%").await.is_empty(),
        "{:?}",
        tables(p, "%pq%").await
    );
}

async fn default_partition_switch(db: TestDb) {
    let c = client_at(&db, "2024-03-04T00:30:00Z").await;
    let p = c.pool();
    c.create_queue_with_mode("dq", StorageMode::Partitioned)
        .await
        .unwrap();
    // Far outside the window: the task goes to the DEFAULT child.
    set_now(p, "2025-01-06T00:00:00Z").await;
    let s = c
        .spawn("dq", "job", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let disable = QueuePolicyUpdate {
        default_partition: Some(" Disabled ".into()),
        ..Default::default()
    };
    let e = c
        .set_queue_policy("dq", &disable)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"Cannot disable default_partition for queue "dq": default partition "t_dq_d" is not empty"#),
        "{e}"
    );
    let pol = c.get_queue_policy("dq").await.unwrap().unwrap();
    assert_eq!(
        pol.default_partition, "enabled",
        "a refused change changes nothing"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "delete from absurd.r_dq where task_id = '{0}'",
        s.task_id
    )))
    .execute(p)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "delete from absurd.t_dq where task_id = '{}'",
        s.task_id
    )))
    .execute(p)
    .await
    .unwrap();
    c.set_queue_policy("dq", &disable).await.unwrap();
    assert_eq!(
        c.get_queue_policy("dq")
            .await
            .unwrap()
            .unwrap()
            .default_partition,
        "disabled"
    );
    assert!(tables(p, "%\\_dq\\_d").await.is_empty());
    // Without a DEFAULT child, an insert outside every week fails.
    let e = c
        .spawn("dq", "job", &json!({}), &SpawnOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no partition"), "{e}");

    c.set_queue_policy(
        "dq",
        &QueuePolicyUpdate {
            default_partition: Some("enabled".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let d: Vec<String> = tables(p, "%\\_dq\\_d")
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(d, ["c_dq_d", "r_dq_d", "t_dq_d", "w_dq_d"]);
    // Enabling also ensured the weeks of the (moved) clock.
    assert!(!tables(p, "t\\_dq\\_502").await.is_empty());
    c.spawn("dq", "job", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
}

async fn policy_validation(db: TestDb) {
    let c = Client::new(db.pool.clone());
    let p = &db.pool;
    c.create_queue("uq").await.unwrap();
    c.create_queue_with_mode("pq", StorageMode::Partitioned)
        .await
        .unwrap();
    for (call, message) in [
        (
            "select absurd.set_queue_policy('uq', '[]')",
            "Queue policy must be a JSON object",
        ),
        (
            r#"select absurd.set_queue_policy('nope', '{"colour": 1}')"#,
            r#"Unsupported queue policy key "colour""#,
        ),
        (
            r#"select absurd.set_queue_policy('nope', '{"cleanup_limit": 5}')"#,
            r#"Queue "nope" does not exist"#,
        ),
        (
            r#"select absurd.set_queue_policy('pq', '{"partition_lookahead": "-1 day"}')"#,
            "partition_lookahead must be non-negative",
        ),
        (
            r#"select absurd.set_queue_policy('pq', '{"partition_lookback": "-1 day"}')"#,
            "partition_lookback must be non-negative",
        ),
        (
            r#"select absurd.set_queue_policy('pq', '{"cleanup_ttl": "-1 day"}')"#,
            "cleanup_ttl must be non-negative",
        ),
        (
            r#"select absurd.set_queue_policy('pq', '{"cleanup_limit": 0}')"#,
            "cleanup_limit must be at least 1",
        ),
        (
            r#"select absurd.set_queue_policy('pq', '{"detach_mode": "all"}')"#,
            r#"Unsupported detach mode "all""#,
        ),
        (
            r#"select absurd.set_queue_policy('pq', '{"detach_min_age": "-1 day"}')"#,
            "detach_min_age must be non-negative",
        ),
        (
            r#"select absurd.set_queue_policy('pq', '{"default_partition": "maybe"}')"#,
            r#"Unsupported default_partition mode "maybe""#,
        ),
        (
            r#"select absurd.set_queue_policy('uq', '{"default_partition": "enabled"}')"#,
            "default_partition policy is only supported for partitioned queues",
        ),
    ] {
        assert_eq!(error_of(p, call).await, message, "{call}");
    }
    c.set_queue_policy(
        "pq",
        &QueuePolicyUpdate {
            partition_lookahead: Some("35 days".into()),
            cleanup_limit: Some(7),
            detach_mode: Some(" EMPTY ".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pol = c.get_queue_policy("pq").await.unwrap().unwrap();
    assert_eq!(
        (
            pol.partition_lookahead.as_str(),
            pol.cleanup_limit,
            pol.detach_mode.as_str(),
            pol.cleanup_ttl.as_str()
        ),
        ("35 days", 7, "empty", "30 days")
    );
    assert!(c.get_queue_policy("nope").await.unwrap().is_none());
}

async fn idempotency_registry(db: TestDb) {
    let c = Client::new(db.pool.clone());
    let p = &db.pool;
    c.create_queue_with_mode("iq", StorageMode::Partitioned)
        .await
        .unwrap();
    let mut wake = PgListener::connect(&db.url).await.unwrap();
    wake.listen("absurd_wakeup").await.unwrap();
    let opts = SpawnOptions {
        idempotency_key: Some("k".into()),
        ..Default::default()
    };
    let a = c.spawn("iq", "job", &json!(1), &opts).await.unwrap();
    let b = c.spawn("iq", "other", &json!(2), &opts).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!((b.task_id, b.run_id, b.attempt), (a.task_id, a.run_id, 1));
    let reg = text(
        p,
        "select task_id::text from absurd.i_iq where idempotency_key = 'k'",
    )
    .await;
    assert_eq!(reg, Some(a.task_id.to_string()));

    // A reserved key whose task vanished (deleted behind the registry's back) is the
    // concurrent-cleanup case: serialization failure, retryable.
    sqlx::query("insert into absurd.i_iq values ('ghost', gen_random_uuid())")
        .execute(p)
        .await
        .unwrap();
    let err = sqlx::query(
        r#"select * from absurd.spawn_task('iq', 'job', '{}', '{"idempotency_key": "ghost"}')"#,
    )
    .execute(p)
    .await
    .unwrap_err();
    let db_err = err.as_database_error().expect("a database error");
    assert_eq!(db_err.code().as_deref(), Some("40001"));
    assert_eq!(
        db_err.message(),
        r#"Idempotency key "ghost" in queue "iq" was concurrently cleaned up"#
    );

    // Cleanup frees the key.
    c.cancel_task("iq", a.task_id).await.unwrap();
    assert_eq!(c.cleanup_tasks("iq", 0, 10).await.unwrap(), 1);
    assert_eq!(
        text(
            p,
            "select count(*)::text from absurd.i_iq where idempotency_key = 'k'"
        )
        .await
        .as_deref(),
        Some("0")
    );
    let again = c.spawn("iq", "job", &json!(1), &opts).await.unwrap();
    assert!(again.created && again.task_id != a.task_id);

    // Spawns into a partitioned queue wake listeners, where the schema sends wake-ups (ours).
    let ours = text(p, "select to_regproc('absurd._host_notify_ready')::text")
        .await
        .is_some();
    if ours {
        let n = tokio::time::timeout(Duration::from_secs(30), wake.recv())
            .await
            .expect("a wake-up within 30 s")
            .unwrap();
        assert_eq!(n.payload(), "iq");
    }
}

async fn detach_and_drop(db: TestDb) {
    let c = client_at(&db, "2024-03-04T00:30:00Z").await;
    let p = c.pool();
    c.create_queue_with_mode("xq", StorageMode::Partitioned)
        .await
        .unwrap();
    c.spawn("xq", "job", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    set_now(p, "2024-06-03T00:00:00Z").await;
    assert!(
        c.list_detach_candidates(Some("xq"))
            .await
            .unwrap()
            .is_empty(),
        "detach_mode none lists nothing"
    );
    c.set_queue_policy(
        "xq",
        &QueuePolicyUpdate {
            detach_mode: Some("empty".into()),
            detach_min_age: Some("30 days".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let cands = c.list_detach_candidates(Some("xq")).await.unwrap();
    let listed: Vec<String> = cands.iter().map(|d| d.partition_table.clone()).collect();
    // Weeks 409..414, all ended before 2024-05-04; t/r of 410 hold the task; DEFAULTs never.
    // Order: parents t, r, c, w; by bound within each.
    let mut want = vec![];
    for prefix in ["t", "r", "c", "w"] {
        for week in 409..=414 {
            if !(week == 410 && (prefix == "t" || prefix == "r")) {
                want.push(format!("{prefix}_xq_{week}"));
            }
        }
    }
    // Parents in the order t, r, c, w (within one parent the order is not specified).
    let rank = |t: &str| "trcw".find(&t[..1]).unwrap();
    assert!(
        listed.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
        "{listed:?}"
    );
    let mut sorted = listed.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want);
    assert!(cands
        .iter()
        .all(|d| d.queue_name == "xq" && d.partition_table.starts_with(&d.parent_table)));
    let e = error_of(p, "select * from absurd.list_detach_candidates('nope')").await;
    assert_eq!(e, r#"Queue "nope" does not exist"#);

    // drop_detached_partition: refuses attached tables, drops detached ones.
    assert!(!c.drop_detached_partition("t_xq_409").await.unwrap());
    sqlx::raw_sql("alter table absurd.t_xq detach partition absurd.t_xq_409")
        .execute(p)
        .await
        .unwrap();
    assert!(c.drop_detached_partition(" t_xq_409 ").await.unwrap());
    assert!(tables(p, "t\\_xq\\_409").await.is_empty());
    assert!(
        !c.drop_detached_partition("t_xq_409").await.unwrap(),
        "already gone"
    );
    let e = error_of(p, "select absurd.drop_detached_partition('  ')").await;
    assert_eq!(e, "partition table must be provided");
}

/// Our own helpers (not upstream's): the detach statement, the missing and detached lists,
/// and drop_detached_partition's refusal to drop anything that is not a queue's partition.
#[tokio::test]
async fn our_partition_helpers() {
    let db = TestDb::migrated().await;
    let c = client_at(&db, "2024-03-04T00:30:00Z").await;
    let p = c.pool();
    c.create_queue_with_mode("hq", StorageMode::Partitioned)
        .await
        .unwrap();
    c.create_queue("plain").await.unwrap();
    assert!(c.has_partition_helpers().await.unwrap());
    assert!(c.missing_partitions(None).await.unwrap().is_empty());
    set_now(p, "2024-03-18T00:30:00Z").await;
    let missing: Vec<String> = c
        .missing_partitions(Some("hq"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.partition_table)
        .collect();
    assert_eq!(
        missing,
        [
            "t_hq_415", "r_hq_415", "c_hq_415", "w_hq_415", "t_hq_416", "r_hq_416", "c_hq_416",
            "w_hq_416"
        ]
    );

    // Not candidates (detach_mode none): nothing detached.
    assert!(c.detach_partition("t_hq_409").await.unwrap().is_none());
    c.set_queue_policy(
        "hq",
        &QueuePolicyUpdate {
            detach_mode: Some("empty".into()),
            detach_min_age: Some("0 days".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // With DEFAULT children the detach is the plain form; without, CONCURRENTLY.
    let d = c
        .detach_partition("t_hq_409")
        .await
        .unwrap()
        .expect("a candidate");
    assert_eq!(
        d.statement,
        "alter table absurd.t_hq detach partition absurd.t_hq_409"
    );
    let left = c.detached_partitions().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].partition_table.as_str(), left[0].is_empty),
        ("t_hq_409", true)
    );
    assert!(c.drop_detached_partition("t_hq_409").await.unwrap());
    c.set_queue_policy(
        "hq",
        &QueuePolicyUpdate {
            default_partition: Some("disabled".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let d = c
        .detach_partition("r_hq_409")
        .await
        .unwrap()
        .expect("a candidate");
    assert_eq!(
        d.statement,
        "alter table absurd.r_hq detach partition absurd.r_hq_409 concurrently"
    );
    assert!(c.drop_detached_partition("r_hq_409").await.unwrap());

    // Never a queue's own table, nor anything else in the schema.
    for t in ["t_plain", "e_hq", "i_hq", "queues"] {
        assert!(!c.drop_detached_partition(t).await.unwrap(), "{t}");
    }
    assert!(!tables(p, "t\\_plain").await.is_empty());
    assert!(!tables(p, "queues").await.is_empty());
}
