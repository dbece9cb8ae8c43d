//! One unary method served with a codec of its own, ahead of a service's router.
//!
//! A generated router decodes every request into, and encodes every reply from, the
//! generated owned messages. On the hot path that copying is most of the cost of a
//! large message (a reply listing forty permissions, Envoy's request with a dozen
//! headers), so the two methods where it shows are answered by a [`UnaryRoute`]
//! with a codec that reads or writes only what authd needs, borrowing the rest.
//! Every other path goes on to `inner` unchanged; the route is invisible to clients,
//! which see the same method, messages and status codes.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{
    body::Body,
    codec::Codec,
    server::{Grpc, NamedService, UnaryService},
};
use tower::Service;

use super::MAX_MESSAGE_BYTES;

/// `method` at `path` with `codec`; anything else to `inner`.
#[derive(Clone)]
pub struct UnaryRoute<M, C, S> {
    path: &'static str,
    method: M,
    codec: C,
    inner: S,
}

impl<M, C, S> UnaryRoute<M, C, S> {
    pub fn new(path: &'static str, method: M, codec: C, inner: S) -> Self {
        UnaryRoute {
            path,
            method,
            codec,
            inner,
        }
    }
}

impl<M, C, S: NamedService> NamedService for UnaryRoute<M, C, S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// What a routed method's [`UnaryService`] answers with.
pub type MethodFuture<T> =
    Pin<Box<dyn Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send>>;

impl<M, C, S, B> Service<http::Request<B>> for UnaryRoute<M, C, S>
where
    C: Codec + Clone + Send + 'static,
    M: UnaryService<C::Decode, Response = C::Encode> + Clone + Send + 'static,
    M::Future: Send,
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != self.path {
            return Box::pin(self.inner.call(request));
        }
        let method = self.method.clone();
        let mut grpc = Grpc::new(self.codec.clone())
            .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), None);
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}

/// The rest of a service that has no methods besides those its routes answer: any
/// other path is `UNIMPLEMENTED`, as a generated router would answer it.
pub struct NoOtherMethods<N> {
    _name: std::marker::PhantomData<fn() -> N>,
}

impl<N> NoOtherMethods<N> {
    pub fn new() -> Self {
        NoOtherMethods {
            _name: std::marker::PhantomData,
        }
    }
}

impl<N> Clone for NoOtherMethods<N> {
    fn clone(&self) -> Self {
        NoOtherMethods::new()
    }
}

/// A service's full name, for [`NoOtherMethods`].
pub trait ServiceName: Send + 'static {
    const NAME: &'static str;
}

impl<N: ServiceName> NamedService for NoOtherMethods<N> {
    const NAME: &'static str = N::NAME;
}

impl<N, B> Service<http::Request<B>> for NoOtherMethods<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let status = tonic::Status::unimplemented(format!("no method {}", request.uri().path()));
        std::future::ready(Ok(status.into_http()))
    }
}

#[cfg(test)]
mod tests {
    use tower::Service;

    use super::{NoOtherMethods, ServiceName};

    struct Example;
    impl ServiceName for Example {
        const NAME: &'static str = "example.v1.Example";
    }

    #[tokio::test]
    async fn any_other_method_is_unimplemented() {
        let request = http::Request::builder()
            .uri("/example.v1.Example/Missing")
            .body(())
            .expect("a request");
        let response = NoOtherMethods::<Example>::new()
            .call(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("/example.v1.Example/Missing"));
    }
}
