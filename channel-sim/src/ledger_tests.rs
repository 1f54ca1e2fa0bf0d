//! Unit tests of the ledger's business rules, without HTTP or timers.

use super::*;

fn create_req(out_trade_no: &str, amount: i64) -> CreatePaymentRequest {
    CreatePaymentRequest {
        out_trade_no: out_trade_no.to_owned(),
        amount,
        currency: "CNY".to_owned(),
        pay_method: "NATIVE".to_owned(),
        auth_code: None,
        subject: None,
        notify_url: "http://127.0.0.1:1/notify".to_owned(),
    }
}

fn refund_req(out_trade_no: &str, out_refund_no: &str, amount: i64) -> RefundRequest {
    RefundRequest {
        out_trade_no: out_trade_no.to_owned(),
        out_refund_no: out_refund_no.to_owned(),
        amount,
        trade_no: None,
    }
}

fn paid(ledger: &mut Ledger, out_trade_no: &str, amount: i64) -> PaymentView {
    let Created::New(view) = ledger.create(&create_req(out_trade_no, amount)).unwrap() else {
        panic!("expected a new payment");
    };
    ledger
        .settle(
            out_trade_no,
            &view.trade_no,
            Settlement::Success { surcharge: 0 },
        )
        .unwrap();
    ledger.get(out_trade_no).unwrap()
}

#[test]
fn create_is_idempotent_and_guards_out_trade_no() {
    let mut ledger = Ledger::new(10);
    let Created::New(first) = ledger.create(&create_req("o1", 100)).unwrap() else {
        panic!("expected a new payment");
    };
    assert_eq!(first.status, PaymentStatus::Notpay);
    assert_eq!(
        first.code_url,
        Some(format!("sim://pay/{}", first.trade_no))
    );
    assert_eq!(
        ledger.create(&create_req("o1", 100)),
        Ok(Created::Existing(first))
    );
    assert_eq!(
        ledger.create(&create_req("o1", 101)),
        Err(LedgerError::OutTradeNoUsed("o1".to_owned()))
    );
}

#[test]
fn create_validates_fields_and_capacity() {
    let mut ledger = Ledger::new(1);
    assert!(matches!(
        ledger.create(&create_req("", 1)),
        Err(LedgerError::Invalid(_))
    ));
    assert!(matches!(
        ledger.create(&create_req("o", 0)),
        Err(LedgerError::Invalid(_))
    ));
    let long = "x".repeat(MAX_ID_LEN + 1);
    assert!(matches!(
        ledger.create(&create_req(&long, 1)),
        Err(LedgerError::Invalid(_))
    ));
    let mut bad_url = create_req("o", 1);
    bad_url.notify_url = "ftp://x".to_owned();
    assert!(matches!(
        ledger.create(&bad_url),
        Err(LedgerError::Invalid(_))
    ));
    ledger.create(&create_req("a", 1)).unwrap();
    let err = ledger.create(&create_req("b", 1)).unwrap_err();
    assert_eq!(err.code(), protocol::CAPACITY);
    // The existing one is still answered at capacity.
    assert!(matches!(
        ledger.create(&create_req("a", 1)),
        Ok(Created::Existing(_))
    ));
}

#[test]
fn settle_charges_once_and_skips_closed_payments() {
    let mut ledger = Ledger::new(10);
    let view = paid(&mut ledger, "o1", 100);
    assert_eq!(view.status, PaymentStatus::Success);
    assert!(view.paid_at.is_some());
    assert_eq!(
        ledger.settle("o1", &view.trade_no, Settlement::Success { surcharge: 0 }),
        None
    );
    assert_eq!(ledger.audit("o1").charges.len(), 1);

    let Created::New(open) = ledger.create(&create_req("o2", 5)).unwrap() else {
        panic!("expected a new payment");
    };
    assert_eq!(ledger.close("o2").unwrap().status, PaymentStatus::Closed);
    assert_eq!(
        ledger.settle("o2", &open.trade_no, Settlement::Success { surcharge: 0 }),
        None
    );
    assert!(ledger.audit("o2").charges.is_empty());
    assert_eq!(
        ledger.create(&create_req("o2", 5)),
        Err(LedgerError::OrderClosed)
    );
}

#[test]
fn failure_sets_reason_and_charges_nothing() {
    let mut ledger = Ledger::new(10);
    let Created::New(view) = ledger.create(&create_req("o1", 100)).unwrap() else {
        panic!("expected a new payment");
    };
    let notice = ledger.settle(
        "o1",
        &view.trade_no,
        Settlement::Failure("NOTENOUGH".to_owned()),
    );
    let body = notice.unwrap().body;
    assert_eq!(body.status, PaymentStatus::Payerror);
    assert_eq!(body.failure_reason.as_deref(), Some("NOTENOUGH"));
    assert!(ledger.audit("o1").charges.is_empty());
    assert_eq!(ledger.close("o1").unwrap().status, PaymentStatus::Closed);
}

#[test]
fn close_rules() {
    let mut ledger = Ledger::new(10);
    paid(&mut ledger, "paid", 100);
    assert_eq!(ledger.close("paid"), Err(LedgerError::OrderPaid));
    assert_eq!(
        ledger.close("none"),
        Err(LedgerError::NotFound("none".to_owned()))
    );
    ledger.create(&create_req("open", 1)).unwrap();
    let closed = ledger.close("open").unwrap();
    assert_eq!(ledger.close("open"), Ok(closed));
}

#[test]
fn refund_rules() {
    let mut ledger = Ledger::new(10);
    paid(&mut ledger, "o1", 100);
    let first = ledger
        .refund(&refund_req("o1", "r1", 60), RefundFaults::default())
        .unwrap();
    assert_eq!(first.status, RefundStatus::Success);
    assert_eq!(
        ledger.refund(&refund_req("o1", "r1", 60), RefundFaults::default()),
        Ok(first)
    );
    assert!(matches!(
        ledger.refund(&refund_req("o1", "r1", 61), RefundFaults::default()),
        Err(LedgerError::Invalid(_))
    ));
    assert_eq!(
        ledger.refund(&refund_req("o1", "r2", 41), RefundFaults::default()),
        Err(LedgerError::RefundExceeds {
            requested: 41,
            refundable: 40
        })
    );
    ledger
        .refund(&refund_req("o1", "r3", 40), RefundFaults::default())
        .unwrap();
    assert_eq!(ledger.get("o1").unwrap().refunded_amount, 100);
    assert_eq!(ledger.audit("o1").refunds.len(), 2);

    ledger.create(&create_req("open", 1)).unwrap();
    assert_eq!(
        ledger.refund(&refund_req("open", "r4", 1), RefundFaults::default()),
        Err(LedgerError::NotPaid)
    );
    ledger.close("open").unwrap();
    assert_eq!(
        ledger.refund(&refund_req("open", "r5", 1), RefundFaults::default()),
        Err(LedgerError::OrderClosed)
    );
}

#[test]
fn refunds_per_payment_are_bounded() {
    let mut ledger = Ledger::new(10);
    paid(&mut ledger, "o1", 1_000);
    for i in 0..MAX_REFUNDS_PER_PAYMENT {
        ledger
            .refund(
                &refund_req("o1", &format!("r{i}"), 1),
                RefundFaults::default(),
            )
            .unwrap();
    }
    let err = ledger
        .refund(&refund_req("o1", "one-more", 1), RefundFaults::default())
        .unwrap_err();
    assert_eq!(err.code(), protocol::CAPACITY);
}

#[test]
fn audit_of_unknown_order_is_empty() {
    let ledger = Ledger::new(1);
    let audit = ledger.audit("nobody");
    assert!(audit.payments.is_empty() && audit.charges.is_empty() && audit.refunds.is_empty());
}

#[test]
fn a_second_charge_has_its_own_trade_no_and_is_refunded_by_it() {
    let mut ledger = Ledger::new(10);
    let first = paid(&mut ledger, "o1", 500);
    let notice = ledger
        .charge_again("o1")
        .expect("paid payments can be charged again");
    let second = notice.body.trade_no.clone();
    assert_ne!(second, first.trade_no);
    assert_eq!(
        (notice.body.amount, notice.body.status),
        (500, PaymentStatus::Success)
    );
    let view = ledger.get("o1").unwrap();
    assert_eq!(view.charges.len(), 2);
    assert!(ledger.charge_again("unknown").is_none());
    let by_trade = |no: &str, trade: &str, amount| RefundRequest {
        trade_no: Some(trade.to_owned()),
        ..refund_req("o1", no, amount)
    };
    let r = ledger
        .refund(&by_trade("r-second", &second, 500), RefundFaults::default())
        .unwrap();
    assert_eq!(r.trade_no, second);
    // That charge is fully refunded; the first one still has all of its amount.
    assert!(matches!(
        ledger.refund(&by_trade("r-more", &second, 1), RefundFaults::default()),
        Err(LedgerError::RefundExceeds { refundable: 0, .. })
    ));
    let own = ledger
        .refund(&refund_req("o1", "r-own", 500), RefundFaults::default())
        .unwrap();
    assert_eq!(own.trade_no, first.trade_no);
    assert!(matches!(
        ledger.refund(
            &by_trade("r-x", "no-such-charge", 1),
            RefundFaults::default()
        ),
        Err(LedgerError::NotFound(_))
    ));
    assert_eq!(ledger.get("o1").unwrap().refunded_amount, 1000);
    assert_eq!(ledger.audit("o1").charges.len(), 2);
}

#[test]
fn a_surcharge_is_what_the_payer_is_charged() {
    let mut ledger = Ledger::new(10);
    let Created::New(view) = ledger.create(&create_req("o1", 500)).unwrap() else {
        panic!("expected a new payment");
    };
    let notice = ledger
        .settle("o1", &view.trade_no, Settlement::Success { surcharge: 1 })
        .unwrap();
    assert_eq!(notice.body.amount, 501);
    let view = ledger.get("o1").unwrap();
    assert_eq!((view.amount, view.charges[0].amount), (500, 501));
}

#[test]
fn refund_faults_fail_the_first_attempts_then_succeed_once() {
    let faults = |after_recording| RefundFaults {
        errors_per_refund: 2,
        after_recording,
    };
    // Nothing recorded by a failing attempt.
    let mut ledger = Ledger::new(10);
    paid(&mut ledger, "o1", 500);
    for _ in 0..2 {
        assert_eq!(
            ledger.refund(&refund_req("o1", "r1", 100), faults(false)),
            Err(LedgerError::SystemError)
        );
        assert!(ledger.get_refund("r1").is_err());
    }
    let ok = ledger
        .refund(&refund_req("o1", "r1", 100), faults(false))
        .unwrap();
    assert_eq!(ledger.get_refund("r1"), Ok(ok));
    // The answer is lost, the refund is not: retries return the same refund, once.
    let mut ledger = Ledger::new(10);
    paid(&mut ledger, "o2", 500);
    assert_eq!(
        ledger.refund(&refund_req("o2", "r2", 100), faults(true)),
        Err(LedgerError::SystemError)
    );
    let recorded = ledger.get_refund("r2").expect("recorded before the error");
    assert_eq!(LedgerError::SystemError.code(), protocol::SYSTEMERROR);
    let _ = ledger.refund(&refund_req("o2", "r2", 100), faults(true));
    assert_eq!(
        ledger.refund(&refund_req("o2", "r2", 100), faults(true)),
        Ok(recorded)
    );
    assert_eq!(ledger.audit("o2").refunds.len(), 1);
    assert_eq!(ledger.get("o2").unwrap().refunded_amount, 100);
}
