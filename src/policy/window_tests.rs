//! The window arithmetic of [`super::window_slack`] at its boundaries: two clocks at the two ends
//! of what the check lets through, an approval leaving as late as its stamp allows, and a second
//! one decided a millisecond either side of the moment the window allows it.

use std::path::Path;
use std::time::Duration;

use rust_decimal::Decimal;

use super::{Approval, LATE_SEND, Policy, Usage, parse, window_slack};
use crate::domain::clock_bound;

const SKEW: Duration = Duration::from_secs(30);
const WINDOW_MS: i64 = 10_000;

fn one_per_ten_seconds() -> Policy {
    parse(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nwindow = \"10s\"\nmax_count = 1\n\
         [guard]\nwindow = \"10s\"\nmax_approvals = 1\n",
        Path::new("policy.toml"),
        &|_| Ok(String::new()),
    )
    .unwrap()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap()
}

/// Usage seen by a clock `o_b` ms off deciding at true time `t_b`, of approval A stamped by a
/// clock `o_a` ms off and leaving (by the server's time) at `t_a`, as late as its stamp allows.
fn usage(o_a: i64, t_a: i64, o_b: i64, t_b: i64, slack: Duration) -> Usage {
    let stamp = t_a - ms(LATE_SEND) + o_a;
    Usage::at(
        &one_per_ten_seconds(),
        t_b + o_b,
        slack,
        [Approval {
            key: 1,
            rule: "t",
            amount: Decimal::ONE,
            at_ms: stamp,
        }],
    )
}

#[test]
fn the_slack_is_twice_the_clock_bound_plus_late_send() {
    assert_eq!(window_slack(SKEW), Duration::from_secs(65));
    assert_eq!(window_slack(SKEW), clock_bound(SKEW) * 2 + LATE_SEND);
}

#[test]
fn an_approval_stamped_by_the_slowest_clock_still_counts_for_the_fastest_until_its_window_has_passed()
 {
    let bound = ms(clock_bound(SKEW));
    let t_a = 1_700_000_000_000;
    let slack = window_slack(SKEW);
    // A's clock as far behind as the check allows, B's as far ahead.
    let just_before = usage(-bound, t_a, bound, t_a + WINDOW_MS - 1, slack);
    assert_eq!(
        just_before.rules["t"].count, 1,
        "A still counts 1 ms before its window ends"
    );
    assert_eq!(just_before.guard_approvals, 1);
    let at_end = usage(-bound, t_a, bound, t_a + WINDOW_MS, slack);
    assert_eq!(
        at_end.rules["t"].count, 0,
        "A's window has passed by the server's time"
    );
    assert_eq!(at_end.guard_approvals, 0);
}

#[test]
fn any_less_slack_fits_a_second_approval_inside_the_window() {
    let bound = ms(clock_bound(SKEW));
    let t_a = 1_700_000_000_000;
    let short = window_slack(SKEW) - Duration::from_millis(1);
    let u = usage(-bound, t_a, bound, t_a + WINDOW_MS - 1, short);
    assert_eq!(
        u.rules["t"].count, 0,
        "a millisecond less slack lets B leave 1 ms inside A's window"
    );
    // The slack before this change (twice the skew): B could leave 5 s inside A's window.
    let old = usage(-bound, t_a, bound, t_a + WINDOW_MS - 5_000, SKEW * 2);
    assert_eq!(old.rules["t"].count, 0);
}

#[test]
fn clocks_nearer_each_other_count_the_approval_no_shorter() {
    let bound = ms(clock_bound(SKEW));
    let t_a = 1_700_000_000_000;
    let slack = window_slack(SKEW);
    for (o_a, o_b) in [
        (0, 0),
        (bound, bound),
        (-bound, -bound),
        (bound, -bound),
        (0, bound),
    ] {
        let u = usage(o_a, t_a, o_b, t_a + WINDOW_MS - 1, slack);
        assert_eq!(u.rules["t"].count, 1, "o_a {o_a} o_b {o_b}");
    }
}
