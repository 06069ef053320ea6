//! Publishing the queue snapshots: each cut into parts, every part keyed
//! by the host.
//!
//! Only the newest snapshot matters: while one is on its way (the broker
//! slow or away), the snapshots taken meanwhile are not queued up behind
//! it; the newest of them waits, replacing any older one, which is
//! counted as superseded and dropped. So at most two snapshots are held,
//! whatever the length of an outage. A snapshot whose parts the broker
//! refused is sent again unless a newer one is waiting, which replaces it.
//!
//! A snapshot already handed to the producer is delivered even when the
//! broker comes back hours later: it tells truly how the queue was at its
//! time, and the newest one follows right after it.

use std::sync::Arc;

use exim_pilot_schema::queue::QueueSnapshot;
use exim_pilot_schema::queue_wire::{QueueRecord, SnapshotPart};
use tokio::sync::mpsc;

use super::outbox::{Flight, FIRST_BACKOFF, MAX_BACKOFF};
use super::stop::Stop;
use super::Node;

/// Publishes the snapshots that arrive on `snapshots` until `stop` is set.
pub(super) async fn publish(
    node: Arc<Node>,
    mut snapshots: mpsc::Receiver<QueueSnapshot>,
    stop: Stop,
) {
    let mut waiting = Waiting::default();
    let mut stop_wait = stop.clone();
    loop {
        let next = match waiting.snapshot.take() {
            Some(snapshot) => Some(snapshot),
            None => tokio::select! {
                _ = stop_wait.wait() => return,
                next = snapshots.recv() => next,
            },
        };
        let Some(mut snapshot) = next else {
            // The snapshotter is gone; so are snapshots.
            return;
        };
        // Snapshots that queued up in the channel meanwhile are older
        // than the last one there.
        while let Ok(newer) = snapshots.try_recv() {
            node.events
                .snapshot_superseded(&snapshot.host, snapshot.taken_at);
            snapshot = newer;
        }
        if publish_one(&node, snapshot, &mut snapshots, &mut waiting, &stop)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The newest snapshot taken while another was on its way.
#[derive(Default)]
struct Waiting {
    snapshot: Option<QueueSnapshot>,
    /// False once the channel is closed.
    closed: bool,
}

impl Waiting {
    fn put(&mut self, node: &Node, snapshot: Option<QueueSnapshot>) {
        match snapshot {
            Some(snapshot) => {
                if let Some(old) = self.snapshot.replace(snapshot) {
                    node.events.snapshot_superseded(&old.host, old.taken_at);
                }
            }
            None => self.closed = true,
        }
    }
}

/// The node stopped.
struct Stopped;

/// Sends one snapshot's parts and waits until the broker has them all, or
/// a newer snapshot replaces it after a failure.
async fn publish_one(
    node: &Node,
    snapshot: QueueSnapshot,
    snapshots: &mut mpsc::Receiver<QueueSnapshot>,
    waiting: &mut Waiting,
    stop: &Stop,
) -> Result<(), Stopped> {
    let (host, taken_at) = (snapshot.host.clone(), snapshot.taken_at);
    let messages = snapshot.messages.len();
    let mut flights = send_parts(node, snapshot).await;
    let (parts, bytes) = (flights.len(), flights.iter().map(Flight::len).sum());
    let mut stop_wait = stop.clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let settle = node.outbox.settle(flights);
        tokio::pin!(settle);
        let failed = loop {
            tokio::select! {
                _ = stop_wait.wait() => return Err(Stopped),
                failed = &mut settle => break failed,
                newer = snapshots.recv(), if !waiting.closed => waiting.put(node, newer),
            }
        };
        if failed.is_empty() {
            node.events
                .snapshot_published(&host, taken_at, parts, messages, bytes);
            return Ok(());
        }
        if waiting.snapshot.is_some() {
            node.events.snapshot_superseded(&host, taken_at);
            return Ok(());
        }
        tokio::select! {
            _ = stop_wait.wait() => return Err(Stopped),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        flights = node.outbox.resend(failed).await;
    }
}

/// Cuts the snapshot into parts and hands each to the producer.
async fn send_parts(node: &Node, snapshot: QueueSnapshot) -> Vec<Flight> {
    let parts = SnapshotPart::split(snapshot, node.config.part_limits);
    let mut flights = Vec::with_capacity(parts.len());
    for part in parts {
        match QueueRecord::SnapshotPart(part).encode() {
            Ok(bytes) => {
                let flight = node
                    .outbox
                    .send(&node.config.queue_topic, node.host(), bytes)
                    .await;
                flights.push(flight);
            }
            Err(error) => node.events.not_encoded("snapshot part", &error),
        }
    }
    flights
}
