//! A room is a task that owns its users and connections and runs one command at a time, so
//! concurrent calls on a room are serialised without a lock held across an await.
//! Every command either completes or leaves the room as it found it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::RTCSessionDescription;
use webrtc::rtp_transceiver::RtpTransceiver;

use super::api::*;
use super::error::{SfuError, SfuResult};
use super::events::{ConnectionLabel, ConnectionState, Direction, RoomClosedReason, ServerEvent};
use super::forward::{spawn_keyframe_relay, Control, ForwarderHandle, Subscriber};
use super::peer::{build_peer, Peer, PeerEvents};
use super::sdp::{self, Codec, Kind};
use super::stats::ConnectionStats;
use super::Shared;

type Reply<T> = oneshot::Sender<SfuResult<T>>;

pub enum Command {
    AddUser { user_id: String, user_info: Value, reply: Reply<AddUserResponse> },
    Produce { user_id: String, request: ProduceRequest, reply: Reply<ProduceResponse> },
    Consume { user_id: String, answers: Vec<ConsumeAnswer>, reply: Reply<ConsumeResponse> },
    StopProduce { user_id: String, reply: Reply<LeaveResponse> },
    /// Replies with the response and whether the room is now empty (and so gone).
    RemoveUser { user_id: String, reply: Reply<(LeaveResponse, bool)> },
    Delete { reason: RoomClosedReason, reply: Reply<DeleteRoomResponse> },
    Stats { reply: Reply<RoomStats> },
    /// Per-connection statistics, of one user's connections or of all.
    ConnectionStats { user_id: Option<String>, reply: Reply<Vec<ConnectionStats>> },
    /// Sent by the room to itself when an offer's time to be answered is up.
    OfferTimeout { producer: Arc<str>, consumer: Arc<str>, serial: u64 },
}

impl Command {
    fn reject(self, err: SfuError) {
        match self {
            Command::AddUser { reply, .. } => drop(reply.send(Err(err))),
            Command::Produce { reply, .. } => drop(reply.send(Err(err))),
            Command::Consume { reply, .. } => drop(reply.send(Err(err))),
            Command::StopProduce { reply, .. } => drop(reply.send(Err(err))),
            Command::RemoveUser { reply, .. } => drop(reply.send(Err(err))),
            Command::Delete { reply, .. } => drop(reply.send(Err(err))),
            Command::Stats { reply } => drop(reply.send(Err(err))),
            Command::ConnectionStats { reply, .. } => drop(reply.send(Err(err))),
            Command::OfferTimeout { .. } => {}
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RoomStats {
    pub users: usize,
    pub upstreams: usize,
    pub downstreams: usize,
}

struct User {
    id: Arc<str>,
    info: Value,
    upstream: Option<Upstream>,
}

struct Upstream {
    producer: Arc<str>,
    peer: Peer,
    constraints: Constraints,
    /// The codec the producer sends per kind (`None`: the kind is not produced).
    codecs: [Option<Codec>; 2],
    forwarders: [ForwarderHandle; 2],
}

struct DownTrack {
    track: Arc<TrackLocalStaticRTP>,
    transceiver: Arc<dyn RtpTransceiver>,
    ssrc: u32,
    codec: Codec,
}

struct Downstream {
    peer: Peer,
    /// Whether the connection is up; media is written to it only then.
    connected: Arc<AtomicBool>,
    tracks: [Option<DownTrack>; 2],
    pending_offer: bool,
    /// Tells the latest offer apart from earlier ones whose timers may still fire.
    offer_serial: u64,
}

/// Routes an upstream's remote tracks to the forwarders of their kind.
struct UpstreamEvents {
    forwarders: [ForwarderHandle; 2],
}

impl PeerEvents for UpstreamEvents {
    fn on_track(&self, kind: Kind, track: Arc<dyn TrackRemote>) {
        self.forwarders[kind.index()].send(Control::Track(track));
    }
}

/// Tells the forwarders when a consumer's connection can carry media, and asks for a keyframe
/// when it just connected (it needs one to start decoding).
struct DownstreamEvents {
    video: ForwarderHandle,
    connected: Arc<AtomicBool>,
}

impl PeerEvents for DownstreamEvents {
    fn on_state(&self, state: ConnectionState) {
        match state {
            ConnectionState::Connected => {
                self.connected.store(true, Ordering::Release);
                self.video.send(Control::RequestKeyframe);
            }
            ConnectionState::Failed | ConnectionState::Closed => self.connected.store(false, Ordering::Release),
            _ => {}
        }
    }
}

pub struct Room {
    id: Arc<str>,
    shared: Arc<Shared>,
    users: Vec<User>,
    /// Keyed by (producer, consumer).
    downstreams: HashMap<(Arc<str>, Arc<str>), Downstream>,
    closed: bool,
    /// The room's own queue, for timers; weak, so that they do not keep the room alive.
    commands: mpsc::WeakSender<Command>,
}

impl Room {
    /// Starts the room's task; `first_user` is the user `createRoom` may bring along.
    pub fn spawn(id: &str, shared: Arc<Shared>, first_user: Option<(String, Value)>) -> mpsc::Sender<Command> {
        let (tx, rx) = mpsc::channel(64);
        let mut room = Room {
            id: Arc::from(id),
            shared,
            users: Vec::new(),
            downstreams: HashMap::new(),
            closed: false,
            commands: tx.downgrade(),
        };
        if let Some((user_id, info)) = first_user {
            room.users.push(User { id: Arc::from(user_id.as_str()), info, upstream: None });
        }
        tokio::spawn(room.run(rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            match command {
                Command::AddUser { user_id, user_info, reply } => {
                    let r = guard(self.add_user(user_id, user_info)).await;
                    let _ = reply.send(r);
                }
                Command::Produce { user_id, request, reply } => {
                    let r = guard(self.produce(&user_id, request)).await;
                    let _ = reply.send(r);
                }
                Command::Consume { user_id, answers, reply } => {
                    let r = guard(self.consume(&user_id, answers)).await;
                    let _ = reply.send(r);
                }
                Command::StopProduce { user_id, reply } => {
                    let r = guard(self.stop_produce(&user_id)).await;
                    let _ = reply.send(r);
                }
                Command::RemoveUser { user_id, reply } => {
                    let r = guard(self.remove_user(&user_id)).await;
                    let _ = reply.send(r);
                }
                Command::Delete { reason, reply } => {
                    let r = guard(self.delete(reason)).await;
                    let _ = reply.send(r);
                }
                Command::Stats { reply } => {
                    let _ = reply.send(Ok(self.stats()));
                }
                Command::ConnectionStats { user_id, reply } => {
                    let r = guard(self.connection_stats(user_id.as_deref())).await;
                    let _ = reply.send(r);
                }
                Command::OfferTimeout { producer, consumer, serial } => {
                    guard(async { Ok(self.offer_timed_out(producer, consumer, serial).await) }).await.ok();
                }
            }
            if self.closed {
                break;
            }
        }
        // Calls that raced with the room's end learn that it is gone.
        rx.close();
        while let Ok(command) = rx.try_recv() {
            command.reject(SfuError::room_not_found(&self.id));
        }
        tracing::debug!(room = %self.id, "room task ended");
    }

    fn stats(&self) -> RoomStats {
        RoomStats {
            users: self.users.len(),
            upstreams: self.users.iter().filter(|u| u.upstream.is_some()).count(),
            downstreams: self.downstreams.len(),
        }
    }

    fn user_index(&self, user_id: &str) -> SfuResult<usize> {
        self.users
            .iter()
            .position(|u| &*u.id == user_id)
            .ok_or_else(|| SfuError::user_not_found(&self.id, user_id))
    }

    async fn add_user(&mut self, user_id: String, info: Value) -> SfuResult<AddUserResponse> {
        if self.user_index(&user_id).is_ok() {
            return Err(SfuError::UserExists(format!("user '{user_id}' is already in room '{}'", self.id)));
        }
        if let Some(max) = self.shared.limits.max_users_per_room {
            if self.users.len() >= max {
                return Err(SfuError::ResourceExhausted(format!(
                    "room '{}' is full: it holds {max} users, the limit maxUsersPerRoom",
                    self.id
                )));
            }
        }
        let consumer: Arc<str> = Arc::from(user_id.as_str());
        let mut created: Vec<((Arc<str>, Arc<str>), Downstream, SessionDescription)> = Vec::new();
        for producer in &self.users {
            let Some(upstream) = &producer.upstream else { continue };
            match self.open_downstream(upstream, &consumer).await {
                Ok((downstream, offer)) => {
                    created.push(((producer.id.clone(), consumer.clone()), downstream, offer))
                }
                Err(e) => {
                    close_all(created.into_iter().map(|(_, d, _)| d)).await;
                    return Err(e);
                }
            }
        }
        let mut offers: HashMap<Arc<str>, SessionDescription> = HashMap::new();
        for (key, downstream, offer) in created {
            offers.insert(key.0.clone(), offer);
            self.arm_offer_timeout(&key, &downstream);
            self.downstreams.insert(key, downstream);
        }
        let users = self
            .users
            .iter()
            .map(|u| {
                let upstream = u.upstream.as_ref();
                PeerInfo {
                    id: u.id.to_string(),
                    user_info: u.info.clone(),
                    offer: upstream.and_then(|_| offers.remove(&u.id)),
                    constraints: upstream.map(|up| up.constraints),
                }
            })
            .collect();
        self.users.push(User { id: consumer, info: info.clone(), upstream: None });
        tracing::info!(room = %self.id, user = %user_id, "user added");
        Ok(AddUserResponse { id: user_id, user_info: info, users })
    }

    async fn produce(&mut self, user_id: &str, request: ProduceRequest) -> SfuResult<ProduceResponse> {
        let index = self.user_index(user_id)?;
        let Some(offer) = request.offer else {
            let patch = request.constraints.expect("parse_produce requires offer or constraints");
            return self.set_constraints(index, patch);
        };
        let plan = sdp::read_producer_offer(&offer.sdp_type, &offer.sdp)?;
        let remote = RTCSessionDescription::offer(plan.sdp.clone())
            .map_err(|e| SfuError::InvalidSdp(format!("the offer does not parse: {e}")))?;
        let derived = Constraints { audio: plan.sends.sends_audio, video: plan.sends.sends_video };
        let constraints = request.constraints.map_or(derived, |patch| patch.apply(derived));

        // 1. The upstream: a new connection, or a renegotiation of the existing one.
        let producer_id = self.users[index].id.clone();
        let fresh = match self.users[index].upstream.take() {
            Some(upstream) => Ok((upstream, false)),
            None => self.open_upstream(&producer_id).await.map(|u| (u, true)),
        };
        let (mut upstream, is_new) = fresh?;
        let answer = match answer_offer(&upstream.peer, remote, &plan.sends).await {
            Ok(answer) => answer,
            Err(e) => {
                self.discard_upstream(index, upstream, is_new).await;
                return Err(e);
            }
        };
        let previous_codecs = std::mem::replace(&mut upstream.codecs, answer.1);
        let previous_constraints = std::mem::replace(&mut upstream.constraints, constraints);

        // 2. One downstream per other user: renegotiated if it exists, opened if not.
        let producer = &self.users[index];
        let mut opened: Vec<((Arc<str>, Arc<str>), Downstream, SessionDescription)> = Vec::new();
        let mut renegotiated: Vec<(Arc<str>, SessionDescription)> = Vec::new();
        let mut failure = None;
        for consumer in self.users.iter().filter(|u| u.id != producer.id) {
            let key = (producer.id.clone(), consumer.id.clone());
            let result = match self.downstreams.get_mut(&key) {
                Some(downstream) => renegotiate_downstream(downstream, &upstream, &consumer.id)
                    .await
                    .map(|offer| renegotiated.push((consumer.id.clone(), offer))),
                None => self
                    .open_downstream(&upstream, &consumer.id)
                    .await
                    .map(|(downstream, offer)| opened.push((key, downstream, offer))),
            };
            if let Err(e) = result {
                failure = Some(e);
                break;
            }
        }
        if let Some(e) = failure {
            close_all(opened.into_iter().map(|(_, d, _)| d)).await;
            upstream.codecs = previous_codecs;
            upstream.constraints = previous_constraints;
            self.discard_upstream(index, upstream, is_new).await;
            return Err(e);
        }

        // 3. Commit.
        for kind in Kind::ALL {
            let forwarder = &upstream.forwarders[kind.index()];
            if let Some(codec) = &upstream.codecs[kind.index()] {
                forwarder.send(Control::Source { payload_type: codec.payload_type, clock_rate: codec.clock_rate });
            }
            forwarder.send(Control::Mute(!kind_enabled(constraints, kind)));
        }
        for (consumer, _) in &renegotiated {
            let key = (producer_id.clone(), consumer.clone());
            if let Some(downstream) = self.downstreams.get(&key) {
                self.arm_offer_timeout(&key, downstream);
            }
        }
        let mut offers: HashMap<Arc<str>, SessionDescription> = renegotiated.into_iter().collect();
        for (key, downstream, offer) in opened {
            offers.insert(key.1.clone(), offer);
            self.arm_offer_timeout(&key, &downstream);
            self.downstreams.insert(key, downstream);
        }
        self.users[index].upstream = Some(upstream);
        let producer = &self.users[index];
        let outbound = self
            .users
            .iter()
            .filter(|u| u.id != producer.id)
            .map(|u| PeerInfo {
                id: u.id.to_string(),
                user_info: u.info.clone(),
                offer: offers.remove(&u.id),
                constraints: Some(constraints),
            })
            .collect();
        tracing::info!(room = %self.id, user = %producer.id, ?constraints, renegotiation = !is_new, "producing");
        if is_new || previous_constraints != constraints {
            self.constraints_changed(&producer.id, constraints);
        }
        Ok(ProduceResponse {
            answer: Some(SessionDescription::answer(answer.0)),
            id: producer.id.to_string(),
            user_info: producer.info.clone(),
            constraints,
            outbound,
        })
    }

    fn set_constraints(&mut self, index: usize, patch: ConstraintsPatch) -> SfuResult<ProduceResponse> {
        let user = &mut self.users[index];
        let Some(upstream) = user.upstream.as_mut() else {
            return Err(SfuError::NotProducing(format!(
                "user '{}' is not producing; send an offer first",
                user.id
            )));
        };
        let constraints = patch.apply(upstream.constraints);
        upstream.constraints = constraints;
        for kind in Kind::ALL {
            upstream.forwarders[kind.index()].send(Control::Mute(!kind_enabled(constraints, kind)));
        }
        let user = &self.users[index];
        let outbound = self.others(&user.id, Some(constraints));
        tracing::info!(room = %self.id, user = %user.id, ?constraints, "constraints changed");
        self.constraints_changed(&user.id, constraints);
        Ok(ProduceResponse {
            answer: None,
            id: user.id.to_string(),
            user_info: user.info.clone(),
            constraints,
            outbound,
        })
    }

    fn others(&self, user_id: &str, constraints: Option<Constraints>) -> Vec<PeerInfo> {
        self.users
            .iter()
            .filter(|u| &*u.id != user_id)
            .map(|u| PeerInfo { id: u.id.to_string(), user_info: u.info.clone(), offer: None, constraints })
            .collect()
    }

    async fn consume(&mut self, user_id: &str, answers: Vec<ConsumeAnswer>) -> SfuResult<ConsumeResponse> {
        let consumer = self.users[self.user_index(user_id)?].id.clone();
        // Check every answer before applying any, so a bad one changes nothing.
        let mut checked = Vec::with_capacity(answers.len());
        for answer in answers {
            let producer = self.users[self.user_index(&answer.producer_id)?].id.clone();
            let key = (producer, consumer.clone());
            if !self.downstreams.get(&key).is_some_and(|d| d.pending_offer) {
                return Err(SfuError::NoPendingOffer(format!(
                    "no offer from producer '{}' is waiting for an answer from user '{user_id}'",
                    answer.producer_id
                )));
            }
            sdp::check_description(&answer.answer.sdp_type, &answer.answer.sdp, "answer")?;
            let remote = RTCSessionDescription::answer(answer.answer.sdp)
                .map_err(|e| SfuError::InvalidSdp(format!("the answer does not parse: {e}")))?;
            checked.push((key, remote));
        }
        for (key, remote) in checked {
            let downstream = self.downstreams.get_mut(&key).expect("checked above");
            downstream
                .peer
                .pc
                .set_remote_description(remote)
                .await
                .map_err(|e| SfuError::InvalidSdp(format!("the answer was refused: {e}")))?;
            downstream.pending_offer = false;
            let producer = self.users.iter().find(|u| u.id == key.0).expect("checked above");
            let upstream = producer.upstream.as_ref().expect("a downstream exists only for a producer");
            for kind in Kind::ALL {
                let Some(down) = &downstream.tracks[kind.index()] else { continue };
                let payload_type = negotiated_payload_type(down).await.unwrap_or(down.codec.payload_type);
                let forwarder = &upstream.forwarders[kind.index()];
                forwarder.send(Control::Subscribe(Subscriber {
                    consumer: consumer.clone(),
                    connected: downstream.connected.clone(),
                    track: down.track.clone(),
                    ssrc: down.ssrc,
                    payload_type,
                }));
            }
        }
        Ok(ConsumeResponse { status: "connected" })
    }

    async fn stop_produce(&mut self, user_id: &str) -> SfuResult<LeaveResponse> {
        let index = self.user_index(user_id)?;
        let user = &mut self.users[index];
        let Some(upstream) = user.upstream.take() else {
            return Err(SfuError::NotProducing(format!("user '{user_id}' is not producing")));
        };
        let producer = user.id.clone();
        self.close_producer(&producer, upstream).await;
        let user = &self.users[index];
        tracing::info!(room = %self.id, user = %user.id, "stopped producing");
        self.constraints_changed(&user.id, Constraints::NONE);
        Ok(LeaveResponse {
            id: user.id.to_string(),
            user_info: user.info.clone(),
            constraints: Some(Constraints::NONE),
            outbound: self.others(user_id, None),
        })
    }

    async fn remove_user(&mut self, user_id: &str) -> SfuResult<(LeaveResponse, bool)> {
        let index = self.user_index(user_id)?;
        let mut user = self.users.remove(index);
        if let Some(upstream) = user.upstream.take() {
            self.close_producer(&user.id, upstream).await;
        }
        let consuming: Vec<_> = self.downstreams.keys().filter(|k| k.1 == user.id).cloned().collect();
        for key in consuming {
            self.close_downstream(&key).await;
        }
        let emptied = self.users.is_empty();
        if emptied {
            self.closed = true;
            (self.shared.events)(ServerEvent::RoomClosed { room_id: self.id.to_string(), reason: RoomClosedReason::Empty });
        }
        tracing::info!(room = %self.id, user = %user.id, room_deleted = emptied, "user removed");
        let outbound = self.others(user_id, None);
        Ok((LeaveResponse { id: user.id.to_string(), user_info: user.info, constraints: None, outbound }, emptied))
    }

    async fn delete(&mut self, reason: RoomClosedReason) -> SfuResult<DeleteRoomResponse> {
        let count = self.users.len() as u32;
        close_all(self.downstreams.drain().map(|(_, d)| d)).await;
        for user in &mut self.users {
            if let Some(upstream) = user.upstream.take() {
                upstream.forwarders.iter().for_each(|f| f.send(Control::Stop));
                upstream.peer.close().await;
            }
        }
        self.users.clear();
        self.closed = true;
        tracing::info!(room = %self.id, users = count, ?reason, "room deleted");
        (self.shared.events)(ServerEvent::RoomClosed { room_id: self.id.to_string(), reason });
        Ok(DeleteRoomResponse { count })
    }

    /// Closes the downstream `key` (producer, consumer): the producer's forwarders stop writing
    /// to it first.
    async fn close_downstream(&mut self, key: &(Arc<str>, Arc<str>)) {
        let Some(downstream) = self.downstreams.remove(key) else { return };
        if let Some(upstream) = self.users.iter().find(|u| u.id == key.0).and_then(|u| u.upstream.as_ref()) {
            for forwarder in &upstream.forwarders {
                forwarder.send(Control::Unsubscribe(key.1.clone()));
            }
        }
        downstream.peer.close().await;
    }

    /// Closes a producer's upstream and every downstream carrying it.
    async fn close_producer(&mut self, producer: &Arc<str>, upstream: Upstream) {
        upstream.forwarders.iter().for_each(|f| f.send(Control::Stop));
        upstream.peer.close().await;
        let carrying: Vec<_> = self.downstreams.keys().filter(|k| &k.0 == producer).cloned().collect();
        close_all(carrying.into_iter().filter_map(|k| self.downstreams.remove(&k))).await;
    }

    /// Undoes `produce`'s first step after a later one failed.
    async fn discard_upstream(&mut self, index: usize, upstream: Upstream, is_new: bool) {
        if is_new {
            upstream.forwarders.iter().for_each(|f| f.send(Control::Stop));
            upstream.peer.close().await;
        } else {
            self.users[index].upstream = Some(upstream);
        }
    }

    fn label(&self, user: &Arc<str>, producer: &Arc<str>, direction: Direction) -> ConnectionLabel {
        ConnectionLabel { room_id: self.id.clone(), user_id: user.clone(), producer_id: producer.clone(), direction }
    }

    async fn open_upstream(&self, producer: &Arc<str>) -> SfuResult<Upstream> {
        let forwarders =
            Kind::ALL.map(|kind| ForwarderHandle::spawn(kind, producer.clone(), self.shared.forwarded.clone()));
        let events = UpstreamEvents { forwarders: forwarders.clone() };
        let label = self.label(producer, producer, Direction::Upstream);
        match build_peer(self.shared.peer_context(), label, events).await {
            Ok(peer) => Ok(Upstream { producer: producer.clone(), peer, constraints: Constraints::NONE, codecs: [None, None], forwarders }),
            Err(e) => {
                forwarders.iter().for_each(|f| f.send(Control::Stop));
                Err(e)
            }
        }
    }

    /// A new downstream from `producer` to `consumer`, with an offer carrying exactly its codecs.
    async fn open_downstream(&self, upstream: &Upstream, consumer: &Arc<str>) -> SfuResult<(Downstream, SessionDescription)> {
        let connected = Arc::new(AtomicBool::new(false));
        let events =
            DownstreamEvents { video: upstream.forwarders[Kind::Video.index()].clone(), connected: connected.clone() };
        let label = self.label(consumer, &upstream.producer, Direction::Downstream);
        let peer = build_peer(self.shared.peer_context(), label, events).await?;
        let mut downstream =
            Downstream { peer, connected, tracks: [None, None], pending_offer: false, offer_serial: 0 };
        let result = async {
            for kind in Kind::ALL {
                if let Some(codec) = &upstream.codecs[kind.index()] {
                    downstream.tracks[kind.index()] = Some(add_down_track(&downstream, upstream, kind, codec).await?);
                }
            }
            make_offer(&mut downstream).await
        }
        .await;
        match result {
            Ok(offer) => Ok((downstream, offer)),
            Err(e) => {
                downstream.peer.close().await;
                Err(e)
            }
        }
    }
}

impl Room {
    fn constraints_changed(&self, producer: &str, constraints: Constraints) {
        (self.shared.events)(ServerEvent::ConstraintsChange {
            room_id: self.id.to_string(),
            user_id: producer.to_owned(),
            constraints,
        });
    }

    /// Closes the downstream `key` if its current offer is still unanswered when the server's
    /// offer timeout is up.
    fn arm_offer_timeout(&self, key: &(Arc<str>, Arc<str>), downstream: &Downstream) {
        let Some(timeout) = self.shared.offer_timeout else { return };
        let (commands, producer, consumer, serial) =
            (self.commands.clone(), key.0.clone(), key.1.clone(), downstream.offer_serial);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(Command::OfferTimeout { producer, consumer, serial }).await;
            }
        });
    }

    async fn offer_timed_out(&mut self, producer: Arc<str>, consumer: Arc<str>, serial: u64) {
        let key = (producer, consumer);
        if !self.downstreams.get(&key).is_some_and(|d| d.pending_offer && d.offer_serial == serial) {
            return; // answered, replaced or closed in the meantime
        }
        self.close_downstream(&key).await;
        let timeout_ms = self.shared.offer_timeout.map_or(0, |t| t.as_millis() as u64);
        tracing::warn!(room = %self.id, user = %key.1, producer = %key.0, timeout_ms, "offer not answered in time: downstream closed");
        (self.shared.events)(ServerEvent::OfferTimeout {
            room_id: self.id.to_string(),
            user_id: key.1.to_string(),
            producer_id: key.0.to_string(),
            timeout_ms,
        });
    }

    /// Statistics of every connection whose other end is `user_id` (its upstream and the
    /// downstreams it consumes), or of every connection of the room.
    async fn connection_stats(&self, user_id: Option<&str>) -> SfuResult<Vec<ConnectionStats>> {
        if let Some(user_id) = user_id {
            self.user_index(user_id)?;
        }
        let wanted = |id: &str| user_id.is_none_or(|u| u == id);
        let mut out = Vec::new();
        for user in self.users.iter().filter(|u| wanted(&u.id)) {
            if let Some(upstream) = &user.upstream {
                out.push(upstream.peer.stats(&upstream.codecs).await);
            }
        }
        let mut keys: Vec<_> = self.downstreams.keys().filter(|k| wanted(&k.1)).cloned().collect();
        keys.sort();
        for key in keys {
            let downstream = &self.downstreams[&key];
            let codecs = downstream.tracks.each_ref().map(|t| t.as_ref().map(|t| t.codec.clone()));
            out.push(downstream.peer.stats(&codecs).await);
        }
        Ok(out)
    }
}

fn kind_enabled(constraints: Constraints, kind: Kind) -> bool {
    match kind {
        Kind::Audio => constraints.audio,
        Kind::Video => constraints.video,
    }
}

async fn guard<T>(fut: impl std::future::Future<Output = SfuResult<T>>) -> SfuResult<T> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %what, "a room command panicked");
            Err(SfuError::Internal(format!("internal error: {what}")))
        }
    }
}

async fn close_all(downstreams: impl Iterator<Item = Downstream>) {
    for downstream in downstreams {
        downstream.peer.close().await;
    }
}

/// Applies a producer's offer and returns the complete answer with the codec negotiated per kind.
async fn answer_offer(
    peer: &Peer,
    remote: RTCSessionDescription,
    sends: &sdp::ProducerOffer,
) -> SfuResult<(String, [Option<Codec>; 2])> {
    let pc = &peer.pc;
    pc.set_remote_description(remote)
        .await
        .map_err(|e| SfuError::InvalidSdp(format!("the offer was refused: {e}")))?;
    let answer = pc.create_answer(None).await.map_err(|e| SfuError::internal("creating the answer", e))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| SfuError::internal("applying the answer", e))?;
    let answer = peer.complete_local_description().await?;
    let mut codecs = sdp::negotiated_codecs(&sdp::media_sections(&answer.sdp)?);
    for (kind, sent) in [(Kind::Audio, sends.sends_audio), (Kind::Video, sends.sends_video)] {
        if !sent {
            codecs[kind.index()] = None;
        } else if codecs[kind.index()].is_none() {
            return Err(SfuError::InvalidSdp(format!(
                "no {} codec could be negotiated (supported: {})",
                kind.as_str(),
                sdp::SUPPORTED_CODECS.join(", ")
            )));
        }
    }
    Ok((answer.sdp, codecs))
}

fn rtc_codec(kind: Kind, codec: &Codec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: codec.mime_type(kind),
        clock_rate: codec.clock_rate,
        channels: codec.channels,
        sdp_fmtp_line: codec.fmtp.clone(),
        rtcp_feedback: codec
            .rtcp_fb
            .iter()
            .map(|fb| {
                let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
                RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() }
            })
            .collect(),
    }
}

fn random_ssrc() -> u32 {
    (uuid::Uuid::new_v4().as_u128() as u32).max(1)
}

async fn add_down_track(downstream: &Downstream, upstream: &Upstream, kind: Kind, codec: &Codec) -> SfuResult<DownTrack> {
    let producer = &*upstream.producer;
    let ssrc = random_ssrc();
    let rtc_codec = rtc_codec(kind, codec);
    let rtp_kind = match kind {
        Kind::Audio => RtpCodecKind::Audio,
        Kind::Video => RtpCodecKind::Video,
    };
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        producer.to_owned(),
        format!("{producer}-{}-{ssrc:08x}", kind.as_str()),
        format!("{producer}-{}", kind.as_str()),
        rtp_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: rtc_codec.clone(),
            ..Default::default()
        }],
    )));
    let transceiver = downstream
        .peer
        .pc
        .add_transceiver_from_track(
            track.clone() as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .map_err(|e| SfuError::internal("adding a downstream track", e))?;
    // The consumer may answer only with the producer's codec.
    transceiver
        .set_codec_preferences(vec![RTCRtpCodecParameters {
            rtp_codec: rtc_codec,
            payload_type: codec.payload_type,
            ..Default::default()
        }])
        .await
        .map_err(|e| SfuError::InvalidSdp(format!("codec {} cannot be forwarded: {e}", codec.name)))?;
    // The track is bound to its sender from here until it is removed or the connection closes.
    spawn_keyframe_relay(track.clone(), upstream.forwarders[kind.index()].clone());
    Ok(DownTrack { track, transceiver, ssrc, codec: codec.clone() })
}

async fn make_offer(downstream: &mut Downstream) -> SfuResult<SessionDescription> {
    let pc = &downstream.peer.pc;
    let offer = pc.create_offer(None).await.map_err(|e| SfuError::internal("creating an offer", e))?;
    pc.set_local_description(offer)
        .await
        .map_err(|e| SfuError::internal("applying an offer", e))?;
    let offer = downstream.peer.complete_local_description().await?;
    downstream.pending_offer = true;
    downstream.offer_serial += 1;
    Ok(SessionDescription::offer(offer.sdp))
}

/// Brings an existing downstream in line with the producer's new codecs and makes a new offer
/// on the same connection.
async fn renegotiate_downstream(
    downstream: &mut Downstream,
    upstream: &Upstream,
    consumer: &Arc<str>,
) -> SfuResult<SessionDescription> {
    for kind in Kind::ALL {
        let wanted = &upstream.codecs[kind.index()];
        let keep = match (&downstream.tracks[kind.index()], wanted) {
            (Some(current), Some(codec)) => current.codec.same_format(codec),
            (None, None) => true,
            _ => false,
        };
        if keep {
            continue;
        }
        if let Some(old) = downstream.tracks[kind.index()].take() {
            upstream.forwarders[kind.index()].send(Control::Unsubscribe(consumer.clone()));
            if let Ok(Some(sender)) = old.transceiver.sender().await {
                downstream
                    .peer
                    .pc
                    .remove_track(&sender)
                    .await
                    .map_err(|e| SfuError::internal("removing a downstream track", e))?;
            }
        }
        if let Some(codec) = wanted {
            downstream.tracks[kind.index()] = Some(add_down_track(downstream, upstream, kind, codec).await?);
        }
    }
    make_offer(downstream).await
}

/// The payload type the consumer's answer settled on for this track.
async fn negotiated_payload_type(down: &DownTrack) -> Option<u8> {
    let sender = down.transceiver.sender().await.ok()??;
    let parameters = sender.get_parameters().await.ok()?;
    parameters
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&down.codec.mime_type(kind_of_mime(&c.rtp_codec.mime_type))))
        .or_else(|| parameters.rtp_parameters.codecs.first())
        .map(|c| c.payload_type)
}

fn kind_of_mime(mime: &str) -> Kind {
    if mime.to_ascii_lowercase().starts_with("audio/") {
        Kind::Audio
    } else {
        Kind::Video
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_command_becomes_an_internal_error() {
        let result: SfuResult<()> = guard(async { panic!("boom") }).await;
        let err = result.unwrap_err();
        assert_eq!(err.code(), "INTERNAL");
        assert!(err.to_string().contains("boom"));
    }
}
