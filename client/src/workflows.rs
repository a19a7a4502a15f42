//! Workflows as the API reads them: a `workflow` task and the children its runner spawned.
//!
//! A workflow is an ordinary task named [`WORKFLOW_TASK`] whose params hold a DAG of nodes
//! (`docs/api.md`, "Workflows"). Its runner spawns one child per node, each with the headers
//! [`PARENT_HEADER`] (the workflow's task id) and [`NODE_HEADER`] (the node id) and the
//! idempotency key `<workflow task id>:<node id>`. The children are found by those keys, which
//! the task tables index (a header alone would mean reading the whole queue), and a child
//! counts only when its [`PARENT_HEADER`] names the workflow too.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::client::{check_queue_name, table, Client};
use crate::error::{ClientError, Result};
use crate::types::State;

/// The task name of a workflow runner.
pub const WORKFLOW_TASK: &str = "workflow";
/// The header naming a child's workflow task (its id as text).
pub const PARENT_HEADER: &str = "absurd_host.parent_task_id";
/// The header naming the workflow node a child runs.
pub const NODE_HEADER: &str = "absurd_host.workflow_node";
/// The most children read per queue for one workflow (a workflow has at most 256 nodes).
pub const MAX_CHILDREN: usize = 256;
/// The longest failure message of a child that [`Client::workflow_children`] reads, in
/// characters (the whole failure is on the child's own page).
pub const MAX_CHILD_ERROR_CHARS: i32 = 2000;

/// The idempotency key of the child running `node` of the workflow `parent`.
pub fn child_key(parent: Uuid, node: &str) -> String {
    format!("{parent}:{node}")
}

/// A task read as a workflow: its identity, state, params, result and last failure.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct WorkflowTask {
    pub queue_name: String,
    pub task_id: Uuid,
    pub task_name: String,
    #[sqlx(try_from = "String")]
    pub state: State,
    pub attempts: i32,
    pub enqueue_at: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    pub params: Option<Value>,
    pub headers: Option<Value>,
    /// The result of a completed task.
    pub completed_payload: Option<Value>,
    /// The last run's failure (`{"name","message",...}`), if it failed.
    pub failure_reason: Option<Value>,
    /// When the last run completed or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A child task of a workflow, as the workflow's page shows it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct WorkflowChild {
    pub queue_name: String,
    pub task_id: Uuid,
    pub task_name: String,
    #[sqlx(try_from = "String")]
    pub state: State,
    pub attempts: i32,
    pub enqueue_at: DateTime<Utc>,
    /// Its [`NODE_HEADER`].
    pub node: Option<String>,
    /// The last run's failure name and message (the message cut at
    /// [`MAX_CHILD_ERROR_CHARS`]).
    pub error_name: Option<String>,
    pub error_message: Option<String>,
}

impl Client {
    /// The queues of `queues` that do not exist (in the order given, without repeats).
    pub async fn missing_queues(&self, queues: &[String]) -> Result<Vec<String>> {
        let missing: Vec<String> = sqlx::query_scalar(
            "select q from unnest($1::text[]) with ordinality as u (q, i) \
             where not exists (select 1 from absurd.queues where queue_name = u.q) \
             order by u.i",
        )
        .bind(queues)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))?;
        let mut seen = std::collections::BTreeSet::new();
        Ok(missing
            .into_iter()
            .filter(|q| seen.insert(q.clone()))
            .collect())
    }

    /// The task `task_id` of `queue` with what a workflow's page needs; `None` if unknown.
    pub async fn workflow_task(&self, queue: &str, task_id: Uuid) -> Result<Option<WorkflowTask>> {
        check_queue_name(queue)?;
        let sql = format!(
            "select $2::text as queue_name, t.task_id, t.task_name, t.state, t.attempts, \
               t.enqueue_at, t.idempotency_key, t.params, t.headers, t.completed_payload, \
               r.failure_reason, coalesce(r.completed_at, r.failed_at) as finished_at \
             from {t} t left join {r} r on r.run_id = t.last_attempt_run \
             where t.task_id = $1",
            t = table("t", queue),
            r = table("r", queue),
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .bind(queue)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// The children in `queue` of the workflow task `parent` that run the nodes `nodes`:
    /// the tasks whose idempotency key is `<parent>:<node>` and whose [`PARENT_HEADER`] is
    /// `parent`, oldest first. At most [`MAX_CHILDREN`] nodes are asked for.
    pub async fn workflow_children(
        &self,
        queue: &str,
        parent: Uuid,
        nodes: &[String],
    ) -> Result<Vec<WorkflowChild>> {
        check_queue_name(queue)?;
        if nodes.len() > MAX_CHILDREN {
            return Err(ClientError::InvalidInput(format!(
                "{} nodes asked for; the limit is {MAX_CHILDREN}",
                nodes.len()
            )));
        }
        let keys: Vec<String> = nodes.iter().map(|n| child_key(parent, n)).collect();
        let sql = format!(
            "select $3::text as queue_name, t.task_id, t.task_name, t.state, t.attempts, \
               t.enqueue_at, t.headers ->> '{NODE_HEADER}' as node, \
               left(r.failure_reason ->> 'name', 200) as error_name, \
               left(r.failure_reason ->> 'message', {MAX_CHILD_ERROR_CHARS}) as error_message \
             from {t} t left join {r} r on r.run_id = t.last_attempt_run \
             where t.idempotency_key = any($1) and t.headers ->> '{PARENT_HEADER}' = $2 \
             order by t.enqueue_at, t.task_id",
            t = table("t", queue),
            r = table("r", queue),
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&keys)
            .bind(parent.to_string())
            .bind(queue)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }
}
