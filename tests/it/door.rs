//! A door in front of the sandbox that the kill-switch tests control: it can stop accepting
//! connections (with a listen queue of one, so that a client's connect stalls in SYN
//! retransmits), hold TLS handshakes, and it timestamps every request that reaches it with the
//! kernel's receive time of its bytes (SO_TIMESTAMPING), not with the moment a thread got round
//! to reading them. Requests are relayed to the sandbox one at a time per connection, and its
//! answers back.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, TimestampingFlag, recvmsg, setsockopt, sockopt,
};
use openssl::ssl::{SslAcceptor, SslMethod, SslStream};

/// A request as it reached the door.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// When the kernel received its last byte.
    pub at: SystemTime,
    /// `POST /api/transaction/approve`, say: the path.
    pub path: String,
    /// Its body.
    pub body: String,
}

impl Arrival {
    /// The body as JSON (null when it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A switch threads wait on.
#[derive(Default)]
struct Latch {
    closed: Mutex<bool>,
    changed: Condvar,
}

impl Latch {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.changed.notify_all();
    }

    fn wait_open(&self, stop: &AtomicBool) {
        let mut closed = self.closed.lock().unwrap();
        while *closed && !stop.load(Ordering::SeqCst) {
            closed = self
                .changed
                .wait_timeout(closed, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

struct Shared {
    accepts: Latch,
    handshakes: Latch,
    /// Connections accepted so far.
    accepted: std::sync::atomic::AtomicUsize,
    /// Stop accepting (and fill the queue) once this many were accepted.
    stall_after: Mutex<Option<usize>>,
    /// Hold the handshakes of connections accepted after this many.
    hold_tls_after: Mutex<Option<usize>>,
    /// Close each connection once its answer is sent: every request needs a new connection.
    close_after_answer: AtomicBool,
    /// Connections made to fill the listen queue.
    fillers: Mutex<Vec<TcpStream>>,
    /// The local ports of the fillers.
    known_ports: Mutex<HashSet<u16>>,
    /// The listen queue was filled (by this many fillers; two fill it).
    stalled: Mutex<Option<usize>>,
    addr: Mutex<Option<SocketAddr>>,
    arrivals: Mutex<Vec<Arrival>>,
    upstream: SocketAddr,
    stop: AtomicBool,
    tls: Option<SslAcceptor>,
    /// Handshakes being held now.
    held: std::sync::atomic::AtomicUsize,
}

/// Stops accepting and fills the listen queue (two connections fill a queue of one).
fn stall(shared: &Shared) {
    shared.accepts.set(true);
    let Some(addr) = *shared.addr.lock().unwrap() else {
        return;
    };
    let mut fillers = shared.fillers.lock().unwrap();
    let mut made = 0;
    for _ in 0..2 {
        // Generous: on a loaded machine the loopback handshake of a connect that has room can
        // wait for the kernel's softirq thread.
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            if let Ok(local) = s.local_addr() {
                shared.known_ports.lock().unwrap().insert(local.port());
            }
            fillers.push(s);
            made += 1;
        }
    }
    // Set once the fillers are connected: from now on, a connect to the door in SYN_SENT from
    // a port not known here is a client's, waiting for room in the queue.
    *shared.stalled.lock().unwrap() = Some(made);
}

/// The door; stops (and lets its threads end) when dropped.
pub(crate) struct Door {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub url: String,
    /// For a TLS door: the PEM file of the authority its certificate comes from.
    pub ca_file: Option<PathBuf>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Door {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.accepts.set(false);
        self.shared.handshakes.set(false);
        // Unblocks the accepting thread.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

impl Door {
    /// A door to the sandbox at `upstream` (`http://127.0.0.1:PORT`), plain or TLS.
    pub(crate) async fn open(upstream: &str, tls: bool) -> Door {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        // A listen queue of one: with accepts held and it full, a client's SYN is dropped and
        // its connect waits for a retransmit.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap().into_std().unwrap();
        listener.set_nonblocking(false).unwrap();
        let addr = listener.local_addr().unwrap();
        let (acceptor, ca_file, dir) = if tls {
            let dir = tempfile::tempdir().unwrap();
            let (acceptor, ca) = tls_acceptor(dir.path());
            (Some(acceptor), Some(ca), Some(dir))
        } else {
            (None, None, None)
        };
        let shared = Arc::new(Shared {
            accepts: Latch::default(),
            handshakes: Latch::default(),
            accepted: std::sync::atomic::AtomicUsize::new(0),
            stall_after: Mutex::new(None),
            hold_tls_after: Mutex::new(None),
            close_after_answer: AtomicBool::new(false),
            fillers: Mutex::new(Vec::new()),
            known_ports: Mutex::new(HashSet::new()),
            stalled: Mutex::new(None),
            addr: Mutex::new(Some(addr)),
            arrivals: Mutex::new(Vec::new()),
            upstream,
            stop: AtomicBool::new(false),
            tls: acceptor,
            held: std::sync::atomic::AtomicUsize::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, s));
        Door {
            url: format!("{}://{addr}", if tls { "https" } else { "http" }),
            ca_file,
            addr,
            shared,
            _dir: dir,
        }
    }

    /// Every request on a connection of its own: the door closes each once it has answered.
    pub(crate) fn close_after_answer(&self) {
        self.shared.close_after_answer.store(true, Ordering::SeqCst);
    }

    /// Once `n` more connections are accepted, stops accepting and fills the listen queue, so
    /// that the next connect stalls (its SYN is dropped until a retransmit finds room).
    pub(crate) fn stall_connects_after(&self, n: usize) {
        let at = self.shared.accepted.load(Ordering::SeqCst) + n;
        *self.shared.stall_after.lock().unwrap() = Some(at);
        if n == 0 {
            stall(&self.shared);
        }
    }

    /// Lets the queue's fillers in, waits until they are accepted, and then stalls again once
    /// `n` more connections are accepted: for a client that never got to its stalled connect
    /// (a test re-runs its cycle).
    pub(crate) fn stall_connects_again_after(&self, n: usize) {
        let queued = self.shared.stalled.lock().unwrap().take().unwrap_or(0);
        let target = self.shared.accepted.load(Ordering::SeqCst) + queued;
        self.open_connects();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.shared.accepted.load(Ordering::SeqCst) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue's fillers were not accepted within 30 s; {}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stall_connects_after(n);
    }

    /// Accepts again (the queued fillers first).
    pub(crate) fn open_connects(&self) {
        *self.shared.stall_after.lock().unwrap() = None;
        self.shared.accepts.set(false);
    }

    /// Holds the TLS handshake of every connection accepted after `n` more.
    pub(crate) fn hold_handshakes_after(&self, n: usize) {
        let at = self.shared.accepted.load(Ordering::SeqCst) + n;
        self.shared.handshakes.set(true);
        *self.shared.hold_tls_after.lock().unwrap() = Some(at);
    }

    /// A client's connect to the door is waiting for room in the filled listen queue: the queue
    /// was filled (its fillers connected; every connection accepted before was connected
    /// too), and the kernel's table of TCP sockets holds a connect to the door in SYN_SENT from
    /// a port that is not a filler's. (A connect in SYN_SENT alone is not enough: every
    /// connect, the fillers' and the listing's included, passes through SYN_SENT, for a while
    /// on a loaded machine.)
    pub(crate) fn a_client_connect_is_waiting(&self) -> bool {
        self.shared.stalled.lock().unwrap().is_some() && !self.waiting_ports().is_empty()
    }

    /// The local ports of the connects to the door in SYN_SENT that are not fillers.
    fn waiting_ports(&self) -> Vec<u16> {
        let known = self.shared.known_ports.lock().unwrap().clone();
        syn_sent_to(self.addr.port())
            .into_iter()
            .filter(|p| !known.contains(p))
            .collect()
    }

    /// What the door has seen, for a failing test's message: accepted connections, the queue's
    /// fillers, connects waiting, handshakes held, and every arrival.
    pub(crate) fn describe(&self) -> String {
        format!(
            "door {}: {} connection(s) accepted; listen queue filled by {:?} filler(s) (ports \
             {:?}); connects to it in SYN_SENT from ports {:?}; {} handshake(s) held; arrivals \
             {:?}",
            self.addr,
            self.shared.accepted.load(Ordering::SeqCst),
            *self.shared.stalled.lock().unwrap(),
            self.shared.known_ports.lock().unwrap(),
            syn_sent_to(self.addr.port()),
            self.shared.held.load(Ordering::SeqCst),
            self.arrivals()
                .iter()
                .map(|a| format!("{} {}", a.path, a.body))
                .collect::<Vec<_>>(),
        )
    }

    /// A TLS handshake with the door is being held.
    pub(crate) fn a_handshake_is_held(&self) -> bool {
        self.shared.held.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Lets held handshakes go on.
    pub(crate) fn open_handshakes(&self) {
        self.shared.handshakes.set(false);
    }

    /// Every request that reached the door, in order of arrival.
    pub(crate) fn arrivals(&self) -> Vec<Arrival> {
        let mut a = self.shared.arrivals.lock().unwrap().clone();
        a.sort_by_key(|a| a.at);
        a
    }
}

/// The local ports of the sockets in SYN_SENT to `port` on this host (IPv4), from the kernel's
/// table of TCP sockets.
fn syn_sent_to(port: u16) -> Vec<u16> {
    let remote = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Local address is field 1, remote field 2, state field 3: 02 is SYN_SENT.
            (f.len() > 3 && f[2].ends_with(&remote) && f[3] == "02")
                .then(|| u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok())?
        })
        .collect()
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        shared.accepts.wait_open(&shared.stop);
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let index = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        if *shared.stall_after.lock().unwrap() == Some(index) {
            stall(&shared);
        }
        let hold_tls = shared
            .hold_tls_after
            .lock()
            .unwrap()
            .is_some_and(|after| index > after);
        let s = shared.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &s, hold_tls);
        });
    }
}

/// A TCP connection read with `recvmsg`, keeping the kernel's receive time of the latest bytes.
#[derive(Debug)]
struct Stamped {
    stream: TcpStream,
    latest: Option<SystemTime>,
}

impl Read for Stamped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!(nix::sys::socket::Timestamps);
        let msg = recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampsns(ts) = c {
                    let t = SystemTime::UNIX_EPOCH
                        + Duration::new(
                            u64::try_from(ts.system.tv_sec()).unwrap_or(0),
                            u32::try_from(ts.system.tv_nsec()).unwrap_or(0),
                        );
                    self.latest = Some(t);
                }
            }
        }
        Ok(msg.bytes)
    }
}

impl Write for Stamped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// The connection, plain or TLS, and when its latest bytes arrived.
enum Conn {
    Plain(Stamped),
    Tls(Box<SslStream<Stamped>>),
}

impl Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(buf),
            Conn::Tls(s) => s.write_all(buf),
        }
    }

    fn latest(&self) -> Option<SystemTime> {
        match self {
            Conn::Plain(s) => s.latest,
            Conn::Tls(s) => s.get_ref().latest,
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared, hold_tls: bool) -> std::io::Result<()> {
    setsockopt(
        &stream,
        sockopt::Timestamping,
        &(TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE),
    )
    .map_err(std::io::Error::from)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let stamped = Stamped {
        stream,
        latest: None,
    };
    let mut conn = match &shared.tls {
        None => Conn::Plain(stamped),
        Some(acceptor) => {
            if hold_tls {
                shared.held.fetch_add(1, Ordering::SeqCst);
                shared.handshakes.wait_open(&shared.stop);
                shared.held.fetch_sub(1, Ordering::SeqCst);
            }
            stamped
                .stream
                .set_read_timeout(Some(Duration::from_secs(10)))?;
            let s = acceptor
                .accept(stamped)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            s.get_ref()
                .stream
                .set_read_timeout(Some(Duration::from_millis(200)))?;
            Conn::Tls(Box::new(s))
        }
    };
    let mut upstream = TcpStream::connect(shared.upstream)?;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // A whole request in hand: note it, relay it, answer.
        if let Some((len, path, body)) = whole_request(&pending) {
            let at = conn.latest().unwrap_or_else(SystemTime::now);
            shared
                .arrivals
                .lock()
                .unwrap()
                .push(Arrival { at, path, body });
            upstream.write_all(&pending[..len])?;
            let answer = read_answer(&mut upstream)?;
            pending.drain(..len);
            conn.write_all(&answer)?;
            if shared.close_after_answer.load(Ordering::SeqCst) {
                return Ok(());
            }
            continue;
        }
        match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The length, path and body of the whole HTTP/1.1 request at the start of `buf`, if it is all
/// there.
fn whole_request(buf: &[u8]) -> Option<(usize, String, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let path = head.split(' ').nth(1)?.to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= end + len).then(|| {
        (
            end + len,
            path,
            String::from_utf8_lossy(&buf[end..end + len]).into_owned(),
        )
    })
}

/// One whole answer from the sandbox (it always sends Content-Length).
fn read_answer(upstream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                got.truncate(end + 4 + len);
                return Ok(got);
            }
        }
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("the sandbox closed the connection"));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// A TLS acceptor with a certificate for 127.0.0.1 from a fresh authority, whose PEM is
/// written into `dir`; returns the acceptor and that file.
fn tls_acceptor(dir: &std::path::Path) -> (SslAcceptor, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509, X509NameBuilder};
    let key = |bits| PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
    let name = |cn: &str| {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    };
    let ca_key = key(2048);
    let mut ca = X509::builder().unwrap();
    ca.set_version(2).unwrap();
    ca.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    ca.set_subject_name(&name("door test authority")).unwrap();
    ca.set_issuer_name(&name("door test authority")).unwrap();
    ca.set_pubkey(&ca_key).unwrap();
    ca.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    ca.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = ca.build();
    let leaf_key = key(2048);
    let mut leaf = X509::builder().unwrap();
    leaf.set_version(2).unwrap();
    leaf.set_serial_number(&BigNum::from_u32(2).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    leaf.set_subject_name(&name("127.0.0.1")).unwrap();
    leaf.set_issuer_name(ca.subject_name()).unwrap();
    leaf.set_pubkey(&leaf_key).unwrap();
    leaf.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    leaf.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&leaf.x509v3_context(Some(&ca), None))
        .unwrap();
    leaf.append_extension(san).unwrap();
    leaf.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let leaf = leaf.build();
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    acceptor.set_private_key(&leaf_key).unwrap();
    acceptor.set_certificate(&leaf).unwrap();
    acceptor.check_private_key().unwrap();
    let ca_file = dir.join("door-ca.pem");
    std::fs::write(&ca_file, ca.to_pem().unwrap()).unwrap();
    (acceptor.build(), ca_file)
}
