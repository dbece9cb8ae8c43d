//! `AuthService.WatchRevocations` (API.md, "Delegation without code"): a snapshot
//! first, then live events of every kind; resuming by cursor with exactly the
//! events after it; malformed, too old and foreign cursors; the cap on watchers; a
//! slow watcher dropped with the cursor to resume from while the others keep up;
//! events from another replica; streams ending at shutdown.

use std::time::Duration;

use authd::grpc::pb::{self, revocation_event::Kind};
use tonic::{transport::Channel, Code, Status, Streaming};

use crate::helpers::{eventually, token_claims, AuthClient, TestApp, TestDb};

/// Bounds a wait for the next event, so a missing event fails the test instead of
/// hanging it (not a measure of speed).
const PATIENCE: Duration = Duration::from_secs(15);

/// One watcher as a test reads it.
struct Watcher(Streaming<pb::RevocationEvent>);

impl Watcher {
    async fn open(client: &AuthClient, after: &str) -> Watcher {
        Watcher(client.watch_revocations(after).await.expect("watch"))
    }

    /// The next event, or the status that ended the stream.
    async fn next(&mut self) -> Result<pb::RevocationEvent, Status> {
        match tokio::time::timeout(PATIENCE, self.0.message()).await {
            Ok(Ok(Some(event))) => Ok(event),
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }

    async fn event(&mut self) -> pb::RevocationEvent {
        self.next().await.expect("an event")
    }

    /// The snapshot's events, up to and without SNAPSHOT_COMPLETE, and that event.
    async fn snapshot(&mut self) -> (Vec<pb::RevocationEvent>, pb::RevocationEvent) {
        let mut events = Vec::new();
        loop {
            let event = self.event().await;
            if event.kind() == Kind::SnapshotComplete {
                return (events, event);
            }
            events.push(event);
        }
    }

    /// Events until one of `kind`, that one included.
    async fn until(&mut self, kind: Kind) -> Vec<pb::RevocationEvent> {
        let mut events = Vec::new();
        loop {
            let event = self.event().await;
            let found = event.kind() == kind;
            events.push(event);
            if found {
                return events;
            }
        }
    }
}

fn kinds_and_subjects(events: &[pb::RevocationEvent]) -> Vec<(Kind, String)> {
    events
        .iter()
        .map(|e| (e.kind(), e.subject_id.clone()))
        .collect()
}

fn sid(access_token: &str) -> String {
    token_claims(access_token)["sid"]
        .as_str()
        .expect("sid")
        .to_owned()
}

/// The snapshot holds the ended session, the deactivated user (and the sessions
/// its deactivation ended) and the erased user, and nothing about live ones; all
/// its events carry the cursor where live events begin; then a logout arrives
/// live.
async fn a_watcher_gets_the_snapshot_then_live_events(app: TestApp) {
    let admin = app.admin().await;
    app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    app.register("dave").await;
    let alice_out = app.login("alice").await;
    app.logout(&alice_out.refresh_token).await.expect("logout");
    let bob_in = app.login("bob").await;
    admin.set_active(&bob.id, false).await.expect("deactivate");
    app.login("carol").await;
    admin.delete_user(&carol.id).await.expect("delete");
    let dave = app.login("dave").await;

    let mut watcher = Watcher::open(&app, "").await;
    let (snapshot, complete) = watcher.snapshot().await;
    let mut told = kinds_and_subjects(&snapshot);
    told.sort();
    let mut expected = vec![
        (Kind::SessionEnded, sid(&alice_out.access_token)),
        (Kind::SessionEnded, sid(&bob_in.access_token)),
        (Kind::UserDisabled, bob.id.clone()),
        (Kind::UserDeleted, carol.id.clone()),
    ];
    expected.sort();
    assert_eq!(told, expected);
    assert!(snapshot.iter().all(|e| e.cursor == complete.cursor));
    assert!(snapshot.iter().all(|e| e.occurred_at.is_some()));
    assert!(complete.subject_id.is_empty() && complete.occurred_at.is_some());

    app.logout(&dave.refresh_token).await.expect("logout");
    let live = watcher.event().await;
    assert_eq!(
        (live.kind(), live.subject_id.as_str()),
        (Kind::SessionEnded, sid(&dave.access_token).as_str())
    );
    assert!(live.cursor.parse::<i64>().expect("digits") > complete.cursor.parse().expect("digits"));
}

/// Every kind, live, in the order of the changes, each exactly once (a role's
/// CreateRole, UpdateRole and DeleteRole each naming it); changes that revoke
/// nothing (a registration, a new API key, a profile update, a reactivation) make
/// no event.
async fn every_kind_of_revocation_arrives_live_in_order(app: TestApp) {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let alice_in = app.login("alice").await;
    let bob_in = app.login("bob").await;
    let key = admin
        .create_api_key("batch", &["user"], 0)
        .await
        .expect("key")
        .key
        .expect("key");
    let mut watcher = Watcher::open(&app, "").await;
    watcher.snapshot().await;

    app.register("carol").await;
    let spare = admin.create_api_key("spare", &["user"], 0).await;
    assert!(spare.is_ok());
    admin
        .update_user(pb::UpdateUserRequest {
            user_id: alice.id.clone(),
            full_name: Some("Alice A.".into()),
            ..Default::default()
        })
        .await
        .expect("update");
    app.logout(&alice_in.refresh_token).await.expect("logout");
    admin
        .assign_role(&alice.id, "editor")
        .await
        .expect("assign");
    admin.set_active(&bob.id, false).await.expect("deactivate");
    admin.set_active(&bob.id, true).await.expect("reactivate");
    admin.delete_user(&bob.id).await.expect("delete");
    admin.revoke_api_key(&key.id).await.expect("revoke key");
    // A role's definition made, changed and removed: each names the role.
    admin
        .create_role("support", &["user"], &["tickets.close"])
        .await
        .expect("create role");
    admin
        .update_role("support", &["editor"], &[])
        .await
        .expect("update role");
    admin.delete_role("support").await.expect("delete role");
    let rotated = app.db.cli(&["keys", "rotate"], None).await;
    assert!(rotated.status.success(), "{rotated:?}");

    let events = watcher.until(Kind::SigningKeysChanged).await;
    let kid = events.last().expect("an event").subject_id.clone();
    assert!(!kid.is_empty());
    assert_eq!(
        kinds_and_subjects(&events),
        vec![
            (Kind::SessionEnded, sid(&alice_in.access_token)),
            (Kind::UserRolesChanged, alice.id.clone()),
            (Kind::SessionEnded, sid(&bob_in.access_token)),
            (Kind::UserDisabled, bob.id.clone()),
            (Kind::UserDeleted, bob.id.clone()),
            (Kind::ApiKeyRevoked, key.id.clone()),
            (Kind::RoleChanged, "support".to_owned()),
            (Kind::RoleChanged, "support".to_owned()),
            (Kind::RoleChanged, "support".to_owned()),
            (Kind::SigningKeysChanged, kid),
        ]
    );
    let cursors: Vec<i64> = events
        .iter()
        .map(|e| e.cursor.parse().expect("digits"))
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
}

/// A cursor resumes with exactly the events after it: those made while nobody
/// watched, then live ones, none twice and none missing.
async fn a_cursor_resumes_with_exactly_the_events_after_it(app: TestApp) {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let mut watcher = Watcher::open(&app, "").await;
    watcher.snapshot().await;
    let mut told = Vec::new();
    for role in ["editor", "moderator", "viewer"] {
        admin.assign_role(&alice.id, role).await.expect("assign");
        told.push(watcher.event().await);
    }
    drop(watcher);
    let alice_in = app.login("alice").await;
    app.logout(&alice_in.refresh_token).await.expect("logout");
    admin
        .revoke_role(&alice.id, "viewer")
        .await
        .expect("revoke");

    let mut resumed = Watcher::open(&app, &told[0].cursor).await;
    let replayed = [
        resumed.event().await,
        resumed.event().await,
        resumed.event().await,
        resumed.event().await,
    ];
    assert_eq!(replayed[..2], told[1..]);
    assert_eq!(
        kinds_and_subjects(&replayed[2..]),
        vec![
            (Kind::SessionEnded, sid(&alice_in.access_token)),
            (Kind::UserRolesChanged, alice.id.clone()),
        ]
    );
    // Then live, after the last of them.
    admin.assign_role(&alice.id, "admin").await.expect("assign");
    let live = resumed.event().await;
    assert_eq!(
        (live.kind(), live.subject_id.as_str()),
        (Kind::UserRolesChanged, alice.id.as_str())
    );
    let last: i64 = replayed[3].cursor.parse().expect("digits");
    assert!(live.cursor.parse::<i64>().expect("digits") > last);
}

/// `after` that is no cursor is INVALID_ARGUMENT naming it; one ahead of the feed
/// (another database's) or whose following changes were pruned is OUT_OF_RANGE,
/// saying to start again; starting again works.
async fn malformed_and_unresumable_cursors_are_refused(app: TestApp) {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    for bad in ["abc", "-1", "1.5", " 7", "99999999999999999999"] {
        let status = app.watch_revocations(bad).await.expect_err("not a cursor");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(status.message().contains("after"), "{}", status.message());
    }
    let ahead = app.watch_revocations("987654321").await.expect_err("ahead");
    assert_eq!(ahead.code(), Code::OutOfRange, "{}", ahead.message());
    assert!(ahead.message().contains("empty"), "{}", ahead.message());

    let mut watcher = Watcher::open(&app, "").await;
    watcher.snapshot().await;
    admin
        .assign_role(&alice.id, "editor")
        .await
        .expect("assign");
    let old = watcher.event().await;
    drop(watcher);
    for role in ["moderator", "viewer"] {
        admin.assign_role(&alice.id, role).await.expect("assign");
    }
    let seq: i64 = old.cursor.parse().expect("digits");
    // What the pruner does to rows older than the longest token life: a prefix
    // of the feed goes, here through the row after the cursor.
    app.db
        .execute(&format!("DELETE FROM changes WHERE seq <= {}", seq + 1))
        .await;
    let pruned = app
        .watch_revocations(&old.cursor)
        .await
        .expect_err("too old");
    assert_eq!(pruned.code(), Code::OutOfRange);
    assert!(pruned.message().contains("pruned"), "{}", pruned.message());
    let mut again = Watcher::open(&app, "").await;
    again.snapshot().await;
}

/// Past AUTHD_MAX_REVOCATION_WATCHERS a watcher is RESOURCE_EXHAUSTED, naming the
/// setting; when one goes, another may come.
async fn watchers_past_the_cap_are_refused(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.max_revocation_watchers = 2).await;
    let first = Watcher::open(&app, "").await;
    let _second = Watcher::open(&app, "").await;
    let refused = app.watch_revocations("").await.expect_err("over the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("AUTHD_MAX_REVOCATION_WATCHERS"),
        "{}",
        refused.message()
    );
    drop(first);
    let admitted = eventually(PATIENCE, || async {
        app.watch_revocations("").await.is_ok()
    })
    .await;
    assert!(admitted.is_some(), "a place freed by a watcher that left");
}

/// A client that stops reading falls a whole buffer behind and is ended with
/// ABORTED naming the cursor to resume from; the feed and another watcher go on
/// meanwhile; resuming from that cursor gives every event it missed.
async fn a_slow_watcher_is_dropped_with_the_cursor_to_resume_from(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.revocation_watch_buffer = 16).await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    // A tiny flow-control window: the server can send it only a few events
    // before it must wait for the client to read.
    let slow_channel = Channel::from_shared(format!("http://{}", app.addr()))
        .expect("uri")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .expect("connect");
    let mut slow = Watcher::open(&AuthClient::new(slow_channel), "").await;
    let mut steady = Watcher::open(&app, "").await;
    let (_, slow_start) = slow.snapshot().await;
    steady.snapshot().await;

    const CHANGES: usize = 120;
    let mut made = Vec::new();
    for i in 0..CHANGES {
        if i % 2 == 0 {
            admin
                .assign_role(&alice.id, "editor")
                .await
                .expect("assign");
        } else {
            admin
                .revoke_role(&alice.id, "editor")
                .await
                .expect("revoke");
        }
        made.push(steady.event().await);
    }

    let mut received = Vec::new();
    let ended = loop {
        match slow.next().await {
            Ok(event) => received.push(event),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Aborted, "{}", ended.message());
    assert!(received.len() < CHANGES, "it fell behind");
    // With nothing read, it stood where the snapshot left it.
    let resume_from = received.last().unwrap_or(&slow_start).cursor.clone();
    assert!(
        ended
            .message()
            .contains(&format!("resume from cursor {resume_from}")),
        "{}",
        ended.message()
    );
    assert_eq!(received[..], made[..received.len()]);
    let mut resumed = Watcher::open(&app, &resume_from).await;
    let mut rest = Vec::new();
    for _ in received.len()..CHANGES {
        rest.push(resumed.event().await);
    }
    assert_eq!(rest[..], made[received.len()..]);
}

/// A logout on one replica reaches a watcher of another (PostgreSQL wakes its
/// feed reader at once).
async fn a_watcher_on_another_replica_gets_the_event(app: TestApp) {
    let replica = app.replica(&[]).await;
    let there = replica.client().await;
    app.register("alice").await;
    let alice_in = app.login("alice").await;
    let mut watcher = Watcher::open(&there, "").await;
    watcher.snapshot().await;
    app.logout(&alice_in.refresh_token).await.expect("logout");
    let event = watcher.event().await;
    assert_eq!(
        (event.kind(), event.subject_id.as_str()),
        (Kind::SessionEnded, sid(&alice_in.access_token).as_str())
    );
}

/// Shutting down ends each stream with UNAVAILABLE naming the cursor to resume
/// from, and the server stops cleanly instead of waiting out its grace.
async fn streams_end_at_shutdown_with_the_cursor_to_resume_from(mut app: TestApp) {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let mut watcher = Watcher::open(&app, "").await;
    watcher.snapshot().await;
    admin
        .assign_role(&alice.id, "editor")
        .await
        .expect("assign");
    let last = watcher.event().await;
    app.stop().await;
    let ended = watcher.next().await.expect_err("ended");
    assert_eq!(ended.code(), Code::Unavailable);
    assert!(
        ended
            .message()
            .contains(&format!("resume from cursor {}", last.cursor)),
        "{}",
        ended.message()
    );
}

on_both_databases!(
    a_watcher_gets_the_snapshot_then_live_events,
    every_kind_of_revocation_arrives_live_in_order,
    a_cursor_resumes_with_exactly_the_events_after_it,
    malformed_and_unresumable_cursors_are_refused,
    watchers_past_the_cap_are_refused,
    a_slow_watcher_is_dropped_with_the_cursor_to_resume_from,
    streams_end_at_shutdown_with_the_cursor_to_resume_from,
);
on_postgres!(a_watcher_on_another_replica_gets_the_event);
