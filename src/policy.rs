//! The merchant's policy: parsed and validated whole at load, then evaluated purely — a pending
//! transaction plus window usage in, an action with its rule, reason and trace out.

mod address;
mod parse;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;

pub(crate) use address::Format;
pub use address::{AddressMatcher, AddressSet};
use address::{address_problem, chain_problem};
pub use parse::{PolicyError, load, parse};

mod evaluate;
use evaluate::Miss;

mod fields;
use fields::{Checked, check_fields};

mod usage;
pub(crate) use usage::Approval;
pub use usage::{Counted, LATE_SEND, Usage, WindowUsage, window_slack};

use crate::domain::{Action, ClockCheck};

/// Longest amount text considered; anything longer is held as malformed.
pub(crate) const MAX_AMOUNT_TEXT: usize = 64;

/// Pseudo-rule recorded when no rule matched.
pub(crate) const RULE_DEFAULT: &str = "(default)";
/// Pseudo-rule recorded when the transaction itself is malformed.
pub(crate) const RULE_MALFORMED: &str = "(malformed)";
/// Pseudo-rule recorded when the guard cap turned an approval into a hold.
pub(crate) const RULE_GUARD: &str = "(guard)";
/// Pseudo-rule recorded when the clock is behind the ledger and an approval waits.
pub(crate) const RULE_CLOCK: &str = "(clock)";
/// Pseudo-rule recorded when an approve rule would match but for the spelling of an account it
/// names (`0x…` for an entry written `T…`): held for a person.
pub(crate) const RULE_SPELLING: &str = "(spelling)";

/// A rolling-window limit on what one approve rule may approve.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowLimit {
    /// Length of the rolling window.
    pub(crate) window: Duration,
    /// Largest sum of amounts approved by the rule in the window, this one included.
    pub(crate) max_total: Option<Decimal>,
    /// Largest number of approvals by the rule in the window, this one included.
    pub(crate) max_count: Option<u64>,
}

/// One rule; all its present conditions must hold for it to decide.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, shown in logs, metrics and the ledger.
    pub name: String,
    /// What the rule decides.
    pub(crate) action: Action,
    /// `chainId` values it applies to, as numbers; any chain when `None`. A canonical chain id
    /// is digits without a leading zero, so its number is the id, and a transaction's chain is
    /// compared once per rule as one integer rather than as text.
    pub(crate) chains: Option<Vec<u128>>,
    /// Source addresses it applies to.
    pub(crate) from: Option<AddressMatcher>,
    /// Destination addresses it applies to.
    pub(crate) to: Option<AddressMatcher>,
    /// Smallest amount, inclusive.
    pub(crate) min_amount: Option<Decimal>,
    /// Largest amount, inclusive.
    pub(crate) max_amount: Option<Decimal>,
    /// Rolling-window limits.
    pub(crate) limit: Option<WindowLimit>,
}

/// A cap over all approvals, whatever rule: beyond it, hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// Length of the rolling window.
    pub(crate) window: Duration,
    /// Most approvals in the window, this one included.
    pub(crate) max_approvals: u64,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it was read from.
    pub(crate) source: PathBuf,
    /// What happens when no rule matches.
    pub default: Action,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// The global approval cap.
    pub guard: Option<Guard>,
    /// The named address lists, as rules share them (to name the entry a look-alike imitates).
    pub lists: BTreeMap<String, Arc<AddressSet>>,
    /// SHA-256 (hex) of the policy text and its list files: the policy's version.
    pub sha256: String,
    /// Chain names for display: the built-in ones plus the policy's `[chains]` table.
    pub chains: crate::display::ChainNames,
    /// The address format the `[chains]` table requires of a chain (by chain id), where the
    /// merchant knows it; no other chain's format is assumed.
    pub(crate) formats: HashMap<u128, Format>,
}

/// What the evaluation may rely on besides the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Window usage.
    pub usage: &'a Usage,
    /// Longest text the key can sign.
    pub max_sign_len: usize,
    /// Whether the wall clock can be trusted for windows: approvals wait when it cannot.
    pub clock: ClockCheck,
}

/// How one rule fared.
#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub(crate) rule: String,
    /// Whether every condition held.
    pub(crate) matched: bool,
    /// The first condition that failed.
    pub why_not: Option<String>,
    /// Window usage the rule saw, when it has a limit.
    pub window: Option<WindowUsage>,
}

/// The outcome of evaluating one transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// What to do.
    pub action: Action,
    /// The rule that decided, or a pseudo-rule such as `(default)` (borrowed: deciding a
    /// transaction that no rule matches allocates nothing for it).
    pub rule: Cow<'static, str>,
    /// Why, as one sentence a person can read (`Display`).
    pub reason: Reason,
    /// The transaction's amount, when it parsed.
    #[serde(skip)]
    pub amount: Option<Decimal>,
    /// Every rule tried, in order.
    pub trace: Vec<RuleTrace>,
}

/// Why an evaluation ended as it did, kept as data: the sentence is written only when a person
/// or the ledger needs it (`Display`, `to_string`), so deciding a transaction writes no text.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// A sentence written already (malformed fields, the clock, the guard, operator modes).
    Text(String),
    /// The rule of this name matched.
    Matched(String),
    /// No rule matched and the policy default applies; with the rule that got furthest (as far
    /// as the amount or the window) and why it missed, when one did.
    NoRule(Option<(String, NearMiss)>),
}

/// How a rule that got as far as the amount or the window missed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearMiss {
    miss: Miss,
    amount: Decimal,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Text(text) => f.write_str(text),
            Reason::Matched(rule) => write!(f, "matched rule {rule:?}"),
            Reason::NoRule(None) => f.write_str("no rule matched; the policy default applies"),
            Reason::NoRule(Some((rule, near))) => write!(
                f,
                "no rule matched (nearest, {rule:?}: {}); the policy default applies",
                near.miss.describe_amount(near.amount)
            ),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What makes two holds (or two waits of one recorded decision) the same: the deciding rule and
/// the kind of reason, whatever numbers its sentence carries (a window's count or total, a
/// clock's skew, a size, a time). A hold is recorded when its key changes, not when its numbers
/// move: the ledger keeps the first sentence, and `policy explain` shows the current numbers.
/// Every feature that acts once per hold (a notification, a list of holds) keys on this.
///
/// The kind is the sentence with every number written outside quotes replaced by `#`: quoted
/// text (rule names, addresses, a hash) is kept whole, so two rules or two contents never
/// share a key.
///
/// It has no `Display`: nothing shows a key to a person (the reason's sentence is what they read).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HoldKey {
    /// The deciding rule or pseudo-rule.
    pub rule: String,
    /// The reason's sentence with its numbers masked.
    pub kind: String,
}

impl HoldKey {
    /// The key of a hold by `rule` for `reason` (as recorded or about to be).
    #[must_use]
    pub fn of(rule: &str, reason: &str) -> Self {
        Self {
            rule: rule.to_string(),
            kind: reason_kind(reason),
        }
    }
}

/// `reason` with each number outside double quotes (digits, with any `.` or `,` between
/// digits) replaced by `#`. Inside quotes (as Rust's `{:?}` and JSON write them, `\"` escaped)
/// everything is kept.
fn reason_kind(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quoted = false;
    let mut escaped = false;
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            quoted = true;
            out.push(c);
        } else if c.is_ascii_digit() {
            // One number: digits, and separators followed by a digit.
            loop {
                match chars.peek() {
                    Some(d) if d.is_ascii_digit() => {
                        chars.next();
                    }
                    Some('.' | ',') => {
                        let mut ahead = chars.clone();
                        ahead.next();
                        if ahead.peek().is_some_and(char::is_ascii_digit) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

impl Policy {
    /// The longest window any limit uses (what the ledger must look back over).
    #[must_use]
    pub(crate) fn longest_window(&self) -> Option<Duration> {
        self.rules
            .iter()
            .filter_map(|r| r.limit.as_ref().map(|l| l.window))
            .chain(self.guard.as_ref().map(|g| g.window))
            .max()
    }

    /// The names of the rules with a window limit.
    pub(crate) fn limited_rules(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter(|r| r.limit.is_some())
            .map(|r| r.name.as_str())
    }

    /// Each limited rule's share of its window limit that `usage` uses (the larger of total and
    /// count), for the `cosigner_window_used_ratio` gauge. A gauge, not money: `f64` is fine.
    pub(crate) fn window_used<'a>(
        &'a self,
        usage: &'a Usage,
    ) -> impl Iterator<Item = (&'a str, f64)> {
        self.rules.iter().filter_map(move |r| {
            let limit = r.limit.as_ref()?;
            let used = usage.rules.get(&r.name).copied().unwrap_or_default();
            let mut ratio: f64 = 0.0;
            if let Some(max) = limit.max_total
                && !max.is_zero()
            {
                let q = used.total / max;
                ratio = ratio.max(q.to_string().parse().unwrap_or(1.0));
            }
            if let Some(max) = limit.max_count {
                ratio = ratio.max(used.count as f64 / max as f64);
            }
            Some((r.name.as_str(), ratio))
        })
    }

    /// Warnings for `cosigner check` and `policy check`: allowed, but worth a second look.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.default == Action::Approve {
            w.push(
                "default = \"approve\": every transaction no rule matches is approved".to_string(),
            );
        }
        for r in &self.rules {
            if r.action == Action::Approve
                && r.to.is_none()
                && r.max_amount.is_none()
                && r.limit.is_none()
            {
                w.push(format!(
                    "rule {:?} approves any destination with no amount or window limit",
                    r.name
                ));
            }
        }
        if self.guard.is_none() && self.rules.iter().any(|r| r.action == Action::Approve) {
            w.push("no [guard]: nothing caps the number of approvals per window".to_string());
        }
        w
    }
}

#[cfg(test)]
mod hold_key_tests;
#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod semantics_tests;
#[cfg(test)]
mod usage_tests;
#[cfg(test)]
mod window_tests;
