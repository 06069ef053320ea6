//! Conformance of live feeds and of the login throttle's ledger.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};

use exim_pilot_schema::Lifecycle;

use super::{fixtures::*, fresh, Backend};
use crate::live::LiveFeed;
use crate::login::{LoginMark, LoginMarkKind};
use crate::types::{Batch, StoredRecord};

/// Everything a feed has, read a page of `limit` at a time.
async fn drain(feed: &mut dyn LiveFeed, limit: usize) -> (Vec<StoredRecord>, Vec<Lifecycle>) {
    let (mut records, mut lifecycles) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let page = feed.next(limit).await.expect("a page of the feed");
        assert!(
            page.records.len() <= limit && page.lifecycles.len() <= limit,
            "a page larger than asked"
        );
        records.extend(page.records);
        lifecycles.extend(page.lifecycles);
        if !page.more {
            return (records, lifecycles);
        }
    }
    panic!("the feed never ran dry");
}

/// Messages `from..to` of `host`, with their records at distinct offsets.
fn messages(host: &str, from: u32, to: u32) -> Batch {
    let lifecycles: Vec<Lifecycle> = (from..to)
        .map(|n| delivered(host, n, at(n as i64), &format!("u{n}@example.com")))
        .collect();
    let records = lifecycles
        .iter()
        .zip(from..)
        .flat_map(|(lc, n)| records_of(lc, n as u64 * 1000))
        .collect();
    Batch {
        records,
        lifecycles,
        ..Batch::default()
    }
}

type Origin = (String, u64, u64);

fn origins(records: &[StoredRecord]) -> Vec<Origin> {
    let mut out: Vec<Origin> = records
        .iter()
        .map(|r| (r.origin.host.clone(), r.origin.file_id, r.origin.offset))
        .collect();
    out.sort();
    out
}

/// Asserts the feed returned exactly `batch`'s records and lifecycles,
/// each once.
fn assert_exactly(what: &str, got: &(Vec<StoredRecord>, Vec<Lifecycle>), batch: &Batch) {
    let got_origins = origins(&got.0);
    let unique: BTreeSet<&Origin> = got_origins.iter().collect();
    assert_eq!(unique.len(), got_origins.len(), "{what}: a record twice");
    assert_eq!(got_origins, origins(&batch.records), "{what}: records");
    let by_record: BTreeMap<Origin, &StoredRecord> = got
        .0
        .iter()
        .map(|r| {
            (
                (r.origin.host.clone(), r.origin.file_id, r.origin.offset),
                r,
            )
        })
        .collect();
    for r in &batch.records {
        let key = (r.origin.host.clone(), r.origin.file_id, r.origin.offset);
        assert_eq!(by_record.get(&key), Some(&r), "{what}: a record differs");
    }

    let mut got_ids: Vec<(String, String)> = got
        .1
        .iter()
        .map(|lc| (lc.host.clone(), lc.id.to_string()))
        .collect();
    got_ids.sort();
    let mut want: Vec<(String, String)> = batch
        .lifecycles
        .iter()
        .map(|lc| (lc.host.clone(), lc.id.to_string()))
        .collect();
    want.sort();
    assert_eq!(got_ids, want, "{what}: lifecycles, each once");
    for lc in &batch.lifecycles {
        assert!(got.1.contains(lc), "{what}: lifecycle {} differs", lc.id);
    }
}

/// A live feed returns what is stored after it opened, by this handle or
/// another, each row once, a bounded page at a time; what was there
/// before, what is written again and what it skipped, it does not.
pub async fn live_feed_returns_each_new_row_once(backend: &dyn Backend) {
    let (store, name) = fresh(backend).await;
    let before = messages("mx1.example.org", 0, 3);
    store.commit_batch(before.clone()).await.expect("commit");

    let mut feed = store.live_feed().await.expect("a live feed");
    let got = drain(&mut *feed, 7).await;
    assert!(
        got.0.is_empty() && got.1.is_empty(),
        "rows from before the feed: {got:?}"
    );

    // New messages on two hosts, and a change of one stored before.
    let mut after = messages("mx1.example.org", 10, 30);
    after
        .records
        .extend(messages("mx2.example.org", 10, 14).records);
    after
        .lifecycles
        .extend(messages("mx2.example.org", 10, 14).lifecycles);
    let changed = now_delivered(
        &deferred("mx1.example.org", 1, at(1), "u1@example.com"),
        at(90),
    );
    after.lifecycles.push(changed.clone());
    store.commit_batch(after.clone()).await.expect("commit");
    let got = drain(&mut *feed, 7).await;
    assert_exactly("a new batch", &got, &after);

    // The same batch again stores nothing new, and the feed says so.
    store
        .commit_batch(after.clone())
        .await
        .expect("commit again");
    let got = drain(&mut *feed, 7).await;
    assert!(
        got.0.is_empty() && got.1.is_empty(),
        "rows returned twice: {got:?}"
    );

    // Skipped rows are passed; what comes after is returned.
    store
        .commit_batch(messages("mx1.example.org", 40, 45))
        .await
        .expect("commit");
    feed.skip().await.expect("skip");
    let later = messages("mx1.example.org", 50, 53);
    store.commit_batch(later.clone()).await.expect("commit");
    assert_exactly("after a skip", &drain(&mut *feed, 100).await, &later);

    // Another handle on the same store, as another process would write.
    let other = backend.reopen(&name).await.expect("reopen");
    let theirs = messages("mx3.example.org", 60, 62);
    other.commit_batch(theirs.clone()).await.expect("commit");
    assert_exactly("another writer", &drain(&mut *feed, 1).await, &theirs);

    // A feed opened now starts past all of it.
    let mut fresh_feed = store.live_feed().await.expect("a live feed");
    let got = drain(&mut *fresh_feed, 50).await;
    assert!(
        got.0.is_empty() && got.1.is_empty(),
        "a new feed returned old rows"
    );
}

/// The login ledger returns the newest marks of each key asked, from the
/// time asked, newest first, as many as asked; marks written through
/// another handle count.
pub async fn login_marks_are_read_newest_first_by_key(backend: &dyn Backend) {
    let (store, name) = fresh(backend).await;
    // Marks keep milliseconds.
    let now =
        chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("a time");
    let mark = |key: &str, seconds_ago: i64, kind| LoginMark {
        key: key.to_string(),
        at: now - Duration::seconds(seconds_ago),
        kind,
    };
    let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    store
        .append_login_marks(&[
            mark("ip 192.0.2.1", 30, LoginMarkKind::Failure),
            mark("ip 192.0.2.1", 20, LoginMarkKind::Failure),
            mark("ip 192.0.2.1", 10, LoginMarkKind::Failure),
            mark("account ann", 25, LoginMarkKind::Failure),
            mark("account ann", 5, LoginMarkKind::Reset),
            mark("ip 192.0.2.1", 7200, LoginMarkKind::Failure),
            mark("someone else", 1, LoginMarkKind::Trusted),
        ])
        .await
        .expect("append");

    let since = now - Duration::hours(1);
    let got = store
        .login_marks(&keys(&["ip 192.0.2.1", "account ann", "nobody"]), since, 2)
        .await
        .expect("read marks");
    let mut by_key: BTreeMap<String, Vec<LoginMark>> = BTreeMap::new();
    for m in got {
        by_key.entry(m.key.clone()).or_default().push(m);
    }
    let millis = |m: &LoginMark| m.at.timestamp_millis();
    assert_eq!(
        by_key["ip 192.0.2.1"]
            .iter()
            .map(millis)
            .collect::<Vec<_>>(),
        [10, 20].map(|s| (now - Duration::seconds(s)).timestamp_millis()),
        "the two newest, newest first"
    );
    assert_eq!(
        by_key["account ann"]
            .iter()
            .map(|m| m.kind)
            .collect::<Vec<_>>(),
        [LoginMarkKind::Reset, LoginMarkKind::Failure]
    );
    assert_eq!(by_key.len(), 2, "only the keys asked: {by_key:?}");

    // Two marks of one key at the same moment both count.
    let other = backend.reopen(&name).await.expect("reopen");
    let again = mark("ip 192.0.2.9", 3, LoginMarkKind::Failure);
    other
        .append_login_marks(&[again.clone(), again.clone()])
        .await
        .expect("append");
    let got = store
        .login_marks(&keys(&["ip 192.0.2.9"]), since, 10)
        .await
        .expect("read marks");
    assert_eq!(got, vec![again.clone(), again]);
    let none = store
        .login_marks(&keys(&["ip 192.0.2.9"]), now, 10)
        .await
        .expect("read marks");
    assert!(none.is_empty(), "marks before the time asked: {none:?}");
}
