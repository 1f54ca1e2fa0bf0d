//! Channel callbacks: `POST /v1/callbacks/{channel}`. Authenticated by the channel's own
//! signature (never merchant headers), applied through the order's actor, and answered in the
//! channel's format. Repeats are harmless: the state machine treats them as no-ops.

use super::error::{ApiError, ErrorBody};
use super::{AppState, body};
use crate::actors::OrderError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

/// Receives a channel's asynchronous payment result.
#[utoipa::path(post, path = "/v1/callbacks/{channel}", tag = "channels",
    params(("channel" = String, Path, description = "configured channel name")),
    responses((status = 200, description = "accepted, in the channel's format"),
              (status = 400, description = "correctly signed but unreadable; nothing changed", body = ErrorBody),
              (status = 401, description = "bad channel signature; nothing changed", body = ErrorBody),
              (status = 404, description = "unknown channel", body = ErrorBody)))]
pub async fn channel_callback(
    req: HttpRequest,
    payload: web::Payload,
    channel_name: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel_name = channel_name.to_string();
    let channel = state.channels.get(&channel_name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_channel", "no such channel")
    })?;
    let counter = |outcome: &str| {
        state
            .metrics
            .channel_callbacks
            .with_label_values(&[&channel_name, outcome])
            .inc()
    };
    let body = body::read(&req, payload, state.body_limit).await?;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let event = match channel.verify_callback(&header, &body) {
        Ok(e) => e,
        Err(e) => {
            counter("refused");
            tracing::warn!(channel = %channel_name, error = %e, "callback refused");
            return Err(e.into());
        }
    };
    match state.orders.channel_result(&channel_name, event).await {
        Ok(_) => {
            counter("applied");
            Ok(HttpResponse::Ok().json(channel.callback_answer(true, "")))
        }
        Err(e @ (OrderError::NotFound | OrderError::ChannelMismatch)) => {
            // Acknowledge: redelivering a result for an order we never made (or one of another
            // channel) cannot help. Both answer alike, so a caller learns nothing from it.
            counter(if matches!(e, OrderError::NotFound) {
                "unknown_order"
            } else {
                "channel_mismatch"
            });
            tracing::error!(channel = %channel_name, error = %e, "callback refers to no order of this channel");
            Ok(HttpResponse::Ok().json(channel.callback_answer(true, "unknown order")))
        }
        Err(e) => {
            counter("failed");
            tracing::warn!(channel = %channel_name, error = %e, "callback not applied; the channel will redeliver");
            Ok(HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
                .json(channel.callback_answer(false, "temporarily unavailable; retry")))
        }
    }
}
