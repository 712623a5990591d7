//! Flags shared by the gateway client commands, and the connection they open: gRPC over
//! HTTP/2, or gRPC-Web over HTTP/1.1 with `--grpc-web`, carrying the caller's credentials:
//! `--token`, `--password` or `--jwt-secret` (or their variables), else the token `auth login`
//! saved, when it is for this gateway and has not expired.

use std::time::Duration;

use base64::Engine as _;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use super::CliError;
use super::login::store;
use super::output::Format;
use crate::client::parse_duration;
use crate::client::transport::{Target, describe_status};
use crate::env::Env;
use crate::gateway::caller::{Audience, Claims, Grant, GrantKind, ScopeClaims, sign};
use crate::gateway::config::DEFAULT_AUDIENCE;
use crate::jose::clock::now_u64 as now;

/// The gateway address the client commands use by default.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:9292";

/// Flags of every gateway client command. `Debug` never shows the credentials.
#[derive(Clone, clap::Args)]
pub struct GatewayArgs {
    /// Gateway address: HOST:PORT or http://HOST:PORT.
    #[arg(long, global = true, env = "PORTCULLIS_GATEWAY", default_value = DEFAULT_GATEWAY, value_name = "H:P")]
    pub gateway: String,
    /// Bearer token: a gateway JWT or the gateway's static GATEWAY_TOKEN.
    #[arg(long, global = true, env = "PORTCULLIS_TOKEN", hide_env_values = true,
          conflicts_with_all = ["password", "jwt_secret"])]
    pub token: Option<String>,
    /// The gateway's GATEWAY_PASSWORD (HTTP Basic).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_PASSWORD",
        hide_env_values = true,
        conflicts_with = "jwt_secret"
    )]
    pub password: Option<String>,
    /// The user name sent with --password.
    #[arg(long, global = true, default_value = "portcullis")]
    pub user: String,
    /// The gateway's GATEWAY_JWT_SECRET: a short-lived root token is minted locally.
    #[arg(
        long = "jwt-secret",
        global = true,
        env = "PORTCULLIS_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// The audience of tokens minted with --jwt-secret.
    #[arg(long, global = true, default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Use gRPC-Web over HTTP/1.1 instead of gRPC over HTTP/2.
    #[arg(long = "grpc-web", global = true)]
    pub grpc_web: bool,
    /// Output format: json, or table (also `text`) [default: json when stdout is not a
    /// terminal, else table].
    #[arg(long, short = 'o', global = true, value_enum)]
    pub output: Option<Format>,
    /// Connect timeout, and then the time allowed for each answer (not for `logs tail`).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl std::fmt::Debug for GatewayArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("GatewayArgs")
            .field("gateway", &self.gateway)
            .field("token", &set(&self.token))
            .field("password", &set(&self.password))
            .field("user", &self.user)
            .field("jwt_secret", &set(&self.jwt_secret))
            .field("grpc_web", &self.grpc_web)
            .finish_non_exhaustive()
    }
}

/// The transport behind every generated client.
pub type Transport = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// An open connection to a gateway, with the credential to send.
#[derive(Clone)]
pub struct Gateway {
    pub transport: Transport,
    pub origin: http::Uri,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    pub format: Format,
    pub timeout: Duration,
    pub display: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.display)
            .finish()
    }
}

impl GatewayArgs {
    /// Flags for `address` without credentials (for the public RPCs `auth login` calls).
    pub fn plain(address: &str, grpc_web: bool, timeout: Duration, output: Option<Format>) -> Self {
        Self {
            gateway: address.to_string(),
            token: None,
            password: None,
            user: "portcullis".into(),
            jwt_secret: None,
            audience: DEFAULT_AUDIENCE.into(),
            grpc_web,
            output,
            timeout,
        }
    }

    /// The gateway's address, parsed; only TCP.
    pub fn target(&self) -> Result<Target, CliError> {
        let target = Target::parse(&self.gateway).map_err(CliError::Usage)?;
        if !target.uri.starts_with("http://") {
            return Err(CliError::Usage(
                "the gateway listens on TCP: use HOST:PORT".into(),
            ));
        }
        Ok(target)
    }

    /// The `authorization` header value these flags ask for, else the saved login's.
    fn authorization(&self, target: &Target, env: &dyn Env) -> Result<Option<String>, CliError> {
        if let Some(t) = &self.token {
            return Ok(Some(format!("Bearer {t}")));
        }
        if let Some(p) = &self.password {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{p}", self.user));
            return Ok(Some(format!("Basic {basic}")));
        }
        if let Some(secret) = &self.jwt_secret {
            let claims = Claims {
                sub: "portcullis-cli".into(),
                aud: Audience::One(self.audience.clone()),
                exp: now() + 300,
                iat: Some(now()),
                jti: None,
                scope: ScopeClaims::default(),
                grants: Some(vec![Grant::all(GrantKind::Readwrite)]),
            };
            let token = sign(&claims, secret.as_bytes()).map_err(CliError::Usage)?;
            return Ok(Some(format!("Bearer {token}")));
        }
        saved_login(target, env)
    }

    /// Connects (gRPC: one HTTP/2 connection; gRPC-Web: an HTTP/1.1 client) with the
    /// credential the flags give, else the saved login.
    pub async fn connect(&self) -> Result<Gateway, CliError> {
        let target = self.target()?;
        let authorization = self.authorization(&target, &crate::env::ProcessEnv)?;
        self.open(target, authorization).await
    }

    /// Connects without any credential.
    pub async fn connect_without_credentials(&self) -> Result<Gateway, CliError> {
        self.open(self.target()?, None).await
    }

    async fn open(
        &self,
        target: Target,
        authorization: Option<String>,
    ) -> Result<Gateway, CliError> {
        let origin: http::Uri = target
            .uri
            .parse()
            .map_err(|e| CliError::Usage(format!("--gateway: {e}")))?;
        let authorization = match authorization {
            Some(h) => Some(h.parse().map_err(|_| {
                CliError::Usage("the credential has characters a header cannot carry".into())
            })?),
            None => None,
        };
        let transport = if self.grpc_web {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let svc = tower::ServiceBuilder::new()
                .layer(tonic_web::GrpcWebClientLayer::new())
                .service(client)
                .map_response(|r| r.map(tonic::body::Body::new))
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
            BoxCloneSyncService::new(svc)
        } else {
            let channel = target.connect(self.timeout).await.map_err(|reason| {
                CliError::Failed(format!("cannot connect to {}: {reason}", target.display))
            })?;
            let svc = channel.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
            BoxCloneSyncService::new(svc)
        };
        Ok(Gateway {
            transport,
            origin,
            authorization,
            format: Format::resolve(self.output),
            timeout: self.timeout,
            display: target.display,
        })
    }
}

/// The saved login's bearer for `target`: none when there is none, when it is for another
/// gateway (never sent there) or when it has expired (each said on stderr).
fn saved_login(target: &Target, env: &dyn Env) -> Result<Option<String>, CliError> {
    let Some(path) = store::path(env) else {
        return Ok(None);
    };
    let Some(saved) = store::load(&path)? else {
        return Ok(None);
    };
    if saved.gateway != target.uri {
        eprintln!(
            "note: the saved login is for the gateway {}, not {}: not sent",
            saved.gateway, target.display
        );
        return Ok(None);
    }
    if saved.expires_at <= crate::jose::clock::now() {
        eprintln!("note: the saved login has expired: run `portcullis auth login` again");
        return Ok(None);
    }
    Ok(Some(format!("Bearer {}", saved.token)))
}

impl Gateway {
    /// A request carrying the credential and the timeout.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(a) = &self.authorization {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r.set_timeout(self.timeout);
        r
    }

    /// A request carrying the credential, without a deadline (streams).
    pub fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(a) = &self.authorization {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }

    /// An RPC failure as a command failure.
    pub fn failed(&self, rpc: &str, status: &tonic::Status) -> CliError {
        CliError::Failed(format!(
            "{rpc} at {} failed: {}",
            self.display,
            describe_status(status)
        ))
    }
}
