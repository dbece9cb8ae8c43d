//! Calling authd from Rust with tonic: register (an account that already exists is
//! fine), log in, validate the access token, check roles, refresh, and log out.
//!
//! ```sh
//! cargo run --example rust_client -- --addr http://127.0.0.1:50051
//! ```
//!
//! The client types are generated from `proto/auth/v1/*.proto`; this example takes them
//! from the `authd` library (`authd::grpc::pb`). In your own crate, compile the same
//! proto files with `tonic-prost-build` in a `build.rs` and use the `auth.v1` module it
//! generates: the calls below stay the same.

use anyhow::Context;
use authd::grpc::pb::{self, auth_service_client::AuthServiceClient};
use clap::Parser;
use tonic::Code;

/// A walk through AuthService against a running authd.
#[derive(Parser)]
struct Args {
    /// authd's gRPC address.
    #[arg(long, env = "AUTHD_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The account to register (if new) and log in with.
    #[arg(long, default_value = "rust-example")]
    username: String,
    /// Its password (8 to 128 characters).
    #[arg(
        long,
        env = "AUTHD_EXAMPLE_PASSWORD",
        default_value = "example password 1"
    )]
    password: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut auth = AuthServiceClient::connect(args.addr.clone())
        .await
        .with_context(|| format!("cannot connect to authd at {}", args.addr))?;

    let registered = auth
        .register(pb::RegisterRequest {
            username: args.username.clone(),
            email: format!("{}@example.com", args.username),
            password: args.password.clone(),
            full_name: "Rust Example".into(),
        })
        .await;
    match registered {
        Ok(response) => {
            let user = response.into_inner().user.unwrap_or_default();
            println!("Register: created {} (id {})", user.username, user.id);
        }
        Err(status) if status.code() == Code::AlreadyExists => {
            println!("Register: {} already exists; logging in", args.username);
        }
        Err(status) => return Err(status).context("Register"),
    }

    let login = auth
        .login(pb::LoginRequest {
            username: args.username.clone(),
            password: args.password.clone(),
        })
        .await
        .context("Login")?
        .into_inner();
    let tokens = login.tokens.context("Login answered without tokens")?;
    println!(
        "Login: {} access token, expires in {} s",
        tokens.token_type, tokens.expires_in
    );

    let me = validate(&mut auth, &tokens.access_token)
        .await
        .context("ValidateToken")?;
    println!(
        "ValidateToken: user {} (id {}), roles {:?}, session {}",
        me.username, me.user_id, me.roles, me.session_id
    );

    for role in ["user", "admin"] {
        let check = auth
            .check_role(pb::CheckRoleRequest {
                token: tokens.access_token.clone(),
                role: role.into(),
            })
            .await
            .with_context(|| format!("CheckRole {role}"))?
            .into_inner();
        println!("CheckRole {role}: allowed = {}", check.allowed);
    }

    // Refresh spends the refresh token: keep only the new pair.
    let tokens = auth
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token,
        })
        .await
        .context("Refresh")?
        .into_inner()
        .tokens
        .context("Refresh answered without tokens")?;
    println!("Refresh: new pair, expires in {} s", tokens.expires_in);

    auth.logout(pb::LogoutRequest {
        refresh_token: tokens.refresh_token,
    })
    .await
    .context("Logout")?;
    match validate(&mut auth, &tokens.access_token).await {
        Err(status) if status.code() == Code::Unauthenticated => {
            println!(
                "Logout: done; the access token is now refused ({})",
                status.message()
            );
            Ok(())
        }
        other => anyhow::bail!("after Logout, ValidateToken answered {other:?}"),
    }
}

async fn validate(
    auth: &mut AuthServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Result<pb::ValidateTokenResponse, tonic::Status> {
    auth.validate_token(pb::ValidateTokenRequest {
        token: token.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}
