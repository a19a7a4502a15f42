//! Maintenance without pg_cron: finished tasks and consumed events deleted by retention, in
//! bounded batches; and, for partitioned queues, the partitions their policies call for
//! (future weeks created, old empty weeks detached and dropped when `detach_mode = 'empty'`).
//!
//! Two ways in: `absurd-host maintain` (one pass, `--dry-run` to only count), and the
//! `[maintenance]` section of `absurd-host.toml`, with which `absurd-host worker` takes part in
//! electing one maintaining worker per database (a session advisory lock; when the leader
//! dies its session ends and the next candidate takes over on its next try).
//!
//! ```toml
//! [maintenance]
//! enabled = true          # this worker is a candidate (default false)
//! interval = 3600         # seconds between passes
//! batch_size = 1000       # rows per delete statement (1 to 100,000)
//! max_batches = 100       # per queue and kind in one pass
//! # queues = ["dsa110-pipeline"]   # default: every queue
//! [maintenance.retention] # days; a state left out is kept for ever
//! completed = 7
//! failed = 30
//! cancelled = 7
//! events = 7
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use absurd_client::partitions::StorageMode;
use absurd_client::{Client, State};
use absurd_engine::metrics::Counters;

use crate::args::GlobalArgs;
use crate::config::{AbsurdConfig, DEFAULT_DATABASE_URL};

/// The longest retention accepted, in days (what fits PostgreSQL's integer seconds).
const MAX_RETENTION_DAYS: f64 = 24_855.0;

/// How often a worker that is not the leader tries to become it, at most.
const CANDIDATE_RETRY: Duration = Duration::from_secs(30);

/// Retention by what is deleted, in seconds; `None` keeps it for ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub completed: Option<i32>,
    pub failed: Option<i32>,
    pub cancelled: Option<i32>,
    pub events: Option<i32>,
}

impl Retention {
    fn is_empty(&self) -> bool {
        *self == Retention::default()
    }

    fn task_states(&self) -> [(State, Option<i32>); 3] {
        [
            (State::Completed, self.completed),
            (State::Failed, self.failed),
            (State::Cancelled, self.cancelled),
        ]
    }
}

/// The `[maintenance]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    pub interval: Duration,
    pub batch_size: i32,
    pub max_batches: u32,
    /// `None`: every queue.
    pub queues: Option<Vec<String>>,
    pub retention: Retention,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            enabled: false,
            interval: Duration::from_secs(3600),
            batch_size: 1000,
            max_batches: 100,
            queues: None,
            retention: Retention::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    enabled: Option<bool>,
    interval: Option<f64>,
    batch_size: Option<i64>,
    max_batches: Option<i64>,
    queues: Option<Vec<String>>,
    retention: Option<RetentionKeys>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionKeys {
    completed: Option<f64>,
    failed: Option<f64>,
    cancelled: Option<f64>,
    events: Option<f64>,
}

impl Settings {
    /// Reads a `[maintenance]` table. Errors name the key and the value.
    pub fn from_table(table: &toml::Table) -> Result<Settings, String> {
        let keys: Keys = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("[maintenance]: {}", e.message()))?;
        let mut s = Settings::default();
        if let Some(e) = keys.enabled {
            s.enabled = e;
        }
        if let Some(i) = keys.interval {
            if !(i.is_finite() && (1.0..=31_536_000.0).contains(&i)) {
                return Err(format!(
                    "[maintenance] interval = {i}: must be between 1 and 31536000 seconds"
                ));
            }
            s.interval = Duration::from_secs_f64(i);
        }
        if let Some(b) = keys.batch_size {
            s.batch_size = batch_size(b).map_err(|e| format!("[maintenance] {e}"))?;
        }
        if let Some(m) = keys.max_batches {
            if !(1..=1_000_000).contains(&m) {
                return Err(format!(
                    "[maintenance] max_batches = {m}: must be between 1 and 1000000"
                ));
            }
            s.max_batches = m as u32;
        }
        if let Some(q) = keys.queues {
            for name in &q {
                crate::config::validate_queue_name("[maintenance] queues", name)
                    .map_err(|e| e.to_string())?;
            }
            s.queues = Some(q);
        }
        if let Some(r) = keys.retention {
            let days = |key: &str, v: Option<f64>| {
                v.map(|d| {
                    retention_days(d).map_err(|e| format!("[maintenance.retention] {key} {e}"))
                })
                .transpose()
            };
            s.retention = Retention {
                completed: days("completed", r.completed)?,
                failed: days("failed", r.failed)?,
                cancelled: days("cancelled", r.cancelled)?,
                events: days("events", r.events)?,
            };
        }
        // No retention is allowed: the passes then only keep partitioned queues' partitions
        // (created ahead, detached and dropped by policy). The leader says so when it starts.
        Ok(s)
    }

    /// The `[maintenance]` section of the configuration file at `path`, or the defaults.
    pub fn load(path: Option<&PathBuf>) -> Result<Settings> {
        let Some(path) = path else {
            return Ok(Settings::default());
        };
        let config = absurd_engine::dispatch::HostConfig::load(path)?;
        match config.maintenance {
            None => Ok(Settings::default()),
            Some(t) => {
                Settings::from_table(&t).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }
        }
    }
}

/// Days as whole seconds, refusing what is negative, not a number, or too long.
fn retention_days(days: f64) -> Result<i32, String> {
    if !(days.is_finite() && (0.0..=MAX_RETENTION_DAYS).contains(&days)) {
        return Err(format!(
            "= {days}: retention must be between 0 and {MAX_RETENTION_DAYS} days"
        ));
    }
    Ok((days * 86_400.0).round() as i32)
}

fn batch_size(b: i64) -> Result<i32, String> {
    if !(1..=100_000).contains(&b) {
        return Err(format!("batch_size = {b}: must be between 1 and 100000"));
    }
    Ok(b as i32)
}

/// What one pass deleted (or, dry, would delete) in one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub events: i64,
}

impl Deleted {
    fn add(&mut self, other: &Deleted) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.events += other.events;
    }

    fn slot(&mut self, state: State) -> &mut i64 {
        match state {
            State::Completed => &mut self.completed,
            State::Failed => &mut self.failed,
            _ => &mut self.cancelled,
        }
    }
}

/// What one pass did (or, dry, would do) to one partitioned queue's partitions, by table name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionWork {
    /// Week (and DEFAULT) partitions created ahead of time.
    pub created: Vec<String>,
    /// Old empty weeks detached, as the queue's detach policy allows.
    pub detached: Vec<String>,
    /// Detached partitions dropped: the ones detached now, and empty ones detached before.
    pub dropped: Vec<String>,
    /// Detached partitions that hold rows (an operator's archive?): never dropped here.
    pub kept: Vec<String>,
}

/// The report of one pass, as printed by `maintain --json` and recorded in
/// `absurd.maintenance_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub retention_seconds: Retention,
    pub batch_size: i32,
    pub queues: BTreeMap<String, Deleted>,
    pub totals: Deleted,
    /// Queues and kinds where the pass stopped at `max_batches` with more left to delete
    /// (the next pass goes on).
    pub unfinished: Vec<String>,
    /// Partitioned queues only.
    pub partitions: BTreeMap<String, PartitionWork>,
    pub seconds: f64,
}

/// One maintenance pass over the configured queues. Dry: counts what would be deleted and
/// changes nothing.
pub async fn run_once(client: &Client, settings: &Settings, dry_run: bool) -> Result<Report> {
    let started = std::time::Instant::now();
    if !client.has_maintenance().await? {
        bail!(
            "this database's absurd schema has no absurd-host maintenance functions (migration \
             0018): run `absurd-host migrate`, or, on a schema `absurdctl init` installed, use \
             `absurdctl cleanup`"
        );
    }
    let queues = match &settings.queues {
        Some(q) => q.clone(),
        None => client.list_queues().await?,
    };
    let mut report = Report {
        dry_run,
        retention_seconds: settings.retention,
        batch_size: settings.batch_size,
        queues: BTreeMap::new(),
        totals: Deleted::default(),
        unfinished: Vec::new(),
        partitions: BTreeMap::new(),
        seconds: 0.0,
    };
    let partition_helpers = client.has_partition_helpers().await?;
    for queue in queues {
        if partition_helpers && is_partitioned(client, &queue).await? {
            let work = partitions(client, &queue, dry_run)
                .await
                .with_context(|| format!("maintaining the partitions of queue {queue}"))?;
            report.partitions.insert(queue.clone(), work);
        }
        let mut deleted = Deleted::default();
        for (state, ttl) in settings.retention.task_states() {
            let Some(ttl) = ttl else { continue };
            *deleted.slot(state) = if dry_run {
                client.count_cleanup_candidates(&queue, state, ttl).await?
            } else {
                let (n, more) = batches(settings, || {
                    client.cleanup_tasks_in_state(&queue, state, ttl, settings.batch_size)
                })
                .await
                .with_context(|| format!("deleting {} tasks of queue {queue}", state.as_str()))?;
                if more {
                    report
                        .unfinished
                        .push(format!("{queue}: {}", state.as_str()));
                }
                n
            };
        }
        if let Some(ttl) = settings.retention.events {
            deleted.events = if dry_run {
                client.count_event_cleanup_candidates(&queue, ttl).await?
            } else {
                let (n, more) = batches(settings, || {
                    client.cleanup_events(&queue, ttl, settings.batch_size)
                })
                .await
                .with_context(|| format!("deleting events of queue {queue}"))?;
                if more {
                    report.unfinished.push(format!("{queue}: events"));
                }
                n
            };
        }
        report.totals.add(&deleted);
        report.queues.insert(queue, deleted);
    }
    if !dry_run {
        // Live-update triggers a dead API left behind (migration 0022); they cost every claim
        // and completion while nobody listens. Not part of the report: nothing is deleted.
        match client.retire_live_triggers().await {
            Ok(Some(n)) if n > 0 => {
                tracing::info!(
                    tables = n,
                    "live-update triggers left on busy tables; the next pass retries"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not retire idle live-update triggers"),
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn is_partitioned(client: &Client, queue: &str) -> Result<bool> {
    Ok(client
        .get_queue_policy(queue)
        .await?
        .is_some_and(|p| p.storage_mode == StorageMode::Partitioned.as_str()))
}

/// One queue's partition step: future weeks first (they keep new rows out of the DEFAULT
/// partition), then the old empty weeks its policy lets go, detached and dropped one by one.
async fn partitions(client: &Client, queue: &str, dry_run: bool) -> Result<PartitionWork> {
    let mut work = PartitionWork::default();
    let missing = client.missing_partitions(Some(queue)).await?;
    if dry_run {
        work.created = missing.into_iter().map(|m| m.partition_table).collect();
    } else if !missing.is_empty() {
        client.ensure_partitions(Some(queue)).await?;
        let still: Vec<String> = client
            .missing_partitions(Some(queue))
            .await?
            .into_iter()
            .map(|m| m.partition_table)
            .collect();
        work.created = missing
            .into_iter()
            .map(|m| m.partition_table)
            .filter(|t| !still.contains(t))
            .collect();
    }
    let leftovers: Vec<_> = client
        .detached_partitions()
        .await?
        .into_iter()
        .filter(|d| d.queue_name == queue)
        .collect();
    for d in leftovers {
        if !d.is_empty {
            work.kept.push(d.partition_table);
        } else if dry_run || client.drop_detached_partition(&d.partition_table).await? {
            work.dropped.push(d.partition_table);
        }
    }
    for c in client.list_detach_candidates(Some(queue)).await? {
        if dry_run {
            work.detached.push(c.partition_table.clone());
            work.dropped.push(c.partition_table);
            continue;
        }
        // Gone from the candidates since the list was read (another maintainer, a row
        // written meanwhile): nothing to do.
        if client.detach_partition(&c.partition_table).await?.is_none() {
            continue;
        }
        work.detached.push(c.partition_table.clone());
        if client.drop_detached_partition(&c.partition_table).await? {
            work.dropped.push(c.partition_table);
        }
    }
    Ok(work)
}

/// Runs `batch` until one deletes fewer than a full batch, or `max_batches` ran. Returns the
/// rows deleted and whether the last batch was full (more may be left).
async fn batches<F, Fut>(settings: &Settings, mut batch: F) -> Result<(i64, bool)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = absurd_client::Result<i32>>,
{
    let mut total = 0i64;
    for _ in 0..settings.max_batches {
        let n = batch().await?;
        total += i64::from(n);
        if n < settings.batch_size {
            return Ok((total, false));
        }
    }
    Ok((total, true))
}

/// Counts a real pass in `counters` and records it in the database (a failed recording is
/// logged, not fatal: the deletes themselves are done).
async fn account(
    client: &Client,
    counters: &Counters,
    worker_id: &str,
    started_at: chrono::DateTime<Utc>,
    outcome: &Result<Report>,
) {
    let (report, error) = match outcome {
        Ok(r) => {
            for (kind, n) in [
                ("completed", r.totals.completed),
                ("failed", r.totals.failed),
                ("cancelled", r.totals.cancelled),
                ("events", r.totals.events),
            ] {
                counters.maintenance_deleted(kind, n.max(0) as u64);
            }
            (serde_json::to_value(r).unwrap_or_default(), None)
        }
        Err(e) => (serde_json::json!({}), Some(format!("{e:#}"))),
    };
    counters.maintenance_pass(outcome.is_ok(), Utc::now().timestamp());
    // The row is bounded (64 KiB of report, 4 KiB of error): trim what a huge queue list or
    // error chain would exceed, rather than lose the record.
    let report = if report.to_string().len() > 60_000 {
        serde_json::json!({"totals": report.get("totals"), "note": "per-queue figures left out (too many queues)"})
    } else {
        report
    };
    let error: Option<String> = error.map(|e| e.chars().take(1000).collect());
    if let Err(e) = client
        .record_maintenance_run(started_at, worker_id, &report, error.as_deref())
        .await
    {
        tracing::warn!(error = %e, "could not record the maintenance pass (is migration 0018 applied?)");
    }
}

/// The worker's maintenance candidate: tries to lead every [`CANDIDATE_RETRY`] (or
/// `interval`, if shorter); while leading, runs a pass every `interval`. Ends with
/// `shutdown`, giving the leadership up.
pub async fn lead_when_elected(
    client: Client,
    settings: Settings,
    worker_id: String,
    counters: Counters,
    shutdown: CancellationToken,
) {
    let retry = settings.interval.min(CANDIDATE_RETRY);
    if settings.retention.is_empty() {
        tracing::info!(
            "[maintenance] gives no retention: maintenance passes delete no task or event, and \
             only keep partitioned queues' partitions (set [maintenance.retention] in days to \
             delete finished tasks and consumed events)"
        );
    }
    let mut leadership = None;
    loop {
        if leadership.is_none() {
            match client.try_lead_maintenance().await {
                Ok(Some(l)) => {
                    tracing::info!(worker_id = %worker_id, "this worker leads maintenance now");
                    leadership = Some(l);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take part in the maintenance election")
                }
            }
        }
        let held = match leadership.as_mut() {
            Some(l) => Some(l.still_held().await),
            None => None,
        };
        let wait = match held {
            Some(true) => {
                let started_at = Utc::now();
                let outcome = run_once(&client, &settings, false).await;
                match &outcome {
                    Ok(r) => tracing::info!(
                        completed = r.totals.completed,
                        failed = r.totals.failed,
                        cancelled = r.totals.cancelled,
                        events = r.totals.events,
                        unfinished = r.unfinished.len(),
                        seconds = r.seconds,
                        "maintenance pass done"
                    ),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "maintenance pass failed"),
                }
                account(&client, &counters, &worker_id, started_at, &outcome).await;
                settings.interval
            }
            Some(false) => {
                tracing::warn!("lost the maintenance leadership (connection lost); will try again");
                leadership = None;
                retry
            }
            None => retry,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some(l) = leadership {
        l.release().await;
    }
}

/// Options of `absurd-host maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// absurd-host.toml whose [maintenance] section gives the defaults of the flags below.
    #[arg(long, env = "ABSURD_HOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Count what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Queue to maintain (repeatable) [default: every queue].
    #[arg(long = "queue", short = 'q', value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Delete completed tasks finished more than DAYS ago.
    #[arg(long, value_name = "DAYS", value_parser = days_arg)]
    pub completed_days: Option<i32>,
    /// Delete failed tasks finished more than DAYS ago.
    #[arg(long, value_name = "DAYS", value_parser = days_arg)]
    pub failed_days: Option<i32>,
    /// Delete cancelled tasks cancelled more than DAYS ago.
    #[arg(long, value_name = "DAYS", value_parser = days_arg)]
    pub cancelled_days: Option<i32>,
    /// Delete events emitted more than DAYS ago.
    #[arg(long, value_name = "DAYS", value_parser = days_arg)]
    pub events_days: Option<i32>,
    /// Rows per delete statement (1 to 100000) [default: 1000].
    #[arg(long, value_name = "N", value_parser = batch_arg)]
    pub batch_size: Option<i32>,
}

fn days_arg(raw: &str) -> Result<i32, String> {
    let d: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of days"))?;
    retention_days(d).map_err(|e| e.trim_start_matches("= ").to_string())
}

fn batch_arg(raw: &str) -> Result<i32, String> {
    let b: i64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a whole number"))?;
    batch_size(b)
}

/// `absurd-host maintain`: one pass, printed as text or JSON.
pub async fn run_command(global: &GlobalArgs, args: &MaintainArgs) -> Result<()> {
    let mut settings = Settings::load(args.config.as_ref())?;
    if !args.queues.is_empty() {
        for q in &args.queues {
            crate::config::validate_queue_name("--queue", q)?;
        }
        settings.queues = Some(args.queues.clone());
    }
    let r = &mut settings.retention;
    for (flag, slot) in [
        (args.completed_days, &mut r.completed),
        (args.failed_days, &mut r.failed),
        (args.cancelled_days, &mut r.cancelled),
        (args.events_days, &mut r.events),
    ] {
        if flag.is_some() {
            *slot = flag;
        }
    }
    if let Some(b) = args.batch_size {
        settings.batch_size = b;
    }
    let config = AbsurdConfig::from_env()?;
    let url = global
        .database_url
        .clone()
        .or(config.database_url)
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    let redacted = absurd_client::db::redact_url(&url);
    let client = Client::new(
        absurd_client::db::connect(&url, 2)
            .await
            .with_context(|| format!("cannot connect to {redacted}"))?,
    );
    if client.schema_version().await?.is_none() {
        bail!("{redacted} has no absurd schema; run `absurd-host migrate` first");
    }
    if settings.retention.is_empty() && !any_partitioned(&client, &settings).await? {
        bail!(
            "no retention given, so nothing would be deleted: pass --completed-days, \
             --failed-days, --cancelled-days or --events-days, or set [maintenance.retention] \
             in the --config file (partitioned queues get their partitions maintained without)"
        );
    }
    let started_at = Utc::now();
    let outcome = run_once(&client, &settings, args.dry_run).await;
    if !args.dry_run {
        let worker_id = format!("maintain:{}", std::process::id());
        account(
            &client,
            &Counters::default(),
            &worker_id,
            started_at,
            &outcome,
        )
        .await;
    }
    let report = outcome?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", render(&report));
    Ok(())
}

/// Whether a queue the pass covers is partitioned (so a pass without retention still has
/// work: its partitions).
async fn any_partitioned(client: &Client, settings: &Settings) -> Result<bool> {
    if !client.has_partition_helpers().await? {
        return Ok(false);
    }
    let queues = match &settings.queues {
        Some(q) => q.clone(),
        None => client.list_queues().await?,
    };
    for q in queues {
        if is_partitioned(client, &q).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let keep = |s: Option<i32>| match s {
        None => "kept".to_string(),
        Some(secs) => {
            let days = format!("{:.4}", f64::from(secs) / 86_400.0);
            format!("{} days", days.trim_end_matches('0').trim_end_matches('.'))
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "retention: completed {}, failed {}, cancelled {}, events {}",
        keep(r.retention_seconds.completed),
        keep(r.retention_seconds.failed),
        keep(r.retention_seconds.cancelled),
        keep(r.retention_seconds.events)
    );
    let _ = writeln!(
        out,
        "{:<32} {:>10} {:>10} {:>10} {:>10}",
        "queue", "completed", "failed", "cancelled", "events"
    );
    for (q, d) in &r.queues {
        let _ = writeln!(
            out,
            "{q:<32} {:>10} {:>10} {:>10} {:>10}",
            d.completed, d.failed, d.cancelled, d.events
        );
    }
    let t = &r.totals;
    let _ = writeln!(
        out,
        "{verb}: {} tasks ({} completed, {} failed, {} cancelled) and {} events in {:.2} s{}",
        t.completed + t.failed + t.cancelled,
        t.completed,
        t.failed,
        t.cancelled,
        t.events,
        r.seconds,
        if r.dry_run {
            " (dry run: nothing was changed)"
        } else {
            ""
        }
    );
    for u in &r.unfinished {
        let _ = writeln!(
            out,
            "more left in {u} (max_batches reached; the next pass goes on)"
        );
    }
    let (created, detached, dropped) = if r.dry_run {
        ("would create", "would detach", "would drop")
    } else {
        ("created", "detached", "dropped")
    };
    for (q, w) in &r.partitions {
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        let _ = writeln!(
            out,
            "partitions of {q}: {created} {}; {detached} {}; {dropped} {}",
            list(&w.created),
            list(&w.detached),
            list(&w.dropped)
        );
        if !w.kept.is_empty() {
            let _ = writeln!(
                out,
                "detached partitions of {q} kept (they hold rows): {}",
                w.kept.join(" ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        let t: toml::Table = toml::from_str(text).unwrap();
        Settings::from_table(&t)
    }

    #[test]
    fn settings_read_days_and_refuse_bad_values_by_name() {
        let s = parse(
            "enabled = true\ninterval = 60\nbatch_size = 500\n[retention]\ncompleted = 7\nfailed = 0.5\n",
        )
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.batch_size, 500);
        assert_eq!(s.retention.completed, Some(7 * 86_400));
        assert_eq!(s.retention.failed, Some(43_200));
        assert_eq!(s.retention.cancelled, None);

        for (text, needle) in [
            ("batch_size = 0", "batch_size = 0"),
            ("batch_size = 100001", "batch_size = 100001"),
            ("interval = 0", "interval = 0"),
            ("[retention]\ncompleted = -1", "completed = -1"),
            ("[retention]\nevents = 1e9", "events = 1000000000"),
            ("[retention]\nfinished = 3", "finished"),
            ("colour = 1", "colour"),
            ("queues = [\"\"]", "queue"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn a_section_without_retention_only_keeps_partitions() {
        let s = parse("enabled = true").unwrap();
        assert!(s.enabled && s.retention.is_empty());
    }

    #[test]
    fn days_flags_name_the_value() {
        assert_eq!(days_arg("1.5"), Ok(129_600));
        assert!(days_arg("seven").unwrap_err().contains("\"seven\""));
        assert!(days_arg("-2").unwrap_err().contains("-2"));
        assert!(batch_arg("2.5").unwrap_err().contains("\"2.5\""));
    }
}
