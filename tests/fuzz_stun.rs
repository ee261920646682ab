//! Property tests of the single-port demux (`mux::is_binding_request`,
//! `parse_binding_request`, `BindingRequest::authentic`, `Routes`): what any UDP sender can
//! put in a datagram. The USERNAME reader returns a substring of the packet and reads nothing
//! out of bounds; honest binding requests are read as their structure says; a request whose
//! covered bytes were changed is not authentic; and the routing tables route every datagram
//! as a small reference model of the module's rules does, over random sequences of
//! registrations, binding requests (right and wrong passwords, unknown ufrags, malformed) and
//! media from a handful of addresses.
//!
//! `cargo test --test fuzz_stun` runs a bounded number of cases; `PROPTEST_CASES=200000
//! cargo test --release --test fuzz_stun` runs a long session.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use mediaserver_rs::sfu::mux::{self, Routes};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio::sync::mpsc;

#[path = "support/config.rs"]
mod config;
#[path = "support/stun.rs"]
mod stun;

use stun::{model_is_binding_request, parse_checked, Attribute, Message, MAGIC_COOKIE, MESSAGE_INTEGRITY, USERNAME};

// ---------------------------------------------------------------------------------------------
// Generators

fn username_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => ("[a-zA-Z0-9+/]{0,16}", prop::option::of("[a-zA-Z0-9+/]{0,8}"))
            .prop_map(|(ours, theirs)| match theirs {
                Some(t) => format!("{ours}:{t}").into_bytes(),
                None => ours.into_bytes(),
            }),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => (505usize..515).prop_map(|n| vec![b'u'; n]),
        1 => prop::sample::select(vec![&b":x"[..], b"", b":", b"u1:", b"u1", b"\xff\xfe:x", b"\xc3(x:y"]).prop_map(<[u8]>::to_vec),
    ]
}

fn attribute() -> impl Strategy<Value = Attribute> {
    let kind = prop_oneof![
        3 => Just(USERNAME),
        3 => Just(MESSAGE_INTEGRITY),
        1 => Just(stun::PRIORITY),
        1 => Just(stun::FINGERPRINT),
        1 => Just(0x802A_u16),
        1 => any::<u16>(),
    ];
    (kind, any::<u8>()).prop_flat_map(|(kind, n)| {
        let value = match kind {
            USERNAME => username_value().boxed(),
            MESSAGE_INTEGRITY => prop_oneof![4 => Just(vec![0u8; 20]), 1 => prop::collection::vec(any::<u8>(), 0..32)].boxed(),
            _ => prop::collection::vec(any::<u8>(), 0..=(n as usize % 12)).boxed(),
        };
        (Just(kind), value).prop_map(|(kind, value)| Attribute::new(kind, value))
    })
}

/// Header fields and attributes: mostly binding requests with the cookie, sometimes not.
fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![8 => Just(stun::BINDING_REQUEST), 1 => Just(0x0101u16), 1 => Just(0x0011u16), 1 => any::<u16>()],
        prop_oneof![8 => Just(MAGIC_COOKIE), 1 => any::<[u8; 4]>()],
        any::<[u8; 12]>(),
        prop_oneof![
            prop::collection::vec(attribute(), 0..7),
            // Shaped like a client's request: ..., USERNAME, ..., MESSAGE-INTEGRITY, ...
            (
                prop::collection::vec(attribute(), 0..3),
                username_value(),
                prop::collection::vec(attribute(), 0..3),
                prop::collection::vec(attribute(), 0..3),
            )
                .prop_map(|(mut before, username, between, after)| {
                    before.push(Attribute::new(USERNAME, username));
                    before.extend(between);
                    before.push(Attribute::new(MESSAGE_INTEGRITY, [0; 20]));
                    before.extend(after);
                    before
                }),
        ],
    )
        .prop_map(|(kind, cookie, transaction, attributes)| Message {
            kind,
            cookie,
            transaction,
            attributes,
            length_delta: 0,
            trailing: Vec::new(),
            sign_with: None,
        })
}

/// The lies a sender can tell about lengths and padding.
#[derive(Debug, Clone)]
enum Lie {
    Length(i32),
    Declared(Index, u16),
    Padding(Index, Vec<u8>),
    Trailing(Vec<u8>),
}

fn lie() -> impl Strategy<Value = Lie> {
    prop_oneof![
        prop_oneof![-8i32..=8, any::<u16>().prop_map(i32::from)].prop_map(Lie::Length),
        (any::<Index>(), prop_oneof![0u16..40, Just(509), Just(510), Just(u16::MAX), any::<u16>()]).prop_map(|(i, d)| Lie::Declared(i, d)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 0..7)).prop_map(|(i, p)| Lie::Padding(i, p)),
        prop::collection::vec(any::<u8>(), 1..9).prop_map(Lie::Trailing),
    ]
}

fn tell(message: &mut Message, lie: &Lie) {
    match lie {
        Lie::Length(d) => message.length_delta = *d,
        Lie::Declared(i, d) if !message.attributes.is_empty() => {
            let n = message.attributes.len();
            message.attributes[i.index(n)].declared = Some(*d);
        }
        Lie::Padding(i, p) if !message.attributes.is_empty() => {
            let n = message.attributes.len();
            message.attributes[i.index(n)].padding = Some(p.clone());
        }
        Lie::Trailing(t) => message.trailing = t.clone(),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The routing model

const ADDRESSES: usize = 6;
const CONNECTIONS: u64 = 4;
const UFRAGS: [&str; 4] = ["ufragA", "ufragB", "ufragC", "ufragD"];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i as u8 + 1], 40_000 + i as u16))
}

fn password(connection: u64) -> String {
    format!("password-of-connection-{connection}-0123456789")
}

#[derive(Debug, Clone)]
enum Datagram {
    /// A binding request to `ufrag`, signed with the password of `signer` (or a wrong one).
    Check { ufrag: usize, signer: Option<u64>, tamper: Option<Index> },
    Rtp,
    Dtls,
    /// STUN that is not a binding request (a response, an indication).
    OtherStun,
    /// A binding request header with a body that does not parse.
    Malformed(Vec<u8>),
    /// Outside RFC 7983's ranges.
    Junk(u8),
    Empty,
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Event {
    Register { connection: u64, ufrag: usize },
    Unregister { connection: u64 },
    Receive { from: usize, datagram: Datagram },
}

fn datagram() -> impl Strategy<Value = Datagram> {
    prop_oneof![
        6 => (0..UFRAGS.len() + 1, prop_oneof![4 => (1..=CONNECTIONS).prop_map(Some), 1 => Just(None)], prop::option::weighted(0.1, any::<Index>()))
            .prop_map(|(ufrag, signer, tamper)| Datagram::Check { ufrag, signer, tamper }),
        3 => Just(Datagram::Rtp),
        2 => Just(Datagram::Dtls),
        1 => Just(Datagram::OtherStun),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Datagram::Malformed),
        1 => prop_oneof![64u8..128, 192u8..=255].prop_map(Datagram::Junk),
        1 => Just(Datagram::Empty),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Datagram::Bytes),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (1..=CONNECTIONS, 0..UFRAGS.len()).prop_map(|(connection, ufrag)| Event::Register { connection, ufrag }),
        1 => (1..=CONNECTIONS).prop_map(|connection| Event::Unregister { connection }),
        12 => (0..ADDRESSES, datagram()).prop_map(|(from, datagram)| Event::Receive { from, datagram }),
    ]
}

fn bytes_of(datagram: &Datagram) -> Vec<u8> {
    match datagram {
        Datagram::Check { ufrag, signer, tamper } => {
            let ufrag = UFRAGS.get(*ufrag).copied().unwrap_or("nosuchufrag");
            let pwd = signer.map_or_else(|| "not the password".to_owned(), password);
            let mut packet = stun::browser_request(&format!("{ufrag}:remote"), &pwd);
            if let Some(at) = tamper {
                // One byte the integrity covers: the transaction id or the attributes before it.
                let i = 8 + at.index(packet.len() - 8 - 32);
                packet[i] ^= 0x01;
            }
            packet
        }
        Datagram::Rtp => vec![0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        Datagram::Dtls => vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        Datagram::OtherStun => {
            let mut m = Message::binding_request(vec![Attribute::new(0x0020, [0, 1, 2, 3, 4, 5, 6, 7])]);
            m.kind = 0x0101;
            m.encode()
        }
        Datagram::Malformed(body) => {
            let mut packet = vec![0x00, 0x01, 0, 0];
            packet.extend_from_slice(&MAGIC_COOKIE);
            packet.extend_from_slice(&[9; 12]);
            packet.extend_from_slice(body);
            packet
        }
        Datagram::Junk(first) => vec![*first, 1, 2, 3, 4, 5, 6, 7],
        Datagram::Empty => Vec::new(),
        Datagram::Bytes(b) => b.clone(),
    }
}

struct ModelConnection {
    ufrag: String,
    pwd: String,
    /// Oldest first.
    addresses: VecDeque<SocketAddr>,
}

/// The module's rules, written plainly: a binding request authentic for the connection its
/// USERNAME names goes to it and makes the source address its newest one; other STUN, DTLS and
/// RTP go to the connection of their source address; the rest is dropped. At most
/// `per_connection` addresses per connection and `total` in all, the least recently learned
/// forgotten first.
struct Model {
    per_connection: usize,
    total: usize,
    connections: HashMap<u64, ModelConnection>,
    by_ufrag: HashMap<String, u64>,
    /// Address to (connection, when learned).
    by_address: HashMap<SocketAddr, (u64, u64)>,
    clock: u64,
}

impl Model {
    fn register(&mut self, connection: u64, ufrag: String) {
        self.by_ufrag.insert(ufrag.clone(), connection);
        let addresses = self.connections.remove(&connection).map(|c| c.addresses).unwrap_or_default();
        self.connections.insert(connection, ModelConnection { ufrag, pwd: password(connection), addresses });
    }

    fn unregister(&mut self, connection: u64) {
        let Some(gone) = self.connections.remove(&connection) else { return };
        for a in gone.addresses {
            if self.by_address.get(&a).is_some_and(|(c, _)| *c == connection) {
                self.by_address.remove(&a);
            }
        }
        if self.by_ufrag.get(&gone.ufrag) == Some(&connection) {
            self.by_ufrag.remove(&gone.ufrag);
        }
    }

    fn forget(&mut self, address: SocketAddr) {
        if let Some((c, _)) = self.by_address.remove(&address) {
            if let Some(c) = self.connections.get_mut(&c) {
                c.addresses.retain(|a| *a != address);
            }
        }
    }

    fn learn(&mut self, connection: u64, from: SocketAddr) {
        self.forget(from);
        self.clock += 1;
        self.by_address.insert(from, (connection, self.clock));
        let c = self.connections.get_mut(&connection).unwrap();
        c.addresses.push_back(from);
        if c.addresses.len() > self.per_connection {
            let oldest = c.addresses[0];
            self.forget(oldest);
        }
        while self.by_address.len() > self.total {
            let (&oldest, _) = self.by_address.iter().min_by_key(|(_, (_, when))| *when).unwrap();
            self.forget(oldest);
        }
    }

    fn route(&mut self, from: SocketAddr, packet: &[u8], datagram: &Datagram) -> Option<u64> {
        let first = *packet.first()?;
        if first <= 3 && model_is_binding_request(packet) {
            let Datagram::Check { ufrag, signer, tamper } = datagram else {
                // A binding request header that does not parse (or is not a browser's
                // request at all) is no STUN to route: dropped, whatever its source.
                return mux::parse_binding_request(packet).and_then(|r| {
                    let connection = *self.by_ufrag.get(r.ufrag)?;
                    let pwd = self.connections.get(&connection)?.pwd.clone();
                    r.authentic(packet, stun::key(&pwd).as_mut()).then(|| {
                        self.learn(connection, from);
                        connection
                    })
                });
            };
            let connection = *self.by_ufrag.get(*UFRAGS.get(*ufrag)?)?;
            let authentic = *signer == Some(connection) && tamper.is_none() && self.connections.contains_key(&connection);
            if !authentic {
                return None;
            }
            self.learn(connection, from);
            return Some(connection);
        }
        match first {
            0..=3 | 20..=63 | 128..=191 => self.by_address.get(&from).map(|(c, _)| *c),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn a_browsers_request_is_read_and_authentic() {
    let packet = stun::browser_request("serverUfrag:clientUfrag", "pwd-0123456789");
    let request = mux::parse_binding_request(&packet).unwrap();
    assert_eq!(request.ufrag, "serverUfrag");
    assert!(request.authentic(&packet, stun::key("pwd-0123456789").as_mut()));
    assert!(!request.authentic(&packet, stun::key("pwd-0123456788").as_mut()));
    assert_eq!(parse_checked(&packet).unwrap().0, 32..43);
}

proptest! {
    #![proptest_config(config::cases(3000))]

    /// Any bytes at all.
    #[test]
    fn any_bytes_are_read_within_bounds(packet in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        // A binding request header and any body.
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..96)).prop_map(|(len, body)| {
            let mut p = vec![0, 1];
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&MAGIC_COOKIE);
            p.extend_from_slice(&[0; 12]);
            p.extend_from_slice(&body);
            p
        }),
    ]) {
        parse_checked(&packet);
    }

    /// Honest messages are read exactly as their structure says.
    #[test]
    fn honest_messages_are_read_as_built(message in message()) {
        let packet = message.encode();
        let parsed = parse_checked(&packet);
        prop_assert_eq!(parsed, message.expected(), "{:?}", message);
    }

    /// Messages that lie about lengths or padding: read within bounds, or dropped.
    #[test]
    fn lying_messages_are_read_within_bounds(mut message in message(), lies in prop::collection::vec(lie(), 1..3)) {
        for l in &lies {
            tell(&mut message, l);
        }
        let packet = message.encode();
        let parsed = parse_checked(&packet);
        // Truncated anywhere: never a read past the end.
        for end in 0..packet.len() {
            parse_checked(&packet[..end]);
        }
        if message.honest() {
            prop_assert_eq!(parsed, message.expected());
        }
    }

    /// MESSAGE-INTEGRITY covers the header (but its length), the transaction id and every
    /// attribute before it: a request changed there is not authentic; after it, still is.
    #[test]
    fn integrity_covers_what_precedes_it(
        ours in "[a-zA-Z0-9+/]{1,16}",
        pwd in "[ -~]{1,32}",
        flip in any::<Index>(),
        bit in 0u8..8,
    ) {
        let packet = stun::browser_request(&format!("{ours}:theirs"), &pwd);
        let (_, at) = parse_checked(&packet).unwrap();
        let request = mux::parse_binding_request(&packet).unwrap();
        prop_assert!(request.authentic(&packet, stun::key(&pwd).as_mut()));
        let wrong = format!("{}x", pwd);
        prop_assert!(!request.authentic(&packet, stun::key(&wrong).as_mut()));

        let mut changed = packet.clone();
        let i = flip.index(packet.len());
        changed[i] ^= 1 << bit;
        if let Some(request) = mux::parse_binding_request(&changed) {
            let authentic = request.authentic(&changed, stun::key(&pwd).as_mut());
            let covered = i < 2 || (4..at + 24).contains(&i);
            prop_assert_eq!(authentic, !covered, "byte {} of {}", i, packet.len());
        }
    }

    /// The routing tables against the model, over random sequences of events, checking after
    /// each event where every address's media goes.
    #[test]
    fn routing_follows_the_model(
        events in prop::collection::vec(event(), 1..40),
        per_connection in 1usize..4,
        total in 1usize..6,
    ) {
        let mut routes = Routes::new(per_connection, total);
        let mut model = Model { per_connection, total, connections: HashMap::new(), by_ufrag: HashMap::new(), by_address: HashMap::new(), clock: 0 };
        let mut inboxes = Vec::new();
        for (step, event) in events.iter().enumerate() {
            match event {
                Event::Register { connection, ufrag } => {
                    // A connection keeps the ufrag it registered with (as the mux's runtimes do).
                    let ufrag = model.connections.get(connection).map_or(UFRAGS[*ufrag].to_owned(), |c| c.ufrag.clone());
                    let (queue, inbox) = mpsc::channel(1);
                    inboxes.push(inbox);
                    routes.register(*connection, ufrag.clone(), stun::key(&password(*connection)), queue);
                    model.register(*connection, ufrag);
                }
                Event::Unregister { connection } => {
                    routes.unregister(*connection);
                    model.unregister(*connection);
                }
                Event::Receive { from, datagram } => {
                    let packet = bytes_of(datagram);
                    let got = routes.route(addr(*from), &packet);
                    let want = model.route(addr(*from), &packet, datagram);
                    prop_assert_eq!(got, want, "step {}: {:?} from {}", step, datagram, addr(*from));
                }
            }
            for a in 0..ADDRESSES {
                let got = routes.route(addr(a), &bytes_of(&Datagram::Rtp));
                let want = model.by_address.get(&addr(a)).map(|(c, _)| *c);
                prop_assert_eq!(got, want, "after step {} ({:?}): media from {}", step, event, addr(a));
            }
            prop_assert!(model.by_address.len() <= total);
            prop_assert!(model.connections.values().all(|c| c.addresses.len() <= per_connection));
        }
    }
}
