//! Years of history, and a hostile listing (issue 21). A bench binary, not criterion: each
//! figure is one run of a real `cosigner run` process.
//!
//! History: N records are written through the library's own append path (`SqliteLedger`'s
//! `record_decisions`, `record_outcomes`, `record_resends`, `record_event`), a page of 100
//! withdrawals a commit, as a merchant paying out 10,000 times a day would have them: 70%
//! approved, 20% rejected, 10% held; an outcome for each approve and reject (5% failed); a
//! `resend` event for one approval in ten (up to three during an outage), a `waiting` event for
//! one in thirty, a `policy` event every 10,000; stamped 8.64 s of the ledger's clock apart per
//! withdrawal, the newest a minute ago. The chain is then verified once as the daemon does at
//! start (which moves the last verified point: a daemon that has run on this ledger before).
//! On PostgreSQL, the same history is copied record by record (`PgLedger::import`, what `cosigner
//! ledger migrate` does: every record keeps its number, hash and time) into a local server
//! started for the run (`fsync=on`).
//!
//! Then, on an empty ledger and on the history, the same daemon with the same 200 new
//! withdrawals (140 approved, 40 rejected, 20 held): start to ready (spawn until `/readyz`
//! answers 200, which needs the first cycle to have run), the first cycle (200 decided) and the
//! mean of the next five (the 20 holds listed again), and the daemon's peak RSS (`VmHWM`); and
//! `cosigner ledger verify` on the history: its time, records per second and peak RSS.
//!
//! Hostile (`COSIGNER_HISTORY_HOSTILE=1`): for 25 s each, a sandbox listing 60,000 new ids a page
//! with a `total` of 10⁹, then one listing 1,000 items padded with 10 KB each, then one dripping
//! every answer over 15 s: the daemon's peak RSS, the ledger's growth (file, WAL and all), and
//! the slowest answer to `POST /v1/pause` (each followed by a resume), asked every second.
//!
//! `cargo bench --bench history` (`COSIGNER_HISTORY_RECORDS`, default 1,000,000;
//! `COSIGNER_HISTORY_LEDGER=postgres` for PostgreSQL; `COSIGNER_HISTORY_HOSTILE=1` for the hostile
//! listings; `COSIGNER_DAEMON_BIN` for another daemon binary).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cosigner::clock::Clock;
use cosigner::domain::{Action, TxId, Withdrawal};
use cosigner::ledger::{NewDecision, Outcome, ResendRecord, SqliteLedger};
use rust_decimal::Decimal;

#[path = "../tests/it/needs.rs"]
mod needs;
#[path = "../tests/it/pg.rs"]
mod pg;
#[path = "support.rs"]
mod support;
use support::MERCHANT;

const TREASURY: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
const BAD: &str = "TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7";
const STRANGER: &str = "TStrg5jgAgn9jVXqdagAmBka4A2u7n1ZXs";
const HOT: &str = "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg";
/// The operator API key the bench pauses with.
const KEY: &str = "history-bench-operator-key";
/// Withdrawals a page (one commit each kind).
const PAGE: u64 = 100;
/// The ledger clock's step per withdrawal: 10,000 a day.
const STEP_MS: i64 = 8_640;

/// The policy: the treasury approved within a daily count and total (so every cycle reads the
/// last day's approvals), the blocked address rejected, the rest held.
const POLICY: &str = "default = \"hold\"
[[rule]]
name = \"blocked\"
action = \"reject\"
to = [\"TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7\"]
[[rule]]
name = \"treasury\"
action = \"approve\"
to = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]
window = \"24h\"
max_count = 1000000
max_total = \"100000000\"
";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.replace(['_', ','], ""))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmHWM` (peak RSS) of `pid` in KiB, 0 once it is gone.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// An HTTP/1.0 exchange with 127.0.0.1:`port`: (status, body), `None` while nothing answers.
fn http(port: u16, method: &str, path: &str, body: &str, auth: bool) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let auth = if auth {
        // Basic base64("KEY:")
        format!("Authorization: Basic {}\r\n", base64(&format!("{KEY}:")))
    } else {
        String::new()
    };
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let status = r.split_whitespace().nth(1)?.parse().ok()?;
    let body = r.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// A pending item as 1BitPay lists it.
fn item(id: u64, to: &str) -> String {
    format!(
        "{{\"id\":{id},\"fromAddress\":\"{HOT}\",\"toAddress\":\"{to}\",\"amount\":\"5\",\"chainId\":\"195\"}}"
    )
}

/// The destination of withdrawal `id` in the mix: 70% treasury, 20% blocked, 10% held.
fn destination(id: u64) -> &'static str {
    match id % 10 {
        0..=6 => TREASURY,
        7 | 8 => BAD,
        _ => STRANGER,
    }
}

/// Writes the history: withdrawals from id 1 until `records` records are chained.
fn generate(path: &Path, records: u64) -> u64 {
    let withdrawals = records * 100 / 207 + 1;
    let now = Clock::system().now_ms();
    let start = now - 60_000 - i64::try_from(withdrawals).expect("count") * STEP_MS;
    let (clock, hand) = Clock::manual(start);
    let mut ledger = SqliteLedger::open(path).expect("ledger").with_clock(clock);
    // A realistic `data`: base64 of a 256-byte RSA signature.
    let data = "QmFzZTY0IG9mIGFuIFJTQS0yMDQ4IHNpZ25hdHVyZQ".repeat(9)[..344].to_string();
    let policy_sha = "5e".repeat(32);
    let mut written = 0u64;
    let mut id = 0u64;
    let started = Instant::now();
    while written < records {
        let mut page = Vec::with_capacity(100);
        for _ in 0..PAGE {
            id += 1;
            let to = destination(id);
            let action = match to {
                TREASURY => Action::Approve,
                BAD => Action::Reject,
                _ => Action::Hold,
            };
            let tx = Withdrawal {
                id: TxId::new(id),
                from: Some(HOT.into()),
                to: Some(to.into()),
                amount: Some("5".into()),
                chain_id: Some("195".into()),
                problems: vec![],
                raw: item(id, to),
            };
            let (rule, reason) = match action {
                Action::Approve => ("treasury", "matched rule \"treasury\"".to_string()),
                Action::Reject => ("blocked", "matched rule \"blocked\"".to_string()),
                Action::Hold => (
                    "(default)",
                    "no rule matched (nearest, \"treasury\": toAddress is not in to); the policy default applies".to_string(),
                ),
            };
            let signed = (action != Action::Hold).then(|| {
                format!(
                    "merchantNo={MERCHANT}&transactionId={id}&fromAddress={HOT}&toAddress={to}&amount=5&chainId=195&status={}",
                    if action == Action::Approve { 1 } else { 2 }
                )
            });
            page.push(NewDecision {
                tx,
                action,
                rule: rule.into(),
                reason,
                policy_sha256: policy_sha.clone(),
                dry_run: false,
                amount: (action == Action::Approve).then(|| Decimal::from(5)),
                data: signed.as_ref().map(|_| data.clone()),
                signed_text: signed,
            });
            hand.advance(Duration::from_millis(STEP_MS as u64));
        }
        let seqs = ledger.record_decisions(&page).expect("decisions");
        written += PAGE;
        let mut outcomes = Vec::new();
        let mut resends = Vec::new();
        for (d, seq) in page.iter().zip(&seqs) {
            let n = d.tx.id.get();
            if d.action == Action::Hold {
                continue;
            }
            let failed = n % 20 == 3;
            outcomes.push(Outcome {
                decision_seq: *seq,
                ok: !failed,
                message: failed.then(|| "HTTP 503 Service Unavailable".to_string()),
            });
            if d.action == Action::Approve && n % 10 == 1 {
                for _ in 0..=(n / 10 % 3) {
                    resends.push(ResendRecord {
                        seq: *seq,
                        tx_id: d.tx.id,
                        rule: "treasury".into(),
                        amount: Decimal::from(5),
                    });
                }
            }
        }
        written += (outcomes.len() + resends.len()) as u64;
        ledger.record_outcomes(&outcomes).expect("outcomes");
        ledger.record_resends(&resends).expect("resends");
        for d in page.iter().filter(|d| d.tx.id.get() % 30 == 2) {
            ledger
                .record_event(
                    cosigner::ledger::EventKind::Waiting,
                    &format!(
                        "{{\"seq\":{},\"tx_id\":{},\"why\":\"window total would be # of #\"}}",
                        d.tx.id.get(),
                        d.tx.id.get()
                    ),
                )
                .expect("waiting");
            written += 1;
        }
        if id.is_multiple_of(10_000) {
            ledger
                .record_event(
                    cosigner::ledger::EventKind::Policy,
                    "{\"sha256\":\"5e\",\"why\":\"reload\"}",
                )
                .expect("policy");
            written += 1;
        }
        if id.is_multiple_of(1_000_000) {
            eprintln!(
                "  {written} records, {:.0} records/s",
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "history: {written} records ({id} withdrawals) written in {:.0} s ({:.0} records/s)",
        started.elapsed().as_secs_f64(),
        written as f64 / started.elapsed().as_secs_f64()
    );
    // The daemon has run on this ledger before: its start-up walk moved the last verified
    // point to the head.
    let t = Instant::now();
    let policy_path = path.with_file_name("policy.toml");
    std::fs::write(&policy_path, POLICY).expect("policy");
    let policy = cosigner::policy::load(&policy_path).expect("policy");
    drop(ledger);
    let mut ledger = SqliteLedger::open(path).expect("ledger");
    let report = ledger
        .verify_at_start(&policy, Clock::system().now_ms(), Duration::from_secs(65))
        .expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    println!(
        "history: first start-up walk (every record, never verified) {:.1} s",
        t.elapsed().as_secs_f64()
    );
    id
}

/// A daemon's configuration in `dir` for `ledger` (a `[ledger]` table body).
fn config(dir: &Path, sandbox: &str, ledger: &str, port: u16, extra: &str) -> PathBuf {
    support::key_copy(dir);
    std::fs::write(dir.join("policy.toml"), POLICY).expect("policy");
    std::fs::write(
        dir.join("api-keys"),
        format!("{}\n", cosigner::operator::digest(KEY)),
    )
    .expect("keys");
    let cfg = dir.join("cosigner.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nbase_url = \"{sandbox}\"\nmerchant_no = \"{MERCHANT}\"\napi_key = \"history\"\napi_secret = \"history-secret\"\nmax_requests_per_second = 1000\n\
             [key]\npfx_file = \"key.pfx\"\n[policy]\nfile = \"policy.toml\"\n[ledger]\n{ledger}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\napi_keys_file = \"api-keys\"\nmax_requests_per_second = 1000\n\
             [log]\nlevel = \"warn\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n{extra}[collect]\nenabled = false\n"
        ),
    )
    .expect("config");
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    cfg
}

fn daemon_bin() -> String {
    std::env::var("COSIGNER_DAEMON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cosigner").into())
}

/// The cosigner command with the bench's own `COSIGNER_` variables removed (a production build
/// refuses unknown ones).
fn cosigner(args: &[&str]) -> Command {
    let mut c = Command::new(daemon_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COSIGNER_") {
            c.env_remove(name);
        }
    }
    c.args(args);
    c
}

/// A metric's value from `/metrics` of the daemon on `port`.
fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = http(port, "GET", "/metrics", "", false).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// What one daemon run measured.
struct Run {
    to_ready: Duration,
    first_cycle: Duration,
    next_cycles: Duration,
    peak_kib: u64,
}

/// Runs the daemon on the ledger `table` (configured in `dir`) against a sandbox of its own
/// holding the 200 withdrawals from `first_id`; returns what it measured and the configuration.
fn run_daemon(dir: &Path, table: &str, first_id: u64) -> (Run, PathBuf) {
    let (mut sandbox_child, sandbox_url) = support::spawn_sandbox("history", "history-secret");
    let sandbox = sandbox_url.as_str();
    let port = free_port();
    let cfg = config(dir, sandbox, table, port, "cycle_timeout = \"60s\"\n");
    let cfg = cfg.as_path();
    let items: Vec<String> = (first_id..first_id + 200)
        .map(|id| item(id, destination(id)))
        .collect();
    let (status, body) = http(
        port_of(sandbox),
        "POST",
        "/_sandbox/pending",
        &format!("[{}]", items.join(",")),
        false,
    )
    .expect("sandbox");
    assert!(status < 300, "{status} {body}");
    let mut daemon = cosigner(&["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .spawn()
        .expect("daemon");
    let started = Instant::now();
    while http(port, "GET", "/readyz", "", false).is_none_or(|(s, _)| s != 200) {
        assert!(started.elapsed() < Duration::from_secs(600), "never ready");
        assert!(
            daemon.try_wait().expect("wait").is_none(),
            "the daemon exited"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let to_ready = started.elapsed();
    let count = "cosigner_poll_duration_seconds_count";
    let sum = "cosigner_poll_duration_seconds_sum";
    assert_eq!(metric(port, count), 1.0);
    let first = metric(port, sum);
    while metric(port, count) < 6.0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (n, total) = (metric(port, count), metric(port, sum));
    let peak_kib = peak_kib(daemon.id());
    let (_, stats) = http(port_of(sandbox), "GET", "/_sandbox/stats", "", false).expect("stats");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = sandbox_child.kill();
    let _ = sandbox_child.wait();
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["decided"].as_u64(), Some(180), "{stats}");
    (
        Run {
            to_ready,
            first_cycle: Duration::from_secs_f64(first),
            next_cycles: Duration::from_secs_f64((total - first) / (n - 1.0)),
            peak_kib,
        },
        cfg.to_path_buf(),
    )
}

/// Runs `cosigner ledger verify` on `cfg`: (time, peak KiB, records).
fn verify(cfg: &Path) -> (Duration, u64, u64) {
    let started = Instant::now();
    let mut child: Child = cosigner(&["ledger", "verify", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .spawn()
        .expect("verify");
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() {
        peak = peak.max(peak_kib(child.id()));
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("output");
    assert!(child.wait().expect("status").success(), "{out}");
    // "ledger …: N records (…), hash chain intact"
    let records = out
        .split(" records (")
        .next()
        .and_then(|head| head.split_whitespace().last())
        .and_then(|n| n.replace(',', "").parse::<u64>().ok())
        .unwrap_or_else(|| panic!("records in {out:?}"));
    (took, peak, records)
}

fn print_run(what: &str, r: &Run) {
    println!(
        "{what:<22} start to ready {:>6.0} ms   first cycle {:>5.0} ms   next cycles {:>5.1} ms   peak RSS {:>5.1} MiB",
        r.to_ready.as_secs_f64() * 1e3,
        r.first_cycle.as_secs_f64() * 1e3,
        r.next_cycles.as_secs_f64() * 1e3,
        r.peak_kib as f64 / 1024.0
    );
}

fn main() {
    support::serve_if_sandbox_child();
    if std::env::var("COSIGNER_HISTORY_HOSTILE").is_ok_and(|v| v == "1") {
        hostile();
        return;
    }
    let records = env_u64("COSIGNER_HISTORY_RECORDS", 1_000_000);
    let postgres = std::env::var("COSIGNER_HISTORY_LEDGER").is_ok_and(|v| v == "postgres");
    let work = tempfile::tempdir_in(
        std::env::var("COSIGNER_HISTORY_DIR").unwrap_or_else(|_| "/tmp".into()),
    )
    .expect("temp dir");
    // `COSIGNER_HISTORY_KEEP=1` keeps the ledgers for a closer look (the path is printed).
    let kept = std::env::var("COSIGNER_HISTORY_KEEP").is_ok_and(|v| v == "1");
    let (root, _work) = if kept {
        let path = work.keep();
        println!("history: kept in {}", path.display());
        (path, None)
    } else {
        (work.path().to_path_buf(), Some(work))
    };
    // The same daemon on an empty ledger.
    let empty_dir = root.as_path().join("empty");
    std::fs::create_dir_all(&empty_dir).expect("dir");
    let server = if postgres {
        Some(pg::Pg::start_durable().expect("PostgreSQL is installed"))
    } else {
        None
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ledger_table = |db: &str, dir: &Path| match &server {
        None => "path = \"ledger.db\"".to_string(),
        Some(pg) => {
            std::fs::write(dir.join("pg-password"), pg.password_text()).expect("password");
            std::fs::set_permissions(
                dir.join("pg-password"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod");
            format!(
                "url = \"{}\"\npassword_file = \"pg-password\"\nname = \"bench\"",
                pg.url(db, "disable")
            )
        }
    };
    if let Some(pg) = &server {
        rt.block_on(pg.create_db("empty"));
        rt.block_on(pg.create_db("history"));
    }
    let table = ledger_table("empty", &empty_dir);
    let (empty, _) = run_daemon(&empty_dir, &table, 100_000_000);

    // The history, written through the append path, then the same daemon on it.
    let history_dir = root.as_path().join("history");
    std::fs::create_dir_all(&history_dir).expect("dir");
    let sqlite = history_dir.join("ledger.db");
    let last_id = generate(&sqlite, records);
    if let Some(pg) = &server {
        let t = Instant::now();
        let export = SqliteLedger::open(&sqlite)
            .expect("ledger")
            .export()
            .expect("export");
        rt.block_on(async {
            let l = cosigner::ledger::postgres::PgLedger::connect(
                &pg.url("history", "disable"),
                Some(pg.password()),
            )
            .await
            .expect("PostgreSQL ledger");
            let report = l.import(&export).await.expect("import");
            assert!(report.problems.is_empty());
            // As on SQLite: a daemon has run on it before and verified it at start.
            let policy = cosigner::policy::load(&history_dir.join("policy.toml")).expect("policy");
            let report = l
                .verify_at_start(&policy, Clock::system().now_ms(), Duration::from_secs(65))
                .await
                .expect("verify");
            assert!(report.problems.is_empty());
        });
        drop(export);
        println!(
            "history: copied into PostgreSQL in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        std::fs::remove_file(&sqlite).expect("remove the SQLite copy");
    }
    let table = ledger_table("history", &history_dir);
    let (full, cfg) = run_daemon(&history_dir, &table, last_id + 1_000);
    let (vt, vpeak, vrecords) = verify(&cfg);

    println!(
        "ledger                 {} ({} records)",
        if postgres { "PostgreSQL" } else { "SQLite" },
        records
    );
    print_run("empty ledger", &empty);
    print_run("history", &full);
    let ready_diff = full.to_ready.as_secs_f64() - empty.to_ready.as_secs_f64();
    let rss_diff = (full.peak_kib as f64 - empty.peak_kib as f64) / 1024.0;
    let cycle_limit = 2.0 * empty.first_cycle.as_secs_f64() + 0.05;
    let next_limit = 2.0 * empty.next_cycles.as_secs_f64() + 0.05;
    println!(
        "start to ready         +{ready_diff:.2} s over empty (target ≤ 1 s): {}",
        if ready_diff <= 1.0 { "met" } else { "MISSED" }
    );
    println!(
        "peak RSS               {rss_diff:+.1} MiB over empty (target ≤ 32 MiB): {}",
        if rss_diff <= 32.0 { "met" } else { "MISSED" }
    );
    println!(
        "first cycle            {:.0} ms (target ≤ {:.0} ms): {}",
        full.first_cycle.as_secs_f64() * 1e3,
        cycle_limit * 1e3,
        if full.first_cycle.as_secs_f64() <= cycle_limit {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "next cycles            {:.1} ms (target ≤ {:.1} ms): {}",
        full.next_cycles.as_secs_f64() * 1e3,
        next_limit * 1e3,
        if full.next_cycles.as_secs_f64() <= next_limit {
            "met"
        } else {
            "MISSED"
        }
    );
    let rate = vrecords as f64 / vt.as_secs_f64();
    println!(
        "ledger verify          {:.1} s, {rate:.0} records/s (target ≥ 300,000), peak RSS {:.1} MiB (target ≤ 64): {}",
        vt.as_secs_f64(),
        vpeak as f64 / 1024.0,
        if rate >= 300_000.0 && vpeak <= 64 * 1024 {
            "met"
        } else {
            "MISSED"
        }
    );
}

/// Size of the SQLite ledger in `dir` with its WAL, in bytes.
fn ledger_bytes(dir: &Path) -> u64 {
    ["ledger.db", "ledger.db-wal", "ledger.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// The hostile listings, 25 s each.
fn hostile() {
    let secs = env_u64("COSIGNER_HISTORY_HOSTILE_SECS", 25);
    let kinds = [
        (
            "60,000 new ids a page, total 10^9",
            "{\"flood_ids\":60000,\"total_override\":1000000000}",
        ),
        (
            "1,000 items padded with 10 KB each",
            "{\"pad_items\":10240}",
        ),
        ("every answer dripped over 15 s", "{\"drip\":\"15s\"}"),
    ];
    for (what, faults) in kinds {
        let work = tempfile::tempdir().expect("temp dir");
        let (mut sandbox, url) = support::spawn_sandbox("history", "history-secret");
        let items: Vec<String> = (1..=1000).map(|id| item(id, destination(id))).collect();
        let sb = port_of(&url);
        http(
            sb,
            "POST",
            "/_sandbox/pending",
            &format!("[{}]", items.join(",")),
            false,
        )
        .expect("sandbox");
        let (status, body) = http(sb, "PUT", "/_sandbox/faults", faults, false).expect("faults");
        assert!(status < 300, "{status} {body}");
        let port = free_port();
        let cfg = config(work.path(), &url, "path = \"ledger.db\"", port, "");
        let mut daemon = cosigner(&["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .spawn()
            .expect("daemon");
        let started = Instant::now();
        while http(port, "GET", "/healthz", "", false).is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "no listener");
            std::thread::sleep(Duration::from_millis(5));
        }
        let base = ledger_bytes(work.path());
        let mut slowest = Duration::ZERO;
        let mut pauses = 0;
        let mut peak_bytes = base;
        while started.elapsed() < Duration::from_secs(secs) {
            let t = Instant::now();
            let (s, b) = http(port, "POST", "/v1/pause", "", true).expect("pause answered");
            slowest = slowest.max(t.elapsed());
            assert_eq!(s, 200, "{b}");
            let (s, b) = http(port, "POST", "/v1/resume", "", true).expect("resume answered");
            assert_eq!(s, 200, "{b}");
            pauses += 1;
            peak_bytes = peak_bytes.max(ledger_bytes(work.path()));
            std::thread::sleep(Duration::from_secs(1));
        }
        let peak = peak_kib(daemon.id());
        let _ = daemon.kill();
        let _ = daemon.wait();
        let _ = sandbox.kill();
        let _ = sandbox.wait();
        let growth = peak_bytes.saturating_sub(base) as f64 / (1024.0 * 1024.0);
        println!(
            "{what:<38} {secs} s: peak RSS {:.1} MiB (≤ 128), ledger growth {growth:.2} MiB (≤ 16), slowest of {pauses} pauses {:.0} ms (≤ 1000)",
            peak as f64 / 1024.0,
            slowest.as_secs_f64() * 1e3
        );
    }
}
