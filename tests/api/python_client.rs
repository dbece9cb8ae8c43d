//! `examples/python/client.py` against a real authd: it must register, log in, validate,
//! check a role and verify the token locally from the JWKS, and exit 0. Skipped (with a
//! note) where python3 is missing, outside CI (see `helpers::python_with`).

use tokio::process::Command;

use crate::helpers::{python_with, TestApp, TestDb};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/client.py");

pub async fn python_has_the_requirements() -> bool {
    python_with(
        &["grpc", "grpc_tools", "jwt"],
        "pip install -r examples/python/requirements.txt",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_runs_against_a_real_server() {
    if !python_has_the_requirements().await {
        return;
    }
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let output = Command::new("python3")
        .arg(CLIENT)
        .args(["--addr", &app.addr().to_string()])
        .args(["--http", &app.http_addr().to_string()])
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for expected in [
        "Register: created python-example",
        "CheckRole user: allowed = True",
        "CheckRole admin: allowed = False",
        "local JWT check: sub ",
        "all checks passed",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}
