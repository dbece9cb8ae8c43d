//! Following authd's revocation stream (`WatchRevocations`) in a background task:
//! a snapshot first, then live events, resumed from the last cursor after a
//! disconnect (with backoff), started over when authd says the cursor is too old.
//! Signing-key events fetch the JWK Set again; a periodic refresh does too, and old
//! revocations are forgotten.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::{
    pb::{revocation_event::Kind, RevocationEvent, WatchRevocationsRequest},
    state::{now_ms, Inner},
};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);
/// How often revocations too old to matter are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(30);

/// Follows the stream until `stop` (or until the verifier is dropped).
pub async fn follow(verifier: Weak<Inner>, stop: CancellationToken) {
    let mut cursor: Option<String> = None;
    let mut retry = FIRST_RETRY;
    let mut housekeeping = tokio::time::interval(FORGET_EVERY);
    let mut refresh = {
        let Some(inner) = verifier.upgrade() else {
            return;
        };
        tokio::time::interval(inner.jwks_refresh)
    };
    loop {
        let Some(inner) = verifier.upgrade() else {
            return;
        };
        let requested_at = now_ms();
        let mut authd = inner.authd.clone();
        let request = WatchRevocationsRequest {
            after: cursor.clone().unwrap_or_default(),
        };
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = authd.watch_revocations(request) => opened,
        };
        let ended = match opened {
            Ok(response) => {
                let mut events = response.into_inner();
                if cursor.is_some() {
                    // Resumed: what happened meanwhile comes first, exactly.
                    inner.health.up();
                } else {
                    // A new run: tokens issued before it are for authd to judge once.
                    inner.health.covers_from(requested_at);
                }
                retry = FIRST_RETRY;
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        _ = housekeeping.tick() => {
                            inner.revocations.forget_before(now_ms().saturating_sub(inner.max_token_lifetime_ms).saturating_sub(60_000));
                            continue;
                        }
                        _ = refresh.tick() => {
                            inner.refetch_keys(Duration::ZERO).await;
                            continue;
                        }
                        next = events.message() => next,
                    };
                    match next {
                        Ok(Some(event)) => {
                            apply(&inner, &event).await;
                            cursor = Some(event.cursor);
                        }
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
            Err(status) => Some(status),
        };
        inner.health.down(now_ms());
        if let Some(status) = &ended {
            if status.code() == Code::OutOfRange {
                tracing::info!("revocation cursor too old; starting over with a snapshot");
                // Until the new snapshot, nothing issued before now is judged here.
                inner.health.covers_from(now_ms());
                inner.revocations.clear();
                inner.decisions.clear();
                cursor = None;
                continue;
            }
            tracing::debug!(code = ?status.code(), message = status.message(), "revocation stream lost");
        }
        drop(inner);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
}

async fn apply(inner: &Arc<Inner>, event: &RevocationEvent) {
    let at_ms = event.occurred_at.as_ref().map_or_else(now_ms, |t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    });
    match event.kind() {
        Kind::SnapshotComplete => inner.health.up(),
        Kind::SigningKeysChanged => inner.refetch_keys(Duration::ZERO).await,
        kind => inner.revocations.apply(kind, &event.subject_id, at_ms),
    }
}
