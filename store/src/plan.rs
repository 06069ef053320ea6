//! Which rollup cells a report or a cell query reads, the same for every
//! backend: backends only say how to read one range of one table.
//!
//! A report reads the day cells of the whole days in its range, the hour
//! cells of the hours at its edges, and the hourly totals of the whole
//! days for its per-hour series; a range within one day reads hour cells
//! only. The day cells' totals, per day, give the per-day series of days
//! whose hour cells retention has dropped (day cells are kept longer).

use exim_pilot_schema::report::{Cell, Dimension, ReportOptions, Rollup};

use crate::types::{Bucket, CellQuery};

/// One range of one cell table to read, and where its cells go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CellRead {
    /// Hour or day cells.
    pub bucket: Bucket,
    /// Buckets `[lo, hi)`, in hours or days since the epoch.
    pub range: (i64, i64),
    /// Only the totals, for the hourly series (or, of day cells, the
    /// daily one); else every dimension.
    pub totals_only: bool,
}

impl CellRead {
    /// The dimensions to read; empty means all of them.
    pub fn dims(&self) -> &'static [Dimension] {
        if self.totals_only {
            &[Dimension::Total]
        } else {
            &[]
        }
    }

    /// Adds one cell read to `rollup`.
    pub fn add_to(
        &self,
        rollup: &mut Rollup,
        bucket: i64,
        host: &str,
        dim: Dimension,
        key: &str,
        cell: &Cell,
    ) {
        match (self.bucket, self.totals_only) {
            (Bucket::Day, true) => rollup.add_daily(bucket, cell),
            (_, true) => rollup.add_hourly(bucket, cell),
            (Bucket::Hour, false) => rollup.add(Some(bucket), host, dim, key, cell),
            (Bucket::Day | Bucket::Range, false) => rollup.add(None, host, dim, key, cell),
        }
    }
}

/// The hours `[first, end)` a report covers; open ends reach far.
pub(crate) fn hour_bounds(options: &ReportOptions) -> (i64, i64) {
    const FAR: i64 = 1 << 40;
    (
        options.first_hour().unwrap_or(-FAR),
        options.end_hour().unwrap_or(FAR),
    )
}

/// What a report over `options` reads, in order.
pub(crate) fn rollup_reads(options: &ReportOptions) -> Vec<CellRead> {
    let (h0, h1) = hour_bounds(options);
    let d0 = h0.div_euclid(24) + i64::from(h0.rem_euclid(24) != 0);
    let d1 = h1.div_euclid(24);
    let read = |bucket, range, totals_only| CellRead {
        bucket,
        range,
        totals_only,
    };
    if d0 < d1 {
        vec![
            read(Bucket::Day, (d0, d1), false),
            read(Bucket::Hour, (h0, d0 * 24), false),
            read(Bucket::Hour, (d1 * 24, h1), false),
            read(Bucket::Hour, (d0 * 24, d1 * 24), true),
            read(Bucket::Day, (d0, d1), true),
        ]
    } else {
        vec![read(Bucket::Hour, (h0, h1), false)]
    }
}

/// The bucket number of every cell of a whole-range query, whose cells
/// are summed over `bounds` (from [`cell_query_range`]): its first day, or
/// 0 without a start. `None` for hour and day cells.
pub(crate) fn range_key(q: &CellQuery, (first, _): (i64, i64)) -> Option<i64> {
    (q.bucket == Bucket::Range).then_some(if q.since.is_some() { first } else { 0 })
}

/// The buckets a cell query reads: the hours of its range, or every day
/// that overlaps it.
pub(crate) fn cell_query_range(q: &CellQuery) -> (i64, i64) {
    let options = ReportOptions {
        since: q.since,
        until: q.until,
        ..ReportOptions::default()
    };
    let (h0, h1) = hour_bounds(&options);
    match q.bucket {
        Bucket::Hour => (h0, h1),
        Bucket::Day | Bucket::Range => (
            h0.div_euclid(24),
            h1.div_euclid(24) + i64::from(h1.rem_euclid(24) != 0),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_within_a_day_reads_hours_only() {
        let options = ReportOptions {
            since: Some(chrono::DateTime::from_timestamp(3 * 3600, 0).unwrap()),
            until: Some(chrono::DateTime::from_timestamp(5 * 3600, 0).unwrap()),
            ..ReportOptions::default()
        };
        let reads = rollup_reads(&options);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].bucket, Bucket::Hour);
    }

    #[test]
    fn an_open_range_reads_days_edges_and_the_hourly_and_daily_series() {
        let reads = rollup_reads(&ReportOptions::default());
        let buckets: Vec<(Bucket, bool)> =
            reads.iter().map(|r| (r.bucket, r.totals_only)).collect();
        assert_eq!(
            buckets,
            vec![
                (Bucket::Day, false),
                (Bucket::Hour, false),
                (Bucket::Hour, false),
                (Bucket::Hour, true),
                (Bucket::Day, true)
            ]
        );
    }
}
