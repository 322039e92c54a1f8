//! What is known about the wall clock that window arithmetic relies on, and how far a clock the
//! server's `Date` lets through can be off (the bound `policy::window_slack` builds on).

use std::fmt;
use std::time::Duration;

/// `Date` names a whole second: the server's time was somewhere in that second.
pub const DATE_RESOLUTION: Duration = Duration::from_secs(1);

/// How long the answer carrying a `Date` may have taken (from the request leaving to its answer's
/// headers arriving) within the allowance: the server wrote `Date` at some moment in between, so
/// a slower answer leaves the clock's offset less certain, and the check counts all of it.
pub const REPLY_TRAVEL: Duration = Duration::from_secs(1);

/// The most a clock that the check lets through can be off the server's, either way:
/// `max_clock_skew + DATE_RESOLUTION + REPLY_TRAVEL`. The check ([`judge_clock`]) takes the skew
/// at its maximum, so this holds for certain; a clock within `max_clock_skew` is always let
/// through when its answer took at most [`REPLY_TRAVEL`].
#[must_use]
pub fn clock_bound(max_clock_skew: Duration) -> Duration {
    max_clock_skew
        .saturating_add(DATE_RESOLUTION)
        .saturating_add(REPLY_TRAVEL)
}

/// Judges a clock by one `Date`: `ahead_ms` is this clock's reading minus the `Date` (as it
/// would be now: the time since the answer came taken out on the monotonic clock), `took_ms` how
/// long that answer took. The clock's offset `o` from the server's lies in
/// `(ahead_ms - DATE_RESOLUTION - took_ms, ahead_ms]`; it is doubted unless that whole interval
/// lies within ±[`clock_bound`].
#[must_use]
pub fn judge_clock(ahead_ms: i64, took_ms: i64, max_clock_skew: Duration) -> Option<ClockDoubt> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let bound = ms(clock_bound(max_clock_skew));
    let least = ahead_ms
        .saturating_sub(ms(DATE_RESOLUTION))
        .saturating_sub(took_ms.max(0));
    let seconds = |v: i64| v.unsigned_abs().div_ceil(1000);
    if ahead_ms > bound {
        Some(ClockDoubt::Off {
            ahead: true,
            seconds: seconds(ahead_ms),
        })
    } else if least < -bound {
        Some(ClockDoubt::Off {
            ahead: false,
            seconds: seconds(least),
        })
    } else {
        None
    }
}

/// Why the host clock cannot be trusted, as the server's `Date` headers show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockDoubt {
    /// No response carried a `Date`.
    Unknown,
    /// Possibly more than the allowed skew off.
    Off {
        /// Ahead of the server (else behind).
        ahead: bool,
        /// By up to how many seconds.
        seconds: u64,
    },
}

impl fmt::Display for ClockDoubt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockDoubt::Unknown => f.write_str("the server sent no Date to compare the clock with"),
            ClockDoubt::Off { ahead, seconds } => write!(
                f,
                "the clock may be {seconds} s {} the server's",
                if *ahead { "ahead of" } else { "behind" }
            ),
        }
    }
}

/// What is known about the wall clock that window arithmetic relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockCheck {
    /// Nothing wrong is known.
    #[default]
    Ok,
    /// The clock is behind the newest ledger record: windows could be counted twice.
    BehindLedger,
    /// The clock may be off the server's `Date` by more than [`clock_bound`], or no `Date` came
    /// to compare it with: windows could look empty too early now, or later.
    OffServer(ClockDoubt),
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(30);

    #[test]
    fn the_bound_is_the_allowed_skew_plus_the_dates_second_plus_the_answers_travel() {
        assert_eq!(clock_bound(SKEW), Duration::from_secs(32));
    }

    #[test]
    fn a_clock_is_let_through_exactly_while_its_offset_can_be_at_most_the_bound_either_way() {
        // Ahead: the offset is at most `ahead_ms`.
        assert_eq!(judge_clock(32_000, 0, SKEW), None);
        assert_eq!(
            judge_clock(32_001, 0, SKEW),
            Some(ClockDoubt::Off {
                ahead: true,
                seconds: 33
            })
        );
        // Behind: the offset is more than `ahead_ms - 1 s - took`.
        assert_eq!(judge_clock(-31_000, 0, SKEW), None);
        assert_eq!(
            judge_clock(-31_001, 0, SKEW)
                .map(|d| d.to_string())
                .as_deref(),
            Some("the clock may be 33 s behind the server's")
        );
        // A slow answer widens the doubt by all it took.
        assert_eq!(judge_clock(-30_000, 1_000, SKEW), None);
        assert!(judge_clock(-30_000, 1_001, SKEW).is_some());
    }

    #[test]
    fn a_clock_within_the_allowed_skew_passes_whatever_the_dates_second_when_the_answer_is_quick() {
        // True offset o within ±30 s; the server wrote Date at `frac` into its second, and the
        // answer took `took` (at most REPLY_TRAVEL), of which `back` on the way back.
        for o in [-30_000, -12_345, 0, 29_999, 30_000] {
            for frac in [0, 1, 500, 999] {
                for (took, back) in [(0, 0), (1_000, 0), (1_000, 1_000), (700, 300)] {
                    let ahead_ms = o + frac + back;
                    assert_eq!(
                        judge_clock(ahead_ms, took, SKEW),
                        None,
                        "o {o} frac {frac} took {took}"
                    );
                }
            }
        }
    }
}
