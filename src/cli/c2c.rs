//! The C2C commands: `cosigner rate`, `create-order` and `batch-sell`, each one API call whose
//! answer is printed as JSON.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::{CmdResult, ConfigArg, Failure, client_for, print_json};
use crate::client::{CreateOrder, SellOrder};

/// Arguments of `rate`.
#[derive(Debug, Args)]
pub struct RateArgs {
    #[command(flatten)]
    /// Which configuration file.
    pub(crate) config: ConfigArg,
    /// The crypto currency, e.g. USDT
    #[arg(long, value_name = "CODE")]
    pub(crate) crypto: String,
    /// The fiat currency, e.g. CNY
    #[arg(long, value_name = "CODE")]
    pub(crate) legal: String,
}

/// Arguments of `create-order` and `batch-sell`.
#[derive(Debug, Args)]
pub struct OrderFileArgs {
    #[command(flatten)]
    /// Which configuration file.
    pub(crate) config: ConfigArg,
    /// JSON file with the order(s), field names as in the 1BitPay reference; - for stdin
    #[arg(long, value_name = "FILE")]
    pub(crate) file: PathBuf,
}

/// Runs `rate`.
pub(crate) async fn rate(a: RateArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let rate = client_for(&cfg)?
        .rate(&a.crypto, &a.legal)
        .await
        .map_err(Failure::runtime)?;
    print_json(&rate)
}

/// An order file (`-` for stdin) parsed as JSON; exit 2 when it cannot be read or parsed.
fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Failure> {
    let text = if path == Path::new("-") {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("cannot read standard input")
            .map_err(Failure::usage)?;
        t
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(Failure::usage)?
    };
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid order file", path.display()))
        .map_err(Failure::usage)
}

/// Runs `create-order`.
pub(crate) async fn create_order(a: OrderFileArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let order: CreateOrder = read_json_file(&a.file)?;
    let created = client_for(&cfg)?
        .create_order(&order)
        .await
        .map_err(Failure::runtime)?;
    print_json(&created)
}

/// Runs `batch-sell`: an empty array is refused before any call.
pub(crate) async fn batch_sell(a: OrderFileArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let orders: Vec<SellOrder> = read_json_file(&a.file)?;
    if orders.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} holds no orders",
            a.file.display()
        )));
    }
    let sold = client_for(&cfg)?
        .batch_sell(&orders)
        .await
        .map_err(Failure::runtime)?;
    print_json(&sold)
}
