//! A room's connections, on either engine: webrtc-rs's async peer connections (a task per
//! connection, a forwarder task per stream), or the media loops (`crate::engine`), where the
//! connections and the forwarding live on a loop thread and the room reaches them by message.
//! The room is written against [`Conn`] and [`Forward`]; which engine carries them is the
//! server's choice (see `Engine`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription as LoopDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit};
use rtc::statistics::StatsSelector;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{MediaEngine, RTCSessionDescription, SettingEngineBuilder};
use webrtc::rtp_transceiver::RtpTransceiver;

use super::error::{SfuError, SfuResult};
use super::events::{ConnectionLabel, ConnectionState, Direction};
use super::forward::{spawn_keyframe_relay, Control, ForwarderHandle, Subscriber};
use super::mux::random_ice_credentials;
use super::peer::{
    loop_interceptors_for, register_forwarded_codecs, srtp_settings, BudgetSlot, ConnectionCounter, NetworkConfig, Peer, PeerContext, StateReport,
    ICE_ATTEMPTS, ICE_TIMEOUTS,
};
use super::sdp::{Codec, Kind};
use super::stats::{connection_stats, ConnectionStats, ForwardTotals, RateMeter, TrackStats};
use crate::engine::media_loop::{MediaLoop, PeerId};
use super::loop_media::{ConsumerLayers, Output, PeerObserver, SfuHandler};
use crate::media::codec::VideoCodec;

/// The media loops of a server, and where the next room goes.
pub struct Engine {
    loops: Vec<Arc<MediaLoop<SfuHandler>>>,
    /// Rooms placed on each loop, to place the next on the least loaded.
    rooms: Vec<AtomicUsize>,
    next_peer: AtomicU64,
}

impl Engine {
    /// One loop per `workers`, each with a UDP socket on every one of `ips` (a wildcard
    /// address stands for the host's interfaces), on one port: the first free one of `range`,
    /// or one the OS picks.
    pub fn start(
        workers: usize,
        ips: &[IpAddr],
        range: Option<(u16, u16)>,
        tcp: bool,
        totals: Arc<ForwardTotals>,
        audio_levels: Option<std::time::Duration>,
    ) -> SfuResult<Self> {
        let ips = expand_wildcards(ips);
        let mut loops = Vec::with_capacity(workers);
        let mut ports = range.map(|(min, max)| min..=max);
        for i in 0..workers.max(1) {
            let name = format!("media-loop-{i}");
            let lp = loop {
                let port = match &mut ports {
                    Some(ports) => ports.next().ok_or_else(|| {
                        SfuError::ResourceExhausted(format!("portRange has no free port left for media loop {i}"))
                    })?,
                    None => 0,
                };
                let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
                let handler = SfuHandler::new(totals.clone(), audio_levels);
                match MediaLoop::spawn_with(&name, &addrs, tcp, handler) {
                    Ok(lp) => break lp,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && ports.is_some() => continue,
                    Err(e) => {
                        return Err(SfuError::ResourceExhausted(format!("cannot start a media loop on {addrs:?}: {e}")))
                    }
                }
            };
            loops.push(Arc::new(lp));
        }
        let rooms = loops.iter().map(|_| AtomicUsize::new(0)).collect();
        Ok(Self { loops, rooms, next_peer: AtomicU64::new(1) })
    }

    /// The loop for a new room: the one with the fewest rooms. Released by [`Placement`]'s drop.
    pub fn place(self: &Arc<Self>) -> Placement {
        let index = (0..self.loops.len()).min_by_key(|&i| self.rooms[i].load(Ordering::Relaxed)).unwrap_or(0);
        self.rooms[index].fetch_add(1, Ordering::Relaxed);
        Placement { engine: self.clone(), index }
    }

    pub fn ports(&self) -> Vec<u16> {
        self.loops.iter().map(|l| l.local_addr().port()).collect()
    }
}

/// The addresses to bind for `ips`: a wildcard becomes the host's interface addresses of its
/// family (loopback only when there is nothing else), since a candidate must name a real one.
fn expand_wildcards(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for ip in ips {
        if !ip.is_unspecified() {
            if !out.contains(ip) {
                out.push(*ip);
            }
            continue;
        }
        let found: Vec<IpAddr> = crate::engine::udp::interface_addresses().into_iter().filter(|a| a.is_ipv4() == ip.is_ipv4()).collect();
        let outward: Vec<IpAddr> = found.iter().copied().filter(|a| !a.is_loopback()).collect();
        for a in if outward.is_empty() { found } else { outward } {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// A room's place on one loop.
pub struct Placement {
    engine: Arc<Engine>,
    index: usize,
}

impl Placement {
    pub fn media_loop(&self) -> &Arc<MediaLoop<SfuHandler>> {
        &self.engine.loops[self.index]
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.engine.rooms[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection on a media loop, as the room holds it.
pub struct LoopConn {
    lp: Arc<MediaLoop<SfuHandler>>,
    net: NetworkConfig,
    pub id: PeerId,
    report: Arc<StateReport>,
    rates: RateMeter,
    closing: AtomicBool,
    live: Arc<ConnectionCounter>,
    _slot: BudgetSlot,
}

struct ReportState(Arc<StateReport>);

impl PeerObserver for ReportState {
    fn on_state(&self, state: ConnectionState) {
        self.0.report(state);
    }

    fn label(&self) -> Option<&ConnectionLabel> {
        Some(&self.0.label)
    }

    fn emit(&self, event: super::events::ServerEvent) {
        self.0.emit(event);
    }
}

/// What a new loop connection is for.
pub enum LoopRole {
    Upstream,
    /// Carries the producer whose upstream is this connection.
    Downstream { producer: PeerId },
}

fn loop_gone() -> SfuError {
    SfuError::Internal("the media loop has stopped".into())
}

fn no_peer(id: PeerId) -> SfuError {
    SfuError::Internal(format!("connection {id} is no longer on its media loop"))
}

impl LoopConn {
    pub async fn open(
        placement: &Placement,
        ctx: PeerContext<'_>,
        slot: BudgetSlot,
        label: ConnectionLabel,
        role: LoopRole,
    ) -> SfuResult<LoopConn> {
        let lp = placement.media_loop().clone();
        let id = placement.engine.next_peer.fetch_add(1, Ordering::Relaxed);
        let direction = label.direction;
        let (net, live) = (ctx.net, ctx.live);
        let report = Arc::new(StateReport::new(label, ctx.sink.clone(), ctx.states.clone()));
        let totals = ctx.totals.clone();
        let observer: Arc<dyn PeerObserver> = Arc::new(ReportState(report.clone()));
        let tcp = net.tcp;
        let built = lp
            .call(move |ctx| -> SfuResult<()> {
                let internal = |what: &str, e: &dyn std::fmt::Display| SfuError::internal(what, e);
                let mut engine = MediaEngine::default();
                register_forwarded_codecs(&mut engine).map_err(|e| internal("registering codecs", &e))?;
                let registry = loop_interceptors_for(direction, &mut engine, &totals).map_err(|e| internal("registering interceptors", &e))?;
                let (ufrag, pwd) = random_ice_credentials();
                let settings = srtp_settings(SettingEngineBuilder::new())
                    .with_include_loopback_candidate(true)
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    .with_ice_timeouts(Some(ICE_TIMEOUTS.0), Some(ICE_TIMEOUTS.1), Some(ICE_TIMEOUTS.2))
                    .with_ice_connection_attempts(Some(ICE_ATTEMPTS.0), Some(ICE_ATTEMPTS.1))
                    .with_ice_credentials(ufrag.clone(), pwd)
                    .build();
                let mut pc = RTCPeerConnectionBuilder::new()
                    .with_configuration(RTCConfigurationBuilder::new().build())
                    .with_media_engine(engine)
                    .with_interceptor_registry(registry)
                    .with_setting_engine(settings)
                    .build(ctx.now)
                    .map_err(|e| internal("opening a peer connection", &e))?;
                // A host candidate per socket of the loop. The ICE agent knows the bound address
                // (it checks that requests come in on one of its candidates); an announced one
                // replaces it in the SDP handed out (`complete_local_description`).
                for (n, local) in ctx.locals.iter().enumerate() {
                    let ip = local.ip();
                    let candidate = CandidateHostConfig {
                        base_config: CandidateConfig {
                            network: "udp".into(),
                            address: ip.to_string(),
                            port: local.port(),
                            component: 1,
                            foundation: format!("{}", n + 1),
                            ..Default::default()
                        },
                        ..Default::default()
                    }
                    .new_candidate_host()
                    .map_err(|e| internal("making a host candidate", &e))?;
                    let candidate = RTCIceCandidate::from(&candidate).to_json().map_err(|e| internal("a host candidate", &e))?;
                    pc.add_local_candidate(candidate).map_err(|e| internal("adding a host candidate", &e))?;
                    if tcp {
                        let candidate = CandidateHostConfig {
                            base_config: CandidateConfig {
                                network: "tcp".into(),
                                address: local.ip().to_string(),
                                port: local.port(),
                                component: 1,
                                foundation: format!("{}", 100 + n),
                                ..Default::default()
                            },
                            tcp_type: rtc::ice::tcp_type::TcpType::Passive,
                        }
                        .new_candidate_host()
                        .map_err(|e| internal("making a TCP candidate", &e))?;
                        let candidate =
                            RTCIceCandidate::from(&candidate).to_json().map_err(|e| internal("a TCP candidate", &e))?;
                        pc.add_local_candidate(candidate).map_err(|e| internal("adding a TCP candidate", &e))?;
                    }
                }
                ctx.add_peer(id, pc, ufrag);
                match role {
                    LoopRole::Upstream => ctx.handler.add_upstream(id, observer),
                    LoopRole::Downstream { producer } => ctx.handler.add_downstream(id, producer, observer),
                }
                Ok(())
            })
            .await
            .map_err(|_| loop_gone())?;
        built?;
        live.add();
        Ok(LoopConn {
            lp,
            net: net.clone(),
            id,
            report,
            rates: RateMeter::new(Instant::now()),
            closing: AtomicBool::new(false),
            live: live.clone(),
            _slot: slot,
        })
    }

    /// Runs `f` on this connection, on its loop.
    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rtc::peer_connection::RTCPeerConnection, Instant) -> R + Send + 'static,
    ) -> SfuResult<R> {
        let id = self.id;
        self.lp
            .call(move |ctx| {
                let now = ctx.now;
                ctx.peers.get_mut(id).map(|pc| f(pc, now))
            })
            .await
            .map_err(|_| loop_gone())?
            .ok_or_else(|| no_peer(id))
    }

    fn remove(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (id, live) = (self.id, self.live.clone());
        self.lp.call(move |ctx| {
            ctx.handler.remove_peer(id);
            if ctx.remove_peer(id).is_some() {
                live.remove();
            }
        })
    }
}

impl Drop for LoopConn {
    fn drop(&mut self) {
        if !self.closing.load(Ordering::Acquire) {
            drop(self.remove());
            self.report.report(ConnectionState::Closed);
        }
    }
}

/// A room's connection on either engine.
pub enum Conn {
    Async(Peer),
    Loop(LoopConn),
}

// The async layer's descriptions are the sans-IO core's own type.
fn to_loop(desc: &RTCSessionDescription) -> SfuResult<LoopDescription> {
    Ok(desc.clone())
}

fn from_loop(desc: &LoopDescription) -> SfuResult<RTCSessionDescription> {
    Ok(desc.clone())
}

/// A track the server sends on a downstream.
pub enum SendTrack {
    Async { track: Arc<TrackLocalStaticRTP>, transceiver: Arc<dyn RtpTransceiver> },
    Loop { transceiver: RTCRtpTransceiverId, sender: RTCRtpSenderId },
}

impl Conn {
    pub fn state(&self) -> ConnectionState {
        match self {
            Conn::Async(peer) => peer.state(),
            Conn::Loop(conn) => conn.report.last(),
        }
    }

    pub fn loop_id(&self) -> Option<PeerId> {
        match self {
            Conn::Async(_) => None,
            Conn::Loop(conn) => Some(conn.id),
        }
    }

    pub async fn set_remote_description(&self, desc: RTCSessionDescription) -> Result<(), String> {
        match self {
            Conn::Async(peer) => peer.pc.set_remote_description(desc).await.map_err(|e| e.to_string()),
            Conn::Loop(conn) => {
                let desc = to_loop(&desc).map_err(|e| e.to_string())?;
                conn.with(move |pc, now| pc.set_remote_description(now, desc).map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }

    pub async fn set_local_description(&self, desc: RTCSessionDescription) -> Result<(), String> {
        match self {
            Conn::Async(peer) => peer.pc.set_local_description(desc).await.map_err(|e| e.to_string()),
            Conn::Loop(conn) => {
                let desc = to_loop(&desc).map_err(|e| e.to_string())?;
                conn.with(move |pc, now| pc.set_local_description(now, desc).map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }

    pub async fn create_answer(&self) -> Result<RTCSessionDescription, String> {
        match self {
            Conn::Async(peer) => peer.pc.create_answer(None).await.map_err(|e| e.to_string()),
            Conn::Loop(conn) => {
                let answer = conn.with(|pc, _| pc.create_answer(None).map_err(|e| e.to_string())).await.map_err(|e| e.to_string())??;
                from_loop(&answer).map_err(|e| e.to_string())
            }
        }
    }

    pub async fn create_offer(&self) -> Result<RTCSessionDescription, String> {
        match self {
            Conn::Async(peer) => peer.pc.create_offer(None).await.map_err(|e| e.to_string()),
            Conn::Loop(conn) => {
                let offer = conn.with(|pc, _| pc.create_offer(None).map_err(|e| e.to_string())).await.map_err(|e| e.to_string())??;
                from_loop(&offer).map_err(|e| e.to_string())
            }
        }
    }

    /// The local description with its candidates, as the remote side must see it.
    pub async fn complete_local_description(&self) -> SfuResult<RTCSessionDescription> {
        match self {
            Conn::Async(peer) => peer.complete_local_description().await,
            // Candidates are the loop's own, added when the connection was made.
            Conn::Loop(conn) => {
                let desc = conn.with(|pc, _| pc.local_description()).await?;
                let mut desc = from_loop(&desc.ok_or_else(|| SfuError::Internal("no local description".into()))?)?;
                desc.sdp = conn.net.rewrite_candidates(&desc.sdp);
                Ok(desc)
            }
        }
    }

    pub async fn has_pending_local_description(&self) -> bool {
        self.pending_local_description().await.is_some()
    }

    pub async fn pending_local_description(&self) -> Option<RTCSessionDescription> {
        match self {
            Conn::Async(peer) => peer.pc.pending_local_description().await,
            Conn::Loop(conn) => {
                let desc = conn.with(|pc, _| pc.pending_local_description()).await.ok()??;
                from_loop(&desc).ok()
            }
        }
    }

    pub async fn has_pending_remote_description(&self) -> bool {
        match self {
            Conn::Async(peer) => peer.pc.pending_remote_description().await.is_some(),
            Conn::Loop(conn) => conn.with(|pc, _| pc.pending_remote_description().is_some()).await.unwrap_or(false),
        }
    }

    /// Adds a sendonly track of `kind`, pinned to `codec`, with our `ssrc`; its stream ids are
    /// `token`s, never user ids.
    pub async fn add_send_track(&self, kind: Kind, codec: &Codec, rtc_codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec, token: &str, ssrc: u32) -> SfuResult<SendTrack> {
        let rtp_kind = match kind {
            Kind::Audio => RtpCodecKind::Audio,
            Kind::Video => RtpCodecKind::Video,
        };
        let track = MediaStreamTrack::new(
            token.to_owned(),
            format!("{token}-{}-{ssrc:08x}", kind.as_str()),
            format!("{token}-{}", kind.as_str()),
            rtp_kind,
            vec![RTCRtpEncodingParameters {
                // The RTX SSRC is ours to name, so the loop's NACK answers know it (webrtc-rs
                // would mint one only where the offer is written).
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx: (kind == Kind::Video).then(|| RTCRtpRtxParameters { ssrc: (uuid::Uuid::new_v4().as_u128() as u32).max(1) }),
                    ..Default::default()
                },
                codec: rtc_codec.clone(),
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, streams: vec![], send_encodings: vec![] };
        let preference = vec![RTCRtpCodecParameters { rtp_codec: rtc_codec, payload_type: codec.payload_type }];
        let name = codec.name.clone();
        match self {
            Conn::Async(peer) => {
                let track = Arc::new(TrackLocalStaticRTP::new(track));
                let transceiver = peer
                    .pc
                    .add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init))
                    .await
                    .map_err(|e| SfuError::internal("adding a downstream track", e))?;
                // The consumer may answer only with the producer's codec.
                transceiver
                    .set_codec_preferences(preference)
                    .await
                    .map_err(|e| SfuError::InvalidSdp(format!("codec {name} cannot be forwarded: {e}")))?;
                Ok(SendTrack::Async { track, transceiver })
            }
            Conn::Loop(conn) => conn
                .with(move |pc, _| {
                    let transceiver =
                        pc.add_transceiver_from_track(track, Some(init)).map_err(|e| SfuError::internal("adding a downstream track", e))?;
                    let mut t = pc.rtp_transceiver(transceiver).ok_or_else(|| SfuError::Internal("the new transceiver is gone".into()))?;
                    t.set_codec_preferences(preference)
                        .map_err(|e| SfuError::InvalidSdp(format!("codec {name} cannot be forwarded: {e}")))?;
                    let sender = t.sender().ok_or_else(|| SfuError::Internal("a sendonly transceiver without a sender".into()))?;
                    Ok(SendTrack::Loop { transceiver, sender })
                })
                .await?,
        }
    }

    pub async fn remove_send_track(&self, track: &SendTrack) -> SfuResult<()> {
        match (self, track) {
            (Conn::Async(peer), SendTrack::Async { transceiver, .. }) => {
                if let Ok(Some(sender)) = transceiver.sender().await {
                    peer.pc.remove_track(&sender).await.map_err(|e| SfuError::internal("removing a downstream track", e))?;
                }
                Ok(())
            }
            (Conn::Loop(conn), SendTrack::Loop { sender, .. }) => {
                let sender = *sender;
                conn.with(move |pc, _| pc.remove_track(sender).map_err(|e| SfuError::internal("removing a downstream track", e))).await?
            }
            _ => Err(SfuError::Internal("a track of another engine".into())),
        }
    }

    /// The payload type the consumer's answer settled on for `track`.
    pub async fn negotiated_payload_type(&self, track: &SendTrack, mime: String) -> Option<u8> {
        let pick = |codecs: Vec<(String, u8)>| {
            codecs.iter().find(|(m, _)| m.eq_ignore_ascii_case(&mime)).or_else(|| codecs.first()).map(|(_, pt)| *pt)
        };
        match (self, track) {
            (Conn::Async(_), SendTrack::Async { transceiver, .. }) => {
                let sender = transceiver.sender().await.ok()??;
                let parameters = sender.get_parameters().await.ok()?;
                pick(parameters.rtp_parameters.codecs.iter().map(|c| (c.rtp_codec.mime_type.clone(), c.payload_type)).collect())
            }
            (Conn::Loop(conn), SendTrack::Loop { sender, .. }) => {
                let sender = *sender;
                let codecs = conn
                    .with(move |pc, _| {
                        pc.rtp_sender(sender).map(|mut s| {
                            s.get_parameters().rtp_parameters.codecs.iter().map(|c| (c.rtp_codec.mime_type.clone(), c.payload_type)).collect::<Vec<_>>()
                        })
                    })
                    .await
                    .ok()??;
                pick(codecs)
            }
            _ => None,
        }
    }

    pub async fn stats(&self, codecs: &[Option<Codec>; 2]) -> ConnectionStats {
        match self {
            Conn::Async(peer) => peer.stats(codecs).await,
            Conn::Loop(conn) => {
                let now = Instant::now();
                let id = conn.id;
                let (report, dropped, layers) = conn
                    .lp
                    .call(move |ctx| {
                        let dropped = ctx.peers.dropped(id);
                        let layers = ctx.handler.consumer_layers(id);
                        ctx.peers.get_mut(id).map(|pc| (pc.get_stats(now, StatsSelector::None), dropped, layers))
                    })
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let mut stats =
                    connection_stats(&conn.report.label, conn.report.last(), &report, codecs, &conn.rates, Some(conn.lp.local_addr().port()), now);
                stats.transport.packets_dropped = dropped;
                if let (Some(pair), Some(estimate)) = (&mut stats.transport.selected_candidate_pair, layers.and_then(|l| l.estimate)) {
                    pair.available_outgoing_bitrate = Some(estimate as f64);
                }
                for track in &mut stats.tracks {
                    if let TrackStats::Outbound(track) = track {
                        if track.kind == Kind::Video.as_str() {
                            track.layers = layers.map(|l| l.stats());
                        }
                    }
                }
                stats
            }
        }
    }

    /// Closes the connection and reports it `closed` (once, whoever closed it).
    pub async fn close(&self) {
        match self {
            Conn::Async(peer) => peer.close().await,
            Conn::Loop(conn) => {
                conn.closing.store(true, Ordering::Release);
                let _ = conn.remove().await;
                conn.report.report(ConnectionState::Closed);
            }
        }
    }
}

/// A producer's forwarding, on either engine.
#[derive(Clone)]
pub enum Forward {
    /// One forwarder task per kind.
    Async([ForwarderHandle; 2]),
    /// The streams of the producer's upstream `producer` on a loop.
    Loop { lp: Arc<MediaLoop<SfuHandler>>, producer: PeerId },
}

impl Forward {
    fn on_loop(&self, f: impl FnOnce(&mut SfuHandler, PeerId) + Send + 'static) {
        if let Forward::Loop { lp, producer } = self {
            let producer = *producer;
            drop(lp.call(move |ctx| f(ctx.handler, producer)));
        }
    }

    pub fn source(&self, kind: Kind, payload_type: u8, clock_rate: u32, codec: VideoCodec) {
        match self {
            Forward::Async(f) => f[kind.index()].send(Control::Source { payload_type, clock_rate }),
            Forward::Loop { .. } => self.on_loop(move |h, p| h.set_source(p, kind, payload_type, clock_rate, codec)),
        }
    }

    /// The simulcast layers (RIDs, lowest first) of the producer's video; the task engine
    /// takes one layer only and ignores them.
    pub fn layers(&self, rids: Vec<String>) {
        self.on_loop(move |h, p| h.set_layers(p, rids));
    }

    /// Caps the spatial layer `downstream`'s consumer gets (`HIGHEST`: none). `None` when the
    /// consumer does not get this producer's video (or on the task engine, which has no layers).
    pub async fn set_preferred_layer(&self, downstream: &Conn, spatial: u8, temporal: u8) -> Option<ConsumerLayers> {
        let (Forward::Loop { lp, producer }, Some(consumer)) = (self, downstream.loop_id()) else { return None };
        let producer = *producer;
        lp.call(move |ctx| ctx.handler.set_preferred_layer(producer, consumer, spatial, temporal)).await.ok().flatten()
    }

    /// What `downstream`'s consumer gets of the producer's video layers.
    pub async fn layers_of(&self, downstream: &Conn) -> Option<ConsumerLayers> {
        let (Forward::Loop { lp, producer }, Some(consumer)) = (self, downstream.loop_id()) else { return None };
        let producer = *producer;
        lp.call(move |ctx| ctx.handler.layers_of(producer, consumer)).await.ok().flatten()
    }

    pub fn mute(&self, kind: Kind, muted: bool) {
        match self {
            Forward::Async(f) => f[kind.index()].send(Control::Mute(muted)),
            Forward::Loop { .. } => self.on_loop(move |h, p| h.set_muted(p, kind, muted)),
        }
    }

    pub fn request_keyframe(&self) {
        match self {
            Forward::Async(f) => f[Kind::Video.index()].send(Control::RequestKeyframe),
            Forward::Loop { .. } => self.on_loop(|h, p| h.request_keyframe(p)),
        }
    }

    /// Starts (or, after a renegotiation, updates) `consumer`'s copy of `kind`.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &self,
        kind: Kind,
        consumer: &Arc<str>,
        downstream: &Conn,
        connected: &Arc<AtomicBool>,
        track: &SendTrack,
        ssrc: u32,
        payload_type: u8,
        preferred: (u8, u8),
    ) {
        match (self, downstream, track) {
            (Forward::Async(f), _, SendTrack::Async { track, .. }) => f[kind.index()].send(Control::Subscribe(Subscriber {
                consumer: consumer.clone(),
                connected: connected.clone(),
                track: track.clone(),
                ssrc,
                payload_type,
            })),
            (Forward::Loop { lp, producer }, Conn::Loop(conn), SendTrack::Loop { sender, .. }) => {
                let (id, sender, producer) = (conn.id, *sender, *producer);
                drop(lp.call(move |ctx| {
                    let Some(rtx) = ctx.peers.get_mut(id).and_then(|pc| pc.rtp_sender(sender).map(|mut s| rtx_of(&mut s, ssrc, payload_type)))
                    else {
                        return;
                    };
                    let output = Output::new(id, sender, ssrc, payload_type, rtx).preferring(preferred.0, preferred.1);
                    ctx.handler.subscribe(producer, kind, output);
                }));
            }
            _ => {}
        }
    }

    /// Stops `consumer`'s copies (`downstream`: its connection, if it still has one).
    pub fn unsubscribe(&self, consumer: &Arc<str>, downstream: Option<&Conn>) {
        match self {
            Forward::Async(f) => f.iter().for_each(|f| f.send(Control::Unsubscribe(consumer.clone()))),
            Forward::Loop { .. } => {
                if let Some(id) = downstream.and_then(Conn::loop_id) {
                    self.on_loop(move |h, p| Kind::ALL.into_iter().for_each(|k| h.unsubscribe(p, k, id)));
                }
            }
        }
    }

    /// Stops `consumer`'s copy of one kind.
    pub fn unsubscribe_kind(&self, kind: Kind, consumer: &Arc<str>, downstream: &Conn) {
        match self {
            Forward::Async(f) => f[kind.index()].send(Control::Unsubscribe(consumer.clone())),
            Forward::Loop { .. } => {
                if let Some(id) = downstream.loop_id() {
                    self.on_loop(move |h, p| h.unsubscribe(p, kind, id));
                }
            }
        }
    }

    /// Relays a consumer's keyframe requests on `track` to this producer (the loop engine
    /// relays them itself).
    pub fn relay_keyframe_requests(&self, kind: Kind, track: &SendTrack) {
        if let (Forward::Async(f), SendTrack::Async { track, .. }) = (self, track) {
            spawn_keyframe_relay(track.clone(), f[kind.index()].clone());
        }
    }

    pub fn stop(&self) {
        if let Forward::Async(f) = self {
            f.iter().for_each(|f| f.send(Control::Stop));
        }
        // On a loop, the streams go with the upstream's connection.
    }
}

/// The retransmission stream a sender negotiated for its encoding `ssrc`: the RTX SSRC its
/// offer declared, and the RTX payload type bound to `payload_type` (`apt`).
fn rtx_of(sender: &mut rtc::rtp_transceiver::rtp_sender::RTCRtpSender<'_>, ssrc: u32, payload_type: u8) -> Option<(u32, u8)> {
    let rtx_ssrc = sender
        .track()
        .codings()
        .iter()
        .find(|c| c.rtp_coding_parameters.ssrc == Some(ssrc))
        .and_then(|c| c.rtp_coding_parameters.rtx.as_ref().map(|r| r.ssrc))?;
    let apt = format!("apt={payload_type}");
    let rtx_pt = sender.get_parameters().rtp_parameters.codecs.iter().find(|c| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx") && c.rtp_codec.sdp_fmtp_line.split(';').any(|p| p.trim() == apt)
    })?;
    Some((rtx_ssrc, rtx_pt.payload_type))
}

/// `Direction` of a label, for the loop's interceptors.
pub fn is_upstream(label: &ConnectionLabel) -> bool {
    label.direction == Direction::Upstream
}
