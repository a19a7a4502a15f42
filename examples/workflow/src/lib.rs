//! `workflow`: runs a DAG of task nodes (docs/workflows.md; the contract with the API side is
//! `WORKFLOW-CONTRACT`, summarised there).
//!
//! Each node is a task spawned as a child of the workflow (headers
//! `absurd_host.parent_task_id` and `absurd_host.workflow_node`, idempotency key
//! `<workflow task id>:<node id>`, so a re-run finds the same children). Nodes whose
//! dependencies have all completed are spawned together and run in parallel; the workflow waits
//! for whichever of them ends first with `await_any` (absurd:task@0.2.1
//! `await-any-task-result`), suspended (holding no worker slot) until one ends. A
//! node's params follow the DSA-110 chain contract: `{config, inputs, outputs, chain_name}`
//! over its params template, `outputs` being the merge of its parents' `outputs`.
//!
//! When a required node fails, the nodes still running are cancelled (`cancel_child`, which
//! also cancels their own children) and shown as `cancelled` in the report.
//!
//! The workflow is deterministic: every re-execution makes the same spawns (replayed by the
//! host from the checkpoints of their idempotency keys) and the same waits (replayed from
//! their checkpoints, which record which node ended first) in the same order.

use std::collections::{BTreeMap, HashMap};

use absurd_guest::{Context, SpawnOptions, TaskError, TaskOutcome};
use serde_json::{json, Map, Value};

/// Limits of a definition (refused with an error naming the limit).
const MAX_NODES: usize = 256;
const MAX_ID_CHARS: usize = 64;
const MAX_DEPENDS_ON: usize = 32;

const INVALID: &str = "$InvalidWorkflow";
const NODE_FAILED: &str = "$WorkflowNodeFailed";

/// One node of the definition.
struct Node {
    id: String,
    task: String,
    queue: Option<String>,
    params: Map<String, Value>,
    depends_on: Vec<usize>,
    optional: bool,
    max_attempts: Option<u32>,
}

/// The definition, validated.
struct Definition {
    name: Option<String>,
    nodes: Vec<Node>,
    config: Value,
    inputs: Map<String, Value>,
}

#[derive(Clone, Debug)]
enum State {
    Pending,
    Running(String),
    Completed(String, Value),
    Failed(Option<String>, Value),
    Cancelled(String),
    Skipped,
}

fn invalid(message: String) -> TaskError {
    TaskError::permanent(INVALID, message)
}

fn object(v: Option<&Value>, what: &str) -> Result<Map<String, Value>, TaskError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(invalid(format!(
            "{what} must be a JSON object, found {other}"
        ))),
    }
}

fn text<'a>(
    v: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, TaskError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!(
            "{what}: `{key}` must be text, found {other}"
        ))),
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&id.chars().count())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn parse(params: &Value) -> Result<Definition, TaskError> {
    let top = object(Some(params), "the workflow's params")?;
    let name = text(&top, "name", "the workflow")?.map(str::to_string);
    let config = top.get("config").cloned().unwrap_or_else(|| json!({}));
    let inputs = object(top.get("inputs"), "the workflow's `inputs`")?;
    let raw = match top.get("nodes") {
        Some(Value::Array(a)) => a,
        Some(other) => return Err(invalid(format!("`nodes` must be a list, found {other}"))),
        None => return Err(invalid("the workflow has no `nodes` list".into())),
    };
    if raw.is_empty() {
        return Err(invalid("the workflow has no nodes".into()));
    }
    if raw.len() > MAX_NODES {
        return Err(invalid(format!(
            "the workflow has {} nodes; the limit is {MAX_NODES} (max_nodes)",
            raw.len()
        )));
    }
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut ids = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let n = object(Some(n), &format!("node #{}", i + 1))?;
        let id = text(&n, "id", &format!("node #{}", i + 1))?
            .ok_or_else(|| invalid(format!("node #{} has no `id`", i + 1)))?;
        if !valid_id(id) {
            return Err(invalid(format!(
                "node id {id:?}: ids are 1 to {MAX_ID_CHARS} characters of [A-Za-z0-9_.-] (max_node_id_chars)"
            )));
        }
        if index.insert(id.to_string(), i).is_some() {
            return Err(invalid(format!("node id {id:?} is used twice")));
        }
        ids.push(id.to_string());
    }
    let mut nodes = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let n = object(Some(n), "a node")?;
        let id = ids[i].clone();
        let what = format!("node {id:?}");
        let task = text(&n, "task", &what)?
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| invalid(format!("{what} has no `task`")))?
            .to_string();
        let queue = text(&n, "queue", &what)?.map(str::to_string);
        let params = object(n.get("params"), &format!("the `params` of {what}"))?;
        let deps = match n.get("depends_on") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.clone(),
            Some(other) => {
                return Err(invalid(format!(
                    "{what}: `depends_on` must be a list, found {other}"
                )))
            }
        };
        if deps.len() > MAX_DEPENDS_ON {
            return Err(invalid(format!(
                "{what} depends on {} nodes; the limit is {MAX_DEPENDS_ON} (max_depends_on)",
                deps.len()
            )));
        }
        let mut depends_on = Vec::with_capacity(deps.len());
        for d in &deps {
            let d = d
                .as_str()
                .ok_or_else(|| invalid(format!("{what}: `depends_on` holds {d}, not a node id")))?;
            let j = *index
                .get(d)
                .ok_or_else(|| invalid(format!("{what} depends on {d:?}, which is not a node")))?;
            if j == i {
                return Err(invalid(format!("{what} depends on itself")));
            }
            if !depends_on.contains(&j) {
                depends_on.push(j);
            }
        }
        let optional = match n.get("optional") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(format!(
                    "{what}: `optional` must be true or false, found {other}"
                )))
            }
        };
        let max_attempts = match n.get("max_attempts") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|m| (1..=u64::from(u32::MAX)).contains(m))
                    .ok_or_else(|| {
                        invalid(format!(
                            "{what}: `max_attempts` must be a whole number >= 1, found {v}"
                        ))
                    })? as u32,
            ),
        };
        nodes.push(Node {
            id,
            task,
            queue,
            params,
            depends_on,
            optional,
            max_attempts,
        });
    }
    check_acyclic(&nodes)?;
    Ok(Definition {
        name,
        nodes,
        config,
        inputs,
    })
}

/// Kahn's algorithm: refuses a definition whose dependencies form a cycle, naming a node on it.
fn check_acyclic(nodes: &[Node]) -> Result<(), TaskError> {
    let mut indegree: Vec<usize> = nodes.iter().map(|n| n.depends_on.len()).collect();
    let mut children: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &d in &n.depends_on {
            children[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = ready.pop() {
        seen += 1;
        for &c in &children[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    if seen < nodes.len() {
        let on_cycle = (0..nodes.len()).find(|&i| indegree[i] > 0).unwrap_or(0);
        return Err(invalid(format!(
            "the dependencies form a cycle (through node {:?})",
            nodes[on_cycle].id
        )));
    }
    Ok(())
}

/// A parent's `outputs`: its result's `outputs` field if it is an object that has one.
fn outputs_of(result: &Value) -> Value {
    match result.get("outputs") {
        Some(o @ Value::Object(_)) => o.clone(),
        _ => json!({}),
    }
}

/// The DSA-110 convention: a result `{"status": "error", …}` is a failure.
fn is_error_result(result: &Value) -> bool {
    result.get("status").and_then(Value::as_str) == Some("error")
}

fn node_params(def: &Definition, node: &Node, states: &[State]) -> Value {
    let mut params = node.params.clone();
    let mut inputs = object(params.get("inputs"), "").unwrap_or_default();
    for (k, v) in &def.inputs {
        inputs.insert(k.clone(), v.clone());
    }
    let mut outputs = Map::new();
    for &d in &node.depends_on {
        if let State::Completed(_, Value::Object(o)) = &states[d] {
            for (k, v) in o {
                outputs.insert(k.clone(), v.clone());
            }
        }
    }
    params.insert("config".into(), def.config.clone());
    params.insert("inputs".into(), Value::Object(inputs));
    params.insert("outputs".into(), Value::Object(outputs));
    params.insert(
        "chain_name".into(),
        def.name.clone().map(Value::String).unwrap_or(Value::Null),
    );
    Value::Object(params)
}

fn workflow(ctx: &Context, params: Value) -> Result<Value, TaskError> {
    let def = parse(&params)?;
    let me = ctx.info().task_id.clone();
    let own_queue = ctx.info().queue.clone();
    let mut states = vec![State::Pending; def.nodes.len()];
    let mut failed_node: Option<usize> = None;

    loop {
        // Settle what can be settled without waiting: skip the nodes whose parents did not
        // complete, spawn the nodes whose parents all did (unless the workflow has failed).
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..def.nodes.len() {
                if !matches!(states[i], State::Pending) {
                    continue;
                }
                let node = &def.nodes[i];
                let deps: Vec<&State> = node.depends_on.iter().map(|&d| &states[d]).collect();
                if deps
                    .iter()
                    .any(|s| matches!(s, State::Failed(..) | State::Cancelled(_) | State::Skipped))
                {
                    states[i] = State::Skipped;
                    changed = true;
                } else if failed_node.is_none()
                    && deps.iter().all(|s| matches!(s, State::Completed(..)))
                {
                    let queue = node.queue.clone().unwrap_or_else(|| own_queue.clone());
                    let mut options = SpawnOptions::new()
                        .queue(queue)
                        .idempotency_key(format!("{me}:{}", node.id))
                        .headers(json!({
                            "absurd_host.parent_task_id": me,
                            "absurd_host.workflow_node": node.id,
                        }));
                    if let Some(m) = node.max_attempts {
                        options = options.max_attempts(m);
                    }
                    let p = node_params(&def, node, &states);
                    let id = ctx.spawn(&node.task, &p, options).map_err(|e| {
                        TaskError::permanent(
                            NODE_FAILED,
                            format!(
                                "node {:?} (task {:?}) could not be spawned: {}",
                                node.id,
                                node.task,
                                e.message()
                            ),
                        )
                    })?;
                    states[i] = State::Running(id);
                    changed = true;
                }
            }
        }
        // The running nodes, in definition order (the list of the wait below, so the same on
        // every replay).
        let running: Vec<(usize, String, String)> = (0..def.nodes.len())
            .filter_map(|i| match &states[i] {
                State::Running(id) => Some((
                    i,
                    id.clone(),
                    def.nodes[i]
                        .queue
                        .clone()
                        .unwrap_or_else(|| own_queue.clone()),
                )),
                _ => None,
            })
            .collect();
        if running.is_empty() {
            break;
        }
        if failed_node.is_some() {
            // A required node failed: the workflow fails, and the nodes still running are of no
            // use to it any more. Cancel them (and, by the cascade, their own children).
            for (i, id, queue) in &running {
                match ctx.cancel_child(id, Some(queue)) {
                    Ok(true) => states[*i] = State::Cancelled(id.clone()),
                    // It ended meanwhile: its outcome was not awaited, it stays `pending`.
                    Ok(false) => {}
                    // A database without records of children: the node runs on.
                    Err(e) => absurd_guest::warn!(
                        "node {:?} could not be cancelled: {}",
                        def.nodes[*i].id,
                        e.message()
                    ),
                }
            }
            break;
        }
        // Wait for whichever running node ends first: its dependents start at once, and a
        // failure is seen as soon as it happens. The host records which one it was, so a
        // replay takes the same path.
        let tasks: Vec<(&str, Option<&str>)> = running
            .iter()
            .map(|(_, id, queue)| (id.as_str(), Some(queue.as_str())))
            .collect();
        let (k, outcome) = ctx.await_any(&tasks, None).ok_or_else(|| {
            TaskError::retryable(
                NODE_FAILED,
                format!("no outcome for any of {} running nodes", running.len()),
            )
        })?;
        let (i, id, _) = running[k].clone();
        let node = &def.nodes[i];
        states[i] = match outcome {
            TaskOutcome::Completed(result) if is_error_result(&result) => {
                State::Failed(Some(id), result)
            }
            TaskOutcome::Completed(result) => State::Completed(id, outputs_of(&result)),
            TaskOutcome::Failed(failure) => State::Failed(Some(id), failure),
            TaskOutcome::Cancelled => State::Cancelled(id),
        };
        if matches!(states[i], State::Failed(..) | State::Cancelled(_)) && !node.optional {
            failed_node = Some(i);
        }
    }

    let report = report(&def, &own_queue, &states, failed_node.is_some());
    if let Some(i) = failed_node {
        let node = &def.nodes[i];
        let (what, failure) = match &states[i] {
            State::Failed(_, f) => {
                let msg = f
                    .get("message")
                    .and_then(Value::as_str)
                    .or_else(|| f.get("error").and_then(Value::as_str))
                    .unwrap_or("(no message)")
                    .to_string();
                (format!("failed: {msg}"), f.clone())
            }
            _ => ("was cancelled".to_string(), Value::Null),
        };
        return Err(TaskError::permanent(
            NODE_FAILED,
            format!("node {:?} (task {:?}) {what}", node.id, node.task),
        )
        .with_details(json!({"node": node.id, "failure": failure, "workflow": report})));
    }
    Ok(report)
}

fn report(def: &Definition, own_queue: &str, states: &[State], failed: bool) -> Value {
    let nodes: Vec<Value> = def
        .nodes
        .iter()
        .zip(states)
        .map(|(n, s)| {
            let (state, task_id, outputs, failure) = match s {
                State::Pending => ("pending", None, Value::Null, Value::Null),
                State::Running(id) => ("pending", Some(id.clone()), Value::Null, Value::Null),
                State::Completed(id, o) => ("completed", Some(id.clone()), o.clone(), Value::Null),
                State::Failed(id, f) => ("failed", id.clone(), Value::Null, f.clone()),
                State::Cancelled(id) => ("cancelled", Some(id.clone()), Value::Null, Value::Null),
                State::Skipped => ("skipped", None, Value::Null, Value::Null),
            };
            let mut m = BTreeMap::new();
            m.insert("id", json!(n.id));
            m.insert("task", json!(n.task));
            m.insert("queue", json!(n.queue.as_deref().unwrap_or(own_queue)));
            m.insert("task_id", json!(task_id));
            m.insert("state", json!(state));
            m.insert("outputs", outputs);
            m.insert("failure", failure);
            m.insert("optional", json!(n.optional));
            json!(m)
        })
        .collect();
    json!({
        "name": def.name,
        "state": if failed { "failed" } else { "completed" },
        "nodes": nodes,
    })
}

absurd_guest::export_task!(workflow);
