//! The correlator on Exim's own test-suite logs (see
//! `support/testsuite.rs` for where they are read from; the test is
//! skipped without them). The logs cover far more features than our corpus
//! but have no ground truth, so what is checked is consistency: for every
//! message of every log, attempts match the attempt history, a completed
//! or removed message has no address still waiting, `in_flight` agrees
//! with the state, lifecycles survive JSON, and a checkpoint taken half
//! way gives what one pass gives.

#[path = "support/records.rs"]
mod logs;

use logs::records;

#[path = "support/testsuite.rs"]
mod testsuite;

use std::path::PathBuf;

use exim_pilot_processor::correlate::{Correlator, CorrelatorConfig, CorrelatorState};
use exim_pilot_processor::parse::{parse_record_with, ParseOptions};
use exim_pilot_schema::lifecycle::{Lifecycle, MessageState};
use exim_pilot_schema::{LogFile, Zone};

/// The mainlogs: the correlator reads only those.
fn logs() -> Option<Vec<PathBuf>> {
    let logs = testsuite::logs(&[LogFile::Main])?;
    Some(logs.into_iter().map(|(path, _)| path).collect())
}

fn feed(c: &mut Correlator, records: &[Vec<u8>]) {
    let opts = ParseOptions {
        syslog_year: Some(1999),
    };
    for r in records {
        c.apply(
            "mx.example.com",
            &parse_record_with(&opts, LogFile::Main, r),
        );
    }
}

fn inconsistencies(lc: &Lifecycle) -> Vec<String> {
    let mut found = Vec::new();
    let waiting_allowed = !matches!(lc.state, MessageState::Completed | MessageState::Removed);
    for r in &lc.recipients {
        if r.attempts as usize != r.history.len() {
            found.push(format!(
                "{}: {} attempts but {} in the history",
                r.address,
                r.attempts,
                r.history.len()
            ));
        }
        if !waiting_allowed && !r.outcome.is_final() {
            found.push(format!(
                "{}: {} in a {} message",
                r.address,
                r.outcome.as_str(),
                lc.state.as_str()
            ));
        }
    }
    let in_flight = matches!(lc.state, MessageState::InFlight | MessageState::Frozen);
    if lc.in_flight != in_flight {
        found.push(format!(
            "in_flight {} in state {}",
            lc.in_flight,
            lc.state.as_str()
        ));
    }
    let json = serde_json::to_string(lc).unwrap();
    if serde_json::from_str::<Lifecycle>(&json).unwrap() != *lc {
        found.push("does not survive JSON".to_string());
    }
    found
}

#[test]
fn testsuite_logs_correlate_consistently() {
    let Some(logs) = logs() else {
        eprintln!("{}", testsuite::skipped());
        return;
    };
    let mut problems = Vec::new();
    let mut messages = 0;
    for path in &logs {
        let all = records(path);
        let mut one = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
        feed(&mut one, &all);
        let one_pass = one.snapshot();
        messages += one_pass.len();
        for lc in &one_pass {
            for p in inconsistencies(lc) {
                problems.push(format!("{} {}: {p}", path.display(), lc.id));
            }
        }

        let half = all.len() / 2;
        let mut first = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
        feed(&mut first, &all[..half]);
        let json = serde_json::to_string(&first.save()).unwrap();
        let state: CorrelatorState = serde_json::from_str(&json).unwrap();
        let mut second = Correlator::restore(state).unwrap();
        feed(&mut second, &all[half..]);
        if second.snapshot() != one_pass {
            problems.push(format!(
                "{}: a checkpoint changes the result",
                path.display()
            ));
        }
    }
    assert!(
        messages > 1000,
        "only {messages} messages in the test-suite logs"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
