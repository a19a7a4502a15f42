//! Live updates: migration 0015's triggers `NOTIFY` the channel [`LIVE_CHANNEL`] whenever a
//! statement changes the state of tasks, whoever runs it (absurd-host, the Absurd SDKs,
//! `absurdctl`), while some listener holds the lease ([`Client::renew_live_updates`]). The
//! API turns them into its WebSocket and Server-Sent Events messages.
//!
//! A schema installed by `absurdctl init` has neither the triggers nor the lease:
//! [`Client::live_updates_supported`] says so, and a listener then has to poll.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::FromRow;
use uuid::Uuid;

use crate::client::{check_queue_name, table, Client};
use crate::error::{ClientError, Result};
use crate::types::State;

/// The notification channel of migration 0015.
pub const LIVE_CHANNEL: &str = "absurd_live";

/// The most task changes one notification lists; a statement that changed more is sent as
/// [`LiveNotice::overflow`] (the listener re-reads the queue instead).
pub const LIVE_MAX_CHANGES: usize = 128;

/// The most task ids [`Client::live_task_rows`] reads at once.
pub const LIVE_MAX_ROWS: usize = 1000;

/// One notification: the tasks one statement changed, in one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNotice {
    pub queue: String,
    /// Each task's state after the statement (empty when `overflow`).
    pub changes: Vec<(Uuid, State)>,
    /// More than [`LIVE_MAX_CHANGES`] tasks changed at once: they are not listed.
    pub overflow: bool,
}

impl LiveNotice {
    /// Parses a payload, `1 <changes> <queue>` (see `migrations/0015_live_updates.sql`);
    /// `None` for anything else (a newer format, or a `NOTIFY` sent by hand).
    pub fn parse(payload: &str) -> Option<LiveNotice> {
        let mut parts = payload.splitn(3, ' ');
        if parts.next()? != "1" {
            return None;
        }
        let list = parts.next()?;
        let queue = parts.next()?;
        if queue.is_empty() || queue.len() > 57 {
            return None;
        }
        if list == "*" {
            return Some(LiveNotice {
                queue: queue.to_string(),
                changes: Vec::new(),
                overflow: true,
            });
        }
        let mut changes = Vec::new();
        for item in list.split(',') {
            if changes.len() >= LIVE_MAX_CHANGES {
                return None;
            }
            let (state, id) = item.split_once(':')?;
            changes.push((id.parse().ok()?, state.parse().ok()?));
        }
        Some(LiveNotice {
            queue: queue.to_string(),
            changes,
            overflow: false,
        })
    }
}

/// What a live update tells of a task, read after its notification
/// ([`Client::live_task_rows`]). Large values are left out, never truncated into invalid JSON.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct LiveTaskRow {
    pub task_id: Uuid,
    pub task_name: String,
    #[sqlx(try_from = "String")]
    pub state: State,
    pub attempts: i32,
    pub enqueue_at: DateTime<Utc>,
    /// The worker holding (or that last held) the task's latest run.
    pub worker_id: Option<String>,
    /// The completed task's result, when it is at most the size asked for.
    pub result: Option<Value>,
    /// A result exists but is larger than the size asked for.
    pub result_omitted: bool,
    /// The latest run's failure: its `message`, cut to the size asked for.
    pub error: Option<String>,
    /// The latest run's failure: its `name` (`$Timeout`, `$HostPanic`, …), if any.
    pub failure_name: Option<String>,
}

/// A connection listening on [`LIVE_CHANNEL`].
pub struct LiveListener {
    listener: PgListener,
}

impl Client {
    /// Whether the database has migration 0015 (the triggers and the lease); `false` on a
    /// schema installed by `absurdctl init`.
    pub async fn live_updates_supported(&self) -> Result<bool> {
        sqlx::query_scalar(
            "select to_regprocedure('absurd.live_updates_renew(integer)') is not null",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Asks the triggers to send notifications for the next `seconds` (at most an hour), or
    /// longer if another listener asked for longer; returns until when they will.
    pub async fn renew_live_updates(&self, seconds: i32) -> Result<DateTime<Utc>> {
        sqlx::query_scalar("select absurd.live_updates_renew($1)")
            .bind(seconds)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Registers the listener `holder` (renewing it when it is already registered) for the
    /// next `seconds` (at most an hour), and makes sure the triggers exist on every queue
    /// (migration 0022: they exist only while someone listens). Returns until when
    /// notifications will be sent. Call it again well before then to keep them coming.
    pub async fn hold_live_updates(&self, holder: &str, seconds: i32) -> Result<DateTime<Utc>> {
        sqlx::query_scalar("select absurd.live_updates_hold($1, $2)")
            .bind(holder)
            .bind(seconds)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Unregisters the listener `holder`; when it was the last one, notifications stop and the
    /// triggers are dropped, so that task tables nobody watches pay nothing for them. Returns
    /// whether nobody listens any more.
    pub async fn release_live_updates(&self, holder: &str) -> Result<bool> {
        sqlx::query_scalar("select absurd.live_updates_release($1)")
            .bind(holder)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Drops the live-update triggers left behind by listeners that died without releasing,
    /// once their lease has run out. Returns `None` while someone listens (the triggers are
    /// meant to be there), otherwise how many task tables still have them because their lock
    /// could not be had within 100 ms (a later call retries). Does nothing, and returns
    /// `Some(0)`, on a schema without migration 0022.
    pub async fn retire_live_triggers(&self) -> Result<Option<i32>> {
        let present: bool = sqlx::query_scalar(
            "select to_regprocedure('absurd.live_updates_retire()') is not null",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))?;
        if !present {
            return Ok(Some(0));
        }
        sqlx::query_scalar("select absurd.live_updates_retire()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Opens a connection of its own for live-update notifications; [`LiveListener::listen`]
    /// then subscribes it.
    pub async fn live_listener(&self) -> Result<LiveListener> {
        let listener = PgListener::connect_with(&self.listener_pool()?)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))?;
        Ok(LiveListener { listener })
    }

    /// What live updates tell of the given tasks of a queue (at most [`LIVE_MAX_ROWS`]), in
    /// one statement: results larger than `max_result_bytes` (as JSON text) are left out and
    /// failure messages cut to `max_error_chars`. Unknown ids (since deleted) are skipped.
    pub async fn live_task_rows(
        &self,
        queue: &str,
        task_ids: &[Uuid],
        max_result_bytes: usize,
        max_error_chars: usize,
    ) -> Result<Vec<LiveTaskRow>> {
        check_queue_name(queue)?;
        if task_ids.len() > LIVE_MAX_ROWS {
            return Err(ClientError::InvalidInput(format!(
                "at most {LIVE_MAX_ROWS} task ids at once, got {}",
                task_ids.len()
            )));
        }
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "select t.task_id, t.task_name, t.state, t.attempts, t.enqueue_at,
               r.claimed_by as worker_id,
               case when octet_length(t.completed_payload::text) <= $2
                    then t.completed_payload end as result,
               coalesce(octet_length(t.completed_payload::text) > $2, false) as result_omitted,
               left(coalesce(r.failure_reason->>'message', r.failure_reason::text), $3) as error,
               left(r.failure_reason->>'name', 200) as failure_name
             from {t} t left join {r} r on r.run_id = t.last_attempt_run
             where t.task_id = any($1)",
            t = table("t", queue),
            r = table("r", queue),
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(task_ids)
            .bind(max_result_bytes.min(i32::MAX as usize) as i32)
            .bind(max_error_chars.min(i32::MAX as usize) as i32)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }
}

impl LiveListener {
    /// `LISTEN` on [`LIVE_CHANNEL`].
    pub async fn listen(&mut self) -> Result<(), ClientError> {
        self.listener
            .listen(LIVE_CHANNEL)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// The next notification's payload, raw (see [`LiveNotice::parse`]); `Ok(None)` when the
    /// connection dropped (the next call reconnects and listens again, but notifications sent
    /// meanwhile are lost).
    pub async fn recv(&mut self) -> Result<Option<String>, ClientError> {
        match self.listener.try_recv().await {
            Ok(Some(n)) => Ok(Some(n.payload().to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(ClientError::from_sqlx(e, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let n = LiveNotice::parse(&format!("1 running:{a},completed:{b} my queue")).unwrap();
        assert_eq!(n.queue, "my queue");
        assert_eq!(n.changes, vec![(a, State::Running), (b, State::Completed)]);
        assert!(!n.overflow);
        let n = LiveNotice::parse("1 * q").unwrap();
        assert!(n.overflow && n.changes.is_empty() && n.queue == "q");
        for bad in [
            "",
            "1",
            "1 * ",
            "2 * q",
            "1 running q",
            "1 bogus:00000000-0000-0000-0000-000000000001 q",
            "1 running:nope q",
        ] {
            assert_eq!(LiveNotice::parse(bad), None, "{bad:?}");
        }
        let many = (0..=LIVE_MAX_CHANGES)
            .map(|i| format!("pending:{}", Uuid::from_u128(i as u128)))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(LiveNotice::parse(&format!("1 {many} q")), None);
    }
}
