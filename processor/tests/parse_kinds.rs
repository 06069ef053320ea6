//! One line of every event kind and every field Exim logs, checked through
//! the JSON form (so the stable JSON names are checked too). All values are
//! invented.

use exim_pilot_processor::parse::{parse_record_with, ParseOptions};
use exim_pilot_schema::LogFile;
use serde_json::{json, Value};

/// Parses `line` and checks each `(JSON pointer, expected value)`.
fn check(log: LogFile, line: &str, expected: &[(&str, Value)]) {
    let opts = ParseOptions {
        syslog_year: Some(2025),
    };
    let event = parse_record_with(&opts, log, line.as_bytes());
    let got = serde_json::to_value(&event).unwrap();
    for (pointer, want) in expected {
        assert_eq!(
            got.pointer(pointer),
            Some(want),
            "{pointer} of {line:?}\nparsed: {got:#}"
        );
    }
}

fn main_log(line: &str, expected: &[(&str, Value)]) {
    check(LogFile::Main, line, expected)
}

/// `(JSON pointer, value)` pairs a parsed line must have.
type Expected<'a> = &'a [(&'a str, Value)];

const T: &str = "2025-03-04 05:06:07.089 [4242] 1tAbCd-000000001xY-0aBc";

#[test]
fn arrival_with_every_field() {
    main_log(
        &format!(
            "{T} <= sender@example.com H=mail.example.net (helo.example.net) [192.0.2.1]:4711 \
             I=[198.51.100.2]:25 U=ident P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes \
             DN=\"CN=client.example.net\" SNI=mx.example.org A=plain:alice L K S=1234 M8S=8 \
             RT=1m15s id=abc@example.net T=\"Re: \\\"quoted\\\" subject\" PRDR PRX=203.0.113.9 \
             TFO Ci=4242 DKIM=example.net Q=slow from <alice@example.net> for a@example.org \
             b@example.org"
        ),
        &[
            ("/kind", json!("arrival")),
            ("/time", json!("2025-03-04T05:06:07.089")),
            ("/pid", json!(4242)),
            ("/id", json!("1tAbCd-000000001xY-0aBc")),
            ("/sender", json!("sender@example.com")),
            ("/host/name", json!("mail.example.net")),
            ("/host/helo", json!("helo.example.net")),
            ("/host/ip", json!("192.0.2.1")),
            ("/host/port", json!(4711)),
            ("/interface/ip", json!("198.51.100.2")),
            ("/interface/port", json!(25)),
            ("/user", json!("ident")),
            ("/protocol", json!("esmtpsa")),
            ("/tls/cipher", json!("TLS1.3:TLS_AES_256_GCM_SHA384:256")),
            ("/tls/cert_verified", json!(true)),
            ("/tls/peer_dn", json!("CN=client.example.net")),
            ("/tls/sni", json!("mx.example.org")),
            ("/authenticator", json!("plain")),
            ("/auth_id", json!("alice")),
            ("/pipelining", json!("L")),
            ("/chunking", json!(true)),
            ("/size", json!(1234)),
            ("/mime8", json!(8)),
            ("/receive_time_ms", json!(75_000)),
            ("/message_id_header", json!("abc@example.net")),
            ("/subject", json!("Re: \"quoted\" subject")),
            ("/fields/0", json!({"key": "PRDR", "value": ""})),
            ("/fields/1", json!({"key": "PRX", "value": "203.0.113.9"})),
            ("/fields/2", json!({"key": "TFO", "value": ""})),
            ("/fields/3", json!({"key": "Ci", "value": "4242"})),
            ("/fields/4", json!({"key": "DKIM", "value": "example.net"})),
            ("/fields/5", json!({"key": "Q", "value": "slow"})),
            ("/from_header", json!("alice@example.net")),
            ("/recipients", json!(["a@example.org", "b@example.org"])),
        ],
    );
}

#[test]
fn bounce_arrival_names_its_parent_and_generated_message_id() {
    main_log(
        "2025-03-04 05:06:07 1tAbCe-0000000020a-0aBc <= <> R=1tAbCd-000000001xY-0aBc \
         U=exim P=local S=2000 id*=E1tAbCe@example.org T=\"Mail delivery failed\"",
        &[
            ("/kind", json!("arrival")),
            ("/sender", json!("")),
            ("/bounce_of", json!("1tAbCd-000000001xY-0aBc")),
            ("/message_id_header", json!("E1tAbCe@example.org")),
            ("/message_id_generated", json!(true)),
        ],
    );
}

#[test]
fn fake_reject() {
    main_log(
        &format!("{T} (= a@example.com H=(x) [192.0.2.3] P=esmtp S=10"),
        &[("/kind", json!("fake_reject")), ("/size", json!(10))],
    );
}

#[test]
fn remote_delivery_with_every_field() {
    main_log(
        &format!(
            "{T} => bob@example.org <Bob@Example.org> F=<s@example.com> P=<bounce@example.com> \
             R=dnslookup T=remote_smtp S=2048 H=mx.example.org [2001:db8::25]:25* \
             I=[2001:db8::1]:40000 X=TLS1.2:ECDHE_RSA_AES_128_GCM_SHA256:128 CV=no \
             DN=\"C=XX,CN=mx.example.org\" SNI=mx.example.org A=login L K PRDR TFO DS=yes \
             ST=queued C=\"250- 2048 byte chunk\\\\n250 OK id=1xyz\" QT=3m14s DT=0.046s"
        ),
        &[
            ("/kind", json!("delivery")),
            ("/mark", json!("normal")),
            ("/address", json!("bob@example.org")),
            ("/original", json!("Bob@Example.org")),
            ("/sender", json!("s@example.com")),
            ("/return_path", json!("bounce@example.com")),
            ("/router", json!("dnslookup")),
            ("/transport", json!("remote_smtp")),
            ("/size", json!(2048)),
            ("/host/ip", json!("2001:db8::25")),
            ("/host/port", json!(25)),
            ("/host/reused", json!(true)),
            ("/interface/ip", json!("2001:db8::1")),
            ("/tls/cert_verified", json!(false)),
            ("/tls/peer_dn", json!("C=XX,CN=mx.example.org")),
            ("/tls/sni", json!("mx.example.org")),
            ("/authenticator", json!("login")),
            ("/pipelining", json!(true)),
            ("/chunking", json!(true)),
            ("/prdr", json!(true)),
            ("/fields/0", json!({"key": "TFO", "value": ""})),
            ("/fields/1", json!({"key": "DS", "value": "yes"})),
            ("/fields/2", json!({"key": "ST", "value": "queued"})),
            (
                "/confirmation",
                json!("250- 2048 byte chunk\\n250 OK id=1xyz"),
            ),
            ("/queue_time_ms", json!(194_000)),
            ("/delivery_time_ms", json!(46)),
        ],
    );
}

#[test]
fn every_delivery_mark() {
    for (mark, name) in [
        ("=>", "normal"),
        ("->", "additional"),
        (">>", "cutthrough"),
        ("*>", "suppressed"),
    ] {
        main_log(
            &format!("{T} {mark} x@example.org R=r T=t"),
            &[("/kind", json!("delivery")), ("/mark", json!(name))],
        );
    }
}

#[test]
fn local_delivery_with_parents_and_pseudo_deliveries() {
    main_log(
        &format!(
            "{T} => carol <carol@example.org> (list@example.org, all@example.org) R=local T=mbox"
        ),
        &[
            ("/address", json!("carol")),
            ("/original", json!("carol@example.org")),
            ("/parents", json!(["list@example.org", "all@example.org"])),
        ],
    );
    main_log(
        &format!("{T} => blackhole (RCPT ACL discarded recipients)"),
        &[
            ("/address", json!("blackhole")),
            ("/comment", json!("RCPT ACL discarded recipients")),
        ],
    );
}

#[test]
fn failure_with_reply_at_end_of_data_and_trailing_dt() {
    main_log(
        &format!(
            "{T} ** d@example.org F=<s@example.com> R=dnslookup T=remote_smtp \
             H=mx.example.org [192.0.2.25]:25 I=[192.0.2.2]:5555: SMTP error from remote mail \
             server after end of data: 554 5.7.1 Message rejected: spam DT=2h3m"
        ),
        &[
            ("/kind", json!("failure")),
            ("/interface/port", json!(5555)),
            ("/reply/stage", json!("end of data")),
            ("/reply/code", json!(554)),
            ("/reply/enhanced", json!("5.7.1")),
            ("/reply/text", json!("Message rejected: spam")),
            ("/delivery_time_ms", json!(7_380_000)),
        ],
    );
    main_log(
        &format!("{T} ** e@example.org: retry timeout exceeded"),
        &[
            ("/kind", json!("failure")),
            ("/error", json!("retry timeout exceeded")),
        ],
    );
}

#[test]
fn deferrals_with_errno_text_and_retry_skips() {
    main_log(
        &format!("{T} == f@example.org R=dnslookup T=remote_smtp defer (111): Connection refused"),
        &[
            ("/kind", json!("deferral")),
            ("/errno", json!(111)),
            ("/errno_text", json!("Connection refused")),
        ],
    );
    main_log(
        &format!(
            "{T} == g@example.org R=dnslookup T=remote_smtp defer (-53): retry time not reached \
             for any host for 'example.org'"
        ),
        &[("/errno", json!(-53)), ("/retry_not_reached", json!(true))],
    );
    main_log(
        &format!("{T} == h@example.org routing defer (-51): retry time not reached"),
        &[
            ("/routing", json!(true)),
            ("/retry_not_reached", json!(true)),
        ],
    );
    main_log(
        &format!(
            "{T} == |/usr/bin/prog -x 'a b' <pipe@example.org> R=aliases T=address_pipe defer \
             (0): Child process of address_pipe transport returned 75"
        ),
        &[
            ("/address", json!("|/usr/bin/prog -x 'a b'")),
            ("/original", json!("pipe@example.org")),
            ("/errno", json!(0)),
            (
                "/error",
                json!("Child process of address_pipe transport returned 75"),
            ),
        ],
    );
}

#[test]
fn message_level_lines() {
    let cases: &[(&str, &[(&str, Value)])] = &[
        ("Completed QT=1h", &[("/kind", json!("completed")), ("/queue_time_ms", json!(3_600_000))]),
        ("Frozen (delivery error message)", &[("/kind", json!("frozen")), ("/reason", json!("delivery error message"))]),
        ("frozen by root", &[("/kind", json!("frozen")), ("/by", json!("root"))]),
        ("Unfrozen by errmsg timer", &[("/kind", json!("unfrozen")), ("/by", json!("errmsg timer"))]),
        ("thawed by admin", &[("/kind", json!("unfrozen")), ("/by", json!("admin"))]),
        ("Message is frozen", &[("/kind", json!("skipped_frozen"))]),
        ("removed by root", &[("/kind", json!("removed")), ("/by", json!("root"))]),
        (
            "cancelled by system filter: no thanks",
            &[("/kind", json!("cancelled")), ("/by", json!("system filter")), ("/reason", json!("no thanks"))],
        ),
        (
            "address <x@example.org> marked delivered by root",
            &[("/kind", json!("marked_delivered")), ("/address", json!("x@example.org")), ("/by", json!("root"))],
        ),
        (
            "recipient <y@example.org> added by root",
            &[("/kind", json!("recipient_added")), ("/address", json!("y@example.org"))],
        ),
        ("z@example.org: error ignored", &[("/kind", json!("error_ignored")), ("/address", json!("z@example.org"))]),
        (
            "z@example.org: error ignored: RFC 3461 DSN, failure notify not requested",
            &[("/reason", json!("RFC 3461 DSN, failure notify not requested"))],
        ),
        (
            "no immediate delivery: load average 9.50",
            &[("/kind", json!("no_immediate_delivery")), ("/reason", json!("load average 9.50"))],
        ),
        ("Spool file is locked (another process is handling this message)", &[("/kind", json!("spool_locked"))]),
        (
            "\"a@old.example\" from env-from rewritten as \"a@example.org\" by rule 2",
            &[
                ("/kind", json!("rewrite")),
                ("/from", json!("a@old.example")),
                ("/to", json!("a@example.org")),
                ("/which", json!("env-from")),
                ("/rule", json!(2)),
            ],
        ),
        (
            "H=mx.example.org [192.0.2.25]:25 Connection refused",
            &[("/kind", json!("host_problem")), ("/host/port", json!(25)), ("/text", json!("Connection refused"))],
        ),
        (
            "H=mx.example.org [192.0.2.25]: SMTP error from remote mail server after initial \
             connection: 421 4.3.2 Service not available",
            &[("/kind", json!("host_problem")), ("/reply/code", json!(421)), ("/reply/stage", json!("initial connection"))],
        ),
        (
            "H=mx.example.org [192.0.2.25] X=TLS1.3:TLS_AES_128_GCM_SHA256:128 retry time not reached",
            &[("/kind", json!("host_problem")), ("/retry_not_reached", json!(true)), ("/tls/cipher", json!("TLS1.3:TLS_AES_128_GCM_SHA256:128"))],
        ),
        (
            "H=(client.example.net) [192.0.2.7] size check: large message",
            &[("/kind", json!("note")), ("/host/helo", json!("client.example.net")), ("/text", json!("H=(client.example.net) [192.0.2.7] size check: large message"))],
        ),
        (
            "no IP address found for host mx.example.org",
            &[("/kind", json!("host_lookup")), ("/name", json!("mx.example.org"))],
        ),
        (
            "<|/usr/local/bin/sorter>: sorter_pipe transport output: filed under INBOX",
            &[
                ("/kind", json!("transport_output")),
                ("/address", json!("|/usr/local/bin/sorter")),
                ("/transport", json!("sorter_pipe")),
                ("/text", json!("filed under INBOX")),
            ],
        ),
    ];
    for (body, expected) in cases {
        let mut want = expected.to_vec();
        want.push(("/id", json!("1tAbCd-000000001xY-0aBc")));
        main_log(&format!("{T} {body}"), &want);
    }
}

#[test]
fn rejections_at_every_stage() {
    let cases: &[(&str, &str, Expected)] = &[
        (
            "H=[192.0.2.8]:1234 I=[198.51.100.2]:25 rejected connection in \"connect\" ACL: go away",
            "connect",
            &[("/reason", json!("go away")), ("/interface/port", json!(25))],
        ),
        ("H=(bad) [192.0.2.8] rejected EHLO or HELO bad: blocked", "helo", &[("/reason", json!("blocked"))]),
        ("rejected HELO from [192.0.2.8]: syntactically invalid argument(s): (no argument given)", "helo", &[]),
        (
            "H=(c) [192.0.2.8] rejected MAIL <s@example.com>: Sender verify failed",
            "mail",
            &[("/sender", json!("s@example.com"))],
        ),
        (
            "H=(c) [192.0.2.8] U=someone A=login:bob F=<s@example.com> temporarily rejected RCPT \
             <r@example.org>: greylisted",
            "rcpt",
            &[
                ("/temporary", json!(true)),
                ("/recipient", json!("r@example.org")),
                ("/authenticator", json!("login:bob")),
                ("/fields/0", json!({"key": "U", "value": "someone"})),
            ],
        ),
        ("H=(c) [192.0.2.8] F=<s@example.com> rejected DATA: no", "pre_data", &[]),
        ("H=(c) [192.0.2.8] F=<s@example.com> rejected after DATA: virus", "data", &[("/reason", json!("virus"))]),
        (
            "rejected from <s@example.com> H=(c) [192.0.2.8]: message too big: read=2000 max=1000",
            "data",
            &[("/sender", json!("s@example.com")), ("/reason", json!("message too big: read=2000 max=1000"))],
        ),
        ("H=(c) [192.0.2.8] rejected VRFY x@example.org: no", "other", &[]),
        (
            "rejected MAIL from (c) [192.0.2.8]:4000: no HELO/EHLO given",
            "mail",
            &[("/host/port", json!(4000)), ("/reason", json!("no HELO/EHLO given"))],
        ),
        (
            "rejected MAIL FROM:<s@example.com> U=fred: message too big: size=900 max=100",
            "mail",
            &[
                ("/sender", json!("s@example.com")),
                ("/fields/0", json!({"key": "U", "value": "fred"})),
                ("/reason", json!("message too big: size=900 max=100")),
            ],
        ),
        (
            "rejected MAIL command U=fred: too many messages in one connection",
            "mail",
            &[("/reason", json!("too many messages in one connection"))],
        ),
        (
            "rejected XCLIENT from (c) [192.0.2.8]:4000: mail transaction in progress",
            "other",
            &[("/host/helo", json!("c")), ("/reason", json!("mail transaction in progress"))],
        ),
    ];
    for (body, stage, expected) in cases {
        let mut want = expected.to_vec();
        want.push(("/kind", json!("reject")));
        want.push(("/stage", json!(stage)));
        main_log(&format!("2025-03-04 05:06:07 {body}"), &want);
    }
}

#[test]
fn rejectlog_entry_keeps_its_header_dump_as_detail() {
    check(
        LogFile::Reject,
        "2025-03-04 05:06:07 1tAbCd-000000001xY-0aBc H=(c) [192.0.2.8] F=<s@example.com> \
         rejected after DATA: virus\nEnvelope-from: <s@example.com>\nEnvelope-to: \
         <r@example.org>\nF From: s@example.com\n  Subject: hi",
        &[
            ("/kind", json!("reject")),
            (
                "/detail",
                json!([
                    "Envelope-from: <s@example.com>",
                    "Envelope-to: <r@example.org>",
                    "F From: s@example.com",
                    "  Subject: hi"
                ]),
            ),
        ],
    );
}

#[test]
fn paniclog_entry_spanning_lines_is_one_panic() {
    check(
        LogFile::Panic,
        "2025-03-04 05:06:07 failed to expand \"${x}\"\n  unknown variable name \"x\"",
        &[
            ("/kind", json!("panic")),
            (
                "/text",
                json!("failed to expand \"${x}\"\n  unknown variable name \"x\""),
            ),
        ],
    );
}

#[test]
fn authentication_and_verification_failures() {
    main_log(
        "2025-03-04 05:06:07 H=(c) [192.0.2.9]:5000 login authenticator failed for (c) \
         [192.0.2.9]:5000: 535 Incorrect authentication data (set_id=bob)",
        &[
            ("/kind", json!("auth_failure")),
            ("/set_id", json!("bob")),
            ("/host/port", json!(5000)),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 plain authenticator failed for H=(c) [192.0.2.9]: 535 No",
        &[
            ("/kind", json!("auth_failure")),
            ("/authenticator", json!("plain")),
            ("/host/helo", json!("c")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 H=(c) [192.0.2.9] sender verify fail for <s@example.com>: Unrouteable address",
        &[
            ("/kind", json!("verify_failure")),
            ("/sender", json!(true)),
            ("/address", json!("s@example.com")),
            ("/reason", json!("Unrouteable address")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 recipient verify defer (making callout connection): T=smtp \
         Connection timed out",
        &[
            ("/kind", json!("verify_failure")),
            ("/sender", json!(false)),
            ("/temporary", json!(true)),
            ("/address", json!("")),
            (
                "/reason",
                json!("(making callout connection): T=smtp Connection timed out"),
            ),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 VRFY failed for <nobody@example.com> H=(c) [192.0.2.9]",
        &[
            ("/kind", json!("verify_failure")),
            ("/sender", json!(false)),
            ("/address", json!("nobody@example.com")),
            ("/host/ip", json!("192.0.2.9")),
            ("/reason", json!("VRFY failed")),
        ],
    );
}

#[test]
fn warnings_of_acls_and_of_exim() {
    main_log(
        "2025-03-04 05:06:07 H=(c.example.net) [192.0.2.7] I=[198.51.100.2]:25 U=fred \
         F=<s@example.com> Warning: listed in bl.example.org",
        &[
            ("/kind", json!("warning")),
            ("/host/helo", json!("c.example.net")),
            ("/interface/port", json!(25)),
            ("/fields/0", json!({"key": "U", "value": "fred"})),
            ("/fields/1", json!({"key": "F", "value": "s@example.com"})),
            ("/text", json!("listed in bl.example.org")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 Warning: purging the retry database took 9s",
        &[
            ("/kind", json!("warning")),
            ("/text", json!("purging the retry database took 9s")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 WARNING: weak key in use",
        &[
            ("/kind", json!("warning")),
            ("/text", json!("weak key in use")),
        ],
    );
}

#[test]
fn recipients_discarded_by_an_acl() {
    main_log(
        "2025-03-04 05:06:07 H=(c) [192.0.2.7] F=<s@example.com> RCPT <r@example.org>: \
         discarded by RCPT ACL: spam trap",
        &[
            ("/kind", json!("discard")),
            ("/acl", json!("RCPT")),
            ("/host/ip", json!("192.0.2.7")),
            ("/sender", json!("s@example.com")),
            ("/recipient", json!("r@example.org")),
            ("/reason", json!("spam trap")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 U=fred F=<s@example.com> RCPT <r@example.org>: discarded by MAIL ACL",
        &[
            ("/kind", json!("discard")),
            ("/acl", json!("MAIL")),
            ("/fields/0", json!({"key": "U", "value": "fred"})),
        ],
    );
}

#[test]
fn host_lookups_that_found_nothing() {
    main_log(
        "2025-03-04 05:06:07 no host name found for IP address 2001:db8::25",
        &[
            ("/kind", json!("host_lookup")),
            ("/ip", json!("2001:db8::25")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 no IP address found for host client.example.net (during SMTP \
         connection from [192.0.2.7]:4711 I=[198.51.100.2]:25)",
        &[
            ("/kind", json!("host_lookup")),
            ("/name", json!("client.example.net")),
            ("/host/port", json!(4711)),
            ("/interface/port", json!(25)),
        ],
    );
}

#[test]
fn tls_and_dane_problems() {
    let cases: &[(&str, Expected)] = &[
        (
            "[192.0.2.25] SSL verify error: depth=0 error=certificate has expired \
             cert=/CN=mx.example.org",
            &[("/host/ip", json!("192.0.2.25"))],
        ),
        (
            "DANE attempt failed; TLS connection to mx.example.org [192.0.2.25]: \
             (SSL_connect): handshake failure",
            &[],
        ),
        ("DANE error: TLSA lookup for mx.example.org not DNSSEC", &[]),
        (
            "TLS session: (SSL_connect): unexpected eof: delivering unencrypted to \
             H=mx.example.org [192.0.2.25] (not in hosts_require_tls)",
            &[("/host/name", json!("mx.example.org"))],
        ),
        ("OCSP dates invalid", &[]),
        ("Server certificate revoked; reason: key compromise", &[]),
        ("Required TLS certificate status not received", &[]),
    ];
    for (body, expected) in cases {
        let mut want = expected.to_vec();
        want.push(("/kind", json!("tls_problem")));
        want.push(("/text", json!(body)));
        main_log(&format!("{T} {body}"), &want);
    }
}

#[test]
fn dane_verified_certificate() {
    main_log(
        &format!(
            "{T} => r@example.org R=dnslookup T=remote_smtp H=mx.example.org [192.0.2.25] \
             X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 OK\""
        ),
        &[
            ("/tls/cert_verified", json!(true)),
            ("/tls/dane", json!(true)),
        ],
    );
}

#[test]
fn smtp_connection_events() {
    let cases: &[(&str, &[(&str, Value)])] = &[
        (
            "SMTP connection from [192.0.2.10]:1111 I=[198.51.100.2]:25 (TCP/IP connection count = 3)",
            &[("/what", json!("connect")), ("/connection_count", json!(3))],
        ),
        (
            "SMTP connection from (c) [192.0.2.10]:1111 I=[198.51.100.2]:25 D=8s closed by QUIT",
            &[("/what", json!("close")), ("/duration_ms", json!(8000)), ("/text", json!("closed by QUIT"))],
        ),
        (
            "SMTP connection from (c) [192.0.2.10] lost while reading message data",
            &[("/what", json!("lost"))],
        ),
        ("SMTP command timeout on connection from (c) [192.0.2.10]", &[("/what", json!("timeout"))]),
        (
            "no MAIL in SMTP connection from (c) [192.0.2.10] D=1s C=EHLO,QUIT",
            &[("/what", json!("no_mail")), ("/commands", json!("EHLO,QUIT"))],
        ),
        (
            "H=(c) [192.0.2.10] incomplete transaction (QUIT) from <s@example.com>",
            &[("/what", json!("incomplete_transaction")), ("/sender", json!("s@example.com"))],
        ),
        (
            "SMTP protocol synchronization error (input sent without waiting for greeting): \
             rejected connection from H=[192.0.2.10] input=\"EHLO x\\r\\n\"",
            &[("/what", json!("sync_error")), ("/command", json!("EHLO x\r\n"))],
        ),
        (
            "SMTP call from (c) [192.0.2.10] dropped: too many syntax or protocol errors (last command was \"x\")",
            &[("/what", json!("dropped"))],
        ),
        (
            "Connection from [192.0.2.10] refused: too many connections",
            &[("/what", json!("limit")), ("/host/ip", json!("192.0.2.10"))],
        ),
        (
            "TLS error on connection from (c) [192.0.2.10] (SSL_accept): timed out",
            &[("/what", json!("tls_error")), ("/text", json!("(SSL_accept): timed out"))],
        ),
        (
            "ETRN #example.net received from (c) [192.0.2.10]",
            &[("/what", json!("etrn")), ("/command", json!("ETRN #example.net")), ("/host/ip", json!("192.0.2.10"))],
        ),
        (
            "ATRN 'example.net' received from relay.example.net [192.0.2.10]",
            &[("/what", json!("etrn")), ("/command", json!("ATRN 'example.net'")), ("/host/name", json!("relay.example.net"))],
        ),
        (
            "H=[192.0.2.10] dropped by 'connect' ACL: listed locally",
            &[("/what", json!("dropped")), ("/text", json!("dropped by 'connect' ACL: listed locally"))],
        ),
    ];
    for (body, expected) in cases {
        let mut want = expected.to_vec();
        want.push(("/kind", json!("smtp")));
        main_log(&format!("2025-03-04 05:06:07 {body}"), &want);
    }
}

#[test]
fn process_lines() {
    main_log(
        "2025-03-04 05:06:07 Start queue run: pid=77 -qf",
        &[
            ("/kind", json!("queue_run")),
            ("/start", json!(true)),
            ("/runner_pid", json!(77)),
            ("/args", json!("-qf")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 End queue run: pid=77",
        &[("/start", json!(false))],
    );
    main_log(
        "2025-03-04 05:06:07 Start 'bulk' queue run: pid=78",
        &[
            ("/kind", json!("queue_run")),
            ("/queue", json!("bulk")),
            ("/runner_pid", json!(78)),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 Start ODMR queue run: pid=79 -qq -Rr @(example.net)",
        &[
            ("/kind", json!("queue_run")),
            ("/fields/0", json!({"key": "ODMR", "value": ""})),
            ("/args", json!("-qq -Rr @(example.net)")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 Start of the nightly queue run",
        &[("/kind", json!("note"))],
    );
    main_log(
        "2025-03-04 05:06:07 exim 4.98 daemon started: pid=9, -q30m, listening for SMTP on port 25",
        &[
            ("/kind", json!("daemon_started")),
            ("/version", json!("4.98")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 cwd=/var/spool/exim 3 args: /usr/sbin/exim -bd \"-q 1h\"",
        &[
            ("/kind", json!("arguments")),
            ("/cwd", json!("/var/spool/exim")),
            ("/argc", json!(3)),
            ("/args", json!(["/usr/sbin/exim", "-bd", "\"-q 1h\""])),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 1tAbCd-000000001xY-0aBc DKIM: d=example.com s=sel c=relaxed/relaxed \
         a=rsa-sha256 b=2048 [verification succeeded]",
        &[
            ("/kind", json!("dkim")),
            ("/fields/0", json!({"key": "d", "value": "example.com"})),
            ("/text", json!("[verification succeeded]")),
        ],
    );
}

#[test]
fn unparsed_records_keep_their_bytes() {
    check(
        LogFile::Main,
        "not a log line",
        &[
            ("/kind", json!("unparsed")),
            ("/raw", json!("not a log line")),
        ],
    );
    let raw = b"\xff\xfe no timestamp";
    let event = exim_pilot_processor::parse::parse_record(LogFile::Main, raw);
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["kind"], "unparsed");
    let bytes: Vec<u8> = serde_json::from_value(json["raw"].clone()).unwrap();
    assert_eq!(bytes, raw);
}

#[test]
fn values_that_do_not_read_are_kept_as_invalid_fields() {
    // Odd values (a custom logwrite, a patched Exim, a damaged line) keep
    // the record's kind; each is kept as written and marked invalid.
    main_log(
        &format!(
            "{T} <= s@example.com H=(c) [192.0.2.1]:smtp I=[198.51.100.2]:submission \
             S=12k RT=soon R=not-an-id CV=maybe P=esmtp"
        ),
        &[
            ("/kind", json!("arrival")),
            ("/host/ip", json!("192.0.2.1")),
            ("/host/helo", json!("c")),
            ("/protocol", json!("esmtp")),
            (
                "/fields/0",
                json!({"key": "H", "value": "(c) [192.0.2.1]:smtp", "invalid": true}),
            ),
            (
                "/fields/1",
                json!({"key": "I", "value": "[198.51.100.2]:submission", "invalid": true}),
            ),
            (
                "/fields/2",
                json!({"key": "S", "value": "12k", "invalid": true}),
            ),
            (
                "/fields/3",
                json!({"key": "RT", "value": "soon", "invalid": true}),
            ),
            (
                "/fields/4",
                json!({"key": "R", "value": "not-an-id", "invalid": true}),
            ),
            (
                "/fields/5",
                json!({"key": "CV", "value": "maybe", "invalid": true}),
            ),
        ],
    );
    main_log(
        &format!("{T} => r@example.org R=r T=t S=large QT=1x DT=2s"),
        &[
            ("/kind", json!("delivery")),
            ("/delivery_time_ms", json!(2000)),
            (
                "/fields/0",
                json!({"key": "S", "value": "large", "invalid": true}),
            ),
            (
                "/fields/1",
                json!({"key": "QT", "value": "1x", "invalid": true}),
            ),
        ],
    );
    main_log(
        &format!("{T} Completed QT=later"),
        &[
            ("/kind", json!("completed")),
            (
                "/fields/0",
                json!({"key": "QT", "value": "later", "invalid": true}),
            ),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 Start queue run: pid=runner-7 -qf",
        &[
            ("/kind", json!("queue_run")),
            (
                "/fields/0",
                json!({"key": "pid", "value": "runner-7", "invalid": true}),
            ),
            ("/args", json!("-qf")),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 SMTP connection from (c) [192.0.2.1]:4711 D=ages closed by QUIT",
        &[
            ("/kind", json!("smtp")),
            ("/what", json!("close")),
            (
                "/fields/0",
                json!({"key": "D", "value": "ages", "invalid": true}),
            ),
        ],
    );
    main_log(
        "2025-03-04 05:06:07 H=(c) [192.0.2.1]:high rejected RCPT <r@example.org>: no",
        &[
            ("/kind", json!("reject")),
            ("/host/ip", json!("192.0.2.1")),
            (
                "/fields/0",
                json!({"key": "H", "value": "(c) [192.0.2.1]:high", "invalid": true}),
            ),
        ],
    );
    main_log(
        &format!("{T} == r@example.org R=r T=t defer (-53) H=relay.example.net [relay-ip]:25 I=[lo0]:25: retry time not reached"),
        &[
            ("/kind", json!("deferral")),
            ("/host/name", json!("relay.example.net")),
            ("/host/ip", json!("relay-ip")),
            ("/host/port", json!(25)),
            (
                "/fields/0",
                json!({"key": "H", "value": "relay.example.net [relay-ip]:25", "invalid": true}),
            ),
            ("/fields/1", json!({"key": "I", "value": "[lo0]:25", "invalid": true})),
            ("/retry_not_reached", json!(true)),
        ],
    );
    // A field Exim has no slot for is kept too, but is not invalid.
    main_log(
        &format!("{T} <= s@example.com PRX=192.0.2.99"),
        &[("/fields/0", json!({"key": "PRX", "value": "192.0.2.99"}))],
    );
}
