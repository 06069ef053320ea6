//! The log parser: one raw record in, one typed [`Event`] out.
//!
//! [`records`] cuts a log file into records (joining continuation lines
//! and syslog's split lines); [`parse_record`] reads one record. The parse
//! has two steps:
//!
//! 1. the header (module `header`): syslog wrapping, Exim's timestamp,
//!    `[pid]` and the message id;
//! 2. the body, by its first bytes: `<=` arrivals, the delivery marks
//!    (`=>`, `->`, `>>`, `*>`, `**`, `==`), the other message-level lines
//!    (`Completed`, freezes, admin actions; module `message`), and the
//!    connection-level lines (SMTP connections, rejections, discards,
//!    failed authentications and verifications, host problems; module
//!    `session`), and last the other lines Exim writes (warnings, TLS and
//!    DANE problems, host lookups that found nothing, transport output;
//!    module `notice`). Text the parser has no kind for (an ACL's
//!    `logwrite`) becomes an [`EventKind::Note`] that keeps the whole text
//!    and the host fields in it.
//!
//! A value that does not read into its typed slot (a size that is not a
//! number, a port that is a name, an address in `[...]` that is no IP)
//! never costs the record its kind: the value is kept as written in the
//! event's `fields`, marked [`invalid`](exim_pilot_schema::event::Field).
//!
//! Only a record without a readable timestamp (blank lines, text that is
//! not a log) becomes [`EventKind::Unparsed`], keeping its bytes; each one
//! is counted in [`unparsed_total`].
//!
//! Records of the three logs differ after the first line: a rejectlog entry
//! is followed by the rejected message's envelope and headers, which become
//! the [`Reject`](exim_pilot_schema::event::Reject)'s `detail`; a paniclog
//! entry becomes one [`EventKind::Panic`] with all its lines. In a mainlog
//! record, lines after the first are kept in the event's `fields` under
//! `continuation` (or in a note's text).
//!
//! Through syslog, Exim writes each rejection twice (see [`SyslogCopies`]
//! for how the second copy is told from a second rejection); readers that
//! count rejections skip the copies.
//!
//! The parser never fails and never panics: every input gives an event.
//! Values are borrowed from the record; only escaped text is copied.

mod clock;
mod duplicates;
mod fields;
mod header;
mod message;
mod notice;
pub mod records;
mod scan;
mod session;
mod years;

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Datelike;
use exim_pilot_schema::event::{Event, EventKind, Field, QueueRun, Syslog, Text};
use exim_pilot_schema::LogFile;
use exim_pilot_schema::LogTime;
use memchr::memchr;

pub use clock::{LogClock, WallClock};
pub use duplicates::SyslogCopies;
pub use records::{open_log, OwnedRecord, Record, RecordError, RecordReader, MAX_RECORD_BYTES};
pub use years::SyslogYears;

/// Records parsed to [`EventKind::Unparsed`] since the process started.
static UNPARSED: AtomicU64 = AtomicU64::new(0);

/// How many records this process could not classify, for the
/// `unparsed_records_total` metric.
pub fn unparsed_total() -> u64 {
    UNPARSED.load(Ordering::Relaxed)
}

/// Options of the parse. The defaults suit a log read on the machine and
/// in the year it was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// The year of RFC 3164 syslog stamps (`Oct 22 05:12:48`), which carry
    /// none: the year the log starts in. A log that runs past New Year
    /// moves to the next year at its first stamp of the new year, as
    /// [`SyslogYears`] dates it. Without it the parser takes the current
    /// year, or the year before for a date later than tomorrow (a December
    /// log read in January; tomorrow, so that a server whose clock is
    /// ahead of UTC has its first hours of January in the new year). Exim's
    /// own timestamp, when the line has one, always wins over the syslog
    /// stamp.
    pub syslog_year: Option<i32>,
}

impl ParseOptions {
    fn year_for(&self, month: u32, day: u32) -> i32 {
        match self.syslog_year {
            Some(y) => y,
            None => year_of_date(month, day, tomorrow()),
        }
    }
}

/// The year a syslog stamp of `month` and `day` was written in, read the
/// day before `tomorrow` (year, month, day): the latest year that puts it
/// no later than tomorrow.
fn year_of_date(month: u32, day: u32, (year, t_month, t_day): (i32, u32, u32)) -> i32 {
    if (month, day) > (t_month, t_day) {
        year - 1
    } else {
        year
    }
}

/// Tomorrow's UTC date as (year, month, day), looked up again when a
/// minute has passed, so that a process running across New Year dates
/// January's records in the new year. Packed in one word: the second
/// after which to look again, the year, the month and the day.
fn tomorrow() -> (i32, u32, u32) {
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let packed = CACHED.load(Ordering::Relaxed);
    if packed != 0 && now < packed >> 32 {
        let year = ((packed >> 9) & 0xffff) as i32;
        return (year, ((packed >> 5) & 0xf) as u32, (packed & 0x1f) as u32);
    }
    let today = chrono::Utc::now().date_naive();
    let next = today.succ_opt().unwrap_or(today);
    let (year, month, day) = (next.year(), next.month(), next.day());
    let year_bits = year.clamp(0, 0xffff) as u64;
    CACHED.store(
        ((now + 60) << 32) | (year_bits << 9) | u64::from(month) << 5 | u64::from(day),
        Ordering::Relaxed,
    );
    (year, month, day)
}

/// Parses one record of `log` (one line, or a multi-line entry joined with
/// `\n`) with the default options. Never fails: a record that cannot be
/// classified becomes [`EventKind::Unparsed`] with its bytes.
pub fn parse_record(log: LogFile, record: &[u8]) -> Event<'_> {
    parse_record_with(&ParseOptions::default(), log, record)
}

/// [`parse_record`] with explicit options.
pub fn parse_record_with<'a>(opts: &ParseOptions, log: LogFile, record: &'a [u8]) -> Event<'a> {
    match head(opts, record) {
        Ok(head) => event(log, record, head),
        Err(reason) => unparsed(reason, record),
    }
}

/// A record as [`parse_record_brief`] read it.
#[derive(Debug)]
pub enum Brief<'a> {
    /// The whole record.
    Event(Event<'a>),
    /// A one-line mainlog record about no message that only opens or
    /// closes an SMTP connection (`SMTP connection from ...`) or shows an
    /// Exim process's command line (`cwd=...`), read only as far as its
    /// header.
    Header {
        /// The record's time.
        time: Option<LogTime>,
        /// The syslog wrapping, when the record came through syslog.
        syslog: Option<Box<Syslog<'a>>>,
    },
}

/// [`parse_record_with`] for a reader that follows only messages,
/// rejections and queue runs, and needs of other records no more than
/// their time (`report`): the commonest records that cannot matter to it
/// are read only as far as their header. On a busy log they are about
/// three records in ten.
pub fn parse_record_brief<'a>(opts: &ParseOptions, log: LogFile, record: &'a [u8]) -> Brief<'a> {
    let head = match head(opts, record) {
        Ok(head) => head,
        Err(reason) => return Brief::Event(unparsed(reason, record)),
    };
    let body = head.header.body;
    if log == LogFile::Main
        && head.header.id.is_none()
        && head.continuation.is_none()
        && (body.starts_with(b"SMTP connection ") || body.starts_with(b"cwd="))
    {
        return Brief::Header {
            time: head.header.time,
            syslog: head.header.syslog,
        };
    }
    Brief::Event(event(log, record, head))
}

/// A record's header, and where the rest of it is.
struct Head<'a> {
    header: header::Header<'a>,
    /// Where the body starts in the record.
    body_start: usize,
    /// The lines after the first, when there are any.
    continuation: Option<&'a [u8]>,
}

/// Reads the header of a record, or says why the record has none.
fn head<'a>(opts: &ParseOptions, record: &'a [u8]) -> Result<Head<'a>, &'static str> {
    let first_end = memchr(b'\n', record).unwrap_or(record.len());
    // NUL bytes left by a crash before the line, and the carriage return
    // of a log that went through Windows tools, are not part of it (the
    // raw record keeps them).
    let start = record[..first_end]
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(first_end);
    let start = start + rfc3164_priority_len(&record[start..first_end]);
    let first = &record[start..first_end];
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let continuation = record
        .get(first_end + 1..)
        .filter(|_| first_end < record.len());

    let header = header::read(first, opts)?;
    // The header only strips a prefix, so the body is a suffix of the line.
    let body_start = start + first.len() - header.body.len();
    Ok(Head {
        header,
        body_start,
        continuation,
    })
}

/// The event of a record whose header was read.
fn event<'a>(log: LogFile, record: &'a [u8], head: Head<'a>) -> Event<'a> {
    let Head {
        header: h,
        body_start,
        continuation,
    } = head;
    let kind = match log {
        LogFile::Panic => EventKind::Panic {
            text: scan::text(&record[body_start..]),
        },
        LogFile::Main | LogFile::Reject => {
            let kind = body(h.body, h.id.is_some());
            match continuation {
                None => kind,
                Some(more) => attach(kind, &record[body_start..], more),
            }
        }
    };
    Event {
        time: h.time,
        pid: h.pid,
        id: h.id,
        syslog: h.syslog,
        kind,
    }
}

/// The length of a syslog priority (`<22>`) written before an RFC 3164
/// stamp (`<22>May 23 10:02:11 ...`), or 0. Before an ISO stamp the
/// priority belongs to RFC 5424's form, which the header reads itself.
fn rfc3164_priority_len(line: &[u8]) -> usize {
    if line.first() != Some(&b'<') {
        return 0;
    }
    let Some(close) = memchr(b'>', &line[..line.len().min(5)]) else {
        return 0;
    };
    let digits = &line[1..close];
    let month_follows = line.get(close + 1).is_some_and(u8::is_ascii_uppercase);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && month_follows {
        close + 1
    } else {
        0
    }
}

fn unparsed<'a>(reason: &'static str, record: &'a [u8]) -> Event<'a> {
    UNPARSED.fetch_add(1, Ordering::Relaxed);
    tracing::trace!(reason, bytes = record.len(), "Record not classified");
    Event {
        time: None,
        pid: None,
        id: None,
        syslog: None,
        kind: EventKind::Unparsed {
            reason: Text::Borrowed(reason),
            raw: record.to_vec(),
        },
    }
}

/// Classifies the text after the header of a mainlog or rejectlog line.
fn body(b: &[u8], has_id: bool) -> EventKind<'_> {
    if b.len() >= 3 && b[2] == b' ' {
        match &b[..2] {
            b"<=" => return EventKind::Arrival(message::arrival(&b[3..])),
            b"(=" => return EventKind::FakeReject(message::arrival(&b[3..])),
            _ => {
                if let Some(mark) = message::result_mark(b) {
                    return message::delivery_event(mark, &b[3..]);
                }
            }
        }
    }
    // The commonest connection-level lines are told apart by their first
    // bytes before the message-level forms are tried: `H=`-style lines
    // and `SMTP ` lines cannot be any of those forms, so this order gives
    // the same events with fewer searches.
    match b.first() {
        Some(b'H' | b'U' | b'F' | b'I') if b.get(1) == Some(&b'=') => {
            return session::fielded_line(b, has_id)
        }
        Some(b'S') if b.starts_with(b"SMTP ") => {
            if let Some(kind) = session::smtp_line(b) {
                return kind;
            }
        }
        _ => {}
    }
    if let Some(kind) = message::other_message_line(b) {
        return kind;
    }
    match b.first() {
        Some(b'S') => {
            if let Some(kind) = session::smtp_line(b) {
                return kind;
            }
            if let Some(kind) = queue_run(b, true) {
                return kind;
            }
        }
        Some(b'E') => {
            if let Some(kind) = queue_run(b, false) {
                return kind;
            }
        }
        Some(b'e') if b.starts_with(b"exim ") => {
            if let Some(kind) = daemon_started(b) {
                return kind;
            }
        }
        Some(b'c') if b.starts_with(b"cwd=") => {
            if let Some(kind) = arguments(b) {
                return kind;
            }
        }
        Some(b'D') if b.starts_with(b"DKIM: ") => return dkim(&b[6..]),
        _ => {}
    }
    if let Some(kind) = session::connection_line(b) {
        return kind;
    }
    if let Some(kind) = notice::line(b) {
        return kind;
    }
    session::note(b)
}

/// Keeps the lines after the first: a rejection's header dump becomes its
/// `detail`; elsewhere they are kept as a `continuation` field, or the
/// record becomes a note of its whole text when the kind has no fields.
fn attach<'a>(kind: EventKind<'a>, whole: &'a [u8], more: &'a [u8]) -> EventKind<'a> {
    let cont = || Field::new("continuation", scan::text(more));
    let mut kind = kind;
    match &mut kind {
        EventKind::Reject(r) => {
            r.detail = more.split(|c| *c == b'\n').map(scan::text).collect();
        }
        EventKind::Arrival(a) | EventKind::FakeReject(a) => a.fields.push(cont()),
        EventKind::Delivery { delivery: d, .. } => d.fields.push(cont()),
        EventKind::Failure(d) | EventKind::Deferral(d) => d.fields.push(cont()),
        EventKind::Smtp(s) => s.fields.push(cont()),
        EventKind::HostProblem(h) => h.fields.push(cont()),
        EventKind::AuthFailure(a) => a.fields.push(cont()),
        EventKind::VerifyFailure(v) => v.fields.push(cont()),
        EventKind::Dkim { fields, .. } => fields.push(cont()),
        EventKind::Completed { fields, .. } => fields.push(cont()),
        EventKind::QueueRun(q) => q.fields.push(cont()),
        EventKind::Warning(n) | EventKind::TlsProblem(n) => n.fields.push(cont()),
        EventKind::Discard(d) => d.fields.push(cont()),
        EventKind::HostLookup(h) => h.fields.push(cont()),
        _ => return session::note(whole),
    }
    kind
}

/// `Start queue run: pid=123 -qf` / `End queue run: pid=123`, and the runs
/// of a named queue (`Start 'slow' queue run: ...`) or of ODMR (`Start
/// ODMR queue run: ...`).
fn queue_run(b: &[u8], start: bool) -> Option<EventKind<'_>> {
    let prefix: &[u8] = if start { b"Start " } else { b"End " };
    let rest = b.strip_prefix(prefix)?;
    let at = scan::find(rest, b"queue run")?;

    // Between `Start` and `queue run` only a quoted queue name and
    // upper-case words (`ODMR`) may stand, so a sentence that happens to
    // hold "queue run" stays a note.
    let mut queue = None;
    let mut fields = Vec::new();
    for w in rest[..at].split(|c| *c == b' ').filter(|w| !w.is_empty()) {
        match w.strip_prefix(b"'").and_then(|w| w.strip_suffix(b"'")) {
            Some(name) if queue.is_none() => queue = Some(scan::text(name)),
            _ if w.iter().all(u8::is_ascii_uppercase) => {
                fields.push(Field::new(scan::text(w), ""));
            }
            _ => return None,
        }
    }

    let rest = &rest[at + 9..];
    let rest = rest.strip_prefix(b":").unwrap_or(rest).trim_ascii_start();
    let mut runner_pid = None;
    let mut args = rest;
    if let Some(p) = rest.strip_prefix(b"pid=") {
        let (pid, after) = scan::word(p);
        match scan::number(pid) {
            Some(n) => runner_pid = Some(n),
            None => message::keep_invalid(&mut fields, b"pid", pid, false),
        }
        args = after;
    }
    Some(EventKind::QueueRun(Box::new(QueueRun {
        start,
        runner_pid,
        queue,
        args: (!args.is_empty()).then(|| scan::text(args)),
        fields,
    })))
}

/// `exim 4.96 daemon started: pid=..., ...`.
fn daemon_started(b: &[u8]) -> Option<EventKind<'_>> {
    let (version, rest) = scan::word(&b[5..]);
    let detail = rest.strip_prefix(b"daemon started")?;
    let detail = detail
        .strip_prefix(b":")
        .unwrap_or(detail)
        .trim_ascii_start();
    Some(EventKind::DaemonStarted {
        version: scan::text(version),
        detail: scan::text(detail),
    })
}

/// `cwd=/var/spool 3 args: exim -q 1h` (`+arguments`).
fn arguments(b: &[u8]) -> Option<EventKind<'_>> {
    let at = scan::find(b, b" args: ")?;
    let head = &b[4..at];
    let split = head.iter().rposition(|c| *c == b' ')?;
    let (cwd, argc) = (&head[..split], scan::number(&head[split + 1..]));
    let args = split_args(&b[at + 7..], argc.unwrap_or(0));
    Some(EventKind::Arguments {
        cwd: scan::text(cwd),
        argc,
        args,
    })
}

/// Splits an argument list on spaces, keeping `"quoted args"` whole
/// (Exim quotes arguments that hold spaces).
fn split_args(b: &[u8], argc: u32) -> Vec<Text<'_>> {
    // Sized from the count Exim logged (capped against a damaged count),
    // so the list is allocated once.
    let mut out = Vec::with_capacity(argc.min(64) as usize);
    let mut rest = b;
    while !rest.is_empty() {
        if rest[0] == b' ' {
            rest = &rest[1..];
            continue;
        }
        let end = if rest[0] == b'"' {
            scan::quoted_end(rest).map(|e| e + 1)
        } else {
            None
        };
        let end = end.unwrap_or_else(|| scan::space(rest).unwrap_or(rest.len()));
        out.push(scan::text(&rest[..end]));
        rest = &rest[end..];
    }
    out
}

/// `DKIM: d=example.com s=sel c=relaxed/relaxed a=rsa-sha256 b=2048
/// [verification succeeded]`: every `k=v` pair, and the text that is not.
fn dkim(b: &[u8]) -> EventKind<'_> {
    let mut fields = Vec::new();
    let mut sc = fields::Scanner::new(b);
    let mut text_start = None;
    loop {
        let before = sc.rest;
        match sc.next() {
            None => break,
            Some(fields::Item::Field { key, value, quoted }) => {
                message::keep(&mut fields, key, value, quoted)
            }
            Some(fields::Item::Host(h)) if h.clean => {
                message::keep(&mut fields, b"H", h.raw, false)
            }
            Some(fields::Item::Host(h)) => message::keep_invalid(&mut fields, b"H", h.raw, false),
            Some(fields::Item::Word(_)) | Some(fields::Item::Message(_)) => {
                text_start = Some(before.trim_ascii_start());
                break;
            }
        }
    }
    EventKind::Dkim {
        fields,
        text: scan::text(text_start.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syslog_date_later_than_tomorrow_is_of_the_year_before() {
        // A December log read in January.
        assert_eq!(year_of_date(12, 31, (2027, 1, 6)), 2026);
        assert_eq!(year_of_date(1, 5, (2027, 1, 6)), 2027);
        assert_eq!(year_of_date(11, 30, (2026, 12, 6)), 2026);
        assert_eq!(year_of_date(12, 6, (2026, 12, 6)), 2026);
        // Last year's New Year's Eve, read in December.
        assert_eq!(year_of_date(12, 31, (2026, 12, 6)), 2025);
        // Read on New Year's Eve (UTC) from a server already in January.
        assert_eq!(year_of_date(1, 1, (2027, 1, 1)), 2027);
        assert_eq!(year_of_date(12, 31, (2027, 1, 1)), 2026);
    }

    #[test]
    fn tomorrow_comes_from_the_clock_cached_or_not() {
        let before = chrono::Utc::now().date_naive().succ_opt().unwrap();
        let first = tomorrow();
        let again = tomorrow();
        let after = chrono::Utc::now().date_naive().succ_opt().unwrap();
        for got in [first, again] {
            let date = |d: chrono::NaiveDate| (d.year(), d.month(), d.day());
            assert!(got == date(before) || got == date(after), "{got:?}");
        }
    }
}
