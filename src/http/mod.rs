//! Ingress: the `/v1` contract over actix-web. Routes, merchant authentication, body limits,
//! request/response types, and the mapping of every error to the contract's form. Handlers hold
//! no business rules: they parse, authenticate, call `actors::Orders` (or
//! `actors::Notifications`, `actors::LedgerReads`), and answer.

pub mod admin;
pub mod auth;
pub mod body;
pub mod callbacks;
pub mod error;
pub mod ledger;
pub mod nonces;
pub mod notifications;
pub mod operations;
pub mod ops;
pub mod orders;
pub mod refunds;
pub mod types;

use crate::actors::Orders;
use crate::channels::PaymentChannel;
use crate::metrics::Metrics;
use crate::storage::OrderStore;
use crate::streams::EventSink;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;

/// What handlers share.
pub struct AppState {
    /// Order operations.
    pub orders: Orders,
    /// Notification operations.
    pub notifications: crate::actors::Notifications,
    /// Ledger reads.
    pub ledger: crate::actors::LedgerReads,
    /// Merchant authentication (shared with the Kafka command consumer).
    pub auth: Arc<auth::Authenticator>,
    /// Channel adapters by name (for callback verification).
    pub channels: HashMap<String, Arc<dyn PaymentChannel>>,
    /// Storage (readiness, counts).
    pub store: Arc<dyn OrderStore>,
    /// The stream (readiness).
    pub sink: Option<Arc<dyn EventSink>>,
    /// The supervised stream tasks (relay, notifier, ledger).
    pub health: crate::streams::consumer::Health,
    /// A registered log consumer further behind than this many events makes `/readyz` fail.
    pub max_consumer_lag: u64,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Largest request body.
    pub body_limit: usize,
    /// Create, pay, close and refund, shared with the Kafka command consumer.
    pub operations: operations::Operations,
    /// Permits for requests in flight (`server.max_in_flight_requests`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// How many permits there are.
    pub max_in_flight: usize,
    /// Settings reload (`POST /admin/reload`); `None` in an app built without one.
    pub reload: Option<Arc<dyn admin::Reload>>,
}

/// The OpenAPI document, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "paycore",
        description = "Payment core for utilities: the /v1 contract (see API.md)."
    ),
    paths(
        orders::issue_token,
        orders::create_order,
        orders::get_order,
        orders::lookup_order,
        orders::pay_order,
        orders::close_order,
        refunds::create_refund,
        refunds::get_refund,
        notifications::list_notifications,
        notifications::redeliver_notification,
        ledger::order_ledger,
        ledger::balances,
        ledger::totals,
        callbacks::channel_callback,
        ops::healthz,
        ops::readyz,
        ops::metrics
    ),
    components(schemas(
        types::TokenView,
        types::CreateOrderRequest,
        types::PayOrderRequest,
        types::OrderView,
        types::PayView,
        types::FulfillmentView,
        types::ChannelPaymentView,
        types::CreateRefundRequest,
        types::RefundView,
        notifications::NotificationView,
        ledger::LedgerTxnView,
        ledger::PostingView,
        ledger::BalanceView,
        ledger::LedgerTotalsView,
        error::ErrorBody,
        error::ErrorDetail
    ))
)]
pub struct ApiDoc;

/// Admits a request within `server.max_in_flight_requests` (503 `overloaded` at once beyond
/// it, before the body is read: a storm is shed, not buffered) and records its latency by route
/// pattern (never by concrete path: no ids in labels). Operations routes are always admitted,
/// so an operator can look at an overloaded service.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = route_label(req.path());
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let metrics = state.as_ref().map(|s| s.metrics.clone());
    let merchant = state
        .as_ref()
        .and_then(|s| merchant_label(&req, route, &s.auth));
    let _permit = match &state {
        Some(s) if !is_operations(route) => match s.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                s.metrics.http_shed.inc();
                s.metrics
                    .http_request_seconds
                    .with_label_values(&[route, method.as_str(), "5xx"])
                    .observe(started.elapsed().as_secs_f64());
                return Err(error::ApiError::new(
                    actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many requests in flight; retry shortly",
                )
                .retry_after(1)
                .into());
            }
        },
        _ => None,
    };
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let status = match res.status().as_u16() / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        let seconds = started.elapsed().as_secs_f64();
        m.http_request_seconds
            .with_label_values(&[route, method.as_str(), status])
            .observe(seconds);
        if let Some(merchant) = merchant {
            m.ops.merchant_request(&merchant, status, seconds);
        }
    }
    Ok(res)
}

/// The merchant label of a merchant-signed route's request: the merchant it names when that
/// one is configured, else `unknown` (so the label's values are bounded by the settings).
/// `None` for routes merchants do not sign (operations, channel callbacks).
fn merchant_label(req: &ServiceRequest, route: &str, auth: &auth::Authenticator) -> Option<String> {
    if !route.starts_with("/v1/") || route.starts_with("/v1/callbacks/") {
        return None;
    }
    let named = req
        .headers()
        .get(auth::MERCHANT_HEADER)
        .and_then(|v| v.to_str().ok());
    Some(match named {
        Some(id) if auth.knows(id) => id.to_string(),
        _ => crate::metrics::UNKNOWN_MERCHANT.to_string(),
    })
}

async fn not_found() -> Result<HttpResponse, error::ApiError> {
    Err(error::ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    ))
}

/// A resource taking the methods `allow` names; the others answer 405 in the contract's error
/// form with that `Allow` header.
fn resource(path: &str, allow: error::Methods) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(error::ApiError::method_not_allowed(allow))
    }))
}

/// Routes under `/v1/orders/`, `/v1/refunds/`, `/v1/notifications/`, `/v1/ledger/orders/` and
/// `/v1/callbacks/` are
/// dispatched here by hand: actix-router matches `{param}` patterns with a regex, which took
/// 19% of paycore's CPU on the hot path (`perf record` during the `hot` load test); these paths
/// split on '/' instead.
async fn dynamic_routes(
    req: actix_web::HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, error::ApiError> {
    use actix_web::http::Method;
    let path = req.path().to_string();
    if let Some(rest) = path.strip_prefix("/v1/orders/") {
        let (id, action) = match rest.split_once('/') {
            Some((id, action)) => (id, Some(action)),
            None => (rest, None),
        };
        return match (req.method(), action) {
            (&Method::GET, None) => orders::get_order(req.clone(), payload, id, state).await,
            (&Method::POST, Some("pay")) => {
                orders::pay_order(req.clone(), payload, id, state).await
            }
            (&Method::POST, Some("close")) => {
                orders::close_order(req.clone(), payload, id, state).await
            }
            (&Method::POST, Some("refunds")) => {
                refunds::create_refund(req.clone(), payload, id, state).await
            }
            (_, None) => Err(error::ApiError::method_not_allowed(error::Methods::Get)),
            (_, Some("pay" | "close" | "refunds")) => {
                Err(error::ApiError::method_not_allowed(error::Methods::Post))
            }
            _ => not_found().await,
        };
    }
    if let Some(id) = path
        .strip_prefix("/v1/refunds/")
        .filter(|c| !c.is_empty() && !c.contains('/'))
    {
        return match *req.method() {
            Method::GET => refunds::get_refund(req.clone(), payload, id, state).await,
            _ => Err(error::ApiError::method_not_allowed(error::Methods::Get)),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/notifications/") {
        return match rest.split_once('/') {
            Some((id, "redeliver")) if !id.is_empty() => match *req.method() {
                Method::POST => {
                    notifications::redeliver_notification(req.clone(), payload, id, state).await
                }
                _ => Err(error::ApiError::method_not_allowed(error::Methods::Post)),
            },
            _ => not_found().await,
        };
    }
    if let Some(id) = path
        .strip_prefix("/v1/ledger/orders/")
        .filter(|c| !c.is_empty() && !c.contains('/'))
    {
        return match *req.method() {
            Method::GET => ledger::order_ledger(req.clone(), payload, id, state).await,
            _ => Err(error::ApiError::method_not_allowed(error::Methods::Get)),
        };
    }
    if let Some(channel) = path
        .strip_prefix("/v1/callbacks/")
        .filter(|c| !c.is_empty() && !c.contains('/'))
    {
        return match *req.method() {
            Method::POST => callbacks::channel_callback(req.clone(), payload, channel, state).await,
            _ => Err(error::ApiError::method_not_allowed(error::Methods::Post)),
        };
    }
    not_found().await
}

/// Probes and metrics: never shed.
fn is_operations(route: &str) -> bool {
    matches!(
        route,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/admin/reload"
    )
}

/// The route label for metrics: the contract's pattern, never a concrete id.
fn route_label(path: &str) -> &'static str {
    match path {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        "/admin/reload" => "/admin/reload",
        "/v1/submit-tokens" => "/v1/submit-tokens",
        "/v1/orders" => "/v1/orders",
        p if p.starts_with("/v1/orders/") && p.ends_with("/pay") => "/v1/orders/{order_id}/pay",
        p if p.starts_with("/v1/orders/") && p.ends_with("/close") => "/v1/orders/{order_id}/close",
        p if p.starts_with("/v1/orders/") && p.ends_with("/refunds") => {
            "/v1/orders/{order_id}/refunds"
        }
        p if p.starts_with("/v1/refunds/") => "/v1/refunds/{refund_id}",
        "/v1/notifications" => "/v1/notifications",
        p if p.starts_with("/v1/notifications/") && p.ends_with("/redeliver") => {
            "/v1/notifications/{notification_id}/redeliver"
        }
        p if p.starts_with("/v1/orders/") => "/v1/orders/{order_id}",
        "/v1/ledger/balances" => "/v1/ledger/balances",
        "/v1/ledger/totals" => "/v1/ledger/totals",
        p if p.starts_with("/v1/ledger/orders/") => "/v1/ledger/orders/{order_id}",
        p if p.starts_with("/v1/callbacks/") => "/v1/callbacks/{channel}",
        _ => "unmatched",
    }
}

/// Registers every route on an app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use error::Methods;
    cfg.service(
        web::scope("")
            .wrap(actix_web::middleware::from_fn(observe))
            .service(resource("/healthz", Methods::Get).route(web::get().to(ops::healthz)))
            .service(resource("/readyz", Methods::Get).route(web::get().to(ops::readyz)))
            .service(resource("/metrics", Methods::Get).route(web::get().to(ops::metrics)))
            .service(resource("/openapi.json", Methods::Get).route(web::get().to(ops::openapi)))
            .service(resource("/admin/reload", Methods::Post).route(web::post().to(admin::reload)))
            .service(
                resource("/v1/submit-tokens", Methods::Post)
                    .route(web::post().to(orders::issue_token)),
            )
            .service(
                resource("/v1/notifications", Methods::Get)
                    .route(web::get().to(notifications::list_notifications)),
            )
            .service(
                resource("/v1/ledger/balances", Methods::Get)
                    .route(web::get().to(ledger::balances)),
            )
            .service(
                resource("/v1/ledger/totals", Methods::Get).route(web::get().to(ledger::totals)),
            )
            .service(
                resource("/v1/orders", Methods::GetPost)
                    .route(web::post().to(orders::create_order))
                    .route(web::get().to(orders::lookup_order)),
            )
            .default_service(web::to(dynamic_routes)),
    );
}
