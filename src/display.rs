//! How values are shown to a person: chain names, shortened addresses, windows as written,
//! log field values without Rust `Debug` syntax, and digests as lowercase hex.

use std::collections::BTreeMap;
use std::time::Duration;

/// Chain names known without a `[chains]` table in the policy (chainId → name).
pub(crate) const DEFAULT_CHAINS: &[(&str, &str)] = &[
    ("1", "Ethereum"),
    ("10", "Optimism"),
    ("56", "BSC"),
    ("137", "Polygon"),
    ("195", "TRON"),
    ("8453", "Base"),
    ("42161", "Arbitrum"),
    ("43114", "Avalanche"),
];

/// The names of chains, by `chainId`: the built-in ones, extended or overridden by the policy's
/// `[chains]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainNames(BTreeMap<String, String>);

impl Default for ChainNames {
    fn default() -> Self {
        Self(
            DEFAULT_CHAINS
                .iter()
                .map(|(id, name)| (id.to_string(), name.to_string()))
                .collect(),
        )
    }
}

impl ChainNames {
    /// The built-in names plus `extra` (which wins on the same id).
    pub(crate) fn with(extra: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut names = Self::default();
        names.0.extend(extra);
        names
    }

    /// The name of `chain_id`, when known.
    pub(crate) fn name(&self, chain_id: &str) -> Option<&str> {
        self.0.get(chain_id).map(String::as_str)
    }

    /// `195 (TRON)`, or the bare id when the chain has no name.
    #[must_use]
    pub fn label(&self, chain_id: &str) -> String {
        match self.name(chain_id) {
            Some(n) => format!("{chain_id} ({n})"),
            None => chain_id.to_string(),
        }
    }
}

/// The first 8 and last 6 characters of a long address (`TFMQrPdF…6xSopV`); short ones whole.
#[must_use]
pub fn short_address(addr: &str) -> String {
    let chars: Vec<char> = addr.chars().collect();
    if chars.len() <= 16 {
        return addr.to_string();
    }
    format!(
        "{}…{}",
        chars[..8].iter().collect::<String>(),
        chars[chars.len() - 6..].iter().collect::<String>()
    )
}

/// A window as a person writes it in a policy: `24h`, `90m`, `30s` (the largest unit that divides
/// it evenly; hours rather than days, as the examples write `24h`).
#[must_use]
pub(crate) fn window(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A log field value for text logs: as is when it is one plain word, else in double quotes with
/// `"` and `\` escaped, so that `reason="no rule matched"` reads as one value.
#[must_use]
pub(crate) fn log_value(text: &str) -> String {
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
    if plain {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lowercase hex of `bytes`.
#[must_use]
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_named_and_the_policy_table_extends_and_overrides_them() {
        let names = ChainNames::with([
            ("728126428".to_string(), "TRON mainnet".to_string()),
            ("56".to_string(), "BNB Smart Chain".to_string()),
        ]);
        assert_eq!(names.label("195"), "195 (TRON)");
        assert_eq!(names.label("1"), "1 (Ethereum)");
        assert_eq!(names.label("56"), "56 (BNB Smart Chain)");
        assert_eq!(names.label("728126428"), "728126428 (TRON mainnet)");
        assert_eq!(names.label("999"), "999");
    }

    #[test]
    fn windows_print_as_a_policy_writes_them() {
        assert_eq!(window(Duration::from_secs(86_400)), "24h");
        assert_eq!(window(Duration::from_secs(3600)), "1h");
        assert_eq!(window(Duration::from_secs(5400)), "90m");
        assert_eq!(window(Duration::from_secs(45)), "45s");
        assert_eq!(window(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn log_values_with_spaces_or_quotes_are_quoted() {
        assert_eq!(log_value("approve"), "approve");
        assert_eq!(
            log_value("no rule matched"),
            "\"no rule matched\"".to_string()
        );
        assert_eq!(log_value("a \"b\""), "\"a \\\"b\\\"\"");
        assert_eq!(log_value(""), "\"\"");
    }

    #[test]
    fn long_addresses_are_shortened_in_the_middle() {
        assert_eq!(
            short_address("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV"),
            "TFMQrPdF…6xSopV"
        );
        assert_eq!(short_address("0xabc"), "0xabc");
    }
}
