//! Grants: what a task type may touch outside its own run, declared in `absurd-host.toml`.
//!
//! ```toml
//! [tasks.calibration-plan]
//! kind = "wasm"
//! component = "components/pipeline.wasm"
//! spawn_tasks = ["calibration-solve"]   # beyond this host's wasm task types
//! spawn_queues = ["dsa110-*"]           # beyond the queue the run came from
//! emit_events = ["calibration.*"]       # default: every event name of its queue
//! await_events = ["*"]                  # default: every event name of its queue
//! ```
//!
//! By default a task may spawn only into the queue its run came from, and only task names
//! that this host runs as wasm. A dead-letter queue or a native task type (whose program
//! would run with params the guest chose) is granted only by its exact name, never by a
//! pattern. Patterns use `*` (any run of characters) and `?` (one character).

use std::collections::BTreeSet;

use serde_json::json;

use super::{Failure, FailureName};

/// One task type's grants, with what the host knows of the other task types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The task type these grants belong to (for messages).
    pub task_type: String,
    /// Queues it may spawn into besides its own (patterns; a dead-letter queue by exact name).
    pub spawn_queues: Vec<String>,
    /// Task names it may spawn besides this host's wasm task types (patterns; a native type
    /// by exact name).
    pub spawn_tasks: Vec<String>,
    /// Event names it may emit (patterns).
    pub emit_events: Vec<String>,
    /// Event names it may wait for (patterns).
    pub await_events: Vec<String>,
    /// This host's wasm task types: spawnable by default.
    pub wasm_types: BTreeSet<String>,
    /// This host's native task types: spawnable only when listed by name.
    pub native_types: BTreeSet<String>,
}

/// The grant keys of a task type's table.
pub const KEYS: &[&str] = &["spawn_queues", "spawn_tasks", "emit_events", "await_events"];

impl Grants {
    /// Takes the grant keys out of a task type's table. Events default to every name.
    pub fn take_from(task_type: &str, table: &mut toml::Table) -> Result<Grants, String> {
        let mut list = |key: &str, default: &[&str]| -> Result<Vec<String>, String> {
            match table.remove(key) {
                None => Ok(default.iter().map(|s| s.to_string()).collect()),
                Some(toml::Value::Array(items)) => items
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) if !s.is_empty() => Ok(s),
                        other => Err(format!(
                            "{key} must be a list of non-empty names or patterns, found {other}"
                        )),
                    })
                    .collect(),
                Some(other) => Err(format!(
                    "{key} must be a list of names or patterns, found {other}"
                )),
            }
        };
        Ok(Grants {
            task_type: task_type.to_string(),
            spawn_queues: list("spawn_queues", &[])?,
            spawn_tasks: list("spawn_tasks", &[])?,
            emit_events: list("emit_events", &["*"])?,
            await_events: list("await_events", &["*"])?,
            ..Grants::default()
        })
    }

    /// May a run from `own_queue` wait for the result of a task in `queue`? Its own queue,
    /// and the queues it may spawn into (`spawn_queues`).
    pub fn check_await_task(&self, own_queue: &str, queue: &str) -> Result<(), Failure> {
        if queue == own_queue || self.spawn_queues.iter().any(|p| glob(p, queue)) {
            return Ok(());
        }
        Err(self.refused(
            "spawn_queues",
            &format!("waiting for a task of queue {queue:?}"),
            "a task type may wait for tasks of its own queue, and of the queues its spawn_queues lists",
        ))
    }

    /// May a run from `own_queue` spawn `task_name` into `queue`? `dlq` is the worker's
    /// dead-letter queue.
    pub fn check_spawn(
        &self,
        own_queue: &str,
        dlq: Option<&str>,
        queue: &str,
        task_name: &str,
    ) -> Result<(), Failure> {
        let dead_letter = dlq == Some(queue) || queue.ends_with("-dlq");
        let queue_ok = if dead_letter {
            self.spawn_queues.iter().any(|q| q == queue)
        } else {
            queue == own_queue || self.spawn_queues.iter().any(|p| glob(p, queue))
        };
        if !queue_ok {
            let why = if dead_letter {
                "a dead-letter queue is granted only by its exact name"
            } else {
                "a task type may spawn into its own queue, and the queues its spawn_queues lists"
            };
            return Err(self.refused(
                "spawn_queues",
                &format!("spawning into queue {queue:?}"),
                why,
            ));
        }
        let task_ok = if self.native_types.contains(task_name) {
            self.spawn_tasks.iter().any(|t| t == task_name)
        } else {
            self.wasm_types.contains(task_name)
                || self.spawn_tasks.iter().any(|p| glob(p, task_name))
        };
        if !task_ok {
            let why = if self.native_types.contains(task_name) {
                "a native task type is granted only by its exact name"
            } else {
                "a task type may spawn this host's wasm task types, and the names its spawn_tasks lists"
            };
            return Err(self.refused("spawn_tasks", &format!("spawning task {task_name:?}"), why));
        }
        Ok(())
    }

    pub fn check_emit(&self, event: &str) -> Result<(), Failure> {
        if self.emit_events.iter().any(|p| glob(p, event)) {
            Ok(())
        } else {
            Err(self.refused(
                "emit_events",
                &format!("emitting event {event:?}"),
                "not matched by emit_events",
            ))
        }
    }

    pub fn check_await(&self, event: &str) -> Result<(), Failure> {
        if self.await_events.iter().any(|p| glob(p, event)) {
            Ok(())
        } else {
            Err(self.refused(
                "await_events",
                &format!("waiting for event {event:?}"),
                "not matched by await_events",
            ))
        }
    }

    fn refused(&self, key: &str, what: &str, why: &str) -> Failure {
        Failure::new(
            FailureName::NotGranted,
            format!(
                "{what} is not granted to task type {:?} ({why}; grant it with `{key}` in [tasks.{}])",
                self.task_type, self.task_type
            ),
        )
        .with_details(json!({"grant": key, "task_type": self.task_type}))
        .permanent()
    }

    /// One line per grant, for `absurd-host check`.
    pub fn describe(&self) -> Vec<String> {
        let or_none = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        vec![
            format!(
                "spawn into: its own queue{}",
                if self.spawn_queues.is_empty() {
                    String::new()
                } else {
                    format!(", {}", self.spawn_queues.join(", "))
                }
            ),
            format!(
                "spawn tasks: this host's wasm types ({}){}",
                or_none(&self.wasm_types.iter().cloned().collect::<Vec<_>>()),
                if self.spawn_tasks.is_empty() {
                    String::new()
                } else {
                    format!(", {}", self.spawn_tasks.join(", "))
                }
            ),
            format!("emit events: {}", or_none(&self.emit_events)),
            format!("await events: {}", or_none(&self.await_events)),
        ]
    }
}

/// `*` matches any run of characters (including none), `?` exactly one; everything else
/// matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point (the last `*`): linear in practice, and
    // never recursive, whatever the pattern.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(toml_text: &str) -> Grants {
        let mut t: toml::Table = toml::from_str(toml_text).unwrap();
        let mut g = Grants::take_from("plan", &mut t).unwrap();
        assert!(t.is_empty(), "every grant key is taken: {t:?}");
        g.wasm_types = ["plan".to_string(), "echo".to_string()].into();
        g.native_types = ["calibration-solve".to_string()].into();
        g
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("cal*", "calibration"));
        assert!(glob("*.done", "step.done"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }

    #[test]
    fn spawn_defaults_to_own_queue_and_wasm_types() {
        let g = grants("");
        assert!(g.check_spawn("q", Some("q-dlq"), "q", "echo").is_ok());
        let e = g
            .check_spawn("q", Some("q-dlq"), "other", "echo")
            .unwrap_err();
        assert_eq!(e.name, FailureName::NotGranted);
        assert!(e.message.contains("spawn_queues"), "{}", e.message);
        assert!(g.check_spawn("q", Some("q-dlq"), "q-dlq", "echo").is_err());
        let e = g
            .check_spawn("q", None, "q", "calibration-solve")
            .unwrap_err();
        assert!(e.message.contains("native"), "{}", e.message);
        assert!(g.check_spawn("q", None, "q", "unknown-name").is_err());
    }

    #[test]
    fn patterns_never_grant_dead_letter_queues_or_native_types() {
        let g = grants("spawn_queues = [\"*\"]\nspawn_tasks = [\"*\"]");
        assert!(g
            .check_spawn("q", Some("q-dlq"), "elsewhere", "anything")
            .is_ok());
        assert!(g.check_spawn("q", Some("q-dlq"), "q-dlq", "echo").is_err());
        assert!(g.check_spawn("q", Some("dead"), "dead", "echo").is_err());
        assert!(g.check_spawn("q", None, "q", "calibration-solve").is_err());
        let g = grants("spawn_queues = [\"q-dlq\"]\nspawn_tasks = [\"calibration-solve\"]");
        assert!(g.check_spawn("q", Some("q-dlq"), "q-dlq", "echo").is_ok());
        assert!(g.check_spawn("q", None, "q", "calibration-solve").is_ok());
    }

    #[test]
    fn events_default_to_all_and_take_patterns() {
        let g = grants("");
        assert!(g.check_emit("x").is_ok() && g.check_await("y").is_ok());
        let g = grants("emit_events = [\"cal.*\"]\nawait_events = []");
        assert!(g.check_emit("cal.done").is_ok());
        assert!(g.check_emit("other").is_err());
        assert!(g.check_await("cal.done").is_err());
    }

    #[test]
    fn bad_grant_values_are_named() {
        let mut t: toml::Table = toml::from_str("spawn_tasks = \"echo\"").unwrap();
        let e = Grants::take_from("x", &mut t).unwrap_err();
        assert!(e.contains("spawn_tasks must be a list"), "{e}");
        let mut t: toml::Table = toml::from_str("emit_events = [\"\"]").unwrap();
        assert!(Grants::take_from("x", &mut t).is_err());
    }
}
