//! Shared by the bench binaries: the fixture key and a sandbox process.

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

/// Starts `cosigner sandbox` on a free port with `api_key`/`api_secret`; returns it and its URL.
pub(crate) fn spawn_sandbox(api_key: &str, api_secret: &str) -> (Child, String) {
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_cosigner"))
        .args([
            "sandbox",
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
