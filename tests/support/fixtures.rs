//! Test key files.

/// The directory of the JWT and bundle-signing keys (`<name>.key.pem`, `<name>.pub.pem`).
pub const JWT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

/// The text of `tests/fixtures/jwt/<name>`.
pub fn fixture(name: &str) -> String {
    let p = std::path::Path::new(JWT).join(name);
    std::fs::read_to_string(&p).expect("fixture")
}
