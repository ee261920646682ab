//! webrtc 0.17 line: `APIBuilder` + `RTCPeerConnection` with `on_*` closures.
//! Every closure holds an `Arc<Callbacks>`; its `LiveToken` tells whether the closures were freed.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::timeout;
use webrtc17::api::interceptor_registry::register_default_interceptors;
use webrtc17::api::media_engine::{MediaEngine, MIME_TYPE_VP8};
use webrtc17::api::setting_engine::SettingEngine;
use webrtc17::api::APIBuilder;
use webrtc17::ice::mdns::MulticastDnsMode;
use webrtc17::ice::network_type::NetworkType;
use webrtc17::ice_transport::ice_gatherer_state::RTCIceGathererState;
use webrtc17::interceptor::registry::Registry;
use webrtc17::peer_connection::configuration::RTCConfiguration;
use webrtc17::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc17::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc17::peer_connection::RTCPeerConnection;
use webrtc17::rtp;
use webrtc17::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType};
use webrtc17::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc17::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc17::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc17::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc_lines::*;

fn vp8() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// Counted callback state, shared by the connection's closures.
struct Callbacks {
    _live: LiveToken,
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    packets: watch::Sender<usize>,
}

struct Peer {
    pc: RTCPeerConnection,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    packets: watch::Receiver<usize>,
}

async fn build_peer() -> Result<Peer, String> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters { capability: vp8(), payload_type: VP8_PAYLOAD_TYPE, ..Default::default() },
            RTPCodecType::Video,
        )
        .map_err(|e| e.to_string())?;
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).map_err(|e| e.to_string())?;
    // 0.17 binds one ephemeral socket per gathered interface address: keep only 127.0.0.1.
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    let api = APIBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    // Default configuration: no ICE servers, so no STUN.
    let pc = api.new_peer_connection(RTCConfiguration::default()).await.map_err(|e| e.to_string())?;

    let (gathered_tx, gathered) = watch::channel(false);
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let (packets_tx, packets) = watch::channel(0);
    let callbacks = Arc::new(Callbacks {
        _live: LiveToken::new(),
        gathered: gathered_tx,
        state: state_tx,
        packets: packets_tx,
    });

    // Every on_* callback gets a clone, as the 0.21 handler receives every event.
    let cb = callbacks.clone();
    pc.on_ice_gathering_state_change(Box::new(move |s| {
        if s == RTCIceGathererState::Complete {
            cb.gathered.send_replace(true);
        }
        Box::pin(async {})
    }));
    let cb = callbacks.clone();
    pc.on_peer_connection_state_change(Box::new(move |s| {
        cb.state.send_replace(s);
        Box::pin(async {})
    }));
    let cb = callbacks.clone();
    pc.on_track(Box::new(move |track, _receiver, _transceiver| {
        // The reader holds the track and a watch sender, never the callbacks; it ends when
        // reading fails after close.
        let packets = cb.packets.clone();
        tokio::spawn(async move {
            while track.read_rtp().await.is_ok() {
                packets.send_modify(|n| *n += 1);
            }
        });
        Box::pin(async {})
    }));
    let cb = callbacks.clone();
    pc.on_ice_candidate(Box::new(move |_| {
        let _ = &cb;
        Box::pin(async {})
    }));
    let cb = callbacks.clone();
    pc.on_ice_connection_state_change(Box::new(move |_| {
        let _ = &cb;
        Box::pin(async {})
    }));
    let cb = callbacks.clone();
    pc.on_signaling_state_change(Box::new(move |_| {
        let _ = &cb;
        Box::pin(async {})
    }));
    let cb = callbacks.clone();
    pc.on_negotiation_needed(Box::new(move || {
        let _ = &cb;
        Box::pin(async {})
    }));
    let cb = callbacks;
    pc.on_data_channel(Box::new(move |_| {
        let _ = &cb;
        Box::pin(async {})
    }));
    Ok(Peer { pc, gathered, state, packets })
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
    let state = *timeout(STEP_TIMEOUT, peer.state.wait_for(|s| {
        matches!(s, RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed)
    }))
    .await
    .map_err(|_| "connecting timed out".to_string())?
    .map_err(|e| e.to_string())?;
    match state {
        RTCPeerConnectionState::Connected => Ok(()),
        s => Err(format!("connection state {s}")),
    }
}

async fn round(_i: usize) -> Result<(), String> {
    let mut offerer = build_peer().await?;
    let mut answerer = build_peer().await?;

    let track = Arc::new(TrackLocalStaticRTP::new(vp8(), "bench-video".to_string(), "bench-stream".to_string()));
    offerer
        .pc
        .add_transceiver_from_track(
            track.clone() as Arc<dyn TrackLocal + Send + Sync>,
            Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, send_encodings: vec![] }),
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

    // TrackLocalStaticRTP rewrites SSRC and payload type to the negotiated ones.
    for seq in 0..PACKETS {
        let packet = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: VP8_PAYLOAD_TYPE,
                sequence_number: seq,
                timestamp: 3000 * seq as u32,
                ..Default::default()
            },
            payload: payload(seq),
        };
        track.write_rtp(&packet).await.map_err(|e| e.to_string())?;
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
    run("webrtc 0.17", rounds_from_args(), round).await;
}
