//! Field checks: a listed withdrawal's fields read strictly (amount, chain, addresses in canonical
//! form) before any rule sees them; doubt holds.

use std::collections::HashMap;

use rust_decimal::Decimal;

use crate::domain::{Decision, Verdict, Withdrawal, decision_text_len, parse_decimal};

use super::address::{address_problem, chain_problem};
use super::{Format, MAX_AMOUNT_TEXT};

/// A transaction whose fields passed the malformed-field checks.
pub(super) struct Checked<'a> {
    pub(super) from: &'a str,
    pub(super) to: &'a str,
    pub(super) chain: &'a str,
    /// `chain` as a number (it is canonical: at most 20 digits).
    pub(super) chain_no: u128,
    pub(super) amount: Decimal,
}

/// A transaction that cannot be decided, and which address (if any) made it so.
pub(super) struct Malformed<'a> {
    pub(super) reason: String,
    /// The field and the address that is not canonical.
    pub(super) address: Option<(&'a str, &'a str)>,
}

impl From<String> for Malformed<'_> {
    fn from(reason: String) -> Self {
        Malformed {
            reason,
            address: None,
        }
    }
}

/// Checks the fields every decision depends on, canonical forms included; `Err` is the reason to
/// hold.
pub(super) fn check_fields<'a>(
    tx: &'a Withdrawal,
    max_sign_len: usize,
    formats: &HashMap<u128, Format>,
) -> Result<Checked<'a>, Malformed<'a>> {
    if !tx.problems.is_empty() {
        return Err(tx.problems.join("; ").into());
    }
    let field = |v: &'a Option<String>, name: &str| -> Result<&'a str, Malformed<'a>> {
        match v.as_deref() {
            None => Err(format!("{name} is missing").into()),
            Some("") => Err(format!("{name} is empty").into()),
            Some(s) => Ok(s),
        }
    };
    let chain = field(&tx.chain_id, "chainId")?;
    if let Some(p) = chain_problem(chain) {
        return Err(format!("chainId {chain:?} {p}").into());
    }
    let chain_no: u128 = chain
        .parse()
        .map_err(|_| format!("chainId {chain:?} is not a chain id"))?;
    let format = formats.get(&chain_no).copied();
    let address = |name: &'static str, v: &'a Option<String>| -> Result<&'a str, Malformed<'a>> {
        let a = field(v, name)?;
        match address_problem(a, format) {
            None => Ok(a),
            Some(p) => Err(Malformed {
                reason: format!("{name} {a:?} {p}"),
                address: Some((name, a)),
            }),
        }
    };
    let from = address("fromAddress", &tx.from)?;
    let to = address("toAddress", &tx.to)?;
    let amount_text = field(&tx.amount, "amount")?;
    if amount_text.len() > MAX_AMOUNT_TEXT {
        return Err(format!(
            "amount is {} characters long (at most {MAX_AMOUNT_TEXT})",
            amount_text.len()
        )
        .into());
    }
    let amount = parse_decimal(amount_text).ok_or_else(|| {
        format!("amount {amount_text:?} is not a plain decimal that can be compared exactly")
    })?;
    if amount_text.starts_with('-') {
        return Err(format!("amount {amount_text:?} is negative").into());
    }
    let len = decision_text_len(&Decision {
        id: tx.id,
        from,
        to,
        value: amount_text,
        chain_id: chain,
        verdict: Verdict::Approve,
    });
    if len > max_sign_len {
        return Err(format!(
            "the text to sign is {len} bytes; the key signs at most {max_sign_len}"
        )
        .into());
    }
    Ok(Checked {
        from,
        to,
        chain,
        chain_no,
        amount,
    })
}
