//! The configuration: OPA's config file keys plus Portcullis' own sections.
//!
//! A config is built in three layers, each overriding the one before: defaults, the YAML file
//! (`--config-file`), and `--set key=value` overrides with OPA's dotted keys. The merged tree is
//! then deserialized into typed structs that reject unknown keys, so a typo is an error naming
//! the key instead of a silently ignored setting.
//!
//! Sections that this build does not implement yet (`telemetry`) are refused with a clear
//! error rather than
//! accepted and ignored: a sidecar that silently skips an `authentication` block would let
//! unauthenticated requests through.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

pub use crate::bundle::config::{BundleConfig, KeyConfig, Polling, Signing};

/// A configuration error. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config file: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    #[error("--set {arg}: {message}")]
    Set { arg: String, message: String },
}

/// Where a config value came from, for error messages.
const SET_SOURCE: &str = "--set";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub plugins: Plugins,
    #[serde(default)]
    pub decision_logs: DecisionLogs,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub distributed_tracing: Option<DistributedTracing>,
    /// OPA's default decision for `GET/POST /v1/data` without a path (accepted, unused by the
    /// Check path).
    #[serde(default)]
    pub default_decision: Option<String>,
    #[serde(default)]
    pub default_authorization_decision: Option<String>,
    /// Remote HTTP services (bundles, decision-log upload).
    #[serde(default)]
    pub services: crate::services::Services,
    /// OPA bundles to download and activate, by name.
    #[serde(default)]
    pub bundles: BTreeMap<String, BundleConfig>,
    /// Keys that verify bundle signatures, by key id.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    /// Where downloaded bundles with `persist: true` are kept (OPA's default: `.opa` in the
    /// working directory).
    #[serde(default)]
    pub persistence_directory: Option<PathBuf>,
    /// Portcullis: the runtime that serves everything.
    #[serde(default)]
    pub runtime: Runtime,
    /// Portcullis: authentication before Rego (DESIGN §5).
    #[serde(default)]
    pub authentication: Option<crate::authn::config::Authentication>,
    /// Portcullis: the internal token minted on allow (DESIGN §6).
    #[serde(default)]
    pub internal_token: Option<crate::token::config::InternalToken>,
    /// Portcullis: the gateway gRPC API; served only when this section is present.
    #[serde(default)]
    pub gateway: Option<crate::gateway::GatewayConfig>,
    /// Portcullis: namespaces besides the default one, each with its own paths.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

/// `namespaces.<name>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Policy and data files or directories, read like the PATH arguments.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

/// `plugins:` — only the Envoy plugin is known.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    #[serde(default)]
    pub envoy_ext_authz_grpc: ExtAuthz,
}

/// `plugins.envoy_ext_authz_grpc` (alias `envoy.ext_authz.grpc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtAuthz {
    #[serde(default = "default_addr")]
    pub addr: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Deprecated in OPA-Envoy; exclusive with `path`.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub enable_reflection: bool,
    #[serde(default = "default_max_recv")]
    pub grpc_max_recv_msg_size: usize,
    #[serde(default = "default_max_send")]
    pub grpc_max_send_msg_size: usize,
    #[serde(default)]
    pub skip_request_body_parse: bool,
    #[serde(default)]
    pub enable_performance_metrics: bool,
    #[serde(default)]
    pub proto_descriptor: Option<PathBuf>,
    #[serde(default)]
    pub grpc_request_duration_seconds_buckets: Option<Vec<f64>>,
    /// Portcullis: the longest one policy evaluation may run before the Check fails with a gRPC
    /// error (well under Envoy's default 200 ms ext_authz timeout).
    #[serde(default = "default_eval_timeout_ms")]
    pub eval_timeout_ms: u64,
}

impl Default for ExtAuthz {
    fn default() -> Self {
        Self {
            addr: default_addr(),
            path: None,
            query: None,
            dry_run: false,
            enable_reflection: false,
            grpc_max_recv_msg_size: default_max_recv(),
            grpc_max_send_msg_size: default_max_send(),
            skip_request_body_parse: false,
            enable_performance_metrics: false,
            proto_descriptor: None,
            grpc_request_duration_seconds_buckets: None,
            eval_timeout_ms: default_eval_timeout_ms(),
        }
    }
}

/// The default decision path, as in OPA-Envoy.
pub const DEFAULT_PATH: &str = "envoy/authz/allow";

impl ExtAuthz {
    /// The decision path, `envoy/authz/allow` unless configured.
    pub fn decision_path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_PATH)
    }

    /// The policy evaluation time limit.
    pub fn eval_timeout(&self) -> Duration {
        Duration::from_millis(self.eval_timeout_ms)
    }
}

fn default_addr() -> String {
    ":9191".to_string()
}
fn default_max_recv() -> usize {
    4 * 1024 * 1024
}
fn default_max_send() -> usize {
    i32::MAX as usize
}
fn default_eval_timeout_ms() -> u64 {
    100
}

/// `decision_logs:` — OPA's keys plus `file` (Portcullis). See the README's "Observability".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogs {
    /// JSON lines on stdout.
    #[serde(default)]
    pub console: bool,
    /// Upload to `services.<service>.url` + `resource`.
    #[serde(default)]
    pub service: Option<String>,
    /// Upload path under the service URL; default `/logs`.
    #[serde(default)]
    pub resource: Option<String>,
    /// OPA's shorthand for `resource: /logs/<partition_name>`.
    #[serde(default)]
    pub partition_name: Option<String>,
    #[serde(default)]
    pub reporting: Reporting,
    /// The mask policy's path; default `system/log/mask`.
    #[serde(default)]
    pub mask_decision: Option<String>,
    /// The drop policy's path; default `system/log/drop`.
    #[serde(default)]
    pub drop_decision: Option<String>,
    /// Portcullis: JSON lines to a file, rotated by size.
    #[serde(default)]
    pub file: Option<DecisionLogFile>,
    /// Portcullis: how many events may wait for the log writer before new ones are dropped
    /// (and counted); default 8192.
    #[serde(default)]
    pub queue_size: Option<usize>,
}

impl DecisionLogs {
    /// The upload path under the service URL.
    pub fn resource(&self) -> String {
        match (&self.partition_name, &self.resource) {
            (Some(p), _) => format!("/logs/{p}"),
            (None, Some(r)) => r.clone(),
            (None, None) => "/logs".to_string(),
        }
    }
}

/// `decision_logs.reporting` (OPA's keys). Delays accept fractions of a second.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporting {
    /// `size` or `event`; both are bounded by `buffer_size_limit_events` and, when set,
    /// `buffer_size_limit_bytes`.
    #[serde(default)]
    pub buffer_type: Option<String>,
    #[serde(default)]
    pub buffer_size_limit_bytes: Option<u64>,
    #[serde(default)]
    pub buffer_size_limit_events: Option<u64>,
    #[serde(default)]
    pub upload_size_limit_bytes: Option<u64>,
    #[serde(default)]
    pub min_delay_seconds: Option<f64>,
    #[serde(default)]
    pub max_delay_seconds: Option<f64>,
    /// Only `periodic` is supported.
    #[serde(default)]
    pub trigger: Option<String>,
}

/// `decision_logs.file` (Portcullis).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogFile {
    pub path: PathBuf,
    /// Rotate when the file would grow past this size; default 100 MiB.
    #[serde(default = "default_log_file_size")]
    pub max_size_bytes: u64,
    /// Rotated files kept (`path.1` newest ... `path.N`); default 3.
    #[serde(default = "default_log_file_backups")]
    pub max_backups: usize,
}

fn default_log_file_size() -> u64 {
    100 * 1024 * 1024
}
fn default_log_file_backups() -> usize {
    3
}

/// `distributed_tracing:` (OPA's block).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedTracing {
    /// `grpc` (OTLP over gRPC); the only supported type.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Collector address, `host:port` or `http://host:port`; default `localhost:4317`.
    #[serde(default)]
    pub address: Option<String>,
    /// Percentage of new traces sampled (a sampled parent is always followed); default 100.
    #[serde(default)]
    pub sample_percentage: Option<f64>,
    /// default `portcullis`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Only `off` (plaintext) is supported.
    #[serde(default)]
    pub encryption: Option<String>,
    #[serde(default)]
    pub batch_span_processor_options: Option<BatchSpanProcessorOptions>,
}

/// `distributed_tracing.batch_span_processor_options` (OPA's keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpanProcessorOptions {
    #[serde(default)]
    pub max_queue_size: Option<usize>,
    #[serde(default)]
    pub max_export_batch_size: Option<usize>,
    #[serde(default)]
    pub schedule_delay_millis: Option<u64>,
    #[serde(default)]
    pub export_timeout_millis: Option<u64>,
}

/// `runtime:` — Portcullis' process settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Tokio worker threads; default: the number of CPUs, at most 4 (a sidecar shares its pod).
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

/// Sections that belong to the product but that this build refuses rather than ignores.
const NOT_YET_SUPPORTED: &[&str] = &["telemetry"];

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// A host name that needs resolving (e.g. `localhost:8181`).
    Host(String),
    /// `unix:///path/to.sock`
    Unix(PathBuf),
    /// `unix://@name` — a Linux abstract socket.
    Abstract(String),
}

impl ListenAddr {
    /// Parses OPA's address forms: `:9191`, `host:port`, `grpc://host:port`, `unix:///path`,
    /// `unix://@abstract`.
    pub fn parse(addr: &str) -> Result<Self, String> {
        let addr = addr.trim();
        if let Some(rest) = addr.strip_prefix("unix://") {
            if let Some(name) = rest.strip_prefix('@') {
                if name.is_empty() {
                    return Err("abstract socket name is empty".into());
                }
                return Ok(Self::Abstract(name.to_string()));
            }
            if rest.is_empty() {
                return Err("unix socket path is empty".into());
            }
            return Ok(Self::Unix(PathBuf::from(rest)));
        }
        let hostport = addr
            .strip_prefix("grpc://")
            .or_else(|| addr.strip_prefix("tcp://"))
            .or_else(|| addr.strip_prefix("http://"))
            .unwrap_or(addr);
        if let Some(port) = hostport.strip_prefix(':') {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid port in {addr:?}"))?;
            return Ok(Self::Tcp(SocketAddr::from(([0, 0, 0, 0], port))));
        }
        if let Ok(sa) = hostport.parse::<SocketAddr>() {
            return Ok(Self::Tcp(sa));
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Host(hostport.to_string()))
            }
            _ => Err(format!(
                "expected host:port, :port or unix:///path, got {addr:?}"
            )),
        }
    }
}

impl Config {
    /// Builds the config from an optional file and `--set` overrides.
    pub fn load(file: Option<&Path>, sets: &[String]) -> Result<Self, ConfigError> {
        let (mut tree, source) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.to_path_buf(),
                    source,
                })?;
                let name = path.display().to_string();
                (parse_yaml(&text, &name)?, name)
            }
            None => (Json::Object(Default::default()), SET_SOURCE.to_string()),
        };
        normalize_alias(&mut tree, &source)?;
        for arg in sets {
            apply_set(&mut tree, arg)?;
        }
        normalize_alias(&mut tree, SET_SOURCE)?;
        Self::from_tree(tree, &source)
    }

    /// Builds the config from an already-parsed YAML/JSON tree.
    pub fn from_tree(tree: Json, source: &str) -> Result<Self, ConfigError> {
        if let Json::Object(map) = &tree {
            for key in NOT_YET_SUPPORTED {
                if map.contains_key(*key) {
                    return Err(ConfigError::Invalid {
                        file: source.to_string(),
                        key: (*key).to_string(),
                        message: "this section is not supported by this build of portcullis; \
                                  remove it rather than have it ignored"
                            .to_string(),
                    });
                }
            }
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                file: source.to_string(),
                key: if key == "." { "(root)".into() } else { key },
                message: e.into_inner().to_string(),
            }
        })?;
        config.validate(source)?;
        Ok(config)
    }

    fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key: key.to_string(),
            message,
        };
        let ext = &self.plugins.envoy_ext_authz_grpc;
        if ext.path.is_some() && ext.query.is_some() {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc",
                "specify only one of \"path\" and \"query\"".into(),
            ));
        }
        if ext.query.is_some() {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc.query",
                "the deprecated \"query\" form is not supported; use \"path\"".into(),
            ));
        }
        if let Some(path) = &ext.path {
            validate_decision_path(path)
                .map_err(|m| invalid("plugins.envoy_ext_authz_grpc.path", m))?;
        }
        ListenAddr::parse(&ext.addr)
            .map_err(|m| invalid("plugins.envoy_ext_authz_grpc.addr", m))?;
        if ext.grpc_max_recv_msg_size == 0 {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc.grpc-max-recv-msg-size",
                "must be greater than 0".into(),
            ));
        }
        if ext.grpc_max_send_msg_size == 0 {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc.grpc-max-send-msg-size",
                "must be greater than 0".into(),
            ));
        }
        if ext.eval_timeout_ms == 0 {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc.eval-timeout-ms",
                "must be greater than 0".into(),
            ));
        }
        if let Some(gateway) = &self.gateway {
            gateway.validate().map_err(|(key, m)| invalid(&key, m))?;
        }
        for name in self.namespaces.keys() {
            let key = format!("namespaces.{name}");
            if name == crate::namespaces::DEFAULT_NAMESPACE {
                return Err(invalid(
                    &key,
                    "the default namespace serves the PATH arguments; it has no paths here".into(),
                ));
            }
            crate::namespaces::validate_name(name).map_err(|e| invalid(&key, e.to_string()))?;
        }
        if let Some(authn) = &self.authentication {
            authn.validate().map_err(|(key, m)| invalid(&key, m))?;
        }
        if let Some(token) = &self.internal_token {
            token.validate().map_err(|(key, m)| invalid(&key, m))?;
        }
        if let Some(b) = &ext.grpc_request_duration_seconds_buckets
            && (b.is_empty() || b.iter().any(|x| !x.is_finite() || *x <= 0.0))
        {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc.grpc-request-duration-seconds-buckets",
                "expected a non-empty list of positive numbers".into(),
            ));
        }
        self.validate_decision_logs(source)?;
        self.validate_tracing(source)?;
        self.validate_bundles(source)?;
        if let Some(n) = self.runtime.worker_threads
            && n == 0
        {
            return Err(invalid(
                "runtime.worker_threads",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_decision_logs(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key: format!("decision_logs.{key}"),
            message,
        };
        let dl = &self.decision_logs;
        if let Some(name) = &dl.service
            && self.services.get(name).is_none()
        {
            return Err(invalid(
                "service",
                format!("no service named {name:?} under services"),
            ));
        }
        let r = &dl.reporting;
        match (r.min_delay_seconds, r.max_delay_seconds) {
            (Some(_), None) => {
                return Err(invalid(
                    "reporting",
                    "min_delay_seconds needs max_delay_seconds".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "reporting",
                    "max_delay_seconds needs min_delay_seconds".into(),
                ));
            }
            (Some(min), Some(max)) => {
                if !(min.is_finite() && min > 0.0) {
                    return Err(invalid(
                        "reporting.min_delay_seconds",
                        "must be greater than 0".into(),
                    ));
                }
                if !(max.is_finite() && max >= min) {
                    return Err(invalid(
                        "reporting.max_delay_seconds",
                        "must be at least min_delay_seconds".into(),
                    ));
                }
            }
            (None, None) => {}
        }
        if let Some(t) = &r.buffer_type
            && t != "size"
            && t != "event"
        {
            return Err(invalid(
                "reporting.buffer_type",
                format!("expected \"size\" or \"event\", got {t:?}"),
            ));
        }
        if let Some(t) = &r.trigger
            && t != "periodic"
        {
            return Err(invalid(
                "reporting.trigger",
                format!("only \"periodic\" is supported, got {t:?}"),
            ));
        }
        for (key, v) in [
            (
                "reporting.buffer_size_limit_bytes",
                r.buffer_size_limit_bytes,
            ),
            (
                "reporting.buffer_size_limit_events",
                r.buffer_size_limit_events,
            ),
            (
                "reporting.upload_size_limit_bytes",
                r.upload_size_limit_bytes,
            ),
        ] {
            if v == Some(0) {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        for (key, path) in [
            ("mask_decision", &dl.mask_decision),
            ("drop_decision", &dl.drop_decision),
        ] {
            if let Some(p) = path {
                validate_decision_path(p).map_err(|m| invalid(key, m))?;
            }
        }
        if let Some(f) = &dl.file {
            if f.path.as_os_str().is_empty() {
                return Err(invalid("file.path", "is empty".into()));
            }
            if f.max_size_bytes == 0 {
                return Err(invalid(
                    "file.max_size_bytes",
                    "must be greater than 0".into(),
                ));
            }
        }
        if dl.queue_size == Some(0) {
            return Err(invalid("queue_size", "must be greater than 0".into()));
        }
        Ok(())
    }

    fn validate_tracing(&self, source: &str) -> Result<(), ConfigError> {
        let Some(t) = &self.distributed_tracing else {
            return Ok(());
        };
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key: format!("distributed_tracing.{key}"),
            message,
        };
        if let Some(kind) = &t.kind
            && kind != "grpc"
        {
            return Err(invalid(
                "type",
                format!("only \"grpc\" (OTLP over gRPC) is supported, got {kind:?}"),
            ));
        }
        if let Some(p) = t.sample_percentage
            && !(0.0..=100.0).contains(&p)
        {
            return Err(invalid(
                "sample_percentage",
                "must be between 0 and 100".into(),
            ));
        }
        if let Some(e) = &t.encryption
            && e != "off"
        {
            return Err(invalid(
                "encryption",
                format!("only \"off\" is supported by this build, got {e:?}"),
            ));
        }
        if let Some(a) = &t.address
            && a.trim().is_empty()
        {
            return Err(invalid("address", "is empty".into()));
        }
        Ok(())
    }
}

/// Checks a decision path such as `envoy/authz/allow`.
pub fn validate_decision_path(path: &str) -> Result<(), String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err("the decision path is empty".into());
    }
    for part in trimmed.split('/') {
        if part.is_empty() {
            return Err(format!("empty segment in decision path {path:?}"));
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "segment {part:?} of decision path {path:?} has characters other than letters, \
                 digits, '_' and '-'"
            ));
        }
    }
    Ok(())
}

fn parse_yaml(text: &str, file: &str) -> Result<Json, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Json::Object(Default::default()));
    }
    let value: Json = yaml_serde::from_str(text).map_err(|e| ConfigError::Yaml {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    match value {
        Json::Null => Ok(Json::Object(Default::default())),
        Json::Object(_) => Ok(value),
        _ => Err(ConfigError::Yaml {
            file: file.to_string(),
            message: "the top level must be a mapping".into(),
        }),
    }
}

/// Folds OPA's alias `envoy.ext_authz.grpc` into `plugins.envoy_ext_authz_grpc`.
fn normalize_alias(tree: &mut Json, source: &str) -> Result<(), ConfigError> {
    let Json::Object(root) = tree else {
        return Ok(());
    };
    let Some(envoy) = root.remove("envoy") else {
        return Ok(());
    };
    let alias_err = |message: &str| ConfigError::Invalid {
        file: source.to_string(),
        key: "envoy".into(),
        message: message.to_string(),
    };
    let Json::Object(mut envoy) = envoy else {
        return Err(alias_err("expected a mapping with key ext_authz"));
    };
    let Some(Json::Object(mut ext)) = envoy.remove("ext_authz") else {
        return Err(alias_err("expected envoy.ext_authz.grpc"));
    };
    if !envoy.is_empty() {
        return Err(alias_err("only envoy.ext_authz.grpc is known"));
    }
    let Some(grpc) = ext.remove("grpc") else {
        return Err(alias_err("expected envoy.ext_authz.grpc"));
    };
    if !ext.is_empty() {
        return Err(alias_err("only envoy.ext_authz.grpc is known"));
    }
    let plugins = root
        .entry("plugins")
        .or_insert_with(|| Json::Object(Default::default()));
    let Json::Object(plugins) = plugins else {
        return Err(ConfigError::Invalid {
            file: source.to_string(),
            key: "plugins".into(),
            message: "expected a mapping".into(),
        });
    };
    match plugins.get_mut("envoy_ext_authz_grpc") {
        None => {
            plugins.insert("envoy_ext_authz_grpc".into(), grpc);
        }
        Some(existing) => merge(existing, grpc),
    }
    Ok(())
}

/// Deep-merges `over` into `base`.
fn merge(base: &mut Json, over: Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Applies one `--set a.b.c=value`. The value is read as a YAML scalar, as OPA does, so
/// `true`, `42` and `1.5` are typed and anything else is a string.
fn apply_set(tree: &mut Json, arg: &str) -> Result<(), ConfigError> {
    let err = |message: &str| ConfigError::Set {
        arg: arg.to_string(),
        message: message.to_string(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(err("the key is empty or has an empty segment"));
    }
    let value = parse_scalar(raw);
    let mut node = tree;
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return Err(err("the key is empty"));
    };
    for part in parents {
        let Json::Object(map) = node else {
            return Err(err("a parent of this key is not a mapping"));
        };
        node = map
            .entry((*part).to_string())
            .or_insert_with(|| Json::Object(Default::default()));
    }
    let Json::Object(map) = node else {
        return Err(err("a parent of this key is not a mapping"));
    };
    map.insert((*last).to_string(), value);
    Ok(())
}

fn parse_scalar(raw: &str) -> Json {
    match raw {
        "true" => return Json::Bool(true),
        "false" => return Json::Bool(false),
        "null" => return Json::Null,
        _ => {}
    }
    if let Ok(n) = raw.parse::<i64>() {
        return Json::from(n);
    }
    if let Ok(f) = raw.parse::<f64>()
        && f.is_finite()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Json::Number(n);
    }
    // Lists such as `[a, b]` (OPA's strvals accepts them for bucket lists).
    if raw.starts_with('[')
        && let Ok(v @ Json::Array(_)) = yaml_serde::from_str::<Json>(raw)
    {
        return v;
    }
    Json::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str, sets: &[&str]) -> Result<Config, ConfigError> {
        let mut tree = parse_yaml(yaml, "test.yaml")?;
        normalize_alias(&mut tree, "test.yaml")?;
        for s in sets {
            apply_set(&mut tree, s)?;
        }
        normalize_alias(&mut tree, SET_SOURCE)?;
        Config::from_tree(tree, "test.yaml")
    }

    #[test]
    fn defaults_match_opa_envoy() {
        let c = load_str("", &[]).unwrap();
        let e = &c.plugins.envoy_ext_authz_grpc;
        assert_eq!(e.addr, ":9191");
        assert_eq!(e.decision_path(), "envoy/authz/allow");
        assert_eq!(e.grpc_max_recv_msg_size, 4 * 1024 * 1024);
        assert!(!e.dry_run);
        assert!(!c.decision_logs.console);
    }

    #[test]
    fn set_overrides_file_and_types_values() {
        let yaml = "plugins:\n  envoy_ext_authz_grpc:\n    addr: :9000\n    dry-run: false\n";
        let c = load_str(
            yaml,
            &[
                "plugins.envoy_ext_authz_grpc.addr=127.0.0.1:9191",
                "plugins.envoy_ext_authz_grpc.dry-run=true",
                "plugins.envoy_ext_authz_grpc.path=a/b",
                "decision_logs.console=false",
            ],
        )
        .unwrap();
        let e = &c.plugins.envoy_ext_authz_grpc;
        assert_eq!(e.addr, "127.0.0.1:9191");
        assert!(e.dry_run);
        assert_eq!(e.decision_path(), "a/b");
    }

    #[test]
    fn alias_block_is_accepted() {
        let yaml = "envoy:\n  ext_authz:\n    grpc:\n      addr: :7000\n      path: x/y\n";
        let c = load_str(yaml, &[]).unwrap();
        assert_eq!(c.plugins.envoy_ext_authz_grpc.addr, ":7000");
        assert_eq!(c.plugins.envoy_ext_authz_grpc.decision_path(), "x/y");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("plugins:\n  envoy_ext_authz_grpc:\n    adr: x\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.yaml"), "{msg}");
        assert!(msg.contains("adr"), "{msg}");
        let err = load_str("", &["plugins.envoy_ext_authz_grpc.nope=1"]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = load_str("", &["plugins.other_plugin.x=1"]).unwrap_err();
        assert!(err.to_string().contains("other_plugin"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = load_str("", &["plugins.envoy_ext_authz_grpc.dry-run=maybe"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("plugins.envoy_ext_authz_grpc.dry-run"),
            "{msg}"
        );
        let err = load_str("", &["plugins.envoy_ext_authz_grpc.addr=nohost"]).unwrap_err();
        assert!(err.to_string().contains("addr"), "{err}");
        let err = load_str("", &["plugins.envoy_ext_authz_grpc.path=a//b"]).unwrap_err();
        assert!(err.to_string().contains("path"), "{err}");
    }

    #[test]
    fn path_and_query_are_exclusive() {
        let err = load_str(
            "",
            &[
                "plugins.envoy_ext_authz_grpc.path=a/b",
                "plugins.envoy_ext_authz_grpc.query=data.a.b",
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("only one"), "{err}");
    }

    #[test]
    fn unsupported_sections_are_refused_not_ignored() {
        let err = load_str("gateway:\n  addr: x\n", &[]).unwrap_err();
        assert!(err.to_string().contains("gateway"), "{err}");
    }

    #[test]
    fn gateway_and_namespaces_sections() {
        let c = load_str("", &[]).unwrap();
        assert!(c.gateway.is_none());
        let c = load_str(
            "gateway:\n  cors_origins: [https://app.example.com]\nnamespaces:\n  acme:\n    paths: [/x]\n",
            &["gateway.allow_open=true"],
        )
        .unwrap();
        let g = c.gateway.unwrap();
        assert_eq!(g.addr, "127.0.0.1:9292");
        assert!(g.allow_open && g.enabled);
        assert_eq!(c.namespaces["acme"].paths, vec![PathBuf::from("/x")]);
        let c = load_str("", &["gateway.addr=127.0.0.1:1"]).unwrap();
        assert_eq!(c.gateway.unwrap().addr, "127.0.0.1:1");
        for (yaml, key) in [
            (
                "gateway:\n  cors_origins: ['*']\n",
                "gateway.cors_origins[0]",
            ),
            ("gateway:\n  addr: unix:///x.sock\n", "gateway.addr"),
            ("gateway:\n  nope: 1\n", "nope"),
            ("namespaces:\n  'a b': {}\n", "namespaces.a b"),
            ("namespaces:\n  default: {}\n", "namespaces.default"),
        ] {
            let err = load_str(yaml, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn observability_sections_are_checked() {
        let c = load_str(
            "services: {logs: {url: http://127.0.0.1:1}}\n\
             decision_logs:\n  service: logs\n  reporting: {min_delay_seconds: 0.5, max_delay_seconds: 1}\n  \
             file: {path: /tmp/d.log}\n\
             distributed_tracing: {type: grpc, address: 'otel:4317', sample_percentage: 10}\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.decision_logs.resource(), "/logs");
        assert_eq!(c.decision_logs.file.unwrap().max_backups, 3);
        for (yaml, key) in [
            ("decision_logs: {service: nope}", "decision_logs.service"),
            (
                "decision_logs: {reporting: {min_delay_seconds: 5}}",
                "decision_logs.reporting",
            ),
            (
                "decision_logs: {reporting: {min_delay_seconds: 5, max_delay_seconds: 1}}",
                "decision_logs.reporting.max_delay_seconds",
            ),
            (
                "decision_logs: {reporting: {trigger: manual}}",
                "decision_logs.reporting.trigger",
            ),
            (
                "decision_logs: {reporting: {upload_size_limit_bytes: 0}}",
                "decision_logs.reporting.upload_size_limit_bytes",
            ),
            (
                "decision_logs: {mask_decision: 'a//b'}",
                "decision_logs.mask_decision",
            ),
            (
                "decision_logs: {file: {path: x, max_size_bytes: 0}}",
                "decision_logs.file.max_size_bytes",
            ),
            (
                "distributed_tracing: {type: http}",
                "distributed_tracing.type",
            ),
            (
                "distributed_tracing: {sample_percentage: 101}",
                "distributed_tracing.sample_percentage",
            ),
            (
                "distributed_tracing: {encryption: tls}",
                "distributed_tracing.encryption",
            ),
            (
                "plugins: {envoy_ext_authz_grpc: {grpc-request-duration-seconds-buckets: []}}",
                "grpc-request-duration-seconds-buckets",
            ),
        ] {
            let err = load_str(yaml, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn set_without_equals_is_an_error() {
        let err = load_str("", &["decision_logs.console"]).unwrap_err();
        assert!(matches!(err, ConfigError::Set { .. }), "{err}");
    }

    #[test]
    fn listen_addr_forms() {
        assert_eq!(
            ListenAddr::parse(":9191").unwrap(),
            ListenAddr::Tcp("0.0.0.0:9191".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("grpc://127.0.0.1:1").unwrap(),
            ListenAddr::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("localhost:8181").unwrap(),
            ListenAddr::Host("localhost:8181".into())
        );
        assert_eq!(
            ListenAddr::parse("unix:///tmp/x.sock").unwrap(),
            ListenAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            ListenAddr::parse("unix://@authz").unwrap(),
            ListenAddr::Abstract("authz".into())
        );
        assert!(ListenAddr::parse("unix://@").is_err());
        assert!(ListenAddr::parse("host").is_err());
        assert!(ListenAddr::parse(":99999").is_err());
    }
}
