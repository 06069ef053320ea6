//! Correlation against the corpus's ground truth.
//!
//! Every scenario under tests/data/corpus has a mainlog written by a real
//! Exim and a `ground_truth.json` saying what happened to every message.
//! The mainlog is parsed and correlated, and every message is compared: its
//! origin, parent, final state, generated bounces, and for every final
//! address its envelope recipient, outcome and number of attempts. All
//! mismatches are listed before the test fails.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use exim_pilot_processor::correlate::{Correlator, CorrelatorConfig};
use exim_pilot_processor::parse::{parse_record_with, ParseOptions, RecordReader};
use exim_pilot_schema::lifecycle::Lifecycle;
use exim_pilot_schema::{LogFile, Zone};

mod support;

use support::ground_truth::{compare, corpus_dir, truth};

const HOST: &str = "mx1.lab.test";

/// Parses and correlates a mainlog in one pass, keeping every lifecycle.
fn correlate(path: &Path) -> Vec<Lifecycle> {
    let opts = ParseOptions {
        syslog_year: Some(2026),
    };
    let mut correlator = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
    let mut reader = RecordReader::new(BufReader::new(File::open(path).unwrap()));
    while let Some(record) = reader.next_record().unwrap() {
        let event = parse_record_with(&opts, LogFile::Main, record.bytes);
        correlator.apply(HOST, &event);
    }
    correlator.into_lifecycles()
}

fn assert_scenario(scenario: &str) {
    let dir = corpus_dir().join(scenario);
    let problems = compare(&truth(scenario), &correlate(&dir.join("mainlog")));
    assert!(
        problems.is_empty(),
        "{scenario}: {} mismatches against the ground truth:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn s01_core_all_matches_the_ground_truth() {
    assert_scenario("s01_core_all");
}

#[test]
fn s02_default_selectors_matches_the_ground_truth() {
    assert_scenario("s02_default_selectors");
}
