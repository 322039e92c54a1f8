//! `cosigner policy check` on list entries that could never match (the policy's semantics are
//! unit tests: `src/policy/semantics_tests.rs`).

const TREASURY_TRON: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
const BAD: &str = "TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7";

#[test]
fn policy_check_refuses_list_entries_that_could_never_match_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let inline = dir.path().join("inline.toml");
    std::fs::write(
        &inline,
        format!(
            "default = \"hold\"\n[lists]\ntreasury = [\n  \"{TREASURY_TRON}\",\n  \"TFMQ\u{200b}rPdFWuPzFRXb42sxB22ABCVL6xSopV\",\n]\n"
        ),
    )
    .unwrap();
    let from_file = dir.path().join("file.toml");
    std::fs::write(
        &from_file,
        "default = \"hold\"\n[lists]\nblocked = { file = \"blocked.txt\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("blocked.txt"),
        format!("# known bad\n{BAD}\n0x8617E340B3D01FA5F11F306F4090FD50E23807\n"),
    )
    .unwrap();
    let chains = dir.path().join("chains.toml");
    std::fs::write(
        &chains,
        "[[rule]]\nname = \"bsc\"\naction = \"reject\"\nchains = [\"056\"]\n",
    )
    .unwrap();
    for (file, needles) in [
        (
            &inline,
            &[
                "list \"treasury\", line 5",
                "U+200B ZERO WIDTH SPACE at character 5",
                "could never match",
            ][..],
        ),
        (
            &from_file,
            &["list \"blocked\"", "blocked.txt line 3", "40 hex digits"][..],
        ),
        (
            &chains,
            &["rule \"bsc\"", "`chains`", "\"056\"", "leading zeros"][..],
        ),
    ] {
        let out = crate::support::bin()
            .args(["policy", "check"])
            .arg(file)
            .output()
            .unwrap();
        let text = crate::support::all_output(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        for n in needles {
            assert!(text.contains(n), "{} lacks {n:?}: {text}", file.display());
        }
    }
}
