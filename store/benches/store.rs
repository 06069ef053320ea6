//! Embedded store benchmark: write throughput, report and trace latency on
//! a store holding many messages.
//!
//! ```text
//! cargo bench -p exim-pilot-store --features testing --bench store -- [MESSAGES] [DIR] [RUNS]
//! ```
//!
//! Writes MESSAGES (default 1,000,000) synthetic lifecycles spread over 90
//! days, two mail servers, a few hundred destination domains with a skewed
//! share each, 5,000 senders (a few send most) and a realistic mix of outcomes, with
//! two raw records each, in batches of 1,000 as the standalone pipeline
//! does. A tenth of the messages are written a second time, changed
//! (deferred, then delivered), so the rollups move. Then it times, RUNS
//! (default 50) times each: the 30-day and the 90-day report, the 30-day report of one
//! server, the 30-day cells by destination domain per day, and a message trace (lifecycle and raw records by host and id,
//! 1,000 random messages); and one retention pass. It prints the figures.
//! DIR (default: a temporary directory) keeps the database for a second
//! run of the queries only when it already holds data.

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;

use exim_pilot_schema::report::{Dimension, ReportOptions};
use exim_pilot_store::conformance::fixtures::{base, id};
use exim_pilot_store::conformance::synthetic::{fill, Rng, DAYS, HOSTS};
use exim_pilot_store::{Bucket, CellQuery, Retention, SqliteStore, Store};

fn percentile(times: &mut [StdDuration], p: f64) -> StdDuration {
    times.sort();
    let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
    times[i]
}

async fn time_it<F, Fut>(label: &str, runs: usize, mut f: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        f(i).await;
        times.push(t.elapsed());
    }
    let p50 = percentile(&mut times, 0.50);
    let p99 = percentile(&mut times, 0.99);
    println!("{label:<40} p50 {p50:>10.2?}  p99 {p99:>10.2?}  ({runs} runs)");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let total: u32 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = args
        .get(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let t = Instant::now();
    let store = SqliteStore::open_dir(&dir).expect("open store");
    println!("opened (and migrated) in {:.1?}", t.elapsed());

    let existing = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    if existing.totals.messages == 0 {
        let t = Instant::now();
        let written = fill(&store, total, 1000)
            .await
            .expect("writing the messages");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "wrote {total} messages ({written} lifecycle writes, {} raw records) in {secs:.1} s: \
             {:.0} messages/s",
            total as u64 * 2,
            total as f64 / secs
        );
    }
    let size = std::fs::metadata(dir.join(exim_pilot_store::sqlite::DATABASE_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("database: {:.0} MB", size as f64 / 1e6);

    let end = base();
    let range = |days: i64, host: Option<&str>| ReportOptions {
        since: Some(end - Duration::days(days)),
        until: Some(end),
        host: host.map(str::to_string),
        domain: None,
        top: 50,
    };
    let r30 = store.report(&range(30, None)).await.expect("report");
    println!(
        "30-day report: {} messages, {} domains",
        r30.totals.messages, r30.by_domain.distinct
    );
    time_it("report, 30 days, all servers", runs, |_| {
        let s = &store;
        let o = range(30, None);
        async move {
            s.report(&o).await.expect("report");
        }
    })
    .await;
    time_it("report, 30 days, one server", runs, |_| {
        let s = &store;
        let o = range(30, Some(HOSTS[0]));
        async move {
            s.report(&o).await.expect("report");
        }
    })
    .await;
    time_it("report, 90 days, all servers", runs, |_| {
        let s = &store;
        let o = range(DAYS + 1, None);
        async move {
            s.report(&o).await.expect("report");
        }
    })
    .await;

    time_it("cells by domain per day, 30 days", runs, |_| {
        let s = &store;
        let q = CellQuery {
            since: Some(end - Duration::days(30)),
            until: Some(end),
            dims: vec![Dimension::Domain],
            bucket: Bucket::Day,
            ..CellQuery::default()
        };
        async move {
            s.cells(&q).await.expect("cells");
        }
    })
    .await;

    let mut rng = Rng(42);
    let picks: Vec<u32> = (0..1000).map(|_| rng.below(total as u64) as u32).collect();
    time_it("trace: lifecycle + raw records by id", 1000, |i| {
        let s = &store;
        let n = picks[i];
        async move {
            let host = HOSTS[(n % 2) as usize];
            let lc = s.lifecycle(host, id(n)).await.expect("lookup");
            assert!(lc.is_some(), "message {n} missing");
            s.message_records(host, id(n)).await.expect("records");
        }
    })
    .await;

    let t = Instant::now();
    let now = end + Duration::days(90);
    let gone = store
        .apply_retention(&Retention::default(), now)
        .await
        .expect("retention");
    println!(
        "retention as of 90 days later: {gone:?} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
