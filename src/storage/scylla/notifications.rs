//! The CQL notifications (in progress).

use crate::storage::StoreError;
use scylla::client::session::Session;
use scylla::statement::SerialConsistency;

/// The migration's statements (`{ks}` is the keyspace).
pub(super) const DDL: &[&str] = &[];

/// This module's prepared statements.
pub(super) struct Statements {}

impl Statements {
    pub(super) async fn prepare(
        _session: &Session,
        _serial: SerialConsistency,
    ) -> Result<Self, StoreError> {
        Ok(Self {})
    }
}
