//! `exim-pilot config check`: validates a configuration file and prints
//! the settings in effect, defaults and `EXIM_PILOT_*` variables applied
//! (see `crate::config` for the format).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use exim_pilot_ingest::kafka::{KafkaConfig, DEFAULT_TOPIC};
use exim_pilot_schema::queue_wire::{DEFAULT_COMMAND_TOPIC, DEFAULT_QUEUE_TOPIC};

use super::common::DEFAULT_DATA_DIR;
use crate::config::Config;

/// Options of `exim-pilot config`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Validate a configuration file and print the settings in effect.
    Check(CheckArgs),
}

/// Options of `exim-pilot config check`.
#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", env = "EXIM_PILOT_CONFIG")]
    config: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Check(check) => run_check(check),
    }
}

fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read the configuration {}", args.config.display()))?;
    let problems = crate::config::problems(&text);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!(
                "{}:{}:{}: {}",
                args.config.display(),
                problem.line,
                problem.column,
                problem.message
            );
        }
        eprintln!(
            "exim-pilot: {} problem{} in {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            args.config.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let config = Config::load(Some(&args.config))?;
    let effective = with_defaults(config);
    if effective.kafka.brokers.is_none() {
        eprintln!(
            "exim-pilot: note: kafka.brokers is not set; `tail` needs it (or --kafka, or \
             EXIM_PILOT_KAFKA_BROKERS)"
        );
    }
    if effective.tail.logs.is_empty() {
        eprintln!(
            "exim-pilot: note: tail.logs is not set; `tail` looks in /var/log/exim4 and \
             /var/log/exim"
        );
    }
    println!(
        "# {}: valid; the settings in effect:",
        args.config.display()
    );
    print!("{}", effective.to_toml()?);
    Ok(ExitCode::SUCCESS)
}

/// The configuration with every default `tail` would apply written out.
fn with_defaults(mut config: Config) -> Config {
    let defaults = KafkaConfig::new("", "");
    let tail = &mut config.tail;
    if tail.host.is_none() {
        tail.host = exim_pilot_ingest::local_hostname().ok();
    }
    tail.checkpoints
        .get_or_insert_with(|| PathBuf::from(DEFAULT_DATA_DIR).join("checkpoints"));
    tail.backfill.get_or_insert(false);
    tail.max_batch_bytes.get_or_insert(defaults.max_batch_bytes);
    tail.max_batch_records
        .get_or_insert(defaults.max_batch_records);
    tail.linger_ms
        .get_or_insert(defaults.linger.as_millis() as u64);
    tail.max_in_flight_bytes
        .get_or_insert(defaults.max_in_flight_bytes);
    let kafka = &mut config.kafka;
    kafka.topic.get_or_insert_with(|| DEFAULT_TOPIC.to_string());
    kafka
        .queue_topic
        .get_or_insert_with(|| DEFAULT_QUEUE_TOPIC.to_string());
    kafka
        .command_topic
        .get_or_insert_with(|| DEFAULT_COMMAND_TOPIC.to_string());
    config
        .queue
        .interval_s
        .get_or_insert(super::queue::DEFAULT_INTERVAL_S);
    config
}
