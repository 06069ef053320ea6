//! `exim-pilot report` on the corpus: totals agree with the ground truth,
//! and the report from the embedded store equals the report from files.

use std::path::{Path, PathBuf};
use std::process::Command;

use exim_pilot_processor::classify::classify_reject;
use exim_pilot_processor::correlate::{Correlator, CorrelatorConfig};
use exim_pilot_processor::parse::{open_log, parse_record, RecordReader};
use exim_pilot_schema::event::EventKind;
use exim_pilot_schema::{LogFile, ReasonClass, RecordOrigin, RejectRecord, Zone};
use exim_pilot_store::{Batch, SqliteStore, Store};
use serde_json::Value;

mod support;

use support::stdout_of;

const SCENARIOS: [&str; 2] = ["s01_core_all", "s02_default_selectors"];
const HOST: &str = "mx1.lab.test";

fn corpus(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(scenario)
}

fn report(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .arg("report")
        .args(["--zone", "utc", "--host", HOST])
        .args(args)
        .output()
        .expect("run exim-pilot");
    serde_json::from_str(&stdout_of(out)).expect("JSON report")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Imports `file` into the store at `data` as server [`HOST`], with the
/// extra options `args` and, when given, the time zone `tz`.
fn import(file: &Path, data: &Path, args: &[&str], tz: Option<&str>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exim-pilot"));
    if let Some(tz) = tz {
        cmd.env("TZ", tz);
    }
    let out = cmd
        .arg("import")
        .args(args)
        .args(["--host", HOST, "--data"])
        .arg(data)
        .arg(file)
        .output()
        .expect("run exim-pilot import");
    stdout_of(out);
}

#[test]
fn totals_agree_with_ground_truth() {
    for scenario in SCENARIOS {
        let dir = corpus(scenario);
        let mainlog = dir.join("mainlog");
        let r = report(&["--format", "json", mainlog.to_str().unwrap()]);
        let truth: Value = serde_json::from_slice(
            &std::fs::read(dir.join("ground_truth.json")).expect("ground truth"),
        )
        .expect("ground truth JSON");
        let gt = &truth["totals"];
        let by = &gt["final_addresses_by_outcome"];
        let get = |k: &str| by.get(k).map_or(0, int);
        let t = &r["totals"];
        let ctx = format!("{scenario}: {t}");

        assert_eq!(int(&t["messages"]), int(&gt["messages"]), "{ctx}");
        assert_eq!(int(&t["received"]), int(&gt["messages"]), "{ctx}");
        assert_eq!(int(&t["addresses"]), int(&gt["final_addresses"]), "{ctx}");
        assert_eq!(int(&t["delivered"]), get("delivered"), "{ctx}");
        assert_eq!(int(&t["bounced"]), get("bounced"), "{ctx}");
        assert_eq!(int(&t["removed"]), get("removed"), "{ctx}");
        assert_eq!(
            int(&t["marked_delivered"]),
            get("marked_delivered"),
            "{ctx}"
        );
        assert_eq!(int(&t["frozen"]), get("frozen"), "{ctx}");
        assert_eq!(
            int(&t["still_deferred"]) + int(&t["pending"]),
            get("deferred_pending"),
            "{ctx}"
        );
        assert_eq!(
            int(&t["attempts"]),
            int(&gt["delivery_attempts_total"]),
            "{ctx}"
        );
        for (origin, n) in gt["messages_by_origin"].as_object().expect("origins") {
            assert_eq!(
                int(&r["messages_by_origin"][origin]),
                int(n),
                "{ctx}: origin {origin}"
            );
        }
        let states = &gt["messages_by_final_state"];
        let state = |k: &str| states.get(k).map_or(0, int);
        let ours = &r["messages_by_state"];
        assert_eq!(int(&ours["completed"]), state("completed"), "{ctx}");
        assert_eq!(int(&ours["in_flight"]), state("on_queue"), "{ctx}");
        assert_eq!(int(&ours["frozen"]), state("on_queue_frozen"), "{ctx}");
        assert_eq!(int(&ours["removed"]), state("removed"), "{ctx}");

        // Exim logs some rejections the client never sees as one reply
        // (an EHLO refused, then the HELO retry), so the logged count is at
        // least what the client saw.
        assert!(
            int(&t["rejected"]) >= int(&gt["smtp_rejections_seen_by_client"]),
            "{ctx}"
        );
    }
}

/// Builds a store from a mainlog the way a pipeline would: lifecycles from
/// the correlator, rejections from the mainlog's rejection lines.
async fn store_from(mainlog: &Path, data: &Path) {
    let mut correlator = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
    let mut rejects = Vec::new();
    let mut reader = RecordReader::new(open_log(mainlog).expect("open mainlog"));
    while let Some(record) = reader.next_record().expect("read mainlog") {
        let event = parse_record(LogFile::Main, record.bytes);
        let origin = RecordOrigin {
            host: HOST.to_string(),
            log: LogFile::Main,
            file_id: 1,
            offset: record.offset,
        };
        if let Some(at) = event.time.map(|t| t.resolve(Zone::Utc)) {
            match &event.kind {
                EventKind::Reject(r) => rejects.push(RejectRecord::from_event(
                    origin,
                    at,
                    event.id,
                    r,
                    classify_reject(r),
                )),
                EventKind::AuthFailure(a) => rejects.push(RejectRecord::from_auth_failure(
                    origin,
                    at,
                    a,
                    ReasonClass::AuthRelayDenied,
                )),
                _ => {}
            }
        }
        correlator.apply(HOST, &event);
    }
    let store = SqliteStore::open_dir(data).expect("open store");
    let lifecycles = correlator.into_lifecycles();

    // Two commits, the second repeating half of the first, as a restart
    // would: nothing may be counted twice.
    let half = lifecycles.len() / 2;
    store
        .commit_batch(Batch {
            lifecycles: lifecycles[..half].to_vec(),
            rejects: rejects.clone(),
            ..Batch::default()
        })
        .await
        .expect("commit");
    store
        .commit_batch(Batch {
            lifecycles,
            rejects,
            ..Batch::default()
        })
        .await
        .expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_report_equals_file_report() {
    for scenario in SCENARIOS {
        let mainlog = corpus(scenario).join("mainlog");
        let data = tempfile::tempdir().expect("temporary directory");
        store_from(&mainlog, data.path()).await;
        let mainlog = mainlog.to_str().unwrap().to_string();
        let dir = data.path().to_str().unwrap().to_string();
        for extra in [vec![], vec!["--domain", "lab.test"], vec!["--top", "0"]] {
            let mut from_files = vec!["--format", "json"];
            from_files.extend(extra.iter().copied());
            let mut from_store = from_files.clone();
            from_files.push(&mainlog);
            from_store.extend(["--data", &dir]);
            let a = tokio::task::block_in_place(|| report(&from_files));
            let b = tokio::task::block_in_place(|| report(&from_store));
            assert_eq!(a, b, "{scenario} {extra:?}: store and file reports differ");
        }
    }
}

#[test]
fn text_and_csv_forms_render() {
    let mainlog = corpus("s01_core_all").join("mainlog");
    for format in ["text", "csv"] {
        let out = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
            .args([
                "report", "--zone", "utc", "--host", HOST, "--format", format,
            ])
            .arg(&mainlog)
            .output()
            .expect("run exim-pilot");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).expect("UTF-8 output");
        match format {
            "text" => {
                assert!(text.contains("Grand total summary"));
                assert!(text.contains("Destination domains"));
                assert!(text.contains("SMTP rejections by reason"));
            }
            _ => {
                let mut lines = text.lines();
                let header = lines.next().expect("header");
                assert!(header.starts_with("section,key,messages,"));
                let total = lines.next().expect("total row");
                assert!(
                    total.starts_with("total,all,185,185,246,206,24,"),
                    "{total}"
                );
                assert!(text.lines().any(|l| l.starts_with("domain,lab.test,")));
                assert!(text.lines().any(|l| l.starts_with("reject_reason,")));
            }
        }
    }
}

#[test]
fn missing_store_is_explained() {
    let empty = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(["report", "--data"])
        .arg(empty.path())
        .output()
        .expect("run exim-pilot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no exim-pilot data"), "{err}");
}

/// The corpus mainlog as Exim writes it through syslog with its default
/// `syslog_duplication`: every rejection twice, the reject log's copy
/// split into numbered parts and followed by an envelope line.
fn through_syslog(mainlog: &Path) -> (String, usize) {
    let text = std::fs::read_to_string(mainlog).expect("corpus mainlog");
    let mut out = String::new();
    let mut copies = 0;
    for line in text.lines() {
        // `2026-12-04 15:54:40.754 [27607] text`: the pid goes to the tag.
        let (stamp, rest) = line.split_at(23);
        let (pid, text) = rest[2..].split_once("] ").expect("a pid");
        let syslog = format!("Dec  4 {} {HOST} exim[{pid}]: ", &stamp[11..19]);
        out.push_str(&format!("{syslog}{stamp} {text}\n"));
        let kind = parse_record(LogFile::Main, line.as_bytes()).kind;
        if matches!(kind, EventKind::Reject(_) | EventKind::AuthFailure(_)) {
            out.push_str(&format!("{syslog}[1\\2] {stamp} {text}\n"));
            out.push_str(&format!("{syslog}[2\\2] Envelope-from: <a@lab.test>\n"));
            copies += 1;
        }
    }
    (out, copies)
}

#[test]
fn rejections_exim_wrote_twice_to_syslog_count_once() {
    let mainlog = corpus("s01_core_all").join("mainlog");
    let (syslog, copies) = through_syslog(&mainlog);
    assert!(copies > 10, "the corpus has rejections to copy");
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("mail.log");
    std::fs::write(&file, syslog).expect("write the syslog file");

    let plain = report(&["--format", "json", mainlog.to_str().unwrap()]);
    let rejected = int(&plain["totals"]["rejected"]);
    let from_file = report(&["--format", "json", file.to_str().unwrap()]);
    assert_eq!(int(&from_file["totals"]["rejected"]), rejected);

    // `import` counts them the same way into the store.
    let data = dir.path().join("data");
    import(&file, &data, &["--zone", "utc"], None);
    let stored = report(&["--format", "json", "--data", data.to_str().unwrap()]);
    assert_eq!(int(&stored["totals"]["rejected"]), rejected);
}

#[test]
fn a_line_written_soon_after_completion_still_counts_with_its_message() {
    // A parallel process may log a delivery of a message after its
    // `Completed` line; the report waits a few minutes of log time before
    // counting a completed message, so the late line still joins it, and
    // the message is counted once.
    let log = "\
2026-12-04 10:00:00 1wAbcD-000001-AB <= alice@lab.test H=(client) [192.0.2.7] P=esmtp S=900
2026-12-04 10:00:01 1wAbcD-000001-AB => bob@lab.test R=localuser T=local_file
2026-12-04 10:00:01 1wAbcD-000001-AB Completed
2026-12-04 10:02:00 SMTP connection from [192.0.2.10] (TCP/IP connection count = 1)
2026-12-04 10:03:00 1wAbcD-000001-AB => carol@lab.test R=localuser T=local_file
2026-12-04 10:20:00 1wAbcE-000002-CD <= dave@lab.test H=(client) [192.0.2.8] P=esmtp S=900
2026-12-04 10:20:01 1wAbcE-000002-CD => erin@lab.test R=localuser T=local_file
2026-12-04 10:20:01 1wAbcE-000002-CD Completed
2026-12-04 11:30:00 1wAbcF-000003-EF <= frank@lab.test H=(client) [192.0.2.9] P=esmtp S=900
";
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("mainlog");
    std::fs::write(&file, log).expect("write the log");
    let r = report(&["--format", "json", file.to_str().unwrap()]);
    let t = &r["totals"];
    assert_eq!(int(&t["messages"]), 3, "{t}");
    assert_eq!(int(&t["addresses"]), 3, "{t}");
    assert_eq!(int(&t["delivered"]), 3, "{t}");
}

/// A syslog log in which Exim split a delivery line mid-address and a
/// rejection mid-reason into numbered parts.
const SPLIT_THROUGH_SYSLOG: &str = "\
Dec  4 10:00:00 mx1.lab.test exim[100]: 2026-12-04 10:00:00.100 1xZVcC-00078S-07 \
<= alice@example.net H=(ws.example.net) [192.0.2.10]:4000 I=[192.0.2.1]:25 P=esmtp S=1066 \
id=one@example.net
Dec  4 10:00:01 mx1.lab.test exim[101]: [1/2] 2026-12-04 10:00:01.200 1xZVcC-00078S-07 \
=> bob@exa
Dec  4 10:00:01 mx1.lab.test exim[101]: [2/2] mple.com R=dnslookup T=remote_smtp \
H=mx.example.com [198.51.100.7] C=\"250 2.0.0 OK\"
Dec  4 10:00:01 mx1.lab.test exim[101]: 2026-12-04 10:00:01.300 1xZVcC-00078S-07 Completed
Dec  4 10:00:02 mx1.lab.test exim[102]: [1/2] 2026-12-04 10:00:02.400 H=(bot.example.net) \
[198.51.100.9]:4000 I=[192.0.2.1]:25 F=<x@example.net> rejected RCPT <nobody@lab.test>: Unkno
Dec  4 10:00:02 mx1.lab.test exim[102]: [2/2] wn user
";

#[test]
fn lines_exim_split_through_syslog_read_the_same_through_import_and_report() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("mail.log");
    std::fs::write(&file, SPLIT_THROUGH_SYSLOG).expect("write the syslog file");
    let from_file = report(&["--format", "json", file.to_str().unwrap()]);
    let text = from_file.to_string();
    assert!(text.contains("\"example.com\""), "{text}");
    assert!(!text.contains("\"exa\""), "{text}");
    assert_eq!(int(&from_file["totals"]["rejected"]), 1, "{text}");

    let data = dir.path().join("data");
    import(&file, &data, &["--zone", "utc"], None);
    let stored = report(&["--format", "json", "--data", data.to_str().unwrap()]);
    assert_eq!(stored, from_file, "store and file reports differ");
}

/// A syslog log without Exim's own stamps that crosses midnight on New
/// Year's Eve: a message received in the old year, delivered in the new.
const NEW_YEARS_EVE: &str = "\
Dec 31 23:59:58 mx1.lab.test exim[100]: 1xZVcC-00078S-07 <= alice@example.net \
H=(ws.example.net) [192.0.2.10]:4000 I=[192.0.2.1]:25 P=esmtp S=1066 id=one@example.net
Jan  1 00:00:02 mx1.lab.test exim[101]: 1xZVcC-00078S-07 => bob@example.com R=dnslookup \
T=remote_smtp H=mx.example.com [198.51.100.7] C=\"250 2.0.0 OK\"
Jan  1 00:00:02 mx1.lab.test exim[101]: 1xZVcC-00078S-07 Completed
";

/// The first lifecycle `exim-pilot lifecycles` prints for `source`, with
/// the extra options `args` and, when given, the time zone `tz`.
fn first_lifecycle(args: &[&str], tz: Option<&str>, source: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exim-pilot"));
    if let Some(tz) = tz {
        cmd.env("TZ", tz);
    }
    let out = cmd
        .args(["lifecycles", "--format", "jsonl", "--host", HOST])
        .args(args)
        .args(source)
        .output()
        .expect("run exim-pilot lifecycles");
    let text = stdout_of(out);
    serde_json::from_str(text.lines().next().expect("a lifecycle")).expect("JSON lifecycle")
}

#[test]
fn a_syslog_log_given_its_year_dates_january_in_the_next_year() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("mail.log");
    std::fs::write(&file, NEW_YEARS_EVE).expect("write the syslog file");
    let data = dir.path().join("data");
    let year = ["--timezone", "utc", "--syslog-year", "2025"];
    import(&file, &data, &year, None);

    let from_file = first_lifecycle(&year, None, &[file.to_str().unwrap()]);
    let from_store = first_lifecycle(&year, None, &["--data", data.to_str().unwrap()]);
    for lifecycle in [&from_file, &from_store] {
        let received = lifecycle["received_at"].as_str().unwrap_or_default();
        let delivered = lifecycle["recipients"][0]["final_at"]
            .as_str()
            .unwrap_or_default();
        assert!(received.starts_with("2025-12-31T23:59:58"), "{lifecycle}");
        assert!(delivered.starts_with("2026-01-01T00:00:02"), "{lifecycle}");
    }
}

/// A mainlog of a server in Berlin on the night clocks go back (at 03:00
/// summer time, to 02:00): a message received at 01:50 in summer time,
/// deferred at 01:55, and delivered at 02:10 in winter time, after a
/// connection at 02:40 in summer time.
const CLOCKS_GO_BACK: &str = "\
2026-10-25 01:50:00 1xZVcC-00078S-07 <= alice@example.net H=(ws.example.net) \
[192.0.2.10]:4000 I=[192.0.2.1]:25 P=esmtp S=1066 id=one@example.net
2026-10-25 01:55:00 1xZVcC-00078S-07 == bob@example.com R=dnslookup T=remote_smtp \
defer (-44) H=mx.example.com [198.51.100.7]: SMTP error from remote mail server after \
RCPT TO:<bob@example.com>: 451 4.7.1 Greylisted
2026-10-25 02:40:00 SMTP connection from [192.0.2.10]:4001 I=[192.0.2.1]:25 \
(TCP/IP connection count = 1)
2026-10-25 02:10:00 1xZVcC-00078S-07 => bob@example.com R=dnslookup T=remote_smtp \
H=mx.example.com [198.51.100.7] C=\"250 2.0.0 OK\"
2026-10-25 02:10:00 1xZVcC-00078S-07 Completed
";

#[test]
fn the_hour_repeated_when_clocks_go_back_stays_in_order() {
    if !Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
        eprintln!("No time zone data for Europe/Berlin here; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("mainlog");
    std::fs::write(&file, CLOCKS_GO_BACK).expect("write the mainlog");
    let data = dir.path().join("data");
    let (local, berlin) = (["--timezone", "local"], Some("Europe/Berlin"));
    import(&file, &data, &local, berlin);

    let from_file = first_lifecycle(&local, berlin, &[file.to_str().unwrap()]);
    let from_store = first_lifecycle(&local, berlin, &["--data", data.to_str().unwrap()]);
    for lifecycle in [&from_file, &from_store] {
        let received = lifecycle["received_at"].as_str().unwrap_or_default();
        let delivered = lifecycle["recipients"][0]["final_at"]
            .as_str()
            .unwrap_or_default();
        let deferred = lifecycle["recipients"][0]["history"][0]["at"]
            .as_str()
            .unwrap_or_default();
        assert!(received.starts_with("2026-10-24T23:50:00"), "{lifecycle}");
        assert!(deferred.starts_with("2026-10-24T23:55:00"), "{lifecycle}");
        assert!(delivered.starts_with("2026-10-25T01:10:00"), "{lifecycle}");
    }
}
