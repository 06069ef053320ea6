//! Throughput of the tailer on one core: a large mainlog read from disk
//! (page cache) by a follower, pulled in batches and acknowledged, and the
//! same file read by the importer. Prints lines/s and MB/s.
//!
//! `cargo bench -p exim-pilot-ingest --bench follow` (set `LINES` to change
//! the size; default 1,000,000 lines of about 200 bytes).

use std::io::Write;
use std::time::{Duration, Instant};

use exim_pilot_ingest::{FollowConfig, Follower, Importer};
use exim_pilot_schema::record::LogFile;

fn main() {
    let lines: usize = std::env::var("LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = dir.path().join("mainlog");
    let bytes = write_log(&log, lines);
    println!("{lines} lines, {:.1} MB", bytes as f64 / 1e6);

    let config = FollowConfig {
        poll_interval: Duration::from_millis(1),
        group_quiet: Duration::ZERO,
        ..FollowConfig::default()
    };
    let checkpoint = dir.path().join("cp.json");
    let mut follower = Follower::new(
        &log,
        LogFile::Main,
        "mx1.example.com",
        Some(checkpoint),
        config,
    )
    .expect("follower");
    let started = Instant::now();
    let mut records = 0;
    while records < lines {
        let batch = follower
            .next_batch(5_000, Duration::from_secs(5))
            .expect("read")
            .expect("records before the timeout");
        records += batch.len();
        follower.ack(&batch.ack()).expect("ack");
    }
    report("follower", lines, bytes, started.elapsed());

    let started = Instant::now();
    let mut importer = Importer::new(&[log], "mx1.example.com").expect("importer");
    let mut imported = 0;
    while let Some(batch) = importer.next_batch(5_000).expect("import") {
        imported += batch.len();
    }
    assert_eq!(imported, lines);
    report("importer", lines, bytes, started.elapsed());
}

fn report(what: &str, lines: usize, bytes: u64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{what}: {:.2} s, {:.0} lines/s, {:.0} MB/s",
        seconds,
        lines as f64 / seconds,
        bytes as f64 / 1e6 / seconds
    );
}

/// Writes `lines` mainlog lines with invented values; returns the size.
fn write_log(path: &std::path::Path, lines: usize) -> u64 {
    let file = std::fs::File::create(path).expect("log file");
    let mut out = std::io::BufWriter::new(file);
    for n in 0..lines {
        writeln!(
            out,
            "2026-12-04 15:{:02}:{:02}.{:03} [{}] 1xZVcX-{:06}-{:02} => user{}@example.com \
             R=dnslookup T=remote_smtp H=mx{}.example.net [192.0.2.{}] X=TLS1.3 CV=yes \
             C=\"250 2.0.0 OK\" DT=0.{:03}s",
            (n / 60000) % 60,
            (n / 1000) % 60,
            n % 1000,
            20000 + n % 9000,
            n % 1_000_000,
            n % 100,
            n % 5000,
            n % 17,
            n % 250,
            n % 1000
        )
        .expect("write");
    }
    out.flush().expect("flush");
    std::fs::metadata(path).expect("size").len()
}
