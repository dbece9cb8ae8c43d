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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A user's row or roles (subject: user id).
    User,
    /// One session ended (subject: session id).
    SessionEnded,
    /// Several sessions of one user ended (subject: user id).
    UserSessionsEnded,
    /// The signing keys (subject: the new kid).
    SigningKeys,
    /// An API key was created or revoked (subject: key id).
    ApiKey,
    /// A role was created, changed or deleted (subject: the role's name): the whole
    /// role graph is read again and every holder's effective grants recomputed.
    Role,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::User => "user",
            ChangeKind::SessionEnded => "session_ended",
            ChangeKind::UserSessionsEnded => "user_sessions_ended",
            ChangeKind::SigningKeys => "signing_keys",
            ChangeKind::ApiKey => "api_key",
            ChangeKind::Role => "role",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "user" => ChangeKind::User,
            "session_ended" => ChangeKind::SessionEnded,
            "user_sessions_ended" => ChangeKind::UserSessionsEnded,
            "signing_keys" => ChangeKind::SigningKeys,
            "api_key" => ChangeKind::ApiKey,
            "role" => ChangeKind::Role,
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
