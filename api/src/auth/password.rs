//! Passwords: the policy a new password must meet, and argon2id hashing.
//!
//! Hashes use argon2id with 19 MiB of memory, two passes and one lane
//! (the minimum OWASP recommends), stored as PHC strings, so that the
//! parameters travel with each hash and can be raised later without
//! breaking old ones.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest password accepted.
pub const MIN_LENGTH: usize = 12;

/// The longest password accepted (longer ones only cost hashing time).
pub const MAX_LENGTH: usize = 128;

/// Memory per hash, in KiB (19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;

/// Passes over the memory.
const PASSES: u32 = 2;

/// Words that make a password guessable however they are decorated: a
/// password that is one of them, or one of them with digits and
/// punctuation added around it, is refused.
const COMMON_WORDS: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssword",
    "p@ssw0rd",
    "qwerty",
    "qwertz",
    "azerty",
    "qwertyuiop",
    "asdfgh",
    "asdfghjkl",
    "zxcvbnm",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "root",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "soccer",
    "hockey",
    "sunshine",
    "princess",
    "trustno",
    "changeme",
    "secret",
    "master",
    "shadow",
    "superman",
    "batman",
    "starwars",
    "whatever",
    "freedom",
    "computer",
    "internet",
    "login",
    "access",
    "default",
    "exim",
    "eximpilot",
    "pilot",
    "postmaster",
    "mailserver",
    "email",
    "mail",
    "test",
    "testing",
    "guest",
    "user",
    "abc",
    "abcdef",
    "abcdefgh",
    "michael",
    "charlie",
    "jordan",
    "jennifer",
    "hunter",
    "ranger",
    "summer",
    "winter",
    "spring",
    "autumn",
    "flower",
    "cookie",
    "cheese",
    "chocolate",
    "pokemon",
    "naruto",
    "killer",
    "hello",
    "helloworld",
    "lovely",
    "loveme",
    "mustang",
    "harley",
    "matrix",
    "nothing",
    "blink",
    "liverpool",
    "chelsea",
    "arsenal",
    "samsung",
    "google",
    "apple",
    "linux",
    "ubuntu",
    "debian",
    "windows",
    "server",
];

/// Why a password was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// Too short.
    #[error("the password must have at least {MIN_LENGTH} characters")]
    TooShort,
    /// Too long.
    #[error("the password must have at most {MAX_LENGTH} characters")]
    TooLong,
    /// Common, or made of a common word, a repeated or sequential pattern
    /// or the user's name.
    #[error("the password is too easy to guess: choose one not built from a common word, the user name or a simple pattern")]
    Common,
    /// The hash could not be made.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Checks a new password against the policy.
pub fn check_policy(user: &str, password: &str) -> Result<(), PasswordError> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(PasswordError::TooShort);
    }
    if length > MAX_LENGTH {
        return Err(PasswordError::TooLong);
    }
    if is_common(user, password) {
        return Err(PasswordError::Common);
    }
    Ok(())
}

/// True for passwords an attacker tries first.
fn is_common(user: &str, password: &str) -> bool {
    let lower = password.to_lowercase();

    // Few distinct characters: `aaaaaaaaaaaa`, `abababababab`.
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 3 {
        return true;
    }

    // A run of consecutive characters: `123456789012`, `abcdefghijkl`.
    let bytes = lower.as_bytes();
    let steps = bytes
        .windows(2)
        .filter(|w| w[1].wrapping_sub(w[0]) == 1)
        .count();
    let steps_down = bytes
        .windows(2)
        .filter(|w| w[0].wrapping_sub(w[1]) == 1)
        .count();
    if steps.max(steps_down) + 2 >= bytes.len() {
        return true;
    }

    // A common word or the user's name, decorated with digits and
    // punctuation, possibly repeated.
    let core: String = lower.trim_matches(|c: char| !c.is_alphabetic()).to_string();
    let user = user.to_lowercase();
    let is_word =
        |w: &str| !w.is_empty() && (COMMON_WORDS.contains(&w) || w == user || repeats(w, &user));
    if core.is_empty() || is_word(&core) {
        return true;
    }
    COMMON_WORDS
        .iter()
        .chain(std::iter::once(&user.as_str()))
        .any(|w| !w.is_empty() && repeats(&core, w))
}

/// True when `text` is `word` written two or more times.
fn repeats(text: &str, word: &str) -> bool {
    !word.is_empty() && text.len() > word.len() && text.len().is_multiple_of(word.len()) && {
        text.as_bytes()
            .chunks(word.len())
            .all(|c| c == word.as_bytes())
    }
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC hash of a password, with a fresh random salt. Takes tens of
/// milliseconds of CPU: call it from a blocking thread.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// True when `password` matches the stored hash. A hash that cannot be
/// read matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password is checked against successfully in practice, used
/// for unknown users so that their answer takes as long as a known user's.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random: String = (0..4).map(|_| rand::random::<u64>().to_string()).collect();
        hash(&random).unwrap_or_default()
    })
}

/// A random password of 24 letters and digits (about 140 bits), for users
/// created without one.
pub fn generate() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_short_long_and_common_passwords() {
        assert_eq!(check_policy("ann", "short"), Err(PasswordError::TooShort));
        assert_eq!(
            check_policy("ann", &"x1".repeat(65)),
            Err(PasswordError::TooLong)
        );
        for weak in [
            "password1234",
            "Password123!",
            "123456789012",
            "aaaaaaaaaaaa",
            "qwertyuiop12",
            "abababababab",
            "ann-ann-ann-ann",
            "annannannann",
            "!!letmein2024",
            "abcdefghijkl",
        ] {
            assert_eq!(
                check_policy("ann", weak),
                Err(PasswordError::Common),
                "{weak}"
            );
        }
        for strong in ["correct horse battery staple", "vT7qLm2pXr9w", &generate()] {
            assert_eq!(check_policy("ann", strong), Ok(()), "{strong}");
        }
    }

    #[test]
    fn hashes_are_argon2id_with_the_required_cost() {
        let h = hash("vT7qLm2pXr9w").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("vT7qLm2pXr9w", &h));
        assert!(!verify("vT7qLm2pXr9W", &h));
        assert!(!verify("anything", "not a hash"));
    }
}
