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

use chrono::{DateTime, Utc};
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallClock {
    /// The latest instant of the log read so far.
    latest: Option<DateTime<Utc>>,
}

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
            let (instant, ambiguous) = zone.to_utc_after(t.time, self.latest);
            if ambiguous {
                *t = LogTime {
                    time: instant.naive_utc(),
                    utc: true,
                };
            }
            instant
        };
        self.latest = Some(self.latest.map_or(instant, |l| l.max(instant)));
    }
}
