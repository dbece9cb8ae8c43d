//! AdminService and RBAC through the real gRPC API: who may call it, user lookup and
//! paging, fresh roles on existing tokens, deactivation, ending sessions, the
//! last-admin rule, the audit trail, a second replica, and `authd user create`.

use std::{collections::HashSet, time::Duration};

use crate::helpers::{
    admin_token, authd_cli, login, register, validate, Backend, Bearer, ServerProcess, TestDb,
    TestServer, PASSWORD,
};
use authd::grpc::pb::{
    self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
};
use tonic::{service::interceptor::InterceptedService, transport::Channel, Code, Status};

type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;
type Auth = AuthServiceClient<Channel>;

/// A server with one admin (`root`, made by the CLI) and an AdminService client
/// carrying root's token. The server is dropped before the database.
struct Fixture {
    server: TestServer,
    admin: Admin,
    auth: Auth,
    root_id: String,
    root_tokens: pb::TokenPair,
    db: TestDb,
}

impl Fixture {
    async fn start(backend: Backend) -> Option<Fixture> {
        let db = TestDb::create(backend).await?;
        let server = TestServer::start(&db).await;
        let (root_id, root_tokens) = admin_token(&db, &server, "root").await;
        let admin = server.admin(&root_tokens.access_token).await;
        let auth = server.auth().await;
        Some(Fixture {
            server,
            admin,
            auth,
            root_id,
            root_tokens,
            db,
        })
    }
}

fn code<T>(result: Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// `allowed`, or the status code of the refusal.
async fn check_role(client: &mut Auth, token: &str, role: &str) -> Result<bool, Code> {
    client
        .check_role(pb::CheckRoleRequest {
            token: token.into(),
            role: role.into(),
        })
        .await
        .map(|r| r.into_inner().allowed)
        .map_err(|status| status.code())
}

async fn login_with(client: &mut Auth, username: &str, password: &str) -> Result<(), Status> {
    client
        .login(pb::LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .map(|_| ())
}

async fn refresh(client: &mut Auth, refresh_token: &str) -> Result<pb::TokenPair, Status> {
    client
        .refresh(pb::RefreshRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

async fn effective_roles(client: &mut Auth, token: &str) -> Vec<String> {
    validate(client, token).await.expect("validates").roles
}

async fn get_user(admin: &mut Admin, user_id: &str, username: &str) -> Result<pb::User, Status> {
    admin
        .get_user(pb::GetUserRequest {
            user_id: user_id.into(),
            username: username.into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn list_users(
    admin: &mut Admin,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListUsersResponse, Status> {
    admin
        .list_users(pb::ListUsersRequest {
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn assign_role(admin: &mut Admin, user_id: &str, role: &str) -> Result<pb::User, Status> {
    admin
        .assign_role(pb::AssignRoleRequest {
            user_id: user_id.into(),
            role: role.into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn revoke_role(admin: &mut Admin, user_id: &str, role: &str) -> Result<pb::User, Status> {
    admin
        .revoke_role(pb::RevokeRoleRequest {
            user_id: user_id.into(),
            role: role.into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn set_active(admin: &mut Admin, user_id: &str, active: bool) -> Result<pb::User, Status> {
    admin
        .set_user_active(pb::SetUserActiveRequest {
            user_id: user_id.into(),
            active,
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

/// How many sessions were ended, or the status code of the refusal.
async fn revoke_sessions(admin: &mut Admin, user_id: &str) -> Result<i32, Code> {
    admin
        .revoke_sessions(pb::RevokeSessionsRequest {
            user_id: user_id.into(),
        })
        .await
        .map(|r| r.into_inner().revoked)
        .map_err(|status| status.code())
}

async fn user_count(db: &TestDb) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) FROM users")
        .fetch_one(&mut db.sql().await)
        .await
        .expect("count users")
        .get(0)
}

const UNKNOWN_USER: &str = "00000000-0000-4000-8000-000000000000";

async fn admin_calls_need_a_valid_token_of_a_current_admin(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let request = || pb::ListUsersRequest {
        page_size: 0,
        page_token: String::new(),
    };

    let mut anonymous = AdminServiceClient::new(f.server.channel().await);
    let status = anonymous.list_users(request()).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization"),
        "{}",
        status.message()
    );

    for credential in ["garbage", "", f.root_tokens.refresh_token.as_str()] {
        let mut client = f.server.admin(credential).await;
        assert_eq!(
            code(client.list_users(request()).await),
            Code::Unauthenticated,
            "bearer {credential:?}"
        );
    }
    // A good token under another scheme is not a bearer credential.
    let mut basic = AdminServiceClient::with_interceptor(
        f.server.channel().await,
        Bearer(format!("Basic {}", f.root_tokens.access_token)),
    );
    assert_eq!(
        code(basic.list_users(request()).await),
        Code::Unauthenticated
    );

    let alice = register(&mut f.auth, "alice").await;
    let alice_tokens = login(&mut f.auth, "alice").await;
    let mut as_alice = f.server.admin(&alice_tokens.access_token).await;
    let denied = as_alice.list_users(request()).await.expect_err("not admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("admin"), "{}", denied.message());
    assert_eq!(
        code(get_user(&mut as_alice, &alice.id, "").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(assign_role(&mut as_alice, &alice.id, "admin").await),
        Code::PermissionDenied,
        "a user cannot make themself admin"
    );

    let users = f
        .admin
        .list_users(request())
        .await
        .expect("admin may list")
        .into_inner()
        .users;
    assert_eq!(users.len(), 2);

    // Admin is checked now, not as frozen into the token: alice's old token works
    // for AdminService once she is granted admin, and stops when it is taken away.
    assign_role(&mut f.admin, &alice.id, "admin")
        .await
        .expect("grant admin");
    as_alice
        .list_users(request())
        .await
        .expect("alice is admin now");
    revoke_role(&mut f.admin, &alice.id, "admin")
        .await
        .expect("take admin");
    assert_eq!(
        code(as_alice.list_users(request()).await),
        Code::PermissionDenied
    );
}

async fn get_user_finds_by_id_or_by_username_in_any_case(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let alice = register(&mut f.auth, "Alice").await;

    let by_id = get_user(&mut f.admin, &alice.id, "").await.expect("by id");
    assert_eq!(by_id, alice);
    for name in ["Alice", "alice", "ALICE"] {
        let by_name = get_user(&mut f.admin, "", name).await.expect("by name");
        assert_eq!(by_name.id, alice.id, "{name}");
        assert_eq!(by_name.username, "Alice");
        assert_eq!(by_name.roles, ["user"]);
        assert!(by_name.active);
    }
    let root = get_user(&mut f.admin, &f.root_id, "").await.expect("root");
    assert_eq!(root.username, "root");
    assert_eq!(root.roles, ["admin"]);

    let unknown = get_user(&mut f.admin, UNKNOWN_USER, "")
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(
        code(get_user(&mut f.admin, "", "nobody").await),
        Code::NotFound
    );
    let malformed = get_user(&mut f.admin, "not-a-uuid", "")
        .await
        .expect_err("malformed id");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().starts_with("user_id"));

    let neither = get_user(&mut f.admin, "", "").await.expect_err("neither");
    assert_eq!(neither.code(), Code::InvalidArgument);
    let both = get_user(&mut f.admin, &alice.id, "Alice")
        .await
        .expect_err("both");
    assert_eq!(both.code(), Code::InvalidArgument);
}

/// Every user once, following next_page_token; panics on a runaway listing.
async fn list_all(admin: &mut Admin, page_size: i32) -> (Vec<pb::User>, Vec<usize>) {
    let (mut users, mut page_sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    for _ in 0..100 {
        let page = list_users(admin, page_size, &token).await.expect("page");
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

async fn list_users_pages_through_everyone_once_in_a_stable_order(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let mut expected: HashSet<String> = HashSet::from([f.root_id.clone()]);
    for i in 0..7 {
        expected.insert(register(&mut f.auth, &format!("user{i}")).await.id);
    }

    let (paged, sizes) = list_all(&mut f.admin, 3).await;
    assert_eq!(sizes, [3, 3, 2]);
    let ids: Vec<String> = paged.iter().map(|u| u.id.clone()).collect();
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(ids.len(), expected.len(), "nobody twice");
    assert!(
        paged.windows(2).all(|w| position(&w[0]) < position(&w[1])),
        "oldest first"
    );
    assert_eq!(paged[0].id, f.root_id, "the first admin is the oldest");

    let (again, _) = list_all(&mut f.admin, 3).await;
    assert_eq!(again, paged, "the same order every time");

    let default = list_users(&mut f.admin, 0, "").await.expect("default");
    assert_eq!(default.users, paged, "page_size 0 means 50: all 8 fit");
    assert!(default.next_page_token.is_empty());
    let largest = list_users(&mut f.admin, 500, "").await.expect("500");
    assert_eq!(largest.users.len(), 8);

    for bad_size in [501, -1] {
        let status = list_users(&mut f.admin, bad_size, "")
            .await
            .expect_err("bad size");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_size}");
        assert!(status.message().starts_with("page_size"));
    }
    let first = list_users(&mut f.admin, 3, "").await.expect("first page");
    let mut forged = first.next_page_token.clone();
    forged.insert(0, 'x');
    for bad_token in ["garbage", "djE6MTox", forged.as_str(), &"A".repeat(300)] {
        let status = list_users(&mut f.admin, 3, bad_token)
            .await
            .expect_err("bad token");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_token}");
        assert!(status.message().starts_with("page_token"));
    }
}

async fn users_registered_while_paging_do_not_disturb_the_listing(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let mut originals: HashSet<String> = HashSet::from([f.root_id.clone()]);
    for i in 0..7 {
        originals.insert(register(&mut f.auth, &format!("user{i}")).await.id);
    }

    let (mut seen, mut token, mut added) = (Vec::new(), String::new(), 0);
    loop {
        assert!(seen.len() < 100, "listing did not end");
        let page = list_users(&mut f.admin, 3, &token).await.expect("page");
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Two newcomers between pages, for the first few pages.
        if added < 6 {
            for _ in 0..2 {
                register(&mut f.auth, &format!("late{added}")).await;
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

async fn assigned_roles_apply_at_once_to_tokens_issued_before(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let alice = register(&mut f.auth, "alice").await;
    let pair = login(&mut f.auth, "alice").await;
    let token = pair.access_token;
    assert_eq!(check_role(&mut f.auth, &token, "editor").await, Ok(false));
    assert_eq!(
        effective_roles(&mut f.auth, &token).await,
        ["viewer", "user"]
    );

    let granted = assign_role(&mut f.admin, &alice.id, "editor")
        .await
        .expect("assign");
    assert_eq!(granted.roles, ["editor", "user"]);
    assert_eq!(check_role(&mut f.auth, &token, "editor").await, Ok(true));
    assert_eq!(check_role(&mut f.auth, &token, "viewer").await, Ok(true));
    assert_eq!(
        check_role(&mut f.auth, &token, "moderator").await,
        Ok(false)
    );
    assert_eq!(
        effective_roles(&mut f.auth, &token).await,
        ["viewer", "user", "editor"]
    );
    // A token issued by Refresh after the grant carries the roles of now.
    let refreshed = refresh(&mut f.auth, &pair.refresh_token)
        .await
        .expect("refresh");
    assert_eq!(
        crate::helpers::token_claims(&refreshed.access_token)["roles"],
        serde_json::json!(["viewer", "user", "editor"])
    );

    // Idempotent: granting again changes nothing.
    let again = assign_role(&mut f.admin, &alice.id, "editor")
        .await
        .expect("assign twice");
    assert_eq!(again.roles, ["editor", "user"]);

    let unknown_role = assign_role(&mut f.admin, &alice.id, "superuser")
        .await
        .expect_err("unknown role");
    assert_eq!(unknown_role.code(), Code::NotFound);
    assert!(unknown_role.message().contains("superuser"));
    assert_eq!(
        code(assign_role(&mut f.admin, UNKNOWN_USER, "editor").await),
        Code::NotFound
    );
    assert_eq!(
        code(revoke_role(&mut f.admin, UNKNOWN_USER, "editor").await),
        Code::NotFound
    );
    assert_eq!(
        code(revoke_role(&mut f.admin, &alice.id, "superuser").await),
        Code::NotFound
    );
    assert_eq!(
        code(assign_role(&mut f.admin, "not-a-uuid", "editor").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(assign_role(&mut f.admin, &alice.id, "").await),
        Code::InvalidArgument
    );

    let revoked = revoke_role(&mut f.admin, &alice.id, "editor")
        .await
        .expect("revoke");
    assert_eq!(revoked.roles, ["user"]);
    assert_eq!(check_role(&mut f.auth, &token, "editor").await, Ok(false));
    assert_eq!(
        effective_roles(&mut f.auth, &token).await,
        ["viewer", "user"]
    );
    let not_held = revoke_role(&mut f.admin, &alice.id, "moderator")
        .await
        .expect("revoking a role not held is fine");
    assert_eq!(not_held.roles, ["user"]);
    assert_eq!(
        get_user(&mut f.admin, &alice.id, "")
            .await
            .expect("get")
            .roles,
        ["user"]
    );
}

async fn deactivation_ends_sessions_and_blocks_login_until_reactivated(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let alice = register(&mut f.auth, "alice").await;
    let before = login(&mut f.auth, "alice").await;
    validate(&mut f.auth, &before.access_token)
        .await
        .expect("valid before");

    let off = set_active(&mut f.admin, &alice.id, false)
        .await
        .expect("deactivate");
    assert!(!off.active);
    assert_eq!(
        code(validate(&mut f.auth, &before.access_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        check_role(&mut f.auth, &before.access_token, "user").await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        code(refresh(&mut f.auth, &before.refresh_token).await),
        Code::Unauthenticated
    );
    let refused = login_with(&mut f.auth, "alice", PASSWORD)
        .await
        .expect_err("deactivated");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("deactivated"));
    // A wrong password still gets the ordinary answer, revealing nothing more.
    assert_eq!(
        code(login_with(&mut f.auth, "alice", "wrong password").await),
        Code::Unauthenticated
    );
    assert!(
        !get_user(&mut f.admin, &alice.id, "")
            .await
            .expect("get")
            .active
    );

    let on = set_active(&mut f.admin, &alice.id, true)
        .await
        .expect("reactivate");
    assert!(on.active);
    let after = login(&mut f.auth, "alice").await;
    assert_eq!(
        validate(&mut f.auth, &after.access_token)
            .await
            .expect("new session")
            .user_id,
        alice.id
    );
    assert_eq!(
        code(validate(&mut f.auth, &before.access_token).await),
        Code::Unauthenticated,
        "ended sessions stay ended"
    );
    assert_eq!(
        code(refresh(&mut f.auth, &before.refresh_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(set_active(&mut f.admin, UNKNOWN_USER, false).await),
        Code::NotFound
    );
}

async fn revoke_sessions_ends_every_live_session_and_counts_them(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let alice = register(&mut f.auth, "alice").await;
    register(&mut f.auth, "bob").await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(login(&mut f.auth, "alice").await);
    }
    let bob = login(&mut f.auth, "bob").await;

    assert_eq!(revoke_sessions(&mut f.admin, &alice.id).await, Ok(3));
    for pair in &sessions {
        assert_eq!(
            code(validate(&mut f.auth, &pair.access_token).await),
            Code::Unauthenticated
        );
        assert_eq!(
            code(refresh(&mut f.auth, &pair.refresh_token).await),
            Code::Unauthenticated
        );
    }
    validate(&mut f.auth, &bob.access_token)
        .await
        .expect("other users keep their sessions");
    assert_eq!(revoke_sessions(&mut f.admin, &alice.id).await, Ok(0));

    // The account itself stays usable.
    let fresh = login(&mut f.auth, "alice").await;
    validate(&mut f.auth, &fresh.access_token)
        .await
        .expect("new session");
    assert_eq!(
        revoke_sessions(&mut f.admin, UNKNOWN_USER).await,
        Err(Code::NotFound)
    );
}

async fn the_last_active_admin_cannot_be_demoted_or_deactivated(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let root_id = f.root_id.clone();
    let demote = revoke_role(&mut f.admin, &root_id, "admin")
        .await
        .expect_err("last admin demoted");
    assert_eq!(demote.code(), Code::FailedPrecondition);
    assert!(
        demote.message().contains("last active admin"),
        "{}",
        demote.message()
    );
    let deactivate = set_active(&mut f.admin, &root_id, false)
        .await
        .expect_err("last admin deactivated");
    assert_eq!(deactivate.code(), Code::FailedPrecondition);
    assert!(
        deactivate.message().contains("last active admin"),
        "{}",
        deactivate.message()
    );
    // Nothing changed.
    let root = get_user(&mut f.admin, &root_id, "").await.expect("root");
    assert_eq!(root.roles, ["admin"]);
    assert!(root.active);
    validate(&mut f.auth, &f.root_tokens.access_token)
        .await
        .expect("root's session survives");

    let alice = register(&mut f.auth, "alice").await;
    let alice_token = login(&mut f.auth, "alice").await.access_token;
    assign_role(&mut f.admin, &alice.id, "admin")
        .await
        .expect("second admin");
    let demoted = revoke_role(&mut f.admin, &root_id, "admin")
        .await
        .expect("demote the first admin");
    assert!(demoted.roles.is_empty());
    assert_eq!(
        code(list_users(&mut f.admin, 0, "").await),
        Code::PermissionDenied,
        "root is no longer admin"
    );

    // Alice is the last admin now: the same rule protects her.
    let mut as_alice = f.server.admin(&alice_token).await;
    assert_eq!(
        code(revoke_role(&mut as_alice, &alice.id, "admin").await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(set_active(&mut as_alice, &alice.id, false).await),
        Code::FailedPrecondition
    );
    // With two admins again, one of them may be deactivated.
    assign_role(&mut as_alice, &root_id, "admin")
        .await
        .expect("root is admin again");
    let off = set_active(&mut as_alice, &root_id, false)
        .await
        .expect("deactivate one of two admins");
    assert!(!off.active);
    assert_eq!(
        code(revoke_role(&mut as_alice, &alice.id, "admin").await),
        Code::FailedPrecondition,
        "an inactive admin does not count"
    );
}

/// Active users holding `admin` directly, as AdminService lists them.
async fn active_admins(admin: &mut Admin) -> Vec<String> {
    list_users(admin, 500, "")
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

async fn two_admins_removing_each_other_at_once_leave_one_admin(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let alice = register(&mut f.auth, "alice").await;
    assign_role(&mut f.admin, &alice.id, "admin")
        .await
        .expect("second admin");
    let as_alice = f
        .server
        .admin(&login(&mut f.auth, "alice").await.access_token)
        .await;

    // Each demotes the other at the same moment: exactly one may win.
    let (mut root_client, mut alice_client) = (f.admin.clone(), as_alice.clone());
    let (by_root, by_alice) = tokio::join!(
        revoke_role(&mut root_client, &alice.id, "admin"),
        revoke_role(&mut alice_client, &f.root_id, "admin"),
    );
    let (by_root, by_alice) = (code(by_root), code(by_alice));
    assert!(
        (by_root == Code::Ok && lost_the_race(by_alice))
            || (by_alice == Code::Ok && lost_the_race(by_root)),
        "root: {by_root:?}, alice: {by_alice:?}"
    );
    let (mut winner, winner_name) = if by_root == Code::Ok {
        (f.admin.clone(), "root")
    } else {
        (as_alice.clone(), "alice")
    };
    assert_eq!(active_admins(&mut winner).await, [winner_name]);

    // The same race with deactivation.
    let bob = register(&mut f.auth, "bob").await;
    assign_role(&mut winner, &bob.id, "admin")
        .await
        .expect("another admin");
    let mut as_bob = f
        .server
        .admin(&login(&mut f.auth, "bob").await.access_token)
        .await;
    let winner_id = if winner_name == "root" {
        f.root_id.clone()
    } else {
        alice.id.clone()
    };
    let (mut winner_client, mut bob_client) = (winner.clone(), as_bob.clone());
    let (by_winner, by_bob) = tokio::join!(
        set_active(&mut winner_client, &bob.id, false),
        set_active(&mut bob_client, &winner_id, false),
    );
    let (by_winner, by_bob) = (code(by_winner), code(by_bob));
    assert!(
        (by_winner == Code::Ok && lost_the_race(by_bob))
            || (by_bob == Code::Ok && lost_the_race(by_winner)),
        "{winner_name}: {by_winner:?}, bob: {by_bob:?}"
    );
    let survivor = if by_winner == Code::Ok {
        &mut winner
    } else {
        &mut as_bob
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

async fn security_events_are_audited_without_secrets(backend: Backend) {
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let alice = register(&mut f.auth, "alice").await;
    let tokens = login(&mut f.auth, "alice").await;
    let wrong = "wrong password 12345";
    assert_eq!(
        code(login_with(&mut f.auth, "alice", wrong).await),
        Code::Unauthenticated
    );
    assign_role(&mut f.admin, &alice.id, "editor")
        .await
        .expect("assign");
    assert_eq!(revoke_sessions(&mut f.admin, &alice.id).await, Ok(1));
    set_active(&mut f.admin, &alice.id, false)
        .await
        .expect("deactivate");

    let rows = audit_rows(&f.db).await;
    let find = |action: &str, outcome: &str, subject: Option<&str>| {
        rows.iter()
            .find(|r| r.action == action && r.outcome == outcome && r.subject.as_deref() == subject)
            .unwrap_or_else(|| panic!("no {action}/{outcome} row for {subject:?}"))
    };
    let root = find("register", "ok", Some(&f.root_id));
    assert_eq!(root.actor.as_deref(), Some("cli"));
    assert!(root.detail.as_deref().unwrap_or("").contains("admin"));

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
        assert_eq!(admin_event.actor.as_deref(), Some(f.root_id.as_str()));
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
        &f.root_tokens.refresh_token[..16],
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

async fn a_role_change_reaches_another_replica_within_two_seconds(backend: Backend) {
    if backend != Backend::Postgres {
        // SQLite is one file for one process: there is no second replica to reach.
        return;
    }
    let Some(mut f) = Fixture::start(backend).await else {
        return;
    };
    let alice = register(&mut f.auth, "alice").await;
    let replica = ServerProcess::start(&f.db, &[]).await;
    let mut remote = replica.auth().await;
    let token = login(&mut remote, "alice").await.access_token;
    assert_eq!(check_role(&mut remote, &token, "editor").await, Ok(false));
    assert_eq!(check_role(&mut f.auth, &token, "editor").await, Ok(false));

    assign_role(&mut f.admin, &alice.id, "editor")
        .await
        .expect("assign");
    assert_eq!(
        check_role(&mut f.auth, &token, "editor").await,
        Ok(true),
        "the replica that made the change knows at once"
    );
    let allowed_on = |role: &'static str, expected: bool| {
        let (remote, token) = (remote.clone(), token.clone());
        move || {
            let (mut remote, token) = (remote.clone(), token.clone());
            async move { check_role(&mut remote, &token, role).await == Ok(expected) }
        }
    };
    let seen = crate::helpers::eventually(Duration::from_secs(2), allowed_on("editor", true))
        .await
        .expect("the other replica sees the new role within 2 s");
    eprintln!("role assignment reached the other replica after {seen:?}");

    revoke_role(&mut f.admin, &alice.id, "editor")
        .await
        .expect("revoke");
    let seen = crate::helpers::eventually(Duration::from_secs(2), allowed_on("editor", false))
        .await
        .expect("the other replica sees the revocation within 2 s");
    eprintln!("role revocation reached the other replica after {seen:?}");

    set_active(&mut f.admin, &alice.id, false)
        .await
        .expect("deactivate");
    let seen = crate::helpers::eventually(Duration::from_secs(2), || {
        let (mut remote, token) = (remote.clone(), token.clone());
        async move { code(validate(&mut remote, &token).await) == Code::Unauthenticated }
    })
    .await
    .expect("the other replica sees the deactivation within 2 s");
    eprintln!("deactivation reached the other replica after {seen:?}");
}

async fn cli_user_create_refuses_bad_input_and_writes_nothing(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let create = |username: &'static str, email: &'static str, role: &'static str| {
        let db = &db;
        async move {
            authd_cli(
                db,
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
    assert_eq!(user_count(&db).await, 1);

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
        assert_eq!(user_count(&db).await, 1, "nothing written for {username}");
    }

    let short = authd_cli(
        &db,
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
    assert_eq!(user_count(&db).await, 1);
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
    a_role_change_reaches_another_replica_within_two_seconds,
    cli_user_create_refuses_bad_input_and_writes_nothing,
);
