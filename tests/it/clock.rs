//! The wall clock stepped backwards past the newest ledger record, or jumped ahead of the
//! server's (libfaketime): no approvals until it is right; rejections and holds go on. Needs the
//! `faketime` program (Debian package `faketime`, which `.ci/run` installs); without it the test
//! says so and passes only outside CI. The same promises with a clock injected in process
//! (`Clock::manual`) run everywhere.

use std::time::Duration;

use cosigner::clock::Clock;
use cosigner::domain::Action;
use cosigner::ledger::SqliteLedger;
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_clock_stepped_back_nothing_is_approved_until_it_passes_the_newest_record() {
    if !faketime_or_skip() {
        return;
    }
    // The sandbox tolerates the skew, as if its own clock were off too: the daemon's clock check
    // is what is under test.
    let sandbox = spawn_sandbox(&["--max-skew", "3h"]);
    let add = |ids: Vec<(TxId, &'static str)>| {
        let items = ids
            .into_iter()
            .map(|(id, to)| item(id, HOT, to, "1", "195"))
            .collect();
        post_pending(&sandbox.url, items)
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("default = \"hold\"\n[[rule]]\nname = \"bad\"\naction = \"reject\"\nto = [\"{BAD}\"]\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"24h\"\nmax_count = 100\n"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap().to_string();
    add(vec![(TxId::new(1), TREASURY)]).await;
    assert!(
        run_bin(&["run", "--once", "--config", &c])
            .await
            .status
            .success()
    );

    // One hour in the past: the newest ledger record now lies in the future.
    add(vec![(TxId::new(4), TREASURY), (TxId::new(5), BAD)]).await;
    let out = run_once_at("-1h", &c).await;
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("clock is behind"), "the log says why: {text}");
    let ledger = SqliteLedger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    let h4 = ledger.history(TxId::new(4)).unwrap();
    assert_eq!(
        (h4[0].action, h4[0].rule.as_str()),
        (Action::Hold, "(clock)"),
        "{:?}",
        h4[0].reason
    );
    assert_eq!(
        ledger.history(TxId::new(5)).unwrap()[0].action,
        Action::Reject,
        "rejections go on"
    );
    drop(ledger);
    let approved_before: Vec<Value> = sandbox_decisions(&sandbox.url).await;
    assert!(!approved_before.iter().any(|d| d["id"] == 4));

    // The clock back to now: the held approval goes through.
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let decided: Vec<Value> = sandbox_decisions(&sandbox.url).await;
    assert!(
        decided.iter().any(|d| d["id"] == 4 && d["status"] == 1),
        "{decided:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_clock_jumped_ahead_of_the_server_nothing_is_approved_and_windows_stay_counted() {
    if !faketime_or_skip() {
        return;
    }
    // The sandbox tolerates the skew (as a lenient server would): the daemon's own comparison
    // of its clock with the server's `Date` is what is under test.
    let sandbox = spawn_sandbox(&["--max-skew", "3h"]);
    let add = |id: TxId| post_pending(&sandbox.url, vec![item(id, HOT, TREASURY, "1", "195")]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    // One approval per hour: a clock two hours ahead would find the window empty.
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"1h\"\nmax_count = 1\n"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap().to_string();
    add(TxId::new(1)).await;
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    assert!(out.status.success(), "{}", all_output(&out));

    add(TxId::new(2)).await;
    let out = run_once_at("+2h", &c).await;
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ahead of the server"),
        "the log says why: {text}"
    );
    let ledger = SqliteLedger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    let h2 = ledger.history(TxId::new(2)).unwrap();
    assert_eq!(
        (h2[0].action, h2[0].rule.as_str()),
        (Action::Hold, "(clock)"),
        "{:?}",
        h2[0].reason
    );
    assert!(
        h2[0].reason.contains("ahead of the server's"),
        "{}",
        h2[0].reason
    );
    let decided: Vec<Value> = sandbox_decisions(&sandbox.url).await;
    assert_eq!(decided.len(), 1, "only the first approval: {decided:?}");
}

// ---- The clock injected in process (no libfaketime) ----

const ONE_PER_HOUR: &str = "default = \"hold\"\n[[rule]]\nname = \"bad\"\naction = \"reject\"\nto = [\"TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7\"]\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\nwindow = \"1h\"\nmax_count = 1\n";

#[tokio::test]
async fn with_an_injected_clock_a_window_frees_up_once_it_has_passed_and_not_before() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "1",
        "195",
    )]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (clock, hand) = Clock::manual(Clock::system().now_ms());
    let e = engine_with_clock(
        dir.path(),
        client_config(&sb.url),
        ONE_PER_HOUR,
        small_pages(),
        clock.clone(),
    );
    e.cycle_once().await.unwrap();
    assert_eq!(approved_ids(&sb), ids([1]));

    sb.sandbox
        .add_pending([item(TxId::new(2), HOT, TREASURY, "1", "195")]);
    hand.advance(Duration::from_secs(59 * 60));
    e.cycle_once().await.unwrap();
    assert_eq!(
        approved_ids(&sb),
        ids([1]),
        "approval 1 still fills the window"
    );
    let held = e.ledger().history(TxId::new(2)).await.unwrap();
    assert_eq!(held[0].action, Action::Hold, "{:?}", held[0].reason);

    // The window reaches back 2 × (30 s allowed skew + 2 s) + 1 s further: 65 s.
    hand.advance(Duration::from_secs(60 + 64));
    let out = e.cycle_once().await.unwrap();
    assert_eq!(
        approved_ids(&sb),
        ids([1]),
        "a second before the window and its slack have passed: {out:?}"
    );
    assert_eq!(out.holds_unchanged, 1, "{out:?}");
    let held = e.ledger().history(TxId::new(2)).await.unwrap();
    assert_eq!(
        (held.len(), held[0].rule.as_str(), held[0].reason.as_str()),
        (
            1,
            "(default)",
            "no rule matched (nearest, \"t\": window count would be 2 (limit 1 per 1h)); the \
             policy default applies"
        )
    );
    hand.advance(Duration::from_secs(2));
    e.cycle_once().await.unwrap();
    assert_eq!(approved_ids(&sb), ids([1, 2]), "the window has passed");
    let h = e.ledger().history(TxId::new(2)).await.unwrap();
    assert_eq!(
        h.last().unwrap().recorded_at_ms,
        clock.now_ms(),
        "records carry the injected clock's time"
    );
}

#[tokio::test]
async fn with_an_injected_clock_stepped_back_behind_the_newest_record_nothing_is_approved() {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "1",
        "195",
    )]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let now = Clock::system().now_ms();
    let (clock, hand) = Clock::manual(now);
    let policy = ONE_PER_HOUR.replace("max_count = 1", "max_count = 100");
    let e = engine_with_clock(
        dir.path(),
        client_config(&sb.url),
        &policy,
        small_pages(),
        clock,
    );
    e.cycle_once().await.unwrap();
    assert_eq!(approved_ids(&sb), ids([1]));

    hand.set_ms(now - 3_600_000);
    sb.sandbox.add_pending([
        item(TxId::new(2), HOT, TREASURY, "1", "195"),
        item(TxId::new(3), HOT, BAD, "1", "195"),
    ]);
    e.cycle_once().await.unwrap();
    assert_eq!(approved_ids(&sb), ids([1]), "nothing approved while behind");
    let h2 = e.ledger().history(TxId::new(2)).await.unwrap();
    assert_eq!(
        (h2[0].action, h2[0].rule.as_str()),
        (Action::Hold, "(clock)"),
        "{:?}",
        h2[0].reason
    );
    assert_eq!(
        e.ledger().history(TxId::new(3)).await.unwrap()[0].action,
        Action::Reject,
        "rejections go on"
    );

    hand.set_ms(now + 1_000);
    e.cycle_once().await.unwrap();
    assert_eq!(
        approved_ids(&sb),
        ids([1, 2]),
        "approved once the clock is past"
    );
}
