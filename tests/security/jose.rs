//! Findings 8, 9 and 10, all in one JOSE module now: high-S (malleable) ECDSA signatures
//! accepted by authentication, RSA keys of any size accepted, and `oct` (symmetric) keys from a
//! `cert` JWKS used by `io.jwt.decode_verify`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::{ISSUER, Key, claims, fixture, jwks, req};

fn jwt_config(algorithms: &str, extra: &str) -> String {
    format!(
        r#"authentication:
  policies:
    - name: api
      match: {{path_prefixes: [/v1/]}}
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [{algorithms}], jwks_file: "{{dir}}/jwks.json"{extra}}}
"#
    )
}

/// Allows an authenticated caller; on `/builtin/` asks `io.jwt.verify_es256` about the bearer
/// token against the PEM key in `data.pem`; on `/oct/` asks `io.jwt.decode_verify` with the
/// JWKS in `data.oct`.
const POLICY: &str = r#"package envoy.authz

default allow := false

allow if input.identity.subject

token := t if {
    [_, t] := split(input.attributes.request.http.headers.authorization, " ")
}

allow if {
    input.parsed_path[0] == "builtin"
    io.jwt.verify_es256(token, data.pem)
}

allow if {
    input.parsed_path[0] == "oct"
    [valid, _, _] := io.jwt.decode_verify(token, {"cert": data.oct, "aud": "orders"})
    valid
}
"#;

async fn sidecar(config: &str, keys: serde_json::Value, data: serde_json::Value) -> Sidecar {
    Sidecar::start(Setup {
        config,
        files: vec![
            ("jwks.json", keys.to_string()),
            ("policy.rego", POLICY.into()),
            ("data.json", data.to_string()),
        ],
        env: vec![],
    })
    .await
}

#[tokio::test]
async fn high_s_ecdsa_twins_are_refused_by_authentication() {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let config = jwt_config("ES256", "");
    let s = sidecar(
        &config,
        jwks(&[&key]),
        json!({"pem": fixture("ec256-a.pub.pem"), "oct": "{}"}),
    )
    .await;
    let token = key.sign(&claims("alice"));
    let twin = key.high_s_twin(&token);
    assert_ne!(token, twin);
    assert!(s.check(req("/v1/x").bearer(&token)).await.allowed());
    s.check(req("/v1/x").bearer(&twin))
        .await
        .assert_refused(401, "invalid_signature");
    // The Rego builtin answers as OPA does (Go's crypto/ecdsa accepts both).
    let a = s.check(req("/builtin/x").bearer(&twin)).await;
    assert!(a.allowed(), "{}", a.json);
    s.stop().await;

    // An issuer that does not normalize its signatures can be allowed explicitly.
    let config = jwt_config("ES256", ", accept_high_s: true");
    let s = sidecar(&config, jwks(&[&key]), json!({"pem": "", "oct": "{}"})).await;
    assert!(s.check(req("/v1/x").bearer(&twin)).await.allowed());
    s.stop().await;
}

/// A JWK and a PEM public key of a new RSA key of `bits`, and an RS256 token it signs.
fn rsa_key(bits: usize, claims: &serde_json::Value) -> (serde_json::Value, String, String) {
    use rsa::pkcs8::EncodePublicKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    use rsa::traits::PublicKeyParts as _;
    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).unwrap();
    let public = private.to_public_key();
    let jwk = json!({"kty": "RSA", "kid": "weak", "alg": "RS256",
                     "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                     "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())});
    let pem = public
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "weak"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private);
    let sig = signer.sign(msg.as_bytes()).to_bytes();
    (jwk, pem, format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[tokio::test]
async fn small_rsa_keys_are_refused_for_authentication_and_bundle_signatures() {
    let (jwk, pem, token) = rsa_key(512, &claims("alice"));
    let config = jwt_config("RS256", "");
    let s = sidecar(
        &config,
        json!({"keys": [jwk]}),
        json!({"pem": "", "oct": "{}"}),
    )
    .await;
    s.check(req("/v1/x").bearer(&token))
        .await
        .assert_refused(401, "invalid_signature");
    s.stop().await;

    // A bundle verification key under 2048 bits stops start-up, naming the key.
    let (_, pem1024, _) = rsa_key(1024, &claims("alice"));
    for weak in [pem, pem1024] {
        let config = format!(
            "keys:\n  signer:\n    algorithm: RS256\n    key: |\n{}",
            weak.lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        );
        let err = Sidecar::try_start(Setup {
            config: &config,
            ..Default::default()
        })
        .await
        .err()
        .expect("start-up must fail");
        assert!(
            err.contains("keys.signer.key") && err.contains("too small"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn symmetric_keys_in_a_cert_never_verify_in_decode_verify() {
    // Anyone who can read the published JWKS knows `k` and can sign HS256 tokens with it.
    let k = b"published-secret-published-secret";
    let oct = json!({"keys": [{"kty": "oct", "k": URL_SAFE_NO_PAD.encode(k)}]}).to_string();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "mallory", "aud": "orders"}),
        &jsonwebtoken::EncodingKey::from_secret(k),
    )
    .unwrap();
    let config = jwt_config("ES256", "");
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let s = sidecar(&config, jwks(&[&key]), json!({"pem": "", "oct": oct})).await;
    let a = s.check(req("/oct/x").bearer(&token)).await;
    assert_eq!(
        a.grpc, 7,
        "an HS256 token verified with a public oct key: {}",
        a.json
    );
    s.stop().await;
}
