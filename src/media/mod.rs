//! Producer and consumer media, as the media loops carry it: pure, sans-IO code that takes
//! packets and a clock, and that `cargo test` drives without sockets.

pub mod bwe;
pub mod codec;
pub mod history;
pub mod layers;
pub mod rewrite;
pub mod speaker;
