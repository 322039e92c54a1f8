//! The request signature (the `Sign` header): canonical `key=value&...` string over headers and
//! body, MD5 with the secret. Not the RSA signing of decisions, which is `signer`'s.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::display::hex;

/// How parameter names are ordered in the canonical string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignOrder {
    /// Ignoring ASCII case, as the reference's worked example does (the default).
    #[default]
    CaseInsensitive,
    /// Strict byte order, as the reference's prose says ("sorted by ASCII").
    Ascii,
}

/// A word that is not a sign order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sign order {0:?}: expected \"case-insensitive\" or \"ascii\"")]
pub struct UnknownSignOrder(pub(crate) String);

impl std::str::FromStr for SignOrder {
    type Err = UnknownSignOrder;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "case-insensitive" => Ok(Self::CaseInsensitive),
            "ascii" => Ok(Self::Ascii),
            other => Err(UnknownSignOrder(other.to_owned())),
        }
    }
}

/// The text a JSON value contributes to the canonical string, or `None` when it is left out
/// (null and the empty string). Strings go in verbatim, numbers as their JSON text, booleans as
/// `true`/`false`; nested arrays and objects (never sent by this client) as compact JSON.
#[must_use]
pub(crate) fn param_text(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        None => None,
        Some(b'n') if text == "null" => None,
        Some(b'"') => {
            let s: String = serde_json::from_str(text).ok()?;
            (!s.is_empty()).then_some(s)
        }
        Some(b'{') | Some(b'[') => {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            Some(v.to_string())
        }
        Some(_) => Some(text.to_string()),
    }
}

/// Joins `(name, value)` pairs in `order` as `name=value&...`, leaving out empty values.
pub fn canonical_string<'a, I>(params: I, order: SignOrder) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    match order {
        SignOrder::Ascii => pairs.sort_by(|a, b| a.0.cmp(b.0)),
        // Compared byte by byte, lower-cased on the fly: no two strings allocated per comparison.
        SignOrder::CaseInsensitive => pairs.sort_by(|a, b| {
            let folded = |s: &'a str| s.bytes().map(|c| c.to_ascii_lowercase());
            folded(a.0).cmp(folded(b.0)).then_with(|| a.0.cmp(b.0))
        }),
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Lowercase hex MD5 of the canonical string followed directly by the API secret.
#[must_use]
pub fn request_signature(canonical: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(canonical.as_bytes());
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// The body's top-level fields with their canonical texts. A body that is not a JSON object
/// (the batch-sell array) contributes none.
pub fn body_params(body: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    let trimmed = body.trim_start();
    if !trimmed.starts_with('{') {
        return Ok(Vec::new());
    }
    let map: std::collections::BTreeMap<String, &RawValue> = serde_json::from_str(body)?;
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| param_text(v).map(|t| (k, t)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_order_interleaves_public_and_business_names() {
        let s = canonical_string(
            [
                ("orderNo", "1"),
                ("Nonce", "n"),
                ("name", "x"),
                ("MerchantNo", "m"),
            ],
            SignOrder::CaseInsensitive,
        );
        assert_eq!(s, "MerchantNo=m&name=x&Nonce=n&orderNo=1");
    }

    #[test]
    fn case_insensitive_order_puts_a_prefix_first_and_breaks_ties_by_bytes() {
        let s = canonical_string(
            [
                ("amountB", "3"),
                ("Amount", "2"),
                ("amount", "1"),
                ("AMOUNT_", "4"),
            ],
            SignOrder::CaseInsensitive,
        );
        assert_eq!(s, "Amount=2&amount=1&AMOUNT_=4&amountB=3");
    }

    #[test]
    fn ascii_order_puts_capitals_first() {
        let s = canonical_string(
            [
                ("orderNo", "1"),
                ("Nonce", "n"),
                ("name", "x"),
                ("MerchantNo", "m"),
            ],
            SignOrder::Ascii,
        );
        assert_eq!(s, "MerchantNo=m&Nonce=n&name=x&orderNo=1");
    }

    #[test]
    fn empty_and_null_values_are_left_out_and_numbers_keep_their_text() {
        let p = body_params(r#"{"a":"","b":null,"c":1.50,"d":true,"e":"x"}"#).unwrap();
        assert_eq!(
            p,
            vec![
                ("c".to_string(), "1.50".to_string()),
                ("d".to_string(), "true".to_string()),
                ("e".to_string(), "x".to_string())
            ]
        );
    }

    #[test]
    fn an_array_body_contributes_no_fields() {
        assert!(body_params(r#"[{"a":1}]"#).unwrap().is_empty());
    }
}
