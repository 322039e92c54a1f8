//! The wall clock, injected: one [`Clock`] is read for record times (the ledger), window
//! usage and the check against the newest record (the cycle), request timestamps and the
//! server's `Date` (the client), and readiness (health). Production reads the system clock (so
//! libfaketime moves it for the clock tests); a test may instead set one by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall clock, cheap to clone; clones read the same time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone, Default)]
enum Source {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// A time set by hand ([`ManualClock`]), in ms since the epoch.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The system's wall clock.
    #[must_use]
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `start_ms` (ms since the epoch) until moved through the returned
    /// [`ManualClock`] (tests: windows passing, a clock stepped back).
    #[must_use]
    pub fn manual(start_ms: i64) -> (Self, ManualClock) {
        let at = Arc::new(AtomicI64::new(start_ms));
        (
            Self {
                source: Source::Manual(at.clone()),
            },
            ManualClock(at),
        )
    }

    /// Milliseconds since the epoch (0 before it, `i64::MAX` past what fits).
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        match &self.source {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Source::Manual(at) => at.load(Ordering::SeqCst),
        }
    }

    /// The time as a `SystemTime`.
    #[must_use]
    pub(crate) fn now(&self) -> SystemTime {
        match &self.source {
            Source::System => SystemTime::now(),
            Source::Manual(at) => {
                UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(at.load(Ordering::SeqCst)).unwrap_or(0))
            }
        }
    }
}

/// Moves a [`Clock::manual`] clock (and every clone of it).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// Sets the time, in ms since the epoch (backwards too: a clock stepped back).
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            })
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = SystemTime::now();
        let read = Clock::system().now();
        let after = SystemTime::now();
        assert!(before <= read && read <= after);
        let ms = Clock::system().now_ms();
        let sys = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        assert!((sys - ms).abs() < 1000, "{sys} vs {ms}");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_clone_sees_it() {
        let (clock, hand) = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        hand.advance(Duration::from_secs(2));
        assert_eq!(copy.now_ms(), 3_000);
        assert_eq!(copy.now(), UNIX_EPOCH + Duration::from_millis(3_000));
        hand.set_ms(500);
        assert_eq!(clock.now_ms(), 500, "stepped back");
    }
}
