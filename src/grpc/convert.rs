//! Domain and store values as protobuf messages.

use prost_types::Timestamp;

use super::pb;
use crate::{
    domain::accounts::IssuedTokens,
    store::{entities::api_key, UserWithRoles},
};

pub fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn timestamp_secs(secs: i64) -> Timestamp {
    Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

pub fn user(row: UserWithRoles) -> pb::User {
    pb::User {
        id: row.user.id,
        username: row.user.username,
        email: row.user.email,
        full_name: row.user.full_name,
        roles: row.roles,
        active: row.user.active,
        created_at: Some(timestamp_ms(row.user.created_at)),
    }
}

pub fn token_pair(tokens: IssuedTokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: tokens.access_token.into_inner(),
        refresh_token: tokens.refresh_token.into_inner(),
        token_type: "Bearer".to_owned(),
        expires_in: tokens.expires_in,
        refresh_expires_in: tokens.refresh_expires_in,
    }
}

pub fn api_key(row: api_key::Model) -> pb::ApiKey {
    pb::ApiKey {
        roles: row.role_list(),
        id: row.id,
        name: row.name,
        prefix: row.prefix,
        created_at: Some(timestamp_ms(row.created_at)),
        expires_at: row.expires_at.map(timestamp_ms),
        last_used_at: row.last_used_at.map(timestamp_ms),
        revoked: row.revoked_at.is_some(),
        created_by: row.created_by.unwrap_or_default(),
    }
}
