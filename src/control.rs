//! What an operator steers while the daemon runs: the policy in force (replaced whole on reload)
//! and the kill-switch mode, with a generation number and a change signal so that a submission
//! waiting to retry learns at once that what it was checked under is no longer in force.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::plan::Mode;
use crate::policy::Policy;

/// The policy in force and the mode, shared by the cycle, its submissions and the operator API.
#[derive(Debug)]
pub(crate) struct Control {
    policy: RwLock<Arc<Policy>>,
    /// Bumped each time a policy is put in force.
    generation: AtomicU64,
    mode: AtomicU8,
    /// Announces every change of policy or mode.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Control {
    /// `policy` in force, in normal mode.
    #[must_use]
    pub(crate) fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy: RwLock::new(policy),
            generation: AtomicU64::new(0),
            mode: AtomicU8::new(Mode::Normal.to_u8()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The policy in force and its generation, read in an order that errs safe: a reload in
    /// between makes the generation look old, never the policy.
    pub(crate) fn snapshot(&self) -> (Arc<Policy>, u64) {
        let generation = self.generation();
        (self.policy(), generation)
    }

    /// The generation of the policy in force.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Puts `policy` in force.
    pub(crate) fn put_policy(&self, policy: Arc<Policy>) {
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.announce();
    }

    /// The mode in force.
    pub(crate) fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    /// Puts `mode` in force.
    pub(crate) fn put_mode(&self, mode: Mode) {
        self.mode.store(mode.to_u8(), Ordering::SeqCst);
        self.announce();
    }

    /// A receiver that sees every change made after this call.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut rx = self.changes.subscribe();
        rx.mark_unchanged();
        rx
    }

    /// Wakes every waiting submission to ask its gate again, changing nothing.
    pub(crate) fn wake(&self) {
        self.announce();
    }

    fn announce(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}
