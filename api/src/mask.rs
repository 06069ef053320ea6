//! Masked addresses for viewers (`--mask-viewer-addresses`).
//!
//! When it is on, every answer to a viewer has the local part of every
//! mail address in it replaced by a mark: `alice@example.com` reads
//! `*5f0c2a91d4@example.com`. The mark is `*` and ten hex digits of an
//! HMAC-SHA-256 of the lowercased local part, keyed by a secret derived
//! from the API's oldest token signing key. So a viewer can still tell
//! that two messages went to the same mailbox, and to which domain, and
//! follow a sender across reports, but cannot read who it is, nor find
//! out by hashing likely names (the key is the server's); every process
//! sharing the signing keys (a fleet's `serve` instances, through the
//! store or `EXIM_PILOT_JWT_SECRET`) makes the same marks. Operators and
//! admins see everything whole, and filters still take whole addresses
//! from anyone: a viewer who knows an address can search by it.
//!
//! It is done in one place, on the answer rather than field by field
//! ([`MaskViewers`], a schema extension): every string of a viewer's
//! answer is rewritten, whatever field it comes from. That covers the
//! fields made of addresses (senders, recipients, rankings, a queued
//! message's recipients), the free texts that quote them (SMTP errors,
//! rejection reasons, failure samples, Exim's output, a message's own
//! log) and raw log lines, the `details` JSON, queries, mutations and
//! subscriptions alike, and CSV exports, which are made from the same
//! answers. Pagination cursors are left alone.
//!
//! What counts as an address: a run of local-part characters (letters,
//! digits and `._-+!#%^~&`), `@`, and a domain (letters, digits, `.`,
//! `-`, or an address literal in brackets). Exim writes a local
//! delivery's address as its bare local part before the full one
//! (`=> alice <alice@example.com>`, `/var/mail/alice`); local parts of
//! three or more characters seen anywhere in an answer are therefore
//! masked wherever they stand alone in it, and the bare address that
//! follows a delivery mark (`=>`, `->`, `**`, `==`, `>>`, `*>`) or stands
//! alone in angle brackets (`<alice>`, unqualified) or names a mailbox
//! in a path (`/var/mail/alice`, `/home/alice/`) is masked whatever its
//! length. A quoted local part (`"john doe"@example.com`) is masked
//! whole, quotes included. A word equal to a masked local part is masked
//! even where it meant something else (a router named like a mailbox, a
//! word of a subject).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerResult, Value, Variables};
use futures_util::stream::{BoxStream, StreamExt};
use ring::hmac;

use exim_pilot_store::Role;

use crate::auth::tokens::derived_key;
use crate::graphql::Caller;

/// Hex digits of a mark.
const MARK_DIGITS: usize = 10;

/// Shortest bare local part masked wherever it stands alone.
const MIN_BARE: usize = 3;

/// The marks of delivery lines, before a final address.
const DELIVERY_MARKS: [&str; 6] = ["=>", "->", "**", "==", ">>", "*>"];

/// Directories whose entries are named after users: the word after them
/// in a path is a local part (`/var/mail/alice`, `/home/alice/Maildir`).
const MAILBOX_PARENTS: [&str; 4] = ["/mail/", "/home/", "/vmail/", "/mailboxes/"];

/// Object keys whose values are not shown to people and must survive.
const UNTOUCHED_KEYS: [&str; 2] = ["cursor", "endCursor"];

/// Masks the local parts of addresses.
pub struct Masker {
    key: hmac::Key,
}

impl Masker {
    /// A masker keyed by `secret`.
    pub fn new(secret: &[u8]) -> Masker {
        Masker {
            key: derived_key(secret, b"exim-pilot address mask v1"),
        }
    }

    /// The mark standing for a local part.
    pub fn mark(&self, local: &str) -> String {
        let tag = hmac::sign(&self.key, local.to_lowercase().as_bytes());
        let mut mark = String::with_capacity(MARK_DIGITS + 1);
        mark.push('*');
        for b in tag.as_ref().iter().take(MARK_DIGITS / 2) {
            mark.push_str(&format!("{b:02x}"));
        }
        mark
    }

    /// `text` with its addresses masked, and the bare local parts of
    /// `known` (lowercased) too.
    pub fn text(&self, text: &str, known: &HashSet<String>) -> String {
        let bare = bare_words(text);
        let mut out = String::with_capacity(text.len() + 16);
        for piece in pieces(text) {
            match piece {
                Piece::Other(s) => out.push_str(s),
                Piece::Word {
                    text: w,
                    at,
                    domain,
                } => {
                    let masked = domain.is_some()
                        || bare.contains(&at)
                        || (w.len() >= MIN_BARE && known.contains(&w.to_lowercase()));
                    out.push_str(&if masked { self.mark(w) } else { w.to_string() });
                    if let Some(d) = domain {
                        out.push('@');
                        out.push_str(d);
                    }
                }
            }
        }
        out
    }

    /// Masks every string of a GraphQL answer.
    pub fn response(&self, response: &mut Response) {
        let mut known = HashSet::new();
        collect(&response.data, &mut known);
        for e in &response.errors {
            local_parts(&e.message, &mut known);
        }
        self.value(&mut response.data, &known);
        for e in &mut response.errors {
            e.message = self.text(&e.message, &known);
        }
    }

    fn value(&self, value: &mut Value, known: &HashSet<String>) {
        match value {
            Value::String(s) if s.contains('@') || !known.is_empty() => *s = self.text(s, known),
            Value::List(items) => items.iter_mut().for_each(|v| self.value(v, known)),
            Value::Object(fields) => {
                for (name, v) in fields.iter_mut() {
                    if !UNTOUCHED_KEYS.contains(&name.as_str()) {
                        self.value(v, known);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The lowercased local parts of every address in `value`'s strings.
fn collect(value: &Value, known: &mut HashSet<String>) {
    match value {
        Value::String(s) => local_parts(s, known),
        Value::List(items) => items.iter().for_each(|v| collect(v, known)),
        Value::Object(fields) => fields
            .iter()
            .filter(|(name, _)| !UNTOUCHED_KEYS.contains(&name.as_str()))
            .for_each(|(_, v)| collect(v, known)),
        _ => {}
    }
}

/// Adds the lowercased local parts of `text`'s addresses to `known`.
fn local_parts(text: &str, known: &mut HashSet<String>) {
    let bare = bare_words(text);
    for piece in pieces(text) {
        if let Piece::Word {
            text: w,
            at,
            domain,
        } = piece
        {
            if domain.is_some() || bare.contains(&at) {
                known.insert(w.to_lowercase());
            }
        }
    }
}

/// A part of a text: a word of local-part characters (with its domain
/// when it is an address's local part), or anything else.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Word {
        text: &'a str,
        at: usize,
        domain: Option<&'a str>,
    },
    Other(&'a str),
}

/// Letters and digits of any script count (internationalised addresses:
/// `jörg.müller@bücher.example`).
fn local_char(c: char) -> bool {
    c.is_alphanumeric() || "._-+!#%^~&".contains(c)
}

fn domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || c == '-'
}

/// Splits `text` into words and the rest.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while !rest.is_empty() {
        let start = rest
            .find(|c| local_char(c) || c == '"')
            .unwrap_or(rest.len());
        if start > 0 {
            out.push(Piece::Other(&rest[..start]));
        }
        rest = &rest[start..];
        offset += start;
        if rest.is_empty() {
            break;
        }
        if rest.starts_with('"') {
            // A quoted local part (`"john doe"@example.com`) is one word,
            // quotes included; any other quote is punctuation.
            let used = match quoted_address(rest) {
                Some((quoted, domain)) => {
                    out.push(Piece::Word {
                        text: quoted,
                        at: offset,
                        domain: Some(domain),
                    });
                    quoted.len() + 1 + domain.len()
                }
                None => {
                    out.push(Piece::Other(&rest[..1]));
                    1
                }
            };
            rest = &rest[used..];
            offset += used;
            continue;
        }
        let len = rest.find(|c| !local_char(c)).unwrap_or(rest.len());
        let (word, after) = rest.split_at(len);
        // Dots around a word are punctuation, not part of it.
        let lead = word.len() - word.trim_start_matches('.').len();
        let word_core = word.trim_start_matches('.');
        if lead > 0 {
            out.push(Piece::Other(&word[..lead]));
        }
        let domain = after.strip_prefix('@').and_then(domain_of);
        let core = if domain.is_some() {
            word_core
        } else {
            word_core.trim_end_matches('.')
        };
        let tail = &word_core[core.len()..];
        if !core.is_empty() {
            out.push(Piece::Word {
                text: core,
                at: offset + lead,
                domain,
            });
        }
        if !tail.is_empty() {
            out.push(Piece::Other(tail));
        }
        let used = len + domain.map_or(0, |d| 1 + d.len());
        rest = &rest[used..];
        offset += used;
    }
    out
}

/// The longest local part an address may have (RFC 5321), quotes
/// included here.
const MAX_LOCAL: usize = 66;

/// A quoted local part at the start of `s` (which starts with `"`) and
/// the domain after its `@`, when `s` starts with such an address.
fn quoted_address(s: &str) -> Option<(&str, &str)> {
    // The closing quote: not one escaped with a backslash (`"a\"b"@x`).
    let mut escaped = false;
    let mut close = None;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            '\n' => return None,
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                close = Some(i);
                break;
            }
            _ => {}
        }
    }
    let close = close?;
    if close >= MAX_LOCAL {
        return None;
    }
    let quoted = &s[..=close];
    let domain = s[close + 1..].strip_prefix('@').and_then(domain_of)?;
    Some((quoted, domain))
}

/// The domain at the start of `s`, if there is one.
fn domain_of(s: &str) -> Option<&str> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        return Some(&s[..=end]);
    }
    let len = s.find(|c| !domain_char(c)).unwrap_or(s.len());
    let domain = s[..len].trim_end_matches('.');
    domain
        .chars()
        .next()
        .filter(char::is_ascii_alphanumeric)
        .map(|_| domain)
}

/// Where the bare local parts of `text` start: the final address after
/// a delivery mark (`=> alice <alice@example.com>`), an unqualified
/// address alone in angle brackets (`<alice>`), and a mailbox's name in
/// a path (`/var/mail/alice`).
fn bare_words(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for parent in MAILBOX_PARENTS {
        for (i, _) in text.match_indices(parent) {
            found.push(i + parent.len());
        }
    }
    for (i, _) in text.match_indices('<') {
        let word = &text[i + 1..];
        let len = word.find(|c| !local_char(c)).unwrap_or(word.len());
        if len > 0 && word[len..].starts_with('>') {
            found.push(i + 1);
        }
    }
    for mark in DELIVERY_MARKS {
        let needle = format!(" {mark} ");
        let mut from = 0;
        while let Some(i) = text[from..].find(&needle) {
            let start = from + i + needle.len();
            let word = &text[start..];
            let len = word.find(|c| !local_char(c)).unwrap_or(word.len());
            if len > 0 && word[len..].starts_with(" <") {
                found.push(start);
            }
            from = start;
        }
    }
    found
}

/// The schema extension masking viewers' answers.
pub struct MaskViewers(pub Arc<Masker>);

impl ExtensionFactory for MaskViewers {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ForViewer {
            masker: self.0.clone(),
            viewer: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// One request's masking: whether its caller is a viewer is known once
/// its data is, when the query is parsed.
struct ForViewer {
    masker: Arc<Masker>,
    viewer: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Extension for ForViewer {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        if self.viewer.load(Ordering::Relaxed) {
            self.masker.response(&mut response);
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let masker = self.masker.clone();
        let viewer = self.viewer.clone();
        next.run(ctx, stream)
            .map(move |mut response| {
                if viewer.load(Ordering::Relaxed) {
                    masker.response(&mut response);
                }
                response
            })
            .boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let viewer = ctx
            .data_opt::<Caller>()
            .and_then(|c| c.principal.as_ref())
            .is_some_and(|p| p.role == Role::Viewer);
        self.viewer.store(viewer, Ordering::Relaxed);
        next.run(ctx, query, variables).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(text: &str) -> String {
        let masker = Masker::new(b"a test key");
        let mut known = HashSet::new();
        local_parts(text, &mut known);
        masker.text(text, &known)
    }

    #[test]
    fn addresses_keep_their_domain_and_a_stable_mark() {
        let masker = Masker::new(b"a test key");
        let a = mask("to alice@example.com.");
        assert!(!a.contains("alice"), "{a}");
        assert!(a.ends_with("@example.com."), "{a}");
        assert_eq!(masker.mark("Alice"), masker.mark("alice"));
        assert_ne!(masker.mark("alice"), masker.mark("alicf"));
        assert_ne!(
            Masker::new(b"another key").mark("alice"),
            masker.mark("alice")
        );
        assert_eq!(masker.mark("x").len(), 1 + MARK_DIGITS);
    }

    #[test]
    fn exim_lines_lose_every_local_part() {
        let line = "2026-12-04 15:54:40.450 [27599] 1xZVcO-0007B8-1C => bob <grace.h@lab.test> \
                    F=<marek.petrov@tls.test> P=<marek.petrov@tls.test> R=localuser \
                    T=local_file S=9619 id=20261204.1@ws.example A=login:nadia@tls.test";
        let out = mask(line);
        for local in ["bob", "grace.h", "marek.petrov", "nadia", "20261204.1"] {
            assert!(!out.contains(local), "{local} in {out}");
        }
        for kept in [
            "@lab.test",
            "@tls.test",
            "R=localuser",
            "T=local_file",
            "1xZVcO-0007B8-1C",
        ] {
            assert!(out.contains(kept), "{kept} not in {out}");
        }
        let bare = mask("unqualified verify rejected: <al> H=(chatty.example)");
        assert!(
            !bare.contains("<al>") && bare.contains("chatty.example"),
            "{bare}"
        );
        let path = mask("mailbox is full (quota exceeded while writing to /var/mail/al)");
        assert!(
            path.contains("/var/mail/*") && !path.contains("/al)"),
            "{path}"
        );
        let file = mask("1xZVcO-0007B8-1C => /var/mail/grace <grace@lab.test> R=local");
        assert!(!file.contains("grace"), "{file}");
        assert!(file.contains("/var/mail/*"), "{file}");
    }

    #[test]
    fn quoted_local_parts_are_masked_whole() {
        let line = "1xZVcO-0007B8-1C => \"john doe\"@lab.test R=smarthost \
                    T=\"a \"quoted\" subject\" for \"x\"@y.test \"\"@z.test";
        let out = mask(line);
        for local in ["john", "doe", "\"x\"", "\"\"@"] {
            assert!(!out.contains(local), "{local} in {out}");
        }
        for kept in [
            "@lab.test R=smarthost",
            "T=\"a \"quoted\" subject\" for *",
            "@y.test",
        ] {
            assert!(out.contains(kept), "{kept} not in {out}");
        }
        // A quote escaped inside the quotes does not end them.
        let escaped = mask(r#"from "jane.doe\"x"@corp.test and jane.doe@corp.test"#);
        assert!(
            !escaped.contains("jane") && !escaped.contains('x'),
            "{escaped}"
        );
        let marks: Vec<&str> = escaped.split(' ').filter(|w| w.contains('@')).collect();
        assert_ne!(marks[0], marks[1], "{escaped}");
        // Not an address: left as it is.
        for text in ["say \"hi\" @ noon", "\"unclosed@x.test", "\"a\nb\"@x.test"] {
            assert_eq!(
                mask(text).contains('*'),
                text.contains("unclosed"),
                "{text}"
            );
        }
    }

    #[test]
    fn internationalised_local_parts_are_masked_whole() {
        let out = mask("to jörg.müller@corp.test and ß@bücher.example");
        assert!(!out.contains("jörg") && !out.contains("ü*"), "{out}");
        assert!(!out.contains('ß'), "{out}");
        assert!(
            out.contains("@corp.test") && out.contains("@bücher.example"),
            "{out}"
        );
    }

    #[test]
    fn host_names_and_short_words_are_left_alone() {
        let out = mask("lab@lab.test via mx1.lab.test: H=lab [127.0.0.1]:25 ab@x.test ab");
        assert!(out.contains("mx1.lab.test"), "{out}");
        assert!(out.contains("@lab.test"), "{out}");
        assert!(out.ends_with(" ab"), "short words stay: {out}");
        assert!(!out.contains("H=lab "), "{out}");
    }

    #[test]
    fn text_without_addresses_is_unchanged() {
        for text in [
            "",
            "Completed QT=0.114s",
            "<>",
            "(unknown)",
            "a.b.c",
            "@",
            "x@",
            "@y",
        ] {
            assert_eq!(mask(text), text);
        }
    }
}
