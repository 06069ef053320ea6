//! Classification of every failure, deferral, host problem, rejection and
//! failed authentication in the corpus mainlogs, as the parser hands them
//! over. Each distinct text must match one entry of the expectation table
//! below (by a distinctive part of its text) and get that entry's class; a
//! text no entry covers fails the test, so new corpus texts get reviewed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use exim_pilot_processor::classify::{
    classify_auth_failure, classify_delivery, classify_host_problem, classify_reject,
    classify_smtp_session,
};
use exim_pilot_processor::parse::{parse_record_with, ParseOptions, RecordReader};
use exim_pilot_schema::{EventKind, LogFile, ReasonClass};

use ReasonClass as C;

/// (kind, part of the text, class). Kinds: `fail`, `defer`, `host`,
/// `reject`, `auth`, and `smtp` (connection problems, by the name of their
/// kind instead of a text).
const EXPECTED: &[(&str, &str, ReasonClass)] = &[
    (
        "fail",
        "returned 1 from command: /bin/false",
        C::LocalDeliveryError,
    ),
    (
        "fail",
        "User unknown in local recipient table",
        C::UnknownRecipient,
    ),
    ("fail", "Unknown user", C::UnknownRecipient),
    ("fail", "550 Unrouteable address", C::UnknownRecipient),
    ("fail", "Unrouteable address", C::DnsFailure),
    ("fail", "content policy violation", C::SpamContent),
    ("fail", "retry timeout exceeded", C::ExpiredRetry),
    ("defer", "try again later", C::Greylisting),
    ("defer", "MTA-imposed quota exceeded", C::MailboxFull),
    ("defer", "not permitted", C::LocalDeliveryError),
    ("defer", "SMTP timeout after RCPT TO", C::Timeout),
    (
        "defer",
        "returned 75 (could mean temporary error)",
        C::LocalDeliveryError,
    ),
    ("defer", "421 4.3.2", C::RemoteError),
    (
        "defer",
        "Mailbox temporarily unavailable",
        C::LocalDeliveryError,
    ),
    (
        "defer",
        "retry time not reached for any host",
        C::RetryNotReached,
    ),
    ("defer", "Remote host closed connection", C::Timeout),
    ("defer", "Connection refused", C::ConnectionRefused),
    ("host", "421 4.3.2", C::RemoteError),
    ("host", "Connection refused", C::ConnectionRefused),
    ("host", "TLS error on connection", C::TlsFailure),
    ("host", "Remote host closed connection", C::Timeout),
    ("reject", "blocked by local policy", C::PolicyBlocklist),
    ("reject", "is on the local blocklist", C::PolicyBlocklist),
    ("reject", "Unknown user", C::UnknownRecipient),
    ("reject", "dropme address used", C::PolicyBlocklist),
    ("reject", "Service temporarily closed", C::PolicyBlocklist),
    ("reject", "Sender verify failed", C::PolicyBlocklist),
    ("reject", "fake virus signature", C::SpamContent),
    ("reject", "greylisted", C::Greylisting),
    ("reject", "relay not permitted", C::AuthRelayDenied),
    ("reject", "message too big", C::MessageTooLarge),
    (
        "reject",
        "Mailbox temporarily unavailable",
        C::PolicyBlocklist,
    ),
    ("reject", "syntactically invalid", C::ProtocolError),
    ("reject", "Unrouteable address", C::UnknownRecipient),
    ("reject", "unqualified", C::PolicyBlocklist),
    ("auth", "Incorrect authentication data", C::AuthRelayDenied),
    ("smtp", "sync_error", C::ProtocolError),
    ("smtp", "syntax_error", C::ProtocolError),
    ("smtp", "dropped", C::ProtocolError),
    ("smtp", "lost", C::Timeout),
    ("smtp", "timeout", C::Timeout),
];

fn corpus_mainlogs() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus");
    let mut logs = Vec::new();
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        for name in ["mainlog", "partner-mainlog"] {
            let path = root.join(scenario).join(name);
            assert!(path.exists(), "{} is missing", path.display());
            logs.push(path);
        }
    }
    logs
}

/// Every distinct (kind, text) of the corpus with the class it got.
fn classified() -> BTreeMap<(&'static str, String), ReasonClass> {
    let opts = ParseOptions {
        syslog_year: Some(2026),
    };
    let mut seen = BTreeMap::new();
    for path in corpus_mainlogs() {
        let mut reader = RecordReader::new(BufReader::new(File::open(&path).unwrap()));
        while let Some(record) = reader.next_record().unwrap() {
            let event = parse_record_with(&opts, LogFile::Main, record.bytes);
            let (kind, text, class) = match &event.kind {
                EventKind::Failure(d) => ("fail", delivery_text(d), classify_delivery(d, false)),
                EventKind::Deferral(d) => ("defer", delivery_text(d), classify_delivery(d, true)),
                EventKind::HostProblem(p) => ("host", p.text.to_string(), classify_host_problem(p)),
                EventKind::Reject(r) => ("reject", r.reason.to_string(), classify_reject(r)),
                EventKind::AuthFailure(a) => ("auth", a.text.to_string(), classify_auth_failure(a)),
                EventKind::Smtp(session) => match classify_smtp_session(session) {
                    Some(class) => ("smtp", session_kind(session), class),
                    None => continue,
                },
                _ => continue,
            };
            seen.insert((kind, text), class);
        }
    }
    seen
}

fn session_kind(session: &exim_pilot_schema::event::SmtpSession<'_>) -> String {
    serde_json::to_value(session.what)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn delivery_text(d: &exim_pilot_schema::event::Delivery<'_>) -> String {
    let mut text = String::new();
    if let Some(reply) = &d.reply {
        if let Some(code) = reply.code {
            text.push_str(&format!("{code} "));
        }
        if let Some(enhanced) = &reply.enhanced {
            text.push_str(&format!("{enhanced} "));
        }
        text.push_str(&reply.text);
    } else if let Some(e) = d.error.as_deref().or(d.errno_text.as_deref()) {
        text.push_str(e);
    }
    text
}

#[test]
fn every_corpus_text_gets_its_expected_class() {
    let seen = classified();
    assert!(seen.len() >= 30, "too few texts found: {}", seen.len());
    let mut problems = Vec::new();
    for ((kind, text), got) in &seen {
        let entry = EXPECTED
            .iter()
            .find(|(k, part, _)| k == kind && text.contains(part));
        match entry {
            None => problems.push(format!("{kind} {text:?} ({got}): not in the table")),
            Some((_, _, want)) if want != got => {
                problems.push(format!("{kind} {text:?}: want {want}, got {got}"))
            }
            Some(_) => {}
        }
        if *got == ReasonClass::Other {
            problems.push(format!("{kind} {text:?}: classified as other"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_table_entry_is_seen_in_the_corpus() {
    let seen = classified();
    let unused: Vec<_> = EXPECTED
        .iter()
        .filter(|(kind, part, _)| {
            !seen
                .keys()
                .any(|(k, text)| k == kind && text.contains(part))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "entries matching no corpus text: {unused:?}"
    );
}
