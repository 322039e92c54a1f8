//! The configuration's tests: keys, the example file, overrides, secrets, bounds.

use super::env::KEYS;
use super::*;
use secrecy::ExposeSecret;
use std::collections::BTreeSet;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const MINIMAL: &str = r#"
[api]
base_url = "https://api.1bitpay.io"
merchant_no = "mer1"
api_key = "key1"
api_secret = "s3cr3t"
[key]
pfx_file = "merchant.pfx"
"#;

/// The fields `RawConfig` accepts at the place `toml_text` puts `not_a_key`, as serde's
/// `deny_unknown_fields` lists them when it refuses it: "unknown field `not_a_key`,
/// expected one of `a`, `b`" (or "expected `a`", "expected `a` or `b`").
fn accepted_fields(toml_text: &str) -> Vec<String> {
    let err = match toml::from_str::<RawConfig>(toml_text) {
        Ok(_) => panic!("`not_a_key` was accepted in {toml_text:?}"),
        Err(e) => e.to_string(),
    };
    let (_, expected) = err
        .split_once("unknown field `not_a_key`, expected")
        .unwrap_or_else(|| panic!("not an unknown-field error: {err}"));
    let expected = expected.lines().next().unwrap_or("");
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every `section.key` the configuration's structs accept.
fn keys_the_structs_accept() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for section in accepted_fields("not_a_key = 1") {
        for field in accepted_fields(&format!("[{section}]\nnot_a_key = 1")) {
            keys.insert(format!("{section}.{field}"));
        }
    }
    keys
}

#[test]
fn the_known_keys_are_exactly_the_keys_the_configuration_accepts() {
    let accepted = keys_the_structs_accept();
    assert!(accepted.contains("api.timeout"), "{accepted:?}");
    assert!(accepted.contains("callbacks.enabled"), "{accepted:?}");
    let known: BTreeSet<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(KEYS.len(), known.len(), "KEYS names a key twice");
    let missing: Vec<&String> = accepted.difference(&known).collect();
    let extra: Vec<&String> = known.difference(&accepted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "config/env.rs's KEYS lacks {missing:?} and names {extra:?}, which no struct accepts"
    );
    let not_keys: Vec<&&str> = TEXT_KEYS.iter().filter(|k| !known.contains(**k)).collect();
    assert!(not_keys.is_empty(), "TEXT_KEYS names no key: {not_keys:?}");
}

#[test]
fn the_example_configuration_shows_every_key_set_or_commented_under_its_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cosigner.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut shown = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                shown.insert(format!("{section}.{key}"));
            }
        }
    }
    let accepted = keys_the_structs_accept();
    let missing: Vec<&String> = accepted.difference(&shown).collect();
    let unknown: Vec<&String> = shown.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{} lacks {missing:?} and shows {unknown:?}, which are no keys",
        path.display()
    );
}

#[test]
fn a_variable_with_one_underscore_is_pointed_at_the_key_it_misspells() {
    for (name, key) in [
        ("COSIGNER_API_MAX_CLOCK_SKEW", "api.max_clock_skew"),
        ("COSIGNER_HTTP_METRICS_AUTH", "http.metrics_auth"),
        ("COSIGNER_POLL_INTERVAL", "poll.interval"),
    ] {
        let text = unmapped_variable(name);
        assert!(
            text.contains(&format!("the nearest key is `{key}`")),
            "{text}"
        );
    }
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "c.toml", MINIMAL);
    let c = Config::load_with(&p, &Environment::default()).unwrap();
    assert_eq!(c.key.source.pfx_file, d.path().join("merchant.pfx"));
    assert_eq!(c.policy.file, d.path().join("policy.toml"));
    assert_eq!(c.poll.interval, DEFAULT_POLL_INTERVAL);
    assert_eq!(c.key.password_origin, SecretOrigin::Default);
    assert_eq!(c.key.source.password.expose_secret(), "1bitpaymer1");
}

#[test]
fn an_environment_override_replaces_a_file_value_and_is_named_in_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "c.toml", MINIMAL);
    let env = Environment {
        overrides: vec![("COSIGNER_API__TIMEOUT".into(), "30s".into())],
        credentials_directory: None,
    };
    let c = Config::load_with(&p, &env).unwrap();
    assert_eq!(c.api.client.timeout, Duration::from_secs(30));
    let env = Environment {
        overrides: vec![("COSIGNER_API__TIMEOUT".into(), "soon".into())],
        credentials_directory: None,
    };
    let e = Config::load_with(&p, &env).unwrap_err().to_string();
    assert!(
        e.contains("COSIGNER_API__TIMEOUT") && e.contains("api.timeout"),
        "{e}"
    );
}

#[test]
fn a_numeric_merchant_number_from_the_environment_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "c.toml", MINIMAL);
    let env = Environment {
        overrides: vec![("COSIGNER_API__MERCHANT_NO".into(), "12345".into())],
        credentials_directory: None,
    };
    let c = Config::load_with(&p, &env).unwrap();
    assert_eq!(c.api.client.merchant_no, "12345");
}

#[test]
fn secrets_are_found_in_the_systemd_credentials_directory() {
    let d = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    write(creds.path(), CRED_API_SECRET, "from-creds\n");
    write(creds.path(), CRED_PFX, "x");
    write(creds.path(), CRED_PFX_PASSWORD, "pw\n");
    let p = write(
        d.path(),
        "c.toml",
        "[api]\nbase_url = \"https://api.1bitpay.io\"\nmerchant_no = \"m\"\napi_key = \"k\"\n",
    );
    let env = Environment {
        overrides: vec![],
        credentials_directory: Some(creds.path().to_owned()),
    };
    let c = Config::load_with(&p, &env).unwrap();
    assert_eq!(c.api.client.api_secret.expose_secret(), "from-creds");
    assert_eq!(c.key.source.pfx_file, creds.path().join(CRED_PFX));
    assert_eq!(c.key.source.password.expose_secret(), "pw");
}

#[test]
fn both_inline_secret_and_secret_file_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.toml",
        &format!("{MINIMAL}\n").replace(
            "api_secret = \"s3cr3t\"",
            "api_secret = \"a\"\napi_secret_file = \"f\"",
        ),
    );
    let e = Config::load_with(&p, &Environment::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("api.api_secret"), "{e}");
}

#[test]
fn log_filters_are_levels_or_target_directives() {
    for ok in [
        "info",
        "warn",
        "cosigner=debug,info",
        "cosigner::cycle=trace",
        "OFF",
    ] {
        assert!(valid_log_filter(ok), "{ok}");
    }
    for bad in ["infoo", "loud!!", "", "cosigner=loud", "=debug"] {
        assert!(!valid_log_filter(bad), "{bad}");
    }
}

#[test]
fn a_listing_has_bounds_and_a_cycle_a_deadline_each_checked_at_load() {
    let d = tempfile::tempdir().unwrap();
    let load = |poll: &str| {
        let p = write(d.path(), "c.toml", &format!("{MINIMAL}[poll]\n{poll}\n"));
        Config::load_with(&p, &Environment::default()).map(|c| c.poll)
    };
    let c = load("interval = \"30s\"").unwrap();
    assert_eq!(
        (c.max_items, c.max_item_bytes, c.cycle_timeout),
        (50_000, 4096, Duration::from_secs(30)),
        "the deadline defaults to the interval"
    );
    let c = load("max_items = 7\nmax_item_bytes = 512\ncycle_timeout = \"90s\"").unwrap();
    assert_eq!(
        (c.max_items, c.max_item_bytes, c.cycle_timeout),
        (7, 512, Duration::from_secs(90))
    );
    for (bad, key) in [
        ("max_items = 0", "poll.max_items"),
        ("max_item_bytes = 511", "poll.max_item_bytes"),
        ("cycle_timeout = \"500ms\"", "poll.cycle_timeout"),
        (
            "interval = \"1m\"\ncycle_timeout = \"11m\"",
            "poll.cycle_timeout",
        ),
    ] {
        let e = load(bad).unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
    assert!(load("interval = \"1m\"\ncycle_timeout = \"10m 59s\"").is_ok());
}

#[test]
fn the_config_path_comes_from_the_flag_first() {
    assert_eq!(
        resolve_path(Some(Path::new("/x.toml"))),
        PathBuf::from("/x.toml")
    );
}
