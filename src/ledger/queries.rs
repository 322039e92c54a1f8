//! The reading shared by both back ends, so that they answer alike: a decision row, a page of rows,
//! window usage and a transaction's state.

use rust_decimal::Decimal;

use crate::domain::{Action, Withdrawal};
use crate::policy::{Approval, Policy, Usage};

use super::record::{DecisionRecord, Record};
use super::sql::{Millis, Seq, sql_count};
use super::{DecisionRow, PageQuery, ResendRecord, TxState, fingerprint, sql};

/// The time of the newest record, in either back end, from the records themselves: for a
/// ledger read before its schema has the summary (step 2).
pub(super) const NEWEST_RECORD: &str = "SELECT MAX(t) FROM (SELECT MAX(recorded_at_ms) AS t FROM decisions
  UNION ALL SELECT MAX(recorded_at_ms) FROM outcomes UNION ALL SELECT MAX(recorded_at_ms) FROM collects
  UNION ALL SELECT MAX(recorded_at_ms) FROM events) AS newest";

/// SQLite's placeholder for the `n`th argument (`?1`).
pub(super) fn sqlite_arg(n: usize) -> String {
    format!("?{n}")
}

/// PostgreSQL's placeholder for the `n`th argument (`$1`).
pub(super) fn pg_arg(n: usize) -> String {
    format!("${n}")
}

/// The event look-ups both back ends ask, written once and spelled in the placeholders of one
/// ([`sqlite_arg`] or [`pg_arg`]). Finding an event by its exact detail is not among them:
/// PostgreSQL finds it through an index on the detail's digest, SQLite through the detail.
pub(super) struct EventSql {
    /// The events of a kind (`$1`) recorded after a time (`$2`): detail and time.
    pub(super) since: String,
    /// The newest event of a kind (`$1`): its detail.
    pub(super) latest: String,
    /// Every event of a kind (`$1`), oldest first: their details.
    pub(super) all: String,
}

impl EventSql {
    pub(super) fn new(arg: fn(usize) -> String) -> Self {
        Self {
            since: format!(
                "SELECT detail, recorded_at_ms FROM events WHERE kind = {} AND recorded_at_ms > {}",
                arg(1),
                arg(2)
            ),
            latest: format!(
                "SELECT detail FROM events WHERE kind = {} ORDER BY seq DESC LIMIT 1",
                arg(1)
            ),
            all: format!(
                "SELECT detail FROM events WHERE kind = {} ORDER BY seq",
                arg(1)
            ),
        }
    }
}

/// A decision with its latest outcome's status and message, read by [`row`].
pub(super) fn row_select() -> String {
    format!(
        "SELECT d.seq, {},
  (SELECT o.status FROM outcomes o WHERE o.decision_seq = d.seq ORDER BY o.seq DESC LIMIT 1) AS latest_status,
  (SELECT o.message FROM outcomes o WHERE o.decision_seq = d.seq ORDER BY o.seq DESC LIMIT 1) AS latest_message
  FROM decisions d",
        DecisionRecord::names("d.")
    )
}

pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRow> {
    Ok(DecisionRow::from_parts(
        r.get(0)?,
        DecisionRecord::from_row(r, 1)?,
        r.get("latest_status")?,
        r.get("latest_message")?,
    ))
}

/// A value bound in [`page_query`]'s SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PageArg {
    Text(String),
    Int(i64),
}

/// The SQL of one page of decisions (one more than `q.limit`, to tell whether more lie beyond)
/// and its arguments, with `placeholder(n)` for the n-th argument (`?n` in SQLite, `$n` in
/// PostgreSQL). Rows come newest first, or oldest first when paging backwards
/// (`ending_before`): [`page_rows`] puts them in order.
pub(super) fn page_query(
    q: &PageQuery,
    placeholder: fn(usize) -> String,
) -> (String, Vec<PageArg>) {
    let mut sql = format!("{} WHERE 1=1", row_select());
    let mut args = Vec::new();
    let mut push = |sql: &mut String, clause: &str, arg: PageArg| {
        args.push(arg);
        sql.push_str(clause);
        sql.push_str(&placeholder(args.len()));
    };
    if let Some(a) = q.action {
        push(
            &mut sql,
            " AND d.action = ",
            PageArg::Text(a.as_str().to_string()),
        );
    }
    if let Some(r) = &q.rule {
        push(&mut sql, " AND d.rule = ", PageArg::Text(r.clone()));
    }
    if let Some(t) = q.tx_id {
        push(&mut sql, " AND d.tx_id = ", PageArg::Int(sql::stored(t)));
    }
    if let Some(s) = q.starting_after {
        push(&mut sql, " AND d.seq < ", PageArg::Int(Seq(s).bound()));
    }
    if let Some(s) = q.ending_before {
        push(&mut sql, " AND d.seq > ", PageArg::Int(Seq(s).bound()));
    }
    sql.push_str(if q.ending_before.is_some() {
        " ORDER BY d.seq ASC"
    } else {
        " ORDER BY d.seq DESC"
    });
    push(
        &mut sql,
        " LIMIT ",
        PageArg::Int(sql_count(q.limit.saturating_add(1))),
    );
    (sql, args)
}

/// The page out of the rows [`page_query`] selected, newest first, and whether more lie beyond
/// it in the paging direction.
pub(super) fn page_rows(q: &PageQuery, mut rows: Vec<DecisionRow>) -> (Vec<DecisionRow>, bool) {
    let more = rows.len() > q.limit;
    rows.truncate(q.limit);
    if q.ending_before.is_some() {
        rows.reverse();
    }
    (rows, more)
}

/// The time the longest window of `policy`, reaching `slack` further back, starts at; `None`
/// when the policy has no window.
pub(super) fn window_start(
    policy: &Policy,
    now_ms: i64,
    slack: std::time::Duration,
) -> Option<i64> {
    let longest = policy.longest_window()?;
    Some(now_ms.saturating_sub(
        i64::try_from(longest.saturating_add(slack).as_millis()).unwrap_or(i64::MAX),
    ))
}

/// A live approval recorded inside the longest window.
pub(super) struct WindowApproval {
    pub(super) seq: Seq,
    pub(super) rule: String,
    pub(super) amount_value: Option<String>,
    pub(super) at: Millis,
}

/// Window usage from the approvals and the `resend` events (detail, time) recorded since
/// [`window_start`]: each approval counted from its record and from every re-send.
pub(super) fn usage_of(
    policy: &Policy,
    now_ms: i64,
    slack: std::time::Duration,
    approvals: Vec<WindowApproval>,
    resends: Vec<(String, i64)>,
) -> Usage {
    // An amount that cannot be read back counts as the largest possible: over-counting is
    // safe, under-counting is not.
    let amount = |t: Option<&str>| {
        t.and_then(|t| t.parse::<Decimal>().ok())
            .unwrap_or(Decimal::MAX)
    };
    let mut seen: Vec<(u64, String, Decimal, i64)> = approvals
        .into_iter()
        .map(|a| (a.seq.0, a.rule, amount(a.amount_value.as_deref()), a.at.0))
        .collect();
    for (detail, at) in resends {
        // A re-send event that cannot be read counts the largest amount under no rule but the
        // guard's window: it can only make limits tighter.
        match ResendRecord::from_detail(&detail) {
            Some(r) => seen.push((r.seq, r.rule, r.amount, at)),
            None => seen.push((u64::MAX, String::new(), Decimal::MAX, at)),
        }
    }
    Usage::at(
        policy,
        now_ms,
        slack,
        seen.iter().map(|(seq, rule, amount, at)| Approval {
            key: *seq,
            rule,
            amount: *amount,
            at_ms: *at,
        }),
    )
}

/// The state of `tx`'s content from every decision about its id (`history`, oldest first).
pub(super) fn tx_state(tx: &Withdrawal, history: Vec<DecisionRow>) -> TxState {
    let fp = fingerprint(tx);
    let mut st = TxState::default();
    let mut others = std::collections::HashSet::new();
    for row in history {
        if row.fingerprint != fp {
            others.insert(row.fingerprint.clone());
            if row.action != Action::Hold && !row.dry_run {
                st.decided_other = Some(row);
            }
            continue;
        }
        if row.action == Action::Hold && st.first_hold_ms.is_none() {
            st.first_hold_ms = Some(row.recorded_at_ms);
        }
        if row.action != Action::Hold && !row.dry_run {
            st.live = Some(row);
        } else {
            st.last_unsent = Some(row);
        }
    }
    st.other_contents = others.len();
    st
}
