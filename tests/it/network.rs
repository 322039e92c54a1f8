//! Network faults between the daemon and the server: 5xx on a third of requests, malformed and
//! oversized bodies, timeouts, connections cut mid-request, and the server gone for several
//! cycles.
//! Every transaction is eventually decided, no approval leaves without a ledger record, and
//! staleness shows in /readyz and the metrics. Run on both ledger back ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use cosigner_sandbox::server::{Faults, Scenario};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::support::*;

/// A TCP proxy whose faults the test controls: `down` refuses every connection (the listening
/// socket is closed, open connections cut), `reset_every` closes every Nth connection under the
/// client before forwarding a byte.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    reset_every: Arc<AtomicU32>,
}

fn start_proxy(upstream: SocketAddr, stop: CancellationToken) -> Proxy {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    drop(std_listener);
    let down = Arc::new(AtomicBool::new(false));
    let reset_every = Arc::new(AtomicU32::new(0));
    let (d, r) = (down.clone(), reset_every.clone());
    tokio::spawn(async move {
        let mut n = 0u32;
        loop {
            if stop.is_cancelled() {
                return;
            }
            if d.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let listener = TcpListener::bind(addr).await.unwrap();
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {
                        if d.load(Ordering::SeqCst) {
                            // Gone: close the socket and every connection through it.
                            conns.abort_all();
                            break;
                        }
                    }
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        n += 1;
                        let every = r.load(Ordering::SeqCst);
                        if every > 0 && n.is_multiple_of(every) {
                            // Closed under the client before a byte of the answer.
                            drop(client);
                            continue;
                        }
                        conns.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                }
            }
        }
    });
    Proxy {
        addr,
        down,
        reset_every,
    }
}

crate::store::on_each_back_end!(
    network_suite:
    through_every_network_fault_each_transaction_is_eventually_decided_and_recorded,
    on_postgresql_through_every_network_fault_each_transaction_is_eventually_decided_and_recorded
);

async fn network_suite(store: Store) {
    let total: u64 = 60;
    let sb = start_sandbox(Scenario {
        pending: vec![],
        faults: Faults::default(),
    })
    .await;
    let upstream: SocketAddr = sb.url.trim_start_matches("http://").parse().unwrap();
    let stop_proxy = CancellationToken::new();
    let proxy = start_proxy(upstream, stop_proxy.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &format!("http://{}", proxy.addr));
    std::fs::write(dir.path().join("policy.toml"), format!("default = \"hold\"\n[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n")).unwrap();
    let text = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("timeout = \"5s\"", "timeout = \"400ms\"\nmax_retries = 1");
    std::fs::write(&cfg_path, text).unwrap();
    store.configure(&cfg_path);
    let d = run_daemon(&cfg_path, timings(150, 3_600_000)).await;
    let base = d.base.clone();
    let feed = |from: u64, to: u64| {
        sb.sandbox
            .add_pending((from..=to).map(|i| item(TxId::new(i), HOT, TREASURY, "1", "195")))
    };
    let decided = || sb.sandbox.decisions().len() as u64;
    let metric = |name: &'static str| {
        let base = base.clone();
        async move {
            let m = reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            m.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };

    // 5xx on a third of the requests, and some truncated bodies.
    sb.sandbox.set_faults(Faults {
        error_rate: 0.33,
        malformed_rate: 0.05,
        seed: 3,
        ..Faults::default()
    });
    feed(1, 15);
    wait_until(
        "15 decided through 5xx",
        Duration::from_secs(30),
        || async { decided() >= 15 },
    )
    .await;

    // Slow answers: every request times out for a while, then answers come back.
    sb.sandbox.set_faults(Faults {
        latency: Duration::from_millis(600),
        ..Faults::default()
    });
    feed(16, 25);
    wait_until("timeouts counted", Duration::from_secs(15), || async {
        metric("cosigner_poll_runs_total{outcome=\"error\"}").await >= 3.0
    })
    .await;
    sb.sandbox.set_faults(Faults::default());
    wait_until(
        "25 decided after the timeouts",
        Duration::from_secs(30),
        || async { decided() >= 25 },
    )
    .await;

    // Oversized bodies: refused, then normal again.
    sb.sandbox.set_faults(Faults {
        pad_bytes: 2 << 20,
        ..Faults::default()
    });
    feed(26, 35);
    let errors = metric("cosigner_poll_runs_total{outcome=\"error\"}").await;
    wait_until(
        "oversized pages refused",
        Duration::from_secs(15),
        || async { metric("cosigner_poll_runs_total{outcome=\"error\"}").await >= errors + 2.0 },
    )
    .await;
    assert!(
        decided() < 35 || decided() == 25,
        "nothing decided from an oversized page"
    );
    sb.sandbox.set_faults(Faults::default());
    wait_until("35 decided", Duration::from_secs(30), || async {
        decided() >= 35
    })
    .await;

    // Connection resets on every third connection.
    proxy.reset_every.store(3, Ordering::SeqCst);
    feed(36, 45);
    wait_until(
        "45 decided through resets",
        Duration::from_secs(30),
        || async { decided() >= 45 },
    )
    .await;
    proxy.reset_every.store(0, Ordering::SeqCst);

    // The server gone for several cycles: unready, then ready again and caught up.
    wait_until("ready", Duration::from_secs(10), || async {
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    proxy.down.store(true, Ordering::SeqCst);
    feed(46, total);
    wait_until(
        "unready while the server is gone",
        Duration::from_secs(15),
        || async {
            reqwest::get(format!("{base}/readyz"))
                .await
                .unwrap()
                .status()
                == 503
        },
    )
    .await;
    let stale_for = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - metric("cosigner_last_successful_poll_timestamp_seconds").await;
    assert!(
        stale_for >= 0.3,
        "staleness shows in the metrics: {stale_for}"
    );
    proxy.down.store(false, Ordering::SeqCst);
    wait_until(
        "every transaction decided",
        Duration::from_secs(30),
        || async { decided() == total },
    )
    .await;
    wait_until("ready again", Duration::from_secs(10), || async {
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;

    d.shutdown().await;
    stop_proxy.cancel();
    assert_eq!(sb.sandbox.stats().conflicts, 0);
    let ledger = store.reader(dir.path()).await;
    for d in sb.sandbox.decisions() {
        assert!(
            ledger
                .history(d.id)
                .await
                .unwrap()
                .iter()
                .any(|r| r.data.as_deref() == Some(d.data.as_str())),
            "{} sent without a record",
            d.id
        );
    }
    assert!(ledger.verify().await.unwrap().problems.is_empty());
}
