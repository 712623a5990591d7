//! The one table of what each RPC needs, and how a request's target scope is formed.
//!
//! | RPC | access | target |
//! |---|---|---|
//! | `DecisionService/Decide`, `DecideBatch` | read | caller-level: namespace, agent, session, channel |
//! | `PolicyService/ListPolicies`, `GetPolicy` | read | namespace-level |
//! | `PolicyService/PutPolicy`, `DeletePolicy` | readwrite | namespace-level |
//! | `DataService/GetData` | read | namespace-level |
//! | `DataService/PutData`, `DeleteData` | readwrite | namespace-level |
//! | `DecisionLogService/StreamDecisions` | read | caller-level filter |
//! | `AuthService/MintAccessToken` | read (it only narrows) | the new token's scope |
//! | `AuthService/ListApiKeys` | read | the default namespace, namespace-level |
//! | `AuthService/CreateApiKey`, `RevokeApiKey` | readwrite | the default namespace, namespace-level |
//! | `AuthService/RevokeToken` | readwrite | the root scope: no namespace, agent, session or channel; revoking the caller's own token (`current`) needs only the token |
//! | `AuthService/ListRevocations` | read | the root scope |
//! | `AuthService/ExchangeApiKey`, `ExchangeOidcToken`, `GetJwks` | public: the credential is in the request, or the answer is public | — |
//! | `StatusService/GetStatus` | read | the caller's own scope |
//!
//! **Namespace-level** targets carry no agent, session or channel, so a token scoped to an
//! agent (or session, channel) is refused there even though the request has no such field.
//! **Caller-level** targets take each field from the request, and where the request leaves it
//! out, from the caller's token (so a scoped caller always acts as itself). An omitted
//! namespace is the token's `ns`, else the default namespace.

use super::caller::{Caller, GrantKind, Scope};
use crate::namespaces::DEFAULT_NAMESPACE;

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Public,
    /// A read grant (or a readwrite one).
    Read,
    /// A readwrite grant.
    ReadWrite,
}

macro_rules! rpcs {
    ($($variant:ident => $path:literal, $access:ident;)*) => {
        /// Every gateway RPC.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Rpc { $($variant),* }

        impl Rpc {
            /// Every RPC, in table order.
            pub const ALL: &'static [Rpc] = &[$(Rpc::$variant),*];

            /// The gRPC path, `/package.Service/Method`.
            pub fn path(self) -> &'static str {
                match self { $(Rpc::$variant => $path),* }
            }

            /// What the RPC needs.
            pub fn access(self) -> Access {
                match self { $(Rpc::$variant => Access::$access),* }
            }

            /// The RPC served at a gRPC path.
            pub fn from_path(path: &str) -> Option<Rpc> {
                match path { $($path => Some(Rpc::$variant),)* _ => None }
            }
        }
    };
}

rpcs! {
    Decide => "/portcullis.v1.DecisionService/Decide", Read;
    DecideBatch => "/portcullis.v1.DecisionService/DecideBatch", Read;
    ListPolicies => "/portcullis.v1.PolicyService/ListPolicies", Read;
    GetPolicy => "/portcullis.v1.PolicyService/GetPolicy", Read;
    PutPolicy => "/portcullis.v1.PolicyService/PutPolicy", ReadWrite;
    DeletePolicy => "/portcullis.v1.PolicyService/DeletePolicy", ReadWrite;
    GetData => "/portcullis.v1.DataService/GetData", Read;
    PutData => "/portcullis.v1.DataService/PutData", ReadWrite;
    DeleteData => "/portcullis.v1.DataService/DeleteData", ReadWrite;
    StreamDecisions => "/portcullis.v1.DecisionLogService/StreamDecisions", Read;
    MintAccessToken => "/portcullis.v1.AuthService/MintAccessToken", Read;
    ExchangeOidcToken => "/portcullis.v1.AuthService/ExchangeOidcToken", Public;
    CreateApiKey => "/portcullis.v1.AuthService/CreateApiKey", ReadWrite;
    ListApiKeys => "/portcullis.v1.AuthService/ListApiKeys", Read;
    RevokeApiKey => "/portcullis.v1.AuthService/RevokeApiKey", ReadWrite;
    ExchangeApiKey => "/portcullis.v1.AuthService/ExchangeApiKey", Public;
    GetJwks => "/portcullis.v1.AuthService/GetJwks", Public;
    RevokeToken => "/portcullis.v1.AuthService/RevokeToken", ReadWrite;
    ListRevocations => "/portcullis.v1.AuthService/ListRevocations", Read;
    GetStatus => "/portcullis.v1.StatusService/GetStatus", Read;
}

/// Why a caller may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rpc:?} is not permitted for this caller in this scope")]
pub struct Denied {
    pub rpc: Rpc,
}

impl Rpc {
    /// Checks `caller` may call this RPC on `target`.
    pub fn authorize(self, caller: &Caller, target: &Scope) -> Result<(), Denied> {
        let needed = match self.access() {
            Access::Public => return Ok(()),
            Access::Read => GrantKind::Read,
            Access::ReadWrite => GrantKind::Readwrite,
        };
        if caller.allows(needed, target) {
            Ok(())
        } else {
            Err(Denied { rpc: self })
        }
    }
}

fn given(field: &str) -> Option<String> {
    (!field.is_empty()).then(|| field.to_string())
}

/// The namespace a request acts on: the one it names, else the token's, else the default.
pub fn namespace_of(caller: &Caller, requested: &str) -> String {
    given(requested)
        .or_else(|| caller.scope.namespace.clone())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// A namespace-level target: no agent, session or channel.
pub fn namespace_target(namespace: &str) -> Scope {
    Scope {
        namespace: Some(namespace.to_string()),
        ..Default::default()
    }
}

/// A caller-level target: each field from the request, else from the caller's token.
/// `namespace` is `None` only when neither names one (StreamDecisions: every namespace).
pub fn caller_target(
    caller: &Caller,
    namespace: Option<String>,
    agent: &str,
    session: &str,
    channel: &str,
) -> Scope {
    Scope {
        namespace: namespace.or_else(|| caller.scope.namespace.clone()),
        agent: given(agent).or_else(|| caller.scope.agent.clone()),
        session: given(session).or_else(|| caller.scope.session.clone()),
        channel: given(channel).or_else(|| caller.scope.channel.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_descriptor_is_in_the_table_and_back() {
        use prost::Message as _;
        let fds =
            prost_types::FileDescriptorSet::decode(super::super::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut paths = Vec::new();
        for file in &fds.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        for path in &paths {
            assert!(Rpc::from_path(path).is_some(), "{path} is not in the table");
        }
        assert_eq!(paths.len(), Rpc::ALL.len());
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::from_path(rpc.path()), Some(*rpc));
        }
    }
}
