//! What an operator steers while the daemon runs: the policy in force (replaced whole on reload)
//! and the kill-switch mode, with a generation number and a change signal so that a submission
//! waiting to retry learns at once that what it was checked under is no longer in force.
//!
//! The mode has one writer. Mode changes are serialised, so that after any set of concurrent
//! calls the mode in force, the ledger's latest mode record, the metric and `/v1/status` agree.
//! A pause takes effect in memory at once and is then recorded; one that cannot be recorded
//! stays in force, is kept in the pause file (fsynced, honoured at start), and is recorded as
//! soon as the ledger takes it, before any decision is recorded. A resume is recorded first and
//! then put in force, unless a pause came in meanwhile (the pause stays).
//!
//! In a pair, any member accepts a pause, and records it in the shared ledger (the fencing
//! trigger lets a pause through from any epoch); the leader adopts a recorded pause it does not
//! hold with every confirmation of its lead and at the start of every cycle
//! ([`Control::adopt_recorded`]), so a pause sent to a standby binds the pair.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use serde::Serialize;
use tracing::{error, info, warn};

use crate::client::{Outbox, Stopped};
use crate::domain::Verdict;
use crate::leader::Lead;
use crate::ledger::{EventKind, LedgerError, LedgerHandle};
use crate::metrics::{Metrics, ModeLabel};
use crate::policy::Policy;

/// The kill switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The policy decides.
    Normal,
    /// Every transaction is held; nothing is approved or rejected.
    Hold,
    /// Every well-formed transaction is rejected; nothing is approved.
    Reject,
}

impl Mode {
    /// The name used in logs, metrics, the ledger and the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Hold => "hold",
            Mode::Reject => "reject",
        }
    }

    /// The mode as `cosigner_mode` labels it.
    fn metric(self) -> ModeLabel {
        match self {
            Mode::Normal => ModeLabel::Normal,
            Mode::Hold => ModeLabel::Hold,
            Mode::Reject => ModeLabel::Reject,
        }
    }

    /// The ledger event that records this mode being put in force by `by`; read back by
    /// `crate::control::Control::restore`.
    #[must_use]
    pub fn event_detail(self, by: &str) -> String {
        serde_json::json!({"mode": self.as_str(), "by": by}).to_string()
    }

    /// The mode the latest recorded mode event puts in force: normal when there is none, hold
    /// when it cannot be read (a pause must not be lost to a spelling).
    #[must_use]
    pub(crate) fn from_latest_event(detail: Option<&str>) -> Mode {
        match detail {
            None => Mode::Normal,
            Some(d) => Mode::from_event_detail(d).unwrap_or(Mode::Hold),
        }
    }

    /// Reads back what `Mode::event_detail` wrote; `None` for anything else.
    #[must_use]
    pub fn from_event_detail(detail: &str) -> Option<Mode> {
        serde_json::from_str::<serde_json::Value>(detail)
            .ok()?
            .get("mode")?
            .as_str()?
            .parse()
            .ok()
    }

    /// Whether a request with `verdict` may go out in this mode: reject mode lets rejections
    /// out and nothing else, hold mode nothing.
    #[must_use]
    pub(crate) fn lets_out(self, verdict: Verdict) -> bool {
        match self {
            Mode::Normal => true,
            Mode::Reject => verdict == Verdict::Reject,
            Mode::Hold => false,
        }
    }

    /// Whether this mode lets less out than `other`: normal, then reject (no approval), then
    /// hold (nothing at all).
    #[must_use]
    pub(crate) fn stricter_than(self, other: Mode) -> bool {
        self.to_u8() > other.to_u8()
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::Reject => 1,
            Mode::Hold => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Mode::Normal,
            1 => Mode::Reject,
            // Anything unknown is treated as the safe choice.
            _ => Mode::Hold,
        }
    }
}

/// A word that is not a kill-switch mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}")]
pub struct UnknownMode(pub(crate) String);

impl std::str::FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        match s {
            "normal" => Ok(Mode::Normal),
            "hold" => Ok(Mode::Hold),
            "reject" => Ok(Mode::Reject),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// Why a mode change was not (wholly) made.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// A resume that could not be recorded: the mode in force did not change.
    #[error("the mode could not be recorded, so it was not changed: {0}")]
    NotChanged(LedgerError),
    /// A pause in force that could not be recorded.
    #[error(
        "{}-all mode is in force now on this instance only: it could not be recorded in the ledger \
         ({error}); it is recorded as soon as the ledger takes writes, and kept in the pause file \
         meanwhile",
        .mode.as_str()
    )]
    NotRecorded {
        /// The mode in force.
        mode: Mode,
        /// What putting it in force stopped.
        stopped: Stopped,
        /// Why it could not be recorded.
        error: LedgerError,
    },
    /// A resume recorded while a pause came in: the pause stays in force (and is recorded
    /// after the resume).
    #[error("a pause came in while resuming, and stays in force; resume again to lift it")]
    Overtaken,
}

/// What the mode writer keeps beside the mode itself.
#[derive(Debug, Default)]
struct Book {
    /// Bumped by every change of the mode in force.
    seq: u64,
    /// Who put the pause in force that the ledger has not recorded yet, if there is one.
    unrecorded: Option<String>,
}

/// The policy in force and the mode, shared by the cycle, its submissions, the collector and the
/// operator API; reached through [`crate::cycle::Engine::control`].
#[derive(Debug)]
pub struct Control {
    policy: ArcSwap<Policy>,
    /// Bumped each time a policy is put in force.
    generation: AtomicU64,
    mode: AtomicU8,
    /// Announces every change of policy or mode.
    changes: tokio::sync::watch::Sender<u64>,
    /// Changed together with `mode`.
    book: Mutex<Book>,
    /// One writer of the mode's records at a time.
    writer: tokio::sync::Mutex<()>,
    ledger: LedgerHandle,
    metrics: Arc<Metrics>,
    /// Where an unrecorded pause is kept across restarts.
    pause_file: Option<PathBuf>,
    /// Every request on its way out: each change of what may be sent goes through it, so that
    /// once the change returns no write it forbids can start, and none is under way.
    outbox: Arc<Outbox>,
    /// In a pair: the lead, asked before the policy in force is recorded and after a pause.
    lead: Option<Lead>,
}

impl Control {
    /// `policy` in force, in normal mode; mode changes are recorded in `ledger` (and, until they
    /// are, in `pause_file`) and shown in `metrics`; every change goes through `outbox`.
    #[must_use]
    pub(crate) fn new(
        policy: Arc<Policy>,
        ledger: LedgerHandle,
        metrics: Arc<Metrics>,
        pause_file: Option<PathBuf>,
        outbox: Arc<Outbox>,
    ) -> Self {
        metrics.set_mode(Mode::Normal.metric());
        Self {
            policy: ArcSwap::new(policy),
            generation: AtomicU64::new(0),
            mode: AtomicU8::new(Mode::Normal.to_u8()),
            changes: tokio::sync::watch::Sender::new(0),
            book: Mutex::new(Book::default()),
            writer: tokio::sync::Mutex::new(()),
            ledger,
            metrics,
            pause_file,
            outbox,
            lead: None,
        }
    }

    /// In a pair: records the policy in force only while `lead` says this instance leads, and
    /// returns from a pause once it binds the leader.
    #[must_use]
    pub(crate) fn with_lead(mut self, lead: Option<Lead>) -> Self {
        self.lead = lead;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
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

    /// Puts `policy` in force: once this returns, no approval checked under the old one can
    /// start a write. Returns what it stopped.
    pub(crate) fn put_policy(&self, policy: Arc<Policy>) -> Stopped {
        self.outbox.change(|| {
            // Every arc-swap operation holds a SeqCst one, so the policy is in force before the
            // generation moves, and `snapshot` (generation first) errs safe.
            self.policy.store(policy);
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.announce();
        })
    }

    /// Waits until no write of a request is under way, and wakes every waiting submission to
    /// ask its gate again: what is in force elsewhere (the lead) changed. Returns what the
    /// state now in force stops.
    pub(crate) fn fence(&self) -> Stopped {
        self.outbox.change(|| self.announce())
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    /// Whether a pause is in force that the ledger has not recorded yet.
    pub(crate) fn unrecorded(&self) -> bool {
        self.book().unrecorded.is_some()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `mode` in force in memory (with `book` held), through the outbox: once this
    /// returns, no write the mode forbids can start, and none is under way. Shows it, and
    /// returns what it stopped.
    fn put(&self, book: &mut Book, mode: Mode) -> Stopped {
        book.seq += 1;
        let stopped = self.outbox.change(|| {
            self.mode.store(mode.to_u8(), Ordering::SeqCst);
            self.announce();
        });
        self.metrics.set_mode(mode.metric());
        stopped
    }

    /// Puts the pause `mode` (hold or reject) in force at once, for the page being decided and
    /// every request not yet written (a request being connected, handshaking or waiting for a
    /// connection is stopped when it is about to be written), then records it. Returns what it
    /// stopped. `Err`: in force, but not recorded (kept in the pause file, and recorded as soon
    /// as the ledger takes it).
    pub(crate) async fn pause(&self, mode: Mode, by: &str) -> Result<Stopped, ModeError> {
        let mode = if mode == Mode::Normal {
            Mode::Hold
        } else {
            mode
        };
        let stopped = {
            let mut book = self.book();
            book.unrecorded = Some(by.to_owned());
            self.put(&mut book, mode)
        };
        warn!(
            mode = mode.as_str(),
            by,
            stopped = stopped.stopped,
            already_written = stopped.already_written,
            "kill switch thrown"
        );
        self.write_pause_file(&mode.event_detail(by));
        self.record_pause()
            .await
            .map(|()| stopped)
            .map_err(|source| ModeError::NotRecorded {
                mode,
                stopped,
                error: source,
            })
    }

    /// Records normal mode, then puts it in force, unless a pause came in meanwhile.
    pub(crate) async fn resume(&self, by: &str) -> Result<(), ModeError> {
        let _writer = self.writer.lock().await;
        let seq = self.book().seq;
        self.ledger
            .record_event(EventKind::Mode, &Mode::Normal.event_detail(by))
            .await
            .map_err(ModeError::NotChanged)?;
        {
            let mut book = self.book();
            if book.seq != seq {
                warn!(by, "a pause came in while resuming; it stays in force");
                return Err(ModeError::Overtaken);
            }
            book.unrecorded = None;
            let _ = self.put(&mut book, Mode::Normal);
        }
        warn!(by, "kill switch lifted");
        self.remove_pause_file();
        Ok(())
    }

    /// Records the pause in force that the ledger has not recorded yet, if there is one: a
    /// cycle calls it before recording any decision, and a retry loop every second.
    pub(crate) async fn record_pause(&self) -> Result<(), LedgerError> {
        if !self.unrecorded() {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        let (detail, seq) = {
            let book = self.book();
            let Some(by) = &book.unrecorded else {
                return Ok(());
            };
            (self.mode().event_detail(by), book.seq)
        };
        if let Err(e) = self.ledger.record_event(EventKind::Mode, &detail).await {
            error!(error = %e, "the kill-switch mode in force could not be recorded; retrying, and nothing is decided until it is");
            return Err(e);
        }
        let recorded = {
            let mut book = self.book();
            let same = book.seq == seq;
            if same {
                book.unrecorded = None;
            }
            same
        };
        if recorded {
            self.remove_pause_file();
        }
        Ok(())
    }

    /// The leader of a pair, with the latest recorded mode (`latest`: the newest mode record's
    /// detail) at each confirmation of its lead and each cycle: puts in force a recorded pause
    /// that is not in force here (another member recorded it). A recorded normal mode changes
    /// nothing: only this instance's own resume (or a takeover's restore) lifts a pause, and a
    /// pause this instance holds unrecorded gives way only to a stricter one. Returns whether
    /// it changed the mode in force.
    pub(crate) fn adopt_recorded(&self, latest: Option<&str>) -> bool {
        let recorded = Mode::from_latest_event(latest);
        if recorded == Mode::Normal {
            return false;
        }
        let stopped = {
            let mut book = self.book();
            let now = self.mode();
            if now == recorded || (book.unrecorded.is_some() && !recorded.stricter_than(now)) {
                return false;
            }
            self.put(&mut book, recorded)
        };
        warn!(
            mode = recorded.as_str(),
            stopped = stopped.stopped,
            already_written = stopped.already_written,
            "kill switch thrown by another member of the pair (recorded in the shared ledger): in force here now"
        );
        true
    }

    /// At start, and when this instance takes the lead of a pair: puts in force the stricter of
    /// the mode the ledger records and the pause this process holds unrecorded (in memory, or
    /// in the pause file from before a restart), recording the latter first when it is the
    /// stricter. A latest mode record that cannot be read counts as hold. Returns the mode in
    /// force and whether the ledger records it; `Err` only when the ledger cannot be read.
    pub(crate) async fn restore(&self) -> Result<(Mode, bool), LedgerError> {
        let _writer = self.writer.lock().await;
        let latest = self.ledger.latest_event(EventKind::Mode).await?;
        if let Some(d) = &latest
            && Mode::from_event_detail(d).is_none()
        {
            error!(event = %d, "the latest kill-switch record cannot be read; taking hold-all mode");
        }
        let recorded = Mode::from_latest_event(latest.as_deref());
        let remembered = {
            let book = self.book();
            book.unrecorded
                .as_ref()
                .map(|by| (self.mode(), self.mode().event_detail(by)))
        }
        .or_else(|| self.read_pause_file());
        let (mode, unrecorded) = match remembered {
            Some((mode, detail)) if mode.stricter_than(recorded) => {
                match self.ledger.record_event(EventKind::Mode, &detail).await {
                    Ok(_) => (mode, None),
                    Err(e) => {
                        error!(mode = mode.as_str(), error = %e, "a pause this instance holds could not be recorded; it stays in force here, and is recorded as soon as the ledger takes it");
                        let by = serde_json::from_str::<serde_json::Value>(&detail)
                            .ok()
                            .and_then(|v| v.get("by")?.as_str().map(str::to_owned))
                            .unwrap_or_else(|| "pause file".into());
                        (mode, Some(by))
                    }
                }
            }
            _ => (recorded, None),
        };
        let recorded_now = unrecorded.is_none();
        {
            let mut book = self.book();
            book.unrecorded = unrecorded;
            let _ = self.put(&mut book, mode);
        }
        if recorded_now {
            self.remove_pause_file();
        }
        if mode != Mode::Normal {
            warn!(
                mode = mode.as_str(),
                recorded = recorded_now,
                "kill-switch mode restored"
            );
        }
        Ok((mode, recorded_now))
    }

    /// The pause kept in the pause file, if there is one: its mode (hold when it cannot be
    /// read) and the record to write.
    fn read_pause_file(&self) -> Option<(Mode, String)> {
        let path = self.pause_file.as_ref()?;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                error!(file = %path.display(), error = %e, "the pause file cannot be read; taking hold-all mode");
                return Some((Mode::Hold, Mode::Hold.event_detail("pause file")));
            }
        };
        match Mode::from_event_detail(text.trim()) {
            Some(m) if m != Mode::Normal => Some((m, text.trim().to_owned())),
            _ => {
                error!(file = %path.display(), "the pause file cannot be read; taking hold-all mode");
                Some((Mode::Hold, Mode::Hold.event_detail("pause file")))
            }
        }
    }

    /// Writes `detail` to the pause file, durably (a file written and fsynced beside it, then
    /// renamed over it, and the directory fsynced).
    fn write_pause_file(&self, detail: &str) {
        let Some(path) = &self.pause_file else {
            return;
        };
        if let Err(e) = write_durably(path, detail) {
            error!(file = %path.display(), error = %e, "cannot write the pause file; a restart keeps the pause only if the ledger records it");
        }
    }

    fn remove_pause_file(&self) {
        let Some(path) = &self.pause_file else {
            return;
        };
        match std::fs::remove_file(path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot remove the pause file; the recorded mode decides at start anyway, unless the file holds the stricter one")
            }
        }
    }

    /// A receiver that sees every change made after this call.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut rx = self.changes.subscribe();
        rx.mark_unchanged();
        rx
    }

    /// Puts `policy` in force for the next cycle; a running cycle finishes on the old one.
    pub fn replace_policy(&self, policy: Arc<Policy>) -> Stopped {
        self.metrics
            .set_policy(&policy.sha256, policy.limited_rules());
        self.put_policy(policy)
    }

    /// Reads the policy file again; a valid policy replaces the old one (a running cycle finishes
    /// on the old one), an invalid one is refused and the old one kept.
    pub async fn reload_policy(
        &self,
        why: &str,
    ) -> Result<Arc<Policy>, crate::policy::PolicyError> {
        let current = self.policy();
        // Reading, parsing and hashing the file (a list of 100,000 addresses takes a while) on
        // a blocking thread: the runtime's threads carry the lead's heartbeat and the gates.
        let loaded = tokio::task::spawn_blocking({
            let source = current.source.clone();
            move || crate::policy::load(&source)
        })
        .await
        .unwrap_or_else(|e| {
            Err(crate::policy::PolicyError {
                file: current.source.clone(),
                place: None,
                message: format!("the thread loading it stopped: {e}"),
            })
        });
        match loaded {
            Ok(p) => {
                let p = Arc::new(p);
                self.replace_policy(p.clone());
                self.metrics.count_reload(true);
                if let Err(e) = self.note_policy_loaded(why).await {
                    warn!(error = %e, "the policy change could not be recorded in the ledger");
                }
                info!(sha256 = %p.sha256, previous = %current.sha256, by = why, "policy reloaded");
                Ok(p)
            }
            Err(e) => {
                self.metrics.count_reload(false);
                tracing::error!(error = %e, kept = %current.sha256, by = why, "policy reload refused; the old policy stays in force");
                Err(e)
            }
        }
    }

    /// Records in the ledger which policy is in force from now on (`why`: start, reload).
    pub(crate) async fn note_policy_loaded(&self, why: &str) -> Result<(), LedgerError> {
        if let Some(Err(e)) = self.lead.as_ref().map(Lead::current) {
            // Only the leader writes; a takeover records the policy it decides under.
            tracing::debug!(reason = %e, "the policy in force is recorded when this instance leads");
            return Ok(());
        }
        let p = self.policy();
        let detail =
            serde_json::json!({"sha256": p.sha256, "file": p.source, "why": why}).to_string();
        self.ledger
            .record_event(EventKind::Policy, &detail)
            .await
            .map(|_| ())
    }

    /// Puts `mode` in force (see `pause` and `resume`): a pause at once, for the page being
    /// decided and every attempt not yet on the wire, then recorded (`Err(NotRecorded)`: in
    /// force, kept in the pause file, recorded as soon as the ledger takes it); a resume once
    /// recorded.
    ///
    /// In a pair, a pause recorded by a member that is not the current leader returns once it
    /// binds the pair: after [`crate::leader::CURRENT_FOR`], by which time the leader has
    /// either adopted it (its next confirmation reads it) or stopped counting itself current.
    pub async fn set_mode(&self, mode: Mode, actor: &str) -> Result<Stopped, ModeError> {
        match mode {
            Mode::Normal => self.resume(actor).await.map(|()| Stopped::default()),
            pause => {
                let stopped = self.pause(pause, actor).await?;
                if let Some(lead) = &self.lead
                    && let Err(why) = lead.current()
                {
                    tracing::info!(
                        mode = pause.as_str(),
                        reason = %why,
                        wait_ms = u64::try_from(crate::leader::CURRENT_FOR.as_millis()).unwrap_or(u64::MAX),
                        "pause recorded by a member that does not lead: waiting until it binds the leader"
                    );
                    tokio::time::sleep(crate::leader::CURRENT_FOR).await;
                }
                Ok(stopped)
            }
        }
    }

    /// Puts in force the stricter of the mode recorded in the ledger and a pause this process
    /// holds unrecorded (at start-up, and when an instance of a pair takes the lead).
    pub async fn restore_mode(&self) -> Result<Mode, LedgerError> {
        self.restore().await.map(|(mode, _)| mode)
    }

    fn announce(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Writes `text` to `path` so that it survives a crash: into a temporary file beside it,
/// fsynced, renamed over `path`, and the directory fsynced.
fn write_durably(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
