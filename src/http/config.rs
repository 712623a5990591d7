//! OPA's Config API (`GET /v1/config`) and Status API (`GET /v1/status`).
//!
//! `/v1/config` answers `{"result": <the config as loaded>}` with what OPA adds (`labels.id`,
//! `labels.version`, `default_decision`, `default_authorization_decision`) and without what
//! OPA removes: `services.*.credentials` and `keys.*.key` / `keys.*.private_key`. Portcullis
//! also removes `services.*.headers` (they may carry credentials) and the gateway's inline
//! secrets (`gateway.jwt_secret`, `gateway.token`, `gateway.password`).
//!
//! `/v1/status` answers `{"result": {"labels", "bundles", "plugins"}}` as OPA's status plugin
//! reports it: each configured bundle with `name`, `active_revision` and its `last_*` times
//! (RFC 3339), `code`/`message` after a failed download; `plugins` with the state (`OK`,
//! `NOT_READY`) of `bundle` (when bundles are configured), `decision_logs` (when configured)
//! and `envoy_ext_authz_grpc`. OPA serves it only with its `status` plugin on; Portcullis
//! always does, and has no `metrics` in it (see `/metrics`).

use std::time::SystemTime;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use serde_json::{Map, Value as Json, json};

use super::Api;
use super::params::{Params, ok_json};

/// OPA's default decision and authorization decision.
pub const DEFAULT_DECISION: &str = "/system/main";
pub const DEFAULT_AUTHORIZATION_DECISION: &str = "/system/authz/allow";

/// The config as `/v1/config` shows it (see the module docs): the loaded `tree` with
/// OPA's `labels`, `default_decision` and `default_authorization_decision` set, secrets removed.
pub fn redacted(
    tree: &Json,
    labels: &Map<String, Json>,
    default_decision: &str,
    authorization_decision: &str,
) -> Json {
    let mut tree = match tree {
        Json::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let strip = |section: Option<&mut Json>, keys: &[&str]| {
        let each: Vec<&mut Json> = match section {
            Some(Json::Object(m)) => m.values_mut().collect(),
            Some(Json::Array(a)) => a.iter_mut().collect(),
            _ => Vec::new(),
        };
        for entry in each {
            if let Json::Object(m) = entry {
                for k in keys {
                    m.remove(*k);
                }
            }
        }
    };
    strip(tree.get_mut("services"), &["credentials", "headers"]);
    strip(tree.get_mut("keys"), &["key", "private_key"]);
    if let Some(Json::Object(gateway)) = tree.get_mut("gateway") {
        for k in ["jwt_secret", "token", "password"] {
            gateway.remove(k);
        }
    }
    tree.insert("labels".into(), Json::Object(labels.clone()));
    tree.insert(
        "default_decision".into(),
        Json::String(default_decision.into()),
    );
    tree.insert(
        "default_authorization_decision".into(),
        Json::String(authorization_decision.into()),
    );
    Json::Object(tree)
}

/// `GET /v1/config`.
pub async fn get_config(State(app): State<Api>, uri: Uri) -> Response {
    let params = Params::from_uri(&uri);
    ok_json(&json!({"result": app.rest.config}), params.pretty())
}

fn time(t: Option<SystemTime>) -> Option<Json> {
    t.map(|t| {
        Json::String(
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        )
    })
}

/// `GET /v1/status`.
pub async fn get_status(State(app): State<Api>, uri: Uri) -> Response {
    let params = Params::from_uri(&uri);
    let mut bundles = Map::new();
    for s in app.store.bundle_status().all() {
        let mut b = Map::new();
        b.insert("name".into(), Json::String(s.name.clone()));
        if let Some(r) = &s.active_revision {
            b.insert("active_revision".into(), Json::String(r.clone()));
        }
        for (key, t) in [
            ("last_request", s.last_request),
            ("last_successful_request", s.last_successful_request),
            ("last_successful_download", s.last_successful_download),
            ("last_successful_activation", s.last_successful_activation),
        ] {
            if let Some(t) = time(t) {
                b.insert(key.into(), t);
            }
        }
        if let Some(e) = &s.last_error {
            b.insert("code".into(), Json::String("bundle_error".into()));
            b.insert("message".into(), Json::String(e.clone()));
        }
        bundles.insert(s.name, Json::Object(b));
    }
    let mut plugins = Map::new();
    if !app.store.expected_bundles().is_empty() {
        let state = if app.store.is_ready() {
            "OK"
        } else {
            "NOT_READY"
        };
        plugins.insert("bundle".into(), json!({"state": state}));
    }
    if app.rest.decision_logs {
        plugins.insert("decision_logs".into(), json!({"state": "OK"}));
    }
    plugins.insert("envoy_ext_authz_grpc".into(), json!({"state": "OK"}));
    let result = json!({
        "labels": app.rest.labels,
        "bundles": bundles,
        "plugins": plugins,
    });
    ok_json(&json!({ "result": result }), params.pretty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed_as_opa_removes_them() {
        let tree = json!({
            "services": {"acme": {"url": "https://x", "credentials": {"bearer": {"token": "s3cret"}},
                                   "headers": {"Authorization": "Bearer s3cret"}}},
            "keys": {"k": {"algorithm": "HS256", "key": "s3cret", "private_key": "s3cret"}},
            "gateway": {"addr": "127.0.0.1:9292", "jwt_secret": "s3cret", "token": "s3cret", "password": "s3cret"},
            "labels": {"region": "west"},
        });
        let labels = json!({"id": "i", "version": "v", "region": "west"});
        let Json::Object(labels) = labels else {
            unreachable!()
        };
        let out = redacted(
            &tree,
            &labels,
            DEFAULT_DECISION,
            DEFAULT_AUTHORIZATION_DECISION,
        );
        assert!(!out.to_string().contains("s3cret"), "{out}");
        assert_eq!(out["services"]["acme"], json!({"url": "https://x"}));
        assert_eq!(out["keys"]["k"], json!({"algorithm": "HS256"}));
        assert_eq!(out["gateway"], json!({"addr": "127.0.0.1:9292"}));
        assert_eq!(
            out["labels"],
            json!({"id": "i", "version": "v", "region": "west"})
        );
        assert_eq!(out["default_decision"], "/system/main");
        assert_eq!(out["default_authorization_decision"], "/system/authz/allow");
        // A services list is redacted the same way.
        let out = redacted(
            &json!({"services": [{"name": "a", "credentials": {}}]}),
            &labels,
            "",
            "",
        );
        assert_eq!(out["services"], json!([{"name": "a"}]));
    }
}
