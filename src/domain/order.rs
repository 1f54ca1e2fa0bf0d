//! The order and its state machine, as pure functions: `Order::apply` decides what a command
//! changes (or why it is refused) and `Order::on` folds a change into the order. No I/O here.

use super::event::{Change, ChangeKind};
use super::ids::{MerchantId, MerchantOrderNo, OrderId, PaySerialNo, RefundId};
use super::money::{Amount, Currency};
use super::payment::{
    ChannelPayment, ExtraReason, MAX_PAYMENTS_PER_ORDER, PaymentRole, ReportedPayment,
};
use super::refund::{MAX_REFUNDS_PER_ORDER, Refund, RefundOutcome, RefundRequest, RefundStatus};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Shortest and longest life of an unpaid order, in seconds.
pub const EXPIRE_SECONDS_RANGE: std::ops::RangeInclusive<i64> = 60..=86_400;
/// Longest order subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 128;
/// Longest notify URL, in bytes.
pub const MAX_NOTIFY_URL_LEN: usize = 512;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Created, not yet sent to a channel.
    Created,
    /// A payment was opened at the channel; its result is awaited.
    Paying,
    /// The channel confirmed the money.
    Paid,
    /// The channel reported the payment failed.
    Failed,
    /// Closed unpaid.
    Closed,
    /// Refunds reached the paid amount.
    Refunded,
}

impl OrderStatus {
    /// Every status, for metrics and tests.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Created,
        OrderStatus::Paying,
        OrderStatus::Paid,
        OrderStatus::Failed,
        OrderStatus::Closed,
        OrderStatus::Refunded,
    ];

    /// The status as written in the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Paying => "PAYING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Closed => "CLOSED",
            OrderStatus::Refunded => "REFUNDED",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What the utility sells with this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BusinessType {
    /// Metered bill payment.
    BillBuy,
    /// IoT meter top-up.
    IotBuy,
    /// IC-card top-up.
    ICBuy,
}

/// How the payer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayMethod {
    /// A QR code shown to the payer.
    Native,
    /// The payer's code is scanned; needs an auth code.
    Barcode,
    /// In-app browser JS API.
    Jsapi,
    /// Mini program.
    MiniProgram,
    /// Native app.
    App,
    /// Mobile web.
    H5,
    /// Cash at a counter.
    Cash,
}

impl PayMethod {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PayMethod::Native => "native",
            PayMethod::Barcode => "barcode",
            PayMethod::Jsapi => "jsapi",
            PayMethod::MiniProgram => "mini_program",
            PayMethod::App => "app",
            PayMethod::H5 => "h5",
            PayMethod::Cash => "cash",
        }
    }
}

/// Fulfillment at the utility's business system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FulfillmentStatus {
    /// Not yet confirmed by the business system.
    Pending,
    /// Credited.
    Succeeded,
    /// Given up.
    Failed,
}

/// Fulfillment progress of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfillment {
    /// Where fulfillment stands: PENDING until the business system credits the order; FAILED
    /// while attempts fail (the exception list: retried on a schedule) and once given up.
    pub status: FulfillmentStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Whether paycore fulfils this order (its merchant has a business system configured when
    /// the order was created). Without one, the merchant fulfils it and it stays PENDING.
    #[serde(default)]
    pub required: bool,
    /// The last attempt's error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Attempts ran out: the order is refunded by the original route.
    #[serde(default)]
    pub gave_up: bool,
}

/// How a write-off attempt at the business system ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FulfillmentOutcome {
    /// Credited.
    Succeeded,
    /// Not credited: `give_up` when it was the last attempt the schedule allows.
    Failed {
        /// The business system's answer, or why there was none.
        error: String,
        /// The last attempt: refund the order.
        give_up: bool,
    },
}

/// An order, as stored and as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// paycore's id.
    pub order_id: OrderId,
    /// Owner.
    pub merchant_id: MerchantId,
    /// The merchant's own number (unique per merchant).
    pub merchant_order_no: MerchantOrderNo,
    /// Amount in minor units.
    pub amount: Amount,
    /// ISO 4217 code.
    pub currency: Currency,
    /// What is sold.
    pub business_type: BusinessType,
    /// The channel the order is paid through.
    pub channel: String,
    /// Shown to the payer.
    pub subject: Option<String>,
    /// Where merchant notifications go.
    pub notify_url: Option<String>,
    /// Current status.
    pub status: OrderStatus,
    /// Set when payment starts; the same for every repeat of the pay call.
    pub pay_serial_no: Option<PaySerialNo>,
    /// How the payer pays.
    pub pay_method: Option<PayMethod>,
    /// What the channel gave the payer's device (QR URL and the like). Shared, not copied,
    /// when the order is cloned (the actor, its read cache and each write hold one).
    pub channel_payload: Option<std::sync::Arc<serde_json::Value>>,
    /// The channel's transaction number, once known.
    pub channel_trade_no: Option<String>,
    /// When the channel confirmed the money.
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    /// Why the payment failed, when it did.
    pub failure_reason: Option<String>,
    /// Sum of successful refunds, minor units.
    pub refunded_amount: i64,
    /// Fulfillment progress.
    pub fulfillment: Fulfillment,
    /// Every payment the channel reported for this order: the applied one, and any extra ones
    /// with their automatic refunds.
    #[serde(default)]
    pub payments: Vec<ChannelPayment>,
    /// Refunds, merchant and automatic, in the order they were made.
    #[serde(default)]
    pub refunds: Vec<Refund>,
    /// Increases by one with every change.
    pub version: u64,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// After this, an unpaid order can no longer be paid.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A validated request to create an order.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// Owner.
    pub merchant_id: MerchantId,
    /// Merchant's number.
    pub merchant_order_no: MerchantOrderNo,
    /// Amount.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// What is sold.
    pub business_type: BusinessType,
    /// Channel name (configured and allowed for the merchant: checked at the edge).
    pub channel: String,
    /// Subject.
    pub subject: Option<String>,
    /// Notify URL.
    pub notify_url: Option<String>,
    /// Seconds until an unpaid order expires, within [`EXPIRE_SECONDS_RANGE`].
    pub expire_seconds: i64,
    /// paycore fulfils the paid order at the merchant's business system.
    pub fulfillment_required: bool,
}

#[cfg(test)]
impl NewOrder {
    /// A valid request for tests: CNY, BillBuy, channel `sim`, 900 s expiry.
    pub fn for_test(merchant: &str, merchant_order_no: &str, amount: i64) -> Self {
        NewOrder {
            merchant_id: MerchantId::parse(merchant).expect("test merchant id"),
            merchant_order_no: MerchantOrderNo::parse(merchant_order_no).expect("test order no"),
            amount: Amount::new(amount).expect("test amount"),
            currency: Currency::Cny,
            business_type: BusinessType::BillBuy,
            channel: "sim".into(),
            subject: None,
            notify_url: None,
            expire_seconds: 900,
            fulfillment_required: false,
        }
    }
}

/// What an order can be told to do. Channel results come in as commands too.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A payment is about to be opened at the channel: recorded first, so that an answer lost
    /// on the way back (a timeout) can never leave an open payment that a later close forgets.
    RecordPayIntent {
        /// Our serial number for this attempt.
        pay_serial_no: PaySerialNo,
        /// Method.
        pay_method: PayMethod,
    },
    /// The channel opened a payment; the order starts paying.
    MarkPaying {
        /// Our serial number for this attempt.
        pay_serial_no: PaySerialNo,
        /// Method.
        pay_method: PayMethod,
        /// What the channel returned for the payer.
        channel_payload: serde_json::Value,
        /// The channel's transaction number.
        channel_trade_no: Option<String>,
    },
    /// The channel reports money taken (callback or query).
    MarkPaid(ReportedPayment),
    /// The channel reported a failed payment.
    MarkFailed {
        /// Channel's reason.
        reason: String,
    },
    /// Close an order that never reached a channel.
    Close,
    /// The channel confirmed the payment is closed and not made.
    MarkChannelClosed,
    /// The merchant asks for a refund.
    RequestRefund(RefundRequest),
    /// The channel's answer about a refund.
    SettleRefund {
        /// Which.
        refund_id: RefundId,
        /// How it ended.
        outcome: RefundOutcome,
    },
    /// How a write-off attempt at the business system ended.
    RecordFulfillment(FulfillmentOutcome),
}

/// Why a command was refused. The order is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The order is paid (or refunded).
    #[error("order is already paid")]
    AlreadyPaid,
    /// The order is closed.
    #[error("order is closed")]
    OrderClosed,
    /// The order's payment failed; it takes no new payment.
    #[error("order payment failed; create a new order")]
    OrderFailed,
    /// The unpaid order passed its expiry time.
    #[error("order expired")]
    OrderExpired,
    /// A refund needs a paid order.
    #[error("order is not paid")]
    OrderNotPaid,
    /// The refunds would exceed the paid amount.
    #[error("refunds would exceed the paid amount; {refundable} can still be refunded")]
    RefundExceedsPaid {
        /// What can still be refunded, minor units.
        refundable: i64,
    },
    /// The refund number was used for a different refund of this order.
    #[error("refund_no was already used for a refund of another amount")]
    RefundNoReused,
    /// The order has as many refunds as it can take.
    #[error("the order has reached its limit of {MAX_REFUNDS_PER_ORDER} refunds")]
    TooManyRefunds,
    /// The channel reported more payments than an order keeps; an operator is needed.
    #[error("the order already records {MAX_PAYMENTS_PER_ORDER} channel payments")]
    TooManyPayments,
    /// No such refund on this order.
    #[error("no such refund")]
    UnknownRefund,
    /// The command does not fit the order's status (e.g. a channel close for an order not paying).
    #[error("order in status {0:?} cannot take this command")]
    WrongStatus(OrderStatus),
    /// The business system has not credited the order yet (attempts go on): a refund now could
    /// pay the payer back for gas or water that is credited later.
    #[error("the order is not fulfilled yet; refund it once it is fulfilled or given up")]
    FulfillmentPending,
}

/// What the pay call should do next, decided from the order alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayStep {
    /// Open a payment at the channel, then `MarkPaying`.
    OpenAtChannel,
    /// Already paying: answer the stored attempt again.
    AlreadyPaying,
}

/// What the close call should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseStep {
    /// Close locally (`Command::Close`).
    Local,
    /// Ask the channel to close first, then `MarkChannelClosed`.
    AtChannel,
    /// Already closed: answer the order as it is.
    AlreadyClosed,
}

impl Order {
    /// A new order in status CREATED, with its `order.created` change at version 1.
    pub fn create(order_id: OrderId, new: NewOrder, now: OffsetDateTime) -> (Order, Change) {
        let order = Order {
            order_id,
            merchant_id: new.merchant_id,
            merchant_order_no: new.merchant_order_no,
            amount: new.amount,
            currency: new.currency,
            business_type: new.business_type,
            channel: new.channel,
            subject: new.subject,
            notify_url: new.notify_url,
            status: OrderStatus::Created,
            pay_serial_no: None,
            pay_method: None,
            channel_payload: None,
            channel_trade_no: None,
            paid_at: None,
            failure_reason: None,
            refunded_amount: 0,
            fulfillment: Fulfillment {
                status: FulfillmentStatus::Pending,
                attempts: 0,
                required: new.fulfillment_required,
                last_error: None,
                gave_up: false,
            },
            payments: Vec::new(),
            refunds: Vec::new(),
            version: 1,
            created_at: now,
            updated_at: now,
            expires_at: now + time::Duration::seconds(new.expire_seconds),
        };
        let change = Change {
            kind: ChangeKind::Created,
            version: 1,
            at: now,
        };
        (order, change)
    }

    /// Decides what a pay call does; refuses when the order cannot be paid.
    pub fn pay_step(&self, now: OffsetDateTime) -> Result<PayStep, Rejection> {
        match self.status {
            OrderStatus::Created if now >= self.expires_at => Err(Rejection::OrderExpired),
            OrderStatus::Created => Ok(PayStep::OpenAtChannel),
            OrderStatus::Paying => Ok(PayStep::AlreadyPaying),
            OrderStatus::Paid | OrderStatus::Refunded => Err(Rejection::AlreadyPaid),
            OrderStatus::Closed => Err(Rejection::OrderClosed),
            OrderStatus::Failed => Err(Rejection::OrderFailed),
        }
    }

    /// Decides what a close call does.
    pub fn close_step(&self) -> Result<CloseStep, Rejection> {
        match self.status {
            // A pay intent means a payment may be open at the channel: close it there first.
            OrderStatus::Created if self.payment_opened() => Ok(CloseStep::AtChannel),
            OrderStatus::Created => Ok(CloseStep::Local),
            OrderStatus::Paying => Ok(CloseStep::AtChannel),
            OrderStatus::Closed => Ok(CloseStep::AlreadyClosed),
            OrderStatus::Paid | OrderStatus::Refunded => Err(Rejection::AlreadyPaid),
            OrderStatus::Failed => Err(Rejection::OrderFailed),
        }
    }

    /// Whether a payment may have been opened at the channel (a pay intent is recorded).
    pub fn payment_opened(&self) -> bool {
        self.pay_serial_no.is_some()
    }

    /// Refunds still waiting for the channel.
    pub fn open_refunds(&self) -> usize {
        self.refunds.iter().filter(|r| r.status.is_open()).count()
    }

    /// Whether the order still has something to finish by itself: an unpaid order (to pay or
    /// close at expiry), an open refund, or a fulfillment to carry out.
    pub fn has_open_work(&self) -> bool {
        matches!(self.status, OrderStatus::Created | OrderStatus::Paying)
            || self.open_refunds() > 0
            || self.fulfillment_open()
    }

    /// A paid order that paycore must still fulfil (attempts go on).
    pub fn fulfillment_open(&self) -> bool {
        self.fulfillment.required
            && self.status == OrderStatus::Paid
            && self.fulfillment.status != FulfillmentStatus::Succeeded
            && !self.fulfillment.gave_up
    }

    /// Whether a merchant refund must first reverse the write-off at the business system.
    pub fn refund_needs_reversal(&self) -> bool {
        self.fulfillment.required && self.fulfillment.status == FulfillmentStatus::Succeeded
    }

    /// A refund of this order by id.
    pub fn refund(&self, id: &RefundId) -> Option<&Refund> {
        self.refunds.iter().find(|r| &r.refund_id == id)
    }

    /// What the merchant can still refund: the paid amount less succeeded and open merchant
    /// refunds. Zero unless paid.
    pub fn refundable(&self) -> i64 {
        if !matches!(self.status, OrderStatus::Paid | OrderStatus::Refunded) {
            return 0;
        }
        let open: i64 = self
            .refunds
            .iter()
            .filter(|r| r.returns_order_payment() && r.status.is_open())
            .fold(0i64, |acc, r| acc.saturating_add(r.amount));
        self.amount
            .minor_units()
            .saturating_sub(self.refunded_amount)
            .saturating_sub(open)
    }

    /// Decides the changes a command makes. An empty list means the command was already applied
    /// (a repeat), which is not an error: channels repeat themselves.
    pub fn apply(&self, cmd: &Command, now: OffsetDateTime) -> Result<Vec<Change>, Rejection> {
        use OrderStatus::*;
        let mut kinds = Vec::with_capacity(2);
        match (cmd, self.status) {
            (
                Command::RecordPayIntent {
                    pay_serial_no,
                    pay_method,
                },
                Created,
            ) => {
                if self.pay_serial_no.is_none() {
                    kinds.push(ChangeKind::PayIntentRecorded {
                        pay_serial_no: pay_serial_no.clone(),
                        pay_method: *pay_method,
                    });
                }
            }
            (Command::RecordPayIntent { .. }, Paying) => {}
            (Command::RecordPayIntent { .. }, st) => return Err(self.refusal_for_payment(st)),

            (
                Command::MarkPaying {
                    pay_serial_no,
                    pay_method,
                    channel_payload,
                    channel_trade_no,
                },
                Created,
            ) => {
                kinds.push(ChangeKind::Paying {
                    pay_serial_no: self
                        .pay_serial_no
                        .clone()
                        .unwrap_or_else(|| pay_serial_no.clone()),
                    pay_method: *pay_method,
                    channel_payload: std::sync::Arc::new(channel_payload.clone()),
                    channel_trade_no: channel_trade_no.clone(),
                });
            }
            (Command::MarkPaying { .. }, Paying) => {}
            (Command::MarkPaying { .. }, st) => return Err(self.refusal_for_payment(st)),

            (Command::MarkPaid(reported), st) => {
                self.decide_payment(reported, st, now, &mut kinds)?
            }

            (Command::MarkFailed { reason }, Paying) => kinds.push(ChangeKind::Failed {
                reason: reason.clone(),
            }),
            (Command::MarkFailed { reason }, Created) if self.payment_opened() => {
                kinds.push(ChangeKind::Failed {
                    reason: reason.clone(),
                })
            }
            // A failure report for an order that is past paying is stale: the order keeps what
            // it knows (a paid order stays paid).
            (Command::MarkFailed { .. }, _) => {}

            (Command::Close, Created) if !self.payment_opened() => kinds.push(ChangeKind::Closed),
            (Command::Close, Closed) => {}
            (Command::Close, st) => return Err(self.refusal_for_close(st)),

            (Command::MarkChannelClosed, Paying | Created) => kinds.push(ChangeKind::Closed),
            (Command::MarkChannelClosed, Closed) => {}
            (Command::MarkChannelClosed, st) => return Err(Rejection::WrongStatus(st)),

            (Command::RequestRefund(req), st) => self.decide_refund(req, st, now, &mut kinds)?,

            (Command::SettleRefund { refund_id, outcome }, _) => {
                let refund = self.refund(refund_id).ok_or(Rejection::UnknownRefund)?;
                if refund.status.is_open() {
                    kinds.extend(self.settle(refund, outcome)?);
                }
            }

            (Command::RecordFulfillment(outcome), Paid) if self.fulfillment_open() => {
                self.decide_fulfillment(outcome, now, &mut kinds)?
            }
            // A result for an order fulfilled, given up, refunded or never to be fulfilled
            // here: a repeat, nothing to change.
            (Command::RecordFulfillment(_), _) => {}
        }
        Ok(kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Change {
                kind,
                version: self.version + 1 + i as u64,
                at: now,
            })
            .collect())
    }

    /// A reported payment is applied (it pays the order) or recorded as extra and refunded.
    fn decide_payment(
        &self,
        p: &ReportedPayment,
        st: OrderStatus,
        now: OffsetDateTime,
        kinds: &mut Vec<ChangeKind>,
    ) -> Result<(), Rejection> {
        use OrderStatus::*;
        if self
            .payments
            .iter()
            .any(|x| x.channel_trade_no == p.channel_trade_no)
        {
            return Ok(()); // a repeat of a payment already recorded
        }
        if self.payments.len() >= MAX_PAYMENTS_PER_ORDER {
            return Err(Rejection::TooManyPayments);
        }
        let unpaid = matches!(st, Created | Paying);
        let extra = if p.currency != self.currency.code() {
            Some(ExtraReason::CurrencyMismatch)
        } else if p.amount != self.amount.minor_units() {
            Some(ExtraReason::AmountMismatch)
        } else if !unpaid {
            Some(match st {
                Closed | Failed => ExtraReason::OrderNotPayable,
                _ => ExtraReason::DuplicateCharge,
            })
        } else if self
            .channel_trade_no
            .as_ref()
            .is_some_and(|t| t != &p.channel_trade_no)
        {
            // The channel named another trade number when it opened the payment.
            Some(ExtraReason::DuplicateCharge)
        } else {
            None
        };
        let mut payment = ChannelPayment {
            channel_trade_no: p.channel_trade_no.clone(),
            amount: p.amount,
            currency: p.currency.clone(),
            paid_at: p.paid_at,
            recorded_at: now,
            role: PaymentRole::Applied,
            reason: None,
            refund_id: None,
        };
        let Some(reason) = extra else {
            if st == Created {
                // The channel charged before our PAYING was stored (a crash in between, or a
                // lost answer): the money is real, so the order goes through PAYING to PAID.
                kinds.push(ChangeKind::Paying {
                    pay_serial_no: self
                        .pay_serial_no
                        .clone()
                        .unwrap_or_else(PaySerialNo::generate),
                    pay_method: self.pay_method.unwrap_or(PayMethod::Native),
                    channel_payload: std::sync::Arc::new(serde_json::Value::Null),
                    channel_trade_no: Some(p.channel_trade_no.clone()),
                });
            }
            kinds.push(ChangeKind::Paid { payment });
            return Ok(());
        };
        if self.refunds.len() >= MAX_REFUNDS_PER_ORDER {
            return Err(Rejection::TooManyRefunds);
        }
        let refund_id = RefundId::new(&self.order_id, self.refunds.len() + 1);
        payment.role = PaymentRole::Extra;
        payment.reason = Some(reason);
        payment.refund_id = Some(refund_id.clone());
        let refund = Refund {
            refund_id,
            refund_no: None,
            amount: p.amount,
            reason: Some(format!("automatic refund: {}", reason.as_str())),
            status: RefundStatus::Pending,
            channel_trade_no: Some(p.channel_trade_no.clone()),
            automatic: true,
            for_fulfillment: false,
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        kinds.push(ChangeKind::ExtraPaymentRecorded { payment, refund });
        if unpaid
            && matches!(
                reason,
                ExtraReason::AmountMismatch | ExtraReason::CurrencyMismatch
            )
        {
            // The payer was charged wrongly: that attempt cannot pay the order. The charge is
            // refunded; the order fails and takes no other payment.
            kinds.push(ChangeKind::Failed {
                reason: format!(
                    "the channel charged {} {}; the order is {} {}",
                    p.amount,
                    p.currency,
                    self.amount.minor_units(),
                    self.currency.code()
                ),
            });
        }
        Ok(())
    }

    fn decide_fulfillment(
        &self,
        outcome: &FulfillmentOutcome,
        now: OffsetDateTime,
        kinds: &mut Vec<ChangeKind>,
    ) -> Result<(), Rejection> {
        let attempts = self.fulfillment.attempts.saturating_add(1);
        match outcome {
            FulfillmentOutcome::Succeeded => kinds.push(ChangeKind::Fulfilled { attempts }),
            FulfillmentOutcome::Failed { error, give_up } => {
                kinds.push(ChangeKind::FulfillmentFailed {
                    attempts,
                    error: error.clone(),
                });
                if *give_up {
                    // What the payer paid and was not refunded yet goes back by the original
                    // route, through the same durable refund path as every refund.
                    let amount = self.refundable();
                    let refund = (amount > 0).then(|| Refund {
                        refund_id: RefundId::new(&self.order_id, self.refunds.len() + 1),
                        refund_no: None,
                        amount,
                        reason: Some(format!(
                            "automatic refund: fulfillment given up after {attempts} attempts"
                        )),
                        status: RefundStatus::Pending,
                        channel_trade_no: None,
                        automatic: true,
                        for_fulfillment: true,
                        failure_reason: None,
                        created_at: now,
                        updated_at: now,
                    });
                    if refund.is_some() && self.refunds.len() >= MAX_REFUNDS_PER_ORDER {
                        return Err(Rejection::TooManyRefunds);
                    }
                    kinds.push(ChangeKind::FulfillmentGivenUp { refund });
                }
            }
        }
        Ok(())
    }

    fn decide_refund(
        &self,
        req: &RefundRequest,
        st: OrderStatus,
        now: OffsetDateTime,
        kinds: &mut Vec<ChangeKind>,
    ) -> Result<(), Rejection> {
        if !matches!(st, OrderStatus::Paid | OrderStatus::Refunded) {
            return Err(Rejection::OrderNotPaid);
        }
        if let Some(existing) = self
            .refunds
            .iter()
            .find(|r| r.refund_no.as_ref() == Some(&req.refund_no))
        {
            return if existing.amount == req.amount {
                Ok(()) // the same refund asked again
            } else {
                Err(Rejection::RefundNoReused)
            };
        }
        if self.refunds.len() >= MAX_REFUNDS_PER_ORDER {
            return Err(Rejection::TooManyRefunds);
        }
        if self.fulfillment_open() {
            return Err(Rejection::FulfillmentPending);
        }
        let refundable = self.refundable();
        if req.amount <= 0 || req.amount > refundable {
            return Err(Rejection::RefundExceedsPaid { refundable });
        }
        kinds.push(ChangeKind::RefundRequested {
            refund: Refund {
                refund_id: RefundId::new(&self.order_id, self.refunds.len() + 1),
                refund_no: Some(req.refund_no.clone()),
                amount: req.amount,
                reason: req.reason.clone(),
                status: RefundStatus::Pending,
                channel_trade_no: None,
                automatic: false,
                for_fulfillment: false,
                failure_reason: None,
                created_at: now,
                updated_at: now,
            },
        });
        Ok(())
    }

    fn settle(
        &self,
        refund: &Refund,
        outcome: &RefundOutcome,
    ) -> Result<Option<ChangeKind>, Rejection> {
        let (status, failure_reason) = match outcome {
            RefundOutcome::Processing if refund.status == RefundStatus::Processing => {
                return Ok(None);
            }
            RefundOutcome::Processing => (RefundStatus::Processing, None),
            RefundOutcome::Succeeded => (RefundStatus::Succeeded, None),
            RefundOutcome::Failed(why) => (RefundStatus::Failed, Some(why.clone())),
        };
        let mut refunded_amount = self.refunded_amount;
        if status == RefundStatus::Succeeded && refund.returns_order_payment() {
            refunded_amount = refunded_amount
                .checked_add(refund.amount)
                .filter(|total| *total <= self.amount.minor_units())
                .ok_or(Rejection::RefundExceedsPaid { refundable: 0 })?;
        }
        Ok(Some(ChangeKind::RefundSettled {
            refund_id: refund.refund_id.clone(),
            status,
            failure_reason,
            refunded_amount,
            fully_refunded: self.status == OrderStatus::Paid
                && refunded_amount == self.amount.minor_units(),
        }))
    }

    fn refusal_for_payment(&self, st: OrderStatus) -> Rejection {
        match st {
            OrderStatus::Paid | OrderStatus::Refunded => Rejection::AlreadyPaid,
            OrderStatus::Closed => Rejection::OrderClosed,
            OrderStatus::Failed => Rejection::OrderFailed,
            other => Rejection::WrongStatus(other),
        }
    }

    fn refusal_for_close(&self, st: OrderStatus) -> Rejection {
        match st {
            OrderStatus::Paid | OrderStatus::Refunded => Rejection::AlreadyPaid,
            OrderStatus::Failed => Rejection::OrderFailed,
            other => Rejection::WrongStatus(other),
        }
    }

    /// Folds one change into the order. Changes come from `apply` (or storage), in version order.
    pub fn on(&mut self, change: &Change) {
        match &change.kind {
            ChangeKind::Created => {}
            ChangeKind::PayIntentRecorded {
                pay_serial_no,
                pay_method,
            } => {
                self.pay_serial_no = Some(pay_serial_no.clone());
                self.pay_method = Some(*pay_method);
            }
            ChangeKind::Paying {
                pay_serial_no,
                pay_method,
                channel_payload,
                channel_trade_no,
            } => {
                self.status = OrderStatus::Paying;
                self.pay_serial_no = Some(pay_serial_no.clone());
                self.pay_method = Some(*pay_method);
                self.channel_payload = Some(channel_payload.clone());
                self.channel_trade_no = channel_trade_no.clone();
            }
            ChangeKind::Paid { payment } => {
                self.status = OrderStatus::Paid;
                self.channel_trade_no = Some(payment.channel_trade_no.clone());
                self.paid_at = Some(payment.paid_at);
                self.payments.push(payment.clone());
            }
            ChangeKind::Failed { reason } => {
                self.status = OrderStatus::Failed;
                self.failure_reason = Some(reason.clone());
            }
            ChangeKind::Closed => self.status = OrderStatus::Closed,
            ChangeKind::ExtraPaymentRecorded { payment, refund } => {
                self.payments.push(payment.clone());
                self.refunds.push(refund.clone());
            }
            ChangeKind::RefundRequested { refund } => self.refunds.push(refund.clone()),
            ChangeKind::Fulfilled { attempts } => {
                self.fulfillment.status = FulfillmentStatus::Succeeded;
                self.fulfillment.attempts = *attempts;
                self.fulfillment.last_error = None;
            }
            ChangeKind::FulfillmentFailed { attempts, error } => {
                self.fulfillment.status = FulfillmentStatus::Failed;
                self.fulfillment.attempts = *attempts;
                self.fulfillment.last_error = Some(error.clone());
            }
            ChangeKind::FulfillmentGivenUp { refund } => {
                self.fulfillment.gave_up = true;
                self.refunds.extend(refund.iter().cloned());
            }
            ChangeKind::RefundSettled {
                refund_id,
                status,
                failure_reason,
                refunded_amount,
                fully_refunded,
            } => {
                if let Some(r) = self.refunds.iter_mut().find(|r| &r.refund_id == refund_id) {
                    r.status = *status;
                    r.failure_reason = failure_reason.clone();
                    r.updated_at = change.at;
                }
                self.refunded_amount = *refunded_amount;
                if *fully_refunded {
                    self.status = OrderStatus::Refunded;
                }
            }
        }
        self.version = change.version;
        self.updated_at = change.at;
    }
}

/// Checks a subject: at most [`MAX_SUBJECT_CHARS`] characters, no control characters.
pub fn parse_subject(s: &str) -> Result<String, &'static str> {
    if s.chars().count() > MAX_SUBJECT_CHARS {
        Err("subject is longer than 128 characters")
    } else if s.chars().any(char::is_control) {
        Err("subject must not contain control characters")
    } else {
        Ok(s.to_string())
    }
}

/// Checks a notify URL: `http://` or `https://`, a host, at most [`MAX_NOTIFY_URL_LEN`] bytes,
/// and a host the notifier may call under `policy`: an IP literal (v4, or v6 in brackets) in a
/// refused range, or the name `localhost`, is refused here; other names are checked again,
/// address by address, after DNS at delivery. The host is read as the HTTP client reads it
/// (WHATWG URL parsing: `http://2130706433/` is 127.0.0.1), so what is checked is what would
/// be connected to. The merchant's text is kept as given.
pub fn parse_notify_url(s: &str, policy: &super::address::AddressPolicy) -> Result<String, String> {
    const NOT_A_URL: &str = "notify_url must be an absolute http(s) URL";
    if s.len() > MAX_NOTIFY_URL_LEN {
        return Err("notify_url is longer than 512 bytes".into());
    }
    let shaped = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .is_some_and(|rest| {
            !rest.is_empty()
                && !rest.starts_with('/')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if !shaped {
        return Err(NOT_A_URL.into());
    }
    let url = url::Url::parse(s).map_err(|_| NOT_A_URL.to_string())?;
    let host = url.host().ok_or_else(|| NOT_A_URL.to_string())?;
    policy
        .check_host(&host)
        .map_err(|why| format!("notify_url {why}"))?;
    Ok(s.to_string())
}

#[cfg(test)]
#[path = "order_tests.rs"]
mod tests;
