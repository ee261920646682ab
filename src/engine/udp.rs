//! Batched UDP I/O for the media loops: one `recvmmsg` takes every datagram the kernel holds
//! (up to a batch), one `sendmmsg` sends every datagram a loop produced in one wake-up, and a
//! run of equal-sized datagrams to one destination goes out as one GSO super-datagram
//! (`UDP_SEGMENT`) where the kernel has it. Buffers are allocated once per socket and reused:
//! nothing here allocates per packet.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams one receive call can take.
pub const RECV_BATCH: usize = 64;
/// The largest datagram a media loop receives (larger ones are truncated and dropped).
pub const MAX_DATAGRAM: usize = 1500;
/// Socket buffers sized for bursts: a keyframe to many consumers is thousands of datagrams.
const SOCKET_BUFFER: libc::c_int = 8 * 1024 * 1024;
/// At most this many segments in one GSO super-datagram (the kernel's limit is 64).
const MAX_GSO_SEGMENTS: usize = 64;

/// A UDP socket with batched receive and send.
pub struct BatchSocket {
    socket: UdpSocket,
    local: SocketAddr,
    recv: RecvBuffers,
    gso: bool,
}

/// One received datagram, borrowed from the socket's buffers until the next receive.
pub struct Received<'a> {
    pub from: SocketAddr,
    pub data: &'a mut [u8],
}

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    pub to: SocketAddr,
    pub data: &'a [u8],
}

struct RecvBuffers {
    data: Box<[[u8; MAX_DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers in `iovecs` and `headers` point into the boxes beside them, which
// move with the struct and are only used by the thread that owns the socket.
unsafe impl Send for RecvBuffers {}

impl RecvBuffers {
    fn new() -> Self {
        let mut data = vec![[0u8; MAX_DATAGRAM]; RECV_BATCH].into_boxed_slice();
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs; all-zero is valid.
        let mut addrs: Box<[libc::sockaddr_storage]> = (0..RECV_BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut iovecs: Box<[libc::iovec]> = data
            .iter_mut()
            .map(|buf| libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: MAX_DATAGRAM })
            .collect();
        let headers: Box<[libc::mmsghdr]> = (0..RECV_BATCH)
            .map(|i| {
                // SAFETY: as above.
                let mut header: libc::mmsghdr = unsafe { zeroed() };
                header.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                header.msg_hdr.msg_iov = &mut iovecs[i];
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        Self { data, addrs, iovecs, headers }
    }
}

impl BatchSocket {
    /// Binds `addr` (port 0: one the OS picks), non-blocking, with burst-sized buffers.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // Best effort: the kernel caps it at net.core.[rw]mem_max.
            set_int_option(fd, libc::SOL_SOCKET, option, SOCKET_BUFFER).ok();
        }
        let local = socket.local_addr()?;
        let gso = probe_gso(fd);
        Ok(Self { socket, local, recv: RecvBuffers::new(), gso })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the kernel takes GSO super-datagrams on this socket.
    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn as_raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// Takes every datagram waiting, up to [`RECV_BATCH`], in one system call, and hands each
    /// to `each`. Returns how many there were (0: none waiting). Truncated datagrams (over
    /// [`MAX_DATAGRAM`]) are dropped.
    pub fn recv_batch(&mut self, mut each: impl FnMut(Received<'_>)) -> io::Result<usize> {
        let r = &mut self.recv;
        for (i, header) in r.headers.iter_mut().enumerate() {
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_flags = 0;
            r.iovecs[i].iov_len = MAX_DATAGRAM;
            header.msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `r`, valid for the call.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                r.headers.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                // glibc types the flags int, musl unsigned int.
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(err) };
        }
        let n = n as usize;
        for i in 0..n {
            let header = &r.headers[i];
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let Some(from) = socket_addr(&r.addrs[i]) else { continue };
            let len = header.msg_len as usize;
            each(Received { from, data: &mut r.data[i][..len] });
        }
        Ok(n)
    }

    /// Sends `datagrams` with as few system calls as it can: runs of equal-sized datagrams to
    /// one destination as GSO super-datagrams, the rest in `sendmmsg` batches. Returns how many
    /// datagrams the kernel took; the rest (a full socket buffer) are dropped, as UDP would.
    pub fn send_batch(&mut self, datagrams: &[Transmit<'_>], scratch: &mut SendScratch) -> io::Result<usize> {
        scratch.clear();
        let mut i = 0;
        while i < datagrams.len() {
            let run = if self.gso { gso_run(&datagrams[i..]) } else { 1 };
            scratch.push(&datagrams[i..i + run]);
            i += run;
        }
        scratch.finish();
        let mut sent_messages = 0;
        while sent_messages < scratch.headers.len() {
            let remaining = &mut scratch.headers[sent_messages..];
            // SAFETY: the headers point into `scratch`, valid for the call.
            let n = unsafe {
                libc::sendmmsg(self.socket.as_raw_fd(), remaining.as_mut_ptr(), remaining.len() as libc::c_uint, libc::MSG_DONTWAIT as _)
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    // A datagram the destination refused (ICMP unreachable reported on this
                    // socket) fails that one send; skip it and go on with the rest.
                    _ if sent_messages < scratch.headers.len() && is_per_destination(&err) => {
                        sent_messages += 1;
                        continue;
                    }
                    _ => return Err(err),
                }
            }
            if n == 0 {
                break;
            }
            sent_messages += n as usize;
        }
        Ok(scratch.segments[..sent_messages].iter().sum())
    }
}

/// The host's interface addresses (IPv4, and IPv6 other than link-local), up or not.
pub fn interface_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut at = list;
        while !at.is_null() {
            let entry = &*at;
            if !entry.ifa_addr.is_null() {
                let storage = &*(entry.ifa_addr as *const libc::sockaddr_storage);
                if let Some(addr) = socket_addr(storage) {
                    let ip = addr.ip();
                    let link_local = matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
                    if !link_local && !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
            at = entry.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// An error that fails one datagram (its destination, its size, a firewall rule), not the socket:
/// the rest of the batch still goes.
fn is_per_destination(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EMSGSIZE | libc::EPERM | libc::EACCES | libc::EINVAL | libc::EADDRNOTAVAIL)
    )
}

/// How many datagrams from the start of `datagrams` can go as one GSO super-datagram: same
/// destination, same size (the last may be shorter), within the kernel's limits.
fn gso_run(datagrams: &[Transmit<'_>]) -> usize {
    let first = &datagrams[0];
    let size = first.data.len();
    let mut n = 1;
    let mut total = size;
    while n < datagrams.len() && n < MAX_GSO_SEGMENTS {
        let next = &datagrams[n];
        if next.to != first.to || next.data.len() > size || total + next.data.len() > 65_000 {
            break;
        }
        total += next.data.len();
        n += 1;
        if next.data.len() < size {
            break; // a shorter segment ends a run
        }
    }
    n
}

/// Reusable space for one `send_batch`: the message headers, their addresses and iovecs, and
/// the GSO control messages. Grows to the largest batch seen, then allocates no more.
#[derive(Default)]
pub struct SendScratch {
    headers: Vec<libc::mmsghdr>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    /// (first iovec, iovec count, segment size) per message, until `finish` makes the headers.
    messages: Vec<(usize, usize, u16)>,
    segments: Vec<usize>,
    control: Vec<[u64; 4]>,
}

// SAFETY: the raw pointers are rebuilt by `finish` before every use, on the owning thread.
unsafe impl Send for SendScratch {}

impl SendScratch {
    fn clear(&mut self) {
        self.headers.clear();
        self.addrs.clear();
        self.iovecs.clear();
        self.messages.clear();
        self.segments.clear();
        self.control.clear();
    }

    fn push(&mut self, run: &[Transmit<'_>]) {
        let first = self.iovecs.len();
        for t in run {
            self.iovecs.push(libc::iovec { iov_base: t.data.as_ptr() as *mut _, iov_len: t.data.len() });
        }
        self.addrs.push(sockaddr_of(run[0].to));
        let segment = if run.len() > 1 { run[0].data.len() as u16 } else { 0 };
        self.messages.push((first, run.len(), segment));
        self.segments.push(run.len());
    }

    /// Makes the headers once every vector has stopped growing (their pointers are final).
    fn finish(&mut self) {
        self.control.resize(self.messages.len(), [0; 4]);
        for (m, &(first, count, segment)) in self.messages.iter().enumerate() {
            // SAFETY: mmsghdr is a plain C struct; all-zero is valid.
            let mut header: libc::mmsghdr = unsafe { zeroed() };
            header.msg_hdr.msg_name = (&mut self.addrs[m] as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = sockaddr_len(&self.addrs[m]);
            header.msg_hdr.msg_iov = &mut self.iovecs[first];
            header.msg_hdr.msg_iovlen = count as _;
            if segment > 0 {
                let control = &mut self.control[m];
                // SAFETY: `control` is 32 bytes, aligned for cmsghdr, enough for one u16 cmsg.
                unsafe {
                    let space = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
                    header.msg_hdr.msg_control = control.as_mut_ptr().cast();
                    header.msg_hdr.msg_controllen = space as _;
                    let cmsg = libc::CMSG_FIRSTHDR(&header.msg_hdr);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
                }
            }
            self.headers.push(header);
        }
    }
}

pub(crate) fn set_int_option(fd: i32, level: libc::c_int, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a plain setsockopt with an int value.
    let r = unsafe {
        libc::setsockopt(fd, level, option, (&value as *const libc::c_int).cast(), size_of::<libc::c_int>() as libc::socklen_t)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this kernel knows `UDP_SEGMENT` (Linux 4.18+): reading the option succeeds.
fn probe_gso(fd: i32) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a plain getsockopt into an int.
    unsafe { libc::getsockopt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, (&mut value as *mut libc::c_int).cast(), &mut len) == 0 }
}

fn sockaddr_of(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero sockaddr_storage is valid; the casts write the family's own layout.
    unsafe {
        let mut storage: libc::sockaddr_storage = zeroed();
        match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
            }
        }
        storage
    }
}

fn sockaddr_len(storage: &libc::sockaddr_storage) -> libc::socklen_t {
    if storage.ss_family == libc::AF_INET6 as libc::sa_family_t {
        size_of::<libc::sockaddr_in6>() as libc::socklen_t
    } else {
        size_of::<libc::sockaddr_in>() as libc::socklen_t
    }
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family says which layout the kernel wrote.
    unsafe {
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                let sin = &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (BatchSocket, BatchSocket) {
        let a = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        (a, b)
    }

    /// Receives until `want` datagrams arrived or a second passed.
    fn receive(socket: &mut BatchSocket, want: usize) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let mut got = Vec::new();
        let mut calls = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.len() < want && Instant::now() < deadline {
            let n = socket.recv_batch(|r| got.push((r.from, r.data.to_vec()))).unwrap();
            if n > 0 {
                calls += 1;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        (got, calls)
    }

    #[test]
    fn a_batch_of_mixed_datagrams_arrives_whole_and_in_order() {
        let (mut a, mut b) = pair();
        let payloads: Vec<Vec<u8>> = (0..200u32).map(|i| vec![(i % 251) as u8; 20 + (i as usize % 7) * 100]).collect();
        let batch: Vec<Transmit<'_>> = payloads.iter().map(|p| Transmit { to: b.local_addr(), data: p }).collect();
        let mut scratch = SendScratch::default();
        assert_eq!(a.send_batch(&batch, &mut scratch).unwrap(), 200);
        let (got, calls) = receive(&mut b, 200);
        assert_eq!(got.len(), 200);
        assert!(calls < 200, "received in batches, not one by one ({calls} calls)");
        for (i, (from, data)) in got.iter().enumerate() {
            assert_eq!(*from, a.local_addr());
            assert_eq!(data, &payloads[i], "datagram {i}");
        }
    }

    #[test]
    fn equal_datagrams_to_one_destination_go_as_gso_and_arrive_as_separate_datagrams() {
        let (mut a, mut b) = pair();
        let payloads: Vec<Vec<u8>> = (0..130u8).map(|i| vec![i; 1200]).chain([vec![255u8; 300]]).collect();
        let batch: Vec<Transmit<'_>> = payloads.iter().map(|p| Transmit { to: b.local_addr(), data: p }).collect();
        let mut scratch = SendScratch::default();
        assert_eq!(a.send_batch(&batch, &mut scratch).unwrap(), payloads.len());
        if a.gso() {
            assert!(scratch.headers.len() <= 3, "{} messages for one run of 131", scratch.headers.len());
        }
        let (got, _) = receive(&mut b, payloads.len());
        assert_eq!(got.len(), payloads.len(), "every segment arrived as its own datagram");
        for (i, (_, data)) in got.iter().enumerate() {
            assert_eq!(data, &payloads[i]);
        }
    }

    #[test]
    fn runs_break_at_another_destination_or_a_larger_datagram() {
        let x: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let y: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let (big, small) = (vec![0u8; 100], vec![0u8; 50]);
        fn t(to: SocketAddr, data: &[u8]) -> Transmit<'_> {
            Transmit { to, data }
        }
        let ds = [t(x, &big), t(x, &big), t(y, &big), t(y, &small), t(y, &big)];
        assert_eq!(gso_run(&ds), 2);
        assert_eq!(gso_run(&ds[2..]), 2, "a shorter one ends the run");
        assert_eq!(gso_run(&ds[4..]), 1);
    }

    #[test]
    fn an_empty_socket_receives_nothing_without_blocking() {
        let (_a, mut b) = pair();
        let started = Instant::now();
        assert_eq!(b.recv_batch(|_| panic!("nothing was sent")).unwrap(), 0);
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn addresses_survive_the_round_trip_through_sockaddr() {
        for addr in ["127.0.0.1:5004", "[::1]:5004", "[fe80::1%2]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(socket_addr(&sockaddr_of(addr)), Some(addr));
        }
    }
}
