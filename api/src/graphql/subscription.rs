//! Subscriptions: what the pipeline commits, as it commits it.
//!
//! Each subscription follows the broadcast of committed batches
//! ([`crate::live`]) and keeps what its filter asks for. A subscriber too
//! slow to keep up skips the batches it missed rather than holding the
//! pipeline back, and is told so: it receives one error with the code
//! `LAGGED` and the number of batches skipped, then what comes next.
//!
//! A subscription holds nothing of its own while its client is slow: it
//! walks the batch it is in (shared with every other subscription) one
//! record at a time, making each answer only when the one before was
//! taken. What is buffered for a client that does not read is thus the
//! broadcast's batches, shared, and the few answers of its connection's
//! queue (see [`crate::ws`]), however many subscriptions it opened.
//!
//! The process that runs the pipeline (standalone mode)
//! publishes the batches it commits; `serve` publishes what it polls from
//! the store (see [`crate::feed`]), up to a poll interval later.

use std::sync::Arc;

use async_graphql::{
    Context, Error, ErrorExtensions, InputObject, Result, Subscription as SubscriptionMacro,
};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;

use exim_pilot_schema::Lifecycle;
use exim_pilot_store::{Role, StoredRecord};

use super::types::{LogLine, Message};
use super::{api, caller};
use crate::live::LiveBatch;

/// Which lifecycle changes to receive.
#[derive(InputObject, Default)]
pub struct MessageChangeFilter {
    /// Only this mail server.
    pub host: Option<String>,
    /// Only this message id.
    pub id: Option<String>,
    /// Only messages from or to this address.
    pub address: Option<String>,
}

/// Which log records to receive.
#[derive(InputObject, Default)]
pub struct LogRecordFilter {
    /// Only this mail server.
    pub host: Option<String>,
    /// Only records naming this message id.
    pub message_id: Option<String>,
    /// Only this kind of record (`arrival`, `delivery`, `reject`...).
    pub kind: Option<String>,
    /// Only records containing this text (case-insensitive).
    pub text: Option<String>,
}

/// What the broadcast gives a subscription: a batch, or word that it
/// fell behind.
enum Live {
    /// A committed batch.
    Batch(Arc<LiveBatch>),
    /// This many batches were skipped.
    Lagged(u64),
}

/// The batches committed from now on, with a notice where some were
/// skipped.
fn batches(rx: broadcast::Receiver<Arc<LiveBatch>>) -> impl Stream<Item = Live> {
    stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(batch) => Some((Live::Batch(batch), rx)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "Slow subscriber skipped batches");
                Some((Live::Lagged(missed), rx))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// The error a subscriber gets for the batches it skipped.
fn lagged(missed: u64) -> Error {
    Error::new(format!(
        "this subscription fell behind and skipped {missed} batches of what was committed"
    ))
    .extend_with(|_, ext| {
        ext.set("code", "LAGGED");
        ext.set("skipped", missed);
    })
}

/// The items `pick` makes of `live`'s batches, one at a time: item `i` of
/// a batch is made only once item `i - 1` was taken.
fn each<T, F>(
    live: impl Stream<Item = Live>,
    len: fn(&LiveBatch) -> usize,
    pick: F,
) -> impl Stream<Item = Result<T>>
where
    F: Fn(&LiveBatch, usize) -> Option<T> + Clone + Send + 'static,
{
    live.flat_map(move |item| match item {
        Live::Batch(batch) => {
            let pick = pick.clone();
            let items = (0..len(&batch)).filter_map(move |i| pick(&batch, i).map(Ok));
            stream::iter(items).left_stream()
        }
        Live::Lagged(missed) => stream::iter([Err(lagged(missed))]).right_stream(),
    })
}

/// Subscriptions to what the pipeline commits.
#[derive(Default)]
pub struct LiveSubscription;

#[SubscriptionMacro]
impl LiveSubscription {
    /// Messages whose lifecycle changed.
    async fn message_changes(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: MessageChangeFilter,
    ) -> Result<impl Stream<Item = Result<Message>>> {
        let p = caller(ctx, Role::Viewer).await?.clone();
        let rx = api(ctx)?.live.subscribe();
        let address = filter.address.map(|a| a.to_lowercase());
        let wanted = move |lc: &Lifecycle| {
            p.may_see(&lc.host)
                && filter.host.as_ref().is_none_or(|h| *h == lc.host)
                && filter.id.as_ref().is_none_or(|id| lc.id.as_str() == id)
                && address.as_ref().is_none_or(|a| involves(lc, a))
        };
        let wanted = Arc::new(wanted);
        Ok(each(
            batches(rx),
            |b| b.lifecycles.len(),
            move |b, i| {
                let lc = b.lifecycles.get(i)?;
                wanted(lc).then(|| Message::from(lc))
            },
        ))
    }

    /// Log records as they are stored.
    async fn log_records(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: LogRecordFilter,
    ) -> Result<impl Stream<Item = Result<LogLine>>> {
        let p = caller(ctx, Role::Viewer).await?.clone();
        let rx = api(ctx)?.live.subscribe();
        let text = filter.text.map(|t| t.to_lowercase());
        let wanted = move |r: &StoredRecord| {
            p.may_see(&r.origin.host)
                && filter.host.as_ref().is_none_or(|h| *h == r.origin.host)
                && filter
                    .message_id
                    .as_ref()
                    .is_none_or(|id| r.message_id.is_some_and(|m| m.as_str() == id))
                && filter.kind.as_ref().is_none_or(|k| *k == r.event_kind)
                && text
                    .as_ref()
                    .is_none_or(|t| r.text().to_lowercase().contains(t))
        };
        let wanted = Arc::new(wanted);
        Ok(each(
            batches(rx),
            |b| b.records.len(),
            move |b, i| {
                let r = b.records.get(i)?;
                wanted(r).then(|| LogLine::from(r))
            },
        ))
    }
}

/// True when `lc` is from or to `address` (lowercase).
fn involves(lc: &Lifecycle, address: &str) -> bool {
    lc.sender
        .as_ref()
        .is_some_and(|s| s.to_lowercase() == address)
        || lc.recipients.iter().any(|r| {
            r.address.to_lowercase() == address
                || r.original
                    .as_ref()
                    .is_some_and(|o| o.to_lowercase() == address)
        })
}
