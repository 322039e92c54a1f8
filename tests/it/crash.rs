//! The crash suite: the real daemon against a sandbox process with a backlog, killed with
//! SIGKILL at a random moment (up to 400 ms after its first API request, or every fourth run up
//! to 400 ms after its start) and aborted at named fail points, restarted, again and again.
//! After each run: no transaction got two different decisions (or a re-send with other `data`),
//! the window limit holds, every approval the sandbox accepted is in the ledger, and the ledger
//! verifies. At the end every transaction is decided or held as the policy says.
//!
//! The suite runs once on each ledger back end: SQLite, and PostgreSQL (where a killed
//! daemon's successor must first take the lead the dead one held).
//!
//! 50 kills by default; `COSIGNER_CRASH_KILLS=1000 cargo test crash -- --nocapture` for more.

use std::time::Duration;

use cosigner::domain::Action;
use serde_json::Value;

use crate::store::Store;
use crate::support::*;

/// The backlog at the start; each run then finds `PER_RUN` new withdrawals.
const BACKLOG: u64 = 100;
const PER_RUN: u64 = 6;

async fn sandbox_json(http: &reqwest::Client, url: &str, what: &str) -> Value {
    http.get(format!("{url}/_sandbox/{what}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// API requests the sandbox has answered (or faulted) so far.
async fn api_requests(http: &reqwest::Client, url: &str) -> u64 {
    sandbox_json(http, url, "stats").await["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

crate::store::on_each_back_end!(
    crash_suite:
    killed_at_random_moments_and_at_fail_points_it_never_decides_twice_or_breaks_a_limit,
    on_postgresql_killed_at_random_moments_and_at_fail_points_it_never_decides_twice_or_breaks_a_limit
);

async fn crash_suite(store: Store) {
    let kills: usize = std::env::var("COSIGNER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let txs = BACKLOG + PER_RUN * kills as u64;
    // Three quarters of everything fits in the window; the rest must be held.
    let max_count = txs * 3 / 4;
    let sandbox = spawn_sandbox(&[]);
    let http = reqwest::Client::new();
    let items_between = |from: u64, to: u64| -> Vec<Value> {
        (from..=to)
            .map(|i| {
                serde_json::from_str(&item(
                    TxId::new(i),
                    HOT,
                    TREASURY,
                    &format!("{}.{}", i % 50 + 1, i % 10),
                    "195",
                ))
                .unwrap()
            })
            .collect()
    };
    http.post(format!("{}/_sandbox/pending", sandbox.url))
        .json(&items_between(1, BACKLOG))
        .send()
        .await
        .unwrap();
    http.put(format!("{}/_sandbox/faults", sandbox.url))
        .body(r#"{"latency":"8ms"}"#)
        .send()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    store.configure(&cfg);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"24h\"\nmax_count = {max_count}\n"),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace("[key]", "max_in_flight = 4\n[key]");
    // A clean run must finish its cycle however loaded the machine: the 1 s interval is not
    // its deadline (bounded.rs tests the deadline).
    text.push_str("[http]\nlisten = \"127.0.0.1:0\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\ncycle_timeout = \"120s\"\npage_size = 20\n[collect]\nenabled = false\n[log]\nlevel = \"warn\"\n");
    std::fs::write(&cfg, text).unwrap();

    let points = [
        "after-record:0.5",
        "before-request:0.05",
        "after-request:0.05",
    ];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut aborted, mut killed) = (0, 0);
    let mut fired: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 0..kills {
        let first = BACKLOG + PER_RUN * i as u64 + 1;
        http.post(format!("{}/_sandbox/pending", sandbox.url))
            .json(&items_between(first, first + PER_RUN - 1))
            .send()
            .await
            .unwrap();
        let mut cmd = bin();
        cmd.args(["run", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if i % 2 == 0 {
            cmd.env("COSIGNER_FAILPOINT", points[(i / 2) % points.len()]);
        }
        let before = api_requests(&http, &sandbox.url).await;
        let mut child = cmd.spawn().unwrap();
        // The kill comes at a random moment after the run's first API request (once it works,
        // whatever its back end takes to start: PostgreSQL connects and takes the lead first),
        // and every fourth run at a random moment from its start (start-up itself: opening or
        // creating the ledger, taking the lead, the first records).
        let spawned = tokio::time::Instant::now();
        let mut deadline = (i % 4 == 1).then(|| spawned + Duration::from_millis(rand() % 400));
        loop {
            if child.try_wait().unwrap().is_some() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                let point = err
                    .lines()
                    .find_map(|l| l.strip_prefix("fail point "))
                    .and_then(|l| l.split(':').next());
                let point =
                    point.unwrap_or_else(|| panic!("run {i} exited without a fail point: {err}"));
                *fired.entry(point.to_string()).or_insert(0) += 1;
                aborted += 1;
                break;
            }
            let now = tokio::time::Instant::now();
            if deadline.is_none() && api_requests(&http, &sandbox.url).await > before {
                deadline = Some(now + Duration::from_millis(rand() % 400));
            }
            assert!(
                deadline.is_some() || now - spawned < Duration::from_secs(30),
                "run {i} made no API request in 30 s"
            );
            if deadline.is_some_and(|d| now >= d) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stats = sandbox_json(&http, &sandbox.url, "stats").await;
        assert_eq!(
            stats["conflicts"], 0,
            "after run {i}: a transaction got a second, different decision: {stats}"
        );
        let decisions = sandbox_json(&http, &sandbox.url, "decisions").await;
        let approved = decisions
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == 1)
            .count() as u64;
        assert!(
            approved <= max_count,
            "after run {i}: {approved} approvals exceed the window limit {max_count}"
        );
        let ledger = store.reader(dir.path()).await;
        let report = ledger.verify().await.unwrap();
        assert!(
            report.problems.is_empty(),
            "after run {i}: {:?}",
            report.problems
        );
        for d in decisions.as_array().unwrap() {
            let id = TxId::new(d["id"].as_u64().unwrap());
            let h = ledger.history(id).await.unwrap();
            assert!(
                h.iter().any(|r| r.data.as_deref() == d["data"].as_str()),
                "after run {i}: the sandbox accepted {} without a ledger record of that data",
                d["id"]
            );
        }
    }
    assert!(killed + aborted == kills);
    let decided_under_kills = sandbox_json(&http, &sandbox.url, "decisions")
        .await
        .as_array()
        .unwrap()
        .len();

    // A clean run to the end: every transaction decided or held as the policy says.
    let out = run_bin(&["run", "--once", "--config", cfg.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let out = run_bin(&["run", "--once", "--config", cfg.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let decisions = sandbox_json(&http, &sandbox.url, "decisions").await;
    let approved: Vec<TxId> = decisions
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == 1)
        .map(|d| TxId::new(d["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        approved.len() as u64,
        max_count,
        "exactly the window's worth approved"
    );
    assert!(
        decisions
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == 1),
        "nothing rejected"
    );
    let ledger = store.reader(dir.path()).await;
    for id in ids(1..=txs) {
        let h = ledger.history(id).await.unwrap();
        let last = h
            .last()
            .unwrap_or_else(|| panic!("transaction {id} never decided"));
        if approved.contains(&id) {
            assert!(h.iter().any(|r| r.action == Action::Approve));
        } else {
            assert_eq!(last.action, Action::Hold, "transaction {id}");
            assert!(
                last.reason.contains("window count"),
                "{id}: {}",
                last.reason
            );
        }
    }
    let recorded_approvals = ledger
        .counts()
        .await
        .unwrap()
        .get("approve")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        recorded_approvals, max_count,
        "window totals equal the recorded approvals"
    );
    eprintln!(
        "crash suite on {}: {kills} runs, {killed} SIGKILLs, {aborted} fail-point aborts {fired:?}, {} approvals of {txs} ({decided_under_kills} of them made by runs that were killed)",
        store.name(),
        approved.len()
    );
}
