//! Command replies against a real database file: a command create's order and reply in one
//! write, first-stored-wins, and the purge.

use super::super::SqliteStore;
use crate::config::SqliteSettings;
use crate::domain::*;
use crate::metrics::Metrics;
use crate::storage::OrderRecords;
use crate::storage::{CommandReply, CommandStore, CreateOutcome, OrderStore};
use std::sync::Arc;
use time::OffsetDateTime;

fn store(dir: &tempfile::TempDir) -> SqliteStore {
    let s = SqliteSettings {
        path: dir.path().join("c.db").to_string_lossy().into_owned(),
        ..SqliteSettings::default()
    };
    SqliteStore::open(&s, Arc::new(Metrics::new())).unwrap()
}

fn new_order(merchant: &str, no: &str) -> (Order, Vec<Event>) {
    let new = NewOrder::for_test(merchant, no, 500);
    let (order, change) = Order::create(OrderId::generate(), new, OffsetDateTime::now_utc());
    let events = Event::for_change(&order, &change).into_iter().collect();
    (order, events)
}

fn reply(
    merchant: &str,
    request: &str,
    hash: &str,
    status: u16,
    at: OffsetDateTime,
) -> CommandReply {
    CommandReply {
        merchant_id: MerchantId::parse(merchant).unwrap(),
        request_id: RequestId::parse(request).unwrap(),
        command_hash: hash.into(),
        status,
        body: format!("{{\"status\":{status}}}").into_bytes(),
        order_id: None,
        created_at: at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_create_stores_its_order_and_its_reply_in_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let now = OffsetDateTime::now_utc();
    let (a, ea) = new_order("m1", "A");
    let mut r1 = reply("m1", "r-1", "h1", 201, now);
    r1.order_id = Some(a.order_id.clone());
    assert_eq!(
        s.create_order_for_command(r1.clone(), a.clone(), ea, vec![])
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    assert!(s.load_order(&a.order_id).await.unwrap().is_some());
    let stored = s
        .command_reply(&a.merchant_id, &r1.request_id)
        .await
        .unwrap();
    assert_eq!(
        stored.as_ref().map(|r| (r.status, &r.body, &r.order_id)),
        Some((201, &r1.body, &r1.order_id))
    );

    // The same key again (a copy raced the first): nothing stored.
    let (b, eb) = new_order("m1", "B");
    assert_eq!(
        s.create_order_for_command(reply("m1", "r-1", "h1", 201, now), b.clone(), eb, vec![])
            .await
            .unwrap(),
        CreateOutcome::Answered
    );
    assert!(s.load_order(&b.order_id).await.unwrap().is_none());

    // A new key with a taken merchant_order_no: refused, and no reply stored with it.
    let (c, ec) = new_order("m1", "A");
    assert_eq!(
        s.create_order_for_command(reply("m1", "r-2", "h2", 201, now), c, ec, vec![])
            .await
            .unwrap(),
        CreateOutcome::Duplicate(a.order_id.clone())
    );
    let r2 = RequestId::parse("r-2").unwrap();
    assert_eq!(s.command_reply(&a.merchant_id, &r2).await.unwrap(), None);
    // Keys are per merchant.
    let m2 = MerchantId::parse("m2").unwrap();
    assert_eq!(s.command_reply(&m2, &r1.request_id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_reply_stored_under_a_key_wins_and_old_replies_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    // Stored with millisecond precision.
    let now = super::super::from_ms(super::super::to_ms(OffsetDateTime::now_utc()));
    let first = reply("m1", "r-3", "hx", 409, now);
    assert_eq!(s.store_command_reply(first.clone()).await.unwrap(), first);
    let answered = s
        .store_command_reply(reply("m1", "r-3", "hy", 201, now))
        .await
        .unwrap();
    assert_eq!(
        (answered.command_hash.as_str(), answered.status),
        ("hx", 409)
    );

    let old = reply("m1", "r-old", "h", 200, now - time::Duration::hours(2));
    s.store_command_reply(old.clone()).await.unwrap();
    assert!(s.purge(now, now - time::Duration::hours(1)).await.unwrap() >= 1);
    assert_eq!(
        s.command_reply(&old.merchant_id, &old.request_id)
            .await
            .unwrap(),
        None
    );
    assert!(
        s.command_reply(&first.merchant_id, &first.request_id)
            .await
            .unwrap()
            .is_some(),
        "a reply inside the retention stays"
    );
}

/// A command's pay: the order change and its reply are one write. A stale version stores
/// neither; a reply stored under the key first wins, and the change still happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_update_stores_its_change_and_its_reply_together_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let now = OffsetDateTime::now_utc();
    let (a, ea) = new_order("m1", "U");
    let mut created = reply("m1", "r-create", "hc", 201, now);
    created.order_id = Some(a.order_id.clone());
    s.create_order_for_command(created, a.clone(), ea, vec![])
        .await
        .unwrap();

    let cmd = Command::MarkPaying {
        pay_serial_no: PaySerialNo::generate(),
        pay_method: PayMethod::Native,
        channel_payload: serde_json::json!({"code_url": "sim://u"}),
        channel_trade_no: None,
    };
    let mut paying = a.clone();
    let mut events = Vec::new();
    for c in a.apply(&cmd, now).unwrap() {
        paying.on(&c);
        events.extend(Event::for_change(&paying, &c));
    }
    let mut pay_reply = reply("m1", "r-pay", "hp", 202, now);
    pay_reply.order_id = Some(a.order_id.clone());

    // A stale expected version: nothing of it is stored, not the reply either.
    let stale = s
        .update_order_for_command(
            pay_reply.clone(),
            paying.clone(),
            a.version + 7,
            a.status,
            events.clone(),
            vec![],
        )
        .await;
    assert!(
        matches!(stale, Err(crate::storage::StoreError::VersionConflict(_))),
        "{stale:?}"
    );
    assert_eq!(
        s.command_reply(&pay_reply.merchant_id, &pay_reply.request_id)
            .await
            .unwrap(),
        None,
        "no reply without its effect"
    );
    assert_eq!(
        s.load_order(&a.order_id).await.unwrap().unwrap().status,
        OrderStatus::Created
    );

    // The right version: both.
    s.update_order_for_command(
        pay_reply.clone(),
        paying.clone(),
        a.version,
        a.status,
        events,
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        s.load_order(&a.order_id).await.unwrap().unwrap().status,
        OrderStatus::Paying
    );
    let stored = s
        .command_reply(&pay_reply.merchant_id, &pay_reply.request_id)
        .await
        .unwrap()
        .expect("the reply is stored with its effect");
    assert_eq!(
        (
            stored.status,
            &stored.body,
            &stored.command_hash,
            &stored.order_id
        ),
        (
            202,
            &pay_reply.body,
            &pay_reply.command_hash,
            &pay_reply.order_id
        ),
        "the reply, byte for byte"
    );
    let counts = s.status_counts().await.unwrap();
    assert!(counts.contains(&(OrderStatus::Paying, 1)), "{counts:?}");

    // Later puts under the same key answer the first.
    let later = reply("m1", "r-pay", "hp", 409, now);
    assert_eq!(s.store_command_reply(later).await.unwrap(), stored);
}
