//! Changes an order goes through, and the public events they become. A `Change` is what the
//! state machine decides; an `Event` is the contract's envelope that streams and merchants see.

use super::ids::{EventId, PaySerialNo, RefundId};
use super::order::{Order, PayMethod};
use super::payment::ChannelPayment;
use super::refund::{Refund, RefundStatus};
use super::view::OrderView;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Every event type: the contract's (API.md "Events and merchant notifications"), those the
/// fulfillment work emits, and `order.extra_payment`, which paycore emits when a channel
/// reports a payment it cannot apply.
pub const EVENT_TYPES: &[&str] = &[
    "order.created",
    "order.paying",
    "order.paid",
    "order.failed",
    "order.closed",
    "order.extra_payment",
    "order.fulfilled",
    "order.fulfillment_failed",
    "refund.succeeded",
    "refund.failed",
];

/// One change to one order, at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// The order's version after the change.
    pub version: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The kinds of change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeKind {
    /// Order created.
    Created,
    /// A payment is about to be opened at the channel (the order stays CREATED).
    PayIntentRecorded {
        /// Our serial number.
        pay_serial_no: PaySerialNo,
        /// Method.
        pay_method: PayMethod,
    },
    /// Payment opened at the channel.
    Paying {
        /// Our serial number.
        pay_serial_no: PaySerialNo,
        /// Method.
        pay_method: PayMethod,
        /// For the payer (shared: an order is cloned on every change, a tree would be copied).
        channel_payload: std::sync::Arc<serde_json::Value>,
        /// Channel transaction number, when the channel gave one.
        channel_trade_no: Option<String>,
    },
    /// Money confirmed: the payment that paid the order.
    Paid {
        /// The payment.
        payment: ChannelPayment,
    },
    /// Payment failed.
    Failed {
        /// Channel's reason.
        reason: String,
    },
    /// Closed unpaid.
    Closed,
    /// A payment that cannot be applied was recorded; its automatic refund is opened with it.
    ExtraPaymentRecorded {
        /// The payment.
        payment: ChannelPayment,
        /// Its refund.
        refund: Refund,
    },
    /// The merchant asked for a refund.
    RefundRequested {
        /// The refund, PENDING.
        refund: Refund,
    },
    /// The business system credited the order.
    Fulfilled {
        /// Attempts it took.
        attempts: u32,
    },
    /// A write-off attempt failed (the order is on the exception list and retried).
    FulfillmentFailed {
        /// Attempts so far.
        attempts: u32,
        /// Why.
        error: String,
    },
    /// Attempts ran out: the payer is refunded by the original route (`None` when nothing is
    /// left to refund).
    FulfillmentGivenUp {
        /// The automatic refund, PENDING.
        refund: Option<Refund>,
    },
    /// The channel answered about a refund.
    RefundSettled {
        /// Which.
        refund_id: RefundId,
        /// Its new status.
        status: RefundStatus,
        /// Why it failed.
        failure_reason: Option<String>,
        /// The order's refunded amount after this change.
        refunded_amount: i64,
        /// Refunds now reach the paid amount: the order becomes REFUNDED.
        fully_refunded: bool,
    },
}

impl ChangeKind {
    /// The contract's event type, or `None` for changes that are not published.
    pub fn event_type(&self) -> Option<&'static str> {
        match self {
            ChangeKind::Created => Some("order.created"),
            ChangeKind::PayIntentRecorded { .. } => None,
            ChangeKind::Paying { .. } => Some("order.paying"),
            ChangeKind::Paid { .. } => Some("order.paid"),
            ChangeKind::Failed { .. } => Some("order.failed"),
            ChangeKind::Closed => Some("order.closed"),
            ChangeKind::ExtraPaymentRecorded { .. } => Some("order.extra_payment"),
            ChangeKind::RefundRequested { .. } => None,
            ChangeKind::Fulfilled { .. } => Some("order.fulfilled"),
            ChangeKind::FulfillmentFailed { .. } => None,
            ChangeKind::FulfillmentGivenUp { .. } => Some("order.fulfillment_failed"),
            ChangeKind::RefundSettled { status, .. } => match status {
                RefundStatus::Succeeded => Some("refund.succeeded"),
                RefundStatus::Failed => Some("refund.failed"),
                RefundStatus::Pending | RefundStatus::Processing => None,
            },
        }
    }
}

/// The public event envelope of API.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id.
    pub event_id: EventId,
    /// One of the contract's types.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Order.
    pub order_id: String,
    /// Merchant.
    pub merchant_id: String,
    /// The order's version after this change.
    pub version: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The order as it is after the change, in the contract's view (`GET /v1/orders/{id}`).
    pub data: EventData,
}

/// An event's `data`: its JSON kept as text (canonical: keys sorted, no whitespace, when made
/// from a value), so reading an event back from the outbox does not build a tree of it; a
/// consumer parses what it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventData(Box<serde_json::value::RawValue>);

impl EventData {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Parses it as `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Parses it as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        self.parse().unwrap_or(serde_json::Value::Null)
    }
}

impl EventData {
    /// The text of `view`, a type whose fields are declared in key order at every level (the
    /// order's views are, and `domain::view` tests it): the same canonical text a value of it
    /// would give, without building the value.
    pub fn of_key_ordered<T: Serialize>(view: &T) -> Self {
        let raw = serde_json::value::to_raw_value(view)
            .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
        Self(raw)
    }
}

impl From<serde_json::Value> for EventData {
    /// A value's canonical text (its maps are ordered by key).
    fn from(v: serde_json::Value) -> Self {
        let raw = serde_json::value::to_raw_value(&v)
            .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
        Self(raw)
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Event {
    /// The public event for a change, given the order after it; `None` when the change is not
    /// one the contract publishes.
    pub fn for_change(order_after: &Order, change: &Change) -> Option<Event> {
        let event_type = change.kind.event_type()?;
        Some(Event {
            event_id: EventId::generate(),
            event_type: event_type.to_string(),
            order_id: order_after.order_id.to_string(),
            merchant_id: order_after.merchant_id.to_string(),
            version: change.version,
            occurred_at: change.at,
            data: EventData::of_key_ordered(&OrderView::from(order_after)),
        })
    }
}
