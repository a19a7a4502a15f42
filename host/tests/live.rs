//! Live updates (`/api/absurd/ws`, `/api/absurd/stream`) against a real listening server and
//! real PostgreSQL, with real clients: tokio-tungstenite for the WebSocket, a raw HTTP/1.1
//! connection for Server-Sent Events. The tasks are changed by another client on its own
//! pool (as another worker would), never through the API that broadcasts them.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use absurd_client::{Client, SpawnOptions};
use absurd_engine::metrics::Counters;
use absurd_host::api::live::LiveSettings;
use absurd_host::api::ApiSettings;
use common::{no_backoff, setup, wait_for, TestDb};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const QUEUE: &str = "live-q";

/// `absurd-host serve` in this process, on a free loopback port.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(db: &TestDb, live: LiveSettings) -> Server {
        let settings = ApiSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            live,
            ..ApiSettings::default()
        };
        let listener = absurd_host::api::bind(&settings).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = absurd_host::api::lazy_pool(&db.url, settings.statement_timeout).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(absurd_host::api::serve_on(
            listener,
            Client::new(pool),
            settings,
            Counters::default(),
            shutdown.clone(),
        ));
        Server {
            addr,
            shutdown,
            task,
        }
    }

    /// Stops it, checking that the open streams do not hold the graceful shutdown up.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops within 10 s though streams are open")
            .unwrap()
            .unwrap();
    }
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket client; `recv_buffer` shrinks its socket's receive buffer (a client that
/// stops reading then stalls the server's writes sooner).
async fn ws_connect(
    addr: SocketAddr,
    recv_buffer: Option<u32>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(n) = recv_buffer {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/api/absurd/ws"), stream).await?;
    Ok(ws)
}

/// The next JSON message; `None` when the server closed the connection (or broke it).
/// Fails the test when nothing comes within `limit`.
async fn ws_next(ws: &mut Ws, limit: Duration) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(limit, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no WebSocket message within {limit:?}"));
        match m {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// The next message a reading task forwarded.
async fn next_of(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the reader gets a message within 20 s")
        .expect("the reader stays connected")
}

/// A Server-Sent Events client on a raw HTTP/1.1 connection.
struct SseClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl SseClient {
    async fn connect(addr: SocketAddr) -> SseClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET /api/absurd/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut c = SseClient {
            stream,
            buf: Vec::new(),
        };
        let head = c.read_until(b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        c
    }

    async fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..i + end.len()).collect();
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("SSE data within 10 s")
                .unwrap();
            assert!(n > 0, "the SSE stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next `data:` line as JSON (each event is one chunk of the chunked body, so a data
    /// line is never split by a chunk header).
    async fn next(&mut self) -> Value {
        loop {
            let line = self.read_until(b"\n").await;
            let line = String::from_utf8_lossy(&line);
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return serde_json::from_str(data).unwrap();
            }
        }
    }
}

/// What the messages told of one task: its statuses in order, and its last update.
#[derive(Default, Debug)]
struct Seen {
    statuses: Vec<String>,
    last: Value,
}

fn record(seen: &mut std::collections::HashMap<Uuid, Seen>, m: &Value) {
    if m["type"] == "task_update" {
        assert_eq!(m["queue_name"], QUEUE, "{m}");
        let id: Uuid = m["task_id"].as_str().unwrap().parse().unwrap();
        let s = seen.entry(id).or_default();
        s.statuses
            .push(m["update"]["status"].as_str().unwrap().to_string());
        s.last = m["update"].clone();
    }
}

/// Spawns, claims and completes one task, fails another for good and cancels a third, all
/// through a client of its own; returns the three ids.
async fn lifecycle(client: &Client) -> (Uuid, Uuid, Uuid) {
    let done = client
        .spawn(
            QUEUE,
            "convert-uvh5-to-ms",
            &json!({"inputs": {}}),
            &SpawnOptions::default(),
        )
        .await
        .unwrap();
    let claimed = client.claim(QUEUE, "python-worker-1", 60, 1).await.unwrap();
    assert_eq!(claimed[0].task_id, done.task_id);
    client
        .complete_run(
            QUEUE,
            claimed[0].run_id,
            &json!({"status": "success", "outputs": {"ms_path": "/x.ms"}}),
        )
        .await
        .unwrap();
    let failed = client
        .spawn(QUEUE, "imaging", &json!({}), &no_backoff(1))
        .await
        .unwrap();
    let claimed = client.claim(QUEUE, "python-worker-2", 60, 1).await.unwrap();
    client
        .fail_run(
            QUEUE,
            claimed[0].run_id,
            &json!({"name": "$Boom", "message": "it broke"}),
            None,
        )
        .await
        .unwrap();
    let cancelled = client
        .spawn(QUEUE, "imaging", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    client.cancel_task(QUEUE, cancelled.task_id).await.unwrap();
    (done.task_id, failed.task_id, cancelled.task_id)
}

fn check_lifecycle(
    seen: &std::collections::HashMap<Uuid, Seen>,
    (done, failed, cancelled): (Uuid, Uuid, Uuid),
) {
    let d = &seen[&done];
    assert_eq!(d.statuses, ["pending", "processing", "completed"], "{d:?}");
    assert_eq!(d.last["result"]["outputs"]["ms_path"], "/x.ms", "{d:?}");
    assert_eq!(d.last["worker_id"], "python-worker-1", "{d:?}");
    assert_eq!(d.last["task_name"], "convert-uvh5-to-ms", "{d:?}");
    let f = &seen[&failed];
    assert_eq!(f.statuses, ["pending", "processing", "failed"], "{f:?}");
    assert_eq!(f.last["error"], "it broke", "{f:?}");
    assert_eq!(f.last["failure_name"], "$Boom", "{f:?}");
    let c = &seen[&cancelled];
    assert_eq!(c.statuses, ["pending", "cancelled"], "{c:?}");
}

#[tokio::test]
async fn websocket_and_sse_tell_of_tasks_changed_by_any_client() {
    let (db, client) = setup(QUEUE).await;
    let server = Server::start(&db, LiveSettings::default()).await;
    let mut ws = ws_connect(server.addr, None).await.unwrap();
    let hello = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(hello["type"], "connected", "{hello}");
    assert_eq!(hello["source"], "notifications", "{hello}");
    let mut sse = SseClient::connect(server.addr).await;
    let hello = sse.next().await;
    assert_eq!(hello["type"], "connected", "{hello}");

    let ids = lifecycle(&client).await;
    let terminal = |seen: &std::collections::HashMap<Uuid, Seen>| {
        [ids.0, ids.1, ids.2].iter().all(|id| {
            seen.get(id).is_some_and(|s| {
                ["completed", "failed", "cancelled"].contains(&s.statuses.last().unwrap().as_str())
            })
        })
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::HashMap::new();
    let mut stats = 0;
    while !(terminal(&seen) && stats > 0) {
        assert!(Instant::now() < deadline, "timed out; seen {seen:?}");
        let m = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
        if m["type"] == "queue_stats_update" {
            assert_eq!(m["queue_name"], QUEUE);
            stats += 1;
        }
        record(&mut seen, &m);
    }
    check_lifecycle(&seen, ids);
    // Six changes in well under a second: coalesced into at most a few statistics updates.
    assert!(stats <= 3, "{stats} queue_stats_update messages");

    let mut seen = std::collections::HashMap::new();
    while !terminal(&seen) {
        assert!(Instant::now() < deadline, "SSE timed out; seen {seen:?}");
        record(&mut seen, &sse.next().await);
    }
    check_lifecycle(&seen, ids);

    // A WebSocket opened from another site's page is refused.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/api/absurd/ws", server.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    let stream = TcpStream::connect(server.addr).await.unwrap();
    match tokio_tungstenite::client_async(req, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("a cross-origin WebSocket was not refused: {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped_and_the_others_keep_receiving() {
    let (db, client) = setup(QUEUE).await;
    let live = LiveSettings {
        max_subscribers: 2,
        subscriber_buffer: 64,
        send_timeout: Duration::from_secs(1),
        ping_interval: Duration::from_millis(500),
        ..LiveSettings::default()
    };
    let server = Server::start(&db, live).await;
    // The stalled one: reads its greeting, then nothing more.
    let mut stalled = ws_connect(server.addr, Some(4096)).await.unwrap();
    assert_eq!(
        ws_next(&mut stalled, Duration::from_secs(10))
            .await
            .unwrap()["type"],
        "connected"
    );
    // The reader reads all the time (and so answers the server's pings), into a channel.
    let mut reader = ws_connect(server.addr, None).await.unwrap();
    assert_eq!(
        ws_next(&mut reader, Duration::from_secs(10)).await.unwrap()["type"],
        "connected"
    );
    let mut reader_rx = spawn_reader(reader);

    // The limit: a third subscriber is refused, with the limit named.
    match ws_connect(server.addr, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(
                body.contains("ABSURD_API_LIVE_MAX_SUBSCRIBERS") && body.contains('2'),
                "{body}"
            );
        }
        other => panic!("a third subscriber was not refused: {other:?}"),
    }
    let mut sse = TcpStream::connect(server.addr).await.unwrap();
    sse.write_all(
        format!(
            "GET /api/absurd/stream HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sse.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.starts_with("HTTP/1.1 503") && head.contains("ABSURD_API_LIVE_MAX_SUBSCRIBERS"),
        "{head}"
    );

    // 300 tasks completed with 8,000-byte results: about 2.5 MB of messages.
    const N: usize = 300;
    let big = "x".repeat(8000);
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            client
                .spawn(QUEUE, "noop", &json!({"i": i}), &SpawnOptions::default())
                .await
                .unwrap()
                .task_id,
        );
    }
    let mut runs = Vec::new();
    while runs.len() < N {
        let got = client.claim(QUEUE, "other-worker", 300, 100).await.unwrap();
        assert!(!got.is_empty());
        runs.extend(got.into_iter().map(|r| r.run_id));
    }
    for run in &runs {
        client
            .complete_run(QUEUE, *run, &json!({"status": "success", "blob": big}))
            .await
            .unwrap();
    }

    // The reader gets every completion, with its result, in time: nobody waited for the
    // stalled subscriber.
    let t0 = Instant::now();
    let mut completed = std::collections::HashSet::new();
    while completed.len() < N {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the reader got {} of {N} completions",
            completed.len()
        );
        let m = next_of(&mut reader_rx).await;
        if m["type"] == "task_update" && m["update"]["status"] == "completed" {
            assert_eq!(m["update"]["result"]["blob"].as_str().unwrap().len(), 8000);
            completed.insert(m["task_id"].as_str().unwrap().to_string());
        }
    }

    // The stalled subscriber was dropped: what it had buffered ends with the connection
    // closed, short of the whole burst.
    let mut stalled_completed = 0;
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the stalled subscriber is still connected after {stalled_completed} completions"
        );
        match ws_next(&mut stalled, Duration::from_secs(20)).await {
            Some(m) => {
                if m["type"] == "task_update" && m["update"]["status"] == "completed" {
                    stalled_completed += 1;
                }
            }
            None => break,
        }
    }
    assert!(stalled_completed < N, "{stalled_completed}");

    // Its slot is free again.
    let mut again = wait_for(
        "a free subscriber slot",
        Duration::from_secs(10),
        || async { ws_connect(server.addr, None).await.ok() },
    )
    .await;
    assert_eq!(
        ws_next(&mut again, Duration::from_secs(10)).await.unwrap()["type"],
        "connected"
    );
    // And the reader still gets news.
    let t = client
        .spawn(QUEUE, "noop", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    loop {
        let m = next_of(&mut reader_rx).await;
        if m["task_id"] == t.task_id.to_string() {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn without_the_triggers_statistics_are_polled() {
    // A schema installed by `absurdctl init`: no live-update triggers.
    if !common::venv_bin("absurdctl").exists() {
        eprintln!("skipped: absurdctl is not installed (run scripts/setup-python)");
        return;
    }
    let db = TestDb::upstream().await;
    let client = Client::new(db.pool.clone());
    client.create_queue(QUEUE).await.unwrap();
    assert!(!client.live_updates_supported().await.unwrap());
    let live = LiveSettings {
        poll_interval: Duration::from_millis(200),
        ..LiveSettings::default()
    };
    let server = Server::start(&db, live).await;
    let mut ws = ws_connect(server.addr, None).await.unwrap();
    let hello = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(hello["source"], "polling", "{hello}");
    // Let the first poll take its baseline, then change the queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .spawn(QUEUE, "noop", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    loop {
        let m = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
        assert_ne!(m["type"], "task_update", "{m}");
        if m["type"] == "queue_stats_update" {
            assert_eq!(m["queue_name"], QUEUE);
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_triggers_notify_only_while_someone_listens() {
    let (db, client) = setup(QUEUE).await;
    let mut listener = client.live_listener().await.unwrap();
    listener.listen().await.unwrap();
    // Nobody holds the lease: a spawn sends nothing.
    client
        .spawn(QUEUE, "noop", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_err(),
        "a notification was sent without a lease"
    );
    client.renew_live_updates(60).await.unwrap();
    // A queue created after the migration, with a name that needs quoting.
    let other = "live q \"2\"";
    client.create_queue(other).await.unwrap();
    let t = client
        .spawn(other, "noop", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let n = absurd_client::live::LiveNotice::parse(&payload).unwrap();
    assert_eq!(n.queue, other);
    assert_eq!(n.changes, vec![(t.task_id, absurd_client::State::Pending)]);
    // One statement changing more than 128 tasks: one notification, marked overflow.
    let many: Vec<(String, Value)> = (0..200)
        .map(|i| ("noop".to_string(), json!({"i": i})))
        .collect();
    client
        .spawn_batch(QUEUE, &many, &SpawnOptions::default())
        .await
        .unwrap();
    let _ = client.claim(QUEUE, "w", 60, 200).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no overflow notification");
        let p = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let n = absurd_client::live::LiveNotice::parse(&p).unwrap();
        assert!(p.len() < 8000);
        if n.overflow {
            assert_eq!(n.queue, QUEUE);
            break;
        }
    }
    // An update that changes no task's state is no news.
    let touched = sqlx::query("update absurd.\"t_live-q\" set attempts = attempts")
        .execute(&db.pool)
        .await
        .unwrap()
        .rows_affected();
    assert!(touched > 200);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_err(),
        "an update that changed no state was notified"
    );
}

/// Reads a WebSocket in a task of its own (so that it always answers pings) into a channel.
fn spawn_reader(mut ws: Ws) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if tx.send(serde_json::from_str(&t).unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[tokio::test]
async fn tasks_run_by_the_python_sdk_and_by_an_absurd_host_worker_are_reported() {
    let (db, client) = setup(QUEUE).await;
    let server = Server::start(&db, LiveSettings::default()).await;
    let mut ws = ws_connect(server.addr, None).await.unwrap();
    assert_eq!(
        ws_next(&mut ws, Duration::from_secs(10)).await.unwrap()["source"],
        "notifications"
    );
    let mut rx = spawn_reader(ws);

    // The Python absurd-sdk's own worker runs two tasks.
    let py_echo = client
        .spawn(QUEUE, "echo", &json!({"hello": "py"}), &no_backoff(1))
        .await
        .unwrap()
        .task_id;
    let py_fail = client
        .spawn(
            QUEUE,
            "fail",
            &json!({"message": "py says no"}),
            &no_backoff(1),
        )
        .await
        .unwrap()
        .task_id;
    let out = tokio::process::Command::new(common::venv_bin("python"))
        .arg(common::repo_root().join("tests/interop/sdk_worker.py"))
        .args([
            "--url",
            &db.url,
            "--queue",
            QUEUE,
            "--worker-id",
            "py-live-1",
        ])
        .args([
            "--task-id",
            &format!("{py_echo},{py_fail}"),
            "--deadline",
            "30",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the Python worker failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An absurd-host worker process runs one.
    let config = common::temp_file(
        "live-absurd-host.toml",
        "[tasks.echo]\nkind = \"builtin\"\n",
    );
    let ours = client
        .spawn(QUEUE, "echo", &json!({"hello": "rust"}), &no_backoff(1))
        .await
        .unwrap()
        .task_id;
    let _worker = common::WorkerProc::start(
        &db.url,
        &config,
        &["--queue", QUEUE, "--worker-id", "rust-live-1"],
    );

    let mut seen = std::collections::HashMap::new();
    let done = |seen: &std::collections::HashMap<Uuid, Seen>| {
        [
            (py_echo, "completed"),
            (py_fail, "failed"),
            (ours, "completed"),
        ]
        .iter()
        .all(|(id, s)| {
            seen.get(id)
                .is_some_and(|x| x.statuses.last().unwrap() == s)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&seen) {
        assert!(Instant::now() < deadline, "timed out; seen {seen:?}");
        record(&mut seen, &next_of(&mut rx).await);
    }
    let e = &seen[&py_echo];
    assert_eq!(e.statuses, ["pending", "processing", "completed"], "{e:?}");
    assert_eq!(e.last["worker_id"], "py-live-1", "{e:?}");
    assert_eq!(e.last["result"], json!({"hello": "py"}), "{e:?}");
    let f = &seen[&py_fail];
    assert!(
        f.last["error"].as_str().unwrap().contains("py says no"),
        "{f:?}"
    );
    let o = &seen[&ours];
    assert_eq!(o.statuses, ["pending", "processing", "completed"], "{o:?}");
    assert_eq!(o.last["worker_id"], "rust-live-1", "{o:?}");
    assert_eq!(o.last["result"]["hello"], "rust", "{o:?}");
    server.stop().await;
}

#[tokio::test]
async fn queues_created_before_the_migration_get_the_triggers() {
    // The schema up to migration 14, a queue, then migration 15.
    let db = TestDb::empty().await;
    let full = absurd_client::db::migrator();
    let mut before = absurd_client::db::migrator();
    before.migrations =
        std::borrow::Cow::Owned(full.iter().filter(|m| m.version < 15).cloned().collect());
    before.run(&db.pool).await.unwrap();
    let client = Client::new(db.pool.clone());
    client.create_queue(QUEUE).await.unwrap();
    assert!(!client.live_updates_supported().await.unwrap());
    let report = absurd_client::db::migrate(&db.pool).await.unwrap();
    assert!(report.applied.iter().any(|(v, _)| *v == 15), "{report:?}");
    assert!(client.live_updates_supported().await.unwrap());

    let mut listener = client.live_listener().await.unwrap();
    listener.listen().await.unwrap();
    client.renew_live_updates(60).await.unwrap();
    let t = client
        .spawn(QUEUE, "noop", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let p = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification for the old queue")
        .unwrap()
        .unwrap();
    let n = absurd_client::live::LiveNotice::parse(&p).unwrap();
    assert_eq!(
        (n.queue.as_str(), n.changes),
        (QUEUE, vec![(t.task_id, absurd_client::State::Pending)])
    );
}

/// How many of the two live-update triggers the queue's task table has.
async fn live_triggers(db: &TestDb, queue: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_trigger g \
         where g.tgrelid = to_regclass(format('absurd.%I', 't_' || $1)) \
           and g.tgname in ('absurd_live_insert', 'absurd_live_update')",
    )
    .bind(queue)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_triggers_exist_only_while_someone_listens() {
    // Migration 0022: a task table nobody watches has no trigger to pay for.
    let (db, client) = setup(QUEUE).await;
    let other = "live q \"3\"";
    assert_eq!(live_triggers(&db, QUEUE).await, 0);

    // The first listener installs them on every queue, and queues made meanwhile get them.
    client.hold_live_updates("api a", 60).await.unwrap();
    assert_eq!(live_triggers(&db, QUEUE).await, 2);
    client.create_queue(other).await.unwrap();
    assert_eq!(live_triggers(&db, other).await, 2);
    assert_eq!(client.retire_live_triggers().await.unwrap(), None);

    // Two listeners: the first to leave keeps them for the other.
    client.hold_live_updates("api b", 60).await.unwrap();
    assert!(!client.release_live_updates("api a").await.unwrap());
    assert_eq!(live_triggers(&db, QUEUE).await, 2);
    assert!(client.release_live_updates("api b").await.unwrap());
    assert_eq!(live_triggers(&db, QUEUE).await, 0);
    assert_eq!(live_triggers(&db, other).await, 0);

    // And nothing is sent any more.
    let mut listener = client.live_listener().await.unwrap();
    listener.listen().await.unwrap();
    client
        .spawn(QUEUE, "noop", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_err(),
        "a notification was sent after the last listener left"
    );

    // A listener that died without releasing: its lease runs out (here at once), and
    // retiring then drops what it left.
    client.hold_live_updates("api c", 0).await.unwrap();
    assert_eq!(live_triggers(&db, QUEUE).await, 2);
    assert_eq!(client.retire_live_triggers().await.unwrap(), Some(0));
    assert_eq!(live_triggers(&db, QUEUE).await, 0);
    assert_eq!(live_triggers(&db, other).await, 0);

    // A table whose lock is taken is skipped, not waited for: the others get their triggers
    // at once, and the busy one at the next renewal after its writer finished.
    let mut writer = db.pool.begin().await.unwrap();
    sqlx::query("lock table absurd.\"t_live-q\" in row exclusive mode")
        .execute(&mut *writer)
        .await
        .unwrap();
    let started = Instant::now();
    client.hold_live_updates("api d", 60).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the renewal waited for the busy table ({:?})",
        started.elapsed()
    );
    assert_eq!(live_triggers(&db, QUEUE).await, 0);
    assert_eq!(live_triggers(&db, other).await, 2);
    writer.commit().await.unwrap();
    client.hold_live_updates("api d", 60).await.unwrap();
    assert_eq!(live_triggers(&db, QUEUE).await, 2);

    // Holder names are bounded.
    let err = client
        .hold_live_updates(&"x".repeat(129), 60)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 to 128 characters"), "{err}");
}

#[tokio::test]
async fn an_api_installs_the_triggers_while_it_streams_and_drops_them_when_it_stops() {
    let (db, _client) = setup(QUEUE).await;
    assert_eq!(live_triggers(&db, QUEUE).await, 0);
    let server = Server::start(&db, LiveSettings::default()).await;
    let mut ws = ws_connect(server.addr, None).await.unwrap();
    let hello = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(hello["type"], "connected", "{hello}");
    wait_for(
        "the API to install the triggers",
        Duration::from_secs(20),
        || async { (live_triggers(&db, QUEUE).await == 2).then_some(()) },
    )
    .await;
    server.stop().await;
    wait_for(
        "the stopped API to drop the triggers",
        Duration::from_secs(20),
        || async { (live_triggers(&db, QUEUE).await == 0).then_some(()) },
    )
    .await;
}

/// The triggers work on a partitioned queue's task table (a partitioned parent) alike: a spawn
/// and a claim are each told once, with the task and its new state.
#[tokio::test]
async fn partitioned_queues_notify_too() {
    use absurd_client::partitions::StorageMode;
    let (_db, client) = setup(QUEUE).await;
    let q = "live-p";
    client
        .create_queue_with_mode(q, StorageMode::Partitioned)
        .await
        .unwrap();
    let mut listener = client.live_listener().await.unwrap();
    listener.listen().await.unwrap();
    client.renew_live_updates(60).await.unwrap();
    let t = client
        .spawn(q, "noop", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let mut next = async || {
        let p = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification within 10 s")
            .unwrap()
            .unwrap();
        absurd_client::live::LiveNotice::parse(&p).unwrap()
    };
    let n = next().await;
    assert_eq!(n.queue, q);
    assert_eq!(n.changes, vec![(t.task_id, absurd_client::State::Pending)]);
    let claimed = client.claim(q, "w", 60, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let n = next().await;
    assert_eq!(n.changes, vec![(t.task_id, absurd_client::State::Running)]);
}
