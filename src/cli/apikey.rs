//! `cosigner apikey new`: a fresh operator API key, the line that stores its hash, and the
//! commands that install it.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CmdResult, Failure, print_json};

/// `apikey` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Print a fresh operator API key, the line to append to http.api_keys_file, and the
    /// commands that append it and reload the daemon.
    New {
        /// The keys file the printed command appends to
        #[arg(long, value_name = "FILE", default_value = DEFAULT_API_KEYS_FILE)]
        keys_file: PathBuf,
        /// One JSON object (key, line, keys_file) for scripts
        #[arg(long)]
        json: bool,
    },
}

/// `http.api_keys_file` of the systemd set-up (systemd/cosigner.toml).
pub(crate) const DEFAULT_API_KEYS_FILE: &str = "/etc/cosigner/api-keys";

/// Runs an `apikey` subcommand.
pub(crate) fn run(command: ApikeyCommand) -> CmdResult {
    match command {
        ApikeyCommand::New { keys_file, json } => new(&keys_file, json),
    }
}

fn new(keys_file: &Path, json: bool) -> CmdResult {
    let (key, line) = crate::operator::new_key().map_err(Failure::runtime)?;
    if json {
        return print_json(&serde_json::json!({
            "key": key,
            "line": line,
            "keys_file": keys_file,
        }));
    }
    let file = shell_quote(&keys_file.display().to_string());
    println!("key:  {key}");
    println!("line: {line}");
    println!();
    println!("Keep the key secret: it is shown once, and only the line (its SHA-256) is stored.");
    println!("Append the line to http.api_keys_file and reload the running daemon:");
    println!("  echo '{line}' | sudo tee -a {file} >/dev/null");
    println!(
        "  sudo systemctl reload cosigner    # or: kill -HUP <pid>, or POST /v1/policy/reload"
    );
    Ok(())
}

/// `text` quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
