//! Partitioned queues and queue policies (spec §5.3, §5.13; migration 0020): creating a queue
//! in a storage mode, reading and changing its policy, and the partition maintenance that
//! `absurd-host maintain` and absurdctl do: creating future weeks, listing the old empty weeks
//! the detach policy allows, detaching them and dropping detached ones.

use serde::Serialize;

use crate::client::Client;
use crate::error::{ClientError, Result};

/// How a queue stores its tasks, runs, checkpoints and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// One table each (the default).
    Unpartitioned,
    /// Weekly partitions by UUIDv7 id, with an idempotency registry (`i_<queue>`).
    Partitioned,
}

impl StorageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Unpartitioned => "unpartitioned",
            StorageMode::Partitioned => "partitioned",
        }
    }
}

impl std::str::FromStr for StorageMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unpartitioned" => Ok(StorageMode::Unpartitioned),
            "partitioned" => Ok(StorageMode::Partitioned),
            _ => Err(format!(
                "unsupported storage mode {s:?} (expected \"unpartitioned\" or \"partitioned\")"
            )),
        }
    }
}

/// A queue's policy as `absurd.get_queue_policy` returns it. Intervals are PostgreSQL's text
/// rendering of the stored value (stored as given, e.g. `"35 days"`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct QueuePolicy {
    pub queue_name: String,
    pub storage_mode: String,
    pub default_partition: String,
    pub partition_lookahead: String,
    pub partition_lookback: String,
    pub cleanup_ttl: String,
    pub cleanup_limit: i32,
    pub detach_mode: String,
    pub detach_min_age: String,
}

/// A partial policy change for `absurd.set_queue_policy`: keys left `None` keep their value.
/// Interval fields take PostgreSQL interval text (`"28 days"`, `"12345 seconds"`); the server
/// validates every value and names the bad one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueuePolicyUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_lookahead: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_lookback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_limit: Option<i32>,
    /// `none` or `empty`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detach_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detach_min_age: Option<String>,
    /// `enabled` or `disabled` (partitioned queues only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_partition: Option<String>,
}

/// A partition that a queue's policy allows to detach: old enough and empty.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct DetachCandidate {
    pub queue_name: String,
    pub parent_table: String,
    pub partition_table: String,
}

/// A table of a queue's partition scheme, by name (in schema `absurd`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct PartitionRef {
    pub queue_name: String,
    pub partition_table: String,
}

/// A partition detached from its queue's parent and not dropped yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct DetachedPartition {
    pub queue_name: String,
    pub partition_table: String,
    pub is_empty: bool,
}

/// What [`Client::detach_partition`] ran.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct Detached {
    pub queue_name: String,
    pub parent_table: String,
    pub partition_table: String,
    /// The statement, e.g. `alter table absurd.t_q detach partition absurd.t_q_401 concurrently`.
    pub statement: String,
}

/// How long a plain (not concurrent) DETACH waits for its lock on the parent, in ms.
pub const DETACH_LOCK_TIMEOUT_MS: u32 = 5_000;

impl Client {
    /// Creates a queue in `mode`, or checks an existing one: the same mode re-runs the
    /// idempotent table creation, another mode is refused (`Queue "<q>" already exists with
    /// storage mode "<mode>"`).
    pub async fn create_queue_with_mode(&self, queue: &str, mode: StorageMode) -> Result<()> {
        crate::client::check_queue_name(queue)?;
        sqlx::query("select absurd.create_queue($1, $2)")
            .bind(queue)
            .bind(mode.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// The queue's policy, `None` for an unknown queue.
    pub async fn get_queue_policy(&self, queue: &str) -> Result<Option<QueuePolicy>> {
        sqlx::query_as(
            "select queue_name, storage_mode, default_partition, partition_lookahead::text, \
                    partition_lookback::text, cleanup_ttl::text, cleanup_limit, detach_mode, \
                    detach_min_age::text \
             from absurd.get_queue_policy($1)",
        )
        .bind(queue)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Changes the keys of `update` that are set. Switching `default_partition` to
    /// `disabled` is refused while a DEFAULT partition holds rows.
    pub async fn set_queue_policy(&self, queue: &str, update: &QueuePolicyUpdate) -> Result<()> {
        let policy = serde_json::to_value(update).expect("a policy update serialises");
        sqlx::query("select absurd.set_queue_policy($1, $2)")
            .bind(queue)
            .bind(policy)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// Whether the schema can hold partitioned queues (migration 0020; an upstream schema
    /// can too, but lacks the helper functions `maintain` uses).
    pub async fn has_partition_helpers(&self) -> Result<bool> {
        sqlx::query_scalar("select to_regprocedure('absurd.missing_partitions(text)') is not null")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Creates the week partitions (and DEFAULT partitions, when enabled) the policies call
    /// for now: of one queue, or of every partitioned queue.
    pub async fn ensure_partitions(&self, queue: Option<&str>) -> Result<()> {
        sqlx::query("select absurd.ensure_partitions($1)")
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, queue))?;
        Ok(())
    }

    /// The partitions [`Client::ensure_partitions`] would create now.
    pub async fn missing_partitions(&self, queue: Option<&str>) -> Result<Vec<PartitionRef>> {
        sqlx::query_as("select queue_name, partition_table from absurd.missing_partitions($1)")
            .bind(queue)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, queue))
    }

    /// Old, empty partitions the queues' detach policies allow to detach.
    pub async fn list_detach_candidates(
        &self,
        queue: Option<&str>,
    ) -> Result<Vec<DetachCandidate>> {
        sqlx::query_as(
            "select queue_name, parent_table, partition_table \
             from absurd.list_detach_candidates($1)",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, queue))
    }

    /// Detaches `partition_table` from its parent if it is (still) a detach candidate;
    /// `None` when it is not. CONCURRENTLY unless the parent has a DEFAULT partition, as
    /// absurdctl does; the statement is built by the server, identifiers quoted there.
    pub async fn detach_partition(&self, partition_table: &str) -> Result<Option<Detached>> {
        let found: Option<Detached> = sqlx::query_as(
            "select queue_name, parent_table, partition_table, statement \
             from absurd.detach_partition_statement($1)",
        )
        .bind(partition_table)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))?;
        let Some(found) = found else {
            return Ok(None);
        };
        let failed = |e| ClientError::from_sqlx(e, Some(&found.queue_name));
        if found.statement.ends_with(" concurrently") {
            // DETACH ... CONCURRENTLY cannot run in a transaction block: one simple-protocol
            // statement on its own. It takes no lock that stops the queue's writers.
            sqlx::raw_sql(sqlx::AssertSqlSafe(found.statement.clone()))
                .execute(&self.pool)
                .await
                .map_err(failed)?;
        } else {
            // The plain form locks the parent against every reader and writer while it
            // waits: give up after DETACH_LOCK_TIMEOUT rather than queue the workers behind it.
            let mut tx = self.pool.begin().await.map_err(failed)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "set local lock_timeout = '{DETACH_LOCK_TIMEOUT_MS}ms'; {}",
                found.statement
            )))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
        }
        Ok(Some(found))
    }

    /// Drops a partition that is no longer attached; false (nothing done) while it is still
    /// attached, or when it is no partition of a queue at all.
    pub async fn drop_detached_partition(&self, partition_table: &str) -> Result<bool> {
        sqlx::query_scalar("select absurd.drop_detached_partition($1)")
            .bind(partition_table)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Partitions detached from a queue's tables and not dropped yet.
    pub async fn detached_partitions(&self) -> Result<Vec<DetachedPartition>> {
        sqlx::query_as(
            "select queue_name, partition_table, is_empty from absurd.detached_partitions()",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }
}
