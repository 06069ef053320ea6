//! Times as Exim writes them.
//!
//! Exim stamps each line with the server's local time, `YYYY-MM-DD HH:MM:SS`,
//! optionally with milliseconds (`+millisec`) and a zone offset
//! (`log_timezone`). A stamp with an offset is converted to UTC when parsed;
//! one without stays naive until [`Zone`] says which zone the server ran in.

use std::fmt;

use chrono::{DateTime, Local, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A log timestamp: naive local time, or UTC when the line carried an offset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct LogTime {
    /// The wall-clock time; already converted to UTC when `utc` is true.
    pub time: NaiveDateTime,
    /// True when the line carried a zone offset and `time` is UTC.
    pub utc: bool,
}

impl LogTime {
    /// A naive local time.
    pub fn naive(time: NaiveDateTime) -> LogTime {
        LogTime { time, utc: false }
    }

    /// A time that carried `offset_minutes` east of UTC; stored as UTC.
    pub fn with_offset(local: NaiveDateTime, offset_minutes: i32) -> LogTime {
        LogTime {
            time: local - chrono::Duration::minutes(offset_minutes as i64),
            utc: true,
        }
    }

    /// The instant this stamp names, reading naive stamps in `zone`.
    pub fn resolve(&self, zone: Zone) -> DateTime<Utc> {
        if self.utc {
            return Utc.from_utc_datetime(&self.time);
        }
        zone.to_utc(self.time)
    }
}

/// How far, in seconds, a log's stamps may go back without the log being
/// read as past a change of its clock: Exim's processes stamp a line
/// before they write it, so lines of busy processes are a little out of
/// order. A log that says nothing for most of the repeated hour and then
/// goes back by less than this is read as still in its first pass.
pub const REORDER_SLACK_SECONDS: i64 = 300;

/// The instants a wall-clock time of the machine's zone names; when there
/// are two, the earlier first (chrono gives them in the order of their
/// offsets, which for a clock going back is the later first).
fn local_instants(t: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
    match Local.from_local_datetime(&t) {
        LocalResult::Single(dt) => LocalResult::Single(dt.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            LocalResult::Ambiguous(a.min(b), a.max(b))
        }
        LocalResult::None => LocalResult::None,
    }
}

/// The zone that naive log times are read in.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Zone {
    /// Coordinated universal time.
    #[default]
    Utc,
    /// A fixed offset east of UTC, in minutes.
    Fixed(i32),
    /// The zone of the machine exim-pilot runs on.
    Local,
}

impl Zone {
    /// Converts a naive wall-clock time in this zone to UTC. An ambiguous time
    /// (the hour repeated when clocks go back) takes the earlier instant
    /// (a reader of a whole log does better, see [`Zone::to_utc_after`]); a
    /// time that does not exist (clocks going forward) is read as UTC offset
    /// of the moment just before.
    pub fn to_utc(self, t: NaiveDateTime) -> DateTime<Utc> {
        match self {
            Zone::Utc => Utc.from_utc_datetime(&t),
            Zone::Fixed(m) => Utc.from_utc_datetime(&(t - chrono::Duration::minutes(m as i64))),
            Zone::Local => match local_instants(t) {
                LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => dt,
                LocalResult::None => {
                    let off = Local.offset_from_utc_datetime(&t).fix().local_minus_utc();
                    Utc.from_utc_datetime(&(t - chrono::Duration::seconds(off as i64)))
                }
            },
        }
    }

    /// [`Zone::to_utc`] for a log read in order, `previous` being the
    /// instant of the record before. A time in the hour repeated when
    /// clocks go back takes the earlier instant unless that lies more
    /// than [`REORDER_SLACK_SECONDS`] before `previous`: then the log has
    /// gone past the change, and the later instant is the one. The second
    /// value is true when the time was ambiguous.
    pub fn to_utc_after(
        self,
        t: NaiveDateTime,
        previous: Option<DateTime<Utc>>,
    ) -> (DateTime<Utc>, bool) {
        let Zone::Local = self else {
            return (self.to_utc(t), false);
        };
        match local_instants(t) {
            LocalResult::Ambiguous(earlier, later) => {
                let slack = chrono::Duration::seconds(REORDER_SLACK_SECONDS);
                let past = previous.is_some_and(|p| earlier < p - slack);
                (if past { later } else { earlier }, true)
            }
            _ => (self.to_utc(t), false),
        }
    }

    /// The offset east of UTC, in seconds, of every wall-clock time from
    /// `from` to `to` when both name one instant each at the same offset:
    /// then the clock did not change between them, assuming it changes at
    /// most once in that span. `None` otherwise.
    pub fn steady_offset(self, from: NaiveDateTime, to: NaiveDateTime) -> Option<i64> {
        let offset = |t: NaiveDateTime| match self {
            Zone::Local => match local_instants(t) {
                LocalResult::Single(dt) => Some((t - dt.naive_utc()).num_seconds()),
                _ => None,
            },
            _ => Some((t - self.to_utc(t).naive_utc()).num_seconds()),
        };
        let first = offset(from)?;
        (offset(to)? == first).then_some(first)
    }

    /// Parses `utc`, `local`, or an offset such as `+0200`, `-05:30`.
    pub fn parse(s: &str) -> Option<Zone> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "utc" | "z" | "gmt" => return Some(Zone::Utc),
            "local" => return Some(Zone::Local),
            _ => {}
        }
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return None,
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i32 = digits[..2].parse().ok()?;
        let m: i32 = digits[2..].parse().ok()?;
        (h < 24 && m < 60).then_some(Zone::Fixed(sign * (h * 60 + m)))
    }
}

impl fmt::Display for LogTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.time.format("%Y-%m-%dT%H:%M:%S%.3f"))?;
        if self.utc {
            f.write_str("Z")?;
        }
        Ok(())
    }
}

impl Serialize for LogTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let (body, utc) = match s.strip_suffix('Z') {
            Some(b) => (b, true),
            None => (&*s, false),
        };
        let time = NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S%.f")
            .map_err(serde::de::Error::custom)?;
        Ok(LogTime { time, utc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn offset_is_converted_to_utc() {
        let lt = LogTime::with_offset(t("2023-10-11 14:03:27"), 120);
        assert_eq!(lt.to_string(), "2023-10-11T12:03:27.000Z");
        assert_eq!(
            lt.resolve(Zone::Fixed(-300)).to_rfc3339(),
            "2023-10-11T12:03:27+00:00"
        );
    }

    #[test]
    fn naive_times_take_the_configured_zone() {
        let lt = LogTime::naive(t("2020-10-29 21:40:17.266"));
        assert_eq!(lt.to_string(), "2020-10-29T21:40:17.266");
        assert_eq!(
            lt.resolve(Zone::Fixed(60)).to_rfc3339(),
            "2020-10-29T20:40:17.266+00:00"
        );
    }

    #[test]
    fn zones_parse() {
        assert_eq!(Zone::parse("+0200"), Some(Zone::Fixed(120)));
        assert_eq!(Zone::parse("-05:30"), Some(Zone::Fixed(-330)));
        assert_eq!(Zone::parse("UTC"), Some(Zone::Utc));
        assert_eq!(Zone::parse("0200"), None);
    }

    #[test]
    fn serde_round_trip() {
        for lt in [
            LogTime::naive(t("2020-10-29 21:40:17.266")),
            LogTime::with_offset(t("2023-10-11 14:03:27"), 120),
        ] {
            let json = serde_json::to_string(&lt).unwrap();
            assert_eq!(serde_json::from_str::<LogTime>(&json).unwrap(), lt);
        }
    }
}
