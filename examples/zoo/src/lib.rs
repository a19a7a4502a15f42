//! `zoo`: misbehaving guests for the sandbox's isolation tests. `params.mode` picks one:
//!
//! | mode | what it does | expected host outcome |
//! |---|---|---|
//! | `infinite-loop` | spins forever, no host calls | `$Timeout` / `$OutOfFuel` |
//! | `deep-recursion` | unbounded recursion | `$Trap` (stack overflow) |
//! | `memory-bomb` | grows memory 1 MiB at a time until allocation fails | `$MemoryLimit` |
//! | `huge-step-allocation` | one step allocates `bytes` (default 1 GiB) at once | `$MemoryLimit` |
//! | `panic` | `panic!` | `$Trap` (unreachable) |
//! | `unreachable` | the wasm `unreachable` instruction | `$Trap` |
//! | `huge-result` | returns a JSON string of `bytes` (default 64 MiB) | result size cap |
//! | `log-flood` | `lines` host log lines (default 1,000,000) plus `bytes` (default 64 MiB) each to stdout and stderr | completes; logs truncated |
//! | `read-passwd` | reads `/etc/passwd`; returns what happened | completes with the denial |
//! | `read-env` | reads `HOME` and all env vars; returns them | completes with nothing visible |
//! | `open-socket` | TCP connect to `addr` (default `127.0.0.1:5432`); returns the outcome | completes with the denial |
//! | `block-poll` | blocks forever in a WASI poll (`via`: `"sleep"` default, or `"stdin"`) | `$Timeout` |
//! | `hostcall-loop` | `calls` (default 10,000,000) iterations of `begin-step` + `log` | `$Timeout` / `$OutOfFuel`, or completes |
//! | `sleep-wake` | `count` (default 5) sleeps of `seconds` (default 0.1) each | completes with `{"sleeps": count}` |
//! | `compute` | `iterations` (default 10,000,000) rounds of xorshift64, no host calls; returns the final state | completes (the benchmark's CPU-bound guest) |
//! | `host-calls` | the raw import calls listed in `calls_list` (below), in order | completes with what each returned, or the host's refusal |
//! | `ok` | returns `{"ok": true}` | completes |
//!
//! `host-calls` takes `calls_list`, a list of objects with an `op` and its arguments; sizes are
//! built in the guest, so a test can ask for an 8 MiB name without sending one:
//! `{"op": "begin-steps", "count": n, "bytes": b}` (n distinct step names of b bytes),
//! `{"op": "complete-step", "bytes": b}` (a checkpoint holding a string of b bytes),
//! `{"op": "sleep-for", "seconds": s}`, `{"op": "sleep-until", "millis": ms}`,
//! `{"op": "emit", "name": e, "name_bytes": b, "payload_bytes": p, "count": n}`,
//! `{"op": "await", "name": e, "name_bytes": b, "timeout": t}`,
//! `{"op": "spawn", "task": t, "queue": q, "count": n, "params_bytes": p, "task_bytes": b}`,
//! `{"op": "heartbeat", "seconds": s}`, `{"op": "log", "bytes": b}`,
//! `{"op": "open-files", "dir": d, "count": n}` (opens n files and keeps them open),
//! `{"op": "fail", "name_bytes": b, "message_bytes": m, "details_bytes": d}` (returns a
//! task error of those sizes).
//!
//! Results of the "completes" modes report what the guest saw, so tests can assert that the
//! sandbox denied the access.

use std::fmt;
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use absurd_guest::bindings::absurd::task::{durable, log as wit_log};
use absurd_guest::{Context, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    mode: Mode,
    /// Allocation / result / output size, mode-specific default.
    bytes: Option<u64>,
    /// `log-flood`: host log lines.
    lines: Option<u64>,
    /// `hostcall-loop`: iterations.
    calls: Option<u64>,
    /// `compute`: xorshift rounds.
    iterations: Option<u64>,
    /// `sleep-wake`: number of sleeps.
    count: Option<u32>,
    /// `sleep-wake`: seconds per sleep.
    seconds: Option<f64>,
    /// `open-socket`: address to connect to.
    addr: Option<String>,
    /// `block-poll`: `"sleep"` or `"stdin"`.
    via: Option<BlockVia>,
    /// `deep-recursion`: `"native"` (wasm stack) or `"shadow"` (the stack in linear memory).
    stack: Option<Stack>,
    /// `host-calls`: the calls to make.
    calls_list: Option<Vec<Value>>,
}

#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
enum Stack {
    Native,
    Shadow,
}

#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    InfiniteLoop,
    DeepRecursion,
    MemoryBomb,
    HugeStepAllocation,
    Panic,
    Unreachable,
    HugeResult,
    LogFlood,
    ReadPasswd,
    ReadEnv,
    OpenSocket,
    BlockPoll,
    HostcallLoop,
    SleepWake,
    Compute,
    HostCalls,
    Ok,
}

#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
enum BlockVia {
    Sleep,
    Stdin,
}

const MIB: u64 = 1024 * 1024;

/// The result: JSON, or (`huge-result`) a string of `bytes` `x`s that serde streams straight
/// into the result text (`collect_str`), so the guest holds only the JSON it returns.
#[derive(Serialize)]
#[serde(untagged)]
enum Out {
    Json(Value),
    Huge(#[serde(serialize_with = "huge_string")] u64),
}

fn huge_string<S: serde::Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    struct Xs(u64);
    impl fmt::Display for Xs {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            static XS: [u8; 4096] = [b'x'; 4096];
            let chunk = std::str::from_utf8(&XS).map_err(|_| fmt::Error)?;
            let mut left = self.0 as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                f.write_str(&chunk[..n])?;
                left -= n;
            }
            Ok(())
        }
    }
    s.collect_str(&Xs(*bytes))
}

fn zoo(ctx: &Context, params: Params) -> Result<Out, TaskError> {
    absurd_guest::debug!("zoo: mode {:?}", params.mode);
    if let Mode::HugeResult = params.mode {
        return Ok(Out::Huge(params.bytes.unwrap_or(64 * MIB)));
    }
    misbehave(ctx, params).map(Out::Json)
}

fn misbehave(ctx: &Context, params: Params) -> Result<Value, TaskError> {
    match params.mode {
        Mode::InfiniteLoop => {
            let mut x: u64 = 0;
            loop {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        Mode::DeepRecursion => match params.stack.unwrap_or(Stack::Native) {
            Stack::Native => Ok(json!({ "depth": recurse_native(0) })),
            Stack::Shadow => Ok(json!({ "depth": recurse_shadow(black_box(0)) })),
        },
        Mode::MemoryBomb => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Infallible allocation: running out aborts (a trap) unless the host's
                // limiter traps first on `memory.grow`.
                let mut chunk = vec![0u8; MIB as usize];
                chunk[0] = 1;
                chunk[MIB as usize - 1] = 1;
                hoard.push(black_box(chunk));
            }
        }
        Mode::HugeStepAllocation => {
            let bytes = params.bytes.unwrap_or(1024 * MIB);
            let sum: u64 = ctx.step("allocate", || {
                let block = black_box(vec![1u8; bytes as usize]);
                Ok(block
                    .iter()
                    .step_by(4096)
                    .map(|&b| u64::from(b))
                    .sum::<u64>())
            })?;
            Ok(json!({ "allocated": bytes, "pages_touched": sum }))
        }
        Mode::Panic => panic!("zoo: deliberate panic"),
        Mode::Unreachable => unreachable_instruction(),
        Mode::HugeResult => unreachable!("handled in zoo()"),
        Mode::LogFlood => {
            let lines = params.lines.unwrap_or(1_000_000);
            let bytes = params.bytes.unwrap_or(64 * MIB);
            for i in 0..lines {
                wit_log::log(wit_log::Level::Info, &format!("zoo: log flood line {i}"));
            }
            let line = [b'o'; 1023]
                .iter()
                .copied()
                .chain(Some(b'\n'))
                .collect::<Vec<u8>>();
            let (mut out_written, mut err_written) = (0u64, 0u64);
            let mut stdout = std::io::stdout().lock();
            let mut stderr = std::io::stderr().lock();
            while out_written < bytes || err_written < bytes {
                if out_written < bytes && stdout.write_all(&line).is_ok() {
                    out_written += line.len() as u64;
                } else {
                    out_written = bytes;
                }
                if err_written < bytes && stderr.write_all(&line).is_ok() {
                    err_written += line.len() as u64;
                } else {
                    err_written = bytes;
                }
            }
            let _ = stdout.flush();
            let _ = stderr.flush();
            Ok(
                json!({ "log_lines": lines, "stdout_bytes": out_written, "stderr_bytes": err_written }),
            )
        }
        Mode::ReadPasswd => Ok(match std::fs::read_to_string("/etc/passwd") {
            Ok(content) => json!({ "read": true, "content": content }),
            Err(e) => {
                json!({ "read": false, "error": e.to_string(), "kind": format!("{:?}", e.kind()) })
            }
        }),
        Mode::ReadEnv => {
            let home = match std::env::var("HOME") {
                Ok(v) => json!(v),
                Err(e) => json!({ "error": e.to_string() }),
            };
            let vars: serde_json::Map<String, Value> = std::env::vars_os()
                .map(|(k, v)| (k.to_string_lossy().into(), json!(v.to_string_lossy())))
                .collect();
            let args: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into())
                .collect();
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .map_err(|e| e.to_string());
            Ok(json!({ "home": home, "vars": vars, "args": args, "cwd": format!("{cwd:?}") }))
        }
        Mode::OpenSocket => {
            let addr = params.addr.unwrap_or_else(|| "127.0.0.1:5432".to_string());
            let outcome = match std::net::TcpStream::connect(addr.as_str()) {
                Ok(stream) => {
                    json!({ "connected": true, "peer": format!("{:?}", stream.peer_addr()) })
                }
                Err(e) => {
                    json!({ "connected": false, "error": e.to_string(), "kind": format!("{:?}", e.kind()) })
                }
            };
            Ok(json!({ "addr": addr, "outcome": outcome }))
        }
        Mode::BlockPoll => match params.via.unwrap_or(BlockVia::Sleep) {
            BlockVia::Sleep => {
                std::thread::sleep(Duration::from_secs(1_000_000));
                Ok(json!({ "woke": "sleep" }))
            }
            BlockVia::Stdin => {
                let mut buf = Vec::new();
                let outcome = std::io::stdin().read_to_end(&mut buf);
                Ok(json!({ "woke": "stdin", "read": format!("{outcome:?}") }))
            }
        },
        Mode::HostcallLoop => {
            let calls = params.calls.unwrap_or(10_000_000);
            for i in 0..calls {
                // Raw imports: `begin-step` without completing, so nothing is stored.
                let step = durable::begin_step("spin");
                black_box(step);
                wit_log::log(wit_log::Level::Trace, "zoo: hostcall loop");
                black_box(i);
            }
            Ok(json!({ "calls": calls }))
        }
        Mode::SleepWake => {
            let count = params.count.unwrap_or(5);
            let seconds = params.seconds.unwrap_or(0.1);
            let nap = Duration::try_from_secs_f64(seconds)
                .map_err(|e| TaskError::invalid_params("seconds", e))?;
            let first_run: String = ctx.step("first-run", || Ok(ctx.info().run_id.clone()))?;
            for i in 0..count {
                absurd_guest::debug!("zoo: sleep {i} of {count}");
                ctx.sleep_for("nap", nap);
            }
            Ok(json!({
                "sleeps": count,
                "first_run_id": first_run,
                "run_id": ctx.info().run_id,
                "attempt": ctx.info().attempt,
            }))
        }
        Mode::Compute => {
            let n = params.iterations.unwrap_or(10_000_000);
            // The seed and the count go through black_box so the loop cannot be folded.
            let mut x: u64 = black_box(0x9E37_79B9_7F4A_7C15);
            for _ in 0..black_box(n) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            Ok(json!({ "iterations": n, "state": x.to_string() }))
        }
        Mode::HostCalls => host_calls(params.calls_list.unwrap_or_default()),
        Mode::Ok => Ok(json!({ "ok": true })),
    }
}

/// A string of `bytes` bytes that starts with `prefix` (so that names can be told apart).
fn sized(prefix: &str, bytes: u64) -> String {
    let mut s = String::with_capacity(bytes as usize);
    s.push_str(prefix);
    while (s.len() as u64) < bytes {
        s.push('x');
    }
    s.truncate(bytes as usize);
    s
}

fn host_calls(calls: Vec<Value>) -> Result<Value, TaskError> {
    let mut out = Vec::new();
    let mut open = Vec::new();
    for call in calls {
        let op = call["op"].as_str().unwrap_or("");
        let u = |key: &str, default: u64| call[key].as_u64().unwrap_or(default);
        let name = |default: &str| match u("name_bytes", 0) {
            0 => call["name"].as_str().unwrap_or(default).to_string(),
            b => sized(call["name"].as_str().unwrap_or(default), b),
        };
        let result = match op {
            "begin-steps" => {
                let bytes = u("bytes", 8);
                for i in 0..u("count", 1) {
                    black_box(durable::begin_step(&sized(&format!("{i}-"), bytes)));
                }
                json!("began")
            }
            "complete-step" => {
                let step = durable::begin_step("big");
                let value = serde_json::to_string(&sized("", u("bytes", 8))).unwrap_or_default();
                json!(format!(
                    "{:?}",
                    durable::complete_step(&step.checkpoint_name, &value)
                ))
            }
            "sleep-for" => {
                durable::sleep_for("s", call["seconds"].as_f64().unwrap_or(0.0));
                json!("woke")
            }
            "sleep-until" => {
                durable::sleep_until("s", call["millis"].as_i64().unwrap_or(0));
                json!("woke")
            }
            "emit" => {
                let payload =
                    serde_json::to_string(&sized("", u("payload_bytes", 2))).unwrap_or_default();
                let mut last = String::new();
                for _ in 0..u("count", 1) {
                    last = format!("{:?}", durable::emit_event(&name("e"), &payload));
                }
                json!(last)
            }
            "await" => {
                let timeout = call["timeout"].as_u64().map(|t| t as u32);
                json!(durable::await_event(&name("e"), None, timeout))
            }
            "spawn" => {
                let task = match u("task_bytes", 0) {
                    0 => call["task"].as_str().unwrap_or("zoo").to_string(),
                    b => sized("t", b),
                };
                let params = match u("params_bytes", 0) {
                    0 => json!({"mode": "ok"}).to_string(),
                    b => json!({"mode": "ok", "pad": sized("", b)}).to_string(),
                };
                let options = durable::SpawnOptions {
                    queue: call["queue"].as_str().map(str::to_string),
                    max_attempts: Some(1),
                    idempotency_key: None,
                    headers: None,
                    retry_strategy: None,
                    cancellation: None,
                };
                let mut last = String::new();
                for _ in 0..u("count", 1) {
                    last = format!("{:?}", durable::spawn(&task, &params, &options));
                }
                json!(last)
            }
            "heartbeat" => {
                durable::heartbeat(call["seconds"].as_u64().map(|s| s as u32));
                json!("beat")
            }
            "log" => {
                wit_log::log(wit_log::Level::Info, &sized("line", u("bytes", 8)));
                json!("logged")
            }
            "open-files" => {
                let dir = call["dir"].as_str().unwrap_or("/scratch");
                let mut opened = 0;
                let mut error = None;
                for i in 0..u("count", 1) {
                    match std::fs::File::create(format!("{dir}/f{i}")) {
                        Ok(f) => {
                            open.push(f);
                            opened += 1;
                        }
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                json!({"opened": opened, "error": error})
            }
            "fail" => {
                let name = sized("Fail", u("name_bytes", 4));
                let message = sized("failed", u("message_bytes", 6));
                let details = sized("", u("details_bytes", 0));
                return Err(TaskError::retryable(name, message).with_details(details));
            }
            other => json!(format!("unknown op {other:?}")),
        };
        out.push(result);
    }
    Ok(json!({ "results": out }))
}

/// Recursion limit read from memory, so the compiler cannot bound the recursion.
static RECURSION_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Recursion whose frames live only on the wasm (native) stack: no address-taken locals, and
/// work after the call so it is not a tail call. Ends in wasmtime's stack-overflow trap.
#[inline(never)]
fn recurse_native(depth: u64) -> u64 {
    if depth == RECURSION_LIMIT.load(Ordering::Relaxed) {
        return depth;
    }
    recurse_native(depth + 1).wrapping_mul(31) ^ depth
}

/// Recursion with a 256-byte frame on LLVM's shadow stack in linear memory: overflowing it
/// runs the stack pointer below address 0, a memory-out-of-bounds trap.
#[inline(never)]
fn recurse_shadow(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse_shadow(depth + 1).wrapping_add(frame[7])
}

fn unreachable_instruction() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort()
}

absurd_guest::export_task!(zoo);
