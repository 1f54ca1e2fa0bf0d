//! The HTTP face of the biller: routes, request admission (body size, signature and
//! timestamp, simulated latency), the random draws of the fault knobs, and the mapping of every
//! refusal to an `ErrorBody` with its status. The ledger lock is taken only after every await,
//! and never held across one.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ledger::{Ledger, LedgerError, WriteOffFaults};
use crate::protocol::{self, ErrorBody, MAX_BODY_BYTES, ReverseRequest, WriteOffRequest};
use crate::settings::BillerSettings;

/// Shared state of the HTTP worker.
pub(crate) struct AppState {
    pub(crate) settings: BillerSettings,
    pub(crate) ledger: Mutex<Ledger>,
}

/// Every refusal of the biller, answered as an `ErrorBody`.
#[derive(Debug, Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    Sign(&'static str),
    #[error("request body over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Invalid(String),
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed; allowed: {0}")]
    Method(&'static str),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Sign(_) => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Ledger(err) => match err {
                LedgerError::Invalid(_) => StatusCode::BAD_REQUEST,
                LedgerError::NotFound(_) => StatusCode::NOT_FOUND,
                LedgerError::Conflict(_) | LedgerError::ReversalRefused => StatusCode::CONFLICT,
                LedgerError::Exceeds { .. } | LedgerError::AccountInvalid => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                LedgerError::SystemError | LedgerError::Capacity(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Self::Sign(_) => protocol::SIGN_ERROR,
            Self::TooLarge | Self::Invalid(_) | Self::Method(_) => protocol::INVALID_REQUEST,
            Self::NoRoute => protocol::NOT_FOUND,
            Self::Ledger(err) => err.code(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let Self::Method(allowed) = self {
            response.insert_header((header::ALLOW, *allowed));
        }
        response.json(ErrorBody {
            code: code.to_owned(),
            message: self.to_string(),
        })
    }
}

fn header_str<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// The ledger, even if a handler panicked while holding it (its records stay consistent:
/// every operation checks before it writes).
fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Current time in RFC 3339 UTC.
fn now_rfc3339() -> String {
    // Formatting only fails for years outside 0..=9999, which the system clock never gives.
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

impl AppState {
    /// Admits a signed request: bounded body, signature and timestamp, then the latency.
    async fn admit(&self, req: &HttpRequest, payload: web::Payload) -> Result<Bytes, ApiError> {
        let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
            Ok(Ok(body)) => body,
            Ok(Err(err)) => return Err(ApiError::Invalid(format!("unreadable body: {err}"))),
            Err(_) => return Err(ApiError::TooLarge),
        };
        let timestamp: i64 = header_str(req, protocol::TIMESTAMP_HEADER)
            .and_then(|value| value.trim().parse().ok())
            .ok_or(ApiError::Sign("missing or malformed timestamp header"))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if !protocol::timestamp_fresh(timestamp, now) {
            return Err(ApiError::Sign("timestamp too far from the biller's clock"));
        }
        let signature = header_str(req, protocol::SIGNATURE_HEADER)
            .ok_or(ApiError::Sign("missing signature"))?;
        let target = format!(
            "{} {}",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        if !protocol::verify(
            self.settings.secret.as_bytes(),
            &target,
            timestamp,
            &body,
            signature,
        ) {
            return Err(ApiError::Sign("signature does not match"));
        }
        let latency =
            rand::random_range(self.settings.latency_ms_min..=self.settings.latency_ms_max);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        Ok(body)
    }

    /// This call's write-off faults; the rates were validated to lie in [0, 1].
    fn write_off_faults(&self) -> WriteOffFaults {
        let settings = &self.settings;
        WriteOffFaults {
            permanent: settings.permanent_failure,
            fail_first: settings.fail_first,
            fail_now: rand::random_bool(settings.failure_rate),
            lose_answer: rand::random_bool(settings.answer_lost_rate),
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::Invalid(format!("malformed JSON: {err}")))
}

async fn write_off(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = state.admit(&req, payload).await?;
    let request: WriteOffRequest = parse(&body)?;
    let faults = state.write_off_faults();
    let view = lock(&state.ledger).write_off(&request, faults, &now_rfc3339())?;
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

async fn reverse(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = state.admit(&req, payload).await?;
    let request: ReverseRequest = parse(&body)?;
    let refuse = state.settings.refuse_reversals;
    let view = lock(&state.ledger).reverse(&path, &request, refuse, &now_rfc3339())?;
    Ok(HttpResponse::Ok().json(view))
}

/// Query of the unsigned audit endpoint.
#[derive(Deserialize)]
struct AuditQuery {
    order_id: String,
}

/// Unsigned and without latency, so that anyone (tests, operators) can always audit.
async fn audit(state: web::Data<AppState>, query: web::Query<AuditQuery>) -> HttpResponse {
    let view = lock(&state.ledger).audit(&query.order_id);
    HttpResponse::Ok().json(view)
}

async fn no_route() -> HttpResponse {
    ApiError::NoRoute.error_response()
}

/// A 405 handler naming the methods the resource allows.
fn wrong_method(allowed: &'static str) -> actix_web::Route {
    web::to(move || async move { ApiError::Method(allowed).error_response() })
}

/// Registers the biller's routes and error mappings.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::Invalid(format!("bad query: {err}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::Invalid(format!("bad path: {err}")).into()),
    )
    .service(
        web::resource(protocol::WRITE_OFFS_PATH)
            .route(web::post().to(write_off))
            .route(web::get().to(audit))
            .default_service(wrong_method("GET, POST")),
    )
    .service(
        web::resource(format!("{}/{{order_id}}", protocol::WRITE_OFFS_PATH))
            .route(web::get().to(query))
            .default_service(wrong_method("GET")),
    )
    .service(
        web::resource(format!(
            "{}/{{order_id}}/reversals",
            protocol::WRITE_OFFS_PATH
        ))
        .route(web::post().to(reverse))
        .default_service(wrong_method("POST")),
    )
    .default_service(web::to(no_route));
}
