//! Behaviour of the queue part of a store: snapshots, current queues,
//! health, history, jobs and their retention.

use std::collections::BTreeSet;

use chrono::Duration;

use exim_pilot_schema::queue::{QueueActionResult, QueueActionStatus, QueueJob};
use exim_pilot_schema::{QueueAction, QueuedMessage, ReasonClass};

use super::fixtures::*;
use super::{fresh, Backend};
use crate::queue::*;
use crate::types::*;
use crate::Store;

const MX1: &str = "mx1.example.org";
const MX2: &str = "mx2.example.org";

/// Every entry of the current queues matching `filter`, a page of `per`
/// at a time, as "host/id" in the order returned.
async fn current(store: &dyn Store, filter: &QueueFilter, per: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut page = PageRequest {
        first: per,
        after: None,
    };
    loop {
        let p = store
            .queue_messages(filter, &page)
            .await
            .expect("queue search");
        out.extend(
            p.items
                .iter()
                .map(|e| format!("{}/{}", e.host, e.message.id)),
        );
        if !p.has_next_page {
            return out;
        }
        page.after = p.end_cursor;
    }
}

fn key(host: &str, n: u32) -> String {
    format!("{host}/{}", id(n))
}

fn keys(host: &str, ns: &[u32]) -> BTreeSet<String> {
    ns.iter().map(|n| key(host, *n)).collect()
}

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

async fn history(store: &dyn Store, host: &str) -> Vec<QueuePoint> {
    store
        .queue_history(&QueueHistoryQuery {
            host: Some(host.to_string()),
            ..QueueHistoryQuery::default()
        })
        .await
        .expect("history")
}

fn simple(n: u32, age: u64) -> QueuedMessage {
    queued(
        n,
        Some(age),
        Some(1000),
        "alice@example.org",
        &[("bob@example.net", false)],
        false,
    )
}

/// A snapshot's messages become the host's current queue, replacing the
/// previous snapshot's; its totals become history. Saving it twice changes
/// nothing, and a snapshot older than the current one only adds history.
pub async fn queue_snapshots_replace_the_current_queue(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let first = snapshot(
        MX1,
        at(0),
        vec![simple(1, 7200), simple(2, 60), simple(3, 30)],
    );
    store.save_queue_snapshot(&first).await.expect("save");
    store.save_queue_snapshot(&first).await.expect("save again");
    let all = QueueFilter::default();
    assert_eq!(set(current(&*store, &all, 50).await), keys(MX1, &[1, 2, 3]));
    assert_eq!(
        history(&*store, MX1).await.len(),
        1,
        "saved twice, kept once"
    );

    let newer = snapshot(MX1, at(10), vec![simple(2, 660), simple(4, 5)]);
    store.save_queue_snapshot(&newer).await.expect("save newer");
    let late = snapshot(MX1, at(5), vec![simple(1, 7500), simple(5, 1)]);
    store.save_queue_snapshot(&late).await.expect("save late");
    let other = snapshot(MX2, at(3), vec![simple(6, 100)]);
    store
        .save_queue_snapshot(&other)
        .await
        .expect("save other host");

    assert_eq!(
        set(current(&*store, &all, 50).await),
        &keys(MX1, &[2, 4]) | &keys(MX2, &[6]),
        "the newest snapshot of each host is its queue; a late one changes nothing"
    );
    let page = store
        .queue_messages(&all, &PageRequest::default())
        .await
        .expect("search");
    let two = page
        .items
        .iter()
        .find(|e| e.message.id == id(2))
        .expect("message 2");
    assert_eq!(
        two.message.age_secs,
        Some(660),
        "the newest snapshot's view"
    );
    assert_eq!(two.snapshot_at, at(10));
    let times: Vec<_> = history(&*store, MX1).await.iter().map(|p| p.at).collect();
    assert_eq!(
        times,
        vec![at(0), at(5), at(10)],
        "every snapshot is history"
    );

    // An empty queue empties the host's current queue.
    store
        .save_queue_snapshot(&snapshot(MX2, at(20), vec![]))
        .await
        .expect("save empty");
    let only_mx2 = QueueFilter {
        host: Some(MX2.into()),
        ..QueueFilter::default()
    };
    assert!(current(&*store, &only_mx2, 50).await.is_empty());
}

/// The messages the filter tests search: varied senders, recipients,
/// ages, sizes, states.
fn varied_queue() -> Vec<QueuedMessage> {
    vec![
        queued(
            1,
            Some(90_000),
            Some(2_000),
            "Alice@Example.org",
            &[("done@example.net", true), ("wait@example.com", false)],
            false,
        ),
        queued(
            2,
            Some(3_600),
            Some(50_000),
            "",
            &[("alice@example.org", false)],
            true,
        ),
        queued(
            3,
            Some(600),
            Some(10_000),
            "news@lists.example.com",
            &[("carol@example.net", false)],
            false,
        ),
        queued(
            4,
            None,
            None,
            "someone@example.net",
            &[("dave@example.org", false)],
            false,
        ),
        queued(
            5,
            Some(600),
            Some(500),
            "alice@example.org",
            &[("Erin@Example.NET", false), ("frank@example.net", false)],
            true,
        ),
        queued(
            6,
            Some(120),
            Some(800),
            "bob@example.org",
            &[("wait@example.com", true)],
            false,
        ),
    ]
}

/// Every filter of the queue search, alone, and pages in order.
pub async fn queue_search_filters_and_pages(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let mut more: Vec<QueuedMessage> = (10..25).map(|n| simple(n, 3_000 + n as u64)).collect();
    more.extend(varied_queue());
    store
        .save_queue_snapshot(&snapshot(MX1, at(0), more))
        .await
        .expect("save");
    store
        .save_queue_snapshot(&snapshot(MX2, at(0), varied_queue()))
        .await
        .expect("save");

    let mx1 = |f: QueueFilter| QueueFilter {
        host: Some(MX1.into()),
        ..f
    };
    let cases: Vec<(&str, QueueFilter, Vec<u32>)> = vec![
        (
            "sender text, any case",
            QueueFilter {
                sender: Some("ALICE@".into()),
                ..QueueFilter::default()
            },
            vec![1, 5],
        ),
        (
            "undelivered recipients by default",
            QueueFilter {
                recipient: Some("wait@".into()),
                ..QueueFilter::default()
            },
            vec![1],
        ),
        (
            "delivered recipients when asked",
            QueueFilter {
                recipient: Some("wait@example.com".into()),
                recipient_scope: RecipientScope::Delivered,
                ..QueueFilter::default()
            },
            vec![6],
        ),
        (
            "delivered recipients only",
            QueueFilter {
                recipient: Some("done@".into()),
                ..QueueFilter::default()
            },
            vec![],
        ),
        (
            "any recipient",
            QueueFilter {
                recipient: Some("wait@".into()),
                recipient_scope: RecipientScope::Any,
                ..QueueFilter::default()
            },
            vec![1, 6],
        ),
        (
            "recipient text, any case",
            QueueFilter {
                recipient: Some("erin@example.net".into()),
                ..QueueFilter::default()
            },
            vec![5],
        ),
        (
            "ids",
            QueueFilter {
                ids: vec![id(3), id(4), id(99)],
                ..QueueFilter::default()
            },
            vec![3, 4],
        ),
        (
            "age bounds",
            QueueFilter {
                min_age_secs: Some(600),
                max_age_secs: Some(3_600),
                ..QueueFilter::default()
            },
            vec![2, 3, 5],
        ),
        (
            "size bounds",
            QueueFilter {
                min_size: Some(800),
                max_size: Some(10_000),
                ..QueueFilter::default()
            },
            vec![1, 3, 6],
        ),
        (
            "frozen",
            QueueFilter {
                frozen: Some(true),
                ..QueueFilter::default()
            },
            vec![2, 5],
        ),
        (
            "bounces",
            QueueFilter {
                bounce: Some(true),
                ..QueueFilter::default()
            },
            vec![2],
        ),
    ];
    let skip_simple = |v: Vec<String>| -> BTreeSet<String> {
        let simple: BTreeSet<String> = (10..25).map(|n| key(MX1, n)).collect();
        v.into_iter().filter(|k| !simple.contains(k)).collect()
    };
    for (what, filter, expected) in cases {
        let both = set(current(&*store, &filter, 50).await);
        let want = &keys(MX1, &expected) | &keys(MX2, &expected);
        assert_eq!(skip_simple(both.into_iter().collect()), want, "{what}");
        let one = current(&*store, &mx1(filter), 50).await;
        assert_eq!(skip_simple(one), keys(MX1, &expected), "{what} on one host");
    }
    let not_bounces = QueueFilter {
        bounce: Some(false),
        host: Some(MX2.into()),
        frozen: Some(false),
        ..QueueFilter::default()
    };
    assert_eq!(
        set(current(&*store, &not_bounces, 50).await),
        keys(MX2, &[1, 3, 4, 6])
    );

    // Pages: oldest first, unknown ages last, then by host and id.
    let all = current(&*store, &QueueFilter::default(), 4).await;
    assert_eq!(all.len(), 15 + 12, "each message once");
    assert_eq!(set(all.clone()).len(), all.len(), "no message twice");
    let mut expected = Vec::new();
    for (host, messages) in [
        (MX1, {
            let mut m: Vec<QueuedMessage> = (10..25).map(|n| simple(n, 3_000 + n as u64)).collect();
            m.extend(varied_queue());
            m
        }),
        (MX2, varied_queue()),
    ] {
        for m in messages {
            expected.push((
                std::cmp::Reverse(m.age_secs.map_or(-1, |a| a as i64)),
                host.to_string(),
                m.id.to_string(),
            ));
        }
    }
    expected.sort();
    let expected: Vec<String> = expected
        .into_iter()
        .map(|(_, h, id)| format!("{h}/{id}"))
        .collect();
    assert_eq!(all, expected);
}

/// Each queued message carries the latest deferral of its lifecycle;
/// none without a lifecycle or without a deferral.
pub async fn queued_messages_carry_their_last_deferral(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let twice = deferred_twice(MX1, 1, at(-120), "carol@example.net");
    let done = delivered(MX1, 2, at(-60), "dave@example.net");
    let elsewhere = deferred(MX2, 3, at(-60), "erin@example.net");
    store
        .commit_batch(Batch {
            lifecycles: vec![twice, done, elsewhere],
            ..Batch::default()
        })
        .await
        .expect("commit");
    let queue = vec![
        simple(1, 7200),
        simple(2, 3600),
        simple(3, 3600),
        simple(4, 60),
    ];
    store
        .save_queue_snapshot(&snapshot(MX1, at(0), queue))
        .await
        .expect("save");

    let page = store
        .queue_messages(&QueueFilter::default(), &PageRequest::default())
        .await
        .expect("search");
    let last = |n: u32| {
        page.items
            .iter()
            .find(|e| e.message.id == id(n))
            .map(|e| e.last_deferral.clone())
            .expect("queued")
    };
    let one = last(1).expect("message 1 was deferred");
    assert_eq!(one.class, Some(ReasonClass::Timeout), "the latest deferral");
    assert_eq!(one.at, at(-120) + Duration::minutes(30));
    assert_eq!(one.text.as_deref(), Some("451 timeout for fixture"));
    assert_eq!(last(2), None, "a lifecycle without deferrals");
    assert_eq!(last(3), None, "a lifecycle of another host");
    assert_eq!(last(4), None, "no lifecycle");
}

/// Health: the latest totals, deferred messages, growth over the hour
/// before the latest snapshot, per host.
pub async fn queue_health_per_host(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let queue =
        |n: u32| -> Vec<QueuedMessage> { (1..=n).map(|i| simple(i, 60 * i as u64)).collect() };
    for (minutes, n) in [(-120, 5), (-65, 8), (-50, 9)] {
        store
            .save_queue_snapshot(&snapshot(MX1, at(minutes), queue(n)))
            .await
            .expect("save");
    }
    let mut latest = queue(12);
    latest[0].frozen = true;
    latest[1].sender = String::new();
    latest[2].size = None;
    store
        .save_queue_snapshot(&snapshot(MX1, at(0), latest.clone()))
        .await
        .expect("save latest");
    store
        .save_queue_snapshot(&snapshot(MX2, at(-30), queue(2)))
        .await
        .expect("save");
    store
        .commit_batch(Batch {
            lifecycles: vec![
                deferred(MX1, 1, at(-200), "a@example.net"),
                deferred_twice(MX1, 2, at(-200), "b@example.net"),
                delivered(MX1, 3, at(-200), "c@example.net"),
                deferred(MX2, 4, at(-200), "d@example.net"),
                deferred(MX1, 40, at(-200), "gone@example.net"),
            ],
            ..Batch::default()
        })
        .await
        .expect("commit");

    let health = store.queue_health(None).await.expect("health");
    let hosts: Vec<&str> = health.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, vec![MX1, MX2]);
    let mx1 = &health[0];
    assert_eq!(mx1.snapshot_at, at(0));
    assert_eq!(mx1.totals, snapshot(MX1, at(0), latest).totals());
    assert_eq!(mx1.totals.frozen, 1);
    assert_eq!(mx1.totals.oldest_age_secs, Some(720));
    assert_eq!(mx1.deferred, 2, "queued messages with a deferral");
    assert_eq!(
        mx1.growth_last_hour,
        Some(4),
        "against the snapshot closest to an hour before"
    );
    let mx2 = &health[1];
    assert_eq!(mx2.totals.messages, 2);
    assert_eq!(mx2.growth_last_hour, None, "no history that old");
    assert_eq!(mx2.deferred, 0, "message 4 is not on mx2's queue");

    let one = store.queue_health(Some(MX2)).await.expect("health");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].host, MX2);
    assert!(store
        .queue_health(Some("none.example.org"))
        .await
        .expect("health")
        .is_empty());
}

/// History: every snapshot in a range, oldest first; bucketed, the
/// largest figures of each bucket; limited, the latest points.
pub async fn queue_history_over_a_range(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    for (minutes, n) in [(0, 3), (20, 7), (40, 5), (70, 2), (80, 4), (130, 1)] {
        let messages = (1..=n)
            .map(|i| simple(i, 60 * (minutes as u64 + 1)))
            .collect();
        store
            .save_queue_snapshot(&snapshot(MX1, at(minutes), messages))
            .await
            .expect("save");
    }
    store
        .save_queue_snapshot(&snapshot(MX2, at(30), vec![simple(1, 1)]))
        .await
        .expect("save");

    let range = |bucket_secs, limit| QueueHistoryQuery {
        host: Some(MX1.into()),
        since: Some(at(10)),
        until: Some(at(130)),
        bucket_secs,
        limit,
    };
    let points = store.queue_history(&range(None, 0)).await.expect("history");
    let seen: Vec<(chrono::DateTime<chrono::Utc>, u64)> =
        points.iter().map(|p| (p.at, p.totals.messages)).collect();
    assert_eq!(
        seen,
        vec![(at(20), 7), (at(40), 5), (at(70), 2), (at(80), 4)]
    );

    let hourly = store
        .queue_history(&range(Some(3600), 0))
        .await
        .expect("history");
    let seen: Vec<_> = hourly
        .iter()
        .map(|p| (p.at, p.totals.messages, p.totals.oldest_age_secs))
        .collect();
    assert_eq!(
        seen,
        vec![(at(0), 7, Some(41 * 60)), (at(60), 4, Some(81 * 60))],
        "the largest of each hour"
    );

    let latest = store.queue_history(&range(None, 2)).await.expect("history");
    let seen: Vec<_> = latest.iter().map(|p| p.at).collect();
    assert_eq!(seen, vec![at(70), at(80)], "the latest points");

    let every_host = store
        .queue_history(&QueueHistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(every_host.len(), 7);
    assert!(every_host.windows(2).all(|w| w[0].at <= w[1].at));
}

fn job(n: u32, host: &str, action: QueueAction, actor: &str, minutes: i64) -> QueueJob {
    QueueJob {
        job_id: format!("00000000-0000-4000-8000-{n:012}"),
        host: host.to_string(),
        action,
        ids: vec![id(1), id(2), id(3)],
        actor: actor.to_string(),
        reason: Some(format!("reason {n}")),
        requested_at: at(minutes),
        expires_at: at(minutes + 10),
    }
}

fn result(job: &QueueJob, n: u32, status: QueueActionStatus, seconds: i64) -> QueueActionResult {
    QueueActionResult {
        job_id: job.job_id.clone(),
        host: job.host.clone(),
        id: id(n),
        action: job.action,
        status,
        exit_code: (status != QueueActionStatus::Expired)
            .then_some(i32::from(status != QueueActionStatus::Done)),
        output: format!("output for {n}"),
        finished_at: job.requested_at + Duration::seconds(seconds),
    }
}

/// Jobs and results: saved twice they count once, a later result
/// replaces an earlier one, lists page newest first with counts.
pub async fn queue_jobs_and_results(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let remove = job(1, MX1, QueueAction::Remove, "olga", 0);
    store.save_queue_job(&remove).await.expect("save job");
    store.save_queue_job(&remove).await.expect("save job again");
    assert_eq!(
        store.queue_job(&remove.job_id).await.expect("job"),
        Some((remove.clone(), vec![]))
    );
    assert_eq!(store.queue_job("no-such-job").await.expect("job"), None);

    let failed = result(&remove, 2, QueueActionStatus::Failed, 2);
    let done = result(&remove, 1, QueueActionStatus::Done, 1);
    store
        .save_queue_results(&[done.clone(), failed.clone()])
        .await
        .expect("results");
    store
        .save_queue_results(std::slice::from_ref(&done))
        .await
        .expect("results again");
    store.save_queue_results(&[]).await.expect("no results");
    let (_, results) = store
        .queue_job(&remove.job_id)
        .await
        .expect("job")
        .expect("saved");
    assert_eq!(results, vec![done.clone(), failed.clone()]);

    let retried = result(&remove, 2, QueueActionStatus::Done, 5);
    store
        .save_queue_results(std::slice::from_ref(&retried))
        .await
        .expect("later result");
    store
        .save_queue_results(std::slice::from_ref(&failed))
        .await
        .expect("earlier result again");
    let (_, results) = store
        .queue_job(&remove.job_id)
        .await
        .expect("job")
        .expect("saved");
    assert_eq!(results, vec![done, retried], "the later result stays");

    let mut all = vec![remove.clone()];
    for n in 2..=8u32 {
        let host = if n % 2 == 0 { MX2 } else { MX1 };
        let j = job(n, host, QueueAction::Freeze, "piet", n as i64);
        store.save_queue_job(&j).await.expect("save job");
        all.push(j);
    }
    let (mut seen, mut page) = (
        Vec::new(),
        PageRequest {
            first: 3,
            after: None,
        },
    );
    loop {
        let p = store
            .queue_jobs(&QueueJobFilter::default(), &page)
            .await
            .expect("jobs");
        seen.extend(p.items);
        if !p.has_next_page {
            break;
        }
        page.after = p.end_cursor;
    }
    let ids: Vec<&str> = seen.iter().map(|s| s.job.job_id.as_str()).collect();
    let mut expected: Vec<&str> = all.iter().map(|j| j.job_id.as_str()).collect();
    expected.reverse();
    assert_eq!(ids, expected, "newest first, each once");
    let first = seen.last().expect("the first job");
    assert_eq!(first.job, remove);
    assert_eq!(
        first.counts,
        QueueJobCounts {
            done: 2,
            ..QueueJobCounts::default()
        }
    );

    let filtered = store
        .queue_jobs(
            &QueueJobFilter {
                host: Some(MX2.into()),
                actor: Some("piet".into()),
                action: Some(QueueAction::Freeze),
                since: Some(at(3)),
                until: Some(at(8)),
            },
            &PageRequest::default(),
        )
        .await
        .expect("jobs");
    let ids: Vec<String> = filtered
        .items
        .iter()
        .map(|s| s.job.job_id.clone())
        .collect();
    assert_eq!(ids, vec![all[5].job_id.clone(), all[3].job_id.clone()]);
    let removes = store
        .queue_jobs(
            &QueueJobFilter {
                action: Some(QueueAction::Remove),
                ..QueueJobFilter::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("jobs");
    assert_eq!(removes.items.len(), 1);
}

/// Retention drops old queue history (with the current queue of a host
/// that went quiet) and old jobs, and keeps the rest.
pub async fn queue_retention_drops_old_history_and_jobs(backend: &dyn Backend) {
    let (store, _) = fresh(backend).await;
    let now = at(0);
    let old = now - Duration::days(40);
    let recent = now - Duration::days(1);
    for (host, t) in [(MX1, old), (MX1, recent), (MX2, old)] {
        store
            .save_queue_snapshot(&snapshot(host, t, vec![simple(1, 60)]))
            .await
            .expect("save");
    }
    let mut ancient = job(1, MX1, QueueAction::Thaw, "olga", 0);
    ancient.requested_at = now - Duration::days(400);
    ancient.expires_at = ancient.requested_at + Duration::minutes(10);
    let kept = job(2, MX1, QueueAction::Thaw, "olga", -60);
    for j in [&ancient, &kept] {
        store.save_queue_job(j).await.expect("save job");
        store
            .save_queue_results(&[result(j, 1, QueueActionStatus::Done, 1)])
            .await
            .expect("save result");
    }

    let summary = store
        .apply_retention(&Retention::default(), now)
        .await
        .expect("retention");
    assert_eq!(summary.queue_snapshots, 2);
    assert_eq!(summary.queue_jobs, 1);

    let health = store.queue_health(None).await.expect("health");
    let hosts: Vec<&str> = health.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, vec![MX1], "a host quiet for longer is gone");
    assert_eq!(health[0].snapshot_at, recent);
    assert_eq!(
        set(current(&*store, &QueueFilter::default(), 50).await),
        keys(MX1, &[1])
    );
    assert_eq!(history(&*store, MX1).await.len(), 1);
    assert_eq!(store.queue_job(&ancient.job_id).await.expect("job"), None);
    let (_, results) = store
        .queue_job(&kept.job_id)
        .await
        .expect("job")
        .expect("kept");
    assert_eq!(results.len(), 1);

    let again = store
        .apply_retention(&Retention::default(), now)
        .await
        .expect("retention");
    assert_eq!(again, RetentionSummary::default());
}
