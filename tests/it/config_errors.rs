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
    // `check` tries to bind http.listen: the default port, tried by tests running at once,
    // would be taken by one of them now and then.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[http]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&cfg, text).unwrap();
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
    write_private(&d.path().join("pw"), WRONG_PASSWORD);
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
fn the_shipped_pair_config_parses_with_the_database_password_from_systemd() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cosigner-pair.toml");
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("api_secret"), "s\n").unwrap();
    std::fs::write(creds.path().join("merchant.pfx"), "x").unwrap();
    std::fs::write(creds.path().join("pg_password"), "pg-secret-91c2\n").unwrap();
    let keys = creds.path().join("api-keys");
    std::fs::write(&keys, format!("{}\n", "a".repeat(64))).unwrap();
    let env = cosigner::config::Environment {
        overrides: vec![(
            "COSIGNER_HTTP__API_KEYS_FILE".into(),
            keys.display().to_string(),
        )],
        credentials_directory: Some(creds.path().to_owned()),
    };
    let cfg = cosigner::config::Config::load_with(&example, &env).unwrap();
    let pg = cfg.ledger.postgres.as_ref().expect("a PostgreSQL ledger");
    assert_eq!(pg.name, "signer-a");
    assert_eq!(
        pg.target.describe(),
        "postgres://cosigner@db.internal:5432/cosigner?sslmode=verify-full"
    );
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("pg-secret-91c2"), "{debug}");
}

#[test]
fn a_ledger_with_both_a_path_and_a_url_a_foreign_url_or_a_password_without_a_url_is_refused_naming_the_key()
 {
    let cases = [
        (
            "[ledger]\nurl = \"postgres://u@127.0.0.1:5432/db\"\npath = \"ledger.db\"\n",
            "ledger.url",
            "ledger.path",
        ),
        (
            "[ledger]\nurl = \"mysql://u@127.0.0.1/db\"\n",
            "ledger.url",
            "postgres://",
        ),
        (
            "[ledger]\npath = \"ledger.db\"\npassword_file = \"pw\"\n",
            "ledger.password_file",
            "ledger.url",
        ),
    ];
    for (ledger, key, hint) in cases {
        let (_d, cfg) = setup();
        edit(&cfg, "[ledger]\npath = \"ledger.db\"\n", ledger);
        let (code, text) = check(&cfg);
        assert_eq!(code, Some(2), "{ledger}: {text}");
        assert!(
            text.contains(&format!("key `{key}`")) && text.contains(hint),
            "{ledger}: {text}"
        );
    }
}

#[test]
fn a_malformed_api_keys_file_names_the_file_and_line() {
    let (d, cfg) = setup();
    std::fs::write(d.path().join("keys"), "# ok\nnot-a-digest\n").unwrap();
    edit(&cfg, "[http]\n", "[http]\napi_keys_file = \"keys\"\n");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syntax_error_next_to_an_inline_secret_gives_line_and_column_never_the_line() {
    let (_d, cfg) = setup();
    // The closing quote forgotten: toml's own message would quote this line, secret and all.
    edit(
        &cfg,
        &format!("api_secret = \"{API_SECRET}\""),
        &format!("api_secret = \"{API_SECRET}"),
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cosigner.toml"), "{text}");
    assert!(text.contains("line 5, column"), "{text}");
    let out = run_bin(&["run", "--once", "--config", cfg.to_str().unwrap()]).await;
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains(API_SECRET), "{text}");
    assert!(text.contains("line 5, column"), "{text}");
}

#[test]
fn base_url_is_required_and_plain_http_only_reaches_loopback() {
    let (_d, cfg) = setup();
    edit(&cfg, "base_url = \"http://127.0.0.1:9\"\n", "");
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("api.base_url") && text.contains("required"),
        "{text}"
    );
    for (url, ok) in [
        ("http://api.1bitpay.io", false),
        ("http://10.0.0.5:8080", false),
        ("http://127.0.0.2:9", true),
        ("http://[::1]:9", true),
        ("http://localhost:9", true),
        ("https://api.1bitpay.io", true),
    ] {
        let (_d, cfg) = setup();
        edit(&cfg, "http://127.0.0.1:9", url);
        let (code, text) = check(&cfg);
        if ok {
            assert!(!text.contains("api.base_url"), "{url}: {text}");
        } else {
            assert_eq!(code, Some(2), "{url}: {text}");
            assert!(
                text.contains("api.base_url") && text.contains("https://"),
                "{url}: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_other_hosts_can_reach_is_warned_about_by_check_and_at_start() {
    let (_d, cfg) = setup();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace("127.0.0.1:0", "0.0.0.0:0");
    text.push_str("[collect]\nenabled = false\n");
    std::fs::write(&cfg, &text).unwrap();
    let (_, out) = check(&cfg);
    assert!(
        out.contains("warn  http.listen: http.listen 0.0.0.0:0 is reachable from other hosts"),
        "{out}"
    );
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains("reachable from other hosts"),
        "the first log line: {line}"
    );
    std::fs::write(&cfg, text.replace("0.0.0.0:0", "127.0.0.1:0")).unwrap();
    let (_, out) = check(&cfg);
    assert!(
        out.contains("ok    http.listen") || !out.contains("warn  http.listen"),
        "{out}"
    );
}

#[test]
fn secret_files_others_can_read_are_refused_like_the_key_file() {
    let (d, cfg) = setup();
    let secret = d.path().join("api_secret");
    std::fs::write(&secret, format!("{API_SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    edit(
        &cfg,
        &format!("api_secret = \"{API_SECRET}\""),
        "api_secret_file = \"api_secret\"",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("api.api_secret_file") && text.contains("mode 0644"),
        "{text}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(0), "{text}");

    let pw = d.path().join("pw");
    std::fs::write(&pw, format!("1bitpay{MERCHANT}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
    edit(
        &cfg,
        "pfx_file = \"keytool-aes.pfx\"",
        "pfx_file = \"keytool-aes.pfx\"\npassword_file = \"pw\"",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("key.password_file") && text.contains("mode 0640"),
        "{text}"
    );
    let out = bin()
        .args(["sign", "--pfx"])
        .arg(d.path().join("keytool-aes.pfx"))
        .arg("--password-file")
        .arg(&pw)
        .arg("{}")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("mode 0640"),
        "{}",
        all_output(&out)
    );
    // The key file's override covers the files holding secrets too.
    edit(
        &cfg,
        "pfx_file = \"keytool-aes.pfx\"",
        "pfx_file = \"keytool-aes.pfx\"\nallow_insecure_permissions = true",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(0), "{text}");
}
