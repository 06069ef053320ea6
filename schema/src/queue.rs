//! Exim's queue: what a host's queue holds and what operators do to it.
//!
//! The node on each mail server lists its queue every few seconds and
//! hands a [`QueueSnapshot`] on: straight to the store on one machine,
//! through Kafka in fleet mode. Operators act on queued messages with a
//! [`QueueJob`]: one [`QueueAction`] on a set of message ids of one host.
//! The host's node runs it message by message and reports one
//! [`QueueActionResult`] per message.
//!
//! Everything here is plain data with serde, so every mode moves the same
//! shapes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::MessageId;

/// One recipient of a queued message, as `exim -bp` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecipient {
    /// The address, without Exim's `D ` marker.
    pub address: String,
    /// Whether Exim marked it delivered (`D`): the message stays queued
    /// for its other recipients.
    pub delivered: bool,
}

/// One message on a host's queue at the time of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Exim's id for it.
    pub id: MessageId,
    /// How long it has been on the queue, in seconds, as precise as Exim
    /// prints it (minutes up to 90 minutes, hours up to 72 hours, then
    /// days). `None` when Exim could not read the spool file.
    pub age_secs: Option<u64>,
    /// Its size in bytes (Exim prints `2.9K`, `1.2M` in 1024-based units,
    /// so this is rounded like Exim's figure). `None` when unknown.
    pub size: Option<u64>,
    /// The envelope sender; empty for a bounce (`<>`), and when Exim could
    /// not read the envelope (then `age_secs` is `None` too).
    pub sender: String,
    /// Every recipient, delivered ones marked.
    pub recipients: Vec<QueueRecipient>,
    /// Whether the message is frozen.
    pub frozen: bool,
    /// Exim's complaint when it could not read the message's spool file
    /// (`*** spool read error: ... ***`): the message is kept, the error
    /// shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_error: Option<String>,
}

impl QueuedMessage {
    /// Whether this is a bounce: its sender is empty and was read. Exim
    /// prints a message's age only when it could read its envelope, so a
    /// message without an age has an unknown sender, not an empty one.
    pub fn is_bounce(&self) -> bool {
        self.sender.is_empty() && self.age_secs.is_some()
    }

    /// The recipients still waiting for delivery.
    pub fn undelivered(&self) -> impl Iterator<Item = &QueueRecipient> {
        self.recipients.iter().filter(|r| !r.delivered)
    }
}

/// A host's whole queue at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// The host whose queue this is.
    pub host: String,
    /// When the listing was taken (the node's clock).
    pub taken_at: DateTime<Utc>,
    /// Every message on the queue, in Exim's order.
    pub messages: Vec<QueuedMessage>,
}

/// The figures a snapshot adds up to: what trends and health are made of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTotals {
    /// Messages on the queue (what `exim -bpc` prints).
    pub messages: u64,
    /// Of them frozen.
    pub frozen: u64,
    /// Of them bounces.
    pub bounces: u64,
    /// Of them with a spool read error.
    pub spool_errors: u64,
    /// Recipients still waiting.
    pub undelivered_recipients: u64,
    /// Sum of known sizes, in bytes.
    pub bytes: u64,
    /// Age of the oldest message, in seconds.
    pub oldest_age_secs: Option<u64>,
}

impl QueueSnapshot {
    /// Adds the snapshot up.
    pub fn totals(&self) -> QueueTotals {
        let mut totals = QueueTotals::default();
        for message in &self.messages {
            totals.messages += 1;
            totals.frozen += u64::from(message.frozen);
            totals.bounces += u64::from(message.is_bounce());
            totals.spool_errors += u64::from(message.spool_error.is_some());
            totals.undelivered_recipients += message.undelivered().count() as u64;
            totals.bytes += message.size.unwrap_or(0);
            if let Some(age) = message.age_secs {
                totals.oldest_age_secs = Some(totals.oldest_age_secs.map_or(age, |o| o.max(age)));
            }
        }
        totals
    }
}

/// What an operator can do to a queued message, with the Exim option that
/// does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueAction {
    /// Try to deliver it now (`exim -M`).
    Deliver,
    /// Freeze it (`exim -Mf`).
    Freeze,
    /// Thaw it (`exim -Mt`).
    Thaw,
    /// Remove it without a bounce (`exim -Mrm`).
    Remove,
    /// Give up on it and bounce it to its sender (`exim -Mg`).
    GiveUp,
}

impl QueueAction {
    /// Every action.
    pub const ALL: [QueueAction; 5] = [
        QueueAction::Deliver,
        QueueAction::Freeze,
        QueueAction::Thaw,
        QueueAction::Remove,
        QueueAction::GiveUp,
    ];

    /// The Exim command-line option that performs it.
    pub fn exim_option(self) -> &'static str {
        match self {
            QueueAction::Deliver => "-M",
            QueueAction::Freeze => "-Mf",
            QueueAction::Thaw => "-Mt",
            QueueAction::Remove => "-Mrm",
            QueueAction::GiveUp => "-Mg",
        }
    }

    /// Its name in configs, the API and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueAction::Deliver => "deliver",
            QueueAction::Freeze => "freeze",
            QueueAction::Thaw => "thaw",
            QueueAction::Remove => "remove",
            QueueAction::GiveUp => "give_up",
        }
    }
}

impl fmt::Display for QueueAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a queue action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown queue action {0:?} (expected deliver, freeze, thaw, remove or give_up)")]
pub struct UnknownQueueAction(pub String);

impl FromStr for QueueAction {
    type Err = UnknownQueueAction;

    fn from_str(s: &str) -> Result<QueueAction, UnknownQueueAction> {
        QueueAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownQueueAction(s.to_string()))
    }
}

/// One operator's request: one action on some messages of one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueJob {
    /// A unique id (a UUID), what results and the audit trail refer to.
    pub job_id: String,
    /// The host whose queue it acts on.
    pub host: String,
    /// What to do.
    pub action: QueueAction,
    /// To which messages, validated ids only.
    pub ids: Vec<MessageId>,
    /// Who asked.
    pub actor: String,
    /// Why, in the operator's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was asked.
    pub requested_at: DateTime<Utc>,
    /// After this time a node must not run it any more (a node that was
    /// away must not act on a stale decision); it reports
    /// [`QueueActionStatus::Expired`] instead.
    pub expires_at: DateTime<Utc>,
}

/// How running an action on one message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueActionStatus {
    /// Exim did it (exit status 0).
    Done,
    /// Exim refused or failed (the output says why).
    Failed,
    /// Exim did not finish in time and was killed.
    TimedOut,
    /// The job reached the node after its expiry and was not run.
    Expired,
}

impl QueueActionStatus {
    /// Its name in the API and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueActionStatus::Done => "done",
            QueueActionStatus::Failed => "failed",
            QueueActionStatus::TimedOut => "timed_out",
            QueueActionStatus::Expired => "expired",
        }
    }
}

/// What running a job's action on one message did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueActionResult {
    /// The job.
    pub job_id: String,
    /// The host that ran it.
    pub host: String,
    /// The message.
    pub id: MessageId,
    /// The action.
    pub action: QueueAction,
    /// How it ended.
    pub status: QueueActionStatus,
    /// Exim's exit status, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What Exim printed (stdout then stderr), cut to a few KiB.
    pub output: String,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// Which view of a queued message to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageView {
    /// Envelope and headers (`exim -Mvh`).
    Headers,
    /// The message's own log (`exim -Mvl`).
    Log,
    /// The body (`exim -Mvb`), cut to a configured size.
    Body,
}

impl MessageView {
    /// The Exim command-line option that prints it.
    pub fn exim_option(self) -> &'static str {
        match self {
            MessageView::Headers => "-Mvh",
            MessageView::Log => "-Mvl",
            MessageView::Body => "-Mvb",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, age: Option<u64>, sender: &str, delivered: &[bool]) -> QueuedMessage {
        QueuedMessage {
            id: id.parse().unwrap(),
            age_secs: age,
            size: Some(100),
            sender: sender.to_string(),
            recipients: delivered
                .iter()
                .enumerate()
                .map(|(i, &delivered)| QueueRecipient {
                    address: format!("r{i}@example.com"),
                    delivered,
                })
                .collect(),
            frozen: sender.is_empty(),
            spool_error: age.is_none().then(|| "spool read error".to_string()),
        }
    }

    #[test]
    fn totals_count_messages_not_recipients() {
        let snapshot = QueueSnapshot {
            host: "mx1".into(),
            taken_at: Utc::now(),
            messages: vec![
                message(
                    "1qAbCK-000123-Xy",
                    Some(5280),
                    "a@example.net",
                    &[true, false],
                ),
                message("1tNa2Z-00000000X1c-03Rm", Some(259_200), "", &[false]),
                message("1tQw7K-00000000Bq3-0KzP", None, "b@example.net", &[false]),
            ],
        };
        let totals = snapshot.totals();
        assert_eq!(totals.messages, 3);
        assert_eq!(totals.frozen, 1);
        assert_eq!(totals.bounces, 1);
        assert_eq!(totals.spool_errors, 1);
        assert_eq!(totals.undelivered_recipients, 3);
        assert_eq!(totals.bytes, 300);
        assert_eq!(totals.oldest_age_secs, Some(259_200));
    }

    #[test]
    fn actions_round_trip_their_names() {
        for action in QueueAction::ALL {
            assert_eq!(action.as_str().parse::<QueueAction>().unwrap(), action);
        }
        assert!("rm".parse::<QueueAction>().is_err());
        let json = serde_json::to_string(&QueueAction::GiveUp).unwrap();
        assert_eq!(json, "\"give_up\"");
    }
}
