//! What makes two holds the same ([`super::HoldKey`]): the deciding rule and the reason's sentence
//! with its numbers masked, quoted text (escaped quotes included) kept whole.

use super::HoldKey;

#[test]
fn a_hold_key_masks_the_numbers_of_a_reason_but_nothing_quoted() {
    let near = |n: &str| {
        format!(
            "no rule matched (nearest, \"tier 2\": window total would be {n} (limit 100 per 1day)); \
             the policy default applies"
        )
    };
    let a = HoldKey::of("(default)", &near("110"));
    assert_eq!(a, HoldKey::of("(default)", &near("1,234.50")));
    assert_eq!(
        a.kind,
        "no rule matched (nearest, \"tier 2\": window total would be # (limit # per #day)); \
         the policy default applies"
    );
    // Another rule, another nearest rule, another kind of reason: another hold.
    assert_ne!(a, HoldKey::of("(guard)", &near("110")));
    assert_ne!(
        a,
        HoldKey::of("(default)", &near("110").replace("tier 2", "tier 3"))
    );
    assert_ne!(a, HoldKey::of("(default)", &near("too large")));
    // Quoted text is kept whole, escaped quotes included: two addresses, two holds.
    let look = |addr: &str| {
        HoldKey::of(
            "(malformed)",
            &format!("toAddress {addr:?} is not canonical"),
        )
    };
    assert_ne!(look("T1\"2"), look("T1\"3"));
    assert_eq!(look("T12").kind, "toAddress \"T12\" is not canonical");
    assert_eq!(HoldKey::of("r", "clock 45 s ahead").kind, "clock # s ahead");
    assert_eq!(HoldKey::of("r", "v1.2.3 at 12:05.").kind, "v# at #:#.");
}

#[test]
fn a_number_after_a_quoted_text_with_an_escaped_quote_is_masked() {
    // The escaped quote does not close the text; the quote after it does, and what follows is
    // masked again: the same hold whatever the count.
    let reason = |n: &str| format!("rule \"a \\\"b\\\" c\": window count would be {n}");
    let a = HoldKey::of("(default)", &reason("4"));
    assert_eq!(a.kind, "rule \"a \\\"b\\\" c\": window count would be #");
    assert_eq!(a, HoldKey::of("(default)", &reason("5")));
}
