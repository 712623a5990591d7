//! Offline policy tools, like OPA's: `portcullis eval` and `portcullis test`.
//!
//! Both load policies and data exactly as the server does ([`crate::policy::Sources`], the same
//! extension builtins), so a policy that passes here behaves the same in the sidecar.

pub mod build;
pub mod check;
pub mod diagnostic;
pub mod eval;
pub mod exec;
pub mod lint;
pub mod test;
