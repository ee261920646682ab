//! What a consumer's copy of a stream needs rewritten: its own SSRC and payload type, and
//! sequence numbers and timestamps that run on without a jump when the producer's source
//! changes (a re-produce, a new SSRC) or resumes after a mute.

use std::time::Instant;

use rtc::rtp::header::Header;

/// One consumer's numbering of one stream.
#[derive(Debug, Default, Clone)]
pub struct Rewrite {
    seq_offset: u16,
    ts_offset: u32,
    last_seq: u16,
    last_ts: u32,
    last_sent: Option<Instant>,
    resync: bool,
    /// How far back from `last_seq` the current offsets reach: a NACK for an older number
    /// names a packet numbered by earlier offsets.
    numbered: u32,
}

impl Rewrite {
    /// The next packet starts a new source sequence: numbering continues from the last one
    /// sent, and the timestamp advances by the wall-clock time since.
    pub fn resync(&mut self) {
        self.resync = true;
    }

    pub fn apply(&mut self, header: &mut Header, now: Instant, clock_rate: u32, ssrc: u32, payload_type: u8) {
        let resynced = std::mem::take(&mut self.resync);
        if resynced {
            if let Some(last) = self.last_sent {
                // In u128: a gap of years at 90 kHz overflows u64 microsecond-ticks.
                let elapsed = now.saturating_duration_since(last).as_micros();
                let ticks = (elapsed * clock_rate as u128 / 1_000_000).max(1);
                self.seq_offset = self.last_seq.wrapping_add(1).wrapping_sub(header.sequence_number);
                self.ts_offset = self.last_ts.wrapping_add(ticks as u32).wrapping_sub(header.timestamp);
            }
        }
        let seq = header.sequence_number.wrapping_add(self.seq_offset);
        let ts = header.timestamp.wrapping_add(self.ts_offset);
        if resynced || self.last_sent.is_none() {
            self.numbered = 0;
            self.last_seq = seq;
            self.last_ts = ts;
        } else if seq.wrapping_sub(self.last_seq) < 0x8000 {
            // A late (reordered) packet keeps its place but does not move the high-water mark.
            self.numbered = self.numbered.saturating_add(seq.wrapping_sub(self.last_seq) as u32);
            self.last_seq = seq;
            self.last_ts = ts;
        }
        self.last_sent = Some(now);
        header.sequence_number = seq;
        header.timestamp = ts;
        header.ssrc = ssrc;
        header.payload_type = payload_type;
    }

    /// The source sequence number of `seq` as this consumer numbered it, when the current
    /// offsets numbered it.
    pub fn source_seq(&self, seq: u16) -> Option<u16> {
        self.last_sent?;
        let back = self.last_seq.wrapping_sub(seq);
        (back < 0x8000 && u32::from(back) <= self.numbered).then(|| seq.wrapping_sub(self.seq_offset))
    }

    /// Numbers a retransmission of a packet already sent (source numbering in `header`) as
    /// [`Rewrite::apply`] numbered it, leaving the numbering where it is.
    pub fn renumber(&self, header: &mut Header, ssrc: u32, payload_type: u8) {
        header.sequence_number = header.sequence_number.wrapping_add(self.seq_offset);
        header.timestamp = header.timestamp.wrapping_add(self.ts_offset);
        header.ssrc = ssrc;
        header.payload_type = payload_type;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn header(seq: u16, ts: u32) -> Header {
        Header { sequence_number: seq, timestamp: ts, ssrc: 99, payload_type: 96, ..Default::default() }
    }

    #[test]
    fn a_new_source_continues_the_numbering_and_the_clock() {
        let mut r = Rewrite::default();
        let t0 = Instant::now();
        for i in 0..3u16 {
            let mut h = header(65534u16.wrapping_add(i), 1000 + i as u32 * 3000);
            r.apply(&mut h, t0, 90_000, 7, 102);
            assert_eq!((h.sequence_number, h.ssrc, h.payload_type), (65534u16.wrapping_add(i), 7, 102));
        }
        r.resync();
        let mut h = header(500, 777);
        r.apply(&mut h, t0 + Duration::from_millis(100), 90_000, 7, 102);
        assert_eq!(h.sequence_number, 1, "65535 was last: the new source goes on at 0+1");
        assert_eq!(h.timestamp, 7000 + 9000, "100 ms later at 90 kHz");
        let mut h = header(501, 777 + 3000);
        r.apply(&mut h, t0 + Duration::from_millis(133), 90_000, 7, 102);
        assert_eq!((h.sequence_number, h.timestamp), (2, 16000 + 3000));
    }

    #[test]
    fn a_nack_maps_back_only_within_the_current_numbering() {
        let mut r = Rewrite::default();
        let now = Instant::now();
        assert_eq!(r.source_seq(0), None, "nothing sent yet");
        for seq in 100u16..110 {
            r.apply(&mut header(seq, 0), now, 90_000, 1, 96);
        }
        assert_eq!(r.source_seq(105), Some(105));
        assert_eq!(r.source_seq(110), None, "not sent yet");
        assert_eq!(r.source_seq(99), None, "before the first");
        r.resync();
        r.apply(&mut header(5000, 0), now, 90_000, 1, 96);
        r.apply(&mut header(5001, 3000), now, 90_000, 1, 96);
        assert_eq!(r.source_seq(111), Some(5001));
        assert_eq!(r.source_seq(110), Some(5000));
        assert_eq!(r.source_seq(109), None, "numbered by the offsets before the resync");
        let mut h = header(5001, 3000);
        r.renumber(&mut h, 7, 102);
        assert_eq!((h.sequence_number, h.ssrc, h.payload_type), (111, 7, 102));
        r.apply(&mut header(5003, 0), now, 90_000, 1, 96);
        assert_eq!(r.source_seq(112), Some(5002), "a gap still maps");
    }

    #[test]
    fn a_late_packet_keeps_its_place_without_moving_the_mark() {
        let mut r = Rewrite::default();
        let now = Instant::now();
        for seq in [10u16, 12, 11] {
            let mut h = header(seq, seq as u32);
            r.apply(&mut h, now, 90_000, 1, 96);
            assert_eq!(h.sequence_number, seq);
        }
        r.resync();
        let mut h = header(100, 0);
        r.apply(&mut h, now, 90_000, 1, 96);
        assert_eq!(h.sequence_number, 13, "continues after 12, the highest sent");
    }
}
