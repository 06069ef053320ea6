//! Text and CSV forms of a report.
//!
//! The CSV form is one flat table with a fixed header, one row per line of
//! every section; `section` says which:
//!
//! - `total` (key `all`), `host`, `domain`, `sender`, `sender_domain`,
//!   `remote_host`, `transport`, `client`, `hour`, `day` (key: the start,
//!   RFC 3339): the number columns as in the JSON form;
//! - `reason` (key: the class): `messages`, `addresses`, `delivered`
//!   (delivered after meeting the reason), `bounced`, `deferred`,
//!   `still_deferred` and one `sample`;
//! - `reject_reason` (key: the class) and `reject_ip` (key: the IP):
//!   `rejected`, `rejected_temporary`, and for reasons one `sample`.
//!
//! Columns that do not apply to a section are empty.

use std::io::{self, Write};

use exim_pilot_schema::report::{DelayStats, Numbers, Report, Table};

/// Formats bytes as eximstats does: plain below 10 KB, then KB, MB, GB.
fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 10_240.0 {
        return format!("{n:.0}");
    }
    for (unit, size) in [
        ("GB", 1024f64.powi(3)),
        ("MB", 1024f64.powi(2)),
        ("KB", 1024.0),
    ] {
        if n >= size * 10.0 || unit == "KB" {
            return format!("{:.0}{unit}", n / size);
        }
    }
    format!("{n:.0}")
}

/// Formats a delay: `850ms`, `12s`, `3m05s`, `2h10m`, `3d04h`.
fn duration(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".to_string();
    };
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

fn heading(out: &mut dyn Write, title: &str) -> io::Result<()> {
    writeln!(out, "\n{title}\n{}", "-".repeat(title.len()))
}

fn table(out: &mut dyn Write, title: &str, t: &Table, what: &str) -> io::Result<()> {
    if t.rows.is_empty() {
        return Ok(());
    }
    let title = if t.distinct > t.rows.len() {
        format!("{title} (top {} of {})", t.rows.len(), t.distinct)
    } else {
        title.to_string()
    };
    heading(out, &title)?;
    writeln!(
        out,
        "  {:>8} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>9}  {what}",
        "Messages", "Addresses", "Delivered", "Deferred", "Bounced", "Rate", "Delay50", "Volume"
    )?;
    for r in &t.rows {
        let n = &r.numbers;
        writeln!(
            out,
            "  {:>8} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>9}  {}",
            n.messages,
            n.addresses,
            n.delivered,
            n.deferred,
            n.bounced,
            percent(n.rates.delivery_rate),
            duration(n.delay.p50_ms),
            bytes(n.bytes_received),
            if r.key.is_empty() { "(empty)" } else { &r.key }
        )?;
    }
    Ok(())
}

fn delay_line(d: &DelayStats) -> String {
    if d.count == 0 {
        return "no delivered address with a known reception time".to_string();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  max {}  mean {}  ({} addresses)",
        duration(d.p50_ms),
        duration(d.p90_ms),
        duration(d.p99_ms),
        duration(d.max_ms),
        duration(d.mean_ms),
        d.count
    )
}

/// Writes the readable form.
pub fn text(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    let span = match (r.first_hour, r.last_hour) {
        (Some(a), Some(b)) => format!(
            "{} to {} UTC",
            fmt(Some(a)),
            fmt(Some(b + chrono::Duration::hours(1)))
        ),
        _ => "no data".to_string(),
    };
    writeln!(out, "exim-pilot report: messages received {span}")?;
    let mut filters = Vec::new();
    if r.options.since.is_some() || r.options.until.is_some() {
        filters.push(format!(
            "range {} to {}",
            fmt(r.options.since),
            fmt(r.options.until)
        ));
    }
    if let Some(h) = &r.options.host {
        filters.push(format!("host {h}"));
    }
    if let Some(d) = &r.options.domain {
        filters.push(format!("domain {d}"));
    }
    if !filters.is_empty() {
        writeln!(out, "Only: {}", filters.join(", "))?;
    }
    writeln!(
        out,
        "Counts are per message and per final address, attributed to the hour of reception."
    )?;

    let t = &r.totals;
    heading(out, "Grand total summary")?;
    let line = |out: &mut dyn Write, label: &str, n: i64, rest: String| {
        writeln!(out, "  {label:<28} {n:>9}   {rest}")
    };
    line(
        out,
        "Messages",
        t.messages,
        format!("{} received, {} first seen later", t.received, t.incomplete),
    )?;
    line(
        out,
        "Final addresses",
        t.addresses,
        format!("{} attempts", t.attempts),
    )?;
    line(
        out,
        "Delivered",
        t.delivered,
        format!(
            "{}  first attempt {} ({} of attempted)",
            percent(r.rates.delivery_rate),
            t.delivered_first_attempt,
            percent(r.first_attempt.first_attempt_rate)
        ),
    )?;
    line(
        out,
        "Deferred at least once",
        t.deferred,
        format!(
            "{}  still deferred {}",
            percent(r.rates.deferral_rate),
            t.still_deferred
        ),
    )?;
    line(out, "Bounced", t.bounced, percent(r.rates.bounce_rate))?;
    line(
        out,
        "Still queued",
        t.pending + t.still_deferred + t.frozen,
        format!(
            "pending {}, deferred {}, frozen {}",
            t.pending, t.still_deferred, t.frozen
        ),
    )?;
    line(
        out,
        "Removed / marked delivered",
        t.removed + t.marked_delivered,
        format!("{} / {}", t.removed, t.marked_delivered),
    )?;
    line(
        out,
        "SMTP rejections",
        t.rejected,
        format!("{} temporary", t.rejected_temporary),
    )?;
    writeln!(
        out,
        "  {:<28} {:>9}   delivered {}",
        "Volume received",
        bytes(r.bytes.received),
        bytes(r.bytes.delivered)
    )?;
    writeln!(out, "  {:<28} {}", "Delivery delay", delay_line(&r.delay))?;

    heading(out, "Messages by origin and state")?;
    let o = &r.messages_by_origin;
    writeln!(
        out,
        "  smtp {}  local {}  bounce {}  delay warning {}  unknown {}",
        o.smtp, o.local, o.bounce, o.delay_warning, o.unknown
    )?;
    let s = &r.messages_by_state;
    writeln!(
        out,
        "  completed {}  in flight {}  frozen {}  removed {}",
        s.completed, s.in_flight, s.frozen, s.removed
    )?;

    table(out, "Mail servers", &r.by_host, "Server")?;
    table(out, "Destination domains", &r.by_domain, "Domain")?;
    table(out, "Sender domains", &r.by_sender_domain, "Sender domain")?;
    table(out, "Senders", &r.by_sender, "Sender")?;
    table(
        out,
        "Servers delivered to",
        &r.by_remote_host,
        "Remote host",
    )?;
    table(out, "Transports", &r.by_transport, "Transport")?;
    table(out, "Sending clients", &r.by_client, "Client")?;

    if !r.per_day.is_empty() {
        heading(out, "Per day (UTC, by reception)")?;
        writeln!(
            out,
            "  {:<10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "Day", "Messages", "Addresses", "Delivered", "Deferred", "Bounced", "Rejected"
        )?;
        for d in &r.per_day {
            let n = &d.numbers;
            writeln!(
                out,
                "  {:<10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8}",
                d.start.format("%Y-%m-%d"),
                n.messages,
                n.addresses,
                n.delivered,
                n.deferred,
                n.bounced,
                n.rejected
            )?;
        }
    }
    hour_of_day(r, out)?;

    if !r.reasons.is_empty() {
        heading(out, "Why deliveries were deferred or failed")?;
        writeln!(
            out,
            "  {:>9} {:>8} {:>8} {:>9} {:>8}  Reason",
            "Addresses", "Deferred", "Bounced", "Recovered", "Attempts"
        )?;
        for row in &r.reasons {
            writeln!(
                out,
                "  {:>9} {:>8} {:>8} {:>9} {:>8}  {}",
                row.addresses,
                row.deferred,
                row.bounced,
                row.delivered_later,
                row.deferrals + row.failures,
                row.class
            )?;
            for sample in &row.samples {
                writeln!(out, "  {:>46}  e.g. {}", "", one_line(sample))?;
            }
        }
    }

    let rj = &r.rejects;
    if rj.total > 0 {
        heading(out, "SMTP rejections by reason")?;
        writeln!(out, "  {:>8} {:>9}  Reason", "Rejected", "Temporary")?;
        for row in &rj.by_reason {
            writeln!(
                out,
                "  {:>8} {:>9}  {}",
                row.rejected, row.temporary, row.class
            )?;
            for sample in &row.samples {
                writeln!(out, "  {:>18}  e.g. {}", "", one_line(sample))?;
            }
        }
        let title = if rj.distinct_ips > rj.by_client_ip.len() {
            format!(
                "SMTP rejections by client IP (top {} of {})",
                rj.by_client_ip.len(),
                rj.distinct_ips
            )
        } else {
            "SMTP rejections by client IP".to_string()
        };
        heading(out, &title)?;
        writeln!(out, "  {:>8} {:>9}  Client IP", "Rejected", "Temporary")?;
        for row in &rj.by_client_ip {
            writeln!(
                out,
                "  {:>8} {:>9}  {}",
                row.rejected, row.temporary, row.ip
            )?;
        }
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.replace('\n', " | ")
}

/// Messages received per hour of the day, summed over days, with bars as
/// eximstats draws them.
fn hour_of_day(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if r.per_hour.is_empty() {
        return Ok(());
    }
    let mut hours = [0i64; 24];
    for h in &r.per_hour {
        let i = (h.start.timestamp().div_euclid(3600)).rem_euclid(24) as usize;
        hours[i] += h.numbers.messages;
    }
    let max = hours.iter().copied().max().unwrap_or(0).max(1);
    let per_dot = (max + 49) / 50;
    heading(
        out,
        &format!("Messages received per hour of day (UTC; each dot is {per_dot})"),
    )?;
    for (i, n) in hours.iter().enumerate() {
        let dots = ".".repeat((*n / per_dot) as usize);
        writeln!(out, "  {:02}-{:02} {:>8} {dots}", i, i + 1, n)?;
    }
    Ok(())
}

/// The CSV header: see the module documentation.
const CSV_HEADER: &[&str] = &[
    "section",
    "key",
    "messages",
    "received",
    "addresses",
    "delivered",
    "bounced",
    "deferred",
    "still_deferred",
    "pending",
    "frozen",
    "delivered_first_attempt",
    "rejected",
    "rejected_temporary",
    "bytes_received",
    "bytes_delivered",
    "delivery_rate",
    "bounce_rate",
    "deferral_rate",
    "first_attempt_rate",
    "delay_count",
    "delay_mean_ms",
    "delay_p50_ms",
    "delay_p90_ms",
    "delay_p99_ms",
    "delay_max_ms",
    "sample",
];

/// Quotes a CSV field when it needs it (RFC 4180).
/// One CSV cell; text from the logs that reads as a formula is defused
/// (see [`exim_pilot_schema::csv::cell`]), numbers stay as they are.
fn field(s: &str) -> String {
    exim_pilot_schema::csv::cell(s, s.parse::<f64>().is_err())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn numbers_row(section: &str, key: &str, n: &Numbers) -> Vec<String> {
    vec![
        section.to_string(),
        key.to_string(),
        n.messages.to_string(),
        n.received.to_string(),
        n.addresses.to_string(),
        n.delivered.to_string(),
        n.bounced.to_string(),
        n.deferred.to_string(),
        n.still_deferred.to_string(),
        n.pending.to_string(),
        n.frozen.to_string(),
        n.delivered_first_attempt.to_string(),
        n.rejected.to_string(),
        String::new(),
        n.bytes_received.to_string(),
        n.bytes_delivered.to_string(),
        opt(n.rates.delivery_rate),
        opt(n.rates.bounce_rate),
        opt(n.rates.deferral_rate),
        opt(n.rates.first_attempt_rate),
        n.delay.count.to_string(),
        opt(n.delay.mean_ms),
        opt(n.delay.p50_ms),
        opt(n.delay.p90_ms),
        opt(n.delay.p99_ms),
        opt(n.delay.max_ms),
        String::new(),
    ]
}

/// A row with only some columns set, by header name.
fn sparse_row(section: &str, key: &str, values: &[(&str, String)]) -> Vec<String> {
    let mut row = vec![String::new(); CSV_HEADER.len()];
    row[0] = section.to_string();
    row[1] = key.to_string();
    for (name, v) in values {
        if let Some(i) = CSV_HEADER.iter().position(|h| h == name) {
            row[i] = v.clone();
        }
    }
    row
}

/// Writes the flat CSV form.
pub fn csv(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut total = Numbers::default();
    let t = &r.totals;
    total.messages = t.messages;
    total.received = t.received;
    total.addresses = t.addresses;
    total.delivered = t.delivered;
    total.bounced = t.bounced;
    total.deferred = t.deferred;
    total.still_deferred = t.still_deferred;
    total.pending = t.pending;
    total.frozen = t.frozen;
    total.delivered_first_attempt = t.delivered_first_attempt;
    total.rejected = t.rejected;
    total.bytes_received = t.bytes_received;
    total.bytes_delivered = t.bytes_delivered;
    total.rates = r.rates;
    total.delay = r.delay;
    let mut first = numbers_row("total", "all", &total);
    first[13] = t.rejected_temporary.to_string();
    rows.push(first);

    for (section, table) in [
        ("host", &r.by_host),
        ("domain", &r.by_domain),
        ("sender", &r.by_sender),
        ("sender_domain", &r.by_sender_domain),
        ("remote_host", &r.by_remote_host),
        ("transport", &r.by_transport),
        ("client", &r.by_client),
    ] {
        for row in &table.rows {
            rows.push(numbers_row(section, &row.key, &row.numbers));
        }
    }
    for (section, series) in [("hour", &r.per_hour), ("day", &r.per_day)] {
        for row in series {
            rows.push(numbers_row(section, &row.start.to_rfc3339(), &row.numbers));
        }
    }
    for row in &r.reasons {
        rows.push(sparse_row(
            "reason",
            row.class.as_str(),
            &[
                ("messages", row.messages.to_string()),
                ("addresses", row.addresses.to_string()),
                ("delivered", row.delivered_later.to_string()),
                ("bounced", row.bounced.to_string()),
                ("deferred", row.deferred.to_string()),
                ("still_deferred", row.still_deferred.to_string()),
                ("sample", row.samples.first().cloned().unwrap_or_default()),
            ],
        ));
    }
    for row in &r.rejects.by_reason {
        rows.push(sparse_row(
            "reject_reason",
            row.class.as_str(),
            &[
                ("rejected", row.rejected.to_string()),
                ("rejected_temporary", row.temporary.to_string()),
                ("sample", row.samples.first().cloned().unwrap_or_default()),
            ],
        ));
    }
    for row in &r.rejects.by_client_ip {
        rows.push(sparse_row(
            "reject_ip",
            &row.ip,
            &[
                ("rejected", row.rejected.to_string()),
                ("rejected_temporary", row.temporary.to_string()),
            ],
        ));
    }

    writeln!(out, "{}", CSV_HEADER.join(","))?;
    for row in rows {
        let line: Vec<String> = row.iter().map(|f| field(f)).collect();
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_delays_read_like_eximstats() {
        assert_eq!(bytes(1721), "1721");
        assert_eq!(bytes(1_581_056), "1544KB");
        assert_eq!(bytes(50 * 1024 * 1024), "50MB");
        assert_eq!(duration(Some(850)), "850ms");
        assert_eq!(duration(Some(65_000)), "1m05s");
        assert_eq!(duration(Some(90_000_000)), "1d01h");
        assert_eq!(duration(None), "-");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=cmd.example"), "'=cmd.example");
        assert_eq!(field("-3"), "-3");
        assert_eq!(field("0.95"), "0.95");
    }

    #[test]
    fn csv_has_one_row_per_line_of_every_section() {
        let report = Report::default();
        let mut out = Vec::new();
        csv(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(lines[1].starts_with("total,all,0,"));
    }
}
