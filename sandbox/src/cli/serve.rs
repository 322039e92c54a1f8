//! `cosigner-sandbox serve`: the built-in, strict 1BitPay server on a local port.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use cosigner::cli::{CmdResult, Failure, key_source, read_password, shutdown_signal};

use crate::server::{self as sandbox, Sandbox, SandboxConfig, Scenario};
use cosigner::signer::Signer;

/// Arguments of `serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "The certificate that verifies `data` is the one in the merchant's PKCS#12 key \
shard (downloaded from the merchant console): give the file itself with --pfx (and --merchant-no \
for its default password), or its certificate as PEM with --cert, extracted with `openssl pkcs12 \
-in merchant.pfx -clcerts -nokeys -out merchant-cert.pem` (add -legacy for an RC2/3DES file).\n\n\
The sandbox prints `listening on http://ADDR` once it accepts connections (use \
port 0 for any free port). Admin routes for tests: GET/POST /_sandbox/pending, GET \
/_sandbox/decisions, /_sandbox/collects, /_sandbox/orders, /_sandbox/rejections, /_sandbox/stats, \
GET/PUT /_sandbox/faults."
)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// Merchant certificate (PEM) that `data` is verified with
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "pfx",
        conflicts_with = "pfx"
    )]
    pub(crate) cert: Option<PathBuf>,
    /// The merchant's PKCS#12 key shard: its certificate verifies `data` (instead of --cert)
    #[arg(long, value_name = "FILE")]
    pub(crate) pfx: Option<PathBuf>,
    /// File holding the PKCS#12 password, when it is not "1bitpay" + --merchant-no
    #[arg(long, value_name = "FILE", requires = "pfx")]
    pub(crate) password_file: Option<PathBuf>,
    /// Merchant number to accept (and, with --pfx, the default key password's suffix)
    #[arg(long, value_name = "M")]
    pub(crate) merchant_no: String,
    /// API key to accept
    #[arg(long, value_name = "K")]
    pub(crate) api_key: String,
    /// API secret to check `Sign` with
    #[arg(
        long,
        value_name = "S",
        required_unless_present = "api_secret_file",
        conflicts_with = "api_secret_file"
    )]
    pub(crate) api_secret: Option<String>,
    /// File holding the API secret
    #[arg(long, value_name = "FILE")]
    pub(crate) api_secret_file: Option<PathBuf>,
    /// Scenario file (TOML, or JSON when it ends in .json): pending items and faults
    #[arg(long, value_name = "FILE")]
    pub(crate) scenario: Option<PathBuf>,
    /// Canonical order the sandbox expects for `Sign`: case-insensitive or ascii
    #[arg(long, default_value = "case-insensitive")]
    pub(crate) sign_order: cosigner::client::SignOrder,
    /// Largest accepted clock difference of `TimeStamp`
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) max_skew: Duration,
}

/// Runs `serve` until a stop signal.
pub(crate) async fn run(a: ServeArgs) -> CmdResult {
    let (sb, listener) = prepare(a).await?;
    let addr = listener.local_addr().map_err(Failure::runtime)?;
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, pending = sb.stats().pending, "sandbox ready");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    sandbox::serve(listener, sb, shutdown)
        .await
        .context("sandbox server failed")
        .map_err(Failure::runtime)
}

/// Everything `serve` does before it accepts a connection: the certificate, the secret and the
/// scenario read, the listener bound. A bad argument or file is a usage failure naming it.
pub async fn prepare(a: ServeArgs) -> Result<(Sandbox, tokio::net::TcpListener), Failure> {
    let cert = match (&a.cert, &a.pfx) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read certificate {}", path.display()))
                .map_err(Failure::usage)?;
            openssl::x509::X509::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))
                .map_err(Failure::usage)?
        }
        (None, Some(pfx)) => {
            let source = key_source(pfx, Some(&a.merchant_no), a.password_file.as_deref(), false)?;
            let pem = Signer::load(&source)
                .and_then(|s| s.certificate_pem())
                .map_err(Failure::usage)?;
            openssl::x509::X509::from_pem(&pem).map_err(Failure::usage)?
        }
        (None, None) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--cert or --pfx is required: the merchant certificate verifies `data`"
            )));
        }
    };
    let secret = match (&a.api_secret, &a.api_secret_file) {
        (Some(s), _) => SecretString::from(s.clone()),
        // The sandbox's secret is a test value.
        (None, Some(f)) => read_password(f, false)?,
        (None, None) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--api-secret or --api-secret-file is required"
            )));
        }
    };
    let scenario = match &a.scenario {
        Some(p) => Scenario::load(p).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?,
        None => Scenario::default(),
    };
    let sb = Sandbox::new(
        SandboxConfig {
            merchant_no: a.merchant_no,
            api_key: a.api_key,
            api_secret: secret,
            cert,
            sign_order: a.sign_order,
            max_skew: a.max_skew,
        },
        scenario,
    );
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))
        .map_err(Failure::runtime)?;
    Ok((sb, listener))
}
