//! Reading and writing bundle files: a gzipped tarball or a directory, never trusted.
//!
//! Nothing from an archive is ever written to the filesystem: entries are read into memory under
//! limits that hold whatever the headers claim. What is refused, each with its own error:
//!
//! - an archive larger than [`Limits::max_archive_bytes`] (checked before decompressing),
//! - an entry larger than [`Limits::max_file_bytes`], or a total over
//!   [`Limits::max_total_bytes`] once decompressed (a zip bomb is stopped after the limit, by
//!   counting the bytes actually produced, not the sizes headers declare),
//! - more than [`Limits::max_files`] entries,
//! - symbolic and hard links, devices and FIFOs,
//! - a name that could resolve outside the bundle: a `..` component, two or more leading `/`, a
//!   backslash, a drive letter (`C:`), a NUL byte, or a name that is not UTF-8,
//! - the same file twice.
//!
//! A single leading `/` is allowed and dropped: `opa build` writes every entry that way
//! (`/data.json`, `/.manifest`), so refusing it would refuse every bundle OPA builds. `./` prefixes
//! (from `tar -C dir .`) are dropped too.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path};

use super::BundleError;

/// How much a bundle may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The compressed archive as downloaded or read.
    pub max_archive_bytes: u64,
    /// One file once decompressed.
    pub max_file_bytes: u64,
    /// All files together once decompressed.
    pub max_total_bytes: u64,
    /// Entries, directories included.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_archive_bytes: 64 * 1024 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
            max_total_bytes: 256 * 1024 * 1024,
            max_files: 10_000,
        }
    }
}

/// One regular file of a bundle, with its bundle-relative path (`a/b/data.json`, `.manifest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Reads a gzipped tarball held in memory.
pub fn read_tar_gz(bytes: &[u8], limits: &Limits) -> Result<Vec<BundleFile>, BundleError> {
    if bytes.len() as u64 > limits.max_archive_bytes {
        return Err(BundleError::TooLarge(format!(
            "the archive is {} bytes; the limit is {}",
            bytes.len(),
            limits.max_archive_bytes
        )));
    }
    let gz = flate2::read::GzDecoder::new(bytes);
    // Never let the tar reader see more than the total limit (plus tar's own headers): a
    // decompression bomb ends here whatever its entries claim.
    let budget = limits
        .max_total_bytes
        .saturating_add(limits.max_files as u64 * 1024)
        .saturating_add(1024 * 1024);
    let mut archive = tar::Archive::new(gz.take(budget));
    let entries = archive.entries().map_err(archive_error)?;
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let mut total: u64 = 0;
    for (count, entry) in entries.enumerate() {
        if count >= limits.max_files {
            return Err(BundleError::TooLarge(format!(
                "the archive has more than {} entries",
                limits.max_files
            )));
        }
        let mut entry = entry.map_err(archive_error)?;
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw_name)
            .map_err(|_| BundleError::UnsafePath("(not UTF-8)".into(), "the name is not UTF-8"))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            safe_path(&name)?;
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(BundleError::Link(name));
        }
        if kind.is_pax_global_extensions() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(BundleError::UnsafePath(
                name,
                "only regular files and directories may be in a bundle",
            ));
        }
        let path = safe_path(&name)?;
        let declared = entry.header().size().unwrap_or(u64::MAX);
        if declared > limits.max_file_bytes {
            return Err(BundleError::TooLarge(format!(
                "{path}: {declared} bytes; the limit for one file is {}",
                limits.max_file_bytes
            )));
        }
        let mut buf = Vec::new();
        (&mut entry)
            .take(limits.max_file_bytes + 1)
            .read_to_end(&mut buf)
            .map_err(archive_error)?;
        if buf.len() as u64 > limits.max_file_bytes {
            return Err(BundleError::TooLarge(format!(
                "{path}: more than {} bytes once decompressed",
                limits.max_file_bytes
            )));
        }
        total = total.saturating_add(buf.len() as u64);
        if total > limits.max_total_bytes {
            return Err(BundleError::TooLarge(format!(
                "more than {} bytes once decompressed",
                limits.max_total_bytes
            )));
        }
        if !seen.insert(path.clone()) {
            return Err(BundleError::Duplicate(path));
        }
        files.push(BundleFile { path, bytes: buf });
    }
    Ok(files)
}

fn archive_error(e: std::io::Error) -> BundleError {
    BundleError::Archive(e.to_string())
}

/// Normalises an entry name to a bundle-relative path, or refuses it.
pub fn safe_path(name: &str) -> Result<String, BundleError> {
    let refuse = |why| Err(BundleError::UnsafePath(name.to_string(), why));
    if name.contains('\0') {
        return refuse("the name has a NUL byte");
    }
    if name.contains('\\') {
        return refuse("the name has a backslash");
    }
    if name.starts_with("//") {
        return refuse("the name is an absolute path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return refuse("the name is an absolute path with a drive letter");
    }
    let relative = name.strip_prefix('/').unwrap_or(name);
    let mut parts = Vec::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(p) => parts.push(p),
                None => return refuse("the name is not UTF-8"),
            },
            Component::CurDir => {}
            Component::ParentDir => return refuse("the name has a '..' component"),
            Component::RootDir | Component::Prefix(_) => {
                return refuse("the name is an absolute path");
            }
        }
    }
    if parts.is_empty() {
        return Ok(String::new());
    }
    Ok(parts.join("/"))
}

/// Reads a bundle archive or directory from disk.
pub fn read_path(path: &Path, limits: &Limits) -> Result<Vec<BundleFile>, BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return read_dir(path, limits);
    }
    if meta.len() > limits.max_archive_bytes {
        return Err(BundleError::TooLarge(format!(
            "the archive is {} bytes; the limit is {}",
            meta.len(),
            limits.max_archive_bytes
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    read_tar_gz(&bytes, limits)
}

/// Reads a bundle directory: every regular file under `dir`, with the same limits and names as
/// an archive. Symbolic links are refused rather than followed. Hidden directories (`.git`) and
/// hidden files other than `.manifest` and `.signatures.json` are skipped.
pub fn read_dir(dir: &Path, limits: &Limits) -> Result<Vec<BundleFile>, BundleError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    walk(dir, dir, limits, &mut files, &mut total)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(
    root: &Path,
    dir: &Path,
    limits: &Limits,
    files: &mut Vec<BundleFile>,
    total: &mut u64,
) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let kind = entry.file_type().map_err(io(&path))?;
        if hidden
            && !(dir == root
                && kind.is_file()
                && matches!(
                    entry.file_name().to_str(),
                    Some(".manifest" | ".signatures.json")
                ))
        {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if kind.is_symlink() {
            return Err(BundleError::Link(rel));
        }
        if kind.is_dir() {
            walk(root, &path, limits, files, total)?;
            continue;
        }
        if !kind.is_file() {
            return Err(BundleError::UnsafePath(
                rel,
                "only regular files and directories may be in a bundle",
            ));
        }
        if files.len() >= limits.max_files {
            return Err(BundleError::TooLarge(format!(
                "the directory has more than {} files",
                limits.max_files
            )));
        }
        let rel = safe_path(&rel)?;
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.take(limits.max_file_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io(&path))?;
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(BundleError::TooLarge(format!(
                "{rel}: more than {} bytes",
                limits.max_file_bytes
            )));
        }
        *total = total.saturating_add(bytes.len() as u64);
        if *total > limits.max_total_bytes {
            return Err(BundleError::TooLarge(format!(
                "more than {} bytes in all",
                limits.max_total_bytes
            )));
        }
        files.push(BundleFile { path: rel, bytes });
    }
    Ok(())
}

/// Writes files as a gzipped tarball with relative entry names (which OPA reads as it reads its
/// own `/path` names), in the given order, with fixed modes and times so that the same files give
/// the same archive.
pub fn write_tar_gz(files: &[BundleFile]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.mode(tar::HeaderMode::Deterministic);
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(file.bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder.append_data(&mut header, &file.path, file.bytes.as_slice())?;
    }
    builder.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(safe_path("/data.json").unwrap(), "data.json");
        assert_eq!(safe_path("./a/b/x.rego").unwrap(), "a/b/x.rego");
        assert_eq!(safe_path(".manifest").unwrap(), ".manifest");
        for bad in [
            "../x.rego",
            "a/../../x",
            "a/..",
            "//etc/passwd",
            "C:/x.rego",
            "a\\b.rego",
            "x\0.rego",
        ] {
            assert!(safe_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trip() {
        let files = vec![
            BundleFile {
                path: ".manifest".into(),
                bytes: b"{}".to_vec(),
            },
            BundleFile {
                path: "a/data.json".into(),
                bytes: b"{\"x\":1}".to_vec(),
            },
        ];
        let tgz = write_tar_gz(&files).unwrap();
        assert_eq!(read_tar_gz(&tgz, &Limits::default()).unwrap(), files);
        assert_eq!(write_tar_gz(&files).unwrap(), tgz, "deterministic");
    }
}
