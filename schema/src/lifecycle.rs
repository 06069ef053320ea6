//! Message lifecycles: everything the logs say about one message.
//!
//! The processor's correlator groups events per (host, message id) into a
//! [`Lifecycle`]: the arrival, each final address with its own outcome and
//! every delivery attempt, freezes, admin actions and completion. The JSON
//! form of these types is what `exim-pilot lifecycles` prints and what the
//! stores keep; its keys are stable.
//!
//! In JSON, a lifecycle always has `host`, `id`, `sender`, `size`,
//! `received_at`, `state` and `recipients`, and every recipient always has
//! `address`, `original`, `outcome`, `attempts`, `last_code`, `last_text`
//! and `reason` (`null` when unknown); other keys are left out when empty.
//! A recipient looks like:
//!
//! ```json
//! {"address": "alice@example.com", "original": "team@example.com",
//!  "outcome": "deferred", "attempts": 2, "last_code": 451,
//!  "last_text": "4.7.1 Try again later", "reason": "greylisting",
//!  "history": [{"at": "...", "result": "defer", "mark": "==", "...": "..."}]}
//! ```
//!
//! `attempts` counts delivery runs (a queue run, an immediate delivery, an
//! `exim -M`) that logged a result line (`=>`, `->`, `>>`, `*>`, `==`,
//! `**`) for the address: one per run however many hosts were tried, with
//! a `** ...: retry timeout exceeded` that follows a `==` in the same run
//! counted with it. Admin actions and `Message is frozen` skips are not
//! attempts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{MessageId, ReasonClass};

/// Where a message is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// On the queue: received (or first seen) and not yet completed.
    #[default]
    InFlight,
    /// On the queue and frozen.
    Frozen,
    /// `Completed`: every address reached a final outcome.
    Completed,
    /// Removed from the queue by an administrator.
    Removed,
}

impl MessageState {
    /// The state's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::InFlight => "in_flight",
            MessageState::Frozen => "frozen",
            MessageState::Completed => "completed",
            MessageState::Removed => "removed",
        }
    }
}

/// How the message came to exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Received over SMTP from another host.
    Smtp,
    /// Submitted on the local machine (command line, `-bs`, pipes).
    Local,
    /// A bounce (delivery failure report) Exim generated.
    Bounce,
    /// A delay warning Exim generated.
    DelayWarning,
    /// Not known: the log did not include the arrival.
    #[default]
    Unknown,
}

/// The outcome of one final address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered (`=>`, `->`, `>>`).
    Delivered,
    /// Failed permanently: `**` (a remote or local refusal, a retry
    /// timeout), cancelled by an administrator (`-Mg`) or the system
    /// filter, or a failed bounce whose error was ignored.
    Bounced,
    /// Still on the queue after at least one deferral.
    Deferred,
    /// Still on the queue, no delivery attempt logged yet.
    #[default]
    Pending,
    /// Still on the queue, and the message is frozen.
    Frozen,
    /// Removed from the queue by an administrator before delivery.
    Removed,
    /// Marked delivered by an administrator (`-Mmd`).
    MarkedDelivered,
}

impl Outcome {
    /// The outcome's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Bounced => "bounced",
            Outcome::Deferred => "deferred",
            Outcome::Pending => "pending",
            Outcome::Frozen => "frozen",
            Outcome::Removed => "removed",
            Outcome::MarkedDelivered => "marked_delivered",
        }
    }

    /// True when the address will see no further delivery attempt.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Outcome::Delivered | Outcome::Bounced | Outcome::Removed | Outcome::MarkedDelivered
        )
    }
}

/// The result of one delivery attempt.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// Delivered.
    Ok,
    /// Deferred: will be tried again.
    Defer,
    /// Failed permanently.
    Fail,
}

/// The sending client of an SMTP arrival.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Client {
    /// Host name, when looked up.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// HELO/EHLO name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub helo: Option<String>,
    /// IP address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ip: Option<String>,
    /// Source port.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<u16>,
}

/// One delivery attempt for one address: one result line of one delivery
/// run (a queue run or an immediate delivery), with the per-host problems
/// the same run logged before it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Attempt {
    /// When the result was logged.
    pub at: DateTime<Utc>,
    /// Delivered, deferred or failed.
    pub result: AttemptResult,
    /// The log mark: `=>`, `->`, `>>`, `*>`, `==`, `**`.
    pub mark: String,
    /// The delivering process's pid, when logged.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    /// `R=`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub router: Option<String>,
    /// `T=`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transport: Option<String>,
    /// Remote host name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote_host: Option<String>,
    /// Remote IP.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote_ip: Option<String>,
    /// Remote port.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote_port: Option<u16>,
    /// TLS cipher, when the connection used TLS.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_cipher: Option<String>,
    /// Whether the remote certificate was verified.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_verified: Option<bool>,
    /// `C=`: the remote confirmation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub confirmation: Option<String>,
    /// The SMTP stage the error happened at.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stage: Option<String>,
    /// The SMTP reply code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<u16>,
    /// The enhanced status code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub enhanced: Option<String>,
    /// The error text (or the reply text).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
    /// The errno Exim logged with a deferral.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errno: Option<i32>,
    /// `DT=`: how long the delivery took, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// The reason class of a deferral or failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<ReasonClass>,
    /// Problems with other hosts in the same run (`H=... Connection refused`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub host_problems: Vec<String>,
}

/// One final address of a message and what happened to it.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Recipient {
    /// What was finally delivered to: a mailbox, a pipe, a file, or
    /// `:blackhole:`. Local deliveries logged as `user <user@domain>` are
    /// written `user@domain`.
    pub address: String,
    /// The envelope recipient it came from, when different.
    #[serde(default)]
    pub original: Option<String>,
    /// Intermediate addresses between the original and the final one.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub via: Vec<String>,
    /// The outcome so far.
    pub outcome: Outcome,
    /// Delivery runs that logged a result for this address (see the
    /// module documentation).
    pub attempts: u32,
    /// The reply code of the last attempt (for a delivery, the code of
    /// the remote confirmation); kept from earlier lines of the same
    /// attempt when the last line has none.
    #[serde(default)]
    pub last_code: Option<u16>,
    /// The text of the last attempt: its error or its confirmation.
    #[serde(default)]
    pub last_text: Option<String>,
    /// The reason class of the last deferral or failure (`cancelled` for an
    /// address an administrator or the system filter failed).
    #[serde(default)]
    pub reason: Option<ReasonClass>,
    /// When the outcome became final.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub final_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<Attempt>,
}

/// Something that happened to the message as a whole.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MessageNote {
    /// When.
    pub at: DateTime<Utc>,
    /// The event kind's name (`frozen`, `unfrozen`, `skipped_frozen`,
    /// `removed`, `cancelled`, `recipient_added`, `marked_delivered`,
    /// `error_ignored`, `no_immediate_delivery`, `rewrite`, ...).
    pub what: String,
    /// Who did it, for admin actions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub by: Option<String>,
    /// Further text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
}

/// Everything known about one message on one host.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The mail server.
    pub host: String,
    /// Exim's message id.
    pub id: MessageId,
    /// The envelope sender; `""` for the null sender of bounces.
    pub sender: Option<String>,
    /// `S=` of the arrival.
    pub size: Option<u64>,
    /// When the message arrived (the `<=` line).
    pub received_at: Option<DateTime<Utc>>,
    /// Where the message is now.
    pub state: MessageState,
    /// True when the log did not show the arrival: the message started
    /// before the log did, so counts for it may be incomplete.
    pub incomplete_start: bool,
    /// True while the message may still see events (not completed/removed).
    pub in_flight: bool,
    /// How the message came to exist.
    pub origin: Origin,
    /// The first and last time any record named this message.
    pub first_seen: Option<DateTime<Utc>>,
    /// See `first_seen`.
    pub last_seen: Option<DateTime<Utc>>,
    /// When `Completed` (or removal) was logged.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Time on queue in milliseconds: `QT=` of `Completed`, or completion
    /// minus arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queue_time_ms: Option<u64>,
    /// `P=`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub protocol: Option<String>,
    /// The sending client of an SMTP arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client: Option<Client>,
    /// `I=` of the arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interface: Option<String>,
    /// `U=`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    /// `A=`: the authenticator of the submission.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub authenticator: Option<String>,
    /// `A=...:id`: the authenticated id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auth_id: Option<String>,
    /// `X=` of the arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_cipher: Option<String>,
    /// `T=` of the arrival.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subject: Option<String>,
    /// `id=` of the arrival: the Message-ID header.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_id_header: Option<String>,
    /// The envelope recipients listed on the arrival line, when logged.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub envelope_recipients: Vec<String>,
    /// For a bounce or delay warning: the message it reports on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent_id: Option<MessageId>,
    /// Bounces and delay warnings this message caused.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub generated: Vec<MessageId>,
    /// True while the message is frozen.
    pub frozen: bool,
    /// One entry per final address.
    pub recipients: Vec<Recipient>,
    /// Freezes, thaws, admin actions and other message-wide events.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<MessageNote>,
    /// How many log records named this message.
    pub records: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_always_carry_the_documented_keys() {
        let r = Recipient {
            address: "alice@example.com".into(),
            ..Recipient::default()
        };
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "address",
            "original",
            "outcome",
            "attempts",
            "last_code",
            "last_text",
            "reason",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["outcome"], "pending");
        assert_eq!(serde_json::from_value::<Recipient>(json).unwrap(), r);
        let sparse: Recipient = serde_json::from_str(
            r#"{"address":"a@example.com","outcome":"delivered","attempts":1}"#,
        )
        .unwrap();
        assert_eq!(sparse.outcome, Outcome::Delivered);
    }
}
