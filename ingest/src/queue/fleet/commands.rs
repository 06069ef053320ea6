//! Reading the command topic: this host's jobs to the job worker, its
//! view requests to view tasks, everything else skipped; offsets committed
//! as the work of each command is done.
//!
//! The node's consumer group is its own (see [`node_group`]), so it reads
//! every partition of the command topic and picks its host's commands by
//! their key and their `host` field. Reading all partitions does not
//! depend on which partitioner the API's producer used; commands are few
//! and small, so reading other hosts' ones costs little.
//!
//! A command's offset is committed only once its work is done: for a job,
//! once the broker acknowledged every result; for a view, once it
//! acknowledged the reply; skipped records at once. Jobs run one at a
//! time, in order; views run beside them (a few at a time), so that a
//! long job does not keep an operator from reading a message. Work ends in
//! another order than it began, so the offset committed in a partition is
//! that of its oldest command not done yet: after a crash the node reads
//! again from there (see the journal of finished jobs for why a job is
//! not run twice).
//!
//! [`node_group`]: super::node_group

use std::sync::Arc;

use exim_pilot_schema::queue::QueueJob;
use exim_pilot_schema::queue_wire::{QueueCommand, ViewRequest};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::client::Logged;
use super::stop::Stop;
use super::{jobs, views, Node};

/// Jobs read and waiting for the job worker, at most; beyond it reading
/// the command topic pauses.
const JOB_BACKLOG: usize = 64;

/// Where a record sits in the command topic, and which offsets may be
/// committed: a command's offset once its work is done.
pub(super) use exim_pilot_schema::commit::{CommitPoints as Offsets, Position};

/// A record of the command topic, detached from the consumer.
struct Inbound {
    position: Position,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Inbound {
    fn from(message: &BorrowedMessage<'_>) -> Inbound {
        Inbound {
            position: Position {
                partition: message.partition(),
                offset: message.offset(),
            },
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// What to do with a record.
enum Work {
    Skip,
    Job(QueueJob),
    View(ViewRequest),
}

/// Reads commands until `stop` is set; then lets the work under way end
/// (each piece within the shutdown grace) and commits what was done.
pub(super) async fn serve(node: Arc<Node>, consumer: StreamConsumer<Logged>, stop: Stop) {
    let grace = stop.delayed(node.config.shutdown_timeout);
    let (done_sender, mut done) = mpsc::unbounded_channel();
    let (job_sender, job_queue) = mpsc::channel(JOB_BACKLOG);
    let mut workers = JoinSet::new();
    workers.spawn(jobs::work(
        node.clone(),
        job_queue,
        done_sender.clone(),
        stop.clone(),
        grace.clone(),
    ));
    let views = Arc::new(Semaphore::new(node.config.concurrent_views.max(1)));
    let mut offsets = Offsets::default();
    let mut stop_wait = stop.clone();

    loop {
        tokio::select! {
            _ = stop_wait.wait() => break,
            Some(position) = done.recv() => {
                offsets.done(position);
                commit(&node, &consumer, &mut offsets, CommitMode::Async);
            }
            Some(_) = workers.join_next(), if workers.len() > 1 => {}
            received = consumer.recv() => {
                let inbound = match received {
                    Ok(message) => Inbound::from(&message),
                    Err(error) => {
                        node.events.consumer_error(&error);
                        continue;
                    }
                };
                let position = inbound.position;
                offsets.received(position);
                match classify(&node, inbound) {
                    Work::Skip => {
                        offsets.done(position);
                        commit(&node, &consumer, &mut offsets, CommitMode::Async);
                    }
                    Work::Job(job) => {
                        tokio::select! {
                            _ = stop_wait.wait() => break,
                            _ = job_sender.send((position, job)) => {}
                        }
                    }
                    Work::View(request) => {
                        let permit = tokio::select! {
                            _ = stop_wait.wait() => break,
                            permit = views.clone().acquire_owned() => permit,
                        };
                        let Ok(permit) = permit else { break };
                        workers.spawn(views::serve(
                            node.clone(),
                            request,
                            position,
                            done_sender.clone(),
                            grace.clone(),
                            permit,
                        ));
                    }
                }
            }
        }
    }

    // The work under way ends within the grace; what it finished is
    // committed.
    drop(job_sender);
    drop(done_sender);
    while workers.join_next().await.is_some() {}
    while let Ok(position) = done.try_recv() {
        offsets.done(position);
    }
    commit(&node, &consumer, &mut offsets, CommitMode::Sync);
}

/// Decides what a record asks of this node.
fn classify(node: &Node, inbound: Inbound) -> Work {
    let Position { partition, offset } = inbound.position;
    if let Some(key) = &inbound.key {
        if key.as_slice() != node.host().as_bytes() {
            node.events
                .command_for_another_host(&String::from_utf8_lossy(key), partition, offset);
            return Work::Skip;
        }
    }
    let command = match QueueCommand::decode(&inbound.payload) {
        Ok(command) => command,
        Err(error) => {
            node.events.command_undecodable(partition, offset, &error);
            return Work::Skip;
        }
    };
    if command.host() != node.host() {
        node.events
            .command_for_another_host(command.host(), partition, offset);
        return Work::Skip;
    }
    match command {
        QueueCommand::Job(job) => {
            node.events.command_received("job", partition, offset);
            Work::Job(job)
        }
        QueueCommand::View(request) => {
            node.events.command_received("view", partition, offset);
            Work::View(request)
        }
    }
}

/// Commits the offsets that moved since the last commit.
fn commit(node: &Node, consumer: &StreamConsumer<Logged>, offsets: &mut Offsets, mode: CommitMode) {
    let moved = offsets.to_commit();
    if moved.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for &(partition, offset) in &moved {
        if let Err(error) = list.add_partition_offset(
            &node.config.command_topic,
            partition,
            Offset::Offset(offset),
        ) {
            node.events.offset_commit_failed(&error);
            return;
        }
    }
    match consumer.commit(&list, mode) {
        Ok(()) => offsets.committed(&moved),
        Err(error) => node.events.offset_commit_failed(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn the_commit_point_waits_for_the_oldest_command_not_done() {
        let mut offsets = Offsets::default();
        for offset in 10..13 {
            offsets.received(at(0, offset));
        }
        offsets.received(at(1, 4));
        assert_eq!(offsets.to_commit(), vec![(0, 10), (1, 4)]);
        offsets.committed(&[(0, 10), (1, 4)]);
        assert_eq!(offsets.to_commit(), vec![]);

        // The view at 11 ends before the job at 10.
        offsets.done(at(0, 11));
        assert_eq!(offsets.to_commit(), vec![]);
        offsets.done(at(0, 10));
        assert_eq!(offsets.to_commit(), vec![(0, 12)]);
        offsets.done(at(0, 12));
        offsets.done(at(1, 4));
        assert_eq!(offsets.to_commit(), vec![(0, 13), (1, 5)]);
    }
}
