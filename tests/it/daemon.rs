//! The long-running daemon: schedule, collection, failures, metrics, readiness, shutdown, demo.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cosigner::daemon::{Timings, periodic};
use cosigner::ledger::SqliteLedger;
use cosigner_sandbox::server::{Faults, Scenario};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const POLICY: &str = r#"
default = "hold"
[[rule]]
name = "blocked"
action = "reject"
to = ["TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7"]
[[rule]]
name = "treasury"
action = "approve"
to = ["TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV"]
window = "1h"
max_count = 2
"#;

#[tokio::test(start_paused = true)]
async fn periodic_work_runs_at_start_then_on_schedule_and_a_slow_run_delays_the_next() {
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let runs = Arc::new(AtomicU32::new(0));
    let task = {
        let (starts, stop2, runs) = (starts.clone(), stop.clone(), runs.clone());
        tokio::spawn(periodic(
            Duration::from_millis(100),
            Duration::ZERO,
            stop.clone(),
            move || {
                let (starts, stop, runs) = (starts.clone(), stop2.clone(), runs.clone());
                async move {
                    let n = runs.fetch_add(1, Ordering::SeqCst);
                    let t = tokio::time::Instant::now();
                    // Runs 2 and 3 are slow: 250 ms, longer than the interval.
                    let took = if n == 2 || n == 3 { 250 } else { 10 };
                    tokio::time::sleep(Duration::from_millis(took)).await;
                    starts
                        .lock()
                        .unwrap()
                        .push((t, tokio::time::Instant::now()));
                    if n == 6 {
                        stop.cancel();
                    }
                }
            },
        ))
    };
    task.await.unwrap();
    let s = starts.lock().unwrap().clone();
    assert_eq!(s.len(), 7);
    let origin = s[0].0;
    let at: Vec<u128> = s.iter().map(|(b, _)| (*b - origin).as_millis()).collect();
    assert_eq!(
        &at[..3],
        &[0, 100, 200],
        "at start, then every interval: {at:?}"
    );
    for w in s.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "a run never starts before the previous one ended: {at:?}"
        );
    }
    assert_eq!(at[3], 450, "run 2 (200..450) delayed run 3: {at:?}");
    assert_eq!(at[4], 700, "run 3 (450..700) delayed run 4: {at:?}");
    assert_eq!(at[5], 800, "then back on a 100 ms schedule: {at:?}");
}

struct Running {
    sandbox: RunningSandbox,
    metrics_url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_daemon(scenario: Scenario, timings: Timings, extra_config: &str) -> Running {
    let sb = start_sandbox(scenario).await;
    start_daemon_on(sb, timings, extra_config).await
}

async fn start_daemon_on(sb: RunningSandbox, timings: Timings, extra_config: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &sb.url);
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let mut text = std::fs::read_to_string(&cfg_path).unwrap();
    text.push_str(extra_config);
    std::fs::write(&cfg_path, text).unwrap();
    let d = run_daemon(&cfg_path, timings).await;
    Running {
        sandbox: sb,
        metrics_url: d.base,
        stop: d.stop,
        task: d.task,
        _dir: dir,
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_runs_at_its_interval_for_main_coins_and_tokens() {
    let d = start_daemon(Scenario::default(), timings(3_600_000, 300), "").await;
    wait_until("three collection runs", Duration::from_secs(5), || async {
        d.sandbox.sandbox.collects().len() >= 6
    })
    .await;
    let c = d.sandbox.sandbox.collects();
    assert_eq!(
        c.iter().filter(|c| c.is_main == 1).count(),
        c.iter().filter(|c| c.is_main == 0).count().max(c.len() / 2)
    );
    let mains: Vec<u64> = c
        .iter()
        .filter(|c| c.is_main == 1)
        .map(|c| c.at_ms)
        .collect();
    for w in mains.windows(2) {
        assert!(w[1] - w[0] >= 250, "runs are an interval apart: {mains:?}");
    }
    d.stop.cancel();
    d.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_never_overlap_even_when_slower_than_the_interval() {
    let items = (1..=3)
        .map(|i| item(TxId::new(i), HOT, STRANGER, "1", "195"))
        .collect();
    let d = start_daemon(
        Scenario {
            pending: items,
            faults: Faults {
                latency: Duration::from_millis(150),
                ..Faults::default()
            },
        },
        timings(50, 3_600_000),
        "",
    )
    .await;
    wait_until("five pending requests", Duration::from_secs(10), || async {
        d.sandbox
            .sandbox
            .stats()
            .requests
            .get("/api/transaction/pending")
            .copied()
            .unwrap_or(0)
            >= 5
    })
    .await;
    assert_eq!(
        d.sandbox.sandbox.stats().max_in_flight["/api/transaction/pending"],
        1
    );
    d.stop.cancel();
    d.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cycle_is_counted_and_the_next_one_runs_on_time() {
    let sb = start_sandbox(Scenario {
        pending: vec![item(TxId::new(1), HOT, TREASURY, "1", "195")],
        faults: Faults::default(),
    })
    .await;
    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        error_paths: vec!["/api/transaction/pending".into()],
        ..Faults::default()
    });
    let d = start_daemon_on(sb, timings(100, 3_600_000), "").await;
    let url = format!("{}/metrics", d.metrics_url);
    wait_until("two failed cycles", Duration::from_secs(10), || async {
        metric(
            &get(&url).await.1,
            "cosigner_poll_runs_total{outcome=\"error\"}",
        )
        .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    d.sandbox.sandbox.set_faults(Faults::default());
    wait_until(
        "the transaction decided",
        Duration::from_secs(10),
        || async { d.sandbox.sandbox.decisions().len() == 1 },
    )
    .await;
    d.stop.cancel();
    d.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_a_known_scenario_with_the_right_values() {
    let items = vec![
        item(TxId::new(1), HOT, TREASURY, "10.5", "195"),
        item(TxId::new(2), HOT, BAD, "3", "195"),
        item(TxId::new(3), HOT, STRANGER, "7", "195"),
    ];
    let d = start_daemon(
        Scenario {
            pending: items,
            faults: Faults::default(),
        },
        timings(200, 3_600_000),
        "",
    )
    .await;
    let url = format!("{}/metrics", d.metrics_url);
    wait_until(
        "a second successful cycle",
        Duration::from_secs(10),
        || async {
            metric(
                &get(&url).await.1,
                "cosigner_poll_runs_total{outcome=\"ok\"}",
            )
            .unwrap_or(0.0)
                >= 2.0
        },
    )
    .await;
    let (status, text) = get(&url).await;
    assert_eq!(status, 200);
    let want = [
        (
            "cosigner_decisions_total{action=\"approve\",rule=\"treasury\"}",
            1.0,
        ),
        (
            "cosigner_decisions_total{action=\"reject\",rule=\"blocked\"}",
            1.0,
        ),
        (
            "cosigner_decisions_total{action=\"hold\",rule=\"(default)\"}",
            1.0,
        ),
        (
            "cosigner_submissions_total{endpoint=\"approve\",outcome=\"ok\"}",
            2.0,
        ),
        ("cosigner_pending_transactions", 1.0),
        ("cosigner_held_transactions", 1.0),
        ("cosigner_window_used_ratio{rule=\"treasury\"}", 0.5),
        ("cosigner_ledger_write_failures_total", 0.0),
        ("cosigner_build_info{version=\"0.1.0\"}", 1.0),
    ];
    for (name, value) in want {
        assert_eq!(metric(&text, name), Some(value), "{name} in\n{text}");
    }
    for name in [
        "cosigner_api_request_duration_seconds_bucket{endpoint=\"pending\"",
        "cosigner_poll_duration_seconds_count",
        "cosigner_last_successful_poll_timestamp_seconds",
        "cosigner_last_successful_collect_timestamp_seconds",
        "cosigner_collect_runs_total{kind=\"main\",outcome=\"ok\"}",
        "cosigner_policy_info{sha256=\"",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    assert!(
        !text.contains(TREASURY) && !text.contains("tx_id"),
        "no addresses or ids in labels"
    );
    assert!(!text.contains(API_SECRET));
    d.stop.cancel();
    d.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_the_sandbox_goes_away_and_ready_when_it_returns() {
    let mut sandbox = spawn_sandbox(&[]);
    let port = sandbox.url.rsplit(':').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &sandbox.url);
    let d = run_daemon(&cfg_path, timings(100, 3_600_000)).await;
    let base = d.base.clone();
    let url = format!("{base}/readyz");
    let (code, body) = get(&url).await;
    assert!(
        code == 503 && body.contains("no successful poll yet") || code == 200,
        "{code} {body}"
    );
    wait_until("ready", Duration::from_secs(10), || async {
        get(&url).await.0 == 200
    })
    .await;
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    sandbox.kill();
    wait_until("unready", Duration::from_secs(10), || async {
        get(&url).await.0 == 503
    })
    .await;
    let (_, body) = get(&url).await;
    assert!(body.contains("last successful poll"), "{body}");
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "alive while unready"
    );

    let _back = spawn_sandbox(&["--listen", &format!("127.0.0.1:{port}")]);
    wait_until("ready again", Duration::from_secs(15), || async {
        get(&url).await.0 == 200
    })
    .await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_backlog_exits_0_with_every_sent_approval_recorded() {
    let sandbox = spawn_sandbox(&[]);
    let http = reqwest::Client::new();
    let items: Vec<serde_json::Value> = (1..=300)
        .map(|i| serde_json::from_str(&item(TxId::new(i), HOT, TREASURY, "1", "195")).unwrap())
        .collect();
    http.post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&items)
        .send()
        .await
        .unwrap();
    http.put(format!("{}/_sandbox/faults", sandbox.url))
        .body(r#"{"latency":"15ms"}"#)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(dir.path().join("policy.toml"), "default = \"approve\"\n").unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace("[key]", "max_in_flight = 4\n[key]");
    text.push_str("[http]\nlisten = \"127.0.0.1:0\"\n[poll]\ninterval = \"1h\"\njitter = \"0s\"\n[collect]\nenabled = false\n");
    std::fs::write(&cfg, text).unwrap();
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let decided = || async {
        let v: Vec<serde_json::Value> = http
            .get(format!("{}/_sandbox/decisions", sandbox.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v
    };
    wait_until(
        "some approvals at the sandbox",
        Duration::from_secs(20),
        || async { decided().await.len() >= 20 },
    )
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let at_sandbox = decided().await;
    assert!(
        at_sandbox.len() < 300,
        "stopped mid-backlog ({} of 300 sent)",
        at_sandbox.len()
    );
    let ledger = SqliteLedger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    for d in &at_sandbox {
        let id = TxId::new(d["id"].as_u64().unwrap());
        let h = ledger.history(id).unwrap();
        assert!(
            h.iter().any(|r| r.data.as_deref() == d["data"].as_str()),
            "approval of {id} sent without its record"
        );
    }
    assert!(ledger.verify().unwrap().problems.is_empty());
}

#[test]
fn the_dashboard_and_alerts_use_only_metrics_the_daemon_exports() {
    use cosigner::metrics::{CollectKind, ModeLabel, PollOutcome, Submission};
    let m = cosigner::metrics::Metrics::new().unwrap();
    // Give every labelled family a child so that the registry renders its name.
    m.decisions.with_label_values(&["approve", "r"]).inc();
    m.count_submission(Submission::Approve, true);
    m.api_duration.with_label_values(&["pending"]).observe(0.1);
    m.count_poll(PollOutcome::Ok);
    m.count_collect(CollectKind::Main, true);
    m.window_used.with_label_values(&["r"]).set(0.1);
    m.set_mode(ModeLabel::Normal);
    let exported = m.render();
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("cosigner_") {
                    assert!(
                        exported.contains(word),
                        "{} queries {word}, which the daemon does not export",
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    let alerts = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus-alerts.yml"),
    )
    .unwrap();
    for word in alerts.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("cosigner_") {
            assert!(
                exported.contains(word),
                "an alert uses {word}, which the daemon does not export"
            );
            checked += 1;
        }
    }
    assert!(checked >= 22, "{checked}");
}
