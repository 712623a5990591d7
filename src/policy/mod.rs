//! Policies: loading, the compiled snapshot, hot reload and the builtins regorus lacks.

pub mod builtins;
