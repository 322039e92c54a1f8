//! Why the ledger could not be used.

use std::path::PathBuf;

use super::known_steps;

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another process holds the ledger.
    #[error(
        "ledger {path} is in use by another cosigner process{}; only one may use a ledger",
        .pid.as_deref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The file.
        path: PathBuf,
        /// The holder's process id, when it could be read.
        pid: Option<String>,
    },
    /// The database could not be opened or set up.
    #[error("cannot open ledger {path}: {error}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: rusqlite::Error,
    },
    /// The database file could not be created.
    #[error("cannot create ledger {path}: {error}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The lock file could not be created.
    #[error("cannot create lock file {path}: {error}")]
    LockFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A write did not reach the disk; nothing depending on it may be sent.
    #[error("ledger write failed: {0}")]
    Write(rusqlite::Error),
    /// A read failed.
    #[error("ledger read failed: {0}")]
    Read(rusqlite::Error),
    /// The online copy could not be written.
    #[error("cannot back up the ledger to {path}: {error}")]
    Backup {
        /// The copy.
        path: PathBuf,
        /// The underlying error.
        error: rusqlite::Error,
    },
    /// The call stopped before it finished (its thread panicked, or the runtime is shutting
    /// down): whether a write reached the disk is unknown, so nothing depending on it is sent.
    #[error("the ledger call did not finish: {0}")]
    Interrupted(String),
    /// The file was written by a newer cosigner.
    #[error(
        "ledger {path} has schema version {found}; this cosigner understands up to {}: a newer \
         cosigner wrote it, so run that one (or a newer one)",
        known_steps()
    )]
    Schema {
        /// The file.
        path: PathBuf,
        /// What the file says.
        found: String,
    },
    /// Another instance took over the PostgreSQL ledger: the database refused this instance's
    /// write, and nothing of it was recorded.
    #[error(
        "fenced: this cosigner's leader epoch {mine} is older than the ledger's epoch {current}; \
         another instance leads, and nothing was recorded"
    )]
    Fenced {
        /// The epoch this instance wrote with.
        mine: i64,
        /// The epoch the database holds.
        current: i64,
    },
    /// The PostgreSQL ledger could not be reached, read or written; nothing depending on a
    /// failed write may be sent.
    #[error("ledger database: {what}: {error}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// The driver's or the pool's error (never holding the password).
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `[ledger] url` cannot be used.
    #[error("[ledger] url: {reason}")]
    DatabaseUrl {
        /// Why, without the password.
        reason: String,
    },
    /// The PostgreSQL ledger was set up by a newer cosigner.
    #[error(
        "the ledger database has schema version {found}; this cosigner understands up to {known}: \
         a newer cosigner upgraded it, so upgrade this one (docs/pair.md, \"Upgrading a pair\")"
    )]
    DatabaseSchema {
        /// What the database says.
        found: i32,
        /// The newest this cosigner knows.
        known: i32,
    },
    /// A ledger could not be copied into PostgreSQL.
    #[error("cannot copy the ledger: {reason}")]
    Copy {
        /// Why; nothing was copied.
        reason: String,
    },
}
