//! The ledger costs the same in year three as on day one (issue 21): the chain is walked in
//! constant memory; at start the daemon verifies only what was added since the last verified
//! point and what its first decisions read (the windows, the latest mode record, the head), and
//! walks the rest in the background, holding everything if it finds a break.

use std::path::Path;
use std::time::Duration;

use cosigner::clock::Clock;
use cosigner::daemon::{DaemonError, Options};
use cosigner::domain::{Action, TxId, Withdrawal};
use cosigner::ledger::{EventKind, NewDecision, SqliteLedger};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const WINDOWED: &str = "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\n\
                        to = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\nwindow = \"24h\"\nmax_count = 100\n";

fn decision(id: u64, action: Action) -> NewDecision {
    let tx = Withdrawal {
        id: TxId::new(id),
        from: Some(HOT.into()),
        to: Some(TREASURY.into()),
        amount: Some("5".into()),
        chain_id: Some("195".into()),
        problems: vec![],
        raw: item(TxId::new(id), HOT, TREASURY, "5", "195"),
    };
    let approve = action == Action::Approve;
    NewDecision {
        tx,
        action,
        rule: if approve { "treasury" } else { "(default)" }.into(),
        reason: "test".into(),
        policy_sha256: "ab".repeat(32),
        dry_run: false,
        amount: approve.then(|| Decimal::from(5)),
        signed_text: approve.then(|| "t".into()),
        data: approve.then(|| "d".into()),
    }
}

/// A config in `dir` for the sandbox at `url` with `policy`, its ledger at `dir/ledger.db`.
fn config(dir: &Path, url: &str, policy: &str) -> cosigner::config::Config {
    let cfg = write_config(dir, url);
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    cosigner::config::Config::load_with(&cfg, &cosigner::config::Environment::default()).unwrap()
}

/// Records at `at_ms`, in this order: a mode record, `old` holds, then an approval `now`.
fn history(path: &Path, old_at_ms: i64, old: u64) {
    let (clock, hand) = Clock::manual(old_at_ms);
    let mut l = SqliteLedger::open(path).unwrap().with_clock(clock);
    l.record_event(EventKind::Mode, "{\"mode\":\"normal\",\"by\":\"test\"}")
        .unwrap();
    let holds: Vec<NewDecision> = (1..=old).map(|i| decision(i, Action::Hold)).collect();
    l.record_decisions(&holds).unwrap();
    hand.set_ms(Clock::system().now_ms());
    l.record_decisions(&[decision(old + 1, Action::Approve)])
        .unwrap();
}

fn edit(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

async fn build(cfg: &cosigner::config::Config) -> Result<cosigner::daemon::Parts, DaemonError> {
    cosigner::daemon::build(cfg, Options::default(), CancellationToken::new()).await
}

/// Why the daemon refuses to start on `cfg`.
async fn refused(cfg: &cosigner::config::Config) -> DaemonError {
    match build(cfg).await {
        Ok(_) => panic!("the daemon started"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_record_the_windows_read_edited_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![])).await;
    let cfg = config(dir.path(), &sb.url, WINDOWED);
    let path = dir.path().join("ledger.db");
    history(&path, Clock::system().now_ms() - 30 * 86_400_000, 50);
    // The first start verified the whole chain.
    drop(build(&cfg).await.unwrap());
    edit(
        &path,
        "UPDATE decisions SET amount_value = '1' WHERE seq = 52",
    );
    let err = refused(&cfg).await;
    assert!(matches!(err, DaemonError::BrokenLedger { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("record 52 (decision): content does not match its hash"),
        "{err}"
    );
}

#[tokio::test]
async fn the_latest_mode_record_edited_refuses_the_start_however_old_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![])).await;
    let cfg = config(dir.path(), &sb.url, WINDOWED);
    let path = dir.path().join("ledger.db");
    history(&path, Clock::system().now_ms() - 30 * 86_400_000, 50);
    drop(build(&cfg).await.unwrap());
    edit(
        &path,
        "UPDATE events SET detail = '{\"mode\":\"normal\",\"by\":\"someone else\"}' WHERE seq = 1",
    );
    let err = refused(&cfg).await;
    assert!(err.to_string().contains("record 1 (event)"), "{err}");
}

#[tokio::test]
async fn records_cut_from_the_end_or_edited_since_the_last_verified_point_refuse_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![])).await;
    let cfg = config(dir.path(), &sb.url, "default = \"hold\"\n");
    let path = dir.path().join("ledger.db");
    history(&path, Clock::system().now_ms() - 30 * 86_400_000, 50);
    drop(build(&cfg).await.unwrap());
    // Records added after the last verified point (by `cosigner pause` with no daemon, say),
    // one of them then edited.
    let added = SqliteLedger::open(&path)
        .unwrap()
        .record_decisions(&[decision(60, Action::Hold), decision(61, Action::Hold)])
        .unwrap();
    edit(
        &path,
        &format!(
            "UPDATE decisions SET reason = 'edited' WHERE seq = {}",
            added[0]
        ),
    );
    let err = refused(&cfg).await;
    assert!(
        err.to_string()
            .contains(&format!("record {} (decision)", added[0])),
        "{err}"
    );
    edit(
        &path,
        &format!("DELETE FROM decisions WHERE seq >= {}", added[0]),
    );
    let err = refused(&cfg).await;
    assert!(
        err.to_string()
            .contains("records were removed from the end"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_record_edited_is_found_behind_the_running_daemon_which_then_holds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![])).await;
    let cfg = config(dir.path(), &sb.url, WINDOWED);
    let path = dir.path().join("ledger.db");
    history(&path, Clock::system().now_ms() - 30 * 86_400_000, 50);
    drop(build(&cfg).await.unwrap());
    // Outside every window, before the last verified point, not the mode record: the start
    // does not read it.
    edit(
        &path,
        "UPDATE decisions SET reason = 'edited' WHERE seq = 10",
    );
    let d = run_daemon(&cfg.path, timings(100, 60_000)).await;
    wait_until(
        "the walk behind the daemon to find the edit",
        Duration::from_secs(30),
        || async { metric(&d.base, "cosigner_ledger_chain_broken").await == Some(1.0) },
    )
    .await;
    wait_until("hold-all", Duration::from_secs(10), || async {
        metric(&d.base, "cosigner_mode{mode=\"hold\"}").await == Some(1.0)
    })
    .await;
    d.shutdown().await;
    let out = run_bin(&["ledger", "verify", "--config", cfg.path.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        all_output(&out).contains("record 10 (decision)"),
        "{}",
        all_output(&out)
    );
    // The hold was recorded: a restart keeps it.
    let l = SqliteLedger::open_read_only(&path).unwrap();
    assert!(
        l.latest_event(EventKind::Mode)
            .unwrap()
            .unwrap()
            .contains("hold")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_from_before_the_verified_point_is_walked_whole_behind_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![])).await;
    let cfg = config(dir.path(), &sb.url, "default = \"hold\"\n");
    let path = dir.path().join("ledger.db");
    std::fs::copy(fixture("ledger-v1.db"), &path).unwrap();
    let d = run_daemon(&cfg.path, timings(100, 60_000)).await;
    wait_until(
        "the whole chain walked",
        Duration::from_secs(30),
        || async { metric(&d.base, "cosigner_ledger_verified_ratio").await == Some(1.0) },
    )
    .await;
    assert_eq!(
        metric(&d.base, "cosigner_ledger_chain_broken").await,
        Some(0.0)
    );
    d.shutdown().await;
    let verified: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT verified_seq FROM ledger_summary", [], |r| r.get(0))
        .unwrap();
    assert!(verified >= 10, "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_an_old_edit_is_found_behind_the_daemon_and_a_mode_record_edit_refuses_the_start()
 {
    let Some(store) = crate::store::Store::postgres() else {
        return;
    };
    let crate::store::Store::Postgres(pg) = &store else {
        unreachable!("a PostgreSQL store")
    };
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(vec![])).await;
    let path = write_config(dir.path(), &sb.url);
    store.configure(&path);
    let cfg = cosigner::config::Config::load_with(&path, &cosigner::config::Environment::default())
        .unwrap();
    {
        let l = pg.ledger().await;
        l.record_event(EventKind::Mode, "{\"mode\":\"normal\",\"by\":\"test\"}")
            .await
            .unwrap();
        let holds: Vec<NewDecision> = (1..=20).map(|i| decision(i, Action::Hold)).collect();
        l.record_decisions(&holds).await.unwrap();
    }
    drop(build(&cfg).await.unwrap());
    let admin = pg.admin("postgres").await;
    admin
        .execute("UPDATE decisions SET reason = 'edited' WHERE seq = 5", &[])
        .await
        .unwrap();
    let d = run_daemon(&path, timings(100, 60_000)).await;
    wait_until(
        "the walk behind the daemon to find the edit",
        Duration::from_secs(30),
        || async { metric(&d.base, "cosigner_ledger_chain_broken").await == Some(1.0) },
    )
    .await;
    // In force (the metric) and recorded: a pause is put in force before it is recorded.
    let mode_records = || async {
        admin
            .query_one("SELECT count(*) FROM events WHERE kind = 'mode'", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    wait_until("hold-all once leading", Duration::from_secs(20), || async {
        metric(&d.base, "cosigner_mode{mode=\"hold\"}").await == Some(1.0)
            && mode_records().await > 1
    })
    .await;
    d.shutdown().await;
    // The hold-all the daemon recorded, turned into something else: refused at start.
    let held: i64 = admin
        .query_one("SELECT max(seq) FROM events WHERE kind = 'mode'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(held > 21, "the hold was recorded");
    admin
        .execute(
            "UPDATE events SET detail = '{\"mode\":\"normal\",\"by\":\"x\"}' WHERE seq = $1",
            &[&held],
        )
        .await
        .unwrap();
    let err = refused(&cfg).await;
    assert!(
        err.to_string().contains(&format!("record {held} (event)")),
        "{err}"
    );
}
