//! The key shard reproduces the reference's Java output, and request signatures match its example.

use std::process::Stdio;

use cosigner::client::signature::{SignOrder, canonical_string, request_signature};
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
