//! The backend `[storage] backend` names, opened behind the storage traits: what the service,
//! its commands and the tests use, whichever backend keeps the data.

use super::scylla::Role;
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
    /// Opens the configured backend, applying its migrations, for `paycore serve`: on the CQL
    /// backend it takes the keyspace's owner lease (one serve per keyspace).
    pub async fn open(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        Self::open_as(settings, metrics, Role::Owner).await
    }

    /// Opens the configured backend for a command that runs beside `paycore serve` (ledger
    /// verify, the log commands): on the CQL backend no owner lease, no log epoch, no change.
    pub async fn open_reader(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        Self::open_as(settings, metrics, Role::Reader).await
    }

    async fn open_as(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
        role: Role,
    ) -> Result<Self, StoreError> {
        match settings.backend.as_str() {
            "sqlite" => Ok(Self::of(Arc::new(SqliteStore::open(
                &settings.sqlite,
                metrics,
            )?))),
            "scylla" => Ok(Self::of(Arc::new(
                super::scylla::ScyllaStore::open_as(&settings.scylla, role).await?,
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
