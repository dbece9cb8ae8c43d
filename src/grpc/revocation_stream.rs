//! The transport side of `WatchRevocations`: the domain's stream as messages, ended
//! with UNAVAILABLE (naming the cursor to resume from) when the server starts
//! draining, so a watcher never holds a graceful shutdown for its grace period.
//! Each watcher's end is logged once, with why: the per-call span of `observe.rs`
//! closes when the stream opens.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{convert, pb};
use crate::domain::hot::RevocationStream;

pub type RevocationMessages =
    Pin<Box<dyn Stream<Item = Result<pb::RevocationEvent, Status>> + Send>>;

/// `events` as messages until they end or `draining` is cancelled.
pub fn messages(mut events: RevocationStream, draining: CancellationToken) -> RevocationMessages {
    Box::pin(async_stream::stream! {
        let mut cursor = String::new();
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = draining.cancelled() => {
                    tracing::info!(%cursor, "revocation watcher ended: shutting down");
                    yield Err(Status::unavailable(format!(
                        "authd is shutting down; resume from cursor {} on another replica",
                        resume_from(&cursor)
                    )));
                    break;
                }
            };
            match next {
                Some(Ok(event)) => {
                    let message = convert::revocation_event(event);
                    cursor.clone_from(&message.cursor);
                    yield Ok(message);
                }
                Some(Err(err)) => {
                    let status = Status::from(err);
                    tracing::info!(%cursor, code = ?status.code(), "revocation watcher ended");
                    yield Err(status);
                    break;
                }
                None => break,
            }
        }
    })
}

fn resume_from(cursor: &str) -> &str {
    if cursor.is_empty() {
        "(none received: start again with an empty `after`)"
    } else {
        cursor
    }
}
