//! The downstream client's certificate, as Envoy forwards it: `attributes.source.certificate`
//! (URL-encoded PEM; Envoy sets it when the client connected with TLS and presented one) or the
//! `Cert=` field of `x-forwarded-client-cert` (which Envoy must sanitize:
//! `forward_client_cert_details: SANITIZE_SET`). The certificate is verified against
//! `trusted_ca_file` (chain, validity, client-auth use) by rustls' WebPKI verifier, then its
//! SANs against the allowed patterns.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use serde::Deserialize;

use super::Refused;
use super::config::Method;
use super::identity::Identity;
use super::request::RequestView;
use crate::invalid::Invalid;
use crate::telemetry::labels::Refusal;
use crate::tls::ClientIdentity;

/// Largest forwarded certificate (URL-encoded PEM, with its chain) read.
const MAX_CERT_BYTES: usize = 64 * 1024;

const XFCC: &str = "x-forwarded-client-cert";

/// `x509:` of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509Config {
    /// `attributes` (default) or `xfcc`.
    #[serde(default)]
    pub source: CertSource,
    /// PEM CA certificates that issue client certificates.
    pub trusted_ca_file: PathBuf,
    /// Glob patterns; when set, some DNS or URI SAN must match one.
    #[serde(default)]
    pub allowed_sans: Vec<String>,
    /// Glob patterns; when set, the SPIFFE ID (the `spiffe://` URI SAN) must match one.
    #[serde(default)]
    pub allowed_spiffe_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    #[default]
    Attributes,
    Xfcc,
}

impl X509Config {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, list) in [
            ("allowed_sans", &self.allowed_sans),
            ("allowed_spiffe_ids", &self.allowed_spiffe_ids),
        ] {
            for p in list {
                globset::Glob::new(p).map_err(|e| Invalid::new(key, format!("{p:?}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// The `x509` method of one policy.
pub struct X509Method {
    pub source: CertSource,
    verifier: Arc<dyn ClientCertVerifier>,
    sans: Option<globset::GlobSet>,
    spiffe: Option<globset::GlobSet>,
}

impl std::fmt::Debug for X509Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Method")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn glob_set(patterns: &[String]) -> Result<Option<globset::GlobSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        b.add(globset::Glob::new(p).map_err(|e| format!("{p:?}: {e}"))?);
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

impl X509Method {
    pub fn new(c: &X509Config) -> Result<Self, String> {
        let path = &c.trusted_ca_file;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CERTIFICATE block", path.display()));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            source: c.source,
            verifier,
            sans: glob_set(&c.allowed_sans)?,
            spiffe: glob_set(&c.allowed_spiffe_ids)?,
        })
    }

    /// The forwarded certificate as sent (for the audit thumbprint).
    pub fn forwarded<'a>(&self, req: &RequestView<'a>) -> &'a str {
        match self.source {
            CertSource::Attributes => req.source_certificate,
            CertSource::Xfcc => req.header(XFCC).unwrap_or(""),
        }
    }

    /// The identity in the forwarded certificate; `None` when none was forwarded.
    pub fn verify(&self, req: &RequestView<'_>, now: i64) -> Option<Result<Identity, Refused>> {
        let encoded = match self.source {
            CertSource::Attributes => Some(req.source_certificate).filter(|c| !c.is_empty())?,
            CertSource::Xfcc => {
                let header = req.header(XFCC)?;
                return Some(xfcc_cert(header).and_then(|cert| self.check(&cert, now)));
            }
        };
        Some(self.check(encoded, now))
    }

    fn check(&self, encoded: &str, now: i64) -> Result<Identity, Refused> {
        if encoded.len() > MAX_CERT_BYTES {
            return Err(invalid("certificate too large"));
        }
        let pem = percent_encoding::percent_decode_str(encoded).collect::<Vec<u8>>();
        let mut chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("not a PEM certificate"))?
            .into_iter();
        let leaf = chain.next().ok_or_else(|| invalid("no certificate"))?;
        let intermediates: Vec<CertificateDer<'static>> = chain.collect();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        self.verifier
            .verify_client_cert(&leaf, &intermediates, at)
            .map_err(|e| invalid(&format!("certificate not trusted: {e}")))?;
        let client = ClientIdentity::from_der(&leaf);
        if let Some(set) = &self.sans
            && !client
                .dns_names
                .iter()
                .chain(client.uris.iter())
                .any(|n| set.is_match(n))
        {
            return Err(refused(Refusal::InvalidToken, "no SAN is allowed"));
        }
        if let Some(set) = &self.spiffe
            && !client
                .spiffe_id
                .as_deref()
                .is_some_and(|id| set.is_match(id))
        {
            return Err(refused(Refusal::InvalidToken, "SPIFFE ID is not allowed"));
        }
        let mut id = Identity::new(
            Method::X509,
            client.name().to_string(),
            client.fingerprint_sha256.clone(),
        );
        if let serde_json::Value::Object(m) = client.to_json() {
            id.claims = m;
        }
        id.expires_at = not_after(&leaf);
        Ok(id)
    }
}

fn not_after(der: &[u8]) -> Option<i64> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    i64::try_from(
        cert.tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs(),
    )
    .ok()
}

/// The `Cert=` field of an `x-forwarded-client-cert` header with exactly one element.
fn xfcc_cert(header: &str) -> Result<String, Refused> {
    if header.len() > MAX_CERT_BYTES {
        return Err(invalid("x-forwarded-client-cert too large"));
    }
    let elements = split_outside_quotes(header, ',');
    if elements.len() != 1 {
        return Err(invalid(
            "x-forwarded-client-cert has several elements (sanitize it at the edge)",
        ));
    }
    let mut cert = None;
    for pair in split_outside_quotes(&elements[0], ';') {
        if let Some((k, v)) = pair.split_once('=')
            && k.trim().eq_ignore_ascii_case("cert")
        {
            if cert.is_some() {
                return Err(invalid("x-forwarded-client-cert has two Cert fields"));
            }
            cert = Some(v.trim().trim_matches('"').to_string());
        }
    }
    cert.filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("x-forwarded-client-cert has no Cert field"))
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c == sep && !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn refused(code: Refusal, reason: &str) -> Refused {
    Refused {
        code,
        reason: reason.into(),
    }
}

fn invalid(reason: &str) -> Refused {
    refused(Refusal::InvalidToken, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_fields() {
        assert_eq!(
            xfcc_cert(r#"By=spiffe://a;Hash=ab;Cert="-----BEGIN%20X";URI=spiffe://b"#).unwrap(),
            "-----BEGIN%20X"
        );
        assert!(xfcc_cert("Hash=ab;Cert=x,Hash=cd;Cert=y").is_err());
        assert!(xfcc_cert("Hash=ab").is_err());
        assert!(xfcc_cert("Cert=a;Cert=b").is_err());
        // A comma inside quotes does not split elements.
        assert_eq!(xfcc_cert(r#"Subject="CN=a,O=b";Cert=c"#).unwrap(), "c");
    }
}
