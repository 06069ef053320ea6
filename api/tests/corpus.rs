//! Every query against both stores loaded with the corpus, over real
//! HTTP: the numbers equal the lifecycle ground truth.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use exim_pilot_store::{ClickHouseStore, SqliteStore, Store};
use serde_json::{json, Value};

use common::*;

const SCENARIO: &str = "s01_core_all";

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Runs every query and checks it against the ground truth.
async fn queries_agree_with_ground_truth(store: Arc<dyn Store>) {
    load_corpus(&*store, SCENARIO).await;
    let server = start(store, test_config()).await;
    let truth = ground_truth(SCENARIO);
    let totals = &truth["totals"];
    let outcome = |k: &str| totals["final_addresses_by_outcome"].get(k).map_or(0, int);
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;

    // me, users
    let me = server
        .data(&viewer, "{ me { name role } }", json!({}))
        .await;
    assert_eq!(me["me"], json!({ "name": "val", "role": "viewer" }));
    let users = server
        .data(&admin, "{ users { name role disabled } }", json!({}))
        .await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(2), "{users}");

    // deliverability: the totals over everything.
    let d = server
        .data(
            &viewer,
            "{ deliverability(groupBy: TOTAL) { key messages addresses delivered bounced \
               deferred stillDeferred rejected deliveryRate delayP50Ms } }",
            json!({}),
        )
        .await;
    let rows = d["deliverability"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{d}");
    let t = &rows[0];
    assert_eq!(int(&t["messages"]), int(&totals["messages"]), "{t}");
    assert_eq!(int(&t["addresses"]), int(&totals["final_addresses"]), "{t}");
    assert_eq!(int(&t["delivered"]), outcome("delivered"), "{t}");
    assert_eq!(int(&t["bounced"]), outcome("bounced"), "{t}");
    assert!(
        int(&t["rejected"]) >= int(&totals["smtp_rejections_seen_by_client"]),
        "{t}"
    );

    // By domain and by day: the groups add up to the totals.
    let by_domain = server
        .data(
            &viewer,
            "{ deliverability(groupBy: DOMAIN, bucket: DAY, top: 1000) { key bucketStart addresses delivered } }",
            json!({}),
        )
        .await;
    let rows = by_domain["deliverability"].as_array().expect("rows");
    let sum = |k: &str| rows.iter().map(|r| int(&r[k])).sum::<i64>();
    assert_eq!(sum("addresses"), int(&totals["final_addresses"]));
    assert_eq!(sum("delivered"), outcome("delivered"));
    assert!(rows.iter().all(|r| r["bucketStart"].is_string()));
    let by_host = server
        .data(
            &viewer,
            "{ deliverability(groupBy: LOCAL_HOST) { key messages } }",
            json!({}),
        )
        .await;
    assert_eq!(
        by_host["deliverability"],
        json!([{ "key": HOST, "messages": int(&totals["messages"]) }])
    );

    // messages: every message exactly once over the pages.
    let mut ids = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = server
            .data(
                &viewer,
                "query($after: String) { messages(first: 40, after: $after) \
                 { edges { node { id host } cursor } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await;
        let m = &page["messages"];
        for e in m["edges"].as_array().expect("edges") {
            assert!(
                ids.insert(e["node"]["id"].as_str().expect("id").to_string()),
                "{e}"
            );
        }
        if !m["pageInfo"]["hasNextPage"].as_bool().expect("hasNextPage") {
            break;
        }
        after = m["pageInfo"]["endCursor"].as_str().map(str::to_string);
    }
    let truth_ids: BTreeSet<String> = truth["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, truth_ids);

    // A filtered search: the bounced ones.
    let bounced = server
        .data(
            &viewer,
            "{ messages(filter: { outcome: \"bounced\" }, first: 500) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let expected_bounced = truth["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| {
            m["deliveries"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["outcome"] == "bounced"))
        })
        .count();
    assert_eq!(
        bounced["messages"]["edges"].as_array().map(Vec::len),
        Some(expected_bounced)
    );

    // message: recipients, attempts and raw lines of each message of the
    // ground truth with deliveries.
    for m in truth["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .take(40)
    {
        let id = m["id"].as_str().expect("id");
        let got = server
            .data(
                &viewer,
                "query($h: String!, $id: String!) { message(host: $h, id: $id) { id state sender \
                 recipients { address outcome attempts { result } } rawLines { text kind } } }",
                json!({ "h": HOST, "id": id }),
            )
            .await;
        let msg = &got["message"];
        assert_eq!(msg["id"], json!(id));
        let deliveries = m["deliveries"].as_array().expect("deliveries");
        let recipients = msg["recipients"].as_array().expect("recipients");
        assert_eq!(recipients.len(), deliveries.len(), "{id}: {msg}");
        let attempts: usize = recipients
            .iter()
            .map(|r| r["attempts"].as_array().map_or(0, Vec::len))
            .sum();
        let truth_attempts: i64 = deliveries.iter().map(|d| int(&d["attempts"])).sum();
        assert_eq!(attempts as i64, truth_attempts, "{id}: {msg}");
        let lines = msg["rawLines"].as_array().expect("lines");
        assert!(
            lines
                .iter()
                .any(|l| l["text"].as_str().is_some_and(|t| t.contains(id))),
            "{id}: {msg}"
        );
    }

    // hosts
    let hosts = server
        .data(&viewer, "{ hosts { name messages records } }", json!({}))
        .await;
    assert_eq!(hosts["hosts"][0]["name"], json!(HOST));
    assert_eq!(
        int(&hosts["hosts"][0]["messages"]),
        int(&totals["messages"])
    );

    // logLines: a message id finds its lines in the main log.
    let some_id = truth["messages"][0]["id"].as_str().expect("id");
    let lines = server
        .data(
            &viewer,
            "query($t: String!) { logLines(filter: { text: $t, log: \"main\" }) { text messageId } }",
            json!({ "t": some_id }),
        )
        .await;
    let lines = lines["logLines"].as_array().expect("lines");
    assert!(!lines.is_empty());
    assert!(lines
        .iter()
        .all(|l| l["text"].as_str().is_some_and(|t| t.contains(some_id))));

    // rejects and failure reasons
    let rejects = server
        .data(
            &viewer,
            "{ rejects(first: 500) { nodes { class temporary } } }",
            json!({}),
        )
        .await;
    let n = rejects["rejects"]["nodes"].as_array().map_or(0, Vec::len) as i64;
    assert!(
        n >= int(&totals["smtp_rejections_seen_by_client"]),
        "{rejects}"
    );
    assert_eq!(
        n,
        int(&t["rejected"]),
        "the rejections listed are the ones counted"
    );
    let reasons = server
        .data(
            &viewer,
            "{ failureReasons { class addresses bounced } }",
            json!({}),
        )
        .await;
    let bounced_by_reason: i64 = reasons["failureReasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| int(&r["bounced"]))
        .sum();
    assert_eq!(bounced_by_reason, outcome("bounced"), "{reasons}");

    // topSenders: every sender with its messages and addresses.
    let mut senders: BTreeMap<String, [i64; 4]> = BTreeMap::new();
    for m in truth["messages"].as_array().expect("messages") {
        let sender = match m["sender"].as_str().expect("sender") {
            "" => "<>".to_string(),
            s => s.to_ascii_lowercase(),
        };
        let n = senders.entry(sender).or_default();
        n[0] += 1;
        for d in m["deliveries"].as_array().expect("deliveries") {
            n[1] += 1;
            n[2] += i64::from(d["outcome"] == "delivered");
            n[3] += i64::from(d["outcome"] == "bounced");
        }
    }
    let top = server
        .data(
            &viewer,
            "{ topSenders(top: 1000) { sender messages addresses delivered bounced } }",
            json!({}),
        )
        .await;
    let rows = top["topSenders"].as_array().expect("senders");
    let got: BTreeMap<String, [i64; 4]> = rows
        .iter()
        .map(|r| {
            let n = ["messages", "addresses", "delivered", "bounced"].map(|k| int(&r[k]));
            (r["sender"].as_str().expect("sender").to_string(), n)
        })
        .collect();
    assert_eq!(got, senders, "{top}");
    assert!(
        rows.windows(2)
            .all(|w| int(&w[0]["messages"]) >= int(&w[1]["messages"])),
        "{top}"
    );
    let top3 = server
        .data(&viewer, "{ topSenders(top: 3) { sender } }", json!({}))
        .await;
    assert_eq!(top3["topSenders"].as_array().map(Vec::len), Some(3));
    assert_eq!(top3["topSenders"][0]["sender"], rows[0]["sender"]);

    // topRecipients: every final address with what became of it.
    #[derive(Default, Debug, PartialEq)]
    struct Rcpt {
        ids: BTreeSet<String>,
        delivered: i64,
        deferred: i64,
        still_deferred: i64,
        bounced: i64,
        attempted: bool,
    }
    let mut rcpts: BTreeMap<String, Rcpt> = BTreeMap::new();
    for m in truth["messages"].as_array().expect("messages") {
        for d in m["deliveries"].as_array().expect("deliveries") {
            let address = d["address"].as_str().expect("address").to_ascii_lowercase();
            let r = rcpts.entry(address).or_default();
            r.ids.insert(m["id"].as_str().expect("id").to_string());
            let results = d["attempt_results"].as_array().cloned().unwrap_or_default();
            let deferred_once = results.iter().any(|a| a == "defer");
            r.delivered += i64::from(d["outcome"] == "delivered");
            r.deferred += i64::from(deferred_once);
            r.still_deferred +=
                i64::from(d["outcome"] == "deferred_pending" && int(&d["attempts"]) > 0);
            r.bounced += i64::from(d["outcome"] == "bounced");
            r.attempted |= int(&d["attempts"]) > 0;
        }
    }
    // Two queries, each within the complexity limit: counts, then
    // deferrals and times, joined by address.
    let top = server
        .data(
            &viewer,
            "{ topRecipients(top: 500) { address messages delivered bounced } }",
            json!({}),
        )
        .await;
    let more = server
        .data(
            &viewer,
            "{ topRecipients(top: 500) { address deferred stillDeferred lastAttemptAt } }",
            json!({}),
        )
        .await;
    let more = more["topRecipients"].as_array().expect("recipients");
    let mut rows = top["topRecipients"].as_array().expect("recipients").clone();
    assert_eq!(rows.len(), more.len());
    for (row, other) in rows.iter_mut().zip(more) {
        assert_eq!(row["address"], other["address"], "the same order twice");
        for k in ["deferred", "stillDeferred", "lastAttemptAt"] {
            row[k] = other[k].clone();
        }
    }
    assert_eq!(rows.len(), rcpts.len(), "{top}");
    for row in &rows {
        let address = row["address"].as_str().expect("address");
        let r = rcpts
            .get(address)
            .unwrap_or_else(|| panic!("{address}: {row}"));
        let got = [
            "messages",
            "delivered",
            "deferred",
            "stillDeferred",
            "bounced",
        ]
        .map(|k| int(&row[k]));
        let expected = [
            r.ids.len() as i64,
            r.delivered,
            r.deferred,
            r.still_deferred,
            r.bounced,
        ];
        assert_eq!(got, expected, "{address}: {row}");
        if r.attempted {
            assert!(row["lastAttemptAt"].is_string(), "{address}: {row}");
        }
    }
    assert!(
        rows.windows(2)
            .all(|w| int(&w[0]["messages"]) >= int(&w[1]["messages"])),
        "{top}"
    );

    // For one domain, only its addresses.
    let domain = "partner.test";
    let top = server
        .data(
            &viewer,
            "query($d: String) { topRecipients(domain: $d) { address messages } }",
            json!({ "d": domain }),
        )
        .await;
    let rows = top["topRecipients"].as_array().expect("recipients");
    let expected = rcpts
        .keys()
        .filter(|a| a.ends_with(&format!("@{domain}")))
        .count();
    assert!(expected > 0, "the corpus has addresses at {domain}");
    assert_eq!(rows.len(), expected.min(20), "{top}");
    assert!(rows.iter().all(|r| r["address"]
        .as_str()
        .is_some_and(|a| a.ends_with(&format!("@{domain}")))));

    // auditLog: the logins are there; viewers may not read it.
    let audit = server
        .data(
            &admin,
            "{ auditLog(filter: { action: \"login\" }) { nodes { actor outcome clientIp } } }",
            json!({}),
        )
        .await;
    let nodes = audit["auditLog"]["nodes"].as_array().expect("nodes");
    assert!(nodes
        .iter()
        .any(|n| n["actor"] == "root" && n["outcome"] == "ok"));
    assert!(nodes.iter().all(|n| n["clientIp"] == "127.0.0.1"));
    let refused = server
        .query(Some(&viewer), "{ auditLog { nodes { actor } } }", json!({}))
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_agree_with_ground_truth_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    queries_agree_with_ground_truth(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_agree_with_ground_truth_on_clickhouse() {
    let server = exim_pilot_testkit::Server::clickhouse();
    let database = format!("api_corpus_{}", std::process::id());
    let store = ClickHouseStore::connect(server.address(), &database)
        .await
        .expect("ClickHouse store");
    queries_agree_with_ground_truth(Arc::new(store)).await;
}
