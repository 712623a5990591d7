//! TLS and mTLS on the ext_authz and gateway listeners: real handshakes against the real server
//! with certificates made at test time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

mod support;

use support::gateway::{self as gw, Gw};
use support::tls::{Ca, Leaf, LeafSpec, ServerFiles, channel, client_config, server_leaf};
use support::{Spec, TestServer, eventually};

/// Allows a client whose certificate names a SPIFFE ID, echoing what the policy saw in headers.
const POLICY: &str = r#"package envoy.authz

default allow := {"allowed": false, "body": "no client certificate"}

allow := {
    "allowed": true,
    "headers": {
        "x-spiffe": input.tls_client.spiffe_id,
        "x-dns": concat(",", input.tls_client.dns_names),
        "x-subject": input.tls_client.subject,
    },
} if input.tls_client.spiffe_id
"#;

const ENVOY_ID: &str = "spiffe://cluster.local/ns/mesh/sa/envoy";

struct Pki {
    server_ca: Ca,
    client_ca: Ca,
    files: ServerFiles,
    _dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let server_ca = Ca::new("server ca");
        let client_ca = Ca::new("client ca");
        let server = server_ca.leaf(LeafSpec {
            common_name: "portcullis",
            ..Default::default()
        });
        let files = ServerFiles::write(dir.path(), &server, &client_ca);
        Self {
            server_ca,
            client_ca,
            files,
            _dir: dir,
        }
    }

    fn client(&self) -> Leaf {
        self.client_ca.leaf(LeafSpec {
            common_name: "envoy",
            dns: &["envoy.mesh.svc"],
            uris: &[ENVOY_ID],
            validity: None,
            names: &[],
        })
    }

    async fn server(&self, client_auth: &str) -> TestServer {
        let config = format!(
            "plugins:\n  envoy_ext_authz_grpc:\n    tls: {}\n",
            self.files.yaml(client_auth)
        );
        TestServer::start(Spec {
            policies: vec![("policy.rego", POLICY)],
            config: &config,
            ..Default::default()
        })
        .await
    }
}

fn request() -> CheckRequest {
    gw::check_request(None, false)
}

fn header<'a>(resp: &'a CheckResponse, name: &str) -> Option<&'a str> {
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.as_str()),
        _ => None,
    }
}

fn allowed(resp: &CheckResponse) -> bool {
    resp.status.as_ref().is_some_and(|s| s.code == 0)
}

/// One Check over a new TLS connection: `Err` when the handshake or the call fails.
async fn check_over(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<CheckResponse, String> {
    let ch = channel(addr, config).await.map_err(|e| format!("{e:?}"))?;
    AuthorizationClient::new(ch)
        .check(request())
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_trusted_client_certificate_reaches_the_policy() {
    let pki = Pki::new();
    let server = pki.server("require").await;
    let client = pki.client();
    let resp = check_over(
        server.grpc_addr,
        client_config(&pki.server_ca, Some(&client)),
    )
    .await
    .expect("check over mTLS");
    assert!(allowed(&resp), "{resp:?}");
    assert_eq!(header(&resp, "x-spiffe"), Some(ENVOY_ID));
    assert_eq!(header(&resp, "x-dns"), Some("envoy.mesh.svc"));
    assert_eq!(header(&resp, "x-subject"), Some("CN=envoy"));
}

#[tokio::test]
async fn require_refuses_untrusted_expired_and_missing_client_certificates() {
    let pki = Pki::new();
    let server = pki.server("require").await;
    // Signed by a CA the server does not trust (the server's own CA).
    let untrusted = pki.server_ca.leaf(LeafSpec {
        common_name: "intruder",
        uris: &[ENVOY_ID],
        ..Default::default()
    });
    let expired = pki.client_ca.leaf(LeafSpec {
        common_name: "old",
        uris: &[ENVOY_ID],
        validity: Some(((2020, 1, 1), (2021, 1, 1))),
        ..Default::default()
    });
    for (what, leaf) in [
        ("untrusted", Some(&untrusted)),
        ("expired", Some(&expired)),
        ("none", None),
    ] {
        let result = check_over(server.grpc_addr, client_config(&pki.server_ca, leaf)).await;
        assert!(result.is_err(), "{what}: {result:?}");
    }
    // Plain text to a TLS port gets no answer either.
    let plain = AuthorizationClient::connect(format!("http://{}", server.grpc_addr)).await;
    if let Ok(mut c) = plain {
        assert!(c.check(request()).await.is_err());
    }
    // The good client still gets through.
    let ok = check_over(
        server.grpc_addr,
        client_config(&pki.server_ca, Some(&pki.client())),
    )
    .await
    .expect("trusted client");
    assert!(allowed(&ok));
}

#[tokio::test]
async fn request_accepts_clients_with_and_without_certificates() {
    let pki = Pki::new();
    let server = pki.server("request").await;
    let without = check_over(server.grpc_addr, client_config(&pki.server_ca, None))
        .await
        .expect("no client certificate is accepted");
    assert!(
        !allowed(&without),
        "the policy saw no tls_client: {without:?}"
    );
    let with = check_over(
        server.grpc_addr,
        client_config(&pki.server_ca, Some(&pki.client())),
    )
    .await
    .expect("with a client certificate");
    assert!(allowed(&with), "{with:?}");
    // A presented certificate must still verify.
    let untrusted = pki.server_ca.leaf(LeafSpec::default());
    assert!(
        check_over(
            server.grpc_addr,
            client_config(&pki.server_ca, Some(&untrusted))
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn tls_without_client_auth_serves_any_client() {
    let pki = Pki::new();
    let server = pki.server("none").await;
    let resp = check_over(server.grpc_addr, client_config(&pki.server_ca, None))
        .await
        .expect("server-only TLS");
    assert!(!allowed(&resp));
    assert!(
        matches!(&resp.http_response, Some(HttpResponse::DeniedResponse(d)) if d.body == "no client certificate")
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_holds_up_nobody() {
    let pki = Pki::new();
    let server = pki.server("require").await;
    // Several connections that send nothing at all.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(
            tokio::net::TcpStream::connect(server.grpc_addr)
                .await
                .unwrap(),
        );
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        check_over(
            server.grpc_addr,
            client_config(&pki.server_ca, Some(&pki.client())),
        ),
    )
    .await
    .expect("answered while idle connections wait")
    .expect("check");
    assert!(allowed(&resp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_fails_no_check_and_new_handshakes_see_the_new_certificate() {
    let pki = Pki::new();
    let server = pki.server("require").await;
    let client = client_config(&pki.server_ca, Some(&pki.client()));
    let addr = server.grpc_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    // Two long-lived connections and one that reconnects for every Check.
    for reconnect in [false, false, true] {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = None;
            while !stop.load(Ordering::SeqCst) {
                if reconnect || conn.is_none() {
                    conn = channel(addr, client.clone())
                        .await
                        .ok()
                        .map(AuthorizationClient::new);
                }
                let result = match conn.as_mut() {
                    Some(c) => c.check(request()).await.map(|r| allowed(r.get_ref())),
                    None => Ok(false),
                };
                match result {
                    Ok(true) => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    let old = server_leaf(addr, client.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // cert-manager renews: a new key and certificate under the same file names.
    let renewed = pki.server_ca.leaf(LeafSpec {
        common_name: "portcullis-renewed",
        ..Default::default()
    });
    pki.files.install(&renewed);
    eventually(Duration::from_secs(10), || {
        let client = client.clone();
        let want = renewed.der.clone();
        async move { server_leaf(addr, client).await == want }
    })
    .await
    .expect("new handshakes get the renewed certificate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_ne!(old, renewed.der);
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(ok > 20, "too few Checks ran: {ok}");
    assert_eq!(failed, 0, "{failed} of {} Checks failed", ok + failed);
}

#[tokio::test]
async fn broken_files_on_rotation_keep_the_old_certificate() {
    let pki = Pki::new();
    let server = pki.server("require").await;
    let client = client_config(&pki.server_ca, Some(&pki.client()));
    let before = server_leaf(server.grpc_addr, client.clone()).await;
    support::tls::write_private(&pki.files.cert, "not a certificate");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server_leaf(server.grpc_addr, client.clone()).await, before);
    assert!(
        check_over(server.grpc_addr, client)
            .await
            .is_ok_and(|r| allowed(&r))
    );
}

#[tokio::test]
async fn file_errors_name_the_key_and_the_file() {
    let pki = Pki::new();
    let start = |yaml: String| async move {
        let config = format!("plugins:\n  envoy_ext_authz_grpc:\n    tls: {yaml}\n");
        let prepared = support::server::Prepared::new(Spec {
            policies: vec![("policy.rego", POLICY)],
            config: &config,
            ..Default::default()
        })?;
        prepared
            .app()
            .build()
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // Missing file.
    let e = start(format!(
        "{{cert_file: /nonexistent/tls.crt, key_file: {}}}",
        pki.files.key.display()
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains("plugins.envoy_ext_authz_grpc.tls.cert_file")
            && e.contains("/nonexistent/tls.crt"),
        "{e}"
    );
    // A key readable by others.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&pki.files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let e = start(pki.files.yaml("require")).await.unwrap_err();
    assert!(
        e.contains("plugins.envoy_ext_authz_grpc.tls.key_file") && e.contains("owner only"),
        "{e}"
    );
    support::tls::write_private(&pki.files.key, "garbage");
    let e = start(pki.files.yaml("require")).await.unwrap_err();
    assert!(
        e.contains("tls.key_file") && e.contains("server.key"),
        "{e}"
    );
    // Contradictions are refused before any file is read.
    let e = start("{cert_file: a, key_file: b, client_auth: require}".to_string())
        .await
        .unwrap_err();
    assert!(e.contains("tls.client_auth"), "{e}");
}

#[test]
fn tls_keys_work_with_set() {
    let config = portcullis::config::Config::load(
        None,
        &[
            "plugins.envoy_ext_authz_grpc.tls.cert_file=/c.pem".into(),
            "plugins.envoy_ext_authz_grpc.tls.key_file=/k.pem".into(),
            "plugins.envoy_ext_authz_grpc.tls.client_ca_file=/ca.pem".into(),
            "plugins.envoy_ext_authz_grpc.tls.client_auth=request".into(),
        ],
    )
    .unwrap();
    let tls = config.plugins.envoy_ext_authz_grpc.tls.unwrap();
    assert_eq!(tls.client_auth(), portcullis::tls::ClientAuth::Request);
    let e = portcullis::config::Config::load(
        None,
        &["plugins.envoy_ext_authz_grpc.tls.client_auth=sometimes".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tls"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The gateway

async fn gateway(pki: &Pki, env: &[(&str, &str)], client_auth: &str) -> Gw {
    Gw::start(env, &format!("  tls: {}\n", pki.files.yaml(client_auth))).await
}

async fn status(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    auth: &gw::Auth,
) -> Result<gw::pb::GetStatusResponse, String> {
    let ch = channel(addr, config).await.map_err(|e| format!("{e:?}"))?;
    gw::StatusServiceClient::new(ch)
        .get_status(gw::req(gw::pb::GetStatusRequest::default(), auth))
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn the_gateway_authenticates_callers_by_client_certificate() {
    let pki = Pki::new();
    let g = gateway(&pki, &[], "require").await;
    let good = client_config(&pki.server_ca, Some(&pki.client()));
    status(g.gateway, good.clone(), &gw::Auth::None)
        .await
        .expect("a verified client certificate is a caller");
    // Writes too: the fixed readwrite grant.
    let ch = channel(g.gateway, good).await.unwrap();
    gw::put_policy(
        &ch,
        &gw::Auth::None,
        "",
        "extra",
        "package extra\n\nx := 1\n",
    )
    .await
    .expect("put policy as the certificate's caller");
    // No certificate, or an untrusted one: no connection.
    assert!(
        status(
            g.gateway,
            client_config(&pki.server_ca, None),
            &gw::Auth::None
        )
        .await
        .is_err()
    );
    let untrusted = pki.server_ca.leaf(LeafSpec::default());
    assert!(
        status(
            g.gateway,
            client_config(&pki.server_ca, Some(&untrusted)),
            &gw::Auth::None
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn with_client_auth_request_a_gateway_call_without_certificate_is_unauthenticated() {
    let pki = Pki::new();
    let g = gateway(&pki, &[], "request").await;
    let e = status(
        g.gateway,
        client_config(&pki.server_ca, None),
        &gw::Auth::None,
    )
    .await
    .unwrap_err();
    assert!(e.contains("Unauthenticated"), "{e}");
    status(
        g.gateway,
        client_config(&pki.server_ca, Some(&pki.client())),
        &gw::Auth::None,
    )
    .await
    .expect("with a certificate");
}

#[tokio::test]
async fn a_secret_mode_still_needs_its_secret_over_mtls() {
    let pki = Pki::new();
    let g = gateway(&pki, &[("GATEWAY_TOKEN", "tok")], "require").await;
    let good = client_config(&pki.server_ca, Some(&pki.client()));
    let e = status(g.gateway, good.clone(), &gw::Auth::None)
        .await
        .unwrap_err();
    assert!(e.contains("Unauthenticated"), "{e}");
    status(g.gateway, good, &gw::Auth::bearer("tok"))
        .await
        .expect("token over mTLS");
}

#[tokio::test]
async fn the_gateway_serves_server_only_tls_with_its_secret_mode() {
    let pki = Pki::new();
    let g = gateway(&pki, &[("GATEWAY_TOKEN", "tok")], "none").await;
    status(
        g.gateway,
        client_config(&pki.server_ca, None),
        &gw::Auth::bearer("tok"),
    )
    .await
    .expect("token over TLS");
}

// ---------------------------------------------------------------------------------------------
// The HTTP API (OPA's --tls-* flags and --authentication=tls)

/// Allows callers whose certificate subject is known, answering others with the identity they
/// were given (so that the exact string can be asserted).
const SYSTEM_AUTHZ: &str = r#"package system.authz

default allow := {"allowed": false, "reason": "no identity"}

allow := true if input.identity == "CN=admin,OU=ops,O=Acme"

allow := {"allowed": false, "reason": sprintf("identity %s", [input.identity])} if {
    input.identity
    input.identity != "CN=admin,OU=ops,O=Acme"
}
"#;

impl Pki {
    /// A client certificate whose subject is CN, OU, O in that order (OPA writes them in its
    /// own fixed order, not the certificate's).
    fn admin(&self) -> Leaf {
        self.client_ca.leaf(LeafSpec {
            common_name: "admin",
            names: &[("OU", "ops"), ("O", "Acme")],
            ..Default::default()
        })
    }

    fn flags(&self, ca: bool) -> portcullis::http::tls::TlsFlags {
        portcullis::http::tls::TlsFlags {
            cert_file: Some(self.files.cert.clone()),
            private_key_file: Some(self.files.key.clone()),
            ca_cert_file: ca.then(|| self.files.client_ca.clone()),
            refresh_period: Duration::from_millis(50),
        }
    }

    /// The HTTP API over HTTPS with `authentication` and `--authorization=basic`.
    async fn api(&self, authentication: portcullis::http::authz::Authentication) -> TestServer {
        use portcullis::http::authz::{Authorization, Protection};
        let prepared = support::server::Prepared::new(Spec {
            policies: vec![("authz.rego", SYSTEM_AUTHZ)],
            ..Default::default()
        })
        .expect("prepared");
        let mut app = prepared.app().build().expect("app");
        app.rest.protection = Protection {
            authentication,
            authorization: Authorization::Basic,
        };
        let config = self
            .flags(true)
            .config(authentication)
            .expect("flags")
            .expect("tls");
        app.tls.http =
            Some(portcullis::tls::ServerTls::load(&config, &[b"http/1.1"]).expect("load"));
        prepared.serve(app).await
    }
}

#[tokio::test]
async fn tls_authentication_makes_the_certificate_subject_the_identity_as_opa_writes_it() {
    use portcullis::http::authz::Authentication;
    use support::tls::https;
    let pki = Pki::new();
    let server = pki.api(Authentication::Tls).await;
    let addr = server.http_addr;
    let admin = client_config(&pki.server_ca, Some(&pki.admin()));
    let (status, body) = https(addr, admin, "GET", "/v1/data", &[])
        .await
        .expect("admin over mTLS");
    assert_eq!(status, 200, "{body}");

    // Another trusted client: its identity is its subject, and the policy refuses it.
    let other = client_config(&pki.server_ca, Some(&pki.client()));
    let (status, body) = https(addr, other, "GET", "/v1/data", &[])
        .await
        .expect("other");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("identity CN=envoy"), "{body}");

    // No certificate, or one from a CA the listener does not trust: no handshake at all.
    let none = client_config(&pki.server_ca, None);
    assert!(https(addr, none, "GET", "/v1/data", &[]).await.is_err());
    let intruder = pki.server_ca.leaf(LeafSpec {
        common_name: "admin",
        names: &[("OU", "ops"), ("O", "Acme")],
        ..Default::default()
    });
    let forged = client_config(&pki.server_ca, Some(&intruder));
    assert!(https(addr, forged, "GET", "/v1/data", &[]).await.is_err());

    // Plain HTTP on the HTTPS port gets no answer from the API.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/data HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    })
    .await
    .expect("closed in time");
    assert!(!String::from_utf8_lossy(&plain).contains("result"));
}

#[tokio::test]
async fn a_bearer_header_is_not_an_identity_under_tls_authentication() {
    use portcullis::http::authz::Authentication;
    let pki = Pki::new();
    let server = pki.api(Authentication::Tls).await;
    // The subject the policy trusts, sent as a token by a client with another certificate.
    let other = client_config(&pki.server_ca, Some(&pki.client()));
    let (status, body) = support::tls::https(
        server.http_addr,
        other,
        "GET",
        "/v1/data",
        &[("authorization", "Bearer CN=admin,OU=ops,O=Acme")],
    )
    .await
    .expect("request");
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn token_authentication_over_https_asks_for_no_certificate_but_verifies_one() {
    use portcullis::http::authz::Authentication;
    use support::tls::https;
    let pki = Pki::new();
    let server = pki.api(Authentication::Token).await;
    let none = client_config(&pki.server_ca, None);
    let (status, _) = https(
        server.http_addr,
        none.clone(),
        "GET",
        "/v1/data",
        &[("authorization", "Bearer CN=admin,OU=ops,O=Acme")],
    )
    .await
    .expect("token over HTTPS");
    assert_eq!(status, 200);
    let (status, _) = https(server.http_addr, none, "GET", "/v1/data", &[])
        .await
        .expect("no token");
    assert_eq!(status, 401);
    // With --tls-ca-cert-file a presented certificate must chain to it.
    let untrusted = pki.server_ca.leaf(LeafSpec::default());
    let bad = client_config(&pki.server_ca, Some(&untrusted));
    assert!(
        https(server.http_addr, bad, "GET", "/health", &[])
            .await
            .is_err()
    );
}

/// `portcullis run` with OPA's flags: HTTPS with client certificates on --addr, a diagnostic
/// address written http:// stays plain, and a new certificate is picked up.
#[tokio::test]
async fn the_run_command_serves_https_with_opas_flags_and_rotates_the_certificate() {
    use support::tls::https;
    let pki = Pki::new();
    let dir = pki._dir.path();
    std::fs::write(dir.join("authz.rego"), SYSTEM_AUTHZ).unwrap();
    let [api, grpc, diag] = support::ports::free_ports::<3>();
    let _proc = support::process::Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--authentication=tls", "--authorization=basic"])
            .arg("--tls-cert-file")
            .arg(&pki.files.cert)
            .arg("--tls-private-key-file")
            .arg(&pki.files.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.files.client_ca)
            .args(["--tls-cert-refresh-period", "50ms"])
            .args(["--addr", &format!("127.0.0.1:{api}")])
            .args(["--diagnostic-addr", &format!("http://127.0.0.1:{diag}")])
            .args([
                "--set",
                &format!("plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc}"),
            ])
            .arg(dir.join("authz.rego"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{api}").parse().unwrap();
    let admin = client_config(&pki.server_ca, Some(&pki.admin()));
    eventually(Duration::from_secs(20), || {
        let admin = admin.clone();
        async move {
            matches!(
                https(addr, admin, "GET", "/v1/data", &[]).await,
                Ok((200, _))
            )
        }
    })
    .await
    .expect("HTTPS with the admin certificate");
    assert!(
        https(
            addr,
            client_config(&pki.server_ca, None),
            "GET",
            "/v1/data",
            &[]
        )
        .await
        .is_err()
    );
    // The diagnostic listener answers plain HTTP, decided by the same policy (no identity
    // there, so refused: OPA's diagnostic handler is authorized too).
    let (status, _) = plain_get(diag, "/health").await;
    assert_eq!(status, 401);

    // Rotation: a new server certificate is served to new handshakes.
    let before = server_leaf(addr, support::tls::http1(admin.clone())).await;
    let next = pki.server_ca.leaf(LeafSpec {
        common_name: "portcullis-next",
        ..Default::default()
    });
    pki.files.install(&next);
    eventually(Duration::from_secs(10), || {
        let admin = admin.clone();
        let next = next.der.clone();
        async move { server_leaf(addr, support::tls::http1(admin)).await == next }
    })
    .await
    .expect("new handshakes get the new certificate");
    assert_ne!(before, next.der);
}

async fn plain_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Flag combinations that cannot be served are refused at start-up, naming the flag.
#[test]
fn inconsistent_tls_flags_are_refused_naming_the_flag() {
    let pki = Pki::new();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--addr", "127.0.0.1:0"])
            .args(["--set", "plugins.envoy_ext_authz_grpc.addr=127.0.0.1:0"])
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cert = pki.files.cert.as_os_str();
    let key = pki.files.key.as_os_str();
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let e = run(&[
        os("--authentication=tls"),
        os("--tls-cert-file"),
        cert,
        os("--tls-private-key-file"),
        key,
    ]);
    assert!(e.contains("--tls-ca-cert-file"), "{e}");
    let e = run(&[os("--tls-cert-file"), cert]);
    assert!(e.contains("--tls-private-key-file"), "{e}");
    let e = run(&[os("--tls-ca-cert-file"), pki.files.client_ca.as_os_str()]);
    assert!(
        e.contains("--tls-ca-cert-file needs --tls-cert-file"),
        "{e}"
    );
    let e = run(&[os("--diagnostic-addr"), os("https://127.0.0.1:0")]);
    assert!(e.contains("HTTPS needs --tls-cert-file"), "{e}");
    // A key others can read is refused as on every listener.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&pki.files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = run(&[
        os("--tls-cert-file"),
        cert,
        os("--tls-private-key-file"),
        key,
    ]);
    assert!(e.contains("--tls-private-key-file"), "{e}");
    let e = run(&[os("--tls-cert-refresh-period"), os("soon")]);
    assert!(e.contains("--tls-cert-refresh-period"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The HTTP authorization listener

#[tokio::test]
async fn the_http_authorization_listener_serves_mtls_and_passes_the_client_certificate() {
    use support::tls::https;
    let pki = Pki::new();
    let config = format!(
        "plugins:\n  envoy_ext_authz_http:\n    mode: nginx\n    tls: {}\n",
        pki.files.yaml("require")
    );
    let server = TestServer::start(Spec {
        policies: vec![("policy.rego", POLICY)],
        config: &config,
        ..Default::default()
    })
    .await;
    let addr = server.ext_authz_http_addr.expect("listener");
    let nginx = [("x-original-uri", "/orders")];
    // The proxy's certificate names a SPIFFE ID: allowed.
    let proxy = client_config(&pki.server_ca, Some(&pki.client()));
    let (status, body) = https(addr, proxy, "GET", "/auth", &nginx)
        .await
        .expect("allowed over mTLS");
    assert_eq!(status, 200, "{body}");
    // A trusted certificate without one: the policy denies.
    let admin = client_config(&pki.server_ca, Some(&pki.admin()));
    let (status, body) = https(addr, admin, "GET", "/auth", &nginx)
        .await
        .expect("denied over mTLS");
    assert_eq!((status, body.as_str()), (403, "no client certificate"));
    // Untrusted or missing certificates never reach the policy.
    let untrusted = pki.server_ca.leaf(LeafSpec {
        common_name: "envoy",
        uris: &[ENVOY_ID],
        ..Default::default()
    });
    for config in [
        client_config(&pki.server_ca, Some(&untrusted)),
        client_config(&pki.server_ca, None),
    ] {
        assert!(https(addr, config, "GET", "/auth", &nginx).await.is_err());
    }
    // Plain HTTP gets no decision.
    assert_ne!(plain_get(addr.port(), "/auth").await.0, 200);
}

#[test]
fn the_http_authorization_listeners_tls_works_with_set() {
    let config = portcullis::config::Config::load(
        None,
        &[
            "plugins.envoy_ext_authz_http.tls.cert_file=/c.pem".into(),
            "plugins.envoy_ext_authz_http.tls.key_file=/k.pem".into(),
            "plugins.envoy_ext_authz_http.tls.client_ca_file=/ca.pem".into(),
        ],
    )
    .unwrap();
    let tls = config.plugins.envoy_ext_authz_http.unwrap().tls.unwrap();
    assert_eq!(tls.client_auth(), portcullis::tls::ClientAuth::Require);
    let e = portcullis::config::Config::load(
        None,
        &["plugins.envoy_ext_authz_http.tls.client_auth=require".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("plugins.envoy_ext_authz_http.tls"), "{e}");
}
