//! Listener addresses in OPA's forms.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// A host name that needs resolving (e.g. `localhost:8181`).
    Host(String),
    /// `unix:///path/to.sock`
    Unix(PathBuf),
    /// `unix://@name` — a Linux abstract socket.
    Abstract(String),
}

impl ListenAddr {
    /// Parses OPA's address forms: `:9191`, `host:port`, `grpc://host:port`, `unix:///path`,
    /// `unix://@abstract`.
    pub fn parse(addr: &str) -> Result<Self, String> {
        let addr = addr.trim();
        if let Some(rest) = addr.strip_prefix("unix://") {
            if let Some(name) = rest.strip_prefix('@') {
                if name.is_empty() {
                    return Err("abstract socket name is empty".into());
                }
                return Ok(Self::Abstract(name.to_string()));
            }
            if rest.is_empty() {
                return Err("unix socket path is empty".into());
            }
            return Ok(Self::Unix(PathBuf::from(rest)));
        }
        let hostport = addr
            .strip_prefix("grpc://")
            .or_else(|| addr.strip_prefix("tcp://"))
            .or_else(|| addr.strip_prefix("http://"))
            .unwrap_or(addr);
        if let Some(port) = hostport.strip_prefix(':') {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid port in {addr:?}"))?;
            return Ok(Self::Tcp(SocketAddr::from(([0, 0, 0, 0], port))));
        }
        if let Ok(sa) = hostport.parse::<SocketAddr>() {
            return Ok(Self::Tcp(sa));
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Host(hostport.to_string()))
            }
            _ => Err(format!(
                "expected host:port, :port or unix:///path, got {addr:?}"
            )),
        }
    }
}
