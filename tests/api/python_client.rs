//! `examples/python/client.py` against a real authd: it must register, log in, validate,
//! check a role and verify the token locally from the JWKS, and exit 0. Skipped (with a
//! note) where python3 lacks the packages in `examples/python/requirements.txt`.

use tokio::process::Command;

use crate::helpers::{TestApp, TestDb};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/client.py");

pub async fn python_has_the_requirements() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, jwt"])
        .output()
        .await;
    match probe {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "skipped: python3 lacks grpcio, grpcio-tools or PyJWT \
                 (pip install -r examples/python/requirements.txt): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            false
        }
        Err(err) => {
            eprintln!("skipped: cannot run python3: {err}");
            false
        }
    }
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
