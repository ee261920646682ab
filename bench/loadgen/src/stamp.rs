//! What every generated RTP payload carries, and a VP8 payload descriptor that SFUs parse.

/// Nanoseconds on CLOCK_REALTIME: one clock for every thread and process of the machine, and
/// the clock of the kernel's receive timestamps (SO_TIMESTAMPNS).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const MAGIC: [u8; 4] = *b"BNCH";
/// Bytes at the end of each payload: magic, stream id, sequence, send time.
pub const STAMP_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    pub stream: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp into the last `STAMP_LEN` bytes (SFUs may rewrite a VP8 descriptor at
    /// the start of the payload, never its end).
    pub fn write(&self, payload: &mut [u8]) {
        let n = payload.len();
        let s = &mut payload[n - STAMP_LEN..];
        s[0..4].copy_from_slice(&MAGIC);
        s[4..8].copy_from_slice(&self.stream.to_be_bytes());
        s[8..12].copy_from_slice(&self.seq.to_be_bytes());
        s[12..20].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    pub fn read(payload: &[u8]) -> Option<Self> {
        let n = payload.len();
        if n < STAMP_LEN {
            return None;
        }
        let s = &payload[n - STAMP_LEN..];
        if s[0..4] != MAGIC {
            return None;
        }
        Some(Self {
            stream: u32::from_be_bytes(s[4..8].try_into().ok()?),
            seq: u32::from_be_bytes(s[8..12].try_into().ok()?),
            sent_ns: u64::from_be_bytes(s[12..20].try_into().ok()?),
        })
    }
}

/// Writes a VP8 payload descriptor as Chrome sends it (RFC 7741: X, I with a 15-bit picture id,
/// L, T) and, on a frame's first packet, the VP8 payload header (with the keyframe start code
/// and a 640x480 size for keyframes). Returns the bytes written.
pub fn vp8_header(p: &mut [u8], first: bool, keyframe: bool, picture_id: u16, tl0: u8) -> usize {
    p[0] = 0x80 | if first { 0x10 } else { 0 };
    p[1] = 0xe0;
    p[2] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
    p[3] = picture_id as u8;
    p[4] = tl0;
    p[5] = 0x20; // TID 0, layer sync
    if !first {
        return 6;
    }
    // Frame tag: P (0 = keyframe), version 0, show_frame, first partition size 100.
    let size: u32 = 100;
    p[6] = (if keyframe { 0 } else { 1 }) | 0x10 | (((size & 0x7) as u8) << 5);
    p[7] = (size >> 3) as u8;
    p[8] = (size >> 11) as u8;
    if !keyframe {
        return 9;
    }
    p[9..12].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    p[12..14].copy_from_slice(&640u16.to_le_bytes());
    p[14..16].copy_from_slice(&480u16.to_le_bytes());
    16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        let mut p = vec![7u8; 100];
        let s = Stamp { stream: 3, seq: 99, sent_ns: 123_456_789_012 };
        s.write(&mut p);
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(Stamp::read(&[0u8; 10]), None);
    }
}
