//! Certificates made at test time (rcgen) and gRPC clients over TLS (rustls), for the TLS and
//! mTLS listeners.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint, Uri};

/// A CA that signs server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// A date as (year, month, day).
pub type Ymd = (i32, u8, u8);

/// What goes into a leaf certificate.
pub struct LeafSpec<'a> {
    pub common_name: &'a str,
    pub dns: &'a [&'a str],
    pub uris: &'a [&'a str],
    /// Valid from/to, as (year, month, day); default: 2020-01-01 to 2099-01-01.
    pub validity: Option<(Ymd, Ymd)>,
    /// Subject attributes after the common name, in this order: `("O", "Acme")`, `("OU", …)`,
    /// `("C", …)`, `("L", …)`, `("ST", …)`.
    pub names: &'a [(&'a str, &'a str)],
}

impl Default for LeafSpec<'_> {
    fn default() -> Self {
        Self {
            common_name: "leaf",
            dns: &["localhost"],
            uris: &[],
            validity: None,
            names: &[],
        }
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn leaf(&self, spec: LeafSpec<'_>) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name);
        for (kind, value) in spec.names {
            let kind = match *kind {
                "O" => DnType::OrganizationName,
                "OU" => DnType::OrganizationalUnitName,
                "C" => DnType::CountryName,
                "L" => DnType::LocalityName,
                "ST" => DnType::StateOrProvinceName,
                other => panic!("no DnType for {other}"),
            };
            params.distinguished_name.push(kind, *value);
        }
        for d in spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().expect("dns name")));
        }
        for u in spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().expect("uri")));
        }
        let ((y1, m1, d1), (y2, m2, d2)) = spec.validity.unwrap_or(((2020, 1, 1), (2099, 1, 1)));
        params.not_before = rcgen::date_time_ymd(y1, m1, d1);
        params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `text` to `path` with mode 0600 (atomically: a new file renamed over the old one, as
/// a Kubernetes Secret volume or cert-manager replaces it).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Files of a server's TLS in `dir`: `server.crt`, `server.key`, `ca.crt`.
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl ServerFiles {
    pub fn write(dir: &Path, server: &Leaf, client_ca: &Ca) -> Self {
        let files = Self {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: dir.join("ca.crt"),
        };
        files.install(server);
        write_private(&files.client_ca, &client_ca.pem());
        files
    }

    /// Replaces the server certificate and key (key first, as both change).
    pub fn install(&self, server: &Leaf) {
        write_private(&self.cert, &server.cert_pem);
        write_private(&self.key, &server.key_pem);
    }

    /// The `tls:` block, YAML flow style.
    pub fn yaml(&self, client_auth: &str) -> String {
        let ca = if client_auth == "none" {
            String::new()
        } else {
            format!(", client_ca_file: {}", self.client_ca.display())
        };
        format!(
            "{{cert_file: {}, key_file: {}{ca}, client_auth: {client_auth}, reload_interval_ms: 50}}",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A rustls client config trusting `server_ca`, presenting `client` when given.
pub fn client_config(server_ca: &Ca, client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.pem().as_bytes()).expect("ca pem"))
        .expect("add root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A TLS handshake with `addr` (server name `localhost`): the server's leaf certificate.
pub async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The leaf certificate a new handshake with `addr` gets.
pub async fn server_leaf(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tls = handshake(addr, config).await.expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("server certificate")
}

/// A gRPC channel to `addr` over TLS (one connection, made now).
pub async fn channel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let config = config.clone();
            async move {
                let tls = handshake(addr, config).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

/// `config` offering HTTP/1.1 by ALPN instead of h2.
pub fn http1(config: Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTP/1.1 request over a new TLS connection to `addr` (Host `localhost`): (status, body),
/// or `Err` when the handshake or the request fails.
pub async fn https(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt as _, Empty};
    let tls = handshake(addr, http1(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
