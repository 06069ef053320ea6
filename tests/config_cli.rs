//! The fleet configuration file as the commands read it: `config check`
//! prints the `[process]` and `[clickhouse]` settings in effect, and
//! `process` takes its settings from the file and refuses what it lacks.

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
