//! Notification routes: `GET /v1/notifications?order_id=X` (a merchant's deliveries for one of
//! its orders) and `POST /v1/notifications/{notification_id}/redeliver` (send one again). Both
//! are merchant-signed and see only the merchant's own notifications.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::orders::{authed, parse_order_id};
use crate::domain::NotificationId;
use crate::domain::notification::{Notification, NotificationStatus};
use crate::domain::view::rfc3339;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One notification delivery, as a merchant sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationView {
    /// Stable id, sent as `X-Paycore-Notification-Id` on every attempt.
    pub notification_id: String,
    /// The event delivered.
    pub event_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `PENDING`, `DELIVERED` or `DEAD`.
    pub status: String,
    /// Attempts made so far (redeliveries add to them).
    pub attempts: u32,
    /// HTTP status of the last attempt; null when it got no answer (or none was made yet).
    pub last_status: Option<u16>,
    /// Why the last attempt failed (e.g. `HTTP 500`, `connection failed: ...`).
    pub last_error: Option<String>,
    /// RFC 3339: when the next attempt is due, while PENDING; null once DELIVERED or DEAD.
    pub next_attempt_at: Option<String>,
}

impl From<&Notification> for NotificationView {
    fn from(n: &Notification) -> Self {
        Self {
            notification_id: n.notification_id.to_string(),
            event_id: n.event_id.to_string(),
            event_type: n.event_type.clone(),
            status: n.status.as_str().to_string(),
            attempts: n.attempts,
            last_status: n.last_status,
            last_error: n.last_error.clone(),
            next_attempt_at: (n.status == NotificationStatus::Pending)
                .then(|| rfc3339(n.next_attempt_at)),
        }
    }
}

/// `GET /v1/notifications` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationsQuery {
    /// The order whose notifications are listed.
    pub order_id: String,
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "notification_not_found",
        "no such notification",
    )
}

/// Lists the merchant's notification deliveries for one of its orders, by version.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(NotificationsQuery),
    responses(
        (status = 200, body = Vec<NotificationView>),
        (status = 404, description = "order_not_found (also for another merchant's order)", body = ErrorBody),
        (status = 422, description = "invalid_request (order_id missing)", body = ErrorBody)))]
pub async fn list_notifications(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let q = web::Query::<NotificationsQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid("order_id", e.to_string()))?;
    let order_id = parse_order_id(&q.order_id)?;
    let rows = state
        .notifications
        .for_order(&merchant.id, &order_id)
        .await?;
    let views: Vec<NotificationView> = rows.iter().map(NotificationView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Sends a notification again: a DELIVERED or DEAD one becomes PENDING, due now, from the start
/// of the retry schedule; a PENDING one is answered as it is (it goes out anyway).
#[utoipa::path(post, path = "/v1/notifications/{notification_id}/redeliver", tag = "notifications",
    params(("notification_id" = String, Path, description = "the notification's id")),
    responses(
        (status = 202, description = "queued for delivery", body = NotificationView),
        (status = 404, description = "notification_not_found (also for another merchant's)", body = ErrorBody)))]
pub async fn redeliver_notification(
    req: HttpRequest,
    payload: web::Payload,
    notification_id: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let id = NotificationId::parse(notification_id).map_err(|_| not_found())?;
    match state.notifications.redeliver(&merchant.id, &id).await? {
        Some(n) => Ok(HttpResponse::Accepted().json(NotificationView::from(&n))),
        None => Err(not_found()),
    }
}
