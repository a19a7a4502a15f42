//! The host's own vocabulary: the `$`-prefixed failure names it writes into
//! `failure_reason.name`.
//!
//! A run's failure name stays a `String` on the wire, because guests and native programs
//! choose their own names (`ValidationError`, ...). The host's names are this enum, so that
//! the worker, the metrics, the dashboard's counts and the documentation all read one list
//! and none of them can miss a name again.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// What kind of trouble a host failure name stands for; the dashboard counts failed runs
/// per category (the `/workers` counts `sandbox_failures`, `subprocess_failures` and
/// `timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// The WebAssembly sandbox stopped or refused a guest: traps, fuel, memory, limits,
    /// grants and unusable results.
    Sandbox,
    /// A native program failed, was killed, reported no result or could not be started.
    Subprocess,
    /// The run hit its wall-clock limit.
    Timeout,
    /// The host itself: bad task data, an unknown task, the database, a panic, a lost lease.
    Host,
}

impl FailureCategory {
    /// Every category, in the dashboard's column order.
    pub const ALL: [FailureCategory; 4] = [
        FailureCategory::Sandbox,
        FailureCategory::Subprocess,
        FailureCategory::Timeout,
        FailureCategory::Host,
    ];

    /// Every host failure name of this category.
    pub fn names(self) -> impl Iterator<Item = FailureName> {
        FailureName::ALL
            .iter()
            .copied()
            .filter(move |n| n.category() == self)
    }
}

/// Declares the enum, its text and its documentation from one table, so that a name cannot
/// be added without its category and description.
macro_rules! failure_names {
    ($( $(#[doc = $doc:literal])* $variant:ident = $text:literal, $category:ident, $retry:literal; )*) => {
        /// A failure name the host writes (always `$`-prefixed). Guests' own names are not in
        /// here; see the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FailureName {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl FailureName {
            /// Every host failure name.
            pub const ALL: &'static [FailureName] = &[ $( FailureName::$variant, )* ];

            /// The name as stored in `failure_reason.name`, e.g. `$Timeout`.
            pub const fn as_str(self) -> &'static str {
                match self { $( FailureName::$variant => $text, )* }
            }

            /// Which dashboard count the name belongs to.
            pub const fn category(self) -> FailureCategory {
                match self { $( FailureName::$variant => FailureCategory::$category, )* }
            }

            /// Whether the host retries a run that failed this way (within its attempts).
            /// False means the task is failed at once: retrying cannot help.
            pub const fn retryable(self) -> bool {
                match self { $( FailureName::$variant => $retry, )* }
            }

            /// One line on what the name means, for `--help` texts, the API and the docs.
            pub fn description(self) -> &'static str {
                match self { $( FailureName::$variant => concat!($($doc),*).trim_ascii(), )* }
            }
        }
    };
}

failure_names! {
    // ---- the WebAssembly sandbox ----
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, ...) or failed
    /// in a way the host cannot name more precisely; the trap cause is in `details.cause`.
    /// Retried.
    Trap = "$Trap", Sandbox, true;
    /// The guest used up its fuel budget (`fuel`). Retried.
    OutOfFuel = "$OutOfFuel", Sandbox, true;
    /// The guest tried to grow its memory beyond `memory_mb`. Retried.
    MemoryLimit = "$MemoryLimit", Sandbox, true;
    /// The result is larger than the task type's `max_result_bytes`. Permanent.
    ResultTooLarge = "$ResultTooLarge", Sandbox, false;
    /// The result is not a JSON value the database can store. Permanent.
    InvalidResult = "$InvalidResult", Sandbox, false;
    /// The task went past a per-run limit (checkpoints, payloads, names, calls). Permanent.
    LimitExceeded = "$LimitExceeded", Sandbox, false;
    /// A host call had an argument out of range (a NaN duration, a year beyond 9999). Permanent.
    InvalidCall = "$InvalidCall", Sandbox, false;
    /// The task called something its task type was not granted. Permanent.
    NotGranted = "$NotGranted", Sandbox, false;
    /// Every sandbox slot was in use when the run started. Retried.
    SandboxBusy = "$SandboxBusy", Host, true;
    // ---- native subprocesses ----
    /// The program exited with a non-zero status. Retried.
    ProgramFailed = "$ProgramFailed", Subprocess, true;
    /// The program was killed by a signal. Retried.
    ProgramKilled = "$ProgramKilled", Subprocess, true;
    /// The program exited 0 without writing a usable result file. Retried.
    NoResult = "$NoResult", Subprocess, true;
    /// The program could not be started (not found, not executable, ...). Retried.
    SpawnFailed = "$SpawnFailed", Subprocess, true;
    /// The run's private work directory could not be created. Retried.
    WorkdirError = "$WorkdirError", Subprocess, true;
    /// The task's result reported an error (`{"status": "error"}`, the DSA-110 convention): a
    /// native program's result file, or a wasm or builtin type with `status_error_fails`;
    /// permanent when it says `"retryable": false`. Retried otherwise.
    TaskReportedError = "$TaskReportedError", Subprocess, true;
    // ---- time ----
    /// The run went past its wall-clock limit (`timeout`, `--task-timeout`). Retried.
    Timeout = "$Timeout", Timeout, true;
    // ---- the host ----
    /// The run's lease expired: its worker died or stalled (written by the database). Retried.
    ClaimTimeout = "$ClaimTimeout", Host, true;
    /// The task's params, headers or checkpoints could not be decoded. Permanent.
    InvalidTaskData = "$InvalidTaskData", Host, false;
    /// A builtin task's params are not what it expects. Permanent.
    InvalidParams = "$InvalidParams", Host, false;
    /// No handler for the task's name here, with `--fail-unknown`. Permanent.
    UnknownTask = "$UnknownTask", Host, false;
    /// A stored checkpoint cannot be read back. Permanent.
    BadCheckpoint = "$BadCheckpoint", Host, false;
    /// The database refused a task the run spawned (the queue does not exist, ...). Permanent.
    SpawnError = "$SpawnError", Host, false;
    /// The host failed while serving the run (the database went away, ...). Retried.
    HostError = "$HostError", Host, true;
    /// Host code panicked while serving the run; the worker carries on. Retried.
    HostPanic = "$HostPanic", Host, true;
}

impl fmt::Display for FailureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureName {
    type Err = UnknownFailureName;

    /// Only the host's own names parse; a guest's name is `Err`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureName::ALL
            .iter()
            .copied()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| UnknownFailureName(s.to_string()))
    }
}

/// A failure name that is not one of the host's (a guest's own, or a typo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFailureName(pub String);

impl fmt::Display for UnknownFailureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a failure name of the host", self.0)
    }
}

impl std::error::Error for UnknownFailureName {}

impl From<FailureName> for String {
    fn from(n: FailureName) -> String {
        n.as_str().to_string()
    }
}

impl PartialEq<FailureName> for str {
    fn eq(&self, other: &FailureName) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<FailureName> for String {
    fn eq(&self, other: &FailureName) -> bool {
        self == other.as_str()
    }
}

impl Serialize for FailureName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `docs/failure-names.md`, from this enum (a test keeps the file equal to it).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Failure names\n\n\
         The `$`-prefixed names absurd-host writes into `failure_reason.name`. Names without a \
         `$` are the task's own. Generated from `client/src/vocab.rs` \
         (`FailureName`); a test keeps this file equal to it.\n\n\
         | name | counted as | retried | meaning |\n|---|---|---|---|\n",
    );
    for n in FailureName::ALL {
        let category = match n.category() {
            FailureCategory::Sandbox => "sandbox failure",
            FailureCategory::Subprocess => "subprocess failure",
            FailureCategory::Timeout => "timeout",
            FailureCategory::Host => "host",
        };
        let retried = if n.retryable() { "yes" } else { "no" };
        out.push_str(&format!(
            "| `{n}` | {category} | {retried} | {} |\n",
            n.description()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_list_is_the_enum() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/failure-names.md");
        let expected = markdown();
        if std::env::var_os("ABSURD_WRITE_DOCS").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            doc == expected,
            "{path} is out of date; rerun this test with ABSURD_WRITE_DOCS=1"
        );
    }

    #[test]
    fn names_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for &n in FailureName::ALL {
            assert!(n.as_str().starts_with('$'), "{n}");
            assert!(seen.insert(n.as_str()), "{n} listed twice");
            assert_eq!(n.as_str().parse::<FailureName>(), Ok(n));
            assert_eq!(n.to_string(), n.as_str());
            assert!(!n.description().is_empty(), "{n} has no description");
            let says = if n.retryable() {
                "Retried"
            } else {
                "Permanent"
            };
            assert!(
                n.description().contains(says),
                "{n}: the description must say {says:?}: {}",
                n.description()
            );
        }
        assert!("ValidationError".parse::<FailureName>().is_err());
        assert!(
            "$timeout".parse::<FailureName>().is_err(),
            "names are exact"
        );
    }

    #[test]
    fn every_category_but_host_is_counted_on_the_dashboard() {
        for c in FailureCategory::ALL {
            assert!(c.names().next().is_some(), "{c:?} has no names");
        }
        assert_eq!(
            FailureCategory::Timeout.names().collect::<Vec<_>>(),
            [FailureName::Timeout]
        );
    }
}
