//! `absurd-host check`: validates what `absurd-host worker` would run with — the `ABSURD_*`
//! settings, the host configuration file and every task type in it (wasm components compiled
//! and matched against the `absurd:task/task` world, native programs found), the database
//! connection and the schema version — without running any task.
//!
//! Each check prints `✓` or `✗` with a message; every failure says how to fix it. The exit
//! status is 1 when any check failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::args::{GlobalArgs, WorkerArgs};
use absurd_engine::dispatch::{HandlerKind, HostConfig, Registry, TaskTypeConfig};

/// Options of `absurd-host check`: the worker's (so that it checks what the worker would use).
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Do not check the database (configuration and task types only).
    #[arg(long)]
    pub no_database: bool,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Not a failure, but worth knowing.
    Warn,
    Failed,
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub status: Status,
    pub message: String,
    /// How to fix it (for failures and warnings).
    pub fix: Option<String>,
}

struct Report {
    json: bool,
    results: Vec<CheckResult>,
}

impl Report {
    fn add(
        &mut self,
        name: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        let r = CheckResult {
            name: name.into(),
            status,
            message: message.into(),
            fix,
        };
        if !self.json {
            let mark = match r.status {
                Status::Ok => "✓",
                Status::Warn => "!",
                Status::Failed => "✗",
            };
            println!("{mark} {}: {}", r.name, r.message);
            if let Some(f) = &r.fix {
                println!("    fix: {f}");
            }
        }
        self.results.push(r);
    }
    fn ok(&mut self, name: impl Into<String>, message: impl Into<String>) {
        self.add(name, Status::Ok, message, None);
    }
    fn fail(
        &mut self,
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(name, Status::Failed, message, Some(fix.into()));
    }
    fn warn(
        &mut self,
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(name, Status::Warn, message, Some(fix.into()));
    }
}

/// Runs every check. `Ok(true)` when none failed.
pub async fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<bool> {
    let mut report = Report {
        json: global.json,
        results: Vec::new(),
    };

    // The ABSURD_* settings.
    let config = match args.worker.config(global) {
        Ok(c) => match args.worker.settings(&c) {
            Ok(s) => {
                report.ok(
                    "settings",
                    format!(
                        "queue {}, concurrency {}, task timeout {} s, dead-letter queue {}",
                        s.queues.join(", "),
                        s.concurrency,
                        s.task_timeout.as_secs_f64(),
                        s.dlq.as_deref().unwrap_or("off")
                    ),
                );
                Some((c, s))
            }
            Err(e) => {
                report.fail("settings", format!("{e:#}"), env_fix());
                None
            }
        },
        Err(e) => {
            report.fail("settings", format!("{e:#}"), env_fix());
            None
        }
    };

    check_host_config(&mut report, args.worker.config.as_deref());
    let concurrency = config.as_ref().map_or(4, |(_, s)| s.concurrency);
    match crate::connections::Connections::resolve(
        &args.worker.connections,
        args.worker.config.as_deref(),
    ) {
        Ok(c) => report.ok("connections", c.describe(concurrency)),
        Err(e) => report.fail(
            "connections",
            format!("{e:#}"),
            "fix the flag, ABSURD_* variable or [database] key it names (README, \"Connections\")",
        ),
    }

    if !args.no_database {
        let url = global
            .database_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| crate::config::DEFAULT_DATABASE_URL.to_string());
        let queues = config
            .as_ref()
            .map(|(_, s)| s.queues.clone())
            .unwrap_or_default();
        check_database(
            &mut report,
            &url,
            global.database_url.is_none(),
            &queues,
            args.worker.no_create_queues,
        )
        .await;
    }

    let failed = report
        .results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count();
    if report.json {
        let checks: Vec<_> = report
            .results
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "status": match r.status { Status::Ok => "ok", Status::Warn => "warning", Status::Failed => "failed" },
                    "message": r.message,
                    "fix": r.fix,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": failed == 0, "checks": checks}))?
        );
    } else if failed == 0 {
        println!("\nall checks passed");
    } else {
        println!("\n{failed} check(s) failed");
    }
    Ok(failed == 0)
}

fn env_fix() -> String {
    "correct the variable in the environment (for the systemd unit: its EnvironmentFile), or the \
     matching command-line flag"
        .into()
}

fn check_host_config(report: &mut Report, path: Option<&Path>) {
    let Some(path) = path else {
        report.warn(
            "config",
            "no host configuration given: the worker would have no task types and defer every task",
            "give --config PATH or set ABSURD_HOST_CONFIG (see deploy/absurd-host.toml for an example)",
        );
        return;
    };
    let name = format!("config {}", path.display());
    let config = match HostConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            let fix = if e.message.starts_with("cannot read") {
                "give the path of an existing, readable file with --config or ABSURD_HOST_CONFIG"
                    .to_string()
            } else {
                "correct the file: it must be TOML with [tasks.<name>] tables whose `kind` is builtin, \
                 wasm or native (deploy/absurd-host.toml is a commented example)"
                    .to_string()
            };
            report.fail(name, e.message, fix);
            return;
        }
    };
    report.ok(
        name,
        format!("{} task type(s) declared", config.tasks.len()),
    );
    if config.tasks.is_empty() {
        report.warn(
            "task types",
            "the file declares no [tasks.<name>]",
            "declare the task types this worker should run",
        );
    }
    if let Err(e) =
        absurd_engine::execute::wasm::config::SandboxDefaults::from_table(&config.sandbox)
    {
        report.fail(
            "[sandbox]",
            e,
            "correct the [sandbox] table (see engine/src/execute/wasm/config.rs for its keys)",
        );
    }
    if !config.schedules.is_empty() {
        // The queue a schedule without `queue_name` takes does not change whether it is valid.
        match absurd_engine::schedule::from_config(
            &config.schedules,
            crate::config::DEFAULT_QUEUE_NAME,
        ) {
            Ok(s) => report.ok("schedules", format!("{} schedule(s) declared", s.len())),
            Err(e) => report.fail(
                "schedules",
                e,
                "correct the [[schedules]] entry (README.md, \"Schedules\", lists its keys)",
            ),
        }
    }
    if !config.workflows.is_empty() {
        check_workflows(report, &config);
    }
    if let Some(table) = &config.maintenance {
        match crate::maintain::Settings::from_table(table) {
            Ok(m) if m.enabled => report.ok(
                "[maintenance]",
                format!(
                    "this worker is a candidate maintainer: a pass every {} s, batches of {}",
                    m.interval.as_secs_f64(),
                    m.batch_size
                ),
            ),
            Ok(_) => report.ok(
                "[maintenance]",
                "read (enabled = false: `absurd-host maintain` uses it)",
            ),
            Err(e) => report.fail(
                "[maintenance]",
                e,
                "correct the [maintenance] table (its keys: README.md, \"Retention\")",
            ),
        }
    }
    let mut names: Vec<&String> = config.tasks.keys().collect();
    names.sort();
    for task in names {
        check_task(report, path, &config, task, &config.tasks[task]);
    }
    if config.tasks.values().any(|t| t.kind == HandlerKind::Native) {
        use absurd_engine::execute::native::cgroup::{self, Cgroup};
        let message = match cgroup::detect() {
            Cgroup::Delegated(dir) => format!(
                "a delegated cgroup v2 is available at {} (not used yet: native runs are contained by their reaper and rlimits)",
                dir.display()
            ),
            Cgroup::Unavailable(why) => format!(
                "no delegated cgroup v2 ({why}): native runs are contained by their reaper and rlimits; memory_mb caps address space, not resident memory"
            ),
        };
        report.ok("native containment", message);
    }
}

/// The `[workflows.<name>]` sections: each checked against the runner's limits, with its
/// nodes shown, and the task names this file gives no handler (another worker must run them).
fn check_workflows(report: &mut Report, config: &HostConfig) {
    let workflows = match crate::workflow::Workflows::from_table(&config.workflows) {
        Ok(w) => w,
        Err(e) => {
            report.fail(
                "workflows",
                e,
                "correct the section: `chain` (task names) or `nodes` (id, task, depends_on, ...); \
                 README.md, \"Workflows\", lists the keys",
            );
            return;
        }
    };
    report.ok(
        "workflows",
        format!("{} workflow(s) declared", workflows.len()),
    );
    for w in workflows.iter() {
        let linear = w.nodes.iter().enumerate().all(|(i, n)| match i {
            0 => n.depends_on.is_empty(),
            _ => n.depends_on == [w.nodes[i - 1].id.clone()],
        });
        let shape = if linear {
            w.nodes
                .iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        } else {
            format!("a DAG of {} nodes", w.nodes.len())
        };
        let mut elsewhere: Vec<&str> = w
            .nodes
            .iter()
            .map(|n| n.task.as_str())
            .filter(|t| !config.tasks.contains_key(*t))
            .collect();
        elsewhere.sort();
        elsewhere.dedup();
        let name = format!("workflow {}", w.name);
        if elsewhere.is_empty() {
            report.ok(name, shape);
        } else {
            report.warn(
                name,
                format!(
                    "{shape}; no [tasks.<name>] here for {}",
                    elsewhere.join(", ")
                ),
                "declare those task types, or run workers that have them on the nodes' queues",
            );
        }
    }
    if !config
        .tasks
        .contains_key(absurd_client::workflows::WORKFLOW_TASK)
    {
        report.warn(
            "workflow runner",
            "no [tasks.workflow]: this worker does not run workflows",
            "declare [tasks.workflow] (the workflow component), or run a worker that has it",
        );
    }
}

/// What a wasm or native task type may touch outside its run (a guest's imports, a program's
/// control requests), and the limits that differ from the defaults, so that an operator sees
/// them before the first run does.
fn report_grants(report: &mut Report, config: &HostConfig, task: &str, t: &TaskTypeConfig) {
    let mut table = t.rest.clone();
    let Ok(mut grants) = absurd_engine::execute::grants::Grants::take_from(task, &mut table) else {
        return; // already reported by the build above
    };
    (grants.wasm_types, grants.native_types) = config.kinds();
    report.ok(format!("task {task} grants"), grants.describe().join("; "));
    let defaults = absurd_engine::limits::RunLimits::default();
    let limits = if t.kind == HandlerKind::Native {
        defaults
            .take_from(&mut config.native.clone())
            .and_then(|d| d.take_from(&mut table))
    } else {
        absurd_engine::execute::wasm::config::SandboxDefaults::from_table(&config.sandbox)
            .and_then(|d| d.limits.take_from(&mut table))
    };
    if let Ok(limits) = limits {
        let changed: Vec<String> = absurd_engine::limits::KEYS
            .iter()
            .filter(|k| limits.get(k) != defaults.get(k))
            .map(|k| format!("{k} = {}", limits.get(k).unwrap_or_default()))
            .collect();
        if !changed.is_empty() {
            report.ok(format!("task {task} limits"), changed.join(", "));
        }
    }
}

/// Builds one task type on its own, exactly as the worker would.
fn check_task(
    report: &mut Report,
    path: &Path,
    config: &HostConfig,
    task: &str,
    t: &TaskTypeConfig,
) {
    let name = format!("task {task} ({})", t.kind);
    let one = HostConfig {
        tasks: [(task.to_string(), t.clone())].into_iter().collect(),
        sandbox: config.sandbox.clone(),
        native: config.native.clone(),
        ..HostConfig::default()
    };
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let what = |key: &str| {
        t.rest
            .get(key)
            .and_then(|v| v.as_str())
            .map(|s| {
                let p = Path::new(s);
                if p.is_absolute() || !s.contains('/') && key == "program" {
                    s.to_string()
                } else {
                    base.join(p).display().to_string()
                }
            })
            .unwrap_or_default()
    };
    match Registry::from_config(&one, Some(path)) {
        Ok(_) => {
            let msg = match t.kind {
                HandlerKind::Wasm => format!(
                    "{} compiles and matches the absurd:task/task world",
                    what("component")
                ),
                HandlerKind::Native => format!("program {} found", what("program")),
                HandlerKind::Builtin => format!("builtin {}", t.builtin.as_deref().unwrap_or(task)),
            };
            report.ok(name, msg);
            if t.kind != HandlerKind::Builtin {
                report_grants(report, config, task, t);
            }
        }
        Err(e) => {
            let msg = e
                .message
                .strip_prefix(&format!("[tasks.{task}]: "))
                .unwrap_or(&e.message)
                .to_string();
            let mut fix = task_fix(task, t.kind, &msg);
            let mut msg = msg;
            if t.kind == HandlerKind::Wasm {
                if let Some(other) = other_wit_version(&what("component")) {
                    msg = format!(
                        "{msg} (it was built against absurd:task@{other}; this host provides {})",
                        provided_wit_versions()
                    );
                    fix = format!(
                        "rebuild it against this host's WIT (absurd:task@{}): `absurd-host build-py` for a Python module, or the Rust guest SDK of this release; or run it with a host that provides absurd:task@{other}",
                        crate::buildpy::host_wit_version()
                    );
                }
            }
            report.fail(name, msg, fix);
        }
    }
}

/// The `absurd:task` versions a component names, when none is this host's (so a failure to
/// link is explained by the WIT version it was built against).
fn other_wit_version(component: &str) -> Option<String> {
    let bytes = std::fs::read(component).ok()?;
    let versions = crate::buildpy::absurd_task_versions(&bytes);
    if versions.is_empty()
        || crate::buildpy::HOST_WIT_VERSIONS
            .iter()
            .any(|v| versions.contains(*v))
    {
        return None;
    }
    Some(versions.into_iter().collect::<Vec<_>>().join(", "))
}

/// "absurd:task@0.1.0, absurd:task@0.2.0 and absurd:task@0.2.1": every version this host runs.
fn provided_wit_versions() -> String {
    let all: Vec<String> = crate::buildpy::HOST_WIT_VERSIONS
        .iter()
        .map(|v| format!("absurd:task@{v}"))
        .collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => all.join(""),
    }
}

fn task_fix(task: &str, kind: HandlerKind, msg: &str) -> String {
    match kind {
        HandlerKind::Wasm if msg.contains("is not a WebAssembly component") => format!(
            "rebuild it as a component of the absurd:task world (`cargo build --release --target \
             wasm32-wasip2` with the guest SDK; scripts/build-examples for the examples), or point \
             `component` in [tasks.{task}] at the right file"
        ),
        HandlerKind::Wasm
            if msg.contains("cannot read component") || msg.contains("does not exist") =>
        {
            format!(
            "build the component, or correct `component` in [tasks.{task}] (relative paths are \
             relative to the configuration file; scripts/build-examples --examples builds the examples)"
            )
        }
        HandlerKind::Wasm
            if msg.contains("cannot run as task") || msg.contains("does not export") =>
        {
            "the component does not match an absurd:task/task world this host provides (0.1.0, \
             0.2.0 or 0.2.1): rebuild it against wit/0.2.1/task.wit with the current guest SDK \
             (guest-sdk/README.md), importing only WASI and absurd:task interfaces"
                .into()
        }
        HandlerKind::Native if msg.contains("not an executable") => format!(
            "make the program executable (chmod +x), or correct `program` in [tasks.{task}]"
        ),
        HandlerKind::Native
            if msg.contains("does not exist") || msg.contains("not found on PATH") =>
        {
            format!(
            "install the program, or correct `program` in [tasks.{task}] (an absolute path, a path \
             relative to the configuration file, or a name on the worker's PATH)"
        )
        }
        _ => format!("correct [tasks.{task}] in the configuration file"),
    }
}

async fn check_database(
    report: &mut Report,
    url: &str,
    defaulted: bool,
    queues: &[String],
    no_create: bool,
) {
    let redacted = absurd_client::db::redact_url(url);
    let name = format!("database {redacted}");
    let opts: sqlx::postgres::PgConnectOptions = match url.parse() {
        Ok(o) => o,
        Err(e) => {
            report.fail(
                name,
                format!("not a valid PostgreSQL URL: {e}"),
                "set --database-url / ABSURD_DATABASE_URL to postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            );
            return;
        }
    };
    let connect = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(8))
        .connect_with(opts);
    let pool = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let unset = if defaulted {
                " (ABSURD_DATABASE_URL is not set, so the default URL was tried)"
            } else {
                ""
            };
            report.fail(
                name,
                format!("cannot connect: {e}{unset}"),
                "make sure PostgreSQL is running and reachable at that address, and that \
                 --database-url / ABSURD_DATABASE_URL names the right host, port, user, password and \
                 database (for a local development database, `absurd-host dev` starts one)",
            );
            return;
        }
        Err(_) => {
            report.fail(
                name,
                "no answer within 10 s",
                "check the host and port in --database-url / ABSURD_DATABASE_URL, and any firewall \
                 between this machine and the database",
            );
            return;
        }
    };
    let version = absurd_client::db::server_version(&pool)
        .await
        .unwrap_or_else(|_| "?".into());
    report.ok(name, format!("connected (PostgreSQL {version})"));

    let client = absurd_client::Client::new(pool.clone());
    match client.schema_version().await {
        Ok(None) => report.fail(
            "schema",
            "the database has no absurd schema",
            "run `absurd-host migrate` (or `absurdctl init`) against this database",
        ),
        Err(e) => report.fail(
            "schema",
            format!("cannot read the schema version: {e}"),
            "run `absurd-host migrate`; if it refuses, see its message",
        ),
        Ok(Some(v)) if v != absurd_client::db::SCHEMA_VERSION => report.fail(
            "schema",
            format!("absurd schema version {v}; this absurd-host needs {}", absurd_client::db::SCHEMA_VERSION),
            "run `absurd-host migrate` (for a schema newer than this binary, upgrade absurd-host instead)",
        ),
        Ok(Some(v)) => match absurd_client::db::pending_migrations(&pool).await {
            Ok(Some(0)) => report.ok("schema", format!("absurd {v}, every absurd-host migration applied")),
            Ok(Some(n)) => report.fail(
                "schema",
                format!("absurd {v}, but {n} absurd-host migration(s) are not applied"),
                "run `absurd-host migrate`",
            ),
            Ok(None) => report.ok(
                "schema",
                format!("absurd {v}, installed by another tool (absurdctl init); absurd-host runs against it as it is"),
            ),
            Err(e) => report.fail("schema", format!("cannot read the migration history: {e}"), "run `absurd-host migrate`"),
        },
    }
    for q in queues {
        match client.queue_exists(q).await {
            Ok(true) => report.ok(format!("queue {q}"), "exists"),
            Ok(false) if no_create => report.fail(
                format!("queue {q}"),
                "does not exist, and --no-create-queues is set",
                format!("create it with `absurd-host queue create {q}`"),
            ),
            Ok(false) => report.warn(
                format!("queue {q}"),
                "does not exist yet; the worker creates it when it starts",
                format!("nothing to do (or create it now with `absurd-host queue create {q}`)"),
            ),
            Err(_) => {}
        }
    }
    pool.close().await;
}
