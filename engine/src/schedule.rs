//! Schedules: cron ticks that spawn tasks, each exactly once across any number of workers.
//!
//! Not on a task's data path: a small loop beside the worker. A schedule names a five-field
//! cron expression (or `@hourly`, `@daily`, ...), an IANA time zone whose local time the cron
//! fields are in, a task name, a queue, params, and a catch-up policy for the ticks it missed
//! (no worker was running, or it was disabled):
//!
//! * `skip` (the default): a tick is spawned only on time, at most [`SKIP_GRACE`] after it
//!   was due; missed ones are dropped;
//! * `one`: the latest missed tick is spawned, once, and the earlier ones dropped;
//! * `all`: every missed tick is spawned, oldest first, at most [`MAX_CATCH_UP_TICKS`] per
//!   schedule per pass (the rest in the next passes, which then come at once).
//!
//! Definitions live in `absurd.schedules` (migration 0017): `[[schedules]]` of a worker's
//! `absurd-host.toml` ([`install_config`], at start) and those made through the API. Every
//! worker runs [`run`]: each pass reads the database clock (`absurd.current_time()`, so
//! `absurd.fake_now` moves schedules too) and the schedules, plans each one's due ticks
//! ([`Schedule::plan`]), and fires them with [`absurd_client::Client::fire_schedule`], a
//! compare-and-set on the schedule's row with an idempotency key per tick: when two workers
//! plan the same tick, one spawns it and the other finds the row moved on.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use absurd_client::schedules::{ConfigUpsert, ScheduleDefinition, ScheduleRow, TickSpawn};
use absurd_client::{Client, ClientError, RetryStrategy, SpawnOptions};
use chrono::{DateTime, SecondsFormat, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The most schedules a database holds (the API refuses more, and a pass reads no more).
pub const MAX_SCHEDULES: i64 = 1000;
/// With `catch_up = "all"`, the most missed ticks of one schedule spawned in one pass.
pub const MAX_CATCH_UP_TICKS: usize = 100;
/// With `catch_up = "skip"`, how late a tick may still be spawned.
pub const SKIP_GRACE: Duration = Duration::from_secs(60);
/// The longest schedule name (names are `[A-Za-z0-9][A-Za-z0-9._-]*`).
pub const MAX_NAME_BYTES: usize = 128;
/// The longest cron expression, task name and time zone name.
pub const MAX_TEXT_BYTES: usize = 255;
/// The largest `params` of a schedule, serialised (as the API's spawn default).
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;

/// What a scheduler does with the ticks it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CatchUp {
    #[default]
    Skip,
    One,
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::One => "one",
            CatchUp::All => "all",
        }
    }
}

impl FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<CatchUp, String> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "one" => Ok(CatchUp::One),
            "all" => Ok(CatchUp::All),
            other => Err(format!(
                "catch_up {other:?} is not a catch-up policy (use \"skip\", \"one\" or \"all\")"
            )),
        }
    }
}

/// A rejected schedule field: which one, and why (quoting the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    /// `name`, `cron`, `timezone`, `task_name`, `queue_name`, `params` or `catch_up`.
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field,
        message: message.into(),
    }
}

/// One `[[schedules]]` entry of `absurd-host.toml`.
///
/// ```toml
/// [[schedules]]
/// name = "housekeeping-hourly"
/// cron = "0 * * * *"            # minute hour day-of-month month day-of-week, or @hourly
/// timezone = "UTC"              # default UTC
/// task_name = "housekeeping"
/// queue_name = "dsa110-pipeline"   # default ABSURD_QUEUE_NAME
/// catch_up = "skip"             # skip | one | all (default skip)
/// enabled = true                # default true
/// params = { inputs = { max_stale_hours = 4 } }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    pub cron: String,
    #[serde(default)]
    pub timezone: Option<String>,
    pub task_name: String,
    #[serde(default)]
    pub queue_name: Option<String>,
    #[serde(default)]
    pub params: Option<toml::Table>,
    #[serde(default)]
    pub catch_up: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A checked schedule definition.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron_text: String,
    cron: Cron,
    pub timezone: chrono_tz::Tz,
    pub task_name: String,
    pub queue_name: String,
    /// A JSON object.
    pub params: Value,
    pub catch_up: CatchUp,
    pub enabled: bool,
}

/// The names every `timezone` may take (IANA's, as `chrono-tz` knows them).
pub fn timezone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

/// Checks a schedule name: 1 to [`MAX_NAME_BYTES`] bytes of `[A-Za-z0-9._-]`, starting with a
/// letter or digit (it appears in URLs and idempotency keys).
pub fn check_name(name: &str) -> Result<(), ScheduleError> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok_start || !ok_chars || name.len() > MAX_NAME_BYTES {
        return Err(bad(
            "name",
            format!(
                "schedule name {name:?} is not 1 to {MAX_NAME_BYTES} letters, digits, '.', '_' or '-' starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// One field of a cron expression: its name, its values, and the pattern of one number.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    number: &'static str,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        number: "[0-5]?[0-9]",
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        number: "(?:[01]?[0-9]|2[0-3])",
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        number: "(?:0?[1-9]|[12][0-9]|3[01])",
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        number: "(?:0?[1-9]|1[0-2])",
    },
    // 0 and 7 are Sunday.
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        number: "[0-7]",
    },
];

/// The nicknames, with what they stand for.
const NICKNAMES: [(&str, &str); 7] = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

/// A step: 1 to 99.
const STEP: &str = "[1-9][0-9]?";

/// The regular expression of every cron expression [`parse_cron`] accepts (the API's OpenAPI
/// document gives it as the `cron` field's pattern).
pub fn cron_pattern() -> String {
    let fields: Vec<String> = FIELDS
        .iter()
        .map(|f| {
            let n = f.number;
            let item = format!("(?:\\*(?:/{STEP})?|{n}(?:-{n}(?:/{STEP})?)?)");
            format!("{item}(?:,{item})*")
        })
        .collect();
    let nicknames: Vec<&str> = NICKNAMES.iter().map(|(n, _)| &n[1..]).collect();
    format!("^(?:{}|@(?:{}))$", fields.join(" +"), nicknames.join("|"))
}

/// One number of a field: 1 or 2 digits (1 for the day of the week), within its values.
fn number(f: &Field, text: &str) -> Option<u32> {
    let digits = if f.max < 10 { 1 } else { 2 };
    if text.is_empty() || text.len() > digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| (f.min..=f.max).contains(n))
}

/// The values of one field, or `None` for a field that is exactly `*` (unrestricted, which
/// matters for the day fields: as in Vixie cron, a day matches when either restricted day
/// field does).
fn field_values(f: &Field, text: &str) -> Result<Option<Vec<u32>>, String> {
    if text == "*" {
        return Ok(None);
    }
    // Sunday is 0 and 7; the cycle of the week is 0..=6.
    let (min, max) = if f.max == 7 { (0, 6) } else { (f.min, f.max) };
    let norm = |n: u32| if f.max == 7 && n == 7 { 0 } else { n };
    let mut out = Vec::new();
    for item in text.split(',') {
        let bad_item = || {
            format!("{} field item {item:?} is not *, */S, N, N-M or N-M/S with N and M in {}-{} and S in 1-99", f.name, f.min, f.max)
        };
        let (base, step) = match item.split_once('/') {
            Some((b, st)) => {
                let ok = !st.is_empty()
                    && st.len() <= 2
                    && !st.starts_with('0')
                    && st.bytes().all(|c| c.is_ascii_digit());
                if !ok {
                    return Err(bad_item());
                }
                (b, Some(st.parse::<u32>().map_err(|_| bad_item())?))
            }
            None => (item, None),
        };
        // The values in order, from the start of the range (a range may wrap: 22-2 is
        // 22, 23, 0, 1, 2).
        let seq: Vec<u32> = if base == "*" {
            (min..=max).collect()
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = match (number(f, a), number(f, b)) {
                (Some(a), Some(b)) => (norm(a), norm(b)),
                _ => return Err(bad_item()),
            };
            if a <= b {
                (a..=b).collect()
            } else {
                (a..=max).chain(min..=b).collect()
            }
        } else {
            if step.is_some() {
                return Err(bad_item());
            }
            vec![norm(number(f, base).ok_or_else(bad_item)?)]
        };
        let step = step.unwrap_or(1) as usize;
        out.extend(seq.into_iter().step_by(step));
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

/// Parses a cron expression: five fields separated by spaces, minute (0-59) hour (0-23)
/// day-of-month (1-31) month (1-12) day-of-week (0-7, 0 and 7 being Sunday), each a comma list
/// of `*`, `*/S`, `N`, `N-M` or `N-M/S` (a range may wrap, as `22-2`; S from 1 to 99), or one of
/// `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`. A day
/// matches when either day field does unless one of them is `*` (as in Vixie cron). Exactly
/// what [`cron_pattern`] matches, surrounding spaces aside; croner evaluates it.
pub fn parse_cron(text: &str) -> Result<Cron, ScheduleError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(bad(
            "cron",
            format!(
                "cron is {} bytes long; the limit is {MAX_TEXT_BYTES}",
                text.len()
            ),
        ));
    }
    let refuse = |why: String| {
        bad(
            "cron",
            format!(
                "cron {text:?} is not a cron expression: {why}. Use five fields, minute hour day-of-month month day-of-week, e.g. \"0 * * * *\", or @hourly, @daily, @weekly, @monthly, @yearly"
            ),
        )
    };
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let expanded = match NICKNAMES.iter().find(|(n, _)| *n == trimmed) {
        Some((_, e)) => *e,
        None if trimmed.starts_with('@') => {
            return Err(refuse(format!("unknown nickname {trimmed:?}")))
        }
        None => trimmed,
    };
    if expanded.contains(|c: char| c.is_whitespace() && c != ' ') {
        return Err(refuse("fields are separated by spaces".into()));
    }
    let parts: Vec<&str> = expanded.split(' ').filter(|p| !p.is_empty()).collect();
    if parts.len() != 5 {
        return Err(refuse(format!("{} fields, not 5", parts.len())));
    }
    let mut canonical = Vec::with_capacity(5);
    for (f, part) in FIELDS.iter().zip(&parts) {
        canonical.push(match field_values(f, part).map_err(refuse)? {
            None => "*".to_string(),
            Some(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        });
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    parser
        .parse(&canonical.join(" "))
        .map_err(|e| refuse(e.to_string()))
}

/// Whether a parsed cron expression never fires (`0 0 31 2 *`: no February 31st).
pub fn never_fires(cron: &Cron) -> bool {
    let from = DateTime::<Utc>::from_timestamp(0, 0).expect("the epoch");
    cron.find_next_occurrence(&from, false).is_err()
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`, `America/Los_Angeles`).
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        bad(
            "timezone",
            format!(
                "timezone {:?} is not an IANA time zone name (e.g. \"UTC\" or \"America/Los_Angeles\")",
                truncate(name, 64)
            ),
        )
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl Schedule {
    /// Checks every field of a definition, naming the field and the value it refuses.
    pub fn new(def: &ScheduleDefinition) -> Result<Schedule, ScheduleError> {
        check_name(&def.schedule_name)?;
        let cron = parse_cron(&def.cron)?;
        let timezone = parse_timezone(&def.timezone)?;
        if def.task_name.trim().is_empty() || def.task_name.len() > MAX_TEXT_BYTES {
            return Err(bad(
                "task_name",
                format!(
                    "task_name must be 1 to {MAX_TEXT_BYTES} bytes and not blank, got {:?}",
                    truncate(&def.task_name, 64)
                ),
            ));
        }
        if def.queue_name.is_empty() || def.queue_name.len() > 57 {
            return Err(bad(
                "queue_name",
                format!(
                    "queue_name must be 1 to 57 bytes, got {:?}",
                    truncate(&def.queue_name, 64)
                ),
            ));
        }
        if !def.params.is_object() {
            return Err(bad("params", "params must be a JSON object"));
        }
        let size = def.params.to_string().len();
        if size > MAX_PARAMS_BYTES {
            return Err(bad(
                "params",
                format!("params is {size} bytes of JSON; the limit is {MAX_PARAMS_BYTES} bytes"),
            ));
        }
        let catch_up = def.catch_up.parse().map_err(|m| bad("catch_up", m))?;
        Ok(Schedule {
            name: def.schedule_name.clone(),
            cron_text: def
                .cron
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .to_string(),
            cron,
            timezone,
            task_name: def.task_name.clone(),
            queue_name: def.queue_name.clone(),
            params: def.params.clone(),
            catch_up,
            enabled: def.enabled,
        })
    }

    /// True when no date matches the cron expression (a schedule that never fires is kept,
    /// and reported: the API answers a warning, the worker logs one).
    pub fn never_fires(&self) -> bool {
        never_fires(&self.cron)
    }

    /// The stored schedule's definition, checked.
    pub fn from_row(row: &ScheduleRow) -> Result<Schedule, ScheduleError> {
        Schedule::new(&definition_of(row))
    }

    pub fn definition(&self) -> ScheduleDefinition {
        ScheduleDefinition {
            schedule_name: self.name.clone(),
            cron: self.cron_text.clone(),
            timezone: self.timezone.name().to_string(),
            task_name: self.task_name.clone(),
            queue_name: self.queue_name.clone(),
            params: self.params.clone(),
            catch_up: self.catch_up.as_str().to_string(),
            enabled: self.enabled,
        }
    }

    /// The first tick strictly after `t`; `None` past the cron library's search horizon.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.timezone), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.timezone), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// What to do at `now` for a schedule whose ticks up to `last_tick` are handled: which
    /// ticks to spawn and where `last_tick` moves. Nothing when no tick is due.
    pub fn plan(&self, last_tick: DateTime<Utc>, now: DateTime<Utc>, max_ticks: usize) -> Plan {
        let mut plan = Plan::default();
        let Some(first_due) = self.next_after(last_tick).filter(|t| *t <= now) else {
            return plan;
        };
        match self.catch_up {
            CatchUp::Skip | CatchUp::One => {
                let latest = self
                    .latest_at_or_before(now)
                    .filter(|t| *t >= first_due)
                    .unwrap_or(first_due);
                plan.new_last_tick = Some(latest);
                plan.missed_before = (first_due < latest).then_some(first_due);
                let on_time = now - latest
                    <= chrono::Duration::from_std(SKIP_GRACE).expect("a small duration");
                if self.catch_up == CatchUp::One || on_time {
                    plan.spawn.push(latest);
                } else {
                    plan.missed_before = Some(first_due);
                    plan.skipped_latest = Some(latest);
                }
            }
            CatchUp::All => {
                let mut t = first_due;
                loop {
                    plan.spawn.push(t);
                    plan.new_last_tick = Some(t);
                    match self.next_after(t) {
                        Some(n) if n <= now => {
                            if plan.spawn.len() >= max_ticks.max(1) {
                                plan.more = true;
                                break;
                            }
                            t = n;
                        }
                        _ => break,
                    }
                }
            }
        }
        plan
    }
}

/// The definition stored in a row.
pub fn definition_of(row: &ScheduleRow) -> ScheduleDefinition {
    ScheduleDefinition {
        schedule_name: row.schedule_name.clone(),
        cron: row.cron.clone(),
        timezone: row.timezone.clone(),
        task_name: row.task_name.clone(),
        queue_name: row.queue_name.clone(),
        params: row.params.clone(),
        catch_up: row.catch_up.clone(),
        enabled: row.enabled,
    }
}

/// What one pass does for one schedule ([`Schedule::plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The ticks to spawn, oldest first.
    pub spawn: Vec<DateTime<Utc>>,
    /// Where `last_tick` moves; `None`: nothing is due.
    pub new_last_tick: Option<DateTime<Utc>>,
    /// The first of the ticks dropped by the catch-up policy, if any.
    pub missed_before: Option<DateTime<Utc>>,
    /// `skip`: the latest due tick, dropped because it is later than [`SKIP_GRACE`].
    pub skipped_latest: Option<DateTime<Utc>>,
    /// `all`: more ticks are due than [`MAX_CATCH_UP_TICKS`]; the next pass goes on.
    pub more: bool,
}

/// Checks the `[[schedules]]` of a configuration file; a schedule without `queue_name` goes
/// to `default_queue`. Errors name the entry, the field and the value.
pub fn from_config(
    entries: &[ScheduleConfig],
    default_queue: &str,
) -> Result<Vec<Schedule>, String> {
    if entries.len() as i64 > MAX_SCHEDULES {
        return Err(format!(
            "[[schedules]]: {} schedules; the limit is {MAX_SCHEDULES}",
            entries.len()
        ));
    }
    let mut out: Vec<Schedule> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = format!("[[schedules]] #{} (name = {:?})", i + 1, e.name);
        let params = match &e.params {
            None => json!({}),
            Some(t) => serde_json::to_value(t).map_err(|err| format!("{at}: params: {err}"))?,
        };
        let def = ScheduleDefinition {
            schedule_name: e.name.clone(),
            cron: e.cron.clone(),
            timezone: e.timezone.clone().unwrap_or_else(|| "UTC".into()),
            task_name: e.task_name.clone(),
            queue_name: e
                .queue_name
                .clone()
                .unwrap_or_else(|| default_queue.to_string()),
            params,
            catch_up: e.catch_up.clone().unwrap_or_else(|| "skip".into()),
            enabled: e.enabled.unwrap_or(true),
        };
        let s = Schedule::new(&def).map_err(|err| format!("{at}: {err}"))?;
        if out.iter().any(|o| o.name == s.name) {
            return Err(format!(
                "{at}: a schedule named {:?} is already defined",
                s.name
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// Stores the configuration file's schedules (at worker start). The file wins over a
/// same-named schedule made through the API (logged); a stored schedule keeps its `last_tick`,
/// so restarting workers never fire a tick twice.
pub async fn install_config(client: &Client, schedules: &[Schedule]) -> Result<(), ClientError> {
    for s in schedules {
        if s.never_fires() {
            tracing::warn!(schedule = %s.name, cron = %s.cron_text, "this cron expression never fires: no date matches it");
        }
        match client
            .upsert_config_schedule(&s.definition(), MAX_SCHEDULES)
            .await?
        {
            Some(ConfigUpsert::Created) => {
                tracing::info!(schedule = %s.name, cron = %s.cron_text, timezone = %s.timezone.name(), task_name = %s.task_name, queue = %s.queue_name, catch_up = s.catch_up.as_str(), "schedule created from the configuration file")
            }
            Some(ConfigUpsert::Updated) => {
                tracing::info!(schedule = %s.name, "schedule updated from the configuration file")
            }
            Some(ConfigUpsert::TookOverApi) => tracing::warn!(
                schedule = %s.name,
                "a schedule of this name was made through the API; the configuration file's definition replaces it"
            ),
            Some(ConfigUpsert::Unchanged) => {}
            None => {
                return Err(ClientError::InvalidInput(format!(
                "schedule {:?}: the database already holds {MAX_SCHEDULES} schedules (the limit)",
                s.name
            )))
            }
        }
    }
    Ok(())
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// How often a pass runs.
    pub interval: Duration,
    /// `max_attempts` of the tasks it spawns.
    pub max_attempts: i32,
    /// Their retry strategy.
    pub retry_strategy: RetryStrategy,
    /// [`MAX_CATCH_UP_TICKS`] unless a test lowers it.
    pub max_catch_up_ticks: usize,
}

impl SchedulerSettings {
    pub fn new(interval: Duration, max_attempts: i32) -> SchedulerSettings {
        SchedulerSettings {
            interval,
            max_attempts,
            retry_strategy: crate::worker::default_retry_strategy(),
            max_catch_up_ticks: MAX_CATCH_UP_TICKS,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// `(schedule, tick, task_id, created)` of every tick fired by this pass.
    pub fired: Vec<(String, DateTime<Utc>, uuid::Uuid, bool)>,
    /// Schedules another scheduler (or an edit) moved on first.
    pub lost_races: usize,
    /// Some schedule has more missed ticks than one pass spawns.
    pub more: bool,
}

/// The scheduler's memory between passes: the last problem logged per schedule, so that a
/// broken schedule is reported when its problem changes, not at every pass.
#[derive(Debug, Default)]
pub struct Scheduler {
    problems: HashMap<String, String>,
}

impl Scheduler {
    fn problem(&mut self, schedule: &str, text: String) {
        if self.problems.get(schedule) != Some(&text) {
            tracing::warn!(schedule = %schedule, "{text}");
            if self.problems.len() < MAX_SCHEDULES as usize || self.problems.contains_key(schedule)
            {
                self.problems.insert(schedule.to_string(), text);
            }
        }
    }

    fn solved(&mut self, schedule: &str) {
        if self.problems.remove(schedule).is_some() {
            tracing::info!(schedule = %schedule, "schedule fires again");
        }
    }

    /// One pass over every enabled schedule, at the database's current time.
    pub async fn pass(
        &mut self,
        client: &Client,
        settings: &SchedulerSettings,
    ) -> Result<PassReport, ClientError> {
        let now = client.database_time().await?;
        let rows = client.list_schedules(MAX_SCHEDULES).await?;
        let mut report = PassReport::default();
        for row in rows.iter().filter(|r| r.enabled) {
            let schedule = match Schedule::from_row(row) {
                Ok(s) => s,
                Err(e) => {
                    self.problem(&row.schedule_name, format!("schedule not fired: {e}"));
                    continue;
                }
            };
            let plan = schedule.plan(row.last_tick, now, settings.max_catch_up_ticks);
            let Some(new_last) = plan.new_last_tick else {
                continue;
            };
            let ticks: Vec<TickSpawn> = plan
                .spawn
                .iter()
                .map(|&tick| TickSpawn {
                    tick,
                    options: SpawnOptions {
                        headers: Some(json!({
                            "schedule": schedule.name,
                            "scheduled_for": rfc3339(tick),
                        })),
                        retry_strategy: Some(settings.retry_strategy.clone()),
                        max_attempts: Some(settings.max_attempts),
                        ..Default::default()
                    },
                })
                .collect();
            match client
                .fire_schedule(&row.schedule_name, row.last_tick, row.revision, &ticks, new_last)
                .await
            {
                Ok(Some(fired)) => {
                    self.solved(&row.schedule_name);
                    if let Some(first) = plan.missed_before {
                        let until = plan.skipped_latest.or(plan.spawn.first().copied());
                        tracing::info!(
                            schedule = %schedule.name,
                            catch_up = schedule.catch_up.as_str(),
                            from = %rfc3339(first),
                            until = %until.map(rfc3339).unwrap_or_default(),
                            "missed ticks skipped by the catch-up policy"
                        );
                    }
                    for f in &fired {
                        tracing::info!(
                            schedule = %schedule.name,
                            tick = %rfc3339(f.tick),
                            task_name = %schedule.task_name,
                            queue = %schedule.queue_name,
                            task_id = %f.spawned.task_id,
                            created = f.spawned.created,
                            "schedule tick spawned"
                        );
                        report.fired.push((
                            schedule.name.clone(),
                            f.tick,
                            f.spawned.task_id,
                            f.spawned.created,
                        ));
                    }
                    if plan.more {
                        report.more = true;
                        tracing::info!(
                            schedule = %schedule.name,
                            limit = settings.max_catch_up_ticks,
                            "catch_up = \"all\": more missed ticks than MAX_CATCH_UP_TICKS per pass; the next pass spawns the next ones"
                        );
                    }
                }
                Ok(None) => report.lost_races += 1,
                Err(ClientError::QueueNotFound(q)) => self.problem(
                    &row.schedule_name,
                    format!("schedule not fired: its queue {q:?} does not exist (create it with `absurd-host queue create {q}`)"),
                ),
                Err(e @ ClientError::Unavailable(_)) => return Err(e),
                Err(e) => self.problem(&row.schedule_name, format!("schedule not fired: {e}")),
            }
        }
        Ok(report)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The scheduler loop: a pass every `settings.interval` (at once again while a schedule with
/// `catch_up = "all"` has more missed ticks) until `shutdown`. A database error is logged
/// (once until it changes) and the next pass tries again.
pub async fn run(client: Client, settings: SchedulerSettings, shutdown: CancellationToken) {
    let mut scheduler = Scheduler::default();
    let mut last_error: Option<String> = None;
    tracing::info!(
        interval_ms = settings.interval.as_millis() as u64,
        max_catch_up_ticks = settings.max_catch_up_ticks,
        "scheduler started"
    );
    while !shutdown.is_cancelled() {
        let mut wait = settings.interval;
        match scheduler.pass(&client, &settings).await {
            Ok(report) => {
                if last_error.take().is_some() {
                    tracing::info!("scheduler: the database answers again");
                }
                if report.more {
                    wait = Duration::ZERO;
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "scheduler pass failed; retrying");
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("scheduler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn def(cron: &str, tz: &str, catch_up: &str) -> ScheduleDefinition {
        ScheduleDefinition {
            schedule_name: "s".into(),
            cron: cron.into(),
            timezone: tz.into(),
            task_name: "t".into(),
            queue_name: "q".into(),
            params: json!({}),
            catch_up: catch_up.into(),
            enabled: true,
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, h, m, 0).unwrap()
    }

    #[test]
    fn bad_values_are_named() {
        let e = Schedule::new(&def("every hour", "UTC", "skip")).unwrap_err();
        assert_eq!(e.field, "cron");
        assert!(e.message.contains("\"every hour\""), "{e}");
        let e = Schedule::new(&def("0 * * * * *", "UTC", "skip")).unwrap_err();
        assert_eq!(e.field, "cron", "six fields (seconds) are refused");
        let e = Schedule::new(&def("61 * * * *", "UTC", "skip")).unwrap_err();
        assert!(e.message.contains("61"), "{e}");
        // Valid, but no date matches: kept (and reported), never planned.
        let never = Schedule::new(&def("0 0 31 2 *", "UTC", "all")).unwrap();
        assert!(never.never_fires());
        assert_eq!(never.plan(at(0, 0), at(23, 0), 100), Plan::default());
        let e = Schedule::new(&def("5/10 * * * *", "UTC", "skip")).unwrap_err();
        assert!(e.message.contains("\"5/10\""), "{e}");
        let e = Schedule::new(&def("0 0 * * 07", "UTC", "skip")).unwrap_err();
        assert!(e.message.contains("day-of-week"), "{e}");
        let e = Schedule::new(&def("@fortnightly", "UTC", "skip")).unwrap_err();
        assert!(e.message.contains("@fortnightly"), "{e}");
        let e = Schedule::new(&def("0 * * * *", "Mars/Olympus", "skip")).unwrap_err();
        assert_eq!(e.field, "timezone");
        assert!(e.message.contains("\"Mars/Olympus\""), "{e}");
        let e = Schedule::new(&def("0 * * * *", "UTC", "some")).unwrap_err();
        assert_eq!(e.field, "catch_up");
        assert!(e.message.contains("\"some\""), "{e}");
        let mut d = def("0 * * * *", "UTC", "skip");
        d.schedule_name = "has space".into();
        assert_eq!(Schedule::new(&d).unwrap_err().field, "name");
        assert!(Schedule::new(&def("@hourly", "Europe/Berlin", "all")).is_ok());
    }

    #[test]
    fn ranges_wrap_and_steps_count_from_the_start() {
        let s = Schedule::new(&def("0 22-2/2 * * *", "UTC", "all")).unwrap();
        // 22, 0, 2.
        let ticks = s.plan(at(0, 30), at(23, 59), 100).spawn;
        assert_eq!(ticks, vec![at(2, 0), at(22, 0)]);
        // Sunday is 0 and 7; 2030-01-06 is a Sunday.
        let sun = Schedule::new(&def("0 12 * * 7", "UTC", "skip")).unwrap();
        assert_eq!(
            sun.next_after(at(0, 0)),
            Some(Utc.with_ymd_and_hms(2030, 1, 6, 12, 0, 0).unwrap())
        );
        assert_eq!(
            Schedule::new(&def(" @daily ", "UTC", "skip"))
                .unwrap()
                .cron_text,
            "@daily"
        );
    }

    #[test]
    fn ticks_follow_the_time_zone() {
        // 09:00 in Los Angeles is 17:00 UTC in January (PST, UTC-8).
        let s = Schedule::new(&def("0 9 * * *", "America/Los_Angeles", "skip")).unwrap();
        assert_eq!(s.next_after(at(0, 0)), Some(at(17, 0)));
    }

    #[test]
    fn catch_up_policies_plan_missed_ticks() {
        // Hourly; last handled 00:00; now 03:30: 01:00, 02:00 and 03:00 were missed.
        let plan = |c: &str| Schedule::new(&def("0 * * * *", "UTC", c)).unwrap();
        let skip = plan("skip").plan(at(0, 0), at(3, 30), 100);
        assert!(skip.spawn.is_empty());
        assert_eq!(skip.new_last_tick, Some(at(3, 0)));
        assert_eq!(skip.missed_before, Some(at(1, 0)));
        // On time (within SKIP_GRACE): spawned.
        let skip = plan("skip").plan(at(0, 0), at(1, 0) + chrono::Duration::seconds(30), 100);
        assert_eq!(skip.spawn, vec![at(1, 0)]);
        let one = plan("one").plan(at(0, 0), at(3, 30), 100);
        assert_eq!(one.spawn, vec![at(3, 0)]);
        assert_eq!(one.new_last_tick, Some(at(3, 0)));
        let all = plan("all").plan(at(0, 0), at(3, 30), 100);
        assert_eq!(all.spawn, vec![at(1, 0), at(2, 0), at(3, 0)]);
        assert!(!all.more);
        let bounded = plan("all").plan(at(0, 0), at(3, 30), 2);
        assert_eq!(bounded.spawn, vec![at(1, 0), at(2, 0)]);
        assert_eq!(bounded.new_last_tick, Some(at(2, 0)));
        assert!(bounded.more);
        // Nothing due.
        let none = plan("all").plan(at(3, 0), at(3, 30), 100);
        assert_eq!(none, Plan::default());
        // A tick exactly at `now` is due.
        assert_eq!(
            plan("skip").plan(at(0, 0), at(1, 0), 100).spawn,
            vec![at(1, 0)]
        );
    }

    #[test]
    fn config_entries_are_checked_with_their_position() {
        let file: toml::Table = toml::from_str(
            "[[schedules]]\nname = \"a\"\ncron = \"@hourly\"\ntask_name = \"t\"\n\
             [[schedules]]\nname = \"b\"\ncron = \"0 * * *\"\ntask_name = \"t\"\n",
        )
        .unwrap();
        let entries: Vec<ScheduleConfig> =
            file["schedules"].clone().try_into().expect("entries parse");
        let e = from_config(&entries, "q").unwrap_err();
        assert!(
            e.contains("#2") && e.contains("\"b\"") && e.contains("\"0 * * *\""),
            "{e}"
        );
        let ok = from_config(&entries[..1], "q").unwrap();
        assert_eq!(ok[0].queue_name, "q");
        assert_eq!(ok[0].timezone.name(), "UTC");
        assert_eq!(ok[0].catch_up, CatchUp::Skip);
    }
}
