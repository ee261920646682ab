//! The recent packets of one producer stream, kept once and shared by every consumer's NACK
//! answers. A consumer's retransmission is the stored packet renumbered as that consumer
//! numbered it, so no consumer keeps packets of its own.

use rtc::rtp::Packet;

/// A ring of packets indexed by source sequence number.
pub struct PacketHistory {
    slots: Vec<Option<Packet>>,
    mask: u16,
    highest: Option<u16>,
}

impl PacketHistory {
    /// `size` is rounded up to a power of two (at most 32768).
    pub fn new(size: u16) -> Self {
        let size = size.clamp(1, 1 << 15).next_power_of_two();
        Self { slots: (0..size).map(|_| None).collect(), mask: size - 1, highest: None }
    }

    /// Keeps `packet` (as received: source numbering). Slots skipped by a jump forward are
    /// emptied, so a lookup never finds a packet of an earlier lap.
    pub fn insert(&mut self, packet: &Packet) {
        let seq = packet.header.sequence_number;
        match self.highest {
            Some(high) => {
                let ahead = seq.wrapping_sub(high);
                if ahead == 0 {
                    return;
                }
                if ahead < 0x8000 {
                    let cleared = ahead.min(self.mask + 1);
                    for i in 1..cleared {
                        self.slots[(high.wrapping_add(i) & self.mask) as usize] = None;
                    }
                    self.highest = Some(seq);
                } else if high.wrapping_sub(seq) > self.mask {
                    // Older than the ring holds.
                    return;
                }
            }
            None => self.highest = Some(seq),
        }
        self.slots[(seq & self.mask) as usize] = Some(packet.clone());
    }

    /// The packet with source sequence number `seq`, if still held.
    pub fn get(&self, seq: u16) -> Option<&Packet> {
        let high = self.highest?;
        if high.wrapping_sub(seq) > self.mask {
            return None;
        }
        self.slots[(seq & self.mask) as usize].as_ref().filter(|p| p.header.sequence_number == seq)
    }

    /// A new source: its numbering has nothing to do with what is held.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.highest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::header::Header;

    fn packet(seq: u16) -> Packet {
        Packet { header: Header { sequence_number: seq, ..Default::default() }, payload: vec![seq as u8].into() }
    }

    #[test]
    fn holds_the_last_size_packets_across_the_wrap() {
        let mut h = PacketHistory::new(8);
        for i in 0..20u16 {
            h.insert(&packet(65530u16.wrapping_add(i)));
        }
        let last = 65530u16.wrapping_add(19);
        for back in 0..8u16 {
            assert_eq!(h.get(last.wrapping_sub(back)).map(|p| p.header.sequence_number), Some(last.wrapping_sub(back)));
        }
        assert!(h.get(last.wrapping_sub(8)).is_none(), "one lap back is gone");
        assert!(h.get(last.wrapping_add(1)).is_none(), "not yet received");
    }

    #[test]
    fn a_jump_forward_empties_the_skipped_slots_and_a_late_packet_takes_its_place() {
        let mut h = PacketHistory::new(8);
        h.insert(&packet(1));
        h.insert(&packet(2));
        h.insert(&packet(6));
        assert!(h.get(2).is_some());
        assert!((3..6).all(|s| h.get(s).is_none()));
        h.insert(&packet(4));
        assert_eq!(h.get(4).map(|p| p.payload[0]), Some(4));
        h.insert(&packet(100));
        assert!(h.get(6).is_none() && h.get(4).is_none(), "a jump past the ring empties all of it");
        h.insert(&packet(50));
        assert!(h.get(50).is_none(), "older than the ring holds");
        h.clear();
        assert!(h.get(100).is_none());
    }
}
