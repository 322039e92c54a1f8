//! The preflight check behind `cosigner check`: [`preflight`] loads the configuration, the key
//! shard and the policy, and looks past their syntax at what would fail once the daemon starts
//! (placeholder credentials, secrets others can read, plain HTTP to a remote host, a listener
//! address already taken, a ledger directory not there yet), and with `online` makes one
//! authenticated call. Each finding names the key or file and says how to fix it.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;

use crate::client::{Client, ClientError};
use crate::config::{self, Config, Environment, SecretOrigin};
use crate::signer::Signer;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Works.
    Ok,
    /// Works, but deserves a look.
    Warn,
    /// Will fail, or is unsafe: `check` exits non-zero.
    Fail,
}

/// One line of `cosigner check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Ok, warn or fail.
    pub level: Level,
    /// What was checked (`api secret`, `http.listen`, ...).
    pub what: &'static str,
    /// What was found, and the fix.
    pub detail: String,
}

fn finding(level: Level, what: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        level,
        what,
        detail: detail.into(),
    }
}

/// What [`preflight`] found, in the order it checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// The configuration file checked.
    pub(crate) config: PathBuf,
    /// Whether the configuration loaded; when it did not, `local` holds only why and nothing
    /// else was checked.
    pub config_loaded: bool,
    /// Everything checked on this host: configuration, secrets, key, policy, ledger, listener.
    pub local: Vec<Finding>,
    /// The authenticated call and the server's clock (`online` only).
    pub online: Vec<Finding>,
}

impl Preflight {
    /// All findings, local ones first.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.local.iter().chain(&self.online)
    }

    /// Whether something on this host will fail or is unsafe (a configuration problem).
    #[must_use]
    pub fn local_failed(&self) -> bool {
        self.local.iter().any(|f| f.level == Level::Fail)
    }

    /// Whether the online check failed (credentials, network, allow-list).
    #[must_use]
    pub fn online_failed(&self) -> bool {
        self.online.iter().any(|f| f.level == Level::Fail)
    }
}

/// Largest server-clock difference the online check accepts without a warning.
const CLOCK_WARN: Duration = Duration::from_secs(10);

/// The whole preflight check of the configuration at `config_path`; with `online`, one
/// authenticated call (pending, page size 1) tests the credentials, the IP allow-list and the
/// clock. `env` is the environment the configuration is loaded with
/// (`Environment::from_process` for the command). Creates nothing.
pub async fn preflight(config_path: &Path, env: &Environment, online: bool) -> Preflight {
    let mut out = Preflight {
        config: config_path.to_owned(),
        config_loaded: false,
        local: Vec::new(),
        online: Vec::new(),
    };
    let cfg = match Config::load_with(config_path, env) {
        Ok(c) => c,
        Err(e) => {
            out.local
                .push(finding(Level::Fail, "config", e.to_string()));
            return out;
        }
    };
    out.config_loaded = true;
    out.local = local(&cfg, env);
    if let Some(pg) = &cfg.ledger.postgres {
        out.local.push(database(&cfg, pg).await);
    }
    if online {
        out.online = self::online(&cfg).await;
    }
    out
}

/// The checks on this host of a loaded configuration.
fn local(cfg: &Config, env: &Environment) -> Vec<Finding> {
    let mut out = vec![finding(
        Level::Ok,
        "config",
        format!(
            "{} (merchant {}, {})",
            cfg.path.display(),
            cfg.api.client.merchant_no,
            cfg.api.client.base_url
        ),
    )];
    // The loader takes an inline secret from this variable too.
    let secret_from_env = env
        .overrides
        .iter()
        .any(|(name, _)| name == "COSIGNER_API__API_SECRET");
    out.extend(placeholders(cfg));
    out.extend(transport(cfg));
    out.extend(secret_files(cfg, secret_from_env));
    out.push(match Signer::load(&cfg.key.source) {
        Ok(s) => finding(
            Level::Ok,
            "key",
            format!(
                "{} ({}-bit RSA, alias {}, certificate matches; password from {})",
                cfg.key.source.pfx_file.display(),
                s.bits(),
                s.alias().unwrap_or("none"),
                cfg.key.password_origin
            ),
        ),
        Err(e) => finding(Level::Fail, "key", e.to_string()),
    });
    match crate::policy::load(&cfg.policy.file) {
        Ok(p) => {
            out.push(finding(
                Level::Ok,
                "policy",
                format!(
                    "{} ({} rules, default {}, sha256 {})",
                    cfg.policy.file.display(),
                    p.rules.len(),
                    p.default,
                    &p.sha256[..12]
                ),
            ));
            out.extend(
                p.warnings()
                    .into_iter()
                    .map(|w| finding(Level::Warn, "policy", w)),
            );
        }
        Err(e) => out.push(finding(Level::Fail, "policy", e.to_string())),
    }
    // A PostgreSQL ledger is checked on the runtime, after these (see `database`).
    let running = if cfg.ledger.postgres.is_some() {
        None
    } else {
        out.push(ledger_dir(&cfg.ledger.path));
        if let Some(f) = ledger_chain(cfg) {
            out.push(f);
        }
        crate::ledger::held_by(&cfg.ledger.path)
    };
    out.push(listen(cfg.http.listen, running.as_deref()));
    if let Some(w) = config::listen_warning(cfg.http.listen) {
        out.push(finding(Level::Warn, "http.listen", w));
    }
    out
}

/// An existing ledger opened read-only and its chain walked, as the daemon does at start: a
/// ledger it would refuse fails here too. `None` before the first start (no ledger yet).
fn ledger_chain(cfg: &Config) -> Option<Finding> {
    let path = &cfg.ledger.path;
    if !path.exists() {
        return None;
    }
    let verify = format!(
        "cosigner ledger verify --config {} shows where",
        cfg.path.display()
    );
    let report = match crate::ledger::SqliteLedger::open_read_only(path).and_then(|l| l.verify()) {
        Ok(r) => r,
        Err(e) => {
            return Some(finding(
                Level::Fail,
                "ledger",
                format!("{e}: the daemon would not start on it"),
            ));
        }
    };
    Some(match report.problems.first() {
        None => finding(
            Level::Ok,
            "ledger",
            format!(
                "{}: hash chain intact ({} records)",
                path.display(),
                report.records
            ),
        ),
        Some(problem) => finding(
            Level::Fail,
            "ledger",
            format!(
                "{}: the hash chain is broken ({problem}{}); the daemon refuses to start on it \
                 ({verify})",
                path.display(),
                match report.problems.len() - 1 {
                    0 => String::new(),
                    n => format!(", and {n} more"),
                }
            ),
        ),
    })
}

/// The PostgreSQL ledger as the daemon would find it at start: reachable with the configured
/// password, a schema this cosigner knows (or none yet: the daemon creates it), a chain that
/// verifies; and who last took the lead. Writes nothing.
async fn database(cfg: &Config, pg: &crate::config::PostgresLedger) -> Finding {
    let url = pg.target.describe();
    let inspection = match pg.target.inspect().await {
        Ok(i) => i,
        Err(e) => {
            return finding(
                Level::Fail,
                "ledger",
                format!("{url}: {e}: the daemon would not start on it"),
            );
        }
    };
    let Some(report) = inspection.report else {
        return finding(
            Level::Ok,
            "ledger",
            format!(
                "{url}: reachable, no cosigner schema yet (the first daemon to start creates it; \
                 this instance is {:?})",
                pg.name
            ),
        );
    };
    if let Some(problem) = report.problems.first() {
        return finding(
            Level::Fail,
            "ledger",
            format!(
                "{url}: the hash chain is broken ({problem}{}); the daemon refuses to start on it \
                 (cosigner ledger verify --config {} shows where)",
                match report.problems.len() - 1 {
                    0 => String::new(),
                    n => format!(", and {n} more"),
                },
                cfg.path.display()
            ),
        );
    }
    let leader = match inspection.leader {
        Some((epoch, Some(holder))) if epoch > 0 => {
            format!("{holder} took the lead last (epoch {epoch})")
        }
        _ => "no instance has led yet".to_string(),
    };
    finding(
        Level::Ok,
        "ledger",
        format!(
            "{url}: schema {}, hash chain intact ({} records); {leader}; this instance is {:?}",
            inspection.schema.unwrap_or(0),
            report.records,
            pg.name
        ),
    )
}

/// One authenticated call, and the server's clock from its answer against the clock the daemon
/// times its requests and counts its windows by: this host's, or in a pair the database's.
async fn online(cfg: &Config) -> Vec<Finding> {
    let (record_clock, whose) = match &cfg.ledger.postgres {
        None => (crate::clock::Clock::system(), "this host's"),
        Some(pg) => match pg.target.clock("cosigner check").await {
            Ok(c) => (c, "the database's"),
            Err(e) => {
                return vec![finding(
                    Level::Fail,
                    "online",
                    format!(
                        "cannot read the database's clock, by which a pair times its requests: {e}"
                    ),
                )];
            }
        },
    };
    let client = match Client::new(cfg.api.client.clone()) {
        Ok(c) => c.with_clock(record_clock.clone()),
        Err(e) => return vec![finding(Level::Fail, "online", e.to_string())],
    };
    let (page, reply) = match client.pending_with_reply(1, 1, usize::MAX).await {
        Ok(answer) => answer,
        Err(e) => {
            // An HTTP 401/403 carries its hint already (`ClientError`'s message): say it once.
            let hint = match &e {
                ClientError::Api { code: 401, .. } => {
                    " — credentials refused: check api.merchant_no, api.api_key and api.api_secret, \
                     and that the clock is right (a stale TimeStamp is refused too)"
                }
                ClientError::Api { code: 403, .. } => {
                    " — forbidden: is this host's public IP on the API key's allow-list?"
                }
                ClientError::Network { .. } => " — check api.base_url, DNS and outbound firewall",
                _ => "",
            };
            return vec![finding(Level::Fail, "online", format!("{e}{hint}"))];
        }
    };
    let authenticated = finding(
        Level::Ok,
        "online",
        format!(
            "authenticated to {} as {}; {} transaction(s) pending",
            cfg.api.client.base_url, cfg.api.client.merchant_no, page.total
        ),
    );
    let clock = match reply.server_date {
        Some(date) => clock(
            date,
            record_clock.now(),
            whose,
            cfg.api.client.max_clock_skew,
        ),
        None => finding(
            Level::Warn,
            "clock",
            "the server sent no Date header; skew not checked",
        ),
    };
    vec![authenticated, clock]
}

/// The server's clock (`server`, from its Date header) against `whose` clock (`now`), which the
/// daemon holds approvals on beyond `max_clock_skew` + 2 s.
fn clock(server: SystemTime, now: SystemTime, whose: &str, max_clock_skew: Duration) -> Finding {
    let (ahead, d) = match server.duration_since(now) {
        Ok(d) => (true, d),
        Err(e) => (false, e.duration()),
    };
    let msg = format!(
        "server clock is {}s {} {whose}",
        d.as_secs(),
        if ahead { "ahead of" } else { "behind" }
    );
    if d > max_clock_skew {
        finding(
            Level::Warn,
            "clock",
            format!(
                "{msg}: more than api.max_clock_skew ({}); the daemon holds every approval once \
                 it may be {} off; check NTP",
                humantime::format_duration(max_clock_skew),
                humantime::format_duration(crate::domain::clock_bound(max_clock_skew))
            ),
        )
    } else if d > CLOCK_WARN {
        finding(
            Level::Warn,
            "clock",
            format!("{msg}: requests may be refused as stale; check NTP"),
        )
    } else {
        finding(Level::Ok, "clock", msg)
    }
}

/// The example configuration's merchant number (config/cosigner.example.toml, systemd/).
const EXAMPLE_MERCHANT_NO: &str = "mer0000000000000001";

fn is_placeholder(value: &str) -> bool {
    // The example config's, and systemd/README.md's `printf '%s' 'YOUR-API-SECRET'`.
    value.contains("REPLACE-WITH") || value == "YOUR-API-SECRET"
}

/// Values still as the shipped examples have them.
#[must_use]
pub(crate) fn placeholders(cfg: &Config) -> Vec<Finding> {
    let c = &cfg.api.client;
    let mut out = Vec::new();
    if c.merchant_no == EXAMPLE_MERCHANT_NO {
        out.push(finding(
            Level::Fail,
            "api.merchant_no",
            format!(
                "{EXAMPLE_MERCHANT_NO} is the example's: set your merchant number (merchant \
                 console -> system settings)"
            ),
        ));
    }
    if is_placeholder(&c.api_key) {
        out.push(finding(
            Level::Fail,
            "api.api_key",
            "is still the example's placeholder: set the API key from the merchant console \
             (ApiKey)",
        ));
    }
    if is_placeholder(c.api_secret.expose_secret()) {
        out.push(finding(
            Level::Fail,
            "api.api_secret",
            "is still the example's placeholder: set the API secret shown with the API key \
             (in api.api_secret_file or a systemd credential named api_secret, rather than inline)",
        ));
    }
    out
}

/// The permission bits of `path`, when it can be read.
fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// Secret files others can read, and an inline secret in a config file others can read.
#[must_use]
pub(crate) fn secret_files(cfg: &Config, secret_from_env: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let files = [
        ("api secret", &cfg.api.secret_origin),
        ("key password", &cfg.key.password_origin),
    ];
    for (what, origin) in files {
        let (SecretOrigin::File(p) | SecretOrigin::Credential(p)) = origin else {
            continue;
        };
        match mode(p) {
            // The loader refuses such a file unless key.allow_insecure_permissions says so.
            Some(m) if m & 0o077 != 0 => out.push(finding(
                if cfg.key.source.allow_insecure_permissions {
                    Level::Warn
                } else {
                    Level::Fail
                },
                what,
                format!(
                    "{} is readable by group or others (mode {m:04o}): chmod 600 {}",
                    p.display(),
                    p.display()
                ),
            )),
            _ => out.push(finding(Level::Ok, what, format!("from {origin}"))),
        }
    }
    if cfg.api.secret_origin == SecretOrigin::Inline {
        if secret_from_env {
            out.push(finding(
                Level::Ok,
                "api secret",
                "inline, from the environment",
            ));
        } else {
            match mode(&cfg.path) {
                Some(m) if m & 0o007 != 0 => out.push(finding(
                    Level::Fail,
                    "api secret",
                    format!(
                        "written inline in {}, which others can read (mode {m:04o}): chmod 600 \
                         {} (or 640 with the service's group), or move the secret to \
                         api.api_secret_file or a systemd credential",
                        cfg.path.display(),
                        cfg.path.display()
                    ),
                )),
                _ => out.push(finding(
                    Level::Ok,
                    "api secret",
                    format!("inline in {} (not readable by others)", cfg.path.display()),
                )),
            }
        }
    }
    out
}

/// Plain `http://` to anything but this host.
#[must_use]
pub(crate) fn transport(cfg: &Config) -> Option<Finding> {
    let url = &cfg.api.client.base_url;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        finding(
            Level::Fail,
            "api.base_url",
            format!(
                "{url} is plain http:// to a remote host: requests and their signatures would \
                 travel unencrypted; use https://"
            ),
        )
    })
}

/// Whether the daemon could bind `http.listen` now. `running_pid` is the pid holding the ledger
/// (a daemon already running, which holds the address itself).
#[must_use]
pub(crate) fn listen(addr: SocketAddr, running_pid: Option<&str>) -> Finding {
    if addr.port() == 0 {
        return finding(Level::Ok, "http.listen", format!("{addr} (any free port)"));
    }
    match std::net::TcpListener::bind(addr) {
        Ok(_) => finding(Level::Ok, "http.listen", format!("{addr} (free)")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match running_pid {
            Some(pid) => finding(
                Level::Warn,
                "http.listen",
                format!(
                    "{addr} is in use, by the running cosigner (pid {}) that holds the ledger; \
                     a second daemon could not start",
                    if pid.is_empty() { "?" } else { pid }
                ),
            ),
            None => finding(
                Level::Fail,
                "http.listen",
                format!(
                    "{addr} is already in use by another process (see `ss -ltnp 'sport = :{}'`): \
                     stop it, or choose another http.listen",
                    addr.port()
                ),
            ),
        },
        Err(e) => finding(
            Level::Fail,
            "http.listen",
            format!(
                "cannot listen on {addr}: {e}{}",
                if addr.port() < 1024 {
                    " (ports below 1024 need privileges the unit does not grant)"
                } else if !is_local(addr.ip()) {
                    " (is this address on one of this host's interfaces?)"
                } else {
                    ""
                }
            ),
        ),
    }
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// Whether the ledger's directory exists and can be written. A missing `/var/lib/NAME` is what
/// systemd's `StateDirectory=NAME` creates at start: a warning with the command that makes it
/// now; any other missing directory will fail.
#[must_use]
pub(crate) fn ledger_dir(path: &Path) -> Finding {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let probe = dir.join(format!(".cosigner-check-{}", std::process::id()));
            match std::fs::File::create(&probe) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    finding(
                        Level::Ok,
                        "ledger",
                        format!("{} (directory writable)", path.display()),
                    )
                }
                Err(e) => finding(
                    Level::Fail,
                    "ledger",
                    format!(
                        "cannot write in {}: {e}: give the service user the directory \
                         (chown) or set ledger.path",
                        dir.display()
                    ),
                ),
            }
        }
        Ok(_) => finding(
            Level::Fail,
            "ledger",
            format!("{} is not a directory", dir.display()),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let state_dir = dir
                .parent()
                .filter(|p| *p == Path::new("/var/lib"))
                .and(dir.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            match state_dir {
                Some(name) => finding(
                    Level::Warn,
                    "ledger",
                    format!(
                        "directory {} does not exist yet: the unit's StateDirectory={name} \
                         creates it at start; to create it now (and run cosigner outside \
                         systemd): sudo install -d -o cosigner -g cosigner -m 0700 {}",
                        dir.display(),
                        dir.display()
                    ),
                ),
                None => finding(
                    Level::Fail,
                    "ledger",
                    format!(
                        "directory {} does not exist: create it (install -d -m 0700 {}, owned by \
                         the user the daemon runs as) or set ledger.path",
                        dir.display(),
                        dir.display()
                    ),
                ),
            }
        }
        Err(e) => finding(
            Level::Fail,
            "ledger",
            format!("directory {}: {e}", dir.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_clock_more_than_ten_seconds_off_either_way_is_a_warning() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let skew = Duration::from_secs(30);
        let f = clock(now + Duration::from_secs(10), now, "this host's", skew);
        assert_eq!(
            (f.level, f.detail.as_str()),
            (Level::Ok, "server clock is 10s ahead of this host's")
        );
        let f = clock(now - Duration::from_secs(11), now, "this host's", skew);
        assert_eq!(f.level, Level::Warn, "{f:?}");
        assert!(
            f.detail
                .starts_with("server clock is 11s behind this host's: requests may be refused"),
            "{f:?}"
        );
    }

    #[test]
    fn a_server_clock_beyond_the_allowed_skew_of_the_clock_the_daemon_uses_says_approvals_are_held()
    {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let f = clock(
            now + Duration::from_secs(3),
            now,
            "the database's",
            Duration::from_secs(2),
        );
        assert_eq!(f.level, Level::Warn, "{f:?}");
        assert_eq!(
            f.detail,
            "server clock is 3s ahead of the database's: more than api.max_clock_skew (2s); the \
             daemon holds every approval once it may be 4s off; check NTP"
        );
    }

    #[test]
    fn a_missing_state_directory_is_a_warning_with_the_command_and_others_fail() {
        let f = ledger_dir(Path::new("/var/lib/cosigner-never-made-x1/ledger.db"));
        assert_eq!(f.level, Level::Warn, "{f:?}");
        assert!(
            f.detail.contains("StateDirectory=cosigner-never-made-x1")
                && f.detail.contains(
                    "sudo install -d -o cosigner -g cosigner -m 0700 /var/lib/cosigner-never-made-x1"
                ),
            "{f:?}"
        );
        let d = tempfile::tempdir().unwrap();
        let f = ledger_dir(&d.path().join("nope/ledger.db"));
        assert_eq!(f.level, Level::Fail, "{f:?}");
        assert!(f.detail.contains("install -d -m 0700"), "{f:?}");
    }
}
