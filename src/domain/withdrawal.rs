//! A pending withdrawal as listed: what the policy decides on and the ledger records.

/// The id 1BitPay gives a transaction: the key of one decision for ever.
pub type TxId = u64;

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
