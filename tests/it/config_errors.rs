//! Bad configuration and key files: each gets a clear message naming the file or key, exit code
//! 2, and no secret in any output.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

/// A password canary: it must never be printed.
const WRONG_PASSWORD: &str = "CANARY-wrong-pfx-password-41d7";

/// Runs `cosigner check` (at trace level, to catch secrets in logs) and returns (code, output).
fn check(config: &Path) -> (Option<i32>, String) {
    let out = bin()
        .env("RUST_LOG", "trace")
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert!(!text.contains(API_SECRET), "API secret leaked:\n{text}");
    assert!(!text.contains(PFX_PASSWORD), "key password leaked:\n{text}");
    assert!(
        !text.contains(WRONG_PASSWORD),
        "password file content leaked:\n{text}"
    );
    (out.status.code(), text)
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http://127.0.0.1:9");
    (dir, cfg)
}

#[test]
fn a_valid_config_passes_check_offline() {
    let (_d, cfg) = setup();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ok    key:") && text.contains("2048-bit RSA"),
        "{text}"
    );
}

#[test]
fn a_wrong_pkcs12_password_is_reported_with_exit_code_2() {
    let (d, cfg) = setup();
    std::fs::write(d.path().join("pw"), WRONG_PASSWORD).unwrap();
    edit(
        &cfg,
        "pfx_file = \"keytool-aes.pfx\"",
        "pfx_file = \"keytool-aes.pfx\"\npassword_file = \"pw\"",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("wrong password") && text.contains("keytool-aes.pfx"),
        "{text}"
    );
}

#[test]
fn a_corrupt_key_file_is_reported_with_exit_code_2() {
    let (d, cfg) = setup();
    let pfx = d.path().join("keytool-aes.pfx");
    let mut bytes = std::fs::read(&pfx).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&pfx, bytes).unwrap();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("not a PKCS#12") && text.contains("keytool-aes.pfx"),
        "{text}"
    );
}

#[test]
fn a_key_file_readable_by_others_is_refused_with_exit_code_2() {
    let (d, cfg) = setup();
    let pfx = d.path().join("keytool-aes.pfx");
    std::fs::set_permissions(&pfx, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("mode 0644") && text.contains("allow_insecure_permissions"),
        "{text}"
    );
    edit(
        &cfg,
        "[key]\n",
        "[key]\nallow_insecure_permissions = true\n",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_missing_key_file_is_reported_with_exit_code_2() {
    let (d, cfg) = setup();
    std::fs::remove_file(d.path().join("keytool-aes.pfx")).unwrap();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("cannot read key file") && text.contains("keytool-aes.pfx"),
        "{text}"
    );
}

#[test]
fn an_unknown_config_key_is_named_with_exit_code_2() {
    let (_d, cfg) = setup();
    edit(
        &cfg,
        "timeout = \"5s\"",
        "timeout = \"5s\"\ntimeuot = \"5s\"",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("timeuot") && text.contains("cosigner.toml"),
        "{text}"
    );
}

#[test]
fn a_bad_duration_is_named_with_exit_code_2() {
    let (_d, cfg) = setup();
    edit(&cfg, "timeout = \"5s\"", "timeout = \"five seconds\"");
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("api.timeout") && text.contains("invalid duration"),
        "{text}"
    );
}

#[test]
fn a_bad_url_is_named_with_exit_code_2() {
    let (_d, cfg) = setup();
    edit(
        &cfg,
        "base_url = \"http://127.0.0.1:9\"",
        "base_url = \"ftp//nowhere\"",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("api.base_url"), "{text}");
}

#[test]
fn a_missing_merchant_number_is_named_with_exit_code_2() {
    let (_d, cfg) = setup();
    edit(&cfg, &format!("merchant_no = \"{MERCHANT}\"\n"), "");
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("api.merchant_no") && text.contains("required"),
        "{text}"
    );
}

#[test]
fn a_missing_config_file_says_how_to_name_one() {
    let d = tempfile::tempdir().unwrap();
    let (code, text) = check(&d.path().join("nope.toml"));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("nope.toml") && text.contains("--config"),
        "{text}"
    );
}

#[test]
fn the_config_path_falls_back_to_the_environment_variable() {
    let (_d, cfg) = setup();
    let out = bin()
        .env("COSIGNER_CONFIG", &cfg)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert!(all_output(&out).contains(&cfg.display().to_string()));
}

#[test]
fn the_shipped_example_config_parses() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cosigner.example.toml");
    let env = cosigner::config::Environment::default();
    let cfg = cosigner::config::Config::load_with(&example, &env).unwrap();
    assert_eq!(cfg.poll.interval, std::time::Duration::from_secs(120));
    assert_eq!(cfg.collect.interval, std::time::Duration::from_secs(300));
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("REPLACE-WITH-YOUR-API-SECRET"), "{debug}");
}

#[test]
fn the_shipped_systemd_config_parses_with_credentials_from_systemd() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cosigner.toml");
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("api_secret"), "s\n").unwrap();
    std::fs::write(creds.path().join("merchant.pfx"), "x").unwrap();
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(
        keys.path().join("api-keys"),
        format!("{}\n", "a".repeat(64)),
    )
    .unwrap();
    let env = cosigner::config::Environment {
        overrides: vec![(
            "COSIGNER_HTTP__API_KEYS_FILE".into(),
            keys.path().join("api-keys").display().to_string(),
        )],
        credentials_directory: Some(creds.path().to_owned()),
    };
    let cfg = cosigner::config::Config::load_with(&example, &env).unwrap();
    assert_eq!(cfg.key.source.pfx_file, creds.path().join("merchant.pfx"));
    assert_eq!(
        cfg.ledger.path,
        std::path::PathBuf::from("/var/lib/cosigner/ledger.db")
    );
    assert_eq!(cfg.http.api_keys.unwrap().len(), 1);
}

#[test]
fn a_malformed_api_keys_file_names_the_file_and_line() {
    let (d, cfg) = setup();
    std::fs::write(d.path().join("keys"), "# ok\nnot-a-digest\n").unwrap();
    edit(&cfg, "[key]", "[http]\napi_keys_file = \"keys\"\n[key]");
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("http.api_keys_file") && text.contains("line 2"),
        "{text}"
    );
}

#[test]
fn check_validates_the_policy_and_warns_about_default_approve() {
    let (d, cfg) = setup();
    std::fs::write(d.path().join("policy.toml"), "default = \"approve\"\n").unwrap();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(0), "allowed: {text}");
    assert!(
        text.contains("warn  policy: default = \"approve\""),
        "{text}"
    );
    std::fs::write(d.path().join("policy.toml"), "default = \"maybe\"\n").unwrap();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("FAIL  policy") && text.contains("default"),
        "{text}"
    );
}
