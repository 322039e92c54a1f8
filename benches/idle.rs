//! Idle cost: a real `cosigner run` against a sandbox process with nothing pending, default
//! intervals (poll 2 min, collect 5 min). After start-up, CPU time over a minute of idling and
//! the resident set size, read from /proc.
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
        format!("[api]\nbase_url = \"{url}\"\nmerchant_no = \"{MERCHANT}\"\napi_key = \"idle\"\napi_secret = \"idle-secret\"\n[key]\npfx_file = \"key.pfx\"\n[ledger]\npath = \"ledger.db\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n"),
    )
    .expect("config");
    let mut daemon = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let ready = Instant::now();
    loop {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
                let mut r = String::new();
                s.read_to_string(&mut r).ok()?;
                Some(r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
            });
        if ok == Some(true) {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "daemon never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (t0, _) = sample(daemon.id());
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, rss) = sample(daemon.id());
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu = (t1 - t0) as f64 / ticks_per_sec;
    println!("idle for                 {secs} s (poll every 2 min, collect every 5 min)");
    println!(
        "CPU time while idle      {cpu:.2} s ({:.3}% of one core)",
        cpu / secs as f64 * 100.0
    );
    println!("resident set size        {:.1} MiB", rss as f64 / 1024.0);
}
