//! Users of the API and their sessions.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::codec::{from_ms, ms};
use crate::error::{Result, StoreError};
use crate::types::{Role, Session, User};

const USER_COLUMNS: &str =
    "SELECT name, role, password_hash, disabled, hosts, created_ms, updated_ms FROM users";

fn user_from_row(row: &Row<'_>) -> Result<User> {
    let role: String = row.get(1)?;
    let hosts: String = row.get(4)?;
    Ok(User {
        name: row.get(0)?,
        role: role
            .parse::<Role>()
            .map_err(|e| StoreError::corrupt("user", e))?,
        password_hash: row.get(2)?,
        disabled: row.get::<_, i64>(3)? != 0,
        hosts: serde_json::from_str(&hosts).map_err(|e| StoreError::corrupt("user", e))?,
        created_at: from_ms(row.get(5)?),
        updated_at: from_ms(row.get(6)?),
    })
}

fn hosts_json(user: &User) -> String {
    serde_json::Value::from(user.hosts.clone()).to_string()
}

/// Adds a user whose name is free.
pub fn create_user(conn: &mut Connection, u: &User) -> Result<()> {
    let added = conn
        .prepare_cached(
            "INSERT INTO users (name, role, password_hash, disabled, hosts, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![
            u.name,
            u.role.as_str(),
            u.password_hash,
            u.disabled as i64,
            hosts_json(u),
            ms(u.created_at),
            ms(u.updated_at)
        ])?;
    if added == 0 {
        return Err(StoreError::Exists {
            what: "user",
            name: u.name.clone(),
        });
    }
    Ok(())
}

/// Replaces an existing user's fields.
pub fn update_user(conn: &mut Connection, u: &User) -> Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE users SET role = ?2, password_hash = ?3, disabled = ?4, hosts = ?5,
             created_ms = ?6, updated_ms = ?7 WHERE name = ?1",
        )?
        .execute(params![
            u.name,
            u.role.as_str(),
            u.password_hash,
            u.disabled as i64,
            hosts_json(u),
            ms(u.created_at),
            ms(u.updated_at)
        ])?;
    if changed == 0 {
        return Err(StoreError::NotFound {
            what: "user",
            name: u.name.clone(),
        });
    }
    Ok(())
}

/// One user by name.
pub fn user(conn: &Connection, name: &str) -> Result<Option<User>> {
    let mut stmt = conn.prepare_cached(&format!("{USER_COLUMNS} WHERE name = ?1"))?;
    let mut rows = stmt.query([name])?;
    rows.next()?.map(user_from_row).transpose()
}

/// Every user, by name.
pub fn users(conn: &Connection) -> Result<Vec<User>> {
    let mut stmt = conn.prepare_cached(&format!("{USER_COLUMNS} ORDER BY name"))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(user_from_row(row)?);
    }
    Ok(out)
}

/// Saves a session, replacing the stored one of the same id.
pub fn save_session(conn: &mut Connection, s: &Session) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO sessions
         (id, user, token_hash, created_ms, expires_ms, revoked_ms, client_ip)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        s.id,
        s.user,
        s.token_hash,
        ms(s.created_at),
        ms(s.expires_at),
        s.revoked_at.map(ms),
        s.client_ip
    ])?;
    Ok(())
}

/// One session by id.
pub fn session(conn: &Connection, id: &str) -> Result<Option<Session>> {
    conn.prepare_cached(
        "SELECT id, user, token_hash, created_ms, expires_ms, revoked_ms, client_ip
         FROM sessions WHERE id = ?1",
    )?
    .query_row([id], |row| {
        Ok(Session {
            id: row.get(0)?,
            user: row.get(1)?,
            token_hash: row.get(2)?,
            created_at: from_ms(row.get(3)?),
            expires_at: from_ms(row.get(4)?),
            revoked_at: row.get::<_, Option<i64>>(5)?.map(from_ms),
            client_ip: row.get(6)?,
        })
    })
    .optional()
    .map_err(StoreError::from)
}

/// Revokes every unrevoked session of a user.
pub fn revoke_sessions(conn: &mut Connection, user: &str, at_ms: i64) -> Result<u64> {
    let n = conn
        .prepare_cached(
            "UPDATE sessions SET revoked_ms = ?2 WHERE user = ?1 AND revoked_ms IS NULL
             AND expires_ms > ?2",
        )?
        .execute(params![user, at_ms])?;
    Ok(n as u64)
}
