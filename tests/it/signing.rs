//! The key shard reproduces the reference's Java output, and request signatures match its example
//! and vectors with body fields made by a second implementation written from the reference.

use std::process::Stdio;

use cosigner::client::ApproveRequest;
use cosigner::client::signature::{SignOrder, body_params, canonical_string, request_signature};
use cosigner::signer::{KeySource, Signer, SignerError, recover_text};
use secrecy::SecretString;

use crate::support::*;

/// The flag that lets `cosigner sign` sign an approve/reject text (the vectors are some).
const BYPASS: &str = "--i-know-this-bypasses-the-policy";

fn vectors() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("vectors.json")).unwrap()).unwrap()
}

#[test]
fn sign_command_prints_the_reference_data_for_every_vector_and_both_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let v = vectors();
    let cases = v["signing"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for file in ["keytool-aes.pfx", "openssl-legacy.pfx"] {
        let pfx = key_copy(dir.path(), file);
        for case in cases {
            let out = bin()
                .arg("sign")
                .arg("--pfx")
                .arg(&pfx)
                .args(["--merchant-no", MERCHANT])
                .arg(BYPASS)
                .arg(case["message"].as_str().unwrap())
                .output()
                .unwrap();
            assert!(out.status.success(), "{file}: {}", all_output(&out));
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                format!("{}\n", case["data"].as_str().unwrap()),
                "{file}: {}",
                case["message"]
            );
        }
    }
}

#[test]
fn sign_command_reads_the_text_from_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let pfx = key_copy(dir.path(), "openssl-legacy.pfx");
    let v = vectors();
    let case = &v["signing"][2];
    let mut child = bin()
        .arg("sign")
        .arg("--pfx")
        .arg(&pfx)
        .args(["--merchant-no", MERCHANT])
        .arg(BYPASS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(
        child.stdin.take().unwrap(),
        "{}",
        case["message"].as_str().unwrap()
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        case["data"].as_str().unwrap()
    );
}

#[test]
fn the_request_sign_vector_of_the_reference_is_reproduced() {
    let v = vectors();
    let case = &v["request_sign"][0];
    let params: Vec<(String, String)> = case["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    let canonical = canonical_string(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignOrder::CaseInsensitive,
    );
    assert_eq!(canonical, case["canonical"].as_str().unwrap());
    assert_eq!(
        request_signature(&canonical, case["apiSecret"].as_str().unwrap()),
        case["sign"].as_str().unwrap()
    );
}

/// `tests/fixtures/request-sign-vectors.json`: made by `tests/fixtures/request_sign_vectors.py`,
/// a second implementation of the request signature written from the API reference alone.
fn request_sign_vectors() -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("request-sign-vectors.json")).unwrap())
            .unwrap();
    v["vectors"].as_array().unwrap().clone()
}

/// The headers of a vector as `(name, value)`.
fn vector_headers(v: &serde_json::Value) -> Vec<(String, String)> {
    v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// The request signature as the API reference describes it (merge the headers and the body's
/// top-level fields, drop `Sign` and empty values, order the names ignoring case, join, append
/// the secret, MD5), written again here without the library's `client::signature`, for the
/// bodies this client sends (numbers in them are whole).
fn reference_sign(headers: &[(String, String)], body: &str, secret: &str) -> String {
    let mut params: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("sign"))
        .cloned()
        .collect();
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(body).unwrap();
    for (k, v) in fields {
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => params.push((k, s)),
            other => params.push((k, other.to_string())),
        }
    }
    params.retain(|(_, v)| !v.is_empty());
    params.sort_by(|a, b| (a.0.to_ascii_lowercase(), &a.0).cmp(&(b.0.to_ascii_lowercase(), &b.0)));
    let joined = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let digest = openssl::hash::hash(
        openssl::hash::MessageDigest::md5(),
        format!("{joined}{secret}").as_bytes(),
    )
    .unwrap();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn request_sign_vectors_with_body_fields_from_a_second_implementation_are_reproduced() {
    let vectors = request_sign_vectors();
    assert!(vectors.len() >= 6, "{}", vectors.len());
    for v in &vectors {
        let body = v["body"].as_str().unwrap();
        let secret = v["apiSecret"].as_str().unwrap();
        let headers = vector_headers(v);
        let fields = body_params(body).unwrap();
        for (order, name) in [
            (SignOrder::CaseInsensitive, "case-insensitive"),
            (SignOrder::Ascii, "ascii"),
        ] {
            let canonical = canonical_string(
                headers
                    .iter()
                    .chain(&fields)
                    .map(|(k, v)| (k.as_str(), v.as_str())),
                order,
            );
            assert_eq!(
                canonical,
                v[name]["canonical"].as_str().unwrap(),
                "{name}: {body}"
            );
            assert_eq!(
                request_signature(&canonical, secret),
                v[name]["sign"].as_str().unwrap(),
                "{name}: {body}"
            );
        }
        assert_eq!(
            reference_sign(&headers, body, secret),
            v["case-insensitive"]["sign"].as_str().unwrap(),
            "this file's own reading of the reference agrees with the vector: {body}"
        );
        // An approve body is exactly the text this client writes for the request.
        if v["endpoint"] == "/api/transaction/approve" {
            let req: ApproveRequest = serde_json::from_str(body).unwrap();
            assert_eq!(serde_json::to_string(&req).unwrap(), body);
        }
    }
    let approve = &vectors[1];
    assert!(
        approve["case-insensitive"]["canonical"]
            .as_str()
            .unwrap()
            .contains("&id=1&Lang=en&")
            && approve["case-insensitive"]["canonical"]
                .as_str()
                .unwrap()
                .contains("&status=1&TimeStamp="),
        "the number tokens id and status are signed as their text"
    );
}

/// Accepts one HTTP request on `listener`, answers it with a 1BitPay success envelope, and
/// returns its headers and body.
async fn capture_one(listener: tokio::net::TcpListener) -> (Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = Vec::new();
    let (head, body) = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "the request ended early: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break (head, text[end + 4..end + 4 + length].to_string());
            }
        }
    };
    let reply = r#"{"code":200,"message":"Success"}"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        reply.len()
    );
    s.write_all(answer.as_bytes()).await.unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (headers, body)
}

#[tokio::test]
async fn the_client_signs_the_approve_body_it_sends_with_every_public_header_as_the_reference_says()
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(capture_one(listener));
    let client = cosigner::client::Client::new(client_config(&url)).unwrap();
    let req: ApproveRequest =
        serde_json::from_str(request_sign_vectors()[1]["body"].as_str().unwrap()).unwrap();
    client.approve(&req).await.unwrap();
    let (headers, body) = server.await.unwrap();
    assert_eq!(body, serde_json::to_string(&req).unwrap());
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
    };
    let public: Vec<(String, String)> = [
        "Nonce",
        "TimeStamp",
        "MerchantNo",
        "SignType",
        "Lang",
        "ApiKey",
    ]
    .iter()
    .map(|name| (name.to_string(), header(name)))
    .collect();
    assert_eq!(header("MerchantNo"), MERCHANT);
    assert_eq!(header("ApiKey"), API_KEY);
    assert_eq!(header("SignType"), "1");
    assert_eq!(
        header("Sign"),
        reference_sign(&public, &body, API_SECRET),
        "headers {headers:?}"
    );
}

#[test]
fn a_text_longer_than_the_key_allows_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let pfx = key_copy(dir.path(), "keytool-aes.pfx");
    let signer = Signer::load(&KeySource {
        pfx_file: pfx.clone(),
        password: SecretString::from(PFX_PASSWORD),
        allow_insecure_permissions: false,
    })
    .unwrap();
    assert_eq!(signer.max_text_len(), 245);
    assert!(signer.sign(&"x".repeat(245)).is_ok());
    match signer.sign(&"x".repeat(246)) {
        Err(SignerError::TextTooLong {
            len: 246,
            max: 245,
            bits: 2048,
        }) => {}
        other => panic!("expected TextTooLong, got {other:?}"),
    }
    let out = bin()
        .arg("sign")
        .arg("--pfx")
        .arg(&pfx)
        .args(["--merchant-no", MERCHANT])
        .arg(format!("{{\"memo\":\"{}\"}}", "y".repeat(300)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        all_output(&out).contains("at most 245 bytes"),
        "{}",
        all_output(&out)
    );
}

#[test]
fn data_made_by_the_signer_is_recovered_with_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::load(&KeySource {
        pfx_file: key_copy(dir.path(), "openssl-legacy.pfx"),
        password: SecretString::from(PFX_PASSWORD),
        allow_insecure_permissions: false,
    })
    .unwrap();
    let data = signer.sign("{\"isMain\":0}").unwrap();
    assert_eq!(recover_text(&cert(), &data).unwrap(), "{\"isMain\":0}");
    let debug = format!("{signer:?}");
    assert!(
        debug.contains("2048") && !debug.contains(PFX_PASSWORD),
        "{debug}"
    );
}

#[test]
fn sign_command_takes_the_key_from_a_configuration_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http://127.0.0.1:9");
    let v = vectors();
    let case = &v["signing"][3];
    let out = bin()
        .args(["sign", "--config"])
        .arg(&cfg)
        .arg(case["message"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        case["data"].as_str().unwrap()
    );
    let out = bin()
        .args(["sign", "--config"])
        .arg(&cfg)
        .args(["--pfx", "x.pfx", "t"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--config and --pfx together are bad usage"
    );
}

#[test]
fn sign_command_refuses_decision_shaped_texts_without_the_explicit_flag() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let pfx = key_copy(dir.path(), "keytool-aes.pfx");
    let approve = vectors()["signing"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let sign = |text: &str, extra: &[&str]| {
        let mut child = bin()
            .args(["sign", "--pfx"])
            .arg(&pfx)
            .args(["--merchant-no", MERCHANT])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    for text in [
        approve.as_str(),
        r#"{"id":7,"to":"T","value":"1","STATUS":2}"#,
        r#"{"id":7,"st\u0061tus":1}"#,
        "{id:7,status:1}",
        // Issue 19, repro 9: fastjson decodes `\x74` (not JSON) to `t`; Java folds `ſ` to `s`.
        r#"{"id":7,"s\x74atus":1}"#,
        "{\"id\":7,\"\u{17f}tatus\":1}",
        // Whatever is not strict JSON: a lenient parser reads more into it than we can check.
        "hello",
    ] {
        let out = sign(text, &[]);
        let all = all_output(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {all}");
        assert!(out.stdout.is_empty(), "no signature printed for {text}");
        assert!(all.contains(BYPASS), "the error names the flag: {all}");
    }
    let out = sign(&approve, &[BYPASS]);
    assert!(out.status.success(), "{}", all_output(&out));
    let out = sign(r#"{"isMain":1}"#, &[]);
    assert!(
        out.status.success(),
        "a collect text needs no flag: {}",
        all_output(&out)
    );
}
