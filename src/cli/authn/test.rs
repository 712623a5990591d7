//! `authn test`: one request through the real authentication cascade, offline.
//!
//! The request is described as for `portcullis authorize` (method, path, headers, host), turned
//! into the `CheckRequest` Envoy would send, and read into the same [`RequestView`] the Check
//! path reads. The credential (`--token`, `--api-key`, `--basic`, or a `-H` header) is placed
//! where the first matching policy that reads that kind of credential looks for it. The
//! [`Authenticator`] is built from the config by the server's own builder and runs every
//! matching policy; call-outs (`jwks_uri`, `oauth`, `custom`, trusted OIDC discovery) make
//! their network calls. Failures are recorded in memory only, never in the configured audit
//! sink, and give the refusal with its internal reason.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value as Json, json};

use super::{ConfigArgs, OutputArgs, policy, printable};
use crate::authn::audit::AuditLog;
use crate::authn::config::{AuthPolicy, Authentication, Method};
use crate::authn::request::{RequestView, path_forms};
use crate::authn::{Authenticator, AuthnOutcome};
use crate::cli::CliError;
use crate::cli::output::{self, Format};
use crate::cli::secret;
use crate::client::{RequestArgs, RequestSpec};
use crate::env::ProcessEnv;

/// Flags of `authn test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run only this policy (its `match` still applies); the request defaults to one it
    /// matches (its first host, path prefix, method and namespace).
    #[arg(long)]
    pub policy: Option<String>,
    #[command(flatten)]
    pub credential: CredentialArgs,
    #[command(flatten)]
    pub request: RequestArgs,
    /// The request's host (`:authority`) [default: localhost].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The `namespace` context extension, as an Envoy route sets it.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The credential to present: at most one. Flags show the secret to other users (`ps`) and
/// keep it in the shell's history; each has a `-file` form (`-` reads standard input).
#[derive(Clone, Default, clap::Args)]
#[group(id = "credential", multiple = false)]
pub struct CredentialArgs {
    /// A bearer token (JWT or OAuth access token).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A file holding the bearer token (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// An API key.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// A file holding the API key (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Basic credentials, `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub basic: Option<String>,
    /// A file holding `USER:PASSWORD` (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub basic_file: Option<PathBuf>,
}

impl std::fmt::Debug for CredentialArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.token.is_some() || self.token_file.is_some() {
            "token"
        } else if self.api_key.is_some() || self.api_key_file.is_some() {
            "api_key"
        } else if self.basic.is_some() || self.basic_file.is_some() {
            "basic"
        } else {
            "none"
        };
        f.debug_struct("CredentialArgs")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// A credential read from its flag or file.
enum Credential {
    Token(String),
    ApiKey(String),
    Basic(String),
}

impl CredentialArgs {
    fn read(&self) -> Result<Option<Credential>, CliError> {
        let read = |v: &Option<String>, f: &Option<PathBuf>, what| {
            secret::either(v.as_deref(), f.as_deref(), what, false)
        };
        if let Some(t) = read(&self.token, &self.token_file, "--token")? {
            return Ok(Some(Credential::Token(t)));
        }
        if let Some(k) = read(&self.api_key, &self.api_key_file, "--api-key")? {
            return Ok(Some(Credential::ApiKey(k)));
        }
        if let Some(b) = read(&self.basic, &self.basic_file, "--basic")? {
            if !b.contains(':') {
                return Err(CliError::Usage("--basic: expected USER:PASSWORD".into()));
            }
            return Ok(Some(Credential::Basic(b)));
        }
        Ok(None)
    }
}

/// `authn test`.
pub async fn run(a: TestArgs) -> Result<(), CliError> {
    let mut auth = a.config.authentication()?;
    let mut spec = a
        .request
        .to_spec()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if a.host.is_some() {
        spec.host = a.host.clone();
    }
    if let Some(ns) = &a.namespace {
        spec.context_extensions
            .insert("namespace".into(), ns.clone());
    }
    if let Some(name) = &a.policy {
        let only = policy(&auth, name)?.clone();
        default_to_match(&mut spec, &only);
        auth.policies = vec![only];
    }
    if let Some(c) = a.credential.read()? {
        place(&c, &auth, &mut spec)?;
    }
    spec.validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let check = spec.to_check_request();
    let view = RequestView::from_check(&check);
    let matched: Vec<String> = matching(&auth, &view)
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let audit = AuditLog::memory();
    let authenticator = Authenticator::build(&auth, audit.clone(), &ProcessEnv)
        .map_err(|e| CliError::Failed(format!("{}: {e}", a.config.config.display())))?;
    let outcome = authenticator.authenticate(&view, "authn-test").await;
    let failure = audit
        .events()
        .into_iter()
        .rev()
        .find(|e| e["event"] == "authn_failure");
    report(&outcome, &matched, failure.as_ref(), a.output.format())
}

/// The policies whose `match` holds for the request, in config order.
fn matching<'a>(auth: &'a Authentication, view: &RequestView<'_>) -> Vec<&'a AuthPolicy> {
    let paths = path_forms(view.path);
    auth.policies
        .iter()
        .filter(|p| p.matcher.matches(view, &paths))
        .collect()
}

/// Fills the request fields not given with ones `policy` matches.
fn default_to_match(spec: &mut RequestSpec, policy: &AuthPolicy) {
    let m = &policy.matcher;
    let unset = |spec: &RequestSpec, field: &Option<String>, pseudo: &str| {
        field.is_none() && !spec.headers.keys().any(|k| k.eq_ignore_ascii_case(pseudo))
    };
    if unset(spec, &spec.path, ":path")
        && let Some(p) = m.path_prefixes.first()
    {
        spec.path = Some(p.clone());
    }
    if unset(spec, &spec.method, ":method")
        && let Some(method) = m.methods.first()
    {
        spec.method = Some(method.to_ascii_uppercase());
    }
    if unset(spec, &spec.host, ":authority")
        && !spec.headers.keys().any(|k| k.eq_ignore_ascii_case("host"))
        && let Some(h) = m.hosts.first()
    {
        // `*.example.com` matches any one name below it.
        spec.host = Some(match h.strip_prefix("*.") {
            Some(suffix) => format!("test.{suffix}"),
            None => h.clone(),
        });
    }
    if let Some(ns) = &m.namespace {
        spec.context_extensions
            .entry("namespace".into())
            .or_insert_with(|| ns.clone());
    }
}

/// Puts the credential where the first matching policy that reads its kind looks for it.
fn place(c: &Credential, auth: &Authentication, spec: &mut RequestSpec) -> Result<(), CliError> {
    let check = spec.to_check_request();
    let matched = matching(auth, &RequestView::from_check(&check));
    match c {
        Credential::Token(token) => {
            let reader = matched.iter().find_map(|p| {
                p.methods.iter().find_map(|m| match m {
                    Method::Jwt => Some(p.jwt.as_ref().map_or_else(
                        || ("authorization".to_string(), "Bearer".to_string()),
                        |j| (j.header.clone(), j.scheme.clone()),
                    )),
                    Method::OAuth => p
                        .oauth
                        .as_ref()
                        .map(|o| (o.header.clone(), o.scheme.clone())),
                    _ => None,
                })
            });
            let (header, scheme) = reader.unwrap_or_else(|| {
                eprintln!(
                    "note: no policy matching this request reads bearer tokens (jwt, oauth); \
                     sending it as authorization: Bearer"
                );
                ("authorization".into(), "Bearer".into())
            });
            let value = if scheme.is_empty() {
                token.clone()
            } else {
                format!("{scheme} {token}")
            };
            set_header(spec, &header, value);
        }
        Credential::ApiKey(key) => {
            let config = matched
                .iter()
                .filter(|p| p.methods.contains(&Method::ApiKey))
                .find_map(|p| p.api_key.as_ref())
                .ok_or_else(|| {
                    CliError::Usage(
                        "no policy matching this request reads API keys (choose the request \
                         with --path/--host/-X, or --policy)"
                            .into(),
                    )
                })?;
            if let Some(h) = &config.header {
                let value = if h.eq_ignore_ascii_case("authorization") {
                    format!("ApiKey {key}")
                } else {
                    key.clone()
                };
                set_header(spec, h, value);
            } else if let Some(q) = &config.query_param {
                let path = spec.path.clone().unwrap_or_else(|| "/".into());
                let pair: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair(q, key)
                    .finish();
                let sep = if path.contains('?') { '&' } else { '?' };
                spec.path = Some(format!("{path}{sep}{pair}"));
            } else if let Some(name) = &config.cookie {
                let cookie = spec
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("cookie"))
                    .map(|(_, v)| format!("{v}; {name}={key}"))
                    .unwrap_or_else(|| format!("{name}={key}"));
                set_header(spec, "cookie", cookie);
            }
        }
        Credential::Basic(pair) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            set_header(spec, "authorization", format!("Basic {encoded}"));
        }
    }
    Ok(())
}

fn set_header(spec: &mut RequestSpec, name: &str, value: String) {
    spec.headers.retain(|k, _| !k.eq_ignore_ascii_case(name));
    spec.headers.insert(name.to_ascii_lowercase(), value);
}

/// Prints the outcome; `Err(Denied)` (exit 1) unless authenticated.
fn report(
    outcome: &AuthnOutcome,
    matched: &[String],
    failure: Option<&Json>,
    format: Format,
) -> Result<(), CliError> {
    let field = |k: &str| failure.and_then(|f| f[k].as_str()).map(str::to_owned);
    let (doc, text, ok) = match outcome {
        AuthnOutcome::Authenticated(id) => {
            let identity = serde_json::to_value(&**id).unwrap_or(Json::Null);
            let text = format!(
                "authenticated: {} by {} (policies: {})\n{}",
                printable(&id.subject),
                id.method.as_str(),
                matched.join(", "),
                serde_json::to_string_pretty(&identity).unwrap_or_default()
            );
            let doc = json!({"result": "authenticated", "policies": matched, "identity": identity});
            (doc, text, true)
        }
        AuthnOutcome::Denied(d) => {
            let reason = field("reason").unwrap_or_default();
            let mut doc = json!({
                "result": "refused",
                "status": d.status(),
                "code": d.code.as_str(),
                "reason": reason,
                "policy": field("policy"),
                "method": field("method"),
                "www_authenticate": d.www_authenticate,
                "policies": matched,
            });
            if let Some(s) = field("subject") {
                doc["subject"] = Json::from(s);
            }
            let mut text = format!(
                "{} {}: {} (policy {}, method {})",
                d.status(),
                d.code.as_str(),
                printable(&reason),
                printable(&field("policy").unwrap_or_default()),
                field("method").unwrap_or_default()
            );
            for c in &d.www_authenticate {
                text.push_str(&format!("\nwww-authenticate: {c}"));
            }
            (doc, text, false)
        }
        AuthnOutcome::Anonymous => (
            json!({"result": "anonymous", "policies": matched}),
            format!(
                "anonymous: only optional policies match ({}) and no credential was presented; \
                 input.identity would be null",
                matched.join(", ")
            ),
            false,
        ),
        AuthnOutcome::NotApplicable => (
            json!({"result": "not_applicable", "policies": []}),
            "no authentication policy matches this request; input.identity would be absent"
                .to_string(),
            false,
        ),
    };
    match format {
        Format::Json => output::json_line(&doc)?,
        Format::Table => output::text(&text)?,
    }
    if ok { Ok(()) } else { Err(CliError::Denied) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn policy(yaml: &str) -> AuthPolicy {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn requests_default_to_what_the_policy_matches() {
        let p = policy(
            "name: a\nmethods: [jwt]\nmatch: {hosts: ['*.example.com'], path_prefixes: [/v1/], methods: [post], namespace: acme}\n",
        );
        let mut spec = RequestSpec::default();
        default_to_match(&mut spec, &p);
        assert_eq!(spec.path.as_deref(), Some("/v1/"));
        assert_eq!(spec.method.as_deref(), Some("POST"));
        assert_eq!(spec.host.as_deref(), Some("test.example.com"));
        assert_eq!(spec.context_extensions["namespace"], "acme");
        let check = spec.to_check_request();
        let view = RequestView::from_check(&check);
        assert!(p.matcher.matches(&view, &path_forms(view.path)));

        // What was given stays.
        let mut spec = RequestSpec {
            path: Some("/other".into()),
            ..Default::default()
        };
        spec.headers.insert("Host".into(), "h".into());
        default_to_match(&mut spec, &p);
        assert_eq!(spec.path.as_deref(), Some("/other"));
        assert_eq!(spec.host, None);
    }

    #[test]
    fn api_keys_go_where_the_policy_reads_them() {
        let auth: Authentication = yaml_serde::from_str(
            "policies:\n  - {name: q, methods: [api_key], api_key: {query_param: k, store: s.json}}\n",
        )
        .unwrap();
        let mut spec = RequestSpec {
            path: Some("/p?x=1".into()),
            ..Default::default()
        };
        place(&Credential::ApiKey("a b&c".into()), &auth, &mut spec).unwrap();
        assert_eq!(spec.path.as_deref(), Some("/p?x=1&k=a+b%26c"));
        let check = spec.to_check_request();
        assert_eq!(
            RequestView::from_check(&check).query_param("k").as_deref(),
            Some("a b&c")
        );

        let auth: Authentication = yaml_serde::from_str(
            "policies:\n  - {name: c, methods: [api_key], api_key: {cookie: key, store: s.json}}\n",
        )
        .unwrap();
        let mut spec = RequestSpec::default();
        spec.headers.insert("Cookie".into(), "a=1".into());
        place(&Credential::ApiKey("sk".into()), &auth, &mut spec).unwrap();
        assert_eq!(spec.headers["cookie"], "a=1; key=sk");
        assert_eq!(spec.headers.len(), 1);

        // No matching policy reads API keys: said, not guessed.
        let auth: Authentication =
            yaml_serde::from_str("policies:\n  - {name: j, methods: [jwt]}\n").unwrap();
        assert!(place(&Credential::ApiKey("k".into()), &auth, &mut spec).is_err());
    }

    #[test]
    fn tokens_use_the_jwt_blocks_header_and_scheme() {
        let auth: Authentication = yaml_serde::from_str(
            "policies:\n  - {name: j, methods: [jwt], jwt: {header: x-token, scheme: '', algorithms: [HS256], secret_env: S}}\n",
        )
        .unwrap();
        let mut spec = RequestSpec::default();
        place(&Credential::Token("t".into()), &auth, &mut spec).unwrap();
        assert_eq!(
            spec.headers,
            BTreeMap::from([("x-token".to_string(), "t".to_string())])
        );
    }
}
