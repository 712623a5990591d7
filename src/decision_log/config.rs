//! The `decision_logs:` section: OPA's keys plus Portcullis' `file` sink and queue size.

use std::path::PathBuf;

use serde::Deserialize;

use crate::invalid::Invalid;

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

impl DecisionLogs {
    /// Checks the section; `has_service` tells whether `services` has a name.
    pub fn validate(&self, has_service: impl Fn(&str) -> bool) -> Result<(), Invalid> {
        let invalid = |key: &str, message: String| Invalid::new(key, message);
        let dl = self;
        if let Some(name) = &dl.service
            && !has_service(name)
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
                crate::policy::reference::validate_decision_path(p).map_err(|m| invalid(key, m))?;
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
}
