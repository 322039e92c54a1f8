//! The ledger's schema as numbered steps, on both back ends: each step's DDL written out here
//! (never generated from the record structs, so that a new field cannot change a step a
//! ledger has already applied), applied in order, each ledger applying those it has not yet,
//! all in one transaction. A change to the schema is a new step at the end; the steps already
//! here never change (`tests/fixtures/schema/` pins each one's text, byte for byte). SQLite
//! records how many steps a file has in `meta.schema_version`, PostgreSQL in `cosigner_schema`.
//!
//! Step 1 is the schema of ledgers written before the steps (version 1). Step 2 adds the
//! indexes every per-cycle and per-request query needs, the decision counts kept as records are
//! written, and `ledger_summary`: how far the counts and the newest record time are folded in
//! (`through_seq`), the newest record time, and the last point of the chain verified.
//! PostgreSQL's step 3 lets a pause record through the fencing trigger from any epoch.

/// SQLite's steps, in order.
pub(crate) const SQLITE: &[&str] = &[SQLITE_1, SQLITE_2];

/// PostgreSQL's steps, in order.
pub(crate) const POSTGRES: &[&str] = &[POSTGRES_1, POSTGRES_2, POSTGRES_3];

/// SQLite step 1: the chained tables, the meta table (head, schema version) and the lookup
/// indexes of version 1.
const SQLITE_1: &str = r#"CREATE TABLE IF NOT EXISTS decisions (
  seq INTEGER PRIMARY KEY,
  tx_id INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  tx_json TEXT NOT NULL,
  from_addr TEXT,
  to_addr TEXT,
  amount TEXT,
  chain_id TEXT,
  amount_value TEXT,
  action TEXT NOT NULL,
  rule TEXT NOT NULL,
  reason TEXT NOT NULL,
  policy_sha256 TEXT NOT NULL,
  dry_run INTEGER NOT NULL,
  signed_text TEXT,
  data TEXT,
  recorded_at_ms INTEGER NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
  seq INTEGER PRIMARY KEY,
  decision_seq INTEGER NOT NULL,
  status TEXT NOT NULL,
  message TEXT,
  recorded_at_ms INTEGER NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL,
  recorded_at_ms INTEGER NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS collects (
  seq INTEGER PRIMARY KEY,
  is_main INTEGER NOT NULL,
  ok INTEGER NOT NULL,
  message TEXT,
  recorded_at_ms INTEGER NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_tx ON decisions(tx_id, seq);
CREATE INDEX IF NOT EXISTS decisions_window ON decisions(action, dry_run, recorded_at_ms);
CREATE INDEX IF NOT EXISTS outcomes_decision ON outcomes(decision_seq, seq);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, seq);
"#;

/// SQLite step 2: indexes for the event look-ups (by exact detail, by time), for decisions by
/// rule and by action; the decision counts; the summary row.
const SQLITE_2: &str = r#"CREATE INDEX events_detail ON events(kind, detail);
CREATE INDEX events_time ON events(kind, recorded_at_ms);
CREATE INDEX decisions_rule ON decisions(rule, seq);
CREATE INDEX decisions_action ON decisions(action, seq);
CREATE TABLE decision_counts (
  action TEXT NOT NULL,
  dry_run INTEGER NOT NULL,
  n INTEGER NOT NULL,
  PRIMARY KEY (action, dry_run)
);
INSERT INTO decision_counts (action, dry_run, n)
  SELECT action, dry_run, COUNT(*) FROM decisions GROUP BY action, dry_run;
CREATE TABLE ledger_summary (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  through_seq INTEGER NOT NULL,
  newest_ms INTEGER,
  verified_seq INTEGER,
  verified_hash TEXT
);
INSERT INTO ledger_summary (id, through_seq, newest_ms, verified_seq, verified_hash)
  SELECT 1, COALESCE(MAX(seq), 0), MAX(recorded_at_ms),
    CASE WHEN MAX(seq) IS NULL THEN 0 END,
    CASE WHEN MAX(seq) IS NULL THEN '0000000000000000000000000000000000000000000000000000000000000000' END
  FROM (SELECT seq, recorded_at_ms FROM decisions UNION ALL SELECT seq, recorded_at_ms FROM outcomes
    UNION ALL SELECT seq, recorded_at_ms FROM collects UNION ALL SELECT seq, recorded_at_ms FROM events) AS chained;
"#;

/// PostgreSQL step 1: the leader row, the head row, the chained tables (each row with the
/// writer's epoch), the lookup indexes, and the fencing trigger on every chained table.
const POSTGRES_1: &str = r#"CREATE TABLE cosigner_leader (id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL, holder text, since timestamptz);
INSERT INTO cosigner_leader (id, epoch) VALUES (1, 0);
CREATE TABLE cosigner_head (id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash text NOT NULL);
INSERT INTO cosigner_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE decisions (
  seq BIGINT PRIMARY KEY,
  tx_id BIGINT NOT NULL,
  fingerprint TEXT NOT NULL,
  tx_json TEXT NOT NULL,
  from_addr TEXT,
  to_addr TEXT,
  amount TEXT,
  chain_id TEXT,
  amount_value TEXT,
  action TEXT NOT NULL,
  rule TEXT NOT NULL,
  reason TEXT NOT NULL,
  policy_sha256 TEXT NOT NULL,
  dry_run BOOLEAN NOT NULL,
  signed_text TEXT,
  data TEXT,
  recorded_at_ms BIGINT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  epoch BIGINT NOT NULL
);
CREATE TABLE outcomes (
  seq BIGINT PRIMARY KEY,
  decision_seq BIGINT NOT NULL,
  status TEXT NOT NULL,
  message TEXT,
  recorded_at_ms BIGINT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  epoch BIGINT NOT NULL
);
CREATE TABLE events (
  seq BIGINT PRIMARY KEY,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL,
  recorded_at_ms BIGINT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  epoch BIGINT NOT NULL
);
CREATE TABLE collects (
  seq BIGINT PRIMARY KEY,
  is_main BOOLEAN NOT NULL,
  ok BOOLEAN NOT NULL,
  message TEXT,
  recorded_at_ms BIGINT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  epoch BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS decisions_tx ON decisions(tx_id, seq);
CREATE INDEX IF NOT EXISTS decisions_window ON decisions(action, dry_run, recorded_at_ms);
CREATE INDEX IF NOT EXISTS outcomes_decision ON outcomes(decision_seq, seq);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, seq);

CREATE FUNCTION cosigner_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
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
    RAISE EXCEPTION 'fenced: epoch % is older than the leader epoch %', NEW.epoch, current
      USING ERRCODE = 'CS409', DETAIL = NEW.epoch::text || ' ' || current::text;
  END IF;
  RETURN NEW;
END;
$fence$;
CREATE TRIGGER decisions_fence BEFORE INSERT ON decisions FOR EACH ROW EXECUTE FUNCTION cosigner_fence();
CREATE TRIGGER outcomes_fence BEFORE INSERT ON outcomes FOR EACH ROW EXECUTE FUNCTION cosigner_fence();
CREATE TRIGGER collects_fence BEFORE INSERT ON collects FOR EACH ROW EXECUTE FUNCTION cosigner_fence();
CREATE TRIGGER events_fence BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION cosigner_fence();
"#;

/// PostgreSQL step 2: as SQLite's step 2 (the exact-detail index on a digest of the detail,
/// as PostgreSQL's index entries are bounded in size).
const POSTGRES_2: &str = r#"CREATE INDEX events_detail ON events (kind, md5(detail));
CREATE INDEX events_time ON events (kind, recorded_at_ms);
CREATE INDEX decisions_rule ON decisions (rule, seq);
CREATE INDEX decisions_action ON decisions (action, seq);
CREATE TABLE decision_counts (
  action text NOT NULL,
  dry_run boolean NOT NULL,
  n bigint NOT NULL,
  PRIMARY KEY (action, dry_run)
);
INSERT INTO decision_counts (action, dry_run, n)
  SELECT action, dry_run, COUNT(*) FROM decisions GROUP BY action, dry_run;
CREATE TABLE ledger_summary (
  id integer PRIMARY KEY CHECK (id = 1),
  through_seq bigint NOT NULL,
  newest_ms bigint,
  verified_seq bigint,
  verified_hash text
);
INSERT INTO ledger_summary (id, through_seq, newest_ms, verified_seq, verified_hash)
  SELECT 1, COALESCE(MAX(seq), 0), MAX(recorded_at_ms),
    CASE WHEN MAX(seq) IS NULL THEN 0 END,
    CASE WHEN MAX(seq) IS NULL THEN '0000000000000000000000000000000000000000000000000000000000000000' END
  FROM (SELECT seq, recorded_at_ms FROM decisions UNION ALL SELECT seq, recorded_at_ms FROM outcomes
    UNION ALL SELECT seq, recorded_at_ms FROM collects UNION ALL SELECT seq, recorded_at_ms FROM events) AS chained;
"#;

/// PostgreSQL step 3: the fencing function lets a pause record through whatever the writer's
/// epoch (any member of a pair may record a pause, the leader or a standby); everything else,
/// a resume included, only from the current epoch.
const POSTGRES_3: &str = r#"CREATE OR REPLACE FUNCTION cosigner_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
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
$fence$;
"#;

#[cfg(test)]
mod tests {
    use super::super::record::{CollectRecord, DecisionRecord, EventRecord, OutcomeRecord, Record};
    use super::*;

    /// The columns PostgreSQL's steps give table `R` (its `CREATE TABLE` in step 1; no later
    /// step alters a chained table yet) against the record struct's: a field added to a struct
    /// without a step fails here.
    fn pg_columns<R: Record>() -> (Vec<String>, Vec<String>) {
        let start = POSTGRES_1
            .find(&format!("CREATE TABLE {} (\n", R::TABLE))
            .unwrap();
        let body = &POSTGRES_1[start..];
        let body = &body[body.find('\n').unwrap() + 1..body.find("\n);").unwrap()];
        let table = body
            .lines()
            .map(|l| l.trim().trim_end_matches(',').to_string())
            .filter(|c| {
                !["seq ", "prev_hash ", "hash ", "epoch "]
                    .iter()
                    .any(|x| c.starts_with(x))
            })
            .collect();
        let declared = R::declared()
            .iter()
            .map(|c| format!("{} {}", c.name, c.pg))
            .collect();
        (table, declared)
    }

    #[test]
    fn the_record_structs_and_the_postgresql_tables_have_the_same_columns() {
        for (table, declared) in [
            pg_columns::<DecisionRecord>(),
            pg_columns::<OutcomeRecord>(),
            pg_columns::<CollectRecord>(),
            pg_columns::<EventRecord>(),
        ] {
            assert_eq!(table, declared);
        }
    }

    /// The fencing function `verify` expects is the one the last step defining it created.
    #[test]
    fn the_fencing_function_verify_expects_is_the_one_the_steps_create() {
        let last = POSTGRES
            .iter()
            .rev()
            .find(|s| s.contains("FUNCTION cosigner_fence()"))
            .unwrap();
        assert!(last.contains(&format!(
            "$fence${}$fence$",
            super::super::postgres::FENCE_FUNCTION
        )));
    }

    /// Each back end's steps against their golden files: a step a ledger has applied never
    /// changes, and every step has its file.
    #[test]
    fn every_schema_step_is_pinned_byte_for_byte_by_its_golden_file() {
        for (dir, steps) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/schema")
                .join(dir);
            let mut files: Vec<String> = std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let expected: Vec<String> = (1..=steps.len()).map(|n| format!("{n:04}.sql")).collect();
            assert_eq!(files, expected, "{dir}: one golden file per step");
            for (file, step) in files.iter().zip(steps.iter()) {
                let golden = std::fs::read_to_string(root.join(file)).unwrap();
                assert_eq!(
                    *step, golden,
                    "{dir} step {file} changed: an applied step never changes; add a new step"
                );
            }
        }
    }
}
