//! The README's grpcurl flows for the account lifecycle ("Forgot password, change
//! password, sign out everywhere") and the cookbook's for identities at external
//! providers, run as written with bash, grpcurl and python3 against a real server
//! (and a local OpenID Connect provider), so the documented commands cannot drift
//! from the API. Skipped, with a note, where grpcurl is not installed.

use tonic::Code;

use crate::helpers::{code, TestApp, TestDb, PASSWORD};

const SECTION: &str = "### Forgot password, change password, sign out everywhere";

/// The `sh` blocks of the README section `heading`, in order.
pub(crate) fn sh_blocks(heading: &str) -> Vec<String> {
    sh_blocks_in(include_str!("../../README.md"), heading)
}

/// The `sh` blocks of the section `heading` of a Markdown `document`, in order: up
/// to the next heading (a line starting with `#` outside a code block).
pub(crate) fn sh_blocks_in(document: &str, heading: &str) -> Vec<String> {
    let start = document.find(heading).expect("the section");
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in document[start + heading.len()..].lines().skip(1) {
        match (&mut open, line) {
            (None, heading) if heading.starts_with('#') => break,
            (None, "```sh") => open = Some(String::new()),
            (Some(_), "```") => blocks.extend(open.take()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(open.is_none(), "a closed block");
    blocks
}

pub(crate) fn grpcurl_installed() -> bool {
    std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|out| out.status.success())
}

async fn the_readmes_lifecycle_flows_run_as_written(app: TestApp) {
    if !grpcurl_installed() {
        eprintln!("skipped: grpcurl is not installed");
        return;
    }
    let blocks = sh_blocks(SECTION);
    assert_eq!(
        blocks.len(),
        3,
        "reset, change password, sign out everywhere"
    );
    let admin_token = app.admin().await.tokens.access_token.clone();
    app.register("alice").await;
    let before_reset = app.login("alice").await;

    // The README's blocks in one shell, with logins of other devices between them.
    let other_device = format!(
        "grpcurl -plaintext -d '{{\"username\": \"alice\", \"password\": \"{PASSWORD}\"}}' \
         localhost:50051 auth.v1.AuthService/Login > /dev/null\n"
    );
    let script = [
        blocks[0].clone(),
        blocks[1].clone(),
        other_device.clone(),
        other_device,
        blocks[2].clone(),
        "echo \"USER_TOKEN=$USER_TOKEN\"\n".to_owned(),
    ]
    .concat()
    .replace("localhost:50051", &app.addr().to_string());
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("ADMIN_TOKEN", &admin_token)
        .output()
        .await
        .expect("run bash");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let user_token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("USER_TOKEN="))
        .expect("the script's token")
        .to_owned();

    // The reset ended the session from before it.
    assert_eq!(
        code(app.validate(&before_reset.access_token).await),
        Code::Unauthenticated
    );
    // The password is back to the one the README changes it to, and signing out
    // everywhere left only the script's own session.
    let sessions = app
        .user_as(&user_token)
        .await
        .list_sessions()
        .await
        .expect("sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert!(sessions[0].current);
    app.login_with("alice", PASSWORD)
        .await
        .expect("the README's final password");

    // The cookbook's UpdateUser: an optional field set from JSON via reflection.
    let alice = app
        .admin()
        .await
        .get_user("", "alice")
        .await
        .expect("alice");
    let update = tokio::process::Command::new("grpcurl")
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {admin_token}"),
            "-d",
            &format!(
                "{{\"user_id\": \"{}\", \"email\": \"alice@new.example.com\"}}",
                alice.id
            ),
            &app.addr().to_string(),
            "auth.v1.AdminService/UpdateUser",
        ])
        .output()
        .await
        .expect("grpcurl");
    assert!(update.status.success(), "{update:?}");
    let updated = app
        .admin()
        .await
        .get_user(&alice.id, "")
        .await
        .expect("get");
    assert_eq!(updated.email, "alice@new.example.com");
    assert_eq!(updated.username, "alice", "fields left out stay");
}

on_both_databases!(the_readmes_lifecycle_flows_run_as_written);

const ROLES_SECTION: &str = "### Roles and permissions";

/// Runs `script` with bash against `app`, with `env`; answers (stdout, stderr).
async fn run_script(app: &TestApp, script: &str, env: &[(&str, &str)]) -> (String, String) {
    let script = script.replace("localhost:50051", &app.addr().to_string());
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run bash");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

async fn the_readmes_roles_flow_runs_as_written(app: TestApp) {
    if !grpcurl_installed() {
        eprintln!("skipped: grpcurl is not installed");
        return;
    }
    let blocks = sh_blocks(ROLES_SECTION);
    assert_eq!(blocks.len(), 3, "define, scoped key, check");
    let admin = app.admin().await;
    let admin_token = admin.tokens.access_token.clone();
    let alice = app.register("alice").await;
    let (defined, _) = run_script(&app, &blocks[0], &[("ADMIN_TOKEN", &admin_token)]).await;
    assert!(defined.contains("billing.refund"), "{defined}");
    admin
        .assign_role(&alice.id, "support")
        .await
        .expect("assign");
    let user_token = app.login("alice").await.access_token;

    let (_, refused) = run_script(&app, &blocks[1], &[("ADMIN_TOKEN", &admin_token)]).await;
    assert!(refused.contains("PermissionDenied"), "{refused}");
    assert!(refused.contains("authd.users.write"), "{refused}");

    let (checked, _) = run_script(&app, &blocks[2], &[("USER_TOKEN", &user_token)]).await;
    let answer: serde_json::Value = serde_json::from_str(&checked).expect("JSON");
    assert_eq!(answer["allowed"], true, "{checked}");
    assert_eq!(answer["userId"], alice.id.as_str());
}

on_both_databases!(the_readmes_roles_flow_runs_as_written);

/// The cookbook's "Identities at external providers": an ID token of the local
/// provider (named `google` here) links Ann's account by its verified email, and
/// the admin unlinks it again.
async fn the_cookbooks_identity_commands_run_as_written(db: TestDb) {
    if !grpcurl_installed() {
        eprintln!("skipped: grpcurl is not installed");
        return;
    }
    let blocks = sh_blocks_in(
        include_str!("../../docs/grpcurl-cookbook.md"),
        "## Identities at external providers (OpenID Connect)",
    );
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let w = crate::oidc::world_with(db, "google", false, &[]).await;
    let ann = w.register("ann").await;
    let mut claims = w.provider.claims(w.clock.now_ms(), "1029");
    claims["email"] = "ann@example.com".into();
    claims["email_verified"] = true.into();
    let id_token = w.provider.token(&claims);
    let admin_token = w.admin().await.tokens.access_token.clone();
    let auth = format!("authorization: Bearer {admin_token}");
    let script = format!("ADDR={}\n{}", w.addr(), blocks[0]);
    let env = [
        ("ID_TOKEN", id_token.as_str()),
        ("AUTH", auth.as_str()),
        ("USER_ID", ann.id.as_str()),
    ];
    let (stdout, _) = run_script(&w, &script, &env).await;
    assert!(stdout.contains(r#""provider": "google""#), "{stdout}");
    assert!(stdout.contains(r#""hasPassword": true"#), "{stdout}");
    let after = w.admin().await.get_user(&ann.id, "").await.expect("ann");
    assert!(after.linked_identities.is_empty(), "{after:?}");
}

on_both_databases!(the_cookbooks_identity_commands_run_as_written);
