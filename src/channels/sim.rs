//! The adapter for the shipped channel simulator's protocol (`paycore_channel_sim::protocol`):
//! HMAC-signed JSON over HTTP, in the shape real channels use (out_trade_no, notify_url,
//! asynchronous signed callbacks answered with a success code).

use super::{
    CallbackEvent, ChannelError, CloseOutcome, OpenPayment, OpenedPayment, PaymentChannel,
    PaymentResult, PaymentState, PaymentStatus, RefundCall,
};
use crate::config::ChannelSettings;
use crate::domain::{OrderId, RefundId, RefundOutcome, ReportedPayment};
use crate::outbound::{Limits, Origin};
use async_trait::async_trait;
use hyper::Method;
use paycore_channel_sim::protocol as p;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Largest clock distance accepted on a callback's timestamp.
const CALLBACK_WINDOW_SECS: u64 = 300;

/// The largest answer read from the channel: a payment view with its charges is a few KiB.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A client of the simulator.
pub struct SimChannel {
    secret: Vec<u8>,
    origin: Origin,
}

impl SimChannel {
    /// A client for the simulator at `base_url`.
    pub fn new(base_url: String, settings: &ChannelSettings) -> Result<Self, String> {
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let origin = Origin::new(
            &base_url,
            Limits {
                request_timeout: timeout,
                connect_timeout: timeout,
                max_idle: settings.max_in_flight,
                max_answer_bytes: MAX_ANSWER_BYTES,
            },
        )?;
        Ok(Self {
            secret: settings.secret.expose().as_bytes().to_vec(),
            origin,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, bytes::Bytes), ChannelError> {
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let sig = p::sign(&self.secret, ts, &body);
        let answer = self
            .origin
            .send_signed_json(
                method,
                path,
                (p::TIMESTAMP_HEADER, ts),
                (p::SIGNATURE_HEADER, &sig),
                body,
            )
            .await
            .map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        Ok((answer.status, answer.body))
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

fn charge(c: &p::ChargeRecord, view: &p::PaymentView) -> ReportedPayment {
    ReportedPayment {
        channel_trade_no: c.trade_no.clone(),
        amount: c.amount,
        // Older simulators did not name a charge's currency: it is the payment's.
        currency: if c.currency.is_empty() {
            view.currency.clone()
        } else {
            c.currency.clone()
        },
        paid_at: parse_time(Some(&c.charged_at)),
    }
}

/// Every charge of a payment view; a paid view without a charge list stands for its own charge.
fn charges_of(view: &p::PaymentView) -> Vec<ReportedPayment> {
    if !view.charges.is_empty() {
        return view.charges.iter().map(|c| charge(c, view)).collect();
    }
    match view.status {
        p::PaymentStatus::Success => vec![ReportedPayment {
            channel_trade_no: view.trade_no.clone(),
            amount: view.amount,
            currency: view.currency.clone(),
            paid_at: parse_time(view.paid_at.as_deref()),
        }],
        _ => Vec::new(),
    }
}

fn refund_outcome(view: &p::RefundView) -> RefundOutcome {
    match view.status {
        p::RefundStatus::Success => RefundOutcome::Succeeded,
        p::RefundStatus::Failed => {
            RefundOutcome::Failed("the channel reports the refund failed".into())
        }
    }
}

impl SimChannel {
    async fn view(&self, order_id: &OrderId) -> Result<Option<p::PaymentView>, ChannelError> {
        let (status, answer) = self
            .send(
                Method::GET,
                &format!("/sim/v1/payments/{order_id}"),
                Vec::new(),
            )
            .await?;
        match status {
            200 => Ok(Some(Self::decode(&answer)?)),
            404 => Ok(None),
            _ => Err(Self::error_from(status, &answer)),
        }
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
        let (status, answer) = self.send(Method::POST, "/sim/v1/payments", bytes).await?;
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

    async fn query_payment(&self, order_id: &OrderId) -> Result<PaymentStatus, ChannelError> {
        let Some(view) = self.view(order_id).await? else {
            return Ok(PaymentStatus {
                state: PaymentState::NotFound,
                charges: Vec::new(),
            });
        };
        let charges = charges_of(&view);
        let state = match view.status {
            p::PaymentStatus::Notpay => PaymentState::Open,
            p::PaymentStatus::Closed => PaymentState::Closed,
            p::PaymentStatus::Payerror => PaymentState::Failed {
                reason: view.failure_reason.unwrap_or_else(|| "PAYERROR".into()),
            },
            p::PaymentStatus::Success => PaymentState::Paid,
        };
        Ok(PaymentStatus { state, charges })
    }

    async fn close_payment(&self, order_id: &OrderId) -> Result<CloseOutcome, ChannelError> {
        let path = format!("/sim/v1/payments/{order_id}/close");
        let (status, answer) = self.send(Method::POST, &path, b"{}".to_vec()).await?;
        match status {
            200 => {
                let view: p::PaymentView = Self::decode(&answer)?;
                match view.status {
                    p::PaymentStatus::Success => Ok(CloseOutcome::AlreadyPaid(charges_of(&view))),
                    _ => Ok(CloseOutcome::Closed),
                }
            }
            // Never opened there: nothing can be charged, so it is closed as far as money goes.
            404 => Ok(CloseOutcome::Closed),
            409 => match Self::error_from(status, &answer) {
                ChannelError::Rejected { code, .. } if code == p::ORDERPAID => {
                    // Learn the charges so the order can record them.
                    let view = self.view(order_id).await?.ok_or_else(|| {
                        ChannelError::Unavailable("ORDERPAID but no payment".into())
                    })?;
                    let charges = charges_of(&view);
                    if charges.is_empty() {
                        return Err(ChannelError::Unavailable(
                            "ORDERPAID but the payment is not paid".into(),
                        ));
                    }
                    Ok(CloseOutcome::AlreadyPaid(charges))
                }
                err => Err(err),
            },
            _ => Err(Self::error_from(status, &answer)),
        }
    }

    async fn refund(&self, call: &RefundCall) -> Result<RefundOutcome, ChannelError> {
        let body = p::RefundRequest {
            out_trade_no: call.order_id.to_string(),
            out_refund_no: call.refund_id.to_string(),
            amount: call.amount,
            trade_no: call.channel_trade_no.clone(),
        };
        let bytes =
            serde_json::to_vec(&body).map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        let (status, answer) = self.send(Method::POST, "/sim/v1/refunds", bytes).await?;
        if status != 200 {
            return Err(Self::error_from(status, &answer));
        }
        let view: p::RefundView = Self::decode(&answer)?;
        Ok(refund_outcome(&view))
    }

    async fn query_refund(
        &self,
        refund_id: &RefundId,
    ) -> Result<Option<RefundOutcome>, ChannelError> {
        let (status, answer) = self
            .send(
                Method::GET,
                &format!("/sim/v1/refunds/{refund_id}"),
                Vec::new(),
            )
            .await?;
        match status {
            200 => Ok(Some(refund_outcome(&Self::decode(&answer)?))),
            404 => Ok(None),
            _ => Err(Self::error_from(status, &answer)),
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
        // abs_diff cannot wrap: `(now - ts).abs()` did for ts near i64::MIN, and let any old
        // signed callback through.
        if OffsetDateTime::now_utc().unix_timestamp().abs_diff(ts) > CALLBACK_WINDOW_SECS {
            return Err(ChannelError::BadCallback(
                "timestamp outside the window".into(),
            ));
        }
        if !p::verify(&self.secret, ts, body, &sig) {
            return Err(ChannelError::BadCallback("bad signature".into()));
        }
        let cb: p::CallbackBody = serde_json::from_slice(body)
            .map_err(|e| ChannelError::MalformedCallback(format!("body: {e}")))?;
        let result = match cb.status {
            p::PaymentStatus::Success => PaymentResult::Paid(ReportedPayment {
                channel_trade_no: cb.trade_no,
                amount: cb.amount,
                currency: cb.currency,
                paid_at: parse_time(cb.paid_at.as_deref()),
            }),
            p::PaymentStatus::Payerror => PaymentResult::Failed {
                reason: cb.failure_reason.unwrap_or_else(|| "PAYERROR".into()),
            },
            other => {
                return Err(ChannelError::MalformedCallback(format!(
                    "status {other:?} is not a result"
                )));
            }
        };
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
