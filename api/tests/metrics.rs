//! The API's metrics on `/metrics`, over real HTTP and WebSocket
//! connections: operations by type and root field, their durations, open
//! subscriptions, refusals; labels stay bounded whatever clients name
//! their operations.

mod common;

use std::sync::Arc;
use std::time::Duration;

use exim_pilot_store::SqliteStore;
use serde_json::json;

use common::*;

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    (start(Arc::new(store), test_config()).await, dir)
}

async fn metrics(server: &TestServer) -> String {
    server
        .http
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of the sample of `name` with all of `labels`, 0 without one.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_counted_and_timed_by_type_and_root_field() {
    let (server, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    for _ in 0..3 {
        server.data(&viewer, "{ hosts { name } }", json!({})).await;
    }
    server
        .data(
            &viewer,
            "query Dashboard { me { name } hosts { name } }",
            json!({}),
        )
        .await;
    let bad = server
        .query(Some(&viewer), "{ noSuchField }", json!({}))
        .await;
    assert!(bad.get("errors").is_some());

    let text = metrics(&server).await;
    let ops = "exim_pilot_api_operations_total";
    let ok = [("type", "query"), ("outcome", "ok")];
    assert_eq!(
        sample(&text, ops, &[ok[0], ok[1], ("field", "hosts")]),
        4.0,
        "{text}"
    );
    assert_eq!(sample(&text, ops, &[ok[0], ok[1], ("field", "me")]), 1.0);
    assert_eq!(
        sample(&text, ops, &[("type", "mutation"), ("field", "login")]),
        1.0
    );
    assert_eq!(
        sample(&text, ops, &[("field", "invalid"), ("outcome", "error")]),
        1.0
    );
    let count = "exim_pilot_api_operation_duration_seconds_count";
    assert_eq!(
        sample(&text, count, &[("type", "query"), ("field", "hosts")]),
        4.0
    );
    let sum = "exim_pilot_api_operation_duration_seconds_sum";
    assert!(sample(&text, sum, &[("field", "hosts")]) > 0.0);
    assert!(!text.contains("Dashboard"), "operation names are no labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_names_do_not_make_new_series() {
    let (server, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("exim_pilot_api_operations_total{"))
            .count()
    };
    server.data(&viewer, "{ hosts { name } }", json!({})).await;
    let before = series(&metrics(&server).await);
    for i in 0..50 {
        let query = format!("query Name{i} {{ hosts {{ name }} }}");
        server.data(&viewer, &query, json!({})).await;
        let junk = format!("{{ field{i} }}");
        server.query(Some(&viewer), &junk, json!({})).await;
    }
    let text = metrics(&server).await;
    // One more series at most: unknown fields all count as `invalid`.
    assert!(series(&text) <= before + 1, "{text}");
    assert!(!text.contains("field7") && !text.contains("Name7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_open_subscriptions_are_counted() {
    let (server, _dir) = server().await;
    let failures = "exim_pilot_api_auth_failures_total";

    assert_eq!(
        error_code(&server.login("val", "wrong-password-1").await),
        "INVALID_CREDENTIALS"
    );
    let (status, _) = server
        .post(
            Some("not.a.token"),
            json!({ "query": "{ hosts { name } }" }),
        )
        .await;
    assert_eq!(status, 401);
    server.query(None, "{ hosts { name } }", json!({})).await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let v = server
        .query(Some(&viewer), "{ users { name } }", json!({}))
        .await;
    assert_eq!(error_code(&v), "FORBIDDEN");

    let text = metrics(&server).await;
    for reason in ["credentials", "token", "no_token", "forbidden"] {
        assert_eq!(
            sample(&text, failures, &[("reason", reason)]),
            1.0,
            "{reason}: {text}"
        );
    }

    // A subscription is open while it streams, and counted when it ends.
    let open = "exim_pilot_api_subscriptions_open";
    assert_eq!(sample(&metrics(&server).await, open, &[]), 0.0);
    let mut ws = connect(&server).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "token": viewer } }),
    )
    .await;
    assert_eq!(next(&mut ws).await.expect("ack")["type"], "connection_ack");
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "1",
            "payload": { "query": "subscription { logRecords { text } }" } }),
    )
    .await;
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = sample(&metrics(&server).await, open, &[]);
        if seen == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 1.0);
    send(&mut ws, json!({ "type": "complete", "id": "1" })).await;
    for _ in 0..100 {
        seen = sample(&metrics(&server).await, open, &[]);
        if seen == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 0.0);
    let text = metrics(&server).await;
    let ops = "exim_pilot_api_operations_total";
    let labels = [("type", "subscription"), ("field", "logRecords")];
    assert_eq!(sample(&text, ops, &labels), 1.0, "{text}");
}
