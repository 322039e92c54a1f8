//! Where the PostgreSQL ledger is: the URL parsed into a target (TLS mode, root certificate,
//! password kept out of every message) and the connections made to it.

use std::path::PathBuf;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::{Host, SslMode};

use crate::clock::Clock;
use crate::ledger::LedgerError;

use super::{db, read_database_now};

/// How TLS to the database is used (`sslmode`, as libpq reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tls {
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
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeTlsConnector,
    pub(super) described: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.described)
            .finish_non_exhaustive()
    }
}

pub(super) fn url_error(reason: impl Into<String>) -> LedgerError {
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
pub(super) fn describe(config: &tokio_postgres::Config, tls: Tls) -> String {
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
