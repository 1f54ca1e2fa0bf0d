//! The per-order reconciliation `paycore ledger verify` runs: an order's stored postings
//! against the order's own state. Pure: the rows come in as stored (unchecked, so a tampered
//! one is reported, not refused), the findings go out as text.

use super::ledger::{Account, AccountKind};
use super::order::{Order, OrderStatus};
use super::payment::PaymentRole;
use super::refund::RefundStatus;
use std::collections::BTreeMap;

/// One posting of an order's ledger, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPosting {
    /// Its transaction.
    pub txn_id: String,
    /// The transaction's kind as stored.
    pub kind: String,
    /// Account as stored.
    pub account: String,
    /// Currency as stored.
    pub currency: String,
    /// Amount as stored.
    pub amount: i64,
}

/// What is wrong with an order's ledger, given the order (an empty list when it reconciles):
/// `merchant_payable` must net to paid − refunded (in the order's currency, and to zero in any
/// other), a PAID or REFUNDED order must have its post, `merchant_pending` must hold the amount
/// exactly while the order is PAYING, `refunds_payable` must hold the extra payments not yet
/// refunded, and no posting may touch another merchant's account or one outside the chart.
pub fn check_order(order: &Order, rows: &[StoredPosting]) -> Vec<String> {
    let id = order.order_id.as_str();
    let merchant = order.merchant_id.as_str();
    let mut out = Vec::new();
    let mut nets: BTreeMap<(AccountKind, &str), i64> = BTreeMap::new();
    for r in rows {
        let account = match Account::parse(&r.account) {
            Ok(a) => a,
            Err(e) => {
                out.push(format!("order {id}: transaction {}: {e}", r.txn_id));
                continue;
            }
        };
        if account.merchant().is_some_and(|m| m != merchant) {
            out.push(format!(
                "order {id}: transaction {} posts to {account}, not an account of merchant {merchant}",
                r.txn_id
            ));
            continue;
        }
        let net = nets
            .entry((account.kind(), r.currency.as_str()))
            .or_insert(0);
        match net.checked_add(r.amount) {
            Some(n) => *net = n,
            None => out.push(format!("order {id}: {account} {} overflows", r.currency)),
        }
    }
    let currency = order.currency.code();
    let net = |kind: AccountKind, cur: &str| nets.get(&(kind, cur)).copied().unwrap_or(0);
    let paid_status = matches!(order.status, OrderStatus::Paid | OrderStatus::Refunded);
    let paid = if paid_status {
        order.amount.minor_units()
    } else {
        0
    };
    let expected = paid.saturating_sub(order.refunded_amount);
    let payable = net(AccountKind::MerchantPayable, currency);
    if payable != expected {
        out.push(format!(
            "order {id} ({}): merchant_payable nets {payable} {currency}; paid {paid} − refunded {} = {expected}",
            order.status.as_str(),
            order.refunded_amount
        ));
    }
    if paid_status && !rows.iter().any(|r| r.kind == "post") {
        out.push(format!(
            "order {id} is {} but has no posting transaction",
            order.status.as_str()
        ));
    }
    let pending_expected = if order.status == OrderStatus::Paying {
        order.amount.minor_units()
    } else {
        0
    };
    let pending = net(AccountKind::MerchantPending, currency);
    if pending != pending_expected {
        out.push(format!(
            "order {id} ({}): merchant_pending holds {pending} {currency}, expected {pending_expected}",
            order.status.as_str()
        ));
    }
    // Extra payments are owed back until their refunds succeed, in their own currency.
    let mut owed: BTreeMap<&str, i64> = BTreeMap::new();
    for p in order
        .payments
        .iter()
        .filter(|p| p.role == PaymentRole::Extra)
    {
        let returned = p
            .refund_id
            .as_ref()
            .and_then(|r| order.refund(r))
            .is_some_and(|r| r.status == RefundStatus::Succeeded);
        if !returned {
            let o = owed.entry(p.currency.as_str()).or_insert(0);
            *o = o.saturating_add(p.amount);
        }
    }
    let mut currencies: Vec<&str> = nets.keys().map(|(_, c)| *c).collect();
    currencies.extend(owed.keys());
    currencies.sort_unstable();
    currencies.dedup();
    for cur in currencies {
        let want = owed.get(cur).copied().unwrap_or(0);
        let have = net(AccountKind::RefundsPayable, cur);
        if have != want {
            out.push(format!(
                "order {id}: refunds_payable holds {have} {cur}; extra payments not refunded: {want}"
            ));
        }
        if cur != currency {
            for kind in [AccountKind::MerchantPayable, AccountKind::MerchantPending] {
                let stray = net(kind, cur);
                if stray != 0 {
                    out.push(format!(
                        "order {id}: {} nets {stray} {cur}, outside the order's currency",
                        kind.as_str()
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger_book::{OrderBook, book};
    use crate::domain::{
        ChannelPayment, Command, Event, NewOrder, OrderId, PayMethod, PaySerialNo, RefundNo,
        RefundOutcome, RefundRequest, ReportedPayment,
    };
    use time::macros::datetime;

    const T0: time::OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    /// A command made from the order as it is then.
    type Step = fn(&Order) -> Command;

    /// Runs steps through the state machine and books every event; answers the order and its
    /// postings as storage would hold them.
    fn booked(steps: &[Step]) -> (Order, Vec<StoredPosting>) {
        let (mut order, created) = Order::create(
            OrderId::generate(),
            NewOrder::for_test("demo", "M1", 1000),
            T0,
        );
        let mut events: Vec<Event> = Event::for_change(&order, &created).into_iter().collect();
        for (i, step) in steps.iter().enumerate() {
            let changes = order
                .apply(&step(&order), T0 + time::Duration::seconds(i as i64 + 1))
                .unwrap();
            for c in &changes {
                order.on(c);
                events.extend(Event::for_change(&order, c));
            }
        }
        let mut b = OrderBook::default();
        let mut rows = Vec::new();
        for e in &events {
            for t in book(e, &b).unwrap() {
                b.record(&t).unwrap();
                rows.extend(t.postings().iter().map(|p| StoredPosting {
                    txn_id: t.id().into(),
                    kind: t.kind().as_str().into(),
                    account: p.account.to_string(),
                    currency: p.currency.clone(),
                    amount: p.amount,
                }));
            }
        }
        (order, rows)
    }

    fn paying(_: &Order) -> Command {
        Command::MarkPaying {
            pay_serial_no: PaySerialNo::generate(),
            pay_method: PayMethod::Native,
            channel_payload: serde_json::json!({}),
            channel_trade_no: Some("T1".into()),
        }
    }

    fn paid_as(trade: &str) -> Command {
        Command::MarkPaid(ReportedPayment {
            channel_trade_no: trade.into(),
            amount: 1000,
            currency: "CNY".into(),
            paid_at: T0,
        })
    }

    fn paid(_: &Order) -> Command {
        paid_as("T1")
    }

    fn paid_again(_: &Order) -> Command {
        paid_as("T2")
    }

    fn refund(_: &Order) -> Command {
        Command::RequestRefund(RefundRequest {
            refund_no: RefundNo::parse("R1").unwrap(),
            amount: 250,
            reason: None,
        })
    }

    fn settle_first(o: &Order) -> Command {
        Command::SettleRefund {
            refund_id: o.refunds[0].refund_id.clone(),
            outcome: RefundOutcome::Succeeded,
        }
    }

    #[test]
    fn a_booked_order_reconciles_and_every_kind_of_damage_is_named() {
        let (order, rows) = booked(&[paying, paid, refund, settle_first]);
        assert_eq!(order.refunded_amount, 250);
        assert_eq!(check_order(&order, &rows), Vec::<String>::new());

        // The refund's payable posting made larger.
        let mut tampered = rows.clone();
        let leg = tampered
            .iter()
            .position(|r| r.kind == "refund" && r.account.starts_with("merchant_payable"))
            .unwrap();
        tampered[leg].amount -= 1;
        let found = check_order(&order, &tampered);
        assert!(found[0].contains("merchant_payable nets 749"), "{found:?}");
        // The post lost.
        let no_post: Vec<_> = rows.iter().filter(|r| r.kind != "post").cloned().collect();
        let found = check_order(&order, &no_post);
        assert!(
            found.iter().any(|f| f.contains("no posting transaction")),
            "{found:?}"
        );
        // Another merchant's account, and one outside the chart.
        let mut foreign = rows.clone();
        foreign[0].account = "merchant_pending:other".into();
        foreign[1].account = "wallet:demo".into();
        let found = check_order(&order, &foreign);
        assert!(
            found
                .iter()
                .any(|f| f.contains("not an account of merchant demo"))
        );
        assert!(found.iter().any(|f| f.contains("bad account")));
    }

    #[test]
    fn holds_and_extra_payments_must_match_the_orders_state() {
        // PAYING: its hold is open.
        let (order, rows) = booked(&[paying]);
        assert_eq!(check_order(&order, &rows), Vec::<String>::new());
        let found = check_order(&order, &[]);
        assert!(found[0].contains("merchant_pending holds 0"), "{found:?}");
        // Paid twice: the second charge is owed back until refunded.
        let (order, rows) = booked(&[paying, paid, paid_again]);
        assert_eq!(check_order(&order, &rows), Vec::<String>::new());
        let without_extra: Vec<_> = rows
            .iter()
            .filter(|r| r.kind != "extra_payment")
            .cloned()
            .collect();
        let found = check_order(&order, &without_extra);
        assert!(
            found
                .iter()
                .any(|f| f
                    .contains("refunds_payable holds 0 CNY; extra payments not refunded: 1000")),
            "{found:?}"
        );
        // A PAID order whose ledger is empty fails twice over.
        let mut order = order;
        order
            .payments
            .retain(|p: &ChannelPayment| p.role == PaymentRole::Applied);
        assert_eq!(check_order(&order, &[]).len(), 2);
    }
}
