//! `cosigner ledger list`, `ledger verify`, `ledger backup` and `ledger migrate`: the recorded
//! decisions as a table or JSON, the hash chain checked (SQLite or PostgreSQL), a consistent
//! online copy of an SQLite ledger, and an SQLite ledger copied into an empty PostgreSQL one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use super::{CmdResult, ConfigArg, Failure, print_json};
use crate::config::Config;
use crate::ledger::postgres::PgLedger;
use crate::ledger::{LedgerHandle, SqliteLedger, Status, VerifyReport};
use crate::policy;

/// `ledger` subcommands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List recorded decisions, newest first.
    List {
        #[command(flatten)]
        /// Which configuration file.
        config: ConfigArg,
        /// How many to show
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain: detects edited, removed or truncated records (exit 1 if broken).
    Verify {
        #[command(flatten)]
        /// Which configuration file.
        config: ConfigArg,
    },
    /// Copy the ledger to FILE while the daemon runs (one consistent snapshot), then verify the
    /// copy's hash chain (exit 1 if broken).
    Backup {
        #[command(flatten)]
        /// Which configuration file.
        config: ConfigArg,
        /// Where the copy goes; must not exist yet
        file: PathBuf,
    },
    /// Copy the configured SQLite ledger into an empty PostgreSQL ledger (for a pair): every
    /// record keeps its number and hash; the chain is verified before and after. Stop the
    /// daemon first.
    Migrate {
        #[command(flatten)]
        /// Which configuration file.
        config: ConfigArg,
        /// The PostgreSQL ledger, postgres://user@host:port/database?sslmode=verify-full
        #[arg(long, value_name = "URL")]
        to: String,
        /// File holding the database password (else $CREDENTIALS_DIRECTORY/pg_password, or none)
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

/// Runs a `ledger` subcommand.
pub(crate) async fn run(command: LedgerCommand) -> CmdResult {
    match command {
        LedgerCommand::List {
            config,
            limit,
            json,
        } => list(config, limit, json).await,
        LedgerCommand::Verify { config } => verify(config).await,
        LedgerCommand::Backup { config, file } => backup(config, &file),
        LedgerCommand::Migrate {
            config,
            to,
            password_file,
        } => migrate(config, &to, password_file.as_deref()).await,
    }
}

fn no_ledger_yet(path: &Path) -> String {
    format!(
        "no ledger yet at {}: the daemon creates it when it first starts (`cosigner run`, or \
         `systemctl start cosigner`) and records decisions from its first cycle",
        path.display()
    )
}

/// The configured ledger for reading: the SQLite file read-only (`None` when the daemon has
/// not made it yet), or the PostgreSQL ledger.
pub(crate) async fn open_for_reading(cfg: &Config) -> Result<Option<LedgerHandle>, Failure> {
    match &cfg.ledger.postgres {
        Some(pg) => {
            let ledger = PgLedger::open(pg.target.clone())
                .await
                .map_err(Failure::runtime)?;
            Ok(Some(LedgerHandle::postgres(Arc::new(ledger))))
        }
        None if !cfg.ledger.path.exists() => Ok(None),
        None => SqliteLedger::open_read_only(&cfg.ledger.path)
            .map(|l| Some(LedgerHandle::sqlite(l)))
            .map_err(Failure::runtime),
    }
}

/// The configured SQLite ledger, read-only; exit 2 when the daemon has not made it yet, or
/// when the configuration names a PostgreSQL ledger (`what` says which command needs the file).
pub(crate) fn open_sqlite_read_only(cfg: &Config, what: &str) -> Result<SqliteLedger, Failure> {
    if let Some(pg) = &cfg.ledger.postgres {
        return Err(Failure::usage(anyhow::anyhow!(
            "{what} works on an SQLite ledger (ledger.path); this configuration names the \
             PostgreSQL ledger {}",
            pg.target.describe()
        )));
    }
    open_read_only(cfg)
}

/// The configured ledger, read-only; exit 2 when the daemon has not made it yet.
fn open_read_only(cfg: &Config) -> Result<SqliteLedger, Failure> {
    if !cfg.ledger.path.exists() {
        return Err(Failure::usage(anyhow::anyhow!(no_ledger_yet(
            &cfg.ledger.path
        ))));
    }
    SqliteLedger::open_read_only(&cfg.ledger.path).map_err(Failure::runtime)
}

fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn list(config: ConfigArg, limit: usize, json: bool) -> CmdResult {
    let cfg = config.load()?;
    let Some(ledger) = open_for_reading(&cfg).await? else {
        // Nothing recorded yet is not an error: say why the list is empty.
        eprintln!("{}", no_ledger_yet(&cfg.ledger.path));
        if json {
            println!("[]");
        }
        return Ok(());
    };
    let rows = ledger.list(limit).await.map_err(Failure::runtime)?;
    if json {
        return print_json(&rows);
    }
    // Chain names from the policy's [chains] table when it loads, else the built-in ones.
    let chains = policy::load(&cfg.policy.file)
        .map(|p| p.chains)
        .unwrap_or_default();
    println!(
        "{:>6}  {:<20}  {:>10}  {:<14}  {:<16}  {:>14}  {:<7}  {:<9}  {:<24}  REASON",
        "SEQ", "RECORDED", "TX", "CHAIN", "TO", "AMOUNT", "ACTION", "STATUS", "RULE"
    );
    let shown = rows.len();
    for r in rows {
        let status = match r.status {
            Status::Recorded => "recorded",
            Status::Submitted => "submitted",
            Status::Failed => "failed",
            Status::NotSent if r.dry_run => "dry-run",
            Status::NotSent => "-",
        };
        println!(
            "{:>6}  {:<20}  {:>10}  {:<14}  {:<16}  {:>14}  {:<7}  {:<9}  {:<24}  {}",
            r.seq,
            format_ms(r.recorded_at_ms),
            r.tx_id,
            r.chain_id
                .as_deref()
                .map_or("?".into(), |c| chains.label(c)),
            r.to.as_deref()
                .map_or("?".into(), crate::display::short_address),
            r.amount.as_deref().unwrap_or("?"),
            r.action,
            status,
            r.rule,
            r.status_message
                .as_deref()
                .map_or(r.reason.clone(), |m| format!("{} ({m})", r.reason))
        );
    }
    if shown > 0 {
        println!(
            "\nSEQ numbers every ledger record: decisions (listed here), submission outcomes, \
             collections and events (mode, policy) share one sequence, so the decisions skip the \
             others' numbers. `--json` shows full addresses."
        );
    }
    Ok(())
}

async fn verify(config: ConfigArg) -> CmdResult {
    let cfg = config.load()?;
    let Some(ledger) = open_for_reading(&cfg).await? else {
        return Err(Failure::usage(anyhow::anyhow!(no_ledger_yet(
            &cfg.ledger.path
        ))));
    };
    let report = ledger.verify().await.map_err(Failure::runtime)?;
    let kinds = [
        ("decision", "decisions"),
        ("outcome", "submission outcomes"),
        ("collect", "collections"),
        ("event", "mode and policy events"),
    ]
    .iter()
    .map(|(k, words)| format!("{words} {}", report.by_kind.get(k).copied().unwrap_or(0)))
    .collect::<Vec<_>>()
    .join(", ");
    if report.problems.is_empty() {
        println!(
            "ledger {}: {} records ({kinds}), hash chain intact",
            ledger.describe(),
            report.records
        );
        Ok(())
    } else {
        for p in &report.problems {
            println!("FAIL  {p}");
        }
        Err(Failure::runtime(anyhow::anyhow!(
            "ledger {} failed verification: {} problem(s) in {} records ({kinds})",
            ledger.describe(),
            report.problems.len(),
            report.records
        )))
    }
}

fn backup(config: ConfigArg, file: &Path) -> CmdResult {
    let cfg = config.load()?;
    let ledger = open_sqlite_read_only(
        &cfg,
        "`ledger backup` (a PostgreSQL ledger is backed up with the database's own tools: \
         pg_dump, or a replica)",
    )?;
    if file.exists() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} already exists: `ledger backup` writes a new file and never overwrites one",
            file.display()
        )));
    }
    let report = ledger.backup_to(file).map_err(Failure::runtime)?;
    if report.verify.problems.is_empty() {
        println!(
            "ledger {} backed up to {}: {} records, hash chain intact ({} bytes)",
            ledger.path().display(),
            file.display(),
            report.verify.records,
            report.bytes
        );
        Ok(())
    } else {
        for p in &report.verify.problems {
            println!("FAIL  {p}");
        }
        Err(Failure::runtime(anyhow::anyhow!(
            "ledger {} was copied to {}, but the copy's chain is broken ({} problem(s)): the \
             ledger itself fails `cosigner ledger verify`",
            ledger.path().display(),
            file.display(),
            report.verify.problems.len()
        )))
    }
}

/// The counts of a verify report, by kind, for a line of output.
fn kinds(report: &VerifyReport) -> String {
    ["decision", "outcome", "collect", "event"]
        .iter()
        .map(|k| format!("{k}s {}", report.by_kind.get(*k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn migrate(config: ConfigArg, to: &str, password_file: Option<&Path>) -> CmdResult {
    let cfg = config.load()?;
    if let Some(pg) = &cfg.ledger.postgres {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} already names the PostgreSQL ledger {} (ledger.url): `ledger migrate` copies the \
             SQLite ledger of ledger.path",
            cfg.path.display(),
            pg.target.describe()
        )));
    }
    if !cfg.ledger.path.exists() {
        return Err(Failure::usage(anyhow::anyhow!(no_ledger_yet(
            &cfg.ledger.path
        ))));
    }
    // A copy taken while the daemon decides would miss what it records afterwards.
    if let Some(pid) = crate::ledger::held_by(&cfg.ledger.path) {
        return Err(Failure::usage(anyhow::anyhow!(
            "the daemon (pid {pid}) is running on {}: stop it first (`systemctl stop cosigner`), \
             so that nothing is recorded after the copy",
            cfg.ledger.path.display()
        )));
    }
    let password = match password_file {
        Some(p) => Some(
            crate::config::read_secret_file(p, true)
                .map_err(|e| Failure::usage(anyhow::anyhow!("--password-file: {e}")))?,
        ),
        None => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| PathBuf::from(d).join(crate::config::CRED_PG_PASSWORD))
            .filter(|p| p.exists())
            .map(|p| crate::config::read_secret_file(&p, false))
            .transpose()
            .map_err(|e| Failure::usage(anyhow::anyhow!("pg_password credential: {e}")))?,
    };
    let target = crate::ledger::postgres::PgTarget::parse(to, password)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--to: {e}")))?;
    // Verified before: `export` refuses a chain that does not verify.
    let export = SqliteLedger::open_read_only(&cfg.ledger.path)
        .and_then(|l| l.export())
        .map_err(Failure::runtime)?;
    let before = export.report().clone();
    let ledger = PgLedger::open(target).await.map_err(Failure::runtime)?;
    ledger.import(&export).await.map_err(Failure::runtime)?;
    // And after, from a fresh read of what was committed.
    let after = ledger.verify().await.map_err(Failure::runtime)?;
    if !after.problems.is_empty()
        || after.records != before.records
        || after.by_kind != before.by_kind
    {
        return Err(Failure::runtime(anyhow::anyhow!(
            "the copy in {} does not verify as {} does ({} records, {}; problems: {:?})",
            ledger.describe(),
            cfg.ledger.path.display(),
            after.records,
            kinds(&after),
            after.problems
        )));
    }
    println!(
        "copied {} records ({}) from {} to {}; hash chain verified before and after",
        after.records,
        kinds(&after),
        cfg.ledger.path.display(),
        ledger.describe()
    );
    println!(
        "next: in {}, replace ledger.path with ledger.url = \"{}\" (and ledger.name), then start \
         the daemons",
        cfg.path.display(),
        ledger.describe()
    );
    Ok(())
}
