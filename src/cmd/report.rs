//! `exim-pilot report`.

use std::process::ExitCode;

/// Options of `exim-pilot report`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`report` is not available in this build")
}
