//! Address sets: EVM addresses (`0x` + 40 hex) compare case-insensitively, every other form byte
//! for byte, so a Tron address with a changed case, a look-alike letter or a space never matches.

use std::collections::HashSet;
use std::sync::Arc;

/// True for `0x` followed by exactly 40 ASCII hex digits.
pub fn is_evm_address(s: &str) -> bool {
    s.len() == 42 && s.starts_with("0x") && s.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
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
    pub fn contains(&self, addr: &str) -> bool {
        if is_evm_address(addr) {
            self.evm.contains(&addr.to_ascii_lowercase())
        } else {
            self.exact.contains(addr)
        }
    }

    /// Number of distinct addresses.
    pub fn len(&self) -> usize {
        self.exact.len() + self.evm.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    pub fn insert(&mut self, addr: &str) {
        self.own.insert(addr);
    }

    /// Adds a shared list.
    pub fn add_list(&mut self, list: Arc<AddressSet>) {
        self.lists.push(list);
    }

    /// Whether `addr` is among the rule's addresses or in one of its lists.
    pub fn contains(&self, addr: &str) -> bool {
        self.own.contains(addr) || self.lists.iter().any(|l| l.contains(addr))
    }

    /// Number of addresses (a list's addresses counted once per use).
    pub fn len(&self) -> usize {
        self.own.len() + self.lists.iter().map(|l| l.len()).sum::<usize>()
    }

    /// Whether it holds no address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
