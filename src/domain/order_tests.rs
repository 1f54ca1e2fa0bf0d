//! Table tests: every command against every status, and the pay/close decisions.

use super::*;
use crate::domain::address::AddressPolicy;
use crate::domain::ids::PaySerialNo;
use crate::domain::{ExtraReason, PaymentRole, RefundOutcome, Schedule, TimerKind, TimerOp};
use proptest::prelude::*;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn order_in(status: OrderStatus) -> Order {
    let new = NewOrder::for_test("demo", "M1", 1000);
    let (mut o, _) = Order::create(OrderId::generate(), new, T0);
    o.status = status;
    if matches!(status, OrderStatus::Paid | OrderStatus::Refunded) {
        // A paid order always holds the payment that paid it.
        o.channel_trade_no = Some("T1".into());
        o.payments.push(crate::domain::ChannelPayment {
            channel_trade_no: "T1".into(),
            amount: 1000,
            currency: "CNY".into(),
            paid_at: T0,
            recorded_at: T0,
            role: PaymentRole::Applied,
            reason: None,
            refund_id: None,
        });
    }
    o
}

fn paying() -> Command {
    Command::MarkPaying {
        pay_serial_no: PaySerialNo::generate(),
        pay_method: PayMethod::Native,
        channel_payload: serde_json::json!({"code_url": "sim://x"}),
        channel_trade_no: Some("T1".into()),
    }
}

fn paid(amount: i64) -> Command {
    paid_as("T1", amount, "CNY")
}

fn paid_as(trade_no: &str, amount: i64, currency: &str) -> Command {
    Command::MarkPaid(ReportedPayment {
        channel_trade_no: trade_no.into(),
        amount,
        currency: currency.into(),
        paid_at: T0,
    })
}

fn refund(no: &str, amount: i64) -> Command {
    Command::RequestRefund(RefundRequest {
        refund_no: crate::domain::RefundNo::parse(no).unwrap(),
        amount,
        reason: None,
    })
}

fn step(order: &mut Order, cmd: &Command) -> Result<Vec<Change>, Rejection> {
    let changes = order.apply(cmd, T0)?;
    for c in &changes {
        order.on(c);
    }
    Ok(changes)
}

fn failed() -> Command {
    Command::MarkFailed {
        reason: "NOTENOUGH".into(),
    }
}

/// What a command does to an order in a status: the statuses it moves through, or the refusal.
type Outcome = Result<Vec<OrderStatus>, Rejection>;

fn run(status: OrderStatus, cmd: &Command) -> Outcome {
    let mut order = order_in(status);
    let before = order.clone();
    let changes = order.apply(cmd, T0 + time::Duration::seconds(5))?;
    let mut seen = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(
            c.version,
            before.version + 1 + i as u64,
            "versions go up by one"
        );
        order.on(c);
        seen.push(order.status);
    }
    assert_eq!(order.version, before.version + changes.len() as u64);
    Ok(seen)
}

#[test]
fn every_command_against_every_status() {
    use OrderStatus::*;
    let table: Vec<(OrderStatus, Command, Outcome)> = vec![
        (Created, paying(), Ok(vec![Paying])),
        (Paying, paying(), Ok(vec![])),
        (Paid, paying(), Err(Rejection::AlreadyPaid)),
        (Refunded, paying(), Err(Rejection::AlreadyPaid)),
        (Closed, paying(), Err(Rejection::OrderClosed)),
        (Failed, paying(), Err(Rejection::OrderFailed)),
        (Created, paid(1000), Ok(vec![Paying, Paid])),
        (Paying, paid(1000), Ok(vec![Paid])),
        (Paid, paid(1000), Ok(vec![])),
        (Refunded, paid(1000), Ok(vec![])),
        (Closed, paid(1000), Ok(vec![Closed])),
        (Failed, paid(1000), Ok(vec![Failed])),
        // A wrong amount or currency is recorded (and refunded), never applied as PAID.
        (Paying, paid(999), Ok(vec![Paying, Failed])),
        (Created, paid(1001), Ok(vec![Created, Failed])),
        (Paying, paid_as("T1", 1000, "USD"), Ok(vec![Paying, Failed])),
        (Paid, paid_as("T9", 1001, "CNY"), Ok(vec![Paid])),
        (Paying, failed(), Ok(vec![Failed])),
        (Created, failed(), Ok(vec![])),
        (Paid, failed(), Ok(vec![])),
        (Closed, failed(), Ok(vec![])),
        (Failed, failed(), Ok(vec![])),
        (Refunded, failed(), Ok(vec![])),
        (Created, Command::Close, Ok(vec![Closed])),
        (Closed, Command::Close, Ok(vec![])),
        (Paying, Command::Close, Err(Rejection::WrongStatus(Paying))),
        (Paid, Command::Close, Err(Rejection::AlreadyPaid)),
        (Refunded, Command::Close, Err(Rejection::AlreadyPaid)),
        (Failed, Command::Close, Err(Rejection::OrderFailed)),
        (Paying, Command::MarkChannelClosed, Ok(vec![Closed])),
        (Closed, Command::MarkChannelClosed, Ok(vec![])),
        (Created, Command::MarkChannelClosed, Ok(vec![Closed])),
        (
            Paid,
            Command::MarkChannelClosed,
            Err(Rejection::WrongStatus(Paid)),
        ),
        (Created, refund("R1", 1), Err(Rejection::OrderNotPaid)),
        (Paying, refund("R1", 1), Err(Rejection::OrderNotPaid)),
        (Closed, refund("R1", 1), Err(Rejection::OrderNotPaid)),
        (Failed, refund("R1", 1), Err(Rejection::OrderNotPaid)),
        (Paid, refund("R1", 1), Ok(vec![Paid])),
        (
            Paid,
            refund("R1", 1001),
            Err(Rejection::RefundExceedsPaid { refundable: 1000 }),
        ),
    ];
    for (status, cmd, want) in table {
        assert_eq!(run(status, &cmd), want, "{status:?} + {cmd:?}");
    }
}

#[test]
fn refusals_leave_the_order_unchanged() {
    for status in OrderStatus::ALL {
        let order = order_in(status);
        for cmd in [
            paying(),
            paid(1),
            Command::Close,
            Command::MarkChannelClosed,
        ] {
            if order.apply(&cmd, T0).is_err() {
                // apply takes &self: a refusal cannot have changed anything; the order is
                // still equal to a fresh one in the same status.
                let mut fresh = order_in(status);
                fresh.order_id = order.order_id.clone();
                assert_eq!(order, fresh);
            }
        }
    }
}

#[test]
fn late_payment_is_recorded_once_with_one_automatic_refund() {
    let mut order = order_in(OrderStatus::Closed);
    let changes = step(&mut order, &paid(1000)).unwrap();
    assert_eq!(changes[0].kind.event_type(), Some("order.extra_payment"));
    assert_eq!(order.status, OrderStatus::Closed);
    let p = &order.payments[0];
    assert_eq!(
        (p.amount, p.role, p.reason),
        (1000, PaymentRole::Extra, Some(ExtraReason::OrderNotPayable))
    );
    let r = order.refunds[0].clone();
    assert_eq!(p.refund_id.as_ref(), Some(&r.refund_id));
    assert_eq!(
        (
            r.amount,
            r.automatic,
            r.status,
            r.channel_trade_no.as_deref()
        ),
        (1000, true, RefundStatus::Pending, Some("T1"))
    );
    assert!(
        step(&mut order, &paid(1000)).unwrap().is_empty(),
        "a repeat callback adds nothing"
    );
    let settle = Command::SettleRefund {
        refund_id: r.refund_id.clone(),
        outcome: RefundOutcome::Succeeded,
    };
    let changes = step(&mut order, &settle).unwrap();
    assert_eq!(changes[0].kind.event_type(), Some("refund.succeeded"));
    assert_eq!(order.refunds[0].status, RefundStatus::Succeeded);
    assert_eq!(
        order.refunded_amount, 0,
        "an automatic refund is not a refund of the order's own payment"
    );
    assert!(
        step(&mut order, &settle).unwrap().is_empty(),
        "settled once"
    );
}

#[test]
fn a_second_charge_on_a_paid_order_is_extra_and_the_trade_no_is_kept() {
    let mut order = order_in(OrderStatus::Paying);
    order.channel_trade_no = Some("T1".into());
    step(&mut order, &paid(1000)).unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    step(&mut order, &paid_as("T2", 1000, "CNY")).unwrap();
    assert_eq!(
        order.channel_trade_no.as_deref(),
        Some("T1"),
        "never overwritten"
    );
    assert_eq!(order.payments.len(), 2);
    assert_eq!(order.payments[1].reason, Some(ExtraReason::DuplicateCharge));
    assert_eq!(order.open_refunds(), 1);
    // While paying, a trade number other than the one the channel opened is not applied.
    let mut paying = order_in(OrderStatus::Paying);
    paying.channel_trade_no = Some("T1".into());
    step(&mut paying, &paid_as("FORGED", 1000, "CNY")).unwrap();
    assert_eq!(paying.status, OrderStatus::Paying);
    assert_eq!(paying.payments[0].role, PaymentRole::Extra);
}

#[test]
fn refunds_partial_repeated_full_and_excessive() {
    let mut order = order_in(OrderStatus::Paying);
    step(&mut order, &paid(1000)).unwrap();
    let settle = |order: &mut Order, i: usize, outcome: RefundOutcome| {
        let id = order.refunds[i].refund_id.clone();
        step(
            order,
            &Command::SettleRefund {
                refund_id: id,
                outcome,
            },
        )
        .unwrap()
    };
    step(&mut order, &refund("R1", 300)).unwrap();
    assert_eq!(order.refunds[0].refund_id.order_id(), order.order_id);
    assert!(
        step(&mut order, &refund("R1", 300)).unwrap().is_empty(),
        "idempotent"
    );
    assert_eq!(
        step(&mut order, &refund("R1", 200)),
        Err(Rejection::RefundNoReused)
    );
    // The open refund counts against what can still be refunded.
    assert_eq!(
        step(&mut order, &refund("R2", 701)),
        Err(Rejection::RefundExceedsPaid { refundable: 700 })
    );
    settle(&mut order, 0, RefundOutcome::Succeeded);
    assert_eq!(
        (order.refunded_amount, order.status),
        (300, OrderStatus::Paid)
    );
    step(&mut order, &refund("R2", 700)).unwrap();
    settle(&mut order, 1, RefundOutcome::Failed("NOTENOUGH".into()));
    assert_eq!(order.refunds[1].status, RefundStatus::Failed);
    assert_eq!(
        order.refundable(),
        700,
        "a failed refund gives its amount back"
    );
    step(&mut order, &refund("R3", 700)).unwrap();
    let changes = settle(&mut order, 2, RefundOutcome::Succeeded);
    assert_eq!(changes[0].kind.event_type(), Some("refund.succeeded"));
    assert_eq!(
        (order.refunded_amount, order.status),
        (1000, OrderStatus::Refunded)
    );
    assert_eq!(
        step(&mut order, &refund("R4", 1)),
        Err(Rejection::RefundExceedsPaid { refundable: 0 })
    );
    assert!(step(&mut order, &refund("R3", 700)).unwrap().is_empty());
}

#[test]
fn a_pay_intent_makes_close_and_expiry_go_to_the_channel() {
    let mut order = order_in(OrderStatus::Created);
    assert_eq!(order.close_step(), Ok(CloseStep::Local));
    let serial = PaySerialNo::generate();
    let intent = Command::RecordPayIntent {
        pay_serial_no: serial.clone(),
        pay_method: PayMethod::Native,
    };
    let changes = step(&mut order, &intent).unwrap();
    assert_eq!(changes[0].kind.event_type(), None, "not a status change");
    assert_eq!(order.status, OrderStatus::Created);
    assert_eq!(order.close_step(), Ok(CloseStep::AtChannel));
    assert_eq!(
        step(&mut order, &Command::Close),
        Err(Rejection::WrongStatus(OrderStatus::Created)),
        "never closed locally while a payment may be open"
    );
    assert!(step(&mut order, &intent).unwrap().is_empty());
    step(&mut order, &paying()).unwrap();
    assert_eq!(
        order.pay_serial_no,
        Some(serial),
        "the intent's serial is kept"
    );
}

#[test]
fn timers_follow_the_order() {
    use crate::domain::timer::{self, Schedule};
    let s = Schedule::standard();
    let created = order_in(OrderStatus::Created);
    assert_eq!(
        timer::on_create(&created),
        vec![TimerOp::Set {
            kind: TimerKind::Expire,
            due_at: created.expires_at,
            attempt: 0
        }]
    );
    let mut intent = created.clone();
    step(
        &mut intent,
        &Command::RecordPayIntent {
            pay_serial_no: PaySerialNo::generate(),
            pay_method: PayMethod::Native,
        },
    )
    .unwrap();
    assert_eq!(
        timer::plan(&created, &intent, T0, &s),
        vec![TimerOp::Set {
            kind: TimerKind::Poll,
            due_at: T0 + std::time::Duration::from_secs(5),
            attempt: 0
        }]
    );
    let mut paid_order = intent.clone();
    step(&mut paid_order, &paid(1000)).unwrap();
    assert_eq!(
        timer::plan(&intent, &paid_order, T0, &s),
        vec![
            TimerOp::Clear(TimerKind::Poll),
            TimerOp::Clear(TimerKind::Expire)
        ]
    );
    let mut refunding = paid_order.clone();
    step(&mut refunding, &refund("R1", 10)).unwrap();
    assert_eq!(
        timer::plan(&paid_order, &refunding, T0, &s),
        vec![TimerOp::Set {
            kind: TimerKind::Refund,
            due_at: T0 + std::time::Duration::from_secs(10),
            attempt: 1
        }]
    );
    let mut done = refunding.clone();
    let id = done.refunds[0].refund_id.clone();
    step(
        &mut done,
        &Command::SettleRefund {
            refund_id: id,
            outcome: RefundOutcome::Succeeded,
        },
    )
    .unwrap();
    assert_eq!(
        timer::plan(&refunding, &done, T0, &s),
        vec![TimerOp::Clear(TimerKind::Refund)]
    );
    // Schedules: polls stop after the last level; refunds are given up after the last retry.
    let last = s.poll.len() as u32 - 1;
    assert!(s.next_poll(T0, last).is_none());
    assert!(s.next_poll(T0, 0).is_some());
    assert!(s.next_refund(T0, s.refund_retry.len() as u32).is_none());
    // What the sweep restores for an order with open work and no timer.
    assert_eq!(timer::ensure(&done, T0), vec![]);
    assert_eq!(timer::ensure(&intent, T0).len(), 2);
}

#[test]
fn paying_keeps_its_serial_number_and_payload() {
    let mut order = order_in(OrderStatus::Created);
    let cmd = paying();
    for c in order.apply(&cmd, T0).unwrap() {
        order.on(&c);
    }
    let Command::MarkPaying { pay_serial_no, .. } = cmd else {
        unreachable!()
    };
    assert_eq!(order.pay_serial_no, Some(pay_serial_no.clone()));
    assert!(order.apply(&paying(), T0).unwrap().is_empty());
    assert_eq!(order.pay_serial_no, Some(pay_serial_no));
    assert_eq!(
        order.channel_payload,
        Some(std::sync::Arc::new(
            serde_json::json!({"code_url": "sim://x"})
        ))
    );
}

#[test]
fn pay_and_close_steps() {
    use OrderStatus::*;
    let now = T0 + time::Duration::seconds(1);
    assert_eq!(order_in(Created).pay_step(now), Ok(PayStep::OpenAtChannel));
    assert_eq!(order_in(Paying).pay_step(now), Ok(PayStep::AlreadyPaying));
    assert_eq!(order_in(Paid).pay_step(now), Err(Rejection::AlreadyPaid));
    assert_eq!(
        order_in(Refunded).pay_step(now),
        Err(Rejection::AlreadyPaid)
    );
    assert_eq!(order_in(Closed).pay_step(now), Err(Rejection::OrderClosed));
    assert_eq!(order_in(Failed).pay_step(now), Err(Rejection::OrderFailed));
    let expired = T0 + time::Duration::seconds(900);
    assert_eq!(
        order_in(Created).pay_step(expired),
        Err(Rejection::OrderExpired)
    );
    assert_eq!(
        order_in(Paying).pay_step(expired),
        Ok(PayStep::AlreadyPaying)
    );

    assert_eq!(order_in(Created).close_step(), Ok(CloseStep::Local));
    assert_eq!(order_in(Paying).close_step(), Ok(CloseStep::AtChannel));
    assert_eq!(order_in(Closed).close_step(), Ok(CloseStep::AlreadyClosed));
    assert_eq!(order_in(Paid).close_step(), Err(Rejection::AlreadyPaid));
    assert_eq!(order_in(Refunded).close_step(), Err(Rejection::AlreadyPaid));
    assert_eq!(order_in(Failed).close_step(), Err(Rejection::OrderFailed));
}

#[test]
fn subject_and_notify_url() {
    assert!(parse_subject("Gas bill 2026-01").is_ok());
    assert!(parse_subject(&"燃".repeat(128)).is_ok());
    assert!(parse_subject(&"燃".repeat(129)).is_err());
    assert!(parse_subject("a\nb").is_err());
    let strict = AddressPolicy::default();
    let loopback = AddressPolicy {
        allow_loopback: true,
        allow_private: false,
    };
    assert!(parse_notify_url("https://merchant.example/notify", &strict).is_ok());
    assert!(parse_notify_url("http://93.184.216.34:9000/n?a=1", &strict).is_ok());
    assert!(parse_notify_url("http://127.0.0.1:9000/n", &loopback).is_ok());
    assert!(parse_notify_url("http://[::1]:9000/n", &loopback).is_ok());
    assert!(parse_notify_url("http://localhost:9000/n", &loopback).is_ok());
    for bad in [
        "",
        "ftp://x",
        "https://",
        "https:///x",
        "https://a b",
        "merchant.example",
        "http://127.0.0.1:9000/n",
        "http://[::1]/x",
        "http://localhost/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/x",
        "http://0.0.0.0/x",
        "http://2130706433/x",
    ] {
        assert!(parse_notify_url(bad, &strict).is_err(), "{bad}");
    }
    assert!(parse_notify_url("http://10.0.0.1/x", &loopback).is_err());
    let long = format!("https://a/{}", "x".repeat(600));
    assert!(parse_notify_url(&long, &loopback).is_err());
    let at_limit = format!("https://a/{}", "x".repeat(MAX_NOTIFY_URL_LEN - 10));
    assert_eq!(at_limit.len(), MAX_NOTIFY_URL_LEN);
    assert!(parse_notify_url(&at_limit, &strict).is_ok());
    assert!(parse_notify_url(&format!("{at_limit}x"), &strict).is_err());
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(paying()),
        (999i64..=1001).prop_map(paid),
        Just(failed()),
        Just(Command::Close),
        Just(Command::MarkChannelClosed),
        Just(paid_as("T2", 1000, "CNY")),
        (1i64..=600).prop_map(|a| refund("R1", a)),
        (1i64..=600).prop_map(|a| refund("R2", a)),
        Just(Command::RecordFulfillment(FulfillmentOutcome::Succeeded)),
        any::<bool>().prop_map(write_off_failed),
    ]
}

proptest! {
    /// Whatever sequence of commands arrives, the order never leaves a terminal money state
    /// backwards, versions only grow by the number of changes, and a paid order stays paid.
    #[test]
    fn random_command_sequences_keep_invariants(cmds in proptest::collection::vec(any_command(), 0..30)) {
        let mut order = order_in(OrderStatus::Created);
        let mut was_paid = false;
        for cmd in &cmds {
            let before = order.version;
            if let Ok(changes) = order.apply(cmd, T0) {
                for c in &changes { order.on(c); }
                prop_assert_eq!(order.version, before + changes.len() as u64);
            } else {
                prop_assert_eq!(order.version, before);
            }
            if was_paid { prop_assert!(matches!(order.status, OrderStatus::Paid | OrderStatus::Refunded)); }
            was_paid |= order.status == OrderStatus::Paid;
            let applied = order.payments.iter().filter(|p| p.role == PaymentRole::Applied).count();
            prop_assert!(applied <= 1, "at most one payment pays an order");
            prop_assert!(order.refundable() >= 0 && order.refunded_amount <= 1000);
            let merchant_refunds: i64 = order.refunds.iter().filter(|r| r.returns_order_payment() && r.status != RefundStatus::Failed).map(|r| r.amount).sum();
            prop_assert!(merchant_refunds <= 1000, "refunds never exceed the paid amount");
        }
    }
}

fn fulfilled_by_biller(status: OrderStatus) -> Order {
    let mut new = NewOrder::for_test("demo", "M1", 1000);
    new.fulfillment_required = true;
    let (mut o, _) = Order::create(OrderId::generate(), new, T0);
    for cmd in [paying(), paid(1000)] {
        step(&mut o, &cmd).unwrap();
    }
    assert_eq!(o.status, OrderStatus::Paid);
    if status == OrderStatus::Refunded {
        o.status = status;
    }
    o
}

fn write_off_failed(give_up: bool) -> Command {
    Command::RecordFulfillment(FulfillmentOutcome::Failed {
        error: "SYSTEM_ERROR".into(),
        give_up,
    })
}

#[test]
fn fulfillment_succeeds_fails_retries_and_gives_up_with_one_refund() {
    // Fails twice, then succeeds: FAILED (exception list) twice, then SUCCEEDED.
    let mut o = fulfilled_by_biller(OrderStatus::Paid);
    assert!(o.fulfillment_open() && o.has_open_work());
    for n in 1..=2 {
        let changes = step(&mut o, &write_off_failed(false)).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].kind.event_type(),
            None,
            "a retry is not published"
        );
        assert_eq!(
            (o.fulfillment.status, o.fulfillment.attempts),
            (FulfillmentStatus::Failed, n)
        );
    }
    let changes = step(
        &mut o,
        &Command::RecordFulfillment(FulfillmentOutcome::Succeeded),
    )
    .unwrap();
    assert_eq!(changes[0].kind.event_type(), Some("order.fulfilled"));
    assert_eq!(
        (o.fulfillment.status, o.fulfillment.attempts),
        (FulfillmentStatus::Succeeded, 3)
    );
    assert!(!o.fulfillment_open() && !o.has_open_work());
    assert!(o.refund_needs_reversal());
    // A repeat result changes nothing.
    assert!(step(&mut o, &write_off_failed(true)).unwrap().is_empty());

    // Gives up: one automatic refund of the whole paid amount, counted in refunded_amount.
    let mut o = fulfilled_by_biller(OrderStatus::Paid);
    let changes = step(&mut o, &write_off_failed(true)).unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| c.kind.event_type())
            .collect::<Vec<_>>(),
        vec![None, Some("order.fulfillment_failed")]
    );
    assert!(o.fulfillment.gave_up && !o.fulfillment_open());
    assert_eq!(o.refunds.len(), 1);
    let r = o.refunds[0].clone();
    assert!(r.automatic && r.for_fulfillment && r.returns_order_payment());
    assert_eq!((r.amount, r.channel_trade_no.clone()), (1000, None));
    assert_eq!(o.refundable(), 0, "nothing more for the merchant to refund");
    assert!(
        step(&mut o, &write_off_failed(true)).unwrap().is_empty(),
        "given up once"
    );
    let settle = Command::SettleRefund {
        refund_id: r.refund_id.clone(),
        outcome: RefundOutcome::Succeeded,
    };
    step(&mut o, &settle).unwrap();
    assert_eq!((o.status, o.refunded_amount), (OrderStatus::Refunded, 1000));
}

#[test]
fn a_merchant_refund_waits_for_fulfillment_and_orders_without_a_biller_never_wait() {
    let mut o = fulfilled_by_biller(OrderStatus::Paid);
    let before = o.clone();
    assert_eq!(
        step(&mut o, &refund("R1", 100)),
        Err(Rejection::FulfillmentPending)
    );
    assert_eq!(o, before, "refused: unchanged");
    step(&mut o, &write_off_failed(false)).unwrap();
    assert_eq!(
        step(&mut o, &refund("R1", 100)),
        Err(Rejection::FulfillmentPending)
    );
    step(
        &mut o,
        &Command::RecordFulfillment(FulfillmentOutcome::Succeeded),
    )
    .unwrap();
    assert_eq!(step(&mut o, &refund("R1", 100)).unwrap().len(), 1);

    // A merchant without a business system: fulfillment stays PENDING and is never worked on.
    let mut plain = order_in(OrderStatus::Paid);
    assert!(!plain.fulfillment_open() && !plain.refund_needs_reversal());
    assert!(
        step(&mut plain, &write_off_failed(true))
            .unwrap()
            .is_empty()
    );
    assert_eq!(step(&mut plain, &refund("R1", 100)).unwrap().len(), 1);
}

#[test]
fn the_fulfill_timer_follows_the_order() {
    let schedule = Schedule {
        fulfillment_retry: vec![std::time::Duration::from_secs(900); 2],
        ..Schedule::standard()
    };
    let mut new = NewOrder::for_test("demo", "M1", 1000);
    new.fulfillment_required = true;
    let (mut o, _) = Order::create(OrderId::generate(), new, T0);
    step(&mut o, &paying()).unwrap();
    let before = o.clone();
    step(&mut o, &paid(1000)).unwrap();
    let ops = crate::domain::timer::plan(&before, &o, T0, &schedule);
    assert!(ops.contains(&TimerOp::Set {
        kind: TimerKind::Fulfill,
        due_at: T0 + crate::domain::timer::FULFILLMENT_BACKSTOP,
        attempt: 0
    }));
    assert!(
        crate::domain::timer::ensure(&o, T0)
            .iter()
            .any(|op| matches!(
                op,
                TimerOp::Ensure {
                    kind: TimerKind::Fulfill,
                    ..
                }
            )),
        "the sweep restores a lost fulfill timer"
    );
    // After attempt n failed: the next is due after schedule[n - 1]; after the last, none.
    assert_eq!(
        schedule.next_fulfillment(T0, 1),
        Some(TimerOp::Set {
            kind: TimerKind::Fulfill,
            due_at: T0 + time::Duration::seconds(900),
            attempt: 1
        })
    );
    assert!(schedule.next_fulfillment(T0, 2).is_some());
    assert_eq!(schedule.next_fulfillment(T0, 3), None);
    let before = o.clone();
    step(
        &mut o,
        &Command::RecordFulfillment(FulfillmentOutcome::Succeeded),
    )
    .unwrap();
    assert!(
        crate::domain::timer::plan(&before, &o, T0, &schedule)
            .contains(&TimerOp::Clear(TimerKind::Fulfill))
    );
}
