//! Request and response bodies of the 1BitPay endpoints, and the tolerant pending-item parser.

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::domain::{TxId, Verdict, Withdrawal, folded_name, parse_decimal};

/// One page of `/api/transaction/pending`.
#[derive(Debug, Clone)]
pub struct PendingPage {
    /// The server's count of pending transactions over all pages.
    pub total: u64,
    /// The items of this page, each parsed on its own so one bad item spoils no other.
    pub items: Vec<PendingItem>,
}

/// A pending item: a withdrawal with a usable id, or an item that cannot even be identified.
pub(crate) type PendingItem = Result<Withdrawal, MalformedItem>;

/// A list item without a usable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedItem {
    /// The item's JSON text (cut to 200 bytes).
    pub(crate) raw: String,
    /// Why it could not be used.
    pub reason: String,
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    total: Option<&'a RawValue>,
    #[serde(borrow)]
    list: Option<Vec<&'a RawValue>>,
}

/// Why the `data` of a pending response is not a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Not a JSON object with the page's members.
    #[error("pending data is not an object with total and list: {0}")]
    Shape(String),
    /// `total` is missing.
    #[error("pending data has no total")]
    NoTotal,
    /// `total` is not a whole number (its text, cut).
    #[error("pending total {0} is not a whole number")]
    Total(String),
    /// `list` is missing.
    #[error("pending data has no list")]
    NoList,
}

/// Parses the `data` of a pending response. The page's own shape must be right (an error
/// otherwise); each item is judged separately.
pub fn parse_pending_page(data: &str) -> Result<PendingPage, PageError> {
    parse_pending_page_within(data, usize::MAX)
}

/// How much of an item larger than the limit is kept (and recorded): enough to recognise it.
pub(crate) const OVERSIZED_PREFIX: usize = 256;

/// [`parse_pending_page`], each item's raw JSON at most `max_item_bytes`: a larger item is not
/// read field by field; it is kept as its id (when it has one), a bounded prefix of its JSON and
/// the SHA-256 of the whole, with a problem that holds it as malformed.
pub fn parse_pending_page_within(
    data: &str,
    max_item_bytes: usize,
) -> Result<PendingPage, PageError> {
    let page: RawPage<'_> =
        serde_json::from_str(data).map_err(|e| PageError::Shape(e.to_string()))?;
    let total = match page.total {
        Some(t) => t
            .get()
            .parse::<u64>()
            .map_err(|_| PageError::Total(cut(t.get())))?,
        None => return Err(PageError::NoTotal),
    };
    let list = page.list.ok_or(PageError::NoList)?;
    Ok(PendingPage {
        total,
        items: list
            .into_iter()
            .map(|raw| {
                if raw.get().len() > max_item_bytes {
                    oversized(raw, max_item_bytes)
                } else {
                    parse_item(raw)
                }
            })
            .collect(),
    })
}

fn cut(s: &str) -> String {
    cut_at(s, 200)
}

/// `s`, or its first `max` bytes (back to a character boundary) followed by `…`.
fn cut_at(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An item larger than `limit` bytes: its id (the one field read), a bounded prefix and the
/// SHA-256 of the whole, held as malformed. Nothing else of it is kept, so that a listing of
/// padded items costs no more memory, or ledger, than one of ordinary items.
fn oversized(raw: &RawValue, limit: usize) -> PendingItem {
    let text = raw.get();
    let about = format!(
        "the item is {} bytes of JSON, more than poll.max_item_bytes ({limit}): its fields are not \
         read, only its first {OVERSIZED_PREFIX} bytes are kept, and the SHA-256 of the whole is \
         \"{}\"",
        text.len(),
        crate::display::hex(&openssl::sha::sha256(text.as_bytes()))
    );
    let prefix = cut_at(text, OVERSIZED_PREFIX);
    match item_id(text) {
        Ok(id) => Ok(Withdrawal {
            id,
            from: None,
            to: None,
            amount: None,
            chain_id: None,
            problems: vec![about],
            raw: prefix,
        }),
        Err(reason) => Err(MalformedItem {
            raw: prefix,
            reason: format!("{reason}; {about}"),
        }),
    }
}

/// The id of an item (its members as [`parse_item`] reads them), or why it has none.
fn item_id(text: &str) -> Result<TxId, String> {
    let members = serde_json::from_str::<Members<'_>>(text)
        .map_err(|_| "item is not a JSON object".to_string())?
        .0;
    let mut ids = members.iter().filter(|(k, _)| folded_name(k) == "id");
    let Some((name, value)) = ids.next() else {
        return Err("item has no id".into());
    };
    if ids.next().is_some() || name != "id" {
        return Err("the id is written twice".into());
    }
    value
        .get()
        .parse::<TxId>()
        .map_err(|_| format!("id {} is not a whole number", cut(value.get())))
}

/// Parses one pending-list item from its JSON text.
pub fn parse_pending_item(raw: &str) -> PendingItem {
    match serde_json::from_str::<&RawValue>(raw) {
        Ok(r) => parse_item(r),
        Err(_) => Err(MalformedItem {
            raw: cut(raw),
            reason: "item is not JSON".into(),
        }),
    }
}

/// An object's members in the order written, repeats kept (a map would keep one silently).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = map.next_entry::<String, &'de RawValue>()? {
                    out.push(kv);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The member names the daemon reads. A name that other parsers may take for one of them (equal
/// but for case, Unicode case folding, `_` or `-`: Java's `equalsIgnoreCase`, fastjson's smart
/// match) is refused too.
const ITEM_FIELDS: [&str; 5] = ["id", "fromAddress", "toAddress", "amount", "chainId"];

fn parse_item(raw: &RawValue) -> PendingItem {
    let members = match serde_json::from_str::<Members<'_>>(raw.get()) {
        Ok(m) => m.0,
        Err(_) => {
            return Err(MalformedItem {
                raw: cut(raw.get()),
                reason: "item is not a JSON object".into(),
            });
        }
    };
    let mut fields: std::collections::BTreeMap<String, &RawValue> = Default::default();
    // A member written twice, or a twin another parser takes for it, has no single meaning:
    // parsers disagree on which copy wins. Such an item is held (or, for the id, not acted on).
    let mut twins: Vec<String> = Vec::new();
    for (k, v) in members {
        let f = folded_name(&k);
        let twin_of_field = ITEM_FIELDS
            .iter()
            .any(|name| folded_name(name) == f && *name != k);
        if fields.contains_key(&k) || twin_of_field {
            twins.push(k.clone());
        }
        fields.entry(k).or_insert(v);
    }
    if twins.iter().any(|k| folded_name(k) == "id") {
        return Err(MalformedItem {
            raw: cut(raw.get()),
            reason: "the id is written twice".into(),
        });
    }
    let id = match fields.get("id") {
        None => {
            return Err(MalformedItem {
                raw: cut(raw.get()),
                reason: "item has no id".into(),
            });
        }
        Some(v) => match v.get().parse::<TxId>() {
            Ok(id) => id,
            Err(_) => {
                return Err(MalformedItem {
                    raw: cut(raw.get()),
                    reason: format!("id {} is not a whole number", cut(v.get())),
                });
            }
        },
    };
    let mut problems: Vec<String> = twins
        .iter()
        .map(|k| format!("member {k:?} is written twice (or in two cases)"))
        .collect();
    let mut string_field = |name: &str| -> Option<String> {
        match fields.get(name) {
            None => {
                problems.push(format!("{name} is missing"));
                None
            }
            Some(v) => match serde_json::from_str::<String>(v.get()) {
                Ok(s) => Some(s),
                Err(_) => {
                    problems.push(format!("{name} is not a string: {}", cut(v.get())));
                    None
                }
            },
        }
    };
    let from = string_field("fromAddress");
    let to = string_field("toAddress");
    let chain_id = string_field("chainId");
    let amount = match fields.get("amount") {
        None => {
            problems.push("amount is missing".into());
            None
        }
        Some(v) => {
            let t = v.get();
            if t.starts_with('"') {
                serde_json::from_str::<String>(t).ok()
            } else if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
                Some(t.to_string())
            } else {
                problems.push(format!(
                    "amount is neither a string nor a number: {}",
                    cut(t)
                ));
                None
            }
        }
    };
    Ok(Withdrawal {
        id,
        from,
        to,
        amount,
        chain_id,
        problems,
        raw: raw.get().to_string(),
    })
}

/// Body of `/api/transaction/pending`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PendingRequest {
    /// Page number, from 1 (`pageNum`).
    pub(crate) page_num: u32,
    /// Items per page (`pageSize`).
    pub(crate) page_size: u32,
}

/// Body of `/api/transaction/approve`: the six signed fields plus `data`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApproveRequest {
    /// The transaction id.
    pub id: TxId,
    /// `from`: the source address.
    pub from: String,
    /// `to`: the destination address.
    pub to: String,
    /// `value`: the amount exactly as listed.
    pub value: String,
    /// `chainId`: the chain.
    pub chain_id: String,
    /// `status`: 1 approve, 2 reject.
    #[serde(with = "status_number")]
    pub status: Verdict,
    /// `data`: base64 of the RSA private-key operation over the signed text.
    pub data: String,
}

/// A [`Verdict`] on the wire: the protocol's `status` number, and nothing else read back.
mod status_number {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::Verdict;

    pub(super) fn serialize<S: Serializer>(v: &Verdict, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(v.status())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Verdict, D::Error> {
        let n = u64::deserialize(d)?;
        Verdict::from_status(n).ok_or_else(|| D::Error::custom(format!("status {n} is not 1 or 2")))
    }
}

/// Body of `/api/transaction/assets/collect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CollectRequest {
    /// 1 sweeps main coins, 0 tokens (`isMain`).
    pub(crate) is_main: u8,
    /// `data`: base64 of the RSA private-key operation over the signed text.
    pub(crate) data: String,
}

/// Body of `/api/otc/rate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateRequest {
    /// The crypto currency, e.g. USDT (`cryptoCurrency`).
    pub crypto_currency: String,
    /// The fiat currency, e.g. CNY (`legalCurrency`).
    pub legal_currency: String,
}

/// `data` of `/api/otc/rate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    #[serde(deserialize_with = "decimal_text")]
    /// Price when the merchant buys (`buyRate`).
    pub buy_rate: Decimal,
    #[serde(deserialize_with = "decimal_text")]
    /// Price when the merchant sells (`sellRate`).
    pub sell_rate: Decimal,
}

/// Body of `/api/otc/create`. Amounts are decimal strings on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrder {
    /// The user's name (`userName`).
    pub(crate) user_name: String,
    /// Phone country code (`areaCode`).
    pub(crate) area_code: String,
    /// Phone number (`phone`).
    pub(crate) phone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where the user returns to (`syncUrl`).
    pub(crate) sync_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where 1BitPay sends the order's status (`asyncUrl`).
    pub(crate) async_url: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_decimal_text",
        serialize_with = "opt_decimal_string"
    )]
    /// Amount in the crypto currency (`cryptoAmount`).
    pub(crate) crypto_amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Amount in the fiat currency (`legalAmount`).
    pub(crate) legal_amount: Option<u64>,
    /// The crypto currency, e.g. USDT (`cryptoCurrency`).
    pub(crate) crypto_currency: String,
    /// The fiat currency, e.g. CNY (`legalCurrency`).
    pub(crate) legal_currency: String,
    /// Identity document type, as the reference numbers them (`idCardType`).
    pub(crate) id_card_type: u8,
    /// Identity document number (`idCard`).
    pub(crate) id_card: String,
    /// KYC level, as the reference numbers them (`kyc`).
    pub(crate) kyc: u8,
    /// The merchant's own order number (`merchantOrderNo`).
    pub(crate) merchant_order_no: String,
    /// Buy or sell, as the reference numbers them (`orderType`).
    pub(crate) order_type: u8,
    /// Payment method, as the reference numbers them (`payWay`).
    pub(crate) pay_way: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Bank name (`bank`).
    pub(crate) bank: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Bank account number (`bankAccount`).
    pub(crate) bank_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Bank branch (`bankBranch`).
    pub(crate) bank_branch: Option<String>,
    /// Whether the order page is the mobile one (`h5`).
    pub(crate) h5: bool,
}

/// `data` of `/api/otc/create`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    /// The order page's address (`url`).
    pub(crate) url: String,
    /// Whether the user is new to 1BitPay (`isNew`).
    pub is_new: bool,
    /// 1BitPay's order number (`orderNo`).
    pub order_no: String,
}

/// One order of `/api/otc/batch/sell`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SellOrder {
    /// The user's name (`userName`).
    pub user_name: String,
    /// Phone country code (`areaCode`).
    pub area_code: String,
    /// Phone number (`phone`).
    pub phone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where the user returns to (`syncUrl`).
    pub sync_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where 1BitPay sends the order's status (`asyncUrl`).
    pub async_url: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_decimal_text",
        serialize_with = "opt_decimal_string"
    )]
    /// Amount in the crypto currency (`cryptoAmount`).
    pub crypto_amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Amount in the fiat currency (`legalAmount`).
    pub legal_amount: Option<u64>,
    /// The crypto currency, e.g. USDT (`cryptoCurrency`).
    pub crypto_currency: String,
    /// The fiat currency, e.g. CNY (`legalCurrency`).
    pub legal_currency: String,
    /// Identity document type, as the reference numbers them (`idCardType`).
    pub id_card_type: u8,
    /// Identity document number (`idCard`).
    pub id_card: String,
    /// The merchant's own order number (`merchantOrderNo`).
    pub merchant_order_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Payment method, as the reference numbers them (`payWay`).
    pub pay_way: Option<u8>,
    /// Bank name (`bank`).
    pub bank: String,
    /// Bank account number (`bankAccount`).
    pub bank_account: String,
    /// Bank branch (`bankBranch`).
    pub bank_branch: String,
}

/// `data` of `/api/otc/batch/sell`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchSold {
    /// The batch number 1BitPay gave (`batchNo`).
    pub(crate) batch_no: String,
    /// The merchant order numbers of the batch (`merchantOrderNos`).
    pub merchant_order_nos: Vec<String>,
}

/// Deserializes a decimal from a JSON string or number token, without passing through `f64`.
fn decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let raw: &RawValue = Deserialize::deserialize(d)?;
    let t = raw.get();
    let text = if t.starts_with('"') {
        serde_json::from_str::<String>(t).map_err(D::Error::custom)?
    } else {
        t.to_string()
    };
    parse_decimal(&text).ok_or_else(|| D::Error::custom(format!("{text:?} is not a decimal")))
}

fn opt_decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    decimal_text(d).map(Some)
}

fn opt_decimal_string<S: serde::Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amount_number_token_keeps_its_exact_text() {
        let p = parse_pending_page(
            r#"{"total":1,"list":[{"id":5,"fromAddress":"a","toAddress":"b","amount":1234.500000000000000001,"chainId":"1"}]}"#,
        )
        .unwrap();
        let tx = p.items[0].as_ref().unwrap();
        assert_eq!(tx.amount.as_deref(), Some("1234.500000000000000001"));
        assert!(tx.problems.is_empty());
    }

    #[test]
    fn an_item_without_id_is_malformed_but_its_neighbours_survive() {
        let p = parse_pending_page(
            r#"{"total":2,"list":[{"fromAddress":"a"},{"id":2,"fromAddress":"a","toAddress":"b","amount":"1","chainId":"1"}]}"#,
        )
        .unwrap();
        assert!(p.items[0].is_err());
        assert_eq!(p.items[1].as_ref().unwrap().id, TxId::new(2));
    }

    #[test]
    fn wrong_field_types_are_reported_as_problems() {
        let p = parse_pending_page(
            r#"{"total":1,"list":[{"id":3,"fromAddress":7,"toAddress":"b","amount":{"x":1}}]}"#,
        )
        .unwrap();
        let tx = p.items[0].as_ref().unwrap();
        assert_eq!(tx.from, None);
        assert_eq!(tx.amount, None);
        assert_eq!(tx.problems.len(), 3, "{:?}", tx.problems);
    }

    #[test]
    fn an_item_larger_than_the_limit_keeps_its_id_a_bounded_prefix_and_the_hash_of_the_whole() {
        let big = format!(
            r#"{{"id":9,"fromAddress":"a","toAddress":"b","amount":"1","chainId":"1","pad":"{}"}}"#,
            "é".repeat(5000)
        );
        let small = r#"{"id":10,"fromAddress":"a","toAddress":"b","amount":"1","chainId":"1"}"#;
        let page = format!(
            r#"{{"total":3,"list":[{big},{small},{{"pad":"{}"}}]}}"#,
            "x".repeat(600)
        );
        let p = parse_pending_page_within(&page, 512).unwrap();
        let tx = p.items[0].as_ref().unwrap();
        assert_eq!(tx.id, TxId::new(9));
        assert_eq!(
            (&tx.from, &tx.to, &tx.amount, &tx.chain_id),
            (&None, &None, &None, &None)
        );
        assert!(
            tx.raw.len() <= OVERSIZED_PREFIX + "…".len(),
            "{}",
            tx.raw.len()
        );
        assert!(big.starts_with(tx.raw.trim_end_matches('…')));
        let digest = crate::display::hex(&openssl::sha::sha256(big.as_bytes()));
        assert_eq!(tx.problems.len(), 1);
        assert!(tx.problems[0].contains(&digest), "{}", tx.problems[0]);
        assert!(
            tx.problems[0].contains("poll.max_item_bytes (512)"),
            "{}",
            tx.problems[0]
        );
        // Within the limit: read as usual.
        let ok = p.items[1].as_ref().unwrap();
        assert_eq!(ok.to.as_deref(), Some("b"));
        assert!(ok.problems.is_empty());
        // Too large and no id: malformed, kept bounded too.
        let m = p.items[2].as_ref().unwrap_err();
        assert!(m.reason.starts_with("item has no id;"), "{}", m.reason);
        assert!(m.raw.len() <= OVERSIZED_PREFIX + "…".len());
        // Without a limit nothing changes.
        let all = parse_pending_page(&page).unwrap();
        assert_eq!(all.items[0].as_ref().unwrap().raw, big);
    }

    #[test]
    fn a_page_without_total_is_an_error() {
        assert!(parse_pending_page(r#"{"list":[]}"#).is_err());
        assert!(parse_pending_page(r#"{"total":-1,"list":[]}"#).is_err());
    }
}
