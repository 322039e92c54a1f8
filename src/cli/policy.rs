//! `cosigner policy check`, `explain` and `replay`: a policy summarised, one transaction's
//! decision traced rule by rule, and the ledger's decisions re-made under a candidate policy.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::ledger::open_for_reading;
use super::{CmdResult, ConfigArg, Failure};
use crate::control::Mode;
use crate::explain::{self, Explanation};
use crate::plan::Plan;
use crate::policy;
use crate::signer::Signer;

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and summarise it (default: the configured policy.file).
    Check {
        #[command(flatten)]
        /// Which configuration file.
        config: ConfigArg,
        /// Policy file to check instead of the configured one
        file: Option<PathBuf>,
    },
    /// Re-evaluate every transaction in the ledger under another policy and print what would
    /// change, before switching it on.
    Replay {
        #[command(flatten)]
        /// Which configuration file.
        config: ConfigArg,
        /// The candidate policy
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// Show each rule in order, whether it matched and why not, and the final decision.
    #[command(after_help = "Example:\n  cosigner policy explain --tx \
'{\"id\":1,\"fromAddress\":\"TGGh...\",\"toAddress\":\"TFMQ...\",\"amount\":\"4.1\",\"chainId\":\"195\"}'\n\n\
Window usage is read from the ledger when it exists (read-only; safe beside a running daemon).")]
    Explain {
        #[command(flatten)]
        /// Which configuration file.
        config: ConfigArg,
        /// A pending item as JSON, with the field names of the pending list
        #[arg(long, value_name = "JSON")]
        tx: String,
    },
}

/// Runs a `policy` subcommand.
pub(crate) async fn run(command: PolicyCommand) -> CmdResult {
    match command {
        PolicyCommand::Check { config, file } => check(config, file),
        PolicyCommand::Explain { config, tx } => explain(config, &tx).await,
        PolicyCommand::Replay { config, policy } => replay(config, &policy).await,
    }
}

/// A policy file, or exit 2 with what is wrong in it.
fn load_policy(path: &Path) -> Result<policy::Policy, Failure> {
    policy::load(path).map_err(Failure::usage)
}

fn check(config: ConfigArg, file: Option<PathBuf>) -> CmdResult {
    let path = match file {
        Some(f) => f,
        None => config.load()?.policy.file,
    };
    let p = load_policy(&path)?;
    println!("policy  {}", path.display());
    println!("sha256  {}", p.sha256);
    println!("default {}", p.default);
    for (i, r) in p.rules.iter().enumerate() {
        let mut conds = Vec::new();
        if let Some(c) = &r.chains {
            let ids: Vec<String> = c.iter().map(u128::to_string).collect();
            conds.push(format!("chains {}", ids.join(",")));
        }
        if let Some(f) = &r.from {
            conds.push(format!("from {} address(es)", f.len()));
        }
        if let Some(t) = &r.to {
            conds.push(format!("to {} address(es)", t.len()));
        }
        if let Some(m) = r.min_amount {
            conds.push(format!("amount >= {m}"));
        }
        if let Some(m) = r.max_amount {
            conds.push(format!("amount <= {m}"));
        }
        if let Some(l) = &r.limit {
            let w = crate::display::window(l.window);
            if let Some(t) = l.max_total {
                conds.push(format!("total <= {t} per {w}"));
            }
            if let Some(c) = l.max_count {
                conds.push(format!("count <= {c} per {w}"));
            }
        }
        let conds = if conds.is_empty() {
            "any transaction".to_string()
        } else {
            conds.join("; ")
        };
        println!("rule {:>2} {:<8} {:?}: {conds}", i + 1, r.action, r.name);
    }
    if let Some(g) = &p.guard {
        println!(
            "guard   at most {} approvals per {}",
            g.max_approvals,
            crate::display::window(g.window)
        );
    }
    for w in p.warnings() {
        println!("warn    {w}");
    }
    Ok(())
}

async fn explain(config: ConfigArg, tx_json: &str) -> CmdResult {
    let cfg = config.load()?;
    let p = load_policy(&cfg.policy.file)?;
    let signer = Signer::load(&cfg.key.source).map_err(Failure::usage)?;
    let tx = crate::client::parse_pending_item(tx_json)
        .map_err(|m| Failure::usage(anyhow::anyhow!("--tx: {} ({})", m.reason, m.raw)))?;
    let skew = cfg.api.client.max_clock_skew;
    let (explanation, source) = match &cfg.ledger.postgres {
        None => {
            let now_ms = crate::clock::Clock::system().now_ms();
            let e = explain::explain(
                &p,
                &cfg.ledger.path,
                signer.max_text_len(),
                skew,
                &tx,
                now_ms,
            )
            .map_err(Failure::runtime)?;
            let source = e.ledger.as_ref().map(|path| path.display().to_string());
            (e, source)
        }
        Some(_) => {
            let ledger = open_for_reading(&cfg)
                .await?
                .ok_or_else(|| Failure::runtime(anyhow::anyhow!("no ledger")))?;
            let e = explain::explain_from(
                &std::sync::Arc::new(p.clone()),
                &ledger,
                signer.max_text_len(),
                skew,
                &tx,
            )
            .await
            .map_err(Failure::runtime)?;
            (e, Some(ledger.describe()))
        }
    };
    let Explanation {
        mode, state, plan, ..
    } = explanation;
    let source = match source {
        Some(location) => format!("window usage, mode and this id's records from {location}"),
        None => "no ledger yet: window usage is zero".to_string(),
    };
    println!(
        "policy {} (sha256 {}); {source}",
        cfg.policy.file.display(),
        &p.sha256[..12]
    );
    if mode != Mode::Normal {
        println!("mode {}: the kill switch is thrown", mode.as_str());
    }
    match plan {
        Plan::Decide(eval) => {
            for (i, t) in eval.trace.iter().enumerate() {
                let window = t
                    .window
                    .map(|w| format!(" [window: {} approved, total {}]", w.count, w.total))
                    .unwrap_or_default();
                match &t.why_not {
                    None => println!("rule {:>2} {:?}: matched{window}", i + 1, t.rule),
                    Some(why) => println!("rule {:>2} {:?}: no — {why}{window}", i + 1, t.rule),
                }
            }
            println!(
                "decision: {} by {} — {}",
                eval.action, eval.rule, eval.reason
            );
        }
        Plan::Resend { seq, .. } => {
            let action = state.live.as_ref().map_or("?", |l| l.action.as_str());
            println!(
                "decision: {action}, already recorded (record {seq}, not yet confirmed) — sent \
                 again with its identical data"
            );
        }
        Plan::Wait { seq, reason } => {
            println!("decision: hold — record {seq} waits: {reason}");
        }
        Plan::Done { seq } => {
            let action = state.live.as_ref().map_or("?", |l| l.action.as_str());
            println!(
                "decision: {action}, already accepted by the server (record {seq}) — nothing to send"
            );
        }
    }
    Ok(())
}

async fn replay(config: ConfigArg, candidate: &Path) -> CmdResult {
    let cfg = config.load()?;
    let new = load_policy(candidate)?;
    let signer = Signer::load(&cfg.key.source).map_err(Failure::usage)?;
    let Some(ledger) = open_for_reading(&cfg).await? else {
        return Err(Failure::usage(anyhow::anyhow!(
            "no ledger yet at {}: nothing to replay",
            cfg.ledger.path.display()
        )));
    };
    let rows = ledger
        .list(usize::MAX >> 1)
        .await
        .map_err(Failure::runtime)?;
    let report = crate::replay::replay(rows, &new, signer.max_text_len());
    println!(
        "replayed {} transaction(s) from {} under {} (sha256 {})",
        report.replayed,
        ledger.describe(),
        candidate.display(),
        &new.sha256[..12]
    );
    if report.changes.is_empty() {
        println!("no decision would change");
        return Ok(());
    }
    println!(
        "{:>10}  {:<8}  {:<8}  {:<24}  REASON",
        "TX", "OLD", "NEW", "RULE"
    );
    for c in &report.changes {
        println!(
            "{:>10}  {:<8}  {:<8}  {:<24}  {}",
            c.tx_id, c.old, c.new, c.rule, c.reason
        );
    }
    println!("{} decision(s) would change", report.changes.len());
    Ok(())
}
