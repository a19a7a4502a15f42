//! The HTTP API: the DSA-110 pipeline's `/api/absurd` endpoints, health, Prometheus metrics and the
//! OpenAPI document, served by `absurd-host serve` and `absurd-host worker --api`.
//!
//! Every operation goes through the one [`Client`] library that the CLI uses too.
//!
//! Security model:
//! * by default it binds `127.0.0.1:8080`; a non-loopback address is refused unless a bearer
//!   token is configured, and then every route except `GET /api/absurd/health` requires
//!   `Authorization: Bearer <token>`;
//! * without a token (loopback only), requests whose `Host` is not a loopback name are
//!   refused (DNS rebinding), and so are state-changing requests from another `Origin`
//!   (cross-site request forgery from a browser on the same machine);
//! * request bodies are limited (1 MiB by default, 413 above) and `params` too (256 KiB).
//!
//! Every request and response is a type of [`model`], shared with `absurd-host --json`; the
//! OpenAPI document ([`openapi`]) is generated from those types and the handlers'
//! `#[utoipa::path]` attributes. See `docs/api.md` for the endpoints and their JSON.

pub mod error;
mod extract;
pub mod health;
pub mod live;
mod maintenance;
pub mod model;
mod monitor;
pub mod openapi;
pub mod prometheus;
mod schedules;
mod seed;
mod tasks;
mod ui;
pub mod workflows;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use absurd_client::Client;
use absurd_engine::metrics::Counters;
use error::ApiError;

/// Where every DSA-110 pipeline endpoint lives.
pub const PREFIX: &str = "/api/absurd";
/// The default listen address (`--listen`, `ABSURD_API_LISTEN`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// [`DEFAULT_LISTEN`] as an address (a unit test keeps the two equal).
const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));
/// The default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// The default limit on a spawned task's `params` (serialised).
pub const DEFAULT_MAX_PARAMS_BYTES: usize = 256 * 1024;
/// The default `statement_timeout` of the API's queries (`ABSURD_API_STATEMENT_TIMEOUT`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The one route that never requires the token.
pub const HEALTH_PATH: &str = "/api/absurd/health";

/// Every route: `(method, path)`. The router is built from this list, and the OpenAPI test
/// checks it against the document both ways.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/absurd/tasks"),
    ("GET", "/api/absurd/tasks"),
    ("GET", "/api/absurd/tasks/{task_id}"),
    ("DELETE", "/api/absurd/tasks/{task_id}"),
    ("POST", "/api/absurd/tasks/{task_id}/retry"),
    ("POST", "/api/absurd/tasks/with-deps"),
    ("POST", "/api/absurd/workflows"),
    ("GET", "/api/absurd/workflows/{task_id}"),
    ("POST", "/api/absurd/groups"),
    ("POST", "/api/absurd/events"),
    ("GET", "/api/absurd/queues"),
    ("GET", "/api/absurd/queues/stats"),
    ("GET", "/api/absurd/queues/{queue_name}/stats"),
    ("GET", "/api/absurd/queues/{queue_name}/throughput"),
    ("GET", "/api/absurd/workers"),
    ("GET", "/api/absurd/schedules"),
    ("POST", "/api/absurd/schedules"),
    ("GET", "/api/absurd/schedules/{name}"),
    ("PUT", "/api/absurd/schedules/{name}"),
    ("DELETE", "/api/absurd/schedules/{name}"),
    ("GET", "/api/absurd/workers/metrics"),
    ("POST", "/api/absurd/workers/{worker_id}/heartbeat"),
    ("GET", "/api/absurd/metrics"),
    ("GET", "/api/absurd/seed/tasks"),
    ("GET", "/api/absurd/seed/tasks/{task_id}"),
    ("GET", "/api/absurd/health"),
    ("GET", "/api/absurd/health/detailed"),
    ("GET", "/api/absurd/maintenance"),
    ("GET", "/api/absurd/metrics/prometheus"),
    ("GET", "/api/absurd/openapi.json"),
    ("GET", "/metrics"),
];

/// How the API runs.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Bearer token; required to listen on a non-loopback address.
    pub token: Option<String>,
    pub max_body_bytes: usize,
    pub max_params_bytes: usize,
    /// The queue named by `GET /health` and used by `POST /events` when none is given.
    pub default_queue: String,
    /// `max_attempts` of tasks spawned without one (`ABSURD_MAX_RETRIES + 1`).
    pub default_max_attempts: i32,
    /// The dead-letter queue: `/health/detailed` counts its tasks apart (no worker claims them).
    pub dlq_queue: Option<String>,
    /// More pools to report in `/metrics` (e.g. the worker's), by name; the client's pool is
    /// reported as `api`.
    pub extra_pools: Vec<(String, PgPool)>,
    /// Every query of the API's pool is cancelled by PostgreSQL after this long (its
    /// `statement_timeout`), so that no request can hold a connection or a lock for long.
    pub statement_timeout: Duration,
    /// False with `ABSURD_ENABLED=false`: the `/api/absurd` routes then answer as the
    /// DSA-110 pipeline's API did when disabled (503 `Absurd workflow manager is not
    /// enabled`; health `disabled`).
    pub enabled: bool,
    /// The live updates of `/api/absurd/ws` and `/api/absurd/stream`: their bounds.
    pub live: live::LiveSettings,
    /// The named workflows `POST /workflows` and `POST /groups` start (`[workflows.<name>]`
    /// of the configuration file given with `--config`).
    pub workflows: Arc<crate::workflow::Workflows>,
    /// Where the read-only routes read (`ABSURD_API_READ_URL`, e.g. a replica); `None`: the
    /// client the API writes with. Health, writes and live updates always use that one.
    pub read_client: Option<Client>,
}

impl ApiSettings {
    /// Settings from a listen address (default [`DEFAULT_LISTEN`]) and an optional token (an
    /// empty token counts as none), with the given configuration's queue and retry defaults.
    pub fn new(
        listen: Option<&str>,
        token: Option<String>,
        config: &crate::config::AbsurdConfig,
    ) -> anyhow::Result<ApiSettings> {
        let raw = listen
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_LISTEN);
        let listen = parse_listen(raw)?;
        Ok(ApiSettings {
            listen,
            token: token.filter(|t| !t.trim().is_empty()),
            statement_timeout: statement_timeout_from_env()?,
            enabled: enabled_from_env()?,
            live: live::LiveSettings::from_env()?,
            ..ApiSettings::for_config(config)
        })
    }

    /// The settings `serve` uses for `config` when no flag and no `ABSURD_API_*` variable is
    /// given: [`DEFAULT_LISTEN`], no token, the default body, `params` and statement limits.
    /// Unlike [`ApiSettings::new`] it reads no environment, so an embedder (or a test driving
    /// [`router`] in process) gets the same settings wherever it runs.
    pub fn for_config(config: &crate::config::AbsurdConfig) -> ApiSettings {
        ApiSettings {
            listen: DEFAULT_LISTEN_ADDR,
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_params_bytes: DEFAULT_MAX_PARAMS_BYTES,
            default_queue: config.queue_name.clone(),
            default_max_attempts: config.default_max_attempts(),
            dlq_queue: config.dlq_enabled.then(|| config.dlq_queue_name.clone()),
            extra_pools: Vec::new(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            enabled: true,
            live: live::LiveSettings::default(),
            workflows: Arc::default(),
            read_client: None,
        }
    }

    /// Sends the read-only routes to `reads` (when given), whose pool `/metrics` then reports
    /// as `api-read`.
    pub fn set_read_client(&mut self, reads: Option<Client>) {
        if let Some(c) = &reads {
            self.extra_pools.push(("api-read".into(), c.pool().clone()));
        }
        self.read_client = reads;
    }

    /// Refuses to expose the API off this machine without a token.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            bail!(
                "refusing to listen on {} without a token: the API can spawn and cancel tasks. \
                 Set ABSURD_API_TOKEN (clients then send `Authorization: Bearer <token>`), \
                 or listen on a loopback address such as {DEFAULT_LISTEN}",
                self.listen
            );
        }
        Ok(())
    }
}

/// The settings of a plain `absurd-host serve`: [`ApiSettings::for_config`] of the default
/// configuration (queue `dsa110-pipeline`, `max_attempts` 4, its dead-letter queue).
impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings::for_config(&crate::config::AbsurdConfig::default())
    }
}

const STATEMENT_TIMEOUT_VAR: &str = "ABSURD_API_STATEMENT_TIMEOUT";

/// `ABSURD_API_STATEMENT_TIMEOUT` in seconds, or [`DEFAULT_STATEMENT_TIMEOUT`].
fn statement_timeout_from_env() -> anyhow::Result<Duration> {
    parse_statement_timeout(std::env::var(STATEMENT_TIMEOUT_VAR).ok().as_deref())
}

fn parse_statement_timeout(raw: Option<&str>) -> anyhow::Result<Duration> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(DEFAULT_STATEMENT_TIMEOUT);
    };
    let d = crate::config::parse_seconds(STATEMENT_TIMEOUT_VAR, raw)?;
    if d < Duration::from_millis(1) {
        bail!(
            "invalid {STATEMENT_TIMEOUT_VAR}: {raw} seconds is below PostgreSQL's 1 ms resolution"
        );
    }
    Ok(d)
}

const ENABLED_VAR: &str = "ABSURD_ENABLED";

/// Whether the API serves: `ABSURD_ENABLED` unset or empty is enabled (absurd-host serves
/// unless told not to; the DSA-110 pipeline's default was off), else the boolean it holds.
fn enabled_from_env() -> anyhow::Result<bool> {
    parse_enabled(std::env::var(ENABLED_VAR).ok().as_deref())
}

fn parse_enabled(raw: Option<&str>) -> anyhow::Result<bool> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(true),
        Some(r) => Ok(crate::config::parse_bool(ENABLED_VAR, r)?),
    }
}

/// The DSA-110 pipeline's answer on every `/api/absurd` route while it is disabled.
pub const DISABLED_DETAIL: &str = "Absurd workflow manager is not enabled";

/// Parses `host:port` (`localhost` is accepted and means 127.0.0.1).
pub fn parse_listen(raw: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = raw.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = raw.strip_prefix("localhost:") {
        if let Ok(p) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
        }
    }
    bail!("invalid ABSURD_API_LISTEN / --listen {raw:?}: expected IP:PORT, e.g. {DEFAULT_LISTEN} or [::1]:8080")
}

/// Opens the API's own small pool without connecting yet, so that the server starts (and
/// reports `down`) while the database is unreachable. Requests wait at most 3 s for a
/// connection, then answer 503.
///
/// Every connection gets `statement_timeout` set when it opens: an API request can never
/// keep a query, and the locks it holds, running longer than that.
pub fn lazy_pool(url: &str, statement_timeout: Duration) -> anyhow::Result<PgPool> {
    absurd_client::db::lazy_pool_with_statement_timeout(
        url,
        8,
        Duration::from_secs(3),
        statement_timeout,
    )
    .with_context(|| {
        format!(
            "invalid database URL {}",
            absurd_client::db::redact_url(url)
        )
    })
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub client: Client,
    pub counters: Counters,
    pub settings: Arc<ApiSettings>,
    pub health: Arc<health::Cache>,
    pub started: Instant,
    pub live: Arc<live::Hub>,
}

fn method_router(method: &str, path: &str) -> MethodRouter<AppState> {
    // The seed's JSON metrics; the bare `/metrics` below is Prometheus.
    if (method, path) == ("GET", "/api/absurd/metrics") {
        return get(monitor::task_metrics);
    }
    let full = (method, path.strip_prefix(PREFIX).unwrap_or(path));
    match full {
        ("POST", "/tasks") => post(tasks::spawn),
        ("GET", "/tasks") => get(tasks::list),
        ("GET", "/tasks/{task_id}") => get(tasks::get_one),
        ("DELETE", "/tasks/{task_id}") => delete(tasks::cancel),
        ("POST", "/tasks/{task_id}/retry") => post(tasks::retry),
        ("POST", "/tasks/with-deps") => post(workflows::with_deps),
        ("POST", "/workflows") => post(workflows::start_workflow),
        ("GET", "/workflows/{task_id}") => get(workflows::get_workflow),
        ("POST", "/groups") => post(workflows::submit),
        ("POST", "/events") => post(tasks::emit_event),
        ("GET", "/queues") => get(tasks::list_queues),
        ("GET", "/queues/stats") => get(tasks::all_queue_stats),
        ("GET", "/queues/{queue_name}/stats") => get(tasks::queue_stats),
        ("GET", "/queues/{queue_name}/throughput") => get(tasks::queue_throughput),
        ("GET", "/workers") => get(tasks::workers),
        ("GET", "/schedules") => get(schedules::list),
        ("POST", "/schedules") => post(schedules::create),
        ("GET", "/schedules/{name}") => get(schedules::get_one),
        ("PUT", "/schedules/{name}") => put(schedules::replace),
        ("DELETE", "/schedules/{name}") => delete(schedules::delete),
        ("GET", "/workers/metrics") => get(monitor::worker_metrics),
        ("POST", "/workers/{worker_id}/heartbeat") => post(monitor::heartbeat),
        ("GET", "/seed/tasks") => get(seed::list),
        ("GET", "/seed/tasks/{task_id}") => get(seed::get_one),
        ("GET", "/health") => get(health::health),
        ("GET", "/health/detailed") => get(health::detailed),
        ("GET", "/maintenance") => get(maintenance::runs),
        ("GET", "/metrics/prometheus") => get(prometheus::metrics_seed_path),
        ("GET", "/metrics") => get(prometheus::metrics),
        ("GET", "/openapi.json") => get(openapi::serve_document),
        other => panic!("route {other:?} in ROUTES has no handler"),
    }
}

/// Whether a route reads from [`ApiSettings::read_client`]: every `GET` of `ROUTES` but the
/// health checks and the Prometheus metrics (which report the primary, the database the
/// workers use, and the API's own pools).
pub fn reads_from_replica(method: &str, path: &str) -> bool {
    method == "GET"
        && !path.starts_with(HEALTH_PATH)
        && !matches!(path, "/metrics" | "/api/absurd/metrics/prometheus")
}

/// The router, with the security layers.
pub fn router(client: Client, settings: ApiSettings, counters: Counters) -> Router {
    router_until(client, settings, counters, CancellationToken::new())
}

/// [`router`], whose live-update streams end when `shutdown` is cancelled (so that a graceful
/// shutdown does not wait for them).
pub fn router_until(
    client: Client,
    settings: ApiSettings,
    counters: Counters,
    shutdown: CancellationToken,
) -> Router {
    let live = Arc::new(live::Hub::new(
        client.clone(),
        settings.live.clone(),
        shutdown,
    ));
    let state = AppState {
        live,
        client,
        counters,
        health: Arc::new(health::Cache::default()),
        started: Instant::now(),
        settings: Arc::new(settings),
    };
    let read_state = AppState {
        client: state
            .settings
            .read_client
            .clone()
            .unwrap_or_else(|| state.client.clone()),
        ..state.clone()
    };
    let mut r: Router<AppState> = Router::new();
    for (method, path) in ROUTES {
        if reads_from_replica(method, path) {
            r = r.route(
                path,
                method_router(method, path).with_state(read_state.clone()),
            );
        } else {
            r = r.route(path, method_router(method, path));
        }
    }
    // The live-update streams: not in ROUTES nor the OpenAPI document (see `live`).
    r = r.route(live::WS_PATH, get(live::websocket));
    r = r.route(live::SSE_PATH, get(live::sse));
    for (path, _, _) in ui::FILES {
        r = r.route(path, get(ui::serve));
    }
    r.fallback(|| async { ApiError::not_found("Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            when_disabled,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .with_state(state)
}

/// Binds the listen address after the security check. The address may have port 0; the
/// listener's `local_addr()` tells the port chosen.
pub async fn bind(settings: &ApiSettings) -> anyhow::Result<tokio::net::TcpListener> {
    settings.check()?;
    tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))
}

/// Serves the API until `shutdown` is cancelled.
pub async fn serve(
    client: Client,
    settings: ApiSettings,
    counters: Counters,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = bind(&settings).await?;
    serve_on(listener, client, settings, counters, shutdown).await
}

/// Serves the API on an already bound listener until `shutdown` is cancelled.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    client: Client,
    settings: ApiSettings,
    counters: Counters,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    settings.check()?;
    let addr = listener.local_addr()?;
    let auth = if settings.token.is_some() {
        "bearer token required"
    } else {
        "loopback only, no token"
    };
    tracing::info!("API listening on http://{addr} ({auth})");
    let app = router_until(client, settings, counters, shutdown.child_token());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("API server failed")?;
    tracing::info!("API stopped");
    Ok(())
}

/// Authentication, DNS-rebinding and cross-origin checks, and a debug log line per request.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    match &st.settings.token {
        Some(token) => {
            // The dashboard's static files hold no data; its API calls send the token.
            if path != HEALTH_PATH && !ui::is_static(&path) {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| {
                        h.strip_prefix("Bearer ")
                            .or_else(|| h.strip_prefix("bearer "))
                    })
                    .map(str::trim);
                match given {
                    None => {
                        return ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "Not authenticated: send `Authorization: Bearer <token>`",
                        )
                        .into_response()
                    }
                    Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                        return ApiError::new(StatusCode::UNAUTHORIZED, "Invalid bearer token")
                            .into_response()
                    }
                    Some(_) => {}
                }
            }
        }
        None => {
            if let Some(h) = &host {
                if !is_loopback_host(h) {
                    return ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("Host {h:?} refused: without ABSURD_API_TOKEN the API answers loopback names only"),
                    )
                    .into_response();
                }
            }
        }
    }
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        if let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if host.as_deref() != Some(origin_host) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("cross-origin request from {origin:?} refused"),
                )
                .into_response();
            }
        }
    }
    let t0 = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_ms = t0.elapsed().as_millis() as u64, "api request");
    resp
}

/// With `ABSURD_ENABLED=false`, every `/api/absurd` route but the health checks and the
/// OpenAPI document answers 503 as the DSA-110 pipeline did; the health checks say `disabled`.
async fn when_disabled(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !st.settings.enabled {
        let path = req.uri().path();
        let open = path == HEALTH_PATH
            || path == "/api/absurd/health/detailed"
            || path == "/api/absurd/openapi.json";
        if path.starts_with("/api/absurd/") && !open {
            return ApiError::unavailable(DISABLED_DETAIL).into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.com",
            "evil.com:8080",
            "10.0.0.1:80",
            "[::2]:80",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let c = crate::config::AbsurdConfig::default();
        assert!(ApiSettings::new(None, None, &c).unwrap().check().is_ok());
        assert!(ApiSettings::new(Some("0.0.0.0:8080"), None, &c)
            .unwrap()
            .check()
            .is_err());
        assert!(ApiSettings::new(Some("0.0.0.0:8080"), Some(" ".into()), &c)
            .unwrap()
            .check()
            .is_err());
        assert!(ApiSettings::new(Some("0.0.0.0:8080"), Some("t".into()), &c)
            .unwrap()
            .check()
            .is_ok());
        assert!(ApiSettings::new(Some("nonsense"), None, &c).is_err());
        assert_eq!(
            parse_listen("localhost:9").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 9))
        );
    }

    #[test]
    fn the_defaults_are_what_new_gives_without_flags() {
        assert_eq!(parse_listen(DEFAULT_LISTEN).unwrap(), DEFAULT_LISTEN_ADDR);
        let d = ApiSettings::default();
        assert_eq!(d.listen, DEFAULT_LISTEN_ADDR);
        assert_eq!(d.token, None);
        assert_eq!(d.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(d.max_params_bytes, DEFAULT_MAX_PARAMS_BYTES);
        assert_eq!(d.default_queue, "dsa110-pipeline");
        assert_eq!(d.default_max_attempts, 4);
        assert_eq!(d.dlq_queue.as_deref(), Some("dsa110-pipeline-dlq"));
        assert!(d.extra_pools.is_empty());
        assert_eq!(d.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
        // `new` with no listen address and no token only adds the environment's timeout.
        let n = ApiSettings::new(None, None, &crate::config::AbsurdConfig::default()).unwrap();
        assert_eq!(
            (n.listen, n.token, n.max_body_bytes, n.max_params_bytes),
            (d.listen, d.token, d.max_body_bytes, d.max_params_bytes)
        );
        assert_eq!(
            (n.default_queue, n.default_max_attempts, n.dlq_queue),
            (d.default_queue, d.default_max_attempts, d.dlq_queue)
        );
    }

    #[test]
    fn statement_timeouts_parse_in_seconds() {
        assert_eq!(
            parse_statement_timeout(None).unwrap(),
            DEFAULT_STATEMENT_TIMEOUT
        );
        assert_eq!(
            parse_statement_timeout(Some(" ")).unwrap(),
            DEFAULT_STATEMENT_TIMEOUT
        );
        assert_eq!(
            parse_statement_timeout(Some("0.5")).unwrap(),
            Duration::from_millis(500)
        );
        for bad in ["0", "-1", "soon", "0.0001", "inf"] {
            let e = format!("{:#}", parse_statement_timeout(Some(bad)).unwrap_err());
            assert!(
                e.contains("ABSURD_API_STATEMENT_TIMEOUT") && e.contains(bad),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn absurd_enabled_is_on_unless_set_false() {
        assert!(parse_enabled(None).unwrap());
        assert!(parse_enabled(Some(" ")).unwrap());
        assert!(parse_enabled(Some("true")).unwrap());
        assert!(!parse_enabled(Some("false")).unwrap());
        assert!(!parse_enabled(Some("0")).unwrap());
        let e = format!("{:#}", parse_enabled(Some("ture")).unwrap_err());
        assert!(e.contains("ABSURD_ENABLED") && e.contains("ture"), "{e}");
    }

    #[test]
    fn every_route_has_a_handler() {
        for (m, p) in ROUTES {
            let _ = method_router(m, p);
        }
    }
}
