//! `exim -bp` listings that Exim 4.96 printed in the corpus lab, read
//! back: every message counted as `exim -bpc` counted it, nothing left
//! unread, and the final listings agree with the ground truth.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use exim_pilot_ingest::queue::parse_bp;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus")
}

/// Every `(listing, count)` pair of a scenario's `queue/` folder.
fn snapshots(scenario: &str) -> Vec<(PathBuf, String, u64)> {
    let dir = corpus().join(scenario).join("queue");
    let mut listings: Vec<_> = fs::read_dir(&dir)
        .expect("corpus queue folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".bp.txt"))
        .collect();
    listings.sort();
    listings
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).expect("listing");
            let count_path = PathBuf::from(path.to_string_lossy().replace(".bp.txt", ".bpc.txt"));
            let count = fs::read_to_string(count_path)
                .expect("count")
                .trim()
                .parse()
                .expect("a number");
            (path, text, count)
        })
        .collect()
}

#[test]
fn every_corpus_listing_reads_whole_and_matches_its_count() {
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        let snapshots = snapshots(scenario);
        assert!(snapshots.len() >= 3, "{scenario}: listings missing");
        for (path, text, count) in snapshots {
            let listing = parse_bp(&text);
            assert_eq!(listing.problems, vec![], "{}", path.display());
            assert_eq!(listing.messages.len() as u64, count, "{}", path.display());
            for message in &listing.messages {
                assert!(
                    !message.recipients.is_empty(),
                    "{}: {:?}",
                    path.display(),
                    message.id
                );
                assert!(message.age_secs.is_some() && message.size.is_some());
                assert!(message
                    .recipients
                    .iter()
                    .all(|r| !r.address.starts_with("D ")));
            }
        }
    }
}

#[test]
fn final_listings_hold_the_messages_the_ground_truth_leaves_queued() {
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        let truth: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(corpus().join(scenario).join("ground_truth.json"))
                .expect("ground truth"),
        )
        .expect("ground truth JSON");
        let expected: BTreeMap<String, (bool, bool)> = truth["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| {
                m["final_state"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("on_queue")
            })
            .map(|m| {
                let id = m["id"].as_str().expect("id").to_string();
                let frozen = m["frozen_at_end"].as_bool().unwrap_or(false);
                let bounce = m["sender"].as_str() == Some("");
                (id, (frozen, bounce))
            })
            .collect();

        let (_, text, _) = snapshots(scenario).pop().expect("a final listing");
        let found: BTreeMap<String, (bool, bool)> = parse_bp(&text)
            .messages
            .iter()
            .map(|m| (m.id.to_string(), (m.frozen, m.is_bounce())))
            .collect();
        assert_eq!(found, expected, "{scenario}");
    }
}

#[test]
fn delivered_recipients_of_a_corpus_message() {
    let (_, text, _) = snapshots("s01_core_all").pop().expect("a final listing");
    let listing = parse_bp(&text);
    let message = listing
        .messages
        .iter()
        .find(|m| m.id.as_str() == "1xZVca-0007Ed-0F")
        .expect("message on the final listing");
    let delivered: Vec<_> = message
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.delivered))
        .collect();
    assert_eq!(
        delivered,
        vec![
            ("p550-marek20@mixed.test", true),
            ("t451-sven19@mixed.test", false),
            ("yusuf21@accept.test", true),
            ("ok-tomas18@mixed.test", true),
            ("oscar@lab.test", true),
        ]
    );
    assert_eq!(message.size, Some(20 * 1024));
    assert_eq!(message.age_secs, Some(180));
}
