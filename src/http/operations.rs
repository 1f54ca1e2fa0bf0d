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
use crate::actors::{CommandAnswer, CommandKey, OrderError, Orders};
use crate::config::live::Live;
use crate::domain::{NewOrder, Order, OrderId, OrderStatus, SubmitToken};
use actix_web::http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Merchants' own default lives of an unpaid order (replaced by a reload).
    pub merchant_expire_seconds: Arc<Live<HashMap<String, i64>>>,
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

/// A create's 201 with the order's view already rendered (`Orders::create_with_view`): the
/// bytes `created` would render.
fn created_with(view: Vec<u8>) -> Answer {
    Answer {
        status: StatusCode::CREATED,
        body: view,
    }
}

impl Operations {
    fn new_order(
        &self,
        merchant: &AuthedMerchant,
        fields: OrderFields,
    ) -> Result<NewOrder, ApiError> {
        let default_expire = self
            .merchant_expire_seconds
            .get()
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
        // The answer is the created event's data: the view `created` would render, rendered once.
        let (_, view) = self.orders.create_with_view(token, new).await?;
        Ok(created_with(view.into_bytes()))
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
        // The answer is the created event's data (the order's view, the same text `created`
        // renders), rendered once: stored with the order, and returned.
        let mut answer = None;
        let order = self
            .orders
            .create_for_command(key, new, |_, view| {
                let a = created_with(view.as_bytes().to_vec());
                let stored = (a.status.as_u16(), a.body.clone());
                answer = Some(a);
                stored
            })
            .await?;
        Ok(answer.unwrap_or_else(|| created(&order)))
    }

    /// `POST /v1/orders/{order_id}/pay`: 202 with the payment attempt (the same to every
    /// repeat while paying).
    pub async fn pay(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
    ) -> Result<Answer, ApiError> {
        self.pay_keyed(merchant, order_id, body, None).await
    }

    /// A Kafka pay: the HTTP pay, with the 202 answer stored in the same write as the PAYING
    /// state it answers.
    pub async fn pay_for_command(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
        key: CommandKey,
    ) -> Result<Answer, ApiError> {
        self.pay_keyed(merchant, order_id, body, Some(key)).await
    }

    async fn pay_keyed(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
        key: Option<CommandKey>,
    ) -> Result<Answer, ApiError> {
        let id = parse_order_id(order_id)?;
        let pay = body::json::<PayOrderRequest>(body)?.parse()?;
        let command = key.map(|key| answering(key, paid_answer));
        let order = self
            .orders
            .pay_answering(merchant.id.clone(), id, pay, command)
            .await?;
        paid_answer(&order)
    }

    /// `POST /v1/orders/{order_id}/close`: 200 with the closed order (the body is not read).
    pub async fn close(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
    ) -> Result<Answer, ApiError> {
        self.close_keyed(merchant, order_id, None).await
    }

    /// A Kafka close: the HTTP close, with the 200 answer stored in the same write as the
    /// closed state.
    pub async fn close_for_command(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        key: CommandKey,
    ) -> Result<Answer, ApiError> {
        self.close_keyed(merchant, order_id, Some(key)).await
    }

    async fn close_keyed(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        key: Option<CommandKey>,
    ) -> Result<Answer, ApiError> {
        let id = parse_order_id(order_id)?;
        let command = key.map(|key| answering(key, |o| Ok(closed_answer(o))));
        let order = self
            .orders
            .close_answering(merchant.id.clone(), id, command)
            .await?;
        Ok(closed_answer(&order))
    }

    /// `POST /v1/orders/{order_id}/refunds`: 202 with the refund (the same refund to a repeat
    /// with the same `refund_no`).
    pub async fn refund(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
    ) -> Result<Answer, ApiError> {
        self.refund_keyed(merchant, order_id, body, None).await
    }

    /// A Kafka refund: the HTTP refund, with the 202 answer stored in the same write as the
    /// refund it opens.
    pub async fn refund_for_command(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
        key: CommandKey,
    ) -> Result<Answer, ApiError> {
        self.refund_keyed(merchant, order_id, body, Some(key)).await
    }

    async fn refund_keyed(
        &self,
        merchant: &AuthedMerchant,
        order_id: &str,
        body: &[u8],
        key: Option<CommandKey>,
    ) -> Result<Answer, ApiError> {
        let id = parse_order_id(order_id)?;
        let request = body::json::<CreateRefundRequest>(body)?.parse()?;
        let command = key.map(|key| {
            let no = request.refund_no.clone();
            answering(key, move |o: &Order| {
                let refund = o
                    .refunds
                    .iter()
                    .find(|r| r.refund_no.as_ref() == Some(&no))
                    .ok_or(OrderError::Rejected(
                        crate::domain::Rejection::UnknownRefund,
                    ))?;
                Ok(refund_answer(o, refund))
            })
        });
        let (order, refund) = self
            .orders
            .request_refund_answering(merchant.id.clone(), id, request, command)
            .await?;
        Ok(refund_answer(&order, &refund))
    }
}

/// A command's key with the rendering of its answer, for the order's actor to store with the
/// change (an error renders as the contract's error body).
fn answering(
    key: CommandKey,
    render: impl Fn(&Order) -> Result<Answer, ApiError> + Send + Sync + 'static,
) -> CommandAnswer {
    CommandAnswer {
        key,
        render: Box::new(move |o| match render(o) {
            Ok(a) => (a.status.as_u16(), a.body),
            Err(e) => (e.status().as_u16(), e.body_bytes()),
        }),
    }
}

/// The answer to a pay: 202 with the attempt while PAYING; otherwise the status refuses.
fn paid_answer(order: &Order) -> Result<Answer, ApiError> {
    match (order.status, &order.pay_serial_no) {
        (OrderStatus::Paying, Some(serial)) => Ok(Answer::json(
            StatusCode::ACCEPTED,
            &PayView {
                order_id: order.order_id.to_string(),
                status: "PAYING".into(),
                pay_serial_no: serial.to_string(),
                channel_payload: order.channel_payload.clone().unwrap_or_default(),
            },
        )),
        _ => Err(OrderError::Rejected(crate::domain::Rejection::WrongStatus(order.status)).into()),
    }
}

/// The answer to a close: 200 with the order.
fn closed_answer(order: &Order) -> Answer {
    Answer::json(StatusCode::OK, &OrderView::from(order))
}

/// The answer to a refund: 202 with the refund.
fn refund_answer(order: &Order, refund: &crate::domain::Refund) -> Answer {
    Answer::json(StatusCode::ACCEPTED, &RefundView::of(order, refund))
}
