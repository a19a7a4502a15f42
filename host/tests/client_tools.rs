//! The absurd-client statements that tooling uses (the benchmark's fixtures and readings,
//! creating and dropping databases, the API pool's statement timeout), against a real server.

mod common;

use std::time::Duration;

use absurd_client::{db, measure};
use common::{admin_url, db_url, setup};
use serde_json::json;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn bulk_spawns_sleepers_and_drain_readings() {
    let (test, _client) = setup("tools").await;
    let pool = &test.pool;

    assert_eq!(
        measure::spawn_numbered(pool, "tools", "noop", 0, 9)
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        measure::spawn_copies(pool, "tools", "sleeper", &json!({"mode": "x"}), 3)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        measure::runs_in_state(pool, "tools", "pending")
            .await
            .unwrap(),
        13
    );

    // Only the sleepers sleep, and a year from now.
    measure::put_to_sleep(pool, "tools", "sleeper", 365.0 * 86_400.0)
        .await
        .unwrap();
    assert_eq!(
        measure::runs_in_state(pool, "tools", "sleeping")
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        measure::runs_in_state(pool, "tools", "pending")
            .await
            .unwrap(),
        10
    );
    let far: i64 = sqlx::query_scalar(
        "select count(*) from absurd.\"r_tools\" r join absurd.\"t_tools\" t using (task_id)
         where t.state = 'sleeping' and r.available_at > now() + interval '300 days'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(far, 3);
    measure::refresh_statistics(pool).await.unwrap();

    // Nothing ran yet: no drain, no waits.
    assert_eq!(
        measure::drain_rate(pool, "tools", "w").await.unwrap(),
        (0, None)
    );
    assert!(measure::first_run_waits_ms(pool, "tools")
        .await
        .unwrap()
        .is_empty());

    // The spawned params are numbered 0..=9.
    let numbers: Vec<i64> = sqlx::query_scalar(
        "select (params->>'i')::bigint from absurd.\"t_tools\" where task_name = 'noop' order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(numbers, (0..10).collect::<Vec<i64>>());

    // This test's own connections show up as backends of its database.
    let name = test.name.clone();
    let app: String = sqlx::query_scalar("select current_setting('application_name')")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(!measure::backend_pids(pool, &name, &app)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        measure::listening_backends(pool, &name, &app)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn databases_are_created_once_and_dropped() {
    let name = format!("ah_tools_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    assert!(db::create_database_if_missing(&mut admin, &name)
        .await
        .unwrap());
    assert!(!db::create_database_if_missing(&mut admin, &name)
        .await
        .unwrap());
    let err = db::create_database(&mut admin, &name).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");

    // A session open on it does not stop the drop.
    let open = PgConnection::connect(&db_url(&name)).await.unwrap();
    db::drop_database(&mut admin, &name).await.unwrap();
    drop(open);
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(!exists);
    // Dropping what is not there is not an error.
    db::drop_database(&mut admin, &name).await.unwrap();
}

#[tokio::test]
async fn the_lazy_pool_sets_the_statement_timeout_on_every_connection() {
    // Lazy: an unreachable server is not an error until the pool is used.
    let down = db::lazy_pool_with_statement_timeout(
        "postgres://postgres@127.0.0.1:1/none",
        2,
        Duration::from_millis(500),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(sqlx::query("select 1").execute(&down).await.is_err());

    let pool = db::lazy_pool_with_statement_timeout(
        &admin_url(),
        2,
        Duration::from_secs(10),
        Duration::from_millis(200),
    )
    .unwrap();
    let shown: String = sqlx::query_scalar("show statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(shown, "200ms");
    let err = sqlx::query("select pg_sleep(5)")
        .execute(&pool)
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
}
