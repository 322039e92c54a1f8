//! A pair over PostgreSQL keeps its promise under faults and hostile databases, through real
//! processes and a real PostgreSQL: a commit whose answer is lost, the database restarted under
//! the leader, the lock connection killed while the pool lives on, a pause carried across a
//! takeover whose first read of the mode fails, the password inline in `ledger.url`, a database
//! holding tables no cosigner made, and an edited row.
//!
//! From issue 13's review (attacks on the pair).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use cosigner::domain::Action;

use crate::pair::*;
use crate::pg::Pg;
use crate::support::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A TCP proxy in front of PostgreSQL that loses the answer to one commit: the first `COMMIT`
/// a connection sends after inserting decisions reaches the server, its answer never comes back,
/// and once the test has seen the commit land the connection is cut.
struct CommitCutter {
    port: u16,
    cut: Arc<AtomicBool>,
    release: Arc<Notify>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl CommitCutter {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(AtomicBool::new(false));
        let release = Arc::new(Notify::new());
        let (a, c, r) = (armed.clone(), cut.clone(), release.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, a.clone(), c.clone(), r.clone()));
            }
        });
        Self {
            port,
            cut,
            release,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        }
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    release: Arc<Notify>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let deaf = Arc::new(AtomicBool::new(false));
    let deaf_up = deaf.clone();
    let up = async move {
        let mut saw_insert = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            saw_insert |= contains(chunk, b"INSERT INTO decisions");
            let commit = contains(chunk, b"COMMIT");
            let cut_here = saw_insert && commit && armed.swap(false, Ordering::SeqCst);
            if commit {
                saw_insert = false;
            }
            if cut_here {
                // Nothing the server says from now on reaches the client.
                deaf_up.store(true, Ordering::SeqCst);
            }
            if sw.write_all(chunk).await.is_err() {
                return;
            }
            if cut_here {
                cut.store(true, Ordering::SeqCst);
                release.notified().await;
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if deaf.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side ending drops both halves of both sockets: the connection is cut.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_whose_commit_answer_is_lost_are_found_recorded_and_sent_once_with_their_recorded_data()
 {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("lostack").await;
    let cutter = CommitCutter::start(pg.port()).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/lostack?sslmode=disable",
        cutter.port
    );
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 6)).await;
    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);

    // The commit of the first decisions reaches the server; its answer is lost.
    wait_until("a commit of decisions", Duration::from_secs(60), || async {
        cutter.cut.load(Ordering::SeqCst)
    })
    .await;
    let l = ledger(&pg, "lostack").await;
    wait_until(
        "the lost commit to land in the database",
        Duration::from_secs(30),
        || async { !l.list(10).await.unwrap().is_empty() },
    )
    .await;
    let recorded = l.list(10).await.unwrap();
    assert!(
        sandbox_decisions(&sandbox.url).await.is_empty(),
        "sent before the commit was acknowledged"
    );
    cutter.release.notify_one();

    // The daemon took the write as failed and sent nothing; the next cycle finds the records
    // and sends each exactly as recorded, never deciding again.
    wait_decided(&sandbox.url, 6, &[&a]).await;
    let decided = decided_once(&sandbox.url).await;
    assert!(
        a.log().contains("cannot record decisions; sending nothing"),
        "{}",
        a.log()
    );
    for row in &recorded {
        assert_eq!(
            decided[&row.tx_id]["data"].as_str(),
            row.data.as_deref(),
            "tx {} not sent as recorded",
            row.tx_id
        );
    }
    for id in ids(1..=6) {
        assert_eq!(
            l.history(id).await.unwrap().len(),
            1,
            "tx {id} decided again"
        );
    }
    assert_eq!(stats(&sandbox.url).await["conflicts"], 0);
    assert!(l.verify().await.unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restarted_under_a_draining_pair_loses_no_decision_and_decides_each_transaction_once()
 {
    let Some(pg) = Pg::start() else { return };
    let (sandbox, a, b, _, first) = draining_pair(&pg, "restart", ["a", "b"]).await;

    pg.restart();

    wait_decided(&sandbox.url, 200, &[&a, &b]).await;
    let (_, epoch) = one_leader(&[&a, &b]).await;
    assert!(epoch > first, "no new election after the restart: {epoch}");
    drained_once(&pg, "restart", &sandbox.url, 200).await;
}

/// Two members named `names` on database `db` of `pg`, one leading (its index and epoch),
/// draining 200 transactions of which the first 10 are decided.
async fn draining_pair(
    pg: &Pg,
    db: &str,
    names: [&'static str; 2],
) -> (SandboxProcess, Member, Member, usize, i64) {
    pg.create_db(db).await;
    let url = pg.url(db, "disable");
    let sandbox = spawn_sandbox(&[]);
    let a = spawn_member(names[0], &sandbox.url, &url, pg, &[]);
    let b = spawn_member(names[1], &sandbox.url, &url, pg, &[]);
    let (leader, epoch) = one_leader(&[&a, &b]).await;
    post_pending(&sandbox.url, items(1, 200)).await;
    wait_decided(&sandbox.url, 10, &[&a, &b]).await;
    (sandbox, a, b, leader, epoch)
}

/// Each of transactions 1..=`n` decided once at the server and once in the ledger (half
/// approved, half rejected), the chain intact.
async fn drained_once(pg: &Pg, db: &str, sandbox: &str, n: u64) {
    assert_eq!(decided_once(sandbox).await.len() as u64, n);
    assert_eq!(stats(sandbox).await["conflicts"], 0);
    let l = ledger(pg, db).await;
    let counts = l.counts().await.unwrap();
    assert_eq!(
        (counts.get("approve"), counts.get("reject")),
        (Some(&(n / 2)), Some(&(n / 2))),
        "{counts:?}"
    );
    assert!(l.verify().await.unwrap().problems.is_empty());
}

/// The backend holding the leader's advisory lock.
async fn lock_holder(admin: &tokio_postgres::Client) -> i32 {
    admin
        .query_one(
            // The leader lock ("cosigner": classid 0x636f7369, objid 0x676e6572), not the
            // migration lock every write takes shared.
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
               AND classid = 1668248425 AND objid = 1735288178 AND objsubid = 1 LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_one_name_whose_leader_loses_only_its_lock_connection_still_decide_each_transaction_once()
 {
    let Some(pg) = Pg::start() else { return };
    // Both named "a": the name is what the others show, never what decides.
    let (sandbox, a, b, leader, first) = draining_pair(&pg, "lockconn", ["a", "a"]).await;

    // The lock connection dies; the pool's connections live on.
    let admin = pg.admin("lockconn").await;
    let pid = lock_holder(&admin).await;
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    let old = [&a, &b][leader];
    wait_until(
        "the old leader to stand down",
        Duration::from_secs(10),
        || async { old.log().contains("lead lost") },
    )
    .await;

    wait_decided(&sandbox.url, 200, &[&a, &b]).await;
    let (_, epoch) = one_leader(&[&a, &b]).await;
    assert!(epoch > first, "{epoch}");
    drained_once(&pg, "lockconn", &sandbox.url, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_on_the_leader_holds_everything_after_a_takeover_even_when_the_new_leaders_first_read_of_the_mode_fails()
 {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("pausecarry").await;
    let url = pg.url("pausecarry", "disable");
    let sandbox = spawn_sandbox(&[]);
    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    let b = spawn_member("b", &sandbox.url, &url, &pg, &[]);
    let (leader, _) = one_leader(&[&a, &b]).await;
    // The standby started before the pause: only the ledger tells it.
    let (leader, standby) = if leader == 0 { (a, b) } else { (b, a) };
    let (status, body) = leader.call(reqwest::Method::POST, "/v1/pause").await;
    assert_eq!(status, 200, "{body}");

    // The events table locked, the leader dies and the standby takes over; its read of the
    // recorded mode waits on the lock, and its connection is then cut.
    let admin = pg.admin("pausecarry").await;
    admin
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    drop(leader);
    let watcher = pg.admin("pausecarry").await;
    let mut pid = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while pid.is_none() {
        pid = watcher
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                 AND query LIKE 'SELECT detail FROM events WHERE kind = $1 ORDER BY seq DESC%'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, i32>(0));
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new leader never read the mode\n{}",
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher
        .execute("SELECT pg_terminate_backend($1)", &[&pid.unwrap()])
        .await
        .unwrap();
    admin.batch_execute("COMMIT").await.unwrap();

    // The new leader decides what comes now, under the pause: held, nothing sent.
    post_pending(&sandbox.url, items(1, 2)).await;
    let l = ledger(&pg, "pausecarry").await;
    wait_until(
        "the new leader to decide",
        Duration::from_secs(60),
        || async {
            !l.history(TxId::new(1)).await.unwrap().is_empty()
                && !l.history(TxId::new(2)).await.unwrap().is_empty()
        },
    )
    .await;
    let sent = sandbox_decisions(&sandbox.url).await;
    assert!(
        sent.is_empty(),
        "sent while paused: {sent:?}\n{}",
        standby.log()
    );
    for id in ids([1, 2]) {
        let h = l.history(id).await.unwrap();
        assert!(h.iter().all(|d| d.action == Action::Hold), "tx {id}: {h:?}");
    }
    let (_, body) = standby.call(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(body["leadership"]["role"], "leader", "{body}");
    assert_eq!(body["mode"], "hold", "{body}");
}

/// The output of `cosigner ARGS` as one text.
async fn output(args: &[&str]) -> (bool, String) {
    let out = run_bin(args).await;
    (out.status.success(), all_output(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_inline_in_the_ledger_url_shows_in_no_output_log_status_metric_or_error() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("inline").await;
    let secret = pg.password_text();
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 2)).await;
    let dir = tempfile::tempdir().unwrap();
    let inline = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/inline?sslmode=disable",
        pg.port()
    );
    let (cfg, port) = pair_config(dir.path(), &sandbox.url, &inline, &pg, "inline");
    edit(&cfg, "password_file = \"pg-password\"\n", "");
    edit(&cfg, "level = \"info\"", "level = \"debug\"");
    let cfg_s = cfg.to_str().unwrap().to_string();
    let clean = |what: &str, text: &str| {
        assert!(!text.contains(secret), "{what} shows the password:\n{text}");
    };

    let (ok, text) = output(&["check", "--config", &cfg_s]).await;
    assert!(ok, "{text}");
    clean("check", &text);

    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = bin()
        .args(["run", "--config", &cfg_s])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_decided(&sandbox.url, 2, &[]).await;
    let client = reqwest::Client::new();
    let status = client
        .get(format!("{base}/v1/status"))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("postgres://postgres@127.0.0.1"), "{status}");
    clean("/v1/status", &status);
    for path in ["/metrics", "/readyz", "/healthz"] {
        let body = reqwest::get(format!("{base}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        clean(path, &body);
    }
    for args in [
        vec!["ledger", "verify", "--config", &cfg_s],
        vec!["ledger", "list", "--config", &cfg_s],
        vec!["policy", "replay", "--config", &cfg_s],
    ] {
        let (_, text) = output(&args).await;
        clean(&args.join(" "), &text);
    }
    let _ = child.kill();
    let _ = child.wait();
    clean(
        "the daemon's log",
        &std::fs::read_to_string(dir.path().join("stderr.log")).unwrap(),
    );

    // Refused: a wrong password inline, a URL that does not parse, a copy into a wrong one.
    let wrong = "wrong-inline-pw-7731";
    for (url, want) in [
        (
            format!(
                "postgres://postgres:{wrong}@127.0.0.1:{}/inline?sslmode=disable",
                pg.port()
            ),
            "password authentication failed",
        ),
        (
            format!("postgres://postgres:{wrong}@127.0.0.1:notaport/inline"),
            "ledger.url",
        ),
        (
            format!("postgres://postgres:{wrong}@127.0.0.1:5432/inline?sslmode=sometimes"),
            "ledger.url",
        ),
    ] {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let start = text.find("\nurl = \"").unwrap() + 8;
        let end = start + text[start..].find('"').unwrap();
        std::fs::write(&cfg, format!("{}{url}{}", &text[..start], &text[end..])).unwrap();
        for args in [
            vec!["check", "--config", &cfg_s],
            vec!["run", "--once", "--config", &cfg_s],
            vec!["ledger", "verify", "--config", &cfg_s],
        ] {
            let (ok, text) = output(&args).await;
            assert!(!ok, "{} accepted {url}: {text}", args.join(" "));
            assert!(text.contains(want), "{}: {text}", args.join(" "));
            assert!(
                !text.contains(wrong) && !text.contains(secret),
                "{} shows the password:\n{text}",
                args.join(" ")
            );
        }
    }
}

/// A member's configuration (in the returned directory) for database `db` of `pg`.
fn one_member_config(pg: &Pg, db: &str, sandbox: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = pair_config(dir.path(), sandbox, &pg.url(db, "disable"), pg, db);
    (dir, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_holding_tables_no_cosigner_made_is_refused_by_check_and_by_the_daemon_and_left_unchanged()
 {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("alien").await;
    let admin = pg.admin("alien").await;
    admin
        .batch_execute("CREATE TABLE decisions (id integer, note text); INSERT INTO decisions VALUES (1, 'theirs')")
        .await
        .unwrap();
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 2)).await;
    let (_dir, cfg) = one_member_config(&pg, "alien", &sandbox.url);
    let cfg_s = cfg.to_str().unwrap().to_string();

    // `check` says ok only to what will work when the daemon starts.
    let (ok, text) = output(&["check", "--config", &cfg_s]).await;
    assert!(
        !ok,
        "check accepted a database the daemon cannot use:\n{text}"
    );
    assert!(text.contains("decisions"), "{text}");
    let (ok, text) = output(&["run", "--once", "--config", &cfg_s]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("decisions"), "{text}");
    assert!(sandbox_decisions(&sandbox.url).await.is_empty());
    let tables: Vec<String> = admin
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        vec!["decisions".to_string()],
        "the database was changed"
    );

    // An empty database is fine (the daemon creates the schema), and check writes nothing.
    pg.create_db("empty").await;
    let (_dir, cfg) = one_member_config(&pg, "empty", &sandbox.url);
    let (ok, text) = output(&["check", "--config", cfg.to_str().unwrap()]).await;
    assert!(ok && text.contains("no cosigner schema yet"), "{text}");
    let left: i64 = pg
        .admin("empty")
        .await
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "check wrote to the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_postgresql_row_fails_ledger_verify_and_stops_the_daemon_before_it_sends() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("edited").await;
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 2)).await;
    let (_dir, cfg) = one_member_config(&pg, "edited", &sandbox.url);
    let cfg_s = cfg.to_str().unwrap().to_string();
    let (ok, text) = output(&["run", "--once", "--config", &cfg_s]).await;
    assert!(ok, "{text}");
    assert_eq!(sandbox_decisions(&sandbox.url).await.len(), 2);

    // Someone with access to the database turns a recorded reject into an approval.
    let admin = pg.admin("edited").await;
    let changed = admin
        .execute(
            "UPDATE decisions SET action = 'approve' WHERE tx_id = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let (ok, text) = output(&["ledger", "verify", "--config", &cfg_s]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("edited"), "{text}");
    post_pending(&sandbox.url, items(3, 4)).await;
    let (ok, text) = output(&["run", "--once", "--config", &cfg_s]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("fails its chain check"), "{text}");
    assert_eq!(sandbox_decisions(&sandbox.url).await.len(), 2);
    let (ok, text) = output(&["check", "--config", &cfg_s]).await;
    assert!(!ok, "{text}");
}
