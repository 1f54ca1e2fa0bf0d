//! Table tests: every command against every status, and the pay/close decisions.

use super::*;
use crate::domain::ids::PaySerialNo;
use proptest::prelude::*;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn order_in(status: OrderStatus) -> Order {
    let new = NewOrder::for_test("demo", "M1", 1000);
    let (mut o, _) = Order::create(OrderId::generate(), new, T0);
    o.status = status;
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
    Command::MarkPaid {
        channel_trade_no: "T1".into(),
        amount,
        paid_at: T0,
    }
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
        (
            Paying,
            paid(999),
            Err(Rejection::AmountMismatch {
                expected: 1000,
                reported: 999,
            }),
        ),
        (
            Created,
            paid(1001),
            Err(Rejection::AmountMismatch {
                expected: 1000,
                reported: 1001,
            }),
        ),
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
        (
            Created,
            Command::MarkChannelClosed,
            Err(Rejection::WrongStatus(Created)),
        ),
        (
            Paid,
            Command::MarkChannelClosed,
            Err(Rejection::WrongStatus(Paid)),
        ),
        (
            Created,
            Command::MarkLatePaymentRefunded,
            Err(Rejection::WrongStatus(Created)),
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
fn late_payment_is_recorded_once_and_refunded_once() {
    let mut order = order_in(OrderStatus::Closed);
    for c in order.apply(&paid(1000), T0).unwrap() {
        order.on(&c);
    }
    let lp = order.late_payment.clone().expect("late payment recorded");
    assert_eq!(
        (lp.amount, lp.refunded, order.status),
        (1000, false, OrderStatus::Closed)
    );
    assert!(
        order.apply(&paid(1000), T0).unwrap().is_empty(),
        "a repeat callback adds nothing"
    );
    let changes = order.apply(&Command::MarkLatePaymentRefunded, T0).unwrap();
    assert_eq!(changes[0].kind.event_type(), Some("refund.succeeded"));
    for c in changes {
        order.on(&c);
    }
    assert!(order.late_payment.as_ref().unwrap().refunded);
    assert!(
        order
            .apply(&Command::MarkLatePaymentRefunded, T0)
            .unwrap()
            .is_empty()
    );
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
        Some(serde_json::json!({"code_url": "sim://x"}))
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
    assert!(parse_notify_url("https://merchant.example/notify").is_ok());
    assert!(parse_notify_url("http://127.0.0.1:9000/n").is_ok());
    for bad in [
        "",
        "ftp://x",
        "https://",
        "https:///x",
        "https://a b",
        "merchant.example",
    ] {
        assert!(parse_notify_url(bad).is_err(), "{bad}");
    }
    assert!(parse_notify_url(&format!("https://a/{}", "x".repeat(600))).is_err());
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(paying()),
        (999i64..=1001).prop_map(paid),
        Just(failed()),
        Just(Command::Close),
        Just(Command::MarkChannelClosed),
        Just(Command::MarkLatePaymentRefunded),
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
            if was_paid { prop_assert_eq!(order.status, OrderStatus::Paid); }
            was_paid |= order.status == OrderStatus::Paid;
            if order.status == OrderStatus::Paid {
                prop_assert!(order.late_payment.is_none(), "a paid order never also holds a late payment");
            }
        }
    }
}
