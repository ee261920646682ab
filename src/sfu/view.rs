//! `getRoom`: a read-only picture of what a room holds, for backends that want to check their
//! own view against the server's, and for tests that prove a failed call changed nothing.

use serde::Serialize;
use serde_json::Value;

use super::api::Constraints;
use super::events::ConnectionState;
use super::sdp::{Codec, Kind};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    pub room_id: String,
    /// In the order they joined.
    pub users: Vec<UserView>,
    /// Every downstream, ordered by (producerId, userId).
    pub consumers: Vec<ConsumerView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub user_info: Value,
    /// `null` while the user is not producing.
    pub producer: Option<ProducerView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerView {
    pub constraints: Constraints,
    pub codecs: KindCodecs,
    /// The upstream connection's state.
    pub state: ConnectionState,
}

/// A downstream: `userId` receiving `producerId`'s media.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    pub producer_id: String,
    pub user_id: String,
    pub state: ConnectionState,
    /// An offer of the server's waits for this user's answer.
    pub pending_offer: bool,
    pub codecs: KindCodecs,
}

/// The codec per kind, as a MIME type (`video/VP8`), or `null` for a kind not carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindCodecs {
    pub audio: Option<String>,
    pub video: Option<String>,
}

impl KindCodecs {
    pub fn of(codecs: &[Option<Codec>; 2]) -> Self {
        let mime = |kind: Kind| codecs[kind.index()].as_ref().map(|c| c.mime_type(kind));
        Self { audio: mime(Kind::Audio), video: mime(Kind::Video) }
    }
}
