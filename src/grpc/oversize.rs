//! A request message over the receive limit is RESOURCE_EXHAUSTED in gRPC (and in OPA-Envoy);
//! tonic answers OUT_OF_RANGE. [`ResourceExhausted`] wraps a tonic service and rewrites that one
//! answer, keeping its message.

use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use futures_util::future::Map;
use http::HeaderValue;

/// tonic's message for a request over `max_decoding_message_size`, as sent (percent-encoded).
const DECODED_TOO_LARGE: &[&str] = &[
    "decoded message length too large",
    "decoded%20message%20length%20too%20large",
];

/// A tonic service whose over-the-limit answers say RESOURCE_EXHAUSTED.
#[derive(Debug, Clone)]
pub struct ResourceExhausted<S>(pub S);

impl<S, B, R> tower_service::Service<http::Request<B>> for ResourceExhausted<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    #[allow(clippy::type_complexity)]
    type Future = Map<
        S::Future,
        fn(Result<http::Response<R>, S::Error>) -> Result<http::Response<R>, S::Error>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.0.call(req).map(rewrite::<R, S::Error>)
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ResourceExhausted<S> {
    const NAME: &'static str = S::NAME;
}

fn rewrite<R, E>(result: Result<http::Response<R>, E>) -> Result<http::Response<R>, E> {
    result.map(|mut resp| {
        let headers = resp.headers_mut();
        let out_of_range = headers
            .get("grpc-status")
            .is_some_and(|v| v == HeaderValue::from_static("11"));
        let too_large = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| DECODED_TOO_LARGE.iter().any(|t| m.contains(t)));
        if out_of_range && too_large {
            headers.insert("grpc-status", HeaderValue::from_static("8"));
        }
        resp
    })
}
