//! Ports for peer connections. webrtc-rs 0.21 binds whatever address it is given, so a
//! configured port range is ours to hand out: one port number per connection (the same on every
//! listen address, UDP and, with ICE-TCP, TCP), returned when the connection's lease is dropped.
//!
//! Leasing is by binding. [`PortPool::lease`] hands out the next port of the range this server
//! does not hold, without probing the host; the connection then binds it, and that bind is the
//! check. Another process may hold a port of the range: a connection whose bind fails with
//! `EADDRINUSE` gives its port back, which is then skipped for [`BUSY_FOR`], and the next port
//! is tried ([`PortPool::open`], at most [`MAX_BIND_ATTEMPTS`] per connection). Any other bind
//! error is reported as what it is.
//!
//! webrtc-rs reports no bind error from `PeerConnectionBuilder::build()`: its driver logs a
//! failed bind, skips the address, and fails only when nothing at all bound (`Error::Other("no
//! udp_sockets or tcp_listeners available")`); with two listen addresses, or UDP and TCP, it
//! builds a connection that lacks one of them. So the connection's runtime is wrapped in a
//! [`BindRecorder`], which sees every socket the driver managed to bind; an address missing from
//! it is bound once more by [`diagnose`] to learn the OS's reason.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use webrtc::runtime::{AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime};

use super::error::{SfuError, SfuResult};

/// How long a port another process held is skipped before it is tried again.
pub const BUSY_FOR: Duration = Duration::from_secs(10);
/// Ports one connection tries before giving up (fewer when the range is smaller).
pub const MAX_BIND_ATTEMPTS: usize = 32;

#[derive(Debug)]
pub struct PortPool {
    ips: Vec<IpAddr>,
    /// Connections listen for ICE-TCP on their port too.
    tcp: bool,
    range: Option<(u16, u16)>,
    /// Held only for set operations, never across I/O.
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    /// Ports of the range currently leased.
    leased: BTreeSet<u16>,
    /// Ports another process held when a connection tried them, skipped until the instant.
    busy: BTreeMap<u16, Instant>,
    /// Where the next search starts: leases go round the range, so a port just given back is
    /// the last to be handed out again.
    next: u16,
}

/// A port held for one connection; dropping it returns the port.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl PortLease {
    /// The leased port; 0 (the OS picks) without a range.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Gives the port back as held by another process: it is skipped for [`BUSY_FOR`].
    pub fn set_aside(self) {
        if self.pool.range.is_some() {
            self.pool.state().busy.insert(self.port, Instant::now() + BUSY_FOR);
        }
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if self.pool.range.is_some() {
            self.pool.state().leased.remove(&self.port);
        }
    }
}

/// Why a connection could not be opened on its port.
#[derive(Debug)]
pub enum BindError {
    /// Another socket holds the port (`EADDRINUSE`): try another.
    InUse,
    /// Anything else, as it will be reported.
    Failed(SfuError),
}

impl PortPool {
    pub fn new(ips: Vec<IpAddr>, tcp: bool, range: Option<(u16, u16)>) -> SfuResult<Arc<Self>> {
        if let Some((min, max)) = range {
            if min == 0 || min > max {
                return Err(SfuError::InvalidArgument(format!(
                    "portRange must satisfy 0 < min <= max, got {{min: {min}, max: {max}}}"
                )));
            }
        }
        let next = range.map_or(0, |(min, _)| min);
        Ok(Arc::new(Self { ips, tcp, range, state: Mutex::new(PoolState { leased: BTreeSet::new(), busy: BTreeMap::new(), next }) }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_use(&self) -> usize {
        self.state().leased.len()
    }

    /// The UDP and TCP addresses a connection on `port` binds.
    pub fn addresses(&self, port: u16) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let udp: Vec<SocketAddr> = self.ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        let tcp = if self.tcp { udp.clone() } else { Vec::new() };
        (udp, tcp)
    }

    /// Leases the next port of the range that this server neither holds nor recently found
    /// held by another process; no socket is bound to check it (the connection's bind is the
    /// check, see [`PortPool::open`]). Without a range, port 0: the OS picks at bind time.
    pub fn lease(self: &Arc<Self>) -> SfuResult<PortLease> {
        let Some((min, max)) = self.range else {
            return Ok(PortLease { pool: self.clone(), port: 0 });
        };
        let now = Instant::now();
        let mut state = self.state();
        state.busy.retain(|_, until| *until > now);
        let size = u32::from(max - min) + 1;
        let start = u32::from(state.next.clamp(min, max) - min);
        for i in 0..size {
            let port = min + ((start + i) % size) as u16;
            if !state.leased.contains(&port) && !state.busy.contains_key(&port) {
                state.leased.insert(port);
                state.next = if port == max { min } else { port + 1 };
                return Ok(PortLease { pool: self.clone(), port });
            }
        }
        Err(SfuError::ResourceExhausted(format!(
            "no free port in portRange {min}-{max}: {} leased by this server, {} held by other processes \
             (skipped for {} s after a bind found them taken)",
            state.leased.len(),
            state.busy.len(),
            BUSY_FOR.as_secs()
        )))
    }

    /// Leases a port and opens a connection on it with `open`; when `open` finds the port held
    /// by another socket, sets it aside and tries the next, up to [`MAX_BIND_ATTEMPTS`] ports
    /// (the whole range at most). Resolves to the lease and what `open` made.
    pub async fn open<T, F, Fut>(self: &Arc<Self>, mut open: F) -> SfuResult<(PortLease, T)>
    where
        F: FnMut(u16) -> Fut,
        Fut: Future<Output = Result<T, BindError>>,
    {
        let Some((min, max)) = self.range else {
            let lease = self.lease()?;
            return match open(0).await {
                Ok(value) => Ok((lease, value)),
                Err(BindError::Failed(e)) => Err(e),
                Err(BindError::InUse) => Err(SfuError::ResourceExhausted("the OS has no free ephemeral port".into())),
            };
        };
        let attempts = (usize::from(max - min) + 1).min(MAX_BIND_ATTEMPTS);
        let mut taken = Vec::new();
        for _ in 0..attempts {
            let lease = self.lease()?;
            match open(lease.port()).await {
                Ok(value) => return Ok((lease, value)),
                Err(BindError::Failed(e)) => return Err(e),
                Err(BindError::InUse) => {
                    taken.push(lease.port());
                    lease.set_aside();
                }
            }
        }
        Err(SfuError::ResourceExhausted(format!(
            "{} ports of portRange {min}-{max} in a row are held by other processes ({taken:?}); \
             they are skipped for {} s",
            taken.len(),
            BUSY_FOR.as_secs()
        )))
    }

    #[cfg(test)]
    fn leased(&self) -> Vec<u16> {
        self.state().leased.iter().copied().collect()
    }
}

/// Why binding these addresses (the ones a connection's driver failed to bind) fails: each is
/// bound once more and closed at once. `None` when all of them bind now.
pub fn diagnose(udp: &[SocketAddr], tcp: &[SocketAddr]) -> Option<BindError> {
    let failures = udp
        .iter()
        .filter_map(|addr| UdpSocket::bind(addr).err().map(|e| ("UDP", addr, e)))
        .chain(tcp.iter().filter_map(|addr| TcpListener::bind(addr).err().map(|e| ("TCP", addr, e))));
    let mut first = None;
    for (protocol, addr, error) in failures {
        if error.kind() == io::ErrorKind::AddrInUse {
            return Some(BindError::InUse);
        }
        first.get_or_insert_with(|| BindError::Failed(bind_error(protocol, addr, &error)));
    }
    first
}

/// A bind error other than `EADDRINUSE`, with the OS's words: out of file descriptors or
/// buffers is `RESOURCE_EXHAUSTED`, anything else (an address not on this host, a port the
/// process may not bind) `INTERNAL`.
fn bind_error(protocol: &str, addr: &SocketAddr, error: &io::Error) -> SfuError {
    // Linux errno values (the addon's one target).
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    let message = format!("cannot bind {protocol} {addr}: {error}");
    match error.raw_os_error() {
        Some(ENOMEM | ENFILE | EMFILE | ENOBUFS) => SfuError::ResourceExhausted(message),
        _ if error.kind() == io::ErrorKind::OutOfMemory => SfuError::ResourceExhausted(message),
        _ => SfuError::Internal(message),
    }
}

/// A connection's runtime (tokio's, or the single-port one) that remembers the address of every
/// socket and listener its driver bound, to tell which of those it was given did not bind.
#[derive(Debug)]
pub struct BindRecorder {
    inner: Arc<dyn Runtime>,
    /// (TCP?, address); only the first few binds (an ICE restart binds again).
    bound: Mutex<Vec<(bool, SocketAddr)>>,
}

impl BindRecorder {
    pub fn wrapping(inner: Arc<dyn Runtime>) -> Arc<Self> {
        Arc::new(Self { inner, bound: Mutex::new(Vec::new()) })
    }

    fn record(&self, tcp: bool, addr: SocketAddr) {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        if bound.len() < 64 {
            bound.push((tcp, addr));
        }
    }

    /// Of the addresses the connection was given, the UDP and TCP ones nothing was bound on.
    /// A wildcard address is bound as one socket per interface (webrtc-rs enumerates them), and
    /// counts as bound when any of them was; port 0 matches any port.
    pub fn missing(&self, udp: &[SocketAddr], tcp: &[SocketAddr]) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let covered = |want_tcp: bool, want: &SocketAddr| {
            bound.iter().any(|(is_tcp, got)| {
                *is_tcp == want_tcp
                    && (want.port() == 0 || got.port() == want.port())
                    && if want.ip().is_unspecified() { got.is_ipv4() == want.is_ipv4() } else { got.ip() == want.ip() }
            })
        };
        (
            udp.iter().filter(|a| !covered(false, a)).copied().collect(),
            tcp.iter().filter(|a| !covered(true, a)).copied().collect(),
        )
    }
}

impl Runtime for BindRecorder {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(&self, size: usize, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(size, future)
    }

    fn wrap_udp_socket(&self, socket: UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let addr = socket.local_addr()?;
        let wrapped = self.inner.wrap_udp_socket(socket)?;
        self.record(false, addr);
        Ok(wrapped)
    }

    fn wrap_tcp_listener(&self, listener: TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let addr = listener.local_addr()?;
        let wrapped = self.inner.wrap_tcp_listener(listener)?;
        self.record(true, addr);
        Ok(wrapped)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::events::{discard, ConnectionLabel, ConnectionState, Direction};
    use crate::sfu::peer::{build_peer, ConnectionBudget, ConnectionCounter, ListenAddr, NetworkConfig, Peer, PeerContext, PeerEvents};
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // These tests bind ports 49500-49599, which no other test (Rust or JS) uses.

    #[test]
    fn leases_distinct_ports_and_returns_them_on_drop() {
        let pool = PortPool::new(vec![LOCALHOST], false, Some((49500, 49501))).unwrap();
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_ne!(a.port(), b.port());
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.lease().unwrap_err().code(), "RESOURCE_EXHAUSTED");
        drop(a);
        assert_eq!(pool.in_use(), 1);
        let c = pool.lease().unwrap();
        assert_ne!(c.port(), b.port());
    }

    #[test]
    fn leases_go_round_the_range() {
        let pool = PortPool::new(vec![LOCALHOST], false, Some((49502, 49504))).unwrap();
        let a = pool.lease().unwrap();
        assert_eq!(a.port(), 49502);
        drop(a);
        let ports: Vec<u16> = (0..3).map(|_| pool.lease().unwrap()).map(|l| l.port()).collect();
        assert_eq!(ports, [49503, 49504, 49502], "a port just given back is the last handed out again");
    }

    #[test]
    fn leasing_binds_nothing() {
        // The lease is no check: a port another socket holds is handed out, and binding it is
        // what finds out (see the tests through build_peer below).
        let squatter = UdpSocket::bind((LOCALHOST, 49505)).unwrap();
        let pool = PortPool::new(vec![LOCALHOST], false, Some((49505, 49505))).unwrap();
        assert_eq!(pool.lease().unwrap().port(), 49505);
        drop(squatter);
    }

    #[test]
    fn a_port_set_aside_is_skipped_and_out_of_ports_says_why() {
        let pool = PortPool::new(vec![LOCALHOST], false, Some((49506, 49507))).unwrap();
        pool.lease().unwrap().set_aside();
        assert_eq!(pool.in_use(), 0);
        let b = pool.lease().unwrap();
        assert_eq!(b.port(), 49507);
        let err = pool.lease().unwrap_err();
        assert_eq!(err.code(), "RESOURCE_EXHAUSTED");
        assert!(err.to_string().contains("1 leased by this server, 1 held by other processes"), "{err}");
    }

    #[test]
    fn rejects_bad_ranges_and_defaults_to_ephemeral() {
        assert_eq!(PortPool::new(vec![LOCALHOST], false, Some((10, 9))).unwrap_err().code(), "INVALID_ARGUMENT");
        assert_eq!(PortPool::new(vec![LOCALHOST], false, Some((0, 9))).unwrap_err().code(), "INVALID_ARGUMENT");
        let pool = PortPool::new(vec![LOCALHOST], false, None).unwrap();
        assert_eq!(pool.lease().unwrap().port(), 0);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn diagnose_tells_a_taken_port_from_other_errors() {
        let squatter = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let taken = squatter.local_addr().unwrap();
        assert!(matches!(diagnose(&[taken], &[]), Some(BindError::InUse)));
        let tcp_squatter = TcpListener::bind((LOCALHOST, 0)).unwrap();
        assert!(matches!(diagnose(&[], &[tcp_squatter.local_addr().unwrap()]), Some(BindError::InUse)));
        // An address this host does not have (TEST-NET-2).
        let elsewhere: SocketAddr = "198.51.100.77:49508".parse().unwrap();
        match diagnose(&[elsewhere], &[]) {
            Some(BindError::Failed(e)) => {
                assert_eq!(e.code(), "INTERNAL");
                assert!(e.to_string().starts_with("cannot bind UDP 198.51.100.77:49508: "), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(diagnose(&["127.0.0.1:0".parse().unwrap()], &[]).is_none());
    }

    // --- through build_peer: real webrtc-rs connections binding real ports ---

    struct NoEvents;
    impl PeerEvents for NoEvents {}

    struct Server {
        net: NetworkConfig,
        pool: Arc<PortPool>,
        budget: ConnectionBudget,
        live: Arc<ConnectionCounter>,
        sink: crate::sfu::events::EventSink,
        states: Arc<crate::sfu::stats::ConnectionStates>,
        totals: Arc<crate::sfu::stats::ForwardTotals>,
    }

    impl Server {
        fn new(ips: &[IpAddr], tcp: bool, range: (u16, u16)) -> Self {
            Self {
                net: NetworkConfig {
                    listen: ips.iter().map(|&ip| ListenAddr { ip, announced_ip: None }).collect(),
                    tcp,
                    mux: None,
                },
                pool: PortPool::new(ips.to_vec(), tcp, Some(range)).unwrap(),
                budget: ConnectionBudget::new(None),
                live: Arc::new(ConnectionCounter::default()),
                sink: discard(),
                states: Arc::default(),
                totals: Arc::default(),
            }
        }

        async fn connect(&self) -> SfuResult<Peer> {
            let ctx = PeerContext {
                net: &self.net,
                ports: &self.pool,
                budget: &self.budget,
                live: &self.live,
                sink: &self.sink,
                states: &self.states,
                totals: &self.totals,
            };
            let label = ConnectionLabel { room_id: "r".into(), user_id: "u".into(), producer_id: "u".into(), direction: Direction::Upstream };
            let slot = self.budget.reserve(1)?.pop().expect("one slot reserved");
            build_peer(ctx, slot, label, NoEvents).await
        }
    }

    fn bound_by_someone(addr: SocketAddr) -> bool {
        UdpSocket::bind(addr).is_err()
    }

    #[tokio::test]
    async fn a_connection_skips_a_port_another_socket_holds() {
        let squatter = UdpSocket::bind((LOCALHOST, 49520)).unwrap();
        let server = Server::new(&[LOCALHOST], false, (49520, 49522));
        let peer = server.connect().await.unwrap();
        assert_eq!(server.pool.leased(), [49521], "49520 was taken: the connection bound the next port");
        assert!(bound_by_someone("127.0.0.1:49521".parse().unwrap()));
        // 49520 is set aside: the next connection does not even try it.
        drop(squatter);
        let second = server.connect().await.unwrap();
        assert_eq!(server.pool.leased(), [49521, 49522]);
        assert_eq!(server.budget.open(), 2, "the failed try left no connection counted");
        let up = Direction::Upstream.index();
        assert_eq!(server.states.read().now[up].iter().sum::<u64>(), 2, "two connections in the state counts");
        for p in [peer, second] {
            p.close().await;
        }
        assert_eq!(server.pool.in_use(), 0);
        assert_eq!(server.budget.open(), 0);
        let states = server.states.read();
        assert_eq!(states.now[up], [0; 6], "closed connections leave the state counts");
        assert_eq!(states.entered[up][ConnectionState::Closed.index()], 2);
    }

    #[tokio::test]
    async fn with_tcp_a_port_taken_for_tcp_only_is_skipped_too() {
        // UDP binds on 49530, TCP does not: webrtc-rs would build a connection without its TCP
        // candidate; the half-built one is closed and the next port tried.
        let squatter = TcpListener::bind((LOCALHOST, 49530)).unwrap();
        let server = Server::new(&[LOCALHOST], true, (49530, 49531));
        let peer = server.connect().await.unwrap();
        assert_eq!(server.pool.leased(), [49531]);
        peer.close().await;
        drop(peer);
        // The half-built connection's UDP socket on 49530 is gone.
        assert!(!bound_by_someone("127.0.0.1:49530".parse().unwrap()));
        drop(squatter);
    }

    #[tokio::test]
    async fn every_port_taken_is_out_of_ports_with_a_clear_message() {
        let squatters: Vec<_> = (49540..=49541).map(|p| UdpSocket::bind((LOCALHOST, p)).unwrap()).collect();
        let server = Server::new(&[LOCALHOST], false, (49540, 49541));
        let err = server.connect().await.err().unwrap();
        assert_eq!(err.code(), "RESOURCE_EXHAUSTED");
        assert!(err.to_string().contains("2 ports of portRange 49540-49541 in a row are held by other processes"), "{err}");
        assert_eq!((server.pool.in_use(), server.budget.open()), (0, 0));
        assert_eq!(server.states.read().now, [[0; 6]; 2], "a connection never made leaves no state behind");
        // Both set aside: the next call fails at once, saying so.
        let err = server.connect().await.err().unwrap();
        assert!(err.to_string().contains("0 leased by this server, 2 held by other processes"), "{err}");
        drop(squatters);
    }

    #[tokio::test]
    async fn another_bind_error_is_reported_as_it_is() {
        let server = Server::new(&["198.51.100.77".parse().unwrap()], false, (49550, 49559));
        let err = server.connect().await.err().unwrap();
        assert_eq!(err.code(), "INTERNAL");
        assert!(err.to_string().contains("cannot bind UDP 198.51.100.77:49550: "), "{err}");
        assert_eq!((server.pool.in_use(), server.budget.open()), (0, 0));
        // The port was not set aside: nothing else held it.
        assert_eq!(server.pool.lease().unwrap().port(), 49551, "the search goes on round the range");
    }

    #[tokio::test]
    async fn two_listen_addresses_need_the_port_on_both() {
        let squatter = UdpSocket::bind(("127.0.0.3", 49560)).unwrap();
        let ips: [IpAddr; 2] = [LOCALHOST, "127.0.0.3".parse().unwrap()];
        let server = Server::new(&ips, false, (49560, 49561));
        let peer = server.connect().await.unwrap();
        assert_eq!(server.pool.leased(), [49561]);
        peer.close().await;
        drop(squatter);
    }
}
