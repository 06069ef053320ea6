//! `exim-pilot lifecycles --format jsonl` against the corpus's ground
//! truth, through the command line as a user runs it: for every message of
//! every scenario, the final addresses with the envelope recipient they
//! came from, each one's outcome and attempt count, and the message state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;

use support::stdout_of;

const SCENARIOS: [&str; 2] = ["s01_core_all", "s02_default_selectors"];

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(name)
}

/// (message id, envelope recipient, final address) -> "outcome/attempts",
/// plus one "state" entry per message.
type Facts = BTreeMap<(String, String, String), String>;

fn expected(name: &str) -> Facts {
    let gt: Value =
        serde_json::from_slice(&std::fs::read(scenario(name).join("ground_truth.json")).unwrap())
            .unwrap();
    let mut facts = Facts::new();
    for m in gt["messages"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap().to_string();
        let state = match m["final_state"].as_str().unwrap() {
            "on_queue" => "in_flight",
            "on_queue_frozen" => "frozen",
            other => other,
        };
        facts.insert((id.clone(), "-".into(), "-".into()), state.to_string());
        for d in m["deliveries"].as_array().unwrap() {
            let outcome = match d["outcome"].as_str().unwrap() {
                // Still queued: `deferred` after an attempt, `pending` before.
                "deferred_pending" if d["attempts"] == 0 => "pending",
                "deferred_pending" => "deferred",
                other => other,
            };
            facts.insert(
                (
                    id.clone(),
                    d["recipient"].as_str().unwrap().to_lowercase(),
                    d["address"].as_str().unwrap().to_lowercase(),
                ),
                format!("{outcome}/{}", d["attempts"]),
            );
        }
    }
    facts
}

fn actual(name: &str) -> Facts {
    let out = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(["lifecycles", "--format", "jsonl", "--timezone", "utc"])
        .args(["--host", "mx1.lab.test"])
        .arg(scenario(name).join("mainlog"))
        .output()
        .unwrap();
    let mut facts = Facts::new();
    for line in stdout_of(out).lines() {
        let lc: Value = serde_json::from_str(line).unwrap();
        for key in [
            "host",
            "id",
            "sender",
            "size",
            "received_at",
            "state",
            "recipients",
        ] {
            assert!(lc.get(key).is_some(), "lifecycle without {key}: {line}");
        }
        let id = lc["id"].as_str().unwrap().to_string();
        facts.insert(
            (id.clone(), "-".into(), "-".into()),
            lc["state"].as_str().unwrap().to_string(),
        );
        for r in lc["recipients"].as_array().unwrap() {
            for key in [
                "address",
                "original",
                "outcome",
                "attempts",
                "last_code",
                "last_text",
            ] {
                assert!(r.get(key).is_some(), "recipient without {key}: {line}");
            }
            let address = r["address"].as_str().unwrap().to_lowercase();
            let recipient = r["original"]
                .as_str()
                .map(str::to_lowercase)
                .unwrap_or_else(|| address.clone());
            facts.insert(
                (id.clone(), recipient, address),
                format!("{}/{}", r["outcome"].as_str().unwrap(), r["attempts"]),
            );
        }
    }
    facts
}

#[test]
fn lifecycles_agree_with_the_ground_truth() {
    let mut problems = Vec::new();
    for name in SCENARIOS {
        let want = expected(name);
        let got = actual(name);
        for (key, value) in &want {
            match got.get(key) {
                Some(v) if v == value => {}
                Some(v) => problems.push(format!("{name} {key:?}: expected {value}, got {v}")),
                None => problems.push(format!("{name} {key:?}: expected {value}, missing")),
            }
        }
        for (key, value) in &got {
            if !want.contains_key(key) {
                problems.push(format!("{name} {key:?}: unexpected {value}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn lifecycles_read_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args([
            "lifecycles",
            "--timezone",
            "utc",
            "--host",
            "mx1.lab.test",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::fs::read(scenario("s02_default_selectors").join("mainlog")).unwrap();
    child.stdin.take().unwrap().write_all(&log).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 128);
}

/// `trace` finds messages by id, and by the null sender
/// written as the log and reports write it, `<>`.
#[test]
fn trace_finds_messages_by_id_and_by_the_null_sender() {
    let trace = |target: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
            .args(["trace", "--format", "json", "--timezone", "utc"])
            .args(["--host", "mx1.lab.test", "--file"])
            .arg(scenario("s01_core_all").join("mainlog"))
            .arg(target)
            .output()
            .unwrap();
        let found: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        found
    };
    let bounces = trace("<>");
    assert!(bounces.len() > 5, "{} messages from <>", bounces.len());
    assert!(bounces
        .iter()
        .all(|f| f["lifecycle"]["sender"].as_str().is_none_or(str::is_empty)));
    assert_eq!(bounces, trace(""));
    let first = &bounces[0]["lifecycle"];
    let by_id = trace(first["id"].as_str().unwrap());
    assert_eq!(by_id.len(), 1);
    assert_eq!(&by_id[0]["lifecycle"], first);
}
