//! The Redis-lock baseline behind the same front door as paycore: an actix-web server that
//! speaks the subset of the `/v1` contract the scenarios use (token, create, read, pay, close, and
//! the simulator channel's result callback), reads bodies under the same limit and verifies
//! merchants with paycore's own `Authenticator` (and callbacks with the simulator's signature), then
//! performs the classic design's operations (`baseline::RedisLock`). Run as its own process
//! (`paycore-loadtest baseline-serve`), it lets the comparison measure the designs rather than
//! "HTTP and signatures" against "a function call". Its answers are smaller than paycore's full
//! order views, which favours it slightly.

use crate::baseline::RedisLock;
use crate::target::{CallError, Payment, Target};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use paycore::config::{AuthSettings, MerchantSettings, Secret};
use paycore::http::auth::Authenticator;
use paycore::http::body;
use paycore::http::error::ApiError;
use paycore_channel_sim::protocol as p;
use serde::Deserialize;
use serde_json::json;

/// Largest request body, as paycore's default.
const BODY_LIMIT: usize = 64 * 1024;
/// A merchant rate limit high enough never to be what is measured.
const UNLIMITED_RATE: u32 = 10_000_000;

struct State {
    auth: Authenticator,
    core: RedisLock,
    channel_secret: Vec<u8>,
}

#[derive(Deserialize)]
struct CreateBody {
    submit_token: String,
    merchant_order_no: String,
    amount: i64,
}

fn api(e: CallError) -> ApiError {
    match e {
        CallError::Answer { status, code } => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &code,
            code.replace('_', " "),
        ),
        CallError::Transport(what) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", what)
        }
    }
}

async fn authed(
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
) -> Result<web::Bytes, ApiError> {
    let body = body::read(req, payload, BODY_LIMIT).await?;
    state.auth.verify(req, &body)?;
    Ok(body)
}

async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    authed(&req, payload, &state).await?;
    let t = state.core.issue_token().await.map_err(api)?;
    Ok(HttpResponse::Created().json(json!({ "token": t })))
}

async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let body = authed(&req, payload, &state).await?;
    let b: CreateBody = body::json(&body)?;
    let id = state
        .core
        .create(&b.submit_token, &b.merchant_order_no, b.amount)
        .await
        .map_err(api)?;
    Ok(HttpResponse::Created().json(json!({
        "order_id": id,
        "merchant_order_no": b.merchant_order_no,
        "amount": b.amount,
        "status": "CREATED",
    })))
}

async fn read(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    authed(&req, payload, &state).await?;
    let status = state.core.read(&path).await.map_err(api)?;
    Ok(HttpResponse::Ok().json(json!({ "order_id": path.as_str(), "status": status })))
}

async fn pay(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    authed(&req, payload, &state).await?;
    let payment = state.core.pay(&path).await.map_err(api)?;
    Ok(HttpResponse::Accepted().json(json!({
        "order_id": path.as_str(),
        "status": "PAYING",
        "pay_serial_no": payment.serial,
        "channel_payload": { "trade_no": payment.trade_no },
    })))
}

async fn close(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    authed(&req, payload, &state).await?;
    let status = state.core.close(&path).await.map_err(api)?;
    Ok(HttpResponse::Ok().json(json!({ "order_id": path.as_str(), "status": status })))
}

/// A result callback of the simulator channel: signature checked as paycore checks it.
async fn callback(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(&req, payload, BODY_LIMIT).await?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let signed = header(p::TIMESTAMP_HEADER)
        .and_then(|t| t.parse::<i64>().ok())
        .zip(header(p::SIGNATURE_HEADER))
        .is_some_and(|(ts, sig)| p::verify(&state.channel_secret, ts, &body, sig));
    if !signed {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_channel_signature",
            "bad channel signature",
        ));
    }
    let cb: p::CallbackBody = body::json(&body)?;
    let payment = Payment {
        serial: String::new(),
        trade_no: cb.trade_no,
    };
    state
        .core
        .paid_callback(&cb.out_trade_no, &payment, cb.amount)
        .await
        .map_err(api)?;
    Ok(HttpResponse::Ok().json(p::CallbackAck {
        code: "SUCCESS".into(),
        message: None,
    }))
}

async fn ready() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "storage": "ok" }))
}

/// Serves the baseline on `bind:port` with `workers` HTTP workers until ctrl-c.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    core: RedisLock,
    merchant: &str,
    secret: &str,
    channel_secret: &str,
    bind: &str,
    port: u16,
    workers: usize,
) -> anyhow::Result<()> {
    let merchants = [MerchantSettings {
        id: merchant.into(),
        secret: Secret::new(secret),
        channels: vec!["sim".into()],
        rate_limit_per_sec: UNLIMITED_RATE,
        rate_limit_burst: UNLIMITED_RATE,
        default_expire_seconds: None,
        poll_schedule_ms: None,
        biller: None,
        notify_url: None,
        notify_events: None,
    }];
    let auth =
        Authenticator::new(&merchants, &AuthSettings::default()).map_err(anyhow::Error::msg)?;
    let state = web::Data::new(State {
        auth,
        core,
        channel_secret: channel_secret.as_bytes().to_vec(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/readyz", web::get().to(ready))
            .route("/healthz", web::get().to(ready))
            .route("/v1/submit-tokens", web::post().to(token))
            .route("/v1/orders", web::post().to(create))
            .route("/v1/orders/{order_id}", web::get().to(read))
            .route("/v1/orders/{order_id}/pay", web::post().to(pay))
            .route("/v1/orders/{order_id}/close", web::post().to(close))
            .route("/v1/callbacks/{channel}", web::post().to(callback))
    })
    .workers(workers.max(1))
    .bind((bind, port))?;
    let addr = server.addrs().first().copied();
    if let Some(a) = addr {
        println!("redis-lock baseline listening on http://{a}");
    }
    server.run().await?;
    Ok(())
}
