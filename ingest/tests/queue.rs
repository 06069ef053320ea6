//! The queue node against a real Exim (Debian's 4.96, with a spool of the
//! test's own, see `exim_pilot_testkit::exim`): listings agree with
//! `exim -bpc`, every action changes the queue as `exim -bp` shows, views
//! return what Exim prints, and refused, expired, stuck and missing
//! commands are reported as such.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use exim_pilot_ingest::queue::{parse_bp, Exim, EximConfig, EximError, QueueMetrics, Snapshotter};
use exim_pilot_schema::queue::{
    MessageView, QueueAction, QueueActionStatus, QueueJob, QueuedMessage,
};
use exim_pilot_testkit::exim::{Exim as TestExim, Submission};

const HOST: &str = "queue.test";

/// The node's runner on the test Exim.
fn node(kit: &TestExim) -> Exim {
    Exim::new(HOST, config(kit.binary(), Some(kit.config_file())))
}

fn config(binary: &Path, config_file: Option<&Path>) -> EximConfig {
    EximConfig {
        binary: binary.to_path_buf(),
        config_file: config_file.map(Path::to_path_buf),
        timeout: Duration::from_secs(60),
        ..EximConfig::default()
    }
}

fn plain<'a>(recipients: &'a [&'a str]) -> Submission<'a> {
    Submission {
        sender: "alice@example.net",
        recipients,
        body: "Hello.\n",
    }
}

fn find<'a>(messages: &'a [QueuedMessage], id: &str) -> Option<&'a QueuedMessage> {
    messages.iter().find(|m| m.id.as_str() == id)
}

fn job(action: QueueAction, ids: &[&str]) -> QueueJob {
    let now = Utc::now();
    QueueJob {
        job_id: "job-1".to_string(),
        host: HOST.to_string(),
        action,
        ids: ids.iter().map(|id| id.parse().unwrap()).collect(),
        actor: "alice".to_string(),
        reason: Some("test".to_string()),
        requested_at: now,
        expires_at: now + TimeDelta::minutes(10),
    }
}

/// A script in `dir` standing in for the Exim binary.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn snapshot_holds_what_exim_lists_and_counts() {
    let kit = TestExim::new();
    let ids = kit.submit_many(3, "alice@example.net", &["bob@example.com"]);
    let bounce = kit.submit(&Submission {
        sender: "",
        recipients: &["postmaster@example.org"],
        body: "Bounce.\n",
    });
    let partly = kit.submit(&plain(&["done@example.org", "erin@example.org"]));
    kit.queue_run();

    let exim = Arc::new(node(&kit));
    let snapshot = Snapshotter::new(exim.clone(), Duration::from_secs(30))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.host, HOST);
    assert_eq!(snapshot.messages.len() as u64, kit.bpc());
    assert_eq!(exim.count().await.unwrap(), 5);

    // The same messages as in Exim's own listing, read by the test here.
    let listed = parse_bp(&kit.bp());
    assert_eq!(listed.problems, vec![]);
    assert_eq!(listed.messages, snapshot.messages);
    let found: BTreeSet<_> = snapshot.messages.iter().map(|m| m.id.to_string()).collect();
    let submitted: BTreeSet<_> = ids.iter().chain([&bounce, &partly]).cloned().collect();
    assert_eq!(found, submitted);

    for message in &snapshot.messages {
        assert_eq!(message.age_secs, Some(0), "{message:?}");
        assert!(message.size.unwrap_or(0) > 100, "{message:?}");
        assert!(!message.frozen && message.spool_error.is_none());
    }
    let bounce = find(&snapshot.messages, &bounce).unwrap();
    assert!(bounce.is_bounce());
    let plain = find(&snapshot.messages, &ids[0]).unwrap();
    assert_eq!(plain.sender, "alice@example.net");
    assert!(!plain.is_bounce());
    let partly = find(&snapshot.messages, &partly).unwrap();
    let recipients: Vec<_> = partly
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.delivered))
        .collect();
    assert_eq!(
        recipients,
        vec![("done@example.org", true), ("erin@example.org", false)]
    );
    assert_eq!(snapshot.totals().undelivered_recipients, 5);
}

#[tokio::test]
async fn ages_in_minutes_hours_and_days_as_exim_prints_them() {
    let kit = TestExim::new();
    let ids = kit.submit_many(3, "alice@example.net", &["bob@example.com"]);
    kit.backdate(&ids[0], 88 * 60 + 10);
    kit.backdate(&ids[1], 4 * 3_600 + 10);
    // 72 hours still print as `72h`; 80 hours round to `3d`.
    kit.backdate(&ids[2], 80 * 3_600 + 10);

    let listing = node(&kit).list().await.unwrap();
    let ages: Vec<_> = ids
        .iter()
        .map(|id| find(&listing.messages, id).unwrap().age_secs)
        .collect();
    assert_eq!(ages, vec![Some(88 * 60), Some(4 * 3_600), Some(3 * 86_400)]);
    let text = kit.bp();
    for printed in ["88m ", " 4h ", " 3d "] {
        assert!(text.contains(printed), "{printed:?} not in:\n{text}");
    }
}

#[tokio::test]
async fn freeze_and_thaw_change_the_listing() {
    let kit = TestExim::new();
    let id = kit.submit(&plain(&["bob@example.com"]));
    let exim = node(&kit);

    let frozen = exim.act("j", QueueAction::Freeze, &id).await.unwrap();
    assert_eq!(frozen.status, QueueActionStatus::Done, "{frozen:?}");
    assert!(frozen.output.contains("is now frozen"), "{frozen:?}");
    assert!(kit.bp().contains("*** frozen ***"));
    assert!(
        find(&exim.list().await.unwrap().messages, &id)
            .unwrap()
            .frozen
    );

    // Exim refuses to freeze a frozen message: a failure, with its words.
    let again = exim.act("j", QueueAction::Freeze, &id).await.unwrap();
    assert_eq!(again.status, QueueActionStatus::Failed);
    assert_eq!(again.exit_code, Some(1));
    assert!(again.output.contains("already frozen"), "{again:?}");

    let thawed = exim.act("j", QueueAction::Thaw, &id).await.unwrap();
    assert_eq!(thawed.status, QueueActionStatus::Done, "{thawed:?}");
    assert!(!kit.bp().contains("*** frozen ***"));
    assert!(
        !find(&exim.list().await.unwrap().messages, &id)
            .unwrap()
            .frozen
    );
}

#[tokio::test]
async fn deliver_makes_an_attempt_that_is_deferred_again() {
    let kit = TestExim::new();
    let id = kit.submit(&plain(&["bob@example.com"]));
    let refused = |log: &str| log.matches("Connection refused").count();
    let before = refused(&kit.mainlog());

    let result = node(&kit)
        .act("j", QueueAction::Deliver, &id)
        .await
        .unwrap();
    assert_eq!(result.status, QueueActionStatus::Done, "{result:?}");

    let log = kit.mainlog();
    assert!(refused(&log) > before, "no attempt logged:\n{log}");
    assert!(
        log.contains("== bob@example.com"),
        "no deferral logged:\n{log}"
    );
    assert!(kit.bp().contains(&id), "the message left the queue");
}

#[tokio::test]
async fn give_up_bounces_the_message_to_its_sender() {
    let kit = TestExim::new();
    let id = kit.submit(&plain(&["bob@example.com"]));
    let other = kit.submit(&plain(&["carol@example.com"]));

    let result = node(&kit).act("j", QueueAction::GiveUp, &id).await.unwrap();
    assert_eq!(result.status, QueueActionStatus::Done, "{result:?}");

    // The message is gone; its bounce to alice cannot be delivered either,
    // so it waits on the queue in its place.
    let listing = parse_bp(&kit.bp());
    assert!(find(&listing.messages, &id).is_none());
    assert!(find(&listing.messages, &other).is_some());
    let bounces: Vec<_> = listing.messages.iter().filter(|m| m.is_bounce()).collect();
    assert_eq!(bounces.len(), 1, "{listing:?}");
    assert_eq!(bounces[0].recipients[0].address, "alice@example.net");
    assert_eq!(kit.bpc(), 2);
}

#[tokio::test]
async fn remove_takes_the_message_off_the_queue() {
    let kit = TestExim::new();
    let id = kit.submit(&plain(&["bob@example.com"]));
    let other = kit.submit(&plain(&["carol@example.com"]));

    let result = node(&kit).act("j", QueueAction::Remove, &id).await.unwrap();
    assert_eq!(result.status, QueueActionStatus::Done, "{result:?}");
    assert!(result.output.contains("has been removed"), "{result:?}");

    let text = kit.bp();
    assert!(!text.contains(&id) && text.contains(&other), "{text}");
    assert_eq!(kit.bpc(), 1);
}

#[tokio::test]
async fn views_print_headers_log_and_a_body_cut_at_the_limit() {
    let kit = TestExim::new();
    let short = kit.submit(&plain(&["bob@example.com"]));
    let long_body = "0123456789abcdef\n".repeat(1_000);
    let long = kit.submit(&Submission {
        sender: "alice@example.net",
        recipients: &["bob@example.com"],
        body: &long_body,
    });
    let exim = Exim::new(
        HOST,
        EximConfig {
            body_limit: 1_000,
            ..config(kit.binary(), Some(kit.config_file()))
        },
    );

    let headers = exim.view(&short, MessageView::Headers).await.unwrap();
    assert!(headers.text.contains("Subject: queue test"), "{headers:?}");
    assert!(headers.text.contains("<alice@example.net>"), "{headers:?}");
    assert!(!headers.text.starts_with(&short) && !headers.truncated);

    let log = exim.view(&short, MessageView::Log).await.unwrap();
    assert!(
        log.text.contains("Received from alice@example.net"),
        "{log:?}"
    );

    let body = exim.view(&short, MessageView::Body).await.unwrap();
    assert_eq!(body.text, "Hello.\n");
    assert!(!body.truncated);

    let cut = exim.view(&long, MessageView::Body).await.unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.text.len(), 1_000);
    assert!(long_body.starts_with(&cut.text));

    let gone = "1xZbZZ-0007ZZ-2T";
    match exim.view(gone, MessageView::Headers).await {
        Err(EximError::NotOnQueue { id }) => assert_eq!(id, gone),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_job_runs_message_by_message_in_order() {
    let kit = TestExim::new();
    let ids = kit.submit_many(2, "alice@example.net", &["bob@example.com"]);
    let gone = "1xZbZZ-0007ZZ-2T";
    let job = job(QueueAction::Freeze, &[&ids[0], gone, &ids[1]]);

    let results = node(&kit).run_job(&job, Utc::now()).await.unwrap();
    let statuses: Vec<_> = results
        .iter()
        .map(|r| (r.id.to_string(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (ids[0].clone(), QueueActionStatus::Done),
            (gone.to_string(), QueueActionStatus::Failed),
            (ids[1].clone(), QueueActionStatus::Done),
        ]
    );
    assert!(results
        .iter()
        .all(|r| r.job_id == "job-1" && r.host == HOST));
    let listing = parse_bp(&kit.bp());
    assert!(listing.messages.iter().all(|m| m.frozen));
}

#[tokio::test]
async fn an_expired_job_runs_nothing() {
    let kit = TestExim::new();
    let ids = kit.submit_many(2, "alice@example.net", &["bob@example.com"]);
    let mut job = job(QueueAction::Remove, &[&ids[0], &ids[1]]);
    job.expires_at = Utc::now() - TimeDelta::seconds(1);
    let before = kit.bp();

    let results = node(&kit).run_job(&job, Utc::now()).await.unwrap();
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|r| r.status == QueueActionStatus::Expired && r.exit_code.is_none()));
    assert_eq!(kit.bp(), before);
}

#[tokio::test]
async fn a_job_for_another_host_is_refused() {
    let kit = TestExim::new();
    let id = kit.submit(&plain(&["bob@example.com"]));
    let mut job = job(QueueAction::Remove, &[&id]);
    job.host = "mx2.example.com".to_string();

    match node(&kit).run_job(&job, Utc::now()).await {
        Err(EximError::WrongHost { job_host, host, .. }) => {
            assert_eq!(
                (job_host.as_str(), host.as_str()),
                ("mx2.example.com", HOST)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(kit.bpc(), 1);
}

#[tokio::test]
async fn a_malformed_id_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let binary = script(dir.path(), "exim", &format!("touch {}", marker.display()));
    let exim = Exim::new(HOST, config(&binary, None));

    for id in [
        "../../etc/passwd",
        "-bh 127.0.0.1",
        "1qAbCK-000123-X",
        "1qAbCK-000123-Xy ",
    ] {
        assert!(
            matches!(
                exim.act("j", QueueAction::Remove, id).await,
                Err(EximError::InvalidId(_))
            ),
            "{id:?}"
        );
        assert!(matches!(
            exim.view(id, MessageView::Body).await,
            Err(EximError::InvalidId(_))
        ));
    }
    assert!(!marker.exists(), "a process was started");

    // A well-formed id does run it: the check above means something.
    exim.act("j", QueueAction::Remove, "1qAbCK-000123-Xy")
        .await
        .unwrap();
    assert!(marker.exists());
}

#[tokio::test]
async fn a_stuck_exim_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let binary = script(dir.path(), "exim", "sleep 60");
    let exim = Exim::new(
        HOST,
        EximConfig {
            timeout: Duration::from_millis(300),
            ..config(&binary, None)
        },
    );

    let result = exim
        .act("j", QueueAction::Deliver, "1qAbCK-000123-Xy")
        .await
        .unwrap();
    assert_eq!(result.status, QueueActionStatus::TimedOut);
    assert_eq!(result.exit_code, None);
    assert!(result.output.contains("did not finish"), "{result:?}");
    assert!(matches!(exim.list().await, Err(EximError::TimedOut { .. })));
}

#[tokio::test]
async fn a_missing_binary_says_how_to_fix_it() {
    let exim = Exim::new(HOST, config(Path::new("/nonexistent/exim4"), None));
    let error = exim.list().await.unwrap_err();
    assert!(
        matches!(error, EximError::BinaryMissing { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("set the binary path"), "{error}");

    // In a job, each message reports it.
    let results = exim
        .run_job(&job(QueueAction::Thaw, &["1qAbCK-000123-Xy"]), Utc::now())
        .await
        .unwrap();
    assert_eq!(results[0].status, QueueActionStatus::Failed);
    assert!(results[0].output.contains("not found"), "{results:?}");
}

#[tokio::test]
async fn exim_refusing_an_administrator_command_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let binary = script(dir.path(), "exim", "echo 'exim: permission denied'; exit 1");
    let error = Exim::new(HOST, config(&binary, None))
        .list()
        .await
        .unwrap_err();
    assert!(
        matches!(error, EximError::PermissionDenied { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("admin_groups"), "{error}");
}

#[tokio::test]
async fn snapshotter_sends_snapshots_and_rides_out_failures() {
    let kit = TestExim::new();
    kit.submit_many(2, "alice@example.net", &["bob@example.com"]);
    let registry = prometheus::Registry::new();
    let metrics = QueueMetrics::new(&registry).unwrap();

    // A working Exim: snapshots arrive in the channel.
    let exim = Arc::new(node(&kit).with_metrics(metrics.clone()));
    let (sender, mut snapshots) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        Snapshotter::new(exim, Duration::from_millis(50)).run(sender, async {
            let _ = stopped.await;
        }),
    );
    for _ in 0..2 {
        let snapshot = snapshots.recv().await.unwrap();
        assert_eq!(snapshot.messages.len(), 2);
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(metrics.snapshots() >= 2);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(text.contains("exim_pilot_queue_messages 2"), "{text}");

    // A failing one: the loop goes on, failures are counted, until the
    // receiving end goes away.
    let dir = tempfile::tempdir().unwrap();
    let broken = script(dir.path(), "exim", "echo 'spool is on fire' >&2; exit 2");
    let exim = Arc::new(Exim::new(HOST, config(&broken, None)).with_metrics(metrics.clone()));
    let (sender, snapshots) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(
        Snapshotter::new(exim, Duration::from_millis(20)).run(sender, std::future::pending()),
    );
    while metrics.snapshot_errors() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!task.is_finished());
    drop(snapshots);
    task.abort();
}
