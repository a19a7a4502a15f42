//! Sandbox settings: `[sandbox]` defaults and the `kind = "wasm"` keys of a task type.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::execute::grants::Grants;
use crate::limits::RunLimits;

const MIB: u64 = 1024 * 1024;

/// `[sandbox]`: engine-wide settings and defaults for every wasm task type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxDefaults {
    /// Linear memory cap per run, in MiB.
    pub memory_mb: u64,
    /// Fuel (roughly: wasm instructions) per run; unset means no fuel budget.
    pub fuel: Option<u64>,
    /// Largest result a guest may return, in bytes.
    pub max_result_bytes: u64,
    /// Guest log volume kept per run (log calls, stdout and stderr together), in bytes.
    pub max_log_bytes: u64,
    /// Largest wasm stack, in KiB.
    pub max_stack_kb: u64,
    /// Concurrent runs the pooling allocator is sized for.
    pub pool_instances: u32,
    /// `auto` (pooling, falling back to on-demand), `pooling`, or `on-demand`.
    pub allocator: String,
    /// Where precompiled components are cached (default: `~/.cache/absurd-host/precompiled`).
    pub cache_dir: Option<PathBuf>,
    /// The per-run limits on what a guest hands the host (the `max_*` keys of
    /// [`crate::limits`]), read from the same table.
    #[serde(skip)]
    pub limits: RunLimits,
}

impl Default for SandboxDefaults {
    fn default() -> Self {
        SandboxDefaults {
            memory_mb: 256,
            fuel: None,
            max_result_bytes: 16 * MIB,
            max_log_bytes: MIB,
            max_stack_kb: 1024,
            pool_instances: 1000,
            allocator: "auto".into(),
            cache_dir: None,
            limits: RunLimits::default(),
        }
    }
}

impl SandboxDefaults {
    pub fn from_table(table: &toml::Table) -> Result<SandboxDefaults, String> {
        let mut table = table.clone();
        let limits = RunLimits::default()
            .take_from(&mut table)
            .map_err(|e| format!("[sandbox]: {e}"))?;
        let mut d: SandboxDefaults = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("[sandbox]: {}", e.message()))?;
        d.limits = limits;
        if d.memory_mb == 0 {
            return Err("[sandbox]: memory_mb must be >= 1".into());
        }
        if d.pool_instances == 0 {
            return Err("[sandbox]: pool_instances must be >= 1".into());
        }
        if !["auto", "pooling", "on-demand"].contains(&d.allocator.as_str()) {
            return Err(format!(
                "[sandbox]: allocator must be \"auto\", \"pooling\" or \"on-demand\", got {:?}",
                d.allocator
            ));
        }
        Ok(d)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            base.join("absurd-host").join("precompiled")
        })
    }
}

/// A directory granted to a guest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (an absolute guest path such as `/data`).
    pub guest: String,
    /// `ro` (default) or `rw`.
    #[serde(default = "ro")]
    pub mode: String,
}

fn ro() -> String {
    "ro".into()
}

/// The `kind = "wasm"` keys of `[tasks.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmKeys {
    component: PathBuf,
    memory_mb: Option<u64>,
    fuel: Option<u64>,
    max_result_bytes: Option<u64>,
    max_log_bytes: Option<u64>,
    #[serde(default)]
    dirs: Vec<DirGrant>,
    #[serde(default)]
    scratch: bool,
    #[serde(default)]
    env: Vec<String>,
}

/// One wasm task type's settings, with defaults applied and paths resolved.
#[derive(Debug, Clone)]
pub struct WasmTaskConfig {
    pub component: PathBuf,
    pub memory_bytes: u64,
    pub fuel: Option<u64>,
    pub max_result_bytes: u64,
    pub max_log_bytes: u64,
    pub dirs: Vec<DirGrant>,
    /// Give each run a fresh `/scratch` directory, deleted afterwards.
    pub scratch: bool,
    /// Host environment variables passed through by name (nothing else is).
    pub env: Vec<String>,
    /// What a run may make the host hold or the database store.
    pub limits: RunLimits,
    /// What a run may touch outside itself (spawns, events). The host's task types are filled
    /// in by [`crate::dispatch`].
    pub grants: Grants,
}

impl WasmTaskConfig {
    pub fn from_table(
        task_name: &str,
        table: &toml::Table,
        defaults: &SandboxDefaults,
        base_dir: &Path,
    ) -> Result<WasmTaskConfig, String> {
        let mut table = table.clone();
        let limits = defaults.limits.take_from(&mut table)?;
        let grants = Grants::take_from(task_name, &mut table)?;
        let k: WasmKeys = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let component = resolve(&k.component);
        if !component.is_file() {
            return Err(format!("component {} does not exist", component.display()));
        }
        let memory_mb = k.memory_mb.unwrap_or(defaults.memory_mb);
        if memory_mb == 0 {
            return Err("memory_mb must be >= 1".into());
        }
        if memory_mb > defaults.memory_mb {
            return Err(format!(
                "memory_mb = {memory_mb} is above the [sandbox] memory_mb = {} that the engine's pool is sized for; raise [sandbox] memory_mb",
                defaults.memory_mb
            ));
        }
        let mut dirs = Vec::new();
        let mut guest_paths = BTreeSet::new();
        for d in k.dirs {
            if d.mode != "ro" && d.mode != "rw" {
                return Err(format!(
                    "dirs: mode must be \"ro\" or \"rw\", got {:?}",
                    d.mode
                ));
            }
            if !d.guest.starts_with('/') {
                return Err(format!("dirs: guest path {:?} must be absolute", d.guest));
            }
            if d.guest == "/scratch" && k.scratch {
                return Err("dirs: /scratch is reserved for the scratch directory".into());
            }
            if !guest_paths.insert(d.guest.clone()) {
                return Err(format!("dirs: guest path {:?} is granted twice", d.guest));
            }
            let host = resolve(&d.host);
            if !host.is_dir() {
                return Err(format!("dirs: {} is not a directory", host.display()));
            }
            dirs.push(DirGrant { host, ..d });
        }
        for name in &k.env {
            if name.is_empty() || name.contains('=') {
                return Err(format!("env: {name:?} is not a variable name"));
            }
        }
        Ok(WasmTaskConfig {
            component,
            memory_bytes: memory_mb * MIB,
            fuel: k.fuel.or(defaults.fuel),
            max_result_bytes: k.max_result_bytes.unwrap_or(defaults.max_result_bytes),
            max_log_bytes: k.max_log_bytes.unwrap_or(defaults.max_log_bytes),
            dirs,
            scratch: k.scratch,
            env: k.env,
            limits,
            grants,
        })
    }
}
