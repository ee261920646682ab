//! Any datagram at the single UDP port: the binding-request reader returns a ufrag that is a
//! substring of the packet and reads nothing out of bounds (tests/support/stun.rs's
//! `parse_checked`), and the router sends it only where it may. The first byte chooses the
//! input: the raw bytes, or a STUN message built from them (honest, then read exactly as its
//! structure says, or lying about lengths and padding), signed with a connection's password.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use mediaserver_rs::sfu::mux::{self, Routes};
use tokio::sync::mpsc;

#[path = "../../tests/support/stun.rs"]
mod stun;

use stun::{parse_checked, Attribute, Message};

const PASSWORDS: [&str; 2] = ["password-of-connection-one-0123", "password-of-connection-two-4567"];
const UFRAGS: [&str; 2] = ["ufragA", "ufragB"];

/// A message from the bytes: header choices, then attributes (kind, length, value).
fn message(bytes: &[u8], lie: bool) -> Message {
    let mut it = bytes.iter().copied();
    let mut next = || it.next().unwrap_or(0);
    let choice = next();
    let mut m = Message::binding_request(Vec::new());
    if choice & 0x80 != 0 {
        m.kind = u16::from_be_bytes([next(), next()]);
    }
    if choice & 0x40 != 0 {
        m.cookie = [next(), next(), next(), next()];
    }
    for i in 0..(next() % 8) {
        let kind = match next() % 6 {
            0 | 1 => stun::USERNAME,
            2 | 3 => stun::MESSAGE_INTEGRITY,
            4 => stun::FINGERPRINT,
            _ => u16::from_be_bytes([next(), next()]),
        };
        let value: Vec<u8> = match kind {
            stun::USERNAME if next() & 1 == 0 => {
                let ufrag = UFRAGS[next() as usize % 2];
                format!("{ufrag}:peer{i}").into_bytes()
            }
            stun::MESSAGE_INTEGRITY if next() & 3 != 0 => vec![0; 20],
            _ => {
                let n = next() as usize % 40;
                (0..n).map(|_| next()).collect()
            }
        };
        let mut a = Attribute::new(kind, value);
        if lie && next() & 3 == 0 {
            a.declared = Some(u16::from_be_bytes([next(), next()]));
        }
        if lie && next() & 7 == 0 {
            let n = next() as usize % 6;
            a.padding = Some((0..n).map(|_| next()).collect());
        }
        m.attributes.push(a);
    }
    if lie {
        m.length_delta = next() as i8 as i32;
        if next() & 3 == 0 {
            m.trailing = (0..next() % 8).map(|_| next()).collect();
        }
    }
    m.sign_with = Some(PASSWORDS[choice as usize & 1].to_owned());
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (packet, built) = match mode % 3 {
        0 => (rest.to_vec(), None),
        n => {
            let m = message(rest, n == 2);
            (m.encode(), Some(m))
        }
    };
    let parsed = parse_checked(&packet);
    if let Some(m) = &built {
        if m.honest() {
            assert_eq!(parsed, m.expected(), "{m:?}");
        }
    }

    // Routing, on a router that knows two connections.
    let mut routes = Routes::new(8, 16);
    let mut inboxes = Vec::new();
    for (i, (ufrag, pwd)) in UFRAGS.iter().zip(PASSWORDS).enumerate() {
        let (queue, inbox) = mpsc::channel(1);
        inboxes.push(inbox);
        routes.register(i as u64 + 1, (*ufrag).to_owned(), stun::key(pwd), queue);
    }
    let from = SocketAddr::from(([192, 0, 2, 1], 5000));
    let routed = routes.route(from, &packet);
    let authentic_for = parsed.as_ref().and_then(|_| {
        let request = mux::parse_binding_request(&packet)?;
        let i = UFRAGS.iter().position(|u| *u == request.ufrag)?;
        request.authentic(&packet, stun::key(PASSWORDS[i]).as_mut()).then_some(i as u64 + 1)
    });
    // Only an authentic binding request reaches a connection from an unknown address, and it
    // teaches the router that address.
    assert_eq!(routed, authentic_for, "{packet:02x?}");
    let media = routes.route(from, &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(media, authentic_for);
});
