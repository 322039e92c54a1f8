//! A pair never loses a pause, and has one current leader at a time: two (or one) `cosigner
//! run` processes on a real PostgreSQL ledger. Any member takes a pause, leader or standby,
//! confirmed or not, with the database down or refusing writes; the pause binds the pair once
//! recorded, and survives a lost and re-taken lead. A new leader makes no attempt before an old
//! one has stopped counting itself current.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cosigner::control::Mode;
use cosigner::domain::Action;
use cosigner::ledger::EventKind;

use crate::failover::CountingProxy;
use crate::pair::{Member, items, ledger, one_leader, spawn_member};
use crate::pg::Pg;
use crate::support::*;

/// What a pause that could not be recorded answers.
const HERE_ONLY: &str = "in force now on this instance only";

/// `POST /v1/pause` (hold) on `m`: status and body.
async fn pause(m: &Member) -> (u16, serde_json::Value) {
    m.call(reqwest::Method::POST, "/v1/pause").await
}

/// Waits until the ledger in `db` holds a decision for transaction `id`, and checks that every
/// one is a hold and that the sandbox at `sandbox_url` received no decision at all.
async fn held_and_nothing_sent(pg: &Pg, db: &str, sandbox_url: &str, id: u64, who: &[&Member]) {
    let l = ledger(pg, db).await;
    let logs = || {
        who.iter()
            .map(|m| format!("--- {}:\n{}", m.name, m.log()))
            .collect::<String>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while l.history(TxId::new(id)).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no member decided transaction {id} within 60 s\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sandbox_decisions(sandbox_url).await;
    assert!(sent.is_empty(), "sent while paused: {sent:?}\n{}", logs());
    let h = l.history(TxId::new(id)).await.unwrap();
    assert!(
        h.iter().all(|d| d.action == Action::Hold),
        "transaction {id}: {h:?}"
    );
}

/// The detail of the latest mode record in `db`.
async fn latest_mode(pg: &Pg, db: &str) -> Option<Mode> {
    ledger(pg, db)
        .await
        .latest_event(EventKind::Mode)
        .await
        .unwrap()
        .and_then(|d| Mode::from_event_detail(&d))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_stopped_both_members_take_a_pause_here_only_and_once_it_is_back_nothing_is_approved_and_the_ledger_holds_the_pause()
 {
    // Repro 3: both members refused the pause (409, unconfirmed lead) with the database down;
    // when it came back one took the lead in normal mode and approved a new transaction.
    let Some(pg) = Pg::start() else { return };
    pg.create_db("pausedown").await;
    let url = pg.url("pausedown", "disable");
    let sandbox = spawn_sandbox(&[]);
    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    let b = spawn_member("b", &sandbox.url, &url, &pg, &[]);
    one_leader(&[&a, &b]).await;
    assert_eq!(latest_mode(&pg, "pausedown").await, None);

    pg.stop();
    for m in [&a, &b] {
        let (status, body) = pause(m).await;
        assert_eq!(status, 503, "{}: {body}", m.name);
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("hold-all mode is {HERE_ONLY}")),
            "{}: {body}",
            m.name
        );
        assert_eq!(body["detail"]["in_force"], true, "{body}");
        assert_eq!(body["detail"]["recorded"], false, "{body}");
    }

    pg.start_again();
    post_pending(&sandbox.url, items(1, 1)).await;
    held_and_nothing_sent(&pg, "pausedown", &sandbox.url, 1, &[&a, &b]).await;
    assert_eq!(latest_mode(&pg, "pausedown").await, Some(Mode::Hold));
    for m in [&a, &b] {
        let (_, status) = m.call(reqwest::Method::GET, "/v1/status").await;
        assert_eq!(status["mode"], "hold", "{}: {status}", m.name);
        assert_eq!(status["mode_recorded"], true, "{}: {status}", m.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_the_database_refuses_to_record_survives_a_lost_and_retaken_lead_and_nothing_is_approved_once_writes_return()
 {
    // Repro 7: on a ledger refusing writes, a pause was answered "in force now, could not be
    // recorded"; a blip of the lock session later, the same process took the lead again, read
    // "normal" from the ledger, and approved a new transaction.
    let Some(pg) = Pg::start() else { return };
    pg.create_db("refusing").await;
    // The member connects as a role of its own, so that its writes can be refused.
    pg.admin("postgres")
        .await
        .batch_execute(&format!(
            "CREATE ROLE cosigner LOGIN PASSWORD '{}'; ALTER DATABASE refusing OWNER TO cosigner;",
            pg.password_text()
        ))
        .await
        .unwrap();
    let url = format!(
        "postgres://cosigner@127.0.0.1:{}/refusing?sslmode=disable",
        pg.port()
    );
    let sandbox = spawn_sandbox(&[]);
    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    let (_, first) = one_leader(&[&a]).await;

    let admin = pg.admin("refusing").await;
    admin
        .batch_execute("REVOKE INSERT ON events, decisions, outcomes, collects FROM cosigner")
        .await
        .unwrap();
    let (status, body) = pause(&a).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(HERE_ONLY),
        "{body}"
    );

    // The lock session ends on the server's side; the same process takes the lead again
    // (the epoch moves on) while writes are still refused.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cosigner leader a'",
            &[],
        )
        .await
        .unwrap();
    let epoch = || async {
        admin
            .query_one("SELECT epoch FROM cosigner_leader WHERE id = 1", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    wait_until(
        "the member to take the lead again",
        Duration::from_secs(60),
        || async { epoch().await > first },
    )
    .await;
    // What the re-taken lead did with the pause: stood down, as it cannot record it (or, were
    // the pause lost, led and decided; the checks below then fail).
    wait_until(
        "the re-taken lead to stand down or to lead",
        Duration::from_secs(60),
        || async {
            let (_, status) = a.call(reqwest::Method::GET, "/v1/status").await;
            a.log()
                .contains("a pause this instance holds could not be recorded at takeover")
                || status["leadership"]["current"] == true
        },
    )
    .await;

    admin
        .batch_execute("GRANT INSERT ON events, decisions, outcomes, collects TO cosigner")
        .await
        .unwrap();
    post_pending(&sandbox.url, items(1, 1)).await;
    held_and_nothing_sent(&pg, "refusing", &sandbox.url, 1, &[&a]).await;
    assert_eq!(latest_mode(&pg, "refusing").await, Some(Mode::Hold));
    let (_, status) = a.call(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status["mode"], "hold", "{status}");
    assert_eq!(status["mode_recorded"], true, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_sent_to_the_standby_binds_the_leader_and_nothing_is_approved_afterwards() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("standbypause").await;
    let url = pg.url("standbypause", "disable");
    let sandbox = spawn_sandbox(&[]);
    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    let b = spawn_member("b", &sandbox.url, &url, &pg, &[]);
    let (leader, _) = one_leader(&[&a, &b]).await;
    let (leader, standby) = if leader == 0 { (a, b) } else { (b, a) };
    // The leader decides: transaction 1 is approved.
    post_pending(&sandbox.url, items(1, 1)).await;
    crate::pair::wait_decided(&sandbox.url, 1, &[&leader, &standby]).await;

    let asked = Instant::now();
    let (status, body) = pause(&standby).await;
    eprintln!("the standby's pause answered after {:?}", asked.elapsed());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"], true, "{body}");
    // It answers once the pause binds the leader: after the leader's confirmation window.
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "answered after {:?}",
        asked.elapsed()
    );
    assert_eq!(latest_mode(&pg, "standbypause").await, Some(Mode::Hold));

    post_pending(&sandbox.url, items(3, 3)).await;
    let l = ledger(&pg, "standbypause").await;
    wait_until(
        "the leader to decide transaction 3",
        Duration::from_secs(60),
        || async { !l.history(TxId::new(3)).await.unwrap().is_empty() },
    )
    .await;
    let sent: Vec<u64> = sandbox_decisions(&sandbox.url)
        .await
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert_eq!(sent, vec![1], "{}\n{}", leader.log(), standby.log());
    let h = l.history(TxId::new(3)).await.unwrap();
    assert!(h.iter().all(|d| d.action == Action::Hold), "{h:?}");
    wait_until(
        "the leader to show the pause in force",
        Duration::from_secs(10),
        || async {
            let (_, status) = leader.call(reqwest::Method::GET, "/v1/status").await;
            status["leadership"]["role"] == "leader" && status["mode"] == "hold"
        },
    )
    .await;
    assert!(
        leader
            .log()
            .contains("kill switch thrown by another member of the pair"),
        "{}",
        leader.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_sent_to_the_standby_is_in_force_on_the_leader_within_its_confirmation_window_with_no_cycle_in_between()
 {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("beatpause").await;
    let url = pg.url("beatpause", "disable");
    let sandbox = spawn_sandbox(&[]);
    // An hour between cycles: only the lead's confirmations (every 500 ms) can bring the
    // leader a pause another member recorded.
    let env = [("COSIGNER_POLL__INTERVAL", "1h")];
    let a = spawn_member("a", &sandbox.url, &url, &pg, &env);
    let b = spawn_member("b", &sandbox.url, &url, &pg, &env);
    let (leader, _) = one_leader(&[&a, &b]).await;
    let (leader, standby) = if leader == 0 { (a, b) } else { (b, a) };
    let (_, status) = leader.call(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status["mode"], "normal", "{status}");

    let (status, body) = pause(&standby).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"], true, "{body}");
    wait_until(
        "the leader to show the pause in force",
        Duration::from_secs(10),
        || async {
            let (_, status) = leader.call(reqwest::Method::GET, "/v1/status").await;
            status["leadership"]["role"] == "leader" && status["mode"] == "hold"
        },
    )
    .await;
    assert!(
        leader
            .log()
            .contains("kill switch thrown by another member of the pair"),
        "{}",
        leader.log()
    );
}

/// The moment `at` (this process's monotonic clock) as ms since the Unix epoch, by the
/// system clock PostgreSQL on this host stamps `now()` with.
fn wall_ms(at: Instant, anchor: (Instant, SystemTime)) -> i128 {
    let ms = |d: Duration| i128::try_from(d.as_millis()).unwrap();
    let base = ms(anchor.1.duration_since(UNIX_EPOCH).unwrap());
    if at >= anchor.0 {
        base + ms(at.duration_since(anchor.0))
    } else {
        base - ms(anchor.0.duration_since(at))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_makes_no_attempt_before_the_old_leaders_confirmation_window_and_heartbeat_timeout_have_passed_since_the_epoch_moved()
 {
    // Repro 8: with the lock session ended on the server's side while the old leader stayed
    // silent, both counted themselves current for about 0.8 s.
    let Some(pg) = Pg::start() else { return };
    pg.create_db("onecurrent").await;
    let url = pg.url("onecurrent", "disable");
    let sandbox = spawn_sandbox(&[]);
    let (proxy_a, proxy_b) = (
        CountingProxy::start(&sandbox.url).await,
        CountingProxy::start(&sandbox.url).await,
    );
    let a = spawn_member("a", &proxy_a.url, &url, &pg, &[]);
    let (_, first) = one_leader(&[&a]).await;
    let b = spawn_member("b", &proxy_b.url, &url, &pg, &[]);
    one_leader(&[&a, &b]).await;

    // The old leader freezes (its socket silent); the server ends its lock session.
    let admin = pg.admin("onecurrent").await;
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let cut = Instant::now();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cosigner leader a'",
            &[],
        )
        .await
        .unwrap();
    let (_, epoch) = one_leader(&[&b]).await;
    assert!(epoch > first, "{epoch} after {first}");
    let anchor = (Instant::now(), SystemTime::now());
    // `since` is the start of the transaction that moved the epoch: not after the move.
    let moved_ms: i64 = admin
        .query_one(
            "SELECT floor(extract(epoch FROM since) * 1000)::bigint FROM cosigner_leader WHERE id = 1 AND epoch = $1",
            &[&epoch],
        )
        .await
        .unwrap()
        .get(0);
    wait_until(
        "the new leader's first attempt",
        Duration::from_secs(30),
        || async { !proxy_b.since(cut).is_empty() },
    )
    .await;
    let seen = proxy_b.since(cut);
    let first_attempt = seen.first().unwrap_or_else(|| panic!("{}", b.log()));
    let after_ms = wall_ms(first_attempt.at, anchor) - i128::from(moved_ms);
    eprintln!("the new leader's first attempt came {after_ms} ms after the epoch moved");
    assert!(
        after_ms >= 4000,
        "the new leader's first attempt ({} {}) came {after_ms} ms after the epoch moved; an old \
         leader may count itself current for 2 s + 2 s\n{}",
        first_attempt.method,
        first_attempt.path,
        b.log()
    );
    assert!(
        b.log()
            .contains("waiting out the longest an old leader may still count itself current"),
        "{}",
        b.log()
    );
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &a.child.id().to_string()])
        .status();
}
