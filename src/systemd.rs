//! systemd's notify protocol, without a library: `READY=1` once config, key and ledger are
//! loaded, `WATCHDOG=1` while the scheduler is healthy, `STOPPING=1` on the way out. Also the
//! process hardening that goes with the unit's `LimitCORE=0`: no core dumps of the key.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` to `$NOTIFY_SOCKET`; `Ok(false)` when not started by systemd with `Type=notify`.
pub(crate) fn notify(state: &str) -> std::io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

/// Sends `state` to the notify socket at `path` (`@name` for an abstract one); `Ok(false)` when
/// there is none.
fn notify_to(path: Option<&std::ffi::OsStr>, state: &str) -> std::io::Result<bool> {
    let Some(path) = path else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (Linux).
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))?;
    }
    Ok(true)
}

/// How often to feed the watchdog: half of `$WATCHDOG_USEC`, when it is meant for this process.
#[must_use]
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Makes the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core file holding the key
/// shard whatever the core limit, and no `ptrace` attach by the same user.
pub fn disable_core_dumps() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reaches_the_socket_named_by_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(
            !notify_to(None, "READY=1").unwrap(),
            "no socket, no notification"
        );
    }

    #[test]
    fn the_process_can_be_made_non_dumpable() {
        disable_core_dumps().unwrap();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
