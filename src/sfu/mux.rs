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
//! local ufrag, and the first STUN binding request from a new remote address names it
//! (`USERNAME = <our ufrag>:<their ufrag>`). From then on that address is routed without
//! looking inside packets. One task per shared socket owns the routing tables (no lock on
//! the packet path); received datagrams are carved from a shared buffer, not allocated one by one.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
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

struct Datagram {
    from: SocketAddr,
    data: Bytes,
}

enum Control {
    Register { ufrag: String, connection: u64, queue: mpsc::Sender<Datagram> },
    Unregister { connection: u64 },
}

/// One shared socket and the task that routes what it receives.
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
}

impl UdpMux {
    /// Binds `port` on every address. Must run inside the tokio runtime.
    pub fn bind(ips: &[IpAddr], port: u16) -> SfuResult<Arc<Self>> {
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
            tokio::spawn(route(io.clone(), control_rx));
            sockets.push(SharedSocket { io, local, control });
        }
        let port = sockets.first().map_or(port, |s| s.local.port());
        Ok(Arc::new(Self { sockets, next_connection: AtomicU64::new(1), port }))
    }

    /// The shared port (the one asked for, or the one the OS chose for 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A runtime for one connection whose ICE ufrag is `ufrag`.
    pub fn runtime_for(self: &Arc<Self>, ufrag: String) -> Arc<dyn Runtime> {
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        Arc::new(MuxRuntime { mux: self.clone(), ufrag, connection })
    }

    fn socket_for(&self, ip: IpAddr) -> Option<&SharedSocket> {
        self.sockets
            .iter()
            .find(|s| s.local.ip() == ip)
            .or_else(|| self.sockets.iter().find(|s| s.local.ip().is_unspecified()))
    }
}

impl Drop for UdpMux {
    fn drop(&mut self) {
        // Closing the control channels ends the routing tasks, which drop the sockets.
        self.sockets.clear();
    }
}

/// The routing task of one shared socket. Ends when the mux is dropped.
async fn route(io: Arc<tokio::net::UdpSocket>, mut control: mpsc::UnboundedReceiver<Control>) {
    let mut by_ufrag: HashMap<String, (u64, mpsc::Sender<Datagram>)> = HashMap::new();
    let mut by_addr: HashMap<SocketAddr, (u64, mpsc::Sender<Datagram>)> = HashMap::new();
    let mut buffer = BytesMut::with_capacity(RECEIVE_BLOCK);
    loop {
        if buffer.capacity() < MAX_DATAGRAM {
            buffer = BytesMut::with_capacity(RECEIVE_BLOCK);
        }
        tokio::select! {
            biased;
            command = control.recv() => match command {
                Some(Control::Register { ufrag, connection, queue }) => {
                    by_ufrag.insert(ufrag, (connection, queue));
                }
                Some(Control::Unregister { connection }) => {
                    by_ufrag.retain(|_, (c, _)| *c != connection);
                    by_addr.retain(|_, (c, _)| *c != connection);
                }
                None => break,
            },
            received = io.recv_buf_from(&mut buffer) => {
                let Ok((_, from)) = received else { continue };
                let data = buffer.split().freeze();
                let route = match by_addr.get(&from) {
                    Some(route) => Some(route.clone()),
                    None => stun_username_ufrag(&data).and_then(|ufrag| by_ufrag.get(ufrag)).cloned().inspect(|route| {
                        by_addr.insert(from, route.clone());
                    }),
                };
                if let Some((_, queue)) = route {
                    // A full queue drops the datagram, as a full socket buffer would.
                    let _ = queue.try_send(Datagram { from, data });
                }
            }
        }
    }
}

/// The first half of a STUN binding request's USERNAME (the receiver's ufrag), if `packet`
/// is one (RFC 5389 header with the magic cookie, RFC 8445 §7.2.2 username).
fn stun_username_ufrag(packet: &[u8]) -> Option<&str> {
    const BINDING_REQUEST: u16 = 0x0001;
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    const USERNAME: u16 = 0x0006;
    if packet.len() < 20 || packet[4..8] != MAGIC_COOKIE {
        return None;
    }
    if u16::from_be_bytes([packet[0], packet[1]]) != BINDING_REQUEST {
        return None;
    }
    let length = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    let attributes = packet.get(20..20 + length)?;
    let mut rest = attributes;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        let padded = (len + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

/// The tokio runtime, except that UDP sockets are views of the shared one.
#[derive(Debug)]
struct MuxRuntime {
    mux: Arc<UdpMux>,
    ufrag: String,
    connection: u64,
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
        let (queue, inbox) = mpsc::channel(QUEUE_PER_CONNECTION);
        shared
            .control
            .send(Control::Register { ufrag: self.ufrag.clone(), connection: self.connection, queue })
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
/// routing task queued for it.
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

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // An attribute before USERNAME, to walk past (PRIORITY, 4 bytes).
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut packet = vec![0x00, 0x01];
        packet.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        packet.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        packet.extend_from_slice(&[7; 12]);
        packet.extend_from_slice(&attrs);
        packet
    }

    #[test]
    fn finds_the_receivers_ufrag_in_a_binding_request() {
        assert_eq!(stun_username_ufrag(&binding_request("serverUfrag:clientUfrag")), Some("serverUfrag"));
        assert_eq!(stun_username_ufrag(&binding_request("abc:d")), Some("abc"));
    }

    #[test]
    fn ignores_everything_else() {
        let mut response = binding_request("a:b");
        response[1] = 0x01;
        response[0] = 0x01; // binding success response
        assert_eq!(stun_username_ufrag(&response), None);
        let mut no_cookie = binding_request("a:b");
        no_cookie[4] = 0;
        assert_eq!(stun_username_ufrag(&no_cookie), None);
        assert_eq!(stun_username_ufrag(&[0x80, 0x60, 0, 1]), None, "RTP");
        assert_eq!(stun_username_ufrag(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None, "DTLS");
        let mut truncated = binding_request("a:b");
        truncated.truncate(30);
        assert_eq!(stun_username_ufrag(&truncated), None);
        assert_eq!(stun_username_ufrag(&binding_request(":b")), None);
    }

    #[test]
    fn credentials_are_ice_chars_of_the_right_length() {
        let (ufrag, pwd) = random_ice_credentials();
        assert_eq!((ufrag.len(), pwd.len()), (16, 32));
        assert!(ufrag.chars().chain(pwd.chars()).all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'));
        assert_ne!(random_ice_credentials().0, ufrag);
    }

    #[tokio::test]
    async fn routes_by_ufrag_then_by_address() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mux = UdpMux::bind(&[ip], 0).unwrap();
        let runtime = mux.runtime_for("ufragA".into());
        let placeholder = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let socket = runtime.wrap_udp_socket(placeholder).unwrap();
        assert_eq!(socket.local_addr().unwrap().port(), mux.port());
        tokio::time::sleep(Duration::from_millis(20)).await; // the registration is a message

        let client = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let shared = SocketAddr::new(ip, mux.port());
        client.send_to(b"before any STUN: dropped", shared).await.unwrap();
        client.send_to(&binding_request("ufragA:x"), shared).await.unwrap();
        client.send_to(b"now routed by address", shared).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        assert_eq!((n, from), (binding_request("ufragA:x").len(), client.local_addr().unwrap()));
        let (n, _) = socket.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"now routed by address");

        socket.send_to(b"reply", client.local_addr().unwrap()).await.unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], shared), "replies leave from the shared port");
    }
}
