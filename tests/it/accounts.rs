//! One account, one identity, whatever the spelling or the chain id (issue 19, repro 6): a
//! base58check `T…` address, its hex form `41…` and `0x…` of the same 20 bytes are one account.
//! A reject rule catches every spelling on every chain; an approve rule matches only the
//! spelling it names, and holds another one for a person; a `T…` address passes base58check on
//! every chain; a chain's format is enforced only where the policy's `[chains]` table gives it.

use cosigner::domain::Action;

use crate::support::*;

/// `BAD` (TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7) in TRON's hex form.
const BAD_HEX: &str = "4111aadff433d1db4f33f03525a66853ce968fb339";
/// `TREASURY` (TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV) in TRON's hex form.
const TREASURY_HEX: &str = "413b0bac23ab4e83bf76c089090322c5172397f9c1";
/// The chain id the project's own example once named "TRON (EVM id)".
const TRON_EVM_ID: &str = "728126428";

fn evm_of(tron_hex: &str) -> String {
    format!("0x{}", &tron_hex[2..])
}

/// A reject rule for a blocked TRON account, an approve rule for a treasury list, then an
/// approve rule bounded only by amount: whatever slips past the first two is approved.
fn policy(chains: &str) -> String {
    format!(
        r#"default = "hold"
[lists]
blocked = ["{BAD}"]
treasury = ["{TREASURY}"]
[[rule]]
name = "blocked"
action = "reject"
to = ["@blocked"]
[[rule]]
name = "treasury"
action = "approve"
to = ["@treasury"]
max_amount = "1000000"
[[rule]]
name = "small"
action = "approve"
max_amount = "100"
{chains}"#
    )
}

#[tokio::test]
async fn a_blocked_tron_account_in_any_spelling_on_any_chain_is_rejected_never_approved() {
    let evm = evm_of(BAD_HEX);
    let upper = format!("0x{}", BAD_HEX[2..].to_ascii_uppercase());
    let mut items = Vec::new();
    let mut id = 0;
    for chain in [TRON_EVM_ID, "195", "1", "56", "20"] {
        for to in [BAD, BAD_HEX, evm.as_str(), upper.as_str()] {
            id += 1;
            items.push(item(TxId::new(id), HOT, to, "1", chain));
        }
    }
    let n = items.len();
    let sb = start_sandbox(scenario(items)).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &policy(""), small_pages());
    e.cycle_once().await.unwrap();
    let rows = rows(&e).await;
    assert_eq!(rows.len(), n);
    for r in &rows {
        assert_eq!(
            (r.action, r.rule.as_str()),
            (Action::Reject, "blocked"),
            "tx {} to {:?}: {}",
            r.tx_id,
            r.to,
            r.reason
        );
    }
    assert_eq!(approved_ids(&sb), Vec::<TxId>::new());
}

#[tokio::test]
async fn another_spelling_of_an_allow_listed_account_is_held_for_a_person_not_approved() {
    let unrelated = "0x5ef7ef4d6f6e80c9d34e1f15ea0d1b0d2c6f0ab3";
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, TREASURY, "500", TRON_EVM_ID),
        item(TxId::new(2), HOT, &evm_of(TREASURY_HEX), "500", TRON_EVM_ID),
        item(TxId::new(3), HOT, TREASURY_HEX, "5", TRON_EVM_ID),
        item(TxId::new(4), HOT, unrelated, "5", "1"),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &policy(""), small_pages());
    e.cycle_once().await.unwrap();
    let rows = rows(&e).await;
    let of = |n: u64| rows.iter().find(|r| r.tx_id == TxId::new(n)).unwrap();
    assert_eq!(
        (of(1).action, of(1).rule.as_str()),
        (Action::Approve, "treasury")
    );
    for n in [2, 3] {
        let r = of(n);
        assert_eq!(
            (r.action, r.rule.as_str()),
            (Action::Hold, "(spelling)"),
            "tx {n}: {}",
            r.reason
        );
        assert!(
            r.reason.contains(&format!(
                "is another spelling of list \"treasury\" entry {TREASURY}"
            )),
            "{}",
            r.reason
        );
    }
    // An unrelated account, small: the catch-all approves it.
    assert_eq!(
        (of(4).action, of(4).rule.as_str()),
        (Action::Approve, "small")
    );
    assert_eq!(approved_ids(&sb), ids([1, 4]));
}

#[tokio::test]
async fn a_tron_address_with_a_bad_checksum_is_held_on_every_chain() {
    let typo = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopW";
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, typo, "1", TRON_EVM_ID),
        item(TxId::new(2), HOT, typo, "1", "56"),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &policy(""), small_pages());
    e.cycle_once().await.unwrap();
    for r in rows(&e).await {
        assert_eq!((r.action, r.rule.as_str()), (Action::Hold, "(malformed)"));
        assert!(
            r.reason.contains("not a valid TRON address"),
            "{}",
            r.reason
        );
    }
}

#[tokio::test]
async fn a_chain_format_from_the_policy_holds_other_spellings_on_that_chain_only() {
    let chains = "[chains]\n195 = { name = \"TRON\", format = \"tron\" }\n";
    let stranger_evm = "0x00000000000000000000000000000000000000aa";
    let sb = start_sandbox(scenario(vec![
        item(TxId::new(1), HOT, stranger_evm, "1", "195"),
        item(TxId::new(2), HOT, STRANGER, "1", "195"),
        item(TxId::new(3), HOT, stranger_evm, "1", "56"),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(dir.path(), &sb.url, &policy(chains), small_pages());
    e.cycle_once().await.unwrap();
    let rows = rows(&e).await;
    let of = |n: u64| rows.iter().find(|r| r.tx_id == TxId::new(n)).unwrap();
    assert_eq!(of(1).action, Action::Hold);
    assert!(
        of(1)
            .reason
            .contains("the format the policy's [chains] table gives this chain"),
        "{}",
        of(1).reason
    );
    assert_eq!(of(2).action, Action::Approve);
    assert_eq!(of(3).action, Action::Approve, "no format is assumed for 56");

    // A rule for that chain only cannot name an address of the other format.
    let bad = format!(
        "{chains}[[rule]]\nname = \"x\"\naction = \"reject\"\nchains = [\"195\"]\nto = [\"{stranger_evm}\"]\n"
    );
    let path = dir.path().join("p.toml");
    std::fs::write(&path, bad).unwrap();
    let err = cosigner::policy::load(&path).unwrap_err().to_string();
    assert!(err.contains("it could never match a transaction"), "{err}");
    // An unknown format is an error naming the key.
    std::fs::write(
        &path,
        "[chains]\n195 = { name = \"TRON\", format = \"base58\" }\n",
    )
    .unwrap();
    let err = cosigner::policy::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("[chains]: key `195`") && err.contains("\"evm\" or \"tron\""),
        "{err}"
    );
}
