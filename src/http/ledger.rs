//! Ledger routes: `GET /v1/ledger/orders/{order_id}` (the ledger transactions booked for one
//! of the merchant's orders), `GET /v1/ledger/balances` (the merchant's accounts) and
//! `GET /v1/ledger/totals` (paid, refunded and pending read off those accounts). All are
//! merchant-signed and see only the merchant's own orders and accounts. The ledger is booked
//! from the outbox asynchronously, so an answer can trail the order by a moment.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::orders::{authed, parse_order_id};
use crate::domain::ledger::{AccountBalance, merchant_totals};
use crate::domain::view::rfc3339;
use crate::storage::BookedTxn;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One posting: `amount` minor units into `account` (out of it when negative).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostingView {
    /// `<kind>:<owner>`: `channel_pending:<channel>`, `merchant_pending:<merchant>`,
    /// `channel_clearing:<channel>`, `merchant_payable:<merchant>`, `refunds_payable:<merchant>`.
    pub account: String,
    /// Signed minor units; the postings of a transaction sum to zero per currency.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
}

/// A ledger transaction: balanced postings booked for one event of the order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerTxnView {
    /// Derived from the event (`lt_` + the event id's 26 characters, `_02`... for the second and
    /// later transactions of one event): the same on every replay.
    pub txn_id: String,
    /// The event that caused it.
    pub event_id: String,
    /// The order.
    pub order_id: String,
    /// `hold`, `post`, `void`, `refund`, `extra_payment` or `extra_refund`.
    pub kind: String,
    /// For a post or void: the hold it resolves.
    pub resolves: Option<String>,
    /// The payment's channel trade number, the pay serial number of a hold, or an extra
    /// payment's refund id.
    pub reference: Option<String>,
    /// RFC 3339: when it was booked.
    pub created_at: String,
    /// The postings, in order.
    pub postings: Vec<PostingView>,
}

impl From<&BookedTxn> for LedgerTxnView {
    fn from(b: &BookedTxn) -> Self {
        let t = &b.txn;
        Self {
            txn_id: t.id().to_string(),
            event_id: t.event_id().to_string(),
            order_id: t.order_id().to_string(),
            kind: t.kind().as_str().to_string(),
            resolves: t.resolves().map(str::to_string),
            reference: t.reference().map(str::to_string),
            created_at: rfc3339(b.created_at),
            postings: t
                .postings()
                .iter()
                .map(|p| PostingView {
                    account: p.account.to_string(),
                    amount: p.amount,
                    currency: p.currency.clone(),
                })
                .collect(),
        }
    }
}

/// One of the merchant's accounts in one currency.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceView {
    /// `merchant_payable:<merchant>` (paid − refunded), `merchant_pending:<merchant>` (open
    /// holds) or `refunds_payable:<merchant>` (extra payments not yet returned to payers).
    pub account: String,
    /// ISO 4217.
    pub currency: String,
    /// Minor units: `inflow - outflow`.
    pub balance: i64,
    /// Everything that flowed in, minor units.
    pub inflow: i64,
    /// Everything that flowed out, minor units (a positive number).
    pub outflow: i64,
}

impl From<&AccountBalance> for BalanceView {
    fn from(b: &AccountBalance) -> Self {
        Self {
            account: b.account.to_string(),
            currency: b.currency.clone(),
            balance: b.balance,
            inflow: b.inflow,
            outflow: b.outflow,
        }
    }
}

/// The merchant's totals in one currency, read off its accounts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerTotalsView {
    /// ISO 4217.
    pub currency: String,
    /// Payments posted (what flowed into `merchant_payable`).
    pub paid: i64,
    /// Refunds of them (what flowed out of `merchant_payable`).
    pub refunded: i64,
    /// `paid - refunded`: what paycore owes the merchant.
    pub net_payable: i64,
    /// Payments open at a channel (`merchant_pending`).
    pub pending_holds: i64,
    /// Extra payments still owed back to payers (`refunds_payable`).
    pub owed_to_payers: i64,
}

/// The ledger transactions booked for one of the merchant's orders, in the order booked.
#[utoipa::path(get, path = "/v1/ledger/orders/{order_id}", tag = "ledger",
    params(("order_id" = String, Path, description = "the order's id")),
    responses(
        (status = 200, body = Vec<LedgerTxnView>),
        (status = 401, body = ErrorBody),
        (status = 404, description = "order_not_found (also for another merchant's order)", body = ErrorBody)))]
pub async fn order_ledger(
    req: HttpRequest,
    payload: web::Payload,
    order_id: &str,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let order_id = parse_order_id(order_id)?;
    let txns = state.ledger.for_order(&merchant.id, &order_id).await?;
    let views: Vec<LedgerTxnView> = txns.iter().map(LedgerTxnView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// The balances of the merchant's accounts, by account and currency.
#[utoipa::path(get, path = "/v1/ledger/balances", tag = "ledger",
    responses((status = 200, body = Vec<BalanceView>), (status = 401, body = ErrorBody)))]
pub async fn balances(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let balances = state.ledger.balances(&merchant.id).await?;
    let views: Vec<BalanceView> = balances.iter().map(BalanceView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// The merchant's totals per currency: paid, refunded, net payable, pending holds, and extra
/// payments owed back to payers.
#[utoipa::path(get, path = "/v1/ledger/totals", tag = "ledger",
    responses((status = 200, body = Vec<LedgerTotalsView>), (status = 401, body = ErrorBody)))]
pub async fn totals(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, merchant) = authed(&req, payload, &state).await?;
    let balances = state.ledger.balances(&merchant.id).await?;
    let views: Vec<LedgerTotalsView> = merchant_totals(&balances)
        .into_iter()
        .map(|t| LedgerTotalsView {
            currency: t.currency,
            paid: t.paid,
            refunded: t.refunded,
            net_payable: t.net_payable,
            pending_holds: t.pending_holds,
            owed_to_payers: t.owed_to_payers,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}
