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
            "sqlite" => {
                let lock = match role {
                    Role::Owner => Some(SqliteStore::lock_for_serve(&settings.sqlite.path)?),
                    _ => None,
                };
                let store = SqliteStore::open(&settings.sqlite, metrics)?;
                if let Some(lock) = lock {
                    store.hold(lock);
                }
                Ok(Self::of(Arc::new(store)))
            }
            "scylla" => {
                let store = super::scylla::ScyllaStore::open_as(&settings.scylla, role).await?;
                store.count_errors_in(metrics);
                Ok(Self::of(Arc::new(store)))
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One serve per SQLite database: a second is refused while the first runs, a reader opens
    /// beside it, and once the first closes the next serve opens.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_serve_per_sqlite_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = StorageSettings::default();
        settings.sqlite.path = dir.path().join("p.db").to_string_lossy().into_owned();
        let metrics = || Arc::new(Metrics::new());
        let first = Backend::open(&settings, metrics()).await.unwrap();
        let Err(StoreError::Backend(why)) = Backend::open(&settings, metrics()).await else {
            panic!("a second serve opened the database");
        };
        assert!(why.contains("another paycore serve"), "{why}");
        let reader = Backend::open_reader(&settings, metrics()).await.unwrap();
        reader.orders.ping().await.unwrap();
        reader.orders.close().await;
        first.orders.close().await;
        let next = Backend::open(&settings, metrics()).await.unwrap();
        next.orders.close().await;
    }
}
