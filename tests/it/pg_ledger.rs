//! The PostgreSQL ledger against the SQLite one: the same operations give the same answers
//! (decisions, outcomes, re-sends, events, collections, window totals, pages, states), an edit in
//! the database is found by `verify`, and an SQLite ledger copied over verifies and reads alike.

use std::collections::BTreeMap;
use std::time::Duration;

use cosigner::domain::Action;
use cosigner::domain::{TxId, Withdrawal};
use cosigner::ledger::postgres::{PgLedger, PgTarget};
use cosigner::ledger::{
    EventKind, LedgerError, NewDecision, Outcome, PageQuery, ResendRecord, SqliteLedger, TxState,
};
use cosigner::policy::{Policy, Usage};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::pg::Pg;
use crate::support::ids;

fn tx(id: TxId, to: &str, amount: &str) -> Withdrawal {
    Withdrawal {
        id,
        from: Some("0xA".into()),
        to: Some(to.into()),
        amount: Some(amount.into()),
        chain_id: Some("195".into()),
        problems: vec![],
        raw: format!("{{\"id\":{id},\"toAddress\":\"{to}\",\"amount\":\"{amount}\"}}"),
    }
}

fn decision(tx: Withdrawal, action: Action, rule: &str, dry_run: bool) -> NewDecision {
    let amount = (action == Action::Approve)
        .then(|| tx.amount.as_deref().and_then(|a| a.parse::<Decimal>().ok()))
        .flatten();
    let signed = (action != Action::Hold).then(|| format!("{}|{}", tx.id, action.as_str()));
    NewDecision {
        tx,
        action,
        rule: rule.into(),
        reason: format!("{rule} — ünïcode ✓"),
        policy_sha256: "ab".repeat(32),
        dry_run,
        amount,
        signed_text: signed.clone(),
        data: signed.map(|s| format!("sig:{s}")),
    }
}

fn policy() -> (tempfile::TempDir, Policy) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[[rule]]\nname = \"limited\"\naction = \"approve\"\nmax_amount = \"100\"\nwindow = \"1h\"\nmax_total = \"1000\"\nmax_count = 10\n\
         [[rule]]\nname = \"open\"\naction = \"approve\"\nmax_amount = \"100\"\n\
         [guard]\nwindow = \"2h\"\nmax_approvals = 100\n",
    )
    .unwrap();
    let policy = cosigner::policy::load(&path).unwrap();
    (dir, policy)
}

/// The same ledger calls on either back end.
enum Backend {
    Sqlite(SqliteLedger),
    Pg(PgLedger),
}

impl Backend {
    async fn record_decisions(&mut self, d: &[NewDecision]) -> Result<Vec<u64>, LedgerError> {
        match self {
            Backend::Sqlite(l) => l.record_decisions(d),
            Backend::Pg(l) => l.record_decisions(d).await,
        }
    }
    async fn record_outcomes(&mut self, o: &[Outcome]) {
        match self {
            Backend::Sqlite(l) => l.record_outcomes(o).unwrap(),
            Backend::Pg(l) => l.record_outcomes(o).await.unwrap(),
        }
    }
    async fn record_resends(&mut self, r: &[ResendRecord]) {
        match self {
            Backend::Sqlite(l) => l.record_resends(r).unwrap(),
            Backend::Pg(l) => l.record_resends(r).await.unwrap(),
        }
    }
    async fn record_event(&mut self, kind: EventKind, detail: &str) -> u64 {
        match self {
            Backend::Sqlite(l) => l.record_event(kind, detail).unwrap(),
            Backend::Pg(l) => l.record_event(kind, detail).await.unwrap(),
        }
    }
    async fn record_collect(&mut self, is_main: bool, ok: bool, message: Option<&str>) {
        match self {
            Backend::Sqlite(l) => l.record_collect(is_main, ok, message).unwrap(),
            Backend::Pg(l) => l.record_collect(is_main, ok, message).await.unwrap(),
        }
    }

    /// Everything the ledger answers, as JSON; `times` false replaces each record time by
    /// whether it is set (two back ends written one after the other differ by milliseconds).
    async fn answers(&self, policy: &Policy, ids: &[TxId], now: i64, times: bool) -> Value {
        let mut out = serde_json::Map::new();
        let row = |r: &cosigner::ledger::DecisionRow| {
            let mut v = serde_json::to_value(r).unwrap();
            if !times {
                v["recorded_at_ms"] = Value::Bool(r.recorded_at_ms > 0);
            }
            v
        };
        let rows = |rs: &[cosigner::ledger::DecisionRow]| rs.iter().map(row).collect::<Vec<_>>();
        let state = |s: &TxState| {
            serde_json::json!({
                "live": s.live.as_ref().map(row),
                "last_unsent": s.last_unsent.as_ref().map(row),
                "other_contents": s.other_contents,
                "decided_other": s.decided_other.as_ref().map(row),
                "first_hold": if times { serde_json::json!(s.first_hold_ms) } else { serde_json::json!(s.first_hold_ms.is_some()) },
            })
        };
        let queries = [
            PageQuery {
                limit: 2,
                ..PageQuery::default()
            },
            PageQuery {
                limit: 2,
                starting_after: Some(4),
                ..PageQuery::default()
            },
            PageQuery {
                limit: 2,
                ending_before: Some(2),
                ..PageQuery::default()
            },
            PageQuery {
                limit: 10,
                action: Some(Action::Approve),
                ..PageQuery::default()
            },
            PageQuery {
                limit: 10,
                rule: Some("limited".into()),
                ..PageQuery::default()
            },
            PageQuery {
                limit: 10,
                tx_id: Some(TxId::new(2)),
                ..PageQuery::default()
            },
            PageQuery {
                limit: 10,
                tx_id: Some(TxId::new(u64::MAX)),
                ..PageQuery::default()
            },
            PageQuery {
                limit: 10,
                starting_after: Some(u64::MAX),
                ..PageQuery::default()
            },
        ];
        let slack = Duration::from_secs(60);
        let usage_times = [now, now + 3_600_000, now + 7_200_000, now - 1];
        // One list of questions for both back ends: `$($aw)*` is `.await` for PostgreSQL.
        macro_rules! ask {
            ($l:expr, $($aw:tt)*) => {{
                let l = $l;
                for &id in ids {
                    out.insert(format!("history {id}"), rows(&l.history(id) $($aw)* .unwrap()).into());
                }
                for seq in (0..=20).chain([u64::MAX]) {
                    out.insert(format!("get {seq}"), l.get(seq) $($aw)* .unwrap().as_ref().map(row).into());
                }
                out.insert("list 3".into(), rows(&l.list(3) $($aw)* .unwrap()).into());
                out.insert("list all".into(), rows(&l.list(100) $($aw)* .unwrap()).into());
                for (i, q) in queries.iter().enumerate() {
                    let (p, more) = l.page(q) $($aw)* .unwrap();
                    out.insert(format!("page {i}"), serde_json::json!([rows(&p), more]));
                }
                for t in [tx(TxId::new(1), "0xB", "5"), tx(TxId::new(2), "0xB", "6"), tx(TxId::new(2), "0xC", "6"), tx(TxId::new(9), "0xB", "1")] {
                    out.insert(format!("state {} {:?}", t.id, t.to), state(&l.state(&t) $($aw)* .unwrap()));
                }
                for at in usage_times {
                    let u = l.usage_with_slack(policy, at, slack) $($aw)* .unwrap();
                    out.insert(format!("usage {}", at - now), usage(&u));
                    let u = l.usage(policy, at) $($aw)* .unwrap();
                    out.insert(format!("usage no slack {}", at - now), usage(&u));
                }
                out.insert("newest".into(), newest(l.newest_record_ms() $($aw)* .unwrap(), times));
                out.insert("latest mode".into(), l.latest_event(EventKind::Mode) $($aw)* .unwrap().into());
                out.insert("latest none".into(), l.latest_event(EventKind::Order) $($aw)* .unwrap().into());
                out.insert("modes".into(), l.list_events(EventKind::Mode) $($aw)* .unwrap().into());
                out.insert("resends".into(), l.list_events(EventKind::Resend) $($aw)* .unwrap().into());
                let has = l.has_event(EventKind::Mode, "{\"mode\":\"paused\"}") $($aw)* .unwrap();
                out.insert("has paused".into(), has.into());
                let has = l.has_event(EventKind::Mode, "{\"mode\":\"other\"}") $($aw)* .unwrap();
                out.insert("has other".into(), has.into());
                out.insert("counts".into(), sorted(l.counts() $($aw)* .unwrap()));
                out.insert("dry run counts".into(), sorted(l.dry_run_counts() $($aw)* .unwrap()));
                let report = l.verify() $($aw)* .unwrap();
                out.insert("verify".into(), serde_json::to_value(report).unwrap());
            }};
        }
        match self {
            Backend::Sqlite(l) => ask!(l,),
            Backend::Pg(l) => ask!(l, .await),
        }
        Value::Object(out)
    }
}

fn newest(ms: Option<i64>, times: bool) -> Value {
    if times {
        ms.into()
    } else {
        ms.is_some().into()
    }
}

fn sorted(m: std::collections::HashMap<String, u64>) -> Value {
    serde_json::to_value(m.into_iter().collect::<BTreeMap<_, _>>()).unwrap()
}

/// Window usage with its maps in order.
fn usage(u: &Usage) -> Value {
    let rules: BTreeMap<_, _> = u
        .rules
        .iter()
        .map(|(k, w)| (k.clone(), (w.total.to_string(), w.count)))
        .collect();
    let counted: BTreeMap<_, _> = u
        .counted
        .iter()
        .map(|(k, c)| (*k, (c.amount.to_string(), c.rules.clone(), c.guard)))
        .collect();
    serde_json::json!({"rules": rules, "guard": u.guard_approvals, "counted": counted})
}

/// One sequence of every kind of write: approvals inside and outside windows, a hold, a dry
/// run, a rejection, outcomes (the latest wins), a re-send, a second content for one id, an id
/// above `i64::MAX`, collections and events.
async fn script(l: &mut Backend) -> Vec<TxId> {
    let ids = ids([1, 2, 3, 4, 5, 6, 7, u64::MAX]);
    assert_eq!(
        l.record_event(EventKind::Mode, "{\"mode\":\"normal\"}")
            .await,
        1
    );
    let seqs = l
        .record_decisions(&[
            decision(
                tx(TxId::new(1), "0xB", "5"),
                Action::Approve,
                "limited",
                false,
            ),
            decision(tx(TxId::new(2), "0xB", "6"), Action::Hold, "default", false),
            decision(
                tx(TxId::new(3), "0xB", "7"),
                Action::Approve,
                "limited",
                true,
            ),
            decision(tx(TxId::new(4), "0xB", "8"), Action::Reject, "deny", false),
            decision(
                tx(TxId::new(5), "0xB", "9.50"),
                Action::Approve,
                "open",
                false,
            ),
        ])
        .await
        .unwrap();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
    l.record_outcomes(&[
        Outcome {
            decision_seq: 2,
            ok: false,
            message: Some("approve: HTTP 500".into()),
        },
        Outcome {
            decision_seq: 5,
            ok: false,
            // A server's message may carry a NUL, which PostgreSQL's text cannot hold.
            message: Some("reject: timed out\0".into()),
        },
    ])
    .await;
    l.record_outcomes(&[Outcome {
        decision_seq: 2,
        ok: true,
        message: None,
    }])
    .await;
    l.record_outcomes(&[]).await;
    l.record_resends(&[ResendRecord {
        seq: 6,
        tx_id: TxId::new(5),
        rule: "limited".into(),
        amount: "9.5".parse().unwrap(),
    }])
    .await;
    l.record_resends(&[]).await;
    let more = l
        .record_decisions(&[
            decision(
                tx(TxId::new(2), "0xC", "6"),
                Action::Approve,
                "limited",
                false,
            ),
            decision(tx(TxId::new(6), "0xB", "1"), Action::Hold, "default", true),
            decision(
                tx(TxId::new(u64::MAX), "0xB", "2"),
                Action::Hold,
                "default",
                false,
            ),
            // A NUL, which PostgreSQL's text cannot hold: stored alike on both.
            decision(
                tx(TxId::new(7), "0xB\0", "1"),
                Action::Hold,
                "default",
                false,
            ),
        ])
        .await
        .unwrap();
    assert_eq!(more, vec![11, 12, 13, 14]);
    assert_eq!(l.record_decisions(&[]).await.unwrap(), Vec::<u64>::new());
    l.record_collect(true, true, None).await;
    l.record_collect(false, false, Some("down\0")).await;
    assert_eq!(
        l.record_event(EventKind::Mode, "{\"mode\":\"paused\"}")
            .await,
        17
    );
    ids
}

#[tokio::test]
async fn the_postgresql_ledger_answers_every_question_as_the_sqlite_ledger_does_after_the_same_writes()
 {
    let Some(pg) = Pg::start() else { return };
    let (_pdir, policy) = policy();
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = Backend::Sqlite(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
    let mut postgres = Backend::Pg(pg.ledger().await);
    let ids = script(&mut sqlite).await;
    script(&mut postgres).await;
    let now = cosigner::clock::Clock::system().now_ms();
    let a = sqlite.answers(&policy, &ids, now, false).await;
    let b = postgres.answers(&policy, &ids, now, false).await;
    for (key, value) in a.as_object().unwrap() {
        assert_eq!(Some(value), b.get(key), "{key}");
    }
    assert_eq!(a, b);
    // The answers are about something: the windows count what was written.
    assert_eq!(a["verify"]["records"], 17);
    assert_eq!(a["verify"]["problems"], serde_json::json!([]));
    assert_eq!(
        a["usage 0"]["rules"]["limited"],
        serde_json::json!(["20.5", 3])
    );
    assert_eq!(a["usage 0"]["guard"], 3);
    assert_eq!(
        a["usage 7200000"]["guard"], 3,
        "the slack reaches back a minute"
    );
    assert_eq!(a["usage no slack 7200000"]["guard"], 0);
    assert_eq!(a["state 2 Some(\"0xB\")"]["decided_other"]["seq"], 11);
    assert_eq!(a["get 2"]["status"], "submitted");
    assert_eq!(a["get 5"]["status"], "failed");
    assert_eq!(a["get 5"]["status_message"], "reject: timed out\u{fffd}");
}

#[tokio::test]
async fn an_sqlite_ledger_copied_into_postgresql_verifies_identically_and_answers_alike() {
    let Some(pg) = Pg::start() else { return };
    let (_pdir, policy) = policy();
    // The fixture (written by an earlier version) and a ledger written by this one.
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("v1.db");
    std::fs::copy(crate::support::fixture("ledger-v1.db"), &fixture).unwrap();
    let fresh = dir.path().join("fresh.db");
    let mut written = Backend::Sqlite(SqliteLedger::open(&fresh).unwrap());
    let written_ids = script(&mut written).await;
    drop(written);
    for (db, path, ids) in [
        (
            "fixture",
            &fixture,
            ids([7, 9_007_199_254_740_993, i64::MAX.unsigned_abs()]),
        ),
        ("fresh", &fresh, written_ids),
    ] {
        pg.create_db(db).await;
        let source = SqliteLedger::open_read_only(path).unwrap();
        let export = source.export().unwrap();
        let target = PgLedger::connect(&pg.url(db, "disable"), Some(pg.password()))
            .await
            .unwrap();
        let report = target.import(&export).await.unwrap();
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::to_value(source.verify().unwrap()).unwrap(),
            "{db}"
        );
        assert!(
            report.problems.is_empty() && report.records >= 10,
            "{db}: {report:?}"
        );
        // The copied tables have statistics at once: without them the planner scans the
        // whole copy for a cycle's `seq > $1` reads until autovacuum comes round.
        let unanalysed: Vec<String> = pg
            .admin(db)
            .await
            .query(
                "SELECT relname::text FROM pg_stat_user_tables WHERE relname IN \
                 ('decisions', 'outcomes', 'collects', 'events') AND last_analyze IS NULL",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            unanalysed.is_empty(),
            "{db}: not analysed after the copy: {unanalysed:?}"
        );
        // Same records, same times: every answer is the same, window edges included.
        let newest = source.newest_record_ms().unwrap().unwrap();
        let copied = Backend::Pg(target);
        let original = Backend::Sqlite(source);
        for now in [
            newest,
            newest + 3_600_000 - 1,
            newest + 3_600_000 + 60_000,
            newest + 7_200_000 + 59_999,
        ] {
            let a = original.answers(&policy, &ids, now, true).await;
            let b = copied.answers(&policy, &ids, now, true).await;
            for (key, value) in a.as_object().unwrap() {
                assert_eq!(Some(value), b.get(key), "{db} at {now}: {key}");
            }
        }
        let Backend::Pg(target) = copied else {
            unreachable!()
        };
        // The copy goes on from the source's head.
        let next = report.records + 1;
        assert_eq!(
            target
                .record_event(EventKind::Mode, "{\"mode\":\"normal\"}")
                .await
                .unwrap(),
            next
        );
        let after = target.verify().await.unwrap();
        assert_eq!(
            (after.records, after.problems.len()),
            (next, 0),
            "{after:?}"
        );
        // A second copy into a ledger that holds records is refused, and changes nothing.
        let Backend::Sqlite(source) = original else {
            unreachable!()
        };
        let err = target.import(&source.export().unwrap()).await.unwrap_err();
        assert!(matches!(err, LedgerError::Copy { .. }), "{err}");
        assert!(
            err.to_string().contains("copied only into an empty one"),
            "{err}"
        );
        assert_eq!(target.verify().await.unwrap().records, next);
    }
}

#[test]
fn an_sqlite_ledger_that_does_not_verify_is_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    std::fs::copy(crate::support::fixture("ledger-v1.db"), &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE decisions SET amount_value = '0.01' WHERE seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteLedger::open_read_only(&path)
        .unwrap()
        .export()
        .unwrap_err();
    assert!(matches!(err, LedgerError::Copy { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("record 2 (decision): content does not match its hash (edited)"),
        "{err}"
    );
}

#[tokio::test]
async fn an_edit_made_in_the_postgresql_database_is_found_by_verify() {
    let Some(pg) = Pg::start() else { return };
    let mut l = Backend::Pg(pg.ledger().await);
    script(&mut l).await;
    let Backend::Pg(l) = l else { unreachable!() };
    assert_eq!(l.verify().await.unwrap().problems, Vec::<String>::new());
    let admin = pg.admin("postgres").await;
    let problems = |report: cosigner::ledger::VerifyReport| report.problems;

    // An approval made smaller after the fact: out of the window totals, but not out of the chain.
    admin
        .execute(
            "UPDATE decisions SET amount_value = '0.01' WHERE seq = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        problems(l.verify().await.unwrap()),
        vec!["record 2 (decision): content does not match its hash (edited)"]
    );
    // A value no cosigner writes.
    admin
        .execute(
            "UPDATE decisions SET action = 'approvee' WHERE seq = 3",
            &[],
        )
        .await
        .unwrap();
    let found = problems(l.verify().await.unwrap());
    assert!(
        found[1].starts_with("record 3 (decision): content cannot be read")
            && found[1].contains("\"approvee\" is not an action"),
        "{found:?}"
    );
    // The newest record removed, with the head left as it was.
    admin
        .execute("DELETE FROM events WHERE seq = 17", &[])
        .await
        .unwrap();
    let found = problems(l.verify().await.unwrap());
    assert!(
        found.contains(
            &"the ledger ends at record 16 but its head says 17: records were removed from the end"
                .to_string()
        ),
        "{found:?}"
    );
    // A trigger that could rewrite rows as they are written, and the fence disarmed.
    admin
        .batch_execute(
            "CREATE FUNCTION shrink() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.amount_value = '0'; RETURN NEW; END $$;
             CREATE TRIGGER shrink BEFORE INSERT ON decisions FOR EACH ROW EXECUTE FUNCTION shrink();
             CREATE OR REPLACE FUNCTION cosigner_fence() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
             ALTER TABLE outcomes ENABLE ROW LEVEL SECURITY;",
        )
        .await
        .unwrap();
    let found = problems(l.verify().await.unwrap());
    for want in [
        "the database holds a trigger \"shrink\" on decisions, which no cosigner writes (edited)",
        "the fencing function cosigner_fence is missing or was replaced (edited)",
        "the database holds a rule or policy \"row level security\" on outcomes, which no cosigner writes (edited)",
    ] {
        assert!(found.iter().any(|p| p == want), "{want} not in {found:?}");
    }
}

#[tokio::test]
async fn the_password_reaches_neither_the_description_nor_the_error_of_a_refused_connection() {
    let Some(pg) = Pg::start() else { return };
    let l = pg.ledger().await;
    let secret = pg.password_text();
    for text in [
        l.describe().to_string(),
        format!("{l:?}"),
        format!("{:?}", l.target()),
    ] {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(
        l.describe(),
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port()
        )
    );
    // A password in the URL is used, and shown nowhere.
    let with_pw = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    let l2 = PgLedger::connect(&with_pw, None).await.unwrap();
    assert!(!format!("{} {l2:?}", l2.describe()).contains(secret));
    // A wrong password: refused, and the error holds neither password.
    let wrong = "wrong-pw-9f3a";
    let err = PgLedger::connect(&pg.url("postgres", "disable"), Some(wrong.into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(secret), "{err}");
}

#[test]
fn a_bad_ledger_url_is_refused_naming_the_key_and_a_good_one_is_described_without_its_password() {
    let secret = "s3cret-in-the-url-41";
    let target = PgTarget::parse(
        &format!(
            "postgresql://ops:{secret}@db1:6432,db2/ledger?sslmode=verify-full&application_name=x"
        ),
        None,
    )
    .unwrap();
    assert_eq!(
        target.describe(),
        "postgres://ops@db1:6432,db2:5432/ledger?sslmode=verify-full"
    );
    assert!(!format!("{target:?}").contains(secret));
    for (url, want) in [
        (
            "mysql://x@h/db",
            "[ledger] url: must start with postgres://",
        ),
        (
            "postgres://x@h/db?sslmode=verify",
            "[ledger] url: sslmode \"verify\" is not one of",
        ),
        ("postgres://h/db", "[ledger] url: names no user"),
        (
            "postgres://x@h/db?sslrootcert=/nonexistent/ca.pem&sslmode=verify-full",
            "[ledger] url: sslrootcert /nonexistent/ca.pem: cannot be read",
        ),
        ("postgres://x@h/db?colour=blue", "[ledger] url: "),
    ] {
        let err = PgTarget::parse(url, Some(secret.into()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{url}: {err}");
        assert!(!err.contains(secret), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_many_connections_at_once_make_one_unbroken_chain() {
    let Some(pg) = Pg::start() else { return };
    let ledgers = [
        std::sync::Arc::new(pg.ledger().await),
        std::sync::Arc::new(pg.ledger().await),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40u64 {
        let l = std::sync::Arc::clone(&ledgers[usize::from(i % 2 == 0)]);
        tasks.spawn(async move {
            if i % 4 == 0 {
                l.record_decisions(&[
                    decision(tx(TxId::new(i), "0xB", "1"), Action::Approve, "open", false),
                    decision(
                        tx(TxId::new(i + 1000), "0xB", "1"),
                        Action::Hold,
                        "default",
                        false,
                    ),
                ])
                .await
                .unwrap()
            } else {
                vec![
                    l.record_event(EventKind::Order, &i.to_string())
                        .await
                        .unwrap(),
                ]
            }
        });
    }
    let mut seqs: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    let report = ledgers[0].verify().await.unwrap();
    assert_eq!(
        (report.records, report.problems),
        (50, Vec::<String>::new())
    );
}

#[tokio::test]
async fn the_schema_is_set_up_once_and_a_newer_one_is_refused() {
    let Some(pg) = Pg::start() else { return };
    let a = pg.ledger().await;
    a.record_event(EventKind::Mode, "{}").await.unwrap();
    // A second instance connecting finds the schema in place and the records kept.
    let b = pg.ledger().await;
    assert_eq!(b.verify().await.unwrap().records, 1);
    let admin = pg.admin("postgres").await;
    let steps: i64 = admin
        .query_one("SELECT count(*) FROM cosigner_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(steps, 3);
    admin
        .execute("INSERT INTO cosigner_schema VALUES (4)", &[])
        .await
        .unwrap();
    let err = PgLedger::connect(&pg.url("postgres", "disable"), Some(pg.password()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::DatabaseSchema { found: 4, known: 3 }),
        "{err}"
    );
}

/// What step 2 adds, dropped again: the database as a cosigner before the steps left it.
const UNDO_STEP_2: &str =
    "DROP INDEX events_detail; DROP INDEX events_time; DROP INDEX decisions_rule;
  DROP INDEX decisions_action; DROP TABLE decision_counts; DROP TABLE ledger_summary;
  DELETE FROM cosigner_schema WHERE version >= 2;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_step_1_with_records_is_brought_forward_and_its_counts_and_newest_time_are_exact()
 {
    let Some(pg) = Pg::start() else { return };
    let a = pg.ledger().await;
    a.record_decisions(&[
        decision(
            tx(TxId::new(1), "0xB", "5"),
            Action::Approve,
            "limited",
            false,
        ),
        decision(
            tx(TxId::new(2), "0xB", "5"),
            Action::Hold,
            "(default)",
            false,
        ),
        decision(
            tx(TxId::new(3), "0xB", "5"),
            Action::Reject,
            "blocked",
            true,
        ),
    ])
    .await
    .unwrap();
    a.record_event(EventKind::Mode, "{}").await.unwrap();
    let (counts, dry, newest) = (
        a.counts().await.unwrap(),
        a.dry_run_counts().await.unwrap(),
        a.newest_record_ms().await.unwrap(),
    );
    drop(a);
    let admin = pg.admin("postgres").await;
    admin.batch_execute(UNDO_STEP_2).await.unwrap();
    // A cosigner of this version connects: steps 2 and 3 are applied, over the records there.
    let b = pg.ledger().await;
    let steps: i64 = admin
        .query_one("SELECT max(version) FROM cosigner_schema", &[])
        .await
        .unwrap()
        .get::<_, i32>(0)
        .into();
    assert_eq!(steps, 3);
    assert_eq!(b.counts().await.unwrap(), counts);
    assert_eq!(b.dry_run_counts().await.unwrap(), dry);
    assert_eq!(b.newest_record_ms().await.unwrap(), newest);
    assert_eq!(counts.get("approve"), Some(&1));
    assert!(b.verify().await.unwrap().problems.is_empty());
    // It writes on, and the counts follow.
    b.record_decisions(&[decision(
        tx(TxId::new(4), "0xB", "5"),
        Action::Approve,
        "limited",
        false,
    )])
    .await
    .unwrap();
    assert_eq!(b.counts().await.unwrap().get("approve"), Some(&2));
}

/// A pair upgraded one member at a time: the cosigner from before the summary may still lead
/// and append records without folding them in. Every reader counts them, and the next append
/// folds them in once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_appended_by_a_cosigner_that_keeps_no_summary_are_counted_once() {
    let Some(pg) = Pg::start() else { return };
    let l = pg.ledger().await;
    l.record_decisions(&[decision(
        tx(TxId::new(1), "0xB", "5"),
        Action::Approve,
        "limited",
        false,
    )])
    .await
    .unwrap();
    let admin = pg.admin("postgres").await;
    // As the older cosigner appends: a record and the head, nothing else.
    admin
        .batch_execute(
            "INSERT INTO decisions SELECT 2, 2, fingerprint, tx_json, from_addr, to_addr, amount,
               chain_id, amount_value, action, rule, reason, policy_sha256, dry_run, signed_text,
               data, recorded_at_ms + 60000, hash, 'not checked here', epoch FROM decisions WHERE seq = 1;
             UPDATE cosigner_head SET seq = 2, hash = 'not checked here';",
        )
        .await
        .unwrap();
    let first = l.newest_record_ms().await.unwrap().unwrap();
    assert_eq!(l.counts().await.unwrap().get("approve"), Some(&2));
    l.record_event(EventKind::Mode, "{}").await.unwrap();
    assert_eq!(l.counts().await.unwrap().get("approve"), Some(&2));
    let through: i64 = admin
        .query_one("SELECT through_seq FROM ledger_summary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(through, 3);
    assert_eq!(l.newest_record_ms().await.unwrap(), Some(first));
    let stored: i64 = admin
        .query_one("SELECT max(recorded_at_ms) FROM decisions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, stored, "the older cosigner's record is the newest");
}

/// A self-signed certificate for `localhost` and its key, as PEM.
fn certificate() -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

#[tokio::test]
async fn the_ledger_connects_over_tls_verifying_the_servers_certificate_when_asked() {
    let (cert, key) = certificate();
    let Some(pg) = Pg::start_with(|data| {
        std::fs::write(data.join("server.crt"), &cert).unwrap();
        std::fs::write(data.join("server.key"), &key).unwrap();
        let mut perms = std::fs::metadata(data.join("server.key"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(data.join("server.key"), perms).unwrap();
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let ca = ca.display();
    let port = pg.port();
    let pg = &pg;
    let connect = |url: String| async move { PgLedger::connect(&url, Some(pg.password())).await };
    // The name in the certificate, verified against the given root: connects, encrypted.
    let full = connect(format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    ))
    .await
    .unwrap();
    full.record_event(EventKind::Mode, "{}").await.unwrap();
    assert_eq!(
        full.describe(),
        format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full")
    );
    let encrypted: bool = pg
        .admin("postgres")
        .await
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'cosigner'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted);
    // Another name than the certificate's: refused by verify-full, accepted by verify-ca.
    let err = connect(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::Database { .. }), "{err}");
    connect(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={ca}"
    ))
    .await
    .unwrap();
    // A certificate no trusted root signed: refused by verify-full, accepted by require.
    let err = connect(format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full"
    ))
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("certificate verify failed"),
        "{err}"
    );
    connect(format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=require"
    ))
    .await
    .unwrap();
}
