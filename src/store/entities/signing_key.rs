//! `signing_keys`: the Ed25519 keys that sign access tokens, and when each signs.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 document, base64 (standard alphabet).
    pub private_key: String,
    /// The raw Ed25519 public key, base64url without padding (the JWK `x`).
    pub public_key: String,
    pub created_at: i64,
    /// When it starts to sign; `None` means from `created_at`.
    pub active_from: Option<i64>,
    /// When it stops signing (it stays published for an access-token lifetime more).
    pub retired_at: Option<i64>,
    /// Withdrawn with `authd keys revoke`: unpublished, its tokens refused.
    pub revoked_at: Option<i64>,
}

impl Model {
    /// When this key starts to sign.
    pub fn signs_from(&self) -> i64 {
        self.active_from.unwrap_or(self.created_at)
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .field("retired_at", &self.retired_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
