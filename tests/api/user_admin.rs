//! Changing and erasing users (API.md, "Account lifecycle"): UpdateUser,
//! DeleteUser, ListUserSessions, and the operator's `authd user` commands.

use std::{collections::HashMap, time::Duration};

use authd::grpc::pb;
use tonic::Code;

use crate::helpers::{code, eventually, token_claims, AdminClient, AuthClient, TestApp, PASSWORD};

fn rename(user_id: &str, username: &str) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user_id: user_id.into(),
        username: Some(username.into()),
        ..Default::default()
    }
}

async fn update_user_sets_the_fields_given_and_keeps_the_others(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let tokens = app.login("alice").await;

    let renamed = root
        .update_user(rename(&alice.id, "Alicia"))
        .await
        .expect("rename");
    assert_eq!(renamed.username, "Alicia", "stored as given");
    assert_eq!(renamed.email, alice.email, "not given: kept");
    assert_eq!(renamed.roles, alice.roles);
    assert_eq!(
        app.validate(&tokens.access_token)
            .await
            .expect("valid")
            .username,
        "Alicia",
        "ValidateToken answers the new username at once"
    );
    assert_eq!(
        code(app.login_with("alice", PASSWORD).await),
        Code::Unauthenticated,
        "the old name is gone"
    );
    app.login_with("alicia", PASSWORD)
        .await
        .expect("the new name logs in, in any case");

    let changed = root
        .update_user(pb::UpdateUserRequest {
            user_id: alice.id.clone(),
            email: Some("a.new@Example.com".into()),
            full_name: Some("Alicia Liddell".into()),
            ..Default::default()
        })
        .await
        .expect("update");
    assert_eq!(
        (
            changed.username.as_str(),
            changed.email.as_str(),
            changed.full_name.as_str()
        ),
        ("Alicia", "a.new@Example.com", "Alicia Liddell")
    );
    app.login_with("A.NEW@example.com", PASSWORD)
        .await
        .expect("the new email logs in");
    let cleared = root
        .update_user(pb::UpdateUserRequest {
            user_id: alice.id.clone(),
            full_name: Some(String::new()),
            ..Default::default()
        })
        .await
        .expect("clear full name");
    assert_eq!(cleared.full_name, "");
    assert_eq!(cleared.email, "a.new@Example.com");
    // A user may take their own name in another case.
    root.update_user(rename(&alice.id, "ALICIA"))
        .await
        .expect("own name, other case");
}

async fn update_user_applies_registers_rules(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    app.register("bob").await;
    let field_of = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status
            .message()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    for (request, field) in [
        (rename(&alice.id, "x"), "username"),
        (rename(&alice.id, "bad name!"), "username"),
        (
            pb::UpdateUserRequest {
                user_id: alice.id.clone(),
                email: Some("not-an-email".into()),
                ..Default::default()
            },
            "email",
        ),
        (
            pb::UpdateUserRequest {
                user_id: alice.id.clone(),
                full_name: Some("x".repeat(257)),
                ..Default::default()
            },
            "full_name",
        ),
        (rename("not-a-uuid", "carol"), "user_id"),
    ] {
        let status = root.update_user(request).await.expect_err(field);
        assert_eq!(field_of(status), field);
    }
    assert_eq!(
        code(
            root.update_user(rename(&uuid::Uuid::new_v4().to_string(), "carol"))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(root.update_user(rename(&alice.id, "BOB")).await),
        Code::AlreadyExists,
        "usernames compare case-insensitively"
    );
    assert_eq!(
        code(
            root.update_user(pb::UpdateUserRequest {
                user_id: alice.id.clone(),
                email: Some("Bob@Example.com".into()),
                ..Default::default()
            })
            .await
        ),
        Code::AlreadyExists
    );
    let unchanged = root.get_user(&alice.id, "").await.expect("get");
    assert_eq!(
        (unchanged.username.as_str(), unchanged.email.as_str()),
        ("alice", "alice@example.com"),
        "refused updates changed nothing"
    );
    let not_admin = app.admin_as(&app.login("alice").await.access_token).await;
    assert_eq!(
        code(not_admin.update_user(rename(&alice.id, "queen")).await),
        Code::PermissionDenied
    );
}

async fn concurrent_renames_to_one_name_have_one_winner(app: TestApp) {
    let root = app.admin().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(app.register(&format!("user{i}")).await.id);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(ids.len()));
    let mut calls = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (client, barrier, id) = (AdminClient::clone(root), barrier.clone(), id.clone());
        let name = if i % 2 == 0 { "Winner" } else { "WINNER" };
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            code(client.update_user(rename(&id, name)).await)
        }));
    }
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for call in calls {
        *codes.entry(call.await.expect("join")).or_default() += 1;
    }
    assert_eq!(codes.get(&Code::Ok), Some(&1), "{codes:?}");
    assert_eq!(codes.get(&Code::AlreadyExists), Some(&5), "{codes:?}");
    assert_eq!(app.db.count("users WHERE username_lc = 'winner'").await, 1);
}

async fn delete_user_erases_the_user_and_everything_that_is_theirs(app: TestApp) {
    let root = app.admin().await;
    // A failure while the name was unknown: counted under the name itself.
    let _ = app.login_with("alice", "a wrong password").await;
    let alice = app.register("alice").await;
    root.assign_role(&alice.id, "editor").await.expect("role");
    let tokens = [app.login("alice").await, app.login("alice").await];
    let _ = app.login_with("alice", "a wrong password").await;
    let _ = app
        .login_with("alice@example.com", "a wrong password")
        .await;
    root.create_password_reset_token(&alice.id)
        .await
        .expect("reset token");
    root.create_email_verification_token(&alice.id)
        .await
        .expect("verification token");

    root.delete_user(&alice.id).await.expect("delete");
    for pair in &tokens {
        assert_eq!(
            code(app.validate(&pair.access_token).await),
            Code::Unauthenticated,
            "its tokens fail at once"
        );
        assert_eq!(
            code(app.refresh(&pair.refresh_token).await),
            Code::Unauthenticated
        );
    }
    assert_eq!(code(root.get_user(&alice.id, "").await), Code::NotFound);
    assert_eq!(code(root.delete_user(&alice.id).await), Code::NotFound);
    assert_eq!(
        code(root.list_user_sessions(&alice.id, 0, "").await),
        Code::NotFound
    );
    let id = alice.id.as_str();
    for table in [
        format!("users WHERE id = '{id}'"),
        format!("user_roles WHERE user_id = '{id}'"),
        format!("sessions WHERE user_id = '{id}'"),
        format!("account_tokens WHERE user_id = '{id}'"),
        format!("login_failures WHERE username_lc IN ('{id}', 'alice', 'alice@example.com')"),
        "refresh_tokens WHERE session_id NOT IN (SELECT id FROM sessions)".to_owned(),
    ] {
        assert_eq!(app.db.count(&table).await, 0, "{table}");
    }
    // Audit rows keep the id, and no name or address.
    assert!(
        app.db
            .count(&format!("audit_events WHERE subject = '{id}'"))
            .await
            >= 3
    );
    let named: Vec<(String, Option<String>)> = {
        use sqlx::Row;
        sqlx::query("SELECT action, detail FROM audit_events")
            .fetch_all(&mut app.db.sql().await)
            .await
            .expect("audit")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .filter(|(_, detail): &(String, Option<String>)| {
                detail
                    .as_deref()
                    .unwrap_or_default()
                    .to_lowercase()
                    .contains("alice")
            })
            .collect()
    };
    assert!(
        named.is_empty(),
        "no audit row names the erased user: {named:?}"
    );
    assert_eq!(
        app.db
            .count("audit_events WHERE detail = 'login=(erased)'")
            .await,
        3
    );
    // (Checked after the audit rows: a login by the freed name is audited anew.)
    assert_eq!(
        code(app.login_with("alice", PASSWORD).await),
        Code::Unauthenticated
    );
    // Username and email are free again.
    let again = app.register("Alice").await;
    assert_ne!(again.id, alice.id);
}

/// API keys an erased admin made stay, and keep the id of their creator.
async fn api_keys_an_erased_admin_made_stay(app: TestApp) {
    let root = app.admin().await;
    let ops = app.register("ops").await;
    root.assign_role(&ops.id, "admin").await.expect("admin");
    let ops_admin = app.admin_as(&app.login("ops").await.access_token).await;
    let key = ops_admin
        .create_api_key("svc", &["viewer"], 0)
        .await
        .expect("key");
    root.delete_user(&ops.id).await.expect("delete");
    let listed = root.list_api_keys(0, "").await.expect("list").keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].created_by, ops.id);
    app.validate(&key.api_key)
        .await
        .expect("the key still validates");
}

async fn the_last_active_admin_cannot_be_deleted(app: TestApp) {
    let root = app.admin().await;
    let status = root.delete_user(&root.id).await.expect_err("last admin");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let bob = app.register("bob").await;
    root.assign_role(&bob.id, "admin").await.expect("admin");
    root.set_active(&bob.id, false).await.expect("deactivate");
    assert_eq!(
        code(root.delete_user(&root.id).await),
        Code::FailedPrecondition,
        "a deactivated admin does not count"
    );
    root.delete_user(&bob.id)
        .await
        .expect("a deactivated admin may be deleted");
    app.validate(&root.tokens.access_token)
        .await
        .expect("root is still there");
}

/// Two admins deleting each other at once: one wins, one admin remains.
async fn two_admins_deleting_each_other_at_once_leave_one_admin(app: TestApp) {
    let root = app.admin().await;
    let bob = app.register("bob").await;
    root.assign_role(&bob.id, "admin").await.expect("admin");
    let bob_admin = app.admin_as(&app.login("bob").await.access_token).await;
    let (root_id, bob_id) = (root.id.clone(), bob.id.clone());
    let (a, b) = tokio::join!(root.delete_user(&bob_id), bob_admin.delete_user(&root_id));
    let codes = [code(a), code(b)];
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count(),
        1,
        "{codes:?}"
    );
    assert!(
        codes.iter().all(|c| matches!(
            c,
            Code::Ok | Code::FailedPrecondition | Code::Unauthenticated
        )),
        "{codes:?}"
    );
    assert_eq!(app.db.count("user_roles WHERE role = 'admin'").await, 1);
}

/// PostgreSQL only: SQLite is one file for one process, so there is no second
/// replica to reach.
async fn another_replica_refuses_a_deleted_users_tokens_within_two_seconds(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let replica = app.replica(&[]).await;
    let remote = replica.client().await;
    let tokens = remote.login("alice").await;
    remote.validate(&tokens.access_token).await.expect("valid");
    root.delete_user(&alice.id).await.expect("delete");
    let seen = eventually(Duration::from_secs(2), || {
        let (remote, token) = (remote.clone(), tokens.access_token.clone());
        async move { code(remote.validate(&token).await) == Code::Unauthenticated }
    })
    .await
    .expect("the other replica refuses the token within 2 s");
    eprintln!("deletion reached the other replica after {seen:?}");
    assert_eq!(
        code(remote.refresh(&tokens.refresh_token).await),
        Code::Unauthenticated
    );
}

async fn list_user_sessions_pages_through_live_sessions(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let mut sids = Vec::new();
    for _ in 0..3 {
        let tokens = app.login("alice").await;
        sids.push(
            token_claims(&tokens.access_token)["sid"]
                .as_str()
                .expect("sid")
                .to_owned(),
        );
    }
    let ended = app.login("alice").await;
    app.logout(&ended.refresh_token).await.expect("logout");
    let first = root
        .list_user_sessions(&alice.id, 2, "")
        .await
        .expect("page 1");
    assert_eq!(first.sessions.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = root
        .list_user_sessions(&alice.id, 2, &first.next_page_token)
        .await
        .expect("page 2");
    assert_eq!(second.sessions.len(), 1);
    assert!(second.next_page_token.is_empty());
    let mut listed: Vec<String> = first
        .sessions
        .iter()
        .chain(&second.sessions)
        .map(|s| s.id.clone())
        .collect();
    listed.sort();
    sids.sort();
    assert_eq!(listed, sids, "the live sessions, each once");
    assert!(first.sessions.iter().all(|s| !s.current));
    assert_eq!(
        code(
            root.list_user_sessions(&uuid::Uuid::new_v4().to_string(), 0, "")
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(root.list_user_sessions(&alice.id, 501, "").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(root.list_user_sessions(&alice.id, 0, "garbage").await),
        Code::InvalidArgument
    );
}

/// Runs `authd user …` on the app's database; answers (success, stdout, stderr).
async fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let output = app.db.cli(args, stdin).await;
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn cli_user_commands_work_with_the_server_running_and_stopped(mut app: TestApp) {
    app.admin().await;
    app.register("alice").await;
    let tokens = app.login("alice").await;

    // Server running: the change reaches it through the feed.
    let (ok, out, err) = cli(
        &app,
        &[
            "user",
            "set-password",
            "--username",
            "ALICE",
            "--password-stdin",
        ],
        Some("a password from the shell\n"),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("1 session(s) ended"), "{out}");
    eventually(Duration::from_secs(2), || {
        let (client, token) = (AuthClient::clone(&app), tokens.access_token.clone());
        async move { code(client.validate(&token).await) == Code::Unauthenticated }
    })
    .await
    .expect("the running server refuses the ended session within 2 s");
    app.login_with("alice", "a password from the shell")
        .await
        .expect("the new password logs in");

    let (ok, out, err) = cli(&app, &["user", "list"], None).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("\talice\talice@example.com\ttrue\tuser"),
        "{out}"
    );
    assert!(
        out.contains("\troot\troot@example.com\ttrue\tadmin"),
        "{out}"
    );

    let (ok, _, err) = cli(&app, &["user", "deactivate", "--username", "alice"], None).await;
    assert!(ok, "{err}");
    assert_eq!(
        code(app.login_with("alice", "a password from the shell").await),
        Code::PermissionDenied
    );
    let (ok, _, err) = cli(&app, &["user", "activate", "--username", "alice"], None).await;
    assert!(ok, "{err}");
    app.login_with("alice", "a password from the shell")
        .await
        .expect("active again");

    // Server stopped.
    app.stop().await;
    let (ok, _, err) = cli(
        &app,
        &[
            "user",
            "set-password",
            "--username",
            "alice",
            "--password-stdin",
        ],
        Some("set while stopped"),
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&app, &["user", "deactivate", "--username", "alice"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("deactivated user alice"), "{out}");
    let (ok, out, _) = cli(&app, &["user", "list"], None).await;
    assert!(
        ok && out.contains("\talice\talice@example.com\tfalse\tuser"),
        "{out}"
    );
    app.restart().await;
    assert_eq!(
        code(app.login_with("alice", "set while stopped").await),
        Code::PermissionDenied,
        "deactivated from the shell"
    );
    app.stop().await;
    let (ok, _, err) = cli(&app, &["user", "activate", "--username", "alice"], None).await;
    assert!(ok, "{err}");
    app.restart().await;
    app.login_with("alice", "set while stopped")
        .await
        .expect("the password set while stopped logs in");
}

async fn cli_user_commands_refuse_bad_input_with_one_clear_line(app: TestApp) {
    app.admin().await;
    app.register("alice").await;
    for (args, stdin, expected) in [
        (
            &[
                "user",
                "set-password",
                "--username",
                "nobody",
                "--password-stdin",
            ][..],
            Some("long enough password"),
            "no user is named nobody",
        ),
        (
            &[
                "user",
                "set-password",
                "--username",
                "alice",
                "--password-stdin",
            ][..],
            Some("short"),
            "password",
        ),
        (
            &["user", "deactivate", "--username", "nobody"][..],
            None,
            "no user is named nobody",
        ),
        (
            &["user", "deactivate", "--username", "root"][..],
            None,
            "last active admin",
        ),
    ] {
        let (ok, _, err) = cli(&app, args, stdin).await;
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("short\n"), "no password echoed: {err}");
    }
    let (ok, _, err) = cli(&app, &["user", "set-password", "--username", "alice"], None).await;
    assert!(!ok && err.contains("--password-stdin"), "{err}");
    app.login_with("alice", PASSWORD)
        .await
        .expect("refused commands changed nothing");
}

on_both_databases!(
    update_user_sets_the_fields_given_and_keeps_the_others,
    update_user_applies_registers_rules,
    concurrent_renames_to_one_name_have_one_winner,
    delete_user_erases_the_user_and_everything_that_is_theirs,
    api_keys_an_erased_admin_made_stay,
    the_last_active_admin_cannot_be_deleted,
    two_admins_deleting_each_other_at_once_leave_one_admin,
    list_user_sessions_pages_through_live_sessions,
    cli_user_commands_work_with_the_server_running_and_stopped,
    cli_user_commands_refuse_bad_input_with_one_clear_line,
);
on_postgres!(another_replica_refuses_a_deleted_users_tokens_within_two_seconds);
