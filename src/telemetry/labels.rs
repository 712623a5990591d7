//! The closed sets Portcullis reports in answers, logs and metrics, each defined once with its
//! wire name (`as_str`) and every member (`ALL`), so that metric label sets are derived from
//! them and a new member cannot be forgotten anywhere.

use serde::Deserialize;

macro_rules! closed_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $wire:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vdoc])* $variant,)* }

        impl $name {
            /// Every member, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name on the wire, in logs and in metric labels.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)* }
            }

            /// The position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set! {
    /// Why a Check ended in an error (OPA-Envoy's reason codes, plus Portcullis' own).
    CheckReason {
        /// The request could not be turned into an input document (answered 400).
        RequestParseError => "request_parse_error",
        /// Evaluation failed, or the decision was undefined.
        EnvoyauthEvalError => "envoyauth_eval_error",
        /// The decision had the wrong type or shape.
        EnvoyauthResultError => "envoyauth_result_error",
        /// Evaluation ran past `eval-timeout-ms`.
        EvalTimeout => "eval_timeout",
        /// Evaluation ran past a resource limit (memory bound, a builtin's bound).
        EvalLimit => "eval_limit",
        /// The `namespace` context extension names no namespace (answered 403).
        UnknownNamespace => "unknown_namespace",
        InternalError => "internal_error",
    }
}

closed_set! {
    /// An authentication method (`authentication.policies[].methods`).
    Method {
        Jwt => "jwt",
        ApiKey => "api_key",
        Basic => "basic",
        /// OAuth 2.0 token introspection (RFC 7662).
        OAuth => "oauth",
        /// A webhook's HMAC signature over the request body.
        Hmac => "hmac",
        /// An external validator service.
        Custom => "custom",
        /// The client certificate Envoy forwards.
        X509 => "x509",
    }
}

closed_set! {
    /// Why authentication refused a request: the `error` of the 401/403/429 answer.
    Refusal {
        MissingToken => "missing_token",
        InvalidToken => "invalid_token",
        InvalidSignature => "invalid_signature",
        InvalidApiKey => "invalid_api_key",
        InsufficientScope => "insufficient_scope",
        InsufficientRole => "insufficient_role",
        /// The credential was not obtained with the authentication a policy requires
        /// (`require.mfa`, `amr`, `acr`).
        InsufficientAuthentication => "insufficient_authentication",
        /// Too many attempts waiting: Basic verifications, call-outs, a full replay cache.
        TooManyRequests => "too_many_requests",
    }
}

closed_set! {
    /// Why no internal token was minted for an allow that wanted one.
    MintFailure {
        /// The caller's credential expires before a token could be valid.
        CallerExpired => "caller_expired",
        /// No signing key is loaded.
        NoKey => "no_key",
        /// The decision asked for a token outside the namespace that decided.
        OutsideNamespace => "outside_namespace",
        /// Neither the decision, the config nor the request named an audience.
        NoAudience => "no_audience",
        /// Signing failed.
        SignError => "sign_error",
        /// The subject's tokens are revoked (a refusal by design, not a fault).
        Revoked => "revoked",
    }
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::InsufficientScope
            | Refusal::InsufficientRole
            | Refusal::InsufficientAuthentication => 403,
            Refusal::TooManyRequests => 429,
            _ => 401,
        }
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Method::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
                serde::de::Error::custom(format!(
                    "unknown method {name:?}, expected one of {}",
                    known.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_all() {
        for (i, r) in CheckReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, m) in Method::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
        for (i, m) in MintFailure::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }
}
