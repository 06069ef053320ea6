//! Small readers for the pieces every kind of line shares: text slices,
//! quoted values, durations, `H=` hosts, `I=` interfaces and SMTP replies.
//!
//! They work on bytes and return slices of the record, so a value costs no
//! allocation unless Exim's escapes have to be decoded.

use std::borrow::Cow;

use exim_pilot_schema::event::{HostAddr, Interface, SmtpReply, Text};
use memchr::memchr;
use nom::bytes::complete::{tag, take_while1, take_while_m_n};
use nom::character::complete::{char, digit1};
use nom::combinator::{map_res, opt, recognize};
use nom::sequence::{delimited, preceded, tuple};
use nom::IResult;

/// The record's bytes as text: borrowed when they are UTF-8 (always, for
/// the ASCII Exim writes), replaced lossily otherwise. The raw record keeps
/// the original bytes.
#[inline]
pub(crate) fn text(b: &[u8]) -> Text<'_> {
    if b.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8. Exim writes
        // ASCII almost always, and checking for it is much cheaper per
        // short field than a full UTF-8 validation.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(b) });
    }
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(String::from_utf8_lossy(b).into_owned()),
    }
}

/// Splits off the first space-separated word: `(word, rest after the
/// space)`. The rest is empty when there is no space.
pub(crate) fn word(b: &[u8]) -> (&[u8], &[u8]) {
    match space(b) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

/// The index of the first space. Fields are short, so a plain loop beats
/// `memchr`'s set-up cost here.
#[inline]
pub(crate) fn space(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b' ')
}

/// Finds `needle` in `hay`. Log fields are short, so a `memchr` for the
/// first byte and a compare beats building a substring searcher per call.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = memchr(first, hay.get(from..)?) {
        let at = from + i;
        if hay[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Finds the last `needle` in `hay`.
pub(crate) fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut end = hay.len();
    while let Some(at) = memchr::memrchr(first, &hay[..end]) {
        if hay[at + 1..].starts_with(rest) {
            return Some(at);
        }
        end = at;
    }
    None
}

/// Reads a decimal number that fits `T`.
pub(crate) fn number<T: TryFrom<u64>>(b: &[u8]) -> Option<T> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    T::try_from(n).ok()
}

/// Reads a signed decimal number such as `-44`.
pub(crate) fn signed(b: &[u8]) -> Option<i32> {
    match b.split_first() {
        Some((b'-', digits)) => number::<u32>(digits).and_then(|n| 0i32.checked_sub_unsigned(n)),
        _ => number(b),
    }
}

/// Where a quoted value starting at `b[0] == '"'` ends: the index of the
/// closing quote. Exim escapes a quote inside as `\"`; a quote that is not
/// followed by a space, a colon or the end is taken as part of the value,
/// so a subject with an unescaped quote (older Exim) stays whole.
pub(crate) fn quoted_end(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => {
                let next = b.get(i + 1);
                if matches!(next, None | Some(b' ') | Some(b':') | Some(b'\n')) {
                    return Some(i);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Decodes the inside of a quoted value: `\"` and `\\` become `"` and `\`;
/// other escapes (`\n` in a multi-line reply) stay as written.
pub(crate) fn unquote(inner: &[u8]) -> Text<'_> {
    if memchr(b'\\', inner).is_none() {
        return text(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        match (inner[i], inner.get(i + 1)) {
            (b'\\', Some(&c)) if c == b'"' || c == b'\\' => {
                out.push(c);
                i += 2;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Decodes Exim's printing escapes into the bytes they stand for: `\ooo`
/// octal, `\n`, `\r`, `\t`, `\\`, `\"` and friends. Used for the command
/// of SMTP syntax errors, which may be binary (a TLS hello sent in clear).
pub(crate) fn unescape_bytes(b: &[u8]) -> Cow<'_, [u8]> {
    if memchr(b'\\', b).is_none() {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        let octal = |j: usize| b.get(j).filter(|d| (b'0'..=b'7').contains(*d));
        if octal(i + 1).is_some() {
            let mut value: u32 = 0;
            let mut j = i + 1;
            while j < i + 4 && octal(j).is_some() {
                value = value * 8 + u32::from(b[j] - b'0');
                j += 1;
            }
            out.push((value & 0xff) as u8);
            i = j;
            continue;
        }
        let decoded = match c {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'e' => 0x1b,
            other => other,
        };
        out.push(decoded);
        i += 2;
    }
    Cow::Owned(out)
}

/// Reads an Exim duration into milliseconds: `0.046s`, `8s`, `1m15s`,
/// `2h3m`, `1d2h`, `1w`. Exim prints fractions of a second only on the
/// seconds part.
pub(crate) fn duration_ms(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let whole: u64 = number(&b[start..i])?;
        let mut frac_ms: u64 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let fstart = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &b[fstart..i];
            if digits.is_empty() {
                return None;
            }
            // Milliseconds: the first three digits, padded.
            for k in 0..3 {
                frac_ms = frac_ms * 10 + digits.get(k).map_or(0, |d| u64::from(d - b'0'));
            }
        }
        let unit: u64 = match b.get(i)? {
            b's' => 1_000,
            b'm' => 60_000,
            b'h' => 3_600_000,
            b'd' => 86_400_000,
            b'w' => 604_800_000,
            _ => return None,
        };
        if frac_ms != 0 && unit != 1_000 {
            return None;
        }
        total = total
            .checked_add(whole.checked_mul(unit)?)?
            .checked_add(frac_ms)?;
        i += 1;
    }
    Some(total)
}

/// The result of reading an `H=` host: the host, what follows it, and
/// whether every part read as its type (a port that is not a number, or
/// an address that is not shaped like one, does not; the caller then keeps
/// the whole text as an invalid field next to the parts).
pub(crate) struct HostRead<'a> {
    pub host: HostAddr<'a>,
    pub rest: &'a [u8],
    pub raw: &'a [u8],
    pub clean: bool,
}

/// Reads `name (helo) [ip]:port*` (every part optional, in this order) from
/// the start of `b`. IPv6 addresses stay whole inside their brackets.
pub(crate) fn host(b: &[u8]) -> Option<HostRead<'_>> {
    let mut h = HostAddr::default();
    let mut i = 0;
    let mut clean = true;

    // The name: a word that does not open a helo or an address.
    if !matches!(b.first(), Some(b'(') | Some(b'[') | None) {
        let end = space(b).unwrap_or(b.len());
        let mut name = &b[..end];
        if let Some(stripped) = name.strip_suffix(b":") {
            // `H=name: error` with no address after the name.
            if end == b.len() || !matches!(b.get(end + 1), Some(b'(') | Some(b'[')) {
                name = stripped;
            }
        }
        if name.is_empty() {
            return None;
        }
        h.name = Some(text(name));
        i = name.len();
    }

    // The helo name in parentheses, which may itself hold spaces.
    let at_helo = if i == 0 {
        b.first() == Some(&b'(')
    } else {
        b[i..].starts_with(b" (")
    };
    if at_helo {
        let open = if i == 0 { 0 } else { i + 1 };
        let close = helo_end(&b[open..])? + open;
        h.helo = Some(text(&b[open + 1..close]));
        i = close + 1;
    }

    // The address in brackets, and a port after it.
    let at_ip = if i == 0 {
        b.first() == Some(&b'[')
    } else {
        b[i..].starts_with(b" [")
    };
    if at_ip {
        let open = if i == 0 { 0 } else { i + 1 };
        let close = memchr(b']', &b[open..])? + open;
        let ip = &b[open + 1..close];
        clean &= looks_like_ip(ip);
        h.ip = Some(text(ip));
        i = close + 1;
        if b.get(i) == Some(&b':') {
            let pstart = i + 1;
            let mut pend = pstart;
            while pend < b.len() && (b[pend].is_ascii_alphanumeric() || b[pend] == b'_') {
                pend += 1;
            }
            if pend > pstart {
                match number::<u16>(&b[pstart..pend]) {
                    Some(port) => h.port = Some(port),
                    None => clean = false,
                }
                i = pend;
            }
        }
    }
    if h.name.is_none() && h.helo.is_none() && h.ip.is_none() {
        return None;
    }
    if b.get(i) == Some(&b'*') {
        h.reused = true;
        i += 1;
    }
    Some(HostRead {
        host: h,
        rest: &b[i..],
        raw: &b[..i],
        clean,
    })
}

/// True for text shaped like an IP address: digits and dots (IPv4), or hex
/// digits, colons and dots (IPv6, with an IPv4 tail), with an optional
/// `%zone` after an IPv6 address. A cheap test of the characters, not a
/// full check: it tells written addresses from placeholders and names.
pub(crate) fn looks_like_ip(ip: &[u8]) -> bool {
    // Every byte's class, or-ed together in one pass that the compiler
    // can keep free of branches: this runs for every `H=` and `I=`.
    const DIGIT: u8 = 1;
    const HEX_LETTER: u8 = 2;
    const COLON: u8 = 4;
    const OTHER: u8 = 8;
    const CLASS: [u8; 256] = {
        let mut t = [OTHER; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            if b.is_ascii_digit() || b == b'.' {
                t[c] = DIGIT;
            } else if b.is_ascii_hexdigit() {
                t[c] = HEX_LETTER;
            } else if b == b':' {
                t[c] = COLON;
            }
            c += 1;
        }
        t
    };
    let addr = match ip.iter().position(|c| *c == b'%') {
        Some(zone) => &ip[..zone],
        None => ip,
    };
    let seen = addr.iter().fold(0, |acc, c| acc | CLASS[usize::from(*c)]);
    let zoned = addr.len() < ip.len();
    match (seen & OTHER == 0, seen & COLON != 0) {
        (false, _) => false,
        (true, true) => true,
        (true, false) => !addr.is_empty() && !zoned && seen & HEX_LETTER == 0,
    }
}

/// The index of the parenthesis closing a helo name: the first `)` that is
/// followed by a space, a colon or the end.
fn helo_end(b: &[u8]) -> Option<usize> {
    let mut from = 1;
    loop {
        let close = memchr(b')', &b[from..])? + from;
        if matches!(b.get(close + 1), None | Some(b' ') | Some(b':')) {
            return Some(close);
        }
        from = close + 1;
    }
}

/// Reads `[ip]:port` (an `I=` value) from the start of `b`: the interface,
/// the rest, and whether the port was a number.
pub(crate) fn interface(b: &[u8]) -> Option<(Interface<'_>, &[u8], bool)> {
    type IpPort<'a> = (&'a [u8], Option<&'a [u8]>);
    fn parse(i: &[u8]) -> IResult<&[u8], IpPort<'_>> {
        tuple((
            delimited(char('['), take_while1(|c| c != b']'), char(']')),
            opt(preceded(
                char(':'),
                take_while1(|c: u8| c.is_ascii_alphanumeric() || c == b'_'),
            )),
        ))(i)
    }
    let (rest, (ip, port)) = parse(b).ok()?;
    let parsed_port = port.and_then(number::<u16>);
    let clean = (port.is_none() || parsed_port.is_some()) && looks_like_ip(ip);
    Some((
        Interface {
            ip: text(ip),
            port: parsed_port,
        },
        rest,
        clean,
    ))
}

/// Takes a remote error apart: the stage after `after` (or `in response
/// to`), and the reply code, enhanced status code and text after it.
/// Returns `None` when the text names neither a stage nor a code.
pub(crate) fn smtp_reply(b: &[u8]) -> Option<SmtpReply<'_>> {
    // "SMTP error from remote mail server after <stage>: <reply>" and its
    // relatives ("SMTP timeout after <stage>", "... in response to <stage>").
    let (stage, after_stage) = match stage_of(b) {
        Some((stage, rest)) => (Some(stage), rest),
        None => (None, b),
    };
    let reply_text = strip_host_prefix(after_stage);
    let (code, enhanced, rest) = match reply_codes(reply_text) {
        Ok((rest, (code, enhanced))) => (Some(code), enhanced, rest),
        Err(_) => (None, None, reply_text),
    };
    if stage.is_none() && code.is_none() {
        return None;
    }
    // Without a reply (a timeout, a closed connection) the text is the
    // whole error, so nothing of it is lost.
    let text_bytes = if code.is_some() { rest } else { b };
    Some(SmtpReply {
        stage: stage.map(text),
        code,
        enhanced: enhanced.map(text),
        text: text(text_bytes),
    })
}

/// Splits `...after <stage>: <rest>` into the stage and the rest. The stage
/// ends at the `: ` that comes before a reply code, so a stage such as
/// `RCPT TO:<a@b>` keeps its own colon.
fn stage_of(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = if let Some(i) = find(b, b" after ") {
        i + 7
    } else if let Some(i) = find(b, b" in response to ") {
        i + 16
    } else {
        return None;
    };
    let tail = &b[start..];
    let mut from = 0;
    while let Some(i) = find(&tail[from..], b": ") {
        let at = from + i;
        let after = &tail[at + 2..];
        if reply_codes(strip_host_prefix(after)).is_ok() {
            return Some((&tail[..at], after));
        }
        from = at + 2;
    }
    // No reply follows: the stage runs to the end (`SMTP timeout after X`).
    Some((tail, &[]))
}

/// Older Exim put `host <name> [<ip>]: ` between the stage and the reply.
fn strip_host_prefix(b: &[u8]) -> &[u8] {
    if let Some(rest) = b.strip_prefix(b"host ") {
        if let Some(i) = find(rest, b"]: ") {
            return &rest[i + 3..];
        }
    }
    b
}

/// `451 4.7.1 ` or `550-5.1.1 ` or `250 `: the code, and the enhanced code
/// when one follows.
type Codes<'a> = (u16, Option<&'a [u8]>);
fn reply_codes(b: &[u8]) -> IResult<&[u8], Codes<'_>> {
    let (rest, code) = map_res(
        take_while_m_n(3, 3, |c: u8| c.is_ascii_digit()),
        |d: &[u8]| match (d[0], number::<u16>(d)) {
            (b'2'..=b'5', Some(n)) => Ok(n),
            _ => Err(()),
        },
    )(b)?;
    // The code must end the text or be followed by ' ' or '-'.
    if !rest.is_empty() && rest[0] != b' ' && rest[0] != b'-' {
        return Err(nom::Err::Error(nom::error::Error::new(
            b,
            nom::error::ErrorKind::Tag,
        )));
    }
    let rest = rest.get(1..).unwrap_or_default();
    let enhanced: IResult<&[u8], &[u8]> = recognize(tuple((
        nom::character::complete::one_of("245"),
        tag("."),
        digit1,
        tag("."),
        digit1,
    )))(rest);
    match enhanced {
        Ok((after, e)) if after.is_empty() || after[0] == b' ' => {
            Ok((after.get(1..).unwrap_or_default(), (code, Some(e))))
        }
        _ => Ok((rest, (code, None))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_substrings() {
        assert_eq!(find(b"a: b: c", b": "), Some(1));
        assert_eq!(rfind(b"a: b: c", b": "), Some(4));
        assert_eq!(find(b"abc", b"cd"), None);
        assert_eq!(rfind(b"", b"x"), None);
        assert_eq!(find(b"xx", b""), None);
    }

    #[test]
    fn durations_in_milliseconds() {
        assert_eq!(duration_ms(b"0.046s"), Some(46));
        assert_eq!(duration_ms(b"8s"), Some(8_000));
        assert_eq!(duration_ms(b"1m15s"), Some(75_000));
        assert_eq!(duration_ms(b"3m14s"), Some(194_000));
        assert_eq!(duration_ms(b"2h3m"), Some(7_380_000));
        assert_eq!(duration_ms(b"1.5s"), Some(1_500));
        assert_eq!(duration_ms(b"qqs"), None);
        assert_eq!(duration_ms(b"1.5m"), None);
        assert_eq!(duration_ms(b""), None);
    }

    #[test]
    fn hosts_in_every_form() {
        let h = host(b"mx.example.com [198.51.100.7] C=x").unwrap();
        assert_eq!(h.host.name.as_deref(), Some("mx.example.com"));
        assert_eq!(h.host.ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(h.rest, b" C=x");

        let h = host(b"(winbox-pc) [192.0.2.61] AUTH").unwrap();
        assert_eq!(h.host.helo.as_deref(), Some("winbox-pc"));
        assert_eq!(h.host.name, None);

        let h = host(b"mx6.example.org [2001:db8:20::25]:25 C=").unwrap();
        assert_eq!(h.host.ip.as_deref(), Some("2001:db8:20::25"));
        assert_eq!(h.host.port, Some(25));

        let h = host(b"192.0.2.1 [192.0.2.1]* X=").unwrap();
        assert!(h.host.reused);

        let h = host(b"[192.0.2.1]:smtp x").unwrap();
        assert!(!h.clean);
        assert_eq!(h.raw, b"[192.0.2.1]:smtp");

        let h = host(b"relay.example.net [relay-ip]:25 x").unwrap();
        assert!(!h.clean);
        assert_eq!(h.host.ip.as_deref(), Some("relay-ip"));
        assert_eq!(h.host.port, Some(25));

        let h = host(b"localhost (my helo) [127.0.0.1]:25: error").unwrap();
        assert_eq!(h.host.helo.as_deref(), Some("my helo"));
        assert_eq!(h.rest, b": error");
    }

    #[test]
    fn ip_shapes() {
        for ip in [
            "192.0.2.1",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "fe80::1%eth0",
            "::1",
        ] {
            assert!(looks_like_ip(ip.as_bytes()), "{ip}");
        }
        for ip in [
            "",
            "mx.example.com",
            "192.0.2.x",
            "gateway:1",
            "10.0.0.1%eth0",
        ] {
            assert!(!looks_like_ip(ip.as_bytes()), "{ip}");
        }
    }

    #[test]
    fn replies_are_taken_apart() {
        let r = smtp_reply(
            b"SMTP error from remote mail server after RCPT TO:<d@example.org>: \
              451 4.7.1 Greylisted, try again later",
        )
        .unwrap();
        assert_eq!(r.stage.as_deref(), Some("RCPT TO:<d@example.org>"));
        assert_eq!(r.command(), Some("RCPT TO"));
        assert_eq!(r.code, Some(451));
        assert_eq!(r.enhanced.as_deref(), Some("4.7.1"));
        assert_eq!(r.text, "Greylisted, try again later");

        let r = smtp_reply(b"SMTP timeout after end of data").unwrap();
        assert_eq!(r.stage.as_deref(), Some("end of data"));
        assert_eq!(r.code, None);
        assert_eq!(r.text, "SMTP timeout after end of data");

        let r = smtp_reply(b"550-5.1.1 first\\n550 5.1.1 second").unwrap();
        assert_eq!(r.code, Some(550));
        assert_eq!(r.text, "first\\n550 5.1.1 second");

        assert!(smtp_reply(b"Connection refused").is_none());
    }

    #[test]
    fn escapes_decode_to_bytes() {
        assert_eq!(
            &*unescape_bytes(b"\\026\\003?\\374"),
            &[0x16, 0x03, b'?', 0xfc]
        );
        assert_eq!(&*unescape_bytes(b"EHLO x\\r\\n"), b"EHLO x\r\n");
        assert_eq!(unquote(br#"a \"b\" \\n"#), "a \"b\" \\n");
    }
}
