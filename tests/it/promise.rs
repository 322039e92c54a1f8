//! The central promise under attack: never approve what the policy in force forbids, never send
//! two different decisions for one id. Each test reproduces an attack an independent review used
//! to break it, and a property test throws random interleavings of all of them at the cycle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cosigner::client::APPROVE;
use cosigner::control::Mode;
use cosigner::domain::{Action, ClockCheck};
use cosigner::ledger::Status;
use cosigner::policy::{self, Context, Usage};
use cosigner_sandbox::server::Faults;
use proptest::prelude::*;
use serde_json::Value;

use crate::support::*;

const EVM_BLOCKED: &str = "0x000000000000000000000000000000000000dEaD";

/// A reject rule for a list and for a whole chain, then an approve rule bounded only by amount:
/// anything that slips past the reject rules is approved.
fn disguise_policy() -> String {
    format!(
        r#"default = "hold"
[lists]
blocked = ["{BAD}", "{EVM_BLOCKED}"]
[[rule]]
name = "blocked"
action = "reject"
to = ["@blocked"]
[[rule]]
name = "no bsc"
action = "reject"
chains = ["56"]
[[rule]]
name = "small"
action = "approve"
max_amount = "100"
"#
    )
}

#[tokio::test]
async fn disguised_destinations_and_chain_ids_are_held_never_approved_or_rejected() {
    let disguised_to = [
        (10, format!("{BAD} ")),
        (11, format!("{BAD}\u{a0}")),
        (12, format!("TBad\u{200b}{}", &BAD[4..])),
        (13, format!("TBad\u{200d}{}", &BAD[4..])),
        (14, format!("\u{feff}{BAD}")),
        (15, format!("\t{BAD}")),
    ];
    let mut items: Vec<String> = disguised_to
        .iter()
        .map(|(id, to)| item(TxId::new(*id), HOT, to, "1", "195"))
        .collect();
    items.push(item(
        TxId::new(16),
        HOT,
        &EVM_BLOCKED.replacen("0x", "0X", 1),
        "1",
        "1",
    ));
    // TRON addresses of the right shape (34 base58 characters from `T`) whose base58check
    // checksum fails: one character of an address no rule names, changed.
    items.push(item(
        TxId::new(17),
        HOT,
        &bad_checksum(STRANGER),
        "1",
        "195",
    ));
    items.push(item(
        TxId::new(18),
        &bad_checksum(HOT),
        STRANGER,
        "1",
        "195",
    ));
    for (id, chain) in [(20, "056"), (21, " 56"), (22, "56\u{200b}"), (23, "56 ")] {
        items.push(item(TxId::new(id), HOT, STRANGER, "1", chain));
    }
    // Controls: the same destinations and chain written canonically.
    items.push(item(TxId::new(30), HOT, BAD, "1", "195"));
    items.push(item(TxId::new(31), HOT, EVM_BLOCKED, "1", "1"));
    items.push(item(TxId::new(32), HOT, STRANGER, "1", "56"));
    items.push(item(TxId::new(33), HOT, STRANGER, "1", "195"));
    let sb = start_sandbox(scenario(items)).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &disguise_policy(), small_pages());
    e.cycle_once().await.unwrap();

    let mut decided: Vec<(TxId, u8)> = sb
        .sandbox
        .decisions()
        .iter()
        .map(|d| (d.id, d.status))
        .collect();
    decided.sort_unstable();
    assert_eq!(
        decided,
        vec![
            (TxId::new(30), 2),
            (TxId::new(31), 2),
            (TxId::new(32), 2),
            (TxId::new(33), 1)
        ],
        "only the canonical controls are decided: the blocked ones and BSC rejected, the stranger on TRON approved"
    );
    for r in rows(&e).await.iter().filter(|r| r.tx_id < TxId::new(30)) {
        assert_eq!(
            (r.action, r.rule.as_str()),
            (Action::Hold, "(malformed)"),
            "tx {}: {}",
            r.tx_id,
            r.reason
        );
    }
    let all = rows(&e).await;
    let reason = |n| {
        let id = TxId::new(n);
        all.iter().find(|r| r.tx_id == id).unwrap().reason.clone()
    };
    assert!(
        reason(12).contains("U+200B ZERO WIDTH SPACE at character 5"),
        "{}",
        reason(12)
    );
    assert!(reason(14).contains("U+FEFF"), "{}", reason(14));
    assert!(
        reason(16).contains("0x` followed by exactly 40 hex digits"),
        "{}",
        reason(16)
    );
    assert!(
        reason(20).contains("chainId \"056\" starts with 0"),
        "{}",
        reason(20)
    );
    for (id, field, address) in [
        (17, "toAddress", bad_checksum(STRANGER)),
        (18, "fromAddress", bad_checksum(HOT)),
    ] {
        assert_eq!(
            reason(id),
            format!(
                "{field} {address:?} is not a valid TRON address (base58check: 34 characters, \
                 version 0x41, checksum)"
            ),
            "tx {id}"
        );
    }
}

/// `address` (a valid TRON address) with its last character changed to another base58 digit:
/// still 34 base58 characters from `T`, but its checksum fails.
fn bad_checksum(address: &str) -> String {
    let last = address.chars().last().unwrap();
    let other = if last == 'a' { 'b' } else { 'a' };
    format!("{}{other}", &address[..address.len() - 1])
}

#[tokio::test]
async fn a_lookalike_of_an_allow_listed_address_says_which_entry_it_imitates() {
    let fake = TREASURY.replacen("So", "S\u{43e}", 1);
    let sb = start_sandbox(scenario(vec![item(TxId::new(1), HOT, &fake, "1", "195")])).await;
    let dir = tempfile::tempdir().unwrap();
    let p = format!(
        "default = \"hold\"\n[lists]\ntreasury = [\"{TREASURY}\"]\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"@treasury\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &p, small_pages());
    e.cycle_once().await.unwrap();
    let r = rows(&e).await.pop().unwrap();
    assert_eq!(r.action, Action::Hold);
    assert!(
        r.reason.contains(&format!(
            "it differs from list \"treasury\" entry {TREASURY} at character 32: U+043E CYRILLIC SMALL LETTER O"
        )),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn an_id_decided_once_and_listed_again_with_other_fields_is_held_and_never_signed_again() {
    let sb = start_sandbox(scenario(vec![item(TxId::new(42), HOT, BAD, "5", "195")])).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sb.url);
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"blocked\"\naction = \"reject\"\nto = [\"{BAD}\"]\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.cycle_once().await.unwrap();
    assert_eq!(sb.sandbox.decisions()[0].status, 2, "42 rejected, accepted");

    // The server lists 42 again, now to an address the policy approves.
    let relisted = item(TxId::new(42), HOT, TREASURY, "5", "195");
    sb.sandbox.add_pending([relisted.clone()]);
    for _ in 0..2 {
        let out = e.cycle_once().await.unwrap();
        assert_eq!(out.submitted + out.resent, 0, "{out:?}");
    }
    let attempts = sb.sandbox.attempts();
    assert_eq!(
        attempts.len(),
        1,
        "one request ever left for 42: {attempts:?}"
    );
    let r = rows(&e).await;
    assert_eq!(r.len(), 2, "the reject, and one hold (not one per cycle)");
    assert_eq!(
        (r[1].action, r[1].rule.as_str()),
        (Action::Hold, "(decided)")
    );
    assert!(
        r[1].reason.starts_with("already decided (reject at ")
            && r[1].reason.ends_with("listed again with other fields"),
        "{}",
        r[1].reason
    );
    assert!(
        e.metrics.render().contains("cosigner_id_reuse_total 1"),
        "counted once"
    );

    // `policy explain` says the same as the daemon did.
    drop(e);
    std::fs::write(dir.path().join("policy.toml"), &policy).unwrap();
    let out = run_bin(&[
        "policy",
        "explain",
        "--config",
        cfg.to_str().unwrap(),
        "--tx",
        &relisted,
    ])
    .await;
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("decision: hold by (decided) — already decided (reject at "),
        "{text}"
    );
}

/// Client settings whose every retry waits 5 s (the server's `Retry-After`).
fn slow_retries(url: &str) -> cosigner::client::ClientConfig {
    let mut c = client_config(url);
    c.max_retries = 5;
    c.initial_backoff = Duration::from_secs(5);
    c.max_backoff = Duration::from_secs(5);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_an_approval_waiting_to_retry_before_its_next_attempt() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        error_paths: vec![APPROVE.into()],
        retry_after: Some(5),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_with_client(dir.path(), slow_retries(&sb.url), &policy, small_pages());

    let (out, paused_at) = tokio::join!(e.cycle_once(), async {
        wait_until("the first attempt", Duration::from_secs(10), || async {
            approve_requests(&sb) >= 1
        })
        .await;
        e.control().set_mode(Mode::Hold, "test").await.unwrap();
        Instant::now()
    });
    let stopped_after = paused_at.elapsed();
    let out = out.unwrap();
    println!("the cycle ended {stopped_after:?} after the pause");
    assert!(
        stopped_after < Duration::from_secs(1),
        "the retry waiting 5 s was woken by the pause: {stopped_after:?}"
    );
    assert_eq!(approve_requests(&sb), 1, "no attempt after the pause");
    assert_eq!(out.failed, 1);
    let r = rows(&e).await;
    assert_eq!(r[0].status, Status::Failed);
    assert!(
        r[0].status_message
            .as_deref()
            .unwrap()
            .contains("hold-all mode"),
        "{:?}",
        r[0].status_message
    );

    // Paused, the next cycle sends nothing; resumed, the same data goes out.
    sb.sandbox.set_faults(Faults::default());
    let out = e.cycle_once().await.unwrap();
    assert_eq!((out.resent, approve_requests(&sb)), (0, 1));
    e.control().set_mode(Mode::Normal, "test").await.unwrap();
    let out = e.cycle_once().await.unwrap();
    assert_eq!((out.resent, out.submitted), (1, 1));
    assert_eq!(Some(sb.sandbox.decisions()[0].data.clone()), r[0].data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_stops_an_approval_waiting_to_retry() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        error_paths: vec![APPROVE.into()],
        retry_after: Some(5),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_with_client(dir.path(), slow_retries(&sb.url), &policy, small_pages());
    let (out, ()) = tokio::join!(e.cycle_once(), async {
        wait_until("the first attempt", Duration::from_secs(10), || async {
            approve_requests(&sb) >= 1
        })
        .await;
        let reject_all = policy::parse(
            "default = \"reject\"\n",
            &dir.path().join("p.toml"),
            &|_| unreachable!(),
        )
        .unwrap();
        e.control().replace_policy(Arc::new(reject_all));
    });
    out.unwrap();
    assert_eq!(approve_requests(&sb), 1, "no attempt after the reload");
    sb.sandbox.set_faults(Faults::default());
    let out = e.cycle_once().await.unwrap();
    assert_eq!((out.resent, out.held), (0, 1), "{out:?}");
    assert_eq!(approve_requests(&sb), 1);
    assert!(sb.sandbox.decisions().is_empty());
}

// ---- The property: random interleavings of everything above ----

/// An EVM account the model's policies allow, one they block, and the source of EVM withdrawals.
const EVM_TREASURY: &str = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";
const EVM_BAD: &str = "0x000000000000000000000000000000000000dEaD";
const EVM_HOT: &str = "0x52908400098527886E0F7030069857D2E4169EE7";

/// Contents an id can be listed with: (source, destination, amount, chain). Three chains (TRON,
/// Ethereum, BSC), and five that are not canonical: a zero-width space inside, a trailing space,
/// a chain id with a leading zero, a TRON checksum that fails, an EVM address written `0X`.
fn variants() -> Vec<(String, String, &'static str, &'static str)> {
    let v = |from: &str, to: String, amount, chain| (from.to_string(), to, amount, chain);
    vec![
        v(HOT, TREASURY.into(), "5", "195"),
        v(HOT, BAD.into(), "5", "195"),
        v(HOT, STRANGER.into(), "5", "195"),
        v(HOT, TREASURY.into(), "500", "195"),
        v(EVM_HOT, EVM_TREASURY.into(), "5", "1"),
        v(EVM_HOT, EVM_TREASURY.to_lowercase(), "7.25", "56"),
        v(EVM_HOT, EVM_BAD.into(), "5", "56"),
        v(HOT, format!("TFMQ\u{200b}{}", &TREASURY[4..]), "5", "195"),
        v(HOT, format!("{BAD} "), "5", "195"),
        v(HOT, TREASURY.into(), "5", "0195"),
        v(HOT, bad_checksum(STRANGER), "5", "195"),
        v(EVM_HOT, EVM_TREASURY.replacen("0x", "0X", 1), "5", "1"),
    ]
}

/// Policies an operator can reload. Each windowed rule has one name and one limit wherever it
/// appears, and is the only rule of its policy that can approve what it approves, so that the
/// rule an approval counts under is the one the policy names for it with empty windows. All
/// windows are an hour: everything one case does falls inside them.
fn model_policy(i: usize) -> String {
    match i {
        0 => format!(
            "default = \"hold\"\n[[rule]]\nname = \"bad\"\naction = \"reject\"\nto = [\"{BAD}\", \"{EVM_BAD}\"]\n[[rule]]\nname = \"t\"\naction = \"approve\"\nchains = [\"195\", \"1\"]\nto = [\"{TREASURY}\", \"{EVM_TREASURY}\"]\nmax_amount = \"100\"\n"
        ),
        1 => "default = \"reject\"\n".to_string(),
        2 => format!(
            "default = \"hold\"\n[[rule]]\nname = \"bad\"\naction = \"reject\"\nto = [\"{BAD}\"]\n[[rule]]\nname = \"small\"\naction = \"approve\"\nmax_amount = \"10\"\nwindow = \"1h\"\nmax_count = 2\n"
        ),
        3 => format!(
            "default = \"reject\"\n[[rule]]\nname = \"s\"\naction = \"approve\"\nto = [\"{STRANGER}\", \"{TREASURY}\"]\n"
        ),
        4 => format!(
            "default = \"hold\"\n[[rule]]\nname = \"no bsc\"\naction = \"reject\"\nchains = [\"56\"]\n[[rule]]\nname = \"w\"\naction = \"approve\"\nto = [\"{TREASURY}\", \"{EVM_TREASURY}\"]\nwindow = \"1h\"\nmax_count = 1\nmax_total = \"100\"\n"
        ),
        _ => format!(
            "default = \"approve\"\n[[rule]]\nname = \"bad\"\naction = \"reject\"\nto = [\"{BAD}\", \"{EVM_BAD}\"]\n[guard]\nwindow = \"1h\"\nmax_approvals = 3\n"
        ),
    }
}

/// How many policies [`model_policy`] has.
const POLICIES: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    List {
        id: TxId,
        variant: usize,
    },
    Reload(usize),
    Mode(Mode),
    ApproveFailures(f64),
    Cycle,
    /// A cycle cut off after this many ms (the process dies), then a restart and a full cycle.
    CrashAndRestart(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let n = variants().len();
    prop_oneof![
        4 => (1u64..=6, 0usize..n).prop_map(|(id, variant)| Op::List { id: TxId::new(id), variant }),
        2 => (0usize..POLICIES).prop_map(Op::Reload),
        1 => prop_oneof![Just(Mode::Normal), Just(Mode::Hold), Just(Mode::Reject)].prop_map(Op::Mode),
        1 => prop_oneof![Just(0.0), Just(0.5), Just(1.0)].prop_map(Op::ApproveFailures),
        4 => Just(Op::Cycle),
        1 => (0u64..40).prop_map(Op::CrashAndRestart),
    ]
}

/// What reached the server so far, as the model counts it.
#[derive(Default)]
struct Seen {
    /// The first signed text sent for each id.
    sent: std::collections::HashMap<TxId, String>,
    /// Each approval that left, under each rule it was approved by when it left (windows count
    /// it once under each), with its amount.
    counted: std::collections::BTreeMap<(TxId, String), rust_decimal::Decimal>,
    /// Ids an approval left for (the guard counts each once).
    approved: std::collections::BTreeSet<TxId>,
}

impl Seen {
    /// Window usage of every approval that left, this id's own left out: what the daemon checks
    /// an approval against (a re-send is checked without its own earlier count).
    fn usage_without(&self, id: TxId) -> Usage {
        let mut u = Usage::default();
        for ((other, rule), amount) in &self.counted {
            if *other != id {
                u.add_approval(rule, *amount);
            }
        }
        u.guard_approvals = self.approved.iter().filter(|a| **a != id).count() as u64;
        u
    }
}

/// A listed transaction as the request for it shows it.
fn requested_tx(body: &Value) -> cosigner::domain::Withdrawal {
    cosigner::client::parse_pending_item(&item(
        TxId::new(body["id"].as_u64().unwrap()),
        body["from"].as_str().unwrap(),
        body["to"].as_str().unwrap(),
        body["value"].as_str().unwrap(),
        body["chainId"].as_str().unwrap(),
    ))
    .unwrap()
}

/// Checks every request that reached the server during one step against the policy and the
/// mode in force during it, and against what the ledger recorded for it: one signed text per
/// id; an approval only in normal mode, allowed by the policy with every other approval counted
/// in its windows, recorded (or, sent again, recorded as a `resend`) under that rule with its
/// reason; a reject never in hold mode, and when first sent, the policy's reject (or reject-all
/// mode's, never for malformed input) with the exact rule and reason recorded.
async fn check_step(
    e: &cosigner::cycle::Engine,
    new: &[cosigner_sandbox::server::Attempt],
    policy_text: &str,
    mode: Mode,
    seen: &mut Seen,
    resends_before: usize,
) -> Result<(), TestCaseError> {
    let p = policy::parse(
        policy_text,
        std::path::Path::new("p.toml"),
        &|_| unreachable!(),
    )
    .unwrap();
    fn ctx(usage: &Usage) -> Context<'_> {
        Context {
            usage,
            max_sign_len: 245,
            clock: ClockCheck::Ok,
        }
    }
    let bodies: Vec<Value> = new
        .iter()
        .map(|a| serde_json::from_str(&a.body).unwrap())
        .collect();
    // The rule each approval of this step counts under, before any is checked: windows count
    // every approval that left, whatever order the requests arrived in.
    for body in bodies.iter().filter(|b| b["status"] == 1) {
        let tx = requested_tx(body);
        let eval = p.evaluate(&tx, ctx(&Usage::default()));
        prop_assert_eq!(
            eval.action,
            Action::Approve,
            "approval of {} sent though the policy in force says {} by {} ({}), whatever the windows",
            tx.id,
            eval.action,
            eval.rule,
            eval.reason
        );
        seen.counted
            .insert((tx.id, eval.rule.into_owned()), eval.amount.unwrap());
        seen.approved.insert(tx.id);
    }
    let recorded = rows(e).await;
    let resends: Vec<Value> = e
        .ledger()
        .list_events(cosigner::ledger::EventKind::Resend)
        .await
        .unwrap()
        .iter()
        .skip(resends_before)
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let first_this_step: std::collections::HashSet<TxId> = bodies
        .iter()
        .map(|b| TxId::new(b["id"].as_u64().unwrap()))
        .filter(|id| !seen.sent.contains_key(id))
        .collect();
    for body in &bodies {
        let tx = requested_tx(body);
        let id = tx.id;
        let data = body["data"].as_str().unwrap().to_string();
        let first = seen.sent.entry(id).or_insert_with(|| data.clone());
        prop_assert_eq!(&*first, &data, "tx {} got two different signed texts", id);
        let row = recorded
            .iter()
            .find(|r| r.data.as_deref() == Some(data.as_str()));
        prop_assert!(row.is_some(), "tx {} left without a record of its data", id);
        let row = row.unwrap();
        let eval = p.evaluate(&tx, ctx(&seen.usage_without(id)));
        let first_sent = first_this_step.contains(&id);
        match body["status"].as_u64() {
            Some(1) => {
                prop_assert_eq!(
                    mode,
                    Mode::Normal,
                    "approval of {} sent in {:?} mode",
                    id,
                    mode
                );
                prop_assert_eq!(
                    eval.action,
                    Action::Approve,
                    "approval of {} sent though the policy in force, counting every other approval, says {} by {} ({})",
                    id,
                    eval.action,
                    eval.rule,
                    eval.reason
                );
                if first_sent {
                    prop_assert_eq!(
                        (row.action, row.rule.as_str(), row.reason.clone()),
                        (Action::Approve, &*eval.rule, eval.reason.to_string()),
                        "tx {} recorded",
                        id
                    );
                } else {
                    prop_assert!(
                        resends
                            .iter()
                            .any(|r| r["tx_id"] == id.get() && r["rule"] == *eval.rule),
                        "tx {} sent again without a resend event under rule {}: {:?}",
                        id,
                        eval.rule,
                        resends
                    );
                }
            }
            Some(2) => {
                prop_assert_ne!(mode, Mode::Hold, "reject of {} sent in hold mode", id);
                if first_sent {
                    let expected = if mode == Mode::Reject {
                        prop_assert_ne!(
                            &*eval.rule,
                            "(malformed)",
                            "malformed tx {} rejected in reject mode: {}",
                            id,
                            eval.reason
                        );
                        (
                            "(paused)".to_string(),
                            format!(
                                "reject-all mode set by an operator (the policy said: {} by {})",
                                eval.action, eval.rule
                            ),
                        )
                    } else {
                        prop_assert_eq!(
                            eval.action,
                            Action::Reject,
                            "reject of {} sent though the policy in force says {} by {} ({})",
                            id,
                            eval.action,
                            eval.rule,
                            eval.reason
                        );
                        (eval.rule.to_string(), eval.reason.to_string())
                    };
                    prop_assert_eq!(
                        (row.action, row.rule.clone(), row.reason.clone()),
                        (Action::Reject, expected.0, expected.1),
                        "tx {} recorded",
                        id
                    );
                }
            }
            other => prop_assert!(false, "tx {} sent with status {:?}", id, other),
        }
    }
    // Windows hold whatever the order: no rule's window counts more than its limit, and the
    // guard's policy let nothing out beyond it.
    for (rule, limit) in [("small", 2), ("w", 1)] {
        let n = seen.counted.keys().filter(|(_, r)| r == rule).count();
        prop_assert!(
            n <= limit,
            "rule {} (max_count {}) approved {} ids",
            rule,
            limit,
            n
        );
    }
    if p.guard.is_some() && bodies.iter().any(|b| b["status"] == 1) {
        prop_assert!(
            seen.approved.len() <= 3,
            "approvals left under the guard of 3 per hour with {} approved",
            seen.approved.len()
        );
    }
    Ok(())
}

async fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let sb = start_sandbox(scenario(Vec::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let variants = variants();
    let mut policy_text = model_policy(0);
    let mut mode = Mode::Normal;
    let mut e = engine_for(dir.path(), &sb.url, &policy_text, small_pages());
    let mut model = Seen::default();
    let mut seen = 0;
    for op in ops {
        let resends_before = e
            .ledger()
            .list_events(cosigner::ledger::EventKind::Resend)
            .await
            .unwrap()
            .len();
        match op {
            Op::List { id, variant } => {
                let (from, to, amount, chain) = &variants[variant];
                sb.sandbox.add_pending([item(id, from, to, amount, chain)]);
            }
            Op::Reload(i) => {
                policy_text = model_policy(i);
                let p = policy::parse(
                    &policy_text,
                    &dir.path().join("policy.toml"),
                    &|_| unreachable!(),
                )
                .unwrap();
                e.control().replace_policy(Arc::new(p));
            }
            Op::Mode(m) => {
                e.control().set_mode(m, "model").await.unwrap();
                mode = m;
            }
            Op::ApproveFailures(rate) => sb.sandbox.set_faults(Faults {
                error_rate: rate,
                error_paths: vec![APPROVE.into()],
                seed: 7,
                ..Faults::default()
            }),
            Op::Cycle => {
                let _ = e.cycle_once().await;
            }
            Op::CrashAndRestart(ms) => {
                let _ = tokio::time::timeout(Duration::from_millis(ms), e.cycle_once()).await;
                drop(e);
                // The cut-off cycle's aborted sends hold the engine's parts, the ledger among
                // them, until this runtime drops them: it must run while the test waits.
                wait_until(
                    "the dropped engine to release the ledger",
                    Duration::from_secs(10),
                    || async {
                        cosigner::ledger::SqliteLedger::open(&dir.path().join("ledger.db")).is_ok()
                    },
                )
                .await;
                std::fs::write(dir.path().join("policy.toml"), &policy_text).unwrap();
                e = engine_for(dir.path(), &sb.url, &policy_text, small_pages());
                prop_assert_eq!(
                    e.control().restore_mode().await.unwrap(),
                    mode,
                    "the mode survives"
                );
                let _ = e.cycle_once().await;
            }
        }
        let attempts = sb.sandbox.attempts();
        check_step(
            &e,
            &attempts[seen..],
            &policy_text,
            mode,
            &mut model,
            resends_before,
        )
        .await?;
        seen = attempts.len();
    }
    prop_assert_eq!(
        sb.sandbox.stats().conflicts,
        0,
        "the server saw no second decision"
    );
    let report = e.ledger().verify().await.unwrap();
    prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn per_id_one_signed_text_at_most_and_every_request_allowed_by_the_policy_and_mode_in_force(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_model(ops))?;
    }
}
