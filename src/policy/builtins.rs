//! OPA builtins that regorus lacks, registered as engine extensions.

/// Registers every extension builtin on `engine`.
pub fn register(engine: &mut regorus::Engine) -> anyhow::Result<()> {
    let _ = engine;
    Ok(())
}
