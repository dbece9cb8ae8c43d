//! The change feed: rows that tell every replica which part of its memory views to
//! reload. Appended in the same transaction as the change itself.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::{
    entities::change,
    locks::{self, AdvisoryLock},
    Backend, Store, StoreError,
};

/// What changed. The subject is the id named in each variant's comment.
///
/// Each kind says exactly what happened, so that the revocation stream
/// (`WatchRevocations`) can be replayed from the rows alone. The first kinds
/// (`user`, `user_sessions_ended`, `api_key`) are no longer written, but rows of
/// them from an earlier version (or a replica not yet upgraded) still parse: they
/// mean "this user changed somehow", "some sessions of this user ended" and "this
/// key was created or revoked".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A user's row or roles (subject: user id). Earlier versions only.
    User,
    /// One session ended (subject: session id).
    SessionEnded,
    /// Several sessions of one user ended (subject: user id). Earlier versions
    /// only: a row per session (`SessionEnded`) is written now.
    UserSessionsEnded,
    /// The signing keys (subject: the kid concerned).
    SigningKeys,
    /// An API key was created or revoked (subject: key id). Earlier versions only.
    ApiKey,
    /// A user was created, or changed in a way no token depends on: profile,
    /// verified email, reactivation (subject: user id).
    UserUpdated,
    /// A user was deactivated (subject: user id).
    UserDisabled,
    /// A user was erased (subject: user id).
    UserDeleted,
    /// A user's directly granted roles changed (subject: user id).
    UserRoles,
    /// A role's definition changed: created, updated or deleted (subject: role name).
    Role,
    /// An API key was created (subject: key id).
    ApiKeyCreated,
    /// An API key was revoked (subject: key id).
    ApiKeyRevoked,
}

impl ChangeKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::User => "user",
            ChangeKind::SessionEnded => "session_ended",
            ChangeKind::UserSessionsEnded => "user_sessions_ended",
            ChangeKind::SigningKeys => "signing_keys",
            ChangeKind::ApiKey => "api_key",
            ChangeKind::UserUpdated => "user_updated",
            ChangeKind::UserDisabled => "user_disabled",
            ChangeKind::UserDeleted => "user_deleted",
            ChangeKind::UserRoles => "user_roles",
            ChangeKind::Role => "role",
            ChangeKind::ApiKeyCreated => "api_key_created",
            ChangeKind::ApiKeyRevoked => "api_key_revoked",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "user" => ChangeKind::User,
            "session_ended" => ChangeKind::SessionEnded,
            "user_sessions_ended" => ChangeKind::UserSessionsEnded,
            "signing_keys" => ChangeKind::SigningKeys,
            "api_key" => ChangeKind::ApiKey,
            "user_updated" => ChangeKind::UserUpdated,
            "user_disabled" => ChangeKind::UserDisabled,
            "user_deleted" => ChangeKind::UserDeleted,
            "user_roles" => ChangeKind::UserRoles,
            "role" => ChangeKind::Role,
            "api_key_created" => ChangeKind::ApiKeyCreated,
            "api_key_revoked" => ChangeKind::ApiKeyRevoked,
            _ => return None,
        })
    }
}

/// One row of the feed.
#[derive(Clone, Debug)]
pub struct ChangeRow {
    pub seq: i64,
    /// `None` for a kind this version does not know (a newer replica wrote it).
    pub kind: Option<ChangeKind>,
    pub subject: String,
    /// When it was committed, by the writing replica's clock (Unix ms).
    pub created_at_ms: i64,
}

/// Appends a change row inside `txn`.
pub(super) async fn append(
    txn: &DatabaseTransaction,
    backend: Backend,
    kind: ChangeKind,
    subject: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    locks::serialize(txn, backend, AdvisoryLock::ChangeFeed).await?;
    change::Entity::insert(change::ActiveModel {
        kind: Set(kind.as_str().to_owned()),
        subject: Set(subject.to_owned()),
        created_at: Set(now_ms),
        ..Default::default()
    })
    .exec_without_returning(txn)
    .await?;
    if backend == Backend::Postgres {
        // Delivered at commit (and once per transaction), waking every replica's
        // feed reader at once instead of at its next poll.
        txn.execute_unprepared(&format!("NOTIFY {CHANGES_CHANNEL}"))
            .await?;
    }
    Ok(())
}

/// Appends one change of `kind` per subject inside `txn` (sessions ended together).
pub(super) async fn append_each(
    txn: &DatabaseTransaction,
    backend: Backend,
    kind: ChangeKind,
    subjects: &[String],
    now_ms: i64,
) -> Result<(), StoreError> {
    for subject in subjects {
        append(txn, backend, kind, subject, now_ms).await?;
    }
    Ok(())
}

/// The PostgreSQL notification channel of the change feed.
pub(super) const CHANGES_CHANNEL: &str = "authd_changes";

impl Store {
    /// The highest sequence number written so far (0 for none).
    pub async fn latest_change(&self) -> Result<i64, StoreError> {
        let latest = change::Entity::find()
            .select_only()
            .column_as(change::Column::Seq.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(&self.reader)
            .await?;
        Ok(latest.flatten().unwrap_or(0))
    }

    /// The oldest change row kept: its sequence number and when it was committed.
    /// Rows before it have been pruned (the pruner always keeps the newest row, so
    /// this is `None` only while nothing was ever written).
    pub async fn oldest_change(&self) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(change::Entity::find()
            .select_only()
            .column(change::Column::Seq)
            .column(change::Column::CreatedAt)
            .order_by_asc(change::Column::Seq)
            .limit(1)
            .into_tuple::<(i64, i64)>()
            .one(&self.reader)
            .await?)
    }

    /// Changes after `cursor`, oldest first; kinds this version does not know are
    /// skipped (a newer replica may write them).
    pub async fn changes_after(
        &self,
        cursor: i64,
        limit: u64,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let rows = change::Entity::find()
            .filter(change::Column::Seq.gt(cursor))
            .order_by_asc(change::Column::Seq)
            .limit(limit)
            .all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| ChangeRow {
                seq: row.seq,
                kind: ChangeKind::parse(&row.kind),
                subject: row.subject,
                created_at_ms: row.created_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_written_and_old_kinds_still_parse() {
        let kinds = [
            ChangeKind::User,
            ChangeKind::SessionEnded,
            ChangeKind::UserSessionsEnded,
            ChangeKind::SigningKeys,
            ChangeKind::ApiKey,
            ChangeKind::UserUpdated,
            ChangeKind::UserDisabled,
            ChangeKind::UserDeleted,
            ChangeKind::UserRoles,
            ChangeKind::Role,
            ChangeKind::ApiKeyCreated,
            ChangeKind::ApiKeyRevoked,
        ];
        for kind in kinds {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
        for old in ["user", "user_sessions_ended", "api_key", "role"] {
            assert!(ChangeKind::parse(old).is_some(), "{old}");
        }
        assert_eq!(ChangeKind::parse("from_a_newer_version"), None);
    }
}
