//! CPU pinning: the server on its CPUs through `taskset`, this process's threads on
//! theirs through `sched_setaffinity`, so that load generation and serving do not
//! share a core and the figures measure the server alone.

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    unistd::Pid,
};

/// Which CPUs the server and the load run on; `None` when not pinned.
#[derive(Clone, Debug, Default)]
pub struct Pinning {
    pub server: Option<Vec<usize>>,
    pub load: Option<Vec<usize>>,
    /// Why something is not pinned, for the report.
    pub note: Option<String>,
}

impl Pinning {
    /// Decides what can be pinned here. The server is pinned only when this process
    /// starts it and `taskset` exists; the load is pinned when the server is (or
    /// when the server is elsewhere), and only to CPUs this process may use.
    pub fn decide(
        server_cpus: &str,
        load_cpus: &str,
        no_pin: bool,
        starts_server: bool,
    ) -> anyhow::Result<Pinning> {
        if no_pin {
            return Ok(Pinning {
                note: Some("--no-pin".into()),
                ..Pinning::default()
            });
        }
        let server = parse_cpu_list(server_cpus).context("--server-cpus")?;
        let load = parse_cpu_list(load_cpus).context("--load-cpus")?;
        let allowed = allowed_cpus()?;
        if let Some(cpu) = server.iter().chain(&load).find(|c| !allowed.contains(c)) {
            return Ok(Pinning {
                note: Some(format!(
                    "CPU {cpu} is not available here (allowed: {allowed:?}); nothing pinned"
                )),
                ..Pinning::default()
            });
        }
        if starts_server && !taskset_exists() {
            return Ok(Pinning {
                note: Some("taskset not found; nothing pinned".into()),
                ..Pinning::default()
            });
        }
        Ok(Pinning {
            server: starts_server.then_some(server.clone()),
            load: Some(load),
            note: None,
        })
    }
}

/// Pins the calling thread (threads it starts afterwards inherit the mask).
pub fn pin_current_thread(cpus: &[usize]) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .with_context(|| format!("CPU {cpu} is out of range"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect())
}

/// `taskset -c` syntax: "0", "0,2", "1-3".
pub fn parse_cpu_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (usize, usize) = (from.parse()?, to.parse()?);
                if from > to {
                    bail!("{part}: empty range");
                }
                cpus.extend(from..=to);
            }
            None => cpus.push(part.parse()?),
        }
    }
    if cpus.is_empty() {
        bail!("no CPU in {list:?}");
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// "0,1" from a list, for `taskset -c` and the report.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn taskset_exists() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(parse_cpu_list("0").expect("valid"), vec![0]);
        assert_eq!(parse_cpu_list("1,0,1").expect("valid"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0-2,5").expect("valid"), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}
