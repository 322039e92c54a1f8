//! What is known about the wall clock that window arithmetic relies on.

use std::fmt;

/// Why the host clock cannot be trusted, as the server's `Date` headers show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockDoubt {
    /// No response carried a `Date`.
    Unknown,
    /// More than the allowed skew off.
    Off {
        /// Ahead of the server (else behind).
        ahead: bool,
        /// By how many seconds.
        seconds: u64,
    },
}

impl fmt::Display for ClockDoubt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockDoubt::Unknown => f.write_str("the server sent no Date to compare the clock with"),
            ClockDoubt::Off { ahead, seconds } => write!(
                f,
                "the clock is {seconds} s {} the server's",
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
    /// The clock is off the server's `Date` by more than the allowed skew, or no `Date` came to
    /// compare it with: windows could look empty too early now, or later.
    OffServer(ClockDoubt),
}
