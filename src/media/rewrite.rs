//! What a consumer's copy of a stream needs rewritten: its own SSRC and payload type, and
//! sequence numbers and timestamps that run on without a jump when the producer's source
//! changes (a re-produce, a new SSRC, another simulcast layer) or resumes after a mute, and
//! without a gap where packets are left out (a temporal layer the consumer does not get).

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
    /// Once packets are left out, the offset moves with each, so a NACK is mapped back through
    /// this ring of (our number, source number) of the last packets sent.
    skipped: Option<Box<[(u16, u16); SKIP_MAP]>>,
    /// The newest source number left out: an older packet arriving late is numbered by an
    /// offset that no longer holds, so it is dropped.
    skip_high: Option<u16>,
}

const SKIP_MAP: usize = 1024;

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
        if let Some(map) = &mut self.skipped {
            map[usize::from(seq) % SKIP_MAP] = (seq, header.sequence_number);
        }
        if resynced || self.last_sent.is_none() {
            self.skip_high = None;
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

    /// Leaves out the source packet `seq`: the packets after it are numbered on without a gap.
    /// Only a packet newer than every one sent moves the numbering.
    pub fn skip(&mut self, seq: u16) {
        if self.last_sent.is_none() || self.resync {
            return;
        }
        let ours = seq.wrapping_add(self.seq_offset);
        if ours.wrapping_sub(self.last_seq).wrapping_sub(1) >= 0x8000 {
            return;
        }
        if self.skipped.is_none() {
            self.skipped = Some(Box::new([(0, 0); SKIP_MAP]));
            // What was sent before is still mapped by the offset: record it.
            let back = self.numbered.min(SKIP_MAP as u32 - 1) as u16;
            let map = self.skipped.as_mut().expect("just made");
            for i in 0..=back {
                let ours = self.last_seq.wrapping_sub(i);
                map[usize::from(ours) % SKIP_MAP] = (ours, ours.wrapping_sub(self.seq_offset));
            }
        }
        self.seq_offset = self.seq_offset.wrapping_sub(1);
        self.skip_high = Some(seq);
    }

    /// Whether the source packet `seq` arrived too late to be numbered: it is older than one
    /// already left out.
    pub fn is_late(&self, seq: u16) -> bool {
        self.skip_high.is_some_and(|high| high.wrapping_sub(seq).wrapping_sub(1) < 0x8000)
    }

    /// The source sequence number of `seq` as this consumer numbered it, when the current
    /// offsets numbered it.
    pub fn source_seq(&self, seq: u16) -> Option<u16> {
        self.last_sent?;
        let back = self.last_seq.wrapping_sub(seq);
        if back >= 0x8000 || u32::from(back) > self.numbered {
            return None;
        }
        match &self.skipped {
            Some(map) => {
                let (ours, source) = map[usize::from(seq) % SKIP_MAP];
                (ours == seq && usize::from(back) < SKIP_MAP).then_some(source)
            }
            None => Some(seq.wrapping_sub(self.seq_offset)),
        }
    }

    /// Numbers a retransmission of a packet already sent (source numbering in `header`) that
    /// this consumer numbered `seq`, leaving the numbering where it is.
    pub fn renumber(&self, header: &mut Header, seq: u16, ssrc: u32, payload_type: u8) {
        header.sequence_number = seq;
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
        r.renumber(&mut h, 111, 7, 102);
        assert_eq!((h.sequence_number, h.ssrc, h.payload_type), (111, 7, 102));
        r.apply(&mut header(5003, 0), now, 90_000, 1, 96);
        assert_eq!(r.source_seq(112), Some(5002), "a gap still maps");
    }

    #[test]
    fn packets_left_out_leave_no_gap_and_nacks_still_map_back() {
        let mut r = Rewrite::default();
        let now = Instant::now();
        let mut sent = Vec::new();
        for seq in 100u16..120 {
            if seq % 4 == 1 {
                r.skip(seq);
                continue;
            }
            let mut h = header(seq, 0);
            r.apply(&mut h, now, 90_000, 1, 96);
            sent.push((h.sequence_number, seq));
        }
        let ours: Vec<u16> = sent.iter().map(|(o, _)| *o).collect();
        assert_eq!(ours, (100u16..115).collect::<Vec<_>>(), "no gaps");
        for (o, s) in &sent {
            assert_eq!(r.source_seq(*o), Some(*s), "our {o}");
        }
        assert_eq!(r.source_seq(115), None, "not sent yet");
        // A late packet from before the last one left out cannot be numbered.
        assert!(r.is_late(116) && !r.is_late(118) && !r.is_late(120));
        // A skip of a packet already behind changes nothing.
        r.skip(105);
        let mut h = header(120, 0);
        r.apply(&mut h, now, 90_000, 1, 96);
        assert_eq!(h.sequence_number, 115);
        // A resync starts over; the ring keeps mapping.
        r.resync();
        let mut h = header(9000, 0);
        r.apply(&mut h, now, 90_000, 1, 96);
        assert_eq!((h.sequence_number, r.source_seq(116), r.source_seq(115)), (116, Some(9000), None));
        assert!(!r.is_late(1), "nothing left out since the resync");
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
