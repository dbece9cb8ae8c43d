//! `WatchRevocations`: each watcher's stream, fanned out from the one change-feed
//! reader of this replica (`feed.rs`), so a thousand watchers cost one reader.
//!
//! A watcher without a cursor first gets a snapshot (ended sessions whose tokens
//! may be unexpired, deactivated users, erased users), read a page at a time, then
//! `SNAPSHOT_COMPLETE`; a watcher with a cursor gets none. Either way it then reads
//! the change rows after its position from the table, a batch at a time, and goes
//! live on the feed's broadcast. It subscribes before each read, so a row committed
//! meanwhile comes either from the table or from the broadcast (told once: rows at
//! or before the position are skipped).
//!
//! Bounds: at most `max_watchers` at once on a replica (RESOURCE_EXHAUSTED past
//! it); one page or batch held per watcher; the broadcast is one ring of
//! `buffer` rows for all of them, and a watcher that falls a whole ring behind is
//! ended with ABORTED naming the cursor to resume from. A watcher is paced one
//! event per write, so the transport holds at most a flow-control window of its
//! events. A cursor whose following rows have been pruned (or that is ahead of the
//! feed) is OUT_OF_RANGE. The stream ends with UNAVAILABLE when this replica's
//! views go stale (the database is unreachable); the transport ends it at shutdown.

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio::sync::{
    broadcast::{self, error::RecvError},
    watch, OwnedSemaphorePermit, Semaphore,
};
use tokio_stream::Stream;

use super::{
    feed::{ChangeFeed, FeedSignal, SESSION_MARGIN_MS},
    revocations::{Cursor, RevocationEvent, RevocationKind},
};
use crate::{
    clock::Clock,
    domain::{
        error::{DomainError, DomainResult},
        retention::CHANGE_MARGIN_MS,
    },
    store::{Revoked, Store},
};

/// Snapshot rows or change rows read at a time.
const PAGE: u64 = 500;

/// The events of one watcher, until an error ends them.
pub type RevocationStream = Pin<Box<dyn Stream<Item = DomainResult<RevocationEvent>> + Send>>;

/// How many may watch, and how far one may fall behind.
#[derive(Clone, Copy, Debug)]
pub struct WatchSettings {
    pub max_watchers: usize,
    /// Rows the broadcast ring holds; a watcher further behind is dropped.
    pub buffer: usize,
}

/// The watchers of this replica.
pub(super) struct Watchers {
    store: Store,
    clock: Clock,
    permits: Arc<Semaphore>,
    max_watchers: usize,
    access_ttl_ms: i64,
}

impl Watchers {
    pub fn new(store: Store, clock: Clock, settings: WatchSettings, access_ttl: Duration) -> Self {
        Watchers {
            store,
            clock,
            permits: Arc::new(Semaphore::new(settings.max_watchers)),
            max_watchers: settings.max_watchers,
            access_ttl_ms: i64::try_from(access_ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Watchers connected now.
    pub fn count(&self) -> usize {
        self.max_watchers
            .saturating_sub(self.permits.available_permits())
    }

    /// A new watcher after `after` (a cursor, or empty for a snapshot first).
    pub async fn watch(
        &self,
        feed: &ChangeFeed,
        ready: watch::Receiver<bool>,
        after: &str,
    ) -> DomainResult<RevocationStream> {
        let cursor = Cursor::parse(after)?;
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            DomainError::LimitReached(format!(
                "this replica already serves {} revocation watchers \
                 (AUTHD_MAX_REVOCATION_WATCHERS); retry later or on another replica",
                self.max_watchers
            ))
        })?;
        let start = match cursor {
            Some(cursor) => {
                resumable(&self.store, cursor).await?;
                Start::Resume(cursor)
            }
            None => Start::Snapshot(self.snapshot_plan().await?),
        };
        let watcher = Watcher {
            store: self.store.clone(),
            feed: feed.announcer(),
            ready,
            permit,
        };
        Ok(Box::pin(watcher.run(start)))
    }

    /// Where the snapshot stands: the feed's position, and the earliest issue time
    /// it answers for (an erased user's rows last as long as change rows do).
    async fn snapshot_plan(&self) -> DomainResult<SnapshotPlan> {
        let now_ms = self.clock.now_ms();
        let position = self.store.latest_change().await?;
        let pruned_before = now_ms
            .saturating_sub(self.access_ttl_ms)
            .saturating_sub(CHANGE_MARGIN_MS);
        let covers_since = match self.store.oldest_change().await? {
            Some((_, oldest_at)) => oldest_at.max(pruned_before),
            // Nothing was ever written here, or an earlier version pruned it all.
            None => now_ms,
        };
        Ok(SnapshotPlan {
            position: Cursor::at(position),
            covers_since,
            // The feed's own margin: ended sessions are told as long as it keeps them.
            sessions_unexpired_after: now_ms - SESSION_MARGIN_MS,
        })
    }
}

/// Whether the rows after `cursor` are all still there.
async fn resumable(store: &Store, cursor: Cursor) -> DomainResult<()> {
    let latest = store.latest_change().await?;
    if cursor.seq() > latest {
        return Err(DomainError::OutOfRange(format!(
            "cursor {cursor} is ahead of this change feed (at {latest}): it is from \
             another database; start again with an empty `after`"
        )));
    }
    still_kept(store, cursor).await
}

/// Whether the row after `cursor` has not been pruned (pruning takes a prefix).
async fn still_kept(store: &Store, cursor: Cursor) -> DomainResult<()> {
    match store.oldest_change().await? {
        Some((oldest, _)) if oldest > cursor.seq().saturating_add(1) => {
            Err(DomainError::OutOfRange(format!(
                "cursor {cursor} is too old: the changes after it have been pruned; \
                 start again with an empty `after`"
            )))
        }
        _ => Ok(()),
    }
}

enum Start {
    Snapshot(SnapshotPlan),
    Resume(Cursor),
}

struct SnapshotPlan {
    position: Cursor,
    covers_since: i64,
    sessions_unexpired_after: i64,
}

struct Watcher {
    store: Store,
    /// The feed's broadcast, subscribed to again before each read of the table.
    feed: broadcast::Sender<FeedSignal>,
    ready: watch::Receiver<bool>,
    /// Held for as long as the stream lives.
    permit: OwnedSemaphorePermit,
}

impl Watcher {
    fn run(mut self, start: Start) -> impl Stream<Item = DomainResult<RevocationEvent>> + Send {
        async_stream::try_stream! {
            // Named, so the stream holds it (a closure takes only the fields it uses).
            let _permit = self.permit;
            let mut position = match start {
                Start::Resume(cursor) => cursor,
                Start::Snapshot(plan) => {
                    let mut after = String::new();
                    loop {
                        let page = self.store
                            .ended_sessions_page(plan.sessions_unexpired_after, &after, PAGE)
                            .await?;
                        let full = page.len() as u64 == PAGE;
                        for revoked in page {
                            after.clone_from(&revoked.id);
                            yield told(plan.position, RevocationKind::SessionEnded, revoked);
                            paced().await;
                        }
                        if !full { break; }
                    }
                    after.clear();
                    loop {
                        let page = self.store
                            .inactive_users_page(plan.covers_since, &after, PAGE)
                            .await?;
                        let full = page.len() as u64 == PAGE;
                        for revoked in page {
                            after.clone_from(&revoked.id);
                            yield told(plan.position, RevocationKind::UserDisabled, revoked);
                            paced().await;
                        }
                        if !full { break; }
                    }
                    let mut after_seq = 0;
                    loop {
                        let page = self.store.erased_users_page(after_seq, PAGE).await?;
                        let full = page.len() as u64 == PAGE;
                        for (seq, revoked) in page {
                            after_seq = seq;
                            yield told(plan.position, RevocationKind::UserDeleted, revoked);
                            paced().await;
                        }
                        if !full { break; }
                    }
                    yield RevocationEvent {
                        cursor: plan.position,
                        kind: RevocationKind::SnapshotComplete,
                        subject_id: String::new(),
                        occurred_at_ms: plan.covers_since,
                    };
                    plan.position
                }
            };
            // From the table until it has no more, then live until the feed reloads.
            loop {
                let mut feed = self.feed.subscribe();
                let batch = self.store.changes_after(position.seq(), PAGE).await?;
                still_kept(&self.store, position).await?;
                let full = batch.len() as u64 == PAGE;
                for row in batch {
                    position = Cursor::at(row.seq);
                    if let Some(event) = RevocationEvent::of_change(&row) {
                        yield event;
                        paced().await;
                    }
                }
                if full {
                    continue;
                }
                loop {
                    if !*self.ready.borrow_and_update() {
                        Err::<(), _>(DomainError::Unavailable)?;
                    }
                    let wake = tokio::select! {
                        signal = feed.recv() => Wake::Feed(signal),
                        changed = self.ready.changed() => Wake::Readiness(changed.is_ok()),
                    };
                    let row = match wake {
                        Wake::Readiness(true) => continue,
                        // The feed is gone: the replica is stopping.
                        Wake::Readiness(false) | Wake::Feed(Err(RecvError::Closed)) => {
                            Err::<(), _>(DomainError::Unavailable)?;
                            break;
                        }
                        Wake::Feed(Ok(FeedSignal::Applied(row))) => row,
                        Wake::Feed(Ok(FeedSignal::Reloaded)) => break,
                        Wake::Feed(Err(RecvError::Lagged(_))) => {
                            metrics::counter!("authd_revocation_watchers_dropped_total")
                                .increment(1);
                            Err::<(), _>(DomainError::Aborted(format!(
                                "this watcher fell behind the change feed; resume from \
                                 cursor {position}"
                            )))?;
                            break;
                        }
                    };
                    if row.seq <= position.seq() {
                        continue;
                    }
                    position = Cursor::at(row.seq);
                    if let Some(event) = RevocationEvent::of_change(&row) {
                        yield event;
                        paced().await;
                    }
                }
            }
        }
    }
}

/// What woke a live watcher.
enum Wake {
    Feed(Result<FeedSignal, RecvError>),
    /// Readiness changed (`false`: its sender is gone).
    Readiness(bool),
}

fn told(position: Cursor, kind: RevocationKind, revoked: Revoked) -> RevocationEvent {
    RevocationEvent {
        cursor: position,
        kind,
        subject_id: revoked.id,
        occurred_at_ms: revoked.at_ms,
    }
}

/// Lets the transport write each event before the next is made, so what waits for
/// a slow reader is its flow-control window, not a pile of encoded events.
async fn paced() {
    tokio::task::yield_now().await;
}
