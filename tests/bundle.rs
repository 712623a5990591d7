//! OPA bundles end to end inside the process: loaded from a file or directory PATH, and
//! downloaded from a loopback bundle server (ETag 304, new revisions, broken and tampered
//! bundles refused while the old revision keeps serving, bearer credentials, persistence,
//! backoff), with `/health?bundles` and gRPC health following activation. Each archive attack is
//! refused with its own error.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use portcullis::bundle::{Bundle, BundleError, Limits};
use portcullis::config::Config;
use portcullis::policy::download::{Downloader, PollOutcome};
use portcullis::policy::{LoadSpec, PolicyError, PolicyStore};
use support::bundle::*;
use support::server::Prepared;
use support::{Spec, TestServer, eventually, fixture, http};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The gRPC code a Check gets: 0 OK, 7 PERMISSION_DENIED, 2 UNKNOWN (undefined decision).
async fn check_code(server: &TestServer) -> i32 {
    match server.client().await.check(CheckRequest::default()).await {
        Ok(resp) => resp.into_inner().status.map(|s| s.code).unwrap_or(-1),
        Err(status) => status.code() as i32,
    }
}

async fn grpc_health(server: &TestServer) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// A sidecar configured with `bundles.authz` from `bundle_url`, not yet polling.
struct Sidecar {
    server: TestServer,
    store: Arc<PolicyStore>,
    downloader: Downloader,
    config: Config,
}

async fn sidecar(extra_yaml: &str, bundle_url: &str) -> Sidecar {
    let yaml = format!(
        "services:\n  acme:\n    url: {bundle_url}\n    credentials:\n      bearer: {{token: s3cret}}\n\
         bundles:\n  authz:\n    service: acme\n    resource: bundles/authz.tar.gz\n    \
         polling: {{min_delay_seconds: 1, max_delay_seconds: 2}}\n{extra_yaml}"
    );
    let prepared = Prepared::new(Spec {
        config: &yaml,
        remote_bundles: true,
        ..Default::default()
    })
    .expect("config");
    let app = prepared.app().build().expect("app");
    let mut downloaders = prepared
        .config
        .bundle_downloaders(prepared.store.clone())
        .unwrap();
    let downloader = downloaders.remove(0);
    let store = prepared.store.clone();
    let config = prepared.config.clone();
    let server = prepared.serve(app).await;
    Sidecar {
        server,
        store,
        downloader,
        config,
    }
}

fn revision_of(store: &PolicyStore, name: &str) -> Option<String> {
    store
        .snapshot()
        .bundles()
        .iter()
        .find(|b| b.name == name)
        .map(|b| b.revision.clone())
}

#[tokio::test]
async fn bundle_archive_and_directory_paths_serve_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("authz.tar.gz");
    std::fs::write(&archive, tar_gz(&as_refs(&authz_bundle("v1", true)))).unwrap();
    let store = PolicyStore::load(vec![archive.clone()], Default::default()).unwrap();
    assert!(store.is_ready());
    let snap = store.snapshot();
    assert_eq!(snap.bundles()[0].revision, "v1");
    assert_eq!(snap.bundles()[0].roots, vec!["envoy/authz", "acl"]);
    let v = snap.eval(regorus::Value::new_object()).unwrap().value;
    assert_eq!(v, regorus::Value::from(true));

    // The same files as a directory, through --bundle.
    let bdir = dir.path().join("bundle");
    for (path, text) in authz_bundle("v2", false) {
        let p = bdir.join(&path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    std::fs::create_dir_all(bdir.join(".git")).unwrap();
    std::fs::write(bdir.join(".git/HEAD"), "not part of the bundle").unwrap();
    let store = PolicyStore::load_with(
        LoadSpec {
            bundle_paths: vec![bdir.clone()],
            ..Default::default()
        },
        Default::default(),
    )
    .unwrap();
    assert_eq!(store.snapshot().bundles()[0].revision, "v2");
    let v = store
        .snapshot()
        .eval(regorus::Value::new_object())
        .unwrap()
        .value;
    assert_eq!(v, regorus::Value::from(false));
}

#[tokio::test]
async fn roots_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, list: &[(&str, &str)]| {
        let p = dir.path().join(name);
        std::fs::write(&p, tar_gz(list)).unwrap();
        p
    };
    // A module whose package lies outside the roots.
    let outside = write(
        "outside.tar.gz",
        &[
            (".manifest", r#"{"roots": ["envoy/authz"]}"#),
            ("p.rego", "package other\n\nx := 1\n"),
        ],
    );
    let err = PolicyStore::load(vec![outside], Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("do not permit package data.other"),
        "{err}"
    );
    // Two bundles whose roots overlap.
    let a = write("a.tar.gz", &[(".manifest", r#"{"roots": ["acl"]}"#)]);
    let b = write("b.tar.gz", &[(".manifest", r#"{"roots": ["acl/users"]}"#)]);
    let err = PolicyStore::load(vec![a.clone(), b], Default::default()).unwrap_err();
    assert!(matches!(err, PolicyError::Bundle { .. }), "{err}");
    assert!(err.to_string().contains("overlaps"), "{err}");
    // A bundle without roots owns everything: a second one cannot load beside it.
    let all = write("all.tar.gz", &[("x/data.json", "{}")]);
    let err = PolicyStore::load(vec![a.clone(), all], Default::default()).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    // Local data may not write under a bundle's roots.
    let data = dir.path().join("data.json");
    std::fs::write(&data, r#"{"acl": {"x": 1}}"#).unwrap();
    let err = PolicyStore::load(vec![a, data], Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("local data sets data.acl"),
        "{err}"
    );
}

#[tokio::test]
async fn download_activates_then_304_then_new_revision() {
    let bundles = BundleServer::start().await;
    bundles.state.lock().unwrap().required_auth = Some("Bearer s3cret".into());
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("r1", true))),
        "e1",
    );
    let sc = sidecar("", &bundles.url()).await;

    // Before the first activation: not ready, Checks undefined, health NOT_SERVING / 500.
    assert!(!sc.store.is_ready());
    assert_eq!(check_code(&sc.server).await, tonic::Code::Unknown as i32);
    assert_eq!(grpc_health(&sc.server).await, 2, "NOT_SERVING");
    let (status, body) = http(sc.server.http_addr, "GET", "/health?bundles", None).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("authz"), "{body}");
    let (status, _) = http(sc.server.http_addr, "GET", "/health", None).await;
    assert_eq!(status, 200);

    let outcome = sc.downloader.poll_once().await.unwrap();
    assert!(matches!(outcome, PollOutcome::Activated { ref revision, .. } if revision == "r1"));
    assert!(sc.store.is_ready());
    assert_eq!(check_code(&sc.server).await, 0);
    assert_eq!(revision_of(&sc.store, "authz").as_deref(), Some("r1"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            grpc_health(&sc.server).await == 1
        })
        .await
        .is_ok(),
        "gRPC health turns SERVING"
    );
    let (status, body) = http(sc.server.http_addr, "GET", "/health?bundles", None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"bundles":{"authz":{"revision":"r1"}}}"#)
    );
    let (status, body) = http(sc.server.http_addr, "GET", "/health?plugins", None).await;
    assert_eq!((status, body.as_str()), (200, "{}"));

    // Unchanged: a conditional GET answered 304, nothing recompiled.
    let before = sc.store.snapshot().revision();
    assert_eq!(
        sc.downloader.poll_once().await.unwrap(),
        PollOutcome::NotModified
    );
    assert_eq!(sc.store.snapshot().revision(), before);
    let reqs = bundles.requests();
    assert_eq!(reqs.last().unwrap().1.as_deref(), Some("\"e1\""));
    assert_eq!(reqs.last().unwrap().2, 304);

    // A new revision is activated.
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("r2", false))),
        "e2",
    );
    let outcome = sc.downloader.poll_once().await.unwrap();
    assert!(matches!(outcome, PollOutcome::Activated { ref revision, .. } if revision == "r2"));
    assert_eq!(revision_of(&sc.store, "authz").as_deref(), Some("r2"));
    assert_eq!(check_code(&sc.server).await, 7, "PERMISSION_DENIED");
    let status = sc.store.bundle_status().all();
    assert_eq!(status[0].active_revision.as_deref(), Some("r2"));
    assert_eq!(status[0].etag.as_deref(), Some("\"e2\""));
    assert!(status[0].last_error.is_none());
    sc.server.stop().await;
}

#[tokio::test]
async fn an_unchanged_download_without_etag_is_not_recompiled() {
    let bundles = BundleServer::start().await;
    bundles.state.lock().unwrap().no_etag = true;
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("r1", true))),
        "ignored",
    );
    let sc = sidecar("", &bundles.url()).await;
    assert!(matches!(
        sc.downloader.poll_once().await.unwrap(),
        PollOutcome::Activated { .. }
    ));
    let before = sc.store.snapshot().revision();
    assert_eq!(
        sc.downloader.poll_once().await.unwrap(),
        PollOutcome::NotModified
    );
    assert_eq!(sc.store.snapshot().revision(), before, "not recompiled");
    assert_eq!(bundles.requests().last().unwrap().2, 200, "a full download");
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("r2", true))),
        "ignored",
    );
    assert!(matches!(
        sc.downloader.poll_once().await.unwrap(),
        PollOutcome::Activated { ref revision, .. } if revision == "r2"
    ));
    sc.server.stop().await;
}

#[tokio::test]
async fn broken_bundles_are_refused_while_the_old_revision_keeps_serving() {
    let bundles = BundleServer::start().await;
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("good", true))),
        "g",
    );
    let sc = sidecar("", &bundles.url()).await;
    sc.downloader.poll_once().await.unwrap();
    assert_eq!(check_code(&sc.server).await, 0);

    let broken: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a module that does not compile",
            tar_gz(&[
                (
                    ".manifest",
                    r#"{"revision": "bad1", "roots": ["envoy/authz"]}"#,
                ),
                ("envoy/authz/p.rego", "package envoy.authz\n\nallow if {\n"),
            ]),
            "envoy/authz/p.rego:",
        ),
        (
            "data outside the roots",
            tar_gz(&[
                (
                    ".manifest",
                    r#"{"revision": "bad2", "roots": ["envoy/authz"]}"#,
                ),
                ("acl/data.json", r#"{"open": true}"#),
            ]),
            "do not permit data",
        ),
        (
            "not a tarball",
            b"this is not gzip".to_vec(),
            "gzipped tarball",
        ),
        (
            "a bad manifest",
            tar_gz(&[(".manifest", r#"{"revision": 3}"#)]),
            ".manifest",
        ),
    ];
    for (i, (what, archive, expect)) in broken.into_iter().enumerate() {
        bundles.put("bundles/authz.tar.gz", archive, &format!("b{i}"));
        let err = sc.downloader.poll_once().await.unwrap_err().to_string();
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(
            revision_of(&sc.store, "authz").as_deref(),
            Some("good"),
            "{what}"
        );
        assert_eq!(
            check_code(&sc.server).await,
            0,
            "{what}: old revision serves"
        );
        let status = sc.store.bundle_status().all();
        assert!(status[0].last_error.as_deref().unwrap().contains(expect));
    }
    // A server error is a failure too, and the next good download recovers.
    bundles.set_fail(Some(503));
    let err = sc.downloader.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("503"), "{err}");
    bundles.set_fail(None);
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("good2", true))),
        "g2",
    );
    sc.downloader.poll_once().await.unwrap();
    assert_eq!(revision_of(&sc.store, "authz").as_deref(), Some("good2"));
    assert!(sc.store.bundle_status().all()[0].last_error.is_none());
    sc.server.stop().await;
}

/// The value of one series in the server's `/metrics`, if it is there.
async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let (_, text) = http(server.http_addr, "GET", "/metrics", None).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn bundle_metrics_follow_each_poll() {
    let bundles = BundleServer::start().await;
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("one", true))),
        "1",
    );
    let sc = sidecar("", &bundles.url()).await;
    let polls = |result: &str| {
        format!("portcullis_bundle_polls_total{{bundle=\"authz\",result=\"{result}\"}}")
    };
    let failures = "portcullis_bundle_consecutive_failures{bundle=\"authz\"}";
    let activated_at = "portcullis_bundle_last_activation_timestamp_seconds{bundle=\"authz\"}";
    assert_eq!(metric(&sc.server, failures).await, None, "no poll yet");

    bundles.set_fail(Some(503));
    for _ in 0..2 {
        sc.downloader.poll_once().await.unwrap_err();
    }
    assert_eq!(metric(&sc.server, &polls("failure")).await, Some(2.0));
    assert_eq!(metric(&sc.server, failures).await, Some(2.0));
    assert_eq!(
        metric(&sc.server, activated_at).await,
        Some(0.0),
        "never activated"
    );

    bundles.set_fail(None);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    sc.downloader.poll_once().await.unwrap();
    sc.downloader.poll_once().await.unwrap();
    assert_eq!(metric(&sc.server, &polls("activated")).await, Some(1.0));
    assert_eq!(metric(&sc.server, &polls("not_modified")).await, Some(1.0));
    assert_eq!(metric(&sc.server, &polls("failure")).await, Some(2.0));
    assert_eq!(
        metric(&sc.server, failures).await,
        Some(0.0),
        "reset by success"
    );
    let at = metric(&sc.server, activated_at).await.unwrap();
    assert!(
        at >= before.floor() && at < before + 60.0,
        "{at} vs {before}"
    );
    sc.server.stop().await;
}

#[tokio::test]
async fn bearer_credentials_are_sent() {
    let bundles = BundleServer::start().await;
    bundles.state.lock().unwrap().required_auth = Some("Bearer other".into());
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("r1", true))),
        "e1",
    );
    let sc = sidecar("", &bundles.url()).await;
    let err = sc.downloader.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!sc.store.is_ready());
    let (status, body) = http(sc.server.http_addr, "GET", "/health?bundles", None).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("401"),
        "the health error names the last failure: {body}"
    );
    bundles.state.lock().unwrap().required_auth = Some("Bearer s3cret".into());
    sc.downloader.poll_once().await.unwrap();
    assert!(sc.store.is_ready());
    sc.server.stop().await;
}

const SIGNING: &str = "keys:\n  k1:\n    algorithm: ES256\n    key: |\n";

fn signing_yaml() -> String {
    let mut yaml = String::from(SIGNING);
    for line in fixture("ec256-a.pub.pem").lines() {
        yaml.push_str("      ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

#[tokio::test]
async fn signed_bundles_are_verified_and_tampered_ones_refused() {
    let bundles = BundleServer::start().await;
    let key = fixture("ec256-a.key.pem");
    let good = authz_bundle("signed-1", true);
    bundles.put(
        "bundles/authz.tar.gz",
        signed_tar_gz(&as_refs(&good), &key),
        "s1",
    );
    // `signing` on the bundle turns verification on (keys alone do not).
    let yaml = format!("    signing: {{keyid: k1}}\n{}", signing_yaml());
    let sc = sidecar(&yaml, &bundles.url()).await;
    sc.downloader.poll_once().await.unwrap();
    assert_eq!(revision_of(&sc.store, "authz").as_deref(), Some("signed-1"));
    assert!(sc.store.snapshot().bundles()[0].verified);

    // Tampered: the signature is kept but the policy changed after signing.
    let mut files = files(&as_refs(&good));
    let sig = portcullis::bundle::signing::sign(
        &files,
        &portcullis::bundle::signing::Signer {
            algorithm: "ES256".into(),
            key: key.clone(),
            key_id: Some("k1".into()),
            scope: None,
        },
    )
    .unwrap();
    files[0].bytes = br#"{"revision": "tampered", "roots": ["envoy/authz", "acl"]}"#.to_vec();
    files.insert(0, sig);
    let tampered = portcullis::bundle::archive::write_tar_gz(&files).unwrap();
    bundles.put("bundles/authz.tar.gz", tampered, "t1");
    let err = sc.downloader.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("digest mismatch"), "{err}");

    // Signed with another key.
    bundles.put(
        "bundles/authz.tar.gz",
        signed_tar_gz(
            &as_refs(&authz_bundle("other-key", true)),
            &fixture("ec256-b.key.pem"),
        ),
        "t2",
    );
    let err = sc.downloader.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("does not verify"), "{err}");

    // Unsigned.
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("unsigned", true))),
        "t3",
    );
    let err = sc.downloader.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("not signed"), "{err}");

    // An extra file slipped in beside a valid signature.
    let mut extra_file = portcullis::bundle::archive::read_tar_gz(
        &signed_tar_gz(&as_refs(&good), &key),
        &Limits::default(),
    )
    .unwrap();
    extra_file.push(portcullis::bundle::BundleFile {
        path: "envoy/authz/backdoor.rego".into(),
        bytes: b"package envoy.authz\n\nallow := true\n".to_vec(),
    });
    bundles.put(
        "bundles/authz.tar.gz",
        portcullis::bundle::archive::write_tar_gz(&extra_file).unwrap(),
        "t4",
    );
    let err = sc.downloader.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("not covered by the signature"), "{err}");

    assert_eq!(revision_of(&sc.store, "authz").as_deref(), Some("signed-1"));
    assert_eq!(check_code(&sc.server).await, 0);
    drop(sc.config);
    sc.server.stop().await;
}

#[tokio::test]
async fn archive_attacks_are_refused() {
    let limits = Limits::default();
    let parse = |bytes: &[u8]| Bundle::from_tar_gz("t", bytes, None, &limits).map(|_| ());
    let rego: &[u8] = b"package x\n";
    type Expect = fn(&BundleError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "path traversal",
            raw_tar_gz(&[Raw::File("../../etc/evil.rego", rego)]),
            |e| matches!(e, BundleError::UnsafePath(p, _) if p.contains("..")),
        ),
        (
            "traversal inside a path",
            raw_tar_gz(&[Raw::File("a/../../evil.rego", rego)]),
            |e| matches!(e, BundleError::UnsafePath(..)),
        ),
        (
            "absolute path",
            raw_tar_gz(&[Raw::File("//etc/cron.d/evil.rego", rego)]),
            |e| matches!(e, BundleError::UnsafePath(_, why) if why.contains("absolute")),
        ),
        (
            "drive-letter path",
            raw_tar_gz(&[Raw::File("C:/evil.rego", rego)]),
            |e| matches!(e, BundleError::UnsafePath(_, why) if why.contains("absolute")),
        ),
        (
            "backslash path",
            raw_tar_gz(&[Raw::File("..\\evil.rego", rego)]),
            |e| matches!(e, BundleError::UnsafePath(..)),
        ),
        (
            "symlink",
            raw_tar_gz(&[Raw::Symlink("data.json", "/etc/passwd")]),
            |e| matches!(e, BundleError::Link(_)),
        ),
        (
            "hard link",
            raw_tar_gz(&[Raw::HardLink("p.rego", "/etc/shadow")]),
            |e| matches!(e, BundleError::Link(_)),
        ),
        ("fifo", raw_tar_gz(&[Raw::Fifo("p.rego")]), |e| {
            matches!(e, BundleError::UnsafePath(..))
        }),
        (
            "duplicate entry",
            raw_tar_gz(&[Raw::File("p.rego", rego), Raw::File("./p.rego", rego)]),
            |e| matches!(e, BundleError::Duplicate(_)),
        ),
        ("not gzip", b"plain bytes".to_vec(), |e| {
            matches!(e, BundleError::Archive(_))
        }),
    ];
    for (what, bytes, expected) in cases {
        let err = parse(&bytes).expect_err(what);
        assert!(expected(&err), "{what}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
    }

    // A decompression bomb: 65 MiB of zeros in one entry, about 64 KiB compressed, over the
    // default 64 MiB per-file limit.
    let zeros = vec![0u8; 65 * 1024 * 1024];
    let bomb = raw_tar_gz(&[Raw::File("data.json", &zeros)]);
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    let err = parse(&bomb).unwrap_err();
    assert!(matches!(err, BundleError::TooLarge(_)), "{err:?}");
    drop(zeros);
    // Many entries that add up past the total limit.
    let small = Limits {
        max_total_bytes: 1024 * 1024,
        max_file_bytes: 600 * 1024,
        ..Limits::default()
    };
    let chunk = vec![b' '; 500 * 1024];
    let many = raw_tar_gz(&[
        Raw::File("a/data.json", &chunk),
        Raw::File("b/data.json", &chunk),
        Raw::File("c/data.json", &chunk),
    ]);
    let err = Bundle::from_tar_gz("t", &many, None, &small).unwrap_err();
    assert!(
        matches!(&err, BundleError::TooLarge(m) if m.contains("decompressed")),
        "{err:?}"
    );
    // An oversized archive is refused before it is decompressed.
    let tiny = Limits {
        max_archive_bytes: 100,
        ..Limits::default()
    };
    let err = Bundle::from_tar_gz("t", &many, None, &tiny).unwrap_err();
    assert!(
        matches!(&err, BundleError::TooLarge(m) if m.contains("archive")),
        "{err:?}"
    );
    // Too many entries.
    let few = Limits {
        max_files: 2,
        ..Limits::default()
    };
    let err = Bundle::from_tar_gz(
        "t",
        &raw_tar_gz(&[
            Raw::File("a.rego", rego),
            Raw::File("b.rego", rego),
            Raw::File("c.rego", rego),
        ]),
        None,
        &few,
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::TooLarge(_)), "{err:?}");
    // A directory bundle with a symlink is refused, not followed.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("data.json")).unwrap();
    let err = Bundle::read_path("d", dir.path(), None, &limits).unwrap_err();
    assert!(matches!(err, BundleError::Link(_)), "{err:?}");
    // OPA's own entry names (`/data.json`) are bundle-relative, not refused.
    let opa_style = raw_tar_gz(&[
        Raw::File("/.manifest", br#"{"revision": "opa"}"#),
        Raw::File("/a/data.json", br#"{"x": 1}"#),
    ]);
    let b = Bundle::from_tar_gz("t", &opa_style, None, &limits).unwrap();
    assert_eq!(b.revision(), "opa");
    assert_eq!(
        serde_json::Value::Object(b.data),
        serde_json::json!({"a": {"x": 1}})
    );
}

#[tokio::test]
async fn oversized_download_is_refused() {
    let bundles = BundleServer::start().await;
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("big", true))),
        "e",
    );
    let sc = sidecar("    size_limit_bytes: 64\n", &bundles.url()).await;
    let err = sc.downloader.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
    assert!(!sc.store.is_ready());
    sc.server.stop().await;
}

#[tokio::test]
async fn the_poll_loop_backs_off_then_activates() {
    let bundles = BundleServer::start().await;
    bundles.set_fail(Some(500));
    let sc = sidecar("", &bundles.url()).await;
    let task = tokio::spawn(sc.downloader.clone().run());
    // Failures are retried: 1 s after the first, 2 s after the second.
    assert!(
        eventually(Duration::from_secs(10), || async {
            bundles.requests().len() >= 2
        })
        .await
        .is_ok(),
        "the loop retries after a failure"
    );
    assert!(!sc.store.is_ready());
    assert!(sc.store.bundle_status().all()[0].failures >= 1);
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("late", true))),
        "l",
    );
    bundles.set_fail(None);
    let store = sc.store.clone();
    assert!(
        eventually(Duration::from_secs(15), || {
            let store = store.clone();
            async move { store.is_ready() }
        })
        .await
        .is_ok(),
        "activated once the server recovers"
    );
    assert_eq!(revision_of(&sc.store, "authz").as_deref(), Some("late"));
    task.abort();
    sc.server.stop().await;
}

#[tokio::test]
async fn persisted_bundle_activates_before_the_first_download() {
    let bundles = BundleServer::start().await;
    bundles.put(
        "bundles/authz.tar.gz",
        tar_gz(&as_refs(&authz_bundle("kept", true))),
        "k",
    );
    let persist = tempfile::tempdir().unwrap();
    let extra = format!(
        "    persist: true\npersistence_directory: {}\n",
        persist.path().display()
    );
    let sc = sidecar(&extra, &bundles.url()).await;
    sc.downloader.poll_once().await.unwrap();
    let file: PathBuf = persist.path().join("bundles/authz/bundle.tar.gz");
    assert!(file.is_file());
    sc.server.stop().await;

    // A restart while the bundle server is down still serves the persisted revision.
    bundles.set_fail(Some(503));
    let sc = sidecar(&extra, &bundles.url()).await;
    assert!(!sc.store.is_ready());
    assert_eq!(
        sc.downloader.load_persisted().await.as_deref(),
        Some("kept")
    );
    assert!(sc.store.is_ready());
    assert_eq!(check_code(&sc.server).await, 0);
    let activated = "portcullis_bundle_last_activation_timestamp_seconds{bundle=\"authz\"}";
    assert!(metric(&sc.server, activated).await.unwrap() > 0.0);
    assert!(sc.downloader.poll_once().await.is_err());
    assert_eq!(revision_of(&sc.store, "authz").as_deref(), Some("kept"));
    sc.server.stop().await;
}

#[test]
fn bundle_config_errors_name_the_key() {
    let cases = [
        ("bundles:\n  b:\n    service: nope\n", "bundles.b.service"),
        (
            "services:\n  s: {url: http://x}\nbundles:\n  b:\n    polling: {min_delay_seconds: 10, max_delay_seconds: 5}\n",
            "max_delay_seconds",
        ),
        (
            "services:\n  s: {url: http://x}\nbundles:\n  b:\n    signing: {keyid: missing}\n",
            "bundles.b.signing.keyid",
        ),
        (
            "services:\n  s: {url: http://x}\nbundles:\n  b:\n    polling: {long_polling_timeout_seconds: 10}\n",
            "long_polling",
        ),
        (
            "services:\n  s: {url: http://x}\nbundles:\n  b:\n    sevice: s\n",
            "sevice",
        ),
        (
            "keys:\n  k: {algorithm: XS999, key: x}\n",
            "keys.k.algorithm",
        ),
    ];
    for (yaml, key) in cases {
        let tree: serde_json::Value = yaml_serde::from_str(yaml).unwrap();
        let err = Config::from_tree(tree, "c.yaml").unwrap_err().to_string();
        assert!(err.contains(key), "{yaml}: {err}");
    }
    // One service: `service` may be left out; the resource defaults to bundles/<name>.
    let tree: serde_json::Value =
        yaml_serde::from_str("services:\n  s: {url: http://x/}\nbundles:\n  authz: {}\n").unwrap();
    let config = Config::from_tree(tree, "c.yaml").unwrap();
    assert_eq!(config.bundle_service("authz").unwrap().url, "http://x/");
    assert_eq!(
        config.bundles["authz"].resource_for("authz"),
        "bundles/authz"
    );
}

#[tokio::test]
async fn decision_log_events_name_the_bundle_revisions() {
    use portcullis::decision_log::{DecisionLog, LogSettings};
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("authz.tar.gz");
    std::fs::write(&archive, tar_gz(&as_refs(&authz_bundle("rev-42", true)))).unwrap();
    let log = DecisionLog::start(LogSettings::default(), None).unwrap();
    let server = TestServer::start(support::Spec {
        paths: vec![archive.clone()],
        log: Some(log.clone()),
        ..Default::default()
    })
    .await;
    let mut sub = log.subscribe();
    let mut client = server.client().await;
    client.check(CheckRequest::default()).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("an event within the deadline")
        .unwrap();
    // A bundle given as a PATH is named by its path, as in OPA.
    let mut expected = serde_json::Map::new();
    expected.insert(
        archive.display().to_string(),
        serde_json::json!({"revision": "rev-42"}),
    );
    assert_eq!(
        event.json()["bundles"],
        serde_json::Value::Object(expected),
        "{}",
        event.json()
    );
    server.stop().await;
}
