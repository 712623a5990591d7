//! Envoy's external processing filter (`envoy.service.ext_proc.v3.ExternalProcessor/Process`)
//! answered from the Check path: each stream's request headers (and its buffered body, when
//! Envoy sends one) become a `CheckRequest`, the same [`super::service::AuthzService`] decides
//! and observes it (metrics, decision log, trace), and the `CheckResponse` becomes the stream's
//! answer:
//!
//! | Check answer | ext_proc answer |
//! |---|---|
//! | allowed | `CONTINUE` with a header mutation: the decision's `headers` (the internal token included) set, `request_headers_to_remove` removed; `response_headers_to_add` are set on the response-headers phase when Envoy sends it |
//! | denied | `ImmediateResponse`: the decision's `http_status`, `headers` and `body` |
//! | error (undefined decision, evaluation error, …) | the stream fails with the gRPC error the Check would answer; Envoy's `failure_mode_allow` decides |
//!
//! Either way the `dynamic_metadata` (with `decision_id`) goes back to Envoy.
//!
//! **Phases.** The first message must be `request_headers`. When Envoy announces a buffered
//! request body (`protocol_config.request_body_mode` `BUFFERED` or `BUFFERED_PARTIAL`) and the
//! request has one, the headers are answered with a plain `CONTINUE` and the decision is made on
//! the `request_body` message, with the body in the input document like ext_authz's
//! `with_request_body`. Every other phase passes through unchanged.
//!
//! **Abuse.** A stream whose first message is not `request_headers` fails with
//! INVALID_ARGUMENT; one that sends nothing for [`FIRST_MESSAGE_TIMEOUT`] fails with
//! DEADLINE_EXCEEDED; a request body above `max-request-bytes` fails with RESOURCE_EXHAUSTED
//! (configure Envoy's buffer below it); each connection carries at most
//! [`MAX_CONCURRENT_STREAMS`] streams.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValueOption, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, TrailersResponse, processing_request,
    processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Timestamp, value::Kind};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use super::service::AuthzService;
use crate::invalid::Invalid;
use crate::listen::ListenAddr;
use crate::tls::{ClientIdentity, TlsConfig};

/// How long a new stream may wait before its first message.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// The default listener address.
pub const DEFAULT_ADDR: &str = ":9193";

/// `plugins.envoy_ext_proc_grpc`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtProcConfig {
    #[serde(default = "default_addr")]
    pub addr: String,
    /// The decision path; default: the ext_authz one (`plugins.envoy_ext_authz_grpc.path`).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// The largest request body a stream may send (and the largest gRPC message).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_addr() -> String {
    DEFAULT_ADDR.to_string()
}
fn default_max_request_bytes() -> usize {
    4 * 1024 * 1024
}

impl ExtProcConfig {
    /// Checks the section; keys are relative to it.
    pub fn validate(&self) -> Result<(), Invalid> {
        ListenAddr::parse(&self.addr).map_err(|m| Invalid::new("addr", m))?;
        if let Some(path) = &self.path {
            crate::policy::reference::validate_decision_path(path)
                .map_err(|m| Invalid::new("path", m))?;
        }
        if self.max_request_bytes == 0 {
            return Err(Invalid::new("max-request-bytes", "must be greater than 0"));
        }
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|e| e.under("tls"))?;
        }
        Ok(())
    }
}

/// The ext_proc service over an [`AuthzService`] with the section's own settings.
#[derive(Debug, Clone)]
pub struct ExtProcService {
    authz: AuthzService,
    max_request_bytes: usize,
}

impl ExtProcService {
    pub fn new(authz: AuthzService, max_request_bytes: usize) -> Self {
        Self {
            authz,
            max_request_bytes,
        }
    }

    /// The largest request body a stream may send.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }
}

type Answers = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProcService {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: GrpcRequest<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let client = crate::tls::client_of(request.extensions());
        let peer = request.remote_addr();
        let incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = ProcStream {
            authz: self.authz.clone(),
            max_request_bytes: self.max_request_bytes,
            client,
            peer,
        };
        tokio::spawn(async move {
            if let Err(status) = stream.run(incoming, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// One ext_proc stream.
struct ProcStream {
    authz: AuthzService,
    max_request_bytes: usize,
    client: Option<Arc<ClientIdentity>>,
    peer: Option<std::net::SocketAddr>,
}

type Tx = tokio::sync::mpsc::Sender<Result<ProcessingResponse, Status>>;

/// What the stream still has to do after the decision.
#[derive(Default)]
struct AfterDecision {
    /// Header values go in `raw_value`.
    raw: bool,
    response_headers_to_add: Vec<HeaderValueOption>,
}

impl ProcStream {
    async fn run(self, mut incoming: Streaming<ProcessingRequest>, tx: &Tx) -> Result<(), Status> {
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, incoming.next()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "ext_proc: no request_headers message in time",
                ));
            }
            Ok(None) => return Ok(()),
            Ok(Some(m)) => m?,
        };
        let buffered = first.protocol_config.as_ref().is_some_and(|p| {
            p.request_body_mode == BodySendMode::Buffered as i32
                || p.request_body_mode == BodySendMode::BufferedPartial as i32
        });
        let attributes = first.attributes.clone();
        let Some(processing_request::Request::RequestHeaders(headers)) = first.request else {
            return Err(Status::invalid_argument(
                "ext_proc: the first message must be request_headers",
            ));
        };
        // Answer header values in the field Envoy sends them in (`raw_value` since Envoy 1.27;
        // it ignores `value` in mutations then).
        let raw = headers
            .headers
            .as_ref()
            .and_then(|m| m.headers.first())
            .is_none_or(|h| !h.raw_value.is_empty() || h.value.is_empty());
        let mut after = AfterDecision {
            raw,
            ..AfterDecision::default()
        };
        if buffered && !headers.end_of_stream {
            // The decision waits for the body: let the headers through untouched for now.
            send(tx, request_headers_continue()).await?;
            let Some(next) = incoming.next().await else {
                return Ok(());
            };
            let body = match next?.request {
                Some(processing_request::Request::RequestBody(b)) => b,
                Some(processing_request::Request::RequestTrailers(_)) => {
                    // No body after all (trailers only): decide on the headers.
                    let check = self.check_request(&headers, &attributes, None)?;
                    let answer = self.decide(&check, Phase::Trailers, &mut after).await?;
                    send(tx, answer).await?;
                    return self.pass_through(incoming, tx, after).await;
                }
                Some(other) => {
                    return Err(Status::invalid_argument(format!(
                        "ext_proc: expected request_body, got {}",
                        phase_name(&other)
                    )));
                }
                None => {
                    return Err(Status::invalid_argument(
                        "ext_proc: a message without a phase",
                    ));
                }
            };
            if body.body.len() > self.max_request_bytes {
                return Err(Status::resource_exhausted(format!(
                    "ext_proc: request body larger than max-request-bytes ({})",
                    self.max_request_bytes
                )));
            }
            let check = self.check_request(&headers, &attributes, Some(&body.body))?;
            let answer = self.decide(&check, Phase::Body, &mut after).await?;
            send(tx, answer).await?;
        } else {
            let check = self.check_request(&headers, &attributes, None)?;
            let answer = self.decide(&check, Phase::Headers, &mut after).await?;
            send(tx, answer).await?;
        }
        self.pass_through(incoming, tx, after).await
    }

    /// Every later phase, answered unchanged (response headers get `response_headers_to_add`).
    async fn pass_through(
        &self,
        mut incoming: Streaming<ProcessingRequest>,
        tx: &Tx,
        mut after: AfterDecision,
    ) -> Result<(), Status> {
        use processing_request::Request as Rq;
        use processing_response::Response as Rs;
        while let Some(m) = incoming.next().await {
            let answer = match m?.request {
                Some(Rq::RequestHeaders(_)) => {
                    return Err(Status::invalid_argument(
                        "ext_proc: request_headers sent twice on one stream",
                    ));
                }
                Some(Rq::ResponseHeaders(_)) => {
                    let add = std::mem::take(&mut after.response_headers_to_add);
                    let mutation = (!add.is_empty()).then(|| HeaderMutation {
                        set_headers: add,
                        remove_headers: Vec::new(),
                    });
                    Rs::ResponseHeaders(HeadersResponse {
                        response: Some(CommonResponse {
                            header_mutation: mutation,
                            ..Default::default()
                        }),
                    })
                }
                Some(Rq::RequestBody(b)) => {
                    if b.body.len() > self.max_request_bytes {
                        return Err(Status::resource_exhausted(
                            "ext_proc: request body chunk larger than max-request-bytes",
                        ));
                    }
                    Rs::RequestBody(BodyResponse::default())
                }
                Some(Rq::ResponseBody(_)) => Rs::ResponseBody(BodyResponse::default()),
                Some(Rq::RequestTrailers(_)) => Rs::RequestTrailers(TrailersResponse::default()),
                Some(Rq::ResponseTrailers(_)) => Rs::ResponseTrailers(TrailersResponse::default()),
                None => {
                    return Err(Status::invalid_argument(
                        "ext_proc: a message without a phase",
                    ));
                }
            };
            send(
                tx,
                ProcessingResponse {
                    response: Some(answer),
                    ..Default::default()
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The Check on the shared path; its answer in the phase's form.
    async fn decide(
        &self,
        check: &CheckRequest,
        phase: Phase,
        after: &mut AfterDecision,
    ) -> Result<ProcessingResponse, Status> {
        let span = tracing::debug_span!(
            "ext_proc.process",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "envoy.service.ext_proc.v3.ExternalProcessor",
            rpc.method = "Process",
            decision.id = tracing::field::Empty,
            decision.outcome = tracing::field::Empty,
            error.reason = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let resp = self
            .authz
            .check_in(check, self.client.as_deref(), &span)
            .await
            .map_err(Status::from)?;
        Ok(translate(resp, phase, after))
    }

    /// The ext_proc request as the `CheckRequest` Envoy's ext_authz filter would send.
    fn check_request(
        &self,
        headers: &HttpHeaders,
        attributes: &HashMap<String, Struct>,
        body: Option<&[u8]>,
    ) -> Result<CheckRequest, Status> {
        let mut map: HashMap<String, String> = HashMap::new();
        let mut total = 0usize;
        for h in headers
            .headers
            .as_ref()
            .map(|m: &HeaderMap| m.headers.as_slice())
            .unwrap_or_default()
        {
            let value = if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            };
            total += h.key.len() + value.len();
            if total > self.max_request_bytes {
                return Err(Status::resource_exhausted(
                    "ext_proc: request headers larger than max-request-bytes",
                ));
            }
            let key = h.key.to_ascii_lowercase();
            match map.get_mut(&key) {
                Some(existing) => {
                    existing.push(',');
                    existing.push_str(&value);
                }
                None => {
                    map.insert(key, value);
                }
            }
        }
        let attr = attributes.get("envoy.filters.http.ext_proc");
        let text = |name: &str| -> Option<String> {
            attr.and_then(|s| s.fields.get(name))
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
        };
        let mut http = HttpRequest {
            method: map.get(":method").cloned().unwrap_or_default(),
            path: map.get(":path").cloned().unwrap_or_default(),
            host: map.get(":authority").cloned().unwrap_or_default(),
            scheme: map.get(":scheme").cloned().unwrap_or_default(),
            protocol: text("request.protocol").unwrap_or_default(),
            id: text("request.id").unwrap_or_default(),
            ..Default::default()
        };
        if let Some(body) = body {
            http.size = body.len() as i64;
            match std::str::from_utf8(body) {
                Ok(text) => http.body = text.to_string(),
                Err(_) => http.raw_body = body.to_vec(),
            }
        }
        http.headers = map;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let peer = |addr: Option<String>, principal: Option<String>| -> Option<Peer> {
            let address = addr.as_deref().and_then(socket_address);
            if address.is_none() && principal.is_none() {
                return None;
            }
            Some(Peer {
                address,
                principal: principal.unwrap_or_default(),
                ..Default::default()
            })
        };
        let source = peer(
            text("source.address").or_else(|| self.peer.map(|p| p.to_string())),
            None,
        );
        Ok(CheckRequest {
            attributes: Some(AttributeContext {
                source,
                destination: peer(text("destination.address"), None),
                request: Some(Request {
                    time: Some(Timestamp {
                        seconds: now.as_secs() as i64,
                        nanos: now.subsec_nanos() as i32,
                    }),
                    http: Some(http),
                }),
                ..Default::default()
            }),
        })
    }
}

/// `ip:port` as Envoy's `SocketAddress`.
fn socket_address(text: &str) -> Option<Address> {
    let sa: std::net::SocketAddr = text.parse().ok()?;
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: sa.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                sa.port(),
            ))),
            ..Default::default()
        })),
    })
}

/// Which message the decision answers.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Headers,
    Body,
    Trailers,
}

fn phase_name(r: &processing_request::Request) -> &'static str {
    use processing_request::Request as Rq;
    match r {
        Rq::RequestHeaders(_) => "request_headers",
        Rq::ResponseHeaders(_) => "response_headers",
        Rq::RequestBody(_) => "request_body",
        Rq::ResponseBody(_) => "response_body",
        Rq::RequestTrailers(_) => "request_trailers",
        Rq::ResponseTrailers(_) => "response_trailers",
    }
}

async fn send(tx: &Tx, answer: ProcessingResponse) -> Result<(), Status> {
    tx.send(Ok(answer))
        .await
        .map_err(|_| Status::cancelled("ext_proc: the stream was closed"))
}

fn request_headers_continue() -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse {
                response: Some(CommonResponse::default()),
            },
        )),
        ..Default::default()
    }
}

/// A `CheckResponse` as the answer to `phase`.
fn translate(resp: CheckResponse, phase: Phase, after: &mut AfterDecision) -> ProcessingResponse {
    use processing_response::Response as Rs;
    let allowed = resp.status.as_ref().is_none_or(|s| s.code == 0);
    let raw = after.raw;
    let fix = |options: Vec<HeaderValueOption>| header_values(options, raw);
    let dynamic_metadata = resp.dynamic_metadata;
    let response = match (allowed, resp.http_response) {
        (true, http) => {
            let ok = match http {
                Some(HttpResponse::OkResponse(ok)) => ok,
                _ => Default::default(),
            };
            after.response_headers_to_add = fix(ok.response_headers_to_add);
            let mutation = (!ok.headers.is_empty() || !ok.headers_to_remove.is_empty()).then_some(
                HeaderMutation {
                    set_headers: fix(ok.headers),
                    remove_headers: ok.headers_to_remove,
                },
            );
            let common = Some(CommonResponse {
                header_mutation: mutation,
                ..Default::default()
            });
            match phase {
                Phase::Headers => Rs::RequestHeaders(HeadersResponse { response: common }),
                Phase::Body => Rs::RequestBody(BodyResponse { response: common }),
                Phase::Trailers => Rs::RequestTrailers(TrailersResponse {
                    header_mutation: common.and_then(|c| c.header_mutation),
                }),
            }
        }
        (false, http) => {
            let (status, headers, body) = match http {
                Some(HttpResponse::DeniedResponse(d)) => (
                    d.status.map_or(403, |s| s.code),
                    d.headers,
                    d.body.into_bytes(),
                ),
                _ => (403, Vec::new(), Vec::new()),
            };
            Rs::ImmediateResponse(ImmediateResponse {
                status: Some(HttpStatus {
                    code: if status == 0 { 403 } else { status },
                }),
                headers: (!headers.is_empty()).then_some(HeaderMutation {
                    set_headers: fix(headers),
                    remove_headers: Vec::new(),
                }),
                body,
                details: "portcullis_denied".into(),
                ..Default::default()
            })
        }
    };
    ProcessingResponse {
        response: Some(response),
        dynamic_metadata,
        ..Default::default()
    }
}

/// Header values in `raw_value` (with `raw`) or in `value`, never both.
fn header_values(mut options: Vec<HeaderValueOption>, raw: bool) -> Vec<HeaderValueOption> {
    for h in options.iter_mut().filter_map(|o| o.header.as_mut()) {
        if raw && h.raw_value.is_empty() {
            h.raw_value = std::mem::take(&mut h.value).into_bytes();
        } else if !raw && h.value.is_empty() && !h.raw_value.is_empty() {
            h.value = String::from_utf8_lossy(&std::mem::take(&mut h.raw_value)).into_owned();
        }
    }
    options
}
