//! The simulator's in-memory records and the channel's business rules over them: payments
//! (one per out_trade_no), their charge and refunds, and the transitions create, settle,
//! close and refund. Deterministic: randomness and time are decided by callers.

use std::collections::HashMap;

use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::protocol::{
    self, AuditView, CallbackBody, ChargeRecord, CreatePaymentRequest, PaymentStatus, PaymentView,
    RefundRequest, RefundStatus, RefundView,
};

/// Longest accepted merchant identifier (out_trade_no, out_refund_no), as real channels cap it.
pub(crate) const MAX_ID_LEN: usize = 64;
/// Most refunds kept per payment; real channels cap partial refunds per order (50 for WeChat).
pub(crate) const MAX_REFUNDS_PER_PAYMENT: usize = 50;

/// Why the channel refuses an operation.
#[derive(Debug, Error, PartialEq)]
pub(crate) enum LedgerError {
    #[error("{0}")]
    Invalid(String),
    #[error("no payment for out_trade_no {0}")]
    NotFound(String),
    #[error("payment is paid and cannot be closed")]
    OrderPaid,
    #[error("payment is closed")]
    OrderClosed,
    #[error("out_trade_no {0} already used with a different amount or currency")]
    OutTradeNoUsed(String),
    #[error("refund of {requested} exceeds the refundable {refundable}")]
    RefundExceeds { requested: i64, refundable: i64 },
    #[error("payment is not paid")]
    NotPaid,
    #[error("{0}")]
    Capacity(String),
    #[error("the channel failed internally; query the refund before trying again")]
    SystemError,
}

impl LedgerError {
    /// Wire code of this refusal.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => protocol::INVALID_REQUEST,
            Self::NotFound(_) => protocol::NOT_FOUND,
            Self::OrderPaid => protocol::ORDERPAID,
            Self::OrderClosed => protocol::ORDERCLOSED,
            Self::OutTradeNoUsed(_) => protocol::OUT_TRADE_NO_USED,
            Self::RefundExceeds { .. } => protocol::REFUND_EXCEEDS,
            Self::NotPaid => protocol::NOT_PAID,
            Self::Capacity(_) => protocol::CAPACITY,
            Self::SystemError => protocol::SYSTEMERROR,
        }
    }
}

/// How a payment ends when its pay delay elapses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settlement {
    /// Paid; the payer is charged the amount asked plus `surcharge` (0 unless the wrong-amount
    /// knob fired).
    Success {
        surcharge: i64,
    },
    Failure(String),
}

/// Result of a create: a new payment (to be scheduled) or the existing one (idempotent repeat).
#[derive(Debug, PartialEq)]
pub(crate) enum Created {
    New(PaymentView),
    Existing(PaymentView),
}

/// A callback to send: what and where.
#[derive(Debug, PartialEq)]
pub(crate) struct Notice {
    pub(crate) body: CallbackBody,
    pub(crate) notify_url: String,
}

struct Payment {
    view: PaymentView,
    notify_url: String,
    refunds: Vec<RefundView>,
}

/// All records of one simulator.
pub(crate) struct Ledger {
    payments: HashMap<String, Payment>,
    /// out_refund_no -> (out_trade_no, index in that payment's refunds).
    refunds_by_no: HashMap<String, (String, usize)>,
    /// Failed attempts so far per out_refund_no (the refund error knobs); bounded by
    /// `max_payments` entries, after which new refunds are not failed on purpose.
    refund_attempts: HashMap<String, u32>,
    next_seq: u64,
    max_payments: usize,
}

/// The refund error knobs, as the server passes them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RefundFaults {
    /// The first this many attempts of each out_refund_no fail with SYSTEMERROR.
    pub(crate) errors_per_refund: u32,
    /// Those failing attempts record the refund first: the answer is lost, not the refund.
    pub(crate) after_recording: bool,
}

/// Current time in RFC 3339 UTC.
pub(crate) fn now_rfc3339() -> String {
    // Formatting only fails for years outside 0..=9999, which the system clock never gives.
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

fn check_id(field: &str, value: &str) -> Result<(), LedgerError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(LedgerError::Invalid(format!(
            "{field} must have 1 to {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_create(req: &CreatePaymentRequest) -> Result<(), LedgerError> {
    check_id("out_trade_no", &req.out_trade_no)?;
    if req.amount <= 0 {
        return Err(LedgerError::Invalid("amount must be positive".to_owned()));
    }
    if req.currency.is_empty() || req.pay_method.is_empty() {
        return Err(LedgerError::Invalid(
            "currency and pay_method are required".to_owned(),
        ));
    }
    if !(req.notify_url.starts_with("http://") || req.notify_url.starts_with("https://")) {
        return Err(LedgerError::Invalid(
            "notify_url must be an http(s) URL".to_owned(),
        ));
    }
    Ok(())
}

impl Ledger {
    /// An empty ledger keeping at most `max_payments` payments.
    pub(crate) fn new(max_payments: usize) -> Self {
        Self {
            payments: HashMap::new(),
            refunds_by_no: HashMap::new(),
            refund_attempts: HashMap::new(),
            next_seq: 0,
            max_payments,
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.next_seq += 1;
        // The random part keeps ids of distinct simulator runs apart, as a client may keep them.
        format!("{prefix}{:010}{:08x}", self.next_seq, rand::random::<u32>())
    }

    /// Creates a payment, or answers the existing one for the same out_trade_no.
    pub(crate) fn create(&mut self, req: &CreatePaymentRequest) -> Result<Created, LedgerError> {
        check_create(req)?;
        if let Some(existing) = self.payments.get(&req.out_trade_no) {
            if existing.view.amount != req.amount || existing.view.currency != req.currency {
                return Err(LedgerError::OutTradeNoUsed(req.out_trade_no.clone()));
            }
            if existing.view.status == PaymentStatus::Closed {
                return Err(LedgerError::OrderClosed);
            }
            return Ok(Created::Existing(existing.view.clone()));
        }
        if self.payments.len() >= self.max_payments {
            return Err(LedgerError::Capacity(format!(
                "the simulator keeps at most {} payments",
                self.max_payments
            )));
        }
        let trade_no = self.next_id("sim");
        let view = PaymentView {
            code_url: Some(format!("sim://pay/{trade_no}")),
            trade_no,
            out_trade_no: req.out_trade_no.clone(),
            amount: req.amount,
            currency: req.currency.clone(),
            status: PaymentStatus::Notpay,
            paid_at: None,
            refunded_amount: 0,
            failure_reason: None,
            charges: Vec::new(),
        };
        let payment = Payment {
            view: view.clone(),
            notify_url: req.notify_url.clone(),
            refunds: Vec::new(),
        };
        self.payments.insert(req.out_trade_no.clone(), payment);
        Ok(Created::New(view))
    }

    /// The current payment for an out_trade_no.
    pub(crate) fn get(&self, out_trade_no: &str) -> Result<PaymentView, LedgerError> {
        self.payments
            .get(out_trade_no)
            .map(|p| p.view.clone())
            .ok_or_else(|| LedgerError::NotFound(out_trade_no.to_owned()))
    }

    /// Ends a NOTPAY payment as decided; None (nothing to notify) if it was closed meanwhile.
    pub(crate) fn settle(
        &mut self,
        out_trade_no: &str,
        trade_no: &str,
        outcome: Settlement,
    ) -> Option<Notice> {
        let payment = self.payments.get_mut(out_trade_no)?;
        if payment.view.trade_no != trade_no || payment.view.status != PaymentStatus::Notpay {
            return None;
        }
        let now = now_rfc3339();
        let mut amount = payment.view.amount;
        match outcome {
            Settlement::Success { surcharge } => {
                payment.view.status = PaymentStatus::Success;
                payment.view.paid_at = Some(now.clone());
                let charged = payment.view.amount.saturating_add(surcharge);
                amount = charged;
                payment.view.charges.push(ChargeRecord {
                    trade_no: trade_no.to_owned(),
                    out_trade_no: out_trade_no.to_owned(),
                    amount: charged,
                    currency: payment.view.currency.clone(),
                    charged_at: now,
                });
            }
            Settlement::Failure(reason) => {
                payment.view.status = PaymentStatus::Payerror;
                payment.view.failure_reason = Some(reason);
            }
        }
        let view = &payment.view;
        Some(Notice {
            body: CallbackBody {
                event_id: format!("evt_{trade_no}"),
                trade_no: view.trade_no.clone(),
                out_trade_no: view.out_trade_no.clone(),
                amount,
                currency: view.currency.clone(),
                status: view.status,
                paid_at: view.paid_at.clone(),
                failure_reason: view.failure_reason.clone(),
            },
            notify_url: payment.notify_url.clone(),
        })
    }

    /// Charges a paid payment a second time, under a new trade_no (a duplicate charge, as
    /// channels occasionally make); None if the payment is not paid.
    pub(crate) fn charge_again(&mut self, out_trade_no: &str) -> Option<Notice> {
        let trade_no = self.next_id("sim");
        let payment = self.payments.get_mut(out_trade_no)?;
        if payment.view.status != PaymentStatus::Success {
            return None;
        }
        let amount = payment.view.charges.first()?.amount;
        let now = now_rfc3339();
        payment.view.charges.push(ChargeRecord {
            trade_no: trade_no.clone(),
            out_trade_no: out_trade_no.to_owned(),
            amount,
            currency: payment.view.currency.clone(),
            charged_at: now.clone(),
        });
        Some(Notice {
            body: CallbackBody {
                event_id: format!("evt_{trade_no}"),
                trade_no,
                out_trade_no: out_trade_no.to_owned(),
                amount,
                currency: payment.view.currency.clone(),
                status: PaymentStatus::Success,
                paid_at: Some(now),
                failure_reason: None,
            },
            notify_url: payment.notify_url.clone(),
        })
    }

    /// Closes a NOTPAY or PAYERROR payment; idempotent on CLOSED; refuses a paid one.
    pub(crate) fn close(&mut self, out_trade_no: &str) -> Result<PaymentView, LedgerError> {
        let payment = self
            .payments
            .get_mut(out_trade_no)
            .ok_or_else(|| LedgerError::NotFound(out_trade_no.to_owned()))?;
        match payment.view.status {
            PaymentStatus::Success => Err(LedgerError::OrderPaid),
            PaymentStatus::Notpay | PaymentStatus::Payerror | PaymentStatus::Closed => {
                payment.view.status = PaymentStatus::Closed;
                Ok(payment.view.clone())
            }
        }
    }

    /// Refunds part of one charge of a paid payment; idempotent on out_refund_no. With the
    /// fault knobs, the first attempts of a refund fail with SYSTEMERROR (after recording it,
    /// when `after_recording`).
    pub(crate) fn refund(
        &mut self,
        req: &RefundRequest,
        faults: RefundFaults,
    ) -> Result<RefundView, LedgerError> {
        check_id("out_trade_no", &req.out_trade_no)?;
        check_id("out_refund_no", &req.out_refund_no)?;
        if req.amount <= 0 {
            return Err(LedgerError::Invalid("amount must be positive".to_owned()));
        }
        let inject = self.inject_refund_fault(&req.out_refund_no, faults);
        if inject && !faults.after_recording {
            return Err(LedgerError::SystemError);
        }
        let view = self.record_refund(req)?;
        if inject {
            return Err(LedgerError::SystemError);
        }
        Ok(view)
    }

    /// Whether this attempt of the refund fails on purpose (counting it).
    fn inject_refund_fault(&mut self, out_refund_no: &str, faults: RefundFaults) -> bool {
        if faults.errors_per_refund == 0 {
            return false;
        }
        if !self.refund_attempts.contains_key(out_refund_no)
            && self.refund_attempts.len() >= self.max_payments
        {
            return false;
        }
        let seen = self
            .refund_attempts
            .entry(out_refund_no.to_owned())
            .or_insert(0);
        if *seen < faults.errors_per_refund {
            *seen += 1;
            true
        } else {
            false
        }
    }

    fn record_refund(&mut self, req: &RefundRequest) -> Result<RefundView, LedgerError> {
        if let Some((out_trade_no, index)) = self.refunds_by_no.get(&req.out_refund_no) {
            let existing = self
                .payments
                .get(out_trade_no)
                .and_then(|p| p.refunds.get(*index))
                .ok_or_else(|| LedgerError::NotFound(req.out_refund_no.clone()))?;
            // A repeat must be the same refund; anything else is a client bug worth surfacing.
            let same_charge = req
                .trade_no
                .as_ref()
                .is_none_or(|t| t == &existing.trade_no);
            if existing.out_trade_no != req.out_trade_no
                || existing.amount != req.amount
                || !same_charge
            {
                return Err(LedgerError::Invalid(format!(
                    "out_refund_no {} already used for a different refund",
                    req.out_refund_no
                )));
            }
            return Ok(existing.clone());
        }
        let payment = self
            .payments
            .get(&req.out_trade_no)
            .ok_or_else(|| LedgerError::NotFound(req.out_trade_no.clone()))?;
        match payment.view.status {
            PaymentStatus::Success => {}
            PaymentStatus::Closed => return Err(LedgerError::OrderClosed),
            PaymentStatus::Notpay | PaymentStatus::Payerror => return Err(LedgerError::NotPaid),
        }
        let charge = match &req.trade_no {
            None => payment.view.charges.first(),
            Some(t) => payment.view.charges.iter().find(|c| &c.trade_no == t),
        }
        .ok_or_else(|| {
            LedgerError::NotFound(
                req.trade_no
                    .clone()
                    .unwrap_or_else(|| req.out_trade_no.clone()),
            )
        })?;
        let refunded: i64 = payment
            .refunds
            .iter()
            .filter(|r| r.trade_no == charge.trade_no)
            .map(|r| r.amount)
            .sum();
        let refundable = charge.amount - refunded;
        if req.amount > refundable {
            return Err(LedgerError::RefundExceeds {
                requested: req.amount,
                refundable,
            });
        }
        if payment.refunds.len() >= MAX_REFUNDS_PER_PAYMENT {
            return Err(LedgerError::Capacity(format!(
                "at most {MAX_REFUNDS_PER_PAYMENT} refunds per payment"
            )));
        }
        let trade_no = charge.trade_no.clone();
        let refund = RefundView {
            refund_id: self.next_id("simrf"),
            out_refund_no: req.out_refund_no.clone(),
            out_trade_no: req.out_trade_no.clone(),
            trade_no,
            amount: req.amount,
            status: RefundStatus::Success,
            refunded_at: now_rfc3339(),
        };
        let Some(payment) = self.payments.get_mut(&req.out_trade_no) else {
            return Err(LedgerError::NotFound(req.out_trade_no.clone()));
        };
        payment.view.refunded_amount += req.amount;
        payment.refunds.push(refund.clone());
        self.refunds_by_no.insert(
            req.out_refund_no.clone(),
            (req.out_trade_no.clone(), payment.refunds.len() - 1),
        );
        Ok(refund)
    }

    /// A refund by its out_refund_no.
    pub(crate) fn get_refund(&self, out_refund_no: &str) -> Result<RefundView, LedgerError> {
        self.refunds_by_no
            .get(out_refund_no)
            .and_then(|(out_trade_no, i)| self.payments.get(out_trade_no)?.refunds.get(*i))
            .cloned()
            .ok_or_else(|| LedgerError::NotFound(out_refund_no.to_owned()))
    }

    /// Everything done for a merchant order; empty lists if unknown.
    pub(crate) fn audit(&self, out_trade_no: &str) -> AuditView {
        let payment = self.payments.get(out_trade_no);
        AuditView {
            out_trade_no: out_trade_no.to_owned(),
            payments: payment.map(|p| p.view.clone()).into_iter().collect(),
            charges: payment.map(|p| p.view.charges.clone()).unwrap_or_default(),
            refunds: payment.map(|p| p.refunds.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
