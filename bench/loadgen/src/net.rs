//! The generator's sockets: large kernel buffers (so a burst from the server is not dropped in
//! the generator's socket), kernel receive timestamps (so latency is taken when the forwarded
//! packet reached this socket, not when this process got round to it), recvmmsg batches and
//! epoll waits (so the generator spends little per packet).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub fn configure(sock: &UdpSocket) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    let set = |level, name, value: libc::c_int| unsafe {
        libc::setsockopt(fd, level, name, &value as *const _ as *const libc::c_void, size_of::<libc::c_int>() as u32)
    };
    // FORCE variants ignore net.core.[rw]mem_max (root); fall back to the plain ones.
    if set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20) != 0 {
        set(libc::SOL_SOCKET, libc::SO_RCVBUF, 64 << 20);
    }
    if set(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20) != 0 {
        set(libc::SOL_SOCKET, libc::SO_SNDBUF, 16 << 20);
    }
    if set(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1) != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[allow(dead_code)]
pub fn rcvbuf(sock: &UdpSocket) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as u32;
    unsafe { libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &mut v as *mut _ as *mut libc::c_void, &mut len) };
    v as usize
}

pub const BATCH: usize = 32;
const BUF: usize = 2048;
const CMSG: usize = 64;

/// Buffers for one recvmmsg call.
pub struct Batch {
    bufs: Vec<[u8; BUF]>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u8; CMSG]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    pub fn new() -> Self {
        Self {
            bufs: vec![[0; BUF]; BATCH],
            addrs: vec![unsafe { zeroed() }; BATCH],
            ctrl: vec![[0; CMSG]; BATCH],
            iovs: vec![unsafe { zeroed() }; BATCH],
            hdrs: vec![unsafe { zeroed() }; BATCH],
        }
    }

    /// Up to BATCH datagrams; Ok(0) when none is waiting.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: BUF };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CMSG;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        let n = unsafe {
            libc::recvmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                // An ICMP error queued on the socket by an earlier send; nothing to read.
                io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    pub fn data(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.hdrs[i].msg_len as usize]
    }

    pub fn source(&self, i: usize) -> SocketAddr {
        let a = &self.addrs[i];
        SocketAddr::V4(SocketAddrV4::new(u32::from_be(a.sin_addr.s_addr).into(), u16::from_be(a.sin_port)))
    }

    /// The kernel's receive time (CLOCK_REALTIME ns), from SO_TIMESTAMPNS.
    pub fn kernel_ns(&self, i: usize) -> Option<u64> {
        let h = &self.hdrs[i].msg_hdr;
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }
}

pub struct Epoll {
    fd: libc::c_int,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> Self {
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0, "epoll_create1");
        Self { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; 256] }
    }

    pub fn add(&self, sock: &UdpSocket, token: u64) {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        let r = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) };
        assert_eq!(r, 0, "epoll_ctl");
    }

    /// Waits up to `timeout` (rounded up to a millisecond, 0 = poll), appending ready tokens.
    pub fn wait(&mut self, timeout: Duration, ready: &mut Vec<usize>) {
        let ms = if timeout.is_zero() { 0 } else { timeout.as_micros().div_ceil(1000).min(1000) as i32 };
        let n = unsafe { libc::epoll_wait(self.fd, self.events.as_mut_ptr(), self.events.len() as i32, ms) };
        for e in &self.events[..n.max(0) as usize] {
            ready.push(e.u64 as usize);
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}
