//! The operator's first hour (issue 12): every friction a new operator met, each asserted as the
//! text the operator sees from the real binary.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = bin().args(args).output().unwrap();
    (out.status.code(), all_output(&out))
}

#[test]
fn a_policy_type_error_names_file_rule_and_key_in_plain_words() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy.toml");
    std::fs::write(
        &p,
        "[[rule]]\nname = \"payouts\"\naction = \"approve\"\nwindow = \"24h\"\nmax_count = \"50\"\n",
    )
    .unwrap();
    let (code, text) = run(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "policy file {}: rule \"payouts\": key `max_count`: must be a whole number without \
             quotes, such as max_count = 50, not the text \"50\"",
            p.display()
        )),
        "{text}"
    );
    assert!(!text.contains("expected i64"), "{text}");
    for (body, want) in [
        (
            "[[rule]]\nname = \"x\"\naction = \"approve\"\nchains = [56]\n",
            "rule \"x\": key `chains`: entry 1 must be text in quotes, such as \"195\", not the number 56",
        ),
        (
            "[guard]\nwindow = 3600\nmax_approvals = 1\n",
            "[guard]: key `window`: must be text in quotes, such as window = \"24h\", not the number 3600",
        ),
        (
            "default = true\n",
            "key `default`: must be text in quotes, such as default = \"hold\", not true",
        ),
    ] {
        std::fs::write(&p, body).unwrap();
        let (code, text) = run(&["policy", "check", p.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(want), "{body}\n{text}");
    }
}

#[test]
fn the_policy_chains_table_extends_the_built_in_chain_names() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy.toml");
    std::fs::write(
        &p,
        "[chains]\n728126428 = \"TRON (new id)\"\n56 = \"BNB Smart Chain\"\n",
    )
    .unwrap();
    let policy = cosigner::policy::load(&p).unwrap();
    assert_eq!(policy.chains.label("195"), "195 (TRON)");
    assert_eq!(policy.chains.label("1"), "1 (Ethereum)");
    assert_eq!(policy.chains.label("56"), "56 (BNB Smart Chain)");
    assert_eq!(
        policy.chains.label("728126428"),
        "728126428 (TRON (new id))"
    );
    std::fs::write(&p, "[chains]\n195 = 195\n").unwrap();
    let (code, text) = run(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("[chains]: key `195`: must be the chain's name in quotes"),
        "{text}"
    );
}

#[test]
fn a_cosigner_variable_that_maps_to_no_key_is_an_error_naming_the_nearest_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    let out = bin()
        .env("COSIGNER_POLL_INTERVAL", "5s")
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "environment variable COSIGNER_POLL_INTERVAL maps to no key: overrides are \
             COSIGNER_<SECTION>__<KEY>, with two underscores between section and key; the nearest \
             key is `poll.interval` (COSIGNER_POLL__INTERVAL)"
        ),
        "{text}"
    );
    // A mistyped section is named with its variable, not as a key of the file.
    let out = bin()
        .env("COSIGNER_POL__INTERVAL", "5s")
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("environment variable COSIGNER_POL__INTERVAL: key `pol`: unknown field"),
        "{text}"
    );
    // The variables that are not key overrides stay allowed.
    let out = bin()
        .env("COSIGNER_API_KEY", "cos_x")
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        !all_output(&out).contains("maps to no key"),
        "{}",
        all_output(&out)
    );
}

#[test]
fn ledger_list_before_the_first_run_says_the_daemon_creates_the_ledger() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    let out = bin()
        .args(["ledger", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no ledger yet at {}: the daemon creates it when it first starts (`cosigner run`, or \
             `systemctl start cosigner`) and records decisions from its first cycle",
            d.path().join("ledger.db").display()
        )),
        "{stderr}"
    );
    assert!(
        !d.path().join("ledger.db").exists(),
        "list must create nothing"
    );
    let out = bin()
        .args(["ledger", "list", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// A `cosigner run` process whose stderr is collected line by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn start(cfg: &Path) -> Self {
        let mut child = bin()
            .args(["run", "--config"])
            .arg(cfg)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stderr).lines() {
                let Ok(l) = l else { return };
                sink.lock().unwrap().push(l);
            }
        });
        Self { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, sig: &str) {
        std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY1: &str = "cos_first_hour_key_1";
const KEY2: &str = "cos_first_hour_key_2";
const KEY3: &str = "cos_first_hour_key_3";

async fn status_of(base: &str, key: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/status"))
        .basic_auth(key, Some(""))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_leave_out_dry_runs_api_keys_reload_and_logs_carry_no_debug_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        format!(
            "[[pending]]\nid = 7\nfromAddress = \"{HOT}\"\ntoAddress = \"{TREASURY}\"\n\
             amount = \"12.5\"\nchainId = \"195\"\n"
        ),
    )
    .unwrap();
    let sandbox = spawn_sandbox(&["--scenario", scenario.to_str().unwrap()]);
    let cfg = write_config(dir.path(), &sandbox.url);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "default = \"hold\"\n[[rule]]\nname = \"treasury payouts\"\naction = \"approve\"\n\
             to = [\"{TREASURY}\"]\nwindow = \"24h\"\nmax_count = 50\n"
        ),
    )
    .unwrap();
    let keys = dir.path().join("api-keys");
    std::fs::write(&keys, format!("{}\n", cosigner::operator::digest(KEY1))).unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[http]\nlisten = \"127.0.0.1:0\"\napi_keys_file = \"api-keys\"\n");
    std::fs::write(&cfg, text).unwrap();

    // A dry run first: recorded, never sent.
    let out = bin()
        .args(["run", "--once", "--dry-run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));

    let daemon = Running::start(&cfg);
    wait_until(
        "the daemon logs its start",
        Duration::from_secs(15),
        || async { daemon.log().contains("cosigner running") },
    )
    .await;
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("cosigner running"))
        .unwrap()
        .to_string();
    // Item 12: no Rust Debug syntax in values.
    assert!(!line.contains("Some("), "{line}");
    assert!(line.contains("poll_interval=2m"), "{line}");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap()
        .to_string();
    let base = format!("http://{addr}");
    wait_until("the approval", Duration::from_secs(15), || async {
        daemon.log().contains("cycle done")
    })
    .await;
    let log = daemon.log();
    assert!(
        log.contains("rule=\"treasury payouts\" reason=\"matched rule \\\"treasury payouts\\\"\""),
        "{log}"
    );
    assert!(log.contains("decided=approve:1"), "{log}");
    assert!(!log.contains("Some(") && !log.contains("{\""), "{log}");

    // Item 9: dry runs apart; windows as written.
    let (code, status) = status_of(&base, KEY1).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["decisions"]["approve"], 1, "{status}");
    assert_eq!(status["dry_run_decisions"]["approve"], 1, "{status}");
    assert_eq!(status["windows"][0]["window"], "24h", "{status}");

    // Item 10: SIGHUP reloads the keys file.
    assert_eq!(status_of(&base, KEY2).await.0, 401);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&keys)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        format!("{}\n", cosigner::operator::digest(KEY2)).as_bytes(),
    )
    .unwrap();
    daemon.signal("-HUP");
    wait_until(
        "the new key accepted after SIGHUP",
        Duration::from_secs(10),
        || async { status_of(&base, KEY2).await.0 == 200 },
    )
    .await;
    // ... and so does POST /v1/policy/reload.
    std::io::Write::write_all(
        &mut f,
        format!("{}\n", cosigner::operator::digest(KEY3)).as_bytes(),
    )
    .unwrap();
    assert_eq!(status_of(&base, KEY3).await.0, 401);
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/policy/reload"))
        .basic_auth(KEY1, Some(""))
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["api_keys"], 3, "{body}");
    assert_eq!(status_of(&base, KEY3).await.0, 200);
    // Item 11: while the daemon runs, `pause`/`resume` need a key, and say how to make one.
    let out = bin()
        .args(["pause", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(
        all_output(&out).contains(
            "the daemon is running: give an operator API key with --api-key-file or \
             COSIGNER_API_KEY (`cosigner apikey new` makes one)"
        ),
        "{}",
        all_output(&out)
    );
    let out = bin()
        .env("COSIGNER_API_KEY", KEY3)
        .args(["resume", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("has port 0"),
        "{}",
        all_output(&out)
    );
    let out = bin()
        .env("COSIGNER_API_KEY", KEY3)
        .env("COSIGNER_HTTP__LISTEN", &addr)
        .args(["resume", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    // A broken keys file is refused and the keys in force kept.
    std::fs::write(&keys, "not-a-digest\n").unwrap();
    daemon.signal("-HUP");
    wait_until("the refusal logged", Duration::from_secs(10), || async {
        daemon.log().contains("operator API keys reload refused")
    })
    .await;
    assert_eq!(status_of(&base, KEY3).await.0, 200);
}

#[test]
fn apikey_new_prints_the_line_to_append_and_the_reload_command_or_json() {
    let (code, text) = run(&["apikey", "new", "--keys-file", "/etc/cosigner/api-keys"]);
    assert_eq!(code, Some(0), "{text}");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key:  "))
        .unwrap()
        .to_string();
    let line = cosigner::operator::digest(&key);
    assert!(text.contains(&format!("line: {line}")), "{text}");
    assert!(
        text.contains(&format!(
            "  echo '{line}' | sudo tee -a /etc/cosigner/api-keys >/dev/null"
        )),
        "{text}"
    );
    assert!(text.contains("  sudo systemctl reload cosigner"), "{text}");
    let (code, json) = run(&["apikey", "new", "--json", "--keys-file", "/srv/keys"]);
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["line"].as_str().unwrap(),
        cosigner::operator::digest(v["key"].as_str().unwrap())
    );
    assert_eq!(v["keys_file"], "/srv/keys");
}

#[test]
fn resume_has_no_reject_flag_and_pause_help_says_a_key_is_needed_while_the_daemon_runs() {
    let (code, help) = run(&["resume", "--help"]);
    assert_eq!(code, Some(0));
    assert!(!help.contains("--reject"), "{help}");
    assert!(help.contains("--api-key-file"), "{help}");
    let (code, text) = run(&["resume", "--reject"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("unexpected argument '--reject'"), "{text}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `cosigner pause"))
        .unwrap();
    assert!(
        row.contains("operator API key") && row.contains("while the daemon runs"),
        "{row}"
    );
}

#[test]
fn a_network_error_names_the_url_and_a_refused_credential_gets_its_hint_once() {
    let d = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens.
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    edit(
        &cfg,
        "timeout = \"5s\"",
        "timeout = \"5s\"\nmax_retries = 0",
    );
    let (code, text) = run(&["check", "--online", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot connect to http://127.0.0.1:9/api/transaction/pending"),
        "{text}"
    );

    let sandbox = spawn_sandbox_with_secret("a-different-secret");
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), &sandbox.url);
    let (code, text) = run(&["check", "--online", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL  online:"), "{text}");
    assert_eq!(text.matches("api.api_key").count(), 1, "{text}");
    assert!(text.contains("clock"), "{text}");
}

fn check_lines(cfg: &Path) -> (Option<i32>, String) {
    run(&["check", "--config", cfg.to_str().unwrap()])
}

#[test]
fn check_fails_placeholders_a_taken_port_readable_secrets_and_plain_http_to_a_remote_host() {
    use std::os::unix::fs::PermissionsExt;
    // Placeholder credentials, as the example ships them.
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    edit(&cfg, API_KEY, "REPLACE-WITH-YOUR-API-KEY");
    edit(&cfg, API_SECRET, "REPLACE-WITH-YOUR-API-SECRET");
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("FAIL  api.api_key: is still the example's placeholder: set the API key"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  api.api_secret: is still the example's placeholder"),
        "{text}"
    );
    assert!(!text.contains("REPLACE-WITH-YOUR-API-SECRET"), "{text}");

    // http.listen taken by another process.
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("[http]\nlisten = \"{addr}\"\n"));
    std::fs::write(&cfg, text).unwrap();
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "FAIL  http.listen: {addr} is already in use by another process"
        )) && text.contains("choose another http.listen"),
        "{text}"
    );
    drop(taken);
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("ok    http.listen: {addr} (free)")),
        "{text}"
    );

    // An inline secret in a config others can read.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "FAIL  api secret: written inline in {}, which others can read (mode 0644): chmod 600",
            cfg.display()
        )),
        "{text}"
    );

    // A secret file others can read.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = d.path().join("api_secret");
    std::fs::write(&secret, API_SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    edit(
        &cfg,
        &format!("api_secret = \"{API_SECRET}\""),
        "api_secret_file = \"api_secret\"",
    );
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(2), "{text}");
    // The loader itself refuses it (issue 10), and says how to fix it.
    assert!(
        text.contains("FAIL  config:")
            && text.contains(&format!(
                "key `api.api_secret_file`: {} has mode 0644",
                secret.display()
            ))
            && text.contains("chmod 600"),
        "{text}"
    );
    assert!(!text.contains(API_SECRET), "{text}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(0), "{text}");

    // Plain http:// to a remote host.
    edit(&cfg, "http://127.0.0.1:9", "http://203.0.113.7");
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("FAIL  config:")
            && text.contains("plain http:// to another host")
            && text.contains("use https://"),
        "{text}"
    );
}

#[test]
fn check_on_a_fresh_host_warns_that_systemd_creates_the_state_directory_and_how_to_make_it() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "http://127.0.0.1:9");
    let state = format!("/var/lib/cosigner-first-hour-{}", std::process::id());
    edit(
        &cfg,
        "path = \"ledger.db\"",
        &format!("path = \"{state}/ledger.db\""),
    );
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(0), "a warning, not a failure:\n{text}");
    assert!(
        text.contains(&format!(
            "warn  ledger: directory {state} does not exist yet: the unit's \
             StateDirectory=cosigner-first-hour-{} creates it at start; to create it now (and run \
             cosigner outside systemd): sudo install -d -o cosigner -g cosigner -m 0700 {state}",
            std::process::id()
        )),
        "{text}"
    );
    assert!(!Path::new(&state).exists(), "check creates nothing");
    // Anywhere else, a missing directory fails with the command that makes it.
    edit(
        &cfg,
        &format!("path = \"{state}/ledger.db\""),
        "path = \"nope/ledger.db\"",
    );
    let (code, text) = check_lines(&cfg);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "FAIL  ledger: directory {} does not exist: create it (install -d -m 0700 {}",
            d.path().join("nope").display(),
            d.path().join("nope").display()
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_takes_the_pkcs12_itself_and_verifies_data_with_its_certificate() {
    let d = tempfile::tempdir().unwrap();
    let pfx = key_copy(d.path(), "keytool-aes.pfx");
    let scenario = d.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        format!(
            "[[pending]]\nid = 3\nfromAddress = \"{HOT}\"\ntoAddress = \"{TREASURY}\"\n\
             amount = \"1\"\nchainId = \"195\"\n"
        ),
    )
    .unwrap();
    let sandbox = spawn_sandbox_args(&[
        "--pfx",
        pfx.to_str().unwrap(),
        "--merchant-no",
        MERCHANT,
        "--api-key",
        API_KEY,
        "--api-secret",
        API_SECRET,
        "--scenario",
        scenario.to_str().unwrap(),
    ]);
    let cfg = write_config(d.path(), &sandbox.url);
    std::fs::write(
        d.path().join("policy.toml"),
        format!("[[rule]]\nname = \"t\"\naction = \"approve\"\nto = [\"{TREASURY}\"]\n"),
    )
    .unwrap();
    let out = bin()
        .args(["run", "--once", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    let decisions: serde_json::Value = reqwest::get(format!("{}/_sandbox/decisions", sandbox.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(decisions.as_array().unwrap().len(), 1, "{decisions}");
}

/// Maps the systemd walk-through's absolute paths into `root`.
fn mapped(root: &Path, path: &str) -> std::path::PathBuf {
    let rel = path
        .strip_prefix('/')
        .unwrap_or_else(|| panic!("{path} is not absolute"));
    root.join(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_walk_through_works_in_its_written_order_on_a_fresh_host() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("systemd/README.md")).unwrap();
    let block = readme
        .split("## Install")
        .nth(1)
        .unwrap()
        .split("```")
        .nth(1)
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let sandbox = spawn_sandbox(&[]);
    let mut steps = Vec::new();
    for line in block.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        // Step 3: files from the repository into /etc/cosigner; step 3b: the state directory.
        if words.starts_with(&["sudo", "install", "-d"]) {
            let dir = mapped(root.path(), words.last().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            steps.push(format!("dir {}", words.last().unwrap()));
        } else if words.starts_with(&["sudo", "install", "-m"]) {
            let (src, dst) = (words[words.len() - 2], words[words.len() - 1]);
            if !dst.starts_with("/etc/cosigner/") || src.starts_with('/') {
                continue; // the binary, the unit, the downloaded key: not files of this test
            }
            let src = repo.join(src);
            assert!(
                src.exists(),
                "the walk-through installs {} which is missing",
                src.display()
            );
            let dst = mapped(root.path(), dst);
            std::fs::copy(&src, &dst).unwrap();
            steps.push(format!("file {}", words[words.len() - 1]));
        }
    }
    for want in [
        "dir /etc/cosigner",
        "file /etc/cosigner/cosigner.toml",
        "file /etc/cosigner/policy.toml",
        "file /etc/cosigner/blocked.txt",
        "dir /var/lib/cosigner",
        "dir /etc/cosigner/credentials",
    ] {
        assert!(steps.contains(&want.to_string()), "{want} not in {steps:?}");
    }
    let made = block.find("/var/lib/cosigner\n").unwrap();
    let checked = block.find("cosigner check --config").unwrap();
    assert!(
        made < checked,
        "the state directory is made before the check"
    );

    // The sudoedit step: merchant number and API key; the paths mapped into the temp root, the
    // API at the sandbox, the listener on any free port.
    let cfg = mapped(root.path(), "/etc/cosigner/cosigner.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "/etc/cosigner",
            &mapped(root.path(), "/etc/cosigner").display().to_string(),
        )
        .replace(
            "/var/lib/cosigner",
            &mapped(root.path(), "/var/lib/cosigner")
                .display()
                .to_string(),
        )
        .replace("https://api.1bitpay.io", &sandbox.url)
        .replace("mer0000000000000001", MERCHANT)
        .replace("REPLACE-WITH-YOUR-API-KEY", API_KEY)
        .replace("127.0.0.1:9184", "127.0.0.1:0");
    std::fs::write(&cfg, text).unwrap();

    // Step 4: the secrets.
    let creds = mapped(root.path(), "/etc/cosigner/credentials");
    key_copy(&creds, "keytool-aes.pfx");
    std::fs::rename(creds.join("keytool-aes.pfx"), creds.join("merchant.pfx")).unwrap();
    std::fs::write(creds.join("api_secret"), API_SECRET).unwrap();
    std::fs::set_permissions(
        creds.join("api_secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    // Step 5: the printed line, run as printed (without sudo).
    let keys = mapped(root.path(), "/etc/cosigner/api-keys");
    let (code, out) = run(&["apikey", "new", "--keys-file", keys.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let append = out
        .lines()
        .find(|l| l.trim_start().starts_with("echo '"))
        .unwrap()
        .trim()
        .replace("sudo ", "");
    let status = std::process::Command::new("sh")
        .args(["-c", &append])
        .status()
        .unwrap();
    assert!(status.success(), "{append}");

    // Step 6: check, with the credentials directory, online.
    let out = bin()
        .env("CREDENTIALS_DIRECTORY", &creds)
        .args(["check", "--online", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(
        text.contains("ok    ledger:") && text.contains("ok    online:"),
        "{text}"
    );
}
