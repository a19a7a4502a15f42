//! `fuzz`: a guest that calls every host import with extreme arguments, for the host-import
//! fuzzer (`host/tests/fuzz_imports.rs`).
//!
//! Params: `{"seed": u64, "ops": n, "scale": mib, "fs": bool}`. A seeded PRNG picks `ops`
//! import calls (default 20): step names that are empty, huge, repeated or many; checkpoint
//! values, event payloads, spawn params and headers that are invalid, deeply nested or huge
//! JSON; sleeps of NaN, ±inf, negative, tiny and astronomic lengths; wake times from `i64::MIN`
//! to `i64::MAX`; awaits with no, zero and maximal timeouts, of one task or of any of up to
//! 5,000; cancelling children, non-children and no tasks; spawns into foreign, missing and
//! dead-letter queues with huge names and `u32::MAX` attempts; heartbeats of `u32::MAX`
//! seconds; log floods; files opened until the host says no (with `fs`, in the granted
//! `/scratch`); and stdout floods. The run then returns a result (sometimes huge, sometimes
//! invalid JSON) or a task error with a huge name, message or details. The largest strings are
//! `scale` MiB (default 16), so the test's `memory_mb` must leave room for one of them.
//!
//! The guest calls the raw WIT imports (not the SDK's safe API) so that it can pass anything.
//! Every random draw happens whatever the host answers, so a re-execution after a suspension
//! replays the same calls (and finds its checkpoints), as a durable task must.
//!
//! Params without a `seed` (for example those of a task spawned by a fuzz run) make a child:
//! it returns `{"child": true}` at once, so spawns never multiply into more fuzzing.
//!
//! JSON the guest writes that the host may store is tagged with `"$t": "<run id>/<nonce>"`
//! (the nonce differs per execution), so the test can count spawns and emits per execution.

use std::io::Write;

use absurd_guest::bindings::absurd::task::{durable, log as wlog, types};
use absurd_guest::bindings::{self, TaskInfo};

const MIB: usize = 1024 * 1024;

struct Fuzz;

impl bindings::Guest for Fuzz {
    fn run(info: TaskInfo, params: String) -> Result<String, bindings::TaskError> {
        let Some(p) = Params::parse(&params) else {
            return Ok(r#"{"child":true}"#.to_string());
        };
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut f = Gen {
            rng: Rng(p.seed),
            huge: p.scale_mib.clamp(1, 64) * MIB,
            tag: format!("{}/{nonce:x}", info.run_id),
            fs: p.fs,
        };
        for i in 0..p.ops {
            f.op(i);
        }
        f.finish(p.seed)
    }
}

bindings::__absurd_export_world!(Fuzz with_types_in absurd_guest::bindings);

/// The params, read by hand (no serde): a child's params may be anything at all.
struct Params {
    seed: u64,
    ops: u32,
    scale_mib: usize,
    fs: bool,
}

impl Params {
    fn parse(text: &str) -> Option<Params> {
        let v: absurd_guest::serde_json::Value = absurd_guest::serde_json::from_str(text).ok()?;
        let seed = v.get("seed")?.as_u64()?;
        Some(Params {
            seed,
            ops: v
                .get("ops")
                .and_then(|o| o.as_u64())
                .unwrap_or(20)
                .min(1000) as u32,
            scale_mib: v.get("scale").and_then(|o| o.as_u64()).unwrap_or(16) as usize,
            fs: v.get("fs").and_then(|o| o.as_bool()).unwrap_or(false),
        })
    }
}

/// splitmix64: tiny, and good enough to pick fuzz cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

struct Gen {
    rng: Rng,
    /// The largest string this run builds.
    huge: usize,
    tag: String,
    fs: bool,
}

/// `n` copies of `c`, allocated once at the exact size.
fn fill(c: char, n: usize) -> String {
    let mut s = String::with_capacity(n * c.len_utf8());
    s.extend(std::iter::repeat_n(c, n));
    s
}

fn log(msg: &str) {
    wlog::log(wlog::Level::Debug, msg);
}

impl Gen {
    /// A length: mostly small, often just around the limits the test configures (256-byte
    /// names, 64 KiB checkpoints), sometimes MiBs, now and then close to `huge`.
    fn size(&mut self) -> usize {
        let n = match self.rng.below(100) {
            0..=34 => self.rng.below(17) as usize,
            35..=54 => 200 + self.rng.below(120) as usize,
            55..=69 => 1000 + self.rng.below(80_000) as usize,
            70..=84 => 64 * 1024 + self.rng.below(MIB as u64) as usize,
            85..=95 => MIB + self.rng.below(3 * MIB as u64) as usize,
            _ => self.huge / 2 + self.rng.below(self.huge as u64 / 2) as usize,
        };
        n.min(self.huge)
    }

    /// The queue an await or cancel names: this run's own (half the time), one that does not
    /// exist, or a drawn name.
    fn queue_choice(&mut self) -> Option<String> {
        match self.rng.below(4) {
            0 | 1 => None,
            2 => Some("no-such-queue".to_string()),
            _ => Some(self.name()),
        }
    }

    fn name(&mut self) -> String {
        match self.rng.below(10) {
            0 => String::new(),
            1 => self
                .rng
                .pick(&["step", "a", "x#2", "$awaitEvent:s1", "fuzz", "#", "name#1"])
                .to_string(),
            2 => " \t\n".to_string(),
            3 => "nul\u{0}inside".to_string(),
            4 => {
                let n = self.size() / 2;
                fill('é', n)
            }
            5..=7 => {
                let n = self.size();
                fill('n', n)
            }
            // A small pool shared by every run: repeated names, and events that other runs
            // emit and await.
            _ => format!("s{}", self.rng.below(8)),
        }
    }

    fn opt_name(&mut self) -> Option<String> {
        if self.rng.pct(30) {
            None
        } else {
            Some(self.name())
        }
    }

    /// JSON text (or not): valid, invalid, deep, huge, odd numbers and escapes.
    fn json(&mut self) -> String {
        let tag = self.tag.clone();
        match self.rng.below(13) {
            0 | 1 => format!(r#"{{"$t":"{tag}","v":[1,"two",{{"three":3.5}},null,true]}}"#),
            2 => self
                .rng
                .pick(&[
                    "",
                    "{",
                    "nul",
                    "[1,",
                    "\"unterminated",
                    "{\"a\":}",
                    "{'a':1}",
                    "[1,2,]",
                    "\"raw\u{0}nul\"",
                    "\u{feff}{}",
                    "{} {}",
                ])
                .to_string(),
            3 => {
                let d = self.rng.pick(&[64usize, 126, 127, 128, 129, 1000, 100_000]);
                let mut s = format!(r#"{{"$t":"{tag}","d":"#);
                s.reserve(2 * d + 1);
                s.extend(std::iter::repeat_n('[', d));
                s.extend(std::iter::repeat_n(']', d));
                s.push('}');
                s
            }
            4 | 5 => {
                let n = self.size();
                let mut s = format!(r#"{{"$t":"{tag}","s":""#);
                s.reserve(n + 2);
                s.extend(std::iter::repeat_n('a', n));
                s.push_str("\"}");
                s
            }
            6 => {
                // Many small elements: jsonb's text of it is about 1.5x longer.
                let n = self.size() / 2;
                let mut s = String::with_capacity(2 * n + 2);
                s.push('[');
                s.extend(std::iter::repeat_n("7,", n));
                s.push_str("7]");
                s
            }
            7 => self
                .rng
                .pick(&[
                    "\"\\u0000\"",
                    "{\"k\\u0000\":1}",
                    "\"\\ud800\"",
                    "\"\\udc00\\ud800\"",
                    "\"\\uD83D\\uDE00\"",
                    "\"\u{10ffff}\"",
                ])
                .to_string(),
            8 => self
                .rng
                .pick(&[
                    "1e308",
                    "-1e308",
                    "1e999",
                    "-0",
                    "123456789012345678901234567890",
                    "0.1",
                    "NaN",
                    "Infinity",
                    "-Infinity",
                ])
                .to_string(),
            9 => self
                .rng
                .pick(&["null", "true", "\"str\"", "[]", "{}", "0"])
                .to_string(),
            10 => format!(r#"{{"$t":"{tag}","a":1,"a":2}}"#),
            11 => format!("  \n{{ \"$t\" : \"{tag}\" }}\t "),
            _ => format!(r#"{{"$t":"{tag}"}}"#),
        }
    }

    fn opt_json(&mut self) -> Option<String> {
        if self.rng.pct(30) {
            None
        } else {
            Some(self.json())
        }
    }

    fn op(&mut self, i: u32) {
        match self.rng.below(21) {
            0..=2 => {
                let name = self.name();
                let value = self.json();
                let other = self.rng.pct(10).then(|| self.name());
                let step = durable::begin_step(&name);
                if step.value.is_none() {
                    let cp = other.as_deref().unwrap_or(&step.checkpoint_name);
                    let r = durable::complete_step(cp, &value);
                    log(&format!("op {i}: complete-step: {:?}", r.err()));
                }
            }
            3 => {
                // Many distinct names, or one name many times (`name#2`, `name#3`, ...).
                let k = self.rng.pick(&[10u64, 100, 300, 2000]);
                let repeat = self.rng.pct(50);
                let big = self.rng.pct(20);
                let len = if big { self.size() } else { 8 };
                let base = fill('m', len);
                for j in 0..k {
                    let name = if repeat {
                        base.clone()
                    } else {
                        format!("{base}{j}")
                    };
                    let step = durable::begin_step(&name);
                    if step.value.is_none() && j % 3 == 0 {
                        let _ = durable::complete_step(&step.checkpoint_name, "1");
                    }
                }
            }
            4 | 5 => {
                let name = self.name();
                let secs = self.rng.pick(&[
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    -1.0,
                    -1e300,
                    0.0,
                    -0.0,
                    1e-300,
                    5e-324,
                    0.05,
                    0.3,
                    1e300,
                    f64::MAX,
                    1e9,
                    86400.0 * 366.0 * 10_000.0,
                    9.3e9,
                ]);
                durable::sleep_for(&name, secs);
            }
            6 => {
                let name = self.name();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let at = self.rng.pick(&[
                    i64::MIN,
                    i64::MAX,
                    -1,
                    0,
                    now,
                    now + 200,
                    253_402_300_799_999, // 9999-12-31T23:59:59.999Z
                    253_402_300_800_000, // year 10000
                    8_210_266_876_799_999,
                ]);
                durable::sleep_until(&name, at);
            }
            7 => {
                let event = self.name();
                let step = self.opt_name();
                let timeout = self.rng.pick(&[None, Some(0), Some(1), Some(u32::MAX)]);
                let r = durable::await_event(&event, step.as_deref(), timeout);
                log(&format!("op {i}: await-event: {:?}", r.map(|p| p.len())));
            }
            8 | 9 => {
                let event = self.name();
                let payload = self.json();
                let r = durable::emit_event(&event, &payload);
                log(&format!("op {i}: emit-event: {:?}", r.err()));
            }
            10 => {
                let k = self.rng.pick(&[10u64, 100, 1500]);
                for j in 0..k {
                    let payload = format!(r#"{{"$t":"{}","j":{j}}}"#, self.tag);
                    if durable::emit_event(&format!("flood-{j}"), &payload).is_err() {
                        break;
                    }
                }
            }
            11 | 12 => {
                let r = self.spawn_one();
                log(&format!("op {i}: spawn: {r:?}"));
            }
            13 => {
                let k = self.rng.pick(&[10u64, 100, 1500]);
                for j in 0..k {
                    let params = format!(r#"{{"$t":"{}","j":{j}}}"#, self.tag);
                    let opts = durable::SpawnOptions {
                        queue: None,
                        max_attempts: Some(1),
                        idempotency_key: None,
                        headers: None,
                        retry_strategy: None,
                        cancellation: None,
                    };
                    if durable::spawn("fuzz", &params, &opts).is_err() {
                        break;
                    }
                }
            }
            14 => {
                let secs =
                    self.rng
                        .pick(&[None, Some(0), Some(1), Some(5), Some(3600), Some(u32::MAX)]);
                durable::heartbeat(secs);
            }
            15 => {
                let level = self.rng.pick(&[
                    wlog::Level::Trace,
                    wlog::Level::Debug,
                    wlog::Level::Info,
                    wlog::Level::Warn,
                    wlog::Level::Error,
                ]);
                if self.rng.pct(50) {
                    let n = self.size();
                    wlog::log(level, &fill('l', n));
                } else {
                    let k = self.rng.pick(&[100u64, 10_000]);
                    for j in 0..k {
                        wlog::log(level, &format!("fuzz log line {j}"));
                    }
                }
            }
            16 => self.files(),
            17 => {
                // await-task-result: a child just spawned, a task that does not exist, or
                // text that is no task id; always with a short timeout, so a child that
                // never ends cannot hold the run.
                let id = match self.rng.below(4) {
                    // Under a key drawn from the seeded PRNG, as a durable guest spawns what it
                    // awaits: every execution of the run then awaits the same child (its
                    // outcome replays from one checkpoint), not a new child each time.
                    0 | 1 => {
                        let key = format!("fuzz-await-{:016x}", self.rng.next());
                        self.spawn_keyed(Some(key)).unwrap_or_default()
                    }
                    2 => "00000000-0000-7000-8000-000000000000".to_string(),
                    _ => self.name(),
                };
                let queue = self.queue_choice();
                let step_name = self.rng.pct(20).then(|| self.name());
                let options = durable::AwaitOptions {
                    queue,
                    step_name,
                    timeout_seconds: Some(self.rng.pick(&[0u32, 1, 2])),
                };
                let r = durable::await_task_result(&id, &options);
                log(&format!("op {i}: await-task-result: {}", r.is_some()));
            }
            18 => {
                // await-any-task-result: an empty list, a few tasks (keyed children, missing
                // tasks, text that is no id, foreign queues), or far more than max_awaits; a
                // short timeout or none.
                let n = self.rng.pick(&[0u64, 1, 3, 8, 5000]);
                let tasks: Vec<durable::AwaitedTask> = (0..n)
                    .map(|_| {
                        if n > 8 {
                            // A long list of ids of tasks that do not exist (no spawns, no
                            // huge names: the list's length is the point).
                            let task_id = format!(
                                "{:08x}-0000-7000-8000-{:012x}",
                                self.rng.next() as u32,
                                self.rng.next() & 0xffff_ffff_ffff
                            );
                            return durable::AwaitedTask {
                                task_id,
                                queue: None,
                            };
                        }
                        let task_id = match self.rng.below(4) {
                            0 => {
                                let key = format!("fuzz-any-{:016x}", self.rng.next());
                                self.spawn_keyed(Some(key)).unwrap_or_default()
                            }
                            1 => "00000000-0000-7000-8000-000000000000".to_string(),
                            _ => self.name(),
                        };
                        let queue = match self.rng.below(5) {
                            0..=2 => None,
                            3 => Some("no-such-queue".to_string()),
                            _ => Some(self.name()),
                        };
                        durable::AwaitedTask { task_id, queue }
                    })
                    .collect();
                let options = durable::AwaitAnyOptions {
                    step_name: self.rng.pct(20).then(|| self.name()),
                    timeout_seconds: self.rng.pct(80).then(|| self.rng.pick(&[0u32, 1, 2])),
                };
                let r = durable::await_any_task_result(&tasks, &options);
                log(&format!(
                    "op {i}: await-any-task-result over {n}: {:?}",
                    r.map(|f| f.index)
                ));
            }
            19 => {
                // cancel-child: a child of this run, a task that is no child, text that is no
                // id, a missing or foreign queue.
                let id = match self.rng.below(3) {
                    0 => self.spawn_one().unwrap_or_default(),
                    1 => "00000000-0000-7000-8000-000000000000".to_string(),
                    _ => self.name(),
                };
                let queue = self.queue_choice();
                let r = durable::cancel_child(&id, queue.as_deref());
                log(&format!("op {i}: cancel-child: {r:?}"));
            }
            _ => {
                let n = self.size();
                let chunk = fill('o', n.min(64 * 1024));
                let mut written = 0;
                let to_err = self.rng.pct(30);
                while written < n {
                    let r = if to_err {
                        std::io::stderr().write_all(chunk.as_bytes())
                    } else {
                        std::io::stdout().write_all(chunk.as_bytes())
                    };
                    if r.is_err() {
                        break;
                    }
                    written += chunk.len();
                }
            }
        }
    }

    fn spawn_one(&mut self) -> Result<String, String> {
        self.spawn_keyed(None)
    }

    /// A spawn with random arguments; `key`, when given, replaces the random idempotency key.
    fn spawn_keyed(&mut self, key: Option<String>) -> Result<String, String> {
        let task = match self.rng.below(8) {
            0..=2 => "fuzz".to_string(),
            3 => "no-such-type".to_string(),
            4 => "native-echo".to_string(),
            _ => self.name(),
        };
        let params = self.json();
        let queue = match self.rng.below(8) {
            0..=2 => None,
            3 => Some("fuzz".to_string()),
            4 => Some("fuzz-dlq".to_string()),
            5 => Some("other".to_string()),
            6 => Some("no-such-queue".to_string()),
            _ => Some(self.name()),
        };
        let max_attempts = self.rng.pick(&[None, Some(0), Some(1), Some(u32::MAX)]);
        let idempotency_key = match self.rng.below(4) {
            0 => Some("k".to_string()),
            1 => Some(self.name()),
            _ => None,
        };
        let idempotency_key = key.or(idempotency_key);
        let headers = self.opt_json();
        let retry_strategy = match self.rng.below(5) {
            0 => Some(durable::RetryStrategy {
                kind: durable::RetryKind::Exponential,
                base_seconds: Some(self.rng.pick(&[-1.0, 0.0, 1.0, f64::NAN, 1e9])),
                factor: Some(self.rng.pick(&[0.0, 2.0, f64::INFINITY])),
                max_seconds: None,
            }),
            1 => Some(durable::RetryStrategy {
                kind: durable::RetryKind::Fixed,
                base_seconds: Some(1.0),
                factor: None,
                max_seconds: None,
            }),
            _ => None,
        };
        let cancellation = self.rng.pct(20).then(|| durable::CancellationPolicy {
            max_delay: self.rng.pick(&[None, Some(0), Some(u64::MAX)]),
            max_duration: self.rng.pick(&[None, Some(1), Some(u64::MAX)]),
        });
        durable::spawn(
            &task,
            &params,
            &durable::SpawnOptions {
                queue,
                max_attempts,
                idempotency_key,
                headers,
                retry_strategy,
                cancellation,
            },
        )
    }

    /// Opens files in the granted `/scratch` until `k` are open at once or the host refuses.
    fn files(&mut self) {
        let k = self.rng.pick(&[10usize, 200, 5000]);
        if !self.fs {
            return;
        }
        let mut open = Vec::new();
        for j in 0..k {
            match std::fs::File::create(format!("/scratch/f{j}")) {
                Ok(f) => open.push(f),
                Err(e) => {
                    log(&format!("file {j}: {e}"));
                    break;
                }
            }
        }
    }

    /// The run's outcome: a result (valid, huge or invalid) or a task error with extreme parts.
    fn finish(&mut self, seed: u64) -> Result<String, bindings::TaskError> {
        match self.rng.below(10) {
            0..=3 => Ok(format!(r#"{{"seed":{seed}}}"#)),
            4 => Ok(self.json()),
            5 => Ok(self.rng.pick(&["", "{", "nul", "\"\\u0000\""]).to_string()),
            _ => {
                let name = match self.rng.below(5) {
                    0 => String::new(),
                    1 | 2 => "FuzzError".to_string(),
                    _ => {
                        let n = self.size();
                        let mut s = String::from("fuzz-");
                        s.push_str(&fill('e', n));
                        s
                    }
                };
                let message = if self.rng.pct(50) {
                    "fuzz failure".to_string()
                } else {
                    let n = self.size();
                    fill('m', n)
                };
                let details = self.opt_json();
                let kind = if self.rng.pct(50) {
                    types::ErrorKind::Permanent
                } else {
                    types::ErrorKind::Retryable
                };
                Err(bindings::TaskError {
                    kind,
                    name,
                    message,
                    details,
                })
            }
        }
    }
}
