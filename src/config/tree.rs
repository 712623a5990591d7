//! The config as a JSON tree: YAML parsing, OPA's `envoy.ext_authz.grpc` alias, and `--set`
//! overrides with typed scalar values.

use serde_json::Value as Json;

use super::ConfigError;

pub(super) fn parse_yaml(text: &str, file: &str) -> Result<Json, ConfigError> {
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
pub(super) fn normalize_alias(tree: &mut Json, source: &str) -> Result<(), ConfigError> {
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
pub(super) fn apply_set(tree: &mut Json, arg: &str) -> Result<(), ConfigError> {
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
