//! Dating a log's yearless syslog stamps across New Year.
//!
//! RFC 3164 stamps (`Dec 31 23:59:58`) carry no year. Given the year a log
//! starts in ([`ParseOptions::syslog_year`]), the parser dates every stamp
//! in it; [`SyslogYears`] then follows one log in order and moves the
//! stamps after New Year into the next year: a stamp more than half a
//! year before the latest one read can only be January's after
//! December's (and one more than half a year after it, a record of New
//! Year's Eve written late).
//! Without a given year the parser's own rule (the latest year that puts a
//! stamp no later than tomorrow) already keeps such a log in order, and
//! stamps are left as the parser dated them.

use chrono::{Months, NaiveDateTime};
use exim_pilot_schema::event::{Event, Syslog};
use exim_pilot_schema::LogTime;
use serde::{Deserialize, Serialize};

use super::{Brief, ParseOptions};

/// How far back from the last stamp a stamp is read as the next year's.
const TURN_DAYS: i64 = 183;

/// Where one log stands in its years; see the module documentation. It is
/// small and serialisable, so a pipeline keeps it in its saved state and a
/// restart in January still knows that the log began in December.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyslogYears {
    /// The last yearless stamp, as dated.
    last: Option<NaiveDateTime>,
    /// New Years passed in the log: the years added to the given one.
    passed: u32,
}

impl SyslogYears {
    /// A log not read yet.
    pub fn new() -> SyslogYears {
        SyslogYears::default()
    }

    /// True until a yearless stamp has been dated.
    pub fn is_unused(&self) -> bool {
        self.last.is_none()
    }

    /// Dates `time`, parsed with `options` from a record with the syslog
    /// wrapping `syslog`, as the next stamp of this log. Only a time read
    /// from a yearless stamp whose year was given changes.
    pub fn settle(
        &mut self,
        options: &ParseOptions,
        syslog: Option<&Syslog<'_>>,
        time: &mut Option<LogTime>,
    ) {
        if options.syslog_year.is_none() || !syslog.is_some_and(|s| s.yearless) {
            return;
        }
        let Some(time) = time.as_mut() else {
            return;
        };

        let turn = chrono::Duration::days(TURN_DAYS);
        let mut years = self.passed;
        if let Some(last) = self.last {
            let dated = plus_years(time.time, years);
            if dated < last - turn {
                self.passed += 1;
                years = self.passed;
            } else if dated > last + turn && years > 0 {
                // A record of New Year's Eve written out of order, after
                // the first of January's.
                years -= 1;
            }
        }
        let dated = plus_years(time.time, years);
        self.last = Some(self.last.map_or(dated, |last| last.max(dated)));
        time.time = dated;
    }

    /// [`SyslogYears::settle`] on an event's time.
    pub fn settle_event(&mut self, options: &ParseOptions, event: &mut Event<'_>) {
        self.settle(options, event.syslog.as_deref(), &mut event.time);
    }

    /// [`SyslogYears::settle`] on a brief read's time.
    pub fn settle_brief(&mut self, options: &ParseOptions, brief: &mut Brief<'_>) {
        match brief {
            Brief::Event(event) => self.settle_event(options, event),
            Brief::Header { time, syslog } => self.settle(options, syslog.as_deref(), time),
        }
    }
}

/// `t` moved `years` years on; February 29th becomes the 28th in a year
/// without it.
fn plus_years(t: NaiveDateTime, years: u32) -> NaiveDateTime {
    if years == 0 {
        return t;
    }
    t.checked_add_months(Months::new(years.saturating_mul(12)))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_record_with;
    use exim_pilot_schema::LogFile;

    /// The times of `lines`, read in order as one log.
    fn dated(options: ParseOptions, lines: &[&str]) -> Vec<String> {
        let mut years = SyslogYears::new();
        lines
            .iter()
            .map(|line| {
                let mut event = parse_record_with(&options, LogFile::Main, line.as_bytes());
                years.settle_event(&options, &mut event);
                event.time.unwrap().time.to_string()
            })
            .collect()
    }

    const NEW_YEARS_EVE: [&str; 4] = [
        "Dec 31 23:59:58 mx1 exim[7]: 1xZVcC-00078S-07 Completed",
        "Jan  1 00:00:01 mx1 exim[8]: 1xZVcC-00078Z-0Q Completed",
        "Dec 31 23:59:59 mx1 exim[9]: 1xZVcC-00078h-1P Completed",
        "Jan  1 00:00:02 mx1 exim[8]: 2026-01-01 00:00:02 1xZVcC-00078Z-0Q Completed",
    ];

    #[test]
    fn a_log_given_its_year_moves_to_the_next_at_new_year() {
        let options = ParseOptions {
            syslog_year: Some(2025),
        };
        assert_eq!(
            dated(options, &NEW_YEARS_EVE),
            [
                "2025-12-31 23:59:58",
                "2026-01-01 00:00:01",
                // A record a little out of order stays in its year.
                "2025-12-31 23:59:59",
                // Exim's own stamp has its year.
                "2026-01-01 00:00:02",
            ]
        );
    }

    #[test]
    fn a_log_without_a_given_year_is_left_to_the_parser() {
        let mut years = SyslogYears::new();
        let options = ParseOptions::default();
        let mut event = parse_record_with(&options, LogFile::Main, NEW_YEARS_EVE[0].as_bytes());
        let before = event.time;
        years.settle_event(&options, &mut event);
        assert_eq!(event.time, before);
        assert!(years.is_unused());
    }
}
