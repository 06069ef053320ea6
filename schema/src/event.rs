//! Typed events: what one Exim log record says.
//!
//! The parser in the processor crate turns one raw record into one
//! [`Event`]. Text fields borrow from the record where they can (`Cow`), so
//! parsing allocates only where Exim's escapes must be decoded. Every event
//! serialises to a JSON object with a `kind` field naming its kind; the field
//! names below are the stable names of that JSON form.
//!
//! Durations (`QT=`, `DT=`, `RT=`, `D=`) are given in milliseconds, sizes in
//! bytes. Text is UTF-8: a byte sequence in a classified record that is not
//! UTF-8 is replaced by U+FFFD in the event, and the raw record (which every
//! caller keeps next to the event) holds the original bytes. A record that
//! cannot be classified keeps its bytes in [`EventKind::Unparsed`].
//! A value the parser could not read into its typed slot (a size that is
//! not a number, a port that is a service name, a duration in a unit Exim
//! does not write) is kept as text in the event's `fields` under the name
//! Exim gave it, marked [`Field::invalid`]: the record keeps its kind, the
//! slot stays empty, and nothing written is dropped.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{LogTime, MessageId};

/// Text borrowed from the record, or owned after decoding.
pub type Text<'a> = Cow<'a, str>;

/// Bytes borrowed from the record, or owned after decoding escapes. In JSON
/// they are a string when they are UTF-8 and an array of numbers otherwise.
pub type Bytes<'a> = Cow<'a, [u8]>;

/// One parsed log record.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Event<'a> {
    /// Exim's timestamp (or the syslog stamp when Exim's is absent).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time: Option<LogTime>,
    /// The process id (`+pid` log selector, or the syslog `exim[pid]`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    /// The message id the record is about, when it names one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<MessageId>,
    /// The syslog wrapping of the record, when it came through syslog.
    /// Boxed: most logs are read from files, and a small event is cheap
    /// to move.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub syslog: Option<Box<Syslog<'a>>>,
    /// What the record says.
    #[serde(flatten, borrow)]
    pub kind: EventKind<'a>,
}

/// The syslog envelope around an Exim line.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Syslog<'a> {
    /// The host name syslog wrote.
    #[serde(borrow)]
    pub host: Text<'a>,
    /// The program tag (`exim`, `exim4`).
    #[serde(borrow)]
    pub program: Text<'a>,
    /// The pid in the tag, `exim[1234]`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    /// The record's time is this wrapping's RFC 3164 stamp (no Exim stamp
    /// followed it), which carries no year: the parser chose the year.
    /// Readers use it to date a log that runs past New Year; it is not
    /// part of the event's JSON.
    #[serde(skip)]
    pub yearless: bool,
}

/// A host as Exim logs it in `H=`: `name (helo) [ip]:port`, every part
/// optional. IPs stay text so that scoped IPv6 addresses and odd values
/// are kept as written; when the address is not shaped like one, or the
/// port is not a number, the event also keeps the whole `H=` text as an
/// invalid [`Field`].
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct HostAddr<'a> {
    /// The host name (looked up, or the name a router chose).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub name: Option<Text<'a>>,
    /// The HELO/EHLO name the client gave, from `(helo)`.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub helo: Option<Text<'a>>,
    /// The IP address from `[ip]`.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub ip: Option<Text<'a>>,
    /// The port from `[ip]:port`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<u16>,
    /// The ident (RFC 1413) user, from `U=` or `user@` before the host.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub ident: Option<Text<'a>>,
    /// `*` after the host: the connection was reused (continued delivery).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub reused: bool,
}

/// The local end of a connection, `I=[ip]:port`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Interface<'a> {
    /// The local IP address.
    #[serde(borrow)]
    pub ip: Text<'a>,
    /// The local port.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<u16>,
}

/// TLS details: `X=` cipher, `CV=` certificate verified, `DN=`, `SNI=`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Tls<'a> {
    /// The cipher suite, e.g. `TLS1.3:ECDHE_...:256`.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub cipher: Option<Text<'a>>,
    /// `CV=yes`/`CV=no`: whether the peer certificate was verified.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cert_verified: Option<bool>,
    /// The peer certificate's distinguished name.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub peer_dn: Option<Text<'a>>,
    /// The server name indication sent or received.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub sni: Option<Text<'a>>,
    /// `CV=dane`: the peer certificate was verified through DANE (TLSA
    /// records); `cert_verified` is then true as well.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub dane: bool,
}

impl Tls<'_> {
    /// True when no TLS field was present.
    pub fn is_empty(&self) -> bool {
        self.cipher.is_none()
            && self.cert_verified.is_none()
            && self.peer_dn.is_none()
            && self.sni.is_none()
            && !self.dane
    }
}

/// What a remote server answered, taken apart: the SMTP stage it answered
/// (`RCPT TO:<x>`, `end of data`, `initial connection`...), the reply code,
/// the RFC 3463 enhanced status code and the text. Multi-line replies keep
/// their lines joined with `\n`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct SmtpReply<'a> {
    /// The command or phase the reply answered, as Exim wrote it after
    /// `after` (e.g. `RCPT TO:<bob@example.com>`, `end of data`).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub stage: Option<Text<'a>>,
    /// The three-digit reply code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<u16>,
    /// The enhanced status code, e.g. `5.1.1`.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub enhanced: Option<Text<'a>>,
    /// The reply text after the codes.
    #[serde(borrow)]
    pub text: Text<'a>,
}

impl SmtpReply<'_> {
    /// The SMTP command of the stage without its argument: `RCPT TO` for
    /// `RCPT TO:<bob@example.com>`, `MAIL FROM` for `MAIL FROM:<a@b> SIZE=10`,
    /// and the whole stage for phases such as `end of data`.
    pub fn command(&self) -> Option<&str> {
        let stage = self.stage.as_deref()?;
        let stage = stage.strip_prefix("pipelined ").unwrap_or(stage);
        Some(match stage.find(':') {
            Some(colon) => &stage[..colon],
            None => stage,
        })
    }
}

/// A field Exim logged that the parser has no slot for, or whose value
/// it could not read into its slot; kept, never dropped.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Field<'a> {
    /// The field name before `=` (or the bare flag name).
    #[serde(borrow)]
    pub key: Text<'a>,
    /// The value after `=`, decoded; empty for a bare flag.
    #[serde(borrow)]
    pub value: Text<'a>,
    /// True when the field has a typed slot in the event but its value did
    /// not read as that type (`S=` that is not a number, `H=` whose port
    /// is not one, `QT=` that is not a duration): `value` is the text as
    /// written and the slot is left empty, or holds the parts that did
    /// read (the host name and address of such an `H=`).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub invalid: bool,
}

impl<'a> Field<'a> {
    /// A field from its name and value.
    pub fn new(key: impl Into<Text<'a>>, value: impl Into<Text<'a>>) -> Field<'a> {
        Field {
            key: key.into(),
            value: value.into(),
            invalid: false,
        }
    }

    /// A field whose value did not read into its typed slot (see
    /// [`Field::invalid`](Field#structfield.invalid)).
    pub fn invalid(key: impl Into<Text<'a>>, value: impl Into<Text<'a>>) -> Field<'a> {
        Field {
            invalid: true,
            ..Field::new(key, value)
        }
    }
}

/// An arrival, `<=` (or a fake reject, `(=`).
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Arrival<'a> {
    /// The envelope sender; empty for the null sender `<>` (bounces).
    #[serde(borrow)]
    pub sender: Text<'a>,
    /// `R=` on an arrival: the message this bounce or warning is about.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bounce_of: Option<MessageId>,
    /// `H=`: the sending host.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`: the local interface.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// `U=`: the local user who submitted, or the ident of the sender.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub user: Option<Text<'a>>,
    /// `P=`: the protocol (`esmtps`, `esmtpa`, `local`...).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub protocol: Option<Text<'a>>,
    /// `A=`: the authenticator name.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub authenticator: Option<Text<'a>>,
    /// `A=name:id`: the authenticated id.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub auth_id: Option<Text<'a>>,
    /// `A=...:id` with `AUTH=` sender, when logged.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub auth_sender: Option<Text<'a>>,
    /// `X=`, `CV=`, `DN=`, `SNI=`.
    #[serde(skip_serializing_if = "Tls::is_empty", default, borrow)]
    pub tls: Tls<'a>,
    /// `S=`: the message size in bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    /// `id=`: the Message-ID header.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub message_id_header: Option<Text<'a>>,
    /// `id*=`: Exim made up the Message-ID header itself.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub message_id_generated: bool,
    /// `T=`: the subject.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub subject: Option<Text<'a>>,
    /// `from <addr>`: the From: header address (`received_sender`).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub from_header: Option<Text<'a>>,
    /// `for a b c`: the envelope recipients (`received_recipients`).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub recipients: Vec<Text<'a>>,
    /// `RT=`: time taken to receive, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub receive_time_ms: Option<u64>,
    /// `K`: CHUNKING (BDAT) was used.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub chunking: bool,
    /// `L`/`L-`: PIPELINING was used (`L-`: advertised but not used).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub pipelining: Option<Text<'a>>,
    /// `M8S=`: the 8BITMIME value the client gave.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mime8: Option<u8>,
    /// Other fields (`PRX=`, `TFO`, `PRDR`, `Ci=`, `SZ=`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// The delivery marks Exim writes for a successful delivery.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMark {
    /// `=>`: a normal delivery.
    #[default]
    Normal,
    /// `->`: a further address delivered in the same transport run.
    Additional,
    /// `>>`: a cutthrough delivery made during reception.
    Cutthrough,
    /// `*>`: a delivery suppressed by `-N` or `queue_only`/`fakedelivery`.
    Suppressed,
}

/// A delivery result line: `=>`, `->`, `>>`, `*>`, `**` or `==`.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Delivery<'a> {
    /// The address as logged: a mailbox, a local part (local deliveries
    /// log `user <user@domain>`), a pipe `|cmd` or a file path.
    #[serde(borrow)]
    pub address: Text<'a>,
    /// `<original@address>`: the envelope recipient this address came
    /// from, when it differs from the address delivered to.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub original: Option<Text<'a>>,
    /// `(parent, grandparent)`: the intermediate addresses between
    /// `address` and `original` (`+all_parents`), innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub parents: Vec<Text<'a>>,
    /// `F=`: the envelope sender.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub sender: Option<Text<'a>>,
    /// `P=`: the return path, when it differs from the sender or is logged.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub return_path: Option<Text<'a>>,
    /// `R=`: the router.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub router: Option<Text<'a>>,
    /// `T=`: the transport.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub transport: Option<Text<'a>>,
    /// `H=`: the remote host.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`: the local interface of the outgoing connection.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// `X=`, `CV=`, `DN=`, `SNI=`.
    #[serde(skip_serializing_if = "Tls::is_empty", default, borrow)]
    pub tls: Tls<'a>,
    /// `A=`: the client authenticator used towards the remote host.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub authenticator: Option<Text<'a>>,
    /// `S=`: bytes sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    /// `C=`: the remote server's confirmation reply.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub confirmation: Option<Text<'a>>,
    /// `QT=`: time on queue so far, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queue_time_ms: Option<u64>,
    /// `DT=`: time the delivery took, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delivery_time_ms: Option<u64>,
    /// `defer (errno)` / the errno of a failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errno: Option<i32>,
    /// The system's text for a positive errno, `defer (111): Connection
    /// refused`.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub errno_text: Option<Text<'a>>,
    /// `routing defer`: the router, not a transport, deferred the address.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub routing: bool,
    /// The error says `retry time not reached`: no connection was tried
    /// (`retry time not reached for any host` on a deferral).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub retry_not_reached: bool,
    /// The remark of a pseudo-delivery: `=> blackhole (RCPT ACL discarded
    /// recipients)` has address `blackhole` and this remark.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub comment: Option<Text<'a>>,
    /// The error text after the fields (failures and deferrals).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub error: Option<Text<'a>>,
    /// The remote reply taken apart from `error`, when it holds one.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub reply: Option<SmtpReply<'a>>,
    /// `K`: CHUNKING was used.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub chunking: bool,
    /// `L`: PIPELINING was used.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub pipelining: bool,
    /// `PRDR`: per-recipient data response was used.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub prdr: bool,
    /// Other fields.
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// The SMTP phase a rejection happened in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectStage {
    /// The connect ACL, or a refusal before the greeting.
    Connect,
    /// `HELO`/`EHLO`.
    Helo,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// `DATA`/`BDAT` before the message body.
    PreData,
    /// After the message body (`rejected after DATA`, content scans).
    Data,
    /// `AUTH`.
    Auth,
    /// `VRFY`, `EXPN`, `ETRN`, `STARTTLS` and other commands.
    Other,
}

/// An ACL or policy rejection of an SMTP command.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Reject<'a> {
    /// Which SMTP phase was refused.
    pub stage: RejectStage,
    /// True for a temporary (4xx) rejection.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub temporary: bool,
    /// `H=`: the client.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`: the local interface.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// `F=<sender>`, or the sender named in the rejection.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub sender: Option<Text<'a>>,
    /// The recipient of a refused `RCPT`.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub recipient: Option<Text<'a>>,
    /// `A=`: the authenticator the client used, if it authenticated.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub authenticator: Option<Text<'a>>,
    /// TLS in use on the connection.
    #[serde(skip_serializing_if = "Tls::is_empty", default, borrow)]
    pub tls: Tls<'a>,
    /// The reason Exim logged.
    #[serde(borrow)]
    pub reason: Text<'a>,
    /// Lines that followed the entry in the rejectlog (envelope, headers).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub detail: Vec<Text<'a>>,
    /// Other fields.
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// A failed SMTP AUTH: `<name> authenticator failed for <host>: <code> <text>`.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct AuthFailure<'a> {
    /// The authenticator's name (`PLAIN`, `dovecot_login`...).
    #[serde(borrow)]
    pub authenticator: Text<'a>,
    /// The client.
    #[serde(borrow)]
    pub host: HostAddr<'a>,
    /// `I=`: the local interface.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// The reply code sent (535...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<u16>,
    /// The reply text.
    #[serde(borrow)]
    pub text: Text<'a>,
    /// `(set_id=...)`: the user name the client tried.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub set_id: Option<Text<'a>>,
    /// Other fields (`U=`, `Ci=`...).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// A problem with one remote host during a delivery run, logged without an
/// address: `H=host [ip]:port Connection refused`, a 421 greeting, a TLS
/// error, `retry time not reached`.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct HostProblem<'a> {
    /// The remote host.
    #[serde(borrow)]
    pub host: HostAddr<'a>,
    /// `I=`: the local interface.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// The text after the host.
    #[serde(borrow)]
    pub text: Text<'a>,
    /// The remote reply, when the text holds one.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub reply: Option<SmtpReply<'a>>,
    /// True for `retry time not reached`: a skip, no connection was made.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub retry_not_reached: bool,
    /// `X=`, `CV=`, `DN=`, `SNI=`, when logged.
    #[serde(skip_serializing_if = "Tls::is_empty", default, borrow)]
    pub tls: Tls<'a>,
    /// Other fields.
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// Who did something to a message, and why.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Actor<'a> {
    /// The user named in `by <user>` (admin actions).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub by: Option<Text<'a>>,
    /// The reason or further text.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub reason: Option<Text<'a>>,
}

/// What a connection-level SMTP record reports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpKind {
    /// `SMTP connection from ...`: a client connected.
    #[default]
    Connect,
    /// `SMTP connection from ... closed by QUIT` (or `by EOF`).
    Close,
    /// The connection was lost: `SMTP connection from ... lost ...`,
    /// `unexpected disconnection while reading SMTP command`, `SMTP
    /// connection lost after final dot`.
    Lost,
    /// `SMTP command timeout`, `SMTP data timeout`.
    Timeout,
    /// `no MAIL in SMTP connection from ...`: the client sent no message.
    NoMail,
    /// `incomplete transaction (QUIT) from <sender>`.
    IncompleteTransaction,
    /// `SMTP protocol error in "<command>" ...`.
    ProtocolError,
    /// `SMTP syntax error in "<command>" ...`.
    SyntaxError,
    /// `SMTP protocol synchronization error`: the client talked too early.
    SyncError,
    /// `SMTP call from ... dropped: ...`: too many bad or non-mail commands.
    Dropped,
    /// A connection refused for a limit: `Connection from ... refused: too
    /// many connections`, load average, rate limits.
    Limit,
    /// `TLS error on connection from ...`: an inbound TLS failure.
    TlsError,
    /// `ETRN #domain received from ...` or `ATRN 'domain' received from
    /// ...`: a client asked for the mail queued for it; `command` holds the
    /// command and its argument.
    Etrn,
}

impl SmtpKind {
    /// The name, as in the JSON `what` field.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpKind::Connect => "connect",
            SmtpKind::Close => "close",
            SmtpKind::Lost => "lost",
            SmtpKind::Timeout => "timeout",
            SmtpKind::NoMail => "no_mail",
            SmtpKind::IncompleteTransaction => "incomplete_transaction",
            SmtpKind::ProtocolError => "protocol_error",
            SmtpKind::SyntaxError => "syntax_error",
            SmtpKind::SyncError => "sync_error",
            SmtpKind::Dropped => "dropped",
            SmtpKind::Limit => "limit",
            SmtpKind::TlsError => "tls_error",
            SmtpKind::Etrn => "etrn",
        }
    }
}

/// A connection-level SMTP record that is not a rejection: connects,
/// closes, lost connections, timeouts, protocol and syntax errors, limits.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct SmtpSession<'a> {
    /// What happened.
    pub what: SmtpKind,
    /// The client.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`: the local interface.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// The command a protocol or syntax error quotes, escapes decoded
    /// (`\026` is the byte 0x16; NULs Exim showed as `?` stay `?`), or the
    /// `input="..."` of a synchronization error.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        with = "opt_bytes",
        borrow
    )]
    pub command: Option<Bytes<'a>>,
    /// The envelope sender (`incomplete transaction ... from <x>`).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub sender: Option<Text<'a>>,
    /// `D=`: how long the connection lasted, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// `C=EHLO,AUTH,QUIT`: the commands of a connection without a message.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub commands: Option<Text<'a>>,
    /// `(TCP/IP connection count = N)` on a connect.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connection_count: Option<u32>,
    /// TLS in use on the connection.
    #[serde(skip_serializing_if = "Tls::is_empty", default, borrow)]
    pub tls: Tls<'a>,
    /// Free text: the reason, the detail (`closed by QUIT`, `lost while
    /// reading message data`, `AUTH command used when not advertised`).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub text: Option<Text<'a>>,
    /// Other fields (`Ci=`, `U=`, `A=`, `P=`...).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// A failed address verification: `sender verify fail for <x>: reason`
/// (also `defer`, and recipient verification). The rejection it causes is
/// logged separately as a [`Reject`], so this is not counted as one.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct VerifyFailure<'a> {
    /// True for a sender verification, false for a recipient.
    pub sender: bool,
    /// True for `verify defer` (a temporary failure).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub temporary: bool,
    /// The address that failed.
    #[serde(borrow)]
    pub address: Text<'a>,
    /// The client.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`: the local interface.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// Why.
    #[serde(borrow)]
    pub reason: Text<'a>,
    /// Other fields.
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// Text the parser has no kind for, with the host fields it carries.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Note<'a> {
    /// The text.
    #[serde(borrow)]
    pub text: Text<'a>,
    /// `H=`, when present.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`, when present.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// Other fields (`F=`, `U=`...).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// `Start queue run` / `End queue run`, also of a named queue (`Start
/// 'slow' queue run`) or of ODMR (`Start ODMR queue run`). Boxed: queue
/// runs are rare, and a small event is cheap to move.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct QueueRun<'a> {
    /// True at the start, false at the end.
    pub start: bool,
    /// The queue runner's pid.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub runner_pid: Option<u32>,
    /// The named queue being run; none for the default queue.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub queue: Option<Text<'a>>,
    /// Its arguments (`-qf`...).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub args: Option<Text<'a>>,
    /// A `pid=` that is not a number, and the words between `Start` and
    /// `queue run` other than the queue name (`ODMR`).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// A recipient thrown away by an ACL's `discard` verb: `F=<sender> RCPT
/// <rcpt>: discarded by RCPT ACL: reason`. The client was told the command
/// succeeded, so this is no rejection; in the MAIL ACL every recipient of
/// the transaction is discarded and each gets a line.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Discard<'a> {
    /// The ACL that discarded, as Exim names it (`RCPT`, `MAIL`...).
    #[serde(borrow)]
    pub acl: Text<'a>,
    /// The client.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`: the local interface.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// `F=<sender>`: the envelope sender.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub sender: Option<Text<'a>>,
    /// The recipient discarded.
    #[serde(borrow)]
    pub recipient: Text<'a>,
    /// The ACL's `log_message`, when it set one.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub reason: Option<Text<'a>>,
    /// Other fields (`U=`, `A=`...).
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// A DNS lookup of a host that found nothing: `no host name found for IP
/// address 192.0.2.9` (the reverse lookup of a client), `no IP address
/// found for host mx.example.com (during SMTP connection from ...)`.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct HostLookup<'a> {
    /// The address that has no name (a reverse lookup).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub ip: Option<Text<'a>>,
    /// The name that has no address (a forward lookup).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub name: Option<Text<'a>>,
    /// The client of the connection the lookup was made for.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub host: Option<HostAddr<'a>>,
    /// `I=`: the local interface of that connection.
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub interface: Option<Interface<'a>>,
    /// The whole text.
    #[serde(borrow)]
    pub text: Text<'a>,
    /// Other fields.
    #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
    pub fields: Vec<Field<'a>>,
}

/// Serde for optional [`Bytes`]: a string when UTF-8, numbers otherwise.
mod opt_bytes {
    use std::borrow::Cow;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Cow<'_, [u8]>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => crate::record::bytes_as_text::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Cow<'de, [u8]>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "crate::record::bytes_as_text")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| Cow::Owned(w.0)))
    }
}

/// What one record says.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind<'a> {
    /// `<=`: a message was received.
    Arrival(#[serde(borrow)] Box<Arrival<'a>>),
    /// `(=`: a fake reject (message accepted but the client told it failed).
    FakeReject(#[serde(borrow)] Box<Arrival<'a>>),
    /// `=>`, `->`, `>>`, `*>`: an address was delivered.
    Delivery {
        /// Which of the four marks.
        mark: DeliveryMark,
        /// The details.
        #[serde(flatten, borrow)]
        delivery: Box<Delivery<'a>>,
    },
    /// `**`: an address failed permanently.
    Failure(#[serde(borrow)] Box<Delivery<'a>>),
    /// `==`: an address was deferred.
    Deferral(#[serde(borrow)] Box<Delivery<'a>>),
    /// `Completed`: the message left the queue.
    Completed {
        /// `QT=`: total time on queue, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        queue_time_ms: Option<u64>,
        /// A `QT=` that is not a duration, and anything else after
        /// `Completed`.
        #[serde(skip_serializing_if = "Vec::is_empty", default, borrow)]
        fields: Vec<Field<'a>>,
    },
    /// The message was frozen (by an error, a filter, or an admin).
    Frozen(#[serde(borrow)] Actor<'a>),
    /// The message was unfrozen (thawed by an admin or a timer).
    Unfrozen(#[serde(borrow)] Actor<'a>),
    /// `Message is frozen`: a delivery run skipped the frozen message.
    SkippedFrozen,
    /// `removed by <user>`: an admin removed the message.
    Removed(#[serde(borrow)] Actor<'a>),
    /// `cancelled by <user>` or `cancelled by system filter`: remaining
    /// addresses were failed (bounced) by an admin or a filter.
    Cancelled(#[serde(borrow)] Actor<'a>),
    /// `address <x> marked delivered by <user>`.
    MarkedDelivered {
        /// The address.
        #[serde(borrow)]
        address: Text<'a>,
        /// Who did it.
        #[serde(flatten, borrow)]
        actor: Actor<'a>,
    },
    /// `recipient <x> added by <user>`.
    RecipientAdded {
        /// The address.
        #[serde(borrow)]
        address: Text<'a>,
        /// Who did it.
        #[serde(flatten, borrow)]
        actor: Actor<'a>,
    },
    /// `<addr>: error ignored`: a failed bounce dropped.
    ErrorIgnored {
        /// The address.
        #[serde(borrow)]
        address: Text<'a>,
        /// The text after `error ignored: `, when there is one.
        #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
        reason: Option<Text<'a>>,
    },
    /// A per-host problem during a delivery run.
    HostProblem(#[serde(borrow)] Box<HostProblem<'a>>),
    /// `no immediate delivery: <reason>`.
    NoImmediateDelivery {
        /// Why.
        #[serde(borrow)]
        reason: Text<'a>,
    },
    /// `Spool file is locked`: another process is delivering the message.
    SpoolLocked,
    /// An address rewrite.
    Rewrite {
        /// The address before.
        #[serde(borrow)]
        from: Text<'a>,
        /// The address after.
        #[serde(borrow)]
        to: Text<'a>,
        /// Which address or header was rewritten (`env-from`, `from`...).
        #[serde(borrow)]
        which: Text<'a>,
        /// The rewrite rule number.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        rule: Option<u32>,
    },
    /// An ACL or policy rejection.
    Reject(#[serde(borrow)] Box<Reject<'a>>),
    /// A failed authentication.
    AuthFailure(#[serde(borrow)] Box<AuthFailure<'a>>),
    /// A failed sender or recipient verification.
    VerifyFailure(#[serde(borrow)] Box<VerifyFailure<'a>>),
    /// Connections, closes, protocol and syntax errors, limits.
    Smtp(#[serde(borrow)] Box<SmtpSession<'a>>),
    /// `Start queue run` / `End queue run`.
    QueueRun(#[serde(borrow)] Box<QueueRun<'a>>),
    /// `exim x.yz daemon started`.
    DaemonStarted {
        /// Exim's version.
        #[serde(borrow)]
        version: Text<'a>,
        /// The rest of the line (pid, queue runs, listening sockets).
        #[serde(borrow)]
        detail: Text<'a>,
    },
    /// `cwd=... N args: ...`: the command line of an Exim process
    /// (`+arguments` log selector).
    Arguments {
        /// The working directory.
        #[serde(borrow)]
        cwd: Text<'a>,
        /// The argument count Exim logged.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        argc: Option<u32>,
        /// The arguments.
        #[serde(borrow)]
        args: Vec<Text<'a>>,
    },
    /// `DKIM: ...` verification results.
    Dkim {
        /// Every `key=value` pair of the line.
        #[serde(borrow)]
        fields: Vec<Field<'a>>,
        /// The text that is not a field.
        #[serde(borrow)]
        text: Text<'a>,
    },
    /// `Warning: text` after the connection's fields: the `log_message` of
    /// an ACL `warn` verb, or a warning Exim writes itself. `text` is what
    /// follows `Warning: `.
    Warning(#[serde(borrow)] Box<Note<'a>>),
    /// A recipient thrown away by an ACL `discard`.
    Discard(#[serde(borrow)] Box<Discard<'a>>),
    /// A DNS lookup of a host that found nothing.
    HostLookup(#[serde(borrow)] Box<HostLookup<'a>>),
    /// A TLS or DANE problem that is neither a delivery result nor a failed
    /// inbound handshake (those are [`EventKind::Deferral`] and
    /// [`SmtpKind::TlsError`]): a certificate that failed verification, a
    /// DANE attempt that failed, a missing OCSP status, a session that
    /// went on without encryption. `text` is the whole text.
    TlsProblem(#[serde(borrow)] Box<Note<'a>>),
    /// `<address>: <transport> transport output: <line>`: a line the
    /// command of a pipe transport wrote (`log_output`).
    TransportOutput {
        /// The address delivered to (the pipe command for a pipe).
        #[serde(borrow)]
        address: Text<'a>,
        /// The transport.
        #[serde(borrow)]
        transport: Text<'a>,
        /// The line, as Exim printed it.
        #[serde(borrow)]
        text: Text<'a>,
    },
    /// A paniclog entry. The message id and time come from its first line,
    /// as for any record; the text is everything after them.
    Panic {
        /// The whole text, lines joined with `\n`.
        #[serde(borrow)]
        text: Text<'a>,
    },
    /// Any other text: an ACL `logwrite`, a warning. Keeps the host fields
    /// it carries.
    Note(#[serde(borrow)] Box<Note<'a>>),
    /// A record the parser could not classify; the bytes are kept whole.
    Unparsed {
        /// Why it was not classified.
        #[serde(borrow)]
        reason: Text<'a>,
        /// The record's bytes.
        #[serde(with = "crate::record::bytes_as_text")]
        raw: Vec<u8>,
    },
}

impl EventKind<'_> {
    /// The kind's name, as in the JSON `kind` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Arrival(_) => "arrival",
            EventKind::FakeReject(_) => "fake_reject",
            EventKind::Delivery { .. } => "delivery",
            EventKind::Failure(_) => "failure",
            EventKind::Deferral(_) => "deferral",
            EventKind::Completed { .. } => "completed",
            EventKind::Frozen(_) => "frozen",
            EventKind::Unfrozen(_) => "unfrozen",
            EventKind::SkippedFrozen => "skipped_frozen",
            EventKind::Removed(_) => "removed",
            EventKind::Cancelled(_) => "cancelled",
            EventKind::MarkedDelivered { .. } => "marked_delivered",
            EventKind::RecipientAdded { .. } => "recipient_added",
            EventKind::ErrorIgnored { .. } => "error_ignored",
            EventKind::HostProblem(_) => "host_problem",
            EventKind::NoImmediateDelivery { .. } => "no_immediate_delivery",
            EventKind::SpoolLocked => "spool_locked",
            EventKind::Rewrite { .. } => "rewrite",
            EventKind::Reject(_) => "reject",
            EventKind::AuthFailure(_) => "auth_failure",
            EventKind::VerifyFailure(_) => "verify_failure",
            EventKind::Smtp(_) => "smtp",
            EventKind::QueueRun(_) => "queue_run",
            EventKind::DaemonStarted { .. } => "daemon_started",
            EventKind::Arguments { .. } => "arguments",
            EventKind::Dkim { .. } => "dkim",
            EventKind::Warning(_) => "warning",
            EventKind::Discard(_) => "discard",
            EventKind::HostLookup(_) => "host_lookup",
            EventKind::TlsProblem(_) => "tls_problem",
            EventKind::TransportOutput { .. } => "transport_output",
            EventKind::Panic { .. } => "panic",
            EventKind::Note(_) => "note",
            EventKind::Unparsed { .. } => "unparsed",
        }
    }
}
