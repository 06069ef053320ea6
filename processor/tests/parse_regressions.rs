//! Regression tests: lines that other Exim log tools read wrongly, each
//! test named after its input. Addresses and IPs are invented.

use exim_pilot_processor::parse::{parse_record, parse_record_with, ParseOptions};
use exim_pilot_schema::event::{DeliveryMark, Event, EventKind, RejectStage, SmtpKind};
use exim_pilot_schema::LogFile;

fn main_line(line: &str) -> Event<'_> {
    parse_record(LogFile::Main, line.as_bytes())
}

fn time(e: &Event<'_>) -> String {
    e.time.expect("a time").to_string()
}

fn field<'a>(fields: &'a [exim_pilot_schema::event::Field<'_>], key: &str) -> Option<&'a str> {
    fields.iter().find(|f| f.key == key).map(|f| &*f.value)
}

#[test]
fn new_format_ids_on_arrival_delivery_and_completed() {
    let lines = [
        "2024-07-05 09:14:02 1sPf10-00000000Aid-00JP <= alice@example.net H=mx1.example.org \
         [192.0.2.10] P=esmtps S=2480 id=note-1@example.net",
        "2024-07-05 09:14:03 1sPf10-00000000Aid-00JP => bob@example.com R=dnslookup \
         T=remote_smtp H=mx.example.com [198.51.100.7] C=\"250 2.0.0 queued as 4Xk1\"",
        "2024-07-05 09:14:03 1sPf10-00000000Aid-00JP Completed",
    ];
    let events: Vec<_> = lines.iter().map(|l| main_line(l)).collect();
    for e in &events {
        let id = e.id.expect("an id");
        assert_eq!(id.as_str(), "1sPf10-00000000Aid-00JP");
        assert!(id.is_new_format());
    }
    let EventKind::Arrival(a) = &events[0].kind else {
        panic!("{:?}", events[0])
    };
    assert_eq!(a.sender, "alice@example.net");
    assert_eq!(a.size, Some(2480));
    assert_eq!(a.protocol.as_deref(), Some("esmtps"));
    assert_eq!(a.message_id_header.as_deref(), Some("note-1@example.net"));
    let host = a.host.as_ref().unwrap();
    assert_eq!(host.name.as_deref(), Some("mx1.example.org"));
    assert_eq!(host.ip.as_deref(), Some("192.0.2.10"));

    let EventKind::Delivery { mark, delivery } = &events[1].kind else {
        panic!()
    };
    assert_eq!(*mark, DeliveryMark::Normal);
    assert_eq!(delivery.address, "bob@example.com");
    assert_eq!(
        delivery.confirmation.as_deref(),
        Some("250 2.0.0 queued as 4Xk1")
    );
    assert_eq!(delivery.router.as_deref(), Some("dnslookup"));
    assert_eq!(delivery.transport.as_deref(), Some("remote_smtp"));
    assert!(matches!(
        events[2].kind,
        EventKind::Completed {
            queue_time_ms: None,
            ..
        }
    ));
}

#[test]
fn millisecond_timestamp_and_pid_before_old_format_id() {
    let e = main_line(
        "2020-10-29 21:40:17.266 [30412] 1kYFeb-0007uW-0p => carol@example.com R=dnslookup \
         T=remote_smtp H=mx.example.com [203.0.113.25] C=\"250 OK\"",
    );
    assert_eq!(time(&e), "2020-10-29T21:40:17.266");
    assert_eq!(e.pid, Some(30412));
    assert_eq!(e.id.unwrap().as_str(), "1kYFeb-0007uW-0p");
    let EventKind::Delivery { delivery, .. } = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(delivery.confirmation.as_deref(), Some("250 OK"));
    assert_eq!(
        delivery.host.as_ref().unwrap().ip.as_deref(),
        Some("203.0.113.25")
    );
}

#[test]
fn zone_offset_deferral_greylisted_at_rcpt() {
    let e = main_line(
        "2023-10-11 14:03:27 +0200 1qqXvz-0000Ze-0X == dave@example.org R=dnslookup \
         T=remote_smtp defer (-44) H=mx.example.org [192.0.2.44]: SMTP error from remote mail \
         server after RCPT TO:<dave@example.org>: 451 4.7.1 Greylisted, try again later",
    );
    assert_eq!(time(&e), "2023-10-11T12:03:27.000Z");
    assert!(e.time.unwrap().utc);
    let EventKind::Deferral(d) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(d.address, "dave@example.org");
    assert_eq!(d.errno, Some(-44));
    assert_eq!(d.host.as_ref().unwrap().ip.as_deref(), Some("192.0.2.44"));
    let reply = d.reply.as_ref().unwrap();
    assert_eq!(reply.command(), Some("RCPT TO"));
    assert_eq!(reply.stage.as_deref(), Some("RCPT TO:<dave@example.org>"));
    assert_eq!(reply.code, Some(451));
    assert_eq!(reply.enhanced.as_deref(), Some("4.7.1"));
    assert_eq!(reply.text, "Greylisted, try again later");
}

#[test]
fn syslog_tab_separated_dovecot_login_authenticator_failed() {
    let line = "Oct 22 05:12:48 mail2 exim[31044]: dovecot_login\tauthenticator failed for \
                (User) [192.0.2.37]: 535 Incorrect authentication data (set_id=gina@example.net)";
    let opts = ParseOptions {
        syslog_year: Some(2023),
    };
    let e = parse_record_with(&opts, LogFile::Main, line.as_bytes());
    assert_eq!(time(&e), "2023-10-22T05:12:48.000");
    let syslog = e.syslog.as_ref().unwrap();
    assert_eq!(syslog.host, "mail2");
    assert_eq!(syslog.program, "exim");
    assert_eq!(syslog.pid, Some(31044));
    assert_eq!(e.pid, Some(31044));
    let EventKind::AuthFailure(a) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(a.authenticator, "dovecot_login");
    assert_eq!(a.host.helo.as_deref(), Some("User"));
    assert_eq!(a.host.ip.as_deref(), Some("192.0.2.37"));
    assert_eq!(a.code, Some(535));
    assert_eq!(a.text, "Incorrect authentication data");
    assert_eq!(a.set_id.as_deref(), Some("gina@example.net"));
}

#[test]
fn smtp_protocol_error_auth_login_without_port_or_interface() {
    let e = main_line(
        "2016-05-17 07:03:51 SMTP protocol error in \"AUTH LOGIN\" H=(winbox-pc) [192.0.2.61] \
         AUTH command used when not advertised",
    );
    let EventKind::Smtp(s) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(s.what, SmtpKind::ProtocolError);
    assert_eq!(s.command.as_deref(), Some(&b"AUTH LOGIN"[..]));
    let host = s.host.as_ref().unwrap();
    assert_eq!(host.helo.as_deref(), Some("winbox-pc"));
    assert_eq!(host.ip.as_deref(), Some("192.0.2.61"));
    assert_eq!(host.port, None);
    assert!(s.interface.is_none());
    assert_eq!(
        s.text.as_deref(),
        Some("AUTH command used when not advertised")
    );
}

#[test]
fn fixed_login_authenticator_failed_interface_port_587_keeps_535() {
    let e = main_line(
        "2017-04-13 11:02:09 fixed_login authenticator failed for bad.example.net \
         [192.0.2.90]:54412 I=[198.51.100.5]:587: 535 Incorrect authentication data \
         (set_id=hank@example.org)",
    );
    let EventKind::AuthFailure(a) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(a.authenticator, "fixed_login");
    assert_eq!(a.host.name.as_deref(), Some("bad.example.net"));
    assert_eq!(a.host.helo, None);
    assert_eq!(a.host.ip.as_deref(), Some("192.0.2.90"));
    assert_eq!(a.host.port, Some(54412));
    let i = a.interface.as_ref().unwrap();
    assert_eq!((&*i.ip, i.port), ("198.51.100.5", Some(587)));
    assert_eq!(a.code, Some(535));
    assert_eq!(a.set_id.as_deref(), Some("hank@example.org"));
}

#[test]
fn rejected_rcpt_relay_not_permitted_with_tls_cipher_and_cv_no() {
    let e = main_line(
        "2022-04-22 01:47:36 H=(qwXz81) [192.0.2.145] \
         X=TLS1.2:ECDHE_ECDSA_AES_256_GCM_SHA384:256 CV=no F=<ivan@example.com> rejected RCPT \
         <judy@example.org>: relay not permitted",
    );
    let EventKind::Reject(r) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(r.stage, RejectStage::Rcpt);
    assert!(!r.temporary);
    assert_eq!(r.recipient.as_deref(), Some("judy@example.org"));
    assert_eq!(r.sender.as_deref(), Some("ivan@example.com"));
    assert_eq!(r.reason, "relay not permitted");
    assert_eq!(
        r.tls.cipher.as_deref(),
        Some("TLS1.2:ECDHE_ECDSA_AES_256_GCM_SHA384:256")
    );
    assert_eq!(r.tls.cert_verified, Some(false));
    assert_eq!(r.host.as_ref().unwrap().helo.as_deref(), Some("qwXz81"));
}

#[test]
fn login_authenticator_failed_without_set_id() {
    let e = main_line(
        "2024-02-15 04:12:08 login authenticator failed for (Xk7pQ2) [192.0.2.201]: 535 \
         Incorrect authentication data",
    );
    let EventKind::AuthFailure(a) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(a.authenticator, "login");
    assert_eq!(a.host.helo.as_deref(), Some("Xk7pQ2"));
    assert_eq!(a.code, Some(535));
    assert_eq!(a.text, "Incorrect authentication data");
    assert_eq!(a.set_id, None);
}

#[test]
fn arrival_with_chunking_m8s_subject_and_recipient() {
    let e = main_line(
        "2024-12-03 10:00:00 1tIPhI-000000005Cl-00mO <= mia@example.com H=out.example.com \
         [198.51.100.60] P=esmtps X=TLS1.2:ECDHE_RSA_AES_128_GCM_SHA256:128 CV=no K S=18234 \
         M8S=8 id=0102abc@example.com T=\"Quarterly report\" for nick@example.org",
    );
    let EventKind::Arrival(a) = &e.kind else {
        panic!("{e:?}")
    };
    assert!(a.chunking);
    assert_eq!(a.mime8, Some(8));
    assert_eq!(a.subject.as_deref(), Some("Quarterly report"));
    assert_eq!(a.recipients, ["nick@example.org"]);
    assert_eq!(a.size, Some(18234));
    assert_eq!(a.tls.cert_verified, Some(false));
    assert_eq!(a.message_id_header.as_deref(), Some("0102abc@example.com"));
    assert!(a.fields.is_empty(), "{:?}", a.fields);
}

#[test]
fn smtp_syntax_error_with_octal_escapes_of_a_tls_hello() {
    let e = main_line(
        r#"2026-08-30 21:17:05.352 [15101] SMTP syntax error in "\026\003\001\002?\001\374\003\003?\300+\300/" H=scan.example.net [192.0.2.59]:54222 I=[198.51.100.103]:25 Ci=15101 NUL character(s) present (shown as '?')"#,
    );
    assert_eq!(e.pid, Some(15101));
    let EventKind::Smtp(s) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(s.what, SmtpKind::SyntaxError);
    let command = s.command.as_deref().unwrap();
    assert_eq!(
        command,
        [0x16, 0x03, 0x01, 0x02, b'?', 0x01, 0xfc, 0x03, 0x03, b'?', 0xc0, b'+', 0xc0, b'/']
    );
    let host = s.host.as_ref().unwrap();
    assert_eq!(host.name.as_deref(), Some("scan.example.net"));
    assert_eq!(host.port, Some(54222));
    let i = s.interface.as_ref().unwrap();
    assert_eq!((&*i.ip, i.port), ("198.51.100.103", Some(25)));
    assert_eq!(field(&s.fields, "Ci"), Some("15101"));
    assert_eq!(
        s.text.as_deref(),
        Some("NUL character(s) present (shown as '?')")
    );
}

#[test]
fn syslog_wrapped_line_with_exim_date_which_wins() {
    let line = "May 23 10:02:11 mail exim[2210]: 2019-05-23 10:02:11 1hTkY7-0000Ze-04 <= \
                rita@example.net H=(desk) [198.51.100.31] P=esmtpa A=plain:rita S=1844";
    let opts = ParseOptions {
        syslog_year: Some(2024),
    };
    let e = parse_record_with(&opts, LogFile::Main, line.as_bytes());
    assert_eq!(time(&e), "2019-05-23T10:02:11.000");
    assert_eq!(e.syslog.as_ref().unwrap().host, "mail");
    assert_eq!(e.id.unwrap().as_str(), "1hTkY7-0000Ze-04");
    let EventKind::Arrival(a) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(a.authenticator.as_deref(), Some("plain"));
    assert_eq!(a.auth_id.as_deref(), Some("rita"));
    assert_eq!(a.protocol.as_deref(), Some("esmtpa"));
    assert_eq!(a.size, Some(1844));
}

#[test]
fn ipv6_remote_host_with_port() {
    let e = main_line(
        "2013-05-15 09:30:45 1UcY2m-0001Kn-02 => tom@example.org R=dnslookup T=remote_smtp \
         H=mx6.example.org [2001:db8:20::25]:25 C=\"250 OK\"",
    );
    let EventKind::Delivery { delivery, .. } = &e.kind else {
        panic!("{e:?}")
    };
    let host = delivery.host.as_ref().unwrap();
    assert_eq!(host.name.as_deref(), Some("mx6.example.org"));
    assert_eq!(host.ip.as_deref(), Some("2001:db8:20::25"));
    assert_eq!(host.port, Some(25));
}
