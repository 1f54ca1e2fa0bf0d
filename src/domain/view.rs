//! The contract's views of an order and its refunds, as merchants read them over HTTP and in
//! events and notifications: plain strings and numbers, RFC 3339 times. One shape everywhere,
//! so an event's `data` is exactly what `GET /v1/orders/{id}` answers for that version.
//!
//! The order's views declare their fields in key order: serialised as declared they are already
//! in the canonical form an event's `data` takes (keys ordered), so an event is written from the
//! view directly, without a `serde_json::Value` in between (tested below).

use super::order::{BusinessType, FulfillmentStatus, Order};
use super::{PaymentRole, Refund};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// RFC 3339 text of a time (formatting only fails outside years 0..=9999).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Fulfillment progress (fields in key order: see the module's comment).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FulfillmentView {
    /// Attempts so far.
    pub attempts: u32,
    /// Attempts ran out: the order is refunded by the original route.
    pub given_up: bool,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// `PENDING` (not credited by a business system yet; for a merchant without one configured,
    /// always), `SUCCEEDED` (credited), or `FAILED` (the last write-off failed: retried on a
    /// schedule, or given up and the order refunded).
    pub status: String,
}

/// A payment the channel reported for the order (fields in key order).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChannelPaymentView {
    /// Amount charged, minor units.
    pub amount: i64,
    /// Channel transaction number.
    pub channel_trade_no: String,
    /// ISO 4217.
    pub currency: String,
    /// RFC 3339.
    pub paid_at: String,
    /// Why it is extra: `order_not_payable`, `duplicate_charge`, `amount_mismatch`, `currency_mismatch`.
    pub reason: Option<String>,
    /// The automatic refund of an extra payment.
    pub refund_id: Option<String>,
    /// That refund's status.
    pub refund_status: Option<String>,
    /// `APPLIED` (it paid the order) or `EXTRA` (refunded automatically).
    pub role: String,
}

/// A refund.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefundView {
    /// Opaque id.
    pub refund_id: String,
    /// The order refunded.
    pub order_id: String,
    /// The merchant's number; null for an automatic refund of an extra payment.
    pub refund_no: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// `PENDING`, `PROCESSING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// The merchant's reason (or why paycore refunded automatically).
    pub reason: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Made by paycore for an extra payment.
    pub automatic: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl RefundView {
    /// The view of one refund of an order.
    pub fn of(order: &Order, r: &Refund) -> Self {
        Self {
            refund_id: r.refund_id.to_string(),
            order_id: order.order_id.to_string(),
            refund_no: r.refund_no.as_ref().map(|n| n.to_string()),
            amount: r.amount,
            status: r.status.as_str().to_string(),
            reason: r.reason.clone(),
            failure_reason: r.failure_reason.clone(),
            automatic: r.automatic,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

/// An order (fields in key order).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    /// Minor units.
    pub amount: i64,
    /// `BillBuy`, `IotBuy` or `ICBuy`.
    pub business_type: String,
    /// Channel.
    pub channel: String,
    /// Channel transaction number, once known.
    pub channel_trade_no: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// ISO 4217.
    pub currency: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Why the payment failed.
    pub failure_reason: Option<String>,
    /// Fulfillment.
    pub fulfillment: FulfillmentView,
    /// Owner.
    pub merchant_id: String,
    /// The merchant's number.
    pub merchant_order_no: String,
    /// Notify URL.
    pub notify_url: Option<String>,
    /// Opaque, time-ordered id.
    pub order_id: String,
    /// RFC 3339, once paid.
    pub paid_at: Option<String>,
    /// Payment method, once paying.
    pub pay_method: Option<String>,
    /// Payment attempt serial number, once paying.
    pub pay_serial_no: Option<String>,
    /// Every payment the channel reported: the applied one, and extra ones with their
    /// automatic refunds.
    pub payments: Vec<ChannelPaymentView>,
    /// Sum of refunds, minor units.
    pub refunded_amount: i64,
    /// `CREATED`, `PAYING`, `PAID`, `FAILED`, `CLOSED` or `REFUNDED`.
    pub status: String,
    /// Subject.
    pub subject: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
    /// Increases by one with every change.
    pub version: u64,
}

fn business_type_name(b: BusinessType) -> &'static str {
    match b {
        BusinessType::BillBuy => "BillBuy",
        BusinessType::IotBuy => "IotBuy",
        BusinessType::ICBuy => "ICBuy",
    }
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        Self {
            order_id: o.order_id.to_string(),
            merchant_id: o.merchant_id.to_string(),
            merchant_order_no: o.merchant_order_no.to_string(),
            amount: o.amount.minor_units(),
            currency: o.currency.code().to_string(),
            business_type: business_type_name(o.business_type).to_string(),
            channel: o.channel.clone(),
            subject: o.subject.clone(),
            notify_url: o.notify_url.clone(),
            status: o.status.as_str().to_string(),
            pay_serial_no: o.pay_serial_no.as_ref().map(|p| p.to_string()),
            pay_method: o.pay_method.map(|m| m.as_str().to_string()),
            channel_trade_no: o.channel_trade_no.clone(),
            paid_at: o.paid_at.map(rfc3339),
            failure_reason: o.failure_reason.clone(),
            refunded_amount: o.refunded_amount,
            fulfillment: FulfillmentView {
                status: match o.fulfillment.status {
                    FulfillmentStatus::Pending => "PENDING",
                    FulfillmentStatus::Succeeded => "SUCCEEDED",
                    FulfillmentStatus::Failed => "FAILED",
                }
                .to_string(),
                attempts: o.fulfillment.attempts,
                last_error: o.fulfillment.last_error.clone(),
                given_up: o.fulfillment.gave_up,
            },
            payments: o
                .payments
                .iter()
                .map(|p| ChannelPaymentView {
                    channel_trade_no: p.channel_trade_no.clone(),
                    amount: p.amount,
                    currency: p.currency.clone(),
                    paid_at: rfc3339(p.paid_at),
                    role: match p.role {
                        PaymentRole::Applied => "APPLIED",
                        PaymentRole::Extra => "EXTRA",
                    }
                    .to_string(),
                    reason: p.reason.map(|r| r.as_str().to_string()),
                    refund_id: p.refund_id.as_ref().map(|r| r.to_string()),
                    refund_status: p
                        .refund_id
                        .as_ref()
                        .and_then(|id| o.refund(id))
                        .map(|r| r.status.as_str().to_string()),
                })
                .collect(),
            version: o.version,
            created_at: rfc3339(o.created_at),
            updated_at: rfc3339(o.updated_at),
            expires_at: rfc3339(o.expires_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::order::NewOrder;
    use crate::domain::{ChannelPayment, ExtraReason, OrderId};

    /// Views of orders with every optional part filled and empty.
    fn views() -> Vec<OrderView> {
        let at = time::macros::datetime!(2026-12-02 08:00:00 UTC);
        let (plain, _) = Order::create(
            OrderId::generate(),
            NewOrder::for_test("m1", "A-1", 500),
            at,
        );
        let mut full = plain.clone();
        full.subject = Some("Gas".into());
        full.notify_url = Some("https://merchant.example/n".into());
        full.channel_trade_no = Some("sim_1".into());
        full.paid_at = Some(at);
        full.failure_reason = Some("none".into());
        full.fulfillment.status = FulfillmentStatus::Failed;
        full.fulfillment.last_error = Some("biller down".into());
        for (role, reason) in [
            (PaymentRole::Applied, None),
            (PaymentRole::Extra, Some(ExtraReason::DuplicateCharge)),
        ] {
            full.payments.push(ChannelPayment {
                channel_trade_no: format!("sim_{role:?}"),
                amount: 500,
                currency: "CNY".into(),
                paid_at: at,
                recorded_at: at,
                role,
                reason,
                refund_id: None,
            });
        }
        vec![OrderView::from(&plain), OrderView::from(&full)]
    }

    #[test]
    fn order_views_serialise_in_key_order_as_events_need() {
        for view in views() {
            let declared = serde_json::to_string(&view).unwrap();
            // A value's maps are ordered by key: its text is the canonical form.
            let canonical = serde_json::to_string(&serde_json::to_value(&view).unwrap()).unwrap();
            assert_eq!(declared, canonical);
            let data = crate::domain::event::EventData::of_key_ordered(&view);
            assert_eq!(data.get(), canonical);
            // A Kafka create answers with its created event's data: the bytes an HTTP answer
            // of this view has (`Answer::json`).
            assert_eq!(data.get().as_bytes(), serde_json::to_vec(&view).unwrap());
        }
    }
}
