//! Workflows: `POST /workflows` (a named workflow or an inline DAG), `GET /workflows/{task_id}`
//! (its DAG with each node's child task), `POST /tasks/with-deps` (tasks with dependencies,
//! as an inline workflow) and `POST /groups` (the streaming bridge's `submit_group`).
//!
//! Each of them spawns one task named `workflow` whose params are the runner's contract
//! (`crate::workflow::task_params`); the runner, a wasm component, spawns the nodes. Nothing
//! is spawned when a definition is refused. The functions here are shared with
//! `absurd-host workflow` and `absurd-host submit-group`, which print the same types.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TaskId};
use super::model::{
    check_queue_name, ErrorBody, GroupRequest, GroupSubmitted, NodeSpec, NodeState, TaskQueueQuery,
    WithDepsRequest, WorkflowNode, WorkflowStartRequest, WorkflowStarted, WorkflowView,
    MAX_ATTEMPTS, MAX_GROUP_FILES, MAX_GROUP_ID_BYTES, MAX_NAME_BYTES, MAX_PATH_CHARS,
};
use super::{ApiSettings, AppState};
use crate::workflow::{check_id, check_nodes, task_params, Names};
use absurd_client::workflows::{WorkflowChild, MAX_CHILDREN, WORKFLOW_TASK};
use absurd_client::{Client, SpawnOptions};
use absurd_engine::metrics::Event;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The workflow `submit_group` starts for a calibrator group.
pub const CALIBRATOR_WORKFLOW: &str = "calibrator";
/// The workflow `submit_group` starts for any other group.
pub const STANDARD_WORKFLOW: &str = "standard-pipeline";

/// A workflow ready to spawn: its checked nodes and the workflow task's options.
pub struct Plan {
    pub name: Option<String>,
    pub nodes: Vec<NodeSpec>,
    pub config: Option<Value>,
    pub inputs: Option<Map<String, Value>>,
    pub queue: String,
    pub idempotency_key: Option<String>,
    pub max_attempts: Option<i64>,
}

fn check_key(key: Option<&String>) -> Result<(), ApiError> {
    if let Some(k) = key {
        if k.is_empty() || k.len() > MAX_NAME_BYTES || k.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "idempotency_key must be 1 to {MAX_NAME_BYTES} bytes long without NUL characters, got {} bytes",
                k.len()
            )));
        }
    }
    Ok(())
}

/// `inputs` over `base`, key by key.
fn merged(
    base: Option<&Map<String, Value>>,
    over: Option<Map<String, Value>>,
) -> Option<Map<String, Value>> {
    match (base, over) {
        (None, over) => over,
        (Some(b), None) => Some(b.clone()),
        (Some(b), Some(o)) => {
            let mut m = b.clone();
            m.extend(o);
            Some(m)
        }
    }
}

impl Plan {
    /// `POST /workflows`: a definition of `settings.workflows` by name, or the inline nodes.
    pub fn from_request(
        req: WorkflowStartRequest,
        settings: &ApiSettings,
    ) -> Result<Plan, ApiError> {
        if let Some(n) = &req.name {
            check_id("name", n).map_err(ApiError::bad_request)?;
        }
        let (name, nodes, config, inputs, queue) = match req.nodes {
            Some(nodes) => {
                check_nodes(&nodes, Names::NODES).map_err(ApiError::bad_request)?;
                (req.name, nodes, req.config, req.inputs, None)
            }
            None => {
                let Some(name) = req.name else {
                    return Err(ApiError::bad_request(
                        "give `name` (a workflow of the server's configuration) or `nodes` (an inline DAG)",
                    ));
                };
                let Some(def) = settings.workflows.get(&name) else {
                    return Err(ApiError::not_found(format!(
                        "Workflow {name:?} not found: the server's configuration defines {} ([workflows.<name>] in absurd-host.toml, given to the server with --config)",
                        settings.workflows.names_text()
                    )));
                };
                (
                    Some(name),
                    def.nodes.clone(),
                    req.config.or_else(|| def.config.clone()),
                    merged(def.inputs.as_ref(), req.inputs),
                    def.queue.clone(),
                )
            }
        };
        let queue = req
            .queue_name
            .or(queue)
            .unwrap_or_else(|| settings.default_queue.clone());
        Ok(Plan {
            name,
            nodes,
            config,
            inputs,
            queue,
            idempotency_key: req.idempotency_key,
            max_attempts: req.max_attempts,
        })
    }

    /// `POST /tasks/with-deps`: the tasks as the nodes of an inline workflow.
    pub fn from_with_deps(req: WithDepsRequest, settings: &ApiSettings) -> Result<Plan, ApiError> {
        if let Some(n) = &req.name {
            check_id("name", n).map_err(ApiError::bad_request)?;
        }
        if req.tasks.len() > crate::workflow::MAX_NODES {
            return Err(ApiError::bad_request(format!(
                "tasks has {} entries; the limit is {}",
                req.tasks.len(),
                crate::workflow::MAX_NODES
            )));
        }
        let nodes: Vec<NodeSpec> = req
            .tasks
            .into_iter()
            .map(|t| NodeSpec {
                id: t.id.unwrap_or_else(|| t.task_name.clone()),
                task: t.task_name,
                queue: t.queue_name,
                params: t.params,
                depends_on: t.depends_on,
                optional: t.optional,
                max_attempts: t.max_attempts,
            })
            .collect();
        check_nodes(&nodes, Names::TASKS).map_err(ApiError::bad_request)?;
        Ok(Plan {
            name: req.name,
            nodes,
            config: req.config,
            inputs: req.inputs,
            queue: req
                .queue_name
                .unwrap_or_else(|| settings.default_queue.clone()),
            idempotency_key: req.idempotency_key,
            max_attempts: None,
        })
    }
}

/// Spawns the plan's `workflow` task after the last checks: the key, `max_attempts`, NUL
/// characters, the params' size (413 over `max_params_bytes`) and that every queue exists
/// (404 naming the first missing one and who needs it).
pub async fn start(
    client: &Client,
    settings: &ApiSettings,
    plan: Plan,
) -> Result<WorkflowStarted, ApiError> {
    check_queue_name("queue_name", &plan.queue)?;
    check_key(plan.idempotency_key.as_ref())?;
    if let Some(m) = plan.max_attempts {
        if !(1..=MAX_ATTEMPTS).contains(&m) {
            return Err(ApiError::bad_request(format!(
                "max_attempts must be an integer between 1 and {MAX_ATTEMPTS}, got {m}"
            )));
        }
    }
    let params = task_params(
        plan.name.as_deref(),
        &plan.nodes,
        plan.config.as_ref(),
        plan.inputs.as_ref(),
    );
    if absurd_client::jsonb::has_nul(&params) {
        return Err(ApiError::bad_request(
            "the workflow (its nodes' params, inputs or config) contains a NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    let size = params.to_string().len();
    if size > settings.max_params_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the workflow's params (nodes, inputs and config) are {size} bytes of JSON; the limit is {} bytes",
                settings.max_params_bytes
            ),
        ));
    }
    let mut queues = vec![plan.queue.clone()];
    queues.extend(plan.nodes.iter().filter_map(|n| n.queue.clone()));
    if let Some(q) = client.missing_queues(&queues).await?.first() {
        let who = if *q == plan.queue {
            "the workflow's queue".to_string()
        } else {
            let n = plan
                .nodes
                .iter()
                .find(|n| n.queue.as_ref() == Some(q))
                .map(|n| n.id.as_str())
                .unwrap_or_default();
            format!("the queue of node {n:?}")
        };
        return Err(ApiError::not_found(format!(
            "Queue {q:?} ({who}) not found (create it with `absurd-host queue create {q}`)"
        )));
    }
    let options = SpawnOptions {
        headers: None,
        retry_strategy: Some(crate::config::default_retry_strategy()),
        max_attempts: Some(
            plan.max_attempts
                .map_or(settings.default_max_attempts, |m| m as i32),
        ),
        cancellation: None,
        idempotency_key: plan.idempotency_key.clone(),
    };
    let s = client
        .spawn(&plan.queue, WORKFLOW_TASK, &params, &options)
        .await?;
    let (name, nodes) = if s.created {
        (plan.name, plan.nodes.len() as i64)
    } else {
        // The workflow the key already had: what it runs, not what was asked this time.
        let e = existing(
            client,
            &plan.queue,
            s.task_id,
            plan.idempotency_key.as_deref(),
        )
        .await?;
        (e.name, e.nodes.len() as i64)
    };
    Ok(WorkflowStarted {
        task_id: s.task_id,
        run_id: s.run_id,
        attempt: s.attempt,
        created: s.created,
        queue_name: plan.queue,
        task_name: WORKFLOW_TASK.to_string(),
        name,
        nodes,
    })
}

/// The params of the workflow an idempotency key already named; 409 when the key belongs to a
/// task that is not a workflow.
async fn existing(
    client: &Client,
    queue: &str,
    task_id: Uuid,
    key: Option<&str>,
) -> Result<StoredParams, ApiError> {
    let t = client
        .workflow_task(queue, task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Task {task_id} not found")))?;
    if t.task_name != WORKFLOW_TASK {
        return Err(ApiError::conflict(format!(
            "idempotency_key {:?} belongs to task {task_id} in queue {queue:?}, a {:?} task, not a workflow",
            key.unwrap_or_default(),
            t.task_name
        )));
    }
    serde_json::from_value(t.params.unwrap_or(Value::Null)).map_err(|e| {
        ApiError::conflict(format!(
            "Task {task_id} is a workflow task whose params are not a workflow definition: {e}"
        ))
    })
}

/// The directory part of an absolute path, as Python's `os.path.dirname` (which the bridge
/// used) gives it: everything before the last `/`, without trailing slashes (`/` stays `/`).
fn directory_of(path: &str) -> String {
    let head = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    match head.trim_end_matches('/') {
        "" => head.chars().take(1).collect(),
        dir => dir.to_string(),
    }
}

/// An observation time: RFC 3339, or `YYYY-MM-DDTHH:MM:SS[.f]` (or with a space) in UTC.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|t| t.and_utc())
}

/// `submit_group`: checks the group and starts its workflow once (idempotency key
/// `group:<group_id>` in the workflow's queue); a group submitted again gets its first
/// workflow back, `created: false`.
pub async fn submit_group(
    client: &Client,
    settings: &ApiSettings,
    req: GroupRequest,
) -> Result<GroupSubmitted, ApiError> {
    let g = &req.group_id;
    if g.trim().is_empty() {
        return Err(ApiError::bad_request("group_id must not be empty"));
    }
    if g.len() > MAX_GROUP_ID_BYTES || g.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "group_id must be at most {MAX_GROUP_ID_BYTES} bytes without NUL characters, got {} bytes",
            g.len()
        )));
    }
    if req.file_paths.is_empty() {
        return Err(ApiError::bad_request("file_paths must not be empty"));
    }
    if req.file_paths.len() > MAX_GROUP_FILES {
        return Err(ApiError::bad_request(format!(
            "file_paths has {} entries; the limit is {MAX_GROUP_FILES}",
            req.file_paths.len()
        )));
    }
    for (i, p) in req.file_paths.iter().enumerate() {
        let n = p.chars().count();
        if n > MAX_PATH_CHARS || p.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "file_paths[{i}] must be at most {MAX_PATH_CHARS} characters without NUL characters, got {n}"
            )));
        }
        if !p.starts_with('/') {
            return Err(ApiError::bad_request(format!(
                "file_paths[{i}] {p:?} is not an absolute path: the workers that read it may run anywhere"
            )));
        }
    }
    let input_path = directory_of(&req.file_paths[0]);
    let t = match &req.observed_at {
        Some(raw) => parse_time(raw).ok_or_else(|| {
            ApiError::bad_request(format!(
                "observed_at {raw:?} is not a time (RFC 3339, or YYYY-MM-DDTHH:MM:SS in UTC)"
            ))
        })?,
        None => parse_time(g).ok_or_else(|| {
            ApiError::bad_request(format!(
                "observed_at is needed: group_id {g:?} is not a time (YYYY-MM-DDTHH:MM:SS) to take it from"
            ))
        })?,
    };
    let iso = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let mut inputs = Map::new();
    inputs.insert("input_path".into(), Value::from(input_path));
    inputs.insert("file_list".into(), Value::from(req.file_paths.clone()));
    inputs.insert("group_id".into(), Value::from(g.clone()));
    inputs.insert(
        "start_time".into(),
        Value::from(iso(t - chrono::Duration::seconds(30))),
    );
    inputs.insert(
        "end_time".into(),
        Value::from(iso(t + chrono::Duration::minutes(5))),
    );
    let workflow = if req.is_calibrator {
        CALIBRATOR_WORKFLOW
    } else {
        STANDARD_WORKFLOW
    };
    let key = format!("group:{g}");
    let mut warnings = vec![];
    if req.priority.is_some_and(|p| p != 0) {
        warnings.push("priority is ignored: Absurd queues have no priorities".to_string());
    }
    let plan = Plan::from_request(
        WorkflowStartRequest {
            name: Some(workflow.to_string()),
            inputs: Some(inputs.clone()),
            config: req.config,
            queue_name: req.queue_name,
            idempotency_key: Some(key.clone()),
            ..Default::default()
        },
        settings,
    )?;
    let started = start(client, settings, plan).await?;
    let (workflow, inputs) = if started.created {
        (workflow.to_string(), Value::Object(inputs))
    } else {
        // Submitted before: its workflow and inputs as they were then.
        let e = existing(client, &started.queue_name, started.task_id, Some(&key)).await?;
        let first = e.name.unwrap_or_default();
        if first != workflow {
            warnings.push(format!(
                "the group was submitted before, as {first:?}; is_calibrator does not change it"
            ));
        }
        (first, e.inputs.unwrap_or(Value::Null))
    };
    Ok(GroupSubmitted {
        group_id: g.clone(),
        workflow,
        task_id: started.task_id,
        run_id: started.run_id,
        created: started.created,
        queue_name: started.queue_name,
        idempotency_key: key,
        inputs,
        warnings,
    })
}

/// A node as the workflow task's params hold it (read leniently: the runner may know more).
#[derive(Deserialize)]
struct StoredNode {
    id: String,
    task: String,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    optional: bool,
}

#[derive(Deserialize)]
struct StoredParams {
    #[serde(default)]
    name: Option<String>,
    nodes: Vec<StoredNode>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    inputs: Option<Value>,
}

/// `"<name>: <message>"` of a failure object.
fn failure_text(name: Option<&str>, message: Option<&str>) -> Option<String> {
    match (name, message) {
        (Some(n), Some(m)) => Some(format!("{n}: {m}")),
        (None, Some(m)) => Some(m.to_string()),
        (Some(n), None) => Some(n.to_string()),
        (None, None) => None,
    }
}

fn node_state(word: &str) -> Option<NodeState> {
    serde_json::from_value(Value::from(word)).ok()
}

/// The workflow task `task_id` (in `queue`, or looked up) with its nodes: each node's child
/// (found by the contract's idempotency key and parent header), and, once the workflow has
/// finished, what its result says of the node.
pub async fn show(
    client: &Client,
    task_id: Uuid,
    queue: Option<&str>,
) -> Result<WorkflowView, ApiError> {
    let not_found = || ApiError::not_found(format!("Task {task_id} not found"));
    let queue = match queue {
        Some(q) => {
            check_queue_name("queue_name", q)?;
            if !client.queue_exists(q).await? {
                return Err(ApiError::not_found(format!("Queue {q:?} not found")));
            }
            q.to_string()
        }
        None => client
            .find_task_queue(task_id)
            .await?
            .ok_or_else(not_found)?,
    };
    let t = client
        .workflow_task(&queue, task_id)
        .await?
        .ok_or_else(not_found)?;
    if t.task_name != WORKFLOW_TASK {
        return Err(ApiError::not_found(format!(
            "Task {task_id} is not a workflow: its task name is {:?}, not {WORKFLOW_TASK:?}",
            t.task_name
        )));
    }
    let stored: StoredParams = serde_json::from_value(t.params.clone().unwrap_or(Value::Null))
        .map_err(|e| {
            ApiError::conflict(format!(
                "Task {task_id} is a workflow task whose params are not a workflow definition: {e}"
            ))
        })?;
    if stored.nodes.len() > crate::workflow::MAX_NODES {
        return Err(ApiError::conflict(format!(
            "Task {task_id} has {} nodes; the limit is {}",
            stored.nodes.len(),
            crate::workflow::MAX_NODES
        )));
    }
    let queue_of = |n: &StoredNode| n.queue.clone().unwrap_or_else(|| queue.clone());
    let mut by_queue: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &stored.nodes {
        by_queue.entry(queue_of(n)).or_default().push(n.id.clone());
    }
    let mut children: HashMap<String, WorkflowChild> = HashMap::new();
    for (q, ids) in &by_queue {
        let ids = &ids[..ids.len().min(MAX_CHILDREN)];
        match client.workflow_children(q, task_id, ids).await {
            Ok(found) => {
                for c in found {
                    if let Some(node) = c.node.clone() {
                        children.insert(node, c); // oldest first: the newest wins
                    }
                }
            }
            // A node's queue that is gone: its child cannot be read.
            Err(absurd_client::ClientError::QueueNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // What the finished workflow says of each node.
    let reported: HashMap<String, Value> = t
        .completed_payload
        .as_ref()
        .and_then(|r| r.get("nodes"))
        .or_else(|| {
            t.failure_reason
                .as_ref()
                .and_then(|f| f.get("details"))
                .and_then(|d| d.get("nodes"))
        })
        .and_then(Value::as_array)
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| Some((n.get("id")?.as_str()?.to_string(), n.clone())))
                .collect()
        })
        .unwrap_or_default();
    let nodes = stored
        .nodes
        .iter()
        .map(|n| {
            let child = children.get(&n.id);
            let rep = reported.get(&n.id);
            let state = rep
                .and_then(|r| r.get("state"))
                .and_then(Value::as_str)
                .and_then(node_state)
                .or_else(|| child.map(|c| c.state.into()))
                .unwrap_or(NodeState::Pending);
            let task_id = child.map(|c| c.task_id).or_else(|| {
                rep.and_then(|r| r.get("task_id"))
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
            });
            let error = child
                .and_then(|c| failure_text(c.error_name.as_deref(), c.error_message.as_deref()))
                .or_else(|| {
                    let f = rep?.get("failure")?;
                    failure_text(
                        f.get("name").and_then(Value::as_str),
                        f.get("message").and_then(Value::as_str),
                    )
                });
            WorkflowNode {
                id: n.id.clone(),
                task: n.task.clone(),
                queue_name: queue_of(n),
                depends_on: n.depends_on.clone(),
                optional: n.optional,
                state,
                task_id,
                attempts: child.map(|c| c.attempts),
                created_at: child.map(|c| c.enqueue_at),
                error,
                outputs: rep
                    .and_then(|r| r.get("outputs"))
                    .filter(|o| !o.is_null())
                    .cloned(),
            }
        })
        .collect();
    let error = t.failure_reason.as_ref().and_then(|f| {
        failure_text(
            f.get("name").and_then(Value::as_str),
            f.get("message").and_then(Value::as_str),
        )
    });
    Ok(WorkflowView {
        task_id,
        queue_name: queue,
        name: stored.name,
        status: t.state.into(),
        attempts: t.attempts,
        created_at: t.enqueue_at,
        finished_at: t.finished_at,
        idempotency_key: t.idempotency_key,
        nodes,
        inputs: stored.inputs.unwrap_or(Value::Null),
        config: stored.config.unwrap_or(Value::Null),
        result: t.completed_payload,
        error: if t.state == absurd_client::State::Completed {
            None
        } else {
            error
        },
    })
}

fn count_spawn(st: &AppState, w: &WorkflowStarted) {
    if w.created {
        st.counters
            .add(&w.queue_name, WORKFLOW_TASK, Event::Spawned);
    }
}

/// Start a workflow: one of the server's configuration by name, or an inline DAG.
#[utoipa::path(
    post,
    path = "/api/absurd/workflows",
    operation_id = "startWorkflow",
    tag = "workflows",
    request_body(content = WorkflowStartRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Started: its `workflow` task (or the existing one for the idempotency key, `created: false`)", body = WorkflowStarted),
        (status = 400, description = "Invalid input: `detail` names the field and the value (an unknown dependency, a cycle, over 256 nodes, ...)", body = ErrorBody),
        (status = 404, description = "No workflow of that name in the server's configuration, or a queue does not exist", body = ErrorBody),
        (status = 409, description = "The idempotency key belongs to a task that is not a workflow", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or the workflow's params over 256 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn start_workflow(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<WorkflowStartRequest>,
) -> ApiResult<WorkflowStarted> {
    let plan = Plan::from_request(req, &st.settings)?;
    let w = start(&st.client, &st.settings, plan).await?;
    count_spawn(&st, &w);
    Ok(Json(w))
}

/// A workflow and its DAG: each node with its state and child task.
#[utoipa::path(
    get,
    path = "/api/absurd/workflows/{task_id}",
    operation_id = "getWorkflow",
    tag = "workflows",
    params(("task_id" = Uuid, Path, description = "The workflow task"), TaskQueueQuery),
    responses(
        (status = 200, description = "The workflow", body = WorkflowView),
        (status = 400, description = "`task_id` is not a UUID, or `queue_name` is invalid", body = ErrorBody),
        (status = 404, description = "No such task, no such queue, or the task is not a workflow", body = ErrorBody),
        (status = 409, description = "A `workflow` task whose params are not a workflow definition", body = ErrorBody),
    )
)]
pub(crate) async fn get_workflow(
    State(st): State<AppState>,
    TaskId(task_id): TaskId,
    ApiQuery(q): ApiQuery<TaskQueueQuery>,
) -> ApiResult<WorkflowView> {
    Ok(Json(
        show(&st.client, task_id, q.queue_name.as_deref()).await?,
    ))
}

/// Spawn tasks with dependencies: they run as one inline workflow, each task once those it
/// depends on have completed, with their outputs.
#[utoipa::path(
    post,
    path = "/api/absurd/tasks/with-deps",
    operation_id = "spawnTasksWithDeps",
    tag = "workflows",
    request_body(content = WithDepsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Started: the `workflow` task that runs them", body = WorkflowStarted),
        (status = 400, description = "Invalid input: `detail` names the field and the value (an unknown dependency, a cycle, over 256 tasks, ...)", body = ErrorBody),
        (status = 404, description = "A queue does not exist", body = ErrorBody),
        (status = 409, description = "The idempotency key belongs to a task that is not a workflow", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or the workflow's params over 256 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn with_deps(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<WithDepsRequest>,
) -> ApiResult<WorkflowStarted> {
    let plan = Plan::from_with_deps(req, &st.settings)?;
    let w = start(&st.client, &st.settings, plan).await?;
    count_spawn(&st, &w);
    Ok(Json(w))
}

/// Submit an observation group (the streaming bridge's `submit_group`): starts the
/// `calibrator` or `standard-pipeline` workflow, once per group.
#[utoipa::path(
    post,
    path = "/api/absurd/groups",
    operation_id = "submitGroup",
    tag = "workflows",
    request_body(content = GroupRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The group's workflow: started, or the one it already had (`created: false`)", body = GroupSubmitted),
        (status = 400, description = "Invalid input: `detail` names the field and the value", body = ErrorBody),
        (status = 404, description = "The workflow is not in the server's configuration, or a queue does not exist", body = ErrorBody),
        (status = 409, description = "The idempotency key belongs to a task that is not a workflow", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or the workflow's params over 256 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn submit(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<GroupRequest>,
) -> ApiResult<GroupSubmitted> {
    let g = submit_group(&st.client, &st.settings, req).await?;
    if g.created {
        st.counters
            .add(&g.queue_name, WORKFLOW_TASK, Event::Spawned);
    }
    Ok(Json(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_path_is_the_first_files_directory() {
        assert_eq!(directory_of("/data/in/x.hdf5"), "/data/in");
        assert_eq!(directory_of("/x.hdf5"), "/");
        assert_eq!(directory_of("/data//x.hdf5"), "/data");
        assert_eq!(directory_of("/data/in/"), "/data/in");
        assert_eq!(directory_of("/"), "/");
    }

    #[test]
    fn observation_times_parse() {
        let t = parse_time("2025-10-17T14:40:09").unwrap();
        assert_eq!(t.to_rfc3339(), "2025-10-17T14:40:09+00:00");
        assert_eq!(
            parse_time("2025-10-17 14:40:09.5").unwrap().timestamp(),
            t.timestamp()
        );
        assert_eq!(parse_time("2025-10-17T16:40:09+02:00").unwrap(), t);
        assert!(parse_time("group-7").is_none());
    }
}
