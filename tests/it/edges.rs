//! The edges hold: the operator API's budgets and key scope (a polling client never locks the
//! pause out, the metrics key cannot resume), `check` refusing what `run` refuses, a ledger
//! carrying a trigger refused, the chain's known limit (a cut tail with its head moved back),
//! a secret from the environment taken as given, and look-alike hosts, origins and content types
//! that never pause the daemon.
//!
//! From issue 10's review (the edges): each test is one attack; a failing test is a hole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::*;
use cosigner::ledger::EventKind;

const OPERATOR_KEY: &str = "cos_review10_operator_key";
/// The key Prometheus (`http.metrics_auth`) is given: scoped to `/metrics` in the keys file.
const READER_KEY: &str = "cos_review10_dashboard_key";

/// A config on `sandbox_url` with both keys accepted and `http` settings `extra`, listening on a
/// fixed free port (the pause command reads it from the config); returns (config, base URL).
fn setup(dir: &Path, sandbox_url: &str, extra: &str) -> (PathBuf, String) {
    let cfg = write_config(dir, sandbox_url);
    std::fs::write(
        dir.join("api-keys"),
        format!(
            "{}\n{} metrics\n",
            cosigner::operator::digest(OPERATOR_KEY),
            cosigner::operator::digest(READER_KEY)
        ),
    )
    .unwrap();
    let port = free_port();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\napi_keys_file = \"api-keys\"\n{extra}"
    ));
    std::fs::write(&cfg, text).unwrap();
    write_private(&dir.join("operator-key"), &format!("{OPERATOR_KEY}\n"));
    (cfg, format!("http://127.0.0.1:{port}"))
}

fn spawn_run(cfg: &Path) -> std::process::Child {
    bin()
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_for_listener(http: &reqwest::Client, base: &str) {
    wait_until("the daemon answers", Duration::from_secs(10), || async {
        http.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
}

async fn mode(http: &reqwest::Client, base: &str) -> String {
    let v: Value = http
        .get(format!("{base}/v1/status"))
        .basic_auth(OPERATOR_KEY, Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["mode"].as_str().unwrap_or_default().to_string()
}

/// A dashboard (or a script in a retry loop) polls `/v1/status` with its own, valid key as
/// fast as it can. The kill switch must still work: it is the one call that cannot wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_polling_reads_with_a_valid_key_never_makes_the_pause_command_answer_429() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, base) = setup(dir.path(), &sandbox.url, "max_requests_per_second = 2\n");
    let mut child = spawn_run(&cfg);
    let http = reqwest::Client::new();
    wait_for_listener(&http, &base).await;
    let stop = CancellationToken::new();
    let poller = tokio::spawn({
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        async move {
            let mut codes = std::collections::BTreeSet::new();
            while !stop.is_cancelled() {
                if let Ok(r) = http
                    .get(format!("{base}/v1/status"))
                    .basic_auth(READER_KEY, Some(""))
                    .send()
                    .await
                {
                    codes.insert(r.status().as_u16());
                }
            }
            codes
        }
    });
    // Let the poller spend the budget first, as it would have long before an incident.
    wait_until(
        "the poller is throttled",
        Duration::from_secs(10),
        || async {
            let r = http
                .get(format!("{base}/v1/status"))
                .basic_auth(READER_KEY, Some(""))
                .send()
                .await;
            r.is_ok_and(|r| r.status() == 429)
        },
    )
    .await;
    let pause = run_bin(&[
        "pause",
        "--config",
        cfg.to_str().unwrap(),
        "--api-key-file",
        dir.path().join("operator-key").to_str().unwrap(),
    ])
    .await;
    stop.cancel();
    let codes = poller.await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(codes.contains(&429), "the poller was throttled: {codes:?}");
    assert!(
        pause.status.success(),
        "the operator could not pause: {}",
        all_output(&pause)
    );
}

/// With `http.metrics_auth`, Prometheus holds an operator API key in its scrape config (often
/// on another host). That credential must not be able to lift a pause an operator put in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_given_to_prometheus_for_metrics_cannot_resume_a_pause() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, base) = setup(
        dir.path(),
        &sandbox.url,
        "max_requests_per_second = 1000\nmetrics_auth = true\n",
    );
    let mut child = spawn_run(&cfg);
    let http = reqwest::Client::new();
    wait_for_listener(&http, &base).await;
    let pause = run_bin(&[
        "pause",
        "--config",
        cfg.to_str().unwrap(),
        "--api-key-file",
        dir.path().join("operator-key").to_str().unwrap(),
    ])
    .await;
    assert!(pause.status.success(), "{}", all_output(&pause));
    assert_eq!(mode(&http, &base).await, "hold");
    // What Prometheus does with its key, and what the same key can also do.
    let scrape = http
        .get(format!("{base}/metrics"))
        .basic_auth(READER_KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    let resume = http
        .post(format!("{base}/v1/resume"))
        .basic_auth(READER_KEY, Some(""))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let status = resume.status().as_u16();
    let now = mode(&http, &base).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(status, 200, "the scrape key resumed the daemon");
    assert_eq!(now, "hold", "the pause must hold");
}

/// A ledger with three decisions made by `run --once`; returns (dir, config).
async fn ledger_with_records() -> (tempfile::TempDir, String, SandboxProcess) {
    let sandbox = spawn_sandbox(&[]);
    let items: Vec<Value> = (1..=3)
        .map(|i| serde_json::from_str(&item(TxId::new(i), HOT, TREASURY, "1", "195")).unwrap())
        .collect();
    reqwest::Client::new()
        .post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&items)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    let c = cfg.to_str().unwrap().to_string();
    let out = run_bin(&["run", "--once", "--config", &c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    (dir, c, sandbox)
}

/// `check` says "ok" only to what will work when the daemon starts: the daemon refuses a ledger
/// whose chain does not verify, so `check` must not pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_a_ledger_the_daemon_refuses_to_start_on() {
    let (dir, c, _sandbox) = ledger_with_records().await;
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    conn.execute("UPDATE decisions SET amount = '999' WHERE tx_id = 2", [])
        .unwrap();
    drop(conn);
    let run = run_bin(&["run", "--once", "--config", &c]).await;
    assert_eq!(run.status.code(), Some(1), "{}", all_output(&run));
    let check = run_bin(&["check", "--config", &c]).await;
    let text = all_output(&check);
    assert_ne!(
        check.status.code(),
        Some(0),
        "check passed a ledger `run` refuses: {text}"
    );
    assert!(text.contains("ledger verify"), "{text}");
}

/// A known limitation, asserted as it stands: records cut from the end of an SQLite ledger, with
/// the stored head moved back to the record before them, go unnoticed by `ledger verify`; here
/// the cut record is a pause, so the daemon would start in normal mode. The chain is an unkeyed
/// SHA-256 and its head sits in the same file, so whoever can write the file can do this; that
/// is the service user, whose access also reads the key shard, so the attack gains little a
/// thief of that access does not already have. A head signed with a key the file's writer lacks
/// would catch it. The day it is caught, this test fails: turn it round to assert that
/// `ledger verify` exits 1 naming the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_cut_from_the_end_of_the_ledger_with_its_head_moved_back_goes_unnoticed_today() {
    let (dir, c, _sandbox) = ledger_with_records().await;
    let out = run_bin(&["pause", "--config", &c]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let db = dir.path().join("ledger.db");
    {
        let l = cosigner::ledger::SqliteLedger::open_read_only(&db).unwrap();
        assert_eq!(
            l.latest_event(EventKind::Mode)
                .unwrap()
                .map(|d| d.contains("\"hold\"")),
            Some(true)
        );
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let last: i64 = conn
        .query_row(
            "SELECT seq FROM events WHERE kind = 'mode' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute("DELETE FROM events WHERE seq = ?1", [last])
        .unwrap();
    // The record before it, wherever it is, becomes the head.
    let prev: (i64, String) = conn
        .query_row(
            "SELECT seq, hash FROM (SELECT seq, hash FROM decisions UNION ALL SELECT seq, hash FROM outcomes \
             UNION ALL SELECT seq, hash FROM collects UNION ALL SELECT seq, hash FROM events) \
             ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'head'",
        [format!("{}:{}", prev.0, prev.1)],
    )
    .unwrap();
    drop(conn);
    let verify = run_bin(&["ledger", "verify", "--config", &c]).await;
    assert_eq!(
        verify.status.code(),
        Some(0),
        "ledger verify now notices records cut from the end with the head moved back: the known \
         limitation is fixed, so turn this test round (expect exit 1 naming the cut): {}",
        all_output(&verify)
    );
    // What the cut hides: the ledger's latest mode record is no longer the pause.
    let l = cosigner::ledger::SqliteLedger::open_read_only(&db).unwrap();
    assert_ne!(
        l.latest_event(EventKind::Mode)
            .unwrap()
            .map(|d| d.contains("\"hold\"")),
        Some(true),
        "the pause is still the latest mode record: the cut did not remove it"
    );
}

/// The loader reads override values "like TOML scalars", so an API secret of digits with a
/// leading zero given in `COSIGNER_API__API_SECRET` becomes a number and loses its zeros: the
/// daemon then signs with another secret than the one 1BitPay holds, and `check` says ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_secret_from_the_environment_is_used_exactly_as_given() {
    const SECRET: &str = "0731552901";
    let sandbox = spawn_sandbox_with_secret(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    let text: String = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("api_secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&cfg, text).unwrap();
    for (value, want) in [(SECRET, SECRET), ("+5", "+5"), ("\"quoted\"", "\"quoted\"")] {
        let env = cosigner::config::Environment {
            overrides: vec![("COSIGNER_API__API_SECRET".into(), value.into())],
            ..Default::default()
        };
        let c = cosigner::config::Config::load_with(&cfg, &env).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(c.api.client.api_secret.expose_secret(), want, "{value}");
    }
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            bin()
                .args(["run", "--once", "--config"])
                .arg(&cfg)
                .env("COSIGNER_API__API_SECRET", SECRET)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
}

/// `ledger verify` (and the check at start) walks the rows but not the schema: a trigger added
/// to the file rewrites every approval the daemon records as a dry run, which the window query
/// skips, so a `max_count = 1` rule approves again and again for as long as the daemon runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_carrying_a_trigger_is_refused_before_it_can_hide_approvals_from_the_window() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"24h\"\nmax_count = 1\n"),
    )
    .unwrap();
    let db = dir.path().join("ledger.db");
    drop(cosigner::ledger::SqliteLedger::open(&db).unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER hide AFTER INSERT ON decisions BEGIN \
         UPDATE decisions SET dry_run = 1 WHERE seq = NEW.seq; END;",
    )
    .unwrap();
    drop(conn);
    let verify = run_bin(&["ledger", "verify", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(verify.status.code(), Some(1), "{}", all_output(&verify));
    assert!(
        all_output(&verify).contains("trigger \"hide\""),
        "{}",
        all_output(&verify)
    );
    // The daemon refuses it at start, so nothing is decided, let alone sent.
    let out = run_bin(&["run", "--once", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("trigger \"hide\""),
        "{}",
        all_output(&out)
    );
    post_pending(
        &sandbox.url,
        vec![item(TxId::new(1), HOT, TREASURY, "1", "195")],
    )
    .await;
    let out = run_bin(&["run", "--once", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(sandbox_decisions(&sandbox.url).await.is_empty());
    let check = run_bin(&["check", "--config", cfg.to_str().unwrap()]).await;
    assert_ne!(check.status.code(), Some(0), "{}", all_output(&check));
}

/// Browser shapes not covered elsewhere, sent with a valid key (as if the browser had cached
/// it): look-alike `Host` literals, odd `Origin`s, and content types that only resemble JSON.
/// None may change the mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_hosts_origins_and_content_types_never_pause_the_daemon() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = setup(dir.path(), &sandbox.url, "max_requests_per_second = 1000\n");
    let d = run_daemon(&cfg, timings(3_600_000, 3_600_000)).await;
    let port = d.base.rsplit(':').next().unwrap().to_string();
    let http = reqwest::Client::new();
    let own_host = format!("127.0.0.1:{port}");
    let json = "application/json".to_string();
    let cases: Vec<(u16, String, Option<String>, String)> = vec![
        (
            403,
            format!("[::ffff:127.0.0.1]:{port}"),
            None,
            json.clone(),
        ),
        (403, format!("localhost.:{port}"), None, json.clone()),
        (403, format!("127.1:{port}"), None, json.clone()),
        (403, format!("2130706433:{port}"), None, json.clone()),
        (403, format!("127.0.0.1.nip.io:{port}"), None, json.clone()),
        (403, "127.0.0.1".to_string(), None, json.clone()),
        (403, own_host.clone(), Some("null".into()), json.clone()),
        (
            403,
            own_host.clone(),
            Some(format!("http://{own_host}.attacker.example")),
            json.clone(),
        ),
        (
            403,
            own_host.clone(),
            Some(format!("https://{own_host}")),
            json.clone(),
        ),
        (
            403,
            own_host.clone(),
            Some(format!("http://localhost:{port}")),
            json.clone(),
        ),
        (
            415,
            own_host.clone(),
            None,
            "text/plain; application/json".into(),
        ),
        (415, own_host.clone(), None, "application/jsonp".into()),
        (415, own_host.clone(), None, "application/json-seq".into()),
        (415, own_host.clone(), None, "text/json".into()),
    ];
    for (want, host, origin, ct) in cases {
        let mut req = http
            .post(format!("{}/v1/pause", d.base))
            .basic_auth(OPERATOR_KEY, Some(""))
            .header("host", &host)
            .header("content-type", &ct)
            .body("{\"mode\":\"reject\"}");
        if let Some(o) = &origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            want,
            "Host {host:?}, Origin {origin:?}, Content-Type {ct:?}"
        );
    }
    assert_eq!(mode(&http, &d.base).await, "normal");
    d.shutdown().await;
}
