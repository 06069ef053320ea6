//! Embedded store benchmark of queues: saving snapshots of a large queue
//! and reading it back.
//!
//! ```text
//! cargo bench -p exim-pilot-store --features testing --bench queue -- [MESSAGES] [SNAPSHOTS]
//! ```
//!
//! Saves SNAPSHOTS (default 20) snapshots of one mail server's queue of
//! MESSAGES (default 10,000) messages with two recipients each, a minute
//! apart, each replacing the previous one, a tenth of the messages with a
//! lifecycle; then times, 50 times each, the first page (100) of the
//! whole queue, a page of a recipient search, the health of the queue
//! and its history. It prints the figures.

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;

use exim_pilot_schema::QueuedMessage;
use exim_pilot_store::conformance::fixtures::{base, deferred, queued, snapshot};
use exim_pilot_store::{Batch, PageRequest, QueueFilter, QueueHistoryQuery, SqliteStore, Store};

const HOST: &str = "mx1.example.org";

fn queue(messages: u32, minute: u64) -> Vec<QueuedMessage> {
    (0..messages)
        .map(|n| {
            let first = format!("user{n}@example{}.net", n % 50);
            let second = format!("list{}@example.com", n % 7);
            queued(
                n,
                Some(60 * (minute + u64::from(n % 500))),
                Some(1_000 + u64::from(n % 9_000)),
                &format!("sender{}@example.org", n % 300),
                &[(&first, n % 3 == 0), (&second, false)],
                n % 97 == 0,
            )
        })
        .collect()
}

fn percentiles(mut times: Vec<StdDuration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    format!("p50 {:?}, p99 {:?}", at(0.5), at(0.99))
}

async fn time<F, Fut>(runs: usize, mut f: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    percentiles(times)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let messages: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let snapshots: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open_dir(dir.path()).expect("store");

    let lifecycles = (0..messages)
        .step_by(10)
        .map(|n| deferred(HOST, n, base() - Duration::days(1), "user@example.net"))
        .collect();
    store
        .commit_batch(Batch {
            lifecycles,
            ..Batch::default()
        })
        .await
        .expect("lifecycles");

    let mut saves = Vec::new();
    for minute in 0..snapshots {
        let s = snapshot(
            HOST,
            base() + Duration::minutes(minute as i64),
            queue(messages, minute),
        );
        let start = Instant::now();
        store.save_queue_snapshot(&s).await.expect("save");
        saves.push(start.elapsed());
    }
    println!(
        "save a snapshot of {messages} messages: {}",
        percentiles(saves)
    );

    let page = PageRequest {
        first: 100,
        after: None,
    };
    let all = QueueFilter::default();
    let to = QueueFilter {
        recipient: Some("example7.net".into()),
        ..QueueFilter::default()
    };
    let first = time(50, || async {
        store.queue_messages(&all, &page).await.expect("search");
    })
    .await;
    println!("first page of the whole queue: {first}");
    let search = time(50, || async {
        store.queue_messages(&to, &page).await.expect("search");
    })
    .await;
    println!("first page of a recipient search: {search}");
    let health = time(50, || async {
        store.queue_health(None).await.expect("health");
    })
    .await;
    println!("queue health: {health}");
    let history = time(50, || async {
        let q = QueueHistoryQuery::default();
        store.queue_history(&q).await.expect("history");
    })
    .await;
    println!("queue history: {history}");
}
