//! Behaviour tests every [`Store`] backend must pass, written once.
//!
//! A backend's test file implements [`Backend`] (how to create an empty
//! store and reopen one) and expands [`store_conformance_tests!`] to get one
//! `#[tokio::test]` per behaviour:
//!
//! ```ignore
//! exim_pilot_store::store_conformance_tests!(MyBackend::new());
//! ```
//!
//! Each test panics with a message saying what the store got wrong.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use exim_pilot_schema::report::{
    cohort_time, hour_of, recipient_domain, Dimension, ReportBuilder, ReportOptions,
};
use exim_pilot_schema::{
    AttemptResult, Lifecycle, LogFile, MessageState, Outcome, ReasonClass, Report,
};

use crate::types::*;
use crate::{Result, Store};

pub mod fixtures;
mod live;
mod queue;
pub mod synthetic;

use fixtures::*;
pub use live::*;
pub use queue::*;

/// How the tests get stores of one backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new, empty store, and a name by which [`Backend::reopen`] finds it.
    async fn create(&self) -> Result<(Arc<dyn Store>, String)>;

    /// The store named `name`, opened anew as a restarted process would.
    async fn reopen(&self, name: &str) -> Result<Arc<dyn Store>>;
}

/// Expands to one `#[tokio::test]` per conformance test, each running it
/// against the backend the expression builds.
#[macro_export]
macro_rules! store_conformance_tests {
    ($backend:expr) => {
        $crate::store_conformance_tests!(@each $backend;
            idempotent_batch,
            lifecycle_update_moves_rollups,
            report_matches_in_memory,
            full_text_finds_raw_lines,
            retention_drops_old_keeps_new,
            pagination_returns_each_message_once,
            reopen_keeps_everything,
            lookups_by_host_and_id,
            search_filters,
            blobs_commit_with_their_batch,
            rejects_are_idempotent_and_paged,
            hosts_summarise_servers,
            audit_is_appended_and_paged,
            cells_by_hour_and_day,
            users_are_created_once_and_changed,
            sessions_are_saved_and_revoked,
            queue_snapshots_replace_the_current_queue,
            queue_search_filters_and_pages,
            queued_messages_carry_their_last_deferral,
            queue_health_per_host,
            queue_history_over_a_range,
            queue_jobs_and_results,
            queue_retention_drops_old_history_and_jobs,
            top_recipients_rank_final_addresses,
            live_feed_returns_each_new_row_once,
            login_marks_are_read_newest_first_by_key,
        );
    };
    (@each $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $backend;
                $crate::conformance::$name(&backend).await;
            }
        )*
    };
}

/// Runs every test in turn.
pub async fn run_all(backend: &dyn Backend) {
    idempotent_batch(backend).await;
    lifecycle_update_moves_rollups(backend).await;
    report_matches_in_memory(backend).await;
    full_text_finds_raw_lines(backend).await;
    retention_drops_old_keeps_new(backend).await;
    pagination_returns_each_message_once(backend).await;
    reopen_keeps_everything(backend).await;
    users_are_created_once_and_changed(backend).await;
    sessions_are_saved_and_revoked(backend).await;
    lookups_by_host_and_id(backend).await;
    search_filters(backend).await;
    blobs_commit_with_their_batch(backend).await;
    rejects_are_idempotent_and_paged(backend).await;
    hosts_summarise_servers(backend).await;
    audit_is_appended_and_paged(backend).await;
    cells_by_hour_and_day(backend).await;
    queue_snapshots_replace_the_current_queue(backend).await;
    queue_search_filters_and_pages(backend).await;
    queued_messages_carry_their_last_deferral(backend).await;
    queue_health_per_host(backend).await;
    queue_history_over_a_range(backend).await;
    queue_jobs_and_results(backend).await;
    queue_retention_drops_old_history_and_jobs(backend).await;
    top_recipients_rank_final_addresses(backend).await;
    live_feed_returns_each_new_row_once(backend).await;
    login_marks_are_read_newest_first_by_key(backend).await;
}

async fn fresh(backend: &dyn Backend) -> (Arc<dyn Store>, String) {
    backend
        .create()
        .await
        .expect("backend creates an empty store")
}

fn batch_of(lifecycles: &[Lifecycle]) -> Batch {
    let mut records = Vec::new();
    for (i, lc) in lifecycles.iter().enumerate() {
        records.extend(records_of(lc, i as u64 * 1000));
    }
    Batch {
        records,
        lifecycles: lifecycles.to_vec(),
        rejects: vec![
            reject(
                "mx1.example.org",
                10,
                at(5),
                "203.0.113.9",
                ReasonClass::UnknownRecipient,
            ),
            reject(
                "mx1.example.org",
                20,
                at(6),
                "203.0.113.9",
                ReasonClass::Greylisting,
            ),
            reject(
                "mx2.example.org",
                30,
                at(24 * 60 + 7),
                "203.0.113.77",
                ReasonClass::PolicyBlocklist,
            ),
        ],
        blobs: vec![Blob {
            name: "checkpoint/mx1/main".into(),
            data: b"offset=1234".to_vec(),
        }],
    }
}

fn in_memory(
    lifecycles: &[Lifecycle],
    rejects: &[exim_pilot_schema::RejectRecord],
    options: &ReportOptions,
) -> Report {
    let mut b = ReportBuilder::new(options.clone());
    lifecycles.iter().for_each(|l| b.add_lifecycle(l));
    rejects.iter().for_each(|r| b.add_reject(r));
    b.finish()
}

async fn all_ids(store: &dyn Store, filter: &MessageFilter) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut page = PageRequest {
        first: 7,
        after: None,
    };
    loop {
        let p = store.search(filter, &page).await.expect("search");
        for lc in &p.items {
            assert!(
                out.insert(format!("{}/{}", lc.host, lc.id)),
                "search returned {}/{} twice",
                lc.host,
                lc.id
            );
        }
        if !p.has_next_page {
            return out;
        }
        page.after = p.end_cursor;
    }
}

fn keys(lcs: &[&Lifecycle]) -> BTreeSet<String> {
    lcs.iter()
        .map(|lc| format!("{}/{}", lc.host, lc.id))
        .collect()
}

/// Committing the same batch twice changes nothing the second time.
pub async fn idempotent_batch(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let lcs = varied();
    let batch = batch_of(&lcs);
    let first = store
        .commit_batch(batch.clone())
        .await
        .expect("first commit");
    assert_eq!(first.lifecycles_added, lcs.len() as u64);
    assert_eq!(first.records_added, batch.records.len() as u64);
    assert_eq!(first.rejects_added, 3);
    let report = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    let hosts = store.hosts().await.expect("hosts");

    let second = store
        .commit_batch(batch.clone())
        .await
        .expect("second commit");
    assert_eq!(second.records_added, 0, "records stored twice");
    assert_eq!(
        second.lifecycles_added + second.lifecycles_updated,
        0,
        "lifecycles rewritten"
    );
    assert_eq!(second.rejects_added, 0, "rejects stored twice");
    assert_eq!(
        store
            .report(&ReportOptions::default())
            .await
            .expect("report"),
        report
    );
    assert_eq!(store.hosts().await.expect("hosts"), hosts);
    let lines = store
        .search_lines(&LineQuery {
            text: lcs[0].id.to_string(),
            limit: 100,
            ..LineQuery::default()
        })
        .await
        .expect("search lines");
    assert_eq!(
        lines.len(),
        records_of(&lcs[0], 0).len(),
        "raw lines doubled"
    );
    assert_eq!(
        all_ids(store.as_ref(), &MessageFilter::default())
            .await
            .len(),
        lcs.len()
    );
}

/// A deferred message that is later delivered moves from deferred to
/// delivered in the rollups.
pub async fn lifecycle_update_moves_rollups(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let lc = deferred("mx1.example.org", 1, at(0), "erin@example.net");
    store
        .commit_batch(Batch {
            lifecycles: vec![lc.clone()],
            ..Batch::default()
        })
        .await
        .expect("commit deferred");
    let before = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    assert_eq!(before.totals.still_deferred, 1);
    assert_eq!(before.totals.delivered, 0);

    let later = now_delivered(&lc, at(24 * 60));
    let s = store
        .commit_batch(Batch {
            lifecycles: vec![later.clone()],
            ..Batch::default()
        })
        .await
        .expect("commit delivered");
    assert_eq!(s.lifecycles_updated, 1);
    let after = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    let t = &after.totals;
    assert_eq!(
        (t.messages, t.addresses),
        (1, 1),
        "message counted twice after update"
    );
    assert_eq!(t.still_deferred, 0, "old deferral not subtracted");
    assert_eq!(t.delivered, 1);
    assert_eq!(
        t.deferred, 1,
        "an address that was deferred stays counted as deferred"
    );
    assert_eq!(after.messages_by_state.completed, 1);
    assert_eq!(after.messages_by_state.in_flight, 0);
    assert_eq!(
        after,
        in_memory(std::slice::from_ref(&later), &[], &ReportOptions::default())
    );
    let stored = store
        .lifecycle(&later.host, later.id)
        .await
        .expect("lookup");
    assert_eq!(stored.as_ref(), Some(&later));
}

/// The store's report equals the in-memory report of the same lifecycles
/// and rejections, for several ranges and filters.
pub async fn report_matches_in_memory(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let mut lcs = varied();
    let batch = batch_of(&lcs);
    let rejects = batch.rejects.clone();

    // In three commits, with some lifecycles updated in the last one.
    let third = lcs.len() / 3;
    store
        .commit_batch(Batch {
            lifecycles: lcs[..third].to_vec(),
            ..batch.clone()
        })
        .await
        .expect("commit 1");
    store
        .commit_batch(Batch {
            lifecycles: lcs[third..].to_vec(),
            ..Batch::default()
        })
        .await
        .expect("commit 2");
    let updated: Vec<Lifecycle> = lcs
        .iter()
        .filter(|l| l.recipients.iter().any(|r| r.outcome == Outcome::Deferred))
        .take(3)
        .map(|l| now_delivered(l, l.received_at.unwrap_or_else(base) + Duration::hours(30)))
        .collect();
    for u in &updated {
        if let Some(slot) = lcs.iter_mut().find(|l| l.host == u.host && l.id == u.id) {
            *slot = u.clone();
        }
    }
    store
        .commit_batch(Batch {
            lifecycles: updated,
            ..Batch::default()
        })
        .await
        .expect("commit 3");

    let cases = [
        ReportOptions::default(),
        ReportOptions {
            host: Some("mx2.example.org".into()),
            ..ReportOptions::default()
        },
        // Partial days at both ends: day cells inside, hour cells at the edges.
        ReportOptions {
            since: Some(at(-4 * 60 - 30)),
            until: Some(at(2 * 24 * 60 + 3 * 60 + 10)),
            ..ReportOptions::default()
        },
        // Within one day.
        ReportOptions {
            since: Some(at(60)),
            until: Some(at(6 * 60)),
            host: Some("mx1.example.org".into()),
            ..ReportOptions::default()
        },
        ReportOptions {
            domain: Some("example.net".into()),
            ..ReportOptions::default()
        },
        ReportOptions {
            top: 2,
            ..ReportOptions::default()
        },
    ];
    for options in &cases {
        let stored = store.report(options).await.expect("report");
        let expected = in_memory(&lcs, &rejects, options);
        assert_eq!(stored, expected, "report differs for {options:?}");
    }
    let all = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    assert_eq!(all.totals.messages, lcs.len() as i64);
    assert_eq!(all.totals.rejected, 3);
    assert!(all.totals.delivered > 0 && all.totals.bounced > 0 && all.totals.deferred > 0);
}

/// Full-text search finds raw lines by words, addresses and ids, and
/// honours the host and log filters.
pub async fn full_text_finds_raw_lines(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let lcs = varied();
    store.commit_batch(batch_of(&lcs)).await.expect("commit");
    let mut reject_line = record(
        "mx1.example.org",
        5,
        at(3),
        None,
        "H=(bad.example) [203.0.113.5] rejected RCPT <x@example.net>: relay not permitted",
    );
    reject_line.origin.log = LogFile::Reject;
    reject_line.origin.file_id = 999;
    reject_line.event_kind = "reject".into();
    store
        .commit_batch(Batch {
            records: vec![reject_line.clone()],
            ..Batch::default()
        })
        .await
        .expect("commit reject line");

    let find = |text: &str, log: Option<LogFile>, host: Option<&str>| LineQuery {
        text: text.to_string(),
        log,
        host: host.map(str::to_string),
        limit: 0,
        ..LineQuery::default()
    };
    let hits = store
        .search_lines(&find("relay permitted", None, None))
        .await
        .expect("fts");
    assert_eq!(hits, vec![reject_line.clone()]);
    let hits = store
        .search_lines(&find("relay", Some(LogFile::Main), None))
        .await
        .expect("fts");
    assert!(hits.is_empty(), "log filter ignored");

    let target = &lcs[7];
    let address = &target.recipients[0].address;
    let hits = store
        .search_lines(&find(address, None, None))
        .await
        .expect("fts");
    assert!(!hits.is_empty(), "address {address} not found");
    assert!(hits.iter().all(|h| h.text().contains(address.as_str())));
    let hits = store
        .search_lines(&find(&target.id.to_string(), None, Some(&target.host)))
        .await
        .expect("fts");
    assert_eq!(hits.len(), records_of(target, 0).len());
    let hits = store
        .search_lines(&find(&target.id.to_string(), None, Some("no.such.host")))
        .await
        .expect("fts");
    assert!(hits.is_empty(), "host filter ignored");
    assert!(store.search_lines(&find("  ", None, None)).await.is_err());
}

/// Retention drops what is older than the policy and keeps the rest;
/// day rollups outlive the lifecycles they summarise.
pub async fn retention_drops_old_keeps_new(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let now = at(0);
    let old_time = now - Duration::days(200);
    let old = delivered("mx1.example.org", 1, old_time, "old@example.net");
    let new = delivered(
        "mx1.example.org",
        2,
        now - Duration::days(1),
        "new@example.net",
    );
    let mut records = records_of(&old, 0);
    records.extend(records_of(&new, 10_000));
    store
        .commit_batch(Batch {
            records,
            lifecycles: vec![old.clone(), new.clone()],
            rejects: vec![
                reject(
                    "mx1.example.org",
                    1,
                    old_time,
                    "203.0.113.1",
                    ReasonClass::Other,
                ),
                reject(
                    "mx1.example.org",
                    2,
                    now - Duration::days(1),
                    "203.0.113.2",
                    ReasonClass::Other,
                ),
            ],
            blobs: vec![],
        })
        .await
        .expect("commit");
    for (days, action) in [(400, "ancient"), (10, "recent")] {
        store
            .append_audit(&AuditEntry {
                at: now - Duration::days(days),
                actor: "admin".into(),
                role: Some("admin".into()),
                client_ip: None,
                action: action.into(),
                target: None,
                params: None,
                outcome: "ok".into(),
            })
            .await
            .expect("audit");
    }

    let summary = store
        .apply_retention(&Retention::default(), now)
        .await
        .expect("retention");
    assert_eq!(summary.lifecycles, 1);
    assert_eq!(summary.raw_records, records_of(&old, 0).len() as u64);
    assert_eq!(summary.rejects, 1);
    assert_eq!(summary.audit, 1);
    assert!(summary.rollup_cells > 0, "old hour cells kept");

    assert_eq!(
        store.lifecycle(&old.host, old.id).await.expect("lookup"),
        None
    );
    assert_eq!(
        store.lifecycle(&new.host, new.id).await.expect("lookup"),
        Some(new.clone())
    );
    let lines = |id: String| LineQuery {
        text: id,
        ..LineQuery::default()
    };
    assert!(store
        .search_lines(&lines(old.id.to_string()))
        .await
        .expect("fts")
        .is_empty());
    assert!(!store
        .search_lines(&lines(new.id.to_string()))
        .await
        .expect("fts")
        .is_empty());
    assert!(store
        .message_records(&old.host, old.id)
        .await
        .expect("records")
        .is_empty());
    let rejects = store
        .rejects(&RejectFilter::default(), &PageRequest::default())
        .await
        .expect("rejects");
    assert_eq!(rejects.items.len(), 1);
    let audit = store
        .audit_log(&AuditFilter::default(), &PageRequest::default())
        .await
        .expect("audit");
    assert_eq!(audit.items.len(), 1);
    assert_eq!(audit.items[0].action, "recent");

    // The old day is still reported from its day cells.
    let day_start = old_time - Duration::hours(10);
    let old_day = store
        .report(&ReportOptions {
            since: Some(day_start - Duration::days(1)),
            until: Some(day_start + Duration::days(2)),
            ..ReportOptions::default()
        })
        .await
        .expect("report");
    assert_eq!(
        old_day.totals.delivered, 1,
        "day rollups dropped with the details"
    );
    // Its hour cells are gone, but its day is in the per-day series and in
    // the hours the report covers, as the totals are.
    assert!(old_day.per_hour.is_empty(), "{:?}", old_day.per_hour);
    let midnight = |t: DateTime<Utc>| {
        t.date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
    };
    let days: Vec<_> = old_day
        .per_day
        .iter()
        .map(|d| (d.start, d.numbers.messages, d.numbers.delivered))
        .collect();
    assert_eq!(days, [(midnight(old_time), 1, 1)]);
    assert_eq!(old_day.first_hour, Some(midnight(old_time)));
    assert_eq!(
        old_day.last_hour,
        Some(midnight(old_time) + Duration::hours(23))
    );

    let again = store
        .apply_retention(&Retention::default(), now)
        .await
        .expect("retention");
    assert_eq!(again, RetentionSummary::default());
}

/// Cursor pagination returns every message exactly once, with and without
/// filters, while the newest come first.
pub async fn pagination_returns_each_message_once(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let mut lcs = varied();
    // Several messages in the same millisecond on both hosts.
    for n in 100..112 {
        lcs.push(delivered(
            if n % 2 == 0 {
                "mx1.example.org"
            } else {
                "mx2.example.org"
            },
            n,
            at(77),
            "same@example.net",
        ));
    }
    store
        .commit_batch(Batch {
            lifecycles: lcs.clone(),
            ..Batch::default()
        })
        .await
        .expect("commit");
    let all = all_ids(store.as_ref(), &MessageFilter::default()).await;
    assert_eq!(all, keys(&lcs.iter().collect::<Vec<_>>()));

    let filter = MessageFilter {
        host: Some("mx2.example.org".into()),
        ..MessageFilter::default()
    };
    let expected: Vec<&Lifecycle> = lcs.iter().filter(|l| l.host == "mx2.example.org").collect();
    assert_eq!(all_ids(store.as_ref(), &filter).await, keys(&expected));

    let page = store
        .search(
            &MessageFilter::default(),
            &PageRequest {
                first: 5,
                after: None,
            },
        )
        .await
        .expect("page");
    let times: Vec<_> = page.items.iter().map(|l| l.received_at).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "not newest first");
    assert!(store
        .search(
            &MessageFilter::default(),
            &PageRequest {
                first: 5,
                after: Some("nonsense".into())
            }
        )
        .await
        .is_err());
}

/// Closing and reopening the store keeps everything.
pub async fn reopen_keeps_everything(backend: &dyn Backend) {
    let (store, name) = fresh(backend).await;
    let lcs = varied();
    store.commit_batch(batch_of(&lcs)).await.expect("commit");
    let report = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    let hosts = store.hosts().await.expect("hosts");
    drop(store);

    let store = backend.reopen(&name).await.expect("reopen");
    assert_eq!(
        store
            .report(&ReportOptions::default())
            .await
            .expect("report"),
        report
    );
    assert_eq!(store.hosts().await.expect("hosts"), hosts);
    assert_eq!(
        store.load_blob("checkpoint/mx1/main").await.expect("blob"),
        Some(b"offset=1234".to_vec())
    );
    for lc in &lcs {
        assert_eq!(
            store
                .lifecycle(&lc.host, lc.id)
                .await
                .expect("lookup")
                .as_ref(),
            Some(lc)
        );
    }
    let again = store
        .commit_batch(batch_of(&lcs))
        .await
        .expect("commit again");
    assert_eq!(
        again.records_added + again.lifecycles_added + again.lifecycles_updated,
        0
    );
}

/// Lifecycles are found by (host, id) and by id alone; a message's raw
/// records come back in log order.
pub async fn lookups_by_host_and_id(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let a = delivered("mx1.example.org", 5, at(0), "x@example.net");
    let mut b = delivered("mx2.example.org", 5, at(3), "y@example.net");
    b.size = Some(99);
    let mut records = records_of(&a, 0);
    records.reverse();
    store
        .commit_batch(Batch {
            records: records.clone(),
            lifecycles: vec![a.clone(), b.clone()],
            ..Batch::default()
        })
        .await
        .expect("commit");
    assert_eq!(
        store
            .lifecycle("mx1.example.org", a.id)
            .await
            .expect("lookup"),
        Some(a.clone())
    );
    assert_eq!(
        store
            .lifecycle("mx3.example.org", a.id)
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        store.lifecycles_by_id(a.id).await.expect("by id"),
        vec![a.clone(), b]
    );
    let got = store.message_records(&a.host, a.id).await.expect("records");
    records.reverse();
    assert_eq!(got, records, "records not in log order");
    assert!(store
        .message_records("mx2.example.org", a.id)
        .await
        .expect("records")
        .is_empty());
}

/// Each search filter selects exactly the matching lifecycles.
pub async fn search_filters(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let lcs = varied();
    store
        .commit_batch(Batch {
            lifecycles: lcs.clone(),
            ..Batch::default()
        })
        .await
        .expect("commit");
    let check = |name: &str, filter: MessageFilter, pred: &dyn Fn(&Lifecycle) -> bool| {
        let expected: Vec<&Lifecycle> = lcs.iter().filter(|l| pred(l)).collect();
        assert!(!expected.is_empty(), "fixture has nothing for {name}");
        (name.to_string(), filter, keys(&expected))
    };
    let to = lcs[4].recipients[0].address.clone();
    let cases = vec![
        check(
            "sender",
            MessageFilter {
                sender: Some("CAROL@example.com".into()),
                ..Default::default()
            },
            &|l| l.sender.as_deref() == Some("carol@example.com"),
        ),
        check(
            "null sender",
            MessageFilter {
                sender: Some(String::new()),
                ..Default::default()
            },
            &|l| l.sender.as_deref() == Some(""),
        ),
        check(
            "sender domain",
            MessageFilter {
                sender_domain: Some("example.org".into()),
                ..Default::default()
            },
            &|l| {
                l.sender
                    .as_deref()
                    .is_some_and(|s| s.ends_with("@example.org"))
            },
        ),
        check(
            "recipient",
            MessageFilter {
                recipient: Some(to.to_uppercase()),
                ..Default::default()
            },
            &|l| l.recipients.iter().any(|r| r.address == to),
        ),
        check(
            "address",
            MessageFilter {
                address: Some("bob@example.org".into()),
                ..Default::default()
            },
            &|l| l.sender.as_deref() == Some("bob@example.org"),
        ),
        check(
            "domain",
            MessageFilter {
                domain: Some("example.com".into()),
                ..Default::default()
            },
            &|l| {
                l.recipients
                    .iter()
                    .any(|r| r.address.ends_with("@example.com"))
            },
        ),
        check(
            "state",
            MessageFilter {
                state: Some(MessageState::InFlight),
                ..Default::default()
            },
            &|l| l.state == MessageState::InFlight,
        ),
        check(
            "outcome",
            MessageFilter {
                outcome: Some(Outcome::Bounced),
                ..Default::default()
            },
            &|l| l.recipients.iter().any(|r| r.outcome == Outcome::Bounced),
        ),
        check(
            "reason",
            MessageFilter {
                reason: Some(ReasonClass::Timeout),
                ..Default::default()
            },
            &|l| {
                l.recipients.iter().any(|r| {
                    r.history
                        .iter()
                        .any(|a| a.reason == Some(ReasonClass::Timeout))
                })
            },
        ),
        check(
            "subject",
            MessageFilter {
                subject: Some("number 1".into()),
                ..Default::default()
            },
            &|l| l.subject.as_deref().is_some_and(|s| s.contains("number 1")),
        ),
        check(
            "message-id",
            MessageFilter {
                message_id_header: Some("fixture-9@example.org".into()),
                ..Default::default()
            },
            &|l| l.message_id_header.as_deref() == Some("<fixture-9@example.org>"),
        ),
        check(
            "client ip",
            MessageFilter {
                client_ip: Some("198.51.100.4".into()),
                ..Default::default()
            },
            &|l| l.client.as_ref().and_then(|c| c.ip.as_deref()) == Some("198.51.100.4"),
        ),
        check(
            "time range",
            MessageFilter {
                since: Some(at(24 * 60)),
                until: Some(at(2 * 24 * 60)),
                ..Default::default()
            },
            &|l| {
                l.received_at
                    .is_some_and(|t| t >= at(24 * 60) && t < at(2 * 24 * 60))
            },
        ),
        check(
            "combined",
            MessageFilter {
                host: Some("mx1.example.org".into()),
                domain: Some("example.net".into()),
                since: Some(at(24 * 60)),
                ..Default::default()
            },
            &|l| {
                l.host == "mx1.example.org"
                    && l.received_at.is_some_and(|t| t >= at(24 * 60))
                    && l.recipients
                        .iter()
                        .any(|r| r.address.ends_with("@example.net"))
            },
        ),
    ];
    for (name, filter, expected) in cases {
        assert_eq!(
            all_ids(store.as_ref(), &filter).await,
            expected,
            "filter {name}"
        );
    }

    // A subject is searched for as typed: `_` and `%` are no wildcards.
    for subject in ["number_1", "Fixture%1", "%"] {
        let filter = MessageFilter {
            subject: Some(subject.into()),
            ..Default::default()
        };
        assert!(
            all_ids(store.as_ref(), &filter).await.is_empty(),
            "subject {subject:?}"
        );
    }
}

/// Blobs commit with their batch, replace older values and read back.
pub async fn blobs_commit_with_their_batch(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    assert_eq!(store.load_blob("state").await.expect("load"), None);
    store.save_blob("state", b"one").await.expect("save");
    store
        .commit_batch(Batch {
            lifecycles: vec![delivered("mx1.example.org", 1, at(0), "a@example.net")],
            blobs: vec![Blob {
                name: "state".into(),
                data: b"two".to_vec(),
            }],
            ..Batch::default()
        })
        .await
        .expect("commit");
    assert_eq!(
        store.load_blob("state").await.expect("load"),
        Some(b"two".to_vec())
    );
}

/// Rejections are stored once per origin and paged newest first.
pub async fn rejects_are_idempotent_and_paged(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let rejects: Vec<_> = (0..23u64)
        .map(|i| {
            let class = if i % 3 == 0 {
                ReasonClass::Greylisting
            } else {
                ReasonClass::UnknownRecipient
            };
            reject(
                "mx1.example.org",
                i * 10,
                at(i as i64),
                &format!("203.0.113.{}", i % 4),
                class,
            )
        })
        .collect();
    let batch = Batch {
        rejects: rejects.clone(),
        ..Batch::default()
    };
    assert_eq!(
        store
            .commit_batch(batch.clone())
            .await
            .expect("commit")
            .rejects_added,
        23
    );
    assert_eq!(
        store
            .commit_batch(batch)
            .await
            .expect("commit")
            .rejects_added,
        0
    );

    let mut seen = Vec::new();
    let mut page = PageRequest {
        first: 5,
        after: None,
    };
    loop {
        let p = store
            .rejects(&RejectFilter::default(), &page)
            .await
            .expect("rejects");
        seen.extend(p.items);
        if !p.has_next_page {
            break;
        }
        page.after = p.end_cursor;
    }
    let mut expected = rejects.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let grey = store
        .rejects(
            &RejectFilter {
                class: Some(ReasonClass::Greylisting),
                client_ip: Some("203.0.113.0".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("rejects");
    let want: Vec<_> = rejects
        .iter()
        .rev()
        .filter(|r| {
            r.class == ReasonClass::Greylisting && r.client_ip.as_deref() == Some("203.0.113.0")
        })
        .cloned()
        .collect();
    assert_eq!(grey.items, want);
    let report = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    assert_eq!(report.rejects.total, 23);
    assert_eq!(report.rejects.temporary, 8);
    assert_eq!(report.rejects.by_client_ip.len(), 4);
}

/// Per-host summaries count what each server logged.
pub async fn hosts_summarise_servers(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let lcs = varied();
    let batch = batch_of(&lcs);
    store.commit_batch(batch.clone()).await.expect("commit");
    let hosts = store.hosts().await.expect("hosts");
    let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, vec!["mx1.example.org", "mx2.example.org"]);
    for h in &hosts {
        let records = batch
            .records
            .iter()
            .filter(|r| r.origin.host == h.host)
            .count() as i64;
        let messages = lcs.iter().filter(|l| l.host == h.host).count() as i64;
        let rejects = batch
            .rejects
            .iter()
            .filter(|r| r.origin.host == h.host)
            .count() as i64;
        assert_eq!(
            (h.records, h.messages, h.rejects),
            (records, messages, rejects),
            "{}",
            h.host
        );
        let last = batch
            .records
            .iter()
            .filter(|r| r.origin.host == h.host)
            .filter_map(|r| r.at)
            .max();
        assert!(h.last_seen >= last, "last_seen of {} too early", h.host);
        assert!(h.first_seen.is_some() && h.last_read_at_ms.is_some());
    }
}

/// Audit entries are appended and come back newest first.
pub async fn audit_is_appended_and_paged(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    for i in 0..12 {
        store
            .append_audit(&AuditEntry {
                at: at(i),
                actor: if i % 2 == 0 {
                    "alice".into()
                } else {
                    "bob".into()
                },
                role: Some("operator".into()),
                client_ip: Some("192.0.2.10".into()),
                action: if i % 3 == 0 {
                    "login".into()
                } else {
                    "queue_remove".into()
                },
                target: Some(format!("1x000{}-000000-00", i % 10)),
                params: Some(serde_json::json!({ "n": i })),
                outcome: "ok".into(),
            })
            .await
            .expect("append");
    }
    let mut seen = Vec::new();
    let mut page = PageRequest {
        first: 5,
        after: None,
    };
    loop {
        let p = store
            .audit_log(&AuditFilter::default(), &page)
            .await
            .expect("audit");
        seen.extend(p.items);
        if !p.has_next_page {
            break;
        }
        page.after = p.end_cursor;
    }
    let times: Vec<_> = seen.iter().map(|e| e.at).collect();
    assert_eq!(times, (0..12).rev().map(at).collect::<Vec<_>>());
    assert_eq!(seen[0].params, Some(serde_json::json!({ "n": 11 })));
    let logins = store
        .audit_log(
            &AuditFilter {
                action: Some("login".into()),
                actor: Some("alice".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("audit");
    assert_eq!(logins.items.len(), 2);
}

/// Raw cells per hour, per day and over the whole range sum to the
/// report's totals; a whole range's cells are its day cells summed.
pub async fn cells_by_hour_and_day(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let lcs = varied();
    store.commit_batch(batch_of(&lcs)).await.expect("commit");
    let report = store
        .report(&ReportOptions::default())
        .await
        .expect("report");
    for bucket in [Bucket::Hour, Bucket::Day, Bucket::Range] {
        let cells = store
            .cells(&CellQuery {
                dims: vec![Dimension::Total, Dimension::Domain],
                bucket,
                ..CellQuery::default()
            })
            .await
            .expect("cells");
        let sum =
            |dim: Dimension, f: &dyn Fn(&exim_pilot_schema::report::Counters) -> i64| -> i64 {
                cells
                    .cells
                    .iter()
                    .filter(|(k, _)| k.dim == dim)
                    .map(|(_, c)| f(&c.counters))
                    .sum()
            };
        assert_eq!(
            sum(Dimension::Total, &|c| c.messages),
            report.totals.messages,
            "{bucket:?}"
        );
        assert_eq!(
            sum(Dimension::Domain, &|c| c.addresses),
            report.totals.addresses,
            "{bucket:?}"
        );
        assert!(cells
            .cells
            .keys()
            .all(|k| matches!(k.dim, Dimension::Total | Dimension::Domain)));
        let buckets: HashSet<i64> = cells.cells.keys().map(|k| k.hour).collect();
        let expected: HashSet<i64> = lcs
            .iter()
            .filter_map(|l| l.received_at)
            .map(|t| match bucket {
                Bucket::Hour => hour_of(t),
                Bucket::Day => hour_of(t).div_euclid(24),
                Bucket::Range => 0,
            })
            .collect();
        assert_eq!(buckets, expected, "{bucket:?} buckets");
    }

    // From a start: keyed by its day, the day cells from it on summed.
    let since = lcs
        .iter()
        .filter_map(|l| l.received_at)
        .min()
        .expect("a time");
    let query = |bucket| CellQuery {
        since: Some(since),
        dims: vec![Dimension::Domain],
        bucket,
        ..CellQuery::default()
    };
    let days = store.cells(&query(Bucket::Day)).await.expect("cells");
    let mut summed: HashMap<(String, String), exim_pilot_schema::report::Counters> = HashMap::new();
    for (k, c) in &days.cells {
        summed
            .entry((k.host.clone(), k.key.clone()))
            .or_default()
            .add(&c.counters);
    }
    let whole = store.cells(&query(Bucket::Range)).await.expect("cells");
    let first_day = hour_of(since).div_euclid(24);
    assert!(whole.cells.keys().all(|k| k.hour == first_day));
    let got: HashMap<(String, String), exim_pilot_schema::report::Counters> = whole
        .cells
        .iter()
        .map(|(k, c)| ((k.host.clone(), k.key.clone()), c.counters))
        .collect();
    assert_eq!(got, summed);
    let one_host = store
        .cells(&CellQuery {
            host: Some("mx1.example.org".into()),
            ..CellQuery::default()
        })
        .await
        .expect("cells");
    assert!(one_host.cells.keys().all(|k| k.host == "mx1.example.org"));
}

fn user(name: &str, role: Role) -> User {
    User {
        name: name.to_string(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt-of-{name}$hash"),
        disabled: false,
        hosts: Vec::new(),
        created_at: at(0),
        updated_at: at(0),
    }
}

/// A user name is taken once; changes replace the stored fields, and
/// every process sees the latest.
pub async fn users_are_created_once_and_changed(backend: &dyn Backend) {
    let (store, name) = fresh(backend).await;
    assert!(store.users().await.expect("users").is_empty());
    store
        .create_user(&user("zoe", Role::Viewer))
        .await
        .expect("create zoe");
    store
        .create_user(&user("adam", Role::Admin))
        .await
        .expect("create adam");
    let again = store.create_user(&user("zoe", Role::Admin)).await;
    assert!(
        matches!(again, Err(crate::StoreError::Exists { .. })),
        "a second user of the same name must be refused: {again:?}"
    );
    assert_eq!(
        store.user("zoe").await.expect("user"),
        Some(user("zoe", Role::Viewer)),
        "the refused creation changed the first user"
    );

    let mut changed = user("zoe", Role::Operator);
    changed.disabled = true;
    changed.hosts = vec!["mx1".into(), "mx2".into()];
    changed.password_hash = "$argon2id$new".into();
    changed.updated_at = at(5);
    store.update_user(&changed).await.expect("update zoe");
    let missing = store.update_user(&user("nobody", Role::Viewer)).await;
    assert!(
        matches!(missing, Err(crate::StoreError::NotFound { .. })),
        "changing a user that does not exist must fail: {missing:?}"
    );
    assert_eq!(store.user("nobody").await.expect("user"), None);

    let store = backend.reopen(&name).await.expect("reopen");
    let all = store.users().await.expect("users");
    assert_eq!(all, vec![user("adam", Role::Admin), changed]);
}

fn session(id: &str, user: &str, expires: i64) -> Session {
    Session {
        id: id.to_string(),
        user: user.to_string(),
        token_hash: format!("hash-{id}"),
        created_at: at(0),
        expires_at: at(expires),
        revoked_at: None,
        client_ip: Some("192.0.2.7".into()),
    }
}

/// Sessions are saved, replaced by their newer state, and revoked per
/// user without touching other users' or already ended ones.
pub async fn sessions_are_saved_and_revoked(backend: &dyn Backend) {
    let (store, name) = fresh(backend).await;
    for s in [
        session("s1", "alice", 600),
        session("s2", "alice", 600),
        session("s3", "bob", 600),
        session("old", "alice", 10),
    ] {
        store.save_session(&s).await.expect("save");
    }
    let mut refreshed = session("s1", "alice", 600);
    refreshed.token_hash = "hash-s1-second".into();
    store.save_session(&refreshed).await.expect("save again");
    assert_eq!(store.session("s1").await.expect("session"), Some(refreshed));
    assert_eq!(store.session("nope").await.expect("session"), None);

    let revoked = store
        .revoke_sessions("alice", at(60))
        .await
        .expect("revoke");
    assert_eq!(revoked, 2, "alice's two live sessions are revoked");
    let store = backend.reopen(&name).await.expect("reopen");
    for id in ["s1", "s2"] {
        let s = store.session(id).await.expect("session").expect(id);
        assert_eq!(s.revoked_at, Some(at(60)), "{id}");
        assert!(!s.is_live(at(61)));
    }
    assert_eq!(
        store
            .session("s1")
            .await
            .expect("session")
            .map(|s| s.token_hash),
        Some("hash-s1-second".to_string())
    );
    let bob = store.session("s3").await.expect("session").expect("s3");
    assert!(bob.is_live(at(61)), "bob's session is untouched");
    let old = store.session("old").await.expect("session").expect("old");
    assert_eq!(old.revoked_at, None, "an expired session is left as it was");
    assert_eq!(
        store
            .revoke_sessions("alice", at(70))
            .await
            .expect("revoke"),
        0
    );
}

/// The ranking [`Store::top_recipients`] must give, worked out from the
/// lifecycles themselves.
fn top_recipients_in_memory(lcs: &[Lifecycle], q: &RecipientQuery) -> Vec<RecipientCount> {
    let mut by_address: BTreeMap<String, (BTreeSet<String>, RecipientCount)> = BTreeMap::new();
    for lc in lcs {
        let t = cohort_time(lc).expect("fixtures have times");
        if q.since.is_some_and(|s| t < s)
            || q.until.is_some_and(|u| t >= u)
            || q.host.as_ref().is_some_and(|h| *h != lc.host)
        {
            continue;
        }
        for r in &lc.recipients {
            if q.domain_key().is_some_and(|d| recipient_domain(r) != d) {
                continue;
            }
            let address = r.address.to_ascii_lowercase();
            let (ids, count) = by_address.entry(address.clone()).or_insert_with(|| {
                let count = RecipientCount {
                    address,
                    messages: 0,
                    delivered: 0,
                    deferred: 0,
                    still_deferred: 0,
                    bounced: 0,
                    last_attempt_at: None,
                };
                (BTreeSet::new(), count)
            });
            ids.insert(format!("{}/{}", lc.host, lc.id));
            count.messages = ids.len() as i64;
            let deferred_once = r.history.iter().any(|a| a.result == AttemptResult::Defer);
            count.delivered += (r.outcome == Outcome::Delivered) as i64;
            count.deferred += (r.outcome == Outcome::Deferred || deferred_once) as i64;
            count.still_deferred += (r.outcome == Outcome::Deferred) as i64;
            count.bounced += (r.outcome == Outcome::Bounced) as i64;
            let last = r.history.iter().map(|a| a.at).max();
            count.last_attempt_at = count.last_attempt_at.max(last);
        }
    }
    let mut out: Vec<RecipientCount> = by_address.into_values().map(|(_, c)| c).collect();
    out.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.address.cmp(&b.address)));
    out.truncate(q.limit());
    out
}

/// Final addresses ranked by their messages: counted without regard to
/// case, per server, domain and range, limited, and right again after a
/// lifecycle changes.
pub async fn top_recipients_rank_final_addresses(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let mut lcs = varied();

    // The same mailbox twice in one message (through two aliases), in
    // another case, one of them not attempted yet.
    let mut twice = delivered("mx1.example.org", 100, at(30), "Dave@Example.org");
    let mut pending = recipient("dave@example.org", Outcome::Pending, vec![]);
    pending.original = Some("team@example.org".into());
    twice.recipients.push(pending);
    twice.state = MessageState::InFlight;
    twice.in_flight = true;
    twice.completed_at = None;
    lcs.push(twice);
    let waiting = deferred("mx2.example.org", 101, at(60), "POSTMASTER@example.net");
    lcs.push(waiting.clone());
    store
        .commit_batch(Batch {
            lifecycles: lcs.clone(),
            ..Batch::default()
        })
        .await
        .expect("commit");

    let day = Duration::days(1);
    let queries = [
        RecipientQuery::default(),
        RecipientQuery {
            top: 3,
            ..RecipientQuery::default()
        },
        RecipientQuery {
            host: Some("mx2.example.org".into()),
            ..RecipientQuery::default()
        },
        RecipientQuery {
            domain: Some(" EXAMPLE.net".into()),
            ..RecipientQuery::default()
        },
        RecipientQuery {
            since: Some(base() + day),
            until: Some(base() + day * 3),
            ..RecipientQuery::default()
        },
        RecipientQuery {
            since: Some(base()),
            until: Some(base() + day),
            host: Some("mx1.example.org".into()),
            domain: Some("example.org".into()),
            top: 1000,
        },
        RecipientQuery {
            since: Some(base() + day * 30),
            ..RecipientQuery::default()
        },
    ];
    let check = |lcs: Vec<Lifecycle>, when: &'static str| {
        let store = Arc::clone(&store);
        let queries = queries.clone();
        async move {
            for q in &queries {
                let got = store.top_recipients(q).await.expect("top recipients");
                assert_eq!(got, top_recipients_in_memory(&lcs, q), "{when}: {q:?}");
            }
        }
    };
    check(lcs.clone(), "as written").await;

    let all = store
        .top_recipients(&RecipientQuery::default())
        .await
        .expect("top recipients");
    assert_eq!(all.len(), 20, "the default is the top twenty");
    let dave = all
        .iter()
        .find(|r| r.address == "dave@example.org")
        .expect("dave");
    assert_eq!(dave.messages, 9, "{dave:?}");
    assert_eq!(dave.delivered, 9, "{dave:?}");
    assert_eq!(&all[0], dave, "ties go by address");
    let postmaster = &all[1];
    assert_eq!(postmaster.address, "postmaster@example.net");
    assert_eq!((postmaster.messages, postmaster.still_deferred), (9, 1));

    // The deferred address is delivered later: counted once, delivered,
    // and deferred once.
    let later = now_delivered(&waiting, at(3 * 60));
    store
        .commit_batch(Batch {
            lifecycles: vec![later.clone()],
            ..Batch::default()
        })
        .await
        .expect("commit the delivery");
    let last = lcs.len() - 1;
    lcs[last] = later;
    check(lcs.clone(), "after an update").await;
    let top = store
        .top_recipients(&RecipientQuery {
            domain: Some("example.net".into()),
            top: 1,
            ..RecipientQuery::default()
        })
        .await
        .expect("top recipients");
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].address, "postmaster@example.net");
    assert_eq!(
        (top[0].messages, top[0].still_deferred, top[0].deferred),
        (9, 0, 1)
    );
}
