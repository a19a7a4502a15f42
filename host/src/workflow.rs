//! Workflow definitions: the DAGs of task nodes that a `workflow` task runs, named in
//! `absurd-host.toml` (`[workflows.<name>]`) or given inline to the API, and checked here
//! against the limits of the workflow runner's contract before anything is spawned.
//!
//! ```toml
//! [workflows.calibrator]                # a chain: each stage depends on the one before
//! description = "Calibrator transit: solve the tables"
//! chain = ["catalog-setup", "convert-uvh5-to-ms", "calibration-solve"]
//!
//! [workflows.fan-in]                    # or any DAG
//! queue = "dsa110-pipeline"             # the workflow task's queue (default ABSURD_QUEUE_NAME)
//! inputs = { field = "0" }              # default inputs, under the request's
//! nodes = [
//!   { id = "a", task = "convert-uvh5-to-ms" },
//!   { id = "b", task = "calibration-solve", depends_on = ["a"], max_attempts = 2 },
//!   { id = "c", task = "validation", depends_on = ["a"], optional = true, queue = "light" },
//!   { id = "d", task = "photometry", depends_on = ["b", "c"], params = { inputs = { snr = 5 } } },
//! ]
//! ```
//!
//! The params of the `workflow` task that starts one are `{"name", "nodes", "config",
//! "inputs"}` ([`task_params`]); the runner (a wasm component, `examples/workflow`) spawns a
//! child per node with the headers of [`absurd_client::workflows`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The most nodes in one workflow.
pub const MAX_NODES: usize = 256;
/// The most `depends_on` entries of one node.
pub const MAX_DEPENDS_ON: usize = 32;
/// The longest node id and workflow name, in characters (`[A-Za-z0-9_.-]`).
pub const MAX_ID_CHARS: usize = 64;
/// The most `[workflows.<name>]` sections in a configuration file.
pub const MAX_DEFINITIONS: usize = 256;
/// The longest task name of a node, in bytes (the API's limit on task names).
pub const MAX_TASK_NAME_BYTES: usize = 255;
/// The longest queue name (Absurd's table names `t_<queue>` within PostgreSQL's 63 bytes).
pub const MAX_QUEUE_NAME_BYTES: usize = 57;
/// The largest `max_attempts` of a node.
pub const MAX_ATTEMPTS: i64 = 1000;

/// One node of a workflow: a task to spawn once the nodes it depends on have completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique within the workflow: 1 to 64 characters of `[A-Za-z0-9_.-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")]
    pub id: String,
    /// The task name the node spawns.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub task: String,
    /// The child's queue; default: the workflow task's own queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue: Option<String>,
    /// The child's params template; the runner sets its `config`, `inputs`, `outputs` and
    /// `chain_name` keys (the DSA-110 chain contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Map<String, Value>>,
    /// Ids of the nodes that must complete first (at most 32, each once).
    #[serde(default)]
    #[schema(max_items = 32)]
    pub depends_on: Vec<String>,
    /// A failure of an optional node does not fail the workflow.
    #[serde(default)]
    pub optional: bool,
    /// The child's `max_attempts` (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<i64>,
}

/// How the fields of a node list are called where it came from, for error messages: the
/// API's workflows (`nodes[2].task`), `POST /tasks/with-deps` (`tasks[2].task_name`), a
/// configuration section.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub list: &'static str,
    pub id: &'static str,
    pub task: &'static str,
    pub queue: &'static str,
}

impl Names {
    pub const NODES: Names = Names {
        list: "nodes",
        id: "id",
        task: "task",
        queue: "queue",
    };
    pub const TASKS: Names = Names {
        list: "tasks",
        id: "id",
        task: "task_name",
        queue: "queue_name",
    };
}

/// Whether `s` is a usable node id or workflow name.
pub fn check_id(what: &str, s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if n == 0 || n > MAX_ID_CHARS {
        return Err(format!(
            "{what} {s:?} must be 1 to {MAX_ID_CHARS} characters long, got {n}"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{what} {s:?} contains {c:?}; use only letters, digits, `_`, `.` and `-`"
        ));
    }
    Ok(())
}

/// A queue name's length and characters.
pub fn check_queue(what: &str, q: &str) -> Result<(), String> {
    if q.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if q.len() > MAX_QUEUE_NAME_BYTES {
        return Err(format!(
            "{what} {q:?} is {} bytes long; the limit is {MAX_QUEUE_NAME_BYTES}",
            q.len()
        ));
    }
    if q.contains('\0') {
        return Err(format!("{what} must not contain NUL characters"));
    }
    Ok(())
}

/// Checks a node list against the contract: 1 to [`MAX_NODES`] nodes with unique ids, task
/// names, queue names, at most [`MAX_DEPENDS_ON`] dependencies each, all of them nodes of the
/// list, no node depending on itself or twice on one node, no cycle. The error names the
/// field (`nodes[3].depends_on[0]`) and the value.
pub fn check_nodes(nodes: &[NodeSpec], names: Names) -> Result<(), String> {
    let list = names.list;
    if nodes.is_empty() {
        return Err(format!("{list} must not be empty"));
    }
    if nodes.len() > MAX_NODES {
        return Err(format!(
            "{list} has {} entries; the limit is {MAX_NODES}",
            nodes.len()
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let at = |field: &str| format!("{list}[{i}].{field}");
        check_id(&at(names.id), &n.id)?;
        if let Some(first) = index.insert(n.id.as_str(), i) {
            return Err(format!(
                "{}: {:?} is also the id of {list}[{first}]; ids must be unique",
                at(names.id),
                n.id
            ));
        }
        if n.task.trim().is_empty() {
            return Err(format!("{} must not be empty", at(names.task)));
        }
        if n.task.len() > MAX_TASK_NAME_BYTES || n.task.contains('\0') {
            return Err(format!(
                "{} must be at most {MAX_TASK_NAME_BYTES} bytes without NUL characters, got {} bytes",
                at(names.task),
                n.task.len()
            ));
        }
        if let Some(q) = &n.queue {
            check_queue(&at(names.queue), q)?;
        }
        if let Some(m) = n.max_attempts {
            if !(1..=MAX_ATTEMPTS).contains(&m) {
                return Err(format!(
                    "{} must be an integer between 1 and {MAX_ATTEMPTS}, got {m}",
                    at("max_attempts")
                ));
            }
        }
        if n.depends_on.len() > MAX_DEPENDS_ON {
            return Err(format!(
                "{} has {} entries; the limit is {MAX_DEPENDS_ON}",
                at("depends_on"),
                n.depends_on.len()
            ));
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for (j, d) in n.depends_on.iter().enumerate() {
            let at = format!("{list}[{i}].depends_on[{j}]");
            if !index.contains_key(d.as_str()) {
                return Err(format!(
                    "{at}: {d:?} is not the {} of any entry of {list}",
                    names.id
                ));
            }
            if d == &n.id {
                return Err(format!("{at}: node {d:?} depends on itself"));
            }
            if !seen.insert(d.as_str()) {
                return Err(format!("{at}: {d:?} is listed twice"));
            }
        }
    }
    if let Some(cycle) = find_cycle(nodes, &index) {
        let first = index[cycle[0].as_str()];
        return Err(format!(
            "{list}[{first}].depends_on: the dependencies form a cycle (each depends on the next): {}",
            cycle.join(" → ")
        ));
    }
    Ok(())
}

/// A cycle of `depends_on` links, as node ids from one node back to it, if there is one.
fn find_cycle(nodes: &[NodeSpec], index: &HashMap<&str, usize>) -> Option<Vec<String>> {
    // Kahn's algorithm: what it cannot order is on a cycle or depends on one.
    let mut waiting: Vec<usize> = nodes.iter().map(|n| n.depends_on.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for d in &n.depends_on {
            dependents[index[d.as_str()]].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; nodes.len()];
    while let Some(i) = ready.pop() {
        done[i] = true;
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(j);
            }
        }
    }
    let start = done.iter().position(|d| !d)?;
    // Walk unfinished dependencies until a node repeats: the walk's tail is a cycle.
    let mut path = vec![start];
    let mut at_step = HashMap::from([(start, 0usize)]);
    let mut i = start;
    loop {
        let next = nodes[i]
            .depends_on
            .iter()
            .map(|d| index[d.as_str()])
            .find(|&j| !done[j])?;
        if let Some(&k) = at_step.get(&next) {
            let mut cycle: Vec<String> = path[k..].iter().map(|&j| nodes[j].id.clone()).collect();
            cycle.push(nodes[next].id.clone());
            return Some(cycle);
        }
        at_step.insert(next, path.len());
        path.push(next);
        i = next;
    }
}

/// The params of the `workflow` task that runs `nodes` (the runner's contract).
pub fn task_params(
    name: Option<&str>,
    nodes: &[NodeSpec],
    config: Option<&Value>,
    inputs: Option<&Map<String, Value>>,
) -> Value {
    let mut p = Map::new();
    if let Some(n) = name {
        p.insert("name".into(), Value::from(n));
    }
    p.insert(
        "nodes".into(),
        serde_json::to_value(nodes).expect("nodes serialise"),
    );
    if let Some(c) = config {
        p.insert("config".into(), c.clone());
    }
    if let Some(i) = inputs {
        p.insert("inputs".into(), Value::Object(i.clone()));
    }
    Value::Object(p)
}

/// A `[workflows.<name>]` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    pub description: Option<String>,
    /// The workflow task's queue, when the section names one.
    pub queue: Option<String>,
    pub nodes: Vec<NodeSpec>,
    pub config: Option<Value>,
    pub inputs: Option<Map<String, Value>>,
}

/// A section as written: a `chain` of task names or a list of `nodes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    description: Option<String>,
    queue: Option<String>,
    chain: Option<Vec<String>>,
    nodes: Option<Vec<NodeSpec>>,
    config: Option<Value>,
    inputs: Option<Map<String, Value>>,
}

impl Definition {
    /// Reads and checks the section `[workflows.<name>]`; the error names the section.
    pub fn from_toml(name: &str, value: &toml::Value) -> Result<Definition, String> {
        let at = format!("[workflows.{name}]");
        check_id("the workflow name", name).map_err(|e| format!("{at}: {e}"))?;
        let raw: RawDefinition = value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("{at}: {}", e.message().trim()))?;
        let nodes = match (raw.chain, raw.nodes) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: give either `chain` (task names run one after the other) or `nodes`, not both"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "{at}: give `chain` (task names run one after the other) or `nodes` (a DAG)"
                ))
            }
            (Some(chain), None) => {
                let mut nodes: Vec<NodeSpec> = Vec::with_capacity(chain.len());
                for (i, task) in chain.iter().enumerate() {
                    if let Some(j) = chain[..i].iter().position(|t| t == task) {
                        return Err(format!(
                            "{at}: chain[{i}]: {task:?} is also chain[{j}]; a chain runs each task once (use `nodes` with distinct ids to run one twice)"
                        ));
                    }
                    nodes.push(NodeSpec {
                        id: task.clone(),
                        task: task.clone(),
                        queue: None,
                        params: None,
                        depends_on: i
                            .checked_sub(1)
                            .map(|p| vec![chain[p].clone()])
                            .unwrap_or_default(),
                        optional: false,
                        max_attempts: None,
                    });
                }
                check_nodes(&nodes, Names::NODES)
                    .map_err(|e| format!("{at}: {}", e.replacen("nodes[", "chain[", 1)))?;
                nodes
            }
            (None, Some(nodes)) => {
                check_nodes(&nodes, Names::NODES).map_err(|e| format!("{at}: {e}"))?;
                nodes
            }
        };
        if let Some(q) = &raw.queue {
            check_queue("queue", q).map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(Definition {
            name: name.to_string(),
            description: raw.description,
            queue: raw.queue,
            nodes,
            config: raw.config,
            inputs: raw.inputs,
        })
    }
}

/// The named workflows of a configuration file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workflows {
    defs: BTreeMap<String, Definition>,
}

impl Workflows {
    /// Checks every section of the file's `[workflows]` table.
    pub fn from_table(table: &toml::Table) -> Result<Workflows, String> {
        if table.len() > MAX_DEFINITIONS {
            return Err(format!(
                "[workflows]: {} workflows; the limit is {MAX_DEFINITIONS}",
                table.len()
            ));
        }
        let mut defs = BTreeMap::new();
        for (name, value) in table {
            defs.insert(name.clone(), Definition::from_toml(name, value)?);
        }
        Ok(Workflows { defs })
    }

    /// The workflows of the configuration file at `path` (none without a file).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Workflows> {
        let Some(path) = path else {
            return Ok(Workflows::default());
        };
        let file = absurd_engine::dispatch::HostConfig::load(path)?;
        Workflows::from_table(&file.workflows)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn get(&self, name: &str) -> Option<&Definition> {
        self.defs.get(name)
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The definitions, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Definition> {
        self.defs.values()
    }

    /// The names, for an error message: `"a", "b"` or `none`.
    pub fn names_text(&self) -> String {
        if self.defs.is_empty() {
            return "none".into();
        }
        self.defs
            .keys()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, deps: &[&str]) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            task: "t".into(),
            queue: None,
            params: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            optional: false,
            max_attempts: None,
        }
    }

    fn parse(text: &str) -> Result<Workflows, String> {
        let t: toml::Table = toml::from_str(text).unwrap();
        Workflows::from_table(t["workflows"].as_table().unwrap())
    }

    #[test]
    fn node_lists_are_checked_with_the_field_named() {
        assert!(check_nodes(&[node("a", &[]), node("b", &["a"])], Names::NODES).is_ok());
        let e = check_nodes(&[], Names::NODES).unwrap_err();
        assert_eq!(e, "nodes must not be empty");
        let e = check_nodes(&[node("a", &["x"])], Names::NODES).unwrap_err();
        assert!(e.starts_with("nodes[0].depends_on[0]: \"x\""), "{e}");
        let e = check_nodes(&[node("a", &[]), node("a", &[])], Names::TASKS).unwrap_err();
        assert!(e.starts_with("tasks[1].id: \"a\" is also"), "{e}");
        let e = check_nodes(&[node("a b", &[])], Names::NODES).unwrap_err();
        assert!(e.contains("nodes[0].id") && e.contains("' '"), "{e}");
        let e = check_nodes(&[node("a", &["a"])], Names::NODES).unwrap_err();
        assert!(e.contains("depends on itself"), "{e}");
        let e = check_nodes(
            &[node("a", &["c"]), node("b", &["a"]), node("c", &["b"])],
            Names::NODES,
        )
        .unwrap_err();
        assert!(
            e.ends_with("cycle (each depends on the next): a → c → b → a"),
            "{e}"
        );
        let many: Vec<NodeSpec> = (0..=MAX_NODES)
            .map(|i| node(&format!("n{i}"), &[]))
            .collect();
        let e = check_nodes(&many, Names::NODES).unwrap_err();
        assert!(e.contains("257 entries; the limit is 256"), "{e}");
        let deps: Vec<String> = (0..=MAX_DEPENDS_ON).map(|i| format!("n{i}")).collect();
        let mut wide: Vec<NodeSpec> = deps.iter().map(|d| node(d, &[])).collect();
        let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
        wide.push(node("last", &refs));
        let e = check_nodes(&wide, Names::NODES).unwrap_err();
        assert!(
            e.contains("nodes[33].depends_on has 33 entries; the limit is 32"),
            "{e}"
        );
        let mut n = node("a", &[]);
        n.task = "x".repeat(256);
        assert!(check_nodes(&[n], Names::TASKS)
            .unwrap_err()
            .starts_with("tasks[0].task_name"));
    }

    #[test]
    fn sections_are_chains_or_dags() {
        let w = parse(
            "[workflows.c]\nchain = [\"a\", \"b\", \"c\"]\n\
             [workflows.d]\nqueue = \"q\"\nnodes = [{ id = \"x\", task = \"t\" }, { id = \"y\", task = \"t\", depends_on = [\"x\"], optional = true }]\n",
        )
        .unwrap();
        let c = w.get("c").unwrap();
        assert_eq!(c.nodes[2].depends_on, vec!["b".to_string()]);
        assert_eq!(c.nodes[0].depends_on, Vec::<String>::new());
        assert_eq!(w.get("d").unwrap().queue.as_deref(), Some("q"));
        assert!(w.get("d").unwrap().nodes[1].optional);
        for (text, want) in [
            ("[workflows.x]\n", "[workflows.x]: give `chain`"),
            (
                "[workflows.x]\nchain = [\"a\", \"a\"]\n",
                "chain[1]: \"a\" is also chain[0]",
            ),
            ("[workflows.x]\nchain = [\"a\"]\nnodes = []\n", "not both"),
            (
                "[workflows.x]\nchain = [\"a\"]\ncolour = 1\n",
                "unknown field `colour`",
            ),
            (
                "[workflows.x]\nnodes = [{ id = \"a\", task = \"t\", depends_on = [\"b\"] }]\n",
                "[workflows.x]: nodes[0].depends_on[0]: \"b\"",
            ),
            (
                "[workflows.\"a b\"]\nchain = [\"a\"]\n",
                "the workflow name \"a b\"",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn task_params_follow_the_contract() {
        let p = task_params(Some("w"), &[node("a", &[])], None, None);
        assert_eq!(
            p,
            serde_json::json!({"name": "w", "nodes": [{"id": "a", "task": "t", "depends_on": [], "optional": false}]})
        );
    }
}
