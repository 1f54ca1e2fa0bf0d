//! Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document.

use super::AppState;
use crate::domain::OrderStatus;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Storage and the stream answer.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "a dependency is down")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let storage = state.store.ping().await;
    let stream = state.sink.ready().await;
    if let Err(e) = &storage {
        // The cause is for the operator's log; the probe answer names no paths or errors.
        tracing::warn!(error = %e, "not ready: storage");
    }
    let body = serde_json::json!({
        "storage": if storage.is_ok() { "ok" } else { "failing" },
        "stream": if stream { "ok" } else { "unreachable" },
    });
    if storage.is_ok() && stream {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let in_flight = state
        .max_in_flight
        .saturating_sub(state.in_flight.available_permits());
    state
        .metrics
        .http_in_flight
        .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
    match state.store.status_counts().await {
        Ok(counts) => {
            for status in OrderStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                state
                    .metrics
                    .orders
                    .with_label_values(&[status.as_str()])
                    .set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot refresh order counts"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// This document.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::ApiDoc::openapi())
}
