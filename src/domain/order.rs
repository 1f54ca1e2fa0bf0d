//! The order and its state machine, as pure functions: `Order::apply` decides what a command
//! changes (or why it is refused) and `Order::on` folds a change into the order. No I/O here.

use super::event::{Change, ChangeKind};
use super::ids::{MerchantId, MerchantOrderNo, OrderId, PaySerialNo};
use super::money::{Amount, Currency};
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
    /// Where fulfillment stands.
    pub status: FulfillmentStatus,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A payment the channel confirmed after the order could no longer take it (closed or failed):
/// kept on the order so the money is never lost, and refunded by the original route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatePayment {
    /// The channel's transaction number.
    pub channel_trade_no: String,
    /// What the channel says was charged.
    pub amount: i64,
    /// When we learned of it.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// Whether the automatic refund is done.
    pub refunded: bool,
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
    /// What the channel gave the payer's device (QR URL and the like).
    pub channel_payload: Option<serde_json::Value>,
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
    /// A payment that arrived after the order closed, and its refund.
    pub late_payment: Option<LatePayment>,
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
        }
    }
}

/// What an order can be told to do. Channel results come in as commands too.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
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
    /// The channel confirmed the money.
    MarkPaid {
        /// Channel transaction number.
        channel_trade_no: String,
        /// Amount the channel charged.
        amount: i64,
        /// When.
        paid_at: OffsetDateTime,
    },
    /// The channel reported a failed payment.
    MarkFailed {
        /// Channel's reason.
        reason: String,
    },
    /// Close an order that never reached a channel.
    Close,
    /// The channel confirmed the payment is closed and not made.
    MarkChannelClosed,
    /// The automatic refund of a late payment went through.
    MarkLatePaymentRefunded,
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
    /// The channel reported an amount other than the order's.
    #[error("channel amount {reported} differs from order amount {expected}")]
    AmountMismatch {
        /// Order amount.
        expected: i64,
        /// Channel amount.
        reported: i64,
    },
    /// The command does not fit the order's status (e.g. a channel close for an order not paying).
    #[error("order in status {0:?} cannot take this command")]
    WrongStatus(OrderStatus),
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
            },
            late_payment: None,
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
            OrderStatus::Created => Ok(CloseStep::Local),
            OrderStatus::Paying => Ok(CloseStep::AtChannel),
            OrderStatus::Closed => Ok(CloseStep::AlreadyClosed),
            OrderStatus::Paid | OrderStatus::Refunded => Err(Rejection::AlreadyPaid),
            OrderStatus::Failed => Err(Rejection::OrderFailed),
        }
    }

    /// Decides the changes a command makes. An empty list means the command was already applied
    /// (a repeat), which is not an error: channels repeat themselves.
    pub fn apply(&self, cmd: &Command, now: OffsetDateTime) -> Result<Vec<Change>, Rejection> {
        use OrderStatus::*;
        let mut kinds = Vec::with_capacity(2);
        match (cmd, self.status) {
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
                    pay_serial_no: pay_serial_no.clone(),
                    pay_method: *pay_method,
                    channel_payload: channel_payload.clone(),
                    channel_trade_no: channel_trade_no.clone(),
                });
            }
            (Command::MarkPaying { .. }, Paying) => {}
            (Command::MarkPaying { .. }, st) => return Err(self.refusal_for_payment(st)),

            (
                Command::MarkPaid {
                    channel_trade_no,
                    amount,
                    paid_at,
                },
                st,
            ) => {
                if *amount != self.amount.minor_units() {
                    return Err(Rejection::AmountMismatch {
                        expected: self.amount.minor_units(),
                        reported: *amount,
                    });
                }
                match st {
                    // The channel charged before our PAYING was stored (a crash in between):
                    // the money is real, so the order goes through PAYING to PAID.
                    Created => {
                        kinds.push(ChangeKind::Paying {
                            pay_serial_no: PaySerialNo::generate(),
                            pay_method: PayMethod::Native,
                            channel_payload: serde_json::Value::Null,
                            channel_trade_no: Some(channel_trade_no.clone()),
                        });
                        kinds.push(ChangeKind::Paid {
                            channel_trade_no: channel_trade_no.clone(),
                            paid_at: *paid_at,
                        });
                    }
                    Paying => kinds.push(ChangeKind::Paid {
                        channel_trade_no: channel_trade_no.clone(),
                        paid_at: *paid_at,
                    }),
                    Paid | Refunded => {}
                    Closed | Failed => match &self.late_payment {
                        Some(_) => {}
                        None => kinds.push(ChangeKind::LatePaymentRecorded {
                            channel_trade_no: channel_trade_no.clone(),
                            amount: *amount,
                        }),
                    },
                }
            }

            (Command::MarkFailed { reason }, Paying) => kinds.push(ChangeKind::Failed {
                reason: reason.clone(),
            }),
            // A failure report for an order that is past paying is stale: the order keeps what
            // it knows (a paid order stays paid).
            (Command::MarkFailed { .. }, _) => {}

            (Command::Close, Created) => kinds.push(ChangeKind::Closed),
            (Command::Close, Closed) => {}
            (Command::Close, st) => return Err(self.refusal_for_close(st)),

            (Command::MarkChannelClosed, Paying) => kinds.push(ChangeKind::Closed),
            (Command::MarkChannelClosed, Closed) => {}
            (Command::MarkChannelClosed, st) => return Err(Rejection::WrongStatus(st)),

            (Command::MarkLatePaymentRefunded, _) => match &self.late_payment {
                Some(lp) if !lp.refunded => kinds.push(ChangeKind::LatePaymentRefunded),
                Some(_) => {}
                None => return Err(Rejection::WrongStatus(self.status)),
            },
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
            ChangeKind::Paid {
                channel_trade_no,
                paid_at,
            } => {
                self.status = OrderStatus::Paid;
                self.channel_trade_no = Some(channel_trade_no.clone());
                self.paid_at = Some(*paid_at);
            }
            ChangeKind::Failed { reason } => {
                self.status = OrderStatus::Failed;
                self.failure_reason = Some(reason.clone());
            }
            ChangeKind::Closed => self.status = OrderStatus::Closed,
            ChangeKind::LatePaymentRecorded {
                channel_trade_no,
                amount,
            } => {
                self.late_payment = Some(LatePayment {
                    channel_trade_no: channel_trade_no.clone(),
                    amount: *amount,
                    recorded_at: change.at,
                    refunded: false,
                });
            }
            ChangeKind::LatePaymentRefunded => {
                if let Some(lp) = self.late_payment.as_mut() {
                    lp.refunded = true;
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

/// Checks a notify URL: `http://` or `https://`, a host, at most [`MAX_NOTIFY_URL_LEN`] bytes.
pub fn parse_notify_url(s: &str) -> Result<String, &'static str> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        _ if s.len() > MAX_NOTIFY_URL_LEN => Err("notify_url is longer than 512 bytes"),
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(s.to_string())
        }
        _ => Err("notify_url must be an absolute http(s) URL"),
    }
}

#[cfg(test)]
#[path = "order_tests.rs"]
mod tests;
