//! What the SFU needs to know from an SDP, read without any I/O: which kinds a producer sends,
//! which codec was negotiated for each, and whether the offer is acceptable at all.
//! webrtc-rs does the full parse; this is the narrow view our rules are written against.

use super::error::{SfuError, SfuResult};

/// SDPs above this size are refused before anything parses them.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// The codecs the server forwards, by their SDP encoding name.
pub const SUPPORTED_CODECS: [&str; 5] = ["opus", "VP8", "VP9", "H264", "AV1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Audio, Kind::Video];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// One payload format of a media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    /// Encoding name as written in `a=rtpmap` (`VP8`, `opus`, ...).
    pub name: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
    /// `a=rtcp-fb` values, e.g. `nack`, `nack pli`, `ccm fir`, `transport-cc`.
    pub rtcp_fb: Vec<String>,
}

impl Codec {
    pub fn mime_type(&self, kind: Kind) -> String {
        format!("{}/{}", kind.as_str(), self.name)
    }

    pub fn is_supported(&self) -> bool {
        SUPPORTED_CODECS.iter().any(|c| c.eq_ignore_ascii_case(&self.name))
    }

    /// Whether two codecs are the same format (payload type aside).
    pub fn same_format(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
            && self.fmtp == other.fmtp
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: Option<Kind>,
    pub mid: Option<String>,
    pub port: u16,
    pub direction: Direction,
    /// Payload formats in the order of the `m=` line.
    pub codecs: Vec<Codec>,
}

impl MediaSection {
    /// The primary (first) codec that is not a repair format (rtx, red, ulpfec, ...).
    pub fn primary_codec(&self) -> Option<&Codec> {
        self.codecs.iter().find(|c| !is_repair_format(&c.name))
    }

    fn is_rejected(&self) -> bool {
        self.port == 0
    }
}

fn is_repair_format(name: &str) -> bool {
    ["rtx", "red", "ulpfec", "flexfec-03", "telephone-event", "CN"]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Splits an SDP into its media sections. Fails on text that is not an SDP at all.
pub fn media_sections(sdp: &str) -> SfuResult<Vec<MediaSection>> {
    if !sdp.trim_start().starts_with("v=") {
        return Err(SfuError::InvalidSdp("the SDP does not start with v=".into()));
    }
    let mut sections: Vec<MediaSection> = Vec::new();
    let mut session_direction = Direction::SendRecv;
    for raw in sdp.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            let mut parts = rest.split_whitespace();
            let media = parts.next().unwrap_or_default();
            let port = parts
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| SfuError::InvalidSdp(format!("bad m= line: {line}")))?;
            let _proto = parts.next();
            let kind = match media {
                "audio" => Some(Kind::Audio),
                "video" => Some(Kind::Video),
                _ => None,
            };
            let codecs = parts
                .filter_map(|pt| pt.parse::<u8>().ok())
                .map(|payload_type| Codec {
                    payload_type,
                    name: String::new(),
                    clock_rate: 0,
                    channels: 0,
                    fmtp: String::new(),
                    rtcp_fb: Vec::new(),
                })
                .collect();
            sections.push(MediaSection { kind, mid: None, port, direction: session_direction, codecs });
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else { continue };
        let direction = match attr {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        };
        let Some(section) = sections.last_mut() else {
            if let Some(d) = direction {
                session_direction = d;
            }
            continue;
        };
        if let Some(d) = direction {
            section.direction = d;
        } else if let Some(mid) = attr.strip_prefix("mid:") {
            section.mid = Some(mid.to_owned());
        } else if let Some(map) = attr.strip_prefix("rtpmap:") {
            let (pt, desc) = split_pt(map)?;
            if let Some(codec) = section.codecs.iter_mut().find(|c| c.payload_type == pt) {
                let mut fields = desc.split('/');
                codec.name = fields.next().unwrap_or_default().to_owned();
                codec.clock_rate = fields.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                codec.channels = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        } else if let Some(fmtp) = attr.strip_prefix("fmtp:") {
            let (pt, params) = split_pt(fmtp)?;
            if let Some(codec) = section.codecs.iter_mut().find(|c| c.payload_type == pt) {
                codec.fmtp = params.to_owned();
            }
        } else if let Some(fb) = attr.strip_prefix("rtcp-fb:") {
            let (pt, value) = split_pt(fb)?;
            if let Some(codec) = section.codecs.iter_mut().find(|c| c.payload_type == pt) {
                codec.rtcp_fb.push(value.to_owned());
            }
        }
    }
    // Static payload types without rtpmap keep no name; they are not formats we forward.
    for section in &mut sections {
        section.codecs.retain(|c| !c.name.is_empty());
    }
    Ok(sections)
}

fn split_pt(value: &str) -> SfuResult<(u8, &str)> {
    let (pt, rest) = value.split_once(' ').unwrap_or((value, ""));
    let pt = pt
        .parse::<u8>()
        .map_err(|_| SfuError::InvalidSdp(format!("bad payload type in a={value}")))?;
    Ok((pt, rest.trim()))
}

/// What a producer's offer asks for: which kinds it sends, by media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerOffer {
    pub sends_audio: bool,
    pub sends_video: bool,
}

/// Checks an SDP handed to `produce` or `consume` for size, type and shape.
pub fn check_description(sdp_type: &str, sdp: &str, expected_type: &str) -> SfuResult<Vec<MediaSection>> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SfuError::InvalidSdp(format!(
            "the SDP is {} bytes, over the limit of {MAX_SDP_BYTES}",
            sdp.len()
        )));
    }
    if sdp_type != expected_type {
        return Err(SfuError::InvalidSdp(format!("expected an SDP of type '{expected_type}', got '{sdp_type}'")));
    }
    media_sections(sdp)
}

/// The rules for a producer's offer: at most one sending audio and one sending video section,
/// at least one of them, and a codec we forward in each.
pub fn check_producer_offer(sections: &[MediaSection]) -> SfuResult<ProducerOffer> {
    let mut offer = ProducerOffer { sends_audio: false, sends_video: false };
    for section in sections.iter().filter(|s| !s.is_rejected() && s.direction.sends()) {
        let Some(kind) = section.kind else { continue };
        let seen = match kind {
            Kind::Audio => &mut offer.sends_audio,
            Kind::Video => &mut offer.sends_video,
        };
        if *seen {
            return Err(SfuError::InvalidSdp(format!(
                "the offer sends more than one {} track; a producer sends at most one audio and one video track",
                kind.as_str()
            )));
        }
        *seen = true;
        if !section.codecs.iter().any(Codec::is_supported) {
            let offered: Vec<&str> = section.codecs.iter().map(|c| c.name.as_str()).collect();
            return Err(SfuError::InvalidSdp(format!(
                "the {} section offers no codec the server supports (offered: [{}]; supported: {})",
                kind.as_str(),
                offered.join(", "),
                SUPPORTED_CODECS.join(", ")
            )));
        }
    }
    if !offer.sends_audio && !offer.sends_video {
        return Err(SfuError::InvalidSdp("the offer sends no audio or video track".into()));
    }
    Ok(offer)
}

/// A producer's offer as the server will apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerOfferPlan {
    /// The SDP handed to webrtc-rs: the offer, with whatever the server must change in it.
    pub sdp: String,
    pub sends: ProducerOffer,
    pub sections: Vec<MediaSection>,
}

/// Checks a producer's offer (size, type, shape, the producer rules) and prepares the SDP the
/// server applies.
pub fn read_producer_offer(sdp_type: &str, sdp: &str) -> SfuResult<ProducerOfferPlan> {
    let sections = check_description(sdp_type, sdp, "offer")?;
    let sends = check_producer_offer(&sections)?;
    Ok(ProducerOfferPlan { sdp: sdp.to_owned(), sends, sections })
}

/// The codec negotiated per kind, read from the server's own answer to a producer: the first
/// non-repair format of each receiving section (the one the producer sends with).
pub fn negotiated_codecs(answer_sections: &[MediaSection]) -> [Option<Codec>; 2] {
    let mut out: [Option<Codec>; 2] = [None, None];
    for section in answer_sections.iter().filter(|s| !s.is_rejected()) {
        let (Some(kind), Direction::RecvOnly | Direction::SendRecv) = (section.kind, section.direction) else {
            continue;
        };
        if out[kind.index()].is_none() {
            out[kind.index()] = section.primary_codec().filter(|c| c.is_supported()).cloned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_LIKE_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtcp-fb:111 transport-cc\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\n";

    #[test]
    fn reads_sections_codecs_and_directions() {
        let sections = media_sections(CHROME_LIKE_OFFER).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].kind, Some(Kind::Audio));
        assert_eq!(sections[0].mid.as_deref(), Some("0"));
        assert_eq!(sections[0].direction, Direction::SendOnly);
        let opus = &sections[0].codecs[0];
        assert_eq!((opus.payload_type, opus.name.as_str(), opus.clock_rate, opus.channels), (111, "opus", 48000, 2));
        assert_eq!(opus.fmtp, "minptime=10;useinbandfec=1");
        assert_eq!(opus.rtcp_fb, vec!["transport-cc"]);
        let vp8 = sections[1].primary_codec().unwrap();
        assert_eq!(vp8.name, "VP8");
        assert_eq!(vp8.rtcp_fb, vec!["nack", "nack pli", "ccm fir"]);
        assert_eq!(vp8.mime_type(Kind::Video), "video/VP8");
        assert_eq!(sections[1].codecs[2].fmtp, "profile-id=0");
    }

    #[test]
    fn producer_offer_derives_kinds() {
        let sections = media_sections(CHROME_LIKE_OFFER).unwrap();
        assert_eq!(check_producer_offer(&sections).unwrap(), ProducerOffer { sends_audio: true, sends_video: true });
        let audio_only = CHROME_LIKE_OFFER.replace("a=mid:1\r\na=sendonly", "a=mid:1\r\na=inactive");
        let sections = media_sections(&audio_only).unwrap();
        assert_eq!(check_producer_offer(&sections).unwrap(), ProducerOffer { sends_audio: true, sends_video: false });
    }

    #[test]
    fn rejects_offers_without_a_supported_codec_naming_them() {
        let bad = CHROME_LIKE_OFFER
            .replace("96 97 98", "100")
            .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:100 H265/90000")
            .replace("a=rtpmap:98 VP9/90000", "");
        let err = check_producer_offer(&media_sections(&bad).unwrap()).unwrap_err();
        assert_eq!(err.code(), "INVALID_SDP");
        let msg = err.to_string();
        assert!(msg.contains("H265") && msg.contains("VP8") && msg.contains("AV1"), "{msg}");
    }

    #[test]
    fn rejects_two_tracks_of_a_kind_and_empty_offers() {
        let two_audio = format!(
            "{CHROME_LIKE_OFFER}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"
        );
        assert_eq!(check_producer_offer(&media_sections(&two_audio).unwrap()).unwrap_err().code(), "INVALID_SDP");
        let nothing = CHROME_LIKE_OFFER.replace("a=sendonly", "a=recvonly");
        assert_eq!(check_producer_offer(&media_sections(&nothing).unwrap()).unwrap_err().code(), "INVALID_SDP");
    }

    #[test]
    fn size_type_and_garbage_are_invalid_sdp() {
        let huge = format!("{CHROME_LIKE_OFFER}{}", "a=x-pad:0123456789\r\n".repeat(4000));
        assert!(huge.len() > MAX_SDP_BYTES);
        assert_eq!(check_description("offer", &huge, "offer").unwrap_err().code(), "INVALID_SDP");
        assert_eq!(check_description("answer", CHROME_LIKE_OFFER, "offer").unwrap_err().code(), "INVALID_SDP");
        assert_eq!(check_description("offer", "hello", "offer").unwrap_err().code(), "INVALID_SDP");
        assert_eq!(
            check_description("offer", "v=0\r\nm=video nope UDP 96\r\n", "offer").unwrap_err().code(),
            "INVALID_SDP"
        );
    }

    #[test]
    fn negotiated_codec_is_the_first_non_repair_format_of_the_answer() {
        let answer = CHROME_LIKE_OFFER
            .replace("a=sendonly", "a=recvonly")
            .replace("96 97 98", "97 98 96");
        let codecs = negotiated_codecs(&media_sections(&answer).unwrap());
        assert_eq!(codecs[Kind::Audio.index()].as_ref().unwrap().name, "opus");
        assert_eq!(codecs[Kind::Video.index()].as_ref().unwrap().name, "VP9");
        let inactive = answer.replace("a=mid:1\r\na=recvonly", "a=mid:1\r\na=inactive");
        assert!(negotiated_codecs(&media_sections(&inactive).unwrap())[Kind::Video.index()].is_none());
    }
}
