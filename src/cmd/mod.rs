//! One module per subcommand, plus what they share.

pub mod common;
pub mod config;
pub mod import;
pub mod lifecycles;
pub mod migrate;
pub mod parse;
pub mod process;
pub mod queue;
pub mod replay;
pub mod report;
pub mod serve;
pub mod standalone;
pub mod tail;
pub mod trace;
pub mod user;

/// Sends `tracing` output to standard error, filtered by `RUST_LOG`
/// (default: warnings and errors only, so command output stays clean).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
