//! One conformance suite for `OrderRecords`, run on every backend: on SQLite always (the tests at
//! the end of this file), on the CQL backend when `PAYCORE_TEST_CQL` names a server
//! (`storage::scylla::tests`, which `.ci/run` runs against a real Apache Cassandra). Each case
//! uses a merchant of its own, so the cases may share one database or keyspace.

use super::{
    CommandReply, CommandStore, CreateOutcome, EventLog, OrderRecords, Position, StoreError,
    StoredEvent, TimerStore, TokenRecord,
};
use crate::domain::*;
use std::sync::Arc;
use time::{Duration as TDuration, OffsetDateTime};

/// A merchant id no other case uses.
pub fn merchant(case: &str) -> String {
    format!("{case}-{}", OrderId::generate().as_str().replace('_', "-"))
}

pub fn new_order(merchant: &str, no: &str) -> (Order, Vec<Event>) {
    let new = NewOrder::for_test(merchant, no, 500);
    let (order, change) = Order::create(OrderId::generate(), new, OffsetDateTime::now_utc());
    let events = Event::for_change(&order, &change).into_iter().collect();
    (order, events)
}

pub async fn token(store: &dyn OrderRecords, merchant: &str, ttl_secs: i64) -> SubmitToken {
    let t = SubmitToken::generate();
    store
        .issue_token(TokenRecord {
            token: t.clone(),
            merchant_id: MerchantId::parse(merchant).unwrap(),
            expires_at: OffsetDateTime::now_utc() + TDuration::seconds(ttl_secs),
        })
        .await
        .unwrap();
    t
}

/// How a case's submit tokens are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenForm {
    /// Issued into the store (the form a paycore before signed tokens stored).
    Stored,
    /// Signed with the store's key; nothing stored until a create uses it.
    Signed,
}

/// A token of `form` for `merchant`, good for `ttl_secs`.
pub async fn token_of(
    store: &dyn OrderRecords,
    form: TokenForm,
    merchant: &str,
    ttl_secs: i64,
) -> SubmitToken {
    match form {
        TokenForm::Stored => token(store, merchant, ttl_secs).await,
        TokenForm::Signed => store.submit_token_key().issue(
            &MerchantId::parse(merchant).unwrap(),
            OffsetDateTime::now_utc() + TDuration::seconds(ttl_secs),
        ),
    }
}

/// `order` moved to PAYING, and the events of that change.
pub fn paying(order: &Order) -> (Order, Vec<Event>) {
    let cmd = Command::MarkPaying {
        pay_serial_no: PaySerialNo::generate(),
        pay_method: PayMethod::Native,
        channel_payload: serde_json::json!({}),
        channel_trade_no: None,
    };
    let mut next = order.clone();
    let mut events = Vec::new();
    for c in order.apply(&cmd, OffsetDateTime::now_utc()).unwrap() {
        next.on(&c);
        events.extend(Event::for_change(&next, &c));
    }
    (next, events)
}

fn expiry(order: &Order) -> TimerOp {
    TimerOp::Set {
        kind: TimerKind::Expire,
        due_at: order.created_at + TDuration::minutes(15),
        attempt: 0,
    }
}

/// Tokens of either form are one-time; numbers are unique per merchant; a refused create
/// stores nothing and leaves its token unused; an expired token admits nothing. A stored
/// token is also the merchant's and must be known to the store (a signed one's signature and
/// merchant are checked by the caller, before the store). The store's token key is the same
/// each time it is asked.
pub async fn tokens_and_numbers(store: &dyn OrderRecords, form: TokenForm) {
    assert_eq!(
        store.submit_token_key().bytes(),
        store.submit_token_key().bytes()
    );
    let m = merchant("tn");
    let other = merchant("tn");
    let now = OffsetDateTime::now_utc();
    let t = token_of(store, form, &m, 60).await;

    let (o1, e1) = new_order(&m, "A");
    let created = store.create_order(t.clone(), o1.clone(), e1.clone(), vec![], now);
    assert_eq!(created.await.unwrap(), CreateOutcome::Created);
    let (o2, e2) = new_order(&m, "B");
    assert_eq!(
        store
            .create_order(t.clone(), o2.clone(), e2, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::TokenUsed(Some(o1.order_id.clone()))
    );
    assert!(
        store.load_order(&o2.order_id).await.unwrap().is_none(),
        "a refused create stores nothing"
    );

    // The same number with a fresh token: duplicate, and the token stays unused.
    let t2 = token_of(store, form, &m, 60).await;
    let (o3, e3) = new_order(&m, "A");
    assert_eq!(
        store
            .create_order(t2.clone(), o3.clone(), e3, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::Duplicate(o1.order_id.clone())
    );
    assert!(store.load_order(&o3.order_id).await.unwrap().is_none());
    let (o4, e4) = new_order(&m, "C");
    assert_eq!(
        store.create_order(t2, o4, e4, vec![], now).await.unwrap(),
        CreateOutcome::Created
    );

    // An expired token is invalid; of the stored form, so are another merchant's and an
    // unknown one.
    let (o5, e5) = new_order(&m, "D");
    let mut refused = vec![token_of(store, form, &m, -1).await];
    if form == TokenForm::Stored {
        refused.push(token(store, &other, 60).await);
        refused.push(SubmitToken::generate());
    }
    for t in refused {
        assert_eq!(
            store
                .create_order(t, o5.clone(), e5.clone(), vec![], now)
                .await
                .unwrap(),
            CreateOutcome::TokenInvalid
        );
    }
    assert!(store.load_order(&o5.order_id).await.unwrap().is_none());

    // The same number at another merchant is another order.
    let t3 = token_of(store, form, &other, 60).await;
    let (o6, e6) = new_order(&other, "A");
    assert_eq!(
        store.create_order(t3, o6, e6, vec![], now).await.unwrap(),
        CreateOutcome::Created
    );

    assert_eq!(
        store.load_order(&o1.order_id).await.unwrap(),
        Some(o1.clone())
    );
    assert_eq!(store.order_events(&o1.order_id).await.unwrap(), e1);
    let found = store
        .find_by_merchant_order_no(&o1.merchant_id, &o1.merchant_order_no)
        .await
        .unwrap();
    assert_eq!(found, Some(o1.clone()));
    let missing = MerchantOrderNo::parse("NEVER").unwrap();
    assert_eq!(
        store
            .find_by_merchant_order_no(&o1.merchant_id, &missing)
            .await
            .unwrap(),
        None
    );
}

/// A change is stored with its events only at the version it was made from; a stale one
/// changes nothing.
pub async fn versioned_changes(store: &dyn OrderRecords) {
    let m = merchant("vc");
    let t = token(store, &m, 60).await;
    let (order, created_events) = new_order(&m, "V");
    let now = OffsetDateTime::now_utc();
    let created = store.create_order(
        t,
        order.clone(),
        created_events.clone(),
        vec![expiry(&order)],
        now,
    );
    assert_eq!(created.await.unwrap(), CreateOutcome::Created);

    let (next, events) = paying(&order);
    assert!(!events.is_empty());
    store
        .update_order(
            next.clone(),
            order.version,
            order.status,
            events.clone(),
            vec![],
        )
        .await
        .unwrap();
    let (stale, stale_events) = paying(&order);
    let refused = store
        .update_order(stale, order.version, order.status, stale_events, vec![])
        .await;
    assert!(
        matches!(refused, Err(StoreError::VersionConflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.load_order(&order.order_id).await.unwrap(), Some(next));
    let mut all = created_events;
    all.extend(events);
    assert_eq!(store.order_events(&order.order_id).await.unwrap(), all);

    // An order never created takes no change.
    let (ghost, ghost_events) = new_order(&m, "GHOST");
    let (ghost_next, more) = paying(&ghost);
    let refused = store
        .update_order(ghost_next, ghost.version, ghost.status, more, vec![])
        .await;
    assert!(
        matches!(refused, Err(StoreError::VersionConflict(_))),
        "{refused:?}"
    );
    assert!(store.load_order(&ghost.order_id).await.unwrap().is_none());
    drop(ghost_events);
}

/// Many creates racing with one token: exactly one is stored, every other is told which.
pub async fn one_token_one_winner(store: Arc<dyn OrderRecords>, racers: usize, form: TokenForm) {
    let m = merchant("ot");
    let t = token_of(store.as_ref(), form, &m, 60).await;
    let tasks: Vec<_> = (0..racers)
        .map(|i| {
            let (store, t, m) = (store.clone(), t.clone(), m.clone());
            tokio::spawn(async move {
                let (o, e) = new_order(&m, &format!("N{i}"));
                let id = o.order_id.clone();
                let outcome = store
                    .create_order(t, o, e, vec![], OffsetDateTime::now_utc())
                    .await
                    .unwrap();
                (id, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut named = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (id, CreateOutcome::Created) => winners.push(id),
            (_, CreateOutcome::TokenUsed(Some(by))) => named.push(by),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins the token");
    assert!(
        named.iter().all(|by| *by == winners[0]),
        "losers name the winner"
    );
    assert!(store.load_order(&winners[0]).await.unwrap().is_some());
}

/// Many creates racing for one merchant number, each with its own token: exactly one is
/// stored, every other is told which, and the losers' tokens stay unused.
pub async fn one_number_one_winner(store: Arc<dyn OrderRecords>, racers: usize) {
    let m = merchant("on");
    let mut tokens = Vec::new();
    for _ in 0..racers {
        tokens.push(token(store.as_ref(), &m, 60).await);
    }
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let (store, m) = (store.clone(), m.clone());
            tokio::spawn(async move {
                let (o, e) = new_order(&m, "SAME");
                let id = o.order_id.clone();
                let outcome = store
                    .create_order(t.clone(), o, e, vec![], OffsetDateTime::now_utc())
                    .await
                    .unwrap();
                (id, t, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (id, _, CreateOutcome::Created) => winners.push(id),
            (_, t, CreateOutcome::Duplicate(of)) => losers.push((t, of)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins the number");
    assert!(losers.iter().all(|(_, of)| *of == winners[0]));
    for (i, (t, _)) in losers.into_iter().enumerate() {
        let (o, e) = new_order(&m, &format!("OTHER{i}"));
        let again = store.create_order(t, o, e, vec![], OffsetDateTime::now_utc());
        assert_eq!(
            again.await.unwrap(),
            CreateOutcome::Created,
            "a loser's token is unused"
        );
    }
}

/// Many changes racing from one version (pays on one order from several owners, as after a
/// lost fence): exactly one is stored, with its events alone.
pub async fn one_change_per_version(store: Arc<dyn OrderRecords>, racers: usize) {
    let m = merchant("cv");
    let t = token(store.as_ref(), &m, 60).await;
    let (order, created_events) = new_order(&m, "P");
    let now = OffsetDateTime::now_utc();
    let created = store.create_order(t, order.clone(), created_events.clone(), vec![], now);
    assert_eq!(created.await.unwrap(), CreateOutcome::Created);
    let tasks: Vec<_> = (0..racers)
        .map(|_| {
            let (store, order) = (store.clone(), order.clone());
            tokio::spawn(async move {
                let (next, events) = paying(&order);
                let stored = store
                    .update_order(
                        next.clone(),
                        order.version,
                        order.status,
                        events.clone(),
                        vec![],
                    )
                    .await;
                (next, events, stored)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (next, events, Ok(())) => winners.push((next, events)),
            (_, _, Err(StoreError::VersionConflict(_))) => {}
            (_, _, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one change per version");
    let (next, events) = winners.remove(0);
    assert_eq!(store.load_order(&order.order_id).await.unwrap(), Some(next));
    let mut all = created_events;
    all.extend(events);
    assert_eq!(store.order_events(&order.order_id).await.unwrap(), all);
}

fn timer(kind: TimerKind, due_at: OffsetDateTime, attempt: u32) -> TimerOp {
    TimerOp::Set {
        kind,
        due_at,
        attempt,
    }
}

/// Due timers come out earliest first, a page at a time, leased: they do not come out again
/// until the lease passes. A reschedule only moves a timer still carrying the fired attempt.
/// Claims take every due timer of the store: run it on a store of its own. `exact_pending`:
/// whether the backend's pending count is exact (see `TimerStore::timer_counts`).
pub async fn timers_claimed_leased_rescheduled<S: OrderRecords + TimerStore>(
    store: &S,
    exact_pending: bool,
) {
    let now = OffsetDateTime::now_utc();
    // Past ScyllaDB's 100 keys per IN: the CQL count spans some 240 minute buckets.
    let horizon = now + TDuration::hours(4);
    let ids: Vec<OrderId> = (0..5).map(|_| OrderId::generate()).collect();
    for (i, id) in ids.iter().enumerate() {
        let due = now - TDuration::seconds(10 - i as i64);
        store
            .write_timers(id, vec![timer(TimerKind::Poll, due, 0)])
            .await
            .unwrap();
    }
    for hours in [1, 3] {
        store
            .write_timers(
                &OrderId::generate(),
                vec![timer(TimerKind::Expire, now + TDuration::hours(hours), 0)],
            )
            .await
            .unwrap();
    }
    assert_eq!(store.timer_counts(now, horizon).await.unwrap(), (7, 5));
    let lease = now + TDuration::seconds(30);
    let page = store.claim_due_timers(now, lease, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|t| t.order_id.clone()).collect::<Vec<_>>(),
        ids[..3].to_vec(),
        "earliest first, one page"
    );
    let rest = store.claim_due_timers(now, lease, 10).await.unwrap();
    assert_eq!(rest.len(), 2, "leased timers do not come out again");
    assert!(
        store
            .claim_due_timers(now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after_lease = store
        .claim_due_timers(
            lease + TDuration::seconds(1),
            lease + TDuration::minutes(1),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        after_lease.len(),
        5,
        "a lost handling fires again after the lease"
    );
    let (pending, overdue) = store.timer_counts(now, horizon).await.unwrap();
    assert_eq!(overdue, 0, "leased timers are not overdue");
    assert!(pending == 7 || (!exact_pending && pending > 7), "{pending}");

    // Reschedule compares the attempt: a stale one is ignored, the current one moves it.
    let next = timer(TimerKind::Poll, now - TDuration::seconds(1), 1);
    store
        .reschedule_timer(&ids[0], TimerKind::Poll, 7, Some(next.clone()))
        .await
        .unwrap();
    store
        .reschedule_timer(&ids[1], TimerKind::Poll, 0, Some(next))
        .await
        .unwrap();
    let due = store
        .claim_due_timers(now, now + TDuration::minutes(5), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].order_id.clone(), due[0].attempt),
        (ids[1].clone(), 1)
    );
    store
        .reschedule_timer(&ids[1], TimerKind::Poll, 1, None)
        .await
        .unwrap();
    // A removed timer does not fire again, its lease passed or not.
    let much_later = now + TDuration::minutes(10);
    let fired = store
        .claim_due_timers(much_later, much_later + TDuration::minutes(1), 10)
        .await
        .unwrap();
    let mut fired: Vec<OrderId> = fired.into_iter().map(|t| t.order_id).collect();
    fired.sort();
    let mut expected = vec![
        ids[0].clone(),
        ids[2].clone(),
        ids[3].clone(),
        ids[4].clone(),
    ];
    expected.sort();
    assert_eq!(fired, expected);
    let (pending, _) = store.timer_counts(now, horizon).await.unwrap();
    assert!(pending == 6 || (!exact_pending && pending > 6), "{pending}");
}

/// The sweep's scan: orders with open work and no timer, a bounded slice at a time, until the
/// scan names no next slice.
pub async fn orders_without_timers_in_slices<S: OrderRecords + TimerStore>(store: &S) {
    let m = merchant("sw");
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = token(store, &m, 60).await;
        let (o, e) = new_order(&m, &format!("S{i}"));
        // Orders 0 and 3 are created without their expiry timer (as before timers existed).
        let timers = if i == 0 || i == 3 {
            vec![]
        } else {
            crate::domain::timer::on_create(&o)
        };
        let created = store.create_order(t, o.clone(), e, timers, OffsetDateTime::now_utc());
        assert_eq!(created.await.unwrap(), CreateOutcome::Created);
        ids.push(o.order_id);
    }
    let (mut found, mut after, mut slices) = (Vec::new(), None, 0);
    loop {
        let (some, next) = store.orders_without_timers(after, 3).await.unwrap();
        found.extend(some);
        slices += 1;
        assert!(slices < 10_000, "the scan ends");
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(
        found.contains(&ids[0]) && found.contains(&ids[3]),
        "{found:?}"
    );
    for with_timer in [&ids[1], &ids[2], &ids[4]] {
        assert!(!found.contains(with_timer), "{with_timer} has its timer");
    }
    assert!(slices >= 2, "a full slice names where to go on");
}

/// Reads partition `p` after `from` until `done` holds for what was read (the log may show a
/// change a moment after it is acknowledged, while other changes are logged), up to 10 s.
pub async fn read_log<S: EventLog + ?Sized>(
    store: &S,
    p: u32,
    from: u64,
    done: impl Fn(&[StoredEvent]) -> bool,
) -> Vec<StoredEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut read: Vec<StoredEvent> = Vec::new();
    let mut after = from;
    loop {
        let page = store.events_after(p, after, 100).await.unwrap();
        if let Some(last) = page.last() {
            after = last.seq;
        }
        let empty = page.is_empty();
        read.extend(page);
        if done(&read) {
            return read;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log shows the change in time"
        );
        if empty {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// An order's events are in one partition of the log, in version order, at increasing
/// positions; a cursor starts at the end, never moves back, and a dropped one is gone.
pub async fn log_partitions_and_cursors<S: OrderRecords + EventLog>(store: &S) {
    let partitions = store.log_partitions();
    assert!(partitions >= 1);
    let name = format!(
        "conf-{}",
        OrderId::generate()
            .as_str()
            .to_lowercase()
            .replace('_', "-")
    );
    let start = store.register_cursor(&name).await.unwrap();
    assert_eq!(start.len(), partitions as usize, "a cursor per partition");
    let m = merchant("lg");
    let t = token(store, &m, 60).await;
    let (order, created) = new_order(&m, "L1");
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        store
            .create_order(t, order.clone(), created.clone(), vec![], now)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let (next, paying_events) = paying(&order);
    store
        .update_order(
            next,
            order.version,
            order.status,
            paying_events.clone(),
            vec![],
        )
        .await
        .unwrap();
    let mut expected: Vec<EventId> = created.iter().map(|e| e.event_id.clone()).collect();
    expected.extend(paying_events.iter().map(|e| e.event_id.clone()));

    let mine = |read: &[StoredEvent]| -> Vec<StoredEvent> {
        read.iter()
            .filter(|e| e.event.order_id == order.order_id.as_str())
            .cloned()
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let p = loop {
        let mut holders = Vec::new();
        for q in 0..partitions {
            let read = store
                .events_after(q, start[q as usize], 10_000)
                .await
                .unwrap();
            if !mine(&read).is_empty() {
                holders.push(q);
            }
        }
        assert!(
            holders.len() <= 1,
            "one partition holds the order's events: {holders:?}"
        );
        if let Some(&q) = holders.first() {
            break q;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the order's events are logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let read = read_log(store, p, start[p as usize], |r| {
        mine(r).len() >= expected.len()
    })
    .await;
    let ours = mine(&read);
    assert_eq!(
        ours.iter()
            .map(|e| e.event.event_id.clone())
            .collect::<Vec<_>>(),
        expected,
        "in version order, each once"
    );
    assert!(
        read.windows(2).all(|w| w[0].seq < w[1].seq),
        "positions increase"
    );
    assert!(
        read.iter()
            .all(|e| e.partition == p && e.position().partition == p)
    );

    // The cursor: set, read back, never moved back by a lower write.
    let last = ours.last().unwrap().seq;
    store.set_cursor(&name, p, last).await.unwrap();
    assert_eq!(store.cursor(&name, p).await.unwrap(), last);
    store.set_cursor(&name, p, last - 1).await.unwrap();
    assert_eq!(
        store.cursor(&name, p).await.unwrap(),
        last,
        "never moves back"
    );
    assert_eq!(
        store.register_cursor(&name).await.unwrap()[p as usize],
        last,
        "registering again keeps the cursor"
    );
    let (cursors, heads) = store.cursors().await.unwrap();
    assert_eq!(heads.len(), partitions as usize);
    let listed: Vec<Position> = cursors
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(listed.len(), partitions as usize, "{listed:?}");
    assert!(listed.contains(&Position {
        partition: p,
        seq: last
    }));
    assert!(heads[p as usize] >= last);

    store.drop_cursor(&name).await.unwrap();
    let (cursors, _) = store.cursors().await.unwrap();
    assert!(cursors.iter().all(|(n, _)| *n != name), "dropped");
    let again = store.register_cursor(&name).await.unwrap();
    assert!(
        again[p as usize] >= last,
        "registered again at the end, not the start"
    );
    store.drop_cursor(&name).await.unwrap();
}

fn reply(merchant: &str, request: &str, hash: &str, status: u16) -> CommandReply {
    // Stored with millisecond precision.
    let at = OffsetDateTime::from_unix_timestamp_nanos(
        OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000 * 1_000_000,
    )
    .unwrap();
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

/// A command's create stores its order and its reply in one write; a copy of the command is
/// answered, stores nothing; a refused create stores no reply; the first reply stored under a
/// key wins; a command's change stores the change and its reply together or neither.
pub async fn command_replies<S: OrderRecords + CommandStore>(store: &S) {
    let m = merchant("cmd");
    let (a, ea) = new_order(&m, "A");
    let mut r1 = reply(&m, "r-1", "h1", 201);
    r1.order_id = Some(a.order_id.clone());
    let created = store.create_order_for_command(r1.clone(), a.clone(), ea.clone(), vec![]);
    assert_eq!(created.await.unwrap(), CreateOutcome::Created);
    assert_eq!(
        store.load_order(&a.order_id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.order_events(&a.order_id).await.unwrap(), ea);
    let stored = store
        .command_reply(&a.merchant_id, &r1.request_id)
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), Some(&r1), "the reply, byte for byte");

    // The same key again (a copy raced the first): nothing stored.
    let (b, eb) = new_order(&m, "B");
    let again = store.create_order_for_command(reply(&m, "r-1", "h1", 201), b.clone(), eb, vec![]);
    assert_eq!(again.await.unwrap(), CreateOutcome::Answered);
    assert!(store.load_order(&b.order_id).await.unwrap().is_none());

    // A new key with a taken number: refused, and no reply stored with it.
    let (c, ec) = new_order(&m, "A");
    let refused = store.create_order_for_command(reply(&m, "r-2", "h2", 201), c, ec, vec![]);
    assert_eq!(
        refused.await.unwrap(),
        CreateOutcome::Duplicate(a.order_id.clone())
    );
    let r2 = RequestId::parse("r-2").unwrap();
    assert_eq!(
        store.command_reply(&a.merchant_id, &r2).await.unwrap(),
        None
    );
    // The refused create's key is free: a reply can be stored under it.
    let answer = reply(&m, "r-2", "h2", 409);
    assert_eq!(
        store.store_command_reply(answer.clone()).await.unwrap(),
        answer
    );
    // Keys are per merchant.
    let other = MerchantId::parse(&merchant("cmd")).unwrap();
    assert_eq!(
        store.command_reply(&other, &r1.request_id).await.unwrap(),
        None
    );

    // The first reply stored under a key wins.
    let first = reply(&m, "r-3", "hx", 409);
    assert_eq!(
        store.store_command_reply(first.clone()).await.unwrap(),
        first
    );
    let answered = store
        .store_command_reply(reply(&m, "r-3", "hy", 201))
        .await
        .unwrap();
    assert_eq!(
        (answered.command_hash.as_str(), answered.status),
        ("hx", 409)
    );

    // A command's change: with a stale version neither the change nor the reply is stored.
    let (paying_order, events) = paying(&a);
    let mut pay_reply = reply(&m, "r-pay", "hp", 202);
    pay_reply.order_id = Some(a.order_id.clone());
    let stale = store
        .update_order_for_command(
            pay_reply.clone(),
            paying_order.clone(),
            a.version + 7,
            a.status,
            events.clone(),
            vec![],
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict(_))),
        "{stale:?}"
    );
    assert_eq!(
        store
            .command_reply(&pay_reply.merchant_id, &pay_reply.request_id)
            .await
            .unwrap(),
        None,
        "no reply without its effect"
    );
    assert_eq!(
        store.load_order(&a.order_id).await.unwrap(),
        Some(a.clone())
    );
    // The right version: both.
    store
        .update_order_for_command(
            pay_reply.clone(),
            paying_order.clone(),
            a.version,
            a.status,
            events.clone(),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        store.load_order(&a.order_id).await.unwrap(),
        Some(paying_order.clone())
    );
    let stored = store
        .command_reply(&pay_reply.merchant_id, &pay_reply.request_id)
        .await
        .unwrap();
    assert_eq!(
        stored.as_ref(),
        Some(&pay_reply),
        "the reply, byte for byte"
    );
    // Later puts under the key answer the first.
    let later = store
        .store_command_reply(reply(&m, "r-pay", "hp", 409))
        .await
        .unwrap();
    assert_eq!(Some(later), stored);
    // A change under a key already answered: the change is stored, the first reply stays.
    let t = token(store, &m, 60).await;
    let (d, ed) = new_order(&m, "D");
    let created = store.create_order(t, d.clone(), ed, vec![], OffsetDateTime::now_utc());
    assert_eq!(created.await.unwrap(), CreateOutcome::Created);
    let mut closed = d.clone();
    let mut close_events = Vec::new();
    for ch in d.apply(&Command::Close, OffsetDateTime::now_utc()).unwrap() {
        closed.on(&ch);
        close_events.extend(Event::for_change(&closed, &ch));
    }
    assert!(!close_events.is_empty());
    let mut late_reply = reply(&m, "r-3", "hz", 200);
    late_reply.order_id = Some(d.order_id.clone());
    store
        .update_order_for_command(
            late_reply,
            closed.clone(),
            d.version,
            d.status,
            close_events,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(store.load_order(&d.order_id).await.unwrap(), Some(closed));
    let kept = store
        .command_reply(&first.merchant_id, &first.request_id)
        .await
        .unwrap();
    assert_eq!(kept, Some(first), "the first reply stays");
}

/// Orders per status follow creates and changes (on a store no other case writes to while
/// this one runs: counts are global). The CQL backend counts from the log, after the fact: the
/// case waits for the counts, bounded.
pub async fn status_counts_follow_changes(store: &dyn super::OrderStore) {
    let count = |counts: &[(OrderStatus, i64)], s: OrderStatus| {
        counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n)
    };
    let before = store.status_counts().await.unwrap();
    let m = merchant("counts");
    let mut orders = Vec::new();
    for no in ["C1", "C2", "C3"] {
        let t = token(store, &m, 60).await;
        let (order, events) = new_order(&m, no);
        let now = OffsetDateTime::now_utc();
        let created = store.create_order(t, order.clone(), events, vec![], now);
        assert_eq!(created.await.unwrap(), CreateOutcome::Created);
        orders.push(order);
    }
    let (next, events) = paying(&orders[0]);
    store
        .update_order(next, orders[0].version, orders[0].status, events, vec![])
        .await
        .unwrap();
    let want = |s: OrderStatus, d: i64| count(&before, s) + d;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = store.status_counts().await.unwrap();
        let seen = (
            count(&now, OrderStatus::Created),
            count(&now, OrderStatus::Paying),
        );
        if seen == (want(OrderStatus::Created, 2), want(OrderStatus::Paying, 1)) {
            for s in [
                OrderStatus::Paid,
                OrderStatus::Closed,
                OrderStatus::Refunded,
            ] {
                assert_eq!(count(&now, s), count(&before, s), "{s:?} untouched");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counts {now:?}, before {before:?}: want 2 more CREATED and 1 more PAYING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod sqlite {
    use crate::config::SqliteSettings;
    use crate::metrics::Metrics;
    use crate::storage::OrderRecords;
    use crate::storage::sqlite::SqliteStore;
    use std::sync::Arc;

    fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let settings = SqliteSettings {
            path: dir.path().join("c.db").to_string_lossy().into_owned(),
            ..SqliteSettings::default()
        };
        Arc::new(SqliteStore::open(&settings, Arc::new(Metrics::new())).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        super::tokens_and_numbers(store.as_ref(), super::TokenForm::Stored).await;
        super::tokens_and_numbers(store.as_ref(), super::TokenForm::Signed).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versioned_changes() {
        let dir = tempfile::tempdir().unwrap();
        super::versioned_changes(open(&dir).as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timers_claimed_leased_rescheduled() {
        let dir = tempfile::tempdir().unwrap();
        super::timers_claimed_leased_rescheduled(open(&dir).as_ref(), true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_without_timers_in_slices() {
        let dir = tempfile::tempdir().unwrap();
        super::orders_without_timers_in_slices(open(&dir).as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_partitions_and_cursors() {
        let dir = tempfile::tempdir().unwrap();
        super::log_partitions_and_cursors(open(&dir).as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_counts_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        super::status_counts_follow_changes(open(&dir).as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn command_replies() {
        let dir = tempfile::tempdir().unwrap();
        super::command_replies(open(&dir).as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_creates_and_changes_have_one_winner_each() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn OrderRecords> = open(&dir);
        super::one_token_one_winner(store.clone(), 32, super::TokenForm::Stored).await;
        super::one_token_one_winner(store.clone(), 32, super::TokenForm::Signed).await;
        super::one_number_one_winner(store.clone(), 32).await;
        super::one_change_per_version(store, 32).await;
    }
}
