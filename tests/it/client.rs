//! The API client against the sandbox: every endpoint, signed and verified end to end, plus the
//! sandbox's refusals and the client's retries and limits.

use std::time::Duration;

use cosigner::client::{
    ApproveRequest, Client, ClientError, CreateOrder, Gate, SellOrder, SignOrder,
};
use cosigner::domain::{Decision, Verdict, Withdrawal, collect_text, decision_text};
use cosigner::signer::{KeySource, Signer};
use cosigner_sandbox::server::{Faults, Scenario};
use rust_decimal::Decimal;
use secrecy::SecretString;

use crate::support::*;

const FROM: &str = "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg";
const TO: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";

fn signer(dir: &std::path::Path) -> Signer {
    Signer::load(&KeySource {
        pfx_file: key_copy(dir, "keytool-aes.pfx"),
        password: SecretString::from(PFX_PASSWORD),
        allow_insecure_permissions: false,
    })
    .unwrap()
}

fn scenario(n: u64) -> Scenario {
    Scenario {
        pending: (1..=n)
            .map(|i| item(TxId::new(i), FROM, TO, &format!("{i}.5"), "195"))
            .collect(),
        faults: Faults::default(),
    }
}

fn approve_request(signer: &Signer, tx: &Withdrawal, verdict: Verdict) -> ApproveRequest {
    let d = Decision {
        id: tx.id,
        from: tx.from.as_deref().unwrap(),
        to: tx.to.as_deref().unwrap(),
        value: tx.amount.as_deref().unwrap(),
        chain_id: tx.chain_id.as_deref().unwrap(),
        verdict,
    };
    ApproveRequest {
        id: d.id,
        from: d.from.into(),
        to: d.to.into(),
        value: d.value.into(),
        chain_id: d.chain_id.into(),
        status: verdict,
        data: signer.sign(&decision_text(&d)).unwrap(),
    }
}

#[tokio::test]
async fn pending_is_read_over_several_pages_and_approve_and_reject_are_verified_by_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(7)).await;
    let client = Client::new(client_config(&sb.url)).unwrap();

    let mut seen = Vec::new();
    for page in 1..=3 {
        let p = client.pending(page, 3).await.unwrap();
        assert_eq!(p.total, 7);
        seen.extend(p.items.into_iter().map(|i| i.unwrap()));
    }
    assert_eq!(seen.iter().map(|t| t.id).collect::<Vec<_>>(), ids(1..=7));
    assert_eq!(seen[0].amount.as_deref(), Some("1.5"));

    client
        .approve(&approve_request(&signer, &seen[0], Verdict::Approve))
        .await
        .unwrap();
    client
        .approve(&approve_request(&signer, &seen[1], Verdict::Reject))
        .await
        .unwrap();

    let decisions = sb.sandbox.decisions();
    assert_eq!(decisions.len(), 2);
    assert_eq!((decisions[0].id, decisions[0].status), (TxId::new(1), 1));
    assert_eq!((decisions[1].id, decisions[1].status), (TxId::new(2), 2));
    assert!(decisions[0].text.contains("\"value\":\"1.5\""));
    assert_eq!(
        client.pending(1, 20).await.unwrap().total,
        5,
        "decided transactions leave the list"
    );
    assert!(
        sb.sandbox.rejections().is_empty(),
        "{:?}",
        sb.sandbox.rejections()
    );
}

#[tokio::test]
async fn an_identical_resend_is_accepted_and_a_different_second_decision_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(1)).await;
    let client = Client::new(client_config(&sb.url)).unwrap();
    let tx = client.pending(1, 5).await.unwrap().items.remove(0).unwrap();
    let approve = approve_request(&signer, &tx, Verdict::Approve);
    client.approve(&approve).await.unwrap();
    client.approve(&approve).await.unwrap();
    assert_eq!(sb.sandbox.decisions()[0].replays, 1);
    let err = client
        .approve(&approve_request(&signer, &tx, Verdict::Reject))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { code: 409, .. }), "{err}");
    assert_eq!(sb.sandbox.stats().conflicts, 1);
}

#[tokio::test]
async fn a_pause_that_comes_while_the_attempt_is_being_written_down_stops_it_before_it_leaves() {
    // The write before an attempt takes time (an fsync on the blocking pool): the gate is asked
    // again after it, so what is in force when the request would leave decides.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(1)).await;
    let client = Client::new(client_config(&sb.url)).unwrap();
    let tx = client.pending(1, 5).await.unwrap().items.remove(0).unwrap();
    let paused = Arc::new(AtomicBool::new(false));
    let (_changes, rx) = tokio::sync::watch::channel(0u64);
    let mut gate = Gate::new(
        {
            let paused = paused.clone();
            move || {
                if paused.load(Ordering::SeqCst) {
                    Err("paused".into())
                } else {
                    Ok(())
                }
            }
        },
        rx,
    )
    .with_before_attempt({
        let paused = paused.clone();
        move |_| {
            let paused = paused.clone();
            async move {
                tokio::task::yield_now().await;
                paused.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
    });
    let err = client
        .approve_gated(
            &approve_request(&signer, &tx, Verdict::Approve),
            Some(&mut gate),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Stopped { attempts: 0, .. }),
        "{err}"
    );
    assert!(
        sb.sandbox.decisions().is_empty(),
        "nothing reached the server"
    );
}

/// A TCP proxy to `upstream` (host:port) that counts the connections made through it.
async fn connection_counter(
    upstream: String,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio_util::task::AbortOnDropHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (url, count, tokio_util::task::AbortOnDropHandle::new(task))
}

#[tokio::test]
async fn a_gate_that_says_no_before_the_first_attempt_stops_the_request_before_anything_is_written_down()
 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(1)).await;
    let client = Client::new(client_config(&sb.url)).unwrap();
    let tx = client.pending(1, 5).await.unwrap().items.remove(0).unwrap();
    let written = Arc::new(AtomicU32::new(0));
    let (_changes, rx) = tokio::sync::watch::channel(0u64);
    let mut gate = Gate::new(|| Err("paused".into()), rx).with_before_attempt({
        let written = written.clone();
        move |_| {
            written.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }
    });
    let err = client
        .approve_gated(
            &approve_request(&signer, &tx, Verdict::Approve),
            Some(&mut gate),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Stopped { attempts: 0, .. }),
        "{err}"
    );
    assert_eq!(
        written.load(Ordering::SeqCst),
        0,
        "what goes before an attempt was written down for a request the gate had stopped"
    );
    assert!(sb.sandbox.decisions().is_empty());
}

#[tokio::test]
async fn a_request_the_gate_stops_as_it_leaves_opens_no_connection_to_the_server() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(1)).await;
    let tx = Client::new(client_config(&sb.url))
        .unwrap()
        .pending(1, 5)
        .await
        .unwrap()
        .items
        .remove(0)
        .unwrap();
    let (url, connections, _proxy) =
        connection_counter(sb.url.trim_start_matches("http://").to_string()).await;
    let client = Client::new(client_config(&url)).unwrap();
    let paused = Arc::new(AtomicBool::new(false));
    let (_changes, rx) = tokio::sync::watch::channel(0u64);
    let mut gate = Gate::new(
        {
            let paused = paused.clone();
            move || {
                if paused.load(Ordering::SeqCst) {
                    Err("paused".into())
                } else {
                    Ok(())
                }
            }
        },
        rx,
    )
    // The pause comes while the attempt is being written down.
    .with_before_attempt({
        let paused = paused.clone();
        move |_| {
            paused.store(true, Ordering::SeqCst);
            async { Ok(()) }
        }
    });
    let err = client
        .approve_gated(
            &approve_request(&signer, &tx, Verdict::Approve),
            Some(&mut gate),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Stopped { attempts: 0, .. }),
        "{err}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    assert!(sb.sandbox.decisions().is_empty());
}

#[tokio::test]
async fn a_gated_retry_waits_out_the_servers_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(1)).await;
    let tx = Client::new(client_config(&sb.url))
        .unwrap()
        .pending(1, 5)
        .await
        .unwrap()
        .items
        .remove(0)
        .unwrap();
    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        retry_after: Some(1),
        ..Faults::default()
    });
    let mut cfg = client_config(&sb.url);
    cfg.max_retries = 1;
    cfg.max_backoff = Duration::from_secs(2);
    let client = Client::new(cfg).unwrap();
    let (_changes, rx) = tokio::sync::watch::channel(0u64);
    let mut gate = Gate::new(|| Ok(()), rx);
    let started = std::time::Instant::now();
    let err = client
        .approve_gated(
            &approve_request(&signer, &tx, Verdict::Approve),
            Some(&mut gate),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Http {
                status: 503,
                attempts: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_says_no_while_the_attempt_is_still_in_its_tls_handshake_stops_it_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(1)).await;
    let tx = Client::new(client_config(&sb.url))
        .unwrap()
        .pending(1, 5)
        .await
        .unwrap()
        .items
        .remove(0)
        .unwrap();
    let door = crate::door::Door::open(&sb.url, true).await;
    door.hold_handshakes_after(0);
    // Its handshake may take up to 10 s.
    let mut cfg = client_config(&door.url);
    cfg.timeout = Duration::from_secs(10);
    cfg.max_retries = 1;
    cfg.ca_file = door.ca_file.clone();
    let client = Client::new(cfg).unwrap();
    let request = approve_request(&signer, &tx, Verdict::Approve);
    let paused = Arc::new(AtomicBool::new(false));
    let (changes, rx) = tokio::sync::watch::channel(0u64);
    let mut gate = Gate::new(
        {
            let paused = paused.clone();
            move || {
                if paused.load(Ordering::SeqCst) {
                    Err("paused".into())
                } else {
                    Ok(())
                }
            }
        },
        rx,
    );
    let call = tokio::spawn(async move { client.approve_gated(&request, Some(&mut gate)).await });
    wait_until(
        "the approval's handshake to be held",
        Duration::from_secs(30),
        || async { door.a_handshake_is_held() },
    )
    .await;
    paused.store(true, Ordering::SeqCst);
    changes.send_modify(|n| *n += 1);
    let err = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .unwrap_or_else(|_| panic!("the stopped approval still waits; {}", door.describe()))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Stopped { attempts: 0, .. }),
        "{err}"
    );
    door.open_handshakes();
    assert!(sb.sandbox.decisions().is_empty());
}

#[tokio::test]
async fn the_sandbox_refuses_data_that_does_not_match_the_body_or_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(scenario(2)).await;
    let client = Client::new(client_config(&sb.url)).unwrap();
    let tx = client.pending(1, 5).await.unwrap().items.remove(0).unwrap();

    // Body says 1000, data says 1.5: the signed text does not match the body.
    let mut forged = approve_request(&signer, &tx, Verdict::Approve);
    forged.value = "1000".into();
    let err = client.approve(&forged).await.unwrap_err();
    assert!(err.to_string().contains("value"), "{err}");

    // Body and data agree on 1000 but the pending transaction says 1.5.
    let mut other = tx.clone();
    other.amount = Some("1000".into());
    let err = client
        .approve(&approve_request(&signer, &other, Verdict::Approve))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("differs from the pending transaction"),
        "{err}"
    );
    assert!(sb.sandbox.decisions().is_empty());
}

#[tokio::test]
async fn collect_with_is_main_1_and_0_is_verified_by_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer(dir.path());
    let sb = start_sandbox(Scenario::default()).await;
    let client = Client::new(client_config(&sb.url)).unwrap();
    client
        .collect(true, &signer.sign(&collect_text(true)).unwrap())
        .await
        .unwrap();
    client
        .collect(false, &signer.sign(&collect_text(false)).unwrap())
        .await
        .unwrap();
    let err = client
        .collect(true, &signer.sign(&collect_text(false)).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { code: 401, .. }), "{err}");
    let c = sb.sandbox.collects();
    assert_eq!(c.iter().map(|c| c.is_main).collect::<Vec<_>>(), vec![1, 0]);
}

#[tokio::test]
async fn c2c_rate_order_and_batch_sell_round_trip() {
    let sb = start_sandbox(Scenario::default()).await;
    let client = Client::new(client_config(&sb.url)).unwrap();
    let rate = client.rate("USDT", "CNY").await.unwrap();
    assert_eq!(rate.buy_rate, Decimal::new(647, 2));
    assert_eq!(rate.sell_rate, Decimal::new(69, 1));

    let order: CreateOrder = serde_json::from_str(
        r#"{"userName":"Chen","areaCode":"+86","phone":"18848820305","cryptoAmount":"10.25",
            "cryptoCurrency":"USDT","legalCurrency":"CNY","idCardType":1,"idCard":"412627288918989891",
            "kyc":2,"merchantOrderNo":"m-1","orderType":1,"payWay":1,"h5":false}"#,
    )
    .unwrap();
    let created = client.create_order(&order).await.unwrap();
    assert!(created.is_new);
    let again = client.create_order(&order).await.unwrap();
    assert!(!again.is_new);
    assert_eq!(again.order_no, created.order_no);
    assert_eq!(sb.sandbox.orders()[0]["cryptoAmount"], "10.25");

    let sell: SellOrder = serde_json::from_str(
        r#"{"userName":"Chen","areaCode":"+86","phone":"1","cryptoAmount":"3","cryptoCurrency":"USDT",
            "legalCurrency":"CNY","idCardType":1,"idCard":"4","merchantOrderNo":"s-1","bank":"B",
            "bankAccount":"6217","bankBranch":"X"}"#,
    )
    .unwrap();
    let sold = client
        .batch_sell(&[
            sell.clone(),
            SellOrder {
                merchant_order_no: "s-2".into(),
                ..sell
            },
        ])
        .await
        .unwrap();
    assert_eq!(sold.merchant_order_nos, vec!["s-1", "s-2"]);
}

#[tokio::test]
async fn a_wrong_secret_or_other_sign_order_is_refused_as_unauthorized() {
    let sb = start_sandbox(Scenario::default()).await;
    let mut cfg = client_config(&sb.url);
    cfg.api_secret = SecretString::from("not-the-secret");
    let err = Client::new(cfg)
        .unwrap()
        .rate("USDT", "CNY")
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert!(
        matches!(
            err,
            ClientError::Http {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "401 is not retried: {err}"
    );

    let mut cfg = client_config(&sb.url);
    cfg.sign_order = SignOrder::Ascii;
    let err = Client::new(cfg)
        .unwrap()
        .rate("USDT", "CNY")
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err}");
}

#[tokio::test]
async fn the_sandbox_refuses_a_reused_nonce_and_a_stale_timestamp() {
    use cosigner::client::signature;
    let sb = start_sandbox(Scenario::default()).await;
    let http = reqwest::Client::new();
    let body = r#"{"cryptoCurrency":"USDT","legalCurrency":"CNY"}"#;
    let send = |nonce: &'static str, ts: String| {
        let canonical = signature::canonical_string(
            [
                ("Nonce", nonce),
                ("TimeStamp", ts.as_str()),
                ("MerchantNo", MERCHANT),
                ("SignType", "1"),
                ("Lang", "en"),
                ("ApiKey", API_KEY),
                ("cryptoCurrency", "USDT"),
                ("legalCurrency", "CNY"),
            ],
            SignOrder::CaseInsensitive,
        );
        http.post(format!("{}/api/otc/rate", sb.url))
            .header("Content-Type", "application/json")
            .header("Nonce", nonce)
            .header("TimeStamp", ts.clone())
            .header("MerchantNo", MERCHANT)
            .header("SignType", "1")
            .header("Lang", "en")
            .header("ApiKey", API_KEY)
            .header("Sign", signature::request_signature(&canonical, API_SECRET))
            .body(body)
            .send()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string()
    };
    assert_eq!(send("abc123xyz", now()).await.unwrap().status(), 200);
    let r = send("abc123xyz", now()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Nonce already used"));
    let stale = (now().parse::<u64>().unwrap() - 600_000).to_string();
    let r = send("fresh0nonce", stale).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("stale TimeStamp"));
}

#[tokio::test]
async fn server_errors_are_retried_until_an_answer_comes_and_then_reported() {
    let sb = start_sandbox(Scenario::default()).await;
    sb.sandbox.set_faults(Faults {
        error_rate: 0.5,
        seed: 7,
        ..Faults::default()
    });
    let client = Client::new(client_config(&sb.url)).unwrap();
    for _ in 0..10 {
        client.rate("USDT", "CNY").await.unwrap();
    }
    let requests = sb.sandbox.stats().requests["/api/otc/rate"];
    assert!(requests > 10, "some requests were retried: {requests}");

    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let err = client.rate("USDT", "CNY").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Http {
                status: 503,
                attempts: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_malformed_body_is_a_decode_error_and_an_oversized_body_is_refused() {
    let sb = start_sandbox(Scenario::default()).await;
    sb.sandbox.set_faults(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    });
    let client = Client::new(client_config(&sb.url)).unwrap();
    let err = client.rate("USDT", "CNY").await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err}");

    sb.sandbox.set_faults(Faults::default());
    let big = "x".repeat(4096);
    sb.sandbox
        .add_pending((1..=400).map(|i| item(TxId::new(i), &big, TO, "1", "1")));
    let mut cfg = client_config(&sb.url);
    cfg.max_response_bytes = 64 * 1024;
    let err = Client::new(cfg).unwrap().pending(1, 400).await.unwrap_err();
    assert!(
        matches!(err, ClientError::BodyTooLarge { limit: 65536, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_network_error() {
    let sb = start_sandbox(Scenario::default()).await;
    sb.sandbox.set_faults(Faults {
        latency: Duration::from_millis(800),
        ..Faults::default()
    });
    let mut cfg = client_config(&sb.url);
    cfg.timeout = Duration::from_millis(200);
    cfg.max_retries = 1;
    let err = Client::new(cfg)
        .unwrap()
        .rate("USDT", "CNY")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Network { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn the_rate_limit_spaces_requests_out() {
    let sb = start_sandbox(Scenario::default()).await;
    let mut cfg = client_config(&sb.url);
    cfg.max_requests_per_second = std::num::NonZeroU32::new(20).unwrap();
    let client = Client::new(cfg).unwrap();
    let start = tokio::time::Instant::now();
    for _ in 0..30 {
        client.rate("USDT", "CNY").await.unwrap();
    }
    // Governor allows a burst of 20, then one every 50 ms: 10 more take at least 450 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_check_command_authenticates_online_against_the_sandbox_binary() {
    let sandbox = spawn_sandbox(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.url);
    let cfg_s = cfg.to_str().unwrap();
    let out = run_bin(&["check", "--config", cfg_s, "--online"]).await;
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok    online: authenticated") && text.contains("ok    clock"),
        "{text}"
    );

    let out = run_bin(&[
        "rate", "--config", cfg_s, "--crypto", "USDT", "--legal", "CNY",
    ])
    .await;
    assert!(out.status.success(), "{}", all_output(&out));
    let rate: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rate["buyRate"], "6.47");

    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(API_SECRET, "wrong-secret");
    std::fs::write(&cfg, text).unwrap();
    let out = run_bin(&["check", "--config", cfg_s, "--online"]).await;
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("credentials refused"), "{text}");
}
