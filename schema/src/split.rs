//! Syslog lines that Exim split into numbered parts, put back together.
//!
//! Through syslog, Exim splits a long line into numbered parts, each a
//! syslog line of its own whose message starts with `[n/m] ` or `[n\m] `:
//! `/` says the part was cut mid-line (joined to the next with nothing),
//! `\` that it ended at a newline of the original (joined with `\n`).
//! [`SplitParts`] puts consecutive parts of one line back together,
//! keeping the first part's syslog prefix and dropping the markers. Parts
//! interleaved with other lines are not re-assembled: each stays a record.
//!
//! Every reader of logs (the `report` and `lifecycles` file readers, the
//! follower and the importer) joins parts through this one type, so a
//! record has the same bytes whichever path read it. The joined record
//! keeps the offset of its first part, which names it.

/// A `[n/m] ` or `[n\m] ` marker at the start of a syslog message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SplitMarker {
    /// Which part this is, from 1.
    pub part: u32,
    /// How many parts the line was split into.
    pub parts: u32,
    /// The part ended at a newline of the original line.
    pub newline: bool,
    /// The marker's length, with its trailing space.
    pub len: usize,
}

/// Reads a split marker from the start of `b`.
pub fn split_marker(b: &[u8]) -> Option<SplitMarker> {
    if b.first() != Some(&b'[') {
        return None;
    }
    let head = &b[..b.len().min(24)];
    let close = head.iter().position(|c| *c == b']')?;
    if b.get(close + 1) != Some(&b' ') {
        return None;
    }
    let inner = &b[1..close];
    let sep = inner.iter().position(|c| *c == b'/' || *c == b'\\')?;
    let part = number(&inner[..sep])?;
    let parts = number(&inner[sep + 1..])?;
    if part == 0 || part > parts {
        return None;
    }
    Some(SplitMarker {
        part,
        parts,
        newline: inner[sep] == b'\\',
        len: close + 2,
    })
}

/// Where the message of a syslog line starts (after `tag: `), and where
/// its syslog stamp ends, as `(stamp_end, message_start)`; `None` for
/// lines that are not syslog lines.
pub fn syslog_message(line: &[u8]) -> Option<(usize, usize)> {
    let stamp_end = if line.len() > 16 && line[3] == b' ' && line[9] == b':' {
        16
    } else if line.get(10) == Some(&b'T') {
        line.iter().position(|c| *c == b' ')? + 1
    } else {
        return None;
    };
    let colon = line[stamp_end..].windows(2).position(|w| w == b": ")? + stamp_end;
    Some((stamp_end, colon + 2))
}

/// A decimal number of at most nine digits (markers count parts in the
/// tens at most).
fn number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0')))
}

/// The line being re-assembled.
#[derive(Clone, Debug)]
struct Awaited {
    /// The syslog prefix after the stamp (`host exim[12]: `), which every
    /// part of the line repeats.
    key: Vec<u8>,
    next: u32,
    parts: u32,
    newline: bool,
}

/// Re-assembles split syslog lines while a reader cuts a log into records;
/// see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct SplitParts {
    awaited: Option<Awaited>,
}

impl SplitParts {
    /// A re-assembler waiting for nothing.
    pub fn new() -> SplitParts {
        SplitParts::default()
    }

    /// Takes `line`, the first line of a new record. Returns the byte
    /// range of its split marker, which the record leaves out, or `None`
    /// when it has none (the record is the line as it is). When the line
    /// is the first of several parts, the following parts are awaited.
    pub fn start(&mut self, line: &[u8]) -> Option<std::ops::Range<usize>> {
        self.awaited = None;
        let (stamp_end, msg) = syslog_message(line)?;
        let m = split_marker(&line[msg..])?;
        if m.part == 1 && m.parts > 1 {
            self.awaited = Some(Awaited {
                key: line[stamp_end..msg].to_vec(),
                next: 2,
                parts: m.parts,
                newline: m.newline,
            });
        }
        Some(msg..msg + m.len)
    }

    /// Appends `line` to `record` when it is the next awaited part: its
    /// message without the marker, after `\n` when the part before ended
    /// at a newline. False, with nothing changed, for any other line. The
    /// caller checks that the line fits into the record.
    pub fn extend(&mut self, line: &[u8], record: &mut Vec<u8>) -> bool {
        let Some(awaited) = &mut self.awaited else {
            return false;
        };
        let Some((stamp_end, msg)) = syslog_message(line) else {
            return false;
        };
        let Some(m) = split_marker(&line[msg..]) else {
            return false;
        };
        if m.part != awaited.next || m.parts != awaited.parts || line[stamp_end..msg] != awaited.key
        {
            return false;
        }

        // A file with CRLF line ends: the part's `\r` is no text of the
        // line Exim split.
        if record.last() == Some(&b'\r') {
            record.pop();
        }
        if awaited.newline {
            record.push(b'\n');
        }
        record.extend_from_slice(&line[msg + m.len..]);
        awaited.next += 1;
        awaited.newline = m.newline;
        if m.part == m.parts {
            self.awaited = None;
        }
        true
    }

    /// Forgets the line being re-assembled: its next part, if it comes,
    /// starts a record of its own.
    pub fn reset(&mut self) {
        self.awaited = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins `lines` the way a reader does: each line either extends the
    /// record or starts the next.
    fn join(lines: &[&str]) -> Vec<String> {
        let mut parts = SplitParts::new();
        let mut records: Vec<Vec<u8>> = Vec::new();
        for line in lines {
            let line = line.as_bytes();
            if let Some(record) = records.last_mut() {
                if parts.extend(line, record) {
                    continue;
                }
            }
            let mut record = Vec::new();
            match parts.start(line) {
                Some(marker) => {
                    record.extend_from_slice(&line[..marker.start]);
                    record.extend_from_slice(&line[marker.end..]);
                }
                None => record.extend_from_slice(line),
            }
            records.push(record);
        }
        records
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect()
    }

    #[test]
    fn parts_are_joined_as_their_markers_say() {
        let r = join(&[
            "May  3 10:00:00 mx exim[7]: [1/3] 2024-05-03 10:00:00 abc",
            "May  3 10:00:00 mx exim[7]: [2\\3] def",
            "May  3 10:00:01 mx exim[7]: [3/3] ghi",
            "May  3 10:00:01 mx exim[8]: other",
        ]);
        assert_eq!(
            r,
            [
                "May  3 10:00:00 mx exim[7]: 2024-05-03 10:00:00 abcdef\nghi",
                "May  3 10:00:01 mx exim[8]: other"
            ]
        );
    }

    #[test]
    fn parts_of_another_process_or_out_of_order_stay_apart() {
        let r = join(&[
            "May  3 10:00:00 mx exim[7]: [1/3] abc",
            "May  3 10:00:00 mx exim[9]: [2/3] def",
            "May  3 10:00:00 mx exim[7]: [3/3] ghi",
        ]);
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], "May  3 10:00:00 mx exim[9]: def");
    }

    #[test]
    fn crlf_ends_of_parts_are_dropped() {
        let r = join(&[
            "2024-05-03T10:00:00Z mx exim[7]: [1/2] abc\r",
            "2024-05-03T10:00:00Z mx exim[7]: [2/2] def\r",
        ]);
        assert_eq!(r, ["2024-05-03T10:00:00Z mx exim[7]: abcdef\r"]);
    }

    #[test]
    fn markers() {
        assert_eq!(
            split_marker(b"[2\\12] x"),
            Some(SplitMarker {
                part: 2,
                parts: 12,
                newline: true,
                len: 7
            })
        );
        assert_eq!(split_marker(b"[0/2] x"), None);
        assert_eq!(split_marker(b"[3/2] x"), None);
        assert_eq!(split_marker(b"[1/2]x"), None);
        assert_eq!(split_marker(b"[27397] x"), None);
    }
}
