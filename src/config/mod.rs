//! The configuration: OPA's config file keys plus Portcullis' own sections.
//!
//! A config is built in three layers, each overriding the one before: defaults, the YAML file
//! (`--config-file`), and `--set key=value` overrides with OPA's dotted keys. The merged tree is
//! then deserialized into typed structs that reject unknown keys, so a typo is an error naming
//! the key instead of a silently ignored setting.
//!
//! Sections that this build does not implement yet (`telemetry`) are refused with a clear
//! error rather than accepted and ignored: a sidecar that silently skips a section it does not
//! know would run with weaker settings than its operator wrote.
//!
//! - [`addr`]: listener addresses in OPA's forms
//! - [`telemetry`]: the `decision_logs` and `distributed_tracing` sections
//! - `tree`: YAML to a JSON tree, OPA's `envoy.ext_authz.grpc` alias, `--set` overrides

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

mod bundles;
mod logs;
#[cfg(test)]
mod tests;
mod tree;

pub use crate::decision_log::config::{DecisionLogFile, DecisionLogs, Reporting};
pub use crate::listen::ListenAddr;
pub use crate::policy::reference::{DEFAULT_PATH, validate_decision_path};
pub use crate::telemetry::trace::{BatchSpanProcessorOptions, DistributedTracing};
use tree::{apply_set, normalize_alias, parse_yaml};

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
    /// Where the config came from (the file, or `--set`), for errors found after loading.
    #[serde(skip)]
    pub source: String,
    /// The merged config tree as given (file and `--set`), for OPA's `GET /v1/config`, which
    /// redacts it before answering.
    #[serde(skip)]
    pub tree: Json,
    /// This process' id (OPA's `labels.id`), made once when the config is loaded so that the
    /// decision log, `/v1/config` and `/v1/status` name the same instance.
    #[serde(skip)]
    pub instance_id: String,
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
    /// Portcullis: the HTTP authorization listener (NGINX, Traefik, Caddy, Envoy's
    /// `http_service`); served only when this section is present.
    #[serde(default)]
    pub envoy_ext_authz_http: Option<crate::authz::http::HttpAuthzConfig>,
    /// Envoy's external processing filter (`envoy.service.ext_proc.v3`); served when present.
    #[serde(default)]
    pub envoy_ext_proc_grpc: Option<crate::authz::ext_proc::ExtProcConfig>,
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
    /// Portcullis: TLS and mTLS on this listener.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
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
            tls: None,
        }
    }
}

impl ExtAuthz {
    /// The decision path, `envoy/authz/allow` unless configured (an empty `path` too, as in
    /// OPA-Envoy).
    pub fn decision_path(&self) -> &str {
        self.path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_PATH)
    }

    /// What the decision log and warnings call the decision: the path, or the deprecated
    /// `query` when that is configured.
    pub fn decision_label(&self) -> &str {
        self.query
            .as_deref()
            .unwrap_or_else(|| self.decision_path())
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

/// `runtime:` — Portcullis' process settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Tokio worker threads; default: the number of CPUs, at most 4 (a sidecar shares its pod).
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// `auto` (default): evaluate the decision rule on regorus' bytecode VM where it compiles
    /// and is known to answer like the interpreter; `interpreter`: always the interpreter.
    #[serde(default)]
    pub policy_engine: crate::policy::EngineChoice,
    /// The memory bound of the process: a policy evaluation running while more than this is
    /// allocated fails (an evaluation error) instead of growing further. Default: three quarters
    /// of the cgroup's memory limit when there is one, else 2 GiB; `0` turns the bound off.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
}

impl Runtime {
    /// The memory bound in bytes, `None` when off.
    pub fn memory_limit(&self) -> Option<u64> {
        match self.memory_limit_bytes {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(crate::policy::default_memory_limit()),
        }
    }
}

/// Sections that belong to the product but that this build refuses rather than ignores.
const NOT_YET_SUPPORTED: &[&str] = &["telemetry"];

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
        let raw = tree.clone();
        let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                file: source.to_string(),
                key: if key == "." { "(root)".into() } else { key },
                message: e.into_inner().to_string(),
            }
        })?;
        config.validate(source)?;
        config.source = source.to_string();
        config.tree = raw;
        config.instance_id = uuid::Uuid::new_v4().to_string();
        Ok(config)
    }

    /// OPA's `labels`: `id` (this instance), `version`, then the config's `labels`.
    pub fn labels_json(&self) -> serde_json::Map<String, Json> {
        let mut labels = serde_json::Map::new();
        let id = if self.instance_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            self.instance_id.clone()
        };
        labels.insert("id".into(), Json::String(id));
        labels.insert(
            "version".into(),
            Json::String(env!("CARGO_PKG_VERSION").into()),
        );
        for (k, v) in &self.labels {
            labels.insert(k.clone(), Json::String(v.clone()));
        }
        labels
    }

    /// A section's refusal, found after loading, as an error naming this config's file.
    pub fn invalid(&self, e: crate::invalid::Invalid) -> ConfigError {
        ConfigError::Invalid {
            file: if self.source.is_empty() {
                SET_SOURCE.to_string()
            } else {
                self.source.clone()
            },
            key: e.key,
            message: e.message,
        }
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
        if let Some(query) = &ext.query
            && query.trim().is_empty()
        {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc.query",
                "must not be empty".into(),
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
        if let Some(h) = &self.plugins.envoy_ext_authz_http {
            h.validate().map_err(|e| {
                invalid(
                    &format!("plugins.envoy_ext_authz_http.{}", e.key),
                    e.message,
                )
            })?;
        }
        if let Some(tls) = &ext.tls {
            tls.validate().map_err(|e| {
                invalid(
                    &format!("plugins.envoy_ext_authz_grpc.tls.{}", e.key),
                    e.message,
                )
            })?;
        }
        if let Some(proc) = &self.plugins.envoy_ext_proc_grpc {
            proc.validate().map_err(|e| {
                invalid(&format!("plugins.envoy_ext_proc_grpc.{}", e.key), e.message)
            })?;
        }
        if let Some(gateway) = &self.gateway {
            gateway
                .validate()
                .map_err(|e| invalid(&format!("gateway.{}", e.key), e.message))?;
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
            authn
                .validate()
                .map_err(|e| invalid(&format!("authentication.{}", e.key), e.message))?;
        }
        if let Some(token) = &self.internal_token {
            token
                .validate()
                .map_err(|e| invalid(&format!("internal_token.{}", e.key), e.message))?;
        }
        if let Some(b) = &ext.grpc_request_duration_seconds_buckets
            && (b.is_empty() || b.iter().any(|x| !x.is_finite() || *x <= 0.0))
        {
            return Err(invalid(
                "plugins.envoy_ext_authz_grpc.grpc-request-duration-seconds-buckets",
                "expected a non-empty list of positive numbers".into(),
            ));
        }
        self.decision_logs
            .validate(|name| self.services.get(name).is_some())
            .map_err(|e| invalid(&format!("decision_logs.{}", e.key), e.message))?;
        if let Some(t) = &self.distributed_tracing {
            t.validate()
                .map_err(|e| invalid(&format!("distributed_tracing.{}", e.key), e.message))?;
        }
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
