//! The operator's first hour (issue 12): every friction a new operator met, each asserted as the
//! text the operator sees from the real binary.

use std::path::Path;

use crate::support::*;

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = bin().args(args).output().unwrap();
    (out.status.code(), all_output(&out))
}

#[test]
fn a_policy_type_error_names_file_rule_and_key_in_plain_words() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy.toml");
    std::fs::write(
        &p,
        "[[rule]]\nname = \"payouts\"\naction = \"approve\"\nwindow = \"24h\"\nmax_count = \"50\"\n",
    )
    .unwrap();
    let (code, text) = run(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "policy file {}: rule \"payouts\": key `max_count`: must be a whole number without \
             quotes, such as max_count = 50, not the text \"50\"",
            p.display()
        )),
        "{text}"
    );
    assert!(!text.contains("expected i64"), "{text}");
    for (body, want) in [
        (
            "[[rule]]\nname = \"x\"\naction = \"approve\"\nchains = [56]\n",
            "rule \"x\": key `chains`: entry 1 must be text in quotes, such as \"195\", not the number 56",
        ),
        (
            "[guard]\nwindow = 3600\nmax_approvals = 1\n",
            "[guard]: key `window`: must be text in quotes, such as window = \"24h\", not the number 3600",
        ),
        (
            "default = true\n",
            "key `default`: must be text in quotes, such as default = \"hold\", not true",
        ),
    ] {
        std::fs::write(&p, body).unwrap();
        let (code, text) = run(&["policy", "check", p.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(want), "{body}\n{text}");
    }
}

#[test]
fn the_policy_chains_table_extends_the_built_in_chain_names() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy.toml");
    std::fs::write(
        &p,
        "[chains]\n728126428 = \"TRON (new id)\"\n56 = \"BNB Smart Chain\"\n",
    )
    .unwrap();
    let policy = cosigner::policy::load(&p).unwrap();
    assert_eq!(policy.chains.label("195"), "195 (TRON)");
    assert_eq!(policy.chains.label("1"), "1 (Ethereum)");
    assert_eq!(policy.chains.label("56"), "56 (BNB Smart Chain)");
    assert_eq!(
        policy.chains.label("728126428"),
        "728126428 (TRON (new id))"
    );
    std::fs::write(&p, "[chains]\n195 = 195\n").unwrap();
    let (code, text) = run(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("[chains]: key `195`: must be the chain's name in quotes"),
        "{text}"
    );
}
