//! Readiness and liveness: when the last poll succeeded, and whether the scheduler still shows
//! life. Shared by the health routes (`http`), the operator API's status and the watchdog.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Clock;

/// How long one cycle may take before the scheduler counts as wedged.
pub(crate) const SCHEDULER_BUDGET: Duration = Duration::from_secs(600);

/// What readiness is judged on.
#[derive(Debug)]
pub(crate) struct Health {
    /// When the last cycle ran to the end (ms since the epoch; 0 = never).
    pub(crate) last_poll_ok_ms: AtomicI64,
    /// The poll interval: ready while the last success is at most two intervals old.
    pub(crate) poll_interval: Duration,
    /// The monotonic origin of `heartbeat_ms`: a wall clock stepped by NTP must not make a
    /// healthy scheduler look wedged, or a wedged one alive.
    started: Instant,
    /// When the scheduler last showed life (a cycle started or ended), in ms after `started`.
    heartbeat_ms: AtomicU64,
    /// The wall clock of `last_poll_ok_ms`.
    clock: Clock,
    /// `Some` while this instance is a standby of a pair: why it is not ready.
    standby: std::sync::Mutex<Option<NotReady>>,
}

impl Health {
    /// A health state with no successful poll yet; the scheduler counts as alive from now.
    /// Poll times are read from `clock`.
    #[must_use]
    pub(crate) fn new(poll_interval: Duration, clock: Clock) -> Self {
        Self {
            last_poll_ok_ms: AtomicI64::new(0),
            poll_interval,
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            clock,
            standby: std::sync::Mutex::new(None),
        }
    }

    /// Notes that this instance is a standby (`Some`, naming the leader when known) or leads
    /// (`None`).
    pub(crate) fn set_standby(&self, standby: Option<Option<String>>) {
        self.set_not_leading(standby.map(|leader| NotReady::Standby { leader }));
    }

    /// Notes that this instance stands by because the ledger's schema is version `found`, not
    /// the one it opened (see `leader::Role::Outdated`).
    pub(crate) fn set_outdated(&self, found: i32, leader: Option<String>) {
        self.set_not_leading(Some(NotReady::Outdated { found, leader }));
    }

    fn set_not_leading(&self, why: Option<NotReady>) {
        match self.standby.lock() {
            Ok(mut s) => *s = why,
            Err(poisoned) => *poisoned.into_inner() = why,
        }
    }

    fn standby(&self) -> Option<NotReady> {
        match self.standby.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes that the scheduler is alive: called at the start and at the end of every cycle,
    /// failed ones included (a restart does not fix an upstream outage).
    pub(crate) fn beat(&self) {
        self.heartbeat_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// True while the scheduler shows life: a beat within one interval plus a generous cycle
    /// budget. The systemd watchdog is fed only then, so a wedged daemon gets restarted.
    pub(crate) fn scheduler_alive(&self) -> bool {
        let age = self
            .elapsed_ms()
            .saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed));
        age <= u64::try_from((self.poll_interval + SCHEDULER_BUDGET).as_millis())
            .unwrap_or(u64::MAX)
    }

    /// Notes a successful poll now.
    pub(crate) fn poll_succeeded(&self) {
        self.last_poll_ok_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not.
    pub(crate) fn readiness(&self) -> Result<(), NotReady> {
        if let Some(why) = self.standby() {
            return Err(why);
        }
        let last = self.last_poll_ok_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err(NotReady::NeverPolled);
        }
        let age = Duration::from_millis(
            u64::try_from(self.clock.now_ms().saturating_sub(last)).unwrap_or(0),
        );
        let limit = self.poll_interval * 2;
        if age > limit {
            return Err(NotReady::PollTooOld {
                age_secs: age.as_secs(),
                limit_secs: limit.as_secs(),
            });
        }
        Ok(())
    }
}

/// Why the daemon is not ready. Serialized as its message (the operator API's
/// `not_ready_reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotReady {
    /// A standby of a pair: healthy, but another instance decides.
    #[error("standby: {}", match .leader {
        Some(name) => format!("{name} leads"),
        None => "no leader is confirmed yet".to_string(),
    })]
    Standby {
        /// The leader's name, when known.
        leader: Option<String>,
    },
    /// A member of a pair on a ledger whose schema is not the one it opened (a newer cosigner
    /// upgraded it): it stands by and writes nothing.
    #[error("standby: {}{}", crate::leader::outdated_text(*.found), match .leader {
        Some(name) => format!("; {name} leads"),
        None => String::new(),
    })]
    Outdated {
        /// The schema version the ledger has.
        found: i32,
        /// The leader's name, when known.
        leader: Option<String>,
    },
    /// No cycle has run to the end yet.
    #[error("no successful poll yet")]
    NeverPolled,
    /// The last cycle that ran to the end is older than two poll intervals.
    #[error("last successful poll {age_secs}s ago (limit {limit_secs}s)")]
    PollTooOld {
        /// Seconds since it ended.
        age_secs: u64,
        /// Two poll intervals, in seconds.
        limit_secs: u64,
    },
}

impl serde::Serialize for NotReady {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_scheduler_stays_alive_while_it_beats_and_not_after() {
        let h = Health::new(Duration::from_secs(120), Clock::system());
        let limit = Duration::from_secs(120) + SCHEDULER_BUDGET;
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(120)).await;
            h.beat();
            assert!(h.scheduler_alive());
        }
        tokio::time::advance(limit).await;
        assert!(h.scheduler_alive(), "exactly at the limit");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!h.scheduler_alive(), "no beat for longer than the limit");
    }

    #[test]
    fn readiness_lasts_two_poll_intervals_after_the_last_successful_poll() {
        let (clock, hand) = Clock::manual(1_700_000_000_000);
        let h = Health::new(Duration::from_secs(120), clock);
        assert_eq!(h.readiness(), Err(NotReady::NeverPolled));
        assert_eq!(NotReady::NeverPolled.to_string(), "no successful poll yet");
        h.poll_succeeded();
        hand.advance(Duration::from_secs(240));
        assert_eq!(h.readiness(), Ok(()), "exactly two intervals");
        hand.advance(Duration::from_secs(1));
        let why = h.readiness().unwrap_err().to_string();
        assert!(why.contains("241s ago (limit 240s)"), "{why}");
    }
}
