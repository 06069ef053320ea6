//! The fleet configuration file as the commands read it: `config check`
//! prints the `[process]` and `[clickhouse]` settings in effect,
//! `process` takes its settings from the file and refuses what it lacks,
//! and `serve` takes its address and API settings from `[serve]`.

use std::process::{Command, Output};

fn exim_pilot(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_exim-pilot"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("EXIM_PILOT_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("running exim-pilot")
}

#[test]
fn config_check_prints_process_and_clickhouse_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("process.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokers = \"127.0.0.1:9\"\n[process]\ngroup = \"g1\"\n\
         [clickhouse]\nurl = \"http://127.0.0.1:8123\"\n",
    )
    .unwrap();
    let out = exim_pilot(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[("EXIM_PILOT_CLICKHOUSE_DATABASE", "mail")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("group = \"g1\""), "{stdout}");
    assert!(stdout.contains("database = \"mail\""), "{stdout}");
    assert!(
        stdout.contains("url = \"http://127.0.0.1:8123\""),
        "{stdout}"
    );
}

#[test]
fn process_without_brokers_says_where_to_give_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("process.toml");
    std::fs::write(&file, "[process]\ngroup = \"g1\"\n").unwrap();
    let out = exim_pilot(&["process", "--config", file.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("kafka.brokers"), "{stderr}");
}

#[test]
fn process_refuses_a_bad_zone_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("process.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokers = \"127.0.0.1:9\"\n[process]\ntimezone = \"mars\"\n",
    )
    .unwrap();
    let out = exim_pilot(&["process", "--config", file.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("process.timezone"), "{stderr}");
}

#[test]
fn config_check_reports_every_problem_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tail.toml");
    std::fs::write(
        &file,
        "[tail]\nhots = \"mx1\"\nbackfill = \"yes\"\n[kafak]\nx = 1\n\
         [kafka]\nbrokers = \"\"\n[queue]\ninterval_s = 0\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = exim_pilot(&["config", "check", "--config", path], &[]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no settings printed for a bad file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for place in [
        "2:1: unknown key tail.hots",
        "3:12: tail.backfill",
        "4:2: unknown section",
    ]
    .iter()
    .chain(&["7:11: kafka.brokers is empty", "9:14: queue.interval_s"])
    {
        assert!(
            stderr.contains(&format!("{path}:{place}")),
            "{place} missing in:\n{stderr}"
        );
    }
    assert!(stderr.contains("5 problems"), "{stderr}");
}

/// A data directory with the corpus imported, for `serve`.
fn imported(dir: &std::path::Path) -> String {
    let data = dir.join("data");
    let mainlog = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/s01_core_all/mainlog"
    );
    let data_arg = data.to_str().unwrap().to_string();
    let out = exim_pilot(&["import", mainlog, "--data", &data_arg], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data_arg
}

#[test]
fn serve_reads_its_section_and_refuses_bad_tls_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let missing = dir.path().join("missing-cert.pem");
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            missing.to_str().unwrap(),
            missing.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = exim_pilot(
        &["serve", "--data", &data, "--config", file.to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read the TLS certificate") && stderr.contains("missing-cert.pem"),
        "{stderr}"
    );

    // Options are checked the same way.
    let out = exim_pilot(
        &[
            "serve",
            "--data",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--cors-origin",
            "https://console.example.com/",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("an origin has no path"), "{stderr}");
    let out = exim_pilot(&["serve", "--data", &data, "--tls-cert", "/c.pem"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[test]
fn serve_listens_where_its_section_says() {
    use std::io::{BufRead, BufReader, Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        "[serve]\nlisten = \"127.0.0.1:0\"\nmask_viewer_addresses = true\nidle_timeout_s = 5\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(["serve", "--data", &data, "--config", file.to_str().unwrap()])
        .env_remove("EXIM_PILOT_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("a line").expect("read");
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.trim_end_matches("/graphql").to_string();
        }
    };
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
}
