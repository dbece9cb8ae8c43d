//! One invocation: bring up (or reach) the server, make the fixtures the chosen
//! scenarios need, run the scenarios one after another, and collect the report.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use authd::grpc::pb::auth_service_client::AuthServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

use crate::{
    affinity::{format_cpu_list, Pinning},
    calls::{self, RoundRobin, Tokens},
    cli::{Client, Options, Scenario},
    fixtures::{self, TOKEN_USERS},
    h2grpc::{self, Bodies, CHECK_PERMISSION, CHECK_ROLE, HEALTH_CHECK, VALIDATE_TOKEN},
    hash,
    load::{closed_loop, open_loop, Caller, Recorded, Window},
    report::{loadavg, Report, Row, RowContext, Startup},
    server::{self, Launch, Spawned},
};

/// The in-flight cap of the fixed-rate validate stream in `mixed`.
const MIXED_VALIDATE_IN_FLIGHT: usize = 256;
/// The in-flight cap of the --half-rate runs: enough that a call finding no free
/// slot means the server fell behind, not that the cap was low.
const HALF_RATE_IN_FLIGHT: usize = 256;
/// The validate rate in `mixed` when --rate is not given.
const MIXED_DEFAULT_RATE: f64 = 1000.0;
/// How long a fresh server idles before its RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

/// The server this run talks to.
struct Target {
    addr: std::net::SocketAddr,
    spawned: Option<Spawned>,
    launch: Option<Launch>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn run(options: Options, pinning: Pinning) -> anyhow::Result<Report> {
    let mut report = Report::default();
    report.machine.cpus = online_cpus();
    report.machine.server_cpus = pinning.server.as_deref().map(format_cpu_list);
    report.machine.load_cpus = pinning.load.as_deref().map(format_cpu_list);
    report.machine.pinning_note = pinning.note.clone();

    let needs_server = options.scenario.iter().any(|s| s.needs_server());
    let mut target = if needs_server {
        Some(bring_up(&options, &pinning, &mut report).await?)
    } else {
        None
    };
    let mut channels = match &target {
        Some(t) => server::connect(t.addr, options.tonic_connections()).await?,
        None => Vec::new(),
    };
    let mut fixtures = Fixtures::new(&channels);
    fixtures.launch = target.as_ref().and_then(|t| t.launch.clone());

    for &scenario in &options.scenario {
        if let Some(Target {
            spawned: Some(s),
            launch: Some(l),
            ..
        }) = &mut target
        {
            s.check_alive(&l.log)?;
        }
        eprintln!("running {}", scenario.name());
        if scenario == Scenario::Startup {
            let t = target.as_mut().context("startup needs a server")?;
            report.startups = restarts(t, options.starts).await?;
            channels = server::connect(t.addr, options.tonic_connections()).await?;
            fixtures.reconnect(&channels);
            continue;
        }
        let server = target.as_ref().map(|t| Server {
            addr: t.addr,
            pid: t.spawned.as_ref().map(Spawned::pid),
        });
        let rows = run_scenario(
            scenario,
            &options,
            &pinning,
            &channels,
            &mut fixtures,
            server,
        )
        .await?;
        for row in rows {
            eprintln!(
                "  {} {}: {:.0} calls/s, p99 {:.3} ms",
                row.scenario, row.mode, row.calls_per_s, row.latency_ms.p99
            );
            report.results.push(row);
        }
    }

    if let Some(Target {
        spawned: Some(s), ..
    }) = target.take()
    {
        s.stop().await?;
    }
    report.compute_ratios();
    Ok(report)
}

/// Starts the server (or checks the address given) and notes its start-up figures.
async fn bring_up(
    options: &Options,
    pinning: &Pinning,
    report: &mut Report,
) -> anyhow::Result<Target> {
    if let Some(addr) = options.addr {
        server::check_loopback(addr)?;
        if !server::is_serving(addr).await {
            bail!("--addr {addr}: health is not SERVING");
        }
        report.server.target = addr.to_string();
        return Ok(Target {
            addr,
            spawned: None,
            launch: None,
            _dir: None,
        });
    }
    let dir = tempfile::Builder::new()
        .prefix("authd-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let database_url = match &options.database_url {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("authd.db").display()
        ),
    };
    let launch = Launch {
        binary: match &options.authd_bin {
            Some(path) => path.clone(),
            None => default_binary(),
        },
        database_url,
        cpus: pinning.server.clone(),
        env: options.server_env.clone(),
        log: dir.path().join("authd.log"),
    };
    let spawned = Spawned::start(&launch).await?;
    tokio::time::sleep(SETTLE).await;
    report.server.target = "spawned".into();
    report.server.database = Some(
        if launch.database_url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        }
        .into(),
    );
    report.server.start_to_serving_ms = Some(spawned.start_to_serving.as_secs_f64() * 1e3);
    report.server.idle_rss_kib = server::rss_kib(spawned.pid());
    Ok(Target {
        addr: spawned.addr,
        spawned: Some(spawned),
        launch: Some(launch),
        _dir: Some(dir),
    })
}

/// `authd` beside this binary: `cargo build -p authd -p authd-bench` puts both in
/// the same target directory.
fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("authd")))
        .unwrap_or_else(|| PathBuf::from("target/release/authd"))
}

/// Restarts the server `starts` times on its (now migrated) database, measuring
/// each start; the last one stays up for the scenarios that follow.
async fn restarts(target: &mut Target, starts: u32) -> anyhow::Result<Vec<Startup>> {
    let launch = target
        .launch
        .clone()
        .context("`startup` measures a server it starts itself; drop --addr")?;
    let mut measured = Vec::new();
    for _ in 0..starts {
        if let Some(running) = target.spawned.take() {
            running.stop().await?;
        }
        let spawned = Spawned::start(&launch).await?;
        tokio::time::sleep(SETTLE).await;
        measured.push(Startup {
            start_to_serving_ms: spawned.start_to_serving.as_secs_f64() * 1e3,
            idle_rss_kib: server::rss_kib(spawned.pid()),
        });
        target.addr = spawned.addr;
        target.spawned = Some(spawned);
    }
    Ok(measured)
}

/// Users and tokens, made once and shared by the scenarios of one invocation.
struct Fixtures {
    clients: Vec<AuthServiceClient<Channel>>,
    run: String,
    users: Vec<String>,
    /// The ids of `users`, in the same order.
    user_ids: Vec<String>,
    tokens: Vec<String>,
    /// The role graph of --roles is defined (once per invocation).
    roles_defined: bool,
    /// How the server was started, when this process started it (to make an admin).
    launch: Option<Launch>,
    admin_token: Option<String>,
    /// Users made for one scenario each, so far (their names never repeat).
    own_users: usize,
}

impl Fixtures {
    fn new(channels: &[Channel]) -> Fixtures {
        let mut f = Fixtures {
            clients: Vec::new(),
            run: fixtures::run_id(),
            users: Vec::new(),
            user_ids: Vec::new(),
            tokens: Vec::new(),
            roles_defined: false,
            launch: None,
            admin_token: None,
            own_users: 0,
        };
        f.reconnect(channels);
        f
    }

    /// `count` new users nobody else uses (scenarios that change their passwords);
    /// answers (username, id) pairs.
    async fn own_users(&mut self, count: usize) -> anyhow::Result<Vec<(String, String)>> {
        let names: Vec<String> = (self.own_users..self.own_users + count)
            .map(|i| fixtures::username(&self.run, "o", i, 0))
            .collect();
        self.own_users += count;
        eprintln!("  registering {count} users of their own");
        let ids = fixtures::register_named(&self.clients, &names).await?;
        Ok(names.into_iter().zip(ids).collect())
    }

    /// An admin's access token, made once (needs a server this process started).
    async fn admin_token(&mut self) -> anyhow::Result<String> {
        if let Some(token) = &self.admin_token {
            return Ok(token.clone());
        }
        let launch = self
            .launch
            .as_ref()
            .context("reset-password makes an admin with `authd user create` on the server's database; drop --addr")?;
        let token = fixtures::admin_token(&self.clients, launch, &self.run).await?;
        self.admin_token = Some(token.clone());
        Ok(token)
    }

    fn reconnect(&mut self, channels: &[Channel]) {
        self.clients = channels
            .iter()
            .cloned()
            .map(AuthServiceClient::new)
            .collect();
    }

    /// The first `count` users, registering those not made yet.
    async fn users(&mut self, count: usize) -> anyhow::Result<Arc<[String]>> {
        if self.users.len() < count {
            let made = self.users.len();
            eprintln!("  registering {} users", count - made);
            let names: Vec<String> = (made..count)
                .map(|i| fixtures::username(&self.run, "u", i, 0))
                .collect();
            let ids = fixtures::register_named(&self.clients, &names).await?;
            self.users.extend(names);
            self.user_ids.extend(ids);
        }
        Ok(self.users[..count].into())
    }

    /// Defines the role graph of --roles and grants its held role to the token
    /// users (once).
    async fn define_roles(
        &mut self,
        channels: &[Channel],
        options: &Options,
    ) -> anyhow::Result<()> {
        if self.roles_defined || options.roles == 0 {
            return Ok(());
        }
        self.users(TOKEN_USERS).await?;
        let token = self.admin_token().await?;
        let admin = fixtures::Admin::new(channels[0].clone());
        eprintln!(
            "  defining {} roles with {} permissions",
            options.roles, options.permissions
        );
        let ids = self.user_ids[..TOKEN_USERS].to_vec();
        fixtures::define_roles(&admin, &token, options.roles, options.permissions, &ids).await?;
        self.roles_defined = true;
        Ok(())
    }

    /// `count` distinct live access tokens over up to 20 users.
    async fn tokens(&mut self, count: usize) -> anyhow::Result<Arc<[String]>> {
        if self.tokens.len() < count {
            let users = self.users(count.min(TOKEN_USERS)).await?;
            let missing = count - self.tokens.len();
            eprintln!("  logging in {missing} times for access tokens");
            let started = Instant::now();
            let pairs = fixtures::log_in(&self.clients, &users, missing).await?;
            eprintln!("  ({:.1} s)", started.elapsed().as_secs_f64());
            self.tokens
                .extend(pairs.into_iter().map(|p| p.access_token));
        }
        Ok(self.tokens[..count].into())
    }

    /// One fresh session per worker, for `refresh`.
    async fn sessions(&mut self, workers: usize) -> anyhow::Result<Vec<(String, String)>> {
        let users = self.users(workers.min(TOKEN_USERS)).await?;
        let pairs = fixtures::log_in(&self.clients, &users, workers).await?;
        Ok(pairs
            .into_iter()
            .enumerate()
            .map(|(i, p)| (users[i % users.len()].clone(), p.refresh_token))
            .collect())
    }
}

/// Where the server of a scenario is, and its pid when this process started it.
#[derive(Clone, Copy)]
struct Server {
    addr: std::net::SocketAddr,
    pid: Option<u32>,
}

/// What the runs of one scenario share.
#[derive(Clone, Copy)]
struct Plan<'a> {
    options: &'a Options,
    workers: usize,
    window: Window,
    server_pid: Option<u32>,
}

/// Runs one scenario (and its half-rate rerun) and returns its rows.
async fn run_scenario(
    scenario: Scenario,
    options: &Options,
    pinning: &Pinning,
    channels: &[Channel],
    fixtures: &mut Fixtures,
    server: Option<Server>,
) -> anyhow::Result<Vec<Row>> {
    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
        timeout: options.timeout,
    };
    let server_pid = server.and_then(|s| s.pid);
    let workers = options.concurrency_for(scenario) as usize;
    let auth = calls::auth_clients(channels);
    let health = RoundRobin::new(channels, HealthClient::new);
    let token_count = scenario.needs_tokens().then_some(options.tokens);
    if scenario == Scenario::CheckPermission && options.roles == 0 {
        bail!("check-permission asks for a permission of the bench's role graph: give --roles (e.g. --roles 200 --permissions 2000)");
    }
    if token_count.is_some() {
        fixtures.define_roles(channels, options).await?;
    }
    let tokens = match token_count {
        Some(n) => fixtures.tokens(n as usize).await?,
        None => Arc::from(Vec::new()),
    };
    // The raw generator's own connections, fresh for each scenario that uses it (and
    // opened after the fixtures, which may take a while to log in).
    let raw = match server {
        Some(s) if options.client == Client::H2 && uses_raw_generator(scenario) => {
            Some(h2grpc::Connections::open(s.addr, options.hot_connections()).await?)
        }
        _ => None,
    };
    let validate = |w: usize| calls::Validate {
        clients: auth.clone(),
        tokens: Tokens::new(tokens.clone(), w),
    };
    let plan = Plan {
        options,
        workers,
        window,
        server_pid,
    };
    let load_cores = pinning.load.as_ref().map_or_else(online_cpus, Vec::len);
    let mut context = |name: &str, mode: String, concurrency: usize| RowContext {
        scenario: name.to_owned(),
        mode,
        concurrency: u32::try_from(concurrency).unwrap_or(u32::MAX),
        connections: if raw.is_some() && name != "mixed/login" {
            options.hot_connections()
        } else {
            options.tonic_connections()
        },
        tokens: token_count,
        load_cores,
        server_cpu_pct: None,
        bench_cpu_pct: None,
        loadavg_before: loadavg(),
    };
    let name = scenario.name();

    let rows = match (scenario, &raw) {
        (Scenario::Health, Some(raw)) => {
            let bodies = Bodies::health();
            let make = |w| raw.caller(w, HEALTH_CHECK, &bodies);
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::Health, None) => {
            let make = |_| calls::Health(health.clone());
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::Validate, Some(raw)) => {
            let bodies = Bodies::validate(&tokens);
            let make = |w| raw.caller(w, VALIDATE_TOKEN, &bodies);
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::Validate, None) => drive(name, validate, &plan, &mut context).await,
        (Scenario::CheckRole, Some(raw)) => {
            let bodies = Bodies::check_role(&tokens, &options.role);
            let make = |w| raw.caller(w, CHECK_ROLE, &bodies);
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::CheckRole, None) => {
            let make = |w| calls::CheckRole {
                clients: auth.clone(),
                tokens: Tokens::new(tokens.clone(), w),
                role: options.role.clone(),
            };
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::CheckPermission, Some(raw)) => {
            let bodies = Bodies::check_permission(&tokens, &fixtures::checked_permission());
            let make = |w| raw.caller(w, CHECK_PERMISSION, &bodies);
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::CheckPermission, None) => {
            let make = |w| calls::CheckPermission {
                clients: auth.clone(),
                tokens: Tokens::new(tokens.clone(), w),
                permission: fixtures::checked_permission(),
            };
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::Login, _) => {
            let users = fixtures.users(TOKEN_USERS).await?;
            let make = |w| calls::Login {
                clients: auth.clone(),
                users: users.clone(),
                next: w,
            };
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::Refresh, _) => {
            let callers: Vec<calls::Refresh> = fixtures
                .sessions(workers)
                .await?
                .into_iter()
                .map(|(user, refresh_token)| calls::Refresh {
                    clients: auth.clone(),
                    user,
                    refresh_token,
                })
                .collect();
            let ctx = context(name, mode(options.rate), workers);
            vec![measure(ctx, server_pid, run_loop(callers, options.rate, window)).await]
        }
        (Scenario::Register, _) => {
            let run = fixtures.run.clone();
            let make = |w| calls::Register {
                clients: auth.clone(),
                run: run.clone(),
                worker: w,
                count: 0,
            };
            drive(name, make, &plan, &mut context).await
        }
        (Scenario::ChangePassword, _) => {
            let users = fixtures.own_users(workers).await?;
            let names: Vec<String> = users.into_iter().map(|(name, _)| name).collect();
            let pairs = fixtures::log_in(&fixtures.clients, &names, workers).await?;
            let callers: Vec<calls::ChangePassword> = pairs
                .into_iter()
                .map(|pair| calls::ChangePassword {
                    clients: auth.clone(),
                    access_token: pair.access_token,
                    changed: false,
                })
                .collect();
            let ctx = context(name, mode(options.rate), workers);
            vec![measure(ctx, server_pid, run_loop(callers, options.rate, window)).await]
        }
        (Scenario::ResetPassword, _) => {
            let admin_token = fixtures.admin_token().await?;
            let users = fixtures.own_users(2 * workers).await?;
            let callers: Vec<calls::ResetPassword> = users
                .chunks(2)
                .enumerate()
                .map(|(w, pair)| calls::ResetPassword {
                    clients: auth.clone(),
                    admin: fixtures::Admin::new(channels[w % channels.len()].clone()),
                    admin_token: admin_token.clone(),
                    user_ids: [pair[0].1.clone(), pair[pair.len() - 1].1.clone()],
                    turn: 0,
                    next: None,
                })
                .collect();
            let ctx = context(name, mode(options.rate), workers);
            vec![measure(ctx, server_pid, run_loop(callers, options.rate, window)).await]
        }
        (Scenario::Mixed, raw) => {
            let users = fixtures.users(TOKEN_USERS).await?;
            let rate = options.rate.unwrap_or(MIXED_DEFAULT_RATE);
            let storm = (0..workers)
                .map(|w| calls::Login {
                    clients: auth.clone(),
                    users: users.clone(),
                    next: w,
                })
                .collect();
            let v_ctx = context("mixed/validate", mode(Some(rate)), MIXED_VALIDATE_IN_FLIGHT);
            let l_ctx = context("mixed/login", mode(None), workers);
            let contexts = (v_ctx, l_ctx);
            match raw {
                Some(raw) => {
                    let bodies = Bodies::validate(&tokens);
                    let validators = (0..MIXED_VALIDATE_IN_FLIGHT)
                        .map(|w| raw.caller(w, VALIDATE_TOKEN, &bodies))
                        .collect();
                    mixed(validators, storm, rate, window, server_pid, contexts).await
                }
                None => {
                    let validators = (0..MIXED_VALIDATE_IN_FLIGHT).map(validate).collect();
                    mixed(validators, storm, rate, window, server_pid, contexts).await
                }
            }
        }
        (Scenario::Hash, _) => {
            let hash_workers = options
                .hash_workers
                .unwrap_or_else(|| pinning.server.as_ref().map_or_else(online_cpus, Vec::len));
            let settings = hash::server_settings(hash_workers)?;
            let cpus = pinning.server.clone();
            let ctx = RowContext {
                mode: format!("{hash_workers} worker(s)"),
                connections: 0,
                tokens: None,
                ..context(name, String::new(), workers)
            };
            let cpu = CpuClock::start(None);
            let recorded =
                tokio::task::spawn_blocking(move || hash::run(&settings, cpus, workers, window))
                    .await??;
            let (_, bench_pct) = cpu.stop();
            vec![Row::new(
                RowContext {
                    bench_cpu_pct: bench_pct,
                    ..ctx
                },
                &recorded,
            )]
        }
        (Scenario::Startup, _) => Vec::new(),
    };
    Ok(rows)
}

/// The scenarios whose calls go through the raw HTTP/2 generator (with `--client h2`).
fn uses_raw_generator(scenario: Scenario) -> bool {
    scenario.is_hot() || scenario == Scenario::Mixed
}

/// `mixed`: validate at a fixed rate while a login storm saturates the hashing pool,
/// reported as two rows that share the run's CPU figures.
async fn mixed<V: Caller>(
    validators: Vec<V>,
    storm: Vec<calls::Login>,
    rate: f64,
    window: Window,
    server_pid: Option<u32>,
    (v_ctx, l_ctx): (RowContext, RowContext),
) -> Vec<Row> {
    let cpu = CpuClock::start(server_pid);
    let (v, l) = tokio::join!(
        open_loop(validators, rate, window),
        closed_loop(storm, window)
    );
    let (server_pct, bench_pct) = cpu.stop();
    [(v_ctx, v), (l_ctx, l)]
        .into_iter()
        .map(|(ctx, r)| {
            Row::new(
                RowContext {
                    server_cpu_pct: server_pct,
                    bench_cpu_pct: bench_pct,
                    ..ctx
                },
                &r,
            )
        })
        .collect()
}

/// A scenario made of identical workers: closed loop (or open loop at --rate), then,
/// with --half-rate, open loop at half the rate just measured.
async fn drive<C: Caller>(
    name: &str,
    make: impl Fn(usize) -> C,
    plan: &Plan<'_>,
    context: &mut impl FnMut(&str, String, usize) -> RowContext,
) -> Vec<Row> {
    let Plan {
        options,
        workers,
        window,
        server_pid,
    } = *plan;
    let callers = (0..workers).map(&make).collect();
    let ctx = context(name, mode(options.rate), workers);
    let row = measure(ctx, server_pid, run_loop(callers, options.rate, window)).await;
    let half = options.half_rate
        && options.rate.is_none()
        && matches!(name, "health" | "validate" | "check-role");
    let rate = row.calls_per_s / 2.0;
    let mut rows = vec![row];
    if half && rate > 0.0 {
        let in_flight = workers.max(HALF_RATE_IN_FLIGHT);
        let callers = (0..in_flight).map(&make).collect();
        let ctx = context(name, mode(Some(rate)), in_flight);
        rows.push(measure(ctx, server_pid, open_loop(callers, rate, window)).await);
    }
    rows
}

async fn run_loop<C: Caller>(callers: Vec<C>, rate: Option<f64>, window: Window) -> Recorded {
    match rate {
        Some(rate) => open_loop(callers, rate, window).await,
        None => closed_loop(callers, window).await,
    }
}

async fn measure(
    context: RowContext,
    server_pid: Option<u32>,
    load: impl std::future::Future<Output = Recorded>,
) -> Row {
    let cpu = CpuClock::start(server_pid);
    let recorded = load.await;
    let (server_cpu_pct, bench_cpu_pct) = cpu.stop();
    Row::new(
        RowContext {
            server_cpu_pct,
            bench_cpu_pct,
            ..context
        },
        &recorded,
    )
}

fn mode(rate: Option<f64>) -> String {
    match rate {
        Some(rate) => format!("open@{rate:.0}/s"),
        None => "closed".into(),
    }
}

/// The machine's CPUs, whatever this process is pinned to.
fn online_cpus() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1)
}

/// CPU time of the server and of this process across a run, as % of one core.
struct CpuClock {
    server_pid: Option<u32>,
    wall: Instant,
    server: Option<Duration>,
    bench: Option<Duration>,
}

impl CpuClock {
    fn start(server_pid: Option<u32>) -> CpuClock {
        CpuClock {
            server_pid,
            wall: Instant::now(),
            server: server_pid.and_then(server::cpu_time),
            bench: server::cpu_time(std::process::id()),
        }
    }

    fn stop(self) -> (Option<f64>, Option<f64>) {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let pct = |before: Option<Duration>, after: Option<Duration>| {
            Some((after? - before?).as_secs_f64() / wall * 100.0)
        };
        (
            pct(self.server, self.server_pid.and_then(server::cpu_time)),
            pct(self.bench, server::cpu_time(std::process::id())),
        )
    }
}
