//! The demo and the sandbox as a developer runs them: `cosigner-sandbox demo` decides every kind
//! of withdrawal, ends with an intact ledger, cleans up after itself, leaves nothing of anyone
//! else's, and its hints are commands that work; `cosigner-sandbox serve --help` says where the
//! certificate comes from. The hints name `cosigner` itself, so these tests run it too: the
//! `cosigner` binary beside this crate's (`cargo test --workspace` builds both).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sandbox_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cosigner-sandbox"));
    c.env_remove("RUST_LOG");
    c
}

/// The `cosigner` binary of this build, beside `cosigner-sandbox`.
fn cosigner_exe() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_cosigner-sandbox")).with_file_name("cosigner");
    assert!(
        exe.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        exe.display()
    );
    exe
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(mut c: Command) -> (Option<i32>, String) {
    let out = c.output().unwrap();
    (out.status.code(), all_output(&out))
}

fn cosigner(args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(cosigner_exe());
    c.args(args).env_remove("RUST_LOG");
    run(c)
}

fn demo_in(tmp: &Path, path_prefix: Option<&Path>, extra: &[&str]) -> (Option<i32>, String) {
    let mut c = sandbox_bin();
    c.env("TMPDIR", tmp)
        .args(["demo", "--duration", "3s", "--poll-interval", "1s"])
        .args(extra);
    if let Some(p) = path_prefix {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![p.to_owned()];
        dirs.extend(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    run(c)
}

fn demo_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cosigner-demo-")
        })
        .collect()
}

#[test]
fn the_demo_runs_decides_every_kind_and_ends_with_an_intact_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = sandbox_bin();
    c.args(["demo", "--duration", "4s", "--poll-interval", "1s", "--dir"])
        .arg(dir.path());
    let (code, text) = run(c);
    assert_eq!(code, Some(0), "{text}");
    for needle in [
        "APPROVE",
        "REJECT",
        "HOLD",
        "hash chain intact",
        "refused 0 request(s)",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(dir.path().join("ledger.db").exists());
}

#[test]
fn the_demo_says_how_it_stops_removes_its_temp_dir_and_gives_hints_that_work() {
    let mut c = sandbox_bin();
    c.args(["demo", "--help"]);
    let (code, help) = run(c);
    assert_eq!(code, Some(0));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("runs until Ctrl-C unless --duration is given"),
        "{help}"
    );
    assert!(help.contains("--keep"), "{help}");

    // Without --keep, the temporary directory goes, and the hint says how to keep it; the
    // binary is a cargo build not on PATH, so the hints are cargo commands.
    let tmp = tempfile::tempdir().unwrap();
    let (code, text) = demo_in(tmp.path(), None, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(demo_dirs(tmp.path()).is_empty(), "left behind:\n{text}");
    assert!(text.contains("Stops after 3s (or at Ctrl-C)."), "{text}");
    assert!(
        text.contains("195 (TRON)") && text.contains("56 (BSC)"),
        "{text}"
    );
    assert!(
        text.contains("run `cargo demo --keep` to keep the files"),
        "{text}"
    );

    // With --keep and `cosigner` on PATH, the hint is `cosigner ledger list --config …`, and
    // that very command works.
    let tmp = tempfile::tempdir().unwrap();
    let bindir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(cosigner_exe(), bindir.path().join("cosigner")).unwrap();
    let (code, text) = demo_in(tmp.path(), Some(bindir.path()), &["--keep"]);
    assert_eq!(code, Some(0), "{text}");
    let dirs = demo_dirs(tmp.path());
    assert_eq!(dirs.len(), 1, "{text}");
    let config = dirs[0].join("cosigner.toml");
    let hint = format!(
        "look closer: cosigner ledger list --config {}",
        config.display()
    );
    assert!(text.contains(&hint), "{hint}\n{text}");

    // The list shows chain, shortened destination and amount, and explains SEQ.
    let (code, list) = cosigner(&["ledger", "list", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{list}");
    let header = list.lines().next().unwrap();
    for col in ["SEQ", "CHAIN", "TO", "AMOUNT", "ACTION", "RULE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        list.contains("195 (TRON)") && list.contains("TFMQrPdF…6xSopV"),
        "{list}"
    );
    assert!(
        list.contains(
            "SEQ numbers every ledger record: decisions (listed here), submission \
                       outcomes, collections and events (mode, policy) share one sequence"
        ),
        "{list}"
    );
    let (code, verify) = cosigner(&["ledger", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{verify}");
    assert!(
        verify.contains("records (decisions ")
            && verify.contains(", submission outcomes ")
            && verify.contains(", collections ")
            && verify.contains(", mode and policy events "),
        "{verify}"
    );
}

#[test]
fn the_demo_refuses_a_directory_that_holds_files_and_leaves_them_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("merchant.pfx");
    std::fs::write(&shard, b"the production key shard").unwrap();
    let mut c = sandbox_bin();
    c.args(["demo", "--duration", "1s", "--dir"])
        .arg(dir.path());
    let (code, text) = run(c);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("not empty"), "{text}");
    assert_eq!(std::fs::read(&shard).unwrap(), b"the production key shard");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "nothing written beside it");
}

#[test]
fn the_sandbox_help_says_where_the_certificate_comes_from() {
    let mut c = sandbox_bin();
    c.args(["serve", "--help"]);
    let (code, help) = run(c);
    assert_eq!(code, Some(0));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("--pfx <FILE>"), "{help}");
    assert!(
        help.contains("openssl pkcs12 -in merchant.pfx -clcerts -nokeys -out merchant-cert.pem"),
        "{help}"
    );
}

#[test]
fn the_sandbox_prints_where_it_listens_and_a_bad_argument_is_a_usage_error() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("nope.pem");
    // `serve` on any free port, its certificate `cert`.
    let serve = |cert: &Path| {
        let mut c = sandbox_bin();
        c.args(["serve", "--listen", "127.0.0.1:0", "--merchant-no", "m"])
            .args(["--api-key", "k", "--api-secret", "s", "--cert"])
            .arg(cert);
        c
    };
    let (code, text) = run(serve(&cert));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&cert.display().to_string()), "{text}");

    std::fs::write(&cert, demo_certificate()).unwrap();
    let mut child = serve(&cert)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let url = line.trim().strip_prefix("listening on http://127.0.0.1:");
    assert!(
        url.is_some_and(|port| port.parse::<u16>().is_ok_and(|p| p != 0)),
        "{line}"
    );
}

/// A self-signed certificate, PEM: what `serve --cert` reads.
fn demo_certificate() -> Vec<u8> {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509::X509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut b = X509::builder().unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}
