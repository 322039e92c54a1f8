//! The decision ledger: every decision and every submission outcome, in SQLite (WAL,
//! `synchronous=FULL`), hash-chained so that an edited, removed or truncated record is detected.
//! Only one process may write a ledger; window totals are computed from it. Each kind of record
//! is a struct in `ledger/record.rs` whose column list drives its hash input, INSERT, SELECT and
//! table; `ledger/sql.rs` holds the column types (sequence numbers, transaction ids, times);
//! `ledger/handle.rs` is the async face everything outside the ledger uses.
//! `ledger/error.rs` says why the ledger could not be used, `ledger/model.rs` what it holds and
//! answers, `ledger/chain.rs` the records a write appends, `ledger/sqlite.rs` the SQLite back end
//! ([`SqliteLedger`]). `ledger/postgres.rs` is the same ledger in PostgreSQL, for an
//! active/standby pair; the reading and checking in `ledger/queries.rs` (`tx_state`, `usage_of`,
//! `page_query`), `DecisionRow::from_parts` and the chain walk of `ledger/verify.rs` are shared
//! by both back ends, so that they answer alike.

mod backup;
mod chain;
mod error;
mod handle;
mod model;
pub mod postgres;
mod queries;
mod record;
mod schema;
mod sql;
mod sqlite;
mod summary;
mod verify;

pub(crate) use chain::storable;
pub use error::LedgerError;
pub use handle::LedgerHandle;
pub use model::{
    DecisionRow, EventKind, NewDecision, Outcome, PageQuery, ResendRecord, Status, TxState,
    VerifyReport, fingerprint,
};
pub use sqlite::SqliteLedger;
pub(crate) use sqlite::held_by;

use chain::{fold_summary, write_head};
use queries::{
    EventSql, NEWEST_RECORD, PageArg, WindowApproval, page_query, page_rows, pg_arg, row,
    row_select, sqlite_arg, tx_state, usage_of, window_start,
};
use sqlite::known_steps;

#[cfg(test)]
mod tests;
