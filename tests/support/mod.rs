//! What the command-line tests share.

use std::process::Output;

/// The standard output of a finished `exim-pilot` run, which must have
/// succeeded: otherwise the test fails at the caller's line, with the
/// run's standard error.
#[track_caller]
pub fn stdout_of(out: Output) -> String {
    assert!(
        out.status.success(),
        "exim-pilot failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
