//! The wall clock, injected: one [`Clock`] is read for record times (the ledger), window
//! usage and the check against the newest record (the cycle), request timestamps and the
//! server's `Date` (the client), and readiness (health). A single host reads the system clock
//! (so libfaketime moves it for the clock tests); a pair reads its database's clock, carried
//! between readings on this host's monotonic clock ([`Clock::anchored`]), so that every member
//! stamps and counts by one clock whatever its own says; a test may set one by hand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Another clock's reading (ms since the epoch) and the monotonic instant it holds for,
    /// moved on by the monotonic clock since ([`ClockAnchor`]).
    Anchored(Arc<Mutex<(i64, Instant)>>),
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

    /// A clock that reads `ms` (ms since the epoch) now and moves on with this host's monotonic
    /// clock, whatever its wall clock does, until the returned [`ClockAnchor`] is told of a
    /// newer reading (a pair: the database's `clock_timestamp()`).
    #[must_use]
    pub fn anchored(ms: i64) -> (Self, ClockAnchor) {
        let at = Arc::new(Mutex::new((ms, Instant::now())));
        (
            Self {
                source: Source::Anchored(at.clone()),
            },
            ClockAnchor(at),
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
            Source::Anchored(at) => {
                let (ms, then) = *at.lock().unwrap_or_else(PoisonError::into_inner);
                carried(ms, then, Instant::now())
            }
        }
    }

    /// The time as a `SystemTime`.
    #[must_use]
    pub fn now(&self) -> SystemTime {
        match &self.source {
            Source::System => SystemTime::now(),
            Source::Manual(_) | Source::Anchored(_) => {
                UNIX_EPOCH + Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
            }
        }
    }
}

/// `ms` as it holds at `then`, carried to `now` on the monotonic clock.
fn carried(ms: i64, then: Instant, now: Instant) -> i64 {
    let since = now.saturating_duration_since(then);
    ms.saturating_add(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Tells a [`Clock::anchored`] clock (and every clone of it) what its source reads.
#[derive(Debug, Clone)]
pub struct ClockAnchor(Arc<Mutex<(i64, Instant)>>);

impl ClockAnchor {
    /// Notes that the source clock read `ms` at some moment between `asked` and `answered`
    /// (this host's monotonic clock). The clock keeps its course while that reading agrees with
    /// it, so that it never goes back for a reading that merely took longer to arrive; it takes
    /// `ms` (as of `answered`) when it does not: the source moved or was stepped.
    pub fn observe(&self, ms: i64, asked: Instant, answered: Instant) {
        let mut at = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = carried(at.0, at.1, answered);
        let latest = carried(ms, asked, answered);
        if mine < ms || mine > latest {
            *at = (ms, answered);
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
    fn an_anchored_clock_moves_with_the_monotonic_clock_and_follows_its_source() {
        let (clock, anchor) = Clock::anchored(1_000_000);
        let copy = clock.clone();
        let first = clock.now_ms();
        assert!((1_000_000..1_001_000).contains(&first), "{first}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(copy.now_ms() >= first + 20, "it moves on by itself");
        // A reading it agrees with (within the time the answer took) changes nothing.
        let asked = Instant::now();
        let answered = asked + Duration::from_millis(10);
        let mine = carried(clock.now_ms(), Instant::now(), answered);
        anchor.observe(mine - 5, asked, answered);
        assert!(
            clock.now_ms() >= first + 20,
            "not set back by a slow answer"
        );
        // The source went ahead: followed.
        anchor.observe(5_000_000, asked, answered);
        assert!(clock.now_ms() >= 5_000_000);
        // The source was stepped back: followed too.
        anchor.observe(2_000_000, asked, answered);
        let back = copy.now_ms();
        assert!((2_000_000..2_001_000).contains(&back), "{back}");
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
