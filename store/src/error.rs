//! What can go wrong in a store.

use std::path::PathBuf;

/// A store operation that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or prepared.
    #[error("cannot open the store at {path}: {reason}; check that the directory exists and is writable")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The database engine reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The database was written by a newer version.
    #[error(
        "the store's schema is version {found} but this exim-pilot knows only up to {known}; \
         upgrade exim-pilot to read it"
    )]
    TooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this build can migrate to.
        known: i64,
    },
    /// Something stored could not be read back.
    #[error("stored {what} could not be decoded: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A query asked for something the store cannot answer.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A pagination cursor that no page of this store handed out.
    #[error("invalid cursor {0:?}: pass the end cursor of a previous page unchanged")]
    InvalidCursor(String),
    /// A ClickHouse server refused or failed a request.
    #[error(
        "ClickHouse could not {doing}: {reason}; check that the server is running and \
         reachable at the URL given, and that its user may create and write the store's tables"
    )]
    ClickHouse {
        /// What the store was doing.
        doing: String,
        /// The client's or the server's explanation.
        reason: String,
    },
    /// A ClickHouse database without the store's tables, or with older ones.
    #[error(
        "the ClickHouse database {database} holds exim-pilot schema version {found}, not \
         {expected}; run `exim-pilot migrate --clickhouse URL --database {database}` first"
    )]
    NotMigrated {
        /// The database.
        database: String,
        /// The version found (0: none).
        found: i64,
        /// The version this build reads.
        expected: i64,
    },
    /// Something to be created exists already.
    #[error("{what} {name:?} exists already")]
    Exists {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Something to be changed does not exist.
    #[error("there is no {what} {name:?}")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The background task doing the work stopped before finishing.
    #[error("a store task stopped unexpectedly: {0}")]
    Task(String),
}

impl StoreError {
    /// A decoding failure of stored data.
    pub fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
