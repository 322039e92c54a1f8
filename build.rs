//! Release builds lay out the code the daemon runs together, from `build/code-order.txt`
//! (written by `tools/code-order`), so that little of the binary is resident: the kernel maps
//! code 64 KiB at a time around each page run (README, Performance).

use std::env;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build/code-order.txt");
    println!("cargo::rerun-if-changed=build.rs");
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    if let Some(why) = not_lld() {
        println!("cargo::warning=the daemon's code is not laid out by build/code-order.txt: {why}");
        return;
    }
    let order = format!(
        "{}/build/code-order.txt",
        env::var("CARGO_MANIFEST_DIR").unwrap_or_default()
    );
    if order.contains(',') {
        println!("cargo::warning=the daemon's code is not laid out: the path {order} has a comma");
        return;
    }
    println!("cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
    // Names the list holds that this build lacks (another feature set, a changed dependency) are
    // expected: the rest is still laid out. `tools/code-order check` says when it went stale.
    println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Why the linker may not be LLD (the only one that takes `--symbol-ordering-file`), or `None`.
/// Rust links with its own LLD by default on x86_64 Linux from 1.90; a linker chosen in the
/// configuration or the flags is left alone.
fn not_lld() -> Option<String> {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return Some("the target is not x86_64-unknown-linux-gnu".into());
    }
    if env::var_os("RUSTC_LINKER").is_some() {
        return Some("a linker is configured".into());
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("link") {
        return Some("RUSTFLAGS choose the linker".into());
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "rustc 1.95.0 (...)": the minor version.
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= 90 => None,
        Some(_) => Some(format!("{} links with the system linker", version.trim())),
        None => Some(format!("unknown rustc version {:?}", version.trim())),
    }
}
