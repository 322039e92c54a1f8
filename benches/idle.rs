//! Idle cost: a real `cosigner run` against a sandbox process with nothing pending, default
//! intervals (poll 2 min, collect 5 min). After start-up, CPU time over a minute of idling and
//! the resident set size, read from /proc.
//!
//! Start to ready: the time from spawning `cosigner run` to `/readyz` answering 200 (which
//! needs the first successful poll), and that first poll's own duration from
//! `cosigner_poll_duration_seconds`; the difference is the start-up the daemon adds. The
//! random delay before the first poll and collection (`jitter`, up to 0.5 s by default, there
//! so that a fleet restarted together does not poll in step) is set to 0 here: it is a chosen
//! wait, not start-up work.
//!
//! `cargo bench --bench idle` (set `COSIGNER_IDLE_SECS` to change the minute).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::MERCHANT;

/// (utime + stime in clock ticks, VmRSS in KiB) of `pid`.
fn sample(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

/// The response to `GET path` on 127.0.0.1:`port`, or `None` while nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

fn main() {
    let secs: u64 = std::env::var("COSIGNER_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let bin = env!("CARGO_BIN_EXE_cosigner");
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sandbox, url) = support::spawn_sandbox("idle", "idle-secret");
    support::key_copy(dir.path());
    std::fs::write(dir.path().join("policy.toml"), "default = \"hold\"\n").expect("policy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = dir.path().join("cosigner.toml");
    std::fs::write(
        &cfg,
        format!("[api]\nbase_url = \"{url}\"\nmerchant_no = \"{MERCHANT}\"\napi_key = \"idle\"\napi_secret = \"idle-secret\"\n[key]\npfx_file = \"key.pfx\"\n[ledger]\npath = \"ledger.db\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n[poll]\njitter = \"0s\"\n[collect]\njitter = \"0s\"\n"),
    )
    .expect("config");
    let mut daemon = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let started = Instant::now();
    loop {
        if get(port, "/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "daemon never became ready"
        );
        // Checked every millisecond: the start-up measured is ~100 ms.
        std::thread::sleep(Duration::from_millis(1));
    }
    let to_ready = started.elapsed();
    let metrics = get(port, "/metrics").expect("metrics");
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert_eq!(
        metric("cosigner_poll_duration_seconds_count"),
        1.0,
        "one poll so far"
    );
    let first_poll = Duration::from_secs_f64(metric("cosigner_poll_duration_seconds_sum"));
    let (t0, _) = sample(daemon.id());
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, rss) = sample(daemon.id());
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu = (t1 - t0) as f64 / ticks_per_sec;
    println!(
        "start to ready           {:.0} ms (first poll {:.1} ms; start-up without it {:.0} ms)",
        to_ready.as_secs_f64() * 1e3,
        first_poll.as_secs_f64() * 1e3,
        to_ready.saturating_sub(first_poll).as_secs_f64() * 1e3
    );
    println!("idle for                 {secs} s (poll every 2 min, collect every 5 min)");
    println!(
        "CPU time while idle      {cpu:.2} s ({:.3}% of one core)",
        cpu / secs as f64 * 100.0
    );
    println!("resident set size        {:.1} MiB", rss as f64 / 1024.0);
}
