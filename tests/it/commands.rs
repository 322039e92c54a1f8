//! The library functions behind `cosigner check`, `policy explain` and `pause`/`resume`, driven
//! directly: the findings the preflight check returns, the plan explain shows against what the
//! ledger holds, and what switching the mode does with and without a running daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use cosigner::check::{Finding, Level, preflight};
use cosigner::client::parse_pending_item;
use cosigner::config::{Config, Environment};
use cosigner::control::Mode;
use cosigner::cycle::PollSettings;
use cosigner::domain::Action;
use cosigner::explain::explain;
use cosigner::killswitch::{Reach, SwitchError, Switched, switch};
use cosigner::ledger::{EventKind, SqliteLedger};
use cosigner::plan::Plan;
use cosigner_sandbox::server::Scenario;

use crate::support::*;

const KEY: &str = "cos_test_switch_key_0001";

fn level_of<'a>(findings: impl IntoIterator<Item = &'a Finding>, what: &str) -> Vec<Level> {
    findings
        .into_iter()
        .filter(|f| f.what == what)
        .map(|f| f.level)
        .collect()
}

#[tokio::test]
async fn preflight_of_a_valid_config_returns_an_ok_finding_for_every_part_and_stays_offline() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    let report = preflight(&cfg, &Environment::default(), false).await;
    assert!(report.config_loaded, "{report:?}");
    assert!(
        !report.local_failed() && !report.online_failed(),
        "{report:?}"
    );
    assert!(report.online.is_empty(), "offline: no call made");
    for what in [
        "config",
        "api secret",
        "key",
        "policy",
        "ledger",
        "http.listen",
    ] {
        assert_eq!(
            level_of(&report.local, what),
            [Level::Ok],
            "{what}: {report:?}"
        );
    }
    let key = report.local.iter().find(|f| f.what == "key").unwrap();
    assert!(key.detail.contains("2048-bit RSA"), "{key:?}");
    assert!(
        report.findings().all(|f| !f.detail.contains(API_SECRET)),
        "secret in a finding: {report:?}"
    );
    assert!(
        !d.path().join("ledger.db").exists(),
        "preflight creates nothing"
    );
}

#[tokio::test]
async fn preflight_of_an_unloadable_config_stops_at_one_failure_that_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.toml");
    let report = preflight(&missing, &Environment::default(), true).await;
    assert!(!report.config_loaded && report.local_failed(), "{report:?}");
    assert_eq!(report.local.len(), 1, "nothing else checked: {report:?}");
    assert_eq!(report.local[0].what, "config");
    assert!(report.local[0].detail.contains("nope.toml"), "{report:?}");
    assert!(report.online.is_empty(), "no call with no configuration");
}

#[tokio::test]
async fn preflight_fails_example_credentials_and_an_inline_secret_others_can_read_unless_it_came_from_the_environment()
 {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    edit(
        &cfg,
        &format!("merchant_no = \"{MERCHANT}\""),
        "merchant_no = \"mer0000000000000001\"",
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = preflight(&cfg, &Environment::default(), false).await;
    assert!(report.local_failed(), "{report:?}");
    assert_eq!(level_of(&report.local, "api.merchant_no"), [Level::Fail]);
    assert_eq!(level_of(&report.local, "api secret"), [Level::Fail]);

    let env = Environment {
        overrides: vec![("COSIGNER_API__API_SECRET".into(), API_SECRET.into())],
        credentials_directory: None,
    };
    let report = preflight(&cfg, &env, false).await;
    let secret: Vec<_> = report
        .local
        .iter()
        .filter(|f| f.what == "api secret")
        .collect();
    assert_eq!(secret.len(), 1, "{report:?}");
    assert_eq!(secret[0].level, Level::Ok);
    assert_eq!(secret[0].detail, "inline, from the environment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_online_authenticates_against_the_sandbox_and_a_refused_secret_fails_only_online()
{
    let sandbox = start_sandbox(Scenario::default()).await;
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), &sandbox.url);
    let report = preflight(&cfg, &Environment::default(), true).await;
    assert!(
        !report.local_failed() && !report.online_failed(),
        "{report:?}"
    );
    assert_eq!(
        level_of(&report.online, "online"),
        [Level::Ok],
        "{report:?}"
    );
    assert!(
        report.online[0]
            .detail
            .contains(&format!("authenticated to {}", sandbox.url))
            && report.online[0].detail.contains(MERCHANT),
        "{report:?}"
    );
    assert_eq!(level_of(&report.online, "clock"), [Level::Ok], "{report:?}");

    edit(
        &cfg,
        &format!("api_secret = \"{API_SECRET}\""),
        "api_secret = \"CANARY-not-the-secret-0a1b\"",
    );
    let report = preflight(&cfg, &Environment::default(), true).await;
    assert!(!report.local_failed(), "{report:?}");
    assert!(report.online_failed(), "{report:?}");
    assert_eq!(
        report.online.len(),
        1,
        "no clock without an answer: {report:?}"
    );
    assert!(
        report.online[0].detail.contains("credentials refused"),
        "{report:?}"
    );
}

/// A config in `dir` whose daemon accepts the operator key [`KEY`].
fn config_with_operator_key(dir: &Path, url: &str) -> std::path::PathBuf {
    let cfg = write_config(dir, url);
    std::fs::write(
        dir.join("api-keys"),
        format!("{}\n", cosigner::operator::digest(KEY)),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[http]\nlisten = \"127.0.0.1:0\"\napi_keys_file = \"api-keys\"\n");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn recorded_mode(ledger: &Path) -> Option<Mode> {
    let l = SqliteLedger::open_read_only(ledger).unwrap();
    l.latest_event(EventKind::Mode)
        .unwrap()
        .and_then(|d| Mode::from_event_detail(&d))
}

#[tokio::test]
async fn switching_with_no_daemon_records_the_mode_in_the_ledger_for_the_next_start() {
    let d = tempfile::tempdir().unwrap();
    let cfg_path = config_with_operator_key(d.path(), "http://127.0.0.1:9");
    let cfg = Config::load_with(&cfg_path, &Environment::default()).unwrap();
    let done = switch(&cfg, Mode::Reject, None, &Reach::default())
        .await
        .unwrap();
    assert_eq!(
        done,
        Switched::Recorded {
            ledger: cfg.ledger.path.clone()
        }
    );
    assert_eq!(recorded_mode(&cfg.ledger.path), Some(Mode::Reject));
    switch(&cfg, Mode::Normal, None, &Reach::default())
        .await
        .unwrap();
    assert_eq!(recorded_mode(&cfg.ledger.path), Some(Mode::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_while_the_daemon_runs_goes_through_its_operator_api_with_the_key_and_never_around_it()
 {
    let sandbox = start_sandbox(Scenario::default()).await;
    let d = tempfile::tempdir().unwrap();
    let cfg_path = config_with_operator_key(d.path(), &sandbox.url);
    let daemon = run_daemon(&cfg_path, timings(100, 3_600_000)).await;
    let mut cfg = Config::load_with(&cfg_path, &Environment::default()).unwrap();
    // The in-process daemon listens on a port of its own: point the configuration at it, as
    // http.listen points at a daemon started with it.
    cfg.http.listen = daemon.base.trim_start_matches("http://").parse().unwrap();
    let http = reqwest::Client::new();
    wait_until("the daemon answers", Duration::from_secs(10), || async {
        http.get(format!("{}/healthz", daemon.base))
            .send()
            .await
            .is_ok()
    })
    .await;

    let key_file = d.path().join("operator-key");
    write_private(&key_file, &format!("{KEY}\n"));
    let done = switch(&cfg, Mode::Hold, Some(&key_file), &Reach::default())
        .await
        .unwrap();
    assert_eq!(
        done,
        Switched::Live {
            addr: cfg.http.listen
        }
    );
    // The daemon records the mode before putting it in force; read beside it, read-only.
    assert_eq!(recorded_mode(&cfg.ledger.path), Some(Mode::Hold));

    // A wrong key is refused by the daemon (exit 1), and the mode stays.
    let wrong = d.path().join("wrong-key");
    write_private(&wrong, "cos_not_a_key_at_all_0002");
    let e = switch(&cfg, Mode::Normal, Some(&wrong), &Reach::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SwitchError::Refused { status, .. } if status.as_u16() == 401)
            && !e.is_usage(),
        "{e:?}"
    );
    assert!(
        !e.to_string().contains("cos_not_a_key"),
        "the key is not echoed: {e}"
    );
    // A key file others can read is refused before any call (exit 2), naming the file.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = switch(&cfg, Mode::Normal, Some(&key_file), &Reach::default())
        .await
        .unwrap_err();
    assert!(
        e.is_usage() && e.to_string().contains("operator-key"),
        "{e}"
    );
    assert_eq!(
        recorded_mode(&cfg.ledger.path),
        Some(Mode::Hold),
        "the refused switches changed nothing"
    );
    daemon.shutdown().await;
}

const TREASURY_POLICY: &str = "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\nwindow = \"24h\"\nmax_count = 5\n";

fn explained(dir: &Path, tx: &str) -> cosigner::explain::Explanation {
    let policy = cosigner::policy::load(&dir.join("policy.toml")).unwrap();
    let tx = parse_pending_item(tx).unwrap();
    let now = cosigner::clock::Clock::system().now_ms();
    // The longest text the fixtures' 2048-bit key signs; these transactions are far shorter.
    explain(
        &policy,
        &dir.join("ledger.db"),
        245,
        Duration::from_secs(30),
        &tx,
        now,
    )
    .unwrap()
}

#[tokio::test]
async fn explain_plans_from_the_ledger_what_the_daemon_did_and_reads_the_mode_it_recorded() {
    let sb = start_sandbox(Scenario::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let approved = item(TxId::new(7), HOT, TREASURY, "5", "195");
    std::fs::write(dir.path().join("policy.toml"), TREASURY_POLICY).unwrap();

    // No ledger yet: zero usage, normal mode, and every rule traced.
    let e = explained(dir.path(), &approved);
    assert_eq!((e.ledger.as_deref(), e.mode), (None, Mode::Normal));
    let Plan::Decide(eval) = &e.plan else {
        panic!("{:?}", e.plan)
    };
    assert_eq!((eval.action, &*eval.rule), (Action::Approve, "treasury"));
    assert_eq!(eval.trace.len(), 1, "{eval:?}");
    assert_eq!(eval.trace[0].window.map(|w| w.count), Some(0));
    assert!(
        !dir.path().join("ledger.db").exists(),
        "explain creates nothing"
    );

    // The daemon approves it: explain now finds the accepted record and plans nothing new.
    sb.sandbox.add_pending([approved.clone()]);
    let engine = engine_for(
        dir.path(),
        &sb.url,
        TREASURY_POLICY,
        PollSettings {
            page_size: 10,
            max_in_flight: 4,
            dry_run: false,
            ..PollSettings::default()
        },
    );
    engine.cycle_once().await.unwrap();
    assert_eq!(sb.sandbox.decisions().len(), 1);
    drop(engine);
    let e = explained(dir.path(), &approved);
    assert_eq!(
        e.ledger.as_deref(),
        Some(dir.path().join("ledger.db").as_path())
    );
    assert!(matches!(e.plan, Plan::Done { .. }), "{:?}", e.plan);
    assert_eq!(
        e.state.live.as_ref().map(|l| l.action),
        Some(Action::Approve)
    );
    // Another id to the same address counts the approval in the window.
    let e = explained(dir.path(), &item(TxId::new(8), HOT, TREASURY, "5", "195"));
    let Plan::Decide(eval) = &e.plan else {
        panic!("{:?}", e.plan)
    };
    assert_eq!(eval.trace[0].window.map(|w| w.count), Some(1), "{eval:?}");

    // The kill switch recorded by `pause`: explain holds what the policy would approve.
    let cfg = write_config(dir.path(), &sb.url);
    std::fs::write(dir.path().join("policy.toml"), TREASURY_POLICY).unwrap();
    let cfg = Config::load_with(&cfg, &Environment::default()).unwrap();
    switch(&cfg, Mode::Hold, None, &Reach::default())
        .await
        .unwrap();
    let e = explained(dir.path(), &item(TxId::new(9), HOT, TREASURY, "5", "195"));
    assert_eq!(e.mode, Mode::Hold);
    assert_eq!(e.plan.action(None), Action::Hold, "{:?}", e.plan);
}
