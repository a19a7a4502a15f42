//! First run and operations: the private PostgreSQL cluster, `absurd-host dev`, the demo and
//! `absurd-host check`.
//!
//! Everything here runs in temporary directories (never `./.absurd`) with
//! `ABSURD_DATABASE_URL` removed, and never touches the machine's own PostgreSQL cluster.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use absurd_host::embedded::EmbeddedPostgres;
use sqlx::Connection;

/// A fresh temporary directory, removed when dropped (unless the test failed).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "absurd-host-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The example components in `examples/components/`, where `examples/absurd-host.toml`
/// expects them (built once per test binary, as `scripts/demo` does).
fn example_config() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(common::repo_root().join("scripts/build-examples"))
            .arg("--examples")
            .output()
            .expect("run scripts/build-examples");
        assert!(
            out.status.success(),
            "scripts/build-examples --examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let config = common::repo_root().join("examples/absurd-host.toml");
    assert!(config.is_file());
    config
}

/// `absurd-host ARGS` in `cwd` with a clean environment (no `ABSURD_*` variables; the API, if
/// any, on a free port), killed after `limit`. Returns (status, stdout, stderr).
fn run_host(cwd: &Path, args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let out = cwd.join(format!("out-{}", uuid::Uuid::new_v4().simple()));
    let err = cwd.join(format!("err-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ABSURD_") {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd
        .args(args)
        .current_dir(cwd)
        .env("ABSURD_API_LISTEN", "127.0.0.1:0")
        .env(
            "ABSURD_LOG",
            "warn,absurd_host=info,absurd_engine=info,absurd_client=info",
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start absurd-host");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // SIGTERM first, so that a private cluster gets stopped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "absurd-host {args:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    (status, stdout, stderr)
}

async fn count_rows(url: &str) -> Result<i64, sqlx::Error> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    let n = sqlx::query_scalar("select count(*) from kept")
        .fetch_one(&mut c)
        .await?;
    c.close().await?;
    Ok(n)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_cluster_starts_restarts_reuses_its_data_and_stops() {
    let tmp = TempDir::new("embedded");
    let data = tmp.path().join("pgdata");

    let d = data.clone();
    let pg = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .expect("start");
    let url = pg.url();
    // Over the private socket (see `embedded_cluster_is_socket_only_and_peer_only`).
    assert!(
        url.starts_with("postgresql://") && url.contains("@localhost/absurd?host=/"),
        "{url}"
    );
    assert!(data.join("PG_VERSION").is_file());
    let state = std::fs::read_to_string(data.join("absurd-host.state")).unwrap();
    assert!(state.contains("superuser="), "{state}");
    if unsafe { libc::geteuid() } == 0 {
        // PostgreSQL refuses root: the data belongs to the `postgres` system user.
        use std::os::unix::fs::MetadataExt;
        assert_ne!(std::fs::metadata(&data).unwrap().uid(), 0);
    }

    {
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::raw_sql("create table kept (x int); insert into kept values (1), (2)")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }

    // A second start on the same data directory is refused while this one lives.
    let d = data.clone();
    let err = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another absurd-host is using"), "{err}");

    // Restart: same URL, same data.
    let pg = blocking(move || {
        pg.restart().expect("restart");
        pg
    })
    .await;
    assert_eq!(pg.url(), url);
    assert_eq!(count_rows(&url).await.unwrap(), 2);

    // An outage: stopped at once, unreachable, then back on the same URL.
    let pg = blocking(move || {
        pg.stop_now().expect("stop_now");
        pg
    })
    .await;
    assert!(!pg.is_running());
    assert!(count_rows(&url).await.is_err(), "the cluster is down");
    let pg = blocking(move || {
        pg.start_again().expect("start_again");
        pg
    })
    .await;
    assert_eq!(count_rows(&url).await.unwrap(), 2);

    // Stop: the server is gone.
    let pid = postmaster_pid(&data).expect("postmaster.pid while running");
    blocking(move || {
        pg.stop().expect("stop");
        drop(pg);
    })
    .await;
    assert!(!data.join("postmaster.pid").exists());
    assert!(!is_postgres(pid), "the server process is gone");
    assert!(count_rows(&url).await.is_err());

    // A crashed run leaves a stale postmaster.pid (its process long gone): start normally.
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let id = c.id() as i32;
        c.wait().unwrap();
        id
    };
    std::fs::write(
        data.join("postmaster.pid"),
        format!(
            "{dead}\n{}\n0\n5432\n{}\n\n",
            data.display(),
            pg_socket_dir(&url)
        ),
    )
    .unwrap();

    // Reuse: the same data, on the same socket.
    let d = data.clone();
    let pg = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .expect("second start");
    assert_eq!(pg.url(), url, "a second run has the same URL");
    assert_eq!(count_rows(&pg.url()).await.unwrap(), 2, "the data was kept");
    blocking(move || drop(pg)).await;
    assert!(
        !data.join("postmaster.pid").exists(),
        "drop stops the cluster"
    );
}

/// The `host=` directory of a socket URL.
fn pg_socket_dir(url: &str) -> String {
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    opts.get_socket()
        .expect("a socket URL")
        .to_string_lossy()
        .into_owned()
}

/// A live (not zombie) postgres process.
fn is_postgres(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let close = stat.rfind(')').unwrap();
    let state = stat[close + 1..].trim_start().chars().next().unwrap();
    stat.contains("(postgres)") && !matches!(state, 'Z' | 'X')
}

/// `absurd-host dev`: SIGTERM stops the worker and the cluster; after a SIGKILL the next start
/// recognises the server left running and takes it over.
#[test]
#[allow(clippy::zombie_processes)] // `start_dev` returns its child, and the test waits for it
fn dev_stops_its_cluster_on_sigterm_and_recovers_after_a_crash() {
    let tmp = TempDir::new("dev");
    let data = tmp.path().join("db");
    let start_dev = || {
        let log = tmp
            .path()
            .join(format!("dev-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ABSURD_") {
                cmd.env_remove(&k);
            }
        }
        let mut child = cmd
            .args(["dev", "--data-dir"])
            .arg(&data)
            .current_dir(tmp.path())
            .env("ABSURD_API_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Press Ctrl-C to stop") {
                return (child, text);
            }
            if Instant::now() > deadline {
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let _ = child.wait();
                panic!("absurd-host dev did not come up:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // SIGTERM: a clean stop.
    let (mut child, banner) = start_dev();
    assert!(
        banner.contains("private PostgreSQL") && banner.contains("API        http://127.0.0.1:"),
        "{banner}"
    );
    let pid = postmaster_pid(&data).expect("the cluster runs");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "dev exits 0 on SIGTERM: {status:?}");
    assert!(
        !data.join("postmaster.pid").exists(),
        "the cluster was stopped"
    );
    assert!(!is_postgres(pid), "the server process is gone");

    // SIGKILL: the server outlives absurd-host ...
    let (mut child, _) = start_dev();
    let pid = postmaster_pid(&data).expect("the cluster runs");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        is_postgres(pid),
        "the server outlives a SIGKILLed absurd-host"
    );
    // ... and the next start stops it and starts afresh, with the data.
    let pg = EmbeddedPostgres::start(&data).expect("start after a crash");
    let new_pid = postmaster_pid(&data).unwrap();
    assert_ne!(new_pid, pid);
    drop(pg);
    assert!(!data.join("postmaster.pid").exists());
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The README's first-run command, as CI runs it: the demo in a clean directory without
/// `ABSURD_DATABASE_URL`, with a time limit; then once more, reusing the data.
#[test]
fn demo_runs_the_showcase_in_a_clean_environment() {
    let config = example_config();
    let tmp = TempDir::new("demo");
    let config = config.to_str().unwrap();
    let limit = Duration::from_secs(240);

    for run in 1..=2 {
        let (status, stdout, stderr) = run_host(tmp.path(), &["demo", "--config", config], limit);
        assert!(
            status.success(),
            "demo run {run} failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let row = |label: &str| -> String {
            stdout
                .lines()
                .filter(|l| l.trim_start().starts_with(['✓', '✗']))
                .find(|l| {
                    // Columns are separated by two or more spaces; the second is the label.
                    l.split("  ")
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .nth(1)
                        == Some(label)
                })
                .unwrap_or_else(|| panic!("no row {label:?} in\n{stdout}"))
                .to_string()
        };
        for (label, kind, outcome) in [
            ("echo", "wasm", "completed"),
            ("durable (sleep + event)", "wasm", "completed"),
            ("calibration-plan", "wasm", "completed"),
            ("calibration-solve", "native", "completed"),
            ("zoo infinite-loop", "wasm", "failed: $Timeout"),
            ("zoo memory-bomb", "wasm", "failed: $MemoryLimit"),
        ] {
            let r = row(label);
            assert!(
                r.trim_start().starts_with('✓'),
                "{label} not as expected: {r}\n{stdout}"
            );
            assert!(
                r.contains(kind) && r.contains(outcome),
                "{label}: {r}\n{stdout}"
            );
        }
        assert!(stdout.contains("All 6 tasks ended as expected"), "{stdout}");
        assert!(stdout.contains("  API  http://127.0.0.1:"), "{stdout}");
        assert!(
            stdout.contains("private PostgreSQL"),
            "the embedded cluster was used:\n{stdout}"
        );
        let data = tmp.path().join(".absurd/pgdata");
        assert!(data.join("PG_VERSION").is_file());
        assert!(
            !data.join("postmaster.pid").exists(),
            "the demo stopped its cluster"
        );
    }
}

/// `check` on a configuration whose every part is wrong, each with a fix.
#[test]
fn check_reports_a_broken_config_with_a_fix() {
    let tmp = TempDir::new("check-config");
    let cfg = tmp.path().join("absurd-host.toml");
    std::fs::write(&cfg, "[tasks.echo\nkind = \"wasm\"\n").unwrap();
    let (status, stdout, _) = run_host(
        tmp.path(),
        &["check", "--no-database", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✗ config") && stdout.contains("fix: correct the file"),
        "{stdout}"
    );

    // A kind that does not exist.
    std::fs::write(&cfg, "[tasks.echo]\nkind = \"python\"\n").unwrap();
    let (status, stdout, _) = run_host(
        tmp.path(),
        &["check", "--no-database", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✗ config") && stdout.contains("python"),
        "{stdout}"
    );

    // A missing file.
    let (status, stdout, _) = run_host(
        tmp.path(),
        &[
            "check",
            "--no-database",
            "--config",
            "/nonexistent/absurd-host.toml",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("cannot read") && stdout.contains("fix: give the path of an existing"),
        "{stdout}"
    );
}

/// `check` on task types that cannot load: a file that is not wasm, a missing component, a
/// native program that does not exist, an unknown builtin. The good ones still pass.
#[test]
fn check_reports_broken_task_types_with_a_fix() {
    let tmp = TempDir::new("check-tasks");
    std::fs::write(tmp.path().join("broken.wasm"), "this is not wasm").unwrap();
    let cfg = tmp.path().join("absurd-host.toml");
    std::fs::write(
        &cfg,
        "[tasks.broken]\nkind = \"wasm\"\ncomponent = \"broken.wasm\"\n\
         [tasks.missing]\nkind = \"wasm\"\ncomponent = \"nowhere/missing.wasm\"\n\
         [tasks.solve]\nkind = \"native\"\nprogram = \"./no-such-program\"\n\
         [tasks.typo]\nkind = \"builtin\"\nbuiltin = \"eccho\"\n\
         [tasks.echo]\nkind = \"builtin\"\n",
    )
    .unwrap();
    let (status, stdout, _) = run_host(
        tmp.path(),
        &["check", "--no-database", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    let block = |name: &str| -> String {
        let i = stdout
            .find(name)
            .unwrap_or_else(|| panic!("no {name:?} in\n{stdout}"));
        stdout[i..].lines().take(2).collect::<Vec<_>>().join("\n")
    };
    let b = block("task broken (wasm)");
    assert!(
        b.starts_with("task broken") && stdout.contains("✗ task broken (wasm)"),
        "{stdout}"
    );
    assert!(
        b.contains("not a WebAssembly component") && b.contains("fix: rebuild it"),
        "{b}"
    );
    let b = block("task missing (wasm)");
    assert!(
        b.contains("does not exist") && b.contains("fix: build the component"),
        "{b}"
    );
    let b = block("task solve (native)");
    assert!(
        b.contains("does not exist") && b.contains("fix: install the program"),
        "{b}"
    );
    let b = block("task typo (builtin)");
    assert!(b.contains("unknown builtin") && b.contains("fix:"), "{b}");
    assert!(stdout.contains("✓ task echo (builtin)"), "{stdout}");
    assert!(stdout.contains("4 check(s) failed"), "{stdout}");
}

/// `check` against a database nobody listens on.
#[test]
fn check_reports_an_unreachable_database_with_a_fix() {
    let tmp = TempDir::new("check-db");
    // A loopback port with nothing behind it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgresql://nobody@127.0.0.1:{port}/none");
    let (status, stdout, _) = run_host(
        tmp.path(),
        &["check", "--database-url", &url],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("✗ database {url}: cannot connect")),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: make sure PostgreSQL is running"),
        "{stdout}"
    );
    // Without a config it warns, but that is not a failure.
    assert!(stdout.contains("! config"), "{stdout}");
    assert!(stdout.contains("1 check(s) failed"), "{stdout}");
}

/// `check` passes on the example configuration and a migrated private cluster, and says to
/// migrate when the schema is missing.
#[tokio::test(flavor = "multi_thread")]
async fn check_passes_on_a_good_setup_and_asks_for_the_schema() {
    let config = example_config();
    let tmp = TempDir::new("check-ok");
    let d = tmp.path().join("pgdata");
    let pg = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .expect("start");
    let url = pg.url();
    let cwd = tmp.path().to_path_buf();
    let cfg = config.to_str().unwrap().to_string();

    let (c, u, cf) = (cwd.clone(), url.clone(), cfg.clone());
    let (status, stdout, _) = blocking(move || {
        run_host(
            &c,
            &["check", "--database-url", &u, "--config", &cf],
            Duration::from_secs(120),
        )
    })
    .await;
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✗ schema: the database has no absurd schema")
            && stdout.contains("fix: run `absurd-host migrate`"),
        "{stdout}"
    );

    let (c, u) = (cwd.clone(), url.clone());
    let (status, stdout, stderr) = blocking(move || {
        run_host(
            &c,
            &["migrate", "--database-url", &u],
            Duration::from_secs(60),
        )
    })
    .await;
    assert!(status.success(), "{stdout}{stderr}");

    let (c, u) = (cwd.clone(), url.clone());
    let (status, stdout, _) = blocking(move || {
        run_host(
            &c,
            &["check", "--database-url", &u, "--config", &cfg],
            Duration::from_secs(120),
        )
    })
    .await;
    assert!(status.success(), "{stdout}");
    for line in [
        "✓ task echo (wasm)",
        "✓ task durable (wasm)",
        "✓ task calibration-plan (wasm)",
        "✓ task zoo (wasm)",
        "✓ task calibration-solve (native)",
        "✓ schema: absurd 0.5.1",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    blocking(move || drop(pg)).await;
}

/// With a database URL, the demo uses that database and starts no cluster of its own.
#[tokio::test(flavor = "multi_thread")]
async fn demo_uses_the_given_database_instead_of_starting_one() {
    let config = example_config();
    let tmp = TempDir::new("demo-url");
    let d = tmp.path().join("given-db");
    let pg = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .expect("start");
    let url = pg.url();
    let cwd = tmp.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    let (c, u, cf) = (
        cwd.clone(),
        url.clone(),
        config.to_str().unwrap().to_string(),
    );
    let (status, stdout, stderr) = blocking(move || {
        run_host(
            &c,
            &["demo", "--database-url", &u, "--config", &cf],
            Duration::from_secs(240),
        )
    })
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("database   {url}\n")),
        "the given database:\n{stdout}"
    );
    assert!(!stdout.contains("private PostgreSQL"), "{stdout}");
    assert!(!cwd.join(".absurd").exists(), "no cluster of its own");
    assert!(stdout.contains("All 6 tasks ended as expected"), "{stdout}");
    // The given database is still up: the demo only stops clusters it started.
    assert!(sqlx::PgConnection::connect(&url).await.is_ok());
    blocking(move || drop(pg)).await;
}

/// The operator files: the DSA-110 example configuration loads, and the systemd unit has
/// the settings a worker needs.
#[test]
fn deploy_files_are_usable() {
    example_config(); // calibration-plan uses the example pipeline component
    let root = common::repo_root();
    let tmp = TempDir::new("deploy");
    let cfg = root.join("deploy/absurd-host.toml");
    let (status, stdout, _) = run_host(
        tmp.path(),
        &["check", "--no-database", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stdout}");
    // Every stage name of the DSA-110 adapter is a native task through absurd-native.
    for name in [
        "catalog-setup",
        "convert-uvh5-to-ms",
        "calibration-solve",
        "calibration-apply",
        "imaging",
        "validation",
        "crossmatch",
        "photometry",
        "organize-files",
        "housekeeping",
        "create-mosaic",
    ] {
        assert!(
            stdout.contains(&format!("✓ task {name} (native)")),
            "{name}: {stdout}"
        );
    }
    // The pipeline's housekeeping runs hourly.
    assert!(stdout.contains("1 schedule(s) declared"), "{stdout}");

    let unit = std::fs::read_to_string(root.join("deploy/absurd-host-worker.service")).unwrap();
    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .trim()
            .to_string()
    };
    assert_eq!(value("Restart"), "always");
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert!(value("ExecStart").contains("absurd-host worker"));
    assert!(value("EnvironmentFile").ends_with("absurd-host.env"));
    // Longer than the default shutdown grace (30 s) plus a native task's grace (10 s).
    let stop: u64 = value("TimeoutStopSec").parse().unwrap();
    assert!(stop > 30 + 10, "TimeoutStopSec={stop}");
    assert!(
        !unit
            .lines()
            .any(|l| l.starts_with("MemoryDenyWriteExecute=yes")),
        "wasmtime needs W+X memory"
    );
}

/// The inodes of the TCP sockets (v4 and v6) in `/proc/net/tcp*`.
fn tcp_socket_inodes() -> std::collections::HashSet<String> {
    let mut inodes = std::collections::HashSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local rem st tx:rx tr:when retr uid timeout inode ...
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(inode.to_string());
            }
        }
    }
    inodes
}

/// The socket inodes a process has open.
fn socket_inodes_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect()
}

/// `psql -c 'select 1'` on `url` as the OS user `uid` (root only). Returns (ok, stderr).
fn psql_as(psql: &Path, uid: u32, url: &str) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let out = Command::new(psql)
        .args(["-X", "-w", "-A", "-t", "-c", "select 1", url])
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Issue #14, "the dev cluster trusts every local user over TCP": the private cluster opens no
/// TCP port (not even when `ALTER SYSTEM` asks for one), `pg_hba.conf` has only `peer` over
/// the socket, and another OS user can neither reach the socket nor, when it can, log in. A
/// data directory written by the old code (TCP with `trust`) is rewritten on start.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_cluster_is_socket_only_and_peer_only() {
    let tmp = TempDir::new("socket-only");
    let data = tmp.path().join("pgdata");

    // A data directory as the old code left it: TCP on a port, `trust` for everyone local.
    let d = data.clone();
    let pg = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .expect("start");
    let url = pg.url();
    let socket_dir = PathBuf::from(pg_socket_dir(&url));
    {
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        // ALTER SYSTEM is read after postgresql.conf: it must not reopen TCP either.
        sqlx::raw_sql("alter system set listen_addresses = '127.0.0.1'")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    let pg = blocking(move || {
        pg.stop().expect("stop");
        pg
    })
    .await;
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n",
    )
    .unwrap();
    std::fs::write(
        data.join("absurd-host.conf"),
        "port = 54329\nlisten_addresses = '127.0.0.1'\n",
    )
    .unwrap();
    blocking(move || drop(pg)).await;
    let d = data.clone();
    let pg = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .expect("start on an old-style data directory");
    assert_eq!(pg.url(), url);

    // pg_hba.conf: nothing but `local ... peer`.
    let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
    let rules: Vec<&str> = hba
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!rules.is_empty(), "{hba}");
    for r in &rules {
        assert!(
            r.starts_with("local") && r.contains(" peer") && !r.contains("trust"),
            "not a local peer rule: {r:?}\n{hba}"
        );
    }

    // The server itself: no listen address, and no TCP socket open in the postmaster.
    let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
    let listen: String = sqlx::query_scalar("show listen_addresses")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(listen, "", "the server listens on no TCP address");
    let pid = postmaster_pid(&data).expect("running");
    let tcp = tcp_socket_inodes();
    let open = socket_inodes_of(pid);
    assert!(!open.is_empty(), "the postmaster has its Unix socket open");
    assert!(
        open.iter().all(|i| !tcp.contains(i)),
        "the postmaster holds a TCP socket: {open:?}"
    );
    // The socket directory is private.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", socket_dir.display());
    }

    // Another database role cannot be used from this OS user: peer maps us to the superuser
    // only.
    sqlx::raw_sql("create role mallory login superuser")
        .execute(&mut c)
        .await
        .unwrap();
    let me: String = sqlx::query_scalar("select current_user")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let as_mallory = url.replacen(&format!("://{me}@"), "://mallory@", 1);
    assert_ne!(as_mallory, url);
    let err = sqlx::PgConnection::connect(&as_mallory)
        .await
        .expect_err("mallory must not get in")
        .to_string();
    assert!(
        err.contains("authentication failed") || err.contains("no pg_hba.conf entry"),
        "{err}"
    );

    // Another OS user (root can switch to `nobody` to try it).
    let psql = pg.binaries().dir.join("psql");
    if unsafe { libc::geteuid() } == 0 && psql.is_file() {
        let nobody = 65534;
        let (ok, err) = psql_as(&psql, nobody, &url);
        assert!(!ok, "nobody reached the cluster");
        assert!(err.contains("Permission denied"), "{err}");
        // Even with the socket opened to everyone, peer lets only the owner in. (The socket
        // may sit inside the data directory, which must then be passable too.)
        let opened: Vec<PathBuf> = socket_dir
            .ancestors()
            .take_while(|a| a.starts_with(tmp.path()) || *a == socket_dir)
            .filter(|a| *a != tmp.path())
            .map(Path::to_path_buf)
            .collect();
        for dir in &opened {
            chmod(dir, 0o711);
        }
        let sock = socket_dir.join(".s.PGSQL.5432");
        chmod(&sock, 0o777);
        let (ok, err) = psql_as(&psql, nobody, &url);
        for dir in &opened {
            chmod(dir, 0o700);
        }
        chmod(&sock, 0o700);
        assert!(!ok, "nobody logged in through an open socket");
        assert!(
            err.contains("Peer authentication failed") || err.contains("no pg_hba.conf entry"),
            "{err}"
        );
        // The owner still gets in (root, as the cluster's superuser).
        let (ok, err) = psql_as(&psql, 0, &url);
        assert!(ok, "{err}");
    } else {
        eprintln!("not root (or no psql): the other-OS-user checks are skipped");
    }
    blocking(move || drop(pg)).await;
}
