//! The decision ledger in PostgreSQL, for an active/standby pair sharing one durable ledger: the
//! same records, hash chain and answers as the SQLite [`Ledger`], plus fencing: every chained row
//! carries the writer's leader epoch, and a trigger refuses, in the writing transaction, a row
//! whose epoch is older than the one in `cosigner_leader` (see `leader.rs`), except a pause
//! (a mode record of hold or reject): any member of the pair may record one.
//!
//! Appends serialise on the `cosigner_head` row (`FOR UPDATE`), which also stores the chain head
//! so that records cut from the end are detected. The schema is applied by versioned steps under
//! an advisory lock. The password reaches only the driver: [`PgTarget::describe`] and every
//! error leave it out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, SimpleQueryMessage, SimpleQueryRow};

use super::record::{
    self, Chained, CollectRecord, Column, Columns, DecisionRecord, EventRecord, Head,
    OutcomeRecord, Record, Stored,
};
use super::sql::{Millis, Sent, Seq, sql_count};
use super::summary;
use super::verify::{
    CHUNK, Checker, MODE_AT, PACE, VERIFIED, set_verified_sql, start_plan, window_from_sql,
};
use super::{
    DecisionRow, Ledger, LedgerError, NewDecision, Outcome, PageArg, PageQuery, RESEND_EVENT,
    ResendRecord, TxState, VerifyReport, WindowApproval, page_query, page_rows, row_select,
    storable, tx_state, usage_of, window_start,
};
use crate::clock::{Clock, ClockAnchor};
use crate::domain::{TxId, Withdrawal};
use crate::policy::{Policy, Usage};

/// The schema steps this cosigner knows (`ledger/schema.rs`); `cosigner_schema` holds how many
/// were applied.
pub(crate) const SCHEMA_STEPS: i32 = {
    // A handful of steps: far below i32::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let n = super::schema::POSTGRES.len() as i32;
    n
};

/// The advisory lock (transaction scope) under which the schema is applied, exclusively; every
/// write takes it shared before it reads the schema version (see [`begin_write`]), so that a
/// newer cosigner applying a step and this one writing are one before the other.
const MIGRATION_LOCK: i64 = 0x636f_7369_676e_6d67; // "cosignmg"

/// The SQLSTATE the fencing trigger raises.
const FENCED: &str = "CS409";

/// The chained tables, each with its fencing trigger.
const CHAINED_TABLES: [&str; 4] = ["decisions", "outcomes", "collects", "events"];

/// The fencing trigger's function; `verify` reports a ledger whose function was replaced.
pub(super) const FENCE_FUNCTION: &str = "
DECLARE
  current bigint;
BEGIN
  -- FOR SHARE: a takeover (which updates this row) waits for this transaction, and this
  -- transaction waits for a takeover in progress and then sees its epoch.
  SELECT epoch INTO current FROM cosigner_leader WHERE id = 1 FOR SHARE;
  IF current IS NULL THEN
    RAISE EXCEPTION 'cosigner_leader has no row: refusing every write';
  END IF;
  IF NEW.epoch < current THEN
    -- A pause is safe to record from any instance, whatever its epoch: it only stops what
    -- the pair sends. A resume (or any other record) only from the current epoch.
    IF TG_TABLE_NAME = 'events' THEN
      IF NEW.kind = 'mode' AND (NEW.detail::jsonb ->> 'mode') IN ('hold', 'reject') THEN
        RETURN NEW;
      END IF;
    END IF;
    RAISE EXCEPTION 'fenced: epoch % is older than the leader epoch %', NEW.epoch, current
      USING ERRCODE = 'CS409', DETAIL = NEW.epoch::text || ' ' || current::text;
  END IF;
  RETURN NEW;
END;
";

/// How TLS to the database is used (`sslmode`, as libpq reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Disable,
    /// TLS when the server offers it, unverified.
    Prefer,
    /// TLS, unverified (verified against `sslrootcert` when one is given, as libpq does).
    Require,
    /// TLS, the certificate chain verified, not the host name.
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

impl Tls {
    fn name(self) -> &'static str {
        match self {
            Tls::Disable => "disable",
            Tls::Prefer => "prefer",
            Tls::Require => "require",
            Tls::VerifyCa => "verify-ca",
            Tls::VerifyFull => "verify-full",
        }
    }
}

/// Where the PostgreSQL ledger is and how to reach it: the parsed `[ledger] url`, the password,
/// and the TLS set-up (the system OpenSSL, its trust store unless `sslrootcert` names one).
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: MakeTlsConnector,
    described: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.described)
            .finish_non_exhaustive()
    }
}

fn url_error(reason: impl Into<String>) -> LedgerError {
    LedgerError::DatabaseUrl {
        reason: reason.into(),
    }
}

impl PgTarget {
    /// Parses `url` (`postgres://user@host:port/db?sslmode=verify-full&sslrootcert=/path`);
    /// `password`, when given, replaces any in the URL. Errors name the part at fault and
    /// never hold the password.
    pub fn parse(url: &str, password: Option<SecretString>) -> Result<Self, LedgerError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(url_error(
                "must start with postgres:// (postgres://user@host:port/database)",
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut tls = Tls::Prefer;
        let mut rootcert: Option<PathBuf> = None;
        let mut rest = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=').unwrap_or((param, "")) {
                ("sslmode", mode) => {
                    tls = match mode {
                        "disable" => Tls::Disable,
                        "prefer" => Tls::Prefer,
                        "require" => Tls::Require,
                        "verify-ca" => Tls::VerifyCa,
                        "verify-full" => Tls::VerifyFull,
                        other => {
                            return Err(url_error(format!(
                                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                            )));
                        }
                    }
                }
                ("sslrootcert", path) if !path.is_empty() => rootcert = Some(PathBuf::from(path)),
                _ => rest.push(param),
            }
        }
        let rebuilt = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = rebuilt
            .parse()
            .map_err(|e: tokio_postgres::Error| url_error(e.to_string()))?;
        if let Some(p) = password {
            config.password(p.expose_secret());
        }
        if config.get_user().is_none() {
            return Err(url_error(
                "names no user (postgres://user@host:port/database)",
            ));
        }
        if tls == Tls::Require && rootcert.is_some() {
            tls = Tls::VerifyCa;
        }
        config.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            Tls::Require | Tls::VerifyCa | Tls::VerifyFull => SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("cosigner");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A vanished database host is noticed by the kernel within about 11 s, not hours.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
        // Every commit is durable before it is acknowledged, whatever the server's default. A
        // session left inside a transaction (its process frozen or cut off mid-write) is ended
        // after 3 s, so the chain head's row lock it holds cannot keep a new leader waiting.
        let ours = "-c synchronous_commit=on -c idle_in_transaction_session_timeout=3000";
        let options = match config.get_options() {
            Some(o) => format!("{o} {ours}"),
            None => ours.to_string(),
        };
        config.options(options);
        let tls_connector = Self::tls(tls, rootcert.as_ref())?;
        let described = describe(&config, tls);
        Ok(Self {
            config,
            tls: tls_connector,
            described,
        })
    }

    fn tls(tls: Tls, rootcert: Option<&PathBuf>) -> Result<MakeTlsConnector, LedgerError> {
        let tls_error = |e: openssl::error::ErrorStack| url_error(format!("TLS set-up: {e}"));
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_error)?;
        if let Some(path) = rootcert {
            builder.set_ca_file(path).map_err(|e| {
                url_error(format!(
                    "sslrootcert {}: cannot be read as PEM certificates: {e}",
                    path.display()
                ))
            })?;
        }
        if matches!(tls, Tls::Disable | Tls::Prefer | Tls::Require) {
            builder.set_verify(SslVerifyMode::NONE);
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        if tls == Tls::VerifyCa {
            connector.set_callback(|c, _| {
                c.set_verify_hostname(false);
                Ok(())
            });
        }
        Ok(connector)
    }

    /// The URL without the password, for logs and status.
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// A dedicated connection (not from the pool) named `application_name`, driven by a task of
    /// its own that ends when the returned client is dropped or the server closes it.
    /// The database's clock, read once and carried on by this host's monotonic clock: the clock
    /// a pair stamps its records and times its requests by (for `cosigner check --online`).
    pub(crate) async fn clock(&self, application_name: &str) -> Result<Clock, LedgerError> {
        let client = tokio::time::timeout(Duration::from_secs(15), self.connect(application_name))
            .await
            .map_err(|_| LedgerError::Interrupted("connecting timed out after 15 s".into()))??;
        let (clock, anchor) = Clock::anchored(0);
        read_database_now(&client, &anchor).await?;
        Ok(clock)
    }

    pub(crate) async fn connect(
        &self,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, LedgerError> {
        let mut config = self.config.clone();
        config.application_name(application_name);
        let (client, connection) = config
            .connect(self.tls.clone())
            .await
            .map_err(db("connect"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "ledger database connection ended");
            }
        });
        Ok(client)
    }
}

/// `postgres://user@host:port,host:port/database?sslmode=...`, without the password.
fn describe(config: &tokio_postgres::Config, tls: Tls) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}?sslmode={}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or(""),
        tls.name()
    )
}

/// A driver or pool error with its causes spelled out: the driver's own text names only the
/// kind ("db error"), its causes say what happened. Neither ever holds the password.
#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// `e` and each of its causes, joined by `: ` (a cause its parent already quotes only once).
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let t = cause.to_string();
        if !text.ends_with(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        next = cause.source();
    }
    text.replace('\n', "; ")
}

/// Maps a driver error to [`LedgerError::Database`] naming `what` was being done.
fn db<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> LedgerError {
    move |e| LedgerError::Database {
        what,
        source: Box::new(Failure(chain_text(&e))),
    }
}

/// Maps a write's error: the fencing trigger's to [`LedgerError::Fenced`], others as [`db`].
fn write_error(what: &'static str, mine: i64) -> impl FnOnce(tokio_postgres::Error) -> LedgerError {
    move |e| {
        if e.code().map(|c| c.code()) == Some(FENCED) {
            let current = e
                .as_db_error()
                .and_then(|d| d.detail())
                .and_then(|d| d.split_once(' '))
                .and_then(|(_, c)| c.parse().ok());
            if let Some(current) = current {
                return LedgerError::Fenced { mine, current };
            }
        }
        db(what)(e)
    }
}

/// Binds a record's columns as PostgreSQL parameters.
struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Columns for Params {
    type Error = Infallible;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> Result<(), Infallible> {
        self.0.push(Box::new(value.clone()));
        Ok(())
    }
}

/// Reads a record's columns from a PostgreSQL row.
struct Reader<'a> {
    row: &'a Row,
    next: usize,
}

impl Columns for Reader<'_> {
    type Error = tokio_postgres::Error;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> Result<(), Self::Error> {
        *value = self.row.try_get(self.next)?;
        self.next += 1;
        Ok(())
    }
}

/// Reads record `R` from `row`, whose columns from `first` on are [`Record::names`].
fn from_row<R: Record>(row: &Row, first: usize) -> Result<R, tokio_postgres::Error> {
    let mut record = R::default();
    record.columns(&mut Reader { row, next: first })?;
    Ok(record)
}

fn decision_row(r: &Row) -> Result<DecisionRow, tokio_postgres::Error> {
    Ok(DecisionRow::from_parts(
        r.try_get(0)?,
        from_row::<DecisionRecord>(r, 1)?,
        r.try_get::<_, Option<Sent>>("latest_status")?,
        r.try_get("latest_message")?,
    ))
}

fn params(p: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Rows per INSERT statement: far below PostgreSQL's 65,535 parameters.
const ROWS_PER_INSERT: usize = 500;

/// Inserts `rows` (records with their place in the chain) of kind `R` at `epoch`.
async fn insert<R: Record, C: GenericClient + Sync>(
    c: &C,
    rows: &mut [Chained<R>],
    epoch: i64,
) -> Result<(), LedgerError> {
    let width = R::count() + 4;
    for chunk in rows.chunks_mut(ROWS_PER_INSERT) {
        let mut values = Vec::with_capacity(chunk.len());
        let mut bound = Params(Vec::with_capacity(chunk.len() * width));
        for row in chunk.iter_mut() {
            let first = bound.0.len();
            values.push(format!(
                "({})",
                (first + 1..=first + width)
                    .map(|n| format!("${n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            bound.0.push(Box::new(row.seq));
            match row.record.columns(&mut bound) {
                Ok(()) => {}
            }
            bound.0.push(Box::new(row.prev_hash.clone()));
            bound.0.push(Box::new(row.hash.clone()));
            bound.0.push(Box::new(epoch));
        }
        let sql = format!(
            "INSERT INTO {} (seq, {}, prev_hash, hash, epoch) VALUES {}",
            R::TABLE,
            R::names(""),
            values.join(", ")
        );
        c.execute(sql.as_str(), &params(&bound.0))
            .await
            .map_err(write_error("record", epoch))?;
    }
    Ok(())
}

/// An event of a kind with exactly a detail, found through the index on the detail's digest
/// (PostgreSQL's index entries are bounded in size, details are not).
const EXACT_EVENT: &str =
    "SELECT detail FROM events WHERE kind = $1 AND md5(detail) = md5($2) AND detail = $2 LIMIT 1";

/// Folds the records up to `head` into the running summary (see `ledger/summary.rs`), inside
/// the transaction that appended them, records an older cosigner appended since included.
async fn fold_summary<C: GenericClient + Sync>(c: &C, head: &Head) -> Result<(), LedgerError> {
    let what = "fold the summary";
    let through = read_through(c, what).await?;
    let head = head.seq.bound();
    if through >= head {
        return Ok(());
    }
    c.execute(summary::POSTGRES.fold_counts().as_str(), &[&through])
        .await
        .map_err(db(what))?;
    c.execute(summary::POSTGRES.fold_newest().as_str(), &[&through, &head])
        .await
        .map_err(db(what))?;
    Ok(())
}

/// How far the running summary is folded (`what` names the read for errors).
async fn read_through<C: GenericClient + Sync>(
    c: &C,
    what: &'static str,
) -> Result<i64, LedgerError> {
    c.query_one(summary::THROUGH, &[])
        .await
        .map_err(db(what))?
        .try_get(0)
        .map_err(db(what))
}

/// The start of every write, in the transaction `c` is in: waits for a schema step being
/// applied (the migration lock, shared), refuses to write on a schema other than the one this
/// cosigner knows ([`LedgerError::DatabaseSchema`]: a newer cosigner applied a step; this one
/// never writes on it, whatever it is doing when that happens), and returns the chain head,
/// locked until the end of the transaction. One round trip of three statements in the simple
/// protocol, run one after the other, each in a snapshot of its own: the version is read once
/// the lock is held (in the extended protocol a pipelined statement may be bound, and so take
/// its snapshot, before the one ahead of it has waited).
async fn begin_write<C: GenericClient + Sync>(c: &C) -> Result<Head, LedgerError> {
    let what = "lock the chain head";
    let edited = |why: &str| LedgerError::Database {
        what,
        source: format!("{why}: the ledger database was edited").into(),
    };
    let sql = format!(
        "SELECT pg_advisory_xact_lock_shared({MIGRATION_LOCK});
         SELECT max(version) FROM cosigner_schema;
         SELECT seq, hash FROM cosigner_head WHERE id = 1 FOR UPDATE"
    );
    let rows: Vec<SimpleQueryRow> = c
        .simple_query(&sql)
        .await
        .map_err(db(what))?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    // One row for the lock, one for the version, then the head's (none: no head row).
    let found: i32 = match rows.get(1).map(|r| r.get(0)) {
        Some(Some(v)) => v.parse().map_err(|_| edited("cosigner_schema"))?,
        Some(None) => 0,
        None => return Err(edited("cosigner_schema")),
    };
    if found != SCHEMA_STEPS {
        return Err(LedgerError::DatabaseSchema {
            found,
            known: SCHEMA_STEPS,
        });
    }
    let head = rows
        .get(2)
        .ok_or_else(|| edited("cosigner_head has no row"))?;
    let seq = head
        .get(0)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| edited("cosigner_head"))?;
    let hash = head.get(1).ok_or_else(|| edited("cosigner_head"))?;
    Ok(Head {
        seq: Seq(seq),
        hash: hash.to_string(),
    })
}

/// The chain head in `row` (`seq, hash`); seq 0 is the head of an empty ledger.
fn head_from(row: &Row) -> Result<Head, LedgerError> {
    let what = "read the chain head";
    let seq: i64 = row.try_get(0).map_err(db(what))?;
    Ok(Head {
        seq: Seq(u64::try_from(seq).map_err(db(what))?),
        hash: row.try_get(1).map_err(db(what))?,
    })
}

/// Chains `records` after `head`, moving `head` to the last.
fn chain<R: Record>(head: &mut Head, records: &mut [R]) -> Result<Vec<Chained<R>>, LedgerError> {
    let mut out = Vec::with_capacity(records.len());
    let mut buf = Vec::new();
    for r in records.iter_mut() {
        let seq = head.seq.next().map_err(db("number a record"))?;
        let hash =
            record::record_hash(&head.hash, seq, r, &mut buf).map_err(db("hash a record"))?;
        out.push(Chained {
            seq,
            record: r.clone(),
            prev_hash: head.hash.clone(),
            hash: hash.clone(),
        });
        head.seq = seq;
        head.hash = hash;
    }
    Ok(out)
}

async fn set_head<C: GenericClient + Sync>(c: &C, head: &Head) -> Result<(), LedgerError> {
    c.execute(
        "UPDATE cosigner_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&head.seq, &head.hash],
    )
    .await
    .map_err(db("move the chain head"))?;
    Ok(())
}

/// Triggers, rules, row-level security and a replaced fencing function, none of which a
/// cosigner writes: each could change or hide rows as they are written or read.
async fn foreign_objects<C: GenericClient + Sync>(c: &C) -> Result<Vec<String>, LedgerError> {
    let what = "look for objects no cosigner writes";
    let tables: Vec<String> = CHAINED_TABLES.iter().map(|t| (*t).to_string()).collect();
    let mut problems = Vec::new();
    for r in c
        .query(
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE NOT t.tgisinternal AND c.relname = ANY($1) AND c.relnamespace = to_regnamespace(current_schema())
             ORDER BY c.relname, t.tgname",
            &[&tables],
        )
        .await
        .map_err(db(what))?
    {
        let (name, table): (String, String) = (r.get(0), r.get(1));
        if name != format!("{table}_fence") {
            problems.push(format!(
                "the database holds a trigger {name:?} on {table}, which no cosigner writes (edited)"
            ));
        }
    }
    for r in c
        .query(
            "SELECT rulename, tablename FROM pg_rules WHERE schemaname = current_schema() AND tablename = ANY($1)
             UNION ALL SELECT policyname, tablename FROM pg_policies WHERE schemaname = current_schema() AND tablename = ANY($1)
             UNION ALL SELECT 'row level security', relname FROM pg_class WHERE relrowsecurity AND relname = ANY($1)
               AND relnamespace = to_regnamespace(current_schema())",
            &[&tables],
        )
        .await
        .map_err(db(what))?
    {
        let (name, table): (String, String) = (r.get(0), r.get(1));
        problems.push(format!(
            "the database holds a rule or policy {name:?} on {table}, which no cosigner writes (edited)"
        ));
    }
    let body: Option<String> = c
        .query_opt(
            "SELECT prosrc FROM pg_proc WHERE proname = 'cosigner_fence' AND pronamespace = to_regnamespace(current_schema())",
            &[],
        )
        .await
        .map_err(db(what))?
        .map(|r| r.get(0));
    if body.as_deref() != Some(FENCE_FUNCTION) {
        problems.push(
            "the fencing function cosigner_fence is missing or was replaced (edited)".to_string(),
        );
    }
    Ok(problems)
}

/// The stored record `row` of kind `R` (`seq, prev_hash, hash, <columns>`), its hash
/// recomputed into `buf`.
fn stored<R: Record>(row: &Row, buf: &mut Vec<u8>) -> Result<Stored, LedgerError> {
    let what = "read the chain";
    let seq: Seq = row.try_get(0).map_err(db(what))?;
    let prev_hash: String = row.try_get(1).map_err(db(what))?;
    let computed = from_row::<R>(row, 3)
        .map_err(|e| record::Unreadable::Postgres(chain_text(&e)))
        .and_then(|mut r| {
            record::record_hash(&prev_hash, seq, &mut r, buf).map_err(record::Unreadable::from)
        });
    Ok(Stored {
        seq,
        kind: R::KIND,
        computed,
        prev_hash,
        hash: row.try_get(2).map_err(db(what))?,
    })
}

/// Reads one stored record from its row, hashing into the buffer given.
type ReadStored = fn(&Row, &mut Vec<u8>) -> Result<Stored, LedgerError>;

/// Rows fetched from a portal at a time: a few hundred KiB of a table at most.
const BATCH: i32 = 500;

/// One table's records in order, read from a portal a batch at a time.
struct Cursor {
    portal: tokio_postgres::Portal,
    read: ReadStored,
    rows: std::collections::VecDeque<Row>,
    exhausted: bool,
    next: Option<Stored>,
}

impl Cursor {
    async fn advance(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<(), LedgerError> {
        if self.rows.is_empty() && !self.exhausted {
            let batch = tx
                .query_portal(&self.portal, BATCH)
                .await
                .map_err(db("read the chain"))?;
            self.exhausted = batch.len() < usize::try_from(BATCH).unwrap_or(0);
            self.rows.extend(batch);
        }
        self.next = match self.rows.pop_front() {
            Some(row) => Some((self.read)(&row, buf)?),
            None => None,
        };
        Ok(())
    }
}

/// Feeds `checker` every record from `from` to `to` (inclusive) as `tx` sees them, in
/// sequence order: one portal per table, a batch of each held at a time, merged.
async fn walk(
    tx: &tokio_postgres::Transaction<'_>,
    from: u64,
    to: u64,
    checker: &mut Checker,
) -> Result<(), LedgerError> {
    let what = "read the chain";
    let (from, to) = (Seq(from).bound(), Seq(to).bound());
    let tables: [(String, ReadStored); 4] = [
        (
            record::select_range::<DecisionRecord>("$1", "$2"),
            stored::<DecisionRecord>,
        ),
        (
            record::select_range::<OutcomeRecord>("$1", "$2"),
            stored::<OutcomeRecord>,
        ),
        (
            record::select_range::<CollectRecord>("$1", "$2"),
            stored::<CollectRecord>,
        ),
        (
            record::select_range::<EventRecord>("$1", "$2"),
            stored::<EventRecord>,
        ),
    ];
    let mut cursors = Vec::with_capacity(4);
    for (sql, read) in tables {
        let statement = tx.prepare(&sql).await.map_err(db(what))?;
        let portal = tx.bind(&statement, &[&from, &to]).await.map_err(db(what))?;
        cursors.push(Cursor {
            portal,
            read,
            rows: std::collections::VecDeque::new(),
            exhausted: false,
            next: None,
        });
    }
    let mut buf = Vec::with_capacity(4096);
    for c in &mut cursors {
        c.advance(tx, &mut buf).await?;
    }
    loop {
        let lowest = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.next.as_ref().map(|s| (s.seq, i)))
            .min();
        let Some((_, i)) = lowest else {
            return Ok(());
        };
        if let Some(record) = cursors[i].next.take() {
            checker.push(record);
        }
        cursors[i].advance(tx, &mut buf).await?;
    }
}

/// The chain head as stored (`seq:hash`), `None` for the head of an empty ledger (with records
/// present it says nothing of them).
async fn stored_head<C: GenericClient + Sync>(c: &C) -> Result<Option<String>, LedgerError> {
    let head = c
        .query_opt("SELECT seq, hash FROM cosigner_head WHERE id = 1", &[])
        .await
        .map_err(db("read the chain head"))?;
    Ok(match head {
        Some(r) => Some(head_from(&r)?).filter(|h| h.seq.0 != 0),
        None => None,
    }
    .map(|h| format!("{}:{}", h.seq.0, h.hash)))
}

/// A read-only transaction whose reads are one snapshot.
async fn snapshot(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, LedgerError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db("begin a read"))
}

/// The last verified point, when there is one.
async fn read_verified<C: GenericClient + Sync>(
    c: &C,
) -> Result<Option<(u64, String)>, LedgerError> {
    let what = "read the verified point";
    let row = c.query_one(VERIFIED, &[]).await.map_err(db(what))?;
    let seq: Option<i64> = row.try_get(0).map_err(db(what))?;
    let hash: Option<String> = row.try_get(1).map_err(db(what))?;
    Ok(seq.and_then(|s| u64::try_from(s).ok()).zip(hash))
}

/// Walks the whole chain as `tx` sees it, in constant memory.
async fn verify_on(tx: &tokio_postgres::Transaction<'_>) -> Result<VerifyReport, LedgerError> {
    let foreign = foreign_objects(tx).await?;
    let mut checker = Checker::from_genesis();
    walk(tx, 1, u64::MAX, &mut checker).await?;
    let mut report = checker.finish_at_head(stored_head(tx).await?.as_deref());
    report.problems.splice(0..0, foreign);
    Ok(report)
}

/// A ledger's every record read whole from SQLite, with its head, checked before it is copied:
/// what [`PgLedger::import`] writes.
pub struct LedgerExport {
    decisions: Vec<Chained<DecisionRecord>>,
    outcomes: Vec<Chained<OutcomeRecord>>,
    collects: Vec<Chained<CollectRecord>>,
    events: Vec<Chained<EventRecord>>,
    head: Head,
    report: VerifyReport,
}

impl std::fmt::Debug for LedgerExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerExport")
            .field("records", &self.report.records)
            .field("head_seq", &self.head.seq.0)
            .finish_non_exhaustive()
    }
}

impl LedgerExport {
    /// What `verify` said of the source.
    #[must_use]
    pub(crate) fn report(&self) -> &VerifyReport {
        &self.report
    }
}

impl Ledger {
    /// Reads every record to copy the ledger elsewhere; refuses a ledger whose chain does not
    /// verify (a copy must not launder an edit).
    pub fn export(&self) -> Result<LedgerExport, LedgerError> {
        let report = self.verify()?;
        if let Some(first) = report.problems.first() {
            return Err(LedgerError::Copy {
                reason: format!(
                    "{} does not verify ({} problems; the first: {first})",
                    self.path().display(),
                    report.problems.len()
                ),
            });
        }
        let read = |e| LedgerError::Read(e);
        Ok(LedgerExport {
            decisions: record::chained(&self.conn).map_err(read)?,
            outcomes: record::chained(&self.conn).map_err(read)?,
            collects: record::chained(&self.conn).map_err(read)?,
            events: record::chained(&self.conn).map_err(read)?,
            head: self.head.clone(),
            report,
        })
    }
}

/// The decision ledger in PostgreSQL. Cheap to share (`Arc`): every method takes `&self`, and
/// appends serialise in the database.
///
/// Its records are stamped with the database's clock (`clock_timestamp()`, read inside the
/// writing transaction once it holds the chain head), and [`PgLedger::clock`] is that clock
/// carried on by this host's monotonic clock between readings: every member of a pair stamps,
/// counts windows, times its requests and judges the server's `Date` by the one clock, so a
/// member whose own clock is wrong can neither poison the ledger for the others nor be stopped
/// by it.
pub struct PgLedger {
    pool: Pool,
    target: PgTarget,
    epoch: AtomicI64,
    clock: Clock,
    anchor: ClockAnchor,
}

/// The database's clock in ms since the epoch (`clock_timestamp()`: the time as it is read, not
/// the transaction's start).
const DATABASE_NOW: &str = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Reads the database's clock on `c` and notes it in `anchor`: it read that at some moment
/// between asking and the answer.
async fn read_database_now<C: GenericClient + Sync>(
    c: &C,
    anchor: &ClockAnchor,
) -> Result<i64, LedgerError> {
    let what = "read the database's clock";
    let asked = std::time::Instant::now();
    let now: i64 = c
        .query_one(DATABASE_NOW, &[])
        .await
        .map_err(db(what))?
        .try_get(0)
        .map_err(db(what))?;
    anchor.observe(now, asked, std::time::Instant::now());
    Ok(now)
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.target.described)
            .field("epoch", &self.epoch.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl PgLedger {
    /// Connects to the ledger at `url` (see [`PgTarget::parse`]) and brings its schema up to
    /// date. Writes carry epoch 0 until [`PgLedger::set_epoch`].
    pub async fn connect(url: &str, password: Option<SecretString>) -> Result<Self, LedgerError> {
        Self::open(PgTarget::parse(url, password)?).await
    }

    /// Connects to `target` and brings its schema up to date.
    pub(crate) async fn open(target: PgTarget) -> Result<Self, LedgerError> {
        let ledger = Self::connected(target).await?;
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// Connects to `target` and reads the database's clock; the schema is not looked at.
    async fn connected(target: PgTarget) -> Result<Self, LedgerError> {
        let pool = Self::pool(&target)?;
        let (clock, anchor) = Clock::anchored(0);
        let first = pool
            .get()
            .await
            .map_err(db("take a connection from the pool"))?;
        read_database_now(&**first, &anchor).await?;
        drop(first);
        let ledger = Self {
            pool,
            target,
            epoch: AtomicI64::new(0),
            clock,
            anchor,
        };
        Ok(ledger)
    }

    /// The connection pool of `target`; no connection is made until one is taken.
    fn pool(target: &PgTarget) -> Result<Pool, LedgerError> {
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(db("set up the connection pool"))
    }

    /// The ledger at `target` without a connection made, on this host's clock: for tests of
    /// what only reads the epoch.
    #[cfg(test)]
    pub(crate) fn unconnected(target: PgTarget) -> Result<Self, LedgerError> {
        let (clock, anchor) = Clock::anchored(Clock::system().now_ms());
        Ok(Self {
            pool: Self::pool(&target)?,
            target,
            epoch: AtomicI64::new(0),
            clock,
            anchor,
        })
    }

    /// The database's clock, carried on by this host's monotonic clock between readings (every
    /// write, and every read of the newest record, reads it again).
    #[must_use]
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Reads the database's clock on `c`, notes it in [`PgLedger::clock`], and returns it.
    async fn database_now<C: GenericClient + Sync>(&self, c: &C) -> Result<Millis, LedgerError> {
        read_database_now(c, &self.anchor).await.map(Millis)
    }

    /// Where the ledger is.
    #[must_use]
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The URL without the password.
    #[must_use]
    pub fn describe(&self) -> &str {
        self.target.describe()
    }

    /// The leader epoch every later write carries (from [`crate::leader::Role::Leader`]); the
    /// database refuses the writes once a newer epoch exists.
    pub fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The epoch writes carry.
    #[must_use]
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        self.pool
            .get()
            .await
            .map_err(db("take a connection from the pool"))
    }

    /// Connects to `target` for a member of a pair: as [`PgLedger::open`], except that a
    /// schema newer than this cosigner's is not an error but `Some(version found)`, with
    /// nothing changed. Such a member stands by and writes nothing (every write checks the
    /// version, see [`begin_write`]) until it is upgraded.
    pub(crate) async fn open_member(target: PgTarget) -> Result<(Self, Option<i32>), LedgerError> {
        let ledger = Self::connected(target).await?;
        match ledger.migrate().await {
            Ok(()) => Ok((ledger, None)),
            Err(LedgerError::DatabaseSchema { found, known }) if found > known => {
                Ok((ledger, Some(found)))
            }
            Err(e) => Err(e),
        }
    }

    async fn migrate(&self) -> Result<(), LedgerError> {
        let what = "bring the schema up to date";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db(what))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db(what))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS cosigner_schema (version integer NOT NULL)")
            .await
            .map_err(db(what))?;
        let found: Option<i32> = tx
            .query_one("SELECT max(version) FROM cosigner_schema", &[])
            .await
            .map_err(db(what))?
            .get(0);
        let found = found.unwrap_or(0);
        if found > SCHEMA_STEPS {
            return Err(LedgerError::DatabaseSchema {
                found,
                known: SCHEMA_STEPS,
            });
        }
        for (version, step) in (1..)
            .zip(super::schema::POSTGRES)
            .skip_while(|(v, _)| *v <= found)
        {
            tx.batch_execute(step).await.map_err(db(what))?;
            tx.execute(
                "INSERT INTO cosigner_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(db(what))?;
            tracing::info!(version, url = %self.describe(), "ledger schema step applied");
        }
        tx.commit().await.map_err(db(what))
    }

    /// Appends the records `make` builds for the time they are stamped with (the database's
    /// clock once the transaction holds the chain head), in one transaction at this instance's
    /// epoch; returns their sequence numbers. On `Err` nothing may be sent; when the commit's
    /// answer was lost the records may be there, and are then found (and re-sent identically)
    /// by the next cycle.
    async fn append<R: Record>(
        &self,
        make: impl FnOnce(Millis) -> Vec<R>,
    ) -> Result<Vec<Seq>, LedgerError> {
        let epoch = self.epoch();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("begin a write"))?;
        let mut head = begin_write(&*tx).await?;
        let mut records = make(self.database_now(&*tx).await?);
        let mut rows = chain(&mut head, &mut records)?;
        insert(&*tx, &mut rows, epoch).await?;
        set_head(&*tx, &head).await?;
        fold_summary(&*tx, &head).await?;
        tx.commit()
            .await
            .map_err(write_error("commit a write", epoch))?;
        Ok(rows.into_iter().map(|r| r.seq).collect())
    }

    /// Records decisions in one transaction; returns their sequence numbers. When this returns
    /// `Err`, nothing may be sent.
    pub async fn record_decisions(&self, new: &[NewDecision]) -> Result<Vec<u64>, LedgerError> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = self.append(|now| DecisionRecord::all(new, now)).await?;
        Ok(seqs.into_iter().map(|s| s.0).collect())
    }

    /// Records submission outcomes in one transaction.
    pub async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<(), LedgerError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.append(|now| OutcomeRecord::all(outcomes, now)).await?;
        Ok(())
    }

    /// Records that the approvals `resends` are about to be sent again, before they leave.
    pub async fn record_resends(&self, resends: &[ResendRecord]) -> Result<(), LedgerError> {
        if resends.is_empty() {
            return Ok(());
        }
        self.append(|now| EventRecord::resends(resends, now))
            .await?;
        Ok(())
    }

    /// Records an operational event; returns its sequence number.
    pub async fn record_event(&self, kind: &str, detail: &str) -> Result<u64, LedgerError> {
        let seqs = self
            .append(|now| vec![EventRecord::at(kind, detail, now)])
            .await?;
        Ok(seqs.last().map_or(0, |s| s.0))
    }

    /// Records one collection's result.
    pub async fn record_collect(
        &self,
        is_main: bool,
        ok: bool,
        message: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.append(|now| vec![CollectRecord::at(is_main, ok, message, now)])
            .await?;
        Ok(())
    }

    /// The rows of `sql` with `args`, each read by `read`.
    async fn query_map<T>(
        &self,
        what: &'static str,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
        read: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Vec<T>, LedgerError> {
        let rows = self
            .client()
            .await?
            .query(sql, args)
            .await
            .map_err(db(what))?;
        rows.iter()
            .map(read)
            .collect::<Result<_, _>>()
            .map_err(db(what))
    }

    async fn decisions(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<DecisionRow>, LedgerError> {
        self.query_map("read decisions", sql, args, decision_row)
            .await
    }

    /// Every decision about `tx_id`, oldest first.
    pub async fn history(&self, tx_id: TxId) -> Result<Vec<DecisionRow>, LedgerError> {
        self.decisions(
            &format!("{} WHERE d.tx_id = $1 ORDER BY d.seq", row_select()),
            &[&tx_id],
        )
        .await
    }

    /// One decision by sequence number.
    pub async fn get(&self, seq: u64) -> Result<Option<DecisionRow>, LedgerError> {
        // No record has a sequence number a bigint cannot hold.
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let rows = self
            .decisions(&format!("{} WHERE d.seq = $1", row_select()), &[&seq])
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The newest decisions first.
    pub async fn list(&self, limit: usize) -> Result<Vec<DecisionRow>, LedgerError> {
        self.decisions(
            &format!("{} ORDER BY d.seq DESC LIMIT $1", row_select()),
            &[&sql_count(limit)],
        )
        .await
    }

    /// One page of decisions, newest first, and whether more lie beyond it in the paging
    /// direction.
    pub async fn page(&self, q: &PageQuery) -> Result<(Vec<DecisionRow>, bool), LedgerError> {
        let (sql, args) = page_query(q, |n| format!("${n}"));
        let args: Vec<Box<dyn ToSql + Sync + Send>> = args
            .into_iter()
            .map(|a| -> Box<dyn ToSql + Sync + Send> {
                match a {
                    PageArg::Text(t) => Box::new(t),
                    PageArg::Int(i) => Box::new(i),
                }
            })
            .collect();
        let rows = self.decisions(&sql, &params(&args)).await?;
        Ok(page_rows(q, rows))
    }

    /// The time of the newest record, if any. The database's clock is read again after it, so
    /// that [`PgLedger::clock`] reads no earlier than any record stamped before.
    pub async fn newest_record_ms(&self) -> Result<Option<i64>, LedgerError> {
        let what = "read the newest record";
        let client = self.client().await?;
        let through = read_through(&**client, what).await?;
        let newest = client
            .query_one(summary::POSTGRES.newest().as_str(), &[&through])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        self.database_now(&**client).await?;
        Ok(newest)
    }

    /// [`Ledger::usage_with_slack`]: window usage as of `now_ms`, windows reaching `slack`
    /// further back.
    pub async fn usage_with_slack(
        &self,
        policy: &Policy,
        now_ms: i64,
        slack: Duration,
    ) -> Result<Usage, LedgerError> {
        let Some(since) = window_start(policy, now_ms, slack) else {
            return Ok(usage_of(policy, now_ms, slack, Vec::new(), Vec::new()));
        };
        let what = "read the window totals";
        let approvals = self
            .query_map(
                what,
                "SELECT seq, rule, amount_value, recorded_at_ms FROM decisions
                 WHERE action = 'approve' AND dry_run = false AND recorded_at_ms > $1",
                &[&Millis(since)],
                |r| {
                    Ok(WindowApproval {
                        seq: r.try_get(0)?,
                        rule: r.try_get(1)?,
                        amount_value: r.try_get(2)?,
                        at: r.try_get(3)?,
                    })
                },
            )
            .await?;
        let resends = self
            .query_map(
                what,
                "SELECT detail, recorded_at_ms FROM events WHERE kind = $1 AND recorded_at_ms > $2",
                &[&RESEND_EVENT, &Millis(since)],
                |r| Ok((r.try_get(0)?, r.try_get::<_, Millis>(1)?.0)),
            )
            .await?;
        Ok(usage_of(policy, now_ms, slack, approvals, resends))
    }

    /// [`PgLedger::usage_with_slack`] with no slack.
    pub async fn usage(&self, policy: &Policy, now_ms: i64) -> Result<Usage, LedgerError> {
        self.usage_with_slack(policy, now_ms, Duration::ZERO).await
    }

    async fn event_details(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<String>, LedgerError> {
        self.query_map("read events", sql, args, |r| r.try_get(0))
            .await
    }

    /// The detail of the newest event of `kind`.
    pub async fn latest_event(&self, kind: &str) -> Result<Option<String>, LedgerError> {
        let details = self
            .event_details(
                "SELECT detail FROM events WHERE kind = $1 ORDER BY seq DESC LIMIT 1",
                &[&kind],
            )
            .await?;
        Ok(details.into_iter().next())
    }

    /// The details of every event of `kind`, oldest first.
    pub async fn list_events(&self, kind: &str) -> Result<Vec<String>, LedgerError> {
        self.event_details(
            "SELECT detail FROM events WHERE kind = $1 ORDER BY seq",
            &[&kind],
        )
        .await
    }

    /// Whether an event of `kind` with exactly `detail` is recorded.
    pub async fn has_event(&self, kind: &str, detail: &str) -> Result<bool, LedgerError> {
        let found = self
            .event_details(EXACT_EVENT, &[&kind, &storable(detail)])
            .await?;
        Ok(!found.is_empty())
    }

    /// The state of `tx`'s content in the ledger.
    pub async fn state(&self, tx: &Withdrawal) -> Result<TxState, LedgerError> {
        Ok(tx_state(tx, self.history(tx.id).await?))
    }

    /// The states of `txs`, in their order, from one query (a page at a time).
    pub async fn states(&self, txs: &[Withdrawal]) -> Result<Vec<TxState>, LedgerError> {
        if txs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<TxId> = txs.iter().map(|t| t.id).collect();
        let rows = self
            .decisions(
                &format!("{} WHERE d.tx_id = ANY($1) ORDER BY d.seq", row_select()),
                &[&ids],
            )
            .await?;
        let mut by_id: HashMap<TxId, Vec<DecisionRow>> = HashMap::new();
        for r in rows {
            by_id.entry(r.tx_id).or_default().push(r);
        }
        Ok(txs
            .iter()
            .map(|tx| tx_state(tx, by_id.get(&tx.id).cloned().unwrap_or_default()))
            .collect())
    }

    /// Records an event unless one of `kind` with exactly `detail` is recorded already; the
    /// check and the write are one transaction under the chain head's lock, so two callers
    /// racing (in this process or another) record it once. Returns its sequence number when it
    /// was recorded now.
    pub async fn record_event_once(
        &self,
        kind: &str,
        detail: &str,
    ) -> Result<Option<u64>, LedgerError> {
        let epoch = self.epoch();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("begin a write"))?;
        let mut head = begin_write(&*tx).await?;
        let found = tx
            .query_opt(EXACT_EVENT, &[&kind, &storable(detail)])
            .await
            .map_err(db("read events"))?;
        if found.is_some() {
            return Ok(None);
        }
        let now = self.database_now(&*tx).await?;
        let mut rows = chain(&mut head, &mut [EventRecord::at(kind, detail, now)])?;
        insert(&*tx, &mut rows, epoch).await?;
        set_head(&*tx, &head).await?;
        fold_summary(&*tx, &head).await?;
        tx.commit()
            .await
            .map_err(write_error("commit a write", epoch))?;
        Ok(rows.last().map(|r| r.seq.0))
    }

    /// Walks the whole chain and reports every break, and every object in the database that
    /// could change or hide rows.
    pub async fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let mut client = self.client().await?;
        // One snapshot for the records and the head: read beside a leader that is writing, they
        // would otherwise disagree ("ends at record 21 but its head says 41").
        let tx = snapshot(&mut client).await?;
        let report = verify_on(&tx).await;
        tx.rollback().await.map_err(db("verify the chain"))?;
        report
    }

    /// The check the daemon makes before its first decision, as [`Ledger::verify_at_start`]
    /// does on SQLite, in one snapshot: every record since the last verified point, those the
    /// windows and the latest mode record read, and the head; a clean walk that extends the
    /// last verified point makes the head the new one.
    pub async fn verify_at_start(
        &self,
        policy: &Policy,
        now_ms: i64,
        slack: Duration,
    ) -> Result<VerifyReport, LedgerError> {
        let what = "verify the chain";
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let foreign = foreign_objects(&tx).await?;
        let verified = read_verified(&tx).await?;
        let window_from: Option<i64> = match super::window_start(policy, now_ms, slack) {
            Some(since) => tx
                .query_one(window_from_sql("$1", "$2").as_str(), &[&since, &false])
                .await
                .map_err(db(what))?
                .try_get(0)
                .map_err(db(what))?,
            None => None,
        };
        let mode_at: Option<i64> = tx
            .query_one(MODE_AT, &[])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        let head = tx
            .query_one("SELECT seq, hash FROM cosigner_head WHERE id = 1", &[])
            .await
            .map_err(db("read the chain head"))?;
        let head = head_from(&head)?;
        let plan = start_plan(
            verified,
            window_from.and_then(|w| u64::try_from(w).ok()),
            mode_at.and_then(|m| u64::try_from(m).ok()),
            head.seq.0,
        );
        let mut checker = plan.checker;
        if head.seq.0 > 0 {
            // To the last record there is: records beyond the stored head are an edit too.
            walk(&tx, plan.from, u64::MAX, &mut checker).await?;
        }
        if let Some(m) = plan.mode {
            let mut alone = Checker::starting_at(m);
            walk(&tx, m, m.saturating_add(1), &mut alone).await?;
            checker.absorb(alone);
        }
        let reached = checker.last().map(|(s, h)| (s, h.to_string()));
        let mut report = checker.finish_at_head(stored_head(&tx).await?.as_deref());
        tx.rollback().await.map_err(db(what))?;
        report.problems.splice(0..0, foreign);
        if report.problems.is_empty()
            && plan.extends_verified
            && let Some((seq, hash)) = reached
        {
            self.set_verified(seq, &hash).await?;
        }
        Ok(report)
    }

    /// Moves the last verified point forward to record `seq` with hash `hash`.
    pub(crate) async fn set_verified(&self, seq: u64, hash: &str) -> Result<(), LedgerError> {
        let what = "record the verified point";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db(what))?;
        // A write like any other: never on a schema this cosigner does not know.
        begin_write(&*tx).await?;
        tx.execute(
            set_verified_sql("$1", "$2").as_str(),
            &[&Seq(seq).bound(), &hash],
        )
        .await
        .map_err(db(what))?;
        tx.commit().await.map_err(db(what))
    }

    /// A walk of the chain a chunk of records per snapshot, as `ledger::verify::walk_beside`
    /// does on SQLite: `since_verified`, from the last verified point to the head; else the
    /// whole chain to the head as the walk began; `paced`, it sleeps as long as `PACE` times
    /// each chunk. Returns the report and, when clean, the record it reached.
    pub(crate) async fn walk_beside(
        &self,
        since_verified: bool,
        paced: bool,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(VerifyReport, Option<(u64, String)>), LedgerError> {
        let what = "verify the chain";
        let mut client = self.client().await?;
        let (foreign, verified, target) = {
            let tx = snapshot(&mut client).await?;
            let foreign = foreign_objects(&tx).await?;
            let verified = read_verified(&tx).await?;
            let head = tx
                .query_one("SELECT seq, hash FROM cosigner_head WHERE id = 1", &[])
                .await
                .map_err(db("read the chain head"))?;
            let target = head_from(&head)?.seq.0;
            tx.rollback().await.map_err(db(what))?;
            (foreign, verified, target)
        };
        let (mut checker, mut from) = if since_verified {
            match verified {
                Some((seq, hash)) => (Checker::after(seq, &hash), seq + 1),
                None => return Ok((Checker::starting_at(1).finish(), None)),
            }
        } else {
            (Checker::from_genesis(), 1)
        };
        while from <= target {
            let to = from.saturating_add(CHUNK - 1).min(target);
            let started = std::time::Instant::now();
            let tx = snapshot(&mut client).await?;
            walk(&tx, from, to, &mut checker).await?;
            tx.rollback().await.map_err(db(what))?;
            progress(to, target);
            if paced {
                tokio::time::sleep(started.elapsed() * PACE).await;
            }
            from = to + 1;
        }
        let reached = checker
            .last()
            .filter(|_| checker.clean() && foreign.is_empty())
            .map(|(s, h)| (s, h.to_string()));
        let mut report = checker.finish();
        report.problems.splice(0..0, foreign);
        Ok((report, reached))
    }

    /// Counts of real decisions (dry runs excluded) by action.
    pub async fn counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        self.counts_of(false).await
    }

    /// Counts of dry-run decisions by action.
    pub async fn dry_run_counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        self.counts_of(true).await
    }

    async fn counts_of(&self, dry_run: bool) -> Result<HashMap<String, u64>, LedgerError> {
        let through = read_through(&**self.client().await?, "count decisions").await?;
        let counts = self
            .query_map(
                "count decisions",
                summary::POSTGRES.counts().as_str(),
                &[&dry_run, &through],
                |r| {
                    let n: i64 = r.try_get(1)?;
                    Ok((r.try_get(0)?, u64::try_from(n).unwrap_or(0)))
                },
            )
            .await?;
        Ok(counts.into_iter().collect())
    }

    /// Copies `export` (an SQLite ledger's records) into this ledger, which must hold no
    /// records: every record keeps its sequence number and hash. The copy is verified inside
    /// the copying transaction and committed only if it verifies exactly as the source did;
    /// returns that report.
    pub async fn import(&self, export: &LedgerExport) -> Result<VerifyReport, LedgerError> {
        let what = "copy the ledger";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db(what))?;
        let head = begin_write(&*tx).await?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM decisions) + (SELECT count(*) FROM outcomes)
                 + (SELECT count(*) FROM collects) + (SELECT count(*) FROM events)",
                &[],
            )
            .await
            .map_err(db(what))?
            .get(0);
        if head.seq.0 != 0 || held != 0 {
            return Err(LedgerError::Copy {
                reason: format!(
                    "{} already holds {held} records (up to record {}): a ledger is copied only into an empty one",
                    self.describe(),
                    head.seq.0
                ),
            });
        }
        let epoch: i64 = tx
            .query_one(
                "SELECT epoch FROM cosigner_leader WHERE id = 1 FOR SHARE",
                &[],
            )
            .await
            .map_err(db(what))?
            .get(0);
        insert(&*tx, &mut export.decisions.clone(), epoch).await?;
        insert(&*tx, &mut export.outcomes.clone(), epoch).await?;
        insert(&*tx, &mut export.collects.clone(), epoch).await?;
        insert(&*tx, &mut export.events.clone(), epoch).await?;
        set_head(&*tx, &export.head).await?;
        fold_summary(&*tx, &export.head).await?;
        let report = verify_on(&tx).await?;
        if !report.problems.is_empty()
            || report.records != export.report.records
            || report.by_kind != export.report.by_kind
        {
            return Err(LedgerError::Copy {
                reason: format!(
                    "the copy does not verify as the source does ({} records, {:?}; problems: {:?}); nothing was copied",
                    report.records, report.by_kind, report.problems
                ),
            });
        }
        tx.commit().await.map_err(db(what))?;
        tracing::info!(records = report.records, url = %self.describe(), "ledger copied");
        // Tables filled in one transaction have no statistics until autovacuum gets round to
        // them (a minute or more): until then the planner guesses a third of the rows for
        // `seq > $1`, and a cycle's reads scan the whole copy (a first cycle on a 1,000,000-
        // record copy took 59 s). The copy is committed either way.
        if let Err(e) = client
            .batch_execute("ANALYZE decisions, outcomes, collects, events, ledger_summary")
            .await
        {
            tracing::warn!(error = %e, "could not ANALYZE the copied tables; the first cycles may be slow until autovacuum does");
        }
        Ok(report)
    }
}

/// What `cosigner check` reads of a PostgreSQL ledger without changing it.
#[derive(Debug, Clone)]
pub(crate) struct Inspection {
    /// The schema steps applied (`None`: no cosigner schema yet; the daemon creates it).
    pub(crate) schema: Option<i32>,
    /// The chain walked, when there is a schema this cosigner knows.
    pub(crate) report: Option<VerifyReport>,
    /// The epoch and the name of the instance that last took the lead.
    pub(crate) leader: Option<(i64, Option<String>)>,
}

impl PgTarget {
    /// Connects once and reads the schema version, the chain and who last took the lead,
    /// writing nothing. A schema newer than this cosigner's is an error, as at start.
    pub(crate) async fn inspect(&self) -> Result<Inspection, LedgerError> {
        let mut client =
            tokio::time::timeout(Duration::from_secs(15), self.connect("cosigner check"))
                .await
                .map_err(|_| LedgerError::Database {
                    what: "connect",
                    source: "no answer within 15 s".into(),
                })??;
        let what = "read the schema version";
        let exists: bool = client
            .query_one("SELECT to_regclass('cosigner_schema') IS NOT NULL", &[])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        if !exists {
            // The first daemon creates the schema: tried here and rolled back, so that a
            // database already holding tables of the same names (another application's) fails
            // now, as the daemon would at start, and nothing is written.
            let what = "create the schema (tried, then rolled back)";
            let tx = client.transaction().await.map_err(db(what))?;
            for step in super::schema::POSTGRES {
                tx.batch_execute(step).await.map_err(db(what))?;
            }
            tx.rollback().await.map_err(db(what))?;
            return Ok(Inspection {
                schema: None,
                report: None,
                leader: None,
            });
        }
        let found: Option<i32> = client
            .query_one("SELECT max(version) FROM cosigner_schema", &[])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        let found = found.unwrap_or(0);
        if found > SCHEMA_STEPS {
            return Err(LedgerError::DatabaseSchema {
                found,
                known: SCHEMA_STEPS,
            });
        }
        if found < 1 {
            return Ok(Inspection {
                schema: Some(found),
                report: None,
                leader: None,
            });
        }
        // One snapshot for the records and the head (a leader may be writing meanwhile).
        let tx = snapshot(&mut client).await?;
        let report = verify_on(&tx).await;
        tx.rollback().await.map_err(db(what))?;
        let report = report?;
        let leader = client
            .query_opt(
                "SELECT epoch, holder FROM cosigner_leader WHERE id = 1",
                &[],
            )
            .await
            .map_err(db("read the leader"))?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<String>>(1)));
        Ok(Inspection {
            schema: Some(found),
            report: Some(report),
            leader,
        })
    }
}
