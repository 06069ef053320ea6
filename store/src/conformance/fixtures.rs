//! Hand-built lifecycles, records and rejections for store tests.
//!
//! All names and addresses are invented (example.com/.net/.org, documentation
//! IP ranges). Times are fixed, so tests are repeatable.

use chrono::{DateTime, Duration, Utc};

use exim_pilot_schema::event::RejectStage;
use exim_pilot_schema::lifecycle::{Attempt, Client};
use exim_pilot_schema::{
    AttemptResult, Lifecycle, LogFile, MessageId, MessageState, Origin, Outcome, RawRecord,
    ReasonClass, Recipient, RecordOrigin, RejectRecord,
};

use crate::types::StoredRecord;

/// The instant all fixtures are placed around: 2026-12-04 10:00:00 UTC.
pub fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// `base()` plus some minutes.
pub fn at(minutes: i64) -> DateTime<Utc> {
    base() + Duration::minutes(minutes)
}

/// A valid, distinct message id for each `n` below 62^4.
pub fn id(n: u32) -> MessageId {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut part = [b'0'; 4];
    let mut v = n as usize;
    for slot in part.iter_mut().rev() {
        *slot = DIGITS[v % 62];
        v /= 62;
    }
    let text = format!("1x{}-000000-00", String::from_utf8_lossy(&part));
    text.parse().expect("fixture ids are well formed")
}

/// One delivery attempt.
pub fn attempt(t: DateTime<Utc>, result: AttemptResult, reason: Option<ReasonClass>) -> Attempt {
    let text = match result {
        AttemptResult::Ok => None,
        _ => Some(format!(
            "{} {} for fixture",
            if result == AttemptResult::Defer {
                "451"
            } else {
                "550"
            },
            reason.map_or("other", |r| r.as_str())
        )),
    };
    Attempt {
        at: t,
        result,
        mark: match result {
            AttemptResult::Ok => "=>",
            AttemptResult::Defer => "==",
            AttemptResult::Fail => "**",
        }
        .to_string(),
        pid: None,
        router: Some("dnslookup".into()),
        transport: Some("remote_smtp".into()),
        remote_host: Some("mx.example.net".into()),
        remote_ip: Some("192.0.2.25".into()),
        remote_port: Some(25),
        tls_cipher: None,
        tls_verified: None,
        confirmation: (result == AttemptResult::Ok).then(|| "250 OK".to_string()),
        stage: None,
        code: match result {
            AttemptResult::Ok => Some(250),
            AttemptResult::Defer => Some(451),
            AttemptResult::Fail => Some(550),
        },
        enhanced: None,
        text,
        errno: None,
        duration_ms: Some(120),
        reason,
        host_problems: vec![],
    }
}

/// A final address with its history; outcome, counts and reason follow
/// from the history unless `outcome` says otherwise.
pub fn recipient(address: &str, outcome: Outcome, history: Vec<Attempt>) -> Recipient {
    Recipient {
        address: address.to_string(),
        original: None,
        via: vec![],
        outcome,
        attempts: history.len() as u32,
        last_code: history.last().and_then(|a| a.code),
        last_text: history.last().and_then(|a| a.text.clone()),
        reason: history.iter().rev().find_map(|a| a.reason),
        final_at: if outcome.is_final() {
            history.last().map(|a| a.at)
        } else {
            None
        },
        history,
    }
}

/// A message received at `received` on `host`, sent by `sender`.
pub fn message(
    host: &str,
    n: u32,
    received: DateTime<Utc>,
    sender: &str,
    recipients: Vec<Recipient>,
) -> Lifecycle {
    let done = recipients.iter().all(|r| r.outcome.is_final());
    let last = recipients
        .iter()
        .flat_map(|r| r.history.iter().map(|a| a.at))
        .max()
        .unwrap_or(received);
    Lifecycle {
        host: host.to_string(),
        id: id(n),
        sender: Some(sender.to_string()),
        size: Some(1000 + n as u64),
        received_at: Some(received),
        state: if done {
            MessageState::Completed
        } else {
            MessageState::InFlight
        },
        incomplete_start: false,
        in_flight: !done,
        origin: Origin::Smtp,
        first_seen: Some(received),
        last_seen: Some(last),
        completed_at: done.then_some(last),
        queue_time_ms: None,
        protocol: Some("esmtps".into()),
        client: Some(Client {
            name: None,
            helo: Some("client.example.org".into()),
            ip: Some(format!("198.51.100.{}", n % 200 + 1)),
            port: Some(40000),
        }),
        interface: None,
        user: None,
        authenticator: None,
        auth_id: None,
        tls_cipher: None,
        subject: Some(format!("Fixture message number {n}")),
        message_id_header: Some(format!("<fixture-{n}@example.org>")),
        envelope_recipients: vec![],
        parent_id: None,
        generated: vec![],
        frozen: false,
        recipients,
        notes: vec![],
        records: 3,
    }
}

/// A message delivered to one address a few seconds after reception.
pub fn delivered(host: &str, n: u32, received: DateTime<Utc>, to: &str) -> Lifecycle {
    let ok = attempt(
        received + Duration::seconds(2 + n as i64 % 7),
        AttemptResult::Ok,
        None,
    );
    message(
        host,
        n,
        received,
        "alice@example.org",
        vec![recipient(to, Outcome::Delivered, vec![ok])],
    )
}

/// A message whose only address was deferred once and is still waiting.
pub fn deferred(host: &str, n: u32, received: DateTime<Utc>, to: &str) -> Lifecycle {
    let defer = attempt(
        received + Duration::seconds(1),
        AttemptResult::Defer,
        Some(ReasonClass::Greylisting),
    );
    message(
        host,
        n,
        received,
        "bob@example.org",
        vec![recipient(to, Outcome::Deferred, vec![defer])],
    )
}

/// `lc` after its deferred addresses were delivered `later` on.
pub fn now_delivered(lc: &Lifecycle, later: DateTime<Utc>) -> Lifecycle {
    let mut lc = lc.clone();
    for r in &mut lc.recipients {
        if r.outcome == Outcome::Deferred {
            r.history.push(attempt(later, AttemptResult::Ok, None));
            r.attempts += 1;
            r.outcome = Outcome::Delivered;
            r.final_at = Some(later);
            r.last_code = Some(250);
            r.last_text = None;
        }
    }
    lc.state = MessageState::Completed;
    lc.in_flight = false;
    lc.last_seen = Some(later);
    lc.completed_at = Some(later);
    lc
}

/// A varied set: two hosts, several days and hours, delivered, deferred,
/// bounced and mixed messages, local and remote addresses.
pub fn varied() -> Vec<Lifecycle> {
    let mut out = Vec::new();
    let hosts = ["mx1.example.org", "mx2.example.org"];
    let domains = ["example.net", "example.com", "example.org"];
    for n in 0..40u32 {
        let host = hosts[(n % 2) as usize];
        // Spread over four days, several hours a day.
        let received = at((n as i64 % 4) * 24 * 60 + (n as i64 * 37) % (20 * 60));
        let to = format!("user{n}@{}", domains[(n % 3) as usize]);
        let lc = match n % 5 {
            0 | 1 => delivered(host, n, received, &to),
            2 => deferred(host, n, received, &to),
            3 => {
                let fail = attempt(
                    received + Duration::seconds(3),
                    AttemptResult::Fail,
                    Some(ReasonClass::UnknownRecipient),
                );
                let ok = attempt(received + Duration::seconds(4), AttemptResult::Ok, None);
                message(
                    host,
                    n,
                    received,
                    "carol@example.com",
                    vec![
                        recipient(&to, Outcome::Bounced, vec![fail]),
                        recipient("postmaster@example.net", Outcome::Delivered, vec![ok]),
                    ],
                )
            }
            _ => {
                let defer = attempt(
                    received + Duration::seconds(5),
                    AttemptResult::Defer,
                    Some(ReasonClass::Timeout),
                );
                let ok = attempt(received + Duration::minutes(65), AttemptResult::Ok, None);
                let mut local = recipient(
                    "dave@example.org",
                    Outcome::Delivered,
                    vec![attempt(
                        received + Duration::seconds(1),
                        AttemptResult::Ok,
                        None,
                    )],
                );
                local.history[0].transport = Some("local_delivery".into());
                local.history[0].remote_host = None;
                local.history[0].remote_ip = None;
                message(
                    host,
                    n,
                    received,
                    "",
                    vec![recipient(&to, Outcome::Delivered, vec![defer, ok]), local],
                )
            }
        };
        out.push(lc);
    }
    out
}

/// A raw mainlog record of `host` at `offset`.
pub fn record(
    host: &str,
    offset: u64,
    t: DateTime<Utc>,
    id: Option<MessageId>,
    line: &str,
) -> StoredRecord {
    let text = format!(
        "{} {}{}",
        t.format("%Y-%m-%d %H:%M:%S"),
        id.map(|i| format!("{i} ")).unwrap_or_default(),
        line
    );
    StoredRecord::new(
        RawRecord {
            origin: RecordOrigin {
                host: host.to_string(),
                log: LogFile::Main,
                file_id: 4242,
                offset,
            },
            read_at_ms: t.timestamp_millis() + 5,
            bytes: text.into_bytes(),
        },
        Some(t),
        id,
        if line.starts_with("<=") {
            "arrival"
        } else {
            "delivery"
        },
    )
}

/// The arrival and delivery records of a lifecycle, at offsets from `offset`.
pub fn records_of(lc: &Lifecycle, offset: u64) -> Vec<StoredRecord> {
    let t = lc.received_at.unwrap_or_else(base);
    let mut out = vec![record(
        &lc.host,
        offset,
        t,
        Some(lc.id),
        &format!(
            "<= {} H=client.example.org [192.0.2.1] P=esmtps S={}",
            lc.sender.as_deref().unwrap_or(""),
            lc.size.unwrap_or(0)
        ),
    )];
    for (i, r) in lc.recipients.iter().enumerate() {
        out.push(record(
            &lc.host,
            offset + 100 * (i as u64 + 1),
            r.history.last().map_or(t, |a| a.at),
            Some(lc.id),
            &format!("=> {} R=dnslookup T=remote_smtp", r.address),
        ));
    }
    out
}

/// An SMTP rejection from `ip` at `t`, logged at `offset` of the rejectlog.
pub fn reject(
    host: &str,
    offset: u64,
    t: DateTime<Utc>,
    ip: &str,
    class: ReasonClass,
) -> RejectRecord {
    RejectRecord {
        origin: RecordOrigin {
            host: host.to_string(),
            log: LogFile::Reject,
            file_id: 777,
            offset,
        },
        at: t,
        stage: RejectStage::Rcpt,
        temporary: class == ReasonClass::Greylisting,
        client_ip: Some(ip.to_string()),
        client_name: None,
        helo: Some("spammer.example.com".into()),
        sender: Some("someone@example.com".into()),
        recipient: Some(format!("target{offset}@example.net")),
        message_id: None,
        reason: format!("{class}: rejected by fixture policy"),
        class,
    }
}

/// A queued message `n` as `exim -bp` would list it: `rcpts` are
/// (address, delivered) pairs; an empty `sender` makes a bounce.
pub fn queued(
    n: u32,
    age_secs: Option<u64>,
    size: Option<u64>,
    sender: &str,
    rcpts: &[(&str, bool)],
    frozen: bool,
) -> exim_pilot_schema::QueuedMessage {
    exim_pilot_schema::QueuedMessage {
        id: id(n),
        age_secs,
        size,
        sender: sender.to_string(),
        recipients: rcpts
            .iter()
            .map(
                |(address, delivered)| exim_pilot_schema::queue::QueueRecipient {
                    address: address.to_string(),
                    delivered: *delivered,
                },
            )
            .collect(),
        frozen,
        spool_error: age_secs
            .is_none()
            .then(|| "spool read error: No such file or directory".to_string()),
    }
}

/// A snapshot of `host`'s queue taken at `t`.
pub fn snapshot(
    host: &str,
    t: DateTime<Utc>,
    messages: Vec<exim_pilot_schema::QueuedMessage>,
) -> exim_pilot_schema::QueueSnapshot {
    exim_pilot_schema::QueueSnapshot {
        host: host.to_string(),
        taken_at: t,
        messages,
    }
}

/// A message deferred twice, first for greylisting, then (`later`) for a
/// timeout, and still waiting.
pub fn deferred_twice(host: &str, n: u32, received: DateTime<Utc>, to: &str) -> Lifecycle {
    let first = attempt(
        received + Duration::seconds(1),
        AttemptResult::Defer,
        Some(ReasonClass::Greylisting),
    );
    let later = attempt(
        received + Duration::minutes(30),
        AttemptResult::Defer,
        Some(ReasonClass::Timeout),
    );
    message(
        host,
        n,
        received,
        "bob@example.org",
        vec![recipient(to, Outcome::Deferred, vec![first, later])],
    )
}
