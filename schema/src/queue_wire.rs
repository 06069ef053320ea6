//! The form queue data takes on Kafka in fleet mode.
//!
//! Two topics carry it, both keyed by the mail server's host name, so all
//! of one host's records are in one partition, in the order they were
//! written:
//!
//! - the **queue topic** (nodes → processors and the API): parts of
//!   queue snapshots ([`SnapshotPart`]), one record per message a queue
//!   job acted on ([`QueueActionResult`]), and replies to requests to view
//!   a message ([`ViewReply`]); every record is a [`QueueRecord`];
//! - the **command topic** (the API → nodes): queue jobs ([`QueueJob`])
//!   and view requests ([`ViewRequest`]); every record is a
//!   [`QueueCommand`].
//!
//! # Encoding
//!
//! ```text
//! magic  "EPQ1" on the queue topic, "EPC1" on the command topic
//! kind   one ASCII letter:
//!          queue topic:   S snapshot part, R action result, V view reply
//!          command topic: J queue job, V view request
//! body   one JSON object (UTF-8): the serde form of that kind's type
//! ```
//!
//! The magic names the format and its version: the last character is the
//! version, raised whenever a change would make a reader of the previous
//! version misread a record (a new optional field is no such change). A
//! reader tells apart bytes of another producer, a record of the other
//! topic and a record of a newer version, each with its own
//! [`QueueWireError`]; nothing in it panics on bad bytes. The kind letter
//! lets a reader skip the records it does not want without parsing their
//! JSON ([`QueueRecord::peek_kind`]): the API's reply reader skips
//! snapshot parts, the processors skip view replies.
//!
//! JSON keeps the records readable with any Kafka console tool; a
//! snapshot of 100,000 messages takes about 15 MB of it, well above
//! Kafka's default record limit of 1 MB, so snapshots travel in parts.
//!
//! # Snapshot parts
//!
//! [`SnapshotPart::split`] cuts a snapshot into parts of at most
//! [`PartLimits::max_messages`] messages and about
//! [`PartLimits::max_bytes`] of JSON each (a single message larger than
//! that still travels, alone in its part). Every part carries the host,
//! the time the snapshot was taken (which names the snapshot), its index
//! and the number of parts; an empty queue is one part without messages.
//! [`SnapshotPart::join`] puts complete parts back together.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::queue::{MessageView, QueueActionResult, QueueJob, QueueSnapshot, QueuedMessage};
use crate::MessageId;

/// The first bytes of every record of the queue topic.
pub const QUEUE_MAGIC: &[u8; 4] = b"EPQ1";

/// The first bytes of every record of the command topic.
pub const COMMAND_MAGIC: &[u8; 4] = b"EPC1";

/// The queue topic's name unless configured otherwise.
pub const DEFAULT_QUEUE_TOPIC: &str = "exim-pilot-queue";

/// The command topic's name unless configured otherwise.
pub const DEFAULT_COMMAND_TOPIC: &str = "exim-pilot-queue-commands";

/// One part of a host's queue snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    /// The host whose queue this is.
    pub host: String,
    /// When the snapshot was taken; with the host, it names the snapshot.
    pub taken_at: DateTime<Utc>,
    /// This part's index, from 0.
    pub part: u32,
    /// How many parts the snapshot has (at least 1).
    pub parts: u32,
    /// This part's messages, in Exim's order.
    pub messages: Vec<QueuedMessage>,
}

/// How large a snapshot part may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLimits {
    /// Messages in one part, at most (at least 1).
    pub max_messages: usize,
    /// JSON bytes of one part's messages, about: a part is closed before a
    /// message would take it past this.
    pub max_bytes: usize,
}

impl Default for PartLimits {
    /// 2,000 messages or 512 KiB: about 300 KB for ordinary messages, far
    /// below Kafka's 1 MB default, with room for messages with many
    /// recipients.
    fn default() -> PartLimits {
        PartLimits {
            max_messages: 2_000,
            max_bytes: 512 * 1024,
        }
    }
}

impl SnapshotPart {
    /// Cuts `snapshot` into parts within `limits`, in order.
    pub fn split(snapshot: QueueSnapshot, limits: PartLimits) -> Vec<SnapshotPart> {
        let QueueSnapshot {
            host,
            taken_at,
            messages,
        } = snapshot;
        let groups = group_messages(messages, limits);
        let parts = u32::try_from(groups.len()).unwrap_or(u32::MAX);
        groups
            .into_iter()
            .enumerate()
            .map(|(index, messages)| SnapshotPart {
                host: host.clone(),
                taken_at,
                part: u32::try_from(index).unwrap_or(u32::MAX),
                parts,
                messages,
            })
            .collect()
    }

    /// Puts the parts of one snapshot back together, in their index order.
    /// `None` unless `parts` holds every part of one snapshot exactly once.
    pub fn join(mut parts: Vec<SnapshotPart>) -> Option<QueueSnapshot> {
        parts.sort_by_key(|p| p.part);
        let first = parts.first()?;
        let (host, taken_at, count) = (first.host.clone(), first.taken_at, first.parts);
        let whole = parts.len() == count as usize
            && parts.iter().enumerate().all(|(i, p)| {
                p.part as usize == i && p.parts == count && p.host == host && p.taken_at == taken_at
            });
        if !whole {
            return None;
        }
        let messages = parts.into_iter().flat_map(|p| p.messages).collect();
        Some(QueueSnapshot {
            host,
            taken_at,
            messages,
        })
    }
}

/// Groups messages into parts within `limits`; always at least one group.
fn group_messages(messages: Vec<QueuedMessage>, limits: PartLimits) -> Vec<Vec<QueuedMessage>> {
    let max_messages = limits.max_messages.max(1);
    let mut groups = vec![Vec::new()];
    let mut bytes = 0;
    for message in messages {
        let size = json_len(&message);
        let Some(current) = groups.last_mut() else {
            break;
        };
        let full = current.len() >= max_messages || bytes + size > limits.max_bytes;
        if full && !current.is_empty() {
            groups.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(current) = groups.last_mut() {
            current.push(message);
        }
    }
    groups
}

/// The length of `value`'s JSON, counted without keeping it.
fn json_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing plain data into a writer that never fails cannot fail;
    // were it to, the estimate is only smaller.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0 + 1
}

/// A request to read one view of a queued message, for the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRequest {
    /// A unique id, which the reply carries back.
    pub request_id: String,
    /// The host whose queue holds the message.
    pub host: String,
    /// The message.
    pub id: MessageId,
    /// Which view.
    pub view: MessageView,
    /// After this time nobody waits for the reply any more; a node that
    /// reads the request later replies [`ViewErrorKind::Expired`] without
    /// running Exim.
    pub expires_at: DateTime<Utc>,
}

/// A node's reply to a [`ViewRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewReply {
    /// The request's id.
    pub request_id: String,
    /// The host that replies.
    pub host: String,
    /// The message.
    pub id: MessageId,
    /// Which view.
    pub view: MessageView,
    /// The text, or why there is none.
    pub outcome: ViewOutcome,
}

/// What a view request gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ViewOutcome {
    /// Exim printed it.
    Text {
        /// The text.
        text: String,
        /// True when it was cut (at the body limit, or to fit a record).
        truncated: bool,
    },
    /// It could not be read.
    Error {
        /// What kind of failure.
        kind: ViewErrorKind,
        /// What went wrong, for people.
        message: String,
    },
}

/// Why a view could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewErrorKind {
    /// The message is not (or no longer) on the queue.
    NotQueued,
    /// The request reached the node after it expired; nothing was run.
    Expired,
    /// Exim could not be run or failed.
    Failed,
}

/// A record of the queue topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueRecord {
    /// A part of a queue snapshot.
    SnapshotPart(SnapshotPart),
    /// What a queue job's action did to one message.
    Result(QueueActionResult),
    /// A reply to a view request.
    ViewReply(ViewReply),
}

/// Which kind of record of the queue topic, read without its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueRecordKind {
    /// [`QueueRecord::SnapshotPart`].
    SnapshotPart,
    /// [`QueueRecord::Result`].
    Result,
    /// [`QueueRecord::ViewReply`].
    ViewReply,
}

/// A record of the command topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueCommand {
    /// A queue job for one host's node.
    Job(QueueJob),
    /// A request to read a message.
    View(ViewRequest),
}

impl QueueCommand {
    /// The host whose node the command is for.
    pub fn host(&self) -> &str {
        match self {
            QueueCommand::Job(job) => &job.host,
            QueueCommand::View(request) => &request.host,
        }
    }
}

/// Why bytes are not a record this version reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueWireError {
    /// The bytes do not start with a magic of ours.
    #[error("not an exim-pilot {topic} record (unknown leading bytes)")]
    UnknownFormat {
        /// Which topic's records were expected.
        topic: &'static str,
    },
    /// A record of ours, of a version this one does not read.
    #[error(
        "exim-pilot {topic} record of format version {version:?}, which this version does not \
         read (upgrade exim-pilot here)"
    )]
    UnsupportedVersion {
        /// Which topic's records were expected.
        topic: &'static str,
        /// The version character found.
        version: char,
    },
    /// A record of the other topic.
    #[error("{found} record on the {topic} topic (check the topic settings)")]
    WrongTopic {
        /// Which topic's records were expected.
        topic: &'static str,
        /// Which topic's record it is.
        found: &'static str,
    },
    /// A kind letter no encoder writes.
    #[error("exim-pilot {topic} record of unknown kind {kind:?}")]
    UnknownKind {
        /// Which topic's records were expected.
        topic: &'static str,
        /// The byte found.
        kind: u8,
    },
    /// The body is not that kind's JSON.
    #[error("invalid {kind} record: {error}")]
    Invalid {
        /// The record's kind.
        kind: &'static str,
        /// What the JSON reader said.
        error: String,
    },
    /// The value could not be written as JSON.
    #[error("cannot encode a {kind} record: {error}")]
    Encode {
        /// The record's kind.
        kind: &'static str,
        /// What the JSON writer said.
        error: String,
    },
}

/// The two topics' framing: magic and kind letters.
struct Topic {
    name: &'static str,
    magic: &'static [u8; 4],
    other_name: &'static str,
    other_magic: &'static [u8; 4],
}

const QUEUE: Topic = Topic {
    name: "queue",
    magic: QUEUE_MAGIC,
    other_name: "command",
    other_magic: COMMAND_MAGIC,
};

const COMMAND: Topic = Topic {
    name: "command",
    magic: COMMAND_MAGIC,
    other_name: "queue",
    other_magic: QUEUE_MAGIC,
};

impl Topic {
    /// The kind letter and the body of `bytes`, or why they are not a
    /// record of this topic of this version.
    fn frame<'a>(&self, bytes: &'a [u8]) -> Result<(u8, &'a [u8]), QueueWireError> {
        let (family, version) = (&self.magic[..3], self.magic[3]);
        if bytes.starts_with(self.other_magic) {
            return Err(QueueWireError::WrongTopic {
                topic: self.name,
                found: self.other_name,
            });
        }
        if !bytes.starts_with(family) {
            return Err(QueueWireError::UnknownFormat { topic: self.name });
        }
        match bytes.get(3) {
            Some(&v) if v == version => {}
            Some(&v) => {
                return Err(QueueWireError::UnsupportedVersion {
                    topic: self.name,
                    version: char::from(v),
                })
            }
            None => return Err(QueueWireError::UnknownFormat { topic: self.name }),
        }
        match bytes.get(4) {
            Some(&kind) => Ok((kind, &bytes[5..])),
            None => Err(QueueWireError::Invalid {
                kind: self.name,
                error: "the record ends before its kind".to_string(),
            }),
        }
    }

    fn encode(
        &self,
        kind: u8,
        name: &'static str,
        body: &impl Serialize,
    ) -> Result<Vec<u8>, QueueWireError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.magic);
        out.push(kind);
        serde_json::to_writer(&mut out, body).map_err(|e| QueueWireError::Encode {
            kind: name,
            error: e.to_string(),
        })?;
        Ok(out)
    }

    fn unknown_kind(&self, kind: u8) -> QueueWireError {
        QueueWireError::UnknownKind {
            topic: self.name,
            kind,
        }
    }
}

fn body<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T, QueueWireError> {
    serde_json::from_slice(bytes).map_err(|e| QueueWireError::Invalid {
        kind,
        error: e.to_string(),
    })
}

impl QueueRecordKind {
    fn letter(self) -> u8 {
        match self {
            QueueRecordKind::SnapshotPart => b'S',
            QueueRecordKind::Result => b'R',
            QueueRecordKind::ViewReply => b'V',
        }
    }

    fn from_letter(letter: u8) -> Option<QueueRecordKind> {
        match letter {
            b'S' => Some(QueueRecordKind::SnapshotPart),
            b'R' => Some(QueueRecordKind::Result),
            b'V' => Some(QueueRecordKind::ViewReply),
            _ => None,
        }
    }

    /// Its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueRecordKind::SnapshotPart => "snapshot part",
            QueueRecordKind::Result => "action result",
            QueueRecordKind::ViewReply => "view reply",
        }
    }
}

impl QueueRecord {
    /// The record's kind.
    pub fn kind(&self) -> QueueRecordKind {
        match self {
            QueueRecord::SnapshotPart(_) => QueueRecordKind::SnapshotPart,
            QueueRecord::Result(_) => QueueRecordKind::Result,
            QueueRecord::ViewReply(_) => QueueRecordKind::ViewReply,
        }
    }

    /// The host the record is about (its Kafka key).
    pub fn host(&self) -> &str {
        match self {
            QueueRecord::SnapshotPart(part) => &part.host,
            QueueRecord::Result(result) => &result.host,
            QueueRecord::ViewReply(reply) => &reply.host,
        }
    }

    /// Encodes the record.
    pub fn encode(&self) -> Result<Vec<u8>, QueueWireError> {
        let kind = self.kind();
        let (letter, name) = (kind.letter(), kind.as_str());
        match self {
            QueueRecord::SnapshotPart(part) => QUEUE.encode(letter, name, part),
            QueueRecord::Result(result) => QUEUE.encode(letter, name, result),
            QueueRecord::ViewReply(reply) => QUEUE.encode(letter, name, reply),
        }
    }

    /// The kind of an encoded record, without reading its body.
    pub fn peek_kind(bytes: &[u8]) -> Result<QueueRecordKind, QueueWireError> {
        let (letter, _) = QUEUE.frame(bytes)?;
        QueueRecordKind::from_letter(letter).ok_or_else(|| QUEUE.unknown_kind(letter))
    }

    /// Decodes what [`QueueRecord::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<QueueRecord, QueueWireError> {
        let (letter, json) = QUEUE.frame(bytes)?;
        let kind =
            QueueRecordKind::from_letter(letter).ok_or_else(|| QUEUE.unknown_kind(letter))?;
        let name = kind.as_str();
        Ok(match kind {
            QueueRecordKind::SnapshotPart => QueueRecord::SnapshotPart(body(name, json)?),
            QueueRecordKind::Result => QueueRecord::Result(body(name, json)?),
            QueueRecordKind::ViewReply => QueueRecord::ViewReply(body(name, json)?),
        })
    }
}

impl QueueCommand {
    /// Its name in messages.
    pub fn kind_str(&self) -> &'static str {
        match self {
            QueueCommand::Job(_) => "queue job",
            QueueCommand::View(_) => "view request",
        }
    }

    /// Encodes the command.
    pub fn encode(&self) -> Result<Vec<u8>, QueueWireError> {
        let name = self.kind_str();
        match self {
            QueueCommand::Job(job) => COMMAND.encode(b'J', name, job),
            QueueCommand::View(request) => COMMAND.encode(b'V', name, request),
        }
    }

    /// Decodes what [`QueueCommand::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<QueueCommand, QueueWireError> {
        let (letter, json) = COMMAND.frame(bytes)?;
        match letter {
            b'J' => Ok(QueueCommand::Job(body("queue job", json)?)),
            b'V' => Ok(QueueCommand::View(body("view request", json)?)),
            other => Err(COMMAND.unknown_kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::queue::{QueueAction, QueueActionStatus, QueueRecipient};

    fn id(n: usize) -> MessageId {
        format!("1qAbCK-{n:06}-Xy").parse().unwrap()
    }

    fn message(n: usize, recipients: usize) -> QueuedMessage {
        QueuedMessage {
            id: id(n),
            age_secs: Some(60),
            size: Some(2048),
            sender: "alice@example.net".into(),
            recipients: (0..recipients)
                .map(|r| QueueRecipient {
                    address: format!("r{r}@example.com"),
                    delivered: false,
                })
                .collect(),
            frozen: false,
            spool_error: None,
        }
    }

    fn snapshot(messages: usize) -> QueueSnapshot {
        QueueSnapshot {
            host: "mx1.example.com".into(),
            taken_at: Utc::now(),
            messages: (0..messages).map(|n| message(n, 1)).collect(),
        }
    }

    fn job() -> QueueJob {
        let now = Utc::now();
        QueueJob {
            job_id: "job-1".into(),
            host: "mx1.example.com".into(),
            action: QueueAction::Freeze,
            ids: vec![id(1), id(2)],
            actor: "alice".into(),
            reason: Some("spam run".into()),
            requested_at: now,
            expires_at: now + TimeDelta::minutes(10),
        }
    }

    fn records() -> Vec<QueueRecord> {
        let now = Utc::now();
        vec![
            QueueRecord::SnapshotPart(
                SnapshotPart::split(snapshot(3), PartLimits::default())[0].clone(),
            ),
            QueueRecord::Result(QueueActionResult {
                job_id: "job-1".into(),
                host: "mx1.example.com".into(),
                id: id(1),
                action: QueueAction::Freeze,
                status: QueueActionStatus::Done,
                exit_code: Some(0),
                output: "Message 1qAbCK-000001-Xy is now frozen".into(),
                finished_at: now,
            }),
            QueueRecord::ViewReply(ViewReply {
                request_id: "r-1".into(),
                host: "mx1.example.com".into(),
                id: id(1),
                view: MessageView::Headers,
                outcome: ViewOutcome::Text {
                    text: "Subject: hello\n".into(),
                    truncated: false,
                },
            }),
            QueueRecord::ViewReply(ViewReply {
                request_id: "r-2".into(),
                host: "mx1.example.com".into(),
                id: id(2),
                view: MessageView::Body,
                outcome: ViewOutcome::Error {
                    kind: ViewErrorKind::NotQueued,
                    message: "gone".into(),
                },
            }),
        ]
    }

    fn commands() -> Vec<QueueCommand> {
        vec![
            QueueCommand::Job(job()),
            QueueCommand::View(ViewRequest {
                request_id: "r-1".into(),
                host: "mx1.example.com".into(),
                id: id(1),
                view: MessageView::Log,
                expires_at: Utc::now(),
            }),
        ]
    }

    #[test]
    fn records_and_commands_round_trip() {
        for record in records() {
            let bytes = record.encode().unwrap();
            assert!(bytes.starts_with(QUEUE_MAGIC));
            assert_eq!(QueueRecord::peek_kind(&bytes).unwrap(), record.kind());
            assert_eq!(QueueRecord::decode(&bytes).unwrap(), record);
        }
        for command in commands() {
            let bytes = command.encode().unwrap();
            assert!(bytes.starts_with(COMMAND_MAGIC));
            assert_eq!(QueueCommand::decode(&bytes).unwrap(), command);
        }
    }

    #[test]
    fn the_body_is_readable_json() {
        let bytes = QueueCommand::Job(job()).encode().unwrap();
        assert_eq!(&bytes[..5], b"EPC1J");
        let json: serde_json::Value = serde_json::from_slice(&bytes[5..]).unwrap();
        assert_eq!(json["action"], "freeze");
        assert_eq!(json["ids"][1], "1qAbCK-000002-Xy");
    }

    #[test]
    fn foreign_bytes_other_topics_and_newer_versions_are_told_apart() {
        use QueueWireError::*;
        assert_eq!(
            QueueRecord::decode(b"2024-01-01 a log line"),
            Err(UnknownFormat { topic: "queue" })
        );
        assert_eq!(
            QueueRecord::decode(b"EPB1\x03mx1"),
            Err(UnknownFormat { topic: "queue" })
        );
        assert_eq!(
            QueueRecord::decode(b"EPQ2S{}"),
            Err(UnsupportedVersion {
                topic: "queue",
                version: '2'
            })
        );
        let command = QueueCommand::Job(job()).encode().unwrap();
        assert_eq!(
            QueueRecord::decode(&command),
            Err(WrongTopic {
                topic: "queue",
                found: "command"
            })
        );
        let record = records()[0].encode().unwrap();
        assert_eq!(
            QueueCommand::decode(&record),
            Err(WrongTopic {
                topic: "command",
                found: "queue"
            })
        );
        assert_eq!(
            QueueRecord::decode(b"EPQ1X{}"),
            Err(UnknownKind {
                topic: "queue",
                kind: b'X'
            })
        );
        assert!(matches!(
            QueueCommand::decode(b"EPC1J{\"job_id\":1}"),
            Err(Invalid { .. })
        ));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let all: Vec<Vec<u8>> = records()
            .iter()
            .map(|r| r.encode().unwrap())
            .chain(commands().iter().map(|c| c.encode().unwrap()))
            .collect();
        for bytes in &all {
            for cut in 0..bytes.len() {
                let short = &bytes[..cut];
                assert!(QueueRecord::decode(short).is_err(), "cut at {cut}");
                assert!(QueueCommand::decode(short).is_err(), "cut at {cut}");
            }
            for at in 5..bytes.len() {
                let mut bad = bytes.clone();
                bad[at] ^= 0xa5;
                // Either an error or some record; never a panic.
                let _ = QueueRecord::decode(&bad);
                let _ = QueueCommand::decode(&bad);
            }
        }
        let deep = format!("EPQ1S{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(QueueRecord::decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn a_bad_message_id_is_an_invalid_record() {
        let bytes = QueueCommand::Job(job()).encode().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let bad = text.replace("1qAbCK-000002-Xy", "../etc/passwd");
        match QueueCommand::decode(bad.as_bytes()) {
            Err(QueueWireError::Invalid { kind, error }) => {
                assert_eq!(kind, "queue job");
                assert!(error.contains("not an Exim message id"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_snapshot_splits_within_the_limits_and_joins_back() {
        let whole = snapshot(10);
        let limits = PartLimits {
            max_messages: 4,
            max_bytes: 1 << 20,
        };
        let parts = SnapshotPart::split(whole.clone(), limits);
        let sizes: Vec<usize> = parts.iter().map(|p| p.messages.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert!(parts.iter().enumerate().all(|(i, p)| p.part as usize == i
            && p.parts == 3
            && p.host == whole.host
            && p.taken_at == whole.taken_at));

        let mut shuffled = parts.clone();
        shuffled.reverse();
        assert_eq!(SnapshotPart::join(shuffled), Some(whole.clone()));
        assert_eq!(SnapshotPart::join(parts[..2].to_vec()), None);
        let mut twice = parts.clone();
        twice[2] = parts[1].clone();
        assert_eq!(SnapshotPart::join(twice), None);
    }

    #[test]
    fn parts_are_cut_by_size_and_a_huge_message_travels_alone() {
        let mut whole = snapshot(6);
        whole.messages[3] = message(3, 500);
        let limits = PartLimits {
            max_messages: 100,
            max_bytes: 2_000,
        };
        let parts = SnapshotPart::split(whole.clone(), limits);
        for part in &parts {
            let bytes = QueueRecord::SnapshotPart(part.clone()).encode().unwrap();
            assert!(
                bytes.len() <= limits.max_bytes + 300 || part.messages.len() == 1,
                "{} bytes in {} messages",
                bytes.len(),
                part.messages.len()
            );
        }
        assert!(parts
            .iter()
            .any(|p| p.messages.len() == 1 && p.messages[0].id == id(3)));
        assert_eq!(SnapshotPart::join(parts), Some(whole));
    }

    #[test]
    fn an_empty_queue_is_one_empty_part() {
        let parts = SnapshotPart::split(snapshot(0), PartLimits::default());
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].part, parts[0].parts), (0, 1));
        assert!(parts[0].messages.is_empty());
    }
}
