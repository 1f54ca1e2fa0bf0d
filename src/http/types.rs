//! Request and response bodies of the `/v1` contract, as the OpenAPI document shows them.
//! Requests arrive as raw strings and numbers and are parsed into domain types in one place
//! (`NewOrderRequest::parse`), so the error names the field.

use super::error::ApiError;
use crate::domain::{
    self, Amount, BusinessType, Currency, MerchantOrderNo, NewOrder, Order, PayMethod, SubmitToken,
};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// Longest barcode auth code.
const MAX_AUTH_CODE_LEN: usize = 128;

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// `POST /v1/submit-tokens` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// One-time token for one create.
    pub token: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
}

/// `POST /v1/orders` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// Token from `POST /v1/submit-tokens`.
    pub submit_token: String,
    /// The merchant's own number: 1..64 of `[A-Za-z0-9_-]`, unique per merchant.
    pub merchant_order_no: String,
    /// Minor units (fen), 1..=10000000000.
    pub amount: i64,
    /// ISO 4217; `CNY` (the default) is the only one settled today.
    pub currency: Option<String>,
    /// `BillBuy`, `IotBuy` or `ICBuy`.
    pub business_type: String,
    /// A channel configured and allowed for the merchant, e.g. `sim`.
    pub channel: String,
    /// Shown to the payer, at most 128 characters.
    pub subject: Option<String>,
    /// Absolute http(s) URL for merchant notifications.
    pub notify_url: Option<String>,
    /// Life of the unpaid order, 60..=86400 seconds.
    pub expire_seconds: Option<i64>,
}

impl CreateOrderRequest {
    /// Parses into a domain order request, naming the first bad field.
    pub fn parse(
        self,
        merchant: &super::auth::AuthedMerchant,
        default_expire_seconds: i64,
        min_expire_seconds: i64,
    ) -> Result<(SubmitToken, NewOrder), ApiError> {
        let token = SubmitToken::parse(&self.submit_token)
            .map_err(|_| crate::actors::OrderError::TokenInvalid)?;
        let merchant_order_no = MerchantOrderNo::parse(&self.merchant_order_no)
            .map_err(|e| ApiError::invalid("merchant_order_no", e.to_string()))?;
        let amount =
            Amount::new(self.amount).map_err(|e| ApiError::invalid("amount", e.to_string()))?;
        let currency = match self.currency.as_deref() {
            None => Currency::default(),
            Some(c) => {
                Currency::parse(c).map_err(|e| ApiError::invalid("currency", e.to_string()))?
            }
        };
        let business_type = match self.business_type.as_str() {
            "BillBuy" => BusinessType::BillBuy,
            "IotBuy" => BusinessType::IotBuy,
            "ICBuy" => BusinessType::ICBuy,
            _ => {
                return Err(ApiError::invalid(
                    "business_type",
                    "must be one of BillBuy, IotBuy, ICBuy",
                ));
            }
        };
        if !merchant.channels.iter().any(|c| c == &self.channel) {
            return Err(ApiError::invalid(
                "channel",
                format!(
                    "channel {:?} is not available to this merchant",
                    self.channel
                ),
            ));
        }
        let subject = self
            .subject
            .map(|s| domain::order::parse_subject(&s))
            .transpose()
            .map_err(|e| ApiError::invalid("subject", e))?;
        let notify_url = self
            .notify_url
            .map(|s| domain::order::parse_notify_url(&s))
            .transpose()
            .map_err(|e| ApiError::invalid("notify_url", e))?;
        let expire_seconds = self.expire_seconds.unwrap_or(default_expire_seconds);
        let max = *domain::order::EXPIRE_SECONDS_RANGE.end();
        if !(min_expire_seconds..=max).contains(&expire_seconds) {
            return Err(ApiError::invalid(
                "expire_seconds",
                format!("must be within {min_expire_seconds}..={max}"),
            ));
        }
        Ok((
            token,
            NewOrder {
                merchant_id: merchant.id.clone(),
                merchant_order_no,
                amount,
                currency,
                business_type,
                channel: self.channel,
                subject,
                notify_url,
                expire_seconds,
            },
        ))
    }
}

/// `POST /v1/orders/{order_id}/pay` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayOrderRequest {
    /// `native`, `barcode`, `jsapi`, `mini_program`, `app`, `h5` or `cash`.
    pub pay_method: String,
    /// The payer's code; required for `barcode`.
    pub auth_code: Option<String>,
}

impl PayOrderRequest {
    /// Parses into the actor's pay request.
    pub fn parse(self) -> Result<crate::actors::PayRequest, ApiError> {
        let pay_method = match self.pay_method.as_str() {
            "native" => PayMethod::Native,
            "barcode" => PayMethod::Barcode,
            "jsapi" => PayMethod::Jsapi,
            "mini_program" => PayMethod::MiniProgram,
            "app" => PayMethod::App,
            "h5" => PayMethod::H5,
            "cash" => PayMethod::Cash,
            _ => {
                return Err(ApiError::invalid(
                    "pay_method",
                    "must be one of native, barcode, jsapi, mini_program, app, h5, cash",
                ));
            }
        };
        if let Some(code) = &self.auth_code
            && (code.is_empty()
                || code.len() > MAX_AUTH_CODE_LEN
                || !code.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(ApiError::invalid(
                "auth_code",
                "must be 1..128 letters or digits",
            ));
        }
        if pay_method == PayMethod::Barcode && self.auth_code.is_none() {
            return Err(ApiError::invalid(
                "auth_code",
                "barcode payments need the payer's auth_code",
            ));
        }
        Ok(crate::actors::PayRequest {
            pay_method,
            auth_code: self.auth_code,
        })
    }
}

/// Fulfillment progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FulfillmentView {
    /// `PENDING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// A payment the channel reported for the order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChannelPaymentView {
    /// Channel transaction number.
    pub channel_trade_no: String,
    /// Amount charged, minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// RFC 3339.
    pub paid_at: String,
    /// `APPLIED` (it paid the order) or `EXTRA` (refunded automatically).
    pub role: String,
    /// Why it is extra: `order_not_payable`, `duplicate_charge`, `amount_mismatch`, `currency_mismatch`.
    pub reason: Option<String>,
    /// The automatic refund of an extra payment.
    pub refund_id: Option<String>,
    /// That refund's status.
    pub refund_status: Option<String>,
}

/// `POST /v1/orders/{order_id}/refunds` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// The merchant's refund number: 1..64 of `[A-Za-z0-9_-]`; a repeat answers the same refund.
    pub refund_no: String,
    /// Minor units, positive; the order's refunds never exceed its paid amount.
    pub amount: i64,
    /// At most 256 characters.
    pub reason: Option<String>,
}

impl CreateRefundRequest {
    /// Parses into the domain request, naming the first bad field.
    pub fn parse(self) -> Result<domain::RefundRequest, ApiError> {
        let refund_no = domain::RefundNo::parse(&self.refund_no)
            .map_err(|e| ApiError::invalid("refund_no", e.to_string()))?;
        Amount::new(self.amount).map_err(|e| ApiError::invalid("amount", e.to_string()))?;
        let reason = self
            .reason
            .map(|r| domain::refund::parse_reason(&r))
            .transpose()
            .map_err(|e| ApiError::invalid("reason", e))?;
        Ok(domain::RefundRequest {
            refund_no,
            amount: self.amount,
            reason,
        })
    }
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
    pub fn of(order: &Order, r: &domain::Refund) -> Self {
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

/// An order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    /// Opaque, time-ordered id.
    pub order_id: String,
    /// Owner.
    pub merchant_id: String,
    /// The merchant's number.
    pub merchant_order_no: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// `BillBuy`, `IotBuy` or `ICBuy`.
    pub business_type: String,
    /// Channel.
    pub channel: String,
    /// Subject.
    pub subject: Option<String>,
    /// Notify URL.
    pub notify_url: Option<String>,
    /// `CREATED`, `PAYING`, `PAID`, `FAILED`, `CLOSED` or `REFUNDED`.
    pub status: String,
    /// Payment attempt serial number, once paying.
    pub pay_serial_no: Option<String>,
    /// Payment method, once paying.
    pub pay_method: Option<String>,
    /// Channel transaction number, once known.
    pub channel_trade_no: Option<String>,
    /// RFC 3339, once paid.
    pub paid_at: Option<String>,
    /// Why the payment failed.
    pub failure_reason: Option<String>,
    /// Sum of refunds, minor units.
    pub refunded_amount: i64,
    /// Fulfillment.
    pub fulfillment: FulfillmentView,
    /// Every payment the channel reported: the applied one, and extra ones with their
    /// automatic refunds.
    pub payments: Vec<ChannelPaymentView>,
    /// Increases by one with every change.
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339.
    pub expires_at: String,
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
                    domain::order::FulfillmentStatus::Pending => "PENDING",
                    domain::order::FulfillmentStatus::Succeeded => "SUCCEEDED",
                    domain::order::FulfillmentStatus::Failed => "FAILED",
                }
                .to_string(),
                attempts: o.fulfillment.attempts,
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
                        domain::PaymentRole::Applied => "APPLIED",
                        domain::PaymentRole::Extra => "EXTRA",
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

/// `POST /v1/orders/{order_id}/pay` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PayView {
    /// Order.
    pub order_id: String,
    /// Always `PAYING` (the same answer to every repeat while paying).
    pub status: String,
    /// The payment attempt's serial number; the same for every repeat.
    pub pay_serial_no: String,
    /// What the payer's device needs from the channel (e.g. `code_url`).
    #[schema(value_type = Object)]
    pub channel_payload: serde_json::Value,
}

/// `GET /v1/orders` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// The merchant's number.
    pub merchant_order_no: String,
}
