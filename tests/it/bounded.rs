//! Bounds against a hostile or broken 1BitPay (issue 21): a listing with more items than
//! `poll.max_items` decides nothing and is recorded once; an item larger than
//! `poll.max_item_bytes` is held and recorded bounded; a cycle slower than `poll.cycle_timeout`
//! is abandoned, and what it recorded is sent next cycle.

use std::time::{Duration, Instant};

use cosigner::client::PENDING;
use cosigner::cycle::{CycleError, Engine, PollSettings};
use cosigner::domain::{Action, TxId};
use cosigner::ledger::EventKind;
use cosigner_sandbox::server::Faults;

use crate::store::{Store, on_each_back_end};
use crate::support::*;

const POLICY: &str = "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\n\
                      to = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\n";

fn approvable(ids: std::ops::RangeInclusive<u64>) -> Vec<String> {
    ids.map(|i| item(TxId::new(i), HOT, TREASURY, "1", "195"))
        .collect()
}

async fn engine(dir: &std::path::Path, url: &str, store: &Store, settings: PollSettings) -> Engine {
    let ledger = store.open(dir).await;
    engine_on(dir, client_config(url), POLICY, settings, ledger)
}

fn refused(e: &Engine) -> String {
    e.metrics
        .render()
        .lines()
        .find(|l| l.starts_with("cosigner_listings_refused_total "))
        .unwrap_or_default()
        .to_string()
}

on_each_back_end!(
    a_listing_beyond_max_items:
        a_listing_with_more_items_than_max_items_decides_nothing_and_is_recorded_once_on_sqlite,
        a_listing_with_more_items_than_max_items_decides_nothing_and_is_recorded_once_on_postgresql
);

async fn a_listing_beyond_max_items(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(approvable(1..=5))).await;
    let flood = Faults {
        flood_ids: 30,
        total_override: Some(1_000_000_000),
        ..Faults::default()
    };
    sb.sandbox.set_faults(flood.clone());
    let settings = PollSettings {
        page_size: 10,
        max_items: 25,
        ..PollSettings::default()
    };
    let e = engine(dir.path(), &sb.url, &store, settings).await;
    for _ in 0..3 {
        let err = e.cycle_once().await.unwrap_err();
        assert!(
            matches!(err, CycleError::ListingTooLarge { limit: 25, page: 1 }),
            "{err}"
        );
        assert!(err.to_string().contains("raise poll.max_items"), "{err}");
    }
    // Nothing decided, nothing sent, not even for the five real items; the reading stopped on
    // the page that passed the limit.
    assert!(sb.sandbox.decisions().is_empty());
    assert!(e.ledger().list(100).await.unwrap().is_empty());
    assert_eq!(sb.sandbox.stats().requests.get(PENDING), Some(&3));
    // Counted every time, recorded once.
    assert_eq!(refused(&e), "cosigner_listings_refused_total 3");
    let events = e.ledger().list_events(EventKind::Listing).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("poll.max_items"), "{}", events[0]);

    // A listing within the bound is decided; a later refusal is recorded again.
    sb.sandbox.set_faults(Faults::default());
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.decided.get("approve"), Some(&5));
    sb.sandbox.set_faults(flood);
    assert!(e.cycle_once().await.is_err());
    assert_eq!(
        e.ledger()
            .list_events(EventKind::Listing)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(e.ledger().verify().await.unwrap().problems.is_empty());
}

/// The first hostile server: 60,000 ids a page and a total of 10⁹. The first page
/// passes the default `poll.max_items`, and nothing more is read.
#[tokio::test]
async fn sixty_thousand_new_ids_a_page_are_refused_on_the_first_page() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(approvable(1..=3))).await;
    sb.sandbox.set_faults(Faults {
        flood_ids: 60_000,
        total_override: Some(1_000_000_000),
        ..Faults::default()
    });
    let e = engine(dir.path(), &sb.url, &Store::Sqlite, small_pages()).await;
    let err = e.cycle_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            CycleError::ListingTooLarge {
                limit: 50_000,
                page: 1
            }
        ),
        "{err}"
    );
    assert_eq!(sb.sandbox.stats().requests.get(PENDING), Some(&1));
    assert!(e.ledger().list(10).await.unwrap().is_empty());
}

on_each_back_end!(
    padded_items:
        an_item_larger_than_max_item_bytes_is_held_and_recorded_as_a_prefix_and_a_hash_on_sqlite,
        an_item_larger_than_max_item_bytes_is_held_and_recorded_as_a_prefix_and_a_hash_on_postgresql
);

/// The second hostile server: items padded with 10 KB of extra fields.
async fn padded_items(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let items = approvable(1..=3);
    let sb = start_sandbox(scenario(items.clone())).await;
    sb.sandbox.set_faults(Faults {
        pad_items: 10_240,
        ..Faults::default()
    });
    let e = engine(dir.path(), &sb.url, &store, small_pages()).await;
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.decided.get("hold"), Some(&3), "{out:?}");
    assert!(sb.sandbox.decisions().is_empty());
    for (row, listed) in rows(&e).await.iter().zip(&items) {
        let whole = format!(
            "{},\"padding\":\"{}\"}}",
            listed.strip_suffix('}').unwrap(),
            "x".repeat(10_240)
        );
        let digest: String = openssl::sha::sha256(whole.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(row.action, Action::Hold);
        assert_eq!(row.rule, "(malformed)");
        assert!(row.reason.contains(&digest), "{}", row.reason);
        assert!(
            row.reason.contains("poll.max_item_bytes (4096)"),
            "{}",
            row.reason
        );
        assert!(row.tx_json.len() <= 260, "{}", row.tx_json.len());
        assert!(whole.starts_with(row.tx_json.trim_end_matches('…')));
        assert_eq!((&row.to, &row.amount), (&None, &None));
    }
    // Listed again the same way: nothing new is recorded.
    e.cycle_once().await.unwrap();
    assert_eq!(rows(&e).await.len(), 3);
    assert!(e.ledger().verify().await.unwrap().problems.is_empty());
}

on_each_back_end!(
    abandoned_at_the_deadline:
        a_cycle_past_its_deadline_is_abandoned_and_what_it_recorded_is_sent_next_cycle_on_sqlite,
        a_cycle_past_its_deadline_is_abandoned_and_what_it_recorded_is_sent_next_cycle_on_postgresql
);

async fn abandoned_at_the_deadline(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(approvable(1..=5))).await;
    // Every answer takes a second, sends go one at a time: the listing ends after about a
    // second, the five sends would take five more, and the deadline is at three.
    sb.sandbox.set_faults(Faults {
        latency: Duration::from_secs(1),
        ..Faults::default()
    });
    let settings = PollSettings {
        page_size: 10,
        max_in_flight: 1,
        cycle_timeout: Duration::from_secs(3),
        ..PollSettings::default()
    };
    let e = engine(dir.path(), &sb.url, &store, settings).await;
    let started = Instant::now();
    let err = e.cycle_once().await.unwrap_err();
    assert!(matches!(err, CycleError::Deadline(_)), "{err}");
    assert!(err.to_string().contains("poll.cycle_timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.metrics
            .render()
            .contains("cosigner_poll_runs_total{outcome=\"timeout\"} 1")
    );
    let recorded = rows(&e).await;
    assert_eq!(
        recorded.len(),
        5,
        "the decisions were recorded before the deadline"
    );
    assert!(sb.sandbox.decisions().len() < 5);

    // The server is fast again: the recorded approvals are sent, identically, never decided
    // anew.
    sb.sandbox.set_faults(Faults::default());
    let out = e.cycle_once().await.unwrap();
    assert!(out.decided.is_empty(), "{out:?}");
    assert!(out.resent >= 1, "{out:?}");
    let decided = sb.sandbox.decisions();
    assert_eq!(decided.len(), 5);
    for d in &decided {
        let row = recorded.iter().find(|r| r.tx_id == d.id).unwrap();
        assert_eq!(Some(&d.data), row.data.as_ref());
    }
    assert_eq!(sb.sandbox.stats().conflicts, 0);
    assert_eq!(rows(&e).await.len(), 5);
}

/// A server that drips each page (the 15 s a page) no longer holds a cycle for hours:
/// the cycle ends at its deadline.
#[tokio::test]
async fn a_server_that_drips_its_pages_holds_a_cycle_no_longer_than_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(approvable(1..=40))).await;
    sb.sandbox.set_faults(Faults {
        drip: Duration::from_secs(4),
        ..Faults::default()
    });
    let settings = PollSettings {
        page_size: 10,
        cycle_timeout: Duration::from_secs(2),
        ..PollSettings::default()
    };
    let mut client = client_config(&sb.url);
    client.timeout = Duration::from_secs(30);
    let ledger = Store::Sqlite.open(dir.path()).await;
    let e = engine_on(dir.path(), client, POLICY, settings, ledger);
    let started = Instant::now();
    let err = e.cycle_once().await.unwrap_err();
    assert!(matches!(err, CycleError::Deadline(_)), "{err}");
    // Four pages of four seconds each would have taken sixteen.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(sb.sandbox.decisions().is_empty());
    // The next cycle runs on schedule, and decides once the server answers in time.
    sb.sandbox.set_faults(Faults::default());
    let out = e.cycle_once().await.unwrap();
    assert_eq!(out.decided.get("approve"), Some(&40));
}

/// A hold whose reason carries a window total that moves is one record, however often the
/// total moves (before: one record per new total, 17,471 records for 238 withdrawals in a
/// crash loop).
#[tokio::test]
async fn a_hold_is_recorded_once_however_the_numbers_in_its_reason_move() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\n\
                  to = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\nwindow = \"24h\"\nmax_total = \"100\"\n";
    let held = item(TxId::new(9), HOT, TREASURY, "50", "195");
    let sb = start_sandbox(scenario(vec![
        held.clone(),
        item(TxId::new(2), HOT, TREASURY, "60", "195"),
    ]))
    .await;
    let ledger = Store::Sqlite.open(dir.path()).await;
    let e = engine_on(
        dir.path(),
        client_config(&sb.url),
        policy,
        small_pages(),
        ledger,
    );
    e.cycle_once().await.unwrap();
    // 2 approved (60); 9 (listed after it) is held with the total it would make.
    let first = e.ledger().history(TxId::new(9)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        first[0].reason.contains("would be 110"),
        "{}",
        first[0].reason
    );
    // Each later approval moves the total 9 would make; the process also restarts (a crash
    // loop reads the same ledger again).
    for (i, amount) in [(3u64, "10"), (4, "5"), (5, "1")] {
        sb.sandbox
            .add_pending([item(TxId::new(i), HOT, TREASURY, amount, "195")]);
        e.cycle_once().await.unwrap();
    }
    drop(e);
    let ledger = Store::Sqlite.open(dir.path()).await;
    let e = engine_on(
        dir.path(),
        client_config(&sb.url),
        policy,
        small_pages(),
        ledger,
    );
    e.cycle_once().await.unwrap();
    let history = e.ledger().history(TxId::new(9)).await.unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(
        history[0].reason, first[0].reason,
        "the ledger keeps the first"
    );
    assert_eq!(
        history[0].hold_key(),
        cosigner::policy::HoldKey::of("(default)", &first[0].reason.replace("110", "126"))
    );
    // What explain shows now carries the current numbers.
    let tx = cosigner::client::parse_pending_item(&held).unwrap();
    let now = cosigner::explain::explain(
        &e.policy(),
        &dir.path().join("ledger.db"),
        245,
        Duration::from_secs(30),
        &tx,
        cosigner::clock::Clock::system().now_ms(),
    )
    .unwrap();
    let cosigner::plan::Plan::Decide(eval) = now.plan else {
        panic!("{:?}", now.plan)
    };
    assert!(
        eval.reason.to_string().contains("would be 126"),
        "{}",
        eval.reason
    );
}

/// A write the database fences is one write failure, not two (before: `on_fenced` counted it,
/// then the cycle that made it counted it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_write_is_counted_once_as_a_write_failure() {
    let Some(store) = Store::postgres() else {
        return;
    };
    let Store::Postgres(pg) = &store else {
        unreachable!("a PostgreSQL store")
    };
    let dir = tempfile::tempdir().unwrap();
    let sb = start_sandbox(scenario(Vec::new())).await;
    let cfg = write_config(dir.path(), &sb.url);
    store.configure(&cfg);
    let daemon = run_daemon(&cfg, timings(100, 60_000)).await;
    wait_until("the daemon to lead", Duration::from_secs(20), || async {
        metric(&daemon.base, "cosigner_leader").await == Some(1.0)
    })
    .await;
    // Another instance takes over while this one is about to write: its takeover holds the
    // epoch row until it commits, so the daemon's next write waits in the fencing trigger and
    // then finds the newer epoch.
    let mut admin = pg.admin("postgres").await;
    let takeover = admin.transaction().await.unwrap();
    takeover
        .execute(
            "UPDATE cosigner_leader SET epoch = epoch + 1, holder = 'other' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    sb.sandbox.add_pending(approvable(1..=1));
    let watcher = pg.admin("postgres").await;
    wait_until(
        "a ledger write to wait for the takeover",
        Duration::from_secs(20),
        || async {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            waiting > 0
        },
    )
    .await;
    takeover.commit().await.unwrap();
    wait_until(
        "the write to be refused as fenced",
        Duration::from_secs(20),
        || async { metric(&daemon.base, "cosigner_fenced_total").await == Some(1.0) },
    )
    .await;
    // The cycle that made the write has ended with it by now (the fenced error is its result).
    wait_until(
        "the cycle to end with the fenced write",
        Duration::from_secs(20),
        || async {
            metric(&daemon.base, "cosigner_poll_runs_total{outcome=\"error\"}").await >= Some(1.0)
        },
    )
    .await;
    assert_eq!(
        metric(&daemon.base, "cosigner_ledger_write_failures_total").await,
        Some(1.0)
    );
    assert!(sb.sandbox.decisions().is_empty());
    daemon.shutdown().await;
}
