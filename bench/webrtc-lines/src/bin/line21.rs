//! webrtc 0.21 line: `PeerConnectionBuilder` + a `PeerConnectionEventHandler`.
//! The handler is what the connection's driver keeps; its `LiveToken` tells whether it was freed.

use std::sync::Arc;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::watch;
use tokio::time::timeout;
use webrtc21::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc21::media_stream::track_local::TrackLocal;
use webrtc21::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc21::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};
use webrtc_lines::*;

const SSRC: u32 = 0x5eed_0021;

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// Counted event handler: reports gathering, connection state and received packets on watches.
struct Handler {
    _live: LiveToken,
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    packets: watch::Sender<usize>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // The reader holds the track and a watch sender, never the handler; it ends when the
        // track ends (poll returns None).
        let packets = self.packets.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = event {
                    packets.send_modify(|n| *n += 1);
                }
            }
        });
    }
}

struct Peer {
    pc: Box<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    packets: watch::Receiver<usize>,
}

async fn build_peer() -> Result<Peer, String> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters { rtp_codec: vp8(), payload_type: VP8_PAYLOAD_TYPE },
            RtpCodecKind::Video,
        )
        .map_err(|e| e.to_string())?;
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).map_err(|e| e.to_string())?;
    let settings = SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();

    let (gathered_tx, gathered) = watch::channel(false);
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let (packets_tx, packets) = watch::channel(0);
    let handler = Arc::new(Handler {
        _live: LiveToken::new(),
        gathered: gathered_tx,
        state: state_tx,
        packets: packets_tx,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build()) // no ICE servers: no STUN
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Peer { pc: Box::new(pc), gathered, state, packets })
}

/// Sets `desc` locally and returns the description once gathering is complete (non-trickle).
async fn set_local_complete(peer: &mut Peer, desc: RTCSessionDescription) -> Result<RTCSessionDescription, String> {
    peer.pc.set_local_description(desc).await.map_err(|e| e.to_string())?;
    timeout(STEP_TIMEOUT, peer.gathered.wait_for(|done| *done))
        .await
        .map_err(|_| "ICE gathering timed out".to_string())?
        .map_err(|e| e.to_string())?;
    peer.pc.local_description().await.ok_or_else(|| "no local description".to_string())
}

async fn wait_connected(peer: &mut Peer) -> Result<(), String> {
    let state = timeout(STEP_TIMEOUT, peer.state.wait_for(|s| {
        matches!(s, RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed)
    }))
    .await
    .map_err(|_| "connecting timed out".to_string())?
    .map_err(|e| e.to_string())?
    .clone();
    match state {
        RTCPeerConnectionState::Connected => Ok(()),
        s => Err(format!("connection state {s}")),
    }
}

async fn round(_i: usize) -> Result<(), String> {
    let mut offerer = build_peer().await?;
    let mut answerer = build_peer().await?;

    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "bench-stream".to_string(),
        "bench-video".to_string(),
        "bench-video".to_string(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(SSRC), ..Default::default() },
            codec: vp8(),
            ..Default::default()
        }],
    )));
    offerer
        .pc
        .add_transceiver_from_track(
            track.clone() as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .map_err(|e| e.to_string())?;

    let offer = offerer.pc.create_offer(None).await.map_err(|e| e.to_string())?;
    let offer = set_local_complete(&mut offerer, offer).await?;
    answerer.pc.set_remote_description(offer).await.map_err(|e| e.to_string())?;
    let answer = answerer.pc.create_answer(None).await.map_err(|e| e.to_string())?;
    let answer = set_local_complete(&mut answerer, answer).await?;
    offerer.pc.set_remote_description(answer).await.map_err(|e| e.to_string())?;

    wait_connected(&mut offerer).await?;
    wait_connected(&mut answerer).await?;

    for seq in 0..PACKETS {
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: true,
                payload_type: VP8_PAYLOAD_TYPE,
                sequence_number: seq,
                timestamp: 3000 * seq as u32,
                ssrc: SSRC,
                ..Default::default()
            },
            payload: payload(seq),
        };
        track.write_rtp(packet).await.map_err(|e| e.to_string())?;
    }
    timeout(STEP_TIMEOUT, answerer.packets.wait_for(|n| *n >= 1))
        .await
        .map_err(|_| "the answerer received no RTP".to_string())?
        .map_err(|e| e.to_string())?;
    check_counted()?;

    offerer.pc.close().await.map_err(|e| e.to_string())?;
    answerer.pc.close().await.map_err(|e| e.to_string())?;
    drop((offerer, answerer, track));
    Ok(())
}

#[tokio::main]
async fn main() {
    run("webrtc 0.21", rounds_from_args(), round).await;
}
