//! `token revoke` and `token revocations`: the gateway's token revocation list.

use serde_json::json;

use crate::cli::CliError;
use crate::cli::connect::GatewayArgs;
use crate::cli::output::{self, Format};
use crate::gateway::pb::{self, revoke_token_request::Target};

/// `portcullis token revoke`: exactly one of `--jti`, `--subject`, `--current`, `--from-token`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true)
    .args(["jti", "subject", "current", "from_token"])))]
pub struct RevokeArgs {
    /// Revoke the token with this `jti` (needs --expires-at, the token's `exp`).
    #[arg(long, requires = "expires_at")]
    pub jti: Option<String>,
    /// Revoke every token of this subject issued at or before --before.
    #[arg(long)]
    pub subject: Option<String>,
    /// With --subject: the time (Unix seconds or RFC 3339) at or before which tokens were
    /// issued [default: now]. A time ahead also stops new tokens for the subject until then.
    #[arg(long, requires = "subject", value_parser = parse_time)]
    pub before: Option<i64>,
    /// Until when the entry is kept (Unix seconds or RFC 3339): the token's `exp` with --jti;
    /// with --subject [default: --before plus the server's subject_ttl_seconds].
    #[arg(long, value_parser = parse_time)]
    pub expires_at: Option<i64>,
    /// Revoke the gateway JWT this command authenticates with (--token): any caller may end
    /// its own token.
    #[arg(long)]
    pub current: bool,
    /// Revoke this JWT (or `-`: read it from standard input) by the `jti` and `exp` it
    /// carries. The token is not verified here; revoking by id needs a root caller.
    #[arg(long, value_name = "TOKEN")]
    pub from_token: Option<String>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// The largest `ListRevocations` answer read.
const MAX_LIST_BYTES: usize = 160 * 1024 * 1024;

/// `portcullis token revocations`.
#[derive(Debug, Clone, clap::Args)]
pub struct RevocationsArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// Unix seconds, or an RFC 3339 time (`2026-01-31T12:00:00Z`).
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(t) = text.parse::<i64>() {
        return Ok(t);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|_| format!("{text:?}: expected Unix seconds or an RFC 3339 time"))
}

/// The `jti` and `exp` a token carries (not verified: the gateway decides who may revoke).
fn ids_of(token: &str) -> Result<(String, i64), CliError> {
    let usage = |m: &str| CliError::Usage(format!("--from-token: {m}"));
    let claims = crate::jose::jws::unverified_payload(token.trim(), 64 * 1024)
        .ok_or_else(|| usage("not a JWT (three base64url segments, a JSON payload)"))?;
    let jti = claims
        .get("jti")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| usage("the token has no jti: revoke its subject with --subject"))?;
    let exp = claims
        .get("exp")
        .and_then(|v| crate::jose::claims::number(v, "exp").ok())
        .ok_or_else(|| usage("the token has no numeric exp"))?;
    Ok((jti.to_string(), exp))
}

fn target(a: &RevokeArgs) -> Result<Target, CliError> {
    if let Some(jti) = &a.jti {
        return Ok(Target::Jti(pb::RevokeJti {
            jti: jti.clone(),
            expires_at: a.expires_at.unwrap_or(0),
        }));
    }
    if let Some(subject) = &a.subject {
        return Ok(Target::Subject(pb::RevokeSubject {
            subject: subject.clone(),
            issued_before: a.before.unwrap_or(0),
            expires_at: a.expires_at.unwrap_or(0),
        }));
    }
    if let Some(token) = &a.from_token {
        if a.expires_at.is_some() {
            return Err(CliError::Usage(
                "--from-token takes the expiry from the token: leave out --expires-at".into(),
            ));
        }
        let token = super::read_arg(token)?;
        let (jti, expires_at) = ids_of(&token)?;
        return Ok(Target::Jti(pb::RevokeJti { jti, expires_at }));
    }
    if a.expires_at.is_some() {
        return Err(CliError::Usage(
            "--current revokes until the token's own exp: leave out --expires-at".into(),
        ));
    }
    Ok(Target::Current(true))
}

fn row(r: &pb::Revocation) -> serde_json::Value {
    let mut v = json!({"expires_at": r.expires_at, "revoked_at": r.revoked_at,
                       "revoked_by": r.revoked_by});
    if r.jti.is_empty() {
        v["subject"] = json!(r.subject);
        v["issued_before"] = json!(r.issued_before);
    } else {
        v["jti"] = json!(r.jti);
    }
    v
}

fn client(
    gw: &crate::cli::connect::Gateway,
) -> pb::auth_service_client::AuthServiceClient<crate::cli::connect::Transport> {
    pb::auth_service_client::AuthServiceClient::with_origin(gw.transport.clone(), gw.origin.clone())
}

/// `token revoke ...`.
pub async fn revoke(a: RevokeArgs) -> Result<(), CliError> {
    let target = target(&a)?;
    let gw = a.gateway.connect().await?;
    let r = client(&gw)
        .revoke_token(gw.request(pb::RevokeTokenRequest {
            target: Some(target),
        }))
        .await
        .map_err(|s| gw.failed("RevokeToken", &s))?
        .into_inner()
        .revocation
        .unwrap_or_default();
    match gw.format {
        Format::Json => output::json_line(&row(&r)),
        Format::Table => {
            let what = if r.jti.is_empty() {
                format!(
                    "subject {} (issued at or before {})",
                    r.subject, r.issued_before
                )
            } else {
                format!("jti {}", r.jti)
            };
            output::text(&format!("revoked {what} until {}", r.expires_at))
        }
    }
}

/// `token revocations`.
pub async fn revocations(a: RevocationsArgs) -> Result<(), CliError> {
    let gw = a.gateway.connect().await?;
    // A full list (up to 100,000 entries of at most ~1.3 KiB) is larger than gRPC's usual 4 MiB.
    let r = client(&gw)
        .max_decoding_message_size(MAX_LIST_BYTES)
        .list_revocations(gw.request(pb::ListRevocationsRequest {}))
        .await
        .map_err(|s| gw.failed("ListRevocations", &s))?
        .into_inner();
    match gw.format {
        Format::Json => output::json_line(
            &json!({"revocations": r.revocations.iter().map(row).collect::<Vec<_>>()}),
        ),
        Format::Table => output::text(&output::table(
            &["JTI", "SUBJECT", "ISSUED_BEFORE", "EXPIRES", "REVOKED_BY"],
            &r.revocations
                .iter()
                .map(|e| {
                    let time = |t: i64| if t == 0 { String::new() } else { t.to_string() };
                    vec![
                        e.jti.clone(),
                        e.subject.clone(),
                        time(e.issued_before),
                        e.expires_at.to_string(),
                        e.revoked_by.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_token_ids() {
        assert_eq!(parse_time("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        assert!(parse_time("tomorrow").is_err());
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!("{}.{}.sig", b64("{}"), b64(r#"{"jti": "j1", "exp": 99}"#));
        assert_eq!(ids_of(&t).unwrap(), ("j1".to_string(), 99));
        let no_jti = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp": 99}"#));
        assert!(ids_of(&no_jti).is_err());
        assert!(ids_of("garbage").is_err());
    }
}
