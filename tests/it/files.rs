//! Files the daemon creates: never overwritten, private to the service's user, and a ledger
//! whose chain does not verify is refused at start (the demo's files: `sandbox/tests/demo.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cosigner::ledger::{EventKind, SqliteLedger};

use crate::support::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_ledger_its_wal_and_its_lock_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut ledger = SqliteLedger::open(&path).unwrap();
    ledger.record_event(EventKind::Order, "x").unwrap();
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let p = dir.path().join(format!("ledger.db{suffix}"));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// A ledger with three decisions made by `run --once`; returns (dir, config).
async fn ledger_with_records() -> (tempfile::TempDir, String, SandboxProcess) {
    let sandbox = spawn_sandbox(&[]);
    let items: Vec<serde_json::Value> = (1..=3)
        .map(|i| serde_json::from_str(&item(TxId::new(i), HOT, TREASURY, "1", "195")).unwrap())
        .collect();
    reqwest::Client::new()
        .post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&items)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    let c = cfg.to_str().unwrap().to_string();
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    (dir, c, sandbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_without_its_head_row_fails_verify_and_the_daemon_refuses_it() {
    let (dir, c, _sandbox) = ledger_with_records().await;
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    // With the head gone, cutting records from the end would go unnoticed.
    conn.execute("DELETE FROM meta WHERE key = 'head'", [])
        .unwrap();
    let out = run_bin(&["ledger", "verify", "--config", &c]).await;
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("head is missing"), "{text}");
    for args in [
        vec!["run", "--once", "--config", &c],
        vec!["run", "--config", &c],
    ] {
        let out = run_bin(&args).await;
        let text = all_output(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.contains("head is missing")
                && text.contains(&format!("cosigner ledger verify --config {c}")),
            "{args:?}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_to_start_on_an_edited_ledger_and_names_the_command_that_shows_where() {
    let (dir, c, _sandbox) = ledger_with_records().await;
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    conn.execute("UPDATE decisions SET amount = '999' WHERE tx_id = 2", [])
        .unwrap();
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("edited") && text.contains("ledger verify"),
        "{text}"
    );
    conn.execute("UPDATE decisions SET amount = '1' WHERE tx_id = 2", [])
        .unwrap();
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
}
