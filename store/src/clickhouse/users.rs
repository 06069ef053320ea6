//! Users of the API and their sessions, in `users` and `sessions`:
//! `ReplacingMergeTree`s whose latest version of a row wins, read with
//! `FINAL`.
//!
//! ClickHouse has no unique keys: creating a user checks the name is free
//! and then writes, so two processes creating the same name at the same
//! moment end with the later one's user. Users are made by hand, one at a
//! time, so this is accepted.

use serde::{Deserialize, Serialize};

use super::rows::{from_ms, ms};
use super::Db;
use crate::error::{Result, StoreError};
use crate::types::{Role, Session, User};

#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct UserRow {
    name: String,
    role: String,
    password_hash: String,
    disabled: u8,
    hosts: Vec<String>,
    created_ms: i64,
    updated_ms: i64,
    updated_ns: u64,
}

impl UserRow {
    fn new(u: &User, version: u64) -> UserRow {
        UserRow {
            name: u.name.clone(),
            role: u.role.as_str().to_string(),
            password_hash: u.password_hash.clone(),
            disabled: u.disabled as u8,
            hosts: u.hosts.clone(),
            created_ms: ms(u.created_at),
            updated_ms: ms(u.updated_at),
            updated_ns: version,
        }
    }

    fn into_user(self) -> Result<User> {
        Ok(User {
            name: self.name,
            role: self
                .role
                .parse::<Role>()
                .map_err(|e| StoreError::corrupt("user", e))?,
            password_hash: self.password_hash,
            disabled: self.disabled != 0,
            hosts: self.hosts,
            created_at: from_ms(self.created_ms),
            updated_at: from_ms(self.updated_ms),
        })
    }
}

#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct SessionRow {
    id: String,
    username: String,
    token_hash: String,
    created_ms: i64,
    expires_ms: i64,
    revoked_ms: Option<i64>,
    client_ip: Option<String>,
    updated_ns: u64,
}

impl SessionRow {
    fn new(s: &Session, version: u64) -> SessionRow {
        SessionRow {
            id: s.id.clone(),
            username: s.user.clone(),
            token_hash: s.token_hash.clone(),
            created_ms: ms(s.created_at),
            expires_ms: ms(s.expires_at),
            revoked_ms: s.revoked_at.map(ms),
            client_ip: s.client_ip.clone(),
            updated_ns: version,
        }
    }

    fn into_session(self) -> Session {
        Session {
            id: self.id,
            user: self.username,
            token_hash: self.token_hash,
            created_at: from_ms(self.created_ms),
            expires_at: from_ms(self.expires_ms),
            revoked_at: self.revoked_ms.map(from_ms),
            client_ip: self.client_ip,
        }
    }
}

/// Adds a user whose name is free.
pub async fn create_user(db: &Db, u: &User, version: u64) -> Result<()> {
    if user(db, &u.name).await?.is_some() {
        return Err(StoreError::Exists {
            what: "user",
            name: u.name.clone(),
        });
    }
    db.insert("users", &[UserRow::new(u, version)], "add a user")
        .await
}

/// Replaces an existing user's fields.
pub async fn update_user(db: &Db, u: &User, version: u64) -> Result<()> {
    if user(db, &u.name).await?.is_none() {
        return Err(StoreError::NotFound {
            what: "user",
            name: u.name.clone(),
        });
    }
    db.insert("users", &[UserRow::new(u, version)], "change a user")
        .await
}

/// One user by name.
pub async fn user(db: &Db, name: &str) -> Result<Option<User>> {
    let sql = format!(
        "SELECT {} FROM users FINAL WHERE name = ?",
        super::rows::columns::<UserRow>()
    );
    let rows: Vec<UserRow> = db.fetch(db.query(&sql).bind(name), "read a user").await?;
    rows.into_iter().next().map(UserRow::into_user).transpose()
}

/// Every user, by name.
pub async fn users(db: &Db) -> Result<Vec<User>> {
    let sql = format!(
        "SELECT {} FROM users FINAL ORDER BY name",
        super::rows::columns::<UserRow>()
    );
    let rows: Vec<UserRow> = db.fetch(db.query(&sql), "read the users").await?;
    rows.into_iter().map(UserRow::into_user).collect()
}

/// Saves a session under a new version.
pub async fn save_session(db: &Db, s: &Session, version: u64) -> Result<()> {
    db.insert("sessions", &[SessionRow::new(s, version)], "save a session")
        .await
}

/// One session by id.
pub async fn session(db: &Db, id: &str) -> Result<Option<Session>> {
    let sql = format!(
        "SELECT {} FROM sessions FINAL WHERE id = ?",
        super::rows::columns::<SessionRow>()
    );
    let rows: Vec<SessionRow> = db.fetch(db.query(&sql).bind(id), "read a session").await?;
    Ok(rows.into_iter().next().map(SessionRow::into_session))
}

/// Revokes every live session of a user, each under a new version.
pub async fn revoke_sessions(
    db: &Db,
    user: &str,
    at_ms: i64,
    mut version: impl FnMut() -> u64,
) -> Result<u64> {
    let sql = format!(
        "SELECT {} FROM sessions FINAL WHERE username = ? AND isNull(revoked_ms) AND expires_ms > ?",
        super::rows::columns::<SessionRow>()
    );
    let live: Vec<SessionRow> = db
        .fetch(
            db.query(&sql).bind(user).bind(at_ms),
            "read a user's sessions",
        )
        .await?;
    let revoked: Vec<SessionRow> = live
        .into_iter()
        .map(|mut row| {
            row.revoked_ms = Some(at_ms);
            row.updated_ns = version();
            row
        })
        .collect();
    db.insert("sessions", &revoked, "revoke sessions").await?;
    Ok(revoked.len() as u64)
}
