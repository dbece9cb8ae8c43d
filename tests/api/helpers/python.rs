//! Python for the tests that run Python clients against the server. Locally, a
//! machine without `python3` skips them (with a note); one with `python3` but not
//! the packages fails, naming what to install. In CI (`CI=true`), where `.ci/run`
//! installs everything, a missing `python3` fails too: the tests must run there.

use tokio::process::Command;

/// Whether `python3` can import every one of `modules`; `install` says how to get
/// them. `false` (skip) only where python3 itself is missing outside CI.
pub async fn python_with(modules: &[&str], install: &str) -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let probe = Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .output()
        .await;
    match probe {
        Ok(output) if output.status.success() => true,
        Ok(output) => panic!(
            "python3 lacks one of {modules:?} ({install}): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) if in_ci => panic!("CI=true but python3 cannot run: {err}"),
        Err(err) => {
            eprintln!("skipped: cannot run python3: {err}");
            false
        }
    }
}
