//! A media loop: one thread that owns a UDP socket and the sans-IO peer connections (webrtc-rs's
//! `rtc` core) placed on it, and drives them by hand: datagrams in by batch, each routed to its
//! connection by ICE username and then by address, timers, and every datagram the connections
//! produced in one wake-up out in one batch. Whatever reads the media (the forwarding) runs
//! here too, as a plain call on the loop's [`LoopHandler`]: a packet crosses no channel, task
//! or lock between the socket that received it and the sockets that send it on.
//!
//! The control plane talks to a loop by message only ([`MediaLoop::call`]), per call and never
//! per packet.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use rtc::shared::tcp_framing::TcpFrameDecoder;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::udp::{set_int_option, BatchSocket, SendScratch, Transmit};

/// A connection's id, unique on its loop.
pub type PeerId = u64;

/// The loop sleeps at most this long without a timer due (commands wake it at once).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// What runs on the loop with the media: it reads what the connections received and decides
/// what to write to which connection (the SFU's forwarding), and hears their events.
pub trait LoopHandler: Send + 'static {
    fn on_message(&mut self, peers: &mut Peers, from: PeerId, message: RTCMessage, now: Instant);
    fn on_event(&mut self, peers: &mut Peers, from: PeerId, event: RTCPeerConnectionEvent, now: Instant);
    /// When the handler's own timers next want it.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _peers: &mut Peers, _now: Instant) {}
}

/// One connection on the loop.
pub struct LoopPeer {
    pub pc: RTCPeerConnection,
    ufrag: String,
    /// When its timers next want it, as it last said.
    next_timeout: Option<Instant>,
    /// Datagrams it wrote that its own bounded queue had no room for (ICE-TCP to a peer that
    /// does not read fast enough): lost for it alone.
    dropped: u64,
}

/// The loop's connections. A connection borrowed through [`Peers::get_mut`] is marked as
/// touched: after the handler returns, the loop collects what it wrote.
#[derive(Default)]
pub struct Peers {
    peers: HashMap<PeerId, LoopPeer>,
    by_ufrag: HashMap<String, PeerId>,
    /// Remote address to the connection whose checks last came from it.
    by_address: HashMap<SocketAddr, PeerId>,
    touched: Vec<PeerId>,
}

impl Peers {
    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut RTCPeerConnection> {
        let peer = self.peers.get_mut(&id)?;
        self.touched.push(id);
        Some(&mut peer.pc)
    }

    /// Datagrams of connection `id` dropped at its own send queue.
    pub fn dropped(&self, id: PeerId) -> u64 {
        self.peers.get(&id).map_or(0, |p| p.dropped)
    }

    pub fn contains(&self, id: PeerId) -> bool {
        self.peers.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn insert(&mut self, id: PeerId, pc: RTCPeerConnection, ufrag: String) {
        self.by_ufrag.insert(ufrag.clone(), id);
        self.peers.insert(id, LoopPeer { pc, ufrag, next_timeout: None, dropped: 0 });
        self.touched.push(id);
    }

    fn remove(&mut self, id: PeerId) -> Option<LoopPeer> {
        let peer = self.peers.remove(&id)?;
        if self.by_ufrag.get(&peer.ufrag) == Some(&id) {
            self.by_ufrag.remove(&peer.ufrag);
        }
        self.by_address.retain(|_, p| *p != id);
        Some(peer)
    }

    /// The connection a datagram from `from` belongs to: a binding request by the ufrag it
    /// names (which also routes its address from then on), anything else by address.
    fn route(&mut self, from: SocketAddr, packet: &[u8]) -> Option<PeerId> {
        if let Some(request) = super::stun::parse_binding_request(packet) {
            let id = *self.by_ufrag.get(request.ufrag)?;
            // The connection's own ICE agent checks MESSAGE-INTEGRITY and answers only an
            // authentic request; a forged one can at worst misroute this address until the
            // next authentic check from it.
            self.by_address.insert(from, id);
            return Some(id);
        }
        self.by_address.get(&from).copied()
    }
}

/// A closure the control plane runs on the loop, with its connections and handler.
type Call<H> = Box<dyn FnOnce(&mut LoopContext<'_, H>) + Send>;

enum Command<H> {
    Call(Call<H>),
    Stop,
}

/// What a [`MediaLoop::call`] closure gets: the loop's connections, its handler, its sockets'
/// addresses (the first is [`LoopContext::local`]) and the time.
pub struct LoopContext<'a, H> {
    pub peers: &'a mut Peers,
    pub handler: &'a mut H,
    pub local: SocketAddr,
    pub locals: &'a [SocketAddr],
    pub now: Instant,
}

impl<H> LoopContext<'_, H> {
    /// Places a connection on this loop. `ufrag` is its local ICE username fragment, unique on
    /// the loop: binding requests naming it are routed to it.
    pub fn add_peer(&mut self, id: PeerId, pc: RTCPeerConnection, ufrag: String) {
        self.peers.insert(id, pc, ufrag);
    }

    /// Closes and drops a connection (its close alerts go out first).
    pub fn remove_peer(&mut self, id: PeerId) -> Option<RTCPeerConnection> {
        let pc = self.peers.get_mut(id)?;
        let _ = pc.close();
        self.peers.remove(id).map(|p| p.pc)
    }
}

/// A running loop: its thread, and the way in.
pub struct MediaLoop<H: LoopHandler> {
    commands: mpsc::Sender<Command<H>>,
    waker: Arc<EventFd>,
    locals: Vec<SocketAddr>,
    thread: Option<JoinHandle<()>>,
}

impl<H: LoopHandler> MediaLoop<H> {
    /// Binds `addr` and starts the loop's thread with `handler`.
    pub fn spawn(name: &str, addr: SocketAddr, handler: H) -> io::Result<Self> {
        Self::spawn_on(name, &[addr], handler)
    }

    /// Binds every one of `addrs` (a socket each, for several listen addresses) and starts the
    /// loop's thread with `handler`. A port 0 after the first address takes the first one's.
    pub fn spawn_on(name: &str, addrs: &[SocketAddr], handler: H) -> io::Result<Self> {
        Self::spawn_with(name, addrs, false, handler)
    }

    /// As [`MediaLoop::spawn_on`], and with `tcp` a listener on each address's port too, for
    /// ICE-TCP (passive; RFC 6544, framed as RFC 4571 says).
    pub fn spawn_with(name: &str, addrs: &[SocketAddr], tcp: bool, handler: H) -> io::Result<Self> {
        let mut sockets: Vec<BatchSocket> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let mut addr = *addr;
            if let (0, Some(first)) = (addr.port(), sockets.first()) {
                addr.set_port(first.local_addr().port());
            }
            sockets.push(BatchSocket::bind(addr)?);
        }
        if sockets.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a media loop needs an address"));
        }
        let locals: Vec<SocketAddr> = sockets.iter().map(BatchSocket::local_addr).collect();
        let mut listeners = Vec::new();
        if tcp {
            for local in &locals {
                let listener = std::net::TcpListener::bind(local)?;
                listener.set_nonblocking(true)?;
                listeners.push(listener);
            }
        }
        let waker = Arc::new(EventFd::new()?);
        let fds: Vec<i32> = sockets
            .iter()
            .map(BatchSocket::as_raw_fd)
            .chain(listeners.iter().map(std::os::fd::AsRawFd::as_raw_fd))
            .collect();
        let poller = Poller::new(&fds, waker.fd)?;
        let (commands, inbox) = mpsc::channel();
        let state = LoopState {
            sockets,
            listeners,
            streams: HashMap::new(),
            locals: locals.clone(),
            poller,
            waker: waker.clone(),
            inbox,
            peers: Peers::default(),
            handler,
            scratch: SendScratch::default(),
            outgoing: Vec::new(),
        };
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || state.run())?;
        Ok(Self { commands, waker, locals, thread: Some(thread) })
    }

    /// The first socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.locals[0]
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// Runs `f` on the loop and returns its result; `None` if the loop has stopped.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LoopContext<'_, H>) -> R + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<R> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let call: Call<H> = Box::new(move |ctx| {
            let _ = reply.send(f(ctx));
        });
        if self.commands.send(Command::Call(call)).is_ok() {
            self.waker.wake();
        }
        result
    }

    /// Stops the loop and waits for its thread: every connection still on it is closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.commands.send(Command::Stop).is_ok() {
            self.waker.wake();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<H: LoopHandler> Drop for MediaLoop<H> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct LoopState<H: LoopHandler> {
    sockets: Vec<BatchSocket>,
    listeners: Vec<std::net::TcpListener>,
    /// ICE-TCP connections, by (local, remote) address.
    streams: HashMap<(SocketAddr, SocketAddr), TcpConn>,
    locals: Vec<SocketAddr>,
    poller: Poller,
    waker: Arc<EventFd>,
    inbox: mpsc::Receiver<Command<H>>,
    peers: Peers,
    handler: H,
    scratch: SendScratch,
    /// What the connections wrote in this wake-up (from, to, datagram), sent together at its
    /// end, a batch per socket.
    outgoing: Vec<(SocketAddr, SocketAddr, BytesMut)>,
}

/// An ICE-TCP connection: its stream, the frames read so far, what waits to be written.
struct TcpConn {
    stream: std::net::TcpStream,
    decoder: TcpFrameDecoder,
    pending: Vec<u8>,
}

/// What may wait unwritten on one ICE-TCP connection: past it, what the connection writes is
/// dropped (and counted) until its peer reads again, so a slow reader loses packets and nobody
/// waits for it. About 0.25 s of video at 8 Mbit/s; a peer that stops reading for good fails
/// its ICE consent checks and is closed as any lost connection is.
const TCP_QUEUE_LIMIT: usize = 256 << 10;
/// What the loop reads ahead of an ICE-TCP peer's framing before it gives the stream up.
const TCP_MAX_BUFFERED: usize = 1 << 20;
/// The kernel send buffer of an ICE-TCP connection: small, so that a stalled reader fills the
/// queue the loop counts instead of a large kernel buffer it cannot see.
const TCP_SNDBUF: i32 = 64 << 10;

impl TcpConn {
    /// Queues one datagram with its RFC 4571 length; false when the queue has no room for it.
    fn queue(&mut self, datagram: &[u8]) -> bool {
        let Ok(len) = u16::try_from(datagram.len()) else { return false };
        if self.pending.len() + 2 + datagram.len() > TCP_QUEUE_LIMIT {
            return false;
        }
        self.pending.extend_from_slice(&len.to_be_bytes());
        self.pending.extend_from_slice(datagram);
        true
    }

    /// Writes what it can of `pending`; false when the connection is gone.
    fn flush(&mut self) -> bool {
        use std::io::Write;
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }
}

impl<H: LoopHandler> LoopState<H> {
    fn run(mut self) {
        let mut panics = PanicThrottle::default();
        loop {
            // A panic in a connection or in the handler (hostile input reaching a bug) must not
            // end the loop and every room on it: the pass is abandoned, what it had queued is
            // dropped, and the loop goes on.
            let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let now = Instant::now();
                if !self.take_commands(now) {
                    return false;
                }
                self.receive(now);
                self.fire_timers(now);
                self.drain_touched(now);
                self.send();
                true
            }));
            match pass {
                Ok(true) => {}
                Ok(false) => break,
                Err(panic) => {
                    panics.report(&panic);
                    self.outgoing.clear();
                    self.peers.touched.clear();
                }
            }
            let wait = self.next_wait(Instant::now());
            self.poller.wait(wait);
            self.waker.reset();
        }
        let ids: Vec<PeerId> = self.peers.peers.keys().copied().collect();
        for id in ids {
            if let Some(pc) = self.peers.get_mut(id) {
                let _ = pc.close();
            }
        }
        self.drain_touched(Instant::now());
        self.send();
    }

    /// Runs the control plane's calls; false once asked to stop (or every handle is gone).
    fn take_commands(&mut self, now: Instant) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Call(call)) => {
                    let (local, locals) = (self.locals[0], &self.locals[..]);
                    let mut ctx = LoopContext { peers: &mut self.peers, handler: &mut self.handler, local, locals, now };
                    call(&mut ctx);
                }
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn receive(&mut self, now: Instant) {
        for socket in &mut self.sockets {
            let local = socket.local_addr();
            loop {
                let peers = &mut self.peers;
                let received = socket.recv_batch(|datagram| {
                    let Some(id) = peers.route(datagram.from, datagram.data) else { return };
                    let Some(pc) = peers.get_mut(id) else { return };
                    let _ = pc.handle_read(TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: local,
                            peer_addr: datagram.from,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&datagram.data[..]),
                    });
                });
                match received {
                    Ok(n) if n == super::udp::RECV_BATCH => continue, // more may be waiting
                    _ => break,
                }
            }
        }
        self.receive_tcp(now);
    }

    fn receive_tcp(&mut self, now: Instant) {
        use std::io::Read;
        for listener in &self.listeners {
            while let Ok((stream, peer)) = listener.accept() {
                let Ok(local) = stream.local_addr() else { continue };
                if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
                    continue;
                }
                // Best effort: the default only makes a stalled reader's losses start later.
                set_int_option(std::os::fd::AsRawFd::as_raw_fd(&stream), libc::SOL_SOCKET, libc::SO_SNDBUF, TCP_SNDBUF).ok();
                self.poller.add(std::os::fd::AsRawFd::as_raw_fd(&stream));
                self.streams.insert((local, peer), TcpConn { stream, decoder: TcpFrameDecoder::new(), pending: Vec::new() });
            }
        }
        let mut gone = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        for (&(local, peer), conn) in self.streams.iter_mut() {
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        gone.push((local, peer));
                        break;
                    }
                    Ok(n) => conn.decoder.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone.push((local, peer));
                        break;
                    }
                }
            }
            while let Some(packet) = conn.decoder.next_packet() {
                let Some(id) = self.peers.route(peer, &packet) else { continue };
                let Some(pc) = self.peers.get_mut(id) else { continue };
                let _ = pc.handle_read(TaggedBytesMut {
                    now,
                    transport: TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::TCP },
                    message: BytesMut::from(&packet[..]),
                });
            }
            // A peer that sends garbage without frames must not grow the buffer without end.
            if conn.decoder.buffered_len() > TCP_MAX_BUFFERED {
                gone.push((local, peer));
            }
        }
        for key in gone {
            self.streams.remove(&key);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(pc) = self.peers.get_mut(id) {
                let _ = pc.handle_timeout(now);
            }
        }
        if self.handler.poll_timeout().is_some_and(|t| t <= now) {
            self.handler.handle_timeout(&mut self.peers, now);
        }
    }

    /// Reads, events and writes of every connection touched since the last pass; what the
    /// handler writes to other connections touches them in turn.
    fn drain_touched(&mut self, now: Instant) {
        let mut pass = 0;
        while !self.peers.touched.is_empty() && pass < 8 {
            pass += 1;
            let mut touched = std::mem::take(&mut self.peers.touched);
            touched.sort_unstable();
            touched.dedup();
            for &id in &touched {
                while let Some(TaggedRTCMessage { message, .. }) = self.peers.peers.get_mut(&id).and_then(|p| p.pc.poll_read()) {
                    self.handler.on_message(&mut self.peers, id, message, now);
                }
                while let Some(event) = self.peers.peers.get_mut(&id).and_then(|p| p.pc.poll_event()) {
                    self.handler.on_event(&mut self.peers, id, event, now);
                }
            }
            for &id in &touched {
                let Some(peer) = self.peers.peers.get_mut(&id) else { continue };
                while let Some(out) = peer.pc.poll_write() {
                    let (local, remote) = (out.transport.local_addr, out.transport.peer_addr);
                    if out.transport.transport_protocol == TransportProtocol::TCP {
                        if let Some(conn) = self.streams.get_mut(&(local, remote)) {
                            if !conn.queue(&out.message) {
                                peer.dropped += 1;
                            }
                        }
                        continue;
                    }
                    self.outgoing.push((local, remote, out.message));
                }
                peer.next_timeout = peer.pc.poll_timeout();
            }
        }
    }

    fn send(&mut self) {
        if !self.streams.is_empty() {
            self.streams.retain(|_, conn| conn.flush());
        }
        if self.outgoing.is_empty() {
            return;
        }
        for (index, socket) in self.sockets.iter_mut().enumerate() {
            let local = self.locals[index];
            // A datagram goes out of the socket of the address it was written from (the
            // first socket when that address is not one of ours).
            let mine = |from: &SocketAddr| *from == local || (index == 0 && !self.locals.contains(from));
            let batch: Vec<Transmit<'_>> =
                self.outgoing.iter().filter(|(from, _, _)| mine(from)).map(|(_, to, data)| Transmit { to: *to, data }).collect();
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = socket.send_batch(&batch, &mut self.scratch) {
                tracing::debug!(error = %e, "a media loop's send failed");
            }
        }
        self.outgoing.clear();
    }

    fn next_wait(&self, now: Instant) -> Duration {
        let next = self.peers.peers.values().filter_map(|p| p.next_timeout).chain(self.handler.poll_timeout()).min();
        next.map_or(IDLE_WAIT, |t| t.saturating_duration_since(now).min(IDLE_WAIT))
    }
}

/// Logs a caught panic at most once per 10 s, counting the ones kept quiet.
#[derive(Default)]
struct PanicThrottle {
    last: Option<Instant>,
    quiet: u64,
}

impl PanicThrottle {
    fn report(&mut self, panic: &Box<dyn std::any::Any + Send>) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            self.quiet += 1;
            return;
        }
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(panic = %what, quieted = self.quiet, "a media loop caught a panic and goes on");
        self.last = Some(now);
        self.quiet = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting: epoll on the socket and an eventfd the control plane writes to.

struct EventFd {
    fd: i32,
}

impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: a plain eventfd; the fd is owned by the struct.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a u64 to our eventfd.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    fn reset(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a u64 from our non-blocking eventfd.
        unsafe { libc::read(self.fd, (&mut value as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}

struct Poller {
    epoll: i32,
}

impl Poller {
    fn new(sockets: &[i32], waker: i32) -> io::Result<Self> {
        // SAFETY: plain epoll calls on fds we own; the epoll fd is owned by the struct.
        unsafe {
            let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if epoll < 0 {
                return Err(io::Error::last_os_error());
            }
            let poller = Self { epoll };
            for &fd in sockets.iter().chain([&waker]) {
                let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
                if libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(poller)
        }
    }

    /// Watches one more fd (an accepted TCP connection; it leaves the set when it is closed).
    fn add(&self, fd: i32) {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: adds an fd we own to our epoll fd.
        unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut event) };
    }

    fn wait(&self, timeout: Duration) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // A timer due within the millisecond must not become a busy loop of zero waits.
        let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
        // SAFETY: waits on our epoll fd into a local array.
        unsafe { libc::epoll_wait(self.epoll, events.as_mut_ptr(), events.len() as i32, ms) };
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.epoll) };
    }
}

#[cfg(test)]
mod tests {
    //! Loops on loopback: one carries the server's connections and forwards, the others the
    //! clients' (webrtc-rs's sans-IO core on both sides: what these tests prove is the loop's
    //! routing, timers, batching and in-loop forwarding; interop with other stacks is proven
    //! by the JS suite once the server runs on the loops).
    use super::*;
    use rtc::media_stream::MediaStreamTrack;
    use rtc::peer_connection::configuration::media_engine::MediaEngine;
    use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
    use rtc::peer_connection::configuration::RTCConfigurationBuilder;
    use rtc::peer_connection::event::RTCTrackEvent;
    use rtc::peer_connection::sdp::RTCSessionDescription;
    use rtc::peer_connection::state::RTCPeerConnectionState;
    use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
    use rtc::peer_connection::RTCPeerConnectionBuilder;
    use rtc::rtp;
    use rtc::rtp_transceiver::rtp_sender::{
        RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
    };
    use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn vp8() -> RTCRtpCodecParameters {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec { mime_type: "video/VP8".into(), clock_rate: 90_000, channels: 0, sdp_fmtp_line: String::new(), rtcp_feedback: vec![] },
            payload_type: 96,
        }
    }

    fn peer(ufrag: &str) -> RTCPeerConnection {
        let mut engine = MediaEngine::default();
        engine.register_codec(vp8(), RtpCodecKind::Video).unwrap();
        let settings = SettingEngineBuilder::new()
            .with_ice_credentials(ufrag.into(), format!("{ufrag}-password-password-pw"))
            .with_include_loopback_candidate(true)
            .build();
        RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(engine)
            .with_setting_engine(settings)
            .build(Instant::now())
            .unwrap()
    }

    fn host_candidate(pc: &mut RTCPeerConnection, local: SocketAddr) {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".into(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .unwrap();
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().unwrap()).unwrap();
    }

    fn video_track(ssrc: u32) -> MediaStreamTrack {
        MediaStreamTrack::new(
            "stream".into(),
            format!("video-{ssrc}"),
            "video".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: vp8().rtp_codec,
                ..Default::default()
            }],
        )
    }

    /// The server's forwarding: RTP from `producer` goes to every consumer's sender, with the
    /// consumer's SSRC.
    #[derive(Default)]
    struct Forward {
        producer: Option<PeerId>,
        consumers: Vec<(PeerId, RTCRtpSenderId, u32)>,
        connected: Vec<PeerId>,
    }

    impl LoopHandler for Forward {
        fn on_message(&mut self, peers: &mut Peers, from: PeerId, message: RTCMessage, now: Instant) {
            let RTCMessage::RtpPacket(_, packet) = message else { return };
            if Some(from) != self.producer {
                return;
            }
            for &(consumer, sender, ssrc) in &self.consumers {
                let Some(pc) = peers.get_mut(consumer) else { continue };
                let mut out = packet.clone();
                out.header.ssrc = ssrc;
                out.header.extensions.clear();
                if let Some(mut sender) = pc.rtp_sender(sender) {
                    let _ = sender.write_rtp(now, out);
                }
            }
        }

        fn on_event(&mut self, _: &mut Peers, from: PeerId, event: RTCPeerConnectionEvent, _: Instant) {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = event {
                self.connected.push(from);
            }
        }
    }

    /// The clients: counts the RTP each receives, and which tracks opened.
    #[derive(Default)]
    struct Clients {
        received: HashMap<PeerId, u64>,
        connected: Vec<PeerId>,
        tracks: Vec<PeerId>,
    }

    impl LoopHandler for Clients {
        fn on_message(&mut self, _: &mut Peers, from: PeerId, message: RTCMessage, _: Instant) {
            if let RTCMessage::RtpPacket(..) = message {
                *self.received.entry(from).or_default() += 1;
            }
        }

        fn on_event(&mut self, _: &mut Peers, from: PeerId, event: RTCPeerConnectionEvent, _: Instant) {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) => {
                    self.connected.push(from)
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(_)) => self.tracks.push(from),
                _ => {}
            }
        }
    }

    async fn until<T>(what: &str, mut probe: impl FnMut() -> tokio::sync::oneshot::Receiver<Option<T>>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = probe().await.unwrap() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[derive(Default)]
    struct Nothing;
    impl LoopHandler for Nothing {
        fn on_message(&mut self, _: &mut Peers, _: PeerId, _: RTCMessage, _: Instant) {}
        fn on_event(&mut self, _: &mut Peers, _: PeerId, _: RTCPeerConnectionEvent, _: Instant) {}
    }

    #[tokio::test]
    async fn a_panic_on_the_loop_leaves_it_running() {
        let lp = MediaLoop::spawn("test-panic-loop", "127.0.0.1:0".parse().unwrap(), Nothing).unwrap();
        let r = lp.call(|_| -> u8 { panic!("boom on the loop") }).await;
        assert!(r.is_err(), "the panicking call has no reply");
        assert_eq!(lp.call(|_| 42).await.unwrap(), 42, "the loop still answers");
        lp.stop();
    }

    const PRODUCER: PeerId = 1;
    const CONSUMER: PeerId = 2;

    #[tokio::test]
    async fn a_producer_reaches_a_consumer_through_the_server_loop() {
        let server = MediaLoop::spawn("test-server-loop", "127.0.0.1:0".parse().unwrap(), Forward::default()).unwrap();
        // One loop (one socket) per client: two clients behind one socket talking to one
        // server address would be one 5-tuple, which no demultiplexer can split.
        let producing = MediaLoop::spawn("test-producer-loop", "127.0.0.1:0".parse().unwrap(), Clients::default()).unwrap();
        let consuming = MediaLoop::spawn("test-consumer-loop", "127.0.0.1:0".parse().unwrap(), Clients::default()).unwrap();

        // Upstream: the producing client offers a sendonly VP8 track; the server answers.
        let offer = producing
            .call(|ctx| {
                let mut pc = peer("prodclient");
                pc.add_transceiver_from_track(
                    video_track(1111),
                    Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, streams: vec![], send_encodings: vec![] }),
                )
                .unwrap();
                host_candidate(&mut pc, ctx.local);
                let offer = pc.create_offer(None).unwrap();
                pc.set_local_description(ctx.now, offer).unwrap();
                let offer = pc.local_description().unwrap().clone();
                ctx.add_peer(PRODUCER, pc, "prodclient".into());
                offer
            })
            .await
            .unwrap();
        let answer = server
            .call(move |ctx| {
                let mut pc = peer("prodserver");
                pc.set_remote_description(ctx.now, RTCSessionDescription::offer(offer.sdp).unwrap()).unwrap();
                host_candidate(&mut pc, ctx.local);
                let answer = pc.create_answer(None).unwrap();
                pc.set_local_description(ctx.now, answer).unwrap();
                let answer = pc.local_description().unwrap().clone();
                ctx.add_peer(PRODUCER, pc, "prodserver".into());
                ctx.handler.producer = Some(PRODUCER);
                answer
            })
            .await
            .unwrap();
        producing
            .call(move |ctx| {
                let pc = ctx.peers.get_mut(PRODUCER).unwrap();
                pc.set_remote_description(ctx.now, RTCSessionDescription::answer(answer.sdp).unwrap()).unwrap();
            })
            .await
            .unwrap();

        // Downstream: the server offers the consumer a sendonly track; the consuming client answers.
        let offer = server
            .call(|ctx| {
                let mut pc = peer("consserver");
                let sender = pc
                    .add_transceiver_from_track(
                        video_track(2222),
                        Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, streams: vec![], send_encodings: vec![] }),
                    )
                    .unwrap();
                let sender = pc.rtp_transceiver(sender).unwrap().sender().unwrap();
                host_candidate(&mut pc, ctx.local);
                let offer = pc.create_offer(None).unwrap();
                pc.set_local_description(ctx.now, offer).unwrap();
                let offer = pc.local_description().unwrap().clone();
                ctx.add_peer(CONSUMER, pc, "consserver".into());
                ctx.handler.consumers.push((CONSUMER, sender, 2222));
                offer
            })
            .await
            .unwrap();
        let answer = consuming
            .call(move |ctx| {
                let mut pc = peer("consclient");
                pc.set_remote_description(ctx.now, RTCSessionDescription::offer(offer.sdp).unwrap()).unwrap();
                host_candidate(&mut pc, ctx.local);
                let answer = pc.create_answer(None).unwrap();
                pc.set_local_description(ctx.now, answer).unwrap();
                let answer = pc.local_description().unwrap().clone();
                ctx.add_peer(CONSUMER, pc, "consclient".into());
                answer
            })
            .await
            .unwrap();
        server
            .call(move |ctx| {
                let pc = ctx.peers.get_mut(CONSUMER).unwrap();
                pc.set_remote_description(ctx.now, RTCSessionDescription::answer(answer.sdp).unwrap()).unwrap();
            })
            .await
            .unwrap();

        until("every connection up", || {
            let server_up = server.call(|ctx| ctx.handler.connected.len() == 2);
            let producer_up = producing.call(|ctx| ctx.handler.connected.len() == 1);
            let consumer_up = consuming.call(|ctx| ctx.handler.connected.len() == 1);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let all = matches!((server_up.await, producer_up.await, consumer_up.await), (Ok(true), Ok(true), Ok(true)));
                let _ = tx.send(all.then_some(()));
            });
            rx
        })
        .await;

        // The producing client sends 200 packets; the consuming client receives them.
        let sent = Arc::new(AtomicU64::new(0));
        for batch in 0..20u16 {
            let sent = sent.clone();
            producing
                .call(move |ctx| {
                    let pc = ctx.peers.get_mut(PRODUCER).unwrap();
                    let sender = pc.get_senders().next().unwrap();
                    let mut sender = pc.rtp_sender(sender).unwrap();
                    for i in 0..10u16 {
                        let seq = batch * 10 + i;
                        let packet = rtp::Packet {
                            header: rtp::header::Header {
                                version: 2,
                                payload_type: 96,
                                sequence_number: seq,
                                timestamp: seq as u32 * 3000,
                                ssrc: 1111,
                                marker: true,
                                ..Default::default()
                            },
                            payload: bytes::Bytes::from(vec![0x10, 0x00, seq as u8, 0x9d, 0x01, 0x2a]),
                        };
                        if sender.write_rtp(ctx.now, packet).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sent.load(Ordering::Relaxed), 200);
        let received = until("the consumer receives", || {
            consuming.call(|ctx| ctx.handler.received.get(&CONSUMER).copied().filter(|n| *n >= 190))
        })
        .await;
        assert!(received <= 200, "{received} packets for 200 sent");
        let tracks = consuming.call(|ctx| ctx.handler.tracks.clone()).await.unwrap();
        assert_eq!(tracks, vec![CONSUMER], "the consumer's track opened");
        server.stop();
        producing.stop();
        consuming.stop();
    }
}
