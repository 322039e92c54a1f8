//! Property tests: the amount parser, address matching, and policy monotonicity.

use crate::domain::{Action, ClockCheck, TxId, parse_decimal};
use crate::policy::{AddressSet, Context, Policy, Usage, WindowUsage};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::semantics_tests::{parse, tx};

const ADDRS: [&str; 4] = [
    "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV",
    "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0x52908400098527886E0F7030069857D2E4169EE7",
];

proptest! {
    #[test]
    fn a_plain_decimal_parses_to_its_exact_value(int in 0u64..1_000_000_000_000, frac in 0u32..1_000_000, scale in 0u32..7) {
        let frac = if scale == 0 { 0 } else { frac % 10u32.pow(scale) };
        let text = if scale == 0 { int.to_string() } else { format!("{int}.{frac:0width$}", width = scale as usize) };
        let d = parse_decimal(&text).unwrap();
        let expected = Decimal::from(int) + Decimal::new(i64::from(frac), scale);
        prop_assert_eq!(d, expected);
    }

    #[test]
    fn whatever_parses_is_a_plain_decimal(s in "\\PC{0,40}") {
        if parse_decimal(&s).is_some() {
            let body = s.strip_prefix('-').unwrap_or(&s);
            let (i, f) = body.split_once('.').unwrap_or((body, "0"));
            prop_assert!(!i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()), "{}", s);
            prop_assert!(!f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()), "{}", s);
        }
    }

    #[test]
    fn an_evm_address_matches_in_any_case(addr in "0x[0-9a-fA-F]{40}", flips in proptest::collection::vec(any::<bool>(), 42)) {
        let mut set = AddressSet::default();
        set.insert(&addr);
        let varied: String = addr.chars().zip(flips).enumerate().map(|(i, (c, f))| {
            if i < 2 || !f { c } else if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }
        }).collect();
        prop_assert!(set.contains(&varied));
        let padded = format!(" {addr}");
        prop_assert!(!set.contains(&padded));
    }

    #[test]
    fn any_change_to_a_non_evm_address_stops_it_matching(addr in "T[1-9A-HJ-NP-Za-km-z]{33}", pos in 1usize..34, tweak in 0u8..3) {
        let mut set = AddressSet::default();
        set.insert(&addr);
        prop_assert!(set.contains(&addr));
        let chars: Vec<char> = addr.chars().collect();
        let c = chars[pos];
        let replaced = match tweak {
            0 if c.is_ascii_uppercase() => c.to_ascii_lowercase(),
            0 if c.is_ascii_lowercase() => c.to_ascii_uppercase(),
            1 => '\u{0430}',
            _ => ' ',
        };
        if replaced != c {
            let mut other = chars.clone();
            other[pos] = replaced;
            let other: String = other.into_iter().collect();
            prop_assert!(!set.contains(&other), "{} vs {}", addr, other);
        }
    }
}

#[derive(Debug, Clone)]
struct Limits {
    max_amount: u32,
    max_total: u32,
    max_count: u32,
    guard: u32,
}

fn policy_text(l: &Limits, top_reject: Option<&str>, default: &str) -> String {
    let mut t = format!("default = \"{default}\"\n");
    if let Some(to) = top_reject {
        t += &format!("[[rule]]\nname = \"top reject\"\naction = \"reject\"\nto = [\"{to}\"]\n");
    }
    t += &format!(
        "[[rule]]\nname = \"limited\"\naction = \"approve\"\nto = [\"{}\", \"{}\"]\nmax_amount = \"{}\"\nwindow = \"1h\"\nmax_total = \"{}\"\nmax_count = {}\n",
        ADDRS[0],
        ADDRS[2],
        l.max_amount,
        l.max_total,
        l.max_count.max(1)
    );
    t += &format!(
        "[[rule]]\nname = \"open\"\naction = \"approve\"\nto = [\"{}\"]\nmax_amount = \"{}\"\n",
        ADDRS[1], l.max_amount
    );
    t += &format!("[guard]\nwindow = \"1h\"\nmax_approvals = {}\n", l.guard);
    t
}

fn limits() -> impl Strategy<Value = Limits> {
    (1u32..500, 1u32..2000, 1u32..20, 0u32..50).prop_map(
        |(max_amount, max_total, max_count, guard)| Limits {
            max_amount,
            max_total,
            max_count,
            guard,
        },
    )
}

fn lowered() -> impl Strategy<Value = (Limits, Limits)> {
    (limits(), 0u32..500, 0u32..2000, 0u32..20, 0u32..50).prop_map(|(hi, a, t, c, g)| {
        let lo = Limits {
            max_amount: hi.max_amount.saturating_sub(a).max(1),
            max_total: hi.max_total.saturating_sub(t).max(1),
            max_count: hi.max_count.saturating_sub(c).max(1),
            guard: hi.guard.saturating_sub(g),
        };
        (hi, lo)
    })
}

fn approves(p: &Policy, id: TxId, to: &str, amount: u32, usage: &Usage) -> bool {
    let t = tx(id, to, &amount.to_string(), "195");
    p.evaluate(
        &t,
        Context {
            usage,
            max_sign_len: 245,
            clock: ClockCheck::Ok,
        },
    )
    .action
        == Action::Approve
}

fn usage(total: u32, count: u64, guard: u64) -> Usage {
    let mut u = Usage {
        guard_approvals: guard,
        ..Usage::default()
    };
    u.rules.insert(
        "limited".into(),
        WindowUsage {
            total: Decimal::from(total),
            count,
        },
    );
    u
}

proptest! {
    #[test]
    fn adding_a_reject_rule_at_the_top_never_adds_an_approval(
        l in limits(), to in 0usize..4, reject_to in 0usize..4, amount in 0u32..600,
        used_total in 0u32..2000, used_count in 0u64..20, guard_used in 0u64..50,
    ) {
        let base = parse(&policy_text(&l, None, "approve")).unwrap();
        let with_reject = parse(&policy_text(&l, Some(ADDRS[reject_to]), "approve")).unwrap();
        let u = usage(used_total, used_count, guard_used);
        if approves(&with_reject, TxId::new(1), ADDRS[to], amount, &u) {
            prop_assert!(approves(&base, TxId::new(1), ADDRS[to], amount, &u));
        }
    }

    #[test]
    fn lowering_a_limit_never_turns_a_transaction_into_an_approval(
        (hi, lo) in lowered(), to in 0usize..4, amount in 0u32..600,
        used_total in 0u32..2000, used_count in 0u64..20, guard_used in 0u64..50,
    ) {
        let high = parse(&policy_text(&hi, None, "hold")).unwrap();
        let low = parse(&policy_text(&lo, None, "hold")).unwrap();
        let u = usage(used_total, used_count, guard_used);
        if approves(&low, TxId::new(1), ADDRS[to], amount, &u) {
            prop_assert!(approves(&high, TxId::new(1), ADDRS[to], amount, &u));
        }
    }

    // Over a sequence, with no max_total, a lower max_amount, max_count or guard never
    // approves more. (Where a max_total applies, fewer can be more: first-come evaluation is
    // greedy, so one large early approval may use up room that a lower limit would have left to
    // several small later ones. What holds for every limit is the safety property below.)
    #[test]
    fn over_a_sequence_a_lower_amount_count_or_guard_limit_never_approves_more(
        (hi, lo) in lowered(), amounts in proptest::collection::vec(0u32..300, 1..40),
    ) {
        prop_assert!(run_sequence(&one_rule(&lo, false), &amounts).0 <= run_sequence(&one_rule(&hi, false), &amounts).0);
    }

    #[test]
    fn over_a_sequence_no_window_limit_or_guard_is_ever_exceeded(
        l in limits(), amounts in proptest::collection::vec(0u32..300, 1..60),
    ) {
        let (count, total) = run_sequence(&one_rule(&l, true), &amounts);
        prop_assert!(count <= u64::from(l.max_count.max(1)));
        prop_assert!(count <= u64::from(l.guard));
        prop_assert!(total <= Decimal::from(l.max_total));
    }
}

fn one_rule(l: &Limits, with_total: bool) -> Policy {
    let total = if with_total {
        format!("max_total = \"{}\"\n", l.max_total)
    } else {
        String::new()
    };
    parse(&format!(
        "[[rule]]\nname = \"limited\"\naction = \"approve\"\nmax_amount = \"{}\"\nwindow = \"1h\"\n{total}max_count = {}\n[guard]\nwindow = \"1h\"\nmax_approvals = {}\n",
        l.max_amount, l.max_count.max(1), l.guard
    ))
    .unwrap()
}

/// Evaluates `amounts` in order, counting each approval in the window; returns (count, total).
fn run_sequence(p: &Policy, amounts: &[u32]) -> (u64, Decimal) {
    let mut u = Usage::default();
    let mut n = 0;
    let mut total = Decimal::ZERO;
    for (i, a) in amounts.iter().enumerate() {
        if approves(p, TxId::new(i as u64), ADDRS[0], *a, &u) {
            u.add_approval("limited", Decimal::from(*a));
            n += 1;
            total += Decimal::from(*a);
        }
    }
    (n, total)
}
