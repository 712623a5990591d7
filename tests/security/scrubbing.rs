//! Finding 2: an API key sent as a query parameter reached the decision log (stdout and
//! `StreamDecisions`) through the `:path` header, although `http.path` was redacted.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use tokio_stream::StreamExt as _;

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::req as check_req;
use crate::support::gateway::{Auth, SECRET, pb, root_token};
use pb::decision_log_service_client::DecisionLogServiceClient;

const KEY: &str = "sk_live_0123456789abcdefSECRET";

fn key_store() -> String {
    use sha2::Digest as _;
    let hash: String = sha2::Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({"keys": [{"id": "k1", "hash": format!("sha256:{hash}"), "subject": "svc"}]})
        .to_string()
}

#[tokio::test]
async fn a_credential_never_reaches_the_decision_log_or_stream_decisions() {
    let s = Sidecar::start(Setup {
        config: r#"gateway: {addr: "127.0.0.1:0"}
authentication:
  policies:
    - name: keys
      methods: [api_key]
      api_key: {header: x-api-key, query_param: api_key, cookie: apikey, store: "{dir}/keys.json"}
"#,
        files: vec![
            ("keys.json", key_store()),
            (
                "policy.rego",
                "package envoy.authz\nallow if input.identity.subject == \"svc\"\n".into(),
            ),
        ],
        env: vec![("GATEWAY_JWT_SECRET", SECRET)],
    })
    .await;
    let mut stream = DecisionLogServiceClient::new(s.gateway().await)
        .stream_decisions(crate::support::gateway::req(
            pb::StreamDecisionsRequest::default(),
            &Auth::bearer(&root_token()),
        ))
        .await
        .unwrap()
        .into_inner();

    // The key in the query string (percent-encoded name too), copied by Envoy into `:path`, an
    // original-path header, the header map and a referer-like cookie.
    let path = format!("/v1/orders?page=2&api%5Fkey={KEY}");
    let mut check = check_req(&path)
        .header("x-envoy-original-path", &format!("/orig?api_key={KEY}"))
        .header("cookie", &format!("theme=dark; apikey={KEY}"))
        .build();
    let http = check
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.query = format!("api_key={KEY}");
    http.header_map = Some(HeaderMap {
        headers: vec![
            HeaderValue {
                key: ":path".into(),
                value: path.clone(),
                ..Default::default()
            },
            HeaderValue {
                key: "x-api-key".into(),
                raw_value: KEY.as_bytes().to_vec(),
                ..Default::default()
            },
        ],
    });
    let resp = s.send(check).await.unwrap();
    assert_eq!(resp.status.unwrap().code, 0, "the key authenticates");

    let logged = s.logged().await;
    assert!(logged.contains("Decision Log"), "{logged}");
    assert!(
        !logged.contains("SECRET"),
        "the key reached the console log: {logged}"
    );
    assert!(
        logged.contains("page=2"),
        "the rest of the path is kept: {logged}"
    );
    let entry = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("an event")
        .expect("stream open")
        .unwrap();
    assert!(
        entry.event_json.contains("REDACTED"),
        "{}",
        entry.event_json
    );
    assert!(
        !entry.event_json.contains("SECRET"),
        "the key reached StreamDecisions: {}",
        entry.event_json
    );
    s.stop().await;
}
