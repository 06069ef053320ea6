//! Exim message ids.
//!
//! Exim names every message it accepts with an id made of three base-62
//! parts. Before 4.97 the id has 16 characters (`XXXXXX-YYYYYY-ZZ`); from
//! 4.97 on it has 23 (`XXXXXX-YYYYYYYYYYY-ZZZZ`). [`MessageId`] holds either
//! form inline, so it is `Copy` and costs no allocation on the parse path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a message id before Exim 4.97.
pub const OLD_ID_LEN: usize = 16;
/// Length of a message id from Exim 4.97 on.
pub const NEW_ID_LEN: usize = 23;

/// An Exim message id in either format, validated.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageId {
    len: u8,
    bytes: [u8; NEW_ID_LEN],
}

/// Why a text is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an Exim message id (expected XXXXXX-YYYYYY-ZZ or XXXXXX-YYYYYYYYYYY-ZZZZ): {0:?}")]
pub struct InvalidMessageId(pub String);

impl MessageId {
    /// Reads a message id from the start of `input` if one is there and is
    /// followed by the end of input or a byte that cannot continue an id.
    pub fn parse_prefix(input: &[u8]) -> Option<MessageId> {
        // Both forms have a dash after six characters; most text that is
        // not an id fails this first.
        if input.get(6) != Some(&b'-') {
            return None;
        }
        for len in [NEW_ID_LEN, OLD_ID_LEN] {
            if input.len() < len {
                continue;
            }
            let next_ok = input
                .get(len)
                .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'-');
            if next_ok && is_id(&input[..len]) {
                let mut bytes = [0u8; NEW_ID_LEN];
                bytes[..len].copy_from_slice(&input[..len]);
                return Some(MessageId {
                    len: len as u8,
                    bytes,
                });
            }
        }
        None
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics and '-' are ever stored.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    /// How many characters the id has: 16, or 23 from Exim 4.97 on.
    pub fn text_len(&self) -> usize {
        self.len as usize
    }

    /// True for the 23-character form of Exim 4.97 and later.
    pub fn is_new_format(&self) -> bool {
        self.len as usize == NEW_ID_LEN
    }
}

fn is_id(b: &[u8]) -> bool {
    let base62 = |s: &[u8]| s.iter().all(u8::is_ascii_alphanumeric);
    match b.len() {
        OLD_ID_LEN => {
            b[6] == b'-'
                && b[13] == b'-'
                && base62(&b[..6])
                && base62(&b[7..13])
                && base62(&b[14..])
        }
        NEW_ID_LEN => {
            b[6] == b'-'
                && b[18] == b'-'
                && base62(&b[..6])
                && base62(&b[7..18])
                && base62(&b[19..])
        }
        _ => false,
    }
}

/// Hashes the length and the bytes (unused ones are zero) as three
/// words: ids are the keys of the correlator's busiest table.
impl std::hash::Hash for MessageId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let b = &self.bytes;
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let mut last = [0u8; 8];
        last[..7].copy_from_slice(&b[16..]);
        last[7] = self.len;
        state.write_u64(word(0));
        state.write_u64(word(8));
        state.write_u64(u64::from_le_bytes(last));
    }
}

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match MessageId::parse_prefix(s.as_bytes()) {
            Some(id) if id.len as usize == s.len() => Ok(id),
            _ => Err(InvalidMessageId(s.to_string())),
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.as_str())
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.parse::<MessageId>().unwrap().hash(&mut h);
        h.finish()
    }

    #[test]
    fn every_character_and_the_length_count_in_the_hash() {
        let new = "1sPf10-00000000Aid-00JP";
        assert_eq!(hash_of(new), hash_of(new));
        // Ids that differ in any one place hash apart.
        for at in [0, 7, 15, 16, 22] {
            let mut other = new.as_bytes().to_vec();
            other[at] = if other[at] == b'Z' { b'Y' } else { b'Z' };
            let other = String::from_utf8(other).unwrap();
            assert_ne!(hash_of(new), hash_of(&other), "{other}");
        }
        assert_ne!(hash_of("1kYFeb-0007uW-0p"), hash_of("1kYFeb-0007uW-0q"));
    }

    #[test]
    fn both_formats_are_accepted() {
        let old: MessageId = "1kYFeb-0007uW-0p".parse().unwrap();
        let new: MessageId = "1sPf10-00000000Aid-00JP".parse().unwrap();
        assert!(!old.is_new_format());
        assert!(new.is_new_format());
        assert_eq!(new.to_string(), "1sPf10-00000000Aid-00JP");
    }

    #[test]
    fn prefix_needs_a_boundary() {
        assert!(MessageId::parse_prefix(b"1kYFeb-0007uW-0p <= a@b").is_some());
        assert!(MessageId::parse_prefix(b"1kYFeb-0007uW-0pX").is_none());
        assert!(MessageId::parse_prefix(b"1kYFeb-0007uW-0").is_none());
        assert!("1kYFeb_0007uW-0p".parse::<MessageId>().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let id: MessageId = "1qqXvz-0000Ze-0X".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"1qqXvz-0000Ze-0X\"");
        assert_eq!(serde_json::from_str::<MessageId>(&json).unwrap(), id);
    }
}
