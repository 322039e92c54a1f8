//! Addresses and chain ids: the canonical forms a transaction and a policy must use, and address
//! sets. EVM addresses (`0x` + 40 hex) compare case-insensitively, every other form byte for byte.
//! Anything not in canonical form is refused before it can be compared at all, so a look-alike
//! letter, a space or an invisible character can never make two addresses differ where a person
//! sees them equal (or the other way round).

use std::collections::HashSet;
use std::sync::Arc;

use openssl::sha::sha256;

/// The chain id of TRON, whose `T…` addresses carry a base58check checksum.
pub(crate) const TRON_CHAIN: &str = "195";

/// Longest chain id accepted (a `u64` has 20 digits).
const MAX_CHAIN_DIGITS: usize = 20;

/// True for `0x` followed by exactly 40 ASCII hex digits.
pub(crate) fn is_evm_address(s: &str) -> bool {
    s.len() == 42 && s.starts_with("0x") && s.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

/// Why `chain` is not a canonical chain id (`^[1-9][0-9]*$`), or `None` when it is.
#[must_use]
pub(crate) fn chain_problem(chain: &str) -> Option<String> {
    if chain.is_empty() {
        return Some("is empty".into());
    }
    if let Some((i, c)) = chain.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        return Some(format!(
            "has {} at character {}: a chain id is digits only",
            describe_char(c),
            i + 1
        ));
    }
    if chain.starts_with('0') {
        return Some("starts with 0: write a chain id without leading zeros".into());
    }
    if chain.len() > MAX_CHAIN_DIGITS {
        return Some(format!("is longer than {MAX_CHAIN_DIGITS} digits"));
    }
    None
}

/// Why `addr` is not a canonical address, or `None` when it is. `chain` is the transaction's
/// chain id when known (a `T…` address on TRON must pass base58check); `None` checks an address
/// written in a policy, where a TRON-shaped entry must pass it too.
#[must_use]
pub(crate) fn address_problem(addr: &str, chain: Option<&str>) -> Option<String> {
    if addr.is_empty() {
        return Some("is empty".into());
    }
    // The common case (ASCII letters and digits) byte by byte; characters only to name one.
    if !addr.bytes().all(|b| b.is_ascii_alphanumeric())
        && let Some((i, c)) = addr
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_alphanumeric())
    {
        return Some(format!(
            "has {} at character {}: an address is ASCII letters and digits only",
            describe_char(c),
            i + 1
        ));
    }
    if chain.is_none()
        && addr.len() == 42
        && addr.starts_with("41")
        && addr.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Some(
            "is TRON's hex form, which transactions never use: write the base58check `T…` form"
                .into(),
        );
    }
    if chain == Some(TRON_CHAIN) && !addr.starts_with('T') {
        // TRON also writes accounts in hex (`41…`, `0x…`); one account, one spelling.
        return Some("is not a TRON address: on chain 195 an address is base58check `T…`".into());
    }
    if addr.starts_with("0x") || addr.starts_with("0X") {
        if !is_evm_address(addr) {
            return Some(
                "starts like an EVM address but is not `0x` followed by exactly 40 hex digits"
                    .into(),
            );
        }
        return None;
    }
    if addr.len() == 40 && addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Otherwise it would compare unequal to the same account written `0x…` in a list.
        return Some("is 40 hex digits without `0x`: write an EVM address as `0x` + 40 hex".into());
    }
    let tron_checked = match chain {
        Some(c) => c == TRON_CHAIN,
        None => looks_like_tron(addr),
    };
    if tron_checked && !is_tron_address(addr) {
        return Some(
            "is not a valid TRON address (base58check: 34 characters, version 0x41, checksum)"
                .into(),
        );
    }
    None
}

/// 34 base58 characters starting with `T`: the shape of a TRON address.
fn looks_like_tron(addr: &str) -> bool {
    addr.len() == 34 && addr.starts_with('T') && addr.bytes().all(|b| base58_digit(b).is_some())
}

fn base58_digit(b: u8) -> Option<u8> {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    ALPHABET
        .iter()
        .position(|&a| a == b)
        .and_then(|p| u8::try_from(p).ok())
}

/// Decodes base58 (Bitcoin alphabet) into bytes; `None` for a character outside it.
fn base58_decode(s: &str) -> Option<Vec<u8>> {
    // Big-endian base-256 digits of the number, grown as needed.
    let mut bytes: Vec<u8> = Vec::with_capacity(s.len());
    for b in s.bytes() {
        let mut carry = u32::from(base58_digit(b)?);
        for byte in bytes.iter_mut().rev() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|&b| b == b'1').count();
    let mut out = vec![0u8; zeros];
    out.extend(bytes);
    Some(out)
}

/// True for a TRON address: base58check of 21 bytes starting 0x41, with its 4-byte checksum
/// (the first bytes of a double SHA-256).
#[must_use]
pub(crate) fn is_tron_address(addr: &str) -> bool {
    let Some(raw) = base58_decode(addr) else {
        return false;
    };
    if raw.len() != 25 || raw[0] != 0x41 {
        return false;
    }
    let (payload, check) = raw.split_at(21);
    sha256(&sha256(payload))[..4] == *check
}

/// `U+200B ZERO WIDTH SPACE`, or for printable ASCII the character quoted (`'-'`).
#[must_use]
pub(crate) fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        return format!("{c:?}");
    }
    let code = format!("U+{:04X}", u32::from(c));
    match char_name(c) {
        Some(name) => format!("{code} {name}"),
        None => code,
    }
}

/// Names of the characters that turn up in disguised addresses: invisible and space characters
/// and the letters that look like Latin ones. Others are shown by code point alone.
fn char_name(c: char) -> Option<&'static str> {
    Some(match c {
        ' ' => "SPACE",
        '\t' => "CHARACTER TABULATION",
        '\n' => "LINE FEED",
        '\r' => "CARRIAGE RETURN",
        '\0' => "NULL",
        '\u{a0}' => "NO-BREAK SPACE",
        '\u{ad}' => "SOFT HYPHEN",
        '\u{200b}' => "ZERO WIDTH SPACE",
        '\u{200c}' => "ZERO WIDTH NON-JOINER",
        '\u{200d}' => "ZERO WIDTH JOINER",
        '\u{200e}' => "LEFT-TO-RIGHT MARK",
        '\u{200f}' => "RIGHT-TO-LEFT MARK",
        '\u{202a}'..='\u{202e}' => "BIDIRECTIONAL FORMATTING CHARACTER",
        '\u{2060}' => "WORD JOINER",
        '\u{2066}'..='\u{2069}' => "BIDIRECTIONAL ISOLATE CHARACTER",
        '\u{feff}' => "ZERO WIDTH NO-BREAK SPACE (BOM)",
        '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}' => "SPACE CHARACTER",
        '\u{ff01}'..='\u{ff5e}' => "FULLWIDTH FORM",
        '\u{0430}' => "CYRILLIC SMALL LETTER A",
        '\u{0435}' => "CYRILLIC SMALL LETTER IE",
        '\u{043e}' => "CYRILLIC SMALL LETTER O",
        '\u{0440}' => "CYRILLIC SMALL LETTER ER",
        '\u{0441}' => "CYRILLIC SMALL LETTER ES",
        '\u{0445}' => "CYRILLIC SMALL LETTER HA",
        '\u{0443}' => "CYRILLIC SMALL LETTER U",
        '\u{0456}' => "CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I",
        '\u{0410}' => "CYRILLIC CAPITAL LETTER A",
        '\u{0412}' => "CYRILLIC CAPITAL LETTER VE",
        '\u{0415}' => "CYRILLIC CAPITAL LETTER IE",
        '\u{041a}' => "CYRILLIC CAPITAL LETTER KA",
        '\u{041c}' => "CYRILLIC CAPITAL LETTER EM",
        '\u{041d}' => "CYRILLIC CAPITAL LETTER EN",
        '\u{041e}' => "CYRILLIC CAPITAL LETTER O",
        '\u{0420}' => "CYRILLIC CAPITAL LETTER ER",
        '\u{0421}' => "CYRILLIC CAPITAL LETTER ES",
        '\u{0422}' => "CYRILLIC CAPITAL LETTER TE",
        '\u{0425}' => "CYRILLIC CAPITAL LETTER HA",
        '\u{03bf}' => "GREEK SMALL LETTER OMICRON",
        '\u{03b1}' => "GREEK SMALL LETTER ALPHA",
        '\u{039f}' => "GREEK CAPITAL LETTER OMICRON",
        '\u{0391}' => "GREEK CAPITAL LETTER ALPHA",
        '\u{0392}' => "GREEK CAPITAL LETTER BETA",
        '\u{0395}' => "GREEK CAPITAL LETTER EPSILON",
        '\u{0397}' => "GREEK CAPITAL LETTER ETA",
        '\u{039a}' => "GREEK CAPITAL LETTER KAPPA",
        '\u{039c}' => "GREEK CAPITAL LETTER MU",
        '\u{039d}' => "GREEK CAPITAL LETTER NU",
        '\u{03a1}' => "GREEK CAPITAL LETTER RHO",
        '\u{03a4}' => "GREEK CAPITAL LETTER TAU",
        '\u{03a7}' => "GREEK CAPITAL LETTER CHI",
        '\u{0131}' => "LATIN SMALL LETTER DOTLESS I",
        _ => return None,
    })
}

/// Where `addr` (not canonical) differs from an `entry` of the same length only in characters
/// that are not ASCII: the first such position (1-based) and character. That is a look-alike.
pub(crate) fn lookalike_of(addr: &str, entry: &str) -> Option<(usize, char)> {
    if addr.chars().count() != entry.chars().count() {
        return None;
    }
    let mut first = None;
    for (i, (a, e)) in addr.chars().zip(entry.chars()).enumerate() {
        if a == e
            || (a.is_ascii_alphanumeric() && a.eq_ignore_ascii_case(&e) && is_evm_address(entry))
        {
            continue;
        }
        if a.is_ascii() {
            return None;
        }
        first.get_or_insert((i + 1, a));
    }
    first
}

/// A set of addresses with the matching rule above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    exact: HashSet<String>,
    evm: HashSet<String>,
}

impl AddressSet {
    /// Adds one address.
    pub fn insert(&mut self, addr: &str) {
        if is_evm_address(addr) {
            self.evm.insert(addr.to_ascii_lowercase());
        } else {
            self.exact.insert(addr.to_string());
        }
    }

    /// Whether `addr` is in the set.
    #[must_use]
    pub fn contains(&self, addr: &str) -> bool {
        if is_evm_address(addr) {
            self.contains_key(&addr.to_ascii_lowercase(), true)
        } else {
            self.contains_key(addr, false)
        }
    }

    /// Whether the set holds `key`: an EVM address already lowercased (`evm`), or any other
    /// address as written.
    pub(crate) fn contains_key(&self, key: &str, evm: bool) -> bool {
        if evm {
            self.evm.contains(key)
        } else {
            self.exact.contains(key)
        }
    }

    /// Number of distinct addresses.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.evm.len()
    }

    /// Whether it holds no address.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.evm.is_empty()
    }

    /// Every address (EVM ones lowercased), in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.exact.iter().chain(self.evm.iter()).map(String::as_str)
    }
}

/// A rule's address condition: its own addresses plus named lists, shared (not copied) between
/// the rules that use them.
#[derive(Debug, Clone, Default)]
pub struct AddressMatcher {
    own: AddressSet,
    lists: Vec<Arc<AddressSet>>,
}

impl AddressMatcher {
    /// Adds one address of the rule's own.
    pub(crate) fn insert(&mut self, addr: &str) {
        self.own.insert(addr);
    }

    /// Adds a shared list.
    pub(crate) fn add_list(&mut self, list: Arc<AddressSet>) {
        self.lists.push(list);
    }

    /// The rule's own addresses (not those of its lists).
    #[must_use]
    pub(crate) fn own(&self) -> &AddressSet {
        &self.own
    }

    /// The shared lists it uses.
    pub(crate) fn lists(&self) -> &[Arc<AddressSet>] {
        &self.lists
    }

    /// Number of addresses (a list's addresses counted once per use).
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.own.len() + self.lists.iter().map(|l| l.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evm_addresses_match_in_any_case_and_others_only_exactly() {
        let mut s = AddressSet::default();
        s.insert("0x8617E340B3D01FA5F11F306F4090FD50E238070D");
        s.insert("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV");
        assert!(s.contains("0x8617e340b3d01fa5f11f306f4090fd50e238070d"));
        assert!(s.contains("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV"));
        assert!(!s.contains("tfmqrpdfwupzfrxb42sxb22abcvl6xsopv"));
        assert!(!s.contains("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV "));
        assert!(
            !s.contains("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSоpV"),
            "Cyrillic o"
        );
        assert!(
            !s.contains("0X8617E340B3D01FA5F11F306F4090FD50E238070D"),
            "0X is not EVM form"
        );
    }

    #[test]
    fn tron_addresses_pass_base58check_and_a_changed_character_fails_it() {
        for ok in [
            "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV",
            "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg",
            "TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G",
        ] {
            assert!(is_tron_address(ok), "{ok}");
            assert_eq!(address_problem(ok, Some(TRON_CHAIN)), None);
        }
        assert!(!is_tron_address("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW"));
        assert!(!is_tron_address("TBadBadBadBadBadBadBadBadBadBadBad1"));
        assert!(address_problem("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW", Some(TRON_CHAIN)).is_some());
        assert!(
            address_problem("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW", Some("56")).is_none(),
            "base58check is TRON's rule, not BSC's"
        );
        assert!(
            address_problem("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW", None).is_some(),
            "a TRON-shaped policy entry with a bad checksum is a typo"
        );
    }

    #[test]
    fn disguised_addresses_and_chain_ids_are_refused_with_the_character_named() {
        let t = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
        for (bad, named) in [
            (format!("{t} "), "SPACE"),
            (format!("{t}\u{a0}"), "U+00A0 NO-BREAK SPACE"),
            (
                "TFMQ\u{200b}rPdFWuPzFRXb42sxB22ABCVL6xSopV".to_string(),
                "U+200B ZERO WIDTH SPACE",
            ),
            (
                "TFMQ\u{200d}rPdFWuPzFRXb42sxB22ABCVL6xSopV".to_string(),
                "U+200D ZERO WIDTH JOINER",
            ),
            (format!("\u{feff}{t}"), "U+FEFF"),
            (
                "TFMQrPdFWuPzFRXb42sxB22ABCVL6xS\u{43e}pV".to_string(),
                "CYRILLIC SMALL LETTER O",
            ),
        ] {
            let p = address_problem(&bad, Some(TRON_CHAIN)).expect(&bad);
            assert!(p.contains(named), "{bad:?}: {p}");
        }
        let evm = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";
        assert_eq!(address_problem(evm, Some("56")), None);
        assert!(address_problem(&evm.replacen("0x", "0X", 1), Some("56")).is_some());
        assert!(address_problem(&evm[..41], Some("56")).is_some());
        assert!(address_problem("0x", Some("56")).is_some());
        for chain in ["1", "56", "195", "18446744073709551615"] {
            assert_eq!(chain_problem(chain), None, "{chain}");
        }
        for chain in [
            "",
            "0",
            "056",
            " 56",
            "56 ",
            "56\u{200b}",
            "+56",
            "5.6",
            "\u{ff15}\u{ff16}",
        ] {
            assert!(chain_problem(chain).is_some(), "{chain:?}");
        }
    }

    #[test]
    fn a_lookalike_is_found_only_where_the_differences_are_not_ascii() {
        let t = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
        let fake = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xS\u{43e}pV";
        assert_eq!(lookalike_of(fake, t), Some((32, '\u{43e}')));
        assert_eq!(lookalike_of("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW", t), None);
        assert_eq!(lookalike_of(&format!("{t} "), t), None);
    }
}
