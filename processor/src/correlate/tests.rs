//! Correlation of invented log lines, one behaviour per test.

use exim_pilot_schema::lifecycle::{AttemptResult, MessageState, Origin, Outcome, Recipient};
use exim_pilot_schema::ReasonClass;

use super::*;
use crate::parse::parse_record;

const HOST: &str = "mx.example.com";

/// A correlator that keeps everything, fed with `lines` of the mainlog.
fn correlate(lines: &str) -> Correlator {
    let mut c = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
    feed(&mut c, lines);
    c
}

fn feed(c: &mut Correlator, lines: &str) {
    for line in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let event = parse_record(LogFile::Main, line.as_bytes());
        c.apply(HOST, &event);
    }
}

fn id(s: &str) -> MessageId {
    s.parse().unwrap()
}

fn lifecycle<'c>(c: &'c Correlator, message: &str) -> &'c Lifecycle {
    c.get(HOST, id(message)).expect("lifecycle exists")
}

fn recipient<'l>(lc: &'l Lifecycle, address: &str) -> &'l Recipient {
    lc.recipients
        .iter()
        .find(|r| r.address == address)
        .unwrap_or_else(|| panic!("no recipient {address} in {:#?}", lc.recipients))
}

#[test]
fn an_immediate_delivery_completes_the_message() {
    let c = correlate(
        "2026-01-05 10:00:00.100 [100] 1aaaaa-000001-AA <= kim@example.org \
         H=(client.example.org) [198.51.100.7]:40000 I=[192.0.2.1]:25 P=esmtps \
         X=TLS1.3:ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM:256 CV=no S=1234 \
         id=abc@example.org T=\"Hello\" from <kim@example.org> for bob@example.net
         2026-01-05 10:00:00.300 [101] 1aaaaa-000001-AA => bob@example.net R=dnslookup \
         T=remote_smtp H=mx.example.net [203.0.113.5]:25 C=\"250 2.0.0 Ok: queued as 1\" \
         QT=0.2s DT=0.1s
         2026-01-05 10:00:00.350 [101] 1aaaaa-000001-AA Completed QT=0.250s",
    );
    let lc = lifecycle(&c, "1aaaaa-000001-AA");
    assert_eq!(lc.state, MessageState::Completed);
    assert!(!lc.in_flight && !lc.incomplete_start);
    assert_eq!(lc.origin, Origin::Smtp);
    assert_eq!(lc.sender.as_deref(), Some("kim@example.org"));
    assert_eq!(lc.size, Some(1234));
    assert_eq!(lc.subject.as_deref(), Some("Hello"));
    assert_eq!(lc.queue_time_ms, Some(250));
    assert_eq!(lc.interface.as_deref(), Some("[192.0.2.1]:25"));
    let client = lc.client.as_ref().unwrap();
    assert_eq!(client.ip.as_deref(), Some("198.51.100.7"));
    assert_eq!(client.helo.as_deref(), Some("client.example.org"));
    assert_eq!(lc.records, 3);

    let r = recipient(lc, "bob@example.net");
    assert_eq!((r.outcome, r.attempts), (Outcome::Delivered, 1));
    assert_eq!(r.last_code, Some(250));
    let a = &r.history[0];
    assert_eq!(a.remote_ip.as_deref(), Some("203.0.113.5"));
    assert_eq!(a.remote_port, Some(25));
    assert_eq!(a.duration_ms, Some(100));
    assert_eq!(a.pid, Some(101));
}

#[test]
fn local_deliveries_are_written_in_full() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-000002-AA <= kim@example.org U=kim P=local S=100
         2026-01-05 10:00:00 1aaaaa-000002-AA => alice <alice@example.com> R=localuser \
         T=local_delivery
         2026-01-05 10:00:00 1aaaaa-000002-AA => bob <postmaster@example.com> R=localuser \
         T=local_delivery
         2026-01-05 10:00:00 1aaaaa-000002-AA => |/usr/bin/procmail <pipe@example.com> \
         R=aliases T=address_pipe
         2026-01-05 10:00:00 1aaaaa-000002-AA Completed",
    );
    let lc = lifecycle(&c, "1aaaaa-000002-AA");
    assert_eq!(lc.origin, Origin::Local);
    assert_eq!(recipient(lc, "alice@example.com").original, None);
    assert_eq!(
        recipient(lc, "bob@example.com").original.as_deref(),
        Some("postmaster@example.com")
    );
    assert_eq!(
        recipient(lc, "|/usr/bin/procmail").original.as_deref(),
        Some("pipe@example.com")
    );
}

#[test]
fn a_retry_timeout_after_a_deferral_in_the_same_run_is_one_attempt() {
    let c = correlate(
        "2026-01-05 10:00:00.000 [100] 1aaaaa-000003-AA <= kim@example.org \
         H=[198.51.100.7] P=esmtp S=100 for ann@example.net
         2026-01-05 10:00:01.000 [101] 1aaaaa-000003-AA == ann@example.net R=dnslookup \
         T=remote_smtp defer (-44) H=mx.example.net [203.0.113.5]: SMTP error from remote \
         mail server after RCPT TO:<ann@example.net>: 451 4.7.1 Try again later
         2026-01-05 11:00:00.000 [200] Start queue run: pid=200
         2026-01-05 11:00:01.000 [201] 1aaaaa-000003-AA == ann@example.net R=dnslookup \
         T=remote_smtp defer (-44) H=mx.example.net [203.0.113.5]: SMTP error from remote \
         mail server after RCPT TO:<ann@example.net>: 451 4.7.1 Try again later
         2026-01-05 11:00:01.000 [201] 1aaaaa-000003-AA ** ann@example.net: retry timeout \
         exceeded
         2026-01-05 11:00:01.100 [201] 1aaaaa-000003-AA Completed",
    );
    let r = recipient(lifecycle(&c, "1aaaaa-000003-AA"), "ann@example.net");
    assert_eq!((r.outcome, r.attempts), (Outcome::Bounced, 2));
    assert_eq!(r.reason, Some(ReasonClass::ExpiredRetry));
    assert_eq!(r.last_code, Some(451));
    let results: Vec<_> = r.history.iter().map(|a| a.result).collect();
    assert_eq!(results, [AttemptResult::Defer, AttemptResult::Fail]);
}

#[test]
fn without_pids_a_retry_timeout_joins_the_deferral_of_its_run() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-000004-AA <= kim@example.org H=[198.51.100.7] P=esmtp \
         S=100
         2026-01-05 10:00:01 1aaaaa-000004-AA == ann@example.net R=dnslookup T=remote_smtp \
         defer (111): Connection refused
         2026-01-05 11:00:00 Start queue run: pid=200
         2026-01-05 11:00:01 1aaaaa-000004-AA == ann@example.net R=dnslookup T=remote_smtp \
         defer (111): Connection refused
         2026-01-05 11:00:01 1aaaaa-000004-AA ** ann@example.net: retry timeout exceeded
         2026-01-05 11:00:01 1aaaaa-000004-AA Completed
         2026-01-05 11:00:02 End queue run: pid=200",
    );
    let r = recipient(lifecycle(&c, "1aaaaa-000004-AA"), "ann@example.net");
    assert_eq!((r.outcome, r.attempts), (Outcome::Bounced, 2));
}

#[test]
fn without_pids_a_retry_timeout_in_a_later_queue_run_is_its_own_attempt() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-000005-AA <= kim@example.org H=[198.51.100.7] P=esmtp \
         S=100
         2026-01-05 10:00:01 1aaaaa-000005-AA == ann@example.net R=dnslookup T=remote_smtp \
         defer (111): Connection refused
         2026-01-05 11:00:00 Start queue run: pid=200
         2026-01-05 11:00:01 1aaaaa-000005-AA ** ann@example.net: retry timeout exceeded
         2026-01-05 11:00:01 1aaaaa-000005-AA Completed",
    );
    let r = recipient(lifecycle(&c, "1aaaaa-000005-AA"), "ann@example.net");
    assert_eq!((r.outcome, r.attempts), (Outcome::Bounced, 2));
}

#[test]
fn repeated_deferrals_without_pids_count_once_per_run() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-000006-AA <= kim@example.org H=[198.51.100.7] P=esmtp \
         S=100
         2026-01-05 10:00:01 1aaaaa-000006-AA == ann@example.net R=dnslookup T=remote_smtp \
         defer (-53): retry time not reached for any host for 'example.net'
         2026-01-05 10:05:01 1aaaaa-000006-AA == ann@example.net R=dnslookup T=remote_smtp \
         defer (111): Connection refused",
    );
    let lc = lifecycle(&c, "1aaaaa-000006-AA");
    let r = recipient(lc, "ann@example.net");
    assert_eq!((r.outcome, r.attempts), (Outcome::Deferred, 2));
    assert_eq!(r.history[0].reason, Some(ReasonClass::RetryNotReached));
    assert_eq!(r.reason, Some(ReasonClass::ConnectionRefused));
    assert_eq!(lc.state, MessageState::InFlight);
    assert!(lc.in_flight);
}

#[test]
fn host_problems_attach_to_the_attempts_of_their_run() {
    let c = correlate(
        "2026-01-05 10:00:00.000 [100] 1aaaaa-000007-AA <= kim@example.org \
         H=[198.51.100.7] P=esmtp S=100 for ann@example.net bo@example.net
         2026-01-05 10:00:01.000 [102] 1aaaaa-000007-AA H=mx1.example.net \
         [203.0.113.5]:25 Connection refused
         2026-01-05 10:00:02.000 [101] 1aaaaa-000007-AA => ann@example.net R=dnslookup \
         T=remote_smtp H=mx2.example.net [203.0.113.6]:25 C=\"250 OK\"
         2026-01-05 10:00:02.000 [101] 1aaaaa-000007-AA -> bo@example.net R=dnslookup \
         T=remote_smtp H=mx2.example.net [203.0.113.6]:25 C=\"250 OK\"
         2026-01-05 10:00:02.100 [101] 1aaaaa-000007-AA Completed",
    );
    let lc = lifecycle(&c, "1aaaaa-000007-AA");
    for address in ["ann@example.net", "bo@example.net"] {
        let r = recipient(lc, address);
        assert_eq!((r.outcome, r.attempts), (Outcome::Delivered, 1));
        assert_eq!(
            r.history[0].host_problems,
            ["mx1.example.net [203.0.113.5]:25 Connection refused"]
        );
    }
}

#[test]
fn a_cutthrough_delivery_logged_before_the_arrival_is_kept() {
    let c = correlate(
        "2026-01-05 10:00:00.000 [100] 1aaaaa-000008-AA >> ann@example.net R=dnslookup \
         T=remote_smtp H=mx.example.net [203.0.113.5]:25 C=\"250 OK\"
         2026-01-05 10:00:00.000 [100] 1aaaaa-000008-AA <= kim@example.org \
         H=[198.51.100.7] P=esmtp S=100 for ann@example.net
         2026-01-05 10:00:00.000 [100] 1aaaaa-000008-AA Completed",
    );
    let lc = lifecycle(&c, "1aaaaa-000008-AA");
    assert!(!lc.incomplete_start);
    assert_eq!(lc.origin, Origin::Smtp);
    assert_eq!(lc.recipients.len(), 1);
    let r = recipient(lc, "ann@example.net");
    assert_eq!((r.outcome, r.attempts), (Outcome::Delivered, 1));
    assert_eq!(r.history[0].mark, ">>");
}

#[test]
fn a_log_starting_mid_message_says_so() {
    let c = correlate(
        "2026-01-05 10:00:01 1aaaaa-000009-AA == ann@example.net R=dnslookup T=remote_smtp \
         defer (111): Connection refused",
    );
    let lc = lifecycle(&c, "1aaaaa-000009-AA");
    assert!(lc.incomplete_start && lc.in_flight);
    assert_eq!(lc.origin, Origin::Unknown);
    assert_eq!(lc.sender, None);
    assert_eq!(lc.state, MessageState::InFlight);
}

#[test]
fn envelope_recipients_wait_as_pending_and_expand_to_final_addresses() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000A-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100 for team@example.com late@example.com
         2026-01-05 10:00:01 1aaaaa-00000A-AA => alice <team@example.com> R=localuser \
         T=local_delivery
         2026-01-05 10:00:01 1aaaaa-00000A-AA => carol <team@example.com> R=localuser \
         T=local_delivery",
    );
    let lc = lifecycle(&c, "1aaaaa-00000A-AA");
    assert_eq!(lc.recipients.len(), 3);
    assert_eq!(
        recipient(lc, "alice@example.com").outcome,
        Outcome::Delivered
    );
    assert_eq!(
        recipient(lc, "carol@example.com").outcome,
        Outcome::Delivered
    );
    let late = recipient(lc, "late@example.com");
    assert_eq!((late.outcome, late.attempts), (Outcome::Pending, 0));
}

#[test]
fn an_address_deferred_by_a_router_is_taken_over_by_its_final_address() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-000010-AA <= kim@example.org U=kim P=local S=100
         2026-01-05 10:00:00 1aaaaa-000010-AA == ann@example.com R=filter defer (-1): \
         filter asked for a delay
         2026-01-05 10:00:00 1aaaaa-000010-AA Frozen
         2026-01-05 10:30:00 1aaaaa-000010-AA Unfrozen by forced delivery
         2026-01-05 10:30:00 1aaaaa-000010-AA => bo@example.net <ann@example.com> \
         R=dnslookup T=remote_smtp H=mx.example.net [203.0.113.5] C=\"250 OK\"
         2026-01-05 10:30:00 1aaaaa-000010-AA Completed",
    );
    let lc = lifecycle(&c, "1aaaaa-000010-AA");
    assert_eq!(lc.recipients.len(), 1);
    let r = recipient(lc, "bo@example.net");
    assert_eq!(r.original.as_deref(), Some("ann@example.com"));
    assert_eq!((r.outcome, r.attempts), (Outcome::Delivered, 2));
}

#[test]
fn envelope_recipients_never_named_are_dropped_when_the_message_completes() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000Z-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100 for ann@example.net bo@example.net
         2026-01-05 10:00:01 1aaaaa-00000Z-AA => ann@example.net R=dnslookup \
         T=remote_smtp C=\"250 OK\"
         2026-01-05 10:00:01 1aaaaa-00000Z-AA Completed",
    );
    let lc = lifecycle(&c, "1aaaaa-00000Z-AA");
    assert_eq!(lc.recipients.len(), 1);
    assert_eq!(lc.recipients[0].address, "ann@example.net");
    assert_eq!(
        lc.envelope_recipients,
        ["ann@example.net", "bo@example.net"]
    );
    let note = lc.notes.last().unwrap();
    assert_eq!(
        (note.what.as_str(), note.text.as_deref()),
        ("unresolved_recipient", Some("bo@example.net"))
    );
}

#[test]
fn bounces_and_delay_warnings_are_told_apart_without_subjects() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000B-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100
         2026-01-05 10:00:01 1aaaaa-00000B-AA == ann@example.net R=dnslookup \
         T=remote_smtp defer (111): Connection refused
         2026-01-05 12:00:01 1aaaaa-00000B-AA == ann@example.net R=dnslookup \
         T=remote_smtp defer (111): Connection refused
         2026-01-05 12:00:01 1aaaaa-00000C-AA <= <> R=1aaaaa-00000B-AA U=Debian-exim \
         P=local S=2000
         2026-01-05 14:00:01 1aaaaa-00000B-AA ** ann@example.net R=dnslookup \
         T=remote_smtp: SMTP error from remote mail server after RCPT TO:<ann@example.net>: \
         550 5.1.1 No such user
         2026-01-05 14:00:01 1aaaaa-00000D-AA <= <> R=1aaaaa-00000B-AA U=Debian-exim \
         P=local S=2000
         2026-01-05 14:00:01 1aaaaa-00000B-AA Completed",
    );
    assert_eq!(
        lifecycle(&c, "1aaaaa-00000C-AA").origin,
        Origin::DelayWarning
    );
    let bounce = lifecycle(&c, "1aaaaa-00000D-AA");
    assert_eq!(bounce.origin, Origin::Bounce);
    assert_eq!(bounce.parent_id, Some(id("1aaaaa-00000B-AA")));
    assert_eq!(bounce.sender.as_deref(), Some(""));
    let parent = lifecycle(&c, "1aaaaa-00000B-AA");
    assert_eq!(
        parent.generated,
        [id("1aaaaa-00000C-AA"), id("1aaaaa-00000D-AA")]
    );
    assert_eq!(
        recipient(parent, "ann@example.net").reason,
        Some(ReasonClass::UnknownRecipient)
    );
}

#[test]
fn subjects_decide_between_bounce_and_warning() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000E-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100
         2026-01-05 10:00:01 1aaaaa-00000E-AA ** ann@example.net R=dnslookup \
         T=remote_smtp: SMTP error from remote mail server after RCPT TO:<ann@example.net>: \
         550 5.1.1 No such user
         2026-01-05 10:00:01 1aaaaa-00000F-AA <= <> R=1aaaaa-00000E-AA U=Debian-exim \
         P=local S=2000 T=\"Warning: message 1aaaaa-00000E-AA delayed 24 hours\"
         2026-01-05 10:00:01 1aaaaa-00000G-AA <= <> R=1aaaaa-00000E-AA U=Debian-exim \
         P=local S=2000 T=\"Mail delivery failed: returning message to sender\"",
    );
    assert_eq!(
        lifecycle(&c, "1aaaaa-00000F-AA").origin,
        Origin::DelayWarning
    );
    assert_eq!(lifecycle(&c, "1aaaaa-00000G-AA").origin, Origin::Bounce);
}

#[test]
fn a_failed_bounce_is_frozen_then_its_error_ignored() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000H-AA <= <> R=1aaaaa-00000Z-AA U=Debian-exim \
         P=local S=2000
         2026-01-05 10:00:01 1aaaaa-00000H-AA ** kim@example.org R=dnslookup T=remote_smtp: \
         SMTP error from remote mail server after RCPT TO:<kim@example.org>: 550 5.1.1 \
         Unknown user
         2026-01-05 10:00:01 1aaaaa-00000H-AA Frozen (delivery error message)",
    );
    let lc = lifecycle(&c, "1aaaaa-00000H-AA");
    assert_eq!(lc.state, MessageState::Frozen);
    let r = recipient(lc, "kim@example.org");
    assert_eq!((r.outcome, r.attempts), (Outcome::Frozen, 1));

    let mut c = c;
    feed(
        &mut c,
        "2026-01-05 10:30:00 1aaaaa-00000H-AA Message is frozen
         2026-01-05 11:00:00 1aaaaa-00000H-AA Unfrozen by errmsg timer
         2026-01-05 11:00:01 1aaaaa-00000H-AA ** kim@example.org R=dnslookup T=remote_smtp: \
         SMTP error from remote mail server after RCPT TO:<kim@example.org>: 550 5.1.1 \
         Unknown user
         2026-01-05 11:00:01 1aaaaa-00000H-AA kim@example.org: error ignored
         2026-01-05 11:00:01 1aaaaa-00000H-AA Completed",
    );
    let lc = lifecycle(&c, "1aaaaa-00000H-AA");
    assert_eq!(lc.state, MessageState::Completed);
    let r = recipient(lc, "kim@example.org");
    assert_eq!((r.outcome, r.attempts), (Outcome::Bounced, 2));
    let notes: Vec<&str> = lc.notes.iter().map(|n| n.what.as_str()).collect();
    assert_eq!(
        notes,
        ["frozen", "skipped_frozen", "unfrozen", "error_ignored"]
    );
}

#[test]
fn admin_actions_settle_the_addresses() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000I-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100 for ann@example.net
         2026-01-05 10:00:01 1aaaaa-00000I-AA == ann@example.net R=dnslookup \
         T=remote_smtp defer (111): Connection refused
         2026-01-05 10:10:00 1aaaaa-00000I-AA cancelled by root
         2026-01-05 10:10:00 1aaaaa-00000I-AA Completed
         2026-01-05 10:00:00 1aaaaa-00000J-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100 for bo@example.net
         2026-01-05 10:10:00 1aaaaa-00000J-AA removed by root
         2026-01-05 10:00:00 1aaaaa-00000K-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100 for cy@example.net
         2026-01-05 10:10:00 1aaaaa-00000K-AA address <cy@example.net> marked delivered by \
         root
         2026-01-05 10:10:01 1aaaaa-00000K-AA recipient <dee@example.net> added by root
         2026-01-05 10:10:02 1aaaaa-00000K-AA frozen by root",
    );
    let cancelled = recipient(lifecycle(&c, "1aaaaa-00000I-AA"), "ann@example.net");
    assert_eq!(
        (cancelled.outcome, cancelled.attempts),
        (Outcome::Bounced, 1)
    );
    assert_eq!(cancelled.reason, Some(ReasonClass::Cancelled));

    let removed = lifecycle(&c, "1aaaaa-00000J-AA");
    assert_eq!(removed.state, MessageState::Removed);
    assert!(!removed.in_flight);
    assert_eq!(
        recipient(removed, "bo@example.net").outcome,
        Outcome::Removed
    );

    let k = lifecycle(&c, "1aaaaa-00000K-AA");
    assert_eq!(k.state, MessageState::Frozen);
    assert!(k.frozen && k.in_flight);
    assert_eq!(
        recipient(k, "cy@example.net").outcome,
        Outcome::MarkedDelivered
    );
    assert_eq!(recipient(k, "dee@example.net").outcome, Outcome::Frozen);
}

#[test]
fn a_system_filter_cancellation_bounces_without_an_attempt() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000L-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100 for ann@example.net
         2026-01-05 10:00:00 1aaaaa-00000L-AA cancelled by system filter: bulk mail
         2026-01-05 10:00:00 1aaaaa-00000M-AA <= <> R=1aaaaa-00000L-AA U=Debian-exim \
         P=local S=2000
         2026-01-05 10:00:00 1aaaaa-00000L-AA Completed",
    );
    let r = recipient(lifecycle(&c, "1aaaaa-00000L-AA"), "ann@example.net");
    assert_eq!((r.outcome, r.attempts), (Outcome::Bounced, 0));
    assert_eq!(lifecycle(&c, "1aaaaa-00000M-AA").origin, Origin::Bounce);
}

#[test]
fn discarded_recipients_leave_no_final_address() {
    let c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000N-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100
         2026-01-05 10:00:00 1aaaaa-00000N-AA => blackhole (RCPT ACL discarded recipients)
         2026-01-05 10:00:00 1aaaaa-00000N-AA Completed",
    );
    let lc = lifecycle(&c, "1aaaaa-00000N-AA");
    assert!(lc.recipients.is_empty());
    assert_eq!(lc.notes[0].what, "discarded_recipients");
    assert_eq!(lc.state, MessageState::Completed);
}

#[test]
fn rejections_and_other_logs_make_no_lifecycle() {
    let mut c = correlate(
        "2026-01-05 10:00:00 1aaaaa-00000O-AA H=(client.example.org) [198.51.100.7] \
         F=<kim@example.org> rejected after DATA: spam detected
         2026-01-05 10:00:00 H=(client.example.org) [198.51.100.7] F=<kim@example.org> \
         rejected RCPT <ann@example.com>: Unknown user",
    );
    let panic = parse_record(
        LogFile::Panic,
        b"2026-01-05 10:00:01 1aaaaa-00000P-AA == ann@example.net R=x defer (-1): oops",
    );
    c.apply_record(HOST, LogFile::Panic, &panic);
    assert!(c.is_empty());
}

#[test]
fn long_recipient_lists_are_matched_through_the_index() {
    let addresses: Vec<String> = (0..200).map(|i| format!("u{i}@example.net")).collect();
    let mut lines = format!(
        "2026-01-05 10:00:00 1aaaaa-00000Q-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100 for {}\n",
        addresses.join(" ")
    );
    for (i, a) in addresses.iter().enumerate().rev() {
        let mark = if i % 2 == 0 { "=>" } else { "==" };
        let tail = if i % 2 == 0 {
            "C=\"250 OK\"".to_string()
        } else {
            "defer (111): Connection refused".to_string()
        };
        lines.push_str(&format!(
            "2026-01-05 10:00:01 1aaaaa-00000Q-AA {mark} {a} R=dnslookup T=remote_smtp {tail}\n"
        ));
    }
    let c = correlate(&lines);
    let lc = lifecycle(&c, "1aaaaa-00000Q-AA");
    assert_eq!(lc.recipients.len(), 200);
    for (i, a) in addresses.iter().enumerate() {
        let r = recipient(lc, a);
        let want = if i % 2 == 0 {
            Outcome::Delivered
        } else {
            Outcome::Deferred
        };
        assert_eq!((r.outcome, r.attempts), (want, 1), "{a}");
    }
}

#[test]
fn take_changed_returns_each_change_once() {
    let mut c = Correlator::new(Zone::Utc);
    feed(
        &mut c,
        "2026-01-05 10:00:00 1aaaaa-00000R-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100
         2026-01-05 10:00:00 1aaaaa-00000S-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100",
    );
    assert_eq!(c.take_changed().len(), 2);
    assert!(c.take_changed().is_empty());
    feed(
        &mut c,
        "2026-01-05 10:00:01 1aaaaa-00000S-AA => ann@example.net R=dnslookup \
         T=remote_smtp C=\"250 OK\"",
    );
    let changed = c.take_changed();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, id("1aaaaa-00000S-AA"));
}

#[test]
fn completed_messages_are_evicted_after_the_grace_period() {
    let config = CorrelatorConfig {
        grace: Some(Duration::minutes(10)),
        stale_after: Some(Duration::days(2)),
        keep_evicted: true,
    };
    let mut c = Correlator::with_config(Zone::Utc, config);
    feed(
        &mut c,
        "2026-01-05 10:00:00 1aaaaa-00000T-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100
         2026-01-05 10:00:01 1aaaaa-00000T-AA ** ann@example.net R=dnslookup \
         T=remote_smtp: SMTP error from remote mail server after RCPT TO:<ann@example.net>: \
         550 5.1.1 No such user
         2026-01-05 10:00:01 1aaaaa-00000T-AA Completed
         2026-01-05 10:00:05 1aaaaa-00000U-AA <= <> R=1aaaaa-00000T-AA U=Debian-exim \
         P=local S=2000
         2026-01-05 10:00:06 1aaaaa-00000V-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100",
    );
    // The bounce arrived after its parent completed: still linked.
    let parent = lifecycle(&c, "1aaaaa-00000T-AA");
    assert_eq!(parent.generated, [id("1aaaaa-00000U-AA")]);
    assert_eq!(lifecycle(&c, "1aaaaa-00000U-AA").origin, Origin::Bounce);

    feed(
        &mut c,
        "2026-01-05 10:20:00 1aaaaa-00000W-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100",
    );
    assert!(c.get(HOST, id("1aaaaa-00000T-AA")).is_none());
    // Evicted before anyone took it: still handed out once.
    let changed = c.take_changed();
    assert!(changed.iter().any(|lc| lc.id == id("1aaaaa-00000T-AA")));
    assert_eq!(changed.len(), 4);
    let evicted = c.take_evicted();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].state, MessageState::Completed);
    assert!(c.take_evicted().is_empty());

    // Messages in flight are dropped only after going silent; frozen ones
    // stay.
    feed(
        &mut c,
        "2026-01-05 10:30:00 1aaaaa-000011-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100
         2026-01-05 10:30:00 1aaaaa-000011-AA frozen by root
         2026-01-07 12:00:00 1aaaaa-00000X-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100",
    );
    assert!(c.get(HOST, id("1aaaaa-00000V-AA")).is_none());
    assert!(c.get(HOST, id("1aaaaa-00000X-AA")).is_some());
    assert!(c.get(HOST, id("1aaaaa-000011-AA")).is_some());
}

#[test]
fn drain_changed_hands_out_what_take_changed_would() {
    let lines = "2026-01-05 10:00:00 1aaaaa-00000R-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100
         2026-01-05 10:00:01 1aaaaa-00000R-AA => ann@example.net R=dnslookup \
         T=remote_smtp C=\"250 OK\"
         2026-01-05 10:00:02 1aaaaa-00000S-AA <= kim@example.org H=[198.51.100.7] \
         P=esmtp S=100";
    let mut a = correlate(lines);
    let mut b = correlate(lines);
    let mut drained = Vec::new();
    a.drain_changed(|lc| drained.push(lc.clone()));
    assert_eq!(drained, b.take_changed());
    let mut again = 0;
    a.drain_changed(|_| again += 1);
    assert_eq!(again, 0);
}

#[test]
fn hosts_are_kept_apart() {
    let mut c = Correlator::with_config(Zone::Utc, CorrelatorConfig::keep_all());
    let line = b"2026-01-05 10:00:00 1aaaaa-00000Y-AA <= kim@example.org H=[198.51.100.7] \
                 P=esmtp S=100";
    let event = parse_record(LogFile::Main, line);
    c.apply("mx1.example.com", &event);
    c.apply("mx2.example.com", &event);
    assert_eq!(c.len(), 2);
    assert_eq!(
        c.get("mx2.example.com", id("1aaaaa-00000Y-AA"))
            .unwrap()
            .host,
        "mx2.example.com"
    );
}

#[test]
fn a_restored_state_continues_like_one_pass() {
    let lines = "2026-01-05 10:00:00.000 [100] 1aaaaa-00000B-AA <= kim@example.org \
         H=[198.51.100.7] P=esmtp S=100 for ann@example.net bo@example.net
         2026-01-05 10:00:01.000 [102] 1aaaaa-00000B-AA H=mx1.example.net \
         [203.0.113.5]:25 Connection refused
         2026-01-05 10:00:01.000 [101] 1aaaaa-00000B-AA == ann@example.net R=dnslookup \
         T=remote_smtp defer (111): Connection refused
         2026-01-05 10:00:01.500 [101] 1aaaaa-00000B-AA => bo@example.net R=dnslookup \
         T=remote_smtp H=mx2.example.net [203.0.113.6]:25 C=\"250 OK\"
         2026-01-05 11:00:00.000 [200] Start queue run: pid=200
         2026-01-05 11:00:01.000 [201] 1aaaaa-00000B-AA == ann@example.net R=dnslookup \
         T=remote_smtp defer (111): Connection refused
         2026-01-05 11:00:01.000 [201] 1aaaaa-00000B-AA ** ann@example.net: retry timeout \
         exceeded
         2026-01-05 11:00:01.000 [202] 1aaaaa-00000C-AA <= <> R=1aaaaa-00000B-AA \
         U=Debian-exim P=local S=2000
         2026-01-05 11:00:01.100 [201] 1aaaaa-00000B-AA Completed";
    let all: Vec<&str> = lines.lines().collect();
    let one_pass = correlate(lines).into_lifecycles();
    for split in 0..=all.len() {
        let mut first = correlate(&all[..split].join("\n"));
        let _ = first.take_changed();
        let json = serde_json::to_string(&first.save()).unwrap();
        let state: CorrelatorState = serde_json::from_str(&json).unwrap();
        let mut second = Correlator::restore(state).unwrap();
        feed(&mut second, &all[split..].join("\n"));
        assert_eq!(
            second.into_lifecycles(),
            one_pass,
            "split before line {split}"
        );
    }
}
