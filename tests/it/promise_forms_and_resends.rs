//! The promise holds whatever form a listing writes and however often a decision is re-sent:
//! never approve what the policy in force forbids, never send two different decisions for one id.
//! Forms: a duplicated key, an EVM address without `0x`, a TRON address in hex form, amounts that
//! cannot be compared exactly. Re-sends: counted in their window (and the guard's) when they leave
//! after it passed or under another rule, never a second decision for an id (listed twice, a
//! legacy ledger, reject mode), nothing from a dry run, and no window emptied by a clock the
//! server's `Date` does not vouch for.
//!
//! From issue 9's review (its first round): each test is one attack that was made on the daemon;
//! a failing test is a hole.

use std::time::Duration;

use cosigner::client::APPROVE;
use cosigner::cycle::PollSettings;
use cosigner::domain::Action;
use cosigner::ledger::Status;
use cosigner_sandbox::server::Faults;

use crate::support::*;

fn approve_fails() -> Faults {
    Faults {
        error_rate: 1.0,
        error_paths: vec![APPROVE.into()],
        ..Faults::default()
    }
}

const EVM_BLOCKED: &str = "0x000000000000000000000000000000000000dEaD";
/// `BAD` (TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7) in TRON's hex form: the same account.
const BAD_TRON_HEX: &str = "4111aadff433d1db4f33f03525a66853ce968fb339";

/// Reject the blocked list, approve anything small: whatever slips past the reject rule is
/// approved.
fn blocklist_policy() -> String {
    format!(
        r#"default = "hold"
[lists]
blocked = ["{BAD}", "{EVM_BLOCKED}"]
[[rule]]
name = "blocked"
action = "reject"
to = ["@blocked"]
[[rule]]
name = "small"
action = "approve"
max_amount = "100"
"#
    )
}

// ---- Input that is not one unambiguous transaction ----

#[tokio::test]
async fn an_item_with_a_duplicated_key_is_held_not_decided_on_its_last_value() {
    // JSON with a key twice has no single meaning (first-wins and last-wins parsers both
    // exist): "Doubt holds". Here the blocked destination comes first, an allowed one last;
    // the amount likewise.
    let dup_to = format!(
        r#"{{"id":1,"fromAddress":"{HOT}","toAddress":"{BAD}","toAddress":"{STRANGER}","amount":"1","chainId":"195"}}"#
    );
    let dup_amount = format!(
        r#"{{"id":2,"fromAddress":"{HOT}","toAddress":"{STRANGER}","amount":"5000","amount":"1","chainId":"195"}}"#
    );
    let sb = start_sandbox(scenario(vec![dup_to, dup_amount])).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &blocklist_policy(), small_pages());
    e.cycle_once().await.unwrap();
    assert_decisions(
        &e,
        &[
            (
                1,
                Action::Hold,
                "(malformed)",
                r#"member "toAddress" is written twice (or in two cases)"#,
            ),
            (
                2,
                Action::Hold,
                "(malformed)",
                r#"member "amount" is written twice (or in two cases)"#,
            ),
        ],
    )
    .await;
    assert_eq!(approved_ids(&sb), Vec::<TxId>::new());
}

#[tokio::test]
async fn an_evm_destination_written_without_0x_does_not_slip_past_the_blocklist() {
    // The blocked EVM account, written as its 40 hex digits without the prefix: ASCII letters
    // and digits only, so "canonical", and byte-compared (not EVM-compared) against the list.
    let bare = &EVM_BLOCKED[2..];
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, bare, "1", "1"),
        item(TxId::new(2), HOT, &bare.to_ascii_lowercase(), "1", "56"),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &blocklist_policy(), small_pages());
    e.cycle_once().await.unwrap();
    let no_prefix = |a: &str| {
        format!(
            "toAddress {a:?} is 40 hex digits without `0x`: write an EVM address as `0x` + 40 hex"
        )
    };
    assert_decisions(
        &e,
        &[
            (1, Action::Hold, "(malformed)", &no_prefix(bare)),
            (
                2,
                Action::Hold,
                "(malformed)",
                &no_prefix(&bare.to_ascii_lowercase()),
            ),
        ],
    )
    .await;
    assert_eq!(approved_ids(&sb), Vec::<TxId>::new());
}

#[tokio::test]
async fn a_tron_destination_in_hex_form_does_not_slip_past_the_blocklist() {
    // On TRON only `T…` addresses are base58-checked; the same account written in hex
    // (41 + 20 bytes) is "canonical" and compares unequal to the blocked `T…` entry.
    // Also as `0x` + the 20 account bytes, which is EVM form and EVM-compared.
    let evm_form = format!("0x{}", &BAD_TRON_HEX[2..]);
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, BAD_TRON_HEX, "1", "195"),
        item(TxId::new(2), HOT, &evm_form, "1", "195"),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &blocklist_policy(), small_pages());
    e.cycle_once().await.unwrap();
    // Both spellings are the blocked account's: its reject rule matches every spelling.
    assert_decisions(
        &e,
        &[
            (1, Action::Reject, "blocked", "matched rule \"blocked\""),
            (2, Action::Reject, "blocked", "matched rule \"blocked\""),
        ],
    )
    .await;
    assert_eq!(approved_ids(&sb), Vec::<TxId>::new());
}

#[tokio::test]
async fn amounts_that_cannot_be_compared_exactly_are_held() {
    // Regression: precision and size limits of the decimal type must hold, never round.
    let big = "7922816251426433759354395033.5"; // 29 significant digits
    let tiny = "0.00000000000000000000000000001"; // 29 decimals
    let round_up = "100.00000000000000000000000001"; // just above max_amount, 28 decimals
    let round_up2 = "100.000000000000000000000000001"; // just above, 27+ digits after 100.
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, STRANGER, big, "195"),
        item(TxId::new(2), HOT, STRANGER, tiny, "195"),
        item(TxId::new(3), HOT, STRANGER, round_up, "195"),
        item(TxId::new(4), HOT, STRANGER, round_up2, "195"),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &blocklist_policy(), small_pages());
    e.cycle_once().await.unwrap();
    let above = |a: &str| {
        format!(
            "no rule matched (nearest, \"small\": amount {a} is above max_amount 100); the policy default applies"
        )
    };
    let inexact =
        |a: &str| format!("amount {a:?} is not a plain decimal that can be compared exactly");
    assert_decisions(
        &e,
        &[
            (1, Action::Hold, "(default)", &above(big)),
            (2, Action::Hold, "(malformed)", &inexact(tiny)),
            (3, Action::Hold, "(default)", &above(round_up)),
            (4, Action::Hold, "(malformed)", &inexact(round_up2)),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_approval_is_not_resent_while_the_listing_shows_its_id_twice_with_other_fields()
{
    // docs/guarantees.md, "Doubt holds": an id listed twice with different fields is held, never
    // approved.
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(approve_fails());
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.cycle_once().await.unwrap();
    assert_eq!(rows(&e).await[0].status, Status::Failed);

    // The listing now shows id 1 twice: as recorded, and to another destination.
    sb.sandbox
        .add_unkeyed([item(TxId::new(1), HOT, STRANGER, "5000", "195")]);
    sb.sandbox.set_faults(Faults::default());
    let out = e.cycle_once().await.unwrap();
    assert_eq!(
        approved_ids(&sb),
        Vec::<TxId>::new(),
        "the recorded approval went out although the listing showed id 1 with two contents: {out:?}"
    );
}

// ---- Dry runs ----

#[tokio::test]
async fn a_dry_run_sends_nothing_not_even_a_recorded_approval() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(approve_fails());
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.cycle_once().await.unwrap();
    assert_eq!(rows(&e).await[0].status, Status::Failed);
    let before = approve_requests(&sb);

    // The operator now runs with --dry-run ("record decisions as dry runs and send nothing"),
    // e.g. to try a candidate policy.
    sb.sandbox.set_faults(Faults::default());
    drop(e);
    let e = engine_for(
        dir.path(),
        &sb.url,
        &policy,
        PollSettings {
            dry_run: true,
            ..small_pages()
        },
    );
    let out = e.cycle_once().await.unwrap();
    assert_eq!(
        approve_requests(&sb),
        before,
        "a dry run sent an approve request: {out:?}; decisions at the server: {:?}",
        sb.sandbox
            .decisions()
            .iter()
            .map(|d| (d.id, d.status))
            .collect::<Vec<_>>()
    );
}

// ---- Window limits and re-sends ----

fn wait_past(recorded_at_ms: i64, window: Duration) -> impl std::future::Future<Output = ()> {
    let until = recorded_at_ms + i64::try_from(window.as_millis()).unwrap() + 50;
    wait_until(
        "the window to pass",
        Duration::from_secs(30),
        move || async move { cosigner::clock::Clock::system().now_ms() > until },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_approval_resent_after_its_window_passed_is_counted_in_that_window() {
    // max_count = 1 per 2 s. Approval 1 is recorded but the server is down. After the window has
    // passed, the server is back and tx 2 appears: the re-check of 1 and the decision on 2 both
    // see an empty window, and both go out within milliseconds.
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(approve_fails());
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"2s\"\nmax_count = 1\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.cycle_once().await.unwrap();
    let first = rows(&e).await[0].clone();
    assert_eq!(
        (first.action, first.status),
        (Action::Approve, Status::Failed)
    );

    wait_past(first.recorded_at_ms, Duration::from_secs(2)).await;
    sb.sandbox.set_faults(Faults::default());
    sb.sandbox
        .add_pending([item(TxId::new(2), HOT, TREASURY, "5", "195")]);
    let out = e.cycle_once().await.unwrap();
    let d = sb.sandbox.decisions();
    let span =
        d.iter().map(|x| x.at_ms).max().unwrap_or(0) - d.iter().map(|x| x.at_ms).min().unwrap_or(0);
    assert!(
        approved_ids(&sb).len() <= 1,
        "rule t (max_count 1 per 2 s) had {:?} approved {} ms apart in one cycle: {out:?}",
        approved_ids(&sb),
        span
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_approval_resent_after_the_guard_window_passed_is_counted_by_the_guard() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(approve_fails());
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n[guard]\nwindow = \"2s\"\nmax_approvals = 1\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.cycle_once().await.unwrap();
    let first = rows(&e).await[0].clone();
    assert_eq!(first.action, Action::Approve);

    wait_past(first.recorded_at_ms, Duration::from_secs(2)).await;
    sb.sandbox.set_faults(Faults::default());
    sb.sandbox
        .add_pending([item(TxId::new(2), HOT, TREASURY, "5", "195")]);
    let out = e.cycle_once().await.unwrap();
    assert!(
        approved_ids(&sb).len() <= 1,
        "the guard (1 approval per 2 s) let {:?} out in one cycle: {out:?}",
        approved_ids(&sb)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_resent_under_another_rule_after_a_reload_counts_in_that_rules_window_later() {
    // Old policy: rule "old" approves anything to TREASURY. Approvals 1 and 2 are recorded, the
    // server is down. New policy: "old" only up to 1, and "capped" allows ONE approval per 24 h.
    // Cycle A re-sends 1 under "capped" (2 waits: the window is full). Cycle B: the ledger still
    // counts nothing for "capped", so 2 goes out too: two approvals on the authority of a rule
    // that allows one.
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, TREASURY, "5", "195"),
        item(TxId::new(2), HOT, TREASURY, "6", "195"),
    ]))
    .await;
    sb.sandbox.set_faults(approve_fails());
    let dir = tempfile::tempdir().unwrap();
    let old = format!(
        "default = \"hold\"\n[[rule]]\nname = \"old\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &old, small_pages());
    e.cycle_once().await.unwrap();
    assert!(rows(&e).await.iter().all(|r| r.action == Action::Approve));

    let new = format!(
        "default = \"hold\"\n[[rule]]\nname = \"old\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nmax_amount = \"1\"\n[[rule]]\nname = \"capped\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"24h\"\nmax_count = 1\n"
    );
    std::fs::write(dir.path().join("policy.toml"), new).unwrap();
    e.control().reload_policy("test").await.unwrap();
    sb.sandbox.set_faults(Faults::default());
    let a = e.cycle_once().await.unwrap();
    let after_a = approved_ids(&sb);
    let b = e.cycle_once().await.unwrap();
    assert!(
        approved_ids(&sb).len() <= 1,
        "rule \"capped\" (max_count 1 per 24 h) let {:?} out (after cycle A: {after_a:?}); A {a:?}, B {b:?}",
        approved_ids(&sb)
    );
}

// ---- Clock ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_behind_the_servers_is_not_trusted_so_its_correction_cannot_empty_a_window() {
    if !faketime_or_skip() {
        return;
    }
    // Host clock 2 h behind the server's (the sandbox tolerates the skew). Rule: one approval
    // per hour. The approval recorded with the slow clock is stamped 2 h in the past; once the
    // clock is corrected, the window is already empty and a second approval goes out at once.
    let sandbox = spawn_sandbox(&["--max-skew", "3h"]);
    let add = |id: TxId| post_pending(&sandbox.url, vec![item(id, HOT, TREASURY, "1", "195")]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"1h\"\nmax_count = 1\n"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap().to_string();
    add(TxId::new(1)).await;
    let out = run_once_at("-2h", &c).await;
    assert!(out.status.success(), "{}", all_output(&out));

    // The clock corrected (real time).
    add(TxId::new(2)).await;
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let decided: Vec<serde_json::Value> = sandbox_decisions(&sandbox.url).await;
    let approved: Vec<_> = decided.iter().filter(|d| d["status"] == 1).collect();
    assert!(
        approved.len() <= 1,
        "rule t (max_count 1 per hour) had {} approvals go out within seconds: {decided:?}",
        approved.len()
    );
}

// ---- Legacy ledgers ----

/// A ledger as the pre-fix daemon could leave it: id 1 rejected (to BAD; the request timed out,
/// so it may well have reached the server), then approved with other content (to TREASURY),
/// not confirmed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_ledger_with_a_reject_and_an_approve_for_one_id_sends_neither_again() {
    use cosigner::domain::{Decision, Verdict, decision_text};
    use cosigner::ledger::{NewDecision, Outcome};
    let approved_item = item(TxId::new(1), HOT, TREASURY, "5", "195");
    let sb = start_sandbox(scenario(vec![approved_item.clone()])).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    let decision = |raw: &str, verdict: Verdict| {
        let tx = cosigner::client::parse_pending_item(raw).unwrap();
        let text = decision_text(&Decision {
            id: tx.id,
            from: tx.from.as_deref().unwrap(),
            to: tx.to.as_deref().unwrap(),
            value: tx.amount.as_deref().unwrap(),
            chain_id: tx.chain_id.as_deref().unwrap(),
            verdict,
        });
        let data = e.signer.sign(&text).unwrap();
        let action = match verdict {
            Verdict::Approve => Action::Approve,
            Verdict::Reject => Action::Reject,
        };
        NewDecision {
            amount: (action == Action::Approve).then(|| "5".parse().unwrap()),
            tx,
            action,
            rule: "legacy".into(),
            reason: "written by an earlier version".into(),
            policy_sha256: "0".repeat(64),
            dry_run: false,
            signed_text: Some(text),
            data: Some(data),
        }
    };
    {
        let l = e.ledger();
        let seqs = l
            .record_decisions(vec![
                decision(&item(TxId::new(1), HOT, BAD, "5", "195"), Verdict::Reject),
                decision(&approved_item, Verdict::Approve),
            ])
            .await
            .unwrap();
        l.record_outcomes(vec![Outcome {
            decision_seq: seqs[0],
            ok: false,
            message: Some("approve: timed out".into()),
        }])
        .await
        .unwrap();
    }
    let out = e.cycle_once().await.unwrap();
    assert_eq!(
        approved_ids(&sb),
        Vec::<TxId>::new(),
        "id 1 has a recorded reject, yet its approval was sent: {out:?}"
    );
}

// ---- Regressions (these held) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_reject_mode_a_recorded_approval_waits_and_its_id_is_never_rejected_on_top() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(approve_fails());
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.cycle_once().await.unwrap();
    sb.sandbox.set_faults(Faults::default());
    e.control()
        .set_mode(cosigner::control::Mode::Reject, "test")
        .await
        .unwrap();
    sb.sandbox
        .add_pending([item(TxId::new(2), HOT, TREASURY, "5", "195")]);
    e.cycle_once().await.unwrap();
    let decided: Vec<(TxId, u8)> = sb
        .sandbox
        .decisions()
        .iter()
        .map(|d| (d.id, d.status))
        .collect();
    assert_eq!(
        decided,
        vec![(TxId::new(2), 2)],
        "only the new one is rejected"
    );
    let r = rows(&e).await;
    assert_eq!(
        r.iter().filter(|r| r.tx_id == TxId::new(1)).count(),
        1,
        "no second record for 1"
    );
    e.control()
        .set_mode(cosigner::control::Mode::Normal, "test")
        .await
        .unwrap();
    e.cycle_once().await.unwrap();
    let decided: Vec<(TxId, u8)> = sb
        .sandbox
        .decisions()
        .iter()
        .map(|d| (d.id, d.status))
        .collect();
    assert_eq!(
        decided,
        vec![(TxId::new(2), 2), (TxId::new(1), 1)],
        "resumed: the identical approval goes out"
    );
}

#[tokio::test]
async fn a_dry_run_approval_does_not_carry_over_into_a_real_run_under_a_stricter_policy() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let loose = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(
        dir.path(),
        &sb.url,
        &loose,
        PollSettings {
            dry_run: true,
            ..small_pages()
        },
    );
    e.cycle_once().await.unwrap();
    assert_eq!(approve_requests(&sb), 0);
    // Restarted for real under a stricter policy.
    drop(e);
    let e = engine_for(dir.path(), &sb.url, "default = \"hold\"\n", small_pages());
    e.cycle_once().await.unwrap();
    assert_eq!(
        approve_requests(&sb),
        0,
        "the dry-run approval was not sent"
    );
    let last = rows(&e).await.pop().unwrap();
    assert_eq!((last.action, last.dry_run), (Action::Hold, false));
}

/// A TCP proxy to `upstream` that drops the `Date` header from every response (as some
/// middleboxes do); returns its `http://` URL.
async fn dateless_proxy(upstream: String) -> String {
    date_rewriting_proxy(upstream, |text, date| match date {
        Some(r) => format!("{}{}", &text[..r.start], &text[r.end..]),
        None => text.to_string(),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_date_a_clock_hours_ahead_is_not_trusted_for_windows() {
    if !faketime_or_skip() {
        return;
    }
    // Host clock 2 h ahead; the responses carry no `Date`, so the skew is never measured: "Any
    // doubt means no approval". With one approval per hour, the approval made an hour ago in
    // real time looks 3 h old, and the second goes out.
    let sandbox = spawn_sandbox(&["--max-skew", "3h"]);
    let proxy = dateless_proxy(sandbox.url.clone()).await;
    let http = reqwest::Client::new();
    let probe = http
        .get(format!("{proxy}/_sandbox/decisions"))
        .send()
        .await
        .unwrap();
    assert!(probe.status().is_success() && probe.headers().get("date").is_none());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &proxy);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"1h\"\nmax_count = 1\n"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap().to_string();
    let add = |id: TxId| post_pending(&sandbox.url, vec![item(id, HOT, TREASURY, "1", "195")]);
    add(TxId::new(1)).await;
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    add(TxId::new(2)).await;
    let out = run_once_at("+2h", &c).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let decided: Vec<serde_json::Value> = sandbox_decisions(&sandbox.url).await;
    let approved: Vec<_> = decided
        .iter()
        .filter(|d| d["status"] == 1)
        .map(|d| d["id"].clone())
        .collect();
    assert!(
        approved.len() <= 1,
        "rule t (max_count 1 per hour) let {approved:?} out, the second with the clock 2 h ahead \
         and no Date to compare it with: {}",
        all_output(&out)
    );
}
