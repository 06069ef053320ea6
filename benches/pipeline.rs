//! Per-core throughput of the parser and the correlator, in records per
//! second, on the corpus mainlogs (both log selectors) repeated in memory.
//!
//! Run with `cargo bench --bench pipeline`. Each repetition is labelled
//! with its own mail server name, so the correlator sees fresh messages
//! rather than the same ids again.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use exim_pilot_processor::correlate::{Correlator, CorrelatorConfig};
use exim_pilot_processor::parse::parse_record;
use exim_pilot_schema::{LogFile, Zone};

/// Copies of the corpus per iteration.
const REPEAT: usize = 20;

fn corpus_lines() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let mut lines = Vec::new();
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        let text = std::fs::read(dir.join(scenario).join("mainlog")).expect("corpus mainlog");
        lines.extend(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    lines
}

fn parse(c: &mut Criterion) {
    let lines = corpus_lines();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements((lines.len() * REPEAT) as u64));
    group.bench_function("records", |b| {
        b.iter(|| {
            for _ in 0..REPEAT {
                for line in &lines {
                    black_box(parse_record(LogFile::Main, line));
                }
            }
        })
    });
    group.throughput(Throughput::Bytes((bytes * REPEAT) as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| {
            for _ in 0..REPEAT {
                for line in &lines {
                    black_box(parse_record(LogFile::Main, line));
                }
            }
        })
    });
    group.finish();
}

fn correlate(c: &mut Criterion) {
    let lines = corpus_lines();
    let events: Vec<_> = lines
        .iter()
        .map(|l| parse_record(LogFile::Main, l))
        .collect();
    let hosts: Vec<String> = (0..REPEAT).map(|i| format!("mx{i}.example.net")).collect();
    let mut group = c.benchmark_group("correlate");
    group.throughput(Throughput::Elements((events.len() * REPEAT) as u64));
    group.bench_function("events", |b| {
        b.iter(|| {
            let mut correlator = Correlator::with_config(Zone::Utc, CorrelatorConfig::default());
            for host in &hosts {
                for event in &events {
                    correlator.apply(host, event);
                }
            }
            black_box(correlator.take_changed().len())
        })
    });
    group.bench_function("parse_and_correlate", |b| {
        b.iter(|| {
            let mut correlator = Correlator::with_config(Zone::Utc, CorrelatorConfig::default());
            for host in &hosts {
                for line in &lines {
                    correlator.apply(host, &parse_record(LogFile::Main, line));
                }
            }
            black_box(correlator.take_changed().len())
        })
    });
    group.finish();
}

criterion_group!(benches, parse, correlate);
criterion_main!(benches);
