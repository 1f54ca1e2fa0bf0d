//! Refund routes: `POST /v1/orders/{order_id}/refunds` and `GET /v1/refunds/{refund_id}`. The
//! order's actor decides (idempotent by `refund_no`, never above the paid amount) and answers
//! once the refund is durably recorded; the channel is asked right after, and again on the
//! refund timer until the refund is final.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::orders::{authed, respond};
use super::types::{CreateRefundRequest, RefundView};
use crate::actors::OrderError;
use crate::domain::RefundId;
use actix_web::{HttpRequest, HttpResponse, web};

/// Refunds (part of) a paid order.
#[utoipa::path(post, path = "/v1/orders/{order_id}/refunds", tag = "refunds", request_body = CreateRefundRequest,
    params(("order_id" = String, Path, description = "paycore's order id")),
    responses(
        (status = 202, description = "recorded (or the same refund_no again); the channel result follows", body = RefundView),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_not_paid; refund_no_reused (the number names a refund of another amount); fulfillment_pending (the business system has not credited the order yet: refund once it is fulfilled or given up); reversal_refused (the business system refused to reverse its credit: nothing was refunded)", body = ErrorBody),
        (status = 422, description = "invalid_request, refund_exceeds_paid or refund_limit", body = ErrorBody),
        (status = 503, description = "overloaded, unavailable or biller_unavailable (the reversal got no answer); retry with the same refund_no", body = ErrorBody)))]
pub async fn create_refund(
    req: HttpRequest,
    payload: web::Payload,
    order_id: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (body, merchant) = authed(&req, payload, &state).await?;
    Ok(respond(
        state.operations.refund(&merchant, order_id, &body).await?,
    ))
}

/// Reads a refund.
#[utoipa::path(get, path = "/v1/refunds/{refund_id}", tag = "refunds",
    params(("refund_id" = String, Path, description = "paycore's refund id")),
    responses((status = 200, body = RefundView), (status = 404, description = "refund_not_found", body = ErrorBody)))]
pub async fn get_refund(
    req: HttpRequest,
    payload: web::Payload,
    refund_id: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let not_found = || {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "refund_not_found",
            "no such refund",
        )
    };
    let id = RefundId::parse(refund_id).map_err(|_| not_found())?;
    match state.orders.refund(&merchant.id, &id).await {
        Ok((order, refund)) => Ok(HttpResponse::Ok().json(RefundView::of(&order, &refund))),
        Err(OrderError::NotFound) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}
