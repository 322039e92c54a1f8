//! What is decided about a withdrawal, and the exact texts the key shard signs: the decision
//! text of an approve/reject (its layout is what 1BitPay checks) and the collect text.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::TxId;

/// What to do with a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sign with status 1.
    Approve,
    /// Sign with status 2.
    Reject,
    /// Send nothing; leave it pending for a person and look again next cycle.
    Hold,
}

impl Action {
    /// The lowercase name used in logs, metrics and the ledger.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Hold => "hold",
        }
    }

    /// The verdict to sign, for approve and reject.
    #[must_use]
    pub(crate) fn verdict(self) -> Option<Verdict> {
        match self {
            Action::Approve => Some(Verdict::Approve),
            Action::Reject => Some(Verdict::Reject),
            Action::Hold => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that table columns (`{:<8}`) line up.
        f.pad(self.as_str())
    }
}

/// A word that is not an action (in a policy file, a ledger row or a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an action: write approve, reject or hold")]
pub struct UnknownAction(pub(crate) String);

impl std::str::FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, UnknownAction> {
        match s {
            "approve" => Ok(Action::Approve),
            "reject" => Ok(Action::Reject),
            "hold" => Ok(Action::Hold),
            other => Err(UnknownAction(other.to_owned())),
        }
    }
}

/// Approve or reject, as the `status` of the approve call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// `status` 1.
    Approve,
    /// `status` 2.
    Reject,
}

impl Verdict {
    /// The protocol's number for this verdict.
    #[must_use]
    pub fn status(self) -> u8 {
        match self {
            Verdict::Approve => 1,
            Verdict::Reject => 2,
        }
    }

    /// The verdict for a protocol status number.
    #[must_use]
    pub fn from_status(status: u64) -> Option<Self> {
        match status {
            1 => Some(Verdict::Approve),
            2 => Some(Verdict::Reject),
            _ => None,
        }
    }
}

/// The fields of one approve/reject decision, as they go into the signed text and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The transaction id.
    pub id: TxId,
    /// `from`: the source address.
    pub from: &'a str,
    /// `to`: the destination address.
    pub to: &'a str,
    /// The pending item's `amount` text, exactly as received.
    pub value: &'a str,
    /// `chainId`: the chain.
    pub chain_id: &'a str,
    /// Approve or reject.
    pub verdict: Verdict,
}

fn json_str(s: &str) -> String {
    // serde_json escapes exactly what JSON requires and leaves other characters as UTF-8.
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The compact text signed for an approve/reject, keys in the order the server expects.
#[must_use]
pub fn decision_text(d: &Decision<'_>) -> String {
    format!(
        "{{\"id\":{},\"from\":{},\"to\":{},\"value\":{},\"chainId\":{},\"status\":{}}}",
        d.id,
        json_str(d.from),
        json_str(d.to),
        json_str(d.value),
        json_str(d.chain_id),
        d.verdict.status()
    )
}

/// The length in bytes of [`decision_text`]`(d)`, without building it when no field needs
/// escaping (the policy checks every transaction's length against the key on its hot path).
#[must_use]
pub(crate) fn decision_text_len(d: &Decision<'_>) -> usize {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    };
    if ![d.from, d.to, d.value, d.chain_id].iter().all(|f| plain(f)) {
        return decision_text(d).len();
    }
    const FIXED: &[&str] = &[
        "{\"id\":",
        ",\"from\":\"\"",
        ",\"to\":\"\"",
        ",\"value\":\"\"",
        ",\"chainId\":\"\"",
        ",\"status\":",
        "}",
    ];
    let digits = d.id.get().checked_ilog10().map_or(1, |l| l as usize + 1);
    FIXED.iter().map(|f| f.len()).sum::<usize>()
        + digits
        + d.from.len()
        + d.to.len()
        + d.value.len()
        + d.chain_id.len()
        + 1
}

/// The text signed for a collection: `{"isMain":1}` sweeps main coins, `{"isMain":0}` tokens.
#[must_use]
pub fn collect_text(is_main: bool) -> String {
    format!("{{\"isMain\":{}}}", u8::from(is_main))
}

/// A JSON member name as lenient parsers compare names: without `_` and `-`, case folded the
/// way Java does (upper then lower, so `ſ` and `s`, `ı` and `i` meet): Java's
/// `equalsIgnoreCase`, fastjson's smart match.
#[must_use]
pub(crate) fn folded_name(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Why `text` must not be signed by hand, or `None` when it may: 1BitPay could take it, once
/// signed, as an approve/reject decision the policy and the ledger never saw. It must be strict
/// JSON (every request text is; a lenient parser reads more than JSON, `"s\x74atus"` and
/// `{status:1}` among it), and no member name, anywhere, may hold `status` as a lenient
/// parser reads names ([`folded_name`]; escapes are decoded by the strict parse). Used by
/// `cosigner sign`.
#[must_use]
pub(crate) fn hand_signing_problem(text: &str) -> Option<String> {
    fn has_status(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .any(|(k, v)| folded_name(k).contains("status") || has_status(v)),
            serde_json::Value::Array(items) => items.iter().any(has_status),
            _ => false,
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) => Some(format!(
            "the text is not strict JSON ({e}), and a lenient parser may read a decision in it"
        )),
        Ok(v) if has_status(&v) => Some(
            "the text is shaped like an approve/reject decision (it has a `status` field)".into(),
        ),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_text_len_is_the_length_of_the_text() {
        for (id, from, value) in [
            (0, "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg", "4.1"),
            (9, "a\"b", "1"),
            (10, "caf\u{e9}", "-0.5"),
            (u64::MAX, "tab\there", "12.50"),
            (1234567, "back\\slash", ""),
        ] {
            let id = TxId::new(id);
            for verdict in [Verdict::Approve, Verdict::Reject] {
                let d = Decision {
                    id,
                    from,
                    to: "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
                    value,
                    chain_id: "195",
                    verdict,
                };
                assert_eq!(decision_text_len(&d), decision_text(&d).len(), "{d:?}");
            }
        }
    }

    #[test]
    fn decision_shaped_texts_are_recognised_in_any_spelling() {
        for t in [
            r#"{"id":1,"from":"a","to":"b","value":"1","chainId":"56","status":1}"#,
            r#"{ "status" : 2 , "id" : 1 }"#,
            r#"{"STATUS":1}"#,
            r#"{"st\u0061tus":1}"#,
            r#"{"sta_tus":1}"#,
            r#"[{"status":1}]"#,
            r#"{"data":{"status":1}}"#,
            "{id:1,status:1}",
            "{'id':1,'Status':1}",
            r#"{id:1,"st\u0061tus":1"#,
            r#"{"s\x74atus":1}"#,
            r#"{"\u017ftatus":1}"#,
            "{\"\u{17f}tatus\":1}",
            r#"{"isMain":1}garbage"#,
            "hello",
            "",
        ] {
            assert!(hand_signing_problem(t).is_some(), "{t}");
        }
        for t in [
            r#"{"isMain":1}"#,
            r#"{"isMain":0}"#,
            r#"{"id":1}"#,
            r#"{"memo":"status"}"#,
        ] {
            assert!(hand_signing_problem(t).is_none(), "{t}");
        }
    }

    #[test]
    fn decision_text_has_the_reference_layout() {
        let d = Decision {
            id: TxId::new(1),
            from: "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg",
            to: "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV",
            value: "4.1",
            chain_id: "56",
            verdict: Verdict::Approve,
        };
        assert_eq!(
            decision_text(&d),
            r#"{"id":1,"from":"TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg","to":"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV","value":"4.1","chainId":"56","status":1}"#
        );
    }

    #[test]
    fn decision_text_escapes_quotes_in_fields() {
        let d = Decision {
            id: TxId::new(7),
            from: "a\"b",
            to: "c\\d",
            value: "1",
            chain_id: "1",
            verdict: Verdict::Reject,
        };
        let text = decision_text(&d);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["from"], "a\"b");
        assert_eq!(v["to"], "c\\d");
        assert_eq!(v["status"], 2);
    }

    #[test]
    fn collect_texts_match_the_reference() {
        assert_eq!(collect_text(true), r#"{"isMain":1}"#);
        assert_eq!(collect_text(false), r#"{"isMain":0}"#);
    }
}
