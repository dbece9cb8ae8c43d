//! What the scenarios need, made through the public API as any client would: users
//! (Register) and live sessions and access tokens (Login). Each login costs an
//! argon2id verification on the server, so tokens are made by a few users logging in
//! many times, several at once.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context as _};
use authd::grpc::pb::{
    auth_service_client::AuthServiceClient, LoginRequest, RegisterRequest, TokenPair,
};
use tokio::task::JoinSet;
use tonic::{metadata::MetadataValue, transport::Channel, Request};

pub const PASSWORD: &str = "bench password, not a secret";

/// At most this many users carry the logins that make tokens.
pub const TOKEN_USERS: usize = 20;
/// Setup calls in flight at once (enough to keep a hashing pool of a few busy).
const SETUP_PARALLELISM: usize = 8;

/// A prefix that makes this run's usernames unique on a reused database.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}",
        (nanos ^ u128::from(std::process::id())) & 0xff_ffff_ffff
    )
}

/// A username that passes the server's rules (3-32 of A-Z a-z 0-9 . _ -).
pub fn username(run: &str, kind: &str, worker: usize, n: u64) -> String {
    format!("b{run}{kind}{worker}.{n}")
}

pub fn register_request(username: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.to_owned(),
        email: format!("{username}@bench.example"),
        password: PASSWORD.to_owned(),
        full_name: String::new(),
    }
}

pub fn login_request(username: &str) -> LoginRequest {
    LoginRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
    }
}

/// Registers the users `names` (with [`PASSWORD`]); answers their ids.
pub async fn register_named(
    clients: &[AuthServiceClient<Channel>],
    names: &[String],
) -> anyhow::Result<Vec<String>> {
    let requests: Vec<RegisterRequest> = names.iter().map(|n| register_request(n)).collect();
    in_parallel(clients, requests, |mut client, request| async move {
        client
            .register(request)
            .await
            .map_err(|s| anyhow!("Register: {s}"))?
            .into_inner()
            .user
            .map(|user| user.id)
            .ok_or_else(|| anyhow!("Register answered without a user"))
    })
    .await
}

/// `count` logins spread round-robin over `users`: that many live sessions.
pub async fn log_in(
    clients: &[AuthServiceClient<Channel>],
    users: &[String],
    count: usize,
) -> anyhow::Result<Vec<TokenPair>> {
    let requests: Vec<LoginRequest> = (0..count)
        .map(|i| login_request(&users[i % users.len()]))
        .collect();
    in_parallel(clients, requests, |mut client, request| async move {
        client
            .login(request)
            .await
            .map_err(|s| anyhow!("Login: {s}"))?
            .into_inner()
            .tokens
            .ok_or_else(|| anyhow!("Login answered without tokens"))
    })
    .await
}

/// Runs `call` on every request, a few at a time over the connections, in order.
async fn in_parallel<Req, Out, Fut>(
    clients: &[AuthServiceClient<Channel>],
    requests: Vec<Req>,
    call: impl Fn(AuthServiceClient<Channel>, Req) -> Fut + Send + Sync + 'static,
) -> anyhow::Result<Vec<Out>>
where
    Req: Send + 'static,
    Out: Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Out>> + Send + 'static,
{
    let total = requests.len();
    let queue = Arc::new(std::sync::Mutex::new(
        requests.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let call = Arc::new(call);
    let next_client = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..SETUP_PARALLELISM.min(total) {
        let (queue, call, next_client) = (queue.clone(), call.clone(), next_client.clone());
        let clients = clients.to_vec();
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let Some((index, request)) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return Ok::<_, anyhow::Error>(done);
                };
                let client =
                    clients[next_client.fetch_add(1, Ordering::Relaxed) % clients.len()].clone();
                done.push((index, call(client, request).await?));
            }
        });
    }
    let mut results = Vec::with_capacity(total);
    while let Some(joined) = tasks.join_next().await {
        results.extend(joined.context("setup task")??);
    }
    results.sort_by_key(|(index, _)| *index);
    Ok(results.into_iter().map(|(_, out)| out).collect())
}

/// Makes an admin with the server's own command line (`authd user create --role
/// admin`, on the database the server runs on) and logs it in: its access token.
pub async fn admin_token(
    clients: &[AuthServiceClient<Channel>],
    launch: &crate::server::Launch,
    run: &str,
) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let name = username(run, "admin", 0, 0);
    let mut child = tokio::process::Command::new(&launch.binary)
        .args(["user", "create", "--username", &name, "--email"])
        .arg(format!("{name}@bench.example"))
        .args(["--role", "admin", "--password-stdin"])
        .env("AUTHD_DATABASE_URL", &launch.database_url)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running authd user create")?;
    let mut stdin = child.stdin.take().context("stdin of authd user create")?;
    stdin.write_all(PASSWORD.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        anyhow::bail!(
            "authd user create: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let pairs = log_in(clients, &[name], 1).await?;
    pairs
        .into_iter()
        .next()
        .map(|pair| pair.access_token)
        .ok_or_else(|| anyhow!("the admin's login answered nothing"))
}

/// How many roles form one chain of the bench's role graph.
pub const ROLE_CHAIN: u32 = 4;

/// The role the token users hold: the top of the first chain.
pub fn held_role(roles: u32) -> String {
    bench_role(ROLE_CHAIN.min(roles).saturating_sub(1))
}

/// The permission CheckPermission asks for: the first of the chain's bottom role,
/// reached through every edge of the chain.
pub fn checked_permission() -> String {
    bench_permission(0, 0)
}

fn bench_role(i: u32) -> String {
    format!("bench-role-{i}")
}

fn bench_permission(role: u32, j: u32) -> String {
    format!("bench.r{role}.p{j}")
}

/// Defines `roles` roles with `permissions` among them (each role including the one
/// before it, in chains of [`ROLE_CHAIN`]) and grants the top of the first chain to
/// `user_ids`, through AdminService with an admin's `token`.
pub async fn define_roles(
    admin: &Admin,
    token: &str,
    roles: u32,
    permissions: u32,
    user_ids: &[String],
) -> anyhow::Result<()> {
    use authd::grpc::pb::{AssignRoleRequest, CreateRoleRequest};
    let per_role = permissions.div_ceil(roles.max(1));
    for i in 0..roles {
        let request = CreateRoleRequest {
            name: bench_role(i),
            description: "made by authd-bench".into(),
            includes: if i % ROLE_CHAIN == 0 {
                Vec::new()
            } else {
                vec![bench_role(i - 1)]
            },
            permissions: (0..per_role).map(|j| bench_permission(i, j)).collect(),
        };
        let mut admin = admin.clone();
        admin
            .create_role(with_bearer(request, token).map_err(|e| anyhow!(e))?)
            .await
            .map_err(|s| anyhow!("CreateRole: {s}"))?;
    }
    let held = held_role(roles);
    for user_id in user_ids {
        let request = AssignRoleRequest {
            user_id: user_id.clone(),
            role: held.clone(),
        };
        let mut admin = admin.clone();
        admin
            .assign_role(with_bearer(request, token).map_err(|e| anyhow!(e))?)
            .await
            .map_err(|s| anyhow!("AssignRole: {s}"))?;
    }
    Ok(())
}

/// AdminService over one of the bench's connections.
pub type Admin = authd::grpc::pb::admin_service_client::AdminServiceClient<Channel>;

/// A request carrying `authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, token: &str) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| "BAD_TOKEN".to_owned())?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
