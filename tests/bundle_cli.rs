//! The bundle command line: `portcullis bundle build` (revision, signing, refusing a policy
//! that does not compile) and `portcullis run -b ... --verification-key` (a signed bundle
//! serves; an unsigned or tampered one stops start-up with a clear error).

mod support;

use support::fixtures::JWT as FIXTURES;
use support::{Proc, free_ports};

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis")
}

fn policy_dir(root: &Path) -> String {
    let dir = root.join("policy");
    std::fs::create_dir_all(dir.join("envoy/authz")).unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/config"), "not in the bundle").unwrap();
    std::fs::write(dir.join(".manifest"), r#"{"roots": ["envoy/authz"]}"#).unwrap();
    std::fs::write(
        dir.join("envoy/authz/policy.rego"),
        "package envoy.authz\n\nallow if data.envoy.authz.open\n",
    )
    .unwrap();
    std::fs::write(dir.join("envoy/authz/data.json"), r#"{"open": true}"#).unwrap();
    dir.display().to_string()
}

#[test]
fn bundle_build_writes_a_signed_bundle_with_the_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    let out = tmp.path().join("b.tar.gz");
    let key = format!("{FIXTURES}/ec256-a.key.pem");
    let o = run(&[
        "bundle",
        "build",
        &dir,
        "-o",
        out.to_str().unwrap(),
        "--revision",
        "abc123",
        "--signing-key",
        &key,
        "--signing-alg",
        "ES256",
        "--key-id",
        "ci",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("\"abc123\"") && stdout.contains("signed"),
        "{stdout}"
    );
    let files = portcullis::bundle::archive::read_tar_gz(
        &std::fs::read(&out).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert!(names.contains(&".signatures.json"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(".git")), "{names:?}");
    let bundle = portcullis::bundle::Bundle::from_files(
        "b",
        files,
        Some(&portcullis::bundle::Verification {
            keys: [(
                "ci".to_string(),
                portcullis::config::KeyConfig {
                    algorithm: "ES256".into(),
                    key: Some(
                        std::fs::read_to_string(format!("{FIXTURES}/ec256-a.pub.pem")).unwrap(),
                    ),
                    private_key: None,
                    scope: None,
                },
            )]
            .into(),
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(bundle.revision(), "abc123");

    // A policy that does not compile is not packaged.
    std::fs::write(
        Path::new(&dir).join("envoy/authz/broken.rego"),
        "package envoy.authz\n\nallow if {\n",
    )
    .unwrap();
    let o = run(&["bundle", "build", &dir, "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("broken.rego"), "{stderr}");
}

#[tokio::test]
async fn run_verifies_signed_bundle_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    let signed = tmp.path().join("signed.tar.gz");
    let unsigned = tmp.path().join("unsigned.tar.gz");
    let key = format!("{FIXTURES}/ec256-a.key.pem");
    let public = format!("{FIXTURES}/ec256-a.pub.pem");
    for (out, sign) in [(&signed, true), (&unsigned, false)] {
        let mut args = vec!["bundle", "build", &dir, "-o", out.to_str().unwrap()];
        if sign {
            args.extend(["--signing-key", &key, "--signing-alg", "ES256"]);
        }
        assert!(run(&args).status.success());
    }
    let verify = [
        "--verification-key",
        public.as_str(),
        "--signing-alg",
        "ES256",
    ];

    // Unsigned, with verification asked for: start-up stops, naming the reason.
    let mut args = vec!["run", "--server", "--addr", "127.0.0.1:0", "-b"];
    args.push(unsigned.to_str().unwrap());
    args.extend(verify);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("not signed"), "{stderr}");
    // Signed, but no key given: refused too, as OPA does.
    let o = run(&["run", "--server", "-b", signed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no verification key"), "{stderr}");

    // Signed and verified: it serves.
    let [http_port, grpc_port] = free_ports();
    let addr = format!("127.0.0.1:{http_port}");
    let grpc = format!("--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc_port}");
    let mut args = vec!["run", "--server", "--addr", &addr, grpc.as_str(), "-b"];
    args.push(signed.to_str().unwrap());
    args.extend(verify);
    let _proc = Proc(
        Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http_addr = addr.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(http_addr).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "portcullis did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = support::http(http_addr, "GET", "/v1/data/envoy/authz/allow", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":true}"#));
    let (status, body) = support::http(http_addr, "GET", "/health?bundles", None).await;
    assert_eq!(status, 200, "{body}");
}
