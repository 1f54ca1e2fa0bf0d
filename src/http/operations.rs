//! The order operations every ingress shares: create, pay, close and refund, each one function
//! from an authenticated merchant and the request's JSON body to the contract's answer (status
//! and JSON body, or the contract's error). The HTTP handlers and the Kafka command consumer
//! both call these, so a command answers exactly what the HTTP call would, from the same code.
//! Authentication, body limits and the transport's framing stay with each ingress.

use super::auth::AuthedMerchant;
use super::body;
use super::error::ApiError;
use super::types::{
    CreateOrderRequest, CreateRefundRequest, OrderFields, OrderView, PayOrderRequest, PayView,
    RefundView,
};
use crate::actors::{CommandKey, OrderError, Orders};
use crate::domain::{NewOrder, Order, OrderId, OrderStatus, SubmitToken};
use actix_web::http::StatusCode;
use std::collections::HashMap;

/// A successful answer: status and the JSON body, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON bytes.
    pub body: Vec<u8>,
}

impl Answer {
    fn json(status: StatusCode, value: &impl serde::Serialize) -> Self {
        // The views are plain data: serializing cannot fail.
        Self {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

/// What the operations need beside the order front door: the settings creates depend on.
#[derive(Clone)]
pub struct Operations {
    /// Order operations.
    pub orders: Orders,
    /// Life of an unpaid order when the create names none.
    pub default_expire_seconds: i64,
    /// Merchants' own default lives of an unpaid order.
    pub merchant_expire_seconds: HashMap<String, i64>,
    /// Shortest life a create may ask for.
    pub min_expire_seconds: i64,
    /// The addresses notify URLs may point at.
    pub notify_policy: crate::domain::AddressPolicy,
}

/// Parses an order id from a path or a command: an id we never issued cannot name an order,
/// so it answers as an unknown one.
pub fn parse_order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).map_err(|_| OrderError::NotFound.into())
}

/// The answer to a successful create: 201 with the order.
fn created(order: &Order) -> Answer {
    Answer::json(StatusCode::CREATED, &OrderView::from(order))
}

impl Operations {
    fn new_order(
        &self,
        merchant: &AuthedMerchant,
        fields: OrderFields,
    ) -> Result<NewOrder, ApiError> {
        let default_expire = self
            .merchant_expire_seconds
            .get(merchant.id.as_str())
            .copied()
            .unwrap_or(self.default_expire_seconds);
        fields.parse(
            merchant,
            default_expire,
            self.min_expire_seconds,
            &self.notify_policy,
        )
    }

    /// `POST /v1/orders`: creates an order, consuming the body's submit token.
    pub async fn create(&self, merchant: &AuthedMerchant, body: &[u8]) -> Result<Answer, ApiError> {
        let (token, fields) = body::json::<CreateOrderRequest>(body)?.split();
        let token = SubmitToken::parse(&token).map_err(|_| OrderError::TokenInvalid)?;
        let new = self.new_order(merchant, fields)?;
        let order = self.orders.create(token, new).await?;
        Ok(created(&order))
    }

    /// A Kafka create: the same fields without a submit token, admitted by the command's key;
    /// its 201 answer is stored with the order in one write.
    pub async fn create_for_command(
        &self,
        merchant: &AuthedMerchant,
        body: &[u8],
        key: CommandKey,
    ) -> Result<Answer, ApiError> {
        let fields = body::json::<OrderFields>(body)?;
        let new = self.new_order(merchant, fields)?;
        let order = self
            .orders
            .create_for_command(key, new, |o| {
                let a = created(o);
                (a.status.as_u16(), a.body)
            })
            .await?;
        Ok(created(&order))
    }

    /// `POST /v1/orders/{order_id}/pay`: 202 with the payment attempt (the same to every
    /// repeat while paying).
    pub async fn pay(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
    ) -> Result<Answer, ApiError> {
        let id = parse_order_id(order_id)?;
        let pay = body::json::<PayOrderRequest>(body)?.parse()?;
        let order = self.orders.pay(merchant.id.clone(), id, pay).await?;
        match (order.status, order.pay_serial_no) {
            (OrderStatus::Paying, Some(serial)) => Ok(Answer::json(
                StatusCode::ACCEPTED,
                &PayView {
                    order_id: order.order_id.to_string(),
                    status: "PAYING".into(),
                    pay_serial_no: serial.to_string(),
                    channel_payload: order.channel_payload.unwrap_or_default(),
                },
            )),
            _ => Err(
                OrderError::Rejected(crate::domain::Rejection::WrongStatus(order.status)).into(),
            ),
        }
    }

    /// `POST /v1/orders/{order_id}/close`: 200 with the closed order (the body is not read).
    pub async fn close(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
    ) -> Result<Answer, ApiError> {
        let id = parse_order_id(order_id)?;
        let order = self.orders.close(merchant.id.clone(), id).await?;
        Ok(Answer::json(StatusCode::OK, &OrderView::from(&order)))
    }

    /// `POST /v1/orders/{order_id}/refunds`: 202 with the refund (the same refund to a repeat
    /// with the same `refund_no`).
    pub async fn refund(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
    ) -> Result<Answer, ApiError> {
        let id = parse_order_id(order_id)?;
        let request = body::json::<CreateRefundRequest>(body)?.parse()?;
        let (order, refund) = self
            .orders
            .request_refund(merchant.id.clone(), id, request)
            .await?;
        Ok(Answer::json(
            StatusCode::ACCEPTED,
            &RefundView::of(&order, &refund),
        ))
    }
}
