//! Compatibility of the ledger format: a file written by the version before the typed records
//! (`tests/fixtures/ledger-v1.db`) must still verify, read back and take new records.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};
use rust_decimal::Decimal;
use serde_json::json;

use crate::clock::Clock;
use crate::domain::{Action, TxId, Withdrawal};
use crate::ledger::EventKind;
use crate::policy::Policy;

use super::*;
use record::{CollectRecord, DecisionRecord, EventRecord, GENESIS, Head, OutcomeRecord, Record};
use sql::{Millis, Seq};

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
    let ledger = SqliteLedger::open_read_only(&path).unwrap();
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
    let ledger = SqliteLedger::open_read_only(&path).unwrap();
    let approve = ledger.get(2).unwrap().unwrap();
    assert_eq!(approve.tx_id, TxId::new(7));
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

    let hold = ledger.history(TxId::new(9_007_199_254_740_993)).unwrap();
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

    let dry = ledger.history(TxId::new(i64::MAX.unsigned_abs())).unwrap();
    assert_eq!((dry.len(), dry[0].seq, dry[0].dry_run), (1, 4, true));

    let listed: Vec<u64> = ledger.list(10).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(listed, vec![4, 3, 2]);
    assert_eq!(ledger.newest_record_ms().unwrap(), Some(1_795_446_105_022));
    assert_eq!(
        ledger.latest_event(EventKind::Mode).unwrap().as_deref(),
        Some("{\"mode\":\"normal\"}")
    );
    assert_eq!(ledger.list_events(EventKind::Resend).unwrap().len(), 1);
    assert_eq!(ledger.counts().unwrap().get("approve"), Some(&1));
    assert_eq!(ledger.dry_run_counts().unwrap().get("reject"), Some(&1));
}

#[test]
fn a_ledger_written_before_the_typed_records_takes_new_records_and_still_verifies() {
    let (_dir, path) = v1_copy();
    let mut ledger = SqliteLedger::open(&path).unwrap();
    ledger
        .record_event(EventKind::Mode, "{\"mode\":\"paused\"}")
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

/// The hash of every kind of record, computed by the typed records from the fixture's values,
/// equals the hash the earlier code stored; and the hash input is the very text it hashed.
#[test]
fn each_kind_of_record_hashes_byte_for_byte_as_before() {
    const AT: i64 = 1_795_446_105_020;
    let mut event = record::EventRecord {
        kind: "mode".into(),
        detail: "{\"mode\":\"normal\"}".into(),
        recorded_at_ms: Millis(AT - 1),
    };
    let fields = event.hash_fields().unwrap();
    assert_eq!(
        json!([Seq(1), "event", fields]).to_string(),
        r#"[1,"event",["mode","{\"mode\":\"normal\"}",1795446105019]]"#
    );
    let event_hash = "dce6fbb87f8df49ed99001551c9a738d45967833f83ce4277906ecec2253c308";
    assert_eq!(
        record::chain_hash(GENESIS, Seq(1), "event", &fields),
        event_hash
    );

    let mut decision = record::DecisionRecord {
        tx_id: TxId::new(7),
        fingerprint: "293921cd467e23b79451ba331c6f2a8ae1454e71ba4e32bf3e138eca7dade495".into(),
        tx_json:
            r#"{"id":7,"fromAddress":"0xA","toAddress":"0xB","amount":"5.50","chainId":"195"}"#
                .into(),
        from_addr: Some("0xA".into()),
        to_addr: Some("0xB".into()),
        amount: Some("5.50".into()),
        chain_id: Some("195".into()),
        amount_value: Some("5.5".into()),
        action: Action::Approve,
        rule: "treasury".into(),
        reason: "to the treasury".into(),
        policy_sha256: "ab".repeat(32),
        dry_run: false,
        signed_text: Some("7|0xA|0xB|5.50|195|1".into()),
        data: Some("c2lnbmF0dXJl".into()),
        recorded_at_ms: Millis(AT),
    };
    let fields = decision.hash_fields().unwrap();
    assert_eq!(
        json!([Seq(2), "decision", fields]).to_string(),
        format!(
            r#"[2,"decision",[7,"293921cd467e23b79451ba331c6f2a8ae1454e71ba4e32bf3e138eca7dade495","{{\"id\":7,\"fromAddress\":\"0xA\",\"toAddress\":\"0xB\",\"amount\":\"5.50\",\"chainId\":\"195\"}}","0xA","0xB","5.50","195","5.5","approve","treasury","to the treasury","{}",false,"7|0xA|0xB|5.50|195|1","c2lnbmF0dXJl",1795446105020]]"#,
            "ab".repeat(32)
        )
    );
    assert_eq!(
        record::chain_hash(event_hash, Seq(2), "decision", &fields),
        "401c48f6d1d475c163676eee3ec922399326af2a64d0f14713177318e7343ca2"
    );

    let mut outcome = record::OutcomeRecord {
        decision_seq: Seq(2),
        status: sql::Sent::Failed,
        message: Some("approve: timed out".into()),
        recorded_at_ms: Millis(AT),
    };
    let fields = outcome.hash_fields().unwrap();
    assert_eq!(
        fields.to_string(),
        r#"[2,"failed","approve: timed out",1795446105020]"#
    );
    assert_eq!(
        record::chain_hash(
            "7c35303d490e2f6e18e3032e1274878b27f1ad7094747ce6a8e5cac5781ad106",
            Seq(5),
            "outcome",
            &fields
        ),
        "2316ce329ba1bff641267541f46bba408aa7c397a3bf3dfb1781621181333b8b"
    );

    let mut collect = record::CollectRecord {
        is_main: true,
        ok: true,
        message: None,
        recorded_at_ms: Millis(AT + 1),
    };
    let fields = collect.hash_fields().unwrap();
    assert_eq!(fields.to_string(), "[true,true,null,1795446105021]");
    assert_eq!(
        record::chain_hash(
            "645fe1c3d6ad1f5b48775cd7ba73af96c2d1390a65d9a9e32fb86cda1a2fe017",
            Seq(7),
            "collect",
            &fields
        ),
        "fcde05ccd607fee2bfbfd4f68e2955f4b95cab48fba280e5fdf6af45a6c9c4ad"
    );
}

/// What the fixture's rows read back as through the typed records, field by field.
#[test]
fn the_typed_records_read_the_earlier_files_rows_back() {
    let (_dir, path) = v1_copy();
    let ledger = SqliteLedger::open_read_only(&path).unwrap();
    // Merged in sequence order across the four tables, each record following the one before.
    let mut checker = verify::Checker::from_genesis();
    verify::walk(&ledger.conn, 1, 10, &mut checker).unwrap();
    assert!(checker.clean());
    assert_eq!(
        checker.last(),
        Some((
            10,
            "6c63356d4abdfc5dc7a044f3201eb979c64edbfe85ab52579c831433d0660ee6"
        ))
    );
    let report = checker.finish();
    assert_eq!(report.records, 10);
    assert_eq!(
        report.by_kind.into_iter().collect::<Vec<_>>(),
        vec![
            ("collect", 2),
            ("decision", 3),
            ("event", 3),
            ("outcome", 2)
        ]
    );
    let mut hold: DecisionRecord = ledger
        .conn
        .query_row(
            &format!("{} WHERE seq = 3", record::select_all::<DecisionRecord>()),
            [],
            |r| DecisionRecord::from_row(r, 3),
        )
        .unwrap();
    let fields = hold.hash_fields().unwrap();
    assert_eq!(fields[0], json!(9_007_199_254_740_993_u64));
    assert_eq!(fields[3], serde_json::Value::Null);
    assert_eq!(ledger.head, {
        Head {
            seq: Seq(10),
            hash: "6c63356d4abdfc5dc7a044f3201eb979c64edbfe85ab52579c831433d0660ee6".into(),
        }
    });
}

pub(super) fn tx(id: TxId) -> Withdrawal {
    Withdrawal {
        id,
        from: Some("0xA".into()),
        to: Some("0xB".into()),
        amount: Some("1".into()),
        chain_id: Some("1".into()),
        problems: vec![],
        raw: format!("{{\"id\":{id}}}"),
    }
}

pub(super) fn hold(id: TxId) -> NewDecision {
    NewDecision {
        tx: tx(id),
        action: Action::Hold,
        rule: "default".into(),
        reason: "held".into(),
        policy_sha256: "0".repeat(64),
        dry_run: false,
        amount: None,
        signed_text: None,
        data: None,
    }
}

#[test]
fn a_transaction_id_above_i64_max_is_recorded_found_and_verified_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
    let seqs = ledger
        .record_decisions(&[
            hold(TxId::new(u64::MAX)),
            hold(TxId::new(1 << 63)),
            hold(TxId::new(5)),
        ])
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    let found = ledger.history(TxId::new(u64::MAX)).unwrap();
    assert_eq!(
        (found.len(), found[0].tx_id, found[0].seq),
        (1, TxId::new(u64::MAX), 1)
    );
    assert_eq!(ledger.history(TxId::new(1 << 63)).unwrap()[0].seq, 2);
    let page = ledger
        .page(&PageQuery {
            tx_id: Some(TxId::new(u64::MAX)),
            limit: 10,
            ..PageQuery::default()
        })
        .unwrap();
    assert_eq!(page.0.len(), 1);
    assert!(ledger.verify().unwrap().problems.is_empty());
}

#[test]
fn a_sequence_number_no_ledger_can_hold_finds_nothing_instead_of_a_wrapped_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
    ledger
        .record_decisions(&[hold(TxId::new(1)), hold(TxId::new(2))])
        .unwrap();
    // u64::MAX wrapped to -1 and 2^64 - 1 wrapped would have matched nothing or the wrong row.
    assert!(ledger.get(u64::MAX).unwrap().is_none());
    assert!(ledger.get((1 << 63) + 1).unwrap().is_none());
    let after = |s| {
        ledger
            .page(&PageQuery {
                starting_after: Some(s),
                limit: 10,
                ..PageQuery::default()
            })
            .unwrap()
            .0
            .len()
    };
    // Everything lies before a cursor beyond every sequence number.
    assert_eq!(after(u64::MAX), 2);
    assert_eq!(after(2), 1);
    let before = ledger
        .page(&PageQuery {
            ending_before: Some(u64::MAX),
            limit: 10,
            ..PageQuery::default()
        })
        .unwrap();
    assert!(before.0.is_empty());
}

#[test]
fn an_outcome_for_a_sequence_number_sqlite_cannot_hold_is_refused_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
    ledger.record_decisions(&[hold(TxId::new(1))]).unwrap();
    let err = ledger
        .record_outcomes(&[
            Outcome {
                decision_seq: 1,
                ok: true,
                message: None,
            },
            Outcome {
                decision_seq: u64::MAX,
                ok: true,
                message: None,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, LedgerError::Write(_)), "{err}");
    assert!(err.to_string().contains("out of range"), "{err}");
    // Neither outcome was recorded, and the chain goes on from where it was.
    assert_eq!(ledger.get(1).unwrap().unwrap().status, Status::NotSent);
    assert_eq!(ledger.record_event(EventKind::Order, "x").unwrap(), 2);
    let report = ledger.verify().unwrap();
    assert_eq!((report.records, report.problems.len()), (2, 0));
}

#[test]
fn an_edited_unreadable_column_is_reported_by_verify_as_an_edit() {
    let (_dir, path) = v1_copy();
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE decisions SET action = 'approvee' WHERE seq = 3", [])
        .unwrap();
    conn.execute("UPDATE outcomes SET decision_seq = -2 WHERE seq = 5", [])
        .unwrap();
    drop(conn);
    let ledger = SqliteLedger::open_read_only(&path).unwrap();
    let report = ledger.verify().unwrap();
    assert_eq!(report.records, 10);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("record 3 (decision): content cannot be read")
            && report.problems[0].contains("\"approvee\" is not an action")
            && report.problems[0].ends_with("(edited)"),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[1].starts_with("record 5 (outcome): content cannot be read")
            && report.problems[1].contains("sequence number -2 is out of range"),
        "{:?}",
        report.problems
    );
}

/// Every table's columns (name, type, NOT NULL, primary key) and every index, as SQLite reports
/// them.
fn shape(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let objects: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (kind, name, table) in objects {
        out.push(format!("{kind} {name} on {table}"));
        let pragma = if kind == "table" {
            format!("SELECT cid, name, type, \"notnull\", pk FROM pragma_table_info('{name}')")
        } else {
            format!("SELECT seqno, name, '', 0, 0 FROM pragma_index_info('{name}')")
        };
        let mut stmt = conn.prepare(&pragma).unwrap();
        let cols = stmt
            .query_map([], |r| {
                Ok(format!(
                    "  {} {} {} notnull={} pk={}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?
                ))
            })
            .unwrap();
        for c in cols {
            out.push(c.unwrap());
        }
    }
    out
}

#[test]
fn schema_step_1_alone_makes_exactly_the_tables_columns_and_indexes_of_a_version_1_ledger() {
    let (_old_dir, old) = v1_copy();
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("ledger.db");
    Connection::open(&new)
        .unwrap()
        .execute_batch(schema::SQLITE[0])
        .unwrap();
    let (old, new) = (shape(&old), shape(&new));
    assert!(old.len() > 50, "{old:#?}");
    assert_eq!(new, old);
}

#[test]
fn a_version_1_ledger_migrated_forward_has_the_shape_of_a_new_one_and_keeps_every_record() {
    let (_old_dir, old) = v1_copy();
    let before = SqliteLedger::open_read_only(&old)
        .unwrap()
        .verify()
        .unwrap();
    drop(SqliteLedger::open(&old).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("ledger.db");
    drop(SqliteLedger::open(&new).unwrap());
    assert_eq!(shape(&old), shape(&new));
    let migrated = SqliteLedger::open_read_only(&old).unwrap();
    assert_eq!(migrated.steps, schema::SQLITE.len());
    assert_eq!(
        migrated.meta("schema_version").unwrap().as_deref(),
        Some("2")
    );
    let after = migrated.verify().unwrap();
    assert_eq!(after.problems, Vec::<String>::new());
    assert_eq!(
        (after.records, &after.by_kind),
        (before.records, &before.by_kind)
    );
    // The summary step counted what was there.
    assert_eq!(migrated.counts().unwrap().get("approve"), Some(&1));
    assert_eq!(migrated.counts().unwrap().get("hold"), Some(&1));
    assert_eq!(migrated.dry_run_counts().unwrap().get("reject"), Some(&1));
    assert_eq!(
        migrated.newest_record_ms().unwrap(),
        Some(1_795_446_105_022)
    );
}

#[test]
fn the_record_structs_and_the_tables_the_steps_make_have_the_same_columns() {
    let dir = tempfile::tempdir().unwrap();
    let l = SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
    fn columns<R: record::Record>(l: &SqliteLedger) -> (Vec<String>, Vec<String>) {
        let mut stmt = l
            .conn
            .prepare(&format!(
                "SELECT name, type, \"notnull\" FROM pragma_table_info('{}') ORDER BY cid",
                R::TABLE
            ))
            .unwrap();
        let table: Vec<String> = stmt
            .query_map([], |r| {
                let (name, ty, notnull): (String, String, bool) = (r.get(0)?, r.get(1)?, r.get(2)?);
                Ok(format!(
                    "{name} {ty}{}",
                    if notnull { " NOT NULL" } else { "" }
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .filter(|c| {
                !["seq ", "prev_hash ", "hash "]
                    .iter()
                    .any(|x| c.starts_with(x))
            })
            .collect();
        let declared = R::declared()
            .iter()
            .map(|c| format!("{} {}", c.name, c.sqlite))
            .collect();
        (table, declared)
    }
    for (table, declared) in [
        columns::<DecisionRecord>(&l),
        columns::<OutcomeRecord>(&l),
        columns::<CollectRecord>(&l),
        columns::<EventRecord>(&l),
    ] {
        assert_eq!(table, declared);
    }
}

#[test]
fn a_ledger_with_a_schema_step_this_cosigner_does_not_know_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let mut l = SqliteLedger::open(&path).unwrap();
        l.record_event(EventKind::Mode, "{}").unwrap();
        l.conn
            .execute(
                "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        l.checkpoint().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    for err in [
        SqliteLedger::open(&path).unwrap_err(),
        SqliteLedger::open_read_only(&path).unwrap_err(),
    ] {
        assert!(
            matches!(&err, LedgerError::Schema { found, .. } if found == "3"),
            "{err}"
        );
        assert!(err.to_string().contains("understands up to 2"), "{err}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn the_counts_and_the_newest_time_kept_with_the_records_equal_those_read_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, hand) = Clock::manual(1_700_000_000_000);
    let mut l = SqliteLedger::open(&dir.path().join("ledger.db"))
        .unwrap()
        .with_clock(clock);
    l.record_decisions(&[hold(TxId::new(1)), hold(TxId::new(2))])
        .unwrap();
    hand.advance(std::time::Duration::from_secs(9));
    l.record_event(EventKind::Mode, "{}").unwrap();
    // A clock stepped back: the newest time stays the newest.
    hand.set_ms(1_700_000_000_000 - 60_000);
    l.record_collect(true, true, None).unwrap();
    let mut dry = hold(TxId::new(3));
    dry.dry_run = true;
    l.record_decisions(&[dry]).unwrap();
    let slow = |sql: &str| -> i64 { l.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(l.newest_record_ms().unwrap(), Some(slow(NEWEST_RECORD)));
    assert_eq!(l.newest_record_ms().unwrap(), Some(1_700_000_009_000));
    assert_eq!(l.counts().unwrap().get("hold"), Some(&2));
    assert_eq!(l.dry_run_counts().unwrap().get("hold"), Some(&1));
    let through: i64 = l
        .conn
        .query_row(summary::THROUGH, [], |r| r.get(0))
        .unwrap();
    assert_eq!(through, 5, "folded in the transaction that wrote them");
}

#[test]
fn a_ledger_file_created_but_never_written_reads_as_an_empty_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    // What a daemon killed between creating the file and its first commit leaves.
    std::fs::write(&path, b"").unwrap();
    let l = SqliteLedger::open_read_only(&path).unwrap();
    let report = l.verify().unwrap();
    assert_eq!(report.records, 0);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(l.list(10).unwrap().is_empty());
    // The reader created nothing: the file is still empty, and a writer sets it up as new.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    let mut w = SqliteLedger::open(&path).unwrap();
    w.record_event(EventKind::Order, "first").unwrap();
    assert!(w.verify().unwrap().problems.is_empty());
}

#[test]
fn a_record_edited_mid_chain_with_its_hash_recomputed_breaks_the_link_to_the_next() {
    // The hash is unkeyed SHA-256: whoever can write the file can recompute an edited record's
    // hash. Its content then matches its hash; only the next record's stored link shows it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut ledger = SqliteLedger::open(&path).unwrap();
    ledger
        .record_decisions(&[hold(TxId::new(1)), hold(TxId::new(2)), hold(TxId::new(3))])
        .unwrap();
    drop(ledger);
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE decisions SET reason = 'approved by the operator' WHERE seq = 2",
        [],
    )
    .unwrap();
    let (prev, stored_hash, mut edited): (String, String, DecisionRecord) = conn
        .query_row(
            &format!("{} WHERE seq = 2", record::select_all::<DecisionRecord>()),
            [],
            |r| Ok((r.get(1)?, r.get(2)?, DecisionRecord::from_row(r, 3)?)),
        )
        .unwrap();
    let rehashed = record::record_hash(&prev, Seq(2), &mut edited, &mut Vec::new()).unwrap();
    assert_ne!(rehashed, stored_hash, "the edit changed the hash input");
    conn.execute(
        "UPDATE decisions SET hash = ?1 WHERE seq = 2",
        params![rehashed],
    )
    .unwrap();
    drop(conn);

    let report = SqliteLedger::open_read_only(&path)
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(
        report.problems,
        vec!["record 3: does not follow the record before it".to_string()],
        "record 2's content matches its recomputed hash; record 3 still links to the old one"
    );
}

/// The SQLite virtual-machine steps `f` takes on `l` (a progress handler called at every step):
/// the work a read does, whatever the machine's load.
fn vm_steps<T>(l: &SqliteLedger, f: impl FnOnce(&SqliteLedger) -> T) -> u64 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let n = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&n);
    l.conn.progress_handler(
        1,
        Some(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            false
        }),
    );
    let _ = f(l);
    l.conn.progress_handler(1, None::<fn() -> bool>);
    n.load(Ordering::Relaxed)
}

/// An approval of `id` to the treasury, 5 units, by rule "daily".
fn approval(id: TxId) -> NewDecision {
    NewDecision {
        action: Action::Approve,
        rule: "daily".into(),
        reason: "matched".into(),
        amount: Some(Decimal::from(5)),
        signed_text: Some(format!("{id}|approve")),
        data: Some(format!("sig:{id}")),
        ..hold(id)
    }
}

/// What every cycle and every request reads, in VM steps, on a ledger holding `old`
/// withdrawals from two days ago (each approved, re-sent and waiting once, plus a hold) and
/// the same ten recent ones: (what, steps).
fn read_costs(old: u64) -> Vec<(&'static str, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let start = 1_700_000_000_000;
    let (clock, hand) = Clock::manual(start);
    let mut l = SqliteLedger::open(&dir.path().join("ledger.db"))
        .unwrap()
        .with_clock(clock);
    let write = |l: &mut SqliteLedger, ids: std::ops::Range<u64>| {
        for page in ids.collect::<Vec<_>>().chunks(100) {
            let mut decisions: Vec<NewDecision> =
                page.iter().map(|&n| approval(TxId::new(n))).collect();
            decisions.push(hold(TxId::new(page[0] + 1_000_000)));
            let seqs = l.record_decisions(&decisions).unwrap();
            let resends: Vec<ResendRecord> = page
                .iter()
                .zip(&seqs)
                .map(|(&n, &seq)| ResendRecord {
                    seq,
                    tx_id: TxId::new(n),
                    rule: "daily".into(),
                    amount: Decimal::from(5),
                })
                .collect();
            l.record_resends(&resends).unwrap();
            for &n in page {
                l.record_event(
                    EventKind::Waiting,
                    &format!("{{\"tx_id\":{n},\"why\":\"#\"}}"),
                )
                .unwrap();
            }
            hand.advance(std::time::Duration::from_secs(1));
        }
    };
    write(&mut l, 1..old + 1);
    l.record_event(EventKind::Mode, "{\"mode\":\"normal\"}")
        .unwrap();
    hand.set_ms(start + 2 * 86_400_000);
    write(&mut l, 10_000_000..10_000_010);
    let policy = crate::policy::parse(
        "default = \"hold\"\n[[rule]]\nname = \"daily\"\naction = \"approve\"\nwindow = \"24h\"\nmax_count = 100000\n",
        Path::new("policy.toml"),
        &|p: &Path| std::fs::read_to_string(p),
    )
    .unwrap();
    let now = start + 2 * 86_400_000 + 60_000;
    let recent = tx(TxId::new(10_000_005));
    let old_one = tx(TxId::new(1));
    vec![
        (
            "the newest record time",
            vm_steps(&l, |l| l.newest_record_ms().unwrap()),
        ),
        ("the decision counts", vm_steps(&l, |l| l.counts().unwrap())),
        (
            "the dry-run counts",
            vm_steps(&l, |l| l.dry_run_counts().unwrap()),
        ),
        (
            "a waiting event looked up",
            vm_steps(&l, |l| {
                l.has_event(EventKind::Waiting, "{\"tx_id\":1,\"why\":\"#\"}")
                    .unwrap()
            }),
        ),
        (
            "a waiting event not recorded",
            vm_steps(&l, |l| {
                l.has_event(EventKind::Waiting, "{\"tx_id\":0,\"why\":\"#\"}")
                    .unwrap()
            }),
        ),
        (
            "the latest mode record",
            vm_steps(&l, |l| l.latest_event(EventKind::Mode).unwrap()),
        ),
        (
            "the windows' usage (approvals and re-sends)",
            vm_steps(&l, |l| {
                l.usage_with_slack(&policy, now, std::time::Duration::from_secs(65))
                    .unwrap()
            }),
        ),
        (
            "the state of listed transactions",
            vm_steps(&l, |l| {
                l.states(&[recent.clone(), old_one.clone()]).unwrap()
            }),
        ),
    ]
}

/// Issue 21's causes: no read a cycle or a request makes grows with the history (the newest
/// record time, the decision counts, the event look-ups, the windows' approvals and re-sends,
/// the listed transactions' state). A read that scanned a table would take a hundred times the
/// steps on a hundred times the history.
#[test]
fn no_read_of_a_cycle_or_a_request_costs_more_on_a_hundred_times_the_history() {
    let small = read_costs(100);
    let large = read_costs(10_000);
    for ((what, s), (_, l)) in small.iter().zip(&large) {
        assert!(
            *l <= 2 * s + 200,
            "{what}: {l} steps on 10,000 old withdrawals against {s} on 100"
        );
    }
}

#[test]
fn a_copy_for_another_back_end_reads_every_record_of_each_kind_in_chain_order() {
    // What `ledger migrate` hands PostgreSQL: the four kinds, each whole, merged back by sequence
    // number they form the chain the walk verified (every link, to the same last hash).
    let (_dir, path) = v1_copy();
    let ledger = SqliteLedger::open_read_only(&path).unwrap();
    let mut links: Vec<(u64, String, String)> = Vec::new();
    let decisions = record::chained::<DecisionRecord>(&ledger.conn).unwrap();
    assert_eq!(decisions.len(), 3);
    assert_eq!(decisions[0].record.rule, "treasury");
    links.extend(
        decisions
            .into_iter()
            .map(|c| (c.seq.0, c.prev_hash, c.hash)),
    );
    let outcomes = record::chained::<record::OutcomeRecord>(&ledger.conn).unwrap();
    let collects = record::chained::<record::CollectRecord>(&ledger.conn).unwrap();
    let events = record::chained::<record::EventRecord>(&ledger.conn).unwrap();
    assert_eq!((outcomes.len(), collects.len(), events.len()), (2, 2, 3));
    links.extend(outcomes.into_iter().map(|c| (c.seq.0, c.prev_hash, c.hash)));
    links.extend(collects.into_iter().map(|c| (c.seq.0, c.prev_hash, c.hash)));
    links.extend(events.into_iter().map(|c| (c.seq.0, c.prev_hash, c.hash)));
    links.sort();
    let mut prev = GENESIS.to_string();
    for (i, (seq, prev_hash, hash)) in links.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(prev_hash, &prev, "record {seq} links to the one before");
        prev.clone_from(hash);
    }
    assert_eq!(
        prev,
        "6c63356d4abdfc5dc7a044f3201eb979c64edbfe85ab52579c831433d0660ee6"
    );
}

#[test]
fn a_walk_beside_the_daemon_that_finds_a_problem_moves_no_verified_point() {
    // The background walk's clean end becomes the point the next start verifies from; a walk
    // that found an edit must not vouch for the records it walked.
    let (_dir, path) = v1_copy();
    let (report, reached) = verify::walk_beside(&path, false, false, &|_, _| {}).unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(
        reached.map(|(seq, _)| seq),
        Some(10),
        "a clean walk reaches the head"
    );
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE decisions SET rule = 'edited' WHERE seq = 2", [])
        .unwrap();
    drop(conn);
    let (report, reached) = verify::walk_beside(&path, false, false, &|_, _| {}).unwrap();
    assert!(!report.problems.is_empty());
    assert_eq!(reached, None, "{:?}", report.problems);
}

#[test]
fn a_chain_is_checked_against_its_stored_head_a_missing_or_other_head_being_a_problem() {
    let (_dir, path) = v1_copy();
    let ledger = SqliteLedger::open_read_only(&path).unwrap();
    let last = "6c63356d4abdfc5dc7a044f3201eb979c64edbfe85ab52579c831433d0660ee6";
    let walked = || {
        let mut checker = verify::Checker::from_genesis();
        verify::walk(&ledger.conn, 1, 10, &mut checker).unwrap();
        checker
    };
    let at = |head: Option<&str>| walked().finish_at_head(head).problems;
    assert_eq!(at(Some(&format!("10:{last}"))), Vec::<String>::new());
    assert_eq!(
        at(Some("12:0123")),
        vec![
            "the ledger ends at record 10 but its head says 12: records were removed from the end"
                .to_string()
        ]
    );
    assert_eq!(
        at(Some(&format!("10:{}", &last[1..]))).len(),
        1,
        "the head's hash is compared too"
    );
    assert_eq!(
        at(None),
        vec![
            "the chain head is missing while 10 records exist (removed): records cut from the end could not be detected"
                .to_string()
        ]
    );
    // A new ledger has no head and no records: nothing is wrong.
    let empty = verify::Checker::from_genesis().finish_at_head(None);
    assert_eq!(empty.problems, Vec::<String>::new());
}

/// A policy whose one rule approves up to five a day: the start check reads its window.
fn windowed_policy() -> Policy {
    crate::policy::parse(
        "default = \"hold\"\n[[rule]]\nname = \"daily\"\naction = \"approve\"\nwindow = \"24h\"\nmax_count = 5\n",
        Path::new("policy.toml"),
        &|_| unreachable!(),
    )
    .unwrap()
}

fn now_ms() -> i64 {
    crate::clock::Clock::system().now_ms()
}

/// The daemon's check at start, under a policy whose window reaches back a day.
fn check_at_start(ledger: &mut SqliteLedger) -> VerifyReport {
    ledger
        .verify_at_start(&windowed_policy(), now_ms(), Duration::from_secs(60))
        .unwrap()
}

/// The last verified point as stored: (seq, hash).
fn verified_point(l: &SqliteLedger) -> Option<(i64, String)> {
    l.conn
        .query_row(verify::VERIFIED, [], |r| {
            Ok(r.get::<_, Option<i64>>(0)?
                .zip(r.get::<_, Option<String>>(1)?))
        })
        .unwrap()
}

/// A ledger of three holds and two approvals, checked at start once.
fn checked_ledger() -> (tempfile::TempDir, PathBuf, SqliteLedger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut ledger = SqliteLedger::open(&path).unwrap();
    let ids = [1, 2, 3].map(|n| hold(TxId::new(n)));
    ledger.record_decisions(&ids).unwrap();
    ledger
        .record_decisions(&[approval(TxId::new(4)), approval(TxId::new(5))])
        .unwrap();
    let report = check_at_start(&mut ledger);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.records, 5, "a new ledger is walked whole");
    (dir, path, ledger)
}

#[test]
fn a_clean_check_at_start_makes_the_head_the_last_verified_point() {
    let (_dir, _path, ledger) = checked_ledger();
    assert_eq!(
        verified_point(&ledger),
        Some((5, ledger.head.hash.clone())),
        "the next start walks from record 6"
    );
}

#[test]
fn a_check_at_start_finds_a_record_edited_since_the_last_verified_point_and_keeps_that_point() {
    let (_dir, path, mut ledger) = checked_ledger();
    let point = verified_point(&ledger);
    let ids = [6, 7, 8].map(|n| hold(TxId::new(n)));
    ledger.record_decisions(&ids).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE decisions SET reason = 'edited' WHERE seq = 7", [])
        .unwrap();
    drop(conn);
    let report = check_at_start(&mut ledger);
    assert_eq!(
        report.problems,
        vec!["record 7 (decision): content does not match its hash (edited)".to_string()]
    );
    assert_eq!(
        verified_point(&ledger),
        point,
        "an edit vouches for nothing"
    );
}

#[test]
fn a_ledger_upgraded_from_before_the_verified_point_gets_none_from_a_partial_check_at_start() {
    // Such a start walks only the window, the mode record and the head: it cannot vouch for
    // the records before them (the background pass walks those).
    let (_dir, _path, mut ledger) = checked_ledger();
    ledger
        .conn
        .execute(
            "UPDATE ledger_summary SET verified_seq = NULL, verified_hash = NULL",
            [],
        )
        .unwrap();
    let report = check_at_start(&mut ledger);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.records, 2, "the two approvals the window reads");
    assert_eq!(verified_point(&ledger), None);
}

#[test]
fn a_walk_beside_the_daemon_from_the_verified_point_walks_only_what_came_after_it() {
    let (_dir, path, mut ledger) = checked_ledger();
    let ids = [6, 7, 8].map(|n| hold(TxId::new(n)));
    ledger.record_decisions(&ids).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let (report, reached) = verify::walk_beside(&path, true, false, &|at, of| {
        seen.lock().unwrap().push((at, of));
    })
    .unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.records, 3, "records 6 to 8");
    assert_eq!(reached, Some((8, ledger.head.hash.clone())));
    assert_eq!(seen.into_inner().unwrap(), vec![(8, 8)]);
}

#[test]
fn a_walk_beside_the_daemon_that_finds_a_view_no_cosigner_writes_moves_no_verified_point() {
    let (_dir, path, ledger) = checked_ledger();
    ledger
        .conn
        .execute_batch("CREATE VIEW approvals AS SELECT * FROM decisions WHERE 0")
        .unwrap();
    let (report, reached) = verify::walk_beside(&path, false, false, &|_, _| {}).unwrap();
    assert_eq!(
        report.problems,
        vec!["the file holds a view \"approvals\", which no cosigner writes (edited)".to_string()]
    );
    assert_eq!(reached, None);
}
