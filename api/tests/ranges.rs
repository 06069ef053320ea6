//! Reports over ranges of many days read whole days from day cells and the
//! partial days at either end from hour cells: the numbers must be the
//! same as those summed from hour cells alone, on both stores, whatever
//! the range's ends.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use exim_pilot_store::conformance::fixtures::base;
use exim_pilot_store::conformance::synthetic::fill;
use exim_pilot_store::{ClickHouseStore, SqliteStore, Store};
use serde_json::{json, Value};

use common::*;

/// A report's range: since, until.
type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Per group: messages, addresses, delivered, bounced.
type Sums = BTreeMap<String, [i64; 4]>;

fn sums(rows: &Value) -> Sums {
    let mut out = Sums::new();
    for row in rows.as_array().expect("rows") {
        let entry = out
            .entry(row["key"].as_str().unwrap_or("").to_string())
            .or_default();
        for (i, field) in ["messages", "addresses", "delivered", "bounced"]
            .iter()
            .enumerate()
        {
            entry[i] += row[field].as_i64().expect("a count");
        }
    }
    out
}

async fn day_and_hour_cells_agree(store: Arc<dyn Store>) {
    fill(&*store, 3_000, 500).await.expect("filling the store");
    let server = start(store, test_config()).await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let query = |bucket: &str| {
        format!(
            "query($s: DateTime, $u: DateTime) {{ deliverability(range: {{ since: $s, until: $u }}, \
             groupBy: DOMAIN, top: 1000{bucket}) {{ key messages addresses delivered bounced }} }}"
        )
    };
    let end = base();
    let ranges: [Range; 5] = [
        // Ends inside days, on day boundaries, open, and within one day.
        (
            Some(end - Duration::hours(30 * 24 + 7)),
            Some(end - Duration::minutes(90)),
        ),
        (
            Some(end - Duration::days(20) - Duration::hours(10)),
            Some(end - Duration::hours(10)),
        ),
        (None, Some(end - Duration::days(45) + Duration::minutes(13))),
        (Some(end - Duration::days(60) + Duration::hours(5)), None),
        (
            Some(end - Duration::hours(5)),
            Some(end - Duration::hours(1)),
        ),
    ];
    for (since, until) in ranges {
        let variables = json!({ "s": since, "u": until });
        let total = server.data(&viewer, &query(""), variables.clone()).await;
        let hourly = server
            .data(&viewer, &query(", bucket: HOUR"), variables.clone())
            .await;
        let daily = server
            .data(&viewer, &query(", bucket: DAY"), variables)
            .await;
        let expected = sums(&hourly["deliverability"]);
        assert!(!expected.is_empty(), "no data in {since:?}..{until:?}");
        assert_eq!(
            sums(&total["deliverability"]),
            expected,
            "{since:?}..{until:?}"
        );
        assert_eq!(
            sums(&daily["deliverability"]),
            expected,
            "{since:?}..{until:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_and_hour_cells_agree_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    day_and_hour_cells_agree(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_and_hour_cells_agree_on_clickhouse() {
    let server = exim_pilot_testkit::Server::clickhouse();
    let database = format!("api_ranges_{}", std::process::id());
    let store = ClickHouseStore::connect(server.address(), &database)
        .await
        .expect("ClickHouse store");
    day_and_hour_cells_agree(Arc::new(store)).await;
}
