//! The job worker: runs this host's queue jobs one at a time, in the
//! order they were read, and publishes one result per message.
//!
//! Results travel while the job runs: each is handed to the producer as
//! soon as Exim is done with its message, and the job counts as finished
//! once the broker acknowledged them all. Then the job is noted in the
//! journal of finished jobs and its command's offset may be committed.
//! A job past its expiry runs nothing and reports every message expired
//! ([`Exim::run_job`](super::super::Exim::run_job)).
//!
//! Once the node is told to stop, no further job starts; the one running
//! may finish, and have its results acknowledged, within the shutdown
//! grace, or is abandoned: its command is not committed, so it is read
//! and run again after the restart.

use std::sync::Arc;

use chrono::Utc;
use exim_pilot_schema::queue::{QueueActionResult, QueueJob};
use exim_pilot_schema::queue_wire::QueueRecord;
use tokio::sync::mpsc;

use super::commands::Position;
use super::journal::FinishedJobs;
use super::outbox::Stopped;
use super::stop::Stop;
use super::Node;

/// Runs the jobs of `queue` until it closes or `stop` is set, reporting
/// the position of each finished job to `done`.
pub(super) async fn work(
    node: Arc<Node>,
    mut queue: mpsc::Receiver<(Position, QueueJob)>,
    done: mpsc::UnboundedSender<Position>,
    stop: Stop,
    grace: Stop,
) {
    let (mut finished, problem) = FinishedJobs::open(node.config.state_dir.as_deref(), node.host());
    if let Some(problem) = problem {
        node.events.journal_failed(&problem);
    }
    let mut stop_wait = stop.clone();
    loop {
        let next = tokio::select! {
            biased;
            _ = stop_wait.wait() => return,
            next = queue.recv() => next,
        };
        let Some((position, job)) = next else {
            return;
        };
        match run(&node, &mut finished, &job, &grace).await {
            Ok(()) => {
                let _ = done.send(position);
            }
            Err(Stopped) => {
                node.events.job_interrupted(&job);
                return;
            }
        }
    }
}

/// Runs one job (unless it was finished before) and publishes its
/// results; done once the broker has them all.
async fn run(
    node: &Node,
    finished: &mut FinishedJobs,
    job: &QueueJob,
    grace: &Stop,
) -> Result<(), Stopped> {
    if finished.contains(&job.job_id) {
        node.events.job_repeated(job);
        return Ok(());
    }
    let now = Utc::now();
    node.events.job_started(job, now > job.expires_at);

    let (results, published) = mpsc::unbounded_channel();
    let running = async move {
        let send = move |result: QueueActionResult| {
            let _ = results.send(result);
        };
        // A job for another host never gets here; were one to, Exim's
        // refusal is logged and nothing is run.
        let _ = node.exim.run_job_each(job, now, send).await;
    };
    let mut grace_wait = grace.clone();
    let count = tokio::select! {
        _ = grace_wait.wait() => return Err(Stopped),
        (_, count) = async { tokio::join!(running, publish(node, published, grace)) } => count?,
    };

    if let Err(problem) = finished.record(&job.job_id, Utc::now()).await {
        node.events.journal_failed(&problem);
    }
    node.events.results_published(job, count);
    Ok(())
}

/// Hands each result to the producer as it comes, then waits until the
/// broker has them all; returns how many there were.
async fn publish(
    node: &Node,
    mut results: mpsc::UnboundedReceiver<QueueActionResult>,
    grace: &Stop,
) -> Result<usize, Stopped> {
    let mut flights = Vec::new();
    while let Some(result) = results.recv().await {
        match QueueRecord::Result(result).encode() {
            Ok(bytes) => {
                let flight = node
                    .outbox
                    .send(&node.config.queue_topic, node.host(), bytes)
                    .await;
                flights.push(flight);
            }
            Err(error) => node.events.not_encoded("action result", &error),
        }
    }
    let count = flights.len();
    node.outbox.deliver(flights, grace).await?;
    Ok(count)
}
