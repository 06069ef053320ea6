//! Lines Exim writes about things other than a message's delivery or an
//! SMTP command: warnings, TLS and DANE problems, host lookups that found
//! nothing, and what a pipe transport's command printed.
//!
//! They are tried only after every other form (see the parse order in
//! [`super`]), just before a line becomes a note, so they cost nothing on
//! the lines most logs are made of.

use exim_pilot_schema::event::{EventKind, Field, HostLookup, Note};

use super::scan::{find, host, text};
use super::session::{from_host, note, Prefix};

/// The forms of this module; `None` when `b` is none of them.
pub(crate) fn line(b: &[u8]) -> Option<EventKind<'_>> {
    match b.first()? {
        b'W' => warning(b),
        b'T' | b'[' | b'D' | b'O' | b'S' | b'R' => tls_problem(b),
        b'n' => host_lookup(b),
        b'<' => transport_output(b),
        _ => None,
    }
}

/// `Warning: text` or `WARNING: text` at the start of the body (the
/// warnings Exim writes itself, such as a missing server certificate).
fn warning(b: &[u8]) -> Option<EventKind<'_>> {
    let t = b
        .strip_prefix(b"Warning: ")
        .or_else(|| b.strip_prefix(b"WARNING: "))?;
    Some(EventKind::Warning(Box::new(Note {
        text: text(t),
        ..Note::default()
    })))
}

/// The `Warning: text` of an ACL `warn` verb after the connection's fields
/// (`H=... U=... Warning: found in a blocklist`).
pub(crate) fn acl_warning<'a>(p: Prefix<'a>, rest: &'a [u8]) -> Option<EventKind<'a>> {
    let t = rest.strip_prefix(b"Warning: ")?;
    let mut fields = p.fields;
    if let Some(s) = p.sender {
        fields.push(Field::new("F", s));
    }
    if let Some(a) = p.authenticator {
        fields.push(Field::new("A", a));
    }
    Some(EventKind::Warning(Box::new(Note {
        text: text(t),
        host: p.host,
        interface: p.interface,
        fields,
    })))
}

/// The starts of the TLS and DANE problems Exim logs outside delivery
/// results and inbound handshakes.
const TLS_PROBLEMS: [&[u8]; 6] = [
    b"TLS session: ",
    b"DANE attempt failed",
    b"DANE error: ",
    b"OCSP dates invalid",
    b"Server certificate revoked",
    b"Required TLS certificate status not received",
];

/// A TLS or DANE problem: one of [`TLS_PROBLEMS`], or `[ip] SSL verify
/// error: ...`. The host is the bracketed address, or the `H=` in the text.
fn tls_problem(b: &[u8]) -> Option<EventKind<'_>> {
    if b[0] == b'[' {
        let h = host(b)?;
        if !h.rest.starts_with(b" SSL verify error: ") {
            return None;
        }
        let mut p = Prefix::default();
        p.set_host(h);
        return Some(EventKind::TlsProblem(Box::new(Note {
            text: text(b),
            host: p.host,
            interface: None,
            fields: p.fields,
        })));
    }
    if !TLS_PROBLEMS.iter().any(|p| b.starts_with(p)) {
        return None;
    }
    let EventKind::Note(n) = note(b) else {
        return None;
    };
    Some(EventKind::TlsProblem(n))
}

/// `no host name found for IP address 192.0.2.9` and `no IP address found
/// for host mx.example.com [(during SMTP connection from host)]`.
fn host_lookup(b: &[u8]) -> Option<EventKind<'_>> {
    let mut h = HostLookup {
        text: text(b),
        ..HostLookup::default()
    };
    if let Some(ip) = b.strip_prefix(b"no host name found for IP address ") {
        h.ip = Some(text(ip.trim_ascii_end()));
    } else if let Some(rest) = b.strip_prefix(b"no IP address found for host ") {
        let end = rest.iter().position(|c| *c == b' ').unwrap_or(rest.len());
        h.name = Some(text(&rest[..end]));
        let during = &rest[end..];
        if let Some(i) = find(during, b" from ") {
            let within = &during[i + 6..];
            let within = within.strip_suffix(b")").unwrap_or(within);
            let mut p = Prefix::default();
            from_host(&mut p, within);
            h.host = p.host;
            h.interface = p.interface;
            h.fields = p.fields;
        }
    } else {
        return None;
    }
    Some(EventKind::HostLookup(Box::new(h)))
}

/// `<address>: <transport> transport output: <line>`.
fn transport_output(b: &[u8]) -> Option<EventKind<'_>> {
    let close = super::fields::angle_end(b)?;
    let rest = b[close + 1..].strip_prefix(b": ")?;
    let at = find(rest, b" transport output: ")?;
    let transport = &rest[..at];
    if transport.is_empty() || transport.contains(&b' ') {
        return None;
    }
    Some(EventKind::TransportOutput {
        address: text(&b[1..close]),
        transport: text(transport),
        text: text(&rest[at + 19..]),
    })
}
