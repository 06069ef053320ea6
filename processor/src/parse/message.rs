//! Message-level lines: arrivals, delivery results, completion, freezes
//! and admin actions. They all follow a message id.

use std::borrow::Cow;

use exim_pilot_schema::event::{
    Actor, Arrival, Delivery, DeliveryMark, EventKind, Field, Text, Tls,
};
use exim_pilot_schema::MessageId;

use super::fields::{angle_end, Item, Scanner};
use super::scan::{duration_ms, find, interface, number, signed, smtp_reply, space, text, unquote};

/// A field value as text: quoted values are decoded.
pub(crate) fn value_text(value: &[u8], quoted: bool) -> Text<'_> {
    if quoted {
        unquote(value)
    } else {
        text(value)
    }
}

/// `<a@b>` → `a@b`; `<>` → empty; anything else as it is.
pub(crate) fn strip_angles(b: &[u8]) -> &[u8] {
    match (b.first(), b.last()) {
        (Some(b'<'), Some(b'>')) if b.len() >= 2 => &b[1..b.len() - 1],
        _ => b,
    }
}

/// Keeps a field the parser has no slot for.
pub(crate) fn keep<'a>(fields: &mut Vec<Field<'a>>, key: &'a [u8], value: &'a [u8], quoted: bool) {
    fields.push(Field::new(text(key), value_text(value, quoted)));
}

/// Keeps a field that has a slot but whose value did not read into it,
/// marked [`Field::invalid`], so the record keeps its kind and the text.
pub(crate) fn keep_invalid<'a>(
    fields: &mut Vec<Field<'a>>,
    key: &'a [u8],
    value: &'a [u8],
    quoted: bool,
) {
    fields.push(Field::invalid(text(key), value_text(value, quoted)));
}

/// Sets a TLS field; false when `key` is not one. A `CV=` that is none of
/// the values Exim writes is kept in `fields` as invalid.
pub(crate) fn tls_field<'a>(
    tls: &mut Tls<'a>,
    fields: &mut Vec<Field<'a>>,
    key: &'a [u8],
    value: &'a [u8],
    quoted: bool,
) -> bool {
    match key {
        b"X" => tls.cipher = Some(value_text(value, quoted)),
        b"CV" => match value {
            b"yes" => tls.cert_verified = Some(true),
            b"no" => tls.cert_verified = Some(false),
            b"dane" => {
                tls.cert_verified = Some(true);
                tls.dane = true;
            }
            _ => keep_invalid(fields, key, value, quoted),
        },
        b"DN" => tls.peer_dn = Some(value_text(value, quoted)),
        b"SNI" => tls.sni = Some(value_text(value, quoted)),
        _ => return false,
    }
    true
}

/// Reads a number field, or keeps it as invalid text when it is not one.
fn num_or_keep<'a, T: TryFrom<u64>>(
    slot: &mut Option<T>,
    fields: &mut Vec<Field<'a>>,
    key: &'a [u8],
    value: &'a [u8],
) {
    match number(value) {
        Some(n) => *slot = Some(n),
        None => keep_invalid(fields, key, value, false),
    }
}

/// Reads a duration field, or keeps it as invalid text.
fn ms_or_keep<'a>(
    slot: &mut Option<u64>,
    fields: &mut Vec<Field<'a>>,
    key: &'a [u8],
    value: &'a [u8],
) {
    match duration_ms(value) {
        Some(n) => *slot = Some(n),
        None => keep_invalid(fields, key, value, false),
    }
}

/// `<= sender fields... [from <addr>] [for rcpt...]`.
pub(crate) fn arrival(b: &[u8]) -> Box<Arrival<'_>> {
    // Filled in place on the heap: the event holds it boxed, and moving a
    // finished one there would copy it whole.
    let mut a = Box::<Arrival>::default();
    let mut sc = Scanner::new(b);
    a.sender = text(strip_angles(sc.take_address()));

    while let Some(item) = sc.next() {
        match item {
            Item::Field { key, value, quoted } => match key {
                b"R" => match MessageId::parse_prefix(value) {
                    Some(id) if id.text_len() == value.len() => a.bounce_of = Some(id),
                    _ => keep_invalid(&mut a.fields, key, value, quoted),
                },
                b"U" => a.user = Some(value_text(value, quoted)),
                b"I" => match interface(value) {
                    Some((i, [], true)) => a.interface = Some(i),
                    _ => keep_invalid(&mut a.fields, key, value, quoted),
                },
                // An `H=` the host reader could not take at all.
                b"H" => keep_invalid(&mut a.fields, key, value, quoted),
                b"P" => a.protocol = Some(value_text(value, quoted)),
                b"A" => {
                    let v = value_text(value, quoted);
                    let mut parts = split3(v);
                    a.authenticator = parts.0.take();
                    a.auth_id = parts.1.take();
                    a.auth_sender = parts.2.take();
                }
                b"S" => num_or_keep(&mut a.size, &mut a.fields, key, value),
                b"M8S" => num_or_keep(&mut a.mime8, &mut a.fields, key, value),
                b"RT" => ms_or_keep(&mut a.receive_time_ms, &mut a.fields, key, value),
                b"id" => a.message_id_header = Some(value_text(value, quoted)),
                b"id*" => {
                    a.message_id_header = Some(value_text(value, quoted));
                    a.message_id_generated = true;
                }
                b"T" => a.subject = Some(value_text(value, quoted)),
                _ if tls_field(&mut a.tls, &mut a.fields, key, value, quoted) => {}
                _ => keep(&mut a.fields, key, value, quoted),
            },
            Item::Host(h) => {
                if !h.clean {
                    keep_invalid(&mut a.fields, b"H", h.raw, false);
                }
                a.host = Some(h.host);
            }
            Item::Word(b"K") => a.chunking = true,
            Item::Word(w @ (b"L" | b"L-" | b"L*" | b"L.")) => a.pipelining = Some(text(w)),
            Item::Word(b"from") => {
                a.from_header = Some(text(strip_angles(sc.take_address())));
            }
            Item::Word(b"for") => {
                a.recipients = addresses(sc.take_rest()).map(text).collect();
            }
            Item::Word(w) => keep(&mut a.fields, w, b"", false),
            Item::Message(m) => keep(&mut a.fields, b":", m, false),
        }
    }
    a
}

/// The space-separated addresses of a `for` list. A quoted local part
/// may hold spaces (`"name with spaces"@example.com`, with `\"` for a
/// quote inside), so spaces inside quotes do not separate.
fn addresses(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = list;
    std::iter::from_fn(move || {
        while rest.first() == Some(&b' ') {
            rest = &rest[1..];
        }
        if rest.is_empty() {
            return None;
        }
        let (mut quoted, mut escaped) = (false, false);
        let end = rest
            .iter()
            .position(|&c| {
                match c {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b' ' if !quoted => return true,
                    _ => {}
                }
                false
            })
            .unwrap_or(rest.len());
        let (address, after) = rest.split_at(end);
        rest = after;
        Some(address)
    })
}

/// Splits `name:id:sender` (an `A=` value) into its parts.
fn split3(v: Text<'_>) -> (Option<Text<'_>>, Option<Text<'_>>, Option<Text<'_>>) {
    match v {
        Cow::Borrowed(s) => {
            let mut it = s.splitn(3, ':');
            let a = it.next().map(Cow::Borrowed);
            let b = it.next().map(Cow::Borrowed);
            let c = it.next().map(Cow::Borrowed);
            (a, b, c)
        }
        Cow::Owned(s) => {
            let mut it = s.splitn(3, ':');
            let own = |p: Option<&str>| p.map(|p| Cow::Owned(p.to_string()));
            let a = own(it.next());
            let b = own(it.next());
            let c = own(it.next());
            (a, b, c)
        }
    }
}

/// Which delivery-result mark a line carries, from its first two bytes.
pub(crate) enum ResultMark {
    Delivered(DeliveryMark),
    Failed,
    Deferred,
}

pub(crate) fn result_mark(b: &[u8]) -> Option<ResultMark> {
    if b.len() < 3 || b[2] != b' ' {
        return None;
    }
    Some(match &b[..2] {
        b"=>" => ResultMark::Delivered(DeliveryMark::Normal),
        b"->" => ResultMark::Delivered(DeliveryMark::Additional),
        b">>" => ResultMark::Delivered(DeliveryMark::Cutthrough),
        b"*>" => ResultMark::Delivered(DeliveryMark::Suppressed),
        b"**" => ResultMark::Failed,
        b"==" => ResultMark::Deferred,
        _ => return None,
    })
}

/// The event of a delivery-result line (the mark already identified).
pub(crate) fn delivery_event(mark: ResultMark, b: &[u8]) -> EventKind<'_> {
    let d = delivery(b);
    match mark {
        ResultMark::Delivered(mark) => EventKind::Delivery { mark, delivery: d },
        ResultMark::Failed => EventKind::Failure(d),
        ResultMark::Deferred => EventKind::Deferral(d),
    }
}

/// True for a word that starts the field list after a delivery address.
fn starts_fields(w: &[u8]) -> bool {
    if matches!(
        w,
        b"K" | b"L" | b"PRDR" | b"TFO" | b"defer" | b"routing" | b":"
    ) {
        return true;
    }
    let eq = w.iter().position(|c| *c == b'=');
    matches!(eq, Some(i) if i > 0 && w[..i].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'*'))
}

/// `address [(parents)] [<original>] fields... [: error]`.
pub(crate) fn delivery(b: &[u8]) -> Box<Delivery<'_>> {
    // Filled in place on the heap, as an arrival is.
    let mut d = Box::<Delivery>::default();
    let rest = address_part(b, &mut d);
    let mut sc = Scanner::new(rest);
    loop {
        let before = sc.rest;
        let Some(item) = sc.next() else { break };
        match item {
            Item::Field { key, value, quoted } => match key {
                b"F" => d.sender = Some(text(strip_angles(value))),
                b"P" => d.return_path = Some(text(strip_angles(value))),
                b"R" => d.router = Some(value_text(value, quoted)),
                b"T" => d.transport = Some(value_text(value, quoted)),
                b"I" => match interface(value) {
                    Some((i, [], true)) => d.interface = Some(i),
                    _ => keep_invalid(&mut d.fields, key, value, quoted),
                },
                b"H" => keep_invalid(&mut d.fields, key, value, quoted),
                b"A" => d.authenticator = Some(value_text(value, quoted)),
                b"S" => num_or_keep(&mut d.size, &mut d.fields, key, value),
                b"C" => d.confirmation = Some(value_text(value, quoted)),
                b"QT" => ms_or_keep(&mut d.queue_time_ms, &mut d.fields, key, value),
                b"DT" => ms_or_keep(&mut d.delivery_time_ms, &mut d.fields, key, value),
                _ if tls_field(&mut d.tls, &mut d.fields, key, value, quoted) => {}
                _ => keep(&mut d.fields, key, value, quoted),
            },
            Item::Host(h) => {
                if !h.clean {
                    keep_invalid(&mut d.fields, b"H", h.raw, false);
                }
                d.host = Some(h.host);
            }
            Item::Word(b"K") => d.chunking = true,
            Item::Word(b"L") => d.pipelining = true,
            Item::Word(b"PRDR") => d.prdr = true,
            Item::Word(b"defer") => {}
            Item::Word(b"routing") => d.routing = true,
            Item::Word(w) if errno_word(w).is_some() => {
                let errno = errno_word(w);
                d.errno = errno;
                // A positive errno is followed by the system's text for it,
                // which runs up to the next field or error separator.
                if errno.is_some_and(|e| e > 0) && sc.rest.starts_with(b": ") {
                    let t = &sc.rest[2..];
                    let end = [find(t, b" H="), find(t, b" DT="), find(t, b": ")]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or(t.len());
                    d.errno_text = Some(text(&t[..end]));
                    sc.rest = &t[end..];
                }
            }
            Item::Word(w) if w.first() == Some(&b'(') => {
                // A remark in parentheses after a field (`ST=local_delivery
                // (mailbox ... not a regular file)`).
                let whole = &before[before.len() - before.trim_ascii_start().len()..];
                let end = close_paren(whole).map_or(whole.len(), |e| e + 1);
                keep(&mut d.fields, b"comment", &whole[1..end.max(2) - 1], false);
                sc.rest = &whole[end..];
            }
            Item::Word(w) if d.error.is_none() && !has_field_after(sc.rest) => {
                // Free text without a `: ` (`** a@b routing yielded a local
                // delivery`): the error.
                let _ = w;
                let whole = before.trim_ascii_start();
                set_error(&mut d, whole);
                sc.rest = &[];
            }
            Item::Word(w) => keep(&mut d.fields, w, b"", false),
            Item::Message(m) => set_error(&mut d, m),
        }
    }
    if let Some(e) = d.errno_text.as_deref().or(d.error.as_deref()) {
        d.retry_not_reached = e.contains("retry time not reached");
    }
    d
}

/// True when a `KEY=value` field follows somewhere in `b`.
fn has_field_after(b: &[u8]) -> bool {
    b.split(|c| *c == b' ').any(starts_fields)
}

/// `(-44)` → -44.
fn errno_word(w: &[u8]) -> Option<i32> {
    let inner = w.strip_prefix(b"(")?.strip_suffix(b")")?;
    signed(inner)
}

/// The error text of a failure or deferral: a trailing `DT=` is a field,
/// the rest is the text, and a remote reply in it is taken apart.
fn set_error<'a>(d: &mut Delivery<'a>, m: &'a [u8]) {
    let mut m = m;
    if let Some(i) = super::scan::rfind(m, b" DT=") {
        if let Some(ms) = duration_ms(&m[i + 4..]) {
            d.delivery_time_ms = Some(ms);
            m = &m[..i];
        }
    }
    d.reply = smtp_reply(m);
    d.error = Some(text(m));
}

/// Reads the address, the parents and the original address; returns the
/// field list after them.
fn address_part<'a>(b: &'a [u8], d: &mut Delivery<'a>) -> &'a [u8] {
    // `:blackhole:` and other `:x:` pseudo-addresses hold colons.
    let mut end = if b.first() == Some(&b':') {
        memchr::memchr(b':', &b[1..]).map_or(b.len(), |i| i + 2)
    } else {
        super::fields::address_end(b)
    };
    let mut address = &b[..end];
    if address.len() > 1 && address.ends_with(b":") && b[0] != b':' {
        // `addr: error` straight after the address.
        address = &address[..address.len() - 1];
        end -= 1;
    }

    // Pipe and file addresses may hold spaces: words that cannot start the
    // field list still belong to them. A lone `:` may be the separator
    // before the error or part of the command (`|procmail -a : x`): see
    // [`address_goes_on`].
    if matches!(b.first(), Some(b'|') | Some(b'/')) {
        loop {
            let rest = &b[end..];
            let Some(next) = rest.strip_prefix(b" ") else {
                break;
            };
            let w = &next[..space(next).unwrap_or(next.len())];
            let separator = w == b":" && !address_goes_on(&next[1..]);
            if w.is_empty() || w[0] == b'<' || w[0] == b'(' || separator {
                break;
            }
            if w != b":" && starts_fields(w) {
                break;
            }
            if w.len() > 1 && w.ends_with(b":") && !address_goes_on(&next[w.len()..]) {
                end += w.len();
                address = &b[..end];
                break;
            }
            end += 1 + w.len();
            address = &b[..end];
        }
    }
    d.address = text(address);
    let mut rest = &b[end..];

    // `(parent, grandparent)` (or the remark of a pseudo-delivery) and
    // `<original@address>`; Exim writes them in this order, and either
    // order is accepted.
    for _ in 0..2 {
        if rest.starts_with(b" (") && d.parents.is_empty() && d.comment.is_none() {
            let group = &rest[1..];
            let Some(close) = close_paren(group) else {
                break;
            };
            let inner = &group[1..close];
            if address == b"blackhole" && memchr::memchr(b'@', inner).is_none() {
                d.comment = Some(text(inner));
            } else {
                d.parents = inner
                    .split(|c| *c == b',')
                    .map(|p| text(p.trim_ascii()))
                    .collect();
            }
            rest = &group[close + 1..];
        } else if rest.starts_with(b" <") && d.original.is_none() {
            let group = &rest[1..];
            let Some(close) = angle_end(group) else { break };
            d.original = Some(text(&group[1..close]));
            rest = &group[close + 1..];
        } else {
            break;
        }
    }
    rest
}

/// True when the text after a `:` in a pipe or file address (a lone `:`
/// or one ending a word) still holds a field (`R=`, `T=`...): Exim writes
/// the fields of a delivery line before the `: ` or ` : ` that starts its
/// error, so a `:` with a field after it belongs to the command, and one
/// without is that separator. Brackets alone do not count: error texts
/// hold them too (`returned 75 (temporary failure)`).
fn address_goes_on(after: &[u8]) -> bool {
    after
        .split(|c| *c == b' ')
        .any(|w| w != b":" && starts_fields(w))
}

/// The `)` closing a group that starts at `b[0] == '('`.
fn close_paren(b: &[u8]) -> Option<usize> {
    let mut from = 1;
    loop {
        let close = memchr::memchr(b')', &b[from..])? + from;
        if matches!(b.get(close + 1), None | Some(b' ') | Some(b':')) {
            return Some(close);
        }
        from = close + 1;
    }
}

/// Who did something and why: ` by root`, ` by the system filter: why`,
/// ` (delivery error message)`, `: why`.
pub(crate) fn actor(rest: &[u8]) -> Actor<'_> {
    let mut a = Actor::default();
    let r = rest.trim_ascii_start();
    if let Some(by) = r.strip_prefix(b"by ") {
        let (who, why) = match find(by, b": ") {
            Some(i) => (&by[..i], Some(&by[i + 2..])),
            None => (by, None),
        };
        let who = who.strip_prefix(b"the ").unwrap_or(who);
        a.by = Some(text(who));
        a.reason = why.map(text);
    } else if let Some(inner) = r.strip_prefix(b"(").and_then(|x| x.strip_suffix(b")")) {
        a.reason = Some(text(inner));
    } else if let Some(why) = r.strip_prefix(b": ").or_else(|| r.strip_prefix(b":")) {
        a.reason = Some(text(why.trim_ascii_start()));
    } else if !r.is_empty() {
        a.reason = Some(text(r));
    }
    a
}

/// The message-level lines other than arrivals and delivery results; `None`
/// when `b` is none of them.
pub(crate) fn other_message_line(b: &[u8]) -> Option<EventKind<'_>> {
    let first = *b.first()?;
    let kind = match first {
        b'C' if b.starts_with(b"Completed") => {
            let rest = &b[9..];
            let mut queue_time_ms = None;
            let mut fields = Vec::new();
            if let Some(v) = rest.strip_prefix(b" QT=") {
                ms_or_keep(&mut queue_time_ms, &mut fields, b"QT", v);
            } else if !rest.is_empty() {
                return None;
            }
            EventKind::Completed {
                queue_time_ms,
                fields,
            }
        }
        b'F' | b'f' if b[1..].starts_with(b"rozen") => EventKind::Frozen(actor(&b[6..])),
        b'U' | b'u' if b[1..].starts_with(b"nfrozen") => EventKind::Unfrozen(actor(&b[8..])),
        b't' | b'T' if b[1..].starts_with(b"hawed") => EventKind::Unfrozen(actor(&b[6..])),
        b'M' if b == b"Message is frozen" => EventKind::SkippedFrozen,
        b'r' if b.starts_with(b"removed") => EventKind::Removed(actor(&b[7..])),
        b'c' if b.starts_with(b"cancelled") => EventKind::Cancelled(actor(&b[9..])),
        b'a' if b.starts_with(b"address <") => {
            let (address, rest) = angled(&b[8..])?;
            let rest = rest.strip_prefix(b" marked delivered")?;
            EventKind::MarkedDelivered {
                address: text(address),
                actor: actor(rest),
            }
        }
        b'r' if b.starts_with(b"recipient <") => {
            let (address, rest) = angled(&b[10..])?;
            let rest = rest.strip_prefix(b" added")?;
            EventKind::RecipientAdded {
                address: text(address),
                actor: actor(rest),
            }
        }
        b'S' if b.starts_with(b"Spool file is locked") => EventKind::SpoolLocked,
        b'n' if b.starts_with(b"no immediate delivery: ") => EventKind::NoImmediateDelivery {
            reason: text(&b[23..]),
        },
        b'"' => rewrite(b)?,
        _ => {
            let at = find(b, b": error ignored")?;
            let reason = match &b[at + 15..] {
                [] => None,
                [b':', b' ', why @ ..] => Some(text(why)),
                _ => return None,
            };
            EventKind::ErrorIgnored {
                address: text(strip_angles(&b[..at])),
                reason,
            }
        }
    };
    Some(kind)
}

/// `<x>rest` → (`x`, `rest`).
fn angled(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let close = angle_end(b)?;
    Some((&b[1..close], &b[close + 1..]))
}

/// `"old" from env-from rewritten as "new" by rule 1`.
fn rewrite(b: &[u8]) -> Option<EventKind<'_>> {
    let close = super::scan::quoted_end(b)?;
    let from = &b[1..close];
    let rest = b[close + 1..].strip_prefix(b" from ")?;
    let at = find(rest, b" rewritten as \"")?;
    let which = &rest[..at];
    let which = which.strip_suffix(b":").unwrap_or(which);
    let rest = &rest[at + 14..];
    let close = super::scan::quoted_end(rest)?;
    let to = &rest[1..close];
    let tail = &rest[close + 1..];
    let rule = match tail.strip_prefix(b" by rule ") {
        Some(n) => Some(number(n)?),
        None if tail.is_empty() => None,
        None => return None,
    };
    Some(EventKind::Rewrite {
        from: unquote(from),
        to: unquote(to),
        which: text(which),
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_address_with_spaces() {
        let d = delivery(b"|/bin/sh -c 'exit 75' <pipe-temp@example.com> R=aliases T=address_pipe defer (0) DT=0.009s: Child process returned 75");
        assert_eq!(d.address, "|/bin/sh -c 'exit 75'");
        assert_eq!(d.original.as_deref(), Some("pipe-temp@example.com"));
        assert_eq!(d.router.as_deref(), Some("aliases"));
        assert_eq!(d.transport.as_deref(), Some("address_pipe"));
        assert_eq!(d.errno, Some(0));
        assert_eq!(d.delivery_time_ms, Some(9));
        assert_eq!(d.error.as_deref(), Some("Child process returned 75"));
    }

    #[test]
    fn a_pipe_command_holding_a_colon_keeps_it() {
        let d = delivery(
            b"|/usr/bin/procmail -a : x <pm@example.com> R=aliases T=address_pipe : \
              Child process of address_pipe transport returned 75",
        );
        assert_eq!(d.address, "|/usr/bin/procmail -a : x");
        assert_eq!(d.original.as_deref(), Some("pm@example.com"));
        assert_eq!(d.transport.as_deref(), Some("address_pipe"));
        assert_eq!(
            d.error.as_deref(),
            Some("Child process of address_pipe transport returned 75")
        );

        let d = delivery(br#"|/bin/sh -c "echo a: b" <sh@example.com> R=r T=t"#);
        assert_eq!(d.address, r#"|/bin/sh -c "echo a: b""#);
        assert_eq!(d.transport.as_deref(), Some("t"));

        // The separator straight after a pipe address still ends it.
        let d = delivery(b"|/bin/cmd arg: retry timeout exceeded");
        assert_eq!(d.address, "|/bin/cmd arg");
        assert_eq!(d.error.as_deref(), Some("retry timeout exceeded"));
        let d = delivery(b"|/p/q/r : delivery to pipe forbidden");
        assert_eq!(d.address, "|/p/q/r");
        assert_eq!(d.error.as_deref(), Some("delivery to pipe forbidden"));
        let d = delivery(b"|/p/q/r : returned 75 (temporary failure) <see log>");
        assert_eq!(d.address, "|/p/q/r");
        assert_eq!(
            d.error.as_deref(),
            Some("returned 75 (temporary failure) <see log>")
        );
        let d = delivery(b"/a/b/c <f@example.com> R=notallowed : delivery to file forbidden");
        assert_eq!(d.address, "/a/b/c");
        assert_eq!(d.error.as_deref(), Some("delivery to file forbidden"));
    }

    #[test]
    fn parents_and_original() {
        let d = delivery(b"a@example.com (b@example.com, c@example.com) <d@example.com> R=r T=t");
        assert_eq!(d.address, "a@example.com");
        assert_eq!(d.parents, ["b@example.com", "c@example.com"]);
        assert_eq!(d.original.as_deref(), Some("d@example.com"));
    }

    #[test]
    fn errno_text_then_fields_then_error() {
        let d = delivery(b"e@example.com R=r T=smtp defer (110): Connection timed out H=mx.example.com [192.0.2.5]:25 DT=8s: SMTP timeout after RCPT TO:<e@example.com>");
        assert_eq!(d.errno, Some(110));
        assert_eq!(d.errno_text.as_deref(), Some("Connection timed out"));
        assert_eq!(d.host.unwrap().port, Some(25));
        assert_eq!(d.delivery_time_ms, Some(8000));
        let r = d.reply.unwrap();
        assert_eq!(r.command(), Some("RCPT TO"));
    }

    #[test]
    fn blackhole_forms() {
        let d = delivery(b":blackhole: <devnull@example.com> R=aliases");
        assert_eq!(d.address, ":blackhole:");
        assert_eq!(d.original.as_deref(), Some("devnull@example.com"));
        let d = delivery(b"blackhole (RCPT ACL discarded recipients)");
        assert_eq!(d.comment.as_deref(), Some("RCPT ACL discarded recipients"));
        assert!(d.parents.is_empty());
    }

    #[test]
    fn a_for_list_keeps_quoted_local_parts_with_spaces_whole() {
        let list: Vec<&[u8]> =
            addresses(br#"a@x.test "name with spaces"@test.ex  "q\" uote"@y.test b@z.test"#)
                .collect();
        assert_eq!(
            list,
            [
                &b"a@x.test"[..],
                br#""name with spaces"@test.ex"#,
                br#""q\" uote"@y.test"#,
                b"b@z.test"
            ]
        );
        assert_eq!(addresses(b"  ").count(), 0);
        // An unbalanced quote runs to the end rather than losing text.
        let odd: Vec<&[u8]> = addresses(br#""open a@b"#).collect();
        assert_eq!(odd, [&br#""open a@b"#[..]]);
    }
}
