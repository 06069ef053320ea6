//! `exim-pilot parse`.

use std::process::ExitCode;

/// Options of `exim-pilot parse`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`parse` is not available in this build")
}
