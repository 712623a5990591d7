//! Offline policy tools, like OPA's: `eval`, `test`, `check`, `exec`, `build`, `sign`,
//! `capabilities`, `inspect`, `deps` and `parse`.
//!
//! Both load policies and data exactly as the server does ([`crate::policy::Sources`], the same
//! extension builtins), so a policy that passes here behaves the same in the sidecar.

pub mod build;
pub mod capabilities;
pub mod check;
pub mod deps;
pub mod diagnostic;
pub mod eval;
pub mod exec;
pub mod inspect;
pub mod lint;
pub mod parse;
pub mod test;
