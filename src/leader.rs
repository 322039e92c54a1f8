//! Leadership of an active/standby pair over the PostgreSQL ledger: the instance holding a
//! PostgreSQL advisory lock on a dedicated connection leads, at an epoch the database increments
//! on each takeover (and with which the ledger fences every write, see `ledger/postgres.rs`).
//!
//! The leader confirms its epoch every 500 ms; any error, a 2 s timeout or a newer epoch makes it
//! a standby at once. The server ends a session that sends nothing for 5 s, and so frees the
//! lock of a frozen or vanished leader, which by then has stopped counting itself current:
//! [`Leadership::is_current`] is true only within 2 s of a confirmation, by the monotonic clock.
//!
//! One current leader at a time: an old leader may count itself current for up to
//! [`CURRENT_FOR`] after its last confirmation, and that confirmation may have taken up to
//! [`HEARTBEAT_TIMEOUT`]; so a new leader, once it has moved the epoch on, waits out
//! [`TAKEOVER_WAIT`] (their sum) before its first attempt ([`Lead::current`] refuses until then).
//!
//! Every confirmation also reads the latest recorded mode and hands it to the hook set by
//! [`Leadership::on_recorded_mode`] before the confirmation counts: a pause another member
//! recorded binds the leader at its next confirmation, or stops it counting itself current
//! within [`CURRENT_FOR`]. So a pause recorded by any member binds the pair once
//! [`CURRENT_FOR`] has passed since it was recorded.
//!
//! Pairs upgrade one member at a time. A member leads only on the schema it opened (the one its
//! binary knows, which it brought the ledger to): before taking the lead and with every
//! confirmation it reads the schema version, and on any other version (a newer cosigner applied
//! a step) it gives the lead up, stands by as [`Role::Outdated`] and says why; its writes are
//! refused besides (`ledger/postgres/store.rs`, `begin_write`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use crate::ledger::LedgerError;
use crate::ledger::postgres::PgTarget;

/// The advisory lock whose holder leads ("cosigner" in ASCII).
const LEADER_LOCK: i64 = 0x636f_7369_676e_6572;
/// How often the leader confirms its epoch.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a confirmation may take before the leader steps down.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after its last confirmation the leader still counts itself current.
pub(crate) const CURRENT_FOR: Duration = Duration::from_secs(2);
/// How long a new leader waits, once it has moved the epoch on, before its first attempt: the
/// longest an old leader may still count itself current (its confirmation window plus the time
/// its last confirmation may have taken).
pub(crate) const TAKEOVER_WAIT: Duration = CURRENT_FOR.saturating_add(HEARTBEAT_TIMEOUT);
/// How often a standby tries to take the lead.
const RETRY: Duration = Duration::from_secs(1);
/// The session settings of the lock connection. The server closes a session idle for 5 s (a
/// frozen or vanished leader), freeing its lock: longer than [`CURRENT_FOR`], so the old leader
/// has stopped counting itself current before anyone can take over; its keepalives notice a
/// host that vanished mid-query.
const SESSION: &str = "SET idle_session_timeout = '5s';
SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3;";

/// This instance's part in the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Another instance leads, or none can be confirmed: decide and send nothing.
    Standby {
        /// The name the database gives the leader, when known.
        leader: Option<String>,
    },
    /// This instance leads, at this epoch.
    Leader {
        /// The epoch its ledger writes carry.
        epoch: i64,
    },
    /// The ledger's schema is not the one this instance opened (a newer cosigner applied a
    /// step this one does not know): it stands by, decides and writes nothing, until it is
    /// upgraded (or restarted, when the version went back).
    Outdated {
        /// The schema version the ledger has.
        found: i32,
        /// The leader's name, when the database shows one.
        leader: Option<String>,
    },
}

impl Role {
    /// Why an outdated member stands by, in words; `None` for the other roles.
    #[must_use]
    pub fn outdated_reason(&self) -> Option<String> {
        match self {
            Role::Outdated { found, .. } => Some(outdated_text(*found)),
            _ => None,
        }
    }
}

/// Why a member on schema version `found` stands by.
pub(crate) fn outdated_text(found: i32) -> String {
    let known = crate::ledger::postgres::SCHEMA_STEPS;
    if found > known {
        format!(
            "the ledger's schema version {found} is newer than this cosigner's {known}: a newer \
             cosigner upgraded it, and this member writes nothing until it is upgraded too"
        )
    } else {
        format!(
            "the ledger's schema version is {found}, not the {known} this member opened: it \
             writes nothing until it is restarted"
        )
    }
}

/// What the leader does with the latest recorded mode (the detail of the newest `mode` record,
/// `None` when there is none) at each confirmation, before the confirmation counts.
pub(crate) type ModeHook = Box<dyn Fn(Option<&str>) + Send + Sync>;

/// Taking and holding the lead; dropping it gives the lead up.
pub struct Leadership {
    role: watch::Receiver<Role>,
    confirmed: Arc<Mutex<Option<(i64, Instant)>>>,
    /// The epoch last taken, and the moment before which it may not act (see
    /// [`TAKEOVER_WAIT`]).
    settles: Arc<Mutex<Option<(i64, Instant)>>>,
    /// Set once the engine exists; see [`Leadership::on_recorded_mode`].
    mode_hook: Arc<std::sync::OnceLock<ModeHook>>,
    /// Tells the contending task to give the lead up (see [`Leadership::stand_down`]).
    give_up: Arc<watch::Sender<u64>>,
    /// The sender, so that [`Leadership::stand_down`] publishes the standby role at once.
    tx: Arc<watch::Sender<Role>>,
    name: String,
    _task: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("role", &*self.role.borrow())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Starts contending for the lead of the ledger at `target` under `name` (shown to the
    /// others as the leader's name), which this cosigner opened at the schema it knows.
    /// Starts as a standby.
    #[must_use]
    pub fn start(target: PgTarget, name: String) -> Self {
        Self::start_on(target, name, Some(crate::ledger::postgres::SCHEMA_STEPS))
    }

    /// As [`Leadership::start`], leading only while the ledger's schema version is `opened`
    /// (`None`: this cosigner found a schema newer than it knows, and never leads).
    #[must_use]
    pub fn start_on(target: PgTarget, name: String, opened: Option<i32>) -> Self {
        let (tx, role) = watch::channel(Role::Standby { leader: None });
        let tx = Arc::new(tx);
        let confirmed = Arc::new(Mutex::new(None));
        let settles = Arc::new(Mutex::new(None));
        let mode_hook = Arc::new(std::sync::OnceLock::new());
        let give_up = Arc::new(watch::Sender::new(0));
        let task = tokio::spawn(contend(
            target,
            name.clone(),
            opened,
            Shared {
                tx: Arc::clone(&tx),
                confirmed: Arc::clone(&confirmed),
                settles: Arc::clone(&settles),
                mode_hook: Arc::clone(&mode_hook),
                give_up: Arc::clone(&give_up),
            },
        ));
        Self {
            role,
            confirmed,
            settles,
            mode_hook,
            give_up,
            tx,
            name,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// This instance's name, as the database shows it when it leads.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets what the leader does with the latest recorded mode at each confirmation, before
    /// the confirmation counts (once; a second hook is ignored).
    pub(crate) fn on_recorded_mode(&self, hook: ModeHook) {
        let _ = self.mode_hook.set(hook);
    }

    /// While this instance leads at `epoch` and has not yet waited out [`TAKEOVER_WAIT`] since
    /// it moved the epoch on: how long is left.
    #[must_use]
    pub fn settling(&self, epoch: i64) -> Option<Duration> {
        let (e, at) = (*self.settles.lock().unwrap_or_else(|p| p.into_inner()))?;
        (e == epoch)
            .then(|| at.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    /// Gives the lead up at once (a write was refused as fenced: another instance took over):
    /// no longer current, a standby now; the lock connection is closed and contention starts
    /// again on a new one.
    pub fn stand_down(&self) {
        step_down(&self.tx, &self.confirmed);
        self.give_up.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The role as last published.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver of every change of role from now on.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        let mut r = self.role.clone();
        r.mark_unchanged();
        r
    }

    /// The epoch, only while this instance leads and confirmed it less than 2 s ago (so that a
    /// process resumed after a pause sends nothing until it has checked again).
    #[must_use]
    pub fn is_current(&self) -> Option<i64> {
        let (epoch, at) = (*self.confirmed.lock().ok()?)?;
        let leads = *self.role.borrow() == Role::Leader { epoch };
        (leads && at.elapsed() < CURRENT_FOR).then_some(epoch)
    }
}

/// Marks the lead lost: no longer current, then a standby.
fn step_down(tx: &watch::Sender<Role>, confirmed: &Mutex<Option<(i64, Instant)>>) {
    if let Ok(mut c) = confirmed.lock() {
        *c = None;
    }
    tx.send_if_modified(|r| {
        let changed = matches!(r, Role::Leader { .. });
        if changed {
            *r = Role::Standby { leader: None };
        }
        changed
    });
}

/// Publishes a standby role naming `leader`, if it changed.
fn standby(tx: &watch::Sender<Role>, leader: Option<String>) {
    let new = Role::Standby { leader };
    tx.send_if_modified(|r| {
        let changed = *r != new;
        if changed {
            *r = new.clone();
        }
        changed
    });
}

/// Publishes the outdated role (the lead given up first), if it changed; says why once.
fn outdated(
    tx: &watch::Sender<Role>,
    confirmed: &Mutex<Option<(i64, Instant)>>,
    found: i32,
    leader: Option<String>,
) {
    if let Ok(mut c) = confirmed.lock() {
        *c = None;
    }
    let new = Role::Outdated { found, leader };
    let was_outdated = matches!(*tx.borrow(), Role::Outdated { found: f, .. } if f == found);
    tx.send_if_modified(|r| {
        let changed = *r != new;
        if changed {
            *r = new.clone();
        }
        changed
    });
    if !was_outdated {
        tracing::error!(
            found,
            known = crate::ledger::postgres::SCHEMA_STEPS,
            "standing by: {}",
            outdated_text(found)
        );
    }
}

/// What one attempt at the lead found.
enum Attempt {
    /// Took it, at this epoch.
    Took(i64),
    /// Another holds it; the database names this leader.
    Held(Option<String>),
    /// The schema is not the one this instance opened (at this version): it may not lead.
    Outdated(i32, Option<String>),
}

/// The ledger's schema version (0 before any step).
async fn schema_version(client: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT max(version) FROM cosigner_schema", &[])
        .await?
        .try_get::<_, Option<i32>>(0)?
        .unwrap_or(0))
}

/// The name of the instance that last took the lead.
async fn holder(client: &tokio_postgres::Client) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT holder FROM cosigner_leader WHERE id = 1", &[])
        .await?
        .and_then(|r| r.try_get(0).ok()))
}

async fn try_lead(
    client: &tokio_postgres::Client,
    name: &str,
    opened: Option<i32>,
) -> Result<Attempt, LedgerError> {
    let what = "take the lead";
    let db = |e| LedgerError::Database {
        what,
        error: Box::new(e),
    };
    // Not even the lock on a schema this instance did not open: the upgraded member takes it.
    let found = schema_version(client).await.map_err(db)?;
    if Some(found) != opened {
        return Ok(Attempt::Outdated(found, holder(client).await.map_err(db)?));
    }
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    if !got {
        return Ok(Attempt::Held(holder(client).await.map_err(db)?));
    }
    // One statement, one transaction: the epoch moves on exactly when the lead changes hands,
    // and only on the schema this instance opened (a step applied since the check above).
    let epoch: Option<i64> = client
        .query_opt(
            "UPDATE cosigner_leader SET epoch = epoch + 1, holder = $1, since = now() WHERE id = 1
               AND (SELECT max(version) FROM cosigner_schema) IS NOT DISTINCT FROM $2 RETURNING epoch",
            &[&name, &opened],
        )
        .await
        .map_err(db)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(db)?;
    match epoch {
        Some(epoch) => Ok(Attempt::Took(epoch)),
        None => {
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK])
                .await
                .map_err(db)?;
            let found = schema_version(client).await.map_err(db)?;
            Ok(Attempt::Outdated(found, holder(client).await.map_err(db)?))
        }
    }
}

/// Why a confirmed lead ended.
enum Lost {
    /// In words, for the log.
    Why(String),
    /// The schema is no longer the one this instance opened, at this version.
    Outdated(i32),
}

/// What the contending task shares with its [`Leadership`].
struct Shared {
    tx: Arc<watch::Sender<Role>>,
    confirmed: Arc<Mutex<Option<(i64, Instant)>>>,
    settles: Arc<Mutex<Option<(i64, Instant)>>>,
    mode_hook: Arc<std::sync::OnceLock<ModeHook>>,
    give_up: Arc<watch::Sender<u64>>,
}

/// The heartbeat: the epoch, the schema version and the latest recorded mode, in one
/// statement (one snapshot).
const BEAT: &str = "SELECT epoch, (SELECT max(version) FROM cosigner_schema),
  (SELECT detail FROM events WHERE kind = 'mode' ORDER BY seq DESC LIMIT 1)
  FROM cosigner_leader WHERE id = 1";

/// Confirms `epoch`, and the schema this instance opened, on the lock connection every
/// [`HEARTBEAT`] until that fails; returns why. Each confirmation hands the latest recorded
/// mode to the mode hook before it counts.
async fn hold(
    client: &tokio_postgres::Client,
    epoch: i64,
    opened: Option<i32>,
    shared: &Shared,
) -> Lost {
    let confirmed = &shared.confirmed;
    // Only a stand-down asked for from now on counts.
    let mut give_up = shared.give_up.subscribe();
    give_up.mark_unchanged();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = give_up.changed() => {
                return Lost::Why(
                    "a write was refused as fenced: another instance took over".to_string(),
                );
            }
        }
        // The time the question left: the answer says nothing of any earlier moment.
        let asked = Instant::now();
        let beat = tokio::time::timeout(HEARTBEAT_TIMEOUT, client.query_one(BEAT, &[])).await;
        match beat {
            Ok(Ok(row)) => match (row.try_get::<_, i64>(0), row.try_get::<_, Option<i32>>(1)) {
                (Ok(_), Ok(found)) if found != opened => {
                    return Lost::Outdated(found.unwrap_or(0));
                }
                (Ok(e), Ok(_)) if e == epoch => {
                    let mode = match row.try_get::<_, Option<String>>(2) {
                        Ok(m) => m,
                        Err(e) => {
                            return Lost::Why(format!("the recorded mode cannot be read: {e}"));
                        }
                    };
                    // The mode first: a confirmation counts only once what it read is in force.
                    if let Some(hook) = shared.mode_hook.get() {
                        hook(mode.as_deref());
                    }
                    if let Ok(mut c) = confirmed.lock() {
                        *c = Some((epoch, asked));
                    }
                }
                (Ok(e), Ok(_)) => {
                    return Lost::Why(format!("the database holds a newer epoch {e}"));
                }
                (Err(e), _) | (_, Err(e)) => {
                    return Lost::Why(format!("the epoch cannot be read: {e}"));
                }
            },
            Ok(Err(e)) => return Lost::Why(format!("the lock connection failed: {e}")),
            Err(_) => {
                return Lost::Why(format!(
                    "the database did not answer within {} s",
                    HEARTBEAT_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

async fn contend(target: PgTarget, name: String, opened: Option<i32>, shared: Shared) {
    let (tx, confirmed) = (&shared.tx, &shared.confirmed);
    let application_name = format!("cosigner leader {name}");
    loop {
        let client = match tokio::time::timeout(
            HEARTBEAT_TIMEOUT * 5,
            target.connect(&application_name),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reach the ledger database to contend for the lead");
                standby(tx, None);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("connecting to the ledger database timed out");
                standby(tx, None);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Err(e) = client.batch_execute(SESSION).await {
            tracing::warn!(error = %e, "cannot set up the lock connection");
            standby(tx, None);
            tokio::time::sleep(RETRY).await;
            continue;
        }
        // Attempts on this connection until it fails or the lead is lost; a new connection
        // then, so that a lock it may still hold is released with the old one.
        loop {
            let asked = Instant::now();
            match tokio::time::timeout(HEARTBEAT_TIMEOUT, try_lead(&client, &name, opened)).await {
                Ok(Ok(Attempt::Took(epoch))) => {
                    // Measured from the answer, which came after the epoch moved on.
                    let settles = Instant::now() + TAKEOVER_WAIT;
                    *shared.settles.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((epoch, settles));
                    if let Ok(mut c) = confirmed.lock() {
                        *c = Some((epoch, asked));
                    }
                    tx.send_replace(Role::Leader { epoch });
                    tracing::info!(
                        epoch,
                        name = %name,
                        wait_ms = u64::try_from(TAKEOVER_WAIT.as_millis()).unwrap_or(u64::MAX),
                        "leading: the epoch moved on; no attempt before the old leader's \
                         confirmation window ({} s) and heartbeat timeout ({} s) have passed",
                        CURRENT_FOR.as_secs(),
                        HEARTBEAT_TIMEOUT.as_secs()
                    );
                    match hold(&client, epoch, opened, &shared).await {
                        Lost::Why(why) => {
                            step_down(tx, confirmed);
                            tracing::warn!(epoch, reason = %why, "lead lost: standing by");
                        }
                        Lost::Outdated(found) => outdated(tx, confirmed, found, None),
                    }
                    break;
                }
                Ok(Ok(Attempt::Outdated(found, leader))) => {
                    outdated(tx, confirmed, found, leader);
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Ok(Attempt::Held(leader))) => {
                    standby(tx, leader);
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot contend for the lead");
                    standby(tx, None);
                    break;
                }
                Err(_) => {
                    tracing::warn!("contending for the lead timed out");
                    standby(tx, None);
                    break;
                }
            }
        }
        drop(client);
        tokio::time::sleep(RETRY).await;
    }
}

/// Why this instance may not act as the leader now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLeading {
    /// Another instance leads, or none is known.
    #[error("this instance is a standby ({})", leader_text(.leader.as_deref()))]
    Standby {
        /// The leader's name, when the database shows one.
        leader: Option<String>,
    },
    /// It leads, but has not confirmed its epoch within the last 2 s (a pause, a slow database).
    #[error("the lead at epoch {epoch} is not confirmed within the last 2 s")]
    Unconfirmed {
        /// The epoch it led at.
        epoch: i64,
    },
    /// The ledger's schema is not the one this instance opened (a newer cosigner upgraded it).
    #[error("this instance stands by: {}", outdated_text(*.found))]
    Outdated {
        /// The schema version the ledger has.
        found: i32,
    },
    /// It has just taken the lead and waits out the time an old leader may still count itself
    /// current (see [`TAKEOVER_WAIT`]).
    #[error(
        "the lead was taken at epoch {epoch} {} ms ago; no attempt before an old leader has \
         stopped counting itself current ({} ms left)",
        TAKEOVER_WAIT.as_millis().saturating_sub(u128::from(*.left_ms)),
        .left_ms
    )]
    Settling {
        /// The epoch taken.
        epoch: i64,
        /// How long is left, in ms.
        left_ms: u64,
    },
    /// The lead's epoch is not the one the ledger writes with (a takeover being set up).
    #[error("the ledger writes at epoch {ledger}, the lead is at epoch {lead}")]
    EpochMismatch {
        /// The confirmed lead's epoch.
        lead: i64,
        /// The epoch the ledger's writes carry.
        ledger: i64,
    },
}

fn leader_text(leader: Option<&str>) -> String {
    match leader {
        Some(name) => format!("the leader is {name}"),
        None => "no leader is confirmed".to_string(),
    }
}

/// A pair member's lead as the cycle, the collector and the operator API ask it: leading,
/// confirmed within 2 s, at the very epoch the PostgreSQL ledger writes with.
#[derive(Debug, Clone)]
pub(crate) struct Lead {
    leadership: Arc<Leadership>,
    ledger: Arc<crate::ledger::postgres::PgLedger>,
}

impl Lead {
    /// The lead of `leadership` over `ledger`.
    #[must_use]
    pub(crate) fn new(
        leadership: Arc<Leadership>,
        ledger: Arc<crate::ledger::postgres::PgLedger>,
    ) -> Self {
        Self { leadership, ledger }
    }

    /// The epoch while this instance may decide and send; else why not.
    pub(crate) fn current(&self) -> Result<i64, NotLeading> {
        match self.leadership.is_current() {
            Some(epoch) if epoch == self.ledger.epoch() => match self.leadership.settling(epoch) {
                None => Ok(epoch),
                Some(left) => Err(NotLeading::Settling {
                    epoch,
                    left_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
                }),
            },
            Some(epoch) => Err(NotLeading::EpochMismatch {
                lead: epoch,
                ledger: self.ledger.epoch(),
            }),
            None => match self.leadership.role() {
                Role::Leader { epoch } => Err(NotLeading::Unconfirmed { epoch }),
                Role::Standby { leader } => Err(NotLeading::Standby { leader }),
                Role::Outdated { found, .. } => Err(NotLeading::Outdated { found }),
            },
        }
    }

    /// The role as last published.
    #[must_use]
    pub(crate) fn role(&self) -> Role {
        self.leadership.role()
    }

    /// The leader's name: this instance's while it leads, else the one the database shows.
    #[must_use]
    pub(crate) fn leader_name(&self) -> Option<String> {
        match self.leadership.role() {
            Role::Leader { .. } => Some(self.leadership.name().to_string()),
            Role::Standby { leader } | Role::Outdated { leader, .. } => leader,
        }
    }

    /// Every change of role from now on.
    #[must_use]
    pub(crate) fn subscribe(&self) -> watch::Receiver<Role> {
        self.leadership.subscribe()
    }

    /// The epoch the ledger's writes carry from now on (at takeover).
    pub(crate) fn set_epoch(&self, epoch: i64) {
        self.ledger.set_epoch(epoch);
    }

    /// See [`Leadership::stand_down`].
    pub(crate) fn stand_down(&self) {
        self.leadership.stand_down();
    }

    /// See [`Leadership::on_recorded_mode`].
    pub(crate) fn on_recorded_mode(&self, hook: ModeHook) {
        self.leadership.on_recorded_mode(hook);
    }

    /// At a takeover at `epoch`: waits out what is left of [`TAKEOVER_WAIT`], saying so.
    pub(crate) async fn settle(&self, epoch: i64) {
        let Some(left) = self.leadership.settling(epoch) else {
            return;
        };
        tracing::info!(
            epoch,
            left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            "took the lead: waiting out the longest an old leader may still count itself current \
             (its confirmation window {} s + heartbeat timeout {} s from the epoch's move) before \
             the first attempt",
            CURRENT_FOR.as_secs(),
            HEARTBEAT_TIMEOUT.as_secs()
        );
        tokio::time::sleep(left).await;
    }
}

#[cfg(test)]
mod tests;
