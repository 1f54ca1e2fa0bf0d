//! Merchant-facing order routes: submit tokens, create, read, look-up, pay, close. Each handler
//! reads the body under the limit, authenticates the merchant, parses, calls `Orders`, answers.

use super::error::{ApiError, ErrorBody};
use super::operations::Answer;
pub(super) use super::operations::parse_order_id;
use super::types::{
    CreateOrderRequest, LookupQuery, OrderView, PayOrderRequest, PayView, TokenView,
};
use super::{AppState, body};
use crate::domain::MerchantOrderNo;
use actix_web::{HttpRequest, HttpResponse, web};

/// An operation's answer as an HTTP response.
pub(super) fn respond(a: Answer) -> HttpResponse {
    HttpResponse::build(a.status)
        .content_type(actix_web::http::header::ContentType::json())
        .body(a.body)
}

pub(super) async fn authed(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(web::Bytes, super::auth::AuthedMerchant), ApiError> {
    let body = body::read(req, payload, state.body_limit).await?;
    let merchant = state.auth.verify(req, &body)?;
    Ok((body, merchant))
}

/// Issues a one-time submit token.
#[utoipa::path(post, path = "/v1/submit-tokens", tag = "orders",
    responses((status = 201, body = TokenView), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn issue_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let t = state.orders.issue_token(merchant.id).await?;
    let expires_at = t
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(HttpResponse::Created().json(TokenView {
        token: t.token.to_string(),
        expires_at,
    }))
}

/// Creates an order, consuming a submit token.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = CreateOrderRequest,
    responses(
        (status = 201, body = OrderView),
        (status = 400, description = "malformed_json", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "token_used or duplicate_order (with order_id)", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 422, description = "invalid_request (with field) or token_invalid", body = ErrorBody),
        (status = 503, description = "overloaded or storage_unavailable; nothing was stored", body = ErrorBody)))]
pub async fn create_order(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (body, merchant) = authed(&req, payload, &state).await?;
    Ok(respond(state.operations.create(&merchant, &body).await?))
}

/// Reads an order.
#[utoipa::path(get, path = "/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = String, Path, description = "paycore's order id")),
    responses((status = 200, body = OrderView), (status = 404, description = "order_not_found", body = ErrorBody)))]
pub async fn get_order(
    req: HttpRequest,
    payload: web::Payload,
    order_id: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let id = parse_order_id(order_id)?;
    let order = state.orders.get(&merchant.id, &id).await?;
    Ok(HttpResponse::Ok().json(OrderView::from(&order)))
}

/// Looks an order up by the merchant's number.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(LookupQuery),
    responses((status = 200, body = OrderView), (status = 404, description = "order_not_found", body = ErrorBody),
              (status = 422, description = "invalid_request", body = ErrorBody)))]
pub async fn lookup_order(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let q = web::Query::<LookupQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid("merchant_order_no", e.to_string()))?;
    let no = MerchantOrderNo::parse(&q.merchant_order_no)
        .map_err(|e| ApiError::invalid("merchant_order_no", e.to_string()))?;
    let order = state.orders.find(&merchant.id, &no).await?;
    Ok(HttpResponse::Ok().json(OrderView::from(&order)))
}

/// Starts payment; every repeat while paying answers the same `pay_serial_no`.
#[utoipa::path(post, path = "/v1/orders/{order_id}/pay", tag = "orders", request_body = PayOrderRequest,
    params(("order_id" = String, Path, description = "paycore's order id")),
    responses(
        (status = 202, body = PayView),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "already_paid, order_closed, order_failed or order_expired", body = ErrorBody),
        (status = 422, description = "invalid_request", body = ErrorBody),
        (status = 502, description = "channel_rejected or channel_unavailable; the order is unchanged", body = ErrorBody),
        (status = 503, description = "channel_busy with Retry-After; the order is unchanged", body = ErrorBody)))]
pub async fn pay_order(
    req: HttpRequest,
    payload: web::Payload,
    order_id: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (body, merchant) = authed(&req, payload, &state).await?;
    Ok(respond(
        state.operations.pay(&merchant, order_id, &body).await?,
    ))
}

/// Closes an unpaid order (a paying one only once the channel confirms it is closed unpaid).
#[utoipa::path(post, path = "/v1/orders/{order_id}/close", tag = "orders",
    params(("order_id" = String, Path, description = "paycore's order id")),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody),
              (status = 409, description = "already_paid or order_failed", body = ErrorBody),
              (status = 503, description = "channel_busy", body = ErrorBody)))]
pub async fn close_order(
    req: HttpRequest,
    payload: web::Payload,
    order_id: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    Ok(respond(state.operations.close(&merchant, order_id).await?))
}
