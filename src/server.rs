//! Serving: [`run`] takes already-bound listeners and a shutdown future, so that tests bind
//! `127.0.0.1:0`, read the address, and stop the server with a oneshot.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic_health::ServingStatus;

use crate::authz::ext_proc::ExtProcService;
use crate::authz::input::{self, InputOptions};
use crate::authz::pipeline::CheckSettings;
use crate::authz::security::Security;
use crate::authz::service::AuthzService;
use crate::config::{Config, ConfigError, ListenAddr};
use crate::decision_log::DecisionLog;
use crate::env::{Env, ProcessEnv};
use crate::gateway::{AuthMode, Authenticator, Gateway};
use crate::invalid::Invalid;
use crate::namespaces::Namespaces;
use crate::policy::{PolicyOptions, PolicyStore};
use crate::telemetry::Metrics;
use crate::tls::ServerTls;

/// Envoy's API descriptors (see build.rs), for gRPC reflection; empty when unavailable.
const ENVOY_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// A listener for a gRPC server.
#[derive(Debug)]
pub enum GrpcListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl GrpcListener {
    /// Binds an address in any of OPA's forms. A stale Unix socket file is removed first.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(sa) => Ok(Self::Tcp(TcpListener::bind(sa).await?)),
            ListenAddr::Host(hp) => Ok(Self::Tcp(TcpListener::bind(hp.as_str()).await?)),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path)?;
                Ok(Self::Unix(UnixListener::bind(path)?))
            }
            ListenAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                let std_listener = std::os::unix::net::UnixListener::bind_addr(&sa)?;
                std_listener.set_nonblocking(true)?;
                Ok(Self::Unix(UnixListener::from_std(std_listener)?))
            }
        }
    }

    /// A printable form of the bound address.
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
            Self::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix://{}", p.display())))
                .unwrap_or_else(|| "unix socket".into()),
        }
    }

    /// The TCP address, when bound to TCP.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Binds a TCP address for the HTTP API.
pub async fn bind_tcp(addr: &ListenAddr) -> io::Result<TcpListener> {
    match addr {
        ListenAddr::Tcp(sa) => TcpListener::bind(sa).await,
        ListenAddr::Host(hp) => TcpListener::bind(hp.as_str()).await,
        ListenAddr::Unix(_) | ListenAddr::Abstract(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the HTTP API listens on TCP only",
        )),
    }
}

/// Every listener the server uses.
#[derive(Debug)]
pub struct Listeners {
    pub ext_authz: GrpcListener,
    /// The HTTP API (`--addr`).
    pub http: Option<TcpListener>,
    /// Health and metrics only (`--diagnostic-addr`).
    pub diagnostic: Option<TcpListener>,
    /// The gateway (`gateway.addr`); served when the app has a gateway.
    pub gateway: Option<TcpListener>,
    /// HTTP authorization (`plugins.envoy_ext_authz_http.addr`); served when the app has it.
    pub ext_authz_http: Option<TcpListener>,
    /// Envoy ext_proc (`plugins.envoy_ext_proc_grpc.addr`); served when the app has it.
    pub ext_proc: Option<GrpcListener>,
}

/// Everything the servers share.
#[derive(Debug, Clone)]
pub struct App {
    /// The default namespace's store.
    pub store: Arc<PolicyStore>,
    /// Every namespace, the default one included.
    pub namespaces: Arc<Namespaces>,
    pub authz: AuthzService,
    pub grpc: GrpcSettings,
    /// The gateway, when the config has a `gateway` section.
    pub gateway: Option<Gateway>,
    /// Every metric; served on `/metrics`.
    pub metrics: Metrics,
    /// The REST API's settings (`--authentication`/`--authorization` are set by the caller).
    pub rest: crate::http::RestSettings,
    /// The HTTP authorization listener's settings, when the config has the section.
    pub ext_authz_http: Option<crate::authz::http::HttpAuthzConfig>,
    /// Envoy ext_proc, when `plugins.envoy_ext_proc_grpc` is configured.
    pub ext_proc: Option<ExtProcService>,
    /// Each listener's TLS, when configured.
    pub tls: ListenerTls,
}

/// The TLS of each listener that has a `tls:` block (or, for the HTTP API, the `--tls-*` flags);
/// files are watched for changes while the server runs.
#[derive(Debug, Clone, Default)]
pub struct ListenerTls {
    pub ext_authz: Option<Arc<ServerTls>>,
    pub gateway: Option<Arc<ServerTls>>,
    pub ext_proc: Option<Arc<ServerTls>>,
    /// `plugins.envoy_ext_authz_http.tls`.
    pub ext_authz_http: Option<Arc<ServerTls>>,
    /// The HTTP API on `--addr`, set by the caller from the flags
    /// ([`crate::http::tls::TlsFlags`]) when that listener serves HTTPS.
    pub http: Option<Arc<ServerTls>>,
    /// `--diagnostic-addr`, likewise (the same files as `http`).
    pub diagnostic: Option<Arc<ServerTls>>,
}

impl ListenerTls {
    /// Each distinct set of files once (listeners may share one), with the listener name that
    /// logs give it.
    fn distinct(&self) -> Vec<(&Arc<ServerTls>, &'static str)> {
        let mut out: Vec<(&Arc<ServerTls>, &'static str)> = Vec::new();
        for (tls, what) in [
            (&self.ext_authz, "ext_authz"),
            (&self.gateway, "gateway"),
            (&self.ext_proc, "ext_proc"),
            (&self.ext_authz_http, "ext_authz_http"),
            (&self.http, "http"),
            (&self.diagnostic, "http"),
        ] {
            let Some(tls) = tls else { continue };
            if !out.iter().any(|(seen, _)| Arc::ptr_eq(seen, tls)) {
                out.push((tls, what));
            }
        }
        out
    }

    /// Reads every configured certificate and key; errors name the file and the key.
    fn load(config: &Config) -> Result<Self, ConfigError> {
        let load = |tls: Option<&crate::tls::TlsConfig>, key: &str, alpn: &[&[u8]]| {
            tls.map(|t| ServerTls::load(t, alpn).map_err(|e| config.invalid(e.under(key))))
                .transpose()
        };
        Ok(Self {
            ext_authz: load(
                config.plugins.envoy_ext_authz_grpc.tls.as_ref(),
                "plugins.envoy_ext_authz_grpc.tls",
                &[b"h2"],
            )?,
            gateway: load(
                config
                    .gateway
                    .as_ref()
                    .filter(|g| g.enabled)
                    .and_then(|g| g.tls.as_ref()),
                "gateway.tls",
                &[b"h2", b"http/1.1"],
            )?,
            ext_proc: load(
                config
                    .plugins
                    .envoy_ext_proc_grpc
                    .as_ref()
                    .and_then(|p| p.tls.as_ref()),
                "plugins.envoy_ext_proc_grpc.tls",
                &[b"h2"],
            )?,
            ext_authz_http: load(
                config
                    .plugins
                    .envoy_ext_authz_http
                    .as_ref()
                    .and_then(|p| p.tls.as_ref()),
                "plugins.envoy_ext_authz_http.tls",
                &[b"http/1.1"],
            )?,
            http: None,
            diagnostic: None,
        })
    }
}

impl App {
    /// Re-reads, at once, the files that are safe to swap while serving (what SIGHUP does):
    /// the policy and data PATHs of every namespace loaded from files (each compiled and
    /// swapped in as a whole, or refused with the previous policies serving, as `--watch`
    /// does) and every listener's TLS files that changed. Blocking (compiles): call it off
    /// the async workers. Downloaded bundles and the config file are not re-read.
    pub fn reload_files(&self) {
        for (namespace, store) in self.namespaces.all() {
            if !store.paths().is_empty() {
                record_reload(&self.metrics, &namespace, &store.reload());
            }
        }
        for (tls, what) in self.tls.distinct() {
            match tls.reload_if_changed() {
                Ok(true) => tracing::info!(listener = what, "TLS certificate files reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    listener = what,
                    key = %e.key,
                    error = %e.message,
                    "TLS files do not load; the previous certificate keeps serving"
                ),
            }
        }
    }

    /// What the HTTP API serves from, on a listener whose address is `loopback` or not, over
    /// `tls` or not.
    pub fn http_api(&self, loopback: bool, tls: bool) -> crate::http::Api {
        crate::http::Api {
            store: self.store.clone(),
            security: self.authz.security().cloned(),
            metrics: self.metrics.clone(),
            rest: Arc::new(self.rest.clone()),
            loopback,
            tls,
        }
    }

    /// Starts wiring the servers from the config around a loaded store. Unless told otherwise
    /// ([`AppBuilder::security`]), authentication and the internal token are built from the
    /// config, reading their files and keys and the environment ([`AppBuilder::env`], the
    /// process environment by default) for `secret_env` and the gateway's `GATEWAY_*`.
    pub fn builder(config: &Config, store: Arc<PolicyStore>) -> AppBuilder<'_> {
        AppBuilder {
            config,
            store,
            log: DecisionLog::disabled(),
            env: &ProcessEnv,
            security: None,
        }
    }
}

/// Wires an [`App`]; see [`App::builder`].
pub struct AppBuilder<'a> {
    config: &'a Config,
    store: Arc<PolicyStore>,
    log: DecisionLog,
    env: &'a dyn Env,
    security: Option<Option<Arc<Security>>>,
}

impl<'a> AppBuilder<'a> {
    /// The decision log (disabled by default).
    pub fn log(mut self, log: DecisionLog) -> Self {
        self.log = log;
        self
    }

    /// Where `secret_env` and the gateway's `GATEWAY_*` variables are read.
    pub fn env(mut self, env: &'a dyn Env) -> Self {
        self.env = env;
        self
    }

    /// Authentication and tokens already built (tests use a memory audit sink).
    pub fn security(mut self, security: Option<Arc<Security>>) -> Self {
        self.security = Some(security);
        self
    }

    /// Builds everything: fails when the configured `proto-descriptor` cannot be loaded, when
    /// authentication or the internal token cannot be built, or when the namespaces or the
    /// gateway's caller authentication are refused; each error names its file and key.
    pub fn build(self) -> Result<App, ConfigError> {
        let Self {
            config,
            store,
            log,
            env,
            security,
        } = self;
        let security = match security {
            Some(s) => s,
            None => Security::open(
                config.authentication.as_ref(),
                config.internal_token.as_ref(),
                env,
            )
            .map_err(|e| config.invalid(e))?
            .map(Arc::new),
        };
        let ext = &config.plugins.envoy_ext_authz_grpc;
        let metrics = Metrics::new(
            ext.grpc_request_duration_seconds_buckets
                .as_deref()
                .unwrap_or(crate::telemetry::metrics::OPA_ENVOY_BUCKETS),
            log.stats(),
        );
        metrics.policy_revision(store.snapshot().revision());
        metrics.connect_bundles(Arc::new(store.bundle_status().clone()));
        if let Some(s) = &security {
            s.connect_metrics(&metrics);
        }
        let proto_descriptors = match &ext.proto_descriptor {
            None => None,
            Some(path) => {
                Some(
                    input::load_descriptor_set(path).map_err(|e| ConfigError::Invalid {
                        file: path.display().to_string(),
                        key: "plugins.envoy_ext_authz_grpc.proto-descriptor".into(),
                        message: e.to_string(),
                    })?,
                )
            }
        };
        let configured = config
            .namespaces
            .iter()
            .map(|(name, ns)| (name.clone(), ns.paths.clone()))
            .collect();
        let namespaces = Arc::new(
            Namespaces::with_configured(store.clone(), &configured)
                .map_err(|e| config.invalid(Invalid::new("namespaces", e.to_string())))?
                .with_selection(
                    !config.namespaces.is_empty()
                        || config.gateway.as_ref().is_some_and(|g| g.enabled),
                ),
        );
        let authz = AuthzService::new(
            namespaces.clone(),
            CheckSettings {
                dry_run: ext.dry_run,
                input: InputOptions {
                    skip_body_parse: ext.skip_request_body_parse,
                    proto_descriptors: proto_descriptors.clone(),
                },
                decision_path: None,
            },
            security.clone(),
            log.clone(),
            metrics.clone(),
        );
        let ext_proc = config.plugins.envoy_ext_proc_grpc.as_ref().map(|p| {
            let path = p
                .path
                .as_deref()
                .filter(|path| !path.is_empty() && *path != ext.decision_path());
            ExtProcService::new(
                AuthzService::new(
                    namespaces.clone(),
                    CheckSettings {
                        dry_run: p.dry_run,
                        input: InputOptions {
                            skip_body_parse: ext.skip_request_body_parse,
                            proto_descriptors,
                        },
                        decision_path: path.map(str::to_string),
                    },
                    security.clone(),
                    log.clone(),
                    metrics.clone(),
                ),
                p.max_request_bytes,
            )
        });
        let tls = ListenerTls::load(config)?;
        let gateway = match &config.gateway {
            Some(g) if g.enabled => {
                let mode = AuthMode::resolve(g, env).map_err(|e| {
                    if e.key.starts_with("gateway.") {
                        config.invalid(e)
                    } else {
                        ConfigError::Invalid {
                            file: "environment".into(),
                            key: e.key,
                            message: e.message,
                        }
                    }
                })?;
                let api_keys = crate::gateway::tokens::ApiKeys::from_sections(
                    g,
                    config.authentication.as_ref(),
                    security.as_deref(),
                )
                .map_err(|e| config.invalid(e.under("gateway")))?;
                Some(Gateway::new(
                    namespaces.clone(),
                    Authenticator::new(mode, g.audience.clone())
                        .with_revocations(security.as_ref().and_then(|s| s.revocations.clone())),
                    log,
                    ext.decision_path(),
                    g,
                    security.clone(),
                    api_keys,
                ))
            }
            _ => None,
        };
        Ok(App {
            rest: rest_settings(config),
            store,
            namespaces,
            authz,
            gateway,
            metrics,
            ext_authz_http: config.plugins.envoy_ext_authz_http.clone(),
            ext_proc,
            tls,
            grpc: GrpcSettings {
                max_recv_msg_size: ext.grpc_max_recv_msg_size,
                max_send_msg_size: ext.grpc_max_send_msg_size,
                enable_reflection: ext.enable_reflection,
                ..Default::default()
            },
        })
    }
}

/// Counts and logs one reload of `namespace`'s policies (by `--watch` or SIGHUP).
pub fn record_reload(
    metrics: &Metrics,
    namespace: &str,
    result: &Result<u64, crate::policy::PolicyError>,
) {
    if namespace == crate::namespaces::DEFAULT_NAMESPACE {
        metrics.policy_reload(result);
    } else {
        metrics.namespace_reload(result);
    }
    match result {
        Ok(revision) => tracing::info!(namespace, revision, "policies reloaded"),
        Err(e) => tracing::error!(
            namespace,
            error = %e,
            "policy reload rejected; previous policies keep serving"
        ),
    }
}

/// The REST API's settings the config asks for; `--authentication`/`--authorization` are off
/// until the caller sets them.
pub fn rest_settings(config: &Config) -> crate::http::RestSettings {
    use crate::http::config::{DEFAULT_AUTHORIZATION_DECISION, DEFAULT_DECISION};
    let default_decision = config
        .default_decision
        .clone()
        .unwrap_or_else(|| DEFAULT_DECISION.into());
    let authorization_decision = config
        .default_authorization_decision
        .clone()
        .unwrap_or_else(|| DEFAULT_AUTHORIZATION_DECISION.into());
    let labels = config.labels_json();
    let dl = &config.decision_logs;
    crate::http::RestSettings {
        protection: Default::default(),
        config: crate::http::config::redacted(
            &config.tree,
            &labels,
            &default_decision,
            &authorization_decision,
        ),
        labels: serde_json::Value::Object(labels),
        default_decision,
        authorization_decision,
        decision_logs: dl.console || dl.service.is_some() || dl.file.is_some(),
    }
}

/// The policy options the config asks for.
pub fn policy_options(config: &Config) -> PolicyOptions {
    let ext = &config.plugins.envoy_ext_authz_grpc;
    PolicyOptions {
        decision_path: ext.decision_path().to_string(),
        decision_query: ext.query.clone(),
        eval_timeout: ext.eval_timeout(),
        engine: config.runtime.policy_engine,
        ..Default::default()
    }
}

/// Settings of the ext_authz gRPC server.
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    pub max_recv_msg_size: usize,
    pub max_send_msg_size: usize,
    pub enable_reflection: bool,
    /// How long, after the shutdown signal, every listener keeps serving with gRPC health
    /// NOT_SERVING before the drain starts (OPA's `--shutdown-wait-period`), so that Envoy
    /// stops sending first.
    pub shutdown_wait: Duration,
    /// How long the drain (in-flight requests finishing) may take.
    pub shutdown_grace: Duration,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            max_recv_msg_size: 4 * 1024 * 1024,
            max_send_msg_size: i32::MAX as usize,
            enable_reflection: false,
            shutdown_wait: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Reflection over the services the ext_authz listener serves (Envoy's descriptor set describes
/// its whole API; only the Authorization service is advertised from it).
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    if !ENVOY_DESCRIPTORS.is_empty() {
        builder = builder
            .register_encoded_file_descriptor_set(ENVOY_DESCRIPTORS)
            .with_service_name("envoy.service.auth.v3.Authorization");
    }
    builder
}

/// Serves every listener until `shutdown` resolves, then shuts down in three steps:
///
/// 1. gRPC health (the overall status and the Authorization service's) turns NOT_SERVING;
/// 2. every listener keeps serving for [`GrpcSettings::shutdown_wait`], so that health-checking
///    clients (Envoy) stop sending new requests here;
/// 3. the drain: every listener stops accepting connections (new ones are refused), open
///    connections are told to go away (HTTP/2 GOAWAY) and in-flight requests finish, for up to
///    [`GrpcSettings::shutdown_grace`]; what is still running then is dropped.
pub async fn run(
    app: App,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    // SERVING only once the policies, configured bundles included, are loaded.
    let mut ready = app.store.subscribe_ready();
    let status = if app.store.is_ready() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <AuthorizationServer<AuthzService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    let health_ready = {
        let health = health.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() && !*stop.borrow() {
                health.set_service_status("", ServingStatus::Serving).await;
                health
                    .set_serving::<AuthorizationServer<AuthzService>>()
                    .await;
            }
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    let loopback = |l: &TcpListener| l.local_addr().is_ok_and(|a| a.ip().is_loopback());
    for (l, tls, surface) in [
        (
            listeners.http,
            app.tls.http.clone(),
            crate::http::Surface::Full,
        ),
        (
            listeners.diagnostic,
            app.tls.diagnostic.clone(),
            crate::http::Surface::Diagnostic,
        ),
    ] {
        let Some(l) = l else { continue };
        let api = app.http_api(loopback(&l), tls.is_some());
        let router = crate::http::router(api, surface);
        tasks.spawn(crate::http::serve(l, router, tls, stopped(stop_rx.clone())));
    }
    for (tls, what) in app.tls.distinct() {
        tls.watch(what);
    }
    if let (Some(gateway), Some(l)) = (app.gateway.clone(), listeners.gateway) {
        let stop = stopped(stop_rx.clone());
        let tls = app.tls.gateway.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::gateway::serve_tls(gateway, l, tls, stop).await {
                tracing::error!(error = %e, "gateway server failed");
            }
        });
    }

    if let (Some(settings), Some(l)) = (app.ext_authz_http.clone(), listeners.ext_authz_http) {
        let stop = stopped(stop_rx.clone());
        tasks.spawn(crate::authz::http::serve(
            app.authz.clone(),
            settings,
            l,
            app.tls.ext_authz_http.clone(),
            stop,
        ));
    }
    if let (Some(proc), Some(l)) = (app.ext_proc.clone(), listeners.ext_proc) {
        let stop = stopped(stop_rx.clone());
        let tls = app.tls.ext_proc.clone();
        let max = app.grpc.max_send_msg_size;
        tasks.spawn(async move {
            let limit = proc.max_request_bytes().saturating_add(64 * 1024);
            let service = ExternalProcessorServer::new(proc)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(max);
            let router = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(crate::authz::ext_proc::MAX_CONCURRENT_STREAMS))
                .add_service(service);
            if let Err(e) = serve_grpc(router, l, tls, "ext_proc", stop).await {
                tracing::error!(error = %e, "ext_proc server failed");
            }
        });
    }

    let authz = AuthorizationServer::new(app.authz.clone())
        .max_decoding_message_size(app.grpc.max_recv_msg_size)
        .max_encoding_message_size(app.grpc.max_send_msg_size);
    // Both reflection versions, as OPA-Envoy serves them: grpcurl before 1.9 asks v1alpha.
    let (reflection, reflection_alpha) = if app.grpc.enable_reflection {
        let reflection = reflection_builder().build_v1();
        let alpha = reflection_builder().build_v1alpha();
        match (reflection, alpha) {
            (Ok(v1), Ok(alpha)) => (Some(v1), Some(alpha)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "gRPC reflection is unavailable");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let router = tonic::transport::Server::builder()
        .add_service(crate::grpc::oversize::ResourceExhausted(authz))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_optional_service(reflection_alpha);

    let ext_authz_tls = app.tls.ext_authz.clone();
    let server = serve_grpc(
        router,
        listeners.ext_authz,
        ext_authz_tls,
        "ext_authz",
        stopped(stop_rx.clone()),
    );
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => {
            let _ = stop_tx.send(true);
            return r;
        }
        () = shutdown => {}
    }
    health_ready.abort();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<AuthorizationServer<AuthzService>>()
        .await;
    let wait = app.grpc.shutdown_wait;
    if !wait.is_zero() {
        tracing::info!(wait = ?wait, "shutting down: health is NOT_SERVING; draining after the wait period");
        tokio::select! {
            r = &mut server => {
                let _ = stop_tx.send(true);
                return r;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
    let grace = app.grpc.shutdown_grace;
    tracing::info!(grace = ?grace, "shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    let deadline = deadline_after(grace);
    let result = match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(grace = ?grace, "in-flight requests did not finish in time");
            Ok(())
        }
    };
    let drained = tokio::time::timeout_at(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?grace, "in-flight requests of the other listeners did not finish in time");
    }
    result
}

/// The instant `d` from now; about 30 years from now when that is past what an `Instant` can
/// hold (`--shutdown-grace-period` takes any number of seconds), so never a panic.
fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// Serves a gRPC router on a listener, over TLS when `tls` is set, until `stop` resolves.
async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: GrpcListener,
    tls: Option<Arc<ServerTls>>,
    what: &'static str,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    match (listener, tls) {
        (GrpcListener::Tcp(l), None) => {
            // Envoy sends small unary requests: no Nagle delay on the answers.
            let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
        (GrpcListener::Unix(l), None) => {
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), stop)
                .await
        }
        (GrpcListener::Tcp(l), Some(tls)) => {
            let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(crate::tls::accept(tls, what, incoming), stop)
                .await
        }
        (GrpcListener::Unix(l), Some(tls)) => {
            let incoming = crate::tls::accept(tls, what, UnixListenerStream::new(l));
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
