//! Webhook signatures: an HMAC over the request body (and a timestamp, method, path or headers,
//! as a template says), compared in constant time with each configured secret, so that a
//! secret can be rotated by listing the new one beside the old.
//!
//! Presets sign as the senders do: `github` (`X-Hub-Signature-256: sha256=<hex>` over the
//! body), `stripe` (`Stripe-Signature: t=<ts>,v1=<hex>` over `<ts>.<body>`), `slack`
//! (`X-Slack-Signature: v0=<hex>` over `v0:<ts>:<body>`, the time in
//! `X-Slack-Request-Timestamp`). A timestamp outside `tolerance_seconds` of now refuses, and so
//! does a body Envoy did not send whole.
//!
//! Replays: once a signature verifies, the SHA-256 of what it signed is remembered until the
//! delivery's timestamp leaves the tolerance window ([`Seen`]); the same signed message again
//! in that time is refused (`replayed`). Keying on the signed message rather than on one
//! signature header means that dropping or reordering the extra signatures of a rotation
//! (`v1=a,v1=b`) does not make a captured delivery new. Without a timestamp (the `github`
//! preset: GitHub signs only the body) there is no window to bound the memory, so nothing is
//! remembered unless `replay_window_seconds` says for how long.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use hmac::Mac as _;
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use sha2::Digest as _;

use super::Refused;
use super::config::{Method, OneOrMany};
use super::identity::Identity;
use super::request::RequestView;
use super::secret::SecretSource;
use crate::env::Env;
use crate::invalid::Invalid;
use crate::telemetry::labels::Refusal;

/// The header Envoy sets when it buffered the body (`true`: only part of it).
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// `hmac:` of a policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    #[serde(default)]
    pub preset: Option<Preset>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub algorithm: Option<HmacAlg>,
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Text before the signature in the header (`sha256=`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// What is signed: `{body}`, `{timestamp}`, `{method}`, `{path}`, `{header:NAME}` and
    /// literal text.
    #[serde(default)]
    pub signed: Option<String>,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default)]
    pub tolerance_seconds: Option<u64>,
    /// Environment variables, one secret each (several while rotating).
    #[serde(default)]
    pub secrets_env: OneOrMany,
    /// A file with one secret per line (owner-only permissions).
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// `input.identity.subject` (default: the preset's name, else `hmac`).
    #[serde(default)]
    pub subject: Option<String>,
    /// For signatures without a timestamp: how long an accepted signed message is remembered
    /// to refuse it again (0, the default: not at all).
    #[serde(default)]
    pub replay_window_seconds: u64,
    /// The most signed messages remembered at once.
    #[serde(default = "default_replay_cache_size")]
    pub replay_cache_size: usize,
}

fn default_replay_cache_size() -> usize {
    100_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Github,
    Stripe,
    Slack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlg {
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// Least length of a signing secret.
pub const MIN_SECRET_BYTES: usize = 16;

/// Default `tolerance_seconds`.
const DEFAULT_TOLERANCE: u64 = 300;

/// The longest `replay_window_seconds`.
const MAX_REPLAY_WINDOW: u64 = 86_400;

/// The largest `replay_cache_size`.
const MAX_REPLAY_CACHE: usize = 10_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    Timestamp,
    Method,
    Path,
    Header(String),
}

/// Where the signature header keeps the signature (and the timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `<prefix><signature>`.
    Plain,
    /// `t=<ts>,v1=<sig>[,v1=<sig>...]`.
    Stripe,
}

/// The resolved settings of one policy's `hmac` method.
#[derive(Debug)]
pub struct HmacMethod {
    pub header: String,
    format: Format,
    alg: HmacAlg,
    encoding: Encoding,
    prefix: String,
    template: Vec<Part>,
    timestamp_header: Option<String>,
    tolerance: i64,
    secrets: SecretSource,
    subject: String,
    /// How long an accepted message is remembered when it has no timestamp (0: not at all).
    replay_window: i64,
    seen: Mutex<Seen>,
}

/// Signed messages already accepted, by SHA-256, each until its delivery can no longer pass
/// the timestamp check: at most `max`, the earliest to expire first in line to be forgotten.
#[derive(Debug)]
pub struct Seen {
    until: HashMap<[u8; 32], i64>,
    by_expiry: BTreeSet<(i64, [u8; 32])>,
    max: usize,
}

/// Why [`Seen::record`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Accepted before, and still within its window.
    Replayed,
    /// `max` messages are remembered and none has expired: a new one cannot be told from a
    /// replay later, so it is refused (the sender retries).
    Full,
}

impl Seen {
    pub fn new(max: usize) -> Self {
        Self {
            until: HashMap::new(),
            by_expiry: BTreeSet::new(),
            max,
        }
    }

    /// Remembers `digest` until `until` (seconds), unless it is remembered already.
    pub fn record(&mut self, digest: [u8; 32], until: i64, now: i64) -> Result<(), ReplayError> {
        while let Some(&(t, d)) = self.by_expiry.first() {
            if t >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.until.remove(&d);
        }
        if self.until.contains_key(&digest) {
            return Err(ReplayError::Replayed);
        }
        if self.until.len() >= self.max {
            return Err(ReplayError::Full);
        }
        self.until.insert(digest, until);
        self.by_expiry.insert((until, digest));
        Ok(())
    }
}

fn parse_template(t: &str) -> Result<Vec<Part>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Part::Literal(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or("an unclosed { in the template")?
            + open;
        let name = &rest[open + 1..close];
        out.push(match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "method" => Part::Method,
            "path" => Part::Path,
            _ => match name.strip_prefix("header:") {
                Some(h) if !h.trim().is_empty() => Part::Header(h.trim().to_ascii_lowercase()),
                _ => return Err(format!("unknown placeholder {{{name}}}")),
            },
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Part::Literal(rest.to_string()));
    }
    Ok(out)
}

impl HmacConfig {
    /// The settings after the preset's defaults.
    fn resolve(&self) -> Result<Resolved, Invalid> {
        let (header, prefix, signed, ts_header, format) = match self.preset {
            Some(Preset::Github) => (
                "x-hub-signature-256",
                "sha256=",
                "{body}",
                None,
                Format::Plain,
            ),
            Some(Preset::Stripe) => (
                "stripe-signature",
                "",
                "{timestamp}.{body}",
                None,
                Format::Stripe,
            ),
            Some(Preset::Slack) => (
                "x-slack-signature",
                "v0=",
                "v0:{timestamp}:{body}",
                Some("x-slack-request-timestamp"),
                Format::Plain,
            ),
            None => ("", "", "{body}", None, Format::Plain),
        };
        let header = self.header.clone().unwrap_or_else(|| header.into());
        if header.trim().is_empty() {
            return Err(Invalid::new("header", "required without a preset"));
        }
        let template = parse_template(self.signed.as_deref().unwrap_or(signed))
            .map_err(|m| Invalid::new("signed", m))?;
        let timestamp_header = self
            .timestamp_header
            .clone()
            .or_else(|| ts_header.map(str::to_owned))
            .map(|h| h.to_ascii_lowercase());
        let has_timestamp = timestamp_header.is_some() || format == Format::Stripe;
        if has_timestamp && !template.contains(&Part::Timestamp) {
            // An unsigned timestamp can be replaced: it would bound neither the age of a
            // delivery nor how long a replay is remembered.
            return Err(Invalid::new(
                "signed",
                "a timestamp is read but not signed: put {timestamp} in the template",
            ));
        }
        if template.contains(&Part::Timestamp) && !has_timestamp {
            return Err(Invalid::new(
                "signed",
                "{timestamp} needs timestamp_header (or the stripe preset)",
            ));
        }
        let tolerance = self.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE);
        if tolerance == 0 || tolerance > 3600 {
            return Err(Invalid::new("tolerance_seconds", "between 1 and 3600"));
        }
        if self.replay_window_seconds > 0 && has_timestamp {
            return Err(Invalid::new(
                "replay_window_seconds",
                "only for signatures without a timestamp; with one, tolerance_seconds is the window",
            ));
        }
        if self.replay_window_seconds > MAX_REPLAY_WINDOW {
            return Err(Invalid::new(
                "replay_window_seconds",
                format!("at most {MAX_REPLAY_WINDOW}"),
            ));
        }
        if self.replay_cache_size == 0 || self.replay_cache_size > MAX_REPLAY_CACHE {
            return Err(Invalid::new(
                "replay_cache_size",
                format!("between 1 and {MAX_REPLAY_CACHE}"),
            ));
        }
        if self.secrets_env.0.is_empty() == self.secrets_file.is_none() {
            return Err(Invalid::new(
                "secrets_env",
                "set exactly one of secrets_env, secrets_file",
            ));
        }
        Ok(Resolved {
            header: header.to_ascii_lowercase(),
            format,
            alg: self.algorithm.unwrap_or(HmacAlg::Sha256),
            encoding: self.encoding.unwrap_or(Encoding::Hex),
            prefix: self.prefix.clone().unwrap_or_else(|| prefix.into()),
            template,
            timestamp_header,
            tolerance,
            subject: self.subject.clone().unwrap_or_else(|| {
                match self.preset {
                    Some(Preset::Github) => "github",
                    Some(Preset::Stripe) => "stripe",
                    Some(Preset::Slack) => "slack",
                    None => "hmac",
                }
                .into()
            }),
        })
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        self.resolve().map(|_| ())
    }
}

struct Resolved {
    header: String,
    format: Format,
    alg: HmacAlg,
    encoding: Encoding,
    prefix: String,
    template: Vec<Part>,
    timestamp_header: Option<String>,
    tolerance: u64,
    subject: String,
}

impl HmacMethod {
    pub fn new(config: &HmacConfig, env: &dyn Env) -> Result<Self, String> {
        let r = config.resolve().map_err(|e| e.to_string())?;
        let secrets = SecretSource::open(
            env,
            &config.secrets_env.0,
            config.secrets_file.as_deref(),
            MIN_SECRET_BYTES,
            "hmac.secrets",
        )?;
        Ok(Self {
            header: r.header,
            format: r.format,
            alg: r.alg,
            encoding: r.encoding,
            prefix: r.prefix,
            template: r.template,
            timestamp_header: r.timestamp_header,
            tolerance: i64::try_from(r.tolerance).unwrap_or(300),
            secrets,
            subject: r.subject,
            replay_window: i64::try_from(config.replay_window_seconds).unwrap_or(0),
            seen: Mutex::new(Seen::new(config.replay_cache_size)),
        })
    }

    /// Verifies the request's signature; `None` when the signature header is absent.
    pub fn verify(&self, req: &RequestView<'_>, now: i64) -> Option<Result<Identity, Refused>> {
        let value = req.header(&self.header)?.trim();
        if value.is_empty() {
            return None;
        }
        let thumbprint = super::audit::thumbprint(value.as_bytes());
        Some(self.check(req, value, now).map(|(key, ts)| {
            let mut id = Identity::new(Method::Hmac, self.subject.clone(), thumbprint);
            let mut claims = Map::new();
            claims.insert("key_index".into(), Json::from(key));
            if let Some(ts) = ts {
                claims.insert("timestamp".into(), Json::from(ts));
            }
            id.claims = claims;
            id
        }))
    }

    /// The index of the secret that signed, and the timestamp.
    fn check(
        &self,
        req: &RequestView<'_>,
        value: &str,
        now: i64,
    ) -> Result<(usize, Option<i64>), Refused> {
        let (timestamp, signatures): (Option<&str>, Vec<&str>) = match self.format {
            Format::Plain => {
                let sig = value
                    .strip_prefix(self.prefix.as_str())
                    .ok_or_else(|| invalid_sig("signature without its prefix"))?;
                let ts = match &self.timestamp_header {
                    Some(h) => Some(
                        req.header(h)
                            .ok_or_else(|| invalid_token("timestamp header missing"))?,
                    ),
                    None => None,
                };
                (ts, vec![sig])
            }
            Format::Stripe => {
                let mut t = None;
                let mut sigs = Vec::new();
                for item in value.split(',') {
                    match item.trim().split_once('=') {
                        Some(("t", v)) if t.is_none() => t = Some(v),
                        Some(("t", _)) => return Err(invalid_sig("two timestamps")),
                        Some(("v1", v)) => sigs.push(v),
                        _ => {}
                    }
                }
                (
                    Some(t.ok_or_else(|| invalid_token("no t= in the signature header"))?),
                    sigs,
                )
            }
        };
        if signatures.is_empty() || signatures.len() > 8 {
            return Err(invalid_sig("no usable signature"));
        }
        let ts = match timestamp {
            Some(t) => {
                let t = t.trim();
                let ts: i64 =
                    (!t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| t.parse().ok())
                        .flatten()
                        .ok_or_else(|| invalid_token("timestamp is not a number of seconds"))?;
                if (now - ts).abs() > self.tolerance {
                    return Err(invalid_token(
                        "timestamp outside the tolerance (stale or replayed)",
                    ));
                }
                Some(ts)
            }
            None => None,
        };
        if self.template.contains(&Part::Body) {
            check_whole_body(req)?;
        }
        let decoded: Vec<Vec<u8>> = signatures
            .iter()
            .filter_map(|s| self.decode(s.trim()))
            .collect();
        if decoded.is_empty() {
            return Err(invalid_sig("signature is not valid hex or base64"));
        }
        let secrets = self.secrets.get();
        let ts_text = timestamp.unwrap_or("");
        let signer = secrets.0.iter().enumerate().find_map(|(i, secret)| {
            decoded
                .iter()
                .any(|sig| self.verify_one(secret, req, ts_text, sig))
                .then_some(i)
        });
        let Some(i) = signer else {
            return Err(invalid_sig("signature does not match"));
        };
        self.check_replay(req, ts_text, ts, now)?;
        Ok((i, ts))
    }

    /// Refuses a signed message accepted before within its window, and remembers this one:
    /// until its timestamp leaves the tolerance, or for `replay_window_seconds` without one.
    fn check_replay(
        &self,
        req: &RequestView<'_>,
        ts_text: &str,
        ts: Option<i64>,
        now: i64,
    ) -> Result<(), Refused> {
        let until = match ts {
            Some(ts) => ts.saturating_add(self.tolerance),
            None if self.replay_window > 0 => now.saturating_add(self.replay_window),
            None => return Ok(()),
        };
        let mut digest = sha2::Sha256::new();
        self.feed(req, ts_text, |b| digest.update(b));
        let digest: [u8; 32] = digest.finalize().into();
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| invalid_token("replay cache unavailable"))?;
        match seen.record(digest, until, now) {
            Ok(()) => Ok(()),
            Err(ReplayError::Replayed) => Err(invalid_token("replayed")),
            Err(ReplayError::Full) => Err(Refused {
                code: Refusal::TooManyRequests,
                reason: "replay cache full".into(),
            }),
        }
    }

    fn decode(&self, s: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let bytes = match self.encoding {
            Encoding::Hex => hex_decode(s)?,
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(s).ok()?,
        };
        let want = match self.alg {
            HmacAlg::Sha256 => 32,
            HmacAlg::Sha512 => 64,
        };
        (bytes.len() == want).then_some(bytes)
    }

    fn verify_one(&self, secret: &[u8], req: &RequestView<'_>, ts: &str, sig: &[u8]) -> bool {
        match self.alg {
            HmacAlg::Sha256 => match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
                Ok(mut mac) => {
                    self.feed(req, ts, |b| mac.update(b));
                    mac.verify_slice(sig).is_ok()
                }
                Err(_) => false,
            },
            HmacAlg::Sha512 => match hmac::Hmac::<sha2::Sha512>::new_from_slice(secret) {
                Ok(mut mac) => {
                    self.feed(req, ts, |b| mac.update(b));
                    mac.verify_slice(sig).is_ok()
                }
                Err(_) => false,
            },
        }
    }

    /// The signed message, part by part.
    fn feed(&self, req: &RequestView<'_>, ts: &str, mut f: impl FnMut(&[u8])) {
        for part in &self.template {
            match part {
                Part::Literal(s) => f(s.as_bytes()),
                Part::Body => f(req.body),
                Part::Timestamp => f(ts.as_bytes()),
                Part::Method => f(req.method.as_bytes()),
                Part::Path => f(req.path.as_bytes()),
                Part::Header(h) => f(req.header(h).unwrap_or("").as_bytes()),
            }
        }
    }
}

/// Refuses a body that Envoy did not send whole: marked partial, shorter than its
/// `content-length`, or not buffered at all (`with_request_body` off) while the request has one.
fn check_whole_body(req: &RequestView<'_>) -> Result<(), Refused> {
    match req.header(PARTIAL_BODY).map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("false") => {}
        Some(_) => return Err(invalid_token("body truncated (x-envoy-auth-partial-body)")),
        None => {
            let announced = req.header("transfer-encoding").is_some()
                || req
                    .header("content-length")
                    .is_some_and(|l| l.trim() != "0");
            if announced && req.body.is_empty() {
                return Err(invalid_token(
                    "body not sent to the authorization server (with_request_body)",
                ));
            }
        }
    }
    if let Some(len) = req.header("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| invalid_token("content-length is not a number"))?;
        if len != req.body.len() {
            return Err(invalid_token("body length differs from content-length"));
        }
    }
    Ok(())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

fn invalid_sig(reason: &str) -> Refused {
    Refused {
        code: Refusal::InvalidSignature,
        reason: reason.into(),
    }
}

fn invalid_token(reason: &str) -> Refused {
    Refused {
        code: Refusal::InvalidToken,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_messages_are_bounded_and_forgotten_when_they_expire() {
        let mut seen = Seen::new(2);
        assert_eq!(seen.record([1; 32], 100, 50), Ok(()));
        assert_eq!(seen.record([1; 32], 100, 60), Err(ReplayError::Replayed));
        assert_eq!(seen.record([2; 32], 80, 60), Ok(()));
        // Full of messages still in their window: a new one is refused, none forgotten.
        assert_eq!(seen.record([3; 32], 120, 70), Err(ReplayError::Full));
        assert_eq!(seen.record([2; 32], 80, 80), Err(ReplayError::Replayed));
        // Past its window a message is forgotten, making room.
        assert_eq!(seen.record([3; 32], 120, 81), Ok(()));
        assert_eq!(seen.record([2; 32], 130, 81), Err(ReplayError::Full));
        assert_eq!(seen.record([1; 32], 100, 100), Err(ReplayError::Replayed));
        assert_eq!(seen.record([2; 32], 130, 101), Ok(()));
        assert_eq!(seen.until.len(), seen.by_expiry.len());
    }

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("v0:{timestamp}:{body}").unwrap(),
            vec![
                Part::Literal("v0:".into()),
                Part::Timestamp,
                Part::Literal(":".into()),
                Part::Body
            ]
        );
        assert_eq!(
            parse_template("{method} {path}\n{header:X-Id}").unwrap(),
            vec![
                Part::Method,
                Part::Literal(" ".into()),
                Part::Path,
                Part::Literal("\n".into()),
                Part::Header("x-id".into())
            ]
        );
        assert!(parse_template("{nope}").is_err());
        assert!(parse_template("{body").is_err());
        assert_eq!(hex_decode("0aFf"), Some(vec![10, 255]));
        assert_eq!(hex_decode("0g"), None);
        assert_eq!(hex_decode("abc"), None);
    }
}
