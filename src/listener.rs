//! The daemon's own accept loops, for `http.listen` and the control socket: a cap on open
//! connections (when it is reached, the oldest idle connection is closed to make room, so that a
//! new request, an operator's pause among them, always gets in), a header-read timeout (a
//! connection that sends no complete request head within it is closed), and a graceful
//! shutdown (requests being answered finish; idle connections close).
//!
//! `axum::serve` has neither bound: 1,100 idle TCP connections once held every descriptor of
//! the process, and `POST /v1/pause` could not get in while approvals went on (issue 19).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// Default `http.max_connections`: far below the unit's `LimitNOFILE`, far above what an
/// operator, a scraper and a health check need.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Smallest `http.max_connections`: a scrape and an operator's call at once.
pub(crate) const MIN_MAX_CONNECTIONS: usize = 2;
/// Largest `http.max_connections`: well under the 1024 descriptors of a default soft limit, so
/// that the cap, not the descriptor table, is what a flood meets.
pub(crate) const MAX_MAX_CONNECTIONS: usize = 768;
/// Default `http.header_read_timeout`.
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection being answered may take to finish once the daemon stops.
const DRAIN: Duration = Duration::from_secs(5);
/// How long accepting pauses after the process ran out of descriptors (the cap closed one).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// At most one warning about the cap in this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A connection that sends no complete request head within this is closed (each
    /// connection carries one request).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// One open connection, as the cap sees it.
struct Entry {
    /// Requests being answered on it.
    busy: Arc<AtomicUsize>,
    /// Cancelled to close it.
    close: CancellationToken,
}

/// What the cap counted since its last warning.
#[derive(Default)]
struct Pressure {
    closed: u64,
    refused: u64,
    warned: Option<Instant>,
}

/// The open connections of one listener, oldest first.
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Entry>,
    pressure: Pressure,
}

/// The connection table of a listener.
struct Connections {
    name: &'static str,
    limits: Limits,
    table: Mutex<Table>,
}

/// A connection admitted by the cap.
struct Admitted {
    id: u64,
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

impl Connections {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the oldest connection with no request being answered; false when every one is
    /// busy.
    fn close_oldest_idle(table: &mut Table) -> bool {
        let oldest = table
            .open
            .iter()
            .find(|(_, e)| e.busy.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match oldest.and_then(|id| table.open.remove(&id)) {
            Some(e) => {
                e.close.cancel();
                table.pressure.closed += 1;
                true
            }
            None => false,
        }
    }

    /// Makes room for a new connection (closing the oldest idle one when the cap is reached) and
    /// admits it; `None` when every open connection is being answered (it is refused).
    fn admit(&self) -> Option<Admitted> {
        let mut t = self.table();
        if t.open.len() >= self.limits.max_connections && !Self::close_oldest_idle(&mut t) {
            t.pressure.refused += 1;
            self.warn_pressure(&mut t);
            return None;
        }
        if t.pressure.closed > 0 {
            self.warn_pressure(&mut t);
        }
        let id = t.next;
        t.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        t.open.insert(
            id,
            Entry {
                busy: busy.clone(),
                close: close.clone(),
            },
        );
        Some(Admitted { id, busy, close })
    }

    /// The process ran out of descriptors: closes the oldest idle connection.
    fn out_of_descriptors(&self) {
        let mut t = self.table();
        let _ = Self::close_oldest_idle(&mut t);
        warn!(
            listener = self.name,
            open = t.open.len(),
            "out of file descriptors: closed the oldest idle connection (raise LimitNOFILE, or \
             lower http.max_connections)"
        );
    }

    fn leave(&self, id: u64) {
        self.table().open.remove(&id);
    }

    /// Says, at most every [`WARN_EVERY`], what the cap did.
    fn warn_pressure(&self, t: &mut Table) {
        let now = Instant::now();
        if t.pressure.warned.is_some_and(|w| now - w < WARN_EVERY) {
            return;
        }
        warn!(
            listener = self.name,
            max_connections = self.limits.max_connections,
            closed_idle = t.pressure.closed,
            refused = t.pressure.refused,
            "connection cap reached: the oldest idle connections are closed to make room (a \
             flood of idle connections, or too many clients)"
        );
        t.pressure = Pressure {
            warned: Some(now),
            ..Pressure::default()
        };
    }
}

/// A listener the accept loop takes connections from.
pub(crate) trait Accept: Send + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        // Small answers: no delay waiting for more to send.
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        Ok(tokio::net::UnixListener::accept(self).await?.0)
    }
}

/// Serves `router` on `listener` (named `name` in logs) within `limits` until `shutdown`; then
/// stops accepting, lets requests being answered finish (up to [`DRAIN`]) and closes idle
/// connections.
pub(crate) async fn serve<L: Accept>(
    name: &'static str,
    listener: L,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let conns = Arc::new(Connections {
        name,
        limits,
        table: Mutex::new(Table::default()),
    });
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) if is_out_of_descriptors(&e) => {
                conns.out_of_descriptors();
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
                continue;
            }
            Err(e) => {
                debug!(listener = name, error = %e, "accept failed");
                continue;
            }
        };
        let Some(admitted) = conns.admit() else {
            // Dropped: closed at once.
            continue;
        };
        let (router, conns, stop) = (router.clone(), conns.clone(), shutdown.clone());
        tracker.spawn(async move {
            let id = admitted.id;
            drive(io, router, limits, admitted, stop).await;
            conns.leave(id);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
}

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::EMFILE as i32 || code == nix::errno::Errno::ENFILE as i32
    )
}

/// Decrements a connection's busy count when a request's answer is ready (or dropped).
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection until it ends, the cap closes it, or the daemon stops.
async fn drive<I>(
    io: I,
    router: Router,
    limits: Limits,
    admitted: Admitted,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let busy = admitted.busy.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        busy.fetch_add(1, Ordering::SeqCst);
        let guard = Busy(busy.clone());
        let router = router.clone();
        async move {
            let answer = router.oneshot(req.map(axum::body::Body::new)).await;
            drop(guard);
            answer
        }
    });
    let mut builder = http1::Builder::new();
    // One request per connection (answered with `Connection: close`). hyper starts the
    // header-read timer whenever it waits for a request head, between requests on a kept-alive
    // connection too (hyper 1.x, `poll_read_head`), so an idle kept-alive connection would be
    // closed by the server while a client may be sending on it: a client whose pooled
    // connection outlived the timeout (or a daemon resumed after SIGSTOP) saw its pause fail
    // with an incomplete message. Without keep-alive a client never reuses a connection, and
    // no connection sits idle between requests holding a slot of the cap.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "connection ended");
            }
            return;
        }
        () = admitted.close.cancelled() => {}
        () = shutdown.cancelled() => {}
    }
    // No request being answered: dropping the connection closes it now (hyper's graceful
    // shutdown would wait for a head that may never come).
    if admitted.busy.load(Ordering::SeqCst) == 0 {
        return;
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
}

/// Why the control socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on it.
    #[error("another process answers on {}: is a daemon already running?", .0.display())]
    InUse(std::path::PathBuf),
    /// Something other than a socket is there.
    #[error("{} exists and is not a socket; not removing it", .0.display())]
    NotASocket(std::path::PathBuf),
    /// The socket cannot be bound or given its mode.
    #[error("cannot bind {}: {error}", .path.display())]
    Bind {
        /// The path.
        path: std::path::PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

/// Binds the control socket at `path`, mode 0660 (its owner and group may connect: the file's
/// permissions are the control socket's authentication). A socket left by a dead process is
/// removed first; one another process answers on is not.
pub(crate) fn bind_control_socket(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        error: source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_owned())),
                Err(_) => {
                    // Nobody answers: a dead process's socket.
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
            }
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    // Created with the umask's mode (0600 under the unit's UMask=0077): never wider than 0660
    // meanwhile, as only write permission lets a process connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
        let _ = std::fs::remove_file(path);
        bind_err(e)
    })?;
    Ok(listener)
}
