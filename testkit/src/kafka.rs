//! Kafka clients for tests: create a topic, read a topic back.
//!
//! Both talk only to the broker address they are given (a [`Server`]'s,
//! on the loopback interface).
//!
//! [`Server`]: crate::Server

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A Kafka record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Vec<u8>,
}

/// A topic name no other test uses: `prefix` and a process-unique suffix.
pub fn unique_topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Creates `topic` with `partitions` partitions.
///
/// # Panics
///
/// When the broker refuses.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("creating an admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = runtime
        .block_on(admin.create_topics([&new], &options))
        .expect("asking the broker to create a topic");
    for result in results {
        if let Err((name, code)) = result {
            panic!("the broker did not create topic {name}: {code:?}");
        }
    }
}

/// Reads partition `partition` of `topic` from its start until `done`
/// says the records read so far are enough, or `timeout` passes; returns
/// what was read.
pub fn read_partition(
    brokers: &str,
    topic: &str,
    partition: i32,
    timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("creating a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .expect("naming the partition");
    consumer
        .assign(&assignment)
        .expect("assigning the partition");

    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while Instant::now() < deadline && !done(&records) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => records.push(Record {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            }),
            Some(Err(e)) => eprintln!("test consumer: {e}"),
            None => {}
        }
    }
    records
}
