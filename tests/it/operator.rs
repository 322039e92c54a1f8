//! Production controls: the operator API, live policy reload, the kill switch, order callbacks,
//! shadow replay.

use std::path::Path;
use std::time::Duration;

use cosigner::client::signature::{self, SignOrder};
use cosigner::ledger::EventKind;
use cosigner_sandbox::server::{Faults, Scenario};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const KEY: &str = "cos_test_operator_key_0001";

const POLICY: &str = "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\n";

struct Daemon {
    sandbox: RunningSandbox,
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Daemon {
    async fn stop(self) -> (RunningSandbox, tempfile::TempDir) {
        self.stop.cancel();
        self.task.await.unwrap();
        (self.sandbox, self.dir)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method_is_post = method == reqwest::Method::POST;
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.basic_auth(k, Some(""));
        }
        if let Some(b) = body {
            req = req.json(&b);
        } else if method_is_post {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Posts an order callback as 1BitPay would: (status, body).
    async fn callback(&self, body: Value) -> (u16, Value) {
        let url = format!("{}/callbacks/order", self.base);
        let r = self.http.post(url).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    }

    /// A `/metrics` scrape, without a key.
    async fn metrics(&self) -> String {
        let r = self.http.get(format!("{}/metrics", self.base)).send();
        r.await.unwrap().text().await.unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(KEY), None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(KEY), body)
            .await
    }
}

fn setup_dir(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    let cfg = write_config(dir, url);
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    std::fs::write(
        dir.join("api-keys"),
        format!("# operators\n{}\n", cosigner::operator::digest(KEY)),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("[http]\nlisten = \"127.0.0.1:0\"\napi_keys_file = \"api-keys\"\nmax_requests_per_second = 1000\n{extra}"));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

async fn start(sandbox: RunningSandbox, dir: tempfile::TempDir, extra: &str) -> Daemon {
    let cfg_path = setup_dir(dir.path(), &sandbox.url, extra);
    let d = run_daemon(&cfg_path, timings(100, 3_600_000)).await;
    let (base, stop, task) = (d.base, d.stop, d.task);
    Daemon {
        sandbox,
        base,
        stop,
        task,
        dir,
        http: reqwest::Client::new(),
    }
}

async fn start_fresh(items: Vec<String>, extra: &str) -> Daemon {
    let sb = start_sandbox(Scenario {
        pending: items,
        faults: Faults::default(),
    })
    .await;
    start(sb, tempfile::tempdir().unwrap(), extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_route_refuses_without_a_valid_key_and_answers_with_one() {
    let d = start_fresh(vec![item(TxId::new(1), HOT, TREASURY, "1", "195")], "").await;
    wait_until("decided", Duration::from_secs(10), || async {
        d.sandbox.sandbox.decisions().len() == 1
    })
    .await;
    let (_, list) = d.get("/v1/decisions").await;
    let one = format!("/v1/decisions/{}", list["data"][0]["id"]);
    let routes = [
        (reqwest::Method::GET, "/v1/decisions"),
        (reqwest::Method::GET, one.as_str()),
        (reqwest::Method::GET, "/v1/status"),
        (reqwest::Method::GET, "/v1/policy"),
        (reqwest::Method::POST, "/v1/policy/reload"),
        (reqwest::Method::POST, "/v1/pause"),
        (reqwest::Method::POST, "/v1/resume"),
    ];
    for (m, path) in &routes {
        for key in [None, Some("wrong-key")] {
            let (status, body) = d.call(m.clone(), path, key, None).await;
            assert_eq!(status, 401, "{m} {path} with {key:?}");
            assert_eq!(body["type"], "authentication_error", "{body}");
            assert!(body["message"].is_string());
        }
        let (status, body) = d.call(m.clone(), path, Some(KEY), None).await;
        assert_eq!(status, 200, "{m} {path}: {body}");
    }
    let (_, status) = d.get("/v1/status").await;
    assert_eq!(status["object"], "status");
    assert_eq!(status["mode"], "normal");
    assert!(status["policy"]["sha256"].as_str().unwrap().len() == 64);
    let (_, policy) = d.get("/v1/policy").await;
    assert_eq!(policy["rules"][0]["name"], "treasury");
    let (code, body) = d.get("/v1/decisions/999").await;
    assert_eq!(
        (code, body["type"].as_str()),
        (404, Some("invalid_request_error"))
    );
    let (code, body) = d.get("/v1/decisions?limit=500").await;
    assert_eq!(
        (code, body["type"].as_str()),
        (400, Some("invalid_request_error")),
        "{body}"
    );
    let (code, _) = d.get("/healthz").await;
    assert_eq!(code, 200, "health needs no key");
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("cosigner_operator_requests_total{route=\"/v1/status\",status=\"401\"} 2"),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_api_is_rate_limited() {
    let d = start_fresh(vec![], "").await;
    // Rebuild with a budget of 2 per second: the third call in a burst is refused.
    let (sb, dir) = d.stop().await;
    let text = std::fs::read_to_string(dir.path().join("cosigner.toml"))
        .unwrap()
        .replace(
            "max_requests_per_second = 1000",
            "max_requests_per_second = 2",
        );
    std::fs::write(dir.path().join("cosigner.toml"), &text).unwrap();
    let d = run_daemon(
        &dir.path().join("cosigner.toml"),
        timings(3_600_000, 3_600_000),
    )
    .await;
    let base = d.base.clone();
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = http
            .get(format!("{base}/v1/status"))
            .basic_auth(KEY, Some(""))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["type"], "rate_limit_error");
        }
    }
    assert_eq!(&codes[..2], &[200, 200]);
    assert!(codes[2..].contains(&429), "{codes:?}");
    d.shutdown().await;
    drop(sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_page_forwards_and_backwards_by_cursor_with_filters() {
    let items = (1..=25)
        .map(|i| {
            item(
                TxId::new(i),
                HOT,
                if i % 2 == 0 { TREASURY } else { STRANGER },
                "1",
                "195",
            )
        })
        .collect();
    let d = start_fresh(items, "").await;
    wait_until("25 decisions", Duration::from_secs(10), || async {
        d.get("/v1/decisions?limit=100").await.1["data"]
            .as_array()
            .map_or(0, |a| a.len())
            == 25
    })
    .await;
    let ids = |v: &Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let (_, p1) = d.get("/v1/decisions?limit=10").await;
    assert_eq!(p1["object"], "list");
    assert_eq!(p1["url"], "/v1/decisions");
    assert_eq!(p1["has_more"], true);
    let first = ids(&p1);
    assert_eq!(first.len(), 10);
    assert!(
        first.windows(2).all(|w| w[0] > w[1]),
        "newest first: {first:?}"
    );
    let (_, p2) = d
        .get(&format!(
            "/v1/decisions?limit=10&starting_after={}",
            first[9]
        ))
        .await;
    let second = ids(&p2);
    assert_eq!(second.len(), 10);
    assert!(second[0] < first[9]);
    let (_, p3) = d
        .get(&format!(
            "/v1/decisions?limit=10&starting_after={}",
            second[9]
        ))
        .await;
    assert_eq!(p3["has_more"], false);
    let third = ids(&p3);
    // Backwards from the second page returns the first page again.
    let (_, back) = d
        .get(&format!(
            "/v1/decisions?limit=10&ending_before={}",
            second[0]
        ))
        .await;
    assert_eq!(ids(&back), first);
    assert_eq!(back["has_more"], false, "nothing newer than the first page");
    let all: Vec<u64> = first.iter().chain(&second).chain(&third).copied().collect();
    let mut sorted = all.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "every decision exactly once");

    let (_, approvals) = d.get("/v1/decisions?limit=100&action=approve").await;
    assert_eq!(approvals["data"].as_array().unwrap().len(), 12);
    assert!(
        approvals["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["action"] == "approve" && x["rule"] == "treasury")
    );
    let (_, one) = d.get("/v1/decisions?tx_id=7").await;
    assert_eq!(one["data"][0]["tx_id"], 7);
    assert_eq!(one["data"][0]["transaction"]["to"], STRANGER);
    let (_, by_rule) = d.get("/v1/decisions?rule=(default)&limit=100").await;
    assert_eq!(by_rule["data"].as_array().unwrap().len(), 13);
    let (code, _) = d
        .get("/v1/decisions?starting_after=5&ending_before=2")
        .await;
    assert_eq!(code, 400);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_api_keys_file_and_reloading_revokes_every_key() {
    // Issue 19, repro 9: a reload kept the old keys when the file was gone.
    let d = start_fresh(vec![], "").await;
    assert_eq!(d.get("/v1/status").await.0, 200);
    std::fs::remove_file(d.dir.path().join("api-keys")).unwrap();
    let (code, body) = d.post("/v1/policy/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["api_keys"], 0, "{body}");
    let (code, body) = d.get("/v1/status").await;
    assert_eq!(code, 401, "the revoked key still works: {body}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_policy_reload_takes_effect_and_an_invalid_one_keeps_the_old_policy() {
    let d = start_fresh(vec![item(TxId::new(1), HOT, STRANGER, "1", "195")], "").await;
    wait_until("held", Duration::from_secs(10), || async {
        d.get("/v1/decisions").await.1["data"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let (_, before) = d.get("/v1/policy").await;
    let old = before["sha256"].as_str().unwrap().to_string();

    std::fs::write(d.dir.path().join("policy.toml"), "default = \"hold\"\n[[rule]]\nname = \"broken\"\naction = \"approve\"\nmax_amount = \"-1\"\n").unwrap();
    let (code, body) = d.post("/v1/policy/reload", None).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["type"], "invalid_request_error");
    assert!(
        body["message"].as_str().unwrap().contains("max_amount"),
        "{body}"
    );
    assert_eq!(body["detail"]["kept"], old.as_str());
    assert_eq!(d.get("/v1/policy").await.1["sha256"], old.as_str());

    std::fs::write(
        d.dir.path().join("policy.toml"),
        format!(
            "{POLICY}[[rule]]\nname = \"strangers\"\naction = \"approve\"\nto = [\"{STRANGER}\"]\n"
        ),
    )
    .unwrap();
    let (code, body) = d.post("/v1/policy/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["previous"], old.as_str());
    let new = body["sha256"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    wait_until(
        "approved under the new policy",
        Duration::from_secs(10),
        || async { d.sandbox.sandbox.decisions().len() == 1 },
    )
    .await;
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("cosigner_policy_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cosigner_policy_reloads_total{outcome=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("cosigner_policy_info{{sha256=\"{new}\"}} 1")),
        "{metrics}"
    );
    let (_, newest) = d.get("/v1/decisions?limit=1").await;
    assert_eq!(newest["data"][0]["policy_sha256"], new.as_str());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_everything_survives_a_restart_and_resume_lets_the_policy_decide() {
    let d = start_fresh(vec![], "").await;
    let (code, body) = d.post("/v1/pause", None).await;
    assert_eq!((code, body["mode"].as_str()), (200, Some("hold")));
    d.sandbox
        .sandbox
        .add_pending([item(TxId::new(1), HOT, TREASURY, "1", "195")]);
    wait_until("held", Duration::from_secs(10), || async {
        d.get("/v1/decisions?tx_id=1").await.1["data"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let (_, dec) = d.get("/v1/decisions?tx_id=1").await;
    assert_eq!(
        (
            dec["data"][0]["action"].as_str(),
            dec["data"][0]["rule"].as_str()
        ),
        (Some("hold"), Some("(paused)"))
    );
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("cosigner_mode{mode=\"hold\"} 1"),
        "{metrics}"
    );

    // Restart on the same ledger: still paused.
    let (sb, dir) = d.stop().await;
    let d = start(sb, dir, "").await;
    assert_eq!(d.get("/v1/status").await.1["mode"], "hold");
    let cycles = || async {
        d.metrics()
            .await
            .lines()
            .find(|l| l.starts_with("cosigner_poll_runs_total{outcome=\"ok\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_until(
        "two cycles after the restart",
        Duration::from_secs(10),
        || async { cycles().await >= 2.0 },
    )
    .await;
    assert!(
        d.sandbox.sandbox.decisions().is_empty(),
        "nothing approved while paused"
    );

    let (code, body) = d.post("/v1/resume", None).await;
    assert_eq!((code, body["mode"].as_str()), (200, Some("normal")));
    wait_until("approved after resume", Duration::from_secs(10), || async {
        d.sandbox.sandbox.decisions().len() == 1
    })
    .await;

    let (code, body) = d.post("/v1/pause", Some(json!({"mode": "reject"}))).await;
    assert_eq!((code, body["mode"].as_str()), (200, Some("reject")));
    d.sandbox
        .sandbox
        .add_pending([item(TxId::new(2), HOT, TREASURY, "1", "195")]);
    wait_until(
        "rejected while in reject-all",
        Duration::from_secs(10),
        || async { d.sandbox.sandbox.decisions().len() == 2 },
    )
    .await;
    assert_eq!(d.sandbox.sandbox.decisions()[1].status, 2);
    let (code, _) = d.post("/v1/pause", Some(json!({"mode": "sideways"}))).await;
    assert_eq!(code, 400);
    d.stop().await;
}

#[test]
fn the_pause_command_without_a_daemon_records_the_mode_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup_dir(dir.path(), "http://127.0.0.1:9", "");
    let out = bin()
        .args(["pause", "--reject", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(all_output(&out).contains("mode reject recorded"));
    let ledger =
        cosigner::ledger::SqliteLedger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    assert!(
        ledger
            .latest_event(EventKind::Mode)
            .unwrap()
            .unwrap()
            .contains("reject")
    );
    let out = bin()
        .args(["resume", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    let ledger =
        cosigner::ledger::SqliteLedger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    assert!(
        ledger
            .latest_event(EventKind::Mode)
            .unwrap()
            .unwrap()
            .contains("normal")
    );
    assert!(ledger.verify().unwrap().problems.is_empty());
}

/// Runs `cosigner run` with `cfg`'s listener moved to a free port (the pause command reads the
/// address from the config); returns the process and the listener's base URL.
fn spawn_daemon_on_free_port(cfg: &Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(cfg).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(cfg, text).unwrap();
    let child = bin()
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_the_pause_command_reaches_a_running_daemon() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup_dir(dir.path(), &sandbox.url, "");
    let (mut child, base) = spawn_daemon_on_free_port(&cfg);
    let http = reqwest::Client::new();
    let policy_hash = || async {
        let r = http
            .get(format!("{base}/v1/policy"))
            .basic_auth(KEY, Some(""))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["sha256"].as_str().map(str::to_owned)
    };
    wait_until("the daemon answers", Duration::from_secs(10), || async {
        policy_hash().await.is_some()
    })
    .await;
    let old = policy_hash().await.unwrap();
    std::fs::write(dir.path().join("policy.toml"), "default = \"reject\"\n").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    wait_until(
        "the new policy in force",
        Duration::from_secs(10),
        || async { policy_hash().await.is_some_and(|h| h != old) },
    )
    .await;

    write_private(&dir.path().join("key"), &format!("{KEY}\n"));
    let out = run_bin(&[
        "pause",
        "--config",
        cfg.to_str().unwrap(),
        "--api-key-file",
        dir.path().join("key").to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", all_output(&out));
    let status: Value = http
        .get(format!("{base}/v1/status"))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["mode"], "hold");
    let out = run_bin(&["resume", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "no key given: {}",
        all_output(&out)
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn signed_callback(fields: Value, secret: &str) -> Value {
    let body = fields.to_string();
    let params = signature::body_params(&body).unwrap();
    let canonical = signature::canonical_string(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignOrder::CaseInsensitive,
    );
    let mut v = fields;
    v["signature"] = Value::String(signature::request_signature(&canonical, secret));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_callbacks_are_verified_recorded_once_and_answered_with_the_success_envelope() {
    let d = start_fresh(vec![], "[callbacks]\nenabled = true\n").await;
    let cb = json!({"status": 9, "dealAmount": 10.11, "orderNo": "1231222112d8123", "merchantOrderNo": "m-1", "orderType": 1});
    let good = signed_callback(cb.clone(), API_SECRET);
    let post = |body: Value| d.callback(body);
    let (code, body) = post(good.clone()).await;
    assert_eq!(
        (code, body.clone()),
        (200, json!({"code": 200, "message": "Success"}))
    );
    let (code, _) = post(good.clone()).await;
    assert_eq!(code, 200, "a repeated delivery is acknowledged");
    let bad = signed_callback(cb.clone(), "not-the-secret");
    let (code, body) = post(bad).await;
    assert_eq!(code, 401);
    assert_ne!(body["code"], 200);
    let mut tampered = good.clone();
    tampered["dealAmount"] = json!(99.99);
    assert_eq!(post(tampered).await.0, 401);
    let (sb, dir) = d.stop().await;
    let ledger =
        cosigner::ledger::SqliteLedger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    let orders = ledger.list_events(EventKind::Order).unwrap();
    assert_eq!(orders.len(), 1, "recorded once: {orders:?}");
    assert!(orders[0].contains("dealAmount=10.11"));
    drop(sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_route_is_absent_unless_enabled() {
    let d = start_fresh(vec![], "").await;
    let r = d
        .http
        .post(format!("{}/callbacks/order", d.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_replay_prints_the_decisions_a_candidate_policy_would_change() {
    let items = vec![
        item(TxId::new(1), HOT, TREASURY, "5", "195"),
        item(TxId::new(2), HOT, TREASURY, "500", "195"),
        item(TxId::new(3), HOT, STRANGER, "7", "195"),
    ];
    let d = start_fresh(items, "").await;
    wait_until("three decisions", Duration::from_secs(10), || async {
        d.get("/v1/decisions").await.1["data"]
            .as_array()
            .is_some_and(|a| a.len() == 3)
    })
    .await;
    let (sb, dir) = d.stop().await;
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(&candidate, format!("default = \"reject\"\n[[rule]]\nname = \"small treasury\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nmax_amount = \"100\"\n")).unwrap();
    let cfg = dir.path().join("cosigner.toml");
    let out = bin()
        .args(["policy", "replay", "--config"])
        .arg(&cfg)
        .arg("--policy")
        .arg(&candidate)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("replayed 3 transaction(s)"), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|w| ["approve", "reject", "hold"].contains(&w))
        })
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["2", "approve", "reject"]),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["3", "hold", "reject"]),
        "{text}"
    );
    assert!(text.contains("2 decision(s) would change"));
    drop(sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_requests_never_makes_the_pause_command_answer_429() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup_dir(dir.path(), &sandbox.url, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "max_requests_per_second = 1000",
        "max_requests_per_second = 2",
    );
    std::fs::write(&cfg, text).unwrap();
    let (mut child, base) = spawn_daemon_on_free_port(&cfg);
    let http = reqwest::Client::new();
    wait_until("the daemon answers", Duration::from_secs(10), || async {
        http.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    // A local process floods the API with bad keys for as long as the operator acts.
    let stop = CancellationToken::new();
    let flood = tokio::spawn({
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        async move {
            let mut codes = std::collections::BTreeSet::new();
            while !stop.is_cancelled() {
                let r = http
                    .post(format!("{base}/v1/pause"))
                    .basic_auth("not-a-key", Some(""))
                    .header("content-type", "application/json")
                    .send()
                    .await
                    .unwrap();
                codes.insert(r.status().as_u16());
            }
            codes
        }
    });
    write_private(&dir.path().join("key"), &format!("{KEY}\n"));
    let key_file = dir.path().join("key");
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--api-key-file",
        key_file.to_str().unwrap(),
    ];
    let pause = run_bin(&[&["pause"], &args[..]].concat()).await;
    let resume = run_bin(&[&["resume"], &args[..]].concat()).await;
    stop.cancel();
    let codes = flood.await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(codes.contains(&429), "the flood was throttled: {codes:?}");
    assert!(!codes.contains(&200), "{codes:?}");
    assert!(pause.status.success(), "{}", all_output(&pause));
    assert!(resume.status.success(), "{}", all_output(&resume));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_web_page_can_drive_the_operator_api() {
    let d = start_fresh(vec![], "").await;
    let port = d.base.rsplit(':').next().unwrap().to_string();
    let send = |method: reqwest::Method, path: &str, headers: Vec<(&str, String)>| {
        let mut req = d
            .http
            .request(method, format!("{}{path}", d.base))
            .basic_auth(KEY, Some(""));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            let challenge = r.headers().contains_key("www-authenticate");
            (
                r.status().as_u16(),
                challenge,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let json_type = || ("content-type", "application/json".to_string());
    // A cross-site form posts text/plain or a form encoding: no preflight, so it is refused.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (code, _, body) = send(
            reqwest::Method::POST,
            "/v1/pause",
            vec![("content-type", ct.into())],
        )
        .await;
        assert_eq!(code, 415, "{ct}: {body}");
        assert_eq!(body["type"], "invalid_request_error");
    }
    let (code, _, _) = send(reqwest::Method::POST, "/v1/pause", vec![]).await;
    assert_eq!(code, 415, "no content type");
    // A page of another origin, even with the right content type (its preflight is never granted).
    let (code, _, body) = send(
        reqwest::Method::POST,
        "/v1/pause",
        vec![json_type(), ("origin", "http://evil.example".into())],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    // DNS rebinding: a name that resolves to loopback, for reads too.
    for (m, path) in [
        (reqwest::Method::POST, "/v1/resume"),
        (reqwest::Method::GET, "/v1/status"),
    ] {
        let (code, _, body) = send(
            m,
            path,
            vec![json_type(), ("host", format!("rebind.example:{port}"))],
        )
        .await;
        assert_eq!(code, 403, "{path}: {body}");
    }
    let (code, _, _) = send(
        reqwest::Method::GET,
        "/v1/status",
        vec![(
            "host",
            format!("127.0.0.1:{}", port.parse::<u16>().unwrap() + 1),
        )],
    )
    .await;
    assert_eq!(code, 403, "another port");
    // The listener's own names, and its own origin, pass.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (code, _, body) = send(
            reqwest::Method::POST,
            "/v1/pause",
            vec![
                json_type(),
                ("host", host.clone()),
                ("origin", format!("http://{host}")),
            ],
        )
        .await;
        assert_eq!(code, 200, "{host}: {body}");
    }
    assert_eq!(d.post("/v1/resume", None).await.0, 200);
    // No Basic challenge: a browser must never prompt for the key and cache it.
    let r = d
        .http
        .get(format!("{}/v1/status", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        !r.headers().contains_key("www-authenticate"),
        "{:?}",
        r.headers()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_decision_id_numeric_or_not_is_404() {
    let d = start_fresh(vec![], "").await;
    for id in ["999", "abc", "-1", "1.0", "18446744073709551616"] {
        let (code, body) = d.get(&format!("/v1/decisions/{id}")).await;
        assert_eq!(
            (code, body["type"].as_str()),
            (404, Some("invalid_request_error")),
            "{id}: {body}"
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_an_operator_key() {
    let d = start_fresh(vec![], "metrics_auth = true\n").await;
    let url = format!("{}/metrics", d.base);
    let r = d.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .http
        .get(&url)
        .basic_auth("wrong", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .http
        .get(&url)
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("cosigner_build_info"));
    let (code, _) = d.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(code, 200, "health stays open");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_whose_values_re_cut_the_signed_string_or_whose_fields_differ_is_refused() {
    let d = start_fresh(vec![], "[callbacks]\nenabled = true\n").await;
    let genuine = signed_callback(
        json!({"status": 9, "dealAmount": "10", "orderNo": "o-1", "merchantOrderNo": "m-1", "orderType": 1}),
        API_SECRET,
    );
    let sig = genuine["signature"].clone();
    let post = |body: Value| d.callback(body);
    // The same signed string cut differently: one value carries the others, the rest are empty
    // (empty values are left out of the string), so the genuine signature matches it.
    let shifted = json!({
        "dealAmount": "10&merchantOrderNo=m-1&orderNo=o-1&orderType=1&status=9",
        "merchantOrderNo": "", "orderNo": "", "orderType": "", "status": "", "signature": sig,
    });
    let mut extra = genuine.clone();
    extra["note"] = json!("");
    let mut no_type = genuine.clone();
    no_type.as_object_mut().unwrap().remove("orderType");
    let mut equals = genuine.clone();
    equals["orderNo"] = json!("o=1");
    for (what, body) in [
        ("shifted", shifted),
        ("extra field", extra),
        ("missing field", no_type),
        ("'=' in a value", equals),
    ] {
        let (code, reply) = post(body).await;
        assert_ne!(code, 200, "{what}: {reply}");
        assert_ne!(
            reply["code"], 200,
            "{what}: 1BitPay must not take it as delivered"
        );
    }
    let mut wrong_case = genuine.clone();
    wrong_case["signature"] = json!(sig.as_str().unwrap().to_uppercase());
    assert_eq!(post(wrong_case).await.0, 200, "hex case does not matter");
    let mut short = genuine.clone();
    short["signature"] = json!(&sig.as_str().unwrap()[..31]);
    assert_eq!(post(short).await.0, 401);
    let (sb, dir) = d.stop().await;
    let ledger =
        cosigner::ledger::SqliteLedger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    assert_eq!(
        ledger.list_events(EventKind::Order).unwrap().len(),
        1,
        "only the genuine one"
    );
    drop(sb);
}

/// The `cosigner_operator_requests_total` lines of a `/metrics` scrape.
async fn operator_request_counts(d: &Daemon) -> Vec<String> {
    d.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("cosigner_operator_requests_total{"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_a_route_is_counted_under_its_pattern_refusals_included_and_unknown_paths_are_not()
 {
    let d = start_fresh(vec![], "[callbacks]\nenabled = true\n").await;
    let port = d.base.rsplit(':').next().unwrap().to_string();
    assert_eq!(d.get("/v1/decisions/abc").await.0, 404);
    assert_eq!(d.get("/v1/decisions/999").await.0, 404);
    assert_eq!(d.get("/v1/policy").await.0, 200);
    let r = d
        .http
        .post(format!("{}/v1/pause", d.base))
        .basic_auth(KEY, Some(""))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = d
        .http
        .get(format!("{}/v1/status", d.base))
        .basic_auth(KEY, Some(""))
        .header("host", format!("rebind.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(d.callback(json!({})).await.0, 400);
    let r = d
        .http
        .post(format!("{}/callbacks/order", d.base))
        .header("content-type", "application/json")
        .body(b"{\"orderNo\": \"\xff\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 400, "the callback's own envelope: {body}");
    assert_eq!(d.get("/v1/no-such-route").await.0, 404);
    let counts = operator_request_counts(&d).await;
    for line in [
        "cosigner_operator_requests_total{route=\"/v1/decisions/{id}\",status=\"404\"} 2",
        "cosigner_operator_requests_total{route=\"/v1/policy\",status=\"200\"} 1",
        "cosigner_operator_requests_total{route=\"/v1/pause\",status=\"415\"} 1",
        "cosigner_operator_requests_total{route=\"/v1/status\",status=\"403\"} 1",
        "cosigner_operator_requests_total{route=\"/callbacks/order\",status=\"400\"} 2",
    ] {
        assert!(counts.iter().any(|l| l == line), "{line} in {counts:#?}");
    }
    assert_eq!(counts.len(), 5, "nothing else, no raw path: {counts:#?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_checked_after_the_host_and_before_anything_the_request_carries() {
    let d = start_fresh(vec![], "").await;
    let port = d.base.rsplit(':').next().unwrap().to_string();
    let pause = |key: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>| {
        let mut req = d.http.post(format!("{}/v1/pause", d.base)).body(body);
        if let Some(k) = key {
            req = req.basic_auth(k, Some(""));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let json_type = ("content-type", "application/json");
    let rebind = format!("rebind.example:{port}");
    let (code, body) = pause(None, &[json_type, ("host", rebind.as_str())], vec![]).await;
    assert_eq!(code, 403, "the Host first: {body}");
    for (headers, body) in [
        (vec![("content-type", "text/plain")], b"{}".to_vec()),
        (
            vec![json_type, ("origin", "http://evil.example")],
            b"{}".to_vec(),
        ),
        (vec![json_type], b"{\"mode\": \"reject\xff\"}".to_vec()),
        (vec![json_type], b"{\"mode\": \"surprise\"}".to_vec()),
    ] {
        for key in [None, Some("wrong-key")] {
            let (code, answer) = pause(key, &headers, body.clone()).await;
            assert_eq!(
                (code, answer["type"].as_str()),
                (401, Some("authentication_error")),
                "{headers:?} {key:?}: {answer}"
            );
        }
    }
    let (code, body) = pause(
        Some(KEY),
        &[json_type],
        b"{\"mode\": \"reject\xff\"}".to_vec(),
    )
    .await;
    assert_eq!(
        (code, body["type"].as_str()),
        (400, Some("invalid_request_error")),
        "with the key, the body is read and refused: {body}"
    );
    let (_, status) = d.get("/v1/status").await;
    assert_eq!(status["mode"], "normal", "no refused call changed the mode");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_metrics_scrapes_never_spend_the_budget_an_operator_needs() {
    let d = start_fresh(vec![], "metrics_auth = true\n").await;
    let (sb, dir) = d.stop().await;
    let cfg = dir.path().join("cosigner.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "max_requests_per_second = 1000",
        "max_requests_per_second = 2",
    );
    std::fs::write(&cfg, &text).unwrap();
    let d = run_daemon(&cfg, timings(3_600_000, 3_600_000)).await;
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let r = http
            .get(format!("{}/metrics", d.base))
            .basic_auth("wrong-key", Some(""))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["type"], "authentication_error", "{body}");
    }
    let r = http
        .get(format!("{}/v1/status", d.base))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    d.shutdown().await;
    drop(sb);
}
