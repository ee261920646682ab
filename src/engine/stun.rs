//! Reading STUN binding requests (RFC 8489) without trusting them: what a shared socket needs
//! to route a datagram by the ICE username it names, and to check it is authentic.

use rtc::crypto::Mac;

pub(crate) const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
pub(crate) const USERNAME: u16 = 0x0006;
pub(crate) const MESSAGE_INTEGRITY: u16 = 0x0008;
/// RFC 8489 §14.3: a USERNAME is less than 509 bytes.
const MAX_USERNAME: usize = 509;

/// A well-formed STUN binding request (RFC 8489 header with the magic cookie, the length the
/// datagram has, attributes that tile it) with a USERNAME and a MESSAGE-INTEGRITY after it.
#[derive(Debug, PartialEq, Eq)]
#[doc(hidden)] pub struct BindingRequest<'a> {
    /// The first half of USERNAME: the receiver's ufrag (RFC 8445 §7.2.2).
    pub ufrag: &'a str,
    /// Where the MESSAGE-INTEGRITY attribute starts.
    pub integrity_at: usize,
}

/// Whether `packet` is a STUN binding request at all (header only), well-formed or not.
#[doc(hidden)] pub fn is_binding_request(packet: &[u8]) -> bool {
    packet.len() >= 20 && packet[4..8] == MAGIC_COOKIE && u16::from_be_bytes([packet[0], packet[1]]) == BINDING_REQUEST
}

#[doc(hidden)] pub fn parse_binding_request(packet: &[u8]) -> Option<BindingRequest<'_>> {
    if !is_binding_request(packet) {
        return None;
    }
    let length = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    if !length.is_multiple_of(4) || packet.len() != 20 + length {
        return None;
    }
    let (mut ufrag, mut integrity_at) = (None, None);
    let mut at = 20;
    while at < packet.len() {
        let header = packet.get(at..at + 4)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let value = packet.get(at + 4..at + 4 + len)?;
        // Only what comes before MESSAGE-INTEGRITY is covered by it (RFC 8489 §14.5).
        if integrity_at.is_none() {
            match kind {
                USERNAME if ufrag.is_none() => {
                    if len > MAX_USERNAME {
                        return None;
                    }
                    ufrag = Some(std::str::from_utf8(value).ok()?.split(':').next().filter(|u| !u.is_empty())?);
                }
                MESSAGE_INTEGRITY => {
                    if len != 20 {
                        return None;
                    }
                    integrity_at = Some(at);
                }
                _ => {}
            }
        }
        at += 4 + ((len + 3) & !3);
    }
    if at != packet.len() {
        return None;
    }
    Some(BindingRequest { ufrag: ufrag?, integrity_at: integrity_at? })
}

impl BindingRequest<'_> {
    /// Whether the request's MESSAGE-INTEGRITY is the HMAC-SHA1 of what precedes it, keyed with
    /// the receiver's password (short-term credentials, RFC 8489 §9.1, §14.5): the header's
    /// length then counts up to the end of MESSAGE-INTEGRITY, not the attributes after it.
    pub fn authentic(&self, packet: &[u8], key: &mut dyn Mac) -> bool {
        let at = self.integrity_at;
        let length = ((at + 24 - 20) as u16).to_be_bytes();
        key.verify(&[&packet[..2], &length, &packet[4..at]], &packet[at + 4..at + 24]).is_ok()
    }
}

