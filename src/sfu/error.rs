//! The one error type of the SFU core. Every variant maps to one code of the spec's table.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuError {
    InvalidArgument(String),
    InvalidSdp(String),
    RoomNotFound(String),
    UserNotFound(String),
    RoomExists(String),
    UserExists(String),
    NotProducing(String),
    NoPendingOffer(String),
    ResourceExhausted(String),
    ServerClosed,
    Internal(String),
}

impl SfuError {
    /// The spec's error code, as a JS `Error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            SfuError::InvalidArgument(_) => "INVALID_ARGUMENT",
            SfuError::InvalidSdp(_) => "INVALID_SDP",
            SfuError::RoomNotFound(_) => "ROOM_NOT_FOUND",
            SfuError::UserNotFound(_) => "USER_NOT_FOUND",
            SfuError::RoomExists(_) => "ROOM_EXISTS",
            SfuError::UserExists(_) => "USER_EXISTS",
            SfuError::NotProducing(_) => "NOT_PRODUCING",
            SfuError::NoPendingOffer(_) => "NO_PENDING_OFFER",
            SfuError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            SfuError::ServerClosed => "SERVER_CLOSED",
            SfuError::Internal(_) => "INTERNAL",
        }
    }

    /// The HTTP status the spec assigns to the code (used by the HTTP facade).
    pub fn http_status(&self) -> u16 {
        match self {
            SfuError::InvalidArgument(_) | SfuError::InvalidSdp(_) => 400,
            SfuError::RoomNotFound(_) | SfuError::UserNotFound(_) => 404,
            SfuError::RoomExists(_)
            | SfuError::UserExists(_)
            | SfuError::NotProducing(_)
            | SfuError::NoPendingOffer(_) => 409,
            SfuError::ResourceExhausted(_) | SfuError::ServerClosed => 503,
            SfuError::Internal(_) => 500,
        }
    }

    pub fn room_not_found(room_id: &str) -> Self {
        SfuError::RoomNotFound(format!("room '{room_id}' does not exist"))
    }

    pub fn user_not_found(room_id: &str, user_id: &str) -> Self {
        SfuError::UserNotFound(format!("user '{user_id}' is not in room '{room_id}'"))
    }

    pub fn internal(context: &str, err: impl fmt::Display) -> Self {
        SfuError::Internal(format!("{context}: {err}"))
    }
}

impl fmt::Display for SfuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SfuError::ServerClosed => f.write_str("the media server was closed"),
            SfuError::InvalidArgument(m)
            | SfuError::InvalidSdp(m)
            | SfuError::RoomNotFound(m)
            | SfuError::UserNotFound(m)
            | SfuError::RoomExists(m)
            | SfuError::UserExists(m)
            | SfuError::NotProducing(m)
            | SfuError::NoPendingOffer(m)
            | SfuError::ResourceExhausted(m)
            | SfuError::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SfuError {}

pub type SfuResult<T> = Result<T, SfuError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_a_spec_code_and_status() {
        let cases = [
            (SfuError::InvalidArgument("x".into()), "INVALID_ARGUMENT", 400),
            (SfuError::InvalidSdp("x".into()), "INVALID_SDP", 400),
            (SfuError::RoomNotFound("x".into()), "ROOM_NOT_FOUND", 404),
            (SfuError::UserNotFound("x".into()), "USER_NOT_FOUND", 404),
            (SfuError::RoomExists("x".into()), "ROOM_EXISTS", 409),
            (SfuError::UserExists("x".into()), "USER_EXISTS", 409),
            (SfuError::NotProducing("x".into()), "NOT_PRODUCING", 409),
            (SfuError::NoPendingOffer("x".into()), "NO_PENDING_OFFER", 409),
            (SfuError::ResourceExhausted("x".into()), "RESOURCE_EXHAUSTED", 503),
            (SfuError::ServerClosed, "SERVER_CLOSED", 503),
            (SfuError::Internal("x".into()), "INTERNAL", 500),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.http_status(), status);
        }
    }

    #[test]
    fn messages_name_the_ids() {
        assert!(SfuError::user_not_found("r1", "u7").to_string().contains("u7"));
        assert!(SfuError::room_not_found("r1").to_string().contains("r1"));
    }
}
