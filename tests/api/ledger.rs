//! The ledger end to end: orders paid, refunded, double-charged and closed through the
//! in-process simulator are booked by the ledger consumer, read back over the signed ledger
//! routes, and reconciled by `ledger verify` (the library function and the `paycore ledger
//! verify` command); a posting edited in the SQLite file makes verify fail.

use crate::common::*;
use paycore::actors::ledger_verify::{VerifyLimits, VerifyReport, verify};
use serde_json::{Value, json};
use std::time::Duration;

fn fast(s: &mut paycore::config::Settings) {
    s.orders.refund_retry_ms = vec![100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200];
    s.timers.tick_ms = 20;
}

/// Polls the order's ledger until it holds transactions of `kinds`, in that order (with
/// `any_order`, in any order: two callbacks of one payment may race).
async fn wait_ledger(t: &TestApp, id: &str, kinds: &[&str]) -> Vec<Value> {
    wait_ledger_as(t, id, kinds, false).await
}

async fn wait_ledger_as(t: &TestApp, id: &str, kinds: &[&str], any_order: bool) -> Vec<Value> {
    let path = format!("/v1/ledger/orders/{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = t.call("GET", &path, None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let txns = r.body.as_array().unwrap().clone();
        let mut got: Vec<&str> = txns.iter().map(|x| x["kind"].as_str().unwrap()).collect();
        let mut want = kinds.to_vec();
        if any_order {
            got.sort_unstable();
            want.sort_unstable();
        }
        if got == want {
            return txns;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ledger of {id} never held {kinds:?}; last {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn postings(txn: &Value) -> Vec<(String, i64)> {
    txn["postings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["currency"], "CNY");
            (
                p["account"].as_str().unwrap().to_string(),
                p["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn legs(l: &[(&str, i64)]) -> Vec<(String, i64)> {
    l.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

async fn reconcile(t: &TestApp) -> VerifyReport {
    let app = t.app();
    verify(&*app.store(), &*app.ledger(), VerifyLimits::default())
        .await
        .expect("verify reads the store")
}

/// Pays an order of 1000 and refunds 300 of it; answers its id.
async fn paid_and_refunded(t: &TestApp, no: &str) -> String {
    let id = t.create(no, 1000).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    t.wait_status(&id, "PAID").await;
    let r = t
        .call(
            "POST",
            &format!("/v1/orders/{id}/refunds"),
            Some(json!({"refund_no": "R1", "amount": 300})),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_for(
        t,
        "the refund",
        Duration::from_secs(15),
        |o| o["refunded_amount"] == 300,
        &id,
    )
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_and_partly_refunded_order_is_booked_read_back_and_reconciles() {
    let t = spawn_app(fast).await;
    let id = paid_and_refunded(&t, "LEDGER-1").await;
    let closed = t.create("LEDGER-2", 400).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = t
        .call("POST", &format!("/v1/orders/{closed}/close"), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let txns = wait_ledger(&t, &id, &["hold", "post", "refund"]).await;
    let (hold, post, refund) = (&txns[0], &txns[1], &txns[2]);
    assert_eq!(
        postings(hold),
        legs(&[
            ("channel_pending:sim", -1000),
            ("merchant_pending:demo", 1000)
        ])
    );
    assert_eq!(
        postings(post),
        legs(&[
            ("channel_pending:sim", 1000),
            ("merchant_pending:demo", -1000),
            ("channel_clearing:sim", -1000),
            ("merchant_payable:demo", 1000)
        ])
    );
    assert_eq!(post["resolves"], hold["txn_id"]);
    assert_eq!(
        postings(refund),
        legs(&[
            ("merchant_payable:demo", -300),
            ("channel_clearing:sim", 300)
        ])
    );
    for txn in &txns {
        // Ids derive from the causing event.
        let event = txn["event_id"].as_str().unwrap();
        assert_eq!(
            txn["txn_id"],
            format!("lt_{}", event.trim_start_matches("evt_"))
        );
        assert_eq!(txn["order_id"], id.as_str());
    }
    // The closed order never paid: nothing booked (once the ledger passed its close).
    let books_everything = wait_until(Duration::from_secs(10), || async {
        reconcile(&t).await.not_yet_booked == 0
    })
    .await;
    assert!(books_everything);
    assert_eq!(
        t.call("GET", &format!("/v1/ledger/orders/{closed}"), None)
            .await
            .body,
        json!([])
    );

    let balances = t.call("GET", "/v1/ledger/balances", None).await;
    assert_eq!(balances.status, 200);
    assert_eq!(
        balances.body,
        json!([
            {"account": "merchant_payable:demo", "currency": "CNY", "balance": 700, "inflow": 1000, "outflow": 300},
            {"account": "merchant_pending:demo", "currency": "CNY", "balance": 0, "inflow": 1000, "outflow": 1000}
        ])
    );
    let totals = t.call("GET", "/v1/ledger/totals", None).await;
    assert_eq!(
        totals.body,
        json!([{"currency": "CNY", "paid": 1000, "refunded": 300, "net_payable": 700, "pending_holds": 0, "owed_to_payers": 0}])
    );

    // Another merchant sees neither the order's ledger nor the balances.
    let foreign = t
        .call_as(
            "other",
            OTHER_SECRET,
            "GET",
            &format!("/v1/ledger/orders/{id}"),
            None,
        )
        .await;
    assert_eq!((foreign.status, foreign.code()), (404, "order_not_found"));
    let theirs = t
        .call_as("other", OTHER_SECRET, "GET", "/v1/ledger/balances", None)
        .await;
    assert_eq!((theirs.status, theirs.body.clone()), (200, json!([])));
    assert_eq!(
        t.call("GET", "/v1/ledger/orders/ord_nope", None)
            .await
            .code(),
        "order_not_found"
    );
    // Signed like every /v1 route; the routes take GET only.
    let unsigned = t.raw("GET", "/v1/ledger/balances", vec![], &[]).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(
        t.call("POST", "/v1/ledger/balances", None).await.status,
        405
    );
    assert_eq!(
        t.call("DELETE", &format!("/v1/ledger/orders/{id}"), None)
            .await
            .status,
        405
    );

    let report = reconcile(&t).await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        (report.orders_checked, report.transactions, report.postings),
        (2, 3, 8)
    );
    assert_eq!(
        metric(&t, "paycore_ledger_transactions_total").await,
        Some(3.0)
    );
    assert_eq!(metric(&t, "paycore_ledger_postings_total").await, Some(8.0));
    assert_eq!(
        metric(&t, "paycore_ledger_rejected_events_total").await,
        Some(0.0)
    );
    let doc = t.raw("GET", "/openapi.json", vec![], &[]).await.body;
    for path in [
        "/v1/ledger/orders/{order_id}",
        "/v1/ledger/balances",
        "/v1/ledger/totals",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_charge_is_owed_back_then_returned_in_the_ledger() {
    let t = spawn_app(|s| {
        fast(s);
        s.simulator.behaviour.double_charge_rate = 1.0;
    })
    .await;
    let id = t.create("LEDGER-DOUBLE", 800).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    wait_for(
        &t,
        "the second charge refunded",
        Duration::from_secs(15),
        |o| o["payments"][1]["refund_status"] == "SUCCEEDED",
        &id,
    )
    .await;
    let txns = wait_ledger_as(
        &t,
        &id,
        &["hold", "post", "extra_payment", "extra_refund"],
        true,
    )
    .await;
    let of = |kind: &str| txns.iter().find(|x| x["kind"] == kind).unwrap();
    assert_eq!(
        postings(of("extra_payment")),
        legs(&[
            ("channel_clearing:sim", -800),
            ("refunds_payable:demo", 800)
        ])
    );
    assert_eq!(
        postings(of("extra_refund")),
        legs(&[
            ("refunds_payable:demo", -800),
            ("channel_clearing:sim", 800)
        ])
    );
    assert_eq!(
        of("extra_refund")["txn_id"].as_str().unwrap().len(),
        "lt_".len() + 26
    );
    let totals = t.call("GET", "/v1/ledger/totals", None).await.body;
    assert_eq!(
        (
            totals[0]["paid"].as_i64(),
            totals[0]["owed_to_payers"].as_i64()
        ),
        (Some(800), Some(0))
    );
    let report = reconcile(&t).await;
    assert!(report.passed(), "{report}");
    t.stop().await;
}

/// Runs `paycore ledger verify` against the database in `dir`; answers (exit code, stdout).
fn verify_command(dir: &std::path::Path) -> (i32, String) {
    let config = dir.join("verify.toml");
    let db = dir.join("paycore.db");
    std::fs::write(
        &config,
        format!("[storage.sqlite]\npath = {:?}\n", db.to_string_lossy()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paycore"))
        .args(["--config", config.to_str().unwrap(), "ledger", "verify"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("paycore runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posting_edited_in_the_database_fails_verify() {
    let t = spawn_app(fast).await;
    let id = paid_and_refunded(&t, "LEDGER-TAMPER").await;
    let txns = wait_ledger(&t, &id, &["hold", "post", "refund"]).await;
    let refund_txn = txns[2]["txn_id"].as_str().unwrap().to_string();
    assert!(reconcile(&t).await.passed());
    let dir = t.stop().await;

    let (code, out) = verify_command(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASSED"), "{out}");

    // The refund's payable leg made one fen smaller, behind the store's back.
    let db = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE ledger_postings SET amount = -299 WHERE txn_id = ?1 AND account = 'merchant_payable:demo'",
            [&refund_txn],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let (code, out) = verify_command(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        out.contains(&format!("unbalanced: transaction {refund_txn}")),
        "{out}"
    );
    assert!(
        out.contains("balance_drift: merchant_payable:demo"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "order {id} (PAID): merchant_payable nets 701 CNY; paid 1000 − refunded 300 = 700"
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_books_every_committed_event_before_storage_closes() {
    let t = spawn_app(fast).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = t.create(&format!("LEDGER-SD-{i}"), 100 + i).await["order_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(t.pay(&id).await.status, 202);
        ids.push(id);
    }
    for id in &ids {
        t.wait_status(id, "PAID").await;
    }
    // Stopped at once: whatever the ledger had not booked yet, it books before storage closes.
    let dir = t.stop().await;
    let db = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let (cursor, last): (i64, i64) = db
        .query_row(
            "SELECT (SELECT seq FROM stream_cursors WHERE name = 'ledger'), (SELECT MAX(seq) FROM events)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        cursor, last,
        "the ledger's cursor is at the end of the outbox"
    );
    let posts: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'post'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(posts, 5);
    drop(db);
    let (code, out) = verify_command(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("not yet booked"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_the_ledger_books_nothing_and_holds_no_cursor() {
    let t = spawn_app(|s| {
        fast(s);
        s.ledger.enabled = false;
    })
    .await;
    let id = t.create("LEDGER-OFF", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    t.wait_status(&id, "PAID").await;
    let r = t
        .call("GET", &format!("/v1/ledger/orders/{id}"), None)
        .await;
    assert_eq!((r.status, r.body), (200, json!([])));
    assert_eq!(metric(&t, "paycore_ledger_batches_total").await, Some(0.0));
    let dir = t.stop().await;
    let db = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let cursors: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM stream_cursors WHERE name = 'ledger'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        cursors, 0,
        "a switched-off ledger must not hold the outbox purge"
    );
}
