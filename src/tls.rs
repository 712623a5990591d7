//! TLS and mTLS for the gRPC listeners: the `tls:` block every listener takes, a rustls server
//! config read from files and re-read when they change, the accept loop that does handshakes
//! off the accept path, and the verified client certificate's identity.
//!
//! ```yaml
//! tls:
//!   cert_file: /etc/portcullis/tls/tls.crt      # PEM chain, leaf first
//!   key_file: /etc/portcullis/tls/tls.key       # PEM private key, mode 0600 or 0400
//!   client_ca_file: /etc/portcullis/tls/ca.crt  # PEM CAs that client certificates must chain to
//!   client_auth: require                         # none | request | require
//!   reload_interval_ms: 5000                     # how often the files are checked for changes
//! ```
//!
//! - `client_auth` defaults to `require` when `client_ca_file` is set and to `none` otherwise;
//!   `request` or `require` without `client_ca_file` is refused, and so is `none` with one.
//!   `request` accepts clients without a certificate; a certificate that is presented must
//!   verify in both modes (an untrusted or expired one fails the handshake).
//! - TLS 1.2 and 1.3 only.
//! - **Rotation.** The files are checked every `reload_interval_ms` (their size, modification
//!   time and inode, so that a Kubernetes Secret volume's symlink swap counts). Changed files
//!   are read into a new server config that new handshakes use; connections already open keep
//!   theirs. Files that fail to load are logged and the previous config keeps serving.
//! - **Handshakes** run on their own tasks, at most [`MAX_PENDING_HANDSHAKES`] at once, each
//!   given [`HANDSHAKE_TIMEOUT`]: a client that connects and sends nothing never holds up
//!   another connection.
//! - A verified client certificate becomes a [`ClientIdentity`] (SPIFFE ID, URI and DNS SANs,
//!   subject, SHA-256 fingerprint) in each request's extensions, inside [`TlsPeer`].

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::{Stream, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use crate::invalid::Invalid;

/// How long a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one listener; further connections wait to be accepted.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// The largest PEM file read (certificate chain, key or CA bundle).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// The default interval between checks of the files.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 5_000;

/// Whether clients present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// Asked for; a client without one is accepted, a presented one must verify.
    Request,
    /// Required and verified.
    Require,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Request => "request",
            ClientAuth::Require => "require",
        }
    }
}

/// A listener's `tls:` block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Default: `require` with `client_ca_file`, else `none`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

fn default_reload_interval_ms() -> u64 {
    DEFAULT_RELOAD_INTERVAL_MS
}

impl TlsConfig {
    /// The effective client authentication.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
            .unwrap_or(if self.client_ca_file.is_some() {
                ClientAuth::Require
            } else {
                ClientAuth::None
            })
    }

    /// Checks the block without reading files; keys are relative to the block.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.cert_file.as_os_str().is_empty() {
            return Err(Invalid::new("cert_file", "must not be empty"));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(Invalid::new("key_file", "must not be empty"));
        }
        if self
            .client_ca_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(Invalid::new("client_ca_file", "must not be empty"));
        }
        match (self.client_auth(), &self.client_ca_file) {
            (ClientAuth::Request | ClientAuth::Require, None) => {
                return Err(Invalid::new(
                    "client_auth",
                    format!(
                        "{} needs client_ca_file (the CAs client certificates must chain to)",
                        self.client_auth().as_str()
                    ),
                ));
            }
            (ClientAuth::None, Some(_)) => {
                return Err(Invalid::new(
                    "client_ca_file",
                    "is set but client_auth is none: set client_auth to request or require, \
                     or remove client_ca_file",
                ));
            }
            _ => {}
        }
        if self.reload_interval_ms == 0 {
            return Err(Invalid::new("reload_interval_ms", "must be greater than 0"));
        }
        Ok(())
    }
}

/// What a file looked like when it was read: a change in any part means read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64, u64)>>);

impl Stamp {
    fn of(files: &[&Path]) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self(
            files
                .iter()
                .map(|f| {
                    std::fs::metadata(f).ok().map(|m| {
                        (
                            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            m.len(),
                            m.ino(),
                        )
                    })
                })
                .collect(),
        )
    }
}

/// A listener's TLS: the current server config, swapped when the files change.
#[derive(Debug)]
pub struct ServerTls {
    config: TlsConfig,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<rustls::ServerConfig>,
    stamp: Mutex<Stamp>,
}

impl ServerTls {
    /// Reads the files of `config`; `alpn` lists the protocols offered (`h2` for gRPC).
    /// `Err` names the key and the file.
    pub fn load(config: &TlsConfig, alpn: &[&[u8]]) -> Result<Arc<Self>, Invalid> {
        config.validate()?;
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamp = Stamp::of(&files(config));
        let server = build(config, &alpn)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            alpn,
            current: ArcSwap::from_pointee(server),
            stamp: Mutex::new(stamp),
        }))
    }

    /// The block this was loaded from.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// The server config new handshakes use.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the files when they changed since the last read: `Ok(true)` when a new config
    /// was installed, `Err` (the old config stays) when the new files do not load.
    pub fn reload_if_changed(&self) -> Result<bool, Invalid> {
        let now = Stamp::of(&files(&self.config));
        {
            let Ok(mut last) = self.stamp.lock() else {
                return Ok(false);
            };
            if *last == now {
                return Ok(false);
            }
            // Recorded even when loading fails, so that a broken file is reported once per
            // change rather than at every check.
            *last = now;
        }
        let server = build(&self.config, &self.alpn)?;
        self.current.store(Arc::new(server));
        Ok(true)
    }

    /// Checks the files every `reload_interval_ms` until `self` is dropped; `what` names the
    /// listener in logs.
    pub fn watch(self: &Arc<Self>, what: &'static str) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = Duration::from_millis(self.config.reload_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else {
                    return;
                };
                let tls2 = tls.clone();
                let result = tokio::task::spawn_blocking(move || tls2.reload_if_changed()).await;
                match result {
                    Ok(Ok(true)) => {
                        tracing::info!(listener = what, "TLS certificate files changed: reloaded")
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(
                        listener = what,
                        key = %e.key,
                        error = %e.message,
                        "TLS files changed but do not load; the previous certificate keeps serving"
                    ),
                    Err(_) => {}
                }
            }
        });
    }
}

fn files(config: &TlsConfig) -> Vec<&Path> {
    let mut v = vec![config.cert_file.as_path(), config.key_file.as_path()];
    if let Some(ca) = &config.client_ca_file {
        v.push(ca);
    }
    v
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, Invalid> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| Invalid::new(key, format!("{}: cannot read: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Invalid::new(key, format!("{}: cannot read: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(Invalid::new(
            key,
            format!("{}: larger than {MAX_PEM_BYTES} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    let bytes = read_pem(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Invalid::new(
                key,
                format!("{}: not a PEM certificate list: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Invalid::new(
            key,
            format!("{}: no CERTIFICATE block", path.display()),
        ));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config from the files.
fn build(config: &TlsConfig, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig, Invalid> {
    let chain = certificates("cert_file", &config.cert_file)?;
    crate::jose::keys::check_private_key_mode(&config.key_file)
        .map_err(|m| Invalid::new("key_file", m))?;
    let key_bytes = read_pem("key_file", &config.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        Invalid::new(
            "key_file",
            format!("{}: not a PEM private key: {e}", config.key_file.display()),
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Invalid::new("cert_file", e.to_string()))?;
    let builder = match (config.client_auth(), &config.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("client_ca_file", ca)? {
                roots.add(cert).map_err(|e| {
                    Invalid::new(
                        "client_ca_file",
                        format!("{}: not a usable CA certificate: {e}", ca.display()),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if mode == ClientAuth::Request {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| Invalid::new("client_ca_file", format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| {
        Invalid::new(
            "key_file",
            format!(
                "{} and {}: {e}",
                config.cert_file.display(),
                config.key_file.display()
            ),
        )
    })?;
    server.alpn_protocols = alpn.to_vec();
    Ok(server)
}

// ---------------------------------------------------------------------------------------------
// The client's identity

/// A verified client certificate, as policies and the gateway see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientIdentity {
    /// The first `spiffe://` URI SAN.
    pub spiffe_id: Option<String>,
    /// Every URI SAN.
    pub uris: Vec<String>,
    /// Every DNS SAN.
    pub dns_names: Vec<String>,
    /// The subject's distinguished name (RFC 4514).
    pub subject: String,
    /// The subject as OPA names a client certificate's subject for `--authentication=tls`
    /// (see [`opa_subject`]).
    pub opa_subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint_sha256: String,
}

impl ClientIdentity {
    /// The identity in a DER certificate (already verified by the handshake).
    pub fn from_der(der: &[u8]) -> Self {
        use x509_cert::der::Decode as _;
        use x509_cert::der::oid::AssociatedOid as _;
        use x509_cert::ext::pkix::SubjectAltName;
        use x509_cert::ext::pkix::name::GeneralName;
        let fingerprint_sha256 = crate::jose::b64::hex(&Sha256::digest(der));
        let mut id = Self {
            fingerprint_sha256,
            ..Self::default()
        };
        let Ok(cert) = x509_cert::Certificate::from_der(der) else {
            return id;
        };
        id.subject = cert.tbs_certificate.subject.to_string();
        id.opa_subject = opa_subject(&cert.tbs_certificate.subject);
        for ext in cert.tbs_certificate.extensions.iter().flatten() {
            if ext.extn_id != SubjectAltName::OID {
                continue;
            }
            let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
                continue;
            };
            for name in san.0 {
                match name {
                    GeneralName::DnsName(n) => id.dns_names.push(n.to_string()),
                    GeneralName::UniformResourceIdentifier(u) => id.uris.push(u.to_string()),
                    _ => {}
                }
            }
        }
        id.spiffe_id = id
            .uris
            .iter()
            .find(|u| {
                u.get(..9)
                    .is_some_and(|s| s.eq_ignore_ascii_case("spiffe://"))
            })
            .cloned();
        id
    }

    /// The one name that stands for the client: the SPIFFE ID, else the first DNS SAN, else
    /// the subject.
    pub fn name(&self) -> &str {
        self.spiffe_id
            .as_deref()
            .or(self.dns_names.first().map(String::as_str))
            .unwrap_or(&self.subject)
    }

    /// `{spiffe_id?, uris, dns_names, subject, fingerprint_sha256}`.
    pub fn to_json(&self) -> Json {
        let mut v = json!({
            "uris": self.uris,
            "dns_names": self.dns_names,
            "subject": self.subject,
            "fingerprint_sha256": self.fingerprint_sha256,
        });
        if let (Some(id), Json::Object(m)) = (&self.spiffe_id, &mut v) {
            m.insert("spiffe_id".into(), Json::from(id.as_str()));
        }
        v
    }
}

/// The subject string OPA gives the system.authz policy as `input.identity` under
/// `--authentication=tls`: the attributes Go's `pkix.Name` keeps, in its fixed order, written
/// most specific first as RFC 2253 does —
/// `SERIALNUMBER=…,CN=…,OU=…,O=…,POSTALCODE=…,STREET=…,L=…,ST=…,C=…`.
///
/// - Only those nine attribute types are kept (an `emailAddress` or `UID` is left out), and
///   only with a string value; the order in the certificate does not matter.
/// - Several values of one type (two `OU`s) are one multi-valued RDN: `OU=a+OU=b`, in
///   certificate order. `CN` and `SERIALNUMBER` keep their last value only.
/// - Values escape `,` `+` `"` `\` `<` `>` `;` anywhere, `#` first and a space first or last,
///   with a backslash; nothing else is escaped.
pub fn opa_subject(name: &x509_cert::name::Name) -> String {
    // In the order Go rebuilds the sequence; printed reversed.
    const ORDER: [(&str, &str); 9] = [
        ("2.5.4.6", "C"),
        ("2.5.4.8", "ST"),
        ("2.5.4.7", "L"),
        ("2.5.4.9", "STREET"),
        ("2.5.4.17", "POSTALCODE"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.3", "CN"),
        ("2.5.4.5", "SERIALNUMBER"),
    ];
    let mut values: Vec<Vec<String>> = vec![Vec::new(); ORDER.len()];
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_string();
            let Some(i) = ORDER.iter().position(|(o, _)| *o == oid) else {
                continue;
            };
            let Some(value) = directory_string(&atv.value) else {
                continue;
            };
            if ORDER[i].1 == "CN" || ORDER[i].1 == "SERIALNUMBER" {
                values[i] = vec![value];
            } else {
                values[i].push(value);
            }
        }
    }
    let mut rdns: Vec<String> = Vec::new();
    for (i, (_, short)) in ORDER.iter().enumerate() {
        if values[i].is_empty() {
            continue;
        }
        let rdn: Vec<String> = values[i]
            .iter()
            .map(|v| format!("{short}={}", escape_rdn_value(v)))
            .collect();
        rdns.push(rdn.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

/// The text of a string-typed attribute value; `None` for other types.
fn directory_string(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::{Tag, Tagged as _};
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::TeletexString => Some(String::from_utf8_lossy(bytes).into_owned()),
        Tag::BmpString => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        _ => None,
    }
}

/// A value escaped as in the subject string (see [`opa_subject`]).
fn escape_rdn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i == last,
            '#' => i == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Accepting

/// What a TLS connection tells each of its requests (tonic puts it in the request extensions).
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub remote_addr: Option<std::net::SocketAddr>,
    /// The verified client certificate, when the client presented one.
    pub client: Option<Arc<ClientIdentity>>,
}

/// The client's verified certificate identity from a request's extensions, when it came over
/// TLS with one.
pub fn client_of(extensions: &http::Extensions) -> Option<Arc<ClientIdentity>> {
    extensions.get::<TlsPeer>().and_then(|p| p.client.clone())
}

/// A stream socket whose peer address can be asked.
pub trait PeerAddr {
    fn peer(&self) -> Option<std::net::SocketAddr>;
}

impl PeerAddr for tokio::net::TcpStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer_addr().ok()
    }
}

impl PeerAddr for tokio::net::UnixStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// An accepted TLS connection.
pub struct TlsConn<IO> {
    inner: tokio_rustls::server::TlsStream<IO>,
    peer: TlsPeer,
}

impl<IO> Connected for TlsConn<IO> {
    type ConnectInfo = TlsPeer;
    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// TLS connections from the plain ones `incoming` yields: each handshake runs on its own task
/// (bounded in number and time); failed handshakes are logged at debug level and dropped.
/// The stream ends when `incoming` does; the accept task ends when the stream is dropped.
pub fn accept<S, IO, E>(
    tls: Arc<ServerTls>,
    what: &'static str,
    incoming: S,
) -> impl Stream<Item = Result<TlsConn<IO>, io::Error>> + Send + 'static
where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + PeerAddr + Unpin + Send + 'static,
    E: std::fmt::Display + Send,
{
    let (tx, rx) = mpsc::channel::<TlsConn<IO>>(64);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        let mut incoming = Box::pin(incoming);
        loop {
            let permit = tokio::select! {
                () = tx.closed() => return,
                p = pending.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let next = tokio::select! {
                () = tx.closed() => return,
                n = incoming.next() => n,
            };
            let io = match next {
                None => return,
                Some(Ok(io)) => io,
                Some(Err(e)) => {
                    tracing::debug!(listener = what, error = %e, "accept failed");
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.server_config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let remote_addr = io.peer();
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = what, peer = ?remote_addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = what, peer = ?remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let client = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(ClientIdentity::from_der(c.as_ref())));
                let _ = tx
                    .send(TlsConn {
                        inner: stream,
                        peer: TlsPeer {
                            remote_addr,
                            client,
                        },
                    })
                    .await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}

/// A TCP listener whose connections are TLS, for `axum::serve`: handshakes as in [`accept`];
/// each connection's [`TlsPeer`] is its `ConnectInfo` (serve with
/// `into_make_service_with_connect_info::<TlsPeer>()`).
pub struct TlsListener {
    local: std::net::SocketAddr,
    conns: std::pin::Pin<Box<dyn Stream<Item = io::Result<TlsConn<tokio::net::TcpStream>>> + Send>>,
}

impl TlsListener {
    /// Starts accepting on `listener`; `what` names it in logs.
    pub fn new(
        listener: tokio::net::TcpListener,
        tls: Arc<ServerTls>,
        what: &'static str,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        Ok(Self {
            local,
            conns: Box::pin(accept(tls, what, incoming)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn<tokio::net::TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.conns.next().await {
                Some(Ok(conn)) => {
                    let peer = conn.peer.clone();
                    return (conn, peer);
                }
                Some(Err(_)) => continue,
                // The accept task ended: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TlsPeer {
            remote_addr: Some(self.local),
            client: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ca: Option<&str>, auth: Option<ClientAuth>) -> TlsConfig {
        TlsConfig {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            client_ca_file: ca.map(PathBuf::from),
            client_auth: auth,
            reload_interval_ms: 10,
        }
    }

    #[test]
    fn client_auth_follows_the_ca_and_contradictions_are_refused() {
        assert_eq!(cfg(None, None).client_auth(), ClientAuth::None);
        assert_eq!(cfg(Some("ca"), None).client_auth(), ClientAuth::Require);
        assert!(
            cfg(Some("ca"), Some(ClientAuth::Request))
                .validate()
                .is_ok()
        );
        assert_eq!(
            cfg(None, Some(ClientAuth::Require))
                .validate()
                .unwrap_err()
                .key,
            "client_auth"
        );
        assert_eq!(
            cfg(Some("ca"), Some(ClientAuth::None))
                .validate()
                .unwrap_err()
                .key,
            "client_ca_file"
        );
    }

    #[test]
    fn the_opa_subject_is_written_in_gos_order_and_escaping() {
        use std::str::FromStr as _;
        let name = |s: &str| x509_cert::name::Name::from_str(s).expect("name");
        // Any certificate order gives Go's order; only the last CN is kept.
        assert_eq!(
            opa_subject(&name("CN=last,CN=first,C=DE,OU=ops,O=Acme")),
            "CN=last,OU=ops,O=Acme,C=DE"
        );
        assert_eq!(
            opa_subject(&name("O=Acme,OU=ops,CN=admin")),
            opa_subject(&name("CN=admin,O=Acme,OU=ops"))
        );
        // Two values of one type are one RDN; types Go does not name are left out.
        assert_eq!(
            opa_subject(&name("UID=jdoe,OU=b,OU=a,CN=x")),
            "CN=x,OU=a+OU=b"
        );
        // Escapes: the specials anywhere, # first, spaces at either end.
        assert_eq!(
            escape_rdn_value("a,b+c\"d\\e<f>g;h"),
            "a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h"
        );
        assert_eq!(escape_rdn_value("#x#"), "\\#x#");
        assert_eq!(escape_rdn_value(" a b "), "\\ a b\\ ");
        assert_eq!(escape_rdn_value(""), "");
    }

    #[test]
    fn garbage_certificates_give_an_empty_identity_not_a_panic() {
        let id = ClientIdentity::from_der(b"\x30\x03\x02\x01\x01");
        assert_eq!(id.subject, "");
        assert!(id.dns_names.is_empty());
        assert_eq!(id.fingerprint_sha256.len(), 64);
    }
}
