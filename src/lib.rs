//! mediaserver-rs: a WebRTC SFU for Node.js.
//!
//! `sfu` is the core (rooms, users, connections, forwarding) and knows nothing of Node;
//! `binding` is the napi layer that exposes it as the `MediaServer` class.

#![deny(clippy::all)]

mod binding;
pub mod engine;
pub mod logging;
pub mod media;
pub mod sfu;
