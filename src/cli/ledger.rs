//! `cosigner ledger list`, `ledger verify` and `ledger backup`: the recorded decisions as a
//! table or JSON, the hash chain checked, and a consistent online copy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;

use super::{CmdResult, ConfigArg, Failure, print_json};
use crate::config::Config;
use crate::ledger::{Ledger, Status};
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
}

/// Runs a `ledger` subcommand.
pub(crate) fn run(command: LedgerCommand) -> CmdResult {
    match command {
        LedgerCommand::List {
            config,
            limit,
            json,
        } => list(config, limit, json),
        LedgerCommand::Verify { config } => verify(config),
        LedgerCommand::Backup { config, file } => backup(config, &file),
    }
}

fn no_ledger_yet(path: &Path) -> String {
    format!(
        "no ledger yet at {}: the daemon creates it when it first starts (`cosigner run`, or \
         `systemctl start cosigner`) and records decisions from its first cycle",
        path.display()
    )
}

/// The configured ledger, read-only; exit 2 when the daemon has not made it yet.
pub(crate) fn open_read_only(cfg: &Config) -> Result<Ledger, Failure> {
    if !cfg.ledger.path.exists() {
        return Err(Failure::usage(anyhow::anyhow!(no_ledger_yet(
            &cfg.ledger.path
        ))));
    }
    Ledger::open_read_only(&cfg.ledger.path).map_err(Failure::runtime)
}

fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn list(config: ConfigArg, limit: usize, json: bool) -> CmdResult {
    let cfg = config.load()?;
    if !cfg.ledger.path.exists() {
        // Nothing recorded yet is not an error: say why the list is empty.
        eprintln!("{}", no_ledger_yet(&cfg.ledger.path));
        if json {
            println!("[]");
        }
        return Ok(());
    }
    let ledger = open_read_only(&cfg)?;
    let rows = ledger.list(limit).map_err(Failure::runtime)?;
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

fn verify(config: ConfigArg) -> CmdResult {
    let cfg = config.load()?;
    let ledger = open_read_only(&cfg)?;
    let report = ledger.verify().map_err(Failure::runtime)?;
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
            ledger.path().display(),
            report.records
        );
        Ok(())
    } else {
        for p in &report.problems {
            println!("FAIL  {p}");
        }
        Err(Failure::runtime(anyhow::anyhow!(
            "ledger {} failed verification: {} problem(s) in {} records ({kinds})",
            ledger.path().display(),
            report.problems.len(),
            report.records
        )))
    }
}

fn backup(config: ConfigArg, file: &Path) -> CmdResult {
    let cfg = config.load()?;
    let ledger = open_read_only(&cfg)?;
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
