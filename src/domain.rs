//! The domain core: what the daemon decides about and what it signs, with no dependency on any
//! other module of the crate (only on `rust_decimal`, `serde` and `serde_json`). Every other
//! module speaks these types: the client converts the wire format into them at the edge, the
//! policy and the plan decide on them, the ledger records them.
//!
//! - [`Withdrawal`] and [`TxId`]: a pending withdrawal as listed, fields unjudged;
//! - [`Action`] and [`Verdict`]: what is decided, and what is signed;
//! - [`Decision`], [`decision_text`], [`collect_text`]: the exact texts the key shard signs;
//! - [`parse_decimal`]: exact amounts (never `f64`);
//! - [`ClockCheck`] and [`ClockDoubt`]: what is known about the clock windows rely on, and
//!   [`clock_bound`]: how far off a clock the check lets through can be.
//!
//! Window usage has one implementation too, `policy::Usage::at`: it needs the policy's
//! windows, so it lives with the policy.

mod amount;
mod clock;
mod decision;
mod withdrawal;

pub use amount::parse_decimal;
pub use clock::{ClockCheck, ClockDoubt, DATE_RESOLUTION, REPLY_TRAVEL, clock_bound, judge_clock};
pub use decision::{Action, Decision, UnknownAction, Verdict, collect_text, decision_text};
pub(crate) use decision::{decision_text_len, folded_name, hand_signing_problem};
pub use withdrawal::{TxId, Withdrawal};
