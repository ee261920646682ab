//! Building webrtc-rs peer connections the way the SFU needs them: the server's addresses and
//! ports, loopback candidates allowed, mDNS off, ICE timeouts that notice a vanished client,
//! state changes reported as events, and non-trickle signalling (an SDP is handed out only once
//! gathering is complete, with its candidates rewritten for an announced IP or a shared port).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder, Packet, ReceiverReportBuilder,
    SenderReportBuilder, Slot, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::sansio::Protocol;
use tokio::sync::watch;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::runtime::{Runtime, TokioRuntime};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, SrtpProtectionProfile, StatsSelector,
};

use super::error::{SfuError, SfuResult};
use super::events::{ConnectionLabel, ConnectionState, Direction, EventSink};
use super::mux::{random_ice_credentials, UdpMux};
use super::ports::{diagnose, BindError, BindRecorder, PortLease, PortPool};
use super::sdp::{Codec, Kind};
use super::stats::{connection_stats, ConnectionStates, ConnectionStats, Feedback, ForwardTotals, RateMeter};

/// An address connections bind, and what to announce instead of it (1:1 NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub ip: IpAddr,
    pub announced_ip: Option<IpAddr>,
}

/// Network settings shared by every connection of a server.
#[derive(Clone)]
pub struct NetworkConfig {
    /// At least one; `0.0.0.0` means every interface.
    pub listen: Vec<ListenAddr>,
    /// Also offer passive ICE-TCP candidates.
    pub tcp: bool,
    /// Single-port mode: every connection's UDP goes through these shared sockets.
    pub mux: Option<Arc<UdpMux>>,
}

impl NetworkConfig {
    /// The announced address for a candidate on `ip`: the listen entry's own, or that of a
    /// wildcard entry (whose candidates carry the interfaces' addresses).
    pub(crate) fn announced_for(&self, ip: IpAddr) -> Option<IpAddr> {
        let exact = self.listen.iter().find(|l| l.ip == ip);
        exact
            .or_else(|| self.listen.iter().find(|l| l.ip.is_unspecified()))
            .and_then(|l| l.announced_ip)
    }

    /// Rewrites the candidates of an SDP the server hands out: announced addresses instead of
    /// bound ones, and in single-port mode the shared port instead of the placeholder socket's.
    pub fn rewrite_candidates(&self, sdp: &str) -> String {
        let announce = self.listen.iter().any(|l| l.announced_ip.is_some());
        if !announce && self.mux.is_none() {
            return sdp.to_owned();
        }
        let mut out = String::with_capacity(sdp.len() + 64);
        for line in sdp.split_inclusive('\n') {
            match line.strip_prefix("a=candidate:") {
                Some(rest) => out.push_str(&self.rewrite_candidate(rest, line)),
                None => out.push_str(line),
            }
        }
        out
    }

    fn rewrite_candidate(&self, rest: &str, line: &str) -> String {
        // foundation component transport priority address port typ type ...
        let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
        let mut fields: Vec<String> = rest.trim_end_matches(['\r', '\n']).split(' ').map(str::to_owned).collect();
        if fields.len() < 8 || fields[6] != "typ" || fields[7] != "host" {
            return line.to_owned();
        }
        let Ok(ip) = fields[4].parse::<IpAddr>() else { return line.to_owned() };
        if let Some(announced) = self.announced_for(ip) {
            fields[4] = announced.to_string();
        }
        if let (Some(mux), true) = (&self.mux, fields[2].eq_ignore_ascii_case("udp")) {
            fields[5] = mux.port().to_string();
        }
        format!("a=candidate:{}{ending}", fields.join(" "))
    }
}

pub(crate) const ICE_TIMEOUTS: (Duration, Duration, Duration) =
    (ICE_DISCONNECTED_TIMEOUT, ICE_FAILED_TIMEOUT, ICE_KEEPALIVE_INTERVAL);
pub(crate) const ICE_ATTEMPTS: (Duration, u16) = (ICE_CHECK_INTERVAL, ICE_MAX_BINDING_REQUESTS);

/// How long the server waits for its own ICE gathering (host candidates only: near instant).
const GATHERING_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that stops answering ICE consent checks is `disconnected` after this long...
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and `failed` this much later: a vanished client is reported within 20 s.
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(15);
const ICE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// webrtc-rs paces its ICE checks, and the steps after them (nomination, the DTLS start, the
/// first media), by this interval; its 200 ms default made a joiner wait about 600 ms for its
/// first packet. Candidates are all known up front (non-trickle, host only), so checks are cheap.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// As many checks per candidate pair as fit in webrtc-rs's default 1.4 s window.
const ICE_MAX_BINDING_REQUESTS: u16 = 70;
/// Packets a downstream keeps per stream to answer its consumer's NACKs: about 4 s of 1 Mbit/s
/// video, far more than a round trip. (webrtc-rs's default is 1024.)
const NACK_HISTORY: u16 = 512;

/// Counts peer connections whose webrtc-rs state is still allocated, for `stats()` and leak
/// checks: the count drops when webrtc-rs frees the connection (and with it our handler),
/// not merely when we close it.
#[derive(Debug, Default)]
pub struct ConnectionCounter(AtomicUsize);

impl ConnectionCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open connections against the `maxConnections` limit.
#[derive(Debug)]
pub struct ConnectionBudget {
    max: Option<usize>,
    open: Arc<AtomicUsize>,
}

/// One open connection's place in the budget, given back on drop.
#[derive(Debug)]
pub struct BudgetSlot(Arc<AtomicUsize>);

impl Drop for BudgetSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionBudget {
    pub fn new(max: Option<usize>) -> Self {
        Self { max, open: Arc::new(AtomicUsize::new(0)) }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Takes `n` places at once, or none: a call that will open several connections reserves
    /// them all before it opens the first.
    pub fn reserve(&self, n: usize) -> SfuResult<Vec<BudgetSlot>> {
        let taken = self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| match self.max {
            Some(max) if open + n > max => None,
            _ => Some(open + n),
        });
        match taken {
            Ok(_) => Ok((0..n).map(|_| BudgetSlot(self.open.clone())).collect()),
            Err(open) => Err(SfuError::ResourceExhausted(format!(
                "the server holds {open} connections and this call needs {n} more, over the limit maxConnections"
            ))),
        }
    }
}

/// A built connection with what keeps it accounted for: its port lease, its place in the
/// connection budget, and the live count (in its handler).
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<bool>,
    report: Arc<StateReport>,
    rates: RateMeter,
    net: NetworkConfig,
    /// Set once `close` ran; a peer dropped without it (a command that failed or panicked
    /// half way) is closed on drop.
    closing: AtomicBool,
    _port: PortLease,
    _slot: BudgetSlot,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        let (pc, report) = (self.pc.clone(), self.report.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = pc.close().await;
                report.report(ConnectionState::Closed);
            });
        }
    }
}

/// Events a connection reports to the part of the SFU that owns it.
pub trait PeerEvents: Send + Sync + 'static {
    fn on_track(&self, _kind: Kind, _track: Arc<dyn TrackRemote>) {}
    fn on_state(&self, _state: ConnectionState) {}
}

/// Reports a connection's states to the backend, `closed` exactly once, and keeps the server's
/// count of connections by state (`metrics()`) in step with what it reports.
pub(crate) struct StateReport {
    pub(crate) label: ConnectionLabel,
    sink: EventSink,
    states: Arc<ConnectionStates>,
    closed: AtomicBool,
    last: Mutex<ConnectionState>,
}

impl StateReport {
    pub(crate) fn new(label: ConnectionLabel, sink: EventSink, states: Arc<ConnectionStates>) -> Self {
        states.opened(label.direction);
        Self { label, sink, states, closed: AtomicBool::new(false), last: Mutex::new(ConnectionState::New) }
    }

    /// Sends an event of this connection's room.
    pub(crate) fn emit(&self, event: super::events::ServerEvent) {
        (self.sink)(event);
    }

    pub(crate) fn last(&self) -> ConnectionState {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn report(&self, state: ConnectionState) {
        // Checked and changed under the lock, so that the state, the counts and the order of the
        // events agree whichever threads report.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return; // `closed` was reported: it is the last word (late news, or a second close)
        }
        if state == ConnectionState::Closed {
            self.closed.store(true, Ordering::Release);
        }
        self.states.moved(self.label.direction, *last, state);
        *last = state;
        match state {
            ConnectionState::Failed | ConnectionState::Disconnected => tracing::warn!(
                room = %self.label.room_id, user = %self.label.user_id, producer = %self.label.producer_id,
                direction = ?self.label.direction, ?state, "connection lost"
            ),
            _ => tracing::debug!(
                room = %self.label.room_id, user = %self.label.user_id, producer = %self.label.producer_id,
                direction = ?self.label.direction, ?state, "connection state"
            ),
        }
        (self.sink)(self.label.state_event(state));
    }
}

impl Drop for StateReport {
    fn drop(&mut self) {
        // A connection given up before it was ever closed (its port could not be had) leaves
        // the counts too.
        if !self.closed.load(Ordering::Acquire) {
            self.states.dropped(self.label.direction, self.last());
        }
    }
}

struct Handler<E: PeerEvents> {
    gathering_done: watch::Sender<bool>,
    events: E,
    report: Arc<StateReport>,
    live: Arc<ConnectionCounter>,
}

impl<E: PeerEvents> Drop for Handler<E> {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl<E: PeerEvents> PeerConnectionEventHandler for Handler<E> {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        let _ = self.gathering_done.send(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let state = match state {
            RTCPeerConnectionState::New => ConnectionState::New,
            RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
            RTCPeerConnectionState::Connected => ConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => ConnectionState::Failed,
            RTCPeerConnectionState::Closed => ConnectionState::Closed,
            _ => return,
        };
        self.report.report(state);
        self.events.on_state(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = match track.kind().await {
            RtpCodecKind::Audio => Kind::Audio,
            RtpCodecKind::Video => Kind::Video,
            _ => return,
        };
        self.events.on_track(kind, track);
    }
}

/// Counts the RTCP feedback of a connection (`metrics()`). On a downstream, it counts what the
/// consumer sends and passes its keyframe requests (PLI, FIR) to the application, where the SFU
/// relays them to the producer, and on a media loop its NACKs too, which the loop answers from
/// the producer's shared history; every other inbound RTCP packet stays with the interceptors.
/// On an upstream, it counts the NACKs and PLIs the server sends the producer.
struct RtcpTap {
    side: TapSide,
    totals: Arc<ForwardTotals>,
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

#[derive(Clone, Copy)]
enum TapSide {
    /// Reads the consumer's feedback; `on_loop`: also hands its NACKs and reception reports to
    /// the media loop, which answers the first and estimates its bandwidth from the second.
    Downstream { on_loop: bool },
    /// Sees the feedback written to the producer.
    Upstream,
}

impl RtcpTap {
    fn new(side: TapSide, totals: &Arc<ForwardTotals>) -> Self {
        Self { side, totals: totals.clone(), read: Default::default(), write: Default::default() }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let (TapSide::Downstream { on_loop }, Packet::Rtcp(packets)) = (self.side, &msg.message.packet) {
            let mut deliver = false;
            for p in packets {
                let any = p.as_any();
                if any.is::<PictureLossIndication>() {
                    self.totals.feedback(Feedback::PliReceived);
                    deliver = true;
                } else if any.is::<FullIntraRequest>() {
                    self.totals.feedback(Feedback::FirReceived);
                    deliver = true;
                } else if any.is::<TransportLayerNack>() {
                    self.totals.feedback(Feedback::NackReceived);
                    deliver |= on_loop;
                } else if any.is::<ReceiverReport>() || any.is::<SenderReport>() {
                    // The loop reads the consumer's loss for its bandwidth estimate.
                    deliver |= on_loop;
                }
            }
            if deliver {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let (TapSide::Upstream, Packet::Rtcp(packets)) = (self.side, &msg.message.packet) {
            for p in packets {
                let any = p.as_any();
                if any.is::<TransportLayerNack>() {
                    self.totals.feedback(Feedback::NackSent);
                } else if any.is::<PictureLossIndication>() {
                    self.totals.feedback(Feedback::PliSent);
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The interceptors a connection needs, by what it carries. An upstream receives: it asks the
/// producer for lost packets (NACK), reports reception, and feeds transport-wide congestion
/// control back so the producer's bandwidth estimate ramps up. A downstream sends: it answers
/// the consumer's NACKs from its history, sends sender reports, and taps keyframe requests.
/// Neither carries the other's (each stage costs every packet a pass). Both count their RTCP
/// feedback into `totals`.
pub(crate) fn interceptors_for(
    direction: Direction,
    engine: &mut MediaEngine,
    totals: &Arc<ForwardTotals>,
) -> rtc::shared::error::Result<Registry> {
    configure_simulcast_extension_headers(engine)?;
    Ok(match direction {
        Direction::Upstream => {
            register_audio_level(engine)?;
            configure_twcc_receiver_only(Registry::new(), engine)?
                .with(
                    // webrtc-rs's generator does not count a packet recovered by RTX as received,
                    // so unbounded it asks for each lost packet every 100 ms until it leaves the
                    // window (~55 retransmissions per loss measured at 5% loss).
                    Slot::NackGenerator,
                    NackGeneratorBuilder::new().with_max_nacks_per_packet(3).build(),
                )
                .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
                // Wire-ward of every generator (the NACK generator is 7_000), so each RTCP
                // packet on its way to the producer passes it; it only observes.
                .with(Slot::from(6_900), RtcpTap::new(TapSide::Upstream, totals))
        }
        Direction::Downstream => Registry::new()
            .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY).build())
            .with(Slot::SenderReport, SenderReportBuilder::new().build())
            .with(
                // Last in the chain, so every interceptor has seen the RTCP before it is tapped.
                Slot::from(14_000),
                RtcpTap::new(TapSide::Downstream { on_loop: false }, totals),
            ),
    })
}

/// The interceptors of a connection on a media loop: as [`interceptors_for`], but a downstream
/// keeps no packets of its own for NACKs: its tap hands them to the loop, which answers them
/// from the producer's shared history.
pub(crate) fn loop_interceptors_for(
    direction: Direction,
    engine: &mut MediaEngine,
    totals: &Arc<ForwardTotals>,
) -> rtc::shared::error::Result<Registry> {
    match direction {
        Direction::Upstream => interceptors_for(direction, engine, totals),
        Direction::Downstream => {
            configure_simulcast_extension_headers(engine)?;
            Ok(Registry::new()
                .with(Slot::SenderReport, SenderReportBuilder::new().build())
                .with(Slot::from(14_000), RtcpTap::new(TapSide::Downstream { on_loop: true }, totals)))
        }
    }
}

/// Asks producers for the audio level of each packet (RFC 6464), which the active-speaker
/// detection reads.
fn register_audio_level(engine: &mut MediaEngine) -> rtc::shared::error::Result<()> {
    engine.register_header_extension(
        rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_URI.to_owned() },
        RtpCodecKind::Audio,
        None,
    )
}

/// The RFC 6464 header extension.
pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// SRTP as every connection of the server negotiates it: AEAD-AES-GCM first (one pass on AES-NI
/// and carry-less multiply, where AES-CM + HMAC-SHA1 takes two, the second without hardware
/// help; figures in bench/srtp-crypto), AES-CM + HMAC-SHA1-80 for peers without GCM. The server
/// is the DTLS server on every connection (it answers `a=setup:passive`), and with
/// patches/rtc-dtls the DTLS server's order decides, so browsers, which list AES-CM first, get
/// GCM too.
pub(crate) fn srtp_settings(settings: SettingEngineBuilder) -> SettingEngineBuilder {
    settings
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        .with_answering_dtls_role(RTCDtlsRole::Server)
}

/// The codecs the server negotiates: exactly those it forwards (Opus, VP8, VP9, H264, AV1),
/// each video codec with its RTX format. webrtc-rs's default table also has G.722, PCMU, PCMA
/// and HEVC; a producer offering one of those first would otherwise have it chosen.
pub(crate) fn register_forwarded_codecs(engine: &mut MediaEngine) -> rtc::shared::error::Result<()> {
    let feedback = || {
        [("goog-remb", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
            .map(|(typ, parameter)| RTCPFeedback { typ: typ.into(), parameter: parameter.into() })
            .to_vec()
    };
    let codec = |mime: &str, clock_rate, channels, fmtp: &str, rtcp_feedback, payload_type| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback,
        },
        payload_type,
    };
    engine.register_codec(codec("audio/opus", 48_000, 2, "minptime=10;useinbandfec=1", vec![], 111), RtpCodecKind::Audio)?;
    let h264 = |mode: u8, profile: &str| format!("level-asymmetry-allowed=1;packetization-mode={mode};profile-level-id={profile}");
    let video: [(&str, String, u8, u8); 9] = [
        ("video/VP8", String::new(), 96, 97),
        ("video/VP9", "profile-id=0".into(), 98, 99),
        ("video/VP9", "profile-id=2".into(), 100, 101),
        ("video/H264", h264(1, "42001f"), 102, 103),
        ("video/H264", h264(0, "42001f"), 127, 104),
        ("video/H264", h264(1, "42e01f"), 125, 105),
        ("video/H264", h264(0, "42e01f"), 108, 109),
        ("video/H264", h264(1, "640032"), 123, 124),
        ("video/AV1", "profile-id=0".into(), 41, 106),
    ];
    for (mime, fmtp, payload_type, rtx) in video {
        engine.register_codec(codec(mime, 90_000, 0, &fmtp, feedback(), payload_type), RtpCodecKind::Video)?;
        engine.register_codec(
            codec("video/rtx", 90_000, 0, &format!("apt={payload_type}"), vec![], rtx),
            RtpCodecKind::Video,
        )?;
    }
    Ok(())
}


/// Everything a new connection needs from its server.
pub struct PeerContext<'a> {
    pub net: &'a NetworkConfig,
    pub ports: &'a Arc<PortPool>,
    pub budget: &'a ConnectionBudget,
    pub live: &'a Arc<ConnectionCounter>,
    pub sink: &'a EventSink,
    pub states: &'a Arc<ConnectionStates>,
    pub totals: &'a Arc<ForwardTotals>,
}

/// Builds a connection in the place `slot` holds for it in the connection budget.
pub async fn build_peer<E: PeerEvents>(
    ctx: PeerContext<'_>,
    slot: BudgetSlot,
    label: ConnectionLabel,
    events: E,
) -> SfuResult<Peer> {
    let net = ctx.net;
    let direction = label.direction;
    let (gathering_done, gathering) = watch::channel(false);
    let report = Arc::new(StateReport::new(label, ctx.sink.clone(), ctx.states.clone()));
    ctx.live.0.fetch_add(1, Ordering::Relaxed);
    let handler = &Arc::new(Handler { gathering_done, events, report: report.clone(), live: ctx.live.clone() });
    // Lease by binding: the connection's own bind is the check that its port is free; a port
    // another process holds is set aside and the next one tried (see `ports`).
    let totals = ctx.totals;
    let (port, pc) = ctx.ports.open(|port| open_peer(net, ctx.ports, direction, totals, port, handler)).await?;
    Ok(Peer {
        pc,
        gathering,
        report,
        rates: RateMeter::new(Instant::now()),
        net: net.clone(),
        closing: AtomicBool::new(false),
        _port: port,
        _slot: slot,
    })
}

/// One try at a connection whose sockets bind `port` on every listen address: a connection
/// that did not get all of them is closed again, and why its bind failed is the error.
async fn open_peer<E: PeerEvents>(
    net: &NetworkConfig,
    ports: &PortPool,
    direction: Direction,
    totals: &Arc<ForwardTotals>,
    port: u16,
    handler: &Arc<Handler<E>>,
) -> Result<Arc<dyn PeerConnection>, BindError> {
    let internal = |what: &str, e: &dyn std::fmt::Display| BindError::Failed(SfuError::internal(what, e));
    let mut media_engine = MediaEngine::default();
    register_forwarded_codecs(&mut media_engine).map_err(|e| internal("registering codecs", &e))?;
    let registry =
        interceptors_for(direction, &mut media_engine, totals).map_err(|e| internal("registering interceptors", &e))?;

    let mut settings = srtp_settings(SettingEngineBuilder::new())
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_timeouts(Some(ICE_DISCONNECTED_TIMEOUT), Some(ICE_FAILED_TIMEOUT), Some(ICE_KEEPALIVE_INTERVAL))
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS));
    let runtime: Arc<dyn Runtime> = match &net.mux {
        Some(mux) => {
            // The shared socket routes by our ufrag and checks our password, so both must be
            // known (and the ufrag unique) up front.
            let (ufrag, pwd) = random_ice_credentials();
            settings = settings.with_ice_credentials(ufrag.clone(), pwd.clone());
            mux.runtime_for(ufrag, pwd)
        }
        None => Arc::new(TokioRuntime),
    };
    let recorder = BindRecorder::wrapping(runtime);
    let attempt = Arc::new(Attempt { handler: handler.clone(), kept: AtomicBool::new(false) });
    let (udp, tcp) = ports.addresses(port);
    let built = PeerConnectionBuilder::new()
        .with_runtime(recorder.clone())
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings.build())
        .with_handler(attempt.clone())
        .with_udp_addrs(udp.clone())
        .with_tcp_addrs(tcp.clone())
        .build()
        .await;
    let (missing_udp, missing_tcp) = recorder.missing(&udp, &tcp);
    let complete = missing_udp.is_empty() && missing_tcp.is_empty();
    let pc = match built {
        Ok(pc) if complete => pc,
        Ok(pc) => {
            let _ = pc.close().await;
            return Err(diagnose(&missing_udp, &missing_tcp).unwrap_or_else(|| {
                internal("opening a peer connection", &format!("port {port} did not bind, though it binds now"))
            }));
        }
        Err(e) if complete => return Err(internal("opening a peer connection", &e)),
        Err(e) => {
            return Err(diagnose(&missing_udp, &missing_tcp)
                .unwrap_or_else(|| internal(&format!("opening a peer connection on port {port}"), &e)))
        }
    };
    attempt.kept.store(true, Ordering::Release);
    Ok(Arc::new(pc))
}

/// The handler webrtc-rs holds for one try at a connection: events reach the connection's
/// `Handler` once the try is kept, so a try given up (its port was taken) reports nothing.
struct Attempt<E: PeerEvents> {
    handler: Arc<Handler<E>>,
    kept: AtomicBool,
}

impl<E: PeerEvents> Attempt<E> {
    fn kept(&self) -> Option<&Handler<E>> {
        self.kept.load(Ordering::Acquire).then_some(&*self.handler)
    }
}

#[async_trait::async_trait]
impl<E: PeerEvents> PeerConnectionEventHandler for Attempt<E> {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if let Some(handler) = self.kept() {
            handler.on_ice_gathering_state_change(state).await
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if let Some(handler) = self.kept() {
            handler.on_connection_state_change(state).await
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(handler) = self.kept() {
            handler.on_track(track).await
        }
    }
}

impl Peer {
    /// The local description with every candidate in it, once gathering has completed, as the
    /// remote side must see it (announced addresses, the shared port).
    pub async fn complete_local_description(&self) -> SfuResult<RTCSessionDescription> {
        let mut gathering = self.gathering.clone();
        tokio::time::timeout(GATHERING_TIMEOUT, gathering.wait_for(|done| *done))
            .await
            .map_err(|_| SfuError::Internal("ICE gathering did not complete within 5 s".into()))?
            .map_err(|_| SfuError::Internal("the connection closed while gathering".into()))?;
        let mut description = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| SfuError::Internal("no local description after gathering".into()))?;
        description.sdp = self.net.rewrite_candidates(&description.sdp);
        Ok(description)
    }

    /// This connection's statistics; `codecs` are those it was negotiated with, per kind.
    pub async fn stats(&self, codecs: &[Option<Codec>; 2]) -> ConnectionStats {
        let now = Instant::now();
        let report = self.pc.get_stats(now, StatsSelector::None).await;
        let state = *self.report.last.lock().unwrap_or_else(|e| e.into_inner());
        let shared_port = self.net.mux.as_ref().map(|m| m.port());
        connection_stats(&self.report.label, state, &report, codecs, &self.rates, shared_port, now)
    }

    /// The connection's last reported state.
    pub fn state(&self) -> ConnectionState {
        *self.report.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection and reports it `closed` (once, whoever closed it).
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Err(e) = self.pc.close().await {
            tracing::warn!(error = %e, "closing a peer connection failed");
        }
        self.report.report(ConnectionState::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(listen: &[(&str, Option<&str>)]) -> NetworkConfig {
        NetworkConfig {
            listen: listen
                .iter()
                .map(|(ip, announced)| ListenAddr { ip: ip.parse().unwrap(), announced_ip: announced.map(|a| a.parse().unwrap()) })
                .collect(),
            tcp: false,
            mux: None,
        }
    }

    const SDP: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
        a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
        a=candidate:2 1 tcp 1671430143 10.0.0.5 40000 typ host tcptype passive\r\n\
        a=candidate:3 1 udp 2130706431 192.168.1.9 40001 typ host\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn announced_ips_replace_the_bound_ones() {
        let n = net(&[("10.0.0.5", Some("203.0.113.7")), ("192.168.1.9", None)]);
        let out = n.rewrite_candidates(SDP);
        assert!(out.contains("a=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host\r\n"), "{out}");
        assert!(out.contains("a=candidate:2 1 tcp 1671430143 203.0.113.7 40000 typ host tcptype passive\r\n"), "{out}");
        assert!(out.contains("a=candidate:3 1 udp 2130706431 192.168.1.9 40001 typ host\r\n"), "{out}");
        assert!(!out.contains("10.0.0.5"));
        assert_eq!(out.len(), SDP.len() + 2 * ("203.0.113.7".len() - "10.0.0.5".len()));
    }

    #[test]
    fn a_wildcard_listen_announces_every_interface_candidate() {
        let n = net(&[("0.0.0.0", Some("203.0.113.7"))]);
        let out = n.rewrite_candidates(SDP);
        assert_eq!(out.matches("203.0.113.7").count(), 3, "{out}");
    }

    #[test]
    fn without_announcement_or_mux_the_sdp_is_untouched() {
        assert_eq!(net(&[("10.0.0.5", None)]).rewrite_candidates(SDP), SDP);
    }
}
