//! Free loopback ports, for servers that must be told their port (child processes, Envoy).

use std::net::TcpListener;

/// `N` distinct loopback ports that were free a moment ago (all bound at once, then released).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"));
    listeners.map(|l| l.local_addr().expect("local addr").port())
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}
