//! The biller's in-memory records and its business rules over them: one record per order (its
//! write-off attempts, its write-off, its reversals), and the operations write off, look up,
//! reverse and audit. Deterministic: faults, time and the run's id tag are decided by the
//! caller; it never does I/O and never draws random numbers.

use std::collections::HashMap;

use thiserror::Error;

use crate::protocol::{
    self, AuditView, MAX_ID_LEN, MAX_REASON_LEN, ReversalView, ReverseRequest, WriteOffRequest,
    WriteOffStatus, WriteOffView,
};

/// Why the biller refuses an operation.
#[derive(Debug, Error, PartialEq)]
pub(crate) enum LedgerError {
    #[error("{0}")]
    Invalid(String),
    #[error("no write-off for order_id {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("reversal of {requested} exceeds the reversible {reversible}")]
    Exceeds { requested: i64, reversible: i64 },
    #[error("the customer account refuses the write-off")]
    AccountInvalid,
    #[error("the biller refuses to reverse this write-off")]
    ReversalRefused,
    #[error("the biller failed internally; query the write-off before trying again")]
    SystemError,
    #[error("{0}")]
    Capacity(String),
}

impl LedgerError {
    /// Wire code of this refusal.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => protocol::INVALID_REQUEST,
            Self::NotFound(_) => protocol::NOT_FOUND,
            Self::Conflict(_) => protocol::CONFLICT,
            Self::Exceeds { .. } => protocol::EXCEEDS,
            Self::AccountInvalid => protocol::ACCOUNT_INVALID,
            Self::ReversalRefused => protocol::REVERSAL_REFUSED,
            Self::SystemError => protocol::SYSTEM_ERROR,
            Self::Capacity(_) => protocol::CAPACITY,
        }
    }
}

/// The write-off fault knobs for one call, as the server decided them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WriteOffFaults {
    /// Refuse for good (ACCOUNT_INVALID).
    pub(crate) permanent: bool,
    /// The first this many attempts of each order fail with SYSTEM_ERROR.
    pub(crate) fail_first: u32,
    /// This call fails with SYSTEM_ERROR before anything is recorded.
    pub(crate) fail_now: bool,
    /// If this call records a new write-off, answer SYSTEM_ERROR anyway (the answer is lost).
    pub(crate) lose_answer: bool,
}

/// What the biller keeps for one order.
#[derive(Default)]
struct OrderRecord {
    attempts: u64,
    write_off: Option<WriteOffView>,
    reversals: Vec<ReversalView>,
}

/// All records of one biller.
pub(crate) struct Ledger {
    /// Bounded by `max_records`: an attempt counter takes a slot even if nothing is written off.
    orders: HashMap<String, OrderRecord>,
    /// reversal_id -> (order_id, index in that order's reversals); bounded by `max_records`.
    reversals_by_id: HashMap<String, (String, usize)>,
    /// Keeps ids of distinct simulator runs apart, as a client may store them.
    run_tag: u32,
    next_seq: u64,
    max_records: usize,
}

/// Protocol rule for identifiers: 1 to MAX_ID_LEN bytes of URL-unreserved ASCII, so that an
/// order_id can sit in a path unescaped.
fn check_id(field: &str, value: &str) -> Result<(), LedgerError> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if value.is_empty() || value.len() > MAX_ID_LEN || !value.bytes().all(unreserved) {
        return Err(LedgerError::Invalid(format!(
            "{field} must have 1 to {MAX_ID_LEN} bytes of A-Z a-z 0-9 - . _ ~"
        )));
    }
    Ok(())
}

fn check_amount(amount: i64) -> Result<(), LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::Invalid(
            "amount must be a positive number of minor units".to_owned(),
        ));
    }
    Ok(())
}

fn check_write_off(req: &WriteOffRequest) -> Result<(), LedgerError> {
    check_id("order_id", &req.order_id)?;
    check_id("merchant_id", &req.merchant_id)?;
    check_id("merchant_order_no", &req.merchant_order_no)?;
    check_id("business_type", &req.business_type)?;
    check_amount(req.amount)?;
    if req.currency.len() != 3 || !req.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(LedgerError::Invalid(
            "currency must be three upper-case letters".to_owned(),
        ));
    }
    Ok(())
}

fn check_reverse(req: &ReverseRequest) -> Result<(), LedgerError> {
    check_id("reversal_id", &req.reversal_id)?;
    check_amount(req.amount)?;
    if req
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_LEN)
    {
        return Err(LedgerError::Invalid(format!(
            "reason must have at most {MAX_REASON_LEN} bytes"
        )));
    }
    Ok(())
}

impl Ledger {
    /// An empty ledger keeping at most `max_records` orders and as many reversals.
    pub(crate) fn new(max_records: usize, run_tag: u32) -> Self {
        Self {
            orders: HashMap::new(),
            reversals_by_id: HashMap::new(),
            run_tag,
            next_seq: 0,
            max_records,
        }
    }

    fn capacity_error(&self, what: &str) -> LedgerError {
        LedgerError::Capacity(format!(
            "the biller keeps at most {} {what}",
            self.max_records
        ))
    }

    /// Credits an order once: a repeat with the same amount and currency answers the same
    /// write-off. Every well-formed call counts as an attempt, failed ones included.
    pub(crate) fn write_off(
        &mut self,
        req: &WriteOffRequest,
        faults: WriteOffFaults,
        now: &str,
    ) -> Result<WriteOffView, LedgerError> {
        check_write_off(req)?;
        if !self.orders.contains_key(&req.order_id) && self.orders.len() >= self.max_records {
            return Err(self.capacity_error("orders"));
        }
        let record = self.orders.entry(req.order_id.clone()).or_default();
        record.attempts = record.attempts.saturating_add(1);
        if faults.permanent {
            return Err(LedgerError::AccountInvalid);
        }
        if record.attempts <= u64::from(faults.fail_first) || faults.fail_now {
            return Err(LedgerError::SystemError);
        }
        if let Some(existing) = &record.write_off {
            if existing.amount != req.amount || existing.currency != req.currency {
                return Err(LedgerError::Conflict(format!(
                    "order_id {} already written off with {} {}",
                    req.order_id, existing.amount, existing.currency
                )));
            }
            return Ok(existing.clone());
        }
        self.next_seq += 1;
        let view = WriteOffView {
            write_off_id: format!("wo{:08x}{:010}", self.run_tag, self.next_seq),
            order_id: req.order_id.clone(),
            merchant_id: req.merchant_id.clone(),
            amount: req.amount,
            currency: req.currency.clone(),
            reversed_amount: 0,
            status: WriteOffStatus::Applied,
            applied_at: now.to_owned(),
        };
        record.write_off = Some(view.clone());
        if faults.lose_answer {
            return Err(LedgerError::SystemError);
        }
        Ok(view)
    }

    /// The write-off of an order.
    pub(crate) fn get(&self, order_id: &str) -> Result<WriteOffView, LedgerError> {
        self.orders
            .get(order_id)
            .and_then(|r| r.write_off.clone())
            .ok_or_else(|| LedgerError::NotFound(order_id.to_owned()))
    }

    /// Takes back part of an order's credit; idempotent on reversal_id, which is unique across
    /// the biller. `refuse` is the refuse_reversals knob.
    pub(crate) fn reverse(
        &mut self,
        order_id: &str,
        req: &ReverseRequest,
        refuse: bool,
        now: &str,
    ) -> Result<ReversalView, LedgerError> {
        check_reverse(req)?;
        let write_off = self.get(order_id)?;
        if let Some((owner, index)) = self.reversals_by_id.get(&req.reversal_id) {
            let existing = self
                .orders
                .get(owner)
                .and_then(|r| r.reversals.get(*index))
                .ok_or_else(|| LedgerError::NotFound(req.reversal_id.clone()))?;
            // A repeat must be the same reversal; anything else is a client bug worth surfacing.
            if owner != order_id || existing.amount != req.amount {
                return Err(LedgerError::Conflict(format!(
                    "reversal_id {} already used for {} of order {owner}",
                    req.reversal_id, existing.amount
                )));
            }
            return Ok(existing.clone());
        }
        if refuse {
            return Err(LedgerError::ReversalRefused);
        }
        // Never negative: reversed_amount only grows up to amount, so no overflow either.
        let reversible = write_off.amount - write_off.reversed_amount;
        if req.amount > reversible {
            return Err(LedgerError::Exceeds {
                requested: req.amount,
                reversible,
            });
        }
        if self.reversals_by_id.len() >= self.max_records {
            return Err(self.capacity_error("reversals"));
        }
        let Some(record) = self.orders.get_mut(order_id) else {
            return Err(LedgerError::NotFound(order_id.to_owned()));
        };
        let Some(view) = record.write_off.as_mut() else {
            return Err(LedgerError::NotFound(order_id.to_owned()));
        };
        view.reversed_amount += req.amount;
        view.status = if view.reversed_amount == view.amount {
            WriteOffStatus::Reversed
        } else {
            WriteOffStatus::PartlyReversed
        };
        let reversal = ReversalView {
            reversal_id: req.reversal_id.clone(),
            order_id: order_id.to_owned(),
            amount: req.amount,
            reversed_at: now.to_owned(),
        };
        record.reversals.push(reversal.clone());
        self.reversals_by_id.insert(
            req.reversal_id.clone(),
            (order_id.to_owned(), record.reversals.len() - 1),
        );
        Ok(reversal)
    }

    /// Everything done for an order; empty lists and 0 attempts if unknown.
    pub(crate) fn audit(&self, order_id: &str) -> AuditView {
        let record = self.orders.get(order_id);
        AuditView {
            order_id: order_id.to_owned(),
            attempts: record.map_or(0, |r| r.attempts),
            write_offs: record
                .and_then(|r| r.write_off.clone())
                .into_iter()
                .collect(),
            reversals: record.map(|r| r.reversals.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
