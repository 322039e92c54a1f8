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
//! `cargo bench --bench idle` (set `COSIGNER_IDLE_SECS` to change the minute). The daemon
//! measured is the binary built for the bench (with the `test-hooks` feature: fail points, test
//! hooks), or the one `COSIGNER_DAEMON_BIN` names, such as the production build
//! (`cargo build --release`, which has neither); the sandbox it polls is always the bench's.

use std::process::Command;
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
    support::serve_if_sandbox_child();
    let secs: u64 = std::env::var("COSIGNER_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let bin = std::env::var("COSIGNER_DAEMON_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_cosigner").to_string());
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
    let mut daemon = Command::new(&bin);
    // The bench's own knobs are not the daemon's (a production build refuses unknown
    // `COSIGNER_` variables).
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COSIGNER_") {
            daemon.env_remove(name);
        }
    }
    let mut daemon = daemon
        .args(["run", "--config"])
        .arg(&cfg)
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
    let parts = resident_by_mapping(daemon.id());
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
    println!("daemon                   {bin}");
    println!("resident set size        {:.1} MiB", rss as f64 / 1024.0);
    for (what, kib) in parts.iter().take(8) {
        println!("  {:>5.1} MiB  {what}", *kib as f64 / 1024.0);
    }
}

/// Resident KiB of `pid` by mapping (a file's path, or `[anonymous]`), largest first.
fn resident_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, dev, inode, then the path if any.
            current = f.nth(4).unwrap_or("[anonymous]").to_string();
        } else if first == "Rss:" {
            *by.entry(current.clone()).or_default() +=
                f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, k)| *k > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}
