//! JOSE parsing: compact JWS under the strict rules (header, payload, signature against an
//! HMAC key), and public keys from PEM, JWK and JWK Set text under both rule sets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::jose::{Alg, Jws, KeyMaterial, KeyRules, Rules, keys};

const ALGS: [Alg; 6] = [
    Alg::HS256,
    Alg::RS256,
    Alg::ES256,
    Alg::ES384,
    Alg::PS256,
    Alg::EdDSA,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jws) = Jws::parse(text, &ALGS, 16 * 1024) {
        let key = KeyMaterial::Secret(b"0123456789abcdef0123456789abcdef".to_vec());
        let _ = jws.verify_any([&key], Rules::STRICT);
        let _ = jws.payload();
    }
    let _ = keys::parse(text, KeyRules::STRICT);
    let _ = keys::parse(text, KeyRules::OPA);
});
