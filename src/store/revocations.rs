//! What the revocation stream's snapshot reads: the ended sessions whose tokens may
//! still be unexpired, the deactivated users and the erased ones, each a page at a
//! time in the order of its key, so that one watcher never holds more than a page.
//! (The live part of the stream is the change feed itself: `changes.rs`.)

use sea_orm::{
    sea_query::Query, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{
    changes::ChangeKind,
    entities::{change, session, user},
    Store, StoreError,
};

/// One revoked thing and when it was revoked (Unix ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub id: String,
    pub at_ms: i64,
}

impl Store {
    /// Ended sessions some access token of which may be unexpired after
    /// `unexpired_after_ms`, ids after `after_id`, by id.
    pub async fn ended_sessions_page(
        &self,
        unexpired_after_ms: i64,
        after_id: &str,
        limit: u64,
    ) -> Result<Vec<Revoked>, StoreError> {
        let still_dangerous = Condition::any()
            .add(session::Column::TokensExpireBy.gt(unexpired_after_ms))
            .add(
                Condition::all()
                    .add(session::Column::TokensExpireBy.is_null())
                    .add(session::Column::ExpiresAt.gt(unexpired_after_ms)),
            );
        let rows: Vec<(String, Option<i64>)> = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .column(session::Column::EndedAt)
            .filter(session::Column::EndedAt.is_not_null())
            .filter(still_dangerous)
            .filter(session::Column::Id.gt(after_id))
            .order_by_asc(session::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, ended_at)| Revoked {
                id,
                at_ms: ended_at.unwrap_or_default(),
            })
            .collect())
    }

    /// Deactivated users last updated at or after `since_ms` (deactivation updates
    /// the row), ids after `after_id`, by id; `at_ms` is the last update.
    pub async fn inactive_users_page(
        &self,
        since_ms: i64,
        after_id: &str,
        limit: u64,
    ) -> Result<Vec<Revoked>, StoreError> {
        let rows: Vec<(String, i64)> = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .column(user::Column::UpdatedAt)
            .filter(user::Column::Active.eq(false))
            .filter(user::Column::UpdatedAt.gte(since_ms))
            .filter(user::Column::Id.gt(after_id))
            .order_by_asc(user::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, at_ms)| Revoked { id, at_ms })
            .collect())
    }

    /// Users erased as the kept change rows tell (`user_deleted`, and the `user`
    /// rows of earlier versions whose user is gone), rows after `after_seq`, by
    /// sequence: the erasures and the sequence number of each.
    pub async fn erased_users_page(
        &self,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<(i64, Revoked)>, StoreError> {
        let existing = Query::select()
            .column(user::Column::Id)
            .from(user::Entity)
            .to_owned();
        let rows: Vec<(i64, String, i64)> = change::Entity::find()
            .select_only()
            .column(change::Column::Seq)
            .column(change::Column::Subject)
            .column(change::Column::CreatedAt)
            .filter(
                change::Column::Kind
                    .is_in([ChangeKind::UserDeleted.as_str(), ChangeKind::User.as_str()]),
            )
            .filter(change::Column::Seq.gt(after_seq))
            .filter(change::Column::Subject.not_in_subquery(existing))
            .order_by_asc(change::Column::Seq)
            .limit(limit)
            .into_tuple()
            .all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, id, at_ms)| (seq, Revoked { id, at_ms }))
            .collect())
    }
}
