//! A forwarded stream as the bytes describe it (packets in and out of order, source switches,
//! renegotiations, unmutes, any clock rate): every packet rewritten by `forward::Output` as
//! the reference model of tests/support/rtp_model.rs says; and any bytes webrtc-rs parses as
//! RTP rewritten into a header that serialises and parses back the same.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::time::Instant;

#[path = "../../tests/support/rtp_model.rs"]
mod rtp_model;

use rtp_model::{output, Model, CONSUMER_PT, CONSUMER_SSRC};

fuzz_target!(|data: &[u8]| {
    let mut it = data.iter().copied();
    let mut next = || it.next();
    let (Some(a), Some(b), Some(c), Some(d)) = (next(), next(), next(), next()) else { return };
    let clock_rate = u32::from_be_bytes([a, b, c, d]).max(1);
    // Gaps bounded so that elapsed microseconds x clock rate stay within u64 (the rewrite's
    // arithmetic; see tests/fuzz_rtp.rs, regression_long_gap_at_a_huge_clock_rate).
    let max_total = u64::MAX / clock_rate as u64 / 2;
    let origin = Instant::now();
    let mut out = output();
    let mut model = Model::default();
    let (mut seq, mut ts) = (u16::from_be_bytes([next().unwrap_or(0xff), next().unwrap_or(0xf0)]), 0u32);
    let mut now = Duration::ZERO;
    while let Some(op) = next() {
        match op % 16 {
            0 => {
                // A cut: a new source (new numbering) or the same one resumed.
                let gap = u32::from_be_bytes([next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0)]);
                now = (now + Duration::from_micros(gap as u64)).min(Duration::from_micros(max_total));
                if op & 0x10 != 0 {
                    seq = u16::from_be_bytes([next().unwrap_or(0), next().unwrap_or(0)]);
                    ts = u32::from_be_bytes([next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0), next().unwrap_or(0)]);
                }
                out.resync = true;
                model.cut();
            }
            _ => {
                let dt = next().unwrap_or(0) as u64 * 250;
                now = (now + Duration::from_micros(dt)).min(Duration::from_micros(max_total));
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(next().unwrap_or(0) as u32 * 30);
                // Now and then a packet out of order.
                let jitter = if op & 0xe0 == 0xe0 { (op >> 1 & 7) as i16 - 4 } else { 0 };
                let sent = seq.wrapping_add(jitter as u16);
                let mut h = Header { version: 2, sequence_number: sent, timestamp: ts, ssrc: 7, payload_type: 96, marker: op & 1 == 1, ..Default::default() };
                out.rewrite(&mut h, origin + now, clock_rate);
                assert_eq!((h.sequence_number, h.timestamp), model.packet(sent, ts, now, clock_rate));
                assert_eq!((h.ssrc, h.payload_type, h.marker), (CONSUMER_SSRC, CONSUMER_PT, op & 1 == 1));
            }
        }
    }

    // The same bytes as an RTP packet.
    if let Ok(mut packet) = Packet::unmarshal(&mut Bytes::copy_from_slice(data)) {
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        let mut out = output();
        out.rewrite(&mut packet.header, origin, clock_rate);
        let wire = packet.marshal().expect("a rewritten packet serialises");
        let back = Packet::unmarshal(&mut wire.clone()).expect("and parses back");
        let fields = |h: &Header| (h.version, h.padding, h.marker, h.payload_type, h.sequence_number, h.timestamp, h.ssrc, h.csrc.clone());
        assert_eq!(fields(&back.header), fields(&packet.header));
    }
});
