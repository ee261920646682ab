//! The SFU on a media loop: each producer's streams, and per stream the consumers it goes to.
//! A packet read from an upstream is rewritten and written to every consumer's connection as
//! a plain call on the loop; a consumer's keyframe request reaches the producer the same way.
//! The control plane changes this state only through [`crate::engine::media_loop::MediaLoop::call`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::sansio::Protocol;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

use super::events::{ConnectionLabel, ConnectionState, ServerEvent};
use super::sdp::Kind;
use super::peer::AUDIO_LEVEL_URI;
use super::stats::{ForwardTotals, LayerStats};
use crate::engine::media_loop::{LoopHandler, PeerId, Peers};
use crate::media::bwe::{LossEstimate, LossWindow};
use crate::media::codec::{Vp8Descriptor, VideoCodec};
use crate::media::history::PacketHistory;
use crate::media::layers::{LayerSelector, Verdict, Vp8Continuity, HIGHEST, MAX_LAYERS};
use crate::media::rewrite::Rewrite;
use crate::media::speaker::SpeakerDetector;

/// Keyframe requests to one producer are at most this frequent; extra ones are coalesced into
/// one sent when the interval ends.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// Forwarded counts go to the server's totals at most this often.
const TOTALS_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Video packets a producer stream keeps for its consumers' NACKs: about 1.5 s at 2.5 Mbit/s.
const HISTORY_PACKETS: u16 = 512;
/// A simulcast layer that sent nothing for this long is taken as paused (the producer's
/// encoder drops its top layers when its bandwidth falls).
const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// A consumer waiting for a layer's keyframe asks again this long after the last request: a
/// producer may not answer a request (Chromium sometimes does not, right after another).
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// How often paused layers are looked for.
const LAYER_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The control plane's side of a connection: hears its state changes, names its room and
/// user, and carries the room's events the loop decides (the active speaker).
pub trait PeerObserver: Send + Sync + 'static {
    fn on_state(&self, state: ConnectionState);

    fn label(&self) -> Option<&ConnectionLabel> {
        None
    }

    fn emit(&self, _event: ServerEvent) {}
}

enum Role {
    Upstream,
    /// Carries `producer`'s streams to one consumer.
    Downstream { producer: PeerId, connected: bool },
}

struct PeerEntry {
    role: Role,
    observer: Arc<dyn PeerObserver>,
}

/// One consumer's copy of a stream.
pub struct Output {
    pub consumer: PeerId,
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    pub payload_type: u8,
    /// The consumer's retransmission stream (RFC 4588): its SSRC and payload type. Without
    /// one, a retransmission goes as the original packet again.
    pub rtx: Option<(u32, u8)>,
    rtx_seq: u16,
    rewrite: Rewrite,
    /// Which simulcast layer it gets (unused without simulcast).
    layers: LayerSelector,
    vp8: Vp8Continuity,
    /// What the consumer's link carries, from the loss it reports.
    bwe: LossEstimate,
    loss: LossWindow,
    /// The new layer's keyframe, held back while it is not yet whole (a layer change).
    held: Vec<(rtc::rtp::Packet, Option<Vp8Ids>)>,
}

/// Where a VP8 packet's descriptor fields sit, and its picture id and TL0PICIDX.
type Vp8Ids = (Vp8Descriptor, Option<u16>, Option<u8>);

/// Packets of a keyframe held back at most; a longer one is given up (and asked for again).
const MAX_HELD: usize = 512;

impl Output {
    pub fn new(consumer: PeerId, sender: RTCRtpSenderId, ssrc: u32, payload_type: u8, rtx: Option<(u32, u8)>) -> Self {
        Self {
            consumer,
            sender,
            ssrc,
            payload_type,
            rtx,
            rtx_seq: uuid::Uuid::new_v4().as_u128() as u16,
            rewrite: Rewrite::default(),
            layers: LayerSelector::default(),
            vp8: Vp8Continuity::default(),
            bwe: LossEstimate::default(),
            loss: LossWindow::default(),
            held: Vec::new(),
        }
    }

    /// With its consumer's caps on the spatial and temporal layers it gets.
    pub fn preferring(mut self, spatial: u8, temporal: u8) -> Self {
        self.layers.set_preferred(spatial, 0);
        self.layers.set_preferred_temporal(temporal);
        self
    }

    /// Numbers `packet` for this consumer and writes it to its connection.
    fn send(&mut self, pc: &mut RTCPeerConnection, mut packet: rtc::rtp::Packet, vp8: Option<Vp8Ids>, clock_rate: u32, now: Instant) -> bool {
        self.rewrite.apply(&mut packet.header, now, clock_rate, self.ssrc, self.payload_type);
        if let Some((descriptor, picture, tl0)) = vp8 {
            if let Some((picture, tl0)) = self.vp8.apply(picture, tl0) {
                let mut payload = packet.payload.to_vec();
                descriptor.write(&mut payload, picture, tl0);
                packet.payload = payload.into();
            }
        }
        // Straight to the connection: the sender's own write_rtp would rebuild its parameters
        // for every packet to check what the rewrite has already made true (our SSRC, the
        // negotiated payload type, no header extensions). The connection does not read the
        // track id of what it is given to write (rtc 0.21.1), so none is allocated per packet.
        let message = RTCMessage::RtpPacket(String::new(), packet);
        let sent = pc.handle_write(TaggedRTCMessage { now, message }).is_ok();
        if sent {
            self.loss.on_sent();
        }
        sent
    }

    /// This consumer's retransmission of the packet it numbered `seq`, if `history` still has
    /// it.
    fn retransmission(&mut self, seq: u16, history: &PacketHistory) -> Option<rtc::rtp::Packet> {
        let original = history.get(self.rewrite.source_seq(seq)?)?;
        let mut header = original.header.clone();
        self.rewrite.renumber(&mut header, seq, self.ssrc, self.payload_type);
        let Some((ssrc, payload_type)) = self.rtx else {
            return Some(rtc::rtp::Packet { header, payload: original.payload.clone() });
        };
        let mut payload = Vec::with_capacity(2 + original.payload.len());
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.extend_from_slice(&original.payload);
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        header.ssrc = ssrc;
        header.payload_type = payload_type;
        header.sequence_number = self.rtx_seq;
        // The padding of the original is not part of the retransmitted payload (RFC 4588).
        header.padding = false;
        Some(rtc::rtp::Packet { header, payload: payload.into() })
    }
}

/// One encoding a producer sends of a stream: the stream itself, or one simulcast layer.
struct Layer {
    /// The RID of a simulcast layer.
    rid: Option<String>,
    ssrc: Option<u32>,
    /// Recent packets for the consumers' NACKs (video only: audio negotiates none).
    history: Option<PacketHistory>,
    last_packet: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    /// When a keyframe was asked for and not yet requested from the producer.
    keyframe_pending: Option<Instant>,
    /// Bytes received since the rate was last measured.
    bytes: u64,
    /// Its bitrate, smoothed over about two seconds (simulcast layers only).
    rate_bps: u64,
}

impl Layer {
    fn new(kind: Kind, rid: Option<String>) -> Self {
        Self {
            rid,
            ssrc: None,
            history: (kind == Kind::Video).then(|| PacketHistory::new(HISTORY_PACKETS)),
            last_packet: None,
            last_keyframe_request: None,
            keyframe_pending: None,
            bytes: 0,
            rate_bps: 0,
        }
    }

    /// Its packets now come with `ssrc`; what the history held belongs to another source.
    fn new_source(&mut self, ssrc: u32) {
        if let Some(history) = &mut self.history {
            history.clear();
        }
        self.ssrc = Some(ssrc);
    }

    fn request_keyframe(&mut self, now: Instant) {
        if self.history.is_some() && self.keyframe_pending.is_none() {
            self.keyframe_pending = Some(now);
        }
    }

    /// When the pending request may go out: at once, or when the throttle interval ends.
    fn keyframe_due(&self) -> Option<Instant> {
        let asked = self.keyframe_pending?;
        Some(match self.last_keyframe_request {
            Some(last) => asked.max(last + KEYFRAME_REQUEST_INTERVAL),
            None => asked,
        })
    }
}

/// One kind of one producer's media.
struct Stream {
    /// The payload type and clock rate the producer sends with; other payload types (RTX,
    /// FEC, a codec not negotiated downstream) are not forwarded.
    source: Option<(u8, u32)>,
    codec: VideoCodec,
    /// The producer's remote track of this kind, once it opened.
    track: Option<(String, RTCRtpReceiverId)>,
    muted: bool,
    outputs: Vec<Output>,
    /// One layer, or the simulcast layers from lowest to highest.
    layers: Vec<Layer>,
    /// Bit `i`: layer `i` is arriving.
    active: u8,
    /// When the layers' rates were last measured.
    rates_measured: Option<Instant>,
    /// The id the producer gave the audio-level header extension (RFC 6464), if negotiated.
    audio_level: Option<u8>,
}

impl Stream {
    fn new(kind: Kind) -> Self {
        Self {
            source: None,
            codec: VideoCodec::Other,
            track: None,
            muted: false,
            outputs: Vec::new(),
            layers: vec![Layer::new(kind, None)],
            active: 0,
            rates_measured: None,
            audio_level: None,
        }
    }

    fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    fn request_keyframe(&mut self, now: Instant) {
        self.layers.iter_mut().for_each(|l| l.request_keyframe(now));
    }

    /// Asks for a keyframe of the layer `consumer` gets (or awaits).
    fn request_keyframe_for(&mut self, consumer: PeerId, now: Instant) {
        if !self.is_simulcast() {
            return self.request_keyframe(now);
        }
        let Some(output) = self.outputs.iter().find(|o| o.consumer == consumer) else { return };
        if let Some(layer) = output.layers.awaits().or(output.layers.current()) {
            self.layers[usize::from(layer)].request_keyframe(now);
        }
    }

    /// Re-chooses every consumer's layer after the active layers changed, asking for the
    /// keyframes the new choices wait for.
    fn retarget(&mut self, now: Instant) {
        let Stream { outputs, layers, active, .. } = self;
        for output in outputs.iter_mut() {
            if output.layers.retarget(*active) {
                if let Some(layer) = output.layers.awaits() {
                    layers[usize::from(layer)].request_keyframe(now);
                }
            }
        }
    }

    fn keyframe_due(&self) -> Option<Instant> {
        self.layers.iter().filter_map(Layer::keyframe_due).min()
    }

    /// The highest active layer whose rate fits in `estimate` (0 when none does).
    fn ceiling_for(&self, estimate: Option<u64>) -> u8 {
        let Some(estimate) = estimate else { return HIGHEST };
        (0..self.layers.len())
            .rev()
            .find(|&l| self.active & (1 << l) != 0 && self.layers[l].rate_bps > 0 && self.layers[l].rate_bps <= estimate)
            .unwrap_or(0) as u8
    }

    /// A receiver report from `consumer` on its copy `ssrc`.
    fn on_loss_report(&mut self, consumer: PeerId, ssrc: u32, fraction_lost: u8) {
        if let Some(output) = self.outputs.iter_mut().find(|o| o.consumer == consumer && o.ssrc == ssrc) {
            output.loss.on_report(f64::from(fraction_lost) / 256.0);
        }
    }

    /// Each consumer whose loss window ended: its estimate moves, and with it the highest layer
    /// it is given.
    fn estimate_bandwidth(&mut self, now: Instant) {
        for index in 0..self.outputs.len() {
            let Some(loss) = self.outputs[index].loss.take(now) else { continue };
            let current = self.outputs[index].layers.current().map_or(0, usize::from);
            let sending = self.layers.get(current).map_or(0, |l| l.rate_bps);
            self.outputs[index].bwe.on_report(loss, sending, now);
            let ceiling = self.ceiling_for(self.outputs[index].bwe.estimate());
            let output = &mut self.outputs[index];
            if output.layers.set_ceiling(ceiling, self.active) {
                if let Some(layer) = output.layers.awaits() {
                    self.layers[usize::from(layer)].request_keyframe(now);
                }
            }
        }
    }

    /// Updates each layer's smoothed bitrate from the bytes since the last measurement.
    fn measure_rates(&mut self, now: Instant) {
        let Some(since) = self.rates_measured.replace(now) else { return };
        let elapsed = now.saturating_duration_since(since).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        for layer in &mut self.layers {
            let rate = (std::mem::take(&mut layer.bytes) * 8) as f64 / elapsed;
            // About a two-second memory at one measurement per half second.
            layer.rate_bps = if layer.rate_bps == 0 { rate as u64 } else { (0.75 * layer.rate_bps as f64 + 0.25 * rate) as u64 };
        }
    }
}

/// What a room's producers' audio levels say: who speaks, and how loud each is.
struct RoomAudio {
    detector: SpeakerDetector<Arc<str>>,
    /// A connection of the room, to emit its events through.
    observer: Arc<dyn PeerObserver>,
    /// When the next `audiolevels` event is due (with `audioLevelIntervalMs`).
    next_levels: Option<Instant>,
}

/// The rooms' speaker detection and level reports, from their producers' audio levels.
struct Speakers {
    /// By room id.
    rooms: HashMap<Arc<str>, RoomAudio>,
    /// How often to report the rooms' audio levels (`audiolevels`), if at all.
    interval: Option<Duration>,
}

impl Speakers {
    /// One audio packet's level (RFC 6464) from the producer `observer` stands for.
    fn hear(&mut self, observer: &Arc<dyn PeerObserver>, level: u8, now: Instant) {
        let Some(label) = observer.label() else { return };
        let interval = self.interval;
        let room = self.rooms.entry(label.room_id.clone()).or_insert_with(|| RoomAudio {
            detector: SpeakerDetector::default(),
            observer: observer.clone(),
            next_levels: interval.map(|interval| now + interval),
        });
        if let Some(user) = room.detector.packet(&label.user_id, level, now) {
            observer.emit(ServerEvent::ActiveSpeaker { room_id: label.room_id.to_string(), user_id: user.to_string() });
        }
    }

    /// A producer left: its room forgets it, and a room with no one left is dropped.
    fn forget(&mut self, label: &ConnectionLabel) {
        let Some(room) = self.rooms.get_mut(&label.room_id) else { return };
        room.detector.remove(&label.user_id);
        if room.detector.is_empty() {
            self.rooms.remove(&label.room_id);
        }
    }

    fn next_report(&self) -> Option<Instant> {
        self.rooms.values().filter_map(|r| r.next_levels).min()
    }

    /// Emits `audiolevels` for every room whose interval has ended.
    fn report(&mut self, now: Instant) {
        let Some(interval) = self.interval else { return };
        for (room_id, room) in self.rooms.iter_mut().filter(|(_, r)| r.next_levels.is_some_and(|t| t <= now)) {
            room.next_levels = Some(now + interval);
            let levels = room.detector.take_levels().into_iter().map(|(user, level)| (user.to_string(), level)).collect();
            room.observer.emit(ServerEvent::AudioLevels { room_id: room_id.to_string(), levels });
        }
    }
}

/// The SFU state of one loop.
pub struct SfuHandler {
    peers: HashMap<PeerId, PeerEntry>,
    streams: HashMap<(PeerId, Kind), Stream>,
    speakers: Speakers,
    totals: Arc<ForwardTotals>,
    unflushed: (u64, u64),
    last_flush: Instant,
    /// When the simulcast streams are next looked at for paused layers.
    next_layer_check: Option<Instant>,
}

impl ConsumerLayers {
    pub fn stats(&self) -> LayerStats {
        LayerStats {
            current: self.current,
            target: self.target,
            preferred: self.preferred,
            available: (0..self.available).filter(|l| self.active & (1 << l) != 0).collect(),
            temporal: self.temporal,
        }
    }
}

/// The layers a consumer of a producer's video gets, wants, and could get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLayers {
    /// The spatial layer it receives now (`None`: none yet).
    pub current: Option<u8>,
    /// The one it moves to at that layer's next keyframe (or stays on).
    pub target: Option<u8>,
    /// Its preference (`None`: the best there is).
    pub preferred: Option<u8>,
    /// How many spatial layers the producer sends (1 without simulcast).
    pub available: u8,
    /// Bit `i`: layer `i` is arriving.
    pub active: u8,
    /// The consumer's bandwidth estimate, bit/s (`None`: nothing limits it).
    pub estimate: Option<u64>,
    /// Its cap on temporal layers (`None`: every one).
    pub temporal: Option<u8>,
}

impl SfuHandler {
    pub fn new(totals: Arc<ForwardTotals>, audio_levels: Option<Duration>) -> Self {
        Self {
            peers: HashMap::new(),
            streams: HashMap::new(),
            speakers: Speakers { rooms: HashMap::new(), interval: audio_levels },
            totals,
            unflushed: (0, 0),
            last_flush: Instant::now(),
            next_layer_check: None,
        }
    }

    pub fn add_upstream(&mut self, id: PeerId, observer: Arc<dyn PeerObserver>) {
        self.peers.insert(id, PeerEntry { role: Role::Upstream, observer });
        for kind in Kind::ALL {
            self.streams.insert((id, kind), Stream::new(kind));
        }
    }

    pub fn add_downstream(&mut self, id: PeerId, producer: PeerId, observer: Arc<dyn PeerObserver>) {
        self.peers.insert(id, PeerEntry { role: Role::Downstream { producer, connected: false }, observer });
    }

    /// Forgets a connection: a producer's streams, or a consumer's outputs.
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(entry) = self.peers.remove(&id) else { return };
        match entry.role {
            Role::Upstream => {
                for kind in Kind::ALL {
                    self.streams.remove(&(id, kind));
                }
                if let Some(label) = entry.observer.label() {
                    self.speakers.forget(label);
                }
            }
            Role::Downstream { producer, .. } => {
                for kind in Kind::ALL {
                    if let Some(stream) = self.streams.get_mut(&(producer, kind)) {
                        stream.outputs.retain(|o| o.consumer != id);
                    }
                }
            }
        }
    }

    pub fn set_source(&mut self, producer: PeerId, kind: Kind, payload_type: u8, clock_rate: u32, codec: VideoCodec) {
        if let Some(stream) = self.streams.get_mut(&(producer, kind)) {
            stream.source = Some((payload_type, clock_rate.max(1)));
            stream.codec = codec;
        }
    }

    /// The simulcast layers (RIDs, lowest first) the producer's video comes in; none or one:
    /// no simulcast. Layers whose RID stays keep their state.
    pub fn set_layers(&mut self, producer: PeerId, rids: Vec<String>) {
        let Some(stream) = self.streams.get_mut(&(producer, Kind::Video)) else { return };
        let rids: Vec<Option<String>> = match rids.len() {
            0 | 1 => vec![None],
            _ => rids.into_iter().take(MAX_LAYERS).map(Some).collect(),
        };
        if stream.layers.iter().map(|l| &l.rid).eq(rids.iter()) {
            return;
        }
        let mut old = std::mem::take(&mut stream.layers);
        stream.layers = rids
            .into_iter()
            .map(|rid| match old.iter().position(|l| l.rid == rid) {
                Some(i) => old.swap_remove(i),
                None => Layer::new(Kind::Video, rid),
            })
            .collect();
        stream.active = 0;
        for output in &mut stream.outputs {
            let (preferred, temporal) = (output.layers.preferred(), output.layers.preferred_temporal());
            output.layers = LayerSelector::default();
            output.layers.set_preferred(preferred, 0);
            output.layers.set_preferred_temporal(temporal);
            output.rewrite.resync();
            output.vp8.switch();
        }
        if stream.is_simulcast() && self.next_layer_check.is_none() {
            self.next_layer_check = Some(Instant::now() + LAYER_CHECK_INTERVAL);
        }
    }

    /// Caps the spatial layer `consumer` gets of `producer`'s video (`HIGHEST`: no cap).
    pub fn set_preferred_layer(&mut self, producer: PeerId, consumer: PeerId, spatial: u8, temporal: u8) -> Option<ConsumerLayers> {
        let stream = self.streams.get_mut(&(producer, Kind::Video))?;
        let now = Instant::now();
        let active = stream.active;
        let output = stream.outputs.iter_mut().find(|o| o.consumer == consumer)?;
        output.layers.set_preferred_temporal(temporal);
        if output.layers.set_preferred(spatial, active) {
            if let Some(layer) = output.layers.awaits() {
                stream.layers[usize::from(layer)].request_keyframe(now);
            }
        }
        self.layers_of(producer, consumer)
    }

    /// What the consumer of downstream `consumer` gets of its producer's video layers.
    pub fn consumer_layers(&self, consumer: PeerId) -> Option<ConsumerLayers> {
        match self.peers.get(&consumer)?.role {
            Role::Downstream { producer, .. } => self.layers_of(producer, consumer),
            Role::Upstream => None,
        }
    }

    /// What `consumer` gets of `producer`'s video, if it gets it.
    pub fn layers_of(&self, producer: PeerId, consumer: PeerId) -> Option<ConsumerLayers> {
        let stream = self.streams.get(&(producer, Kind::Video))?;
        let output = stream.outputs.iter().find(|o| o.consumer == consumer)?;
        Some(if stream.is_simulcast() {
            ConsumerLayers {
                current: output.layers.current(),
                target: output.layers.target(),
                preferred: Some(output.layers.preferred()).filter(|p| *p != HIGHEST),
                available: stream.layers.len() as u8,
                active: stream.active,
                estimate: output.bwe.estimate(),
                temporal: Some(output.layers.preferred_temporal()).filter(|t| *t != HIGHEST),
            }
        } else {
            let preferred = Some(output.layers.preferred()).filter(|p| *p != HIGHEST);
            let temporal = Some(output.layers.preferred_temporal()).filter(|t| *t != HIGHEST);
            ConsumerLayers { current: Some(0), target: Some(0), preferred, available: 1, active: 1, estimate: output.bwe.estimate(), temporal }
        })
    }

    /// Adds a consumer's output, or replaces it after a renegotiation (numbering continues).
    pub fn subscribe(&mut self, producer: PeerId, kind: Kind, output: Output) {
        let Some(stream) = self.streams.get_mut(&(producer, kind)) else { return };
        let now = Instant::now();
        let consumer = output.consumer;
        match stream.outputs.iter_mut().find(|o| o.consumer == consumer) {
            Some(existing) => {
                let mut rewrite = std::mem::take(&mut existing.rewrite);
                rewrite.resync();
                let mut vp8 = existing.vp8;
                vp8.switch();
                let mut layers = LayerSelector::default();
                layers.set_preferred(output.layers.preferred(), stream.active);
                layers.set_preferred_temporal(output.layers.preferred_temporal());
                *existing = Output { rewrite, vp8, layers, ..output };
            }
            None => {
                let mut output = output;
                output.layers.retarget(stream.active);
                stream.outputs.push(output);
            }
        }
        stream.request_keyframe_for(consumer, now);
    }

    pub fn unsubscribe(&mut self, producer: PeerId, kind: Kind, consumer: PeerId) {
        if let Some(stream) = self.streams.get_mut(&(producer, kind)) {
            stream.outputs.retain(|o| o.consumer != consumer);
        }
    }

    pub fn set_muted(&mut self, producer: PeerId, kind: Kind, muted: bool) {
        let Some(stream) = self.streams.get_mut(&(producer, kind)) else { return };
        if stream.muted && !muted {
            // Numbering continues across the gap, and decoders need a fresh keyframe.
            stream.outputs.iter_mut().for_each(|o| {
                o.rewrite.resync();
                o.vp8.switch();
            });
            stream.request_keyframe(Instant::now());
        }
        stream.muted = muted;
    }

    pub fn request_keyframe(&mut self, producer: PeerId) {
        if let Some(stream) = self.streams.get_mut(&(producer, Kind::Video)) {
            stream.request_keyframe(Instant::now());
        }
    }

    fn forward(&mut self, peers: &mut Peers, producer: PeerId, track_id: &str, mut packet: rtc::rtp::Packet, now: Instant) {
        let Some(kind) = Kind::ALL
            .into_iter()
            .find(|k| self.streams.get(&(producer, *k)).is_some_and(|s| s.track.as_ref().is_some_and(|t| t.0 == track_id)))
        else {
            return;
        };
        let Some(stream) = self.streams.get_mut(&(producer, kind)) else { return };
        let Some((source_pt, clock_rate)) = stream.source else { return };
        if packet.header.payload_type != source_pt {
            return;
        }
        let ssrc = packet.header.ssrc;
        let layer = match stream.layers.iter().position(|l| l.ssrc == Some(ssrc)) {
            Some(layer) => layer,
            // A layer whose RID has not been bound to its SSRC yet.
            None if stream.is_simulcast() => return,
            None => {
                if stream.layers[0].ssrc.is_some() {
                    stream.outputs.iter_mut().for_each(|o| o.rewrite.resync());
                }
                stream.layers[0].new_source(ssrc);
                0
            }
        };
        stream.layers[layer].last_packet = Some(now);
        stream.layers[layer].bytes += packet.payload.len() as u64;
        if stream.active & (1 << layer) == 0 {
            stream.active |= 1 << layer;
            stream.retarget(now);
        }
        // The level is the extension's low 7 bits (the top one is voice activity).
        let level = stream
            .audio_level
            .filter(|_| !stream.muted)
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|v| v.first().map(|b| b & 0x7f));
        if let (Some(level), Some(entry)) = (level, self.peers.get(&producer)) {
            self.speakers.hear(&entry.observer, level, now);
        }
        if stream.muted || stream.outputs.is_empty() {
            return;
        }
        // Extension ids are per connection; consumers negotiated their own.
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        if let Some(history) = &mut stream.layers[layer].history {
            history.insert(&packet);
        }
        let simulcast = stream.is_simulcast();
        let temporal_filter = stream.codec == VideoCodec::Vp8 && stream.outputs.iter().any(|o| o.layers.filters_temporal());
        let layer_id = layer as u8;
        let keyframe = simulcast
            && stream.outputs.iter().any(|o| o.layers.awaits() == Some(layer_id))
            && stream.codec.starts_keyframe(&packet.payload);
        // A consumer that changed layers numbers VP8 pictures on from where it was.
        let vp8 = ((simulcast || temporal_filter) && stream.codec == VideoCodec::Vp8)
            .then(|| Vp8Descriptor::read(&packet.payload))
            .flatten()
            .map(|d| (d, d.picture_id(&packet.payload), d.tl0_pic_idx(&packet.payload)));
        let temporal = vp8.and_then(|(d, ..)| d.temporal);
        let starts_frame = vp8.is_some_and(|(d, ..)| d.starts_frame);
        let seq = packet.header.sequence_number;
        let size = (12 + 4 * packet.header.csrc.len() + packet.payload.len()) as u64;
        let last = stream.outputs.len() - 1;
        let mut written = 0;
        for (i, output) in stream.outputs.iter_mut().enumerate() {
            let Some(PeerEntry { role: Role::Downstream { connected: true, .. }, observer }) = self.peers.get(&output.consumer) else {
                continue;
            };
            let mut held = Vec::new();
            if simulcast {
                if output.layers.switching().is_none() && !output.held.is_empty() {
                    output.held.clear();
                }
                match output.layers.on_packet(layer_id, keyframe, packet.header.marker) {
                    Verdict::Drop => continue,
                    Verdict::Forward => {}
                    Verdict::Hold => {
                        if output.held.len() >= MAX_HELD {
                            output.held.clear();
                            output.layers.lose(layer_id);
                        } else {
                            output.held.push((packet.clone(), vp8));
                        }
                        continue;
                    }
                    Verdict::Switch | Verdict::Complete => {
                        held = std::mem::take(&mut output.held);
                        output.rewrite.resync();
                        output.vp8.switch();
                        if let Some(label) = observer.label() {
                            observer.emit(ServerEvent::LayersChange {
                                room_id: label.room_id.to_string(),
                                user_id: label.user_id.to_string(),
                                producer_id: label.producer_id.to_string(),
                                spatial_layer: layer_id,
                                temporal_layer: Some(output.layers.preferred_temporal()).filter(|t| *t != HIGHEST),
                            });
                        }
                    }
                }
            }
            // Temporal layers above the consumer's cap are left out, frame by frame, with no
            // gap in its numbering.
            if let Some(tid) = temporal {
                if !output.layers.passes_temporal(tid, starts_frame && tid == 0) {
                    output.rewrite.skip(seq);
                    if starts_frame {
                        output.vp8.skip_picture();
                    }
                    continue;
                }
            }
            if output.rewrite.is_late(seq) {
                continue;
            }
            let Some(pc) = peers.get_mut(output.consumer) else { continue };
            for (earlier, ids) in held {
                written += u64::from(output.send(pc, earlier, ids, clock_rate, now));
            }
            // Header clone is a plain copy once extensions are cleared; the payload is shared.
            let out = if i == last { std::mem::take(&mut packet) } else { packet.clone() };
            written += u64::from(output.send(pc, out, vp8, clock_rate, now));
        }
        self.unflushed.0 += written;
        self.unflushed.1 += written * size;
    }

    /// Retransmits what `consumer` reports lost from the producer's shared history.
    fn answer_nack(&mut self, peers: &mut Peers, producer: PeerId, consumer: PeerId, nack: &TransportLayerNack, now: Instant) {
        let Some(stream) = self.streams.get_mut(&(producer, Kind::Video)) else { return };
        let simulcast = stream.is_simulcast();
        let Some(output) = stream.outputs.iter_mut().find(|o| o.consumer == consumer && o.ssrc == nack.media_ssrc) else {
            return;
        };
        nack.nacks.iter().flat_map(|pair| *pair).for_each(|seq| output.loss.on_nack(seq));
        // The current numbering covers the current layer only (a change of layer resyncs it).
        let layer = if simulcast { output.layers.current() } else { Some(0) };
        let Some(history) = layer.and_then(|l| stream.layers[usize::from(l)].history.as_ref()) else { return };
        let Some(pc) = peers.get_mut(consumer) else { return };
        for seq in nack.nacks.iter().flat_map(|pair| *pair) {
            if let Some(packet) = output.retransmission(seq, history) {
                let _ = pc.handle_write(TaggedRTCMessage { now, message: RTCMessage::RtpPacket(String::new(), packet) });
            }
        }
    }

    fn flush_totals(&mut self, now: Instant) {
        let (packets, bytes) = std::mem::take(&mut self.unflushed);
        if packets > 0 {
            self.totals.add(packets, bytes);
        }
        self.last_flush = now;
    }
}

impl LoopHandler for SfuHandler {
    fn on_message(&mut self, peers: &mut Peers, from: PeerId, message: RTCMessage, now: Instant) {
        match message {
            RTCMessage::RtpPacket(track_id, packet) => {
                if matches!(self.peers.get(&from), Some(PeerEntry { role: Role::Upstream, .. })) {
                    self.forward(peers, from, &track_id, packet, now);
                }
            }
            RTCMessage::RtcpPacket(_, packets) => {
                let Some(PeerEntry { role: Role::Downstream { producer, .. }, .. }) = self.peers.get(&from) else { return };
                let asks_keyframe = packets.iter().any(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                });
                let producer = *producer;
                if asks_keyframe {
                    if let Some(stream) = self.streams.get_mut(&(producer, Kind::Video)) {
                        stream.request_keyframe_for(from, now);
                    }
                }
                for nack in packets.iter().filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>()) {
                    self.answer_nack(peers, producer, from, nack, now);
                }
                let reports = packets.iter().flat_map(|p| {
                    let any = p.as_any();
                    let rr = any.downcast_ref::<ReceiverReport>().map(|r| r.reports.as_slice());
                    let sr = any.downcast_ref::<SenderReport>().map(|r| r.reports.as_slice());
                    rr.or(sr).unwrap_or_default()
                });
                if let Some(stream) = self.streams.get_mut(&(producer, Kind::Video)) {
                    for report in reports {
                        stream.on_loss_report(from, report.ssrc, report.fraction_lost);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, peers: &mut Peers, from: PeerId, event: RTCPeerConnectionEvent, _now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let state = match state {
                    RTCPeerConnectionState::New => ConnectionState::New,
                    RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
                    RTCPeerConnectionState::Connected => ConnectionState::Connected,
                    RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
                    RTCPeerConnectionState::Failed => ConnectionState::Failed,
                    RTCPeerConnectionState::Closed => ConnectionState::Closed,
                    _ => return,
                };
                let Some(entry) = self.peers.get_mut(&from) else { return };
                let mut keyframe_for = None;
                if let Role::Downstream { producer, connected } = &mut entry.role {
                    *connected = state == ConnectionState::Connected;
                    if *connected {
                        keyframe_for = Some(*producer);
                    }
                }
                entry.observer.on_state(state);
                if let Some(producer) = keyframe_for {
                    self.request_keyframe(producer);
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let Some(pc) = peers.get_mut(from) else { return };
                let Some(mut receiver) = pc.rtp_receiver(init.receiver_id) else { return };
                let kind = match receiver.track().kind() {
                    RtpCodecKind::Audio => Kind::Audio,
                    RtpCodecKind::Video => Kind::Video,
                    _ => return,
                };
                let audio_level = receiver
                    .get_parameters()
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == AUDIO_LEVEL_URI)
                    .and_then(|e| u8::try_from(e.id).ok());
                if let Some(stream) = self.streams.get_mut(&(from, kind)) {
                    stream.track = Some((init.track_id.to_string(), init.receiver_id));
                    stream.audio_level = audio_level.filter(|_| kind == Kind::Audio);
                    let layer = init.rid.as_deref().and_then(|rid| stream.layers.iter().position(|l| l.rid.as_deref() == Some(rid)));
                    match layer {
                        // A simulcast layer's RID is bound to its SSRC: a new one is a new source.
                        Some(layer) if stream.layers[layer].ssrc != Some(init.ssrc) => {
                            stream.layers[layer].new_source(init.ssrc);
                            stream.outputs.iter_mut().for_each(|o| o.layers.lose(layer as u8));
                        }
                        Some(_) => {}
                        None if !stream.is_simulcast() => stream.layers[0].ssrc = None,
                        None => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let keyframes = self.streams.values().filter_map(Stream::keyframe_due).min();
        let flush = (self.unflushed.0 > 0).then(|| self.last_flush + TOTALS_FLUSH_INTERVAL);
        keyframes.into_iter().chain(flush).chain(self.speakers.next_report()).chain(self.next_layer_check).min()
    }

    fn handle_timeout(&mut self, peers: &mut Peers, now: Instant) {
        if self.unflushed.0 > 0 && now >= self.last_flush + TOTALS_FLUSH_INTERVAL {
            self.flush_totals(now);
        }
        self.speakers.report(now);
        if self.next_layer_check.is_some_and(|t| t <= now) {
            self.check_layers(now);
        }
        for (&(producer, _), stream) in self.streams.iter_mut() {
            if stream.keyframe_due().is_none_or(|t| t > now) {
                continue;
            }
            let mut plis = Vec::new();
            for layer in stream.layers.iter_mut().filter(|l| l.keyframe_due().is_some_and(|t| t <= now)) {
                layer.keyframe_pending = None;
                // Nothing to ask yet; the first packets of a new source start with a keyframe.
                let Some(media_ssrc) = layer.ssrc else { continue };
                layer.last_keyframe_request = Some(now);
                plis.push(Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc }) as Box<dyn rtc::rtcp::Packet>);
            }
            let Some((_, receiver)) = &stream.track else { continue };
            if plis.is_empty() {
                continue;
            }
            let Some(pc) = peers.get_mut(producer) else { continue };
            if let Some(mut receiver) = pc.rtp_receiver(*receiver) {
                if let Err(e) = receiver.write_rtcp(now, plis) {
                    tracing::debug!(error = %e, "keyframe request not sent");
                }
            }
        }
    }
}

impl SfuHandler {
    /// Takes simulcast layers that stopped arriving as paused, moving their consumers to the
    /// best layer still there.
    fn check_layers(&mut self, now: Instant) {
        let mut any = false;
        for stream in self.streams.values_mut().filter(|s| s.is_simulcast()) {
            any = true;
            stream.measure_rates(now);
            stream.estimate_bandwidth(now);
            let awaited = stream.outputs.iter().filter_map(|o| o.layers.awaits()).fold(0u8, |mask, l| mask | 1 << l);
            for (i, layer) in stream.layers.iter_mut().enumerate().filter(|(i, _)| awaited & (1 << i) != 0) {
                if layer.last_keyframe_request.is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY) {
                    tracing::debug!(layer = i, "keyframe asked for again");
                    layer.request_keyframe(now);
                }
            }
            let idle = stream
                .layers
                .iter()
                .enumerate()
                .filter(|(_, l)| l.last_packet.is_none_or(|t| now.saturating_duration_since(t) >= LAYER_IDLE))
                .fold(0u8, |mask, (i, _)| mask | 1 << i);
            if stream.active & idle != 0 {
                stream.active &= !idle;
                stream.retarget(now);
            }
        }
        self.next_layer_check = any.then(|| now + LAYER_CHECK_INTERVAL);
    }
}

impl Drop for SfuHandler {
    fn drop(&mut self) {
        self.flush_totals(Instant::now());
    }
}
