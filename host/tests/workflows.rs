//! Workflows through the API and the command line, against real PostgreSQL: starting one by
//! name (the definitions of `deploy/absurd-host.toml`) or inline, `POST /tasks/with-deps`,
//! `POST /groups` (once per group), and `GET /workflows/{task_id}` with the children a runner
//! spawns under the workflow contract (created here with the client, as the runner would).

mod common;

use std::process::{Command, Output};

use absurd_client::workflows::{NODE_HEADER, PARENT_HEADER};
use absurd_client::{Client, SpawnOptions, TaskFilter};
use absurd_engine::metrics::Counters;
use absurd_host::api::ApiSettings;
use absurd_host::workflow::Workflows;
use axum::body::Body;
use axum::Router;
use common::{repo_root, setup, TestDb};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

fn deploy_config() -> std::path::PathBuf {
    repo_root().join("deploy/absurd-host.toml")
}

/// The API as `absurd-host serve --config deploy/absurd-host.toml` builds it, with `queue` as
/// its default queue.
fn router(db: &TestDb, queue: &str) -> Router {
    let settings = ApiSettings {
        default_queue: queue.to_string(),
        workflows: std::sync::Arc::new(
            Workflows::load(Some(&deploy_config())).expect("deploy/absurd-host.toml's workflows"),
        ),
        ..ApiSettings::default()
    };
    let pool = absurd_host::api::lazy_pool(&db.url, settings.statement_timeout).unwrap();
    absurd_host::api::router(Client::new(pool), settings, Counters::default())
}

/// One request through the router: `(status, JSON body)`.
async fn call(router: &Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", absurd_host::api::DEFAULT_LISTEN);
    let body = match body {
        Some(b) => {
            req = req.header("Content-Type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = match router.clone().oneshot(req.body(body).unwrap()).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"));
    (status, v)
}

/// The `detail` of an error answer, checking its status.
async fn refused(router: &Router, path: &str, body: Value, status: u16) -> String {
    let (s, v) = call(router, "POST", path, Some(body.clone())).await;
    assert_eq!(s, status, "{body}: {v}");
    v["detail"].as_str().unwrap().to_string()
}

async fn task_count(client: &Client, queue: &str) -> i64 {
    client
        .list_tasks(&TaskFilter {
            queue: Some(queue.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .total
}

async fn params_of(client: &Client, queue: &str, task: Uuid) -> (String, Value, Option<i32>) {
    let t = client.get_task(queue, task).await.unwrap().unwrap();
    (t.summary.task_name, t.params, t.summary.max_attempts)
}

#[tokio::test]
async fn a_named_workflow_is_one_workflow_task_with_the_contracts_params() {
    let q = "wf-named";
    let (db, client) = setup(q).await;
    let api = router(&db, q);
    let (s, v) = call(
        &api,
        "POST",
        "/api/absurd/workflows",
        Some(
            json!({"name": "quick-imaging", "inputs": {"input_path": "/data/in"}, "config": null}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["task_name"], "workflow");
    assert_eq!(v["queue_name"], q);
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["created"], true);
    let id: Uuid = serde_json::from_value(v["task_id"].clone()).unwrap();
    let (name, params, max_attempts) = params_of(&client, q, id).await;
    assert_eq!(name, "workflow");
    assert_eq!(max_attempts, Some(4));
    assert_eq!(
        params,
        json!({
            "name": "quick-imaging",
            "nodes": [
                {"id": "convert-uvh5-to-ms", "task": "convert-uvh5-to-ms", "depends_on": [], "optional": false},
                {"id": "calibration-apply", "task": "calibration-apply", "depends_on": ["convert-uvh5-to-ms"], "optional": false},
                {"id": "imaging", "task": "imaging", "depends_on": ["calibration-apply"], "optional": false},
            ],
            "config": null,
            "inputs": {"input_path": "/data/in"},
        })
    );
    assert_eq!(task_count(&client, q).await, 1);

    // The seed's four chains, stage by stage.
    let w = Workflows::load(Some(&deploy_config())).unwrap();
    let stages = |name: &str| -> Vec<String> {
        w.get(name)
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.task.clone())
            .collect()
    };
    assert_eq!(
        stages("standard-pipeline"),
        [
            "catalog-setup",
            "convert-uvh5-to-ms",
            "calibration-solve",
            "calibration-apply",
            "imaging",
            "validation",
            "crossmatch",
            "photometry"
        ]
    );
    assert_eq!(
        stages("calibrator"),
        ["catalog-setup", "convert-uvh5-to-ms", "calibration-solve"]
    );
    assert_eq!(
        stages("target"),
        [
            "convert-uvh5-to-ms",
            "calibration-apply",
            "imaging",
            "validation",
            "photometry"
        ]
    );

    // An unknown name is a 404 listing the defined ones, and spawns nothing.
    let d = refused(
        &api,
        "/api/absurd/workflows",
        json!({"name": "standard"}),
        404,
    )
    .await;
    assert!(
        d.contains("\"standard\"") && d.contains("\"standard-pipeline\""),
        "{d}"
    );
    assert_eq!(task_count(&client, q).await, 1);
}

#[tokio::test]
async fn refused_dags_name_the_problem_and_spawn_nothing() {
    let q = "wf-bad";
    let (db, client) = setup(q).await;
    let api = router(&db, q);
    let n = |id: &str, deps: &[&str]| json!({"id": id, "task": "echo", "depends_on": deps});
    let t = |id: &str, deps: &[&str]| json!({"id": id, "task_name": "echo", "depends_on": deps});
    let many: Vec<Value> = (0..257).map(|i| n(&format!("n{i}"), &[])).collect();
    let many_tasks: Vec<Value> = (0..257).map(|i| t(&format!("n{i}"), &[])).collect();
    for (path, body, status, want) in [
        (
            "/api/absurd/workflows",
            json!({"nodes": [n("a", &["c"]), n("b", &["a"]), n("c", &["b"])]}),
            400,
            "nodes[0].depends_on: the dependencies form a cycle (each depends on the next): a → c → b → a",
        ),
        (
            "/api/absurd/workflows",
            json!({"nodes": [n("a", &[]), n("b", &["x"])]}),
            400,
            "nodes[1].depends_on[0]: \"x\" is not the id of any entry of nodes",
        ),
        (
            "/api/absurd/workflows",
            json!({"nodes": many}),
            400,
            "nodes has 257 entries; the limit is 256",
        ),
        (
            "/api/absurd/workflows",
            json!({"nodes": [n("a/b", &[])]}),
            400,
            "nodes[0].id \"a/b\" contains '/'",
        ),
        (
            "/api/absurd/workflows",
            json!({"nodes": [{"id": "a", "task": "echo", "queue": "nowhere"}]}),
            404,
            "Queue \"nowhere\" (the queue of node \"a\") not found",
        ),
        (
            "/api/absurd/workflows",
            json!({"inputs": {}}),
            400,
            "give `name`",
        ),
        (
            "/api/absurd/tasks/with-deps",
            json!({"tasks": [t("a", &["b"]), t("b", &["a"])]}),
            400,
            "tasks[0].depends_on: the dependencies form a cycle",
        ),
        (
            "/api/absurd/tasks/with-deps",
            json!({"tasks": [t("a", &["zz"])]}),
            400,
            "tasks[0].depends_on[0]: \"zz\" is not the id of any entry of tasks",
        ),
        (
            "/api/absurd/tasks/with-deps",
            json!({"tasks": many_tasks}),
            400,
            "tasks has 257 entries; the limit is 256",
        ),
        (
            "/api/absurd/tasks/with-deps",
            json!({"tasks": [{"task_name": " "}]}),
            400,
            "tasks[0].id \" \" contains ' '",
        ),
    ] {
        let d = refused(&api, path, body, status).await;
        assert!(d.contains(want), "{path}: want {want:?} in {d:?}");
    }
    // A node's unknown key is named by the body decoder.
    let d = refused(
        &api,
        "/api/absurd/workflows",
        json!({"nodes": [{"id": "a", "task": "echo", "after": ["b"]}]}),
        400,
    )
    .await;
    assert!(d.contains("after"), "{d}");
    // Params over the limit: 413 naming it.
    let big = "x".repeat(300 * 1024);
    let d = refused(
        &api,
        "/api/absurd/workflows",
        json!({"nodes": [{"id": "a", "task": "echo", "params": {"big": big}}]}),
        413,
    )
    .await;
    assert!(d.contains("the limit is 262144 bytes"), "{d}");
    assert_eq!(task_count(&client, q).await, 0);
}

#[tokio::test]
async fn tasks_with_dependencies_become_the_nodes_of_an_inline_workflow() {
    let q = "wf-deps";
    let (db, client) = setup(q).await;
    client.create_queue("wf-deps-gpu").await.unwrap();
    let api = router(&db, q);
    let (s, v) = call(
        &api,
        "POST",
        "/api/absurd/tasks/with-deps",
        Some(json!({
            "name": "nightly",
            "inputs": {"night": "2025-10-17"},
            "tasks": [
                {"task_name": "convert-uvh5-to-ms", "params": {"inputs": {"writer": "pyuvdata"}}},
                {"id": "img", "task_name": "imaging", "queue_name": "wf-deps-gpu",
                 "depends_on": ["convert-uvh5-to-ms"], "max_attempts": 2},
                {"id": "qa", "task_name": "validation", "depends_on": ["img"], "optional": true},
            ],
        })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["nodes"].clone(), v["name"].clone()),
        (json!(3), json!("nightly"))
    );
    let id: Uuid = serde_json::from_value(v["task_id"].clone()).unwrap();
    let (name, params, _) = params_of(&client, q, id).await;
    assert_eq!(name, "workflow");
    assert_eq!(
        params,
        json!({
            "name": "nightly",
            "nodes": [
                {"id": "convert-uvh5-to-ms", "task": "convert-uvh5-to-ms",
                 "params": {"inputs": {"writer": "pyuvdata"}}, "depends_on": [], "optional": false},
                {"id": "img", "task": "imaging", "queue": "wf-deps-gpu",
                 "depends_on": ["convert-uvh5-to-ms"], "optional": false, "max_attempts": 2},
                {"id": "qa", "task": "validation", "depends_on": ["img"], "optional": true},
            ],
            "inputs": {"night": "2025-10-17"},
        })
    );
}

#[tokio::test]
async fn a_group_starts_its_workflow_once() {
    let q = "wf-groups";
    let (db, client) = setup(q).await;
    let api = router(&db, q);
    let files = json!([
        "/data/incoming/2025-10-17T14:40:09_sb00.hdf5",
        "/data/incoming/2025-10-17T14:40:09_sb01.hdf5"
    ]);
    let body =
        json!({"group_id": "2025-10-17T14:40:09", "file_paths": files, "is_calibrator": true});
    let (s, first) = call(&api, "POST", "/api/absurd/groups", Some(body.clone())).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["created"], true);
    assert_eq!(first["workflow"], "calibrator");
    assert_eq!(first["idempotency_key"], "group:2025-10-17T14:40:09");
    let inputs = json!({
        "input_path": "/data/incoming",
        "file_list": files,
        "group_id": "2025-10-17T14:40:09",
        "start_time": "2025-10-17T14:39:39",
        "end_time": "2025-10-17T14:45:09",
    });
    assert_eq!(first["inputs"], inputs);
    let (s, again) = call(&api, "POST", "/api/absurd/groups", Some(body)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["task_id"], first["task_id"]);
    assert_eq!(again["created"], false);
    assert_eq!(again["inputs"], inputs);
    // Submitted again as a science group, another time: still its first workflow, said so.
    let (s, third) = call(
        &api,
        "POST",
        "/api/absurd/groups",
        Some(json!({"group_id": "2025-10-17T14:40:09", "file_paths": ["/elsewhere/y.hdf5"], "observed_at": "2025-10-18T00:00:00Z"})),
    )
    .await;
    assert_eq!(s, 200, "{third}");
    assert_eq!(third["task_id"], first["task_id"]);
    assert_eq!(third["workflow"], "calibrator");
    assert_eq!(third["inputs"], inputs);
    assert!(
        third["warnings"][0]
            .as_str()
            .unwrap()
            .contains("submitted before, as \"calibrator\""),
        "{third}"
    );
    // A key taken by a task that is not a workflow is a conflict, not that task.
    client
        .spawn(
            q,
            "echo",
            &json!({}),
            &SpawnOptions {
                idempotency_key: Some("group:taken".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let d = refused(
        &api,
        "/api/absurd/groups",
        json!({"group_id": "taken", "file_paths": ["/d/x.hdf5"], "observed_at": "2025-10-17T15:00:00Z"}),
        409,
    )
    .await;
    assert!(d.contains("a \"echo\" task, not a workflow"), "{d}");
    assert_eq!(task_count(&client, q).await, 2);
    let id: Uuid = serde_json::from_value(first["task_id"].clone()).unwrap();
    let (name, params, _) = params_of(&client, q, id).await;
    assert_eq!(name, "workflow");
    assert_eq!(params["name"], "calibrator");
    assert_eq!(params["inputs"], inputs);
    assert_eq!(params["nodes"].as_array().unwrap().len(), 3);

    // Another group, not a calibrator, with its time given: standard-pipeline.
    let (s, other) = call(
        &api,
        "POST",
        "/api/absurd/groups",
        Some(json!({"group_id": "g-7", "file_paths": ["/d/x.hdf5"], "observed_at": "2025-10-17T15:00:00Z"})),
    )
    .await;
    assert_eq!(s, 200, "{other}");
    assert_eq!(other["workflow"], "standard-pipeline");
    assert_eq!(other["inputs"]["start_time"], "2025-10-17T14:59:30");
    assert_ne!(other["task_id"], first["task_id"]);
    for (body, want) in [
        (
            json!({"group_id": "g-8", "file_paths": ["/d/x.hdf5"]}),
            "observed_at is needed: group_id \"g-8\" is not a time",
        ),
        (
            json!({"group_id": "2025-10-17T15:00:00", "file_paths": []}),
            "file_paths must not be empty",
        ),
        (
            json!({"group_id": "2025-10-17T15:00:00", "file_paths": ["/d/a.hdf5", "x.hdf5"]}),
            "file_paths[1] \"x.hdf5\" is not an absolute path",
        ),
        (
            json!({"group_id": "x".repeat(250), "file_paths": ["/d/x.hdf5"]}),
            "group_id must be at most 249 bytes",
        ),
    ] {
        let d = refused(&api, "/api/absurd/groups", body, 400).await;
        assert!(d.contains(want), "want {want:?} in {d:?}");
    }
    assert_eq!(task_count(&client, q).await, 3);
}

#[tokio::test]
async fn a_workflow_shows_its_children_and_its_result() {
    let q = "wf-show";
    let kids = "wf-show-kids";
    let (db, client) = setup(q).await;
    client.create_queue(kids).await.unwrap();
    let api = router(&db, q);
    let (s, v) = call(
        &api,
        "POST",
        "/api/absurd/workflows",
        Some(json!({"name": "three", "nodes": [
            {"id": "a", "task": "convert-uvh5-to-ms", "queue": kids},
            {"id": "b", "task": "imaging", "queue": kids, "depends_on": ["a"]},
            {"id": "c", "task": "validation", "depends_on": ["b"], "optional": true},
        ]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let wf: Uuid = serde_json::from_value(v["task_id"].clone()).unwrap();
    // Children as the runner spawns them: the contract's headers and idempotency key.
    let child = |node: &str, parent: Uuid| SpawnOptions {
        headers: Some(json!({PARENT_HEADER: parent.to_string(), NODE_HEADER: node})),
        idempotency_key: Some(format!("{wf}:{node}")),
        ..Default::default()
    };
    let a = client
        .spawn(kids, "convert-uvh5-to-ms", &json!({}), &child("a", wf))
        .await
        .unwrap();
    // Another workflow's child cannot pass for node c of this one (cancelled, so that the
    // workflow task is the one claimed from its queue below).
    let decoy = client
        .spawn(q, "validation", &json!({}), &child("c", Uuid::new_v4()))
        .await
        .unwrap();
    client.cancel_task(q, decoy.task_id).await.unwrap();

    let show = |path: String| {
        let api = api.clone();
        async move {
            let (s, v) = call(&api, "GET", &path, None).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let v = show(format!("/api/absurd/workflows/{wf}")).await;
    assert_eq!(v["name"], "three");
    assert_eq!(v["status"], "pending");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["id"], "a");
    assert_eq!(nodes[0]["task_id"], json!(a.task_id));
    assert_eq!(nodes[0]["state"], "pending");
    assert_eq!(nodes[0]["queue_name"], kids);
    assert_eq!(nodes[1]["task_id"], Value::Null);
    assert_eq!(nodes[1]["depends_on"], json!(["a"]));
    assert_eq!(nodes[2]["task_id"], Value::Null);
    assert_eq!(nodes[2]["queue_name"], q);
    assert_eq!(nodes[2]["optional"], true);

    // a completes; b is spawned and fails.
    let run = client.claim(kids, "w", 60, 1).await.unwrap().remove(0);
    assert_eq!(run.task_id, a.task_id);
    let a_result = json!({"status": "success", "outputs": {"ms_path": "/x.ms"}});
    client
        .complete_run(kids, run.run_id, &a_result)
        .await
        .unwrap();
    let b_options = SpawnOptions {
        max_attempts: Some(1),
        ..child("b", wf)
    };
    let b = client
        .spawn(kids, "imaging", &json!({}), &b_options)
        .await
        .unwrap();
    let run = client.claim(kids, "w", 60, 1).await.unwrap().remove(0);
    assert_eq!(run.task_id, b.task_id);
    client
        .fail_run(
            kids,
            run.run_id,
            &json!({"name": "Boom", "message": "no image"}),
            None,
        )
        .await
        .unwrap();
    let v = show(format!("/api/absurd/workflows/{wf}?queue_name={q}")).await;
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["state"], "completed");
    assert_eq!(nodes[1]["task_id"], json!(b.task_id));
    assert_eq!(nodes[1]["error"], "Boom: no image");
    assert_eq!(nodes[1]["state"], "failed", "{v}");
    assert_eq!(nodes[2]["task_id"], Value::Null, "{v}");

    // The workflow finishes (as its runner would report it): its result's states win.
    let run = client.claim(q, "w", 60, 1).await.unwrap().remove(0);
    assert_eq!(run.task_id, wf);
    let result = json!({"name": "three", "state": "failed", "nodes": [
        {"id": "a", "task": "convert-uvh5-to-ms", "queue": kids, "task_id": a.task_id, "state": "completed", "outputs": {"ms_path": "/x.ms"}, "failure": null, "optional": false},
        {"id": "b", "task": "imaging", "queue": kids, "task_id": b.task_id, "state": "failed", "outputs": null, "failure": {"name": "Boom", "message": "no image"}, "optional": false},
        {"id": "c", "task": "validation", "queue": q, "task_id": null, "state": "skipped", "outputs": null, "failure": null, "optional": true},
    ]});
    client.complete_run(q, run.run_id, &result).await.unwrap();
    let v = show(format!("/api/absurd/workflows/{wf}")).await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["result"], result);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["outputs"], json!({"ms_path": "/x.ms"}));
    assert_eq!(nodes[1]["state"], "failed");
    assert_eq!(nodes[2]["state"], "skipped");
    assert_eq!(nodes[2]["task_id"], Value::Null);

    // A task that is not a workflow, and one that does not exist.
    let (s, e) = call(
        &api,
        "GET",
        &format!("/api/absurd/workflows/{}", a.task_id),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        e["detail"].as_str().unwrap().contains("is not a workflow"),
        "{e}"
    );
    let (s, _) = call(
        &api,
        "GET",
        &format!("/api/absurd/workflows/{}", Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(s, 404);
}

// ---- the command line ------------------------------------------------------------------------

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(args)
        .args(["--database-url", url])
        .env_remove("ABSURD_DATABASE_URL")
        .env_remove("ABSURD_QUEUE_NAME")
        .env_remove("ABSURD_HOST_CONFIG")
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_command_line_starts_shows_and_submits_workflows() {
    let q = "wf-cli";
    let (db, client) = setup(q).await;
    let config = deploy_config();
    let config = config.to_str().unwrap();
    let v = ok_json(cli(
        &db.url,
        &[
            "workflow",
            "start",
            "target",
            "--config",
            config,
            "--queue",
            q,
            "--inputs",
            r#"{"input_path": "/data/in"}"#,
            "--json",
        ],
    ));
    assert_eq!(
        (v["task_name"].clone(), v["nodes"].clone()),
        (json!("workflow"), json!(5))
    );
    let id: Uuid = serde_json::from_value(v["task_id"].clone()).unwrap();
    let (_, params, _) = params_of(&client, q, id).await;
    assert_eq!(params["name"], "target");
    assert_eq!(params["inputs"], json!({"input_path": "/data/in"}));
    assert_eq!(params["nodes"][4]["depends_on"], json!(["validation"]));

    let shown = ok_json(cli(
        &db.url,
        &["workflow", "show", &id.to_string(), "--json"],
    ));
    assert_eq!(shown["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(shown["nodes"][0]["state"], "pending");
    let text = cli(&db.url, &["workflow", "show", &id.to_string()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("workflow target") && text.contains("calibration-apply"),
        "{text}"
    );

    let submit = || {
        ok_json(cli(
            &db.url,
            &[
                "submit-group",
                "2025-10-17T14:40:09",
                "/data/in/a.hdf5",
                "/data/in/b.hdf5",
                "--config",
                config,
                "--queue",
                q,
                "--json",
            ],
        ))
    };
    let first = submit();
    let again = submit();
    assert_eq!(first["workflow"], "standard-pipeline");
    assert_eq!(
        (first["created"].clone(), again["created"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(first["task_id"], again["task_id"]);
    assert_eq!(task_count(&client, q).await, 2);

    // Unknown names and refused definitions fail with the API's words.
    let out = cli(&db.url, &["workflow", "start", "nope", "--config", config]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Workflow \"nope\" not found") && err.contains("\"calibrator\""),
        "{err}"
    );
    let bad = common::temp_file(
        "bad-workflows.toml",
        "[workflows.loop]\nnodes = [{ id = \"a\", task = \"t\", depends_on = [\"b\"] }, { id = \"b\", task = \"t\", depends_on = [\"a\"] }]\n",
    );
    let out = cli(
        &db.url,
        &[
            "workflow",
            "start",
            "loop",
            "--config",
            bad.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("[workflows.loop]: nodes[0].depends_on: the dependencies form a cycle"),
        "{err}"
    );
    assert_eq!(task_count(&client, q).await, 2);

    // A worker refuses to start with it, naming the section.
    let mut worker = common::WorkerProc::start(&db.url, &bad, &["--queue", q]);
    let status = worker.wait_exit(std::time::Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success())
            && worker
                .log_text()
                .contains("[workflows.loop]: nodes[0].depends_on"),
        "{status:?}: {}",
        worker.log_text()
    );

    // `check` reports the definitions, and fails on a bad one.
    let out = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(["check", "--no-database", "--config", config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("workflows: 4 workflow(s) declared")
            && text.contains(
                "workflow calibrator: catalog-setup → convert-uvh5-to-ms → calibration-solve"
            ),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(["check", "--no-database", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("✗ workflows: [workflows.loop]"),
        "{text}"
    );
}
