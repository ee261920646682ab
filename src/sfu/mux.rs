//! Single-port mode: every connection's ICE, DTLS and SRTP traffic goes through one UDP socket
//! per listen address, as firewalls and containers want it.
//!
//! webrtc-rs 0.21 has no UDP mux: its driver binds a socket per connection and hands it to the
//! connection's [`Runtime`] to wrap. That hook is ours. [`MuxRuntime`] is the tokio runtime
//! except for `wrap_udp_socket`, which drops the socket the driver bound and returns a
//! [`MuxedSocket`]: a connection's view of the shared socket. The driver keeps the address it
//! bound as the socket's identity (its host candidate), so the SDP the server hands out is
//! rewritten to name the shared port instead (see `peer::Candidates`).
//!
//! Demultiplexing is by ICE username, as in every muxing SFU: each connection gets a unique
//! local ufrag and password. One task per shared socket owns the routing tables (no lock on the
//! packet path) and routes each datagram by what it is (RFC 7983's first byte):
//!
//! - a STUN binding request goes to the connection its USERNAME names (`<our ufrag>:<theirs>`),
//!   always, whether or not its source address is known, and only if its MESSAGE-INTEGRITY is
//!   right for that connection's password: a client may check several of our connections from
//!   one socket, and nobody without the password can steer an address. The request's source
//!   address then belongs to that connection (the one most recently checked from it);
//! - anything else (DTLS, SRTP/SRTCP, other STUN) goes to the connection its source address
//!   belongs to, and is dropped from an address no connection has. So one remote address (one
//!   5-tuple) carries DTLS and media for one connection at a time: a client that shares one
//!   socket between several of our connections must nominate a different socket for each,
//!   as browsers do (one ICE transport per connection);
//! - anything else (an unknown first byte, an empty datagram) is dropped.
//!
//! The address table is bounded: at most [`ADDRESSES_PER_CONNECTION`] per connection (the
//! oldest goes first) and [`ADDRESSES_TOTAL`] in all, and a connection's addresses go with it.
//! A panic or a receive error does not end the task: it logs (at most one line per
//! [`LOG_INTERVAL`] and kind, with the count of those it kept quiet), backs off when the trouble
//! persists, and goes on. Nothing logs per datagram. Received datagrams are carved from a shared
//! buffer, not allocated one by one; a datagram nobody gets leaves the buffer as it was, and one
//! for a connection that lags (more than [`CARVED_PER_CONNECTION`] queued) is copied out, so a
//! slow connection cannot keep a block alive per queued datagram.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use rtc::crypto::{HmacAlgorithm, Mac, RTCCryptoProvider};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

use super::error::{SfuError, SfuResult};

/// Datagrams waiting for a connection's driver; beyond this they are dropped, as a kernel
/// socket buffer would.
const QUEUE_PER_CONNECTION: usize = 1024;
/// Carved into received datagrams; a new block is allocated when one is used up.
const RECEIVE_BLOCK: usize = 256 * 1024;
const MAX_DATAGRAM: usize = 2048;
/// Datagrams of one connection's queue that may be carved from the receive blocks (each keeps
/// its whole block alive while queued); past them, a datagram is copied out, so a connection
/// whose driver lags holds at most this many blocks (4 MiB), not one per queued datagram.
const CARVED_PER_CONNECTION: usize = 16;
/// Remote addresses one connection is reachable from. A client checks from one address per
/// candidate of its own (a handful); more means spoofing or a very unusual client, and the
/// address checked longest ago is forgotten.
pub const ADDRESSES_PER_CONNECTION: usize = 8;
/// Remote addresses of all connections of one shared socket; past it the oldest is forgotten.
pub const ADDRESSES_TOTAL: usize = 65_536;
/// At most one log line per kind of trouble (receive errors, panics) per this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Consecutive failures taken without a pause; after them the pause doubles from 1 ms ...
const FAILURES_BEFORE_BACKOFF: u32 = 4;
/// ... up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[doc(hidden)] pub struct Datagram {
    from: SocketAddr,
    data: Bytes,
}

enum Control {
    Register { connection: u64, ufrag: String, integrity: Box<dyn Mac>, queue: mpsc::Sender<Datagram> },
    Unregister { connection: u64 },
    /// What the routing task holds, for tests.
    #[cfg(test)]
    Inspect(tokio::sync::oneshot::Sender<Inspection>),
    /// Panics inside the routing loop, for tests of its supervision.
    #[cfg(test)]
    Panic,
    /// Takes the next `n` datagrams received as receive errors, for tests of the backoff.
    #[cfg(test)]
    FailReceives(u32),
}

/// One shared socket and the control channel of the task that routes what it receives.
struct SharedSocket {
    io: Arc<tokio::net::UdpSocket>,
    local: SocketAddr,
    control: mpsc::UnboundedSender<Control>,
}

/// The shared sockets of a server in single-port mode, one per listen address.
pub struct UdpMux {
    sockets: Vec<SharedSocket>,
    next_connection: AtomicU64,
    port: u16,
    /// Keys the check of binding requests' MESSAGE-INTEGRITY (HMAC-SHA1).
    crypto: Arc<dyn RTCCryptoProvider>,
}

impl UdpMux {
    /// Binds `port` on every address. Must run inside the tokio runtime.
    pub fn bind(ips: &[IpAddr], port: u16) -> SfuResult<Arc<Self>> {
        let crypto = rtc::crypto::default_provider()
            .map_err(|e| SfuError::internal("a crypto provider for the single UDP port", e))?;
        let mut sockets = Vec::with_capacity(ips.len());
        for ip in ips {
            let addr = SocketAddr::new(*ip, port);
            let std_socket = std::net::UdpSocket::bind(addr)
                .map_err(|e| SfuError::ResourceExhausted(format!("cannot bind the single UDP port {addr}: {e}")))?;
            std_socket
                .set_nonblocking(true)
                .and_then(|_| std_socket.local_addr())
                .map_err(|e| SfuError::internal("configuring the single UDP port", e))?;
            let io = Arc::new(
                tokio::net::UdpSocket::from_std(std_socket)
                    .map_err(|e| SfuError::internal("registering the single UDP port", e))?,
            );
            let local = io.local_addr().map_err(|e| SfuError::internal("reading the single UDP port", e))?;
            let (control, control_rx) = mpsc::unbounded_channel();
            tokio::spawn(supervise(Router::new(io.clone(), local, control_rx)));
            sockets.push(SharedSocket { io, local, control });
        }
        let port = sockets.first().map_or(port, |s| s.local.port());
        Ok(Arc::new(Self { sockets, next_connection: AtomicU64::new(1), port, crypto }))
    }

    /// The shared port (the one asked for, or the one the OS chose for 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A runtime for one connection whose ICE credentials are `ufrag` and `pwd`.
    pub fn runtime_for(self: &Arc<Self>, ufrag: String, pwd: String) -> Arc<dyn Runtime> {
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        Arc::new(MuxRuntime { mux: self.clone(), ufrag, pwd, connection })
    }

    fn socket_for(&self, ip: IpAddr) -> Option<&SharedSocket> {
        self.sockets
            .iter()
            .find(|s| s.local.ip() == ip)
            .or_else(|| self.sockets.iter().find(|s| s.local.ip().is_unspecified()))
    }

    /// What the routing task of the socket on `ip` holds (after every message sent before).
    #[cfg(test)]
    async fn inspect(&self, ip: IpAddr) -> Inspection {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.socket_for(ip).unwrap().control.send(Control::Inspect(tx)).ok().unwrap();
        rx.await.unwrap()
    }

    #[cfg(test)]
    fn control(&self, ip: IpAddr, command: Control) {
        self.socket_for(ip).unwrap().control.send(command).ok().unwrap();
    }
}

impl Drop for UdpMux {
    fn drop(&mut self) {
        // Closing the control channels ends the routing tasks (once every connection's view,
        // which holds a sender too, is gone), which drop the sockets.
        self.sockets.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// What a datagram is

pub use crate::engine::stun::{is_binding_request, parse_binding_request, BindingRequest};
#[cfg(test)]
use crate::engine::stun::{MAGIC_COOKIE, MESSAGE_INTEGRITY, USERNAME};

// ---------------------------------------------------------------------------------------------
// The routing tables

struct Connection {
    ufrag: String,
    queue: mpsc::Sender<Datagram>,
    /// HMAC-SHA1 keyed with the connection's ICE password.
    integrity: Box<dyn Mac>,
    /// The remote addresses routed to this connection, the one checked longest ago first.
    addresses: VecDeque<SocketAddr>,
}

/// Which connection gets what: owned by one routing task, never shared.
#[doc(hidden)] pub struct Routes {
    per_connection: usize,
    total: usize,
    by_ufrag: HashMap<String, u64>,
    connections: HashMap<u64, Connection>,
    /// Remote address to the connection most recently checked from it, and when (a stamp).
    by_address: HashMap<SocketAddr, (u64, u64)>,
    /// Addresses in the order they were last learned; an entry whose stamp is no longer the
    /// address's (learned again since, or forgotten) is stale and skipped.
    learned: VecDeque<(SocketAddr, u64)>,
    stamp: u64,
}

impl Routes {
    pub fn new(per_connection: usize, total: usize) -> Self {
        Self {
            per_connection,
            total,
            by_ufrag: HashMap::new(),
            connections: HashMap::new(),
            by_address: HashMap::new(),
            learned: VecDeque::new(),
            stamp: 0,
        }
    }

    pub fn register(&mut self, connection: u64, ufrag: String, integrity: Box<dyn Mac>, queue: mpsc::Sender<Datagram>) {
        self.by_ufrag.insert(ufrag.clone(), connection);
        let addresses = self.connections.remove(&connection).map(|c| c.addresses).unwrap_or_default();
        self.connections.insert(connection, Connection { ufrag, queue, integrity, addresses });
    }

    /// Forgets `connection`: its ufrag and every address routed to it.
    pub fn unregister(&mut self, connection: u64) {
        let Some(gone) = self.connections.remove(&connection) else { return };
        for address in gone.addresses {
            if matches!(self.by_address.get(&address), Some(&(c, _)) if c == connection) {
                self.by_address.remove(&address);
            }
        }
        if self.by_ufrag.get(&gone.ufrag) == Some(&connection) {
            self.by_ufrag.remove(&gone.ufrag);
        }
    }

    /// The connection a datagram from `from` goes to, if any (see the module's documentation);
    /// an authentic binding request makes `from` that connection's.
    pub fn route(&mut self, from: SocketAddr, packet: &[u8]) -> Option<u64> {
        match *packet.first()? {
            0..=3 if is_binding_request(packet) => {
                let request = parse_binding_request(packet)?;
                let connection = *self.by_ufrag.get(request.ufrag)?;
                let key = &mut self.connections.get_mut(&connection)?.integrity;
                if !request.authentic(packet, key.as_mut()) {
                    return None;
                }
                self.learn(connection, from);
                Some(connection)
            }
            0..=3 | 20..=63 | 128..=191 => self.by_address.get(&from).map(|&(connection, _)| connection),
            _ => None,
        }
    }

    fn queue(&self, connection: u64) -> Option<&mpsc::Sender<Datagram>> {
        self.connections.get(&connection).map(|c| &c.queue)
    }

    /// `from` now belongs to `connection` (which exists), as its most recently checked address.
    fn learn(&mut self, connection: u64, from: SocketAddr) {
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some((previous, _)) = self.by_address.insert(from, (connection, stamp)) {
            if let Some(c) = self.connections.get_mut(&previous) {
                c.addresses.retain(|a| *a != from);
            }
        }
        self.learned.push_back((from, stamp));
        let Some(c) = self.connections.get_mut(&connection) else { return };
        c.addresses.push_back(from);
        while c.addresses.len() > self.per_connection {
            if let Some(oldest) = c.addresses.pop_front() {
                self.by_address.remove(&oldest);
            }
        }
        while self.by_address.len() > self.total && self.forget_oldest() {}
        // Stale entries are dropped once they outnumber the live ones (amortised O(1)).
        if self.learned.len() > 2 * self.by_address.len() + 64 {
            let by_address = &self.by_address;
            self.learned.retain(|(a, s)| matches!(by_address.get(a), Some(&(_, stamp)) if stamp == *s));
        }
    }

    /// Forgets the address learned longest ago; false when there is none.
    fn forget_oldest(&mut self) -> bool {
        while let Some((address, stamp)) = self.learned.pop_front() {
            if let Some(&(connection, s)) = self.by_address.get(&address) {
                if s == stamp {
                    self.by_address.remove(&address);
                    if let Some(c) = self.connections.get_mut(&connection) {
                        c.addresses.retain(|a| *a != address);
                    }
                    return true;
                }
            }
        }
        false
    }

    /// Makes the tables consistent again after a panic may have interrupted an update: the
    /// connections' own address lists are the truth, the index is rebuilt from them.
    fn repair(&mut self) {
        let (mut by_address, mut learned, mut stamp) = (HashMap::new(), VecDeque::new(), self.stamp);
        for (&id, c) in self.connections.iter_mut() {
            let mut kept = VecDeque::new();
            for address in c.addresses.drain(..).rev() {
                if kept.len() < self.per_connection && !by_address.contains_key(&address) {
                    kept.push_front(address);
                }
            }
            for &address in &kept {
                stamp += 1;
                by_address.insert(address, (id, stamp));
                learned.push_back((address, stamp));
            }
            c.addresses = kept;
        }
        (self.by_address, self.learned, self.stamp) = (by_address, learned, stamp);
        while self.by_address.len() > self.total && self.forget_oldest() {}
        let connections = &self.connections;
        self.by_ufrag.retain(|_, c| connections.contains_key(c));
    }

    #[cfg(test)]
    fn addresses_of(&self, connection: u64) -> Vec<SocketAddr> {
        self.connections.get(&connection).map(|c| c.addresses.iter().copied().collect()).unwrap_or_default()
    }

    /// Every invariant of the tables, for tests.
    #[cfg(test)]
    fn check(&self) {
        let listed: usize = self.connections.values().map(|c| c.addresses.len()).sum();
        assert_eq!(listed, self.by_address.len(), "each address listed by exactly one connection");
        for (id, c) in &self.connections {
            assert!(c.addresses.len() <= self.per_connection);
            for a in &c.addresses {
                assert_eq!(self.by_address.get(a).map(|e| e.0), Some(*id));
            }
        }
        assert!(self.by_address.len() <= self.total);
        assert!(self.by_ufrag.values().all(|c| self.connections.contains_key(c)));
        assert!(self.learned.len() <= 2 * self.by_address.len() + 65);
    }
}

// ---------------------------------------------------------------------------------------------
// The routing task and its supervision

/// Rate-limits the log lines of one kind of trouble: at most one per interval; each line
/// counts those kept quiet since the previous one.
#[derive(Debug)]
struct LogThrottle {
    interval: Duration,
    next: Option<Instant>,
    suppressed: u64,
    logged: u64,
}

impl LogThrottle {
    fn new(interval: Duration) -> Self {
        Self { interval, next: None, suppressed: 0, logged: 0 }
    }

    /// `Some(kept quiet since the last line)` when a line may be logged now.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.next {
            Some(next) if now < next => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.next = Some(now + self.interval);
                self.logged += 1;
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Consecutive failures of one kind, and how long to pause before trying again.
#[derive(Debug, Default)]
struct Backoff {
    consecutive: u32,
}

impl Backoff {
    fn failed(&mut self) -> Option<Duration> {
        self.consecutive = self.consecutive.saturating_add(1);
        let over = self.consecutive.checked_sub(FAILURES_BEFORE_BACKOFF + 1)?;
        Some(Duration::from_millis(1u64 << over.min(20)).min(MAX_BACKOFF))
    }

    fn recovered(&mut self) {
        self.consecutive = 0;
    }
}

/// One kind of trouble of a routing task.
#[derive(Debug)]
struct Trouble {
    backoff: Backoff,
    log: LogThrottle,
}

impl Trouble {
    fn new() -> Self {
        Self { backoff: Backoff::default(), log: LogThrottle::new(LOG_INTERVAL) }
    }
}

#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inspection {
    connections: usize,
    ufrags: usize,
    addresses: usize,
    /// (logged, kept quiet) lines about receive errors, and about panics.
    receive_errors: (u64, u64),
    panics: (u64, u64),
}

/// The state of one shared socket's routing task; it outlives a panic of the loop.
struct Router {
    io: Arc<tokio::net::UdpSocket>,
    local: SocketAddr,
    control: mpsc::UnboundedReceiver<Control>,
    routes: Routes,
    buffer: BytesMut,
    /// Receiving is paused until then (backing off from repeated trouble); control goes on.
    paused_until: Option<Instant>,
    receive_errors: Trouble,
    panics: Trouble,
    #[cfg(test)]
    fail_receives: u32,
}

/// Runs a routing task until its mux is gone. A panic in the loop is caught: the tables are
/// repaired, the panic logged (rate-limited), receiving paused if panics repeat, and the loop
/// starts again with everything it had learned.
async fn supervise(mut router: Router) {
    loop {
        match AssertUnwindSafe(router.run()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                router.buffer.clear();
                router.routes.repair();
                let now = Instant::now();
                if let Some(pause) = router.panics.backoff.failed() {
                    router.paused_until = Some(now + pause);
                }
                if let Some(suppressed) = router.panics.log.admit(now) {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    tracing::error!(port = router.local.port(), panic = %what, suppressed,
                        "the single UDP port's routing task panicked; it goes on");
                }
            }
        }
    }
}

impl Router {
    fn new(io: Arc<tokio::net::UdpSocket>, local: SocketAddr, control: mpsc::UnboundedReceiver<Control>) -> Self {
        Self {
            io,
            local,
            control,
            routes: Routes::new(ADDRESSES_PER_CONNECTION, ADDRESSES_TOTAL),
            buffer: BytesMut::with_capacity(RECEIVE_BLOCK),
            paused_until: None,
            receive_errors: Trouble::new(),
            panics: Trouble::new(),
            #[cfg(test)]
            fail_receives: 0,
        }
    }

    /// Until the mux is dropped.
    async fn run(&mut self) {
        loop {
            if self.buffer.capacity() < MAX_DATAGRAM {
                self.buffer = BytesMut::with_capacity(RECEIVE_BLOCK);
            }
            let paused_until = self.paused_until;
            tokio::select! {
                biased;
                command = self.control.recv() => match command {
                    Some(command) => self.command(command),
                    None => return,
                },
                _ = async { if let Some(until) = paused_until { tokio::time::sleep_until(until).await } }, if paused_until.is_some() => {
                    self.paused_until = None;
                }
                received = self.io.recv_buf_from(&mut self.buffer), if paused_until.is_none() => match received {
                    Ok((_, from)) => self.received(from),
                    Err(error) => self.receive_failed(error),
                },
            }
        }
    }

    fn command(&mut self, command: Control) {
        match command {
            Control::Register { connection, ufrag, integrity, queue } => {
                self.routes.register(connection, ufrag, integrity, queue)
            }
            Control::Unregister { connection } => self.routes.unregister(connection),
            #[cfg(test)]
            Control::Inspect(reply) => {
                let _ = reply.send(Inspection {
                    connections: self.routes.connections.len(),
                    ufrags: self.routes.by_ufrag.len(),
                    addresses: self.routes.by_address.len(),
                    receive_errors: (self.receive_errors.log.logged, self.receive_errors.log.suppressed),
                    panics: (self.panics.log.logged, self.panics.log.suppressed),
                });
            }
            #[cfg(test)]
            Control::Panic => panic!("a panic injected by a test"),
            #[cfg(test)]
            Control::FailReceives(n) => self.fail_receives = n,
        }
    }

    /// A datagram from `from` is in the buffer: hand it to its connection, or drop it.
    fn received(&mut self, from: SocketAddr) {
        #[cfg(test)]
        if self.fail_receives > 0 {
            self.fail_receives -= 1;
            self.buffer.clear();
            return self.receive_failed(io::Error::other("a receive error injected by a test"));
        }
        self.receive_errors.backoff.recovered();
        self.panics.backoff.recovered();
        let Some(connection) = self.routes.route(from, &self.buffer) else {
            self.buffer.clear(); // its space is reused
            return;
        };
        let Some(queue) = self.routes.queue(connection) else { return self.buffer.clear() };
        let data = if queue.capacity() + CARVED_PER_CONNECTION >= QUEUE_PER_CONNECTION {
            self.buffer.split().freeze()
        } else {
            let copy = Bytes::copy_from_slice(&self.buffer);
            self.buffer.clear();
            copy
        };
        // A full queue drops the datagram, as a full socket buffer would. A closed one means the
        // connection's socket is gone without unregistering: forget it now.
        if let Err(TrySendError::Closed(_)) = queue.try_send(Datagram { from, data }) {
            self.routes.unregister(connection);
        }
    }

    /// Receive errors on UDP are mostly one-offs (an ICMP error reported on a later receive);
    /// repeated ones (ENOBUFS, ENOMEM, or a socket gone bad) pause receiving, growing to 1 s.
    fn receive_failed(&mut self, error: io::Error) {
        self.buffer.clear();
        let now = Instant::now();
        if let Some(pause) = self.receive_errors.backoff.failed() {
            self.paused_until = Some(now + pause);
        }
        if let Some(suppressed) = self.receive_errors.log.admit(now) {
            tracing::warn!(port = self.local.port(), %error, suppressed,
                "receiving on the single UDP port failed; retrying");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A connection's side

/// The tokio runtime, except that UDP sockets are views of the shared one.
struct MuxRuntime {
    mux: Arc<UdpMux>,
    ufrag: String,
    pwd: String,
    connection: u64,
}

impl std::fmt::Debug for MuxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the password.
        f.debug_struct("MuxRuntime").field("ufrag", &self.ufrag).field("connection", &self.connection).finish()
    }
}

impl std::fmt::Debug for UdpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpMux").field("port", &self.port).finish()
    }
}

impl Runtime for MuxRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn spawn_reactor(&self, size: usize, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn_reactor(size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let bound = socket.local_addr()?;
        // The driver's own socket only gave the connection an identity; traffic uses the shared one.
        drop(socket);
        let shared = self
            .mux
            .socket_for(bound.ip())
            .ok_or_else(|| io::Error::other(format!("no shared UDP socket for {}", bound.ip())))?;
        let integrity = self
            .mux
            .crypto
            .crypto()
            .new_hmac(HmacAlgorithm::Sha1, self.pwd.as_bytes())
            .map_err(|e| io::Error::other(format!("keying the STUN integrity check: {e}")))?;
        let (queue, inbox) = mpsc::channel(QUEUE_PER_CONNECTION);
        shared
            .control
            .send(Control::Register { connection: self.connection, ufrag: self.ufrag.clone(), integrity, queue })
            .map_err(|_| io::Error::other("the shared UDP socket is closed"))?;
        Ok(Arc::new(MuxedSocket {
            io: shared.io.clone(),
            local: shared.local,
            control: shared.control.clone(),
            connection: self.connection,
            inbox: Mutex::new(inbox),
        }))
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.connect_tcp(remote).await })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.resolve_host(host).await })
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio+udp-mux"
    }
}

/// One connection's view of a shared socket: it sends through it and receives what the
/// routing task queued for it. Dropping it unregisters the connection (its ufrag and every
/// address routed to it).
struct MuxedSocket {
    io: Arc<tokio::net::UdpSocket>,
    local: SocketAddr,
    control: mpsc::UnboundedSender<Control>,
    connection: u64,
    /// Polled only by the connection's driver; the lock is never contended.
    inbox: Mutex<mpsc::Receiver<Datagram>>,
}

impl std::fmt::Debug for MuxedSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxedSocket").field("local", &self.local).field("connection", &self.connection).finish()
    }
}

impl Drop for MuxedSocket {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Unregister { connection: self.connection });
    }
}

impl AsyncUdpSocket for MuxedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.io.poll_send_to(cx, transmit.contents, transmit.destination)
    }

    fn poll_recv(&self, cx: &mut Context<'_>, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(meta)) = (bufs.first_mut(), meta.first_mut()) else { return Poll::Ready(Ok(0)) };
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        match inbox.poll_recv(cx) {
            Poll::Ready(Some(datagram)) => {
                let len = datagram.data.len().min(buf.len());
                buf[..len].copy_from_slice(&datagram.data[..len]);
                let mut received = RecvMeta::default();
                (received.addr, received.len, received.stride) = (datagram.from, len, len.max(1));
                *meta = received;
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::other("the shared UDP socket is closed"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A random ICE ufrag (and password) for a muxed connection: 16 and 32 characters from the
/// `ice-char` set, unique enough to route by (RFC 8839 asks for at least 24 bits of randomness).
pub fn random_ice_credentials() -> (String, String) {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let chars = |n: usize| {
        let mut out = String::with_capacity(n);
        while out.len() < n {
            for byte in uuid::Uuid::new_v4().into_bytes() {
                if out.len() < n {
                    out.push(alphabet[(byte & 63) as usize] as char);
                }
            }
        }
        out
    };
    (chars(16), chars(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PWD: &str = "passwordpasswordpasswordpassword";

    fn key(pwd: &str) -> Box<dyn Mac> {
        rtc::crypto::default_provider().unwrap().crypto().new_hmac(HmacAlgorithm::Sha1, pwd.as_bytes()).unwrap()
    }

    /// A binding request as a client sends it: PRIORITY, USERNAME, MESSAGE-INTEGRITY keyed with
    /// `pwd`, FINGERPRINT (its value not checked by the router, so left zero here).
    fn binding_request_with(username: &str, pwd: &str) -> Vec<u8> {
        let mut packet = vec![0x00, 0x01, 0, 0];
        packet.extend_from_slice(&MAGIC_COOKIE);
        packet.extend_from_slice(&[7; 12]);
        // An attribute before USERNAME, to walk past (PRIORITY, 4 bytes).
        packet.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        packet.extend_from_slice(&USERNAME.to_be_bytes());
        packet.extend_from_slice(&(username.len() as u16).to_be_bytes());
        packet.extend_from_slice(username.as_bytes());
        while packet.len() % 4 != 0 {
            packet.push(0);
        }
        let at = packet.len();
        let length = (at + 24 - 20) as u16;
        packet[2..4].copy_from_slice(&length.to_be_bytes());
        let mut tag = [0u8; 20];
        key(pwd).sign(&[&packet], &mut tag).unwrap();
        packet.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        packet.extend_from_slice(&20u16.to_be_bytes());
        packet.extend_from_slice(&tag);
        packet.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0]);
        let length = (packet.len() - 20) as u16;
        packet[2..4].copy_from_slice(&length.to_be_bytes());
        packet
    }

    fn binding_request(username: &str) -> Vec<u8> {
        binding_request_with(username, PWD)
    }

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000))
    }

    /// Routes with connections 1..=n, ufrag `u<i>`, password PWD; the queues' receivers.
    fn routes(per: usize, total: usize, n: u64) -> (Routes, Vec<mpsc::Receiver<Datagram>>) {
        let mut routes = Routes::new(per, total);
        let mut inboxes = Vec::new();
        for i in 1..=n {
            let (queue, inbox) = mpsc::channel(4);
            routes.register(i, format!("u{i}"), key(PWD), queue);
            inboxes.push(inbox);
        }
        (routes, inboxes)
    }

    const RTP: &[u8] = &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    const DTLS: &[u8] = &[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn finds_the_receivers_ufrag_in_a_binding_request() {
        let request = binding_request("serverUfrag:clientUfrag");
        let parsed = parse_binding_request(&request).unwrap();
        assert_eq!(parsed.ufrag, "serverUfrag");
        assert!(parsed.authentic(&request, key(PWD).as_mut()));
        assert!(!parsed.authentic(&request, key("another password").as_mut()));
        assert_eq!(parse_binding_request(&binding_request("abc:d")).unwrap().ufrag, "abc");
    }

    #[test]
    fn ignores_everything_else() {
        let ok = binding_request("a:b");
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = ok.clone();
            f(&mut p);
            parse_binding_request(&p).map(|r| r.ufrag.to_string())
        };
        assert!(edit(&|_| ()).is_some());
        assert_eq!(edit(&|p| p[0..2].copy_from_slice(&[0x01, 0x01])), None, "a binding success response");
        assert_eq!(edit(&|p| p[4] = 0), None, "no magic cookie");
        assert_eq!(edit(&|p| p.truncate(30)), None, "truncated");
        assert_eq!(edit(&|p| p.truncate(12)), None, "shorter than a header");
        assert_eq!(edit(&|p| p[2..4].copy_from_slice(&0x0400u16.to_be_bytes())), None, "a length that lies (oversized)");
        assert_eq!(
            edit(&|p| {
                p.truncate(p.len() - 2);
                let length = (p.len() - 20) as u16;
                p[2..4].copy_from_slice(&length.to_be_bytes());
            }),
            None,
            "a length that is no multiple of 4"
        );
        assert_eq!(edit(&|p| p.extend_from_slice(&[0; 4])), None, "bytes past the length");
        assert_eq!(edit(&|p| p[23] = 0xff), None, "an attribute running past the end");
        assert_eq!(parse_binding_request(&binding_request(":b")), None, "empty ufrag");
        assert_eq!(parse_binding_request(&binding_request(&"x".repeat(600))), None, "USERNAME too long");
        assert_eq!(parse_binding_request(RTP), None);
        assert_eq!(parse_binding_request(DTLS), None);
        assert_eq!(parse_binding_request(&[]), None);
        // Without MESSAGE-INTEGRITY (turned into an unknown attribute), or with USERNAME after it.
        let mi = ok.len() - 8 - 24;
        assert_eq!(edit(&|p| p[mi..mi + 2].copy_from_slice(&0x8077u16.to_be_bytes())), None, "no MESSAGE-INTEGRITY");
        let mut late = ok[..20].to_vec();
        late.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        late.extend_from_slice(&20u16.to_be_bytes());
        late.extend_from_slice(&[0; 20]);
        late.extend_from_slice(&[0x00, 0x06, 0x00, 0x04, b'a', b':', b'b', b'c']);
        let length = (late.len() - 20) as u16;
        late[2..4].copy_from_slice(&length.to_be_bytes());
        assert_eq!(parse_binding_request(&late), None, "a USERNAME after MESSAGE-INTEGRITY is not covered by it");
    }

    #[test]
    fn binding_requests_route_by_ufrag_and_need_the_connections_password() {
        let (mut routes, _inboxes) = routes(8, 100, 2);
        let from = addr(1);
        assert_eq!(routes.route(from, RTP), None, "nothing from an unknown address");
        assert_eq!(routes.route(from, &binding_request_with("u1:x", "a wrong password")), None);
        assert_eq!(routes.route(from, &binding_request("nosuch:x")), None, "an unknown ufrag");
        assert_eq!(routes.route(from, RTP), None, "none of those taught the router anything");
        assert_eq!(routes.route(from, &binding_request("u1:x")), Some(1));
        assert_eq!(routes.route(from, RTP), Some(1));
        assert_eq!(routes.route(from, DTLS), Some(1));
        assert_eq!(routes.route(from, &[0x01, 0x01, 0, 0]), Some(1), "other STUN (a response) by address");
        assert_eq!(routes.route(from, &[64, 0, 0, 0]), None, "not STUN, DTLS or RTP (RFC 7983)");
        assert_eq!(routes.route(from, &[]), None);
        assert_eq!(routes.route(from, &binding_request("nosuch:x")), None, "an unknown ufrag from a known address");
        assert_eq!(routes.route(from, &binding_request_with("u2:x", PWD)[..40]), None, "a malformed request is no STUN to route");
        routes.check();
    }

    #[test]
    fn one_client_address_checking_two_connections() {
        let (mut routes, _inboxes) = routes(8, 100, 2);
        let from = addr(1);
        assert_eq!(routes.route(from, &binding_request("u1:x")), Some(1));
        assert_eq!(routes.route(from, &binding_request("u2:x")), Some(2), "the ufrag first, though the address is u1's");
        assert_eq!(routes.route(from, RTP), Some(2), "the address follows the latest binding request");
        assert_eq!(routes.route(from, &binding_request("u1:x")), Some(1));
        assert_eq!(routes.route(from, DTLS), Some(1));
        assert_eq!((routes.addresses_of(1), routes.addresses_of(2)), (vec![from], vec![]));
        routes.check();
    }

    #[test]
    fn a_connection_keeps_its_latest_addresses_only() {
        let (mut routes, _inboxes) = routes(8, 100, 1);
        for i in 0..20 {
            assert_eq!(routes.route(addr(i), &binding_request("u1:x")), Some(1));
            routes.check();
        }
        assert_eq!(routes.addresses_of(1), (12..20).map(addr).collect::<Vec<_>>());
        assert_eq!(routes.route(addr(11), RTP), None, "forgotten");
        assert_eq!(routes.route(addr(12), RTP), Some(1));
        // An address checked again is the newest: the legitimate client that keeps checking
        // (consent freshness) is not pushed out by a stream of new (spoofed) addresses.
        assert_eq!(routes.route(addr(12), &binding_request("u1:x")), Some(1));
        assert_eq!(routes.route(addr(100), &binding_request("u1:x")), Some(1));
        assert_eq!(routes.route(addr(12), RTP), Some(1), "refreshed, so kept");
        assert_eq!(routes.route(addr(13), RTP), None, "the oldest went instead");
        routes.check();
    }

    #[test]
    fn the_whole_table_is_capped_oldest_first() {
        let (mut routes, _inboxes) = routes(8, 20, 5);
        for round in 0..8u32 {
            for c in 1..=5u32 {
                routes.route(addr(c * 1000 + round), &binding_request(&format!("u{c}:x")));
                routes.check();
            }
        }
        assert_eq!(routes.by_address.len(), 20);
        // The last 20 learned are rounds 4..8 of every connection.
        for c in 1..=5u32 {
            assert_eq!(routes.addresses_of(c as u64), (4..8).map(|r| addr(c * 1000 + r)).collect::<Vec<_>>());
        }
        // A flood of new addresses for one connection stays within both bounds, and the table
        // of stale learning entries does not grow with it.
        for i in 0..10_000 {
            routes.route(addr(100_000 + i), &binding_request("u1:x"));
        }
        routes.check();
        assert_eq!(routes.addresses_of(1).len(), 8);
        assert_eq!(routes.by_address.len(), 20);
    }

    #[test]
    fn a_connection_takes_its_addresses_with_it() {
        let (mut routes, _inboxes) = routes(8, 100, 2);
        for i in 0..5 {
            routes.route(addr(i), &binding_request("u1:x"));
        }
        routes.route(addr(9), &binding_request("u2:x"));
        routes.unregister(1);
        routes.check();
        assert_eq!(routes.by_address.len(), 1);
        assert_eq!(routes.route(addr(0), RTP), None);
        assert_eq!(routes.route(addr(0), &binding_request("u1:x")), None, "its ufrag is gone too");
        assert_eq!(routes.route(addr(9), RTP), Some(2), "the other connection keeps its own");
        routes.unregister(2);
        routes.check();
        assert_eq!((routes.connections.len(), routes.by_ufrag.len(), routes.by_address.len()), (0, 0, 0));
    }

    #[test]
    fn a_ufrag_taken_over_stays_with_its_new_owner() {
        let (mut routes, _inboxes) = routes(8, 100, 1);
        let (queue, _inbox) = mpsc::channel(4);
        routes.register(2, "u1".into(), key(PWD), queue);
        routes.unregister(1);
        assert_eq!(routes.route(addr(1), &binding_request("u1:x")), Some(2));
        routes.check();
    }

    #[test]
    fn repair_rebuilds_the_index_from_the_connections() {
        let (mut routes, _inboxes) = routes(8, 100, 2);
        for i in 0..4 {
            routes.route(addr(i), &binding_request("u1:x"));
        }
        routes.route(addr(7), &binding_request("u2:x"));
        // As if a panic had struck halfway through an update.
        routes.by_address.clear();
        routes.by_address.insert(addr(50), (1, 0));
        routes.connections.get_mut(&2).unwrap().addresses.push_back(addr(0));
        routes.repair();
        routes.check();
        assert_eq!(routes.route(addr(3), RTP), Some(1));
        assert_eq!(routes.route(addr(7), RTP), Some(2));
        assert_eq!(routes.route(addr(50), RTP), None);
    }

    #[test]
    fn log_lines_are_throttled_and_count_the_quiet_ones() {
        let start = Instant::now();
        let mut log = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(log.admit(start), Some(0));
        for i in 1..=99 {
            assert_eq!(log.admit(start + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(log.admit(start + Duration::from_secs(10)), Some(99));
        assert_eq!(log.admit(start + Duration::from_secs(11)), None);
        assert_eq!((log.logged, log.suppressed), (2, 1));
    }

    #[test]
    fn backoff_starts_after_a_few_failures_and_is_capped() {
        let mut backoff = Backoff::default();
        let pauses: Vec<_> = (0..20).map(|_| backoff.failed()).collect();
        assert_eq!(&pauses[..4], &[None; 4]);
        assert_eq!(pauses[4..8], [1, 2, 4, 8].map(|ms| Some(Duration::from_millis(ms))));
        assert_eq!(pauses[19], Some(MAX_BACKOFF));
        backoff.recovered();
        assert_eq!(backoff.failed(), None);
    }

    #[test]
    fn credentials_are_ice_chars_of_the_right_length() {
        let (ufrag, pwd) = random_ice_credentials();
        assert_eq!((ufrag.len(), pwd.len()), (16, 32));
        assert!(ufrag.chars().chain(pwd.chars()).all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'));
        assert_ne!(random_ice_credentials().0, ufrag);
    }

    // --- the routing task, with real sockets ---

    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A connection's view of the mux, registered (the registration processed) on return.
    async fn connection(mux: &Arc<UdpMux>, ufrag: &str) -> Arc<dyn AsyncUdpSocket> {
        let runtime = mux.runtime_for(ufrag.into(), PWD.into());
        let placeholder = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let socket = runtime.wrap_udp_socket(placeholder).unwrap();
        assert_eq!(socket.local_addr().unwrap().port(), mux.port());
        mux.inspect(LOCALHOST).await; // after the registration
        socket
    }

    async fn recv(socket: &Arc<dyn AsyncUdpSocket>) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await.unwrap().unwrap();
        (buf[..n].to_vec(), from)
    }

    async fn client() -> (tokio::net::UdpSocket, SocketAddr) {
        let client = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let at = client.local_addr().unwrap();
        (client, at)
    }

    #[tokio::test]
    async fn routes_by_ufrag_then_by_address() {
        let mux = UdpMux::bind(&[LOCALHOST], 0).unwrap();
        let socket = connection(&mux, "ufragA").await;
        let (client, at) = client().await;
        let shared = SocketAddr::new(LOCALHOST, mux.port());
        client.send_to(b"\x80 before any STUN: dropped", shared).await.unwrap();
        client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
        client.send_to(b"\x80 now routed by address", shared).await.unwrap();
        assert_eq!(recv(&socket).await, (binding_request("ufragA:x"), at));
        assert_eq!(recv(&socket).await.0, b"\x80 now routed by address");

        socket.send_to(b"reply", at).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], shared), "replies leave from the shared port");
    }

    #[tokio::test]
    async fn a_lagging_connection_gets_every_datagram_intact() {
        // Past CARVED_PER_CONNECTION queued datagrams they are copied out of the receive block:
        // both ways deliver the same bytes, in order.
        let mux = UdpMux::bind(&[LOCALHOST], 0).unwrap();
        let socket = connection(&mux, "ufragA").await;
        let (client, _) = client().await;
        let shared = SocketAddr::new(LOCALHOST, mux.port());
        client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
        let payload = |i: usize| -> Vec<u8> { std::iter::once(0x80).chain((0..100 + i).map(|j| (i * 7 + j) as u8)).collect() };
        for i in 0..100 {
            client.send_to(&payload(i), shared).await.unwrap();
        }
        assert_eq!(recv(&socket).await.0, binding_request("ufragA:x"));
        for i in 0..100 {
            assert_eq!(recv(&socket).await.0, payload(i), "datagram {i}");
        }
    }

    #[tokio::test]
    async fn one_client_socket_checks_two_connections() {
        let mux = UdpMux::bind(&[LOCALHOST], 0).unwrap();
        let (a, b) = (connection(&mux, "ufragA").await, connection(&mux, "ufragB").await);
        let (client, at) = client().await;
        let shared = SocketAddr::new(LOCALHOST, mux.port());
        client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
        assert_eq!(recv(&a).await, (binding_request("ufragA:x"), at));
        client.send_to(&binding_request("ufragB:x"), shared).await.unwrap();
        assert_eq!(recv(&b).await, (binding_request("ufragB:x"), at), "by ufrag, though the address was A's");
        client.send_to(b"\x16 DTLS after checking B", shared).await.unwrap();
        client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
        client.send_to(b"\x16 DTLS after checking A", shared).await.unwrap();
        assert_eq!(recv(&b).await.0, b"\x16 DTLS after checking B");
        assert_eq!(recv(&a).await.0, binding_request("ufragA:x"));
        assert_eq!(recv(&a).await.0, b"\x16 DTLS after checking A");
    }

    #[tokio::test]
    async fn a_closed_connection_leaves_nothing_behind() {
        let mux = UdpMux::bind(&[LOCALHOST], 0).unwrap();
        let socket = connection(&mux, "ufragA").await;
        let other = connection(&mux, "ufragB").await;
        let shared = SocketAddr::new(LOCALHOST, mux.port());
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (client, _) = client().await;
            client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
            recv(&socket).await;
            clients.push(client);
        }
        let (client, at) = client().await;
        client.send_to(&binding_request("ufragB:x"), shared).await.unwrap();
        assert_eq!(recv(&other).await.1, at);
        let held = mux.inspect(LOCALHOST).await;
        assert_eq!((held.connections, held.ufrags, held.addresses), (2, 2, 4));
        drop(socket);
        let held = mux.inspect(LOCALHOST).await;
        assert_eq!((held.connections, held.ufrags, held.addresses), (1, 1, 1));
        drop(other);
        let held = mux.inspect(LOCALHOST).await;
        assert_eq!((held.connections, held.ufrags, held.addresses), (0, 0, 0));
    }

    #[tokio::test]
    async fn spoofed_checks_stay_within_the_bounds() {
        // The client knows the password (a malicious client, say) and checks from many
        // addresses: the router keeps 8 of them.
        let mux = UdpMux::bind(&[LOCALHOST], 0).unwrap();
        let socket = connection(&mux, "ufragA").await;
        let shared = SocketAddr::new(LOCALHOST, mux.port());
        for _ in 0..20 {
            let (client, _) = client().await;
            client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
            recv(&socket).await;
        }
        assert_eq!(mux.inspect(LOCALHOST).await.addresses, ADDRESSES_PER_CONNECTION);
    }

    #[tokio::test]
    async fn survives_a_panic_in_its_loop() {
        let mux = UdpMux::bind(&[LOCALHOST], 0).unwrap();
        let socket = connection(&mux, "ufragA").await;
        let (client, _) = client().await;
        let shared = SocketAddr::new(LOCALHOST, mux.port());
        client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
        recv(&socket).await;
        mux.control(LOCALHOST, Control::Panic);
        let held = mux.inspect(LOCALHOST).await;
        assert_eq!((held.connections, held.addresses, held.panics), (1, 1, (1, 0)), "what it had learned survives");
        client.send_to(b"\x80 after the panic", shared).await.unwrap();
        assert_eq!(recv(&socket).await.0, b"\x80 after the panic");
        // A second panic within the interval is counted, not logged.
        mux.control(LOCALHOST, Control::Panic);
        assert_eq!(mux.inspect(LOCALHOST).await.panics, (1, 1));
    }

    #[tokio::test]
    async fn persistent_receive_errors_back_off_log_once_and_recover() {
        let mux = UdpMux::bind(&[LOCALHOST], 0).unwrap();
        let socket = connection(&mux, "ufragA").await;
        let (client, _) = client().await;
        let shared = SocketAddr::new(LOCALHOST, mux.port());
        mux.control(LOCALHOST, Control::FailReceives(12));
        let started = std::time::Instant::now();
        for _ in 0..12 {
            client.send_to(b"\x80 fails", shared).await.unwrap();
        }
        client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
        assert_eq!(recv(&socket).await.0, binding_request("ufragA:x"), "routing goes on after the errors");
        // 12 failures: 4 free, then pauses of 1+2+4+...+128 ms.
        assert!(started.elapsed() >= Duration::from_millis(255), "it backed off: {:?}", started.elapsed());
        assert_eq!(mux.inspect(LOCALHOST).await.receive_errors, (1, 11), "one line, eleven kept quiet");
    }
}
