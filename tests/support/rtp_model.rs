//! A reference model of what one consumer must see of a forwarded stream (`forward::Output`),
//! for the RTP property tests and the fuzz target: the stream is cut into segments (a new
//! source, a renegotiated consumer, an unmute); within a segment every packet keeps its
//! distance to the segment's first packet, in sequence number and timestamp; a segment's first
//! packet follows the newest packet the consumer has had (sequence + 1, timestamp + the time
//! elapsed since the last packet sent, at least one tick), all modulo 2^16 and 2^32.

#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use mediaserver_rs::media::rewrite::Rewrite;
use mediaserver_rs::sfu::forward::{Output, Subscriber};
use rtc::rtp::header::Header;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

pub const CONSUMER_SSRC: u32 = 0x1234_5678;
pub const CONSUMER_PT: u8 = 102;

pub fn output() -> Output {
    let track = MediaStreamTrack::new("s".into(), "t".into(), "l".into(), RtpCodecKind::Video, vec![]);
    Output::new(Subscriber {
        consumer: Arc::from("consumer"),
        connected: Arc::new(AtomicBool::new(true)),
        track: Arc::new(TrackLocalStaticRTP::new(track)),
        ssrc: CONSUMER_SSRC,
        payload_type: CONSUMER_PT,
    })
}

/// The two rewrites the server has, driven alike: the forwarder task's (`forward::Output`, the
/// default engine) and the media loops' (`media::rewrite::Rewrite`).
pub enum Rewriter {
    Task(Output, tokio::time::Instant),
    Loop(Rewrite, std::time::Instant),
}

impl Rewriter {
    pub fn both() -> [Rewriter; 2] {
        [Rewriter::Task(output(), tokio::time::Instant::now()), Rewriter::Loop(Rewrite::default(), std::time::Instant::now())]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Rewriter::Task(..) => "forward::Output",
            Rewriter::Loop(..) => "media::rewrite::Rewrite",
        }
    }

    /// The next packet starts a new source sequence.
    pub fn cut(&mut self) {
        match self {
            Rewriter::Task(o, _) => o.resync = true,
            Rewriter::Loop(r, _) => r.resync(),
        }
    }

    /// Rewrites `header` as sent `at` after this rewriter's origin.
    pub fn rewrite(&mut self, header: &mut Header, at: Duration, clock_rate: u32) {
        match self {
            Rewriter::Task(o, origin) => o.rewrite(header, *origin + at, clock_rate),
            Rewriter::Loop(r, origin) => r.apply(header, *origin + at, clock_rate, CONSUMER_SSRC, CONSUMER_PT),
        }
    }
}

/// Whether sequence number `a` is `b` or after it (RFC 3550 serial arithmetic: within half
/// the space ahead).
pub fn at_or_after(a: u16, b: u16) -> bool {
    (a as i32 - b as i32).rem_euclid(65_536) < 32_768
}

#[derive(Debug, Default)]
pub struct Model {
    /// (sequence, timestamp) out = in + shift, for the current segment.
    shift: (u16, u32),
    /// The newest packet the consumer has had, as it had it.
    newest: Option<(u16, u32)>,
    /// When the last packet was sent (any packet, old or new).
    last_sent: Option<Duration>,
    /// The next packet starts a segment.
    new_segment: bool,
}

impl Model {
    /// A new source, a renegotiation or an unmute: the next packet starts a segment.
    pub fn cut(&mut self) {
        self.new_segment = true;
    }

    /// What the consumer gets for a packet with `seq` and `ts` sent at `now` (time since an
    /// origin), at `clock_rate` ticks per second.
    pub fn packet(&mut self, seq: u16, ts: u32, now: Duration, clock_rate: u32) -> (u16, u32) {
        if std::mem::take(&mut self.new_segment) {
            if let (Some((newest_seq, newest_ts)), Some(last)) = (self.newest, self.last_sent) {
                let micros = now.saturating_sub(last).as_micros();
                let ticks = (micros * clock_rate as u128 / 1_000_000).max(1);
                let ticks = (ticks % (1u128 << 32)) as u32;
                self.shift = (newest_seq.wrapping_add(1).wrapping_sub(seq), newest_ts.wrapping_add(ticks).wrapping_sub(ts));
            }
        }
        let out = (seq.wrapping_add(self.shift.0), ts.wrapping_add(self.shift.1));
        match self.newest {
            Some((newest, _)) if !at_or_after(out.0, newest) => {}
            _ => self.newest = Some(out),
        }
        self.last_sent = Some(now);
        out
    }
}
