//! Reason classes for failures, deferrals, host problems and rejections.
//!
//! Remote servers and Exim itself explain a failure in free text, often with
//! an SMTP reply code and an RFC 3463 enhanced status code. [`classify`]
//! maps that evidence to one [`ReasonClass`] with an ordered table of rules:
//! the first rule whose every condition holds decides. Text is compared in
//! ASCII lowercase, with addresses in angle brackets blanked out first so
//! that `<spammer@example.com>` cannot look like a spam verdict. Only the
//! first 1024 bytes of a text are read.
//!
//! Specific wording comes first because enhanced codes are often chosen
//! loosely (`4.7.1` is used for greylisting, blocklists and content
//! filters alike); the codes decide when the text says nothing known.
//! Negative errno values are not used: Exim renumbers them between
//! releases. The table, first match wins (`X` is any class digit of an
//! enhanced code; words are matched anywhere in the text):
//!
//! ```text
//!  1  expired_retry         text: retry timeout exceeded | delivery time expired
//!  2  retry_not_reached     text: retry time not reached
//!  3  cancelled             text: cancelled by
//!  4  policy_blocklist      text: sender verify | sender verification
//!  5  protocol_error        scope: remote, host_problem, reject and text: synchronization error
//!                             | syntax error | syntactically invalid
//!                             | too many nonmail commands | unrecognized command
//!                             | command unrecognized | malformed | protocol error
//!                             | bad sequence of commands
//!  6  greylisting           text: greylist | graylist | grey-list | gray-list
//!  7  queued                text: explicitly queued | first-pass only routing
//!                             | queue_smtp_domains | concurrency limit reached
//!                             | connection limit reached for all hosts
//!  8  rate_limit            text: rate limit | ratelimit | rate-limit | too many connections
//!                             | too many messages | too many recipients | too many concurrent
//!                             | too many sessions | sending rate | at a rate | message rate
//!                             | throttl | slow down | server busy | connection limit
//!  9  greylisting           temporary and text: try again later | try later | retry later
//!                             | come back later | please try again
//! 10  mailbox_full          text: quota | mailbox full | mailbox is full | inbox is full
//!                             | mailbox size limit | exceeded storage allocation
//! 11  message_too_large     text: too big | too large | size exceeds | exceeds the maximum
//!                             | size limit | message size
//! 12  policy_blocklist      text: blocklist | blacklist | block list | black list
//!                             | blocked using | dnsbl | spamhaus | spamcop | listed at
//!                             | listed in | listed on | reputation | blocked by
//! 13  spam_content          text: spam | virus | malware | infected | content policy
//!                             | content rejected | content filter | unsolicited | phish
//!                             | banned attachment
//! 14  auth_relay_denied     text: relay not permitted | relaying denied | relay access denied
//!                             | relaying not allowed | relay denied | relay not allowed
//!                             | not permitted to relay | unable to relay
//!                             | authentication required | authentication is required
//!                             | authentication failed | incorrect authentication
//!                             | authentication credentials | invalid credentials
//!                             | must authenticate | not authenticated | authenticator failed
//! 15  tls_failure           text: tls error | tls session | tls connection | tls negotiation
//!                             | tls handshake | tls required | tls is required | starttls
//!                             | certificate | encryption required | handshake | ssl routines
//!                             | ssl error
//! 16  dns_failure           text: domain does not exist | domain not found | no such domain
//!                             | null mx
//! 17  unknown_recipient     text: user unknown | unknown user | no such user | no such mailbox
//!                             | no such recipient | no such address | unknown recipient
//!                             | recipient unknown | recipient not found | user not found
//!                             | invalid recipient | invalid mailbox | mailbox not found
//!                             | does not exist | unknown local part | address unknown
//!                             | unknown address | account disabled | account has been disabled
//!                             | mailbox disabled
//! 18  unknown_recipient     code: 500-599 and text: mailbox unavailable | unrouteable address
//!                             | unroutable address
//! 19  unknown_recipient     scope: reject and text: unrouteable address | unroutable address
//! 20  dns_failure           text: unrouteable | unroutable | host not found
//!                             | host lookup did not complete | name or service not known
//!                             | nxdomain | no mx | mx record | could not resolve
//!                             | unknown host | dns
//! 21  connection_refused    text: connection refused | no route to host
//!                             | network is unreachable
//!                             | host is unreachable or errno 111, 113, 101
//! 22  timeout               text: timeout | timed out | connection reset | closed connection
//!                             | connection closed | lost connection | connection lost
//!                             | unexpected disconnection | broken pipe or errno 110, 104, 32
//! 23  unknown_recipient     enhanced: X.1.1 | X.1.6 | X.2.1
//! 24  dns_failure           enhanced: X.1.2 | X.1.10 | X.4.3 | X.4.4
//! 25  mailbox_full          enhanced: X.2.2
//! 26  message_too_large     enhanced: X.2.3 | X.3.4
//! 27  timeout               enhanced: X.4.1 | X.4.2
//! 28  expired_retry         enhanced: X.4.7
//! 29  rate_limit            enhanced: X.5.3 | X.7.28
//! 30  auth_relay_denied     enhanced: X.7.8 | X.7.9
//! 31  auth_relay_denied     code: 530-535
//! 32  tls_failure           enhanced: X.7.5 | X.7.10 | X.7.11
//! 33  local_delivery_error  scope: local
//! 34  policy_blocklist      text: policy | not allowed | not permitted | prohibited
//!                             | prohibition | banned | denied | forbidden | not authorized
//!                             | dmarc | spf | dkim | blocked
//! 35  policy_blocklist      enhanced: X.7.*
//! 36  policy_blocklist      scope: reject
//! 37  remote_error          scope: remote, host_problem
//! 38  other                 anything else
//! ```
//!
//! Cancellations by an administrator or the system filter carry no text
//! worth reading; the correlator gives them [`ReasonClass::Cancelled`]
//! directly.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use exim_pilot_schema::event::{AuthFailure, Delivery, HostProblem, Reject, SmtpKind, SmtpSession};
use exim_pilot_schema::ReasonClass;
use memchr::memmem::Finder;

/// Where the evidence comes from; some rules only apply to some places.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// A delivery to a remote host (SMTP/LMTP transport, or a host named).
    Remote,
    /// A local delivery (file, pipe, mailbox) or a routing decision.
    Local,
    /// A problem with one remote host during a delivery run.
    HostProblem,
    /// Exim refused a client's SMTP command.
    Reject,
}

/// What is known about one failure, deferral or rejection.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    /// Where it happened.
    pub scope: Scope,
    /// The SMTP reply code, when there was one.
    pub code: Option<u16>,
    /// The enhanced status code, e.g. `5.1.1`.
    pub enhanced: Option<&'a str>,
    /// The text: the reply text, or Exim's error message.
    pub text: &'a str,
    /// The errno Exim logged, when it logged one.
    pub errno: Option<i32>,
    /// True for a temporary failure (deferral, 4xx).
    pub temporary: bool,
}

impl<'a> Evidence<'a> {
    /// Evidence with only a scope and a text; codes are read from the text
    /// when it holds an SMTP reply (`... : 550 5.1.1 text`).
    pub fn from_text(scope: Scope, text: &'a str, temporary: bool) -> Evidence<'a> {
        let (code, enhanced) = match reply_in_text(text) {
            Some((code, enhanced)) => (Some(code), enhanced),
            None => (None, None),
        };
        Evidence {
            scope,
            code,
            enhanced,
            text,
            errno: None,
            temporary: temporary || code.is_some_and(|c| (400..500).contains(&c)),
        }
    }
}

/// Classifies one piece of evidence with the rule table in the module doc.
///
/// A log repeats the same few texts (a greylisting reply, a full
/// mailbox...) for thousands of addresses, and the addresses themselves are
/// blanked before the rules read the text; so each thread remembers the
/// classes of the texts it has seen recently (see [`Memo`]), which spares
/// running the whole table again.
pub fn classify(evidence: &Evidence<'_>) -> ReasonClass {
    let mut buf = [0u8; TEXT_LIMIT];
    let text = lowercase_without_addresses(evidence.text, &mut buf);
    MEMO.with(|memo| match memo.try_borrow_mut() {
        Ok(mut memo) => memo.class(evidence, text),
        Err(_) => apply_rules(evidence, text),
    })
}

/// The first rule of the table that `evidence` (with its text lowercased
/// and without addresses) matches.
fn apply_rules(evidence: &Evidence<'_>, text: &[u8]) -> ReasonClass {
    let finders = finders();
    for (rule, rule_finders) in RULES.iter().zip(finders) {
        if rule.matches(evidence, text, rule_finders) {
            return rule.class;
        }
    }
    ReasonClass::Other
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// Remembered classes, keyed by everything the rules read: the prepared
/// text (after its length), then scope, temporariness, reply code, errno and enhanced code.
/// The rules are a pure function of that key, so a remembered class is the
/// class the table would give. Holds at most [`MEMO_LIMIT`] keys and starts
/// afresh when full, which bounds its memory whatever the log holds.
#[derive(Default)]
struct Memo {
    classes: HashMap<Box<[u8]>, ReasonClass>,
    key: Vec<u8>,
}

/// How many texts a thread's [`Memo`] keeps.
const MEMO_LIMIT: usize = 4096;

impl Memo {
    fn class(&mut self, evidence: &Evidence<'_>, text: &[u8]) -> ReasonClass {
        let key = &mut self.key;
        key.clear();
        key.extend_from_slice(&(text.len() as u32).to_le_bytes());
        key.extend_from_slice(text);
        key.push(evidence.scope as u8);
        key.push(u8::from(evidence.temporary));
        key.extend_from_slice(&evidence.code.map_or(u32::MAX, u32::from).to_le_bytes());
        match evidence.errno {
            Some(n) => {
                key.push(1);
                key.extend_from_slice(&n.to_le_bytes());
            }
            None => key.push(0),
        }
        if let Some(enhanced) = evidence.enhanced {
            key.extend_from_slice(enhanced.as_bytes());
        }

        if let Some(class) = self.classes.get(key.as_slice()) {
            return *class;
        }
        let class = apply_rules(evidence, text);
        if self.classes.len() >= MEMO_LIMIT {
            self.classes.clear();
        }
        self.classes.insert(key.as_slice().into(), class);
        class
    }
}

/// Classifies a `**` failure (`temporary == false`) or a `==` deferral.
pub fn classify_delivery(delivery: &Delivery<'_>, temporary: bool) -> ReasonClass {
    if delivery.retry_not_reached {
        return ReasonClass::RetryNotReached;
    }
    classify(&delivery_evidence(delivery, temporary))
}

/// The evidence a delivery result line carries.
pub fn delivery_evidence<'d>(delivery: &'d Delivery<'_>, temporary: bool) -> Evidence<'d> {
    let text = delivery
        .error
        .as_deref()
        .or(delivery.errno_text.as_deref())
        .unwrap_or("");
    let scope = delivery_scope(delivery, text);
    let mut evidence = match &delivery.reply {
        Some(reply) => Evidence {
            scope,
            code: reply.code,
            enhanced: reply.enhanced.as_deref(),
            text: &reply.text,
            errno: None,
            temporary,
        },
        None => Evidence::from_text(scope, text, temporary),
    };
    evidence.errno = delivery.errno;
    evidence.temporary |= temporary;
    evidence
}

/// Classifies a per-host problem of a delivery run.
pub fn classify_host_problem(problem: &HostProblem<'_>) -> ReasonClass {
    let evidence = match &problem.reply {
        Some(reply) => Evidence {
            scope: Scope::HostProblem,
            code: reply.code,
            enhanced: reply.enhanced.as_deref(),
            text: &reply.text,
            errno: None,
            temporary: reply.code.is_some_and(|c| (400..500).contains(&c)),
        },
        None => Evidence::from_text(Scope::HostProblem, &problem.text, false),
    };
    if problem.retry_not_reached {
        return ReasonClass::RetryNotReached;
    }
    classify(&evidence)
}

/// Classifies an SMTP rejection.
pub fn classify_reject(reject: &Reject<'_>) -> ReasonClass {
    classify(&Evidence::from_text(
        Scope::Reject,
        &reject.reason,
        reject.temporary,
    ))
}

/// Classifies a failed SMTP AUTH from a client.
pub fn classify_auth_failure(failure: &AuthFailure<'_>) -> ReasonClass {
    let evidence = Evidence {
        scope: Scope::Reject,
        code: failure.code,
        enhanced: None,
        text: &failure.text,
        errno: None,
        temporary: failure.code.is_some_and(|c| (400..500).contains(&c)),
    };
    match classify(&evidence) {
        ReasonClass::PolicyBlocklist => ReasonClass::AuthRelayDenied,
        class => class,
    }
}

/// The class of a connection-level problem with a client, by its kind
/// (no rule table needed: Exim names the problem); `None` for records that
/// are not problems (connects, closes, connections without mail).
pub fn classify_smtp_session(session: &SmtpSession<'_>) -> Option<ReasonClass> {
    match session.what {
        SmtpKind::Lost | SmtpKind::Timeout => Some(ReasonClass::Timeout),
        SmtpKind::ProtocolError
        | SmtpKind::SyntaxError
        | SmtpKind::SyncError
        | SmtpKind::Dropped => Some(ReasonClass::ProtocolError),
        SmtpKind::Limit => Some(ReasonClass::RateLimit),
        SmtpKind::TlsError => Some(ReasonClass::TlsFailure),
        SmtpKind::Connect
        | SmtpKind::Close
        | SmtpKind::NoMail
        | SmtpKind::IncompleteTransaction
        | SmtpKind::Etrn => None,
    }
}

/// Remote when a host or a remote reply is involved or the transport talks
/// SMTP/LMTP; local otherwise (pipes, files, mailboxes, routers).
fn delivery_scope(delivery: &Delivery<'_>, text: &str) -> Scope {
    let smtp_transport = delivery.transport.as_deref().is_some_and(|t| {
        let t = t.as_bytes();
        contains_ignore_case(t, b"smtp") || contains_ignore_case(t, b"lmtp")
    });
    let remote = delivery.host.is_some()
        || delivery.reply.is_some()
        || smtp_transport
        || contains_ignore_case(text.as_bytes(), b"remote mail server")
        || contains_ignore_case(text.as_bytes(), b"for any host");
    if remote {
        Scope::Remote
    } else {
        Scope::Local
    }
}

/// Finds an SMTP reply code (and an enhanced code after it) in a text such
/// as `SMTP error from remote mail server after RCPT TO:<a@b>: 550 5.1.1 x`.
/// The code must start the text or follow `: `.
pub fn reply_in_text(text: &str) -> Option<(u16, Option<&str>)> {
    let bytes = text.as_bytes();
    let mut start = 0;
    loop {
        let at = start;
        let rest = &bytes[at..];
        if let Some((code, enhanced_len)) = code_at(rest) {
            let enhanced = (enhanced_len > 0).then(|| &text[at + 4..at + 4 + enhanced_len]);
            return Some((code, enhanced));
        }
        let next = memchr::memmem::find(rest, b": ")?;
        start = at + next + 2;
    }
}

/// A reply code at the start of `b`, followed by a space, `-` or the end,
/// and the length of an enhanced code after it (0 when none).
fn code_at(b: &[u8]) -> Option<(u16, usize)> {
    let digits = b.get(..3)?;
    if !(b'2'..=b'5').contains(&digits[0]) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match b.get(3) {
        None | Some(b' ') | Some(b'-') => {}
        _ => return None,
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let enhanced_len = b.get(4..).map_or(0, enhanced_len);
    Some((code, enhanced_len))
}

/// Length of an enhanced status code (`d.ddd.ddd`) at the start of `b`.
fn enhanced_len(b: &[u8]) -> usize {
    let class_ok = matches!(b.first(), Some(b'2' | b'4' | b'5')) && b.get(1) == Some(&b'.');
    if !class_ok {
        return 0;
    }
    let mut i = 2;
    for part in 0..2 {
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            return 0;
        }
        i += digits;
        if part == 0 {
            if b.get(i) != Some(&b'.') {
                return 0;
            }
            i += 1;
        }
    }
    match b.get(i) {
        None | Some(b' ') | Some(b',') | Some(b';') => i,
        _ => 0,
    }
}

/// How many bytes of a text the rules read.
const TEXT_LIMIT: usize = 1024;

/// Lowercases `text` into `buf`, blanking `<...>` spans (addresses).
fn lowercase_without_addresses<'b>(text: &str, buf: &'b mut [u8; TEXT_LIMIT]) -> &'b [u8] {
    let bytes = text.as_bytes();
    let n = bytes.len().min(TEXT_LIMIT);
    let mut in_angle = false;
    for (out, &b) in buf.iter_mut().zip(&bytes[..n]) {
        *out = match b {
            b'<' => {
                in_angle = true;
                b' '
            }
            b'>' if in_angle => {
                in_angle = false;
                b' '
            }
            _ if in_angle => b' ',
            _ => b.to_ascii_lowercase(),
        };
    }
    &buf[..n]
}

fn contains_ignore_case(hay: &[u8], needle_lower: &[u8]) -> bool {
    hay.windows(needle_lower.len())
        .any(|w| w.eq_ignore_ascii_case(needle_lower))
}

/// One row of the table: every condition given must hold.
struct Rule {
    class: ReasonClass,
    /// Any of these lowercase words must occur in the text.
    text: &'static [&'static str],
    /// Any of these enhanced-code patterns must match: `.1.1` matches
    /// `X.1.1` exactly, `.7.` matches any `X.7.*`.
    enhanced: &'static [&'static str],
    /// The reply code must lie in this range.
    codes: Option<(u16, u16)>,
    /// Any of these errno values must have been logged.
    errno: &'static [i32],
    /// The evidence must come from one of these scopes.
    scopes: &'static [Scope],
    /// The failure must be temporary.
    temporary: bool,
    /// Alternative to `text`/`enhanced`/`codes`: matching errno suffices.
    errno_alone: bool,
}

const ANY: Rule = Rule {
    class: ReasonClass::Other,
    text: &[],
    enhanced: &[],
    codes: None,
    errno: &[],
    scopes: &[],
    temporary: false,
    errno_alone: false,
};

impl Rule {
    fn matches(&self, e: &Evidence<'_>, text: &[u8], finders: &[Finder<'static>]) -> bool {
        if !self.scopes.is_empty() && !self.scopes.contains(&e.scope) {
            return false;
        }
        if self.temporary && !e.temporary {
            return false;
        }
        if self.errno_alone && e.errno.is_some_and(|n| self.errno.contains(&n)) {
            return true;
        }
        if !self.errno_alone
            && !self.errno.is_empty()
            && !e.errno.is_some_and(|n| self.errno.contains(&n))
        {
            return false;
        }
        if let Some((low, high)) = self.codes {
            if !e.code.is_some_and(|c| (low..=high).contains(&c)) {
                return false;
            }
        }
        if !self.enhanced.is_empty() {
            let Some(code) = e.enhanced else {
                return false;
            };
            if !self.enhanced.iter().any(|p| enhanced_matches(code, p)) {
                return false;
            }
        }
        if !finders.is_empty() && !finders.iter().any(|f| f.find(text).is_some()) {
            return false;
        }
        true
    }
}

/// The rule table as readable text, one rule per entry, long word lists
/// wrapped; the module doc shows exactly this text.
pub fn rule_table() -> String {
    let mut out = String::new();
    for (i, rule) in RULES.iter().enumerate() {
        let conditions = rule.describe();
        let head = format!("{:>2}  {:<21} ", i + 1, rule.class.as_str());
        push_wrapped(&mut out, &head, &conditions);
    }
    let last = format!(
        "{:>2}  {:<21} ",
        RULES.len() + 1,
        ReasonClass::Other.as_str()
    );
    push_wrapped(&mut out, &last, "anything else");
    out
}

/// Appends `head` + `text`, breaking lines between the ` | `-separated
/// alternatives so that no word list is cut inside a phrase.
fn push_wrapped(out: &mut String, head: &str, text: &str) {
    const WIDTH: usize = 92;
    let indent = " ".repeat(head.len() + 2);
    let mut line = head.to_string();
    for (i, item) in text.split(" | ").enumerate() {
        let piece = if i == 0 {
            item.to_string()
        } else {
            format!(" | {item}")
        };
        if line.len() + piece.len() > WIDTH && line.len() > head.len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = format!("{indent}{}", piece.trim_start());
        } else {
            line.push_str(&piece);
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

impl Rule {
    /// The conditions in words.
    fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.scopes.is_empty() {
            let names: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
            parts.push(format!("scope: {}", names.join(", ")));
        }
        if self.temporary {
            parts.push("temporary".to_string());
        }
        if let Some((low, high)) = self.codes {
            parts.push(format!("code: {low}-{high}"));
        }
        if !self.enhanced.is_empty() {
            let codes: Vec<String> = self
                .enhanced
                .iter()
                .map(|p| match p.strip_suffix('.') {
                    Some(prefix) => format!("X{prefix}.*"),
                    None => format!("X{p}"),
                })
                .collect();
            parts.push(format!("enhanced: {}", codes.join(" | ")));
        }
        if !self.text.is_empty() {
            parts.push(format!("text: {}", self.text.join(" | ")));
        }
        let errno: Vec<String> = self.errno.iter().map(|n| n.to_string()).collect();
        let mut described = parts.join(" and ");
        if !errno.is_empty() {
            let joiner = if self.errno_alone {
                " or errno "
            } else {
                " and errno "
            };
            described.push_str(joiner);
            described.push_str(&errno.join(", "));
        }
        described
    }
}

impl Scope {
    /// The scope's name in the rule table.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Remote => "remote",
            Scope::Local => "local",
            Scope::HostProblem => "host_problem",
            Scope::Reject => "reject",
        }
    }
}

fn enhanced_matches(code: &str, pattern: &str) -> bool {
    let Some(rest) = code.get(1..) else {
        return false;
    };
    if pattern.ends_with('.') {
        rest.starts_with(pattern)
    } else {
        rest == pattern
    }
}

/// Compiled substring searchers, one list per rule, built once.
fn finders() -> &'static [Vec<Finder<'static>>] {
    static FINDERS: OnceLock<Vec<Vec<Finder<'static>>>> = OnceLock::new();
    FINDERS.get_or_init(|| {
        RULES
            .iter()
            .map(|r| r.text.iter().map(|t| Finder::new(t.as_bytes())).collect())
            .collect()
    })
}

use ReasonClass as C;
use Scope as S;

const RULES: &[Rule] = &[
    // 1
    Rule {
        class: C::ExpiredRetry,
        text: &["retry timeout exceeded", "delivery time expired"],
        ..ANY
    },
    // 2
    Rule {
        class: C::RetryNotReached,
        text: &["retry time not reached"],
        ..ANY
    },
    // 3
    Rule {
        class: C::Cancelled,
        text: &["cancelled by"],
        ..ANY
    },
    // 4
    Rule {
        class: C::PolicyBlocklist,
        text: &["sender verify", "sender verification"],
        ..ANY
    },
    // 5
    Rule {
        class: C::ProtocolError,
        scopes: &[S::Remote, S::HostProblem, S::Reject],
        text: &[
            "synchronization error",
            "syntax error",
            "syntactically invalid",
            "too many nonmail commands",
            "unrecognized command",
            "command unrecognized",
            "malformed",
            "protocol error",
            "bad sequence of commands",
        ],
        ..ANY
    },
    // 6
    Rule {
        class: C::Greylisting,
        text: &["greylist", "graylist", "grey-list", "gray-list"],
        ..ANY
    },
    // 7
    Rule {
        class: C::Queued,
        text: &[
            "explicitly queued",
            "first-pass only routing",
            "queue_smtp_domains",
            "concurrency limit reached",
            "connection limit reached for all hosts",
        ],
        ..ANY
    },
    // 8
    Rule {
        class: C::RateLimit,
        text: &[
            "rate limit",
            "ratelimit",
            "rate-limit",
            "too many connections",
            "too many messages",
            "too many recipients",
            "too many concurrent",
            "too many sessions",
            "sending rate",
            "at a rate",
            "message rate",
            "throttl",
            "slow down",
            "server busy",
            "connection limit",
        ],
        ..ANY
    },
    // 9
    Rule {
        class: C::Greylisting,
        text: &[
            "try again later",
            "try later",
            "retry later",
            "come back later",
            "please try again",
        ],
        temporary: true,
        ..ANY
    },
    // 10
    Rule {
        class: C::MailboxFull,
        text: &[
            "quota",
            "mailbox full",
            "mailbox is full",
            "inbox is full",
            "mailbox size limit",
            "exceeded storage allocation",
        ],
        ..ANY
    },
    // 11
    Rule {
        class: C::MessageTooLarge,
        text: &[
            "too big",
            "too large",
            "size exceeds",
            "exceeds the maximum",
            "size limit",
            "message size",
        ],
        ..ANY
    },
    // 12
    Rule {
        class: C::PolicyBlocklist,
        text: &[
            "blocklist",
            "blacklist",
            "block list",
            "black list",
            "blocked using",
            "dnsbl",
            "spamhaus",
            "spamcop",
            "listed at",
            "listed in",
            "listed on",
            "reputation",
            "blocked by",
        ],
        ..ANY
    },
    // 13
    Rule {
        class: C::SpamContent,
        text: &[
            "spam",
            "virus",
            "malware",
            "infected",
            "content policy",
            "content rejected",
            "content filter",
            "unsolicited",
            "phish",
            "banned attachment",
        ],
        ..ANY
    },
    // 14
    Rule {
        class: C::AuthRelayDenied,
        text: &[
            "relay not permitted",
            "relaying denied",
            "relay access denied",
            "relaying not allowed",
            "relay denied",
            "relay not allowed",
            "not permitted to relay",
            "unable to relay",
            "authentication required",
            "authentication is required",
            "authentication failed",
            "incorrect authentication",
            "authentication credentials",
            "invalid credentials",
            "must authenticate",
            "not authenticated",
            "authenticator failed",
        ],
        ..ANY
    },
    // 15
    Rule {
        class: C::TlsFailure,
        text: &[
            "tls error",
            "tls session",
            "tls connection",
            "tls negotiation",
            "tls handshake",
            "tls required",
            "tls is required",
            "starttls",
            "certificate",
            "encryption required",
            "handshake",
            "ssl routines",
            "ssl error",
        ],
        ..ANY
    },
    // 16
    Rule {
        class: C::DnsFailure,
        text: &[
            "domain does not exist",
            "domain not found",
            "no such domain",
            "null mx",
        ],
        ..ANY
    },
    // 17
    Rule {
        class: C::UnknownRecipient,
        text: &[
            "user unknown",
            "unknown user",
            "no such user",
            "no such mailbox",
            "no such recipient",
            "no such address",
            "unknown recipient",
            "recipient unknown",
            "recipient not found",
            "user not found",
            "invalid recipient",
            "invalid mailbox",
            "mailbox not found",
            "does not exist",
            "unknown local part",
            "address unknown",
            "unknown address",
            "account disabled",
            "account has been disabled",
            "mailbox disabled",
        ],
        ..ANY
    },
    // 18
    Rule {
        class: C::UnknownRecipient,
        text: &[
            "mailbox unavailable",
            "unrouteable address",
            "unroutable address",
        ],
        codes: Some((500, 599)),
        ..ANY
    },
    // 19
    Rule {
        class: C::UnknownRecipient,
        text: &["unrouteable address", "unroutable address"],
        scopes: &[S::Reject],
        ..ANY
    },
    // 20
    Rule {
        class: C::DnsFailure,
        text: &[
            "unrouteable",
            "unroutable",
            "host not found",
            "host lookup did not complete",
            "name or service not known",
            "nxdomain",
            "no mx",
            "mx record",
            "could not resolve",
            "unknown host",
            "dns",
        ],
        ..ANY
    },
    // 21
    Rule {
        class: C::ConnectionRefused,
        text: &[
            "connection refused",
            "no route to host",
            "network is unreachable",
            "host is unreachable",
        ],
        errno: &[111, 113, 101],
        errno_alone: true,
        ..ANY
    },
    // 22
    Rule {
        class: C::Timeout,
        text: &[
            "timeout",
            "timed out",
            "connection reset",
            "closed connection",
            "connection closed",
            "lost connection",
            "connection lost",
            "unexpected disconnection",
            "broken pipe",
        ],
        errno: &[110, 104, 32],
        errno_alone: true,
        ..ANY
    },
    // 23
    Rule {
        class: C::UnknownRecipient,
        enhanced: &[".1.1", ".1.6", ".2.1"],
        ..ANY
    },
    // 24
    Rule {
        class: C::DnsFailure,
        enhanced: &[".1.2", ".1.10", ".4.3", ".4.4"],
        ..ANY
    },
    // 25
    Rule {
        class: C::MailboxFull,
        enhanced: &[".2.2"],
        ..ANY
    },
    // 26
    Rule {
        class: C::MessageTooLarge,
        enhanced: &[".2.3", ".3.4"],
        ..ANY
    },
    // 27
    Rule {
        class: C::Timeout,
        enhanced: &[".4.1", ".4.2"],
        ..ANY
    },
    // 28
    Rule {
        class: C::ExpiredRetry,
        enhanced: &[".4.7"],
        ..ANY
    },
    // 29
    Rule {
        class: C::RateLimit,
        enhanced: &[".5.3", ".7.28"],
        ..ANY
    },
    // 30
    Rule {
        class: C::AuthRelayDenied,
        enhanced: &[".7.8", ".7.9"],
        ..ANY
    },
    // 31
    Rule {
        class: C::AuthRelayDenied,
        codes: Some((530, 535)),
        ..ANY
    },
    // 32
    Rule {
        class: C::TlsFailure,
        enhanced: &[".7.5", ".7.10", ".7.11"],
        ..ANY
    },
    // 33
    Rule {
        class: C::LocalDeliveryError,
        scopes: &[S::Local],
        ..ANY
    },
    // 34
    Rule {
        class: C::PolicyBlocklist,
        text: &[
            "policy",
            "not allowed",
            "not permitted",
            "prohibited",
            "prohibition",
            "banned",
            "denied",
            "forbidden",
            "not authorized",
            "dmarc",
            "spf",
            "dkim",
            "blocked",
        ],
        ..ANY
    },
    // 35
    Rule {
        class: C::PolicyBlocklist,
        enhanced: &[".7."],
        ..ANY
    },
    // 36
    Rule {
        class: C::PolicyBlocklist,
        scopes: &[S::Reject],
        ..ANY
    },
    // 37
    Rule {
        class: C::RemoteError,
        scopes: &[S::Remote, S::HostProblem],
        ..ANY
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use ReasonClass as C;

    fn remote(text: &str, temporary: bool) -> ReasonClass {
        classify(&Evidence::from_text(Scope::Remote, text, temporary))
    }

    #[test]
    fn reply_codes_are_found_in_texts() {
        let t = "SMTP error from remote mail server after RCPT TO:<a@example.com>: \
                 550 5.1.1 <a@example.com>: Recipient address rejected";
        assert_eq!(reply_in_text(t), Some((550, Some("5.1.1"))));
        assert_eq!(reply_in_text("421 mx.example.com busy"), Some((421, None)));
        assert_eq!(reply_in_text("Connection refused"), None);
        assert_eq!(reply_in_text("read=152239 max=102400"), None);
        assert_eq!(
            reply_in_text("x: 452-4.2.2 The email account is over quota"),
            Some((452, Some("4.2.2")))
        );
        assert_eq!(
            reply_in_text("x: 452 4.2.2 The email account is over quota"),
            Some((452, Some("4.2.2")))
        );
    }

    #[test]
    fn enhanced_patterns() {
        assert!(enhanced_matches("5.1.1", ".1.1"));
        assert!(!enhanced_matches("5.1.10", ".1.1"));
        assert!(enhanced_matches("4.7.28", ".7."));
        assert!(!enhanced_matches("", ".7."));
    }

    #[test]
    fn addresses_do_not_decide() {
        // The address holds "spam", the words say "unknown user".
        let t = "550 <spam-trap@example.com>: Recipient address rejected: unknown user";
        assert_eq!(remote(t, false), ReasonClass::UnknownRecipient);
        let t = "Remote host closed connection in response to MAIL FROM:<tls@example.org>";
        assert_eq!(remote(t, true), ReasonClass::Timeout);
    }

    #[test]
    fn errno_alone_classifies() {
        let e = Evidence {
            scope: Scope::Remote,
            code: None,
            enhanced: None,
            text: "",
            errno: Some(111),
            temporary: true,
        };
        assert_eq!(classify(&e), ReasonClass::ConnectionRefused);
    }

    #[test]
    fn fallbacks_follow_the_scope() {
        let e = |scope| Evidence::from_text(scope, "something odd happened", false);
        assert_eq!(classify(&e(Scope::Local)), ReasonClass::LocalDeliveryError);
        assert_eq!(classify(&e(Scope::Reject)), ReasonClass::PolicyBlocklist);
        assert_eq!(classify(&e(Scope::Remote)), ReasonClass::RemoteError);
        assert_eq!(classify(&e(Scope::HostProblem)), ReasonClass::RemoteError);
    }

    #[test]
    fn module_doc_shows_the_rule_table() {
        let source = include_str!("classify.rs");
        let doc: String = source
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| format!("{}\n", l.strip_prefix("//! ").unwrap_or("")))
            .collect();
        let table = rule_table();
        assert!(
            doc.contains(&table),
            "the module doc's table is out of date; it should read:\n{table}"
        );
    }

    /// Every distinct failure, deferral, host-problem and rejection text of
    /// the corpus mainlogs (tests/data/corpus), with the class it must get.
    const CORPUS_TEXTS: &[(Scope, bool, &str, ReasonClass)] = &[
        // `**` failures.
        (
            Scope::Local,
            false,
            "Child process of address_pipe transport returned 1 from command: /bin/false",
            C::LocalDeliveryError,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after RCPT TO:<noreply-marek1@permfail.test>: \
             550 5.1.1 <noreply-marek1@permfail.test>: Recipient address rejected: \
             User unknown in local recipient table",
            C::UnknownRecipient,
        ),
        (Scope::Local, false, "Unknown user", C::UnknownRecipient),
        (Scope::Local, false, "Unrouteable address", C::DnsFailure),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after end of data: \
             554 5.7.1 Message rejected: content policy violation",
            C::SpamContent,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after RCPT TO:<gone-vera42@partner.test>: \
             550 Unrouteable address",
            C::UnknownRecipient,
        ),
        (
            Scope::Remote,
            false,
            "retry timeout exceeded",
            C::ExpiredRetry,
        ),
        (
            Scope::Local,
            false,
            "retry timeout exceeded",
            C::ExpiredRetry,
        ),
        // `==` deferrals.
        (
            Scope::Remote,
            true,
            "SMTP error from remote mail server after RCPT TO:<nadia2@expire.test>: \
             451 4.7.1 <nadia2@expire.test>: Recipient address rejected: try again later",
            C::Greylisting,
        ),
        (
            Scope::Local,
            true,
            "mailbox is full (MTA-imposed quota exceeded while writing to \
             /tmp/eximlab/run/mail/quota)",
            C::MailboxFull,
        ),
        (
            Scope::Local,
            true,
            "Tainted '/tmp/eximlab/run/mail/taint-taintcheck' (file or directory name for \
             tainted_file transport) not permitted",
            C::LocalDeliveryError,
        ),
        (
            Scope::Remote,
            true,
            "SMTP timeout after RCPT TO:<elena5@slow.test>",
            C::Timeout,
        ),
        (
            Scope::Local,
            true,
            "Child process of address_pipe transport returned 75 (could mean temporary \
             error) from command: /bin/sh",
            C::LocalDeliveryError,
        ),
        (
            Scope::Remote,
            true,
            "SMTP error from remote mail server after initial connection: \
             421 4.3.2 mx.greet.test Service not available, closing channel",
            C::RemoteError,
        ),
        (
            Scope::Local,
            true,
            "Mailbox temporarily unavailable (maintenance)",
            C::LocalDeliveryError,
        ),
        (
            Scope::Remote,
            true,
            "retry time not reached for any host for 'refused.test'",
            C::RetryNotReached,
        ),
        (
            Scope::Remote,
            true,
            "Remote host closed connection in response to pipelined \
             MAIL FROM:<mallory@lab.test> SIZE=1706",
            C::Timeout,
        ),
        (
            Scope::Remote,
            true,
            "Connection refused",
            C::ConnectionRefused,
        ),
        // Per-host problems of delivery runs.
        (
            Scope::HostProblem,
            false,
            "SMTP error from remote mail server after initial connection: \
             421 4.3.2 mx.greet.test Service not available, closing channel",
            C::RemoteError,
        ),
        (
            Scope::HostProblem,
            false,
            "Connection refused",
            C::ConnectionRefused,
        ),
        (
            Scope::HostProblem,
            false,
            "TLS error on connection (recv): The TLS connection was non-properly terminated.",
            C::TlsFailure,
        ),
        (
            Scope::HostProblem,
            false,
            "Remote host closed connection in response to pipelined \
             MAIL FROM:<ivan@lab.test> SIZE=3000",
            C::Timeout,
        ),
        // Rejections of client commands.
        (
            Scope::Reject,
            false,
            "Sender address <ines.tanaka@blocked.example> blocked by local policy",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "HELO name spambot.invalid is on the local blocklist",
            C::PolicyBlocklist,
        ),
        (Scope::Reject, false, "Unknown user", C::UnknownRecipient),
        (
            Scope::Reject,
            false,
            "dropme address used",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "Service temporarily closed to new connections (lab maintenance)",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "535 Incorrect authentication data",
            C::AuthRelayDenied,
        ),
        (
            Scope::Reject,
            false,
            "Sender verify failed",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "sender verify fail for <quinn.horvat@nowhere.example>: Unrouteable address",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "fake virus signature found in subject",
            C::SpamContent,
        ),
        (Scope::Reject, true, "greylisted", C::Greylisting),
        (
            Scope::Reject,
            false,
            "relay not permitted",
            C::AuthRelayDenied,
        ),
        (
            Scope::Reject,
            false,
            "message too big: read=152239 max=102400",
            C::MessageTooLarge,
        ),
        (
            Scope::Reject,
            true,
            "Mailbox temporarily unavailable (maintenance)",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "syntactically invalid argument(s): (no argument given)",
            C::ProtocolError,
        ),
        (
            Scope::Reject,
            false,
            "SMTP protocol synchronization error (input sent without waiting for greeting)",
            C::ProtocolError,
        ),
        (
            Scope::Reject,
            false,
            "too many nonmail commands (last was \"HELP\")",
            C::ProtocolError,
        ),
        (
            Scope::Reject,
            false,
            "unqualified verify rejected",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "SMTP command timeout on connection from (sleepy.example) [127.0.0.1]",
            C::Timeout,
        ),
    ];

    #[test]
    fn corpus_texts_get_sensible_classes() {
        let mut wrong = Vec::new();
        for &(scope, temporary, text, expected) in CORPUS_TEXTS {
            let got = classify(&Evidence::from_text(scope, text, temporary));
            if got != expected {
                wrong.push(format!("{scope:?} {text:?}: got {got}, want {expected}"));
            }
        }
        assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    }

    /// Realistic texts for the classes the corpus does not show.
    const INVENTED_TEXTS: &[(Scope, bool, &str, ReasonClass)] = &[
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: \
             552 5.2.2 <kim@example.com>: Mailbox full",
            C::MailboxFull,
        ),
        (
            Scope::Remote,
            true,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: \
             452 4.2.2 The email account that you tried to reach is over quota",
            C::MailboxFull,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after MAIL FROM:<a@example.org> SIZE=90000000: \
             552 5.3.4 Message size exceeds fixed limit",
            C::MessageTooLarge,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after end of data: 552 5.3.4 Error: \
             message file too big",
            C::MessageTooLarge,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after end of data: 550 5.7.1 Message \
             rejected as spam by Content Filtering",
            C::SpamContent,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: \
             554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using \
             zen.spamhaus.org",
            C::PolicyBlocklist,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after end of data: 550 5.7.26 Unauthenticated \
             email from example.org is not accepted due to domain's DMARC policy",
            C::PolicyBlocklist,
        ),
        (
            Scope::Remote,
            true,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: \
             450 4.2.0 <kim@example.com>: Recipient address rejected: Greylisted, see \
             https://postgrey.example.net/",
            C::Greylisting,
        ),
        (
            Scope::Remote,
            true,
            "SMTP error from remote mail server after initial connection: 421 4.7.0 \
             mx.example.net Too many concurrent SMTP connections; please try again later",
            C::RateLimit,
        ),
        (
            Scope::Remote,
            true,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: 450 4.2.1 \
             The user you are trying to contact is receiving mail at a rate that prevents \
             additional messages from being delivered",
            C::RateLimit,
        ),
        (
            Scope::Remote,
            true,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: \
             452 4.5.3 Too many recipients",
            C::RateLimit,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: \
             554 5.7.1 <kim@example.com>: Relay access denied",
            C::AuthRelayDenied,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after MAIL FROM:<a@example.org>: \
             530 5.7.0 Authentication required",
            C::AuthRelayDenied,
        ),
        (
            Scope::Remote,
            true,
            "all relevant MX records point to non-existent hosts",
            C::DnsFailure,
        ),
        (
            Scope::Remote,
            true,
            "host lookup did not complete",
            C::DnsFailure,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after RCPT TO:<kim@example.net>: \
             550 5.1.2 Host unknown: bad destination system address",
            C::DnsFailure,
        ),
        (Scope::Remote, true, "Connection timed out", C::Timeout),
        (
            Scope::Remote,
            true,
            "TLS session: (certificate verification failed): certificate invalid",
            C::TlsFailure,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after MAIL FROM:<a@example.org>: \
             530 5.7.0 Must issue a STARTTLS command first",
            C::TlsFailure,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after end of data: \
             554 5.3.0 Internal error while storing the message",
            C::RemoteError,
        ),
        (
            Scope::Local,
            true,
            "failed to lock mailbox /var/mail/kim (fcntl)",
            C::LocalDeliveryError,
        ),
        (
            Scope::Remote,
            true,
            "Network is unreachable",
            C::ConnectionRefused,
        ),
        (
            Scope::Reject,
            true,
            "Too many connections from 203.0.113.9",
            C::RateLimit,
        ),
        (
            Scope::Local,
            true,
            "syntax error in filter file /home/kim/.forward: unknown command \"deliverr\"",
            C::LocalDeliveryError,
        ),
        (
            Scope::Remote,
            true,
            "concurrency limit reached for transport remote_smtp",
            C::Queued,
        ),
        (
            Scope::Remote,
            false,
            "SMTP error from remote mail server after RCPT TO:<kim@example.com>: \
             550 Administrative prohibition",
            C::PolicyBlocklist,
        ),
        (
            Scope::Reject,
            false,
            "rejected because 198.51.100.7 is in a black list at bl.example.net",
            C::PolicyBlocklist,
        ),
    ];

    #[test]
    fn invented_texts_cover_the_other_classes() {
        let mut wrong = Vec::new();
        for &(scope, temporary, text, expected) in INVENTED_TEXTS {
            let got = classify(&Evidence::from_text(scope, text, temporary));
            if got != expected {
                wrong.push(format!("{scope:?} {text:?}: got {got}, want {expected}"));
            }
        }
        assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    }
}
