//! Throughput: the sandbox (a separate process: this bench binary run as `cosigner-sandbox serve`) is seeded with 10,000 pending
//! transactions, and one pending cycle decides, records and submits all of them. Reported next
//! to the RSA-2048 private-key operations per second of one core, measured in the same run (the
//! physical limit: every decision is one such operation), and the peak RSS of this process
//! during each back end's cycle (the daemon's engine; the sandbox is another process; the peak
//! is started over before each cycle).
//!
//! Also the daemon's CPU time (user + system of this process, all threads, while the cycle runs)
//! per signed decision, next to the CPU time of one RSA-2048 private operation measured in the
//! same run (the mean of 3000 operations before and 3000 after the cycle): the sandbox's CPU is
//! its own process's and not counted.
//!
//! Then the same cycle with the ledger in PostgreSQL (a local server started for the run, with
//! `fsync=on` as in production, against SQLite's `synchronous=FULL`), when PostgreSQL is
//! installed, and the two throughputs compared.
//!
//! `cargo bench --bench throughput` (set `COSIGNER_BENCH_TXS` to change the count;
//! `COSIGNER_BENCH_LEDGER=sqlite` skips the PostgreSQL run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cosigner::client::{Client, ClientConfig, Lang, SignOrder};
use cosigner::cycle::{Engine, PollSettings};
use cosigner::ledger::postgres::PgLedger;
use cosigner::ledger::{LedgerHandle, SqliteLedger};
use cosigner::metrics::Metrics;
use cosigner::policy;
use cosigner::signer::{KeySource, Signer};
use secrecy::SecretString;

#[path = "../tests/it/needs.rs"]
mod needs;
#[path = "../tests/it/pg.rs"]
mod pg;
#[path = "support.rs"]
mod support;
use support::MERCHANT;

/// Starts the peak RSS over from the current RSS (Linux: `5` to `/proc/self/clear_refs`), so
/// that each back end's cycle has a peak of its own.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// User + system CPU time of this process (every thread), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let f: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn main() {
    support::serve_if_sandbox_child();
    let n: u64 = std::env::var("COSIGNER_BENCH_TXS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let pfx = support::key_copy(dir.path());
    let signer = Arc::new(
        Signer::load(&KeySource {
            pfx_file: pfx,
            password: SecretString::from(format!("1bitpay{MERCHANT}")),
            allow_insecure_permissions: false,
        })
        .expect("key"),
    );

    // The physical limit: RSA-2048 private-key operations per second on one core.
    let text = r#"{"id":123456,"from":"TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg","to":"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV","value":"12.5","chainId":"195","status":1}"#;
    // (ops per second of wall time, CPU seconds per op) over 3000 signatures on this thread.
    let rsa = || {
        let ops = 3000;
        let t = Instant::now();
        let c = cpu_time();
        for _ in 0..ops {
            std::hint::black_box(signer.sign(text).expect("sign"));
        }
        (
            f64::from(ops) / t.elapsed().as_secs_f64(),
            (cpu_time() - c).as_secs_f64() / f64::from(ops),
        )
    };
    let (rsa_per_sec, rsa_cpu_before) = rsa();

    reset_peak_rss();
    let sqlite = one_cycle(n, dir.path(), &signer, None);
    let sqlite_peak = peak_rss_kib();
    let postgres = if std::env::var("COSIGNER_BENCH_LEDGER").as_deref() == Ok("sqlite") {
        None
    } else {
        pg::Pg::start_durable().map(|server| {
            reset_peak_rss();
            let cycle = one_cycle(n, dir.path(), &signer, Some(&server));
            (cycle, peak_rss_kib(), server)
        })
    };
    let (out, took, cpu, stats) = sqlite;
    // Measured again after the cycle: the machine is shared, and the cost of one operation
    // moves with the load; the mean of both brackets the cycle.
    let (_, rsa_cpu_after) = rsa();
    let rsa_cpu = (rsa_cpu_before + rsa_cpu_after) / 2.0;
    assert_eq!(
        out.submitted, n,
        "every transaction decided and accepted: {out:?}"
    );
    assert_eq!(stats["decided"].as_u64(), Some(n), "{stats}");
    assert_eq!(stats["rejections"].as_u64(), Some(0), "{stats}");
    let per_sec = n as f64 / took.as_secs_f64();
    println!("transactions                        {n}");
    println!(
        "cycle (list, decide, record, submit) {:.2} s",
        took.as_secs_f64()
    );
    println!("decisions per second                {per_sec:.0}");
    println!("RSA-2048 private ops/s, one core    {rsa_per_sec:.0}");
    println!(
        "ratio                               {:.2}",
        per_sec / rsa_per_sec
    );
    let per_decision = cpu.as_secs_f64() / n as f64;
    println!(
        "daemon CPU per signed decision      {:.0} µs",
        per_decision * 1e6
    );
    println!(
        "CPU of one RSA-2048 private op      {:.0} µs (before {:.0}, after {:.0})",
        rsa_cpu * 1e6,
        rsa_cpu_before * 1e6,
        rsa_cpu_after * 1e6
    );
    println!(
        "CPU ratio (decision / RSA op)       {:.2}",
        per_decision / rsa_cpu
    );
    println!(
        "peak RSS during the cycle (SQLite)  {} MiB",
        sqlite_peak / 1024
    );
    match postgres {
        None => println!(
            "PostgreSQL ledger                   skipped (not installed, or COSIGNER_BENCH_LEDGER=sqlite)"
        ),
        Some(((pg_out, pg_took, pg_cpu, pg_stats), pg_peak, _server)) => {
            assert_eq!(pg_out.submitted, n, "PostgreSQL: {pg_out:?}");
            assert_eq!(pg_stats["decided"].as_u64(), Some(n), "{pg_stats}");
            let pg_per_sec = n as f64 / pg_took.as_secs_f64();
            println!(
                "PostgreSQL ledger: cycle            {:.2} s",
                pg_took.as_secs_f64()
            );
            println!("PostgreSQL ledger: decisions/s      {pg_per_sec:.0}");
            println!(
                "PostgreSQL ledger: CPU per decision {:.0} µs",
                pg_cpu.as_secs_f64() / n as f64 * 1e6
            );
            println!("PostgreSQL ledger: peak RSS         {} MiB", pg_peak / 1024);
            println!(
                "SQLite / PostgreSQL throughput      {:.2} (target ≤ 2)",
                per_sec / pg_per_sec
            );
        }
    }
}

/// One pending cycle over `n` fresh transactions in a new sandbox process, with the ledger in
/// SQLite under `dir`, or in `server`'s PostgreSQL: (outcome, wall time, this process's CPU,
/// the sandbox's stats).
fn one_cycle(
    n: u64,
    dir: &std::path::Path,
    signer: &Arc<Signer>,
    server: Option<&pg::Pg>,
) -> (
    cosigner::cycle::CycleOutcome,
    Duration,
    Duration,
    serde_json::Value,
) {
    let (mut sandbox, url) = support::spawn_sandbox("bench", "bench-secret");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let http = reqwest::Client::new();
        let chunk = 1000;
        for start in (0..n).step_by(chunk) {
            let items: Vec<serde_json::Value> = (start..(start + chunk as u64).min(n))
                .map(|i| serde_json::json!({"id": 100_000 + i, "fromAddress": "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg", "toAddress": "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV", "amount": format!("{}.5", i % 900 + 1), "chainId": "195"}))
                .collect();
            http.post(format!("{url}/_sandbox/pending")).json(&items).send().await.expect("seed");
        }
        let ledger = match server {
            None => LedgerHandle::sqlite(SqliteLedger::open(&dir.join("ledger.db")).expect("ledger")),
            Some(pg) => LedgerHandle::postgres(Arc::new(
                PgLedger::connect(&pg.url("postgres", "disable"), Some(pg.password()))
                    .await
                    .expect("PostgreSQL ledger"),
            )),
        };
        let ppath = dir.join("policy.toml");
        std::fs::write(&ppath, "default = \"hold\"\n[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\"]\nmax_amount = \"1000\"\nwindow = \"24h\"\nmax_count = 1000000\n[guard]\nwindow = \"1h\"\nmax_approvals = 1000000\n").expect("policy");
        let client = Client::new(ClientConfig {
            base_url: reqwest::Url::parse(&format!("{url}/")).expect("url"),
            merchant_no: MERCHANT.into(),
            api_key: "bench".into(),
            api_secret: SecretString::from("bench-secret"),
            lang: Lang::En,
            timeout: Duration::from_secs(15),
            max_requests_per_second: std::num::NonZeroU32::new(100_000).expect("nonzero"),
            sign_order: SignOrder::CaseInsensitive,
            max_response_bytes: 1 << 20,
            max_retries: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            max_clock_skew: Duration::from_secs(30),
            ca_file: None,
        })
        .expect("client");
        let engine = Engine::builder(
            Arc::new(client),
            signer.clone(),
            ledger,
            Arc::new(policy::load(&ppath).expect("policy")),
            Arc::new(Metrics::new().expect("metrics")),
        )
        .settings(PollSettings { page_size: 100, max_in_flight: 4, dry_run: false, ..PollSettings::default() })
        .build();
        let c = cpu_time();
        let t = Instant::now();
        let out = engine.cycle_once().await.expect("cycle");
        let took = t.elapsed();
        let cpu = cpu_time() - c;
        let stats: serde_json::Value = http.get(format!("{url}/_sandbox/stats")).send().await.expect("stats").json().await.expect("json");
        (out, took, cpu, stats)
    });
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    result
}
