//! `io.jwt.verify_*` and the key argument (PEM, certificate, JWK Set).

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use regorus::Value;
use serde_json::json;

use super::*;

// --- io.jwt.verify_* -------------------------------------------------------------------------

#[test]
fn verify_hs_family() {
    for (name, alg) in [("hs256", "HS256"), ("hs384", "HS384"), ("hs512", "HS512")] {
        let token = token_with(&header(alg), &claims(), alg, &hs_key());
        assert_eq!(verify(name, &token, SECRET), Value::from(true), "{alg}");
        assert_eq!(
            verify(name, &token, "wrong secret"),
            Value::from(false),
            "{alg}"
        );
        let tampered = tamper_payload(&token, &json!({"sub": "mallory"}));
        assert_eq!(verify(name, &tampered, SECRET), Value::from(false), "{alg}");
    }
    // Signed with HS256, checked as HS384 (same secret): the header alg must match.
    let token = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
    assert_eq!(verify("hs384", &token, SECRET), Value::from(false));
    // Header claims HS384 but the MAC is HS256's.
    let lying = token_with(&header("HS384"), &claims(), "HS256", &hs_key());
    assert_eq!(verify("hs384", &lying, SECRET), Value::from(false));
    assert_eq!(verify("hs256", &lying, SECRET), Value::from(false));
}

/// Positive with the PEM public key, the certificate and a JWKS; negative with the other key,
/// a tampered payload and a token of another algorithm of the same family.
fn check_public_family(family: &Family, name: &str, alg: &str, other_alg: &str) {
    let token = signed(family, alg, &claims());
    let jwks = json!({"keys": [jwk_a(family, alg)]}).to_string();
    for (what, key) in [
        ("public key", family.public_a),
        ("certificate", family.cert_a),
    ] {
        assert_eq!(verify(name, &token, key), Value::from(true), "{alg} {what}");
    }
    assert_eq!(verify(name, &token, &jwks), Value::from(true), "{alg} jwks");
    assert_eq!(
        verify(name, &token, family.public_b),
        Value::from(false),
        "{alg} wrong key"
    );
    let tampered = tamper_payload(&token, &json!({"sub": "mallory"}));
    assert_eq!(
        verify(name, &tampered, family.public_a),
        Value::from(false),
        "{alg} tampered"
    );
    // The right signature under a header naming another algorithm.
    let lying_alg = if alg == "RS256" { "RS384" } else { "RS256" };
    let lying = signed_with_header(family, alg, &header(lying_alg), &claims());
    assert_eq!(
        verify(name, &lying, family.public_a),
        Value::from(false),
        "{alg} as {lying_alg}"
    );
    if !other_alg.is_empty() {
        let other = signed(family, other_alg, &claims());
        assert_eq!(
            verify(name, &other, family.public_a),
            Value::from(false),
            "{other_alg} token checked as {alg}"
        );
    }
}

#[test]
fn verify_rs_family() {
    check_public_family(&RSA, "rs256", "RS256", "RS384");
    check_public_family(&RSA, "rs384", "RS384", "RS512");
    check_public_family(&RSA, "rs512", "RS512", "PS512");
}

#[test]
fn verify_ps_family() {
    check_public_family(&RSA, "ps256", "PS256", "RS256");
    check_public_family(&RSA, "ps384", "PS384", "PS256");
    check_public_family(&RSA, "ps512", "PS512", "PS384");
}

#[test]
fn verify_es_family() {
    check_public_family(&EC256, "es256", "ES256", "");
    check_public_family(&EC384, "es384", "ES384", "");
    check_public_family(&EC521, "es512", "ES512", "");
}

#[test]
fn verify_eddsa() {
    check_public_family(&ED25519, "eddsa", "EdDSA", "");
}

#[test]
fn verify_with_a_key_of_the_wrong_type_is_false() {
    let rs = signed(&RSA, "RS256", &claims());
    assert_eq!(verify("rs256", &rs, EC256.public_a), Value::from(false));
    assert_eq!(verify("rs256", &rs, ED25519.cert_a), Value::from(false));
    // ES256 header and signature, but a P-384 key.
    let es = signed(&EC256, "ES256", &claims());
    assert_eq!(verify("es256", &es, EC384.public_a), Value::from(false));
    assert_eq!(verify("es256", &es, RSA.public_a), Value::from(false));
    let ed = signed(&ED25519, "EdDSA", &claims());
    assert_eq!(verify("eddsa", &ed, EC256.public_a), Value::from(false));
    // Sanity: each verifies with its own key.
    assert_eq!(verify("rs256", &rs, RSA.public_a), Value::from(true));
    assert_eq!(verify("es256", &es, EC256.public_a), Value::from(true));
    assert_eq!(verify("eddsa", &ed, ED25519.public_a), Value::from(true));
}

#[test]
fn alg_none_never_verifies() {
    for token in [
        raw_token(&header("none"), &claims(), |_| Vec::new()),
        raw_token(&json!({"alg": "none"}), &claims(), |_| Vec::new()),
    ] {
        assert!(token.ends_with('.'));
        assert_eq!(verify("hs256", &token, SECRET), Value::from(false));
        assert_eq!(verify("rs256", &token, RSA.public_a), Value::from(false));
        assert_eq!(verify("es256", &token, EC256.public_a), Value::from(false));
        assert!(!decode_verify_is_valid(
            &token,
            json!({"secret": SECRET, "time": ns(NOW)})
        ));
        assert!(!decode_verify_is_valid(
            &token,
            json!({"cert": RSA.public_a, "time": ns(NOW)})
        ));
    }
}

#[test]
fn public_key_as_hmac_secret_is_refused() {
    // The classic algorithm-confusion forgery: HS256 keyed with the RSA public key's PEM text.
    let forged = token_with(
        &header("HS256"),
        &claims(),
        "HS256",
        &EncodingKey::from_secret(RSA.public_a.as_bytes()),
    );
    assert_eq!(verify("rs256", &forged, RSA.public_a), Value::from(false));
    assert!(!decode_verify_is_valid(
        &forged,
        json!({"cert": RSA.public_a, "time": ns(NOW)})
    ));
    // It is a well-formed HS256 token under that secret, so the refusal is the key type's.
    assert_eq!(verify("hs256", &forged, RSA.public_a), Value::from(true));
}

#[test]
fn verify_malformed_inputs_are_undefined() {
    let token = signed(&RSA, "RS256", &claims());
    let [h, p, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
    assert_eq!(verify("rs256", &token, RSA.public_a), Value::from(true));
    let cases = [
        (
            "four segments",
            format!("{token}.{s}"),
            RSA.public_a.to_string(),
        ),
        (
            "signature not base64url",
            format!("{h}.{p}.{s}*"),
            RSA.public_a.to_string(),
        ),
        (
            "header not base64url",
            format!("{h}*.{p}.{s}"),
            RSA.public_a.to_string(),
        ),
        (
            "alg not a string",
            format!("{}.{p}.{s}", b64(r#"{"alg":1}"#)),
            RSA.public_a.to_string(),
        ),
        (
            "key not PEM or JSON",
            token.clone(),
            "not a key".to_string(),
        ),
        ("private key", token.clone(), RSA.private_a.to_string()),
        (
            "two PEM blocks",
            token.clone(),
            format!("{}{}", RSA.public_a, RSA.public_b),
        ),
        (
            "corrupt PEM",
            token.clone(),
            RSA.public_a.replace("MII", "MIX"),
        ),
        ("key JSON not an object", token.clone(), "[]".to_string()),
        (
            "key over 1 MiB",
            token.clone(),
            format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(1 << 20)),
        ),
    ];
    for (what, token, key) in cases {
        assert_eq!(verify("rs256", &token, &key), Value::Undefined, "{what}");
    }
    assert_eq!(
        eval(
            "io.jwt.verify_rs256(1, input.key)",
            json!({"key": RSA.public_a})
        ),
        Value::Undefined
    );
    assert_eq!(
        eval(
            "io.jwt.verify_hs256(input.token, 1)",
            json!({"token": token})
        ),
        Value::Undefined
    );
    let hs = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
    assert_eq!(
        verify("hs256", &format!("{hs}.x"), SECRET),
        Value::Undefined
    );
}

#[test]
fn malformed_ec_point_in_a_pem_key_is_undefined() {
    // SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } around a point of the wrong length.
    let mut der = vec![
        0x30, 0x39, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    ];
    der.extend([
        0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ]);
    der.extend([0x03, 0x22, 0x00, 0x04]);
    der.extend([0x11; 32]);
    let key = pem::encode(&pem::Pem::new("PUBLIC KEY", der));
    let token = signed(&EC256, "ES256", &claims());
    assert_eq!(verify("es256", &token, &key), Value::Undefined);
    let error = eval_strict_err(
        "io.jwt.verify_es256(input.token, input.key)",
        json!({"token": token, "key": key}),
    );
    assert!(error.contains("malformed elliptic curve point"), "{error}");
}

#[test]
fn verify_strict_mode_reports_the_builtin_and_reason() {
    let error = eval_strict_err(
        "io.jwt.verify_rs256(input.token, input.key)",
        json!({"token": signed(&RSA, "RS256", &claims()), "key": "garbage"}),
    );
    assert!(error.contains("io.jwt.verify_rs256"), "{error}");
    assert!(error.contains("JWK"), "{error}");
}

// --- JWKS key argument -----------------------------------------------------------------------

fn with_kid(mut jwk: Json, kid: &str) -> Json {
    jwk["kid"] = json!(kid);
    jwk
}

fn rsa_b_jwk() -> Json {
    let key = EncodingKey::from_rsa_pem(fixture!("rsa-b.key.pem").as_bytes()).unwrap();
    serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap()
}

#[test]
fn jwks_key_selection_by_kid_and_alg() {
    let a = with_kid(jwk_a(&RSA, "RS256"), "a");
    let b = with_kid(rsa_b_jwk(), "b");
    let jwks = json!({"keys": [b, a]}).to_string();
    let with_kid_header = |kid: &str| {
        signed_with_header(
            &RSA,
            "RS256",
            &json!({"alg": "RS256", "kid": kid}),
            &claims(),
        )
    };
    // No kid: any key may verify.
    assert_eq!(
        verify("rs256", &signed(&RSA, "RS256", &claims()), &jwks),
        Value::from(true)
    );
    // kid "a" names the signing key.
    assert_eq!(
        verify("rs256", &with_kid_header("a"), &jwks),
        Value::from(true)
    );
    // kid "b" names another key: only that key is tried.
    assert_eq!(
        verify("rs256", &with_kid_header("b"), &jwks),
        Value::from(false)
    );
    // Unknown kid: every key is tried.
    assert_eq!(
        verify("rs256", &with_kid_header("zzz"), &jwks),
        Value::from(true)
    );
    // Without key "a" nothing verifies.
    let only_b = json!({"keys": [with_kid(rsa_b_jwk(), "b")]}).to_string();
    assert_eq!(
        verify("rs256", &with_kid_header("a"), &only_b),
        Value::from(false)
    );
}

#[test]
fn jwks_key_alg_must_match_token_alg() {
    let token = signed(&RSA, "RS256", &claims());
    let mut jwk = jwk_a(&RSA, "RS256");
    assert_eq!(
        verify("rs256", &token, &json!({"keys": [jwk]}).to_string()),
        Value::from(true)
    );
    jwk["alg"] = json!("RS384");
    assert_eq!(
        verify("rs256", &token, &json!({"keys": [jwk]}).to_string()),
        Value::from(false)
    );
    jwk.as_object_mut().unwrap().remove("alg");
    assert_eq!(
        verify("rs256", &token, &json!({"keys": [jwk]}).to_string()),
        Value::from(true)
    );
}

#[test]
fn jwks_single_key_and_unusable_keys() {
    let token = signed(&EC256, "ES256", &claims());
    let jwk = jwk_a(&EC256, "ES256");
    // A bare JWK, not a set.
    assert_eq!(verify("es256", &token, &jwk.to_string()), Value::from(true));
    // Keys Portcullis cannot use are skipped, not fatal.
    let set = json!({"keys": [
        {"kty": "OKP", "crv": "X25519", "x": b64([9u8; 32])},
        {"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
        {"kty": "weird"},
        jwk,
    ]});
    assert_eq!(verify("es256", &token, &set.to_string()), Value::from(true));
    // An empty set verifies nothing.
    assert_eq!(
        verify("es256", &token, r#"{"keys": []}"#),
        Value::from(false)
    );
    // Malformed key material in a supported key type is an error.
    let bad = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]});
    assert_eq!(verify("es256", &token, &bad.to_string()), Value::Undefined);
    let too_many = json!({"keys": vec![json!({"kty": "weird"}); 257]});
    assert_eq!(
        verify("es256", &token, &too_many.to_string()),
        Value::Undefined
    );
}

#[test]
fn jwks_oct_keys_in_cert_never_verify_hmac() {
    // A `cert` is public key text: a symmetric key published there verifies nothing, or
    // anyone could sign with it.
    let token = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
    let jwks = json!({"keys": [{"kty": "oct", "k": b64(SECRET)}]}).to_string();
    assert!(!decode_verify_is_valid(
        &token,
        json!({"cert": jwks, "time": ns(NOW), "aud": "orders"})
    ));
    // The secret constraint is how HMAC tokens verify.
    assert!(decode_verify_is_valid(
        &token,
        json!({"secret": SECRET, "time": ns(NOW), "aud": "orders"})
    ));
}
