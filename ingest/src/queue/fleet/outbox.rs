//! Publishing records until the broker has them.
//!
//! An [`Outbox`] wraps one idempotent producer (`acks=all`). Records are
//! handed to it in order ([`Outbox::send`], which waits while librdkafka's
//! own queue is full) and each becomes a [`Flight`] holding its bytes
//! until the broker's report comes ([`Outbox::settle`]). A record
//! reported failed is sent again, after a back-off, by
//! [`Outbox::deliver`], which only returns once every record is
//! delivered or the node stops.
//!
//! The node's producer never gives a record up locally
//! (`message.timeout.ms=0`): while the broker is away, records wait in
//! librdkafka and their reports come when it is back. Reports of failure
//! are therefore rare (a record too large for the broker, a fatal
//! producer error, a broker that lost its producer state in a restart and
//! refuses the producer's sequence numbers); after any of them the
//! producer is replaced by a new one, with a new producer id, as the raw
//! records' publisher does: a producer that failed for good accepts
//! nothing more, and one whose sequence the broker refuses would be
//! refused for ever. Records still in the old producer are then reported
//! failed and sent again by the new one.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use super::client::Logged;
use super::events::NodeEvents;
use super::stop::Stop;

/// The pause after the first failed delivery; it doubles up to
/// [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest pause between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long to wait before offering a record again to a full producer
/// queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(20);

/// The node stopped before every record was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

/// One record handed to the producer, kept until the broker took it.
pub(crate) struct Flight {
    topic: String,
    key: String,
    payload: Vec<u8>,
    state: FlightState,
}

enum FlightState {
    /// Queued in the producer; the report comes through the future.
    Sent(DeliveryFuture),
    /// The producer refused it at once.
    Refused(KafkaError),
}

impl Flight {
    /// The record's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.payload.len()
    }
}

/// A producer that delivers every record eventually.
pub(crate) struct Outbox {
    config: ClientConfig,
    producer: Mutex<FutureProducer<Logged>>,
    events: NodeEvents,
}

impl Outbox {
    /// Creates the producer from `config`.
    pub(crate) fn new(config: ClientConfig, events: NodeEvents) -> Result<Outbox, KafkaError> {
        let producer = config.create_with_context(Logged::default())?;
        Ok(Outbox {
            config,
            producer: Mutex::new(producer),
            events,
        })
    }

    fn producer(&self) -> FutureProducer<Logged> {
        self.producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hands one record to the producer, waiting while its queue is full.
    pub(crate) async fn send(&self, topic: &str, key: &str, payload: Vec<u8>) -> Flight {
        let state = self.enqueue(topic, key, &payload).await;
        Flight {
            topic: topic.to_string(),
            key: key.to_string(),
            payload,
            state,
        }
    }

    async fn enqueue(&self, topic: &str, key: &str, payload: &[u8]) -> FlightState {
        let producer = self.producer();
        loop {
            let record = FutureRecord::to(topic).key(key).payload(payload);
            match producer.send_result(record) {
                Ok(delivery) => return FlightState::Sent(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((error, _)) => return FlightState::Refused(error),
            }
        }
    }

    /// Waits for the report of every flight, in order; returns those that
    /// failed, to be sent again.
    pub(crate) async fn settle(&self, flights: Vec<Flight>) -> Vec<Flight> {
        let mut failed = Vec::new();
        for mut flight in flights {
            let error = match std::mem::replace(
                &mut flight.state,
                FlightState::Refused(KafkaError::Canceled),
            ) {
                FlightState::Sent(delivery) => match delivery.await {
                    Ok(Ok(_)) => continue,
                    Ok(Err((error, _))) => error,
                    // The producer was dropped with the record in it.
                    Err(_) => KafkaError::Canceled,
                },
                FlightState::Refused(error) => error,
            };
            self.events.publish_failed(&flight.topic, &error);
            flight.state = FlightState::Refused(error);
            failed.push(flight);
        }
        if let Some(first) = failed.first() {
            if let FlightState::Refused(error) = &first.state {
                self.replace_producer(error);
            }
        }
        failed
    }

    /// Sends failed flights again, in order.
    pub(crate) async fn resend(&self, flights: Vec<Flight>) -> Vec<Flight> {
        let mut sent = Vec::with_capacity(flights.len());
        for mut flight in flights {
            flight.state = self
                .enqueue(&flight.topic, &flight.key, &flight.payload)
                .await;
            sent.push(flight);
        }
        sent
    }

    /// Waits until every flight is delivered, sending the failed ones
    /// again with growing pauses, or until `stop` is set.
    pub(crate) async fn deliver(&self, flights: Vec<Flight>, stop: &Stop) -> Result<(), Stopped> {
        let mut stop = stop.clone();
        let mut flights = flights;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failed = tokio::select! {
                _ = stop.wait() => return Err(Stopped),
                failed = self.settle(flights) => failed,
            };
            if failed.is_empty() {
                return Ok(());
            }
            tokio::select! {
                _ = stop.wait() => return Err(Stopped),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            flights = self.resend(failed).await;
        }
    }

    /// Sends one record and waits for the broker's report, once: for
    /// callers that answer a person and give up after the producer's
    /// message timeout.
    pub(crate) async fn deliver_once(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<(), KafkaError> {
        let flight = self.send(topic, key, payload).await;
        let result = match flight.state {
            FlightState::Sent(delivery) => match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error),
                Err(_) => Err(KafkaError::Canceled),
            },
            FlightState::Refused(error) => Err(error),
        };
        if let Err(error) = &result {
            self.replace_producer(error);
        }
        result
    }

    /// Replaces the producer after a failed delivery by a new one (a new
    /// producer id, so the brokers hold no sequence numbers against it).
    /// A flight cancelled because its producer was replaced already
    /// changes nothing.
    fn replace_producer(&self, failure: &KafkaError) {
        if matches!(failure, KafkaError::Canceled) {
            return;
        }
        let mut producer = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        let reason = match producer.client().fatal_error() {
            Some((code, reason)) => format!("{code:?}: {reason}"),
            None => failure.to_string(),
        };
        match self.config.create_with_context(Logged::default()) {
            Ok(fresh) => {
                *producer = fresh;
                self.events.producer_replaced(&reason);
            }
            Err(error) => self.events.producer_not_replaced(&error),
        }
    }

    /// Waits up to `timeout` for records still in the producer.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let producer = self.producer();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if let Ok(Err(error)) = flushed {
            tracing::debug!(error = %error, "Kafka producer not flushed");
        }
    }
}
