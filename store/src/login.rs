//! The login throttle's ledger: what the API's login limits count,
//! shared by every API process of a store.
//!
//! The ledger is append-only, so that it needs neither transactions nor
//! updates (ClickHouse 18.16 has neither): a failed login appends a
//! [`LoginMarkKind::Failure`] under each key the throttle counts it by
//! (the client address, the account from that address, the account); a
//! successful one appends a [`LoginMarkKind::Reset`] that ends the count
//! of its account from its address, and a [`LoginMarkKind::Trusted`] mark
//! for the pair. The throttle reads the newest marks of the keys of an
//! attempt ([`crate::Store::login_marks`]) and decides from them; what
//! the marks mean is the API's business (`exim_pilot_api::auth::throttle`).
//! Marks are read by key and time through an index or the table's sort
//! key, and dropped by retention after [`LOGIN_MARK_DAYS`] days.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Days marks are kept.
pub const LOGIN_MARK_DAYS: u32 = 30;

/// What a mark says.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginMarkKind {
    /// A failed attempt.
    Failure,
    /// Earlier failures of the key no longer count.
    Reset,
    /// The key (an account and an address) logged in successfully.
    Trusted,
}

impl LoginMarkKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMarkKind::Failure => "failure",
            LoginMarkKind::Reset => "reset",
            LoginMarkKind::Trusted => "trusted",
        }
    }

    /// The kind of a stored name.
    pub fn parse(s: &str) -> Option<LoginMarkKind> {
        match s {
            "failure" => Some(LoginMarkKind::Failure),
            "reset" => Some(LoginMarkKind::Reset),
            "trusted" => Some(LoginMarkKind::Trusted),
            _ => None,
        }
    }
}

/// One entry of the ledger.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LoginMark {
    /// What it counts against, as the throttle names it.
    pub key: String,
    /// When, by the clock of the API process that wrote it.
    pub at: DateTime<Utc>,
    /// What it says.
    pub kind: LoginMarkKind,
}

/// The most marks [`crate::Store::login_marks`] returns per key.
pub const MAX_MARKS_PER_KEY: usize = 1000;
