//! Exact amounts: decimals parsed from their text, never through `f64`.

use rust_decimal::Decimal;

/// Parses a plain decimal (digits, one optional point, optional leading minus) exactly.
/// Exponents, `NaN`, hex and spaces are refused.
#[must_use]
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let plain = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (!body.contains('.') || !frac.is_empty())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return None;
    }
    Decimal::from_str_exact(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals_parse_and_other_notations_do_not() {
        assert_eq!(parse_decimal("6.47"), Some(Decimal::new(647, 2)));
        for bad in ["1e3", "NaN", "", "0x10", " 1", "1.", ".5", "+1", "1_0"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }
}
