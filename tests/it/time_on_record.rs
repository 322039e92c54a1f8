//! Time on the record (issue 20): an approval never leaves later than its record says, whatever
//! the database or a clock does. Windows are judged by the server's own arrival times: two
//! approvals of a one-per-`L` rule (or of the guard) never reach it less than `L` apart.
//!
//! - clocks at the very ends of what the check lets through (libfaketime);

use std::time::{Duration, Instant};

use crate::support::*;

/// The approvals the sandbox process at `url` accepted: (id, ms since the epoch of the first
/// acceptance, by the server's clock), in order of arrival.
async fn approvals_at_server(url: &str) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = sandbox_decisions(url)
        .await
        .iter()
        .filter(|d| d["status"] == 1)
        .map(|d| (d["id"].as_u64().unwrap(), d["at_ms"].as_u64().unwrap()))
        .collect();
    v.sort_by_key(|(_, at)| *at);
    v
}

/// The closest two of `approvals` (id, ms) came, by the server's clock.
fn closest(approvals: &[(u64, u64)]) -> Option<u64> {
    approvals.windows(2).map(|w| w[1].1 - w[0].1).min()
}

/// One approval per `window` for the treasury; everything else held.
fn one_per(window: &str) -> String {
    format!(
        "default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\nwindow = \"{window}\"\nmax_count = 1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_the_allowed_skew_plus_a_second_either_way_cannot_fit_a_second_approval_in_a_window()
 {
    if !faketime_or_skip() {
        return;
    }
    // api.max_clock_skew = 1 s; rule t allows one approval per 4 s. Run A's clock is 2 s behind
    // the server's (skew + 1 s), run B's 2 s ahead: the check lets both through (it allows the
    // skew + 1 s for Date's whole seconds + 1 s for the answer's travel), so A's approval is
    // stamped 2 s early and B reads the time 2 s late. With windows reaching back only twice the
    // skew, B's approval would leave 2 s after A's.
    let sandbox = spawn_sandbox(&["--max-skew", "1h"]);
    let config = |dir: &std::path::Path| {
        let cfg = write_config(dir, &sandbox.url);
        edit(
            &cfg,
            "timeout = \"5s\"\n",
            "timeout = \"5s\"\nmax_clock_skew = \"1s\"\n",
        );
        std::fs::write(dir.join("policy.toml"), one_per("4s")).unwrap();
        cfg.to_str().unwrap().to_string()
    };
    let add = |id: u64| {
        post_pending(
            &sandbox.url,
            vec![item(TxId::new(id), HOT, TREASURY, "1", "195")],
        )
    };

    // Beyond the bound (skew + 2 s) either way, nothing is approved (behind first: a run ahead
    // would leave records a run behind finds in its future).
    add(1).await;
    let beyond = tempfile::tempdir().unwrap();
    let c = config(beyond.path());
    for offset in ["-3.5s", "+3.5s"] {
        let out = run_once_at(offset, &c).await;
        assert!(out.status.success(), "{}", all_output(&out));
        assert!(
            all_output(&out).contains("clock cannot be trusted"),
            "{offset}: {}",
            all_output(&out)
        );
    }
    assert_eq!(approvals_at_server(&sandbox.url).await, vec![]);

    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    // A, 2 s behind. The check may doubt a run whose Date fell in the first milliseconds of its
    // second (the answer's travel then counts against it): run again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while approvals_at_server(&sandbox.url).await.is_empty() {
        assert!(Instant::now() < deadline, "run A never approved tx 1");
        let out = run_once_at("-2s", &c).await;
        assert!(out.status.success(), "{}", all_output(&out));
    }
    // B, 2 s ahead, every moment until it approves tx 2.
    add(2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut runs = 0;
    while approvals_at_server(&sandbox.url).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "run B never approved tx 2 in {runs} runs"
        );
        let out = run_once_at("+2s", &c).await;
        assert!(out.status.success(), "{}", all_output(&out));
        runs += 1;
    }
    let approved = approvals_at_server(&sandbox.url).await;
    let gap = closest(&approved).unwrap();
    assert!(
        gap >= 4_000,
        "rule t (one per 4 s) had approvals reach the server {gap} ms apart: {approved:?}"
    );
    assert!(runs > 1, "run B was held at first: {runs} runs");
    eprintln!(
        "the two approvals reached the server {gap} ms apart; run B approved on its run {runs}"
    );
}
