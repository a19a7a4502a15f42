//! Connection strings behave as libpq's do (psql, psycopg, absurdctl): what the URL leaves out
//! comes from the `PG*` environment, then from the OS user; passwords never reach a message.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{setup, TestDb};

fn host(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
    cmd.args(args)
        .env_remove("ABSURD_DATABASE_URL")
        .env_remove("ABSURD_QUEUE_NAME")
        .env_remove("ABSURD_HOST_CONFIG");
    for key in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
    ] {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run absurd-host")
}

fn os_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `postgresql:///db?host=/var/run/postgresql` connects as the OS user, as psql does. Where
/// that role does not exist the server's refusal names the OS user (never a made-up name).
#[tokio::test]
async fn a_url_without_a_user_connects_as_the_os_user() {
    let socket_dir = "/var/run/postgresql";
    if !Path::new(socket_dir).join(".s.PGSQL.5432").exists() {
        eprintln!("skipped: no PostgreSQL socket in {socket_dir}");
        return;
    }
    // PGUSER, where the test's environment sets one, comes first (as in libpq).
    let user = std::env::var("PGUSER").unwrap_or_else(|_| os_user());
    let url = format!("postgresql:///postgres?host={socket_dir}");
    match absurd_client::db::connect(&url, 1).await {
        Ok(pool) => {
            let current: String = sqlx::query_scalar("select current_user::text")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(current, user);
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&format!("\"{user}\"")), "{text}");
        }
    }
}

/// `PGHOST`, `PGPORT`, `PGUSER` and `PGDATABASE` fill in what the URL leaves out; the URL's
/// own parts win over them.
#[tokio::test]
async fn the_pg_environment_fills_in_what_the_url_leaves_out() {
    let (db, _client) = setup("envq").await;
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", "5432"),
        ("PGUSER", "postgres"),
        ("PGDATABASE", db.name.as_str()),
    ];
    let out = host(
        &["queue", "list", "--json", "--database-url", "postgresql://"],
        &env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("envq"), "{stdout}");

    // The URL's port wins over PGPORT.
    let other = TestDb::migrated().await;
    let url = format!("postgresql://127.0.0.1:5432/{}", other.name);
    let out = host(
        &["queue", "list", "--json", "--database-url", &url],
        &[("PGPORT", "1"), ("PGUSER", "postgres")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("envq"));

    // PGSSLMODE=require is honoured: this server has no TLS, so the connection is refused.
    let out = host(
        &["queue", "list", "--database-url", "postgresql://"],
        &[&env[..], &[("PGSSLMODE", "require")]].concat(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("tls") || err.contains("ssl"), "{err}");
}

/// A password given as `?password=` never appears in an error (nor does one in the user info:
/// bad_input.rs).
#[test]
fn passwords_in_query_parameters_are_redacted() {
    let out = host(
        &[
            "queue",
            "list",
            "--database-url",
            "postgresql://someone@127.0.0.1:1/absurd?password=hunter2&sslmode=disable",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

/// The pool's warm connection (`absurd_client::pooling`): statements that follow each other
/// run on one server backend instead of on each idle connection in turn; a pool of two keeps
/// none (so transactions and the pool's other users always find a free connection); a pool
/// whose owner closes it is not held open by the warm connection.
#[tokio::test]
async fn consecutive_statements_run_on_the_warm_connection() {
    use absurd_client::pooling::Db;
    use sqlx::postgres::PgPoolOptions;
    use std::time::{Duration, Instant};

    let db = TestDb::empty().await;
    let backend = |d: &Db| {
        let d = d.clone();
        async move {
            sqlx::query_scalar::<_, i32>("select pg_backend_pid()")
                .fetch_one(&d)
                .await
                .unwrap()
        }
    };
    let pool = |n: u32| {
        PgPoolOptions::new()
            .max_connections(n)
            .min_connections(n)
            .test_before_acquire(false)
            .connect(&db.url)
    };

    // Five open connections: the statements land on one backend. (Taken in turn, as the
    // pool alone hands them out, each would get about 4 of 20. A statement that follows
    // after the warm time, on a busy machine, may land elsewhere: hence "most".)
    let p5 = pool(5).await.unwrap();
    let warm = Db::direct(p5.clone());
    let first = backend(&warm).await;
    let mut same = 0;
    for _ in 0..20 {
        if backend(&warm).await == first {
            same += 1;
        }
    }
    assert!(
        same >= 15,
        "only {same} of 20 statements on the warm connection"
    );
    // A transaction takes a connection of its own while the warm one is out.
    let mut tx = warm.begin().await.unwrap();
    let in_tx: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_ne!(in_tx, 0);
    // Closing the pool finishes: the idle warm connection goes back within its time.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), p5.close())
        .await
        .expect("the pool closed with the warm connection out");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Two connections: no warm one, so the pool's order applies (first in, first out).
    let p2 = pool(2).await.unwrap();
    let plain = Db::direct(p2.clone());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(backend(&plain).await);
    }
    assert_eq!(
        seen.len(),
        2,
        "a pool of two uses both connections: {seen:?}"
    );
    p2.close().await;
}
