//! A bad AUTHD_OIDC_PROVIDERS_FILE stops start-up with one line naming it.

use super::providers_file;
use crate::helpers::TestDb;

async fn a_bad_providers_file_stops_start_up(db: TestDb) {
    let dir = tempfile::tempdir().expect("temp dir");
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let cases = [
        ("not json", "not a JSON list"),
        (
            r#"[{"name": "corp", "issuer": "http://idp.corp.example", "audiences": ["a"]}]"#,
            "provider 1 (\"corp\"): issuer: http:// is accepted only on a loopback address",
        ),
        (
            r#"[{"name": "google", "issuer": "https://accounts.google.com"}]"#,
            "missing field `audiences`",
        ),
        (
            r#"[{"name": "g", "issuer": "https://accounts.google.com", "audiences": ["a"], "create_user": true}]"#,
            "unknown field `create_user`",
        ),
    ];
    for (text, problem) in cases {
        let path = providers_file(&dir, text);
        let output = db
            .cli_with_env(
                &serve,
                None,
                &[("AUTHD_OIDC_PROVIDERS_FILE", path.to_str().expect("path"))],
            )
            .await;
        crate::cli::one_line_naming(&output, "AUTHD_OIDC_PROVIDERS_FILE");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(problem), "{problem}: {stderr}");
    }
    let missing = dir.path().join("no-such-file.json");
    let output = db
        .cli_with_env(
            &serve,
            None,
            &[("AUTHD_OIDC_PROVIDERS_FILE", missing.to_str().expect("path"))],
        )
        .await;
    crate::cli::one_line_naming(&output, "AUTHD_OIDC_PROVIDERS_FILE");
}

on_both_databases!(a_bad_providers_file_stops_start_up,);
