//! The operator's mode as a user checks it: what is in force, what the ledger's latest mode
//! record says, what the pause file holds, and what a change stops or wakes; pauses the ledger
//! cannot record, a pause arriving during a resume, the mode restored at start and a pause
//! adopted from the shared ledger.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::ledger::{EventKind, SqliteLedger};

/// A control over a fresh ledger in a temp dir, with a pause file beside it.
struct Fixture {
    _dir: tempfile::TempDir,
    ledger: LedgerHandle,
    metrics: Arc<Metrics>,
    pause_file: PathBuf,
    control: Arc<Control>,
}

fn policy() -> Arc<Policy> {
    Arc::new(
        crate::policy::parse("default = \"hold\"\n", Path::new("policy.toml"), &|_| {
            unreachable!("no list files")
        })
        .unwrap(),
    )
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LedgerHandle::sqlite(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
    let pause_file = dir.path().join("pause");
    let metrics = Arc::new(Metrics::new().unwrap());
    let control = Arc::new(Control::new(
        policy(),
        ledger.clone(),
        metrics.clone(),
        Some(pause_file.clone()),
        Arc::new(Outbox::default()),
    ));
    Fixture {
        _dir: dir,
        ledger,
        metrics,
        pause_file,
        control,
    }
}

impl Fixture {
    /// The same ledger and pause file seen by a new process: a control that starts in normal
    /// mode and knows nothing else.
    fn restarted(&self) -> Arc<Control> {
        Arc::new(Control::new(
            policy(),
            self.ledger.clone(),
            self.metrics.clone(),
            Some(self.pause_file.clone()),
            Arc::new(Outbox::default()),
        ))
    }

    async fn latest_mode_record(&self) -> Option<String> {
        self.ledger.latest_event(EventKind::Mode).await.unwrap()
    }

    /// An approval on its way out, not written yet: it may leave only while the mode in force
    /// lets approvals out, and the policy it was checked under is still in force.
    fn approval_on_its_way(&self) -> impl Sized + use<> {
        let control = self.control.clone();
        let generation = control.generation();
        self.control.outbox.ticket(Arc::new(move || {
            if !control.mode().lets_out(Verdict::Approve) {
                return Err("the kill switch forbids approvals".into());
            }
            if control.generation() != generation {
                return Err("checked under a policy no longer in force".into());
            }
            Ok(())
        }))
    }

    fn mode_shown(&self, mode: Mode) -> f64 {
        self.metrics.mode.with_label_values(&[mode.as_str()]).get()
    }
}

fn stopped(n: usize) -> Stopped {
    Stopped {
        stopped: n,
        already_written: 0,
    }
}

#[tokio::test]
async fn a_pause_is_in_force_at_once_recorded_shown_and_wakes_whoever_waits_on_a_change() {
    let f = fixture();
    let approval = f.approval_on_its_way();
    let changes = f.control.subscribe();
    assert!(!changes.has_changed().unwrap());

    let out = f.control.pause(Mode::Reject, "alice").await.unwrap();

    assert_eq!(out, stopped(1), "the approval on its way out is stopped");
    assert_eq!(f.control.mode(), Mode::Reject);
    assert!(changes.has_changed().unwrap(), "a waiting retry wakes");
    assert_eq!(
        f.latest_mode_record().await.as_deref(),
        Some(Mode::Reject.event_detail("alice").as_str())
    );
    assert!(!f.control.unrecorded());
    assert!(
        !f.pause_file.exists(),
        "a recorded pause needs no pause file"
    );
    assert_eq!(f.mode_shown(Mode::Reject), 1.0);
    assert_eq!(f.mode_shown(Mode::Normal), 0.0);
    drop(approval);
}

#[tokio::test]
async fn a_pause_asking_for_normal_mode_holds_all_and_a_reject_all_pause_is_not_widened() {
    let f = fixture();
    f.control.pause(Mode::Normal, "alice").await.unwrap();
    assert_eq!(f.control.mode(), Mode::Hold);
    assert_eq!(
        f.latest_mode_record().await.as_deref(),
        Some(Mode::Hold.event_detail("alice").as_str())
    );
    let g = fixture();
    g.control.pause(Mode::Reject, "bob").await.unwrap();
    assert_eq!(g.control.mode(), Mode::Reject);
}

#[tokio::test]
async fn a_resume_is_recorded_and_lifts_the_pause_and_wakes_whoever_waits() {
    let f = fixture();
    f.control.pause(Mode::Hold, "alice").await.unwrap();
    let changes = f.control.subscribe();
    f.control.resume("bob").await.unwrap();
    assert_eq!(f.control.mode(), Mode::Normal);
    assert!(changes.has_changed().unwrap());
    assert_eq!(
        f.ledger.list_events(EventKind::Mode).await.unwrap(),
        vec![
            Mode::Hold.event_detail("alice"),
            Mode::Normal.event_detail("bob")
        ]
    );
    assert_eq!(f.mode_shown(Mode::Normal), 1.0);
    assert_eq!(f.mode_shown(Mode::Hold), 0.0);
}

#[tokio::test]
async fn a_policy_put_in_force_is_read_with_a_new_generation_and_stops_approvals_checked_under_the_old()
 {
    let f = fixture();
    assert_eq!(f.control.generation(), 0);
    let approval = f.approval_on_its_way();
    let changes = f.control.subscribe();
    let second = policy();

    assert_eq!(f.control.put_policy(second.clone()), stopped(1));

    assert!(changes.has_changed().unwrap());
    let (now, generation) = f.control.snapshot();
    assert!(Arc::ptr_eq(&now, &second));
    assert!(Arc::ptr_eq(&f.control.policy(), &second));
    assert_eq!(generation, 1);
    let third = policy();
    assert_eq!(f.control.put_policy(third.clone()), stopped(1));
    assert_eq!(f.control.generation(), 2);
    assert!(Arc::ptr_eq(&f.control.policy(), &third));
    drop(approval);
}

#[tokio::test]
async fn a_fence_wakes_whoever_waits_and_says_what_the_mode_in_force_stops() {
    let f = fixture();
    let changes = f.control.subscribe();
    assert_eq!(f.control.fence(), stopped(0));
    assert!(changes.has_changed().unwrap());
    f.control.pause(Mode::Hold, "alice").await.unwrap();
    let approval = f.approval_on_its_way();
    assert_eq!(f.control.fence(), stopped(1));
    drop(approval);
}

/// What [`Control::restore`] makes of a ledger whose latest mode record is `recorded` and of a
/// pause file holding `file`: the mode and whether it is recorded, the latest record after, and
/// whether the pause file is still there.
async fn restored(
    recorded: Option<&str>,
    file: Option<&str>,
) -> ((Mode, bool), Option<String>, bool) {
    let f = fixture();
    if let Some(r) = recorded {
        f.ledger.record_event(EventKind::Mode, r).await.unwrap();
    }
    if let Some(text) = file {
        std::fs::write(&f.pause_file, text).unwrap();
    }
    let control = f.restarted();
    let out = control.restore().await.unwrap();
    assert_eq!(control.mode(), out.0);
    assert_eq!(control.unrecorded(), !out.1);
    (out, f.latest_mode_record().await, f.pause_file.exists())
}

#[tokio::test]
async fn restore_puts_in_force_the_stricter_of_the_recorded_mode_and_the_pause_file() {
    let hold = Mode::Hold.event_detail("alice");
    let reject = Mode::Reject.event_detail("bob");
    let normal = Mode::Normal.event_detail("carol");

    // Nothing anywhere: normal.
    assert_eq!(
        restored(None, None).await,
        ((Mode::Normal, true), None, false)
    );
    // The recorded mode alone.
    assert_eq!(
        restored(Some(&hold), None).await,
        ((Mode::Hold, true), Some(hold.clone()), false)
    );
    // A stricter pause in the file is recorded, and the file goes.
    assert_eq!(
        restored(None, Some(&reject)).await,
        ((Mode::Reject, true), Some(reject.clone()), false)
    );
    assert_eq!(
        restored(Some(&reject), Some(&hold)).await,
        ((Mode::Hold, true), Some(hold.clone()), false)
    );
    assert_eq!(
        restored(Some(&normal), Some(&hold)).await,
        ((Mode::Hold, true), Some(hold.clone()), false)
    );
    // A looser pause in the file gives way to the recorded mode, and the file goes.
    assert_eq!(
        restored(Some(&hold), Some(&reject)).await,
        ((Mode::Hold, true), Some(hold.clone()), false)
    );
    assert_eq!(
        restored(Some(&reject), Some(&reject)).await,
        ((Mode::Reject, true), Some(reject.clone()), false)
    );
}

#[tokio::test]
async fn restore_starts_in_hold_when_the_mode_record_or_the_pause_file_cannot_be_read() {
    let hold_from_file = Mode::Hold.event_detail("pause file");
    assert_eq!(
        restored(Some("{not json"), None).await,
        ((Mode::Hold, true), Some("{not json".into()), false)
    );
    for text in ["{not json", "", &Mode::Normal.event_detail("alice")] {
        assert_eq!(
            restored(None, Some(text)).await,
            ((Mode::Hold, true), Some(hold_from_file.clone()), false),
            "pause file holding {text:?}"
        );
    }
    // A pause file that exists but cannot be read (here a directory) holds too.
    let f = fixture();
    std::fs::create_dir(&f.pause_file).unwrap();
    let control = f.restarted();
    assert_eq!(control.restore().await.unwrap(), (Mode::Hold, true));
    assert_eq!(f.latest_mode_record().await, Some(hold_from_file));
}

#[tokio::test]
async fn adopt_recorded_adopts_a_pause_another_member_recorded_but_never_lifts_one() {
    let hold = Mode::Hold.event_detail("standby");
    let reject = Mode::Reject.event_detail("standby");
    let normal = Mode::Normal.event_detail("standby");

    let f = fixture();
    assert!(!f.control.adopt_recorded(None));
    assert!(!f.control.adopt_recorded(Some(&normal)));
    assert_eq!(f.control.mode(), Mode::Normal);

    let mut changes = f.control.subscribe();
    let approval = f.approval_on_its_way();
    assert!(f.control.adopt_recorded(Some(&hold)));
    assert_eq!(f.control.mode(), Mode::Hold);
    assert!(changes.has_changed().unwrap());
    assert_eq!(f.mode_shown(Mode::Hold), 1.0);
    assert_eq!(
        f.control.fence(),
        stopped(1),
        "the approval is stopped by it"
    );
    drop(approval);

    // Already in force: nothing changes.
    changes.mark_unchanged();
    assert!(!f.control.adopt_recorded(Some(&hold)));
    assert!(!changes.has_changed().unwrap());
    // A recorded normal mode does not lift it.
    assert!(!f.control.adopt_recorded(Some(&normal)));
    assert_eq!(f.control.mode(), Mode::Hold);
    // A later recorded pause is the one in force when this instance holds none unrecorded.
    assert!(f.control.adopt_recorded(Some(&reject)));
    assert_eq!(f.control.mode(), Mode::Reject);
    // An unreadable record is a hold.
    assert!(f.control.adopt_recorded(Some("{garbled")));
    assert_eq!(f.control.mode(), Mode::Hold);
}

#[test]
fn modes_let_out_only_what_they_allow_and_read_back_what_they_wrote() {
    assert!(Mode::Normal.lets_out(Verdict::Approve) && Mode::Normal.lets_out(Verdict::Reject));
    assert!(!Mode::Reject.lets_out(Verdict::Approve) && Mode::Reject.lets_out(Verdict::Reject));
    assert!(!Mode::Hold.lets_out(Verdict::Approve) && !Mode::Hold.lets_out(Verdict::Reject));
    for mode in [Mode::Normal, Mode::Hold, Mode::Reject] {
        assert_eq!(Mode::from_u8(mode.to_u8()), mode);
        assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
        let detail = mode.event_detail("operator API");
        assert_eq!(Mode::from_event_detail(&detail), Some(mode));
        assert_eq!(Mode::from_latest_event(Some(&detail)), mode);
    }
    assert_eq!(Mode::from_u8(7), Mode::Hold, "unknown is the safe choice");
    assert_eq!(Mode::from_latest_event(None), Mode::Normal);
    assert_eq!(
        Mode::from_latest_event(Some(r#"{"mode":"Hold"}"#)),
        Mode::Hold,
        "unreadable: hold"
    );
    assert_eq!(Mode::from_event_detail("not json"), None);
    assert_eq!(
        "paused".parse::<Mode>(),
        Err(UnknownMode("paused".to_string()))
    );
}

#[test]
fn modes_are_ordered_by_what_they_let_out_normal_then_reject_then_hold() {
    // A takeover and a member adopting a recorded pause keep the stricter of two modes: this
    // order is what keeps a pause from being lost to a less strict mode.
    let order = [Mode::Normal, Mode::Reject, Mode::Hold];
    for (i, a) in order.iter().enumerate() {
        for (j, b) in order.iter().enumerate() {
            assert_eq!(a.stricter_than(*b), i > j, "{a:?} stricter than {b:?}");
        }
    }
}

/// The tests that need the ledger's simulated failures and slow writes (`test-hooks`).
#[cfg(feature = "test-hooks")]
mod failures {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_pause_the_ledger_cannot_record_stays_in_force_in_the_pause_file_until_recorded() {
        let f = fixture();
        let approval = f.approval_on_its_way();
        f.ledger.simulate_write_failure(false).await.unwrap();

        let e = f.control.pause(Mode::Reject, "alice").await.unwrap_err();

        let ModeError::NotRecorded { mode, stopped, .. } = e else {
            panic!("not NotRecorded: {e}")
        };
        assert_eq!((mode, stopped), (Mode::Reject, super::stopped(1)));
        assert_eq!(f.control.mode(), Mode::Reject);
        assert!(f.control.unrecorded());
        assert_eq!(
            std::fs::read_to_string(&f.pause_file).unwrap(),
            Mode::Reject.event_detail("alice")
        );
        assert_eq!(f.latest_mode_record().await, None);
        // Still refused: still unrecorded, still in the file.
        assert!(f.control.record_pause().await.is_err());
        assert!(f.control.unrecorded() && f.pause_file.exists());

        f.ledger.end_simulated_write_failure().await.unwrap();
        f.control.record_pause().await.unwrap();

        assert_eq!(
            f.latest_mode_record().await.as_deref(),
            Some(Mode::Reject.event_detail("alice").as_str())
        );
        assert!(!f.control.unrecorded());
        assert!(!f.pause_file.exists());
        assert_eq!(f.control.mode(), Mode::Reject);
        // Nothing left to record: no second record.
        f.control.record_pause().await.unwrap();
        assert_eq!(
            f.ledger.list_events(EventKind::Mode).await.unwrap().len(),
            1
        );
        drop(approval);
    }

    #[tokio::test]
    async fn an_unrecorded_pause_in_the_pause_file_is_in_force_after_a_restart_and_recorded_later()
    {
        let f = fixture();
        f.ledger.simulate_write_failure(false).await.unwrap();
        assert!(f.control.pause(Mode::Reject, "alice").await.is_err());

        let control = f.restarted();
        assert_eq!(control.restore().await.unwrap(), (Mode::Reject, false));
        assert_eq!(control.mode(), Mode::Reject);
        assert!(control.unrecorded());
        assert!(f.pause_file.exists());

        f.ledger.end_simulated_write_failure().await.unwrap();
        control.record_pause().await.unwrap();
        assert_eq!(
            f.latest_mode_record().await.as_deref(),
            Some(Mode::Reject.event_detail("alice").as_str()),
            "recorded as thrown by whoever threw it"
        );
        assert!(!control.unrecorded());
        assert!(!f.pause_file.exists());
    }

    #[tokio::test]
    async fn a_resume_the_ledger_cannot_record_changes_nothing() {
        let f = fixture();
        f.control.pause(Mode::Hold, "alice").await.unwrap();
        f.ledger.simulate_write_failure(false).await.unwrap();
        let e = f.control.resume("bob").await.unwrap_err();
        assert!(matches!(e, ModeError::NotChanged(_)), "{e}");
        assert_eq!(f.control.mode(), Mode::Hold);
        assert_eq!(
            f.latest_mode_record().await.as_deref(),
            Some(Mode::Hold.event_detail("alice").as_str())
        );
    }

    #[tokio::test]
    async fn a_pause_held_unrecorded_gives_way_only_to_a_stricter_recorded_one() {
        let f = fixture();
        f.ledger.simulate_write_failure(false).await.unwrap();
        assert!(f.control.pause(Mode::Reject, "alice").await.is_err());
        assert!(
            !f.control
                .adopt_recorded(Some(&Mode::Normal.event_detail("x")))
        );
        assert!(
            f.control
                .adopt_recorded(Some(&Mode::Hold.event_detail("x")))
        );
        assert_eq!(f.control.mode(), Mode::Hold);

        let g = fixture();
        g.ledger.simulate_write_failure(false).await.unwrap();
        assert!(g.control.pause(Mode::Hold, "alice").await.is_err());
        assert!(
            !g.control
                .adopt_recorded(Some(&Mode::Reject.event_detail("x")))
        );
        assert_eq!(g.control.mode(), Mode::Hold);
    }

    /// The resume's record is slow to commit (a minute of the test's paused clock), and a
    /// pause comes in meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_pause_that_comes_in_while_a_resume_is_recorded_stays_in_force_and_is_recorded_after()
    {
        let f = fixture();
        f.control.pause(Mode::Hold, "alice").await.unwrap();
        let slow = Arc::new(AtomicBool::new(false));
        let written = Arc::new(tokio::sync::Notify::new());
        {
            let (slow, written) = (slow.clone(), written.clone());
            f.ledger.delay_writes(move || {
                if slow.swap(false, Ordering::SeqCst) {
                    written.notify_one();
                    Duration::from_secs(60)
                } else {
                    Duration::ZERO
                }
            });
        }
        slow.store(true, Ordering::SeqCst);
        let mut resume = tokio::spawn({
            let control = f.control.clone();
            async move { control.resume("bob").await }
        });
        tokio::select! {
            () = written.notified() => {}
            r = &mut resume => panic!("the resume returned without recording: {r:?}"),
        }

        f.control.pause(Mode::Reject, "carol").await.unwrap();

        let e = resume.await.unwrap().unwrap_err();
        assert!(matches!(e, ModeError::Overtaken), "{e}");
        assert_eq!(f.control.mode(), Mode::Reject);
        assert_eq!(
            f.ledger.list_events(EventKind::Mode).await.unwrap(),
            vec![
                Mode::Hold.event_detail("alice"),
                Mode::Normal.event_detail("bob"),
                Mode::Reject.event_detail("carol"),
            ]
        );
    }
}
