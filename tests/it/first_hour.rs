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

#[test]
fn a_cosigner_variable_that_maps_to_no_key_is_an_error_naming_the_nearest_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    let out = bin()
        .env("COSIGNER_POLL_INTERVAL", "5s")
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "environment variable COSIGNER_POLL_INTERVAL maps to no key: overrides are \
             COSIGNER_<SECTION>__<KEY>, with two underscores between section and key; the nearest \
             key is `poll.interval` (COSIGNER_POLL__INTERVAL)"
        ),
        "{text}"
    );
    // A mistyped section is named with its variable, not as a key of the file.
    let out = bin()
        .env("COSIGNER_POL__INTERVAL", "5s")
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("environment variable COSIGNER_POL__INTERVAL: key `pol`: unknown field"),
        "{text}"
    );
    // The variables that are not key overrides stay allowed.
    let out = bin()
        .env("COSIGNER_API_KEY", "cos_x")
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        !all_output(&out).contains("maps to no key"),
        "{}",
        all_output(&out)
    );
}

#[test]
fn ledger_list_before_the_first_run_says_the_daemon_creates_the_ledger() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    let out = bin()
        .args(["ledger", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no ledger yet at {}: the daemon creates it when it first starts (`cosigner run`, or \
             `systemctl start cosigner`) and records decisions from its first cycle",
            d.path().join("ledger.db").display()
        )),
        "{stderr}"
    );
    assert!(
        !d.path().join("ledger.db").exists(),
        "list must create nothing"
    );
    let out = bin()
        .args(["ledger", "list", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

fn demo_in(tmp: &Path, path_prefix: Option<&Path>, extra: &[&str]) -> (Option<i32>, String) {
    let mut c = bin();
    c.env("TMPDIR", tmp)
        .args(["demo", "--duration", "3s", "--poll-interval", "1s"])
        .args(extra);
    if let Some(p) = path_prefix {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![p.to_owned()];
        dirs.extend(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    let out = c.output().unwrap();
    (out.status.code(), all_output(&out))
}

fn demo_dirs(tmp: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cosigner-demo-")
        })
        .collect()
}

#[test]
fn the_demo_says_how_it_stops_removes_its_temp_dir_and_gives_hints_that_work() {
    let (code, help) = run(&["demo", "--help"]);
    assert_eq!(code, Some(0));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("runs until Ctrl-C unless --duration is given"),
        "{help}"
    );
    assert!(help.contains("--keep"), "{help}");

    // Without --keep, the temporary directory goes, and the hint says how to keep it; the
    // binary is a cargo build not on PATH, so the hint is a `cargo run` command.
    let tmp = tempfile::tempdir().unwrap();
    let (code, text) = demo_in(tmp.path(), None, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(demo_dirs(tmp.path()).is_empty(), "left behind:\n{text}");
    assert!(text.contains("Stops after 3s (or at Ctrl-C)."), "{text}");
    assert!(
        text.contains("195 (TRON)") && text.contains("56 (BSC)"),
        "{text}"
    );
    assert!(
        text.contains("run `cargo run -- demo --keep` to keep the files"),
        "{text}"
    );

    // With --keep and the binary on PATH, the hint is `cosigner ledger list --config …`, and
    // that very command works.
    let tmp = tempfile::tempdir().unwrap();
    let bindir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_cosigner"),
        bindir.path().join("cosigner"),
    )
    .unwrap();
    let (code, text) = demo_in(tmp.path(), Some(bindir.path()), &["--keep"]);
    assert_eq!(code, Some(0), "{text}");
    let dirs = demo_dirs(tmp.path());
    assert_eq!(dirs.len(), 1, "{text}");
    let config = dirs[0].join("cosigner.toml");
    let hint = format!(
        "look closer: cosigner ledger list --config {}",
        config.display()
    );
    assert!(text.contains(&hint), "{hint}\n{text}");

    // Item 8: the list shows chain, shortened destination and amount, and explains SEQ.
    let (code, list) = run(&["ledger", "list", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{list}");
    let header = list.lines().next().unwrap();
    for col in ["SEQ", "CHAIN", "TO", "AMOUNT", "ACTION", "RULE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        list.contains("195 (TRON)") && list.contains("TFMQrPdF…6xSopV"),
        "{list}"
    );
    assert!(
        list.contains(
            "SEQ numbers every ledger record: decisions (listed here), submission \
                       outcomes, collections and events (mode, policy) share one sequence"
        ),
        "{list}"
    );
    let (code, verify) = run(&["ledger", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{verify}");
    assert!(
        verify.contains("records (decisions ")
            && verify.contains(", submission outcomes ")
            && verify.contains(", collections ")
            && verify.contains(", mode and policy events "),
        "{verify}"
    );
}
