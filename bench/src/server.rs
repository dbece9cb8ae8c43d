//! The server under test: an `authd serve` child process this harness starts on free
//! loopback ports (pinned with `taskset`, its log in the temporary directory), or an
//! address the user gave. Knows how to wait for SERVING, read the child's RSS and CPU
//! time from /proc, and stop it; a child is killed on drop, so no error path leaks it.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::affinity::format_cpu_list;

/// How to start `authd serve`.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    pub database_url: String,
    pub cpus: Option<Vec<usize>>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// A running `authd serve` that this process started.
pub struct Spawned {
    child: Child,
    pub addr: SocketAddr,
    /// From spawning the process to health answering SERVING.
    pub start_to_serving: Duration,
}

impl Spawned {
    /// Starts the server and waits until it reports SERVING (at most 60 s).
    pub async fn start(launch: &Launch) -> anyhow::Result<Spawned> {
        if !launch.binary.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p authd -p authd-bench` \
                 (or pass --authd-bin)",
                launch.binary.display()
            );
        }
        let addr = free_port()?;
        let http = free_port()?;
        let mut command = match &launch.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(format_cpu_list(cpus)).arg(&launch.binary);
                c
            }
            None => Command::new(&launch.binary),
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&launch.log)
            .with_context(|| format!("opening {}", launch.log.display()))?;
        command
            .arg("serve")
            .env("AUTHD_DATABASE_URL", &launch.database_url)
            .env("AUTHD_LISTEN", addr.to_string())
            .env("AUTHD_HTTP_LISTEN", http.to_string())
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let spawned_at = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let mut server = Spawned {
            child,
            addr,
            start_to_serving: Duration::ZERO,
        };
        let deadline = spawned_at + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "authd exited ({status}) before SERVING; its log:\n{}",
                    log_tail(&launch.log)
                );
            }
            if is_serving(addr).await {
                server.start_to_serving = spawned_at.elapsed();
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "authd was not SERVING after 60 s; its log:\n{}",
                    log_tail(&launch.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the server has exited (it should outlive every scenario).
    pub fn check_alive(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "authd exited ({status}) during the run; its log:\n{}",
                log_tail(log)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not drained within 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("authd did not stop within 10 s of SIGTERM; killed")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One health Check on a fresh connection; false on any failure.
pub async fn is_serving(addr: SocketAddr) -> bool {
    let Ok(channel) = Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(Duration::from_millis(200)))
    else {
        return false;
    };
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    matches!(
        client.check(request).await,
        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

/// `connections` separate HTTP/2 connections to `addr`.
pub async fn connect(addr: SocketAddr, connections: u32) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(channels)
}

/// Only loopback: this harness never sends load anywhere else.
pub fn check_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("--addr {addr}: only loopback addresses (127.0.0.0/8, ::1) may be targeted");
    }
    Ok(())
}

/// Resident set size in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU time of a process (all its threads) so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis are
    // state (3rd) onwards, so utime and stime (14th, 15th) are the 12th and 13th.
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
