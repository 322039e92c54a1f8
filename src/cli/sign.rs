//! `cosigner sign`: a text signed with the key shard, the `data` field of a request; and the
//! key files and secrets named on the command line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use secrecy::SecretString;

use super::{CmdResult, ConfigArg, Failure};
use crate::config;
use crate::signer::{self, KeySource, Signer};

/// Arguments of `sign`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cosigner sign --config /etc/cosigner/cosigner.toml '{\"isMain\":1}'\n  \
cosigner sign --pfx merchant.pfx --merchant-no mer123 < text.json\n\nThe text is signed byte for \
byte; from standard input, one trailing newline is dropped."
)]
pub struct SignArgs {
    /// Configuration file to take the key from [default: $COSIGNER_CONFIG, else /etc/cosigner/cosigner.toml]
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["pfx", "merchant_no", "password_file"])]
    pub(crate) config: Option<PathBuf>,
    /// PKCS#12 key file, instead of a configuration
    #[arg(long, value_name = "FILE")]
    pub(crate) pfx: Option<PathBuf>,
    /// Merchant number; the default key password is "1bitpay" followed by it
    #[arg(long, value_name = "M", requires = "pfx")]
    pub(crate) merchant_no: Option<String>,
    /// File holding the key password, when it is not the default
    #[arg(long, value_name = "FILE", requires = "pfx")]
    pub(crate) password_file: Option<PathBuf>,
    /// Accept a key file that group or others can read
    #[arg(long)]
    pub(crate) allow_insecure_permissions: bool,
    /// Sign a text that is not strict JSON, or is shaped like an approve/reject decision (one
    /// with a `status` field): such a signature may approve or reject a withdrawal without the
    /// policy or the ledger
    #[arg(long = "i-know-this-bypasses-the-policy")]
    pub(crate) bypass_policy: bool,
    /// The text to sign; read from standard input when absent
    pub(crate) text: Option<String>,
}

/// Runs `sign`: refuses a text shaped like a decision unless told it bypasses the policy.
pub(crate) fn run(a: SignArgs) -> CmdResult {
    let source = match &a.pfx {
        Some(pfx) => key_source(
            pfx,
            a.merchant_no.as_deref(),
            a.password_file.as_deref(),
            a.allow_insecure_permissions,
        )?,
        None => {
            let mut cfg = ConfigArg {
                config: a.config.clone(),
            }
            .load()?;
            cfg.key.source.allow_insecure_permissions |= a.allow_insecure_permissions;
            cfg.key.source
        }
    };
    let signer = Signer::load(&source).map_err(Failure::usage)?;
    let text = match a.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("cannot read the text from standard input")
                .map_err(Failure::usage)?;
            if t.ends_with('\n') {
                t.pop();
                if t.ends_with('\r') {
                    t.pop();
                }
            }
            t
        }
    };
    if let Some(problem) = crate::domain::hand_signing_problem(&text)
        && !a.bypass_policy
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "{problem}: its signature could decide a withdrawal without the policy or the \
             ledger. The daemon makes decisions; to sign this by hand anyway, add \
             --i-know-this-bypasses-the-policy"
        )));
    }
    let data = signer.sign(&text).map_err(Failure::usage)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{data}").map_err(Failure::runtime)?;
    Ok(())
}

/// A PKCS#12 named on the command line: the password from `password_file`, else the default
/// "1bitpay" + `merchant_no`.
pub fn key_source(
    pfx: &Path,
    merchant_no: Option<&str>,
    password_file: Option<&Path>,
    allow_insecure_permissions: bool,
) -> Result<KeySource, Failure> {
    let password = match (password_file, merchant_no) {
        (Some(f), _) => read_password(f, !allow_insecure_permissions)?,
        (None, Some(m)) => signer::default_password(m),
        (None, None) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--pfx needs --merchant-no (for the default password) or --password-file"
            )));
        }
    };
    Ok(KeySource {
        pfx_file: pfx.to_owned(),
        password,
        allow_insecure_permissions,
    })
}

/// A secret from a file named on the command line; `private` refuses one group or others may
/// read, as the key file is refused.
pub fn read_password(path: &Path, private: bool) -> Result<SecretString, Failure> {
    config::read_secret_file(path, private).map_err(Failure::usage)
}
