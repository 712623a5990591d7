//! Listener addresses in OPA's forms, and what counts as a loopback name.

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

/// `localhost`, `127.0.0.0/8` or `[::1]`, with or without a port: a `Host` (or `Origin`
/// authority) only the local machine sends.
pub fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        }
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            ListenAddr::parse(":9191").unwrap(),
            ListenAddr::Tcp("0.0.0.0:9191".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("grpc://127.0.0.1:1").unwrap(),
            ListenAddr::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("localhost:8181").unwrap(),
            ListenAddr::Host("localhost:8181".into())
        );
        assert_eq!(
            ListenAddr::parse("unix:///tmp/x.sock").unwrap(),
            ListenAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            ListenAddr::parse("unix://@authz").unwrap(),
            ListenAddr::Abstract("authz".into())
        );
        assert!(ListenAddr::parse("unix://@").is_err());
        assert!(ListenAddr::parse("host").is_err());
        assert!(ListenAddr::parse(":99999").is_err());
    }

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost",
            "localhost:9292",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:9292",
            "[::1]",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:9292",
            "10.0.0.1",
            "localhost.evil.com",
            "[::2]:1",
            "[::1",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }
}
