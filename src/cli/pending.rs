//! `cosigner pending`: one page of the withdrawals waiting for approval, read-only.

use clap::Args;

use super::{CmdResult, ConfigArg, Failure, client_for};

/// Arguments of `pending`.
#[derive(Debug, Args)]
pub struct PendingArgs {
    #[command(flatten)]
    /// Which configuration file.
    pub(crate) config: ConfigArg,
    /// Page number, from 1
    #[arg(long, default_value_t = 1)]
    pub(crate) page: u32,
    /// Items per page [default: poll.page_size]
    #[arg(long)]
    pub(crate) page_size: Option<u32>,
}

/// Runs `pending`.
pub(crate) async fn run(a: PendingArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let client = client_for(&cfg)?;
    if a.page == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--page starts at 1")));
    }
    let size = a.page_size.unwrap_or(cfg.poll.page_size);
    let page = client
        .pending(a.page, size)
        .await
        .map_err(Failure::runtime)?;
    println!(
        "{} pending in all; page {} (size {}):",
        page.total, a.page, size
    );
    println!(
        "{:>12}  {:>8}  {:>24}  {:<44}  {:<44}",
        "ID", "CHAIN", "AMOUNT", "FROM", "TO"
    );
    for item in &page.items {
        match item {
            Ok(tx) => {
                let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
                println!(
                    "{:>12}  {:>8}  {:>24}  {:<44}  {:<44}{}",
                    tx.id,
                    show(&tx.chain_id),
                    show(&tx.amount),
                    show(&tx.from),
                    show(&tx.to),
                    if tx.problems.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", tx.problems.join("; "))
                    }
                );
            }
            Err(m) => println!("{:>12}  malformed item: {} ({})", "-", m.reason, m.raw),
        }
    }
    Ok(())
}
