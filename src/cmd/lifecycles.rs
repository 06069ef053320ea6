//! `exim-pilot lifecycles`.

use std::process::ExitCode;

/// Options of `exim-pilot lifecycles`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`lifecycles` is not available in this build")
}
