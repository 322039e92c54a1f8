//! Fail points for the crash suite: in debug builds with the `test-hooks` feature (what the tests
//! run), `COSIGNER_FAILPOINT` names a point (and optionally a probability, `after-record:0.3`)
//! where the process aborts, as a power cut would stop it. Release builds and builds without
//! `test-hooks` (the production build) compile every point to nothing.

/// After decisions are durably recorded, before any of them is sent.
pub(crate) const AFTER_RECORD: &str = "after-record";
/// Right before an approve/reject request leaves.
pub(crate) const BEFORE_REQUEST: &str = "before-request";
/// After the server answered, before the outcome is recorded.
pub(crate) const AFTER_REQUEST: &str = "after-request";
/// At the start of a cycle, outside its deadline: `wedge` never lets the cycle go on (a wedged
/// scheduler, such as a lock never released, which no deadline ends: for the watchdog suite).
pub(crate) const WEDGE_CYCLE: &str = "wedge-cycle";

/// Never returns if `COSIGNER_FAILPOINT` names `name` (debug builds with `test-hooks` only):
/// the task awaiting it is wedged, while the rest of the process runs on.
pub(crate) async fn wedge(name: &str) {
    #[cfg(all(debug_assertions, feature = "test-hooks"))]
    if std::env::var("COSIGNER_FAILPOINT").is_ok_and(|p| p == name) {
        eprintln!("fail point {name}: this task waits for ever");
        std::future::pending::<()>().await;
    }
    #[cfg(not(all(debug_assertions, feature = "test-hooks")))]
    let _ = name;
}

/// Aborts the process here if `COSIGNER_FAILPOINT` says so (debug builds with `test-hooks` only).
#[inline]
pub(crate) fn hit(name: &str) {
    #[cfg(all(debug_assertions, feature = "test-hooks"))]
    {
        let Ok(spec) = std::env::var("COSIGNER_FAILPOINT") else {
            return;
        };
        let (point, chance) = match spec.split_once(':') {
            Some((p, c)) => (p, c.parse::<f64>().unwrap_or(1.0)),
            None => (spec.as_str(), 1.0),
        };
        if point != name {
            return;
        }
        let roll = crate::random::unit_fraction();
        if roll < chance {
            eprintln!("fail point {name}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(all(debug_assertions, feature = "test-hooks")))]
    let _ = name;
}
