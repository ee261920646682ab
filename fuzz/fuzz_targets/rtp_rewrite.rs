//! A forwarded stream as the bytes describe it (packets in and out of order, source switches,
//! renegotiations, unmutes, any clock rate): every packet rewritten by both of the server's
//! rewrites (`forward::Output`, `media::rewrite::Rewrite`) as the reference model of
//! tests/support/rtp_model.rs says; and any bytes webrtc-rs parses as RTP rewritten into a
//! header that serialises and parses back the same.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};

#[path = "../../tests/support/rtp_model.rs"]
mod rtp_model;

use rtp_model::{Model, Rewriter, CONSUMER_PT, CONSUMER_SSRC};

/// A packet (sequence number, timestamp, marker) sent at a time, or a cut.
enum Event {
    Packet(u16, u32, bool, Duration),
    Cut,
}

fuzz_target!(|data: &[u8]| {
    let mut it = data.iter().copied();
    let mut next = || it.next();
    let (Some(a), Some(b), Some(c), Some(d)) = (next(), next(), next(), next()) else { return };
    let clock_rate = u32::from_be_bytes([a, b, c, d]).max(1);
    // Time bounded so that elapsed microseconds x clock rate stay within u64 (the rewrites'
    // arithmetic; see tests/fuzz_rtp.rs, regression_long_gap_at_a_huge_clock_rate).
    let max_total = Duration::from_micros(u64::MAX / clock_rate as u64 / 2);
    let (mut seq, mut ts) = (u16::from_be_bytes([next().unwrap_or(0xff), next().unwrap_or(0xf0)]), 0u32);
    let mut now = Duration::ZERO;
    let mut events = Vec::new();
    while let Some(op) = next() {
        if op % 16 == 0 {
            // A cut: a new source (new numbering) or the same one resumed.
            let gap = u32::from_be_bytes([next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0)]);
            now = (now + Duration::from_micros(gap as u64)).min(max_total);
            if op & 0x10 != 0 {
                seq = u16::from_be_bytes([next().unwrap_or(0), next().unwrap_or(0)]);
                ts = u32::from_be_bytes([next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0)]);
            }
            events.push(Event::Cut);
        } else {
            now = (now + Duration::from_micros(next().unwrap_or(0) as u64 * 250)).min(max_total);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(next().unwrap_or(0) as u32 * 30);
            // Now and then a packet out of order.
            let jitter = if op & 0xe0 == 0xe0 { ((op >> 1) & 7) as i16 - 4 } else { 0 };
            events.push(Event::Packet(seq.wrapping_add(jitter as u16), ts, op & 1 == 1, now));
        }
    }

    for mut rewriter in Rewriter::both() {
        let mut model = Model::default();
        for event in &events {
            match *event {
                Event::Cut => {
                    rewriter.cut();
                    model.cut();
                }
                Event::Packet(seq, ts, marker, at) => {
                    let mut h = Header { version: 2, sequence_number: seq, timestamp: ts, ssrc: 7, payload_type: 96, marker, ..Default::default() };
                    rewriter.rewrite(&mut h, at, clock_rate);
                    assert_eq!((h.sequence_number, h.timestamp), model.packet(seq, ts, at, clock_rate), "{}", rewriter.name());
                    assert_eq!((h.ssrc, h.payload_type, h.marker), (CONSUMER_SSRC, CONSUMER_PT, marker));
                }
            }
        }
    }

    // The same bytes as an RTP packet.
    if let Ok(parsed) = Packet::unmarshal(&mut Bytes::copy_from_slice(data)) {
        for mut rewriter in Rewriter::both() {
            let mut packet = parsed.clone();
            packet.header.extension = false;
            packet.header.extension_profile = 0;
            packet.header.extensions.clear();
            rewriter.rewrite(&mut packet.header, Duration::ZERO, clock_rate);
            let wire = packet.marshal().expect("a rewritten packet serialises");
            let back = Packet::unmarshal(&mut wire.clone()).expect("and parses back");
            let fields = |h: &Header| (h.version, h.padding, h.marker, h.payload_type, h.sequence_number, h.timestamp, h.ssrc, h.csrc.clone());
            assert_eq!(fields(&back.header), fields(&packet.header), "{}", rewriter.name());
        }
    }
});
