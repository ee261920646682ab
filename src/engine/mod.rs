//! The media engine's machinery: media loop threads that own their sockets and drive sans-IO
//! peer connections, and batched socket I/O. It knows nothing of rooms or of the SFU: what runs
//! on a loop is its `LoopHandler` (the SFU's is `crate::sfu::loop_media`).

pub mod udp;
pub mod media_loop;
pub mod stun;
