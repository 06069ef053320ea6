//! `exim-pilot trace`.

use std::process::ExitCode;

/// Options of `exim-pilot trace`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`trace` is not available in this build")
}
