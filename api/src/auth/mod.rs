//! Who is calling, and what they may do.
//!
//! - `password`: the password policy and argon2id hashing.
//! - `tokens`: JWT access tokens, the signing keyring, refresh tokens.
//! - `throttle`: growing waits after failed logins, counted in the store
//!   so that every API process of a fleet shares them.
//!
//! [`Auth`] ties them to the store: logging in, refreshing, logging out,
//! changing passwords, creating and changing users, and turning a bearer
//! token into a [`Principal`]. Every one of those steps, successful or
//! not, is appended to the audit trail.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use exim_pilot_store::{AuditEntry, Role, Session, Store, StoreError, User};

use crate::metrics::ApiMetrics;

pub mod password;
pub mod throttle;
pub mod tokens;

pub use password::PasswordError;
pub use throttle::{Throttle, ThrottleConfig};
pub use tokens::{Claims, Key, Keyring, RefreshKey, TokenError};

/// Settings of authentication.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The `iss` of access tokens.
    pub issuer: String,
    /// The `aud` of access tokens.
    pub audience: String,
    /// How long an access token is valid (default 15 minutes).
    pub access_ttl: Duration,
    /// How long a login lasts without logging in again (default 12 hours).
    pub session_ttl: Duration,
    /// Failed-login waits.
    pub throttle: ThrottleConfig,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            issuer: "exim-pilot".into(),
            audience: "exim-pilot-api".into(),
            access_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(12 * 3600),
            throttle: ThrottleConfig::default(),
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user name.
    pub user: String,
    /// The user's current role.
    pub role: Role,
    /// The mail servers the user may see; empty means all.
    pub hosts: Vec<String>,
    /// The session the token belongs to.
    pub session: String,
    /// When the token expires, in seconds since the epoch.
    pub expires: i64,
}

impl Principal {
    /// True when the user may see this mail server.
    pub fn may_see(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == host)
    }
}

/// A successful login or refresh.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// The JWT to send as `Authorization: Bearer ...`.
    pub access_token: String,
    /// The token that renews it; shown once.
    pub refresh_token: String,
    /// When the access token expires.
    pub expires_at: chrono::DateTime<Utc>,
    /// The user.
    pub user: User,
}

/// Why an authentication step failed. What callers see is deliberately
/// vague: a wrong password, an unknown user and a disabled one give the
/// same [`AuthError::InvalidCredentials`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The user name or password is wrong, or the user may not log in.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// Too many failed logins.
    #[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// A missing, malformed, expired or revoked token.
    #[error("invalid or expired token; log in again")]
    InvalidToken,
    /// The caller's role does not allow this.
    #[error("forbidden: this needs the {0} role")]
    Forbidden(Role),
    /// A new password that breaks the policy.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A user name that cannot be used (as given, cut to a bounded length).
    #[error("invalid user name {0:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'")]
    BadName(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Authentication over a store.
pub struct Auth {
    store: Arc<dyn Store>,
    keys: Keyring,
    refresh_key: RefreshKey,
    config: AuthConfig,
    throttle: Throttle,
    metrics: Option<ApiMetrics>,
}

/// Who did something, for the audit trail.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The user name, or `-`.
    pub name: String,
    /// Their role.
    pub role: Option<Role>,
    /// Their IP address, if known.
    pub ip: Option<IpAddr>,
}

impl Actor {
    /// The command line, run by whoever may open the store.
    pub fn command_line() -> Actor {
        Actor {
            name: "cli".into(),
            role: Some(Role::Admin),
            ip: None,
        }
    }

    /// An authenticated caller.
    pub fn of(p: &Principal, ip: IpAddr) -> Actor {
        Actor {
            name: p.user.clone(),
            role: Some(p.role),
            ip: Some(ip),
        }
    }
}

/// The longest user name: what `user add` and `createUser` accept, so a
/// longer name in a login cannot be anyone's.
pub const MAX_NAME_LEN: usize = 64;

/// Characters of one piece of caller-supplied text (a user name, a host,
/// a string in the parameters) kept in an audit entry or an error; the
/// rest is cut off (see [`clip`]).
pub const MAX_AUDIT_TEXT: usize = 256;

/// `text` as it is when it has at most `max` characters, else its first
/// `max` characters and a marker saying how long it was: what goes into
/// audit entries and error messages from callers.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => {
            let total = text.chars().count();
            format!("{}...[cut, {total} characters]", &text[..cut])
        }
    }
}

/// `params` with every string in it clipped (see [`clip`]).
fn clip_params(params: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match params {
        Value::String(s) if s.len() > MAX_AUDIT_TEXT => Value::String(clip(&s, MAX_AUDIT_TEXT)),
        Value::Array(items) => Value::Array(items.into_iter().map(clip_params).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (clip(&k, MAX_AUDIT_TEXT), clip_params(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Checks a user name.
pub fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadName(clip(name, MAX_NAME_LEN)))
    }
}

/// Hashes on a blocking thread (argon2 takes tens of milliseconds).
async fn hash(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
        .map_err(AuthError::from)
}

async fn verify(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || password::verify(&password, &stored))
        .await
        .unwrap_or(false)
}

/// Adds a user: checks the name and the password policy, hashes, stores
/// and audits. What both `exim-pilot user add` and the `createUser`
/// mutation do.
pub async fn add_user(
    store: &dyn Store,
    actor: &Actor,
    name: &str,
    role: Role,
    password: &str,
    hosts: Vec<String>,
) -> Result<User, AuthError> {
    let outcome = async {
        check_name(name)?;
        password::check_policy(name, password)?;
        let now = Utc::now();
        let user = User {
            name: name.to_string(),
            role,
            password_hash: hash(password.to_string()).await?,
            disabled: false,
            hosts: hosts.clone(),
            created_at: now,
            updated_at: now,
        };
        store.create_user(&user).await?;
        Ok(user)
    }
    .await;
    let params = json!({ "role": role.as_str(), "hosts": hosts });
    audit(
        store,
        actor,
        "user_add",
        Some(name),
        Some(params),
        result_word(&outcome),
    )
    .await;
    outcome
}

/// Changes a user: role, disabled, host scope, password (checked against
/// the policy). Disabling a user or setting a password revokes their
/// sessions. Audited as `user_update`. What both `exim-pilot user set` and
/// the `updateUser` mutation do.
pub async fn update_user(
    store: &dyn Store,
    actor: &Actor,
    name: &str,
    change: UserChange,
) -> Result<User, AuthError> {
    let params = json!({
        "role": change.role.map(Role::as_str),
        "disabled": change.disabled,
        "hosts": change.hosts,
        "password": change.password.is_some(),
    });
    let outcome = async {
        let mut user = store.user(name).await?.ok_or(StoreError::NotFound {
            what: "user",
            name: name.to_string(),
        })?;
        let revoke = change.disabled == Some(true) || change.password.is_some();
        if let Some(role) = change.role {
            user.role = role;
        }
        if let Some(disabled) = change.disabled {
            user.disabled = disabled;
        }
        if let Some(hosts) = change.hosts {
            user.hosts = hosts;
        }
        if let Some(password) = change.password {
            password::check_policy(name, &password)?;
            user.password_hash = hash(password).await?;
        }
        user.updated_at = Utc::now();
        store.update_user(&user).await?;
        if revoke {
            store.revoke_sessions(name, Utc::now()).await?;
        }
        Ok(user)
    }
    .await;
    audit(
        store,
        actor,
        "user_update",
        Some(name),
        Some(params),
        result_word(&outcome),
    )
    .await;
    outcome
}

fn result_word<T>(r: &Result<T, AuthError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(AuthError::Forbidden(_)) => "denied",
        Err(AuthError::Throttled(_)) => "throttled",
        Err(_) => "failed",
    }
}

/// Appends to the audit trail; a failure to do so is logged, not passed
/// on (the action itself already happened or was refused). What callers
/// supplied (the actor's and target's names, strings in `params`) is
/// clipped to [`MAX_AUDIT_TEXT`] characters, so no request can make an
/// entry larger than a few kilobytes per parameter.
pub async fn audit(
    store: &dyn Store,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    params: Option<serde_json::Value>,
    outcome: &str,
) {
    let entry = AuditEntry {
        at: Utc::now(),
        actor: clip(&actor.name, MAX_AUDIT_TEXT),
        role: actor.role.map(|r| r.as_str().to_string()),
        client_ip: actor.ip.map(|ip| ip.to_string()),
        action: action.to_string(),
        target: target.map(|t| clip(t, MAX_AUDIT_TEXT)),
        params: params.map(clip_params),
        outcome: outcome.to_string(),
    };
    if let Err(e) = store.append_audit(&entry).await {
        tracing::error!(error = %e, action, "Audit entry not written");
    }
}

/// What a user may change about another (admins) or themselves.
#[derive(Clone, Debug, Default)]
pub struct UserChange {
    /// A new role.
    pub role: Option<Role>,
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// New host scope.
    pub hosts: Option<Vec<String>>,
    /// A new password.
    pub password: Option<String>,
}

impl Auth {
    /// Authentication over `store` with signing keys `keys`.
    pub fn new(store: Arc<dyn Store>, keys: Keyring, config: AuthConfig) -> Auth {
        let throttle = Throttle::new(Arc::clone(&store), config.throttle);
        Auth {
            store,
            refresh_key: keys.refresh_key(),
            keys,
            config,
            throttle,
            metrics: None,
        }
    }

    /// Counts refused logins and tokens in `metrics`.
    pub fn with_metrics(mut self, metrics: ApiMetrics) -> Auth {
        self.metrics = Some(metrics);
        self
    }

    /// Counts a refusal, if it is one.
    fn count<T>(&self, outcome: Result<T, AuthError>) -> Result<T, AuthError> {
        let reason = match &outcome {
            Err(AuthError::InvalidCredentials) => "credentials",
            Err(AuthError::Throttled(_)) => "throttled",
            Err(AuthError::InvalidToken) => "token",
            _ => return outcome,
        };
        if let Some(m) = &self.metrics {
            m.auth_failure(reason);
        }
        outcome
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    async fn audit(&self, actor: &Actor, action: &str, target: Option<&str>, outcome: &str) {
        audit(&*self.store, actor, action, target, None, outcome).await;
    }

    /// Logs in: checks the throttle, then the password, and opens a
    /// session. A name longer than any user's ([`MAX_NAME_LEN`]) is
    /// refused as bad input before the store is read or written: it
    /// cannot be a user's, and its attempt is neither counted nor
    /// audited.
    pub async fn login(&self, name: &str, password: &str, ip: IpAddr) -> Result<Tokens, AuthError> {
        if name.len() > MAX_NAME_LEN {
            return Err(AuthError::BadName(clip(name, MAX_NAME_LEN)));
        }
        let outcome = self.try_login(name, password, ip).await;
        self.count(outcome)
    }

    async fn try_login(&self, name: &str, password: &str, ip: IpAddr) -> Result<Tokens, AuthError> {
        let anonymous = Actor {
            name: name.to_string(),
            role: None,
            ip: Some(ip),
        };
        let wait = self.throttle.check(name, ip).await?;
        if !wait.is_zero() {
            self.audit(&anonymous, "login", Some(name), "throttled")
                .await;
            return Err(AuthError::Throttled(wait));
        }

        // Unknown users are checked against a decoy hash so that every
        // refusal takes as long as a wrong password for a real user.
        let user = self.store.user(name).await?;
        let stored = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| password::decoy_hash().to_string());
        let matches = verify(password.to_string(), stored).await;
        let user = match user {
            Some(u) if matches && !u.disabled => u,
            _ => {
                let counted = self.throttle.failed(name, ip, 1).await;
                self.audit(&anonymous, "login", Some(name), "failed").await;
                counted?;
                return Err(AuthError::InvalidCredentials);
            }
        };
        if let Err(e) = self.throttle.succeeded(name, ip).await {
            tracing::warn!(user = %user.name, error = %e, "Login limits not reset after a login");
        }

        let now = Utc::now();
        let session_ttl = chrono::Duration::from_std(self.config.session_ttl)
            .unwrap_or(chrono::Duration::hours(12));
        let id = tokens::new_session_id();
        let refresh = self.refresh_key.issue(&id);
        let session = Session {
            id,
            user: user.name.clone(),
            token_hash: tokens::token_hash(&refresh),
            created_at: now,
            expires_at: now + session_ttl,
            revoked_at: None,
            client_ip: Some(ip.to_string()),
        };
        self.store.save_session(&session).await?;
        let actor = Actor {
            name: user.name.clone(),
            role: Some(user.role),
            ip: Some(ip),
        };
        self.audit(&actor, "login", Some(&user.name), "ok").await;
        self.tokens(user, &session.id, refresh)
    }

    fn tokens(&self, user: User, session: &str, refresh: String) -> Result<Tokens, AuthError> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.config.access_ttl)
            .unwrap_or(chrono::Duration::minutes(15));
        let expires_at = now + ttl;
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: user.name.clone(),
            role: user.role,
            sid: session.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        let access_token = self
            .keys
            .sign(&claims)
            .map_err(|_| AuthError::InvalidToken)?;
        Ok(Tokens {
            access_token,
            refresh_token: refresh,
            expires_at,
            user,
        })
    }

    /// Exchanges a refresh token for new tokens. A refresh token this API
    /// issued for the session that was already exchanged revokes the
    /// session: it was copied. One it did not issue (its MAC does not
    /// verify; see [`tokens`]) is refused and changes nothing, since
    /// anyone may know a session's id.
    pub async fn refresh(&self, refresh: &str, ip: IpAddr) -> Result<Tokens, AuthError> {
        let mut actor = Actor {
            name: "-".into(),
            role: None,
            ip: Some(ip),
        };
        let outcome = self.try_refresh(refresh, &mut actor).await;
        self.audit(&actor, "token_refresh", None, result_word(&outcome))
            .await;
        self.count(outcome)
    }

    async fn try_refresh(&self, refresh: &str, actor: &mut Actor) -> Result<Tokens, AuthError> {
        let now = Utc::now();
        let id = self
            .refresh_key
            .session_of(refresh)
            .ok_or(AuthError::InvalidToken)?;
        let mut session = self
            .store
            .session(id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        actor.name = session.user.clone();
        if !session.is_live(now) {
            return Err(AuthError::InvalidToken);
        }
        if !tokens::same(&session.token_hash, &tokens::token_hash(refresh)) {
            session.revoked_at = Some(now);
            self.store.save_session(&session).await?;
            return Err(AuthError::InvalidToken);
        }
        let user = self
            .store
            .user(&session.user)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidToken)?;
        actor.role = Some(user.role);
        let next = self.refresh_key.issue(&session.id);
        session.token_hash = tokens::token_hash(&next);
        self.store.save_session(&session).await?;
        self.tokens(user, &session.id, next)
    }

    /// The caller a bearer token stands for: the token must verify, its
    /// session be live and its user enabled. The role and hosts are the
    /// user's current ones.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let outcome = self.try_authenticate(token).await;
        self.count(outcome)
    }

    async fn try_authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self
            .keys
            .verify(token, &self.config.issuer, &self.config.audience)
            .map_err(|_| AuthError::InvalidToken)?;
        let session = self
            .store
            .session(&claims.sid)
            .await?
            .filter(|s| s.is_live(Utc::now()) && s.user == claims.sub)
            .ok_or(AuthError::InvalidToken)?;
        let user = self
            .store
            .user(&session.user)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidToken)?;
        Ok(Principal {
            user: user.name,
            role: user.role,
            hosts: user.hosts,
            session: session.id,
            expires: claims.exp,
        })
    }

    /// Ends the caller's session: its refresh token stops working and its
    /// access tokens are refused from now on.
    pub async fn logout(&self, p: &Principal, ip: IpAddr) -> Result<(), AuthError> {
        let outcome = async {
            if let Some(mut s) = self.store.session(&p.session).await? {
                s.revoked_at.get_or_insert(Utc::now());
                self.store.save_session(&s).await?;
            }
            Ok(())
        }
        .await;
        self.audit(
            &Actor::of(p, ip),
            "logout",
            Some(&p.user),
            result_word(&outcome),
        )
        .await;
        outcome
    }

    /// Changes the caller's own password, given the current one; every
    /// session of the user is revoked.
    pub async fn change_password(
        &self,
        p: &Principal,
        current: &str,
        new: &str,
        ip: IpAddr,
    ) -> Result<(), AuthError> {
        let outcome = async {
            let wait = self.throttle.check(&p.user, ip).await?;
            if !wait.is_zero() {
                return Err(AuthError::Throttled(wait));
            }
            let mut user = self
                .store
                .user(&p.user)
                .await?
                .ok_or(AuthError::InvalidToken)?;
            if !verify(current.to_string(), user.password_hash.clone()).await {
                self.throttle.failed(&p.user, ip, 1).await?;
                return Err(AuthError::InvalidCredentials);
            }
            password::check_policy(&user.name, new)?;
            user.password_hash = hash(new.to_string()).await?;
            user.updated_at = Utc::now();
            self.store.update_user(&user).await?;
            self.store.revoke_sessions(&user.name, Utc::now()).await?;
            Ok(())
        }
        .await;
        self.audit(
            &Actor::of(p, ip),
            "password_change",
            Some(&p.user),
            result_word(&outcome),
        )
        .await;
        outcome
    }

    /// Changes a user (admins only: the caller's role is checked by the
    /// API); see [`update_user`].
    pub async fn update_user(
        &self,
        actor: &Actor,
        name: &str,
        change: UserChange,
    ) -> Result<User, AuthError> {
        update_user(&*self.store, actor, name, change).await
    }

    /// Counts failed attempts against the caller's IP without checking
    /// anything: what a refused request of many logins costs.
    pub async fn count_failures(&self, account: &str, ip: IpAddr, n: usize) {
        if let Err(e) = self.throttle.failed(account, ip, n).await {
            tracing::warn!(client = %ip, error = %e, "Refused logins not counted");
        }
    }
}
