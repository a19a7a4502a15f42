//! The `ABSURD_*` environment: the DSA-110 pipeline's variables, defaults and validation.
//!
//! Every error names the variable and the value it rejected, so an operator can fix a unit
//! file without reading code. Command-line flags override these values (see `cli`).

use std::fmt;
use std::time::Duration;

/// The DSA-110 pipeline's default database URL, used by admin commands when `ABSURD_DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgresql://postgres:postgres@localhost/dsa110_absurd";
/// The DSA-110 pipeline's default queue.
pub const DEFAULT_QUEUE_NAME: &str = "dsa110-pipeline";

/// Retry strategy given to tasks spawned through absurd-host without one: 30 s doubling per
/// attempt, at most one hour between attempts.
pub use absurd_engine::worker::default_retry_strategy;

/// Configuration read from `ABSURD_*` variables, with the DSA-110 pipeline's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsurdConfig {
    /// `ABSURD_ENABLED` (default `false`).
    pub enabled: bool,
    /// `ABSURD_DATABASE_URL`; `None` when unset.
    pub database_url: Option<String>,
    /// `ABSURD_QUEUE_NAME` (default `dsa110-pipeline`).
    pub queue_name: String,
    /// `ABSURD_WORKER_CONCURRENCY` (default 4): tasks in flight per worker.
    pub worker_concurrency: u32,
    /// `ABSURD_WORKER_POLL_INTERVAL` in seconds (default 1.0): the fallback poll period.
    pub worker_poll_interval: Duration,
    /// `ABSURD_TASK_TIMEOUT` in seconds (default 3600): hard wall-clock limit per run.
    pub task_timeout: Duration,
    /// `ABSURD_MAX_RETRIES` (default 3): spawned tasks get `max_attempts = max_retries + 1`.
    pub max_retries: u32,
    /// `ABSURD_DLQ_ENABLED` (default `true`).
    pub dlq_enabled: bool,
    /// `ABSURD_DLQ_QUEUE_NAME` (default `<queue_name>-dlq`).
    pub dlq_queue_name: String,
}

/// A rejected configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable (or flag) at fault, e.g. `ABSURD_WORKER_CONCURRENCY`.
    pub variable: String,
    /// What was wrong, including the rejected value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(variable: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_string(),
        message: message.into(),
    }
}

impl Default for AbsurdConfig {
    fn default() -> Self {
        AbsurdConfig {
            enabled: false,
            database_url: None,
            queue_name: DEFAULT_QUEUE_NAME.to_string(),
            worker_concurrency: 4,
            worker_poll_interval: Duration::from_secs(1),
            task_timeout: Duration::from_secs(3600),
            max_retries: 3,
            dlq_enabled: true,
            dlq_queue_name: format!("{DEFAULT_QUEUE_NAME}-dlq"),
        }
    }
}

/// Parses a boolean the way operators write them. Unlike the DSA-110 pipeline (which read any unknown
/// word as `false`), a typo such as `ture` is an error rather than a silent `false`.
pub fn parse_bool(variable: &str, raw: &str) -> Result<bool, ConfigError> {
    value::boolean(raw).map_err(|m| err(variable, m))
}

/// Parses a positive number of seconds (fractions allowed).
pub fn parse_seconds(variable: &str, raw: &str) -> Result<Duration, ConfigError> {
    value::positive_seconds(raw).map_err(|m| err(variable, m))
}

/// The typed values of the `ABSURD_*` variables and of the flags that stand for them. Each
/// parser returns why it refused a value, quoting it; the caller names the variable or the
/// flag (clap does that for flags, as `invalid value 'four' for '--concurrency <N>'`), so
/// that a flag's error never names a variable the user did not set, and the other way round.
pub mod value {
    use std::time::Duration;

    /// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` (any case; empty is `false`).
    pub fn boolean(raw: &str) -> Result<bool, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(format!(
                "{raw:?} is not a boolean (use true/false, 1/0, yes/no or on/off)"
            )),
        }
    }

    fn integer(raw: &str) -> Result<i64, String> {
        raw.trim()
            .parse::<i64>()
            .map_err(|_| format!("{raw:?} is not an integer"))
    }

    /// A count of at least 1 (`ABSURD_WORKER_CONCURRENCY`).
    pub fn positive_count(raw: &str) -> Result<u32, String> {
        let n = integer(raw)?;
        if n < 1 {
            return Err(format!("must be >= 1, got {n}"));
        }
        u32::try_from(n).map_err(|_| format!("{n} is too large"))
    }

    /// A count of at least 0 (`ABSURD_MAX_RETRIES`).
    pub fn count(raw: &str) -> Result<u32, String> {
        let n = integer(raw)?;
        if n < 0 {
            return Err(format!("must be >= 0, got {n}"));
        }
        u32::try_from(n).map_err(|_| format!("{n} is too large"))
    }

    /// A positive number of seconds, fractions allowed (`ABSURD_WORKER_POLL_INTERVAL`).
    pub fn positive_seconds(raw: &str) -> Result<Duration, String> {
        let secs: f64 = raw
            .trim()
            .parse()
            .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
        if !secs.is_finite() || secs <= 0.0 {
            return Err(format!("must be > 0 seconds, got {raw}"));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| format!("{raw} seconds is too large"))
    }

    /// A whole number of seconds, at least 1 (`ABSURD_TASK_TIMEOUT`, as the DSA-110 pipeline reads it).
    pub fn whole_seconds(raw: &str) -> Result<Duration, String> {
        let n = integer(raw)?;
        if n < 1 {
            return Err(format!("must be >= 1 second, got {n}"));
        }
        Ok(Duration::from_secs(n as u64))
    }

    /// Whole seconds given as a number, at least 1 (`ABSURD_CLAIM_TIMEOUT`): the lease is
    /// kept in whole seconds, so `1.5` is refused rather than rounded.
    pub fn lease_seconds(raw: &str) -> Result<Duration, String> {
        let d = positive_seconds(raw)?;
        if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
            return Err(format!(
                "must be a whole number of seconds >= 1, got {}",
                raw.trim()
            ));
        }
        if d.as_secs() > i32::MAX as u64 {
            return Err(format!("{} seconds is too large", raw.trim()));
        }
        Ok(d)
    }

    /// A number of seconds, zero or more (`ABSURD_SHUTDOWN_GRACE`).
    pub fn seconds_or_zero(raw: &str) -> Result<Duration, String> {
        match raw.trim().parse::<f64>() {
            Ok(s) if s >= 0.0 && s.is_finite() => {
                Ok(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
            }
            _ => Err(format!("{raw:?} is not a number of seconds >= 0")),
        }
    }
}

impl AbsurdConfig {
    /// Reads the process environment and validates the result.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (for tests and for layering), then validates.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let c = Self::read(lookup)?;
        c.validate()?;
        Ok(c)
    }

    /// Reads variables through `lookup`, each checked on its own; the caller then overrides
    /// what it has from elsewhere (typed flags) and calls [`AbsurdConfig::validate`].
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = AbsurdConfig::default();
        if let Some(v) = lookup("ABSURD_ENABLED") {
            c.enabled = parse_bool("ABSURD_ENABLED", &v)?;
        }
        c.database_url = lookup("ABSURD_DATABASE_URL").filter(|v| !v.trim().is_empty());
        if let Some(v) = lookup("ABSURD_QUEUE_NAME") {
            c.queue_name = v;
        }
        let read = |variable: &str, parse: fn(&str) -> Result<_, String>| {
            lookup(variable)
                .map(|v| parse(&v).map_err(|m| err(variable, m)))
                .transpose()
        };
        if let Some(n) = read("ABSURD_WORKER_CONCURRENCY", value::positive_count)? {
            c.worker_concurrency = n;
        }
        if let Some(v) = lookup("ABSURD_WORKER_POLL_INTERVAL") {
            c.worker_poll_interval = parse_seconds("ABSURD_WORKER_POLL_INTERVAL", &v)?;
        }
        if let Some(v) = lookup("ABSURD_TASK_TIMEOUT") {
            c.task_timeout = value::whole_seconds(&v).map_err(|m| err("ABSURD_TASK_TIMEOUT", m))?;
        }
        if let Some(n) = read("ABSURD_MAX_RETRIES", value::count)? {
            c.max_retries = n;
        }
        if let Some(v) = lookup("ABSURD_DLQ_ENABLED") {
            c.dlq_enabled = parse_bool("ABSURD_DLQ_ENABLED", &v)?;
        }
        c.dlq_queue_name = match lookup("ABSURD_DLQ_QUEUE_NAME") {
            Some(v) => v,
            None => format!("{}-dlq", c.queue_name),
        };
        Ok(c)
    }

    /// Checks the combined values (also after command-line overrides).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.database_url.is_none() {
            return Err(err(
                "ABSURD_DATABASE_URL",
                "must be set when Absurd is enabled (ABSURD_ENABLED=true)",
            ));
        }
        validate_queue_name("ABSURD_QUEUE_NAME", &self.queue_name)?;
        if self.worker_concurrency < 1 {
            return Err(err("ABSURD_WORKER_CONCURRENCY", "must be >= 1, got 0"));
        }
        if self.worker_poll_interval.is_zero() {
            return Err(err(
                "ABSURD_WORKER_POLL_INTERVAL",
                "must be > 0 seconds, got 0",
            ));
        }
        if self.task_timeout < Duration::from_secs(1) {
            return Err(err(
                "ABSURD_TASK_TIMEOUT",
                format!("must be >= 1 second, got {:?}", self.task_timeout),
            ));
        }
        if self.dlq_enabled {
            if self.dlq_queue_name.trim().is_empty() {
                return Err(err(
                    "ABSURD_DLQ_QUEUE_NAME",
                    "must not be empty when the dead-letter queue is enabled (ABSURD_DLQ_ENABLED=true)",
                ));
            }
            validate_queue_name("ABSURD_DLQ_QUEUE_NAME", &self.dlq_queue_name)?;
            if self.dlq_queue_name == self.queue_name {
                return Err(err(
                    "ABSURD_DLQ_QUEUE_NAME",
                    format!(
                        "{:?} is the work queue itself; dead letters need a queue of their own",
                        self.dlq_queue_name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `max_attempts` given to tasks spawned without one: the first run plus the retries.
    pub fn default_max_attempts(&self) -> i32 {
        i32::try_from(self.max_retries.saturating_add(1)).unwrap_or(i32::MAX)
    }

    /// The database URL to use: the configured one, or the DSA-110 pipeline's default.
    pub fn database_url_or_default(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }
}

/// The same rule as `absurd.validate_queue_name`: non-empty, at most 57 bytes.
pub fn validate_queue_name(variable: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(err(variable, "queue name must not be empty"));
    }
    if name.len() > 57 {
        return Err(err(
            variable,
            format!(
                "queue name {name:?} is {} bytes long; the limit is 57",
                name.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<AbsurdConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AbsurdConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_dsa110_pipeline() {
        let c = cfg(&[]).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.database_url, None);
        assert_eq!(c.database_url_or_default(), DEFAULT_DATABASE_URL);
        assert_eq!(c.queue_name, "dsa110-pipeline");
        assert_eq!(c.worker_concurrency, 4);
        assert_eq!(c.worker_poll_interval, Duration::from_secs(1));
        assert_eq!(c.task_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.default_max_attempts(), 4);
        assert!(c.dlq_enabled);
        assert_eq!(c.dlq_queue_name, "dsa110-pipeline-dlq");
    }

    #[test]
    fn every_variable_is_read() {
        let c = cfg(&[
            ("ABSURD_ENABLED", "yes"),
            ("ABSURD_DATABASE_URL", "postgresql://h/db"),
            ("ABSURD_QUEUE_NAME", "q1"),
            ("ABSURD_WORKER_CONCURRENCY", "16"),
            ("ABSURD_WORKER_POLL_INTERVAL", "0.25"),
            ("ABSURD_TASK_TIMEOUT", "60"),
            ("ABSURD_MAX_RETRIES", "0"),
            ("ABSURD_DLQ_ENABLED", "false"),
        ])
        .unwrap();
        assert!(c.enabled);
        assert_eq!(c.database_url.as_deref(), Some("postgresql://h/db"));
        assert_eq!(c.queue_name, "q1");
        assert_eq!(c.worker_concurrency, 16);
        assert_eq!(c.worker_poll_interval, Duration::from_millis(250));
        assert_eq!(c.task_timeout, Duration::from_secs(60));
        assert_eq!(c.default_max_attempts(), 1);
        assert!(!c.dlq_enabled);
        assert_eq!(
            c.dlq_queue_name, "q1-dlq",
            "DLQ name follows the queue name"
        );
    }

    #[test]
    fn errors_name_the_variable_and_value() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("ABSURD_WORKER_CONCURRENCY", "0")],
                "ABSURD_WORKER_CONCURRENCY",
                "got 0",
            ),
            (
                &[("ABSURD_WORKER_CONCURRENCY", "four")],
                "ABSURD_WORKER_CONCURRENCY",
                "\"four\"",
            ),
            (
                &[("ABSURD_WORKER_POLL_INTERVAL", "0")],
                "ABSURD_WORKER_POLL_INTERVAL",
                "got 0",
            ),
            (
                &[("ABSURD_WORKER_POLL_INTERVAL", "-1")],
                "ABSURD_WORKER_POLL_INTERVAL",
                "-1",
            ),
            (
                &[("ABSURD_TASK_TIMEOUT", "0")],
                "ABSURD_TASK_TIMEOUT",
                "got 0",
            ),
            (
                &[("ABSURD_TASK_TIMEOUT", "1.5")],
                "ABSURD_TASK_TIMEOUT",
                "\"1.5\"",
            ),
            (
                &[("ABSURD_MAX_RETRIES", "-1")],
                "ABSURD_MAX_RETRIES",
                "got -1",
            ),
            (&[("ABSURD_ENABLED", "ture")], "ABSURD_ENABLED", "\"ture\""),
            (
                &[("ABSURD_ENABLED", "true")],
                "ABSURD_DATABASE_URL",
                "must be set",
            ),
            (
                &[("ABSURD_DLQ_QUEUE_NAME", "")],
                "ABSURD_DLQ_QUEUE_NAME",
                "must not be empty",
            ),
            (&[("ABSURD_QUEUE_NAME", "")], "ABSURD_QUEUE_NAME", "empty"),
        ];
        for (vars, variable, needle) in cases {
            let e = cfg(vars).expect_err(&format!("{vars:?} must be rejected"));
            assert_eq!(&e.variable, variable, "{vars:?}");
            let text = e.to_string();
            assert!(
                text.contains(variable) && text.contains(needle),
                "{vars:?}: {text}"
            );
        }
    }

    #[test]
    fn disabled_dlq_may_have_an_empty_name() {
        let c = cfg(&[("ABSURD_DLQ_ENABLED", "0"), ("ABSURD_DLQ_QUEUE_NAME", "")]).unwrap();
        assert!(!c.dlq_enabled);
    }
}
