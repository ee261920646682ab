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
    /// `a=bundle-only` (RFC 8843): with port 0 in an offer, a live section that shares the
    /// transport of its BUNDLE group, not a rejected one.
    pub bundle_only: bool,
}

impl MediaSection {
    /// The primary (first) codec that is not a repair format (rtx, red, ulpfec, ...).
    pub fn primary_codec(&self) -> Option<&Codec> {
        self.codecs.iter().find(|c| !is_repair_format(&c.name))
    }

    /// Port 0 without `a=bundle-only`: the section is rejected (or stopped) and carries nothing
    /// (RFC 3264 section 6, RFC 8829 section 5.8). A bundle-only section outside every BUNDLE
    /// group is rejected too: `read_producer_offer` clears its flag.
    pub fn is_rejected(&self) -> bool {
        self.port == 0 && !self.bundle_only
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
            // RFC 8866 section 5.14: `m=<media> <port> <proto> <fmt> ...`, single spaces, no
            // whitespace before the media type (webrtc-rs and the plan's rewriting read it so).
            if rest.starts_with(char::is_whitespace) {
                return Err(SfuError::InvalidSdp(format!("bad m= line: {line}")));
            }
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
            sections.push(MediaSection {
                kind,
                mid: None,
                port,
                direction: session_direction,
                codecs,
                bundle_only: false,
            });
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
        } else if attr == "bundle-only" {
            section.bundle_only = true;
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
    /// A sending section declares no SSRC and no RID. Alone in a first offer it is bound by
    /// being the only section; webrtc-rs cannot bind it in a renegotiation (its answer then
    /// fails with "no trackStreams found for SSRC").
    pub anonymous_sender: bool,
    /// The simulcast layers (RIDs) of the video the producer sends, in the offer's
    /// `a=simulcast` order, which the server takes as lowest to highest; empty without
    /// simulcast.
    pub video_layers: Vec<String>,
}

/// Whether the server takes every simulcast layer a producer offers, or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simulcast {
    /// The first, most preferred layer alone (a forwarder without layer selection).
    OneLayer,
    /// Every layer; each consumer gets the one chosen for it.
    Layers,
}

impl Simulcast {
    fn accepts_simulcast(self) -> bool {
        self == Simulcast::Layers
    }
}

/// The identity (`a=msid`) the server gives the media sections of a producer's offer: one
/// stream, one track per section. webrtc-rs names a connection's incoming tracks by it, and an
/// offer without it (werift writes none) leaves every track with the same empty id, so that
/// only the first one is ever delivered. The tokens are the server's own, never a user's id.
const MSID_STREAM: &str = "mediaserver";

/// Checks a producer's offer as JSEP (RFC 8829) and RFC 3264 read it, no stricter and no
/// looser, refuses what the server could not forward, and prepares the SDP the server applies
/// (`plan.sdp`), rewritten where webrtc-rs would otherwise misread it:
///
/// - a port-0 section with `a=bundle-only` inside the BUNDLE group is live (max-bundle, as
///   GStreamer's webrtcbin offers); one without it is rejected: it sends nothing, leaves the
///   BUNDLE group and becomes inactive, so that the answer rejects it (port 0);
/// - the DTLS fingerprint is required (the BUNDLE transport's: its first section's, else the
///   session's) and must be sha-256, the only one webrtc-rs verifies; the plan carries that
///   one alone, at session level;
/// - every live media section gets its own `a=msid` identity;
/// - an SSRC may belong to one media section only;
/// - simulcast is answered with one layer: the first RID of `a=simulcast:send` (RFC 8853: the
///   most preferred), so the producer sends one stream ([`read_producer_offer_with`] and
///   [`Simulcast::Layers`] keep every layer instead); of an `a=ssrc-group:SIM`, whose layers
///   cannot be declined in SDP, only the first SSRC (the layer libwebrtc never pauses) is
///   declared, so webrtc-rs receives that one and drops the others;
/// - webrtc-rs negotiates each kind's codecs from the first section of that kind, sending or
///   not: a rejected section before the sending one is given the sending one's formats, and an
///   inactive one that shares no codec with it is rejected, so that it cannot leave the sending
///   section with none.
pub fn read_producer_offer(sdp_type: &str, sdp: &str) -> SfuResult<ProducerOfferPlan> {
    read_producer_offer_with(sdp_type, sdp, Simulcast::OneLayer)
}

/// [`read_producer_offer`], keeping every simulcast layer with [`Simulcast::Layers`].
pub fn read_producer_offer_with(sdp_type: &str, sdp: &str, layers: Simulcast) -> SfuResult<ProducerOfferPlan> {
    let mut sections = check_description(sdp_type, sdp, "offer")?;
    let text = SdpText::split(sdp);
    if text.media.len() != sections.len() {
        return Err(SfuError::InvalidSdp("the media sections of the offer could not be read".into()));
    }
    for (i, section) in sections.iter().enumerate() {
        if section.mid.as_deref().is_none_or(str::is_empty) {
            return Err(SfuError::InvalidSdp(format!(
                "media section {i} has no a=mid; every media section of an offer needs one (RFC 8829 section 5.2.1)"
            )));
        }
    }
    let group = text.bundle_group();
    let in_group = |section: &MediaSection| {
        group.as_ref().is_some_and(|g| section.mid.as_ref().is_some_and(|mid| g.contains(mid)))
    };
    // RFC 8843 section 6: bundle-only outside every BUNDLE group is a rejected section.
    let outside: Vec<bool> = sections.iter().map(|s| !in_group(s)).collect();
    for (section, outside) in sections.iter_mut().zip(outside) {
        if outside {
            section.bundle_only = false;
        }
    }
    let facts = text.media.iter().map(|lines| SectionFacts::read(lines)).collect::<SfuResult<Vec<_>>>()?;
    let sends = check_producer_offer(&sections)?;
    let sending: [Option<usize>; 2] = Kind::ALL.map(|kind| {
        sections.iter().position(|s| s.kind == Some(kind) && !s.is_rejected() && s.direction.sends())
    });

    // One transport: webrtc-rs answers only the first BUNDLE group, every other section with port 0.
    let Some(group) = group.clone() else {
        return Err(SfuError::InvalidSdp(
            "the offer has no a=group:BUNDLE; the server receives a producer's media on one bundled transport (RFC 8843)"
                .into(),
        ));
    };
    for index in sending.iter().flatten() {
        let section = &sections[*index];
        if !in_group(section) {
            return Err(SfuError::InvalidSdp(format!(
                "the {} section (mid {}) is not in the offer's first BUNDLE group; the server receives a producer's media on one bundled transport (RFC 8843)",
                kind_name(section),
                mid_of(section)
            )));
        }
    }
    let tagged = group
        .iter()
        .find_map(|mid| sections.iter().position(|s| s.mid.as_deref() == Some(mid.as_str()) && !s.is_rejected()));
    let fingerprint = transport_fingerprint(&text, &facts, tagged)?;
    check_ssrcs(&sections, &facts)?;

    // What the plan changes, section by section.
    let mut edits: Vec<SectionEdit> = sections.iter().map(|s| SectionEdit { reject: s.is_rejected(), ..Default::default() }).collect();
    for (kind, sender) in Kind::ALL.iter().zip(sending) {
        let Some(sender) = sender else { continue };
        for earlier in 0..sender {
            if sections[earlier].kind != Some(*kind) {
                continue;
            }
            if sections[earlier].is_rejected() || !shares_codec(&sections[earlier], &sections[sender]) {
                edits[earlier].reject = true;
                edits[earlier].formats_from = Some(sender);
            }
        }
    }
    let audio_video = sections.iter().filter(|s| s.kind.is_some()).count();
    let mut anonymous_sender = false;
    let mut video_layers = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        if section.kind.is_none() || edits[index].reject {
            continue;
        }
        let edit = &mut edits[index];
        edit.msid = true;
        edit.rids = facts[index].send_rids();
        if !layers.accepts_simulcast() {
            edit.rids.truncate(1);
        }
        if section.kind == Some(Kind::Video) && section.direction.sends() && edit.rids.len() > 1 {
            video_layers = edit.rids.clone();
        }
        edit.dropped_ssrcs = facts[index].simulcast_ssrcs_to_drop();
        let declares = facts[index].ssrcs.iter().any(|s| !edit.dropped_ssrcs.contains(s));
        anonymous_sender |= section.direction.sends() && !declares && edit.rids.is_empty();
        if section.direction.sends() && !declares && edit.rids.is_empty() && audio_video > 1 {
            return Err(SfuError::InvalidSdp(format!(
                "the {} section (mid {}) declares no SSRC (a=ssrc) and no RID (a=rid); with more than one media section the server tells a producer's streams apart by them",
                kind_name(section),
                mid_of(section)
            )));
        }
    }
    let tagged_port = tagged.map(|t| sections[t].port).filter(|p| *p != 0).unwrap_or(9);
    let sdp = text.rewrite(&sections, &edits, &group, &fingerprint, tagged_port);
    Ok(ProducerOfferPlan { sdp, sends, sections, anonymous_sender, video_layers })
}

fn kind_name(section: &MediaSection) -> &'static str {
    section.kind.map_or("application", Kind::as_str)
}

fn mid_of(section: &MediaSection) -> &str {
    section.mid.as_deref().unwrap_or("-")
}

/// Whether `other` offers one of the formats the server would negotiate from `sender`.
fn shares_codec(other: &MediaSection, sender: &MediaSection) -> bool {
    sender.codecs.iter().filter(|c| c.is_supported() && !is_repair_format(&c.name)).any(|c| {
        other.codecs.iter().any(|o| o.name.eq_ignore_ascii_case(&c.name) && o.clock_rate == c.clock_rate)
    })
}

/// The fingerprint of the bundled transport, as the plan states it: `sha-256 <hex>`. RFC 8843
/// section 7.1.3: the offerer-tagged (first) section's transport attributes apply to the whole
/// group; a media-level fingerprint wins over the session-level one (RFC 8122 section 5).
fn transport_fingerprint(text: &SdpText<'_>, facts: &[SectionFacts], tagged: Option<usize>) -> SfuResult<String> {
    let session: Vec<&str> = text.session.iter().filter_map(|l| l.strip_prefix("a=fingerprint:")).collect();
    let media: Vec<&str> = tagged.map(|t| facts[t].fingerprints.iter().map(String::as_str).collect()).unwrap_or_default();
    let offered = if media.is_empty() { session } else { media };
    if offered.is_empty() {
        return Err(SfuError::InvalidSdp(
            "the offer has no a=fingerprint, at session level or in its bundled transport's media section: the DTLS certificate could not be authenticated (RFC 8829 section 5.8)"
                .into(),
        ));
    }
    let mut algorithms = Vec::new();
    for value in offered {
        let mut parts = value.split_whitespace();
        let (Some(algorithm), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SfuError::InvalidSdp(format!("bad fingerprint: a=fingerprint:{value}")));
        };
        let well_formed = hex.split(':').all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        if !well_formed {
            return Err(SfuError::InvalidSdp(format!("bad fingerprint: a=fingerprint:{value}")));
        }
        if algorithm.eq_ignore_ascii_case("sha-256") {
            return Ok(format!("sha-256 {hex}"));
        }
        algorithms.push(algorithm.to_owned());
    }
    Err(SfuError::InvalidSdp(format!(
        "the offer's DTLS fingerprint uses {}; the server verifies certificates by their sha-256 fingerprint only",
        algorithms.join(", ")
    )))
}

/// RFC 5576 and RFC 8843 section 9.2: an SSRC names one RTP stream of one media section; two
/// live sections of one bundled transport cannot share it.
fn check_ssrcs(sections: &[MediaSection], facts: &[SectionFacts]) -> SfuResult<()> {
    let mut owner: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for (index, fact) in facts.iter().enumerate() {
        if sections[index].is_rejected() {
            continue;
        }
        let grouped = fact.groups.iter().flat_map(|(_, ssrcs)| ssrcs.iter());
        for ssrc in fact.ssrcs.iter().chain(grouped) {
            let first = *owner.entry(*ssrc).or_insert(index);
            if first != index {
                return Err(SfuError::InvalidSdp(format!(
                    "SSRC {ssrc} is declared by both the {} section (mid {}) and the {} section (mid {}); an SSRC names a stream of one media section (RFC 8843 section 9.2)",
                    kind_name(&sections[first]),
                    mid_of(&sections[first]),
                    kind_name(&sections[index]),
                    mid_of(&sections[index])
                )));
            }
        }
    }
    for (index, fact) in facts.iter().enumerate() {
        if sections[index].is_rejected() {
            continue;
        }
        // RFC 5576 section 4.2: a group's SSRCs are ones its section declares (webrtc-rs binds a
        // group naming another only at the answer, and fails there).
        if let Some((semantics, ssrc)) = fact
            .groups
            .iter()
            .find_map(|(semantics, members)| members.iter().find(|m| !fact.ssrcs.contains(m)).map(|m| (semantics, m)))
        {
            return Err(SfuError::InvalidSdp(format!(
                "a=ssrc-group:{semantics} of the {} section (mid {}) names SSRC {ssrc}, which no a=ssrc line of the section declares (RFC 5576 section 4.2)",
                kind_name(&sections[index]),
                mid_of(&sections[index])
            )));
        }
    }
    Ok(())
}

/// The attributes of one media section that the checks and rewrites of an offer read.
#[derive(Debug, Default)]
struct SectionFacts {
    fingerprints: Vec<String>,
    /// `a=ssrc` ids, in order of first appearance.
    ssrcs: Vec<u32>,
    /// `a=ssrc-group` semantics and members.
    groups: Vec<(String, Vec<u32>)>,
    /// `a=rid` id and direction (`send` / `recv`, lower case).
    rids: Vec<(String, String)>,
    simulcast: Option<String>,
    has_candidates: bool,
}

impl SectionFacts {
    fn read(lines: &[&str]) -> SfuResult<Self> {
        let mut facts = SectionFacts::default();
        let bad_ssrc = |line: &str| SfuError::InvalidSdp(format!("bad SSRC in {line}"));
        for line in lines {
            let Some(attr) = line.strip_prefix("a=") else { continue };
            if let Some(value) = attr.strip_prefix("fingerprint:") {
                facts.fingerprints.push(value.trim().to_owned());
            } else if let Some(value) = attr.strip_prefix("ssrc:") {
                let id = value.split(' ').next().unwrap_or_default();
                let ssrc = id.parse::<u32>().map_err(|_| bad_ssrc(line))?;
                if !facts.ssrcs.contains(&ssrc) {
                    facts.ssrcs.push(ssrc);
                }
            } else if let Some(value) = attr.strip_prefix("ssrc-group:") {
                let mut parts = value.split_whitespace();
                let semantics = parts.next().unwrap_or_default().to_owned();
                let members = parts.map(|p| p.parse::<u32>().map_err(|_| bad_ssrc(line))).collect::<SfuResult<Vec<_>>>()?;
                facts.groups.push((semantics, members));
            } else if let Some(value) = attr.strip_prefix("rid:") {
                let mut parts = value.split_whitespace();
                if let (Some(id), Some(direction)) = (parts.next(), parts.next()) {
                    facts.rids.push((id.to_owned(), direction.to_ascii_lowercase()));
                }
            } else if let Some(value) = attr.strip_prefix("simulcast:") {
                facts.simulcast = Some(value.trim().to_owned());
            } else if attr.starts_with("candidate:") {
                facts.has_candidates = true;
            }
        }
        Ok(facts)
    }

    /// The RIDs the producer may be asked to send, most preferred first: those of the send
    /// list of `a=simulcast` (RFC 8853 section 5.1: in decreasing order of preference; the first
    /// of each alternative), the unpaused ones, else the paused ones; without `a=simulcast`, the
    /// first `a=rid:… send`. Empty when the section sends no RID at all.
    fn send_rids(&self) -> Vec<String> {
        let sends = |id: &str| self.rids.iter().any(|(rid, dir)| rid == id && dir == "send");
        let listed: Vec<(String, bool)> = self
            .simulcast
            .as_deref()
            .map(|value| {
                let tokens: Vec<&str> = value.split_whitespace().collect();
                tokens
                    .chunks(2)
                    .filter(|pair| pair[0].eq_ignore_ascii_case("send") && pair.len() == 2)
                    .flat_map(|pair| pair[1].trim_start_matches("rid=").split(';').filter_map(|alt| alt.split(',').next()))
                    .map(|id| match id.strip_prefix('~') {
                        Some(id) => (id.to_owned(), true),
                        None => (id.to_owned(), false),
                    })
                    .filter(|(id, _)| sends(id))
                    .collect()
            })
            .unwrap_or_default();
        let mut rids: Vec<String> = listed.iter().filter(|(_, paused)| !paused).map(|(id, _)| id.clone()).collect();
        if rids.is_empty() {
            rids = listed.into_iter().map(|(id, _)| id).collect();
        }
        rids.dedup();
        if rids.is_empty() {
            rids.extend(self.rids.iter().find(|(_, dir)| dir == "send").map(|(id, _)| id.clone()));
        }
        rids
    }

    /// The SSRCs of every layer of an `a=ssrc-group:SIM` but the first, with their repair
    /// streams (FID, FEC-FR). SDP has no way to decline those layers, so the plan leaves them
    /// undeclared: webrtc-rs then receives the first layer alone.
    fn simulcast_ssrcs_to_drop(&self) -> Vec<u32> {
        let mut dropped = Vec::new();
        for (semantics, members) in &self.groups {
            if semantics.eq_ignore_ascii_case("SIM") {
                dropped.extend(members.iter().skip(1));
            }
        }
        let repairs: Vec<u32> = self
            .groups
            .iter()
            .filter(|(semantics, members)| !semantics.eq_ignore_ascii_case("SIM") && members.len() > 1 && dropped.contains(&members[0]))
            .flat_map(|(_, members)| members[1..].iter().copied())
            .collect();
        dropped.extend(repairs);
        dropped
    }
}

/// How the plan changes one media section.
#[derive(Debug, Default)]
struct SectionEdit {
    /// Rejected: port 0, out of the BUNDLE group, inactive.
    reject: bool,
    /// Take the formats (m= line and rtpmap / fmtp / rtcp-fb) of this section instead.
    formats_from: Option<usize>,
    /// Give it the server's `a=msid` identity.
    msid: bool,
    /// The RIDs it keeps, most preferred first (none: no RID; one: no simulcast).
    rids: Vec<String>,
    /// SSRCs whose declarations are removed.
    dropped_ssrcs: Vec<u32>,
}

/// An SDP as lines: the session part, and one block per media section (its `m=` line first).
struct SdpText<'a> {
    session: Vec<&'a str>,
    media: Vec<Vec<&'a str>>,
}

fn is_codec_line(line: &str) -> bool {
    ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|p| line.starts_with(p))
}

fn is_direction_line(line: &str) -> bool {
    matches!(line, "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive")
}

impl<'a> SdpText<'a> {
    fn split(sdp: &'a str) -> Self {
        let mut text = SdpText { session: Vec::new(), media: Vec::new() };
        for raw in sdp.lines() {
            let line = raw.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            if line.starts_with("m=") {
                text.media.push(vec![line]);
            } else if let Some(section) = text.media.last_mut() {
                section.push(line);
            } else {
                text.session.push(line);
            }
        }
        text
    }

    /// The mids of the first `a=group:BUNDLE`: the one group webrtc-rs answers.
    fn bundle_group(&self) -> Option<Vec<String>> {
        self.session.iter().find_map(|line| {
            let value = line.strip_prefix("a=group:")?;
            let mut parts = value.split_whitespace();
            parts.next().filter(|s| s.eq_ignore_ascii_case("BUNDLE"))?;
            Some(parts.map(str::to_owned).collect())
        })
    }

    fn rewrite(&self, sections: &[MediaSection], edits: &[SectionEdit], group: &[String], fingerprint: &str, tagged_port: u16) -> String {
        let mut out: Vec<String> = Vec::new();
        // Session: one BUNDLE group (webrtc-rs reads the first a=group line as it), without
        // the rejected sections, and the transport's fingerprint alone.
        let kept: Vec<&str> = group
            .iter()
            .filter(|mid| {
                !sections.iter().zip(edits).any(|(s, e)| e.reject && s.mid.as_deref() == Some(mid.as_str()))
            })
            .map(String::as_str)
            .collect();
        let mut grouped = false;
        for line in &self.session {
            if line.starts_with("a=fingerprint:") {
                continue;
            }
            if line.starts_with("a=group:") {
                if !grouped {
                    out.push(format!("a=group:BUNDLE {}", kept.join(" ")));
                    grouped = true;
                }
                continue;
            }
            out.push((*line).to_owned());
        }
        out.push(format!("a=fingerprint:{fingerprint}"));

        for (index, lines) in self.media.iter().enumerate() {
            let section = &sections[index];
            let edit = &edits[index];
            let donor = edit.formats_from.map(|d| &self.media[d]);
            // The m= line: port, and formats.
            let mut fields: Vec<&str> = lines[0].split_whitespace().collect();
            let port = if edit.reject {
                "0".to_owned()
            } else if section.port == 0 && section.bundle_only {
                tagged_port.to_string()
            } else {
                fields.get(1).copied().unwrap_or("9").to_owned()
            };
            let donor_fields: Vec<&str> = donor.map(|d| d[0].split_whitespace().collect()).unwrap_or_default();
            if donor_fields.len() > 3 && fields.len() >= 3 {
                fields.truncate(3);
                fields.extend_from_slice(&donor_fields[3..]);
            }
            let mut m_line = fields.clone();
            if m_line.len() > 1 {
                m_line[1] = &port;
            }
            let mut block: Vec<String> = vec![m_line.join(" ")];
            let identity = format!("{MSID_STREAM} {MSID_STREAM}-{index}");
            let mut saw_direction = false;
            for line in &lines[1..] {
                if line.starts_with("a=fingerprint:") || line.starts_with("a=msid:") {
                    continue;
                }
                if donor.is_some() && is_codec_line(line) {
                    continue;
                }
                if is_direction_line(line) {
                    saw_direction = true;
                    let has_candidates = lines.iter().any(|l| l.starts_with("a=candidate:"));
                    if edit.reject && !has_candidates {
                        block.push("a=inactive".into());
                        continue;
                    }
                }
                if section.kind.is_some() && !edit.reject {
                    if let Some(value) = line.strip_prefix("a=ssrc:") {
                        let (id, attribute) = value.split_once(' ').unwrap_or((value, ""));
                        if id.parse::<u32>().is_ok_and(|ssrc| edit.dropped_ssrcs.contains(&ssrc)) {
                            continue;
                        }
                        if attribute.starts_with("msid:") {
                            block.push(format!("a=ssrc:{id} msid:{identity}"));
                            continue;
                        }
                    }
                    if let Some(value) = line.strip_prefix("a=ssrc-group:") {
                        let semantics = value.split_whitespace().next().unwrap_or_default();
                        let drops = value.split_whitespace().skip(1).any(|s| s.parse::<u32>().is_ok_and(|s| edit.dropped_ssrcs.contains(&s)));
                        if semantics.eq_ignore_ascii_case("SIM") || drops {
                            continue;
                        }
                    }
                    if let Some(value) = line.strip_prefix("a=rid:") {
                        let mut parts = value.split_whitespace();
                        let keep = parts.next().is_some_and(|id| edit.rids.iter().any(|r| r == id))
                            && parts.next().is_some_and(|d| d.eq_ignore_ascii_case("send"));
                        if !keep {
                            continue;
                        }
                    }
                    if line.starts_with("a=simulcast:") {
                        if !edit.rids.is_empty() {
                            block.push(format!("a=simulcast:send {}", edit.rids.join(";")));
                        }
                        continue;
                    }
                }
                block.push((*line).to_owned());
            }
            if edit.reject && !saw_direction {
                block.push("a=inactive".into());
            }
            if let Some(donor) = donor {
                block.extend(donor[1..].iter().filter(|l| is_codec_line(l)).map(|l| (*l).to_owned()));
            }
            if edit.msid {
                // Before the first attribute, so that the SSRCs declared after it take it.
                let at = block.iter().position(|l| l.starts_with("a=")).unwrap_or(block.len());
                block.insert(at, format!("a=msid:{identity}"));
            }
            out.extend(block);
        }
        let mut sdp = out.join("\r\n");
        sdp.push_str("\r\n");
        sdp
    }
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

/// Checks that an answer answers the offer it is for (RFC 3264 section 6): the same media
/// sections in the same order, each accepted one with a format the offer named, and the
/// transport's credentials. Everything is checked before any answer of a `consume` is
/// applied, so that a batch is applied whole or not at all.
pub fn check_answer_matches_offer(offer: &[MediaSection], answer: &[MediaSection], answer_sdp: &str) -> SfuResult<()> {
    if offer.len() != answer.len() {
        return Err(SfuError::InvalidSdp(format!(
            "the answer has {} media sections, the offer it answers has {}: was it made for another offer?",
            answer.len(),
            offer.len()
        )));
    }
    for (i, (o, a)) in offer.iter().zip(answer).enumerate() {
        if o.kind != a.kind || (o.mid.is_some() && a.mid.is_some() && o.mid != a.mid) {
            return Err(SfuError::InvalidSdp(format!(
                "media section {i} of the answer (mid {:?}) does not answer the offer's (mid {:?})",
                a.mid.as_deref().unwrap_or("-"),
                o.mid.as_deref().unwrap_or("-")
            )));
        }
        if a.port == 0 || o.port == 0 {
            continue;
        }
        if !a.codecs.iter().any(|c| o.codecs.iter().any(|oc| oc.payload_type == c.payload_type && oc.name.eq_ignore_ascii_case(&c.name) && oc.clock_rate == c.clock_rate)) {
            return Err(SfuError::InvalidSdp(format!(
                "media section {i} of the answer accepts no format the offer named"
            )));
        }
    }
    for (attribute, what) in [("a=fingerprint:", "DTLS fingerprint"), ("a=ice-ufrag:", "ICE username fragment"), ("a=ice-pwd:", "ICE password")] {
        if !answer_sdp.lines().any(|l| l.starts_with(attribute)) {
            return Err(SfuError::InvalidSdp(format!("the answer has no {what} ({attribute}…)")));
        }
    }
    check_lines_webrtc_rs_reads(answer_sdp)
}

/// What webrtc-rs checks only after it has applied a remote description (its state has moved
/// on by then, so a refusal there cannot be undone), read here first, the way it reads it:
/// every section's mid and payload formats, one fingerprint and one set of ICE credentials for
/// the transport, candidates and header extensions through webrtc-rs's own parsers.
fn check_lines_webrtc_rs_reads(sdp: &str) -> SfuResult<()> {
    let invalid = |what: String| Err(SfuError::InvalidSdp(what));
    let lines: Vec<&str> = sdp.lines().map(|l| l.trim_end_matches('\r')).collect();
    let starts: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.starts_with("m=")).map(|(i, _)| i).collect();
    let session = &lines[..starts.first().copied().unwrap_or(lines.len())];
    let first = |section: &[&str], key: &str| -> Option<String> {
        section.iter().find_map(|l| l.strip_prefix(key)).map(str::to_owned)
    };
    let mut fingerprint = first(session, "a=fingerprint:");
    let mut ufrag = first(session, "a=ice-ufrag:");
    let mut pwd = first(session, "a=ice-pwd:");
    let mut fingerprints: Vec<String> = fingerprint.iter().cloned().collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let section = &lines[start..end];
        match first(section, "a=mid:") {
            Some(mid) if !mid.is_empty() => {}
            _ => return invalid(format!("media section {n} of the answer has no a=mid")),
        }
        if let Some(f) = first(section, "a=fingerprint:") {
            fingerprints.push(f.clone());
            fingerprint.get_or_insert(f);
        }
        let rejected = section[0].split_whitespace().nth(1).is_some_and(|p| p.split('/').next() == Some("0"));
        if !rejected {
            for pt in section[0].split_whitespace().skip(3) {
                let Ok(pt) = pt.parse::<u8>() else { return invalid(format!("bad payload type {pt} in {}", section[0])) };
                let mapped = section.iter().any(|l| l.strip_prefix("a=rtpmap:").and_then(|r| r.split(' ').next()) == Some(&pt.to_string()));
                if pt >= 35 && !mapped {
                    return invalid(format!("payload type {pt} of media section {n} has no a=rtpmap"));
                }
            }
        }
        if section.contains(&"a=inactive") {
            continue; // webrtc-rs reads no credentials or candidates there
        }
        for (key, value) in [("a=ice-ufrag:", &mut ufrag), ("a=ice-pwd:", &mut pwd)] {
            if let Some(v) = first(section, key) {
                if value.get_or_insert_with(|| v.clone()) != &v {
                    return invalid(format!("the answer has conflicting {}", key.trim_start_matches("a=").trim_end_matches(':')));
                }
            }
        }
        for line in section {
            if let Some(candidate) = line.strip_prefix("a=candidate:") {
                rtc::ice::candidate::unmarshal_candidate(candidate)
                    .map_err(|e| SfuError::InvalidSdp(format!("bad candidate ({e}): {line}")))?;
            }
        }
    }
    for line in &lines {
        if line.starts_with("a=extmap:") {
            let mut reader = std::io::Cursor::new(line.as_bytes());
            rtc::sdp::extmap::ExtMap::unmarshal(&mut reader)
                .map_err(|e| SfuError::InvalidSdp(format!("bad header extension ({e}): {line}")))?;
        }
    }
    if ufrag.is_none() || pwd.is_none() {
        return invalid("the answer has no ICE credentials (a=ice-ufrag, a=ice-pwd)".into());
    }
    let Some(fingerprint) = fingerprint else { return invalid("the answer has no a=fingerprint".into()) };
    if fingerprints.iter().any(|f| *f != fingerprint) {
        return invalid("the answer has conflicting fingerprints".into());
    }
    let parts: Vec<&str> = fingerprint.split(' ').collect();
    let well_formed = parts.len() == 2 && parts[1].split(':').all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    if !well_formed {
        return invalid(format!("bad fingerprint: a=fingerprint:{fingerprint}"));
    }
    if !parts[0].eq_ignore_ascii_case("sha-256") {
        return invalid("the answer has no sha-256 DTLS fingerprint, the only kind the server verifies certificates by".into());
    }
    Ok(())
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

    // ---- read_producer_offer: the shapes of other stacks' offers ----

    const FP: &str = "sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    /// A complete two-section offer as libwebrtc writes it (session fingerprint, BUNDLE, SSRCs).
    fn offer() -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=fingerprint:{FP}\r\n\
m=audio 50000 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\na=sendonly\r\na=msid:s1 a1\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=ssrc:1001 cname:x\r\na=ssrc:1001 msid:s1 a1\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
m=video 50000 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 127.0.0.1\r\na=mid:1\r\na=sendonly\r\na=msid:s1 v1\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\n"
        )
    }

    fn read(sdp: &str) -> SfuResult<ProducerOfferPlan> {
        read_producer_offer("offer", sdp)
    }

    fn invalid(sdp: &str) -> String {
        let err = read(sdp).unwrap_err();
        assert_eq!(err.code(), "INVALID_SDP", "{err}");
        err.to_string()
    }

    /// The lines of section `index` of an SDP.
    fn section_lines(sdp: &str, index: usize) -> Vec<String> {
        SdpText::split(sdp).media[index].iter().map(|l| (*l).to_owned()).collect()
    }

    fn session_lines(sdp: &str) -> Vec<String> {
        SdpText::split(sdp).session.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn a_plain_offer_is_planned_with_the_servers_identities_and_one_fingerprint() {
        let plan = read(&offer()).unwrap();
        assert_eq!(plan.sends, ProducerOffer { sends_audio: true, sends_video: true });
        assert!(plan.sdp.ends_with("\r\n") && !plan.sdp.contains("\r\n\r\n"));
        assert_eq!(plan.sdp.matches("a=fingerprint:").count(), 1);
        assert!(session_lines(&plan.sdp).contains(&format!("a=fingerprint:{FP}")));
        assert!(session_lines(&plan.sdp).contains(&"a=group:BUNDLE 0 1".to_owned()));
        let audio = section_lines(&plan.sdp, 0);
        assert_eq!(audio[0], "m=audio 50000 UDP/TLS/RTP/SAVPF 111 0");
        assert_eq!(audio[2], "a=msid:mediaserver mediaserver-0", "{audio:?}");
        assert!(audio.contains(&"a=ssrc:1001 msid:mediaserver mediaserver-0".to_owned()));
        assert!(!audio.iter().any(|l| l.contains("s1")));
        assert!(section_lines(&plan.sdp, 1).contains(&"a=msid:mediaserver mediaserver-1".to_owned()));
        // Everything else is kept as written.
        assert!(section_lines(&plan.sdp, 1).contains(&"a=ssrc-group:FID 2001 2002".to_owned()));
        assert!(audio.contains(&"a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".to_owned()));
    }

    #[test]
    fn an_offer_without_a_fingerprint_is_invalid_sdp() {
        let none = offer().replace(&format!("a=fingerprint:{FP}\r\n"), "");
        assert!(invalid(&none).contains("no a=fingerprint"));
        // Media level, in the section that carries the bundled transport: fine.
        let media = none.replace("a=mid:0\r\n", &format!("a=mid:0\r\na=fingerprint:{FP}\r\n"));
        let plan = read(&media).unwrap();
        assert!(session_lines(&plan.sdp).contains(&format!("a=fingerprint:{FP}")));
        assert_eq!(plan.sdp.matches("a=fingerprint:").count(), 1);
        // Only in a bundled section that is not the first: the transport has none.
        let elsewhere = none.replace("a=mid:1\r\n", &format!("a=mid:1\r\na=fingerprint:{FP}\r\n"));
        invalid(&elsewhere);
        // Malformed, or a hash webrtc-rs cannot verify.
        invalid(&offer().replace(FP, "sha-256"));
        invalid(&offer().replace(FP, "sha-256 XY:ZZ"));
        assert!(invalid(&offer().replace("sha-256 AB", "sha-1 AB")).contains("sha-1"));
        // sha-256 among others: that one is kept.
        let two = offer().replace(&format!("a=fingerprint:{FP}\r\n"), &format!("a=fingerprint:sha-1 AB:CD\r\na=fingerprint:{FP}\r\n"));
        assert!(read(&two).unwrap().sdp.contains(&format!("a=fingerprint:{FP}\r\n")));
    }

    #[test]
    fn a_port_zero_bundle_only_section_is_live_and_one_without_it_is_rejected() {
        // max-bundle, as GStreamer's webrtcbin offers it.
        let bundled = offer().replace("m=video 50000", "m=video 0").replace("a=mid:1\r\n", "a=mid:1\r\na=bundle-only\r\n");
        let plan = read(&bundled).unwrap();
        assert_eq!(plan.sends, ProducerOffer { sends_audio: true, sends_video: true });
        assert!(!plan.sections[1].is_rejected());
        assert_eq!(section_lines(&plan.sdp, 1)[0], "m=video 50000 UDP/TLS/RTP/SAVPF 96 97", "the bundle's port");
        assert!(session_lines(&plan.sdp).contains(&"a=group:BUNDLE 0 1".to_owned()));

        // Port 0 without bundle-only: rejected, sends nothing, and the answer will reject it.
        let rejected = offer().replace("m=video 50000", "m=video 0").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0");
        let plan = read(&rejected).unwrap();
        assert_eq!(plan.sends, ProducerOffer { sends_audio: true, sends_video: false });
        let video = section_lines(&plan.sdp, 1);
        assert!(video[0].starts_with("m=video 0 "));
        assert!(video.contains(&"a=inactive".to_owned()) && !video.contains(&"a=sendonly".to_owned()));
        assert!(!video.iter().any(|l| l.starts_with("a=msid:")));
        // Still listed in the BUNDLE group: taken out, so that webrtc-rs answers it with port 0.
        let listed = offer().replace("m=video 50000", "m=video 0");
        assert!(session_lines(&read(&listed).unwrap().sdp).contains(&"a=group:BUNDLE 0".to_owned()));
        // bundle-only outside every BUNDLE group is rejected too (RFC 8843 section 6).
        let stray = bundled.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0");
        assert_eq!(read(&stray).unwrap().sends, ProducerOffer { sends_audio: true, sends_video: false });
        // A port-0 answer section is rejected whatever it says.
        assert!(negotiated_codecs(&media_sections(&rejected.replace("a=sendonly", "a=recvonly")).unwrap())[1].is_none());
    }

    #[test]
    fn sections_without_msid_get_one_identity_each() {
        // werift: no a=msid, only a=ssrc cname.
        let werift = offer().replace("a=msid:s1 a1\r\n", "").replace("a=msid:s1 v1\r\n", "").replace("a=ssrc:1001 msid:s1 a1\r\n", "");
        let plan = read(&werift).unwrap();
        let audio = section_lines(&plan.sdp, 0);
        let video = section_lines(&plan.sdp, 1);
        assert_eq!(audio.iter().filter(|l| l.starts_with("a=msid:")).collect::<Vec<_>>(), ["a=msid:mediaserver mediaserver-0"]);
        assert_eq!(video.iter().filter(|l| l.starts_with("a=msid:")).collect::<Vec<_>>(), ["a=msid:mediaserver mediaserver-1"]);
        // Before the SSRCs, which webrtc-rs names by the msid it has read so far.
        let msid_at = audio.iter().position(|l| l.starts_with("a=msid:")).unwrap();
        assert!(msid_at < audio.iter().position(|l| l.starts_with("a=ssrc:")).unwrap());
        assert!(audio[..msid_at].iter().all(|l| !l.starts_with("a=")), "{audio:?}");
        // One-token msid (RFC 8830 allows it; webrtc-rs reads no track id from it) and
        // duplicate identities are replaced too.
        let same = offer().replace("a=msid:s1 a1", "a=msid:s1").replace("a=msid:s1 v1", "a=msid:s1");
        let plan = read(&same).unwrap();
        assert!(section_lines(&plan.sdp, 0).contains(&"a=msid:mediaserver mediaserver-0".to_owned()));
        assert!(section_lines(&plan.sdp, 1).contains(&"a=msid:mediaserver mediaserver-1".to_owned()));
    }

    #[test]
    fn unusual_section_orders_leave_the_sending_sections_their_codecs() {
        // Video first, and a data channel first: nothing to change but identities.
        let (session, media) = offer().split_once("m=audio").map(|(s, m)| (s.to_owned(), format!("m=audio{m}"))).unwrap();
        let (audio, video) = media.split_once("m=video").map(|(a, v)| (a.to_owned(), format!("m=video{v}"))).unwrap();
        let video_first = format!("{}{video}{audio}", session.replace("BUNDLE 0 1", "BUNDLE 1 0"));
        let plan = read(&video_first).unwrap();
        assert_eq!(plan.sends, ProducerOffer { sends_audio: true, sends_video: true });
        assert_eq!(section_lines(&plan.sdp, 0)[0], "m=video 50000 UDP/TLS/RTP/SAVPF 96 97");
        let data = "m=application 50000 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\na=mid:2\r\na=sctp-port:5000\r\n";
        let data_first = format!("{}{data}{audio}{video}", session.replace("BUNDLE 0 1", "BUNDLE 2 0 1"));
        let plan = read(&data_first).unwrap();
        assert_eq!(plan.sends, ProducerOffer { sends_audio: true, sends_video: true });
        assert_eq!(section_lines(&plan.sdp, 0), data.trim_end().split("\r\n").collect::<Vec<_>>());

        // webrtc-rs takes a kind's codecs from the first section of that kind: a first audio
        // section with PCMU only, rejected or inactive, would leave the sending one none.
        let pcmu = |port: &str, direction: &str| {
            format!("m=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=mid:9\r\na={direction}\r\na=rtpmap:0 PCMU/8000\r\n")
        };
        for (port, direction, group) in [("0", "inactive", "BUNDLE 0 1"), ("50000", "inactive", "BUNDLE 9 0 1"), ("50000", "recvonly", "BUNDLE 0 9 1")] {
            let shape = format!("{}{}{audio}{video}", session.replace("BUNDLE 0 1", group), pcmu(port, direction));
            let plan = read(&shape).unwrap();
            assert_eq!(plan.sends, ProducerOffer { sends_audio: true, sends_video: true }, "{port} {direction}");
            let first = section_lines(&plan.sdp, 0);
            assert_eq!(first[0], "m=audio 0 UDP/TLS/RTP/SAVPF 111 0", "the sending section's formats, rejected");
            assert!(first.contains(&"a=rtpmap:111 opus/48000/2".to_owned()));
            assert!(first.contains(&"a=inactive".to_owned()));
            assert!(session_lines(&plan.sdp).contains(&"a=group:BUNDLE 0 1".to_owned()), "{:?}", session_lines(&plan.sdp));
            // The sending section itself is untouched but for its identity.
            assert_eq!(section_lines(&plan.sdp, 1)[0], "m=audio 50000 UDP/TLS/RTP/SAVPF 111 0");
        }
        // An inactive first section that shares a codec with the sending one is left alone.
        let opus_first = format!(
            "{}m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\na=mid:9\r\na=inactive\r\na=rtpmap:111 opus/48000/2\r\n{audio}{video}",
            session.replace("BUNDLE 0 1", "BUNDLE 9 0 1")
        );
        let plan = read(&opus_first).unwrap();
        assert_eq!(section_lines(&plan.sdp, 0)[0], "m=audio 50000 UDP/TLS/RTP/SAVPF 111");
        assert!(session_lines(&plan.sdp).contains(&"a=group:BUNDLE 9 0 1".to_owned()));

        // The answer: the codec of the first section of a kind that receives.
        let answer = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 98\r\na=mid:5\r\na=recvonly\r\na=rtpmap:98 VP9/90000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 100\r\na=mid:6\r\na=inactive\r\na=rtpmap:100 H264/90000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:7\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(negotiated_codecs(&media_sections(answer).unwrap())[1].as_ref().unwrap().name, "VP8");
    }

    #[test]
    fn an_ssrc_shared_by_two_sections_is_invalid_sdp() {
        let shared = offer().replace("a=ssrc:2001 cname:x", "a=ssrc:1001 cname:x");
        let msg = invalid(&shared);
        assert!(msg.contains("SSRC 1001") && msg.contains("audio section (mid 0)") && msg.contains("video section (mid 1)"), "{msg}");
        // Through an ssrc-group as well.
        invalid(&offer().replace("a=ssrc-group:FID 2001 2002", "a=ssrc-group:FID 2001 1001"));
        // A rejected section's SSRCs do not count.
        let rejected = shared.replace("m=video 50000", "m=video 0").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0");
        assert!(read(&rejected).is_ok());
        // Not a number.
        invalid(&offer().replace("a=ssrc:2002 cname:x", "a=ssrc:x2002 cname:x"));
        invalid(&offer().replace("a=ssrc-group:FID 2001 2002", "a=ssrc-group:FID 2001 abc"));
    }

    #[test]
    fn simulcast_layers_are_kept_for_a_forwarder_that_selects_them() {
        let chromium = offer()
            .replace("a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\n", "")
            .replace(
                "a=msid:s1 v1\r\n",
                "a=msid:s1 v1\r\na=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n",
            );
        let plan = read_producer_offer_with("offer", &chromium, Simulcast::Layers).unwrap();
        let video = section_lines(&plan.sdp, 1);
        let rids: Vec<&String> = video.iter().filter(|l| l.starts_with("a=rid:") || l.starts_with("a=simulcast:")).collect();
        assert_eq!(rids, ["a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"]);
        assert_eq!(plan.video_layers, ["q", "h", "f"]);
        // A paused layer is left out; the first of each alternative is kept.
        let paused = chromium.replace("a=simulcast:send q;h;f", "a=simulcast:send ~q;h,f;f");
        assert_eq!(read_producer_offer_with("offer", &paused, Simulcast::Layers).unwrap().video_layers, ["h", "f"]);
        // One layer is no simulcast.
        let one = chromium.replace("a=simulcast:send q;h;f", "a=simulcast:send q");
        assert!(read_producer_offer_with("offer", &one, Simulcast::Layers).unwrap().video_layers.is_empty());
        assert!(read(&chromium).unwrap().video_layers.is_empty(), "one layer by default");
    }

    #[test]
    fn simulcast_is_answered_with_one_layer() {
        // As Chromium offers three sendEncodings: no a=ssrc, three RIDs.
        let chromium = offer()
            .replace("a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\n", "")
            .replace(
                "a=msid:s1 v1\r\n",
                "a=msid:s1 v1\r\na=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n",
            );
        let plan = read(&chromium).unwrap();
        let video = section_lines(&plan.sdp, 1);
        let rids: Vec<&String> = video.iter().filter(|l| l.starts_with("a=rid:") || l.starts_with("a=simulcast:")).collect();
        assert_eq!(rids, ["a=rid:q send", "a=simulcast:send q"], "the first, most preferred layer (RFC 8853)");
        assert!(video.contains(&"a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id".to_owned()), "webrtc-rs needs the RID to bind the stream");
        assert!(video.contains(&"a=msid:mediaserver mediaserver-1".to_owned()), "webrtc-rs reads RIDs only with an msid");
        // A paused layer is skipped; alternatives and the old rid= syntax are read.
        let paused = chromium.replace("a=simulcast:send q;h;f", "a=simulcast:send ~q;h,f;f");
        assert!(section_lines(&read(&paused).unwrap().sdp, 1).contains(&"a=simulcast:send h".to_owned()));
        let old = chromium.replace("a=simulcast:send q;h;f", "a=simulcast: send rid=f;h;q");
        assert!(section_lines(&read(&old).unwrap().sdp, 1).contains(&"a=rid:f send".to_owned()));
        // Receiving simulcast is not something a producer's upstream does: dropped.
        let recv = chromium.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;f recv r1").replace("a=rid:f send\r\n", "a=rid:f send\r\na=rid:r1 recv\r\n");
        let video = section_lines(&read(&recv).unwrap().sdp, 1);
        assert_eq!(video.iter().filter(|l| l.starts_with("a=rid:") || l.starts_with("a=simulcast:")).collect::<Vec<_>>(), ["a=rid:q send", "a=simulcast:send q"]);
    }

    #[test]
    fn ssrc_group_sim_keeps_its_first_layer() {
        let sim = offer().replace(
            "a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\n",
            "a=ssrc-group:SIM 2001 2003 2005\r\na=ssrc-group:FID 2001 2002\r\na=ssrc-group:FID 2003 2004\r\na=ssrc-group:FID 2005 2006\r\n\
a=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\na=ssrc:2003 cname:x\r\na=ssrc:2004 cname:x\r\na=ssrc:2005 cname:x\r\na=ssrc:2006 cname:x\r\n",
        );
        let plan = read(&sim).unwrap();
        let video = section_lines(&plan.sdp, 1);
        let ssrc_lines: Vec<&String> = video.iter().filter(|l| l.starts_with("a=ssrc")).collect();
        assert_eq!(ssrc_lines, ["a=ssrc-group:FID 2001 2002", "a=ssrc:2001 cname:x", "a=ssrc:2002 cname:x"]);
    }

    #[test]
    fn offers_the_server_could_not_receive_are_invalid_sdp() {
        // No BUNDLE: webrtc-rs would answer every section with port 0.
        assert!(invalid(&offer().replace("a=group:BUNDLE 0 1\r\n", "")).contains("BUNDLE"));
        // A sending section outside the BUNDLE group.
        assert!(invalid(&offer().replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")).contains("video section (mid 1)"));
        // webrtc-rs reads the first a=group line as the bundle: other groups are dropped.
        let lip_sync = offer().replace("a=group:BUNDLE 0 1", "a=group:LS 0 1\r\na=group:BUNDLE 0 1");
        let plan = read(&lip_sync).unwrap();
        assert_eq!(session_lines(&plan.sdp).iter().filter(|l| l.starts_with("a=group:")).collect::<Vec<_>>(), ["a=group:BUNDLE 0 1"]);
        // A section without a mid.
        invalid(&offer().replace("a=mid:1\r\n", ""));
        // A sending section with neither SSRC nor RID, among several: webrtc-rs cannot tell it apart.
        let no_ssrc = offer().replace("a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\n", "");
        assert!(invalid(&no_ssrc).contains("no SSRC"));
        // Alone, it is bound by being the only section.
        let alone = no_ssrc.split("m=audio").next().unwrap().replace("BUNDLE 0 1", "BUNDLE 1").to_owned()
            + "m=video"
            + no_ssrc.split("m=video").nth(1).unwrap();
        assert_eq!(read(&alone).unwrap().sends, ProducerOffer { sends_audio: false, sends_video: true });
    }

    /// An answer webrtc-rs would refuse only after applying it: refused here first, before
    /// anything moves.
    #[test]
    fn answers_are_read_with_webrtc_rs_own_parsers_before_they_are_applied() {
        let good = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=fingerprint:sha-256 AB:CD:EF\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n\
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=recvonly\r\n";
        let sections = media_sections(good).unwrap();
        check_answer_matches_offer(&sections, &sections, good).unwrap();
        for (bad, why) in [
            (good.replace("AB:CD:EF", ""), "empty fingerprint value"),
            (good.replace("sha-256 AB:CD:EF", "sha-1 AB:CD:EF"), "no sha-256 fingerprint"),
            (good.replace("AB:CD:EF", "AB:CD:XY"), "fingerprint not hex"),
            (good.replace("127.0.0.1 40000 typ host", "127.0.0.1"), "garbled candidate"),
            (good.replace("a=mid:0\r\n", ""), "no mid"),
            (good.replace("a=extmap:3", "a=extmap:999"), "extmap id out of range"),
            (good.replace("a=rtpmap:96 VP8/90000\r\n", ""), "a payload type without rtpmap"),
            (good.replace("a=mid:0\r\n", "a=mid:0\r\na=ice-pwd:zzzzzzzzzzzzzzzzzzzzzzzz\r\n"), "conflicting ice-pwd"),
            (good.replace("a=mid:0\r\n", "a=mid:0\r\na=fingerprint:sha-256 AB:CD:00\r\n"), "conflicting fingerprints"),
        ] {
            let err = check_lines_webrtc_rs_reads(&bad).unwrap_err();
            assert_eq!(err.code(), "INVALID_SDP", "{why}");
        }
    }
}
