//! TLS for the listeners (rustls with the ring provider, TLS 1.2 and 1.3): the
//! certificate and key of `AUTHD_TLS_CERT` / `AUTHD_TLS_KEY`, and with
//! `AUTHD_TLS_CLIENT_CA` client certificates required on the gRPC listener.
//!
//! The files are read again when they change (polled every [`POLL`], acted on once
//! two reads agree, so a pair caught half-written is not taken for a broken one)
//! and on demand ([`Certificates::reload`], which `SIGHUP` calls). A new pair
//! replaces the served one atomically: each handshake takes the configuration of the
//! moment, connections already open keep theirs. A pair that does not load keeps
//! the old one serving and is logged once, not at every poll.
//!
//! The handshake itself runs in each connection's task ([`TlsAcceptor::accept`]),
//! under the connection's header timeout, never in the accept loop.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    sign::{CertifiedKey, SingleCertAndKey},
    RootCertStore, ServerConfig,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are read to see whether they changed. A change
/// is acted on at the second read that sees it: within about twice this.
pub const POLL: Duration = Duration::from_secs(2);

/// The files TLS is served from (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// `AUTHD_TLS_CERT`: the certificate chain, the server's own first.
    pub cert: PathBuf,
    /// `AUTHD_TLS_KEY`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `AUTHD_TLS_CLIENT_CA`: the CAs client certificates must chain to on the gRPC
    /// listener; unset, no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

/// Who the client is by its certificate (mutual TLS): its SPIFFE ID (a
/// `spiffe://` URI SAN) if it has one, else its subject (`CN=…, O=…`). Requests
/// carry it in their extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(Arc<str>);

impl PeerIdentity {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity in a DER certificate; `None` if it does not parse.
    fn of(certificate: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
        let spiffe = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri)
                        if uri.starts_with("spiffe://") =>
                    {
                        Some((*uri).to_owned())
                    }
                    _ => None,
                })
            });
        let identity = spiffe.unwrap_or_else(|| parsed.subject().to_string());
        (!identity.is_empty()).then(|| PeerIdentity(identity.into()))
    }
}

/// Why a set of certificate files does not load: one line naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} ({}): {problem}", path.display())]
    File {
        setting: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "AUTHD_TLS_CERT and AUTHD_TLS_KEY: the private key ({}) does not belong to the certificate ({})",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    fn file(setting: &'static str, path: &Path, problem: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            setting,
            path: path.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// The served TLS configurations, one per listener, and what reloads them.
pub struct Certificates {
    files: TlsFiles,
    grpc: Arc<ArcSwap<ServerConfig>>,
    http: Arc<ArcSwap<ServerConfig>>,
    watch: Mutex<WatchState>,
}

/// What the poll has seen, by fingerprint of the files' contents (or of the error
/// reading them).
#[derive(Debug)]
struct WatchState {
    /// The contents being served.
    serving: [u8; 32],
    /// Contents seen at the last poll and not acted on yet.
    pending: Option<[u8; 32]>,
    /// Contents that did not load, already logged.
    broken: Option<[u8; 32]>,
}

/// The files' contents, as read at one moment.
struct Contents {
    cert: io::Result<Vec<u8>>,
    key: io::Result<Vec<u8>>,
    client_ca: Option<io::Result<Vec<u8>>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Contents {
        Contents {
            cert: std::fs::read(&files.cert),
            key: std::fs::read(&files.key),
            client_ca: files.client_ca.as_ref().map(std::fs::read),
        }
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let mut add = |part: &io::Result<Vec<u8>>| match part {
            Ok(bytes) => {
                hash.update([1]);
                hash.update((bytes.len() as u64).to_be_bytes());
                hash.update(bytes);
            }
            Err(err) => {
                hash.update([0]);
                hash.update(err.to_string());
            }
        };
        add(&self.cert);
        add(&self.key);
        if let Some(ca) = &self.client_ca {
            add(ca);
        }
        hash.finalize().into()
    }
}

/// The two configurations one set of files makes.
struct Configs {
    grpc: ServerConfig,
    http: ServerConfig,
}

impl Certificates {
    /// Reads and checks the files; an error is one line naming the setting at fault.
    pub fn load(files: TlsFiles) -> Result<Certificates, TlsError> {
        let contents = Contents::read(&files);
        let configs = build(&files, &contents)?;
        Ok(Certificates {
            grpc: Arc::new(ArcSwap::from_pointee(configs.grpc)),
            http: Arc::new(ArcSwap::from_pointee(configs.http)),
            watch: Mutex::new(WatchState {
                serving: contents.fingerprint(),
                pending: None,
                broken: None,
            }),
            files,
        })
    }

    /// The acceptor of the gRPC listener (ALPN `h2`; client certificates when
    /// `AUTHD_TLS_CLIENT_CA` is set).
    pub fn grpc(&self) -> TlsAcceptor {
        TlsAcceptor(self.grpc.clone())
    }

    /// The acceptor of the HTTP listener (ALPN `h2` and `http/1.1`).
    pub fn http(&self) -> TlsAcceptor {
        TlsAcceptor(self.http.clone())
    }

    /// Polls the files until `stop`, and reloads on `SIGHUP`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut every = tokio::time::interval(POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_received = std::future::pending::<Option<()>>();
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => self.check(false),
                _ = hangup_received => {
                    tracing::info!("SIGHUP: reading the TLS certificate files again");
                    self.check(true);
                }
            }
        }
    }

    /// Reads the files now and serves them if they load (what `SIGHUP` does).
    pub fn reload(&self) {
        self.check(true);
    }

    /// One look at the files. `now`: act on what is read at once (and log a
    /// failure again); otherwise a change is acted on when two polls agree, and a
    /// broken state is logged once.
    fn check(&self, now: bool) {
        let contents = Contents::read(&self.files);
        let fingerprint = contents.fingerprint();
        let mut state = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if fingerprint == state.serving && !now {
            state.pending = None;
            state.broken = None;
            return;
        }
        if !now && state.pending != Some(fingerprint) {
            state.pending = Some(fingerprint);
            return;
        }
        state.pending = None;
        if !now && state.broken == Some(fingerprint) {
            return;
        }
        match build(&self.files, &contents) {
            Ok(configs) => {
                self.grpc.store(Arc::new(configs.grpc));
                self.http.store(Arc::new(configs.http));
                state.serving = fingerprint;
                state.broken = None;
                metrics::counter!("authd_tls_reloads_total", "outcome" => "loaded").increment(1);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded; new connections use it");
            }
            Err(err) => {
                state.broken = Some(fingerprint);
                metrics::counter!("authd_tls_reloads_total", "outcome" => "failed").increment(1);
                tracing::error!(
                    error = %err,
                    "the new TLS certificate files do not load; still serving the previous certificate"
                );
            }
        }
    }
}

/// Accepts TLS on one listener's connections with the configuration of the moment.
#[derive(Clone)]
pub struct TlsAcceptor(Arc<ArcSwap<ServerConfig>>);

impl TlsAcceptor {
    /// The handshake; with a client certificate, the client's identity.
    pub(super) async fn accept(
        &self,
        stream: TcpStream,
    ) -> io::Result<(TlsStream<TcpStream>, Option<PeerIdentity>)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.0.load_full());
        let stream = acceptor.accept(stream).await?;
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(PeerIdentity::of);
        Ok((stream, identity))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configurations of both listeners from the files' contents.
fn build(files: &TlsFiles, contents: &Contents) -> Result<Configs, TlsError> {
    let provider = provider();
    let chain = certificates(&files.cert, &contents.cert, "AUTHD_TLS_CERT")?;
    let key = private_key(&files.key, &contents.key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        other => TlsError::file("AUTHD_TLS_KEY", &files.key, other),
    })?;
    let resolver = Arc::new(SingleCertAndKey::from(certified));
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    };
    let grpc = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(ca)) => {
            let setting = "AUTHD_TLS_CLIENT_CA";
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, ca, setting)? {
                roots
                    .add(certificate)
                    .map_err(|err| TlsError::file(setting, path, err))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| TlsError::file(setting, path, err))?;
            builder()?.with_client_cert_verifier(verifier)
        }
        _ => builder()?.with_no_client_auth(),
    };
    let mut grpc = grpc.with_cert_resolver(resolver.clone());
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    let mut http = builder()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Configs { grpc, http })
}

/// The certificates of a PEM file, at least one.
fn certificates(
    path: &Path,
    contents: &io::Result<Vec<u8>>,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = contents
        .as_ref()
        .map_err(|err| TlsError::file(setting, path, format!("cannot read: {err}")))?;
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::file(setting, path, format!("not PEM: {err}")))?;
    if chain.is_empty() {
        return Err(TlsError::file(setting, path, "no PEM certificate in it"));
    }
    Ok(chain)
}

/// The private key of a PEM file.
fn private_key(
    path: &Path,
    contents: &io::Result<Vec<u8>>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let setting = "AUTHD_TLS_KEY";
    let bytes = contents
        .as_ref()
        .map_err(|err| TlsError::file(setting, path, format!("cannot read: {err}")))?;
    PrivateKeyDer::from_pem_slice(bytes)
        .map_err(|err| TlsError::file(setting, path, format!("no PEM private key in it ({err})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spiffe_id_is_preferred_to_the_subject() {
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = |uri: Option<&str>| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "billing");
            if let Some(uri) = uri {
                params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("uri"))];
            }
            params.self_signed(&key).expect("certificate")
        };
        let identity = |certificate: &rcgen::Certificate| {
            PeerIdentity::of(certificate.der()).map(|i| i.as_str().to_owned())
        };
        assert_eq!(identity(&certificate(None)), Some("CN=billing".to_owned()));
        let spiffe = "spiffe://example.org/ns/prod/sa/billing";
        assert_eq!(
            identity(&certificate(Some(spiffe))),
            Some(spiffe.to_owned())
        );
        // Another URI SAN is not an identity: the subject is.
        assert_eq!(
            identity(&certificate(Some("https://example.org/"))),
            Some("CN=billing".to_owned())
        );
    }
}
