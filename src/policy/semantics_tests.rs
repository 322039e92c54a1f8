//! Every semantic of the policy file, evaluated purely (unit tests, so that mutation testing
//! runs them with the library alone: `.ci/mutants policy`).

use std::path::Path;

use crate::client::parse_pending_item;
use crate::domain::{Action, ClockCheck, Decision, TxId, Verdict, Withdrawal, decision_text};
use crate::policy::{self, Context, Policy, Usage, WindowUsage};
use rust_decimal::Decimal;

const TREASURY_TRON: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
const TREASURY_EVM: &str = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";
const HOT: &str = "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg";
const BAD: &str = "TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7";

const EXAMPLE: &str = r#"
default = "hold"

[lists]
treasury = ["TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV", "0x8617E340B3D01FA5F11F306F4090FD50E238070D"]
blocked = ["TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7"]

[[rule]]
name = "blocked destinations"
action = "reject"
to = ["@blocked"]

[[rule]]
name = "treasury payouts"
action = "approve"
chains = ["56", "195", "1"]
to = ["@treasury"]
min_amount = "0.01"
max_amount = "1000"
window = "24h"
max_total = "1500"
max_count = 3

[guard]
window = "1h"
max_approvals = 100
"#;

pub(crate) fn parse(text: &str) -> Result<Policy, policy::PolicyError> {
    policy::parse(text, Path::new("/etc/cosigner/policy.toml"), &|p: &Path| {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found", p.display()),
        ))
    })
}

pub(crate) fn tx(id: TxId, to: &str, amount: &str, chain: &str) -> Withdrawal {
    parse_pending_item(
        &serde_json::json!({"id": id, "fromAddress": HOT, "toAddress": to, "amount": amount, "chainId": chain})
            .to_string(),
    )
    .unwrap()
}

fn eval(p: &Policy, t: &Withdrawal, usage: &Usage) -> (Action, String) {
    let e = p.evaluate(
        t,
        Context {
            usage,
            max_sign_len: 245,
            clock: ClockCheck::Ok,
        },
    );
    (e.action, e.rule.into_owned())
}

#[test]
fn the_first_matching_rule_decides_and_the_default_applies_otherwise() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage::default();
    assert_eq!(
        eval(&p, &tx(TxId::new(1), TREASURY_TRON, "4.1", "195"), &u),
        (Action::Approve, "treasury payouts".into())
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(2), BAD, "4.1", "195"), &u),
        (Action::Reject, "blocked destinations".into())
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(3), HOT, "4.1", "195"), &u),
        (Action::Hold, "(default)".into())
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(4), TREASURY_TRON, "4.1", "2"), &u).0,
        Action::Hold,
        "chain not listed"
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(5), TREASURY_TRON, "1000.01", "195"), &u).0,
        Action::Hold,
        "above max"
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(6), TREASURY_TRON, "1000", "195"), &u).0,
        Action::Approve,
        "max is inclusive"
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(7), TREASURY_TRON, "0.01", "195"), &u).0,
        Action::Approve,
        "min is inclusive"
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(8), TREASURY_TRON, "0.009", "195"), &u).0,
        Action::Hold,
        "below min"
    );
}

#[test]
fn a_rule_s_chains_match_the_chain_id_exactly_up_to_twenty_digits() {
    let evm = "0x8617e340b3d01fa5f11f306f4090fd50e238070d";
    let p = parse(&format!(
        "default = \"hold\"\n[[rule]]\nname = \"big\"\naction = \"approve\"\nchains = [\"56\", \"99999999999999999999\"]\nto = [\"{evm}\"]\n"
    ))
    .unwrap();
    let u = Usage::default();
    for (chain, want) in [
        ("56", Action::Approve),
        ("99999999999999999999", Action::Approve),
        ("5", Action::Hold),
        ("566", Action::Hold),
        ("99999999999999999998", Action::Hold),
        ("1", Action::Hold),
    ] {
        assert_eq!(
            eval(&p, &tx(TxId::new(1), evm, "1", chain), &u).0,
            want,
            "chain {chain}"
        );
    }
    // Not canonical: held as malformed whatever the rules say.
    for chain in ["056", "56 ", "+56", "100000000000000000000"] {
        let (action, rule) = eval(&p, &tx(TxId::new(1), evm, "1", chain), &u);
        assert_eq!(
            (action, rule.as_str()),
            (Action::Hold, "(malformed)"),
            "chain {chain:?}"
        );
    }
}

#[test]
fn the_reason_names_the_matching_rule_or_the_nearest_one_that_missed_only_on_the_amount() {
    let evm = "0x8617e340b3d01fa5f11f306f4090fd50e238070d";
    let p = parse(&format!(
        "default = \"hold\"\n[[rule]]\nname = \"other chain\"\naction = \"approve\"\nchains = [\"1\"]\n\
         [[rule]]\nname = \"small\"\naction = \"approve\"\nto = [\"{evm}\"]\nmax_amount = \"10\"\n"
    ))
    .unwrap();
    let ctx = |u| Context {
        usage: u,
        max_sign_len: 245,
        clock: ClockCheck::Ok,
    };
    let u = Usage::default();
    let reason = |amount: &str, chain: &str| {
        p.decide(&tx(TxId::new(1), evm, amount, chain), ctx(&u))
            .reason
            .to_string()
    };
    assert_eq!(reason("5", "56"), "matched rule \"small\"");
    assert_eq!(
        reason("12.5", "56"),
        "no rule matched (nearest, \"small\": amount 12.5 is above max_amount 10); the policy default applies"
    );
    // A rule that missed on the chain (or an address) is not a near miss.
    let far = parse(
        "default = \"hold\"\n[[rule]]\nname = \"bsc\"\naction = \"approve\"\nchains = [\"56\"]\n",
    )
    .unwrap();
    assert_eq!(
        far.decide(&tx(TxId::new(1), evm, "1", "1"), ctx(&u))
            .reason
            .to_string(),
        "no rule matched; the policy default applies"
    );
}

#[test]
fn a_rule_over_its_window_limit_does_not_match_and_evaluation_goes_on() {
    let text = format!(
        "{EXAMPLE}\n[[rule]]\nname = \"fallback reject\"\naction = \"reject\"\nto = [\"@treasury\"]\n"
    );
    let p = parse(&text).unwrap();
    let mut u = Usage::default();
    u.rules.insert(
        "treasury payouts".into(),
        WindowUsage {
            total: Decimal::new(1400, 0),
            count: 1,
        },
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(1), TREASURY_TRON, "100", "195"), &u).0,
        Action::Approve,
        "1500 is allowed"
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(2), TREASURY_TRON, "100.01", "195"), &u),
        (Action::Reject, "fallback reject".into()),
        "1500.01 exceeds the total, so the next rule decides"
    );
    u.rules.insert(
        "treasury payouts".into(),
        WindowUsage {
            total: Decimal::ONE,
            count: 3,
        },
    );
    let e = p.evaluate(
        &tx(TxId::new(3), TREASURY_TRON, "1", "195"),
        Context {
            usage: &u,
            max_sign_len: 245,
            clock: ClockCheck::Ok,
        },
    );
    assert!(
        e.trace[1]
            .why_not
            .as_deref()
            .unwrap()
            .contains("window count would be 4"),
        "{:?}",
        e.trace
    );
}

#[test]
fn evm_addresses_match_in_any_case_and_tron_addresses_only_exactly() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage::default();
    assert_eq!(
        eval(
            &p,
            &tx(TxId::new(1), &TREASURY_EVM.to_lowercase(), "1", "1"),
            &u
        )
        .0,
        Action::Approve
    );
    for lookalike in [
        TREASURY_TRON.to_lowercase(),
        format!("{TREASURY_TRON} "),
        format!(" {TREASURY_TRON}"),
        TREASURY_TRON.replace('o', "\u{043e}"),
        TREASURY_TRON.replacen('T', "Т", 1),
    ] {
        assert_eq!(
            eval(&p, &tx(TxId::new(2), &lookalike, "1", "195"), &u).0,
            Action::Hold,
            "{lookalike:?}"
        );
    }
}

#[test]
fn a_transaction_with_a_malformed_field_is_held_never_approved_or_rejected() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage::default();
    let long = format!("1{}", "0".repeat(80));
    for amount in [
        "-1",
        "1e3",
        "NaN",
        "",
        "0x10",
        " 1",
        "1.",
        "+1",
        "Infinity",
        long.as_str(),
        "99999999999999999999999999999.5",
    ] {
        let e = p.evaluate(
            &tx(TxId::new(1), TREASURY_TRON, amount, "195"),
            Context {
                usage: &u,
                max_sign_len: 245,
                clock: ClockCheck::Ok,
            },
        );
        assert_eq!(
            (e.action, &*e.rule),
            (Action::Hold, "(malformed)"),
            "amount {amount:?}: {}",
            e.reason
        );
    }
    // A blocked destination with a bad amount is held too: malformed beats reject.
    assert_eq!(
        eval(&p, &tx(TxId::new(2), BAD, "-5", "195"), &u).0,
        Action::Hold
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(3), "", "1", "195"), &u),
        (Action::Hold, "(malformed)".into())
    );
    let missing = parse_pending_item(
        r#"{"id":4,"toAddress":"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV","amount":"1","chainId":"195"}"#,
    )
    .unwrap();
    assert_eq!(eval(&p, &missing, &u).0, Action::Hold);
    let wrong_type = parse_pending_item(r#"{"id":5,"fromAddress":"a","toAddress":"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV","amount":true,"chainId":"195"}"#).unwrap();
    assert_eq!(eval(&p, &wrong_type, &u).0, Action::Hold);
    let e = p.evaluate(
        &tx(TxId::new(6), TREASURY_TRON, "1", "195"),
        Context {
            usage: &u,
            max_sign_len: 100,
            clock: ClockCheck::Ok,
        },
    );
    assert_eq!(e.action, Action::Hold);
    assert!(
        e.reason.to_string().contains("the key signs at most 100"),
        "{}",
        e.reason
    );
}

#[test]
fn an_approval_beyond_the_guard_cap_is_held() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage {
        guard_approvals: 99,
        ..Usage::default()
    };
    assert_eq!(
        eval(&p, &tx(TxId::new(1), TREASURY_TRON, "1", "195"), &u).0,
        Action::Approve
    );
    let u = Usage {
        guard_approvals: 100,
        ..Usage::default()
    };
    assert_eq!(
        eval(&p, &tx(TxId::new(1), TREASURY_TRON, "1", "195"), &u),
        (Action::Hold, "(guard)".into())
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(2), BAD, "1", "195"), &u).0,
        Action::Reject,
        "the guard caps approvals only"
    );
}

#[test]
fn approvals_wait_while_the_clock_is_behind_the_ledger() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage::default();
    let e = p.evaluate(
        &tx(TxId::new(1), TREASURY_TRON, "1", "195"),
        Context {
            usage: &u,
            max_sign_len: 245,
            clock: ClockCheck::BehindLedger,
        },
    );
    assert_eq!((e.action, &*e.rule), (Action::Hold, "(clock)"));
}

#[test]
fn invalid_policies_are_refused_with_the_rule_and_key_named() {
    let cases: &[(&str, &[&str])] = &[
        ("default = \"hold\"\nbogus = 1\n", &["bogus"]),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\ncolour = \"red\"\n",
            &["rule \"a\"", "colour"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"reject\"\n[[rule]]\nname = \"a\"\naction = \"hold\"\n",
            &["rule \"a\"", "earlier rule"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nto = [\"@nope\"]\n",
            &["rule \"a\"", "`to`", "@nope"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nmax_amount = \"-5\"\n",
            &["rule \"a\"", "max_amount", "negative"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nmax_amount = \"1e3\"\n",
            &["max_amount", "plain decimal"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nmax_amount = 1000\n",
            &["max_amount", "strings"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nmin_amount = \"10\"\nmax_amount = \"5\"\n",
            &["min_amount", "above max_amount"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nmax_total = \"10\"\n",
            &["rule \"a\"", "max_total", "window"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nmax_count = 5\n",
            &["max_count", "window"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nwindow = \"1 fortnight\"\nmax_count = 5\n",
            &["window", "invalid duration"],
        ),
        ("[lists]\nempty = []\n", &["list \"empty\"", "empty"]),
        (
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nto = []\n",
            &["`to`", "empty"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"sign\"\n",
            &["action", "approve, reject or hold"],
        ),
        ("[[rule]]\naction = \"approve\"\n", &["name", "required"]),
        ("default = \"maybe\"\n", &["default"]),
        ("[guard]\nwindow = \"1h\"\n", &["guard", "max_approvals"]),
        (
            "[lists]\nx = { file = \"missing.txt\" }\n",
            &["list \"x\"", "missing.txt"],
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"reject\"\nwindow = \"1h\"\nmax_count = 1\n",
            &["only approve rules"],
        ),
    ];
    for (text, needles) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("/etc/cosigner/policy.toml"), "{err}");
        for n in *needles {
            assert!(err.contains(n), "{text:?}: {err:?} lacks {n:?}");
        }
    }
}

#[test]
fn list_files_are_read_relative_to_the_policy_and_change_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, "[lists]\nblocked = { file = \"blocked.txt\" }\n[[rule]]\nname = \"b\"\naction = \"reject\"\nto = [\"@blocked\"]\n").unwrap();
    std::fs::write(
        dir.path().join("blocked.txt"),
        "# scammers\nTBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7  # seen 2026\n\n",
    )
    .unwrap();
    let a = policy::load(&p).unwrap();
    assert_eq!(
        eval(&a, &tx(TxId::new(1), BAD, "1", "1"), &Usage::default()).0,
        Action::Reject
    );
    std::fs::write(dir.path().join("blocked.txt"), "TOther\n").unwrap();
    let b = policy::load(&p).unwrap();
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(a.sha256.len(), 64);
}

#[test]
fn default_approve_is_allowed_but_warned_about() {
    let p = parse("default = \"approve\"\n").unwrap();
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.contains("default = \"approve\""))
    );
    assert!(
        parse(EXAMPLE).unwrap().warnings().is_empty(),
        "{:?}",
        parse(EXAMPLE).unwrap().warnings()
    );
}

#[test]
fn the_shipped_example_policy_parses() {
    let p = policy::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.example.toml"))
        .unwrap();
    assert!(!p.rules.is_empty());
    assert!(p.guard.is_some());
}

#[test]
fn a_tron_shaped_policy_address_with_a_bad_checksum_is_a_typo_and_refused() {
    let typo = format!("{}W", &TREASURY_TRON[..33]);
    let err = parse(&format!(
        "[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{typo}\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("rule \"t\": key `to`"), "{err}");
    assert!(err.contains("not a valid TRON address"), "{err}");
}

fn decide_with(
    p: &Policy,
    t: &Withdrawal,
    usage: &Usage,
    max_sign_len: usize,
) -> (Action, String, String) {
    let e = p.decide(
        t,
        Context {
            usage,
            max_sign_len,
            clock: ClockCheck::Ok,
        },
    );
    (e.action, e.rule.into_owned(), e.reason.to_string())
}

#[test]
fn an_amount_of_exactly_the_longest_text_is_decided_and_one_character_more_is_held() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage::default();
    let longest = format!("{}1", "0".repeat(policy::MAX_AMOUNT_TEXT - 1));
    assert_eq!(
        eval(&p, &tx(TxId::new(1), TREASURY_TRON, &longest, "195"), &u),
        (Action::Approve, "treasury payouts".into()),
        "{longest} is 1"
    );
    let (action, rule, reason) = decide_with(
        &p,
        &tx(TxId::new(2), TREASURY_TRON, &format!("0{longest}"), "195"),
        &u,
        1000,
    );
    assert_eq!((action, rule.as_str()), (Action::Hold, "(malformed)"));
    assert_eq!(reason, "amount is 65 characters long (at most 64)");
}

#[test]
fn a_text_to_sign_of_exactly_the_key_s_limit_is_approved_and_one_byte_more_is_held() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage::default();
    let t = tx(TxId::new(7), TREASURY_TRON, "4.1", "195");
    let len = decision_text(&Decision {
        id: TxId::new(7),
        from: HOT,
        to: TREASURY_TRON,
        value: "4.1",
        chain_id: "195",
        verdict: Verdict::Approve,
    })
    .len();
    assert_eq!(
        decide_with(&p, &t, &u, len),
        (
            Action::Approve,
            "treasury payouts".into(),
            "matched rule \"treasury payouts\"".into()
        )
    );
    assert_eq!(
        decide_with(&p, &t, &u, len - 1),
        (
            Action::Hold,
            "(malformed)".into(),
            format!(
                "the text to sign is {len} bytes; the key signs at most {}",
                len - 1
            )
        )
    );
}

#[test]
fn a_rule_one_approval_short_of_its_window_count_approves_once_more() {
    let p = parse(EXAMPLE).unwrap();
    let mut u = Usage::default();
    u.rules.insert(
        "treasury payouts".into(),
        WindowUsage {
            total: Decimal::ONE,
            count: 2,
        },
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(1), TREASURY_TRON, "1", "195"), &u),
        (Action::Approve, "treasury payouts".into()),
        "the third of max_count = 3"
    );
}

/// `addr`'s account written in TRON's hex form (`41…`) and as an EVM address (`0x…`).
fn other_spellings(addr: &str) -> (String, String) {
    let hex = crate::display::hex(&super::address::account_of(addr).unwrap());
    (format!("41{hex}"), format!("0x{hex}"))
}

#[test]
fn a_reject_rule_names_an_account_in_every_spelling() {
    let p = parse(EXAMPLE).unwrap();
    let u = Usage::default();
    let (tron_hex, evm) = other_spellings(BAD);
    for spelling in [
        BAD.to_string(),
        tron_hex,
        evm.clone(),
        evm.to_uppercase().replacen("0X", "0x", 1),
    ] {
        assert_eq!(
            eval(&p, &tx(TxId::new(1), &spelling, "1", "195"), &u),
            (Action::Reject, "blocked destinations".into()),
            "{spelling}"
        );
    }
}

#[test]
fn an_approve_rule_holds_another_spelling_of_its_entry_and_names_the_entry() {
    let u = Usage::default();
    let (tron_hex, evm) = other_spellings(TREASURY_TRON);
    let listed = parse(EXAMPLE).unwrap();
    let own = parse(&format!(
        "default = \"hold\"\n[[rule]]\nname = \"own\"\naction = \"approve\"\nto = [\"{TREASURY_TRON}\"]\n"
    ))
    .unwrap();
    for (p, rule, entry) in [
        (
            &listed,
            "treasury payouts",
            format!("list \"treasury\" entry {TREASURY_TRON}"),
        ),
        (&own, "own", format!("entry {TREASURY_TRON}")),
    ] {
        for spelling in [&tron_hex, &evm] {
            assert_eq!(
                decide_with(p, &tx(TxId::new(1), spelling, "1", "195"), &u, 245),
                (
                    Action::Hold,
                    "(spelling)".into(),
                    format!(
                        "toAddress {spelling} is another spelling of {entry}: rule \"{rule}\" \
                         approves only the spelling its entry is written in, so a person decides"
                    )
                )
            );
        }
    }
}

#[test]
fn a_trace_says_which_address_a_rule_missed_on() {
    let p = parse(&format!(
        "default = \"hold\"\n[[rule]]\nname = \"from bad\"\naction = \"reject\"\nfrom = [\"{BAD}\"]\n\
         [[rule]]\nname = \"hot to treasury\"\naction = \"approve\"\nfrom = [\"{HOT}\"]\n\
         to = [\"{TREASURY_TRON}\"]\n"
    ))
    .unwrap();
    let e = p.evaluate(
        &tx(TxId::new(1), TREASURY_EVM, "1", "195"),
        Context {
            usage: &Usage::default(),
            max_sign_len: 245,
            clock: ClockCheck::Ok,
        },
    );
    let why: Vec<_> = e.trace.iter().map(|t| t.why_not.as_deref()).collect();
    assert_eq!(
        why,
        [
            Some(format!("from {HOT} is not in from").as_str()),
            Some(format!("to {TREASURY_EVM} is not in to").as_str()),
        ]
    );
}

#[test]
fn the_nearest_rule_of_a_hold_is_the_first_that_got_furthest() {
    let p = parse(
        "default = \"hold\"\n[[rule]]\nname = \"small\"\naction = \"approve\"\nmax_amount = \"10\"\n\
         [[rule]]\nname = \"daily a\"\naction = \"approve\"\nwindow = \"24h\"\nmax_count = 1\n\
         [[rule]]\nname = \"daily b\"\naction = \"approve\"\nwindow = \"24h\"\nmax_count = 1\n",
    )
    .unwrap();
    let mut u = Usage::default();
    for rule in ["daily a", "daily b"] {
        u.rules.insert(
            rule.into(),
            WindowUsage {
                total: Decimal::ONE,
                count: 1,
            },
        );
    }
    // "small" misses on the amount, both daily rules further on, at the window.
    assert_eq!(
        decide_with(&p, &tx(TxId::new(1), HOT, "20", "195"), &u, 245),
        (
            Action::Hold,
            "(default)".into(),
            "no rule matched (nearest, \"daily a\": window count would be 2 (limit 1 per 1day)); \
             the policy default applies"
                .into()
        )
    );
}

#[test]
fn only_0x_and_41_spellings_are_hex_and_compare_without_case() {
    let hex = "ABCDEF0123456789ABCDEF0123456789ABCDEF01";
    let p = parse(&format!(
        "default = \"hold\"\n[[rule]]\nname = \"r\"\naction = \"approve\"\nto = [\"41{hex}\", \"42{hex}\"]\n"
    ))
    .unwrap();
    let u = Usage::default();
    let lower = hex.to_lowercase();
    assert_eq!(
        eval(&p, &tx(TxId::new(1), &format!("41{lower}"), "1", "1"), &u),
        (Action::Approve, "r".into())
    );
    assert_eq!(
        eval(&p, &tx(TxId::new(2), &format!("42{hex}"), "1", "1"), &u),
        (Action::Approve, "r".into())
    );
    // `42…` is not a spelling of an account: compared as written, case included.
    assert_eq!(
        eval(&p, &tx(TxId::new(3), &format!("42{lower}"), "1", "1"), &u),
        (Action::Hold, "(default)".into())
    );
}
