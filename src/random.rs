//! Randomness for nonces, API keys and jitter: OpenSSL's CSPRNG only. When it cannot produce
//! bytes the caller gets an error and fails; there is no fallback to clock-derived bytes.

/// OpenSSL's CSPRNG could not produce bytes.
#[derive(Debug, thiserror::Error)]
#[error("OpenSSL's random number generator failed: {0}")]
pub(crate) struct RandomError(#[from] openssl::error::ErrorStack);

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
pub(crate) fn u64() -> Result<u64, RandomError> {
    bytes::<8>().map(u64::from_le_bytes)
}

/// A uniformly random fraction in `[0, 1)`, for jitter; 0 when the CSPRNG fails (jitter only
/// spreads load: the nonce of the request that follows fails the call instead).
#[must_use]
pub(crate) fn unit_fraction() -> f64 {
    u64().map_or(0.0, |r| (r >> 11) as f64 / (1u64 << 53) as f64)
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Bytes of CSPRNG output one refill of a thread's nonce reserve draws: 64 nonces.
const NONCE_RESERVE: usize = 1024;

std::thread_local! {
    /// This thread's unused CSPRNG output for nonces and how much of it is used. A nonce is sent
    /// in the clear and guards against replay, not a secret: drawing OpenSSL's output for 64 of
    /// them at once saves a DRBG call per request (~5 µs, a tenth of a request's own CPU).
    static NONCE_BYTES: std::cell::RefCell<([u8; NONCE_RESERVE], usize)> =
        const { std::cell::RefCell::new(([0; NONCE_RESERVE], NONCE_RESERVE)) };
}

/// A fresh 16-character alphanumeric nonce.
pub(crate) fn nonce() -> Result<String, RandomError> {
    nonce_drawing(openssl::rand::rand_bytes)
}

/// A nonce from this thread's reserve, refilled by `fill` when it is used up; `fill`'s error
/// when it fails, and the reserve is left used up (never handed out as zeros).
fn nonce_drawing(
    fill: impl FnOnce(&mut [u8]) -> Result<(), openssl::error::ErrorStack>,
) -> Result<String, RandomError> {
    NONCE_BYTES.with_borrow_mut(|(reserve, used)| {
        if *used == NONCE_RESERVE {
            fill(reserve)?;
            *used = 0;
        }
        let mut b = [0u8; 16];
        b.copy_from_slice(&reserve[*used..*used + 16]);
        // Spent bytes are not kept: each nonce is drawn once.
        reserve[*used..*used + 16].fill(0);
        *used += 16;
        Ok(nonce_from(b))
    })
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
    fn a_nonce_from_a_failing_generator_is_an_error_and_the_next_refill_is_drawn_afresh() {
        // A new thread: its reserve is used up, so the first nonce refills it.
        std::thread::spawn(|| {
            assert!(nonce_drawing(failing).is_err());
            // Still used up: not 64 nonces of zero bytes ("AAAA…") handed out after the error.
            assert!(nonce_drawing(failing).is_err());
            let drawn = nonce_drawing(|b: &mut [u8]| {
                b.fill(1);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                drawn, "BBBBBBBBBBBBBBBB",
                "from the refill, not from before it"
            );
            // The rest of the reserve serves the next ones; the generator is not asked again.
            assert_eq!(nonce_drawing(failing).unwrap(), "BBBBBBBBBBBBBBBB");
        })
        .join()
        .unwrap();
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
    fn nonces_stay_distinct_across_refills_of_the_reserve() {
        let n = 3 * NONCE_RESERVE / 16 + 5;
        let all: std::collections::HashSet<String> = (0..n).map(|_| nonce().unwrap()).collect();
        assert_eq!(all.len(), n, "a nonce repeated");
        assert!(all.iter().all(|a| a.len() == 16 && a != "AAAAAAAAAAAAAAAA"));
    }
}
