//! The Kafka clients of the queue's transport: how they are configured
//! and where their own complaints go.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::log_client_message;

/// How long the same client error is not logged again at warning level.
/// While a broker is down librdkafka reports it every few seconds.
const REPEAT_WARNING_AFTER: Duration = Duration::from_secs(30);

/// The settings of a producer: idempotent, every replica acknowledging
/// (`acks=all`), `client_id` naming it to the brokers, records never
/// given up locally unless `message_timeout` says otherwise; `options`
/// (the operator's librdkafka properties) last.
pub(crate) fn producer_config(
    brokers: &str,
    client_id: &str,
    message_timeout: Option<Duration>,
    max_record_bytes: usize,
    options: &[(String, String)],
) -> ClientConfig {
    let timeout_ms = message_timeout.map_or(0, |t| t.as_millis().max(1));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .set(
            "message.max.bytes",
            (max_record_bytes.max(1_000_000) + 64 * 1024).to_string(),
        );
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// The settings of a consumer of `group` that commits its offsets itself,
/// or not at all; `options` last.
pub(crate) fn consumer_config(
    brokers: &str,
    client_id: &str,
    group: &str,
    options: &[(String, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("group.id", group);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// Sends librdkafka's logs and errors to `tracing`, a repeated error at
/// debug level only.
#[derive(Default)]
pub(crate) struct Logged {
    last_warning: Mutex<Option<(String, Instant)>>,
}

impl Logged {
    /// True when `text` was not warned about in the last
    /// [`REPEAT_WARNING_AFTER`].
    fn is_new_warning(&self, text: &str) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let repeated = last
            .as_ref()
            .is_some_and(|(t, at)| t == text && at.elapsed() < REPEAT_WARNING_AFTER);
        if !repeated {
            *last = Some((text.to_string(), Instant::now()));
        }
        !repeated
    }
}

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_client_message(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        let text = format!("{error}: {reason}");
        if self.is_new_warning(&text) {
            tracing::warn!(error = %error, reason, "Kafka client error");
        } else {
            tracing::debug!(error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for Logged {}
