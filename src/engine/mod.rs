//! The media engine: what carries packets, beside the control plane that decides what to carry.
//! It is being built here step by step (see the media engine issue); today it holds the batched
//! socket I/O the media loops will own.

pub mod udp;
pub mod media_loop;
pub mod sfu;
