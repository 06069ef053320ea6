//! Where Exim's own regression-suite logs are read from, for the tests
//! that use them: `$EXIM_TESTSUITE_DIR` when set, else
//! `../shared/peer/exim-testsuite` beside the workspace. The folder holds
//! `log/`, `rejectlog/` and `paniclog/`, one file per test. The logs are
//! GPL test data: they are read where they are and never copied into this
//! repository. Without them the tests that need them say so and pass.

use std::path::{Path, PathBuf};

use exim_pilot_schema::LogFile;

/// The variable that names the folder.
pub const DIR_VARIABLE: &str = "EXIM_TESTSUITE_DIR";

/// The folder of the test-suite logs, whether or not it exists.
pub fn dir() -> PathBuf {
    match std::env::var_os(DIR_VARIABLE) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peer/exim-testsuite"),
    }
}

/// Every log file of the kinds asked for, sorted, with its kind; `None`
/// when the folder is not on this machine.
pub fn logs(kinds: &[LogFile]) -> Option<Vec<(PathBuf, LogFile)>> {
    let root = dir();
    if !root.is_dir() {
        return None;
    }
    let mut logs = Vec::new();
    for &log in kinds {
        let sub = match log {
            LogFile::Main => "log",
            LogFile::Reject => "rejectlog",
            LogFile::Panic => "paniclog",
        };
        let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        logs.extend(files.into_iter().map(|p| (p, log)));
    }
    Some(logs)
}

/// The line a test prints when the logs are not there.
pub fn skipped() -> String {
    format!(
        "skipped: Exim's test-suite logs are not at {} (set {DIR_VARIABLE} to their folder)",
        dir().display()
    )
}
