//! Finding 11: a self-recursive function overflowed the stack on both engines, and mutually
//! recursive rules overflowed it on the `auto` engine: the first request reaching the cycle
//! aborted the sidecar. Recursion is now refused when policies load, as OPA refuses it.

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::req as check_req;
use crate::support::gateway::{Auth, SECRET, code, put_policy, root_token};
use tonic::Code;

const SELF_RECURSIVE: &str = "package envoy.authz\nf(x) := y if { y := f(x) }\nallow if f(1)\n";
const MUTUAL: &str = "package envoy.authz\nallow if { input.attributes.request.http.method == \"GET\"; not deny }\ndeny if allow\n";

#[tokio::test]
async fn recursive_policy_files_stop_start_up_with_the_cycle_named() {
    for (policy, cycle) in [
        (SELF_RECURSIVE, "data.envoy.authz.f -> data.envoy.authz.f"),
        (MUTUAL, "data.envoy.authz.allow"),
    ] {
        for engine in ["interpreter", "auto"] {
            let config = format!("runtime: {{policy_engine: {engine}}}\n");
            let err = Sidecar::try_start(Setup {
                config: &config,
                files: vec![("policy.rego", policy.into())],
                env: vec![],
            })
            .await
            .err()
            .expect("start-up must fail");
            assert!(
                err.contains("rego_recursion_error") && err.contains(cycle),
                "{err}"
            );
            assert!(err.contains("policy.rego:"), "file:line:col: {err}");
        }
    }
}

#[tokio::test]
async fn recursive_gateway_writes_are_refused_and_the_sidecar_keeps_serving() {
    let s = Sidecar::start(Setup {
        config: "runtime: {policy_engine: auto}\ngateway: {addr: \"127.0.0.1:0\"}\n",
        files: vec![(
            "policy.rego",
            "package envoy.authz\nallow if input.attributes.request.http.method == \"GET\"\n"
                .into(),
        )],
        env: vec![("GATEWAY_JWT_SECRET", SECRET)],
    })
    .await;
    let ch = s.gateway().await;
    let root = Auth::bearer(&root_token());
    for policy in [SELF_RECURSIVE, MUTUAL] {
        let r = put_policy(&ch, &root, "default", "evil.rego", policy).await;
        let status = r.expect_err("a recursive policy must be refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("rego_recursion_error"),
            "{status:?}"
        );
    }
    // The previous policies keep serving.
    assert!(s.check(check_req("/")).await.allowed());
    assert_eq!(
        code(
            put_policy(
                &ch,
                &root,
                "default",
                "fine.rego",
                "package other\nx := 1\n"
            )
            .await
        ),
        Code::Ok
    );
    s.stop().await;
}
