//! `exim-pilot report` against eximstats' own report of the same logs
//! (`reference/eximstats.txt` in each corpus scenario).
//!
//! Where both count the same thing the numbers must be equal: messages
//! received, and messages with at least one delayed (deferred) address.
//! eximstats' "Failed" counts messages with at least one `**` line; the
//! report counts messages with a bounced final address. Those differ on
//! purpose (a failed bounce is frozen and retried, not bounced; a message
//! cancelled by the system filter or an admin bounces without a `**`
//! line), so the test checks that eximstats' figure equals the number of
//! messages whose attempt history has a `**` line, which the lifecycles
//! carry.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;

use support::stdout_of;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(name)
}

fn run(args: &[&str], log: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(args)
        .args(["--zone", "utc", "--host", "mx1.lab.test"])
        .arg(log)
        .output()
        .unwrap();
    stdout_of(out)
}

/// The "Received" row of eximstats' grand total: (messages, delayed, failed).
fn eximstats_received(name: &str) -> (i64, i64, i64) {
    let text = std::fs::read_to_string(scenario(name).join("reference/eximstats.txt")).unwrap();
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("Received"))
        .expect("a Received row");
    // Received  VOLUME  MESSAGES  HOSTS  DELAYED PCT%  FAILED PCT%
    let cols: Vec<&str> = row.split_whitespace().collect();
    let n = |i: usize| cols[i].parse::<i64>().unwrap();
    (n(2), n(4), n(6))
}

fn check(name: &str) {
    let log = scenario(name).join("mainlog");
    let report: Value = serde_json::from_str(&run(&["report", "--format", "json"], &log)).unwrap();
    let totals = &report["totals"];
    let (received, delayed, failed) = eximstats_received(name);

    assert_eq!(totals["received"], received, "{name}: messages received");
    assert_eq!(
        totals["messages_deferred"], delayed,
        "{name}: messages delayed"
    );

    let with_failure_line = run(&["lifecycles", "--format", "jsonl"], &log)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|lc| {
            lc["recipients"].as_array().unwrap().iter().any(|r| {
                r["history"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|a| a["mark"] == "**"))
            })
        })
        .count() as i64;
    assert_eq!(with_failure_line, failed, "{name}: messages with a ** line");
}

#[test]
fn s01_totals_match_eximstats_where_both_count_the_same() {
    check("s01_core_all");
}

#[test]
fn s02_totals_match_eximstats_where_both_count_the_same() {
    check("s02_default_selectors");
}
