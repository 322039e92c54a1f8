//! Window usage as the ledger's approvals make it (each approval counted once in every window
//! whose span holds it, and taken out again to be checked anew), how far back the ledger reads
//! for it, and what the `cosigner_window_used_ratio` gauge shows of it.

use std::time::Duration;

use rust_decimal::Decimal;

use super::semantics_tests::parse;
use super::{Approval, Usage, WindowUsage};

const NOW: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

/// A rule counting approvals over a day, and a guard counting them over an hour.
const DAY_RULE_HOUR_GUARD: &str = "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\n\
     window = \"24h\"\nmax_count = 10\n[guard]\nwindow = \"1h\"\nmax_approvals = 10\n";

fn approval(key: u64, amount: i64, at_ms: i64) -> Approval<'static> {
    Approval {
        key,
        rule: "t",
        amount: Decimal::new(amount, 0),
        at_ms,
    }
}

fn window(total: i64, count: u64) -> WindowUsage {
    WindowUsage {
        total: Decimal::new(total, 0),
        count,
    }
}

#[test]
fn an_approval_and_its_re_sends_count_once_in_each_window_that_holds_them() {
    let p = parse(DAY_RULE_HOUR_GUARD).unwrap();
    // Recorded 10 min ago, re-sent 5 min and 1 min ago: one approval of 7.
    let u = Usage::at(
        &p,
        NOW,
        Duration::ZERO,
        [
            approval(1, 7, NOW - HOUR / 6),
            approval(1, 7, NOW - HOUR / 12),
            approval(1, 7, NOW - HOUR / 60),
        ],
    );
    assert_eq!(u.rules["t"], window(7, 1));
    assert_eq!(u.guard_approvals, 1);
}

#[test]
fn an_approval_older_than_the_guard_s_window_counts_for_its_rule_alone() {
    let p = parse(DAY_RULE_HOUR_GUARD).unwrap();
    // Two hours ago: inside the rule's day, outside the guard's hour.
    let u = Usage::at(&p, NOW, Duration::ZERO, [approval(1, 7, NOW - 2 * HOUR)]);
    assert_eq!(u.rules["t"], window(7, 1));
    assert_eq!(u.guard_approvals, 0);
}

#[test]
fn an_approval_taken_out_to_be_checked_again_leaves_the_others_counted() {
    let p = parse(DAY_RULE_HOUR_GUARD).unwrap();
    let u = Usage::at(
        &p,
        NOW,
        Duration::ZERO,
        [
            approval(1, 5, NOW - HOUR / 6),
            approval(2, 7, NOW - HOUR / 12),
        ],
    );
    assert_eq!(u.rules["t"], window(12, 2));
    assert_eq!(u.guard_approvals, 2);
    let without_1 = u.without(1);
    assert_eq!(without_1.rules["t"], window(7, 1));
    assert_eq!(without_1.guard_approvals, 1);
    // One the usage never counted takes nothing out.
    let without_9 = u.without(9);
    assert_eq!(without_9.rules["t"], window(12, 2));
    assert_eq!(without_9.guard_approvals, 2);
}

#[test]
fn the_ledger_reads_back_over_the_longest_window_of_any_rule_or_the_guard() {
    assert_eq!(
        parse(DAY_RULE_HOUR_GUARD).unwrap().longest_window(),
        Some(Duration::from_secs(24 * 3600)),
        "the rule's day is longer than the guard's hour"
    );
    let guard_longer = parse(
        "[[rule]]\nname = \"t\"\naction = \"approve\"\nwindow = \"1h\"\nmax_count = 1\n\
         [guard]\nwindow = \"2h\"\nmax_approvals = 10\n",
    )
    .unwrap();
    assert_eq!(
        guard_longer.longest_window(),
        Some(Duration::from_secs(2 * 3600))
    );
    assert_eq!(
        parse("[[rule]]\nname = \"r\"\naction = \"reject\"\n")
            .unwrap()
            .longest_window(),
        None,
        "no window, nothing to read back"
    );
}

/// A rule with both limits, one without any.
const TWO_LIMITS: &str = "default = \"hold\"\n[[rule]]\nname = \"free\"\naction = \"reject\"\n\
     chains = [\"2\"]\n[[rule]]\nname = \"tier\"\naction = \"approve\"\nwindow = \"24h\"\n\
     max_total = \"1500\"\nmax_count = 3\n";

#[test]
fn the_window_gauge_shows_each_limited_rule_s_larger_share_of_its_limits() {
    let p = parse(TWO_LIMITS).unwrap();
    assert_eq!(p.limited_rules().collect::<Vec<_>>(), ["tier"]);
    let gauge = |total: i64, count: u64| {
        let mut u = Usage::default();
        u.rules.insert("tier".into(), window(total, count));
        p.window_used(&u)
            .map(|(rule, ratio)| (rule.to_string(), ratio))
            .collect::<Vec<_>>()
    };
    assert_eq!(gauge(0, 0), [("tier".to_string(), 0.0)]);
    // 750 of 1500 is half; 1 of 3 a third: the gauge shows the half.
    assert_eq!(gauge(750, 1), [("tier".to_string(), 0.5)]);
    // 150 of 1500 is a tenth; 2 of 3 is two thirds.
    assert_eq!(gauge(150, 2), [("tier".to_string(), 2.0 / 3.0)]);
    assert_eq!(gauge(1500, 3), [("tier".to_string(), 1.0)]);
}
