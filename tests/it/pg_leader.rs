//! Leadership and fencing over a real PostgreSQL: one of two instances leads; the other takes
//! over when the leader's connection dies or the leader freezes; an old leader's writes are
//! refused by the database itself, and a leader that has not confirmed its epoch lately does
//! not count itself current.

use std::time::{Duration, Instant};

use cosigner::control::Mode;
use cosigner::domain::Action;
use cosigner::domain::{TxId, Withdrawal};
use cosigner::leader::{Leadership, Role};
use cosigner::ledger::postgres::PgTarget;
use cosigner::ledger::{EventKind, LedgerError, NewDecision, Outcome};

use crate::pg::Pg;
use crate::support::wait_until;

fn hold(id: TxId) -> NewDecision {
    NewDecision {
        tx: Withdrawal {
            id,
            from: Some("0xA".into()),
            to: Some("0xB".into()),
            amount: Some("1".into()),
            chain_id: Some("195".into()),
            problems: vec![],
            raw: format!("{{\"id\":{id}}}"),
        },
        action: Action::Hold,
        rule: "default".into(),
        reason: "held".into(),
        policy_sha256: "0".repeat(64),
        dry_run: false,
        amount: None,
        signed_text: None,
        data: None,
    }
}

/// Waits until `l` leads and counts itself current; returns the epoch.
async fn leads(l: &Leadership) -> i64 {
    wait_until("the instance to lead", Duration::from_secs(10), || async {
        l.is_current().is_some()
    })
    .await;
    l.is_current().unwrap()
}

fn standby_naming(name: &str) -> Role {
    Role::Standby {
        leader: Some(name.into()),
    }
}

/// The process id of the server session holding the lead's lock for `name`.
async fn lock_session(admin: &tokio_postgres::Client, name: &str) -> i32 {
    admin
        .query_one(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1",
            &[&format!("cosigner leader {name}")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn of_two_instances_exactly_one_leads_and_the_other_names_it_as_the_leader() {
    let Some(pg) = Pg::start() else { return };
    let ledger = pg.ledger().await;
    let a = Leadership::start(ledger.target().clone(), "host-a".into());
    let b = Leadership::start(ledger.target().clone(), "host-b".into());
    wait_until(
        "one to lead and the other to name it",
        Duration::from_secs(10),
        || async {
            matches!(
                (a.role(), b.role()),
                (Role::Leader { .. }, r) if r == standby_naming("host-a")
            ) || matches!(
                (b.role(), a.role()),
                (Role::Leader { .. }, r) if r == standby_naming("host-b")
            )
        },
    )
    .await;
    let (leader, standby, name) = if a.is_current().is_some() {
        (&a, &b, "host-a")
    } else {
        (&b, &a, "host-b")
    };
    assert_eq!(leader.is_current(), Some(1));
    assert_eq!(standby.is_current(), None);
    let admin = pg.admin("postgres").await;
    let row = admin
        .query_one("SELECT epoch, holder FROM cosigner_leader", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (1, name.to_string())
    );
    let holders: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holders, 1);
    // The standby keeps trying, and keeps failing, without moving the epoch.
    let mut roles = standby.subscribe();
    let seen = tokio::time::timeout(Duration::from_secs(3), roles.changed()).await;
    assert!(
        seen.is_err(),
        "the standby's role changed: {:?}",
        standby.role()
    );
    assert_eq!(leader.is_current(), Some(1));
}

#[tokio::test]
async fn a_write_at_an_epoch_older_than_the_leaders_is_refused_by_the_database_itself() {
    let Some(pg) = Pg::start() else { return };
    let old = pg.ledger().await;
    let a = Leadership::start(old.target().clone(), "a".into());
    let first = leads(&a).await;
    old.set_epoch(first);
    assert_eq!(
        old.record_decisions(&[hold(TxId::new(1))]).await.unwrap(),
        vec![1]
    );
    // The old leader gives up the lead (its connection closes); another takes it.
    drop(a);
    let new = pg.ledger().await;
    let b = Leadership::start(new.target().clone(), "b".into());
    let second = leads(&b).await;
    assert_eq!(second, first + 1);
    new.set_epoch(second);

    // Every kind of write from the old leader is refused, and nothing of it is recorded.
    let fenced = |e: LedgerError| match e {
        LedgerError::Fenced { mine, current } => {
            assert_eq!((mine, current), (first, second));
            e.to_string()
        }
        other => panic!("not fenced: {other}"),
    };
    let text = fenced(
        old.record_decisions(&[hold(TxId::new(2)), hold(TxId::new(3))])
            .await
            .unwrap_err(),
    );
    assert!(
        text.contains("another instance leads, and nothing was recorded"),
        "{text}"
    );
    fenced(old.record_event(EventKind::Mode, "{}").await.unwrap_err());
    fenced(old.record_collect(true, true, None).await.unwrap_err());
    fenced(
        old.record_outcomes(&[Outcome {
            decision_seq: 1,
            ok: true,
            message: None,
        }])
        .await
        .unwrap_err(),
    );
    assert!(new.history(TxId::new(2)).await.unwrap().is_empty());
    let report = new.verify().await.unwrap();
    assert_eq!((report.records, report.problems.len()), (1, 0));

    // The database refuses it, whoever writes: a row at the old epoch, written by hand.
    let admin = pg.admin("postgres").await;
    let err = admin
        .execute(
            "INSERT INTO events (seq, kind, detail, recorded_at_ms, prev_hash, hash, epoch)
             VALUES (2, 'mode', '{}', 0, 'x', 'y', $1)",
            &[&first],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("CS409"), "{err}");

    // A pause gets through from the old epoch (any member of the pair may record one, and
    // the leader then holds); a resume does not.
    let resume = Mode::Normal.event_detail("operator API");
    fenced(
        old.record_event(EventKind::Mode, &resume)
            .await
            .unwrap_err(),
    );
    let pause = Mode::Reject.event_detail("operator API");
    assert_eq!(old.record_event(EventKind::Mode, &pause).await.unwrap(), 2);
    assert_eq!(
        new.latest_event(EventKind::Mode).await.unwrap(),
        Some(pause)
    );

    // The new leader goes on from where the chain was.
    assert_eq!(
        new.record_decisions(&[hold(TxId::new(2))]).await.unwrap(),
        vec![3]
    );
    let report = new.verify().await.unwrap();
    assert_eq!((report.records, report.problems.len()), (3, 0));
    drop(b);
}

#[tokio::test]
async fn when_the_leaders_connection_is_killed_the_standby_takes_over_and_the_old_leader_stands_by()
{
    let Some(pg) = Pg::start() else { return };
    let ledger = pg.ledger().await;
    let a = Leadership::start(ledger.target().clone(), "a".into());
    let first = leads(&a).await;
    let b = Leadership::start(ledger.target().clone(), "b".into());
    wait_until("b to stand by for a", Duration::from_secs(10), || async {
        b.role() == standby_naming("a")
    })
    .await;
    let admin = pg.admin("postgres").await;
    let pid = lock_session(&admin, "a").await;
    let killed = Instant::now();
    let done: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(done);
    wait_until("a to stand by", Duration::from_secs(3), || async {
        matches!(a.role(), Role::Standby { .. })
    })
    .await;
    assert_eq!(a.is_current(), None);
    wait_until("b to take over", Duration::from_secs(10), || async {
        b.is_current() == Some(first + 1)
    })
    .await;
    eprintln!(
        "takeover after the leader's connection was killed: {:?}",
        killed.elapsed()
    );
    wait_until(
        "a to name b as the leader",
        Duration::from_secs(10),
        || async { a.role() == standby_naming("b") },
    )
    .await;
    assert_eq!(a.is_current(), None);
    assert_eq!(b.role(), Role::Leader { epoch: first + 1 });
}

#[tokio::test]
async fn a_member_on_a_schema_it_did_not_open_stands_by_as_outdated_naming_the_member_that_leads() {
    let Some(pg) = Pg::start() else { return };
    let ledger = pg.ledger().await;
    let a = Leadership::start(ledger.target().clone(), "host-a".into());
    let epoch = leads(&a).await;
    // A cosigner that found the schema newer than it knows (it opened none of it).
    let b = Leadership::start_on(ledger.target().clone(), "host-b".into(), None);
    let found = schema_version(&pg).await;
    let outdated = Role::Outdated {
        found,
        leader: Some("host-a".into()),
    };
    wait_until(
        "b to stand by as outdated, naming a",
        Duration::from_secs(10),
        || async { b.role() == outdated },
    )
    .await;
    assert_eq!(b.is_current(), None);
    assert_eq!(a.is_current(), Some(epoch));
}

/// The schema version the ledger in database `postgres` has.
async fn schema_version(pg: &Pg) -> i32 {
    pg.admin("postgres")
        .await
        .query_one("SELECT max(version) FROM cosigner_schema", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_leader_whose_epoch_the_database_moved_on_stops_counting_itself_current_and_takes_the_lead_again_waiting_out_the_takeover()
 {
    let Some(pg) = Pg::start() else { return };
    let ledger = pg.ledger().await;
    let a = Leadership::start(ledger.target().clone(), "a".into());
    let first = leads(&a).await;
    // The epoch moves on under it (as a takeover it missed would move it).
    let admin = pg.admin("postgres").await;
    admin
        .execute(
            "UPDATE cosigner_leader SET epoch = epoch + 1 WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    wait_until(
        "a to stop counting itself current at its old epoch",
        Duration::from_secs(3),
        || async { a.is_current() != Some(first) },
    )
    .await;
    // Its lock went with its connection: it takes the lead again, at the epoch after the moved one.
    let again = first + 2;
    wait_until("a to lead again", Duration::from_secs(10), || async {
        a.role() == Role::Leader { epoch: again }
    })
    .await;
    // A lead just taken waits out the takeover wait (4 s) from the moment it was taken.
    let left = a.settling(again).expect("a lead just taken settles");
    assert!(
        left > Duration::from_secs(3) && left <= Duration::from_secs(4),
        "{left:?}"
    );
    assert_eq!(a.settling(first), None);
}

#[tokio::test]
async fn a_database_that_takes_a_second_to_answer_a_new_connection_still_gets_a_leader() {
    let Some(pg) = Pg::start() else { return };
    let _ledger = pg.ledger().await;
    // Every connection through the proxy reaches the server only a second after it was made.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().port();
    let upstream = format!("127.0.0.1:{}", pg.port());
    let _proxy = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }));
    let target = PgTarget::parse(
        &format!("postgres://postgres@127.0.0.1:{proxy}/postgres?sslmode=disable"),
        Some(pg.password()),
    )
    .unwrap();
    let a = Leadership::start(target, "slow".into());
    wait_until("a to lead", Duration::from_secs(15), || async {
        a.is_current().is_some()
    })
    .await;
}

/// A single-threaded runtime on a thread of its own, which the test can stop dead (as SIGSTOP
/// stops a process: no task of it runs, its connections go silent) and let go again.
struct Freezable {
    handle: tokio::runtime::Handle,
    freeze: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Receiver<()>>,
    frozen: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Freezable {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (freeze, mut gates) =
            tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Receiver<()>>();
        let (ack, frozen) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                while let Some(gate) = gates.recv().await {
                    let _ = ack.send(());
                    // Blocks the runtime's only thread: nothing on it runs until the gate opens.
                    let _ = gate.recv();
                }
            });
        });
        Self {
            handle,
            freeze,
            frozen,
            thread: Some(thread),
        }
    }

    /// Stops the runtime; it runs again when the returned sender is used or dropped.
    fn freeze(&self) -> std::sync::mpsc::Sender<()> {
        let (open, gate) = std::sync::mpsc::channel();
        self.freeze.send(gate).unwrap();
        self.frozen.recv().unwrap();
        open
    }
}

impl Drop for Freezable {
    fn drop(&mut self) {
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        self.freeze = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_stops_counting_itself_current_and_once_resumed_after_a_takeover_is_fenced()
{
    let Some(pg) = Pg::start() else { return };
    let ledger = pg.ledger().await;
    let process_a = Freezable::new();
    let a = {
        let _in_a = process_a.handle.enter();
        Leadership::start(ledger.target().clone(), "a".into())
    };
    let first = leads(&a).await;
    ledger.set_epoch(first);
    let b = Leadership::start(ledger.target().clone(), "b".into());
    wait_until("b to stand by for a", Duration::from_secs(10), || async {
        b.role() == standby_naming("a")
    })
    .await;
    assert_eq!(
        ledger
            .record_decisions(&[hold(TxId::new(1))])
            .await
            .unwrap(),
        vec![1]
    );

    let resume = process_a.freeze();
    let frozen_at = Instant::now();
    wait_until(
        "a to stop counting itself current",
        Duration::from_secs(4),
        || async { a.is_current().is_none() },
    )
    .await;
    // Frozen, it still believes it leads: only the age of its last confirmation says otherwise.
    assert_eq!(a.role(), Role::Leader { epoch: first });
    assert!(
        frozen_at.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        frozen_at.elapsed()
    );
    // The server ends the silent session, and with it the lock: b takes over.
    wait_until("b to take over", Duration::from_secs(15), || async {
        b.is_current() == Some(first + 1)
    })
    .await;
    eprintln!("takeover after the leader froze: {:?}", frozen_at.elapsed());
    let err = ledger
        .record_decisions(&[hold(TxId::new(2))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Fenced { mine, current } if mine == first && current == first + 1),
        "{err}"
    );

    drop(resume);
    wait_until(
        "a, resumed, to stand by for b",
        Duration::from_secs(10),
        || async { a.role() == standby_naming("b") },
    )
    .await;
    assert_eq!(a.is_current(), None);
    assert_eq!(b.role(), Role::Leader { epoch: first + 1 });
    drop(a);
    drop(process_a);
}
