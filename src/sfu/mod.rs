//! The SFU core: rooms, users, upstream and downstream connections, forwarding.
//! It knows nothing of Node or napi; the binding in `crate::binding` is a thin layer over
//! [`MediaServerCore`].

pub mod api;
pub mod conn;
pub mod error;
pub mod events;
pub mod forward;
pub mod loop_media;
pub mod metrics;
pub mod mux;
pub mod peer;
pub mod ports;
pub mod room;
pub mod sdp;
pub mod stats;
pub mod view;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use api::*;
use error::{SfuError, SfuResult};
use events::{EventSink, RoomClosedReason};
use mux::UdpMux;
use peer::{ConnectionBudget, ConnectionCounter, ListenAddr, NetworkConfig, PeerContext};
use ports::PortPool;
use room::{Command, Room, RoomLink};
use stats::{ConnectionStates, ConnectionStats, ForwardTotals};
use view::RoomView;

/// The default limit on one user's `userInfo`, serialised.
pub const DEFAULT_MAX_USER_INFO_BYTES: usize = 16 * 1024;

/// How long a downstream offer waits for its answer by default.
pub const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits past which calls fail with `RESOURCE_EXHAUSTED`; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_rooms: Option<usize>,
    pub max_users_per_room: Option<usize>,
    /// Upstream and downstream connections together, over the whole server.
    pub max_connections: Option<usize>,
}

/// What `new MediaServer(options)` configures.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The addresses connections bind; empty is every interface (0.0.0.0).
    pub listen: Vec<ListenAddr>,
    /// Inclusive port range, one port per connection; `None` lets the OS pick ephemeral ports.
    pub port_range: Option<(u16, u16)>,
    /// Single-port mode: every connection shares this UDP port (0: one the OS picks).
    pub udp_port: Option<u16>,
    /// Also offer passive ICE-TCP candidates.
    pub tcp: bool,
    pub limits: Limits,
    /// `None`: offers wait for their answers forever.
    pub offer_timeout: Option<Duration>,
    pub max_user_info_bytes: usize,
    /// Report each room's audio levels this often (`audiolevels` events); `None`: never.
    pub audio_level_interval: Option<Duration>,
    /// Run the connections on media loops (`Some(workers)`, the default: one per core), or on
    /// webrtc-rs's async engine (`None`, `engine: 'tasks'`).
    pub engine: Option<usize>,
}

/// Media loops when the options name no number: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            port_range: None,
            udp_port: None,
            tcp: false,
            limits: Limits::default(),
            offer_timeout: Some(DEFAULT_OFFER_TIMEOUT),
            max_user_info_bytes: DEFAULT_MAX_USER_INFO_BYTES,
            audio_level_interval: None,
            engine: Some(default_workers()),
        }
    }
}

/// State every room shares: network settings, ports, limits, counters and the event sink.
pub struct Shared {
    pub net: NetworkConfig,
    pub ports: Arc<PortPool>,
    pub budget: ConnectionBudget,
    pub live: Arc<ConnectionCounter>,
    pub limits: Limits,
    pub offer_timeout: Option<Duration>,
    pub events: EventSink,
    pub forwarded: Arc<ForwardTotals>,
    /// Connections by direction and state, kept by their state reporters.
    pub states: Arc<ConnectionStates>,
    pub max_user_info_bytes: usize,
    /// The media loops, when the server runs them (see `ServerOptions::engine`).
    pub engine: Option<Arc<conn::Engine>>,
}

impl Shared {
    pub fn peer_context(&self) -> PeerContext<'_> {
        PeerContext {
            net: &self.net,
            ports: &self.ports,
            budget: &self.budget,
            live: &self.live,
            sink: &self.events,
            states: &self.states,
            totals: &self.forwarded,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    pub rooms: usize,
    pub users: usize,
    pub upstream_connections: usize,
    pub downstream_connections: usize,
    /// Peer connection objects still alive in the process (closed ones are dropped).
    pub live_connections: usize,
    pub ports_in_use: usize,
    /// RTP packets and bytes (header and payload) written to consumers since the server started.
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// The shared UDP port in single-port mode, else `null`.
    pub udp_port: Option<u16>,
}

/// `getStats(roomId, userId?)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomConnectionStats {
    pub room_id: String,
    pub connections: Vec<ConnectionStats>,
}

struct RoomHandle {
    link: RoomLink,
    /// Tells this room apart from a later one with the same id.
    serial: u64,
}

pub struct MediaServerCore {
    shared: Arc<Shared>,
    /// Room id to room task. Held only to look up, insert or remove; never across an await.
    rooms: Mutex<HashMap<String, RoomHandle>>,
    /// The single port, in single-port mode.
    udp_port: Option<u16>,
    next_serial: std::sync::atomic::AtomicU64,
    closed: AtomicBool,
}

impl MediaServerCore {
    /// Binds the shared port in single-port mode: call it inside the tokio runtime.
    pub fn new(options: ServerOptions, events: EventSink) -> SfuResult<Self> {
        let mut listen = options.listen;
        if listen.is_empty() {
            listen.push(ListenAddr { ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED), announced_ip: None });
        }
        let ips: Vec<IpAddr> = listen.iter().map(|l| l.ip).collect();
        if ips.iter().enumerate().any(|(i, ip)| ips[..i].contains(ip)) {
            return Err(SfuError::InvalidArgument("listen addresses must not repeat".into()));
        }
        if options.udp_port.is_some() && options.port_range.is_some() {
            return Err(SfuError::InvalidArgument(
                "udpPort (every connection on one port) and portRange (a port per connection) exclude each other".into(),
            ));
        }
        if options.offer_timeout == Some(Duration::ZERO) {
            return Err(SfuError::InvalidArgument("offerTimeoutMs must be positive".into()));
        }
        let forwarded = Arc::new(ForwardTotals::default());
        // On the loops, the single port is the one loop's own socket.
        let (mux, engine) = match options.engine {
            Some(workers) => {
                // One port is one socket, so one loop (steering a shared port to several loops
                // is not built yet).
                let workers = if options.udp_port.is_some() { 1 } else { workers };
                let range = match options.udp_port {
                    Some(0) => None,
                    Some(port) => Some((port, port)),
                    None => options.port_range,
                };
                let engine = conn::Engine::start(workers, &ips, range, options.tcp, forwarded.clone(), options.audio_level_interval)?;
                (None, Some(Arc::new(engine)))
            }
            None => (options.udp_port.map(|port| UdpMux::bind(&ips, port)).transpose()?, None),
        };
        let udp_port = match (&engine, &mux) {
            (Some(engine), _) if options.udp_port.is_some() => engine.ports().first().copied(),
            (_, Some(mux)) => Some(mux.port()),
            _ => None,
        };
        let ports = PortPool::new(ips, options.tcp, options.port_range)?;
        Ok(Self {
            shared: Arc::new(Shared {
                net: NetworkConfig { listen, tcp: options.tcp, mux },
                ports,
                budget: ConnectionBudget::new(options.limits.max_connections),
                live: Arc::new(ConnectionCounter::default()),
                limits: options.limits,
                offer_timeout: options.offer_timeout,
                events,
                forwarded,
                states: Arc::default(),
                max_user_info_bytes: options.max_user_info_bytes,
                engine,
            }),
            udp_port,
            rooms: Mutex::new(HashMap::new()),
            next_serial: Default::default(),
            closed: AtomicBool::new(false),
        })
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_open(&self) -> SfuResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(SfuError::ServerClosed)
        } else {
            Ok(())
        }
    }

    /// Sends a command to a room and waits for its reply.
    async fn ask<T>(
        &self,
        room_id: &str,
        command: impl FnOnce(oneshot::Sender<SfuResult<T>>) -> Command,
    ) -> SfuResult<T> {
        self.check_open()?;
        let (tx, serial) = {
            let rooms = self.rooms();
            let handle = rooms.get(room_id).ok_or_else(|| SfuError::room_not_found(room_id))?;
            (handle.link.tx.clone(), handle.serial)
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        if tx.send(command(reply_tx)).await.is_err() {
            return Err(SfuError::room_not_found(room_id));
        }
        match reply_rx.await {
            Ok(result) => result,
            // Cut short by close().
            Err(_) if self.closed.load(Ordering::Acquire) => Err(SfuError::ServerClosed),
            // The room's task is gone without replying: it can only have died.
            Err(_) => {
                self.forget_room(room_id, serial);
                Err(SfuError::Internal(format!("room '{room_id}' stopped unexpectedly")))
            }
        }
    }

    fn forget_room(&self, room_id: &str, serial: u64) {
        let mut rooms = self.rooms();
        if rooms.get(room_id).is_some_and(|h| h.serial == serial) {
            rooms.remove(room_id);
        }
    }

    pub async fn create_room(&self, room_id: Option<&Value>, body: Option<&Value>) -> SfuResult<CreateRoomResponse> {
        let room_id = parse_optional_id("roomId", room_id)?;
        let body = parse_body(body)?;
        let user_id = parse_optional_id("userId", body.get("userId"))?;
        let user_info = match &user_id {
            Some(_) => Some(user_info_of(&body, self.shared.max_user_info_bytes)?),
            None if body.get("userInfo").is_some_and(|v| !v.is_null()) => {
                return Err(SfuError::InvalidArgument("userInfo is given without userId: whose is it?".into()));
            }
            None => None,
        };
        self.check_open()?;
        let room_id = room_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        {
            let mut rooms = self.rooms();
            if rooms.contains_key(&room_id) {
                return Err(SfuError::RoomExists(format!("room '{room_id}' already exists")));
            }
            if let Some(max) = self.shared.limits.max_rooms {
                if rooms.len() >= max {
                    return Err(SfuError::ResourceExhausted(format!(
                        "the server holds {max} rooms, the limit maxRooms"
                    )));
                }
            }
            if user_id.is_some() && self.shared.limits.max_users_per_room == Some(0) {
                return Err(SfuError::ResourceExhausted("maxUsersPerRoom is 0".into()));
            }
            let first_user = user_id.clone().zip(user_info.clone());
            let link = Room::spawn(&room_id, self.shared.clone(), first_user);
            let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
            rooms.insert(room_id.clone(), RoomHandle { link, serial });
        }
        tracing::info!(room = %room_id, user = %user_id.as_deref().unwrap_or(""), "room created");
        Ok(CreateRoomResponse { room_id, user_id, users: Vec::new(), user_info })
    }

    pub async fn add_user(&self, room_id: &Value, user_id: &Value, body: Option<&Value>) -> SfuResult<AddUserResponse> {
        let room_id = parse_id("roomId", room_id)?;
        let user_id = parse_id("userId", user_id)?;
        let user_info = user_info_of(&parse_body(body)?, self.shared.max_user_info_bytes)?;
        self.ask(&room_id, |reply| Command::AddUser { user_id, user_info, reply }).await
    }

    pub async fn produce(&self, room_id: &Value, user_id: &Value, body: Option<&Value>) -> SfuResult<ProduceResponse> {
        let room_id = parse_id("roomId", room_id)?;
        let user_id = parse_id("userId", user_id)?;
        let request = parse_produce(&parse_body(body)?)?;
        self.ask(&room_id, |reply| Command::Produce { user_id, request, reply }).await
    }

    pub async fn consume(&self, room_id: &Value, user_id: &Value, body: Option<&Value>) -> SfuResult<ConsumeResponse> {
        let room_id = parse_id("roomId", room_id)?;
        let user_id = parse_id("userId", user_id)?;
        let answers = parse_consume(&parse_body(body)?)?;
        self.ask(&room_id, |reply| Command::Consume { user_id, answers, reply }).await
    }

    pub async fn stop_produce(&self, room_id: &Value, user_id: &Value) -> SfuResult<LeaveResponse> {
        let room_id = parse_id("roomId", room_id)?;
        let user_id = parse_id("userId", user_id)?;
        self.ask(&room_id, |reply| Command::StopProduce { user_id, reply }).await
    }

    /// Caps the simulcast layers consumer `user_id` gets of producer `producer_id`'s video.
    pub async fn set_preferred_layers(&self, room_id: &Value, user_id: &Value, producer_id: &Value, body: Option<&Value>) -> SfuResult<LayersResponse> {
        let room_id = parse_id("roomId", room_id)?;
        let user_id = parse_id("userId", user_id)?;
        let producer_id = parse_id("producerId", producer_id)?;
        let layers = parse_preferred_layers(&parse_body(body)?)?;
        self.ask(&room_id, |reply| Command::SetPreferredLayers { user_id, producer_id, layers, reply }).await
    }

    pub async fn remove_user(&self, room_id: &Value, user_id: &Value) -> SfuResult<LeaveResponse> {
        let room_id = parse_id("roomId", room_id)?;
        let user_id = parse_id("userId", user_id)?;
        let serial = self.rooms().get(&room_id).map(|h| h.serial);
        let (response, emptied) = self.ask(&room_id, |reply| Command::RemoveUser { user_id, reply }).await?;
        if let (true, Some(serial)) = (emptied, serial) {
            self.forget_room(&room_id, serial);
            tracing::info!(room = %room_id, "room deleted: its last user left");
        }
        Ok(response)
    }

    pub async fn delete_room(&self, room_id: &Value) -> SfuResult<DeleteRoomResponse> {
        let room_id = parse_id("roomId", room_id)?;
        self.check_open()?;
        // Out of the map first: from here on, new calls see no such room.
        let handle = self.rooms().remove(&room_id).ok_or_else(|| SfuError::room_not_found(&room_id))?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let delete = Command::Delete { reason: RoomClosedReason::Deleted, reply: reply_tx };
        if handle.link.tx.send(delete).await.is_err() {
            return Err(SfuError::room_not_found(&room_id));
        }
        reply_rx
            .await
            .unwrap_or_else(|_| Err(SfuError::Internal(format!("room '{room_id}' stopped unexpectedly"))))
    }

    /// Per-connection statistics of a room, or of one user's connections in it.
    pub async fn get_stats(&self, room_id: &Value, user_id: Option<&Value>) -> SfuResult<RoomConnectionStats> {
        let room_id = parse_id("roomId", room_id)?;
        let user_id = parse_optional_id("userId", user_id)?;
        let connections = self.ask(&room_id, |reply| Command::ConnectionStats { user_id, reply }).await?;
        Ok(RoomConnectionStats { room_id, connections })
    }

    /// What a room holds: its users, producers and downstreams.
    pub async fn get_room(&self, room_id: &Value) -> SfuResult<RoomView> {
        let room_id = parse_id("roomId", room_id)?;
        self.ask(&room_id, |reply| Command::Inspect { reply }).await
    }

    /// Counts over every room, as each room last published them: never waits for a busy room.
    pub async fn stats(&self) -> SfuResult<ServerStats> {
        self.check_open()?;
        let (forwarded_packets, forwarded_bytes) = self.shared.forwarded.read();
        let mut stats = ServerStats {
            rooms: 0,
            users: 0,
            upstream_connections: 0,
            downstream_connections: 0,
            live_connections: self.shared.live.get(),
            ports_in_use: self.shared.ports.in_use(),
            forwarded_packets,
            forwarded_bytes,
            udp_port: self.udp_port,
        };
        for handle in self.rooms().values() {
            let counts = handle.link.counts.read();
            stats.rooms += 1;
            stats.users += counts.users;
            stats.upstream_connections += counts.upstreams;
            stats.downstream_connections += counts.downstreams;
        }
        Ok(stats)
    }

    /// `stats()`, the connections by state and the RTCP feedback counts, with the process's
    /// figures when given, in the Prometheus text format (see [`metrics::render`]).
    pub async fn metrics(&self, process: Option<&metrics::ProcessSample>) -> SfuResult<String> {
        let stats = self.stats().await?;
        let feedback = stats::Feedback::ALL.map(|kind| self.shared.forwarded.feedback_count(kind));
        let snapshot = metrics::ServerSnapshot { stats, states: self.shared.states.read(), feedback };
        Ok(metrics::render(&snapshot, process))
    }

    /// Closes every room and connection, without waiting for a command in progress (it is
    /// cut short and rejects with `SERVER_CLOSED`). Later calls, a second `close` included,
    /// fail with `SERVER_CLOSED`.
    pub async fn close(&self) -> SfuResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(SfuError::ServerClosed);
        }
        let rooms: Vec<_> = self.rooms().drain().map(|(_, handle)| handle).collect();
        for handle in &rooms {
            let _ = handle.link.shutdown.send(true);
        }
        for handle in rooms {
            if let Err(e) = handle.link.task.await {
                tracing::warn!(error = %e, "a room's task ended abnormally while closing");
            }
        }
        tracing::info!("media server closed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server() -> MediaServerCore {
        server_with(ServerOptions::default(), events::discard())
    }

    fn server_with(options: ServerOptions, events: EventSink) -> MediaServerCore {
        let listen = vec![ListenAddr { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), announced_ip: None }];
        MediaServerCore::new(ServerOptions { listen, ..options }, events).unwrap()
    }

    fn code<T: std::fmt::Debug>(r: SfuResult<T>) -> &'static str {
        r.unwrap_err().code()
    }

    #[tokio::test]
    async fn rooms_and_users_follow_the_spec_rules() {
        let s = server();
        let created = s.create_room(Some(&json!(7)), Some(&json!({"userId": 1}))).await.unwrap();
        assert_eq!((created.room_id.as_str(), created.user_id.as_deref()), ("7", Some("1")));
        assert_eq!(created.user_info, Some(json!({})));
        assert_eq!(code(s.create_room(Some(&json!("7")), None).await), "ROOM_EXISTS");
        assert_eq!(code(s.add_user(&json!("7"), &json!("1"), None).await), "USER_EXISTS");
        assert_eq!(code(s.add_user(&json!("nope"), &json!("1"), None).await), "ROOM_NOT_FOUND");
        let added = s.add_user(&json!("7"), &json!("2"), Some(&json!({"userInfo": [1]}))).await.unwrap();
        assert_eq!(serde_json::to_value(&added).unwrap(), json!({"id": "2", "userInfo": [1], "users": [{"id": "1", "userInfo": {}}]}));

        let constraints = json!({"constraints": {"audio": true, "video": true}});
        assert_eq!(code(s.produce(&json!("7"), &json!("1"), Some(&constraints)).await), "NOT_PRODUCING");
        assert_eq!(code(s.stop_produce(&json!("7"), &json!("1")).await), "NOT_PRODUCING");
        assert_eq!(code(s.produce(&json!("7"), &json!("9"), Some(&constraints)).await), "USER_NOT_FOUND");
        let answer = json!({"id": "1", "answer": {"type": "answer", "sdp": "v=0\r\n"}});
        assert_eq!(code(s.consume(&json!("7"), &json!("2"), Some(&answer)).await), "NO_PENDING_OFFER");

        let removed = s.remove_user(&json!("7"), &json!("1")).await.unwrap();
        assert_eq!(serde_json::to_value(&removed).unwrap(), json!({"id": "1", "userInfo": {}, "outbound": [{"id": "2", "userInfo": [1]}]}));
        s.remove_user(&json!("7"), &json!("2")).await.unwrap();
        assert_eq!(code(s.add_user(&json!("7"), &json!("3"), None).await), "ROOM_NOT_FOUND", "the last user out deleted the room");
        assert_eq!(s.stats().await.unwrap().rooms, 0);
    }

    #[tokio::test]
    async fn limits_refuse_past_the_limit_and_change_nothing() {
        let limits = Limits { max_rooms: Some(1), max_users_per_room: Some(2), max_connections: Some(0) };
        let s = server_with(ServerOptions { limits, ..Default::default() }, events::discard());
        s.create_room(Some(&json!("a")), Some(&json!({"userId": "1"}))).await.unwrap();
        assert_eq!(code(s.create_room(Some(&json!("b")), None).await), "RESOURCE_EXHAUSTED");
        s.add_user(&json!("a"), &json!("2"), None).await.unwrap();
        assert_eq!(code(s.add_user(&json!("a"), &json!("3"), None).await), "RESOURCE_EXHAUSTED");
        let offer = json!({"offer": {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=fingerprint:sha-256 AB:CD\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=sendonly\r\na=mid:0\r\n"}});
        assert_eq!(code(s.produce(&json!("a"), &json!("1"), Some(&offer)).await), "RESOURCE_EXHAUSTED", "maxConnections 0");
        let stats = s.stats().await.unwrap();
        assert_eq!((stats.rooms, stats.users, stats.upstream_connections, stats.live_connections), (1, 2, 0, 0));
    }

    #[tokio::test]
    async fn a_room_that_ends_says_why() {
        let seen: Arc<Mutex<Vec<events::ServerEvent>>> = Arc::default();
        let into = seen.clone();
        let s = server_with(ServerOptions::default(), Arc::new(move |e| into.lock().unwrap().push(e)));
        s.create_room(Some(&json!("by-call")), None).await.unwrap();
        s.create_room(Some(&json!("by-leaving")), Some(&json!({"userId": "u"}))).await.unwrap();
        s.create_room(Some(&json!("by-close")), None).await.unwrap();
        s.delete_room(&json!("by-call")).await.unwrap();
        s.remove_user(&json!("by-leaving"), &json!("u")).await.unwrap();
        s.close().await.unwrap();
        let reasons: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                events::ServerEvent::RoomClosed { room_id, reason } => (room_id.clone(), *reason),
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("by-call".to_string(), RoomClosedReason::Deleted),
                ("by-leaving".to_string(), RoomClosedReason::Empty),
                ("by-close".to_string(), RoomClosedReason::ServerClosed),
            ]
        );
    }

    #[tokio::test]
    async fn udp_port_and_port_range_exclude_each_other() {
        let listen = vec![ListenAddr { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), announced_ip: None }];
        let both = ServerOptions { listen, udp_port: Some(0), port_range: Some((47200, 47210)), ..Default::default() };
        assert_eq!(MediaServerCore::new(both, events::discard()).err().map(|e| e.code()), Some("INVALID_ARGUMENT"));
    }

    #[tokio::test]
    async fn failed_calls_change_nothing_and_close_ends_everything() {
        let s = server();
        s.create_room(Some(&json!("r")), None).await.unwrap();
        s.add_user(&json!("r"), &json!("a"), None).await.unwrap();
        let bad_offer = json!({"offer": {"type": "offer", "sdp": "not an sdp"}});
        assert_eq!(code(s.produce(&json!("r"), &json!("a"), Some(&bad_offer)).await), "INVALID_SDP");
        let stats = s.stats().await.unwrap();
        assert_eq!((stats.rooms, stats.users, stats.upstream_connections, stats.live_connections), (1, 1, 0, 0));

        assert_eq!(s.delete_room(&json!("r")).await.unwrap().count, 1);
        assert_eq!(code(s.delete_room(&json!("r")).await), "ROOM_NOT_FOUND");
        s.create_room(Some(&json!("r2")), None).await.unwrap();
        s.close().await.unwrap();
        assert_eq!(code(s.close().await), "SERVER_CLOSED", "a second close");
        assert_eq!(code(s.create_room(None, None).await), "SERVER_CLOSED");
        assert_eq!(code(s.delete_room(&json!("r2")).await), "SERVER_CLOSED");
        assert_eq!(code(s.stats().await), "SERVER_CLOSED");
        assert_eq!(code(s.metrics(None).await), "SERVER_CLOSED");
    }

    #[tokio::test]
    async fn metrics_read_the_same_counts_as_stats() {
        let s = server();
        s.create_room(Some(&json!("m")), Some(&json!({"userId": "a"}))).await.unwrap();
        s.add_user(&json!("m"), &json!("b"), None).await.unwrap();
        let text = s.metrics(None).await.unwrap();
        assert!(text.contains("\nmediaserver_rooms 1\n") && text.contains("\nmediaserver_users 2\n"), "{text}");
        assert!(text.contains("mediaserver_connections{direction=\"upstream\",state=\"connected\"} 0\n"), "{text}");
        assert!(!text.contains("process_"));
        let process = metrics::ProcessSample { resident_memory_bytes: 123, ..Default::default() };
        assert!(s.metrics(Some(&process)).await.unwrap().ends_with("process_resident_memory_bytes 123\n"));
    }
}
