//! The front of a record: syslog wrapping, Exim's timestamp, `[pid]` and
//! the message id.
//!
//! Exim writes `YYYY-MM-DD HH:MM:SS[.mmm][ +HHMM] [[pid]] [id] text`. Through
//! syslog the line gains an RFC 3164 prefix (`Mmm dd hh:mm:ss host
//! exim[pid]: `) or an ISO 8601 / RFC 5424 one, and Exim's own timestamp may
//! or may not follow it. When both are there, Exim's wins: it has the year
//! and the milliseconds. RFC 3164 stamps carry no year; the parser takes
//! the year from [`ParseOptions::syslog_year`](super::ParseOptions).

use std::cell::Cell;

use chrono::{NaiveDate, NaiveDateTime};
use exim_pilot_schema::event::Syslog;
use exim_pilot_schema::{LogTime, MessageId};
use memchr::memchr;
use nom::bytes::complete::take_while_m_n;
use nom::combinator::map;
use nom::IResult;

use super::scan::{number, text, word};
use super::ParseOptions;

/// What the front of a record says, and the text after it.
pub(crate) struct Header<'a> {
    pub time: Option<LogTime>,
    pub pid: Option<u32>,
    pub id: Option<MessageId>,
    pub syslog: Option<Box<Syslog<'a>>>,
    pub body: &'a [u8],
}

/// Why a record has no header the parser can read.
pub(crate) const NO_TIMESTAMP: &str = "no timestamp at the start of the record";

/// Reads the header of `line` (the first line of a record).
pub(crate) fn read<'a>(line: &'a [u8], opts: &ParseOptions) -> Result<Header<'a>, &'static str> {
    let mut h = Header {
        time: None,
        pid: None,
        id: None,
        syslog: None,
        body: line,
    };

    // Exim's own stamp first: it is by far the most common start.
    if let Ok((rest, time)) = exim_stamp(line) {
        h.time = Some(time);
        h.body = rest;
    } else {
        let (rest, time, mut syslog) = syslog_prefix(line, opts).ok_or(NO_TIMESTAMP)?;
        h.time = Some(time);
        h.pid = syslog.pid;
        let rest = strip_split_marker(rest);
        // Exim's stamp after the syslog one wins.
        h.body = match exim_stamp(rest) {
            Ok((after, time)) => {
                h.time = Some(time);
                syslog.yearless = false;
                after
            }
            Err(_) => rest,
        };
        h.syslog = Some(Box::new(syslog));
    }

    // `[pid] ` (the +pid selector).
    if h.body.first() == Some(&b'[') {
        if let Some(close) = memchr(b']', h.body) {
            if let Some(pid) = number::<u32>(&h.body[1..close]) {
                if matches!(h.body.get(close + 1), None | Some(b' ')) {
                    h.pid = Some(pid);
                    h.body = h.body.get(close + 2..).unwrap_or_default();
                }
            }
        }
    }

    // The message id, in either format.
    if let Some(id) = MessageId::parse_prefix(h.body) {
        let len = id.text_len();
        if matches!(h.body.get(len), None | Some(b' ')) {
            h.id = Some(id);
            h.body = h.body.get(len + 1..).unwrap_or_default();
        }
    }
    Ok(h)
}

/// Exactly `N` ASCII digits as a number.
fn digits<const N: usize>(i: &[u8]) -> IResult<&[u8], u32> {
    map(
        take_while_m_n(N, N, |c: u8| c.is_ascii_digit()),
        |d: &[u8]| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')),
    )(i)
}

fn fail(i: &[u8]) -> nom::Err<nom::error::Error<&[u8]>> {
    nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Verify))
}

/// Expects byte `c` at the start of `i`.
fn byte(c: u8) -> impl Fn(&[u8]) -> IResult<&[u8], ()> {
    move |i: &[u8]| match i.first() {
        Some(&b) if b == c => Ok((&i[1..], ())),
        _ => Err(fail(i)),
    }
}

/// The date of a log line. Consecutive lines nearly always share their
/// date, so the last one is kept per thread instead of being rebuilt.
fn date(year: u32, month: u32, day: u32) -> Option<NaiveDate> {
    thread_local! {
        static LAST: Cell<(u32, Option<NaiveDate>)> = const { Cell::new((0, None)) };
    }
    let key = year * 10_000 + month * 100 + day;
    LAST.with(|last| {
        let (k, d) = last.get();
        if k == key && key != 0 {
            return d;
        }
        let d = NaiveDate::from_ymd_opt(year as i32, month, day);
        last.set((key, d));
        d
    })
}

/// `YYYY-MM-DD HH:MM:SS` at fixed positions, without a fraction: the
/// common case, read without the general parser.
fn plain_stamp(i: &[u8]) -> Option<(&[u8], NaiveDateTime)> {
    let b = i.get(..19)?;
    if b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let d = |k: usize| -> Option<u32> {
        let (x, y) = (b[k].wrapping_sub(b'0'), b[k + 1].wrapping_sub(b'0'));
        (x < 10 && y < 10).then_some(u32::from(x) * 10 + u32::from(y))
    };
    let year = d(0)? * 100 + d(2)?;
    let date = date(year, d(5)?, d(8)?)?;
    // `.mmm` (`+millisec`): three digits as Exim writes them.
    let (rest, micros) = match i.get(19..23) {
        Some([b'.', x, y, z]) if x.is_ascii_digit() && y.is_ascii_digit() && z.is_ascii_digit() => {
            let ms = u32::from(x - b'0') * 100 + u32::from(y - b'0') * 10 + u32::from(z - b'0');
            (&i[23..], ms * 1000)
        }
        _ => (&i[19..], 0),
    };
    let time = date.and_hms_micro_opt(d(11)?, d(14)?, d(17)?, micros)?;
    Some((rest, time))
}

/// `YYYY-MM-DD`, then `sep`, then `HH:MM:SS`, then an optional fraction.
fn date_time(sep: u8) -> impl Fn(&[u8]) -> IResult<&[u8], NaiveDateTime> {
    move |i: &[u8]| {
        let (i, year) = digits::<4>(i)?;
        let (i, _) = byte(b'-')(i)?;
        let (i, month) = digits::<2>(i)?;
        let (i, _) = byte(b'-')(i)?;
        let (i, day) = digits::<2>(i)?;
        let (i, _) = byte(sep)(i)?;
        let (i, hour) = digits::<2>(i)?;
        let (i, _) = byte(b':')(i)?;
        let (i, min) = digits::<2>(i)?;
        let (i, _) = byte(b':')(i)?;
        let (mut i, sec) = digits::<2>(i)?;
        let mut micros = 0u32;
        if i.first() == Some(&b'.') {
            let end = i[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if end == 0 {
                return Err(fail(i));
            }
            for k in 0..6 {
                micros = micros * 10
                    + i.get(1 + k)
                        .filter(|_| k < end)
                        .map_or(0, |d| u32::from(d - b'0'));
            }
            i = &i[1 + end..];
        }
        let time = date(year, month, day)
            .and_then(|d| d.and_hms_micro_opt(hour, min, sec, micros))
            .ok_or_else(|| fail(i))?;
        Ok((i, time))
    }
}

/// Exim's stamp and the space after it: `2024-07-05 09:14:02`, with
/// `.266` and ` +0200` when configured.
fn exim_stamp(i: &[u8]) -> IResult<&[u8], LogTime> {
    let (i, local) = match plain_stamp(i) {
        Some((rest, t))
            if !rest.first().is_some_and(u8::is_ascii_digit) && rest.first() != Some(&b'.') =>
        {
            (rest, t)
        }
        _ => date_time(b' ')(i)?,
    };
    let (i, _) = space_or_end(i)?;
    // A zone offset is `+HHMM`/`-HHMM` followed by a space or the end.
    if let (Some(&sign @ (b'+' | b'-')), Some(after)) = (i.first(), i.get(5)) {
        let zone = &i[1..5];
        if *after == b' ' && zone.iter().all(u8::is_ascii_digit) {
            let hh = u32::from(zone[0] - b'0') * 10 + u32::from(zone[1] - b'0');
            let mm = u32::from(zone[2] - b'0') * 10 + u32::from(zone[3] - b'0');
            let mut minutes = (hh * 60 + mm) as i32;
            if sign == b'-' {
                minutes = -minutes;
            }
            return Ok((&i[6..], LogTime::with_offset(local, minutes)));
        }
    } else if i.len() == 5 && matches!(i[0], b'+' | b'-') && i[1..].iter().all(u8::is_ascii_digit) {
        let minutes =
            (number::<i32>(&i[1..3]).unwrap_or(0)) * 60 + number::<i32>(&i[3..5]).unwrap_or(0);
        let minutes = if i[0] == b'-' { -minutes } else { minutes };
        return Ok((&i[5..], LogTime::with_offset(local, minutes)));
    }
    Ok((i, LogTime::naive(local)))
}

fn space_or_end(i: &[u8]) -> IResult<&[u8], ()> {
    match i.first() {
        None => Ok((i, ())),
        Some(b' ') => Ok((&i[1..], ())),
        Some(_) => Err(fail(i)),
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The syslog prefix: its time, the wrapping, and the message after it.
fn syslog_prefix<'a>(
    line: &'a [u8],
    opts: &ParseOptions,
) -> Option<(&'a [u8], LogTime, Syslog<'a>)> {
    let (rest, time, yearless) = match rfc3164_stamp(line, opts) {
        Some((rest, time)) => (rest, time, true),
        None => {
            let (rest, time) = iso_stamp(line)?;
            (rest, time, false)
        }
    };
    let (host, after_host) = word(rest);
    if host.is_empty() {
        return None;
    }

    // `host tag[pid]: msg`, or a tag without a host (`exim[12]: msg`).
    if host.ends_with(b":") {
        let (program, pid) = tag(&host[..host.len() - 1]);
        let syslog = Syslog {
            host: text(b""),
            program: text(program),
            pid,
            yearless,
        };
        return Some((after_host, time, syslog));
    }
    let (tag_word, after_tag) = word(after_host);
    if let Some(tag_body) = tag_word.strip_suffix(b":") {
        let (program, pid) = tag(tag_body);
        let syslog = Syslog {
            host: text(host),
            program: text(program),
            pid,
            yearless,
        };
        return Some((after_tag, time, syslog));
    }

    // RFC 5424: `host app procid msgid structured-data msg`.
    let (procid, after_procid) = word(after_tag);
    let (_msgid, after_msgid) = word(after_procid);
    let msg = skip_structured_data(after_msgid)?;
    let msg = msg.strip_prefix("\u{feff}".as_bytes()).unwrap_or(msg);
    let syslog = Syslog {
        host: text(host),
        program: text(tag_word),
        pid: number(procid),
        yearless,
    };
    Some((msg, time, syslog))
}

/// `exim[1234]` → (`exim`, 1234).
fn tag(t: &[u8]) -> (&[u8], Option<u32>) {
    match (memchr(b'[', t), t.last()) {
        (Some(open), Some(b']')) => (&t[..open], number(&t[open + 1..t.len() - 1])),
        _ => (t, None),
    }
}

/// Skips RFC 5424 structured data: `-` or one or more `[...]` elements.
fn skip_structured_data(b: &[u8]) -> Option<&[u8]> {
    if let Some(rest) = b.strip_prefix(b"-") {
        return Some(rest.strip_prefix(b" ").unwrap_or(rest));
    }
    let mut i = 0;
    while b.get(i) == Some(&b'[') {
        let mut j = i + 1;
        while j < b.len() && b[j] != b']' {
            if b[j] == b'\\' {
                j += 1;
            }
            j += 1;
        }
        i = j + 1;
    }
    if i == 0 || i > b.len() {
        return None;
    }
    Some(b[i..].strip_prefix(b" ").unwrap_or(&b[i..]))
}

/// `Mmm dd hh:mm:ss ` (day space-padded), in the configured year.
fn rfc3164_stamp<'a>(b: &'a [u8], opts: &ParseOptions) -> Option<(&'a [u8], LogTime)> {
    if b.len() < 16
        || b[3] != b' '
        || b[6] != b' '
        || b[9] != b':'
        || b[12] != b':'
        || b[15] != b' '
    {
        return None;
    }
    let month = MONTHS.iter().position(|m| b.starts_with(*m))? as u32 + 1;
    let day = match (b[4], b[5]) {
        (b' ', d) if d.is_ascii_digit() => u32::from(d - b'0'),
        (t, d) if t.is_ascii_digit() && d.is_ascii_digit() => {
            u32::from(t - b'0') * 10 + u32::from(d - b'0')
        }
        _ => return None,
    };
    let two = |k: usize| -> Option<u32> { number::<u32>(&b[k..k + 2]) };
    let (hour, min, sec) = (two(7)?, two(10)?, two(13)?);
    let year = opts.year_for(month, day);
    let time = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, min, sec)?;
    Some((&b[16..], LogTime::naive(time)))
}

/// An ISO 8601 stamp (`2024-05-23T10:02:11.123+02:00`, `...Z`), after an
/// optional RFC 5424 `<PRI>1 `, and the space after it.
fn iso_stamp(b: &[u8]) -> Option<(&[u8], LogTime)> {
    let mut b = b;
    if b.first() == Some(&b'<') {
        let close = memchr(b'>', b)?;
        number::<u32>(&b[1..close])?;
        b = &b[close + 1..];
        let (version, rest) = word(b);
        if number::<u32>(version).is_some() {
            b = rest;
        }
    }
    let (rest, local) = date_time(b'T')(b).ok()?;
    let (rest, offset) = match rest.first() {
        Some(b'Z') => (&rest[1..], Some(0)),
        Some(&sign @ (b'+' | b'-')) if rest.len() >= 6 && rest[3] == b':' => {
            let hh = number::<i32>(&rest[1..3])?;
            let mm = number::<i32>(&rest[4..6])?;
            let minutes = hh * 60 + mm;
            (
                &rest[6..],
                Some(if sign == b'-' { -minutes } else { minutes }),
            )
        }
        _ => (rest, None),
    };
    let rest = rest.strip_prefix(b" ")?;
    let time = match offset {
        Some(m) => LogTime::with_offset(local, m),
        None => LogTime::naive(local),
    };
    Some((rest, time))
}

/// Drops a leading `[n/m] ` or `[n\m] ` split marker.
fn strip_split_marker(b: &[u8]) -> &[u8] {
    match exim_pilot_schema::split::split_marker(b) {
        Some(marker) => &b[marker.len..],
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOptions {
        ParseOptions {
            syslog_year: Some(2024),
        }
    }

    #[test]
    fn plain_exim_header() {
        let h = read(
            b"2020-10-29 21:40:17.266 [30412] 1kYFeb-0007uW-0p => x",
            &opts(),
        )
        .unwrap();
        assert_eq!(h.time.unwrap().to_string(), "2020-10-29T21:40:17.266");
        assert_eq!(h.pid, Some(30412));
        assert_eq!(h.id.unwrap().as_str(), "1kYFeb-0007uW-0p");
        assert_eq!(h.body, b"=> x");
    }

    #[test]
    fn zone_offset_converts_to_utc() {
        let h = read(b"2023-10-11 14:03:27 +0200 1qqXvz-0000Ze-0X == x", &opts()).unwrap();
        assert_eq!(h.time.unwrap().to_string(), "2023-10-11T12:03:27.000Z");
        assert_eq!(h.body, b"== x");
        let h = read(b"2023-10-11 14:03:27 -0130 Start queue run", &opts()).unwrap();
        assert_eq!(h.time.unwrap().to_string(), "2023-10-11T15:33:27.000Z");
    }

    #[test]
    fn syslog_forms() {
        let h = read(
            b"Oct  2 05:12:48 mail2 exim[31044]: Start queue run",
            &opts(),
        )
        .unwrap();
        assert_eq!(h.time.unwrap().to_string(), "2024-10-02T05:12:48.000");
        let s = h.syslog.unwrap();
        assert_eq!(
            (&*s.host, &*s.program, s.pid),
            ("mail2", "exim", Some(31044))
        );
        assert_eq!(h.pid, Some(31044));

        let h = read(b"2024-05-23T10:02:11.123+02:00 mail exim4[7]: x", &opts()).unwrap();
        assert_eq!(h.time.unwrap().to_string(), "2024-05-23T08:02:11.123Z");

        let h = read(b"<22>1 2024-05-23T10:02:11Z mail exim 77 - - x y", &opts()).unwrap();
        assert_eq!(h.pid, Some(77));
        assert_eq!(h.body, b"x y");

        let h = read(
            b"May 23 10:02:11 mail exim[2210]: 2019-05-23 10:02:11 1hTkY7-0000Ze-04 <= r",
            &opts(),
        )
        .unwrap();
        assert_eq!(h.time.unwrap().to_string(), "2019-05-23T10:02:11.000");
        assert_eq!(h.id.unwrap().as_str(), "1hTkY7-0000Ze-04");
    }

    #[test]
    fn bad_stamps_are_refused() {
        assert!(read(b"2024-13-05 09:14:02 x", &opts()).is_err());
        assert!(read(b"hello", &opts()).is_err());
        assert!(read(b"", &opts()).is_err());
    }
}
