//! Roles and permissions as data (API.md, "Roles and permissions as data"): the
//! graph operators define, CheckPermission and ValidateToken's permissions from
//! memory, AdminService authorised by permission, and no privilege escalation.

use std::time::Duration;

use authd::grpc::pb;
use tonic::Code;

use crate::helpers::{assert_invalid, code, eventually, AdminClient, TestApp};

/// A user `name` holding `role` (besides `user`), and its access token.
async fn holder(app: &TestApp, name: &str, role: &str) -> (pb::User, String) {
    let user = app.register(name).await;
    app.admin()
        .await
        .assign_role(&user.id, role)
        .await
        .expect("assign");
    (user, app.login(name).await.access_token)
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

async fn the_builtin_roles_are_listed_as_they_were(app: TestApp) {
    let roles = app.admin().await.list_roles().await.expect("list");
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["viewer", "user", "editor", "moderator", "admin"]);
    assert!(roles.iter().all(|r| r.builtin));
    let includes: Vec<Vec<String>> = roles.iter().map(|r| r.includes.clone()).collect();
    assert_eq!(
        includes,
        [
            vec![],
            strings(&["viewer"]),
            strings(&["user"]),
            strings(&["editor"]),
            strings(&["moderator"]),
        ]
    );
    assert_eq!(
        roles[4].permissions,
        strings(&[
            "authd.apikeys.write",
            "authd.audit.read",
            "authd.roles.write",
            "authd.users.read",
            "authd.users.write",
        ])
    );
}

/// A role including two roles that both include a third: its holders hold all
/// four and every permission of them, once.
async fn a_diamond_grants_every_role_and_permission_once(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role("base", &["viewer"], &["docs.read"])
        .await
        .expect("base");
    admin
        .create_role("left", &["base"], &["docs.write"])
        .await
        .expect("left");
    admin
        .create_role("right", &["base"], &["docs.share", "docs.read"])
        .await
        .expect("right");
    let top = admin
        .create_role("top", &["right", "left"], &[])
        .await
        .expect("top");
    assert_eq!(top.includes, strings(&["left", "right"]), "stored sorted");
    assert!(!top.builtin);

    let (_, token) = holder(&app, "alice", "top").await;
    let validated = app.validate(&token).await.expect("valid");
    assert_eq!(
        validated.roles,
        strings(&["viewer", "user", "base", "left", "right", "top"])
    );
    assert_eq!(
        validated.permissions,
        strings(&["docs.read", "docs.share", "docs.write"])
    );
    assert_eq!(app.has_permission(&token, "docs.share").await, Ok(true));
    assert_eq!(app.has_permission(&token, "docs.delete").await, Ok(false));
    assert_eq!(app.has_role(&token, "base").await, Ok(true));
    assert_eq!(app.has_role(&token, "editor").await, Ok(false));

    // admin holds every permission, even one no role names.
    let root = &admin.tokens.access_token;
    assert_eq!(app.has_permission(root, "docs.share").await, Ok(true));
    assert_eq!(app.has_permission(root, "named.by.nobody").await, Ok(true));
    let root_permissions = app.validate(root).await.expect("valid").permissions;
    assert!(root_permissions.contains(&"docs.write".to_owned()));
    assert!(root_permissions.contains(&"authd.users.read".to_owned()));

    // An API key holding a role holds its permissions too.
    let key = admin
        .create_api_key("docs-bot", &["left"], 0)
        .await
        .expect("key")
        .api_key;
    assert_eq!(app.has_permission(&key, "docs.write").await, Ok(true));
    assert_eq!(app.has_permission(&key, "docs.share").await, Ok(false));
    assert_eq!(
        app.validate(&key).await.expect("key").permissions,
        strings(&["docs.read", "docs.write"])
    );
}

async fn check_permission_refuses_what_it_cannot_answer(app: TestApp) {
    app.register("alice").await;
    let token = app.login("alice").await.access_token;
    assert_eq!(
        app.has_permission(&token, "").await,
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        app.has_permission(&token, "two words").await,
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        app.has_permission(&"p".repeat(129), "docs.read").await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        app.has_permission("not-a-token", "docs.read").await,
        Err(Code::Unauthenticated)
    );
    let refresh = app.login("alice").await;
    app.logout(&refresh.refresh_token).await.expect("logout");
    assert_eq!(
        app.has_permission(&refresh.access_token, "docs.read").await,
        Err(Code::Unauthenticated)
    );
}

async fn every_rule_of_an_edit_is_checked(app: TestApp) {
    let admin = app.admin().await;
    assert_invalid(admin.create_role("x", &[], &[]).await, "name", "too short");
    assert_invalid(
        admin.create_role("Billing", &[], &[]).await,
        "name",
        "upper case",
    );
    assert_invalid(
        admin.create_role(&"a".repeat(65), &[], &[]).await,
        "name",
        "too long",
    );
    assert_invalid(
        admin.create_role("billing", &[], &["two words"]).await,
        "permissions",
        "a space",
    );
    assert_invalid(
        admin.create_role("billing", &[], &[""]).await,
        "permissions",
        "empty",
    );
    assert_invalid(
        admin.create_role("billing", &[], &[&"p".repeat(129)]).await,
        "permissions",
        "too long",
    );
    assert_invalid(
        admin.create_role("billing", &["Bad Name"], &[]).await,
        "includes",
        "a malformed include",
    );
    assert_invalid(
        admin.create_role("billing", &["billing"], &[]).await,
        "includes",
        "itself",
    );
    assert_eq!(
        code(admin.create_role("billing", &["ghost"], &[]).await),
        Code::NotFound
    );
    admin
        .create_role("billing", &[], &["billing.refund"])
        .await
        .expect("create");
    assert_eq!(
        code(admin.create_role("billing", &[], &[]).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(admin.create_role("user", &[], &[]).await),
        Code::AlreadyExists,
        "a built-in name is taken"
    );
    assert_eq!(
        code(admin.update_role("ghost", &[], &[]).await),
        Code::NotFound
    );

    // A cycle through the graph, at any distance.
    admin
        .create_role("billing-admin", &["billing"], &[])
        .await
        .expect("create");
    assert_invalid(
        admin.update_role("billing", &["billing-admin"], &[]).await,
        "includes",
        "a two-step cycle",
    );
    let roles = admin.list_roles().await.expect("list");
    let billing = roles.iter().find(|r| r.name == "billing").expect("billing");
    assert!(
        billing.includes.is_empty(),
        "the refused edit wrote nothing"
    );
}

/// Deleting: refused for built-in roles, roles held by a user or a key, and roles
/// another role includes; a role nobody uses goes, and with it its permissions.
async fn deletion_is_refused_while_a_role_is_in_use(app: TestApp) {
    let admin = app.admin().await;
    for builtin in ["admin", "viewer"] {
        let refused = admin.delete_role(builtin).await.expect_err(builtin);
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    assert_eq!(code(admin.delete_role("ghost").await), Code::NotFound);

    admin
        .create_role("held", &[], &["x.y"])
        .await
        .expect("held");
    let (user, _) = holder(&app, "alice", "held").await;
    assert_eq!(
        code(admin.delete_role("held").await),
        Code::FailedPrecondition
    );
    admin.revoke_role(&user.id, "held").await.expect("revoke");

    admin.create_role("keyed", &[], &[]).await.expect("keyed");
    let key = admin
        .create_api_key("bot", &["keyed"], 0)
        .await
        .expect("key")
        .key
        .expect("key");
    assert_eq!(
        code(admin.delete_role("keyed").await),
        Code::FailedPrecondition
    );
    admin.revoke_api_key(&key.id).await.expect("revoke key");
    admin
        .delete_role("keyed")
        .await
        .expect("a revoked key holds nothing");

    admin
        .create_role("wrapper", &["held"], &[])
        .await
        .expect("wrapper");
    let refused = admin.delete_role("held").await.expect_err("included");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("wrapper"), "{refused:?}");
    admin.delete_role("wrapper").await.expect("unused");
    admin.delete_role("held").await.expect("unused now");
    let names: Vec<String> = admin
        .list_roles()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["viewer", "user", "editor", "moderator", "admin"]);
    // A new role of the same name starts empty.
    admin.create_role("held", &[], &[]).await.expect("again");
    let role = admin.list_roles().await.expect("list").pop().expect("role");
    assert!(role.permissions.is_empty());
}

/// An UpdateRole is effective for every holder at once on this replica, tokens
/// already issued included; so is a built-in role's update.
async fn a_role_change_reaches_its_holders_at_once(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role("support", &[], &[])
        .await
        .expect("create");
    let (_, token) = holder(&app, "alice", "support").await;
    let key = admin
        .create_api_key("support-bot", &["support"], 0)
        .await
        .expect("key")
        .api_key;
    for credential in [&token, &key] {
        assert_eq!(
            app.has_permission(credential, "tickets.close").await,
            Ok(false)
        );
    }
    admin
        .update_role("support", &["editor"], &["tickets.close"])
        .await
        .expect("update");
    for credential in [&token, &key] {
        assert_eq!(
            app.has_permission(credential, "tickets.close").await,
            Ok(true)
        );
        assert_eq!(app.has_role(credential, "editor").await, Ok(true));
    }
    admin
        .update_role("support", &[], &[])
        .await
        .expect("update");
    assert_eq!(app.has_permission(&token, "tickets.close").await, Ok(false));
    assert_eq!(app.has_role(&token, "editor").await, Ok(false));

    // Built-in roles can be updated (not deleted): every `user` gains it.
    admin
        .update_role("user", &["viewer"], &["profile.edit"])
        .await
        .expect("update a built-in role");
    assert_eq!(app.has_permission(&token, "profile.edit").await, Ok(true));
}

/// Two admins making the two halves of a cycle at the same moment: one wins, the
/// other is refused naming `includes`, and no cycle is ever stored.
async fn concurrent_edits_cannot_make_a_cycle(app: TestApp) {
    let admin = app.admin().await;
    let other = app.admin_as(&app.login("root").await.access_token).await;
    for round in 0..8 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        admin.create_role(&a, &[], &[]).await.expect("a");
        admin.create_role(&b, &[], &[]).await.expect("b");
        let (a_includes, b_includes) = ([b.as_str()], [a.as_str()]);
        let (first, second) = tokio::join!(
            admin.update_role(&a, &a_includes, &[]),
            other.update_role(&b, &b_includes, &[])
        );
        let codes = [code(first), code(second)];
        assert!(
            codes.contains(&Code::Ok) && codes.contains(&Code::InvalidArgument),
            "round {round}: {codes:?}"
        );
        let roles = admin.list_roles().await.expect("list");
        let edges = roles
            .iter()
            .filter(|r| r.name == a || r.name == b)
            .map(|r| r.includes.len())
            .sum::<usize>();
        assert_eq!(edges, 1, "round {round}: exactly one edge stored");
    }
}

/// The change reaches another replica through the feed within 2 s.
async fn an_update_role_reaches_another_replica_within_two_seconds(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role("support", &[], &[])
        .await
        .expect("create");
    let (_, token) = holder(&app, "alice", "support").await;
    let replica = app.replica(&[]).await;
    let remote = replica.client().await;
    assert_eq!(
        remote.has_permission(&token, "tickets.close").await,
        Ok(false)
    );
    admin
        .update_role("support", &[], &["tickets.close"])
        .await
        .expect("update");
    let seen = eventually(Duration::from_secs(2), || {
        let (remote, token) = (remote.clone(), token.clone());
        async move { remote.has_permission(&token, "tickets.close").await == Ok(true) }
    })
    .await
    .expect("the other replica sees the new permission within 2 s");
    eprintln!("UpdateRole reached the other replica after {seen:?}");
    let validated = remote.validate(&token).await.expect("valid");
    assert_eq!(validated.permissions, strings(&["tickets.close"]));
}

/// An API key whose role carries some of AdminService's permissions calls exactly
/// the methods they allow; so does a user.
async fn a_scoped_api_key_calls_only_what_its_permissions_allow(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role("user-reader", &[], &["authd.users.read"])
        .await
        .expect("role");
    let key = admin
        .create_api_key("directory-sync", &["user-reader"], 0)
        .await
        .expect("key");
    let key_id = key.key.expect("key").id;
    let alice = app.register("alice").await;
    let bot = app.admin_as(&key.api_key).await;

    bot.list_users(0, "").await.expect("ListUsers");
    bot.get_user(&alice.id, "").await.expect("GetUser");
    bot.list_roles().await.expect("ListRoles");
    bot.list_user_sessions(&alice.id, 0, "")
        .await
        .expect("ListUserSessions");

    let denied: Vec<(&str, &str, Code)> = vec![
        (
            "SetUserActive",
            "authd.users.write",
            code(bot.set_active(&alice.id, false).await),
        ),
        (
            "AssignRole",
            "authd.roles.write",
            code(bot.assign_role(&alice.id, "viewer").await),
        ),
        (
            "CreateRole",
            "authd.roles.write",
            code(bot.create_role("sneaky", &[], &[]).await),
        ),
        (
            "CreateApiKey",
            "authd.apikeys.write",
            code(bot.create_api_key("more", &["user-reader"], 0).await),
        ),
        (
            "ListAuditEvents",
            "authd.audit.read",
            code(
                bot.grpc()
                    .list_audit_events(pb::ListAuditEventsRequest::default())
                    .await,
            ),
        ),
    ];
    for (method, permission, got) in denied {
        assert_eq!(got, Code::PermissionDenied, "{method} needs {permission}");
    }
    let message = bot
        .set_active(&alice.id, false)
        .await
        .expect_err("denied")
        .message()
        .to_owned();
    assert!(message.contains("authd.users.write"), "{message}");
    assert!(
        admin.get_user(&alice.id, "").await.expect("get").active,
        "nothing changed"
    );

    // Give the role write access: the same key may now deactivate, at once, and
    // the audit trail names the key as the actor.
    admin
        .update_role(
            "user-reader",
            &[],
            &["authd.users.read", "authd.users.write"],
        )
        .await
        .expect("update");
    bot.set_active(&alice.id, false).await.expect("allowed now");
    let events = admin
        .grpc()
        .list_audit_events(pb::ListAuditEventsRequest {
            subject_id: alice.id.clone(),
            action: "deactivate".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, key_id);
}

/// Nobody grants, through AssignRole, CreateApiKey, CreateRole or UpdateRole, a
/// role or permission they do not hold; each attempt is refused and applies
/// nothing; the last-active-admin rule still holds.
async fn escalation_is_refused(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role(
            "delegate",
            &["user"],
            &["authd.roles.write", "authd.apikeys.write", "billing.refund"],
        )
        .await
        .expect("role");
    let (dana, token) = holder(&app, "dana", "delegate").await;
    let as_dana: AdminClient = app.admin_as(&token).await;
    let bob = app.register("bob").await;

    let attempts: Vec<(&str, Code)> = vec![
        (
            "AssignRole admin to herself",
            code(as_dana.assign_role(&dana.id, "admin").await),
        ),
        (
            "AssignRole a role she lacks",
            code(as_dana.assign_role(&bob.id, "editor").await),
        ),
        (
            "CreateApiKey with admin",
            code(as_dana.create_api_key("root-key", &["admin"], 0).await),
        ),
        (
            "CreateApiKey with a role she lacks",
            code(as_dana.create_api_key("ed", &["user", "editor"], 0).await),
        ),
        (
            "CreateRole including admin",
            code(as_dana.create_role("mine", &["admin"], &[]).await),
        ),
        (
            "CreateRole with a permission she lacks",
            code(
                as_dana
                    .create_role("mine", &[], &["authd.users.write"])
                    .await,
            ),
        ),
        (
            "UpdateRole of her own role with more",
            code(
                as_dana
                    .update_role(
                        "delegate",
                        &["user"],
                        &[
                            "authd.roles.write",
                            "authd.apikeys.write",
                            "billing.refund",
                            "authd.audit.read",
                        ],
                    )
                    .await,
            ),
        ),
        (
            "UpdateRole of a built-in role she holds with a permission she lacks",
            code(
                as_dana
                    .update_role("viewer", &[], &["authd.users.read"])
                    .await,
            ),
        ),
        (
            "UpdateRole making a role she holds include one she lacks",
            code(
                as_dana
                    .update_role("user", &["viewer", "moderator"], &[])
                    .await,
            ),
        ),
    ];
    for (what, got) in attempts {
        assert_eq!(got, Code::PermissionDenied, "{what}");
    }
    // Nothing was applied.
    let roles = admin.list_roles().await.expect("list");
    assert!(!roles.iter().any(|r| r.name == "mine"));
    let delegate = roles.iter().find(|r| r.name == "delegate").expect("role");
    assert_eq!(delegate.permissions.len(), 3);
    let user = roles.iter().find(|r| r.name == "user").expect("user");
    assert_eq!(user.includes, strings(&["viewer"]));
    assert!(roles[0].permissions.is_empty(), "viewer unchanged");
    assert_eq!(
        admin.get_user(&bob.id, "").await.expect("bob").roles,
        ["user"]
    );
    assert_eq!(app.has_role(&token, "admin").await, Ok(false));
    let keys = admin.list_api_keys(0, "").await.expect("keys");
    assert!(keys.keys.is_empty(), "no key was minted");

    // What she holds she may grant.
    as_dana
        .assign_role(&bob.id, "viewer")
        .await
        .expect("a role she holds");
    as_dana
        .create_role("refunds", &["viewer"], &["billing.refund"])
        .await
        .expect("a role of what she holds");
    as_dana
        .create_api_key("refund-bot", &["delegate"], 0)
        .await
        .expect("a key of what she holds");

    // The last active admin still cannot be demoted.
    let refused = admin
        .revoke_role(&admin.id, "admin")
        .await
        .expect_err("last admin");
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

async fn list_users_filters_by_role_and_active_flag(app: TestApp) {
    let admin = app.admin().await;
    let _alice = app.register("alice").await;
    let (bob, _) = holder(&app, "bob", "editor").await;
    let (carol, _) = holder(&app, "carol", "moderator").await;
    admin
        .set_active(&carol.id, false)
        .await
        .expect("deactivate");

    let names = |request: pb::ListUsersRequest| {
        let client = admin.grpc();
        async move {
            let mut client = client;
            let users = client
                .list_users(request)
                .await
                .expect("list")
                .into_inner()
                .users;
            users.into_iter().map(|u| u.username).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(pb::ListUsersRequest {
            role: "editor".into(),
            ..Default::default()
        })
        .await,
        ["bob"]
    );
    assert_eq!(
        names(pb::ListUsersRequest {
            role: "editor".into(),
            role_effective: true,
            ..Default::default()
        })
        .await,
        ["root", "bob", "carol"]
    );
    assert_eq!(
        names(pb::ListUsersRequest {
            role: "editor".into(),
            role_effective: true,
            active: Some(true),
            ..Default::default()
        })
        .await,
        ["root", "bob"]
    );
    assert_eq!(
        names(pb::ListUsersRequest {
            active: Some(false),
            ..Default::default()
        })
        .await,
        ["carol"]
    );
    assert_eq!(
        names(pb::ListUsersRequest {
            active: Some(true),
            page_size: 2,
            ..Default::default()
        })
        .await,
        ["root", "alice"]
    );
    let unknown = admin
        .grpc()
        .list_users(pb::ListUsersRequest {
            role: "ghost".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown role");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(bob.username, "bob");
}

on_both_databases!(
    the_builtin_roles_are_listed_as_they_were,
    a_diamond_grants_every_role_and_permission_once,
    check_permission_refuses_what_it_cannot_answer,
    every_rule_of_an_edit_is_checked,
    deletion_is_refused_while_a_role_is_in_use,
    a_role_change_reaches_its_holders_at_once,
    concurrent_edits_cannot_make_a_cycle,
    a_scoped_api_key_calls_only_what_its_permissions_allow,
    escalation_is_refused,
    list_users_filters_by_role_and_active_flag,
);
on_postgres!(an_update_role_reaches_another_replica_within_two_seconds);
