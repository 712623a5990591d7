//! Finding 4: a policy took the whole process down. `PutPolicy` with
//! `n := count(numbers.range(1, 4000000000))`, then one `Decide`: a 96 GB allocation, abort;
//! ext_authz, HTTP and the gateway all went down (and with Envoy's `failure_mode_allow`, every
//! request then passed). Also: how namespaces and their writes are bounded.

use std::time::Duration;

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::req as check_req;
use crate::support::gateway::{
    AUD, Auth, SECRET, code, decide, now, pb, put_policy, root_token, token,
};
use pb::data_service_client::DataServiceClient;
use tonic::Code;

const DEFAULT_POLICY: &str = "package envoy.authz\ndefault allow := false\nallow if input.attributes.request.http.method == \"GET\"\n";

fn setup(config: &'static str) -> Setup<'static> {
    Setup {
        config,
        files: vec![("policy.rego", DEFAULT_POLICY.into())],
        env: vec![("GATEWAY_JWT_SECRET", SECRET)],
    }
}

/// The review's attack, against the real binary: the process survives and keeps serving.
#[tokio::test]
async fn a_policy_cannot_take_the_process_down() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), DEFAULT_POLICY).unwrap();
    let [grpc, gateway] = crate::support::free_ports();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "run",
            "--server",
            "--addr",
            "127.0.0.1:0",
            &format!("--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc}"),
            &format!("--set=gateway.addr=127.0.0.1:{gateway}"),
        ])
        .arg(dir.path().join("policy.rego"))
        .env("GATEWAY_JWT_SECRET", SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = crate::support::Proc(child);
    let ch = loop {
        if let Ok(c) = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{gateway}"))
            .unwrap()
            .connect()
            .await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let acme = Auth::bearer(&token(serde_json::json!({
        "sub": "tenant", "aud": AUD, "exp": now() + 600, "ns": "acme",
        "grants": [{"kind": "readwrite"}]
    })));
    put_policy(
        &ch,
        &acme,
        "acme",
        "boom.rego",
        "package boom\nn := count(numbers.range(1, 4000000000))\n",
    )
    .await
    .unwrap();
    let r = decide(
        &ch,
        &acme,
        pb::DecideRequest {
            namespace: "acme".into(),
            path: "boom/n".into(),
            ..Default::default()
        },
    )
    .await;
    let status = r.expect_err("the evaluation must fail");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("limit"), "{status:?}");
    // Still alive, on every listener.
    assert!(proc.0.try_wait().unwrap().is_none(), "the process exited");
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://127.0.0.1:{grpc}"),
    )
    .await
    .unwrap();
    let ok = client
        .check(check_req("/x").build())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status.unwrap().code, 0);
    proc.0.kill().unwrap();
}

#[tokio::test]
async fn amplifying_builtins_fail_the_evaluation_on_the_check_path() {
    let policy = r#"package envoy.authz
default allow := false
h := input.attributes.request.http.headers
allow if count(numbers.range(1, to_number(h["x-n"]))) > 0
allow if count(concat(h["x-d"], ["a", "b", "c"])) > 0
allow if count(sprintf(h["x-f"], [1])) > 0
allow if count(net.cidr_expand(h["x-cidr"])) > 0
"#;
    let s = Sidecar::start(Setup {
        config: "",
        files: vec![("policy.rego", policy.into())],
        env: vec![],
    })
    .await;
    for (header, value) in [
        ("x-n", "4000000000"),
        ("x-f", "%999999999d"),
        ("x-cidr", "::/0"),
    ] {
        let r = s.check_raw(check_req("/").header(header, value)).await;
        let status = r.expect_err(header);
        assert!(
            status.message().starts_with("eval_limit"),
            "{header}: {status:?}"
        );
    }
    // Within the limits the same rules answer.
    let a = s.check(check_req("/").header("x-n", "3")).await;
    assert!(a.allowed(), "{}", a.json);
    s.stop().await;
}

/// With a small memory bound, a policy that grows memory fails its evaluation; the next one
/// runs.
#[tokio::test]
async fn the_memory_bound_fails_an_evaluation_not_the_process() {
    let policy = r#"package envoy.authz
default allow := false
allow if {
    input.attributes.request.http.path == "/grow"
    big := [y | some i in numbers.range(1, 1000000); y := sprintf("%d-padding-padding-padding-padding-padding", [i])]
    count(big) > 0
}
allow if input.attributes.request.http.path == "/small"
"#;
    let s = Sidecar::start(Setup {
        config: "plugins: {envoy_ext_authz_grpc: {eval-timeout-ms: 60000}}\n",
        files: vec![("policy.rego", policy.into())],
        env: vec![],
    })
    .await;
    portcullis::policy::set_memory_limit(Some(96 * 1024 * 1024));
    let status = s
        .check_raw(check_req("/grow"))
        .await
        .expect_err("the growing evaluation must fail");
    assert!(
        status.message().starts_with("eval_limit") && status.message().contains("memory"),
        "{status:?}"
    );
    assert!(s.check(check_req("/small")).await.allowed());
    portcullis::policy::set_memory_limit(None);
    s.stop().await;
}

#[tokio::test]
async fn namespaces_and_writes_are_bounded() {
    let s = Sidecar::start(setup("gateway: {addr: \"127.0.0.1:0\"}\n")).await;
    let ch = s.gateway().await;
    let tenant = Auth::bearer(&token(serde_json::json!({
        "sub": "tenant", "aud": AUD, "exp": now() + 600, "ns": "acme",
        "grants": [{"kind": "readwrite"}]
    })));
    // A tenant may create namespaces under its own name (documented), up to the tree's quota.
    let quota = portcullis::namespaces::MAX_PER_TREE;
    for i in 0..quota {
        put_policy(&ch, &tenant, &format!("acme:n{i}"), "p.rego", "package p\n")
            .await
            .unwrap_or_else(|e| panic!("namespace {i}: {e:?}"));
    }
    let r = put_policy(&ch, &tenant, "acme:one-more", "p.rego", "package p\n").await;
    assert_eq!(code(r), Code::ResourceExhausted);
    // ... never outside its scope.
    let r = put_policy(&ch, &tenant, "acme2", "p.rego", "package p\n").await;
    assert_eq!(code(r), Code::PermissionDenied);
    // Other trees are not affected by acme's quota.
    let root = Auth::bearer(&root_token());
    put_policy(&ch, &root, "other", "p.rego", "package p\n")
        .await
        .unwrap();

    // Data written into one namespace is bounded in bytes.
    let chunk = "x".repeat(3 * 1024 * 1024);
    let mut data = DataServiceClient::new(ch.clone());
    let mut refused = None;
    for i in 0..8 {
        let r = data
            .put_data(crate::support::gateway::req(
                pb::PutDataRequest {
                    namespace: "acme:n0".into(),
                    path: format!("blob{i}"),
                    value: Some(pb::json_to_value(&serde_json::json!(chunk))),
                },
                &tenant,
            ))
            .await;
        if let Err(e) = r {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("a write past the namespace's byte bound");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(i >= 5, "refused too early, at write {i}: {e:?}");
    s.stop().await;
}

/// A module of deeply nested brackets took time doubling with each level to parse (30 deep
/// never finished), so one `PutPolicy` held a worker for good. Parsing is now linear in the
/// nesting; such modules compile or are refused at once, and the sidecar keeps serving.
#[tokio::test]
async fn deeply_nested_brackets_parse_at_once() {
    let s = Sidecar::start(setup(
        "runtime: {policy_engine: auto}\ngateway: {addr: \"127.0.0.1:0\"}\n",
    ))
    .await;
    let ch = s.gateway().await;
    let root = Auth::bearer(&root_token());
    let depth = 64;
    let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth));
    let compr = format!(
        "{}[y | some y in [1, 2]]{}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    for (name, body, ok) in [
        (
            "arrays.rego",
            format!("package deep\nx := {arrays}\n"),
            true,
        ),
        (
            "objects.rego",
            format!("package deep2\nx := {objects}\n"),
            true,
        ),
        ("compr.rego", format!("package deep3\nx := {compr}\n"), true),
        (
            "open.rego",
            format!("package deep4\nx := {}\n", "[{".repeat(200)),
            false,
        ),
    ] {
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            put_policy(&ch, &root, "default", name, &body),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: parsing must not take 10 s"));
        let want = if ok { Code::Ok } else { Code::InvalidArgument };
        assert_eq!(code(r), want, "{name}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
    }
    assert!(s.check(check_req("/")).await.allowed());
    s.stop().await;
}
