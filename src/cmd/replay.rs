//! `exim-pilot replay --from-beginning`: rebuild the store from the raw
//! topic.
//!
//! After an upgrade that parses or correlates better, the records still
//! in Kafka can be processed again: replay commits the group's offsets at
//! the start of every partition, clears the partitions' saved states, and
//! runs a processor until the topic is read to its end. Records and
//! rejections already stored are kept once; every lifecycle is rewritten.
//! Stop the group's processors first: Kafka refuses to move the offsets of
//! a group with running members, and replay then changes nothing. Start
//! them again afterwards; they go on from where replay stopped.

use std::process::ExitCode;

use exim_pilot_processor::fleet::reset_to_beginning;

use super::common;
use super::process::{run_processor, FleetArgs};

/// Options of `exim-pilot replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    fleet: FleetArgs,

    /// Start from the oldest record still in the topic (the only kind of
    /// replay there is; the flag says it on the command line).
    #[arg(long, required = true)]
    from_beginning: bool,

    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let fleet = args.fleet.resolve()?;
    let mut config = fleet.config();
    {
        let rt = common::runtime()?;
        let store = fleet.open_store(&rt)?;
        let partitions = reset_to_beginning(&config, &*store, rt.handle())?;
        if !args.quiet {
            eprintln!(
                "exim-pilot: group {} reset to the beginning of {} partitions of {}",
                config.group,
                partitions.len(),
                config.topic
            );
        }
    }
    config.stop_when_caught_up = true;
    run_processor(&fleet, config, None, None, args.quiet)
}
