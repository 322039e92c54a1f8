//! Proof suites that fit in CI: broken configurations and policies, secrets that must never
//! surface, an adversarial server, a crash-and-restart loop, and network faults.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// (what, config edit (from, to), policy text or None, expected text)
type ConfigCase = (
    &'static str,
    Option<(&'static str, &'static str)>,
    Option<&'static str>,
    &'static [&'static str],
);

const CONFIG_CASES: &[ConfigCase] = &[
    (
        "unknown top-level section",
        Some(("[key]", "[keys]\nx = 1\n[key]")),
        None,
        &["keys"],
    ),
    (
        "unknown api key",
        Some(("timeout = \"5s\"", "timeout = \"5s\"\nretries = 3")),
        None,
        &["retries"],
    ),
    (
        "bad duration",
        Some(("timeout = \"5s\"", "timeout = \"5 parsecs\"")),
        None,
        &["api.timeout", "invalid duration"],
    ),
    (
        "zero timeout",
        Some(("timeout = \"5s\"", "timeout = \"0s\"")),
        None,
        &["api.timeout", "more than zero"],
    ),
    (
        "URL without scheme",
        Some((
            "base_url = \"http://127.0.0.1:9\"",
            "base_url = \"127.0.0.1:9\"",
        )),
        None,
        &["api.base_url"],
    ),
    (
        "ftp URL",
        Some((
            "base_url = \"http://127.0.0.1:9\"",
            "base_url = \"ftp://x\"",
        )),
        None,
        &["api.base_url", "http"],
    ),
    (
        "missing merchant",
        Some(("merchant_no = \"mer0test0vector0001\"\n", "")),
        None,
        &["api.merchant_no", "required"],
    ),
    (
        "merchant with spaces",
        Some((
            "merchant_no = \"mer0test0vector0001\"",
            "merchant_no = \"mer 1\"",
        )),
        None,
        &["api.merchant_no"],
    ),
    (
        "missing api key",
        Some(("api_key = \"apikey0test\"\n", "")),
        None,
        &["api.api_key", "required"],
    ),
    (
        "zero rate",
        Some((
            "max_requests_per_second = 50",
            "max_requests_per_second = 0",
        )),
        None,
        &["api.max_requests_per_second"],
    ),
    (
        "rate as text",
        Some((
            "max_requests_per_second = 50",
            "max_requests_per_second = \"fast\"",
        )),
        None,
        &["max_requests_per_second"],
    ),
    (
        "bad sign order",
        Some((
            "timeout = \"5s\"",
            "timeout = \"5s\"\nsign_order = \"random\"",
        )),
        None,
        &["sign_order"],
    ),
    (
        "bad lang",
        Some(("timeout = \"5s\"", "timeout = \"5s\"\nlang = \"fr\"")),
        None,
        &["lang"],
    ),
    (
        "too many retries",
        Some(("timeout = \"5s\"", "timeout = \"5s\"\nmax_retries = 99")),
        None,
        &["api.max_retries"],
    ),
    (
        "secret twice",
        Some((
            "timeout = \"5s\"",
            "timeout = \"5s\"\napi_secret_file = \"s\"",
        )),
        None,
        &["api.api_secret"],
    ),
    (
        "secret file missing",
        Some((
            "api_secret = \"CANARY-secret-7c1f93ab55\"",
            "api_secret_file = \"nope\"",
        )),
        None,
        &["api.api_secret_file", "nope"],
    ),
    (
        "page size zero",
        Some(("[key]", "[poll]\npage_size = 0\n[key]")),
        None,
        &["poll.page_size"],
    ),
    (
        "jitter longer than interval",
        Some(("[key]", "[poll]\ninterval = \"1s\"\njitter = \"2s\"\n[key]")),
        None,
        &["poll.jitter"],
    ),
    (
        "bad listen address",
        Some(("[key]", "[http]\nlisten = \"localhost\"\n[key]")),
        None,
        &["http.listen"],
    ),
    (
        "bad log level",
        Some(("[key]", "[log]\nlevel = \"loud!!\"\n[key]")),
        None,
        &["log.level"],
    ),
    (
        "bad log format",
        Some(("[key]", "[log]\nformat = \"xml\"\n[key]")),
        None,
        &["format"],
    ),
    (
        "collection of nothing",
        Some(("[key]", "[collect]\nmain = false\ntokens = false\n[key]")),
        None,
        &["collect.main"],
    ),
    (
        "TOML syntax error",
        Some(("[key]", "[key\n")),
        None,
        &["cosigner.toml"],
    ),
    (
        "policy: unknown key",
        None,
        Some("default = \"hold\"\nstrict = true\n"),
        &["policy.toml", "strict"],
    ),
    (
        "policy: duplicate rule",
        None,
        Some(
            "[[rule]]\nname = \"a\"\naction = \"hold\"\n[[rule]]\nname = \"a\"\naction = \"hold\"\n",
        ),
        &["rule \"a\"", "earlier rule"],
    ),
    (
        "policy: unknown list",
        None,
        Some("[[rule]]\nname = \"a\"\naction = \"approve\"\nto = [\"@x\"]\n"),
        &["@x"],
    ),
    (
        "policy: negative amount",
        None,
        Some("[[rule]]\nname = \"a\"\naction = \"approve\"\nmin_amount = \"-1\"\n"),
        &["min_amount", "negative"],
    ),
    (
        "policy: limit without window",
        None,
        Some("[[rule]]\nname = \"a\"\naction = \"approve\"\nmax_total = \"5\"\n"),
        &["max_total", "window"],
    ),
    (
        "policy: min above max",
        None,
        Some(
            "[[rule]]\nname = \"a\"\naction = \"approve\"\nmin_amount = \"9\"\nmax_amount = \"1\"\n",
        ),
        &["above max_amount"],
    ),
    (
        "policy: empty list",
        None,
        Some("[lists]\nx = []\n"),
        &["list \"x\"", "empty"],
    ),
    (
        "policy: not TOML",
        None,
        Some("this is not a policy"),
        &["policy.toml"],
    ),
];

#[test]
fn every_broken_configuration_and_policy_fails_with_its_error_and_exit_code_2() {
    assert!(CONFIG_CASES.len() >= 20);
    for (what, edit, policy, needles) in CONFIG_CASES {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), "http://127.0.0.1:9");
        if let Some((from, to)) = edit {
            let text = std::fs::read_to_string(&cfg).unwrap();
            assert!(text.contains(from), "{what}: {from:?} not in the config");
            std::fs::write(&cfg, text.replacen(from, to, 1)).unwrap();
        }
        if let Some(p) = policy {
            std::fs::write(dir.path().join("policy.toml"), p).unwrap();
        }
        for cmd in [&["check"][..], &["run", "--once"][..]] {
            let out = bin()
                .env("RUST_LOG", "trace")
                .args(cmd)
                .arg("--config")
                .arg(&cfg)
                .output()
                .unwrap();
            let text = all_output(&out);
            assert_eq!(out.status.code(), Some(2), "{what} ({cmd:?}): {text}");
            for n in *needles {
                assert!(
                    text.contains(n),
                    "{what} ({cmd:?}): {n:?} missing from {text}"
                );
            }
            assert!(!text.contains(API_SECRET), "{what}: the API secret leaked");
        }
    }
}

/// Canary values used as secrets in the leak test.
const CANARY_SECRET: &str = "CANARY-api-secret-d41d8cd98f";
const CANARY_PASSWORD: &str = "CANARY-pfx-password-9e107d9d37";

/// The fixture key re-exported under `password` (PKCS#12, alias 1BitPay).
fn key_with_password(dir: &Path, password: &str) -> std::path::PathBuf {
    use openssl::pkcs12::Pkcs12;
    use std::os::unix::fs::PermissionsExt;
    let der = std::fs::read(fixture("keytool-aes.pfx")).unwrap();
    let parsed = Pkcs12::from_der(&der)
        .unwrap()
        .parse2(PFX_PASSWORD)
        .unwrap();
    let p12 = Pkcs12::builder()
        .name("1BitPay")
        .pkey(parsed.pkey.as_ref().unwrap())
        .cert(parsed.cert.as_ref().unwrap())
        .build2(password)
        .unwrap();
    let path = dir.join("canary.pfx");
    std::fs::write(&path, p12.to_der().unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_appear_in_no_log_metric_ledger_or_error_even_at_trace_level() {
    let sandbox = spawn_sandbox_with_secret(CANARY_SECRET);
    let http = reqwest::Client::new();
    let items: Vec<serde_json::Value> = (1..=3)
        .map(|i| serde_json::from_str(&item(i, HOT, TREASURY, "1", "195")).unwrap())
        .collect();
    http.post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&items)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    key_with_password(dir.path(), CANARY_PASSWORD);
    std::fs::write(dir.path().join("secret"), format!("{CANARY_SECRET}\n")).unwrap();
    std::fs::write(dir.path().join("password"), format!("{CANARY_PASSWORD}\n")).unwrap();
    std::fs::write(dir.path().join("policy.toml"), format!("default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("cosigner.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nbase_url = \"{}\"\nmerchant_no = \"{MERCHANT}\"\napi_key = \"{API_KEY}\"\napi_secret_file = \"secret\"\nmax_retries = 1\n\
             [key]\npfx_file = \"canary.pfx\"\npassword_file = \"password\"\n[policy]\nfile = \"policy.toml\"\n[ledger]\npath = \"ledger.db\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n[collect]\ninterval = \"1s\"\njitter = \"0s\"\n[log]\nlevel = \"trace\"\nformat = \"json\"\n",
            sandbox.url
        ),
    )
    .unwrap();
    let child = bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let decided = || async {
        let v: Vec<serde_json::Value> = http
            .get(format!("{}/_sandbox/decisions", sandbox.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.len()
    };
    wait_until("three approvals", Duration::from_secs(15), || async {
        decided().await == 3
    })
    .await;
    // Force the error paths: every API call now fails.
    http.put(format!("{}/_sandbox/faults", sandbox.url))
        .body(r#"{"error_rate":1.0}"#)
        .send()
        .await
        .unwrap();
    http.post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&vec![
            serde_json::from_str::<serde_json::Value>(&item(9, HOT, TREASURY, "1", "195")).unwrap(),
        ])
        .send()
        .await
        .unwrap();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    wait_until("failed cycles", Duration::from_secs(15), || async {
        reqwest::get(&metrics_url)
            .await
            .ok()
            .map(|r| r.text())
            .is_some()
            && reqwest::get(&metrics_url)
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("cosigner_poll_runs_total{outcome=\"error\"}")
    })
    .await;
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let logs = all_output(&out);
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("TRACE"),
        "trace level was on"
    );
    assert!(logs.contains("decision"), "the run logged its decisions");

    // A wrong password and a check at trace level: error paths that handle the secrets.
    std::fs::write(
        dir.path().join("password"),
        "CANARY-wrong-password-0cc175b9\n",
    )
    .unwrap();
    let wrong = bin()
        .env("RUST_LOG", "trace")
        .args(["check", "--online", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    let wrong_text = all_output(&wrong);

    let mut haystacks = vec![
        ("logs", logs.into_bytes()),
        ("metrics", metrics.into_bytes()),
        ("check output", wrong_text.into_bytes()),
    ];
    for f in ["ledger.db", "ledger.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(f)) {
            haystacks.push((f, bytes));
        }
    }
    for (what, bytes) in &haystacks {
        for canary in [
            CANARY_SECRET,
            CANARY_PASSWORD,
            "CANARY-wrong-password-0cc175b9",
        ] {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{canary} found in {what}"
            );
        }
    }
}
