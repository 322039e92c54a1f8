//! The ledger's running summary (schema step 2), the same SQL on both back ends: the decision
//! counts by action and the newest record time, kept as records are written so that no
//! per-cycle or per-request query reads the whole history, and the last point of the chain a
//! verification reached.
//!
//! Records are folded into the summary by sequence number, from `ledger_summary.through_seq`
//! on, in the transaction that appends them. Records appended without folding (by a cosigner
//! from before step 2 still leading a pair, or copied in by `ledger migrate`) are folded in by
//! the next append, and every reader adds them meanwhile: whatever wrote the records, the
//! counts and the newest time are exact, and cost only the records since `through_seq`.

/// How a back end writes the summary's SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// The `n`-th placeholder: `?n` (SQLite) or `$n` (PostgreSQL).
    placeholder: fn(usize) -> String,
    /// The decisions table, read by sequence number: SQLite's planner would otherwise read a
    /// whole covering index to group the few decisions after `through_seq`.
    decisions_by_seq: &'static str,
}

/// SQLite's.
pub(crate) const SQLITE: Dialect = Dialect {
    placeholder: |n| format!("?{n}"),
    decisions_by_seq: "decisions NOT INDEXED",
};

/// PostgreSQL's.
pub(crate) const POSTGRES: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    decisions_by_seq: "decisions",
};

/// The chained tables.
const CHAINED: [&str; 4] = ["decisions", "outcomes", "collects", "events"];

/// How far the summary is folded: `through_seq` (0 before anything was). Readers read it first
/// and pass it on as a parameter, so that each back end plans a range of recent records.
pub(crate) const THROUGH: &str = "SELECT through_seq FROM ledger_summary WHERE id = 1";

/// The newest `recorded_at_ms` of each chained table among records after `after` (SQL for a
/// sequence number), as rows of one column `t`.
fn newest_after(after: &str) -> String {
    CHAINED
        .iter()
        .map(|t| format!("SELECT MAX(recorded_at_ms) AS t FROM {t} WHERE seq > {after}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

impl Dialect {
    fn p(self, n: usize) -> String {
        (self.placeholder)(n)
    }

    /// Folds the records after the first parameter (`through_seq`) into the decision counts.
    pub(crate) fn fold_counts(self) -> String {
        format!(
            "INSERT INTO decision_counts (action, dry_run, n)
  SELECT action, dry_run, COUNT(*) FROM {} WHERE seq > {} GROUP BY action, dry_run
  ON CONFLICT (action, dry_run) DO UPDATE SET n = decision_counts.n + excluded.n",
            self.decisions_by_seq,
            self.p(1)
        )
    }

    /// Folds the records after the first parameter (`through_seq`) into the newest record
    /// time, and moves `through_seq` to the second (the head).
    pub(crate) fn fold_newest(self) -> String {
        format!(
            "UPDATE ledger_summary SET through_seq = {}, newest_ms = (SELECT MAX(t) FROM (
  SELECT newest_ms AS t FROM ledger_summary WHERE id = 1 UNION ALL {}) AS newest)
  WHERE id = 1",
            self.p(2),
            newest_after(&self.p(1))
        )
    }

    /// The newest record time: the summary's, or that of a record after the first parameter
    /// (`through_seq`).
    pub(crate) fn newest(self) -> String {
        format!(
            "SELECT MAX(t) FROM (SELECT newest_ms AS t FROM ledger_summary WHERE id = 1 UNION ALL {})
  AS newest",
            newest_after(&self.p(1))
        )
    }

    /// Decisions by action whose `dry_run` is the first parameter: the counts kept, plus those
    /// after the second parameter (`through_seq`).
    pub(crate) fn counts(self) -> String {
        format!(
            "SELECT action, CAST(SUM(n) AS BIGINT) FROM (
  SELECT action, n FROM decision_counts WHERE dry_run = {p1}
  UNION ALL SELECT action, COUNT(*) FROM {decisions} WHERE dry_run = {p1} AND seq > {p2}
  GROUP BY action) AS counted GROUP BY action",
            p1 = self.p(1),
            p2 = self.p(2),
            decisions = self.decisions_by_seq
        )
    }
}

/// The head of the chain from its records: the last record of each table (found by its
/// primary key), the last of those.
pub(crate) fn last_record() -> String {
    let each: Vec<String> = CHAINED
        .iter()
        .map(|t| format!("SELECT seq, hash FROM {t} WHERE seq = (SELECT MAX(seq) FROM {t})"))
        .collect();
    format!(
        "SELECT seq, hash FROM ({}) AS last ORDER BY seq DESC LIMIT 1",
        each.join(" UNION ALL ")
    )
}
