//! Accepting and serving connections, within bounds a hostile client cannot lift:
//! at most `max_connections` at once (those past it are closed at accept), a
//! connection that has not begun speaking HTTP within `header_timeout` is closed,
//! and one without an open request for `idle_timeout` is shut down gracefully
//! (HTTP/2: GOAWAY, then close). Both listeners, gRPC and HTTP, are served here;
//! each brings its own hyper builder (protocol settings) and service, and may bring
//! TLS ([`tls`]): the handshake is part of the connection's start, so it too must
//! end within `header_timeout`, and it runs in the connection's task.
//!
//! tonic's server has no idle or preface timeout and no connection limit, so the
//! gRPC router is served by hyper directly, the way tonic does it inside.
//! Nothing here knows what the services do.

mod activity;
pub mod grpc_timeout;
mod preface;
pub mod tls;

use std::{convert::Infallible, future::Future, pin::pin, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected as _;
use tower::Service;

use self::{
    activity::{Activity, Tracked},
    preface::PrefaceWatch,
    tls::{PeerIdentity, TlsAcceptor},
};

/// How long a connection told to close (idle, or the server draining) may stay
/// open without a request before it is dropped: a peer that ignores GOAWAY, or
/// never answers the PING that confirms it, must not keep it open.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// How long to wait after a failed accept (say, out of file descriptors) before the
/// next, so the loop neither spins nor floods the log.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds of one listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: u32,
    /// A connection with no open request for this long is closed.
    pub idle_timeout: Duration,
    /// A new connection must finish the HTTP/2 preface, or deliver its first
    /// HTTP/1 request's headers, within this long.
    pub header_timeout: Duration,
}

/// Serves `service` on every connection `listener` accepts (over TLS when `tls` is
/// given), until `shutdown` resolves; then stops accepting (closing the listening socket), asks every
/// connection to finish its in-flight requests and close, and waits for them.
pub async fn serve<S, B>(
    name: &'static str,
    listener: TcpListener,
    connections: auto::Builder<TokioExecutor>,
    service: S,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let connections = Arc::new(connections);
    let draining = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(listener = name, error = %err, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("authd_connections_refused_total", "listener" => name).increment(1);
            tracing::debug!(listener = name, %peer, "connection limit reached; closing at accept");
            continue; // Dropping the stream closes it.
        };
        let (connections, service, draining, tls) = (
            connections.clone(),
            service.clone(),
            draining.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let conn = Connection {
                name,
                connections: &connections,
                limits,
                draining: &draining,
            };
            conn.start(stream, service, tls).await;
            drop(permit);
        });
    }
    drop(listener);
    draining.cancel();
    // Every connection holds a permit until it ends.
    let _ = permits.acquire_many(limits.max_connections).await;
}

/// What serving one connection needs from its listener.
struct Connection<'a> {
    name: &'static str,
    connections: &'a auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    draining: &'a CancellationToken,
}

impl Connection<'_> {
    /// Serves one accepted connection to its end: the TLS handshake first, if any,
    /// within the header timeout.
    async fn start<S, B>(self, stream: TcpStream, service: S, tls: Option<TlsAcceptor>)
    where
        S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Small replies must not wait for Nagle and a delayed ACK (a 40 ms tail).
        let _ = stream.set_nodelay(true);
        let info = stream.connect_info();
        let activity = Activity::new();
        let Some(tls) = tls else {
            return self.serve(stream, service, info, None, activity).await;
        };
        let deadline = activity.started() + self.limits.header_timeout;
        let handshake = tokio::select! {
            handshake = tokio::time::timeout_at(deadline, tls.accept(stream)) => handshake,
            () = self.draining.cancelled() => return,
        };
        match handshake {
            Ok(Ok((stream, identity))) => {
                self.serve(stream, service, info, identity, activity).await
            }
            Ok(Err(err)) => {
                metrics::counter!("authd_tls_handshake_failures_total", "listener" => self.name)
                    .increment(1);
                tracing::debug!(listener = self.name, peer = ?info.remote_addr(), error = %err, "TLS handshake failed");
            }
            Err(_) => {
                metrics::counter!("authd_tls_handshake_failures_total", "listener" => self.name)
                    .increment(1);
                tracing::debug!(listener = self.name, "no TLS handshake in time; closing");
            }
        }
    }

    /// Serves HTTP on an established connection to its end, closing it when it
    /// breaks a bound.
    async fn serve<IO, S, B>(
        self,
        io: IO,
        service: S,
        info: tonic::transport::server::TcpConnectInfo,
        identity: Option<PeerIdentity>,
        activity: Arc<Activity>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (name, limits) = (self.name, self.limits);
        let io = TokioIo::new(PrefaceWatch::new(io, activity.clone()));
        let service =
            TowerToHyperService::new(Tracked::new(service, activity.clone(), info, identity));
        let mut connection = pin!(self.connections.serve_connection(io, service));
        let mut closing = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(listener = name, error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = not_begun_within(&activity, limits.header_timeout), if !closing => {
                    // Nothing was served: there is nothing to shut down gracefully.
                    tracing::debug!(listener = name, "no HTTP/2 preface or request in time; closing");
                    return;
                }
                () = activity.idle_for(limits.idle_timeout), if !closing => {
                    tracing::debug!(listener = name, "connection idle; closing");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = self.draining.cancelled(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = activity.idle_for(GOAWAY_GRACE), if closing => return,
            }
        }
    }
}

/// Resolves if the connection has not begun speaking HTTP `within` its start;
/// otherwise never.
async fn not_begun_within(activity: &Activity, within: Duration) {
    tokio::time::sleep_until(activity.started() + within).await;
    if activity.has_begun() {
        std::future::pending::<()>().await;
    }
}
