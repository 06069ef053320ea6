//! Reading a log's local times in order across the autumn change.
//!
//! When clocks go back, an hour of local time happens twice, and a naive
//! stamp in it names two instants. Read alone it takes the earlier
//! ([`Zone::to_utc`]); read as part of a log, [`WallClock`] takes the one
//! that keeps the log in order: once a stamp of the repeated hour lies
//! clearly before the record read last, the log is in the hour's second
//! pass, and that stamp and the next ones in the hour take the later
//! instant ([`Zone::to_utc_after`]). A stamp so resolved becomes a UTC
//! time, so every reader after this one sees the same instant.

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use exim_pilot_schema::{Event, LogTime, Zone};
use serde::{Deserialize, Serialize};

use super::{Brief, ParseOptions, SyslogYears};

/// How the times of one log are read in order: the years of its syslog
/// stamps, then its local time. Readers keep one per log (and per mail
/// server) and give it every record in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogClock {
    /// The years of its syslog stamps.
    #[serde(default, skip_serializing_if = "SyslogYears::is_unused")]
    pub years: SyslogYears,
    /// Its local time.
    #[serde(default, skip_serializing_if = "WallClock::is_unused")]
    pub wall: WallClock,
}

impl LogClock {
    /// True until a record has changed it.
    pub fn is_unused(&self) -> bool {
        self.years.is_unused() && self.wall.is_unused()
    }

    /// Dates an event, parsed with `options`, as the next of this log,
    /// whose naive times are in `zone`.
    pub fn settle_event(&mut self, options: &ParseOptions, zone: Zone, event: &mut Event<'_>) {
        self.years.settle_event(options, event);
        self.wall.settle(zone, &mut event.time);
    }

    /// [`LogClock::settle_event`] on a brief read.
    pub fn settle_brief(&mut self, options: &ParseOptions, zone: Zone, brief: &mut Brief<'_>) {
        self.years.settle_brief(options, brief);
        let time = match brief {
            Brief::Event(event) => &mut event.time,
            Brief::Header { time, .. } => time,
        };
        self.wall.settle(zone, time);
    }
}

/// Where one log stands in time; see the module documentation. Small and
/// serialisable, so a pipeline keeps it in its saved state.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct WallClock {
    /// The latest instant of the log read so far.
    latest: Option<DateTime<Utc>>,
    /// A quarter of an hour of local time in which the clock does not
    /// change, and its offset in seconds: the stamps in it are read
    /// without asking the zone again. Not saved; found again when needed.
    #[serde(skip)]
    steady: Option<(NaiveDateTime, i64)>,
}

impl PartialEq for WallClock {
    fn eq(&self, other: &WallClock) -> bool {
        self.latest == other.latest
    }
}

impl Eq for WallClock {}

/// The length of the spans of local time [`WallClock`] checks at once.
const STEADY_MINUTES: u32 = 15;

impl WallClock {
    /// A log not read yet.
    pub fn new() -> WallClock {
        WallClock::default()
    }

    /// True until a time has been read.
    pub fn is_unused(&self) -> bool {
        self.latest.is_none()
    }

    /// Reads `time`, the next stamp of this log, in `zone`: a stamp in the
    /// repeated hour becomes the UTC time of the instant that keeps the
    /// log in order. Only the machine's own zone changes its clock.
    pub fn settle(&mut self, zone: Zone, time: &mut Option<LogTime>) {
        if zone != Zone::Local {
            return;
        }
        let Some(t) = time.as_mut() else {
            return;
        };
        let instant = if t.utc {
            t.resolve(zone)
        } else {
            self.local(zone, t)
        };
        self.latest = Some(self.latest.map_or(instant, |l| l.max(instant)));
    }

    /// The instant of the naive stamp `t`, which becomes a UTC time when it
    /// was ambiguous.
    fn local(&mut self, zone: Zone, t: &mut LogTime) -> DateTime<Utc> {
        // Most stamps fall in a quarter hour already known to be steady.
        let start = quarter_start(t.time);
        if let Some((steady, offset)) = self.steady {
            if steady == start {
                let utc = t.time - chrono::Duration::seconds(offset);
                return DateTime::from_naive_utc_and_offset(utc, Utc);
            }
        }

        let (instant, ambiguous) = zone.to_utc_after(t.time, self.latest);
        if ambiguous {
            *t = LogTime {
                time: instant.naive_utc(),
                utc: true,
            };
            return instant;
        }
        let end = start + chrono::Duration::seconds(i64::from(STEADY_MINUTES) * 60 - 1);
        self.steady = zone.steady_offset(start, end).map(|offset| (start, offset));
        instant
    }
}

/// The start of the quarter hour `t` falls in.
fn quarter_start(t: NaiveDateTime) -> NaiveDateTime {
    let minute = t.minute() - t.minute() % STEADY_MINUTES;
    t.date().and_hms_opt(t.hour(), minute, 0).unwrap_or(t)
}
