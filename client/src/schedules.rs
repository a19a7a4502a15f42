//! Schedules (`absurd.schedules`, migration 0017): their definitions, and firing a tick.
//!
//! The client stores and reads what it is given; the cron expression, the time zone and the
//! catch-up policy are checked by absurd-host (`absurd_engine::schedule`) before they get here.
//! A tick is fired by [`Client::fire_schedule`]: one transaction that locks the schedule's row
//! only if it still holds what the scheduler read (its `last_tick` and `revision`), spawns each
//! tick with the idempotency key [`tick_key`], and moves `last_tick` on. Any number of
//! schedulers may do this at once; each tick is spawned once.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::types::{SpawnOptions, Spawned};

/// The columns of [`ScheduleRow`].
const COLUMNS: &str = "schedule_name, cron, timezone, task_name, queue_name, params, catch_up, \
     enabled, source, revision, last_tick, last_spawned_tick, last_task_id, last_spawned_at, \
     created_at, updated_at";

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct ScheduleRow {
    pub schedule_name: String,
    pub cron: String,
    pub timezone: String,
    pub task_name: String,
    pub queue_name: String,
    pub params: Value,
    /// `skip`, `one` or `all`.
    pub catch_up: String,
    pub enabled: bool,
    /// `config` or `api`.
    pub source: String,
    /// Bumped by every change of the definition.
    pub revision: i64,
    /// Every tick at or before this time has been handled (spawned or skipped).
    pub last_tick: DateTime<Utc>,
    pub last_spawned_tick: Option<DateTime<Utc>>,
    pub last_task_id: Option<Uuid>,
    pub last_spawned_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A schedule's definition, as created or replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDefinition {
    pub schedule_name: String,
    pub cron: String,
    pub timezone: String,
    pub task_name: String,
    pub queue_name: String,
    /// A JSON object.
    pub params: Value,
    pub catch_up: String,
    pub enabled: bool,
}

/// Where a schedule was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleSource {
    /// A worker's `absurd-host.toml`.
    Config,
    /// `POST /api/absurd/schedules`.
    Api,
}

impl ScheduleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleSource::Config => "config",
            ScheduleSource::Api => "api",
        }
    }
}

/// What [`Client::upsert_config_schedule`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigUpsert {
    Created,
    /// The stored definition differed and was replaced (its `last_tick` kept).
    Updated,
    Unchanged,
    /// A schedule of that name had been made through the API; the file's definition replaced it.
    TookOverApi,
}

/// One tick to spawn, with the options of its task.
#[derive(Debug, Clone)]
pub struct TickSpawn {
    pub tick: DateTime<Utc>,
    pub options: SpawnOptions,
}

/// A tick that [`Client::fire_schedule`] spawned (or found spawned: `created` is false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTick {
    pub tick: DateTime<Utc>,
    pub spawned: Spawned,
}

/// The idempotency key of a schedule's tick: `schedule:<name>:<tick as RFC 3339 UTC>`, e.g.
/// `schedule:housekeeping:2030-01-01T01:00:00Z`.
pub fn tick_key(schedule_name: &str, tick: DateTime<Utc>) -> String {
    format!(
        "schedule:{schedule_name}:{}",
        tick.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    )
}

/// A missing `absurd.schedules` (a schema installed by `absurdctl init`, or not migrated yet)
/// is [`ClientError::SchemaMissing`], naming the migration.
fn db(e: sqlx::Error) -> ClientError {
    if let sqlx::Error::Database(d) = &e {
        if d.code().as_deref() == Some("42P01") && d.message().contains("schedules") {
            return ClientError::SchemaMissing(
                "no absurd.schedules table: absurd-host's migration 0017 is not applied".into(),
            );
        }
    }
    ClientError::from_sqlx(e, None)
}

impl Client {
    /// Whether the database has the schedules table (absurd-host's migration 0017; a schema
    /// installed by `absurdctl init` has none).
    pub async fn schedules_supported(&self) -> Result<bool> {
        sqlx::query_scalar("select to_regclass('absurd.schedules') is not null")
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// The database's clock, `absurd.current_time()` (which honours `absurd.fake_now`).
    pub async fn database_time(&self) -> Result<DateTime<Utc>> {
        sqlx::query_scalar("select absurd.current_time()")
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// Schedules by name, at most `limit`.
    pub async fn list_schedules(&self, limit: i64) -> Result<Vec<ScheduleRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from absurd.schedules order by schedule_name limit $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    pub async fn get_schedule(&self, name: &str) -> Result<Option<ScheduleRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from absurd.schedules where schedule_name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    /// Creates a schedule; `None` if one of that name exists, or if there are already `max`
    /// schedules (see [`Client::count_schedules`] to tell which). Its `last_tick` is now (the
    /// database clock): it never fires for the past.
    pub async fn create_schedule(
        &self,
        def: &ScheduleDefinition,
        source: ScheduleSource,
        max: i64,
    ) -> Result<Option<ScheduleRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into absurd.schedules \
               (schedule_name, cron, timezone, task_name, queue_name, params, catch_up, enabled, source) \
             select $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             where (select count(*) from absurd.schedules) < $10 \
             on conflict (schedule_name) do nothing \
             returning {COLUMNS}"
        )))
        .bind(&def.schedule_name)
        .bind(&def.cron)
        .bind(&def.timezone)
        .bind(&def.task_name)
        .bind(&def.queue_name)
        .bind(&def.params)
        .bind(&def.catch_up)
        .bind(def.enabled)
        .bind(source.as_str())
        .bind(max)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    pub async fn count_schedules(&self) -> Result<i64> {
        sqlx::query_scalar("select count(*) from absurd.schedules")
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// Replaces the definition of the schedule `def.schedule_name` (its `last_tick` and last
    /// run are kept, its `revision` bumped); `None` if there is none. Only a schedule of
    /// `source` is replaced when `only_source` is given (the API does not edit the file's).
    pub async fn update_schedule(
        &self,
        def: &ScheduleDefinition,
        only_source: Option<ScheduleSource>,
    ) -> Result<Option<ScheduleRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update absurd.schedules set cron = $2, timezone = $3, task_name = $4, \
               queue_name = $5, params = $6, catch_up = $7, enabled = $8, \
               revision = revision + 1, updated_at = absurd.current_time() \
             where schedule_name = $1 and ($9::text is null or source = $9) \
             returning {COLUMNS}"
        )))
        .bind(&def.schedule_name)
        .bind(&def.cron)
        .bind(&def.timezone)
        .bind(&def.task_name)
        .bind(&def.queue_name)
        .bind(&def.params)
        .bind(&def.catch_up)
        .bind(def.enabled)
        .bind(only_source.map(ScheduleSource::as_str))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    /// Deletes a schedule; false if there was none. Tasks it spawned are not touched.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("delete from absurd.schedules where schedule_name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    /// Stores a schedule of a worker's `absurd-host.toml`. The file wins: a schedule of that
    /// name is replaced by the file's definition whoever made it (and becomes `config`), but
    /// keeps its `last_tick`, so a restart never fires a tick twice. Unchanged definitions are
    /// not written (no new `revision`).
    pub async fn upsert_config_schedule(
        &self,
        def: &ScheduleDefinition,
        max: i64,
    ) -> Result<Option<ConfigUpsert>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let current: Option<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from absurd.schedules where schedule_name = $1 for update"
        )))
        .bind(&def.schedule_name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let outcome = match current {
            None => {
                let made: Option<(String,)> = sqlx::query_as(
                    "insert into absurd.schedules \
                       (schedule_name, cron, timezone, task_name, queue_name, params, catch_up, enabled, source) \
                     select $1, $2, $3, $4, $5, $6, $7, $8, 'config' \
                     where (select count(*) from absurd.schedules) < $9 \
                     on conflict (schedule_name) do nothing returning schedule_name",
                )
                .bind(&def.schedule_name)
                .bind(&def.cron)
                .bind(&def.timezone)
                .bind(&def.task_name)
                .bind(&def.queue_name)
                .bind(&def.params)
                .bind(&def.catch_up)
                .bind(def.enabled)
                .bind(max)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                match made {
                    Some(_) => Some(ConfigUpsert::Created),
                    // Another worker inserted it meanwhile (the same file), or the table is full.
                    None => {
                        tx.rollback().await.map_err(db)?;
                        return match self.get_schedule(&def.schedule_name).await? {
                            Some(_) => Ok(Some(ConfigUpsert::Unchanged)),
                            None => Ok(None),
                        };
                    }
                }
            }
            Some(row) => {
                let same = row.source == "config"
                    && row.cron == def.cron
                    && row.timezone == def.timezone
                    && row.task_name == def.task_name
                    && row.queue_name == def.queue_name
                    && row.params == def.params
                    && row.catch_up == def.catch_up
                    && row.enabled == def.enabled;
                if same {
                    Some(ConfigUpsert::Unchanged)
                } else {
                    sqlx::query(
                        "update absurd.schedules set cron = $2, timezone = $3, task_name = $4, \
                           queue_name = $5, params = $6, catch_up = $7, enabled = $8, \
                           source = 'config', revision = revision + 1, \
                           updated_at = absurd.current_time() \
                         where schedule_name = $1",
                    )
                    .bind(&def.schedule_name)
                    .bind(&def.cron)
                    .bind(&def.timezone)
                    .bind(&def.task_name)
                    .bind(&def.queue_name)
                    .bind(&def.params)
                    .bind(&def.catch_up)
                    .bind(def.enabled)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    Some(if row.source == "api" {
                        ConfigUpsert::TookOverApi
                    } else {
                        ConfigUpsert::Updated
                    })
                }
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }

    /// Fires a schedule: if its row still has `last_tick = expected_last_tick` and
    /// `revision = expected_revision`, spawns each of `ticks` (oldest first) into its queue
    /// with its task name and params as stored, each with the idempotency key [`tick_key`]
    /// (set here, over any in the options), and sets `last_tick = new_last_tick` (and the last
    /// spawned tick and task, when `ticks` is not empty), all in one transaction.
    ///
    /// `Ok(None)`: the row moved on (another scheduler fired it, or the definition changed, or
    /// it was deleted): nothing was done. A spawn that fails (the queue does not exist) rolls
    /// everything back.
    pub async fn fire_schedule(
        &self,
        schedule_name: &str,
        expected_last_tick: DateTime<Utc>,
        expected_revision: i64,
        ticks: &[TickSpawn],
        new_last_tick: DateTime<Utc>,
    ) -> Result<Option<Vec<FiredTick>>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row: Option<(String, String, Value)> = sqlx::query_as(
            "select queue_name, task_name, params from absurd.schedules \
             where schedule_name = $1 and last_tick = $2 and revision = $3 for update",
        )
        .bind(schedule_name)
        .bind(expected_last_tick)
        .bind(expected_revision)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some((queue, task_name, params)) = row else {
            tx.rollback().await.map_err(db)?;
            return Ok(None);
        };
        let mut fired = Vec::with_capacity(ticks.len());
        for t in ticks {
            let mut options = t.options.clone();
            options.idempotency_key = Some(tick_key(schedule_name, t.tick));
            let opts = serde_json::to_value(&options).expect("options serialise");
            let spawned: Spawned = sqlx::query_as(
                "select task_id, run_id, attempt, created from absurd.spawn_task($1, $2, $3, $4)",
            )
            .bind(&queue)
            .bind(&task_name)
            .bind(&params)
            .bind(&opts)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(&queue)))?;
            fired.push(FiredTick {
                tick: t.tick,
                spawned,
            });
        }
        let last = fired.last();
        sqlx::query(
            "update absurd.schedules set last_tick = $2, \
               last_spawned_tick = coalesce($3, last_spawned_tick), \
               last_task_id = coalesce($4, last_task_id), \
               last_spawned_at = case when $3::timestamptz is null then last_spawned_at \
                                      else absurd.current_time() end \
             where schedule_name = $1",
        )
        .bind(schedule_name)
        .bind(new_last_tick)
        .bind(last.map(|f| f.tick))
        .bind(last.map(|f| f.spawned.task_id))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(fired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tick_keys_name_the_schedule_and_the_utc_tick() {
        let t = Utc.with_ymd_and_hms(2030, 1, 1, 1, 0, 0).unwrap();
        assert_eq!(
            tick_key("housekeeping", t),
            "schedule:housekeeping:2030-01-01T01:00:00Z"
        );
    }
}
