//! `exim-pilot standalone`.

use std::process::ExitCode;

/// Options of `exim-pilot standalone`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`standalone` is not available in this build")
}
