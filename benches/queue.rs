//! How `exim -bp` listings are read as queues grow: a generated listing of
//! 10,000 and one of 100,000 messages (both id forms, frozen messages,
//! bounces, delivered recipients), each read whole by `parse_bp`.
//!
//! Run with `cargo bench --bench queue`. After criterion's figures it
//! prints the ratio time(100,000) / time(10,000), each the best of several
//! runs: about 10 means reading takes linear time. It also reads a listing
//! of 1,000,000 messages and prints its ratio to 100,000.
//!
//! The binary's allocator (mimalloc) is used, as in `exim-pilot`. With the
//! system allocator, each read of 100,000 messages also pays for memory
//! handed back to the system after the previous read and taken again,
//! which reads of 10,000 do not: the first ratio then comes out near 20
//! although the work per message is the same, and the second stays near
//! 10.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use exim_pilot_ingest::queue::parse_bp;

#[path = "../src/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Mimalloc = alloc::Mimalloc;

const SMALL: usize = 10_000;
const LARGE: usize = 100_000;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in base 62 on `width` characters.
fn base62(mut n: usize, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[n % 62];
        n /= 62;
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// A listing of `messages` messages as Exim prints it.
fn listing(messages: usize) -> String {
    let ages = ["0m", "88m", " 4h", "72h", " 3d", "120d"];
    let sizes = ["  512", " 2.9K", "  21K", " 1.2M", "  44M"];
    let mut text = String::with_capacity(messages * 120);
    for i in 0..messages {
        let id = if i % 2 == 0 {
            format!("1qAbCK-{}-Xy", base62(i, 6))
        } else {
            format!("1tQw7K-{}-0KzP", base62(i, 11))
        };
        let sender = if i % 7 == 0 {
            String::new()
        } else {
            format!("sender{i}@example.net")
        };
        let frozen = if i % 11 == 0 { " *** frozen ***" } else { "" };
        text.push_str(&format!(
            "{:>3} {} {id} <{sender}>{frozen}\n",
            ages[i % ages.len()],
            sizes[i % sizes.len()]
        ));
        for r in 0..(1 + i % 3) {
            let marker = if r == 0 && i % 3 == 2 { 'D' } else { ' ' };
            text.push_str(&format!("        {marker} rcpt{r}.{i}@example.com\n"));
        }
        text.push('\n');
    }
    text
}

/// The best of `runs` timings of reading `text`.
fn best_time(text: &str, runs: usize) -> Duration {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            black_box(parse_bp(black_box(text)));
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let small = listing(SMALL);
    let large = listing(LARGE);
    assert_eq!(parse_bp(&large).messages.len(), LARGE);

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("parse_bp");
    for (count, text) in [(SMALL, &small), (LARGE, &large)] {
        group.throughput(Throughput::Elements(count as u64));
        group.sample_size(10);
        group.bench_function(format!("{count} messages"), |b| {
            b.iter(|| black_box(parse_bp(black_box(text))))
        });
    }
    group.finish();
    criterion.final_summary();

    let small_time = best_time(&small, 20);
    let large_time = best_time(&large, 5);
    println!(
        "parse_bp: {SMALL} messages in {small_time:?}, {LARGE} in {large_time:?}; \
         ratio {:.1} (10 is linear); {:.0} messages/s, {:.0} MB/s",
        large_time.as_secs_f64() / small_time.as_secs_f64(),
        LARGE as f64 / large_time.as_secs_f64(),
        large.len() as f64 / large_time.as_secs_f64() / 1e6,
    );
    let huge = listing(10 * LARGE);
    let huge_time = best_time(&huge, 3);
    println!(
        "parse_bp: {} messages in {huge_time:?}; ratio to {LARGE}: {:.1}",
        10 * LARGE,
        huge_time.as_secs_f64() / large_time.as_secs_f64(),
    );
}
