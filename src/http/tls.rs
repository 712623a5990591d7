//! HTTPS on the HTTP API listeners, from OPA's flags on `portcullis run`:
//!
//! - `--tls-cert-file` and `--tls-private-key-file` (together or not at all): the server's PEM
//!   chain and key (the key file must not be readable by group or others, as for every `tls:`
//!   block).
//! - `--tls-ca-cert-file`: the CAs client certificates must chain to. With
//!   `--authentication=tls` every client must present one (`client_auth: require`); otherwise a
//!   client may present one, which must then verify (`request`). OPA ignores the CA file unless
//!   `--authentication=tls`; Portcullis never accepts a certificate it cannot verify.
//! - `--tls-cert-refresh-period`: how often the files are checked for changes (`30s`, `5m`);
//!   `0s`, the default, checks every 5 s. New handshakes use the new files; open connections
//!   keep theirs; files that fail to load leave the previous certificate serving.
//!
//! Which listener serves HTTPS follows OPA's rule for `--addr` and `--diagnostic-addr`: an
//! address written `https://host:port` serves HTTPS (and needs the flags), `http://host:port`
//! serves plain HTTP, and an address without a scheme serves HTTPS when the certificate flags
//! are given and plain HTTP otherwise. So with the flags, every listener is HTTPS unless it is
//! explicitly written `http://`.
//!
//! Inconsistent flags are refused at start-up with the flag named: one of the certificate pair
//! without the other, `--tls-ca-cert-file` without the certificate, `--authentication=tls`
//! without the certificate or the CA.

use std::path::PathBuf;
use std::time::Duration;

use super::authz::Authentication;
use crate::invalid::Invalid;
use crate::tls::{ClientAuth, DEFAULT_RELOAD_INTERVAL_MS, TlsConfig};

/// The TLS flags of `portcullis run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    pub cert_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    pub ca_cert_file: Option<PathBuf>,
    /// `--tls-cert-refresh-period`; zero: the default interval.
    pub refresh_period: Duration,
}

impl TlsFlags {
    /// The `tls:` block the flags describe (`None` without the certificate flags), after the
    /// checks in the module docs; errors name the flag.
    pub fn config(&self, authentication: Authentication) -> Result<Option<TlsConfig>, String> {
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        for (flag, p) in [
            ("--tls-cert-file", &self.cert_file),
            ("--tls-private-key-file", &self.private_key_file),
            ("--tls-ca-cert-file", &self.ca_cert_file),
        ] {
            if empty(p) {
                return Err(format!("{flag} must not be empty"));
            }
        }
        let (cert_file, key_file) = match (&self.cert_file, &self.private_key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "--tls-cert-file and --tls-private-key-file must be given together".into(),
                );
            }
            (None, None) => {
                if authentication == Authentication::Tls {
                    return Err("--authentication=tls needs HTTPS on the HTTP API: give \
                                --tls-cert-file, --tls-private-key-file and --tls-ca-cert-file"
                        .into());
                }
                if self.ca_cert_file.is_some() {
                    return Err("--tls-ca-cert-file needs --tls-cert-file and \
                                --tls-private-key-file (client certificates exist only over \
                                HTTPS)"
                        .into());
                }
                return Ok(None);
            }
        };
        let client_auth = match (&self.ca_cert_file, authentication) {
            (None, Authentication::Tls) => {
                return Err(
                    "--authentication=tls needs --tls-ca-cert-file (the CAs client \
                            certificates must chain to)"
                        .into(),
                );
            }
            (None, _) => ClientAuth::None,
            (Some(_), Authentication::Tls) => ClientAuth::Require,
            (Some(_), _) => ClientAuth::Request,
        };
        let reload_interval_ms = if self.refresh_period.is_zero() {
            DEFAULT_RELOAD_INTERVAL_MS
        } else {
            u64::try_from(self.refresh_period.as_millis())
                .unwrap_or(u64::MAX)
                .max(1)
        };
        Ok(Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file: self.ca_cert_file.clone(),
            client_auth: Some(client_auth),
            reload_interval_ms,
        }))
    }
}

/// The flag a `tls:` key stands for, in an error from loading the files.
pub fn flag_error(e: Invalid) -> String {
    let flag = match e.key.as_str() {
        "cert_file" => "--tls-cert-file",
        "key_file" => "--tls-private-key-file",
        "client_ca_file" | "client_auth" => "--tls-ca-cert-file",
        _ => "--tls-cert-refresh-period",
    };
    format!("{flag}: {}", e.message)
}

/// Whether `addr` (given to `flag`) serves HTTPS, by OPA's rule (see the module docs), and the
/// address without its scheme. `https://` without the certificate flags is refused.
pub fn scheme<'a>(addr: &'a str, flag: &str, certificate: bool) -> Result<(bool, &'a str), String> {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix("https://") {
        if !certificate {
            return Err(format!(
                "{flag} {addr}: HTTPS needs --tls-cert-file and --tls-private-key-file"
            ));
        }
        return Ok((true, rest));
    }
    if let Some(rest) = addr.strip_prefix("http://") {
        return Ok((false, rest));
    }
    // Other forms (`tcp://`, `unix://`) are left to the address parser.
    Ok((certificate, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(cert: bool, key: bool, ca: bool) -> TlsFlags {
        TlsFlags {
            cert_file: cert.then(|| "c.pem".into()),
            private_key_file: key.then(|| "k.pem".into()),
            ca_cert_file: ca.then(|| "ca.pem".into()),
            refresh_period: Duration::ZERO,
        }
    }

    #[test]
    fn inconsistent_flags_are_refused_naming_the_flag() {
        use Authentication::*;
        assert_eq!(flags(false, false, false).config(Off), Ok(None));
        let err = |f: TlsFlags, a| f.config(a).unwrap_err();
        assert!(err(flags(true, false, false), Off).contains("--tls-private-key-file"));
        assert!(err(flags(false, true, false), Off).contains("--tls-cert-file"));
        assert!(err(flags(false, false, true), Off).contains("--tls-ca-cert-file needs"));
        assert!(err(flags(false, false, false), Tls).contains("--tls-cert-file"));
        assert!(err(flags(true, true, false), Tls).contains("--tls-ca-cert-file"));
        let empty = TlsFlags {
            cert_file: Some("".into()),
            ..flags(false, true, false)
        };
        assert!(err(empty, Off).contains("--tls-cert-file must not be empty"));
    }

    #[test]
    fn client_auth_follows_the_ca_and_the_authentication() {
        let auth = |f: TlsFlags, a| f.config(a).unwrap().unwrap().client_auth();
        assert_eq!(
            auth(flags(true, true, false), Authentication::Off),
            ClientAuth::None
        );
        assert_eq!(
            auth(flags(true, true, true), Authentication::Token),
            ClientAuth::Request
        );
        assert_eq!(
            auth(flags(true, true, true), Authentication::Tls),
            ClientAuth::Require
        );
        let mut f = flags(true, true, false);
        let c = f.config(Authentication::Off).unwrap().unwrap();
        assert_eq!(c.reload_interval_ms, DEFAULT_RELOAD_INTERVAL_MS);
        f.refresh_period = Duration::from_secs(30);
        let c = f.config(Authentication::Off).unwrap().unwrap();
        assert_eq!(c.reload_interval_ms, 30_000);
        f.refresh_period = Duration::from_nanos(1);
        let c = f.config(Authentication::Off).unwrap().unwrap();
        assert_eq!(c.reload_interval_ms, 1);
    }

    #[test]
    fn schemes_decide_https_as_opa_does() {
        assert_eq!(scheme(":8181", "--addr", true), Ok((true, ":8181")));
        assert_eq!(scheme(":8181", "--addr", false), Ok((false, ":8181")));
        assert_eq!(
            scheme("http://localhost:8282", "--addr", true),
            Ok((false, "localhost:8282"))
        );
        assert_eq!(
            scheme("https://0.0.0.0:8181", "--addr", true),
            Ok((true, "0.0.0.0:8181"))
        );
        assert!(
            scheme("https://0.0.0.0:8181", "--diagnostic-addr", false)
                .unwrap_err()
                .contains("--diagnostic-addr https://0.0.0.0:8181: HTTPS needs --tls-cert-file")
        );
    }
}
