//! The `queueJobResults` subscription: a job's per-message results as
//! they reach the store.
//!
//! Results are written by whoever runs the job, in another process in
//! fleet mode, so the subscription polls the store
//! (`ApiConfig::queue_results_poll`), which works the same in every mode.
//! It ends once every message of the job has a result, or when the job
//! can no longer produce any: [`GRACE`] after it expired (a node that
//! never got it sends nothing).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Result, Subscription};
use chrono::Utc;
use futures_util::stream::{self, Stream, StreamExt};

use exim_pilot_schema::queue::QueueJob;
use exim_pilot_schema::MessageId;
use exim_pilot_store::Role;

use super::types::ResultView;
use crate::graphql::{api, caller, Api};

/// How long after a job's expiry its results are still waited for: the
/// messages a node started before the expiry may take that long to end.
pub const GRACE: Duration = Duration::from_secs(5 * 60);

/// Subscriptions to the mail servers' queues.
#[derive(Default)]
pub struct QueueSubscription;

#[Subscription]
impl QueueSubscription {
    /// The results of a queue job, one per message, as they arrive (those
    /// already in first); the stream ends when every message of the job
    /// has one, or five minutes after the job expired.
    async fn queue_job_results(
        &self,
        ctx: &Context<'_>,
        job_id: String,
    ) -> Result<impl Stream<Item = Result<ResultView>>> {
        let p = caller(ctx, Role::Viewer).await?.clone();
        let api = Arc::clone(api(ctx)?);
        let job = api
            .store
            .queue_job(&job_id)
            .await?
            .map(|(job, _)| job)
            .filter(|job| p.may_see(&job.host))
            .ok_or_else(|| {
                super::error("NOT_FOUND", format!("there is no queue job {job_id:?}"))
            })?;
        let watch = Watch {
            api,
            job,
            seen: HashSet::new(),
            first: true,
            done: false,
        };
        Ok(stream::unfold(watch, Watch::next).flat_map(stream::iter))
    }
}

/// Where a subscription stands.
struct Watch {
    api: Arc<Api>,
    job: QueueJob,
    seen: HashSet<MessageId>,
    first: bool,
    done: bool,
}

impl Watch {
    /// The results that arrived since the last look, after waiting the
    /// poll interval (except the first time); `None` once done.
    async fn next(mut self) -> Option<(Vec<Result<ResultView>>, Watch)> {
        if self.done {
            return None;
        }
        if !self.first {
            tokio::time::sleep(self.api.config.queue_results_poll).await;
        }
        self.first = false;

        let found = match self.api.store.queue_job(&self.job.job_id).await {
            Ok(found) => found,
            Err(e) => {
                self.done = true;
                return Some((vec![Err(e.into())], self));
            }
        };
        let results = found.map(|(_, r)| r).unwrap_or_default();
        let new: Vec<Result<ResultView>> = results
            .iter()
            .filter(|r| self.seen.insert(r.id))
            .map(|r| Ok(ResultView::from(r)))
            .collect();
        self.done = self.job.ids.iter().all(|id| self.seen.contains(id)) || self.too_late();
        Some((new, self))
    }

    /// Whether the job can no longer produce results.
    fn too_late(&self) -> bool {
        let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
        Utc::now() > self.job.expires_at + grace
    }
}
