//! Pairs upgrade one member at a time: a cosigner on a ledger whose schema a newer cosigner
//! brought forward stands by, writes nothing, and says why (its log, `/readyz`, `/v1/status`),
//! whether the step is applied while it leads, while one of its writes is under way, or before
//! it starts. On SQLite (one process holds the file) an older cosigner refuses the file
//! untouched, naming both versions.

use std::time::Duration;

use cosigner::ledger::{EventKind, LedgerError};

use crate::pair::{Member, items, one_leader, spawn_member, wait_decided};
use crate::pg::Pg;
use crate::support::*;

/// `ledger/postgres/schema.rs`'s migration lock: a cosigner applies its schema steps holding it, as a
/// newer one would.
const MIGRATION_LOCK: i64 = 0x636f_7369_676e_6d67;
/// `leader.rs`'s leader lock.
const LEADER_LOCK: i64 = 0x636f_7369_676e_6572;

/// What a newer cosigner's schema step 4 does: under the migration lock, in one transaction, a
/// change to a table and the version moved on.
const STEP_4: &str = "ALTER TABLE events ADD COLUMN newer text;
INSERT INTO cosigner_schema (version) VALUES (4);";

const REASON: &str = "schema version 4 is newer than this cosigner's 3";

/// The chain head's record number.
async fn head(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one("SELECT seq FROM cosigner_head WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0)
}

/// `/readyz` of `m` once its listener answers (`None` before).
async fn readyz(m: &Member) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("{}/readyz", m.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Whether `m` says, on `/readyz`, that it stands by for the newer schema.
async fn stands_by_for_the_newer_schema(m: &Member) -> bool {
    readyz(m)
        .await
        .is_some_and(|(status, body)| status == 503 && body.contains(REASON))
}

/// Applies [`STEP_4`] as a newer cosigner would.
async fn apply_step_3(admin: &mut tokio_postgres::Client) {
    let tx = admin.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap();
    tx.batch_execute(STEP_4).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_begins_while_a_newer_cosigner_applies_a_schema_step_waits_for_it_and_is_refused()
 {
    let Some(pg) = Pg::start() else { return };
    let ledger = pg.ledger().await;
    ledger.record_event(EventKind::Mode, "{}").await.unwrap();
    let mut admin = pg.admin("postgres").await;
    let before = head(&admin).await;

    // The newer cosigner holds the migration lock, its step applied but not committed.
    let upgrade = admin.transaction().await.unwrap();
    upgrade
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap();
    upgrade.batch_execute(STEP_4).await.unwrap();
    let write = tokio::spawn(async move {
        let r = ledger
            .record_event(EventKind::Policy, "{\"why\":\"reload\"}")
            .await;
        (ledger, r)
    });
    let watcher = pg.admin("postgres").await;
    wait_until(
        "the write waits for the schema step",
        Duration::from_secs(30),
        || async {
            watcher
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        },
    )
    .await;
    assert!(!write.is_finished());
    upgrade.commit().await.unwrap();
    let (ledger, r) = write.await.unwrap();
    assert!(
        matches!(r, Err(LedgerError::DatabaseSchema { found: 4, known: 3 })),
        "{r:?}"
    );
    // Every kind of write is refused from now on, and nothing was added to the chain.
    let once = ledger.record_event_once(EventKind::Waiting, "{}").await;
    assert!(
        matches!(
            once,
            Err(LedgerError::DatabaseSchema { found: 4, known: 3 })
        ),
        "{once:?}"
    );
    let err = ledger
        .record_event(EventKind::Mode, "{}")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("upgrade this one"),
        "the error says what to do: {err}"
    );
    assert_eq!(head(&admin).await, before);
    let events: i64 = admin
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_member_whose_ledger_a_newer_cosigner_upgrades_stands_by_writes_nothing_and_says_why_also_after_a_restart()
 {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("upgrade").await;
    let url = pg.url("upgrade", "disable");
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 4)).await;

    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    one_leader(&[&a]).await;
    wait_decided(&sandbox.url, 4, &[&a]).await;

    // The other member, upgraded, brings the schema forward while this one leads.
    let mut admin = pg.admin("upgrade").await;
    apply_step_3(&mut admin).await;
    wait_until(
        "the member says it stands by for the newer schema",
        Duration::from_secs(60),
        || stands_by_for_the_newer_schema(&a),
    )
    .await;
    assert_eq!(a.leadership().await, Some((0, 0)));
    let head_then = head(&admin).await;
    // It gave the lead up: the upgraded member can take it.
    let free: bool = admin
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await
        .unwrap()
        .get(0);
    assert!(free, "the outdated member still holds the leader lock");
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK])
        .await
        .unwrap();
    let (status, body) = a.call(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["leadership"]["role"], "standby", "{body}");
    assert!(
        body["not_ready_reason"]
            .as_str()
            .unwrap_or_default()
            .contains(REASON)
            && body["leadership"]["not_leading"]
                .as_str()
                .unwrap_or_default()
                .contains(REASON),
        "{body}"
    );
    // An operator write is refused rather than recorded.
    let (status, body) = a.call(reqwest::Method::POST, "/v1/pause").await;
    assert_eq!(status, 409, "{body}");
    assert!(a.log().contains(REASON), "{}", a.log());

    // New withdrawals arrive; over several poll intervals (1 s) it decides and records none.
    post_pending(&sandbox.url, items(5, 8)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sandbox_decisions(&sandbox.url).await.len(), 4);
    assert_eq!(head(&admin).await, head_then);

    // Restarted with the same (older) binary, it starts as a standby rather than exiting.
    drop(a);
    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    wait_until(
        "the restarted member says it stands by for the newer schema",
        Duration::from_secs(60),
        || stands_by_for_the_newer_schema(&a),
    )
    .await;
    assert!(
        a.log()
            .contains("starting as a standby that writes nothing"),
        "{}",
        a.log()
    );
    let (status, body) = a.call(reqwest::Method::POST, "/v1/pause").await;
    assert_eq!(status, 409, "{body}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(a.leadership().await, Some((0, 0)));
    assert_eq!(sandbox_decisions(&sandbox.url).await.len(), 4);
    assert_eq!(head(&admin).await, head_then);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_cosigner_refuses_an_sqlite_ledger_a_newer_one_upgraded_naming_both_versions_and_leaves_it_untouched()
 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http://127.0.0.1:9");
    let path = dir.path().join("ledger.db");
    {
        let ledger = open_ledger(&path);
        drop(ledger);
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE newer (x TEXT); UPDATE meta SET value = '3' WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        run_bin(&["run", "--once", "--config", &cfg]),
    )
    .await
    .expect("run exits");
    let text = all_output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("schema version 3") && text.contains("understands up to 2"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was changed"
    );
}
