//! `cosigner ledger backup`: an online, consistent, verified copy of the SQLite ledger.

use std::os::unix::fs::PermissionsExt;

use cosigner::ledger::{EventKind, SqliteLedger};

use crate::support::*;

const POLICY: &str = "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\n";

#[tokio::test]
async fn a_backup_taken_while_a_writer_holds_the_ledger_is_a_private_verified_copy_of_every_record()
{
    let sandbox = spawn_sandbox(&[]);
    let items = (1..=3)
        .map(|i| item(TxId::new(i), HOT, TREASURY, &format!("{i}"), "195"))
        .collect();
    post_pending(&sandbox.url, items).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let c = cfg.to_str().unwrap();
    let out = run_bin(&["run", "--once", "--config", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));

    // A writer holds the ledger (as the daemon does) and keeps writing while the copy is made.
    let mut writer = SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
    writer
        .record_event(EventKind::Order, "before the backup")
        .unwrap();
    let copy = dir.path().join("backup.db");
    let out = run_bin(&["ledger", "backup", "--config", c, copy.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("hash chain intact"),
        "{}",
        all_output(&out)
    );
    writer
        .record_event(EventKind::Order, "after the backup")
        .unwrap();

    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy holds signed texts: owner only");
    let backed = SqliteLedger::open_read_only(&copy).unwrap();
    assert!(backed.verify().unwrap().problems.is_empty());
    let live_rows = writer.list(100).unwrap();
    let copy_rows = backed.list(100).unwrap();
    assert_eq!(copy_rows.len(), 3);
    assert_eq!(
        serde_json::to_value(&copy_rows).unwrap(),
        serde_json::to_value(&live_rows).unwrap(),
        "every decision, with its status, is in the copy"
    );
    let events = backed.list_events(EventKind::Order).unwrap();
    assert_eq!(events, vec!["before the backup".to_string()]);

    // Never overwrites: a second backup to the same file is refused, naming it.
    let out = run_bin(&["ledger", "backup", "--config", c, copy.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("backup.db already exists"),
        "{}",
        all_output(&out)
    );
}

#[tokio::test]
async fn a_backup_of_an_edited_ledger_fails_and_says_the_chain_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http://127.0.0.1:9");
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let db = dir.path().join("ledger.db");
    {
        let mut l = SqliteLedger::open(&db).unwrap();
        l.record_event(EventKind::Order, "one").unwrap();
        l.record_event(EventKind::Order, "two").unwrap();
    }
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE events SET detail = 'three' WHERE detail = 'two'",
            [],
        )
        .unwrap();
    let copy = dir.path().join("copy.db");
    let out = run_bin(&[
        "ledger",
        "backup",
        "--config",
        cfg.to_str().unwrap(),
        copy.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let text = all_output(&out);
    assert!(text.contains("FAIL") && text.contains("edited"), "{text}");
    assert!(text.contains("chain is broken"), "{text}");
}
