//! Producer and consumer media, as the media loops carry it: pure, sans-IO code that takes
//! packets and a clock, and that `cargo test` drives without sockets.

pub mod history;
pub mod rewrite;
pub mod speaker;
