//! Building webrtc-rs peer connections the way the SFU needs them: one UDP port from our pool,
//! loopback candidates allowed, mDNS off, an announced IP written into candidates, and
//! non-trickle signalling (an SDP is handed out only once gathering is complete).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use tokio::sync::watch;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateType, RTCIceGatheringState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use webrtc::media_stream::track_remote::TrackRemote;

use super::error::{SfuError, SfuResult};
use super::sdp::Kind;
use super::ports::{PortLease, PortPool};

/// Network settings shared by every connection of a server.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub listen_ip: IpAddr,
    pub announced_ip: Option<IpAddr>,
}

/// How long the server waits for its own ICE gathering (host candidates only: near instant).
const GATHERING_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts peer connections whose webrtc-rs state is still allocated, for `stats()` and leak
/// checks: the count drops when webrtc-rs frees the connection (and with it our handler),
/// not merely when we close it.
#[derive(Debug, Default)]
pub struct ConnectionCounter(AtomicUsize);

impl ConnectionCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A built connection with what keeps it accounted for: its port lease and the live count.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<bool>,
    _port: PortLease,
}

/// Events a connection reports to the part of the SFU that owns it.
pub trait PeerEvents: Send + Sync + 'static {
    fn on_track(&self, _kind: Kind, _track: Arc<dyn TrackRemote>) {}
    fn on_connected(&self) {}
}

struct Handler<E: PeerEvents> {
    gathering_done: watch::Sender<bool>,
    events: E,
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

    async fn on_connection_state_change(&self, state: webrtc::peer_connection::RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state");
        if state == webrtc::peer_connection::RTCPeerConnectionState::Connected {
            self.events.on_connected();
        }
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

/// Passes consumers' keyframe requests (PLI, FIR) to the application, where the SFU relays them
/// to the producer; every other inbound RTCP packet stays with the interceptors.
struct KeyframeRequestTap {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            }) {
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
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The codecs the server negotiates: exactly those it forwards (Opus, VP8, VP9, H264, AV1),
/// each video codec with its RTX format. webrtc-rs's default table also has G.722, PCMU, PCMA
/// and HEVC; a producer offering one of those first would otherwise have it chosen.
fn register_forwarded_codecs(engine: &mut MediaEngine) -> rtc::shared::error::Result<()> {
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

pub async fn build_peer<E: PeerEvents>(
    net: &NetworkConfig,
    ports: &Arc<PortPool>,
    counter: &Arc<ConnectionCounter>,
    events: E,
) -> SfuResult<Peer> {
    let port = ports.lease()?;
    let mut media_engine = MediaEngine::default();
    register_forwarded_codecs(&mut media_engine).map_err(|e| SfuError::internal("registering codecs", e))?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .map_err(|e| SfuError::internal("registering interceptors", e))?
        .with(
            // Last in the chain, so every interceptor has seen the RTCP before it is tapped.
            Slot::from(14_000),
            KeyframeRequestTap { read: Default::default(), write: Default::default() },
        );

    let mut settings = SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled);
    if let Some(ip) = net.announced_ip {
        settings = settings.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
    }

    let (gathering_done, gathering) = watch::channel(false);
    counter.0.fetch_add(1, Ordering::Relaxed);
    let handler = Arc::new(Handler { gathering_done, events, live: counter.clone() });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings.build())
        .with_handler(handler)
        .with_udp_addrs(vec![port.addr()])
        .build()
        .await
        .map_err(|e| SfuError::ResourceExhausted(format!("could not open a peer connection on {}: {e}", port.addr())))?;
    Ok(Peer { pc: Arc::new(pc), gathering, _port: port })
}

impl Peer {
    /// The local description with every candidate in it, once gathering has completed.
    pub async fn complete_local_description(&self) -> SfuResult<RTCSessionDescription> {
        let mut gathering = self.gathering.clone();
        tokio::time::timeout(GATHERING_TIMEOUT, gathering.wait_for(|done| *done))
            .await
            .map_err(|_| SfuError::Internal("ICE gathering did not complete within 5 s".into()))?
            .map_err(|_| SfuError::Internal("the connection closed while gathering".into()))?;
        self.pc
            .local_description()
            .await
            .ok_or_else(|| SfuError::Internal("no local description after gathering".into()))
    }

    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::warn!(error = %e, "closing a peer connection failed");
        }
    }
}
