//! `GET /health` (cheap, no database) and `GET /health/detailed` (the DSA-110 pipeline's monitor checks,
//! computed from the database).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};

use super::error::ApiError;
use super::model::{
    Health, HealthDetailed, HealthItem, HealthLevel, HealthStatus, QueueHealth, WorkersSeen,
};
use super::{ApiSettings, AppState};
use absurd_client::monitor::{WorkerRegistry, WorkerState, ACTIVE_SECS};
use absurd_client::{Client, ClientError};

/// Detailed results are reused for this long (the DSA-110 pipeline cached them for 10 s).
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// How long the database may take to answer the reachability probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

// The DSA-110 pipeline's thresholds.
const LATENCY_ALERT_MS: f64 = 1000.0;
const LATENCY_WARN_MS: f64 = 500.0;
const DEPTH_ALERT: i64 = 1000;
const DEPTH_WARN: i64 = 500;
const AGE_ALERT_S: f64 = 3600.0;
const AGE_WARN_S: f64 = 600.0;
const STALL_S: f64 = 300.0;
/// Pending this long with no worker claiming anything means no worker is serving the queue.
const NO_WORKER_S: f64 = 60.0;
/// The window of the worker registry the worker checks use (as `GET /workers`'s default).
const REGISTRY_MINUTES: i64 = 60;

#[derive(Default)]
pub struct Cache {
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, HealthDetailed)>>,
}

/// Liveness; does not touch the database and never needs the token.
#[utoipa::path(
    get,
    path = "/api/absurd/health",
    operation_id = "health",
    tag = "health",
    security(()),
    responses((status = 200, description = "Always healthy while the process serves", body = Health))
)]
pub(crate) async fn health(State(st): State<AppState>) -> Json<Health> {
    let (status, message) = if st.settings.enabled {
        ("healthy", "Absurd is operational")
    } else {
        ("disabled", "Absurd is not enabled")
    };
    Json(Health {
        status: status.into(),
        message: message.into(),
        queue: st.settings.default_queue.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: st.started.elapsed().as_secs_f64().floor(),
    })
}

/// Database reachability and latency, queue depth, oldest pending age, active workers, alerts
/// and warnings.
#[utoipa::path(
    get,
    path = "/api/absurd/health/detailed",
    operation_id = "healthDetailed",
    tag = "health",
    responses(
        (status = 200, description = "healthy, degraded or critical; disabled with ABSURD_ENABLED=false", body = HealthDetailed),
        (status = 503, description = "down: the database is unreachable", body = HealthDetailed),
    )
)]
pub(crate) async fn detailed(State(st): State<AppState>) -> Response {
    if !st.settings.enabled {
        let now = Utc::now();
        let (_, mut body) = unusable(
            &st.settings,
            HealthStatus::Disabled,
            "Absurd is not enabled".into(),
            None,
            now,
        );
        body.alerts.clear();
        body.worker_pool_message = "Absurd is not enabled".into();
        return (StatusCode::OK, Json(body)).into_response();
    }
    let mut last = st.health.last.lock().await;
    if let Some((at, code, body)) = last.as_ref() {
        if at.elapsed() < CACHE_FOR {
            return (*code, Json(body.clone())).into_response();
        }
    }
    let (code, body) = report(&st.client, &st.settings).await;
    *last = Some((Instant::now(), code, body.clone()));
    (code, Json(body)).into_response()
}

fn item(level: HealthLevel, message: String, now: DateTime<Utc>) -> HealthItem {
    HealthItem {
        level,
        message,
        timestamp: now,
    }
}

/// A report with no figures: `down` (503), or `critical` (200) when the database answers but
/// cannot be read.
fn unusable(
    settings: &ApiSettings,
    status: HealthStatus,
    message: String,
    latency_ms: Option<f64>,
    now: DateTime<Utc>,
) -> (StatusCode, HealthDetailed) {
    let code = if status == HealthStatus::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        HealthDetailed {
            status,
            message: message.clone(),
            queue: settings.default_queue.clone(),
            database_available: latency_ms.is_some(),
            database_latency_ms: latency_ms,
            queue_depth: None,
            oldest_pending_age_seconds: None,
            dead_letters_pending: None,
            worker_pool_healthy: false,
            worker_pool_message: "Cannot determine (database unusable)".into(),
            workers: None,
            queues: vec![],
            alerts: vec![item(HealthLevel::Alert, message, now)],
            warnings: vec![],
            checked_at: now,
        },
    )
}

struct QueueFigures {
    name: String,
    pending: i64,
    running: i64,
    oldest: Option<f64>,
    last_completed: Option<DateTime<Utc>>,
    expired_claims: i64,
}

/// The detailed health report (also printed by `absurd-host health`): 503 with `down` when
/// the database is unreachable, else 200 with `healthy`, `degraded` or `critical`.
pub async fn report(client: &Client, settings: &ApiSettings) -> (StatusCode, HealthDetailed) {
    let now = Utc::now();
    let down = |message: String, now| unusable(settings, HealthStatus::Down, message, None, now);
    let t0 = Instant::now();
    match tokio::time::timeout(PROBE_TIMEOUT, client.ping()).await {
        Err(_) => {
            return down(
                format!("Database unreachable: no answer within {PROBE_TIMEOUT:?}"),
                now,
            )
        }
        Ok(Err(e)) => {
            // The driver's text stays in the server log.
            let api = ApiError::logged(StatusCode::SERVICE_UNAVAILABLE, "Database unreachable", &e);
            return down(api.detail, now);
        }
        Ok(Ok(_)) => {}
    }
    let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
    match tokio::time::timeout(Duration::from_secs(5), gather(client, settings)).await {
        Err(_) => down(
            "Database unreachable: the health queries did not finish within 5 s".into(),
            now,
        ),
        Ok(Err(ClientError::Unavailable(m))) => {
            let api = ApiError::logged(StatusCode::SERVICE_UNAVAILABLE, "Database unreachable", &m);
            down(api.detail, now)
        }
        Ok(Err(e)) => {
            let api: ApiError = e.into();
            if api.status == StatusCode::SERVICE_UNAVAILABLE && !api.detail.contains("schema") {
                return down(api.detail, now);
            }
            unusable(
                settings,
                HealthStatus::Critical,
                api.detail,
                Some(latency_ms),
                now,
            )
        }
        Ok(Ok(g)) => (StatusCode::OK, assess(settings, now, latency_ms, &g)),
    }
}

/// What the report is made of.
struct Gathered {
    queues: Vec<QueueFigures>,
    /// Workers holding a live claim.
    active: BTreeSet<String>,
    /// Those, and the workers that started a run in the last 5 minutes.
    recent: BTreeSet<String>,
    dead_letters: i64,
    /// The worker registry of `GET /workers` over [`REGISTRY_MINUTES`].
    registry: WorkerRegistry,
}

async fn gather(client: &Client, settings: &ApiSettings) -> Result<Gathered, ClientError> {
    let mut queues = vec![];
    let mut active = BTreeSet::new();
    let mut recent = BTreeSet::new();
    let mut dead_letters = 0;
    for name in client.list_queues().await? {
        let stats = match client.queue_stats(&name).await {
            Ok(s) => s,
            Err(ClientError::QueueNotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let is_dlq = settings.dlq_queue.as_deref() == Some(name.as_str()) || name.ends_with("-dlq");
        if is_dlq {
            dead_letters += stats.pending;
            continue;
        }
        let live = client.queue_liveness(&name).await?;
        active.extend(live.active.iter().cloned());
        recent.extend(live.active);
        recent.extend(live.recent);
        queues.push(QueueFigures {
            name,
            pending: stats.pending,
            running: stats.running,
            oldest: stats.oldest_pending_age_secs,
            last_completed: live.last_completed,
            expired_claims: live.expired,
        });
    }
    let registry = client.worker_registry(REGISTRY_MINUTES).await?;
    Ok(Gathered {
        queues,
        active,
        recent,
        dead_letters,
        registry,
    })
}

fn assess(
    settings: &ApiSettings,
    now: DateTime<Utc>,
    latency_ms: f64,
    g: &Gathered,
) -> HealthDetailed {
    let Gathered {
        queues,
        active,
        recent,
        dead_letters,
        registry,
    } = g;
    let dead_letters = *dead_letters;
    let mut alerts = vec![];
    let mut warnings = vec![];
    if latency_ms > LATENCY_ALERT_MS {
        alerts.push(item(
            HealthLevel::Alert,
            format!("Database latency is {latency_ms:.0} ms (> {LATENCY_ALERT_MS} ms)"),
            now,
        ));
    } else if latency_ms > LATENCY_WARN_MS {
        warnings.push(item(
            HealthLevel::Warning,
            format!("Database latency is {latency_ms:.0} ms (> {LATENCY_WARN_MS} ms)"),
            now,
        ));
    }
    let depth: i64 = queues.iter().map(|q| q.pending + q.running).sum();
    let pending: i64 = queues.iter().map(|q| q.pending).sum();
    if depth > DEPTH_ALERT {
        alerts.push(item(
            HealthLevel::Alert,
            format!("Queue depth is {depth} (> {DEPTH_ALERT})"),
            now,
        ));
    } else if depth > DEPTH_WARN {
        warnings.push(item(
            HealthLevel::Warning,
            format!("Queue depth is {depth} (> {DEPTH_WARN})"),
            now,
        ));
    }
    let oldest = queues
        .iter()
        .filter_map(|q| q.oldest)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    if let Some(age) = oldest {
        if age > AGE_ALERT_S {
            alerts.push(item(
                HealthLevel::Alert,
                format!("Oldest pending task has waited {age:.0} s (> 1 h)"),
                now,
            ));
        } else if age > AGE_WARN_S {
            warnings.push(item(
                HealthLevel::Warning,
                format!("Oldest pending task has waited {age:.0} s (> 10 min)"),
                now,
            ));
        }
    }
    for q in queues {
        let stalled = q.pending > 0
            && q.oldest.is_some_and(|a| a > STALL_S)
            && q.last_completed
                .is_none_or(|t| (now - t).num_milliseconds() as f64 / 1000.0 > STALL_S);
        if stalled {
            alerts.push(item(
                HealthLevel::Alert,
                format!(
                    "Queue {:?}: no task completed in the last 5 minutes while {} are pending",
                    q.name, q.pending
                ),
                now,
            ));
        }
        if q.expired_claims > 0 {
            warnings.push(item(
                HealthLevel::Warning,
                format!(
                    "Queue {:?}: {} running task(s) have expired claims (their worker stopped renewing; they will be reclaimed)",
                    q.name, q.expired_claims
                ),
                now,
            ));
        }
    }
    // The seed's worker checks, on the registry of `GET /workers` (runs and heartbeats), only
    // while tasks have been waiting for a worker: an idle fleet of absurd-host workers sends
    // no heartbeats, so it alone raises nothing.
    let registered = registry.workers.len();
    let registered_active = registry.count(WorkerState::Active).max(active.len());
    let waiting = pending > 0 && oldest.is_some_and(|a| a > NO_WORKER_S);
    let mut worker_pool_healthy = true;
    let mut worker_pool_message = format!("{registered_active} active workers");
    if waiting && registered == 0 {
        worker_pool_healthy = false;
        worker_pool_message = "No workers registered".into();
        alerts.push(item(
            HealthLevel::Alert,
            format!(
                "No workers available: {pending} task(s) pending and no worker seen in the last {} minutes",
                REGISTRY_MINUTES
            ),
            now,
        ));
    } else if waiting && registered_active == 0 {
        worker_pool_healthy = false;
        worker_pool_message = "No active workers (tasks pending)".into();
        alerts.push(item(
            HealthLevel::Alert,
            format!(
                "No active workers but tasks are pending: {pending} task(s) pending; {registered} worker(s) seen \
                 in the last {REGISTRY_MINUTES} minutes, none heard from in the last {ACTIVE_SECS} s or holding a claim"
            ),
            now,
        ));
    } else if waiting && (registered_active as f64) < registered as f64 * 0.5 {
        warnings.push(item(
            HealthLevel::Warning,
            format!("Only {registered_active}/{registered} workers active while {pending} task(s) are pending"),
            now,
        ));
    }
    let status = if !alerts.is_empty() {
        HealthStatus::Critical
    } else if !warnings.is_empty() {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    };
    let message = match status {
        HealthStatus::Healthy => "All systems operational".to_string(),
        HealthStatus::Degraded => format!("{} warning(s)", warnings.len()),
        _ => format!("{} alert(s)", alerts.len()),
    };
    HealthDetailed {
        status,
        message,
        queue: settings.default_queue.clone(),
        database_available: true,
        database_latency_ms: Some(latency_ms),
        queue_depth: Some(depth),
        oldest_pending_age_seconds: oldest,
        dead_letters_pending: Some(dead_letters),
        worker_pool_healthy,
        worker_pool_message,
        workers: Some(WorkersSeen {
            active: active.len(),
            recent: recent.len(),
            ids: recent.iter().cloned().collect(),
            registered,
            registered_active,
        }),
        queues: queues
            .iter()
            .map(|q| QueueHealth {
                queue_name: q.name.clone(),
                pending: q.pending,
                running: q.running,
                depth: q.pending + q.running,
                oldest_pending_age_seconds: q.oldest,
                last_completed_at: q.last_completed,
                expired_claims: q.expired_claims,
            })
            .collect(),
        alerts,
        warnings,
        checked_at: now,
    }
}
