//! `portcullis parse FILE`, like `opa parse --format json`: the parsed module as JSON.
//!
//! The tree is regorus' abstract syntax tree (`Module`: `package`, `imports`, `rules`, with
//! spans), serialised as regorus defines it; it is not OPA's AST, whose JSON shape differs, so
//! tools written against `opa parse` output do not read it.

use std::path::PathBuf;

/// Flags of `portcullis parse`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParseArgs {
    /// Output format (only `json`: regorus' tree; OPA's `pretty` tree is not printed).
    #[arg(short = 'f', long = "format", default_value = "json", value_parser = ["json"])]
    pub format: String,
    /// Parse as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// The Rego file.
    pub file: PathBuf,
}

/// The module's tree as indented JSON, or the parse error.
pub fn parse(args: &ParseArgs) -> Result<String, String> {
    let mut sources = crate::policy::Sources::read(std::slice::from_ref(&args.file), &[])
        .map_err(|e| e.to_string())?;
    let Some((name, text)) = sources.modules.pop() else {
        return Err(format!("{}: not a Rego file", args.file.display()));
    };
    if !sources.modules.is_empty() {
        return Err(format!("{}: parse takes one file", args.file.display()));
    }
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(args.v0_compatible);
    engine
        .add_policy(name, text)
        .map_err(|e| crate::policy::with_v0_hint(e.to_string(), args.v0_compatible))?;
    // The tree nests as deep as the policy; serialise it on a thread with room for that.
    std::thread::Builder::new()
        .stack_size(crate::policy::EVAL_STACK_BYTES)
        .spawn(move || engine.get_ast_as_json().map_err(|e| e.to_string()))
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "internal error while printing the tree".to_string())?
}

/// Runs `parse`; returns the exit code.
pub fn main(args: &ParseArgs) -> i32 {
    match parse(args) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
