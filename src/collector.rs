//! Collection: sweeps main coins (`isMain` 1) and tokens (`isMain` 0) on schedule, each result
//! recorded in the ledger and counted. A sweep moves funds, so it obeys the kill switch as an
//! approval does: none runs, and none of its attempts leaves, unless the mode is normal.

use std::sync::Arc;

use serde::Serialize;
use tracing::{info, instrument, warn};

use crate::client::{Client, Gate, Refusal};
use crate::control::Control;
use crate::domain::collect_text;
use crate::ledger::LedgerHandle;
use crate::metrics::{CollectKind, Metrics};
use crate::signer::{Signer, SignerError};

/// One sweep kind, with its signed `data` (deterministic, so computed once).
#[derive(Debug, Clone)]
struct Kind {
    is_main: bool,
    data: String,
}

impl Kind {
    fn metric(&self) -> CollectKind {
        if self.is_main {
            CollectKind::Main
        } else {
            CollectKind::Tokens
        }
    }

    fn label(&self) -> &'static str {
        self.metric().label()
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
    /// The kill-switch mode, asked before every sweep and every attempt of one.
    control: Arc<Control>,
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
        control: Arc<Control>,
        (main, tokens): (bool, bool),
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
            control,
            lead: None,
        })
    }

    /// In a pair: sweep only while `lead` says this instance leads.
    #[must_use]
    pub(crate) fn with_lead(mut self, lead: Option<crate::leader::Lead>) -> Self {
        self.lead = lead;
        self
    }

    /// Why no sweep may leave now (the kill switch, or this instance does not lead), if so.
    fn refusal(control: &Control, lead: Option<&crate::leader::Lead>) -> Result<(), Refusal> {
        let mode = control.mode();
        if mode != crate::control::Mode::Normal {
            return Err(format!("{}-all mode: collections wait", mode.as_str()).into());
        }
        if let Some(lead) = lead {
            lead.current()
                .map_err(|e| Refusal::from(format!("not leading: {e}")))?;
        }
        Ok(())
    }

    /// The gate every attempt of a sweep asks.
    fn gate(&self) -> Gate {
        let (control, lead) = (self.control.clone(), self.lead.clone());
        Gate::new(
            move || Self::refusal(&control, lead.as_ref()),
            self.control.subscribe(),
        )
    }

    /// Calls collect once per enabled kind, while the mode is normal (and, in a pair, this
    /// instance leads); a sweep stopped by the kill switch before it left is not recorded.
    #[instrument(skip_all, name = "collect")]
    pub(crate) async fn collect_once(&self) -> CollectOutcome {
        let mut out = CollectOutcome::default();
        for kind in &self.kinds {
            let label = kind.label();
            if let Err(why) = Self::refusal(&self.control, self.lead.as_ref()) {
                info!(kind = label, reason = %why, "no collection");
                break;
            }
            let result = self
                .client
                .collect_gated(kind.is_main, &kind.data, &mut self.gate())
                .await;
            if let Err(crate::client::ClientError::Stopped {
                attempts: 0,
                reason,
                ..
            }) = &result
            {
                info!(kind = label, reason = %reason, "collection stopped before it left");
                break;
            }
            let message = result.as_ref().err().map(|e| e.to_string());
            self.metrics.count_collect(kind.metric(), result.is_ok());
            let recorded = self
                .ledger
                .record_collect(kind.is_main, result.is_ok(), message.clone())
                .await;
            if let Err(e) = recorded {
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
