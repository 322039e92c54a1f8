//! The long-running service: builds the engine from the configuration, runs the pending cycle
//! and the collection on their intervals (never overlapping themselves), serves metrics and
//! health, and shuts down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::client::{Client, ClientError};
use crate::clock::Clock;
use crate::collector::Collector;
use crate::config::Config;
use crate::cycle::{DecisionEvent, Engine, PollSettings};
use crate::health::Health;
use crate::http::{self, HttpState};
use crate::leader::{Lead, Role};
use crate::ledger::{LedgerError, LedgerHandle, SqliteLedger};
use crate::listener;
use crate::metrics::Metrics;
use crate::operator::{self, Callbacks, KeyStore, OperatorState};
use crate::policy::{self, PolicyError};
use crate::signer::{Signer, SignerError};
use crate::systemd;

mod pair;
mod watch;

use pair::{Work, follow_lead, open_pair, take_over};
use watch::{PAUSE_RETRY, follow_pause_signal, watch_chain};

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The key shard cannot be used.
    #[error(transparent)]
    Key(#[from] SignerError),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The ledger cannot be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ledger's hash chain does not verify: the daemon does not add to a chain whose
    /// history is in doubt.
    #[error(
        "ledger {location} fails its chain check ({problem}{}); `cosigner ledger verify --config \
         {config}` shows every break; the daemon does not run on a broken ledger",
        if *.more > 0 { format!(", and {} more", .more) } else { String::new() }
    )]
    BrokenLedger {
        /// The file, or the database's URL without its password.
        location: String,
        /// The first problem found.
        problem: String,
        /// How many more problems there are.
        more: usize,
        /// Which configuration file.
        config: std::path::PathBuf,
    },
    /// The HTTP client cannot be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The metrics registry cannot be built.
    #[error("metrics: {0}")]
    Metrics(prometheus::Error),
    /// `run --once` in a pair could not take the lead.
    #[error(
        "this instance did not get the lead of the PostgreSQL ledger within 15 s ({}); only the \
         leader decides",
        .0.as_deref().map_or_else(|| "no leader is confirmed".to_string(), |l| format!("{l} leads"))
    )]
    NotLeading(Option<String>),
    /// The listener address cannot be bound.
    #[error("cannot listen on {addr} (http.listen): {error}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The configured control socket cannot be served.
    #[error("cannot serve the control socket (control.socket): {0}")]
    ControlSocket(crate::listener::SocketError),
}

impl DaemonError {
    /// True when the configuration (or a file it names) is at fault: exit code 2.
    #[must_use]
    pub(crate) fn is_configuration(&self) -> bool {
        matches!(
            self,
            DaemonError::Key(_)
                | DaemonError::Policy(_)
                | DaemonError::ControlSocket(_)
                | DaemonError::Ledger(
                    LedgerError::Open { .. }
                        | LedgerError::Create { .. }
                        | LedgerError::Schema { .. }
                )
        )
    }
}

/// Options of one run.
#[derive(Debug, Default)]
pub struct Options {
    /// Record decisions as dry runs and send nothing.
    pub dry_run: bool,
    /// Receives every recorded decision.
    pub events: Option<mpsc::UnboundedSender<DecisionEvent>>,
    /// Notified to reload the policy (SIGHUP).
    pub reload: Option<Arc<Notify>>,
    /// How many SIGUSR1 arrived since `main` started: each one puts hold-all in force.
    pub pause_signal: Option<tokio::sync::watch::Receiver<u64>>,
}

/// The pieces a run is made of, built and checked before anything runs.
pub struct Parts {
    /// The pending cycle.
    pub(crate) engine: Arc<Engine>,
    /// The collection, when enabled.
    pub(crate) collector: Option<Arc<Collector>>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The ledger both use.
    pub(crate) ledger: LedgerHandle,
    /// Operator API keys (none: the API refuses every call), re-read on reload.
    pub(crate) api_keys: Arc<KeyStore>,
    /// Operator API request budget per second.
    pub(crate) operator_rate: u32,
    /// `/metrics` needs an operator API key.
    pub(crate) metrics_auth: bool,
    /// The order callback, when enabled.
    pub(crate) callbacks: Option<Callbacks>,
    /// Reload requests.
    pub(crate) reload: Arc<Notify>,
    /// In a pair sharing a PostgreSQL ledger: the lead, which decides when cycles run.
    pub(crate) lead: Option<Lead>,
    /// The configuration file, for the commands messages name.
    pub(crate) config_path: std::path::PathBuf,
    /// In a pair: the ledger's schema is newer than this cosigner's, so this member stands by
    /// for good, writing nothing (its chain is not this cosigner's to judge).
    pub(crate) schema_ahead: bool,
    /// The listeners' connection cap and header-read timeout.
    pub(crate) limits: crate::listener::Limits,
    /// The control socket, once bound, and its path (removed at exit).
    pub(crate) control_socket: Option<(tokio::net::UnixListener, std::path::PathBuf)>,
    /// SIGUSR1's count: hold-all.
    pub(crate) pause_signal: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Parts {
    /// The pending cycle's engine (the policy and mode in force, the ledger).
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Parts {
    /// In a pair, waits up to `within` for this instance to take the lead and takes over (the
    /// ledger's epoch, mode and policy record) as the daemon does; a single instance is ready
    /// at once. For `run --once`.
    pub(crate) async fn lead_once(&self, within: Duration) -> Result<(), DaemonError> {
        let Some(lead) = &self.lead else {
            return Ok(());
        };
        let mut roles = lead.subscribe();
        let waited = tokio::time::timeout(within, async {
            loop {
                if let Role::Leader { epoch } = *roles.borrow_and_update() {
                    return Some(epoch);
                }
                if roles.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(epoch)) => Ok(take_over(&self.engine, lead, epoch).await?),
            _ => Err(DaemonError::NotLeading(lead.leader_name())),
        }
    }
}

/// Loads the key, the policy and the ledger, and builds the engine and the collector; restores
/// the recorded mode and records the policy in force.
pub async fn build(
    cfg: &Config,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<Parts, DaemonError> {
    // The HTTP client loads the system's CA certificates: the slowest step of start-up with
    // OpenSSL 3. It is built on one blocking thread while the key, the policy and the ledger
    // load (and the ledger's chain is checked) on another: file reads, parsing and hashing never
    // run on the runtime's threads, where they would hold up the lead's heartbeat. Errors keep
    // their order: key, policy, ledger, then client.
    let clock = Clock::system();
    let client = tokio::task::spawn_blocking({
        let settings = cfg.api.client.clone();
        move || Client::new(settings)
    });
    let loaded = tokio::task::spawn_blocking({
        let (cfg, clock) = (cfg.clone(), clock.clone());
        move || load_state(&cfg, &clock)
    });
    let (loaded, client) = tokio::join!(loaded, client);
    let (signer, policy, ledger) = loaded.map_err(|e| {
        DaemonError::Ledger(LedgerError::Interrupted(format!(
            "the thread loading the key, the policy and the ledger stopped: {e}"
        )))
    })??;
    let client = client.unwrap_or_else(|_| {
        Err(ClientError::Request {
            endpoint: "client",
            detail: "the thread building the HTTP client stopped".into(),
        })
    })?;
    let metrics = Arc::new(Metrics::new().map_err(DaemonError::Metrics)?);
    let (ledger, lead, schema_ahead) = match (ledger, &cfg.ledger.postgres) {
        (Some(sqlite), _) => {
            // A single instance always decides.
            metrics.leader.set(1);
            (LedgerHandle::sqlite(sqlite), None, false)
        }
        (None, Some(pg)) => {
            let (ledger, lead, ahead) = open_pair(cfg, pg, &policy, &metrics).await?;
            (ledger, Some(lead), ahead)
        }
        (None, None) => unreachable_ledger()?,
    };
    // In a pair, no attempt of any call (listing, collection, retry) leaves unless this instance
    // leads now: a leader resumed after a pause must not act for the one that replaced it.
    let permit = lead.clone().map(|lead| -> crate::client::AttemptPermit {
        Arc::new(move || {
            lead.current()
                .map(|_| ())
                .map_err(|e| crate::client::Refusal::from(format!("not leading: {e}")))
        })
    });
    // The ledger's clock: the system's on one host, the database's in a pair.
    let client = Arc::new(
        client
            .with_metrics(metrics.clone())
            .with_clock(ledger.clock().clone())
            .with_attempt_permit(permit),
    );
    let engine = Engine::builder(
        client.clone(),
        signer.clone(),
        ledger.clone(),
        policy,
        metrics.clone(),
    )
    .settings(PollSettings {
        page_size: cfg.poll.page_size,
        max_in_flight: cfg.api.max_in_flight,
        dry_run: opts.dry_run || cfg.policy.dry_run,
        max_items: cfg.poll.max_items,
        max_item_bytes: cfg.poll.max_item_bytes,
        cycle_timeout: cfg.poll.cycle_timeout,
    })
    .shutdown(shutdown)
    .events(opts.events)
    .lead(lead.clone())
    .pause_file(Some(cfg.control.pause_file.clone()))
    .build();
    let collector = if cfg.collect.enabled {
        // It signs its texts as it is made: RSA operations, off the runtime.
        let (ledger, metrics, control) =
            (ledger.clone(), metrics.clone(), engine.control().clone());
        let kinds = (cfg.collect.main, cfg.collect.tokens);
        let made = tokio::task::spawn_blocking(move || {
            Collector::new(client, &signer, ledger, metrics, control, kinds)
        })
        .await
        .unwrap_or(Err(SignerError::Interrupted))?;
        Some(Arc::new(made.with_lead(lead.clone())))
    } else {
        None
    };
    if let Some(lead) = &lead {
        // The leader holds a pause another member recorded from its next confirmation on.
        // Weak: the control reaches the lead through the client's attempt permit, and a strong
        // reference back would keep a dropped daemon's lead (and its lock) alive.
        let control = Arc::downgrade(engine.control());
        lead.on_recorded_mode(Box::new(move |latest| {
            if let Some(control) = control.upgrade() {
                control.adopt_recorded(latest);
            }
        }));
    }
    let reload = opts.reload.unwrap_or_default();
    if !schema_ahead {
        // A member that never leads reads no mode: a takeover reads it.
        engine.control().restore_mode().await?;
    }
    engine.control().note_policy_loaded("start").await?;
    Ok(Parts {
        engine: Arc::new(engine),
        collector,
        metrics,
        ledger,
        api_keys: Arc::new(KeyStore::new(
            cfg.http.api_keys_file.clone(),
            cfg.http.api_keys.clone(),
        )),
        operator_rate: cfg.http.max_requests_per_second,
        metrics_auth: cfg.http.metrics_auth,
        callbacks: cfg.http.callbacks.then(|| Callbacks {
            api_secret: cfg.api.client.api_secret.clone(),
            sign_order: cfg.api.client.sign_order,
        }),
        reload,
        lead,
        config_path: cfg.path.clone(),
        schema_ahead,
        limits: cfg.http.limits,
        control_socket: None,
        pause_signal: opts.pause_signal,
    })
}

/// `build` with neither ledger: cannot happen (the configuration names one), and is an error
/// rather than a panic if it does.
fn unreachable_ledger<T>() -> Result<T, DaemonError> {
    Err(DaemonError::Ledger(LedgerError::Interrupted(
        "the configuration names no ledger".into(),
    )))
}

/// The key, the policy, and the SQLite ledger (`None` for a PostgreSQL one).
type Loaded = (Arc<Signer>, Arc<policy::Policy>, Option<SqliteLedger>);

/// The key, the policy in force and the verified ledger: everything `build` reads from disk.
/// The SQLite ledger is `None` when the configuration names a PostgreSQL one (opened by
/// `build`, on the runtime).
fn load_state(cfg: &Config, clock: &Clock) -> Result<Loaded, DaemonError> {
    let signer = Arc::new(Signer::load(&cfg.key.source)?);
    let policy = Arc::new(policy::load(&cfg.policy.file)?);
    for w in policy.warnings() {
        warn!(policy = %cfg.policy.file.display(), "{w}");
    }
    if cfg.ledger.postgres.is_some() {
        return Ok((signer, policy, None));
    }
    let mut ledger = SqliteLedger::open(&cfg.ledger.path)?.with_clock(clock.clone());
    // What the first decisions depend on, and what was added since the last verified point;
    // the rest of the chain is walked in the background once the daemon runs.
    let report = ledger.verify_at_start(
        &policy,
        clock.now_ms(),
        policy::window_slack(cfg.api.client.max_clock_skew),
    )?;
    if let Some(problem) = report.problems.first() {
        return Err(DaemonError::BrokenLedger {
            location: cfg.ledger.path.display().to_string(),
            problem: problem.clone(),
            more: report.problems.len() - 1,
            config: cfg.path.clone(),
        });
    }
    Ok((signer, policy, Some(ledger)))
}

/// Timings of a run.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Between pending cycles.
    pub poll_interval: Duration,
    /// Up to this much random delay before each cycle.
    pub poll_jitter: Duration,
    /// Between collections.
    pub collect_interval: Duration,
    /// Up to this much random delay before each collection.
    pub collect_jitter: Duration,
    /// How long in-flight work may take to finish after a stop signal.
    pub shutdown_timeout: Duration,
}

impl Timings {
    /// The timings of a configuration.
    #[must_use]
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            poll_interval: cfg.poll.interval,
            poll_jitter: cfg.poll.jitter,
            collect_interval: cfg.collect.interval,
            collect_jitter: cfg.collect.jitter,
            shutdown_timeout: cfg.poll.shutdown_timeout,
        }
    }
}

/// Runs `work` at start and then every `interval` (plus up to `jitter`), never overlapping
/// itself: a slow run delays the next instead of stacking. Returns once `shutdown` is cancelled
/// and the current run has finished.
pub async fn periodic<F, Fut>(
    interval: Duration,
    jitter: Duration,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !jitter.is_zero() {
            let delay = jitter.mul_f64(crate::random::unit_fraction());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        work().await;
    }
}

/// Builds everything from `cfg`, binds `http.listen`, and runs until `shutdown`.
pub(crate) async fn run(
    cfg: &Config,
    opts: Options,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<(), DaemonError> {
    if let Some(w) = crate::config::listen_warning(cfg.http.listen) {
        warn!("{w}");
    }
    let mut parts = build(cfg, opts, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: cfg.http.listen,
            error: source,
        })?;
    let runtime_dir = std::env::var_os("RUNTIME_DIRECTORY");
    if let Some(target) = cfg.control.socket_target(runtime_dir.as_deref()) {
        match crate::listener::bind_control_socket(&target.path) {
            Ok(l) => parts.control_socket = Some((l, target.path)),
            Err(e) if target.configured => return Err(DaemonError::ControlSocket(e)),
            // The default socket never stops the daemon: pause over HTTP and SIGUSR1 remain.
            Err(e) => {
                warn!(error = %e, "no control socket; pause through the operator API or SIGUSR1")
            }
        }
    }
    run_with(
        parts,
        listener,
        Timings::from_config(cfg),
        shutdown,
        hard_stop,
    )
    .await;
    Ok(())
}

/// Runs built `parts` on `listener` until `shutdown`; then lets in-flight work finish within
/// the deadline (or until `hard_stop`), and flushes the ledger.
pub async fn run_with(
    mut parts: Parts,
    listener: tokio::net::TcpListener,
    timings: Timings,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) {
    let addr = listener.local_addr().ok();
    // Readiness follows the schedule actually in use.
    let health = Arc::new(Health::new(
        timings.poll_interval,
        parts.ledger.clock().clone(),
    ));
    let operator_state = OperatorState {
        engine: parts.engine.clone(),
        ledger: parts.ledger.clone(),
        keys: parts.api_keys.clone(),
        limiter: OperatorState::limiter(parts.operator_rate),
        unauthenticated: OperatorState::limiter(parts.operator_rate),
        listen: addr,
        health: health.clone(),
        metrics: parts.metrics.clone(),
        callbacks: parts.callbacks.clone(),
        lead: parts.lead.clone(),
        by: "operator API",
    };
    let router = http::router(HttpState {
        metrics: parts.metrics.clone(),
        health: health.clone(),
        metrics_keys: parts.metrics_auth.then(|| parts.api_keys.clone()),
    })
    .merge(operator::router(operator_state.clone()));
    let http_task = tokio::spawn(listener::serve(
        "http.listen",
        listener,
        router,
        parts.limits,
        shutdown.clone(),
    ));
    let mut socket_path = None;
    if let Some((socket, path)) = parts.control_socket.take() {
        // Its own rate budgets, and no order callbacks: the socket is for the operator only.
        let router = operator::control_router(OperatorState {
            limiter: OperatorState::limiter(parts.operator_rate),
            unauthenticated: OperatorState::limiter(parts.operator_rate),
            callbacks: None,
            by: "control socket",
            ..operator_state
        });
        info!(socket = %path.display(), "control socket: pause, resume and status without a key");
        tokio::spawn(listener::serve(
            "control.socket",
            socket,
            router,
            parts.limits,
            shutdown.clone(),
        ));
        socket_path = Some(path);
    }
    if let Some(signal) = parts.pause_signal.take() {
        follow_pause_signal(signal, parts.engine.clone(), shutdown.clone()).await;
    }
    info!(
        listen = %addr.map_or_else(|| "unknown".to_string(), |a| a.to_string()),
        policy = %parts.engine.policy().sha256,
        poll_interval = %humantime::format_duration(timings.poll_interval),
        collect_interval = %humantime::format_duration(timings.collect_interval),
        dry_run = parts.engine.dry_run(),
        "cosigner running"
    );
    let tracker = TaskTracker::new();
    let work = Work {
        engine: parts.engine.clone(),
        collector: parts.collector.clone(),
        health: health.clone(),
        metrics: parts.metrics.clone(),
        timings: timings.clone(),
    };
    match parts.lead.clone() {
        None => work.spawn(&shutdown, &tracker),
        Some(lead) => {
            tracker.spawn(follow_lead(lead, work, shutdown.clone()));
        }
    }
    tracker.close();
    {
        let engine = parts.engine.clone();
        let keys = parts.api_keys.clone();
        let reload = parts.reload.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = reload.notified() => {
                        let _ = engine.control().reload_policy("SIGHUP").await;
                        let _ = keys.reload_off_runtime("SIGHUP").await;
                    }
                }
            }
        });
    }
    // A pause the ledger could not take is recorded as soon as it can be (on a standby too: the
    // database lets a pause record through whatever the epoch).
    {
        let control = parts.engine.control().clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PAUSE_RETRY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if control.unrecorded() && control.record_pause().await.is_ok() {
                    info!("the kill-switch mode in force is now recorded");
                }
            }
        });
    }
    if !parts.schema_ahead {
        tokio::spawn(watch_chain(
            parts.ledger.clone(),
            parts.engine.clone(),
            parts.metrics.clone(),
            parts.config_path.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(every) = systemd::watchdog_interval() {
        let health = health.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if health.scheduler_alive() {
                    let _ = systemd::notify("WATCHDOG=1");
                } else {
                    warn!("the scheduler shows no life; not feeding the systemd watchdog");
                }
            }
        });
    }
    match systemd::notify("READY=1") {
        Ok(true) => info!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot notify systemd"),
    }
    shutdown.cancelled().await;
    let _ = systemd::notify("STOPPING=1");
    info!(deadline = %humantime::format_duration(timings.shutdown_timeout), "stop requested: finishing in-flight work");
    tokio::select! {
        _ = tracker.wait() => info!("in-flight work finished"),
        _ = tokio::time::sleep(timings.shutdown_timeout) => {
            warn!("shutdown deadline passed; unfinished submissions are re-sent after the restart");
        }
        _ = hard_stop.cancelled() => warn!("second stop signal: exiting at once"),
    }
    http_task.abort();
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    if let Err(e) = parts.ledger.checkpoint().await {
        warn!(error = %e, "ledger checkpoint at exit failed; the WAL is replayed on the next open");
    }
    info!("stopped");
}
