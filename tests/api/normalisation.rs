//! Input normalisation through the real API (API.md "Input normalisation"): NFC
//! emails and names, invisible and bidirectional characters refused, NUL bytes
//! refused by name on both databases and never an INTERNAL.

use authd::grpc::pb;
use tonic::{Code, Status};

use crate::helpers::{assert_invalid, AuthClient, TestApp, PASSWORD};

async fn register_as(
    client: &AuthClient,
    username: &str,
    email: &str,
    full_name: &str,
) -> Result<pb::User, Status> {
    let request = pb::RegisterRequest {
        username: username.into(),
        email: email.into(),
        password: PASSWORD.into(),
        full_name: full_name.into(),
    };
    let response = client.grpc().register(request).await?;
    Ok(response.into_inner().user.expect("user"))
}

/// The user a login answers with.
async fn login_as(client: &AuthClient, login: &str, password: &str) -> Result<pb::User, Status> {
    let response = client.login_with(login, password).await?;
    Ok(response.user.expect("user"))
}

const CAFE_NFC: &str = "caf\u{e9}@example.com";
const CAFE_NFD: &str = "cafe\u{301}@example.com";

async fn a_login_by_the_nfd_spelling_finds_the_nfc_account(app: TestApp) {
    let user = register_as(&app, "cafe", CAFE_NFC, "Zoe\u{308} Le\u{301}vy")
        .await
        .expect("register");
    assert_eq!(user.email, CAFE_NFC);
    assert_eq!(
        user.full_name, "Zo\u{eb} L\u{e9}vy",
        "names are stored in NFC"
    );
    for login in [CAFE_NFD, CAFE_NFC, "CAFE\u{301}@EXAMPLE.COM"] {
        let found = login_as(&app, login, PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("login by {login:?}: {s:?}"));
        assert_eq!(found.id, user.id);
    }
    // Registered in NFD, stored and found in NFC.
    let other = register_as(&app, "noel", "noe\u{308}l@example.com", "")
        .await
        .expect("register NFD");
    assert_eq!(other.email, "no\u{eb}l@example.com");
    let found = login_as(&app, "no\u{eb}l@example.com", PASSWORD)
        .await
        .expect("login by NFC");
    assert_eq!(found.id, other.id);
}

async fn nfc_and_nfd_registrations_of_one_email_collide(app: TestApp) {
    register_as(&app, "first", CAFE_NFC, "").await.expect("NFC");
    let again = register_as(&app, "second", CAFE_NFD, "")
        .await
        .expect_err("NFD of a taken address");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // And the other way round, in another case too.
    register_as(&app, "third", "jose\u{301}@example.com", "")
        .await
        .expect("NFD");
    let again = register_as(&app, "fourth", "JOS\u{c9}@example.com", "")
        .await
        .expect_err("NFC of a taken address");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
}

/// Refused in an email; all but the first three (zero-width) in a full name too.
const FORBIDDEN: [char; 13] = [
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{FEFF}',
];

async fn invisible_and_bidi_characters_are_refused_naming_the_field(app: TestApp) {
    for (i, c) in FORBIDDEN.into_iter().enumerate() {
        let what = format!("U+{:04X}", c as u32);
        let username = format!("user{i}");
        assert_invalid(
            register_as(&app, &username, &format!("a{c}b@example.com"), "").await,
            "email",
            &format!("{what} in an email"),
        );
        let name = format!("Alice {c}Example");
        let email = format!("{username}@example.com");
        let registered = register_as(&app, &username, &email, &name).await;
        if i < 3 {
            let user = registered.unwrap_or_else(|s| panic!("{what} is fine in a name: {s:?}"));
            assert_eq!(user.full_name, name);
        } else {
            assert_invalid(registered, "full_name", &format!("{what} in a full name"));
        }
    }
}

async fn nul_bytes_are_invalid_arguments_or_bad_credentials_never_internal(app: TestApp) {
    app.register("alice").await;
    assert_invalid(
        register_as(&app, "al\0ce", "alce@example.com", "").await,
        "username",
        "NUL in a username",
    );
    assert_invalid(
        register_as(&app, "alce", "al\0ce@example.com", "").await,
        "email",
        "NUL in an email",
    );
    assert_invalid(
        register_as(&app, "alce", "alce@example.com", "Al\0ce").await,
        "full_name",
        "NUL in a full name",
    );
    for login in ["alice\0", "al\0ice@example.com", "\0"] {
        assert_invalid(
            login_as(&app, login, PASSWORD).await,
            "username",
            "NUL in Login's username",
        );
    }
    // A NUL in a password is just a wrong password, for a known or unknown name.
    for login in ["alice", "alice@example.com", "nobody"] {
        let status = login_as(&app, login, "correct horse\0battery")
            .await
            .expect_err("NUL in a password");
        assert_eq!(status.code(), Code::Unauthenticated, "{login}: {status:?}");
    }
    let admin = app.admin().await;
    assert_invalid(
        admin.get_user("", "alice\0").await,
        "username",
        "NUL in GetUser's username",
    );
    // The server is fine and alice still logs in.
    login_as(&app, "alice", PASSWORD)
        .await
        .expect("alice logs in");
}

on_both_databases!(
    a_login_by_the_nfd_spelling_finds_the_nfc_account,
    nfc_and_nfd_registrations_of_one_email_collide,
    invisible_and_bidi_characters_are_refused_naming_the_field,
    nul_bytes_are_invalid_arguments_or_bad_credentials_never_internal,
);
