//! Synthetic stores for benchmarks: many messages spread over
//! [`DAYS`] days, two mail servers ([`HOSTS`]), a few hundred destination
//! domains with a skewed share each, 5,000 senders (a few send most) and a
//! realistic mix of outcomes, each with two raw records. A tenth of the
//! messages are written a second time, changed (deferred, then
//! delivered), so the rollups move. Deterministic, so runs compare.

use chrono::{DateTime, Duration, Utc};
use exim_pilot_schema::{AttemptResult, Lifecycle, Outcome, ReasonClass};

use super::fixtures::{attempt, base, message, now_delivered, recipient, record};
use crate::{Batch, Result, Store};

/// A small deterministic generator, so runs are comparable.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_number(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_number() % n
    }

    /// Skewed towards small numbers: a few keys get most of the traffic.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        self.below(a + 1)
    }
}

/// Days the messages are spread over.
pub const DAYS: i64 = 90;
/// The mail servers.
pub const HOSTS: [&str; 2] = ["mx1.example.org", "mx2.example.org"];

/// Message `n` of a store whose messages arrive every `per_ms`
/// milliseconds from `start`.
pub fn synthetic(n: u32, rng: &mut Rng, start: DateTime<Utc>, per_ms: f64) -> Lifecycle {
    let received = start + Duration::milliseconds((n as f64 * per_ms) as i64);
    let host = HOSTS[(n % 2) as usize];
    let s = rng.skewed(5_000);
    let sender = format!("user{s}@sender{}.example.org", s % 300);
    let rcpts = 1 + rng.skewed(4);
    let mut recipients = Vec::new();
    for r in 0..rcpts {
        let to = format!("rcpt{}{}@domain{}.example.com", n, r, rng.skewed(500));
        let soon = received + Duration::milliseconds(200 + rng.below(5_000) as i64);
        let roll = rng.below(100);
        let rc = if roll < 85 {
            recipient(
                &to,
                Outcome::Delivered,
                vec![attempt(soon, AttemptResult::Ok, None)],
            )
        } else if roll < 93 {
            let later = soon + Duration::minutes(5 + rng.below(120) as i64);
            recipient(
                &to,
                Outcome::Delivered,
                vec![
                    attempt(soon, AttemptResult::Defer, Some(ReasonClass::Greylisting)),
                    attempt(later, AttemptResult::Ok, None),
                ],
            )
        } else if roll < 98 {
            recipient(
                &to,
                Outcome::Bounced,
                vec![attempt(
                    soon,
                    AttemptResult::Fail,
                    Some(ReasonClass::UnknownRecipient),
                )],
            )
        } else {
            recipient(
                &to,
                Outcome::Deferred,
                vec![attempt(
                    soon,
                    AttemptResult::Defer,
                    Some(ReasonClass::Timeout),
                )],
            )
        };
        recipients.push(rc);
    }
    message(host, n, received, &sender, recipients)
}

/// Writes `total` synthetic messages ending at [`base`], in batches of
/// `batch_size` lifecycles, as a pipeline would; returns the lifecycle
/// writes (more than `total`: some messages are written twice).
pub async fn fill(store: &dyn Store, total: u32, batch_size: usize) -> Result<u64> {
    let start = base() - Duration::days(DAYS);
    let per_ms = (DAYS * 86_400_000) as f64 / total.max(1) as f64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut batch = Batch::default();
    let mut written = 0u64;
    for n in 0..total {
        let lc = synthetic(n, &mut rng, start, per_ms);
        let t0 = lc.received_at.unwrap_or_else(base);
        batch
            .records
            .push(record(&lc.host, n as u64 * 300, t0, Some(lc.id), "<= x"));
        batch.records.push(record(
            &lc.host,
            n as u64 * 300 + 150,
            t0,
            Some(lc.id),
            &format!("=> {}", lc.recipients[0].address),
        ));
        // Every tenth message is seen twice: first still deferred.
        if n % 10 == 0 {
            let mut first = lc.clone();
            for r in &mut first.recipients {
                r.outcome = Outcome::Deferred;
            }
            batch.lifecycles.push(first);
        }
        batch.lifecycles.push(if n % 10 == 0 {
            now_delivered(&lc, t0)
        } else {
            lc
        });
        if batch.lifecycles.len() >= batch_size {
            written += batch.lifecycles.len() as u64;
            store.commit_batch(std::mem::take(&mut batch)).await?;
        }
    }
    written += batch.lifecycles.len() as u64;
    store.commit_batch(batch).await?;
    Ok(written)
}
