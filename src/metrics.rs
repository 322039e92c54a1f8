//! Prometheus metrics: what the daemon did, how long it took, and how close each rule is to its
//! window limit. No label takes unbounded values (no transaction ids, no addresses). Takes
//! numbers and labels only: it depends on no other module of the crate.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

/// How a pending cycle ended: the `outcome` label of `cosigner_poll_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// It ran to the end.
    Ok,
    /// It passed `poll.cycle_timeout` and was dropped where it stood.
    Timeout,
    /// It stopped on an error.
    Error,
}

impl PollOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

/// What a signed request asked: the `endpoint` label of `cosigner_submissions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submission {
    /// An approval or a rejection of a withdrawal.
    Approve,
    /// A collection (sweep).
    Collect,
}

/// What a collection swept: the `kind` label of `cosigner_collect_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectKind {
    /// Main coins (`isMain` 1).
    Main,
    /// Tokens (`isMain` 0).
    Tokens,
}

impl CollectKind {
    /// The label, which is also the name logs give the kind.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Tokens => "tokens",
        }
    }
}

/// The kill-switch modes, as the `mode` label of `cosigner_mode`; every one is exported (1 for
/// the mode in force, 0 for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeLabel {
    /// Decisions are sent.
    Normal,
    /// Nothing is sent.
    Hold,
    /// Only rejections are sent.
    Reject,
}

impl ModeLabel {
    const ALL: [Self; 3] = [Self::Normal, Self::Hold, Self::Reject];

    fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Hold => "hold",
            Self::Reject => "reject",
        }
    }
}

/// Whether the request or reload was accepted: the `outcome` label of the submission and
/// reload counters (`ok`, or `error` for a request and `invalid` for a policy).
fn ok_label(ok: bool, failed: &'static str) -> &'static str {
    if ok { "ok" } else { failed }
}

/// The daemon's metrics and the registry they are exposed from.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `cosigner_decisions_total{action,rule}`.
    pub decisions: IntCounterVec,
    /// `cosigner_submissions_total{endpoint,outcome}`.
    submissions: IntCounterVec,
    /// `cosigner_api_request_duration_seconds{endpoint}`.
    pub api_duration: HistogramVec,
    /// `cosigner_pending_transactions`.
    pub(crate) pending: IntGauge,
    /// `cosigner_held_transactions`.
    pub(crate) held: IntGauge,
    /// `cosigner_poll_duration_seconds`.
    pub(crate) poll_duration: Histogram,
    /// `cosigner_poll_runs_total{outcome}`.
    poll_runs: IntCounterVec,
    /// `cosigner_last_successful_poll_timestamp_seconds`.
    pub(crate) last_poll: Gauge,
    /// `cosigner_last_successful_collect_timestamp_seconds`.
    pub(crate) last_collect: Gauge,
    /// `cosigner_collect_runs_total{kind,outcome}`.
    collect_runs: IntCounterVec,
    /// `cosigner_window_used_ratio{rule}`.
    pub window_used: GaugeVec,
    /// `cosigner_ledger_write_failures_total`.
    pub(crate) ledger_write_failures: IntCounter,
    /// `cosigner_malformed_items_total`.
    pub(crate) malformed_items: IntCounter,
    /// `cosigner_id_reuse_total`.
    pub(crate) id_reuse: IntCounter,
    /// `cosigner_policy_info{sha256}`.
    pub(crate) policy_info: GaugeVec,
    /// `cosigner_build_info{version}`.
    pub(crate) build_info: GaugeVec,
    /// `cosigner_mode{mode}`: 1 for the kill-switch mode in force.
    pub(crate) mode: GaugeVec,
    /// `cosigner_policy_reloads_total{outcome}`.
    policy_reloads: IntCounterVec,
    /// `cosigner_oldest_hold_seconds`.
    pub(crate) oldest_hold: Gauge,
    /// `cosigner_operator_requests_total{route,status}`.
    pub(crate) operator_requests: IntCounterVec,
    /// `cosigner_leader`: 1 while this instance decides (a single instance always), 0 on a
    /// standby.
    pub(crate) leader: IntGauge,
    /// `cosigner_leader_epoch`: the epoch of the lead this instance holds (0 when none).
    pub(crate) leader_epoch: IntGauge,
    /// `cosigner_fenced_total`: writes the database refused because a newer leader exists.
    pub(crate) fenced: IntCounter,
    /// `cosigner_listings_refused_total`: listings with more items than `poll.max_items`.
    pub(crate) listings_refused: IntCounter,
    /// `cosigner_ledger_verified_ratio`: how far the background walk of the whole chain got.
    pub(crate) ledger_verified: Gauge,
    /// `cosigner_ledger_chain_broken`: 1 once a walk of the chain found it broken.
    pub(crate) chain_broken: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

type R<T> = Result<T, prometheus::Error>;

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> R<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> R<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let api_duration = HistogramVec::new(
            HistogramOpts::new(
                "cosigner_api_request_duration_seconds",
                "Duration of 1BitPay API calls, retries included",
            )
            .buckets(buckets.clone()),
            &["endpoint"],
        )?;
        r.register(Box::new(api_duration.clone()))?;
        let poll_duration = Histogram::with_opts(
            HistogramOpts::new(
                "cosigner_poll_duration_seconds",
                "Duration of pending cycles",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
        )?;
        r.register(Box::new(poll_duration.clone()))?;
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let int_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let m = Self {
            decisions: counter_vec(
                &r,
                "cosigner_decisions_total",
                "Decisions recorded, by action and deciding rule",
                &["action", "rule"],
            )?,
            submissions: counter_vec(
                &r,
                "cosigner_submissions_total",
                "Signed requests sent, by endpoint and outcome",
                &["endpoint", "outcome"],
            )?,
            api_duration,
            pending: int_gauge(
                "cosigner_pending_transactions",
                "Transactions in the pending list at the last cycle",
            )?,
            held: int_gauge(
                "cosigner_held_transactions",
                "Transactions held for a person at the last cycle",
            )?,
            poll_duration,
            poll_runs: counter_vec(
                &r,
                "cosigner_poll_runs_total",
                "Pending cycles, by outcome",
                &["outcome"],
            )?,
            last_poll: gauge(
                "cosigner_last_successful_poll_timestamp_seconds",
                "Unix time of the last cycle that ran to the end",
            )?,
            last_collect: gauge(
                "cosigner_last_successful_collect_timestamp_seconds",
                "Unix time of the last collection the server accepted",
            )?,
            collect_runs: counter_vec(
                &r,
                "cosigner_collect_runs_total",
                "Collections, by kind (main, tokens) and outcome",
                &["kind", "outcome"],
            )?,
            window_used: gauge_vec(
                &r,
                "cosigner_window_used_ratio",
                "Share of a rule's window limit used (the larger of total and count)",
                &["rule"],
            )?,
            ledger_write_failures: int_counter(
                "cosigner_ledger_write_failures_total",
                "Ledger writes that failed (nothing was sent)",
            )?,
            malformed_items: int_counter(
                "cosigner_malformed_items_total",
                "Pending items without a usable id",
            )?,
            id_reuse: int_counter(
                "cosigner_id_reuse_total",
                "Ids already approved or rejected that were listed again with other fields (held)",
            )?,
            policy_info: gauge_vec(
                &r,
                "cosigner_policy_info",
                "The policy in force (value 1), by its SHA-256",
                &["sha256"],
            )?,
            build_info: gauge_vec(
                &r,
                "cosigner_build_info",
                "The running build (value 1)",
                &["version"],
            )?,
            mode: gauge_vec(
                &r,
                "cosigner_mode",
                "The kill-switch mode in force (value 1): normal, hold or reject",
                &["mode"],
            )?,
            policy_reloads: counter_vec(
                &r,
                "cosigner_policy_reloads_total",
                "Policy reloads, by outcome (ok, invalid)",
                &["outcome"],
            )?,
            oldest_hold: gauge(
                "cosigner_oldest_hold_seconds",
                "How long the longest-held pending transaction has been held",
            )?,
            operator_requests: counter_vec(
                &r,
                "cosigner_operator_requests_total",
                "Operator API requests, by route and status code",
                &["route", "status"],
            )?,
            leader: int_gauge(
                "cosigner_leader",
                "1 while this instance leads (decides and sends), 0 on a standby",
            )?,
            leader_epoch: int_gauge(
                "cosigner_leader_epoch",
                "The leader epoch this instance holds (0 when it does not lead)",
            )?,
            fenced: int_counter(
                "cosigner_fenced_total",
                "Ledger writes the database refused because a newer leader exists (nothing sent)",
            )?,
            listings_refused: int_counter(
                "cosigner_listings_refused_total",
                "Pending listings with more items than poll.max_items (nothing decided)",
            )?,
            ledger_verified: gauge(
                "cosigner_ledger_verified_ratio",
                "Share of the ledger's hash chain the background walk has verified since start",
            )?,
            chain_broken: int_gauge(
                "cosigner_ledger_chain_broken",
                "1 once a walk of the ledger's hash chain found it broken (the daemon then holds)",
            )?,
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        Ok(m)
    }

    /// Marks the policy with digest `sha256` as the one in force, its `limited_rules` (the
    /// rules with a window limit) at zero use.
    pub(crate) fn set_policy<'a>(
        &self,
        sha256: &str,
        limited_rules: impl IntoIterator<Item = &'a str>,
    ) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[sha256]).set(1.0);
        self.window_used.reset();
        for rule in limited_rules {
            self.window_used.with_label_values(&[rule]).set(0.0);
        }
    }

    /// Marks `mode` as the kill-switch mode in force.
    pub fn set_mode(&self, mode: ModeLabel) {
        for m in ModeLabel::ALL {
            self.mode
                .with_label_values(&[m.label()])
                .set(if m == mode { 1.0 } else { 0.0 });
        }
    }

    /// Counts one pending cycle that ended as `outcome`.
    pub fn count_poll(&self, outcome: PollOutcome) {
        self.poll_runs.with_label_values(&[outcome.label()]).inc();
    }

    /// Counts one signed request the server accepted (`ok`) or not.
    pub fn count_submission(&self, what: Submission, ok: bool) {
        let endpoint = match what {
            Submission::Approve => "approve",
            Submission::Collect => "collect",
        };
        self.submissions
            .with_label_values(&[endpoint, ok_label(ok, "error")])
            .inc();
    }

    /// Counts one collection of `kind` the server accepted (`ok`) or not.
    pub fn count_collect(&self, kind: CollectKind, ok: bool) {
        self.collect_runs
            .with_label_values(&[kind.label(), ok_label(ok, "error")])
            .inc();
        self.count_submission(Submission::Collect, ok);
    }

    /// Counts one policy reload, put in force (`ok`) or refused as invalid.
    pub(crate) fn count_reload(&self, ok: bool) {
        self.policy_reloads
            .with_label_values(&[ok_label(ok, "invalid")])
            .inc();
    }

    /// Updates `cosigner_window_used_ratio`: each rule's share of its window limit used, as a
    /// cycle ended.
    pub(crate) fn set_window_usage<'a>(&self, ratios: impl IntoIterator<Item = (&'a str, f64)>) {
        for (rule, ratio) in ratios {
            self.window_used.with_label_values(&[rule]).set(ratio);
        }
    }

    /// Observes one API call.
    pub(crate) fn observe_api(&self, endpoint: &str, took: Duration) {
        self.api_duration
            .with_label_values(&[endpoint])
            .observe(took.as_secs_f64());
    }

    /// The registry in Prometheus text format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
