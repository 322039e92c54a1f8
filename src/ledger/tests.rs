//! Compatibility of the ledger format: a file written by the version before the typed records
//! (`tests/fixtures/ledger-v1.db`) must still verify, read back and take new records.

use super::*;

/// Made by the ledger code as of commit 2481d0b: an event, three decisions (an approval, a hold
/// with no text fields and an id above 2^53, a dry-run reject with id `i64::MAX`), two outcomes,
/// two collections, a re-send event and another event. Ten records.
const V1: &[u8] = include_bytes!("../../tests/fixtures/ledger-v1.db");

/// The fixture copied into a fresh directory (SQLite writes `-wal`/`-shm` files beside it).
fn v1_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    std::fs::write(&path, V1).unwrap();
    (dir, path)
}

#[test]
fn a_ledger_written_before_the_typed_records_verifies_unchanged() {
    let (_dir, path) = v1_copy();
    let ledger = Ledger::open_read_only(&path).unwrap();
    let report = ledger.verify().unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.records, 10);
    let kinds: Vec<(&str, u64)> = report.by_kind.into_iter().collect();
    assert_eq!(
        kinds,
        vec![
            ("collect", 2),
            ("decision", 3),
            ("event", 3),
            ("outcome", 2)
        ]
    );
}

#[test]
fn a_ledger_written_before_the_typed_records_reads_back_every_field() {
    let (_dir, path) = v1_copy();
    let ledger = Ledger::open_read_only(&path).unwrap();
    let approve = ledger.get(2).unwrap().unwrap();
    assert_eq!(approve.tx_id, 7);
    assert_eq!(
        approve.fingerprint,
        "293921cd467e23b79451ba331c6f2a8ae1454e71ba4e32bf3e138eca7dade495"
    );
    assert_eq!(approve.from.as_deref(), Some("0xA"));
    assert_eq!(approve.to.as_deref(), Some("0xB"));
    assert_eq!(approve.amount.as_deref(), Some("5.50"));
    assert_eq!(approve.chain_id.as_deref(), Some("195"));
    assert_eq!(approve.action, Action::Approve);
    assert_eq!(approve.rule, "treasury");
    assert!(!approve.dry_run);
    assert_eq!(approve.signed_text.as_deref(), Some("7|0xA|0xB|5.50|195|1"));
    assert_eq!(approve.data.as_deref(), Some("c2lnbmF0dXJl"));
    assert_eq!(approve.recorded_at_ms, 1_795_446_105_020);
    // Failed, then submitted: the latest outcome wins.
    assert_eq!(approve.status, Status::Submitted);
    assert_eq!(approve.status_message, None);

    let hold = ledger.history(9_007_199_254_740_993).unwrap();
    assert_eq!(hold.len(), 1);
    assert_eq!(hold[0].seq, 3);
    assert_eq!(hold[0].action, Action::Hold);
    assert_eq!(
        (hold[0].from.as_deref(), hold[0].amount.as_deref()),
        (None, None)
    );
    assert_eq!(
        hold[0].reason,
        "no rule matched: \"toAddress\" is not text — ünïcode ✓"
    );
    assert_eq!(hold[0].status, Status::NotSent);

    let dry = ledger.history(i64::MAX.unsigned_abs()).unwrap();
    assert_eq!((dry.len(), dry[0].seq, dry[0].dry_run), (1, 4, true));

    let listed: Vec<u64> = ledger.list(10).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(listed, vec![4, 3, 2]);
    assert_eq!(ledger.newest_record_ms().unwrap(), Some(1_795_446_105_022));
    assert_eq!(
        ledger.latest_event("mode").unwrap().as_deref(),
        Some("{\"mode\":\"normal\"}")
    );
    assert_eq!(ledger.list_events(RESEND_EVENT).unwrap().len(), 1);
    assert_eq!(ledger.counts().unwrap().get("approve"), Some(&1));
    assert_eq!(ledger.dry_run_counts().unwrap().get("reject"), Some(&1));
}

#[test]
fn a_ledger_written_before_the_typed_records_takes_new_records_and_still_verifies() {
    let (_dir, path) = v1_copy();
    let mut ledger = Ledger::open(&path).unwrap();
    ledger
        .record_event("mode", "{\"mode\":\"paused\"}")
        .unwrap();
    ledger
        .record_outcomes(&[Outcome {
            decision_seq: 2,
            ok: false,
            message: Some("approve: HTTP 500".into()),
        }])
        .unwrap();
    ledger.record_collect(true, false, Some("down")).unwrap();
    let report = ledger.verify().unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.records, 13);
    assert_eq!(ledger.get(2).unwrap().unwrap().status, Status::Failed);
}
