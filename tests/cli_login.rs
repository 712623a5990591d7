//! `portcullis auth login|logout|whoami` against a REAL OpenID provider: the npm package
//! `oidc-provider` run by Node.js (tests/oidc/provider.mjs; .ci/run installs it), and a real
//! gateway trusting it. The browser is played by an HTTP client that keeps cookies, fills the
//! provider's login form and consents; the CLI's loopback listener gets the redirect.
//!
//! The provider's modules are found at `$PORTCULLIS_OIDC_PROVIDER_MODULES`, else at
//! `${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/oidc-provider/node_modules` (where .ci/run puts
//! them). Without them (or without `node`) the tests fail when CI=true and are skipped
//! otherwise.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value as Json, json};
use support::Proc;
use support::gateway::{Gw, SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PUBLIC: &str = "portcullis-cli";
const CONFIDENTIAL: &str = "portcullis-confidential";
const CLIENT_SECRET: &str = "confidential-client-secret-0123456789";

/// The provider's `node_modules`, or `None` (skip) outside CI.
fn provider_modules() -> Option<PathBuf> {
    let dir = std::env::var_os("PORTCULLIS_OIDC_PROVIDER_MODULES")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("portcullis/oidc-provider/node_modules"))
        });
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let found = dir.filter(|d| node && d.join("oidc-provider/lib/index.js").is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "node and the npm package oidc-provider are needed (.ci/run installs them)"
        );
        eprintln!(
            "skipped: no node or oidc-provider (run .ci/run, or set PORTCULLIS_OIDC_PROVIDER_MODULES)"
        );
    }
    found
}

/// The provider, killed on drop.
struct OpenIdProvider {
    _proc: Proc,
    issuer: String,
}

fn start_provider(modules: &Path) -> OpenIdProvider {
    let mut child = Command::new("node")
        .arg(Path::new(ROOT).join("tests/oidc/provider.mjs"))
        .arg(modules)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("listening ") => {
                break l["listening ".len()..].to_string();
            }
            Some(Ok(_)) => {}
            _ => panic!("the OpenID provider did not start"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    OpenIdProvider {
        _proc: Proc(child),
        issuer,
    }
}

/// A gateway in JWT mode trusting `issuer` for both clients, granting `read` everywhere.
async fn start_gateway(issuer: &str) -> Gw {
    Gw::start(
        &[("GATEWAY_JWT_SECRET", SECRET)],
        &format!(
            "  addr: 127.0.0.1:0\nauthentication:\n  audit: {{sink: off}}\n  trust:\n    oidc:\n      \
             - issuer: {issuer}\n        audiences: [{PUBLIC}, {CONFIDENTIAL}]\n        \
             allowedDomains: [example.com]\n        grants: [{{kind: read}}]\n"
        ),
    )
    .await
}

/// The CLI with a clean environment and the saved login at `login_file`.
fn cli(login_file: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "GATEWAY_JWT_SECRET",
        "GATEWAY_TOKEN",
        "GATEWAY_PASSWORD",
        "PORTCULLIS_JWT_SECRET",
        "PORTCULLIS_TOKEN",
        "PORTCULLIS_PASSWORD",
        "PORTCULLIS_GATEWAY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PORTCULLIS_LOGIN_FILE", login_file)
        .stdin(Stdio::null());
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn json_of(out: &Output) -> Json {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text:?} / {}", String::from_utf8_lossy(&out.stderr)))
}

/// `auth login` started: the child, and the authorization URL it printed.
#[allow(clippy::zombie_processes)] // the caller waits for the child (finish_login)
async fn start_login(mut cmd: Command) -> (Child, String, BufReader<std::process::ChildStderr>) {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("no authorization URL: {seen}");
            }
            seen.push_str(&line);
            if let Some(url) = line.trim().strip_prefix("http") {
                return (child, format!("http{url}"), err);
            }
        }
    })
    .await
    .unwrap()
}

async fn finish_login(child: Child, mut err: BufReader<std::process::ChildStderr>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        let mut out = child.wait_with_output().unwrap();
        out.stderr = rest.into_bytes();
        out
    })
    .await
    .unwrap()
}

/// A browser: follows redirects, keeps cookies, logs in as `user` and consents, until the
/// provider redirects to the loopback callback, which it then calls. Returns the callback's
/// status.
async fn browse(url: &str, user: &str) -> u16 {
    let http = portcullis::services::callout_client(std::time::Duration::from_secs(10)).unwrap();
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let mut next = (reqwest::Method::GET, url.to_string(), None::<String>);
    let form = regex::Regex::new(r#"<form[^>]*action="([^"]+)""#).unwrap();
    let hidden =
        regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)""#).unwrap();
    for _ in 0..20 {
        let (method, target, body) = next.clone();
        let parsed = reqwest::Url::parse(&target).unwrap();
        if parsed.path() == "/callback" {
            return http.get(parsed).send().await.unwrap().status().as_u16();
        }
        let mut req = http.request(method, parsed.clone());
        if !cookies.is_empty() {
            let jar: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", jar.join("; "));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b);
        }
        let resp = req.send().await.unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                cookies.insert(k.trim().to_string(), v.to_string());
            }
        }
        let status = resp.status();
        if status.is_redirection() {
            let location = resp.headers()["location"].to_str().unwrap().to_string();
            next = (
                reqwest::Method::GET,
                parsed.join(&location).unwrap().to_string(),
                None,
            );
            continue;
        }
        let page = resp.text().await.unwrap();
        assert!(status.is_success(), "{status} at {target}: {page}");
        let action = &form.captures(&page).expect("a form")[1];
        let mut fields = form_urlencoded::Serializer::new(String::new());
        for c in hidden.captures_iter(&page) {
            fields.append_pair(&c[1], &c[2]);
        }
        if page.contains("name=\"login\"") {
            fields
                .append_pair("login", user)
                .append_pair("password", "any");
        }
        next = (
            reqwest::Method::POST,
            parsed.join(action).unwrap().to_string(),
            Some(fields.finish()),
        );
    }
    panic!("the login never came back");
}

fn query_param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn login_whoami_use_and_logout() {
    let Some(modules) = provider_modules() else {
        return;
    };
    let provider = start_provider(&modules);
    let gw = start_gateway(&provider.issuer).await;
    let gateway = gw.gateway.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config/portcullis/token");

    let mut login = cli(&file);
    login.args([
        "auth",
        "login",
        "--issuer",
        &provider.issuer,
        "--client-id",
        PUBLIC,
        "--gateway",
        &gateway,
        "--wait",
        "60s",
        "-o",
        "json",
    ]);
    let (child, url, err) = start_login(login).await;
    // The URL asks for a code with PKCE S256, a state and a nonce, back to the loopback.
    assert!(
        url.starts_with(&format!("{}/auth?", provider.issuer)),
        "{url}"
    );
    assert_eq!(query_param(&url, "code_challenge_method"), "S256");
    assert_eq!(query_param(&url, "code_challenge").len(), 43);
    assert_eq!(query_param(&url, "state").len(), 43);
    assert_eq!(query_param(&url, "nonce").len(), 43);
    let redirect = query_param(&url, "redirect_uri");
    assert!(
        redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"),
        "{redirect}"
    );
    assert_eq!(browse(&url, "alice").await, 200);
    let out = finish_login(child, err).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(v["subject"], "alice");
    assert_eq!(v["grants"], json!([{"kind": "read"}]));
    assert_eq!(v["gateway"], format!("http://{gateway}"));
    assert_eq!(v["expired"], false);

    // Saved readable by its owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);

    // whoami tells what the token says.
    let mut whoami = cli(&file);
    whoami.args(["auth", "whoami", "-o", "json"]);
    let out = output(whoami).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let who = json_of(&out);
    assert_eq!(who["subject"], "alice");
    assert_eq!(who["grants"], json!([{"kind": "read"}]));
    assert_eq!(who["issuer"], provider.issuer.as_str());
    let exp = who["expires_at"].as_i64().unwrap();
    let now = portcullis::jose::clock::now();
    assert!(exp > now && exp <= now + 3600, "{who}");

    // The client commands use it without any credential flag.
    let mut status = cli(&file);
    status.args(["status", "--gateway", &gateway, "-o", "json"]);
    let out = output(status).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_of(&out)["auth_mode"], "jwt");
    let mut decide = cli(&file);
    decide.args([
        "decide",
        "--gateway",
        &gateway,
        "--path",
        "envoy/authz/allow",
        "--input",
        r#"{"user": "alice"}"#,
        "-o",
        "json",
    ]);
    let out = output(decide).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The grant is read: a write is refused.
    let mut put = cli(&file);
    put.args(["data", "put", "users/bob", "true", "--gateway", &gateway]);
    let out = output(put).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{out:?}"
    );
    // Another gateway never gets it.
    let mut other = cli(&file);
    other.args(["status", "--gateway", "127.0.0.1:9", "--timeout", "2s"]);
    let out = output(other).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not sent"),
        "{out:?}"
    );

    // A saved login others can read is refused, not used.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut status = cli(&file);
    status.args(["status", "--gateway", &gateway]);
    let out = output(status).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("owner only"),
        "{out:?}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Logout removes it; then the gateway answers UNAUTHENTICATED and whoami says so.
    let mut logout = cli(&file);
    logout.args(["auth", "logout", "-o", "json"]);
    let out = output(logout).await;
    assert_eq!(json_of(&out)["removed"], true, "{out:?}");
    assert!(!file.exists());
    let mut status = cli(&file);
    status.args(["status", "--gateway", &gateway]);
    let out = output(status).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{out:?}"
    );
    let mut whoami = cli(&file);
    whoami.args(["auth", "whoami"]);
    let out = output(whoami).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confidential_client_logs_in_with_its_secret_file() {
    let Some(modules) = provider_modules() else {
        return;
    };
    let provider = start_provider(&modules);
    let gw = start_gateway(&provider.issuer).await;
    let gateway = gw.gateway.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = |secret: &Path| -> Vec<String> {
        [
            "auth",
            "login",
            "--issuer",
            &provider.issuer,
            "--client-id",
            CONFIDENTIAL,
            "--client-secret-file",
            secret.to_str().unwrap(),
            "--gateway",
            &gateway,
            "--wait",
            "60s",
            "-o",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // A secret file others can read is refused before anything is sent.
    let mut login = cli(&file);
    login.args(args(&secret));
    let out = output(login).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("owner only"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut login = cli(&file);
    login.args(args(&secret));
    let (child, url, err) = start_login(login).await;
    assert_eq!(browse(&url, "bob").await, 200);
    let out = finish_login(child, err).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_of(&out)["subject"], "bob");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(CLIENT_SECRET));

    // The wrong secret: the provider's refusal, and nothing saved.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&secret, "not-the-secret").unwrap();
    let mut login = cli(&file);
    login.args(args(&secret));
    let (child, url, err) = start_login(login).await;
    browse(&url, "bob").await;
    let out = finish_login(child, err).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_client"),
        "{out:?}"
    );
    assert!(!file.exists());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_redirect_is_refused() {
    let Some(modules) = provider_modules() else {
        return;
    };
    let provider = start_provider(&modules);
    let gw = start_gateway(&provider.issuer).await;
    let gateway = gw.gateway.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let login = |gateway: &str, wait: &str| {
        let mut login = cli(&file);
        login.args([
            "auth",
            "login",
            "--issuer",
            &provider.issuer,
            "--client-id",
            PUBLIC,
            "--gateway",
            gateway,
            "--wait",
            wait,
        ]);
        login
    };
    // An unreachable gateway fails before anyone is asked to log in.
    let out = output(login("127.0.0.1:9", "60s")).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot connect") && !said.contains("/auth?"),
        "{said}"
    );
    let start = |wait: &str| login(&gateway, wait);
    // A request to the callback with another state ends the login: nothing is exchanged.
    let (child, url, err) = start_login(start("60s")).await;
    let redirect = query_param(&url, "redirect_uri");
    let iss = form_urlencoded::byte_serialize(provider.issuer.as_bytes()).collect::<String>();
    let http = portcullis::services::callout_client(std::time::Duration::from_secs(5)).unwrap();
    let answer = http
        .get(format!("{redirect}?code=stolen&state=forged&iss={iss}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let out = finish_login(child, err).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state does not match"),
        "{out:?}"
    );
    assert!(!file.exists());
    // The listener is closed: the real answer cannot be sent afterwards either.
    assert!(http.get(&redirect).send().await.is_err());

    // The right state naming another issuer (a mix-up): refused too.
    let (child, url, err) = start_login(start("60s")).await;
    let state = query_param(&url, "state");
    let redirect = query_param(&url, "redirect_uri");
    let answer = http
        .get(format!(
            "{redirect}?code=c&state={state}&iss=https%3A%2F%2Fevil.test"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let out = finish_login(child, err).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another issuer"),
        "{out:?}"
    );

    // Nobody comes back: the wait ends.
    let (child, _, err) = start_login(start("1s")).await;
    let out = finish_login(child, err).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no login came back"),
        "{out:?}"
    );
    gw.stop().await;
}

#[test]
fn whoami_says_when_the_saved_login_expired() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let claims = json!({"sub": "carol", "aud": "portcullis-gateway", "exp": 1000,
                        "ns": "acme", "grants": [{"kind": "readwrite", "namespace": "acme"}]});
    let token = portcullis::gateway::caller::sign(
        &serde_json::from_value(claims).unwrap(),
        SECRET.as_bytes(),
    )
    .unwrap();
    let saved = json!({"gateway": "http://127.0.0.1:9292", "issuer": "https://i.test",
                       "token": token, "expires_at": 1000});
    std::fs::write(&file, saved.to_string()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut whoami = cli(&file);
    whoami.args(["auth", "whoami", "-o", "table"]);
    let out = whoami.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("carol") && text.contains("EXPIRED"), "{text}");
    assert!(
        text.contains("readwrite@acme") && text.contains("ns=acme"),
        "{text}"
    );
    // An expired login is not sent (and said so).
    let mut status = cli(&file);
    status.args(["status", "--gateway", "127.0.0.1:9292", "--timeout", "1s"]);
    let out = status.output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{out:?}"
    );
}
