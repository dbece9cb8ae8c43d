//! AdminService and RBAC through the real gRPC API: who may call it, user lookup and
//! paging, fresh roles on existing tokens, deactivation, ending sessions, the
//! last-admin rule, the audit trail, a second replica, and `authd user create`.

use std::{collections::HashSet, time::Duration};

use authd::grpc::pb::{self, admin_service_client::AdminServiceClient};
use tonic::Code;

use crate::helpers::{
    code, eventually, AdminClient, AuthClient, Bearer, TestApp, TestDb, PASSWORD,
};

async fn effective_roles(client: &AuthClient, token: &str) -> Vec<String> {
    client.validate(token).await.expect("validates").roles
}

const UNKNOWN_USER: &str = "00000000-0000-4000-8000-000000000000";

async fn admin_calls_need_a_valid_token_of_a_current_admin(app: TestApp) {
    let root = app.admin().await;
    let request = || pb::ListUsersRequest {
        page_size: 0,
        page_token: String::new(),
        ..Default::default()
    };

    let mut anonymous = AdminServiceClient::new(app.channel().await);
    let status = anonymous.list_users(request()).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization"),
        "{}",
        status.message()
    );

    for credential in ["garbage", "", root.tokens.refresh_token.as_str()] {
        let client = app.admin_as(credential).await;
        assert_eq!(
            code(client.list_users(0, "").await),
            Code::Unauthenticated,
            "bearer {credential:?}"
        );
    }
    // A good token under another scheme is not a bearer credential.
    let mut basic = AdminServiceClient::with_interceptor(
        app.channel().await,
        Bearer(format!("Basic {}", root.tokens.access_token)),
    );
    assert_eq!(
        code(basic.list_users(request()).await),
        Code::Unauthenticated
    );

    let alice = app.register("alice").await;
    let alice_tokens = app.login("alice").await;
    let as_alice = app.admin_as(&alice_tokens.access_token).await;
    let denied = as_alice.list_users(0, "").await.expect_err("not admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("authd.users.read"),
        "{}",
        denied.message()
    );
    assert_eq!(
        code(as_alice.get_user(&alice.id, "").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(as_alice.assign_role(&alice.id, "admin").await),
        Code::PermissionDenied,
        "a user cannot make themself admin"
    );

    let users = root.list_users(0, "").await.expect("admin may list").users;
    assert_eq!(users.len(), 2);

    // Admin is checked now, not as frozen into the token: alice's old token works
    // for AdminService once she is granted admin, and stops when it is taken away.
    root.assign_role(&alice.id, "admin")
        .await
        .expect("grant admin");
    as_alice
        .list_users(0, "")
        .await
        .expect("alice is admin now");
    root.revoke_role(&alice.id, "admin")
        .await
        .expect("take admin");
    assert_eq!(
        code(as_alice.list_users(0, "").await),
        Code::PermissionDenied
    );
}

async fn get_user_finds_by_id_or_by_username_in_any_case(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("Alice").await;

    let by_id = root.get_user(&alice.id, "").await.expect("by id");
    assert_eq!(by_id, alice);
    for name in ["Alice", "alice", "ALICE"] {
        let by_name = root.get_user("", name).await.expect("by name");
        assert_eq!(by_name.id, alice.id, "{name}");
        assert_eq!(by_name.username, "Alice");
        assert_eq!(by_name.roles, ["user"]);
        assert!(by_name.active);
    }
    let root_user = root.get_user(&root.id, "").await.expect("root");
    assert_eq!(root_user.username, "root");
    assert_eq!(root_user.roles, ["admin"]);

    let unknown = root
        .get_user(UNKNOWN_USER, "")
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(code(root.get_user("", "nobody").await), Code::NotFound);
    let malformed = root
        .get_user("not-a-uuid", "")
        .await
        .expect_err("malformed id");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().starts_with("user_id"));

    let neither = root.get_user("", "").await.expect_err("neither");
    assert_eq!(neither.code(), Code::InvalidArgument);
    let both = root.get_user(&alice.id, "Alice").await.expect_err("both");
    assert_eq!(both.code(), Code::InvalidArgument);
}

/// Every user once, following next_page_token; panics on a runaway listing.
async fn list_all(admin: &AdminClient, page_size: i32) -> (Vec<pb::User>, Vec<usize>) {
    let (mut users, mut page_sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    for _ in 0..100 {
        let page = admin.list_users(page_size, &token).await.expect("page");
        page_sizes.push(page.users.len());
        users.extend(page.users);
        if page.next_page_token.is_empty() {
            return (users, page_sizes);
        }
        token = page.next_page_token;
    }
    panic!("listing did not end");
}

fn position(user: &pb::User) -> (i64, i32, String) {
    let at = user.created_at.expect("created_at");
    (at.seconds, at.nanos, user.id.clone())
}

async fn list_users_pages_through_everyone_once_in_a_stable_order(app: TestApp) {
    let root = app.admin().await;
    let mut expected: HashSet<String> = HashSet::from([root.id.clone()]);
    for i in 0..7 {
        expected.insert(app.register(&format!("user{i}")).await.id);
    }

    let (paged, sizes) = list_all(root, 3).await;
    assert_eq!(sizes, [3, 3, 2]);
    let ids: Vec<String> = paged.iter().map(|u| u.id.clone()).collect();
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(ids.len(), expected.len(), "nobody twice");
    assert!(
        paged.windows(2).all(|w| position(&w[0]) < position(&w[1])),
        "oldest first"
    );
    assert_eq!(paged[0].id, root.id, "the first admin is the oldest");

    let (again, _) = list_all(root, 3).await;
    assert_eq!(again, paged, "the same order every time");

    let default = root.list_users(0, "").await.expect("default");
    assert_eq!(default.users, paged, "page_size 0 means 50: all 8 fit");
    assert!(default.next_page_token.is_empty());
    let largest = root.list_users(500, "").await.expect("500");
    assert_eq!(largest.users.len(), 8);

    for bad_size in [501, -1] {
        let status = root.list_users(bad_size, "").await.expect_err("bad size");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_size}");
        assert!(status.message().starts_with("page_size"));
    }
    let first = root.list_users(3, "").await.expect("first page");
    let mut forged = first.next_page_token.clone();
    forged.insert(0, 'x');
    for bad_token in ["garbage", "djE6MTox", forged.as_str(), &"A".repeat(300)] {
        let status = root.list_users(3, bad_token).await.expect_err("bad token");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_token}");
        assert!(status.message().starts_with("page_token"));
    }
}

async fn users_registered_while_paging_do_not_disturb_the_listing(app: TestApp) {
    let root = app.admin().await;
    let mut originals: HashSet<String> = HashSet::from([root.id.clone()]);
    for i in 0..7 {
        originals.insert(app.register(&format!("user{i}")).await.id);
    }

    let (mut seen, mut token, mut added) = (Vec::new(), String::new(), 0);
    loop {
        assert!(seen.len() < 100, "listing did not end");
        let page = root.list_users(3, &token).await.expect("page");
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Two newcomers between pages, for the first few pages.
        if added < 6 {
            for _ in 0..2 {
                app.register(&format!("late{added}")).await;
                added += 1;
            }
        }
    }
    for id in &originals {
        let times = seen.iter().filter(|s| *s == id).count();
        assert_eq!(times, 1, "user {id} seen {times} times");
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "nobody twice");
    assert_eq!(seen.len(), originals.len() + added, "newcomers come last");
}

async fn assigned_roles_apply_at_once_to_tokens_issued_before(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let pair = app.login("alice").await;
    let token = pair.access_token;
    assert_eq!(app.has_role(&token, "editor").await, Ok(false));
    assert_eq!(effective_roles(&app, &token).await, ["viewer", "user"]);

    let granted = root.assign_role(&alice.id, "editor").await.expect("assign");
    assert_eq!(granted.roles, ["editor", "user"]);
    assert_eq!(app.has_role(&token, "editor").await, Ok(true));
    assert_eq!(app.has_role(&token, "viewer").await, Ok(true));
    assert_eq!(app.has_role(&token, "moderator").await, Ok(false));
    assert_eq!(
        effective_roles(&app, &token).await,
        ["viewer", "user", "editor"]
    );
    // A token issued by Refresh after the grant carries the roles of now.
    let refreshed = app.refresh(&pair.refresh_token).await.expect("refresh");
    assert_eq!(
        crate::helpers::token_claims(&refreshed.access_token)["roles"],
        serde_json::json!(["viewer", "user", "editor"])
    );

    // Idempotent: granting again changes nothing.
    let again = root
        .assign_role(&alice.id, "editor")
        .await
        .expect("assign twice");
    assert_eq!(again.roles, ["editor", "user"]);

    let unknown_role = root
        .assign_role(&alice.id, "superuser")
        .await
        .expect_err("unknown role");
    assert_eq!(unknown_role.code(), Code::NotFound);
    assert!(unknown_role.message().contains("superuser"));
    assert_eq!(
        code(root.assign_role(UNKNOWN_USER, "editor").await),
        Code::NotFound
    );
    assert_eq!(
        code(root.revoke_role(UNKNOWN_USER, "editor").await),
        Code::NotFound
    );
    assert_eq!(
        code(root.revoke_role(&alice.id, "superuser").await),
        Code::NotFound
    );
    assert_eq!(
        code(root.assign_role("not-a-uuid", "editor").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(root.assign_role(&alice.id, "").await),
        Code::InvalidArgument
    );

    let revoked = root.revoke_role(&alice.id, "editor").await.expect("revoke");
    assert_eq!(revoked.roles, ["user"]);
    assert_eq!(app.has_role(&token, "editor").await, Ok(false));
    assert_eq!(effective_roles(&app, &token).await, ["viewer", "user"]);
    let not_held = root
        .revoke_role(&alice.id, "moderator")
        .await
        .expect("revoking a role not held is fine");
    assert_eq!(not_held.roles, ["user"]);
    assert_eq!(
        root.get_user(&alice.id, "").await.expect("get").roles,
        ["user"]
    );
}

async fn deactivation_ends_sessions_and_blocks_login_until_reactivated(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let before = app.login("alice").await;
    app.validate(&before.access_token)
        .await
        .expect("valid before");

    let off = root.set_active(&alice.id, false).await.expect("deactivate");
    assert!(!off.active);
    assert_eq!(
        code(app.validate(&before.access_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        app.has_role(&before.access_token, "user").await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        code(app.refresh(&before.refresh_token).await),
        Code::Unauthenticated
    );
    let refused = app
        .login_with("alice", PASSWORD)
        .await
        .expect_err("deactivated");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("deactivated"));
    // A wrong password still gets the ordinary answer, revealing nothing more.
    assert_eq!(
        code(app.login_with("alice", "wrong password").await),
        Code::Unauthenticated
    );
    assert!(!root.get_user(&alice.id, "").await.expect("get").active);

    let on = root.set_active(&alice.id, true).await.expect("reactivate");
    assert!(on.active);
    let after = app.login("alice").await;
    assert_eq!(
        app.validate(&after.access_token)
            .await
            .expect("new session")
            .user_id,
        alice.id
    );
    assert_eq!(
        code(app.validate(&before.access_token).await),
        Code::Unauthenticated,
        "ended sessions stay ended"
    );
    assert_eq!(
        code(app.refresh(&before.refresh_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(root.set_active(UNKNOWN_USER, false).await),
        Code::NotFound
    );
}

async fn revoke_sessions_ends_every_live_session_and_counts_them(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    app.register("bob").await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(app.login("alice").await);
    }
    let bob = app.login("bob").await;

    assert_eq!(root.revoke_sessions(&alice.id).await, Ok(3));
    for pair in &sessions {
        assert_eq!(
            code(app.validate(&pair.access_token).await),
            Code::Unauthenticated
        );
        assert_eq!(
            code(app.refresh(&pair.refresh_token).await),
            Code::Unauthenticated
        );
    }
    app.validate(&bob.access_token)
        .await
        .expect("other users keep their sessions");
    assert_eq!(root.revoke_sessions(&alice.id).await, Ok(0));

    // The account itself stays usable.
    let fresh = app.login("alice").await;
    app.validate(&fresh.access_token)
        .await
        .expect("new session");
    assert_eq!(
        root.revoke_sessions(UNKNOWN_USER).await,
        Err(Code::NotFound)
    );
}

async fn the_last_active_admin_cannot_be_demoted_or_deactivated(app: TestApp) {
    let root = app.admin().await;
    let root_id = root.id.clone();
    let demote = root
        .revoke_role(&root_id, "admin")
        .await
        .expect_err("last admin demoted");
    assert_eq!(demote.code(), Code::FailedPrecondition);
    assert!(
        demote.message().contains("last active admin"),
        "{}",
        demote.message()
    );
    let deactivate = root
        .set_active(&root_id, false)
        .await
        .expect_err("last admin deactivated");
    assert_eq!(deactivate.code(), Code::FailedPrecondition);
    assert!(
        deactivate.message().contains("last active admin"),
        "{}",
        deactivate.message()
    );
    // Nothing changed.
    let root_user = root.get_user(&root_id, "").await.expect("root");
    assert_eq!(root_user.roles, ["admin"]);
    assert!(root_user.active);
    app.validate(&root.tokens.access_token)
        .await
        .expect("root's session survives");

    let alice = app.register("alice").await;
    let alice_token = app.login("alice").await.access_token;
    root.assign_role(&alice.id, "admin")
        .await
        .expect("second admin");
    let demoted = root
        .revoke_role(&root_id, "admin")
        .await
        .expect("demote the first admin");
    assert!(demoted.roles.is_empty());
    assert_eq!(
        code(root.list_users(0, "").await),
        Code::PermissionDenied,
        "root is no longer admin"
    );

    // Alice is the last admin now: the same rule protects her.
    let as_alice = app.admin_as(&alice_token).await;
    assert_eq!(
        code(as_alice.revoke_role(&alice.id, "admin").await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(as_alice.set_active(&alice.id, false).await),
        Code::FailedPrecondition
    );
    // With two admins again, one of them may be deactivated.
    as_alice
        .assign_role(&root_id, "admin")
        .await
        .expect("root is admin again");
    let off = as_alice
        .set_active(&root_id, false)
        .await
        .expect("deactivate one of two admins");
    assert!(!off.active);
    assert_eq!(
        code(as_alice.revoke_role(&alice.id, "admin").await),
        Code::FailedPrecondition,
        "an inactive admin does not count"
    );
}

/// Active users holding `admin` directly, as AdminService lists them.
async fn active_admins(admin: &AdminClient) -> Vec<String> {
    admin
        .list_users(500, "")
        .await
        .expect("list")
        .users
        .into_iter()
        .filter(|u| u.active && u.roles.iter().any(|r| r == "admin"))
        .map(|u| u.username)
        .collect()
}

/// The loser of a race between two admins is refused for one of these reasons,
/// depending on whether it was authorised before or after the winner committed.
fn lost_the_race(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition | Code::PermissionDenied | Code::Unauthenticated
    )
}

async fn two_admins_removing_each_other_at_once_leave_one_admin(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    root.assign_role(&alice.id, "admin")
        .await
        .expect("second admin");
    let as_alice = app.admin_as(&app.login("alice").await.access_token).await;

    // Each demotes the other at the same moment: exactly one may win.
    let (by_root, by_alice) = tokio::join!(
        root.revoke_role(&alice.id, "admin"),
        as_alice.revoke_role(&root.id, "admin"),
    );
    let (by_root, by_alice) = (code(by_root), code(by_alice));
    assert!(
        (by_root == Code::Ok && lost_the_race(by_alice))
            || (by_alice == Code::Ok && lost_the_race(by_root)),
        "root: {by_root:?}, alice: {by_alice:?}"
    );
    let (winner, winner_name) = if by_root == Code::Ok {
        (AdminClient::clone(root), "root")
    } else {
        (as_alice.clone(), "alice")
    };
    assert_eq!(active_admins(&winner).await, [winner_name]);

    // The same race with deactivation.
    let bob = app.register("bob").await;
    winner
        .assign_role(&bob.id, "admin")
        .await
        .expect("another admin");
    let as_bob = app.admin_as(&app.login("bob").await.access_token).await;
    let winner_id = if winner_name == "root" {
        root.id.clone()
    } else {
        alice.id.clone()
    };
    let (by_winner, by_bob) = tokio::join!(
        winner.set_active(&bob.id, false),
        as_bob.set_active(&winner_id, false),
    );
    let (by_winner, by_bob) = (code(by_winner), code(by_bob));
    assert!(
        (by_winner == Code::Ok && lost_the_race(by_bob))
            || (by_bob == Code::Ok && lost_the_race(by_winner)),
        "{winner_name}: {by_winner:?}, bob: {by_bob:?}"
    );
    let survivor = if by_winner == Code::Ok {
        &winner
    } else {
        &as_bob
    };
    assert_eq!(active_admins(survivor).await.len(), 1);
}

struct AuditRow {
    at: i64,
    action: String,
    outcome: String,
    actor: Option<String>,
    subject: Option<String>,
    peer: Option<String>,
    detail: Option<String>,
}

impl AuditRow {
    fn text(&self) -> String {
        [
            Some(self.action.as_str()),
            Some(self.outcome.as_str()),
            self.actor.as_deref(),
            self.subject.as_deref(),
            self.peer.as_deref(),
            self.detail.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
    }
}

async fn audit_rows(db: &TestDb) -> Vec<AuditRow> {
    use sqlx::Row;
    sqlx::query(
        "SELECT at, action, outcome, actor, subject, peer, detail FROM audit_events ORDER BY id",
    )
    .fetch_all(&mut db.sql().await)
    .await
    .expect("audit rows")
    .into_iter()
    .map(|row| AuditRow {
        at: row.get(0),
        action: row.get(1),
        outcome: row.get(2),
        actor: row.get(3),
        subject: row.get(4),
        peer: row.get(5),
        detail: row.get(6),
    })
    .collect()
}

async fn security_events_are_audited_without_secrets(app: TestApp) {
    let root = app.admin().await;
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let alice = app.register("alice").await;
    let tokens = app.login("alice").await;
    let wrong = "wrong password 12345";
    assert_eq!(
        code(app.login_with("alice", wrong).await),
        Code::Unauthenticated
    );
    root.assign_role(&alice.id, "editor").await.expect("assign");
    assert_eq!(root.revoke_sessions(&alice.id).await, Ok(1));
    root.set_active(&alice.id, false).await.expect("deactivate");

    let rows = audit_rows(&app.db).await;
    let find = |action: &str, outcome: &str, subject: Option<&str>| {
        rows.iter()
            .find(|r| r.action == action && r.outcome == outcome && r.subject.as_deref() == subject)
            .unwrap_or_else(|| panic!("no {action}/{outcome} row for {subject:?}"))
    };
    let root_registered = find("register", "ok", Some(&root.id));
    assert_eq!(root_registered.actor.as_deref(), Some("cli"));
    assert!(root_registered
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("admin"));

    let registered = find("register", "ok", Some(&alice.id));
    assert_eq!(registered.actor, None, "self-service has no actor");
    let logged_in = find("login", "ok", Some(&alice.id));
    let failed = find("login", "failed", None);
    assert!(failed.detail.as_deref().unwrap_or("").contains("alice"));
    let assigned = find("assign_role", "ok", Some(&alice.id));
    assert_eq!(assigned.detail.as_deref(), Some("role=editor"));
    let revoked = find("revoke_sessions", "ok", Some(&alice.id));
    assert_eq!(revoked.detail.as_deref(), Some("sessions_ended=1"));
    let deactivated = find("deactivate", "ok", Some(&alice.id));
    for admin_event in [assigned, revoked, deactivated] {
        assert_eq!(admin_event.actor.as_deref(), Some(root.id.as_str()));
    }
    for event in [
        registered,
        logged_in,
        failed,
        assigned,
        revoked,
        deactivated,
    ] {
        assert!(
            event.at >= started_ms - 1000,
            "{} at {}",
            event.action,
            event.at
        );
        let peer = event.peer.as_deref().expect("peer recorded");
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    }

    let refresh_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        tokens.refresh_token.as_bytes(),
    ));
    let secrets = [
        PASSWORD,
        wrong,
        tokens.access_token.as_str(),
        tokens.refresh_token.as_str(),
        &tokens.refresh_token[..16],
        refresh_hash.as_str(),
        &refresh_hash[..16],
        &root.tokens.refresh_token[..16],
        // Any JWT fragment (header or claims) starts like this.
        "eyJ",
        "$argon2",
    ];
    for row in &rows {
        let text = row.text();
        for secret in secrets {
            assert!(!text.contains(secret), "audit row leaks a secret: {text}");
        }
    }
}

/// PostgreSQL only: SQLite is one file for one process, so there is no second
/// replica to reach.
async fn a_role_change_reaches_another_replica_within_two_seconds(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let replica = app.replica(&[]).await;
    let remote = replica.client().await;
    let token = remote.login("alice").await.access_token;
    assert_eq!(remote.has_role(&token, "editor").await, Ok(false));
    assert_eq!(app.has_role(&token, "editor").await, Ok(false));

    root.assign_role(&alice.id, "editor").await.expect("assign");
    assert_eq!(
        app.has_role(&token, "editor").await,
        Ok(true),
        "the replica that made the change knows at once"
    );
    let allowed_on = |role: &'static str, expected: bool| {
        let (remote, token) = (remote.clone(), token.clone());
        move || {
            let (remote, token) = (remote.clone(), token.clone());
            async move { remote.has_role(&token, role).await == Ok(expected) }
        }
    };
    let seen = eventually(Duration::from_secs(2), allowed_on("editor", true))
        .await
        .expect("the other replica sees the new role within 2 s");
    eprintln!("role assignment reached the other replica after {seen:?}");

    root.revoke_role(&alice.id, "editor").await.expect("revoke");
    let seen = eventually(Duration::from_secs(2), allowed_on("editor", false))
        .await
        .expect("the other replica sees the revocation within 2 s");
    eprintln!("role revocation reached the other replica after {seen:?}");

    root.set_active(&alice.id, false).await.expect("deactivate");
    let seen = eventually(Duration::from_secs(2), || {
        let (remote, token) = (remote.clone(), token.clone());
        async move { code(remote.validate(&token).await) == Code::Unauthenticated }
    })
    .await
    .expect("the other replica sees the deactivation within 2 s");
    eprintln!("deactivation reached the other replica after {seen:?}");
}

async fn cli_user_create_refuses_bad_input_and_writes_nothing(db: TestDb) {
    let create = |username: &'static str, email: &'static str, role: &'static str| {
        let db = &db;
        async move {
            db.cli(
                &[
                    "user",
                    "create",
                    "--username",
                    username,
                    "--email",
                    email,
                    "--role",
                    role,
                    "--password-stdin",
                ],
                Some(PASSWORD),
            )
            .await
        }
    };
    let made = create("root", "root@example.com", "admin").await;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(String::from_utf8_lossy(&made.stdout).contains("created user root"));
    assert_eq!(db.count("users").await, 1);

    let cases = [
        ("carol", "carol@example.com", "superuser", "superuser"),
        ("ROOT", "other@example.com", "user", "already taken"),
        ("dave", "ROOT@example.com", "user", "already registered"),
        ("erin", "not-an-email", "user", "email"),
        ("x", "x@example.com", "user", "username"),
    ];
    for (username, email, role, says) in cases {
        let output = create(username, email, role).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{username} {email} {role}");
        assert!(
            stderr.contains(says),
            "stderr for {username} {email} {role} should say {says:?}: {stderr}"
        );
        assert!(!stderr.contains(PASSWORD));
        assert_eq!(db.count("users").await, 1, "nothing written for {username}");
    }

    let short = db
        .cli(
            &[
                "user",
                "create",
                "--username",
                "frank",
                "--email",
                "frank@example.com",
                "--password-stdin",
            ],
            Some("short"),
        )
        .await;
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("password"));
    assert_eq!(db.count("users").await, 1);
}

on_both_databases!(
    admin_calls_need_a_valid_token_of_a_current_admin,
    get_user_finds_by_id_or_by_username_in_any_case,
    list_users_pages_through_everyone_once_in_a_stable_order,
    users_registered_while_paging_do_not_disturb_the_listing,
    assigned_roles_apply_at_once_to_tokens_issued_before,
    deactivation_ends_sessions_and_blocks_login_until_reactivated,
    revoke_sessions_ends_every_live_session_and_counts_them,
    the_last_active_admin_cannot_be_demoted_or_deactivated,
    two_admins_removing_each_other_at_once_leave_one_admin,
    security_events_are_audited_without_secrets,
    cli_user_create_refuses_bad_input_and_writes_nothing,
);
on_postgres!(a_role_change_reaches_another_replica_within_two_seconds);
