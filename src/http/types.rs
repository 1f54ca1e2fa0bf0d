//! Request and response bodies of the `/v1` contract, as the OpenAPI document shows them.
//! Requests arrive as raw strings and numbers and are parsed into domain types in one place
//! (`NewOrderRequest::parse`), so the error names the field.

use super::error::ApiError;
use crate::domain::{self, Amount, BusinessType, Currency, MerchantOrderNo, NewOrder, PayMethod};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::domain::view::{ChannelPaymentView, FulfillmentView, OrderView, RefundView};

/// Longest barcode auth code.
const MAX_AUTH_CODE_LEN: usize = 128;

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
    /// Absolute http(s) URL for merchant notifications, at most 512 bytes; an IP literal in a
    /// loopback, private, link-local or unspecified range (or `localhost`) is refused unless the
    /// service allows it, and host names are checked again after DNS at every delivery.
    pub notify_url: Option<String>,
    /// Life of the unpaid order, 60..=86400 seconds.
    pub expire_seconds: Option<i64>,
}

impl CreateOrderRequest {
    /// The submit token and the order's fields.
    pub fn split(self) -> (String, OrderFields) {
        (
            self.submit_token,
            OrderFields {
                merchant_order_no: self.merchant_order_no,
                amount: self.amount,
                currency: self.currency,
                business_type: self.business_type,
                channel: self.channel,
                subject: self.subject,
                notify_url: self.notify_url,
                expire_seconds: self.expire_seconds,
            },
        )
    }
}

/// The fields of a new order: `CreateOrderRequest` without its submit token (a Kafka create
/// command is admitted by its request id instead).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderFields {
    /// See `CreateOrderRequest`.
    pub merchant_order_no: String,
    /// See `CreateOrderRequest`.
    pub amount: i64,
    /// See `CreateOrderRequest`.
    pub currency: Option<String>,
    /// See `CreateOrderRequest`.
    pub business_type: String,
    /// See `CreateOrderRequest`.
    pub channel: String,
    /// See `CreateOrderRequest`.
    pub subject: Option<String>,
    /// See `CreateOrderRequest`.
    pub notify_url: Option<String>,
    /// See `CreateOrderRequest`.
    pub expire_seconds: Option<i64>,
}

impl OrderFields {
    /// Parses into a domain order request, naming the first bad field.
    pub fn parse(
        self,
        merchant: &super::auth::AuthedMerchant,
        default_expire_seconds: i64,
        min_expire_seconds: i64,
        notify_policy: &domain::AddressPolicy,
    ) -> Result<NewOrder, ApiError> {
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
            .map(|s| domain::order::parse_notify_url(&s, notify_policy))
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
        Ok(NewOrder {
            merchant_id: merchant.id.clone(),
            merchant_order_no,
            amount,
            currency,
            business_type,
            channel: self.channel,
            subject,
            notify_url,
            expire_seconds,
            fulfillment_required: merchant.fulfills,
        })
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
    pub channel_payload: std::sync::Arc<serde_json::Value>,
}

/// `GET /v1/orders` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// The merchant's number.
    pub merchant_order_no: String,
}
