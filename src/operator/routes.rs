//! The operator API's routes: decisions (cursor-paged), status, the policy, reload, pause and
//! resume.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::control::Mode;
use crate::domain::{Action, TxId};
use crate::ledger::{DecisionRow, PageQuery};

use super::{ApiError, OperatorState, bad_request, error, internal};

pub(super) fn ms_to_rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A decision as the API shows it.
#[must_use]
pub(crate) fn decision_json(r: &DecisionRow) -> Value {
    json!({
        "id": r.seq,
        "object": "decision",
        "tx_id": r.tx_id,
        "action": r.action,
        "rule": r.rule,
        "reason": r.reason,
        "status": r.status,
        "status_message": r.status_message,
        "dry_run": r.dry_run,
        "policy_sha256": r.policy_sha256,
        "recorded_at": ms_to_rfc3339(r.recorded_at_ms),
        "transaction": {
            "from": r.from, "to": r.to, "amount": r.amount, "chain_id": r.chain_id, "raw": r.tx_json,
        },
        "signed_text": r.signed_text,
        "data": r.data,
    })
}

/// The query parameter `name`'s value `v` as a whole number (a `u64`, or a [`TxId`]: the same
/// digits).
pub(super) fn whole<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ApiError> {
    v.parse::<T>()
        .map_err(|_| bad_request(format!("{name} must be a whole number, not {v:?}")))
}

pub(super) fn parse_query(pairs: Vec<(String, String)>) -> Result<PageQuery, ApiError> {
    let mut q = PageQuery {
        limit: 10,
        ..PageQuery::default()
    };
    for (k, v) in pairs {
        let num = |name: &str| whole::<u64>(name, &v);
        match k.as_str() {
            "limit" => {
                let n = num("limit")?;
                if !(1..=100).contains(&n) {
                    return Err(bad_request("limit must be between 1 and 100"));
                }
                q.limit = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "starting_after" => q.starting_after = Some(num("starting_after")?),
            "ending_before" => q.ending_before = Some(num("ending_before")?),
            "tx_id" => q.tx_id = Some(whole::<TxId>("tx_id", &v)?),
            "rule" => q.rule = Some(v),
            "action" => {
                q.action = Some(
                    v.parse::<Action>()
                        .map_err(|m| bad_request(format!("action: {m}")))?,
                )
            }
            other => return Err(bad_request(format!("unknown parameter {other:?}"))),
        }
    }
    if q.starting_after.is_some() && q.ending_before.is_some() {
        return Err(bad_request(
            "give starting_after or ending_before, not both",
        ));
    }
    Ok(q)
}

pub(super) async fn list_decisions(
    State(s): State<OperatorState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(pairs)?;
    let (rows, more) = s
        .ledger
        .page(q)
        .await
        .map_err(|e| internal(e.to_string()))?;
    Ok(Json(json!({
        "object": "list",
        "url": "/v1/decisions",
        "has_more": more,
        "data": rows.iter().map(decision_json).collect::<Vec<_>>(),
    })))
}

pub(super) async fn get_decision(
    State(s): State<OperatorState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    // An id that is not a number names no decision either: 404, like any unknown id.
    let no_such = || {
        error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no decision {id:?}"),
            Value::Null,
        )
    };
    let seq: u64 = id.parse().map_err(|_| no_such())?;
    let row = s
        .ledger
        .get(seq)
        .await
        .map_err(|e| internal(e.to_string()))?;
    row.map(|r| Json(decision_json(&r))).ok_or_else(no_such)
}

pub(super) async fn status(State(s): State<OperatorState>) -> Result<Json<Value>, ApiError> {
    let policy = s.engine.policy();
    let ledger = &s.ledger;
    let usage = ledger
        .usage(policy.clone(), ledger.clock().now_ms())
        .await
        .map_err(|e| internal(e.to_string()))?;
    let counts = ledger.counts().await.map_err(|e| internal(e.to_string()))?;
    let dry_runs = ledger
        .dry_run_counts()
        .await
        .map_err(|e| internal(e.to_string()))?;
    let windows: Vec<Value> = policy
        .rules
        .iter()
        .filter_map(|r| {
            let l = r.limit.as_ref()?;
            let u = usage.rules.get(&r.name).copied().unwrap_or_default();
            Some(json!({
                "rule": r.name,
                "window": crate::display::window(l.window),
                "used_total": u.total.to_string(),
                "max_total": l.max_total.map(|t| t.to_string()),
                "used_count": u.count,
                "max_count": l.max_count,
            }))
        })
        .collect();
    let last = s
        .health
        .last_poll_ok_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let ready = s.health.readiness();
    let leadership = s.lead.as_ref().map(|lead| {
        let (role, epoch) = match lead.role() {
            crate::leader::Role::Leader { epoch } => ("leader", Some(epoch)),
            crate::leader::Role::Standby { .. } | crate::leader::Role::Outdated { .. } => {
                ("standby", None)
            }
        };
        let current = lead.current();
        json!({
            "role": role,
            "epoch": epoch,
            "leader": lead.leader_name(),
            "current": current.is_ok(),
            // Why this instance may not decide now (a standby, an unconfirmed lead, a ledger
            // schema newer than this cosigner's).
            "not_leading": current.err().map(|e| e.to_string()),
        })
    });
    Ok(Json(json!({
        "object": "status",
        "ledger": {"backend": ledger.backend_name(), "location": ledger.describe()},
        "leadership": leadership,
        "mode": s.engine.control().mode().as_str(),
        // False while a pause is in force that the ledger has not recorded yet.
        "mode_recorded": !s.engine.control().unrecorded(),
        "policy": {"sha256": policy.sha256, "file": policy.source},
        "ready": ready.is_ok(),
        "not_ready_reason": ready.err(),
        "last_successful_poll": (last > 0).then(|| ms_to_rfc3339(last)),
        "decisions": counts,
        "dry_run_decisions": dry_runs,
        "guard": policy.guard.as_ref().map(|g| json!({
            "window": crate::display::window(g.window),
            "used": usage.guard_approvals,
            "max_approvals": g.max_approvals,
        })),
        "windows": windows,
    })))
}

pub(super) async fn policy(State(s): State<OperatorState>) -> Json<Value> {
    let p = s.engine.policy();
    let rules: Vec<Value> = p
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "action": r.action,
                // As text, as the policy writes them (and as JSON numbers cannot hold them all).
                "chains": r.chains.as_ref().map(|c| c.iter().map(u128::to_string).collect::<Vec<_>>()),
                "from_addresses": r.from.as_ref().map(|f| f.len()),
                "to_addresses": r.to.as_ref().map(|t| t.len()),
                "min_amount": r.min_amount.map(|a| a.to_string()),
                "max_amount": r.max_amount.map(|a| a.to_string()),
                "window": r.limit.as_ref().map(|l| crate::display::window(l.window)),
                "max_total": r.limit.as_ref().and_then(|l| l.max_total).map(|a| a.to_string()),
                "max_count": r.limit.as_ref().and_then(|l| l.max_count),
            })
        })
        .collect();
    Json(json!({
        "object": "policy",
        "sha256": p.sha256,
        "file": p.source,
        "default": p.default,
        "rules": rules,
        "guard": p.guard.as_ref().map(|g| json!({"window": crate::display::window(g.window), "max_approvals": g.max_approvals})),
        "warnings": p.warnings(),
    }))
}

pub(super) async fn reload(State(s): State<OperatorState>) -> Result<Json<Value>, ApiError> {
    s.refuse_on_standby()?;
    let previous = s.engine.policy().sha256.clone();
    let keys = s.keys.reload_off_runtime("operator API").await;
    let p = s
        .engine
        .control()
        .reload_policy("operator API")
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.to_string(),
                json!({"kept": previous}),
            )
        })?;
    match keys {
        Ok(n) => Ok(Json(json!({
            "object": "policy_reload", "sha256": p.sha256, "previous": previous, "api_keys": n,
        }))),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the policy was reloaded, but not the API keys: {e}"),
            json!({"sha256": p.sha256, "previous": previous, "api_keys_kept": true}),
        )),
    }
}

/// The mode `POST /v1/pause` asks for: `hold` unless the body says `{"mode": "reject"}`.
/// The body is read as bytes, so that even one that is not UTF-8 gets the QbitPay error object.
pub(super) fn requested_pause(body: &[u8]) -> Result<Mode, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Mode::Hold);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| bad_request(format!("body: {e}")))?;
    match v.get("mode").and_then(|m| m.as_str()) {
        None | Some("hold") => Ok(Mode::Hold),
        Some("reject") => Ok(Mode::Reject),
        Some(other) => Err(bad_request(format!(
            "mode must be \"hold\" or \"reject\", not {other:?}"
        ))),
    }
}

pub(super) async fn set_mode(s: &OperatorState, mode: Mode) -> Result<Json<Value>, ApiError> {
    if mode == Mode::Normal {
        // A resume only from the confirmed leader (the database refuses one from any other).
        s.refuse_on_standby()?;
    } else {
        s.refuse_on_other_schema()?;
    }
    let stopped = s
        .engine
        .control()
        .set_mode(mode, s.by)
        .await
        .map_err(|e| match e {
            // In force here, not recorded: the other members of a pair do not know of it.
            crate::control::ModeError::NotRecorded {
                mode,
                ref stopped,
                error: ref cause,
            } => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                e.to_string(),
                json!({
                    "mode": mode.as_str(),
                    "in_force": true,
                    "recorded": false,
                    "error": cause.to_string(),
                    "stopped": stopped.stopped,
                    "already_written": stopped.already_written,
                }),
            ),
            other => internal(other.to_string()),
        })?;
    Ok(Json(json!({
        "object": "mode",
        "mode": mode.as_str(),
        "recorded": true,
        // Attempts the change stopped before a byte of them was written, and requests it
        // forbids that were already written whole (they left before it).
        "stopped": stopped.stopped,
        "already_written": stopped.already_written,
    })))
}

/// Any member of a pair, leader or standby, confirmed or not, takes a pause: in force here at
/// once, recorded in the shared ledger as soon as it can be, and binding the pair once it is
/// (the answer waits for that; see `Control::set_mode`).
pub(super) async fn pause(
    State(s): State<OperatorState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    set_mode(&s, requested_pause(&body)?).await
}

pub(super) async fn resume(State(s): State<OperatorState>) -> Result<Json<Value>, ApiError> {
    set_mode(&s, Mode::Normal).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<PageQuery, ApiError> {
        parse_query(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_tx_id_filter_takes_what_a_u64_takes_and_refuses_the_rest_as_before() {
        for (text, id) in [
            ("7", 7),
            ("007", 7),
            ("+7", 7),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(
                query(&[("tx_id", text)]).unwrap().tx_id,
                Some(TxId::new(id))
            );
        }
        for bad in ["", "-1", " 7", "7 ", "abc", "1.0", "18446744073709551616"] {
            let e = query(&[("tx_id", bad)]).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(
                e.message,
                format!("tx_id must be a whole number, not {bad:?}")
            );
        }
        // The other numbers keep their own names in the message.
        let e = query(&[("starting_after", "x")]).unwrap_err();
        assert_eq!(
            e.message,
            "starting_after must be a whole number, not \"x\""
        );
    }
}
