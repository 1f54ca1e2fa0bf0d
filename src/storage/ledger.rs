//! The ledger's storage: ledger transactions with their postings, per-account balance
//! snapshots, and the ledger consumer's cursor, written together. Kept apart from `OrderStore`
//! because only the ledger consumer, the ledger routes and `paycore ledger verify` use it; a
//! backend implements both. Postings are append-only: nothing here updates or deletes one.

use super::StoreError;
use crate::domain::ledger::{AccountBalance, LedgerTxn};
pub use crate::domain::ledger_audit::StoredPosting as RawPosting;
use crate::domain::{MerchantId, Order, OrderId};
use async_trait::async_trait;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A stored ledger transaction and when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedTxn {
    /// The transaction.
    pub txn: LedgerTxn,
    /// When its batch was written.
    pub created_at: OffsetDateTime,
}

/// What a batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Transactions stored.
    pub written: usize,
    /// Transactions already stored with identical content, left as they were.
    pub skipped: usize,
    /// Postings stored.
    pub postings: usize,
}

/// An order as `ledger verify` checks it: its state, and where its last event is in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditOrder {
    /// The order.
    pub order: Order,
    /// Where its last event still stored is in the log.
    pub last_event: LastEvent,
}

/// Where an order's last event is in the log, as far as the backend can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastEvent {
    /// At this position.
    At(super::Position),
    /// Purged, which happens only after every cursor passed it.
    Purged,
    /// In this log partition; the log is not indexed by order, so the position is unknown
    /// (the CQL backend).
    InPartition(u32),
}

/// A problem a whole-ledger check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which check: `unbalanced`, `orphan_posting`, `empty_transaction`, `resolved_twice`,
    /// `bad_resolution`, `balance_drift`, `bad_row`.
    pub check: &'static str,
    /// What it found.
    pub detail: String,
}

/// The whole-ledger checks' answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerScan {
    /// Transactions stored.
    pub transactions: u64,
    /// Postings stored.
    pub postings: u64,
    /// Up to the limit asked for.
    pub findings: Vec<Finding>,
}

/// Everything paycore stores about its ledger.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Stores a batch of ledger transactions, updates the balance snapshots of the accounts
    /// they post to, and moves the consumer cursor `cursor_name` in log partition `partition`
    /// to `cursor_seq`, all in one
    /// transaction. Idempotent by transaction id: one already stored with identical content is
    /// skipped (its postings are not applied to balances again); one stored with other content
    /// is `StoreError::IdConflict`, and then nothing of the batch is written, cursor included.
    async fn write_batch(
        &self,
        txns: Vec<LedgerTxn>,
        cursor_name: &str,
        partition: u32,
        cursor_seq: u64,
    ) -> Result<BatchOutcome, StoreError>;

    /// The stored transactions of these orders (checked as they are decoded), by order id.
    async fn transactions_for_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<LedgerTxn>>, StoreError>;

    /// One order's transactions with their postings, in the order booked.
    async fn order_ledger(&self, order_id: &OrderId) -> Result<Vec<BookedTxn>, StoreError>;

    /// The balance snapshots of a merchant's accounts, by account and currency.
    async fn merchant_balances(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<AccountBalance>, StoreError>;

    /// Whole-ledger checks over every stored row: each transaction sums to zero per currency,
    /// no posting without its transaction and no transaction without postings, each hold
    /// resolved at most once and only by its own order's post or void, every row decodes, and
    /// each balance snapshot equals the sum of its account's postings. At most `max_findings`.
    async fn scan_ledger(&self, max_findings: usize) -> Result<LedgerScan, StoreError>;

    /// Up to `limit` orders after `after` (in id order), for `ledger verify`.
    async fn audit_orders(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditOrder>, StoreError>;

    /// The stored postings of these orders, unchecked, by order id.
    async fn raw_postings_for_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<RawPosting>>, StoreError>;
}
