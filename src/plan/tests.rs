//! Every rule of `plan`, one case each, with the exact rule and reason it gives: the re-check
//! before a re-send above all (what the policy in force, the mode and the windows say now,
//! the approval's own earlier count left out).

use std::path::Path;

use super::*;
use crate::ledger::Status;
use crate::policy::Approval;

const HOT: &str = "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg";
const TREASURY: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
const BAD: &str = "TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7";
const STRANGER: &str = "TStrg5jgAgn9jVXqdagAmBka4A2u7n1ZXs";

/// Reject `BAD`; approve `TREASURY` once an hour (rule `t`) and `STRANGER` always (rule `u`).
fn policy() -> Policy {
    policy_of(&format!(
        "default = \"hold\"\n\
         [[rule]]\nname = \"bad\"\naction = \"reject\"\nto = [\"{BAD}\"]\n\
         [[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"1h\"\nmax_count = 1\n\
         [[rule]]\nname = \"u\"\naction = \"approve\"\nto = [\"{STRANGER}\"]\n"
    ))
}

fn policy_of(text: &str) -> Policy {
    crate::policy::parse(text, Path::new("policy.toml"), &|_| unreachable!()).unwrap()
}

fn tx(to: &str) -> Withdrawal {
    Withdrawal {
        id: crate::domain::TxId::new(7),
        from: Some(HOT.into()),
        to: Some(to.into()),
        amount: Some("5".into()),
        chain_id: Some("195".into()),
        problems: vec![],
        raw: String::new(),
    }
}

/// A recorded, sent-but-unconfirmed decision about `tx` at `seq`.
fn row(tx: &Withdrawal, seq: u64, action: Action, status: Status) -> DecisionRow {
    DecisionRow {
        seq,
        tx_id: tx.id,
        fingerprint: crate::ledger::fingerprint(tx),
        tx_json: tx.raw.clone(),
        from: tx.from.clone(),
        to: tx.to.clone(),
        amount: tx.amount.clone(),
        chain_id: tx.chain_id.clone(),
        action,
        rule: "t".into(),
        reason: "matched rule \"t\"".into(),
        policy_sha256: String::new(),
        dry_run: false,
        signed_text: Some("{}".into()),
        data: Some("data".into()),
        recorded_at_ms: 0,
        status,
        status_message: None,
    }
}

fn live(tx: &Withdrawal, action: Action, status: Status) -> TxState {
    TxState {
        live: Some(row(tx, 1, action, status)),
        ..TxState::default()
    }
}

/// Usage at `now` of the recorded approvals `(seq, rule)`, each made just now.
fn usage(policy: &Policy, approvals: &[(u64, &str)]) -> Usage {
    Usage::at(
        policy,
        0,
        std::time::Duration::ZERO,
        approvals.iter().map(|(seq, rule)| Approval {
            key: *seq,
            rule,
            amount: Decimal::new(5, 0),
            at_ms: 0,
        }),
    )
}

fn inputs<'a>(policy: &'a Policy, usage: &'a Usage, mode: Mode) -> Inputs<'a> {
    Inputs {
        policy,
        mode,
        usage,
        max_sign_len: 245,
        clock: ClockCheck::Ok,
        listed_twice: false,
        trace: false,
    }
}

/// `(action, rule, reason)` of a new decision; panics on any other plan.
fn decided(p: Plan) -> (Action, String, String) {
    match p {
        Plan::Decide(e) => (e.action, e.rule.into_owned(), e.reason.to_string()),
        other => panic!("expected a new decision, got {other:?}"),
    }
}

fn waits(p: Plan) -> (u64, String) {
    match p {
        Plan::Wait { seq, reason } => (seq, reason),
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn resends(p: Plan) -> (u64, Option<(String, Decimal)>) {
    match p {
        Plan::Resend { seq, approval } => (seq, approval),
        other => panic!("expected a re-send, got {other:?}"),
    }
}

#[test]
fn a_recorded_approval_the_policy_in_force_still_approves_is_resent_under_that_rule() {
    let p = policy();
    let t = tx(TREASURY);
    // Its own earlier approval fills rule t's window (1 of 1): it is not counted against itself.
    let u = usage(&p, &[(1, "t")]);
    let plan = plan(
        &t,
        &live(&t, Action::Approve, Status::Failed),
        &inputs(&p, &u, Mode::Normal),
    );
    assert_eq!(
        resends(plan),
        (1, Some(("t".to_string(), Decimal::new(5, 0))))
    );
}

#[test]
fn a_recorded_approval_is_not_resent_when_another_approval_fills_the_window_now() {
    let p = policy();
    let t = tx(TREASURY);
    let u = usage(&p, &[(1, "t"), (2, "t")]);
    let plan = plan(
        &t,
        &live(&t, Action::Approve, Status::Failed),
        &inputs(&p, &u, Mode::Normal),
    );
    assert_eq!(
        waits(plan),
        (
            1,
            "the recorded approval is not sent again: the policy in force now says hold by \
             (default) (no rule matched (nearest, \"t\": window count would be 2 (limit 1 per \
             1h)); the policy default applies)"
                .to_string()
        )
    );
}

#[test]
fn a_recorded_approval_is_not_resent_when_the_policy_in_force_rejects_or_holds_it() {
    let t = tx(TREASURY);
    let u = Usage::default();
    let state = live(&t, Action::Approve, Status::Recorded);
    let reject_all = policy_of("default = \"reject\"\n");
    assert_eq!(
        waits(plan(&t, &state, &inputs(&reject_all, &u, Mode::Normal))),
        (
            1,
            "the recorded approval is not sent again: the policy in force now says reject by \
             (default) (no rule matched; the policy default applies)"
                .to_string()
        )
    );
    let blocked = policy_of(&format!(
        "default = \"approve\"\n[[rule]]\nname = \"no\"\naction = \"reject\"\nto = [\"{TREASURY}\"]\n"
    ));
    assert_eq!(
        waits(plan(&t, &state, &inputs(&blocked, &u, Mode::Normal))).1,
        "the recorded approval is not sent again: the policy in force now says reject by no \
         (matched rule \"no\")"
    );
    let hold_all = policy_of("default = \"hold\"\n");
    assert!(
        waits(plan(&t, &state, &inputs(&hold_all, &u, Mode::Normal)))
            .1
            .contains("now says hold by (default)")
    );
}

#[test]
fn a_recorded_approval_approved_now_by_another_rule_is_resent_under_that_rule() {
    let t = tx(TREASURY);
    let u = Usage::default();
    let reloaded = policy_of(&format!(
        "default = \"hold\"\n[[rule]]\nname = \"v\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"
    ));
    let state = live(&t, Action::Approve, Status::Failed);
    assert_eq!(
        resends(plan(&t, &state, &inputs(&reloaded, &u, Mode::Normal))),
        (1, Some(("v".to_string(), Decimal::new(5, 0))))
    );
}

#[test]
fn a_recorded_approval_waits_while_the_clock_cannot_be_trusted() {
    let p = policy();
    let t = tx(STRANGER);
    let u = Usage::default();
    let mut inp = inputs(&p, &u, Mode::Normal);
    inp.clock = ClockCheck::BehindLedger;
    let (seq, reason) = waits(plan(&t, &live(&t, Action::Approve, Status::Failed), &inp));
    assert_eq!(seq, 1);
    assert!(
        reason.starts_with(
            "the recorded approval is not sent again: the policy in force now says hold by (clock)"
        ),
        "{reason}"
    );
}

#[test]
fn a_recorded_approval_waits_in_hold_and_reject_mode() {
    let p = policy();
    let t = tx(STRANGER);
    let u = Usage::default();
    let state = live(&t, Action::Approve, Status::Failed);
    for (mode, reason) in [
        (
            Mode::Hold,
            "hold-all mode set by an operator: the recorded approval waits",
        ),
        (
            Mode::Reject,
            "reject-all mode set by an operator: the recorded approval waits",
        ),
    ] {
        assert_eq!(
            waits(plan(&t, &state, &inputs(&p, &u, mode))),
            (1, reason.to_string())
        );
    }
}

#[test]
fn a_recorded_reject_is_resent_whatever_the_policy_says_now_but_waits_in_hold_mode() {
    // The policy now approves STRANGER: a reject, once signed, is final all the same.
    let p = policy();
    let t = tx(STRANGER);
    let u = Usage::default();
    let state = live(&t, Action::Reject, Status::Failed);
    for mode in [Mode::Normal, Mode::Reject] {
        assert_eq!(resends(plan(&t, &state, &inputs(&p, &u, mode))), (1, None));
    }
    assert_eq!(
        waits(plan(&t, &state, &inputs(&p, &u, Mode::Hold))),
        (
            1,
            "hold-all mode set by an operator: the recorded reject waits".to_string()
        )
    );
}

#[test]
fn a_decision_the_server_accepted_is_done() {
    let p = policy();
    let t = tx(STRANGER);
    let u = Usage::default();
    for action in [Action::Approve, Action::Reject] {
        let state = live(&t, action, Status::Submitted);
        match plan(&t, &state, &inputs(&p, &u, Mode::Hold)) {
            Plan::Done { seq } => assert_eq!(seq, 1),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_recorded_decision_waits_while_its_id_is_listed_twice_or_has_another_recorded_decision() {
    let p = policy();
    let t = tx(STRANGER);
    let u = Usage::default();
    let mut inp = inputs(&p, &u, Mode::Normal);
    inp.listed_twice = true;
    assert_eq!(
        waits(plan(&t, &live(&t, Action::Approve, Status::Failed), &inp)),
        (
            1,
            "the listing shows this id twice with different fields: the recorded decision waits"
                .to_string()
        )
    );
    let mut state = live(&t, Action::Approve, Status::Failed);
    state.decided_other = Some(row(&tx(BAD), 3, Action::Reject, Status::Failed));
    assert_eq!(
        waits(plan(&t, &state, &inputs(&p, &u, Mode::Normal))),
        (
            1,
            "this id also has a recorded reject for other fields (record 3): nothing more is \
             sent for it"
                .to_string()
        )
    );
}

#[test]
fn an_id_decided_for_other_fields_is_held_and_never_decided_again() {
    let p = policy();
    let t = tx(STRANGER);
    let u = Usage::default();
    let state = TxState {
        decided_other: Some(row(&tx(BAD), 3, Action::Reject, Status::Submitted)),
        ..TxState::default()
    };
    assert_eq!(
        decided(plan(&t, &state, &inputs(&p, &u, Mode::Normal))),
        (
            Action::Hold,
            RULE_DECIDED.to_string(),
            "already decided (reject at 1970-01-01T00:00:00Z, record 3); listed again with \
             other fields"
                .to_string()
        )
    );
}

#[test]
fn an_id_listed_twice_with_different_fields_is_held_as_malformed() {
    let p = policy();
    let t = tx(STRANGER);
    let u = Usage::default();
    let mut inp = inputs(&p, &u, Mode::Normal);
    inp.listed_twice = true;
    assert_eq!(
        decided(plan(&t, &TxState::default(), &inp)),
        (
            Action::Hold,
            RULE_MALFORMED.to_string(),
            "the listing showed this id twice with different fields".to_string()
        )
    );
}

#[test]
fn a_new_transaction_is_decided_by_the_policy_and_then_by_the_kill_switch() {
    let p = policy();
    let u = Usage::default();
    let new = TxState::default();
    let approve = tx(STRANGER);
    assert_eq!(
        decided(plan(&approve, &new, &inputs(&p, &u, Mode::Normal))),
        (
            Action::Approve,
            "u".to_string(),
            "matched rule \"u\"".to_string()
        )
    );
    assert_eq!(
        decided(plan(&approve, &new, &inputs(&p, &u, Mode::Hold))),
        (
            Action::Hold,
            RULE_PAUSED.to_string(),
            "hold-all mode set by an operator (the policy said: approve by u)".to_string()
        )
    );
    assert_eq!(
        decided(plan(&approve, &new, &inputs(&p, &u, Mode::Reject))),
        (
            Action::Reject,
            RULE_PAUSED.to_string(),
            "reject-all mode set by an operator (the policy said: approve by u)".to_string()
        )
    );
    // Malformed input stays a hold for its own reason, whatever the mode.
    let mut malformed = tx(STRANGER);
    malformed.chain_id = Some("0195".into());
    for mode in [Mode::Normal, Mode::Hold, Mode::Reject] {
        assert_eq!(
            decided(plan(&malformed, &new, &inputs(&p, &u, mode))),
            (
                Action::Hold,
                RULE_MALFORMED.to_string(),
                "chainId \"0195\" starts with 0: write a chain id without leading zeros"
                    .to_string()
            ),
            "{mode:?}"
        );
    }
}

#[test]
fn a_trace_is_kept_only_when_asked_for() {
    let p = policy();
    let u = Usage::default();
    let mut inp = inputs(&p, &u, Mode::Normal);
    let Plan::Decide(quiet) = plan(&tx(STRANGER), &TxState::default(), &inp) else {
        panic!()
    };
    assert!(quiet.trace.is_empty());
    inp.trace = true;
    let Plan::Decide(traced) = plan(&tx(STRANGER), &TxState::default(), &inp) else {
        panic!()
    };
    assert_eq!(traced.trace.len(), 3, "bad, t, u");
}

#[test]
fn a_plan_amounts_to_the_recorded_action_or_a_hold() {
    let t = tx(STRANGER);
    let recorded = row(&t, 1, Action::Reject, Status::Failed);
    let resend = Plan::Resend {
        seq: 1,
        approval: None,
    };
    assert_eq!(resend.action(Some(&recorded)), Action::Reject);
    assert_eq!(resend.action(None), Action::Hold);
    assert_eq!(
        Plan::Done { seq: 1 }.action(Some(&recorded)),
        Action::Reject
    );
    let wait = Plan::Wait {
        seq: 1,
        reason: String::new(),
    };
    assert_eq!(wait.action(Some(&recorded)), Action::Hold);
}

#[test]
fn a_time_in_a_reason_is_the_utc_second_it_names() {
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_time(1_700_000_000_999), "2023-11-14T22:13:20Z");
}
