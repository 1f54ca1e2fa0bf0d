//! Ledger postings per second on the embedded store: batches of ledger transactions (the
//! shapes the consumer books for a paid and partly refunded order: hold, post, refund, 8
//! postings per order) written with `LedgerStore::write_batch`, each batch with its cursor in
//! one writer transaction, as the ledger consumer writes them. Criterion's throughput is in
//! postings. Transactions are built outside the timed part; the allocator is the service's.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use paycore::config::{SqliteSettings, Synchronous};
use paycore::domain::OrderId;
use paycore::domain::ledger::{Account, LedgerTxn, Posting, TxnKind, TxnParts};
use paycore::metrics::Metrics;
use paycore::storage::sqlite::SqliteStore;
use paycore::storage::{LedgerStore, OrderStore};
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
                                .write_batch(txns, "ledger", cursor)
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

criterion_group!(benches, bench);
criterion_main!(benches);
