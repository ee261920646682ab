//! STUN messages for the demux tests and fuzz targets: built from a structure (header fields,
//! attributes, and the lies a hostile sender can tell: a wrong message length, an attribute
//! length that does not match its value, odd padding, bytes after the end), and what the
//! single-port router must read from each, derived from that structure rather than by
//! parsing the bytes again.

#![allow(dead_code)]

use std::ops::Range;

use mediaserver_rs::sfu::mux;
use rtc::crypto::{HmacAlgorithm, Mac};

pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
pub const BINDING_REQUEST: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const PRIORITY: u16 = 0x0024;
pub const FINGERPRINT: u16 = 0x8028;
pub const MAX_USERNAME: usize = 509;

#[derive(Debug, Clone)]
pub struct Attribute {
    pub kind: u16,
    pub value: Vec<u8>,
    /// The length written in the attribute header, when it is a lie.
    pub declared: Option<u16>,
    /// Padding written after the value, when not the right number of zeros.
    pub padding: Option<Vec<u8>>,
}

impl Attribute {
    pub fn new(kind: u16, value: impl Into<Vec<u8>>) -> Self {
        Self { kind, value: value.into(), declared: None, padding: None }
    }

    fn honest(&self) -> bool {
        self.declared.is_none() && self.padding.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub kind: u16,
    pub cookie: [u8; 4],
    pub transaction: [u8; 12],
    pub attributes: Vec<Attribute>,
    /// Added to the true length in the header (0: honest).
    pub length_delta: i32,
    /// Bytes after the last attribute.
    pub trailing: Vec<u8>,
    /// Sign MESSAGE-INTEGRITY (the first one, when its value is 20 bytes) with this password.
    pub sign_with: Option<String>,
}

impl Message {
    pub fn binding_request(attributes: Vec<Attribute>) -> Self {
        Message {
            kind: BINDING_REQUEST,
            cookie: MAGIC_COOKIE,
            transaction: [7; 12],
            attributes,
            length_delta: 0,
            trailing: Vec::new(),
            sign_with: None,
        }
    }

    /// Whether the bytes are exactly what the structure says (no lie anywhere).
    pub fn honest(&self) -> bool {
        self.length_delta == 0 && self.trailing.is_empty() && self.attributes.iter().all(Attribute::honest)
    }

    /// Where each attribute starts, as written.
    pub fn offsets(&self) -> Vec<usize> {
        let mut at = 20;
        self.attributes
            .iter()
            .map(|a| {
                let here = at;
                at += 4 + a.value.len() + a.padding.as_ref().map_or((4 - a.value.len() % 4) % 4, Vec::len);
                here
            })
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut integrity_at = None;
        for a in &self.attributes {
            if a.kind == MESSAGE_INTEGRITY && integrity_at.is_none() && a.value.len() == 20 {
                integrity_at = Some(20 + body.len());
            }
            body.extend_from_slice(&a.kind.to_be_bytes());
            body.extend_from_slice(&a.declared.unwrap_or(a.value.len() as u16).to_be_bytes());
            body.extend_from_slice(&a.value);
            match &a.padding {
                Some(p) => body.extend_from_slice(p),
                None => body.resize(body.len() + (4 - a.value.len() % 4) % 4, 0),
            }
        }
        body.extend_from_slice(&self.trailing);
        let length = (body.len() as i64 + self.length_delta as i64) as u16;
        let mut packet = Vec::with_capacity(20 + body.len());
        packet.extend_from_slice(&self.kind.to_be_bytes());
        packet.extend_from_slice(&length.to_be_bytes());
        packet.extend_from_slice(&self.cookie);
        packet.extend_from_slice(&self.transaction);
        packet.extend_from_slice(&body);
        if let (Some(pwd), Some(at)) = (&self.sign_with, integrity_at) {
            sign(&mut packet, at, pwd);
        }
        packet
    }

    /// What the router must read from an honest message: the receiver's ufrag (as a byte
    /// range of the packet) and where MESSAGE-INTEGRITY starts; `None` for a message it must
    /// not route by ufrag. Only for `honest()` messages.
    pub fn expected(&self) -> Option<(Range<usize>, usize)> {
        assert!(self.honest());
        if self.kind != BINDING_REQUEST || self.cookie != MAGIC_COOKIE {
            return None;
        }
        let total: usize = self.offsets().last().map_or(20, |&o| {
            let a = self.attributes.last().unwrap();
            o + 4 + a.value.len() + (4 - a.value.len() % 4) % 4
        });
        if total - 20 > u16::MAX as usize || self.attributes.iter().any(|a| a.value.len() > u16::MAX as usize) {
            return None;
        }
        let mut ufrag = None;
        for (a, at) in self.attributes.iter().zip(self.offsets()) {
            match a.kind {
                // Before MESSAGE-INTEGRITY, the first USERNAME: `<ufrag>:<theirs>`, UTF-8.
                USERNAME if ufrag.is_none() => {
                    if a.value.len() > MAX_USERNAME {
                        return None;
                    }
                    let text = std::str::from_utf8(&a.value).ok()?;
                    let first = text.split(':').next().unwrap();
                    if first.is_empty() {
                        return None;
                    }
                    ufrag = Some(at + 4..at + 4 + first.len());
                }
                MESSAGE_INTEGRITY => {
                    if a.value.len() != 20 {
                        return None;
                    }
                    return Some((ufrag?, at));
                }
                _ => {}
            }
        }
        None
    }
}

pub fn key(pwd: &str) -> Box<dyn Mac> {
    rtc::crypto::default_provider().unwrap().crypto().new_hmac(HmacAlgorithm::Sha1, pwd.as_bytes()).unwrap()
}

/// Writes the MESSAGE-INTEGRITY at `at` (RFC 8489 section 14.5: the HMAC-SHA1 of the message
/// up to that attribute, with a header length that ends with it).
pub fn sign(packet: &mut [u8], at: usize, pwd: &str) {
    let length = ((at + 24 - 20) as u16).to_be_bytes();
    let mut tag = [0u8; 20];
    key(pwd).sign(&[&packet[..2], &length, &packet[4..at]], &mut tag).unwrap();
    packet[at + 4..at + 24].copy_from_slice(&tag);
}

/// A binding request as browsers send it: PRIORITY, USERNAME, ICE-CONTROLLING,
/// MESSAGE-INTEGRITY (signed with `pwd`), FINGERPRINT.
pub fn browser_request(username: &str, pwd: &str) -> Vec<u8> {
    let mut m = Message::binding_request(vec![
        Attribute::new(PRIORITY, [0x6e, 0x7f, 0x1e, 0xff]),
        Attribute::new(USERNAME, username.as_bytes()),
        Attribute::new(0x802A, [1, 2, 3, 4, 5, 6, 7, 8]),
        Attribute::new(MESSAGE_INTEGRITY, [0; 20]),
        Attribute::new(FINGERPRINT, [0; 4]),
    ]);
    m.sign_with = Some(pwd.to_owned());
    m.encode()
}

/// The byte range `inner` occupies inside `outer`, if it is a subslice of it.
pub fn range_in(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

// ---------------------------------------------------------------------------------------------
// What any packet must satisfy

/// The header test, stated plainly.
pub fn model_is_binding_request(packet: &[u8]) -> bool {
    packet.len() >= 20 && packet[..2] == [0, 1] && packet[4..8] == MAGIC_COOKIE
}

/// Parses `packet` and checks every guarantee the parser gives for any input; returns the
/// ufrag's byte range and where MESSAGE-INTEGRITY starts.
pub fn parse_checked(packet: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    assert_eq!(mux::is_binding_request(packet), model_is_binding_request(packet), "{packet:02x?}");
    let request = mux::parse_binding_request(packet)?;
    assert!(model_is_binding_request(packet));
    let length = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    assert_eq!(packet.len(), 20 + length, "only a datagram of the length it declares is parsed");
    // The ufrag: a non-empty substring of the packet, from a USERNAME before
    // MESSAGE-INTEGRITY, up to (without) its first ':'.
    let ufrag = range_in(packet, request.ufrag.as_bytes())
        .unwrap_or_else(|| panic!("the ufrag {:?} is not a substring of the packet {packet:02x?}", request.ufrag));
    assert!(!request.ufrag.is_empty() && !request.ufrag.contains(':'), "{:?}", request.ufrag);
    assert!(ufrag.start >= 24 && ufrag.end <= request.integrity_at, "{ufrag:?} / {}", request.integrity_at);
    let username_len = u16::from_be_bytes([packet[ufrag.start - 2], packet[ufrag.start - 1]]) as usize;
    assert_eq!(packet[ufrag.start - 4..ufrag.start - 2], USERNAME.to_be_bytes());
    assert!(username_len >= request.ufrag.len() && username_len <= MAX_USERNAME);
    if username_len > request.ufrag.len() {
        assert_eq!(packet[ufrag.end], b':');
    }
    // MESSAGE-INTEGRITY: a whole 20-byte attribute inside the packet.
    let at = request.integrity_at;
    assert!(at >= 20 && at % 4 == 0 && at + 24 <= packet.len(), "{at} / {}", packet.len());
    assert_eq!(packet[at..at + 4], [0x00, 0x08, 0x00, 20]);
    // Checking it never reads out of bounds either, with any key.
    let _ = request.authentic(packet, key("any password").as_mut());
    Some((ufrag, at))
}
