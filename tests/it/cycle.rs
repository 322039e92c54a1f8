//! One poll cycle end to end against the sandbox: decisions recorded before they are sent,
//! re-sent identically, window totals surviving restarts, dry runs, ledger failures, tampering.

use std::path::Path;
use std::sync::Arc;

use cosigner::cycle::{CycleError, Engine, PollSettings};
use cosigner::domain::Action;
use cosigner::ledger::{EventKind, SqliteLedger, Status};
use cosigner::policy;
use cosigner_sandbox::server::{Faults, Scenario};

use crate::support::*;

const POLICY: &str = r#"
default = "hold"
[lists]
treasury = ["TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV"]
[[rule]]
name = "blocked"
action = "reject"
to = ["TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7"]
[[rule]]
name = "treasury"
action = "approve"
to = ["@treasury"]
max_amount = "1000"
window = "24h"
max_count = 2
"#;

fn engine(dir: &Path, url: &str, policy_text: &str, dry_run: bool) -> Engine {
    let settings = PollSettings {
        page_size: 10,
        max_in_flight: 4,
        dry_run,
        ..PollSettings::default()
    };
    engine_for(dir, url, policy_text, settings)
}

#[tokio::test]
async fn one_cycle_approves_rejects_and_holds_by_the_policy_and_the_sandbox_verifies_each() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, TREASURY, "4.1", "195"),
        item(TxId::new(2), HOT, BAD, "10", "195"),
        item(TxId::new(3), HOT, STRANGER, "10", "195"),
        item(TxId::new(4), HOT, TREASURY, "-1", "195"),
    ]))
    .await;
    let e = engine(dir.path(), &sb.url, POLICY, false);
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.listed, 4);
    assert_eq!(out.submitted, 2);
    let decided: Vec<(TxId, u8)> = sb
        .sandbox
        .decisions()
        .iter()
        .map(|d| (d.id, d.status))
        .collect();
    assert!(
        decided.contains(&(TxId::new(1), 1))
            && decided.contains(&(TxId::new(2), 2))
            && decided.len() == 2,
        "{decided:?}"
    );
    assert!(
        sb.sandbox.rejections().is_empty(),
        "{:?}",
        sb.sandbox.rejections()
    );

    let r = rows(&e).await;
    let by_tx = |id| r.iter().find(|x| x.tx_id == TxId::new(id)).unwrap();
    assert_eq!(
        (by_tx(1).action, by_tx(1).status.clone()),
        (Action::Approve, Status::Submitted)
    );
    assert_eq!(by_tx(2).action, Action::Reject);
    assert_eq!(
        (by_tx(3).action, by_tx(3).rule.as_str()),
        (Action::Hold, "(default)")
    );
    assert_eq!(
        (by_tx(4).action, by_tx(4).rule.as_str()),
        (Action::Hold, "(malformed)")
    );
    assert_eq!(by_tx(1).policy_sha256, e.policy().sha256);
    let sent = sb
        .sandbox
        .decisions()
        .into_iter()
        .find(|d| d.id == TxId::new(1))
        .unwrap();
    assert_eq!(
        by_tx(1).data.as_deref(),
        Some(sent.data.as_str()),
        "the sandbox got the recorded data"
    );
    let text = by_tx(1).signed_text.clone().unwrap();
    assert_eq!(
        text,
        r#"{"id":1,"from":"TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg","to":"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV","value":"4.1","chainId":"195","status":1}"#
    );
    assert!(e.ledger().verify().await.unwrap().problems.is_empty());
}

#[tokio::test]
async fn holds_are_recorded_when_first_seen_and_when_their_reason_changes_not_every_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        STRANGER,
        "5",
        "195",
    )]))
    .await;
    let e = engine(dir.path(), &sb.url, POLICY, false);
    e.cycle_once().await.unwrap();
    let out = e.cycle_once().await.unwrap();
    assert_eq!((out.held, out.holds_unchanged), (1, 1));
    assert_eq!(rows(&e).await.len(), 1);
    // A policy that holds it for another reason: recorded again.
    e.control().replace_policy(Arc::new(
        policy::parse(
            "default = \"hold\"\n[[rule]]\nname = \"x\"\naction = \"hold\"\n",
            &dir.path().join("p2.toml"),
            &|_| unreachable!(),
        )
        .unwrap(),
    ));
    e.cycle_once().await.unwrap();
    let r = rows(&e).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].rule, "x");
}

#[tokio::test]
async fn window_totals_survive_a_restart_between_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, TREASURY, "1", "195"),
        item(TxId::new(2), HOT, TREASURY, "1", "195"),
    ]))
    .await;
    {
        let e = engine(dir.path(), &sb.url, POLICY, false);
        assert_eq!(e.cycle_once().await.unwrap().submitted, 2);
    }
    sb.sandbox
        .add_pending([item(TxId::new(3), HOT, TREASURY, "1", "195")]);
    let e = engine(dir.path(), &sb.url, POLICY, false);
    e.cycle_once().await.unwrap();
    let last = rows(&e).await.pop().unwrap();
    assert_eq!(
        (last.tx_id, last.action, last.rule.as_str()),
        (TxId::new(3), Action::Hold, "(default)"),
        "max_count 2 per 24h"
    );
    assert_eq!(sb.sandbox.decisions().len(), 2);
}

#[tokio::test]
async fn within_one_cycle_the_window_counts_each_approval_as_it_is_decided() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(
        (1..=5)
            .map(|i| item(TxId::new(i), HOT, TREASURY, "1", "195"))
            .collect(),
    ))
    .await;
    let e = engine(dir.path(), &sb.url, POLICY, false);
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.decided.get("approve"), Some(&2));
    assert_eq!(out.decided.get("hold"), Some(&3));
}

#[tokio::test]
async fn a_recorded_approval_is_resent_identically_only_while_the_policy_in_force_still_approves_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(7),
        HOT,
        TREASURY,
        "12.50",
        "56",
    )]))
    .await;
    let e = engine(dir.path(), &sb.url, POLICY, false);
    // Every approve request fails at the server: the decision is recorded, not confirmed.
    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        error_paths: vec!["/api/transaction/approve".into()],
        ..Faults::default()
    });
    let out = e.cycle_once().await.unwrap();
    assert_eq!((out.submitted, out.failed), (0, 1));
    let first = rows(&e).await.pop().unwrap();
    assert_eq!(
        (first.action, first.status.clone()),
        (Action::Approve, Status::Failed)
    );
    assert!(
        first.status_message.as_deref().unwrap().contains("503"),
        "{first:?}"
    );

    // The operator reloads a policy that rejects everything: the recorded approval is not sent,
    // and not turned into a reject either; the ledger says why, as an event.
    sb.sandbox.set_faults(Faults::default());
    let reject_all = policy::parse(
        "default = \"reject\"\n",
        &dir.path().join("p.toml"),
        &|_| unreachable!(),
    )
    .unwrap();
    e.control().replace_policy(Arc::new(reject_all));
    for _ in 0..2 {
        let out = e.cycle_once().await.unwrap();
        assert_eq!((out.resent, out.submitted, out.held), (0, 0, 1), "{out:?}");
    }
    assert!(
        sb.sandbox.decisions().is_empty(),
        "nothing reached the server"
    );
    let r = rows(&e).await;
    assert_eq!(r.len(), 1, "no second decision");
    let waits = e.ledger().list_events(EventKind::Waiting).await.unwrap();
    assert_eq!(waits.len(), 1, "recorded once, not every cycle: {waits:?}");
    assert!(
        waits[0].contains("reject by (default)"),
        "the event says why: {waits:?}"
    );

    // A later policy that approves it again lets the very same data through.
    let approve_again =
        policy::parse(POLICY, &dir.path().join("p2.toml"), &|_| unreachable!()).unwrap();
    e.control().replace_policy(Arc::new(approve_again));
    let out = e.cycle_once().await.unwrap();
    assert_eq!((out.resent, out.submitted), (1, 1));
    let d = sb.sandbox.decisions();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].id, d[0].status), (TxId::new(7), 1));
    assert_eq!(Some(d[0].data.clone()), first.data, "identical data");
    let r = rows(&e).await;
    assert_eq!(r.len(), 1, "no second decision");
    assert_eq!(r[0].status, Status::Submitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_soon_after_the_record_is_still_recorded_as_a_resend_before_it_leaves() {
    // The first attempt fails (503); the retry leaves ~200 ms after the record, well within
    // the 1 s a first attempt may take without a record of its own. A retry may leave after
    // the window that counted the record has moved on: every retry is recorded first.
    let dir = tempfile::tempdir().unwrap();
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
        error_paths: vec![cosigner::client::APPROVE.into()],
        // Retry-After (1 s) capped by max_backoff: the retry waits exactly 200 ms.
        retry_after: Some(1),
        ..Faults::default()
    });
    let mut cfg = client_config(&sb.url);
    cfg.max_retries = 1;
    cfg.initial_backoff = std::time::Duration::from_millis(200);
    cfg.max_backoff = std::time::Duration::from_millis(200);
    let e = engine_with_client(dir.path(), cfg, POLICY, small_pages());
    let out = e.cycle_once().await.unwrap();
    let ended = cosigner::clock::Clock::system().now_ms();
    assert_eq!((out.submitted, out.failed), (0, 1), "{out:?}");
    assert_eq!(approve_requests(&sb), 2, "the first attempt and one retry");
    let r = rows(&e).await;
    assert_eq!((r.len(), r[0].action), (1, Action::Approve));
    assert!(
        ended - r[0].recorded_at_ms < 1000,
        "the retry left within 1 s of the record (the cycle ended {} ms after it)",
        ended - r[0].recorded_at_ms
    );
    let resends = e
        .ledger()
        .list_events(cosigner::ledger::EventKind::Resend)
        .await
        .unwrap();
    assert_eq!(
        resends,
        vec![r#"{"amount":"5","rule":"treasury","seq":1,"tx_id":1}"#.to_string()],
        "the retry is recorded, under the rule that approved it, before it leaves"
    );
}

#[tokio::test]
async fn nothing_is_decided_when_the_pending_list_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "1",
        "195",
    )]))
    .await;
    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let e = engine(dir.path(), &sb.url, POLICY, false);
    assert!(matches!(e.cycle_once().await, Err(CycleError::List(_))));
    assert!(rows(&e).await.is_empty());
}

#[tokio::test]
async fn a_dry_run_records_decisions_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, TREASURY, "1", "195"),
        item(TxId::new(2), HOT, BAD, "1", "195"),
    ]))
    .await;
    let e = engine(dir.path(), &sb.url, POLICY, true);
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.submitted + out.failed, 0);
    assert!(sb.sandbox.decisions().is_empty());
    assert_eq!(
        sb.sandbox.stats().requests.get("/api/transaction/approve"),
        None
    );
    let r = rows(&e).await;
    assert!(r.iter().all(|x| x.dry_run && x.status == Status::NotSent));
    e.cycle_once().await.unwrap();
    assert_eq!(
        rows(&e).await.len(),
        2,
        "an unchanged dry run is not recorded again"
    );
    // Leaving dry-run mode decides for real, and dry runs did not use the window.
    drop(e);
    let e = engine(dir.path(), &sb.url, POLICY, false);
    assert_eq!(e.cycle_once().await.unwrap().submitted, 2);
}

#[tokio::test]
async fn a_ledger_that_cannot_be_written_gives_zero_approvals() {
    for full in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // Held items as large as poll.max_item_bytes lets them be: a full disk has no room
        // for their records.
        let big = "9".repeat(3500);
        let mut items = vec![item(TxId::new(1), HOT, TREASURY, "1", "195")];
        items.extend((2..=4).map(|id| {
            serde_json::json!({"id": id, "fromAddress": HOT, "toAddress": TREASURY, "amount": "2", "chainId": "195", "memo": big}).to_string()
        }));
        let sb = start_sandbox(scenario(items)).await;
        let e = engine(dir.path(), &sb.url, POLICY, false);
        e.ledger().simulate_write_failure(full).await.unwrap();
        let err = e.cycle_once().await.unwrap_err();
        assert!(matches!(err, CycleError::Ledger(_)), "{err}");
        assert!(sb.sandbox.decisions().is_empty(), "full={full}");
        assert_eq!(
            sb.sandbox.stats().requests.get("/api/transaction/approve"),
            None
        );
    }
}

#[tokio::test]
async fn overlapping_pages_are_deduplicated_and_every_transaction_decided_once() {
    let dir = tempfile::tempdir().unwrap();
    let items = (1..=45)
        .map(|i| item(TxId::new(i), HOT, STRANGER, "1", "195"))
        .collect();
    let sb = start_sandbox(Scenario {
        pending: items,
        faults: Faults {
            shift_pages: true,
            ..Faults::default()
        },
    })
    .await;
    let e = engine(dir.path(), &sb.url, "default = \"reject\"\n", false);
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.listed, 45);
    assert_eq!(sb.sandbox.decisions().len(), 45);
    assert_eq!(sb.sandbox.stats().conflicts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cycles_started_at_once_on_one_engine_decide_and_send_each_id_once() {
    // The ledger is read and written in separate calls with no lock held between them: only one
    // cycle at a time may plan and record, or both would find nothing recorded and decide twice.
    let dir = tempfile::tempdir().unwrap();
    let items = (1..=30)
        .map(|i| item(TxId::new(i), HOT, TREASURY, "1", "195"))
        .collect();
    let sb = start_sandbox(scenario(items)).await;
    let policy = "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\n";
    let e = Arc::new(engine(dir.path(), &sb.url, policy, false));
    let (a, b) = tokio::join!(
        tokio::spawn({
            let e = e.clone();
            async move { e.cycle_once().await }
        }),
        tokio::spawn({
            let e = e.clone();
            async move { e.cycle_once().await }
        })
    );
    let decided: u64 = [a, b]
        .into_iter()
        .map(|r| r.unwrap().unwrap().decided.values().sum::<u64>())
        .sum();
    assert_eq!(decided, 30, "30 decisions between the two cycles");
    let recorded = rows(&e).await;
    assert_eq!(recorded.len(), 30, "one record per id");
    assert_eq!(approved_ids(&sb), ids(1..=30));
    assert_eq!(
        sb.sandbox.decisions().len(),
        30,
        "one request per id reached the server"
    );
}

#[tokio::test]
async fn the_same_id_with_different_fields_is_a_new_decision() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(9),
        HOT,
        STRANGER,
        "1",
        "195",
    )]))
    .await;
    let e = engine(dir.path(), &sb.url, POLICY, false);
    e.cycle_once().await.unwrap();
    sb.sandbox
        .add_pending([item(TxId::new(9), HOT, TREASURY, "1", "195")]);
    e.cycle_once().await.unwrap();
    let r = rows(&e).await;
    assert_eq!(r.len(), 2);
    assert_ne!(r[0].fingerprint, r[1].fingerprint);
    assert_eq!(r[1].action, Action::Approve);
}

#[tokio::test]
async fn run_once_list_and_verify_work_from_the_command_line_and_tampering_is_detected() {
    let sandbox = spawn_sandbox(&[]);
    let http = reqwest::Client::new();
    let items: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            serde_json::from_str(&item(TxId::new(i), HOT, TREASURY, &format!("{i}"), "195"))
                .unwrap()
        })
        .collect();
    http.post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&items)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let c = cfg.to_str().unwrap();

    let out = run_bin(&["run", "--once", "--config", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 listed"),
        "{}",
        all_output(&out)
    );
    let decided: Vec<serde_json::Value> = sandbox_decisions(&sandbox.url).await;
    assert_eq!(decided.len(), 2);

    let out = run_bin(&["ledger", "list", "--config", c]).await;
    let text = all_output(&out);
    assert!(
        text.contains("submitted") && text.contains("(default)"),
        "{text}"
    );
    let out = run_bin(&["ledger", "list", "--config", c, "--json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3);

    let out = run_bin(&["ledger", "verify", "--config", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));

    let db = dir.path().join("ledger.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE decisions SET amount = '999' WHERE tx_id = 1", [])
        .unwrap();
    let out = run_bin(&["ledger", "verify", "--config", c]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(all_output(&out).contains("edited"), "{}", all_output(&out));
    conn.execute("UPDATE decisions SET amount = '1' WHERE tx_id = 1", [])
        .unwrap();
    assert_eq!(
        run_bin(&["ledger", "verify", "--config", c])
            .await
            .status
            .code(),
        Some(0)
    );

    let last: i64 = conn
        .query_row(
            "SELECT MAX(seq) FROM (SELECT seq FROM decisions UNION ALL SELECT seq FROM outcomes)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute("DELETE FROM outcomes WHERE seq = ?1", [last])
        .unwrap();
    conn.execute("DELETE FROM decisions WHERE seq = ?1", [last])
        .unwrap();
    let out = run_bin(&["ledger", "verify", "--config", c]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all_output(&out).contains("removed from the end"),
        "{}",
        all_output(&out)
    );

    conn.execute("DELETE FROM decisions WHERE seq = 2", [])
        .unwrap();
    let out = run_bin(&["ledger", "verify", "--config", c]).await;
    assert!(all_output(&out).contains("missing"), "{}", all_output(&out));
}

#[tokio::test]
async fn a_second_process_on_the_same_ledger_exits_1_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http://127.0.0.1:9");
    let _held = SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
    let started = std::time::Instant::now();
    let out = run_bin(&["run", "--once", "--config", cfg.to_str().unwrap()]).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all_output(&out).contains("in use by another cosigner process"),
        "{}",
        all_output(&out)
    );
}

#[test]
fn policy_explain_shows_each_rule_and_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http://127.0.0.1:9");
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let tx = item(TxId::new(5), HOT, TREASURY, "2000", "195");
    let out = bin()
        .args(["policy", "explain", "--config"])
        .arg(&cfg)
        .args(["--tx", &tx])
        .output()
        .unwrap();
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rule  1 \"blocked\": no"), "{text}");
    assert!(text.contains("above max_amount 1000"), "{text}");
    assert!(text.contains("decision: hold by (default)"), "{text}");
    let out = bin()
        .args(["policy", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(all_output(&out).contains("sha256"), "{}", all_output(&out));
}
