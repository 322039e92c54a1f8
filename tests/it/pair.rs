//! A pair of `cosigner run` processes sharing one PostgreSQL ledger, against a sandbox process:
//! one leads and decides each transaction once, the other stands by and takes over when the
//! leader is killed, re-sending what the dead leader recorded but never sent; an SQLite ledger
//! migrated into PostgreSQL runs on. (The randomized failover suite is `failover.rs`.)

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use cosigner::ledger::postgres::PgLedger;
use serde_json::Value;

use crate::pg::Pg;
use crate::support::*;

pub(crate) const KEY: &str = "operator-key-pair-3f9a1c";

pub(crate) fn policy() -> String {
    format!(
        "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n\
         [[rule]]\nname = \"blocked\"\naction = \"reject\"\nto = [\"{BAD}\"]\n"
    )
}

/// Transactions `first..=last`: odd ids to the treasury (approved), even ones to the blocked
/// address (rejected).
pub(crate) fn items(first: u64, last: u64) -> Vec<String> {
    (first..=last)
        .map(|n| {
            let to = if n % 2 == 1 { TREASURY } else { BAD };
            item(TxId::new(n), HOT, to, "5", "195")
        })
        .collect()
}

/// One `cosigner run` of the pair, killed (SIGKILL) on drop.
pub(crate) struct Member {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration in `dir` for the ledger at `url` (password in a private file) under `name`.
pub(crate) fn pair_config(
    dir: &Path,
    sandbox_url: &str,
    url: &str,
    pg: &Pg,
    name: &str,
) -> (PathBuf, u16) {
    let cfg = write_config(dir, sandbox_url);
    std::fs::write(dir.join("policy.toml"), policy()).unwrap();
    std::fs::write(
        dir.join("api-keys"),
        format!("{}\n", cosigner::operator::digest(KEY)),
    )
    .unwrap();
    write_private(&dir.join("pg-password"), pg.password_text());
    let port = free_port();
    edit(
        &cfg,
        "[ledger]\npath = \"ledger.db\"\n",
        &format!("[ledger]\nurl = \"{url}\"\npassword_file = \"pg-password\"\nname = \"{name}\"\n"),
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    // A cycle held past the 1 s interval by a busy database is not abandoned: these suites are
    // about the pair, not the cycle deadline (bounded.rs tests that).
    text.push_str(&format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\napi_keys_file = \"api-keys\"\nmax_requests_per_second = 1000\n\
         [poll]\ninterval = \"1s\"\njitter = \"0s\"\ncycle_timeout = \"30s\"\n[collect]\nenabled = false\n[log]\nlevel = \"info\"\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    (cfg, port)
}

pub(crate) fn spawn_member(
    name: &'static str,
    sandbox_url: &str,
    url: &str,
    pg: &Pg,
    env: &[(&str, &str)],
) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = pair_config(dir.path(), sandbox_url, url, pg, name);
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut cmd = bin();
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    Member {
        name,
        child: cmd.spawn().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
        dir,
    }
}

impl Member {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// `cosigner_leader` and `cosigner_leader_epoch`, once the listener answers.
    pub(crate) async fn leadership(&self) -> Option<(u8, i64)> {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        // Integer gauges: their text is an integer.
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .map(|v| v.trim().to_string())
        };
        Some((
            value("cosigner_leader")?.parse().ok()?,
            value("cosigner_leader_epoch")?.parse().ok()?,
        ))
    }

    pub(crate) async fn readyz(&self) -> (u16, String) {
        let r = reqwest::get(format!("{}/readyz", self.base)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .basic_auth(KEY, Some(""))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// Waits until exactly one of `members` leads and every other one reports standing by;
/// returns the leader's index and epoch.
pub(crate) async fn one_leader(members: &[&Member]) -> (usize, i64) {
    let mut found = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while found.is_none() {
        let mut roles = Vec::new();
        for m in members {
            roles.push(m.leadership().await);
        }
        let leaders: Vec<(usize, i64)> = roles
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.filter(|(l, _)| *l == 1).map(|(_, e)| (i, e)))
            .collect();
        if leaders.len() == 1 && roles.iter().all(Option::is_some) {
            found = Some(leaders[0]);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader within 60 s: {roles:?}\n{}",
            members
                .iter()
                .map(|m| format!("--- {}:\n{}", m.name, m.log()))
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found.unwrap()
}

/// The sandbox's decisions, by transaction id: each id must appear once.
pub(crate) async fn decided_once(url: &str) -> std::collections::BTreeMap<TxId, Value> {
    let mut by_id = std::collections::BTreeMap::new();
    for d in sandbox_decisions(url).await {
        let id = TxId::new(d["id"].as_u64().unwrap());
        assert!(
            by_id.insert(id, d.clone()).is_none(),
            "transaction {id} decided twice at the server"
        );
    }
    by_id
}

pub(crate) async fn stats(url: &str) -> Value {
    reqwest::get(format!("{url}/_sandbox/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn wait_decided(url: &str, n: usize, members: &[&Member]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let decided = sandbox_decisions(url).await.len();
        if decided >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{decided} of {n} decided within 60 s\n{}",
            members
                .iter()
                .map(|m| format!("--- {}:\n{}", m.name, m.log()))
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn ledger(pg: &Pg, db: &str) -> PgLedger {
    PgLedger::connect(&pg.url(db, "disable"), Some(pg.password()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgresql_ledger_elect_one_leader_that_decides_each_transaction_once_and_the_standby_takes_over_when_it_is_killed()
 {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("pair").await;
    let url = pg.url("pair", "disable");
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 20)).await;

    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    let b = spawn_member("b", &sandbox.url, &url, &pg, &[]);
    let (leader, epoch) = one_leader(&[&a, &b]).await;
    let (leader, standby) = if leader == 0 { (a, b) } else { (b, a) };
    assert!(epoch >= 1, "{epoch}");

    wait_decided(&sandbox.url, 20, &[&leader, &standby]).await;
    let decided = decided_once(&sandbox.url).await;
    assert_eq!(decided.keys().copied().collect::<Vec<_>>(), ids(1..=20));
    for (id, d) in &decided {
        assert_eq!(
            d["status"].as_u64(),
            Some(if id.get() % 2 == 1 { 1 } else { 2 }),
            "{d}"
        );
    }

    // The standby says so, names the leader, and refuses a resume (409 naming it): only the
    // leader lifts a pause, though any member takes one (pause_pair.rs).
    let (status, body) = standby.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("standby") && body.contains(leader.name),
        "{body}"
    );
    wait_until("the leader is ready", Duration::from_secs(30), || async {
        leader.readyz().await.0 == 200
    })
    .await;
    let (status, body) = standby.call(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ledger"]["backend"], "postgres", "{body}");
    assert_eq!(body["leadership"]["role"], "standby", "{body}");
    assert_eq!(body["leadership"]["leader"], leader.name, "{body}");
    let (_, body) = leader.call(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(body["leadership"]["role"], "leader", "{body}");
    assert_eq!(body["leadership"]["epoch"], epoch, "{body}");
    let (status, body) = standby.call(reqwest::Method::POST, "/v1/resume").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(leader.name),
        "{body}"
    );
    assert_eq!(standby.leadership().await, Some((0, 0)));

    // The leader dies without a word; the standby takes over and decides what comes next.
    let old = leader.name;
    drop(leader); // SIGKILL
    post_pending(&sandbox.url, items(21, 30)).await;
    let (_, new_epoch) = one_leader(&[&standby]).await;
    assert!(new_epoch > epoch, "{new_epoch} after {epoch}");
    wait_decided(&sandbox.url, 30, &[&standby]).await;
    let decided = decided_once(&sandbox.url).await;
    assert_eq!(decided.len(), 30);
    assert_eq!(stats(&sandbox.url).await["conflicts"], 0);
    let (_, body) = standby.call(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(
        body["leadership"]["leader"], standby.name,
        "{body} (was {old})"
    );

    // One decision per transaction in the shared ledger, and its chain intact.
    let l = ledger(&pg, "pair").await;
    let counts = l.counts().await.unwrap();
    assert_eq!(
        (counts.get("approve"), counts.get("reject")),
        (Some(&15), Some(&15)),
        "{counts:?}"
    );
    assert!(l.verify().await.unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_a_dead_leader_recorded_but_never_sent_is_sent_by_the_next_leader_with_identical_data()
 {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("resend").await;
    let url = pg.url("resend", "disable");
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 1)).await;

    // The first leader records its approval and dies before anything leaves.
    let mut a = spawn_member(
        "a",
        &sandbox.url,
        &url,
        &pg,
        &[("COSIGNER_FAILPOINT", "after-record")],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while a.child.try_wait().unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "{}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.log().contains("fail point after-record"), "{}", a.log());
    assert!(sandbox_decisions(&sandbox.url).await.is_empty());
    let l = ledger(&pg, "resend").await;
    let recorded = l.history(TxId::new(1)).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let data = recorded[0].data.clone().expect("a signed approval");

    // The next leader finds it in the shared ledger and sends it as it was: not decided again.
    let b = spawn_member("b", &sandbox.url, &url, &pg, &[]);
    one_leader(&[&b]).await;
    wait_decided(&sandbox.url, 1, &[&a, &b]).await;
    let decided = decided_once(&sandbox.url).await;
    assert_eq!(decided[&TxId::new(1)]["status"], 1);
    assert_eq!(decided[&TxId::new(1)]["data"].as_str(), Some(data.as_str()));
    let history = l.history(TxId::new(1)).await.unwrap();
    assert_eq!(history.len(), 1, "decided again: {history:?}");
    assert!(l.verify().await.unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_ledger_migrated_into_postgresql_keeps_its_records_and_the_daemon_runs_on_it() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("moved").await;
    let url = pg.url("moved", "disable");
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 4)).await;

    // A single host decides on SQLite first.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(dir.path().join("policy.toml"), policy()).unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let out = run_bin(&["run", "--once", "--config", &cfg_s]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(sandbox_decisions(&sandbox.url).await.len(), 4);

    // Copied into PostgreSQL: counts printed, chain verified before and after.
    write_private(&dir.path().join("pg-password"), pg.password_text());
    let pw = dir.path().join("pg-password");
    let migrate = [
        "ledger",
        "migrate",
        "--config",
        &cfg_s,
        "--to",
        &url,
        "--password-file",
        pw.to_str().unwrap(),
    ];
    let out = run_bin(&migrate).await;
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("decisions 4"), "{text}");
    assert!(text.contains("verified before and after"), "{text}");
    assert!(!text.contains(pg.password_text()), "{text}");
    // Into an empty ledger only: a second copy is refused and changes nothing.
    let again = run_bin(&migrate).await;
    assert!(!again.status.success());
    assert!(
        all_output(&again).contains("already holds"),
        "{}",
        all_output(&again)
    );

    // The daemon then runs on the PostgreSQL ledger: what was decided stays decided, the rest
    // is decided once.
    edit(
        &cfg,
        "[ledger]\npath = \"ledger.db\"\n",
        &format!("[ledger]\nurl = \"{url}\"\npassword_file = \"pg-password\"\nname = \"moved\"\n"),
    );
    post_pending(&sandbox.url, items(5, 6)).await;
    let out = run_bin(&["run", "--once", "--config", &cfg_s]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let decided = decided_once(&sandbox.url).await;
    assert_eq!(decided.len(), 6);
    assert_eq!(stats(&sandbox.url).await["conflicts"], 0);
    let out = run_bin(&["ledger", "verify", "--config", &cfg_s]).await;
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("hash chain intact") && text.contains("postgres://"),
        "{text}"
    );
    let out = run_bin(&["ledger", "list", "--json", "--config", &cfg_s]).await;
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 6, "{}", all_output(&out));
    let out = run_bin(&["check", "--config", &cfg_s]).await;
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("hash chain intact") && text.contains("moved"),
        "{text}"
    );
}
