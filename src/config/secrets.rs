//! Secrets: inline, from a *_file key or from systemd credentials, where each came from, and the
//! file that must hold one.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::{CRED_API_SECRET, ConfigError, Validator};

/// Where a secret was found, for `cosigner check` (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretOrigin {
    /// Written in the config file (or an environment override).
    Inline,
    /// Read from a file named by a `*_file` key.
    File(PathBuf),
    /// Read from `$CREDENTIALS_DIRECTORY`.
    Credential(PathBuf),
    /// The protocol's default (the PKCS#12 password).
    Default,
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretOrigin::Inline => write!(f, "inline"),
            SecretOrigin::File(p) => write!(f, "file {}", p.display()),
            SecretOrigin::Credential(p) => write!(f, "systemd credential {}", p.display()),
            SecretOrigin::Default => write!(f, "default (\"1bitpay\" + merchant_no)"),
        }
    }
}

/// Reads a file holding one secret (an API secret, a PKCS#12 password, an API key). One trailing
/// newline is dropped, as `echo` and systemd credentials leave one; an empty file is an error.
/// With `private`, a file group or others may read is refused as the key file is (checked on
/// the opened file). The error names the file, never its content.
pub(crate) fn read_secret_file(
    path: &Path,
    private: bool,
) -> Result<SecretString, SecretFileError> {
    let cannot = |source: std::io::Error| SecretFileError::Read {
        path: path.to_owned(),
        error: source,
    };
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    if private && let Some(mode) = crate::signer::shared_mode(&file.metadata().map_err(cannot)?) {
        return Err(SecretFileError::Shared {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(cannot)?;
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// A file that should hold one secret and does not; the message names the file, never its
/// content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Group or others may read it.
    #[error(
        "{} has mode {mode:04o}: a file holding a secret must not be readable by group or \
         others (chmod 600 it, or set key.allow_insecure_permissions = true)",
        .path.display()
    )]
    Shared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds nothing.
    #[error("{} is empty", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl Validator<'_> {
    pub(super) fn credential(&self, name: &str) -> Option<PathBuf> {
        let p = self.env.credentials_directory.as_ref()?.join(name);
        p.exists().then_some(p)
    }

    /// A secret from a file the configuration names: private unless
    /// `key.allow_insecure_permissions`.
    pub(super) fn read_secret_file(
        &self,
        key: &'static str,
        p: &Path,
        allow_insecure: bool,
    ) -> Result<SecretString, ConfigError> {
        read_secret_file(p, !allow_insecure).map_err(|e| self.err(key, e.to_string()))
    }

    /// A secret from `$CREDENTIALS_DIRECTORY`: systemd already makes it private to the service.
    pub(super) fn read_credential(
        &self,
        key: &'static str,
        p: &Path,
    ) -> Result<SecretString, ConfigError> {
        read_secret_file(p, false).map_err(|e| self.err(key, e.to_string()))
    }

    /// The API secret: inline, from `api.api_secret_file`, or from a systemd credential.
    pub(super) fn api_secret(
        &self,
        inline: Option<SecretString>,
        file: Option<PathBuf>,
        allow_insecure: bool,
    ) -> Result<(SecretString, SecretOrigin), ConfigError> {
        Ok(match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "api.api_secret",
                    "give either api.api_secret or api.api_secret_file, not both",
                ));
            }
            (Some(s), None) => {
                if secrecy::ExposeSecret::expose_secret(&s).is_empty() {
                    return Err(self.err("api.api_secret", "is empty"));
                }
                (s, SecretOrigin::Inline)
            }
            (None, Some(f)) => {
                let f = self.resolve(f);
                (
                    self.read_secret_file("api.api_secret_file", &f, allow_insecure)?,
                    SecretOrigin::File(f),
                )
            }
            (None, None) => match self.credential(CRED_API_SECRET) {
                Some(p) => (
                    self.read_credential("api.api_secret", &p)?,
                    SecretOrigin::Credential(p),
                ),
                None => {
                    return Err(self.err(
                        "api.api_secret",
                        format!(
                            "is required: set api.api_secret, api.api_secret_file, or a systemd \
                             credential named {CRED_API_SECRET}"
                        ),
                    ));
                }
            },
        })
    }
}
