//! What the server tells the backend without being asked: connection states, rooms that end,
//! offers nobody answered. The core emits plain values into an [`EventSink`]; the binding
//! turns them into JS objects. The SFU never acts on these itself (it never removes a user).

use std::sync::Arc;

use serde::Serialize;

use super::api::Constraints;

/// Which way a connection carries media, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a producer's browser to the server.
    Upstream,
    /// From the server to a consumer's browser, carrying one producer.
    Downstream,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Upstream, Direction::Downstream];

    /// The name events and metrics give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a room ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RoomClosedReason {
    /// `deleteRoom` was called.
    Deleted,
    /// Its last user was removed.
    Empty,
    /// The server was closed.
    ServerClosed,
}

/// A peer connection's state, as `RTCPeerConnection.connectionState` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

impl ConnectionState {
    pub const ALL: [ConnectionState; 6] = [
        ConnectionState::New,
        ConnectionState::Connecting,
        ConnectionState::Connected,
        ConnectionState::Disconnected,
        ConnectionState::Failed,
        ConnectionState::Closed,
    ];

    /// The name events and metrics give it (`RTCPeerConnection.connectionState`'s).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::New => "new",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Failed => "failed",
            ConnectionState::Closed => "closed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerEvent {
    /// A connection changed state. `user_id` is the user at the other end (the producer for an
    /// upstream, the consumer for a downstream); `producer_id` whose media it carries.
    #[serde(rename = "connectionstatechange", rename_all = "camelCase")]
    ConnectionStateChange {
        room_id: String,
        user_id: String,
        producer_id: String,
        direction: Direction,
        state: ConnectionState,
    },
    /// What a producer forwards changed: it started producing, muted or unmuted a kind
    /// (`constraints`), or stopped producing (both false).
    #[serde(rename = "constraintschange", rename_all = "camelCase")]
    ConstraintsChange { room_id: String, user_id: String, constraints: Constraints },
    /// A room ended; its connections are closed.
    #[serde(rename = "roomclosed", rename_all = "camelCase")]
    RoomClosed { room_id: String, reason: RoomClosedReason },
    /// A downstream offer was not answered in time; its connection was closed, and the next
    /// `produce` of that producer offers the consumer a new one.
    #[serde(rename = "offertimeout", rename_all = "camelCase")]
    OfferTimeout { room_id: String, user_id: String, producer_id: String, timeout_ms: u64 },
    /// The room's dominant speaker changed to `user_id`, by the audio levels its producers send
    /// (RFC 6464).
    #[serde(rename = "activespeaker", rename_all = "camelCase")]
    ActiveSpeaker { room_id: String, user_id: String },
    /// Every `audioLevelIntervalMs`: each producer's mean audio level over the interval, in
    /// dBov (-127 silence, 0 the loudest).
    #[serde(rename = "audiolevels", rename_all = "camelCase")]
    AudioLevels {
        room_id: String,
        #[serde(serialize_with = "serialize_levels")]
        levels: Vec<(String, i32)>,
    },
    /// The simulcast layer consumer `user_id` receives of `producer_id`'s video changed (at a
    /// keyframe of the new layer). `temporal_layer` is `None` while every temporal layer is
    /// forwarded.
    #[serde(rename = "layerschange", rename_all = "camelCase")]
    LayersChange { room_id: String, user_id: String, producer_id: String, spatial_layer: u8, temporal_layer: Option<u8> },
}

fn serialize_levels<S: serde::Serializer>(levels: &[(String, i32)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Level<'a> {
        user_id: &'a str,
        level: i32,
    }
    let mut seq = s.serialize_seq(Some(levels.len()))?;
    for (user_id, level) in levels {
        seq.serialize_element(&Level { user_id, level: *level })?;
    }
    seq.end()
}

impl ServerEvent {
    /// The event's name, as `MediaServer.on(name, …)` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            ServerEvent::ConnectionStateChange { .. } => "connectionstatechange",
            ServerEvent::ConstraintsChange { .. } => "constraintschange",
            ServerEvent::RoomClosed { .. } => "roomclosed",
            ServerEvent::OfferTimeout { .. } => "offertimeout",
            ServerEvent::ActiveSpeaker { .. } => "activespeaker",
            ServerEvent::AudioLevels { .. } => "audiolevels",
            ServerEvent::LayersChange { .. } => "layerschange",
        }
    }
}

/// Where events go. Called from runtime threads; must not block.
pub type EventSink = Arc<dyn Fn(ServerEvent) + Send + Sync>;

/// A sink that drops everything (a server nobody listens to).
pub fn discard() -> EventSink {
    Arc::new(|_| {})
}

/// Names a connection in events and logs.
#[derive(Debug, Clone)]
pub struct ConnectionLabel {
    pub room_id: Arc<str>,
    pub user_id: Arc<str>,
    pub producer_id: Arc<str>,
    pub direction: Direction,
}

impl ConnectionLabel {
    pub fn state_event(&self, state: ConnectionState) -> ServerEvent {
        ServerEvent::ConnectionStateChange {
            room_id: self.room_id.to_string(),
            user_id: self.user_id.to_string(),
            producer_id: self.producer_id.to_string(),
            direction: self.direction,
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metric_names_are_the_serialized_names_and_indexes_follow_all() {
        for (i, d) in Direction::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(d).unwrap(), json!(d.as_str()));
            assert_eq!(d.index(), i);
        }
        for (i, s) in ConnectionState::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn events_serialize_as_plain_objects_with_a_type() {
        let label = ConnectionLabel {
            room_id: "r".into(),
            user_id: "c".into(),
            producer_id: "p".into(),
            direction: Direction::Downstream,
        };
        assert_eq!(
            serde_json::to_value(label.state_event(ConnectionState::Failed)).unwrap(),
            json!({"type": "connectionstatechange", "roomId": "r", "userId": "c", "producerId": "p",
                   "direction": "downstream", "state": "failed"})
        );
        let muted = ServerEvent::ConstraintsChange {
            room_id: "r".into(),
            user_id: "p".into(),
            constraints: Constraints { audio: true, video: false },
        };
        assert_eq!(
            serde_json::to_value(muted).unwrap(),
            json!({"type": "constraintschange", "roomId": "r", "userId": "p", "constraints": {"audio": true, "video": false}})
        );
        let closed = ServerEvent::RoomClosed { room_id: "r".into(), reason: RoomClosedReason::ServerClosed };
        assert_eq!(closed.name(), "roomclosed");
        assert_eq!(serde_json::to_value(closed).unwrap(), json!({"type": "roomclosed", "roomId": "r", "reason": "serverClosed"}));
        let timeout = ServerEvent::OfferTimeout {
            room_id: "r".into(),
            user_id: "c".into(),
            producer_id: "p".into(),
            timeout_ms: 30_000,
        };
        assert_eq!(
            serde_json::to_value(timeout).unwrap(),
            json!({"type": "offertimeout", "roomId": "r", "userId": "c", "producerId": "p", "timeoutMs": 30000})
        );
        let speaker = ServerEvent::ActiveSpeaker { room_id: "r".into(), user_id: "a".into() };
        assert_eq!(speaker.name(), "activespeaker");
        assert_eq!(serde_json::to_value(speaker).unwrap(), json!({"type": "activespeaker", "roomId": "r", "userId": "a"}));
        let levels = ServerEvent::AudioLevels { room_id: "r".into(), levels: vec![("a".into(), -20), ("b".into(), -127)] };
        assert_eq!(levels.name(), "audiolevels");
        assert_eq!(
            serde_json::to_value(levels).unwrap(),
            json!({"type": "audiolevels", "roomId": "r", "levels": [{"userId": "a", "level": -20}, {"userId": "b", "level": -127}]})
        );
    }
}
