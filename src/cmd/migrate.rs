//! `exim-pilot migrate`: creates or upgrades fleet mode's ClickHouse
//! database.
//!
//! Creates the database when it is missing and applies the schema
//! migrations it lacks (see `exim_pilot_store::clickhouse::migrations`).
//! Running it again changes nothing, so deployment scripts may run it on
//! every start; processors also migrate when they connect.

use std::process::ExitCode;

use anyhow::Context;

use super::common;

/// Options of `exim-pilot migrate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ClickHouse server's HTTP address (`http://HOST:8123`).
    #[arg(long, value_name = "URL")]
    clickhouse: String,

    /// The database to create or upgrade.
    #[arg(
        long,
        value_name = "NAME",
        default_value = exim_pilot_store::clickhouse::DEFAULT_DATABASE
    )]
    database: String,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = common::runtime()?;
    let version = rt
        .block_on(exim_pilot_store::clickhouse::migrate(
            &args.clickhouse,
            &args.database,
        ))
        .with_context(|| format!("cannot migrate the ClickHouse store at {}", args.clickhouse))?;
    println!(
        "ClickHouse database {} at {} is at schema version {version}.",
        args.database, args.clickhouse
    );
    Ok(ExitCode::SUCCESS)
}
