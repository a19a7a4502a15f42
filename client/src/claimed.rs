//! What a claim hands over, read one run at a time and within limits.
//!
//! Any Absurd client (or plain SQL) can write a task row that absurd-host cannot use: JSON
//! nested deeper than serde_json reads (128 levels; Postgres accepts far deeper), or checkpoints
//! and event payloads of up to Postgres' 256 MiB per value. Such a row must cost only its own
//! run. So:
//!
//! * a claim decodes each row's JSON columns on its own; a column that does not decode gives
//!   that run a *defect* ([`Claimed::defect`]) instead of failing the batch, and the worker fails
//!   just that run, permanently, as `$InvalidTaskData` naming the column;
//! * checkpoints and event payloads are measured in SQL before they are sent, and a value over
//!   its [`ReadLimits`] fails its run permanently as `$LimitExceeded` naming the limit. The fast
//!   claim leaves a large task's checkpoints out (migration 0010), and the worker then reads
//!   them here, one value at a time.

use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::client::{sql_limit, table, Client};
use crate::error::ClientError;
use crate::failure::Failure;
use crate::protocol::CompletedStates;
use crate::types::ClaimedRun;
use crate::vocab::FailureName;

const MIB: u64 = 1024 * 1024;

/// Bounds on what the host reads back from the database for one run: checkpoints and event
/// payloads that any Absurd client may have written, however large (see the module docs).
/// The defaults are those of the engine's run limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// One checkpoint value, as JSON text.
    pub max_checkpoint_bytes: u64,
    /// All checkpoints a run loads, as JSON text.
    pub max_checkpoint_total_bytes: u64,
    /// An event payload received (with a claim, or from `await_event`), as JSON text.
    pub max_event_payload_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_checkpoint_bytes: 16 * MIB,
            max_checkpoint_total_bytes: 64 * MIB,
            max_event_payload_bytes: MIB,
        }
    }
}

impl ReadLimits {
    /// No limits (every size fits in `i64`, as Postgres compares them): for the client API,
    /// whose callers read what they asked for.
    pub fn unbounded() -> Self {
        ReadLimits {
            max_checkpoint_bytes: i64::MAX as u64,
            max_checkpoint_total_bytes: i64::MAX as u64,
            max_event_payload_bytes: i64::MAX as u64,
        }
    }
}

/// The checkpoints a run may replay, as read for it, with what they weigh: their size as
/// JSON text, which counts against the run's `max_checkpoint_total_bytes`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedCheckpoints {
    /// `(checkpoint name, value)`, oldest first.
    pub values: Vec<(String, Value)>,
    /// The values' total size as JSON text.
    pub bytes: u64,
}

/// A claimed run, with what the claim could tell about its data.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run: ClaimedRun,
    /// `Some` when the claim returned them (the fast path, for small checkpoints); `None`
    /// means "read them" ([`read_checkpoints`]).
    pub checkpoints: Option<Vec<(String, Value)>>,
    /// The run has an event payload the claim did not send (too large to measure cheaply
    /// there): read it with [`read_event_payload`].
    pub payload_deferred: bool,
    /// Why this run cannot be executed: it is failed, alone and permanently, with this.
    pub defect: Option<Failure>,
}

/// The text of a decode error: serde_json's reason without sqlx's wrapping, and the limit
/// spelled out when it is the nesting depth.
fn decode_reason(e: &sqlx::Error) -> String {
    let reason = match e {
        sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    if reason.contains("recursion limit exceeded") {
        format!("{reason} (JSON nested deeper than 128 levels)")
    } else {
        reason
    }
}

/// `$InvalidTaskData`: the stored value `what` cannot be read.
pub fn invalid_data(what: &str, e: &sqlx::Error) -> Failure {
    Failure::new(
        FailureName::InvalidTaskData,
        format!("{what}: {}", decode_reason(e)),
    )
    .with_details(json!({"column": what}))
    .permanent()
}

/// `$LimitExceeded`, in the form every limit uses.
pub fn limit_exceeded(what: &str, actual: u64, key: &str, limit: u64) -> Failure {
    Failure::new(
        FailureName::LimitExceeded,
        format!("{what} is {actual} bytes; the limit is {limit} ({key})"),
    )
    .with_details(json!({"limit": key, "value": limit, "actual": actual}))
    .permanent()
}

/// A checkpoint name for messages (names can be kilobytes long).
fn show_name(name: &str) -> String {
    const MAX: usize = 100;
    if name.len() <= MAX {
        return format!("checkpoint {name:?}");
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("checkpoint {:?}... ({} bytes)", &name[..end], name.len())
}

/// Reads a JSON column of one row; a value that does not decode is reported, not propagated.
fn json_col(row: &PgRow, col: &str, defect: &mut Option<Failure>) -> Option<Value> {
    match row.try_get::<Option<Value>, _>(col) {
        Ok(v) => v,
        Err(e) => {
            defect.get_or_insert_with(|| invalid_data(col, &e));
            None
        }
    }
}

/// The SQL that claims through `source` (a set-returning call whose columns are those of
/// `claim_task`, with parameter `limit_param` the payload limit), measuring each event payload before sending it:
/// exactly when it is stored uncompressed and its stored size is within the limit (then its
/// text is small too), otherwise not at all in the claim (the worker reads it afterwards).
pub(crate) fn claim_sql(source: &str, extra_cols: &str, limit_param: usize) -> String {
    let limit = format!("${limit_param}::int8");
    format!(
        "select f.run_id, f.task_id, f.attempt, f.task_name, f.params, f.retry_strategy, \
           f.max_attempts, f.headers, f.wake_event{extra_cols}, \
           f.event_payload is not null as has_payload, s.payload_bytes, \
           case when s.payload_bytes <= {limit} then f.event_payload end as event_payload \
         from {source} f \
         cross join lateral (select case when pg_column_compression(f.event_payload) is null \
                                      and pg_column_size(f.event_payload) <= {limit} \
                                 then octet_length(f.event_payload::text)::int8 end \
                             as payload_bytes) s"
    )
}

/// Decodes one row of [`claim_sql`]. `None` only when the row has no usable run id (then no
/// one can fail it; its lease expires).
pub(crate) fn claimed_from_row(row: &PgRow, limits: &ReadLimits) -> Option<Claimed> {
    let ids = (
        row.try_get::<Uuid, _>("run_id"),
        row.try_get::<Uuid, _>("task_id"),
    );
    let (run_id, task_id) = match ids {
        (Ok(r), Ok(t)) => (r, t),
        (r, t) => {
            tracing::error!(run_id = ?r.ok(), task_id = ?t.ok(), "claimed a row without usable ids; skipping it");
            return None;
        }
    };
    let mut defect = None;
    let mut scalar = |col: &str| -> Option<String> {
        match row.try_get::<Option<String>, _>(col) {
            Ok(v) => v,
            Err(e) => {
                defect.get_or_insert_with(|| invalid_data(col, &e));
                None
            }
        }
    };
    let task_name = scalar("task_name").unwrap_or_default();
    let wake_event = scalar("wake_event");
    let attempt = row.try_get::<i32, _>("attempt").unwrap_or(1);
    let max_attempts = row
        .try_get::<Option<i32>, _>("max_attempts")
        .unwrap_or(None);
    let params = json_col(row, "params", &mut defect).unwrap_or(Value::Null);
    let headers = json_col(row, "headers", &mut defect);
    let retry_strategy = json_col(row, "retry_strategy", &mut defect);

    let has_payload: bool = row.try_get("has_payload").unwrap_or(false);
    let payload_bytes: Option<i64> = row.try_get("payload_bytes").unwrap_or(None);
    let mut payload_deferred = false;
    let mut event_payload = None;
    match payload_bytes {
        Some(n) if n as u64 > limits.max_event_payload_bytes => {
            defect.get_or_insert_with(|| {
                limit_exceeded(
                    "the event payload",
                    n as u64,
                    "max_event_payload_bytes",
                    limits.max_event_payload_bytes,
                )
            });
        }
        Some(_) => event_payload = json_col(row, "event_payload", &mut defect),
        None => payload_deferred = has_payload,
    }
    Some(Claimed {
        run: ClaimedRun {
            run_id,
            task_id,
            attempt,
            task_name,
            params,
            retry_strategy,
            max_attempts,
            headers,
            wake_event,
            event_payload,
        },
        checkpoints: None,
        payload_deferred,
        defect,
    })
}

/// The fast claim's `checkpoints` column: `Some` when it holds them, `None` when the worker
/// must read them (the claim deferred them, or they did not decode as one value: read one by
/// one, the bad one is then named).
pub(crate) fn inline_checkpoints(row: &PgRow) -> Option<Vec<(String, Value)>> {
    match row.try_get::<Option<Value>, _>("checkpoints") {
        Ok(None) => Some(Vec::new()),
        Ok(Some(Value::Array(items))) => Some(
            items
                .into_iter()
                .filter_map(|mut c| {
                    let name = c.get("name")?.as_str()?.to_string();
                    Some((
                        name,
                        c.get_mut("state").map(Value::take).unwrap_or_default(),
                    ))
                })
                .collect(),
        ),
        // {"deferred": true, ...}, or anything else: read them.
        Ok(Some(_)) | Err(_) => None,
    }
}

/// Checks checkpoints the claim returned against the limits (they are small, but the limits
/// may be set smaller still), and returns their total size.
pub fn check_checkpoints(cps: &[(String, Value)], limits: &ReadLimits) -> Result<u64, Failure> {
    let mut total = 0u64;
    for (name, v) in cps {
        let n = crate::jsonb::text_len(v);
        if n > limits.max_checkpoint_bytes {
            return Err(limit_exceeded(
                &show_name(name),
                n,
                "max_checkpoint_bytes",
                limits.max_checkpoint_bytes,
            ));
        }
        total += n;
    }
    if total > limits.max_checkpoint_total_bytes {
        return Err(limit_exceeded(
            "the total of the task's checkpoints",
            total,
            "max_checkpoint_total_bytes",
            limits.max_checkpoint_total_bytes,
        ));
    }
    Ok(total)
}

/// The committed checkpoints visible to `run` (what `get_task_checkpoint_states` returns),
/// read within `limits`: every value's size is measured in SQL first, and values are sent
/// only when each and their total fit. `Ok(Err(failure))` fails the run permanently.
pub async fn read_checkpoints(
    client: &Client,
    queue: &str,
    run: &ClaimedRun,
    limits: &ReadLimits,
) -> Result<Result<LoadedCheckpoints, Failure>, ClientError> {
    // Reads the tables directly (as get_task does), so that the sizes can be measured before
    // any value is sent; the visibility rule is get_task_checkpoint_states'.
    let sql = format!(
        "with visible as ( \
           select c.checkpoint_name, c.state, c.updated_at, \
                  octet_length(c.state::text)::int8 as bytes \
           from {c} c left join {r} owner on owner.run_id = c.owner_run_id \
           where c.task_id = $1 and c.status = 'committed' \
             and (owner.run_id is null or owner.attempt <= $2) \
         ), sized as ( \
           select v.*, max(v.bytes) over () as biggest, sum(v.bytes) over () as total \
           from visible v \
         ) \
         select checkpoint_name, bytes, total::int8 as total, \
                case when biggest <= $3::int8 and total <= $4::int8 then state end as state \
         from sized order by updated_at, checkpoint_name",
        c = table("c", queue),
        r = table("r", queue),
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run.task_id)
        .bind(run.attempt)
        .bind(sql_limit(limits.max_checkpoint_bytes))
        .bind(sql_limit(limits.max_checkpoint_total_bytes))
        .fetch_all(&client.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
    let g = ClientError::Database;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get("checkpoint_name").map_err(g)?;
        let bytes: Option<i64> = row.try_get("bytes").map_err(g)?;
        let bytes = bytes.unwrap_or(0).max(0) as u64;
        if bytes > limits.max_checkpoint_bytes {
            return Ok(Err(limit_exceeded(
                &show_name(&name),
                bytes,
                "max_checkpoint_bytes",
                limits.max_checkpoint_bytes,
            )));
        }
        let total: Option<i64> = row.try_get("total").map_err(g)?;
        let total = total.unwrap_or(0).max(0) as u64;
        if total > limits.max_checkpoint_total_bytes {
            return Ok(Err(limit_exceeded(
                "the total of the task's checkpoints",
                total,
                "max_checkpoint_total_bytes",
                limits.max_checkpoint_total_bytes,
            )));
        }
        match row.try_get::<Option<Value>, _>("state") {
            Ok(v) => out.push((name, v.unwrap_or(Value::Null))),
            Err(e) => return Ok(Err(invalid_data(&show_name(&name), &e))),
        }
    }
    // Measured as the host measures what a run writes (the sizes above are Postgres' text).
    let bytes = out.iter().map(|(_, v)| crate::jsonb::text_len(v)).sum();
    Ok(Ok(LoadedCheckpoints { values: out, bytes }))
}

/// The event payload of a run (the claim deferred it), read within `limits`.
pub async fn read_event_payload(
    client: &Client,
    queue: &str,
    run_id: Uuid,
    limits: &ReadLimits,
) -> Result<Result<Option<Value>, Failure>, ClientError> {
    let sql = format!(
        "select s.bytes, case when s.bytes <= $2::int8 then r.event_payload end as event_payload \
         from {r} r cross join lateral \
           (select octet_length(r.event_payload::text)::int8 as bytes) s \
         where r.run_id = $1",
        r = table("r", queue),
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .bind(sql_limit(limits.max_event_payload_bytes))
        .fetch_optional(&client.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
    let Some(row) = row else {
        return Ok(Ok(None));
    };
    payload_from_row(&row, limits)
}

/// Reads `bytes` and `event_payload` of a row that measured its payload in SQL.
pub(crate) fn payload_from_row(
    row: &PgRow,
    limits: &ReadLimits,
) -> Result<Result<Option<Value>, Failure>, ClientError> {
    let bytes: Option<i64> = row.try_get("bytes").map_err(ClientError::Database)?;
    if let Some(n) = bytes.filter(|n| *n as u64 > limits.max_event_payload_bytes) {
        return Ok(Err(limit_exceeded(
            "the event payload",
            n as u64,
            "max_event_payload_bytes",
            limits.max_event_payload_bytes,
        )));
    }
    match row.try_get::<Option<Value>, _>("event_payload") {
        Ok(v) => Ok(Ok(v)),
        Err(e) => Ok(Err(invalid_data("the event payload", &e))),
    }
}

/// Claiming.
impl Client {
    /// `claim_task`: up to `qty` runs, each leased for `claim_timeout_secs` (0 = no lease).
    /// Fails when any claimed row cannot be read (the runs stay claimed); a worker uses
    /// [`Client::claim_rows`], which fails such a run alone.
    pub async fn claim(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
    ) -> Result<Vec<ClaimedRun>, ClientError> {
        let rows = self
            .claim_rows(
                queue,
                worker_id,
                claim_timeout_secs,
                qty,
                &ReadLimits::unbounded(),
            )
            .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for c in rows {
            runs.push(self.strict(queue, c).await?.0);
        }
        Ok(runs)
    }

    /// A claimed run whose data all reads, with its deferred parts read (unbounded).
    async fn strict(
        &self,
        queue: &str,
        c: Claimed,
    ) -> Result<(ClaimedRun, Vec<(String, Value)>), ClientError> {
        let limits = ReadLimits::unbounded();
        let bad = |f: Failure| ClientError::InvalidInput(f.message);
        if let Some(f) = c.defect {
            return Err(bad(f));
        }
        let mut run = c.run;
        if c.payload_deferred {
            run.event_payload = read_event_payload(self, queue, run.run_id, &limits)
                .await?
                .map_err(bad)?;
        }
        let checkpoints = match c.checkpoints {
            Some(cps) => cps,
            None => {
                read_checkpoints(self, queue, &run, &limits)
                    .await?
                    .map_err(bad)?
                    .values
            }
        };
        Ok((run, checkpoints))
    }

    /// [`Client::claim`] for a worker: each row is read on its own, and a row that cannot be
    /// read (or whose event payload is over `limits`) comes back with a
    /// [`Claimed::defect`] instead of failing the others. Checkpoints are left to
    /// [`read_checkpoints`].
    pub async fn claim_rows(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
        limits: &ReadLimits,
    ) -> Result<Vec<Claimed>, ClientError> {
        let sql = claim_sql("absurd.claim_task($1, $2, $3, $4)", "", 5);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .bind(worker_id)
            .bind(claim_timeout_secs)
            .bind(qty)
            .bind(sql_limit(limits.max_event_payload_bytes))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(rows
            .iter()
            .filter_map(|r| claimed_from_row(r, limits))
            .collect())
    }

    /// Whether the queue has absurd-host's per-queue claim and completion (`lease_<queue>`,
    /// `done_<queue>`, migration 0011): a schema installed by `absurdctl init` does not, nor
    /// does a queue absurd-host cannot name.
    pub async fn has_fast_paths(&self, queue: &str) -> Result<bool, ClientError> {
        let sig = format!("{}(text,integer,integer)", table("lease", queue));
        sqlx::query_scalar("select to_regprocedure($1) is not null")
            .bind(sig)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Claims like [`Client::claim`] through the queue's own claim function (which
    /// `claim_task` also calls), which also returns each run's visible checkpoints (so the
    /// worker need not load them). It sweeps like `claim_task`, on every call. Needs
    /// [`Client::has_fast_paths`].
    pub async fn claim_fast(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
    ) -> Result<Vec<(ClaimedRun, Vec<(String, Value)>)>, ClientError> {
        let rows = self
            .claim_fast_rows(
                queue,
                worker_id,
                claim_timeout_secs,
                qty,
                &ReadLimits::unbounded(),
            )
            .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for c in rows {
            runs.push(self.strict(queue, c).await?);
        }
        Ok(runs)
    }

    /// [`Client::claim_fast`] for a worker, reading each row on its own like
    /// [`Client::claim_rows`]. A run's checkpoints are `None` when the claim left them for
    /// [`read_checkpoints`] (large ones, migration 0010).
    pub async fn claim_fast_rows(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
        limits: &ReadLimits,
    ) -> Result<Vec<Claimed>, ClientError> {
        let source = format!("{}($1, $2, $3)", table("lease", queue));
        let sql = claim_sql(&source, ", f.checkpoints", 4);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker_id)
            .bind(claim_timeout_secs)
            .bind(qty)
            .bind(sql_limit(limits.max_event_payload_bytes))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let mut c = claimed_from_row(r, limits)?;
                c.checkpoints = inline_checkpoints(r);
                Some(c)
            })
            .collect())
    }

    /// Whether the queue has the complete-and-claim function `next_<queue>` (migration 0012).
    pub async fn has_next_path(&self, queue: &str) -> Result<bool, ClientError> {
        let sig = format!(
            "{}(uuid[],jsonb[],text,integer,integer)",
            table("next", queue)
        );
        sqlx::query_scalar("select to_regprocedure($1) is not null")
            .bind(sig)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Completes `runs` like [`Client::complete_runs_fast`] and, in the same transaction,
    /// claims up to `qty` runs like [`Client::claim_fast`]: at most one per run this call
    /// completed, so a stale run id (failed, cancelled, completed before, unknown) neither
    /// completes nor claims. Needs [`Client::has_next_path`].
    #[allow(clippy::type_complexity)]
    pub async fn complete_and_claim(
        &self,
        queue: &str,
        runs: &[Uuid],
        results: &[Value],
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
    ) -> Result<(CompletedStates, Vec<(ClaimedRun, Vec<(String, Value)>)>), ClientError> {
        let (states, rows) = self
            .complete_and_claim_rows(
                queue,
                runs,
                results,
                worker_id,
                claim_timeout_secs,
                qty,
                &ReadLimits::unbounded(),
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for c in rows {
            claimed.push(self.strict(queue, c).await?);
        }
        Ok((states, claimed))
    }

    /// [`Client::complete_and_claim`] for a worker, reading each claimed row on its own like
    /// [`Client::claim_fast_rows`].
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_and_claim_rows(
        &self,
        queue: &str,
        runs: &[Uuid],
        results: &[Value],
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
        limits: &ReadLimits,
    ) -> Result<(CompletedStates, Vec<Claimed>), ClientError> {
        let source = format!("{}($1, $2, $3, $4, $5)", table("next", queue));
        let sql = claim_sql(&source, ", f.checkpoints, f.done_state", 6);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(runs)
            .bind(results)
            .bind(worker_id)
            .bind(claim_timeout_secs)
            .bind(qty)
            .bind(sql_limit(limits.max_event_payload_bytes))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let mut states = Vec::with_capacity(runs.len());
        let mut claimed = Vec::new();
        for r in &rows {
            // A completion's row has `done_state`; a claimed run's row has not.
            let done: Option<String> = r.try_get("done_state").map_err(ClientError::Database)?;
            match done {
                Some(state) => {
                    states.push((r.try_get("run_id").map_err(ClientError::Database)?, state))
                }
                None => {
                    if let Some(mut c) = claimed_from_row(r, limits) {
                        c.checkpoints = inline_checkpoints(r);
                        claimed.push(c);
                    }
                }
            }
        }
        Ok((states, claimed))
    }

    /// Seconds until the queue's earliest waiting run (pending or sleeping) is due, by the
    /// database clock: negative when one is overdue, `None` when none waits. Tells a claimer
    /// how long it may idle.
    pub async fn seconds_until_due(&self, queue: &str) -> Result<Option<f64>, ClientError> {
        let sql = format!(
            "select extract(epoch from least(
                (select min(available_at) from {r} where state = 'pending'),
                (select min(available_at) from {r} where state = 'sleeping')
             ) - absurd.current_time())::float8",
            r = table("r", queue)
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_messages_name_the_key_and_value() {
        let f = limit_exceeded("checkpoint \"a\"", 20, "max_checkpoint_bytes", 10);
        assert_eq!(f.name, FailureName::LimitExceeded);
        assert_eq!(
            f.message,
            "checkpoint \"a\" is 20 bytes; the limit is 10 (max_checkpoint_bytes)"
        );
        assert_eq!(
            f.details,
            json!({"limit": "max_checkpoint_bytes", "value": 10, "actual": 20})
        );
        assert!(!f.retryable);
    }

    #[test]
    fn inline_checkpoints_are_checked_against_smaller_limits() {
        let cps = vec![("a".to_string(), json!("xxxxxxxx")), ("b".into(), json!(1))];
        assert!(check_checkpoints(&cps, &ReadLimits::default()).is_ok());
        let tight = ReadLimits {
            max_checkpoint_bytes: 5,
            ..ReadLimits::default()
        };
        let f = check_checkpoints(&cps, &tight).unwrap_err();
        assert_eq!(check_checkpoints(&cps, &ReadLimits::default()), Ok(11));
        assert!(f.message.contains("max_checkpoint_bytes"), "{}", f.message);
        let total = ReadLimits {
            max_checkpoint_total_bytes: 10,
            ..ReadLimits::default()
        };
        let f = check_checkpoints(&cps, &total).unwrap_err();
        assert!(
            f.message
                == "the total of the task's checkpoints is 11 bytes; the limit is 10 (max_checkpoint_total_bytes)",
            "{}",
            f.message
        );
    }

    #[test]
    fn long_names_are_shortened_in_messages() {
        let s = show_name(&"é".repeat(100));
        assert!(s.len() < 150 && s.ends_with("(200 bytes)"), "{s}");
    }
}
