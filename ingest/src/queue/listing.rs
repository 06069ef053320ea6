//! Reading `exim -bp`, the queue listing, into [`QueuedMessage`]s.
//!
//! Exim (4.96, and the same shape since long before) prints each message
//! as a header line, one line per recipient and a blank line:
//!
//! ```text
//!  4h  2.9K 1tQw7K-00000000Bq3-0KzP <alice@example.net>
//!           bob@example.com
//!         D dave@example.com
//!
//! ```
//!
//! The header line holds the time on the queue, the size, the id, the
//! envelope sender in angle brackets (`<>` for a bounce), the caller's login
//! in parentheses when an untrusted caller set the sender, and
//! `*** frozen ***` for a frozen message.
//!
//! - The time is whole minutes up to 90 minutes (`88m`), then hours rounded
//!   to the nearest up to 72 hours (`4h`), then days rounded to the nearest
//!   (`3d`). Exim never prints seconds; a clock set back shows a negative
//!   number of minutes, read here as 0.
//! - The size is in bytes below 1 KiB (`512`), then `2.9K` below 10 KiB,
//!   `21K` below 1 MiB, `1.2M` below 10 MiB and `44M` above, all in units
//!   of 1024 and rounded, so the size read back is rounded the same way.
//!   `G` is accepted too, although Exim never prints it. A size of 0 (the
//!   data file could not be examined) is printed as blanks: no size.
//! - Recipients are indented by 8 spaces and a 2-character marker: `D ` for
//!   a recipient already delivered, two spaces otherwise.
//! - When the spool header file cannot be read, the header line has neither
//!   time nor sender (`      1qAbCK-000123-Xy`) and the next line, indented
//!   by 4 spaces, says why (`*** spool read error: Permission denied ***`
//!   or `*** spool format error: size=8 ***`); when only the headers after
//!   the envelope are damaged, the header line is complete and the error
//!   line may end with `*** frozen ***`, followed by the recipients. Either
//!   way the message is kept, with the error.
//!
//! [`parse_bp`] never fails and never drops a message whose id it can
//! read: a line it does not understand becomes a [`ListingProblem`], and a
//! header line whose time, size or sender cannot be read still yields its
//! message, without the part that was unreadable. It reads what `-bp`
//! prints: the `+D` lines of `-bpa` (addresses generated from a recipient
//! and delivered) are reported as problems, not recipients. It takes
//! linear time: each line is looked at once.

use exim_pilot_schema::queue::{QueueRecipient, QueuedMessage};
use exim_pilot_schema::MessageId;

/// The messages of one queue listing, and the lines that could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every message, in Exim's order. Their number is what `exim -bpc`
    /// counts.
    pub messages: Vec<QueuedMessage>,
    /// Lines not understood, in order.
    pub problems: Vec<ListingProblem>,
}

/// A line of a listing that could not be read, or read only in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingProblem {
    /// Its line number, from 1.
    pub line: usize,
    /// The line as Exim printed it.
    pub text: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Indentation of a recipient line, before its 2-character marker.
const RECIPIENT_INDENT: usize = 8;

/// Reads a whole `exim -bp` listing.
pub fn parse_bp(text: &str) -> Listing {
    let mut reader = Reader::default();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        reader.line(index + 1, line);
    }
    reader.listing
}

/// The state between lines: the listing so far and whether the last
/// message may still take recipients.
#[derive(Default)]
struct Reader {
    listing: Listing,
    /// True while the last message's header has been read and no blank
    /// line followed it.
    open: bool,
}

impl Reader {
    fn line(&mut self, number: usize, line: &str) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = line[indent..].trim_end();

        // A blank line ends a message.
        if rest.is_empty() {
            self.open = false;
            return;
        }

        if indent >= RECIPIENT_INDENT - 1 && rest.starts_with("+D ") {
            self.problem(
                number,
                line,
                "generated address of `exim -bpa`, not a recipient",
            );
        } else if indent >= RECIPIENT_INDENT {
            self.recipient(number, line, rest);
        } else if indent > 0 && rest.starts_with("*** ") {
            self.error_line(number, line, rest);
        } else {
            self.header(number, line);
        }
    }

    fn problem(&mut self, line: usize, text: &str, reason: &'static str) {
        self.listing.problems.push(ListingProblem {
            line,
            text: text.to_string(),
            reason,
        });
    }

    /// The message later lines belong to, if one is open.
    fn current(&mut self) -> Option<&mut QueuedMessage> {
        if self.open {
            self.listing.messages.last_mut()
        } else {
            None
        }
    }

    fn recipient(&mut self, number: usize, line: &str, rest: &str) {
        // An address cannot start with `D ` (a space in a local part must
        // be quoted), so the marker is never mistaken for an address.
        let (delivered, address) = match rest.strip_prefix("D ") {
            Some(address) => (true, address.trim_start()),
            None => (false, rest),
        };
        let Some(message) = self.current() else {
            self.problem(number, line, "recipient line outside a message");
            return;
        };
        message.recipients.push(QueueRecipient {
            address: address.to_string(),
            delivered,
        });
    }

    fn error_line(&mut self, number: usize, line: &str, rest: &str) {
        let markers = Markers::strip(rest);
        if !markers.rest.is_empty() || markers.spool_error.is_none() {
            self.problem(number, line, "indented line that is no spool error");
            return;
        }
        let Some(message) = self.current() else {
            self.problem(number, line, "spool error line outside a message");
            return;
        };
        message.spool_error = markers.spool_error;
        message.frozen |= markers.frozen;
    }

    fn header(&mut self, number: usize, line: &str) {
        match parse_header(line) {
            Ok((message, complaint)) => {
                if let Some(reason) = complaint {
                    self.problem(number, line, reason);
                }
                self.listing.messages.push(message);
                self.open = true;
            }
            Err(reason) => {
                self.problem(number, line, reason);
                // Recipients after an unreadable header line belong to no
                // known message; they must not go to the previous one.
                self.open = false;
            }
        }
    }
}

/// Reads a header line into a message without recipients, with a complaint
/// when part of it could not be read; fails only without a message id.
fn parse_header(line: &str) -> Result<(QueuedMessage, Option<&'static str>), &'static str> {
    let mut complaint = None;
    let mut age_secs = None;
    let mut size = None;

    // Up to two fields before the id: the time on the queue and the size.
    let mut position = 0;
    let mut id = None;
    for _ in 0..3 {
        let Some((token, end)) = next_token(line, position) else {
            break;
        };
        position = end;
        if let Ok(parsed) = token.parse::<MessageId>() {
            id = Some(parsed);
            break;
        }
        if age_secs.is_none() && size.is_none() {
            if let Some(age) = parse_age(token) {
                age_secs = Some(age);
                continue;
            }
        }
        match parse_size(token) {
            Some(bytes) if size.is_none() => size = Some(bytes),
            _ => complaint = Some("unreadable time or size before the message id"),
        }
    }
    let id = id.ok_or("no message id where a message's header line should be")?;

    // After the id: the sender, a login, and the markers at the end.
    let markers = Markers::strip(line[position..].trim());
    let (sender, unread) = parse_sender(markers.rest);
    if unread {
        complaint = Some("unreadable sender after the message id");
    }

    let message = QueuedMessage {
        id,
        age_secs,
        size,
        sender,
        recipients: Vec::new(),
        frozen: markers.frozen,
        spool_error: markers.spool_error,
    };
    Ok((message, complaint))
}

/// The next space-separated token at or after `from`, with where it ends.
fn next_token(line: &str, from: usize) -> Option<(&str, usize)> {
    let start = from + line[from..].find(|c: char| c != ' ')?;
    let end = line[start..].find(' ').map_or(line.len(), |n| start + n);
    Some((&line[start..end], end))
}

/// The sender between angle brackets, and whether the text held something
/// else than a sender and a login. No text at all means Exim could not read
/// the envelope: the sender is unknown and left empty.
fn parse_sender(text: &str) -> (String, bool) {
    if text.is_empty() {
        return (String::new(), false);
    }
    let Some(inner) = text.strip_prefix('<') else {
        return (String::new(), true);
    };
    // The login that may follow holds no `>`; the address may (quoted).
    let Some(close) = inner.rfind('>') else {
        return (String::new(), true);
    };
    let after = inner[close + 1..].trim();
    let login_only = after.is_empty() || (after.starts_with('(') && after.ends_with(')'));
    (inner[..close].to_string(), !login_only)
}

/// The `*** ... ***` markers at the end of a header or error line.
struct Markers<'a> {
    /// What is left before them.
    rest: &'a str,
    frozen: bool,
    spool_error: Option<String>,
}

impl<'a> Markers<'a> {
    fn strip(text: &'a str) -> Markers<'a> {
        let mut markers = Markers {
            rest: text.trim_end(),
            frozen: false,
            spool_error: None,
        };
        loop {
            if let Some(before) = markers.rest.strip_suffix("*** frozen ***") {
                markers.frozen = true;
                markers.rest = before.trim_end();
                continue;
            }
            let Some(open) = markers.rest.rfind("*** spool ") else {
                return markers;
            };
            let Some(inner) = markers.rest[open + 4..].strip_suffix(" ***") else {
                return markers;
            };
            markers.spool_error = Some(inner.trim().to_string());
            markers.rest = markers.rest[..open].trim_end();
        }
    }
}

/// Reads Exim's time on the queue (`88m`, `4h`, `3d`) in seconds.
fn parse_age(token: &str) -> Option<u64> {
    let unit = match token.as_bytes().last()? {
        b'm' => 60,
        b'h' => 3_600,
        b'd' => 86_400,
        _ => return None,
    };
    let number = &token[..token.len() - 1];
    // A negative time (the clock was set back) has a sign; it reads as 0.
    if let Some(minus) = number.strip_prefix('-') {
        return digits(minus).map(|_| 0);
    }
    digits(number)?.checked_mul(unit)
}

/// Reads Exim's size (`512`, `2.9K`, `21K`, `1.2M`) in bytes, rounded the
/// way Exim rounded it.
fn parse_size(token: &str) -> Option<u64> {
    let (number, unit) = match token.as_bytes().last()? {
        b'K' => (&token[..token.len() - 1], 1u64 << 10),
        b'M' => (&token[..token.len() - 1], 1 << 20),
        b'G' => (&token[..token.len() - 1], 1 << 30),
        _ => return digits(token),
    };
    let (whole, tenths) = match number.split_once('.') {
        Some((whole, tenth)) if tenth.len() == 1 => (digits(whole)?, digits(tenth)?),
        Some(_) => return None,
        None => (digits(number)?, 0),
    };
    // In tenths of the unit, to round once at the end.
    let scaled = whole.checked_mul(10)?.checked_add(tenths)?;
    Some((scaled.checked_mul(unit)? + 5) / 10)
}

/// A non-empty run of ASCII digits as a number.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIREMENTS_EXAMPLE: &str = " 4h  2.9K 1tQw7K-00000000Bq3-0KzP <alice@example.net>
          bob@example.com

 3d  1.2M 1tNa2Z-00000000X1c-03Rm <> *** frozen ***
          postmaster@example.org

88m   512 1qAbCK-000123-Xy <carol@example.net>
        D dave@example.com
          erin@example.org

";

    fn recipient(address: &str, delivered: bool) -> QueueRecipient {
        QueueRecipient {
            address: address.to_string(),
            delivered,
        }
    }

    #[test]
    fn requirements_example_reads_three_messages() {
        let listing = parse_bp(REQUIREMENTS_EXAMPLE);
        assert_eq!(listing.problems, vec![]);
        let [first, second, third] = &listing.messages[..] else {
            panic!("three messages expected: {:?}", listing.messages);
        };

        assert_eq!(first.id.as_str(), "1tQw7K-00000000Bq3-0KzP");
        assert_eq!(first.age_secs, Some(4 * 3_600));
        assert_eq!(first.size, Some(2_970)); // 2.9 * 1024 = 2969.6
        assert_eq!(first.sender, "alice@example.net");
        assert_eq!(first.recipients, vec![recipient("bob@example.com", false)]);
        assert!(!first.frozen && !first.is_bounce());

        assert_eq!(second.id.as_str(), "1tNa2Z-00000000X1c-03Rm");
        assert_eq!(second.age_secs, Some(3 * 86_400));
        assert_eq!(second.size, Some(1_258_291)); // 1.2 * 1024 * 1024
        assert!(second.is_bounce() && second.frozen);
        assert_eq!(second.sender, "");
        assert_eq!(
            second.recipients,
            vec![recipient("postmaster@example.org", false)]
        );

        assert_eq!(third.id.as_str(), "1qAbCK-000123-Xy");
        assert_eq!(third.age_secs, Some(88 * 60));
        assert_eq!(third.size, Some(512));
        assert!(!third.frozen);
        assert_eq!(
            third.recipients,
            vec![
                recipient("dave@example.com", true),
                recipient("erin@example.org", false)
            ]
        );
        assert_eq!(third.undelivered().count(), 1);
        assert!(third.spool_error.is_none());
    }

    #[test]
    fn ages_in_minutes_hours_and_days() {
        assert_eq!(parse_age("0m"), Some(0));
        assert_eq!(parse_age("90m"), Some(5_400));
        assert_eq!(parse_age("72h"), Some(259_200));
        assert_eq!(parse_age("123d"), Some(123 * 86_400));
        assert_eq!(parse_age("-2m"), Some(0));
        assert_eq!(parse_age("4"), None);
        assert_eq!(parse_age("m"), None);
        assert_eq!(parse_age("4s"), None);
        assert_eq!(parse_age("99999999999999999999d"), None);
    }

    #[test]
    fn sizes_in_units_of_1024() {
        assert_eq!(parse_size("1"), Some(1));
        assert_eq!(parse_size("1023"), Some(1_023));
        assert_eq!(parse_size("1.0K"), Some(1_024));
        assert_eq!(parse_size("9.9K"), Some(10_138));
        assert_eq!(parse_size("21K"), Some(21_504));
        assert_eq!(parse_size("1.2M"), Some(1_258_291));
        assert_eq!(parse_size("44M"), Some(44 << 20));
        assert_eq!(parse_size("2048M"), Some(2 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("1.25K"), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("4m"), None);
    }

    #[test]
    fn unreadable_spool_header_keeps_the_message_with_its_error() {
        let text = " 1m   277 1xZbJs-0007B2-2T <alice@example.net>
          bob@example.com

      1xZbZZ-0007ZZ-2T
    *** spool format error: size=8 ***

      1xZbZY-0007ZZ-2T
    *** spool read error: Permission denied ***

";
        let listing = parse_bp(text);
        assert_eq!(listing.problems, vec![]);
        assert_eq!(listing.messages.len(), 3);
        let format = &listing.messages[1];
        assert_eq!(format.id.as_str(), "1xZbZZ-0007ZZ-2T");
        assert_eq!(format.age_secs, None);
        assert_eq!(format.size, None);
        assert_eq!(
            format.spool_error.as_deref(),
            Some("spool format error: size=8")
        );
        assert!(!format.is_bounce(), "an unread envelope is no bounce");
        let read = &listing.messages[2];
        assert_eq!(
            read.spool_error.as_deref(),
            Some("spool read error: Permission denied")
        );
    }

    #[test]
    fn damaged_headers_keep_envelope_recipients_and_freeze() {
        let text = "25h  3.1K 1xZbJs-0007B2-2T <alice@example.net>
    *** spool read error: Bad file descriptor *** *** frozen ***
          bob@example.com
";
        let listing = parse_bp(text);
        assert_eq!(listing.problems, vec![]);
        let message = &listing.messages[0];
        assert_eq!(message.age_secs, Some(25 * 3_600));
        assert!(message.frozen);
        assert_eq!(
            message.spool_error.as_deref(),
            Some("spool read error: Bad file descriptor")
        );
        assert_eq!(message.recipients.len(), 1);
    }

    #[test]
    fn spool_error_on_the_header_line_instead_of_a_time() {
        let listing = parse_bp(
            "      1qAbCK-000123-Xy *** spool read error: No such file or directory ***\n",
        );
        assert_eq!(listing.problems, vec![]);
        let message = &listing.messages[0];
        assert_eq!(message.age_secs, None);
        assert_eq!(
            message.spool_error.as_deref(),
            Some("spool read error: No such file or directory")
        );
    }

    #[test]
    fn login_of_an_untrusted_caller_is_not_part_of_the_sender() {
        let listing = parse_bp(" 5m   300 1xZbJs-0007B2-2T <alice@example.net> (alice)\n");
        assert_eq!(listing.problems, vec![]);
        assert_eq!(listing.messages[0].sender, "alice@example.net");
    }

    #[test]
    fn quoted_sender_with_spaces_and_brackets() {
        let listing =
            parse_bp(" 5m   300 1xZbJs-0007B2-2T <\"a >b\"@example.net> *** frozen ***\n");
        assert_eq!(listing.problems, vec![]);
        assert_eq!(listing.messages[0].sender, "\"a >b\"@example.net");
        assert!(listing.messages[0].frozen);
    }

    #[test]
    fn delivered_marker_never_stays_in_an_address() {
        let text = " 0m   398 1xZVcV-0007DD-1P <root-mail@lab.test>
        D nobody-zoe13@lab.test
          vacation-hold@lab.test
        D  spaced@lab.test
";
        let listing = parse_bp(text);
        let addresses: Vec<_> = listing.messages[0]
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.delivered))
            .collect();
        assert_eq!(
            addresses,
            vec![
                ("nobody-zoe13@lab.test", true),
                ("vacation-hold@lab.test", false),
                ("spaced@lab.test", true)
            ]
        );
    }

    #[test]
    fn lines_not_understood_are_problems_and_messages_are_kept() {
        let text = "garbage at the start
          orphan@example.com
 4x  2.9K 1tQw7K-00000000Bq3-0KzP <alice@example.net>
          bob@example.com
       +D generated@example.com
 1m   300 1xZbJs-0007B2-2T alice@example.net
    *** not an error ***
 1m   300 not-an-id <x@example.net>
          lost@example.com
";
        let listing = parse_bp(text);
        let ids: Vec<_> = listing.messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, vec!["1tQw7K-00000000Bq3-0KzP", "1xZbJs-0007B2-2T"]);
        let lines: Vec<_> = listing.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(listing.problems[3].text, "       +D generated@example.com");
        // The message with an unreadable time keeps its size and recipient.
        let first = &listing.messages[0];
        assert_eq!((first.age_secs, first.size), (None, Some(2_970)));
        assert_eq!(first.recipients.len(), 1);
    }

    #[test]
    fn recipients_after_a_blank_line_belong_to_no_message() {
        let listing = parse_bp(" 1m   300 1xZbJs-0007B2-2T <a@example.net>\n\n          b@x\n");
        assert!(listing.messages[0].recipients.is_empty());
        assert_eq!(listing.problems.len(), 1);
    }

    #[test]
    fn windows_line_ends_and_empty_input() {
        let listing =
            parse_bp(" 1m   300 1xZbJs-0007B2-2T <a@example.net>\r\n          b@x\r\n\r\n");
        assert_eq!(listing.problems, vec![]);
        assert_eq!(listing.messages[0].recipients[0].address, "b@x");
        assert_eq!(parse_bp(""), Listing::default());
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for text in [
            "*",
            " *** ",
            "        D ",
            "        D",
            "\u{e9}\u{e9} 1m",
            "-",
            "  -m 1K",
        ] {
            let _ = parse_bp(text);
        }
    }
}
