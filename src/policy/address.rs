//! Addresses and chain ids: the canonical forms a transaction and a policy must use, the account
//! an address names, and address sets. Anything not in canonical form is refused before it can
//! be compared at all, so a look-alike letter, a space or an invisible character can never make
//! two addresses differ where a person sees them equal (or the other way round).
//!
//! One account, one identity, whatever the spelling or the chain id: a base58check TRON address
//! (`T…`), its hex form (`41…`) and a `0x…` address of the same 20 bytes name one account. The
//! chain id says nothing about the format (1BitPay numbers chains its own way), unless the
//! policy's `[chains]` table gives a chain a `format`.

use std::collections::HashSet;
use std::sync::Arc;

/// Longest chain id accepted (a `u64` has 20 digits).
const MAX_CHAIN_DIGITS: usize = 20;

/// TRON's version byte: the first of the 21 bytes a `T…` address encodes, and the `41` of its
/// hex form.
const TRON_VERSION: u8 = 0x41;

/// The address format a policy's `[chains]` table may require of a chain's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `0x` followed by 40 hex digits.
    Evm,
    /// Base58check `T…` (34 characters, version 0x41, checksum).
    Tron,
}

impl Format {
    /// The form, in words, for an error or a hold's reason.
    fn describe(self) -> &'static str {
        match self {
            Format::Evm => "`0x` + 40 hex digits",
            Format::Tron => "base58check `T…`",
        }
    }

    /// Whether `addr` (canonical) is written in this format.
    fn fits(self, addr: &str) -> bool {
        match self {
            Format::Evm => is_evm_address(addr),
            Format::Tron => looks_like_tron(addr),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "evm" => Ok(Format::Evm),
            "tron" => Ok(Format::Tron),
            other => Err(format!("format must be \"evm\" or \"tron\", not {other:?}")),
        }
    }
}

/// True for `0x` followed by exactly 40 ASCII hex digits.
pub(crate) fn is_evm_address(s: &str) -> bool {
    s.len() == 42 && s.starts_with("0x") && s.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

/// True for TRON's hex form: `41` followed by 40 hex digits (42 in all).
fn is_tron_hex(s: &str) -> bool {
    s.len() == 42 && s.starts_with("41") && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the address is spelled in hex (`0x…` or `41…`): such spellings compare without
/// regard to case.
pub(crate) fn is_hex_spelling(s: &str) -> bool {
    is_evm_address(s) || is_tron_hex(s)
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

/// Why `addr` is not a canonical address, or `None` when it is. `format` is the one the
/// policy's `[chains]` table requires of the transaction's chain, when it requires one (a
/// policy entry is checked with `None`). A `T…` address must pass base58check on every chain:
/// a bad checksum is a typo, or an attempt to look like an account.
#[must_use]
pub(crate) fn address_problem(addr: &str, format: Option<Format>) -> Option<String> {
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
    if (addr.starts_with("0x") || addr.starts_with("0X")) && !is_evm_address(addr) {
        return Some(
            "starts like an EVM address but is not `0x` followed by exactly 40 hex digits".into(),
        );
    }
    if addr.len() == 40 && addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Otherwise it would compare unequal to the same account written `0x…` in a list.
        return Some("is 40 hex digits without `0x`: write an EVM address as `0x` + 40 hex".into());
    }
    if looks_like_tron(addr) && tron_account(addr).is_none() {
        return Some(
            "is not a valid TRON address (base58check: 34 characters, version 0x41, checksum)"
                .into(),
        );
    }
    if let Some(f) = format
        && !f.fits(addr)
    {
        return Some(format!(
            "is not {}, the format the policy's [chains] table gives this chain",
            f.describe()
        ));
    }
    None
}

/// 34 base58 characters starting with `T`: the shape of a TRON address.
fn looks_like_tron(addr: &str) -> bool {
    addr.len() == 34 && addr.starts_with('T') && addr.bytes().all(|b| base58_digit(b).is_some())
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn base58_digit(b: u8) -> Option<u8> {
    BASE58
        .iter()
        .position(|&a| a == b)
        .and_then(|p| u8::try_from(p).ok())
}

/// The account of a TRON address: base58check (the `bs58` crate: its checksum is the first 4
/// bytes of a double SHA-256) of 21 bytes starting 0x41; `None` when it is not one. Decoded onto
/// the stack: a look-up allocates nothing.
fn tron_account(addr: &str) -> Option<[u8; 20]> {
    if addr.len() != 34 {
        return None;
    }
    // 34 base58 digits are below 2^200: at most 25 bytes, the checksum's 4 included.
    let mut raw = [0u8; 25];
    let len = bs58::decode(addr)
        .with_check(Some(TRON_VERSION))
        .onto(&mut raw[..])
        .ok()?;
    if len != 21 {
        return None;
    }
    let mut account = [0u8; 20];
    account.copy_from_slice(&raw[1..21]);
    Some(account)
}

/// The `T…` spelling of an account.
fn tron_spelling(account: &[u8; 20]) -> String {
    let mut raw = [0u8; 21];
    raw[0] = TRON_VERSION;
    raw[1..].copy_from_slice(account);
    bs58::encode(raw).with_check().into_string()
}

/// The 20 bytes of 40 hex digits.
fn hex_account(hex: &[u8]) -> Option<[u8; 20]> {
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut account = [0u8; 20];
    for (byte, pair) in account.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(account)
}

/// The account a canonical address names: the 20 bytes of a `T…`, `41…` or `0x…` spelling;
/// `None` for any other form, which is compared by its spelling alone.
#[must_use]
pub(crate) fn account_of(addr: &str) -> Option<[u8; 20]> {
    if is_hex_spelling(addr) {
        hex_account(&addr.as_bytes()[2..])
    } else if looks_like_tron(addr) {
        tron_account(addr)
    } else {
        None
    }
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

/// The key a spelling is compared by: hex spellings (`0x…`, `41…`) lowercased, as hex has no
/// case; others as written.
fn spelling_key(addr: &str) -> std::borrow::Cow<'_, str> {
    if is_hex_spelling(addr) && addr.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(addr.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(addr)
    }
}

/// A set of addresses, answering two questions: is this spelling in it (what an approve rule
/// asks), and is this account in it, however spelled (what a reject or hold rule asks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    /// Each entry's spelling (see [`spelling_key`]).
    spellings: HashSet<String>,
    /// The accounts of the entries that name one.
    accounts: HashSet<[u8; 20]>,
}

impl AddressSet {
    /// Adds one address.
    pub fn insert(&mut self, addr: &str) {
        if let Some(a) = account_of(addr) {
            self.accounts.insert(a);
        }
        self.spellings.insert(spelling_key(addr).into_owned());
    }

    /// Whether `addr` is in the set as spelled (hex spellings in any case).
    #[must_use]
    pub fn contains(&self, addr: &str) -> bool {
        self.contains_key(&spelling_key(addr))
    }

    /// Whether the set holds the spelling `key` (hex already lowercased).
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.spellings.contains(key)
    }

    /// Whether the set names `account`, in any spelling.
    pub(crate) fn contains_account(&self, account: &[u8; 20]) -> bool {
        self.accounts.contains(account)
    }

    /// The entry naming `account`, as the set keeps it.
    pub(crate) fn entry_of(&self, account: &[u8; 20]) -> Option<String> {
        if !self.contains_account(account) {
            return None;
        }
        let hex = crate::display::hex(account);
        [
            tron_spelling(account),
            format!("0x{hex}"),
            format!("41{hex}"),
        ]
        .into_iter()
        .find(|s| self.spellings.contains(s))
    }

    /// Number of distinct spellings.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.spellings.len()
    }

    /// Every spelling (hex ones lowercased), in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.spellings.iter().map(String::as_str)
    }
}

/// A rule's address condition: its own addresses plus named lists, shared (not copied) between
/// the rules that use them.
#[derive(Debug, Clone, Default)]
pub struct AddressMatcher {
    own: AddressSet,
    lists: Vec<(String, Arc<AddressSet>)>,
}

impl AddressMatcher {
    /// Adds one address of the rule's own.
    pub(crate) fn insert(&mut self, addr: &str) {
        self.own.insert(addr);
    }

    /// Adds the shared list `name`.
    pub(crate) fn add_list(&mut self, name: &str, list: Arc<AddressSet>) {
        self.lists.push((name.to_owned(), list));
    }

    /// The rule's own addresses (not those of its lists).
    #[must_use]
    pub(crate) fn own(&self) -> &AddressSet {
        &self.own
    }

    /// The shared lists it uses, with their names.
    pub(crate) fn lists(&self) -> &[(String, Arc<AddressSet>)] {
        &self.lists
    }

    /// Where `account` is named (`list "treasury" entry T…`, or `entry T…` for the rule's own),
    /// for a person reading why another spelling of it was held.
    pub(crate) fn entry_naming(&self, account: &[u8; 20]) -> Option<String> {
        if let Some(e) = self.own.entry_of(account) {
            return Some(format!("entry {e}"));
        }
        self.lists.iter().find_map(|(name, l)| {
            l.entry_of(account)
                .map(|e| format!("list {name:?} entry {e}"))
        })
    }

    /// Number of addresses (a list's addresses counted once per use).
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.own.len() + self.lists.iter().map(|(_, l)| l.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRON: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
    /// `TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7` in TRON's hex form.
    const BAD_HEX: &str = "4111aadff433d1db4f33f03525a66853ce968fb339";

    #[test]
    fn hex_spellings_match_in_any_case_and_others_only_exactly() {
        let mut s = AddressSet::default();
        s.insert("0x8617E340B3D01FA5F11F306F4090FD50E238070D");
        s.insert(TRON);
        assert!(s.contains("0x8617e340b3d01fa5f11f306f4090fd50e238070d"));
        assert!(s.contains(TRON));
        assert!(!s.contains("tfmqrpdfwupzfrxb42sxb22abcvl6xsopv"));
        assert!(!s.contains(&format!("{TRON} ")));
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
    fn the_three_spellings_of_one_account_are_one_account() {
        let bad = "TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7";
        let evm = format!("0x{}", &BAD_HEX[2..]);
        let acct = account_of(bad).unwrap();
        assert_eq!(account_of(BAD_HEX), Some(acct));
        assert_eq!(account_of(&evm), Some(acct));
        assert_eq!(
            account_of(&evm.to_ascii_uppercase().replacen("0X", "0x", 1)),
            Some(acct)
        );
        assert_eq!(tron_spelling(&acct), bad);
        let mut s = AddressSet::default();
        s.insert(bad);
        assert!(s.contains_account(&acct));
        assert!(!s.contains(&evm), "another spelling is not this spelling");
        assert_eq!(s.entry_of(&acct).as_deref(), Some(bad));
        let mut h = AddressSet::default();
        h.insert(&BAD_HEX.to_ascii_uppercase());
        assert_eq!(h.entry_of(&acct), Some(BAD_HEX.to_string()));
        assert_eq!(
            account_of("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"),
            None
        );
    }

    #[test]
    fn tron_addresses_pass_base58check_on_every_chain() {
        for ok in [
            TRON,
            "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg",
            "TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G",
        ] {
            assert!(tron_account(ok).is_some(), "{ok}");
            assert_eq!(address_problem(ok, None), None);
            assert_eq!(address_problem(ok, Some(Format::Tron)), None);
        }
        let typo = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW";
        assert!(tron_account(typo).is_none());
        assert!(tron_account("TBadBadBadBadBadBadBadBadBadBadBad1").is_none());
        assert!(
            address_problem(typo, None).is_some(),
            "a bad checksum is refused whatever the chain"
        );
        assert!(
            address_problem(BAD_HEX, None).is_none(),
            "TRON's hex form is a spelling"
        );
    }

    #[test]
    fn a_chain_format_refuses_the_other_spellings() {
        let evm = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";
        assert!(address_problem(evm, Some(Format::Tron)).is_some());
        assert!(address_problem(BAD_HEX, Some(Format::Tron)).is_some());
        assert!(address_problem(TRON, Some(Format::Evm)).is_some());
        assert!(address_problem(BAD_HEX, Some(Format::Evm)).is_some());
        assert!(address_problem(evm, Some(Format::Evm)).is_none());
        assert!(address_problem(evm, None).is_none());
    }

    #[test]
    fn disguised_addresses_and_chain_ids_are_refused_with_the_character_named() {
        let t = TRON;
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
            let p = address_problem(&bad, None).expect(&bad);
            assert!(p.contains(named), "{bad:?}: {p}");
        }
        let evm = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";
        assert_eq!(address_problem(evm, None), None);
        assert!(address_problem(&evm.replacen("0x", "0X", 1), None).is_some());
        assert!(address_problem(&evm[..41], None).is_some());
        assert!(address_problem("0x", None).is_some());
        assert!(
            address_problem(&evm[2..], None).is_some(),
            "40 hex without 0x"
        );
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
        let t = TRON;
        let fake = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xS\u{43e}pV";
        assert_eq!(lookalike_of(fake, t), Some((32, '\u{43e}')));
        assert_eq!(lookalike_of("TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW", t), None);
        assert_eq!(lookalike_of(&format!("{t} "), t), None);
        // An ASCII difference beside the non-ASCII one: a typo, not a look-alike.
        assert_eq!(
            lookalike_of("TFMQrPdFWuPzFRXb42sxB22ABCVL6xS\u{43e}pW", t),
            None
        );
        // An EVM entry (kept lowercased) is imitated in any case.
        let evm = "0x8617e340b3d01fa5f11f306f4090fd50e238070d";
        assert_eq!(
            lookalike_of("0x8617\u{435}340B3D01FA5F11F306F4090FD50E238070D", evm),
            Some((7, '\u{435}'))
        );
        assert_eq!(
            lookalike_of("0x8617\u{435}340B3D01FA5F11F306F4090FD50E238070C", evm),
            None
        );
    }

    #[test]
    fn an_address_of_the_wrong_format_for_its_chain_is_told_the_format() {
        assert_eq!(
            address_problem(TRON, Some(Format::Evm)).as_deref(),
            Some(
                "is not `0x` + 40 hex digits, the format the policy's [chains] table gives this chain"
            )
        );
        assert_eq!(
            address_problem(BAD_HEX, Some(Format::Tron)).as_deref(),
            Some(
                "is not base58check `T…`, the format the policy's [chains] table gives this chain"
            )
        );
    }

    #[test]
    fn a_rule_s_address_count_is_its_own_addresses_plus_each_list_s() {
        let mut list = AddressSet::default();
        for a in [TRON, BAD_HEX, "0x8617E340B3D01FA5F11F306F4090FD50E238070D"] {
            list.insert(a);
        }
        let mut m = AddressMatcher::default();
        m.insert("TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg");
        m.insert("TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G");
        m.add_list("treasury", Arc::new(list));
        assert_eq!(m.len(), 5);
    }
}
