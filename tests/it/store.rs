//! Where a test's ledger lives: SQLite or a test PostgreSQL, so that one suite runs on both.

use std::path::Path;
use std::sync::Arc;

use cosigner::ledger::{LedgerHandle, SqliteLedger};

use crate::pg::Pg;

/// Where a test's ledger lives: the embedded SQLite file `ledger.db` in the test's directory,
/// or the database `postgres` of a test PostgreSQL server of its own. The crash and
/// reliability suites run once on each.
pub(crate) enum Store {
    Sqlite,
    Postgres(Pg),
}

impl Store {
    /// A PostgreSQL store, or `None` (after saying why) where PostgreSQL is not installed
    /// outside CI.
    pub(crate) fn postgres() -> Option<Store> {
        Pg::start().map(Store::Postgres)
    }

    /// The back end's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres(_) => "postgresql",
        }
    }

    /// Points the configuration at `cfg` (its `[ledger]` section as `write_config` writes it)
    /// at this store; the database password goes into a private file beside it.
    pub(crate) fn configure(&self, cfg: &Path) {
        if let Store::Postgres(pg) = self {
            let dir = cfg.parent().unwrap();
            crate::support::write_private(&dir.join("pg-password"), pg.password_text());
            crate::support::edit(
                cfg,
                "[ledger]\npath = \"ledger.db\"\n",
                &format!(
                    "[ledger]\nurl = \"{}\"\npassword_file = \"pg-password\"\n",
                    pg.url("postgres", "disable")
                ),
            );
        }
    }

    /// The ledger, to write (an engine's) or to read while no daemon runs.
    pub(crate) async fn open(&self, dir: &Path) -> LedgerHandle {
        match self {
            Store::Sqlite => {
                LedgerHandle::sqlite(crate::support::open_ledger(&dir.join("ledger.db")))
            }
            Store::Postgres(pg) => LedgerHandle::postgres(Arc::new(pg.ledger().await)),
        }
    }

    /// The ledger to read beside a daemon that may be running or was just killed (SQLite: a
    /// read-only connection, which takes no lock).
    pub(crate) async fn reader(&self, dir: &Path) -> LedgerHandle {
        match self {
            Store::Sqlite => {
                LedgerHandle::sqlite(SqliteLedger::open_read_only(&dir.join("ledger.db")).unwrap())
            }
            Store::Postgres(pg) => LedgerHandle::postgres(Arc::new(pg.ledger().await)),
        }
    }

    /// Everything the store holds at rest, by where it came from, to search for what must never
    /// be there: the SQLite files, or every row of every table as text and the server's log.
    pub(crate) async fn contents(&self, dir: &Path) -> Vec<(String, Vec<u8>)> {
        match self {
            Store::Sqlite => ["ledger.db", "ledger.db-wal"]
                .into_iter()
                .filter_map(|f| Some((f.to_string(), std::fs::read(dir.join(f)).ok()?)))
                .collect(),
            Store::Postgres(pg) => {
                let db = pg.admin("postgres").await;
                let tables = db
                    .query(
                        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables \
                         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'",
                        &[],
                    )
                    .await
                    .unwrap();
                assert!(!tables.is_empty(), "the ledger made its tables");
                let mut out = Vec::new();
                for t in tables {
                    let table: String = t.get(0);
                    let mut text = String::new();
                    for row in db
                        .query(&format!("SELECT t::text FROM {table} t"), &[])
                        .await
                        .unwrap()
                    {
                        text.push_str(row.get::<_, &str>(0));
                        text.push('\n');
                    }
                    out.push((format!("table {table}"), text.into_bytes()));
                }
                let log = std::fs::read(pg.log_path()).unwrap_or_default();
                out.push(("the server's log".to_string(), log));
                out
            }
        }
    }
}

/// Two tests of one suite: the first named on SQLite, the second on PostgreSQL (which says why
/// it is skipped where PostgreSQL is not installed, outside CI only).
macro_rules! on_each_back_end {
    ($suite:ident: $on_sqlite:ident, $on_postgresql:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $on_sqlite() {
            $suite($crate::store::Store::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $on_postgresql() {
            let Some(store) = $crate::store::Store::postgres() else {
                return;
            };
            $suite(store).await;
        }
    };
}
pub(crate) use on_each_back_end;
