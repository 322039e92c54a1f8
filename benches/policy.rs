//! Policy evaluation cost: 50 rules and a 100,000-address list, the worst case a merchant is
//! likely to write. The transaction passes every rule's chain, destination, amount and window
//! total, and misses each at its window count, the last condition: every condition of every rule
//! runs (the bench checks that before timing it).
//!
//! Timed in this thread's CPU time, not wall time: the target is evaluations per second on one
//! core, and on a machine shared with other work wall time also counts the moments this thread
//! waited for a core (the throughput bench counts CPU time for the same reason).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use cosigner::client::parse_pending_item;
use cosigner::domain::ClockCheck;
use cosigner::policy::{self, Context, Usage, WindowUsage};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, criterion_group, criterion_main};
use nix::time::{ClockId, clock_gettime};
use rust_decimal::Decimal;

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), reported like wall time.
struct ThreadCpuTime;

impl ThreadCpuTime {
    fn now() -> Duration {
        Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock"))
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        Self::now()
    }
    fn end(&self, started: Duration) -> Duration {
        Self::now().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds shown as ns/µs/ms, as for wall time.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn big_policy() -> policy::Policy {
    let mut t = String::from("default = \"hold\"\n[lists]\nbig = [\n");
    for i in 0..100_000u32 {
        if i % 2 == 0 {
            writeln!(t, "  \"0x{:040x}\",", u128::from(i) * 7919).unwrap();
        } else {
            writeln!(t, "  \"T{:033}\",", i).unwrap();
        }
    }
    t.push_str("]\n");
    for r in 0..50 {
        writeln!(
            t,
            "[[rule]]\nname = \"rule {r}\"\naction = \"approve\"\nchains = [\"1\", \"56\", \"195\"]\nto = [\"@big\"]\nmin_amount = \"0.01\"\nmax_amount = \"{}\"\nwindow = \"24h\"\nmax_total = \"100000\"\nmax_count = 1000\n",
            1000 + r
        )
        .unwrap();
    }
    t.push_str("[guard]\nwindow = \"1h\"\nmax_approvals = 1000\n");
    policy::parse(&t, Path::new("bench.toml"), &|_| unreachable!()).unwrap()
}

/// Usage in which every rule's window holds `count` approvals totalling 5,000.
fn usage_at(p: &policy::Policy, count: u64) -> Usage {
    let mut usage = Usage::default();
    for r in &p.rules {
        usage.rules.insert(
            r.name.clone(),
            WindowUsage {
                total: Decimal::new(5000, 0),
                count,
            },
        );
    }
    usage
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let p = big_policy();
    // A destination in the list, on a chain every rule names, an amount inside every rule's
    // bounds and window total: each rule runs every condition and misses only at the last one,
    // its window count (1,000 of 1,000 used).
    let listed = format!("0x{:040X}", 4u128 * 7919);
    let tx = |id: u64| {
        parse_pending_item(&format!(
            r#"{{"id":{id},"fromAddress":"TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg","toAddress":"{listed}","amount":"12.5","chainId":"56"}}"#
        ))
        .unwrap()
    };
    let (miss, hit) = (tx(1), tx(2));
    let full = usage_at(&p, 1000);
    let room = usage_at(&p, 10);
    let ctx = |usage| Context {
        usage,
        max_sign_len: 245,
        clock: ClockCheck::Ok,
    };
    // What each case measures, checked once before it is timed.
    let missed = p.evaluate(&miss, ctx(&full));
    assert_eq!(
        (missed.action, &*missed.rule),
        (cosigner::domain::Action::Hold, "(default)")
    );
    assert_eq!(missed.trace.len(), 50);
    for t in &missed.trace {
        let why = t.why_not.as_deref().unwrap_or_default();
        assert!(
            why.starts_with("window count would be 1001"),
            "every rule runs every condition and misses at the last: {why}"
        );
    }
    let hit_eval = p.evaluate(&hit, ctx(&room));
    assert_eq!(
        (hit_eval.action, &*hit_eval.rule),
        (cosigner::domain::Action::Approve, "rule 0")
    );
    c.bench_function(
        "evaluate: 50 rules x 100k addresses, no rule matches (every condition runs)",
        |b| b.iter(|| black_box(p.decide(black_box(&miss), ctx(&full)))),
    );
    c.bench_function(
        "evaluate: 50 rules x 100k addresses, first rule matches",
        |b| b.iter(|| black_box(p.decide(black_box(&hit), ctx(&room)))),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);
