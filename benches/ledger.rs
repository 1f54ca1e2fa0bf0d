//! Ledger postings per second on the embedded store: batches of ledger transactions (the
//! shapes the consumer books for a paid and partly refunded order: hold, post, refund, 8
//! postings per order) written with `LedgerStore::write_batch`, each batch with its cursor in
//! one writer transaction, as the ledger consumer writes them. Criterion's throughput is in
//! postings. Transactions are built outside the timed part; the allocator is the service's.
//!
//! `ledger_consumer` measures the whole consumer instead: an outbox holding the events of paid
//! orders (created, paying, paid: two transactions and six postings per order) is booked from
//! cursor 0 by the real ledger consumer (read the events, load the orders' books, book, write
//! each batch with its cursor); throughput in events.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use paycore::actors::ledger::{self as consumer, LedgerDeps};
use paycore::config::{SqliteSettings, Synchronous};
use paycore::domain::ledger::{Account, LedgerTxn, Posting, TxnKind, TxnParts};
use paycore::domain::{
    Command, Event, MerchantId, NewOrder, Order, OrderId, PayMethod, PaySerialNo, ReportedPayment,
    SubmitToken,
};
use paycore::metrics::Metrics;
use paycore::storage::sqlite::SqliteStore;
use paycore::storage::{EventLog, LedgerStore, OrderRecords, OrderStore, TokenRecord};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Merchants the orders are spread over (each batch touches their accounts' snapshots).
const MERCHANTS: u64 = 16;
/// Ledger transactions per booked order (hold, post, refund).
const TXNS_PER_ORDER: usize = 3;

/// As `paycore serve` runs (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn txn(
    id: String,
    order: &str,
    merchant: &str,
    kind: TxnKind,
    resolves: Option<String>,
    legs: &[(&str, i64)],
) -> LedgerTxn {
    LedgerTxn::new(TxnParts {
        event_id: format!("evt_{id}"),
        id,
        order_id: order.to_string(),
        merchant_id: merchant.to_string(),
        kind,
        resolves,
        reference: None,
        postings: legs
            .iter()
            .map(|(a, n)| Posting::new(Account::parse(a).expect("chart account"), "CNY", *n))
            .collect(),
    })
    .expect("balanced")
}

/// The transactions of `orders` paid-and-refunded orders.
fn batch(orders: usize) -> Vec<LedgerTxn> {
    let mut out = Vec::with_capacity(orders * TXNS_PER_ORDER);
    for _ in 0..orders {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let order = OrderId::generate().to_string();
        let m = format!("m{}", n % MERCHANTS);
        let (pending, payable) = (
            format!("merchant_pending:{m}"),
            format!("merchant_payable:{m}"),
        );
        let hold = format!("lt_{n:020}_h");
        out.push(txn(
            hold.clone(),
            &order,
            &m,
            TxnKind::Hold,
            None,
            &[("channel_pending:sim", -500), (&pending, 500)],
        ));
        out.push(txn(
            format!("lt_{n:020}_p"),
            &order,
            &m,
            TxnKind::Post,
            Some(hold),
            &[
                ("channel_pending:sim", 500),
                (&pending, -500),
                ("channel_clearing:sim", -500),
                (&payable, 500),
            ],
        ));
        out.push(txn(
            format!("lt_{n:020}_r"),
            &order,
            &m,
            TxnKind::Refund,
            None,
            &[(&payable, -100), ("channel_clearing:sim", 100)],
        ));
    }
    out
}

fn postings(txns: &[LedgerTxn]) -> u64 {
    txns.iter().map(|t| t.postings().len() as u64).sum()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("ledger");
    g.measurement_time(Duration::from_secs(5));
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = SqliteSettings {
            path: dir.path().join("bench.db").to_string_lossy().into_owned(),
            synchronous: sync,
            ..SqliteSettings::default()
        };
        let store = rt.block_on(async {
            Arc::new(SqliteStore::open(&settings, Arc::new(Metrics::new())).expect("store opens"))
        });
        let mut cursor = 0u64;
        for orders in [10usize, 100, 333] {
            let per_batch = postings(&batch(1));
            g.throughput(Throughput::Elements(per_batch * orders as u64));
            let id = BenchmarkId::new(
                format!("postings_{}", sync.pragma().to_lowercase()),
                orders * TXNS_PER_ORDER,
            );
            g.bench_with_input(id, &orders, |b, &orders| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let txns = batch(orders);
                            cursor += 1;
                            let started = Instant::now();
                            let out = store
                                .write_batch(txns, "ledger", 0, cursor)
                                .await
                                .expect("batch stored");
                            total += started.elapsed();
                            assert_eq!(out.written, orders * TXNS_PER_ORDER);
                        }
                        total
                    })
                })
            });
        }
        rt.block_on(store.close());
    }
    g.finish();
}

/// Stores `n` orders of 500 paid through PAYING, with their events, as order actors would.
async fn paid_orders(store: &Arc<SqliteStore>, n: usize) {
    let demo = MerchantId::parse("demo").expect("valid id");
    let writes = (0..n).map(|i| {
        let (store, demo) = (store.clone(), demo.clone());
        tokio::spawn(async move {
            let now = time::OffsetDateTime::now_utc();
            let token = SubmitToken::generate();
            store
                .issue_token(TokenRecord {
                    token: token.clone(),
                    merchant_id: demo.clone(),
                    expires_at: now + time::Duration::minutes(30),
                })
                .await
                .expect("token stored");
            let new = NewOrder {
                merchant_id: demo,
                merchant_order_no: paycore::domain::MerchantOrderNo::parse(&format!("L-{i}"))
                    .expect("valid number"),
                amount: paycore::domain::Amount::new(500).expect("valid amount"),
                currency: paycore::domain::Currency::Cny,
                business_type: paycore::domain::BusinessType::BillBuy,
                channel: "sim".into(),
                subject: None,
                notify_url: None,
                expire_seconds: 900,
                fulfillment_required: false,
            };
            let (mut o, created) = Order::create(OrderId::generate(), new, now);
            let events = Event::for_change(&o, &created).into_iter().collect();
            store
                .create_order(token, o.clone(), events, vec![], now)
                .await
                .expect("created");
            for cmd in [
                Command::MarkPaying {
                    pay_serial_no: PaySerialNo::generate(),
                    pay_method: PayMethod::Native,
                    channel_payload: serde_json::json!({}),
                    channel_trade_no: Some(format!("T-{i}")),
                },
                Command::MarkPaid(ReportedPayment {
                    channel_trade_no: format!("T-{i}"),
                    amount: 500,
                    currency: "CNY".into(),
                    paid_at: now,
                }),
            ] {
                let prev = o.clone();
                let mut events = Vec::new();
                for c in o.apply(&cmd, now).expect("applies") {
                    o.on(&c);
                    events.extend(Event::for_change(&o, &c));
                }
                store
                    .update_order(o.clone(), prev.version, prev.status, events, vec![])
                    .await
                    .expect("updated");
            }
        })
    });
    for w in futures::future::join_all(writes).await {
        w.expect("task");
    }
}

fn bench_consumer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("ledger_consumer");
    // Each iteration fills a fresh outbox first (untimed, seconds): few of them.
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    const ORDERS: usize = 2_000;
    g.throughput(Throughput::Elements(ORDERS as u64 * 3));
    g.bench_function(BenchmarkId::new("events_full", ORDERS * 3), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let settings = SqliteSettings {
                        path: dir.path().join("bench.db").to_string_lossy().into_owned(),
                        ..SqliteSettings::default()
                    };
                    let open = || {
                        Arc::new(
                            SqliteStore::open(&settings, Arc::new(Metrics::new())).expect("opens"),
                        )
                    };
                    let store = open();
                    paid_orders(&store, ORDERS).await;
                    // Closed and opened again: the WAL the orders left is checkpointed, so the
                    // consumer's first commit does not pay for it.
                    store.close().await;
                    let store = open();
                    let deps = LedgerDeps {
                        events: store.clone(),
                        store: store.clone(),
                        batch: paycore::config::LedgerSettings::default().batch,
                        metrics: Arc::new(Metrics::new()),
                        commits: store.watch_events_committed(),
                        linger: std::time::Duration::ZERO,
                    };
                    // Told to stop from the start: it books everything committed, then ends.
                    let (_stop, stopped) = tokio::sync::watch::channel(true);
                    let started = Instant::now();
                    for task in consumer::spawn(
                        deps,
                        paycore::streams::consumer::Health::default(),
                        stopped,
                    ) {
                        task.await.expect("consumer");
                    }
                    total += started.elapsed();
                    assert_eq!(
                        store.cursor(consumer::CURSOR, 0).await.expect("cursor"),
                        ORDERS as u64 * 3
                    );
                    store.close().await;
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_consumer);
criterion_main!(benches);
