//! Recognising the second syslog copy of a rejection.
//!
//! Exim writes a rejection to two logs, the main log and the reject log
//! (a failed authentication too). Logging to files, the copies land in
//! different files and only the main log's is counted. Logging to syslog,
//! both copies go to syslog, and with Exim's `syslog_duplication` option
//! (true by default) both are written: first the main log's (at priority
//! `info`), then at once, by the same process, the reject log's (at
//! `notice`), whose first line is the same text and which may go on with
//! the rejected message's envelope and header lines (split by Exim into
//! numbered parts `[1\n] ...`). Most syslog setups write both priorities
//! to one file, so a reader would see every rejection twice.
//!
//! # The rule
//!
//! [`SyslogCopies`] takes the records of a log in order. A rejection or
//! failed authentication read through syslog is a *copy* when an earlier
//! one, not itself a copy and not yet matched, has
//!
//! - the same syslog host, program and pid,
//! - the same text (the first line of the syslog message, Exim's own
//!   timestamp included when it writes one, split marker left out),
//! - a time at most one second away (syslog stamps the two copies
//!   separately; they may straddle a second), and
//! - when the file shows syslog priorities (`<22>`), a different priority.
//!
//! Each earlier record matches at most one copy. So when one process
//! rejects the same command twice in one second (two identical rejections
//! are possible), the four lines Exim writes pair up as two rejections,
//! each with its copy. Other records between the copies (other processes,
//! other programs) do not matter; only the last [`WINDOW`] unmatched
//! rejections are remembered.
//!
//! The rule assumes Exim's default. With `syslog_duplication` false (or
//! `write_rejectlog` false) Exim writes each rejection once, and two
//! identical rejections by one process in the same second, with no
//! priorities in the file to tell them apart, are read as one. Records that
//! do not come through syslog are never copies. A paniclog entry is also
//! written twice through syslog; both copies are kept, since neither counts
//! as anything.

use std::collections::VecDeque;

use exim_pilot_schema::event::{Event, EventKind};
use exim_pilot_schema::record::bytes_as_text;
use exim_pilot_schema::split::{split_marker, syslog_message};
use exim_pilot_schema::LogTime;
use memchr::memchr;
use serde::{Deserialize, Serialize};

/// How many unmatched syslog rejections are remembered.
pub const WINDOW: usize = 64;

/// How far apart, in seconds, a rejection and its copy may be stamped.
const MAX_APART_SECONDS: i64 = 1;

/// A syslog rejection waiting for its copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Original {
    /// Host, program and pid, then the message text; see [`key`].
    #[serde(with = "bytes_as_text")]
    key: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time: Option<LogTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<u16>,
}

/// Finds the second syslog copies of rejections; see the module
/// documentation for the rule.
///
/// What it remembers is serialisable: a pipeline saves it with its state,
/// so that a copy read after a restart, its original before, is still
/// known as a copy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SyslogCopies {
    recent: VecDeque<Original>,
}

impl SyslogCopies {
    /// A detector that has seen nothing yet.
    pub fn new() -> SyslogCopies {
        SyslogCopies::default()
    }

    /// True when no rejection waits for its copy.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// True when `event`, parsed from `record`, is the second syslog copy
    /// of a rejection read just before it. Records must be given in the
    /// order they were logged.
    pub fn is_copy(&mut self, record: &[u8], event: &Event<'_>) -> bool {
        if !matches!(event.kind, EventKind::Reject(_) | EventKind::AuthFailure(_)) {
            return false;
        }
        let Some(key) = key(record, event) else {
            return false;
        };
        let priority = priority(record);

        let found = self.recent.iter().position(|o| {
            o.key == key && close_in_time(o.time, event.time) && distinct(o.priority, priority)
        });
        if let Some(at) = found {
            self.recent.remove(at);
            return true;
        }

        // A saved state may hold more than this build remembers.
        while self.recent.len() >= WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(Original {
            key,
            time: event.time,
            priority,
        });
        false
    }
}

/// What a rejection and its copy share: syslog host, program and pid, and
/// the first line of the syslog message without its split marker. `None`
/// when the record did not come through syslog.
fn key(record: &[u8], event: &Event<'_>) -> Option<Vec<u8>> {
    let syslog = event.syslog.as_ref()?;
    let text = message_text(record)?;
    let mut key = Vec::with_capacity(text.len() + 48);
    key.extend_from_slice(syslog.host.as_bytes());
    key.push(0);
    key.extend_from_slice(syslog.program.as_bytes());
    key.push(0);
    key.extend_from_slice(syslog.pid.unwrap_or(0).to_string().as_bytes());
    key.push(0);
    key.extend_from_slice(text);
    Some(key)
}

/// The first line of a syslog record's message, after `tag: ` and any
/// split marker.
fn message_text(record: &[u8]) -> Option<&[u8]> {
    let line = &record[..memchr(b'\n', record).unwrap_or(record.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = line.iter().position(|b| *b != 0)?;
    let line = &line[start..];
    let line = &line[priority_len(line)..];
    let (_, msg) = syslog_message(line)?;
    let text = &line[msg..];
    Some(match split_marker(text) {
        Some(m) => &text[m.len..],
        None => text,
    })
}

/// The syslog priority written before the stamp (`<22>`), if any.
fn priority(record: &[u8]) -> Option<u16> {
    let start = record.iter().position(|b| *b != 0)?;
    let line = &record[start..];
    let len = priority_len(line);
    if len == 0 {
        return None;
    }
    std::str::from_utf8(&line[1..len - 1]).ok()?.parse().ok()
}

/// The length of a leading `<digits>` priority, or 0.
fn priority_len(line: &[u8]) -> usize {
    if line.first() != Some(&b'<') {
        return 0;
    }
    match memchr(b'>', &line[..line.len().min(5)]) {
        Some(close) if close > 1 && line[1..close].iter().all(u8::is_ascii_digit) => close + 1,
        _ => 0,
    }
}

fn close_in_time(a: Option<LogTime>, b: Option<LogTime>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a.time - b.time).num_seconds().abs() <= MAX_APART_SECONDS,
        _ => a == b,
    }
}

/// Two copies of one rejection are written at different priorities; when
/// the file does not show them, nothing tells copies apart.
fn distinct(a: Option<u16>, b: Option<u16>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a != b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_record;
    use exim_pilot_schema::LogFile;

    const REJECT: &str = "2026-12-04 15:54:41.080 H=(spambot.invalid) [127.0.0.1]:45198 \
        rejected EHLO or HELO spambot.invalid: HELO name spambot.invalid is on the blocklist";

    fn line(stamp: &str, pid: u32, text: &str) -> String {
        format!("Dec  4 {stamp} mx1 exim[{pid}]: {text}")
    }

    /// Which of `lines` are copies.
    fn copies(lines: &[String]) -> Vec<bool> {
        let mut c = SyslogCopies::new();
        lines
            .iter()
            .map(|l| c.is_copy(l.as_bytes(), &parse_record(LogFile::Main, l.as_bytes())))
            .collect()
    }

    #[test]
    fn the_second_copy_is_found_across_other_lines_and_a_second() {
        let lines = [
            line("15:54:41", 7, REJECT),
            "Dec  4 15:54:41 mx1 postfix[9]: 2026-12-04 15:54:41 rejected x".to_string(),
            line("15:54:42", 7, &format!("[1\\2] {REJECT}")),
            line("15:54:42", 7, "[2\\2] Envelope-from: <a@example.com>"),
        ];
        assert_eq!(copies(&lines), [false, false, true, false]);
    }

    #[test]
    fn identical_rejections_of_one_process_pair_up() {
        let l = line("15:54:41", 7, REJECT);
        let lines = [l.clone(), l.clone(), l.clone(), l.clone(), l];
        assert_eq!(copies(&lines), [false, true, false, true, false]);
    }

    #[test]
    fn another_pid_host_or_text_is_no_copy() {
        let lines = [
            line("15:54:41", 7, REJECT),
            line("15:54:41", 8, REJECT),
            line("15:54:41", 7, &REJECT.replace("spambot", "other")),
            line("15:54:41", 7, REJECT).replace(" mx1 ", " mx2 "),
        ];
        assert_eq!(copies(&lines), [false; 4]);
    }

    #[test]
    fn the_same_text_seconds_later_is_no_copy() {
        let text = REJECT.replace("2026-12-04 15:54:41.080 ", "");
        let lines = [line("15:54:41", 7, &text), line("15:54:45", 7, &text)];
        assert_eq!(copies(&lines), [false, false]);
    }

    #[test]
    fn equal_priorities_are_two_rejections() {
        let l = line("15:54:41", 7, REJECT);
        let lines = [format!("<22>{l}"), format!("<22>{l}"), format!("<21>{l}")];
        assert_eq!(copies(&lines), [false, false, true]);
    }

    #[test]
    fn records_outside_syslog_are_never_copies() {
        let lines = [REJECT.to_string(), REJECT.to_string()];
        assert_eq!(copies(&lines), [false, false]);
    }
}
