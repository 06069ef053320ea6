//! `exim-pilot`: the command-line entry point.
//!
//! This binary only wires the library crates together: each subcommand
//! lives in its own module under `cmd/` with an `Args` type (its options)
//! and a `run` function. `main` turns the result of `run` into an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod config;
mod metrics;

mod alloc;

/// Correlation allocates and frees many small strings per record; mimalloc
/// does that markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: alloc::Mimalloc = alloc::Mimalloc;

/// See every Exim message's life, every delivery problem and every queue.
#[derive(Parser, Debug)]
#[command(name = "exim-pilot", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Tail this machine's Exim logs, correlate and store them, all in one process.
    Standalone(cmd::standalone::Args),
    /// Fleet mode: follow this mail server's Exim logs and publish every record to Kafka.
    Tail(cmd::tail::Args),
    /// Check a configuration file and print the settings in effect.
    Config(cmd::config::Args),
    /// Backfill log files (plain or .gz) into the embedded store.
    Import(cmd::import::Args),
    /// Deliverability report from log files or from the embedded store.
    Report(cmd::report::Args),
    /// The timeline of one message, or of every message to or from an address.
    Trace(cmd::trace::Args),
    /// One JSON object per message: the correlated lifecycles.
    Lifecycles(cmd::lifecycles::Args),
    /// Parse log records into typed events and print them.
    Parse(cmd::parse::Args),
    /// Create or upgrade fleet mode's ClickHouse database.
    Migrate(cmd::migrate::Args),
    /// Serve the GraphQL API over a data directory or fleet mode's ClickHouse.
    Serve(cmd::serve::Args),
    /// Manage the users of the API.
    User(cmd::user::Args),
    /// Fleet mode: consume the raw Kafka topic, correlate, and store.
    Process(cmd::process::Args),
    /// Fleet mode: process the raw topic again from its beginning.
    Replay(cmd::replay::Args),
}

fn main() -> ExitCode {
    restore_sigpipe();
    raise_open_files_limit();
    let cli = Cli::parse();
    cmd::init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("exim-pilot: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit of open files to the hard one. Many systems start
/// processes at 1,024 open files while allowing far more: a server with
/// many logs, clients and store files should not run out where it need
/// not (the HTTP server's connection cap follows the limit; see
/// `exim_pilot_api::server`).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            // A refusal leaves the limit as it was, which is still usable.
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text
/// the message already holds (library errors often quote their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Standalone(args) => cmd::standalone::run(args),
        Command::Tail(args) => cmd::tail::run(args),
        Command::Config(args) => cmd::config::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Trace(args) => cmd::trace::run(args),
        Command::Lifecycles(args) => cmd::lifecycles::run(args),
        Command::Parse(args) => cmd::parse::run(args),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::User(args) => cmd::user::run(args),
        Command::Process(args) => cmd::process::run(args),
        Command::Replay(args) => cmd::replay::run(args),
    }
}

/// Lets a closed pipe end the process quietly, as it does for other Unix
/// tools (`exim-pilot parse big.log | head`), instead of an error on every
/// later write. Rust programs ignore SIGPIPE by default.
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default has no
    // preconditions; it runs before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
