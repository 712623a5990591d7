//! Bundle roots across a snapshot: bundles may not overlap, and local files may not write under
//! any bundle's roots. (Each bundle's own data is checked against its roots when it is parsed,
//! and module packages when they compile.)

use super::{PolicyError, Sources};
use crate::bundle::{self, Bundle};

/// Bundles' roots must not overlap, and local files must not write under any of them.
pub(super) fn check(sources: &Sources, bundles: &[&Bundle]) -> Result<(), PolicyError> {
    for (i, a) in bundles.iter().enumerate() {
        for b in &bundles[i + 1..] {
            if a.name == b.name {
                return Err(PolicyError::bundle(&a.name, "two bundles have this name"));
            }
            for ra in a.roots() {
                for rb in b.roots() {
                    if bundle::manifest::roots_overlap(&ra, &rb) {
                        return Err(PolicyError::bundle(
                            &b.name,
                            format!("its root {rb:?} overlaps root {ra:?} of bundle {}", a.name),
                        ));
                    }
                }
            }
        }
    }
    for b in bundles {
        let roots = b.roots();
        let mut trail = Vec::new();
        if let Some(path) = leaf_under_roots(&sources.data, &roots, &mut trail) {
            return Err(PolicyError::bundle(
                &b.name,
                format!("local data sets data.{path}, which lies within the bundle's roots"),
            ));
        }
    }
    Ok(())
}

/// The first path in local data that lies within one of `roots`.
fn leaf_under_roots(
    data: &serde_json::Map<String, serde_json::Value>,
    roots: &[String],
    trail: &mut Vec<String>,
) -> Option<String> {
    for (k, v) in data {
        trail.push(k.clone());
        let path = trail.join("/");
        if bundle::manifest::roots_contain(roots, &path) {
            return Some(trail.join("."));
        }
        if let serde_json::Value::Object(inner) = v
            && let Some(found) = leaf_under_roots(inner, roots, trail)
        {
            return Some(found);
        }
        trail.pop();
    }
    None
}
