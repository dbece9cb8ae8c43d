//! The second factor, with `totp-rs` as the user's authenticator app: login is
//! unchanged until TOTP is confirmed, then takes two steps; codes are single-use per
//! time step, recovery codes single-use, the mfa_token single-use, short-lived and
//! dead after 5 wrong codes; wrong codes count toward throttling; DisableTotp and
//! ResetMfa turn it off; the secret is sealed at rest when a key is set.

use std::time::Duration;

use authd::grpc::pb;
use base64::{engine::general_purpose::STANDARD, Engine};
use tonic::{Code, Status};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::helpers::{code, TestApp, TestDb, PASSWORD};

/// The server on a clock the test moves from one 30-second step to the next. The
/// views' staleness bound is raised because the clock jumps between two polls of
/// the change feed (real time keeps them fresh).
async fn on_manual_clock(db: TestDb) -> TestApp {
    TestApp::spawn_on_manual_clock(db, |c| c.max_staleness = Duration::from_secs(3600)).await
}

/// The authenticator app: the secret as the user typed it in.
pub(crate) fn authenticator(secret_base32: &str) -> TOTP {
    let bytes = Secret::Encoded(secret_base32.to_owned())
        .to_bytes()
        .expect("base32 secret");
    TOTP::new(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new()).expect("totp")
}

/// The code the app shows at the server's time.
pub(crate) fn code_now(app: &TestApp, totp: &TOTP) -> String {
    totp.generate((app.clock.now_ms() / 1000) as u64)
}

async fn login_raw(app: &TestApp, username: &str) -> pb::LoginResponse {
    app.login_with(username, PASSWORD).await.expect("login")
}

pub(crate) async fn verify(
    app: &TestApp,
    mfa_token: &str,
    code: &str,
) -> Result<pb::VerifyMfaResponse, Status> {
    app.grpc()
        .verify_mfa(pb::VerifyMfaRequest {
            mfa_token: mfa_token.into(),
            code: code.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Registers `username`, enrols and confirms TOTP; answers the app and the codes.
async fn with_totp(app: &TestApp, username: &str) -> (TOTP, Vec<String>, String) {
    let user = app.register(username).await;
    let tokens = app.login(username).await;
    let me = app.user_as(&tokens.access_token).await.grpc();
    let enrolled = me
        .clone()
        .enroll_totp(pb::EnrollTotpRequest {})
        .await
        .expect("enroll")
        .into_inner();
    let totp = authenticator(&enrolled.secret);
    let codes = me
        .clone()
        .confirm_totp(pb::ConfirmTotpRequest {
            code: code_now(app, &totp),
        })
        .await
        .expect("confirm")
        .into_inner()
        .recovery_codes;
    (totp, codes, user.id)
}

async fn login_is_unchanged_until_totp_is_confirmed_then_takes_two_steps(db: TestDb) {
    let app = on_manual_clock(db).await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let me = app.user_as(&tokens.access_token).await.grpc();
    let enrolled = me
        .clone()
        .enroll_totp(pb::EnrollTotpRequest {})
        .await
        .expect("enroll")
        .into_inner();
    assert_eq!(enrolled.secret.len(), 32, "160 bits in base32");
    assert!(
        enrolled
            .otpauth_uri
            .starts_with("otpauth://totp/authd:alice?"),
        "{}",
        enrolled.otpauth_uri
    );
    assert!(enrolled
        .otpauth_uri
        .contains(&format!("secret={}", enrolled.secret)));
    assert!(enrolled.otpauth_uri.contains("issuer=authd"));

    // Pending: login is unchanged, and enrolling again replaces the secret.
    let pending = login_raw(&app, "alice").await;
    assert!(!pending.mfa_required && pending.tokens.is_some());
    assert!(!pending.user.expect("user").mfa_enabled);
    let again = me
        .clone()
        .enroll_totp(pb::EnrollTotpRequest {})
        .await
        .expect("enroll again")
        .into_inner();
    assert_ne!(again.secret, enrolled.secret);
    let replaced = authenticator(&enrolled.secret);
    let totp = authenticator(&again.secret);

    // A wrong code (or one of the replaced secret) does not confirm.
    for wrong in [
        "000000".to_owned(),
        code_now(&app, &replaced),
        "not a code".into(),
    ] {
        if wrong == code_now(&app, &totp) {
            continue;
        }
        let status = me
            .clone()
            .confirm_totp(pb::ConfirmTotpRequest { code: wrong })
            .await
            .expect_err("wrong code");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let codes = me
        .clone()
        .confirm_totp(pb::ConfirmTotpRequest {
            code: code_now(&app, &totp),
        })
        .await
        .expect("confirm")
        .into_inner()
        .recovery_codes;
    assert_eq!(codes.len(), 10);

    // Two steps now: the password gives no tokens, only the challenge.
    let first = login_raw(&app, "alice").await;
    assert!(first.mfa_required, "{first:?}");
    assert!(first.tokens.is_none());
    assert!(first.mfa_token.len() >= 43, "256 bits");
    // The code that confirmed is spent for its step: a replay is refused.
    let replay = verify(&app, &first.mfa_token, &code_now(&app, &totp))
        .await
        .expect_err("replayed code");
    assert_eq!(replay.code(), Code::Unauthenticated);
    // The next step's code logs in.
    app.clock.advance(Duration::from_secs(30));
    let done = verify(&app, &first.mfa_token, &code_now(&app, &totp))
        .await
        .expect("second step");
    let tokens = done.tokens.expect("tokens");
    assert!(app.validate(&tokens.access_token).await.is_ok());
    assert!(done.user.expect("user").mfa_enabled);
    // The mfa_token worked once.
    app.clock.advance(Duration::from_secs(30));
    let reused = verify(&app, &first.mfa_token, &code_now(&app, &totp))
        .await
        .expect_err("spent token");
    assert_eq!(reused.code(), Code::Unauthenticated);
    // A wrong password still answers as before, revealing nothing about the code.
    let status = app
        .login_with("alice", "wrong password")
        .await
        .expect_err("wrong password");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("username or password"),
        "{status:?}"
    );
    // The admin sees mfa_enabled.
    let seen = app.admin().await.get_user("", "alice").await.expect("user");
    assert!(seen.mfa_enabled);
    // Enrolling while on is refused.
    let status = me
        .clone()
        .enroll_totp(pb::EnrollTotpRequest {})
        .await
        .expect_err("already on");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

on_both_databases!(login_is_unchanged_until_totp_is_confirmed_then_takes_two_steps);

async fn codes_one_step_either_side_and_recovery_codes_once(db: TestDb) {
    let app = on_manual_clock(db).await;
    let (totp, recovery, _) = with_totp(&app, "bob").await;
    // One step early and one step late are accepted; two are not.
    app.clock.advance(Duration::from_secs(60));
    let challenge = login_raw(&app, "bob").await.mfa_token;
    let late = totp.generate((app.clock.now_ms() / 1000 - 30) as u64);
    verify(&app, &challenge, &late)
        .await
        .expect("one step late");
    app.clock.advance(Duration::from_secs(60));
    let challenge = login_raw(&app, "bob").await.mfa_token;
    let too_late = totp.generate((app.clock.now_ms() / 1000 - 60) as u64);
    assert_eq!(
        code(verify(&app, &challenge, &too_late).await),
        Code::Unauthenticated
    );
    let early = totp.generate((app.clock.now_ms() / 1000 + 30) as u64);
    verify(&app, &challenge, &early)
        .await
        .expect("one step early");

    // A recovery code works once, typed with or without dashes, in any case.
    let challenge = login_raw(&app, "bob").await.mfa_token;
    let typed = recovery[0].replace('-', "").to_uppercase();
    verify(&app, &challenge, &typed)
        .await
        .expect("recovery code");
    let challenge = login_raw(&app, "bob").await.mfa_token;
    assert_eq!(
        code(verify(&app, &challenge, &recovery[0]).await),
        Code::Unauthenticated,
        "a recovery code works once"
    );
    verify(&app, &challenge, &recovery[1])
        .await
        .expect("another recovery code, on the same challenge");
}

on_both_databases!(codes_one_step_either_side_and_recovery_codes_once);

async fn an_mfa_token_dies_after_five_wrong_codes_and_when_it_expires(db: TestDb) {
    let app = on_manual_clock(db).await;
    let (totp, _, _) = with_totp(&app, "carol").await;
    app.clock.advance(Duration::from_secs(30));
    let challenge = login_raw(&app, "carol").await.mfa_token;
    for _ in 0..5 {
        let status = verify(&app, &challenge, "000000").await.expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("code"), "{status:?}");
    }
    let dead = verify(&app, &challenge, &code_now(&app, &totp))
        .await
        .expect_err("dead after 5 wrong codes");
    assert_eq!(dead.code(), Code::Unauthenticated);
    assert!(dead.message().contains("mfa_token"), "{dead:?}");

    // Expiry: 5 minutes by default.
    let challenge = login_raw(&app, "carol").await.mfa_token;
    app.clock.advance(Duration::from_secs(5 * 60 + 1));
    let expired = verify(&app, &challenge, &code_now(&app, &totp))
        .await
        .expect_err("expired");
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert_eq!(expired.message(), dead.message(), "one message for both");
    // Unknown and empty tokens.
    assert_eq!(
        code(verify(&app, "no such token", &code_now(&app, &totp)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(verify(&app, "", "123456").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(verify(&app, &challenge, "").await),
        Code::InvalidArgument
    );
}

on_both_databases!(an_mfa_token_dies_after_five_wrong_codes_and_when_it_expires);

async fn wrong_codes_count_toward_the_accounts_throttling(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |c| {
        c.login_max_failures = 3;
        c.max_staleness = Duration::from_secs(3600);
    })
    .await;
    let (totp, _, _) = with_totp(&app, "dave").await;
    app.clock.advance(Duration::from_secs(30));
    let challenge = login_raw(&app, "dave").await.mfa_token;
    for _ in 0..3 {
        assert_eq!(
            code(verify(&app, &challenge, "000000").await),
            Code::Unauthenticated
        );
    }
    // Locked: even the right code is refused, and so is the password.
    assert_eq!(
        code(verify(&app, &challenge, &code_now(&app, &totp)).await),
        Code::ResourceExhausted
    );
    assert_eq!(
        code(app.login_with("dave", PASSWORD).await),
        Code::ResourceExhausted
    );
}

on_both_databases!(wrong_codes_count_toward_the_accounts_throttling);

async fn disable_totp_and_reset_mfa_turn_it_off(db: TestDb) {
    let app = on_manual_clock(db).await;
    let (totp, recovery, id) = with_totp(&app, "erin").await;
    app.clock.advance(Duration::from_secs(30));
    let challenge = login_raw(&app, "erin").await.mfa_token;
    let tokens = verify(&app, &challenge, &code_now(&app, &totp))
        .await
        .expect("login")
        .tokens
        .expect("tokens");
    let me = app.user_as(&tokens.access_token).await.grpc();
    // A wrong code does not disable; a recovery code does.
    assert_eq!(
        code(
            me.clone()
                .disable_totp(pb::DisableTotpRequest {
                    code: "000000".into()
                })
                .await
        ),
        Code::Unauthenticated
    );
    me.clone()
        .disable_totp(pb::DisableTotpRequest {
            code: recovery[0].clone(),
        })
        .await
        .expect("disable");
    let plain = login_raw(&app, "erin").await;
    assert!(!plain.mfa_required && plain.tokens.is_some());
    assert!(!plain.user.expect("user").mfa_enabled);
    assert_eq!(
        code(
            me.clone()
                .disable_totp(pb::DisableTotpRequest {
                    code: code_now(&app, &totp)
                })
                .await
        ),
        Code::FailedPrecondition
    );

    // On again, then an admin resets it for a lost device.
    let enrolled = me
        .clone()
        .enroll_totp(pb::EnrollTotpRequest {})
        .await
        .expect("enroll")
        .into_inner();
    let totp = authenticator(&enrolled.secret);
    app.clock.advance(Duration::from_secs(30));
    me.clone()
        .confirm_totp(pb::ConfirmTotpRequest {
            code: code_now(&app, &totp),
        })
        .await
        .expect("confirm");
    assert!(login_raw(&app, "erin").await.mfa_required);
    let reset = app
        .admin()
        .await
        .grpc()
        .reset_mfa(pb::ResetMfaRequest {
            user_id: id.clone(),
        })
        .await
        .expect("reset")
        .into_inner()
        .user
        .expect("user");
    assert!(!reset.mfa_enabled);
    let plain = login_raw(&app, "erin").await;
    assert!(!plain.mfa_required && plain.tokens.is_some());
    // Unknown and malformed users.
    let admin = app.admin().await.grpc();
    assert_eq!(
        code(
            admin
                .clone()
                .reset_mfa(pb::ResetMfaRequest {
                    user_id: uuid::Uuid::new_v4().to_string()
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            admin
                .clone()
                .reset_mfa(pb::ResetMfaRequest {
                    user_id: "x".into()
                })
                .await
        ),
        Code::InvalidArgument
    );
    // The self-service calls need the user's token.
    let anonymous = app.grpc();
    assert_eq!(
        code(
            anonymous
                .clone()
                .enroll_totp(pb::EnrollTotpRequest {})
                .await
        ),
        Code::Unauthenticated
    );
}

on_both_databases!(disable_totp_and_reset_mfa_turn_it_off);

async fn the_secret_is_sealed_at_rest_when_a_key_is_set(db: TestDb) {
    let kek = STANDARD.encode(rand::random::<[u8; 32]>());
    let app = TestApp::spawn_on_manual_clock(db, |c| {
        c.database.key_encryption.key_encryption_key = Some(kek.clone().into());
        c.max_staleness = Duration::from_secs(3600);
    })
    .await;
    app.register("frank").await;
    let tokens = app.login("frank").await;
    let me = app.user_as(&tokens.access_token).await.grpc();
    let enrolled = me
        .clone()
        .enroll_totp(pb::EnrollTotpRequest {})
        .await
        .expect("enroll")
        .into_inner();
    let totp = authenticator(&enrolled.secret);
    let recovery = me
        .clone()
        .confirm_totp(pb::ConfirmTotpRequest {
            code: code_now(&app, &totp),
        })
        .await
        .expect("confirm")
        .into_inner()
        .recovery_codes;
    let stored: Vec<(String,)> = sqlx::query_as("SELECT secret FROM totp_credentials")
        .fetch_all(&mut app.db.sql().await)
        .await
        .expect("read");
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].0.starts_with("enc:v1:"),
        "sealed: {}",
        stored[0].0
    );
    assert!(!stored[0].0.contains(&enrolled.secret));
    let hashes: Vec<(String,)> = sqlx::query_as("SELECT code_hash FROM recovery_codes")
        .fetch_all(&mut app.db.sql().await)
        .await
        .expect("read");
    assert_eq!(hashes.len(), 10);
    for (hash,) in &hashes {
        assert!(recovery.iter().all(|c| !hash.contains(&c.replace('-', ""))));
    }
    // The sealed secret still checks codes.
    app.clock.advance(Duration::from_secs(30));
    let challenge = login_raw(&app, "frank").await.mfa_token;
    verify(&app, &challenge, &code_now(&app, &totp))
        .await
        .expect("second step with the sealed secret");
}

on_both_databases!(the_secret_is_sealed_at_rest_when_a_key_is_set);

/// The README's "A second factor (TOTP)" flow, run as written with bash, grpcurl and
/// python3 (the stand-in authenticator) against a real server.
async fn the_readmes_totp_flow_runs_as_written(app: TestApp) {
    use crate::cookbook::{grpcurl_installed, sh_blocks};
    if !grpcurl_installed() {
        eprintln!("skipped: grpcurl is not installed");
        return;
    }
    let blocks = sh_blocks("### A second factor (TOTP)");
    assert_eq!(blocks.len(), 2, "enrol and confirm, the two-step login");
    let user = app
        .grpc()
        .register(pb::RegisterRequest {
            username: "alice".into(),
            email: "alice@example.com".into(),
            password: "correct horse battery staple".into(),
            full_name: String::new(),
        })
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user");
    let tokens = app
        .login_with("alice", "correct horse battery staple")
        .await
        .expect("login")
        .tokens
        .expect("tokens");
    let script = [
        blocks[0].clone(),
        blocks[1].clone(),
        "echo \"USER_TOKEN=$USER_TOKEN\"\n".to_owned(),
    ]
    .concat()
    .replace("localhost:50051", &app.addr().to_string());
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("USER_TOKEN", &tokens.access_token)
        .output()
        .await
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("USER_TOKEN="))
        .expect("the script's token");
    let answer = app
        .validate(token)
        .await
        .expect("the two-step login's token");
    assert_eq!(answer.user_id, user.id);
    let seen = app
        .admin()
        .await
        .get_user(&user.id, "")
        .await
        .expect("user");
    assert!(seen.mfa_enabled);
}

on_sqlite!(the_readmes_totp_flow_runs_as_written);

async fn stored_totp_secret(app: &TestApp) -> String {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT secret FROM totp_credentials")
        .fetch_all(&mut app.db.sql().await)
        .await
        .expect("read");
    assert_eq!(rows.len(), 1);
    rows.into_iter().next().expect("one").0
}

/// A secret stored in the clear is sealed when the server starts with a key, and
/// `authd keys rewrap` moves it to a new key; codes keep working throughout.
async fn secrets_in_the_clear_are_sealed_at_start_and_rewrapped(db: TestDb) {
    let mut app = on_manual_clock(db).await;
    let (totp, _, _) = with_totp(&app, "gina").await;
    let plain = stored_totp_secret(&app).await;
    assert!(!plain.starts_with("enc:"), "no key set: {plain}");

    let old = STANDARD.encode(rand::random::<[u8; 32]>());
    let with = |kek: String| {
        move |c: &mut authd::config::ServeConfig| {
            c.database.key_encryption.key_encryption_key = Some(kek.into())
        }
    };
    app.restart_with(with(old.clone())).await;
    let sealed = stored_totp_secret(&app).await;
    assert!(sealed.starts_with("enc:v1:"), "sealed at start: {sealed}");
    app.clock.advance(Duration::from_secs(30));
    let challenge = login_raw(&app, "gina").await.mfa_token;
    verify(&app, &challenge, &code_now(&app, &totp))
        .await
        .expect("the sealed secret checks codes");

    app.stop().await;
    let new = STANDARD.encode(rand::random::<[u8; 32]>());
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("new-kek");
    std::fs::write(&file, format!("{new}\n")).expect("write");
    let output = app
        .db
        .cli_with_env(
            &[
                "keys",
                "rewrap",
                "--new-key-file",
                &file.display().to_string(),
            ],
            None,
            &[("AUTHD_KEY_ENCRYPTION_KEY", &old)],
        )
        .await;
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 TOTP secret(s)"),
        "{output:?}"
    );
    let rewrapped = stored_totp_secret(&app).await;
    assert_ne!(rewrapped, sealed);
    app.restart_with(with(new)).await;
    app.clock.advance(Duration::from_secs(30));
    let challenge = login_raw(&app, "gina").await.mfa_token;
    verify(&app, &challenge, &code_now(&app, &totp))
        .await
        .expect("the rewrapped secret checks codes");
}

on_both_databases!(secrets_in_the_clear_are_sealed_at_start_and_rewrapped);
