//! Waiting for other tasks (WIT absurd:task@0.2.0 `await-task-result`, migration 0019; @0.2.1
//! `await-any-task-result` and `cancel-child`, migration 0023) and the `workflow` component
//! (examples/workflow, docs/workflows.md), through a real worker: DAGs of builtin and wasm
//! nodes, nodes reacting to whichever parent ends first, failures (cancelling the siblings
//! still running), optional nodes, the cancellation cascade, wake-ups by other workers' SQL
//! calls, a schema installed by `absurdctl init`, and the three WIT worlds.

mod common;
use common::{setup, terminal};

use std::time::Duration;

use absurd_client::{Client, SpawnOptions, State, TaskResult};
use common::{components_dir, temp_file, wait_for, TestDb, WorkerProc};
use serde_json::{json, Value};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(90);

fn config() -> std::path::PathBuf {
    let dir = components_dir();
    let text = format!(
        r#"
[sandbox]
memory_mb = 128
pool_instances = 16

[tasks.workflow]
kind = "wasm"
component = "{dir}/workflow.wasm"
spawn_tasks = ["*"]
spawn_queues = ["*"]

[tasks.fanout]
kind = "wasm"
component = "{dir}/fanout.wasm"
spawn_tasks = ["*"]
spawn_queues = ["*"]

# Tight limits on what a run may wait for and read back.
[tasks.fanout-tight]
kind = "wasm"
component = "{dir}/fanout.wasm"
spawn_tasks = ["*"]
max_awaits = 2
max_checkpoint_bytes = 2048

[tasks.echo]
kind = "wasm"
component = "{dir}/echo.wasm"

[tasks.noop]
kind = "wasm"
component = "{dir}/noop.wasm"

[tasks.stage]
kind = "builtin"
builtin = "stage"

[tasks.fail]
kind = "builtin"
builtin = "fail"

[tasks.wait-event]
kind = "builtin"
builtin = "wait-event"

[tasks.sleep]
kind = "builtin"
builtin = "sleep"
"#,
        dir = dir.display(),
    );
    temp_file("absurd-host.toml", &text)
}

fn once() -> SpawnOptions {
    common::no_backoff(1)
}

async fn run_workflow(client: &Client, queue: &str, params: Value) -> (Uuid, TaskResult) {
    let id = client
        .spawn(queue, "workflow", &params, &once())
        .await
        .unwrap()
        .task_id;
    let r = terminal(client, queue, id, LIMIT).await;
    (id, r)
}

fn node<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {report}"))
}

fn child_id(report: &Value, id: &str) -> Uuid {
    node(report, id)["task_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The diamond a → (b, c) → d, with builtin stages and a wasm echo, on a worker with ONE slot
/// in the same queue as the children: the waiting workflow holds no slot.
#[tokio::test]
async fn diamond_dag_passes_outputs_along_on_one_slot() {
    let q = "wf-diamond";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "1"]);
    let (wf, r) = run_workflow(
        &client,
        q,
        json!({
            "name": "diamond",
            "config": {"k": "v"},
            "inputs": {"x": 1},
            "nodes": [
                {"id": "a", "task": "stage", "params": {"produce": {"a": 1}, "inputs": {"t": "template", "x": 0}}},
                {"id": "b", "task": "stage", "params": {"produce": {"b": 2}}, "depends_on": ["a"]},
                {"id": "c", "task": "echo", "depends_on": ["a"]},
                {"id": "d", "task": "stage", "params": {"produce": {"d": 4}}, "depends_on": ["b", "c"]}
            ]
        }),
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let report = r.result.unwrap();
    assert_eq!(report["name"], "diamond");
    assert_eq!(report["state"], "completed");
    for id in ["a", "b", "c", "d"] {
        assert_eq!(node(&report, id)["state"], "completed", "{report}");
        assert_eq!(node(&report, id)["queue"], q);
    }
    assert_eq!(node(&report, "a")["outputs"], json!({"a": 1}));
    assert_eq!(node(&report, "b")["outputs"], json!({"a": 1, "b": 2}));
    // echo returns its params: its outputs are what it was given.
    assert_eq!(node(&report, "c")["outputs"], json!({"a": 1}));
    assert_eq!(
        node(&report, "d")["outputs"],
        json!({"a": 1, "b": 2, "d": 4})
    );

    // What d received: the chain contract over its template.
    let d = client
        .task_result(q, child_id(&report, "d"))
        .await
        .unwrap()
        .unwrap();
    let params = &d.result.unwrap()["params"];
    assert_eq!(params["config"], json!({"k": "v"}));
    assert_eq!(params["inputs"], json!({"x": 1}));
    assert_eq!(params["outputs"], json!({"a": 1, "b": 2}));
    assert_eq!(params["chain_name"], "diamond");
    let a = client
        .task_result(q, child_id(&report, "a"))
        .await
        .unwrap()
        .unwrap();
    // The workflow's inputs override the template's.
    assert_eq!(
        a.result.unwrap()["params"]["inputs"],
        json!({"t": "template", "x": 1})
    );

    // Each child carries the contract's headers, and the children's registry is emptied once
    // the workflow has finished.
    let details = client
        .get_task(q, child_id(&report, "b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        details.headers,
        Some(
            json!({"absurd_host.parent_task_id": wf.to_string(), "absurd_host.workflow_node": "b"})
        )
    );
    assert!(client.task_children(q, wf).await.unwrap().is_empty());
}

/// A required node that fails (the DSA-110 `{"status": "error"}` convention) fails the
/// workflow naming it; its dependents are skipped; independent work completes.
#[tokio::test]
async fn a_failing_required_node_fails_the_workflow_naming_it() {
    let q = "wf-fail";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "4"]);
    let (_, r) = run_workflow(
        &client,
        q,
        json!({
            "nodes": [
                {"id": "a", "task": "stage"},
                {"id": "calibrate", "task": "stage", "params": {"error": true, "message": "no solutions"}, "depends_on": ["a"]},
                {"id": "image", "task": "stage", "depends_on": ["calibrate"]}
            ]
        }),
    )
    .await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let failure = r.failure_reason.unwrap();
    assert_eq!(failure["name"], "$WorkflowNodeFailed", "{failure}");
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("\"calibrate\"") && message.contains("no solutions"),
        "{message}"
    );
    let report = &failure["details"]["workflow"];
    assert_eq!(report["state"], "failed");
    assert_eq!(node(report, "a")["state"], "completed");
    assert_eq!(node(report, "calibrate")["state"], "failed");
    assert_eq!(node(report, "calibrate")["failure"]["status"], "error");
    assert_eq!(node(report, "image")["state"], "skipped");
    assert_eq!(node(report, "image")["task_id"], Value::Null);
}

/// An optional node's failure (a child that failed for good) does not fail the workflow; only
/// the nodes depending on it are skipped.
#[tokio::test]
async fn an_optional_failing_node_does_not_fail_the_workflow() {
    let q = "wf-optional";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "2"]);
    let (_, r) = run_workflow(
        &client,
        q,
        json!({
            "nodes": [
                {"id": "a", "task": "stage", "params": {"produce": {"a": true}}},
                {"id": "extra", "task": "fail", "optional": true, "max_attempts": 1,
                 "params": {"message": "optional stage broke", "permanent": true}, "depends_on": ["a"]},
                {"id": "after-extra", "task": "stage", "depends_on": ["extra"]},
                {"id": "main", "task": "stage", "depends_on": ["a"]}
            ]
        }),
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let report = r.result.unwrap();
    assert_eq!(report["state"], "completed");
    let extra = node(&report, "extra");
    assert_eq!(extra["state"], "failed");
    assert_eq!(extra["optional"], true);
    assert_eq!(extra["failure"]["message"], "optional stage broke");
    assert_eq!(node(&report, "after-extra")["state"], "skipped");
    assert_eq!(node(&report, "main")["state"], "completed");
    assert_eq!(node(&report, "main")["outputs"], json!({"a": true}));
}

/// Cancelling the workflow (absurd.cancel_task, as any client would) cancels its child that is
/// still going, through the schema's cascade.
#[tokio::test]
async fn cancelling_the_workflow_cancels_its_running_child() {
    let q = "wf-cancel";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "2"]);
    let wf = client
        .spawn(
            q,
            "workflow",
            &json!({"nodes": [
                {"id": "wait", "task": "wait-event", "params": {"event": "never-emitted"}},
                {"id": "after", "task": "stage", "depends_on": ["wait"]}
            ]}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let child = wait_for("the workflow's child to wait", LIMIT, || async {
        let kids = client.task_children(q, wf).await.unwrap();
        let (cq, id) = kids.first()?.clone();
        let t = client.task_result(&cq, id).await.unwrap()?;
        (t.state == State::Sleeping).then_some(id)
    })
    .await;
    // The workflow itself is suspended on its child.
    wait_for("the workflow to suspend", LIMIT, || async {
        let t = client.task_result(q, wf).await.unwrap()?;
        (t.state == State::Sleeping).then_some(())
    })
    .await;
    client.cancel_task(q, wf).await.unwrap();
    let r = terminal(&client, q, child, LIMIT).await;
    assert_eq!(r.state, State::Cancelled, "{r:?}");
    let w = terminal(&client, q, wf, LIMIT).await;
    assert_eq!(w.state, State::Cancelled);
}

/// The workflow's children by node id (the header `absurd_host.workflow_node`), with their
/// state.
async fn nodes_of(client: &Client, q: &str, wf: Uuid) -> Vec<(String, Uuid, State)> {
    let mut out = Vec::new();
    for (cq, id) in client.task_children(q, wf).await.unwrap() {
        let t = client.get_task(&cq, id).await.unwrap().unwrap();
        let node = t
            .headers
            .as_ref()
            .and_then(|h| h["absurd_host.workflow_node"].as_str())
            .unwrap_or_default()
            .to_string();
        out.push((node, id, t.summary.state));
    }
    out
}

/// absurd:task@0.2.1 `await-any-task-result`: the workflow reacts to whichever running node
/// ends first. `slow` (defined first) waits for an event the test emits only later; `fast`
/// (defined second) completes at once, and its dependent `after-fast` starts and completes
/// while `slow` is still waiting. (A runner awaiting its nodes in definition order would not
/// start `after-fast` before `slow` ends.) The first answer replays: the spawns are replayed
/// from their checkpoints, one per node.
#[tokio::test]
async fn a_node_whose_parent_ends_first_starts_before_earlier_nodes_end() {
    let q = "wf-any";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "2"]);
    let wf = client
        .spawn(
            q,
            "workflow",
            &json!({"nodes": [
                {"id": "slow", "task": "wait-event", "params": {"event": "release-slow"}},
                {"id": "fast", "task": "stage", "params": {"produce": {"fast": 1}}},
                {"id": "after-fast", "task": "stage", "depends_on": ["fast"]},
                {"id": "after-all", "task": "stage", "depends_on": ["slow", "after-fast"]}
            ]}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    // `after-fast` completes while `slow` still waits for its event.
    wait_for(
        "`after-fast` to complete while `slow` waits",
        LIMIT,
        || async {
            let nodes = nodes_of(&client, q, wf).await;
            let state = |n: &str| nodes.iter().find(|x| x.0 == n).map(|x| x.2);
            (state("after-fast") == Some(State::Completed)).then_some(())
        },
    )
    .await;
    let nodes = nodes_of(&client, q, wf).await;
    let slow = nodes.iter().find(|x| x.0 == "slow").unwrap();
    assert_eq!(slow.2, State::Sleeping, "{nodes:?}");
    assert!(
        !nodes.iter().any(|x| x.0 == "after-all"),
        "after-all must wait for slow: {nodes:?}"
    );
    client
        .emit_event(q, "release-slow", Some(&json!({"go": true})))
        .await
        .unwrap();
    let r = terminal(&client, q, wf, LIMIT).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let report = r.result.unwrap();
    for id in ["slow", "fast", "after-fast", "after-all"] {
        assert_eq!(node(&report, id)["state"], "completed", "{report}");
    }
    assert_eq!(node(&report, "after-all")["outputs"], json!({"fast": 1}));
    // Each node spawned once, its id kept in a checkpoint of the spawn's key; the waits are
    // answered in the order the nodes ended: fast, after-fast, slow, after-all.
    let t = client.get_task(q, wf).await.unwrap().unwrap();
    let cp = |name: &str| {
        t.checkpoints
            .iter()
            .find(|c| c.checkpoint_name == name)
            .map(|c| c.state.clone())
    };
    for n in ["slow", "fast", "after-fast", "after-all"] {
        let id = child_id(&report, n);
        assert_eq!(
            cp(&format!("$absurd_host.spawn:{q}:{wf}:{n}")),
            Some(json!(id.to_string())),
            "{:?}",
            t.checkpoints
        );
    }
    let answered: Vec<String> = ["$awaitAny", "$awaitAny#2", "$awaitAny#3", "$awaitAny#4"]
        .iter()
        .map(|name| {
            let v = cp(name).unwrap_or_else(|| panic!("no checkpoint {name}: {:?}", t.checkpoints));
            let id: Uuid = v["task_id"].as_str().unwrap().parse().unwrap();
            ["slow", "fast", "after-fast", "after-all"]
                .into_iter()
                .find(|n| child_id(&report, n) == id)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(answered, ["fast", "after-fast", "slow", "after-all"]);
    assert_eq!(
        client
            .list_tasks(&absurd_client::TaskFilter {
                queue: Some(q.to_string()),
                ..Default::default()
            })
            .await
            .unwrap()
            .total,
        5
    );
}

/// A required node that fails while a sibling is still running (a builtin `sleep` holding a
/// slot for five minutes) and another is suspended (waiting for an event that never comes):
/// the workflow fails at once, naming the node, and both siblings end cancelled (the
/// workflow's `cancel-child`), shown so in its report.
#[tokio::test]
async fn a_failing_required_node_cancels_its_running_siblings() {
    let q = "wf-fail-cancels";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "4"]);
    let (wf, r) = run_workflow(
        &client,
        q,
        json!({"nodes": [
            {"id": "sleeper", "task": "sleep", "params": {"seconds": 300}},
            {"id": "waiter", "task": "wait-event", "params": {"event": "never-emitted"}},
            {"id": "broken", "task": "fail", "max_attempts": 1,
             "params": {"message": "stage broke", "permanent": true}},
            {"id": "after", "task": "stage", "depends_on": ["sleeper", "broken"]}
        ]}),
    )
    .await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let failure = r.failure_reason.unwrap();
    assert_eq!(failure["name"], "$WorkflowNodeFailed", "{failure}");
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("\"broken\"") && message.contains("stage broke"),
        "{message}"
    );
    let report = &failure["details"]["workflow"];
    assert_eq!(node(report, "broken")["state"], "failed", "{report}");
    assert_eq!(node(report, "after")["state"], "skipped", "{report}");
    for sibling in ["sleeper", "waiter"] {
        assert_eq!(node(report, sibling)["state"], "cancelled", "{report}");
        let id = child_id(report, sibling);
        let t = terminal(&client, q, id, LIMIT).await;
        assert_eq!(t.state, State::Cancelled, "{sibling}: {t:?}");
    }
    let nodes = nodes_of(&client, q, wf).await;
    assert!(
        nodes.is_empty(),
        "the failed workflow forgets its children: {nodes:?}"
    );
}

/// `Client::cancel_child` (the SQL behind `cancel-child`) cancels only a task's own children.
#[tokio::test]
async fn cancel_child_is_limited_to_the_task_s_children() {
    let q = "wf-cancel-child";
    let (_db, client) = setup(q).await;
    let parent = client
        .spawn(q, "stage", &json!({}), &once())
        .await
        .unwrap()
        .task_id;
    let stranger = client
        .spawn(q, "stage", &json!({}), &once())
        .await
        .unwrap()
        .task_id;
    let child = client
        .spawn_child(q, "stage", &json!({}), &once(), q, parent)
        .await
        .unwrap()
        .task_id;
    assert_eq!(
        client.cancel_child(q, parent, q, stranger).await.unwrap(),
        None
    );
    assert_eq!(
        client
            .task_result(q, stranger)
            .await
            .unwrap()
            .unwrap()
            .state,
        State::Pending
    );
    assert_eq!(
        client.cancel_child(q, parent, q, child).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        client.task_result(q, child).await.unwrap().unwrap().state,
        State::Cancelled
    );
    assert_eq!(
        client.cancel_child(q, parent, q, child).await.unwrap(),
        Some(false)
    );
}

/// A child finished by another worker through the plain SQL functions (claim_task,
/// complete_run, as the Python SDK's worker calls them) wakes the waiting workflow.
#[tokio::test]
async fn a_child_completed_by_another_worker_wakes_the_workflow() {
    let q = "wf-outside";
    let other = "wf-elsewhere";
    let (db, client) = setup(q).await;
    client.create_queue(other).await.unwrap();
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q]);
    let wf = client
        .spawn(
            q,
            "workflow",
            &json!({"nodes": [
                {"id": "outside", "task": "external-stage", "queue": other},
                {"id": "inside", "task": "stage", "depends_on": ["outside"]}
            ]}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    // This test is the other worker: it claims the child and completes it.
    let run = wait_for("the child to be spawned", LIMIT, || async {
        client
            .claim(other, "other-worker", 60, 1)
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(run.task_name, "external-stage");
    wait_for("the workflow to suspend", LIMIT, || async {
        let t = client.task_result(q, wf).await.unwrap()?;
        (t.state == State::Sleeping).then_some(())
    })
    .await;
    let completed_at = std::time::Instant::now();
    client
        .complete_run(other, run.run_id, &json!({"outputs": {"from": "outside"}}))
        .await
        .unwrap();
    let r = terminal(&client, q, wf, LIMIT).await;
    // A figure, not an assertion: from the child's completion to the workflow's.
    eprintln!(
        "workflow finished {:?} after its child was completed elsewhere",
        completed_at.elapsed()
    );
    assert_eq!(r.state, State::Completed, "{r:?}");
    let report = r.result.unwrap();
    assert_eq!(node(&report, "outside")["queue"], other);
    assert_eq!(
        node(&report, "inside")["outputs"],
        json!({"from": "outside"})
    );
}

/// Definitions beyond the contract's limits, or malformed, fail the workflow permanently with
/// an error naming the limit or the fault.
#[tokio::test]
async fn invalid_definitions_are_refused_naming_the_limit() {
    let q = "wf-invalid";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "4"]);
    let many: Vec<Value> = (0..257)
        .map(|i| json!({"id": format!("n{i}"), "task": "stage"}))
        .collect();
    let deps: Vec<Value> = (0..33).map(|i| json!(format!("n{i}"))).collect();
    let mut wide: Vec<Value> = (0..33)
        .map(|i| json!({"id": format!("n{i}"), "task": "stage"}))
        .collect();
    wide.push(json!({"id": "sink", "task": "stage", "depends_on": deps}));
    let cases = [
        (json!({"nodes": many}), "max_nodes"),
        (json!({"nodes": wide}), "max_depends_on"),
        (
            json!({"nodes": [{"id": "bad id!", "task": "stage"}]}),
            "max_node_id_chars",
        ),
        (
            json!({"nodes": [{"id": &"x".repeat(65), "task": "stage"}]}),
            "max_node_id_chars",
        ),
        (
            json!({"nodes": [
                {"id": "a", "task": "stage", "depends_on": ["b"]},
                {"id": "b", "task": "stage", "depends_on": ["a"]}
            ]}),
            "cycle",
        ),
        (
            json!({"nodes": [{"id": "a", "task": "stage", "depends_on": ["ghost"]}]}),
            "\"ghost\", which is not a node",
        ),
    ];
    let mut ids = Vec::new();
    for (params, _) in &cases {
        ids.push(
            client
                .spawn(q, "workflow", params, &common::no_backoff(3))
                .await
                .unwrap()
                .task_id,
        );
    }
    for (id, (_, expect)) in ids.into_iter().zip(cases.iter()) {
        let r = terminal(&client, q, id, LIMIT).await;
        assert_eq!(r.state, State::Failed, "{r:?}");
        let f = r.failure_reason.unwrap();
        assert_eq!(f["name"], "$InvalidWorkflow", "{f}");
        assert!(f["message"].as_str().unwrap().contains(expect), "{f}");
        // Permanent: one attempt although three were allowed.
        let details = client.get_task(q, id).await.unwrap().unwrap();
        assert_eq!(details.runs.len(), 1, "{expect}");
        // Nothing was spawned.
        assert!(client.task_children(q, id).await.unwrap().is_empty());
    }
}

/// `noop` is built for absurd:task@0.1.0 and `fanout` for @0.2.0; both run unchanged next to
/// 0.2.1 components (the 0.2.0 one through wasmtime's semver-compatible linking), `noop` also
/// as a workflow's node.
#[tokio::test]
async fn components_of_0_1_0_and_0_2_0_still_run_beside_0_2_1() {
    let dir = components_dir();
    let world = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            text.contains("absurd:task/types@0.1.0"),
            text.contains("absurd:task/types@0.2.0"),
            text.contains("absurd:task/types@0.2.1"),
        )
    };
    assert_eq!(
        world("noop.wasm"),
        (true, false, false),
        "noop targets 0.1.0 only"
    );
    assert_eq!(
        world("fanout.wasm"),
        (false, true, false),
        "fanout targets 0.2.0 only"
    );
    assert_eq!(
        world("workflow.wasm"),
        (false, false, true),
        "workflow targets 0.2.1"
    );

    let q = "wf-worlds";
    let (db, client) = setup(q).await;
    let w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "2"]);
    let direct = client
        .spawn(q, "noop", &json!({"v": 1}), &once())
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, q, direct, LIMIT).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert_eq!(r.result, Some(json!({"v": 1})));

    let (_, r) = run_workflow(
        &client,
        q,
        json!({"nodes": [
            {"id": "old", "task": "noop", "params": {"outputs": "overridden"}},
            {"id": "new", "task": "stage", "depends_on": ["old"]}
        ]}),
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let report = r.result.unwrap();
    assert_eq!(node(&report, "old")["state"], "completed");
    assert_eq!(node(&report, "new")["state"], "completed");
    // A 0.2.0 component waiting for its children (await-task-result, spawn).
    let fan = client
        .spawn(
            q,
            "fanout",
            &json!({"task": "noop", "items": [{"n": 1}, {"n": 2}]}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, q, fan, LIMIT).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert_eq!(r.result.unwrap()["results"][1]["result"], json!({"n": 2}));
    // The host bound each component to its own world.
    let log = w.log_text();
    assert!(
        log.contains(r#"task="noop" world="0.1.0""#)
            && log.contains(r#"task="fanout" world="0.2.0""#)
            && log.contains(r#"task="workflow" world="0.2.1""#),
        "{log}"
    );
}

/// The guest SDK's fan-out/fan-in: `spawn_once` for each item, `join_all`, then
/// `spawn_and_wait`; and `await_task_result` with a timeout that passes.
#[tokio::test]
async fn fanout_joins_children_and_times_out() {
    let q = "wf-fanout";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "2"]);
    let id = client
        .spawn(
            q,
            "fanout",
            &json!({"task": "echo", "items": [1, 2, 3, 4, 5], "then": {"last": true}}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, q, id, LIMIT).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    let results: Vec<Value> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["state"], "completed", "{o}");
            o["result"].clone()
        })
        .collect();
    assert_eq!(
        results,
        vec![json!(1), json!(2), json!(3), json!(4), json!(5)]
    );
    assert_eq!(out["then"], json!({"last": true}));
    // Five children plus the last: each spawned once, whatever the re-runs.
    let children = out["children"].as_array().unwrap();
    assert_eq!(children.len(), 5);
    let echoes = client
        .list_tasks(&absurd_client::TaskFilter {
            queue: Some(q.to_string()),
            task_name: Some("echo".to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(echoes.total, 6, "{echoes:?}");

    // A child that never ends: the wait gives up after its timeout.
    let id = client
        .spawn(
            q,
            "fanout",
            &json!({"task": "wait-event", "items": [{"event": "never"}], "timeout_seconds": 1}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, q, id, LIMIT).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert_eq!(r.result.unwrap()["timed_out"], true);
}

/// On a schema installed by `absurdctl init` (no migration 0019: no wake-up trigger, no
/// children registry) a workflow still completes: its waits poll.
#[tokio::test]
async fn workflows_run_on_an_absurdctl_schema_by_polling() {
    let q = "wf-upstream";
    let db = TestDb::upstream().await;
    let client = Client::new(db.pool.clone());
    client.create_queue(q).await.unwrap();
    assert!(!client.has_task_results().await.unwrap());
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "1"]);
    let (_, r) = run_workflow(
        &client,
        q,
        json!({"nodes": [
            {"id": "a", "task": "stage", "params": {"produce": {"a": 1}}},
            {"id": "b", "task": "echo", "depends_on": ["a"]}
        ]}),
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let report = r.result.unwrap();
    assert_eq!(node(&report, "b")["outputs"], json!({"a": 1}));
}

/// Children run by the Python SDK's own worker (`Absurd.work_batch`, which settles through
/// `complete_run` and `fail_run`) wake the workflow waiting for them: the wake-up does not
/// depend on which worker finished the child.
#[tokio::test]
async fn children_run_by_the_python_sdk_worker_wake_the_workflow() {
    let q = "wf-ours";
    let py_queue = "wf-python";
    let (db, client) = setup(q).await;
    client.create_queue(py_queue).await.unwrap();
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q]);
    let wf = client
        .spawn(
            q,
            "workflow",
            &json!({"nodes": [
                {"id": "py-echo", "task": "echo", "queue": py_queue, "params": {"from": "python"}},
                {"id": "py-fail", "task": "fail", "queue": py_queue, "optional": true,
                 "max_attempts": 1, "params": {"message": "boom from python"}},
                {"id": "after", "task": "stage", "depends_on": ["py-echo"]}
            ]}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let script = common::repo_root().join("tests/interop/sdk_worker.py");
    let mut python = tokio::process::Command::new(common::venv_bin("python"))
        .arg(&script)
        .args(["--url", &db.url, "--queue", py_queue])
        .args(["--until-idle", "5", "--deadline", "80"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python SDK worker");
    let r = terminal(&client, q, wf, LIMIT).await;
    let _ = python.kill().await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let report = r.result.unwrap();
    assert_eq!(node(&report, "py-echo")["state"], "completed", "{report}");
    assert_eq!(node(&report, "py-fail")["state"], "failed", "{report}");
    assert_eq!(
        node(&report, "py-fail")["failure"]["message"],
        "boom from python",
        "{report}"
    );
    assert_eq!(node(&report, "after")["state"], "completed", "{report}");
}

/// What one run may wait for is bounded: `max_awaits` calls per run, and an awaited outcome
/// read back within `max_checkpoint_bytes` (measured in SQL before it is sent); both fail the
/// run permanently with `$LimitExceeded` naming the limit.
#[tokio::test]
async fn awaits_are_bounded_by_the_run_limits() {
    let q = "wf-limits";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "2"]);
    let too_many = client
        .spawn(
            q,
            "fanout-tight",
            &json!({"task": "echo", "items": [1, 2, 3]}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let too_big = client
        .spawn(
            q,
            "fanout-tight",
            &json!({"task": "echo", "items": ["x".repeat(4096)]}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    for (id, limit) in [(too_many, "max_awaits"), (too_big, "max_checkpoint_bytes")] {
        let r = terminal(&client, q, id, LIMIT).await;
        assert_eq!(r.state, State::Failed, "{r:?}");
        let f = r.failure_reason.unwrap();
        assert_eq!(f["name"], "$LimitExceeded", "{f}");
        assert_eq!(f["details"]["limit"], limit, "{f}");
    }
}
