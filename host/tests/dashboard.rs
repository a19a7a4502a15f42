//! The operator dashboard end to end: `absurd-host worker --api` with real tasks, the page
//! driven in Debian's headless Chromium by Playwright (`playwright-core` from npm) through
//! `tests/dashboard/drive.mjs`. `scripts/setup-browser` (run by `scripts/test`) installs
//! both; the test installs nothing, and fails saying so when they are missing. Screenshots of
//! the views go to `target/test-output/dashboard/`, and `failure.png` there shows the page
//! when a step fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use absurd_client::vocab::FailureCategory;
use absurd_client::{Client, RetryStrategy, SpawnOptions, State, TaskFilter};
use absurd_engine::metrics::Counters;
use absurd_host::api::ApiSettings;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{repo_root, temp_file, wait_for, TestDb, WorkerProc};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

const CONFIG: &str = r#"
[tasks.echo]
kind = "builtin"

[tasks.boom]
kind = "builtin"
builtin = "fail"

[tasks.nap]
kind = "builtin"
"#;

/// Debian's Chromium, as `scripts/setup-browser` installs it.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The driver script, and the `node_modules/` that `scripts/setup-browser` fills beside it.
fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard")
}

/// Fails the test, saying what to run, when the browser or the automation library is missing.
fn require_browser() {
    let playwright = driver_dir().join("node_modules/playwright-core/package.json");
    let node = Command::new("node").arg("--version").output();
    let missing = if !Path::new(CHROMIUM).exists() {
        format!("{CHROMIUM} (Debian's chromium)")
    } else if !playwright.exists() {
        format!("playwright-core ({} does not exist)", playwright.display())
    } else if !node.is_ok_and(|o| o.status.success()) {
        "node (Node.js 20 or later)".to_string()
    } else {
        return;
    };
    panic!(
        "the dashboard test drives headless Chromium with Playwright, and {missing} is \
         missing: run scripts/test, or just scripts/setup-browser, which install it"
    );
}

/// A running `absurd-host serve`, killed when dropped (its log printed if the test failed).
struct ServeProc {
    child: Child,
    log: PathBuf,
}

impl ServeProc {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- serve log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// The address in a server log's "API listening on http://ADDR" line.
fn listening_on(log: &str) -> Option<String> {
    let i = log.find("API listening on http://")?;
    let rest = &log[i + "API listening on http://".len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

/// GET `path` through the API's router in this process: `(status, content type, body)`. How
/// the static files are served does not depend on the socket (the browser then loads the
/// same files from the worker's port).
async fn get(db: &TestDb, path: &str) -> (StatusCode, String, String) {
    let settings = ApiSettings::default();
    let pool = absurd_host::api::lazy_pool(&db.url, settings.statement_timeout)
        .expect("the test database URL parses");
    let router = absurd_host::api::router(Client::new(pool), settings, Counters::default());
    let req = Request::get(path)
        .header(header::HOST, absurd_host::api::DEFAULT_LISTEN)
        .body(Body::empty())
        .unwrap();
    let resp = match router.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

async fn state_of(client: &Client, queue: &str, id: Uuid) -> Option<State> {
    client
        .task_result(queue, id)
        .await
        .ok()
        .flatten()
        .map(|r| r.state)
}

async fn wait_state(client: &Client, queue: &str, id: Uuid, want: State) {
    wait_for(
        &format!("task {id} to be {want}"),
        Duration::from_secs(20),
        || async { (state_of(client, queue, id).await == Some(want)).then_some(()) },
    )
    .await;
}

async fn count(client: &Client, queue: &str, name: &str) -> i64 {
    client
        .list_tasks(&TaskFilter {
            queue: Some(queue.into()),
            task_name: Some(name.into()),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .map(|p| p.total)
        .unwrap_or(-1)
}

/// A JavaScript expression: the element's text contains `text`.
fn has_text(css: &str, text: &str) -> String {
    format!(
        "(document.querySelector({}) || {{}}).textContent?.includes({})",
        json!(css),
        json!(text)
    )
}

fn count_is(state: &str, n: i64) -> String {
    format!(
        "document.querySelector('[data-queue=\"work\"][data-state=\"{state}\"]')?.textContent === '{n}'"
    )
}

/// A JavaScript expression: the queue's sparkline has 60 per-minute points summing to these.
fn sparkline_has(queue: &str, completed: i64, failed: i64) -> String {
    format!(
        "(() => {{ const s = document.querySelector('svg.spark[data-queue=\"{queue}\"]'); \
           return !!s && s.dataset.points === '60' && s.dataset.completed === '{completed}' \
             && s.dataset.failed === '{failed}' \
             && s.querySelector('polyline.spark-completed').getAttribute('points').split(' ').length === 60; }})()"
    )
}

/// Runs the driver on `steps` (blocking: the servers are other processes), and fails the test
/// with the step, the page's text and a screenshot (`failure.png` in `out_dir`) if one fails.
fn drive(steps: &Value, out_dir: &Path) {
    let steps_file = temp_file("steps.json", &steps.to_string());
    let failure_shot = out_dir.join("failure.png");
    let _ = std::fs::remove_file(&failure_shot);
    let out = Command::new("node")
        .arg(driver_dir().join("drive.mjs"))
        .arg(CHROMIUM)
        .arg(steps_file)
        .arg(&failure_shot)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| {
            panic!(
                "the driver printed no result: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    if result["ok"] != true {
        let step = result["step"].as_u64().map(|i| steps[i as usize].clone());
        panic!(
            "the page failed at step {step:?}: {}\n--- page {}, screenshot {} ---\n{}\n{}",
            result["error"].as_str().unwrap_or(""),
            result["url"].as_str().unwrap_or("?"),
            failure_shot.display(),
            result["text"].as_str().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_queues_tasks_and_acts_from_the_page() {
    require_browser();

    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue("work").await.unwrap();
    let once = SpawnOptions {
        max_attempts: Some(1),
        retry_strategy: Some(RetryStrategy::none()),
        ..Default::default()
    };
    let spawn = |name: &'static str, params: Value| {
        let (client, once) = (client.clone(), once.clone());
        async move {
            client
                .spawn("work", name, &params, &once)
                .await
                .unwrap()
                .task_id
        }
    };
    let mut echoes = vec![];
    for i in 0..3 {
        echoes.push(spawn("echo", json!({"i": i})).await);
    }
    let boom_in_place = spawn("boom", json!({"n": 1})).await;
    let boom_as_new = spawn("boom", json!({"n": 2})).await;
    // With a timeout of its own (the `timeout_sec` header), which its page shows.
    let nap = client
        .spawn(
            "work",
            "nap",
            &json!({"seconds": 600}),
            &SpawnOptions {
                headers: Some(json!({"timeout_sec": 300})),
                ..once.clone()
            },
        )
        .await
        .unwrap()
        .task_id;

    // A schedule made through the API, yearly in Berlin (so that the worker's scheduler spawns
    // nothing while the test counts tasks): the page shows its next run.
    client
        .create_schedule(
            &absurd_client::schedules::ScheduleDefinition {
                schedule_name: "dash-yearly".into(),
                cron: "0 0 1 1 *".into(),
                timezone: "Europe/Berlin".into(),
                task_name: "echo".into(),
                queue_name: "work".into(),
                params: json!({}),
                catch_up: "skip".into(),
                enabled: true,
            },
            absurd_client::schedules::ScheduleSource::Api,
            1000,
        )
        .await
        .unwrap()
        .expect("the schedule is created");

    let config = temp_file("absurd-host.toml", CONFIG);
    let worker = WorkerProc::start(
        &db.url,
        &config,
        &[
            "--queue",
            "work",
            "--worker-id",
            "w-dash",
            "--api",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let addr = wait_for("the API to listen", Duration::from_secs(30), || async {
        listening_on(&worker.log_text())
    })
    .await;

    for id in &echoes {
        wait_state(&client, "work", *id, State::Completed).await;
    }
    wait_state(&client, "work", boom_in_place, State::Failed).await;
    wait_state(&client, "work", boom_as_new, State::Failed).await;
    wait_state(&client, "work", nap, State::Sleeping).await;
    // Both failures are copied to the dead-letter queue (asynchronously).
    wait_for("two dead letters", Duration::from_secs(20), || async {
        (count(&client, "work-dlq", "dead-letter").await == 2).then_some(())
    })
    .await;
    let dead_letter = client
        .list_tasks(&TaskFilter {
            queue: Some("work-dlq".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks[0]
        .task_id;

    // A recorded maintenance pass, shown on the overview.
    client
        .record_maintenance_run(
            chrono::Utc::now(),
            "maintain:4242",
            &json!({"totals": {"completed": 4, "failed": 1, "cancelled": 0, "events": 2}}),
            None,
        )
        .await
        .unwrap();

    // The static files are served, without the API's JSON errors.
    let (status, ctype, body) = get(&db, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(body.contains("/ui/app.js"));
    let (status, ctype, _) = get(&db, "/ui/app.js").await;
    assert!(
        status == StatusCode::OK && ctype.starts_with("text/javascript"),
        "{status} {ctype}"
    );

    let out_dir = repo_root().join("target/test-output/dashboard");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = |name: &str| json!({"screenshot": out_dir.join(name)});
    let base = format!("http://{addr}/");
    let url = |hash: &str| json!({"goto": format!("{base}#{hash}")});
    let wait = |js: String| json!({"wait": js});
    let click = |css: &str| json!({"click": css});
    let fill = |css: &str, text: &str| json!({"fill": css, "text": text});
    let names_of =
        |c: FailureCategory| c.names().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    let sandbox_names = names_of(FailureCategory::Sandbox);
    let subprocess_names = names_of(FailureCategory::Subprocess);
    let steps = json!([
        // Overview: the counts by state, dead letters, a worker seen.
        url("/"),
        wait(count_is("completed", 3)),
        wait(count_is("failed", 2)),
        wait(count_is("sleeping", 1)),
        wait(count_is("pending", 0)),
        wait(count_is("total", 6)),
        wait(has_text("#dead-letters", "2")),
        wait(has_text("#maintenance", "5 tasks and 2 events deleted, by maintain:4242")),
        wait(has_text("#view", "work-dlq")),
        wait(has_text("#health", "Health:")),
        // The sparkline: the last hour per minute, from the throughput endpoint.
        wait(sparkline_has("work", 3, 2)),
        shot("overview.png"),
        // Tasks: the real total, filters from the URL and from the form.
        url("/tasks?queue=work"),
        wait(has_text("#task-total", "6 tasks match")),
        shot("tasks.png"),
        // Text search in params, from the URL and from the form.
        url("/tasks?queue=work&q=SECONDS"),
        wait(has_text("#task-total", "1 task match")),
        wait("[...document.querySelectorAll('#view tbody tr')].every(r => r.textContent.includes('nap'))".to_string()),
        wait("document.getElementById('q').value === 'SECONDS'".to_string()),
        url("/tasks?queue=work"),
        wait(has_text("#task-total", "6 tasks match")),
        fill("#q", "\"n\""),
        click(".filters button[type=submit]"),
        wait("location.hash.includes('q=')".to_string()),
        wait(has_text("#task-total", "2 tasks match")),
        wait("[...document.querySelectorAll('#view tbody tr')].every(r => r.textContent.includes('boom'))".to_string()),
        // The enqueue time range (the inputs are UTC).
        url("/tasks?queue=work&from=2000-01-01T00:00&to=2000-01-02T00:00"),
        wait(has_text("#task-total", "0 tasks match")),
        wait("document.getElementById('from').value.startsWith('2000-01-01T00:00')".to_string()),
        url("/tasks?queue=work&from=2000-01-01T00:00"),
        wait(has_text("#task-total", "6 tasks match")),
        url("/tasks?queue=work&state=failed"),
        wait(has_text("#task-total", "2 tasks match")),
        wait("[...document.querySelectorAll('#view tbody tr')].every(r => r.textContent.includes('boom') && r.textContent.includes('failed'))".to_string()),
        url("/tasks?queue=work&limit=4"),
        wait(has_text("#view", "Next page")),
        click(".pager a"),
        wait(has_text("#view", "Previous page")),
        wait("document.querySelectorAll('#view tbody tr').length === 2".to_string()),
        // A failed task's page shows its failure; retry it in place from the page.
        url(&format!("/tasks/{boom_in_place}")),
        wait(has_text("#task-error", "the fail builtin always fails")),
        wait(has_text("#view table", "w-dash")),
        wait(has_text(".failure-text", "BuiltinFailure")),
        wait(has_text("#view .facts", "its type's")),
        shot("task.png"),
        click("#retry-task"),
        wait(has_text("#flash", "retried in place")),
        // Retry as a new task: the page moves to the new task.
        url(&format!("/tasks/{boom_as_new}")),
        click("#retry-new"),
        wait(has_text("#flash", "Spawned a new task")),
        wait(format!("!location.hash.includes('{boom_as_new}') && location.hash.startsWith('#/tasks/')")),
        // Cancel the sleeping task, confirming inline.
        url(&format!("/tasks/{nap}")),
        wait(has_text("#view .facts", "sleeping")),
        wait(has_text("#task-timeout", "300 s")),
        click("#cancel-task"),
        click("#confirm-cancel"),
        wait(has_text("#flash", "cancelled")),
        wait(has_text("#view .facts", "cancelled")),
        // Re-spawn from a dead letter.
        url(&format!("/tasks/{dead_letter}")),
        click("#respawn"),
        wait(has_text("#flash", "Re-spawned boom in work")),
        // Workers: last seen and failure counts per worker.
        url("/workers"),
        wait(has_text("#view", "w-dash")),
        wait("Number(document.querySelector('[data-worker=\"w-dash\"][data-count=\"failed\"]')?.textContent) >= 2".to_string()),
        wait("document.querySelector('[data-worker=\"w-dash\"][data-count=\"sandbox_failures\"]')?.textContent === '0'".to_string()),
        wait(has_text("#view table", "ago")),
        // Each count's failure names, as the host lists them (not a copy in the page).
        wait(has_text(
            "#failure-names [data-failure-names=\"sandbox_failures\"]",
            &sandbox_names,
        )),
        wait(has_text(
            "#failure-names [data-failure-names=\"subprocess_failures\"]",
            &subprocess_names,
        )),
        shot("workers.png"),
        // Schedules: the next run (within the hour) and the last one (none yet).
        url("/schedules"),
        wait(has_text("#view table", "dash-yearly")),
        wait(has_text("[data-next-run=\"dash-yearly\"]", "UTC")),
        wait(has_text("[data-last-run=\"dash-yearly\"]", "never")),
        wait(has_text("#view table", "Europe/Berlin")),
        shot("schedules.png"),
    ]);
    drive(&steps, &out_dir);

    // What the clicks did, as the database sees it.
    assert_eq!(state_of(&client, "work", nap).await, Some(State::Cancelled));
    let details = client
        .get_task("work", boom_in_place)
        .await
        .unwrap()
        .unwrap();
    assert!(
        details.runs.len() >= 2,
        "retry in place adds a run: {:?}",
        details.runs
    );
    // Two boom tasks spawned, one retried as new, one re-spawned from the dead letter.
    assert_eq!(count(&client, "work", "boom").await, 4);

    // With a token, the page asks for it once and sends it (`absurd-host serve` on the same
    // database).
    let log = temp_file("serve.log", "");
    let serve = ServeProc {
        child: Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .args([
                "serve",
                "--database-url",
                &db.url,
                "--listen",
                "127.0.0.1:0",
            ])
            .env("ABSURD_API_TOKEN", "dash-secret")
            .env_remove("ABSURD_API_LISTEN")
            .env_remove("ABSURD_DATABASE_URL")
            .env("ABSURD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start absurd-host serve"),
        log,
    };
    let token_addr = wait_for("serve to listen", Duration::from_secs(30), || async {
        listening_on(&serve.log_text())
    })
    .await;
    let steps = json!([
        {"goto": format!("http://{token_addr}/#/")},
        wait("!document.getElementById('token').hidden".to_string()),
        fill("#token-input", "dash-secret"),
        click("#token-form button"),
        wait(count_is("completed", 3)),
        wait("sessionStorage.getItem('absurd-api-token') === 'dash-secret'".to_string()),
    ]);
    drive(&steps, &out_dir);
    drop(serve);

    // Live updates: while its stream is up the page polls only every 60 s, so a task that the
    // worker finishes while its page stays open shows within 30 s only through the stream.
    let nap2 = spawn("nap", json!({"seconds": 8})).await;
    wait_state(&client, "work", nap2, State::Sleeping).await;
    let live_steps = json!([
        url(&format!("/tasks/{nap2}")),
        wait("document.body.dataset.live === 'stream'".to_string()),
        wait(has_text("#live", "Live updates on")),
        wait(has_text("#view .facts", "sleeping")),
        {"wait": has_text("#view .facts", "completed"), "timeout_ms": 30000},
    ]);
    let dir = out_dir.clone();
    let page = tokio::task::spawn_blocking(move || drive(&live_steps, &dir));
    wait_for("the nap to end", Duration::from_secs(40), || async {
        (state_of(&client, "work", nap2).await == Some(State::Completed)).then_some(())
    })
    .await;
    page.await.unwrap();

    for name in [
        "overview.png",
        "tasks.png",
        "task.png",
        "workers.png",
        "schedules.png",
    ] {
        let len = std::fs::metadata(out_dir.join(name)).unwrap().len();
        assert!(len > 10_000, "{name} is only {len} bytes");
    }
    drop(worker);
}

/// A workflow's page shows its DAG with each node's state and a link to its child; a child's
/// page links back to its workflow. The workflow task and its children are made here as the
/// workflow runner makes them (the contract's params, headers and idempotency keys), served by
/// `absurd-host serve`.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_a_workflow_dag_and_links_parent_and_children() {
    use absurd_client::workflows::{NODE_HEADER, PARENT_HEADER};
    require_browser();

    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue("flow").await.unwrap();
    let params = json!({"name": "demo-dag", "nodes": [
        {"id": "convert", "task": "convert-uvh5-to-ms", "queue": "flow-kids", "depends_on": [], "optional": false},
        {"id": "solve", "task": "calibration-solve", "depends_on": ["convert"], "optional": false},
        {"id": "qa", "task": "validation", "depends_on": ["convert"], "optional": true},
        {"id": "image", "task": "imaging", "depends_on": ["solve", "qa"], "optional": false},
    ]});
    let wf = client
        .spawn("flow", "workflow", &params, &SpawnOptions::default())
        .await
        .unwrap()
        .task_id;
    let child = |node: &str| SpawnOptions {
        headers: Some(json!({PARENT_HEADER: wf.to_string(), NODE_HEADER: node})),
        idempotency_key: Some(format!("{wf}:{node}")),
        ..Default::default()
    };
    // `convert` ran and completed (claimed from the child queue, so not the workflow task).
    client.create_queue("flow-kids").await.unwrap();
    let convert = client
        .spawn(
            "flow-kids",
            "convert-uvh5-to-ms",
            &json!({}),
            &child("convert"),
        )
        .await
        .unwrap()
        .task_id;
    let run = client
        .claim("flow-kids", "w", 60, 1)
        .await
        .unwrap()
        .remove(0);
    client
        .complete_run(
            "flow-kids",
            run.run_id,
            &json!({"outputs": {"ms_path": "/x.ms"}}),
        )
        .await
        .unwrap();
    // Nodes without a queue run in the workflow's: `solve` is spawned, `qa` and `image` not yet.
    let solve = client
        .spawn("flow", "calibration-solve", &json!({}), &child("solve"))
        .await
        .unwrap()
        .task_id;

    let log = temp_file("serve-flow.log", "");
    let serve = ServeProc {
        child: Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .args([
                "serve",
                "--database-url",
                &db.url,
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("ABSURD_API_TOKEN")
            .env_remove("ABSURD_API_LISTEN")
            .env_remove("ABSURD_DATABASE_URL")
            .env_remove("ABSURD_HOST_CONFIG")
            .env("ABSURD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start absurd-host serve"),
        log,
    };
    let addr = wait_for("serve to listen", Duration::from_secs(30), || async {
        listening_on(&serve.log_text())
    })
    .await;
    let out_dir = repo_root().join("target/test-output/dashboard");
    std::fs::create_dir_all(&out_dir).unwrap();
    let node = |id: &str, state: &str| json!({"wait": format!("document.querySelector('[data-node=\"{id}\"]')?.dataset.state === '{state}'")});
    let steps = json!([
        {"goto": format!("http://{addr}/#/tasks/{wf}")},
        {"wait": has_text("#workflow h3", "Workflow demo-dag: 4 nodes")},
        node("convert", "completed"),
        {"wait": format!("!!document.querySelector('[data-node=\"convert\"] a[href=\"#/tasks/{convert}\"]')")},
        {"wait": has_text("[data-node=\"convert\"]", "in flow-kids")},
        node("solve", "pending"),
        node("qa", "pending"),
        node("image", "pending"),
        {"wait": format!("!!document.querySelector('[data-node=\"solve\"] a[href=\"#/tasks/{solve}\"]')")},
        {"wait": has_text("[data-node=\"qa\"]", "not spawned")},
        {"wait": has_text("[data-node=\"image\"]", "after solve, qa")},
        // Columns by depth: convert, then solve and qa, then image.
        {"wait": "[...document.querySelectorAll('.dag-col')].map(c => c.querySelectorAll('.dag-node').length).join() === '1,2,1'"},
        {"screenshot": out_dir.join("workflow.png")},
        {"click": "[data-node=\"solve\"] a"},
        {"wait": has_text("#parent-workflow", &format!("{wf} (node solve)"))},
        {"click": "#parent-workflow a"},
        {"wait": has_text("#workflow h3", "Workflow demo-dag")},
    ]);
    drive(&steps, &out_dir);
    drop(serve);
    let len = std::fs::metadata(out_dir.join("workflow.png"))
        .unwrap()
        .len();
    assert!(len > 10_000, "workflow.png is only {len} bytes");
}
