//! Shared by the bench binaries: the fixture key and a sandbox process. The sandbox is this very
//! bench binary started again as `cosigner-sandbox serve` (a process of its own, so that its CPU
//! and memory are not counted as the daemon's): each bench that uses it calls
//! [`serve_if_sandbox_child`] first thing in `main`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Merchant number of the fixtures.
pub(crate) const MERCHANT: &str = "mer0test0vector0001";

/// `tests/fixtures`.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Copies the fixture key shard into `dir` with mode 0600 and returns its path.
pub(crate) fn key_copy(dir: &Path) -> PathBuf {
    let pfx = dir.join("key.pfx");
    std::fs::copy(fixtures().join("keytool-aes.pfx"), &pfx).expect("copy the key");
    std::fs::set_permissions(&pfx, std::fs::Permissions::from_mode(0o600)).expect("chmod the key");
    pfx
}

/// Set in the environment of a bench binary started as the sandbox.
const AS_SANDBOX: &str = "COSIGNER_BENCH_AS_SANDBOX";

/// In a process [`spawn_sandbox`] started, runs `cosigner-sandbox` with this process's arguments
/// until it is killed, and exits; anywhere else returns at once.
pub(crate) fn serve_if_sandbox_child() {
    if std::env::var_os(AS_SANDBOX).is_none() {
        return;
    }
    use clap::Parser as _;
    let cli = cosigner_sandbox::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("the sandbox's runtime");
    if let Err(failure) = runtime.block_on(cosigner_sandbox::cli::run(cli)) {
        eprintln!("{}", failure.report());
        std::process::exit(i32::from(failure.code));
    }
    std::process::exit(0);
}

/// Starts a sandbox process on a free port with `api_key`/`api_secret`; returns it and its URL.
pub(crate) fn spawn_sandbox(api_key: &str, api_secret: &str) -> (Child, String) {
    let me = std::env::current_exe().expect("this bench's path");
    let mut sandbox = Command::new(me)
        .env(AS_SANDBOX, "1")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--merchant-no",
            MERCHANT,
        ])
        .args(["--api-key", api_key, "--api-secret", api_secret, "--cert"])
        .arg(fixtures().join("merchant-cert.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sandbox");
    let mut line = String::new();
    BufReader::new(sandbox.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the sandbox address");
    let url = line.trim().trim_start_matches("listening on ").to_string();
    (sandbox, url)
}
