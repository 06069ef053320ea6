//! The corpus's ground truth, and the comparison of lifecycles with it.
//!
//! Every scenario under tests/data/corpus has a `ground_truth.json` saying
//! what happened to every message. [`compare`] checks every message: its
//! origin, parent, final state, generated bounces, and for every final
//! address its envelope recipient, outcome and number of attempts, then
//! the totals. Shared by the processor's tests and the fleet tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use exim_pilot_schema::lifecycle::{Lifecycle, MessageState, Outcome};
use serde_json::Value;

/// The corpus folder.
pub fn corpus_dir() -> PathBuf {
    // From the processor crate or from the workspace root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        manifest.join("tests/data/corpus"),
        manifest.join("../tests/data/corpus"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .expect("the corpus is in tests/data/corpus")
}

fn outcome_name(o: Outcome) -> &'static str {
    o.as_str()
}

fn state_name(s: MessageState) -> &'static str {
    match s {
        MessageState::Completed => "completed",
        MessageState::InFlight => "on_queue",
        MessageState::Frozen => "on_queue_frozen",
        MessageState::Removed => "removed",
    }
}

fn origin_name(lc: &Lifecycle) -> String {
    serde_json::to_value(lc.origin)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// The ground truth's outcome in our terms: `deferred_pending` is
/// `deferred` after an attempt and `pending` before.
fn expected_outcome(gt: &str, attempts: u64) -> &str {
    match gt {
        "deferred_pending" if attempts > 0 => "deferred",
        "deferred_pending" => "pending",
        other => other,
    }
}

/// The ground truth of a corpus scenario.
pub fn truth(scenario: &str) -> Value {
    let path = corpus_dir().join(scenario).join("ground_truth.json");
    serde_json::from_reader(File::open(path).unwrap()).unwrap()
}

/// Compares lifecycles with a scenario's ground truth; returns the
/// mismatches, one readable line each.
pub fn compare(truth: &Value, ours: &[Lifecycle]) -> Vec<String> {
    let by_id: BTreeMap<String, &Lifecycle> =
        ours.iter().map(|lc| (lc.id.to_string(), lc)).collect();
    let mut problems = Vec::new();

    let messages = truth["messages"].as_array().unwrap();
    let gt_ids: BTreeSet<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for lc in ours {
        if !gt_ids.contains(lc.id.as_str()) {
            problems.push(format!("{}: lifecycle not in the ground truth", lc.id));
        }
    }

    for m in messages {
        let id = m["id"].as_str().unwrap();
        let Some(lc) = by_id.get(id) else {
            problems.push(format!("{id}: missing"));
            continue;
        };
        let mut check = |what: &str, want: String, got: String| {
            if want != got {
                problems.push(format!("{id}: {what}: want {want}, got {got}"));
            }
        };
        check(
            "origin",
            m["origin"].as_str().unwrap().into(),
            origin_name(lc),
        );
        check(
            "parent_id",
            m["parent_id"].as_str().unwrap_or("-").into(),
            lc.parent_id.map_or("-".into(), |p| p.to_string()),
        );
        check(
            "final_state",
            m["final_state"].as_str().unwrap().into(),
            state_name(lc.state).into(),
        );
        let want_generated: BTreeSet<&str> = m["generated"]
            .as_array()
            .map(|g| g.iter().map(|x| x.as_str().unwrap()).collect())
            .unwrap_or_default();
        let got_generated: BTreeSet<String> = lc.generated.iter().map(|g| g.to_string()).collect();
        check(
            "generated",
            format!("{want_generated:?}"),
            format!("{got_generated:?}"),
        );
        check(
            "incomplete_start",
            "false".into(),
            lc.incomplete_start.to_string(),
        );

        // Final addresses, keyed by (envelope recipient, final address).
        let mut want = BTreeMap::new();
        for d in m["deliveries"].as_array().unwrap() {
            let key = (
                d["recipient"].as_str().unwrap().to_string(),
                d["address"].as_str().unwrap().to_string(),
            );
            let attempts = d["attempts"].as_u64().unwrap();
            let outcome = expected_outcome(d["outcome"].as_str().unwrap(), attempts);
            want.insert(key, (outcome.to_string(), attempts));
        }
        let mut got = BTreeMap::new();
        for r in &lc.recipients {
            let recipient = r.original.clone().unwrap_or_else(|| r.address.clone());
            got.insert(
                (recipient, r.address.clone()),
                (outcome_name(r.outcome).to_string(), u64::from(r.attempts)),
            );
        }
        for (key, w) in &want {
            match got.get(key) {
                None => problems.push(format!("{id}: address {key:?} missing")),
                Some(g) if g != w => problems.push(format!(
                    "{id}: address {key:?}: want {} x{}, got {} x{}",
                    w.0, w.1, g.0, g.1
                )),
                Some(_) => {}
            }
        }
        for key in got.keys() {
            if !want.contains_key(key) {
                problems.push(format!("{id}: unexpected address {key:?}"));
            }
        }
    }

    problems.extend(compare_totals(&truth["totals"], ours));
    problems
}

/// The ground truth's totals against ours.
fn compare_totals(totals: &Value, ours: &[Lifecycle]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |what: &str, want: u64, got: u64| {
        if want != got {
            problems.push(format!("totals: {what}: want {want}, got {got}"));
        }
    };
    check(
        "messages",
        totals["messages"].as_u64().unwrap(),
        ours.len() as u64,
    );
    for (origin, n) in totals["messages_by_origin"].as_object().unwrap() {
        let got = ours.iter().filter(|lc| origin_name(lc) == *origin).count();
        check(&format!("origin {origin}"), n.as_u64().unwrap(), got as u64);
    }
    for (state, n) in totals["messages_by_final_state"].as_object().unwrap() {
        let got = ours
            .iter()
            .filter(|lc| state_name(lc.state) == state)
            .count();
        check(&format!("state {state}"), n.as_u64().unwrap(), got as u64);
    }
    let addresses = ours.iter().flat_map(|lc| &lc.recipients);
    check(
        "final addresses",
        totals["final_addresses"].as_u64().unwrap(),
        addresses.clone().count() as u64,
    );
    for (outcome, n) in totals["final_addresses_by_outcome"].as_object().unwrap() {
        let got = addresses
            .clone()
            .filter(|r| match outcome.as_str() {
                "deferred_pending" => matches!(r.outcome, Outcome::Deferred | Outcome::Pending),
                other => r.outcome.as_str() == other,
            })
            .count();
        check(
            &format!("outcome {outcome}"),
            n.as_u64().unwrap(),
            got as u64,
        );
    }
    check(
        "delivery attempts",
        totals["delivery_attempts_total"].as_u64().unwrap(),
        addresses.map(|r| u64::from(r.attempts)).sum(),
    );
    problems
}
