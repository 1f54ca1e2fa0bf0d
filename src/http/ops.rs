//! Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document.

use super::AppState;
use crate::domain::OrderStatus;
use crate::streams::consumer::TaskState;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Storage, the stream and every log consumer are up, and no consumer lags past the bound.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "a dependency is down or a consumer lags")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let storage = state.store.ping().await;
    let stream = match &state.sink {
        Some(sink) => sink.ready().await,
        // The embedded log is storage.
        None => true,
    };
    if let Err(e) = &storage {
        // The cause is for the operator's log; the probe answer names no paths or errors.
        tracing::warn!(error = %e, "not ready: storage");
    }
    let (consumers, consumers_ok) = consumer_report(&state).await;
    let tasks = state.health.snapshot();
    let tasks_ok = tasks.values().all(|t| t.state == TaskState::Running);
    let body = serde_json::json!({
        "storage": if storage.is_ok() { "ok" } else { "failing" },
        "stream": if stream { "ok" } else { "unreachable" },
        "consumers": consumers,
        "tasks": tasks.iter().map(|(name, t)| (name.clone(), serde_json::json!({
            "state": t.state,
            "restarts": t.restarts,
        }))).collect::<serde_json::Map<_, _>>(),
    });
    if storage.is_ok() && stream && consumers_ok && tasks_ok {
        HttpResponse::Ok().json(body)
    } else {
        if !tasks_ok || !consumers_ok {
            tracing::warn!(%body, "not ready: a stream task is down or a consumer lags");
        }
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Every registered log consumer with its cursor and lag (also set as gauges), and whether all
/// are within `max_consumer_lag`.
async fn consumer_report(state: &AppState) -> (serde_json::Value, bool) {
    let (cursors, heads) = match state.store.cursors().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read consumer cursors");
            return (serde_json::Value::Null, false);
        }
    };
    let partitions = heads.len() as u32;
    let mut ok = true;
    let mut out = serde_json::Map::new();
    for (name, at) in cursors {
        let head = heads.get(at.partition as usize).copied().unwrap_or(0);
        let lag = state.store.lag(at.seq, head);
        let task = crate::streams::consumer::task_name(&name, at.partition, partitions);
        state
            .metrics
            .stream_consumer_lag
            .with_label_values(&[task.as_str()])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        let lagging = lag > state.max_consumer_lag;
        ok &= !lagging;
        out.insert(
            task,
            serde_json::json!({"cursor": at.seq, "lag": lag, "lagging": lagging}),
        );
    }
    (serde_json::Value::Object(out), ok)
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
    let _ = consumer_report(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// This document.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::ApiDoc::openapi())
}
