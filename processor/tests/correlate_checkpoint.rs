//! Checkpoints of the correlator on real logs: saving the state anywhere in
//! a corpus mainlog, restoring it from JSON and feeding the rest must give
//! exactly what one pass gives, with eviction on and off.

#[path = "support/records.rs"]
mod logs;

use logs::{mainlog, records};

use std::collections::BTreeMap;

use chrono::Duration;
use exim_pilot_processor::correlate::{Correlator, CorrelatorConfig, CorrelatorState};
use exim_pilot_processor::parse::{parse_record_with, ParseOptions};
use exim_pilot_schema::lifecycle::Lifecycle;
use exim_pilot_schema::{LogFile, Zone};

const HOST: &str = "mx1.lab.test";

/// What a store would hold after consuming `take_changed` all along:
/// the latest version of every lifecycle, by id.
#[derive(Default)]
struct Store(BTreeMap<String, Lifecycle>);

impl Store {
    fn upsert(&mut self, changed: Vec<Lifecycle>) {
        for lc in changed {
            self.0.insert(lc.id.to_string(), lc);
        }
    }
}

fn feed(c: &mut Correlator, store: &mut Store, records: &[Vec<u8>]) {
    let opts = ParseOptions {
        syslog_year: Some(2026),
    };
    for (i, r) in records.iter().enumerate() {
        c.apply(HOST, &parse_record_with(&opts, LogFile::Main, r));
        if i % 50 == 0 {
            store.upsert(c.take_changed());
        }
    }
    store.upsert(c.take_changed());
}

fn round_trip(c: &Correlator) -> Correlator {
    let json = serde_json::to_string(&c.save()).unwrap();
    let state: CorrelatorState = serde_json::from_str(&json).unwrap();
    Correlator::restore(state).unwrap()
}

fn check(scenario: &str, config: CorrelatorConfig) {
    let all = records(&mainlog(scenario));
    let mut one = Correlator::with_config(Zone::Utc, config);
    let mut one_store = Store::default();
    feed(&mut one, &mut one_store, &all);
    let one_left = one.snapshot();

    let splits = [
        1,
        all.len() / 7,
        all.len() / 3,
        all.len() / 2,
        all.len() - 3,
    ];
    for split in splits {
        let mut first = Correlator::with_config(Zone::Utc, config);
        let mut store = Store::default();
        feed(&mut first, &mut store, &all[..split]);
        let mut second = round_trip(&first);
        drop(first);
        feed(&mut second, &mut store, &all[split..]);
        assert_eq!(
            second.snapshot(),
            one_left,
            "{scenario}: in memory after a restore at record {split}"
        );
        assert!(
            store.0 == one_store.0,
            "{scenario}: stored lifecycles after a restore at record {split} differ"
        );
    }
}

#[test]
fn restoring_anywhere_gives_one_pass_keeping_everything() {
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        check(scenario, CorrelatorConfig::keep_all());
    }
}

#[test]
fn restoring_anywhere_gives_one_pass_with_eviction() {
    let config = CorrelatorConfig {
        grace: Some(Duration::seconds(20)),
        stale_after: Some(Duration::minutes(2)),
        keep_evicted: true,
    };
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        check(scenario, config);
    }
}

#[test]
fn eviction_keeps_the_stored_result_of_one_pass() {
    // With a grace long enough for every late line of the corpus, what the
    // store ends with is what keeping everything gives.
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        let all = records(&mainlog(scenario));
        let mut keep = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
        let mut keep_store = Store::default();
        feed(&mut keep, &mut keep_store, &all);

        let config = CorrelatorConfig {
            grace: Some(Duration::seconds(30)),
            stale_after: None,
            keep_evicted: false,
        };
        let mut evicting = Correlator::with_config(Zone::Utc, config);
        let mut store = Store::default();
        feed(&mut evicting, &mut store, &all);
        assert!(
            evicting.len() < keep.len(),
            "{scenario}: nothing was evicted"
        );
        assert!(
            store.0 == keep_store.0,
            "{scenario}: eviction changed the stored lifecycles"
        );
    }
}

#[test]
fn evicted_and_remaining_lifecycles_hand_out_every_message_once() {
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        let all = records(&mainlog(scenario));
        let mut keep = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
        feed(&mut keep, &mut Store::default(), &all);
        let want = keep.snapshot();

        let config = CorrelatorConfig {
            grace: Some(Duration::seconds(30)),
            stale_after: None,
            keep_evicted: true,
        };
        let mut evicting = Correlator::with_config(Zone::Utc, config);
        let mut got = Vec::new();
        let opts = ParseOptions {
            syslog_year: Some(2026),
        };
        for (i, r) in all.iter().enumerate() {
            evicting.apply(HOST, &parse_record_with(&opts, LogFile::Main, r));
            if i % 100 == 0 {
                got.extend(evicting.take_evicted());
            }
        }
        got.extend(evicting.take_evicted());
        assert!(!got.is_empty(), "{scenario}: nothing was evicted");
        got.extend(evicting.into_lifecycles());
        got.sort_by_key(|lc| (lc.first_seen, lc.id));
        let mut want = want;
        want.sort_by_key(|lc| (lc.first_seen, lc.id));
        assert!(
            got == want,
            "{scenario}: evicted + remaining differ from one pass"
        );
    }
}
