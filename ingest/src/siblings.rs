//! Rotated siblings of a log file, and wildcard log paths.
//!
//! logrotate and Exim's own `exicyclog` rename a log to `mainlog.1`, then
//! `mainlog.2` (often compressed, `mainlog.2.gz`) and so on; logrotate's
//! `dateext` option names them `mainlog-20240101` instead. These files are
//! the log's rotated siblings: the tailer reads them once for a backfill,
//! finds a checkpointed file among them after a rotation it did not see,
//! and recognises a `copytruncate` copy by its fingerprint.
//!
//! A wildcard path such as `/var/log/exim4/mainlog*` names a log *and* its
//! siblings, so it is reduced to the live paths it covers (`mainlog`): the
//! siblings are never followed as logs of their own, which would read every
//! rotated copy a second time. Only `*` and `?` in the last component are
//! understood. Other compressions than gzip (`.bz2`, `.xz`, `.zst`) are not
//! recognised as siblings.

use std::io;
use std::path::{Path, PathBuf};

/// Where a rotated file sits in the rotation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rotation {
    /// `mainlog.N` or `mainlog.N.gz`: higher numbers are older.
    Numbered(u32),
    /// `mainlog-DIGITS` or `mainlog-DIGITS.gz` (logrotate's `dateext`):
    /// lower numbers are older.
    Dated(u64),
}

impl Rotation {
    /// A key that sorts oldest first. Dated files come before numbered ones
    /// when a directory holds both, which only happens after the rotation
    /// scheme was changed.
    fn age_key(self) -> (u8, u64) {
        match self {
            Rotation::Dated(date) => (0, date),
            Rotation::Numbered(n) => (1, u64::from(u32::MAX - n)),
        }
    }

    /// Parses the rotation suffix of `name` for a log named `base`:
    /// `mainlog.2.gz` is `Numbered(2)` for `mainlog`.
    pub fn of(base: &str, name: &str) -> Option<Rotation> {
        let suffix = name.strip_prefix(base)?;
        let suffix = suffix.strip_suffix(".gz").unwrap_or(suffix);
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(number) = suffix.strip_prefix('.') {
            if all_digits(number) && number.len() <= 4 {
                return number.parse().ok().map(Rotation::Numbered);
            }
        }
        if let Some(date) = suffix.strip_prefix('-') {
            if all_digits(date) && (6..=14).contains(&date.len()) {
                return date.parse().ok().map(Rotation::Dated);
            }
        }
        None
    }
}

/// A rotated sibling of a log file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Sibling {
    /// Its path.
    pub path: PathBuf,
    /// Its place in the rotation.
    pub rotation: Rotation,
}

/// The rotated siblings of `log` in its directory, oldest first. A missing
/// directory has none.
pub fn rotated_siblings(log: &Path) -> io::Result<Vec<Sibling>> {
    let Some(base) = log.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let dir = parent_dir(log);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut siblings = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rotation) = Rotation::of(base, name) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            siblings.push(Sibling {
                path: entry.path(),
                rotation,
            });
        }
    }
    siblings.sort_by_key(|s| s.rotation.age_key());
    Ok(siblings)
}

/// The directory of `path`, `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The name of the live log a (possibly rotated) file name belongs to:
/// `mainlog.3.gz` and `mainlog-20240101` belong to `mainlog`.
pub fn live_name(name: &str) -> &str {
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    for separator in ['.', '-'] {
        if let Some(at) = stem.rfind(separator) {
            let base = &stem[..at];
            if !base.is_empty() && Rotation::of(base, name).is_some() {
                return base;
            }
        }
    }
    name
}

/// Expands a log path that may hold `*` or `?` in its last component into
/// the live log paths it covers, sorted. A path without wildcards is
/// returned as it is, whether it exists or not. Wildcards in directory
/// names are refused.
pub fn expand_log_path(path: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = parent_dir(path);
    if has_wildcard(&dir.to_string_lossy()) {
        return Err(format!(
            "{}: wildcards are only understood in the file name",
            path.display()
        ));
    }
    let name = match path.file_name().and_then(|n| n.to_str()) {
        Some(name) if has_wildcard(name) => name,
        _ => return Ok(vec![path.to_path_buf()]),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut live = Vec::new();
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let Some(entry_name) = entry_name.to_str() else {
            continue;
        };
        if wildcard_match(name.as_bytes(), entry_name.as_bytes()) {
            let path = dir.join(live_name(entry_name));
            if !live.contains(&path) {
                live.push(path);
            }
        }
    }
    live.sort();
    Ok(live)
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?'])
}

/// Shell-style matching of `*` (any run of bytes) and `?` (one byte).
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    // Classic backtracking over the last `*` seen: linear for the short
    // names found in a log directory.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_suffixes() {
        assert_eq!(
            Rotation::of("mainlog", "mainlog.1"),
            Some(Rotation::Numbered(1))
        );
        assert_eq!(
            Rotation::of("mainlog", "mainlog.12.gz"),
            Some(Rotation::Numbered(12))
        );
        assert_eq!(
            Rotation::of("mainlog", "mainlog.01"),
            Some(Rotation::Numbered(1))
        );
        assert_eq!(
            Rotation::of("main.log", "main.log-20240101.gz"),
            Some(Rotation::Dated(20240101))
        );
        assert_eq!(Rotation::of("mainlog", "mainlog"), None);
        assert_eq!(Rotation::of("mainlog", "mainlog.gz"), None);
        assert_eq!(Rotation::of("mainlog", "mainlog.old"), None);
        assert_eq!(Rotation::of("mainlog", "mainlog.1.bz2"), None);
        assert_eq!(Rotation::of("mainlog", "rejectlog.1"), None);
    }

    #[test]
    fn live_names() {
        assert_eq!(live_name("mainlog"), "mainlog");
        assert_eq!(live_name("mainlog.1"), "mainlog");
        assert_eq!(live_name("mainlog.3.gz"), "mainlog");
        assert_eq!(live_name("main.log-20240101"), "main.log");
        assert_eq!(live_name("main.log"), "main.log");
        assert_eq!(live_name("mainlog.old"), "mainlog.old");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"mainlog*", b"mainlog"));
        assert!(wildcard_match(b"mainlog*", b"mainlog.2.gz"));
        assert!(wildcard_match(b"*log", b"rejectlog"));
        assert!(wildcard_match(b"main?og", b"mainlog"));
        assert!(wildcard_match(b"*a*b*", b"xxaxxbxx"));
        assert!(!wildcard_match(b"*log", b"mainlog.1"));
        assert!(!wildcard_match(b"mainlog?", b"mainlog"));
    }

    #[test]
    fn siblings_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "mainlog",
            "mainlog.1",
            "mainlog.2.gz",
            "mainlog.10.gz",
            "mainlog.3.gz",
            "mainlog.x",
            "rejectlog.1",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names: Vec<String> = rotated_siblings(&dir.path().join("mainlog"))
            .unwrap()
            .into_iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["mainlog.10.gz", "mainlog.3.gz", "mainlog.2.gz", "mainlog.1"]
        );
    }

    #[test]
    fn a_wildcard_reduces_to_live_logs() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "mainlog.1",
            "mainlog.2.gz",
            "rejectlog",
            "rejectlog.1",
            "paniclog",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let expanded = expand_log_path(&dir.path().join("*log*")).unwrap();
        let names: Vec<_> = expanded
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        // mainlog itself is missing right now, but its siblings name it.
        assert_eq!(names, ["mainlog", "paniclog", "rejectlog"]);
        assert!(expand_log_path(&dir.path().join("*").join("mainlog")).is_err());
    }
}
