//! The ledger's rules: transactions are built balanced or not at all, and every order history
//! the state machine can produce books balanced, stable, replayable transactions whose
//! merchant_payable nets to paid − refunded.

use super::*;
use crate::domain::ledger_book::{OrderBook, book};
use crate::domain::{
    Change, Command, Event, FulfillmentOutcome, NewOrder, Order, OrderId, OrderStatus, PayMethod,
    PaySerialNo, RefundNo, RefundOutcome, RefundRequest, RefundStatus, ReportedPayment,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn acct(s: &str) -> Account {
    Account::parse(s).unwrap()
}

fn parts(postings: Vec<Posting>) -> TxnParts {
    TxnParts {
        id: "lt_X".into(),
        order_id: "ord_X".into(),
        merchant_id: "demo".into(),
        event_id: "evt_X".into(),
        kind: TxnKind::Post,
        resolves: None,
        reference: None,
        postings,
    }
}

fn p(account: &str, currency: &str, amount: i64) -> Posting {
    Posting::new(acct(account), currency, amount)
}

#[test]
fn accounts_parse_and_print_the_chart() {
    for s in [
        "channel_pending:sim",
        "merchant_pending:demo",
        "channel_clearing:sim",
        "merchant_payable:demo",
        "refunds_payable:demo",
    ] {
        assert_eq!(acct(s).to_string(), s);
    }
    assert_eq!(acct("merchant_payable:demo").merchant(), Some("demo"));
    assert_eq!(acct("channel_clearing:sim").merchant(), None);
    for bad in [
        "",
        "merchant_payable",
        "merchant_payable:",
        "wallet:demo",
        "merchant_payable:a:b",
        "merchant_payable:a b",
    ] {
        assert!(Account::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert!(Account::new(AccountKind::MerchantPayable, &"x".repeat(MAX_OWNER_LEN + 1)).is_err());
}

#[test]
fn a_transaction_is_built_balanced_or_refused() {
    let ok = LedgerTxn::new(parts(vec![
        p("channel_clearing:sim", "CNY", -100),
        p("merchant_payable:demo", "CNY", 100),
    ]))
    .unwrap();
    assert_eq!(ok.net(AccountKind::MerchantPayable, "CNY"), Ok(100));
    assert_eq!(LedgerTxn::new(parts(vec![])), Err(LedgerError::Empty));
    assert_eq!(
        LedgerTxn::new(parts(vec![
            p("channel_clearing:sim", "CNY", -100),
            p("merchant_payable:demo", "CNY", 99),
        ])),
        Err(LedgerError::Unbalanced {
            currency: "CNY".into(),
            sum: -1
        })
    );
    // Balanced in sum but not per currency.
    assert!(matches!(
        LedgerTxn::new(parts(vec![
            p("channel_clearing:sim", "CNY", -100),
            p("merchant_payable:demo", "USD", 100),
        ])),
        Err(LedgerError::Unbalanced { .. })
    ));
    assert_eq!(
        LedgerTxn::new(parts(vec![
            p("channel_clearing:sim", "CNY", 0),
            p("merchant_payable:demo", "CNY", 0),
        ])),
        Err(LedgerError::ZeroPosting(0))
    );
    assert_eq!(
        LedgerTxn::new(parts(vec![
            p("channel_clearing:sim", "CNY", i64::MAX),
            p("merchant_payable:demo", "CNY", 1),
            p("merchant_payable:demo", "CNY", i64::MIN),
        ])),
        Err(LedgerError::Overflow)
    );
    assert_eq!(
        LedgerTxn::new(parts(vec![
            p("channel_clearing:sim", "cny", -1),
            p("merchant_payable:demo", "cny", 1),
        ])),
        Err(LedgerError::BadCurrency("cny".into()))
    );
    let many = (0..=MAX_POSTINGS_PER_TXN)
        .map(|i| {
            p(
                "merchant_payable:demo",
                "CNY",
                if i % 2 == 0 { 1 } else { -1 },
            )
        })
        .collect();
    assert_eq!(
        LedgerTxn::new(parts(many)),
        Err(LedgerError::TooManyPostings)
    );
    assert_eq!(
        p("merchant_payable:demo", "CNY", i64::MIN).reversed(),
        Err(LedgerError::Overflow)
    );
}

#[test]
fn ids_derive_from_the_event() {
    assert_eq!(txn_id("evt_01ABC", 0), "lt_01ABC");
    assert_eq!(txn_id("evt_01ABC", 1), "lt_01ABC_02");
    assert!(txn_id("evt_01ABC", 8) < txn_id("evt_01ABC", 9));
}

// ---- order histories from the real state machine ----

/// One step a test history may take; impossible ones are refused by the state machine and
/// leave the order as it is.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Intent,
    Paying,
    /// A charge: trade number index, whether the amount is right, whether in CNY.
    Paid(u8, bool, bool),
    Failed,
    Close,
    ChannelClosed,
    /// Refund a share (per mille) of the order amount.
    Refund(u16),
    /// Settle the n-th refund (modulo their number): succeeded or failed.
    Settle(u8, bool),
    /// A write-off attempt: succeeded, or failed with give-up.
    Fulfil(bool, bool),
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::Intent),
        2 => Just(Step::Paying),
        3 => (0u8..3, prop::bool::weighted(0.8), prop::bool::weighted(0.9))
            .prop_map(|(t, a, c)| Step::Paid(t, a, c)),
        1 => Just(Step::Failed),
        1 => Just(Step::Close),
        1 => Just(Step::ChannelClosed),
        3 => (1u16..=1000).prop_map(Step::Refund),
        4 => (any::<u8>(), prop::bool::weighted(0.8)).prop_map(|(i, ok)| Step::Settle(i, ok)),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(ok, g)| Step::Fulfil(ok, g)),
    ]
}

fn command(o: &Order, s: &Step, n: usize) -> Option<Command> {
    let amount = o.amount.minor_units();
    Some(match s {
        Step::Intent => Command::RecordPayIntent {
            pay_serial_no: PaySerialNo::generate(),
            pay_method: PayMethod::Native,
        },
        Step::Paying => Command::MarkPaying {
            pay_serial_no: PaySerialNo::generate(),
            pay_method: PayMethod::Native,
            channel_payload: serde_json::json!({}),
            channel_trade_no: Some("T0".into()),
        },
        Step::Paid(t, amount_ok, cny) => Command::MarkPaid(ReportedPayment {
            channel_trade_no: format!("T{t}"),
            amount: if *amount_ok { amount } else { amount / 2 + 1 },
            currency: if *cny { "CNY" } else { "USD" }.into(),
            paid_at: T0,
        }),
        Step::Failed => Command::MarkFailed {
            reason: "declined".into(),
        },
        Step::Close => Command::Close,
        Step::ChannelClosed => Command::MarkChannelClosed,
        Step::Refund(share) => Command::RequestRefund(RefundRequest {
            refund_no: RefundNo::parse(&format!("R{n}")).ok()?,
            amount: (i128::from(amount) * i128::from(*share) / 1000).max(1) as i64,
            reason: None,
        }),
        Step::Settle(i, ok) => {
            let r = o.refunds.get(usize::from(*i) % o.refunds.len().max(1))?;
            Command::SettleRefund {
                refund_id: r.refund_id.clone(),
                outcome: if *ok {
                    RefundOutcome::Succeeded
                } else {
                    RefundOutcome::Failed("refused".into())
                },
            }
        }
        Step::Fulfil(ok, give_up) => Command::RecordFulfillment(if *ok {
            FulfillmentOutcome::Succeeded
        } else {
            FulfillmentOutcome::Failed {
                error: "busy".into(),
                give_up: *give_up,
            }
        }),
    })
}

/// Runs the steps through the state machine; answers the final order and its events.
pub(crate) fn history(amount: i64, fulfil: bool, steps: &[Step]) -> (Order, Vec<Event>) {
    let mut new = NewOrder::for_test("demo", "M1", amount);
    new.fulfillment_required = fulfil;
    let (mut order, created) = Order::create(OrderId::generate(), new, T0);
    let mut events: Vec<Event> = Event::for_change(&order, &created).into_iter().collect();
    for (n, s) in steps.iter().enumerate() {
        let now = T0 + Duration::seconds(n as i64 + 1);
        let Some(cmd) = command(&order, s, n) else {
            continue;
        };
        let Ok(changes) = order.apply(&cmd, now) else {
            continue;
        };
        for c in &changes {
            order.on(c);
            events.extend(Event::for_change(&order, c));
        }
    }
    (order, events)
}

/// Books every event in turn on a fresh book.
pub(crate) fn book_all(events: &[Event]) -> Result<Vec<LedgerTxn>, LedgerError> {
    let mut b = OrderBook::default();
    let mut out = Vec::new();
    for e in events {
        for t in book(e, &b)? {
            b.record(&t)?;
            out.push(t);
        }
    }
    Ok(out)
}

/// The book after booking every event.
fn running_book(events: &[Event]) -> OrderBook {
    let mut b = OrderBook::default();
    for e in events {
        for t in book(e, &b).unwrap() {
            b.record(&t).unwrap();
        }
    }
    b
}

/// Net per (account, currency).
fn balances(txns: &[LedgerTxn]) -> BTreeMap<(String, String), i64> {
    let mut m = BTreeMap::new();
    for t in txns {
        for p in t.postings() {
            *m.entry((p.account.to_string(), p.currency.clone()))
                .or_insert(0i64) += p.amount;
        }
    }
    m
}

fn bal(m: &BTreeMap<(String, String), i64>, account: &str, currency: &str) -> i64 {
    m.get(&(account.to_string(), currency.to_string()))
        .copied()
        .unwrap_or(0)
}

fn event_of(order: &Order, change: Change) -> Event {
    Event::for_change(order, &change).unwrap()
}

#[test]
fn a_paid_and_partly_refunded_order_books_hold_post_and_refund() {
    let steps = [
        Step::Intent,
        Step::Paying,
        Step::Paid(0, true, true),
        Step::Refund(300),
        Step::Settle(0, true),
    ];
    let (order, events) = history(1000, false, &steps);
    assert_eq!(
        (order.status, order.refunded_amount),
        (OrderStatus::Paid, 300)
    );
    let txns = book_all(&events).unwrap();
    let kinds: Vec<_> = txns.iter().map(|t| t.kind()).collect();
    assert_eq!(kinds, [TxnKind::Hold, TxnKind::Post, TxnKind::Refund]);
    assert_eq!(txns[1].resolves(), Some(txns[0].id()));
    assert_eq!(txns[1].postings().len(), 4);
    let b = balances(&txns);
    assert_eq!(bal(&b, "merchant_payable:demo", "CNY"), 700);
    assert_eq!(bal(&b, "channel_clearing:sim", "CNY"), -700);
    assert_eq!(bal(&b, "merchant_pending:demo", "CNY"), 0);
    assert_eq!(bal(&b, "channel_pending:sim", "CNY"), 0);
    for (t, e) in txns.iter().zip([&events[1], &events[2], &events[3]]) {
        assert_eq!(t.event_id(), e.event_id.as_str());
        assert_eq!(t.order_id(), order.order_id.as_str());
    }
}

#[test]
fn close_voids_a_hold_only_when_there_is_one() {
    // PAYING, then closed at the channel: the hold is voided.
    let (_, events) = history(500, false, &[Step::Paying, Step::ChannelClosed]);
    let txns = book_all(&events).unwrap();
    assert_eq!(
        txns.iter().map(|t| t.kind()).collect::<Vec<_>>(),
        [TxnKind::Hold, TxnKind::Void]
    );
    assert_eq!(txns[1].resolves(), Some(txns[0].id()));
    assert!(balances(&txns).values().all(|v| *v == 0));
    // A pay intent, then closed at the channel: the view looks the same, but no hold was
    // booked, so nothing is voided.
    let (order, events) = history(500, false, &[Step::Intent, Step::ChannelClosed]);
    assert_eq!(order.status, OrderStatus::Closed);
    assert_eq!(book_all(&events).unwrap(), vec![]);
    // Created and closed.
    let (_, events) = history(500, false, &[Step::Close]);
    assert_eq!(book_all(&events).unwrap(), vec![]);
}

#[test]
fn an_extra_payment_is_owed_back_until_its_refund_succeeds() {
    let (order, events) = history(
        800,
        false,
        &[
            Step::Paying,
            Step::Paid(0, true, true),
            Step::Paid(1, true, true),
            Step::Settle(0, true),
        ],
    );
    assert_eq!(order.payments.len(), 2);
    let txns = book_all(&events).unwrap();
    assert_eq!(
        txns.iter().map(|t| t.kind()).collect::<Vec<_>>(),
        [
            TxnKind::Hold,
            TxnKind::Post,
            TxnKind::ExtraPayment,
            TxnKind::ExtraRefund
        ]
    );
    let b = balances(&txns);
    assert_eq!(bal(&b, "refunds_payable:demo", "CNY"), 0);
    assert_eq!(bal(&b, "merchant_payable:demo", "CNY"), 800);
    // Before its refund succeeded the payer was owed it.
    let b = balances(&txns[..3]);
    assert_eq!(bal(&b, "refunds_payable:demo", "CNY"), 800);
}

#[test]
fn events_lacking_what_they_book_are_errors() {
    let (order, events) = history(500, false, &[Step::Paying, Step::Paid(0, true, true)]);
    let paid = events.last().unwrap().clone();
    // order.paid without its payment.
    let mut stripped = paid.clone();
    let mut v = stripped.data.to_value();
    v["payments"] = serde_json::json!([]);
    stripped.data = v.into();
    assert!(matches!(
        book(&stripped, &OrderBook::default()),
        Err(LedgerError::Missing { .. })
    ));
    // Data that is not an order view, or another order's.
    let mut junk = paid.clone();
    junk.data = serde_json::json!({"amount": 5}).into();
    assert!(matches!(
        book(&junk, &OrderBook::default()),
        Err(LedgerError::BadData(_))
    ));
    let mut foreign = paid.clone();
    foreign.order_id = OrderId::generate().to_string();
    assert!(matches!(
        book(&foreign, &OrderBook::default()),
        Err(LedgerError::BadData(_))
    ));
    // refund.succeeded with nothing new to book.
    let mut o = order.clone();
    o.refunded_amount = 0;
    let settled = event_of(
        &o,
        Change {
            kind: crate::domain::ChangeKind::RefundSettled {
                refund_id: crate::domain::RefundId::new(&o.order_id, 1),
                status: RefundStatus::Succeeded,
                failure_reason: None,
                refunded_amount: 0,
                fully_refunded: false,
            },
            version: o.version + 1,
            at: T0,
        },
    );
    assert!(matches!(
        book(&settled, &OrderBook::default()),
        Err(LedgerError::Missing { .. })
    ));
    let mut unknown = paid;
    unknown.event_type = "order.teleported".into();
    assert_eq!(
        book(&unknown, &OrderBook::default()),
        Err(LedgerError::UnknownEvent("order.teleported".into()))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_history_books_balanced_stable_replayable_transactions(
        amount in prop_oneof![1i64..=10_000, Just(crate::domain::money::MAX_AMOUNT)],
        fulfil in any::<bool>(),
        steps in prop::collection::vec(step(), 0..24),
    ) {
        let (order, events) = history(amount, fulfil, &steps);
        let txns = book_all(&events).expect("every event of a real history books");
        // Replaying the same events gives the same transactions, ids included.
        prop_assert_eq!(&book_all(&events).unwrap(), &txns);
        // Ids are unique and derived from their event.
        let mut ids: Vec<&str> = txns.iter().map(|t| t.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), txns.len());
        for t in &txns {
            let base = t.event_id().trim_start_matches("evt_");
            let prefix = format!("lt_{base}");
            prop_assert!(t.id().starts_with(&prefix));
            // Balanced per currency (the constructor's promise, checked again here).
            let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
            for p in t.postings() {
                *sums.entry(p.currency.as_str()).or_insert(0) += p.amount;
            }
            prop_assert!(sums.values().all(|s| *s == 0), "{:?}", t);
        }
        // Every hold resolved at most once; resolutions name a hold.
        let holds: Vec<&str> = txns.iter().filter(|t| t.kind() == TxnKind::Hold).map(|t| t.id()).collect();
        prop_assert!(holds.len() <= 1);
        let resolved: Vec<&str> = txns.iter().filter_map(|t| t.resolves()).collect();
        prop_assert!(resolved.len() <= 1);
        prop_assert!(resolved.iter().all(|r| holds.contains(r)));
        let b = balances(&txns);
        let cur = order.currency.code();
        let paid = if matches!(order.status, OrderStatus::Paid | OrderStatus::Refunded) {
            order.amount.minor_units()
        } else {
            0
        };
        // The merchant's payable nets to paid − refunded; clearing mirrors it.
        prop_assert_eq!(bal(&b, "merchant_payable:demo", cur), paid - order.refunded_amount);
        // A hold is open exactly while the order is PAYING.
        let pending = if order.status == OrderStatus::Paying { order.amount.minor_units() } else { 0 };
        prop_assert_eq!(bal(&b, "merchant_pending:demo", cur), pending);
        prop_assert_eq!(bal(&b, "channel_pending:sim", cur), -pending);
        // Extra payments are owed back until their refunds succeed.
        let mut owed: BTreeMap<String, i64> = BTreeMap::new();
        for p in order.payments.iter().filter(|p| p.role == crate::domain::PaymentRole::Extra) {
            let back = p.refund_id.as_ref().and_then(|id| order.refund(id))
                .is_some_and(|r| r.status == RefundStatus::Succeeded);
            if !back {
                *owed.entry(p.currency.clone()).or_insert(0) += p.amount;
            }
        }
        for c in ["CNY", "USD"] {
            prop_assert_eq!(bal(&b, "refunds_payable:demo", c), owed.get(c).copied().unwrap_or(0));
            // Over the whole ledger each currency sums to zero.
            let total: i64 = b.iter().filter(|((_, cc), _)| cc == c).map(|(_, v)| v).sum();
            prop_assert_eq!(total, 0);
        }
        // The book the consumer folds from stored transactions is the one built on the way.
        prop_assert_eq!(OrderBook::from_transactions(&txns).unwrap(), running_book(&events));
    }
}
