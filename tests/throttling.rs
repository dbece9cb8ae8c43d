//! Login racing deactivation: a login never starts a session that the
//! deactivation it raced cannot end.

mod common;

use std::time::Duration;

use authd::grpc::pb;
use common::{admin_token, register, validate, Backend, TestDb, TestServer, PASSWORD};
use tonic::{transport::Channel, Code};

type Client = pb::auth_service_client::AuthServiceClient<Channel>;

async fn attempt(client: &mut Client, login: &str, password: &str) -> Result<(), tonic::Status> {
    client
        .login(pb::LoginRequest {
            username: login.into(),
            password: password.into(),
        })
        .await
        .map(|_| ())
}

async fn code_of(client: &mut Client, login: &str, password: &str) -> Code {
    match attempt(client, login, password).await {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

const RACE_ROUNDS: usize = 10;

async fn login_racing_deactivation_leaves_no_live_session(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let (_, admin) = admin_token(&db, &server, "root").await;
    let mut admin = server.admin(&admin.access_token).await;
    let mut client = server.auth().await;
    let (mut raced, mut leaked, mut leaky_rounds) = (0, 0, 0);
    for round in 0..RACE_ROUNDS {
        let name = format!("racer{round}");
        let user = register(&mut client, &name).await;
        let logins: Vec<_> = (0..4)
            .map(|_| {
                let (mut client, name) = (client.clone(), name.clone());
                tokio::spawn(async move {
                    client
                        .login(pb::LoginRequest {
                            username: name,
                            password: PASSWORD.into(),
                        })
                        .await
                        .map(|r| r.into_inner().tokens.expect("tokens"))
                })
            })
            .collect();
        // Deactivate while the logins hash (a hash takes tens of milliseconds).
        // Early rounds deactivate mid-login, later ones after the logins are done.
        tokio::time::sleep(Duration::from_millis(12 * round as u64)).await;
        admin
            .set_user_active(pb::SetUserActiveRequest {
                user_id: user.id.clone(),
                active: false,
            })
            .await
            .expect("deactivate");
        let mut tokens = Vec::new();
        for login in logins {
            match login.await.expect("join") {
                Ok(pair) => tokens.push(pair),
                Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
            }
        }
        // Reactivated, the user's sessions stay ended: deactivation ended them all,
        // including any a racing login started.
        admin
            .set_user_active(pb::SetUserActiveRequest {
                user_id: user.id.clone(),
                active: true,
            })
            .await
            .expect("reactivate");
        let mut leaked_here = 0;
        for pair in &tokens {
            raced += 1;
            let validated = validate(&mut client, &pair.access_token).await;
            let refreshed = client
                .refresh(pb::RefreshRequest {
                    refresh_token: pair.refresh_token.clone(),
                })
                .await;
            match (validated, refreshed) {
                (Err(v), Err(r))
                    if v.code() == Code::Unauthenticated && r.code() == Code::Unauthenticated => {}
                _ => leaked_here += 1,
            }
        }
        if leaked_here > 0 {
            leaky_rounds += 1;
        }
        leaked += leaked_here;
    }
    eprintln!(
        "{backend:?}: {raced} logins answered OK while racing deactivation; \
         {leaked} of their sessions outlived it, in {leaky_rounds} of {RACE_ROUNDS} rounds"
    );
    assert_eq!(
        leaked, 0,
        "sessions started by a login racing deactivation survived it"
    );
}

/// The race made certain: a deactivation has changed the user's row but not yet
/// committed (nor ended sessions) when a login checks the password. The login must
/// not start a session the deactivation cannot see; it waits and is refused.
async fn a_login_meeting_a_deactivation_in_progress_is_refused(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    let user = register(&mut client, "alice").await;
    let mut deactivation = db.sql().await;
    for statement in ["BEGIN", "UPDATE users SET active = $1 WHERE id = $2"] {
        let mut query = sqlx::query(statement);
        if statement.starts_with("UPDATE") {
            query = query.bind(false).bind(user.id.clone());
        }
        query.execute(&mut deactivation).await.expect(statement);
    }
    let login = {
        let mut client = client.clone();
        tokio::spawn(async move { code_of(&mut client, "alice", PASSWORD).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query(
        "UPDATE sessions SET ended_at = $1, end_reason = 'deactivated' \
         WHERE user_id = $2 AND ended_at IS NULL",
    )
    .bind(1_i64)
    .bind(user.id.clone())
    .execute(&mut deactivation)
    .await
    .expect("end sessions");
    sqlx::query("COMMIT")
        .execute(&mut deactivation)
        .await
        .expect("commit");
    assert_eq!(login.await.expect("join"), Code::PermissionDenied);
    use sqlx::Row;
    let live: i64 =
        sqlx::query("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND ended_at IS NULL")
            .bind(user.id.clone())
            .fetch_one(&mut deactivation)
            .await
            .expect("count")
            .get(0);
    assert_eq!(live, 0, "no live session for a deactivated user");
}

on_both_databases!(
    login_racing_deactivation_leaves_no_live_session,
    a_login_meeting_a_deactivation_in_progress_is_refused,
);
