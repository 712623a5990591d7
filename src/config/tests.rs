//! Config parsing, overrides and validation.

use super::tree::{apply_set, normalize_alias, parse_yaml};
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
    let err = load_str("", &["plugins.envoy_ext_authz_grpc.path=a\tb"]).unwrap_err();
    assert!(err.to_string().contains("path"), "{err}");
    // As in OPA-Envoy: empty segments are skipped, an empty path is the default one.
    let c = load_str("", &["plugins.envoy_ext_authz_grpc.path=/a//b/"]).unwrap();
    assert_eq!(c.plugins.envoy_ext_authz_grpc.decision_path(), "/a//b/");
    let c = load_str("plugins: {envoy_ext_authz_grpc: {path: \"\"}}\n", &[]).unwrap();
    assert_eq!(
        c.plugins.envoy_ext_authz_grpc.decision_path(),
        "envoy/authz/allow"
    );
}

#[test]
fn the_deprecated_query_is_accepted() {
    let c = load_str("", &["plugins.envoy_ext_authz_grpc.query=data.a.b"]).unwrap();
    assert_eq!(c.plugins.envoy_ext_authz_grpc.decision_label(), "data.a.b");
    assert!(load_str("", &["plugins.envoy_ext_authz_grpc.query= "]).is_err());
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
            "decision_logs: {mask_decision: \"a\\tb\"}",
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
fn section_errors_name_the_file_and_the_whole_key() {
    for (yaml, key) in [
        (
            "authentication:\n  policies:\n  - name: a\n    methods: [jwt]\n    jwt: {algorithms: []}\n",
            "authentication.policies[0].jwt.algorithms",
        ),
        (
            "authentication:\n  policies:\n  - name: a\n    methods: [basic]\n",
            "authentication.policies[0].basic",
        ),
        (
            "authentication:\n  trust:\n    oidc: [{issuer: 'https://i', audiences: []}]\n",
            "authentication.trust.oidc[0].audiences",
        ),
        (
            "internal_token: {issuer: x, ttl_seconds: 0}\n",
            "internal_token.ttl_seconds",
        ),
        ("gateway: {audience: ' '}\n", "gateway.audience"),
    ] {
        match load_str(yaml, &[]) {
            Err(ConfigError::Invalid { file, key: got, .. }) => {
                assert_eq!(file, "test.yaml", "{yaml}");
                assert_eq!(got, key, "{yaml}");
            }
            other => panic!("{yaml}: expected an invalid key, got {other:?}"),
        }
    }
}

#[test]
fn http_authorization_is_off_by_default_and_set_turns_it_on() {
    assert!(
        load_str("", &[])
            .unwrap()
            .plugins
            .envoy_ext_authz_http
            .is_none()
    );
    let c = load_str(
        "",
        &[
            "plugins.envoy_ext_authz_http.addr=127.0.0.1:9300",
            "plugins.envoy_ext_authz_http.mode=nginx",
            "plugins.envoy_ext_authz_http.with_body=4096",
        ],
    )
    .unwrap();
    let h = c.plugins.envoy_ext_authz_http.unwrap();
    assert_eq!(h.addr, "127.0.0.1:9300");
    assert_eq!(h.mode, crate::authz::http::Mode::Nginx);
    assert_eq!(h.body_limit(), Some(4096));
    let c = load_str("plugins:\n  envoy_ext_authz_http: {}\n", &[]).unwrap();
    let h = c.plugins.envoy_ext_authz_http.unwrap();
    assert_eq!(
        (h.addr.as_str(), h.mode),
        (":9192", crate::authz::http::Mode::Auto)
    );
}

#[test]
fn http_authorization_refuses_unknown_keys_and_bad_values_by_key() {
    let key = |yaml: &str, sets: &[&str]| match load_str(yaml, sets) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert!(
        key("", &["plugins.envoy_ext_authz_http.modes=nginx"])
            .starts_with("plugins.envoy_ext_authz_http")
    );
    assert_eq!(
        key("", &["plugins.envoy_ext_authz_http.mode=haproxy"]),
        "plugins.envoy_ext_authz_http.mode"
    );
    assert_eq!(
        key("", &["plugins.envoy_ext_authz_http.path_prefix=auth/"]),
        "plugins.envoy_ext_authz_http.path_prefix"
    );
    assert_eq!(
        key(
            "",
            &["plugins.envoy_ext_authz_http.addr=unix:///tmp/a.sock"]
        ),
        "plugins.envoy_ext_authz_http.addr"
    );
}
