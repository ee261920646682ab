//! A room is a task that owns its users and connections and runs one command at a time, so
//! concurrent calls on a room are serialised without a lock held across an await.
//! Every command either completes or leaves the room as it found it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{RTCSdpType, RTCSessionDescription};

use super::api::*;
use super::error::{SfuError, SfuResult};
use super::events::{ConnectionLabel, ConnectionState, Direction, RoomClosedReason, ServerEvent};
use super::conn::{Conn, Forward, LoopConn, LoopRole, Placement, SendTrack};
use super::forward::{Control, ForwarderHandle};
use super::peer::{build_peer, BudgetSlot, PeerEvents};
use super::sdp::{self, Codec, Kind};
use super::stats::ConnectionStats;
use super::view::{ConsumerView, KindCodecs, ProducerView, RoomView, UserView};
use super::Shared;
use crate::media::codec::VideoCodec;

type Reply<T> = oneshot::Sender<SfuResult<T>>;
/// A downstream's key: (producer, consumer).
type PairKey = (Arc<str>, Arc<str>);
/// A downstream a call opened, with the offer it made, not yet committed to the room.
type Opened = (PairKey, Downstream, SessionDescription);

pub enum Command {
    AddUser { user_id: String, user_info: Value, reply: Reply<AddUserResponse> },
    Produce { user_id: String, request: ProduceRequest, reply: Reply<ProduceResponse> },
    Consume { user_id: String, answers: Vec<ConsumeAnswer>, reply: Reply<ConsumeResponse> },
    StopProduce { user_id: String, reply: Reply<LeaveResponse> },
    /// Replies with the response and whether the room is now empty (and so gone).
    RemoveUser { user_id: String, reply: Reply<(LeaveResponse, bool)> },
    Delete { reason: RoomClosedReason, reply: Reply<DeleteRoomResponse> },
    /// What the room holds, for `getRoom`.
    Inspect { reply: Reply<RoomView> },
    /// Per-connection statistics, of one user's connections or of all.
    ConnectionStats { user_id: Option<String>, reply: Reply<Vec<ConnectionStats>> },
    /// Caps the layers `user_id` gets of `producer_id`'s video.
    SetPreferredLayers { user_id: String, producer_id: String, layers: PreferredLayers, reply: Reply<LayersResponse> },
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
            Command::Inspect { reply } => drop(reply.send(Err(err))),
            Command::ConnectionStats { reply, .. } => drop(reply.send(Err(err))),
            Command::SetPreferredLayers { reply, .. } => drop(reply.send(Err(err))),
            Command::OfferTimeout { .. } => {}
        }
    }
}

/// A room's counts, published after every command so that `stats()` reads them without
/// waiting for a room that is busy.
#[derive(Debug, Default)]
pub struct RoomCounts {
    users: AtomicUsize,
    upstreams: AtomicUsize,
    downstreams: AtomicUsize,
}

impl RoomCounts {
    pub fn read(&self) -> RoomStats {
        RoomStats {
            users: self.users.load(Ordering::Acquire),
            upstreams: self.upstreams.load(Ordering::Acquire),
            downstreams: self.downstreams.load(Ordering::Acquire),
        }
    }

    fn publish(&self, stats: RoomStats) {
        self.users.store(stats.users, Ordering::Release);
        self.upstreams.store(stats.upstreams, Ordering::Release);
        self.downstreams.store(stats.downstreams, Ordering::Release);
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RoomStats {
    pub users: usize,
    pub upstreams: usize,
    pub downstreams: usize,
}

/// What the server keeps of a running room: its queue, its published counts, and the switch
/// that ends it at once (server close), even in the middle of a command.
pub struct RoomLink {
    pub tx: mpsc::Sender<Command>,
    pub counts: Arc<RoomCounts>,
    pub shutdown: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

struct User {
    id: Arc<str>,
    info: Value,
    upstream: Option<Upstream>,
}

struct Upstream {
    producer: Arc<str>,
    /// Names the producer's streams in the SDP the server writes (msid, cname): a token of
    /// ours, so that no user id, whatever characters it holds, reaches SDP text.
    token: Arc<str>,
    peer: Conn,
    constraints: Constraints,
    /// The codec the producer sends per kind (`None`: the kind is not produced).
    codecs: [Option<Codec>; 2],
    forward: Forward,
}

struct DownTrack {
    track: SendTrack,
    ssrc: u32,
    codec: Codec,
}

struct Downstream {
    peer: Conn,
    /// Whether the connection is up; media is written to it only then.
    connected: Arc<AtomicBool>,
    tracks: [Option<DownTrack>; 2],
    pending_offer: bool,
    /// Tells the latest offer apart from earlier ones whose timers may still fire.
    offer_serial: u64,
    /// The serial of the last offer handed out to the backend: an offer made but never handed
    /// out (its command failed half way) is one nobody can answer.
    handed_out: u64,
    /// The highest spatial and temporal layers its consumer asked for (`setPreferredLayers`).
    preferred: (u8, u8),
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
    producer: Forward,
    connected: Arc<AtomicBool>,
}

impl PeerEvents for DownstreamEvents {
    fn on_state(&self, state: ConnectionState) {
        match state {
            ConnectionState::Connected => {
                self.connected.store(true, Ordering::Release);
                self.producer.request_keyframe();
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
    counts: Arc<RoomCounts>,
    /// The media loop the room's connections live on, when the server runs the loops.
    placement: Option<Placement>,
    /// Tests make a command panic at a named step, to prove the room survives it...
    #[cfg(test)]
    fail_at: Option<&'static str>,
    /// ...or hang there (after telling the test), to prove nothing waits for it.
    #[cfg(test)]
    pause_at: Option<(&'static str, Arc<tokio::sync::Notify>)>,
}

impl Room {
    /// Starts the room's task; `first_user` is the user `createRoom` may bring along.
    pub fn spawn(id: &str, shared: Arc<Shared>, first_user: Option<(String, Value)>) -> RoomLink {
        let (room, tx, rx) = Self::new(id, shared, first_user);
        let counts = room.counts.clone();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(room.run(rx, shutdown_rx));
        RoomLink { tx, counts, shutdown, task }
    }

    fn new(
        id: &str,
        shared: Arc<Shared>,
        first_user: Option<(String, Value)>,
    ) -> (Room, mpsc::Sender<Command>, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(64);
        let placement = shared.engine.as_ref().map(|e| e.place());
        let mut room = Room {
            id: Arc::from(id),
            shared,
            users: Vec::new(),
            downstreams: HashMap::new(),
            closed: false,
            commands: tx.downgrade(),
            counts: Arc::default(),
            placement,
            #[cfg(test)]
            fail_at: None,
            #[cfg(test)]
            pause_at: None,
        };
        if let Some((user_id, info)) = first_user {
            room.users.push(User { id: Arc::from(user_id.as_str()), info, upstream: None });
        }
        room.counts.publish(room.stats());
        (room, tx, rx)
    }

    /// Panics if a test asked for a panic at `step`; nothing outside tests.
    #[cfg(test)]
    fn fail_point(&self, step: &str) {
        if self.fail_at == Some(step) {
            panic!("fail point {step}");
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn fail_point(&self, _step: &str) {}

    /// Hangs forever if a test asked for a pause at `step`; nothing outside tests.
    async fn pause_point(&self, _step: &str) {
        #[cfg(test)]
        if let Some((step, paused)) = &self.pause_at {
            if *step == _step {
                paused.notify_one();
                std::future::pending::<()>().await;
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut shutdown: watch::Receiver<bool>) {
        let mut ended_by = None;
        loop {
            let command = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => {
                    ended_by = Some(RoomClosedReason::ServerClosed);
                    break;
                }
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
            };
            // A server close does not wait for the command: its future is dropped at its next
            // await, and whatever it had half made is closed by `delete` below.
            let mut stop = shutdown.clone();
            let interrupted = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => true,
                _ = self.execute(command) => false,
            };
            if interrupted {
                ended_by = Some(RoomClosedReason::ServerClosed);
                break;
            }
            self.counts.publish(self.stats());
            if self.closed {
                break;
            }
        }
        if let Some(reason) = ended_by {
            if let Err(Failure::Panic(_)) = guard(self.delete(reason)).await {
                // Whatever is left is dropped with the room; closing it is best effort.
                self.closed = true;
            }
            self.counts.publish(self.stats());
        }
        // Calls that raced with the room's end learn that it is gone.
        rx.close();
        let gone = |room: &Room| match ended_by {
            Some(RoomClosedReason::ServerClosed) => SfuError::ServerClosed,
            _ => SfuError::room_not_found(&room.id),
        };
        while let Ok(command) = rx.try_recv() {
            command.reject(gone(&self));
        }
        tracing::debug!(room = %self.id, "room task ended");
    }

    async fn execute(&mut self, command: Command) {
        match command {
            Command::AddUser { user_id, user_info, reply } => {
                let r = guard(self.add_user(user_id, user_info)).await;
                self.settle(reply, r).await;
            }
            Command::Produce { user_id, request, reply } => {
                let r = guard(self.produce(&user_id, request)).await;
                self.settle(reply, r).await;
            }
            Command::Consume { user_id, answers, reply } => {
                let r = guard(self.consume(&user_id, answers)).await;
                self.settle(reply, r).await;
            }
            Command::StopProduce { user_id, reply } => {
                let r = guard(self.stop_produce(&user_id)).await;
                self.settle(reply, r).await;
            }
            Command::RemoveUser { user_id, reply } => {
                let r = guard(self.remove_user(&user_id)).await;
                self.settle(reply, r).await;
            }
            Command::Delete { reason, reply } => {
                let r = guard(self.delete(reason)).await;
                self.settle(reply, r).await;
            }
            Command::Inspect { reply } => {
                let r = guard(async { Ok(self.inspect()) }).await;
                self.settle(reply, r).await;
            }
            Command::ConnectionStats { user_id, reply } => {
                let r = guard(self.connection_stats(user_id.as_deref())).await;
                self.settle(reply, r).await;
            }
            Command::SetPreferredLayers { user_id, producer_id, layers, reply } => {
                let r = guard(self.set_preferred_layers(&user_id, &producer_id, layers)).await;
                self.settle(reply, r).await;
            }
            Command::OfferTimeout { producer, consumer, serial } => {
                let r = guard(async {
                    self.offer_timed_out(producer, consumer, serial).await;
                    Ok(())
                })
                .await;
                if let Err(Failure::Panic(_)) = r {
                    self.repair().await;
                }
            }
        }
    }

    /// Replies to a command. After a panic the room first drops whatever the command left half
    /// made, so that the next calls find a consistent room.
    async fn settle<T>(&mut self, reply: Reply<T>, result: Result<T, Failure>) {
        let result = match result {
            Ok(value) => Ok(value),
            Err(Failure::Error(e)) => Err(e),
            Err(Failure::Panic(e)) => {
                self.repair().await;
                Err(e)
            }
        };
        let _ = reply.send(result);
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

    /// Changes nothing but the consumer's layer selection, on the producer's loop.
    async fn set_preferred_layers(&mut self, user_id: &str, producer_id: &str, layers: PreferredLayers) -> SfuResult<LayersResponse> {
        let consumer = self.user_index(user_id)?;
        let producer = self.user_index(producer_id)?;
        if consumer == producer {
            return Err(SfuError::InvalidArgument(format!("user '{user_id}' does not consume its own media")));
        }
        let Some(upstream) = &self.users[producer].upstream else {
            return Err(SfuError::NotProducing(format!("user '{producer_id}' in room '{}' is not producing", self.id)));
        };
        let key = (self.users[producer].id.clone(), self.users[consumer].id.clone());
        let Some(downstream) = self.downstreams.get_mut(&key) else {
            return Err(SfuError::InvalidArgument(format!(
                "user '{user_id}' has no connection from producer '{producer_id}' (its offer was not answered in time); the producer's next produce offers a new one"
            )));
        };
        let spatial = layers.spatial.unwrap_or(crate::media::layers::HIGHEST);
        let temporal = layers.temporal.unwrap_or(crate::media::layers::HIGHEST);
        // Kept for the consumer's next subscription (its answer, a renegotiation) as well.
        downstream.preferred = (spatial, temporal);
        let chosen = upstream.forward.set_preferred_layer(&downstream.peer, spatial, temporal).await;
        // Before its answer, the consumer has no layer yet: what it asked for is what applies.
        let fallback = layers.spatial.unwrap_or(0);
        Ok(LayersResponse { spatial_layer: chosen.and_then(|c| c.target.or(c.current)).unwrap_or(fallback), temporal_layer: layers.temporal })
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
        let producers = self.users.iter().filter(|u| u.upstream.is_some()).count();
        let mut slots = self.shared.budget.reserve(producers)?;
        let mut created: Vec<Opened> = Vec::new();
        for producer in &self.users {
            let Some(upstream) = &producer.upstream else { continue };
            let Some(slot) = slots.pop() else { break };
            match self.open_downstream(upstream, &upstream.codecs, &consumer, slot).await {
                Ok((downstream, offer)) => {
                    created.push(((producer.id.clone(), consumer.clone()), downstream, offer))
                }
                Err(e) => {
                    close_all(created.into_iter().map(|(_, d, _)| d)).await;
                    return Err(e);
                }
            }
        }
        self.fail_point("add_user:opened");
        let mut offers: HashMap<Arc<str>, SessionDescription> = HashMap::new();
        for (key, mut downstream, offer) in created {
            offers.insert(key.0.clone(), offer);
            self.arm_offer_timeout(&key, &mut downstream);
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

    /// Produces, or re-produces on the same connections. Everything that can fail for a
    /// reason of the caller's or of the server's limits (the offer, the connection budget,
    /// ports) fails before anything is committed, and is undone: the offer rolled back on an
    /// existing upstream, new connections closed. Past that point only an internal error of
    /// the WebRTC stack can fail a step; the downstreams it touched are then closed, so that
    /// the room stays consistent, and the call rejects.
    async fn produce(&mut self, user_id: &str, request: ProduceRequest) -> SfuResult<ProduceResponse> {
        let index = self.user_index(user_id)?;
        let Some(offer) = request.offer else {
            let Some(patch) = request.constraints else {
                return Err(SfuError::InvalidArgument("produce needs an offer, constraints, or both".into()));
            };
            return self.set_constraints(index, patch);
        };
        // The loops select a layer per consumer; the task engine forwards one layer.
        let simulcast = if self.placement.is_some() { sdp::Simulcast::Layers } else { sdp::Simulcast::OneLayer };
        let plan = sdp::read_producer_offer_with(&offer.sdp_type, &offer.sdp, simulcast)?;
        let remote = RTCSessionDescription::offer(plan.sdp.clone())
            .map_err(|e| SfuError::InvalidSdp(format!("the offer does not parse: {e}")))?;
        let derived = Constraints { audio: plan.sends.sends_audio, video: plan.sends.sends_video };
        let constraints = request.constraints.map_or(derived, |patch| patch.apply(derived));
        let producer_id = self.users[index].id.clone();
        let is_new = self.users[index].upstream.is_none();
        if !is_new && plan.anonymous_sender {
            return Err(SfuError::InvalidSdp(
                "a re-produce's sending sections must declare their SSRCs (a=ssrc) or RIDs (a=rid): the server binds renegotiated streams by them".into(),
            ));
        }

        // Every connection this call may open is reserved first.
        let missing: Vec<Arc<str>> = self
            .users
            .iter()
            .filter(|u| u.id != producer_id && !self.downstreams.contains_key(&(producer_id.clone(), u.id.clone())))
            .map(|u| u.id.clone())
            .collect();
        let mut slots = self.shared.budget.reserve(missing.len() + usize::from(is_new))?;
        let mut fresh = None;
        if is_new {
            let slot = slots.pop().ok_or_else(|| SfuError::Internal("no connection slot reserved".into()))?;
            fresh = Some(self.open_upstream(&producer_id, slot).await?);
        }

        // 1. The offer applied to the upstream, the answer made but not yet committed.
        let staged = match upstream_of(&fresh, &self.users[index]) {
            Ok(upstream) => stage_answer(&upstream.peer, remote, &plan.sends).await,
            Err(e) => Err(e),
        };
        let (answer, codecs) = match staged {
            Ok(staged) => staged,
            Err(e) => {
                self.undo_upstream(index, fresh).await;
                return Err(e);
            }
        };
        self.fail_point("produce:staged");
        self.pause_point("produce:staged").await;

        // 2. New downstreams, for the users who have none from this producer.
        let mut opened: Vec<Opened> = Vec::new();
        let mut failure = None;
        if let Ok(upstream) = upstream_of(&fresh, &self.users[index]) {
            for (consumer, slot) in missing.iter().zip(slots.drain(..)) {
                match self.open_downstream(upstream, &codecs, consumer, slot).await {
                    Ok((downstream, offer)) => opened.push(((producer_id.clone(), consumer.clone()), downstream, offer)),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failure {
            close_all(opened.into_iter().map(|(_, d, _)| d)).await;
            self.undo_upstream(index, fresh).await;
            return Err(e);
        }
        self.fail_point("produce:opened");

        // 3. The existing downstreams renegotiated: new offers, not yet handed out.
        let mut existing: Vec<_> = self.downstreams.keys().filter(|k| k.0 == producer_id).cloned().collect();
        existing.sort();
        let mut renegotiated: Vec<(PairKey, SessionDescription)> = Vec::new();
        let mut failure = None;
        if let Ok(upstream) = upstream_of(&fresh, &self.users[index]) {
            for key in &existing {
                let Some(downstream) = self.downstreams.get_mut(key) else { continue };
                match renegotiate_downstream(downstream, upstream, &codecs, &key.1).await {
                    Ok(offer) => renegotiated.push((key.clone(), offer)),
                    Err(e) => {
                        failure = Some((key.clone(), e));
                        break;
                    }
                }
            }
        }
        let failure = match failure {
            Some((key, e)) => Some((Some(key), e)),
            None => {
                self.fail_point("produce:renegotiated");
                // 4. The upstream's answer committed.
                let committed = match upstream_of(&fresh, &self.users[index]) {
                    Ok(upstream) => commit_answer(&upstream.peer, answer).await,
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(answer) => {
                        if let Ok(upstream) = upstream_of(&fresh, &self.users[index]) {
                            upstream.forward.layers(plan.video_layers);
                        }
                        return Ok(self.commit_produce(index, fresh, codecs, constraints, opened, renegotiated, answer));
                    }
                    Err(e) => Some((None, e)),
                }
            }
        };
        let Some((failed, e)) = failure else { return Err(SfuError::Internal("unreachable".into())) };
        close_all(opened.into_iter().map(|(_, d, _)| d)).await;
        for key in renegotiated.into_iter().map(|(key, _)| key).chain(failed) {
            tracing::error!(room = %self.id, producer = %key.0, user = %key.1, error = %e, "renegotiation failed: downstream closed");
            self.close_downstream(&key).await;
        }
        self.undo_upstream(index, fresh).await;
        Err(e)
    }

    /// The last step of `produce`: nothing here can fail.
    #[allow(clippy::too_many_arguments)]
    fn commit_produce(
        &mut self,
        index: usize,
        fresh: Option<Upstream>,
        codecs: [Option<Codec>; 2],
        constraints: Constraints,
        opened: Vec<Opened>,
        renegotiated: Vec<(PairKey, SessionDescription)>,
        answer: String,
    ) -> ProduceResponse {
        let is_new = fresh.is_some();
        if let Some(upstream) = fresh {
            self.users[index].upstream = Some(upstream);
        }
        let producer_id = self.users[index].id.clone();
        let mut previous_constraints = Constraints::NONE;
        if let Some(upstream) = self.users[index].upstream.as_mut() {
            upstream.codecs = codecs;
            previous_constraints = std::mem::replace(&mut upstream.constraints, constraints);
            for kind in Kind::ALL {
                if let Some(codec) = &upstream.codecs[kind.index()] {
                    upstream.forward.source(kind, codec.payload_type, codec.clock_rate, VideoCodec::from_name(&codec.name));
                }
                upstream.forward.mute(kind, !kind_enabled(constraints, kind));
            }
        }
        let mut offers: HashMap<Arc<str>, SessionDescription> = HashMap::new();
        for (key, offer) in renegotiated {
            if let Some(mut downstream) = self.downstreams.remove(&key) {
                self.arm_offer_timeout(&key, &mut downstream);
                self.downstreams.insert(key.clone(), downstream);
            }
            offers.insert(key.1, offer);
        }
        for (key, mut downstream, offer) in opened {
            offers.insert(key.1.clone(), offer);
            self.arm_offer_timeout(&key, &mut downstream);
            self.downstreams.insert(key, downstream);
        }
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
            self.constraints_changed(&producer_id, constraints);
        }
        let producer = &self.users[index];
        ProduceResponse {
            answer: Some(SessionDescription::answer(answer)),
            id: producer.id.to_string(),
            user_info: producer.info.clone(),
            constraints,
            outbound,
        }
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
            upstream.forward.mute(kind, !kind_enabled(constraints, kind));
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

    /// Applies answers to pending offers, all or none: every answer is checked against its
    /// offer before the first is applied.
    async fn consume(&mut self, user_id: &str, answers: Vec<ConsumeAnswer>) -> SfuResult<ConsumeResponse> {
        let consumer = self.users[self.user_index(user_id)?].id.clone();
        let mut checked = Vec::with_capacity(answers.len());
        for answer in answers {
            let producer = self.users[self.user_index(&answer.producer_id)?].id.clone();
            let key = (producer, consumer.clone());
            let Some(downstream) = self.downstreams.get(&key).filter(|d| d.pending_offer) else {
                return Err(SfuError::NoPendingOffer(format!(
                    "no offer from producer '{}' is waiting for an answer from user '{user_id}'",
                    answer.producer_id
                )));
            };
            let sections = sdp::check_description(&answer.answer.sdp_type, &answer.answer.sdp, "answer")?;
            let offer = downstream
                .peer
                .pending_local_description()
                .await
                .ok_or_else(|| SfuError::Internal("a pending offer without a local description".into()))?;
            sdp::check_answer_matches_offer(&sdp::media_sections(&offer.sdp)?, &sections, &answer.answer.sdp)?;
            let remote = RTCSessionDescription::answer(answer.answer.sdp)
                .map_err(|e| SfuError::InvalidSdp(format!("the answer does not parse: {e}")))?;
            checked.push((key, remote));
        }
        self.fail_point("consume:checked");
        for (key, remote) in checked {
            let Some(downstream) = self.downstreams.get_mut(&key) else { continue };
            if let Err(e) = downstream.peer.set_remote_description(remote).await {
                // The checks above passed, so the stack refused what they do not cover, after
                // moving the connection on: nobody can answer its offer any more. It is closed
                // (its consumer sees `closed`; the producer's next produce offers a new one),
                // so the room stays consistent. Earlier answers of this call stay applied.
                tracing::warn!(room = %self.id, user = %key.1, producer = %key.0, error = %e, "an answer the checks passed was refused: downstream closed");
                self.close_downstream(&key).await;
                return Err(SfuError::InvalidSdp(format!("the answer was refused: {e}")));
            }
            downstream.pending_offer = false;
            let Some(upstream) = self.users.iter().find(|u| u.id == key.0).and_then(|u| u.upstream.as_ref()) else {
                continue;
            };
            for kind in Kind::ALL {
                let Some(down) = &downstream.tracks[kind.index()] else { continue };
                let mime = down.codec.mime_type(kind);
                let payload_type =
                    downstream.peer.negotiated_payload_type(&down.track, mime).await.unwrap_or(down.codec.payload_type);
                let preferred = downstream.preferred;
                upstream.forward.subscribe(kind, &consumer, &downstream.peer, &downstream.connected, &down.track, down.ssrc, payload_type, preferred);
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
                upstream.forward.stop();
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
            upstream.forward.unsubscribe(&key.1, Some(&downstream.peer));
        }
        downstream.peer.close().await;
    }

    /// Closes a producer's upstream and every downstream carrying it.
    async fn close_producer(&mut self, producer: &Arc<str>, upstream: Upstream) {
        upstream.forward.stop();
        upstream.peer.close().await;
        let carrying: Vec<_> = self.downstreams.keys().filter(|k| &k.0 == producer).cloned().collect();
        close_all(carrying.into_iter().filter_map(|k| self.downstreams.remove(&k))).await;
    }

    /// Undoes `produce`'s first step: a new upstream is closed, an existing one has the offer
    /// rolled back (it goes on with what it had negotiated before).
    async fn undo_upstream(&mut self, index: usize, fresh: Option<Upstream>) {
        if let Some(upstream) = fresh {
            upstream.forward.stop();
            upstream.peer.close().await;
        } else if let Some(upstream) = self.users[index].upstream.as_ref() {
            let mut rollback = RTCSessionDescription::default();
            rollback.sdp_type = RTCSdpType::Rollback;
            if let Err(e) = upstream.peer.set_remote_description(rollback).await {
                // Still have-remote-offer: the producer cannot renegotiate until it is closed.
                tracing::error!(room = %self.id, user = %upstream.producer, error = %e, "rolling back an offer failed: upstream closed");
                if let Some(upstream) = self.users[index].upstream.take() {
                    let producer = upstream.producer.clone();
                    self.close_producer(&producer, upstream).await;
                    self.constraints_changed(&producer, Constraints::NONE);
                }
            }
        }
    }

    /// After a command panicked: closes whatever it left half made, so that every remaining
    /// downstream has its producer's upstream and its consumer, and no forwarder writes to a
    /// consumer that has no downstream.
    async fn repair(&mut self) {
        for upstream in self.users.iter().filter_map(|u| u.upstream.as_ref()) {
            if upstream.peer.has_pending_remote_description().await {
                let mut rollback = RTCSessionDescription::default();
                rollback.sdp_type = RTCSdpType::Rollback;
                let _ = upstream.peer.set_remote_description(rollback).await;
            }
        }
        let orphans: Vec<_> = self
            .downstreams
            .iter()
            .filter(|((producer, consumer), d)| {
                let has_upstream = self.users.iter().any(|u| &u.id == producer && u.upstream.is_some());
                let has_consumer = self.users.iter().any(|u| &u.id == consumer);
                let unanswerable = d.pending_offer && d.handed_out != d.offer_serial;
                !has_upstream || !has_consumer || unanswerable
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in orphans {
            tracing::warn!(room = %self.id, producer = %key.0, user = %key.1, "downstream left half made: closed");
            self.close_downstream(&key).await;
        }
        for user in &self.users {
            let Some(upstream) = &user.upstream else { continue };
            for consumer in self.users.iter().filter(|c| c.id != user.id) {
                let key = (user.id.clone(), consumer.id.clone());
                match self.downstreams.get(&key) {
                    Some(d) if !d.pending_offer => {}
                    // A pending offer's subscription is made when its answer comes.
                    d => upstream.forward.unsubscribe(&consumer.id, d.map(|d| &d.peer)),
                }
            }
        }
    }

    fn label(&self, user: &Arc<str>, producer: &Arc<str>, direction: Direction) -> ConnectionLabel {
        ConnectionLabel { room_id: self.id.clone(), user_id: user.clone(), producer_id: producer.clone(), direction }
    }

    async fn open_upstream(&self, producer: &Arc<str>, slot: BudgetSlot) -> SfuResult<Upstream> {
        let label = self.label(producer, producer, Direction::Upstream);
        let (peer, forward) = match &self.placement {
            Some(placement) => {
                let conn = LoopConn::open(placement, self.shared.peer_context(), slot, label, LoopRole::Upstream).await?;
                let forward = Forward::Loop { lp: placement.media_loop().clone(), producer: conn.id };
                (Conn::Loop(conn), forward)
            }
            None => {
                let forwarders =
                    Kind::ALL.map(|kind| ForwarderHandle::spawn(kind, producer.clone(), self.shared.forwarded.clone()));
                let events = UpstreamEvents { forwarders: forwarders.clone() };
                match build_peer(self.shared.peer_context(), slot, label, events).await {
                    Ok(peer) => (Conn::Async(peer), Forward::Async(forwarders)),
                    Err(e) => {
                        forwarders.iter().for_each(|f| f.send(Control::Stop));
                        return Err(e);
                    }
                }
            }
        };
        Ok(Upstream {
            producer: producer.clone(),
            token: Arc::from(sdp_token().as_str()),
            peer,
            constraints: Constraints::NONE,
            codecs: [None, None],
            forward,
        })
    }

    /// A new downstream from `producer` to `consumer`, with an offer carrying exactly `codecs`.
    async fn open_downstream(
        &self,
        upstream: &Upstream,
        codecs: &[Option<Codec>; 2],
        consumer: &Arc<str>,
        slot: BudgetSlot,
    ) -> SfuResult<(Downstream, SessionDescription)> {
        let connected = Arc::new(AtomicBool::new(false));
        let label = self.label(consumer, &upstream.producer, Direction::Downstream);
        let peer = match (&self.placement, upstream.peer.loop_id()) {
            (Some(placement), Some(producer)) => {
                let role = LoopRole::Downstream { producer };
                Conn::Loop(LoopConn::open(placement, self.shared.peer_context(), slot, label, role).await?)
            }
            _ => {
                let events = DownstreamEvents { producer: upstream.forward.clone(), connected: connected.clone() };
                Conn::Async(build_peer(self.shared.peer_context(), slot, label, events).await?)
            }
        };
        let mut downstream =
            Downstream {
            peer,
            connected,
            tracks: [None, None],
            pending_offer: false,
            offer_serial: 0,
            handed_out: 0,
            preferred: (crate::media::layers::HIGHEST, crate::media::layers::HIGHEST),
        };
        let result = async {
            for kind in Kind::ALL {
                if let Some(codec) = &codecs[kind.index()] {
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

    /// Marks the downstream's current offer as handed out, and closes the downstream if that
    /// offer is still unanswered when the server's offer timeout is up.
    fn arm_offer_timeout(&self, key: &(Arc<str>, Arc<str>), downstream: &mut Downstream) {
        downstream.handed_out = downstream.offer_serial;
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

    /// What the room holds: users, their producers, and every downstream with its offer state.
    fn inspect(&self) -> RoomView {
        let users = self
            .users
            .iter()
            .map(|u| UserView {
                id: u.id.to_string(),
                user_info: u.info.clone(),
                producer: u.upstream.as_ref().map(|up| ProducerView {
                    constraints: up.constraints,
                    codecs: KindCodecs::of(&up.codecs),
                    state: up.peer.state(),
                }),
            })
            .collect();
        let mut keys: Vec<_> = self.downstreams.keys().collect();
        keys.sort();
        let consumers = keys
            .into_iter()
            .map(|key| {
                let d = &self.downstreams[key];
                ConsumerView {
                    producer_id: key.0.to_string(),
                    user_id: key.1.to_string(),
                    state: d.peer.state(),
                    pending_offer: d.pending_offer,
                    codecs: KindCodecs::of(&d.tracks.each_ref().map(|t| t.as_ref().map(|t| t.codec.clone()))),
                }
            })
            .collect();
        RoomView { room_id: self.id.to_string(), users, consumers }
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

/// How a command failed: an error it returned, or a panic caught here.
enum Failure {
    Error(SfuError),
    Panic(SfuError),
}

async fn guard<T>(fut: impl std::future::Future<Output = SfuResult<T>>) -> Result<T, Failure> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result.map_err(Failure::Error),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %what, "a room command panicked");
            Err(Failure::Panic(SfuError::Internal(format!("internal error: {what}"))))
        }
    }
}

async fn close_all(downstreams: impl Iterator<Item = Downstream>) {
    for downstream in downstreams {
        downstream.peer.close().await;
    }
}

fn upstream_of<'a>(fresh: &'a Option<Upstream>, user: &'a User) -> SfuResult<&'a Upstream> {
    fresh
        .as_ref()
        .or(user.upstream.as_ref())
        .ok_or_else(|| SfuError::Internal(format!("user '{}' lost its upstream", user.id)))
}

/// Applies a producer's offer to its upstream and makes the answer, without committing it:
/// until `commit_answer`, the offer can still be rolled back. Returns the answer and the codec
/// it settles on per kind.
async fn stage_answer(
    peer: &Conn,
    remote: RTCSessionDescription,
    sends: &sdp::ProducerOffer,
) -> SfuResult<(RTCSessionDescription, [Option<Codec>; 2])> {
    peer.set_remote_description(remote)
        .await
        .map_err(|e| SfuError::InvalidSdp(format!("the offer was refused: {e}")))?;
    let answer = peer.create_answer().await.map_err(|e| SfuError::internal("creating the answer", e))?;
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
    Ok((answer, codecs))
}

/// Commits a staged answer and returns it complete, with its candidates.
async fn commit_answer(peer: &Conn, answer: RTCSessionDescription) -> SfuResult<String> {
    peer.set_local_description(answer)
        .await
        .map_err(|e| SfuError::internal("applying the answer", e))?;
    Ok(peer.complete_local_description().await?.sdp)
}

/// A name for SDP text (msid, cname): letters and digits only, whatever the ids are.
fn sdp_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
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
    let ssrc = random_ssrc();
    let track = downstream.peer.add_send_track(kind, codec, rtc_codec(kind, codec), &upstream.token, ssrc).await?;
    // The track is bound to its sender from here until it is removed or the connection closes.
    upstream.forward.relay_keyframe_requests(kind, &track);
    Ok(DownTrack { track, ssrc, codec: codec.clone() })
}

async fn make_offer(downstream: &mut Downstream) -> SfuResult<SessionDescription> {
    let peer = &downstream.peer;
    let offer = peer.create_offer().await.map_err(|e| SfuError::internal("creating an offer", e))?;
    peer.set_local_description(offer).await.map_err(|e| SfuError::internal("applying an offer", e))?;
    let offer = peer.complete_local_description().await?;
    downstream.pending_offer = true;
    downstream.offer_serial += 1;
    Ok(SessionDescription::offer(offer.sdp))
}

/// Brings an existing downstream in line with the producer's new codecs and makes a new offer
/// on the same connection.
async fn renegotiate_downstream(
    downstream: &mut Downstream,
    upstream: &Upstream,
    codecs: &[Option<Codec>; 2],
    consumer: &Arc<str>,
) -> SfuResult<SessionDescription> {
    for kind in Kind::ALL {
        let wanted = &codecs[kind.index()];
        let keep = match (&downstream.tracks[kind.index()], wanted) {
            (Some(current), Some(codec)) => current.codec.same_format(codec),
            (None, None) => true,
            _ => false,
        };
        if keep {
            continue;
        }
        if let Some(old) = downstream.tracks[kind.index()].take() {
            upstream.forward.unsubscribe_kind(kind, consumer, &downstream.peer);
            downstream.peer.remove_send_track(&old.track).await?;
        }
        if let Some(codec) = wanted {
            downstream.tracks[kind.index()] = Some(add_down_track(downstream, upstream, kind, codec).await?);
        }
    }
    make_offer(downstream).await
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::{events, peer::ListenAddr, peer::Peer, MediaServerCore, ServerOptions};
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
    use webrtc::media_stream::track_local::TrackLocal;
    use serde_json::json;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_command_becomes_an_internal_error() {
        let result: Result<(), Failure> = guard(async { panic!("boom") }).await;
        let Err(Failure::Panic(err)) = result else { panic!("the panic was not caught") };
        assert_eq!(err.code(), "INTERNAL");
        assert!(err.to_string().contains("boom"));
    }

    struct NoEvents;
    impl PeerEvents for NoEvents {}

    /// A producer's side, made with webrtc-rs: sendonly Opus and VP8 tracks.
    async fn producer_client(shared: &Shared) -> Peer {
        let slot = shared.budget.reserve(1).unwrap().pop().unwrap();
        let label = ConnectionLabel {
            room_id: "client".into(),
            user_id: "client".into(),
            producer_id: "client".into(),
            direction: Direction::Downstream,
        };
        let peer = build_peer(shared.peer_context(), slot, label, NoEvents).await.unwrap();
        let codecs = [
            (Kind::Audio, RtpCodecKind::Audio, Codec { payload_type: 111, name: "opus".into(), clock_rate: 48_000, channels: 2, fmtp: "minptime=10;useinbandfec=1".into(), rtcp_fb: vec![] }),
            (Kind::Video, RtpCodecKind::Video, Codec { payload_type: 96, name: "VP8".into(), clock_rate: 90_000, channels: 0, fmtp: String::new(), rtcp_fb: vec!["nack".into(), "nack pli".into()] }),
        ];
        for (kind, rtp_kind, codec) in codecs {
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "s".into(),
                format!("t-{}", kind.as_str()),
                "l".into(),
                rtp_kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(random_ssrc()), ..Default::default() },
                    codec: rtc_codec(kind, &codec),
                    ..Default::default()
                }],
            )));
            peer.pc
                .add_transceiver_from_track(
                    track as Arc<dyn TrackLocal>,
                    Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, streams: vec![], send_encodings: vec![] }),
                )
                .await
                .unwrap();
        }
        peer
    }

    async fn offer_of(client: &Peer) -> SessionDescription {
        let offer = client.pc.create_offer(None).await.unwrap();
        client.pc.set_local_description(offer).await.unwrap();
        SessionDescription::offer(client.complete_local_description().await.unwrap().sdp)
    }

    async fn produce(room: &mut Room, user: &str, offer: SessionDescription) -> SfuResult<ProduceResponse> {
        let (reply, rx) = oneshot::channel();
        let request = ProduceRequest { offer: Some(offer), constraints: None };
        room.execute(Command::Produce { user_id: user.into(), request, reply }).await;
        rx.await.unwrap()
    }

    fn server() -> MediaServerCore {
        let listen = vec![ListenAddr { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), announced_ip: None }];
        MediaServerCore::new(ServerOptions { listen, ..Default::default() }, events::discard()).unwrap()
    }

    /// A server close cuts a command short at its next await: the room ends at once and what
    /// the command had half made is closed; the room's counts are readable meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_close_does_not_wait_for_a_busy_command() {
        let core = server();
        let shared = core.shared();
        let (mut room, tx, rx) = Room::new("r", shared.clone(), Some(("p".into(), json!({}))));
        let paused = Arc::new(tokio::sync::Notify::new());
        room.pause_at = Some(("produce:staged", paused.clone()));
        let counts = room.counts.clone();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(room.run(rx, shutdown_rx));
        let client = producer_client(&shared).await;
        let (reply, reply_rx) = oneshot::channel();
        let request = ProduceRequest { offer: Some(offer_of(&client).await), constraints: None };
        tx.send(Command::Produce { user_id: "p".into(), request, reply }).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), paused.notified()).await.expect("the produce reached its pause");
        assert_eq!(counts.read().users, 1, "counts are read without asking the busy room");
        let live_with_staged_upstream = shared.live.get();
        shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the room ended without waiting").unwrap();
        assert!(reply_rx.await.is_err(), "the cut-short command has no reply (the server maps it to SERVER_CLOSED)");
        client.close().await;
        drop(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.live.get() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "connections left alive: {} of {live_with_staged_upstream}", shared.live.get());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A panic at each step of `produce`, first or re-produce, leaves a room whose every
    /// downstream has a producer and an offer someone holds, and the next produce works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_half_way_through_produce_leaves_a_room_the_next_calls_can_use() {
        let core = server();
        let shared = core.shared();
        for (step, reproduce) in [
            ("produce:staged", false),
            ("produce:opened", false),
            ("produce:renegotiated", false),
            ("produce:staged", true),
            ("produce:opened", true),
            ("produce:renegotiated", true),
        ] {
            let (mut room, _tx, _rx) = Room::new("r", shared.clone(), Some(("p".into(), json!({}))));
            room.users.push(User { id: "c".into(), info: json!({"n": 1}), upstream: None });
            let client = producer_client(&shared).await;
            if reproduce {
                produce(&mut room, "p", offer_of(&client).await).await.unwrap();
                assert_eq!(room.inspect().consumers.len(), 1);
                // A third user joins after: the re-produce opens a downstream for it.
                room.users.push(User { id: "d".into(), info: json!(null), upstream: None });
            }
            let before = room.inspect();
            room.fail_at = Some(step);
            let err = produce(&mut room, "p", offer_of(&client).await).await.unwrap_err();
            assert_eq!(err.code(), "INTERNAL", "{step}");
            room.fail_at = None;
            let after = room.inspect();
            assert_eq!(after.users.iter().map(|u| u.producer.is_some()).collect::<Vec<_>>(),
                       before.users.iter().map(|u| u.producer.is_some()).collect::<Vec<_>>(), "{step}: producers");
            for consumer in &after.consumers {
                assert!(room.users.iter().any(|u| *u.id == *consumer.producer_id && u.upstream.is_some()), "{step}: orphan {consumer:?}");
            }
            for d in room.downstreams.values() {
                assert!(!d.pending_offer || d.handed_out == d.offer_serial, "{step}: an offer nobody holds");
            }
            // The next produce works and offers every other user a downstream.
            let response = produce(&mut room, "p", offer_of(&client).await).await.unwrap_or_else(|e| panic!("{step}: {e}"));
            let offered = response.outbound.iter().filter(|o| o.offer.is_some()).count();
            assert_eq!(offered, room.users.len() - 1, "{step}: offers after the repair");
            assert_eq!(room.inspect().consumers.len(), room.users.len() - 1, "{step}");
            room.delete(RoomClosedReason::Deleted).await.unwrap();
            client.close().await;
        }
    }
}
