//! A pending withdrawal as listed: what the policy decides on and the ledger records.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id 1BitPay gives a transaction: the key of one decision for ever. The one type of a
/// transaction id, from the wire to the ledger: an unsigned 64-bit number, written (in JSON, in
/// logs, on screen) as its decimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(u64);

impl TxId {
    /// The id whose number is `id`.
    #[must_use]
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The id's number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TxId {
    /// The decimal number, honouring width and alignment (`{:>10}`) as a `u64` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for TxId {
    type Err = ParseIntError;

    /// A decimal `u64`, exactly as `u64::from_str` takes it (the operator API's `tx_id` and the
    /// pending list's `id` were always read that way).
    fn from_str(s: &str) -> Result<Self, ParseIntError> {
        s.parse().map(Self)
    }
}

/// A pending withdrawal as listed. Fields are kept as text, unjudged: the policy decides what a
/// missing or odd field means (it holds such a transaction). The client builds it from the
/// pending list's JSON; nothing here knows that format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// The transaction id.
    pub id: TxId,
    /// The source address, when it was given as text.
    pub from: Option<String>,
    /// The destination address, when it was given as text.
    pub to: Option<String>,
    /// The amount exactly as listed.
    pub amount: Option<String>,
    /// The chain id, when it was given as text.
    pub chain_id: Option<String>,
    /// What was wrong with the listed fields, one phrase each (empty when nothing).
    pub problems: Vec<String>,
    /// The item's text as listed: what the ledger records.
    pub raw: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_id_is_written_and_read_as_its_number() {
        for n in [0, 7, 1 << 53, i64::MAX.unsigned_abs(), 1 << 63, u64::MAX] {
            let id = TxId::new(n);
            assert_eq!(id.get(), n);
            assert_eq!(id.to_string(), n.to_string());
            assert_eq!(serde_json::to_string(&id).unwrap(), n.to_string());
            assert_eq!(serde_json::from_str::<TxId>(&n.to_string()).unwrap(), id);
            assert_eq!(n.to_string().parse::<TxId>(), Ok(id));
        }
        // Table columns line up as they did with a bare `u64`.
        assert_eq!(
            format!("{:>6}|{:<4}|", TxId::new(42), TxId::new(7)),
            "    42|7   |"
        );
        assert_eq!(
            serde_json::json!({"tx_id": TxId::new(u64::MAX)}).to_string(),
            r#"{"tx_id":18446744073709551615}"#
        );
    }

    #[test]
    fn a_transaction_id_parses_exactly_as_a_u64_does() {
        for text in [
            "",
            " 1",
            "1 ",
            "-1",
            "1.0",
            "0x1",
            "18446744073709551616",
            "1e3",
        ] {
            assert!(text.parse::<TxId>().is_err(), "{text:?}");
            assert!(text.parse::<u64>().is_err(), "{text:?}");
        }
        assert_eq!("+5".parse::<TxId>(), "+5".parse::<u64>().map(TxId::new));
        assert_eq!("007".parse::<TxId>(), Ok(TxId::new(7)));
        assert!(serde_json::from_str::<TxId>("-1").is_err());
        assert!(serde_json::from_str::<TxId>("\"1\"").is_err());
    }
}
