//! `exim-pilot import`.

use std::process::ExitCode;

/// Options of `exim-pilot import`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`import` is not available in this build")
}
