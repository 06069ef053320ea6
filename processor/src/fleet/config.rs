//! What a fleet processor needs to know.

use std::time::Duration;

use exim_pilot_schema::Zone;

use crate::correlate::CorrelatorConfig;
use crate::parse::ParseOptions;

/// The options of one processor.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The Kafka bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The raw topic.
    pub topic: String,
    /// The consumer group; processors of one group share the partitions.
    pub group: String,
    /// Further librdkafka settings (`session.timeout.ms`, security...),
    /// applied after ours.
    pub client_options: Vec<(String, String)>,
    /// Zone of log times written without an offset.
    pub zone: Zone,
    /// How records are parsed.
    pub parse: ParseOptions,
    /// How long lifecycles stay in the correlator's memory.
    pub correlator: CorrelatorConfig,
    /// Log records per store batch at most (a Kafka record that would
    /// cross the limit still goes whole into the batch). Reading a
    /// backlog, 100,000 stored a million lines 1.2x to 1.3x faster than
    /// 50,000 (fewer, larger parts for ClickHouse to write and merge),
    /// with a peak of about 0.8 GB instead of 0.6 GB.
    pub batch_records: usize,
    /// Longest time spent filling one batch. A batch is stored as soon
    /// as no more records wait for it; this bounds the filling while
    /// records keep coming.
    pub batch_wait: Duration,
    /// Shortest time between the starts of two batches: a batch that
    /// could go sooner (no more records wait) keeps gathering records
    /// until then, unless it is full or the processor stops. Every insert
    /// makes new parts that ClickHouse then merges with the ones it
    /// holds, so at a steady rate this bounds how often each table is
    /// written (at 2,000 lines/s, batches of a few hundred lines made
    /// ClickHouse spend most of two cores merging), at the cost of up to
    /// this much delay before a line can be queried. Zero writes a batch
    /// as soon as no more records wait.
    pub batch_interval: Duration,
    /// How often a partition's pipeline state is saved (beside the
    /// batches, which do not wait for it). Offsets are committed only
    /// once a state is saved, so a crash makes the next owner read again
    /// up to this much of the partition, plus the save's own time (the
    /// store keeps what it already has once); the state of every message
    /// in flight is the largest write there is. Zero saves it after each
    /// batch, unless the last save is still being written.
    pub state_interval: Duration,
    /// Pauses between store attempts.
    pub retry: Backoff,
    /// Stop once every partition of the topic is assigned to this
    /// processor and read to its end, instead of waiting for more.
    pub stop_when_caught_up: bool,
}

impl FleetConfig {
    /// A configuration with the usual values for everything but the
    /// addresses.
    pub fn new(brokers: &str, topic: &str, group: &str) -> FleetConfig {
        FleetConfig {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            client_options: Vec::new(),
            zone: Zone::Local,
            parse: ParseOptions::default(),
            correlator: CorrelatorConfig::default(),
            batch_records: 100_000,
            batch_wait: Duration::from_millis(300),
            batch_interval: Duration::from_millis(500),
            state_interval: Duration::from_secs(5),
            retry: Backoff::default(),
            stop_when_caught_up: false,
        }
    }
}

/// Exponential back-off: the first pause, doubled after every failure up
/// to a ceiling.
///
/// A store that fails is usually restarting or overloaded; hammering it
/// helps neither, and a processor that waits loses nothing (the records
/// wait in Kafka). The ceiling keeps recovery quick once the store is
/// back: at most one pause of `max` passes before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the first failure.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The pause after `failures` failed attempts (at least one).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_ceiling() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(1000), Duration::from_secs(1));
    }
}
