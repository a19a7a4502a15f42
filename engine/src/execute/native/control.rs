//! The control channel of a native run: a private Unix socket in the run's work directory
//! through which the program asks for what a wasm guest gets from its imports (checkpointed
//! steps, heartbeats, logs, spawns, events, durable sleeps and event waits).
//!
//! The protocol is JSON lines, one request and one reply per line, served one request at a
//! time per connection. It is documented for program authors in `docs/native-tasks.md`
//! ("The control channel"); `python/absurd_native.py` is a client. Every operation goes
//! through the run's [`TaskContext`], so the run limits, grants and SQL are those of a wasm
//! run; this module only adds the bounds of the channel itself ([`ControlLimits`]).
//!
//! A reply is never held back by another run, and nothing a program sends can panic the host:
//! bad requests get an error reply naming what was wrong; a request that exceeds a run limit,
//! and a channel flooded past its limits, end the run with `$LimitExceeded` (as the same call
//! from a wasm guest would), and the host then stops the program.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, trace, warn, Instrument, Span};

use absurd_client::{ClientError, SpawnOptions};

use crate::execute::{Failure, FailureName, TaskContext, TaskError};
use crate::limits::{self, ControlLimits};

/// The socket's file name in the work directory.
pub const SOCKET_NAME: &str = ".absurd-control.sock";
/// The protocol version `hello` reports.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest path `bind`/`connect` take (`sun_path` is 108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;
/// Log lines traced at once before rate limiting applies, and per second after (the same
/// figures as for the program's stdout and stderr).
const LOG_BURST: f64 = 500.0;
const LOG_RATE: f64 = 100.0;
/// A request rate limit allows a burst of this many seconds' worth.
const RATE_BURST_SECONDS: f64 = 10.0;

/// Why the channel ended the run.
#[derive(Debug)]
pub enum End {
    /// A sleep or an event wait suspended the run: the program must exit, and nothing is
    /// reported (the run is re-executed when it wakes).
    Suspended,
    /// A request failed the run (an exceeded limit, a refused grant, a flood).
    Failed(Failure),
    /// The run was cancelled or lost its lease while serving a request.
    Lost(ClientError),
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            rate,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Counters {
    requests: u64,
    rate: Bucket,
    logs: Bucket,
    logs_dropped: u64,
}

struct Shared {
    ctx: TaskContext,
    limits: ControlLimits,
    /// The program's process group (its pid), once it runs: only its members may connect.
    pgid: Mutex<Option<i32>>,
    end: Mutex<Option<End>>,
    ended: watch::Sender<bool>,
    counters: Mutex<Counters>,
}

impl Shared {
    /// Records why the run ends (the first reason wins).
    fn finish(&self, end: End) {
        let mut e = self.end.lock().unwrap();
        if e.is_none() {
            match &end {
                End::Suspended => debug!("the program's request suspended the run"),
                End::Failed(f) => {
                    warn!(failure = %f.name, message = %f.message, "a control request failed the run; stopping the program")
                }
                End::Lost(err) => info!(error = %err, "the run was lost during a control request"),
            }
            *e = Some(end);
            let _ = self.ended.send(true);
        }
    }

    fn ended_as(&self) -> Option<&'static str> {
        self.end.lock().unwrap().as_ref().map(|e| match e {
            End::Suspended => "suspended",
            End::Failed(_) => "failed",
            End::Lost(_) => "lost (cancelled, or its lease expired)",
        })
    }

    /// Counts one request against the per-execution total and the rate.
    fn count_request(&self) -> Result<(), Failure> {
        let mut c = self.counters.lock().unwrap();
        c.requests += 1;
        self.limits.check(
            "max_control_requests",
            "control requests in this execution",
            c.requests,
        )?;
        if !c.rate.take() {
            let limit = self.limits.max_control_requests_per_second;
            return Err(Failure::new(
                FailureName::LimitExceeded,
                format!(
                    "control requests came faster than {limit} per second (after a burst of {} s worth); the limit is {limit} (max_control_requests_per_second)",
                    RATE_BURST_SECONDS
                ),
            )
            .with_details(json!({
                "limit": "max_control_requests_per_second",
                "value": limit,
                "actual": c.requests,
            }))
            .permanent());
        }
        Ok(())
    }

    /// Whether a connecting process belongs to the program's process group (and user).
    fn peer_allowed(&self, stream: &UnixStream) -> Result<(), String> {
        let cred = stream
            .peer_cred()
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        if cred.uid() != rustix::process::geteuid().as_raw() {
            return Err(format!("uid {} is not the worker's", cred.uid()));
        }
        let Some(pid) = cred.pid() else {
            return Err("the peer's pid is unknown".into());
        };
        let Some(pgid) = *self.pgid.lock().unwrap() else {
            return Err("the program has not started".into());
        };
        let peer_group = rustix::process::Pid::from_raw(pid)
            .and_then(|p| rustix::process::getpgid(Some(p)).ok())
            .map(|g| g.as_raw_nonzero().get());
        if peer_group != Some(pgid) {
            return Err(format!(
                "process {pid} is not in the run's process group {pgid}"
            ));
        }
        Ok(())
    }
}

/// A run's control channel: bound before the program starts, served once it runs, closed
/// (and its socket removed) when dropped.
pub struct Channel {
    path: PathBuf,
    shared: Arc<Shared>,
    listener: Option<UnixListener>,
    server: Option<JoinHandle<()>>,
    ended: watch::Receiver<bool>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a socket at `path`, also when the path is longer than `sun_path` takes: then through
/// the directory's `/proc/self/fd` entry.
fn bind(dir: &Path, path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return std::os::unix::net::UnixListener::bind(path);
    }
    let d = std::fs::File::open(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    std::os::unix::net::UnixListener::bind(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
}

impl Channel {
    /// Creates the socket (mode 0600) in `workdir`.
    pub fn open(workdir: &Path, ctx: TaskContext, limits: ControlLimits) -> io::Result<Channel> {
        let path = workdir.join(SOCKET_NAME);
        let std_listener = bind(workdir, &path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std_listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std_listener)?;
        let (tx, rx) = watch::channel(false);
        let rate = limits.max_control_requests_per_second as f64;
        Ok(Channel {
            path,
            shared: Arc::new(Shared {
                ctx,
                limits,
                pgid: Mutex::new(None),
                end: Mutex::new(None),
                ended: tx,
                counters: Mutex::new(Counters {
                    requests: 0,
                    rate: Bucket::new(rate, rate * RATE_BURST_SECONDS),
                    logs: Bucket::new(LOG_RATE, LOG_BURST),
                    logs_dropped: 0,
                }),
            }),
            listener: Some(listener),
            server: None,
            ended: rx,
        })
    }

    /// The socket's path (what the program gets in `ABSURD_CONTROL_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts serving the program whose process group is `pgid`.
    pub fn serve(&mut self, pgid: i32) {
        *self.shared.pgid.lock().unwrap() = Some(pgid);
        if let Some(listener) = self.listener.take() {
            let shared = self.shared.clone();
            self.server = Some(tokio::spawn(
                accept_loop(listener, shared).instrument(Span::current()),
            ));
        }
    }

    /// Resolves once a request has ended the run (see [`End`]).
    pub async fn ended(&mut self) {
        let _ = self.ended.wait_for(|e| *e).await;
    }

    /// Stops serving and returns why the channel ended the run, if it did.
    pub fn close(&mut self) -> Option<End> {
        if let Some(s) = self.server.take() {
            s.abort();
        }
        let dropped = self.shared.counters.lock().unwrap().logs_dropped;
        if dropped > 0 {
            info!(dropped, "log requests not traced because of the rate limit");
        }
        self.shared.end.lock().unwrap().take()
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors, most likely: try again a little later.
                        warn!(error = %e, "cannot accept a control connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Err(why) = shared.peer_allowed(&stream) {
                    warn!(%why, "refused a control connection from outside the run");
                    refuse(&stream, "forbidden", &format!(
                        "this control socket serves only the run's own process group: {why}"
                    ));
                    continue;
                }
                let open = conns.len() as u64 + 1;
                if let Err(f) = shared.limits.check(
                    "max_control_connections",
                    "control connections open at once",
                    open,
                ) {
                    refuse(&stream, "limit", &f.message);
                    continue;
                }
                let span = Span::current();
                conns.spawn(connection(stream, shared.clone()).instrument(span));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One error line to a connection that is not served, without waiting for it to read.
fn refuse(stream: &UnixStream, kind: &str, message: &str) {
    let mut line = error_reply(&Value::Null, kind, message, None).to_string();
    line.push('\n');
    let _ = stream.try_write(line.as_bytes());
}

/// Reads one line into `buf` (newline removed). `Ok(false)` at the end of the stream;
/// `Err(Some(n))` when the line is longer than `max` (at least `n` bytes).
async fn read_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    buf: &mut Vec<u8>,
    max: u64,
) -> Result<bool, Option<u64>> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await.map_err(|_| None)?;
        if available.is_empty() {
            // A last line without a newline still counts.
            return Ok(!buf.is_empty());
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(Some((buf.len() + chunk.len()) as u64));
        }
        buf.extend_from_slice(chunk);
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(true);
        }
    }
}

async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut line = Vec::new();
    let max = shared.limits.max_control_line_bytes;
    loop {
        let (reply, fatal) = match read_line(&mut reader, &mut line, max).await {
            Ok(false) | Err(None) => return,
            Err(Some(n)) => {
                let f =
                    limits::exceeded("max_control_line_bytes", max, "a control request line", n);
                (fail_run(&shared, &Value::Null, f), true)
            }
            Ok(true) => match shared.count_request() {
                Err(f) => (fail_run(&shared, &Value::Null, f), true),
                Ok(()) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(()) => handle(&shared, &line).await,
            },
        };
        let mut bytes = reply.to_string().into_bytes();
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() || fatal {
            return;
        }
    }
}

/// Ends the run with `f` and returns the reply that says so.
fn fail_run(shared: &Shared, id: &Value, f: Failure) -> Value {
    let failure = json!({"name": f.name, "message": f.message, "retryable": f.retryable});
    let reply = error_reply(
        id,
        "run_failed",
        &format!("{}: {}", f.name, f.message),
        Some(failure),
    );
    shared.finish(End::Failed(f));
    reply
}

fn error_reply(id: &Value, kind: &str, message: &str, failure: Option<Value>) -> Value {
    let mut error = json!({"kind": kind, "message": message});
    if let Some(f) = failure {
        error["failure"] = f;
    }
    json!({"id": id, "ok": false, "error": error})
}

/// What an operation could not do.
enum OpError {
    /// The request is malformed (a missing or mistyped field); the run goes on.
    BadRequest(String),
    /// The host refused the call in a way the program may handle (as a wasm guest gets an
    /// `Err` back): the run goes on.
    Refused(String),
    /// The call ended the run.
    Task(TaskError),
}

impl From<TaskError> for OpError {
    fn from(e: TaskError) -> Self {
        OpError::Task(e)
    }
}

type Args = Map<String, Value>;

fn field<'a>(args: &'a Args, key: &str) -> Result<&'a Value, OpError> {
    args.get(key)
        .ok_or_else(|| OpError::BadRequest(format!("missing field `{key}`")))
}

fn string<'a>(args: &'a Args, key: &str) -> Result<&'a str, OpError> {
    field(args, key)?
        .as_str()
        .ok_or_else(|| OpError::BadRequest(format!("field `{key}` must be a string")))
}

fn opt_string<'a>(args: &'a Args, key: &str) -> Result<Option<&'a str>, OpError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(OpError::BadRequest(format!(
            "field `{key}` must be a string or null"
        ))),
    }
}

fn opt_int(args: &Args, key: &str) -> Result<Option<i64>, OpError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            OpError::BadRequest(format!("field `{key}` must be a whole number or null"))
        }),
    }
}

fn no_nul(what: &str, v: &Value) -> Result<(), OpError> {
    if absurd_client::jsonb::has_nul(v) {
        Err(OpError::Refused(format!(
            "{what} holds a NUL character (\\u0000), which PostgreSQL's jsonb cannot store"
        )))
    } else {
        Ok(())
    }
}

/// Serves one request line and returns the reply, and whether the connection must close.
async fn handle(shared: &Shared, line: &[u8]) -> (Value, bool) {
    let request: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return (
                error_reply(
                    &Value::Null,
                    "bad_request",
                    &format!("the request is not valid JSON: {e}"),
                    None,
                ),
                false,
            )
        }
    };
    let Value::Object(mut args) = request else {
        return (
            error_reply(
                &Value::Null,
                "bad_request",
                "a request must be a JSON object",
                None,
            ),
            false,
        );
    };
    let id = args.remove("id").unwrap_or(Value::Null);
    let op = match args.remove("op") {
        Some(Value::String(op)) => op,
        _ => {
            return (
                error_reply(&id, "bad_request", "a request needs an `op` string", None),
                false,
            )
        }
    };
    if let Some(how) = shared.ended_as() {
        return (
            error_reply(
                &id,
                "run_ended",
                &format!("the run has {how}; the program must exit now"),
                None,
            ),
            true,
        );
    }
    let result = match op.as_str() {
        "hello" => Ok(hello(shared)),
        "step_begin" => step_begin(shared, &args),
        "step_complete" => step_complete(shared, &args).await,
        "heartbeat" => heartbeat(shared, &args).await,
        "log" => log(shared, &args),
        "spawn" => spawn(shared, &args).await,
        "emit_event" => emit_event(shared, &args).await,
        "sleep_for" => sleep_for(shared, &args).await,
        "sleep_until" => sleep_until(shared, &args).await,
        "await_event" => await_event(shared, &args).await,
        other => Err(OpError::BadRequest(format!(
            "unknown op {}; the ops are {}",
            limits::preview(other),
            OPS.join(", ")
        ))),
    };
    match result {
        Ok(mut fields) => {
            fields.insert("id".into(), id);
            fields.insert("ok".into(), Value::Bool(true));
            (Value::Object(fields), false)
        }
        Err(OpError::BadRequest(m)) => {
            let kind = if OPS.contains(&op.as_str()) {
                "bad_request"
            } else {
                "unknown_op"
            };
            (error_reply(&id, kind, &m, None), false)
        }
        Err(OpError::Refused(m)) => (error_reply(&id, "refused", &m, None), false),
        Err(OpError::Task(TaskError::Failed(f))) => (fail_run(shared, &id, f), true),
        Err(OpError::Task(TaskError::Suspended)) => {
            // Only sleeps and event waits suspend, and they reply themselves; kept for
            // completeness.
            shared.finish(End::Suspended);
            let mut m = Map::new();
            m.insert("id".into(), id);
            m.insert("ok".into(), Value::Bool(true));
            m.insert("suspend".into(), Value::Bool(true));
            (Value::Object(m), true)
        }
        Err(OpError::Task(TaskError::RunLost(e))) => {
            let message = format!("the run is no longer this worker's: {e}");
            shared.finish(End::Lost(e));
            (error_reply(&id, "run_ended", &message, None), true)
        }
    }
}

/// The operations, in the order the docs list them.
pub const OPS: &[&str] = &[
    "hello",
    "step_begin",
    "step_complete",
    "heartbeat",
    "log",
    "spawn",
    "emit_event",
    "sleep_for",
    "sleep_until",
    "await_event",
];

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn hello(shared: &Shared) -> Map<String, Value> {
    let run = shared.ctx.run();
    let l = shared.ctx.limits();
    obj(json!({
        "protocol": PROTOCOL_VERSION,
        "task_id": run.task_id,
        "run_id": run.run_id,
        "attempt": run.attempt,
        "task_name": run.task_name,
        "queue": shared.ctx.queue(),
        "limits": {
            "max_name_bytes": l.max_name_bytes,
            "max_steps": l.max_steps,
            "max_checkpoint_bytes": l.max_checkpoint_bytes,
            "max_event_payload_bytes": l.max_event_payload_bytes,
            "max_log_line_bytes": l.max_log_line_bytes,
            "max_control_line_bytes": shared.limits.max_control_line_bytes,
        },
    }))
}

fn step_begin(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let name = string(args, "name")?;
    let checkpoint = shared.ctx.next_checkpoint_name(name)?;
    let value = shared.ctx.checkpoint(&checkpoint);
    let mut m = Map::new();
    m.insert("checkpoint".into(), Value::String(checkpoint));
    m.insert("done".into(), Value::Bool(value.is_some()));
    if let Some(v) = value {
        m.insert("value".into(), v);
    }
    Ok(m)
}

async fn step_complete(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let checkpoint = string(args, "checkpoint")?;
    let value = field(args, "value")?;
    no_nul("the step's value", value)?;
    shared.ctx.store_checkpoint(checkpoint, value).await?;
    Ok(Map::new())
}

async fn heartbeat(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let seconds = opt_int(args, "seconds")?;
    if seconds.is_some_and(|s| s < 1) {
        return Err(OpError::BadRequest(
            "field `seconds` must be at least 1".into(),
        ));
    }
    shared.ctx.heartbeat(seconds).await?;
    Ok(Map::new())
}

fn log(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let message = string(args, "message")?;
    let level = opt_string(args, "level")?.unwrap_or("info");
    if !["trace", "debug", "info", "warn", "error"].contains(&level) {
        return Err(OpError::BadRequest(format!(
            "field `level` must be trace, debug, info, warn or error, got {}",
            limits::preview(level)
        )));
    }
    shared
        .ctx
        .limits()
        .check("max_log_line_bytes", "a log line", message.len() as u64)
        .map_err(TaskError::Failed)?;
    let traced = {
        let mut c = shared.counters.lock().unwrap();
        let ok = c.logs.take();
        if !ok {
            c.logs_dropped += 1;
        }
        ok
    };
    if traced {
        match level {
            "trace" => trace!(control = true, "{message}"),
            "debug" => debug!(control = true, "{message}"),
            "info" => info!(control = true, "{message}"),
            "warn" => warn!(control = true, "{message}"),
            _ => error!(control = true, "{message}"),
        }
    }
    let mut m = Map::new();
    if !traced {
        m.insert("dropped".into(), Value::Bool(true));
    }
    Ok(m)
}

async fn spawn(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let task = string(args, "task")?;
    let queue = opt_string(args, "queue")?;
    let params = args.get("params").cloned().unwrap_or_else(|| json!({}));
    no_nul("the params", &params)?;
    let options: SpawnOptions = match args.get("options") {
        None | Some(Value::Null) => SpawnOptions::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| OpError::BadRequest(format!("field `options`: {e}")))?,
    };
    if let Some(h) = &options.headers {
        no_nul("the headers", h)?;
    }
    match shared.ctx.spawn(queue, task, &params, &options).await {
        Ok(s) => Ok(obj(json!({
            "task_id": s.task_id,
            "run_id": s.run_id,
            "attempt": s.attempt,
            "created": s.created,
        }))),
        // A spawn the database refused (no such queue, a bad retry strategy) is the program's
        // to handle; an exceeded limit or a missing grant ends the run (as for wasm).
        Err(TaskError::Failed(f)) if f.name == FailureName::SpawnError => {
            Err(OpError::Refused(f.message))
        }
        Err(e) => Err(e.into()),
    }
}

async fn emit_event(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let event = string(args, "event")?;
    if event.trim().is_empty() {
        return Err(OpError::Refused("event name must not be empty".into()));
    }
    let payload = args.get("payload").cloned().unwrap_or(Value::Null);
    no_nul("the event payload", &payload)?;
    shared.ctx.emit_event(event, &payload).await?;
    Ok(Map::new())
}

/// The reply of a sleep or an event wait that suspended the run.
fn suspended(shared: &Shared) -> Map<String, Value> {
    shared.finish(End::Suspended);
    obj(json!({"suspend": true}))
}

async fn sleep_for(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let step = string(args, "step")?;
    let seconds = field(args, "seconds")?
        .as_f64()
        .ok_or_else(|| OpError::BadRequest("field `seconds` must be a number".into()))?;
    match shared.ctx.sleep_for(step, seconds).await {
        Ok(()) => Ok(obj(json!({"suspend": false}))),
        Err(TaskError::Suspended) => Ok(suspended(shared)),
        Err(e) => Err(e.into()),
    }
}

async fn sleep_until(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let step = string(args, "step")?;
    let at = match (args.get("at"), opt_int(args, "unix_millis")?) {
        (Some(Value::String(s)), None) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&chrono::Utc))
            .map_err(|e| OpError::BadRequest(format!("field `at` is not an RFC 3339 time: {e}")))?,
        (None, Some(ms)) => chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
            .ok_or_else(|| OpError::BadRequest(format!("unix_millis = {ms} is out of range")))?,
        _ => {
            return Err(OpError::BadRequest(
                "give either `at` (an RFC 3339 time) or `unix_millis`".into(),
            ))
        }
    };
    match shared.ctx.sleep_until(step, at).await {
        Ok(()) => Ok(obj(json!({"suspend": false}))),
        Err(TaskError::Suspended) => Ok(suspended(shared)),
        Err(e) => Err(e.into()),
    }
}

async fn await_event(shared: &Shared, args: &Args) -> Result<Map<String, Value>, OpError> {
    let event = string(args, "event")?;
    let step = opt_string(args, "step")?;
    let timeout =
        opt_int(args, "timeout")?.map(|t| t.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
    match shared.ctx.await_event(event, step, timeout).await {
        Ok(Some(payload)) => Ok(obj(
            json!({"suspend": false, "received": true, "payload": payload}),
        )),
        Ok(None) => Ok(obj(json!({"suspend": false, "received": false}))),
        Err(TaskError::Suspended) => Ok(suspended(shared)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::new(1.0, 3.0);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
    }

    #[test]
    fn error_replies_echo_the_id_and_name_the_kind() {
        let r = error_reply(&json!(7), "unknown_op", "unknown op \"x\"", None);
        assert_eq!(r["id"], 7);
        assert_eq!(r["ok"], false);
        assert_eq!(r["error"]["kind"], "unknown_op");
    }
}
