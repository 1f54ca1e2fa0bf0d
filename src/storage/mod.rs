//! The store traits and their backends. Above this module nobody sees SQL: actors and handlers
//! speak in orders, tokens and events. Backends: `sqlite` (embedded, default); ScyllaDB later.
//! A write is acknowledged (its future resolves `Ok`) only once it is durable.

pub mod backend;
pub mod commands;
pub mod ledger;
pub mod notifications;
pub mod scylla;
pub mod sqlite;

pub use commands::{CommandReply, CommandStore};
pub use ledger::{
    AuditOrder, BatchOutcome, BookedTxn, Finding, LastEvent, LedgerScan, LedgerStore, RawPosting,
};
pub use notifications::{MerchantRoom, NotificationStore};

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_ledger;
#[cfg(test)]
mod conformance_notifications;

use crate::domain::{
    Event, MerchantId, MerchantOrderNo, Order, OrderId, OrderStatus, SubmitToken, Timer, TimerKind,
    TimerOp,
};
use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;

/// A storage failure that is not a business answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, a bug); the write did not happen.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The write queue is full; the write did not happen. Retry later.
    #[error("storage is overloaded")]
    Overloaded,
    /// The store is shutting down.
    #[error("storage is closed")]
    Closed,
    /// Someone else changed the order since it was read (optimistic concurrency).
    #[error("order {0} was changed concurrently")]
    VersionConflict(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A write reused an id that is stored with other content (a ledger transaction id): a
    /// replay must be identical. Nothing of the write happened.
    #[error("id {0} is stored with other content")]
    IdConflict(String),
}

/// How a create ended, when storage worked.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// Stored, token consumed.
    Created,
    /// The token was consumed already (by the named order, when it is known).
    TokenUsed(Option<OrderId>),
    /// The token is unknown, belongs to another merchant, or expired.
    TokenInvalid,
    /// The merchant already has an order with this number.
    Duplicate(OrderId),
    /// A command create only: a reply is stored under the command's key already (a copy of
    /// the command ran first); nothing was stored.
    Answered,
}

/// A submit token as issued.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// The token.
    pub token: SubmitToken,
    /// Whose it is.
    pub merchant_id: MerchantId,
    /// After this it is invalid.
    pub expires_at: OffsetDateTime,
}

/// An event read back from the outbox, with its position. The event and its bytes are shared:
/// every consumer reading the same position gets the same decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The log partition it is in (its order's).
    pub partition: u32,
    /// Position in its partition; strictly increasing in commit order.
    pub seq: u64,
    /// The event.
    pub event: Arc<Event>,
    /// Its bytes as stored: the event at `streams::codec::SCHEMA_VERSION` (what a transport
    /// sends, without encoding it again).
    pub encoded: Arc<[u8]>,
}

/// An order's own records: its submit token, its merchant number, its state and the events and
/// timers each change writes with it. The part of the store both backends keep alike, and that
/// the conformance suite (`storage::conformance`) checks on each.
#[async_trait]
pub trait OrderRecords: Send + Sync + 'static {
    /// The key submit tokens are signed with: made when the store is first opened, kept in
    /// it, the same for every node on the store and across restarts (a token issued before a
    /// restart stays good for its life).
    fn submit_token_key(&self) -> crate::domain::TokenKey;

    /// Stores a token of the older, stored form (tokens are issued signed now, which stores
    /// nothing; a store opened by an older paycore holds such tokens, and they stay good).
    async fn issue_token(&self, token: TokenRecord) -> Result<(), StoreError>;

    /// Consumes `token` and stores `order` with its events and timers, atomically: either all
    /// of it happens or, for any outcome but `Created`, nothing does. A signed token (its
    /// signature checked by the caller for the order's merchant) is recorded as used by this
    /// order, with the expiry it names; a stored one must be in the store, unused, the
    /// merchant's and unexpired.
    async fn create_order(
        &self,
        token: SubmitToken,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
        now: OffsetDateTime,
    ) -> Result<CreateOutcome, StoreError>;

    /// Stores the new state of an order, its events and its timer changes if the stored version
    /// is still `expected_version`; otherwise `VersionConflict` and nothing changes.
    async fn update_order(
        &self,
        order: Order,
        expected_version: u64,
        previous_status: OrderStatus,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<(), StoreError>;

    /// Reads one order.
    async fn load_order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Finds a merchant's order by its number.
    async fn find_by_merchant_order_no(
        &self,
        merchant_id: &MerchantId,
        merchant_order_no: &MerchantOrderNo,
    ) -> Result<Option<Order>, StoreError>;

    /// The events of one order still stored, by version (the embedded log purges delivered
    /// events after its retention; the CQL backend keeps them in the order's partition).
    async fn order_events(&self, order_id: &OrderId) -> Result<Vec<Event>, StoreError>;
}

/// Durable timers beyond those an order change writes with it: the scheduler's reads and
/// leases, and the sweep's writes. Checked on every backend by the conformance suite.
#[async_trait]
pub trait TimerStore: Send + Sync + 'static {
    /// Changes an order's timers without changing the order (the stuck-order sweep).
    async fn write_timers(&self, order_id: &OrderId, ops: Vec<TimerOp>) -> Result<(), StoreError>;

    /// After a timer fired and was handled without an order change: moves it to `next` (or
    /// removes it when `None`), but only if it still carries `fired_attempt` (a timer that was
    /// set again meanwhile is left alone).
    async fn reschedule_timer(
        &self,
        order_id: &OrderId,
        kind: TimerKind,
        fired_attempt: u32,
        next: Option<TimerOp>,
    ) -> Result<(), StoreError>;

    /// Takes up to `limit` timers due at `now`, earliest first, and leases them: their due time
    /// moves to `lease_until`, so a timer whose handling is lost (a crash) fires again then.
    async fn claim_due_timers(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Timer>, StoreError>;

    /// (timers due before `pending_before`, timers due before `overdue_before`). The CQL
    /// backend counts its due-time index, where a timer moved or removed leaves its old entry
    /// until that entry comes due: its first figure can run high, its second cannot.
    async fn timer_counts(
        &self,
        overdue_before: OffsetDateTime,
        pending_before: OffsetDateTime,
    ) -> Result<(i64, i64), StoreError>;

    /// Scans up to `limit` orders with open work after `after` (in the backend's scan order: id
    /// order on SQLite, token order on CQL) and answers those that have no timer, and the last
    /// id scanned (`None` when the scan reached the end).
    async fn orders_without_timers(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<(Vec<OrderId>, Option<OrderId>), StoreError>;
}

/// The event log: the events committed with order changes, by partition, and the durable
/// cursors of its consumers. An order's events are all in one partition (derived from its id),
/// in `version` order; within a partition positions increase in commit order. A consumer keeps
/// one cursor per partition and reads each partition on its own. The embedded log (SQLite's
/// outbox) is one partition; the CQL log has one per shard.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// How many partitions the log has, numbered from 0.
    fn log_partitions(&self) -> u32;

    /// Changes whenever new events become readable: each consumer waits on its own receiver.
    fn watch_commits(&self) -> tokio::sync::watch::Receiver<u64>;

    /// How many positions a cursor at `cursor` is behind `head` (of `cursors`): what
    /// dashboards and readiness call a consumer's lag.
    fn lag(&self, cursor: u64, head: u64) -> u64 {
        head.saturating_sub(cursor)
    }

    /// Reads up to `limit` events of `partition` after `seq`, in order.
    async fn events_after(
        &self,
        partition: u32,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Reads a named consumer's cursor in `partition` (0 when unset).
    async fn cursor(&self, name: &str, partition: u32) -> Result<u64, StoreError>;

    /// Durably stores a named consumer's cursor in `partition` (it never moves back).
    async fn set_cursor(&self, name: &str, partition: u32, seq: u64) -> Result<(), StoreError>;

    /// Makes sure the consumer `name` has a cursor in every partition, so the purge waits for
    /// it, and answers them by partition. A cursor that did not exist starts at the end of its
    /// partition: a consumer switched on sees what is committed from now on, not the retained
    /// history.
    async fn register_cursor(&self, name: &str) -> Result<Vec<u64>, StoreError>;

    /// Removes the consumer's cursors (a consumer switched off must not hold the purge).
    async fn drop_cursor(&self, name: &str) -> Result<(), StoreError>;

    /// Every registered cursor (name and position), and each partition's head (the largest
    /// position ever handed out in it, purged or not), read together.
    async fn cursors(&self) -> Result<(Vec<(String, Position)>, Vec<u64>), StoreError>;

    /// Orders with a change stored whose events may not be in the log yet (a log written
    /// after the change, as CQL's, keeps an intent meanwhile). The embedded log is written in
    /// the change's own transaction: none.
    async fn orders_being_logged(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

/// Where an event sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// Strictly increasing in commit order within the partition.
    pub seq: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.partition, self.seq)
    }
}

impl StoredEvent {
    /// The event's position in the log.
    pub fn position(&self) -> Position {
        Position {
            partition: self.partition,
            seq: self.seq,
        }
    }
}

/// Everything paycore stores about orders. One implementation per backend.
#[async_trait]
pub trait OrderStore: OrderRecords + TimerStore + EventLog + CommandStore {
    /// Orders per status, kept exact in the same transactions that change statuses.
    async fn status_counts(&self) -> Result<Vec<(OrderStatus, i64)>, StoreError>;

    /// Deletes expired tokens and delivered events older than the retention; returns rows removed.
    async fn purge(
        &self,
        now: OffsetDateTime,
        events_before: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// Checks the store answers, and takes writes (after a failed commit, by a probe write).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes pending writes and stops the writer. Later writes answer `Closed`.
    async fn close(&self);
}
