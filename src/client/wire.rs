//! The HTTP/1.1 transport the client sends on, with the one check that makes the kill switch
//! absolute: every write of a request's bytes asks, under the [`Outbox`]'s barrier, whether the
//! request may still leave. A pause, a policy reload or a fence after a loss of the lead changes
//! what is in force under the same barrier; once that change returns, no write that the new
//! state forbids can start, and none that began before it is still under way. TCP accept
//! queues, DNS and TLS handshakes all come before the first write, so a request that waited in
//! any of them is checked afresh when it is about to be written.
//!
//! Its own connections (TCP, TLS through the system OpenSSL), a small pool of idle ones, hyper's
//! HTTP/1 client on each.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::Refusal;

/// A check asked at every write of a request's bytes: `Err` says why it must not leave.
pub(crate) type Permit = Arc<dyn Fn() -> Result<(), Refusal> + Send + Sync>;

/// How far an attempt has got.
const WAITING: u8 = 0;
const WRITING: u8 = 1;
const WRITTEN: u8 = 2;

/// One call on its way out (all its attempts): what it asks before each write, and how far its
/// current attempt has got.
pub(crate) struct Ticket {
    permit: Permit,
    phase: AtomicU8,
    /// The body of the current attempt was handed to the connection.
    body_taken: AtomicBool,
    /// Why a write of the current attempt was refused.
    refused: Mutex<Option<Refusal>>,
}

impl Ticket {
    fn new(permit: Permit) -> Arc<Self> {
        Arc::new(Self {
            permit,
            phase: AtomicU8::new(WAITING),
            body_taken: AtomicBool::new(false),
            refused: Mutex::new(None),
        })
    }

    /// A new attempt starts: nothing of it is written yet.
    fn restart(&self) {
        self.phase.store(WAITING, Ordering::SeqCst);
        self.body_taken.store(false, Ordering::SeqCst);
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether any byte of the current attempt went out.
    pub(crate) fn started(&self) -> bool {
        self.phase.load(Ordering::SeqCst) != WAITING
    }

    /// Why a write of the current attempt was refused, if one was.
    fn refusal(&self) -> Option<Refusal> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a change of state found among the calls on their way out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Calls the new state forbids that had not written their current attempt: none of them
    /// will.
    pub stopped: usize,
    /// Requests the new state forbids that were already written, awaiting their answers: they
    /// left before the change.
    pub already_written: usize,
}

/// Every request on its way out: the barrier that orders each write of a request's bytes
/// against each change of what may be sent, and the calls not yet answered (to say what a
/// change stopped).
#[derive(Default)]
pub struct Outbox {
    barrier: RwLock<()>,
    calls: Mutex<Vec<Weak<Ticket>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// Runs `change` (which changes what may be sent) with no write of a request under way,
    /// and returns with none of the writes it forbids able to start: what it stopped, and what
    /// had left already.
    pub(crate) fn change(&self, change: impl FnOnce()) -> Stopped {
        let _no_write = self.barrier.write().unwrap_or_else(|p| p.into_inner());
        // Held from before the change: a call the change wakes and stops still counts.
        let calls: Vec<Arc<Ticket>> = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            calls.retain(|t| t.strong_count() > 0);
            calls.iter().filter_map(Weak::upgrade).collect()
        };
        change();
        let mut out = Stopped::default();
        for t in calls.iter().filter(|t| (t.permit)().is_err()) {
            if t.phase.load(Ordering::SeqCst) == WRITTEN {
                out.already_written += 1;
            } else {
                out.stopped += 1;
            }
        }
        out
    }

    /// A call on its way out, asking `permit` at every write; it counts until dropped.
    pub(crate) fn ticket(&self, permit: Permit) -> Arc<Ticket> {
        let t = Ticket::new(permit);
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.retain(|t| t.strong_count() > 0);
        calls.push(Arc::downgrade(&t));
        t
    }

    /// Runs one write under the barrier: a change of state cannot happen while it runs.
    fn write<R>(&self, f: impl FnOnce() -> R) -> R {
        let _writing = self.barrier.read().unwrap_or_else(|p| p.into_inner());
        f()
    }
}

/// A plain or a TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(SslStream<TcpStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Which call a connection is writing for, if any.
struct Arm {
    outbox: Arc<Outbox>,
    ticket: Mutex<Option<Arc<Ticket>>>,
}

impl Arm {
    fn current(&self) -> Option<Arc<Ticket>> {
        self.ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, ticket: Option<Arc<Ticket>>) {
        *self.ticket.lock().unwrap_or_else(|p| p.into_inner()) = ticket;
    }
}

/// A connection whose every write asks the armed call's permit under the outbox's barrier; a
/// write with no call armed, or one the permit refuses, fails, and the connection with it.
struct GatedIo {
    inner: Stream,
    arm: Arc<Arm>,
}

impl GatedIo {
    fn gated<T>(
        &mut self,
        write: impl FnOnce(Pin<&mut Stream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(ticket) = self.arm.current() else {
            return Poll::Ready(Err(io::Error::other(
                "no request is armed on this connection",
            )));
        };
        let inner = &mut self.inner;
        self.arm.outbox.write(|| {
            if let Err(refusal) = (ticket.permit)() {
                let message = refusal.to_string();
                *ticket.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
                return Poll::Ready(Err(io::Error::other(message)));
            }
            let _ =
                ticket
                    .phase
                    .compare_exchange(WAITING, WRITING, Ordering::SeqCst, Ordering::SeqCst);
            write(Pin::new(inner))
        })
    }
}

impl AsyncRead for GatedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().gated(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().gated(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed
            && let Some(t) = this.arm.current()
            && t.body_taken.load(Ordering::SeqCst)
            && t.phase.load(Ordering::SeqCst) == WRITING
        {
            // hyper flushes after the whole request (head and body) is in its buffer.
            t.phase.store(WRITTEN, Ordering::SeqCst);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body handed over whole, telling its ticket when the connection took it.
struct Outgoing {
    data: Option<Bytes>,
    len: u64,
    ticket: Arc<Ticket>,
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        Poll::Ready(this.data.take().map(|d| {
            this.ticket.body_taken.store(true, Ordering::SeqCst);
            Ok(Frame::data(d))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.data.is_some() { self.len } else { 0 })
    }
}

/// An idle connection kept for the next request.
struct Idle {
    sender: http1::SendRequest<Outgoing>,
    arm: Arc<Arm>,
    since: Instant,
}

/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Most idle connections kept.
const MAX_IDLE: usize = 16;

/// Where requests go: scheme, host and port of the base URL.
#[derive(Debug, Clone)]
struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

/// Why an attempt got no answer.
pub(crate) enum WireError {
    /// The permit refused a write: nothing of the request, or only part of it (which no server
    /// can act on), went out.
    Stopped(Refusal),
    /// Connecting failed.
    Connect(String),
    /// The connection failed once the request was (being) sent.
    Transport(String),
}

/// An answer: status, headers, and the body (at most the cap).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Result<Vec<u8>, BodyError>,
}

/// Why an answer's body could not be read.
pub(crate) enum BodyError {
    /// Larger than the cap.
    TooLarge,
    /// The connection failed while reading it.
    Transport(String),
}

/// The transport: where it connects, TLS, the idle connections, and the outbox.
pub(crate) struct Wire {
    origin: Origin,
    tls: Option<SslConnector>,
    idle: Mutex<Vec<Idle>>,
    outbox: Arc<Outbox>,
    connect_timeout: Duration,
    user_agent: &'static str,
}

impl Wire {
    /// A transport to `base`'s scheme, host and port; TLS verified against the system's trust
    /// store (OpenSSL's default paths, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured) and the PEM
    /// certificates of `ca_file`, if given.
    pub(crate) fn new(
        base: &reqwest::Url,
        connect_timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let tls = match base.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let host = base
            .host_str()
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = base.port_or_known_default().ok_or("the URL has no port")?;
        let tls = if tls {
            let mut b = SslConnector::builder(SslMethod::tls_client())
                .map_err(|e| format!("TLS set-up: {e}"))?;
            if let Some(f) = ca_file {
                b.load_verify_locations(Some(f), None)
                    .map_err(|e| format!("cannot load the certificates of {}: {e}", f.display()))?;
            }
            Some(b.build())
        } else {
            None
        };
        Ok(Self {
            origin: Origin {
                tls: tls.is_some(),
                host,
                port,
            },
            tls,
            idle: Mutex::new(Vec::new()),
            outbox: Arc::new(Outbox::default()),
            connect_timeout,
            user_agent: concat!("cosigner/", env!("CARGO_PKG_VERSION")),
        })
    }
}

impl Wire {
    /// The outbox every write of this transport goes through.
    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// `http://host:port/path`, port included even when it is the scheme's default: what an
    /// error names.
    pub(crate) fn url_of(&self, path: &str) -> String {
        let o = &self.origin;
        let host = if o.host.contains(':') {
            format!("[{}]", o.host)
        } else {
            o.host.clone()
        };
        format!(
            "{}://{host}:{}{path}",
            if o.tls { "https" } else { "http" },
            o.port
        )
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    fn host_header(&self) -> String {
        let o = &self.origin;
        let host = if o.host.contains(':') {
            format!("[{}]", o.host)
        } else {
            o.host.clone()
        };
        let default = if o.tls { 443 } else { 80 };
        if o.port == default {
            host
        } else {
            format!("{host}:{}", o.port)
        }
    }

    /// An idle connection ready for a request, if one is kept.
    async fn checkout(&self) -> Option<(http1::SendRequest<Outgoing>, Arc<Arm>)> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if idle.since.elapsed() >= IDLE_FOR || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once unless the server closed it meanwhile.
            match tokio::time::timeout(Duration::from_millis(100), sender.ready()).await {
                Ok(Ok(())) => return Some((sender, idle.arm)),
                _ => continue,
            }
        }
    }

    /// Keeps a connection whose answer was read whole, for the next request.
    fn check_in(&self, sender: http1::SendRequest<Outgoing>, arm: Arc<Arm>) {
        arm.set(None);
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|i| i.since.elapsed() < IDLE_FOR && !i.sender.is_closed());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                arm,
                since: Instant::now(),
            });
        }
    }

    /// A new connection (DNS, TCP, TLS within the connect timeout), its writes gated by `arm`.
    async fn connect(&self, arm: Arc<Arm>) -> Result<http1::SendRequest<Outgoing>, WireError> {
        let o = &self.origin;
        let stream = tokio::time::timeout(self.connect_timeout, async {
            let mut last = None;
            let mut tcp = None;
            for addr in tokio::net::lookup_host((o.host.as_str(), o.port)).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        tcp = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let tcp = match tcp {
                Some(t) => t,
                None => {
                    return Err(last.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "the host name has no address")
                    }));
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &self.tls else {
                return Ok(Stream::Plain(tcp));
            };
            let ssl = tls
                .configure()
                .and_then(|c| c.into_ssl(&o.host))
                .map_err(io::Error::other)?;
            let mut s = SslStream::new(ssl, tcp).map_err(io::Error::other)?;
            Pin::new(&mut s).connect().await.map_err(|e| {
                io::Error::other(format!(
                    "TLS handshake: {}",
                    e.ssl_error()
                        .map_or_else(|| e.to_string(), ToString::to_string)
                ))
            })?;
            Ok(Stream::Tls(s))
        })
        .await
        .map_err(|_| {
            WireError::Connect(format!(
                "no connection within {} s",
                self.connect_timeout.as_secs_f32()
            ))
        })?
        .map_err(|e| WireError::Connect(e.to_string()))?;
        let (sender, conn) = http1::handshake(TokioIo::new(GatedIo { inner: stream, arm }))
            .await
            .map_err(|e| WireError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One attempt of `ticket`'s call: `POST path` with `headers` and `body`, each write of it
    /// asked of the ticket's permit; the answer's body read up to `cap` bytes.
    pub(crate) async fn post(
        &self,
        ticket: &Arc<Ticket>,
        path: &str,
        headers: hyper::HeaderMap,
        body: String,
        cap: usize,
    ) -> Result<Answer, WireError> {
        ticket.restart();
        let (mut sender, arm) = match self.checkout().await {
            Some(c) => c,
            None => {
                let arm = Arc::new(Arm {
                    outbox: self.outbox.clone(),
                    ticket: Mutex::new(None),
                });
                (self.connect(arm.clone()).await?, arm)
            }
        };
        let len = body.len() as u64;
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, self.host_header())
            .header(hyper::header::USER_AGENT, self.user_agent)
            .body(Outgoing {
                data: Some(Bytes::from(body)),
                len,
                ticket: ticket.clone(),
            })
            .map_err(|e| WireError::Transport(e.to_string()))?;
        req.headers_mut().extend(headers);
        arm.set(Some(ticket.clone()));
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                arm.set(None);
                return Err(match ticket.refusal() {
                    Some(r) => WireError::Stopped(r),
                    None => WireError::Transport(error_chain(&e)),
                });
            }
        };
        let status = resp.status().as_u16();
        let (parts, mut incoming) = resp.into_parts();
        let body = read_capped(&mut incoming, &parts.headers, cap).await;
        if body.is_ok() {
            self.check_in(sender, arm);
        } else {
            arm.set(None);
        }
        Ok(Answer {
            status,
            headers: parts.headers,
            body,
        })
    }
}

/// An error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Reads an answer's body, refusing more than `cap` bytes.
async fn read_capped(
    body: &mut hyper::body::Incoming,
    headers: &hyper::HeaderMap,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return Ok(buf),
            Some(Err(e)) => return Err(BodyError::Transport(error_chain(&e))),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if buf.len() + data.len() > cap {
                        return Err(BodyError::TooLarge);
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}
