//! The PostgreSQL schema and its fence: versioned steps under an advisory lock, the trigger that
//! refuses a stale leader's rows, and what a database already holds.

use std::time::Duration;

use tokio_postgres::GenericClient;

use crate::ledger::{LedgerError, VerifyReport};

use super::{PgLedger, PgTarget, db, snapshot, verify_on};

/// The schema steps this cosigner knows (`ledger/schema.rs`); `cosigner_schema` holds how many
/// were applied.
pub(crate) const SCHEMA_STEPS: i32 = {
    // A handful of steps: far below i32::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let n = crate::ledger::schema::POSTGRES.len() as i32;
    n
};

/// The advisory lock (transaction scope) under which the schema is applied, exclusively; every
/// write takes it shared before it reads the schema version (see [`begin_write`]), so that a
/// newer cosigner applying a step and this one writing are one before the other.
pub(super) const MIGRATION_LOCK: i64 = 0x636f_7369_676e_6d67; // "cosignmg"

/// The SQLSTATE the fencing trigger raises.
pub(super) const FENCED: &str = "CS409";

/// The chained tables, each with its fencing trigger.
pub(super) const CHAINED_TABLES: [&str; 4] = ["decisions", "outcomes", "collects", "events"];

/// The fencing trigger's function; `verify` reports a ledger whose function was replaced.
pub(in crate::ledger) const FENCE_FUNCTION: &str = "
DECLARE
  current bigint;
BEGIN
  -- FOR SHARE: a takeover (which updates this row) waits for this transaction, and this
  -- transaction waits for a takeover in progress and then sees its epoch.
  SELECT epoch INTO current FROM cosigner_leader WHERE id = 1 FOR SHARE;
  IF current IS NULL THEN
    RAISE EXCEPTION 'cosigner_leader has no row: refusing every write';
  END IF;
  IF NEW.epoch < current THEN
    -- A pause is safe to record from any instance, whatever its epoch: it only stops what
    -- the pair sends. A resume (or any other record) only from the current epoch.
    IF TG_TABLE_NAME = 'events' THEN
      IF NEW.kind = 'mode' AND (NEW.detail::jsonb ->> 'mode') IN ('hold', 'reject') THEN
        RETURN NEW;
      END IF;
    END IF;
    RAISE EXCEPTION 'fenced: epoch % is older than the leader epoch %', NEW.epoch, current
      USING ERRCODE = 'CS409', DETAIL = NEW.epoch::text || ' ' || current::text;
  END IF;
  RETURN NEW;
END;
";

/// Triggers, rules, row-level security and a replaced fencing function, none of which a
/// cosigner writes: each could change or hide rows as they are written or read.
pub(super) async fn foreign_objects<C: GenericClient + Sync>(
    c: &C,
) -> Result<Vec<String>, LedgerError> {
    let what = "look for objects no cosigner writes";
    let tables: Vec<String> = CHAINED_TABLES.iter().map(|t| (*t).to_string()).collect();
    let mut problems = Vec::new();
    for r in c
        .query(
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE NOT t.tgisinternal AND c.relname = ANY($1) AND c.relnamespace = to_regnamespace(current_schema())
             ORDER BY c.relname, t.tgname",
            &[&tables],
        )
        .await
        .map_err(db(what))?
    {
        let (name, table): (String, String) = (r.get(0), r.get(1));
        if name != format!("{table}_fence") {
            problems.push(format!(
                "the database holds a trigger {name:?} on {table}, which no cosigner writes (edited)"
            ));
        }
    }
    for r in c
        .query(
            "SELECT rulename, tablename FROM pg_rules WHERE schemaname = current_schema() AND tablename = ANY($1)
             UNION ALL SELECT policyname, tablename FROM pg_policies WHERE schemaname = current_schema() AND tablename = ANY($1)
             UNION ALL SELECT 'row level security', relname FROM pg_class WHERE relrowsecurity AND relname = ANY($1)
               AND relnamespace = to_regnamespace(current_schema())",
            &[&tables],
        )
        .await
        .map_err(db(what))?
    {
        let (name, table): (String, String) = (r.get(0), r.get(1));
        problems.push(format!(
            "the database holds a rule or policy {name:?} on {table}, which no cosigner writes (edited)"
        ));
    }
    let body: Option<String> = c
        .query_opt(
            "SELECT prosrc FROM pg_proc WHERE proname = 'cosigner_fence' AND pronamespace = to_regnamespace(current_schema())",
            &[],
        )
        .await
        .map_err(db(what))?
        .map(|r| r.get(0));
    if body.as_deref() != Some(FENCE_FUNCTION) {
        problems.push(
            "the fencing function cosigner_fence is missing or was replaced (edited)".to_string(),
        );
    }
    Ok(problems)
}

/// What `cosigner check` reads of a PostgreSQL ledger without changing it.
#[derive(Debug, Clone)]
pub(crate) struct Inspection {
    /// The schema steps applied (`None`: no cosigner schema yet; the daemon creates it).
    pub(crate) schema: Option<i32>,
    /// The chain walked, when there is a schema this cosigner knows.
    pub(crate) report: Option<VerifyReport>,
    /// The epoch and the name of the instance that last took the lead.
    pub(crate) leader: Option<(i64, Option<String>)>,
}

impl PgTarget {
    /// Connects once and reads the schema version, the chain and who last took the lead,
    /// writing nothing. A schema newer than this cosigner's is an error, as at start.
    pub(crate) async fn inspect(&self) -> Result<Inspection, LedgerError> {
        let mut client =
            tokio::time::timeout(Duration::from_secs(15), self.connect("cosigner check"))
                .await
                .map_err(|_| LedgerError::Database {
                    what: "connect",
                    error: "no answer within 15 s".into(),
                })??;
        let what = "read the schema version";
        let exists: bool = client
            .query_one("SELECT to_regclass('cosigner_schema') IS NOT NULL", &[])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        if !exists {
            // The first daemon creates the schema: tried here and rolled back, so that a
            // database already holding tables of the same names (another application's) fails
            // now, as the daemon would at start, and nothing is written.
            let what = "create the schema (tried, then rolled back)";
            let tx = client.transaction().await.map_err(db(what))?;
            for step in crate::ledger::schema::POSTGRES {
                tx.batch_execute(step).await.map_err(db(what))?;
            }
            tx.rollback().await.map_err(db(what))?;
            return Ok(Inspection {
                schema: None,
                report: None,
                leader: None,
            });
        }
        let found: Option<i32> = client
            .query_one("SELECT max(version) FROM cosigner_schema", &[])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        let found = found.unwrap_or(0);
        if found > SCHEMA_STEPS {
            return Err(LedgerError::DatabaseSchema {
                found,
                known: SCHEMA_STEPS,
            });
        }
        if found < 1 {
            return Ok(Inspection {
                schema: Some(found),
                report: None,
                leader: None,
            });
        }
        // One snapshot for the records and the head (a leader may be writing meanwhile).
        let tx = snapshot(&mut client).await?;
        let report = verify_on(&tx).await;
        tx.rollback().await.map_err(db(what))?;
        let report = report?;
        let leader = client
            .query_opt(
                "SELECT epoch, holder FROM cosigner_leader WHERE id = 1",
                &[],
            )
            .await
            .map_err(db("read the leader"))?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<String>>(1)));
        Ok(Inspection {
            schema: Some(found),
            report: Some(report),
            leader,
        })
    }
}

impl PgLedger {
    pub(super) async fn migrate(&self) -> Result<(), LedgerError> {
        let what = "bring the schema up to date";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db(what))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db(what))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS cosigner_schema (version integer NOT NULL)")
            .await
            .map_err(db(what))?;
        let found: Option<i32> = tx
            .query_one("SELECT max(version) FROM cosigner_schema", &[])
            .await
            .map_err(db(what))?
            .get(0);
        let found = found.unwrap_or(0);
        if found > SCHEMA_STEPS {
            return Err(LedgerError::DatabaseSchema {
                found,
                known: SCHEMA_STEPS,
            });
        }
        for (version, step) in (1..)
            .zip(crate::ledger::schema::POSTGRES)
            .skip_while(|(v, _)| *v <= found)
        {
            tx.batch_execute(step).await.map_err(db(what))?;
            tx.execute(
                "INSERT INTO cosigner_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(db(what))?;
            tracing::info!(version, url = %self.describe(), "ledger schema step applied");
        }
        tx.commit().await.map_err(db(what))
    }
}
