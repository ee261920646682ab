#![recursion_limit = "512"]
//! Load generator for the SFU benchmark.
//!
//! Many synthetic WebRTC clients (str0m, sans-IO), driven by a few threads of this one process,
//! publish audio (Opus-sized, 50 packets/s) and/or video (VP8-sized at a chosen bitrate, 30 fps)
//! and subscribe to each other through an SFU's HTTP control API (the routes of the media-server
//! spec, served by `bench/servers/*.mjs`). Every RTP payload ends with a stamp (stream id,
//! sequence, send time on CLOCK_MONOTONIC), so a receiver in this process measures the one-way
//! latency the server adds, and loss per (subscriber connection, stream).
//!
//! Scenarios: `room` (N users, all publishing and subscribing), `fanout` (one publisher, M
//! subscribers) and `direct` (M publisher→subscriber pairs inside this process, no server: the
//! generator's own floor and a check that it is not the bottleneck).
//!
//! Prints one JSON object (the figures of the run) on stdout; progress goes to stderr.

mod http;
mod net;
mod stamp;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use stamp::{now_ns, Stamp, STAMP_LEN};

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Clone, Debug)]
struct Args {
    server: String,
    scenario: String,
    n: usize,
    video_kbps: u32,
    audio: bool,
    fps: u32,
    warmup: f64,
    duration: f64,
    threads: usize,
    port_base: u16,
    server_pids: Vec<(String, u32)>,
    setup_timeout: f64,
    room: String,
    /// `--rooms K`: K independent rooms of the scenario at once (rooms `<room>-0` .. `<room>-K-1`,
    /// user ids numbered across them), e.g. to load several media loops of one server.
    rooms: usize,
    /// Shell commands run just before the window opens and just after it closes (e.g. to
    /// switch a profiler's instrumentation on and off around the measured packets).
    hook_start: Option<String>,
    hook_end: Option<String>,
    /// `client` (default): every client connection has a UDP socket of its own, bound from
    /// `client_port_base` up, so each is its own 5-tuple even against a server whose
    /// connections share one port. `thread`: the clients of a generator thread share that
    /// thread's socket (the server's per-connection port tells them apart), as before.
    sockets: String,
    client_port_base: u16,
}

fn run_hook(cmd: &Option<String>) {
    if let Some(c) = cmd {
        let ok = std::process::Command::new("sh").arg("-c").arg(c).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            eprintln!("hook failed: {c}");
        }
    }
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "http://127.0.0.1:50000".into(),
        scenario: "room".into(),
        n: 2,
        video_kbps: 1000,
        audio: true,
        fps: 30,
        warmup: 3.0,
        duration: 10.0,
        threads: 2,
        port_base: 50010,
        server_pids: vec![],
        setup_timeout: 60.0,
        room: "bench".into(),
        rooms: 1,
        hook_start: None,
        hook_end: None,
        sockets: "client".into(),
        client_port_base: 20000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let k = argv[i].as_str();
        let mut v = || {
            i += 1;
            argv.get(i).cloned().unwrap_or_else(|| panic!("{k} needs a value"))
        };
        match k {
            "--server" => a.server = v(),
            "--scenario" => a.scenario = v(),
            "--n" | "--m" => a.n = v().parse().expect("--n"),
            "--video-kbps" => a.video_kbps = v().parse().expect("--video-kbps"),
            "--no-audio" => a.audio = false,
            "--fps" => a.fps = v().parse().expect("--fps"),
            "--warmup" => a.warmup = v().parse().expect("--warmup"),
            "--duration" => a.duration = v().parse().expect("--duration"),
            "--threads" => a.threads = v().parse().expect("--threads"),
            "--port-base" => a.port_base = v().parse().expect("--port-base"),
            "--setup-timeout" => a.setup_timeout = v().parse().expect("--setup-timeout"),
            "--room" => a.room = v(),
            "--rooms" => a.rooms = v().parse().expect("--rooms"),
            "--hook-start" => a.hook_start = Some(v()),
            "--hook-end" => a.hook_end = Some(v()),
            "--sockets" => a.sockets = v(),
            "--client-port-base" => a.client_port_base = v().parse().expect("--client-port-base"),
            // name=pid,name=pid: processes whose CPU and RSS count as the server's
            "--server-pids" => {
                a.server_pids = v()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        let (name, pid) = s.split_once('=').expect("--server-pids name=pid,...");
                        (name.to_string(), pid.parse().expect("pid"))
                    })
                    .collect()
            }
            other => panic!("unknown argument {other}"),
        }
        i += 1;
    }
    assert!(a.threads >= 1);
    assert!(a.sockets == "client" || a.sockets == "thread", "--sockets client|thread");
    a
}

// ---------------------------------------------------------------------------------------------
// Shared state between the control thread and the media threads

/// Measurement window on the stamp clock (ns); 0 = not set. Sends and receipts are counted
/// when the packet's send stamp falls inside [start, end).
struct Shared {
    window_start: AtomicU64,
    window_end: AtomicU64,
}

impl Shared {
    fn in_window(&self, t: u64) -> bool {
        let s = self.window_start.load(Ordering::Relaxed);
        let e = self.window_end.load(Ordering::Relaxed);
        s != 0 && t >= s && (e == 0 || t < e)
    }
}

struct StreamOut {
    kind: MediaKind,
    ssrc: Ssrc,
    pt: Pt,
    id: u32,
    seq: u64,
    gen_seq: u32,
    ts_base: u32,
    next_due: Instant,
    interval: Duration,
    packets_per_frame: usize,
    packet_payload: usize,
    keyframe_pending: bool,
    last_keyframe: Option<Instant>,
    picture_id: u16,
    sent_in_window: u64,
    sent_total: u64,
    /// How late each send was against its schedule (µs), for the generator's own health.
    lag_us: Vec<u32>,
}

struct RecvStream {
    bits: Vec<u64>,
    distinct: u64,
    dups: u64,
}

impl RecvStream {
    fn mark(&mut self, seq: u32) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1024, 0);
        }
        let fresh = self.bits[w] & (1 << b) == 0;
        self.bits[w] |= 1 << b;
        if fresh {
            self.distinct += 1;
        } else {
            self.dups += 1;
        }
        fresh
    }
}

struct PeerState {
    name: String,
    rtc: Rtc,
    sock: usize,
    remote: SocketAddr,
    user: usize,
    next_timeout: Instant,
    outs: Vec<StreamOut>,
    /// Stream id -> what this connection received of it in the window.
    recv: HashMap<u32, RecvStream>,
    first_rx_ns: u64,
    connected_ns: u64,
    rx_packets: u64,
    rx_unstamped: u64,
    keyframe_requests: u64,
    dead: Option<String>,
}

enum Cmd {
    Add(Box<PeerState>),
    /// A peer with a socket of its own (the direct scenario's publishers).
    AddWithSocket(Box<PeerState>, UdpSocket),
    Report(mpsc::Sender<WorkerReport>),
    Stop,
}

#[derive(Default)]
struct WorkerReport {
    lat_audio: Vec<u32>,
    lat_video: Vec<u32>,
    lat_app: Vec<u32>,
    no_kernel_ts: u64,
    /// (peer name, stream id, distinct received in window, duplicates)
    recv: Vec<(String, u32, u64, u64)>,
    /// (stream id, sent in window, sent total)
    sent: Vec<(u32, u64, u64)>,
    lag_us: Vec<u32>,
    /// (peer name, user, first packet ns, connected ns, rx packets, keyframe requests, dead)
    peers: Vec<(String, usize, u64, u64, u64, u64, Option<String>)>,
    rx_unstamped: u64,
    unknown_source: u64,
}

struct WorkerHandle {
    tx: mpsc::Sender<Cmd>,
    addr: SocketAddr,
    join: std::thread::JoinHandle<()>,
}

// ---------------------------------------------------------------------------------------------
// Media thread

struct Worker {
    sockets: Vec<UdpSocket>,
    /// Each socket's local address (read once, not per datagram).
    locals: Vec<SocketAddr>,
    peers: Vec<PeerState>,
    by_addr: HashMap<(usize, SocketAddr), usize>,
    shared: Arc<Shared>,
    lat_audio: Vec<u32>,
    lat_video: Vec<u32>,
    /// Latency to when this process had decrypted the packet (includes the generator's own
    /// queueing), for comparison with the kernel-timestamp figures.
    lat_app: Vec<u32>,
    unknown_source: u64,
    /// Kernel receive time of the datagram being handled.
    rx_kernel_ns: u64,
    no_kernel_ts: u64,
}

fn worker_main(sockets: Vec<UdpSocket>, rx: mpsc::Receiver<Cmd>, shared: Arc<Shared>) {
    let epoll = net::Epoll::new();
    for (i, s) in sockets.iter().enumerate() {
        net::configure(s).expect("socket options");
        epoll.add(s, i as u64);
    }
    let locals = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let mut w = Worker {
        sockets,
        locals,
        peers: Vec::new(),
        by_addr: HashMap::new(),
        shared,
        lat_audio: Vec::with_capacity(1 << 20),
        lat_video: Vec::with_capacity(1 << 20),
        lat_app: Vec::with_capacity(1 << 20),
        unknown_source: 0,
        rx_kernel_ns: 0,
        no_kernel_ts: 0,
    };
    let mut epoll = epoll;
    let mut batch = net::Batch::new();
    let mut ready: Vec<usize> = Vec::new();
    loop {
        loop {
            match rx.try_recv() {
                Ok(Cmd::Add(p)) => w.add(*p),
                Ok(Cmd::AddWithSocket(mut p, s)) => {
                    net::configure(&s).expect("socket options");
                    epoll.add(&s, w.sockets.len() as u64);
                    w.locals.push(s.local_addr().unwrap());
                    w.sockets.push(s);
                    p.sock = w.sockets.len() - 1;
                    w.add(*p);
                }
                Ok(Cmd::Report(tx)) => {
                    let _ = tx.send(w.report());
                }
                Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        // Everything the ready sockets hold, then timers and media due.
        for &si in &ready {
            loop {
                let n = batch.recv(&w.sockets[si]).expect("recvmmsg");
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                for i in 0..n {
                    w.rx_kernel_ns = batch.kernel_ns(i).unwrap_or_else(|| {
                        w.no_kernel_ts += 1;
                        now_ns()
                    });
                    w.receive(si, batch.source(i), batch.data(i), now);
                }
                if n < net::BATCH {
                    break;
                }
            }
        }
        ready.clear();
        let now = Instant::now();
        let mut next = now + Duration::from_millis(5);
        for i in 0..w.peers.len() {
            w.service(i, now);
            let p = &w.peers[i];
            if p.dead.is_none() {
                next = next.min(p.next_timeout);
                for o in &p.outs {
                    next = next.min(o.next_due);
                }
            }
        }
        epoll.wait(next.saturating_duration_since(Instant::now()), &mut ready);
    }
}

impl Worker {
    fn add(&mut self, p: PeerState) {
        let idx = self.peers.len();
        self.by_addr.insert((p.sock, p.remote), idx);
        self.peers.push(p);
        let now = Instant::now();
        self.drain(idx, now);
    }

    fn receive(&mut self, si: usize, source: SocketAddr, data: &[u8], now: Instant) {
        let destination = self.locals[si];
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        let idx = match self.by_addr.get(&(si, source)) {
            Some(&i) => i,
            None => match self.peers.iter().position(|p| p.sock == si && p.dead.is_none() && p.rtc.accepts(&input)) {
                Some(i) => {
                    self.by_addr.insert((si, source), i);
                    i
                }
                None => {
                    self.unknown_source += 1;
                    return;
                }
            },
        };
        if self.peers[idx].dead.is_some() {
            return;
        }
        trace_packet("in ", &self.peers[idx].name, data);
        note_srtp_profile(false, &self.peers[idx].name, data);
        if let Err(e) = self.peers[idx].rtc.handle_input(input) {
            self.peers[idx].dead = Some(format!("handle_input: {e}"));
            return;
        }
        self.drain(idx, now);
    }

    /// Timers and media due on one peer.
    fn service(&mut self, idx: usize, now: Instant) {
        if self.peers[idx].dead.is_some() {
            return;
        }
        if self.peers[idx].next_timeout <= now {
            if let Err(e) = self.peers[idx].rtc.handle_input(Input::Timeout(now)) {
                self.peers[idx].dead = Some(format!("timeout: {e}"));
                return;
            }
            self.drain(idx, now);
        }
        for oi in 0..self.peers[idx].outs.len() {
            while self.peers[idx].outs[oi].next_due <= now && self.peers[idx].dead.is_none() {
                self.send_frame(idx, oi);
            }
        }
    }

    /// Sends one frame (video: several packets, audio: one), handing each packet to the socket
    /// before stamping the next, so a stamp is taken just before its own packet leaves.
    fn send_frame(&mut self, idx: usize, oi: usize) {
        let now = Instant::now();
        let (n, keyframe, frame_index, rtp_time) = {
            let o = &mut self.peers[idx].outs[oi];
            let due = o.next_due;
            o.next_due += o.interval;
            if now.duration_since(due) > Duration::from_millis(200) {
                // Far behind (the thread was starved): skip ahead rather than burst.
                o.next_due = now + o.interval;
            }
            o.lag_us.push(now.duration_since(due).as_micros().min(u32::MAX as u128) as u32);
            let clock = if o.kind == MediaKind::Video { 90_000u64 } else { 48_000 };
            // RTP time from the frame count, so it is regular whatever the thread's lag.
            let frame_index = o.sent_frames();
            let rtp_time = o.ts_base.wrapping_add((frame_index * clock * o.interval.as_micros() as u64 / 1_000_000) as u32);
            let keyframe = o.kind == MediaKind::Video
                && (o.keyframe_pending || o.last_keyframe.map_or(true, |t| now.duration_since(t) > Duration::from_secs(5)));
            if keyframe {
                o.keyframe_pending = false;
                o.last_keyframe = Some(now);
            }
            o.picture_id = (o.picture_id + 1) & 0x7fff;
            (o.packets_per_frame, keyframe, frame_index, rtp_time)
        };
        for k in 0..n {
            let in_window = {
                let t = now_ns();
                let shared = &self.shared;
                let p = &mut self.peers[idx];
                let o = &mut p.outs[oi];
                let mut payload = vec![0u8; o.packet_payload];
                if o.kind == MediaKind::Video {
                    stamp::vp8_header(&mut payload, k == 0, keyframe, o.picture_id, (frame_index & 0xff) as u8);
                } else {
                    payload[0] = 0xfc; // Opus TOC: CELT fullband 20 ms, mono, one frame
                }
                Stamp { stream: o.id, seq: o.gen_seq, sent_ns: t }.write(&mut payload);
                let in_window = shared.in_window(t);
                o.sent_total += 1;
                o.gen_seq += 1;
                let w = RtpWrite::new(o.pt, o.seq.into(), rtp_time, now, payload)
                    .marker(o.kind == MediaKind::Audio || k == n - 1)
                    .nackable(true);
                o.seq += 1;
                let ssrc = o.ssrc;
                let mut api = p.rtc.direct_api();
                match api.stream_tx(&ssrc) {
                    Some(stream) => stream.write_rtp(w),
                    None => {
                        drop(api);
                        p.dead = Some("no tx stream".into());
                        return;
                    }
                }
                in_window
            };
            if in_window {
                self.peers[idx].outs[oi].sent_in_window += 1;
            }
            self.drain(idx, Instant::now());
        }
    }

    fn drain(&mut self, idx: usize, now: Instant) {
        let mut rounds = 0;
        loop {
            let p = &mut self.peers[idx];
            let out = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    p.dead = Some(format!("poll_output: {e}"));
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    if t <= now && rounds < 4 {
                        rounds += 1;
                        if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                            p.dead = Some(format!("timeout: {e}"));
                            return;
                        }
                        continue;
                    }
                    p.next_timeout = t.max(now + Duration::from_micros(100));
                    return;
                }
                Output::Transmit(t) => {
                    trace_packet("out", &p.name, &t.contents);
                    note_srtp_profile(true, &p.name, &t.contents);
                    let _ = self.sockets[p.sock].send_to(&t.contents, t.destination);
                }
                Output::Event(e) => self.event(idx, e),
            }
        }
    }

    fn event(&mut self, idx: usize, e: Event) {
        let p = &mut self.peers[idx];
        match e {
            Event::Connected => p.connected_ns = now_ns(),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                p.dead = Some("ice disconnected".into());
            }
            Event::KeyframeRequest(_) => {
                p.keyframe_requests += 1;
                for o in p.outs.iter_mut().filter(|o| o.kind == MediaKind::Video) {
                    o.keyframe_pending = true;
                }
            }
            Event::RtpPacket(pkt) => {
                let t = self.rx_kernel_ns;
                p.rx_packets += 1;
                if p.first_rx_ns == 0 {
                    p.first_rx_ns = t;
                }
                let Some(st) = Stamp::read(&pkt.payload) else {
                    p.rx_unstamped += 1;
                    return;
                };
                if !self.shared.in_window(st.sent_ns) {
                    return;
                }
                let r = p.recv.entry(st.stream).or_insert_with(|| RecvStream { bits: Vec::new(), distinct: 0, dups: 0 });
                if r.mark(st.seq) {
                    let lat = t.saturating_sub(st.sent_ns).min(u32::MAX as u64) as u32;
                    self.lat_app.push(now_ns().saturating_sub(st.sent_ns).min(u32::MAX as u64) as u32);
                    if pkt.header.payload_type.is_audio_guess(pkt.payload.len()) {
                        self.lat_audio.push(lat);
                    } else {
                        self.lat_video.push(lat);
                    }
                }
            }
            _ => {}
        }
    }

    fn report(&mut self) -> WorkerReport {
        let mut r = WorkerReport {
            lat_audio: std::mem::take(&mut self.lat_audio),
            lat_video: std::mem::take(&mut self.lat_video),
            lat_app: std::mem::take(&mut self.lat_app),
            unknown_source: self.unknown_source,
            no_kernel_ts: self.no_kernel_ts,
            ..Default::default()
        };
        for p in &mut self.peers {
            for (id, s) in &p.recv {
                r.recv.push((p.name.clone(), *id, s.distinct, s.dups));
            }
            for o in &mut p.outs {
                r.sent.push((o.id, o.sent_in_window, o.sent_total));
                r.lag_us.append(&mut o.lag_us);
            }
            r.rx_unstamped += p.rx_unstamped;
            r.peers.push((p.name.clone(), p.user, p.first_rx_ns, p.connected_ns, p.rx_packets, p.keyframe_requests, p.dead.clone()));
        }
        r
    }
}

/// The SRTP protection profile each connection negotiated, read from the DTLS 1.2 ServerHello's
/// use_srtp extension: counts per "up|down <profile> (DTLS server: gen|server)". Only datagrams
/// that start a DTLS handshake record of type ServerHello are parsed (the handshake, not media).
static SRTP_PROFILES: std::sync::Mutex<std::collections::BTreeMap<String, u64>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

fn note_srtp_profile(sent: bool, name: &str, d: &[u8]) {
    // record header 13 bytes (type 22 = handshake), handshake header 12 bytes (type 2 = ServerHello)
    if d.len() < 62 || d[0] != 22 || d[13] != 2 {
        return;
    }
    let profile = (|| -> Option<u16> {
        let mut i = 25 + 2 + 32; // body: version, random
        i += 1 + *d.get(i)? as usize; // session id
        i += 2 + 1; // cipher suite, compression
        let ext_end = i + 2 + u16::from_be_bytes([*d.get(i)?, *d.get(i + 1)?]) as usize;
        i += 2;
        while i + 4 <= ext_end.min(d.len()) {
            let typ = u16::from_be_bytes([d[i], d[i + 1]]);
            let len = u16::from_be_bytes([d[i + 2], d[i + 3]]) as usize;
            if typ == 0x000e && len >= 4 {
                return Some(u16::from_be_bytes([*d.get(i + 6)?, *d.get(i + 7)?]));
            }
            i += 4 + len;
        }
        None
    })();
    let pname = match profile {
        Some(0x0001) => "SRTP_AES128_CM_HMAC_SHA1_80".to_string(),
        Some(0x0002) => "SRTP_AES128_CM_HMAC_SHA1_32".to_string(),
        Some(0x0007) => "SRTP_AEAD_AES_128_GCM".to_string(),
        Some(0x0008) => "SRTP_AEAD_AES_256_GCM".to_string(),
        Some(x) => format!("0x{x:04x}"),
        None => "none".to_string(),
    };
    let dir = if name.ends_with(":up") { "up" } else { "down" };
    let by = if sent { "gen" } else { "server" };
    *SRTP_PROFILES.lock().unwrap().entry(format!("{dir} {pname} (DTLS server: {by})")).or_insert(0) += 1;
}

/// With LOADGEN_TRACE set: one stderr line per datagram (time, direction, connection, kind).
fn trace_packet(dir: &str, name: &str, data: &[u8]) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("LOADGEN_TRACE").is_some()) {
        return;
    }
    let kind = match data.first() {
        Some(0..=3) => format!("STUN {:02x}{:02x}", data[0], data.get(1).copied().unwrap_or(0)),
        Some(20..=63) => format!("DTLS ct={} hs={}", data[0], data.get(13).copied().unwrap_or(0)),
        Some(128..=191) => {
            let pt = data.get(1).copied().unwrap_or(0);
            if (192..=223).contains(&pt) { format!("RTCP {pt}") } else { format!("RTP pt={}", pt & 0x7f) }
        }
        _ => "?".into(),
    };
    eprintln!("{:.3} {dir} {name} {kind} {}B", (now_ns() % 100_000_000_000) as f64 / 1e6, data.len());
}

/// Audio payloads are small (Opus-sized) and video ones large: the stamp does not carry the
/// kind, the size tells it apart (audio ≈ 100 bytes, video ≥ 300).
trait AudioGuess {
    fn is_audio_guess(&self, len: usize) -> bool;
}
impl AudioGuess for Pt {
    fn is_audio_guess(&self, len: usize) -> bool {
        len < 200
    }
}

impl StreamOut {
    fn sent_frames(&self) -> u64 {
        if self.kind == MediaKind::Video {
            self.sent_total / self.packets_per_frame as u64
        } else {
            self.sent_total
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building clients

fn rtc_config() -> RtcConfig {
    RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtp_mode(true)
        .set_stats_interval(None)
}

struct Media {
    audio: bool,
    video_kbps: u32,
    fps: u32,
}

/// A publishing client: its offer, and what to finish it with once the answer is back.
struct Publisher {
    rtc: Rtc,
    pending: SdpPendingOffer,
    mids: Vec<(MediaKind, Mid)>,
}

fn new_publisher(local: SocketAddr, media: &Media) -> (Publisher, String) {
    let mut rtc = rtc_config().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap()).unwrap();
    let mut api = rtc.sdp_api();
    let mut mids = Vec::new();
    if media.audio {
        mids.push((MediaKind::Audio, api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None)));
    }
    if media.video_kbps > 0 {
        mids.push((MediaKind::Video, api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None)));
    }
    let (offer, pending) = api.apply().expect("offer");
    let sdp = offer.to_sdp_string();
    (Publisher { rtc, pending, mids }, sdp)
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

fn finish_publisher(
    p: Publisher,
    answer_sdp: &str,
    media: &Media,
    name: String,
    user: usize,
    sock: usize,
    phase: Duration,
) -> Result<(PeerState, Vec<u32>), String> {
    let Publisher { mut rtc, pending, mids } = p;
    let remote = server_addr(answer_sdp).ok_or("no UDP candidate in the answer")?;
    let answer = SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| format!("answer: {e}"))?;
    rtc.sdp_api().accept_answer(pending, answer).map_err(|e| format!("accept_answer: {e}"))?;
    let now = Instant::now();
    let mut outs = Vec::new();
    let mut ids = Vec::new();
    for (kind, mid) in mids {
        let codec = if kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
        let pt = rtc.codec_config().find(|c| c.spec().codec == codec).ok_or("codec")?.pt();
        let ssrc = rtc.direct_api().stream_tx_by_mid(mid, None).ok_or("no tx stream for mid")?.ssrc();
        let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed) as u32;
        ids.push(id);
        let (interval, ppf, size) = if kind == MediaKind::Audio {
            (Duration::from_millis(20), 1, 100)
        } else {
            let frame_bytes = (media.video_kbps as usize * 1000 / 8) / media.fps as usize;
            let ppf = frame_bytes.div_ceil(1200).max(1);
            (Duration::from_secs_f64(1.0 / media.fps as f64), ppf, (frame_bytes / ppf).max(STAMP_LEN + 16))
        };
        outs.push(StreamOut {
            kind,
            ssrc,
            pt,
            id,
            seq: 1 + (id as u64 * 7919) % 20_000,
            gen_seq: 0,
            ts_base: (id.wrapping_mul(2_654_435_761)) & 0x7fff_ffff,
            next_due: now + phase,
            interval,
            packets_per_frame: ppf,
            packet_payload: size,
            keyframe_pending: true,
            last_keyframe: None,
            picture_id: (id as u16 * 97) & 0x7fff,
            sent_in_window: 0,
            sent_total: 0,
            lag_us: Vec::new(),
        });
    }
    Ok((new_peer(name, rtc, sock, remote, user, outs), ids))
}

fn new_subscriber(local: SocketAddr, offer_sdp: &str, name: String, user: usize, sock: usize) -> Result<(PeerState, String), String> {
    let remote = server_addr(offer_sdp).ok_or("no UDP candidate in the offer")?;
    let mut rtc = rtc_config().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap()).unwrap();
    let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| format!("offer: {e}"))?;
    let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| format!("accept_offer: {e}"))?;
    Ok((new_peer(name, rtc, sock, remote, user, vec![]), answer.to_sdp_string()))
}

fn new_peer(name: String, rtc: Rtc, sock: usize, remote: SocketAddr, user: usize, outs: Vec<StreamOut>) -> PeerState {
    PeerState {
        name,
        rtc,
        sock,
        remote,
        user,
        next_timeout: Instant::now(),
        outs,
        recv: HashMap::new(),
        first_rx_ns: 0,
        connected_ns: 0,
        rx_packets: 0,
        rx_unstamped: 0,
        keyframe_requests: 0,
        dead: None,
    }
}

/// The server's UDP host candidate (127.0.0.1 preferred) in an SDP.
fn server_addr(sdp: &str) -> Option<SocketAddr> {
    let mut found = None;
    for line in sdp.lines() {
        let Some(c) = line.strip_prefix("a=candidate:") else { continue };
        let f: Vec<&str> = c.split_whitespace().collect();
        if f.len() < 8 || !f[2].eq_ignore_ascii_case("udp") {
            continue;
        }
        let Ok(addr) = format!("{}:{}", f[4], f[5]).parse::<SocketAddr>() else { continue };
        if addr.ip().is_loopback() {
            return Some(addr);
        }
        found.get_or_insert(addr);
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Process figures

fn clk_tck() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of a process (all its threads), seconds.
fn proc_cpu(pid: &str) -> Option<f64> {
    proc_cpu_split(pid).map(|(u, s)| u + s)
}

/// (utime, stime) of a process from /proc/<pid>/stat, seconds.
fn proc_cpu_split(pid: &str) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut / clk_tck(), st / clk_tck()))
}

/// The machine's CPU time by kind (/proc/stat "cpu" line, clock ticks): user, nice, system,
/// idle, iowait, irq, softirq, steal.
fn machine_cpu() -> Vec<u64> {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| l.split_whitespace().skip(1).take(8).map(|v| v.parse().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// The machine's UDP counters (/proc/net/snmp): datagrams dropped for a full socket buffer.
fn udp_counters() -> HashMap<String, u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("Udp:")).collect();
    let mut out = HashMap::new();
    if lines.len() >= 2 {
        for (k, v) in lines[0].split_whitespace().zip(lines[1].split_whitespace()).skip(1) {
            out.insert(k.to_string(), v.parse().unwrap_or(0));
        }
    }
    out
}

fn proc_rss_kb(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))?
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64
}

fn lat_summary(mut v: Vec<u32>) -> Value {
    v.sort_unstable();
    let ms = |x: f64| (x / 1e6 * 1000.0).round() / 1000.0;
    json!({
        "samples": v.len(),
        "p50_ms": ms(percentile(&v, 0.5)),
        "p90_ms": ms(percentile(&v, 0.9)),
        "p99_ms": ms(percentile(&v, 0.99)),
        "p999_ms": ms(percentile(&v, 0.999)),
        "max_ms": ms(v.last().copied().unwrap_or(0) as f64),
    })
}

// ---------------------------------------------------------------------------------------------
// Control

struct Gen {
    args: Args,
    media: Media,
    workers: Vec<WorkerHandle>,
    http: http::Client,
    /// user index -> when its addUser was sent (ns), for users that joined with producers present
    add_ns: HashMap<usize, u64>,
    produce_ms: Vec<f64>,
    add_user_ms: Vec<f64>,
    consume_ms: Vec<f64>,
    /// Expected (subscriber connection name, producer stream ids)
    expect: Vec<(String, Vec<u32>)>,
    streams_of: HashMap<usize, Vec<u32>>,
    connections: usize,
    /// Next port to try for a client's own socket (`--sockets client`).
    next_client_port: u16,
    /// The room that add_user/produce act on (set while each room is set up).
    cur_room: String,
}

impl Gen {
    fn worker_of(&self, user: usize) -> usize {
        user % self.workers.len()
    }

    fn local(&self, user: usize) -> SocketAddr {
        self.workers[self.worker_of(user)].addr
    }

    fn add(&self, user: usize, p: PeerState, sock: Option<UdpSocket>) {
        let cmd = match sock {
            Some(s) => Cmd::AddWithSocket(Box::new(p), s),
            None => Cmd::Add(Box::new(p)),
        };
        self.workers[self.worker_of(user)].tx.send(cmd).unwrap();
    }

    /// With `--sockets client`, a socket of the new connection's own (its local address is the
    /// connection's candidate); otherwise None and the connection uses its thread's socket.
    fn client_socket(&mut self) -> Result<Option<UdpSocket>, String> {
        if self.args.sockets != "client" {
            return Ok(None);
        }
        loop {
            let port = self.next_client_port;
            if port >= 50000 {
                return Err("out of client ports (below 50000)".into());
            }
            self.next_client_port += 1;
            match UdpSocket::bind(("127.0.0.1", port)) {
                Ok(s) => return Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(format!("bind {port}: {e}")),
            }
        }
    }

    fn local_for(&self, user: usize, sock: &Option<UdpSocket>) -> SocketAddr {
        sock.as_ref().map(|s| s.local_addr().unwrap()).unwrap_or_else(|| self.local(user))
    }

    fn uid(user: usize) -> String {
        format!("u{user}")
    }

    fn add_user(&mut self, user: usize) -> Result<(), String> {
        let room = self.cur_room.clone();
        let t0 = now_ns();
        let resp = self.http.post(&format!("/rooms/{room}/users/{}", Self::uid(user)), &json!({}))?;
        self.add_user_ms.push((now_ns() - t0) as f64 / 1e6);
        let mut answers = Vec::new();
        for u in resp["users"].as_array().cloned().unwrap_or_default() {
            let Some(offer) = u["offer"]["sdp"].as_str() else { continue };
            let pid = u["id"].as_str().unwrap_or_default().to_string();
            let answer = self.subscribe(user, &pid, offer)?;
            answers.push(json!({"id": pid, "answer": {"type": "answer", "sdp": answer}}));
        }
        if !answers.is_empty() {
            self.add_ns.insert(user, t0);
            let t = now_ns();
            self.http.post(&format!("/rooms/{room}/users/{}/consume", Self::uid(user)), &json!({"answers": answers}))?;
            self.consume_ms.push((now_ns() - t) as f64 / 1e6);
        }
        Ok(())
    }

    /// A downstream connection from producer `pid` to `user`; returns the answer to send.
    fn subscribe(&mut self, user: usize, pid: &str, offer: &str) -> Result<String, String> {
        let name = format!("{pid}->{}", Self::uid(user));
        let sock = self.client_socket()?;
        let (peer, answer) = new_subscriber(self.local_for(user, &sock), offer, name.clone(), user, 0)?;
        if std::env::var_os("LOADGEN_DUMP_SDP").is_some() {
            eprintln!("--- subscribe offer\n{offer}--- answer\n{answer}");
        }
        let producer: usize = pid.trim_start_matches('u').parse().map_err(|_| format!("producer id {pid}"))?;
        self.expect.push((name, self.streams_of.get(&producer).cloned().unwrap_or_default()));
        self.add(user, peer, sock);
        self.connections += 1;
        Ok(answer)
    }

    fn produce(&mut self, user: usize, phase: Duration) -> Result<(), String> {
        let room = self.cur_room.clone();
        let sock = self.client_socket()?;
        let (publisher, offer) = new_publisher(self.local_for(user, &sock), &self.media);
        let t0 = now_ns();
        let resp = self.http.post(
            &format!("/rooms/{room}/users/{}/produce", Self::uid(user)),
            &json!({"offer": {"type": "offer", "sdp": offer}}),
        )?;
        self.produce_ms.push((now_ns() - t0) as f64 / 1e6);
        let answer = resp["answer"]["sdp"].as_str().ok_or("produce: no answer")?;
        if std::env::var_os("LOADGEN_DUMP_SDP").is_some() {
            eprintln!("--- publish offer\n{offer}--- answer\n{answer}");
        }
        let (peer, ids) = finish_publisher(publisher, answer, &self.media, format!("{}:up", Self::uid(user)), user, 0, phase)?;
        self.streams_of.insert(user, ids);
        self.add(user, peer, sock);
        self.connections += 1;
        for item in resp["outbound"].as_array().cloned().unwrap_or_default() {
            let Some(offer) = item["offer"]["sdp"].as_str() else { continue };
            let sub: usize = item["id"].as_str().unwrap_or_default().trim_start_matches('u').parse().map_err(|_| "outbound id")?;
            let answer = self.subscribe(sub, &Self::uid(user), offer)?;
            let t = now_ns();
            self.http.post(
                &format!("/rooms/{room}/users/{}/consume", Self::uid(sub)),
                &json!({"id": Self::uid(user), "answer": {"type": "answer", "sdp": answer}}),
            )?;
            self.consume_ms.push((now_ns() - t) as f64 / 1e6);
        }
        Ok(())
    }

    fn collect(&self) -> WorkerReport {
        let mut all = WorkerReport::default();
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            w.tx.send(Cmd::Report(tx)).unwrap();
            let mut r = rx.recv().unwrap();
            all.lat_audio.append(&mut r.lat_audio);
            all.lat_video.append(&mut r.lat_video);
            all.lat_app.append(&mut r.lat_app);
            all.no_kernel_ts += r.no_kernel_ts;
            all.recv.append(&mut r.recv);
            all.sent.append(&mut r.sent);
            all.lag_us.append(&mut r.lag_us);
            all.peers.append(&mut r.peers);
            all.rx_unstamped += r.rx_unstamped;
            all.unknown_source += r.unknown_source;
        }
        all
    }
}

/// The direct scenario: `n` publisher→subscriber pairs inside this process, no server. Each pair
/// gets its own publisher socket so every connection has its own 5-tuple.
fn setup_direct(g: &mut Gen, port: &mut u16) -> Result<(), String> {
    for i in 0..g.args.n {
        let pub_worker = i % g.workers.len();
        let sub_worker = (i + 1) % g.workers.len();
        // A socket of the publisher's own, handed to its worker through a fresh Add.
        let sock = UdpSocket::bind(("127.0.0.1", *port)).map_err(|e| format!("bind {}: {e}", *port))?;
        *port += 1;
        let pub_local = sock.local_addr().unwrap();
        let (publisher, offer) = new_publisher(pub_local, &g.media);
        let sub_sock = g.client_socket()?;
        let sub_local = sub_sock.as_ref().map(|s| s.local_addr().unwrap()).unwrap_or(g.workers[sub_worker].addr);
        let name = format!("d{i}");
        let (sub_peer, answer) = new_subscriber(sub_local, &offer, format!("{name}:down"), i, 0)?;
        let phase = Duration::from_micros((i as u64 * 7_919) % 33_000);
        let (mut pub_peer, ids) = finish_publisher(publisher, &answer, &g.media, format!("{name}:up"), i, usize::MAX, phase)?;
        pub_peer.remote = sub_local;
        g.expect.push((format!("{name}:down"), ids));
        // The publisher's socket goes with it: its index is assigned by the worker.
        g.workers[pub_worker].tx.send(Cmd::AddWithSocket(Box::new(pub_peer), sock)).unwrap();
        let cmd = match sub_sock {
            Some(s) => Cmd::AddWithSocket(Box::new(sub_peer), s),
            None => Cmd::Add(Box::new(sub_peer)),
        };
        g.workers[sub_worker].tx.send(cmd).unwrap();
        g.connections += 2;
    }
    Ok(())
}

fn main() {
    let args = parse_args();
    str0m::crypto::from_feature_flags().install_process_default();
    let shared = Arc::new(Shared { window_start: AtomicU64::new(0), window_end: AtomicU64::new(0) });
    let mut workers = Vec::new();
    for i in 0..args.threads {
        let port = args.port_base + i as u16;
        let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let addr = sock.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let sh = shared.clone();
        let join = std::thread::Builder::new()
            .name(format!("media{i}"))
            .spawn(move || worker_main(vec![sock], rx, sh))
            .unwrap();
        workers.push(WorkerHandle { tx, addr, join });
    }
    let media = Media { audio: args.audio, video_kbps: args.video_kbps, fps: args.fps };
    let http = http::Client::new(&args.server);
    let mut g = Gen {
        args: args.clone(),
        media,
        workers,
        http,
        add_ns: HashMap::new(),
        produce_ms: vec![],
        add_user_ms: vec![],
        consume_ms: vec![],
        expect: vec![],
        streams_of: HashMap::new(),
        connections: 0,
        next_client_port: args.client_port_base,
        cur_room: args.room.clone(),
    };

    let pids: Vec<(String, String)> = args.server_pids.iter().map(|(n, p)| (n.clone(), p.to_string())).collect();
    let rss_idle: Vec<(String, Option<u64>)> = pids.iter().map(|(n, p)| (n.clone(), proc_rss_kb(p))).collect();

    let setup_start = Instant::now();
    let room_names: Vec<String> = if args.rooms <= 1 { vec![args.room.clone()] } else { (0..args.rooms).map(|k| format!("{}-{k}", args.room)).collect() };
    let setup: Result<(), String> = (|| {
        match args.scenario.as_str() {
            "room" => {
                for (k, room) in room_names.iter().enumerate() {
                    g.cur_room = room.clone();
                    g.http.post(&format!("/rooms/{room}"), &json!({}))?;
                    let base = k * args.n;
                    for u in base..base + args.n {
                        g.add_user(u)?;
                        let phase = Duration::from_micros((u as u64 * 7_919) % 33_000);
                        g.produce(u, phase)?;
                    }
                }
            }
            "fanout" => {
                for (k, room) in room_names.iter().enumerate() {
                    g.cur_room = room.clone();
                    g.http.post(&format!("/rooms/{room}"), &json!({}))?;
                    let base = k * (args.n + 1);
                    g.add_user(base)?;
                    g.produce(base, Duration::from_micros((k as u64 * 7_919) % 33_000))?;
                    for u in base + 1..=base + args.n {
                        g.add_user(u)?;
                    }
                }
            }
            "direct" => {
                let mut port = args.port_base + args.threads as u16 + 10;
                setup_direct(&mut g, &mut port)?;
            }
            s => return Err(format!("unknown scenario {s}")),
        }
        Ok(())
    })();
    let setup_s = setup_start.elapsed().as_secs_f64();
    if let Err(e) = &setup {
        eprintln!("setup failed: {e}");
    }
    eprintln!("setup done in {setup_s:.1} s: {} connections", g.connections);

    // Wait until every subscriber connection receives media (or the timeout), then warm up.
    let flow_deadline = Instant::now() + Duration::from_secs_f64(args.setup_timeout);
    let mut flowing = 0;
    let want = g.expect.len();
    while Instant::now() < flow_deadline {
        let r = g.collect_peers_only();
        flowing = r.iter().filter(|(name, first)| *first > 0 && g.expect.iter().any(|(n, _)| n == name)).count();
        if flowing >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let flow_s = setup_start.elapsed().as_secs_f64();
    eprintln!("{flowing}/{want} subscriber connections receiving after {flow_s:.1} s; warm-up {} s", args.warmup);
    std::thread::sleep(Duration::from_secs_f64(args.warmup));

    // The measurement window.
    run_hook(&args.hook_start);
    let cpu0: Vec<Option<(f64, f64)>> = pids.iter().map(|(_, p)| proc_cpu_split(p)).collect();
    let self_cpu0 = proc_cpu("self");
    let udp0 = udp_counters();
    let mcpu0 = machine_cpu();
    let w0 = Instant::now();
    shared.window_start.store(now_ns(), Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    shared.window_end.store(now_ns(), Ordering::SeqCst);
    let cpu1: Vec<Option<(f64, f64)>> = pids.iter().map(|(_, p)| proc_cpu_split(p)).collect();
    let self_cpu1 = proc_cpu("self");
    let udp1 = udp_counters();
    let mcpu1 = machine_cpu();
    let machine: Value = if mcpu0.len() == 8 && mcpu1.len() == 8 {
        let d: Vec<f64> = (0..8).map(|i| mcpu1[i].saturating_sub(mcpu0[i]) as f64).collect();
        let total: f64 = d.iter().sum::<f64>().max(1.0);
        let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as f64;
        json!({
            "cores": (cores * 100.0).round() / 100.0,
            "busy_cores": ((total - d[3] - d[4]) / total * cores * 100.0).round() / 100.0,
            "user_cores": ((d[0] + d[1]) / total * cores * 100.0).round() / 100.0,
            "system_cores": (d[2] / total * cores * 100.0).round() / 100.0,
            "softirq_cores": ((d[5] + d[6]) / total * cores * 100.0).round() / 100.0,
            "steal_cores": (d[7] / total * cores * 100.0).round() / 100.0,
        })
    } else {
        Value::Null
    };
    let udp_delta: serde_json::Map<String, Value> = ["InErrors", "RcvbufErrors", "SndbufErrors", "InDatagrams", "OutDatagrams"]
        .iter()
        .map(|k| (k.to_string(), json!(udp1.get(*k).copied().unwrap_or(0).saturating_sub(udp0.get(*k).copied().unwrap_or(0)))))
        .collect();
    let window_s = w0.elapsed().as_secs_f64();
    run_hook(&args.hook_end);
    let rss_load: Vec<(String, Option<u64>)> = pids.iter().map(|(n, p)| (n.clone(), proc_rss_kb(p))).collect();
    // Packets sent near the end are still in flight.
    std::thread::sleep(Duration::from_millis(500));
    let rep = g.collect();

    // Figures.
    let sent: HashMap<u32, (u64, u64)> = rep.sent.iter().map(|(id, w, t)| (*id, (*w, *t))).collect();
    let recv: HashMap<(String, u32), (u64, u64)> = rep.recv.iter().map(|(n, id, d, dup)| ((n.clone(), *id), (*d, *dup))).collect();
    let (mut expected, mut received, mut dups) = (0u64, 0u64, 0u64);
    let mut worst_conn_loss = 0.0f64;
    for (name, ids) in &g.expect {
        for id in ids {
            let e = sent.get(id).map_or(0, |s| s.0);
            let (r, d) = recv.get(&(name.clone(), *id)).copied().unwrap_or((0, 0));
            expected += e;
            received += r.min(e);
            dups += d;
            if e > 0 {
                worst_conn_loss = worst_conn_loss.max(1.0 - r.min(e) as f64 / e as f64);
            }
        }
    }
    let published: u64 = rep.sent.iter().map(|s| s.1).sum();
    let loss = if expected > 0 { 1.0 - received as f64 / expected as f64 } else { f64::NAN };
    let mut server_cpu = serde_json::Map::new();
    let mut server_cpu_split = serde_json::Map::new();
    let (mut cpu_total, mut cpu_user) = (0.0, 0.0);
    for (i, (name, _)) in pids.iter().enumerate() {
        if let (Some(a), Some(b)) = (cpu0[i], cpu1[i]) {
            let (u, s) = (b.0 - a.0, b.1 - a.1);
            server_cpu.insert(name.clone(), json!(u + s));
            server_cpu_split.insert(name.clone(), json!({"user_s": u, "sys_s": s}));
            cpu_total += u + s;
            cpu_user += u;
        }
    }
    let rss_idle_kb: u64 = rss_idle.iter().filter_map(|(_, v)| *v).sum();
    let rss_load_kb: u64 = rss_load.iter().filter_map(|(_, v)| *v).sum();
    let downstream = g.expect.len();
    // Time from addUser to the first packet on any of the user's downstream connections.
    let mut first: HashMap<usize, u64> = HashMap::new();
    for (name, user, first_ns, _, _, _, _) in &rep.peers {
        if *first_ns > 0 && g.expect.iter().any(|(n, _)| n == name) {
            let e = first.entry(*user).or_insert(u64::MAX);
            *e = (*e).min(*first_ns);
        }
    }
    // And to the connection being up (ICE + DTLS done, as str0m sees it) on the first of them.
    let mut conn_first: HashMap<usize, u64> = HashMap::new();
    for (name, user, _, conn_ns, _, _, _) in &rep.peers {
        if *conn_ns > 0 && g.expect.iter().any(|(n, _)| n == name) {
            let e = conn_first.entry(*user).or_insert(u64::MAX);
            *e = (*e).min(*conn_ns);
        }
    }
    let mut connected_ms: Vec<f64> = g
        .add_ns
        .iter()
        .filter_map(|(u, t0)| conn_first.get(u).map(|t1| (*t1 as f64 - *t0 as f64) / 1e6))
        .collect();
    connected_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut join_ms: Vec<f64> = g
        .add_ns
        .iter()
        .filter_map(|(u, t0)| first.get(u).map(|t1| (*t1 as f64 - *t0 as f64) / 1e6))
        .collect();
    join_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut produce_ms = g.produce_ms.clone();
    produce_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let dead: Vec<String> = rep.peers.iter().filter_map(|p| p.6.as_ref().map(|d| format!("{}: {d}", p.0))).collect();
    let stats = |v: &[f64]| -> Value {
        if v.is_empty() {
            return Value::Null;
        }
        let q = |x: f64| v[((v.len() - 1) as f64 * x).round() as usize];
        json!({"n": v.len(), "p50": (q(0.5) * 100.0).round() / 100.0, "max": (v[v.len() - 1] * 100.0).round() / 100.0, "mean": ((v.iter().sum::<f64>() / v.len() as f64) * 100.0).round() / 100.0})
    };
    let mut lag = rep.lag_us.clone();
    lag.sort_unstable();
    let mut all_lat = rep.lat_audio.clone();
    all_lat.extend_from_slice(&rep.lat_video);
    let gen_cpu = match (self_cpu0, self_cpu1) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let out = json!({
        "scenario": args.scenario,
        "n": args.n,
        "rooms": args.rooms.max(1),
        "media": {"audio": args.audio, "video_kbps": args.video_kbps, "fps": args.fps},
        "setup_ok": setup.is_ok(),
        "setup_error": setup.err(),
        "setup_s": setup_s,
        "connections": g.connections,
        "downstream_connections": downstream,
        "flowing": flowing,
        "window_s": window_s,
        "published_packets": published,
        "expected_packets": expected,
        "received_packets": received,
        "duplicate_packets": dups,
        "forwarded_pps": received as f64 / window_s,
        "expected_pps": expected as f64 / window_s,
        "loss": loss,
        "worst_connection_loss": worst_conn_loss,
        "latency": lat_summary(all_lat),
        "latency_audio": lat_summary(rep.lat_audio),
        "latency_video": lat_summary(rep.lat_video),
        "server_cpu_s": server_cpu,
        "server_cpu_total_s": cpu_total,
        "server_cpu_split": server_cpu_split,
        "server_cpu_user_us_per_packet": if received > 0 { cpu_user / received as f64 * 1e6 } else { f64::NAN },
        "server_cpu_sys_us_per_packet": if received > 0 { (cpu_total - cpu_user) / received as f64 * 1e6 } else { f64::NAN },
        "udp_counters_window": udp_delta,
        "srtp_profiles": SRTP_PROFILES.lock().unwrap().clone(),
        "machine_cpu_window": machine,
        "latency_at_generator_after_processing": lat_summary(rep.lat_app),
        "server_cpu_us_per_packet": if received > 0 { cpu_total / received as f64 * 1e6 } else { f64::NAN },
        "server_cpu_share": cpu_total / window_s,
        "rss_idle_kb": rss_idle_kb,
        "rss_load_kb": rss_load_kb,
        "rss_per_connection_kb": if g.connections > 0 { (rss_load_kb as f64 - rss_idle_kb as f64) / g.connections as f64 } else { f64::NAN },
        "rss_per_downstream_kb": if downstream > 0 { (rss_load_kb as f64 - rss_idle_kb as f64) / downstream as f64 } else { f64::NAN },
        "rss_detail": rss_load.iter().map(|(n, v)| json!({"name": n, "kb": v})).collect::<Vec<_>>(),
        "produce_to_answer_ms": stats(&produce_ms),
        "add_user_to_first_packet_ms": stats(&join_ms),
        "add_user_to_connected_ms": stats(&connected_ms),
        "add_user_ms": stats(&{ let mut v = g.add_user_ms.clone(); v.sort_by(|a, b| a.partial_cmp(b).unwrap()); v }),
        "consume_ms": stats(&{ let mut v = g.consume_ms.clone(); v.sort_by(|a, b| a.partial_cmp(b).unwrap()); v }),
        "generator": {
            "threads": args.threads,
            "sockets": args.sockets,
            "cpu_s": gen_cpu,
            "cpu_share": gen_cpu / window_s,
            "send_lag_p50_us": percentile(&lag, 0.5),
            "send_lag_p99_us": percentile(&lag, 0.99),
            "send_lag_max_us": lag.last().copied().unwrap_or(0),
            "rx_unstamped": rep.rx_unstamped,
            "datagrams_without_kernel_timestamp": rep.no_kernel_ts,
            "unknown_source_datagrams": rep.unknown_source,
            "keyframe_requests_received": rep.peers.iter().map(|p| p.5).sum::<u64>(),
        },
        "dead_connections": dead,
    });
    println!("{}", serde_json::to_string(&out).unwrap());

    // Leave the server clean for whoever reuses it, then stop.
    if args.scenario != "direct" {
        for room in &room_names {
            let _ = g.http.delete(&format!("/rooms/{room}"));
        }
    }
    for w in &g.workers {
        let _ = w.tx.send(Cmd::Stop);
    }
    for w in g.workers.drain(..) {
        let _ = w.join.join();
    }
}

impl Gen {
    /// (peer name, first packet ns) of every peer, cheaply, while waiting for media to flow.
    fn collect_peers_only(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            w.tx.send(Cmd::Report(tx)).unwrap();
            let r = rx.recv().unwrap();
            out.extend(r.peers.into_iter().map(|p| (p.0, p.2)));
        }
        out
    }
}

