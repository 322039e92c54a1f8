//! The systemd watchdog through the real protocol: the binary under libfaketime (the clock
//! running 300 times faster), a datagram socket as `$NOTIFY_SOCKET`, `WATCHDOG_USEC` as the
//! production unit sets it (`WatchdogSec=15min`).

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::*;

/// Daemon seconds per real second.
const SPEED: u32 = 300;
/// The production unit's `WatchdogSec=15min`.
const WATCHDOG_USEC: &str = "900000000";

/// A daemon under libfaketime, in its own process group (faketime forks), killed on drop.
struct FastDaemon {
    child: Child,
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl FastDaemon {
    fn start(base_url: &str) -> Self {
        Self::start_with(base_url, &[])
    }

    fn start_with(base_url: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), base_url);
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        // Production intervals; a timeout far beyond the test so a hung request stays hung.
        text = text.replace("timeout = \"5s\"", "timeout = \"10h\"");
        text.push_str("[http]\nlisten = \"127.0.0.1:0\"\n[poll]\ninterval = \"2min\"\n");
        std::fs::write(&cfg, text).unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let child = std::process::Command::new("faketime")
            .args([
                "-f",
                &format!("+0 x{SPEED}"),
                env!("CARGO_BIN_EXE_cosigner"),
            ])
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        FastDaemon {
            child,
            socket,
            _dir: dir,
        }
    }

    /// The `WATCHDOG=1` datagrams that arrived since the last call.
    fn watchdog_pings(&self) -> usize {
        let mut n = 0;
        let mut buf = [0u8; 256];
        self.socket.set_nonblocking(true).unwrap();
        while let Ok(len) = self.socket.recv(&mut buf) {
            n += usize::from(&buf[..len] == b"WATCHDOG=1");
        }
        n
    }

    /// Stops the daemon and returns its log.
    fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut log);
        }
        log
    }
}

impl Drop for FastDaemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_for_thirty_daemon_minutes_through_outages_and_stops_when_the_scheduler_is_wedged()
 {
    if !faketime_or_skip() {
        return;
    }
    // Healthy: a sandbox that answers (and tolerates the daemon's fast clock).
    let sandbox = spawn_sandbox(&["--max-skew", "30d"]);
    // An upstream outage: nothing listens there, every cycle fails.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    // Slow: the server never answers and the request timeout is far away, so each cycle
    // lasts until its deadline (poll.cycle_timeout, the interval) abandons it.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());

    let healthy = FastDaemon::start(&sandbox.url);
    let outage = FastDaemon::start(&closed);
    let slow = FastDaemon::start(&hung_url);
    // Wedged: the scheduler's thread stops inside its first cycle, which no deadline ends.
    let wedged = FastDaemon::start_with(&sandbox.url, &[("COSIGNER_FAILPOINT", "wedge-cycle")]);

    // Pings every 7.5 daemon minutes from the start: the fifth is at 30 minutes (6 s here).
    let (mut h, mut o, mut s, mut w) = (0, 0, 0, 0);
    wait_until(
        "five WATCHDOG=1 (30 daemon minutes) from the healthy daemon, the one in an outage and \
         the one whose server never answers",
        Duration::from_secs(60),
        || {
            h += healthy.watchdog_pings();
            o += outage.watchdog_pings();
            s += slow.watchdog_pings();
            w += wedged.watchdog_pings();
            let done = h >= 5 && o >= 5 && s >= 5;
            async move { done }
        },
    )
    .await;
    w += wedged.watchdog_pings();
    let wedged_log = wedged.stop();
    // The wedged scheduler counts as alive for one interval plus the 10-minute cycle budget
    // (12 minutes): pings at 0 and 7.5 minutes, none after.
    assert!(
        w <= 2,
        "a wedged scheduler must stop feeding the watchdog ({w} pings in 30 minutes)"
    );
    assert!(
        wedged_log.contains("not feeding the systemd watchdog"),
        "the log says why: {wedged_log}"
    );
    let slow_log = slow.stop();
    assert!(
        slow_log.contains("poll.cycle_timeout"),
        "the slow daemon's cycles were abandoned at their deadline: {slow_log}"
    );
    assert!(!slow_log.contains("not feeding"), "{slow_log}");
    let outage_log = outage.stop();
    assert!(
        outage_log.contains("cycle failed"),
        "the outage daemon's cycles really failed: {outage_log}"
    );
    assert!(!outage_log.contains("not feeding"), "{outage_log}");
    let healthy_log = healthy.stop();
    assert!(!healthy_log.contains("not feeding"), "{healthy_log}");
}
