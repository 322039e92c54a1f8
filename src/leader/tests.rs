//! The leader's unit tests: roles, confirmations, the takeover wait and what an outdated member says.

use super::*;
use crate::ledger::postgres::{PgLedger, PgTarget};

/// A leadership whose role and last confirmation are set here, contending for nothing.
fn fixed(role: Role, confirmed: Option<(i64, Instant)>) -> Leadership {
    let (tx, role) = watch::channel(role);
    Leadership {
        role,
        confirmed: Arc::new(Mutex::new(confirmed)),
        settles: Arc::new(Mutex::new(None)),
        mode_hook: Arc::new(std::sync::OnceLock::new()),
        give_up: Arc::new(watch::Sender::new(0)),
        tx: Arc::new(tx),
        name: "host-a".into(),
        _task: AbortOnDropHandle::new(tokio::spawn(async {})),
    }
}

/// The lead of `leadership` over a ledger (never connected) writing at `ledger_epoch`.
fn lead(leadership: Leadership, ledger_epoch: i64) -> Lead {
    let target = PgTarget::parse("postgres://cosigner@127.0.0.1:1/ledger", None).unwrap();
    let ledger = PgLedger::unconnected(target).unwrap();
    ledger.set_epoch(ledger_epoch);
    Lead::new(Arc::new(leadership), Arc::new(ledger))
}

fn leading_at(epoch: i64) -> Leadership {
    fixed(Role::Leader { epoch }, Some((epoch, Instant::now())))
}

#[test]
fn a_new_leader_waits_out_the_longest_an_old_one_may_still_count_itself_current() {
    // The old leader counts itself current for CURRENT_FOR after a confirmation that may
    // have taken up to HEARTBEAT_TIMEOUT; the server frees a silent leader's lock later still.
    assert_eq!(TAKEOVER_WAIT, Duration::from_secs(4));
    assert!(TAKEOVER_WAIT >= CURRENT_FOR + HEARTBEAT_TIMEOUT);
    assert!(SESSION.contains("idle_session_timeout = '5s'"));
    assert!(Duration::from_secs(5) > CURRENT_FOR);
}

#[tokio::test]
async fn a_lead_that_stands_down_is_a_standby_at_once_and_no_longer_current() {
    let lead = lead(leading_at(5), 5);
    assert_eq!(lead.current(), Ok(5));
    lead.stand_down();
    assert_eq!(lead.role(), Role::Standby { leader: None });
    assert_eq!(lead.leadership.is_current(), None);
    assert_eq!(lead.current(), Err(NotLeading::Standby { leader: None }));
}

#[tokio::test]
async fn a_takeover_is_current_once_the_ledger_writes_at_its_epoch() {
    let lead = lead(leading_at(6), 5);
    assert!(lead.current().is_err());
    lead.set_epoch(6);
    assert_eq!(lead.current(), Ok(6));
}

#[tokio::test]
async fn the_leader_is_named_as_this_instance_while_it_leads_and_as_the_database_shows_else() {
    assert_eq!(
        lead(leading_at(5), 5).leader_name().as_deref(),
        Some("host-a")
    );
    let standby = fixed(
        Role::Standby {
            leader: Some("host-b".into()),
        },
        None,
    );
    assert_eq!(lead(standby, 5).leader_name().as_deref(), Some("host-b"));
    let outdated = fixed(
        Role::Outdated {
            found: 99,
            leader: Some("host-c".into()),
        },
        None,
    );
    assert_eq!(lead(outdated, 5).leader_name().as_deref(), Some("host-c"));
}

#[test]
fn only_an_outdated_member_gives_a_reason_for_standing_by() {
    let outdated = Role::Outdated {
        found: 99,
        leader: None,
    };
    assert_eq!(outdated.outdated_reason(), Some(outdated_text(99)));
    assert!(outdated_text(99).contains("99"), "{}", outdated_text(99));
    assert_eq!(Role::Standby { leader: None }.outdated_reason(), None);
    assert_eq!(Role::Leader { epoch: 1 }.outdated_reason(), None);
}

#[tokio::test]
async fn a_confirmed_lead_at_the_ledgers_epoch_is_current() {
    assert_eq!(lead(leading_at(5), 5).current(), Ok(5));
}

#[tokio::test]
async fn a_lead_one_epoch_ahead_of_or_behind_the_ledger_is_refused() {
    // Ahead: a takeover whose epoch the ledger's writes do not carry yet. Behind: the
    // ledger already writes at a newer epoch than this lead was confirmed at.
    for ledger_epoch in [4, 6] {
        assert_eq!(
            lead(leading_at(5), ledger_epoch).current(),
            Err(NotLeading::EpochMismatch {
                lead: 5,
                ledger: ledger_epoch
            }),
            "the ledger at epoch {ledger_epoch}"
        );
    }
}

#[tokio::test]
async fn a_lead_not_confirmed_within_two_seconds_is_not_current() {
    let long_ago = Instant::now()
        .checked_sub(CURRENT_FOR + Duration::from_millis(100))
        .unwrap();
    let stale = fixed(Role::Leader { epoch: 5 }, Some((5, long_ago)));
    assert_eq!(
        lead(stale, 5).current(),
        Err(NotLeading::Unconfirmed { epoch: 5 })
    );
    let never = fixed(Role::Leader { epoch: 5 }, None);
    assert_eq!(
        lead(never, 5).current(),
        Err(NotLeading::Unconfirmed { epoch: 5 })
    );
    // A confirmation of another epoch than the one it leads at confirms nothing.
    let other = fixed(Role::Leader { epoch: 5 }, Some((4, Instant::now())));
    assert_eq!(
        lead(other, 4).current(),
        Err(NotLeading::Unconfirmed { epoch: 5 })
    );
}

#[tokio::test]
async fn a_lead_just_taken_is_not_current_until_the_takeover_wait_has_passed() {
    let l = leading_at(5);
    let settles = Instant::now() + Duration::from_millis(300);
    *l.settles.lock().unwrap() = Some((5, settles));
    let lead = lead(l, 5);
    match lead.current() {
        Err(NotLeading::Settling { epoch: 5, left_ms }) => assert!(left_ms <= 300, "{left_ms}"),
        other => panic!("{other:?}"),
    }
    lead.settle(5).await;
    assert!(Instant::now() >= settles);
    assert_eq!(lead.current(), Ok(5));
}

#[tokio::test]
async fn a_standby_is_never_current_even_with_a_fresh_confirmation_left_over() {
    let standby = fixed(
        Role::Standby {
            leader: Some("host-b".into()),
        },
        Some((5, Instant::now())),
    );
    assert_eq!(
        lead(standby, 5).current(),
        Err(NotLeading::Standby {
            leader: Some("host-b".into())
        })
    );
}
