//! The media path. One forwarder task per (producer, kind) owns everything a packet touches:
//! the producer's remote track, the consumers' local tracks, their SSRC / payload-type /
//! sequence rewriting, mute state and keyframe throttling. The room talks to it only by
//! message, so a packet takes no lock of ours and allocates nothing of ours.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::sdp::Kind;
use super::stats::ForwardTotals;

/// Keyframe requests to one producer are at most this frequent; extra ones are coalesced
/// into one sent when the interval ends.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// Forwarded counts go to the server's totals at most this often (and when the task ends),
/// so the shared counters are not touched per packet.
const TOTALS_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// One consumer's view of the stream.
pub struct Subscriber {
    pub consumer: Arc<str>,
    /// Set while the consumer's connection is up: writing before DTLS is done only makes
    /// webrtc-rs drop the packet (and log it).
    pub connected: Arc<AtomicBool>,
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    pub payload_type: u8,
}

pub enum Control {
    /// The producer's track for this kind (again, after a renegotiation).
    Track(Arc<dyn TrackRemote>),
    /// The payload type and clock rate the producer sends this kind with.
    Source { payload_type: u8, clock_rate: u32 },
    /// Adds the consumer, or updates it after it renegotiated.
    Subscribe(Subscriber),
    Unsubscribe(Arc<str>),
    Mute(bool),
    RequestKeyframe,
    /// Ends the task now, whoever else still holds a handle.
    Stop,
}

/// The room's handle on a forwarder task. Dropping every handle ends the task.
#[derive(Clone)]
pub struct ForwarderHandle {
    tx: mpsc::UnboundedSender<Control>,
}

impl ForwarderHandle {
    pub fn spawn(kind: Kind, producer: Arc<str>, totals: Arc<ForwardTotals>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Forwarder::new(kind, producer, totals).run(rx));
        Self { tx }
    }

    /// A send to a finished forwarder is dropped: it only happens while tearing down.
    pub fn send(&self, control: Control) {
        let _ = self.tx.send(control);
    }
}

#[doc(hidden)] pub struct Output {
    sub: Subscriber,
    seq_offset: u16,
    ts_offset: u32,
    last_seq: u16,
    last_ts: u32,
    last_sent: Option<Instant>,
    /// The next packet starts a new source sequence: continue numbering from `last_*`.
    pub resync: bool,
}

impl Output {
    pub fn new(sub: Subscriber) -> Self {
        Self { sub, seq_offset: 0, ts_offset: 0, last_seq: 0, last_ts: 0, last_sent: None, resync: false }
    }

    /// Rewrites a packet's sequence number and timestamp so that what this consumer sees is one
    /// continuous stream across source changes and mutes.
    pub fn rewrite(&mut self, header: &mut rtp::header::Header, now: Instant, clock_rate: u32) {
        if self.resync {
            self.resync = false;
            if let Some(last) = self.last_sent {
                // In u128: a gap of years at 90 kHz overflows u64 microsecond-ticks.
                let elapsed_ticks = (now.duration_since(last).as_micros() * clock_rate as u128 / 1_000_000).max(1);
                self.seq_offset = self.last_seq.wrapping_add(1).wrapping_sub(header.sequence_number);
                self.ts_offset = self
                    .last_ts
                    .wrapping_add(elapsed_ticks as u32)
                    .wrapping_sub(header.timestamp);
            }
        }
        let seq = header.sequence_number.wrapping_add(self.seq_offset);
        let ts = header.timestamp.wrapping_add(self.ts_offset);
        if self.last_sent.is_none() || seq.wrapping_sub(self.last_seq) < 0x8000 {
            self.last_seq = seq;
            self.last_ts = ts;
        }
        self.last_sent = Some(now);
        header.sequence_number = seq;
        header.timestamp = ts;
        header.ssrc = self.sub.ssrc;
        header.payload_type = self.sub.payload_type;
    }
}

struct Forwarder {
    kind: Kind,
    producer: Arc<str>,
    track: Option<Arc<dyn TrackRemote>>,
    source_pt: Option<u8>,
    clock_rate: u32,
    source_ssrc: Option<u32>,
    muted: bool,
    outputs: Vec<Output>,
    last_keyframe_request: Option<Instant>,
    keyframe_pending: bool,
    totals: Arc<ForwardTotals>,
    /// Forwarded since the last flush to `totals`.
    unflushed: (u64, u64),
    last_flush: Instant,
}

impl Forwarder {
    fn new(kind: Kind, producer: Arc<str>, totals: Arc<ForwardTotals>) -> Self {
        Self {
            kind,
            producer,
            track: None,
            source_pt: None,
            clock_rate: 90_000,
            source_ssrc: None,
            muted: false,
            outputs: Vec::new(),
            last_keyframe_request: None,
            keyframe_pending: false,
            totals,
            unflushed: (0, 0),
            last_flush: Instant::now(),
        }
    }

    fn flush_totals(&mut self, now: Instant) {
        let (packets, bytes) = std::mem::take(&mut self.unflushed);
        if packets > 0 {
            self.totals.add(packets, bytes);
        }
        self.last_flush = now;
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Control>) {
        loop {
            let keyframe_due = self
                .keyframe_pending
                .then(|| self.last_keyframe_request.map_or_else(Instant::now, |t| t + KEYFRAME_REQUEST_INTERVAL));
            tokio::select! {
                biased;
                control = rx.recv() => match control {
                    Some(Control::Stop) | None => break,
                    Some(control) => self.apply(control).await,
                },
                _ = sleep_until_opt(keyframe_due) => self.send_keyframe_request().await,
                event = next_event(&self.track) => match event {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => self.forward(packet).await,
                    Some(TrackRemoteEvent::OnEnded) | None => self.track = None,
                    Some(_) => {}
                },
            }
        }
        self.flush_totals(Instant::now());
        tracing::debug!(producer = %self.producer, kind = self.kind.as_str(), "forwarder stopped");
    }

    async fn apply(&mut self, control: Control) {
        match control {
            Control::Track(track) => {
                self.track = Some(track);
                self.source_ssrc = None;
            }
            Control::Source { payload_type, clock_rate } => {
                self.source_pt = Some(payload_type);
                self.clock_rate = clock_rate.max(1);
            }
            Control::Subscribe(sub) => {
                match self.outputs.iter_mut().find(|o| o.sub.consumer == sub.consumer) {
                    Some(output) => {
                        output.sub = sub;
                        output.resync = true;
                    }
                    None => self.outputs.push(Output::new(sub)),
                }
                self.request_keyframe();
            }
            Control::Unsubscribe(consumer) => self.outputs.retain(|o| o.sub.consumer != consumer),
            Control::Mute(muted) => {
                if self.muted && !muted {
                    // Numbering continues across the gap, and decoders need a fresh keyframe.
                    self.outputs.iter_mut().for_each(|o| o.resync = true);
                    self.request_keyframe();
                }
                self.muted = muted;
            }
            Control::RequestKeyframe => self.request_keyframe(),
            Control::Stop => {}
        }
        // Sends of the throttle are done by the run loop's timer branch.
    }

    fn request_keyframe(&mut self) {
        if self.kind == Kind::Video {
            self.keyframe_pending = true;
        }
    }

    async fn send_keyframe_request(&mut self) {
        let (Some(track), Some(media_ssrc)) = (&self.track, self.source_ssrc) else {
            // Nothing to ask yet; the first packets of a new source start with a keyframe.
            self.keyframe_pending = false;
            return;
        };
        self.keyframe_pending = false;
        self.last_keyframe_request = Some(Instant::now());
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
        if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(producer = %self.producer, error = %e, "keyframe request not sent");
        }
    }

    async fn forward(&mut self, mut packet: rtp::Packet) {
        if Some(packet.header.payload_type) != self.source_pt {
            return; // RTX, FEC or a codec switch we did not negotiate downstream.
        }
        if self.source_ssrc != Some(packet.header.ssrc) {
            if self.source_ssrc.is_some() {
                self.outputs.iter_mut().for_each(|o| o.resync = true);
            }
            self.source_ssrc = Some(packet.header.ssrc);
        }
        if self.muted || self.outputs.is_empty() {
            return;
        }
        // Extension ids are per connection; consumers negotiated their own, so none is carried over.
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        let now = Instant::now();
        let clock_rate = self.clock_rate;
        let last = self.outputs.len() - 1;
        let size = (12 + 4 * packet.header.csrc.len() + packet.payload.len()) as u64; // RTP header without extensions, and payload
        let mut written = 0;
        for (i, output) in self.outputs.iter_mut().enumerate() {
            if !output.sub.connected.load(Ordering::Acquire) {
                continue;
            }
            // Header clone is a plain copy once extensions are cleared; the payload is shared.
            let mut out = if i == last { std::mem::take(&mut packet) } else { packet.clone() };
            output.rewrite(&mut out.header, now, clock_rate);
            // Fails only before the consumer's answer binds the track, or after it closed.
            if output.sub.track.write_rtp(out).await.is_ok() {
                written += 1;
            }
        }
        self.unflushed.0 += written;
        self.unflushed.1 += written * size;
        if now.duration_since(self.last_flush) >= TOTALS_FLUSH_INTERVAL {
            self.flush_totals(now);
        }
    }
}

async fn next_event(track: &Option<Arc<dyn TrackRemote>>) -> Option<TrackRemoteEvent> {
    match track {
        Some(track) => track.poll().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Relays a consumer's keyframe requests (PLI/FIR arriving on its downstream track) to the
/// producer's forwarder. Ends when the track is unbound or its connection closes.
pub fn spawn_keyframe_relay(track: Arc<TrackLocalStaticRTP>, forwarder: ForwarderHandle) {
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else { continue };
            if packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            }) {
                forwarder.send(Control::RequestKeyframe);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

    fn output() -> Output {
        let track = MediaStreamTrack::new("s".into(), "t".into(), "l".into(), RtpCodecKind::Video, vec![]);
        Output::new(Subscriber {
            consumer: Arc::from("c"),
            connected: Arc::new(AtomicBool::new(true)),
            track: Arc::new(TrackLocalStaticRTP::new(track)),
            ssrc: 1234,
            payload_type: 102,
        })
    }

    fn header(seq: u16, ts: u32) -> rtp::header::Header {
        rtp::header::Header { sequence_number: seq, timestamp: ts, ssrc: 99, payload_type: 96, ..Default::default() }
    }

    #[test]
    fn rewrites_ssrc_and_payload_type() {
        let mut o = output();
        let mut h = header(10, 1000);
        o.rewrite(&mut h, Instant::now(), 90_000);
        assert_eq!((h.ssrc, h.payload_type, h.sequence_number, h.timestamp), (1234, 102, 10, 1000));
    }

    #[test]
    fn numbering_continues_across_a_source_change() {
        let mut o = output();
        let t0 = Instant::now();
        for seq in 65_530..=65_535u16 {
            let mut h = header(seq, 5_000);
            o.rewrite(&mut h, t0, 90_000);
        }
        o.resync = true;
        let mut h = header(7, 42);
        o.rewrite(&mut h, t0 + Duration::from_millis(100), 90_000);
        assert_eq!(h.sequence_number, 0, "65535 + 1 wraps to 0");
        assert_eq!(h.timestamp, 5_000 + 9_000, "100 ms at 90 kHz after the last timestamp");
        let mut h = header(8, 3_042);
        o.rewrite(&mut h, t0 + Duration::from_millis(133), 90_000);
        assert_eq!((h.sequence_number, h.timestamp), (1, 5_000 + 9_000 + 3_000));
    }

    #[test]
    fn reordered_packets_do_not_move_the_high_water_mark_back() {
        let mut o = output();
        let now = Instant::now();
        for seq in [100u16, 102, 101] {
            let mut h = header(seq, seq as u32);
            o.rewrite(&mut h, now, 90_000);
        }
        assert_eq!(o.last_seq, 102);
    }
}
