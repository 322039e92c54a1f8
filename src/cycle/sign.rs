//! Signing a page's decisions with the key shard, on the blocking pool across the cores.

use crate::domain::Action;
use crate::ledger::NewDecision;
use crate::policy::RULE_MALFORMED;
use crate::signer::Signer;

use super::{CycleOutcome, Engine};

/// Signs `texts` in order, on as many threads as there are cores (at least 8 texts a thread).
pub(super) fn sign_texts(
    signer: &Signer,
    texts: &[String],
) -> Vec<Result<String, crate::signer::SignerError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(texts.len().div_ceil(8))
        .max(1);
    if threads == 1 {
        return texts.iter().map(|t| signer.sign(t)).collect();
    }
    let per = texts.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .chunks(per)
            .map(|chunk| {
                let h =
                    scope.spawn(move || chunk.iter().map(|t| signer.sign(t)).collect::<Vec<_>>());
                (chunk.len(), h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                // A thread that stopped signs nothing: its decisions become holds.
                h.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| Err(crate::signer::SignerError::Interrupted))
                        .collect()
                })
            })
            .collect()
    })
}

impl Engine {
    /// Signs every approve/reject of a page off the async runtime, spread over the cores (each
    /// signature is one RSA private-key operation, the cycle's dominant cost). A text that cannot
    /// be signed turns its decision into a hold; the approval it may have added to the window
    /// stays counted, which over-counts (safe) rather than under-counts.
    pub(super) async fn sign_page(&self, batch: &mut [NewDecision], out: &mut CycleOutcome) {
        let todo: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].signed_text.is_some() && batch[i].data.is_none())
            .collect();
        if todo.is_empty() {
            return;
        }
        let texts: Vec<String> = todo
            .iter()
            .map(|&i| batch[i].signed_text.clone().unwrap_or_default())
            .collect();
        let n = texts.len();
        let signer = self.signer.clone();
        let results = tokio::task::spawn_blocking(move || sign_texts(&signer, &texts))
            .await
            .unwrap_or_else(|_| {
                // The signing task stopped: nothing of this page is signed; all become holds.
                (0..n)
                    .map(|_| Err(crate::signer::SignerError::Interrupted))
                    .collect()
            });
        for (&i, result) in todo.iter().zip(results) {
            let d = &mut batch[i];
            match result {
                Ok(data) => d.data = Some(data),
                Err(e) => {
                    d.action = Action::Hold;
                    d.amount = None;
                    d.signed_text = None;
                    d.rule = RULE_MALFORMED.into();
                    d.reason = format!("cannot sign: {e}");
                    out.held += 1;
                }
            }
        }
    }
}
