//! Access tokens (JWT) and refresh tokens.
//!
//! An access token is a JWT signed with HMAC-SHA-256 (the only algorithm
//! accepted: a token naming `none`, an RSA algorithm or anything else is
//! refused before its signature is looked at). It carries the user, the
//! role, the session it belongs to, and `iss`, `aud`, `iat`, `nbf` and
//! `exp`, all of which are checked. Its header names the signing key
//! (`kid`): the [`Keyring`] keeps the current key and the ones before it,
//! so that keys can be rotated without logging everybody out.
//!
//! A refresh token names its session and vouches for itself:
//! `<session>.<nonce>.<mac>`, where the nonce is 32 random bytes and the
//! MAC an HMAC-SHA-256 of `<session>.<nonce>` under a [`RefreshKey`]
//! derived from the keyring's root secret. Only a SHA-256 hash of the
//! whole token is stored, in the session. Refreshing hands out a new one
//! and the old one stops working.
//!
//! The MAC is what tells a stolen old token from a made-up one. The
//! session id is no secret (every access token carries it), so a token
//! whose MAC does not verify proves nothing about the session and is
//! simply refused; only a token that verifies, and so was issued by this
//! API for that session, yet is not the session's current one, shows
//! that a token was copied, and revokes the session. Tokens of the
//! earlier `<session>.<secret>` form carry no MAC and are refused like
//! any other forgery: their holders log in again. So are all refresh
//! tokens when the root secret changes.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header};
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use exim_pilot_store::{Role, Store, StoreError};

/// The store blob that holds generated signing keys.
pub const KEYS_BLOB: &str = "api.jwt_keys";

/// What an access token says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user name.
    pub sub: String,
    /// The user's role when the token was issued.
    pub role: Role,
    /// The session (login) it belongs to.
    pub sid: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires at.
    pub exp: i64,
}

/// One signing key.
#[derive(Clone, Serialize, Deserialize)]
pub struct Key {
    /// Its name in token headers.
    pub kid: String,
    /// The HMAC secret, base64.
    pub secret: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).finish()
    }
}

impl Key {
    /// A key with this secret, named after a hash of it.
    pub fn from_secret(secret: &[u8]) -> Key {
        let kid = hex(&Sha256::digest(secret))[..16].to_string();
        Key {
            kid,
            secret: STANDARD.encode(secret),
        }
    }

    /// A new random key.
    pub fn generate() -> Key {
        let secret: [u8; 32] = rand::random();
        Key::from_secret(&secret)
    }

    fn bytes(&self) -> Vec<u8> {
        STANDARD.decode(&self.secret).unwrap_or_default()
    }
}

/// The signing keys: the last one signs, every one verifies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keyring {
    /// Oldest first.
    pub keys: Vec<Key>,
}

/// Why a token was refused. The caller is told only that it was.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, wrong algorithm, unknown key, bad signature, expired,
    /// not yet valid, or for another audience or issuer.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The signing keys could not be loaded or saved.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Keyring {
    /// The secret other keys of the API are derived from: the oldest
    /// signing key's, which outlives rotations as long as it is kept.
    pub fn root_secret(&self) -> Vec<u8> {
        self.keys.first().map(Key::bytes).unwrap_or_default()
    }

    /// The key refresh tokens are authenticated with.
    pub fn refresh_key(&self) -> RefreshKey {
        RefreshKey::new(&self.root_secret())
    }

    /// The keyring to use: the secret given (configuration or
    /// environment) if any, else the keys kept in the store, generating
    /// and saving one on first use.
    pub async fn load(store: &dyn Store, secret: Option<&[u8]>) -> Result<Keyring, TokenError> {
        if let Some(secret) = secret {
            return Ok(Keyring {
                keys: vec![Key::from_secret(secret)],
            });
        }
        if let Some(saved) = store.load_blob(KEYS_BLOB).await? {
            let ring: Keyring = serde_json::from_slice(&saved)
                .map_err(|e| StoreError::corrupt("signing keys", e))?;
            if !ring.keys.is_empty() {
                return Ok(ring);
            }
        }
        let ring = Keyring {
            keys: vec![Key::generate()],
        };
        let bytes =
            serde_json::to_vec(&ring).map_err(|e| StoreError::corrupt("signing keys", e))?;
        store.save_blob(KEYS_BLOB, &bytes).await?;
        Ok(ring)
    }

    /// Signs claims with the newest key.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let key = self
            .keys
            .last()
            .ok_or_else(|| TokenError::Invalid("no signing key".into()))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        encode(&header, claims, &EncodingKey::from_secret(&key.bytes()))
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Checks a token and returns its claims.
    pub fn verify(&self, token: &str, issuer: &str, audience: &str) -> Result<Claims, TokenError> {
        let invalid = |e: jsonwebtoken::errors::Error| TokenError::Invalid(e.to_string());
        let header = decode_header(token).map_err(invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} refused",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no key id".into()))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| TokenError::Invalid(format!("unknown key {kid}")))?;

        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "sub"]);
        decode::<Claims>(token, &DecodingKey::from_secret(&key.bytes()), &validation)
            .map(|data| data.claims)
            .map_err(invalid)
    }
}

/// Issues and checks refresh tokens (see the module docs).
pub struct RefreshKey {
    key: hmac::Key,
}

impl std::fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshKey")
    }
}

/// An HMAC-SHA-256 key derived from `secret` for one use, named by
/// `label`: the HMAC of the label under the secret, so that keys of
/// different uses differ although they come from the same secret.
pub fn derived_key(secret: &[u8], label: &[u8]) -> hmac::Key {
    let derive = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let bytes = hmac::sign(&derive, label);
    hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref())
}

impl RefreshKey {
    /// The key derived from `root` (see [`derived_key`]).
    pub fn new(root: &[u8]) -> RefreshKey {
        RefreshKey {
            key: derived_key(root, b"exim-pilot refresh tokens v1"),
        }
    }

    /// A new refresh token for a session.
    pub fn issue(&self, session: &str) -> String {
        let nonce: [u8; 32] = rand::random();
        let body = format!("{session}.{}", URL_SAFE_NO_PAD.encode(nonce));
        let mac = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    }

    /// The session a refresh token was issued for, if this key issued it.
    pub fn session_of<'t>(&self, token: &'t str) -> Option<&'t str> {
        let (body, mac) = token.rsplit_once('.')?;
        let (session, _nonce) = body.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &mac).ok()?;
        Some(session)
    }
}

/// The hash of a refresh token, as stored.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A new session id.
pub fn new_session_id() -> String {
    let id: [u8; 16] = rand::random();
    hex(&id)
}

/// Compares two strings in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch.
pub fn seconds(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "exim-pilot".into(),
            aud: "exim-pilot-api".into(),
            sub: "ann".into(),
            role: Role::Admin,
            sid: "s".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
        }
    }

    #[test]
    fn tokens_verify_only_with_their_key_audience_and_time() {
        let now = Utc::now().timestamp();
        let ring = Keyring {
            keys: vec![Key::generate()],
        };
        let token = ring.sign(&claims(now)).unwrap();
        assert_eq!(
            ring.verify(&token, "exim-pilot", "exim-pilot-api").unwrap(),
            claims(now)
        );
        assert!(ring.verify(&token, "exim-pilot", "other").is_err());
        assert!(ring.verify(&token, "other", "exim-pilot-api").is_err());

        let other = Keyring {
            keys: vec![Key::generate()],
        };
        assert!(other
            .verify(&token, "exim-pilot", "exim-pilot-api")
            .is_err());

        let mut old = claims(now - 7200);
        old.exp = now - 3600;
        let expired = ring.sign(&old).unwrap();
        assert!(ring
            .verify(&expired, "exim-pilot", "exim-pilot-api")
            .is_err());

        // The previous key still verifies after a rotation.
        let mut rotated = ring.clone();
        rotated.keys.push(Key::generate());
        assert!(rotated
            .verify(&token, "exim-pilot", "exim-pilot-api")
            .is_ok());
    }

    #[test]
    fn refresh_tokens_name_their_session() {
        let key = RefreshKey::new(b"root");
        let t = key.issue("abc");
        assert_eq!(key.session_of(&t), Some("abc"));
        assert_ne!(key.issue("abc"), t);
        assert!(same(&token_hash(&t), &token_hash(&t)));
        assert!(!same(&token_hash(&t), &token_hash("abc.x")));
    }

    #[test]
    fn refresh_tokens_not_issued_by_the_key_name_no_session() {
        let key = RefreshKey::new(b"root");
        let t = key.issue("abc");
        let (body, _) = t.rsplit_once('.').unwrap();
        let (_, nonce) = body.split_once('.').unwrap();
        for forged in [
            "abc.AAAA".to_string(),
            "abc".to_string(),
            format!("abc.{nonce}"),
            format!("abc.{nonce}.AAAA"),
            format!("abd.{nonce}.{}", t.rsplit_once('.').unwrap().1),
            RefreshKey::new(b"another root").issue("abc"),
        ] {
            assert_eq!(key.session_of(&forged), None, "{forged}");
        }
    }
}
