//! The operator's endpoints: `POST /admin/reload` re-reads the settings as SIGHUP does. They
//! take `Authorization: Bearer <admin.token>`; with no token configured they do not exist (404),
//! and a wrong or missing token answers 401 without saying which.

use super::AppState;
use super::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings applied by this reload (dotted keys; never values).
    pub applied: Vec<String>,
    /// Settings that differ from those paycore started with but apply only at a restart.
    pub restart_required: Vec<String>,
}

/// Re-reads, checks and applies the settings (the app implements it; http only calls it).
#[async_trait::async_trait]
pub trait Reload: Send + Sync {
    /// Applies the settings file and environment as they are now, or changes nothing and says
    /// why.
    async fn reload(&self) -> Result<ReloadReport, String>;
    /// The admin endpoints' bearer token as now configured; empty when they are off.
    fn admin_token(&self) -> String;
}

/// `POST /admin/reload`: 200 with what changed, 422 `invalid_settings` (nothing changed).
pub async fn reload(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(reloader) = &state.reload else {
        return Err(not_found());
    };
    authorize(&req, &reloader.admin_token())?;
    match reloader.reload().await {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(why) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_settings",
            why,
        )),
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Checks the bearer token in constant time; no token configured means no endpoint.
fn authorize(req: &HttpRequest, token: &str) -> Result<(), ApiError> {
    if token.is_empty() {
        return Err(not_found());
    }
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::domain::signing::constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("admin token missing or wrong"))
    }
}
