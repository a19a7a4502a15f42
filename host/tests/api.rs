//! The HTTP API as clients use it, against real PostgreSQL.
//!
//! Most tests drive the router that `absurd-host serve` builds, in this process, one request
//! at a time through `tower::ServiceExt::oneshot`: no port, no child process, no log to scrape.
//! Where the socket, the process or its log is the point (binding and the token rule, the
//! server log's error ids, PostgreSQL stopping under a running server, `worker --api`,
//! schemathesis, the CLI) `absurd-host` runs as a real process on a free port, and the test
//! talks to it with hyper's HTTP/1.1 client.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use absurd_client::vocab::FailureCategory;
use absurd_client::{Client, RetryStrategy, SpawnOptions};
use absurd_engine::metrics::Counters;
use absurd_host::api::ApiSettings;
use axum::body::Body;
use axum::Router;
use common::{temp_file, wait_for, wait_for_ok, TestDb};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

// ---- requests: in process, or over a socket ---------------------------------------------------

/// Where a request goes: the router in this process, or a real server's address.
#[derive(Clone, Copy)]
enum Api<'a> {
    InProcess(&'a Router),
    Socket(&'a str),
}

impl<'a> From<&'a Router> for Api<'a> {
    fn from(r: &'a Router) -> Self {
        Api::InProcess(r)
    }
}

impl<'a> From<&'a str> for Api<'a> {
    fn from(addr: &'a str) -> Self {
        Api::Socket(addr)
    }
}

impl<'a> From<&'a String> for Api<'a> {
    fn from(addr: &'a String) -> Self {
        Api::Socket(addr)
    }
}

/// The `Host` of in-process requests. Without a token the API answers loopback names only,
/// and a real client always sends one; there is no connection to take it from.
const IN_PROCESS_HOST: &str = absurd_host::api::DEFAULT_LISTEN;

/// The API as `absurd-host serve` builds it with no flags and no `ABSURD_*` variables: the
/// default settings (queue `dsa110-pipeline`, body, `params` and statement limits), its own
/// lazily connecting pool with the statement timeout, and fresh counters.
fn in_process(db: &TestDb) -> Router {
    let settings = ApiSettings::default();
    let pool = absurd_host::api::lazy_pool(&db.url, settings.statement_timeout)
        .expect("the test database URL parses");
    absurd_host::api::router(Client::new(pool), settings, Counters::default())
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The `detail` of an error response, checking the status.
    fn detail(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self.json()["detail"]
            .as_str()
            .expect("an error has a string detail")
            .to_string()
    }
}

/// One request: through the router in process, or on a fresh connection.
async fn request<'a>(
    api: impl Into<Api<'a>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    match api.into() {
        Api::InProcess(router) => oneshot(router, method, path, headers, body).await,
        Api::Socket(addr) => over_socket(addr, method, path, headers, body).await,
    }
}

/// One request through a clone of the router (cheap: its state is shared), with the headers
/// a real client would send: a loopback `Host` (unless the test gives one), and
/// `Content-Length` with a body.
async fn oneshot(
    router: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let req = build_request(method, path, IN_PROCESS_HOST, headers, body);
    let resp = match router.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    into_resp(method, path, resp).await
}

/// A request with `Host` (unless `headers` has one) and, with a body, `Content-Length`.
fn build_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> axum::http::Request<Body> {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("Host", host);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(b) => {
            req = req.header("Content-Length", b.len());
            Body::from(b.to_vec())
        }
        None => Body::empty(),
    };
    req.body(body)
        .unwrap_or_else(|e| panic!("bad test request {method} {path}: {e}"))
}

async fn into_resp(method: &str, path: &str, resp: axum::http::Response<Body>) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = v
                .to_str()
                .unwrap_or_else(|e| panic!("header {k} is not text: {e}"));
            (k.as_str().to_string(), v.to_string())
        })
        .collect();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("reading the body of {method} {path}: {e}"))
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// One request to a server process on a fresh connection, through hyper's HTTP/1.1 client.
async fn over_socket(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("HTTP/1.1 handshake with {addr}: {e}"));
    let conn = tokio::spawn(conn);
    let req = build_request(method, path, addr, headers, body);
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    let resp = into_resp(method, path, resp.map(Body::new)).await;
    drop(sender);
    let _ = conn.await;
    resp
}

async fn get<'a>(api: impl Into<Api<'a>>, path: &str) -> Resp {
    request(api, "GET", path, &[], None).await
}

async fn post_json<'a>(api: impl Into<Api<'a>>, path: &str, body: &Value) -> Resp {
    let b = serde_json::to_vec(body).unwrap();
    request(
        api,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(&b),
    )
    .await
}

async fn delete<'a>(api: impl Into<Api<'a>>, path: &str) -> Resp {
    request(api, "DELETE", path, &[], None).await
}

// ---- server processes ------------------------------------------------------------------------

/// A running `absurd-host serve` or `worker --api`, killed when dropped. It listens on port 0;
/// the address comes from its log.
struct Server {
    child: Child,
    log: PathBuf,
    addr: String,
}

fn command(args: &[&str], env: &[(&str, &str)]) -> (Command, PathBuf) {
    let log = temp_file("api.log", "");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
    cmd.args(args)
        .env_remove("ABSURD_API_TOKEN")
        .env_remove("ABSURD_API_LISTEN")
        .env_remove("ABSURD_QUEUE_NAME")
        .env_remove("ABSURD_DATABASE_URL")
        .env(
            "ABSURD_LOG",
            "info,sqlx=warn,absurd_host=debug,absurd_engine=debug,absurd_client=debug",
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    (cmd, log)
}

impl Server {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let (mut cmd, log) = command(args, env);
        let child = cmd.spawn().expect("start absurd-host");
        let mut server = Server {
            child,
            log,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = server.log_text();
            if let Some(i) = text.find("API listening on http://") {
                let rest = &text[i + "API listening on http://".len()..];
                server.addr = rest.split_whitespace().next().unwrap().to_string();
                break;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("absurd-host exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "absurd-host did not start listening:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Connect to the loopback side of a wildcard address.
        server.addr = server.addr.replace("0.0.0.0", "127.0.0.1");
        server
    }

    fn serve(db_url: &str) -> Server {
        Server::start(
            &["serve", "--database-url", db_url, "--listen", "127.0.0.1:0"],
            &[],
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- absurd-host log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

const CONFIG: &str = r#"
[tasks.echo]
kind = "builtin"

[tasks.boom]
kind = "builtin"
builtin = "fail"

[tasks.limited]
kind = "builtin"
builtin = "sleep"
timeout = 1
"#;

async fn setup(queues: &[&str]) -> (TestDb, Client) {
    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    for q in queues {
        client.create_queue(q).await.unwrap();
    }
    (db, client)
}

fn task_path(id: &str) -> String {
    format!("/api/absurd/tasks/{id}")
}

/// Makes `task` failed without a worker: claim its run and fail it for good.
async fn fail_task(client: &Client, queue: &str, task: Uuid) {
    let runs = client.claim(queue, "test-worker", 60, 1).await.unwrap();
    let run = runs
        .into_iter()
        .find(|r| r.task_id == task)
        .expect("claimed the task");
    client
        .fail_run(
            queue,
            run.run_id,
            &json!({"name": "Boom", "message": "it broke"}),
            None,
        )
        .await
        .unwrap();
}

// ---- tests -----------------------------------------------------------------------------------

#[tokio::test]
async fn health_is_cheap_and_shaped_like_the_seed() {
    let (db, _client) = setup(&["jobs"]).await;
    let a = &in_process(&db);
    let r = get(a, "/api/absurd/health").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["message"], "Absurd is operational");
    assert_eq!(v["queue"], "dsa110-pipeline");

    let r = get(a, "/api/absurd/health/detailed").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "healthy", "{v}");
    assert_eq!(v["message"], "All systems operational");
    assert_eq!(v["database_available"], true);
    assert!(v["database_latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["queue_depth"], 0);
    assert_eq!(v["alerts"], json!([]));

    // Unknown routes and methods answer in the same error shape.
    assert_eq!(get(a, "/api/absurd/nope").await.detail(404), "Not Found");
    assert_eq!(
        delete(a, "/api/absurd/queues").await.detail(405),
        "Method Not Allowed"
    );
}

#[tokio::test]
async fn spawn_validates_every_field_and_never_500s() {
    let (db, client) = setup(&["jobs"]).await;
    let a = &in_process(&db);

    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "jobs", "task_name": "echo", "params": {"x": 1}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["created"], true);
    assert_eq!(v["queue_name"], "jobs");
    assert!(v.get("warnings").is_none());
    let id: Uuid = v["task_id"].as_str().unwrap().parse().unwrap();
    let t = client.get_task("jobs", id).await.unwrap().unwrap();
    assert_eq!(t.params, json!({"x": 1}));
    assert_eq!(
        t.summary.max_attempts,
        Some(4),
        "ABSURD_MAX_RETRIES + 1 by default"
    );

    // Every Absurd option, the seed's priority accepted with a warning, and its timeout_sec
    // stored as the task's timeout_sec header.
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({
            "queue_name": "jobs", "task_name": "echo", "params": {},
            "max_attempts": 2, "retry_strategy": {"kind": "fixed", "base_seconds": 5},
            "headers": {"trace": "t1"}, "cancellation": {"max_delay": 60, "max_duration": 600},
            "idempotency_key": "k1", "priority": 5, "timeout_sec": 30
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .starts_with("priority is ignored"));
    let id2: Uuid = v["task_id"].as_str().unwrap().parse().unwrap();
    let t = client.get_task("jobs", id2).await.unwrap().unwrap();
    assert_eq!(t.summary.max_attempts, Some(2));
    assert_eq!(t.headers, Some(json!({"trace": "t1", "timeout_sec": 30})));
    // The task page shows it.
    let d = get(a, &format!("/api/absurd/tasks/{id2}")).await.json();
    assert_eq!(d["timeout_sec"], 30, "{d}");
    assert_eq!(
        get(a, &format!("/api/absurd/tasks/{id}")).await.json()["timeout_sec"],
        Value::Null
    );
    // The seed's clients send `"timeout_sec": null` by default: no timeout of the task's own.
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": null, "priority": 0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("warnings").is_none(), "{}", r.text());
    // The header alone (as an SDK sets it), and the field and the header agreeing.
    for body in [
        json!({"queue_name": "jobs", "task_name": "echo", "headers": {"timeout_sec": 45}}),
        json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": 45.0, "headers": {"timeout_sec": 45}}),
    ] {
        let r = post_json(a, "/api/absurd/tasks", &body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        let id: Uuid = r.json()["task_id"].as_str().unwrap().parse().unwrap();
        let d = get(a, &format!("/api/absurd/tasks/{id}")).await.json();
        assert_eq!(d["timeout_sec"], 45, "{d}");
    }
    assert_eq!(t.retry_strategy.as_ref().unwrap()["kind"], "fixed");
    assert_eq!(
        t.cancellation,
        Some(json!({"max_delay": 60, "max_duration": 600}))
    );
    // Same idempotency key: the same task, not created.
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "jobs", "task_name": "echo", "idempotency_key": "k1"}),
    )
    .await;
    assert_eq!(r.json()["created"], false);
    assert_eq!(r.json()["task_id"], json!(id2));
    // Non-ASCII text (the schemathesis run below sends ASCII only) is kept exactly, in the
    // params, the headers and the idempotency key.
    let text = json!({"source": "Cygnus A ☉ 3C405", "observer": "Ødegård", "band": "λ21cm 🔭"});
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "jobs", "task_name": "echo", "params": text,
                "headers": {"note": "über"}, "idempotency_key": "clé-1"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id3 = r.json()["task_id"].as_str().unwrap().to_string();
    let d = get(a, &format!("/api/absurd/tasks/{id3}")).await.json();
    assert_eq!(d["params"], text, "{d}");
    let t = client
        .get_task("jobs", id3.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.headers, Some(json!({"note": "über"})));
    let again = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "jobs", "task_name": "echo", "idempotency_key": "clé-1"}),
    )
    .await;
    assert_eq!(again.json()["task_id"], json!(id3), "{}", again.text());

    // Bad input: 400 naming the field.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"task_name": "echo"}), "queue_name is required"),
        (
            json!({"queue_name": "", "task_name": "echo"}),
            "queue_name must not be empty",
        ),
        (
            json!({"queue_name": "x".repeat(58), "task_name": "echo"}),
            "queue_name",
        ),
        // The limit is 57 bytes of UTF-8 (Absurd's), not characters: 29 two-byte letters are
        // 58 bytes.
        (
            json!({"queue_name": "é".repeat(29), "task_name": "echo"}),
            "is 58 bytes long; the limit is 57",
        ),
        (
            json!({"queue_name": "jobs", "task_name": 5}),
            "task_name must be a string",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "params": [1]}),
            "params must be a JSON object",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "params": "x"}),
            "params must be a JSON object",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "max_attempts": 0}),
            "max_attempts must be an integer between 1",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "max_attempts": "3"}),
            "max_attempts must be an integer",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "retry_strategy": {"kind": "linear"}}),
            "retry_strategy.kind",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "retry_strategy": {"base_seconds": -1}}),
            "retry_strategy.base_seconds",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "retry_strategy": {"bogus": 1}}),
            "retry_strategy: unknown field",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "retry_strategy": 3}),
            "retry_strategy must be a JSON object",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "cancellation": {"max_delay": -1}}),
            "cancellation.max_delay",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "headers": [1]}),
            "headers must be a JSON object",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "idempotency_key": ""}),
            "idempotency_key",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "priority": "high"}),
            "priority must be an integer",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": -5}),
            "timeout_sec must be a whole number of seconds from 1 to 31536000, got -5",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": 0}),
            "timeout_sec must be a whole number of seconds from 1 to 31536000, got 0",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": 1.5}),
            "timeout_sec must be a whole number of seconds from 1 to 31536000, got 1.5",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": "30"}),
            "timeout_sec must be a whole number of seconds from 1 to 31536000, got \"30\"",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": 1e12}),
            "got 1000000000000",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "headers": {"timeout_sec": -1}}),
            "headers.timeout_sec must be a whole number of seconds from 1 to 31536000, got -1",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "timeout_sec": 10, "headers": {"timeout_sec": 20}}),
            "timeout_sec is 10 but headers.timeout_sec is 20",
        ),
        (
            json!({"queue_name": "jobs", "task_name": "echo", "colour": "red"}),
            "unknown field \"colour\"",
        ),
        (json!([1, 2]), "request body must be a JSON object"),
    ];
    for (body, expected) in cases {
        let r = post_json(a, "/api/absurd/tasks", &body).await;
        let d = r.detail(400);
        assert!(
            d.contains(expected),
            "{body}: {d:?} does not mention {expected:?}"
        );
    }
    let r = request(
        a,
        "POST",
        "/api/absurd/tasks",
        &[("Content-Type", "application/json")],
        Some(b"{\"queue_name\": "),
    )
    .await;
    assert!(r.detail(400).starts_with("request body is not valid JSON"));
    let r = request(
        a,
        "POST",
        "/api/absurd/tasks",
        &[("Content-Type", "application/json")],
        Some(b""),
    )
    .await;
    assert!(r.detail(400).contains("empty"));
    let r = request(
        a,
        "POST",
        "/api/absurd/tasks",
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    )
    .await;
    assert!(r.detail(415).contains("application/json"));

    // Unknown queue: 404.
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "nope", "task_name": "echo"}),
    )
    .await;
    assert!(r.detail(404).contains("nope"));

    // Size limits: params over 256 KiB, body over 1 MiB.
    let big = "x".repeat(300 * 1024);
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "jobs", "task_name": "echo", "params": {"blob": big}}),
    )
    .await;
    assert!(r.detail(413).contains("params"));
    let huge = format!(
        "{{\"queue_name\":\"jobs\",\"task_name\":\"echo\",\"params\":{{\"blob\":\"{}\"}}}}",
        "y".repeat(1100 * 1024)
    );
    let r = request(
        a,
        "POST",
        "/api/absurd/tasks",
        &[("Content-Type", "application/json")],
        Some(huge.as_bytes()),
    )
    .await;
    assert!(r.detail(413).contains("limit"));
}

#[tokio::test]
async fn task_get_cancel_retry_and_events() {
    let (db, client) = setup(&["jobs"]).await;
    let a = &in_process(&db);
    let opts = SpawnOptions {
        max_attempts: Some(1),
        retry_strategy: Some(RetryStrategy::none()),
        ..Default::default()
    };
    let id = client
        .spawn("jobs", "echo", &json!({"k": "v"}), &opts)
        .await
        .unwrap()
        .task_id;

    // GET with and without the queue.
    for path in [
        task_path(&id.to_string()),
        format!("{}?queue_name=jobs", task_path(&id.to_string())),
    ] {
        let r = get(a, &path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["task_id"], json!(id));
        assert_eq!(v["status"], "pending");
        assert_eq!(v["params"], json!({"k": "v"}));
        assert_eq!(v["runs"].as_array().unwrap().len(), 1);
        assert_eq!(v["runs"][0]["attempt"], 1);
        assert_eq!(v["runs"][0]["state"], "pending");
        assert_eq!(v["checkpoints"], json!([]));
        assert_eq!(v["waits"], json!([]));
        assert_eq!(v["result"], Value::Null);
        assert_eq!(v["error"], Value::Null);
    }
    assert!(get(a, &task_path("not-a-uuid"))
        .await
        .detail(400)
        .contains("task_id"));
    let unknown = Uuid::now_v7();
    assert_eq!(
        get(a, &task_path(&unknown.to_string())).await.detail(404),
        format!("Task {unknown} not found")
    );
    assert!(get(
        a,
        &format!("{}?queue_name=nope", task_path(&id.to_string()))
    )
    .await
    .detail(404)
    .contains("nope"));

    // A pending task cannot be retried.
    let r = request(
        a,
        "POST",
        &format!("{}/retry", task_path(&id.to_string())),
        &[],
        None,
    )
    .await;
    assert!(r.detail(409).contains("only failed tasks"));

    // Cancel: 200, then 409 (already cancelled), unknown 404, bad id 400.
    let r = delete(a, &task_path(&id.to_string())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"], format!("Task {id} cancelled"));
    assert_eq!(r.json()["status"], "cancelled");
    assert!(delete(a, &task_path(&id.to_string()))
        .await
        .detail(409)
        .contains("already cancelled"));
    delete(a, &task_path(&unknown.to_string()))
        .await
        .detail(404);
    delete(a, &task_path("123")).await.detail(400);

    // Retry a failed task: in place, then as a new task.
    let f = client
        .spawn("jobs", "boom", &json!({}), &opts)
        .await
        .unwrap()
        .task_id;
    fail_task(&client, "jobs", f).await;
    let v = get(a, &task_path(&f.to_string())).await.json();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"], "Boom: it broke");
    assert_eq!(v["runs"][0]["worker_id"], "test-worker");
    let r = request(
        a,
        "POST",
        &format!("{}/retry", task_path(&f.to_string())),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["attempt"], 2);
    assert_eq!(r.json()["created"], false);
    assert_eq!(
        get(a, &task_path(&f.to_string())).await.json()["status"],
        "pending"
    );
    fail_task(&client, "jobs", f).await;
    let r = post_json(
        a,
        &format!("{}/retry", task_path(&f.to_string())),
        &json!({"spawn_new": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["created"], true);
    assert_ne!(r.json()["task_id"], json!(f));
    let r = post_json(
        a,
        &format!("{}/retry", task_path(&f.to_string())),
        &json!({"spawn_new": "yes"}),
    )
    .await;
    assert!(r.detail(400).contains("spawn_new must be a boolean"));
    request(
        a,
        "POST",
        &format!("{}/retry", task_path(&unknown.to_string())),
        &[],
        None,
    )
    .await
    .detail(404);

    // Events.
    let r = post_json(
        a,
        "/api/absurd/events",
        &json!({"queue_name": "jobs", "event_name": "ready", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"queue_name": "jobs", "event_name": "ready", "emitted": true})
    );
    assert!(
        post_json(a, "/api/absurd/events", &json!({"queue_name": "jobs"}))
            .await
            .detail(400)
            .contains("event_name is required")
    );
    assert!(post_json(
        a,
        "/api/absurd/events",
        &json!({"queue_name": "nope", "event_name": "e"})
    )
    .await
    .detail(404)
    .contains("nope"));

    // Queues.
    let r = get(a, "/api/absurd/queues").await;
    assert_eq!(r.json(), json!(["jobs"]));
    let r = get(a, "/api/absurd/queues/stats").await;
    assert_eq!(r.json()[0]["queue_name"], "jobs");
    get(a, "/api/absurd/queues/nope/stats").await.detail(404);
}

#[tokio::test]
async fn listing_has_real_totals_and_cursor_pages() {
    let (db, client) = setup(&["a", "b"]).await;
    let addr = &in_process(&db);
    let opts = SpawnOptions::default();
    let mut all = vec![];
    for i in 0..7 {
        all.push(
            client
                .spawn("a", "alpha", &json!({"i": i}), &opts)
                .await
                .unwrap()
                .task_id,
        );
    }
    for i in 0..3 {
        all.push(
            client
                .spawn("a", "beta", &json!({"i": i}), &opts)
                .await
                .unwrap()
                .task_id,
        );
    }
    client.spawn("b", "alpha", &json!({}), &opts).await.unwrap();

    // Pages of 3 over queue a: total 10 on every page, 4 pages, every task once.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/absurd/tasks?queue_name=a&limit=3".to_string(),
            Some(c) => format!("/api/absurd/tasks?queue_name=a&limit=3&cursor={c}"),
        };
        let v = get(addr, &path).await.json();
        pages += 1;
        assert_eq!(v["total"], 10, "{v}");
        assert_eq!(v["limit"], 3);
        for t in v["tasks"].as_array().unwrap() {
            assert_eq!(t["result"], Value::Null);
            assert_eq!(t["error"], Value::Null);
            seen.push(t["task_id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let mut expect = all.clone();
    expect.sort();
    expect.reverse();
    assert_eq!(seen, expect, "newest first, no duplicates, none missing");

    let v = get(addr, "/api/absurd/tasks?queue_name=a&task_name=beta")
        .await
        .json();
    assert_eq!(v["total"], 3);
    let v = get(addr, "/api/absurd/tasks?task_name=alpha").await.json();
    assert_eq!(v["total"], 8, "every queue");
    let v = get(addr, "/api/absurd/tasks?status=pending&limit=1")
        .await
        .json();
    assert_eq!(v["total"], 11);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1);
    let v = get(addr, "/api/absurd/tasks?status=completed").await.json();
    assert_eq!(v["total"], 0);

    // The seed's `claimed` is `running` (issue 17); a state that exists nowhere is refused.
    let v = get(addr, "/api/absurd/tasks?status=claimed").await.json();
    assert_eq!(v["total"], 0);
    assert!(get(addr, "/api/absurd/tasks?status=done")
        .await
        .detail(400)
        .contains("status"));
    assert!(get(addr, "/api/absurd/tasks?limit=0")
        .await
        .detail(400)
        .contains("limit"));
    assert!(get(addr, "/api/absurd/tasks?limit=1001")
        .await
        .detail(400)
        .contains("limit"));
    assert!(get(addr, "/api/absurd/tasks?cursor=zzz")
        .await
        .detail(400)
        .contains("cursor"));
    assert!(get(addr, "/api/absurd/tasks?queue_name=nope")
        .await
        .detail(404)
        .contains("nope"));
    assert!(get(addr, "/api/absurd/tasks?limit=1&limit=2")
        .await
        .detail(400)
        .contains("more than once"));
}

/// A query-string value: RFC 3339 offsets carry a `+`, which means a space unescaped.
fn qv(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(' ', "%20")
        .replace('&', "%26")
        .replace('\\', "%5C")
}

#[tokio::test]
async fn listing_filters_by_enqueue_time_and_params_text() {
    let (db, client) = setup(&["a", "b"]).await;
    let addr = &in_process(&db);
    let opts = SpawnOptions::default();
    let mut ids = vec![];
    for params in [
        json!({"target": "Alpha Centauri"}),
        json!({"note": "50% done_now"}),
        json!({"path": "/data/X\\y"}),
        json!({"target": "alphabet"}),
    ] {
        ids.push(
            client
                .spawn("a", "obs", &params, &opts)
                .await
                .unwrap()
                .task_id,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .spawn("b", "obs", &json!({"target": "ALPHA in b"}), &opts)
        .await
        .unwrap();
    let total = |path: String| async move {
        let v = get(addr, &path).await.json();
        (
            v["total"].as_i64().unwrap(),
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().parse::<Uuid>().unwrap())
                .collect::<Vec<_>>(),
        )
    };

    // Text search: case-insensitive substring of the params' JSON text, across queues.
    assert_eq!(total("/api/absurd/tasks?q=alpha".into()).await.0, 3);
    assert_eq!(
        total("/api/absurd/tasks?queue_name=a&q=ALPHA".into())
            .await
            .0,
        2
    );
    assert_eq!(
        total("/api/absurd/tasks?queue_name=a&q=centauri".into())
            .await
            .1,
        vec![ids[0]]
    );
    // `%`, `_` and `\` are literal, not wildcards.
    for (text, want) in [
        ("%", 1),
        ("50%", 1),
        ("_", 1),
        ("e_n", 1),
        ("\\", 1),
        ("a%b", 0),
    ] {
        let (n, _) = total(format!("/api/absurd/tasks?queue_name=a&q={}", qv(text))).await;
        assert_eq!(n, want, "q={text:?}");
    }
    assert_eq!(
        total("/api/absurd/tasks?q=".into()).await.0,
        5,
        "empty q: no filter"
    );
    assert_eq!(
        total("/api/absurd/tasks?q=nothing-like-it".into()).await.0,
        0
    );

    // Time range on the enqueue time: after is inclusive, before exclusive.
    let created: Vec<String> = {
        let v = get(addr, "/api/absurd/tasks?queue_name=a").await.json();
        let mut c: Vec<(Uuid, String)> = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["task_id"].as_str().unwrap().parse().unwrap(),
                    t["created_at"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        c.sort();
        c.into_iter().map(|(_, t)| t).collect()
    };
    let (n, got) = total(format!(
        "/api/absurd/tasks?queue_name=a&enqueued_after={}",
        qv(&created[2])
    ))
    .await;
    assert_eq!((n, got), (2, vec![ids[3], ids[2]]));
    let (n, got) = total(format!(
        "/api/absurd/tasks?queue_name=a&enqueued_before={}",
        qv(&created[1])
    ))
    .await;
    assert_eq!((n, got), (1, vec![ids[0]]));
    let (n, got) = total(format!(
        "/api/absurd/tasks?queue_name=a&enqueued_after={}&enqueued_before={}&q=alpha",
        qv(&created[0]),
        qv(&created[3])
    ))
    .await;
    assert_eq!((n, got), (1, vec![ids[0]]), "both bounds and the search");
    // `Z` and other offsets are accepted; pages still carry the total.
    let v = get(
        addr,
        "/api/absurd/tasks?enqueued_after=2000-01-01T00:00:00Z&enqueued_before=2999-01-01T01:00:00%2B01:00&limit=2",
    )
    .await
    .json();
    assert_eq!(v["total"], 5);
    assert!(v["next_cursor"].is_string());
    assert_eq!(
        total("/api/absurd/tasks?enqueued_before=2000-01-01T00:00:00Z".into())
            .await
            .0,
        0
    );

    // Bad input names the field.
    for (param, value) in [
        ("enqueued_after", "yesterday"),
        ("enqueued_before", "2025-01-01"),
        ("enqueued_after", "2025-13-01T00:00:00Z"),
    ] {
        let d = get(addr, &format!("/api/absurd/tasks?{param}={value}"))
            .await
            .detail(400);
        assert!(d.contains(param) && d.contains("RFC 3339"), "{d}");
    }
    let long = "x".repeat(201);
    let d = get(addr, &format!("/api/absurd/tasks?q={long}"))
        .await
        .detail(400);
    assert!(d.starts_with("q ") && d.contains("200"), "{d}");
    assert_eq!(
        total(format!("/api/absurd/tasks?q={}", "x".repeat(200)))
            .await
            .0,
        0
    );
    assert!(get(addr, "/api/absurd/tasks?q=a&q=b")
        .await
        .detail(400)
        .contains("more than once"));

    // The CLI has the same filters.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .args(args)
            .args(["--database-url", &db.url, "--json"])
            .env_remove("ABSURD_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&[
        "task",
        "list",
        "--queue",
        "a",
        "--search",
        "ALPHA",
        "--since",
        &created[1],
        "--until",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["tasks"][0]["task_id"], json!(ids[3]));
    let out = run(&["task", "list", "--since", "not-a-time"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = run(&["task", "list", "--search", &long]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("200"));
}

/// The value of the sample `series` (name and labels, exactly as exposed), if it is there.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{series} = {v:?}")))
}

#[tokio::test]
async fn metrics_count_a_completed_task_and_show_the_process() {
    let (db, _client) = setup(&["work", "other"]).await;
    let config = temp_file("absurd-host.toml", CONFIG);
    let s = Server::start(
        &[
            "worker",
            "--database-url",
            &db.url,
            "--config",
            config.to_str().unwrap(),
            "--queue",
            "work",
            "--queue",
            "other",
            "--api",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let a = s.addr.as_str();
    let completed = "absurd_tasks_completed_total{queue=\"work\",task_name=\"echo\"}";
    let before = get(a, "/metrics").await.text();
    assert_eq!(sample(&before, completed), None, "{before}");
    // The standard process metrics, read from /proc at the scrape.
    let pid = sample(&before, "process_start_time_seconds").expect("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        pid <= now + 1.0 && pid > now - 600.0,
        "started at {pid}, now {now}"
    );
    assert!(sample(&before, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&before, "process_virtual_memory_bytes").unwrap() > 1e6);
    let open = sample(&before, "process_open_fds").unwrap();
    assert!(open >= 3.0 && open <= sample(&before, "process_max_fds").unwrap());
    assert!(sample(&before, "process_cpu_seconds_total").unwrap() >= 0.0);
    assert!(before.contains("# TYPE process_cpu_seconds_total counter\n"));

    for round in 1..=2 {
        let r = post_json(
            a,
            "/api/absurd/tasks",
            &json!({"queue_name": "work", "task_name": "echo", "params": {"round": round}}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = wait_for(
            &format!("completed task {round} in /metrics"),
            Duration::from_secs(30),
            || async {
                let text = get(a, "/metrics").await.text();
                (sample(&text, completed) == Some(round as f64)).then_some(text)
            },
        )
        .await;
        // Counted under its own queue only, once per run.
        let other = "absurd_tasks_completed_total{queue=\"other\",task_name=\"echo\"}";
        assert_eq!(sample(&text, other), None, "{text}");
        let claimed = "absurd_tasks_claimed_total{queue=\"work\",task_name=\"echo\"}";
        assert_eq!(sample(&text, claimed), Some(round as f64), "{text}");
        let runs = "absurd_task_run_duration_seconds_count{queue=\"work\",task_name=\"echo\",outcome=\"completed\"}";
        assert_eq!(sample(&text, runs), Some(round as f64), "{text}");
    }
}

#[tokio::test]
async fn stats_metrics_and_health_after_a_known_workload() {
    let (db, _client) = setup(&["work"]).await;
    let config = temp_file("absurd-host.toml", CONFIG);
    let s = Server::start(
        &[
            "worker",
            "--database-url",
            &db.url,
            "--config",
            config.to_str().unwrap(),
            "--queue",
            "work",
            "--worker-id",
            "w-api",
            "--api",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let a = s.addr.as_str();
    let mut ids = vec![];
    for i in 0..5 {
        let r = post_json(
            a,
            "/api/absurd/tasks",
            &json!({"queue_name": "work", "task_name": "echo", "params": {"i": i}}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.json()["task_id"].as_str().unwrap().to_string());
    }
    for _ in 0..2 {
        let r = post_json(
            a,
            "/api/absurd/tasks",
            &json!({"queue_name": "work", "task_name": "boom", "max_attempts": 1, "retry_strategy": {"kind": "none"}}),
        )
        .await;
        ids.push(r.json()["task_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_for(
            &format!("task {id} to finish"),
            Duration::from_secs(30),
            || async {
                let v = get(a, &task_path(id)).await.json();
                matches!(v["status"].as_str(), Some("completed" | "failed")).then_some(())
            },
        )
        .await;
    }

    let v = get(a, "/api/absurd/queues/work/stats").await.json();
    assert_eq!(v["queue_name"], "work");
    assert_eq!(v["completed"], 5, "{v}");
    assert_eq!(v["failed"], 2);
    assert_eq!(v["pending"], 0);
    assert_eq!(v["claimed"], 0);
    assert_eq!(v["total"], 7);
    assert_eq!(v["oldest_pending_age_seconds"], Value::Null);
    assert_eq!(v["throughput"]["completed_last_1m"], 5);
    assert_eq!(v["throughput"]["completed_last_15m"], 5);

    let t = get(a, &task_path(&ids[0])).await.json();
    assert_eq!(t["status"], "completed");
    assert_eq!(t["result"], json!({"i": 0}));
    assert_eq!(t["worker_id"], "w-api");
    assert!(t["claimed_at"].is_string() && t["completed_at"].is_string());

    // The worker's counters, served by the same process. They are counted after the database
    // answers (a task is visible as finished a moment before its counters move), and
    // dead-lettering is asynchronous: wait until every expected line is there.
    let expected = [
        "absurd_tasks_dead_lettered_total{queue=\"work\",task_name=\"boom\"} 2\n",
        "absurd_tasks_spawned_total{queue=\"work\",task_name=\"echo\"} 5\n",
        "absurd_tasks_spawned_total{queue=\"work\",task_name=\"boom\"} 2\n",
        "absurd_tasks_claimed_total{queue=\"work\",task_name=\"echo\"} 5\n",
        "absurd_tasks_completed_total{queue=\"work\",task_name=\"echo\"} 5\n",
        "absurd_tasks_failed_total{queue=\"work\",task_name=\"boom\"} 2\n",
        "absurd_task_run_duration_seconds_count{queue=\"work\",task_name=\"echo\",outcome=\"completed\"} 5\n",
        "absurd_task_run_duration_seconds_bucket{queue=\"work\",task_name=\"boom\",outcome=\"failed\",le=\"+Inf\"} 2\n",
        "absurd_task_pickup_latency_seconds_count{queue=\"work\"} 7\n",
        "absurd_tasks_in_flight{queue=\"work\",task_name=\"echo\"} 0\n",
        "# TYPE absurd_sandbox_traps_total counter\n",
        "# TYPE absurd_subprocess_exits_total counter\n",
        "absurd_db_pool_max_connections{pool=\"api\"} 8\n",
        "absurd_db_pool_max_connections{pool=\"worker\"}",
    ];
    wait_for_ok(
        "the worker's counters for the workload",
        Duration::from_secs(20),
        || async {
            let r = get(a, "/metrics").await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.header("content-type"),
                Some("text/plain; version=0.0.4; charset=utf-8")
            );
            let text = r.text();
            let missing: Vec<&str> = expected
                .iter()
                .copied()
                .filter(|line| !text.contains(line))
                .collect();
            if missing.is_empty() {
                Ok(text)
            } else {
                Err(format!("the metrics lack {missing:?}:\n{text}"))
            }
        },
    )
    .await;
    let seed_path = get(a, "/api/absurd/metrics/prometheus").await;
    assert_eq!(seed_path.status, 200);
    assert!(seed_path
        .text()
        .contains("absurd_tasks_completed_total{queue=\"work\",task_name=\"echo\"} 5\n"));

    // Health: the worker is seen from its recent claims; the dead-letter queue is apart.
    let v = get(a, "/api/absurd/health/detailed").await.json();
    assert_eq!(v["status"], "healthy", "{v}");
    assert_eq!(v["queue_depth"], 0);
    assert_eq!(v["dead_letters_pending"], 2);
    assert_eq!(v["workers"]["ids"], json!(["w-api"]));
    let q: Vec<&str> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue_name"].as_str().unwrap())
        .collect();
    assert_eq!(q, vec!["work"]);
}

/// Claims the next run of `queue` as `worker` and fails it with `name`.
async fn fail_as(client: &Client, queue: &str, worker: &str, name: &str) {
    let run = client.claim(queue, worker, 60, 1).await.unwrap().remove(0);
    client
        .fail_run(
            queue,
            run.run_id,
            &json!({"name": name, "message": "injected"}),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn workers_and_throughput_after_a_known_workload() {
    let (db, client) = setup(&["work", "other"]).await;
    let config = temp_file("absurd-host.toml", CONFIG);
    let s = Server::start(
        &[
            "worker",
            "--database-url",
            &db.url,
            "--config",
            config.to_str().unwrap(),
            "--queue",
            "work",
            "--worker-id",
            "w-api",
            "--api",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let a = s.addr.as_str();
    // The real worker: two completions, a builtin failure and a timeout (one attempt each).
    let once = SpawnOptions {
        max_attempts: Some(1),
        retry_strategy: Some(RetryStrategy::none()),
        ..Default::default()
    };
    let mut ids = vec![];
    for (name, params) in [
        ("echo", json!({"i": 1})),
        ("echo", json!({"i": 2})),
        ("boom", json!({})),
        ("limited", json!({"seconds": 30})),
    ] {
        ids.push(
            client
                .spawn("work", name, &params, &once)
                .await
                .unwrap()
                .task_id,
        );
    }
    // Failures of other kinds, injected as another worker on another queue; one run left
    // running.
    for _ in 0..4 {
        client.spawn("other", "x", &json!({}), &once).await.unwrap();
    }
    fail_as(&client, "other", "w-fake", "$Trap").await;
    fail_as(&client, "other", "w-fake", "$OutOfFuel").await;
    fail_as(&client, "other", "w-fake", "$ProgramKilled").await;
    client.claim("other", "w-fake", 600, 1).await.unwrap();
    // A worker last seen two hours ago.
    let old = client.spawn("other", "x", &json!({}), &once).await.unwrap();
    let run = client
        .claim("other", "w-old", 60, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(run.task_id, old.task_id);
    client
        .complete_run("other", run.run_id, &json!({}))
        .await
        .unwrap();
    sqlx::query(
        "update absurd.\"r_other\" set started_at = started_at - interval '2 hours', \
         completed_at = completed_at - interval '2 hours' where claimed_by = 'w-old'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for id in &ids {
        wait_for(
            &format!("task {id} to finish"),
            Duration::from_secs(30),
            || async {
                let v = get(a, &task_path(&id.to_string())).await.json();
                matches!(v["status"].as_str(), Some("completed" | "failed")).then_some(())
            },
        )
        .await;
    }

    let v = get(a, "/api/absurd/workers").await.json();
    assert_eq!(v["minutes"], 60, "{v}");
    // The names behind each count, served from the host's one list (the dashboard shows them).
    for (field, category) in [
        ("sandbox_failures", FailureCategory::Sandbox),
        ("subprocess_failures", FailureCategory::Subprocess),
        ("timeouts", FailureCategory::Timeout),
    ] {
        let names: Vec<&str> = category.names().map(|n| n.as_str()).collect();
        assert_eq!(v["failure_names"][field], json!(names), "{field}: {v}");
    }
    assert!(
        v["failure_names"]["sandbox_failures"]
            .as_array()
            .unwrap()
            .contains(&json!("$NotGranted")),
        "{v}"
    );
    let workers = v["workers"].as_array().unwrap();
    let by_id = |id: &str| {
        workers
            .iter()
            .find(|w| w["worker_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    let w = by_id("w-api");
    assert_eq!(
        (
            &w["running"],
            &w["completed"],
            &w["failed"],
            &w["sandbox_failures"],
            &w["subprocess_failures"],
            &w["timeouts"]
        ),
        (
            &json!(0),
            &json!(2),
            &json!(2),
            &json!(0),
            &json!(0),
            &json!(1)
        ),
        "{w}"
    );
    let last_seen = chrono::DateTime::parse_from_rfc3339(w["last_seen"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - last_seen.to_utc())
            .num_seconds()
            .abs()
            < 120
    );
    let w = by_id("w-fake");
    assert_eq!(
        (
            &w["running"],
            &w["completed"],
            &w["failed"],
            &w["sandbox_failures"],
            &w["subprocess_failures"],
            &w["timeouts"]
        ),
        (
            &json!(1),
            &json!(0),
            &json!(3),
            &json!(2),
            &json!(1),
            &json!(0)
        ),
        "{w}"
    );
    assert_eq!(workers.len(), 2, "w-old is outside the last hour: {v}");
    let v = get(a, "/api/absurd/workers?minutes=180").await.json();
    let old = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_id"] == "w-old")
        .cloned()
        .unwrap_or_else(|| panic!("w-old missing: {v}"));
    assert_eq!(old["completed"], 1);
    assert_eq!(old["running"], 0);
    assert_eq!(
        v["workers"].as_array().unwrap().last().unwrap()["worker_id"],
        "w-old",
        "most recent first"
    );

    // Throughput: one zero-filled bucket per minute, oldest first, ending at this minute.
    let v = get(a, "/api/absurd/queues/work/throughput?minutes=5")
        .await
        .json();
    assert_eq!(v["queue_name"], "work");
    assert_eq!(v["minutes"], 5);
    let buckets = v["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 5, "{v}");
    let minutes: Vec<chrono::DateTime<chrono::Utc>> = buckets
        .iter()
        .map(|b| {
            chrono::DateTime::parse_from_rfc3339(b["minute"].as_str().unwrap())
                .unwrap()
                .to_utc()
        })
        .collect();
    for pair in minutes.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_seconds(), 60, "{v}");
    }
    assert_eq!(minutes[4].timestamp() % 60, 0);
    assert!((chrono::Utc::now() - minutes[4]).num_seconds() < 120);
    let sum = |v: &Value, f: &str| {
        v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[f].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((sum(&v, "completed"), sum(&v, "failed")), (2, 2), "{v}");
    let v = get(a, "/api/absurd/queues/other/throughput").await.json();
    assert_eq!(v["minutes"], 60);
    assert_eq!(v["buckets"].as_array().unwrap().len(), 60);
    assert_eq!((sum(&v, "completed"), sum(&v, "failed")), (0, 3), "{v}");
    let v = get(a, "/api/absurd/queues/other/throughput?minutes=180")
        .await
        .json();
    assert_eq!(v["buckets"].as_array().unwrap().len(), 180);
    assert_eq!((sum(&v, "completed"), sum(&v, "failed")), (1, 3), "{v}");

    // Bad input.
    for path in [
        "/api/absurd/workers?minutes=0",
        "/api/absurd/workers?minutes=1441",
        "/api/absurd/workers?minutes=abc",
        "/api/absurd/queues/work/throughput?minutes=-1",
    ] {
        assert!(get(a, path).await.detail(400).contains("minutes"), "{path}");
    }
    assert!(get(a, "/api/absurd/queues/nope/throughput")
        .await
        .detail(404)
        .contains("nope"));
}

#[tokio::test]
async fn health_detailed_raises_the_seed_alerts() {
    let (db, client) = setup(&["stuck"]).await;
    let a = &in_process(&db);
    // A task pending for two hours with no worker: age alert, stall alert, no-worker alert.
    let id = client
        .spawn("stuck", "echo", &json!({}), &SpawnOptions::default())
        .await
        .unwrap()
        .task_id;
    sqlx::query(
        "update absurd.\"t_stuck\" set enqueue_at = now() - interval '2 hours' where task_id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    let r = get(a, "/api/absurd/health/detailed").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "critical", "{v}");
    let alerts: Vec<String> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        alerts.iter().any(|a| a.contains("Oldest pending task")),
        "{alerts:?}"
    );
    assert!(
        alerts.iter().any(|a| a.contains("No workers available")),
        "{alerts:?}"
    );
    assert!(
        alerts.iter().any(|a| a.contains("no task completed")),
        "{alerts:?}"
    );
    assert_eq!(v["alerts"][0]["level"], "alert");
    assert_eq!(v["worker_pool_healthy"], false);
}

#[tokio::test]
async fn a_token_is_required_off_loopback() {
    let (db, _client) = setup(&["jobs"]).await;
    // No token: refuses to start.
    let (mut cmd, log) = command(
        &["serve", "--database-url", &db.url, "--listen", "0.0.0.0:0"],
        &[],
    );
    let status = cmd.status().unwrap();
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{text}"
    );
    // The environment variable works as the flag does.
    let (mut cmd, _) = command(
        &["serve", "--database-url", &db.url],
        &[("ABSURD_API_LISTEN", "0.0.0.0:0")],
    );
    assert!(!cmd.status().unwrap().success());

    let s = Server::start(
        &["serve", "--database-url", &db.url, "--listen", "0.0.0.0:0"],
        &[("ABSURD_API_TOKEN", "s3cret")],
    );
    let a = s.addr.as_str();
    assert_eq!(
        get(a, "/api/absurd/health").await.status,
        200,
        "health needs no token"
    );
    for path in [
        "/api/absurd/queues",
        "/api/absurd/health/detailed",
        "/metrics",
        "/api/absurd/openapi.json",
        "/api/absurd/tasks",
    ] {
        let r = get(a, path).await;
        assert!(r.detail(401).contains("Not authenticated"), "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = request(a, "GET", path, &[("Authorization", "Bearer wrong")], None).await;
        assert_eq!(r.detail(401), "Invalid bearer token");
        let r = request(a, "GET", path, &[("Authorization", "Bearer s3cret")], None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let body = serde_json::to_vec(&json!({"queue_name": "jobs", "task_name": "echo"})).unwrap();
    let r = request(
        a,
        "POST",
        "/api/absurd/tasks",
        &[("Content-Type", "application/json")],
        Some(&body),
    )
    .await;
    r.detail(401);
    let r = request(
        a,
        "POST",
        "/api/absurd/tasks",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer s3cret"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn without_a_token_foreign_hosts_and_origins_are_refused() {
    let (db, _client) = setup(&["jobs"]).await;
    let a = &in_process(&db);
    // A request whose only Host is foreign (DNS rebinding).
    let r = request(
        a,
        "GET",
        "/api/absurd/queues",
        &[("Host", "evil.example:8080")],
        None,
    )
    .await;
    assert!(r.detail(403).contains("loopback"));
    for host in ["localhost:8080", "127.0.0.2", "[::1]:80"] {
        let r = request(a, "GET", "/api/absurd/queues", &[("Host", host)], None).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    let body = serde_json::to_vec(&json!({"queue_name": "jobs", "event_name": "e"})).unwrap();
    let r = request(
        a,
        "POST",
        "/api/absurd/events",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        Some(&body),
    )
    .await;
    assert!(r.detail(403).contains("cross-origin"));
    let origin = format!("http://{IN_PROCESS_HOST}");
    let r = request(
        a,
        "POST",
        "/api/absurd/events",
        &[("Content-Type", "application/json"), ("Origin", &origin)],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "same origin is fine: {}", r.text());
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes() {
    let (db, _client) = setup(&["jobs"]).await;
    let a = &in_process(&db);
    let r = get(a, "/api/absurd/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = absurd_host::api::openapi::operations(&doc);
    let mut routes: Vec<(String, String)> = absurd_host::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes, "router and document differ");
    // Each documented operation is served (not the 404/405 fallback), and a path that is not
    // documented is not.
    for (method, path) in &documented {
        let concrete = path
            .replace("{task_id}", &Uuid::now_v7().to_string())
            .replace("{queue_name}", "jobs")
            .replace("{worker_id}", "w-1");
        let body = (method == "POST").then_some(&b"{}"[..]);
        let r = request(
            a,
            method,
            &concrete,
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
        assert!(r.status != 405, "{method} {path}: {}", r.text());
        if r.status == 404 {
            assert_ne!(
                r.json()["detail"],
                "Not Found",
                "{method} {path} fell through to the fallback"
            );
        }
    }
    assert_eq!(
        get(a, "/api/absurd/nothing-here").await.detail(404),
        "Not Found"
    );
}

#[tokio::test]
async fn health_turns_down_when_postgres_stops_and_back_when_it_returns() {
    let dir = std::env::temp_dir().join(format!("absurd-api-pg-{}", Uuid::new_v4().simple()));
    let pg = absurd_host::embedded::EmbeddedPostgres::start(&dir)
        .expect("start an embedded PostgreSQL for the outage test");
    let url = pg.url();
    let pool = absurd_client::db::connect(&url, 2).await.unwrap();
    absurd_client::db::migrate(&pool).await.unwrap();
    Client::new(pool.clone())
        .create_queue("jobs")
        .await
        .unwrap();
    pool.close().await;

    let s = Server::serve(&url);
    let a = s.addr.as_str();
    let v = get(a, "/api/absurd/health/detailed").await.json();
    assert_eq!(v["status"], "healthy", "{v}");

    // Blocking calls are fine here: the server is another process.
    pg.stop_now().expect("stop PostgreSQL");
    let v = wait_for("health to be down", Duration::from_secs(30), || async {
        let r = get(a, "/api/absurd/health/detailed").await;
        (r.status == 503).then(|| r.json())
    })
    .await;
    assert_eq!(v["status"], "down");
    assert_eq!(v["database_available"], false);
    assert_eq!(v["alerts"][0]["level"], "alert");
    // The cheap health still answers; database routes answer 503 in the error shape.
    assert_eq!(
        get(a, "/api/absurd/health").await.json()["status"],
        "healthy"
    );
    assert!(get(a, "/api/absurd/queues")
        .await
        .detail(503)
        .contains("Database unavailable"));
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "jobs", "task_name": "echo"}),
    )
    .await;
    r.detail(503);

    pg.start_again().expect("restart PostgreSQL");
    let v = wait_for(
        "health to be healthy again",
        Duration::from_secs(30),
        || async {
            let r = get(a, "/api/absurd/health/detailed").await;
            (r.status == 200).then(|| r.json())
        },
    )
    .await;
    assert_eq!(v["status"], "healthy", "{v}");
    assert_eq!(get(a, "/api/absurd/queues").await.json(), json!(["jobs"]));
    drop(s);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_cli_reaches_every_api_operation() {
    // Each API operation has a CLI command (the same client library underneath).
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} --help failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let task = help(&["task"]);
    for cmd in ["spawn", "get", "list", "cancel", "retry", "result"] {
        assert!(task.contains(cmd), "task {cmd} missing:\n{task}");
    }
    let queue = help(&["queue"]);
    for cmd in ["list", "stats"] {
        assert!(queue.contains(cmd), "queue {cmd} missing:\n{queue}");
    }
    assert!(help(&["event"]).contains("emit"));
    assert!(help(&[]).contains("health"));
    assert!(help(&["serve"]).contains("--listen"));
    assert!(help(&["worker"]).contains("--api"));

    // `queue stats` without a queue and `health` against a real database.
    let (db, client) = setup(&["jobs"]).await;
    client
        .spawn("jobs", "echo", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .args(args)
            .args(["--database-url", &db.url, "--json"])
            .env_remove("ABSURD_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&["queue", "stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["queue_name"], "jobs");
    assert_eq!(v[0]["pending"], 1);
    let out = run(&["health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["queue_depth"], 1);
}

/// The seed's finished tasks, kept by `migrate --adopt-seed`, are listed read-only under
/// `/seed/tasks` with the seed's fields; its unfinished ones are ordinary tasks under `/tasks`.
#[tokio::test]
async fn adopted_seed_history_is_listed_with_the_seeds_fields() {
    use common::seed_task;
    // Before any adoption (and on a database that never held the seed): empty, not an error.
    let plain = TestDb::migrated().await;
    let r = get(&in_process(&plain), "/api/absurd/seed/tasks").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 0);

    let db = TestDb::seed().await;
    let p = &db.pool;
    let done = seed_task(
        p,
        "q1",
        "calibration-solve",
        json!({"n": 1}),
        3,
        Some(60),
        "completed",
        1,
        Some(json!({"status": "success", "outputs": {"cal": "/data/x.cal"}})),
        None,
    )
    .await;
    let failed = seed_task(
        p,
        "q1",
        "imaging",
        json!({"n": 2}),
        0,
        None,
        "failed",
        2,
        None,
        Some("Validation failed: MS not found"),
    )
    .await;
    seed_task(
        p,
        "q2",
        "imaging",
        json!({"n": 3}),
        0,
        None,
        "cancelled",
        0,
        None,
        None,
    )
    .await;
    let waiting = seed_task(
        p,
        "q1",
        "imaging",
        json!({"n": 4}),
        0,
        None,
        "pending",
        0,
        None,
        None,
    )
    .await;
    let report = absurd_client::seed::adopt(p, &RetryStrategy::none(), false)
        .await
        .unwrap();
    assert_eq!((report.carried_total, report.history_copied), (1, 3));
    let a = &in_process(&db);

    let list = get(a, "/api/absurd/seed/tasks").await.json();
    assert_eq!(list["total"], 3, "{list}");
    assert_eq!(
        (list["limit"].as_i64(), list["offset"].as_i64()),
        (Some(100), Some(0))
    );
    let tasks = list["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    // Newest first (the seed's creation order), without result and error.
    assert_eq!(tasks[2]["task_id"], json!(done));
    assert!(tasks
        .iter()
        .all(|t| t["result"].is_null() && t["error"].is_null()));
    assert_eq!(tasks[2]["status"], "completed");
    assert_eq!(tasks[2]["priority"], 3);
    assert_eq!(tasks[2]["timeout_sec"], 60);
    assert_eq!(tasks[2]["worker_id"], "seed-worker-1");
    // Filters.
    let l = get(a, "/api/absurd/seed/tasks?status=failed").await.json();
    assert_eq!(l["total"], 1);
    assert_eq!(l["tasks"][0]["task_id"], json!(failed));
    assert_eq!(l["tasks"][0]["retry_count"], 1);
    assert_eq!(
        get(a, "/api/absurd/seed/tasks?queue_name=q2").await.json()["total"],
        1
    );
    let l = get(a, "/api/absurd/seed/tasks?limit=1&offset=1")
        .await
        .json();
    assert_eq!(
        (l["total"].as_i64(), l["tasks"].as_array().unwrap().len()),
        (Some(3), 1)
    );
    // One, with its result and error.
    let t = get(a, &format!("/api/absurd/seed/tasks/{done}"))
        .await
        .json();
    assert_eq!(t["result"]["outputs"]["cal"], "/data/x.cal");
    assert_eq!(t["execution_time_sec"], 600.0);
    let t = get(a, &format!("/api/absurd/seed/tasks/{failed}"))
        .await
        .json();
    assert_eq!(t["error"], "Validation failed: MS not found");
    // The unfinished one is an Absurd task now, not history.
    assert_eq!(
        get(a, &format!("/api/absurd/seed/tasks/{waiting}"))
            .await
            .detail(404),
        format!("Seed task {waiting} not found")
    );
    let l = get(a, "/api/absurd/tasks?queue_name=q1").await.json();
    assert_eq!(l["total"], 1);
    assert_eq!(l["tasks"][0]["task_name"], "imaging");
    // Bad input names the value.
    for (path, expected) in [
        (
            "/api/absurd/seed/tasks?status=pending",
            "\"pending\" is not a finished seed state",
        ),
        (
            "/api/absurd/seed/tasks?limit=0",
            "limit must be an integer between 1 and 1000, got 0",
        ),
        (
            "/api/absurd/seed/tasks?offset=-1",
            "offset must be an integer between 0 and 1000000, got -1",
        ),
        (
            "/api/absurd/seed/tasks/nope",
            "task_id \"nope\" is not a valid UUID",
        ),
    ] {
        let d = get(a, path).await.detail(400);
        assert!(d.contains(expected), "{path}: {d}");
    }
}

/// A bounded schemathesis run against the served document, when schemathesis is installed
/// in the test virtualenv (`scripts/setup-python` installs it), with every check: no 5xx, and
/// every response's status code, content type, headers and body schema as documented; input
/// the document forbids is refused and input it allows is accepted. Its stateful phase follows
/// the links it infers (spawn a task, then get, cancel and retry it).
///
/// One check is left out, `use_after_free` ("a deleted resource is 404 afterwards"): `DELETE
/// /tasks/{task_id}` cancels the task, which stays readable with `status: cancelled`, as in the
/// DSA-110 pipeline's API.
#[tokio::test]
async fn schemathesis_checks_every_response_against_the_document() {
    let st = common::venv().join("bin").join("schemathesis");
    if !st.exists() {
        eprintln!(
            "skipped: {} is not installed (run scripts/setup-python)",
            st.display()
        );
        return;
    }
    let (db, _client) = setup(&["dsa110-pipeline"]).await;
    let s = Server::serve(&db.url);
    // Strings are generated in ASCII. A queue name's limit is 57 bytes of UTF-8 (Absurd's
    // `validate_queue_name`), which JSON Schema cannot state: the document's `maxLength` counts
    // characters, so a schema-valid name of 57 multibyte characters is refused with a 400 (the
    // request test above checks that refusal and its message). In ASCII the two agree. The
    // price: schemathesis sends no non-ASCII text; the request tests send it where it matters
    // (names, params, event payloads).
    //
    // The workflow routes refuse, with a 400 naming the field, DAGs that no JSON Schema can
    // rule out: a dependency that is not a node, a repeated id, a cycle (and a group whose id
    // is not a time without `observed_at`). Everything else about them is checked as usual.
    let cwd = common::temp_dir();
    std::fs::write(
        cwd.join("schemathesis.toml"),
        "generation.codec = \"ascii\"\n\
         \n\
         [[operations]]\n\
         include-operation-id = [\"startWorkflow\", \"spawnTasksWithDeps\", \"submitGroup\"]\n\
         checks.positive_data_acceptance.expected-statuses = [\"2xx\", 400, 404]\n",
    )
    .unwrap();
    let out = Command::new(&st)
        .args(["run", &format!("http://{}/api/absurd/openapi.json", s.addr)])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "use_after_free",
            "--max-examples",
            "30",
            "--url",
        ])
        .arg(format!("http://{}", s.addr))
        // It writes a cache directory (.schemathesis) into its working directory, and reads
        // schemathesis.toml from it.
        .current_dir(&cwd)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // It tested every operation it loaded.
    let figure = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
    };
    let selected = figure("Selected:");
    let (n, total) = selected.split_once('/').expect("Selected: N/M");
    assert_eq!(n, total, "{stdout}");
    assert_eq!(figure("Tested:"), n, "{stdout}");
}

/// Database text that must never reach a client in a 5xx body.
fn assert_no_database_text(body: &str, also: &[&str]) {
    let lower = body.to_ascii_lowercase();
    for t in [
        "error returned from database",
        "canceling statement",
        "sqlstate",
        "does not exist",
        "relation",
        "column",
        "absurd.",
        "select ",
        "pool timed out",
        "connection refused",
    ]
    .iter()
    .chain(also)
    {
        assert!(
            !lower.contains(&t.to_ascii_lowercase()),
            "database text {t:?} in the response: {body}"
        );
    }
}

/// The id of a `... (see the server log, id <id>)` detail.
fn error_id(detail: &str) -> String {
    let id = detail
        .split("id ")
        .last()
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no error id in {detail:?}"));
    assert!(
        id.len() >= 8 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{detail}"
    );
    id.to_string()
}

/// Issue #14 part 7: every API query runs under a `statement_timeout`. A request stuck behind
/// a lock (here: a test holding ACCESS EXCLUSIVE on the queue's task table) is cancelled by
/// PostgreSQL and answers 503 quickly, with no database text; the log has the detail.
#[tokio::test]
async fn api_queries_have_a_statement_timeout_and_503_without_database_text() {
    let (db, _client) = setup(&["jobs"]).await;
    let s = Server::start(
        &[
            "serve",
            "--database-url",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        &[("ABSURD_API_STATEMENT_TIMEOUT", "0.5")],
    );
    let a = s.addr.as_str();
    // Open a connection first, so the lock below is the only thing in the way.
    assert_eq!(get(a, "/api/absurd/queues").await.status, 200);

    let mut locker = db.pool.begin().await.unwrap();
    sqlx::raw_sql("lock table absurd.\"t_jobs\" in access exclusive mode")
        .execute(&mut *locker)
        .await
        .unwrap();
    let t0 = Instant::now();
    // Without a statement timeout the request waits for the lock: give up after 20 s.
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        get(a, "/api/absurd/tasks?queue_name=jobs"),
    )
    .await
    .expect("the API request was not cut off by a statement timeout");
    let took = t0.elapsed();
    let detail = r.detail(503);
    assert!(detail.starts_with("Database busy"), "{detail}");
    assert!(took < Duration::from_secs(15), "503 after {took:?}");
    assert_no_database_text(&r.text(), &["t_jobs", "lock"]);
    let id = error_id(&detail);
    // The detail is in the server log, under the same id.
    let log = wait_for("the error in the log", Duration::from_secs(10), || async {
        let log = s.log_text();
        log.contains(&id).then_some(log)
    })
    .await;
    let line = log.lines().find(|l| l.contains(&id)).unwrap();
    assert!(line.contains("canceling statement"), "{line}");
    locker.rollback().await.unwrap();

    // Once the lock is gone the same request works on the same pool.
    assert_eq!(
        get(a, "/api/absurd/tasks?queue_name=jobs").await.status,
        200
    );
}

/// Issue #14 part 7: a database error behind an API request (a queue table whose column was
/// renamed under the API) answers 500 with an id, never the database's message; the schema
/// missing and the database unreachable answer 503 without it too.
#[tokio::test]
async fn api_5xx_responses_carry_no_database_text() {
    let (db, client) = setup(&["jobs"]).await;
    client
        .spawn("jobs", "echo", &json!({"k": 1}), &SpawnOptions::default())
        .await
        .unwrap();
    let s = Server::serve(&db.url);
    let a = s.addr.as_str();
    assert_eq!(
        get(a, "/api/absurd/tasks?queue_name=jobs").await.status,
        200
    );

    sqlx::raw_sql("alter table absurd.\"t_jobs\" rename column params to params_gone")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = get(a, "/api/absurd/tasks?queue_name=jobs").await;
    let detail = r.detail(500);
    assert!(detail.starts_with("internal error"), "{detail}");
    assert_no_database_text(&r.text(), &["params", "t_jobs"]);
    let id = error_id(&detail);
    let log = wait_for("the error in the log", Duration::from_secs(10), || async {
        let log = s.log_text();
        log.contains(&id).then_some(log)
    })
    .await;
    let line = log.lines().find(|l| l.contains(&id)).unwrap();
    assert!(line.contains("params"), "the log has the detail: {line}");

    // No schema at all: 503, without the driver's text.
    sqlx::raw_sql("drop schema absurd cascade")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = get(a, "/api/absurd/queues").await;
    let detail = r.detail(503);
    assert!(
        detail.starts_with("the database has no absurd schema"),
        "{detail}"
    );
    assert_no_database_text(&r.text(), &["schema \"absurd\"", "function"]);
    drop(s);

    // An unreachable database: 503 "Database unavailable", without the driver's text.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = Server::serve(&format!("postgresql://nobody@127.0.0.1:{port}/none"));
    let a = s.addr.as_str();
    for path in ["/api/absurd/queues", "/api/absurd/tasks?queue_name=jobs"] {
        let r = get(a, path).await;
        let detail = r.detail(503);
        assert!(detail.starts_with("Database unavailable"), "{detail}");
        assert_no_database_text(&r.text(), &["os error", &format!("127.0.0.1:{port}")]);
        error_id(&detail);
    }
    let r = get(a, "/api/absurd/health/detailed").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_no_database_text(&r.text(), &["os error", &format!("127.0.0.1:{port}")]);
}

// ---- the seed's contract (issue 17, part 1) ----------------------------------------------------

/// The keys of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn assert_has_keys(v: &Value, wanted: &[&str]) {
    let have = keys(v);
    for k in wanted {
        assert!(have.iter().any(|h| h == k), "no {k:?} in {v}");
    }
}

/// The 25 fields of the seed's `GET /metrics`.
const SEED_METRICS: [&str; 25] = [
    "total_spawned",
    "total_claimed",
    "total_completed",
    "total_failed",
    "total_cancelled",
    "total_timed_out",
    "current_pending",
    "current_claimed",
    "avg_wait_time_sec",
    "avg_execution_time_sec",
    "p50_wait_time_sec",
    "p95_wait_time_sec",
    "p99_wait_time_sec",
    "p50_execution_time_sec",
    "p95_execution_time_sec",
    "p99_execution_time_sec",
    "throughput_1min",
    "throughput_5min",
    "throughput_15min",
    "success_rate_1min",
    "success_rate_5min",
    "success_rate_15min",
    "error_rate_1min",
    "error_rate_5min",
    "error_rate_15min",
];

/// The requests of the seed's README, quick start and `test_absurd_connection.py`, as the
/// pipeline's clients send them, against `absurd-host serve` (a real process).
#[tokio::test]
async fn the_seeds_own_requests_get_the_seeds_answers() {
    let (db, _client) = setup(&["dsa110-pipeline"]).await;
    let s = Server::serve(&db.url);
    let a = &s.addr;

    // README: spawn_task(queue_name, task_name="calibrate", params={"ms_path": ...}).
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "dsa110-pipeline", "task_name": "calibrate",
                "params": {"ms_path": "/path/to/data.ms"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let calibrate = r.json()["task_id"].as_str().unwrap().to_string();
    // README: get_task(task_id) → task['status'].
    let t = get(a, &task_path(&calibrate)).await.json();
    assert_eq!(t["status"], "pending");
    assert_eq!(t["task_name"], "calibrate");
    assert_eq!(t["params"], json!({"ms_path": "/path/to/data.ms"}));
    assert_eq!(t["priority"], 0);
    assert_eq!(t["claimed_at"], Value::Null);
    assert_eq!(t["completed_at"], Value::Null);
    assert_has_keys(
        &t,
        &[
            "task_id",
            "queue_name",
            "task_name",
            "params",
            "priority",
            "status",
            "created_at",
            "claimed_at",
            "completed_at",
            "result",
            "error",
            "retry_count",
        ],
    );

    // The quick start: "calibrate" with priority 5 (accepted, with a warning).
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "dsa110-pipeline", "task_name": "calibrate",
                "params": {"ms_path": "/data/b.ms"}, "priority": 5}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["warnings"][0]
        .as_str()
        .unwrap()
        .contains("priority"));

    // test_absurd_connection.py: spawn, get, list (limit 5), queue stats.
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "dsa110-pipeline", "task_name": "test-connection",
                "params": {"message": "Hello from Absurd!", "timestamp": "now"}, "priority": 0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("warnings").is_none(), "{}", r.text());
    let probe = r.json()["task_id"].as_str().unwrap().to_string();
    assert_eq!(get(a, &task_path(&probe)).await.json()["status"], "pending");
    let list = get(a, "/api/absurd/tasks?queue_name=dsa110-pipeline&limit=5")
        .await
        .json();
    assert_eq!(list["total"], 3);
    let first = &list["tasks"][0];
    assert_eq!(first["task_id"], probe.as_str(), "newest first: {list}");
    assert_eq!(
        first["params"],
        json!({"message": "Hello from Absurd!", "timestamp": "now"})
    );
    for item in list["tasks"].as_array().unwrap() {
        assert_has_keys(
            item,
            &[
                "params",
                "priority",
                "claimed_at",
                "completed_at",
                "result",
                "error",
            ],
        );
    }
    let stats = get(a, "/api/absurd/queues/dsa110-pipeline/stats")
        .await
        .json();
    assert_has_keys(
        &stats,
        &[
            "queue_name",
            "pending",
            "claimed",
            "completed",
            "failed",
            "cancelled",
            "total",
        ],
    );
    assert_eq!((&stats["pending"], &stats["total"]), (&json!(3), &json!(3)));

    // README: DELETE /tasks/{task_id}.
    let r = delete(a, &task_path(&probe)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"], format!("Task {probe} cancelled"));

    // README: health.
    let h = get(a, "/api/absurd/health").await.json();
    assert_eq!(
        (&h["status"], &h["message"], &h["queue"]),
        (
            &json!("healthy"),
            &json!("Absurd is operational"),
            &json!("dsa110-pipeline")
        )
    );

    // The seed's extra routes.
    assert!(get(a, "/api/absurd/queues")
        .await
        .json()
        .as_array()
        .unwrap()
        .contains(&json!("dsa110-pipeline")));
    assert_has_keys(
        &get(a, "/api/absurd/queues/stats").await.json()[0],
        &["queue_name", "pending", "claimed", "total"],
    );
    assert_has_keys(
        &get(a, "/api/absurd/health/detailed").await.json(),
        &[
            "status",
            "message",
            "queue_depth",
            "database_available",
            "worker_pool_healthy",
            "alerts",
            "warnings",
        ],
    );
    let m = get(a, "/api/absurd/metrics").await;
    assert_eq!(m.status, 200, "{}", m.text());
    let m = m.json();
    for f in SEED_METRICS {
        assert!(m[f].is_number(), "{f} in {m}");
    }
    assert_eq!(m["total_spawned"], 3);
    assert_eq!(m["current_pending"], 2);
    assert_eq!(m["total_cancelled"], 1);
    let r = post_json(
        a,
        &format!("/api/absurd/workers/py-worker-1/heartbeat?task_id={calibrate}"),
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"status": "ok", "worker_id": "py-worker-1"})
    );
    let w = get(a, "/api/absurd/workers").await.json();
    assert_has_keys(
        &w,
        &["workers", "total", "active", "idle", "stale", "crashed"],
    );
    assert_has_keys(
        &w["workers"][0],
        &[
            "worker_id",
            "state",
            "task_count",
            "current_task_id",
            "first_seen",
            "last_seen",
            "uptime_seconds",
        ],
    );
    assert_eq!(w["workers"][0]["worker_id"], "py-worker-1");
    assert_eq!(w["workers"][0]["state"], "active");
    assert_eq!(w["workers"][0]["current_task_id"], calibrate.as_str());
    assert_eq!((&w["total"], &w["active"]), (&json!(1), &json!(1)));
    let wm = get(a, "/api/absurd/workers/metrics").await.json();
    assert_has_keys(
        &wm,
        &[
            "total_workers",
            "active_workers",
            "idle_workers",
            "crashed_workers",
            "timed_out_workers",
            "avg_tasks_per_worker",
            "avg_worker_uptime_sec",
        ],
    );
    assert_eq!(wm["total_workers"], 1);
    let p = get(a, "/api/absurd/metrics/prometheus").await;
    assert_eq!(p.status, 200);
    assert!(p.header("content-type").unwrap().contains("version=0.0.4"));
    let text = p.text();
    for line in [
        "absurd_tasks_total{status=\"spawned\"} 3\n",
        "absurd_tasks_total{status=\"cancelled\"} 1\n",
        "absurd_tasks_current{status=\"pending\"} 2\n",
        "absurd_tasks_current{status=\"claimed\"} 0\n",
        "absurd_wait_time_seconds{quantile=\"0.95\"} ",
        "absurd_execution_time_seconds{quantile=\"0.5\"} ",
        "absurd_throughput_per_minute{window=\"5m\"} 0",
        "absurd_success_rate{window=\"1m\"} 1",
        "absurd_error_rate{window=\"15m\"} 0",
        "absurd_task_metrics_up 1\n",
        // Ours are still there.
        "# TYPE absurd_tasks_spawned_total counter\n",
    ] {
        assert!(text.contains(line), "lacks {line:?}:\n{text}");
    }
    // The bare /metrics stays process-only.
    assert!(!get(a, "/metrics")
        .await
        .text()
        .contains("absurd_tasks_current"));
}

/// `status=claimed` is `running`, `status=retrying` the tasks waiting for their next attempt;
/// list items carry the last run's times and worker, and small params.
#[tokio::test]
async fn listing_speaks_the_seeds_states_and_fields() {
    let (db, client) = setup(&["q"]).await;
    let a = &in_process(&db);
    let spawn = |name: &'static str, strategy: RetryStrategy| {
        let client = client.clone();
        async move {
            client
                .spawn(
                    "q",
                    name,
                    &json!({"name": name}),
                    &SpawnOptions {
                        max_attempts: Some(3),
                        retry_strategy: Some(strategy),
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .task_id
        }
    };
    let claim_one = |expected: Uuid| {
        let client = client.clone();
        async move {
            let run = client.claim("q", "w-test", 60, 1).await.unwrap().remove(0);
            assert_eq!(run.task_id, expected);
            run
        }
    };
    // Done: completed. Busy: running. Again: failed once, retry now (pending, attempt 2, not
    // started). Later: failed once, retry in an hour (sleeping, attempt 2). Fresh: pending,
    // attempt 1.
    let done = spawn("done", RetryStrategy::none()).await;
    let run = claim_one(done).await;
    client
        .complete_run("q", run.run_id, &json!({"ok": true}))
        .await
        .unwrap();
    let busy = spawn("busy", RetryStrategy::none()).await;
    claim_one(busy).await;
    let again = spawn("again", RetryStrategy::fixed(0.0)).await;
    let later = spawn("later", RetryStrategy::fixed(3600.0)).await;
    let runs = client.claim("q", "w-test", 60, 2).await.unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert!([again, later].contains(&run.task_id));
        client
            .fail_run(
                "q",
                run.run_id,
                &json!({"name": "Boom", "message": "x"}),
                None,
            )
            .await
            .unwrap();
    }
    let fresh = spawn("fresh", RetryStrategy::none()).await;

    let ids = |path: &str| {
        let path = path.to_string();
        async move {
            let r = get(a, &path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let v = r.json();
            let mut got: Vec<Uuid> = v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().parse().unwrap())
                .collect();
            got.sort();
            assert_eq!(v["total"], got.len(), "{path}: {v}");
            got
        }
    };
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };
    assert_eq!(ids("/api/absurd/tasks?status=claimed").await, vec![busy]);
    assert_eq!(
        ids("/api/absurd/tasks?status=claimed").await,
        ids("/api/absurd/tasks?status=running").await
    );
    assert_eq!(
        ids("/api/absurd/tasks?status=retrying").await,
        sorted(vec![again, later])
    );
    assert_eq!(
        ids("/api/absurd/tasks?status=retrying&queue_name=q&task_name=later").await,
        vec![later]
    );
    assert_eq!(
        ids("/api/absurd/tasks?status=pending").await,
        sorted(vec![again, fresh])
    );
    assert_eq!(ids("/api/absurd/tasks?status=sleeping").await, vec![later]);
    let d = get(a, "/api/absurd/tasks?status=done").await.detail(400);
    assert!(
        d.contains("status") && d.contains("claimed") && d.contains("retrying"),
        "{d}"
    );

    // The fields of list items: the last run's times and worker.
    let list = get(a, "/api/absurd/tasks?queue_name=q").await.json();
    let item = |id: Uuid| {
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task_id"] == id.to_string())
            .cloned()
            .unwrap()
    };
    let d = item(done);
    assert!(
        d["claimed_at"].is_string() && d["completed_at"].is_string(),
        "{d}"
    );
    assert_eq!(d["worker_id"], "w-test");
    assert_eq!(d["params"], json!({"name": "done"}));
    assert_eq!(d["priority"], 0);
    assert_eq!(d["result"], Value::Null, "results stay out of listings");
    let b = item(busy);
    assert!(
        b["claimed_at"].is_string() && b["completed_at"].is_null(),
        "{b}"
    );
    let l = item(later);
    // Its current attempt has not started.
    assert!(l["claimed_at"].is_null() && l["worker_id"].is_null(), "{l}");
    assert_eq!(l["attempts"], 2);
    // The task page agrees with the listing.
    let page = get(a, &task_path(&done.to_string())).await.json();
    for f in [
        "claimed_at",
        "completed_at",
        "worker_id",
        "params",
        "priority",
    ] {
        assert_eq!(page[f], d[f], "{f}");
    }

    // Params over 16 KiB are left out of listings, with their size.
    let big = "x".repeat(20_000);
    let id = client
        .spawn("q", "big", &json!({"blob": big}), &SpawnOptions::default())
        .await
        .unwrap()
        .task_id;
    let v = get(a, "/api/absurd/tasks?task_name=big").await.json();
    let t = &v["tasks"][0];
    assert_eq!(t["params"], Value::Null, "{t}");
    assert!(t["params_bytes"].as_i64().unwrap() > 20_000, "{t}");
    assert_eq!(
        get(a, &task_path(&id.to_string())).await.json()["params"]["blob"]
            .as_str()
            .unwrap()
            .len(),
        20_000
    );
    assert!(item(done).get("params_bytes").is_none());
}

/// `GET /metrics` from a known set of runs: counts, rates, and percentiles over known times.
#[tokio::test]
async fn task_metrics_are_computed_from_the_queue_tables() {
    let (db, client) = setup(&["m", "other"]).await;
    let a = &in_process(&db);
    let opts = SpawnOptions {
        max_attempts: Some(1),
        ..Default::default()
    };
    // Three completed runs, one failed for the time limit, one pending; one task elsewhere.
    let mut finished = vec![];
    for i in 0..3 {
        let id = client
            .spawn("m", "work", &json!({"i": i}), &opts)
            .await
            .unwrap()
            .task_id;
        let run = client.claim("m", "w-m", 60, 1).await.unwrap().remove(0);
        assert_eq!(run.task_id, id);
        client
            .complete_run("m", run.run_id, &json!({}))
            .await
            .unwrap();
        finished.push(run.run_id);
    }
    client.spawn("m", "slow", &json!({}), &opts).await.unwrap();
    let run = client.claim("m", "w-m", 60, 1).await.unwrap().remove(0);
    client
        .fail_run(
            "m",
            run.run_id,
            &json!({"name": "$Timeout", "message": "timed out"}),
            None,
        )
        .await
        .unwrap();
    client.spawn("m", "work", &json!({}), &opts).await.unwrap();
    client
        .spawn("other", "work", &json!({}), &opts)
        .await
        .unwrap();
    // Known times: the three completed runs waited 1, 2 and 3 s and ran 10, 20 and 30 s; the
    // failed one waited 4 s and ran 40 s.
    let mut all = finished.clone();
    all.push(run.run_id);
    for (i, run_id) in all.iter().enumerate() {
        let n = (i + 1) as f64;
        sqlx::query(
            "update absurd.\"r_m\" set
               created_at = now() - make_interval(secs => 200),
               started_at = now() - make_interval(secs => 200 - $2),
               completed_at = case when state = 'completed' then now() - make_interval(secs => 200 - $2 - 10 * $2) end,
               failed_at = case when state = 'failed' then now() - make_interval(secs => 200 - $2 - 10 * $2) end
             where run_id = $1",
        )
        .bind(run_id)
        .bind(n)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let m = get(a, "/api/absurd/metrics?queue_name=m").await;
    assert_eq!(m.status, 200, "{}", m.text());
    let m = m.json();
    let f = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} in {m}"));
    assert_eq!(m["queue_name"], "m");
    assert_eq!(
        (
            f("total_spawned"),
            f("total_claimed"),
            f("total_completed"),
            f("total_failed"),
            f("total_timed_out"),
            f("current_pending"),
            f("current_claimed"),
        ),
        (5.0, 4.0, 3.0, 1.0, 1.0, 1.0, 0.0),
        "{m}"
    );
    assert_eq!((f("wait_samples"), f("execution_samples")), (4.0, 4.0));
    let close = |k: &str, want: f64| {
        assert!(
            (f(k) - want).abs() < 1e-6,
            "{k} = {}, want {want}: {m}",
            f(k)
        );
    };
    close("avg_wait_time_sec", 2.5);
    close("p50_wait_time_sec", 2.5);
    close("p95_wait_time_sec", 3.85);
    close("avg_execution_time_sec", 25.0);
    close("p50_execution_time_sec", 25.0);
    close("p99_execution_time_sec", 39.7);
    // The runs finished 189, 178, 167 and 156 s ago: all in the last 5 minutes, none in the
    // last one.
    close("throughput_1min", 0.0);
    close("throughput_5min", 3.0 / 300.0);
    close("throughput_15min", 3.0 / 900.0);
    close("success_rate_1min", 1.0);
    close("success_rate_5min", 0.75);
    close("error_rate_1min", 0.0);
    close("error_rate_15min", 0.25);
    // Every queue: the other queue's task is counted too.
    let all = get(a, "/api/absurd/metrics").await.json();
    assert_eq!(all["total_spawned"], 6);
    assert_eq!(all["queue_name"], Value::Null);
    assert!(get(a, "/api/absurd/metrics?queue_name=nope")
        .await
        .detail(404)
        .contains("nope"));
    assert!(get(a, "/api/absurd/metrics?queue_name=")
        .await
        .detail(400)
        .contains("queue_name"));
    let text = get(a, "/api/absurd/metrics/prometheus").await.text();
    for line in [
        "absurd_tasks_total{status=\"timed_out\"} 1\n",
        "absurd_tasks_total{status=\"completed\"} 3\n",
        "absurd_throughput_per_minute{window=\"5m\"} 0.6\n",
        "absurd_success_rate{window=\"5m\"} 0.75\n",
        "absurd_execution_time_seconds{quantile=\"0.5\"} 25.0\n",
        "absurd_wait_time_seconds_avg 2.5\n",
    ] {
        assert!(text.contains(line), "lacks {line:?}:\n{text}");
    }
}

/// Heartbeats register external workers; states follow the seed's thresholds; the table is
/// bounded; health applies the seed's worker checks while tasks wait.
#[tokio::test]
async fn heartbeats_register_workers_with_the_seeds_states_and_bounds() {
    let (db, client) = setup(&["hb"]).await;
    let a = &in_process(&db);
    let beat = |id: &str, task: Option<Uuid>| {
        let path = match task {
            Some(t) => format!("/api/absurd/workers/{id}/heartbeat?task_id={t}"),
            None => format!("/api/absurd/workers/{id}/heartbeat"),
        };
        async move { request(a, "POST", &path, &[], None).await }
    };
    let t1 = Uuid::now_v7();
    let t2 = Uuid::now_v7();
    for task in [Some(t1), Some(t1), Some(t2), None] {
        let r = beat("py-1", task).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = beat("py-2", None).await;
    assert_eq!(r.json(), json!({"status": "ok", "worker_id": "py-2"}));
    let w = get(a, "/api/absurd/workers").await.json();
    let py1 = w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["worker_id"] == "py-1")
        .cloned()
        .unwrap();
    assert_eq!(py1["state"], "active");
    assert_eq!(py1["heartbeats"], 4);
    assert_eq!(py1["task_count"], 2, "two distinct tasks reported: {py1}");
    assert_eq!(
        py1["current_task_id"],
        Value::Null,
        "the last beat named none"
    );

    // States by the age of the last heartbeat: 30 s idle, 120 s stale, 600 s crashed.
    let age = |id: &'static str, secs: i32| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "update absurd.worker_heartbeats set last_seen = now() - make_interval(secs => $2),
                   first_seen = now() - interval '20 minutes' where worker_id = $1",
            )
            .bind(id)
            .bind(secs as f64)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    for (secs, state) in [
        (30, "idle"),
        (120, "stale"),
        (600, "crashed"),
        (5, "active"),
    ] {
        age("py-1", secs).await;
        age("py-2", 0).await;
        let w = get(a, "/api/absurd/workers").await.json();
        let py1 = w["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["worker_id"] == "py-1")
            .cloned()
            .unwrap();
        assert_eq!(py1["state"], state, "{secs} s: {w}");
        assert_eq!(w[state], if state == "active" { 2 } else { 1 }, "{w}");
    }
    age("py-2", 600).await;
    let wm = get(a, "/api/absurd/workers/metrics").await.json();
    assert_eq!(
        (
            &wm["total_workers"],
            &wm["active_workers"],
            &wm["crashed_workers"]
        ),
        (&json!(2), &json!(1), &json!(1)),
        "{wm}"
    );
    assert!(
        wm["avg_worker_uptime_sec"].as_f64().unwrap() > 500.0,
        "{wm}"
    );
    // Outside the window: not listed.
    age("py-2", 7200).await;
    assert_eq!(get(a, "/api/absurd/workers").await.json()["total"], 1);

    // Bad input.
    let long = "w".repeat(256);
    let d = beat(&long, None).await.detail(400);
    assert!(d.contains("worker_id") && d.contains("255"), "{d}");
    let r = request(
        a,
        "POST",
        "/api/absurd/workers/py-1/heartbeat?task_id=nope",
        &[],
        None,
    )
    .await;
    assert!(r.detail(400).contains("task_id"));

    // The table is bounded: with 10,000 workers heard from lately a new one is refused,
    // naming the limit; a known one is still recorded; old ones are forgotten.
    sqlx::query(
        "insert into absurd.worker_heartbeats (worker_id, first_seen, last_seen)
         select 'filler-' || i, now(), now() from generate_series(1, 10000 - 2) i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let d = beat("one-too-many", None).await.detail(429);
    assert!(d.contains("10000") && d.contains("one-too-many"), "{d}");
    assert_eq!(beat("py-1", None).await.status, 200);
    sqlx::query("update absurd.worker_heartbeats set last_seen = now() - interval '2 days' where worker_id like 'filler-%'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(beat("one-too-many", None).await.status, 200);
    let left: i64 = sqlx::query_scalar("select count(*) from absurd.worker_heartbeats")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 3, "py-1, py-2 and the new one");

    // Health: tasks pending for two minutes and no worker active → the seed's alert.
    sqlx::query("update absurd.worker_heartbeats set last_seen = now() - interval '10 minutes'")
        .execute(&db.pool)
        .await
        .unwrap();
    let id = client
        .spawn("hb", "echo", &json!({}), &SpawnOptions::default())
        .await
        .unwrap()
        .task_id;
    sqlx::query(
        "update absurd.\"t_hb\" set enqueue_at = now() - interval '2 minutes' where task_id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    let v = get(a, "/api/absurd/health/detailed").await.json();
    assert_eq!(v["status"], "critical", "{v}");
    assert_eq!(v["worker_pool_healthy"], false);
    assert_eq!(
        v["worker_pool_message"],
        "No active workers (tasks pending)"
    );
    assert!(
        v["alerts"].as_array().unwrap().iter().any(|x| x["message"]
            .as_str()
            .unwrap()
            .starts_with("No active workers but tasks are pending")),
        "{v}"
    );
    assert_eq!(v["workers"]["registered"], 3);
    // One of three active (after the 2 s health cache): the seed's warning, not an alert.
    assert_eq!(beat("py-1", None).await.status, 200);
    tokio::time::sleep(absurd_host::api::health::CACHE_FOR).await;
    let v = get(a, "/api/absurd/health/detailed").await.json();
    assert_eq!(v["worker_pool_healthy"], true, "{v}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["message"]
                .as_str()
                .unwrap()
                .starts_with("Only 1/3 workers active")),
        "{v}"
    );
}

/// `ABSURD_ENABLED=false`: the seed's 503 on every route but health, which says `disabled`.
#[tokio::test]
async fn absurd_enabled_false_answers_as_the_seed() {
    let (db, _client) = setup(&["dsa110-pipeline"]).await;
    let s = Server::start(
        &[
            "serve",
            "--database-url",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        &[("ABSURD_ENABLED", "false")],
    );
    let a = &s.addr;
    let nil = task_path(&Uuid::nil().to_string());
    for (method, path) in [
        ("GET", "/api/absurd/tasks"),
        ("GET", "/api/absurd/queues"),
        ("GET", "/api/absurd/queues/dsa110-pipeline/stats"),
        ("GET", "/api/absurd/metrics"),
        ("GET", "/api/absurd/metrics/prometheus"),
        ("GET", "/api/absurd/workers"),
        ("POST", "/api/absurd/workers/w/heartbeat"),
        ("DELETE", nil.as_str()),
    ] {
        let r = request(a, method, path, &[], None).await;
        assert_eq!(
            r.detail(503),
            "Absurd workflow manager is not enabled",
            "{method} {path}"
        );
    }
    let r = post_json(
        a,
        "/api/absurd/tasks",
        &json!({"queue_name": "dsa110-pipeline", "task_name": "calibrate"}),
    )
    .await;
    assert_eq!(r.detail(503), "Absurd workflow manager is not enabled");
    let h = get(a, "/api/absurd/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(
        (&h.json()["status"], &h.json()["message"]),
        (&json!("disabled"), &json!("Absurd is not enabled"))
    );
    let h = get(a, "/api/absurd/health/detailed").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "disabled");
    assert_eq!(h.json()["alerts"], json!([]));
    assert_eq!(get(a, "/api/absurd/openapi.json").await.status, 200);
    assert_eq!(get(a, "/metrics").await.status, 200);
    // Nothing was spawned.
    let n: i64 = sqlx::query_scalar("select count(*) from absurd.\"t_dsa110-pipeline\"")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // A value that is not a boolean stops the server, naming it.
    let (mut cmd, log) = command(
        &[
            "serve",
            "--database-url",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        &[("ABSURD_ENABLED", "ture")],
    );
    let status = cmd.status().unwrap();
    assert!(!status.success());
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("ABSURD_ENABLED") && text.contains("ture"),
        "{text}"
    );
}
