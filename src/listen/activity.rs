//! What a connection is doing, as its watchdog needs to know it: how many requests
//! (HTTP/2 streams) are open, since when none has been, and whether the client has
//! begun speaking HTTP at all. A tower layer keeps the count: a request is open from
//! the moment it reaches the service until its response body is dropped, so a
//! half-sent call (headers, no end) counts as open for as long as it waits.
//!
//! Per request it costs two atomic updates and a clock read: it sits on the hot path.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tonic::transport::server::TcpConnectInfo;
use tower::Service;

use super::tls::PeerIdentity;

/// One connection's activity, shared by its watchdog, its IO and its requests.
#[derive(Debug)]
pub(super) struct Activity {
    started: Instant,
    open: AtomicUsize,
    /// When the last request ended, in milliseconds since `started`; before the
    /// first, the connection's start counts.
    last_end_ms: AtomicU64,
    /// The HTTP/2 preface and SETTINGS arrived, or a first request did.
    begun: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            open: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            begun: AtomicBool::new(false),
        })
    }

    pub(super) fn started(&self) -> Instant {
        self.started
    }

    pub(super) fn begin(&self) {
        self.begun.store(true, Ordering::Relaxed);
    }

    pub(super) fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Relaxed)
    }

    fn request_started(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.begin();
        OpenRequest(self.clone())
    }

    /// Resolves once the connection has had no open request for `period`.
    pub(super) async fn idle_for(&self, period: Duration) {
        loop {
            // The end time is written before the count drops (see `OpenRequest`), so
            // a count of zero is never read with an older end time.
            let deadline = if self.open.load(Ordering::Acquire) > 0 {
                Instant::now() + period
            } else {
                let ended = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
                self.started + ended + period
            };
            if Instant::now() >= deadline && self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Held while a request is open; dropping it ends the request.
#[derive(Debug)]
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_end_ms.store(ms, Ordering::Release);
        activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The per-connection service: counts open requests and hands each request the
/// connection's addresses, as tonic's server does, so `Request::remote_addr` works,
/// and the client's certificate identity when it showed one ([`PeerIdentity`]).
#[derive(Clone, Debug)]
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    info: TcpConnectInfo,
    identity: Option<PeerIdentity>,
}

impl<S> Tracked<S> {
    pub(super) fn new(
        inner: S,
        activity: Arc<Activity>,
        info: TcpConnectInfo,
        identity: Option<PeerIdentity>,
    ) -> Self {
        Tracked {
            inner,
            activity,
            info,
            identity,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Tracked<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Body + Unpin,
{
    type Response = http::Response<TrackedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        request.extensions_mut().insert(self.info.clone());
        if let Some(identity) = &self.identity {
            request.extensions_mut().insert(identity.clone());
        }
        let open = self.activity.request_started();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _open: open,
            }))
        })
    }
}

/// A response body that keeps its request open until it is dropped (sent, or the
/// stream reset).
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    inner: B,
    _open: OpenRequest,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn idle_counts_from_the_last_request_and_not_while_one_is_open() {
        let activity = Activity::new();
        let started = Instant::now();
        let open = activity.request_started();
        tokio::time::sleep(300 * MS).await;
        drop(open);
        activity.idle_for(100 * MS).await;
        let idle = started.elapsed();
        assert!(idle >= 400 * MS && idle < 2000 * MS, "{idle:?}");
        assert!(activity.has_begun());
    }

    #[tokio::test]
    async fn a_connection_without_requests_is_idle_from_its_start() {
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle_for(100 * MS).await;
        let idle = started.elapsed();
        assert!(idle >= 100 * MS && idle < 2000 * MS, "{idle:?}");
        assert!(!activity.has_begun());
    }
}
