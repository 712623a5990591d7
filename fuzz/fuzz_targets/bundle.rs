//! Bundle archives (gzipped tarballs, with small limits so that bombs are cut short) and
//! `.manifest` files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::bundle::archive::{self, Limits};
use portcullis::bundle::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_archive_bytes: 1 << 20,
        max_file_bytes: 1 << 16,
        max_total_bytes: 1 << 18,
        max_files: 64,
    };
    if let Ok(files) = archive::read_tar_gz(data, &limits) {
        assert!(files.len() <= limits.max_files);
        for f in &files {
            assert!(
                archive::safe_path(&f.path).is_ok(),
                "unsafe path {:?}",
                f.path
            );
            if f.path.ends_with(".manifest") {
                let _ = Manifest::parse(&f.bytes);
            }
        }
    }
    let _ = Manifest::parse(data);
});
