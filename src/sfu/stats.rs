//! Statistics: per connection (what `getStats` returns), read from webrtc-rs's W3C stats
//! report and our own byte counters, and the server-wide forwarding totals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde::Serialize;
use webrtc::peer_connection::{RTCStatsReport, RTCStatsReportEntry};

use super::events::{ConnectionLabel, ConnectionState, Direction};
use super::sdp::{Codec, Kind};

/// Packets and bytes the forwarders wrote to consumers, and the RTCP feedback that went
/// through the server, over the server's life.
#[derive(Debug, Default)]
pub struct ForwardTotals {
    packets: AtomicU64,
    bytes: AtomicU64,
    feedback: [AtomicU64; Feedback::ALL.len()],
}

/// RTCP feedback the server counts, on every connection of either engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A NACK from a consumer (on a downstream): packets it lost.
    NackReceived,
    /// A PLI from a consumer: it wants a keyframe.
    PliReceived,
    /// A FIR from a consumer: it wants a keyframe.
    FirReceived,
    /// A NACK to a producer (on an upstream): packets the server lost.
    NackSent,
    /// A PLI to a producer: the server relays its consumers' keyframe requests (coalesced) and
    /// asks when a consumer joins or a producer unmutes.
    PliSent,
}

impl Feedback {
    pub const ALL: [Feedback; 5] =
        [Feedback::NackReceived, Feedback::PliReceived, Feedback::FirReceived, Feedback::NackSent, Feedback::PliSent];
}

impl ForwardTotals {
    pub fn add(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn read(&self) -> (u64, u64) {
        (self.packets.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// One RTCP feedback packet more of that kind.
    pub fn feedback(&self, kind: Feedback) {
        self.feedback[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn feedback_count(&self, kind: Feedback) -> u64 {
        self.feedback[kind as usize].load(Ordering::Relaxed)
    }
}

/// Connections by direction and state: how many are in each state now (until they close), and
/// how many ever entered each state (`new` counts every connection made). Kept by each
/// connection's state reporter, so it follows the same states the events report.
#[derive(Debug, Default)]
pub struct ConnectionStates {
    now: [[AtomicU64; ConnectionState::ALL.len()]; Direction::ALL.len()],
    entered: [[AtomicU64; ConnectionState::ALL.len()]; Direction::ALL.len()],
}

/// A reading of [`ConnectionStates`], indexed by `Direction::index` and `ConnectionState::index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStateCounts {
    pub now: [[u64; ConnectionState::ALL.len()]; Direction::ALL.len()],
    pub entered: [[u64; ConnectionState::ALL.len()]; Direction::ALL.len()],
}

impl ConnectionStates {
    /// A connection was made: it is `new`.
    pub fn opened(&self, direction: Direction) {
        let d = direction.index();
        self.now[d][ConnectionState::New.index()].fetch_add(1, Ordering::Relaxed);
        self.entered[d][ConnectionState::New.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection went from `from` to `to`; a closed one is no longer counted in any state.
    pub fn moved(&self, direction: Direction, from: ConnectionState, to: ConnectionState) {
        let d = direction.index();
        self.entered[d][to.index()].fetch_add(1, Ordering::Relaxed);
        if from == to {
            return;
        }
        // Into the new state first: a reading in between counts the connection twice, never
        // makes a count go below zero.
        if to != ConnectionState::Closed {
            self.now[d][to.index()].fetch_add(1, Ordering::Relaxed);
        }
        if from != ConnectionState::Closed {
            self.now[d][from.index()].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A connection went away without being reported closed (its reporter was dropped).
    pub fn dropped(&self, direction: Direction, last: ConnectionState) {
        if last != ConnectionState::Closed {
            self.now[direction.index()][last.index()].fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> ConnectionStateCounts {
        let mut counts = ConnectionStateCounts::default();
        for d in 0..Direction::ALL.len() {
            for s in 0..ConnectionState::ALL.len() {
                counts.now[d][s] = self.now[d][s].load(Ordering::Relaxed);
                counts.entered[d][s] = self.entered[d][s].load(Ordering::Relaxed);
            }
        }
        counts
    }
}

/// Bitrates are averaged between two reads of a connection's stats that are at least this far
/// apart (the first read averages over the connection's life).
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

/// The byte counts of a connection at some instant, to compute bitrates from.
#[derive(Debug, Clone, Copy)]
struct RateSample {
    at: Instant,
    sent: u64,
    received: u64,
}

#[derive(Debug)]
pub struct RateMeter(Mutex<(RateSample, Option<(f64, f64)>)>);

impl RateMeter {
    pub fn new(now: Instant) -> Self {
        Self(Mutex::new((RateSample { at: now, sent: 0, received: 0 }, None)))
    }

    /// Bits per second sent and received since the last sample at least `MIN_RATE_WINDOW` old.
    fn rates(&self, now: Instant, sent: u64, received: u64) -> (f64, f64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (last, previous_rates) = *state;
        let elapsed = now.saturating_duration_since(last.at);
        if elapsed < MIN_RATE_WINDOW {
            if let Some(rates) = previous_rates {
                return rates;
            }
        }
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let rates = (
            sent.saturating_sub(last.sent) as f64 * 8.0 / seconds,
            received.saturating_sub(last.received) as f64 * 8.0 / seconds,
        );
        if elapsed >= MIN_RATE_WINDOW {
            *state = (RateSample { at: now, sent, received }, Some(rates));
        }
        rates
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateStats {
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub candidate_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidatePairStats {
    pub local: CandidateStats,
    /// `null` when webrtc-rs does not know it: 0.21.1 registers in its stats only remote
    /// candidates added one by one (trickle ICE), not those of a complete SDP.
    pub remote: Option<CandidateStats>,
    /// Seconds; `null` before the first measurement.
    pub round_trip_time: Option<f64>,
    /// The congestion controller's estimate, bits per second, when there is one.
    pub available_outgoing_bitrate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportStats {
    pub packets_sent: u64,
    /// Packets the server had for this connection and dropped at its own bounded send queue,
    /// because the peer did not take them fast enough (ICE-TCP); no other connection waits.
    pub packets_dropped: u64,
    pub packets_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Bits per second, averaged since the previous read of this connection's stats that is at
    /// least a second old (on the first read: since the connection was made).
    pub bitrate_sent: f64,
    pub bitrate_received: f64,
    pub selected_candidate_pair: Option<CandidatePairStats>,
}

/// A stream the server receives from a producer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundTrackStats {
    pub kind: &'static str,
    pub codec: Option<String>,
    pub ssrc: u32,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_lost: i64,
    /// Seconds.
    pub jitter: f64,
    /// Requests the server sent to the producer.
    pub nack_count: u32,
    pub pli_count: u32,
    pub fir_count: u32,
}

/// A stream the server sends to a consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrackStats {
    pub kind: &'static str,
    pub codec: Option<String>,
    pub ssrc: u32,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub retransmitted_packets_sent: u64,
    /// Requests the consumer sent to the server.
    pub nack_count: u32,
    pub pli_count: u32,
    pub fir_count: u32,
    /// As the consumer's receiver reports tell them; `null` before the first report.
    pub packets_lost: Option<i64>,
    pub fraction_lost: Option<f64>,
    pub jitter: Option<f64>,
    pub round_trip_time: Option<f64>,
    /// The simulcast layers of a video track on the media loops; `null` otherwise.
    pub layers: Option<LayerStats>,
}

/// Which of its producer's simulcast layers a consumer gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerStats {
    /// The spatial layer it receives now (`null`: none yet).
    pub current: Option<u8>,
    /// The one it moves to at that layer's next keyframe.
    pub target: Option<u8>,
    /// Its cap from `setPreferredLayers` (`null`: none).
    pub preferred: Option<u8>,
    /// The layers arriving from the producer now, lowest first (`[0]` without simulcast).
    pub available: Vec<u8>,
    /// The highest temporal layer it gets (`null`: every one).
    pub temporal: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TrackStats {
    Inbound(InboundTrackStats),
    Outbound(OutboundTrackStats),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStats {
    pub direction: Direction,
    /// The user at the other end: the producer of an upstream, the consumer of a downstream.
    pub user_id: String,
    pub producer_id: String,
    pub state: ConnectionState,
    pub transport: TransportStats,
    pub tracks: Vec<TrackStats>,
}

fn kind_name(kind: RtpCodecKind) -> Option<&'static str> {
    match kind {
        RtpCodecKind::Audio => Some(Kind::Audio.as_str()),
        RtpCodecKind::Video => Some(Kind::Video.as_str()),
        _ => None,
    }
}

fn positive(value: f64) -> Option<f64> {
    (value.is_finite() && value > 0.0).then_some(value)
}

/// Reads one connection's statistics out of its W3C report.
pub fn connection_stats(
    label: &ConnectionLabel,
    state: ConnectionState,
    report: &RTCStatsReport,
    codecs: &[Option<Codec>; 2],
    rates: &RateMeter,
    shared_port: Option<u16>,
    now: Instant,
) -> ConnectionStats {
    let mut codec_names: HashMap<&str, &str> = HashMap::new();
    let mut candidates: HashMap<&str, CandidateStats> = HashMap::new();
    let mut remote_inbound = HashMap::new();
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::Codec(c) => {
                codec_names.insert(c.stats.id.as_str(), c.mime_type.as_str());
            }
            RTCStatsReportEntry::LocalCandidate(c) | RTCStatsReportEntry::RemoteCandidate(c) => {
                let local = matches!(entry, RTCStatsReportEntry::LocalCandidate(_));
                let udp = c.protocol.eq_ignore_ascii_case("udp");
                // In single-port mode the driver knows its placeholder socket's port.
                let port = match shared_port {
                    Some(port) if local && udp => port,
                    _ => c.port,
                };
                candidates.insert(
                    c.stats.id.as_str(),
                    CandidateStats {
                        address: c.address.clone().unwrap_or_default(),
                        port,
                        protocol: c.protocol.clone(),
                        candidate_type: c.candidate_type.to_string(),
                    },
                );
            }
            RTCStatsReportEntry::RemoteInboundRtp(r) => {
                remote_inbound.insert(r.received_rtp_stream_stats.rtp_stream_stats.ssrc, r);
            }
            _ => {}
        }
    }
    // The codec a track carries: what webrtc-rs reports, or what we negotiated.
    let codec_of = |codec_id: &str, kind: RtpCodecKind| {
        codec_names.get(codec_id).map(|m| m.to_string()).or_else(|| {
            let kind = match kind {
                RtpCodecKind::Audio => Kind::Audio,
                _ => Kind::Video,
            };
            codecs[kind.index()].as_ref().map(|c| c.mime_type(kind))
        })
    };

    let mut transport = TransportStats {
        packets_sent: 0,
        packets_dropped: 0,
        packets_received: 0,
        bytes_sent: 0,
        bytes_received: 0,
        bitrate_sent: 0.0,
        bitrate_received: 0.0,
        selected_candidate_pair: None,
    };
    let mut selected_pair_id = None;
    let mut tracks = Vec::new();
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::Transport(t) => {
                transport.packets_sent += t.packets_sent;
                transport.packets_received += t.packets_received;
                transport.bytes_sent += t.bytes_sent;
                transport.bytes_received += t.bytes_received;
                if !t.selected_candidate_pair_id.is_empty() {
                    selected_pair_id = Some(t.selected_candidate_pair_id.as_str());
                }
            }
            RTCStatsReportEntry::InboundRtp(s) => {
                let stream = &s.received_rtp_stream_stats;
                let Some(kind) = kind_name(stream.rtp_stream_stats.kind) else { continue };
                tracks.push(TrackStats::Inbound(InboundTrackStats {
                    kind,
                    codec: codec_of(&stream.rtp_stream_stats.codec_id, stream.rtp_stream_stats.kind),
                    ssrc: stream.rtp_stream_stats.ssrc,
                    packets_received: stream.packets_received,
                    bytes_received: s.bytes_received,
                    packets_lost: stream.packets_lost,
                    jitter: stream.jitter,
                    nack_count: s.nack_count,
                    pli_count: s.pli_count,
                    fir_count: s.fir_count,
                }));
            }
            RTCStatsReportEntry::OutboundRtp(s) => {
                let stream = &s.sent_rtp_stream_stats;
                let Some(kind) = kind_name(stream.rtp_stream_stats.kind) else { continue };
                let remote = remote_inbound.get(&stream.rtp_stream_stats.ssrc);
                tracks.push(TrackStats::Outbound(OutboundTrackStats {
                    kind,
                    codec: codec_of(&stream.rtp_stream_stats.codec_id, stream.rtp_stream_stats.kind),
                    ssrc: stream.rtp_stream_stats.ssrc,
                    packets_sent: stream.packets_sent,
                    bytes_sent: stream.bytes_sent,
                    retransmitted_packets_sent: s.retransmitted_packets_sent,
                    nack_count: s.nack_count,
                    pli_count: s.pli_count,
                    fir_count: s.fir_count,
                    packets_lost: remote.map(|r| r.received_rtp_stream_stats.packets_lost),
                    fraction_lost: remote.map(|r| r.fraction_lost),
                    jitter: remote.map(|r| r.received_rtp_stream_stats.jitter),
                    round_trip_time: remote.and_then(|r| positive(r.round_trip_time)),
                    layers: None,
                }));
            }
            _ => {}
        }
    }
    tracks.sort_by_key(|t| match t {
        TrackStats::Inbound(t) => t.kind,
        TrackStats::Outbound(t) => t.kind,
    });
    let pair = report.iter().find_map(|entry| match entry {
        RTCStatsReportEntry::IceCandidatePair(p) if Some(p.stats.id.as_str()) == selected_pair_id => Some(p),
        _ => None,
    });
    let pair = pair.or_else(|| {
        report.iter().find_map(|entry| match entry {
            RTCStatsReportEntry::IceCandidatePair(p) if p.nominated => Some(p),
            _ => None,
        })
    });
    if let Some(pair) = pair {
        // A pair names its candidates by their ICE ids; their stats entries add a prefix.
        let find = |prefix: &str, id: &str| {
            candidates.get(id).or_else(|| candidates.get(format!("{prefix}{id}").as_str())).cloned()
        };
        if let Some(local) = find("RTCLocalIceCandidate_", &pair.local_candidate_id) {
            transport.selected_candidate_pair = Some(CandidatePairStats {
                local,
                remote: find("RTCRemoteIceCandidate_", &pair.remote_candidate_id),
                round_trip_time: positive(pair.current_round_trip_time),
                available_outgoing_bitrate: positive(pair.available_outgoing_bitrate),
            });
        }
    }
    let (sent, received) = rates.rates(now, transport.bytes_sent, transport.bytes_received);
    transport.bitrate_sent = sent;
    transport.bitrate_received = received;
    ConnectionStats {
        direction: label.direction,
        user_id: label.user_id.to_string(),
        producer_id: label.producer_id.to_string(),
        state,
        transport,
        tracks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_average_over_at_least_a_second() {
        let t0 = Instant::now();
        let meter = RateMeter::new(t0);
        // First read, 2 s in: averaged over the connection's life.
        assert_eq!(meter.rates(t0 + Duration::from_secs(2), 250_000, 500_000), (1_000_000.0, 2_000_000.0));
        // Too soon for a new window: the last figures again.
        assert_eq!(meter.rates(t0 + Duration::from_millis(2500), 999_999, 999_999), (1_000_000.0, 2_000_000.0));
        // A second later: the window since the last sample.
        assert_eq!(meter.rates(t0 + Duration::from_secs(3), 375_000, 500_000), (1_000_000.0, 0.0));
    }

    #[test]
    fn a_first_read_soon_after_creation_still_gives_a_rate() {
        let t0 = Instant::now();
        let meter = RateMeter::new(t0);
        assert_eq!(meter.rates(t0 + Duration::from_millis(500), 1000, 0), (16_000.0, 0.0));
    }

    #[test]
    fn totals_add_up() {
        let totals = ForwardTotals::default();
        totals.add(3, 3000);
        totals.add(1, 10);
        assert_eq!(totals.read(), (4, 3010));
        totals.feedback(Feedback::PliSent);
        totals.feedback(Feedback::PliSent);
        totals.feedback(Feedback::NackReceived);
        let counts: Vec<u64> = Feedback::ALL.iter().map(|f| totals.feedback_count(*f)).collect();
        assert_eq!(counts, [1, 0, 0, 0, 2]);
    }

    #[test]
    fn connection_states_follow_each_connection_until_it_closes() {
        use ConnectionState::*;
        let states = ConnectionStates::default();
        let (up, down) = (Direction::Upstream.index(), Direction::Downstream.index());
        states.opened(Direction::Upstream);
        states.opened(Direction::Downstream);
        states.opened(Direction::Downstream);
        states.moved(Direction::Upstream, New, Connecting);
        states.moved(Direction::Upstream, Connecting, Connected);
        states.moved(Direction::Downstream, New, Connected);
        let counts = states.read();
        assert_eq!(counts.now[up], [0, 0, 1, 0, 0, 0]);
        assert_eq!(counts.now[down], [1, 0, 1, 0, 0, 0]);
        assert_eq!(counts.entered[up], [1, 1, 1, 0, 0, 0]);

        states.moved(Direction::Downstream, Connected, Failed);
        states.moved(Direction::Downstream, Failed, Closed);
        // A reporter dropped without a close: its last state is let go.
        states.dropped(Direction::Downstream, New);
        // And one dropped after its close changes nothing.
        states.dropped(Direction::Downstream, Closed);
        let counts = states.read();
        assert_eq!(counts.now[down], [0; 6], "nothing open downstream");
        assert_eq!(counts.entered[down], [2, 0, 1, 0, 1, 1]);
        assert_eq!(counts.now[up], [0, 0, 1, 0, 0, 0]);
    }
}
