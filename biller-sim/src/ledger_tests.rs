//! Unit tests of the ledger's business rules, without HTTP, clocks or randomness.

use super::*;

const NOW: &str = "2026-01-02T03:04:05Z";

fn req(order_id: &str, amount: i64) -> WriteOffRequest {
    WriteOffRequest {
        order_id: order_id.to_owned(),
        merchant_id: "m1".to_owned(),
        merchant_order_no: "no-1".to_owned(),
        amount,
        currency: "CNY".to_owned(),
        business_type: "GAS".to_owned(),
    }
}

fn rev(reversal_id: &str, amount: i64) -> ReverseRequest {
    ReverseRequest {
        reversal_id: reversal_id.to_owned(),
        amount,
        reason: None,
    }
}

fn none() -> WriteOffFaults {
    WriteOffFaults::default()
}

#[test]
fn write_off_is_idempotent_and_counts_attempts() {
    let mut ledger = Ledger::new(10, 7);
    let first = ledger.write_off(&req("o1", 100), none(), NOW).unwrap();
    assert_eq!(first.status, WriteOffStatus::Applied);
    assert_eq!(first.write_off_id, "wo000000070000000001");
    assert_eq!(first.applied_at, NOW);
    let again = ledger
        .write_off(&req("o1", 100), none(), "2030-01-01T00:00:00Z")
        .unwrap();
    assert_eq!(again, first);
    let mut other_currency = req("o1", 100);
    other_currency.currency = "USD".to_owned();
    for conflicting in [req("o1", 101), other_currency] {
        let err = ledger.write_off(&conflicting, none(), NOW).unwrap_err();
        assert_eq!(err.code(), protocol::CONFLICT);
    }
    let audit = ledger.audit("o1");
    assert_eq!((audit.attempts, audit.write_offs), (4, vec![first]));
}

#[test]
fn malformed_write_offs_are_refused_and_not_counted() {
    let mut ledger = Ledger::new(10, 0);
    let mut cases = vec![req("o1", 0), req("o1", -5), req("", 1), req("o/1", 1)];
    cases.push(req(&"x".repeat(MAX_ID_LEN + 1), 1));
    for (field, value) in [
        ("merchant_id", ""),
        ("currency", "cny"),
        ("currency", "CNYY"),
    ] {
        let mut bad = req("o1", 1);
        match field {
            "merchant_id" => bad.merchant_id = value.to_owned(),
            _ => bad.currency = value.to_owned(),
        }
        cases.push(bad);
    }
    for bad in cases {
        let err = ledger.write_off(&bad, none(), NOW).unwrap_err();
        assert!(matches!(err, LedgerError::Invalid(_)), "{bad:?}: {err}");
    }
    assert_eq!(ledger.audit("o1").attempts, 0);
    assert!(
        ledger
            .write_off(&req(&"x".repeat(MAX_ID_LEN), 1), none(), NOW)
            .is_ok()
    );
}

#[test]
fn injected_faults_record_nothing_except_a_lost_answer() {
    let mut ledger = Ledger::new(10, 0);
    let fail_first = WriteOffFaults {
        fail_first: 2,
        ..none()
    };
    for _ in 0..2 {
        let err = ledger
            .write_off(&req("o1", 5), fail_first, NOW)
            .unwrap_err();
        assert_eq!(err, LedgerError::SystemError);
        assert!(ledger.get("o1").is_err());
    }
    assert!(ledger.write_off(&req("o1", 5), fail_first, NOW).is_ok());
    assert_eq!(ledger.audit("o1").attempts, 3);

    let permanent = WriteOffFaults {
        permanent: true,
        ..none()
    };
    let fail_now = WriteOffFaults {
        fail_now: true,
        ..none()
    };
    assert_eq!(
        ledger.write_off(&req("o2", 5), permanent, NOW),
        Err(LedgerError::AccountInvalid)
    );
    assert_eq!(
        ledger.write_off(&req("o2", 5), fail_now, NOW),
        Err(LedgerError::SystemError)
    );
    assert!(ledger.audit("o2").write_offs.is_empty());

    let lost = WriteOffFaults {
        lose_answer: true,
        ..none()
    };
    assert_eq!(
        ledger.write_off(&req("o3", 5), lost, NOW),
        Err(LedgerError::SystemError)
    );
    let recorded = ledger.get("o3").unwrap();
    // Only a call that records a new write-off loses its answer: the retry is answered.
    assert_eq!(ledger.write_off(&req("o3", 5), lost, NOW), Ok(recorded));
}

#[test]
fn reversals_are_bounded_idempotent_and_update_the_status() {
    let mut ledger = Ledger::new(10, 0);
    ledger.write_off(&req("o1", 100), none(), NOW).unwrap();
    ledger.write_off(&req("o2", 100), none(), NOW).unwrap();
    let r1 = ledger.reverse("o1", &rev("r1", 40), false, NOW).unwrap();
    assert_eq!(
        ledger.get("o1").unwrap().status,
        WriteOffStatus::PartlyReversed
    );
    assert_eq!(ledger.reverse("o1", &rev("r1", 40), false, NOW), Ok(r1));
    for (order, reversal) in [("o1", rev("r1", 41)), ("o2", rev("r1", 40))] {
        let err = ledger.reverse(order, &reversal, false, NOW).unwrap_err();
        assert_eq!(err.code(), protocol::CONFLICT, "{order} {reversal:?}");
    }
    assert_eq!(
        ledger.reverse("o1", &rev("r2", 61), false, NOW),
        Err(LedgerError::Exceeds {
            requested: 61,
            reversible: 60
        })
    );
    assert_eq!(
        ledger
            .reverse("o1", &rev("r2", i64::MAX), false, NOW)
            .unwrap_err()
            .code(),
        protocol::EXCEEDS
    );
    ledger.reverse("o1", &rev("r2", 60), false, NOW).unwrap();
    let view = ledger.get("o1").unwrap();
    assert_eq!(
        (view.reversed_amount, view.status),
        (100, WriteOffStatus::Reversed)
    );
    assert_eq!(ledger.audit("o1").reversals.len(), 2);
    assert_eq!(
        ledger.reverse("nobody", &rev("r3", 1), false, NOW),
        Err(LedgerError::NotFound("nobody".to_owned()))
    );
    assert_eq!(
        ledger.reverse("o2", &rev("r3", 1), true, NOW),
        Err(LedgerError::ReversalRefused)
    );
    assert_eq!(ledger.get("o2").unwrap().reversed_amount, 0);
    let long_reason = ReverseRequest {
        reason: Some("x".repeat(MAX_REASON_LEN + 1)),
        ..rev("r4", 1)
    };
    assert!(matches!(
        ledger.reverse("o2", &long_reason, false, NOW),
        Err(LedgerError::Invalid(_))
    ));
}

#[test]
fn every_map_is_bounded_by_max_records() {
    let mut ledger = Ledger::new(1, 0);
    let fail = WriteOffFaults {
        fail_first: 1,
        ..none()
    };
    // A failed attempt takes the only slot, so another order cannot even be counted.
    assert_eq!(
        ledger.write_off(&req("o1", 10), fail, NOW),
        Err(LedgerError::SystemError)
    );
    let err = ledger.write_off(&req("o2", 10), none(), NOW).unwrap_err();
    assert_eq!(err.code(), protocol::CAPACITY);
    assert_eq!(ledger.audit("o2").attempts, 0);
    // The order holding the slot goes on.
    ledger.write_off(&req("o1", 10), fail, NOW).unwrap();
    ledger.reverse("o1", &rev("r1", 1), false, NOW).unwrap();
    let err = ledger.reverse("o1", &rev("r2", 1), false, NOW).unwrap_err();
    assert_eq!(err.code(), protocol::CAPACITY);
    assert_eq!(ledger.get("o1").unwrap().reversed_amount, 1);
}
