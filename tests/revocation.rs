//! Token revocation through the real server: the Check path (a `jwt` policy, cached tokens,
//! internal tokens presented back) and the gateway (its JWTs, exchanges), revoked with the
//! gateway's RevokeToken by a real gRPC client; the list shared through its file by replicas
//! and across restarts; who may revoke what; bad and oversized files; odd token ids.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use portcullis::authn::api_key::{ApiKeyStore, NewApiKey};
use portcullis::gateway::pb::revoke_token_request::Target;
use serde_json::{Value as Json, json};
use support::authn::{ISSUER, Key, Portcullis, claims, jwks, now, req};
use support::eventually;
use support::gateway::{
    AUD, Auth, AuthServiceClient, Channel, Code, SECRET, StatusServiceClient, pb, root_token, token,
};

/// The server's config: the gateway in JWT mode, a `jwt` policy for `/v1/` (the test issuer),
/// one for `/back/` (Portcullis' own internal tokens, keys in `internal.jwks`), an API key
/// policy for `/keys/`, and the revocation list in `revoked` with `extra` lines under it.
fn config(dir: &Path, revoked: &Path, revocation_extra: &str) -> String {
    format!(
        r#"gateway: {{addr: "127.0.0.1:0", jwt_secret: "{SECRET}"}}
authentication:
  revocation:
    file: "{revoked}"
{revocation_extra}
  policies:
    - name: api
      match: {{path_prefixes: ["/v1/"]}}
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: "{jwks}"}}
    - name: back
      match: {{path_prefixes: ["/back/"]}}
      methods: [jwt]
      jwt: {{issuer: "https://portcullis.local", audiences: [upstream], algorithms: [EdDSA], jwks_file: "{internal}"}}
    - name: keys
      match: {{path_prefixes: ["/keys/"]}}
      methods: [api_key]
      api_key: {{header: x-api-key, store: "{keys}"}}
internal_token:
  enabled: true
  audience: upstream
"#,
        revoked = revoked.display(),
        jwks = dir.join("jwks.json").display(),
        internal = dir.join("internal.jwks").display(),
        keys = dir.join("keys.json").display(),
    )
}

/// A server whose revocation list is `revoked` (shared with other servers of the test).
struct Rig {
    p: Portcullis,
    key: Key,
    /// An API key of subject `svc` with the scope `gateway:read`.
    api_key: String,
}

impl Rig {
    async fn start(revoked: &Path) -> Self {
        Self::start_with(revoked, "").await
    }

    async fn start_with(revoked: &Path, revocation_extra: &str) -> Self {
        let key = Key::es256("ec256-a.key.pem", "ec-a");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwks(&[&key]).to_string()).unwrap();
        std::fs::write(dir.path().join("internal.jwks"), r#"{"keys": []}"#).unwrap();
        let keys = dir.path().join("keys.json");
        std::fs::write(&keys, r#"{"keys": []}"#).unwrap();
        let api_key = ApiKeyStore::open(&keys)
            .unwrap()
            .create(NewApiKey {
                subject: "svc".into(),
                scopes: vec!["gateway:read".into()],
                ..Default::default()
            })
            .unwrap()
            .secret;
        let cfg = config(dir.path(), revoked, revocation_extra);
        let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
        Self { p, key, api_key }
    }

    async fn gateway(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.p.server.gateway_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A token of the test issuer for `sub` with this `jti` and `iat`.
    fn user_token(&self, sub: &str, jti: &str, iat: Option<i64>) -> String {
        let mut c = claims(sub);
        c["jti"] = json!(jti);
        match iat {
            Some(t) => c["iat"] = json!(t),
            None => {
                c.as_object_mut().unwrap().remove("iat");
            }
        }
        self.key.sign(&c)
    }

    /// Whether a Check at `path` with `token` is allowed (a refusal must be 401 invalid_token).
    async fn passes(&self, path: &str, token: &str) -> bool {
        let a = self.p.check(req(path).bearer(token)).await;
        if !a.allowed() {
            a.assert_refused(401, "invalid_token");
        }
        a.allowed()
    }
}

/// The claims of a token (not verified: the test made it or got it from the server).
fn payload(token: &str) -> Json {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

fn by_jti(jti: &str, expires_at: i64) -> Target {
    Target::Jti(pb::RevokeJti {
        jti: jti.into(),
        expires_at,
    })
}

fn by_subject(subject: &str, issued_before: i64) -> Target {
    Target::Subject(pb::RevokeSubject {
        subject: subject.into(),
        issued_before,
        expires_at: 0,
    })
}

async fn revoke(
    ch: &Channel,
    as_token: &str,
    target: Target,
) -> Result<pb::Revocation, tonic::Status> {
    AuthServiceClient::new(ch.clone())
        .revoke_token(support::gateway::req(
            pb::RevokeTokenRequest {
                target: Some(target),
            },
            &Auth::bearer(as_token),
        ))
        .await
        .map(|r| r.into_inner().revocation.unwrap())
}

async fn list(ch: &Channel, as_token: &str) -> Result<Vec<pb::Revocation>, tonic::Status> {
    AuthServiceClient::new(ch.clone())
        .list_revocations(support::gateway::req(
            pb::ListRevocationsRequest {},
            &Auth::bearer(as_token),
        ))
        .await
        .map(|r| r.into_inner().revocations)
}

/// The gateway's answer to GetStatus with `token`.
async fn status(ch: &Channel, token: &str) -> Code {
    support::gateway::code(
        StatusServiceClient::new(ch.clone())
            .get_status(support::gateway::req(
                pb::GetStatusRequest {},
                &Auth::bearer(token),
            ))
            .await,
    )
}

/// A gateway token for `sub` with a read grant on everything, issued at `iat`.
fn gateway_token(sub: &str, iat: u64) -> String {
    token(json!({"sub": sub, "aud": AUD, "exp": iat + 600, "iat": iat,
                 "grants": [{"kind": "read"}]}))
}

fn gw_now() -> u64 {
    support::gateway::now()
}

#[tokio::test]
async fn revoking_a_jti_refuses_that_token_at_once_and_nothing_else() {
    let shared = tempfile::tempdir().unwrap();
    let rig = Rig::start(&shared.path().join("revoked.json")).await;
    let ch = rig.gateway().await;
    let root = root_token();
    let a = rig.user_token("alice", "a-1", Some(now()));
    let b = rig.user_token("alice", "a-2", Some(now()));
    // Verified once, then served from the verified-token cache.
    assert!(rig.passes("/v1/orders", &a).await);
    assert!(rig.passes("/v1/orders", &a).await);
    let exp = payload(&a)["exp"].as_i64().unwrap();
    let entry = revoke(&ch, &root, by_jti("a-1", exp)).await.unwrap();
    assert_eq!(
        (
            entry.jti.as_str(),
            entry.expires_at,
            entry.revoked_by.as_str()
        ),
        ("a-1", exp, "root")
    );
    // No waiting: the cached token is refused on the very next Check.
    assert!(!rig.passes("/v1/orders", &a).await);
    assert!(rig.passes("/v1/orders", &b).await);
    // The refusal is logged and audited as `revoked`, by thumbprint, never the token.
    let events = rig.p.audit.events();
    let refusal = events
        .iter()
        .find(|e| e["event"] == "authn_failure")
        .expect("an authn_failure event");
    assert_eq!(refusal["reason"], "revoked");
    assert_eq!(refusal["result"], "invalid_token");
    assert_eq!(
        refusal["credential_sha256"],
        portcullis::authn::audit::thumbprint(a.as_bytes())
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "token_revoked" && e["jti"] == "a-1")
    );
    assert!(!serde_json::to_string(&events).unwrap().contains(&a));

    // Gateway JWTs: every token Portcullis signs carries a jti to revoke it by.
    let ga = gateway_token("ops", gw_now());
    let gb = gateway_token("ops", gw_now());
    let ga_claims = payload(&ga);
    assert_ne!(ga_claims["jti"], payload(&gb)["jti"]);
    assert_eq!(status(&ch, &ga).await, Code::Ok);
    revoke(
        &ch,
        &root,
        by_jti(
            ga_claims["jti"].as_str().unwrap(),
            ga_claims["exp"].as_i64().unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(status(&ch, &ga).await, Code::Unauthenticated);
    assert_eq!(status(&ch, &gb).await, Code::Ok);
    let listed: Vec<String> = list(&ch, &root)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.jti)
        .collect();
    assert_eq!(listed, ["a-1", ga_claims["jti"].as_str().unwrap()]);
}

#[tokio::test]
async fn revoking_a_subject_refuses_its_tokens_issued_before_the_time() {
    let shared = tempfile::tempdir().unwrap();
    let rig = Rig::start(&shared.path().join("revoked.json")).await;
    let ch = rig.gateway().await;
    let root = root_token();
    let t = now();
    let old = rig.user_token("alice", "old", Some(t - 20));
    let bob = rig.user_token("bob", "bob", Some(t - 20));
    let gw_old = gateway_token("alice", gw_now() - 20);
    assert!(rig.passes("/v1/orders", &old).await);
    assert_eq!(status(&ch, &gw_old).await, Code::Ok);

    let entry = revoke(&ch, &root, by_subject("alice", t - 10))
        .await
        .unwrap();
    assert_eq!(entry.issued_before, t - 10);
    // The default expiry: issued_before + subject_ttl_seconds (a day).
    assert_eq!(entry.expires_at, t - 10 + 86_400);
    assert!(!rig.passes("/v1/orders", &old).await);
    // A token without iat cannot show it was issued later.
    assert!(
        !rig.passes("/v1/orders", &rig.user_token("alice", "no-iat", None))
            .await
    );
    assert!(
        rig.passes("/v1/orders", &rig.user_token("alice", "new", Some(t)))
            .await
    );
    assert!(rig.passes("/v1/orders", &bob).await);
    assert_eq!(status(&ch, &gw_old).await, Code::Unauthenticated);
    assert_eq!(
        status(&ch, &gateway_token("alice", gw_now())).await,
        Code::Ok
    );

    // A subject revoked up to a time ahead gets no token until then: no internal token on an
    // allow, no gateway token for its API key.
    let with_key = || req("/keys/orders").header("x-api-key", &rig.api_key);
    let before = rig.p.check(with_key()).await;
    assert!(before.allowed() && before.header("x-internal-token").is_some());
    let exchange = |key: String| {
        let ch = ch.clone();
        async move {
            support::gateway::code(
                AuthServiceClient::new(ch)
                    .exchange_api_key(tonic::Request::new(pb::ExchangeApiKeyRequest {
                        api_key: key,
                        ..Default::default()
                    }))
                    .await,
            )
        }
    };
    assert_eq!(exchange(rig.api_key.clone()).await, Code::Ok);
    revoke(&ch, &root, by_subject("svc", t + 3600))
        .await
        .unwrap();
    let after = rig.p.check(with_key()).await;
    assert!(after.allowed(), "{}", after.json);
    assert_eq!(after.header("x-internal-token"), None, "{}", after.json);
    assert_eq!(exchange(rig.api_key.clone()).await, Code::Unauthenticated);
}

/// The internal token an allowed Check with `caller` carries.
async fn minted(p: &Portcullis, caller: &str) -> String {
    let a = p.check(req("/v1/orders").bearer(caller)).await;
    assert!(a.allowed(), "{}", a.json);
    a.header("x-internal-token").unwrap().to_string()
}

#[tokio::test]
async fn internal_tokens_are_revocable_and_a_revoked_one_is_never_reused() {
    let shared = tempfile::tempdir().unwrap();
    let rig = Rig::start(&shared.path().join("revoked.json")).await;
    let ch = rig.gateway().await;
    // The /back/ policy trusts Portcullis' own keys, as an upstream that calls back would.
    let (code, served) = support::http(
        rig.p.server.http_addr,
        "GET",
        "/.well-known/jwks.json",
        None,
    )
    .await;
    assert_eq!(code, 200);
    std::fs::write(rig.p.server.dir().join("internal.jwks"), served).unwrap();

    let caller = rig.user_token("alice", "c-1", Some(now()));
    let t1 = minted(&rig.p, &caller).await;
    assert_eq!(
        minted(&rig.p, &caller).await,
        t1,
        "reused from the internal-token cache"
    );
    let (r, t) = (&rig, &t1);
    // (until the key file is re-read, invalid_signature)
    eventually(Duration::from_secs(5), move || async move {
        r.p.check(req("/back/x").bearer(t)).await.allowed()
    })
    .await
    .unwrap();

    let c = payload(&t1);
    revoke(
        &ch,
        &root_token(),
        by_jti(c["jti"].as_str().unwrap(), c["exp"].as_i64().unwrap()),
    )
    .await
    .unwrap();
    // Presented back, the revoked token is refused; the cache mints a fresh one instead.
    assert!(!rig.passes("/back/x", &t1).await);
    let t2 = minted(&rig.p, &caller).await;
    assert_ne!(t2, t1);
    assert!(rig.passes("/back/x", &t2).await);
}

#[tokio::test]
async fn replicas_share_the_file_and_a_restart_keeps_the_list() {
    let shared = tempfile::tempdir().unwrap();
    let file = shared.path().join("revoked.json");
    let a = Rig::start(&file).await;
    let b = Rig::start(&file).await;
    let token = a.user_token("alice", "shared-1", Some(now()));
    assert!(a.passes("/v1/orders", &token).await);
    assert!(b.passes("/v1/orders", &token).await);
    let exp = payload(&token)["exp"].as_i64().unwrap();
    revoke(&a.gateway().await, &root_token(), by_jti("shared-1", exp))
        .await
        .unwrap();
    assert!(!a.passes("/v1/orders", &token).await);
    // B re-reads the file when it changes (checked once a second).
    let (rb, t) = (&b, &token);
    eventually(Duration::from_secs(5), move || async move {
        !rb.passes("/v1/orders", t).await
    })
    .await
    .unwrap();
    // Both write: neither loses the other's entry.
    revoke(&b.gateway().await, &root_token(), by_jti("from-b", exp))
        .await
        .unwrap();
    revoke(&a.gateway().await, &root_token(), by_jti("from-a", exp))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    for jti in ["shared-1", "from-a", "from-b"] {
        assert!(text.contains(jti), "{jti}: {text}");
    }

    // Another process writes the file (atomically, as an operator's tool would).
    let other = b.user_token("carol", "hand-1", Some(now()));
    assert!(b.passes("/v1/orders", &other).await);
    let mut doc: Json = serde_json::from_str(&text).unwrap();
    doc["revocations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"jti": "hand-1", "expires_at": exp}));
    write_owner_only(&file, &doc.to_string());
    let t = &other;
    eventually(Duration::from_secs(5), move || async move {
        !rb.passes("/v1/orders", t).await
    })
    .await
    .unwrap();

    // A new server on the same file refuses what the list names from its first Check.
    a.p.server.stop().await;
    b.p.server.stop().await;
    let c = Rig::start(&file).await;
    assert!(!c.passes("/v1/orders", &token).await);
    assert!(!c.passes("/v1/orders", &other).await);
    assert!(
        c.passes("/v1/orders", &c.user_token("alice", "fresh", Some(now())))
            .await
    );
}

/// Writes `text` to `path` as a tool would: a temporary file (owner-only), then a rename.
fn write_owner_only(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn only_root_revokes_others_and_any_caller_its_own_token() {
    let shared = tempfile::tempdir().unwrap();
    let rig = Rig::start(&shared.path().join("revoked.json")).await;
    let ch = rig.gateway().await;
    let exp = now() + 600;
    let acme = |sub: &str| {
        token(json!({"sub": sub, "aud": AUD, "exp": exp, "ns": "acme",
                     "grants": [{"kind": "readwrite"}]}))
    };
    let narrow_grant = token(json!({"sub": "ops", "aud": AUD, "exp": exp,
        "grants": [{"kind": "readwrite", "namespace": "acme"}]}));
    let read_root = token(json!({"sub": "auditor", "aud": AUD, "exp": exp,
        "grants": [{"kind": "read"}]}));
    let victim = rig.user_token("alice", "victim", Some(now()));
    for caller in [acme("mallory"), narrow_grant.clone(), read_root.clone()] {
        for target in [by_jti("victim", exp), by_subject("alice", 0)] {
            let err = revoke(&ch, &caller, target).await.unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        }
    }
    assert!(rig.passes("/v1/orders", &victim).await);
    // Listing needs read on the root scope.
    assert_eq!(
        list(&ch, &acme("mallory")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(list(&ch, &read_root).await.unwrap().is_empty());

    // `current`: a scoped caller ends its own token, and only that one.
    let mine = acme("mallory");
    let sibling = acme("mallory");
    let entry = revoke(&ch, &mine, Target::Current(true)).await.unwrap();
    assert_eq!(entry.jti, payload(&mine)["jti"].as_str().unwrap());
    assert_eq!(entry.revoked_by, "mallory");
    assert_eq!(status(&ch, &mine).await, Code::Unauthenticated);
    assert_eq!(status(&ch, &sibling).await, Code::Ok);
    let err = revoke(&ch, &mine, Target::Current(true)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "authentication required");
    // A token without a jti (not signed by Portcullis) can only go by subject.
    let no_jti = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "x", "aud": AUD, "exp": exp, "grants": [{"kind": "read"}]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        revoke(&ch, &no_jti, Target::Current(true))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        revoke(&ch, &root_token(), Target::Current(false))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn odd_ids_are_kept_exactly_and_malformed_ones_refused() {
    let shared = tempfile::tempdir().unwrap();
    let file = shared.path().join("revoked.json");
    let rig = Rig::start(&file).await;
    let ch = rig.gateway().await;
    let root = root_token();
    let exp = now() + 600;
    let odd = "quote\" back\\slash ünïcode 🎫 </script> ,]} \u{202e}";
    revoke(&ch, &root, by_jti(odd, exp)).await.unwrap();
    let odd_token = rig.user_token("alice", odd, Some(now()));
    let near = rig.user_token("alice", "quote\" back\\slash", Some(now()));
    assert!(!rig.passes("/v1/orders", &odd_token).await);
    assert!(rig.passes("/v1/orders", &near).await);
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["revocations"][0]["jti"], odd);
    for (bad, why) in [
        (by_jti("line\nbreak", exp), "control characters"),
        (by_jti(&"x".repeat(513), exp), "longer than 512"),
        (by_jti("", exp), "must not be empty"),
        (by_jti("no-exp", 0), "exp is required"),
        (by_jti("expired", now() - 3600), "has passed"),
        (by_jti("far", now() + 400 * 86_400), "366 days"),
        (by_subject("", 0), "must not be empty"),
    ] {
        let err = revoke(&ch, &root, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{why}");
        assert!(err.message().contains(why), "{}", err.message());
    }
    assert_eq!(list(&ch, &root).await.unwrap().len(), 1);
    rig.p.server.stop().await;
    let again = Rig::start(&file).await;
    assert!(!again.passes("/v1/orders", &odd_token).await);
}

#[tokio::test]
async fn a_full_list_refuses_more_with_a_clear_error() {
    let shared = tempfile::tempdir().unwrap();
    let rig = Rig::start_with(&shared.path().join("revoked.json"), "    max_entries: 2").await;
    let ch = rig.gateway().await;
    let root = root_token();
    let exp = now() + 600;
    revoke(&ch, &root, by_jti("one", exp)).await.unwrap();
    revoke(&ch, &root, by_jti("two", exp)).await.unwrap();
    // The same id again merges into its entry.
    revoke(&ch, &root, by_jti("two", exp + 10)).await.unwrap();
    let err = revoke(&ch, &root, by_jti("three", exp)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("full") && err.message().contains("max_entries"));
    let listed = list(&ch, &root).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].expires_at, exp + 10);
}

/// Start-up in `dir` with the revocation file as `text` (mode `mode`) and `extra` under
/// `authentication.revocation`: the error it stops with (empty when it starts).
fn start_up_error(dir: &Path, text: Option<&str>, mode: u32, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let file = dir.join("revoked.json");
    if let Some(text) = text {
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let cfg = format!(
        "authentication:\n  revocation:\n    file: \"{}\"\n{extra}\n",
        file.display()
    );
    let prepared = support::server::Prepared::new(support::Spec {
        policies: vec![("p.rego", "package envoy.authz\nallow := true\n")],
        config: &cfg,
        ..Default::default()
    });
    match prepared {
        Err(e) => e,
        Ok(p) => match p.app().build() {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        },
    }
}

#[test]
fn bad_revocation_files_stop_start_up_with_a_clear_error() {
    let entries = |n: usize| {
        let list: Vec<Json> = (0..n)
            .map(|i| json!({"jti": format!("j{i}"), "expires_at": 4_000_000_000i64}))
            .collect();
        json!({"revocations": list}).to_string()
    };
    for (text, mode, extra, want) in [
        (Some("not json"), 0o600, "", "expected"),
        (
            Some(r#"{"revocations": [{"expires_at": 1}]}"#),
            0o600,
            "",
            "exactly one of jti and subject",
        ),
        (
            Some(r#"{"revocations": [{"jti": "a\u0007", "expires_at": 1}]}"#),
            0o600,
            "",
            "control characters",
        ),
        (
            Some(&entries(3)),
            0o600,
            "    max_entries: 2",
            "3 entries, more than max_entries (2)",
        ),
        // Far more bytes than 2 entries can take: refused before it is parsed.
        (
            Some(&format!(
                "{{\"revocations\": [], \"pad\": \"{}\"}}",
                "x".repeat(10_000)
            )),
            0o600,
            "    max_entries: 2",
            "larger than",
        ),
        (Some(r#"{"revocations": []}"#), 0o640, "", "owner only"),
        (None, 0o600, "    max_entries: 0", "max_entries"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let e = start_up_error(dir.path(), text, mode, extra);
        assert!(e.contains("authentication.revocation"), "{want}: {e}");
        assert!(e.contains(want), "{want}: {e}");
    }
    // An absent file is created, owner-only, empty.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(start_up_error(dir.path(), None, 0o600, ""), "");
    let file = dir.path().join("revoked.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc, json!({"revocations": []}));
}

#[tokio::test]
async fn a_full_list_of_long_ids_loads_and_lists_past_grpcs_usual_4_mib() {
    let shared = tempfile::tempdir().unwrap();
    let file = shared.path().join("revoked.json");
    let exp = now() + 600;
    let entries: Vec<Json> = (0..10_000)
        .map(|i| json!({"jti": format!("{i:05}{}", "x".repeat(507)), "expires_at": exp}))
        .collect();
    write_owner_only(&file, &json!({"revocations": entries}).to_string());
    assert!(std::fs::metadata(&file).unwrap().len() > 5 * 1024 * 1024);
    let rig = Rig::start(&file).await;
    let listed = AuthServiceClient::new(rig.gateway().await)
        .max_decoding_message_size(64 * 1024 * 1024)
        .list_revocations(support::gateway::req(
            pb::ListRevocationsRequest {},
            &Auth::bearer(&root_token()),
        ))
        .await
        .unwrap()
        .into_inner()
        .revocations;
    assert_eq!(listed.len(), 10_000);
    let last = format!("09999{}", "x".repeat(507));
    assert!(
        !rig.passes("/v1/orders", &rig.user_token("alice", &last, Some(now())))
            .await
    );
    // Full: the next revocation is refused.
    let err = revoke(&rig.gateway().await, &root_token(), by_jti("one-more", exp))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}
