//! The merchant's key shard: loads the PKCS#12, builds the texts 1BitPay wants signed, and
//! produces the `data` field (RSA PKCS#1 v1.5 private-key operation, base64).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::provider::Provider;
use openssl::rsa::{Padding, Rsa};
use openssl::x509::X509;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// The alias the 1BitPay merchant console gives the key inside the PKCS#12.
pub(crate) const KEY_ALIAS: &str = "1BitPay";

/// Bytes of PKCS#1 v1.5 padding: a text may be at most `modulus bytes - 11` long.
const PKCS1_OVERHEAD: usize = 11;

/// Largest key file we read; a real PKCS#12 with one key and certificate is a few KiB.
const MAX_PFX_BYTES: u64 = 1 << 20;

/// Why a key could not be loaded or a text could not be signed. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The key file could not be opened or read.
    #[error("cannot read key file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The key file may be read by other users.
    #[error(
        "key file {path} has mode {mode:04o}: it must not be readable by group or others \
         (chmod 600 it, or set key.allow_insecure_permissions = true)"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is larger than any PKCS#12 we expect.
    #[error("key file {path} is larger than {MAX_PFX_BYTES} bytes: not a PKCS#12 key shard")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The bytes are not a PKCS#12 structure.
    #[error("key file {path} is not a PKCS#12 (.pfx) file or is corrupt")]
    NotPkcs12 {
        /// The file.
        path: PathBuf,
    },
    /// The MAC did not verify, which for a well-formed file means the password is wrong.
    #[error(
        "cannot open key file {path}: wrong password (the default is \"1bitpay\" followed by the \
         merchant number; set key.password_file if yours differs) or the file is damaged"
    )]
    WrongPassword {
        /// The file.
        path: PathBuf,
    },
    /// The PKCS#12 holds no private key.
    #[error("key file {path} holds no private key")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The PKCS#12 holds a key other than RSA.
    #[error("key file {path} holds a non-RSA key; 1BitPay key shards are RSA")]
    NotRsa {
        /// The file.
        path: PathBuf,
    },
    /// The certificate in the file is not the certificate of its key.
    #[error("key file {path}: the certificate does not match the private key")]
    CertificateMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The text does not fit in one RSA block.
    #[error("text to sign is {len} bytes; this {bits}-bit key signs at most {max} bytes")]
    TextTooLong {
        /// Bytes of the text.
        len: usize,
        /// Most bytes the key can sign.
        max: usize,
        /// The key's size in bits.
        bits: u32,
    },
    /// The thread signing this text stopped before it finished.
    #[error("the signing thread stopped unexpectedly")]
    Interrupted,
    /// OpenSSL failed for a reason other than the above.
    #[error("OpenSSL error: {0}")]
    Crypto(openssl::error::ErrorStack),
}

// By hand rather than `#[from]`, which would also make the stack the error's `source`: the
// message prints it already, and a cause is said once.
impl From<openssl::error::ErrorStack> for SignerError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Self::Crypto(e)
    }
}

/// Where a key shard comes from and how to open it.
#[derive(Clone)]
pub struct KeySource {
    /// Path of the PKCS#12 file.
    pub pfx_file: PathBuf,
    /// The PKCS#12 password.
    pub password: SecretString,
    /// Accept a key file readable by group or others.
    pub allow_insecure_permissions: bool,
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySource")
            .field("pfx_file", &self.pfx_file)
            .field("password", &"[REDACTED]")
            .field(
                "allow_insecure_permissions",
                &self.allow_insecure_permissions,
            )
            .finish()
    }
}

/// The password 1BitPay sets on a downloaded key shard.
#[must_use]
pub(crate) fn default_password(merchant_no: &str) -> SecretString {
    SecretString::from(format!("1bitpay{merchant_no}"))
}

/// A loaded key shard, ready to sign.
pub struct Signer {
    rsa: Rsa<Private>,
    cert: X509,
    alias: Option<String>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("bits", &self.bits())
            .field("alias", &self.alias)
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

/// Keeps OpenSSL's legacy provider loaded for the life of the process, so RC2/3DES PKCS#12 files
/// open; the default provider stays available beside it.
fn ensure_legacy_provider() {
    static LEGACY: OnceLock<Option<Provider>> = OnceLock::new();
    LEGACY.get_or_init(|| match Provider::try_load(None, "legacy", true) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "OpenSSL legacy provider not available; legacy-encrypted key files will not open");
            None
        }
    });
}

/// The file's mode when group or others may access it (the key shard and the files holding
/// secrets must be private to the service's user), else `None`.
#[must_use]
pub(crate) fn shared_mode(meta: &std::fs::Metadata) -> Option<u32> {
    let mode = meta.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

impl Signer {
    /// Opens the key file, checks its permissions on the opened handle, and loads the key.
    pub fn load(source: &KeySource) -> Result<Self, SignerError> {
        let path = &source.pfx_file;
        let read_err = |e| SignerError::Read {
            path: path.clone(),
            error: e,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if let Some(mode) = shared_mode(&meta)
            && !source.allow_insecure_permissions
        {
            return Err(SignerError::InsecurePermissions {
                path: path.clone(),
                mode,
            });
        }
        if meta.len() > MAX_PFX_BYTES {
            return Err(SignerError::TooLarge { path: path.clone() });
        }
        let mut der = Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
        (&mut file)
            .take(MAX_PFX_BYTES + 1)
            .read_to_end(&mut der)
            .map_err(read_err)?;
        if der.len() as u64 > MAX_PFX_BYTES {
            return Err(SignerError::TooLarge { path: path.clone() });
        }
        Self::from_pkcs12(&der, &source.password, path)
    }

    /// Loads a key from PKCS#12 bytes; `path` only names the file in errors.
    pub(crate) fn from_pkcs12(
        der: &[u8],
        password: &SecretString,
        path: &Path,
    ) -> Result<Self, SignerError> {
        ensure_legacy_provider();
        let p12 = Pkcs12::from_der(der).map_err(|_| SignerError::NotPkcs12 {
            path: path.to_owned(),
        })?;
        let parsed =
            p12.parse2(password.expose_secret())
                .map_err(|_| SignerError::WrongPassword {
                    path: path.to_owned(),
                })?;
        let pkey: PKey<Private> = parsed.pkey.ok_or_else(|| SignerError::NoKey {
            path: path.to_owned(),
        })?;
        let rsa = pkey.rsa().map_err(|_| SignerError::NotRsa {
            path: path.to_owned(),
        })?;
        let cert = parsed
            .cert
            .ok_or_else(|| SignerError::CertificateMismatch {
                path: path.to_owned(),
            })?;
        let cert_key = cert.public_key()?;
        if !cert_key.public_eq(&pkey) {
            return Err(SignerError::CertificateMismatch {
                path: path.to_owned(),
            });
        }
        let alias = cert
            .alias()
            .map(|a| String::from_utf8_lossy(a).into_owned());
        // Java keystores fold aliases to lower case, so "1bitpay" is the same alias.
        if let Some(a) = &alias
            && !a.eq_ignore_ascii_case(KEY_ALIAS)
        {
            tracing::warn!(alias = %a, expected = KEY_ALIAS, "key alias differs from 1BitPay's; using the file's only key");
        }
        Ok(Self { rsa, cert, alias })
    }

    /// Size of the RSA modulus in bits.
    #[must_use]
    pub(crate) fn bits(&self) -> u32 {
        self.rsa.size() * 8
    }

    /// Longest text, in bytes, that one signature can carry.
    #[must_use]
    pub fn max_text_len(&self) -> usize {
        self.rsa.size() as usize - PKCS1_OVERHEAD
    }

    /// The friendly name stored with the key, if any.
    #[must_use]
    pub(crate) fn alias(&self) -> Option<&str> {
        self.alias.as_deref()
    }

    /// The certificate's subject, one line.
    #[must_use]
    pub(crate) fn subject(&self) -> String {
        self.cert
            .subject_name()
            .entries()
            .filter_map(|e| {
                let key = e.object().nid().short_name().ok()?;
                let val = e.data().to_string().ok()?;
                Some(format!("{key}={val}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The certificate, PEM-encoded: what the server verifies `data` with.
    pub fn certificate_pem(&self) -> Result<Vec<u8>, SignerError> {
        Ok(self.cert.to_pem()?)
    }

    /// `data` for `text`: base64 of the PKCS#1 v1.5 (type 1) private-key operation on its bytes.
    pub fn sign(&self, text: &str) -> Result<String, SignerError> {
        let max = self.max_text_len();
        if text.len() > max {
            return Err(SignerError::TextTooLong {
                len: text.len(),
                max,
                bits: self.bits(),
            });
        }
        let mut out = vec![0u8; self.rsa.size() as usize];
        let n = self
            .rsa
            .private_encrypt(text.as_bytes(), &mut out, Padding::PKCS1)?;
        out.truncate(n);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }
}

/// Why a `data` field does not carry a text signed by a certificate's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    /// Not base64.
    #[error("data is not base64: {0}")]
    NotBase64(String),
    /// The certificate's key is not RSA.
    #[error("certificate holds no RSA key")]
    NotRsa,
    /// Not one RSA block of the key's size.
    #[error("data is {len} bytes; a signature of this key is {size}")]
    Length {
        /// Bytes of `data`, decoded.
        len: usize,
        /// Bytes of one signature of the key.
        size: u32,
    },
    /// The key did not make it.
    #[error("data was not made by the key of this certificate")]
    OtherKey,
    /// The text it carries is not UTF-8.
    #[error("signed text is not UTF-8")]
    NotUtf8,
}

/// Checks `data` against a certificate and returns the text it carries (what the server does).
pub fn recover_text(cert: &X509, data: &str) -> Result<String, RecoverError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| RecoverError::NotBase64(e.to_string()))?;
    let rsa = cert
        .public_key()
        .and_then(|k| k.rsa())
        .map_err(|_| RecoverError::NotRsa)?;
    if raw.len() != rsa.size() as usize {
        return Err(RecoverError::Length {
            len: raw.len(),
            size: rsa.size(),
        });
    }
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa
        .public_decrypt(&raw, &mut out, Padding::PKCS1)
        .map_err(|_| RecoverError::OtherKey)?;
    out.truncate(n);
    String::from_utf8(out).map_err(|_| RecoverError::NotUtf8)
}
