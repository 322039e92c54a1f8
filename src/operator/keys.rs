//! The operator API's keys: the key file (SHA-256 digests and scopes), the store reloaded in place,
//! and new keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use openssl::sha::sha256;

use crate::display::hex;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every operator route, and `/metrics`.
    Operator,
    /// `/metrics` only: the key a scraper (often on another host) holds must not lift a pause.
    Metrics,
}

/// A keys file that cannot be used; the message names the file and the line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiKeysError {
    /// The file cannot be read.
    #[error("cannot read API keys file {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A word after the digest that is not a scope.
    #[error("API keys file {} line {line}: {word:?} is not a scope; the only one is `metrics`", .path.display())]
    Scope {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The word.
        word: String,
    },
    /// A line that is not a digest.
    #[error(
        "API keys file {} line {line}: expected a lowercase hex SHA-256 (64 characters); \
         `cosigner apikey new` prints one",
        .path.display()
    )]
    Digest {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// The thread reading the file stopped before it finished; the keys in force are kept.
    #[error("API keys file: {0}")]
    Interrupted(String),
}

/// The accepted API keys, as SHA-256 digests with their scope.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    pub(super) digests: Vec<([u8; 32], Scope)>,
}

impl ApiKeys {
    /// Reads a keys file: one lowercase hex SHA-256 per line, optionally followed by the word
    /// `metrics` for a key that may only scrape `/metrics`; `#` comments, blank lines ignored.
    pub(crate) fn load(path: &Path) -> Result<Self, ApiKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiKeysError::Read {
            path: path.to_owned(),
            error: source,
        })?;
        let mut digests: Vec<([u8; 32], Scope)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.split('#').next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            let (l, scope) = match l.split_once(char::is_whitespace) {
                None => (l, Scope::Operator),
                Some((d, "metrics")) => (d, Scope::Metrics),
                Some((_, other)) => {
                    return Err(ApiKeysError::Scope {
                        path: path.to_owned(),
                        line: i + 1,
                        word: other.trim().to_owned(),
                    });
                }
            };
            if l.len() != 64
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(ApiKeysError::Digest {
                    path: path.to_owned(),
                    line: i + 1,
                });
            }
            // 64 lowercase hex digits, checked above.
            let mut d = [0u8; 32];
            for (byte, pair) in d.iter_mut().zip(l.as_bytes().chunks(2)) {
                let nibble = |c: u8| {
                    if c.is_ascii_digit() {
                        c - b'0'
                    } else {
                        c - b'a' + 10
                    }
                };
                *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
            }
            if !digests.contains(&(d, scope)) {
                digests.push((d, scope));
            }
        }
        Ok(Self { digests })
    }

    /// Whether `key` is accepted for `scope` (an operator key is accepted for both). Every
    /// stored digest is compared, each in constant time, so the answer's timing says nothing
    /// about how close a guess came.
    #[must_use]
    pub(crate) fn accepts(&self, key: &str, scope: Scope) -> bool {
        let d = sha256(key.as_bytes());
        let mut found = false;
        for (stored, s) in &self.digests {
            let fits = *s == Scope::Operator || *s == scope;
            found |= openssl::memcmp::eq(stored, &d) & fits;
        }
        found && !key.is_empty()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// The operator API's keys, re-read from `http.api_keys_file` on every reload (SIGHUP,
/// `POST /v1/policy/reload`), so that a key added with `cosigner apikey new` works without a
/// restart. An invalid file is refused and the keys in force are kept; a file that is gone
/// revokes every key (deleting it is how an operator withdraws them all).
#[derive(Debug, Default)]
pub(crate) struct KeyStore {
    pub(super) file: Option<PathBuf>,
    pub(super) keys: ArcSwapOption<ApiKeys>,
}

impl KeyStore {
    /// Keys loaded from `file` (`None`: the API refuses every call).
    pub(crate) fn new(file: Option<PathBuf>, keys: Option<ApiKeys>) -> Self {
        Self {
            file,
            keys: ArcSwapOption::new(keys.map(Arc::new)),
        }
    }

    /// The keys in force.
    pub(crate) fn current(&self) -> Option<Arc<ApiKeys>> {
        self.keys.load_full()
    }

    /// [`KeyStore::reload`] on a blocking thread (it reads and parses a file), for async code.
    pub(crate) async fn reload_off_runtime(
        self: &Arc<Self>,
        why: &'static str,
    ) -> Result<Option<usize>, ApiKeysError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.reload(why))
            .await
            .unwrap_or_else(|e| {
                Err(ApiKeysError::Interrupted(format!(
                    "the thread reloading the keys stopped: {e}"
                )))
            })
    }

    /// Reads the file again; returns how many keys are now in force (`None` without a file).
    pub(crate) fn reload(&self, why: &str) -> Result<Option<usize>, ApiKeysError> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let loaded = match ApiKeys::load(file) {
            Err(ApiKeysError::Read { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(file = %file.display(), by = why, "the operator API keys file is gone: no key is accepted until it is back");
                Ok(ApiKeys::default())
            }
            other => other,
        };
        match loaded {
            Ok(k) => {
                let n = k.len();
                self.keys.store(Some(Arc::new(k)));
                tracing::info!(keys = n, file = %file.display(), by = why, "operator API keys reloaded");
                Ok(Some(n))
            }
            Err(e) => {
                tracing::error!(error = %e, by = why, "operator API keys reload refused; the keys in force are kept");
                Err(e)
            }
        }
    }
}

/// Lowercase hex SHA-256 of a key: the line stored in the keys file.
#[must_use]
pub fn digest(key: &str) -> String {
    hex(&sha256(key.as_bytes()))
}

/// A fresh API key (`cos_` + 64 hex digits from OpenSSL's CSPRNG) and its keys-file line.
pub(crate) fn new_key() -> Result<(String, String), crate::random::RandomError> {
    let key = format!("cos_{}", hex(&crate::random::bytes::<32>()?));
    let line = digest(&key);
    Ok((key, line))
}
