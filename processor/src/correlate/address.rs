//! Final addresses as the lifecycle model writes them.
//!
//! Exim logs a local delivery as `alice <alice@lab.test>`: the local part
//! that was delivered to, then the envelope recipient it came from. The
//! model writes the final address in full (`alice@lab.test`), taking the
//! domain of the address in angle brackets, and keeps the envelope
//! recipient as `original` only when it differs. Pipes (`|/bin/cat`), files
//! (`/var/mail/archive`) and `:blackhole:` are kept as written.

/// The final address and original of a delivery line's `address <original>`.
pub fn final_address(address: &str, original: Option<&str>) -> (String, Option<String>) {
    let full = match (is_bare_local_part(address), original.and_then(domain_of)) {
        (true, Some(domain)) => {
            let mut full = String::with_capacity(address.len() + 1 + domain.len());
            full.push_str(address);
            full.push('@');
            full.push_str(domain);
            full
        }
        _ => address.to_string(),
    };
    let original = original
        .filter(|o| !o.eq_ignore_ascii_case(&full))
        .map(str::to_string);
    (full, original)
}

/// True for `alice`, false for `alice@lab.test`, `|cmd`, `/file`, `:blackhole:`.
fn is_bare_local_part(address: &str) -> bool {
    !address.is_empty()
        && !address.contains('@')
        && !address.starts_with('|')
        && !address.starts_with('/')
        && !address.starts_with(':')
}

fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .filter(|d| !d.is_empty())
}

/// Two addresses name the same mailbox: compared without regard to ASCII
/// case, as Exim compares domains (and, by default, local parts).
pub fn same_address(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fa(a: &str, o: Option<&str>) -> (String, Option<String>) {
        final_address(a, o)
    }

    #[test]
    fn local_parts_take_the_domain_of_the_original() {
        assert_eq!(
            fa("alice", Some("alice@lab.test")),
            ("alice@lab.test".into(), None)
        );
        assert_eq!(
            fa("alice", Some("postmaster@lab.test")),
            ("alice@lab.test".into(), Some("postmaster@lab.test".into()))
        );
    }

    #[test]
    fn pipes_files_and_blackholes_are_kept() {
        assert_eq!(
            fa("|/bin/cat", Some("pipe-ok@lab.test")),
            ("|/bin/cat".into(), Some("pipe-ok@lab.test".into()))
        );
        assert_eq!(
            fa("/var/mail/archive.mbox", Some("archive@example.com")),
            (
                "/var/mail/archive.mbox".into(),
                Some("archive@example.com".into())
            )
        );
        assert_eq!(
            fa(":blackhole:", Some("devnull@example.com")),
            (":blackhole:".into(), Some("devnull@example.com".into()))
        );
    }

    #[test]
    fn full_addresses_stay_and_equal_originals_drop() {
        assert_eq!(
            fa("bob@example.net", None),
            ("bob@example.net".into(), None)
        );
        assert_eq!(
            fa("heidi@partner.test", Some("fwd@lab.test")),
            ("heidi@partner.test".into(), Some("fwd@lab.test".into()))
        );
        assert_eq!(
            fa("Bob@example.net", Some("bob@example.net")),
            ("Bob@example.net".into(), None)
        );
        assert_eq!(fa("alice", None), ("alice".into(), None));
    }
}
