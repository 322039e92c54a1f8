//! Randomness for nonces, API keys and jitter: OpenSSL's CSPRNG only. When it cannot produce
//! bytes the caller gets an error and fails; there is no fallback to clock-derived bytes.

/// OpenSSL's CSPRNG could not produce bytes.
#[derive(Debug, thiserror::Error)]
#[error("OpenSSL's random number generator failed: {0}")]
pub struct RandomError(openssl::error::ErrorStack);

// By hand rather than `#[from]`, which would also make the stack the error's `source`: the
// message prints it already, and a cause is said once.
impl From<openssl::error::ErrorStack> for RandomError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Self(e)
    }
}

/// `N` random bytes from OpenSSL's CSPRNG.
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    bytes_from(openssl::rand::rand_bytes)
}

/// `N` bytes from `fill`, or its error: never a substitute.
fn bytes_from<const N: usize>(
    fill: impl FnOnce(&mut [u8]) -> Result<(), openssl::error::ErrorStack>,
) -> Result<[u8; N], RandomError> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}

/// A random number from OpenSSL's CSPRNG.
pub fn u64() -> Result<u64, RandomError> {
    bytes::<8>().map(u64::from_le_bytes)
}

/// A uniformly random fraction in `[0, 1)`, for jitter; 0 when the CSPRNG fails (jitter only
/// spreads load: the nonce of the request that follows fails the call instead).
#[must_use]
pub(crate) fn unit_fraction() -> f64 {
    u64().map_or(0.0, |r| (r >> 11) as f64 / (1u64 << 53) as f64)
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh 16-character alphanumeric nonce: 16 bytes drawn from OpenSSL's CSPRNG for it alone
/// (a DRBG call is a few µs beside the ~1 ms of CPU a decision takes: `docs/performance.md`).
pub(crate) fn nonce() -> Result<String, RandomError> {
    bytes::<16>().map(nonce_from)
}

fn nonce_from(b: [u8; 16]) -> String {
    b.iter()
        .map(|b| ALPHANUMERIC[(*b as usize) % ALPHANUMERIC.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(_: &mut [u8]) -> Result<(), openssl::error::ErrorStack> {
        Err(openssl::error::ErrorStack::get())
    }

    #[test]
    fn a_failing_generator_is_an_error_never_a_substitute() {
        assert!(bytes_from::<16>(failing).is_err());
    }

    #[test]
    fn nonces_are_alphanumeric_and_differ() {
        let a = nonce().unwrap();
        let b = nonce().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(nonce_from([0; 16]), "AAAAAAAAAAAAAAAA");
    }

    #[test]
    fn a_thousand_nonces_are_distinct() {
        let n = 1000;
        let all: std::collections::HashSet<String> = (0..n).map(|_| nonce().unwrap()).collect();
        assert_eq!(all.len(), n, "a nonce repeated");
        assert!(all.iter().all(|a| a.len() == 16 && a != "AAAAAAAAAAAAAAAA"));
    }
}
