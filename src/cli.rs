//! The subcommands. Errors here are `anyhow` and end as one line on stderr with a
//! non-zero exit (see `main`).

use std::{io::Read, process::ExitCode};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    clock::Clock,
    config::{
        self, ApiKeyCommand, ApiKeyCreateArgs, Command, DatabaseArgs, HashArgs, HealthArgs,
        KeysCommand, KeysRewrapArgs, ServeConfig, UserCommand, UserCreateArgs, UserListArgs,
        UserNameArgs, UserSetPasswordArgs,
    },
    domain::Domain,
    domain::{
        accounts::Registration, admin::AdminCaller, api_keys::NewKey, caller::Caller,
        sealing::KeyEncryptionKey, secrets::Password, signing_keys, totp,
    },
    server,
    store::Store,
};

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(config) => serve(*config).await,
        Command::Migrate(database) => {
            let (store, kek) = open(&database).await?;
            signing_keys::seal_at_rest(&store, kek.as_ref()).await?;
            totp::seal_at_rest(&store, kek.as_ref()).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command: UserCommand::Create(args),
        } => create_user(args).await,
        Command::User {
            command: UserCommand::SetPassword(args),
        } => set_password(args).await,
        Command::User {
            command: UserCommand::List(args),
        } => list_users(args).await,
        Command::User {
            command: UserCommand::Deactivate(args),
        } => set_active(args, false).await,
        Command::User {
            command: UserCommand::Activate(args),
        } => set_active(args, true).await,
        Command::Keys {
            command: KeysCommand::Rotate(args),
        } => {
            let (store, kek) = open(&args.database).await?;
            let clock = Clock::system();
            signing_keys::ensure_active(&store, kek.as_ref(), clock.now_ms()).await?;
            let delay = args.activate_in.unwrap_or_default();
            let kid = signing_keys::rotate(&store, kek.as_ref(), clock.now_ms(), delay).await?;
            match args.activate_in {
                None => println!("new active signing key: {kid}"),
                Some(delay) => println!(
                    "new signing key {kid}: published now, signs in {}",
                    humantime::format_duration(delay)
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::Revoke(args),
        } => {
            let (store, kek) = open(&args.database).await?;
            signing_keys::seal_at_rest(&store, kek.as_ref()).await?;
            signing_keys::revoke(&store, &args.kid, Clock::system().now_ms()).await?;
            println!("revoked signing key {}", args.kid);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::Rewrap(args),
        } => rewrap(args).await,
        Command::Apikey {
            command: ApiKeyCommand::Create(args),
        } => create_api_key(args).await,
        Command::Health(args) => health(args).await,
    }
}

/// The store, and the key encryption key its secrets are sealed with (checked
/// before the database is touched).
async fn open(database: &DatabaseArgs) -> anyhow::Result<(Store, Option<KeyEncryptionKey>)> {
    let kek = database.key_encryption.load()?;
    let store = Store::open(&database.settings())
        .await
        .map_err(|e| anyhow::anyhow!("AUTHD_DATABASE_URL: {e}"))?;
    Ok((store, kek))
}

/// `keys rewrap`: every private key from the current key encryption key (or the
/// clear) to the one in `--new-key-file`.
async fn rewrap(args: KeysRewrapArgs) -> anyhow::Result<ExitCode> {
    let new = config::read_key_file(&args.new_key_file)
        .with_context(|| format!("--new-key-file ({})", args.new_key_file.display()))?;
    let (store, current) = open(&args.database).await?;
    let rewrapped = signing_keys::rewrap(&store, current.as_ref(), &new).await?;
    let secrets = totp::rewrap(&store, current.as_ref(), &new).await?;
    println!(
        "{rewrapped} private signing key(s) and {secrets} TOTP secret(s) now encrypted with key {}; restart every replica with it",
        new.id()
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: ServeConfig) -> anyhow::Result<ExitCode> {
    config.check().map_err(anyhow::Error::msg)?;
    let grpc = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("AUTHD_LISTEN: cannot listen on {}", config.listen))?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("AUTHD_HTTP_LISTEN: cannot listen on {}", config.http_listen))?;
    tracing::info!(grpc = %config.listen, http = %config.http_listen, "listening");
    server::run(config, grpc, http, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The password on standard input (at most 4 KiB; one trailing newline dropped).
fn read_password_stdin() -> anyhow::Result<Password> {
    let mut password = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password).to_owned();
    Ok(Password::new(password))
}

/// The domain over the database, as `serve` builds it (migrating first), for the
/// subcommands that act as an operator at the shell.
async fn domain(database: DatabaseArgs, hashing: Option<HashArgs>) -> anyhow::Result<Domain> {
    let mut config = ServeConfig::from_defaults(&database.database_url);
    config.database = database;
    if let Some(hashing) = hashing {
        config.hashing = hashing;
    }
    server::build(&config, Clock::system()).await
}

async fn create_user(args: UserCreateArgs) -> anyhow::Result<ExitCode> {
    let password = read_password_stdin()?;
    let domain = domain(args.database, Some(args.hashing)).await?;
    let registration = Registration {
        username: args.username,
        email: args.email,
        password,
        full_name: args.full_name,
        roles: args.roles,
    };
    let user = domain
        .accounts
        .register(&Caller::cli(), registration)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("created user {} ({})", user.username, user.id);
    Ok(ExitCode::SUCCESS)
}

async fn set_password(args: UserSetPasswordArgs) -> anyhow::Result<ExitCode> {
    let password = read_password_stdin()?;
    let domain = domain(args.database, Some(args.hashing)).await?;
    let ended = domain
        .accounts
        .set_password(&Caller::cli(), &args.username, password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "password set for {}; {ended} session(s) ended",
        args.username
    );
    Ok(ExitCode::SUCCESS)
}

async fn list_users(args: UserListArgs) -> anyhow::Result<ExitCode> {
    let domain = domain(args.database, None).await?;
    println!("id\tusername\temail\tactive\troles");
    let mut page_token = String::new();
    loop {
        let page = domain
            .admin
            .list_users(&Default::default(), 500, &page_token)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for user in page.items {
            println!(
                "{}\t{}\t{}\t{}\t{}",
                user.id,
                user.username,
                user.email,
                user.active,
                user.roles.join(",")
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_active(args: UserNameArgs, active: bool) -> anyhow::Result<ExitCode> {
    let domain = domain(args.database, None).await?;
    let fail = |e: crate::domain::DomainError| anyhow::anyhow!("{e}");
    let user = domain
        .admin
        .get_user("", &args.username)
        .await
        .map_err(|e| match e {
            crate::domain::DomainError::NotFound(_) => {
                anyhow::anyhow!("no user is named {}", args.username)
            }
            other => fail(other),
        })?;
    let user = domain
        .admin
        .set_user_active(&AdminCaller::cli(), &user.id, active)
        .await
        .map_err(fail)?;
    let state = if active { "activated" } else { "deactivated" };
    println!("{state} user {} ({})", user.username, user.id);
    Ok(ExitCode::SUCCESS)
}

async fn create_api_key(args: ApiKeyCreateArgs) -> anyhow::Result<ExitCode> {
    let mut config = ServeConfig::from_defaults(&args.database.database_url);
    config.database = args.database;
    let domain = server::build(&config, Clock::system()).await?;
    let ttl_seconds = args.ttl.map_or(0, |ttl| ttl.as_secs().max(1) as i64);
    let new = NewKey {
        name: &args.name,
        roles: args.roles,
        ttl_seconds,
    };
    let issued = domain
        .api_keys
        .create(&AdminCaller::cli(), new)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "created API key {} ({}); the secret below is shown only once",
        issued.key.name, issued.key.id
    );
    println!("{}", issued.secret.expose());
    Ok(ExitCode::SUCCESS)
}

/// A listen address as an address to connect to: 0.0.0.0 and [::] mean this machine.
fn local_target(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sock) if sock.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if sock.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(loopback, sock.port()).to_string()
        }
        _ => addr.to_owned(),
    }
}

async fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let endpoint = health_endpoint(&args)?;
    let check = async {
        let channel = endpoint.connect().await?;
        let mut client = HealthClient::new(channel);
        let response = client
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await?;
        anyhow::Ok(response.into_inner().status())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), check).await {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("SERVING");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(status)) => {
            println!("{}", status.as_str_name());
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(err)) => {
            println!("unreachable: {err}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            println!("unreachable: no answer within 3 s");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The endpoint `authd health` calls: plaintext, or TLS trusting `--tls-ca` (with
/// a client certificate for mutual TLS). A file that cannot be read is an error
/// naming its flag.
fn health_endpoint(args: &HealthArgs) -> anyhow::Result<tonic::transport::Endpoint> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("{flag} ({}): cannot read", path.display()))
    };
    let target = local_target(&args.addr);
    let Some(ca) = &args.tls_ca else {
        return Endpoint::from_shared(format!("http://{target}"))
            .with_context(|| format!("--addr {}", args.addr));
    };
    let endpoint = Endpoint::from_shared(format!("https://{target}"))
        .with_context(|| format!("--addr {}", args.addr))?;
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        ));
    }
    if let Some(name) = &args.tls_server_name {
        tls = tls.domain_name(name);
    }
    endpoint.tls_config(tls).context("--tls-ca")
}
