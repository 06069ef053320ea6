//! The queue part of the API over real HTTP and WebSocket connections:
//! searching current queues, health and history, queue actions by id and
//! by filter with their audit trail, job results by query and by
//! subscription, and who may read a queued message.
//!
//! Queue control is a test double ([`RecordingControl`]) that records the
//! jobs it is handed and, like a mail server's node, writes their results
//! to the store.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use exim_pilot_api::auth::{self, Actor};
use exim_pilot_api::queue::record_results;
use exim_pilot_api::{ApiConfig, QueueControl, QueueControlError};
use exim_pilot_schema::queue::{
    MessageView, QueueActionResult, QueueActionStatus, QueueJob, QueuedMessage,
};
use exim_pilot_schema::{Lifecycle, MessageId};
use exim_pilot_store::conformance::fixtures::{deferred_twice, delivered, id, queued, snapshot};
use exim_pilot_store::{Batch, Role, SqliteStore, Store};

use common::*;

const MX1: &str = "mx1.example.org";
const MX2: &str = "mx2.example.org";
const OPERATOR_PASSWORD: &str = "Rb6yTn3kWq8z-operator";

/// A test double of queue control: records every job and view asked
/// for; when `answers` is set, writes a `done` result for every message
/// of a job as soon as it is submitted, as a node would a moment later.
struct RecordingControl {
    store: Arc<dyn Store>,
    answers: AtomicBool,
    jobs: Mutex<Vec<QueueJob>>,
    views: Mutex<Vec<(String, MessageId, MessageView)>>,
}

impl RecordingControl {
    fn new(store: Arc<dyn Store>, answers: bool) -> Arc<RecordingControl> {
        Arc::new(RecordingControl {
            store,
            answers: AtomicBool::new(answers),
            jobs: Mutex::default(),
            views: Mutex::default(),
        })
    }

    fn jobs(&self) -> Vec<QueueJob> {
        self.jobs.lock().expect("jobs").clone()
    }

    fn views(&self) -> usize {
        self.views.lock().expect("views").len()
    }
}

/// The result a node would report for one message of a job.
fn result_of(job: &QueueJob, id: MessageId, status: QueueActionStatus) -> QueueActionResult {
    QueueActionResult {
        job_id: job.job_id.clone(),
        host: job.host.clone(),
        id,
        action: job.action,
        status,
        exit_code: Some(i32::from(status != QueueActionStatus::Done)),
        output: String::new(),
        finished_at: Utc::now(),
    }
}

#[async_trait]
impl QueueControl for RecordingControl {
    async fn submit(&self, job: &QueueJob) -> Result<(), QueueControlError> {
        self.jobs.lock().expect("jobs").push(job.clone());
        if self.answers.load(Ordering::SeqCst) {
            let results: Vec<QueueActionResult> = job
                .ids
                .iter()
                .map(|id| result_of(job, *id, QueueActionStatus::Done))
                .collect();
            record_results(&*self.store, &results)
                .await
                .map_err(|e| QueueControlError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    async fn view(
        &self,
        host: &str,
        id: MessageId,
        view: MessageView,
    ) -> Result<String, QueueControlError> {
        self.views
            .lock()
            .expect("views")
            .push((host.to_string(), id, view));
        Ok(format!("{view:?} of {id} on {host}"))
    }
}

/// The time `minutes` before now.
fn ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(minutes)
}

/// The queue of mx1 the tests search.
fn mx1_queue() -> Vec<QueuedMessage> {
    vec![
        queued(
            1,
            Some(90_000),
            Some(2_000),
            "alice@example.org",
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
            Some(120),
            Some(800),
            "bob@example.org",
            &[("wait@example.com", true), ("erin@example.net", false)],
            true,
        ),
    ]
}

/// Lifecycles of some of mx1's queued messages.
fn mx1_lifecycles() -> Vec<Lifecycle> {
    vec![
        deferred_twice(MX1, 1, ago(24 * 60), "wait@example.com"),
        delivered(MX1, 3, ago(10), "carol@example.net"),
    ]
}

/// A store with two servers' queues and some history.
async fn seeded_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_dir(dir.path()).expect("store"));
    let queue = mx1_queue();
    for (minutes, n) in [(120, 2), (61, 3)] {
        let older = snapshot(MX1, ago(minutes), queue[..n].to_vec());
        store.save_queue_snapshot(&older).await.expect("history");
    }
    store
        .save_queue_snapshot(&snapshot(MX1, ago(1), queue))
        .await
        .expect("snapshot");
    let mx2 = vec![queued(
        5,
        Some(60),
        Some(100),
        "x@example.org",
        &[("y@example.net", false)],
        false,
    )];
    store
        .save_queue_snapshot(&snapshot(MX2, ago(2), mx2))
        .await
        .expect("snapshot");
    store
        .commit_batch(Batch {
            lifecycles: mx1_lifecycles(),
            ..Batch::default()
        })
        .await
        .expect("lifecycles");
    store
}

/// A server over the seeded store with an operator `otto` and queue
/// control (`None`: none).
async fn server_with(
    config: ApiConfig,
    answers: Option<bool>,
) -> (TestServer, Option<Arc<RecordingControl>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = seeded_store(&dir).await;
    auth::add_user(
        &*store,
        &Actor::command_line(),
        "otto",
        Role::Operator,
        OPERATOR_PASSWORD,
        Vec::new(),
    )
    .await
    .expect("add operator");
    let control = answers.map(|a| RecordingControl::new(Arc::clone(&store), a));
    let queue = control.clone().map(|c| c as Arc<dyn QueueControl>);
    let server = start_with_queue(store, config, queue).await;
    (server, control, dir)
}

async fn server() -> (TestServer, Arc<RecordingControl>, tempfile::TempDir) {
    let (server, control, dir) = server_with(test_config(), Some(true)).await;
    (server, control.expect("queue control"), dir)
}

/// The ids of a `queue` answer's edges.
fn edge_ids(v: &Value) -> Vec<String> {
    v["queue"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id").to_string())
        .collect()
}

fn ids(ns: &[u32]) -> Vec<String> {
    ns.iter().map(|n| id(*n).to_string()).collect()
}

const QUEUE: &str = "query($host: String, $f: QueueFilter!, $first: Int, $after: String) {
    queue(host: $host, filter: $f, first: $first, after: $after) {
        edges { cursor node { host id ageSeconds size sender bounce frozen
            recipients { address delivered }
            lastDeferral { reason text } } }
        pageInfo { hasNextPage endCursor } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_searched_by_every_filter() {
    let (server, _control, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let search = |f: Value| {
        let (server, viewer) = (&server, &viewer);
        async move {
            let v = server
                .data(viewer, QUEUE, json!({ "host": MX1, "f": f }))
                .await;
            edge_ids(&v)
        }
    };

    assert_eq!(search(json!({})).await, ids(&[1, 2, 3, 4]), "oldest first");
    assert_eq!(search(json!({ "sender": "ALICE" })).await, ids(&[1]));
    assert_eq!(
        search(json!({ "recipient": "wait@example.com" })).await,
        ids(&[1]),
        "undelivered recipients by default"
    );
    assert_eq!(
        search(json!({ "recipient": "wait@example.com", "recipientScope": "DELIVERED" })).await,
        ids(&[4])
    );
    assert_eq!(
        search(json!({ "recipient": "wait@", "recipientScope": "ANY" })).await,
        ids(&[1, 4])
    );
    assert_eq!(search(json!({ "id": id(3).to_string() })).await, ids(&[3]));
    assert_eq!(
        search(json!({ "minAgeSeconds": 600, "maxAgeSeconds": 3600 })).await,
        ids(&[2, 3])
    );
    assert_eq!(
        search(json!({ "minSize": 1000, "maxSize": 10000 })).await,
        ids(&[1, 3])
    );
    assert_eq!(search(json!({ "frozen": true })).await, ids(&[2, 4]));
    assert_eq!(search(json!({ "bounce": true })).await, ids(&[2]));

    // The latest deferral comes from the lifecycle.
    let v = server
        .data(&viewer, QUEUE, json!({ "host": MX1, "f": {} }))
        .await;
    let nodes = &v["queue"]["edges"];
    assert_eq!(nodes[0]["node"]["lastDeferral"]["reason"], "timeout");
    assert_eq!(
        nodes[0]["node"]["lastDeferral"]["text"],
        "451 timeout for fixture"
    );
    assert_eq!(nodes[1]["node"]["lastDeferral"], Value::Null);
    assert_eq!(nodes[2]["node"]["lastDeferral"], Value::Null);
    assert_eq!(nodes[1]["node"]["bounce"], true);

    // Pages of two, across both servers.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let v = server
            .data(
                &viewer,
                QUEUE,
                json!({ "f": {}, "first": 2, "after": after }),
            )
            .await;
        seen.extend(edge_ids(&v));
        if v["queue"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = v["queue"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, ids(&[1, 2, 3, 4, 5]));

    let bad = server
        .query(
            Some(&viewer),
            QUEUE,
            json!({ "host": MX1, "f": { "id": "not-an-id" } }),
        )
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_history_come_from_the_snapshots() {
    let (server, _control, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let v = server
        .data(
            &viewer,
            "{ queueHealth { host secondsSinceSnapshot deferred growthLastHour
                figures { messages frozen bounces bytes oldestAgeSeconds } } }",
            json!({}),
        )
        .await;
    let health = v["queueHealth"].as_array().expect("list");
    assert_eq!(health.len(), 2);
    let mx1 = &health[0];
    assert_eq!(mx1["host"], MX1);
    assert_eq!(mx1["figures"]["messages"], 4);
    assert_eq!(mx1["figures"]["frozen"], 2);
    assert_eq!(mx1["figures"]["bounces"], 1);
    assert_eq!(mx1["figures"]["bytes"], 62_800);
    assert_eq!(mx1["figures"]["oldestAgeSeconds"], 90_000);
    assert_eq!(mx1["deferred"], 1, "message 1's lifecycle has deferrals");
    assert_eq!(mx1["growthLastHour"], 1, "four now, three an hour before");
    assert!(mx1["secondsSinceSnapshot"].as_i64().expect("seconds") >= 60);
    assert_eq!(health[1]["growthLastHour"], Value::Null, "no history");

    let v = server
        .data(
            &viewer,
            "query($h: String!) { queueHistory(host: $h) { at figures { messages } } }",
            json!({ "h": MX1 }),
        )
        .await;
    let counts: Vec<i64> = v["queueHistory"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["figures"]["messages"].as_i64().expect("count"))
        .collect();
    assert_eq!(counts, vec![2, 3, 4], "every snapshot, oldest first");
    let v = server
        .data(
            &viewer,
            "query($h: String!) { queueHistory(host: $h, bucket: DAY) { figures { messages } } }",
            json!({ "h": MX1 }),
        )
        .await;
    let days = v["queueHistory"].as_array().expect("points");
    let largest = days
        .iter()
        .map(|p| p["figures"]["messages"].as_i64().expect("count"))
        .max();
    assert!(days.len() <= 2, "{v}");
    assert_eq!(largest, Some(4), "the largest of each bucket");
}

const ACTION: &str = "mutation($i: QueueActionInput!) { queueAction(input: $i) {
    dryRun ids matched { id frozen } job { id host action ids actor reason expiresAt pending complete } } }";

const JOB: &str = "query($id: String!) { queueJob(id: $id) {
    id done failed pending complete results { id status action exitCode } } }";

/// The audit entries of an action, newest first.
async fn audit_of(server: &TestServer, action: &str) -> Vec<Value> {
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let v = server
        .data(
            &admin,
            "query($a: String) { auditLog(filter: { action: $a }) {
                nodes { actor role clientIp action target params outcome } } }",
            json!({ "a": action }),
        )
        .await;
    v["auditLog"]["nodes"].as_array().expect("entries").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_the_messages_and_submits_nothing() {
    let (server, control, _dir) = server().await;
    let otto = server.token("otto", OPERATOR_PASSWORD).await;
    let by_filter = json!({ "i": { "host": MX1, "action": "THAW", "dryRun": true,
        "filter": { "frozen": true }, "reason": "checking" } });
    let v = server.data(&otto, ACTION, by_filter).await;
    let payload = &v["queueAction"];
    assert_eq!(payload["dryRun"], true);
    assert_eq!(payload["job"], Value::Null);
    assert_eq!(payload["ids"], json!(ids(&[2, 4])));
    assert_eq!(payload["matched"].as_array().map(Vec::len), Some(2));

    let by_ids = json!({ "i": { "host": MX1, "action": "REMOVE", "dryRun": true,
        "ids": [id(3).to_string(), id(77).to_string()] } });
    let v = server.data(&otto, ACTION, by_ids).await;
    assert_eq!(v["queueAction"]["ids"], json!(ids(&[3, 77])));
    let matched: Vec<&str> = v["queueAction"]["matched"]
        .as_array()
        .expect("matched")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(matched, vec![id(3).to_string()], "only what is queued");

    assert!(control.jobs().is_empty(), "nothing submitted");
    let audit = audit_of(&server, "queue_thaw").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["outcome"], "dry_run");
    assert_eq!(audit[0]["actor"], "otto");
    assert_eq!(audit[0]["params"]["reason"], "checking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_by_ids_is_saved_audited_submitted_and_its_results_read_back() {
    let (server, control, _dir) = server().await;
    let otto = server.token("otto", OPERATOR_PASSWORD).await;
    let input = json!({ "i": { "host": MX1, "action": "FREEZE",
        "ids": [id(1).to_string(), id(3).to_string(), id(1).to_string()],
        "reason": "stuck for a day" } });
    let v = server.data(&otto, ACTION, input).await;
    let job = &v["queueAction"]["job"];
    assert_eq!(v["queueAction"]["dryRun"], false);
    assert_eq!(job["ids"], json!(ids(&[1, 3])), "each id once");
    assert_eq!(job["action"], "FREEZE");
    assert_eq!(job["actor"], "otto");
    assert_eq!(job["reason"], "stuck for a day");
    let job_id = job["id"].as_str().expect("job id").to_string();

    let submitted = control.jobs();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].job_id, job_id);
    assert_eq!(submitted[0].ids, vec![id(1), id(3)]);
    let ttl = submitted[0].expires_at - submitted[0].requested_at;
    assert_eq!(ttl, chrono::Duration::minutes(10), "the default lifetime");

    let v = server.data(&otto, JOB, json!({ "id": job_id })).await;
    let read = &v["queueJob"];
    assert_eq!(read["done"], 2);
    assert_eq!(read["pending"], 0);
    assert_eq!(read["complete"], true);
    assert_eq!(read["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(read["results"][0]["status"], "DONE");

    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let v = server
        .data(
            &viewer,
            "{ queueJobs { nodes { id done pending } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(v["queueJobs"]["nodes"][0]["id"], job_id.as_str());
    assert_eq!(v["queueJobs"]["nodes"][0]["done"], 2);

    // One entry for the request, one per message's result.
    let audit = audit_of(&server, "queue_freeze").await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    let request = audit
        .iter()
        .find(|e| e["params"]["ids"].is_array())
        .expect("the request's entry");
    assert_eq!(request["outcome"], "ok");
    assert_eq!(request["role"], "operator");
    assert_eq!(request["clientIp"], "127.0.0.1");
    assert_eq!(request["target"], MX1);
    assert_eq!(request["params"]["job_id"], job_id.as_str());
    assert_eq!(request["params"]["reason"], "stuck for a day");
    let results: Vec<&Value> = audit
        .iter()
        .filter(|e| e["params"]["id"].is_string())
        .collect();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|e| e["actor"] == "otto"
        && e["outcome"] == "ok"
        && e["params"]["reason"] == "stuck for a day"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_by_filter_covers_the_matching_messages_of_the_current_queue() {
    let (server, control, _dir) = server().await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let input = json!({ "i": { "host": MX1, "action": "DELIVER",
        "filter": { "recipient": "wait@example.com", "recipientScope": "ANY" } } });
    let v = server.data(&admin, ACTION, input).await;
    assert_eq!(v["queueAction"]["ids"], json!(ids(&[1, 4])));
    assert_eq!(control.jobs()[0].ids, vec![id(1), id(4)]);

    let nothing = json!({ "i": { "host": MX1, "action": "DELIVER",
        "filter": { "sender": "nobody-sends-this" } } });
    let v = server.query(Some(&admin), ACTION, nothing).await;
    assert_eq!(error_code(&v), "BAD_USER_INPUT", "{v}");
    assert_eq!(control.jobs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_may_not_act_and_the_refusal_is_audited() {
    let (server, control, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let input = json!({ "i": { "host": MX1, "action": "REMOVE",
        "ids": [id(1).to_string()], "reason": "cleanup" } });
    let v = server.query(Some(&viewer), ACTION, input).await;
    assert_eq!(error_code(&v), "FORBIDDEN", "{v}");
    assert!(control.jobs().is_empty());

    let audit = audit_of(&server, "queue_remove").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"], "val");
    assert_eq!(audit[0]["role"], "viewer");
    assert_eq!(audit[0]["outcome"], "denied");
    assert_eq!(audit[0]["params"]["reason"], "cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_id_refuses_the_request_before_anything_runs() {
    let (server, control, _dir) = server().await;
    let otto = server.token("otto", OPERATOR_PASSWORD).await;
    let input = json!({ "i": { "host": MX1, "action": "REMOVE",
        "ids": [id(1).to_string(), "1xAAAA-00000-00; rm -rf /"] } });
    let v = server.query(Some(&otto), ACTION, input).await;
    assert_eq!(error_code(&v), "BAD_USER_INPUT", "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("not an Exim message id"), "{message}");

    assert!(control.jobs().is_empty(), "nothing submitted");
    let v = server
        .data(&otto, "{ queueJobs { nodes { id } } }", json!({}))
        .await;
    assert_eq!(v["queueJobs"]["nodes"], json!([]), "no job saved");
    let audit = audit_of(&server, "queue_remove").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["outcome"], "failed");

    let neither = json!({ "i": { "host": MX1, "action": "REMOVE" } });
    let v = server.query(Some(&otto), ACTION, neither).await;
    assert_eq!(error_code(&v), "BAD_USER_INPUT", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_messages_than_the_limit_are_refused() {
    let config = ApiConfig {
        queue_max_ids: 2,
        ..test_config()
    };
    let (server, control, _dir) = server_with(config, Some(true)).await;
    let control = control.expect("queue control");
    let otto = server.token("otto", OPERATOR_PASSWORD).await;
    let input = json!({ "i": { "host": MX1, "action": "FREEZE", "ids": ids(&[1, 2, 3]) } });
    let v = server.query(Some(&otto), ACTION, input).await;
    assert_eq!(error_code(&v), "BULK_LIMIT", "{v}");
    let by_filter = json!({ "i": { "host": MX1, "action": "FREEZE", "filter": {} } });
    let v = server.query(Some(&otto), ACTION, by_filter).await;
    assert_eq!(error_code(&v), "BULK_LIMIT", "{v}");
    assert!(control.jobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_queue_control_actions_and_views_are_refused() {
    let (server, _none, _dir) = server_with(test_config(), None).await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let input = json!({ "i": { "host": MX1, "action": "THAW", "ids": ids(&[2]) } });
    let v = server.query(Some(&admin), ACTION, input).await;
    assert_eq!(error_code(&v), "QUEUE_UNAVAILABLE", "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("queue actions are not available in this process"),
        "{message}"
    );
    let view =
        "query($h: String!, $id: String!) { queuedMessage(host: $h, id: $id, view: HEADERS) }";
    let v = server
        .query(
            Some(&admin),
            view,
            json!({ "h": MX1, "id": id(1).to_string() }),
        )
        .await;
    assert_eq!(error_code(&v), "QUEUE_UNAVAILABLE", "{v}");

    // Reading the queue needs no control.
    let v = server.data(&admin, QUEUE, json!({ "f": {} })).await;
    assert_eq!(edge_ids(&v).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_views_are_given_by_role_and_audited() {
    let config = ApiConfig {
        queue_view_roles: vec![Role::Operator, Role::Admin],
        ..test_config()
    };
    let (server, control, _dir) = server_with(config, Some(true)).await;
    let control = control.expect("queue control");
    let view = "query($id: String!, $v: MessageView!) {
        queuedMessage(host: \"mx1.example.org\", id: $id, view: $v) }";
    let ask = |token: String, v: &'static str| {
        let server = &server;
        async move {
            server
                .query(
                    Some(&token),
                    view,
                    json!({ "id": id(1).to_string(), "v": v }),
                )
                .await
        }
    };
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let otto = server.token("otto", OPERATOR_PASSWORD).await;

    let log = ask(viewer.clone(), "LOG").await;
    assert_eq!(
        log["data"]["queuedMessage"],
        format!("Log of {} on {MX1}", id(1))
    );
    let headers = ask(viewer.clone(), "HEADERS").await;
    assert_eq!(error_code(&headers), "FORBIDDEN", "{headers}");
    let body = ask(viewer, "BODY").await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let headers = ask(otto.clone(), "HEADERS").await;
    assert!(headers.get("errors").is_none(), "{headers}");
    let bad = server
        .query(
            Some(&otto),
            view,
            json!({ "id": "../../etc/passwd", "v": "BODY" }),
        )
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");
    assert_eq!(control.views(), 2, "refused views never reach Exim");

    let audit = audit_of(&server, "queue_view").await;
    let outcomes: Vec<(&str, &str, &str)> = audit
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or(""),
                e["params"]["view"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("val", "log", "ok"),
            ("val", "headers", "denied"),
            ("val", "body", "denied"),
            ("otto", "headers", "ok"),
            ("otto", "body", "failed"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_results_stream_over_the_subscription_as_they_arrive() {
    let config = ApiConfig {
        queue_results_poll: Duration::from_millis(50),
        ..test_config()
    };
    let (server, control, _dir) = server_with(config, Some(false)).await;
    let control = control.expect("queue control");
    let otto = server.token("otto", OPERATOR_PASSWORD).await;
    let input = json!({ "i": { "host": MX1, "action": "GIVE_UP", "ids": ids(&[1, 2, 3]) } });
    let v = server.data(&otto, ACTION, input).await;
    let job_id = v["queueAction"]["job"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let job = control.jobs().remove(0);

    // The first result is in before the subscription starts.
    let store = Arc::clone(&server.state.store);
    record_results(&*store, &[result_of(&job, id(1), QueueActionStatus::Done)])
        .await
        .expect("result");

    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let mut ws = connect(&server).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "token": viewer } }),
    )
    .await;
    assert_eq!(next(&mut ws).await, Ok(json!({ "type": "connection_ack" })));
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "r", "payload": {
            "query": "subscription($j: String!) { queueJobResults(jobId: $j) { id status } }",
            "variables": { "j": job_id } } }),
    )
    .await;
    let first = next(&mut ws).await.expect("a result");
    assert_eq!(
        first["payload"]["data"]["queueJobResults"]["id"],
        id(1).to_string()
    );

    // The others as the node reports them.
    for (n, status) in [(2, QueueActionStatus::Failed), (3, QueueActionStatus::Done)] {
        record_results(&*store, &[result_of(&job, id(n), status)])
            .await
            .expect("result");
        let msg = next(&mut ws).await.expect("a result");
        assert_eq!(msg["type"], "next", "{msg}");
        assert_eq!(
            msg["payload"]["data"]["queueJobResults"]["id"],
            id(n).to_string()
        );
    }
    let done = next(&mut ws).await.expect("the end");
    assert_eq!(done, json!({ "type": "complete", "id": "r" }));

    let v = server.data(&otto, JOB, json!({ "id": job_id })).await;
    assert_eq!(v["queueJob"]["done"], 2);
    assert_eq!(v["queueJob"]["failed"], 1);

    // An unknown job is an error, not a silent stream.
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "x", "payload": {
            "query": "subscription { queueJobResults(jobId: \"nope\") { id } }" } }),
    )
    .await;
    let msg = next(&mut ws).await.expect("an answer");
    assert!(msg["payload"]["errors"].is_array(), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_viewers_see_queues_without_local_parts_and_still_filter_by_address() {
    let config = ApiConfig {
        mask_viewer_addresses: true,
        ..test_config()
    };
    let (server, _control, _dir) = server_with(config, Some(true)).await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let otto = server.token("otto", OPERATOR_PASSWORD).await;
    let all = json!({ "f": { "recipientScope": "ANY" }, "first": 50 });
    let locals = [
        "alice", "done", "wait", "carol", "bob", "erin", "news", "x@", "y@",
    ];

    let seen = server.data(&viewer, QUEUE, all.clone()).await;
    assert_eq!(edge_ids(&seen).len(), 5, "{seen}");
    let text = seen.to_string();
    for local in locals {
        assert!(!text.contains(local), "a viewer sees {local}: {text}");
    }
    assert!(text.contains("@example.org") && text.contains("@example.net"));

    // Whole for an operator; a viewer's filter takes the whole address.
    let whole = server.data(&otto, QUEUE, all).await.to_string();
    for local in locals {
        assert!(whole.contains(local), "an operator misses {local}");
    }
    let by_sender = json!({ "host": MX1, "f": { "sender": "alice@example.org" } });
    let found = server.data(&viewer, QUEUE, by_sender).await;
    assert_eq!(edge_ids(&found), ids(&[1]), "{found}");
}
