//! Collection: sweeps main coins (`isMain` 1) and tokens (`isMain` 0) on schedule, each result
//! recorded in the ledger and counted.

use std::sync::Arc;

use serde::Serialize;
use tracing::{info, instrument, warn};

use crate::client::Client;
use crate::domain::collect_text;
use crate::ledger::LedgerHandle;
use crate::metrics::Metrics;
use crate::signer::{Signer, SignerError};

/// One sweep kind, with its signed `data` (deterministic, so computed once).
#[derive(Debug, Clone)]
struct Kind {
    is_main: bool,
    data: String,
}

impl Kind {
    fn label(&self) -> &'static str {
        if self.is_main { "main" } else { "tokens" }
    }
}

/// What one collection run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct CollectOutcome {
    /// Kinds the server accepted (`main`, `tokens`).
    pub(crate) ok: Vec<&'static str>,
    /// Kinds that failed, with the error.
    pub(crate) failed: Vec<(&'static str, String)>,
}

/// Runs collections.
pub(crate) struct Collector {
    client: Arc<Client>,
    ledger: LedgerHandle,
    metrics: Arc<Metrics>,
    kinds: Vec<Kind>,
    /// In a pair: the lead, asked before every sweep.
    lead: Option<crate::leader::Lead>,
}

impl Collector {
    /// A collector for the kinds enabled (`main`, `tokens`); signs their texts once.
    pub(crate) fn new(
        client: Arc<Client>,
        signer: &Signer,
        ledger: LedgerHandle,
        metrics: Arc<Metrics>,
        main: bool,
        tokens: bool,
    ) -> Result<Self, SignerError> {
        let mut kinds = Vec::new();
        for (enabled, is_main) in [(main, true), (tokens, false)] {
            if enabled {
                kinds.push(Kind {
                    is_main,
                    data: signer.sign(&collect_text(is_main))?,
                });
            }
        }
        Ok(Self {
            client,
            ledger,
            metrics,
            kinds,
            lead: None,
        })
    }

    /// In a pair: sweep only while `lead` says this instance leads.
    #[must_use]
    pub(crate) fn with_lead(mut self, lead: Option<crate::leader::Lead>) -> Self {
        self.lead = lead;
        self
    }

    /// Calls collect once per enabled kind.
    #[instrument(skip_all, name = "collect")]
    pub(crate) async fn collect_once(&self) -> CollectOutcome {
        let mut out = CollectOutcome::default();
        for kind in &self.kinds {
            let label = kind.label();
            if let Some(lead) = &self.lead
                && let Err(e) = lead.current()
            {
                info!(kind = label, reason = %e, "not leading: no collection");
                break;
            }
            let result = self.client.collect(kind.is_main, &kind.data).await;
            let message = result.as_ref().err().map(|e| e.to_string());
            let outcome = if result.is_ok() { "ok" } else { "error" };
            self.metrics
                .collect_runs
                .with_label_values(&[label, outcome])
                .inc();
            self.metrics
                .submissions
                .with_label_values(&["collect", outcome])
                .inc();
            let recorded = self
                .ledger
                .record_collect(kind.is_main, result.is_ok(), message.clone())
                .await;
            if let Err(e) = recorded {
                self.metrics.ledger_write_failures.inc();
                warn!(kind = label, error = %e, "cannot record the collection result");
            }
            match message {
                None => {
                    info!(kind = label, "collection accepted");
                    out.ok.push(label);
                }
                Some(m) => {
                    warn!(kind = label, error = %m, "collection failed");
                    out.failed.push((label, m));
                }
            }
        }
        if out.failed.is_empty() && !out.ok.is_empty() {
            self.metrics
                .last_collect
                .set(self.ledger.clock().now_ms() as f64 / 1000.0);
        }
        out
    }
}
