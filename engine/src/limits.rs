//! Limits: everything a run can make the host hold or the database store, bounded in one place.
//!
//! A run reaches the host through more than its linear memory: step names kept for the run,
//! checkpoint values, events, spawned tasks, log lines, its failure. Each of those has a limit
//! here, with a default that a normal task never meets. The limits are `[sandbox]` keys of
//! `absurd-host.toml`, and each can be set again per wasm task type. Exceeding one fails the run
//! permanently as `$LimitExceeded`, with the limit's key and value in the message, so an
//! operator knows which key to raise.
//!
//! The checkpoint and event-payload limits also bound what the host reads from rows that other
//! Absurd clients wrote ([`ReadLimits`]).

use serde_json::json;

pub use absurd_client::claimed::ReadLimits;
use absurd_client::failure::Failure;
use absurd_client::vocab::FailureName;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Per-run limits on what a task hands the host. Field names are the configuration keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Step names, event names, spawned task and queue names, idempotency keys, failure names.
    pub max_name_bytes: u64,
    /// Checkpoint names one execution may use (`begin-step` calls, sleeps, event waits).
    pub max_steps: u64,
    /// One checkpoint value, as JSON text.
    pub max_checkpoint_bytes: u64,
    /// All checkpoints of one task: those loaded for the run plus those it writes.
    pub max_checkpoint_total_bytes: u64,
    /// An emitted event's payload (and a received one).
    pub max_event_payload_bytes: u64,
    /// The params of a spawned task.
    pub max_spawn_params_bytes: u64,
    /// The headers of a spawned task.
    pub max_spawn_headers_bytes: u64,
    /// `spawn` calls per run.
    pub max_spawns: u64,
    /// `emit-event` calls per run.
    pub max_emits: u64,
    /// `await-task-result` calls per run (each may register the run as a waiter).
    pub max_awaits: u64,
    /// One `log` call's message (checked before it is copied out of guest memory).
    pub max_log_line_bytes: u64,
    /// The message of a failure a task returns.
    pub max_failure_message_bytes: u64,
    /// The details of a failure a task returns, as JSON text.
    pub max_failure_details_bytes: u64,
    /// WASI resources (files, directories, streams) a guest may hold open at once.
    pub max_open_handles: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_name_bytes: KIB,
            max_steps: 10_000,
            max_checkpoint_bytes: 16 * MIB,
            max_checkpoint_total_bytes: 64 * MIB,
            max_event_payload_bytes: MIB,
            max_spawn_params_bytes: 4 * MIB,
            max_spawn_headers_bytes: 64 * KIB,
            max_spawns: 1000,
            max_emits: 1000,
            max_awaits: 1000,
            max_log_line_bytes: 64 * KIB,
            max_failure_message_bytes: 64 * KIB,
            max_failure_details_bytes: MIB,
            max_open_handles: 1024,
        }
    }
}

/// The keys of [`RunLimits`], in the order the docs list them.
pub const KEYS: &[&str] = &[
    "max_name_bytes",
    "max_steps",
    "max_checkpoint_bytes",
    "max_checkpoint_total_bytes",
    "max_event_payload_bytes",
    "max_spawn_params_bytes",
    "max_spawn_headers_bytes",
    "max_spawns",
    "max_emits",
    "max_awaits",
    "max_log_line_bytes",
    "max_failure_message_bytes",
    "max_failure_details_bytes",
    "max_open_handles",
];

impl RunLimits {
    /// The value of a key (for `check` and the docs).
    pub fn get(&self, key: &str) -> Option<u64> {
        Some(match key {
            "max_name_bytes" => self.max_name_bytes,
            "max_steps" => self.max_steps,
            "max_checkpoint_bytes" => self.max_checkpoint_bytes,
            "max_checkpoint_total_bytes" => self.max_checkpoint_total_bytes,
            "max_event_payload_bytes" => self.max_event_payload_bytes,
            "max_spawn_params_bytes" => self.max_spawn_params_bytes,
            "max_spawn_headers_bytes" => self.max_spawn_headers_bytes,
            "max_spawns" => self.max_spawns,
            "max_emits" => self.max_emits,
            "max_awaits" => self.max_awaits,
            "max_log_line_bytes" => self.max_log_line_bytes,
            "max_failure_message_bytes" => self.max_failure_message_bytes,
            "max_failure_details_bytes" => self.max_failure_details_bytes,
            "max_open_handles" => self.max_open_handles,
            _ => return None,
        })
    }

    /// Takes the limit keys out of `table` (`[sandbox]` or a task type's table, whose other
    /// keys are someone else's) and applies them over these limits.
    pub fn take_from(&self, table: &mut toml::Table) -> Result<RunLimits, String> {
        let mut mine = toml::Table::new();
        for key in KEYS {
            if let Some(v) = table.remove(*key) {
                mine.insert(key.to_string(), v);
            }
        }
        self.overridden(&mine)
    }

    /// Applies the keys of a table over these limits (a task type's overrides of `[sandbox]`),
    /// refusing unknown keys and values that are not positive integers.
    pub fn overridden(&self, table: &toml::Table) -> Result<RunLimits, String> {
        let mut out = *self;
        for (key, value) in table {
            let n = match value.as_integer() {
                Some(n) if n >= 1 => n as u64,
                _ => return Err(format!("{key} must be a whole number >= 1, got {value}")),
            };
            let slot = match key.as_str() {
                "max_name_bytes" => &mut out.max_name_bytes,
                "max_steps" => &mut out.max_steps,
                "max_checkpoint_bytes" => &mut out.max_checkpoint_bytes,
                "max_checkpoint_total_bytes" => &mut out.max_checkpoint_total_bytes,
                "max_event_payload_bytes" => &mut out.max_event_payload_bytes,
                "max_spawn_params_bytes" => &mut out.max_spawn_params_bytes,
                "max_spawn_headers_bytes" => &mut out.max_spawn_headers_bytes,
                "max_spawns" => &mut out.max_spawns,
                "max_emits" => &mut out.max_emits,
                "max_awaits" => &mut out.max_awaits,
                "max_log_line_bytes" => &mut out.max_log_line_bytes,
                "max_failure_message_bytes" => &mut out.max_failure_message_bytes,
                "max_failure_details_bytes" => &mut out.max_failure_details_bytes,
                "max_open_handles" => &mut out.max_open_handles,
                _ => return Err(format!("unknown key `{key}`")),
            };
            *slot = n;
        }
        out.validate()?;
        Ok(out)
    }

    /// Refuses zero values (a limit of 0 would fail every run).
    pub fn validate(&self) -> Result<(), String> {
        for key in KEYS {
            if self.get(key) == Some(0) {
                return Err(format!("{key} must be >= 1, got 0"));
            }
        }
        if self.max_checkpoint_bytes > self.max_checkpoint_total_bytes {
            return Err(format!(
                "max_checkpoint_bytes = {} is above max_checkpoint_total_bytes = {}",
                self.max_checkpoint_bytes, self.max_checkpoint_total_bytes
            ));
        }
        Ok(())
    }

    /// Checks a size against the limit `key`: `what` names the thing measured ("step name").
    pub fn check(&self, key: &str, what: &str, actual: u64) -> Result<(), Failure> {
        let limit = self.get(key).expect("a known limit key");
        if actual > limit {
            Err(exceeded(key, limit, what, actual))
        } else {
            Ok(())
        }
    }

    /// The limits on reading rows, taken from these.
    pub fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            max_checkpoint_bytes: self.max_checkpoint_bytes,
            max_checkpoint_total_bytes: self.max_checkpoint_total_bytes,
            max_event_payload_bytes: self.max_event_payload_bytes,
        }
    }
}

/// Bounds on a native program's control channel (`execute::native::control`): keys of
/// `[native]` and of a native task type's table. What the requests carry (checkpoints, spawns,
/// events, log lines) is bounded by the [`RunLimits`] as for wasm; these bound the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// One request line, newline excluded. Default: room for the largest value the run limits
    /// allow, escaped ([`ControlLimits::for_run`]).
    pub max_control_line_bytes: u64,
    /// Connections open at once; each is served one request at a time, so this is also the
    /// number of requests in flight.
    pub max_control_connections: u64,
    /// Requests per execution of the program.
    pub max_control_requests: u64,
    /// Sustained requests per second, with a burst of ten seconds' worth.
    pub max_control_requests_per_second: u64,
}

/// The keys of [`ControlLimits`].
pub const CONTROL_KEYS: &[&str] = &[
    "max_control_line_bytes",
    "max_control_connections",
    "max_control_requests",
    "max_control_requests_per_second",
];

impl ControlLimits {
    /// The defaults for a run with `run` limits: the line fits the largest checkpoint, spawn or
    /// event payload twice over (JSON escaping) plus 64 KiB for the rest of the request.
    pub fn for_run(run: &RunLimits) -> ControlLimits {
        let largest = run
            .max_checkpoint_bytes
            .max(run.max_spawn_params_bytes + run.max_spawn_headers_bytes)
            .max(run.max_event_payload_bytes)
            .max(run.max_log_line_bytes);
        ControlLimits {
            max_control_line_bytes: largest.saturating_mul(2).saturating_add(64 * KIB),
            max_control_connections: 16,
            max_control_requests: 100_000,
            max_control_requests_per_second: 1_000,
        }
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        Some(match key {
            "max_control_line_bytes" => self.max_control_line_bytes,
            "max_control_connections" => self.max_control_connections,
            "max_control_requests" => self.max_control_requests,
            "max_control_requests_per_second" => self.max_control_requests_per_second,
            _ => return None,
        })
    }

    /// Applies the control keys found in `table` (others are left alone).
    pub fn overridden(&self, table: &toml::Table) -> Result<ControlLimits, String> {
        let mut out = *self;
        for key in CONTROL_KEYS {
            let Some(value) = table.get(*key) else {
                continue;
            };
            let n = match value.as_integer() {
                Some(n) if n >= 1 => n as u64,
                _ => return Err(format!("{key} must be a whole number >= 1, got {value}")),
            };
            let slot = match *key {
                "max_control_line_bytes" => &mut out.max_control_line_bytes,
                "max_control_connections" => &mut out.max_control_connections,
                "max_control_requests" => &mut out.max_control_requests,
                _ => &mut out.max_control_requests_per_second,
            };
            *slot = n;
        }
        Ok(out)
    }

    /// Checks a count against the limit `key` (see [`RunLimits::check`]).
    pub fn check(&self, key: &str, what: &str, actual: u64) -> Result<(), Failure> {
        let limit = self.get(key).expect("a known control limit key");
        if actual > limit {
            Err(exceeded(key, limit, what, actual))
        } else {
            Ok(())
        }
    }
}

/// The failure of an exceeded limit: permanent, since the same run would exceed it again.
pub fn exceeded(key: &str, limit: u64, what: &str, actual: u64) -> Failure {
    let message = if key.ends_with("_bytes") {
        format!("{what} is {actual} bytes; the limit is {limit} ({key})")
    } else {
        format!("{what}: {actual}; the limit is {limit} ({key})")
    };
    Failure::new(FailureName::LimitExceeded, message)
        .with_details(json!({"limit": key, "value": limit, "actual": actual}))
        .permanent()
}

/// A text for a message about it: the text itself when short, else its start and its size, so
/// that a message about an oversized argument is never oversized itself.
pub fn preview(text: &str) -> String {
    const KEEP: usize = 64;
    if text.len() <= KEEP {
        return format!("{text:?}");
    }
    let mut end = KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

/// The failure of a host call with an argument out of range.
pub fn invalid_call(message: impl Into<String>) -> Failure {
    Failure::new(FailureName::InvalidCall, message).permanent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_nonzero_default_and_a_getter() {
        let d = RunLimits::default();
        for key in KEYS {
            assert!(d.get(key).unwrap() > 0, "{key}");
        }
        assert!(d.validate().is_ok());
        assert_eq!(d.get("nope"), None);
    }

    #[test]
    fn overrides_name_the_bad_key_and_value() {
        let d = RunLimits::default();
        let t: toml::Table = toml::from_str("max_spawns = 5\nmax_name_bytes = 64").unwrap();
        let o = d.overridden(&t).unwrap();
        assert_eq!((o.max_spawns, o.max_name_bytes), (5, 64));
        let t: toml::Table = toml::from_str("max_spawns = 0").unwrap();
        assert!(d.overridden(&t).unwrap_err().contains("max_spawns must be"));
        let t: toml::Table = toml::from_str("max_spawns = \"many\"").unwrap();
        assert!(d.overridden(&t).unwrap_err().contains("\"many\""));
        let t: toml::Table = toml::from_str("max_spans = 3").unwrap();
        assert!(d.overridden(&t).unwrap_err().contains("max_spans"));
    }

    #[test]
    fn read_limits_default_to_the_run_limits() {
        assert_eq!(RunLimits::default().read_limits(), ReadLimits::default());
    }

    #[test]
    fn previews_are_short() {
        assert_eq!(preview("abc"), "\"abc\"");
        let long = "é".repeat(100);
        let p = preview(&long);
        assert!(p.len() < 100 && p.ends_with("(200 bytes)"), "{p}");
    }

    #[test]
    fn exceeded_names_the_key_and_value() {
        let f = RunLimits::default()
            .check("max_name_bytes", "step name", 8 * MIB)
            .unwrap_err();
        assert_eq!(f.name, FailureName::LimitExceeded);
        assert!(!f.retryable);
        assert_eq!(
            f.message,
            "step name is 8388608 bytes; the limit is 1024 (max_name_bytes)"
        );
        assert!(f.message.contains("1024 (max_name_bytes)"), "{}", f.message);
        assert_eq!(f.details["limit"], "max_name_bytes");
    }
}
