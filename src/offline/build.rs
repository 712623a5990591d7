//! `portcullis bundle build DIR -o bundle.tar.gz`: package a policy directory as an OPA bundle.
//!
//! The directory is read as a bundle directory (see [`super::archive::read_dir`]), checked the
//! way a sidecar will check it — the manifest, data within the roots, and every module compiling
//! together — and written as a deterministic gzipped tarball. `--revision` sets the manifest's
//! revision (creating `.manifest` when the directory has none); `--signing-key` adds
//! `.signatures.json` (OPA's format), replacing one already in the directory.

use std::path::PathBuf;

use clap::Args;

use crate::bundle::archive::{self, BundleFile, Limits};
use crate::bundle::signing::{self, Signer};
use crate::bundle::{Bundle, BundleError, Manifest};
use crate::policy::{PolicyOptions, Snapshot, Sources};

/// Arguments of `build` (and `bundle build`).
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Read DIR as a bundle directory (accepted for OPA's `build -b`: DIR is always read so).
    #[arg(short = 'b', long = "bundle")]
    pub bundle: bool,
    /// The directory holding `.manifest`, `*.rego` and `data.json` / `data.yaml` files.
    pub dir: PathBuf,
    /// Where to write the bundle.
    #[arg(short = 'o', long = "output", default_value = "bundle.tar.gz")]
    pub output: PathBuf,
    /// Set the manifest's revision (e.g. a git commit).
    #[arg(short = 'r', long = "revision")]
    pub revision: Option<String>,
    /// PEM private key (or, for HS256, a file holding the secret) to sign the bundle with.
    #[arg(long = "signing-key")]
    pub signing_key: Option<PathBuf>,
    #[command(flatten)]
    pub signature: SignatureFlags,
    /// Parse modules without a `rego_version` as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
}

/// What `build` and `sign` write into a signature, with OPA's flag names.
#[derive(Debug, Args)]
pub struct SignatureFlags {
    /// Signing algorithm.
    #[arg(long = "signing-alg", default_value = "RS256")]
    pub signing_alg: String,
    /// Key id written in the signature (the verifier's `keys.<id>`).
    #[arg(long = "key-id")]
    pub key_id: Option<String>,
    /// Scope written in the signature.
    #[arg(long = "scope")]
    pub scope: Option<String>,
}

impl SignatureFlags {
    /// The signer for `key` (PEM text, or an HMAC secret).
    fn signer(&self, key: String) -> Signer {
        Signer {
            algorithm: self.signing_alg.clone(),
            key,
            key_id: self.key_id.clone(),
            scope: self.scope.clone(),
        }
    }
}

/// Builds the archive bytes for `args` (also used by tests).
pub fn build(args: &BuildArgs) -> Result<(Vec<u8>, Bundle), String> {
    let limits = Limits::default();
    let mut files = archive::read_dir(&args.dir, &limits).map_err(|e| e.to_string())?;
    files.retain(|f| f.path != signing::SIGNATURES_FILE);
    if let Some(revision) = &args.revision {
        set_revision(&mut files, revision).map_err(|e| e.to_string())?;
    }
    let name = args.dir.display().to_string();
    let bundle = Bundle::from_files(&name, files.clone(), None).map_err(|e| e.to_string())?;
    let mut sources = Sources::default();
    sources.bundles.push(bundle.clone());
    Snapshot::build(
        &sources,
        &PolicyOptions {
            rego_v0: args.v0_compatible,
            ..Default::default()
        },
        1,
    )
    .map_err(|e| e.to_string())?;
    if let Some(key_path) = &args.signing_key {
        let key = std::fs::read_to_string(key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let signature =
            signing::sign(&files, &args.signature.signer(key)).map_err(|e| e.to_string())?;
        files.insert(0, signature);
    }
    let bytes = archive::write_tar_gz(&files).map_err(|e| e.to_string())?;
    Ok((bytes, bundle))
}

fn set_revision(files: &mut Vec<BundleFile>, revision: &str) -> Result<(), BundleError> {
    let mut manifest = match files.iter().find(|f| f.path == ".manifest") {
        Some(f) => Manifest::parse(&f.bytes)?,
        None => Manifest::default(),
    };
    manifest.revision = revision.to_string();
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BundleError::Manifest(format!(".manifest: {e}")))?;
    files.retain(|f| f.path != ".manifest");
    files.insert(
        0,
        BundleFile {
            path: ".manifest".into(),
            bytes,
        },
    );
    Ok(())
}

/// Runs `bundle build`; returns the exit code.
pub fn main(args: BuildArgs) -> i32 {
    match build(&args) {
        Ok((bytes, bundle)) => match std::fs::write(&args.output, &bytes) {
            Ok(()) => {
                println!(
                    "{}: revision {:?}, roots {:?}, {} modules, {} bytes{}",
                    args.output.display(),
                    bundle.revision(),
                    bundle.roots(),
                    bundle.modules.len(),
                    bytes.len(),
                    if args.signing_key.is_some() {
                        ", signed"
                    } else {
                        ""
                    }
                );
                0
            }
            Err(e) => {
                eprintln!("error: {}: {e}", args.output.display());
                1
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Arguments of `sign`, OPA's flags.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Required, as in OPA: the PATHs are bundle directories.
    #[arg(short = 'b', long = "bundle")]
    pub bundle: bool,
    /// PEM private key file (or, for HS256/384/512, a file holding the secret, or the secret).
    #[arg(long = "signing-key")]
    pub signing_key: Option<String>,
    #[command(flatten)]
    pub signature: SignatureFlags,
    /// Directory to write `.signatures.json` to.
    #[arg(short = 'o', long = "output-file-path", default_value = ".")]
    pub output_file_path: PathBuf,
    /// The bundle directory to sign.
    pub paths: Vec<PathBuf>,
}

/// Signs the bundle directory of `args`; the `.signatures.json` file it wrote.
pub fn sign(args: &SignArgs) -> Result<PathBuf, String> {
    let [dir] = args.paths.as_slice() else {
        return Err(if args.paths.is_empty() {
            "specify the bundle directory to sign".into()
        } else {
            "sign takes one bundle directory".into()
        });
    };
    if !args.bundle {
        return Err("enable bundle mode (ie. --bundle) to sign bundle files or directories".into());
    }
    let Some(key) = &args.signing_key else {
        return Err(
            "specify the secret (HMAC) or path of the PEM file containing the private \
                    key (RSA and ECDSA)"
                .into(),
        );
    };
    // As in OPA, the flag takes a file, or the key (or HMAC secret) itself.
    let key = match std::fs::read_to_string(key) {
        Ok(text) => text,
        Err(_) if !std::path::Path::new(key).exists() => key.clone(),
        Err(e) => return Err(format!("{key}: {e}")),
    };
    let limits = Limits::default();
    let mut files = archive::read_dir(dir, &limits).map_err(|e| e.to_string())?;
    files.retain(|f| f.path != signing::SIGNATURES_FILE);
    let signature =
        signing::sign(&files, &args.signature.signer(key)).map_err(|e| e.to_string())?;
    let out = args.output_file_path.join(signing::SIGNATURES_FILE);
    std::fs::write(&out, &signature.bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// Runs `sign`; returns the exit code.
pub fn sign_main(args: &SignArgs) -> i32 {
    match sign(args) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
