//! The README's grpcurl flows for the account lifecycle ("Forgot password, change
//! password, sign out everywhere"), run as written with bash, grpcurl and python3
//! against a real server, so the documented commands cannot drift from the API.
//! Skipped, with a note, where grpcurl is not installed.

use tonic::Code;

use crate::helpers::{code, TestApp, PASSWORD};

const SECTION: &str = "### Forgot password, change password, sign out everywhere";

/// The `sh` blocks of the README section `heading`, in order.
pub(crate) fn sh_blocks(heading: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme.find(heading).expect("the README section");
    let section = &readme[start + heading.len()..];
    let end = section.find("\n##").unwrap_or(section.len());
    let mut blocks = Vec::new();
    let mut rest = &section[..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed block");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
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
