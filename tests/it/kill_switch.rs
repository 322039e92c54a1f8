//! The kill switch is absolute (issue 19): after `pause` returns, nothing the pause forbids
//! leaves. Each numbered repro of the attack is a test here, and a property test throws
//! random interleavings of pauses, resumes, reloads, slow connects, slow TLS and 503s at a
//! daemon whose server timestamps every arrival.

use std::path::Path;
use std::time::Duration;

use cosigner::control::Mode;
use cosigner::ledger::EventKind;
use serde_json::Value;

use crate::support::*;

/// The operator API key of the daemons here.
const KEY: &str = "cos_kill_switch_test_key";

const APPROVE_TREASURY: &str = "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\n";

/// A config in `dir` for `url` with the operator API on, and `extra` appended.
fn config(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    let cfg = write_config(dir, url);
    std::fs::write(dir.join("policy.toml"), APPROVE_TREASURY).unwrap();
    std::fs::write(
        dir.join("api-keys"),
        format!("{}\n", cosigner::operator::digest(KEY)),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\napi_keys_file = \"api-keys\"\n{extra}"
    ));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `POST base/v1/{path}` with the operator key: (status, body).
async fn post(base: &str, path: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/{path}"))
        .basic_auth(KEY, Some(""))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the counter or gauge line that starts with `name`, 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_wait_while_paused_and_run_again_once_resumed() {
    // Repro 4: six sweeps in six seconds with /v1/status saying hold.
    let sb = start_sandbox(scenario(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sb.url, "");
    let d = run_daemon(&cfg, timings(50, 100)).await;
    wait_until("a first sweep", Duration::from_secs(60), || async {
        !sb.sandbox.collects().is_empty()
    })
    .await;
    let (code, body) = post(&d.base, "pause", "{}").await;
    assert_eq!(code, 200, "{body}");
    let swept = sb.sandbox.collects().len();
    // Twenty more cycles: the collector, every 100 ms, has had several turns meanwhile.
    let polls = metric(
        &metrics(&d.base).await,
        "cosigner_poll_runs_total{outcome=\"ok\"}",
    );
    wait_until("twenty more cycles", Duration::from_secs(60), || async {
        metric(
            &metrics(&d.base).await,
            "cosigner_poll_runs_total{outcome=\"ok\"}",
        ) >= polls + 20.0
    })
    .await;
    assert_eq!(
        sb.sandbox.collects().len(),
        swept,
        "a sweep left while the kill switch held everything"
    );
    let (code, body) = post(&d.base, "resume", "").await;
    assert_eq!(code, 200, "{body}");
    wait_until(
        "sweeps again after resume",
        Duration::from_secs(60),
        || async { sb.sandbox.collects().len() > swept },
    )
    .await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_and_a_pause_sent_together_leave_mode_ledger_and_metric_agreeing() {
    // Repro 5: 32 of 150 rounds left the daemon approving while its ledger said hold.
    let sb = start_sandbox(scenario(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let e = std::sync::Arc::new(engine_for(
        dir.path(),
        &sb.url,
        APPROVE_TREASURY,
        small_pages(),
    ));
    let mut disagreements = Vec::new();
    for round in 0..150 {
        let (first, second) = if round % 2 == 0 {
            (Mode::Normal, Mode::Hold)
        } else {
            (Mode::Hold, Mode::Normal)
        };
        let (a, b) = (e.clone(), e.clone());
        let one = tokio::spawn(async move { a.control().set_mode(first, "one").await.is_ok() });
        let two = tokio::spawn(async move { b.control().set_mode(second, "two").await.is_ok() });
        let _ = (one.await.unwrap(), two.await.unwrap());
        let recorded = e.ledger().list_events(EventKind::Mode).await.unwrap();
        let latest = recorded
            .last()
            .and_then(|d| Mode::from_event_detail(d))
            .unwrap_or(Mode::Normal);
        let text = e.metrics.render();
        let shown = ["normal", "hold", "reject"]
            .into_iter()
            .find(|m| text.contains(&format!("cosigner_mode{{mode=\"{m}\"}} 1")));
        if e.control().mode() != latest || shown != Some(e.control().mode().as_str()) {
            disagreements.push((round, e.control().mode(), latest, shown));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of 150 rounds disagree (round, in force, recorded, metric): {disagreements:?}",
        disagreements.len()
    );
}

#[tokio::test]
async fn a_pause_the_ledger_cannot_take_is_kept_across_a_restart_and_recorded_once_writes_return() {
    // Repro 9: a pause taken while the disk was full was never recorded once space returned,
    // and a restart then ran in normal mode.
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pause_file = dir.path().join("pause");
    let engine = |dir: &Path| {
        let ledger = cosigner::ledger::LedgerHandle::sqlite(open_ledger(&dir.join("ledger.db")));
        engine_on_with(dir, &sb.url, ledger, &pause_file)
    };
    let e = engine(dir.path());
    e.control().restore_mode().await.unwrap();
    e.ledger().simulate_write_failure(false).await.unwrap();
    let err = e
        .control()
        .set_mode(Mode::Hold, "operator API")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("in force now on this instance only"),
        "{err}"
    );
    assert_eq!(e.control().mode(), Mode::Hold);
    assert!(
        pause_file.exists(),
        "the unrecorded pause is kept in the pause file"
    );
    // A crash now, and a start once space is back: the pause file is honoured, and recorded.
    drop(e);
    let e = engine(dir.path());
    assert_eq!(e.control().restore_mode().await.unwrap(), Mode::Hold);
    assert_eq!(
        e.ledger()
            .list_events(EventKind::Mode)
            .await
            .unwrap()
            .last()
            .map(String::as_str),
        Some(Mode::Hold.event_detail("operator API").as_str())
    );
    assert!(!pause_file.exists(), "recorded: the pause file is gone");
    e.cycle_once().await.unwrap();
    assert_eq!(approved_ids(&sb), Vec::<TxId>::new());

    // Without a restart: the disk fills, a pause cannot be recorded; space returns, and the
    // next cycle records it before any decision.
    e.control()
        .set_mode(Mode::Normal, "operator API")
        .await
        .unwrap();
    e.ledger().simulate_write_failure(false).await.unwrap();
    assert!(e.control().set_mode(Mode::Reject, "SIGUSR1").await.is_err());
    e.ledger().end_simulated_write_failure().await.unwrap();
    e.cycle_once().await.unwrap();
    assert_eq!(
        e.ledger()
            .list_events(EventKind::Mode)
            .await
            .unwrap()
            .last()
            .map(String::as_str),
        Some(Mode::Reject.event_detail("SIGUSR1").as_str()),
        "the pause is recorded once the ledger takes writes"
    );
    assert!(!pause_file.exists());
    assert_eq!(approved_ids(&sb), Vec::<TxId>::new());
}

/// An engine over `ledger` in `dir` with the test policy, keeping an unrecorded pause in
/// `pause_file`.
fn engine_on_with(
    dir: &Path,
    url: &str,
    ledger: cosigner::ledger::LedgerHandle,
    pause_file: &Path,
) -> cosigner::cycle::Engine {
    engine_built(
        dir,
        client_config(url),
        APPROVE_TREASURY,
        small_pages(),
        ledger,
        |b| b.pause_file(Some(pause_file.to_path_buf())),
    )
}

/// A client for the door: a timeout long enough to wait out a stalled connect, one retry.
fn door_client(door: &crate::door::Door) -> cosigner::client::ClientConfig {
    let mut c = client_config(&door.url);
    c.timeout = Duration::from_secs(10);
    c.max_retries = 1;
    c.ca_file = door.ca_file.clone();
    c
}

/// The approvals (status 1 on the approve path, which carries rejects too) that reached the
/// door after `t`.
fn approvals_after(door: &crate::door::Door, t: std::time::SystemTime) -> Vec<String> {
    door.arrivals()
        .into_iter()
        .filter(|a| a.path == cosigner::client::APPROVE && a.at > t && a.json()["status"] == 1)
        .map(|a| {
            format!(
                "{} at +{:?}",
                a.body,
                a.at.duration_since(t).unwrap_or_default()
            )
        })
        .collect()
}

/// Repro 1 and its kin: an approval waits in connect (the server's listen queue is full) or in
/// the TLS handshake; the operator changes what may be sent; the change returns; the server
/// lets the connection through. Nothing the change forbids may reach it afterwards.
async fn an_approval_stalled_before_its_write(tls: bool, change: Change) {
    let sb = start_sandbox(scenario(vec![item(
        TxId::new(1),
        HOT,
        TREASURY,
        "5",
        "195",
    )]))
    .await;
    let door = crate::door::Door::open(&sb.url, tls).await;
    door.close_after_answer();
    // The listing's connection goes through; the approval's, the next one, stalls.
    if tls {
        door.hold_handshakes_after(1);
    } else {
        door.stall_connects_after(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let e = std::sync::Arc::new(engine_with_client(
        dir.path(),
        door_client(&door),
        APPROVE_TREASURY,
        small_pages(),
    ));
    // The approval's own connect or handshake, not any connect: the listing's and the queue
    // fillers' pass through SYN_SENT too, and a change made while one of them is there comes
    // before the approval is even decided. A cycle that ends without its approval stalling (on
    // a loaded machine its records may take so long that it waits for the next cycle's
    // re-check) is run again, up to five times.
    let mut ended = Vec::new();
    let cycle = loop {
        let cycle = tokio::spawn({
            let e = e.clone();
            async move { e.cycle_once().await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let stalled = loop {
            if tls && door.a_handshake_is_held() || !tls && door.a_client_connect_is_waiting() {
                break true;
            }
            if cycle.is_finished() {
                break false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no approval stalled before its write within 60 s; {}",
                door.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if stalled {
            break cycle;
        }
        ended.push(format!("{:?}", cycle.await));
        assert!(
            ended.len() < 5 && approved_ids(&sb).is_empty(),
            "5 cycles ended before their approval stalled: {ended:#?}; {}",
            door.describe()
        );
        if tls {
            door.hold_handshakes_after(1);
        } else {
            door.stall_connects_again_after(1);
        }
    };
    let stalled_at = door.describe();
    let stopped = match change {
        Change::Pause => e.control().set_mode(Mode::Hold, "test").await.unwrap(),
        Change::Reload => {
            std::fs::write(dir.path().join("policy.toml"), "default = \"hold\"\n").unwrap();
            e.control().reload_policy("test").await.unwrap();
            cosigner::client::Stopped::default()
        }
    };
    let returned = std::time::SystemTime::now();
    if tls {
        door.open_handshakes();
    } else {
        door.open_connects();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cycle)
        .await
        .unwrap_or_else(|_| panic!("the cycle did not end within 60 s; {}", door.describe()))
        .unwrap();
    let late = approvals_after(&door, std::time::SystemTime::UNIX_EPOCH);
    assert!(
        late.is_empty(),
        "{change:?} returned at {returned:?} ({stopped:?}); the approval still reached the server: \
         {late:?}; cycle {out:?}; when it stalled: {stalled_at}; now: {}",
        door.describe()
    );
    let out = out.unwrap_or_else(|e| panic!("the cycle failed: {e}; {}", door.describe()));
    if change == Change::Pause {
        assert_eq!(
            stopped,
            cosigner::client::Stopped {
                stopped: 1,
                already_written: 0
            },
            "the pause says it stopped the approval waiting before its write; cycle {out:?}; \
             when it stalled: {stalled_at}; now: {}",
            door.describe()
        );
    }
    assert_eq!(
        approved_ids(&sb),
        Vec::<TxId>::new(),
        "cycle {out:?}; {}",
        door.describe()
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Pause,
    Reload,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_waiting_in_connect_does_not_leave_after_a_pause_returns() {
    an_approval_stalled_before_its_write(false, Change::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_waiting_in_a_tls_handshake_does_not_leave_after_a_pause_returns() {
    an_approval_stalled_before_its_write(true, Change::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_waiting_in_connect_does_not_leave_after_a_reload_that_holds_it_returns() {
    an_approval_stalled_before_its_write(false, Change::Reload).await;
}

/// How the door treats the daemon's connections in one case of the property test.
#[derive(Debug, Clone, Copy)]
enum Road {
    /// Every connection goes straight through.
    Open,
    /// After this many accepted connections, connects stall in a full listen queue.
    SlowConnect(usize),
    /// TLS, and after this many accepted connections, handshakes are held.
    SlowTls(usize),
    /// Every approve answered 503 at this rate (retries wait in backoff).
    Failing(f64),
}

/// What the operator does in one case.
#[derive(Debug, Clone, Copy)]
enum Forbid {
    Pause(Mode),
    ReloadToHold,
}

fn road() -> impl proptest::strategy::Strategy<Value = Road> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Road::Open),
        (1usize..=3).prop_map(Road::SlowConnect),
        (1usize..=3).prop_map(Road::SlowTls),
        prop_oneof![Just(0.5), Just(1.0)].prop_map(Road::Failing),
    ]
}

fn forbid() -> impl proptest::strategy::Strategy<Value = Forbid> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Forbid::Pause(Mode::Hold)),
        Just(Forbid::Pause(Mode::Reject)),
        Just(Forbid::ReloadToHold),
    ]
}

/// One case: `items` approvable withdrawals, a cycle under way on `road`, and `forbid` made
/// `delay_ms` into it (`stalled`: after an approval is held on the road). No approval may reach the server after the call that forbade it returned,
/// neither from that cycle (its connects, handshakes and backoffs released once the call
/// returned) nor from the next, but those the call counted as already written.
async fn forbidden_mid_cycle(
    items: u64,
    road: Road,
    forbid: Forbid,
    stalled: bool,
    delay_ms: u64,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert;
    let sb = start_sandbox(scenario(
        (1..=items)
            .map(|id| item(TxId::new(id), HOT, TREASURY, "5", "195"))
            .collect(),
    ))
    .await;
    let door = crate::door::Door::open(&sb.url, matches!(road, Road::SlowTls(_))).await;
    door.close_after_answer();
    match road {
        Road::Open => {}
        Road::SlowConnect(k) => door.stall_connects_after(k),
        Road::SlowTls(k) => door.hold_handshakes_after(k),
        Road::Failing(rate) => sb.sandbox.set_faults(cosigner_sandbox::server::Faults {
            error_rate: rate,
            error_paths: vec![cosigner::client::APPROVE.into()],
            seed: delay_ms,
            ..cosigner_sandbox::server::Faults::default()
        }),
    }
    let dir = tempfile::tempdir().unwrap();
    let e = std::sync::Arc::new(engine_with_client(
        dir.path(),
        door_client(&door),
        APPROVE_TREASURY,
        small_pages(),
    ));
    let cycle = tokio::spawn({
        let e = e.clone();
        async move { e.cycle_once().await }
    });
    if stalled {
        // Once an approval waits where the road holds it (in connect, in the handshake, or
        // with one attempt answered 503 and the next in backoff), or the cycle has ended; at
        // most 5 s, well inside the client's 10 s timeout: an attempt that timed out before the
        // change is no longer counted by it, yet the bytes the kernel took for it may still be
        // retransmitted into the server once its queue opens.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cycle.is_finished() && tokio::time::Instant::now() < deadline {
            let held = match road {
                Road::SlowConnect(_) => door.a_client_connect_is_waiting(),
                Road::SlowTls(_) => door.a_handshake_is_held(),
                Road::Open | Road::Failing(_) => door
                    .arrivals()
                    .iter()
                    .any(|a| a.path == cosigner::client::APPROVE),
            };
            if held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let stopped = match forbid {
        Forbid::Pause(mode) => e.control().set_mode(mode, "property").await.unwrap(),
        Forbid::ReloadToHold => {
            let hold = cosigner::policy::parse(
                "default = \"hold\"\n",
                &dir.path().join("policy.toml"),
                &|_| unreachable!(),
            )
            .unwrap();
            e.control().replace_policy(std::sync::Arc::new(hold))
        }
    };
    let returned = std::time::SystemTime::now();
    door.open_connects();
    door.open_handshakes();
    sb.sandbox
        .set_faults(cosigner_sandbox::server::Faults::default());
    let out = tokio::time::timeout(Duration::from_secs(60), cycle).await;
    prop_assert!(
        out.is_ok(),
        "the cycle did not end within 60 s; {}",
        door.describe()
    );
    let next = tokio::time::timeout(Duration::from_secs(60), e.cycle_once()).await;
    prop_assert!(next.is_ok(), "the next cycle did not end within 60 s");
    // A request whose bytes were handed to the kernel before the change (its connect done as
    // far as the client could tell, the server's queue still full) may be retransmitted into
    // the server after it: the change says so in `already_written`. Nothing else may arrive.
    let late = approvals_after(&door, returned);
    prop_assert!(
        late.len() <= stopped.already_written,
        "{forbid:?} returned ({stopped:?}); approvals reached the server after it: {late:?}; {}",
        door.describe()
    );
    prop_assert!(
        sb.sandbox.stats().conflicts == 0,
        "{forbid:?}: the server saw a second decision for an id; {}",
        door.describe()
    );
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 32,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Random interleavings of pauses (hold and reject), reloads, slow connects, slow TLS
    /// handshakes and 503s: the door's kernel timestamps show no approval arriving after the
    /// call that forbade it returned.
    #[test]
    fn no_approval_reaches_the_server_after_the_call_that_forbids_it_returns(
        items in 1u64..=5,
        road in road(),
        forbid in forbid(),
        stalled in proptest::bool::weighted(0.7),
        delay_ms in 0u64..400,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(forbidden_mid_cycle(items, road, forbid, stalled, delay_ms))?;
    }
}
