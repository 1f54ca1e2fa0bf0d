//! The backend `[storage] backend` names, opened behind the storage traits: what the service,
//! its commands and the tests use, whichever backend keeps the data.

use super::sqlite::SqliteStore;
use super::{LedgerStore, NotificationStore, OrderStore, StoreError};
use crate::config::StorageSettings;
use crate::metrics::Metrics;
use std::sync::Arc;

/// The stores of one backend (one database or keyspace behind all three).
#[derive(Clone)]
pub struct Backend {
    /// Orders, timers, the event log and command replies.
    pub orders: Arc<dyn OrderStore>,
    /// Merchant notifications.
    pub notifications: Arc<dyn NotificationStore>,
    /// The ledger.
    pub ledger: Arc<dyn LedgerStore>,
}

impl Backend {
    /// Opens the configured backend, applying its migrations.
    pub async fn open(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        match settings.backend.as_str() {
            "sqlite" => Ok(Self::of(Arc::new(SqliteStore::open(
                &settings.sqlite,
                metrics,
            )?))),
            "scylla" => Ok(Self::of(Arc::new(
                super::scylla::ScyllaStore::open(&settings.scylla).await?,
            ))),
            other => Err(StoreError::Backend(format!(
                "storage.backend = {other:?}: expected \"sqlite\" or \"scylla\""
            ))),
        }
    }

    /// One store that keeps everything.
    pub fn of<S: OrderStore + NotificationStore + LedgerStore>(store: Arc<S>) -> Self {
        Self {
            orders: store.clone(),
            notifications: store.clone(),
            ledger: store,
        }
    }
}
