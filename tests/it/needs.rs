//! What some tests need from the machine: libfaketime's `faketime`, PostgreSQL's `initdb` and
//! `pg_ctl`. The one place that decides whether such a test runs, is skipped or fails: outside
//! CI a missing program skips the test with a line saying so; under `CI` (`.ci/run` sets it and
//! installs them) a missing program fails the test, so that a CI run never passes a test it did
//! not run.

#![allow(dead_code)]

/// Whether the tests run under CI: `CI` set to anything but empty, `0` or `false`.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// `found`, after saying that the test is skipped when it is false; under CI a missing `what`
/// fails the test instead, naming how to install it.
pub(crate) fn found_or_skip(what: &str, found: bool, install: &str) -> bool {
    if !found {
        assert!(
            !in_ci(),
            "CI must install {what} ({install}; .ci/run does): the test cannot be skipped under CI"
        );
        eprintln!("skipped: {what} is not installed ({install})");
    }
    found
}

/// Whether the `faketime` program (libfaketime) runs here; see [`found_or_skip`].
pub(crate) fn faketime_or_skip() -> bool {
    let found = std::process::Command::new("faketime")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    found_or_skip("faketime", found, "apt-get install faketime")
}
