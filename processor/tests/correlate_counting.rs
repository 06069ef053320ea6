//! A correlator set up for counting (no change tracking, no details) on
//! the corpus mainlogs: every message is still handed out exactly once,
//! with the outcomes, attempts and reasons of full correlation, and a
//! report counted from it equals one counted from full lifecycles.

#[path = "support/records.rs"]
mod logs;

use logs::{mainlog, records};

use chrono::Duration;
use exim_pilot_processor::correlate::{Correlator, CorrelatorConfig};
use exim_pilot_processor::parse::{parse_record_with, ParseOptions};
use exim_pilot_schema::lifecycle::{Attempt, AttemptResult, Lifecycle, Recipient};
use exim_pilot_schema::report::{ReportBuilder, ReportOptions};
use exim_pilot_schema::{LogFile, Zone};

const HOST: &str = "mx1.lab.test";
const SCENARIOS: [&str; 2] = ["s01_core_all", "s02_default_selectors"];

/// Feeds every record, collecting evicted lifecycles as a report does,
/// and returns them with those left at the end, in a stable order.
fn correlate(records: &[Vec<u8>], counting: bool) -> Vec<Lifecycle> {
    let config = CorrelatorConfig {
        grace: Some(Duration::seconds(30)),
        stale_after: Some(Duration::minutes(5)),
        keep_evicted: true,
    };
    let mut c = Correlator::with_config(Zone::Utc, config);
    if counting {
        c.ignore_changes();
        c.omit_details();
    }
    let opts = ParseOptions {
        syslog_year: Some(2026),
    };
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        c.apply(HOST, &parse_record_with(&opts, LogFile::Main, r));
        if i % 100 == 0 {
            out.extend(c.take_evicted());
            if counting {
                assert!(
                    c.take_changed().is_empty(),
                    "changes handed out while ignored"
                );
            }
        }
    }
    out.extend(c.take_evicted());
    out.extend(c.into_lifecycles());
    out.sort_by_key(|lc| (lc.first_seen, lc.id));
    out
}

/// What a report reads of an attempt.
fn counted_attempt(a: &Attempt) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        a.at,
        a.result,
        a.reason,
        // A successful attempt's text (a confirmation) is no reason's sample.
        a.text.as_deref().filter(|_| a.result != AttemptResult::Ok),
        a.transport.as_deref(),
        // The remote host's name, or its address when it has no name.
        a.remote_host.as_deref().or(a.remote_ip.as_deref()),
    )
}

/// The recipient's last text when its last attempt did not succeed (a
/// report reads it only then).
fn last_failure_text(r: &Recipient) -> Option<&str> {
    let failed = r
        .history
        .last()
        .is_none_or(|a| a.result != AttemptResult::Ok);
    r.last_text.as_deref().filter(|_| failed)
}

/// What a report reads of a recipient.
fn counted_recipient(r: &Recipient) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        (r.address.as_str(), r.original.as_deref(), r.outcome),
        (r.attempts, r.reason, r.final_at, last_failure_text(r)),
        r.history.iter().map(counted_attempt).collect::<Vec<_>>(),
    )
}

fn report_of(lifecycles: &[Lifecycle]) -> exim_pilot_schema::Report {
    let mut builder = ReportBuilder::new(ReportOptions::default());
    for lc in lifecycles {
        builder.add_lifecycle(lc);
    }
    builder.finish()
}

#[test]
fn counting_keeps_every_message_with_what_reports_read() {
    for scenario in SCENARIOS {
        let all = records(&mainlog(scenario));
        let full = correlate(&all, false);
        let counted = correlate(&all, true);
        assert_eq!(full.len(), counted.len(), "{scenario}: message count");
        for (f, c) in full.iter().zip(&counted) {
            let what = format!("{scenario} {}", f.id);
            assert_eq!(
                (f.id, f.first_seen, f.last_seen),
                (c.id, c.first_seen, c.last_seen)
            );
            assert_eq!(
                (&f.sender, f.size, f.received_at),
                (&c.sender, c.size, c.received_at)
            );
            assert_eq!(
                (f.state, f.origin, f.parent_id),
                (c.state, c.origin, c.parent_id)
            );
            let ip = |lc: &Lifecycle| lc.client.as_ref().and_then(|c| c.ip.clone());
            assert_eq!(ip(f), ip(c), "{what}: client IP");
            let rf: Vec<_> = f.recipients.iter().map(counted_recipient).collect();
            let rc: Vec<_> = c.recipients.iter().map(counted_recipient).collect();
            assert_eq!(rf, rc, "{what}: recipients");
        }
        assert_eq!(
            report_of(&full),
            report_of(&counted),
            "{scenario}: reports differ"
        );
    }
}

#[test]
fn counting_leaves_out_the_details() {
    for scenario in SCENARIOS {
        let all = records(&mainlog(scenario));
        let full = correlate(&all, false);
        let counted = correlate(&all, true);
        let marks = |lcs: &[Lifecycle]| {
            lcs.iter()
                .flat_map(|lc| &lc.recipients)
                .flat_map(|r| &r.history)
                .filter(|a| !a.mark.is_empty() || a.router.is_some())
                .count()
        };
        let ids = |lcs: &[Lifecycle]| {
            lcs.iter()
                .filter(|lc| lc.message_id_header.is_some() || lc.protocol.is_some())
                .count()
        };
        assert!(
            marks(&full) > 0 && ids(&full) > 0,
            "{scenario}: no details at all"
        );
        assert_eq!(marks(&counted), 0, "{scenario}: attempts kept details");
        assert_eq!(ids(&counted), 0, "{scenario}: arrivals kept details");
    }
}
