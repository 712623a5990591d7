//! Bundles: built in memory (good and hostile), and a bundle server on 127.0.0.1:0 (axum) that
//! answers ETag conditional GETs and records what it was asked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis::bundle::archive::{BundleFile, write_tar_gz};
use portcullis::bundle::signing::{Signer, sign};
use tokio::sync::oneshot;

/// Files of a bundle: (path, text).
pub fn files(list: &[(&str, &str)]) -> Vec<BundleFile> {
    list.iter()
        .map(|(p, t)| BundleFile {
            path: (*p).to_string(),
            bytes: t.as_bytes().to_vec(),
        })
        .collect()
}

/// A bundle archive of `list`.
pub fn tar_gz(list: &[(&str, &str)]) -> Vec<u8> {
    write_tar_gz(&files(list)).expect("tar.gz")
}

/// A bundle archive of `list`, signed with the PEM private key at `key` (ES256, key id `k1`).
pub fn signed_tar_gz(list: &[(&str, &str)], key_pem: &str) -> Vec<u8> {
    let mut all = files(list);
    let sig = sign(
        &all,
        &Signer {
            algorithm: "ES256".into(),
            key: key_pem.to_string(),
            key_id: Some("k1".into()),
            scope: None,
        },
    )
    .expect("sign");
    all.insert(0, sig);
    write_tar_gz(&all).expect("tar.gz")
}

/// The authz bundle at a revision: `allow` is `allowed` for every request.
pub fn authz_bundle(revision: &str, allowed: bool) -> Vec<(String, String)> {
    vec![
        (
            ".manifest".into(),
            format!(r#"{{"revision": "{revision}", "roots": ["envoy/authz", "acl"]}}"#),
        ),
        (
            "envoy/authz/policy.rego".into(),
            format!(
                "package envoy.authz\n\ndefault allow := false\n\nallow if data.acl.open == {allowed}\n"
            ),
        ),
        ("acl/data.json".into(), r#"{"open": true}"#.into()),
    ]
}

/// Borrows an owned file list as `&[(&str, &str)]`.
pub fn as_refs(list: &[(String, String)]) -> Vec<(&str, &str)> {
    list.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// One kind of raw tar entry, for hostile archives the tar crate's builder would refuse.
pub enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
}

/// A gzipped tarball written entry by entry, with names copied verbatim into the header.
pub fn raw_tar_gz(entries: &[Raw<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match entry {
            Raw::File(n, d) => (n, tar::EntryType::Regular, d, None),
            Raw::Symlink(n, l) => (n, tar::EntryType::Symlink, &[], Some(l)),
            Raw::HardLink(n, l) => (n, tar::EntryType::Link, &[], Some(l)),
            Raw::Fifo(n) => (n, tar::EntryType::Fifo, &[], None),
        };
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name.fill(0);
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                old.linkname.fill(0);
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append(&h, data).expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

/// What the bundle server serves and what it saw.
#[derive(Default)]
pub struct ServerState {
    /// resource path -> (archive, etag)
    pub bundles: BTreeMap<String, (Vec<u8>, String)>,
    /// When set, requests without `authorization: <token>` get 401.
    pub required_auth: Option<String>,
    /// When set, every request gets this status.
    pub fail_with: Option<u16>,
    /// Behave like a plain file server: no ETag, `If-None-Match` ignored.
    pub no_etag: bool,
    /// (path, if-none-match, status answered)
    pub requests: Vec<(String, Option<String>, u16)>,
}

/// A bundle server on 127.0.0.1:0, stopped on drop.
pub struct BundleServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ServerState>>,
    stop: Option<oneshot::Sender<()>>,
}

impl BundleServer {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ServerState::default()));
        let router = axum::Router::new()
            .route("/{*path}", axum::routing::get(serve))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tx = super::server::serve_router(listener, router);
        Self {
            addr,
            state,
            stop: Some(tx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `archive` at `path` with a fresh ETag.
    pub fn put(&self, path: &str, archive: Vec<u8>, etag: &str) {
        let mut s = self.state.lock().unwrap();
        s.bundles.insert(
            path.trim_start_matches('/').to_string(),
            (archive, format!("\"{etag}\"")),
        );
    }

    pub fn set_fail(&self, status: Option<u16>) {
        self.state.lock().unwrap().fail_with = status;
    }

    pub fn requests(&self) -> Vec<(String, Option<String>, u16)> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn serve(
    State(state): State<Arc<Mutex<ServerState>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = if let Some(code) = s.fail_with {
        StatusCode::from_u16(code).unwrap().into_response()
    } else if s.required_auth.is_some() && auth != s.required_auth {
        StatusCode::UNAUTHORIZED.into_response()
    } else {
        match s.bundles.get(&path) {
            None => StatusCode::NOT_FOUND.into_response(),
            Some((body, _)) if s.no_etag => (StatusCode::OK, body.clone()).into_response(),
            Some((_, etag)) if inm.as_deref() == Some(etag.as_str()) => {
                (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response()
            }
            Some((body, etag)) => (
                StatusCode::OK,
                [
                    (header::ETAG, etag.clone()),
                    (header::CONTENT_TYPE, "application/gzip".to_string()),
                ],
                body.clone(),
            )
                .into_response(),
        }
    };
    s.requests.push((path, inm, response.status().as_u16()));
    response
}
