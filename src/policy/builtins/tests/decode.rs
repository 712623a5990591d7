//! `io.jwt.decode` and `io.jwt.decode_verify`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use regorus::Value;
use serde_json::json;

use super::*;

// --- io.jwt.decode ---------------------------------------------------------------------------

#[test]
fn decode_returns_header_payload_and_hex_signature() {
    let token = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
    let decoded = to_json(&eval("io.jwt.decode(input.token)", json!({"token": token})));
    let signature = URL_SAFE_NO_PAD
        .decode(token.rsplit('.').next().unwrap())
        .unwrap();
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(decoded, json!([header("HS256"), claims(), hex]));
}

#[test]
fn decode_destructures_in_rego() {
    let token = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
    let rego = "x := payload.sub if {\n  [_, payload, _] := io.jwt.decode(input.token)\n}";
    let value = engine(ErrorMode::Undefined, rego, json!({"token": token}))
        .eval_rule("data.test.x".to_string())
        .unwrap();
    assert_eq!(value, Value::from("alice"));
}

#[test]
fn decode_accepts_padded_segments() {
    let header = base64::engine::general_purpose::URL_SAFE.encode(r#"{"alg":"HS256" }"#);
    let payload = base64::engine::general_purpose::URL_SAFE.encode(r#"{"a":12}"#);
    assert!(header.ends_with('=') && payload.ends_with('='));
    let decoded = to_json(&eval(
        "io.jwt.decode(input.token)",
        json!({"token": format!("{header}.{payload}.AQID")}),
    ));
    assert_eq!(decoded, json!([{"alg": "HS256"}, {"a": 12}, "010203"]));
}

#[test]
fn decode_follows_nested_tokens() {
    let inner = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
    let outer_header = json!({"alg": "HS256", "cty": "JWT"});
    // Quoted, as some encoders wrap the inner token.
    let outer = raw_token(&outer_header, &json!(inner), |_| vec![1, 2]);
    assert!(
        URL_SAFE_NO_PAD
            .decode(outer.split('.').nth(1).unwrap())
            .unwrap()[0]
            == b'"'
    );
    let decoded = to_json(&eval("io.jwt.decode(input.token)", json!({"token": outer})));
    assert_eq!(decoded[1], claims());
    assert_eq!(decoded[0], header("HS256"));
}

#[test]
fn decode_nesting_is_bounded() {
    let wrap = |levels: usize| {
        let mut token = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
        for _ in 0..levels {
            let outer = json!({"alg": "HS256", "cty": "JWT"});
            token = format!("{}.{}.AQID", b64(outer.to_string()), b64(&token));
        }
        token
    };
    let decoded = to_json(&eval(
        "io.jwt.decode(input.token)",
        json!({"token": wrap(8)}),
    ));
    assert_eq!(decoded[1], claims());
    assert_eq!(
        eval("io.jwt.decode(input.token)", json!({"token": wrap(9)})),
        Value::Undefined
    );
}

#[test]
fn decode_malformed_tokens_are_undefined() {
    let good = token_with(&header("HS256"), &claims(), "HS256", &hs_key());
    let [h, p, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let array_payload = b64("[1,2]");
    let jwe_header = b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
    let huge = format!("{h}.{}.{s}", "A".repeat(70 * 1024));
    let cases = [
        ("no period", "abc".to_string()),
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{good}.{s}")),
        ("header not base64url", format!("{h}*.{p}.{s}")),
        ("header standard alphabet", format!("{h}+/.{p}.{s}")),
        ("payload not base64url", format!("{h}.{p}!.{s}")),
        ("signature not base64url", format!("{h}.{p}.{s}%")),
        ("base64 length 1 mod 4", format!("{h}.{p}.AAAAA")),
        ("payload not an object", format!("{h}.{array_payload}.{s}")),
        ("header not json", format!("{}.{p}.{s}", b64("not json"))),
        ("JWE", format!("{jwe_header}.{p}.{s}")),
        ("over 64 KiB", huge),
    ];
    // The good token decodes, so each case fails for its own reason.
    assert_ne!(
        eval("io.jwt.decode(input.token)", json!({"token": good})),
        Value::Undefined
    );
    for (what, token) in cases {
        assert_eq!(
            eval("io.jwt.decode(input.token)", json!({"token": token})),
            Value::Undefined,
            "{what}"
        );
    }
    assert_eq!(eval("io.jwt.decode(42)", json!({})), Value::Undefined);
}

#[test]
fn decode_strict_mode_reports_the_builtin_and_reason() {
    let error = eval_strict_err("io.jwt.decode(input.token)", json!({"token": "a.b.c.d"}));
    assert!(error.contains("io.jwt.decode"), "{error}");
    assert!(error.contains("3 sections, found 4"), "{error}");
}

// --- io.jwt.decode_verify --------------------------------------------------------------------

#[test]
fn decode_verify_valid_token_with_cert_and_with_secret() {
    let token = rs256_token(&claims());
    assert_eq!(
        decode_verify(&token, cert_constraints()),
        json!([true, header("RS256"), claims()])
    );
    let hs = token_with(&header("HS512"), &claims(), "HS512", &hs_key());
    assert_eq!(
        decode_verify(
            &hs,
            json!({"secret": SECRET, "time": ns(NOW), "aud": "orders"})
        ),
        json!([true, header("HS512"), claims()])
    );
    // Wrong key, wrong secret, key of the other kind.
    assert!(!decode_verify_is_valid(
        &token,
        json!({"cert": RSA.public_b, "time": ns(NOW), "aud": "orders"})
    ));
    assert!(!decode_verify_is_valid(
        &hs,
        json!({"secret": "nope", "time": ns(NOW), "aud": "orders"})
    ));
    assert!(!decode_verify_is_valid(
        &token,
        json!({"secret": SECRET, "time": ns(NOW), "aud": "orders"})
    ));
    assert!(!decode_verify_is_valid(&hs, cert_constraints()));
}

#[test]
fn decode_verify_every_family_with_cert() {
    for (family, alg) in [
        (&RSA, "PS384"),
        (&EC256, "ES256"),
        (&EC384, "ES384"),
        (&EC521, "ES512"),
        (&ED25519, "EdDSA"),
    ] {
        let token = signed(family, alg, &claims());
        let c = |cert: &str| json!({"cert": cert, "time": ns(NOW), "aud": "orders"});
        assert!(decode_verify_is_valid(&token, c(family.cert_a)), "{alg}");
        assert!(!decode_verify_is_valid(&token, c(family.public_b)), "{alg}");
        let tampered = tamper_payload(&token, &json!({"sub": "mallory", "aud": "orders"}));
        assert!(
            !decode_verify_is_valid(&tampered, c(family.cert_a)),
            "{alg}"
        );
    }
}

#[test]
fn decode_verify_alg_constraint() {
    let token = rs256_token(&claims());
    let mut c = cert_constraints();
    c["alg"] = json!("RS256");
    assert!(decode_verify_is_valid(&token, c.clone()));
    c["alg"] = json!("RS512");
    assert!(!decode_verify_is_valid(&token, c));
}

#[test]
fn decode_verify_iss() {
    let token = rs256_token(&claims());
    let mut c = cert_constraints();
    c["iss"] = json!("https://issuer.example");
    assert!(decode_verify_is_valid(&token, c.clone()));
    c["iss"] = json!("https://other.example");
    assert!(!decode_verify_is_valid(&token, c.clone()));
    let mut no_iss = claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    c["iss"] = json!("https://issuer.example");
    assert!(!decode_verify_is_valid(&rs256_token(&no_iss), c));
}

#[test]
fn decode_verify_aud() {
    let with_aud = |aud: Json| {
        let mut c = claims();
        c["aud"] = aud;
        rs256_token(&c)
    };
    let constraint = |aud: Option<&str>| {
        let mut c = json!({"cert": RSA.public_a, "time": ns(NOW)});
        if let Some(aud) = aud {
            c["aud"] = json!(aud);
        }
        c
    };
    assert!(decode_verify_is_valid(
        &with_aud(json!("orders")),
        constraint(Some("orders"))
    ));
    assert!(decode_verify_is_valid(
        &with_aud(json!(["x", "orders"])),
        constraint(Some("orders"))
    ));
    assert!(!decode_verify_is_valid(
        &with_aud(json!(["x", "y"])),
        constraint(Some("orders"))
    ));
    assert!(!decode_verify_is_valid(
        &with_aud(json!("billing")),
        constraint(Some("orders"))
    ));
    // The token names an audience, the policy none.
    assert!(!decode_verify_is_valid(
        &with_aud(json!("orders")),
        constraint(None)
    ));
    // The policy names an audience, the token none.
    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert!(!decode_verify_is_valid(
        &rs256_token(&no_aud),
        constraint(Some("orders"))
    ));
    assert!(decode_verify_is_valid(
        &rs256_token(&no_aud),
        constraint(None)
    ));
}

#[test]
fn decode_verify_exp_and_nbf_against_time() {
    let token = rs256_token(&claims());
    let at = |seconds: i64| json!({"cert": RSA.public_a, "aud": "orders", "time": ns(seconds)});
    assert!(decode_verify_is_valid(&token, at(EXP - 1)));
    assert!(
        !decode_verify_is_valid(&token, at(EXP)),
        "exp must be after time"
    );
    assert!(!decode_verify_is_valid(&token, at(EXP + 1)));
    assert!(
        decode_verify_is_valid(&token, at(NBF)),
        "nbf may equal time"
    );
    assert!(!decode_verify_is_valid(&token, at(NBF - 1)));
    // Sub-second precision: half a second before exp is still valid.
    let mut half = at(EXP);
    half["time"] = json!(ns(EXP) - 500_000_000);
    assert!(decode_verify_is_valid(&token, half));
}

#[test]
fn decode_verify_defaults_time_to_now() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let c = json!({"cert": RSA.public_a});
    let live = rs256_token(&json!({"exp": now + 600, "nbf": now - 600}));
    let expired = rs256_token(&json!({"exp": now - 600}));
    let early = rs256_token(&json!({"nbf": now + 600}));
    assert!(decode_verify_is_valid(&live, c.clone()));
    assert!(!decode_verify_is_valid(&expired, c.clone()));
    assert!(!decode_verify_is_valid(&early, c));
}

#[test]
fn decode_verify_header_checks() {
    let key = encoding_key(&RSA);
    let c = cert_constraints();
    // A critical parameter that is not understood.
    let crit = json!({"alg": "RS256", "crit": ["x-custom"], "x-custom": 1});
    assert!(!decode_verify_is_valid(
        &token_with(&crit, &claims(), "RS256", &key),
        c.clone()
    ));
    // Critical parameters that are understood, or absent, are fine.
    let crit_known = json!({"alg": "RS256", "crit": ["x-absent"], "x-other": 1});
    assert!(decode_verify_is_valid(
        &token_with(&crit_known, &claims(), "RS256", &key),
        c.clone()
    ));
    // No alg at all.
    let no_alg = json!({"typ": "JWT"});
    assert!(!decode_verify_is_valid(
        &token_with(&no_alg, &claims(), "RS256", &key),
        c.clone()
    ));
    // An empty crit list is malformed: undefined.
    let empty_crit = json!({"alg": "RS256", "crit": []});
    let value = eval(
        "io.jwt.decode_verify(input.token, input.c)",
        json!({"token": token_with(&empty_crit, &claims(), "RS256", &key), "c": c}),
    );
    assert_eq!(value, Value::Undefined);
}

#[test]
fn decode_verify_nested_token() {
    let inner = rs256_token(&claims());
    let outer_header = json!({"alg": "RS256", "cty": "JWT"});
    let key = encoding_key(&RSA);
    let outer = raw_token(&outer_header, &json!(null), |_| Vec::new());
    // Build the outer token around the inner token's text, signed with the same key.
    let input = format!("{}.{}", outer.split('.').next().unwrap(), b64(&inner));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap();
    let nested = format!("{input}.{signature}");
    assert_eq!(
        decode_verify(&nested, cert_constraints()),
        json!([true, header("RS256"), claims()])
    );
    // The inner token must verify too.
    let forged_inner = tamper_payload(&inner, &json!({"sub": "mallory", "aud": "orders"}));
    let input = format!(
        "{}.{}",
        outer.split('.').next().unwrap(),
        b64(&forged_inner)
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap();
    assert!(!decode_verify_is_valid(
        &format!("{input}.{signature}"),
        cert_constraints()
    ));
}

#[test]
fn decode_verify_bad_arguments_are_undefined() {
    let token = rs256_token(&claims());
    let mut exp_string = claims();
    exp_string["exp"] = json!("tomorrow");
    let cases = [
        (
            "unknown constraint",
            token.clone(),
            json!({"cert": RSA.public_a, "leeway": 5}),
        ),
        (
            "cert and secret",
            token.clone(),
            json!({"cert": RSA.public_a, "secret": SECRET}),
        ),
        ("no key", token.clone(), json!({"iss": "x"})),
        ("empty secret only", token.clone(), json!({"secret": ""})),
        (
            "negative time",
            token.clone(),
            json!({"cert": RSA.public_a, "time": -1}),
        ),
        (
            "time not a number",
            token.clone(),
            json!({"cert": RSA.public_a, "time": "now"}),
        ),
        (
            "iss not a string",
            token.clone(),
            json!({"cert": RSA.public_a, "iss": 1}),
        ),
        ("bad cert", token.clone(), json!({"cert": "nope"})),
        ("constraints not an object", token.clone(), json!("cert")),
        ("malformed token", "a.b".to_string(), cert_constraints()),
        (
            "exp not a number",
            rs256_token(&exp_string),
            cert_constraints(),
        ),
    ];
    assert!(decode_verify_is_valid(&token, cert_constraints()));
    for (what, token, constraints) in cases {
        let value = eval(
            "io.jwt.decode_verify(input.token, input.c)",
            json!({"token": token, "c": constraints}),
        );
        assert_eq!(value, Value::Undefined, "{what}");
    }
}
