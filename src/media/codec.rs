//! What the forwarder reads of a video payload without decoding it: whether a packet starts a
//! keyframe (a consumer may switch layers only there), and the VP8 picture ids a switch must
//! keep continuous. Every reader takes untrusted bytes and answers `false` / `None` on anything
//! short or malformed.

/// The video codecs whose payload descriptors the forwarder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Anything else: never a switch point, so a consumer of such a stream stays on its first
    /// layer.
    #[default]
    Other,
}

impl VideoCodec {
    /// From the encoding name of `a=rtpmap` (case-insensitive).
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_uppercase().as_str() {
            "VP8" => VideoCodec::Vp8,
            "VP9" => VideoCodec::Vp9,
            "H264" => VideoCodec::H264,
            "AV1" | "AV1X" => VideoCodec::Av1,
            _ => VideoCodec::Other,
        }
    }

    /// Whether `payload` is the first packet of a keyframe, where a decoder can start.
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8_starts_keyframe(payload),
            VideoCodec::Vp9 => vp9_starts_keyframe(payload),
            VideoCodec::H264 => h264_starts_keyframe(payload),
            // RFC AV1 RTP payload, section 4.4: N marks the first packet of a coded video
            // sequence, which begins with a keyframe.
            VideoCodec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
            VideoCodec::Other => false,
        }
    }
}

/// Where the fields of a VP8 payload descriptor (RFC 7741 section 4.2) sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// The temporal layer (TID), when the descriptor carries one.
    pub temporal: Option<u8>,
    /// Offset and width (7 or 15 bits) of the picture id, if present.
    pub picture_id: Option<(usize, bool)>,
    /// Offset of TL0PICIDX, if present.
    pub tl0_pic_idx: Option<usize>,
    /// Offset of the VP8 payload header (after the descriptor).
    pub header: usize,
    /// S bit with partition index 0: the first packet of a frame.
    pub starts_frame: bool,
}

impl Vp8Descriptor {
    pub fn read(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
        let mut at = 1;
        let (mut picture_id, mut tl0_pic_idx, mut temporal) = (None, None, None);
        if first & 0x80 != 0 {
            let ext = *payload.get(at)?;
            at += 1;
            if ext & 0x80 != 0 {
                let long = *payload.get(at)? & 0x80 != 0;
                picture_id = Some((at, long));
                at += if long { 2 } else { 1 };
            }
            if ext & 0x40 != 0 {
                tl0_pic_idx = Some(at);
                at += 1;
            }
            if ext & 0x30 != 0 {
                // TID in the top two bits, with T set.
                if ext & 0x20 != 0 {
                    temporal = Some(*payload.get(at)? >> 6);
                }
                at += 1;
            }
        }
        (at < payload.len()).then_some(Self { temporal, picture_id, tl0_pic_idx, header: at, starts_frame })
    }

    pub fn picture_id(&self, payload: &[u8]) -> Option<u16> {
        let (at, long) = self.picture_id?;
        Some(if long { u16::from_be_bytes([payload[at], payload[at + 1]]) & 0x7fff } else { u16::from(payload[at] & 0x7f) })
    }

    pub fn tl0_pic_idx(&self, payload: &[u8]) -> Option<u8> {
        self.tl0_pic_idx.map(|at| payload[at])
    }

    /// Writes `picture_id` (wrapped to the field's width) and `tl0_pic_idx` where present.
    pub fn write(&self, payload: &mut [u8], picture_id: u16, tl0_pic_idx: u8) {
        if let Some((at, long)) = self.picture_id {
            if long {
                let [high, low] = (picture_id & 0x7fff).to_be_bytes();
                payload[at] = 0x80 | high;
                payload[at + 1] = low;
            } else {
                payload[at] = (picture_id & 0x7f) as u8;
            }
        }
        if let Some(at) = self.tl0_pic_idx {
            payload[at] = tl0_pic_idx;
        }
    }
}

fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    // The payload header's P bit is 0 on a keyframe (RFC 7741 section 4.3).
    Vp8Descriptor::read(payload).is_some_and(|d| d.starts_frame && payload[d.header] & 0x01 == 0)
}

/// VP9 payload descriptor (RFC 9628 section 4.2): B (start of a frame) without P (inter-picture
/// predicted), in the base spatial layer when layer indices are present.
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let (picture_id, inter, layers, begins) = (first & 0x80 != 0, first & 0x40 != 0, first & 0x20 != 0, first & 0x08 != 0);
    if inter || !begins {
        return false;
    }
    if !layers {
        return true;
    }
    let mut at = 1;
    if picture_id {
        let Some(&m) = payload.get(at) else { return false };
        at += if m & 0x80 != 0 { 2 } else { 1 };
    }
    payload.get(at).is_some_and(|b| (b >> 1) & 0x07 == 0)
}

/// H.264 (RFC 6184): a packet carrying an SPS or the start of an IDR slice, alone, in a STAP-A,
/// or as the first fragment of an FU-A.
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    let Some(&nal) = payload.first() else { return false };
    match nal & 0x1f {
        IDR | SPS => true,
        24 => {
            let mut at = 1;
            while at + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[at], payload[at + 1]]));
                if size == 0 {
                    return false;
                }
                if matches!(payload[at + 2] & 0x1f, IDR | SPS) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, IDR | SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_start_and_ids() {
        // X, S, PID 0; I and L; 15-bit picture id 0x1234; TL0PICIDX 9; payload header P=0.
        let key = [0x90, 0xC0, 0x92, 0x34, 9, 0x10, 0, 0];
        assert!(VideoCodec::Vp8.starts_keyframe(&key));
        let d = Vp8Descriptor::read(&key).unwrap();
        assert_eq!((d.picture_id(&key), d.tl0_pic_idx(&key), d.temporal), (Some(0x1234), Some(9), None));
        let layered = [0x90, 0xE0, 0x92, 0x34, 9, 0x80, 0x11];
        assert_eq!(Vp8Descriptor::read(&layered).unwrap().temporal, Some(2), "T set: TID from the T/K byte");
        let mut rewritten = key;
        d.write(&mut rewritten, 0x8001, 200);
        assert_eq!(&rewritten[2..5], &[0x80, 0x01, 200], "wrapped to 15 bits, M kept");
        let inter = [0x90, 0xC0, 0x92, 0x34, 9, 0x11];
        assert!(!VideoCodec::Vp8.starts_keyframe(&inter));
        let middle = [0x80, 0xC0, 0x92, 0x34, 9, 0x10];
        assert!(!VideoCodec::Vp8.starts_keyframe(&middle), "not the start of the frame");
        let short = [0x10, 0x00];
        assert!(VideoCodec::Vp8.starts_keyframe(&short), "no extension: S and P=0");
        let seven = [0x90, 0x80, 0x05, 0x00];
        assert_eq!(Vp8Descriptor::read(&seven).unwrap().picture_id(&seven), Some(5));
        for truncated in [&[][..], &[0x90], &[0x90, 0x80], &[0x90, 0x80, 0x80, 0x01]] {
            assert!(!VideoCodec::Vp8.starts_keyframe(truncated));
        }
    }

    #[test]
    fn vp9_h264_av1_keyframe_starts() {
        assert!(VideoCodec::Vp9.starts_keyframe(&[0x88]), "I, B, no P");
        assert!(!VideoCodec::Vp9.starts_keyframe(&[0xC8]), "inter-predicted");
        assert!(!VideoCodec::Vp9.starts_keyframe(&[0x80]), "not the frame's start");
        assert!(VideoCodec::Vp9.starts_keyframe(&[0xA8, 0x81, 0x02, 0x00, 0x00]), "base spatial layer");
        assert!(!VideoCodec::Vp9.starts_keyframe(&[0xA8, 0x81, 0x02, 0x02, 0x00]), "spatial layer 1");
        assert!(!VideoCodec::Vp9.starts_keyframe(&[0xA8, 0x81]));

        assert!(VideoCodec::H264.starts_keyframe(&[0x65, 0]), "IDR slice");
        assert!(VideoCodec::H264.starts_keyframe(&[0x67, 0]), "SPS");
        assert!(!VideoCodec::H264.starts_keyframe(&[0x41, 0]), "non-IDR slice");
        assert!(VideoCodec::H264.starts_keyframe(&[0x78, 0, 2, 0x67, 0, 0, 2, 0x68, 0]), "STAP-A with SPS");
        assert!(!VideoCodec::H264.starts_keyframe(&[0x78, 0, 2, 0x41, 0]), "STAP-A without");
        assert!(!VideoCodec::H264.starts_keyframe(&[0x78, 0, 0]), "empty NAL in a STAP-A");
        assert!(VideoCodec::H264.starts_keyframe(&[0x7c, 0x85]), "FU-A start of an IDR");
        assert!(!VideoCodec::H264.starts_keyframe(&[0x7c, 0x05]), "FU-A middle");
        assert!(!VideoCodec::H264.starts_keyframe(&[]));

        assert!(VideoCodec::Av1.starts_keyframe(&[0x08]));
        assert!(!VideoCodec::Av1.starts_keyframe(&[0x10]));
        assert!(!VideoCodec::Other.starts_keyframe(&[0x10, 0]));
        assert_eq!(VideoCodec::from_name("vp8"), VideoCodec::Vp8);
    }
}
