//! The change feed: keeps this replica's memory views in step with the database.
//!
//! At start-up the views are loaded whole. After that, every write that changes a
//! hot-path answer appends a `changes` row in its own transaction; this replica
//! applies it at once after commit, and every replica polls for rows past its cursor
//! a few times a second. Applying means re-reading the subject from the database,
//! so applying twice is harmless. One lock orders all applies, so an older read
//! can never overwrite a newer one.
//!
//! The feed also reports two states. *Database up*: the database answers its polls
//! and the store does not find writes failing. *Ready*: this replica can answer the
//! hot path, i.e. its views were confirmed against the database within the
//! staleness bound, and the database is not refusing writes while it answers reads
//! (a full disk or an I/O error, which no waiting fixes). A database that does not
//! answer at all (a blip) keeps the replica ready until the views are too stale.
//!
//! Metrics: `authd_change_feed_lag_seconds` (from a change's commit to this
//! replica's poll applying it), `authd_change_feed_applied_total` and
//! `authd_change_feed_errors_total` (polls or reloads that failed).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{broadcast, watch, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::{
    keys::KeyRing,
    roles::RoleCatalog,
    views::{uuid_key, KnownSession, UserEntry, Views},
};
use crate::{
    clock::Clock,
    store::{ChangeKind, ChangeRow, Store, StoreError},
};

const POLL_BATCH: u64 = 500;
/// Sessions are remembered this long past the last moment one of their tokens may
/// be valid (the 1 s leeway, plus room for clocks that differ between replicas).
pub(super) const SESSION_MARGIN_MS: i64 = 5_000;
/// How often sessions whose tokens have all expired are forgotten.
const SESSION_PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Writes failing this long while reads succeed is a storage fault, not a blip: the
/// store's write probe (every second) clears a failure that only outlived a blip.
const STORAGE_FAULT_AFTER_MS: i64 = 3_000;

pub(super) struct ChangeFeed {
    store: Store,
    clock: Clock,
    views: Arc<Views>,
    keys: Arc<KeyRing>,
    /// The sequence number applied last; also the lock that orders applies.
    cursor: Mutex<i64>,
    /// Polls started so far, so that concurrent catch-ups can share one read.
    polls_started: AtomicU64,
    /// The last poll or load read the database; after a failed one the next
    /// successful one reloads everything.
    reads_up: AtomicBool,
    /// Whether writes reach the database, as the store finds.
    writes_ok: watch::Receiver<bool>,
    /// Reads up and writes not failing.
    database_up: watch::Sender<bool>,
    /// When reads last came back, and when writes started failing (0: they do not).
    reads_up_since_ms: AtomicI64,
    writes_failing_since_ms: AtomicI64,
    max_staleness_ms: i64,
    /// Whether this replica can answer the hot path (see the module docs).
    ready: watch::Sender<bool>,
    /// Every row applied by a poll, in order, for the revocation watchers: one
    /// bounded ring shared by all of them, so a slow one falls behind (and is
    /// dropped) instead of holding the feed up.
    applied: broadcast::Sender<FeedSignal>,
}

/// What the feed tells the revocation watchers.
#[derive(Clone, Debug)]
pub(super) enum FeedSignal {
    /// A row was applied; rows come in sequence order.
    Applied(Arc<ChangeRow>),
    /// The views were loaded whole again (after the database was unreachable):
    /// rows may have passed unannounced, so watchers read them from the table.
    Reloaded,
}

impl ChangeFeed {
    pub fn new(
        store: Store,
        clock: Clock,
        views: Arc<Views>,
        keys: Arc<KeyRing>,
        max_staleness_ms: i64,
        watch_buffer: usize,
    ) -> Self {
        ChangeFeed {
            applied: broadcast::Sender::new(watch_buffer.max(1)),
            writes_ok: store.writes_ok(),
            store,
            clock,
            views,
            keys,
            cursor: Mutex::new(0),
            polls_started: AtomicU64::new(0),
            reads_up: AtomicBool::new(false),
            database_up: watch::Sender::new(false),
            reads_up_since_ms: AtomicI64::new(0),
            writes_failing_since_ms: AtomicI64::new(0),
            max_staleness_ms,
            ready: watch::Sender::new(false),
        }
    }

    /// The broadcast of the rows this replica's polls apply (subscribe to follow).
    pub fn announcer(&self) -> broadcast::Sender<FeedSignal> {
        self.applied.clone()
    }

    /// Follows whether this replica can answer the hot path.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Follows whether the last poll reached the database and writes succeed.
    pub fn database_up(&self) -> watch::Receiver<bool> {
        self.database_up.subscribe()
    }

    fn publish_database_up(&self) {
        let now_ms = self.clock.now_ms();
        let reads_up = self.reads_up.load(Ordering::Acquire);
        let writes_ok = *self.writes_ok.borrow();
        if writes_ok {
            self.writes_failing_since_ms.store(0, Ordering::Release);
        } else {
            let _ = self.writes_failing_since_ms.compare_exchange(
                0,
                now_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        let up = reads_up && writes_ok;
        self.database_up
            .send_if_modified(|current| std::mem::replace(current, up) != up);

        let fresh = now_ms - self.views.synced_at_ms() <= self.max_staleness_ms;
        // Counted from the later of the two, so writes that failed during a blip and
        // are about to be cleared by the probe do not count once reads come back.
        let overlap_since = self
            .writes_failing_since_ms
            .load(Ordering::Acquire)
            .max(self.reads_up_since_ms.load(Ordering::Acquire));
        let storage_fault =
            reads_up && !writes_ok && now_ms - overlap_since >= STORAGE_FAULT_AFTER_MS;
        let ready = fresh && !storage_fault;
        if self
            .ready
            .send_if_modified(|current| std::mem::replace(current, ready) != ready)
        {
            if ready {
                tracing::info!("ready: the views are fresh");
            } else if storage_fault {
                tracing::warn!("not ready: the database answers but refuses writes");
            } else {
                tracing::warn!(
                    max_staleness_ms = self.max_staleness_ms,
                    "not ready: the views are older than AUTHD_MAX_STALENESS"
                );
            }
        }
    }

    fn mark_reads_up(&self) {
        if !self.reads_up.swap(true, Ordering::AcqRel) {
            self.reads_up_since_ms
                .store(self.clock.now_ms(), Ordering::Release);
        }
    }

    /// Loads every view from the tables. The cursor is read first, so a change made
    /// during the load is applied again by the next poll rather than missed.
    pub async fn load(&self) -> Result<(), StoreError> {
        let mut cursor = self.cursor.lock().await;
        let now_ms = self.clock.now_ms();
        let latest = self.store.latest_change().await?;
        self.views.set_catalog(RoleCatalog::from_definitions(
            &self.store.role_graph().await?,
        ));
        self.views.replace_users(&self.store.all_users().await?);
        for session in self.store.live_sessions(now_ms).await? {
            self.put_session(&session.id, &session.user_id, session.expires_at);
        }
        for ended in self
            .store
            .ended_sessions(self.session_horizon(now_ms), None)
            .await?
        {
            self.end_session(&ended.id, ended.tokens_expire_by);
        }
        self.views
            .replace_api_keys(&self.store.live_api_keys(now_ms).await?, now_ms);
        self.keys.load(&self.store, now_ms).await?;
        *cursor = latest;
        // Nobody listens at start-up; after an outage, watchers catch up.
        let _ = self.applied.send(FeedSignal::Reloaded);
        self.views.mark_synced(now_ms);
        self.mark_reads_up();
        self.publish_database_up();
        Ok(())
    }

    /// Applies one change this replica has just committed.
    pub async fn apply(&self, kind: ChangeKind, subject: &str) {
        let _order = self.cursor.lock().await;
        if let Err(err) = self.apply_locked(kind, subject).await {
            // The poller will apply it once the database answers again.
            tracing::warn!(error = %err, ?kind, "could not apply own change at once");
        }
    }

    /// Loads a session the view has not seen (started on another replica a moment
    /// ago): its user while it is live, `None` when it was never issued, has ended
    /// or is past its end.
    pub async fn load_session(&self, id: &str) -> Result<Option<u128>, StoreError> {
        let _order = self.cursor.lock().await;
        let Some(state) = self.store.session_state(id).await? else {
            return Ok(None);
        };
        if let Some(until) = state.ended_until {
            self.end_session(id, until);
            return Ok(None);
        }
        if state.expires_at <= self.clock.now_ms() {
            return Ok(None);
        }
        Ok(self.put_session(id, &state.user_id, state.expires_at))
    }

    /// Records a live session; answers its user's key.
    pub fn put_session(&self, id: &str, user_id: &str, expires_at_ms: i64) -> Option<u128> {
        let (session, user) = (uuid_key(id)?, uuid_key(user_id)?);
        self.views.put_session(
            session,
            KnownSession {
                user,
                expires_at_ms,
            },
        );
        Some(user)
    }

    fn end_session(&self, id: &str, tokens_expire_by: i64) {
        if let Some(session) = uuid_key(id) {
            self.views.end_session(session, tokens_expire_by);
        }
    }

    /// Loads a user the view has not seen yet (registered on another replica a
    /// moment ago). `None` when there is no such user.
    pub async fn load_user(&self, id: &str) -> Result<Option<Arc<UserEntry>>, StoreError> {
        let _order = self.cursor.lock().await;
        self.apply_locked(ChangeKind::User, id).await?;
        Ok(self.views.user(id))
    }

    async fn apply_locked(&self, kind: ChangeKind, subject: &str) -> Result<(), StoreError> {
        let now_ms = self.clock.now_ms();
        match kind {
            ChangeKind::User
            | ChangeKind::UserUpdated
            | ChangeKind::UserDisabled
            | ChangeKind::UserDeleted
            | ChangeKind::UserRoles => match self.store.find_user(subject).await? {
                Some(user) => self.views.put_user(&user),
                None => self.views.forget_user(subject),
            },
            ChangeKind::Role => {
                // Effective grants of every holder may change with one definition.
                let graph = self.store.role_graph().await?;
                self.views.regrant(RoleCatalog::from_definitions(&graph));
            }
            ChangeKind::SessionEnded => {
                let state = self.store.session_state(subject).await?;
                if let Some(until) = state.and_then(|state| state.ended_until) {
                    self.end_session(subject, until);
                }
            }
            ChangeKind::UserSessionsEnded => {
                let since = self.session_horizon(now_ms);
                for ended in self.store.ended_sessions(since, Some(subject)).await? {
                    self.end_session(&ended.id, ended.tokens_expire_by);
                }
            }
            ChangeKind::SigningKeys => self.keys.load(&self.store, now_ms).await?,
            ChangeKind::ApiKey | ChangeKind::ApiKeyCreated | ChangeKind::ApiKeyRevoked => {
                match self.store.find_api_key(subject).await? {
                    Some(key) => self.views.put_api_key(&key, now_ms),
                    None => self.views.remove_api_key(subject),
                }
            }
        }
        Ok(())
    }

    /// Applies every change past the cursor; answers how many.
    pub async fn poll(&self) -> Result<usize, StoreError> {
        let mut cursor = self.cursor.lock().await;
        self.poll_locked(&mut cursor).await
    }

    /// Makes sure every change committed before this call is applied, sharing the
    /// read with concurrent callers: whoever finds that a poll started after it
    /// arrived (and has finished, since it now holds the lock) reads nothing itself.
    /// So a flood of callers costs one indexed read at a time, not one each.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let arrived = self.polls_started.load(Ordering::Acquire);
        let mut cursor = self.cursor.lock().await;
        if self.polls_started.load(Ordering::Acquire) > arrived {
            return Ok(());
        }
        self.poll_locked(&mut cursor).await.map(|_| ())
    }

    async fn poll_locked(&self, cursor: &mut i64) -> Result<usize, StoreError> {
        self.polls_started.fetch_add(1, Ordering::AcqRel);
        let mut applied = 0;
        loop {
            let batch = self.store.changes_after(*cursor, POLL_BATCH).await?;
            let full = batch.len() as u64 == POLL_BATCH;
            let now_ms = self.clock.now_ms();
            for change in batch {
                if let Some(kind) = change.kind {
                    self.apply_locked(kind, &change.subject).await?;
                }
                *cursor = change.seq;
                let created_at_ms = change.created_at_ms;
                // No watcher listening is no error.
                let _ = self.applied.send(FeedSignal::Applied(Arc::new(change)));
                applied += 1;
                // Clocks of replicas differ a little: a change "from the future" is
                // no lag.
                let lag_ms = now_ms.saturating_sub(created_at_ms).max(0);
                metrics::histogram!("authd_change_feed_lag_seconds").record(lag_ms as f64 / 1000.0);
                metrics::counter!("authd_change_feed_applied_total").increment(1);
            }
            if !full {
                break;
            }
        }
        self.views.mark_synced(self.clock.now_ms());
        Ok(applied)
    }

    /// Polls every `interval` until `shutdown`. After a failed poll the next
    /// successful one reloads everything, since rows may have been pruned meanwhile.
    pub async fn run(&self, interval: Duration, shutdown: CancellationToken) {
        let mut last_prune = std::time::Instant::now();
        let mut last_session_prune = std::time::Instant::now();
        let mut writes_ok = self.writes_ok.clone();
        let woken = Arc::new(Notify::new());
        tokio::spawn(wake_on_notifications(
            self.store.clone(),
            woken.clone(),
            shutdown.clone(),
        ));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                // Another replica (or this one) committed a change (PostgreSQL).
                () = woken.notified() => {}
                // Writes failing or succeeding again change readiness at once.
                Ok(()) = writes_ok.changed() => {}
            }
            let was_up = self.reads_up.load(Ordering::Acquire);
            let result = if was_up {
                self.poll().await.map(|_| ())
            } else {
                self.load().await
            };
            match result {
                Ok(()) => {
                    if !was_up {
                        tracing::info!("database reachable again; views reloaded");
                    }
                    self.mark_reads_up();
                }
                Err(err) => {
                    metrics::counter!("authd_change_feed_errors_total").increment(1);
                    if was_up {
                        tracing::warn!(error = %err, "database unreachable; answering from memory");
                    }
                    self.reads_up.store(false, Ordering::Release);
                }
            }
            self.publish_database_up();
            if last_session_prune.elapsed() > SESSION_PRUNE_EVERY {
                last_session_prune = std::time::Instant::now();
                self.views
                    .prune_sessions(self.session_horizon(self.clock.now_ms()));
            }
            if last_prune.elapsed() > Duration::from_secs(300) {
                last_prune = std::time::Instant::now();
                // Old change rows are deleted by the pruner (`domain::retention`).
                // A key rotated in ahead retires later than the rotation that set it.
                let now_ms = self.clock.now_ms();
                if let Err(err) = self.store.erase_retired_private_keys(now_ms).await {
                    tracing::debug!(error = %err, "could not erase retired private keys");
                }
            }
        }
    }

    /// Sessions none of whose tokens can be valid after this are not kept.
    fn session_horizon(&self, now_ms: i64) -> i64 {
        now_ms - SESSION_MARGIN_MS
    }
}

/// How long to wait before listening again after the listener connection failed.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// Wakes the feed reader whenever a change is committed anywhere (PostgreSQL's
/// `LISTEN`); returns at once on SQLite. A lost connection is listened on again
/// after a pause; meanwhile the poll goes on as before.
async fn wake_on_notifications(store: Store, woken: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let mut notifications = tokio::select! {
            _ = shutdown.cancelled() => return,
            listening = store.change_notifications() => match listening {
                Ok(Some(notifications)) => notifications,
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(error = %err, "cannot listen for changes; polling only");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RELISTEN_AFTER) => continue,
                    }
                }
            },
        };
        // Changes committed while the listener was down are the poll's to find.
        woken.notify_one();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = notifications.next() => match next {
                    Ok(()) => woken.notify_one(),
                    Err(err) => {
                        tracing::debug!(error = %err, "change listener lost; listening again");
                        break;
                    }
                },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RELISTEN_AFTER) => {}
        }
    }
}
