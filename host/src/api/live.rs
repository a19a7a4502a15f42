//! Live updates: `GET /api/absurd/ws` (WebSocket) and `GET /api/absurd/stream` (Server-Sent
//! Events) broadcast the DSA-110 seed's `task_update` and `queue_stats_update` messages.
//!
//! They come from PostgreSQL, not from this process: migration 0015's triggers `NOTIFY
//! absurd_live` whenever a statement changes tasks' states, whichever worker or client runs it
//! (absurd-host, the Python absurd-sdk, `absurdctl`). One *pump* task per server listens,
//! reads what the messages need of the changed tasks (one statement per queue and flush), and
//! broadcasts them. It runs only while someone subscribes, and holds the triggers' lease
//! (`absurd.live_updates_renew`) only then, so a database nobody watches sends no
//! notifications at all. On a schema without the triggers (`absurdctl init`, or not yet
//! migrated to 0015) it says so in the log and polls queue statistics instead:
//! `queue_stats_update` only, every [`LiveSettings::poll_interval`].
//!
//! Everything is bounded: the number of subscribers ([`LiveSettings::max_subscribers`],
//! refused beyond with 503 naming the limit), what each may fall behind
//! ([`LiveSettings::subscriber_buffer`] messages; a subscriber further behind, or whose socket
//! takes longer than [`LiveSettings::send_timeout`] to accept one, is dropped, and nobody else
//! waits for it), the size of a message ([`MAX_MESSAGE_BYTES`]: results and failure texts are
//! left out or cut beyond [`LiveSettings::max_result_bytes`] / `max_error_chars`), the changes
//! held between two flushes ([`MAX_PENDING_CHANGES`]), and `queue_stats_update`, sent at most
//! once per queue per [`LiveSettings::stats_interval`] however many changes came.
//!
//! These two routes are not in [`super::ROUTES`] nor in the OpenAPI document (OpenAPI has no
//! way to describe a stream that never ends, and a schema tester would wait on it forever);
//! `docs/api.md` documents them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use absurd_client::live::{LiveNotice, LiveTaskRow, LIVE_MAX_ROWS};
use absurd_client::{Client, State as TaskState};

use super::error::ApiError;
use super::AppState;

/// The WebSocket route.
pub const WS_PATH: &str = "/api/absurd/ws";
/// The Server-Sent Events route.
pub const SSE_PATH: &str = "/api/absurd/stream";

/// The largest message sent, serialised. A `task_update` that would be larger is sent
/// without its result and failure text (`result_omitted: true`).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// The most task changes heard and not yet read; beyond, a queue's further changes are
/// folded into one `queue_stats_update` with `resync: true`.
pub const MAX_PENDING_CHANGES: usize = 10_000;
/// How often pending changes are read and messages broadcast.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// The most changes read per flush, and the most bytes of messages waiting to be broadcast
/// before more are read: the messages waiting stay under 4 MiB + 512 × [`MAX_MESSAGE_BYTES`].
const FLUSH_MAX_CHANGES: usize = 512;
const OUTBOX_MAX_BYTES: usize = 4 * 1024 * 1024;
/// The lease asked of the triggers, and how often it is renewed.
const LEASE_SECS: i32 = 60;
const LEASE_RENEW: Duration = Duration::from_secs(20);
/// How long the pump lingers after the last subscriber left.
const IDLE_STOP: Duration = Duration::from_secs(30);
/// How long a new subscriber waits for the pump to be listening before it is told anyway.
const READY_WAIT: Duration = Duration::from_secs(5);
/// Back-off after the database failed the pump.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// The shortest polling and ping interval (a zero one would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The most WebSocket frame a client may send us (we expect only pings and a close).
const MAX_INCOMING_BYTES: usize = 4096;

pub const MAX_SUBSCRIBERS_VAR: &str = "ABSURD_API_LIVE_MAX_SUBSCRIBERS";

/// How live updates run (part of [`super::ApiSettings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// WebSocket and SSE subscribers together (`ABSURD_API_LIVE_MAX_SUBSCRIBERS`, default 64).
    pub max_subscribers: usize,
    /// Messages a subscriber may fall behind before it is dropped (default 256).
    pub subscriber_buffer: usize,
    /// How long one message may take to go into a subscriber's socket (default 10 s).
    pub send_timeout: Duration,
    /// A WebSocket subscriber is pinged this often, and dropped when a ping is still
    /// unanswered at the next one (default 15 s). A client that stops reading never answers,
    /// however large the kernel's socket buffers that hide it.
    pub ping_interval: Duration,
    /// At most one `queue_stats_update` per queue per this (default 1 s).
    pub stats_interval: Duration,
    /// Without the triggers: how often queue statistics are polled (default 5 s).
    pub poll_interval: Duration,
    /// A completed task's result is sent when its JSON is at most this (default 8 KiB).
    pub max_result_bytes: usize,
    /// A failure message is cut to this many characters (default 2,000).
    pub max_error_chars: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            max_subscribers: 64,
            subscriber_buffer: 256,
            send_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            stats_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(5),
            max_result_bytes: 8 * 1024,
            max_error_chars: 2000,
        }
    }
}

impl LiveSettings {
    /// The defaults, with `ABSURD_API_LIVE_MAX_SUBSCRIBERS` when set.
    pub fn from_env() -> anyhow::Result<LiveSettings> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<LiveSettings> {
        let mut s = LiveSettings::default();
        if let Some(raw) = lookup(MAX_SUBSCRIBERS_VAR).filter(|r| !r.trim().is_empty()) {
            let n = crate::config::value::positive_count(&raw)
                .map_err(|m| anyhow::anyhow!("invalid {MAX_SUBSCRIBERS_VAR}: {m}"))?;
            s.max_subscribers = n as usize;
        }
        Ok(s)
    }
}

/// Where the pump is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not started, or connecting.
    Starting,
    /// Listening to the triggers' notifications, with the lease held.
    Notifications,
    /// No triggers in this database: polling statistics.
    Polling,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Starting => "starting",
            Mode::Notifications => "notifications",
            Mode::Polling => "polling",
        }
    }
}

/// The broadcaster shared by every subscriber of one server.
pub(crate) struct Hub {
    client: Client,
    settings: LiveSettings,
    shutdown: CancellationToken,
    tx: broadcast::Sender<Arc<str>>,
    subscribers: AtomicUsize,
    dropped: AtomicU64,
    mode: watch::Sender<Mode>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// This API's name among the database's live-update listeners (migration 0022).
    holder: String,
}

/// A subscriber's slot; given back when dropped.
struct Slot(Arc<Hub>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Lagged,
    Shutdown,
}

/// One subscriber's feed: a forwarder task copies the broadcast into a bounded channel, and
/// ends (giving the slot back) as soon as the subscriber falls [`LiveSettings::subscriber_buffer`]
/// behind, even when the subscriber's connection is stuck and nobody reads the channel.
struct Feed {
    rx: mpsc::Receiver<Arc<str>>,
    end: watch::Receiver<Option<End>>,
}

impl Hub {
    pub(crate) fn new(client: Client, settings: LiveSettings, shutdown: CancellationToken) -> Hub {
        let (tx, _) = broadcast::channel(settings.subscriber_buffer.max(1));
        let (mode, _) = watch::channel(Mode::Starting);
        Hub {
            client,
            settings,
            shutdown,
            tx,
            subscribers: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            mode,
            pump: Mutex::new(None),
            holder: format!("api pid {} {}", std::process::id(), Uuid::new_v4()),
        }
    }

    /// Takes a slot, or refuses with 503 naming the limit.
    fn subscribe(self: &Arc<Self>) -> Result<Feed, ApiError> {
        let max = self.settings.max_subscribers;
        let taken = self
            .subscribers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(ApiError::unavailable(format!(
                "too many live-update subscribers: the limit is {max} ({MAX_SUBSCRIBERS_VAR}); \
                 poll the API instead, or try again later"
            )));
        }
        let slot = Slot(self.clone());
        let mut brx = self.tx.subscribe();
        let (ftx, frx) = mpsc::channel(self.settings.subscriber_buffer.max(1));
        let (end_tx, end_rx) = watch::channel(None);
        let hub = self.clone();
        tokio::spawn(async move {
            let end = loop {
                tokio::select! {
                    m = brx.recv() => match m {
                        Ok(msg) => match ftx.try_send(msg) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => break End::Lagged,
                            // The subscriber went away.
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        },
                        Err(broadcast::error::RecvError::Lagged(_)) => break End::Lagged,
                        Err(broadcast::error::RecvError::Closed) => break End::Shutdown,
                    },
                    _ = ftx.closed() => return,
                    _ = hub.shutdown.cancelled() => break End::Shutdown,
                }
            };
            // The slot is given back before the subscriber hears why it ends.
            drop(slot);
            if end == End::Lagged {
                hub.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    buffer = hub.settings.subscriber_buffer,
                    "live updates: dropped a subscriber that fell more than {} messages behind",
                    hub.settings.subscriber_buffer
                );
            }
            let _ = end_tx.send(Some(end));
        });
        self.ensure_pump();
        Ok(Feed {
            rx: frx,
            end: end_rx,
        })
    }

    /// Starts the pump unless it runs.
    fn ensure_pump(self: &Arc<Self>) {
        let mut pump = self.pump.lock().unwrap_or_else(|p| p.into_inner());
        if pump.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let _ = self.mode.send(Mode::Starting);
        let hub = self.clone();
        *pump = Some(tokio::spawn(async move { hub.run_pump().await }));
    }

    /// Waits (at most [`READY_WAIT`]) until the pump listens or polls, and says which.
    async fn ready(&self) -> Mode {
        let mut rx = self.mode.subscribe();
        let wait = rx.wait_for(|m| *m != Mode::Starting);
        let mode = match tokio::time::timeout(READY_WAIT, wait).await {
            Ok(Ok(m)) => *m,
            _ => *self.mode.borrow(),
        };
        mode
    }

    fn hello(&self, mode: Mode) -> String {
        json!({
            "type": "connected",
            "source": mode.as_str(),
            "max_subscribers": self.settings.max_subscribers,
            "subscriber_buffer": self.settings.subscriber_buffer,
            "timestamp": Utc::now(),
        })
        .to_string()
    }

    fn publish(&self, msg: String) {
        // No receiver is fine: nobody listens right now.
        let _ = self.tx.send(Arc::from(msg));
    }

    fn idle(&self) -> bool {
        self.subscribers.load(Ordering::SeqCst) == 0
    }

    async fn run_pump(self: Arc<Self>) {
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let outcome = match self.client.live_updates_supported().await {
                Ok(true) if self.client.can_listen() => self.listen(&mut idle_since).await,
                Ok(true) => {
                    tracing::warn!(
                        "live updates: the database URL goes through a pooler in transaction mode \
                         and no ABSURD_LISTEN_URL gives a direct session to LISTEN on: task_update \
                         messages are not sent, and queue_stats_update comes from polling queue \
                         statistics every {:?}",
                        self.settings.poll_interval
                    );
                    self.poll(&mut idle_since).await
                }
                Ok(false) => {
                    tracing::warn!(
                        "live updates: this database's absurd schema has no live-update triggers \
                         (installed by `absurdctl init`, or not migrated to absurd-host's migration \
                         0015): task_update messages are not sent, and queue_stats_update comes from \
                         polling queue statistics every {:?}. Run `absurd-host migrate` to get them.",
                        self.settings.poll_interval
                    );
                    self.poll(&mut idle_since).await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "live updates: database error; retrying in {RETRY_AFTER:?}");
                    let _ = self.mode.send(Mode::Starting);
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                }
            }
            if self.stop_when_idle(&mut idle_since) {
                return;
            }
        }
    }

    /// True when nobody subscribed for [`IDLE_STOP`]: the pump then forgets itself (under
    /// the lock [`Hub::ensure_pump`] takes, so a subscriber arriving meanwhile either keeps it
    /// going or starts a new one) and must return.
    fn stop_when_idle(&self, idle_since: &mut Option<Instant>) -> bool {
        if !self.idle() {
            *idle_since = None;
            return false;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < IDLE_STOP {
            return false;
        }
        let mut pump = self.pump.lock().unwrap_or_else(|p| p.into_inner());
        if !self.idle() {
            *idle_since = None;
            return false;
        }
        *pump = None;
        let _ = self.mode.send(Mode::Starting);
        true
    }

    /// The notification loop; `Ok(())` when it stops for good (shutdown or idle), and then
    /// this API lets go of the lease, so that the triggers are dropped unless another API
    /// still listens (migration 0022).
    async fn listen(&self, idle_since: &mut Option<Instant>) -> absurd_client::Result<()> {
        self.listen_until_done(idle_since).await?;
        match self.client.release_live_updates(&self.holder).await {
            Ok(true) => {
                tracing::info!("live updates: released; the live-update triggers are dropped")
            }
            Ok(false) => tracing::debug!("live updates: released; another API still listens"),
            // Not an error of the stream: the lease runs out within LEASE_SECS, and the next
            // `maintain` or worker start drops the triggers then.
            Err(e) => tracing::warn!(error = %e, "live updates: could not release the lease"),
        }
        Ok(())
    }

    async fn listen_until_done(
        &self,
        idle_since: &mut Option<Instant>,
    ) -> absurd_client::Result<()> {
        let mut listener = self.client.live_listener().await?;
        listener.listen().await?;
        self.client
            .hold_live_updates(&self.holder, LEASE_SECS)
            .await?;
        let _ = self.mode.send(Mode::Notifications);
        tracing::info!("live updates: listening to PostgreSQL notifications (absurd_live)");
        let mut pending = Pending::default();
        let mut outbox = Outbox::default();
        let mut stats = StatsGate::new(self.settings.stats_interval);
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(LEASE_RENEW);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.reset();
        loop {
            tokio::select! {
                n = listener.recv() => match n? {
                    Some(payload) => match LiveNotice::parse(&payload) {
                        Some(notice) => pending.add(notice),
                        None => tracing::debug!(payload, "live updates: ignored a notification"),
                    },
                    None => {
                        // Reconnected: whatever was sent meanwhile is lost, so every queue
                        // is worth a fresh look.
                        tracing::info!("live updates: the listening connection was re-established");
                        for q in self.client.list_queues().await? {
                            stats.mark(q, true);
                        }
                    }
                },
                _ = flush.tick() => {
                    if outbox.bytes < OUTBOX_MAX_BYTES {
                        self.flush(&mut pending, &mut stats, &mut outbox).await;
                    }
                    for msg in stats.due() {
                        outbox.push(msg);
                    }
                    self.publish_some(&mut outbox);
                    if self.stop_when_idle(idle_since) {
                        tracing::info!("live updates: no subscriber left; stopped listening");
                        return Ok(());
                    }
                }
                _ = renew.tick() => {
                    self.client.hold_live_updates(&self.holder, LEASE_SECS).await?;
                }
                _ = self.shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Broadcasts at most half a subscriber's buffer of messages per flush, so that a
    /// subscriber that keeps up is never more than that behind after a burst; the rest waits
    /// for the next flush. (Beyond `subscriber_buffer / 2` per [`FLUSH_INTERVAL`], changes
    /// pile up until [`MAX_PENDING_CHANGES`], and then become `resync` messages.)
    fn publish_some(&self, outbox: &mut Outbox) {
        let budget = (self.settings.subscriber_buffer / 2).max(1);
        for _ in 0..budget {
            match outbox.pop() {
                Some(msg) => self.publish(msg),
                None => break,
            }
        }
    }

    /// Reads what the oldest pending changes need, and renders their messages.
    async fn flush(&self, pending: &mut Pending, stats: &mut StatsGate, outbox: &mut Outbox) {
        for queue in std::mem::take(&mut pending.overflow) {
            stats.mark(queue, true);
        }
        for (queue, changes) in pending.take(FLUSH_MAX_CHANGES) {
            let ids: Vec<Uuid> = changes
                .iter()
                .map(|(id, _)| *id)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut rows: HashMap<Uuid, LiveTaskRow> = HashMap::new();
            for chunk in ids.chunks(LIVE_MAX_ROWS) {
                match self
                    .client
                    .live_task_rows(
                        &queue,
                        chunk,
                        self.settings.max_result_bytes,
                        self.settings.max_error_chars,
                    )
                    .await
                {
                    Ok(found) => rows.extend(found.into_iter().map(|r| (r.task_id, r))),
                    // The messages go out with what the notification said.
                    Err(e) => {
                        tracing::debug!(error = %e, queue, "live updates: cannot read changed tasks")
                    }
                }
            }
            for (id, state) in &changes {
                outbox.push(task_update(&queue, *id, *state, rows.get(id)));
            }
            stats.mark(queue, false);
        }
    }

    /// Without triggers: polls every queue's statistics, and tells of those that changed.
    async fn poll(&self, idle_since: &mut Option<Instant>) -> absurd_client::Result<()> {
        let _ = self.mode.send(Mode::Polling);
        let mut last: HashMap<String, Value> = HashMap::new();
        let mut tick = tokio::time::interval(self.settings.poll_interval.max(MIN_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return Ok(()),
            }
            if self.stop_when_idle(idle_since) {
                return Ok(());
            }
            for q in self.client.list_queues().await? {
                let stats = match self.client.queue_stats(&q).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, queue = q, "live updates: cannot read statistics");
                        continue;
                    }
                };
                let counts = json!([
                    stats.pending,
                    stats.running,
                    stats.sleeping,
                    stats.completed,
                    stats.failed,
                    stats.cancelled
                ]);
                if last.get(&q) != Some(&counts) {
                    let first = !last.contains_key(&q);
                    last.insert(q.clone(), counts);
                    if !first {
                        self.publish(queue_stats_update(&q, false));
                    }
                }
            }
        }
    }
}

/// Changes heard and not yet read, in order, bounded by [`MAX_PENDING_CHANGES`].
#[derive(Default)]
struct Pending {
    changes: VecDeque<(Arc<str>, Uuid, TaskState)>,
    overflow: BTreeSet<String>,
}

impl Pending {
    fn add(&mut self, notice: LiveNotice) {
        if notice.overflow || self.changes.len() + notice.changes.len() > MAX_PENDING_CHANGES {
            self.overflow.insert(notice.queue);
            return;
        }
        let queue: Arc<str> = Arc::from(notice.queue);
        for (id, state) in notice.changes {
            self.changes.push_back((queue.clone(), id, state));
        }
    }

    /// The oldest `n` changes, grouped by queue (in order within each queue).
    fn take(&mut self, n: usize) -> Vec<(String, Vec<(Uuid, TaskState)>)> {
        let mut out: Vec<(String, Vec<(Uuid, TaskState)>)> = Vec::new();
        let n = n.min(self.changes.len());
        for (queue, id, state) in self.changes.drain(..n) {
            match out.iter_mut().find(|(q, _)| **q == *queue) {
                Some((_, list)) => list.push((id, state)),
                None => out.push((queue.to_string(), vec![(id, state)])),
            }
        }
        out
    }
}

/// Messages rendered and not yet broadcast (see [`Hub::publish_some`]).
#[derive(Default)]
struct Outbox {
    messages: VecDeque<String>,
    bytes: usize,
}

impl Outbox {
    fn push(&mut self, msg: String) {
        self.bytes += msg.len();
        self.messages.push_back(msg);
    }

    fn pop(&mut self) -> Option<String> {
        let msg = self.messages.pop_front()?;
        self.bytes -= msg.len();
        Some(msg)
    }
}

/// Coalesces `queue_stats_update`: at most one per queue per interval, the first at once.
struct StatsGate {
    interval: Duration,
    /// Queue → (last sent, dirty since, resync asked).
    queues: HashMap<String, (Option<Instant>, bool, bool)>,
}

impl StatsGate {
    fn new(interval: Duration) -> Self {
        StatsGate {
            interval,
            queues: HashMap::new(),
        }
    }

    fn mark(&mut self, queue: String, resync: bool) {
        let e = self.queues.entry(queue).or_insert((None, false, false));
        e.1 = true;
        e.2 |= resync;
    }

    /// The messages due now.
    fn due(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (q, (sent, dirty, resync)) in self.queues.iter_mut() {
            if *dirty && sent.is_none_or(|t| now.duration_since(t) >= self.interval) {
                out.push(queue_stats_update(q, *resync));
                *sent = Some(now);
                *dirty = false;
                *resync = false;
            }
        }
        // Forget queues quiet for a while, so that the map stays as small as the set of
        // queues that change.
        let interval = self.interval;
        self.queues.retain(|_, (sent, dirty, _)| {
            *dirty || sent.is_some_and(|t| now.duration_since(t) < interval * 10)
        });
        out
    }
}

/// The seed's name for a state: `processing` for a claimed task (what its worker sent),
/// `retrying` for one waiting for a further attempt; ours otherwise.
fn seed_status(state: TaskState, attempts: Option<i32>) -> &'static str {
    match state {
        TaskState::Running => "processing",
        TaskState::Pending if attempts.is_some_and(|a| a > 1) => "retrying",
        other => other.as_str(),
    }
}

/// A `task_update` message, within [`MAX_MESSAGE_BYTES`].
fn task_update(queue: &str, task_id: Uuid, state: TaskState, row: Option<&LiveTaskRow>) -> String {
    let mut update = serde_json::Map::new();
    update.insert(
        "status".into(),
        seed_status(state, row.map(|r| r.attempts)).into(),
    );
    update.insert("state".into(), state.as_str().into());
    if let Some(r) = row {
        update.insert("task_name".into(), r.task_name.clone().into());
        update.insert("attempt".into(), r.attempts.into());
        update.insert("created_at".into(), json!(r.enqueue_at));
        if state == TaskState::Running || state.is_terminal() {
            if let Some(w) = &r.worker_id {
                update.insert("worker_id".into(), w.clone().into());
            }
        }
        if state == TaskState::Completed {
            if let Some(v) = &r.result {
                update.insert("result".into(), v.clone());
            }
            if r.result_omitted {
                update.insert("result_omitted".into(), true.into());
            }
        }
        if state == TaskState::Failed || (state == TaskState::Pending && r.attempts > 1) {
            if let Some(e) = &r.error {
                update.insert("error".into(), e.clone().into());
            }
            if let Some(n) = &r.failure_name {
                update.insert("failure_name".into(), n.clone().into());
            }
        }
    }
    let mut msg = json!({
        "type": "task_update",
        "queue_name": queue,
        "task_id": task_id,
        "update": update,
        "timestamp": Utc::now(),
    });
    let mut text = msg.to_string();
    if text.len() > MAX_MESSAGE_BYTES {
        let u = msg["update"].as_object_mut().expect("update is an object");
        let had_result = u.remove("result").is_some();
        u.remove("error");
        u.remove("task_name");
        if had_result {
            u.insert("result_omitted".into(), true.into());
        }
        text = msg.to_string();
    }
    text
}

/// A `queue_stats_update` message: the queue's statistics changed; `resync` when task changes
/// were too many to list one by one (re-read the queue).
fn queue_stats_update(queue: &str, resync: bool) -> String {
    let mut msg = json!({
        "type": "queue_stats_update",
        "queue_name": queue,
        "timestamp": Utc::now(),
    });
    if resync {
        msg["resync"] = true.into();
    }
    msg.to_string()
}

/// A WebSocket opened from another site's page must not read our updates (cross-site
/// WebSocket hijacking: browsers send cookies and reach loopback, but always send `Origin`).
fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    if host != Some(origin_host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("cross-origin WebSocket from {origin:?} refused"),
        ));
    }
    Ok(())
}

/// `GET /api/absurd/ws`.
pub(crate) async fn websocket(
    State(st): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = check_origin(&headers) {
        return e.into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                format!(
                    "{WS_PATH} is a WebSocket ({}); for Server-Sent Events use {SSE_PATH}",
                    rejection.body_text()
                ),
            )
            .into_response()
        }
    };
    let hub = st.live.clone();
    let feed = match hub.subscribe() {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    upgrade
        .max_message_size(MAX_INCOMING_BYTES)
        .max_frame_size(MAX_INCOMING_BYTES)
        .on_upgrade(move |socket| serve_socket(hub, feed, socket))
}

async fn serve_socket(hub: Arc<Hub>, mut feed: Feed, mut socket: WebSocket) {
    let timeout = hub.settings.send_timeout;
    let mode = hub.ready().await;
    async fn send(
        socket: &mut WebSocket,
        timeout: Duration,
        text: String,
    ) -> Result<Result<(), axum::Error>, tokio::time::error::Elapsed> {
        tokio::time::timeout(timeout, socket.send(Message::Text(text.into()))).await
    }
    if !matches!(
        send(&mut socket, timeout, hub.hello(mode)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let mut ping = tokio::time::interval(hub.settings.ping_interval.max(MIN_INTERVAL));
    ping.reset();
    let mut unanswered = false;
    let reason = loop {
        tokio::select! {
            _ = ping.tick() => {
                if unanswered {
                    hub.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("live updates: dropped a WebSocket subscriber that did not answer a ping within {:?}", hub.settings.ping_interval);
                    return;
                }
                unanswered = true;
                let sent = tokio::time::timeout(timeout, socket.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
            m = feed.rx.recv() => match m {
                Some(text) => match send(&mut socket, timeout, text.to_string()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        hub.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("live updates: dropped a WebSocket subscriber that took more than {timeout:?} to accept a message");
                        return;
                    }
                },
                None => break *feed.end.borrow(),
            },
            incoming = socket.recv() => match incoming {
                // Pings are answered by the library; anything else a client sends is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Pong(_))) => unanswered = false,
                Some(Ok(_)) => {}
            },
        }
    };
    let (code, text) = match reason {
        Some(End::Lagged) => (
            axum::extract::ws::close_code::POLICY,
            format!(
                "dropped: more than {} messages behind",
                hub.settings.subscriber_buffer
            ),
        ),
        _ => (
            axum::extract::ws::close_code::AWAY,
            "server shutting down".to_string(),
        ),
    };
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: text.into(),
    }));
    let _ = tokio::time::timeout(timeout, socket.send(close)).await;
}

/// `GET /api/absurd/stream`: the same messages as Server-Sent Events, one JSON object per
/// `data:` line (the `type` field names the message), a comment every 15 s to keep proxies
/// from closing an idle stream.
pub(crate) async fn sse(State(st): State<AppState>) -> Response {
    let hub = st.live.clone();
    let feed = match hub.subscribe() {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let mode = hub.ready().await;
    let hello = hub.hello(mode);
    let shutdown = hub.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (Some(hello), feed, shutdown),
        |(hello, mut feed, shutdown)| async move {
            if let Some(h) = hello {
                return Some((
                    Ok::<_, Infallible>(Event::default().data(h)),
                    (None, feed, shutdown),
                ));
            }
            let next = tokio::select! {
                m = feed.rx.recv() => m,
                _ = shutdown.cancelled() => None,
            };
            let text = next?;
            Some((Ok(Event::default().data(&*text)), (None, feed, shutdown)))
        },
    );
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: TaskState, attempts: i32) -> LiveTaskRow {
        LiveTaskRow {
            task_id: Uuid::from_u128(7),
            task_name: "imaging".into(),
            state,
            attempts,
            enqueue_at: Utc::now(),
            worker_id: Some("w1".into()),
            result: Some(json!({"status": "success"})),
            result_omitted: false,
            error: Some("boom".into()),
            failure_name: Some("$Timeout".into()),
        }
    }

    #[test]
    fn task_updates_have_the_seed_shape() {
        let id = Uuid::from_u128(7);
        let m: Value = serde_json::from_str(&task_update(
            "q",
            id,
            TaskState::Running,
            Some(&row(TaskState::Running, 1)),
        ))
        .unwrap();
        assert_eq!(m["type"], "task_update");
        assert_eq!(m["queue_name"], "q");
        assert_eq!(m["task_id"], id.to_string());
        assert_eq!(m["update"]["status"], "processing");
        assert_eq!(m["update"]["state"], "running");
        assert_eq!(m["update"]["worker_id"], "w1");
        assert!(m["update"].get("result").is_none());
        let m: Value = serde_json::from_str(&task_update(
            "q",
            id,
            TaskState::Completed,
            Some(&row(TaskState::Completed, 1)),
        ))
        .unwrap();
        assert_eq!(m["update"]["status"], "completed");
        assert_eq!(m["update"]["result"]["status"], "success");
        let m: Value = serde_json::from_str(&task_update(
            "q",
            id,
            TaskState::Pending,
            Some(&row(TaskState::Pending, 2)),
        ))
        .unwrap();
        assert_eq!(m["update"]["status"], "retrying");
        assert_eq!(m["update"]["error"], "boom");
        let m: Value =
            serde_json::from_str(&task_update("q", id, TaskState::Failed, None)).unwrap();
        assert_eq!(m["update"]["status"], "failed");
    }

    #[test]
    fn messages_stay_under_the_size_limit() {
        let mut r = row(TaskState::Completed, 1);
        r.result = Some(json!("x".repeat(MAX_MESSAGE_BYTES)));
        r.task_name = "n".repeat(MAX_MESSAGE_BYTES);
        let text = task_update("q", r.task_id, TaskState::Completed, Some(&r));
        assert!(text.len() <= MAX_MESSAGE_BYTES, "{}", text.len());
        let m: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(m["update"]["result_omitted"], true);
    }

    #[test]
    fn stats_updates_are_coalesced() {
        let mut g = StatsGate::new(Duration::from_secs(3600));
        g.mark("a".into(), false);
        g.mark("a".into(), false);
        g.mark("b".into(), true);
        let mut out: Vec<Value> = g
            .due()
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        out.sort_by_key(|m| m["queue_name"].as_str().unwrap().to_string());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["queue_name"], "a");
        assert!(out[0].get("resync").is_none());
        assert_eq!(out[1]["resync"], true);
        // Within the interval, more changes wait.
        g.mark("a".into(), false);
        assert!(g.due().is_empty());
    }

    #[test]
    fn pending_changes_are_bounded() {
        let mut p = Pending::default();
        let many: Vec<(Uuid, TaskState)> = (0..100)
            .map(|i| (Uuid::from_u128(i), TaskState::Pending))
            .collect();
        for _ in 0..(MAX_PENDING_CHANGES / 100) {
            p.add(LiveNotice {
                queue: "q".into(),
                changes: many.clone(),
                overflow: false,
            });
        }
        assert_eq!(p.changes.len(), MAX_PENDING_CHANGES);
        p.add(LiveNotice {
            queue: "q".into(),
            changes: many.clone(),
            overflow: false,
        });
        assert_eq!(p.changes.len(), MAX_PENDING_CHANGES);
        assert!(p.overflow.contains("q"));
        let first = p.take(150);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1.len(), 150);
        assert_eq!(first[0].1[0].0, Uuid::from_u128(0));
        assert_eq!(p.changes.len(), MAX_PENDING_CHANGES - 150);
    }

    /// The hub alone, its database unreachable (the pump keeps retrying meanwhile).
    fn hub(settings: LiveSettings) -> Arc<Hub> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Arc::new(Hub::new(
            Client::new(pool),
            settings,
            CancellationToken::new(),
        ))
    }

    #[tokio::test]
    async fn a_feed_nobody_reads_is_dropped_and_gives_its_slot_back() {
        let hub = hub(LiveSettings {
            max_subscribers: 2,
            subscriber_buffer: 8,
            ..LiveSettings::default()
        });
        let mut reader = hub.subscribe().unwrap();
        let mut stalled = hub.subscribe().unwrap();
        let refused = hub.subscribe().err().unwrap();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            refused.detail.contains(MAX_SUBSCRIBERS_VAR) && refused.detail.contains('2'),
            "{}",
            refused.detail
        );
        // The reader gets every message, in order, while the other reads none.
        for i in 0..100 {
            hub.publish(i.to_string());
            let got = tokio::time::timeout(Duration::from_secs(5), reader.rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&*got, i.to_string());
        }
        let end = tokio::time::timeout(
            Duration::from_secs(5),
            stalled.end.wait_for(|e| e.is_some()),
        )
        .await
        .expect("the stalled feed ends")
        .unwrap()
        .unwrap();
        assert_eq!(end, End::Lagged);
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        // At most its buffer was held for it.
        let mut held = 0;
        while stalled.rx.try_recv().is_ok() {
            held += 1;
        }
        assert!(held <= 8, "{held}");
        // Its slot is free again.
        assert_eq!(hub.subscribers.load(Ordering::SeqCst), 1);
        let _again = hub.subscribe().unwrap();
        hub.shutdown.cancel();
    }

    #[test]
    fn the_subscriber_limit_is_read_from_the_environment() {
        assert_eq!(
            LiveSettings::from_lookup(|_| None).unwrap(),
            LiveSettings::default()
        );
        let s =
            LiveSettings::from_lookup(|k| (k == MAX_SUBSCRIBERS_VAR).then(|| "3".into())).unwrap();
        assert_eq!(s.max_subscribers, 3);
        let e = LiveSettings::from_lookup(|k| (k == MAX_SUBSCRIBERS_VAR).then(|| "0".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(MAX_SUBSCRIBERS_VAR) && e.contains('0'), "{e}");
    }
}
