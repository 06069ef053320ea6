//! Connection-level lines: SMTP connections and their ends, protocol and
//! syntax errors, limits, ACL rejections, failed authentications and
//! verifications, and host problems seen while delivering.

use exim_pilot_schema::event::{
    AuthFailure, Discard, EventKind, Field, HostAddr, HostProblem, Interface, Note, Reject,
    RejectStage, SmtpKind, SmtpSession, Text, Tls, VerifyFailure,
};

use super::fields::{angle_end, Item, Scanner};
use super::message::{keep, keep_invalid, strip_angles, tls_field, value_text};
use super::scan::{
    duration_ms, find, host, interface, number, quoted_end, smtp_reply, text, unescape_bytes,
};

/// What a run of leading fields (`H=... I=... F=<...> X=...`) holds.
#[derive(Default)]
pub(crate) struct Prefix<'a> {
    pub host: Option<HostAddr<'a>>,
    pub interface: Option<Interface<'a>>,
    pub sender: Option<Text<'a>>,
    pub authenticator: Option<Text<'a>>,
    pub duration_ms: Option<u64>,
    pub commands: Option<Text<'a>>,
    pub tls: Tls<'a>,
    pub fields: Vec<Field<'a>>,
}

impl<'a> Prefix<'a> {
    /// Takes one field into its slot (or into `fields`).
    fn take(&mut self, key: &'a [u8], value: &'a [u8], quoted: bool) {
        match key {
            b"I" => match interface(value) {
                Some((i, [], true)) => self.interface = Some(i),
                _ => keep_invalid(&mut self.fields, key, value, quoted),
            },
            // An `H=` the host reader could not take at all.
            b"H" => keep_invalid(&mut self.fields, key, value, quoted),
            b"F" => self.sender = Some(text(strip_angles(value))),
            b"A" => self.authenticator = Some(value_text(value, quoted)),
            b"D" => match duration_ms(value) {
                Some(ms) => self.duration_ms = Some(ms),
                None => keep_invalid(&mut self.fields, key, value, quoted),
            },
            b"C" => self.commands = Some(value_text(value, quoted)),
            _ if tls_field(&mut self.tls, &mut self.fields, key, value, quoted) => {}
            _ => keep(&mut self.fields, key, value, quoted),
        }
    }

    pub(crate) fn set_host(&mut self, h: super::scan::HostRead<'a>) {
        if !h.clean {
            keep_invalid(&mut self.fields, b"H", h.raw, false);
        }
        self.host = Some(h.host);
    }
}

/// Reads fields from the start of `b` until the first word that is not
/// one; returns them and the text from that word on (or the text after a
/// `: ` separator, with `true`).
pub(crate) fn prefix(b: &[u8]) -> (Prefix<'_>, &[u8], bool) {
    let mut p = Prefix::default();
    let mut sc = Scanner::new(b);
    loop {
        let before = sc.rest;
        match sc.next() {
            None => return (p, &[], false),
            Some(Item::Field { key, value, quoted }) => p.take(key, value, quoted),
            Some(Item::Host(h)) => p.set_host(h),
            Some(Item::Word(_)) => return (p, before.trim_ascii_start(), false),
            Some(Item::Message(m)) => return (p, m, true),
        }
    }
}

/// Reads the fields after a host (`I=... D=... C=...`) up to the first
/// other word; returns the text from there (or after a `: `).
fn trailing_fields<'a>(p: &mut Prefix<'a>, b: &'a [u8]) -> &'a [u8] {
    let mut sc = Scanner::new(b);
    loop {
        let before = sc.rest;
        match sc.next() {
            None => return &[],
            Some(Item::Field { key, value, quoted }) => p.take(key, value, quoted),
            Some(Item::Host(h)) => p.set_host(h),
            Some(Item::Word(_)) => return before.trim_ascii_start(),
            Some(Item::Message(m)) => return m,
        }
    }
}

/// Reads `host fields...` (after `from `), optionally written `H=host`.
pub(crate) fn from_host<'a>(p: &mut Prefix<'a>, b: &'a [u8]) -> &'a [u8] {
    let b = b.strip_prefix(b"H=").unwrap_or(b);
    match host(b) {
        Some(h) => {
            let rest = h.rest;
            p.set_host(h);
            trailing_fields(p, rest)
        }
        None => trailing_fields(p, b),
    }
}

/// A line that starts with `H=` (or other fields) and is not a message's
/// delivery result: a rejection, a verification failure, an incomplete
/// transaction, a host problem while delivering, or a note.
pub(crate) fn fielded_line<'a>(body: &'a [u8], has_id: bool) -> EventKind<'a> {
    let (mut p, rest, after_colon) = prefix(body);

    if !after_colon {
        if let Some(kind) = reject(&mut p, rest) {
            return kind;
        }
        if let Some(kind) = verify_failure(&mut p, rest) {
            return kind;
        }
        if let Some(tail) = rest.strip_prefix(b"incomplete transaction ") {
            return incomplete_transaction(p, tail);
        }
        if find(rest, b" authenticator failed ").is_some() {
            if let Some(kind) = auth_failure(rest, Some(&mut p)) {
                return kind;
            }
        }
        if let Some(kind) = discard(&mut p, rest) {
            return kind;
        }
        if rest.starts_with(b"Warning: ") {
            if let Some(kind) = super::notice::acl_warning(p, rest) {
                return kind;
            }
            return note(body);
        }
        if rest.starts_with(b"dropped by ") {
            // `H=[ip] dropped by 'connect' ACL: reason`: a `drop` verb.
            let mut s = session(SmtpKind::Dropped, p);
            s.text = Some(text(rest));
            return EventKind::Smtp(Box::new(s));
        }
    }

    // A remote host's problem while delivering: the host has a name (the
    // one a router chose) and no helo, and the line belongs to a message.
    let outbound = has_id
        && p.sender.is_none()
        && p.host
            .as_ref()
            .is_some_and(|h| h.helo.is_none() && h.name.is_some());
    if outbound {
        let reply = smtp_reply(rest);
        let text_is = |t: &str| find(rest, t.as_bytes()).is_some();
        return EventKind::HostProblem(Box::new(HostProblem {
            host: p.host.unwrap_or_default(),
            interface: p.interface,
            retry_not_reached: text_is("retry time not reached"),
            text: text(rest),
            reply,
            tls: p.tls,
            fields: p.fields,
        }));
    }
    note(body)
}

/// `[temporarily ]rejected <what>: reason`, after the leading fields.
fn reject<'a>(p: &mut Prefix<'a>, rest: &'a [u8]) -> Option<EventKind<'a>> {
    let (temporary, r) = match rest.strip_prefix(b"temporarily ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let r = r.strip_prefix(b"rejected ")?;
    let mut recipient = None;
    let (stage, reason) = if let Some(t) = r.strip_prefix(b"RCPT ") {
        let (addr, reason) = address_then_reason(t);
        recipient = Some(text(strip_angles(addr)));
        (RejectStage::Rcpt, reason)
    } else if let Some(t) = r.strip_prefix(b"MAIL ") {
        let (addr, reason) = address_then_reason(t);
        if p.sender.is_none() {
            p.sender = Some(text(strip_angles(addr)));
        }
        (RejectStage::Mail, reason)
    } else if r.starts_with(b"EHLO") || r.starts_with(b"HELO") {
        (RejectStage::Helo, after_separator(r))
    } else if let Some(t) = r.strip_prefix(b"after DATA") {
        (RejectStage::Data, after_separator(t))
    } else if r.starts_with(b"DATA") || r.starts_with(b"BDAT") {
        (RejectStage::PreData, after_separator(r))
    } else if r.starts_with(b"connection") {
        (RejectStage::Connect, after_separator(r))
    } else if r.starts_with(b"AUTH") {
        (RejectStage::Auth, after_separator(r))
    } else {
        (RejectStage::Other, after_separator(r))
    };
    Some(EventKind::Reject(Box::new(Reject {
        stage,
        temporary,
        host: p.host.take(),
        interface: p.interface.take(),
        sender: p.sender.take(),
        recipient,
        authenticator: p.authenticator.take(),
        tls: std::mem::take(&mut p.tls),
        reason: text(reason),
        detail: Vec::new(),
        fields: std::mem::take(&mut p.fields),
    })))
}

/// `RCPT <rcpt>: discarded by RCPT ACL[: reason]`, after the leading
/// fields (`F=<sender>` among them).
fn discard<'a>(p: &mut Prefix<'a>, rest: &'a [u8]) -> Option<EventKind<'a>> {
    let t = rest.strip_prefix(b"RCPT ")?;
    let (addr, after) = address_then_reason(t);
    let after = after.strip_prefix(b"discarded by ")?;
    let at = find(after, b" ACL")?;
    let reason = match &after[at + 4..] {
        [] => None,
        [b':', b' ', why @ ..] => Some(text(why)),
        _ => return None,
    };
    Some(EventKind::Discard(Box::new(Discard {
        acl: text(&after[..at]),
        host: p.host.take(),
        interface: p.interface.take(),
        sender: p.sender.take(),
        recipient: text(strip_angles(addr)),
        reason,
        fields: std::mem::take(&mut p.fields),
    })))
}

/// The SMTP phase of a rejected command, from the command's name.
fn stage_of_command(command: &[u8]) -> RejectStage {
    match command {
        b"MAIL" => RejectStage::Mail,
        b"RCPT" => RejectStage::Rcpt,
        b"HELO" | b"EHLO" => RejectStage::Helo,
        b"DATA" | b"BDAT" => RejectStage::PreData,
        b"AUTH" => RejectStage::Auth,
        _ => RejectStage::Other,
    }
}

/// `<addr>: reason` → (`<addr>`, `reason`).
fn address_then_reason(t: &[u8]) -> (&[u8], &[u8]) {
    let end = if t.first() == Some(&b'<') {
        angle_end(t).map(|e| e + 1)
    } else {
        find(t, b": ")
    };
    let end = end.unwrap_or(t.len());
    let reason = t[end..].strip_prefix(b":").unwrap_or(&t[end..]);
    (&t[..end], reason.trim_ascii_start())
}

/// The reason after the first `: `, or the whole text without one.
fn after_separator(t: &[u8]) -> &[u8] {
    match find(t, b": ") {
        Some(i) => &t[i + 2..],
        None => t,
    }
}

/// `sender verify fail for <x>: reason` and its relatives.
fn verify_failure<'a>(p: &mut Prefix<'a>, rest: &'a [u8]) -> Option<EventKind<'a>> {
    let (sender, r) = if let Some(r) = rest.strip_prefix(b"sender verify ") {
        (true, r)
    } else {
        (false, rest.strip_prefix(b"recipient verify ")?)
    };
    let (temporary, r) = if let Some(r) = r.strip_prefix(b"fail") {
        (false, r)
    } else {
        (true, r.strip_prefix(b"defer")?)
    };
    // `for <address>: reason`, or `(making callout connection): reason`
    // when the verification failed before it had an address to check.
    let (addr, reason): (&[u8], &[u8]) = if let Some(r) = r.strip_prefix(b" for ") {
        address_then_reason(r)
    } else if r.starts_with(b" (") {
        (&[], r.trim_ascii_start())
    } else {
        return None;
    };
    Some(EventKind::VerifyFailure(Box::new(VerifyFailure {
        sender,
        temporary,
        address: text(strip_angles(addr)),
        host: p.host.take(),
        interface: p.interface.take(),
        reason: text(reason),
        fields: std::mem::take(&mut p.fields),
    })))
}

/// `incomplete transaction (QUIT) from <sender> [for rcpt...]`.
fn incomplete_transaction<'a>(p: Prefix<'a>, tail: &'a [u8]) -> EventKind<'a> {
    let mut s = session(SmtpKind::IncompleteTransaction, p);
    if let Some(i) = find(tail, b" from ") {
        let t = &tail[i + 6..];
        let end = if t.first() == Some(&b'<') {
            angle_end(t).map_or(t.len(), |e| e + 1)
        } else {
            t.len()
        };
        s.sender = Some(text(strip_angles(&t[..end])));
    }
    s.text = Some(text(tail));
    EventKind::Smtp(Box::new(s))
}

fn session<'a>(what: SmtpKind, p: Prefix<'a>) -> SmtpSession<'a> {
    SmtpSession {
        what,
        host: p.host,
        interface: p.interface,
        sender: p.sender,
        duration_ms: p.duration_ms,
        commands: p.commands,
        tls: p.tls,
        fields: p.fields,
        ..SmtpSession::default()
    }
}

/// `<name> authenticator failed for [H=]host [I=...]: 535 text (set_id=x)`.
/// The name may be separated by a tab (syslog forwarding of Exim's own
/// tab-separated debug output does that).
pub(crate) fn auth_failure<'a>(
    b: &'a [u8],
    prefix: Option<&mut Prefix<'a>>,
) -> Option<EventKind<'a>> {
    let at = find(b, b"authenticator failed ")?;
    let name = b[..at].trim_ascii();
    if name.is_empty() || name.contains(&b' ') {
        return None;
    }
    let after = &b[at + 21..];
    let after = after.strip_prefix(b"for ").unwrap_or(after);
    let mut p = Prefix::default();
    let rest = from_host(&mut p, after);
    if let Some(outer) = prefix {
        // Fields before the name (`H=` logged first) also count.
        if p.host.is_none() {
            p.host = outer.host.take();
        }
        if p.interface.is_none() {
            p.interface = outer.interface.take();
        }
        p.fields.append(&mut outer.fields);
    }

    // The reply: code, text and `(set_id=...)`.
    let mut reply = rest;
    let mut set_id = None;
    if let Some(i) = find(reply, b"(set_id=") {
        if reply.ends_with(b")") {
            set_id = Some(text(&reply[i + 8..reply.len() - 1]));
            reply = reply[..i].trim_ascii_end();
        }
    }
    let (code, reply_text) = match (reply.get(..3).and_then(number::<u16>), reply.get(3)) {
        (Some(code), None | Some(b' ')) => (Some(code), reply.get(4..).unwrap_or_default()),
        _ => (None, reply),
    };
    Some(EventKind::AuthFailure(Box::new(AuthFailure {
        authenticator: text(name),
        host: p.host.unwrap_or_default(),
        interface: p.interface,
        code,
        text: text(reply_text),
        set_id,
        fields: p.fields,
    })))
}

/// Lines starting with `SMTP `; `None` when the rest is not understood.
pub(crate) fn smtp_line(b: &[u8]) -> Option<EventKind<'_>> {
    let r = b.strip_prefix(b"SMTP ")?;
    let mut p = Prefix::default();

    let (what, text_part): (SmtpKind, &[u8]) = if let Some(t) = r.strip_prefix(b"connection ") {
        // `SMTP connection [Ci=..] from host ... closed by QUIT`, `... lost`,
        // `... (TCP/IP connection count = 1)`, `SMTP connection lost after
        // final dot H=...`.
        let t = trailing_fields(&mut p, t);
        let t = match t.strip_prefix(b"from ") {
            Some(h) => from_host(&mut p, h),
            None => t,
        };
        let what = if t.starts_with(b"closed") {
            SmtpKind::Close
        } else if t.starts_with(b"lost") {
            SmtpKind::Lost
        } else if t.starts_with(b"refused") || find(t, b"refused").is_some() {
            SmtpKind::Limit
        } else {
            SmtpKind::Connect
        };
        let t = if what == SmtpKind::Lost {
            fields_in_text(&mut p, t)
        } else {
            t
        };
        (what, t)
    } else if let Some(t) = r.strip_prefix(b"call from ") {
        // `SMTP call from host dropped: too many ...`.
        let t = from_host(&mut p, t);
        let t = t.strip_prefix(b"dropped: ").unwrap_or(t);
        (SmtpKind::Dropped, t)
    } else if r.starts_with(b"command timeout") || r.starts_with(b"data timeout") {
        let t = match find(r, b" from ") {
            Some(i) => {
                from_host(&mut p, &r[i + 6..]);
                &r[..i]
            }
            None => r,
        };
        (SmtpKind::Timeout, t)
    } else if let Some(t) = r.strip_prefix(b"protocol synchronization error") {
        // `(input sent without waiting for greeting): rejected connection
        // from H=[ip] input="EHLO x\r\n"`.
        let why = t.trim_ascii_start();
        let why_end = find(why, b": ").unwrap_or(why.len());
        let mut s = Prefix::default();
        if let Some(i) = find(t, b" from ") {
            from_host(&mut s, &t[i + 6..]);
        }
        let mut command = None;
        s.fields.retain(|f| {
            if f.key == "input" {
                command = Some(f.value.clone());
                false
            } else {
                true
            }
        });
        let mut session = session(SmtpKind::SyncError, s);
        session.command = command.map(|c| match c {
            std::borrow::Cow::Borrowed(s) => unescape_bytes(s.as_bytes()),
            std::borrow::Cow::Owned(s) => {
                std::borrow::Cow::Owned(unescape_bytes(s.as_bytes()).into_owned())
            }
        });
        let why = why[..why_end]
            .strip_prefix(b"(")
            .and_then(|w| w.strip_suffix(b")"))
            .unwrap_or(&why[..why_end]);
        session.text = Some(text(why));
        return Some(EventKind::Smtp(Box::new(session)));
    } else if let Some(t) = r
        .strip_prefix(b"protocol error in ")
        .map(|t| (SmtpKind::ProtocolError, t))
        .or_else(|| {
            r.strip_prefix(b"syntax error in ")
                .map(|t| (SmtpKind::SyntaxError, t))
        })
        .map(|(k, t)| {
            let _ = k;
            (k, t)
        })
    {
        // `"command" H=host I=... Ci=... reason`: the command may hold
        // escapes (a binary TLS hello) but never an unescaped quote.
        let (kind, t) = t;
        if t.first() != Some(&b'"') {
            return None;
        }
        let close = quoted_end(t)?;
        let command = unescape_bytes(&t[1..close]);
        let rest = trailing_fields(&mut p, &t[close + 1..]);
        let mut s = session(kind, p);
        s.command = Some(command);
        s.text = Some(text(rest));
        return Some(EventKind::Smtp(Box::new(s)));
    } else {
        return None;
    };

    let mut s = session(what, p);
    if what == SmtpKind::Connect {
        if let Some(n) = connection_count(text_part) {
            s.connection_count = Some(n);
        }
    }
    if !text_part.is_empty() {
        s.text = Some(text(text_part));
    }
    Some(EventKind::Smtp(Box::new(s)))
}

/// `(TCP/IP connection count = 7)` → 7.
fn connection_count(t: &[u8]) -> Option<u32> {
    let i = find(t, b"connection count = ")?;
    let n = &t[i + 19..];
    let end = n
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(n.len());
    number(&n[..end])
}

/// Takes `H=...` and the fields after it out of a free text, keeping the
/// text before them: `lost after final dot H=(x) [ip] P=smtps`.
fn fields_in_text<'a>(p: &mut Prefix<'a>, t: &'a [u8]) -> &'a [u8] {
    if p.host.is_some() {
        return t;
    }
    match find(t, b" H=") {
        Some(i) => {
            let tail = trailing_fields(p, &t[i + 1..]);
            if tail.is_empty() {
                &t[..i]
            } else {
                t
            }
        }
        None => t,
    }
}

/// Other connection-level lines that do not start with `SMTP ` or `H=`.
pub(crate) fn connection_line(b: &[u8]) -> Option<EventKind<'_>> {
    let mut p = Prefix::default();
    let first = *b.first()?;

    // `rejected HELO from (x) [ip]: syntactically invalid ...`,
    // `rejected from <sender> H=...: message too big`.
    if first == b'r' {
        if let Some(t) = b.strip_prefix(b"rejected ") {
            if let Some(t) = t
                .strip_prefix(b"HELO from ")
                .or_else(|| t.strip_prefix(b"EHLO from "))
            {
                let reason = from_host(&mut p, t);
                return Some(simple_reject(p, RejectStage::Helo, reason));
            }
            if let Some(t) = t.strip_prefix(b"from ") {
                let (addr, after) = match angle_end(t) {
                    Some(e) if t[0] == b'<' => (&t[..e + 1], &t[e + 1..]),
                    _ => return None,
                };
                p.sender = Some(text(strip_angles(addr)));
                let reason = trailing_fields(&mut p, after);
                return Some(simple_reject(p, RejectStage::Data, reason));
            }
            return rejected_command(p, t);
        }
    }

    if first == b's' || first == b'r' {
        if let Some(kind) = verify_failure(&mut p, b) {
            return Some(kind);
        }
    }

    // `ETRN #domain received from host` and `ATRN 'domain' received from
    // host`.
    if (first == b'E' || first == b'A') && b[1..].starts_with(b"TRN ") {
        let at = find(b, b" received from ")?;
        from_host(&mut p, &b[at + 15..]);
        let mut s = session(SmtpKind::Etrn, p);
        s.command = Some(std::borrow::Cow::Borrowed(&b[..at]));
        return Some(EventKind::Smtp(Box::new(s)));
    }

    // `VRFY failed for <address> H=...`: the client's VRFY was refused.
    if let Some(t) = b.strip_prefix(b"VRFY failed for ") {
        let mut sc = super::fields::Scanner::new(t);
        let addr = sc.take_address();
        trailing_fields(&mut p, sc.rest);
        return Some(EventKind::VerifyFailure(Box::new(VerifyFailure {
            sender: false,
            temporary: false,
            address: text(strip_angles(addr)),
            host: p.host,
            interface: p.interface,
            reason: text(&b[..11]),
            fields: p.fields,
        })));
    }

    // `unqualified verify rejected: <alice> H=...` and the sender and
    // recipient forms.
    if first == b'u' {
        if let Some(t) = b.strip_prefix(b"unqualified ") {
            let (word, rest) = super::scan::word(t);
            let stage = match word {
                b"sender" => RejectStage::Mail,
                b"recipient" => RejectStage::Rcpt,
                _ => RejectStage::Other,
            };
            let rest = rest.strip_prefix(b"rejected: ")?;
            let (addr, after) = match angle_end(rest) {
                Some(e) if rest[0] == b'<' => (&rest[..e + 1], &rest[e + 1..]),
                _ => return None,
            };
            trailing_fields(&mut p, after);
            let addr_text = text(strip_angles(addr));
            let mut kind = simple_reject(p, stage, &b[..12 + word.len()]);
            if let EventKind::Reject(r) = &mut kind {
                r.reason = text(&b[..12 + word.len() + 9]);
                match stage {
                    RejectStage::Mail => r.sender = Some(addr_text),
                    _ => r.recipient = Some(addr_text),
                }
            }
            return Some(kind);
        }
        if let Some(t) =
            b.strip_prefix(b"unexpected disconnection while reading SMTP command from ")
        {
            let rest = from_host(&mut p, t);
            let mut s = session(SmtpKind::Lost, p);
            s.text = Some(text(&b[..b.len() - t.len() - 6]));
            if !rest.is_empty() {
                s.fields.push(Field::new("text", text(rest)));
            }
            return Some(EventKind::Smtp(Box::new(s)));
        }
    }

    // `no MAIL in SMTP connection from host D=.. C=..`.
    if let Some(t) = b.strip_prefix(b"no MAIL in SMTP connection from ") {
        let rest = from_host(&mut p, t);
        let mut s = session(SmtpKind::NoMail, p);
        if !rest.is_empty() {
            s.text = Some(text(rest));
        }
        return Some(EventKind::Smtp(Box::new(s)));
    }

    // `TLS error on connection from host (SSL_accept): reason`.
    if let Some(t) = b.strip_prefix(b"TLS error on connection from ") {
        let rest = from_host(&mut p, t);
        let mut s = session(SmtpKind::TlsError, p);
        s.text = Some(text(rest));
        return Some(EventKind::Smtp(Box::new(s)));
    }

    // `refused connection from [ip] (host_reject_connection)`.
    if let Some(t) = b.strip_prefix(b"refused connection from ") {
        let reason = from_host(&mut p, t);
        return Some(simple_reject(p, RejectStage::Connect, reason));
    }

    // Connection limits: `Connection from [ip] refused: too many
    // connections`, `rejected connection from ...`.
    if let Some(t) = b.strip_prefix(b"Connection from ") {
        let rest = from_host(&mut p, t);
        let mut s = session(SmtpKind::Limit, p);
        s.text = Some(text(rest));
        return Some(EventKind::Smtp(Box::new(s)));
    }

    if find(b, b"authenticator failed ").is_some() {
        return auth_failure(b, None);
    }
    None
}

/// `rejected <COMMAND> ...: reason` after `rejected `: `MAIL from host:`,
/// `MAIL FROM:<sender> fields:`, `MAIL command fields:`, `XCLIENT from
/// host:`.
fn rejected_command<'a>(mut p: Prefix<'a>, t: &'a [u8]) -> Option<EventKind<'a>> {
    let (command, rest) = super::scan::word(t);
    if command.is_empty() || !command.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let stage = stage_of_command(command);
    let reason = if let Some(h) = rest.strip_prefix(b"from ") {
        from_host(&mut p, h)
    } else if let Some(a) = rest.strip_prefix(b"FROM:") {
        let end = super::fields::address_end(a);
        p.sender = Some(text(strip_angles(&a[..end])));
        trailing_fields(&mut p, &a[end..])
    } else if let Some(f) = rest.strip_prefix(b"command") {
        trailing_fields(&mut p, f)
    } else {
        return None;
    };
    Some(simple_reject(p, stage, reason))
}

fn simple_reject<'a>(p: Prefix<'a>, stage: RejectStage, reason: &'a [u8]) -> EventKind<'a> {
    EventKind::Reject(Box::new(Reject {
        stage,
        temporary: false,
        host: p.host,
        interface: p.interface,
        sender: p.sender,
        recipient: None,
        authenticator: p.authenticator,
        tls: p.tls,
        reason: text(reason),
        detail: Vec::new(),
        fields: p.fields,
    }))
}

/// Any other text: kept whole, with the `H=`, `I=` and other fields found
/// in it (the first run of fields at the start, or after a ` H=`).
pub(crate) fn note(body: &[u8]) -> EventKind<'_> {
    let (mut p, _, _) = prefix(body);
    if p.host.is_none() {
        if let Some(i) = find(body, b" H=") {
            let mut q = Prefix::default();
            trailing_fields(&mut q, &body[i + 1..]);
            p.host = q.host;
            p.interface = p.interface.or(q.interface);
            p.fields.append(&mut q.fields);
            if let Some(s) = q.sender {
                p.sender = Some(s);
            }
        }
    }
    if let Some(s) = p.sender {
        p.fields.push(Field::new("F", s));
    }
    if let Some(a) = p.authenticator {
        p.fields.push(Field::new("A", a));
    }
    EventKind::Note(Box::new(Note {
        text: text(body),
        host: p.host,
        interface: p.interface,
        fields: p.fields,
    }))
}
