//! The gate a request asks before every attempt and at every write of its bytes: the kill
//! switch, a policy reload or a shutdown stops a request waiting to be retried, connecting or
//! handshaking, not only one that has not started.

use std::time::Duration;

use super::AttemptError;
use super::wire::{Permit, Ticket};

/// Why a `Gate` stopped a request: a sentence for the log and the outcome record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(String);

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

/// What a [`Gate`] writes down before an attempt (with the number of attempts made so far):
/// `Err` says why the request must not go out.
type BeforeAttempt = Box<
    dyn Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>>
        + Send
        + Sync,
>;

/// Asked before every attempt of a request, retries included, and again at every write of its
/// bytes, whether it may still go out: the kill switch, a policy reload or a shutdown must stop a
/// request that is waiting to be retried, connecting or handshaking, not only one that has not
/// started.
pub struct Gate {
    pub(super) permit: Permit,
    pub(super) changes: tokio::sync::watch::Receiver<u64>,
    pub(super) cancel: Option<tokio_util::sync::CancellationToken>,
    /// Run once the permit is given, right before an attempt: what must be written down before
    /// it leaves.
    pub(super) before_attempt: Option<BeforeAttempt>,
    /// Asked with the permit once `before_attempt` is done, as the attempt leaves: whether what
    /// it wrote down still holds (an approval's record was stamped recently enough).
    pub(super) on_leaving: Option<Permit>,
}

impl Gate {
    /// A gate that asks `permit` (an `Err` says why not) and is woken from backoff sleeps by any
    /// change sent on `changes`.
    pub fn new(
        permit: impl Fn() -> Result<(), Refusal> + Send + Sync + 'static,
        changes: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        Self {
            permit: std::sync::Arc::new(permit),
            changes,
            cancel: None,
            before_attempt: None,
            on_leaving: None,
        }
    }

    /// Runs `f` (given the number of attempts made so far) and awaits it right before every
    /// attempt, once it is permitted; an `Err` stops the request. The permit is asked again
    /// after it, so that the answer is the one in force when the request leaves.
    pub fn with_before_attempt<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(u32) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Refusal>> + Send + 'static,
    {
        self.before_attempt = Some(Box::new(move |attempts| Box::pin(f(attempts))));
        self
    }

    /// Also asks `check` (an `Err` says why not) with the permit as each attempt leaves, after
    /// what `with_before_attempt` writes down, but not before it.
    #[must_use]
    pub(crate) fn with_leaving_check(
        mut self,
        check: impl Fn() -> Result<(), Refusal> + Send + Sync + 'static,
    ) -> Self {
        self.on_leaving = Some(std::sync::Arc::new(check));
        self
    }

    /// Also wakes from backoff sleeps when `token` is cancelled (`permit` then says no).
    #[must_use]
    pub(crate) fn with_cancel(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Marks the changes seen so far, then asks: a change after this wakes [`Gate::sleep`].
    pub(super) fn check(&mut self) -> Result<(), Refusal> {
        self.changes.borrow_and_update();
        (self.permit)()
    }

    /// Runs `attempt` (of `ticket`'s call) to its end, asking again at every change: once the
    /// answer is no and nothing of the attempt is written yet (it is connecting, handshaking,
    /// or waiting for its turn on a connection), it is dropped, and `Err` says why. An attempt
    /// already being written is left to finish: its remaining writes are refused by the
    /// transport, so no server can act on it.
    pub(super) async fn race<T>(
        &mut self,
        attempt: impl Future<Output = Result<T, AttemptError>>,
        ticket: &Ticket,
    ) -> Result<T, AttemptError> {
        tokio::pin!(attempt);
        let cancel = self.cancel.clone().unwrap_or_default();
        let mut cancel_seen = false;
        let mut changes_open = true;
        loop {
            tokio::select! {
                r = &mut attempt => return r,
                () = cancel.cancelled(), if !cancel_seen => cancel_seen = true,
                changed = self.changes.changed(), if changes_open => {
                    changes_open = changed.is_ok();
                }
            }
            if let Err(r) = (self.permit)()
                && !ticket.started()
            {
                return Err(AttemptError::Stopped(r));
            }
        }
    }

    /// Everything that must hold as an attempt leaves: the permit, and the check of what
    /// `before_attempt` wrote down. Asked last thing before the request goes on the wire.
    pub(super) fn check_leaving(&mut self) -> Result<(), Refusal> {
        self.check()?;
        match &self.on_leaving {
            Some(f) => f(),
            None => Ok(()),
        }
    }

    /// Sleeps `wait`, re-asking at every change; `Err` as soon as the answer is no.
    pub(super) async fn sleep(&mut self, wait: Duration) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + wait;
        let cancel = self.cancel.clone().unwrap_or_default();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                () = cancel.cancelled() => {
                    (self.permit)()?;
                    tokio::time::sleep_until(deadline).await;
                    return Ok(());
                }
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        // Nobody can announce changes any more: the attempt re-asks anyway.
                        tokio::time::sleep_until(deadline).await;
                        return Ok(());
                    }
                    (self.permit)()?;
                }
            }
        }
    }
}
