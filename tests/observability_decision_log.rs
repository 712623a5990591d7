//! Decision logs end to end: a real server on loopback, real Checks through a tonic client,
//! events read back from the file sink and checked field by field; masking and dropping with
//! `system.log.mask` / `system.log.drop`; rotation; subscriptions.

mod support;

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use portcullis::client::RequestSpec;
use portcullis::config::Config;
use portcullis::decision_log::{DecisionLog, DropReason, LogSettings};
use serde_json::{Value as Json, json};
use support::{Spec, TestServer, decision_id};

const POLICY: &str = r#"package envoy.authz

default allow := false

allow if input.parsed_path[0] == "ok"

allow := true if input.parsed_path[0] == "conflict"
allow := false if input.parsed_path[0] == "conflict"
"#;

const MASK: &str = r#"package system.log

mask contains "/input/attributes/request/http/headers/x-secret"

mask contains {"op": "upsert", "path": "/input/attributes/request/http/headers/x-user", "value": "<redacted>"}

drop if input.input.parsed_path[0] == "health"
"#;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn request(yaml: &str) -> CheckRequest {
    RequestSpec::from_yaml_str(yaml, Path::new("test"))
        .expect("request spec")
        .to_check_request()
}

/// A server whose decision log writes to `<dir>/decisions.log` (plus `extra` config).
async fn start(policies: Vec<(&str, &str)>, extra: &str) -> (TestServer, DecisionLog, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("decisions.log").display().to_string();
    let config =
        format!("labels: {{app: shop}}\ndecision_logs:\n  file: {{path: {file:?}}}\n{extra}");
    let cfg_path = dir.path().join("c.yaml");
    std::fs::write(&cfg_path, &config).unwrap();
    let parsed = Config::load(Some(&cfg_path), &[]).unwrap();
    let log = DecisionLog::start(parsed.decision_log_settings(), None).unwrap();
    let server = TestServer::start(Spec {
        policies,
        config: &config,
        log: Some(log.clone()),
        ..Default::default()
    })
    .await;
    // Keep the tempdir with the file alive as long as the server.
    std::mem::forget(dir);
    (server, log, file)
}

fn events(file: &str) -> Vec<Json> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON event"))
        .collect()
}

fn by_id<'a>(events: &'a [Json], id: &str) -> &'a Json {
    events
        .iter()
        .find(|e| e["decision_id"] == id)
        .unwrap_or_else(|| panic!("no event for {id} in {events:#?}"))
}

fn is_rfc3339(s: &Json) -> bool {
    s.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn events_are_opa_format_field_by_field() {
    let (server, log, file) = start(vec![("p.rego", POLICY)], "").await;
    let mut client = server.client().await;

    let allow = client
        .check(request(&format!(
            "{{path: /ok/x?a=1, headers: {{authorization: Bearer top-secret, cookie: sid=42, \
             x-ok: fine, traceparent: {TRACEPARENT}}}, context_extensions: {{namespace: team-a}}}}"
        )))
        .await
        .unwrap()
        .into_inner();
    let deny = client
        .check(request("{path: /no}"))
        .await
        .unwrap()
        .into_inner();
    let parse_error = client
        .check(request("{path: /api/%zz}"))
        .await
        .unwrap()
        .into_inner();
    let eval_error = client
        .check(request("{path: /conflict}"))
        .await
        .unwrap_err();
    log.flush().await;
    let events = events(&file);
    assert_eq!(events.len(), 4, "{events:#?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("top-secret"), "credential logged: {text}");
    assert!(!text.contains("sid=42"), "cookie logged: {text}");

    // Fields every event has.
    for e in &events {
        let labels = e["labels"].as_object().unwrap();
        assert!(!labels["id"].as_str().unwrap().is_empty());
        assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(labels["app"], "shop");
        assert_eq!(e["path"], "envoy/authz/allow");
        assert_eq!(e["revision"], "1");
        assert!(is_rfc3339(&e["timestamp"]), "{e}");
        assert!(e["metrics"]["timer_server_handler_ns"].as_u64().unwrap() > 0);
        assert!(uuid::Uuid::parse_str(e["decision_id"].as_str().unwrap()).is_ok());
    }

    let e = by_id(&events, &decision_id(&allow));
    assert_eq!(e["result"], json!(true));
    assert!(e.get("error").is_none());
    assert_eq!(e["input"]["parsed_path"], json!(["ok", "x"]));
    assert_eq!(e["input"]["parsed_query"], json!({"a": ["1"]}));
    let headers = &e["input"]["attributes"]["request"]["http"]["headers"];
    assert_eq!(headers["x-ok"], "fine");
    assert!(headers.get("authorization").is_none());
    assert!(headers.get("cookie").is_none());
    assert_eq!(
        e["erased"],
        json!([
            "/input/attributes/request/http/headers/authorization",
            "/input/attributes/request/http/headers/cookie"
        ])
    );
    let eval_ns = e["metrics"]["timer_rego_query_eval_ns"].as_u64().unwrap();
    assert!(eval_ns > 0);
    assert!(e["metrics"]["timer_server_handler_ns"].as_u64().unwrap() >= eval_ns);
    assert_eq!(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        e.get("span_id").is_none(),
        "no span of ours while tracing is off"
    );
    assert_eq!(e["namespace"], "team-a");

    let e = by_id(&events, &decision_id(&deny));
    assert_eq!(e["result"], json!(false));
    assert!(e.get("error").is_none());
    assert!(e.get("erased").is_none());
    assert_eq!(e["input"]["parsed_path"], json!(["no"]));

    let e = by_id(&events, &decision_id(&parse_error));
    assert_eq!(e["error"]["code"], "request_parse_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid URL escape"),
        "{e}"
    );
    assert!(e.get("input").is_none());
    assert!(e.get("result").is_none());
    assert!(e["metrics"].get("timer_rego_query_eval_ns").is_none());

    // A gRPC error carries no decision id; it is the event with an eval error.
    assert_eq!(eval_error.code(), tonic::Code::Unknown);
    let e = events
        .iter()
        .find(|e| e["error"]["code"] == "envoyauth_eval_error")
        .expect("eval error event");
    assert!(
        eval_error
            .message()
            .contains(e["error"]["message"].as_str().unwrap()),
        "{} vs {e}",
        eval_error.message()
    );
    assert_eq!(e["input"]["parsed_path"], json!(["conflict"]));
    assert!(e.get("result").is_none());
    assert_eq!(log.stats().logged(), 4);
    server.stop().await;
}

#[tokio::test]
async fn mask_and_drop_policies_apply() {
    let (server, log, file) = start(vec![("p.rego", POLICY), ("log.rego", MASK)], "").await;
    let mut client = server.client().await;
    let resp = client
        .check(request(
            "{path: /ok, headers: {x-secret: s3cr3t-value, x-user: bob, authorization: Basic Ym9iOnB3}}",
        ))
        .await
        .unwrap()
        .into_inner();
    client.check(request("{path: /health}")).await.unwrap();
    log.flush().await;
    let events = events(&file);
    assert_eq!(
        events.len(),
        1,
        "the /health decision is dropped: {events:#?}"
    );
    let e = by_id(&events, &decision_id(&resp));
    let text = e.to_string();
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(!text.contains("Ym9iOnB3"), "{text}");
    let headers = &e["input"]["attributes"]["request"]["http"]["headers"];
    assert_eq!(headers["x-user"], "<redacted>");
    assert!(headers.get("x-secret").is_none());
    assert_eq!(
        e["erased"],
        json!([
            "/input/attributes/request/http/headers/x-secret",
            "/input/attributes/request/http/headers/authorization"
        ])
    );
    assert_eq!(
        e["masked"],
        json!(["/input/attributes/request/http/headers/x-user"])
    );
    assert_eq!(log.stats().dropped(DropReason::DropPolicy), 1);
    assert_eq!(log.stats().dropped(DropReason::MaskError), 0);
    server.stop().await;
}

#[tokio::test]
async fn file_sink_rotates_without_losing_events() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let config = format!(
        "decision_logs:\n  file: {{path: {:?}, max_size_bytes: 4096, max_backups: 50}}\n",
        file.display().to_string()
    );
    let cfg_path = dir.path().join("c.yaml");
    std::fs::write(&cfg_path, &config).unwrap();
    let log = DecisionLog::start(
        Config::load(Some(&cfg_path), &[])
            .unwrap()
            .decision_log_settings(),
        None,
    )
    .unwrap();
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", POLICY)],
        log: Some(log.clone()),
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let resp = client
            .check(request(&format!("{{path: /ok/{i}}}")))
            .await
            .unwrap()
            .into_inner();
        ids.push(decision_id(&resp));
    }
    log.flush().await;
    let mut logged = Vec::new();
    let mut files = 0;
    for n in (1..=50).rev() {
        let p = format!("{}.{n}", file.display());
        if Path::new(&p).exists() {
            files += 1;
            assert!(std::fs::metadata(&p).unwrap().len() <= 4096);
            logged.extend(events(&p));
        }
    }
    logged.extend(events(&file.display().to_string()));
    assert!(files >= 2, "expected rotation, got {files} rotated files");
    let logged: Vec<&str> = logged
        .iter()
        .map(|e| e["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged, ids, "every event, in order, across rotated files");
    server.stop().await;
}

#[tokio::test]
async fn subscribers_receive_events_without_any_sink() {
    let log = DecisionLog::start(LogSettings::default(), None).unwrap();
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", POLICY)],
        log: Some(log.clone()),
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    // Not enabled yet: nothing is recorded.
    client.check(request("{path: /ok}")).await.unwrap();
    let mut sub = log.subscribe();
    let resp = client
        .check(request(
            "{path: /ok, headers: {authorization: Bearer nope}}",
        ))
        .await
        .unwrap()
        .into_inner();
    let event = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("an event within the deadline")
        .unwrap();
    assert_eq!(event.decision_id(), decision_id(&resp));
    assert!(!event.json().to_string().contains("nope"));
    assert_eq!(log.stats().logged(), 1);
    server.stop().await;
}

#[tokio::test]
async fn rule_labels_of_the_rules_that_held_are_logged() {
    const LABELLED: &str = r#"# METADATA
# labels: {team: platform}
package envoy.authz

default allow := false

# METADATA
# labels: {severity: low, why: admin}
allow if input.attributes.request.http.headers["x-role"] == "admin"

# METADATA
# labels: {severity: high, why: blocked-path}
deny contains "blocked" if input.parsed_path[0] == "blocked"

allow if {
    input.attributes.request.http.headers["x-role"] == "reader"
    count(deny) == 0
}
"#;
    for engine in ["auto", "interpreter"] {
        let (server, log, file) = start(
            vec![("p.rego", LABELLED)],
            &format!("runtime: {{policy_engine: {engine}}}\n"),
        )
        .await;
        let mut client = server.client().await;
        let mut check = async |yaml: &str| {
            decision_id(&client.check(request(yaml)).await.unwrap().into_inner())
        };
        let admin = check("{path: /x, headers: {x-role: admin}}").await;
        let reader = check("{path: /blocked, headers: {x-role: reader}}").await;
        let nobody = check("{path: /x}").await;
        log.flush().await;
        let events = events(&file);
        assert_eq!(
            by_id(&events, &admin)["rule_labels"],
            json!([{"team": "platform", "severity": "low", "why": "admin"}]),
            "{engine}"
        );
        // Denied: `deny` held (reached from `allow` through `count(deny)`); no `allow` did.
        assert_eq!(
            by_id(&events, &reader)["rule_labels"],
            json!([{"team": "platform", "severity": "high", "why": "blocked-path"}]),
            "{engine}"
        );
        assert!(
            by_id(&events, &nobody).get("rule_labels").is_none(),
            "{engine}: no labelled rule held"
        );
        server.stop().await;
    }
}

/// A request body holding numbers a double cannot carry (`1e999`, a 400-digit integer) is
/// still logged whole: the caller cannot keep its request out of the decision log by adding
/// such a number. The numbers are logged as their decimal text.
#[tokio::test]
async fn inputs_with_numbers_beyond_doubles_are_logged_whole() {
    let (server, log, file) = start(vec![("p.rego", POLICY)], "").await;
    let mut client = server.client().await;
    let digits = "9".repeat(400);
    let body = format!(r#"{{"huge": -1e999, "wide": {digits}, "user": "mallory"}}"#);
    let spec = json!({
        "path": "/ok/upload",
        "method": "POST",
        "headers": {"content-type": "application/json"},
        "body": body,
    });
    let resp = client
        .check(request(&spec.to_string()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status.as_ref().map(|s| s.code),
        Some(0),
        "the policy allows /ok"
    );
    log.flush().await;
    let events = events(&file);
    let e = by_id(&events, &decision_id(&resp));
    let parsed = &e["input"]["parsed_body"];
    assert_eq!(parsed["user"], "mallory", "{e}");
    assert_eq!(e["input"]["parsed_path"], json!(["ok", "upload"]));
    let huge = parsed["huge"].as_str().expect("kept as decimal text");
    assert!(huge.starts_with("-1") && huge.len() > 999, "{huge:.40}");
    assert_eq!(parsed["wide"], json!(digits));
    server.stop().await;
}
