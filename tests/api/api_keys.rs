//! API keys: created by admins (or the CLI), validated on the hot path like access
//! tokens, revoked at once here and within 2 s on other replicas.

use std::time::Duration;

use sqlx::Row;
use tonic::Code;

use crate::helpers::{code, eventually, free_port, AuthClient, TestApp, TestDb};

async fn a_key_validates_with_inherited_roles_until_it_is_revoked(app: TestApp) {
    let admin = app.admin().await;

    let created = admin
        .create_api_key("billing-batch", &["editor"], 0)
        .await
        .expect("create");
    let key = created.key.expect("key");
    assert!(
        created
            .api_key
            .starts_with(&format!("authd_{}_", key.prefix)),
        "{}",
        key.prefix
    );
    assert!(
        created.api_key.len() >= 6 + 8 + 1 + 43,
        "at least 256 random bits"
    );
    assert_eq!(key.name, "billing-batch");
    assert_eq!(key.roles, ["editor"]);
    assert_eq!(key.created_by, admin.id);
    assert!(key.expires_at.is_none() && !key.revoked && key.created_at.is_some());

    let answer = app.validate(&created.api_key).await.expect("key validates");
    assert_eq!(answer.user_id, key.id);
    assert_eq!(answer.username, "billing-batch");
    assert_eq!(answer.session_id, "");
    assert_eq!(answer.roles, ["viewer", "user", "editor"]);
    assert!(answer.expires_at.is_none());
    let inherited = app
        .check_role(&created.api_key, "user")
        .await
        .expect("check");
    assert!(inherited.allowed);
    assert_eq!(inherited.user_id, key.id);
    assert!(
        !app.check_role(&created.api_key, "admin")
            .await
            .expect("check")
            .allowed
    );

    // A key is a service credential, not an administrator.
    let as_key = app.admin_as(&created.api_key).await;
    let status = as_key.list_users(0, "").await.expect_err("not for admin");
    assert_eq!(status.code(), Code::PermissionDenied);

    let revoked = admin.revoke_api_key(&key.id).await.expect("revoke");
    assert!(revoked.revoked);
    let refused = app
        .validate(&created.api_key)
        .await
        .expect_err("revoked at once");
    let garbage = app.validate("garbage").await.expect_err("garbage");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        garbage.message(),
        "same message as any bad token"
    );
    assert_eq!(
        app.check_role(&created.api_key, "user")
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );
    admin
        .revoke_api_key(&key.id)
        .await
        .expect("revoking twice is fine");
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        admin
            .revoke_api_key(&unknown)
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
}

async fn bad_key_requests_get_clear_statuses(app: TestApp) {
    let admin = app.admin().await;

    assert_eq!(
        code(admin.create_api_key("k", &["superuser"], 0).await),
        Code::NotFound
    );
    assert_eq!(
        code(admin.create_api_key("", &["viewer"], 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.create_api_key(&"n".repeat(65), &["viewer"], 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.create_api_key("tab\tname", &["viewer"], 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.create_api_key("k", &["viewer"], -1).await),
        Code::InvalidArgument
    );
    let first = admin
        .create_api_key("reports", &["viewer"], 0)
        .await
        .expect("create");
    assert_eq!(
        code(admin.create_api_key("reports", &["viewer"], 0).await),
        Code::AlreadyExists
    );
    // Once revoked, the name is free again.
    let id = first.key.expect("key").id;
    admin.revoke_api_key(&id).await.expect("revoke");
    assert_eq!(
        code(admin.create_api_key("reports", &["viewer"], 0).await),
        Code::Ok
    );

    let wrong_secret = format!("{}x", &first.api_key[..first.api_key.len() - 1]);
    for token in [
        "authd_",
        "authd_x_y",
        "authd_abcdefgh_",
        &wrong_secret,
        &format!("{}{}", first.api_key, "a".repeat(300)),
    ] {
        assert_eq!(
            app.validate(token).await.expect_err(token).code(),
            Code::Unauthenticated,
            "{token}"
        );
    }
    assert_eq!(
        admin
            .revoke_api_key("not-a-uuid")
            .await
            .expect_err("bad id")
            .code(),
        Code::InvalidArgument
    );
}

async fn keys_with_a_ttl_expire(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |_| {}).await;
    let admin = app.admin().await;
    let created = admin
        .create_api_key("short", &["viewer"], 2)
        .await
        .expect("create");
    let key = created.key.expect("key");
    let expires = key.expires_at.expect("expires_at").seconds;
    assert!((expires - key.created_at.expect("created").seconds - 2).abs() <= 1);
    let answer = app
        .validate(&created.api_key)
        .await
        .expect("valid before expiry");
    assert_eq!(answer.expires_at.expect("expires_at").seconds, expires);
    app.clock.advance(Duration::from_millis(1900));
    app.validate(&created.api_key)
        .await
        .expect("still valid just before expiry");
    app.clock.advance(Duration::from_millis(200));
    assert_eq!(
        app.validate(&created.api_key)
            .await
            .expect_err("expired")
            .code(),
        Code::Unauthenticated
    );
}

async fn keys_list_in_pages_and_record_use_without_secrets(mut app: TestApp) {
    let admin = app.admin().await;
    let mut secrets = Vec::new();
    for i in 0..5 {
        let created = admin
            .create_api_key(&format!("svc-{i}"), &["viewer"], 0)
            .await
            .expect("create");
        secrets.push(created.api_key);
    }
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin.list_api_keys(2, &page_token).await.expect("list");
        assert!(page.keys.len() <= 2);
        names.extend(page.keys.iter().map(|k| k.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4"]);
    assert_eq!(
        admin
            .list_api_keys(501, "")
            .await
            .expect_err("too big")
            .code(),
        Code::InvalidArgument
    );

    for _ in 0..3 {
        app.validate(&secrets[0]).await.expect("valid");
    }
    // Use is written in batches; stopping the server flushes the last batch.
    app.stop().await;
    let mut sql = app.db.sql().await;
    let used: Option<i64> = sqlx::query("SELECT last_used_at FROM api_keys WHERE name = 'svc-0'")
        .fetch_one(&mut sql)
        .await
        .expect("row")
        .get(0);
    assert!(used.is_some(), "last_used_at recorded");
    let unused: Option<i64> = sqlx::query("SELECT last_used_at FROM api_keys WHERE name = 'svc-1'")
        .fetch_one(&mut sql)
        .await
        .expect("row")
        .get(0);
    assert!(unused.is_none());
    let actions: Vec<String> = sqlx::query("SELECT action FROM audit_events")
        .fetch_all(&mut sql)
        .await
        .expect("audit")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "create_api_key").count(), 5);
    assert_eq!(
        actions.iter().filter(|a| *a == "api_key_first_use").count(),
        1
    );
    // Only hashes are stored: no secret appears anywhere in the database.
    for table in ["api_keys", "audit_events", "changes"] {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&mut sql)
            .await
            .expect("rows");
        let dump = format!(
            "{:?}",
            rows.iter()
                .map(|r| (0..r.len())
                    .map(|i| r.try_get::<String, _>(i).unwrap_or_default())
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        for secret in &secrets {
            let (_, tail) = secret.rsplit_once('_').expect("secret part");
            assert!(!dump.contains(tail), "secret stored in {table}");
        }
    }
}

/// The secret appears neither in the database file nor in the logs, even at debug.
/// SQLite only: the file check needs SQLite; the log check is the same on both.
async fn the_secret_never_reaches_the_database_file_or_the_logs(db: TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    let log_path = dir.path().join("authd.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let port = free_port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .arg("serve")
        .env("AUTHD_DATABASE_URL", &db.url)
        .env("AUTHD_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHD_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "debug")
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let key = db
        .cli(
            &[
                "apikey",
                "create",
                "--name",
                "secret-check",
                "--role",
                "viewer",
            ],
            None,
        )
        .await;
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let secret = String::from_utf8(key.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(secret.starts_with("authd_"));
    let channel = loop {
        if let Ok(channel) =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("uri")
                .connect()
                .await
        {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = AuthClient::new(channel);
    let seen = eventually(Duration::from_secs(5), || {
        let client = client.clone();
        let secret = secret.clone();
        async move { client.validate(&secret).await.is_ok() }
    })
    .await;
    assert!(seen.is_some(), "the CLI's key works against the server");
    assert!(
        client
            .check_role(&secret, "viewer")
            .await
            .expect("check")
            .allowed
    );
    let _ = client.validate(&format!("{secret}x")).await;
    server.kill().await.expect("kill");

    let (_, tail) = secret.rsplit_once('_').expect("secret part");
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(logs.contains("rpc"), "debug logs were written");
    assert!(!logs.contains(tail), "secret in the logs");
    let db_dir = db
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .expect("path")
        .to_owned();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{db_dir}{suffix}")) {
            assert!(
                !bytes.windows(tail.len()).any(|w| w == tail.as_bytes()),
                "secret in the database file{suffix}"
            );
        }
    }
}

/// PostgreSQL only: replicas share a database on PostgreSQL.
async fn another_replica_refuses_a_revoked_key_within_two_seconds(app: TestApp) {
    let admin = app.admin().await;
    let replica = app.replica(&[]).await;
    let there = replica.client().await;
    let created = admin
        .create_api_key("cross", &["viewer"], 0)
        .await
        .expect("create");
    let known = eventually(Duration::from_secs(2), || {
        let there = there.clone();
        let key = created.api_key.clone();
        async move { there.validate(&key).await.is_ok() }
    })
    .await;
    assert!(
        known.is_some(),
        "the other replica learns a new key within 2 s"
    );
    let id = created.key.expect("key").id;
    admin.revoke_api_key(&id).await.expect("revoke");
    let took = eventually(Duration::from_secs(2), || {
        let there = there.clone();
        let key = created.api_key.clone();
        async move { there.validate(&key).await.is_err() }
    })
    .await;
    eprintln!("other replica refused the revoked key after {took:?}");
    assert!(took.is_some(), "revoked key still accepted after 2 s");
    assert_eq!(
        there
            .validate(&created.api_key)
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );
}

on_both_databases!(
    a_key_validates_with_inherited_roles_until_it_is_revoked,
    bad_key_requests_get_clear_statuses,
    keys_with_a_ttl_expire,
    keys_list_in_pages_and_record_use_without_secrets,
);
on_sqlite!(the_secret_never_reaches_the_database_file_or_the_logs);
on_postgres!(another_replica_refuses_a_revoked_key_within_two_seconds);
