//! Generators of SDP for the property tests: offers from the SDP line grammar (well-formed or
//! not), offers every rule allows, the real offers of tests/support/sdp_corpus.rs, and
//! mutations of any of them, line by line and character by character.

#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;

use super::corpus;
use mediaserver_rs::sfu::sdp::Kind;

// ---------------------------------------------------------------------------------------------
// Offers from the line grammar

pub const NAMES: &[&str] = &[
    "opus", "OPUS", "VP8", "vp8", "VP9", "H264", "AV1", "rtx", "red", "ulpfec", "flexfec-03", "telephone-event", "CN",
    "PCMU", "G722", "H265", "",
];
pub const MIDS: &[&str] = &["0", "1", "2", "3", "a", "video0", "audio1", "é", ""];
pub const FP_HEX: &str = "7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";
pub const RIDS: &[&str] = &["h", "m", "l", "q", "f", "0", "~h", "rid=h"];

#[derive(Debug, Clone)]
pub struct CodecSpec {
    pub pt: u8,
    pub name: String,
    pub clock: u32,
    pub channels: Option<u16>,
    pub fmtp: Option<String>,
    pub fb: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SectionSpec {
    pub media: String,
    pub port: String,
    pub proto: String,
    pub codecs: Vec<CodecSpec>,
    /// Formats on the m= line without an rtpmap (static types, tokens, junk).
    pub bare_formats: Vec<String>,
    pub mid: Option<String>,
    pub direction: Option<&'static str>,
    pub bundle_only: bool,
    pub fingerprint: Option<String>,
    pub msid: Option<String>,
    pub ssrcs: Vec<(u32, String)>,
    pub ssrc_groups: Vec<(String, Vec<String>)>,
    pub rids: Vec<(String, String)>,
    pub simulcast: Option<String>,
    pub candidate: bool,
    pub extra: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OfferSpec {
    pub groups: Vec<String>,
    pub fingerprints: Vec<String>,
    pub session_direction: Option<&'static str>,
    pub session_extra: Vec<String>,
    pub sections: Vec<SectionSpec>,
    pub crlf: bool,
    /// Attribute lines of each section are rotated by this much (m= and c= stay first).
    pub rotate: usize,
}

pub fn direction() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop::sample::select(vec!["sendrecv", "sendonly", "recvonly", "inactive"]))
}

pub fn fingerprint() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(format!("sha-256 {FP_HEX}")),
        1 => Just(format!("SHA-256 {FP_HEX}")),
        1 => Just(format!("sha-1 {}", &FP_HEX[..59])),
        1 => Just(format!("sha-512 {FP_HEX}:{FP_HEX}")),
        1 => Just("sha-256 XY:ZZ".to_owned()),
        1 => Just("sha-256".to_owned()),
        1 => Just(format!("sha-256 {FP_HEX} extra")),
        1 => Just("sha-256 ".to_owned() + &FP_HEX[..FP_HEX.len() - 1]),
        1 => "[ -~]{0,20}",
    ]
}

pub fn codec() -> impl Strategy<Value = CodecSpec> {
    (
        prop_oneof![4 => 96u8..=127, 1 => 0u8..=35, 1 => any::<u8>()],
        prop::sample::select(NAMES),
        prop_oneof![Just(48_000u32), Just(90_000), Just(8_000), Just(0), any::<u32>()],
        prop::option::of(prop_oneof![Just(2u16), Just(1), any::<u16>()]),
        prop::option::of(prop_oneof![
            Just("minptime=10;useinbandfec=1".to_owned()),
            Just("apt=96".to_owned()),
            Just("profile-id=0".to_owned()),
            "[ -~]{0,16}"
        ]),
        prop::collection::vec(prop::sample::select(vec!["nack", "nack pli", "ccm fir", "transport-cc", "goog-remb", ""]), 0..3),
    )
        .prop_map(|(pt, name, clock, channels, fmtp, fb)| CodecSpec {
            pt,
            name: name.to_owned(),
            clock,
            channels,
            fmtp,
            fb: fb.into_iter().map(str::to_owned).collect(),
        })
}

pub fn ssrc() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 1u32..=6, 1 => any::<u32>(), 1 => Just(u32::MAX)]
}

pub fn ssrc_token() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => ssrc().prop_map(|s| s.to_string()),
        1 => Just("4294967296".to_owned()),
        1 => Just("-1".to_owned()),
        1 => Just("x".to_owned()),
        1 => Just(String::new()),
    ]
}

/// Attribute lines of any kind the readers look at, well-formed or not.
pub fn grammar_line() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::select(vec!["audio", "video", "application", "text", ""]), any::<u16>(), prop::collection::vec(0u8..=130, 0..4))
            .prop_map(|(m, port, pts)| format!(
                "m={m} {port} UDP/TLS/RTP/SAVPF {}",
                pts.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")
            )),
        prop::sample::select(vec![
            "m=", "m=video", "m=video x UDP 96", "m=audio 70000 RTP/AVP 0", "m=audio 9/2 RTP/AVP 0", "m=video 9",
            "a=rtpmap:", "a=rtpmap:x VP8/90000", "a=rtpmap:96", "a=rtpmap:300 VP8/90000", "a=fmtp:", "a=fmtp:96",
            "a=rtcp-fb:", "a=rtcp-fb:256 nack", "a=mid:", "a=group:BUNDLE", "a=group:bundle 0 1", "a=group:LS 0 1",
            "a=ssrc-group:SIM", "a=ssrc-group:SIM 1 x", "a=ssrc-group:FID 1", "a=ssrc:", "a=ssrc:x cname:y",
            "a=ssrc:4294967296 cname:y", "a=simulcast:", "a=simulcast:send", "a=simulcast:recv h send", "a=rid:",
            "a=rid:h", "a=bundle-only", "a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive", "v=0", "a=fingerprint:",
            "a=msid:", "a=candidate:", "c=IN IP4 0.0.0.0", "a=", "=", "\u{0}", "a=mid:\u{202e}",
        ])
        .prop_map(str::to_owned),
        (0u8..=130, prop::sample::select(NAMES), any::<u32>()).prop_map(|(pt, n, c)| format!("a=rtpmap:{pt} {n}/{c}")),
        (0u8..=130, "[ -~]{0,12}").prop_map(|(pt, v)| format!("a=fmtp:{pt} {v}")),
        prop::sample::select(MIDS).prop_map(|m| format!("a=mid:{m}")),
        prop::collection::vec(prop::sample::select(MIDS), 0..4).prop_map(|m| format!("a=group:BUNDLE {}", m.join(" "))),
        fingerprint().prop_map(|f| format!("a=fingerprint:{f}")),
        (ssrc_token(), "[a-z:]{0,8}").prop_map(|(s, a)| format!("a=ssrc:{s} {a}")),
        (prop::sample::select(vec!["SIM", "FID", "FEC-FR", "sim"]), prop::collection::vec(ssrc_token(), 0..4))
            .prop_map(|(g, s)| format!("a=ssrc-group:{g} {}", s.join(" "))),
        (prop::sample::select(RIDS), prop::sample::select(vec!["send", "recv", "SEND", "x"])).prop_map(|(r, d)| format!("a=rid:{r} {d}")),
        simulcast().prop_map(|s| format!("a=simulcast:{s}")),
        "a=[a-z-]{1,10}:[ -~]{0,20}",
        "[ -~]{0,30}",
        any::<String>(),
    ]
}

pub fn simulcast() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["send", "recv", "SEND", "x", ""]),
        prop::collection::vec(prop::sample::select(RIDS), 0..4),
        prop::sample::select(vec![";", ",", " "]),
        prop::option::of(Just(" recv l")),
    )
        .prop_map(|(dir, rids, sep, tail)| format!("{dir} {}{}", rids.join(sep), tail.unwrap_or("")))
}

pub fn section() -> impl Strategy<Value = SectionSpec> {
    let head = (
        prop_oneof![4 => Just("audio"), 4 => Just("video"), 1 => Just("application"), 1 => Just("text")],
        prop_oneof![4 => Just("9".to_owned()), 2 => Just("0".to_owned()), 1 => any::<u16>().prop_map(|p| p.to_string()), 1 => Just("9/2".to_owned())],
        prop_oneof![Just("UDP/TLS/RTP/SAVPF"), Just("RTP/AVP"), Just("UDP/DTLS/SCTP")],
        prop::collection::vec(codec(), 0..5),
        prop::collection::vec(prop_oneof![Just("0".to_owned()), Just("webrtc-datachannel".to_owned()), Just("300".to_owned())], 0..2),
        prop::option::of(prop::sample::select(MIDS).prop_map(str::to_owned)),
        direction(),
        prop::bool::weighted(0.2),
    );
    let attributes = (
        prop::option::of(fingerprint()),
        prop::option::of(prop::sample::select(vec!["s v", "s", "- t", ""]).prop_map(str::to_owned)),
        prop::collection::vec((ssrc(), prop::sample::select(vec!["cname:x", "msid:s t", ""]).prop_map(str::to_owned)), 0..4),
        prop::collection::vec(
            (prop::sample::select(vec!["SIM", "FID", "FEC-FR"]).prop_map(str::to_owned), prop::collection::vec(ssrc_token(), 0..4)),
            0..3,
        ),
        prop::collection::vec(
            (prop::sample::select(RIDS).prop_map(str::to_owned), prop::sample::select(vec!["send", "recv", "SEND"]).prop_map(str::to_owned)),
            0..4,
        ),
        prop::option::of(simulcast()),
        any::<bool>(),
        prop::collection::vec(grammar_line(), 0..2),
    );
    (head, attributes).prop_map(
        |(
            (media, port, proto, codecs, bare_formats, mid, direction, bundle_only),
            (fingerprint, msid, ssrcs, ssrc_groups, rids, simulcast, candidate, extra),
        )| SectionSpec {
            media: media.to_owned(),
            port,
            proto: proto.to_owned(),
            codecs,
            bare_formats,
            mid,
            direction,
            bundle_only,
            fingerprint,
            msid,
            ssrcs,
            ssrc_groups,
            rids,
            simulcast,
            candidate,
            extra,
        },
    )
}

pub fn offer_spec() -> impl Strategy<Value = OfferSpec> {
    (
        prop::collection::vec(
            prop_oneof![
                4 => prop::collection::vec(prop::sample::select(MIDS), 0..5).prop_map(|m| format!("BUNDLE {}", m.join(" "))),
                1 => Just("LS 0 1".to_owned()),
                1 => Just("bundle 0 1".to_owned()),
            ],
            0..3,
        ),
        prop::collection::vec(fingerprint(), 0..3),
        direction(),
        prop::collection::vec(grammar_line(), 0..2),
        prop::collection::vec(section(), 0..5),
        any::<bool>(),
        0usize..8,
    )
        .prop_map(|(groups, fingerprints, session_direction, session_extra, sections, crlf, rotate)| OfferSpec {
            groups,
            fingerprints,
            session_direction,
            session_extra,
            sections,
            crlf,
            rotate,
        })
}

pub fn render(spec: &OfferSpec) -> String {
    let mut lines: Vec<String> = vec!["v=0".into(), "o=- 1 2 IN IP4 127.0.0.1".into(), "s=-".into(), "t=0 0".into()];
    lines.extend(spec.groups.iter().map(|g| format!("a=group:{g}")));
    lines.extend(spec.fingerprints.iter().map(|f| format!("a=fingerprint:{f}")));
    lines.extend(spec.session_direction.map(|d| format!("a={d}")));
    lines.extend(spec.session_extra.iter().cloned());
    for s in &spec.sections {
        let formats: Vec<String> = s.codecs.iter().map(|c| c.pt.to_string()).chain(s.bare_formats.iter().cloned()).collect();
        lines.push(format!("m={} {} {} {}", s.media, s.port, s.proto, formats.join(" ")).trim_end().to_owned());
        lines.push("c=IN IP4 0.0.0.0".into());
        let mut attrs: Vec<String> = Vec::new();
        attrs.extend(s.mid.as_ref().map(|m| format!("a=mid:{m}")));
        attrs.extend(s.direction.map(|d| format!("a={d}")));
        if s.bundle_only {
            attrs.push("a=bundle-only".into());
        }
        attrs.extend(s.fingerprint.as_ref().map(|f| format!("a=fingerprint:{f}")));
        attrs.extend(s.msid.as_ref().map(|m| format!("a=msid:{m}")));
        for c in &s.codecs {
            let channels = c.channels.map(|n| format!("/{n}")).unwrap_or_default();
            attrs.push(format!("a=rtpmap:{} {}/{}{channels}", c.pt, c.name, c.clock));
            attrs.extend(c.fmtp.as_ref().map(|f| format!("a=fmtp:{} {f}", c.pt)));
            attrs.extend(c.fb.iter().map(|f| format!("a=rtcp-fb:{} {f}", c.pt)));
        }
        attrs.extend(s.ssrc_groups.iter().map(|(g, m)| format!("a=ssrc-group:{g} {}", m.join(" "))));
        attrs.extend(s.ssrcs.iter().map(|(id, a)| format!("a=ssrc:{id} {a}")));
        attrs.extend(s.rids.iter().map(|(r, d)| format!("a=rid:{r} {d}")));
        attrs.extend(s.simulcast.as_ref().map(|v| format!("a=simulcast:{v}")));
        if s.candidate {
            attrs.push("a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".into());
        }
        attrs.extend(s.extra.iter().cloned());
        if !attrs.is_empty() {
            let by = spec.rotate % attrs.len();
            attrs.rotate_left(by);
        }
        lines.extend(attrs);
    }
    let eol = if spec.crlf { "\r\n" } else { "\n" };
    let mut text = lines.join(eol);
    text.push_str(eol);
    text
}

// ---------------------------------------------------------------------------------------------
// Valid offers: what the server must accept

#[derive(Debug, Clone)]
pub struct ValidOffer {
    pub text: String,
    pub sends: (bool, bool),
}

/// Offers every rule allows: unique mids, one BUNDLE group with every section that sends, a
/// session sha-256 fingerprint, at most one sending section per kind with a codec we forward
/// and an SSRC of its own, plus any number of non-sending or rejected sections in any order.
pub fn valid_offer() -> impl Strategy<Value = ValidOffer> {
    let sender_codecs = |kind: Kind| {
        let names: Vec<&str> = match kind {
            Kind::Audio => vec!["opus", "OPUS"],
            Kind::Video => vec!["VP8", "VP9", "H264", "AV1"],
        };
        let clock = if kind == Kind::Audio { 48_000 } else { 90_000 };
        (prop::sample::select(names), prop::bool::ANY).prop_map(move |(name, rtx)| (name, clock, rtx))
    };
    (
        prop::option::of(sender_codecs(Kind::Audio)),
        prop::option::of(sender_codecs(Kind::Video)),
        // Extra sections: kind (audio, video, application), recvonly / inactive / port 0.
        prop::collection::vec((0u8..3, 0u8..3, prop::sample::select(NAMES)), 0..3),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(audio, video, extras, order_seed, crlf, fingerprint_in_media)| {
            // Something is sent: audio, when the draw had neither (no filter, so that long runs
            // do not run out of rejects).
            let audio = if audio.is_none() && video.is_none() { Some(("opus", 48_000, false)) } else { audio };
            let mut sections: Vec<(String, bool)> = Vec::new(); // (block without mid, in bundle)
            let mut ssrc = 1000u32;
            let mut sender = |kind: &str, (name, clock, rtx): (&str, u32, bool)| {
                ssrc += 1;
                let channels = if kind == "audio" { "/2" } else { "" };
                let mut block = format!("m={kind} 9 UDP/TLS/RTP/SAVPF 100{}\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\n", if rtx { " 101" } else { "" });
                block += &format!("a=rtpmap:100 {name}/{clock}{channels}\r\na=rtcp-fb:100 nack\r\n");
                if rtx {
                    block += &format!("a=rtpmap:101 rtx/{clock}\r\na=fmtp:101 apt=100\r\na=ssrc-group:FID {ssrc} {}\r\na=ssrc:{} cname:x\r\n", ssrc + 500, ssrc + 500);
                }
                block += &format!("a=ssrc:{ssrc} cname:x\r\na=ssrc:{ssrc} msid:s t\r\n");
                (block, true)
            };
            if let Some(a) = audio {
                sections.push(sender("audio", a));
            }
            if let Some(v) = video {
                sections.push(sender("video", v));
            }
            for (kind, how, name) in extras {
                let kind = ["audio", "video", "application"][kind as usize];
                let (port, direction) = match how {
                    0 => ("9", "recvonly"),
                    1 => ("9", "inactive"),
                    _ => ("0", "sendonly"),
                };
                let block = if kind == "application" {
                    format!("m=application {port} UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=sctp-port:5000\r\n")
                } else {
                    format!("m={kind} {port} UDP/TLS/RTP/SAVPF 110\r\nc=IN IP4 0.0.0.0\r\na={direction}\r\na=rtpmap:110 {name}/90000\r\n")
                };
                sections.push((block, port != "0"));
            }
            // A random order of the sections.
            let mut seed = order_seed;
            for i in (1..sections.len()).rev() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                sections.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let bundled: Vec<String> = sections.iter().enumerate().filter(|(_, (_, b))| *b).map(|(i, _)| i.to_string()).collect();
            let mut text = format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n", bundled.join(" "));
            if !fingerprint_in_media {
                text += &format!("a=fingerprint:sha-256 {FP_HEX}\r\n");
            }
            let first_bundled = sections.iter().position(|(_, b)| *b);
            for (i, (block, _)) in sections.iter().enumerate() {
                let (m_line, rest) = block.split_once("\r\n").unwrap();
                text += &format!("{m_line}\r\na=mid:{i}\r\n");
                if fingerprint_in_media && Some(i) == first_bundled {
                    text += &format!("a=fingerprint:sha-256 {FP_HEX}\r\n");
                }
                text += rest;
            }
            if !crlf {
                text = text.replace("\r\n", "\n");
            }
            ValidOffer { text, sends: (audio.is_some(), video.is_some()) }
        })
}

// ---------------------------------------------------------------------------------------------
// Mutations

#[derive(Debug, Clone)]
pub enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    InsertLine(Index, String),
    ReplaceLine(Index, String),
    /// Replaces the n-th run of digits with another number.
    ReplaceNumber(Index, String),
    /// Replaces the n-th token (split at spaces, ':' and '/') of a line.
    ReplaceToken(Index, Index, String),
    InsertChar(Index, char),
    DeleteChar(Index),
    Truncate(Index),
    StripCarriageReturns,
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let number = prop_oneof![
        any::<u8>().prop_map(|n| n.to_string()),
        any::<u16>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        Just("4294967296".to_owned()),
        Just("65536".to_owned()),
        Just("-1".to_owned()),
        Just(String::new()),
        Just("0".to_owned()),
        Just("99999999999999999999999".to_owned()),
    ];
    let token = prop_oneof![
        3 => "[ -~]{0,8}",
        1 => prop::sample::select(vec!["sendonly", "BUNDLE", "sha-256", "opus", "VP8", "SIM", "send", "~", "", " ", "\r", "\t"])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        2 => (any::<Index>(), grammar_line()).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        1 => (any::<Index>(), grammar_line()).prop_map(|(i, l)| Mutation::ReplaceLine(i, l)),
        2 => (any::<Index>(), number).prop_map(|(i, n)| Mutation::ReplaceNumber(i, n)),
        2 => (any::<Index>(), any::<Index>(), token).prop_map(|(l, t, s)| Mutation::ReplaceToken(l, t, s)),
        1 => (any::<Index>(), prop_oneof![Just('\n'), Just('\r'), Just(' '), Just(':'), Just('/'), Just('\0'), any::<char>()])
            .prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        1 => any::<Index>().prop_map(Mutation::DeleteChar),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => Just(Mutation::StripCarriageReturns),
    ]
}

/// The char boundaries of `text`, end included.
pub fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices().map(|(i, _)| i).chain([text.len()]).collect()
}

pub fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let join = |lines: Vec<String>| lines.join("\n");
    match mutation {
        Mutation::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
            join(lines)
        }
        Mutation::DuplicateLine(i) => {
            let at = i.index(lines.len());
            lines.insert(at, lines[at].clone());
            join(lines)
        }
        Mutation::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            join(lines)
        }
        Mutation::InsertLine(i, line) => {
            let at = i.index(lines.len() + 1);
            lines.insert(at, format!("{line}\r"));
            join(lines)
        }
        Mutation::ReplaceLine(i, line) => {
            let at = i.index(lines.len());
            lines[at] = format!("{line}\r");
            join(lines)
        }
        Mutation::ReplaceNumber(i, n) => {
            let bytes = text.as_bytes();
            let runs: Vec<(usize, usize)> = {
                let mut runs = Vec::new();
                let mut at = 0;
                while at < bytes.len() {
                    if bytes[at].is_ascii_digit() {
                        let start = at;
                        while at < bytes.len() && bytes[at].is_ascii_digit() {
                            at += 1;
                        }
                        runs.push((start, at));
                    } else {
                        at += 1;
                    }
                }
                runs
            };
            if runs.is_empty() {
                return text.to_owned();
            }
            let (start, end) = runs[i.index(runs.len())];
            format!("{}{n}{}", &text[..start], &text[end..])
        }
        Mutation::ReplaceToken(l, t, s) => {
            let at = l.index(lines.len());
            let line = lines[at].clone();
            let mut cuts = vec![0];
            cuts.extend(line.char_indices().filter(|(_, c)| matches!(c, ' ' | ':' | '/' | '=')).flat_map(|(i, _)| [i, i + 1]));
            cuts.push(line.len());
            let tokens: Vec<(usize, usize)> = cuts.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0], c[1])).collect();
            let (start, end) = tokens[t.index(tokens.len())];
            lines[at] = format!("{}{s}{}", &line[..start], &line[end..]);
            join(lines)
        }
        Mutation::InsertChar(i, c) => {
            let b = boundaries(text);
            let at = b[i.index(b.len())];
            format!("{}{c}{}", &text[..at], &text[at..])
        }
        Mutation::DeleteChar(i) => {
            let b = boundaries(text);
            if b.len() < 2 {
                return text.to_owned();
            }
            let k = i.index(b.len() - 1);
            format!("{}{}", &text[..b[k]], &text[b[k + 1]..])
        }
        Mutation::Truncate(i) => {
            let b = boundaries(text);
            text[..b[i.index(b.len())]].to_owned()
        }
        Mutation::StripCarriageReturns => text.replace('\r', ""),
    }
}

pub fn real_offer() -> impl Strategy<Value = (&'static str, &'static str, (bool, bool))> {
    prop::sample::select(corpus::OFFERS.to_vec())
}
