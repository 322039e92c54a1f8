//! `cosigner pause`/`resume` against what it talks to: the calls it makes, the control socket
//! (a real Unix socket in a temp dir, answered in HTTP/1.1 as the daemon answers it), the
//! operator API (a real TCP listener), the key file, and which errors are usage errors.

use std::path::Path;

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::*;

/// A request as the daemon saw it: method, path, body, and its `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    body: String,
    authorization: Option<String>,
}

/// A router that answers every request with `status` and `answer`, and tells each request it
/// saw.
fn daemon_answering(
    status: StatusCode,
    answer: String,
) -> (axum::Router, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (tx, answer) = (tx.clone(), answer.clone());
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let authorization = req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap();
            let _ = tx.send(Seen {
                method,
                path,
                body: String::from_utf8(body.to_vec()).unwrap(),
                authorization,
            });
            (status, answer)
        }
    });
    (router, rx)
}

/// A control socket at `dir/control.sock` served by `router`.
fn control_socket(dir: &Path, router: axum::Router) -> PathBuf {
    let path = dir.join("control.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    path
}

/// An operator API on a loopback port served by `router`.
async fn operator_api(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// An operator API that reads one request and writes `head` and the start of a body
/// announced longer; then it closes the connection (`close`), or keeps it open until the
/// caller closes it.
async fn answer_cut_short(head: &'static str, close: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The request head, then its body by its content-length.
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let answer = format!("{head}\r\ncontent-length: 100\r\n\r\nabc");
        stream.write_all(answer.as_bytes()).await.unwrap();
        if !close {
            // Until the caller gives up and closes its end.
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        }
    });
    addr
}

#[test]
fn a_pause_posts_its_mode_to_v1_pause_and_a_resume_posts_nothing_to_v1_resume() {
    assert_eq!(mode_call(Mode::Normal), ("/v1/resume", String::new()));
    for mode in [Mode::Hold, Mode::Reject] {
        let (route, body) = mode_call(mode);
        assert_eq!(route, "/v1/pause");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"mode": mode.as_str()}));
    }
}

#[test]
fn the_operator_api_is_reached_on_loopback_and_never_on_port_0() {
    assert_eq!(
        operator_addr("0.0.0.0:9464".parse().unwrap()).unwrap(),
        "127.0.0.1:9464".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        operator_addr("10.1.2.3:9464".parse().unwrap()).unwrap(),
        "10.1.2.3:9464".parse::<SocketAddr>().unwrap()
    );
    let e = operator_addr("0.0.0.0:0".parse().unwrap()).unwrap_err();
    assert!(
        e.is_usage() && e.to_string().contains("(127.0.0.1:0) has port 0"),
        "{e}"
    );
}

#[test]
fn configuration_and_usage_errors_exit_2_and_failures_while_switching_exit_1() {
    let path = PathBuf::from("/run/cosigner/control.sock");
    let usage = [
        SwitchError::Open(LedgerError::Interrupted("x".into())),
        SwitchError::KeyFile(config::SecretFileError::Empty { path: path.clone() }),
        SwitchError::NoKey,
        SwitchError::NoPort {
            addr: "127.0.0.1:0".parse().unwrap(),
        },
    ];
    for e in &usage {
        assert!(e.is_usage(), "{e}");
    }
    let failures = [
        SwitchError::Record(LedgerError::Interrupted("x".into())),
        SwitchError::Timeout {
            url: "http://127.0.0.1:9464/v1/pause".into(),
            after: DEFAULT_TIMEOUT,
        },
        SwitchError::SocketUnreachable {
            path: path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        },
        SwitchError::SocketFailed {
            path,
            detail: "x".into(),
        },
        SwitchError::NoDaemon {
            url: "http://127.0.0.1:9464/v1/pause".into(),
        },
        SwitchError::Refused {
            status: reqwest::StatusCode::CONFLICT,
            body: "x".into(),
        },
    ];
    for e in &failures {
        assert!(!e.is_usage(), "{e}");
    }
}

#[test]
fn the_api_key_is_read_from_its_file_which_must_be_private_and_named_when_it_cannot_be_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.key");
    std::fs::write(&file, "k3y-from-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        api_key(Some(&file)).unwrap().expose_secret(),
        "k3y-from-file"
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = api_key(Some(&file)).unwrap_err();
    assert!(
        e.is_usage() && e.to_string().contains("api.key has mode 0644"),
        "{e}"
    );

    let missing = dir.path().join("missing.key");
    let e = api_key(Some(&missing)).unwrap_err();
    assert!(
        matches!(e, SwitchError::KeyFile(_)) && e.to_string().contains("missing.key"),
        "{e}"
    );
}

#[test]
fn the_configured_control_socket_is_tried_only_when_its_file_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = dir.path().join("cosigner.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbase_url = \"https://api.1bitpay.io\"\nmerchant_no = \"mer1\"\n\
             api_key = \"key1\"\napi_secret = \"s3cr3t\"\n[key]\npfx_file = \"merchant.pfx\"\n\
             [control]\nsocket = \"{}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let cfg = Config::load_with(&config, &config::Environment::default()).unwrap();
    assert_eq!(default_socket(&cfg), None);
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    assert_eq!(default_socket(&cfg), Some(socket));
}

#[tokio::test]
async fn the_control_socket_is_asked_to_pause_and_to_resume_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (router, mut seen) = daemon_answering(StatusCode::OK, "{}".into());
    let path = control_socket(dir.path(), router);

    let done = call_socket(&path, Mode::Reject, DEFAULT_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(done, Switched::Socket { path: path.clone() });
    let pause = seen.try_recv().expect("the daemon was asked");
    assert_eq!(
        (
            pause.method.as_str(),
            pause.path.as_str(),
            pause.authorization
        ),
        ("POST", "/v1/pause", None)
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&pause.body).unwrap(),
        serde_json::json!({"mode": "reject"})
    );

    call_socket(&path, Mode::Normal, DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let resume = seen.try_recv().expect("the daemon was asked");
    assert_eq!(
        (
            resume.method.as_str(),
            resume.path.as_str(),
            resume.body.as_str()
        ),
        ("POST", "/v1/resume", "")
    );
}

#[tokio::test]
async fn a_refusal_on_the_control_socket_reaches_the_operator_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Longer than a short read would take: the daemon's explanation is kept to 64 KiB.
    let explanation = format!(
        "a pause came in while resuming {}",
        "and stays ".repeat(300)
    );
    let (router, _seen) = daemon_answering(StatusCode::CONFLICT, explanation.clone());
    let path = control_socket(dir.path(), router);
    let e = call_socket(&path, Mode::Normal, DEFAULT_TIMEOUT)
        .await
        .unwrap_err();
    let SwitchError::Refused { status, body } = &e else {
        panic!("not Refused: {e}")
    };
    assert_eq!((*status, body), (StatusCode::CONFLICT, &explanation));
    assert!(!e.is_usage());
}

#[tokio::test]
async fn a_control_socket_nobody_serves_is_unreachable_and_one_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let e = call_socket(&path, Mode::Hold, DEFAULT_TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(e, SwitchError::SocketUnreachable { .. }), "{e}");

    // Bound, so a connection is taken into its queue, but never accepted.
    let _listener = tokio::net::UnixListener::bind(&path).unwrap();
    let e = call_socket(&path, Mode::Hold, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SwitchError::SocketFailed { .. })
            && e.to_string().contains("nothing within 200ms (--timeout)"),
        "{e}"
    );
}

#[tokio::test]
async fn the_operator_api_is_asked_with_the_key_and_its_refusal_is_reported_with_its_body() {
    let key = SecretString::from("k3y".to_owned());
    let (router, mut seen) = daemon_answering(StatusCode::OK, "{}".into());
    let addr = operator_api(router).await;
    call_operator_api(addr, Mode::Hold, &key, DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let call = seen.try_recv().expect("the daemon was asked");
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/v1/pause")
    );
    // HTTP basic authentication with the key as user name and no password.
    assert_eq!(call.authorization.as_deref(), Some("Basic azN5Og=="));

    let (router, _seen) = daemon_answering(StatusCode::FORBIDDEN, "wrong key".into());
    let addr = operator_api(router).await;
    let e = call_operator_api(addr, Mode::Normal, &key, DEFAULT_TIMEOUT)
        .await
        .unwrap_err();
    let SwitchError::Refused { status, body } = &e else {
        panic!("not Refused: {e}")
    };
    assert_eq!(
        (*status, body.as_str()),
        (StatusCode::FORBIDDEN, "wrong key")
    );
}

#[tokio::test]
async fn an_operator_api_answer_whose_body_stalls_times_out_and_one_cut_short_counts_by_its_status()
{
    let key = SecretString::from("k3y".to_owned());
    let addr = answer_cut_short("HTTP/1.1 200 OK", false).await;
    let e = call_operator_api(addr, Mode::Hold, &key, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SwitchError::Timeout { .. }) && e.to_string().contains("within 300ms"),
        "{e}"
    );

    // The daemon said it is done, and the connection broke before the rest of its words.
    let addr = answer_cut_short("HTTP/1.1 200 OK", true).await;
    call_operator_api(addr, Mode::Hold, &key, DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let addr = answer_cut_short("HTTP/1.1 409 Conflict", true).await;
    let e = call_operator_api(addr, Mode::Hold, &key, DEFAULT_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SwitchError::Refused { status, .. } if *status == StatusCode::CONFLICT),
        "{e}"
    );
}
