//! The `wasm` handler kind: task types as WebAssembly components, sandboxed with wasmtime.
//!
//! * One [`Sandbox`] per host: a shared `Engine` (epoch interruption, optional fuel, pooling
//!   allocator with an on-demand fallback), a `Linker` with WASI and the `task` world's
//!   imports, an epoch ticker thread (10 ms), and a cache of precompiled components.
//! * One [`WasmHandler`] per task type, holding its `InstancePre`: a component that does not
//!   match the world or needs an import we do not grant is rejected when the host starts.
//! * One `Store` per run (see [`store`]), with the type's limits: memory cap, fuel, a wall-clock
//!   deadline enforced by epochs (the guest yields every tick so it never starves other tasks),
//!   bounded output, and only the directories and environment variables it was granted.
//!
//! A trap fails only its own run; [`classify`] turns it into a failure naming the cause.

pub mod config;
pub mod store;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::execute::{BoxFuture, Failure, FailureName, Handler, TaskContext, TaskError};
use config::{SandboxDefaults, WasmTaskConfig};
use store::{GuestStream, Limiter, OutputBudget, RunState, Stop};

/// The `absurd:task@0.1.0` world (`wit/task.wit`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "task",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `absurd:task@0.2.1` world (`wit/0.2.1/task.wit`), a superset of 0.2.0 and so of 0.1.0.
/// 0.1.0 and 0.2.1 are linked into one linker (their interfaces have different versioned
/// names); a component targets one of them, found when it is loaded. A component of 0.2.0
/// links to the 0.2.1 imports: wasmtime's linker resolves an import of `…@0.2.0` to the
/// semver-compatible `…@0.2.1` it defines, and 0.2.1 only adds functions.
pub(crate) mod bindings_v2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.1",
        world: "task",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// A loaded component, of either world.
#[derive(Clone)]
enum TaskPre {
    V1(bindings::TaskPre<RunState>),
    /// With the version its imports name (`0.2.0` or `0.2.1`; `0.2.1` when it imports
    /// nothing of absurd:task).
    V2(bindings_v2::TaskPre<RunState>, &'static str),
}

impl TaskPre {
    /// The world's version, for logs.
    fn version(&self) -> &'static str {
        match self {
            TaskPre::V1(_) => "0.1.0",
            TaskPre::V2(_, version) => version,
        }
    }
}

/// What a guest's `run` returned, whichever world it targets.
type GuestOutcome =
    Result<Result<String, bindings::absurd::task::types::TaskError>, wasmtime::Error>;

/// Instantiates the component and calls its `run`.
async fn call_run(
    pre: &TaskPre,
    store: &mut Store<RunState>,
    info: &bindings::absurd::task::types::TaskInfo,
    params: &str,
) -> Result<GuestOutcome, wasmtime::Error> {
    match pre {
        TaskPre::V1(pre) => {
            let task = pre.instantiate_async(&mut *store).await?;
            Ok(task.call_run(&mut *store, info, params).await)
        }
        TaskPre::V2(pre, _) => {
            use bindings_v2::absurd::task::types as t2;
            let task = pre.instantiate_async(&mut *store).await?;
            let info = t2::TaskInfo {
                task_id: info.task_id.clone(),
                run_id: info.run_id.clone(),
                attempt: info.attempt,
                queue: info.queue.clone(),
                task_name: info.task_name.clone(),
                headers: info.headers.clone(),
            };
            Ok(task.call_run(&mut *store, &info, params).await.map(|r| {
                r.map_err(|e| bindings::absurd::task::types::TaskError {
                    kind: match e.kind {
                        t2::ErrorKind::Retryable => {
                            bindings::absurd::task::types::ErrorKind::Retryable
                        }
                        t2::ErrorKind::Permanent => {
                            bindings::absurd::task::types::ErrorKind::Permanent
                        }
                    },
                    name: e.name,
                    message: e.message,
                    details: e.details,
                })
            }))
        }
    }
}

/// The epoch ticker period: the granularity of wall-clock deadlines and of guest yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How the engine interrupts guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Fuel accounting (needed when any task type has a fuel budget; it costs some speed, so
    /// it is off otherwise).
    pub fuel: bool,
    /// Epoch interruption: how wall-clock deadlines reach a spinning guest. Always on in the
    /// host; off only to measure its cost (a guest could then spin past its deadline).
    pub epochs: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            fuel: false,
            epochs: true,
        }
    }
}

/// The shared engine, linker and component cache.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<RunState>,
    defaults: SandboxDefaults,
    options: EngineOptions,
    pooling: bool,
    /// With the pooling allocator: an on-demand engine for the runs that find every slot of
    /// the pool taken, made when first needed (the epoch ticker ticks it too).
    overflow: Arc<OnceLock<Result<Overflow, String>>>,
    ticker_stop: Arc<AtomicBool>,
}

/// The overflow engine and its linker.
struct Overflow {
    engine: Engine,
    linker: Linker<RunState>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn engine_config(defaults: &SandboxDefaults, options: EngineOptions) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(options.epochs);
    c.consume_fuel(options.fuel);
    c.max_wasm_stack((defaults.max_stack_kb as usize) * 1024);
    c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    // The `task` world is synchronous (component-model async is not used): without the
    // concurrency machinery a Store is cheaper to make, to call into, and to drop (with it,
    // every drop unwinds a parked fiber with a freshly made error).
    c.concurrency_support(false);
    c
}

/// Linear memory kept resident per pool slot between runs, when the kernel can tell which
/// pages a run dirtied (`PAGEMAP_SCAN`, Linux 6.7+): only those are reset, with `memset` or a
/// copy from the memory image, instead of `madvise` plus a page fault per page on the next
/// run. A small Rust guest dirties a few hundred KiB (stack top, data, heap).
const KEEP_RESIDENT_SCANNED: usize = 1024 * 1024;
/// Without `PAGEMAP_SCAN` the whole kept range is `memset` at every reset, so keep little.
const KEEP_RESIDENT_UNSCANNED: usize = 64 * 1024;
/// Table space kept resident per slot (a Rust guest's function table is a few KiB).
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

fn pooling_config(defaults: &SandboxDefaults) -> PoolingAllocationConfig {
    let n = defaults.pool_instances;
    let mut p = PoolingAllocationConfig::default();
    p.total_component_instances(n);
    // A Rust component is a handful of core modules (the program and small shims).
    p.total_core_instances(n.saturating_mul(8));
    p.total_memories(n.saturating_mul(2));
    p.total_tables(n.saturating_mul(4));
    p.total_stacks(n);
    p.max_memory_size((defaults.memory_mb * 1024 * 1024) as usize);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        p.pagemap_scan(wasmtime::Enabled::Yes);
        p.linear_memory_keep_resident(KEEP_RESIDENT_SCANNED);
    } else {
        p.linear_memory_keep_resident(KEEP_RESIDENT_UNSCANNED);
    }
    p.table_keep_resident(TABLE_KEEP_RESIDENT);
    p
}

impl Sandbox {
    /// Builds the engine. `fuel` turns on fuel accounting (needed when any task type has a
    /// fuel budget; it costs some speed, so it is off otherwise).
    pub fn new(defaults: SandboxDefaults, fuel: bool) -> Result<Sandbox, String> {
        Sandbox::with_options(
            defaults,
            EngineOptions {
                fuel,
                ..EngineOptions::default()
            },
        )
    }

    /// Builds the engine with explicit [`EngineOptions`].
    pub fn with_options(
        defaults: SandboxDefaults,
        options: EngineOptions,
    ) -> Result<Sandbox, String> {
        let fuel = options.fuel;
        let mut pooling = false;
        let engine = match defaults.allocator.as_str() {
            "on-demand" => Engine::new(&engine_config(&defaults, options)),
            mode => {
                let mut c = engine_config(&defaults, options);
                c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(&defaults)));
                match Engine::new(&c) {
                    Ok(e) => {
                        pooling = true;
                        Ok(e)
                    }
                    Err(e) if mode == "auto" => {
                        warn!(error = %e, "pooling allocator unavailable (short address space?); using on-demand allocation");
                        Engine::new(&engine_config(&defaults, options))
                    }
                    Err(e) => Err(e),
                }
            }
        }
        .map_err(|e| format!("cannot create the wasm engine: {e}"))?;

        let linker = new_linker(&engine)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let overflow: Arc<OnceLock<Result<Overflow, String>>> = Arc::new(OnceLock::new());
        if options.epochs {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let overflow = overflow.clone();
            std::thread::Builder::new()
                .name("absurd-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                        if let Some(Ok(o)) = overflow.get() {
                            o.engine.increment_epoch();
                        }
                    }
                })
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
        }
        info!(pooling, fuel, "wasm sandbox ready");
        Ok(Sandbox {
            engine,
            linker,
            defaults,
            options,
            pooling,
            overflow,
            ticker_stop,
        })
    }

    pub fn defaults(&self) -> &SandboxDefaults {
        &self.defaults
    }

    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads (or compiles and caches) a component and checks it against the linker.
    pub fn load(
        self: &Arc<Self>,
        task_name: &str,
        cfg: WasmTaskConfig,
    ) -> Result<WasmHandler, String> {
        let pre = self.task_pre(&self.engine, &self.linker, task_name, &cfg.component)?;
        debug!(task = task_name, world = pre.version(), "loaded component");
        Ok(WasmHandler {
            shared: Arc::new(HandlerShared {
                sandbox: self.clone(),
                pre,
                cfg,
                task_name: task_name.to_string(),
                overflow_pre: OnceLock::new(),
            }),
        })
    }

    fn task_pre(
        &self,
        engine: &Engine,
        linker: &Linker<RunState>,
        task_name: &str,
        path: &Path,
    ) -> Result<TaskPre, String> {
        let component = self.component_for(engine, path)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            format!(
                "component {} cannot run as task {task_name:?}: {e:#} (it must target the absurd:task/task world, 0.1.0, 0.2.0 or 0.2.1, importing only WASI and absurd:task interfaces)",
                path.display()
            )
        })?;
        // Its absurd:task imports say which world it targets (the `run` export's types are
        // structurally the same in both). One importing nothing of absurd:task@0.1.0 is run
        // through the 0.2.1 bindings (0.2.0's imports are a subset of them).
        let task_import = |version: &str| {
            component
                .component_type()
                .imports(engine)
                .any(|(name, _)| name.starts_with("absurd:task/") && name.ends_with(version))
        };
        if !task_import("@0.1.0") {
            if let Ok(p) = bindings_v2::TaskPre::new(pre.clone()) {
                let version = if task_import("@0.2.0") {
                    "0.2.0"
                } else {
                    "0.2.1"
                };
                return Ok(TaskPre::V2(p, version));
            }
        }
        bindings::TaskPre::new(pre).map(TaskPre::V1).map_err(|e| {
            format!(
                "component {} does not export the absurd:task `run` function (of absurd:task@0.1.0, @0.2.0 or @0.2.1): {e:#}",
                path.display()
            )
        })
    }

    /// The overflow engine (see [`Sandbox::overflow`]), made on first use.
    fn overflow(&self) -> Result<&Overflow, String> {
        self.overflow
            .get_or_init(|| {
                let engine = Engine::new(&engine_config(&self.defaults, self.options))
                    .map_err(|e| format!("cannot create the on-demand engine: {e}"))?;
                let linker = new_linker(&engine)?;
                // Ticked from now on by the epoch ticker; until its next tick, a deadline
                // check sees the epoch it starts with.
                Ok(Overflow { engine, linker })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A component from the precompiled cache, keyed by the wasm's SHA-256 and the engine's
    /// compatibility hash (so a different wasmtime or different settings recompile).
    pub fn component(&self, path: &Path) -> Result<Component, String> {
        self.component_for(&self.engine, path)
    }

    fn component_for(&self, engine: &Engine, path: &Path) -> Result<Component, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read component {}: {e}", path.display()))?;
        if wasmparser_is_component(&bytes).is_err() {
            return Err(format!(
                "{} is not a WebAssembly component (build it with `cargo build --target wasm32-wasip2`)",
                path.display()
            ));
        }
        let digest = hex(&Sha256::digest(&bytes));
        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        let dir = self.defaults.cache_dir();
        let cached = dir.join(format!("{digest}-{compat:016x}.cwasm"));
        if cached.is_file() {
            // SAFETY: the cache holds only artifacts this host wrote, named by the digest of
            // their source and the engine's compatibility hash.
            match unsafe { Component::deserialize_file(engine, &cached) } {
                Ok(c) => {
                    debug!(component = %path.display(), "loaded precompiled component");
                    return Ok(c);
                }
                Err(e) => {
                    warn!(cache = %cached.display(), error = %e, "ignoring unusable precompiled artifact")
                }
            }
        }
        let started = std::time::Instant::now();
        let artifact = engine
            .precompile_component(&bytes)
            .map_err(|e| format!("cannot compile component {}: {e:#}", path.display()))?;
        info!(component = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "compiled component");
        if let Err(e) = write_atomically(&dir, &cached, &artifact) {
            warn!(cache = %cached.display(), error = %e, "cannot cache the precompiled component");
        }
        // SAFETY: `artifact` was just compiled by this engine, from these bytes.
        unsafe { Component::deserialize(engine, &artifact) }
            .map_err(|e| format!("cannot load compiled component {}: {e:#}", path.display()))
    }
}

fn new_linker(engine: &Engine) -> Result<Linker<RunState>, String> {
    let mut linker: Linker<RunState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| format!("linking WASI: {e}"))?;
    // The task world's imports: `durable` through bindgen, `log` by hand (see
    // [`store::add_log_to_linker`]).
    bindings::absurd::task::types::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |s| s)
        .and_then(|()| {
            bindings::absurd::task::durable::add_to_linker::<RunState, HasSelf<RunState>>(
                &mut linker,
                |s| s,
            )
        })
        .and_then(|()| store::add_log_to_linker(&mut linker))
        .map_err(|e| format!("linking the task world: {e}"))?;
    // The same for absurd:task@0.2.1 (which serves @0.2.0 too).
    bindings_v2::absurd::task::types::add_to_linker::<RunState, HasSelf<RunState>>(
        &mut linker,
        |s| s,
    )
    .and_then(|()| {
        bindings_v2::absurd::task::durable::add_to_linker::<RunState, HasSelf<RunState>>(
            &mut linker,
            |s| s,
        )
    })
    .and_then(|()| store::add_log_v2_to_linker(&mut linker))
    .map_err(|e| format!("linking the task world 0.2.1: {e}"))?;
    Ok(linker)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the component-model preamble (`\0asm`, version 0x0d, layer 1).
fn wasmparser_is_component(bytes: &[u8]) -> Result<(), ()> {
    if bytes.len() >= 8 && &bytes[0..4] == b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00] {
        Ok(())
    } else {
        Err(())
    }
}

fn write_atomically(dir: &Path, dest: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dest)
}

/// A wasm task type. Holds the sandbox, so the engine and its epoch ticker live as long as
/// any handler does.
pub struct WasmHandler {
    shared: Arc<HandlerShared>,
}

struct HandlerShared {
    sandbox: Arc<Sandbox>,
    pre: TaskPre,
    cfg: WasmTaskConfig,
    task_name: String,
    /// The component on the overflow engine, made when the pool is first found full.
    overflow_pre: OnceLock<Result<(Engine, TaskPre), String>>,
}

impl HandlerShared {
    /// The engine and component for a run that found the pool full.
    fn overflow(&self) -> Result<(Engine, TaskPre), String> {
        self.overflow_pre
            .get_or_init(|| {
                let o = self.sandbox.overflow()?;
                let pre = self.sandbox.task_pre(
                    &o.engine,
                    &o.linker,
                    &self.task_name,
                    &self.cfg.component,
                )?;
                warn!(
                    task = %self.task_name,
                    pool_instances = self.sandbox.defaults.pool_instances,
                    "the pooling allocator is full; runs that find it full use on-demand allocation (raise [sandbox] pool_instances)"
                );
                Ok((o.engine.clone(), pre))
            })
            .clone()
    }
}

impl Handler for WasmHandler {
    fn kind(&self) -> crate::execute::HandlerKind {
        crate::execute::HandlerKind::Wasm
    }

    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
        let shared = self.shared.clone();
        Box::pin(async move { run_component(&shared, ctx).await })
    }
}

const STREAM_TAIL: usize = 4096;

async fn run_component(shared: &HandlerShared, ctx: TaskContext) -> Result<Value, TaskError> {
    let cfg = &shared.cfg;
    let options = shared.sandbox.options;
    let fuel_enabled = options.fuel;
    let budget = OutputBudget::new(cfg.max_log_bytes as usize);
    let stdout = GuestStream::new(budget.clone(), STREAM_TAIL * 4);
    let stderr = GuestStream::new(budget.clone(), STREAM_TAIL * 4);

    // Least privilege: nothing but what the task type was granted.
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout.clone()).stderr(stderr.clone());
    for name in &cfg.env {
        if let Ok(v) = std::env::var(name) {
            wasi.env(name, v);
        }
    }
    for d in &cfg.dirs {
        let perms = if d.mode == "rw" {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&d.host, &d.guest, perms).map_err(|e| {
            host_failure(format!(
                "cannot open granted directory {}: {e}",
                d.host.display()
            ))
        })?;
    }
    // The scratch directory is private to the run: a fresh, unpredictable name made 0700 by
    // `tempfile` (so nothing else on the machine can plant or read files in it), removed when
    // the guard drops at the end of the run.
    let _scratch = if cfg.scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("absurd-scratch-{}-", ctx.run_id()))
            .tempdir()
            .map_err(|e| host_failure(format!("cannot create scratch directory: {e}")))?;
        wasi.preopened_dir(dir.path(), "/scratch", FsPerms::ReadWrite)
            .map_err(|e| host_failure(format!("cannot open scratch directory: {e}")))?;
        Some(dir)
    } else {
        None
    };

    let info = bindings::absurd::task::types::TaskInfo {
        task_id: ctx.task_id().to_string(),
        run_id: ctx.run_id().to_string(),
        attempt: ctx.run().attempt.max(0) as u32,
        queue: ctx.queue().to_string(),
        task_name: ctx.run().task_name.clone(),
        headers: ctx.run().headers.as_ref().map(|h| h.to_string()),
    };
    let params = ctx.params().to_string();
    let deadline = ctx.deadline();

    // Every open file, directory and stream is an entry in the run's resource table.
    let mut table = ResourceTable::new();
    table.set_max_capacity(usize::try_from(cfg.limits.max_open_handles).unwrap_or(usize::MAX));
    let state = RunState {
        wasi: wasi.build(),
        table,
        limiter: Limiter {
            memory_cap: cfg.memory_bytes as usize,
            table_elements: 100_000,
            instances: 32,
            tables: 32,
            memories: 4,
        },
        ctx,
        log_budget: budget.clone(),
        logs_dropped: 0,
    };
    let mut store = new_store(&shared.sandbox.engine, state, cfg, options, deadline)?;

    let mut instance = call_run(&shared.pre, &mut store, &info, &params).await;
    if instance
        .as_ref()
        .is_err_and(|e| e.is::<wasmtime::PoolConcurrencyLimitError>())
    {
        // Every slot of the pool is taken: run on the on-demand engine rather than fail.
        match shared.overflow() {
            Ok((engine, pre)) => {
                store = new_store(&engine, store.into_data(), cfg, options, deadline)?;
                instance = call_run(&pre, &mut store, &info, &params).await;
            }
            Err(e) => {
                warn!(error = %e, "no on-demand engine to take the run the full pool refused")
            }
        }
    }
    let outcome = instance.and_then(|r| r);

    let fuel_used = if fuel_enabled {
        cfg.fuel.and_then(|budget| {
            store
                .get_fuel()
                .ok()
                .map(|left| budget.saturating_sub(left))
        })
    } else {
        None
    };
    let dropped = budget.dropped();
    if dropped > 0 {
        warn!(
            dropped_bytes = dropped,
            "guest output beyond max_log_bytes was dropped"
        );
    }
    // Copied out only when it will be logged (most runs write nothing, and debug is off).
    if tracing::enabled!(tracing::Level::DEBUG) {
        for (name, s) in [("stdout", &stdout), ("stderr", &stderr)] {
            let text = s.text();
            if !text.is_empty() {
                debug!(stream = name, "guest {name}:\n{}", text.trim_end());
            }
        }
    }

    match outcome {
        Ok(Ok(result)) => {
            if result.len() as u64 > cfg.max_result_bytes {
                return Err(TaskError::Failed(
                    Failure::new(
                        FailureName::ResultTooLarge,
                        format!(
                            "the result is {} bytes; the limit for this task type is {} (max_result_bytes)",
                            result.len(),
                            cfg.max_result_bytes
                        ),
                    )
                    .permanent(),
                ));
            }
            serde_json::from_str(&result).map_err(|e| {
                TaskError::Failed(
                    Failure::new(
                        FailureName::InvalidResult,
                        format!("the guest returned invalid JSON: {e}"),
                    )
                    .permanent(),
                )
            })
        }
        Ok(Err(guest_error)) => {
            check_guest_error(&cfg.limits, &guest_error).map_err(TaskError::Failed)?;
            let mut f = Failure::new(guest_error.name, guest_error.message);
            if let Some(d) = guest_error.details {
                f = f.with_details(serde_json::from_str(&d).unwrap_or(Value::String(d)));
            }
            if matches!(
                guest_error.kind,
                bindings::absurd::task::types::ErrorKind::Permanent
            ) {
                f = f.permanent();
            }
            Err(TaskError::Failed(f))
        }
        Err(e) => Err(classify(e, &stderr, fuel_used, cfg)),
    }
}

/// One run's store on `engine`: its limits, its fuel, and its deadline.
fn new_store(
    engine: &Engine,
    state: RunState,
    cfg: &WasmTaskConfig,
    options: EngineOptions,
    deadline: Option<tokio::time::Instant>,
) -> Result<Store<RunState>, TaskError> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_hostcall_fuel(hostcall_bytes(cfg));
    if options.fuel {
        store
            .set_fuel(cfg.fuel.unwrap_or(u64::MAX))
            .map_err(|e| host_failure(format!("cannot set fuel: {e}")))?;
    }
    if options.epochs {
        // Every tick: yield to the scheduler (so a spinning guest never starves other
        // tasks), or interrupt the guest once its wall-clock deadline has passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
    }
    Ok(store)
}

/// The most a guest may copy into the host in one call: twice the largest per-call limit, so
/// that every value within its own limit arrives whole and is refused by name when too large,
/// while a value past this is refused by wasmtime before it is copied at all.
pub fn hostcall_bytes(cfg: &WasmTaskConfig) -> usize {
    let l = &cfg.limits;
    let largest = [
        l.max_checkpoint_bytes,
        l.max_event_payload_bytes,
        l.max_spawn_params_bytes
            .saturating_add(l.max_spawn_headers_bytes),
        l.max_log_line_bytes,
        l.max_failure_message_bytes
            .saturating_add(l.max_failure_details_bytes),
        cfg.max_result_bytes,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    usize::try_from(largest.saturating_mul(2).saturating_add(1 << 20)).unwrap_or(usize::MAX)
}

/// A failure the guest returned, within the limits on what the host stores of it.
fn check_guest_error(
    limits: &crate::limits::RunLimits,
    e: &bindings::absurd::task::types::TaskError,
) -> Result<(), Failure> {
    limits.check("max_name_bytes", "the failure's name", e.name.len() as u64)?;
    limits.check(
        "max_failure_message_bytes",
        "the failure's message",
        e.message.len() as u64,
    )?;
    if let Some(d) = &e.details {
        limits.check(
            "max_failure_details_bytes",
            "the failure's details",
            d.len() as u64,
        )?;
    }
    Ok(())
}

fn host_failure(message: String) -> TaskError {
    TaskError::Failed(Failure::new(FailureName::HostError, message))
}

/// Turns a trap (or a host-initiated stop) into the run's outcome.
pub fn classify(
    e: wasmtime::Error,
    stderr: &GuestStream,
    fuel_used: Option<u64>,
    cfg: &WasmTaskConfig,
) -> TaskError {
    if let Some(stop) = e.downcast_ref::<Stop>() {
        return match stop {
            Stop::Suspended => TaskError::Suspended,
            Stop::Lost(_) => match e.downcast::<Stop>() {
                Ok(Stop::Lost(c)) => TaskError::RunLost(c),
                _ => unreachable!(),
            },
            Stop::Failed(f) => TaskError::Failed(f.clone()),
            Stop::MemoryLimit { desired, cap } => TaskError::Failed(
                Failure::new(
                    FailureName::MemoryLimit,
                    format!("the guest tried to grow its memory to {desired} bytes; the limit is {cap} (memory_mb)"),
                )
                .with_details(json!({"desired_bytes": desired, "limit_bytes": cap, "stderr_tail": stderr.tail(STREAM_TAIL)})),
            ),
        };
    }
    if let Some(f) = transfer_limit(&e, cfg) {
        return TaskError::Failed(f);
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return TaskError::Failed(Failure::new(
            FailureName::SandboxBusy,
            format!("every sandbox slot is in use ({e}); the run will be retried"),
        ));
    }
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|b| b.to_string())
        .unwrap_or_default();
    let details = |cause: &str| {
        let mut d = json!({"cause": cause, "stderr_tail": stderr.tail(STREAM_TAIL)});
        if !backtrace.is_empty() {
            d["backtrace"] = Value::String(backtrace.clone());
        }
        if let Some(f) = fuel_used {
            d["fuel_used"] = json!(f);
        }
        d
    };
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TaskError::Failed(
            Failure::new(
                FailureName::Timeout,
                "Task timed out: the guest was interrupted at its deadline",
            )
            .with_details(details("interrupt")),
        ),
        Some(Trap::OutOfFuel) => TaskError::Failed(
            Failure::new(
                FailureName::OutOfFuel,
                "the guest used up its fuel budget (fuel)",
            )
            .with_details(details("out of fuel")),
        ),
        Some(trap) => {
            let cause = match trap {
                Trap::StackOverflow => "stack overflow",
                Trap::UnreachableCodeReached => {
                    if stderr.tail(STREAM_TAIL).contains("panicked") {
                        "panic"
                    } else {
                        "unreachable"
                    }
                }
                Trap::MemoryOutOfBounds => "memory out of bounds",
                Trap::IntegerDivisionByZero => "integer division by zero",
                _ => "trap",
            };
            TaskError::Failed(
                Failure::new(
                    FailureName::Trap,
                    format!("the guest trapped: {cause} ({trap})"),
                )
                .with_details(details(cause)),
            )
        }
        None => TaskError::Failed(
            Failure::new(FailureName::Trap, format!("the guest failed: {e:#}"))
                .with_details(details("error")),
        ),
    }
}

/// A host-side limit that wasmtime or WASI enforced for us: the resource table of open
/// handles was full, or the guest tried to copy more into one host call than
/// [`hostcall_bytes`] allows.
fn transfer_limit(e: &wasmtime::Error, cfg: &WasmTaskConfig) -> Option<Failure> {
    let full = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    });
    if full {
        let limit = cfg.limits.max_open_handles;
        return Some(crate::limits::exceeded(
            "max_open_handles",
            limit,
            "open handles (files, directories, streams)",
            limit + 1,
        ));
    }
    // wasmtime's error for this is private; its text is the only way to recognise it.
    let fuel = e.chain().any(|c| {
        c.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    });
    if fuel {
        let limit = hostcall_bytes(cfg) as u64;
        return Some(
            Failure::new(
                FailureName::LimitExceeded,
                format!(
                    "a value the guest passed to one host call is over {limit} bytes; the limit is {limit} (host_call_bytes: twice the largest max_*_bytes limit, plus 1 MiB)"
                ),
            )
            .with_details(serde_json::json!({"limit": "host_call_bytes", "value": limit}))
            .permanent(),
        );
    }
    None
}

/// A wasm task type, built: its handler, its limits and its grants (whose lists of this
/// host's task types the caller fills in).
pub struct BuiltWasm {
    pub name: String,
    pub handler: Arc<dyn Handler>,
    pub limits: crate::limits::RunLimits,
    pub grants: crate::execute::grants::Grants,
}

/// Builds the sandbox (if any task type needs it) and the handler of each wasm task type.
/// An error is `(task name or "" for [sandbox], message)`.
pub fn build_handlers(
    defaults: &toml::Table,
    tasks: &[(&str, &toml::Table)],
    base_dir: &Path,
) -> Result<Vec<BuiltWasm>, (String, String)> {
    if tasks.is_empty() {
        return Ok(vec![]);
    }
    let defaults = SandboxDefaults::from_table(defaults).map_err(|e| (String::new(), e))?;
    let mut configs = Vec::new();
    for (name, table) in tasks {
        let cfg = WasmTaskConfig::from_table(name, table, &defaults, base_dir)
            .map_err(|e| (name.to_string(), e))?;
        configs.push((name.to_string(), cfg));
    }
    let fuel = configs.iter().any(|(_, c)| c.fuel.is_some());
    let sandbox = Arc::new(Sandbox::new(defaults, fuel).map_err(|e| (String::new(), e))?);
    let mut out = Vec::new();
    for (name, cfg) in configs {
        let (limits, grants) = (cfg.limits, cfg.grants.clone());
        let h = sandbox.load(&name, cfg).map_err(|e| (name.clone(), e))?;
        out.push(BuiltWasm {
            name,
            handler: Arc::new(h) as Arc<dyn Handler>,
            limits,
            grants,
        });
    }
    Ok(out)
}
