//! The HTTP face of the simulator: routes, request admission (QPS cap, body size, signature,
//! simulated latency) and the mapping of every refusal to an `ErrorBody` with its status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use governor::DefaultDirectRateLimiter;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::callbacks::{Background, lock};
use crate::ledger::{Created, Ledger, LedgerError, RefundFaults};
use crate::protocol::{self, CreatePaymentRequest, ErrorBody, RefundRequest};
use crate::settings::SimSettings;

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared state of all HTTP workers.
pub(crate) struct AppState {
    pub(crate) settings: Arc<SimSettings>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) limiter: DefaultDirectRateLimiter,
    pub(crate) background: Arc<Background>,
}

/// Every refusal of the simulator, answered as an `ErrorBody`.
#[derive(Debug, Error)]
pub(crate) enum ApiError {
    #[error("over the channel's QPS cap")]
    FrequencyLimited,
    #[error("{0}")]
    Sign(&'static str),
    #[error("request body over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Invalid(String),
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    Method,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::FrequencyLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Sign(_) => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::Ledger(err) => match err {
                LedgerError::Invalid(_) => StatusCode::BAD_REQUEST,
                LedgerError::NotFound(_) => StatusCode::NOT_FOUND,
                LedgerError::Capacity(_) | LedgerError::SystemError => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                LedgerError::OrderPaid
                | LedgerError::OrderClosed
                | LedgerError::OutTradeNoUsed(_)
                | LedgerError::RefundExceeds { .. }
                | LedgerError::NotPaid => StatusCode::CONFLICT,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Self::FrequencyLimited => protocol::FREQUENCY_LIMITED,
            Self::Sign(_) => protocol::SIGN_ERROR,
            Self::TooLarge | Self::Invalid(_) | Self::Method => protocol::INVALID_REQUEST,
            Self::NoRoute => protocol::NOT_FOUND,
            Self::Ledger(err) => err.code(),
        };
        HttpResponse::build(self.status_code()).json(ErrorBody {
            code: code.to_owned(),
            message: self.to_string(),
        })
    }
}

fn header<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

impl AppState {
    /// Admits a signed request: QPS cap, bounded body, signature and timestamp, then latency.
    async fn admit(&self, req: &HttpRequest, payload: web::Payload) -> Result<Bytes, ApiError> {
        if self.limiter.check().is_err() {
            return Err(ApiError::FrequencyLimited);
        }
        let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
            Ok(Ok(body)) => body,
            Ok(Err(err)) => return Err(ApiError::Invalid(format!("unreadable body: {err}"))),
            Err(_) => return Err(ApiError::TooLarge),
        };
        let timestamp: i64 = header(req, protocol::TIMESTAMP_HEADER)
            .and_then(|value| value.trim().parse().ok())
            .ok_or(ApiError::Sign("missing or malformed timestamp header"))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if now.abs_diff(timestamp) > protocol::MAX_TIMESTAMP_SKEW_SECS {
            return Err(ApiError::Sign("timestamp too far from the channel's clock"));
        }
        let signature =
            header(req, protocol::SIGNATURE_HEADER).ok_or(ApiError::Sign("missing signature"))?;
        if !protocol::verify(self.settings.secret.as_bytes(), timestamp, &body, signature) {
            return Err(ApiError::Sign("signature does not match"));
        }
        let latency =
            rand::random_range(self.settings.latency_ms_min..=self.settings.latency_ms_max);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        Ok(body)
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::Invalid(format!("malformed JSON: {err}")))
}

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = state.admit(&req, payload).await?;
    let request: CreatePaymentRequest = parse(&body)?;
    let created = lock(&state.ledger).create(&request)?;
    let view = match created {
        Created::New(view) => {
            state
                .background
                .schedule_payment(view.out_trade_no.clone(), view.trade_no.clone());
            view
        }
        Created::Existing(view) => view,
    };
    Ok(HttpResponse::Ok().json(view))
}

async fn query(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.admit(&req, payload).await?;
    let view = lock(&state.ledger).get(&path)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn close(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = state.admit(&req, payload).await?;
    // The body carries nothing today, but must be empty or a JSON object.
    if !body.iter().all(u8::is_ascii_whitespace) {
        parse::<serde_json::Map<String, serde_json::Value>>(&body)?;
    }
    let view = lock(&state.ledger).close(&path)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn refund(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = state.admit(&req, payload).await?;
    let request: RefundRequest = parse(&body)?;
    let faults = RefundFaults {
        errors_per_refund: state.settings.refund_errors_per_refund,
        after_recording: state.settings.refund_error_after_recording,
    };
    let view = lock(&state.ledger).refund(&request, faults)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn query_refund(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.admit(&req, payload).await?;
    let view = lock(&state.ledger).get_refund(&path)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Query of the unsigned audit endpoint.
#[derive(Deserialize)]
struct AuditQuery {
    out_trade_no: String,
}

/// Unsigned and outside the QPS cap, so that anyone (tests, operators) can always audit.
async fn audit(
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let view = lock(&state.ledger).audit(&query.out_trade_no);
    Ok(HttpResponse::Ok().json(view))
}

async fn no_route() -> HttpResponse {
    ApiError::NoRoute.error_response()
}

async fn wrong_method() -> HttpResponse {
    ApiError::Method.error_response()
}

/// Registers the simulator's routes and error mappings.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::Invalid(format!("bad query: {err}")).into()),
    )
    .service(
        web::resource("/sim/v1/payments")
            .route(web::post().to(create))
            .route(web::get().to(audit))
            .default_service(web::to(wrong_method)),
    )
    .service(
        web::resource("/sim/v1/payments/{out_trade_no}")
            .route(web::get().to(query))
            .default_service(web::to(wrong_method)),
    )
    .service(
        web::resource("/sim/v1/payments/{out_trade_no}/close")
            .route(web::post().to(close))
            .default_service(web::to(wrong_method)),
    )
    .service(
        web::resource("/sim/v1/refunds")
            .route(web::post().to(refund))
            .default_service(web::to(wrong_method)),
    )
    .service(
        web::resource("/sim/v1/refunds/{out_refund_no}")
            .route(web::get().to(query_refund))
            .default_service(web::to(wrong_method)),
    )
    .default_service(web::to(no_route));
}
