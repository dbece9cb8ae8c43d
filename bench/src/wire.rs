//! gRPC's wire format, as much of it as the raw HTTP/2 generator needs: the
//! length-prefixed message frame (1 byte compression flag, 4-byte big-endian length,
//! the protobuf message) and the `grpc-status` trailer. Pure functions, so they are
//! unit-tested apart from any connection.

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message;
use tonic::Code;

use crate::load::code_name;

/// The 5-byte prefix of every gRPC message.
pub const FRAME_HEADER: usize = 5;

/// One message as a complete, uncompressed gRPC request body, encoded once and sent
/// as many times as needed (cloning `Bytes` is a reference count).
pub fn encode_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(FRAME_HEADER + len);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message
        .encode(&mut frame)
        .unwrap_or_else(|_| unreachable!("the buffer was sized by encoded_len"));
    frame.freeze()
}

/// Why a response body is not one uncompressed gRPC message.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 5 bytes, or fewer than the prefix announces.
    Truncated,
    /// More bytes than the one message the prefix announces (a unary call answers
    /// with exactly one).
    TrailingBytes,
    /// The compression flag is set: this client never offers compression.
    Compressed,
}

impl FrameError {
    /// The name it is counted under in the report.
    pub fn name(&self) -> &'static str {
        match self {
            FrameError::Truncated => "BAD_FRAME_TRUNCATED",
            FrameError::TrailingBytes => "BAD_FRAME_TRAILING",
            FrameError::Compressed => "BAD_FRAME_COMPRESSED",
        }
    }
}

/// The message inside a unary response body: exactly one uncompressed frame.
pub fn decode_frame(body: &[u8]) -> Result<&[u8], FrameError> {
    let Some((header, rest)) = body.split_first_chunk::<FRAME_HEADER>() else {
        return Err(FrameError::Truncated);
    };
    if header[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated),
        std::cmp::Ordering::Greater => Err(FrameError::TrailingBytes),
        std::cmp::Ordering::Equal => Ok(rest),
    }
}

/// The outcome a `grpc-status` value stands for: `Ok` for 0, else the code's name as
/// gRPC spells it (`UNAUTHENTICATED`), `MISSING_GRPC_STATUS` when there is none and
/// `BAD_GRPC_STATUS` when it is not a number.
pub fn grpc_status(value: Option<&[u8]>) -> Result<(), String> {
    let Some(value) = value else {
        return Err("MISSING_GRPC_STATUS".into());
    };
    match value {
        b"0" => Ok(()),
        _ => {
            let code = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<i32>().ok())
                .ok_or_else(|| "BAD_GRPC_STATUS".to_owned())?;
            match Code::from_i32(code) {
                Code::Ok => Ok(()),
                // tonic maps numbers it does not know to Unknown: keep the number.
                Code::Unknown if code != Code::Unknown as i32 => Err(format!("GRPC_STATUS_{code}")),
                other => Err(code_name(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authd::grpc::pb::{CheckRoleResponse, ValidateTokenRequest};

    #[test]
    fn a_frame_is_flag_length_message() {
        let request = ValidateTokenRequest {
            token: "abc".into(),
        };
        let frame = encode_frame(&request);
        // Field 1, length-delimited, 3 bytes: 0x0a 0x03 "abc".
        assert_eq!(&frame[..], b"\x00\x00\x00\x00\x05\x0a\x03abc");
        assert_eq!(decode_frame(&frame), Ok(&b"\x0a\x03abc"[..]));
        let decoded = ValidateTokenRequest::decode(decode_frame(&frame).expect("one frame"));
        assert_eq!(decoded.expect("valid message"), request);
    }

    #[test]
    fn an_empty_message_is_a_bare_prefix() {
        let frame = encode_frame(&CheckRoleResponse::default());
        assert_eq!(&frame[..], &[0, 0, 0, 0, 0]);
        assert_eq!(decode_frame(&frame), Ok(&[][..]));
    }

    #[test]
    fn the_length_is_big_endian() {
        let request = ValidateTokenRequest {
            token: "x".repeat(300),
        };
        let frame = encode_frame(&request);
        // 1 tag byte, 2 varint length bytes, 300 bytes: 303 = 0x012f.
        assert_eq!(&frame[..5], &[0, 0, 0, 0x01, 0x2f]);
        assert_eq!(frame.len(), 5 + 303);
    }

    #[test]
    fn bad_frames_are_named() {
        assert_eq!(decode_frame(b""), Err(FrameError::Truncated));
        assert_eq!(decode_frame(b"\x00\x00\x00"), Err(FrameError::Truncated));
        assert_eq!(
            decode_frame(b"\x00\x00\x00\x00\x03ab"),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            decode_frame(b"\x00\x00\x00\x00\x01ab"),
            Err(FrameError::TrailingBytes)
        );
        assert_eq!(
            decode_frame(b"\x01\x00\x00\x00\x01a"),
            Err(FrameError::Compressed)
        );
        assert_eq!(FrameError::Truncated.name(), "BAD_FRAME_TRUNCATED");
    }

    #[test]
    fn grpc_status_values_map_to_outcomes() {
        assert_eq!(grpc_status(Some(b"0")), Ok(()));
        assert_eq!(grpc_status(Some(b"16")), Err("UNAUTHENTICATED".into()));
        assert_eq!(grpc_status(Some(b"8")), Err("RESOURCE_EXHAUSTED".into()));
        assert_eq!(grpc_status(Some(b"14")), Err("UNAVAILABLE".into()));
        assert_eq!(grpc_status(Some(b"2")), Err("UNKNOWN".into()));
        assert_eq!(grpc_status(Some(b"99")), Err("GRPC_STATUS_99".into()));
        assert_eq!(grpc_status(Some(b"-1")), Err("GRPC_STATUS_-1".into()));
        assert_eq!(grpc_status(Some(b"ok")), Err("BAD_GRPC_STATUS".into()));
        assert_eq!(grpc_status(Some(b"")), Err("BAD_GRPC_STATUS".into()));
        assert_eq!(grpc_status(None), Err("MISSING_GRPC_STATUS".into()));
    }
}
