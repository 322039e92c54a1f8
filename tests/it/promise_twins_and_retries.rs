//! The promise holds against twins and retries: a member name spelled twice (an escape, a
//! Unicode case fold, an underscore), blocklist entries in forms a chain never uses, an id listed
//! twice with a twin; an approval retried late counted from when it left, stopped by a pause the
//! ledger cannot record, by reject mode, or by a failed answer's `Date`; two runs within the
//! allowed clock skew that cannot fit two approvals in one window; an unreadable mode record
//! that restores hold.
//!
//! From issue 9's review (its second round, on the first round's fixes): each test is one
//! attack; a failing test is a hole.

use std::time::Duration;

use cosigner::client::APPROVE;
use cosigner::control::Mode;
use cosigner::cycle::Engine;
use cosigner::domain::Action;
use cosigner::ledger::EventKind;
use cosigner_sandbox::server::Faults;

use crate::support::*;

fn approved_at_server(sb: &RunningSandbox) -> Vec<(TxId, u64)> {
    let mut v: Vec<(TxId, u64)> = sb
        .sandbox
        .decisions()
        .iter()
        .filter(|d| d.status == 1)
        .map(|d| (d.id, d.at_ms))
        .collect();
    v.sort_unstable();
    v
}

/// `BAD` (TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7) in TRON's hex form: the same account.
const BAD_TRON_HEX: &str = "4111aadff433d1db4f33f03525a66853ce968fb339";

/// Reject what `blocked_entry` names, approve anything small: whatever slips past the reject
/// rule is approved.
fn blocklist_policy(blocked_entry: &str, reject_chains: &str) -> String {
    format!(
        r#"default = "hold"
[lists]
blocked = ["{blocked_entry}"]
[[rule]]
name = "blocked"
action = "reject"
to = ["@blocked"]
{reject_chains}
[[rule]]
name = "small"
action = "approve"
max_amount = "100"
"#
    )
}

async fn assert_nothing_approved(e: &Engine, sb: &RunningSandbox) {
    let approved: Vec<_> = rows(e)
        .await
        .into_iter()
        .filter(|r| r.action == Action::Approve)
        .map(|r| (r.tx_id, r.tx_json, r.rule))
        .collect();
    assert!(approved.is_empty(), "approved: {approved:?}");
    assert_eq!(approved_at_server(sb), Vec::<(TxId, u64)>::new());
}

// ---- Members a server-side parser reads as the same field ----

/// `raw` (id 1) is held as malformed because `member` is written twice.
async fn item_is_held(raw: String, member: &str) {
    let sb = start_sandbox(scenario(vec![raw.clone()])).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(
        dir.path(),
        &sb.url,
        &blocklist_policy(BAD, ""),
        small_pages(),
    );
    e.cycle_once().await.unwrap();
    assert_decisions(
        &e,
        &[(
            1,
            Action::Hold,
            "(malformed)",
            &format!("member {member:?} is written twice (or in two cases)"),
        )],
    )
    .await;
    assert_nothing_approved(&e, &sb).await;
}

#[tokio::test]
async fn a_member_name_written_with_an_escape_is_a_twin_and_held() {
    // `to\u0041ddress` is `toAddress` once the JSON string is read: a twin, whatever the order.
    item_is_held(format!(
        r#"{{"id":1,"fromAddress":"{HOT}","to\u0041ddress":"{BAD}","toAddress":"{STRANGER}","amount":"1","chainId":"195"}}"#
    ), "toAddress")
    .await;
}

#[tokio::test]
async fn a_twin_differing_by_a_unicode_case_fold_is_held() {
    // U+017F LATIN SMALL LETTER LONG S upper-cases to `S`: Java's equalsIgnoreCase (and
    // String.CASE_INSENSITIVE_ORDER, used by case-insensitive maps) reads `toAddreſs` as
    // `toAddress`. The daemon compares case only in ASCII.
    item_is_held(format!(
        r#"{{"id":1,"fromAddress":"{HOT}","toAddress":"{STRANGER}","toAddre\u017fs":"{BAD}","amount":"1","chainId":"195"}}"#
    ), "toAddre\u{17f}s")
    .await;
}

#[tokio::test]
async fn a_twin_spelled_with_an_underscore_as_fastjson_matches_it_is_held() {
    // fastjson's smart match (on by default in 1.x) ignores `_`, `-` and case: `to_address`
    // fills `toAddress`, the later member winning.
    item_is_held(format!(
        r#"{{"id":1,"fromAddress":"{HOT}","toAddress":"{STRANGER}","to_address":"{BAD}","amount":"1","chainId":"195"}}"#
    ), "to_address")
    .await;
}

// ---- Policy list entries in a form no transaction can have ----

/// The policy either refuses to load, saying `refusal`, or still rejects `BAD` on TRON by its
/// rule `blocked`.
async fn blocked_account_is_not_approved(policy: String, refusal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.toml");
    std::fs::write(&path, &policy).unwrap();
    if let Err(e) = cosigner::policy::load(&path) {
        let e = e.to_string();
        assert_eq!(
            e,
            format!("policy file {}: {refusal}", path.display()),
            "refused at load, for the reason the entry can never match"
        );
        return;
    }
    let sb = start_sandbox(scenario(vec![item(TxId::new(1), HOT, BAD, "1", "195")])).await;
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.cycle_once().await.unwrap();
    assert_decisions(
        &e,
        &[(1, Action::Reject, "blocked", "matched rule \"blocked\"")],
    )
    .await;
    assert_nothing_approved(&e, &sb).await;
}

#[tokio::test]
async fn a_blocklist_entry_in_tron_hex_form_is_refused_or_still_blocks_the_account() {
    // The first round refuses `41…` as a transaction's address on chain 195, so a list entry in
    // that form (what TronWeb's toHex prints) can never match anything: the policy loads, the
    // blocked account is approved by the next rule.
    blocked_account_is_not_approved(
        blocklist_policy(BAD_TRON_HEX, ""),
        &format!(
            "list \"blocked\", line 3: entry \"{BAD_TRON_HEX}\" is TRON's hex form, which \
             transactions never use: write the base58check `T…` form; it could never match a \
             transaction"
        ),
    )
    .await;
}

#[tokio::test]
async fn an_evm_form_entry_in_a_tron_only_reject_rule_is_refused_or_still_blocks_the_account() {
    // A reject rule for chain 195 only, naming the TRON account as `0x` + its 20 bytes: on
    // chain 195 only `T…` is accepted, so the entry is dead.
    let evm_form = format!("0x{}", &BAD_TRON_HEX[2..]);
    blocked_account_is_not_approved(
        blocklist_policy(&evm_form, "chains = [\"195\"]"),
        "rule \"blocked\": key `to`: no address of list @blocked can match on the rule's chains \
         (195)",
    )
    .await;
}

// ---- Windows ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_left_on_a_late_retry_is_counted_from_when_it_left() {
    // max_count 1 per 1.5 s. Approval 1 is recorded at t0; the server answers its first two
    // attempts 503 (Retry-After 1 s), so it leaves on the third, at t0 + 2 s. Guarantee 5:
    // "windows count an approval from the last moment it may have left"; but retries inside
    // one submission record no `resend` event, so the next cycle counts it from t0, finds the
    // window empty, and approval 2 leaves milliseconds after approval 1.
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
        retry_after: Some(1),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"1500ms\"\nmax_count = 1\n"
    );
    let mut cfg = client_config(&sb.url);
    cfg.max_retries = 2;
    cfg.initial_backoff = Duration::from_secs(1);
    cfg.max_backoff = Duration::from_secs(1);
    // A tight clock (windows reach 0.2 s further back), so the window's slack does not hide the
    // 2 s the approval spent retrying.
    cfg.max_clock_skew = Duration::from_millis(100);
    let e = engine_with_client(dir.path(), cfg, &policy, small_pages());

    // The server comes back after the second attempt failed.
    let healer = {
        let sb = sb.sandbox.clone();
        tokio::spawn(async move {
            wait_until("two approve attempts", Duration::from_secs(10), || {
                let n = sb.stats().requests.get(APPROVE).copied().unwrap_or(0);
                async move { n >= 2 }
            })
            .await;
            sb.set_faults(Faults::default());
        })
    };
    let a = e.cycle_once().await.unwrap();
    healer.await.unwrap();
    assert_eq!(approve_requests(&sb), 3, "{a:?}");
    let recorded = u64::try_from(rows(&e).await[0].recorded_at_ms).unwrap();
    let first = approved_at_server(&sb);
    assert_eq!(
        first.len(),
        1,
        "approval 1 left on its third attempt: {a:?}"
    );
    assert!(
        first[0].1 >= recorded + 1500,
        "approval 1 left {} ms after it was recorded; the attack needs > 1500",
        first[0].1 - recorded
    );

    sb.sandbox
        .add_pending([item(TxId::new(2), HOT, TREASURY, "5", "195")]);
    let b = e.cycle_once().await.unwrap();
    let both = approved_at_server(&sb);
    let close = both.windows(2).any(|w| w[1].1.abs_diff(w[0].1) < 1500)
        || (both.len() == 2 && both[0].1.abs_diff(both[1].1) < 1500);
    assert!(
        !close,
        "rule t (max_count 1 per 1.5 s) had approvals leave {:?} (id, ms): {} ms apart; cycle B {b:?}",
        both,
        both.last().unwrap().1.abs_diff(both[0].1)
    );
}

// ---- Kill switch ----

#[tokio::test]
async fn a_latest_mode_event_that_cannot_be_read_restores_hold_not_normal() {
    // The operator paused (hold); the latest mode event is then one this version cannot read
    // (written by another version, or a spelling it does not know). Fail closed: unknown state
    // means no approval.
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &sb.url, &policy, small_pages());
    e.control()
        .set_mode(Mode::Hold, "operator API")
        .await
        .unwrap();
    e.ledger()
        .record_event(EventKind::Mode, r#"{"mode":"Hold","by":"operator API"}"#)
        .await
        .unwrap();
    let restored = e.control().restore_mode().await.unwrap();
    let out = e.cycle_once().await.unwrap();
    assert_ne!(
        restored,
        Mode::Normal,
        "a mode event that cannot be read restored normal mode; cycle: {out:?}"
    );
    assert_nothing_approved(&e, &sb).await;
}

// ---- An id listed twice ----

#[tokio::test]
async fn an_id_listed_twice_once_with_a_twin_member_is_held() {
    // The listing shows id 1 twice: once plainly to STRANGER, once with `toAddress` written
    // twice (STRANGER, then BAD). The daemon reads the second copy first-wins, so both copies
    // look alike and the plain one is decided; a last-wins reader sees id 1 listed to two
    // destinations ("an id listed twice with different fields: held").
    let plain = item(TxId::new(1), HOT, STRANGER, "1", "195");
    let twin = format!(
        r#"{{"id":1,"fromAddress":"{HOT}","toAddress":"{STRANGER}","toAddress":"{BAD}","amount":"1","chainId":"195"}}"#
    );
    let sb = start_sandbox(scenario(vec![plain])).await;
    sb.sandbox.add_unkeyed([twin]);
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(
        dir.path(),
        &sb.url,
        &blocklist_policy(BAD, ""),
        small_pages(),
    );
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.listed, 1, "{out:?}");
    assert_decisions(
        &e,
        &[(
            1,
            Action::Hold,
            "(malformed)",
            "the listing showed this id twice with different fields",
        )],
    )
    .await;
    assert_nothing_approved(&e, &sb).await;
}

// ---- Clock ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_each_within_the_allowed_skew_cannot_fit_two_approvals_in_one_window() {
    if !faketime_or_skip() {
        return;
    }
    // api.max_clock_skew is 30 s (default). Run 1: the clock is 25 s behind the server's
    // (allowed), approval 1 is stamped 25 s early. Run 2, a second later: the clock is 25 s
    // ahead (allowed). Rule t allows one approval per 45 s; without the windows' slack, run 2
    // would see approval 1 as 50 s old, out of the window, and approve 2 a second after 1.
    let sandbox = spawn_sandbox(&["--max-skew", "1h"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"45s\"\nmax_count = 1\n"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap().to_string();
    let add = |id: TxId| post_pending(&sandbox.url, vec![item(id, HOT, TREASURY, "1", "195")]);
    add(TxId::new(1)).await;
    let one = run_once_at("-25s", &c).await;
    assert!(one.status.success(), "{}", all_output(&one));
    add(TxId::new(2)).await;
    let two = run_once_at("+25s", &c).await;
    assert!(two.status.success(), "{}", all_output(&two));
    let decided: Vec<serde_json::Value> = sandbox_decisions(&sandbox.url).await;
    let approved: Vec<_> = decided
        .iter()
        .filter(|d| d["status"] == 1)
        .map(|d| (d["id"].clone(), d["at_ms"].clone()))
        .collect();
    assert_eq!(
        approved.len(),
        1,
        "rule t (max_count 1 per 45 s) let {approved:?} (id, ms) out, each run within \
         max_clock_skew of the server: run 1 {} run 2 {}",
        all_output(&one),
        all_output(&two)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_while_the_ledger_cannot_be_written_still_stops_a_retrying_approval() {
    // An approval is recorded and retrying (503, Retry-After 1 s). The operator pauses, and the
    // pause cannot be recorded. Engaging the kill switch is the safe direction: failing to
    // record it must not leave approvals flowing. Only the mode's record fails here: with the
    // whole disk read-only the retry's own record (a `resend`, written before it leaves) would
    // fail too and stop it, and the test could not tell whether the kill switch did.
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
        retry_after: Some(1),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let mut cfg = client_config(&sb.url);
    cfg.max_retries = 3;
    cfg.initial_backoff = Duration::from_secs(1);
    cfg.max_backoff = Duration::from_secs(1);
    let e = engine_with_client(dir.path(), cfg, &policy, small_pages());
    let operator = async {
        wait_until("the first approve attempt", Duration::from_secs(10), || {
            let n = approve_requests(&sb);
            async move { n >= 1 }
        })
        .await;
        e.ledger().simulate_mode_write_failure().await.unwrap();
        let paused = e.control().set_mode(Mode::Hold, "operator API").await;
        sb.sandbox.set_faults(Faults::default());
        paused.map_err(|e| e.to_string())
    };
    let (out, paused) = tokio::join!(e.cycle_once(), operator);
    assert_eq!(
        approved_at_server(&sb),
        Vec::<(TxId, u64)>::new(),
        "the approval went out after the operator paused (pause: {paused:?}, mode now {:?}); cycle {out:?}",
        e.control().mode()
    );
    let paused = paused.unwrap_err();
    assert!(
        paused.starts_with(
            "hold-all mode is in force now on this instance only: it could not be recorded in \
             the ledger"
        ),
        "{paused}"
    );
    assert_eq!(e.control().mode(), Mode::Hold);
    assert_eq!(approve_requests(&sb), 1, "no attempt after the pause");
    let r = rows(&e).await;
    assert_eq!(
        r[0].status_message.as_deref(),
        Some(
            "/api/transaction/approve: not sent after 1 attempt(s): hold-all mode set by an \
             operator"
        ),
        "the retry was stopped by the mode in force, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_set_during_a_retry_stops_the_approval_and_never_rejects_the_id_on_top() {
    // Regression: the operator throws the kill switch to reject-all while a recorded approval
    // sleeps in backoff. It must not go out, and the next cycle (reject-all) must not sign a
    // reject for the same id either.
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
        retry_after: Some(1),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let mut cfg = client_config(&sb.url);
    cfg.max_retries = 3;
    cfg.initial_backoff = Duration::from_secs(1);
    cfg.max_backoff = Duration::from_secs(1);
    let e = engine_with_client(dir.path(), cfg, &policy, small_pages());
    let operator = async {
        wait_until("the first approve attempt", Duration::from_secs(10), || {
            let n = approve_requests(&sb);
            async move { n >= 1 }
        })
        .await;
        e.control()
            .set_mode(Mode::Reject, "operator API")
            .await
            .unwrap();
        sb.sandbox.set_faults(Faults::default());
    };
    let (a, ()) = tokio::join!(e.cycle_once(), operator);
    let b = e.cycle_once().await.unwrap();
    assert_eq!(
        sb.sandbox
            .decisions()
            .iter()
            .map(|d| (d.id, d.status))
            .collect::<Vec<_>>(),
        Vec::<(TxId, u8)>::new(),
        "cycle A {a:?}, cycle B {b:?}"
    );
    let recorded: Vec<_> = rows(&e)
        .await
        .iter()
        .map(|r| (r.tx_id, r.action))
        .collect::<Vec<_>>();
    assert_eq!(
        recorded,
        vec![(TxId::new(1), Action::Approve)],
        "one decision per id"
    );
}

/// A TCP proxy to `upstream` that rewrites the `Date` of every 503 answer to an hour ahead of
/// the real time; returns its `http://` URL.
async fn skewed_503_proxy(upstream: String) -> String {
    date_rewriting_proxy(upstream, |text, date| match date {
        Some(r) if text.to_ascii_lowercase().starts_with("http/1.1 503") => {
            let ahead = std::time::SystemTime::now() + Duration::from_secs(3600);
            format!(
                "{}\r\ndate: {}{}",
                &text[..r.start],
                httpdate::fmt_http_date(ahead),
                &text[r.end..]
            )
        }
        _ => text.to_string(),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_on_a_failed_answer_showing_the_clock_an_hour_off_stops_the_retries() {
    // Regression: the listing's `Date` agrees with the clock, so the approval is decided and
    // sent; its 503 answer carries a `Date` an hour ahead. Every later attempt is asked about
    // the clock again and must not go out.
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
        ..Faults::default()
    });
    let proxy = skewed_503_proxy(sb.url.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    );
    let e = engine_for(dir.path(), &proxy, &policy, small_pages());
    let out = e.cycle_once().await.unwrap();
    assert_eq!(
        approve_requests(&sb),
        1,
        "attempts after a Date an hour off: {out:?}"
    );
}
