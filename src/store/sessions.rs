//! Sessions and refresh tokens: starting, spending (rotation with reuse detection)
//! and ending them.

use sea_orm::{
    sea_query::{Expr, Query, SimpleExpr},
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};

use super::{
    changes::{self, ChangeKind},
    entities::{refresh_token, session, user},
    paging::Page,
    Backend, Store, StoreError,
};

/// A session to start, with its first refresh token (already hashed).
#[derive(Debug)]
pub struct NewSession {
    pub id: String,
    pub user_id: String,
    pub expires_at: i64,
    pub refresh_hash: String,
    pub refresh_expires_at: i64,
    /// The `exp` bound (Unix ms) of the access token issued with it.
    pub access_expires_at: i64,
    pub now_ms: i64,
}

/// What the hot path needs to know about one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    pub user_id: String,
    /// The absolute end; no token of the session outlives it.
    pub expires_at: i64,
    /// For an ended session: until when one of its tokens may still be unexpired.
    pub ended_until: Option<i64>,
}

/// An ended session whose tokens may still be unexpired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedSession {
    pub id: String,
    /// Until when one of its access tokens may still be unexpired (Unix ms).
    pub tokens_expire_by: i64,
}

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSession {
    pub id: String,
    pub user_id: String,
    pub expires_at: i64,
}

/// A refresh token to spend and the one to store in its place (both hashed).
#[derive(Clone, Copy, Debug)]
pub struct Rotation<'a> {
    pub old_hash: &'a str,
    pub new_hash: &'a str,
    /// When the new token expires; capped at the session's absolute expiry.
    pub new_expires_at: i64,
    /// The `exp` bound (Unix ms) of the access token issued with the new one.
    pub access_expires_at: i64,
    pub now_ms: i64,
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum RefreshSpend {
    /// This call spent the token; the new one is stored. The session is live.
    Rotated(Rotated),
    /// The token had been spent before: theft is assumed and the session is ended.
    Reused {
        session_id: String,
        user_id: String,
        newly_ended: bool,
    },
    /// Unknown or expired token, or its session has ended or expired.
    Invalid,
}

/// A refresh token spent and replaced: the session it belongs to, and when the
/// new refresh token expires (capped at the session's end).
#[derive(Debug)]
pub struct Rotated {
    pub session_id: String,
    pub user_id: String,
    pub session_expires_at: i64,
    pub refresh_expires_at: i64,
}

/// A live session as its user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// When a refresh last issued a token in it; `None` if never refreshed.
    pub last_refreshed_at: Option<i64>,
}

/// A session ended by logout.
#[derive(Debug)]
pub struct SessionEnd {
    pub session_id: String,
    pub user_id: String,
}

impl Store {
    /// Starts a session and stores its first refresh token, if the user is active
    /// at the moment the session row goes in; `false` (nothing stored) otherwise.
    ///
    /// The active check is part of the insert, so a login cannot slip a session in
    /// after a deactivation (which ends sessions in its own transaction) has looked.
    /// On PostgreSQL the check takes a share lock on the user's row: a concurrent
    /// deactivation's update waits for this insert to commit and then ends its
    /// session too, or this check waits for the deactivation and sees it. (The
    /// foreign key's own lock does not conflict with an update of `active`.) On
    /// SQLite the write transaction serialises the two.
    #[must_use = "false means the user is not active and no session was started"]
    #[tracing::instrument(name = "db.insert_session", skip_all)]
    pub async fn insert_session(&self, new: NewSession) -> Result<bool, StoreError> {
        let user_is_active = Query::select()
            .expr(Expr::val(1))
            .from(user::Entity)
            .and_where(Expr::col((user::Entity, user::Column::Id)).eq(new.user_id.as_str()))
            .and_where(Expr::col((user::Entity, user::Column::Active)).eq(true))
            .lock_shared()
            .to_owned();
        let row = Query::select()
            .exprs([
                Expr::val(new.id.as_str()),
                Expr::val(new.user_id.as_str()),
                Expr::val(new.now_ms),
                Expr::val(new.expires_at),
            ])
            .and_where(Expr::exists(user_is_active))
            .to_owned();
        let insert = Query::insert()
            .into_table(session::Entity)
            .columns([
                session::Column::Id,
                session::Column::UserId,
                session::Column::CreatedAt,
                session::Column::ExpiresAt,
            ])
            .select_from(row)
            .map_err(|e| StoreError::Database(DbErr::Custom(e.to_string())))?
            .to_owned();
        let txn = self.begin_write().await?;
        let inserted = txn
            .execute(txn.get_database_backend().build(&insert))
            .await?
            .rows_affected();
        if inserted == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        insert_refresh(
            &txn,
            NewRefresh {
                hash: &new.refresh_hash,
                session_id: &new.id,
                now_ms: new.now_ms,
                expires_at: new.refresh_expires_at,
                access_expires_at: new.access_expires_at,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Spends the refresh token `old_hash` and stores `new_hash` in its place.
    ///
    /// The spend is one conditional update, so of concurrent calls exactly one wins.
    /// Refresh is the busiest write, so the common case is one statement on
    /// PostgreSQL (one round trip and its commit); only a failed spend pays for
    /// telling reuse apart.
    #[tracing::instrument(name = "db.rotate_refresh", skip_all)]
    pub async fn rotate_refresh(&self, rotation: Rotation<'_>) -> Result<RefreshSpend, StoreError> {
        let rotated = match self.backend {
            Backend::Postgres => self.rotate_in_one_statement(&rotation).await?,
            Backend::Sqlite => self.rotate_in_transaction(&rotation).await?,
        };
        match rotated {
            Some(rotated) => Ok(RefreshSpend::Rotated(rotated)),
            None => self.failed_spend(rotation.old_hash, rotation.now_ms).await,
        }
    }

    /// PostgreSQL: spend and replace in one statement. The `UPDATE` re-checks
    /// `spent_at IS NULL` on the row a concurrent winner committed, so a loser
    /// matches nothing.
    async fn rotate_in_one_statement(
        &self,
        rotation: &Rotation<'_>,
    ) -> Result<Option<Rotated>, StoreError> {
        let Rotation {
            old_hash,
            new_hash,
            new_expires_at,
            access_expires_at,
            now_ms,
        } = *rotation;
        const ROTATE: &str = "\
            WITH spent AS ( \
                UPDATE refresh_tokens AS r SET spent_at = $3 \
                FROM sessions AS s \
                WHERE r.token_hash = $1 AND r.spent_at IS NULL AND r.expires_at > $3 \
                  AND s.id = r.session_id AND s.ended_at IS NULL AND s.expires_at > $3 \
                RETURNING s.id AS session_id, s.user_id, s.expires_at AS session_expires_at \
            ), fresh AS ( \
                INSERT INTO refresh_tokens \
                    (token_hash, session_id, issued_at, expires_at, access_expires_at) \
                SELECT $2, session_id, $3, LEAST($4, session_expires_at), $5 FROM spent \
                RETURNING expires_at \
            ) \
            SELECT spent.session_id, spent.user_id, spent.session_expires_at, \
                   fresh.expires_at AS refresh_expires_at \
            FROM spent, fresh";
        let row = self
            .writer
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                ROTATE,
                [
                    old_hash.into(),
                    new_hash.into(),
                    now_ms.into(),
                    new_expires_at.into(),
                    access_expires_at.into(),
                ],
            ))
            .await?;
        row.map(|row| {
            Ok(Rotated {
                session_id: row.try_get("", "session_id")?,
                user_id: row.try_get("", "user_id")?,
                session_expires_at: row.try_get("", "session_expires_at")?,
                refresh_expires_at: row.try_get("", "refresh_expires_at")?,
            })
        })
        .transpose()
    }

    /// SQLite: the same steps in one write transaction (the database is in-process,
    /// so statements cost no round trip; the single writer is the limit).
    async fn rotate_in_transaction(
        &self,
        rotation: &Rotation<'_>,
    ) -> Result<Option<Rotated>, StoreError> {
        let Rotation {
            old_hash,
            new_hash,
            new_expires_at,
            access_expires_at,
            now_ms,
        } = *rotation;
        let txn = self.begin_write().await?;
        // Correlated, so SQLite looks the one session up by its key; an `IN
        // (SELECT …)` would list every live session on every refresh (225 ms at
        // 200,000 live sessions, against 0.02 ms).
        let session_is_live = Query::select()
            .expr(Expr::val(1))
            .from(session::Entity)
            .and_where(
                Expr::col((session::Entity, session::Column::Id))
                    .equals((refresh_token::Entity, refresh_token::Column::SessionId)),
            )
            .and_where(Expr::col((session::Entity, session::Column::EndedAt)).is_null())
            .and_where(Expr::col((session::Entity, session::Column::ExpiresAt)).gt(now_ms))
            .to_owned();
        let spent = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::SpentAt, Expr::value(now_ms))
            .filter(refresh_token::Column::TokenHash.eq(old_hash))
            .filter(refresh_token::Column::SpentAt.is_null())
            .filter(refresh_token::Column::ExpiresAt.gt(now_ms))
            .filter(Expr::exists(session_is_live))
            .exec(&txn)
            .await?
            .rows_affected;
        if spent == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let Some(token) = refresh_token::Entity::find_by_id(old_hash)
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Err(StoreError::Missing("spent refresh token"));
        };
        let Some(session) = session::Entity::find_by_id(&token.session_id)
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Err(StoreError::Missing("session of a live refresh token"));
        };
        let refresh_expires_at = new_expires_at.min(session.expires_at);
        insert_refresh(
            &txn,
            NewRefresh {
                hash: new_hash,
                session_id: &session.id,
                now_ms,
                expires_at: refresh_expires_at,
                access_expires_at,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(Some(Rotated {
            session_id: session.id,
            user_id: session.user_id,
            session_expires_at: session.expires_at,
            refresh_expires_at,
        }))
    }

    /// Why a spend matched nothing: a token spent before means theft is assumed and
    /// its session ends; anything else (unknown, expired, dead session) is invalid.
    async fn failed_spend(&self, old_hash: &str, now_ms: i64) -> Result<RefreshSpend, StoreError> {
        let txn = self.begin_write().await?;
        let found = token_and_session(&txn, old_hash).await?;
        let Some((_, session)) = found.filter(|(token, _)| token.spent_at.is_some()) else {
            txn.rollback().await?;
            return Ok(RefreshSpend::Invalid);
        };
        let newly_ended = self
            .end_and_record(&txn, &session.id, "refresh_reuse", now_ms)
            .await?;
        txn.commit().await?;
        Ok(RefreshSpend::Reused {
            session_id: session.id,
            user_id: session.user_id,
            newly_ended,
        })
    }

    /// Ends the session of a refresh token (spent or not). `None` when the token is
    /// unknown or its session had already ended.
    #[tracing::instrument(name = "db.end_session_by_refresh", skip_all)]
    pub async fn end_session_by_refresh(
        &self,
        hash: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<SessionEnd>, StoreError> {
        let txn = self.begin_write().await?;
        let Some((_, session)) = token_and_session(&txn, hash).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        if !self
            .end_and_record(&txn, &session.id, reason, now_ms)
            .await?
        {
            txn.rollback().await?;
            return Ok(None);
        }
        txn.commit().await?;
        Ok(Some(SessionEnd {
            session_id: session.id,
            user_id: session.user_id,
        }))
    }

    /// Ends one session if it is still live and, if this call ended it, appends the
    /// change for the other replicas in the same transaction.
    async fn end_and_record(
        &self,
        txn: &DatabaseTransaction,
        session_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let newly_ended = end_session(txn, session_id, reason, now_ms).await?;
        if newly_ended {
            changes::append(
                txn,
                self.backend,
                ChangeKind::SessionEnded,
                session_id,
                now_ms,
            )
            .await?;
        }
        Ok(newly_ended)
    }

    /// Ends every live session of a user; answers how many.
    #[tracing::instrument(name = "db.end_sessions_of_user", skip_all)]
    pub async fn end_sessions_of_user(
        &self,
        user_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let txn = self.begin_write().await?;
        let ended = end_user_sessions(&txn, self.backend, user_id, None, reason, now_ms).await?;
        txn.commit().await?;
        Ok(ended)
    }

    /// Ends one live session of `user_id` and appends the change; false when the
    /// user has no such live session (another user's, unknown, ended or expired).
    pub async fn end_session_of_user(
        &self,
        user_id: &str,
        session_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        let owned_and_live = session::Entity::find_by_id(session_id)
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::ExpiresAt.gt(now_ms))
            .one(&*txn)
            .await?
            .is_some();
        if !owned_and_live
            || !self
                .end_and_record(&txn, session_id, reason, now_ms)
                .await?
        {
            txn.rollback().await?;
            return Ok(false);
        }
        txn.commit().await?;
        Ok(true)
    }

    /// The live sessions of a user after the `(created_at, id)` position `after`,
    /// oldest first, with when each was last refreshed.
    pub async fn sessions_of_user(
        &self,
        user_id: &str,
        now_ms: i64,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> Result<Page<SessionSummary>, StoreError> {
        let mut query = session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::EndedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(now_ms))
            .order_by_asc(session::Column::CreatedAt)
            .order_by_asc(session::Column::Id)
            .limit(limit + 1);
        if let Some(after) = after {
            query = query.filter(super::paging::after(
                session::Column::CreatedAt,
                session::Column::Id,
                after,
            ));
        }
        let Page { items, has_more } = Page::from_rows(query.all(&self.reader).await?, limit);
        let ids: Vec<String> = items.iter().map(|s| s.id.clone()).collect();
        // The first refresh token is issued with the session; later ones by refreshes.
        let latest: Vec<(String, Option<i64>)> = refresh_token::Entity::find()
            .select_only()
            .column(refresh_token::Column::SessionId)
            .column_as(refresh_token::Column::IssuedAt.max(), "latest")
            .filter(refresh_token::Column::SessionId.is_in(ids))
            .group_by(refresh_token::Column::SessionId)
            .into_tuple()
            .all(&self.reader)
            .await?;
        let latest: std::collections::HashMap<String, i64> = latest
            .into_iter()
            .filter_map(|(id, at)| Some((id, at?)))
            .collect();
        let items = items
            .into_iter()
            .map(|row| SessionSummary {
                last_refreshed_at: latest
                    .get(&row.id)
                    .copied()
                    .filter(|at| *at > row.created_at),
                id: row.id,
                created_at: row.created_at,
                expires_at: row.expires_at,
            })
            .collect();
        Ok(Page { items, has_more })
    }

    /// Ended sessions whose tokens may still be unexpired after `after_ms`,
    /// optionally of one user.
    pub async fn ended_sessions(
        &self,
        after_ms: i64,
        user_id: Option<&str>,
    ) -> Result<Vec<EndedSession>, StoreError> {
        let still_dangerous = Condition::any()
            .add(session::Column::TokensExpireBy.gt(after_ms))
            .add(
                Condition::all()
                    .add(session::Column::TokensExpireBy.is_null())
                    .add(session::Column::ExpiresAt.gt(after_ms)),
            );
        let mut query = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .column(session::Column::TokensExpireBy)
            .column(session::Column::ExpiresAt)
            .filter(session::Column::EndedAt.is_not_null())
            .filter(still_dangerous);
        if let Some(user_id) = user_id {
            query = query.filter(session::Column::UserId.eq(user_id));
        }
        let rows: Vec<(String, Option<i64>, i64)> = query.into_tuple().all(&self.reader).await?;
        Ok(rows
            .into_iter()
            .map(|(id, until, expires_at)| EndedSession {
                id,
                tokens_expire_by: until.unwrap_or(expires_at),
            })
            .collect())
    }

    /// Sessions neither ended nor past their absolute end.
    pub async fn live_sessions(&self, now_ms: i64) -> Result<Vec<LiveSession>, StoreError> {
        let rows: Vec<(String, String, i64)> = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .column(session::Column::UserId)
            .column(session::Column::ExpiresAt)
            .filter(session::Column::EndedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(now_ms))
            .into_tuple()
            .all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, user_id, expires_at)| LiveSession {
                id,
                user_id,
                expires_at,
            })
            .collect())
    }

    /// One session as the hot path needs it; `None` when it was never issued (or
    /// has been pruned, long after its last token expired).
    pub async fn session_state(&self, id: &str) -> Result<Option<SessionState>, StoreError> {
        let Some(row) = session::Entity::find_by_id(id).one(&self.reader).await? else {
            return Ok(None);
        };
        Ok(Some(SessionState {
            ended_until: row
                .ended_at
                .map(|_| row.tokens_expire_by.unwrap_or(row.expires_at)),
            user_id: row.user_id,
            expires_at: row.expires_at,
        }))
    }
}

/// A refresh token and its session, if both exist.
async fn token_and_session(
    txn: &DatabaseTransaction,
    hash: &str,
) -> Result<Option<(refresh_token::Model, session::Model)>, StoreError> {
    let Some(token) = refresh_token::Entity::find_by_id(hash).one(txn).await? else {
        return Ok(None);
    };
    let session = session::Entity::find_by_id(&token.session_id)
        .one(txn)
        .await?;
    Ok(session.map(|session| (token, session)))
}

/// A refresh-token row to insert.
struct NewRefresh<'a> {
    hash: &'a str,
    session_id: &'a str,
    now_ms: i64,
    expires_at: i64,
    access_expires_at: i64,
}

async fn insert_refresh(txn: &DatabaseTransaction, new: NewRefresh<'_>) -> Result<(), StoreError> {
    refresh_token::Entity::insert(refresh_token::ActiveModel {
        token_hash: Set(new.hash.to_owned()),
        session_id: Set(new.session_id.to_owned()),
        issued_at: Set(new.now_ms),
        expires_at: Set(new.expires_at),
        spent_at: Set(None),
        access_expires_at: Set(Some(new.access_expires_at)),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// The latest `exp` bound of the access tokens issued in the session being updated
/// (NULL for sessions whose tokens predate the bound; readers then use the
/// session's absolute end).
fn latest_token_expiry() -> SimpleExpr {
    Expr::cust(
        "(SELECT MAX(refresh_tokens.access_expires_at) FROM refresh_tokens \
          WHERE refresh_tokens.session_id = sessions.id)",
    )
}

/// Ends one session if it is still live; true when this call ended it.
async fn end_session(
    db: &impl ConnectionTrait,
    id: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let ended = session::Entity::update_many()
        .col_expr(session::Column::EndedAt, Expr::value(now_ms))
        .col_expr(session::Column::EndReason, Expr::value(reason))
        .col_expr(session::Column::TokensExpireBy, latest_token_expiry())
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::EndedAt.is_null())
        .exec(db)
        .await?
        .rows_affected;
    Ok(ended > 0)
}

/// Sessions ended by one statement of [`end_user_sessions`].
const ENDED_PER_STATEMENT: usize = 500;

/// Ends every live, unexpired session of a user but `keep`, and appends a
/// `session_ended` change for each; answers how many ended. The sessions are locked
/// first (`FOR UPDATE`; SQLite holds the write lock already), so exactly the ones
/// this call ended get a change row, whatever ends concurrently.
pub(super) async fn end_user_sessions(
    txn: &DatabaseTransaction,
    backend: Backend,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut live = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::EndedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now_ms));
    if let Some(keep) = keep {
        live = live.filter(session::Column::Id.ne(keep));
    }
    let ids: Vec<String> = live.lock_exclusive().into_tuple().all(txn).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut ended = 0;
    // In chunks: a user may hold more sessions than a statement may have parameters.
    for chunk in ids.chunks(ENDED_PER_STATEMENT) {
        ended += session::Entity::update_many()
            .col_expr(session::Column::EndedAt, Expr::value(now_ms))
            .col_expr(session::Column::EndReason, Expr::value(reason))
            .col_expr(session::Column::TokensExpireBy, latest_token_expiry())
            .filter(session::Column::Id.is_in(chunk.iter().map(String::as_str)))
            .exec(txn)
            .await?
            .rows_affected;
    }
    changes::append_each(txn, backend, ChangeKind::SessionEnded, &ids, now_ms).await?;
    Ok(ended)
}
