//! The Grafana dashboards of `deploy/grafana/dashboards/` run on the data
//! they are made for: a corpus scenario goes through the processor's
//! pipeline into fleet mode's ClickHouse store, and every panel's SQL (and
//! every dashboard variable's) is expanded as the ClickHouse data source
//! plugin would, for a fixed time range and interval, then run on
//! ClickHouse 18.16 (a real server from the test kit) and on a current
//! ClickHouse (chdb, in-process, holding the same rows in tables made by
//! the store's own DDL). Each query must succeed, return the columns the
//! panel reads, and return rows wherever the corpus has the data.
//!
//! Both engines are required: without them the test fails, it never
//! skips (`scripts/services.sh install` sets them up).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use exim_pilot_ingest::queue::parse_bp;
use exim_pilot_ingest::Importer;
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::pipeline::Pipeline;
use exim_pilot_schema::queue::QueueSnapshot;
use exim_pilot_schema::Zone;
use exim_pilot_store::{ClickHouseStore, Store};
use exim_pilot_testkit::Server;
use serde_json::Value;

/// The start of the time range the dashboards are shown for: the
/// corpus's day, 2026-12-04 UTC, as Unix seconds.
const FROM: i64 = 1_796_342_400;

/// The end of the range: a day later, or an hour from now when that is
/// later, so that the time records were read (that of the test's import)
/// falls in it too.
fn to() -> i64 {
    (FROM + 86_400).max(chrono::Utc::now().timestamp() + 3_600)
}

/// The interval Grafana would give `$__timeInterval` for that range.
const INTERVAL_S: i64 = 60;

/// The mail server the corpus is stored under.
const HOST: &str = "mx1.lab.test";

/// A destination domain of the corpus with deliveries, deferrals and
/// failures.
const DOMAIN: &str = "tempfail.test";

/// The value of the variables' "All" option.
const ALL: &str = "__all";

/// The database the corpus is stored in.
const DATABASE: &str = "dashboards";

/// The columns each panel's query must return, by dashboard and panel
/// title. A panel missing here fails the test, so that a new panel is
/// checked too.
const COLUMNS: &[(&str, &str, &[&str])] = &[
    ("Deliverability", "variable host", &["host"]),
    ("Deliverability", "variable domain", &["domain"]),
    ("Deliverability", "Messages received", &["time", "messages"]),
    (
        "Deliverability",
        "Final outcome of each address",
        &["time", "delivered", "deferred", "bounced", "queued"],
    ),
    (
        "Deliverability",
        "Delivery attempts by result (%)",
        &["time", "delivered", "deferred", "failed"],
    ),
    (
        "Deliverability",
        "By destination domain",
        &[
            "domain",
            "addresses",
            "delivered",
            "deferred",
            "bounced",
            "queued",
            "delivered %",
        ],
    ),
    (
        "Deliverability",
        "By mail server",
        &[
            "host",
            "messages",
            "addresses",
            "delivered",
            "deferred",
            "bounced",
            "queued",
            "delivered %",
        ],
    ),
    ("Failures", "variable host", &["host"]),
    ("Failures", "variable domain", &["domain"]),
    (
        "Failures",
        "Failed and deferred attempts by reason",
        &["time", "reason", "attempts"],
    ),
    (
        "Failures",
        "Failure reasons",
        &[
            "reason",
            "deferred",
            "failed",
            "addresses",
            "domains",
            "example",
        ],
    ),
    (
        "Failures",
        "Top failing domains",
        &[
            "domain",
            "deferred",
            "failed",
            "addresses",
            "main reason",
            "last attempt",
        ],
    ),
    (
        "Failures",
        "Failing remote hosts",
        &["remote host", "deferred", "failed", "main reason"],
    ),
    ("Rejections", "variable host", &["host"]),
    (
        "Rejections",
        "Rejections by class",
        &["time", "class", "rejections"],
    ),
    (
        "Rejections",
        "Rejections by client IP",
        &[
            "client IP",
            "rejections",
            "temporary",
            "classes",
            "last client name",
            "last",
        ],
    ),
    (
        "Rejections",
        "Authentication failures over time",
        &["time", "failures"],
    ),
    (
        "Rejections",
        "Authentication failures by client IP",
        &["client IP", "failures", "hosts", "last reason", "last"],
    ),
    (
        "Rejections",
        "Rejections by SMTP stage",
        &["stage", "rejections"],
    ),
    ("Queues", "variable host", &["host"]),
    (
        "Queues",
        "Queues now",
        &[
            "host",
            "snapshot",
            "seconds since snapshot",
            "messages",
            "frozen",
            "bounces",
            "recipients waiting",
            "bytes",
            "oldest age seconds",
        ],
    ),
    ("Queues", "Queue size", &["time", "host", "messages"]),
    ("Queues", "Frozen messages", &["time", "host", "frozen"]),
    (
        "Queues",
        "Oldest message age",
        &["time", "host", "oldest age seconds"],
    ),
    (
        "Queues",
        "Oldest queued messages",
        &[
            "host",
            "id",
            "age seconds",
            "size",
            "sender",
            "frozen",
            "recipients waiting",
        ],
    ),
    ("Pipeline health", "variable host", &["host"]),
    (
        "Pipeline health",
        "Mail servers",
        &[
            "host",
            "last read",
            "seconds since last read",
            "last logged",
            "records",
            "messages",
            "rejections",
        ],
    ),
    (
        "Pipeline health",
        "Ingest lag per mail server",
        &["time", "host", "lag seconds"],
    ),
    (
        "Pipeline health",
        "Records stored per second",
        &["time", "host", "records per second"],
    ),
    (
        "Pipeline health",
        "Records per hour by kind",
        &["time", "event kind", "records"],
    ),
    (
        "Pipeline health",
        "Unparsed records",
        &["time", "host", "unparsed"],
    ),
    (
        "Pipeline health",
        "Undecodable Kafka records",
        &["read", "topic", "partition", "offset", "problem"],
    ),
];

/// Panels the corpus has no data for: a Kafka record that cannot be
/// decoded never comes from a file import, and the corpus holds no log
/// line the parser cannot classify.
const MAY_BE_EMPTY: &[&str] = &["Unparsed records", "Undecodable Kafka records"];

/// One query of a dashboard.
#[derive(Debug)]
struct Query {
    dashboard: String,
    panel: String,
    sql: String,
}

impl Query {
    fn name(&self) -> String {
        format!("{} / {}", self.dashboard, self.panel)
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every dashboard file.
fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "dashboards missing in {}", dir.display());
    files
}

/// The SQL of every panel and variable of every dashboard.
fn queries() -> Vec<Query> {
    let mut out = Vec::new();
    for file in dashboard_files() {
        let text = std::fs::read_to_string(&file).expect("reading a dashboard");
        let dashboard: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
        let title = dashboard["title"].as_str().expect("dashboard title");
        assert!(
            dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{title}: no uid"
        );
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if variable["type"] == "query" {
                let name = variable["name"].as_str().expect("variable name");
                let sql = variable["query"]["rawSql"]
                    .as_str()
                    .or_else(|| variable["query"].as_str())
                    .expect("variable SQL");
                out.push(Query {
                    dashboard: title.to_string(),
                    panel: format!("variable {name}"),
                    sql: sql.to_string(),
                });
            }
        }
        let mut panels: Vec<&Value> = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            panels.push(panel);
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        }
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let panel_title = panel["title"].as_str().expect("panel title");
                let sql = target["rawSql"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{title} / {panel_title}: no rawSql"));
                assert_eq!(
                    target["datasource"]["type"], "grafana-clickhouse-datasource",
                    "{title} / {panel_title}: not the ClickHouse data source"
                );
                out.push(Query {
                    dashboard: title.to_string(),
                    panel: panel_title.to_string(),
                    sql: sql.to_string(),
                });
            }
        }
    }
    out
}

/// The arguments of `$__name(...)`, up to the matching parenthesis.
fn macro_argument(sql: &str, start: usize) -> (String, usize) {
    let mut depth = 0;
    for (i, c) in sql[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return (sql[start + 1..start + i].trim().to_string(), start + i + 1);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after a macro in:\n{sql}");
}

/// The date of a Unix time, as the plugin writes it in `$__dateFilter`.
fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("a valid time")
        .format("%Y-%m-%d")
        .to_string()
}

/// The query as the ClickHouse data source sends it: its macros expanded
/// for [`FROM`]..[`to`] and [`INTERVAL_S`], the variables replaced.
fn expand(sql: &str, host: &str, domain: &str) -> String {
    expand_for(sql, host, domain, to())
}

/// [`expand`] for the range [`FROM`]..`to`.
fn expand_for(sql: &str, host: &str, domain: &str, to: i64) -> String {
    let mut sql = sql
        .replace("${host}", host)
        .replace("$host", host)
        .replace("${domain}", domain)
        .replace("$domain", domain)
        .replace("$__interval_s", &INTERVAL_S.to_string())
        .replace("$__fromTime", &format!("toDateTime({FROM})"))
        .replace("$__toTime", &format!("toDateTime({to})"));
    while let Some(at) = sql.find("$__") {
        let name_end = sql[at..]
            .find('(')
            .map(|i| at + i)
            .unwrap_or_else(|| panic!("unknown macro in:\n{sql}"));
        let name = &sql[at + 3..name_end];
        let (arg, end) = macro_argument(&sql, name_end);
        let text = match name {
            "timeFilter" => {
                format!("{arg} >= toDateTime({FROM}) AND {arg} <= toDateTime({to})")
            }
            "dateFilter" => format!(
                "{arg} >= toDate('{}') AND {arg} <= toDate('{}')",
                date(FROM),
                date(to)
            ),
            "timeInterval" => {
                format!("toStartOfInterval(toDateTime({arg}), INTERVAL {INTERVAL_S} second)")
            }
            _ => panic!("macro $__{name} is not one the dashboards may use"),
        };
        sql.replace_range(at..end, &text);
    }
    assert!(!sql.contains('$'), "unexpanded variable in:\n{sql}");
    sql
}

/// What a query returned.
#[derive(Debug)]
struct Answer {
    columns: Vec<String>,
    rows: u64,
}

/// Reads ClickHouse's `FORMAT JSON` output.
fn answer(json: &str) -> Answer {
    let v: Value = serde_json::from_str(json).expect("ClickHouse's JSON output");
    Answer {
        columns: v["meta"]
            .as_array()
            .expect("meta")
            .iter()
            .map(|c| c["name"].as_str().expect("column name").to_string())
            .collect(),
        rows: v["rows"].as_u64().expect("rows"),
    }
}

/// Sends one statement to a ClickHouse server over HTTP/1.0 and returns
/// the body, or the server's error.
fn http(url: &str, database: &str, sql: &str) -> Result<String, String> {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    let request = format!(
        "POST /?database={database} HTTP/1.0\r\nHost: {address}\r\n\
         Content-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {response}"))?;
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_string())
    } else {
        Err(body.trim().to_string())
    }
}

/// Stores the corpus scenario `s01_core_all` in `database` of the server,
/// through the processor's pipeline as `process` does.
fn load_corpus(url: &str, database: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(ClickHouseStore::connect(url, database))
        .expect("ClickHouse store");
    let dir = repo().join("tests/data/corpus/s01_core_all");
    let files: Vec<PathBuf> = ["mainlog", "rejectlog", "paniclog"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut importer = Importer::new(&files, HOST).expect("importer");
    let mut pipeline = Pipeline::new(Zone::Utc, CorrelatorConfig::default());
    while let Some(records) = importer.next_batch(300).expect("reading the corpus") {
        let batch = pipeline.process(records, true);
        rt.block_on(store.commit_batch(batch))
            .expect("ClickHouse commit");
    }

    // The queue listings the lab took, as snapshots ten minutes apart
    // from 09:00 of the corpus's day on.
    let mut listings: Vec<PathBuf> = std::fs::read_dir(dir.join("queue"))
        .expect("the corpus's queue listings")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".bp.txt"))
        .collect();
    listings.sort();
    assert!(!listings.is_empty(), "no queue listings in the corpus");
    for (i, path) in listings.iter().enumerate() {
        let text = std::fs::read_to_string(path).expect("a listing");
        let snapshot = QueueSnapshot {
            host: HOST.to_string(),
            taken_at: chrono::DateTime::from_timestamp(FROM + 9 * 3600 + 600 * i as i64, 0)
                .expect("a valid time"),
            messages: parse_bp(&text).messages,
        };
        rt.block_on(store.save_queue_snapshot(&snapshot))
            .expect("storing a queue snapshot");
    }
}

/// The variable settings each query runs with: "All", then one value.
fn settings() -> [(&'static str, &'static str); 2] {
    [(ALL, ALL), (HOST, DOMAIN)]
}

/// Checks one answer against what its panel needs; returns its row count.
fn check(engine: &str, query: &Query, vars: (&str, &str), result: Result<Answer, String>) -> u64 {
    let name = query.name();
    let answer = result.unwrap_or_else(|e| {
        panic!(
            "{name} fails on {engine} with host={} domain={}:\n{e}",
            vars.0, vars.1
        )
    });
    let expected = COLUMNS
        .iter()
        .find(|(d, p, _)| *d == query.dashboard && *p == query.panel)
        .unwrap_or_else(|| panic!("{name}: not listed in COLUMNS"))
        .2;
    assert_eq!(answer.columns, expected, "{name} on {engine}: columns");
    if !MAY_BE_EMPTY.contains(&query.panel.as_str()) {
        assert!(
            answer.rows > 0,
            "{name} on {engine} with host={} domain={}: no rows",
            vars.0,
            vars.1
        );
    }
    answer.rows
}

/// The Python with PyPI's `chdb`: `$EXIM_PILOT_CHDB_PYTHON`, else the
/// one `scripts/services.sh install` sets up.
fn chdb_python() -> PathBuf {
    if let Some(p) = std::env::var_os("EXIM_PILOT_CHDB_PYTHON") {
        return p.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/exim-pilot/tools/venv/bin/python3")
}

/// The tables the dashboards read, copied as they are; the hourly tables
/// are filled by their materialized views as the rows go in.
const COPIED: &[&str] = &[
    "events",
    "lifecycles",
    "attempts",
    "rejects",
    "unparsed",
    "queue_snapshots",
    "queue_messages",
];

/// The rows to give chdb, as (table, TabSeparated rows): the copied
/// tables, and the per-server counts as one `host_deltas` row per server.
fn rows_for_chdb(url: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in COPIED {
        let tsv = http(
            url,
            DATABASE,
            &format!("SELECT * FROM {table} FORMAT TabSeparated"),
        )
        .unwrap_or_else(|e| panic!("exporting {table}: {e}"));
        out.push((table.to_string(), tsv));
    }
    let deltas = http(
        url,
        DATABASE,
        "SELECT host, minMerge(first_ms), maxMerge(last_ms), maxMerge(last_read_ms),
            sumMerge(records), sumMerge(messages), sumMerge(rejects)
         FROM host_stats GROUP BY host FORMAT TabSeparated",
    )
    .expect("exporting host_stats");
    out.push(("host_deltas".to_string(), deltas));
    out
}

#[test]
fn every_dashboard_query_runs_on_clickhouse_18_16_and_on_a_current_engine() {
    let queries = queries();
    let python = chdb_python();
    assert!(
        python.exists(),
        "{} is missing: run `scripts/services.sh install` (or set \
         EXIM_PILOT_CHDB_PYTHON to a Python with chdb)",
        python.display()
    );

    // ClickHouse 18.16, holding the corpus.
    let server = Server::clickhouse();
    let url = server.address().to_string();
    load_corpus(&url, DATABASE);
    let mut expanded = Vec::new();
    for query in &queries {
        for vars in settings() {
            let sql = expand(&query.sql, vars.0, vars.1);
            let result = http(&url, DATABASE, &format!("{sql}\nFORMAT JSON")).map(|b| answer(&b));
            let rows = check("ClickHouse 18.16", query, vars, result);
            expanded.push((query, vars, sql, rows));
        }
    }

    // A current engine, holding the same rows in the store's tables.
    let dir = tempfile::tempdir().expect("temporary folder");
    let job = serde_json::json!({
        "setup": exim_pilot_store::clickhouse::migrations::all_statements(),
        "load": rows_for_chdb(&url)
            .into_iter()
            .map(|(table, rows)| serde_json::json!({"table": table, "rows": rows}))
            .collect::<Vec<_>>(),
        "queries": expanded.iter().map(|(_, _, sql, _)| sql).collect::<Vec<_>>(),
    });
    let file = dir.path().join("job.json");
    std::fs::write(&file, serde_json::to_vec(&job).expect("JSON")).expect("writing the job");
    let output = Command::new(&python)
        .arg(repo().join("tests/data/queries_on_chdb.py"))
        .arg(&file)
        .arg(dir.path().join("session"))
        .output()
        .expect("running chdb");
    assert!(
        output.status.success(),
        "chdb could not run the job:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&output.stdout).expect("chdb's answers");
    assert_eq!(answers.len(), expanded.len());
    let mut panels = BTreeSet::new();
    for ((query, vars, _, rows), a) in expanded.iter().zip(&answers) {
        let result = match a["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(answer(a["json"].as_str().expect("the answer"))),
        };
        let current = check("chdb", query, *vars, result);
        assert_eq!(
            current,
            *rows,
            "{} with host={} domain={}: rows on chdb and on 18.16",
            query.name(),
            vars.0,
            vars.1
        );
        panels.insert((query.dashboard.as_str(), query.panel.as_str()));
    }
    assert_eq!(panels.len(), COLUMNS.len(), "a listed panel is gone");
}

#[test]
fn macros_expand_as_the_data_source_does() {
    let to = FROM + 86_400;
    let sql = expand_for(
        "SELECT $__timeInterval(t) FROM x WHERE $__timeFilter(toDateTime(a)) \
         AND $__dateFilter(day) AND host = '${host}' AND d = '$domain'",
        "mx1",
        "b.test",
        to,
    );
    assert_eq!(
        sql,
        format!(
            "SELECT toStartOfInterval(toDateTime(t), INTERVAL 60 second) FROM x \
             WHERE toDateTime(a) >= toDateTime({FROM}) AND toDateTime(a) <= toDateTime({to}) \
             AND day >= toDate('2026-12-04') AND day <= toDate('2026-12-05') \
             AND host = 'mx1' AND d = 'b.test'"
        )
    );
}
