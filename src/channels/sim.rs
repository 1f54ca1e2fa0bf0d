//! The adapter for the shipped channel simulator's protocol (`paycore_channel_sim::protocol`):
//! HMAC-signed JSON over HTTP, in the shape real channels use (out_trade_no, notify_url,
//! asynchronous signed callbacks answered with a success code).

use super::{
    CallbackEvent, ChannelError, CloseOutcome, OpenPayment, OpenedPayment, PaymentChannel,
    PaymentResult,
};
use crate::config::ChannelSettings;
use crate::domain::OrderId;
use async_trait::async_trait;
use paycore_channel_sim::protocol as p;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Largest clock distance accepted on a callback's timestamp.
const CALLBACK_WINDOW_SECS: i64 = 300;

/// A client of the simulator.
pub struct SimChannel {
    base_url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

impl SimChannel {
    /// A client for the simulator at `base_url`.
    pub fn new(base_url: String, settings: &ChannelSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.request_timeout_ms))
            .pool_max_idle_per_host(settings.max_in_flight)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            secret: settings.secret.expose().as_bytes().to_vec(),
            http,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), ChannelError> {
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let sig = p::sign(&self.secret, ts, &body);
        let resp = self
            .http
            .request(method, format!("{}{}", self.base_url, path))
            .header(p::TIMESTAMP_HEADER, ts.to_string())
            .header(p::SIGNATURE_HEADER, sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        Ok((status, bytes.to_vec()))
    }

    fn error_from(status: u16, body: &[u8]) -> ChannelError {
        let parsed: Option<p::ErrorBody> = serde_json::from_slice(body).ok();
        match (status, parsed) {
            (429, _) => ChannelError::RateLimited("sim".into()),
            (s, _) if s >= 500 => ChannelError::Unavailable(format!("HTTP {s}")),
            (_, Some(e)) => ChannelError::Rejected {
                code: e.code,
                message: e.message,
            },
            (s, None) => ChannelError::Unavailable(format!("HTTP {s} with an unreadable body")),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ChannelError> {
        serde_json::from_slice(body)
            .map_err(|e| ChannelError::Unavailable(format!("unreadable answer: {e}")))
    }
}

fn parse_time(s: Option<&str>) -> OffsetDateTime {
    s.and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .unwrap_or_else(OffsetDateTime::now_utc)
}

fn result_of(
    view_status: p::PaymentStatus,
    trade_no: &str,
    amount: i64,
    paid_at: Option<&str>,
    reason: Option<&str>,
) -> Option<PaymentResult> {
    match view_status {
        p::PaymentStatus::Success => Some(PaymentResult::Paid {
            channel_trade_no: trade_no.to_string(),
            amount,
            paid_at: parse_time(paid_at),
        }),
        p::PaymentStatus::Payerror => Some(PaymentResult::Failed {
            reason: reason.unwrap_or("PAYERROR").to_string(),
        }),
        _ => None,
    }
}

#[async_trait]
impl PaymentChannel for SimChannel {
    async fn open_payment(&self, req: &OpenPayment) -> Result<OpenedPayment, ChannelError> {
        let body = p::CreatePaymentRequest {
            out_trade_no: req.order_id.to_string(),
            amount: req.amount.minor_units(),
            currency: req.currency.to_string(),
            pay_method: req.pay_method.as_str().to_string(),
            auth_code: req.auth_code.clone(),
            subject: req.subject.clone(),
            notify_url: req.notify_url.clone(),
        };
        let bytes =
            serde_json::to_vec(&body).map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        let (status, answer) = self
            .send(reqwest::Method::POST, "/sim/v1/payments", bytes)
            .await?;
        if status != 200 {
            return Err(Self::error_from(status, &answer));
        }
        let view: p::PaymentView = Self::decode(&answer)?;
        let payload = serde_json::json!({ "code_url": view.code_url, "trade_no": view.trade_no });
        Ok(OpenedPayment {
            channel_trade_no: Some(view.trade_no),
            payload,
        })
    }

    async fn close_payment(&self, order_id: &OrderId) -> Result<CloseOutcome, ChannelError> {
        let path = format!("/sim/v1/payments/{order_id}/close");
        let (status, answer) = self
            .send(reqwest::Method::POST, &path, b"{}".to_vec())
            .await?;
        match status {
            200 => {
                let view: p::PaymentView = Self::decode(&answer)?;
                match view.status {
                    p::PaymentStatus::Success => {
                        Ok(CloseOutcome::AlreadyPaid(PaymentResult::Paid {
                            channel_trade_no: view.trade_no,
                            amount: view.amount,
                            paid_at: parse_time(view.paid_at.as_deref()),
                        }))
                    }
                    _ => Ok(CloseOutcome::Closed),
                }
            }
            // Never opened there: nothing can be charged, so it is closed as far as money goes.
            404 => Ok(CloseOutcome::Closed),
            409 => {
                let err = Self::error_from(status, &answer);
                match &err {
                    ChannelError::Rejected { code, .. } if code == p::ORDERPAID => {
                        // Learn the charge so the order can record it.
                        let (s, a) = self
                            .send(
                                reqwest::Method::GET,
                                &format!("/sim/v1/payments/{order_id}"),
                                Vec::new(),
                            )
                            .await?;
                        if s != 200 {
                            return Err(Self::error_from(s, &a));
                        }
                        let view: p::PaymentView = Self::decode(&a)?;
                        let result = result_of(
                            view.status,
                            &view.trade_no,
                            view.amount,
                            view.paid_at.as_deref(),
                            None,
                        )
                        .ok_or_else(|| {
                            ChannelError::Unavailable(
                                "ORDERPAID but the payment is not paid".into(),
                            )
                        })?;
                        Ok(CloseOutcome::AlreadyPaid(result))
                    }
                    _ => Err(err),
                }
            }
            _ => Err(Self::error_from(status, &answer)),
        }
    }

    async fn refund(
        &self,
        order_id: &OrderId,
        refund_no: &str,
        amount: i64,
    ) -> Result<(), ChannelError> {
        let body = p::RefundRequest {
            out_trade_no: order_id.to_string(),
            out_refund_no: refund_no.to_string(),
            amount,
        };
        let bytes =
            serde_json::to_vec(&body).map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        let (status, answer) = self
            .send(reqwest::Method::POST, "/sim/v1/refunds", bytes)
            .await?;
        if status != 200 {
            return Err(Self::error_from(status, &answer));
        }
        let view: p::RefundView = Self::decode(&answer)?;
        match view.status {
            p::RefundStatus::Success => Ok(()),
            p::RefundStatus::Failed => Err(ChannelError::Rejected {
                code: "REFUND_FAILED".into(),
                message: view.out_refund_no,
            }),
        }
    }

    fn verify_callback(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<CallbackEvent, ChannelError> {
        let ts: i64 = header(p::TIMESTAMP_HEADER)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| ChannelError::BadCallback("missing or bad timestamp".into()))?;
        let sig = header(p::SIGNATURE_HEADER)
            .ok_or_else(|| ChannelError::BadCallback("missing signature".into()))?;
        if (OffsetDateTime::now_utc().unix_timestamp() - ts).abs() > CALLBACK_WINDOW_SECS {
            return Err(ChannelError::BadCallback(
                "timestamp outside the window".into(),
            ));
        }
        if !p::verify(&self.secret, ts, body, &sig) {
            return Err(ChannelError::BadCallback("bad signature".into()));
        }
        let cb: p::CallbackBody = serde_json::from_slice(body)
            .map_err(|e| ChannelError::BadCallback(format!("body: {e}")))?;
        let result = result_of(
            cb.status,
            &cb.trade_no,
            cb.amount,
            cb.paid_at.as_deref(),
            cb.failure_reason.as_deref(),
        )
        .ok_or_else(|| {
            ChannelError::BadCallback(format!("status {:?} is not a result", cb.status))
        })?;
        Ok(CallbackEvent {
            order_id: cb.out_trade_no,
            result,
        })
    }

    fn callback_answer(&self, accepted: bool, message: &str) -> serde_json::Value {
        let ack = p::CallbackAck {
            code: if accepted { "SUCCESS" } else { "FAIL" }.to_string(),
            message: if message.is_empty() {
                None
            } else {
                Some(message.to_string())
            },
        };
        serde_json::to_value(ack).unwrap_or_default()
    }
}
