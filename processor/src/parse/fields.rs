//! The field scanner: splits the tail of a line into `KEY=value` fields,
//! bare words and the free text after a `: ` separator.
//!
//! Exim separates fields with single spaces. A value is a quoted string
//! (`T="a \"b\""`), an address in angle brackets (`F=<a@b>`), or a word;
//! `H=` is special because a host spans several words (`name (helo)
//! [ip]:port`). A field whose value ends in `:` followed by a space ends the
//! field list: what follows is an error text (`T=remote_smtp: SMTP error`,
//! `I=[198.51.100.5]:587: 535 ...`).

use memchr::memchr;

use super::scan::{host, quoted_end, space, HostRead};

/// One piece of a field list.
pub(crate) enum Item<'a> {
    /// `KEY=value`: the key and the value, quotes removed but not decoded.
    Field {
        key: &'a [u8],
        value: &'a [u8],
        quoted: bool,
    },
    /// `H=...`, read as a host.
    Host(HostRead<'a>),
    /// A word that is not a field (`K`, `L`, `defer`, `(111)`, `for`...).
    Word(&'a [u8]),
    /// The text after a `: ` separator, to the end of the line.
    Message(&'a [u8]),
}

/// Walks a field list from left to right.
pub(crate) struct Scanner<'a> {
    /// What is left to read; callers may move it to take over a part.
    pub rest: &'a [u8],
}

impl<'a> Scanner<'a> {
    pub fn new(rest: &'a [u8]) -> Scanner<'a> {
        Scanner { rest }
    }

    /// Takes everything left as one text.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Takes the next word, or an angle-bracketed address that may hold
    /// spaces (`<"a b"@example.com>`).
    pub fn take_address(&mut self) -> &'a [u8] {
        let b = trim_start(self.rest);
        let end = address_end(b);
        self.rest = &b[end..];
        &b[..end]
    }
}

/// The length of the address at the start of `b`: an angle-bracketed
/// address, or a word in which a quoted local part may hold spaces
/// (`"with spaces"@example.com`).
pub(crate) fn address_end(b: &[u8]) -> usize {
    match b.first() {
        Some(b'<') => {
            if let Some(e) = angle_end(b) {
                return e + 1;
            }
        }
        Some(b'"') => {
            if let Some(q) = memchr(b'"', &b[1..]) {
                let after = q + 2;
                return after + space(&b[after..]).unwrap_or(b.len() - after);
            }
        }
        _ => {}
    }
    space(b).unwrap_or(b.len())
}

fn trim_start(mut b: &[u8]) -> &[u8] {
    while let Some((b' ', rest)) = b.split_first() {
        b = rest;
    }
    b
}

/// The index of the `>` closing an address that starts at `b[0] == '<'`:
/// the first `>` followed by a space, a colon or the end.
pub(crate) fn angle_end(b: &[u8]) -> Option<usize> {
    let mut from = 1;
    loop {
        let close = memchr(b'>', &b[from..])? + from;
        if matches!(
            b.get(close + 1),
            None | Some(b' ') | Some(b':') | Some(b',')
        ) {
            return Some(close);
        }
        from = close + 1;
    }
}

/// True for a field name: a letter, then letters, digits, `_`, `-` or `*`
/// (`id*=`), at most 24 bytes.
fn key_len(b: &[u8]) -> Option<usize> {
    let first = *b.first()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let limit = b.len().min(25);
    for (i, &c) in b[..limit].iter().enumerate().skip(1) {
        match c {
            b'=' => return Some(i),
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'*' => {}
            _ => return None,
        }
    }
    None
}

/// Splits a plain word off `b`, ending it before a `:` separator. Returns
/// the word and the rest (which starts with the `:` when there is one).
fn plain_value(b: &[u8]) -> (&[u8], &[u8]) {
    let end = space(b).unwrap_or(b.len());
    let word = &b[..end];
    if word.len() > 1 && word.ends_with(b":") {
        return (&word[..word.len() - 1], &b[end - 1..]);
    }
    (word, &b[end..])
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let b = trim_start(self.rest);
        if b.is_empty() {
            self.rest = b;
            return None;
        }

        // The separator before an error text.
        if b[0] == b':' && matches!(b.get(1), None | Some(b' ')) {
            self.rest = &[];
            return Some(Item::Message(b.get(2..).unwrap_or_default()));
        }

        if let Some(k) = key_len(b) {
            let key = &b[..k];
            let v = &b[k + 1..];
            if key == b"H" {
                if let Some(h) = host(v) {
                    self.rest = h.rest;
                    return Some(Item::Host(h));
                }
            }
            match v.first() {
                Some(b'"') => {
                    if let Some(close) = quoted_end(v) {
                        self.rest = &v[close + 1..];
                        return Some(Item::Field {
                            key,
                            value: &v[1..close],
                            quoted: true,
                        });
                    }
                }
                Some(b'<') => {
                    if let Some(close) = angle_end(v) {
                        self.rest = &v[close + 1..];
                        return Some(Item::Field {
                            key,
                            value: &v[..close + 1],
                            quoted: false,
                        });
                    }
                }
                _ => {}
            }
            let (value, rest) = plain_value(v);
            self.rest = rest;
            return Some(Item::Field {
                key,
                value,
                quoted: false,
            });
        }

        let (w, rest) = plain_value(b);
        self.rest = rest;
        Some(Item::Word(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(b: &[u8]) -> Vec<String> {
        Scanner::new(b)
            .map(|i| match i {
                Item::Field { key, value, quoted } => format!(
                    "{}={}{}",
                    String::from_utf8_lossy(key),
                    if quoted { "q:" } else { "" },
                    String::from_utf8_lossy(value)
                ),
                Item::Host(h) => format!("H:{}", String::from_utf8_lossy(h.raw)),
                Item::Word(w) => format!("w:{}", String::from_utf8_lossy(w)),
                Item::Message(m) => format!("msg:{}", String::from_utf8_lossy(m)),
            })
            .collect()
    }

    #[test]
    fn fields_words_and_messages() {
        assert_eq!(
            items(b"R=r T=t: SMTP error: 550 x"),
            ["R=r", "T=t", "msg:SMTP error: 550 x"]
        );
        assert_eq!(
            items(b"H=a (b) [1.2.3.4]:25 I=[5.6.7.8]:587: 535 no"),
            ["H:a (b) [1.2.3.4]:25", "I=[5.6.7.8]:587", "msg:535 no"]
        );
        assert_eq!(
            items(br#"T="a \"q\" b" K L- C="250 ok": x"#),
            [r#"T=q:a \"q\" b"#, "w:K", "w:L-", "C=q:250 ok", "msg:x"]
        );
        assert_eq!(
            items(b"F=<a b@c> defer (111): x"),
            ["F=<a b@c>", "w:defer", "w:(111)", "msg:x"]
        );
        assert_eq!(items(b"T=t1 : all hosts"), ["T=t1", "msg:all hosts"]);
    }
}
