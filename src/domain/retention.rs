//! Retention: which rows can no longer matter, and the background task that deletes
//! them (API.md, "Audit trail and retention").
//!
//! Each round, on the one replica that holds the prune lease, deletes in batches of
//! [`BATCH_ROWS`] with a pause between them:
//! - sessions none of whose access tokens can still be valid, with their refresh
//!   tokens: past their absolute end, or ended with their last token expired, by
//!   the bound recorded when they ended (not today's TTL), plus [`MARGIN_MS`]. An
//!   ended session stays as long as that: a replica starting up reloads ended
//!   sessions from the table, and one forgotten too early would be unknown to it;
//! - spent refresh tokens spent longer ago than a refresh token lives, and expired:
//!   a spent token presented while it could still have been honoured is found and
//!   ends its session (reuse detection); after that it could not be honoured
//!   anyway. Without this, a session refreshed in a loop keeps a row per refresh
//!   until it ends;
//! - change-feed rows older than the access-token lifetime plus
//!   [`CHANGE_MARGIN_MS`] (replicas that fell further behind reload everything);
//! - login-failure rows whose last failure is older than the lockout and that are
//!   not locked (a lock that ended [`MARGIN_MS`] ago counts as ended);
//! - audit rows older than `AUTHD_AUDIT_RETENTION`;
//! - password-reset and email-verification tokens expired [`MARGIN_MS`] ago.
//!
//! Never on the hot path: the views answer from memory; only the writer connection
//! is shared, one short batch at a time. Time comes from the [`Clock`].

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    store::{PruneCutoffs, PruneLease, PruneStep, PrunedRows, Store, StoreError},
};

/// Rows per delete statement.
pub const BATCH_ROWS: u64 = 500;
/// The pause between batches, so that other writers get the writer in between.
const BATCH_PAUSE: Duration = Duration::from_millis(10);
/// How long past the last moment a row could matter it is kept: the 1 s leeway on
/// `exp`, the hot path's own 5 s margin, and room for clocks that differ.
pub const MARGIN_MS: i64 = 10_000;
/// Change rows are kept this long past the access-token lifetime.
pub const CHANGE_MARGIN_MS: i64 = 10 * 60 * 1000;
/// The lease is renewed every this many batches within one step.
const RENEW_EVERY_BATCHES: u32 = 100;

/// What the pruner is configured with.
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// How often a round runs.
    pub every: Duration,
    /// How long audit rows are kept.
    pub audit_retention: Duration,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub login_lockout: Duration,
}

impl RetentionSettings {
    /// What may go at `now_ms`.
    pub fn cutoffs(&self, now_ms: i64) -> PruneCutoffs {
        PruneCutoffs {
            tokens_expired_before: now_ms.saturating_sub(MARGIN_MS),
            spent_before: now_ms.saturating_sub(millis(self.refresh_ttl)),
            changes_before: now_ms
                .saturating_sub(millis(self.access_ttl))
                .saturating_sub(CHANGE_MARGIN_MS),
            failures_before: now_ms.saturating_sub(millis(self.login_lockout)),
            unlocked_before: now_ms.saturating_sub(MARGIN_MS),
            audit_before: now_ms.saturating_sub(millis(self.audit_retention)),
            // An expired token is refused whatever its row says; the margin covers
            // replicas whose clocks differ a little.
            account_tokens_expired_before: now_ms.saturating_sub(MARGIN_MS),
            mfa_challenges_expired_before: now_ms.saturating_sub(MARGIN_MS),
        }
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug)]
pub enum Round {
    /// This replica pruned.
    Pruned(RoundReport),
    /// Another replica holds the lease; nothing was done.
    Skipped,
}

#[derive(Clone, Copy, Debug)]
pub struct RoundReport {
    pub rows: PrunedRows,
    /// Delete statements run.
    pub batches: u32,
    pub took: Duration,
    /// The lease was lost (or shutdown came) before the round finished.
    pub cut_short: bool,
}

/// The pruner of one replica. Owned by its task: [`Pruner::run`].
#[derive(Debug)]
pub struct Pruner {
    store: Store,
    clock: Clock,
    settings: RetentionSettings,
    lease: PruneLease,
}

impl Pruner {
    pub fn new(store: Store, clock: Clock, settings: RetentionSettings) -> Self {
        Pruner {
            store,
            clock,
            settings,
            lease: PruneLease::new(),
        }
    }

    /// What may go at `now_ms`.
    pub fn cutoffs(&self, now_ms: i64) -> PruneCutoffs {
        self.settings.cutoffs(now_ms)
    }

    /// Prunes every kind of row once, if this replica holds the lease.
    pub async fn round(&mut self, stop: &CancellationToken) -> Result<Round, StoreError> {
        let started = Instant::now();
        let cutoffs = self.cutoffs(self.clock.now_ms());
        let mut report = RoundReport {
            rows: PrunedRows::default(),
            batches: 0,
            took: Duration::ZERO,
            cut_short: false,
        };
        for step in PruneStep::ALL {
            if !self.hold_lease().await? {
                if report.batches == 0 {
                    return Ok(Round::Skipped);
                }
                report.cut_short = true;
                break;
            }
            if !self.prune(step, &cutoffs, &mut report, stop).await? {
                report.cut_short = true;
                break;
            }
        }
        report.took = started.elapsed();
        Ok(Round::Pruned(report))
    }

    /// Runs batches of one step until none is full; false when cut short.
    async fn prune(
        &mut self,
        step: PruneStep,
        cutoffs: &PruneCutoffs,
        report: &mut RoundReport,
        stop: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let mut batch: u32 = 0;
        loop {
            batch = batch.wrapping_add(1);
            let done = self.store.prune_batch(step, cutoffs, BATCH_ROWS).await?;
            report.batches += 1;
            report.rows.add(done.deleted);
            for (table, rows) in done.deleted.by_table() {
                if rows > 0 {
                    metrics::counter!("authd_pruned_rows_total", "table" => table).increment(rows);
                }
            }
            if !done.more {
                return Ok(true);
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                _ = tokio::time::sleep(BATCH_PAUSE) => {}
            }
            if batch % RENEW_EVERY_BATCHES == 0 && !self.hold_lease().await? {
                return Ok(false);
            }
        }
    }

    async fn hold_lease(&mut self) -> Result<bool, StoreError> {
        // Long enough to outlast the pause between rounds, so the lease does not
        // change hands between two rounds of the same replica.
        let lease_ms = millis(self.settings.every.saturating_mul(3)).max(60_000);
        let now_ms = self.clock.now_ms();
        self.store
            .hold_prune_lease(&mut self.lease, now_ms, lease_ms)
            .await
    }

    /// A round now and then every `every` until `stop`; then gives the lease up.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let outcome = match self.round(&stop).await {
                Ok(Round::Pruned(report)) => {
                    log_round(&report);
                    "pruned"
                }
                Ok(Round::Skipped) => "skipped",
                Err(err) => {
                    tracing::warn!(error = %err, "pruning failed; trying again next round");
                    "failed"
                }
            };
            metrics::counter!("authd_prune_rounds_total", "outcome" => outcome).increment(1);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.settings.every) => {}
            }
        }
        if let Err(err) = self.store.release_prune_lease(&mut self.lease).await {
            tracing::debug!(error = %err, "could not release the prune lease; it runs out by itself");
        }
    }

    /// Gives the lease up, for a pruner driven by [`Pruner::round`] directly.
    pub async fn release(&mut self) -> Result<(), StoreError> {
        self.store.release_prune_lease(&mut self.lease).await
    }
}

fn log_round(report: &RoundReport) {
    let rows = &report.rows;
    if rows.total() == 0 {
        return;
    }
    tracing::info!(
        sessions = rows.sessions,
        refresh_tokens = rows.refresh_tokens,
        changes = rows.changes,
        login_failures = rows.login_failures,
        audit_events = rows.audit_events,
        batches = report.batches,
        took_ms = report.took.as_millis() as u64,
        cut_short = report.cut_short,
        "pruned rows that can no longer matter"
    );
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RetentionSettings {
        RetentionSettings {
            every: Duration::from_secs(30),
            audit_retention: Duration::from_secs(90 * 86_400),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 86_400),
            login_lockout: Duration::from_secs(5 * 60),
        }
    }

    #[test]
    fn cutoffs_follow_the_settings() {
        let now = 1_800_000_000_000;
        let c = settings().cutoffs(now);
        assert_eq!(c.tokens_expired_before, now - 10_000);
        assert_eq!(c.spent_before, now - 7 * 86_400_000);
        assert_eq!(c.changes_before, now - 25 * 60_000);
        assert_eq!(c.failures_before, now - 5 * 60_000);
        assert_eq!(c.unlocked_before, now - 10_000);
        assert_eq!(c.audit_before, now - 90 * 86_400_000);
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let mut huge = settings();
        huge.audit_retention = Duration::MAX;
        huge.refresh_ttl = Duration::MAX;
        let c = huge.cutoffs(1_800_000_000_000);
        assert!(c.audit_before < 0 && c.spent_before < 0);
    }
}
