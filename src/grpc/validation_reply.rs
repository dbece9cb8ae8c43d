//! ValidateToken's reply, written straight from the principal.
//!
//! The generated `ValidateTokenResponse` owns a `String` for every role and every
//! permission, so answering through it copies each one into a fresh allocation and
//! frees it again after encoding: with forty permissions that was half again the cost
//! of a CheckRole. [`ValidateTokenRoute`] answers ValidateToken ahead of the generated
//! router ([`UnaryRoute`]) with a [`ValidationReply`] that holds the principal (shared
//! lists, reference counts only) and writes the same protobuf bytes the generated
//! message would, borrowing every string. The tests below hold the two encodings equal,
//! so a field added to the message and to `convert::validated` fails them until it is
//! written here too.

use bytes::BufMut;
use prost::encoding::{self, WireType};
use tonic::{
    codec::{Codec, EncodeBuf, Encoder},
    server::UnaryService,
    Request, Response, Status,
};
use tonic_prost::ProstDecoder;

use super::{
    convert::timestamp_secs,
    pb::ValidateTokenRequest,
    unary_route::{MethodFuture, UnaryRoute},
};
use crate::domain::hot::{HotPath, Principal};

/// The method this route answers.
pub const VALIDATE_TOKEN_PATH: &str = "/auth.v1.AuthService/ValidateToken";

/// `auth.v1.ValidateTokenResponse`'s field numbers.
mod field {
    pub const USER_ID: u32 = 1;
    pub const USERNAME: u32 = 2;
    pub const ROLES: u32 = 3;
    pub const SESSION_ID: u32 = 4;
    pub const EXPIRES_AT: u32 = 5;
    pub const ISSUED_AT: u32 = 6;
    pub const PERMISSIONS: u32 = 7;
}

/// A `ValidateTokenResponse` for a principal, encoded without copying its strings.
#[derive(Debug, Clone)]
pub struct ValidationReply(pub Principal);

impl ValidationReply {
    /// The encoded message's length in bytes.
    pub fn encoded_len(&self) -> usize {
        let p = &self.0;
        string_len(field::USER_ID, p.subject_id())
            + string_len(field::USERNAME, p.name())
            + p.roles()
                .iter()
                .map(|r| repeated_len(field::ROLES, r))
                .sum::<usize>()
            + string_len(field::SESSION_ID, p.session_id())
            + p.expires_at()
                .map_or(0, |at| timestamp_len(field::EXPIRES_AT, at))
            + timestamp_len(field::ISSUED_AT, p.issued_at())
            + p.permissions()
                .iter()
                .map(|perm| repeated_len(field::PERMISSIONS, perm))
                .sum::<usize>()
    }

    /// Writes the message in field order, as prost would: proto3 strings only when
    /// not empty, repeated strings each (empty ones too), timestamps when set.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let p = &self.0;
        put_string(field::USER_ID, p.subject_id(), buf);
        put_string(field::USERNAME, p.name(), buf);
        for role in p.roles().iter() {
            put_repeated(field::ROLES, role, buf);
        }
        put_string(field::SESSION_ID, p.session_id(), buf);
        if let Some(at) = p.expires_at() {
            encoding::message::encode(field::EXPIRES_AT, &timestamp_secs(at), buf);
        }
        encoding::message::encode(field::ISSUED_AT, &timestamp_secs(p.issued_at()), buf);
        for permission in p.permissions().iter() {
            put_repeated(field::PERMISSIONS, permission, buf);
        }
    }
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        repeated_len(tag, value)
    }
}

fn repeated_len(tag: u32, value: &str) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(value.len() as u64) + value.len()
}

fn timestamp_len(tag: u32, secs: i64) -> usize {
    encoding::message::encoded_len(tag, &timestamp_secs(secs))
}

fn put_string(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_repeated(tag, value, buf);
    }
}

fn put_repeated(tag: u32, value: &str, buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(value.len() as u64, buf);
    buf.put_slice(value.as_bytes());
}

/// Decodes a `ValidateTokenRequest` (with prost) and encodes a [`ValidationReply`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationCodec;

impl Codec for ValidationCodec {
    type Encode = ValidationReply;
    type Decode = ValidateTokenRequest;
    type Encoder = ReplyEncoder;
    type Decoder = ProstDecoder<ValidateTokenRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ReplyEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ReplyEncoder;

impl Encoder for ReplyEncoder {
    type Item = ValidationReply;
    type Error = Status;

    fn encode(&mut self, item: ValidationReply, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as needed; reserving once saves the regrowth.
        buf.reserve(item.encoded_len());
        item.encode(buf);
        Ok(())
    }
}

/// ValidateToken against the hot path, as the generated handler would call it.
#[derive(Clone)]
pub struct ValidateToken(HotPath);

impl UnaryService<ValidateTokenRequest> for ValidateToken {
    type Response = ValidationReply;
    type Future = MethodFuture<ValidationReply>;

    fn call(&mut self, request: Request<ValidateTokenRequest>) -> Self::Future {
        let hot = self.0.clone();
        Box::pin(async move {
            let principal = hot.validate(&request.get_ref().token).await?;
            Ok(Response::new(ValidationReply(principal)))
        })
    }
}

/// AuthService's router with ValidateToken answered by [`ValidationReply`].
pub type ValidateTokenRoute<S> = UnaryRoute<ValidateToken, ValidationCodec, S>;

/// `router` (AuthService's generated one) with ValidateToken answered from `hot`
/// by [`ValidationReply`].
pub fn validate_token_route<S>(hot: HotPath, router: S) -> ValidateTokenRoute<S> {
    UnaryRoute::new(
        VALIDATE_TOKEN_PATH,
        ValidateToken(hot),
        ValidationCodec,
        router,
    )
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::ValidationReply;
    use crate::{
        domain::hot::{principal_testing as principal, Grants, Principal},
        grpc::{convert, pb::ValidateTokenResponse},
    };

    /// Our bytes are the generated message's bytes, and decode to the same message.
    fn assert_same_as_generated(principal: Principal) {
        let reply = ValidationReply(principal.clone());
        let mut ours = Vec::new();
        reply.encode(&mut ours);
        let generated = convert::validated(&principal);
        assert_eq!(ours, generated.encode_to_vec());
        assert_eq!(reply.encoded_len(), ours.len());
        assert_eq!(
            ValidateTokenResponse::decode(ours.as_slice()).ok(),
            Some(generated)
        );
    }

    fn forty_permissions() -> Vec<String> {
        (0..40)
            .map(|i| format!("billing.invoices.{i:02}.refund"))
            .collect()
    }

    #[test]
    fn a_users_reply_with_many_roles_and_permissions_is_the_generated_one() {
        let permissions = forty_permissions();
        let permissions: Vec<&str> = permissions.iter().map(String::as_str).collect();
        let grants = Grants::listing(
            &[
                "viewer",
                "user",
                "editor",
                "moderator",
                "billing",
                "support",
            ],
            &permissions,
        );
        assert_same_as_generated(principal::user(
            "0191c0de-0000-7000-8000-000000000001",
            "alice",
            "0191c0de-0000-7000-8000-000000000002",
            1_780_000_000,
            grants,
        ));
    }

    #[test]
    fn a_user_without_roles_or_permissions_is_the_generated_one() {
        let grants = Grants::listing(&[], &[]);
        assert_same_as_generated(principal::user("u", "bob", "s", 1, grants));
    }

    #[test]
    fn an_api_key_without_expiry_has_no_session_and_no_expires_at() {
        let grants = Grants::listing(&["viewer"], &["reports.read"]);
        let key = principal::api_key("k-1", "ci deploy", 1_780_000_000_123, None, grants);
        assert_same_as_generated(key.clone());
        let decoded =
            ValidateTokenResponse::decode(convert::validated(&key).encode_to_vec().as_slice()).ok();
        assert_eq!(decoded.and_then(|r| r.expires_at), None);
    }

    #[test]
    fn an_api_key_with_expiry_and_times_before_1970_is_the_generated_one() {
        let grants = Grants::listing(&["user"], &[]);
        assert_same_as_generated(principal::api_key("k", "n", -1_500, Some(-1), grants));
    }

    #[test]
    fn long_and_non_ascii_strings_take_multi_byte_lengths() {
        let long = "p".repeat(300);
        let grants = Grants::listing(&["rôle-ünïcode"], &[long.as_str(), "", "ß"]);
        assert_same_as_generated(principal::user(&"i".repeat(200), "名前", "", 0, grants));
    }
}
