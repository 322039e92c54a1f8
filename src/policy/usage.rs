//! Window usage: what the recorded approvals (and their re-sends) count against each rule's
//! windows, from the last moment each may have left.

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;

use super::Policy;

/// Approvals a rule (or the guard) made inside its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowUsage {
    /// Sum of approved amounts.
    pub total: Decimal,
    /// Number of approvals.
    pub count: u64,
}

/// Window usage as of now, from the ledger.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Per rule name, within that rule's window.
    pub rules: HashMap<String, WindowUsage>,
    /// All approvals within the guard's window.
    pub guard_approvals: u64,
    /// Where each recorded approval (by ledger sequence number) is counted, so that one can be
    /// taken out when it is checked again, and counted once however often it is re-sent.
    pub counted: HashMap<u64, Counted>,
}

/// One approval as windows count it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Approval<'a> {
    /// Which recorded approval (its ledger sequence number): it counts once per window however
    /// many times it appears (record, re-sends).
    pub(crate) key: u64,
    /// The rule that approved it (at this time).
    pub(crate) rule: &'a str,
    /// Its amount.
    pub(crate) amount: Decimal,
    /// When (ms since the epoch).
    pub(crate) at_ms: i64,
}

/// Where one recorded approval is counted.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Its amount.
    pub amount: Decimal,
    /// The rules whose windows count it.
    pub rules: Vec<String>,
    /// Whether the guard's window counts it.
    pub guard: bool,
}

impl Usage {
    /// Counts one more approval of `amount` by `rule` (used within a cycle, before the ledger
    /// is read again).
    pub fn add_approval(&mut self, rule: &str, amount: Decimal) {
        let u = self.rules.entry(rule.to_string()).or_default();
        u.total = u.total.checked_add(amount).unwrap_or(Decimal::MAX);
        u.count += 1;
        self.guard_approvals += 1;
    }

    /// Counts the recorded approval `seq` in `rule`'s window (when given) and the guard's (when
    /// `guard`), unless it is counted there already.
    pub(crate) fn count_recorded(
        &mut self,
        seq: u64,
        amount: Decimal,
        rule: Option<&str>,
        guard: bool,
    ) {
        let c = self.counted.entry(seq).or_insert_with(|| Counted {
            amount,
            ..Counted::default()
        });
        if let Some(rule) = rule
            && !c.rules.iter().any(|r| r == rule)
        {
            c.rules.push(rule.to_string());
            let u = self.rules.entry(rule.to_string()).or_default();
            u.total = u.total.checked_add(amount).unwrap_or(Decimal::MAX);
            u.count += 1;
        }
        if guard && !c.guard {
            c.guard = true;
            self.guard_approvals += 1;
        }
    }

    /// Window usage for `policy` at `now_ms` from `approvals`: the one place windows are
    /// computed (the ledger's usage and `policy replay` both come here). Each approval counts once
    /// per window whose span holds any of its times (its record, its re-sends).
    ///
    /// Each window reaches `slack` further back than its length: the daemon passes
    /// [`window_slack`], so that records stamped by clocks the check lets through can never fit
    /// an extra approval into a window (the arithmetic is written there).
    pub(crate) fn at<'a>(
        policy: &Policy,
        now_ms: i64,
        slack: Duration,
        approvals: impl IntoIterator<Item = Approval<'a>>,
    ) -> Usage {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let inside = |window: Duration, at: i64| {
            at > now_ms.saturating_sub(ms(window.saturating_add(slack)))
        };
        let mut usage = Usage::default();
        for rule in &policy.rules {
            if rule.limit.is_some() {
                usage
                    .rules
                    .insert(rule.name.clone(), WindowUsage::default());
            }
        }
        for a in approvals {
            let in_rule = policy
                .rules
                .iter()
                .find(|r| r.name == a.rule)
                .and_then(|r| r.limit.as_ref())
                .is_some_and(|l| inside(l.window, a.at_ms));
            let in_guard = policy
                .guard
                .as_ref()
                .is_some_and(|g| inside(g.window, a.at_ms));
            if in_rule || in_guard {
                usage.count_recorded(a.key, a.amount, in_rule.then_some(a.rule), in_guard);
            }
        }
        usage
    }

    /// The usage without the recorded approval `seq` (to check it again without counting it
    /// twice). Which approvals are counted where is not carried over.
    #[must_use]
    pub(crate) fn without(&self, seq: u64) -> Usage {
        let mut u = Usage {
            rules: self.rules.clone(),
            guard_approvals: self.guard_approvals,
            counted: HashMap::new(),
        };
        if let Some(c) = self.counted.get(&seq) {
            for r in &c.rules {
                if let Some(w) = u.rules.get_mut(r) {
                    w.count = w.count.saturating_sub(1);
                    w.total = (w.total - c.amount).max(Decimal::ZERO);
                }
            }
            if c.guard {
                u.guard_approvals = u.guard_approvals.saturating_sub(1);
            }
        }
        u
    }
}

/// How long after the moment its latest record (decision or `resend` event) was stamped an
/// approval's attempt may still leave on that record. It is measured on the monotonic clock from
/// before the stamp was taken (so a slow commit, a wait for the pool or a slow re-send event
/// counts against it); an attempt later than this records a `resend` event first, or waits for
/// the next cycle.
pub const LATE_SEND: Duration = Duration::from_secs(1);

/// How much further back than its length every window reaches, for `api.max_clock_skew` = M:
/// `2 × clock_bound(M) + LATE_SEND` = 2 × (M + 1 s for `Date`'s whole seconds + 1 s for the
/// answer's travel) + 1 s; 65 s for the default M = 30 s.
///
/// Why it is enough. Times are the server's (it times arrivals); a clock reads the server's time
/// plus its offset `o`, and the check (`domain::judge_clock`, before a cycle decides and before
/// every attempt) lets through only clocks with `|o| ≤ clock_bound(M)`. Approval A carries the
/// stamp `T_A`, taken at true time `T_A - o_A`, and leaves by `T_A - o_A + LATE_SEND`. A later
/// approval B of the same window `L` is decided when the clock reads `now_B = t_B + o_B` and
/// leaves at `t_B` or later. A is counted unless `T_A ≤ now_B - L - slack`; when it is not,
///
/// `t_B - t_A ≥ (now_B - o_B) - (T_A - o_A + LATE_SEND) ≥ L + slack - (o_B - o_A) - LATE_SEND`,
///
/// which is at least `L` as `o_B - o_A ≤ 2 × clock_bound(M)`. The tests beside it put A and B
/// at the two ends of the bound and B one millisecond either side of `t_A + L`.
#[must_use]
pub fn window_slack(max_clock_skew: Duration) -> Duration {
    crate::domain::clock_bound(max_clock_skew)
        .saturating_mul(2)
        .saturating_add(LATE_SEND)
}
