//! The builtins evaluated through real Rego on a regorus engine. Keys are the fixtures under
//! `tests/fixtures/jwt/` (throwaway test keys); tokens are signed here.
//!
//! This file holds the helpers, the `crypto.*` tests and the engine-level tests; `decode`
//! covers `io.jwt.decode` and `io.jwt.decode_verify`, `verify` the `io.jwt.verify_*` family.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use regorus::{Engine, Value};
use serde_json::{Value as Json, json};

use super::{ErrorMode, register, register_with};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt/",
            $name
        ))
    };
}

const SECRET: &str = "correct horse battery staple";
/// 2030-01-01T00:00:00Z
const EXP: i64 = 1_893_456_000;
/// 2020-01-01T00:00:00Z
const NBF: i64 = 1_577_836_800;
/// 2025-01-01T00:00:00Z, between NBF and EXP.
const NOW: i64 = 1_735_689_600;

fn ns(seconds: i64) -> i64 {
    seconds * 1_000_000_000
}

// --- evaluation helpers ----------------------------------------------------------------------

fn engine(mode: ErrorMode, rego: &str, input: Json) -> Engine {
    let mut engine = Engine::new();
    register_with(&mut engine, mode).unwrap();
    engine
        .add_policy("test.rego".to_string(), format!("package test\n\n{rego}\n"))
        .unwrap();
    engine.set_input(Value::from(input));
    engine
}

/// Evaluates `x := <expr>` with OPA's default error semantics.
fn eval(expr: &str, input: Json) -> Value {
    engine(ErrorMode::Undefined, &format!("x := {expr}"), input)
        .eval_rule("data.test.x".to_string())
        .unwrap()
}

/// Evaluates `x := <expr>` in strict mode, returning the error text.
fn eval_strict_err(expr: &str, input: Json) -> String {
    match engine(ErrorMode::Strict, &format!("x := {expr}"), input)
        .eval_rule("data.test.x".to_string())
    {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => format!("{e:#}"),
    }
}

fn to_json(value: &Value) -> Json {
    serde_json::from_str(&value.to_json_str().unwrap()).unwrap()
}

/// `io.jwt.verify_<name>(input.token, input.key)`.
fn verify(name: &str, token: &str, key: &str) -> Value {
    eval(
        &format!("io.jwt.verify_{name}(input.token, input.key)"),
        json!({"token": token, "key": key}),
    )
}

fn decode_verify(token: &str, constraints: Json) -> Json {
    to_json(&eval(
        "io.jwt.decode_verify(input.token, input.constraints)",
        json!({"token": token, "constraints": constraints}),
    ))
}

fn decode_verify_is_valid(token: &str, constraints: Json) -> bool {
    let result = decode_verify(token, constraints);
    match result[0] {
        Json::Bool(true) => true,
        Json::Bool(false) => {
            assert_eq!(result, json!([false, {}, {}]));
            false
        }
        _ => panic!("unexpected decode_verify result {result}"),
    }
}

// --- token helpers ---------------------------------------------------------------------------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims() -> Json {
    json!({"sub": "alice", "iss": "https://issuer.example", "aud": "orders", "exp": EXP, "nbf": NBF})
}

fn header(alg: &str) -> Json {
    json!({"alg": alg, "typ": "JWT"})
}

/// `header.payload` signed by `sign`.
fn raw_token(header: &Json, claims: &Json, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(signature))
}

fn jwt_alg(alg: &str) -> Algorithm {
    alg.parse().unwrap()
}

/// A token with `header`, signed by jsonwebtoken (every algorithm but ES512).
fn token_with(header: &Json, claims: &Json, alg: &str, key: &EncodingKey) -> String {
    raw_token(header, claims, |input| {
        let signature = jsonwebtoken::crypto::sign(input, key, jwt_alg(alg)).unwrap();
        URL_SAFE_NO_PAD.decode(signature).unwrap()
    })
}

fn es512_token(header: &Json, claims: &Json, key_pem: &str) -> String {
    use p521::ecdsa::signature::Signer as _;
    use p521::pkcs8::DecodePrivateKey as _;
    let secret = p521::SecretKey::from_pkcs8_pem(key_pem).unwrap();
    let signing = p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes()).unwrap();
    raw_token(header, claims, |input| {
        let signature: p521::ecdsa::Signature = signing.sign(input);
        signature.to_bytes().to_vec()
    })
}

fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(SECRET.as_bytes())
}

/// A family's fixtures: private key "a", public key "a", certificate "a", public key "b".
struct Family {
    private_a: &'static str,
    public_a: &'static str,
    cert_a: &'static str,
    public_b: &'static str,
}

const RSA: Family = Family {
    private_a: fixture!("rsa-a.key.pem"),
    public_a: fixture!("rsa-a.pub.pem"),
    cert_a: fixture!("rsa-a.crt.pem"),
    public_b: fixture!("rsa-b.pub.pem"),
};
const EC256: Family = Family {
    private_a: fixture!("ec256-a.key.pem"),
    public_a: fixture!("ec256-a.pub.pem"),
    cert_a: fixture!("ec256-a.crt.pem"),
    public_b: fixture!("ec256-b.pub.pem"),
};
const EC384: Family = Family {
    private_a: fixture!("ec384-a.key.pem"),
    public_a: fixture!("ec384-a.pub.pem"),
    cert_a: fixture!("ec384-a.crt.pem"),
    public_b: fixture!("ec384-b.pub.pem"),
};
const EC521: Family = Family {
    private_a: fixture!("ec521-a.key.pem"),
    public_a: fixture!("ec521-a.pub.pem"),
    cert_a: fixture!("ec521-a.crt.pem"),
    public_b: fixture!("ec521-b.pub.pem"),
};
const ED25519: Family = Family {
    private_a: fixture!("ed25519-a.key.pem"),
    public_a: fixture!("ed25519-a.pub.pem"),
    cert_a: fixture!("ed25519-a.crt.pem"),
    public_b: fixture!("ed25519-b.pub.pem"),
};

fn encoding_key(family: &Family) -> EncodingKey {
    let pem = family.private_a.as_bytes();
    match family.private_a.len() {
        // RSA keys are the long ones; Ed25519 keys the short ones.
        n if n > 1000 => EncodingKey::from_rsa_pem(pem).unwrap(),
        n if n < 200 => EncodingKey::from_ed_pem(pem).unwrap(),
        _ => EncodingKey::from_ec_pem(pem).unwrap(),
    }
}

/// A token signed with the family's key "a" using `alg`.
fn signed(family: &Family, alg: &str, claims: &Json) -> String {
    signed_with_header(family, alg, &header(alg), claims)
}

fn signed_with_header(family: &Family, alg: &str, header: &Json, claims: &Json) -> String {
    if alg == "ES512" {
        es512_token(header, claims, family.private_a)
    } else {
        token_with(header, claims, alg, &encoding_key(family))
    }
}

/// The public JWK of the family's key "a" (as jsonwebtoken exports it, with `alg`), or for P-521
/// built from the public key fixture.
fn jwk_a(family: &Family, alg: &str) -> Json {
    if alg == "ES512" {
        use p521::pkcs8::DecodePublicKey as _;
        let key = p521::PublicKey::from_public_key_pem(family.public_a).unwrap();
        let point = p521::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key, false);
        return json!({
            "kty": "EC", "crv": "P-521", "alg": "ES512",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        });
    }
    let jwk = Jwk::from_encoding_key(&encoding_key(family), jwt_alg(alg)).unwrap();
    serde_json::to_value(jwk).unwrap()
}

/// Replaces the payload segment, keeping header and signature.
fn tamper_payload(token: &str, claims: &Json) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2])
}

fn rs256_token(claims: &Json) -> String {
    signed(&RSA, "RS256", claims)
}

fn cert_constraints() -> Json {
    json!({"cert": RSA.cert_a, "time": ns(NOW), "aud": "orders"})
}

// --- crypto.* --------------------------------------------------------------------------------

#[test]
fn crypto_sha256_known_answers() {
    // FIPS 180-2 appendix B.1 and the empty string.
    assert_eq!(
        eval(r#"crypto.sha256("abc")"#, json!({})),
        Value::from("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(
        eval(r#"crypto.sha256("")"#, json!({})),
        Value::from("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

#[test]
fn crypto_hmac_sha256_rfc4231_vectors() {
    // RFC 4231 test cases 1 and 2.
    let case1 = eval(
        "crypto.hmac.sha256(input.data, input.key)",
        json!({"data": "Hi There", "key": "\u{0b}".repeat(20)}),
    );
    assert_eq!(
        case1,
        Value::from("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
    let case2 = eval(
        r#"crypto.hmac.sha256("what do ya want for nothing?", "Jefe")"#,
        json!({}),
    );
    assert_eq!(
        case2,
        Value::from("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

#[test]
fn crypto_non_string_operand_is_undefined_or_strict_error() {
    assert_eq!(eval("crypto.sha256(42)", json!({})), Value::Undefined);
    assert_eq!(
        eval(r#"crypto.hmac.sha256("x", 1)"#, json!({})),
        Value::Undefined
    );
    let error = eval_strict_err("crypto.sha256(42)", json!({}));
    assert!(error.contains("crypto.sha256"), "{error}");
    assert!(error.contains("operand 1 must be a string"), "{error}");
}

// --- policies and engines --------------------------------------------------------------------

const AUTHZ_POLICY: &str = r#"
default allow := false

allow if {
    [valid, _, payload] := io.jwt.decode_verify(input.token, {"cert": input.key, "aud": "orders"})
    valid
    payload.sub == "alice"
}

deny if {
    not io.jwt.verify_rs256(input.token, input.key)
}
"#;

fn authz(mode: ErrorMode, token: &str) -> anyhow::Result<(Value, Value)> {
    let mut engine = engine(
        mode,
        AUTHZ_POLICY,
        json!({"token": token, "key": RSA.public_a}),
    );
    Ok((
        engine.eval_rule("data.test.allow".to_string())?,
        engine.eval_rule("data.test.deny".to_string())?,
    ))
}

#[test]
fn policy_sees_undefined_for_a_malformed_token_like_opa() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let good = rs256_token(&json!({"sub": "alice", "aud": "orders", "exp": now + 600}));
    assert_eq!(
        authz(ErrorMode::Undefined, &good).unwrap(),
        (Value::from(true), Value::Undefined)
    );
    // Malformed: allow falls back to its default, and `not` of an undefined call holds.
    assert_eq!(
        authz(ErrorMode::Undefined, "not.a.token.at-all").unwrap(),
        (Value::from(false), Value::from(true))
    );
    // Bad signature: an answer, not an error.
    let bad = tamper_payload(
        &good,
        &json!({"sub": "alice", "aud": "orders", "exp": now + 900}),
    );
    assert_eq!(
        authz(ErrorMode::Undefined, &bad).unwrap(),
        (Value::from(false), Value::from(true))
    );
    // Strict mode: the malformed token aborts evaluation.
    let error = authz(ErrorMode::Strict, "not.a.token.at-all").unwrap_err();
    assert!(format!("{error:#}").contains("io.jwt."), "{error:#}");
}

#[test]
fn register_twice_fails_and_names_lists_every_builtin() {
    let mut engine = Engine::new();
    register(&mut engine).unwrap();
    let error = register(&mut engine).unwrap_err();
    assert!(format!("{error:#}").contains("io.jwt.decode"), "{error:#}");
    let names: Vec<&str> = super::names().collect();
    assert_eq!(names.len(), 17 + super::guarded::GUARDED.len());
    assert!(names.contains(&"numbers.range") && names.contains(&"sprintf"));
    for alg in ["hs", "rs", "ps", "es"] {
        for bits in [256, 384, 512] {
            assert!(names.contains(&format!("io.jwt.verify_{alg}{bits}").as_str()));
        }
    }
    for name in [
        "io.jwt.verify_eddsa",
        "io.jwt.decode",
        "io.jwt.decode_verify",
        "crypto.sha256",
        "crypto.hmac.sha256",
    ] {
        assert!(names.contains(&name), "{name}");
    }
}

#[test]
fn cloned_engines_evaluate_on_other_threads() {
    let token = signed(&EC256, "ES256", &claims());
    let engine = engine(
        ErrorMode::Undefined,
        "x := io.jwt.verify_es256(input.token, input.key)",
        json!({"token": token, "key": EC256.cert_a}),
    );
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut engine = engine.clone();
            std::thread::spawn(move || engine.eval_rule("data.test.x".to_string()).unwrap())
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), Value::from(true));
    }
}

mod decode;
mod verify;
