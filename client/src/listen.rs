//! Wake-up notifications: our schema's functions `NOTIFY` the channel [`WAKEUP_CHANNEL`] with
//! a queue's name whenever they make a run of it claimable now. A worker listens on one
//! dedicated connection, so that it claims at once instead of at its next poll.

use sqlx::postgres::PgListener;

use crate::client::Client;
use crate::error::ClientError;

/// The notification channel our schema uses.
pub const WAKEUP_CHANNEL: &str = "absurd_wakeup";

/// A connection listening on [`WAKEUP_CHANNEL`].
pub struct WakeupListener {
    listener: PgListener,
}

impl Client {
    /// Opens a connection of its own for wake-up notifications; [`WakeupListener::listen`]
    /// then subscribes it.
    pub async fn wakeup_listener(&self) -> Result<WakeupListener, ClientError> {
        let listener = PgListener::connect_with(&self.listener_pool()?)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))?;
        Ok(WakeupListener { listener })
    }
}

impl WakeupListener {
    /// `LISTEN` on [`WAKEUP_CHANNEL`].
    pub async fn listen(&mut self) -> Result<(), ClientError> {
        self.listener
            .listen(WAKEUP_CHANNEL)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// The next notification's queue name; `Ok(None)` when the connection dropped (the next
    /// call reconnects and listens again, but notifications sent meanwhile are lost).
    pub async fn recv(&mut self) -> Result<Option<String>, ClientError> {
        match self.listener.try_recv().await {
            Ok(Some(n)) => Ok(Some(n.payload().to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(ClientError::from_sqlx(e, None)),
        }
    }
}
