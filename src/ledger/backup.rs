//! `cosigner ledger backup`: a consistent copy of a live SQLite ledger, made beside a running
//! daemon and verified before it is called a backup.

use std::path::Path;

use super::{LedgerError, SqliteLedger, VerifyReport};

/// What `ledger backup` made.
#[derive(Debug, Clone)]
pub(crate) struct BackupReport {
    /// The copy's chain, walked after it was written.
    pub(crate) verify: VerifyReport,
    /// The copy's size in bytes.
    pub(crate) bytes: u64,
}

impl SqliteLedger {
    /// Copies the ledger to `dest`, which must not exist, and verifies the copy's chain.
    ///
    /// `VACUUM INTO` reads inside one read transaction, so under WAL the copy is one consistent
    /// snapshot even while the daemon keeps writing; it needs no lock and blocks no writer. The
    /// file is created 0600 first because it holds every signed text the ledger does.
    pub(crate) fn backup_to(&self, dest: &Path) -> Result<BackupReport, LedgerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |source| LedgerError::Backup {
            path: dest.to_owned(),
            error: source,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|source| LedgerError::Create {
                path: dest.to_owned(),
                error: source,
            })?;
        let target = dest.to_str().ok_or_else(|| LedgerError::Create {
            path: dest.to_owned(),
            error: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the backup path is not valid UTF-8",
            ),
        })?;
        if let Err(e) = self.conn.execute("VACUUM INTO ?1", [target]) {
            // Leave no half-written file that could later pass for a backup.
            let _ = std::fs::remove_file(dest);
            return Err(fail(e));
        }
        let copy = SqliteLedger::open_read_only(dest)?;
        let verify = copy.verify()?;
        let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        Ok(BackupReport { verify, bytes })
    }
}
