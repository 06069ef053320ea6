//! Listing the queue every few seconds and handing the snapshots on.
//!
//! The [`Snapshotter`] lists the queue at a fixed interval and sends each
//! [`QueueSnapshot`] into a tokio channel: the binary reads the other end
//! and writes to the store (`standalone`) or publishes to Kafka (fleet
//! mode). A listing that fails is logged and counted, and the next one is
//! tried at the next interval: nothing stops the loop but the shutdown
//! signal or the receiving end going away.
//!
//! Sending waits while the channel is full, and the interval does not try
//! to catch up with ticks it missed meanwhile: a slow consumer slows the
//! listings down instead of piling snapshots up.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use exim_pilot_schema::queue::QueueSnapshot;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::error::EximError;
use super::exim::Exim;

/// How often the queue is listed unless configured otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Lists one host's queue at an interval.
pub struct Snapshotter {
    exim: Arc<Exim>,
    interval: Duration,
}

impl Snapshotter {
    /// Lists the queue through `exim` every `interval` (at least one
    /// millisecond).
    pub fn new(exim: Arc<Exim>, interval: Duration) -> Snapshotter {
        Snapshotter {
            exim,
            interval: interval.max(Duration::from_millis(1)),
        }
    }

    /// Lists the queue once. Lines of the listing that could not be read
    /// are logged and counted; their messages are in the snapshot.
    pub async fn snapshot(&self) -> Result<QueueSnapshot, EximError> {
        let taken_at = Utc::now();
        let started = Instant::now();
        let listing = match self.exim.list().await {
            Ok(listing) => listing,
            Err(error) => {
                self.exim.events().snapshot_failed(self.exim.host(), &error);
                return Err(error);
            }
        };
        let snapshot = QueueSnapshot {
            host: self.exim.host().to_string(),
            taken_at,
            messages: listing.messages,
        };
        self.exim
            .events()
            .snapshot_taken(&snapshot, &listing.problems, started.elapsed());
        Ok(snapshot)
    }

    /// Lists the queue now and then at every interval, sending each
    /// snapshot to `sink`, until `shutdown` completes or `sink` is closed.
    pub async fn run(self, sink: mpsc::Sender<QueueSnapshot>, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {}
            }

            // A failure is already logged and counted; the next tick tries
            // again.
            let listed = tokio::select! {
                _ = &mut shutdown => return,
                listed = self.snapshot() => listed,
            };
            let Ok(snapshot) = listed else {
                continue;
            };

            tokio::select! {
                _ = &mut shutdown => return,
                sent = sink.send(snapshot) => {
                    if sent.is_err() {
                        self.exim.events().snapshots_unwanted(self.exim.host());
                        return;
                    }
                }
            }
        }
    }
}
