//! A local OpenID Connect provider for the sign-in tests: its discovery document
//! and JWK Set over loopback HTTP (axum on `127.0.0.1:0`), ID tokens signed with
//! its own RSA keys, and a count of the requests it served. The test decides which
//! keys it publishes, the `Cache-Control` it answers with, and when it is down.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc, LazyLock, Mutex,
};

use axum::{extract::State, http::StatusCode, response::Response, routing::get, Router};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts, RsaPrivateKey};
use serde_json::{json, Value};

/// The audience (the app's client id) the test providers issue tokens for.
pub const AUDIENCE: &str = "authd-test-client";

/// An RSA signing key of the provider, with the kid it publishes it under.
pub struct ProviderKey {
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

/// The keys, made once per test run (2048-bit RSA, what ring verifies): 0 and 1
/// are the provider's (1 for rotations), 2 is nobody's (for forged signatures).
static KEYS: LazyLock<Vec<ProviderKey>> = LazyLock::new(|| {
    ["key-1", "key-2", "forger"]
        .into_iter()
        .map(|kid| {
            let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
            let der = private.to_pkcs1_der().expect("PKCS#1 DER");
            let b64 = |bytes: Vec<u8>| URL_SAFE_NO_PAD.encode(bytes);
            ProviderKey {
                kid: kid.to_owned(),
                encoding: EncodingKey::from_rsa_der(der.as_bytes()),
                jwk: json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": b64(private.n().to_bytes_be()),
                    "e": b64(private.e().to_bytes_be()),
                }),
            }
        })
        .collect()
});

pub const KEY_1: usize = 0;
pub const KEY_2: usize = 1;
pub const FORGER: usize = 2;

/// The key numbered `index` (see [`KEYS`]).
pub fn key(index: usize) -> &'static ProviderKey {
    &KEYS[index]
}

#[derive(Default)]
struct Served {
    published: Mutex<Vec<usize>>,
    cache_control: Mutex<Option<String>>,
    down: AtomicBool,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
    issuer: Mutex<String>,
}

/// The provider, serving until dropped.
pub struct TestProvider {
    /// `http://127.0.0.1:PORT`: its issuer, and where its documents are.
    pub issuer: String,
    served: Arc<Served>,
    server: tokio::task::JoinHandle<()>,
}

impl TestProvider {
    /// Serving its discovery document and a JWK Set of key 1, with no
    /// `Cache-Control`.
    pub async fn start() -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the provider");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let served = Arc::new(Served::default());
        *served.published.lock().expect("lock") = vec![KEY_1];
        *served.issuer.lock().expect("lock") = issuer.clone();
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(served.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TestProvider {
            issuer,
            served,
            server,
        }
    }

    /// An issuer where nothing listens (a provider that is down from the start).
    pub fn unreachable_issuer() -> String {
        format!("http://127.0.0.1:{}", crate::helpers::free_port())
    }

    /// Publishes exactly these keys from now on.
    pub fn publish(&self, keys: &[usize]) {
        *self.served.published.lock().expect("lock") = keys.to_vec();
    }

    /// The JWK Set's `Cache-Control` from now on.
    pub fn cache_control(&self, value: &str) {
        *self.served.cache_control.lock().expect("lock") = Some(value.to_owned());
    }

    /// Down (every request answers 503) or up again.
    pub fn set_down(&self, down: bool) {
        self.served.down.store(down, Ordering::SeqCst);
    }

    pub fn jwks_requests(&self) -> usize {
        self.served.jwks_requests.load(Ordering::SeqCst)
    }

    pub fn discovery_requests(&self) -> usize {
        self.served.discovery_requests.load(Ordering::SeqCst)
    }

    /// The claims of a good ID token for `sub` at `now_ms` (the server's clock),
    /// valid five minutes.
    pub fn claims(&self, now_ms: i64, sub: &str) -> Value {
        let now = now_ms / 1000;
        json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": sub,
            "iat": now, "exp": now + 300,
        })
    }

    /// `claims` signed RS256 with key 1.
    pub fn token(&self, claims: &Value) -> String {
        sign(KEY_1, Some(&key(KEY_1).kid), claims)
    }
}

/// `claims` signed RS256 with key `index`, its header naming `kid`.
pub fn sign(index: usize, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key(index).encoding).expect("sign")
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(served: &Served, body: Value, cache_control: Option<String>) -> Response {
    if served.down.load(Ordering::SeqCst) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body("down".into())
            .expect("response");
    }
    let mut response = Response::builder().header("content-type", "application/json");
    if let Some(value) = cache_control {
        response = response.header("cache-control", value);
    }
    response.body(body.to_string().into()).expect("response")
}

async fn discovery(State(served): State<Arc<Served>>) -> Response {
    served.discovery_requests.fetch_add(1, Ordering::SeqCst);
    let issuer = served.issuer.lock().expect("lock").clone();
    let document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    answer(&served, document, None)
}

async fn jwks(State(served): State<Arc<Served>>) -> Response {
    served.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = served
        .published
        .lock()
        .expect("lock")
        .iter()
        .map(|&index| key(index).jwk.clone())
        .collect();
    let cache_control = served.cache_control.lock().expect("lock").clone();
    answer(&served, json!({ "keys": keys }), cache_control)
}
