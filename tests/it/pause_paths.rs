//! A pause can always get in (issue 19): the real daemon, its descriptor limit lowered to 1024,
//! flooded with 1,100 idle TCP connections, still takes a pause over HTTP within 5 s and over
//! its control socket at once, and approves nothing listed after it; SIGUSR1 holds everything;
//! `cosigner pause` gives up on a daemon that does not answer, naming it; a connection that
//! sends half a request head is closed after the header-read timeout.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;
use cosigner::ledger::EventKind;

const KEY: &str = "cos_test_operator_key_flood";
const POLICY: &str = "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\n";
/// Idle connections the flood opens: more than the daemon's 1,024 descriptors.
const FLOOD: usize = 1_100;

/// `cosigner run` as a process, with its sandbox; killed on drop.
struct Daemon {
    child: Child,
    base: String,
    socket: PathBuf,
    cfg: PathBuf,
    dir: tempfile::TempDir,
    sandbox: SandboxProcess,
    http: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the daemon (under `prlimit --nofile=1024:1024` when `limit_fds`) with `http_extra`
    /// appended to its `[http]` section, and waits until `/healthz` answers.
    async fn start(http_extra: &str, limit_fds: bool) -> Self {
        let d = Self::spawn(http_extra, limit_fds, &[]).await;
        d.wait_healthy().await;
        d
    }

    /// Starts the daemon, with `listed` already pending in its sandbox, without waiting for it.
    async fn spawn(http_extra: &str, limit_fds: bool, listed: &[u64]) -> Self {
        let sandbox = spawn_sandbox(&[]);
        for id in listed {
            post_pending(
                &sandbox.url,
                vec![item(TxId::new(*id), HOT, TREASURY, "1", "195")],
            )
            .await;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), &sandbox.url);
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        std::fs::write(
            dir.path().join("api-keys"),
            format!("{}\n", cosigner::operator::digest(KEY)),
        )
        .unwrap();
        let port = free_port();
        let socket = dir.path().join("control.socket");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!(
            "[poll]\ninterval = \"1s\"\njitter = \"0s\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             api_keys_file = \"api-keys\"\nmax_requests_per_second = 1000\n{http_extra}\n\n\
             [control]\nsocket = \"{}\"\n",
            socket.display()
        ));
        std::fs::write(&cfg, text).unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        // Built before the daemon starts: loading the CA certificates takes longer than the
        // daemon's start, which a test may need to catch.
        let http = reqwest::Client::new();
        let mut cmd = if limit_fds {
            let mut c = std::process::Command::new("prlimit");
            c.arg("--nofile=1024:1024")
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_cosigner"));
            c
        } else {
            bin()
        };
        let child = cmd
            .env_remove("COSIGNER_CONFIG")
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("RUST_LOG")
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            socket,
            cfg,
            dir,
            sandbox,
            http,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .http
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` with the operator key, within 5 s.
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .basic_auth(KEY, Some(""))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap()
    }

    /// The ledger's decision on `id`, once the daemon has made one.
    async fn decision(&self, id: u64) -> Value {
        let path = format!("/v1/decisions?tx_id={id}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.get(&path).await;
            if let Some(d) = v["data"].as_array().and_then(|a| a.first()) {
                return d.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no decision on {id}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the sandbox took an approval for `id`.
    async fn approved(&self, id: u64) -> bool {
        sandbox_decisions(&self.sandbox.url)
            .await
            .iter()
            .any(|d| d["id"].to_string().trim_matches('"') == id.to_string() && d["status"] == 1)
    }

    async fn list(&self, id: u64) {
        post_pending(
            &self.sandbox.url,
            vec![item(TxId::new(id), HOT, TREASURY, "1", "195")],
        )
        .await;
    }

    /// Stops it with SIGTERM and waits.
    fn stop(&mut self) {
        signal(self.pid(), "-TERM");
        assert!(self.child.wait().unwrap().success(), "{}", self.log());
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Opens `n` idle TCP connections to `addr` (each given 1 s to connect; the count that did is
/// returned with them), off the runtime.
async fn flood(addr: String, n: usize) -> Vec<TcpStream> {
    tokio::task::spawn_blocking(move || {
        let addr: std::net::SocketAddr = addr.trim_start_matches("http://").parse().unwrap();
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
            .collect()
    })
    .await
    .unwrap()
}

/// Descriptors the process `pid` holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn fd_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned()
}

/// The daemon flooded: descriptor limit 1024, 1,100 idle connections (and approvals going on:
/// one listed now is approved). The header-read timeout is long here, so that only the
/// connection cap can let a pause in.
async fn flooded() -> (Daemon, Vec<TcpStream>) {
    let d = Daemon::start("header_read_timeout = \"60s\"", true).await;
    let limit = fd_limit(d.pid());
    assert!(
        limit.split_whitespace().nth(3) == Some("1024"),
        "the daemon's descriptor limit: {limit}"
    );
    let held = flood(d.base.clone(), FLOOD).await;
    eprintln!(
        "flood: {} of {FLOOD} idle connections opened; the daemon holds {} descriptors ({limit})",
        held.len(),
        open_fds(d.pid())
    );
    assert!(
        open_fds(d.pid()) < 1024,
        "the daemon holds {} descriptors",
        open_fds(d.pid())
    );
    // Approvals go on meanwhile.
    d.list(1).await;
    wait_until("tx 1 approved", Duration::from_secs(20), || d.approved(1)).await;
    (d, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_1100_idle_connections_a_pause_over_http_is_in_force_within_5s_and_nothing_listed_after_it_is_approved()
 {
    let (d, _held) = flooded().await;
    let started = Instant::now();
    let r = d
        .http
        .post(format!("{}/v1/pause", d.base))
        .basic_auth(KEY, Some(""))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the pause did not get in within 5 s: {e}\n{}", d.log()));
    let took = started.elapsed();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    eprintln!("pause over HTTP through the flood: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(d.get("/v1/status").await["mode"], "hold");

    d.list(2).await;
    let decision = d.decision(2).await;
    assert_eq!(
        (decision["action"].as_str(), decision["rule"].as_str()),
        (Some("hold"), Some("(paused)")),
        "{decision}"
    );
    assert!(!d.approved(2).await, "tx 2 was approved after the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_1100_idle_connections_a_pause_over_the_control_socket_is_in_force_at_once_and_resume_lets_approvals_go()
 {
    let (d, _held) = flooded().await;
    let mode = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660,
        "the control socket is for its owner and group only"
    );
    // No key: the socket's permissions are its authentication.
    let started = Instant::now();
    let out = run_bin(&["pause", "--config", d.cfg.to_str().unwrap()]).await;
    let took = started.elapsed();
    let said = all_output(&out);
    assert!(out.status.success(), "{said}\n{}", d.log());
    assert!(said.contains("control socket"), "{said}");
    eprintln!("`cosigner pause` over the control socket through the flood: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(d.get("/v1/status").await["mode"], "hold");

    d.list(2).await;
    let decision = d.decision(2).await;
    assert_eq!(decision["action"], "hold", "{decision}");
    assert!(!d.approved(2).await, "tx 2 was approved after the pause");

    let out = run_bin(&["resume", "--config", d.cfg.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    wait_until(
        "tx 2 approved after resume",
        Duration::from_secs(20),
        || d.approved(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_during_start_holds_everything_is_recorded_and_approves_nothing() {
    // Listed before the daemon starts: its first cycle must already be under the signal.
    let mut d = Daemon::spawn("", false, &[1]).await;
    let pid = d.pid();
    // Sent the moment the process catches SIGUSR1 (its default action would kill it), by a
    // system call from a tight loop: the daemon takes some 50 ms to start, and `kill(1)` or a
    // sleeping loop would often send it after the first cycle.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (10 - 1)) != 0);
        if caught {
            break;
        }
        assert!(Instant::now() < deadline, "SIGUSR1 never caught");
        std::hint::spin_loop();
    }
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGUSR1).unwrap();
    d.wait_healthy().await;
    assert!(d.child.try_wait().unwrap().is_none(), "SIGUSR1 killed it");
    wait_until("hold-all in force", Duration::from_secs(10), || async {
        d.get("/v1/status").await["mode"] == "hold"
    })
    .await;
    let decision = d.decision(1).await;
    assert_eq!(
        (decision["action"].as_str(), decision["rule"].as_str()),
        (Some("hold"), Some("(paused)")),
        "{decision}\n{}",
        d.log()
    );

    // Once running: resume, then SIGUSR1 again.
    let r = d
        .http
        .post(format!("{}/v1/resume", d.base))
        .basic_auth(KEY, Some(""))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(
        "tx 1 approved after resume",
        Duration::from_secs(20),
        || d.approved(1),
    )
    .await;
    signal(pid, "-USR1");
    wait_until("hold-all again", Duration::from_secs(10), || async {
        let s = d.get("/v1/status").await;
        s["mode"] == "hold" && s["mode_recorded"] == true
    })
    .await;
    d.list(2).await;
    assert_eq!(d.decision(2).await["action"], "hold");
    assert!(!d.approved(2).await, "tx 2 was approved after SIGUSR1");
    d.stop();
    let ledger =
        cosigner::ledger::SqliteLedger::open_read_only(&d.dir.path().join("ledger.db")).unwrap();
    let latest = ledger.latest_event(EventKind::Mode).unwrap().unwrap();
    assert!(
        latest.contains("hold") && latest.contains("signal SIGUSR1"),
        "{latest}"
    );
}

/// Waits for `child` up to `limit`; kills it and fails if it is still running.
fn wait_within(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_pause_command_gives_up_on_a_daemon_that_accepts_but_never_answers_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http://127.0.0.1:9");
    // It accepts, reads nothing, answers nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in silent.incoming().flatten() {
            kept.push(s);
        }
    });
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("[http]\nlisten = \"{addr}\"\n"));
    std::fs::write(&cfg, text).unwrap();
    // The ledger held, as a running daemon holds it: the command must ask the daemon.
    let _held = cosigner::ledger::SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
    let started = Instant::now();
    let mut child = bin()
        .env_remove("RUNTIME_DIRECTORY")
        .env("COSIGNER_API_KEY", KEY)
        .args(["pause", "--timeout", "2s", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = wait_within(&mut child, Duration::from_secs(15));
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&addr.to_string()) && err.contains("within 2s"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");

    // A control socket named with --socket that nothing serves: said, at once.
    let missing = dir.path().join("nothing.socket");
    let mut child = bin()
        .args(["pause", "--socket"])
        .arg(&missing)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = wait_within(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

/// Reads from `s` until the daemon closes it; returns what it sent and when it closed.
fn until_closed(mut s: TcpStream, started: Instant) -> (String, Duration) {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not closed after {:?}: {e}", started.elapsed()),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_half_a_request_head_or_nothing_is_closed_after_the_header_timeout()
{
    let d = Daemon::start("header_read_timeout = \"2s\"", false).await;
    let addr = d.base.trim_start_matches("http://").to_owned();
    let (half, silent) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut half = TcpStream::connect(&addr).unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .unwrap();
        let silent = TcpStream::connect(&addr).unwrap();
        let h = std::thread::spawn(move || until_closed(half, started));
        let s = until_closed(silent, started);
        (h.join().unwrap(), s)
    })
    .await
    .unwrap();
    for (what, (sent, took)) in [("half a head", half), ("nothing", silent)] {
        assert!(
            took >= Duration::from_millis(1_900) && took < Duration::from_secs(6),
            "{what}: closed after {took:?}"
        );
        assert!(!sent.contains("200 OK"), "{what}: {sent}");
    }
    // A whole request is answered, of course.
    let v = d.get("/healthz").await;
    assert_eq!(v["status"], "alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_control_socket_that_cannot_be_bound_stops_the_start_naming_the_key() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[control]\nsocket = \"no/such/dir/control.socket\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = run_bin(&["run", "--config", cfg.to_str().unwrap()]).await;
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("control.socket") && said.contains("no/such/dir/control.socket"),
        "{said}"
    );

    // The default one (under $RUNTIME_DIRECTORY) never stops it: a directory it cannot write.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("socket = \"no/such/dir/control.socket\"", "");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = bin()
        .env("RUNTIME_DIRECTORY", dir.path().join("missing"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let said = loop {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if said.contains("cosigner running") {
            break said;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon stopped over its default control socket: {said}"
        );
        assert!(Instant::now() < deadline, "not running: {said}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(said.contains("no control socket"), "{said}");
    let _ = child.kill();
    let _ = child.wait();
}
