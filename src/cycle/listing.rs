//! The pending listing: every page read, de-duplicated by id, bounded, and a refused listing
//! recorded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use tracing::warn;

use crate::client::MalformedItem;
use crate::domain::{TxId, Withdrawal};
use crate::ledger::EventKind;

use super::{CycleError, Engine};

pub(super) struct Listing {
    pub(super) txs: Vec<Withdrawal>,
    pub(super) conflicting: HashSet<TxId>,
    pub(super) malformed: Vec<MalformedItem>,
    pub(super) pages: u32,
}

impl Engine {
    /// Reads every page, de-duplicating by id, stopping at `total` or when paging goes nowhere.
    /// Memory is bounded whatever the server sends: one page (`api.max_response_bytes`), at most
    /// `max_items` items kept, each at most `max_item_bytes` of JSON (a larger one is kept as a
    /// bounded prefix). A listing with more items than `max_items` is refused as a whole: a
    /// partial listing cannot show an id listed twice with other fields.
    pub(super) async fn list_all(&self) -> Result<Listing, CycleError> {
        let size = self.settings.page_size;
        let max_items = self.settings.max_items;
        let mut seen: HashMap<TxId, usize> = HashMap::new();
        let mut txs: Vec<Withdrawal> = Vec::new();
        let mut conflicting = HashSet::new();
        let mut malformed = Vec::new();
        let mut page = 1u32;
        let mut idle_pages = 0;
        loop {
            let p = self
                .client
                .pending_within(page, size, self.settings.max_item_bytes)
                .await
                .map_err(CycleError::List)?;
            let mut new = 0;
            let n = p.items.len();
            for item in p.items {
                match item {
                    Ok(tx) => match seen.get(&tx.id) {
                        Some(&i) => {
                            let prev = &txs[i];
                            // A copy with a problem (a member twice, say) may mean other fields
                            // to another parser: that is a conflict too.
                            if (&prev.from, &prev.to, &prev.amount, &prev.chain_id)
                                != (&tx.from, &tx.to, &tx.amount, &tx.chain_id)
                                || !prev.problems.is_empty()
                                || !tx.problems.is_empty()
                            {
                                conflicting.insert(tx.id);
                            }
                        }
                        None => {
                            seen.insert(tx.id, txs.len());
                            txs.push(tx);
                            new += 1;
                        }
                    },
                    // Items without a usable id cannot be told apart: each counts.
                    Err(m) => malformed.push(m),
                }
                if txs.len() + malformed.len() > max_items {
                    return Err(CycleError::ListingTooLarge {
                        limit: max_items,
                        page,
                    });
                }
            }
            idle_pages = if new == 0 { idle_pages + 1 } else { 0 };
            let expected_pages = p.total.div_ceil(u64::from(size)).max(1);
            if n == 0 || txs.len() as u64 >= p.total || u64::from(page) > expected_pages {
                break;
            }
            if idle_pages >= 2 {
                warn!(
                    page,
                    total = p.total,
                    "pending pages bring nothing new; stopping this listing"
                );
                break;
            }
            // Every page that goes on brings a new item, so `max_items` bounds the pages too.
            page = page.saturating_add(1);
        }
        Ok(Listing {
            txs,
            conflicting,
            malformed,
            pages: page,
        })
    }

    /// Notes a listing refused for its size: counted every time, and recorded in the ledger
    /// once until a listing is accepted again (a server stuck that way writes one event, not
    /// one a cycle).
    pub(super) async fn note_listing_refused(&self, limit: usize) {
        self.metrics.listings_refused.inc();
        if self.listing_refused.swap(true, Ordering::SeqCst) {
            return;
        }
        let detail = serde_json::json!({
            "refused": "the pending list holds more items than poll.max_items",
            "max_items": limit,
        })
        .to_string();
        if let Err(e) = self.ledger.record_event(EventKind::Listing, &detail).await {
            // Recorded next time instead.
            self.listing_refused.store(false, Ordering::SeqCst);
            warn!(error = %e, "cannot record the refused listing in the ledger");
        }
    }
}
