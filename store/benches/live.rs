//! Live feeds on a small and a large store: what a poll costs as the
//! store grows.
//!
//! ```text
//! cargo bench -p exim-pilot-store --features testing --bench live -- \
//!     [RECORDS] [sqlite|clickhouse|both]
//! ```
//!
//! For each backend (default both; ClickHouse is the test kit's server),
//! two stores: one of 10,000 raw records and one of RECORDS (default
//! 1,000,000). On each, a feed is opened and then, 20 times, a batch of
//! 1,000 new records is committed and the feed polled for it (the poll
//! must return all 1,000), and the feed polled once more with nothing
//! new; the rounds start 12 s after the store is filled, past the
//! ClickHouse feed's look-back window. It prints the median of each, and
//! the ratios that matter: a poll on the large store against one on the
//! small store (1.0 when a poll costs what it returns, not the size of
//! the store), and a poll against the commit it follows, in the same run.

use std::time::{Duration, Instant};

use exim_pilot_store::conformance::fixtures::{at, record};
use exim_pilot_store::{Batch, ClickHouseStore, SqliteStore, Store};
use exim_pilot_testkit::Server;

const HOST: &str = "mx1.example.org";
const SMALL: u64 = 10_000;
const FILL_BATCH: u64 = 10_000;
const ROUND: u64 = 1_000;
const ROUNDS: usize = 20;
const SETTLE: Duration = Duration::from_secs(12);

/// Records at offsets `from..to` of one log.
fn records(from: u64, to: u64) -> Batch {
    Batch {
        records: (from..to)
            .map(|o| {
                let line = format!("=> user{o}@example.net R=dnslookup T=remote_smtp");
                record(HOST, o, at((o / 100) as i64), None, &line)
            })
            .collect(),
        ..Batch::default()
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Medians of committing a round, polling it, and polling nothing.
struct Figures {
    commit: Duration,
    poll: Duration,
    idle: Duration,
}

async fn measure(store: &dyn Store, size: u64) -> Figures {
    let mut offset = 0;
    while offset < size {
        let end = (offset + FILL_BATCH).min(size);
        store
            .commit_batch(records(offset, end))
            .await
            .expect("fill");
        offset = end;
    }
    // Past the ClickHouse feed's look-back window, so that the rounds
    // measure the size of the store, not the fill's last seconds.
    tokio::time::sleep(SETTLE).await;
    let mut feed = store.live_feed().await.expect("feed");
    let (mut commits, mut polls, mut idles) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        store
            .commit_batch(records(offset, offset + ROUND))
            .await
            .expect("commit");
        commits.push(start.elapsed());
        offset += ROUND;

        let start = Instant::now();
        let page = feed.next(ROUND as usize).await.expect("poll");
        polls.push(start.elapsed());
        assert_eq!(
            page.records.len() as u64,
            ROUND,
            "the poll returns the round"
        );

        let start = Instant::now();
        let page = feed.next(ROUND as usize).await.expect("poll");
        idles.push(start.elapsed());
        assert!(page.records.is_empty());
    }
    Figures {
        commit: median(commits),
        poll: median(polls),
        idle: median(idles),
    }
}

fn report(backend: &str, size: u64, small: &Figures, large: &Figures) {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for (n, f) in [(SMALL, small), (size, large)] {
        println!(
            "{backend} {n} records: commit {ROUND} {:?}, poll them {:?} ({:.2}x the commit), \
             poll nothing {:?}",
            f.commit,
            f.poll,
            ratio(f.poll, f.commit),
            f.idle
        );
    }
    println!(
        "{backend} large/small: poll {:.2}x, idle poll {:.2}x, commit {:.2}x",
        ratio(large.poll, small.poll),
        ratio(large.idle, small.idle),
        ratio(large.commit, small.commit)
    );
}

async fn sqlite(size: u64) {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let small = measure(&SqliteStore::open_dir(a.path()).expect("store"), SMALL).await;
    let large = measure(&SqliteStore::open_dir(b.path()).expect("store"), size).await;
    report("sqlite", size, &small, &large);
}

async fn clickhouse(size: u64) {
    let server = Server::clickhouse();
    let url = server.address().to_string();
    let open = |db: &'static str| {
        let url = url.clone();
        async move { ClickHouseStore::connect(&url, db).await.expect("store") }
    };
    let small = measure(&open("live_small").await, SMALL).await;
    let large = measure(&open("live_large").await, size).await;
    report("clickhouse", size, &small, &large);
}

fn main() {
    // `cargo bench` passes `--bench`; the figures are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let size: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let which = args.get(1).map(String::as_str).unwrap_or("both");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if which == "sqlite" || which == "both" {
            sqlite(size).await;
        }
        if which == "clickhouse" || which == "both" {
            clickhouse(size).await;
        }
    });
}
