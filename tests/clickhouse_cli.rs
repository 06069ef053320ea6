//! Fleet mode's ClickHouse store read back through the command line: a
//! corpus scenario goes through the processor's pipeline batch by batch,
//! each batch committed to both the embedded store and ClickHouse (as
//! `import` and `process` do), and `lifecycles` and `report` print the
//! same thing from either. Runs against a real ClickHouse server.

use std::path::{Path, PathBuf};
use std::process::Command;

use exim_pilot_ingest::Importer;
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::pipeline::Pipeline;
use exim_pilot_schema::Zone;
use exim_pilot_store::{ClickHouseStore, SqliteStore, Store};
use exim_pilot_testkit::Server;

/// Records per batch: small, so that many lifecycles are stored several
/// times as they change.
const BATCH_RECORDS: usize = 300;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(name)
}

fn exim_pilot(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(args)
        .output()
        .expect("running exim-pilot");
    assert!(
        out.status.success(),
        "exim-pilot {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Asserts two outputs are equal line by line, naming the first that
/// differs.
fn same_lines(what: &str, sqlite: &str, clickhouse: &str) {
    let (a, b): (Vec<&str>, Vec<&str>) = (sqlite.lines().collect(), clickhouse.lines().collect());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{what}: line {} differs", i + 1);
    }
    assert_eq!(a.len(), b.len(), "{what}: line counts differ");
    assert!(!a.is_empty(), "{what}: no output");
}

#[test]
fn lifecycles_and_reports_from_clickhouse_equal_those_from_sqlite() {
    let server = Server::clickhouse();
    let url = server.address().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = tempfile::tempdir().expect("temporary folder");
    let sqlite = SqliteStore::open_dir(data.path()).expect("SQLite store");
    let clickhouse = rt
        .block_on(ClickHouseStore::connect(&url, "corpus"))
        .expect("ClickHouse store");

    let dir = scenario("s01_core_all");
    let files: Vec<PathBuf> = ["mainlog", "rejectlog", "paniclog"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut importer = Importer::new(&files, "mx1.lab.test").expect("importer");
    let mut pipeline = Pipeline::new(Zone::Utc, CorrelatorConfig::default());
    while let Some(records) = importer
        .next_batch(BATCH_RECORDS)
        .expect("reading the corpus")
    {
        let batch = pipeline.process(records, true);
        let a = rt
            .block_on(sqlite.commit_batch(batch.clone()))
            .expect("SQLite commit");
        let b = rt
            .block_on(clickhouse.commit_batch(batch))
            .expect("ClickHouse commit");
        assert_eq!(a, b, "the stores disagree on what a batch added");
    }
    drop(sqlite);

    let data_dir = data.path().to_str().expect("UTF-8 path");
    let from = |args: &[&str], store: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(store);
        exim_pilot(&all)
    };
    let sqlite_args = ["--data", data_dir];
    let clickhouse_args = ["--clickhouse", url.as_str(), "--database", "corpus"];
    for (what, args) in [
        ("lifecycles", vec!["lifecycles"]),
        ("report", vec!["report", "--format", "json", "--top", "0"]),
        (
            "report over hours",
            vec![
                "report",
                "--format",
                "json",
                "--since",
                "2026-12-03 09:30",
                "--until",
                "2026-12-05 13:10",
            ],
        ),
        (
            "report for a domain",
            vec!["report", "--format", "json", "--domain", "partner.test"],
        ),
    ] {
        same_lines(
            what,
            &from(&args, &sqlite_args),
            &from(&args, &clickhouse_args),
        );
    }

    let migrated = exim_pilot(&["migrate", "--clickhouse", &url, "--database", "corpus"]);
    assert!(migrated.contains("schema version"), "{migrated}");
}
