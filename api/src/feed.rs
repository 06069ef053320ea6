//! Live data for a process that does not run the pipeline.
//!
//! `exim-pilot serve` answers the API over a store that other processes
//! fill (the processors of a fleet, or `standalone` and `import` on one
//! machine), so it has no committed batches of its own to send to
//! subscriptions. [`spawn`] gives it the same [`LiveBatch`]es: a task
//! polls the store's live feed (`exim_pilot_store::live`) at an interval
//! and sends what each poll finds on the broadcast channel the
//! subscriptions follow, so they work unchanged and filter as they do in
//! `standalone`.
//!
//! # Why the store, not Kafka
//!
//! In a fleet, `serve` could read the raw topic itself, but the records
//! on it are not yet parsed and lifecycles are made by the processors'
//! correlators, whose state for a host lives with the one processor that
//! owns its partition: a second reader would have to correlate every
//! host again to tell what changed. The store holds both, as they are
//! committed, and every deployment has it (a data directory on one
//! machine has no Kafka at all). The price is the poll interval: what a
//! processor commits reaches subscribers up to one interval later.
//!
//! While nobody subscribes, a poll only moves the feed past what was
//! stored, without reading the records and lifecycles themselves; the first poll after someone
//! subscribes reads from where the last one left off, so a subscriber
//! gets everything committed after the poll that preceded it. Several
//! polls in a row read pages until the feed runs dry; a subscriber too
//! slow for them skips batches, as in `standalone`.

use std::sync::Arc;
use std::time::Duration;

use exim_pilot_store::{LiveFeed, LivePage, Store, StoreError};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::live::LiveBatch;

/// The default time between two polls.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Records (and lifecycles) read per page.
const PAGE: usize = 1000;

/// Pages read in one poll at most; what is left waits for the next.
const PAGES_PER_POLL: usize = 50;

/// Starts polling `store` every `interval`, sending what it finds on
/// `live`. The task runs until aborted or until its runtime stops.
pub fn spawn(
    store: Arc<dyn Store>,
    live: broadcast::Sender<Arc<LiveBatch>>,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(run(store, live, interval))
}

async fn run(store: Arc<dyn Store>, live: broadcast::Sender<Arc<LiveBatch>>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed: Option<Box<dyn LiveFeed>> = None;
    let mut failing = false;
    loop {
        ticks.tick().await;
        let outcome = match feed.as_mut() {
            Some(f) => poll(&mut **f, &live).await,
            None => store.live_feed().await.map(|f| {
                feed = Some(f);
            }),
        };
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("Live feed reads the store again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "Live feed cannot read the store; retrying");
            }
            Err(_) => {}
        }
    }
}

/// One poll: past everything when nobody listens, else pages until the
/// feed runs dry.
async fn poll(
    feed: &mut dyn LiveFeed,
    live: &broadcast::Sender<Arc<LiveBatch>>,
) -> Result<(), StoreError> {
    if live.receiver_count() == 0 {
        return feed.skip().await;
    }
    for _ in 0..PAGES_PER_POLL {
        let page = feed.next(PAGE).await?;
        let more = page.more;
        send(live, page);
        if !more {
            break;
        }
    }
    Ok(())
}

fn send(live: &broadcast::Sender<Arc<LiveBatch>>, page: LivePage) {
    if page.is_empty() {
        return;
    }
    let batch = LiveBatch {
        records: page.records,
        lifecycles: page.lifecycles,
    };
    // No receiver left since the check: nobody misses it.
    let _ = live.send(Arc::new(batch));
}
