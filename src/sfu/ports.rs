//! Ports for peer connections. webrtc-rs 0.21 binds whatever address it is given, so a
//! configured port range is ours to hand out: one port number per connection (the same on every
//! listen address, UDP and, with ICE-TCP, TCP), returned when the connection's lease is dropped.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

use super::error::{SfuError, SfuResult};

#[derive(Debug)]
pub struct PortPool {
    ips: Vec<IpAddr>,
    /// Leased ports must be free for TCP too.
    tcp: bool,
    range: Option<(u16, u16)>,
    /// Ports of the range currently leased. Held only for set operations, never across I/O.
    leased: Mutex<BTreeSet<u16>>,
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
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if self.pool.range.is_some() {
            self.pool.leased.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.port);
        }
    }
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
        Ok(Arc::new(Self { ips, tcp, range, leased: Mutex::new(BTreeSet::new()) }))
    }

    pub fn in_use(&self) -> usize {
        self.leased.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the host has `port` free on every listen address (another process may hold one
    /// of the range). The probe sockets close at once.
    fn free_on_host(&self, port: u16) -> bool {
        self.ips.iter().all(|ip| {
            let addr = SocketAddr::new(*ip, port);
            UdpSocket::bind(addr).is_ok() && (!self.tcp || TcpListener::bind(addr).is_ok())
        })
    }

    /// Leases a port that is free both in our books and on the host. Without a range, the OS
    /// picks an ephemeral port at bind time.
    pub fn lease(self: &Arc<Self>) -> SfuResult<PortLease> {
        let Some((min, max)) = self.range else {
            return Ok(PortLease { pool: self.clone(), port: 0 });
        };
        let mut leased = self.leased.lock().unwrap_or_else(|e| e.into_inner());
        for port in min..=max {
            if leased.contains(&port) {
                continue;
            }
            if self.free_on_host(port) {
                leased.insert(port);
                return Ok(PortLease { pool: self.clone(), port });
            }
        }
        Err(SfuError::ResourceExhausted(format!(
            "no free UDP port in portRange {min}-{max} ({} leased by this server)",
            leased.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn leases_distinct_ports_and_returns_them_on_drop() {
        let pool = PortPool::new(vec![LOCALHOST], false, Some((47100, 47101))).unwrap();
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
    fn skips_ports_another_socket_holds() {
        let squatter = UdpSocket::bind((LOCALHOST, 47110)).unwrap();
        let pool = PortPool::new(vec![LOCALHOST], false, Some((47110, 47111))).unwrap();
        assert_eq!(pool.lease().unwrap().port(), 47111);
        drop(squatter);
    }

    #[test]
    fn with_tcp_a_port_must_be_free_for_tcp_too() {
        let squatter = TcpListener::bind((LOCALHOST, 47120)).unwrap();
        let udp_only = PortPool::new(vec![LOCALHOST], false, Some((47120, 47121))).unwrap();
        assert_eq!(udp_only.lease().unwrap().port(), 47120);
        let with_tcp = PortPool::new(vec![LOCALHOST], true, Some((47120, 47121))).unwrap();
        assert_eq!(with_tcp.lease().unwrap().port(), 47121);
        drop(squatter);
    }

    #[test]
    fn rejects_bad_ranges_and_defaults_to_ephemeral() {
        assert_eq!(PortPool::new(vec![LOCALHOST], false, Some((10, 9))).unwrap_err().code(), "INVALID_ARGUMENT");
        assert_eq!(PortPool::new(vec![LOCALHOST], false, Some((0, 9))).unwrap_err().code(), "INVALID_ARGUMENT");
        let pool = PortPool::new(vec![LOCALHOST], false, None).unwrap();
        assert_eq!(pool.lease().unwrap().port(), 0);
        assert_eq!(pool.in_use(), 0);
    }
}
