//! The Verifier's two figures (BENCHMARKS.md), against running authd servers:
//!
//! - `checks`: in-process checks per second on one core for a cached token (a
//!   current-thread runtime calling `Verifier::verify` in a loop);
//! - `logout`: the time from `Logout` on one replica to the first refusal by a
//!   Verifier that follows another replica, over `--runs` runs (p50/p90/p99/max).
//!
//! ```sh
//! cargo bench -p authd-client --bench verifier -- checks \
//!     --authd http://127.0.0.1:50051 --jwks http://127.0.0.1:9090/.well-known/jwks.json
//! cargo bench -p authd-client --bench verifier -- logout --runs 200 \
//!     --authd http://127.0.0.1:50051 --jwks http://127.0.0.1:9090/.well-known/jwks.json \
//!     --other http://127.0.0.1:50052
//! ```
//!
//! It registers (or reuses) the account `bench-verifier` with a fixed password.

use std::time::{Duration, Instant};

use authd_client::{
    pb::{auth_service_client::AuthServiceClient, LoginRequest, LogoutRequest, RegisterRequest},
    Refusal, Verifier,
};
use tonic::transport::Channel;

const USER: &str = "bench-verifier";
const PASSWORD: &str = "bench-verifier-password";

struct Args {
    mode: String,
    authd: String,
    jwks: String,
    other: Option<String>,
    runs: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut args = Args {
        mode: String::new(),
        authd: "http://127.0.0.1:50051".into(),
        jwks: "http://127.0.0.1:9090/.well-known/jwks.json".into(),
        other: None,
        runs: 100,
        seconds: 10,
    };
    let mut given = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = given.next() {
        let mut value = || given.next().unwrap_or_default();
        match arg.as_str() {
            "--authd" => args.authd = value(),
            "--jwks" => args.jwks = value(),
            "--other" => args.other = Some(value()),
            "--runs" => args.runs = value().parse().unwrap_or(100),
            "--seconds" => args.seconds = value().parse().unwrap_or(10),
            mode => args.mode = mode.to_owned(),
        }
    }
    args
}

async fn client(addr: &str) -> AuthServiceClient<Channel> {
    let channel = Channel::from_shared(addr.to_owned())
        .unwrap_or_else(|_| panic!("{addr}: not a URI"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"));
    AuthServiceClient::new(channel)
}

/// An access and refresh token of the bench account.
async fn login(authd: &mut AuthServiceClient<Channel>) -> (String, String) {
    let _ = authd
        .register(RegisterRequest {
            username: USER.into(),
            email: format!("{USER}@example.com"),
            password: PASSWORD.into(),
            full_name: String::new(),
        })
        .await;
    let tokens = authd
        .login(LoginRequest {
            username: USER.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("login: {status:?}"))
        .into_inner()
        .tokens
        .unwrap_or_default();
    (tokens.access_token, tokens.refresh_token)
}

async fn verifier(args: &Args, authd: &str) -> Verifier {
    let verifier = Verifier::builder(authd)
        .jwks_url(&args.jwks)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("verifier: {e}"));
    while !verifier.is_following() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    verifier
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    match args.mode.as_str() {
        "checks" => runtime.block_on(checks(&args)),
        "logout" => runtime.block_on(logout(&args)),
        other => eprintln!("verifier bench: say `checks` or `logout`, not {other:?}"),
    }
}

async fn checks(args: &Args) {
    let mut authd = client(&args.authd).await;
    let verifier = verifier(args, &args.authd).await;
    let (token, _) = login(&mut authd).await;
    // The first checks may ask authd (a token issued right after the stream began).
    for _ in 0..100 {
        verifier
            .verify(&token)
            .await
            .unwrap_or_else(|r| panic!("{r}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut checks: u64 = 0;
    while Instant::now() < until {
        for _ in 0..10_000 {
            if verifier.verify(&token).await.is_err() {
                panic!("the cached token was refused");
            }
        }
        checks += 10_000;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "cached-token checks: {checks} in {secs:.2} s on one thread = {:.0} checks/s",
        checks as f64 / secs
    );
}

async fn logout(args: &Args) {
    let Some(other) = &args.other else {
        eprintln!("logout needs --other: the replica the Verifier follows");
        return;
    };
    let mut authd = client(&args.authd).await;
    let verifier = verifier(args, other).await;
    let mut took = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let (access, refresh) = login(&mut authd).await;
        // Seen once (authd may be asked: issued moments after the stream began).
        verifier
            .verify(&access)
            .await
            .unwrap_or_else(|r| panic!("{r}"));
        let started = Instant::now();
        authd
            .logout(LogoutRequest {
                refresh_token: refresh,
            })
            .await
            .unwrap_or_else(|status| panic!("logout: {status:?}"));
        loop {
            match verifier.verify(&access).await {
                Err(Refusal::Invalid) => break,
                Err(other) => panic!("{other}"),
                Ok(_) => tokio::task::yield_now().await,
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!("not refused within 30 s");
            }
        }
        took.push(started.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    println!(
        "logout → refusal on the other replica, {} runs: p50 {:?} p90 {:?} p99 {:?} max {:?}",
        took.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        took[took.len() - 1]
    );
}
