//! The decision log's settings, composed from the sections they come from (`decision_logs`,
//! `services`, `labels` and the decision path).

use std::time::Duration;

use serde_json::Value as Json;

use super::Config;
use crate::decision_log::LogSettings;
use crate::decision_log::upload::UploadSettings;

impl Config {
    /// The decision log's settings (the config is already validated).
    pub fn decision_log_settings(&self) -> LogSettings {
        let config = self;
        let dl = &config.decision_logs;
        let labels = config.labels_json();
        let upload = dl.service.as_ref().and_then(|name| {
            let service = config.services.get(name)?;
            let r = &dl.reporting;
            let min = r.min_delay_seconds.unwrap_or(300.0);
            let max = r.max_delay_seconds.unwrap_or(600.0);
            Some(UploadSettings {
                url: format!(
                    "{}/{}",
                    service.url.trim_end_matches('/'),
                    dl.resource().trim_start_matches('/')
                ),
                headers: service
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                bearer: service.credentials.as_ref().and_then(|c| c.bearer.clone()),
                timeout: Duration::from_secs(service.response_header_timeout_seconds.unwrap_or(10)),
                min_delay: Duration::from_secs_f64(min),
                max_delay: Duration::from_secs_f64(max.max(min)),
                upload_limit: usize::try_from(r.upload_size_limit_bytes.unwrap_or(32_768))
                    .unwrap_or(usize::MAX),
                buffer_events: usize::try_from(r.buffer_size_limit_events.unwrap_or(10_000))
                    .unwrap_or(usize::MAX),
                buffer_bytes: r
                    .buffer_size_limit_bytes
                    .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
            })
        });
        LogSettings {
            labels: Json::Object(labels),
            path: config
                .plugins
                .envoy_ext_authz_grpc
                .decision_path()
                .to_string(),
            console: dl.console,
            file: dl.file.clone(),
            upload,
            mask_decision: dl
                .mask_decision
                .clone()
                .unwrap_or_else(|| "system/log/mask".into()),
            drop_decision: dl
                .drop_decision
                .clone()
                .unwrap_or_else(|| "system/log/drop".into()),
            queue_size: dl.queue_size.unwrap_or(crate::decision_log::DEFAULT_QUEUE),
        }
    }
}
