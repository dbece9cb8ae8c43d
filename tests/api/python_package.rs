//! The Python package `authd` (`clients/python`), as a user gets it: built and
//! installed with pip from a copy of its folder into a directory of its own, and
//! imported from there with nothing of the repository on the path. Its stubs must
//! match `proto/`; its unit tests must pass; and a FastAPI app using its dependencies
//! must allow, refuse (401, 403) and see a logout within 1 s through the local
//! verifier, against a real server. Skipped only where python3 is missing outside
//! CI (see `helpers::python_with`).

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::OnceLock,
};

use tokio::process::Command;

use crate::helpers::{python_with, TestApp};

const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python");
const INSTALL: &str = "pip install grpcio 'PyJWT[crypto]' -r clients/python/requirements-dev.txt";

async fn python_ready() -> bool {
    python_with(
        &[
            "grpc",
            "grpc_tools",
            "jwt",
            "fastapi",
            "httpx",
            "setuptools",
        ],
        INSTALL,
    )
    .await
}

/// The package, pip-installed once per test run: `(site directory, copied sources)`.
fn installed() -> &'static (PathBuf, PathBuf) {
    static INSTALLED: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-package");
        let _ = std::fs::remove_dir_all(&root);
        let (site, sources) = (root.join("site"), root.join("sources"));
        copy_tree(Path::new(PACKAGE), &sources);
        // --no-build-isolation: the installed setuptools builds it, no download.
        let output = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-deps", "--no-build-isolation", "--target"])
            .arg(&site)
            .arg(&sources)
            .current_dir(&root)
            .output()
            .expect("run pip");
        assert_succeeded("pip install ./clients/python", &output);
        (site, sources)
    })
}

/// `from` to `to`, without what a build leaves behind.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ["build", "dist", "__pycache__"].contains(&name.as_ref()) || name.ends_with(".egg-info")
        {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn assert_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// python3 with only the installed package (and site-packages) on its path, in a
/// directory outside the repository.
fn python(site: &Path) -> Command {
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(site.parent().expect("the install root"));
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_stubs_match_the_protos() {
    if !python_ready().await {
        return;
    }
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clients/python/regenerate_stubs.py"
        ))
        .arg("--check")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("run regenerate_stubs.py");
    assert_succeeded("regenerate_stubs.py --check", &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packages_own_tests_pass_on_the_installed_package() {
    if !python_ready().await {
        return;
    }
    let (site, sources) = installed();
    let output = python(site)
        .args(["-m", "unittest", "discover", "-p", "test_*.py", "-s"])
        .arg(sources.join("tests"))
        .output()
        .await
        .expect("run unittest");
    assert_succeeded("python3 -m unittest", &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\nOK"), "{stderr}");
    // What was imported is the installed copy, stubs included.
    let output = python(site)
        .args([
            "-c",
            "import authd, authd.pb.auth_pb2 as pb; print(authd.__file__); print(pb.__file__)",
        ])
        .output()
        .await
        .expect("run python3");
    assert_succeeded("import authd", &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        assert!(
            Path::new(line).starts_with(site),
            "{line} is not in {site:?}"
        );
    }
}

async fn a_fastapi_app_delegates_to_a_real_authd(app: TestApp) {
    if !python_ready().await {
        return;
    }
    let (site, sources) = installed();
    let admin_token = app.admin().await.tokens.access_token.clone();
    let output = python(site)
        .arg(sources.join("tests/fastapi_against_authd.py"))
        .args(["--addr", &app.addr().to_string()])
        .args(["--http", &app.http_addr().to_string()])
        .env("AUTHD_TEST_ADMIN_TOKEN", admin_token)
        .output()
        .await
        .expect("run the FastAPI check");
    assert_succeeded("fastapi_against_authd.py", &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = stdout
        .lines()
        .find(|l| l.starts_with("logout refused after"))
    {
        eprintln!("{line}");
    }
    for expected in [
        "ok: an editor's token is allowed",
        "ok: verified in this process, without asking authd",
        "ok: a user without the role is 403",
        "ok: garbage is 401",
        "ok: a holder of the permission may publish",
        "ok: a user without the permission is 403",
        "ok: an API key with the role is allowed",
        "ok: a logged-out token is refused within 1 s",
        "ok: refused by the local verifier",
        "ok: a deactivated user's token is refused",
        "all checks passed",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

on_both_databases!(a_fastapi_app_delegates_to_a_real_authd);
