//! Proof suites that fit in CI: broken configurations and policies, secrets that must never
//! surface, an adversarial server, a crash-and-restart loop, and network faults. The suites
//! that touch the ledger run once on each back end (SQLite, PostgreSQL).

use std::path::Path;
use std::time::Duration;

use crate::store::Store;
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
        "log filter whose target is not a module path (it would log nothing)",
        Some(("[key]", "[log]\nlevel = \"*=debug\"\n[key]")),
        None,
        &["log.level"],
    ),
    (
        "log filter with an empty directive",
        Some(("[key]", "[log]\nlevel = \"info,\"\n[key]")),
        None,
        &["log.level"],
    ),
    (
        "a rule name with a NUL (the ledger could not keep it apart)",
        None,
        Some("default = \"hold\"\n[[rule]]\nname = \"payout\\u0000\"\naction = \"approve\"\n"),
        &["payout", "control characters"],
    ),
    (
        "a rule name with U+FFFD",
        None,
        Some("default = \"hold\"\n[[rule]]\nname = \"payout\\uFFFD\"\naction = \"approve\"\n"),
        &["U+FFFD"],
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
        "metrics_auth without keys",
        Some(("[key]", "[http]\nmetrics_auth = true\n[key]")),
        None,
        &["http.metrics_auth", "api_keys_file"],
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

crate::store::on_each_back_end!(
    canary_suite:
    canary_secrets_appear_in_no_log_metric_ledger_or_error_even_at_trace_level,
    on_postgresql_canary_secrets_appear_in_no_log_metric_database_row_or_error_even_at_trace_level
);

async fn canary_suite(store: Store) {
    let sandbox = spawn_sandbox_with_secret(CANARY_SECRET);
    let http = reqwest::Client::new();
    let items: Vec<serde_json::Value> = (1..=3)
        .map(|i| serde_json::from_str(&item(TxId::new(i), HOT, TREASURY, "1", "195")).unwrap())
        .collect();
    http.post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&items)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    key_with_password(dir.path(), CANARY_PASSWORD);
    write_private(&dir.path().join("secret"), &format!("{CANARY_SECRET}\n"));
    write_private(
        &dir.path().join("password"),
        &format!("{CANARY_PASSWORD}\n"),
    );
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
    store.configure(&cfg);
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
            serde_json::from_str::<serde_json::Value>(&item(
                TxId::new(9),
                HOT,
                TREASURY,
                "1",
                "195",
            ))
            .unwrap(),
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

    let haystacks = vec![
        ("logs", logs.into_bytes()),
        ("metrics", metrics.into_bytes()),
        ("check output", wrong_text.into_bytes()),
    ];
    let stored = store.contents(dir.path()).await;
    assert!(
        stored.iter().any(|(_, bytes)| {
            let text = String::from_utf8_lossy(bytes);
            text.contains("approve") && text.contains(TREASURY)
        }),
        "the {} ledger holds the run's approvals",
        store.name()
    );
    let mut haystacks: Vec<(String, Vec<u8>)> = haystacks
        .into_iter()
        .map(|(what, bytes)| (what.to_string(), bytes))
        .collect();
    haystacks.extend(stored);
    let mut canaries = vec![
        CANARY_SECRET,
        CANARY_PASSWORD,
        "CANARY-wrong-password-0cc175b9",
    ];
    if let Store::Postgres(pg) = &store {
        canaries.push(pg.password_text());
    }
    for (what, bytes) in &haystacks {
        for canary in &canaries {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{canary} found in {what}"
            );
        }
    }
}

mod adversarial {
    //! A hostile or broken server: malformed, look-alike and contradictory pending items, and
    //! listings that never end. Zero approvals outside the policy, zero crashes, every case
    //! accounted for with a reason.

    use cosigner::cycle::{Engine, PollSettings};
    use cosigner::domain::Action;
    use cosigner_sandbox::server::{Faults, Scenario};

    use serde_json::{Value, json};

    use crate::store::Store;
    use crate::support::*;

    const EVM: &str = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";

    fn policy_text() -> String {
        format!(
            "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nchains = [\"195\", \"1\"]\n\
             to = [\"{TREASURY}\", \"{EVM}\"]\nmax_amount = \"1000\"\n"
        )
    }

    async fn engine(dir: &std::path::Path, url: &str, store: &Store) -> Engine {
        let settings = PollSettings {
            page_size: 20,
            max_in_flight: 4,
            dry_run: false,
            ..PollSettings::default()
        };
        let ledger = store.open(dir).await;
        engine_on(dir, client_config(url), &policy_text(), settings, ledger)
    }

    /// One test per back end for each case below.
    macro_rules! on_both_back_ends {
        ($($case:ident),* $(,)?) => {
            mod on_sqlite {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::$case(crate::store::Store::Sqlite).await;
                    }
                )*
            }
            mod on_postgresql {
                $(
                    #[tokio::test]
                    async fn $case() {
                        let Some(store) = crate::store::Store::postgres() else {
                            return;
                        };
                        super::$case(store).await;
                    }
                )*
            }
        };
    }

    on_both_back_ends!(
        a_malicious_pending_list_gets_zero_approvals_outside_the_policy_and_every_case_a_reason,
        the_same_id_listed_twice_with_different_fields_is_held,
        hostile_listings_end_the_cycle_safely,
    );

    fn tx(id: i64, fields: Value) -> Value {
        let mut base = json!({"id": id, "fromAddress": HOT, "toAddress": TREASURY, "amount": "10", "chainId": "195"});
        for (k, v) in fields.as_object().unwrap() {
            if v == &json!("__remove__") {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    }

    /// A hostile pending item: its id (`None` when it has no usable one), its text, what it
    /// tries, and the hold the daemon must record for it: the exact rule and reason.
    struct Hostile {
        id: Option<TxId>,
        text: String,
        why: &'static str,
        held: Option<(&'static str, String)>,
    }

    /// An item like the well-formed control but for `fields`, held as malformed for `reason`.
    fn malformed(id: u64, fields: Value, why: &'static str, reason: String) -> Hostile {
        Hostile {
            id: Some(TxId::new(id)),
            text: tx(id.try_into().unwrap(), fields).to_string(),
            why,
            held: Some(("(malformed)", reason)),
        }
    }

    /// An item whose number token replaces the control's amount `"10"` verbatim.
    fn amount_token(id: u64, token: &str, why: &'static str, reason: String) -> Hostile {
        Hostile {
            text: tx(id.try_into().unwrap(), json!({}))
                .to_string()
                .replace("\"amount\":\"10\"", &format!("\"amount\":{token}")),
            ..malformed(id, json!({}), why, reason)
        }
    }

    fn unidentifiable(item: Value, why: &'static str) -> Hostile {
        Hostile {
            id: None,
            text: item.to_string(),
            why,
            held: None,
        }
    }

    fn corpus() -> Vec<Hostile> {
        let not_plain =
            |a: &str| format!("amount {a:?} is not a plain decimal that can be compared exactly");
        let not_ascii = |a: &str, what: &str, at: usize| {
            format!(
                "toAddress {a:?} has {what} at character {at}: an address is ASCII letters and digits only"
            )
        };
        let evm_shape = |a: &str| {
            format!(
                "toAddress {a:?} starts like an EVM address but is not `0x` followed by exactly 40 hex digits"
            )
        };
        let lookalike = |a: &str, at: usize, what: &str| {
            format!(
                "toAddress {a:?} is a look-alike, not an address: it differs from rule \"treasury\" `to` entry {TREASURY} at character {at}: {what}"
            )
        };
        let cyrillic = TREASURY.replace('o', "\u{043e}");
        let zero_width = format!("{}\u{200b}{}", &TREASURY[..5], &TREASURY[5..]);
        let fullwidth = TREASURY.replacen('T', "\u{ff34}", 1);
        let lower = TREASURY.to_lowercase();
        let long_from = "A".repeat(300);
        let evm_0x = EVM.replacen("0x", "0X", 1);
        let evm_long = format!("{EVM}0");
        let mut c = vec![
            malformed(1, json!({"amount": "-1"}), "negative amount", "amount \"-1\" is negative".into()),
            malformed(2, json!({"amount": "-0"}), "negative zero", "amount \"-0\" is negative".into()),
            malformed(3, json!({"amount": "1e3"}), "exponent string", not_plain("1e3")),
            malformed(5, json!({"amount": "NaN"}), "NaN", not_plain("NaN")),
            malformed(6, json!({"amount": "Infinity"}), "Infinity", not_plain("Infinity")),
            malformed(7, json!({"amount": ""}), "empty amount", "amount is empty".into()),
            malformed(8, json!({"amount": "0x10"}), "hex amount", not_plain("0x10")),
            malformed(9, json!({"amount": " 5"}), "padded amount", not_plain(" 5")),
            malformed(10, json!({"amount": "5 "}), "trailing space amount", not_plain("5 ")),
            malformed(11, json!({"amount": "+5"}), "plus sign", not_plain("+5")),
            malformed(12, json!({"amount": "5.0.0"}), "two points", not_plain("5.0.0")),
            malformed(
                13,
                json!({"amount": "9".repeat(100)}),
                "huge amount",
                "amount is 100 characters long (at most 64)".into(),
            ),
            malformed(
                14,
                json!({"amount": "1.0000000000000000000000000000001"}),
                "over-precise amount",
                not_plain("1.0000000000000000000000000000001"),
            ),
            malformed(16, json!({"amount": null}), "null amount", "amount is neither a string nor a number: null".into()),
            malformed(17, json!({"amount": true}), "boolean amount", "amount is neither a string nor a number: true".into()),
            malformed(18, json!({"amount": []}), "array amount", "amount is neither a string nor a number: []".into()),
            malformed(19, json!({"amount": {}}), "object amount", "amount is neither a string nor a number: {}".into()),
            malformed(20, json!({"amount": "__remove__"}), "missing amount", "amount is missing".into()),
            // Not `T…`-shaped, so no TRON address at all (the policy declares no chain
            // formats): compared as written, it is on no list.
            Hostile {
                held: Some(("(default)", "no rule matched; the policy default applies".into())),
                ..malformed(22, json!({"toAddress": lower}), "case-changed Tron address", String::new())
            },
            malformed(
                23,
                json!({"toAddress": format!("{TREASURY} ")}),
                "trailing space address",
                not_ascii(&format!("{TREASURY} "), "U+0020 SPACE", 35),
            ),
            malformed(
                24,
                json!({"toAddress": format!(" {TREASURY}")}),
                "leading space address",
                not_ascii(&format!(" {TREASURY}"), "U+0020 SPACE", 1),
            ),
            malformed(
                25,
                json!({"toAddress": cyrillic}),
                "Cyrillic look-alike",
                lookalike(&cyrillic, 32, "U+043E CYRILLIC SMALL LETTER O"),
            ),
            malformed(
                26,
                json!({"toAddress": zero_width}),
                "zero-width space",
                not_ascii(&zero_width, "U+200B ZERO WIDTH SPACE", 6),
            ),
            malformed(
                27,
                json!({"toAddress": fullwidth}),
                "fullwidth letter",
                lookalike(&fullwidth, 1, "U+FF34 FULLWIDTH FORM"),
            ),
            malformed(
                28,
                json!({"toAddress": format!("{TREASURY}\n")}),
                "newline in address",
                not_ascii(&format!("{TREASURY}\n"), "U+000A LINE FEED", 35),
            ),
            malformed(29, json!({"toAddress": ""}), "empty address", "toAddress is empty".into()),
            malformed(30, json!({"toAddress": null}), "null address", "toAddress is not a string: null".into()),
            malformed(31, json!({"toAddress": 123}), "numeric address", "toAddress is not a string: 123".into()),
            malformed(32, json!({"toAddress": "__remove__"}), "missing address", "toAddress is missing".into()),
            malformed(33, json!({"fromAddress": "__remove__"}), "missing source", "fromAddress is missing".into()),
            malformed(34, json!({"fromAddress": ""}), "empty source", "fromAddress is empty".into()),
            Hostile {
                held: Some(("(default)", "no rule matched; the policy default applies".into())),
                ..malformed(35, json!({"chainId": "56"}), "other chain", String::new())
            },
            malformed(36, json!({"chainId": 195}), "numeric chain id", "chainId is not a string: 195".into()),
            malformed(37, json!({"chainId": ""}), "empty chain id", "chainId is empty".into()),
            malformed(38, json!({"chainId": null}), "null chain id", "chainId is not a string: null".into()),
            malformed(
                48,
                json!({"toAddress": evm_0x, "chainId": "1"}),
                "0X prefix",
                evm_shape(&evm_0x),
            ),
            malformed(
                49,
                json!({"toAddress": evm_long, "chainId": "1"}),
                "EVM address one digit too long",
                evm_shape(&evm_long),
            ),
            Hostile {
                held: Some((
                    "(default)",
                    "no rule matched (nearest, \"treasury\": amount 1000.0000001 is above max_amount 1000); the policy default applies".into(),
                )),
                ..malformed(50, json!({"amount": "1000.0000001"}), "just over max_amount", String::new())
            },
            // Every field canonical (chain 3 is no chain the daemon knows: its addresses are
            // compared as written), the text to sign too long for the key.
            malformed(
                53,
                json!({"fromAddress": long_from, "chainId": "3"}),
                "text too long for the key",
                "the text to sign is 399 bytes; the key signs at most 245".into(),
            ),
            malformed(54, json!({"amount": "\u{ff15}"}), "fullwidth digit", not_plain("\u{ff15}")),
            malformed(55, json!({"amount": "1,000"}), "thousands separator", not_plain("1,000")),
            malformed(
                56,
                json!({"toAddress": format!("{TREASURY}\u{0}")}),
                "NUL in address",
                not_ascii(&format!("{TREASURY}\u{0}"), "U+0000 NULL", 35),
            ),
            Hostile {
                held: Some(("(default)", "no rule matched; the policy default applies".into())),
                ..malformed(
                    57,
                    json!({"toAddress": EVM, "chainId": "56"}),
                    "allow-listed EVM address on another chain",
                    String::new(),
                )
            },
            // Number tokens whose text must be kept exactly (not round-tripped through a float).
            amount_token(4, "1e3", "exponent number token", not_plain("1e3")),
            amount_token(15, "1.5e2", "exponent number token with point", not_plain("1.5e2")),
            amount_token(21, "-3", "negative number token", "amount \"-3\" is negative".into()),
        ];
        c.push(unidentifiable(json!({"id": "40", "fromAddress": HOT, "toAddress": TREASURY, "amount": "1", "chainId": "195"}), "string id"));
        c.push(unidentifiable(json!({"id": -5, "fromAddress": HOT, "toAddress": TREASURY, "amount": "1", "chainId": "195"}), "negative id"));
        c.push(unidentifiable(json!({"id": 41.0, "fromAddress": HOT, "toAddress": TREASURY, "amount": "1", "chainId": "195"}), "float id"));
        c.push(unidentifiable(json!({"id": 1e30, "fromAddress": HOT, "toAddress": TREASURY, "amount": "1", "chainId": "195"}), "huge id"));
        c.push(unidentifiable(
            json!({"fromAddress": HOT, "toAddress": TREASURY, "amount": "1", "chainId": "195"}),
            "missing id",
        ));
        c.push(unidentifiable(json!([1, 2, 3]), "array item"));
        c.push(unidentifiable(json!("just a string"), "string item"));
        c.push(unidentifiable(Value::Null, "null item"));
        c
    }

    async fn a_malicious_pending_list_gets_zero_approvals_outside_the_policy_and_every_case_a_reason(
        store: Store,
    ) {
        let corpus = corpus();
        assert!(corpus.len() >= 50, "{}", corpus.len());
        let controls = [
            (
                TxId::new(100),
                tx(100, json!({"amount": "1000"})).to_string(),
            ),
            (
                TxId::new(101),
                tx(
                    101,
                    json!({"toAddress": EVM.to_lowercase(), "chainId": "1", "amount": "0.5"}),
                )
                .to_string(),
            ),
            (
                TxId::new(102),
                tx(102, json!({}))
                    .to_string()
                    .replace("\"amount\":\"10\"", "\"amount\":12.50"),
            ),
        ];
        let mut pending: Vec<String> = corpus.iter().map(|h| h.text.clone()).collect();
        pending.extend(controls.iter().map(|(_, s)| s.clone()));
        let dir = tempfile::tempdir().unwrap();
        let sb = start_sandbox(Scenario {
            pending,
            faults: Faults::default(),
        })
        .await;
        let e = engine(dir.path(), &sb.url, &store).await;
        let out = e.cycle_once().await.unwrap();
        assert_eq!(out.malformed_items, 8, "{out:?}");

        let mut expected: Vec<TxId> = controls.iter().map(|(id, _)| *id).collect();
        expected.sort_unstable();
        assert_eq!(
            approved_ids(&sb),
            expected,
            "only the well-formed, allow-listed controls are approved"
        );
        assert!(
            sb.sandbox.decisions().iter().all(|d| d.status == 1),
            "nothing malformed is rejected either"
        );
        let ledger = e.ledger();
        for hostile in &corpus {
            let (Some(id), Some((rule, reason))) = (hostile.id, &hostile.held) else {
                continue;
            };
            let why = hostile.why;
            let h = ledger.history(id).await.unwrap();
            assert_eq!(h.len(), 1, "{why}: one record");
            assert_eq!(
                (h[0].action, h[0].rule.as_str(), h[0].reason.as_str()),
                (Action::Hold, *rule, reason.as_str()),
                "{why} (tx {id})"
            );
        }
        // A NUL (which PostgreSQL's text cannot hold) is stored as U+FFFD on both back ends;
        // the item's exact JSON keeps it escaped, and the chain verifies.
        let nul = &ledger.history(TxId::new(56)).await.unwrap()[0];
        assert!(
            nul.to.as_deref().unwrap().ends_with('\u{fffd}'),
            "{:?}",
            nul.to
        );
        assert!(nul.tx_json.contains("\\u0000"), "{}", nul.tx_json);
        assert!(ledger.verify().await.unwrap().problems.is_empty());
        // Number tokens are kept verbatim: 12.50 is signed as "12.50".
        let ctl = ledger.history(TxId::new(102)).await.unwrap();
        assert!(
            ctl[0]
                .signed_text
                .as_deref()
                .unwrap()
                .contains("\"value\":\"12.50\"")
        );
    }

    async fn the_same_id_listed_twice_with_different_fields_is_held(store: Store) {
        let dir = tempfile::tempdir().unwrap();
        // The sandbox keys its list by id, so the second item goes in unkeyed: the listing then
        // shows id 7 twice, with different amounts.
        let a = tx(7, json!({})).to_string();
        let b = tx(7, json!({"amount": "999"}))
            .to_string()
            .replace("\"id\":7", "\"id\":7 ");
        let sb = start_sandbox(Scenario {
            pending: vec![a],
            faults: Faults::default(),
        })
        .await;
        sb.sandbox.add_unkeyed([b]);
        let e = engine(dir.path(), &sb.url, &store).await;
        e.cycle_once().await.unwrap();
        assert!(
            sb.sandbox.decisions().is_empty(),
            "{:?}",
            sb.sandbox.decisions()
        );
        let h = e.ledger().history(TxId::new(7)).await.unwrap();
        assert_eq!(
            (
                h.len(),
                h[0].action,
                h[0].rule.as_str(),
                h[0].reason.as_str()
            ),
            (
                1,
                Action::Hold,
                "(malformed)",
                "the listing showed this id twice with different fields"
            )
        );
    }

    async fn hostile_listings_end_the_cycle_safely(store: Store) {
        let dir = tempfile::tempdir().unwrap();
        let sb = start_sandbox(Scenario {
            pending: vec![tx(1, json!({})).to_string()],
            faults: Faults::default(),
        })
        .await;
        let e = engine(dir.path(), &sb.url, &store).await;
        // A 10 MB body: refused, nothing decided.
        sb.sandbox.set_faults(Faults {
            pad_bytes: 10 << 20,
            ..Faults::default()
        });
        let err = e.cycle_once().await.unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        // Truncated JSON: refused.
        sb.sandbox.set_faults(Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        });
        assert!(e.cycle_once().await.is_err());
        assert!(sb.sandbox.decisions().is_empty());
        // A total that never ends: the listing stops at the first empty page.
        sb.sandbox.set_faults(Faults {
            total_override: Some(1_000_000_000_000),
            ..Faults::default()
        });
        let out = e.cycle_once().await.unwrap();
        assert_eq!((out.listed, out.pages), (1, 2));
        // A page that repeats forever: stops when pages bring nothing new.
        sb.sandbox
            .add_pending((2..=60).map(|i| tx(i, json!({})).to_string()));
        sb.sandbox.set_faults(Faults {
            repeat_first_page: true,
            total_override: Some(1_000_000),
            ..Faults::default()
        });
        let out = e.cycle_once().await.unwrap();
        assert!(out.pages <= 3, "{out:?}");
        assert_eq!(sb.sandbox.stats().conflicts, 0);
        assert!(e.ledger().verify().await.unwrap().problems.is_empty());
    }
}
