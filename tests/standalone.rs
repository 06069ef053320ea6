//! `exim-pilot standalone` and `exim-pilot import` end to end, on real
//! files: rotation by rename and by copytruncate, a SIGKILL and a restart,
//! and re-imports lose and duplicate nothing.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exim_pilot_store::{SqliteStore, Store};
use serde_json::Value;

mod support;

use support::stdout_of;

const HOST: &str = "mx1.lab.test";

fn exim_pilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
}

fn corpus_mainlog(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(scenario)
        .join("mainlog")
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn append(path: &Path, lines: &[String]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
    }
    f.flush().unwrap();
}

/// Writes `content` gzip-compressed, as logrotate's `compress` does.
fn write_gz(path: &Path, content: &[u8]) {
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), flate2::Compression::fast());
    enc.write_all(content).unwrap();
    enc.finish().unwrap();
}

fn start(log: &Path, data: &Path) -> Child {
    exim_pilot()
        .args(["standalone", "--quiet", "--timezone", "utc", "--host", HOST])
        .arg("--log")
        .arg(log)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A temporary directory, with the paths of a mainlog and of a data
/// directory in it (neither made yet).
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    let data = dir.path().join("data");
    (dir, log, data)
}

/// `standalone` following `log` into `data` and serving on a free port
/// (see [`served_address`]), its standard error piped.
fn standalone_serving(log: &Path, data: &Path) -> Command {
    let mut cmd = exim_pilot();
    cmd.args(["standalone", "--quiet", "--timezone", "utc", "--host", HOST])
        .args(["--listen", "127.0.0.1:0", "--log"])
        .arg(log)
        .arg("--data")
        .arg(data)
        .stderr(Stdio::piped());
    cmd
}

/// Imports `file` into the store in `data` and returns what it printed.
fn import(data: &Path, file: &Path) -> String {
    let out = exim_pilot()
        .args(["import", "--quiet", "--timezone", "utc", "--host", HOST])
        .arg("--data")
        .arg(data)
        .arg(file)
        .output()
        .unwrap();
    stdout_of(out)
}

/// Records the store holds for the host, read through a separate reader.
fn stored_records(data: &Path) -> i64 {
    if !data.join(exim_pilot_store::sqlite::DATABASE_FILE).exists() {
        return 0;
    }
    let Ok(store) = SqliteStore::open_dir(data) else {
        return 0;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.hosts())
        .map(|hosts| {
            hosts
                .iter()
                .filter(|h| h.host == HOST)
                .map(|h| h.records)
                .sum()
        })
        .unwrap_or(0)
}

fn wait_for_records(data: &Path, want: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = stored_records(data);
        if got == want as i64 {
            return;
        }
        assert!(
            got <= want as i64,
            "stored {got} records, only {want} were written"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exim-pilot standalone exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "stored {got} of {want} records after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    // SAFETY: kill with a valid pid of our own child and a valid signal.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "standalone did not stop cleanly: {status}"
    );
}

/// The lifecycles as `exim-pilot lifecycles` prints them, keyed by id,
/// without the fields that say where a lifecycle was kept.
fn lifecycles(args: &[&str]) -> Vec<Value> {
    let out = exim_pilot()
        .args(["lifecycles", "--timezone", "utc", "--host", HOST])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lifecycles {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    all
}

fn outcome_summary(all: &[Value]) -> Vec<String> {
    all.iter()
        .flat_map(|lc| {
            let id = lc["id"].as_str().unwrap().to_string();
            let state = lc["state"].as_str().unwrap().to_string();
            lc["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| {
                    format!(
                        "{id} {state} {} {} {}",
                        r["address"], r["outcome"], r["attempts"]
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn rotation_kill_and_restart_lose_and_duplicate_nothing() {
    let (dir, log, data) = scratch();
    let lines = lines_of(&corpus_mainlog("s01_core_all"));
    let (a, rest) = lines.split_at(400);
    let (b, rest) = rest.split_at(400);
    let (c, d) = rest.split_at(300);

    // A plain start; the log appears after the tailer started.
    let mut child = start(&log, &data);
    std::thread::sleep(Duration::from_millis(300));
    append(&log, a);
    wait_for_records(&data, 400, &mut child);

    // Rename rotation: Exim writes a little more to the old file before
    // it notices and opens a new one.
    fs::rename(&log, dir.path().join("mainlog.1")).unwrap();
    append(&dir.path().join("mainlog.1"), &b[..50]);
    append(&log, &b[50..]);
    wait_for_records(&data, 800, &mut child);

    // SIGKILL in the middle of a burst, more lines while it is down.
    append(&log, &c[..150]);
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();
    append(&log, &c[150..]);
    let mut child = start(&log, &data);
    wait_for_records(&data, 1100, &mut child);

    // copytruncate rotation, then the rest of the log.
    fs::rename(dir.path().join("mainlog.1"), dir.path().join("mainlog.2")).unwrap();
    fs::copy(&log, dir.path().join("mainlog.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, d);
    wait_for_records(&data, lines.len(), &mut child);
    stop(child);

    // The store holds exactly what one pass over the whole log gives.
    let whole = dir.path().join("whole.log");
    append(&whole, &lines);
    let from_store = lifecycles(&["--data", data.to_str().unwrap()]);
    let one_pass = lifecycles(&[whole.to_str().unwrap()]);
    assert_eq!(from_store.len(), one_pass.len());
    assert_eq!(outcome_summary(&from_store), outcome_summary(&one_pass));
    assert_eq!(stored_records(&data), lines.len() as i64);
}

#[test]
fn import_twice_changes_nothing_and_reads_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plain = corpus_mainlog("s02_default_selectors");
    let gz = dir.path().join("mainlog.1.gz");
    write_gz(&gz, &fs::read(&plain).unwrap());

    let import = |file: &Path| import(&data, file);
    let first = import(&gz);
    assert!(first.contains("537 records (537 new"), "{first}");
    let before = lifecycles(&["--data", data.to_str().unwrap()]);

    let again = import(&gz);
    assert!(again.contains("537 records (0 new"), "{again}");
    assert_eq!(lifecycles(&["--data", data.to_str().unwrap()]), before);
    assert_eq!(before.len(), 128);
}

#[test]
fn a_directory_without_logs_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = exim_pilot()
        .args(["standalone", "--once", "--log"])
        .arg(dir.path())
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mainlog") && err.contains("--log"), "{err}");
}

#[test]
fn a_second_process_on_the_same_data_is_refused() {
    let (_dir, log, data) = scratch();
    append(
        &log,
        &lines_of(&corpus_mainlog("s02_default_selectors"))[..10],
    );
    let mut child = start(&log, &data);
    wait_for_records(&data, 10, &mut child);
    let out = exim_pilot()
        .args(["import", "--quiet", "--host", HOST, "--data"])
        .arg(&data)
        .arg(&log)
        .output()
        .unwrap();
    stop(child);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

#[test]
fn importing_a_compressed_copy_of_a_followed_log_adds_nothing() {
    let (dir, log, data) = scratch();
    let lines = lines_of(&corpus_mainlog("s02_default_selectors"));
    append(&log, &lines);
    let status = exim_pilot()
        .args([
            "standalone",
            "--once",
            "--quiet",
            "--timezone",
            "utc",
            "--host",
            HOST,
        ])
        .arg("--log")
        .arg(&log)
        .arg("--data")
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success());
    let before = lifecycles(&["--data", data.to_str().unwrap()]);

    // logrotate's compressed rotation of the same file, imported later.
    let gz = dir.path().join("mainlog.1.gz");
    write_gz(&gz, &fs::read(&log).unwrap());
    let out = exim_pilot()
        .args(["import", "--quiet", "--timezone", "utc", "--host", HOST])
        .arg("--data")
        .arg(&data)
        .arg(&gz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("(0 new"), "{summary}");
    assert_eq!(stored_records(&data), lines.len() as i64);
    assert_eq!(lifecycles(&["--data", data.to_str().unwrap()]), before);
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The address a child started with `--listen 127.0.0.1:0` serves on, from
/// the first line it writes to its standard error (piped); the rest of
/// its output is read and dropped, since a closed pipe would end the
/// process at its next line.
fn served_address(child: &mut Child) -> String {
    use std::io::{BufRead, BufReader};
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    line.split("http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim()
        .to_string()
}

#[test]
fn health_readiness_and_metrics_are_served_while_following() {
    let (_dir, log, data) = scratch();
    append(&log, &lines_of(&corpus_mainlog("s02_default_selectors")));
    let mut child = standalone_serving(&log, &data).spawn().unwrap();
    let addr = served_address(&mut child);
    wait_for_records(&data, 537, &mut child);

    assert_eq!(http_get(&addr, "/health"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/ready").0, 200);
    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("exim_pilot_records_processed_total 537"),
        "{metrics}"
    );
    assert!(
        metrics.contains("exim_pilot_records_unparsed_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("exim_pilot_ingest_lines_read_total{log=\"main\"} 537"),
        "{metrics}"
    );
    stop(child);
}

/// Idle connections by the hundred, more than the process may open files
/// for: it serves as many as leave room for its other files, keeps
/// following its logs into the store, and answers again once they go.
#[test]
fn idle_connections_beyond_the_open_files_limit_do_not_stop_the_work() {
    use std::os::unix::process::CommandExt;
    let (_dir, log, data) = scratch();
    let first = lines_of(&corpus_mainlog("s02_default_selectors"));
    append(&log, &first);
    let mut cmd = standalone_serving(&log, &data);
    cmd.arg("--no-queue");
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 200,
                rlim_max: 200,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let addr = served_address(&mut child);
    wait_for_records(&data, first.len(), &mut child);

    // 400 connections at once; those past the listen queue's length may
    // not complete, and are given up after a second.
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idle = rt.block_on(async {
        let mut tries = tokio::task::JoinSet::new();
        for _ in 0..400 {
            tries.spawn(tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(target),
            ));
        }
        let mut open = Vec::new();
        while let Some(done) = tries.join_next().await {
            if let Ok(Ok(Ok(stream))) = done {
                open.push(stream);
            }
        }
        open
    });
    assert!(idle.len() > 200, "only {} connections made", idle.len());
    let more = lines_of(&corpus_mainlog("s01_core_all"));
    append(&log, &more);
    wait_for_records(&data, first.len() + more.len(), &mut child);
    drop(idle);
    assert_eq!(http_get(&addr, "/health"), (200, "ok\n".to_string()));
    stop(child);
}

#[test]
fn the_first_host_name_sticks_to_the_data_directory() {
    let (_dir, log, data) = scratch();
    append(&log, &lines_of(&corpus_mainlog("s02_default_selectors")));
    let run = |host: Option<&str>| {
        let mut cmd = exim_pilot();
        cmd.args([
            "standalone",
            "--once",
            "--quiet",
            "--timezone",
            "utc",
            "--log",
        ])
        .arg(&log)
        .arg("--data")
        .arg(&data);
        if let Some(h) = host {
            cmd.args(["--host", h]);
        }
        cmd.output().unwrap()
    };
    assert!(run(Some(HOST)).status.success());

    // Without --host (the machine was renamed, say), the saved name is used.
    assert!(run(None).status.success());
    assert_eq!(stored_records(&data), 537);

    // A different explicit name would store every record a second time.
    let other = run(Some("other.example.net"));
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains(HOST));
    assert_eq!(stored_records(&data), 537);
}

#[test]
fn zones_west_of_utc_are_accepted_as_written() {
    let out = exim_pilot()
        .args(["lifecycles", "--timezone", "-0500", "--host", HOST])
        .arg(corpus_mainlog("s02_default_selectors"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    // 15:58:07 at UTC-5 is 20:58:07 UTC.
    assert!(
        first["received_at"].as_str().unwrap().contains("T20:58"),
        "{first}"
    );
}

#[test]
fn report_reads_rotated_files_oldest_first_whatever_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let lines = lines_of(&corpus_mainlog("s01_core_all"));
    let (old, new) = lines.split_at(700);
    let rotated = dir.path().join("mainlog.1.gz");
    write_gz(&rotated, old.concat().as_bytes());
    let live = dir.path().join("mainlog");
    append(&live, new);

    let report = |files: [&Path; 2]| -> Value {
        let out = exim_pilot()
            .args([
                "report", "--format", "json", "--zone", "utc", "--host", HOST,
            ])
            .args(files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["totals"].clone()
    };
    let forward = report([&rotated, &live]);
    assert_eq!(report([&live, &rotated]), forward);
    assert_eq!(forward["state_frozen"], 2);
}

#[test]
fn a_last_line_still_being_written_is_imported_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let full = corpus_mainlog("s02_default_selectors");
    let text = fs::read_to_string(&full).unwrap();
    // A live mainlog read while Exim writes a delivery line: the import
    // leaves the half line out, and takes it whole the next time.
    let cut = text
        .match_indices(" => ")
        .nth(100)
        .map(|(at, _)| at + 2)
        .expect("a delivery line");
    let live = dir.path().join("mainlog");
    fs::write(&live, &text[..cut]).unwrap();
    let growing = dir.path().join("growing");
    let first = import(&growing, &live);
    assert!(
        first.contains("still being written?) and was left out; import the file again"),
        "{first}"
    );
    // `standalone --once` does not read it either, and says so.
    let followed = dir.path().join("followed");
    let once = |data: &Path| {
        let out = exim_pilot()
            .args(["standalone", "--once", "--quiet", "--timezone", "utc"])
            .args(["--host", HOST, "--log"])
            .arg(&live)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let said = once(&followed);
    assert!(said.contains("ends in a line without a newline"), "{said}");

    append(&live, &[text[cut..].to_string()]);
    let second = import(&growing, &live);
    assert!(!second.contains("left out"), "{second}");
    let said = once(&followed);
    assert!(!said.contains("without a newline"), "{said}");

    let whole = dir.path().join("whole");
    import(&whole, &full);
    let expected = lifecycles(&["--data", whole.to_str().unwrap()]);
    assert_eq!(expected.len(), 128);
    for data in [&growing, &followed] {
        let got = lifecycles(&["--data", data.to_str().unwrap()]);
        assert_eq!(got, expected);
    }
}
