//! The contract's error form, and the one place where every lower-layer error becomes an HTTP
//! status and a code: `{"error": {"code", "message", "field"?}}`.

use crate::actors::OrderError;
use crate::channels::ChannelError;
use crate::domain::Rejection;
use crate::storage::StoreError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;
use utoipa::ToSchema;

/// The error body of every refused request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    pub code: String,
    /// Human text.
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The existing order, for `duplicate_order` and `token_used`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
    header: Extra,
}

/// The one header an error may carry beside its body (kept small: errors travel in `Result`s).
#[derive(Debug, Clone, Copy)]
enum Extra {
    None,
    /// `Retry-After`, seconds.
    RetryAfter(u32),
    /// `Allow`: the methods a route takes (with 405).
    Allow(Methods),
}

/// The method sets routes take, as an `Allow` header names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `GET, POST`.
    GetPost,
}

impl Methods {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::GetPost => "GET, POST",
        }
    }
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
                order_id: None,
            },
            header: Extra::None,
        }
    }

    /// 422 `invalid_request` naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message);
        e.detail.field = Some(field.into());
        e
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.header = Extra::RetryAfter(u32::try_from(secs).unwrap_or(u32::MAX).max(1));
        self
    }

    /// 405 `method_not_allowed`, with the `Allow` header naming the methods the route takes.
    pub fn method_not_allowed(allow: Methods) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route takes {}", allow.as_str()),
        );
        e.header = Extra::Allow(allow);
        e
    }

    fn with_order(mut self, order_id: Option<String>) -> Self {
        self.detail.order_id = order_id;
        self
    }

    /// The error code.
    pub fn code(&self) -> &str {
        &self.detail.code
    }

    /// Names the request field at fault.
    pub fn set_field(&mut self, field: &str) {
        self.detail.field = Some(field.into());
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `Retry-After` seconds, when the answer carries one.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self.header {
            Extra::RetryAfter(s) => Some(s),
            _ => None,
        }
    }

    /// The contract's error body, as JSON bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        // Plain strings only: serializing cannot fail.
        serde_json::to_vec(&ErrorBody {
            error: self.detail.clone(),
        })
        .unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.detail.code,
            self.detail.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        match self.header {
            Extra::None => {}
            Extra::RetryAfter(s) => {
                r.insert_header((actix_web::http::header::RETRY_AFTER, s.to_string()));
            }
            Extra::Allow(allow) => {
                r.insert_header((actix_web::http::header::ALLOW, allow.as_str()));
            }
        }
        r.json(ErrorBody {
            error: self.detail.clone(),
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "storage is saturated; retry shortly",
            )
            .retry_after(1),
            StoreError::VersionConflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "concurrent_update",
                "the order changed while this request ran; retry",
            ),
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the service is shutting down",
            )
            .retry_after(5),
            StoreError::Backend(m) | StoreError::Corrupt(m) | StoreError::IdConflict(m) => {
                tracing::error!(error = %m, "storage failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage failed; nothing was changed",
                )
                .retry_after(1)
            }
        }
    }
}

impl From<ChannelError> for ApiError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Busy {
                channel,
                retry_after_secs,
            } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "channel_busy",
                format!("channel {channel} is at its rate limit; the order is unchanged"),
            )
            .retry_after(retry_after_secs),
            ChannelError::RateLimited(channel) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "channel_busy",
                format!("channel {channel} refused: rate limited; the order is unchanged"),
            )
            .retry_after(1),
            ChannelError::Rejected { code, message } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "channel_rejected",
                format!("the channel refused: {code}: {message}"),
            ),
            ChannelError::Unavailable(m) => {
                // The detail (an address, a decoder's complaint) is for the log, not the caller.
                tracing::warn!(error = %m, "channel unavailable");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "channel_unavailable",
                    "the channel did not answer usably; the order is unchanged, retry",
                )
                .retry_after(1)
            }
            ChannelError::BadCallback(m) => ApiError::unauthorized(m),
            ChannelError::MalformedCallback(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_callback", m)
            }
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        use StatusCode as S;
        match e {
            OrderError::NotFound => ApiError::new(S::NOT_FOUND, "order_not_found", "no such order"),
            OrderError::Rejected(r) => {
                let msg = r.to_string();
                match r {
                    Rejection::AlreadyPaid => ApiError::new(S::CONFLICT, "already_paid", msg),
                    Rejection::OrderClosed => ApiError::new(S::CONFLICT, "order_closed", msg),
                    Rejection::OrderFailed => ApiError::new(S::CONFLICT, "order_failed", msg),
                    Rejection::OrderExpired => ApiError::new(S::CONFLICT, "order_expired", msg),
                    Rejection::OrderNotPaid => ApiError::new(S::CONFLICT, "order_not_paid", msg),
                    Rejection::RefundExceedsPaid { .. } => {
                        let mut e =
                            ApiError::new(S::UNPROCESSABLE_ENTITY, "refund_exceeds_paid", msg);
                        e.detail.field = Some("amount".into());
                        e
                    }
                    Rejection::RefundNoReused => {
                        let mut e = ApiError::new(S::CONFLICT, "refund_no_reused", msg);
                        e.detail.field = Some("refund_no".into());
                        e
                    }
                    Rejection::TooManyRefunds => {
                        ApiError::new(S::UNPROCESSABLE_ENTITY, "refund_limit", msg)
                    }
                    Rejection::TooManyPayments => {
                        ApiError::new(S::SERVICE_UNAVAILABLE, "unavailable", msg)
                    }
                    Rejection::UnknownRefund => {
                        ApiError::new(S::NOT_FOUND, "refund_not_found", msg)
                    }
                    Rejection::WrongStatus(_) => ApiError::new(S::CONFLICT, "invalid_state", msg),
                    Rejection::FulfillmentPending => {
                        ApiError::new(S::CONFLICT, "fulfillment_pending", msg)
                    }
                }
            }
            OrderError::Channel(c) => c.into(),
            OrderError::Store(s) => s.into(),
            OrderError::ChannelMismatch => {
                ApiError::new(S::NOT_FOUND, "order_not_found", "no such order")
            }
            OrderError::UnknownChannel(c) => ApiError::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                format!("channel {c} is not configured"),
            ),
            OrderError::TokenUsed(by) => ApiError::new(
                S::CONFLICT,
                "token_used",
                "the submit token was already used",
            )
            .with_order(by.map(|i| i.to_string())),
            OrderError::TokenInvalid => {
                let mut e = ApiError::new(
                    S::UNPROCESSABLE_ENTITY,
                    "token_invalid",
                    "the submit token is unknown or expired",
                );
                e.detail.field = Some("submit_token".into());
                e
            }
            OrderError::Duplicate(id) => ApiError::new(
                S::CONFLICT,
                "duplicate_order",
                "an order with this merchant_order_no exists",
            )
            .with_order(Some(id.to_string())),
            OrderError::CommandAnswered => ApiError::new(
                S::CONFLICT,
                "already_answered",
                "this request_id was answered already; its stored reply is the answer",
            ),
            OrderError::ReversalRefused(m) => ApiError::new(
                S::CONFLICT,
                "reversal_refused",
                format!(
                    "the business system refused to reverse the fulfillment ({m}); nothing was refunded"
                ),
            ),
            OrderError::BillerUnavailable(m) => {
                tracing::warn!(error = %m, "business system unavailable for a reversal");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "biller_unavailable",
                    "the business system did not answer the reversal; nothing was refunded, retry with the same refund_no",
                )
                .retry_after(5)
            }
            OrderError::Unavailable(m) => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{m}; the outcome may be unknown, read the order"),
            )
            .retry_after(1),
        }
    }
}
