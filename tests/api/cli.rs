//! The command line as an operator meets it: bad settings stop start-up with one
//! clear line, `migrate` is idempotent, `--help` documents every setting.

use crate::helpers::TestDb;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd"));
    command.args(args).env_remove("AUTHD_DATABASE_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run authd")
}

/// Fails, with exactly one error line, which names `setting` (log lines before it
/// are fine).
pub(crate) fn one_line_naming(output: &std::process::Output, setting: &str) {
    assert!(!output.status.success(), "should fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("authd: ") || l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains(setting),
        "error line {:?} should name {setting}",
        errors[0]
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn a_bad_or_unreachable_database_stops_start_up_with_one_line() {
    let bad_scheme = run(
        &["migrate"],
        &[("AUTHD_DATABASE_URL", "mysql://localhost/authd")],
    );
    one_line_naming(&bad_scheme, "AUTHD_DATABASE_URL");
    let unreachable = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        &[
            (
                "AUTHD_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/authd",
            ),
            ("AUTHD_DATABASE_TIMEOUT", "1s"),
            // Not waiting for it to come up (tests/api/operating.rs does).
            ("AUTHD_STARTUP_TIMEOUT", "0s"),
        ],
    );
    one_line_naming(&unreachable, "AUTHD_DATABASE_URL");
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("refused"));
    let no_dir = run(
        &["migrate"],
        &[(
            "AUTHD_DATABASE_URL",
            "sqlite:///nonexistent/dir/authd.db?mode=rwc",
        )],
    );
    one_line_naming(&no_dir, "AUTHD_DATABASE_URL");
}

#[test]
fn invalid_settings_stop_start_up_naming_the_setting() {
    for (var, value, flag) in [
        ("AUTHD_ACCESS_TOKEN_TTL", "soon", "access-token-ttl"),
        ("AUTHD_SESSION_MAX_TTL", "0s", "session-max-ttl"),
        ("AUTHD_LISTEN", "not-an-address", "listen"),
        ("AUTHD_LOGIN_MAX_FAILURES", "-3", "login-max-failures"),
        ("AUTHD_LOG_FORMAT", "xml", "log-format"),
        ("AUTHD_ARGON2_MEMORY_KIB", "1024", "argon2-memory-kib"),
    ] {
        let output = run(&["serve"], &[(var, value)]);
        assert_eq!(output.status.code(), Some(2), "{var}={value}");
        one_line_naming(&output, flag);
    }
}

#[test]
fn serve_help_documents_every_setting_with_its_default() {
    let help = String::from_utf8(run(&["serve", "--help"], &[]).stdout).expect("utf8");
    // Help is wrapped to the terminal: compare with white space folded.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for (var, default) in [
        ("AUTHD_DATABASE_URL", "sqlite://authd.db?mode=rwc"),
        ("AUTHD_LISTEN", "0.0.0.0:50051"),
        ("AUTHD_HTTP_LISTEN", "0.0.0.0:9090"),
        ("AUTHD_ISSUER", "authd"),
        ("AUTHD_AUDIENCE", "authd"),
        ("AUTHD_ACCESS_TOKEN_TTL", "15m"),
        ("AUTHD_REFRESH_TOKEN_TTL", "7d"),
        ("AUTHD_SESSION_MAX_TTL", "30d"),
        ("AUTHD_LOGIN_MAX_FAILURES", "10"),
        ("AUTHD_LOGIN_LOCKOUT", "5m"),
        ("AUTHD_LOG_FORMAT", "text"),
        ("AUTHD_HASH_QUEUE", "1024"),
        ("AUTHD_MAX_STALENESS", "30s"),
    ] {
        assert!(help.contains(var), "--help lacks {var}");
        assert!(
            help.contains(&format!("[default: {default}]")),
            "--help lacks the default of {var}: {default}"
        );
    }
}

async fn migrate_twice_changes_nothing(db: TestDb) {
    let first = db.cli(&["migrate"], None).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let count = || async { (db.count("roles").await, db.count("seaql_migrations").await) };
    let before = count().await;
    let second = db.cli(&["migrate"], None).await;
    assert!(second.status.success());
    assert_eq!(count().await, before);
    assert_eq!(before.0, 5, "the five default roles");
}

on_both_databases!(migrate_twice_changes_nothing);
