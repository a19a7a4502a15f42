//! Dispatch: which handler runs a task, by task name.
//!
//! Task types are declared in the host configuration file (`absurd-host.toml`, given with
//! `--config` or `ABSURD_HOST_CONFIG`):
//!
//! ```toml
//! [tasks.echo]
//! kind = "builtin"      # builtin | wasm | native
//! builtin = "echo"      # which builtin (default: the task name)
//! timeout = 30          # seconds; overrides ABSURD_TASK_TIMEOUT for this type
//! max_attempts = 2      # never run more attempts than this, whatever the spawner asked
//! status_error_fails = true  # a result {"status": "error"|"failed", ...} fails the run
//! ```
//!
//! `status_error_fails` opts a wasm or builtin type into the DSA-110 result convention
//! ([`crate::execute::reported`]), which native programs always follow.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::execute::builtin::{self, Builtin};
use crate::execute::grants::Grants;
use crate::execute::Handler;
pub use crate::execute::HandlerKind;
use crate::limits::{ReadLimits, RunLimits};

/// The parsed `absurd-host.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Task types by task name.
    #[serde(default)]
    pub tasks: HashMap<String, TaskTypeConfig>,
    /// Defaults for every `kind = "wasm"` task type (`[sandbox]`), read by `crate::execute::wasm`.
    #[serde(default)]
    pub sandbox: toml::Table,
    /// Defaults for every `kind = "native"` task type (`[native]`), read by
    /// `crate::execute::native`.
    #[serde(default)]
    pub native: toml::Table,
    /// Schedules (`[[schedules]]`), read by [`crate::schedule`].
    #[serde(default)]
    pub schedules: Vec<crate::schedule::ScheduleConfig>,
    /// Retention and the maintenance leader (`[maintenance]`), read by the host's
    /// `maintain` module; the engine does not look at it.
    #[serde(default)]
    pub maintenance: Option<toml::Table>,
    /// Named workflows (`[workflows.<name>]`), read by the host's `workflow` module (the API
    /// and the CLI start them); the engine does not look at them.
    #[serde(default)]
    pub workflows: toml::Table,
    /// Connections to PostgreSQL (`[database]`: pool sizes, pooling mode, the direct listen
    /// URL, the API's read URL), read by the host's `connections` module.
    #[serde(default)]
    pub database: Option<toml::Table>,
}

/// One `[tasks.<name>]` table: the keys every kind shares, plus the kind's own keys.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskTypeConfig {
    pub kind: HandlerKind,
    /// For `kind = "builtin"`: the builtin's name (default: the task name).
    pub builtin: Option<String>,
    /// Wall-clock limit per run in seconds (default: `ABSURD_TASK_TIMEOUT`).
    pub timeout: Option<f64>,
    /// Upper bound on attempts for this type.
    pub max_attempts: Option<i32>,
    /// A result `{"status": "error"|"failed", ...}` fails the run (default false for wasm and
    /// builtin types; always true for native ones).
    pub status_error_fails: Option<bool>,
    /// The kind's own settings (checked by the kind, which rejects unknown keys).
    #[serde(flatten)]
    pub rest: toml::Table,
}

/// An error in the host configuration file, naming the file and the entry at fault.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct HostConfigError {
    pub path: String,
    pub message: String,
}

impl HostConfig {
    pub fn load(path: &Path) -> Result<HostConfig, HostConfigError> {
        let err = |message: String| HostConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<HostConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The names of the wasm task types and of the native ones (what spawn grants know of).
    pub fn kinds(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let of = |kind| {
            self.tasks
                .iter()
                .filter(|(_, t)| t.kind == kind)
                .map(|(n, _)| n.clone())
                .collect()
        };
        (of(HandlerKind::Wasm), of(HandlerKind::Native))
    }
}

/// A task type ready to run: its handler and per-type limits.
#[derive(Clone)]
pub struct TaskType {
    pub handler: Arc<dyn Handler>,
    pub timeout: Option<Duration>,
    pub max_attempts: Option<i32>,
    /// The worker fails a run whose result reports an error in the DSA-110 convention
    /// (`status_error_fails`; a native handler does it itself, with the program's details).
    pub status_error_fails: bool,
    /// What a run may make the host hold or the database store (`[sandbox]` and the type's
    /// own keys for wasm; `[native]` and the type's own keys for native; the defaults for
    /// builtins).
    pub limits: RunLimits,
    /// What a run may touch outside itself (a wasm guest's or a native program's control
    /// requests); `None` for builtins, which make no such calls of their own choosing.
    pub grants: Option<Arc<Grants>>,
}

/// Task name → task type.
#[derive(Clone, Default)]
pub struct Registry {
    types: HashMap<String, TaskType>,
    /// Bounds on the checkpoints and event payloads a claim reads (from `[sandbox]`): a claim
    /// happens before its task type is known, so these are host-wide.
    read_limits: ReadLimits,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("task_types", &self.names())
            .finish()
    }
}

impl Registry {
    /// Builds the registry, checking every entry (an unknown builtin, a bad timeout, …) so
    /// that configuration mistakes stop the host at start rather than fail tasks later.
    pub fn from_config(
        config: &HostConfig,
        config_path: Option<&Path>,
    ) -> Result<Registry, HostConfigError> {
        let path = config_path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "host configuration".into());
        // Relative paths in the file are relative to the file.
        let base_dir = config_path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut types = HashMap::new();
        let read_limits =
            crate::execute::wasm::config::SandboxDefaults::from_table(&config.sandbox)
                .map_err(|message| HostConfigError {
                    path: path.clone(),
                    message,
                })?
                .limits
                .read_limits();
        let mut names: Vec<_> = config.tasks.keys().collect();
        names.sort();
        for name in names {
            let t = &config.tasks[name];
            let err = |message: String| HostConfigError {
                path: path.clone(),
                message: format!("[tasks.{name}]: {message}"),
            };
            let timeout = match t.timeout {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 => Some(
                    Duration::try_from_secs_f64(s)
                        .map_err(|_| err(format!("timeout = {s} seconds is too long")))?,
                ),
                Some(s) => {
                    return Err(err(format!(
                        "timeout must be a positive number of seconds, got {s}"
                    )))
                }
            };
            if let Some(m) = t.max_attempts {
                if m < 1 {
                    return Err(err(format!("max_attempts must be >= 1, got {m}")));
                }
            }
            if t.kind == HandlerKind::Native && t.status_error_fails == Some(false) {
                return Err(err(
                    "status_error_fails = false is not possible for kind = \"native\": a program's \
                     {\"status\": \"error\"} result always fails its run (docs/native-tasks.md)"
                        .into(),
                ));
            }
            if t.kind != HandlerKind::Builtin && t.builtin.is_some() {
                return Err(err("`builtin` is only valid with kind = \"builtin\"".into()));
            }
            let handler: Arc<dyn Handler> = match t.kind {
                HandlerKind::Builtin => {
                    if let Some(key) = t.rest.keys().next() {
                        return Err(err(format!("unknown key `{key}` for kind = \"builtin\"")));
                    }
                    let which = t.builtin.as_deref().unwrap_or(name);
                    Arc::new(Builtin::new(which).ok_or_else(|| {
                        err(format!(
                            "unknown builtin {which:?}; the builtins are {}",
                            builtin::NAMES.join(", ")
                        ))
                    })?)
                }
                HandlerKind::Native => {
                    let b = crate::execute::native::build(name, &t.rest, &config.native, &base_dir)
                        .map_err(err)?;
                    let (wasm_types, native_types) = config.kinds();
                    let grants = Grants {
                        wasm_types,
                        native_types,
                        ..b.grants
                    };
                    types.insert(
                        name.clone(),
                        TaskType {
                            handler: b.handler,
                            timeout,
                            max_attempts: t.max_attempts,
                            // Native handlers apply the convention themselves.
                            status_error_fails: false,
                            limits: b.limits,
                            grants: Some(Arc::new(grants)),
                        },
                    );
                    continue;
                }
                // Built below, all together, because they share one engine.
                HandlerKind::Wasm => continue,
            };
            types.insert(
                name.clone(),
                TaskType {
                    handler,
                    timeout,
                    max_attempts: t.max_attempts,
                    status_error_fails: t.status_error_fails == Some(true),
                    limits: RunLimits::default(),
                    grants: None,
                },
            );
        }
        let wasm: Vec<(&str, &toml::Table)> = config
            .tasks
            .iter()
            .filter(|(_, t)| t.kind == HandlerKind::Wasm)
            .map(|(n, t)| (n.as_str(), &t.rest))
            .collect();
        let built = crate::execute::wasm::build_handlers(&config.sandbox, &wasm, &base_dir)
            .map_err(|(name, message)| HostConfigError {
                path: path.clone(),
                message: if name.is_empty() {
                    message
                } else {
                    format!("[tasks.{name}]: {message}")
                },
            })?;
        let (wasm_types, native_types) = config.kinds();
        for b in built {
            let t = &config.tasks[&b.name];
            let grants = Grants {
                wasm_types: wasm_types.clone(),
                native_types: native_types.clone(),
                ..b.grants
            };
            types.insert(
                b.name,
                TaskType {
                    handler: b.handler,
                    // Checked in the loop above.
                    timeout: t.timeout.and_then(|s| Duration::try_from_secs_f64(s).ok()),
                    max_attempts: t.max_attempts,
                    status_error_fails: t.status_error_fails == Some(true),
                    limits: b.limits,
                    grants: Some(Arc::new(grants)),
                },
            );
        }
        Ok(Registry { types, read_limits })
    }

    /// Loads the file at `path` (if any) and builds the registry.
    pub fn load(path: Option<&PathBuf>) -> Result<Registry, HostConfigError> {
        match path {
            None => Ok(Registry::default()),
            Some(p) => Registry::from_config(&HostConfig::load(p)?, Some(p)),
        }
    }

    pub fn get(&self, task_name: &str) -> Option<&TaskType> {
        self.types.get(task_name)
    }

    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.types.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The host-wide bounds on what a claim reads back (see [`absurd_client::claimed`]).
    pub fn read_limits(&self) -> ReadLimits {
        self.read_limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> Result<Registry, String> {
        let c = HostConfig::parse(text)?;
        Registry::from_config(&c, None).map_err(|e| e.to_string())
    }

    #[test]
    fn native_types_take_run_limits_control_limits_and_grants() {
        let r = registry(
            "[native]\nmax_spawns = 7\nmax_control_requests = 50\n\
             [tasks.n]\nkind = \"native\"\nprogram = \"/bin/true\"\nmax_emits = 3\n\
             max_control_connections = 2\nspawn_tasks = [\"n\"]\n",
        )
        .unwrap();
        let t = r.get("n").unwrap();
        assert_eq!((t.limits.max_spawns, t.limits.max_emits), (7, 3));
        let g = t.grants.as_ref().expect("native types have grants");
        assert_eq!(g.spawn_tasks, ["n"]);
        assert!(g.native_types.contains("n"));
        for (text, key) in [
            ("max_control_requests = 0", "max_control_requests"),
            ("max_steps = -1", "max_steps"),
            ("spawn_tasks = \"n\"", "spawn_tasks"),
            ("max_control_bogus = 1", "max_control_bogus"),
        ] {
            let e = registry(&format!(
                "[tasks.n]\nkind = \"native\"\nprogram = \"/bin/true\"\n{text}\n"
            ))
            .unwrap_err();
            assert!(e.contains("[tasks.n]") && e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn builtins_are_registered_with_their_limits() {
        let r = registry(
            "[tasks.echo]\nkind = \"builtin\"\n[tasks.slow]\nkind = \"builtin\"\nbuiltin = \"sleep\"\ntimeout = 2.5\nmax_attempts = 2\n",
        )
        .unwrap();
        assert_eq!(r.names(), vec!["echo", "slow"]);
        let slow = r.get("slow").unwrap();
        assert_eq!(slow.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(slow.max_attempts, Some(2));
        assert!(!slow.status_error_fails);
        assert_eq!(slow.handler.kind(), HandlerKind::Builtin);
        let r = registry("[tasks.echo]\nkind = \"builtin\"\nstatus_error_fails = true\n").unwrap();
        assert!(r.get("echo").unwrap().status_error_fails);
        assert!(r.get("other").is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let e = registry("[tasks.x]\nkind = \"builtin\"\n").unwrap_err();
        assert!(
            e.contains("[tasks.x]") && e.contains("unknown builtin \"x\""),
            "{e}"
        );
        let e = registry("[tasks.echo]\nkind = \"builtin\"\ntimeout = 0\n").unwrap_err();
        assert!(
            e.contains("timeout must be a positive number of seconds, got 0"),
            "{e}"
        );
        let e = registry("[tasks.echo]\nkind = \"builtin\"\nmax_attempts = 0\n").unwrap_err();
        assert!(e.contains("max_attempts must be >= 1, got 0"), "{e}");
        let e = registry("[tasks.echo]\nkind = \"python\"\n").unwrap_err();
        assert!(e.contains("python"), "{e}");
        let e = registry("[tasks.echo]\nkind = \"builtin\"\nstatus_error_fails = \"yes\"\n")
            .unwrap_err();
        assert!(
            e.contains("status_error_fails") || e.contains("boolean"),
            "{e}"
        );
        let e = registry(
            "[tasks.n]\nkind = \"native\"\nprogram = \"/bin/true\"\nstatus_error_fails = false\n",
        )
        .unwrap_err();
        assert!(
            e.contains("[tasks.n]") && e.contains("status_error_fails = false is not possible"),
            "{e}"
        );
        let e = registry("[tasks.echo]\nkind = \"builtin\"\ntimeot = 3\n").unwrap_err();
        assert!(e.contains("timeot"), "{e}");
    }
}
