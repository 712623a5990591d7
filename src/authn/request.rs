//! What authentication reads from a CheckRequest, and how auth policies match it.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use super::config::Match;

/// The parts of a request that authentication looks at. Header names are lowercase (Envoy
/// sends them so; others are lowercased here).
#[derive(Debug, Default, Clone)]
pub struct RequestView<'a> {
    pub host: &'a str,
    /// The path with its query string.
    pub path: &'a str,
    pub method: &'a str,
    pub headers: HashMap<String, &'a str>,
    pub source_principal: &'a str,
    pub destination_principal: &'a str,
    pub namespace: Option<&'a str>,
    /// The buffered body (`body`, else `raw_body`); empty when Envoy sent none.
    pub body: &'a [u8],
    /// `request.http.size`: the body length Envoy saw (0 when no body was buffered).
    pub size: i64,
    /// `attributes.source.certificate`: the downstream client's certificate, URL-encoded PEM.
    pub source_certificate: &'a str,
}

impl<'a> RequestView<'a> {
    pub fn from_check(req: &'a CheckRequest) -> Self {
        let attrs = req.attributes.as_ref();
        let http = attrs
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let mut headers = HashMap::new();
        if let Some(h) = http {
            for (k, v) in &h.headers {
                if k.bytes().any(|b| b.is_ascii_uppercase()) {
                    headers.insert(k.to_ascii_lowercase(), v.as_str());
                } else {
                    headers.insert(k.clone(), v.as_str());
                }
            }
        }
        Self {
            host: http.map_or("", |h| h.host.as_str()),
            path: http.map_or("", |h| h.path.as_str()),
            method: http.map_or("", |h| h.method.as_str()),
            headers,
            source_principal: attrs
                .and_then(|a| a.source.as_ref())
                .map_or("", |p| p.principal.as_str()),
            destination_principal: attrs
                .and_then(|a| a.destination.as_ref())
                .map_or("", |p| p.principal.as_str()),
            namespace: attrs
                .and_then(|a| a.context_extensions.get("namespace"))
                .map(String::as_str),
            body: http.map_or(&[][..], |h| {
                if h.body.is_empty() {
                    h.raw_body.as_slice()
                } else {
                    h.body.as_bytes()
                }
            }),
            size: http.map_or(0, |h| h.size),
            source_certificate: attrs
                .and_then(|a| a.source.as_ref())
                .map_or("", |p| p.certificate.as_str()),
        }
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).copied()
    }

    /// The query parameter `name` (first value, decoded as Go's `url.ParseQuery` does, like the
    /// input document's `parsed_query`); `None` when absent or when the query does not parse
    /// (the Check then fails as a request parse error anyway).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let pairs = crate::gourl::parse_query(crate::gourl::query_of(self.path).as_bytes()).ok()?;
        pairs
            .into_iter()
            .find(|(k, _)| **k == *name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
    }

    /// The cookie `name` from the `cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        let header = self.header("cookie")?;
        header.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
    }
}

/// The request path in the forms a policy's `path_prefixes` are compared with: as sent (before
/// `?`), and normalized: percent-decoded (repeatedly), `;parameters` dropped from every segment (as servlet
/// containers and Spring do), `.`/`..` segments resolved, repeated `/` merged, lowercased (the
/// normalized form is compared case-insensitively). A prefix matching either form matches, so
/// `/%61dmin/`, `/v1/../admin/`, `/ADMIN/panel` and `/admin;jsessionid=1/panel` all meet an
/// `/admin/` policy, whatever normalization the upstream does: matching more policies only
/// ever makes authentication stricter.
pub fn path_forms(path: &str) -> (String, String) {
    let raw = path.split(['?', '#']).next().unwrap_or("").to_string();
    // Decoded until it no longer changes (at most a few rounds), so that a double encoding
    // (`%2561`) that some upstream decodes twice meets the prefix too.
    let mut decoded = raw.clone();
    for _ in 0..4 {
        let next = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let decoded = decoded.replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut norm = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        norm.push('/');
        norm.push_str(s);
    }
    if norm.is_empty() || decoded.ends_with('/') {
        norm.push('/');
    }
    (raw, norm.to_lowercase())
}

impl Match {
    /// Whether a request with these attributes is matched.
    pub fn matches(&self, req: &RequestView<'_>, paths: &(String, String)) -> bool {
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| host_matches(h, req.host)) {
            return false;
        }
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(req.method))
        {
            return false;
        }
        if let Some(ns) = &self.namespace
            && req.namespace != Some(ns.as_str())
        {
            return false;
        }
        if !self.path_prefixes.is_empty()
            && !self.path_prefixes.iter().any(|p| {
                let lower = p.to_lowercase();
                paths.0.starts_with(p.as_str())
                    || paths.1.starts_with(lower.as_str())
                    // `/admin/` also covers `/admin`
                    || (p.ends_with('/')
                        && p.len() > 1
                        && (paths.1 == lower[..lower.len() - 1] || paths.0 == p[..p.len() - 1]))
            })
        {
            return false;
        }
        true
    }
}

/// `pattern` is a host name (case-insensitive; a port in the request is ignored unless the
/// pattern has one) or `*.suffix`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let host_no_port = match host.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (h.starts_with('[') || !h.contains(':')) =>
        {
            h
        }
        _ => host,
    };
    let candidate = if pattern.contains(':') {
        host
    } else {
        host_no_port
    };
    if let Some(suffix) = pattern.strip_prefix("*.") {
        let c = candidate.to_ascii_lowercase();
        let s = suffix.to_ascii_lowercase();
        return c.len() > s.len() + 1
            && c.ends_with(&s)
            && c.as_bytes()[c.len() - s.len() - 1] == b'.';
    }
    pattern.eq_ignore_ascii_case(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_paths() {
        assert_eq!(path_forms("/a/b?x=1").0, "/a/b");
        assert_eq!(path_forms("/%61dmin/x").1, "/admin/x");
        assert_eq!(path_forms("/v1/../admin/").1, "/admin/");
        assert_eq!(path_forms("//admin//x").1, "/admin/x");
        assert_eq!(path_forms("/").1, "/");
        assert_eq!(path_forms("").1, "/");
    }

    #[test]
    fn hosts() {
        assert!(host_matches("api.example.com", "API.example.com:8443"));
        assert!(!host_matches("api.example.com", "api.example.com.evil"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
        assert!(host_matches("h:8080", "h:8080"));
        assert!(!host_matches("h:8080", "h:9090"));
    }

    #[test]
    fn prefix_matches_encoded_and_dotted_paths() {
        let m = Match {
            path_prefixes: vec!["/admin/".into()],
            ..Default::default()
        };
        let view = RequestView::default();
        for p in [
            "/admin/x",
            "/%61dmin/x",
            "/v1/../admin/",
            "/admin",
            "//admin/x",
            "/ADMIN/panel",
            "/Admin",
            "/admin;jsessionid=1/panel",
            "/admin;/x",
            "/x/..;/admin/",
            "/admin%2Fpanel",
            "/%2561dmin/x",
        ] {
            assert!(m.matches(&view, &path_forms(p)), "{p}");
        }
        assert!(!m.matches(&view, &path_forms("/administrator")));
        assert!(!m.matches(&view, &path_forms("/v1/admin/")));
    }

    #[test]
    fn cookies_and_query() {
        let req = CheckRequest::default();
        let mut view = RequestView::from_check(&req);
        view.headers.insert("cookie".into(), "a=1; key=sk_x; b=2");
        assert_eq!(view.cookie("key"), Some("sk_x"));
        view.path = "/p?api_key=sk%5Fy&x=1";
        assert_eq!(view.query_param("api_key").as_deref(), Some("sk_y"));
        // The first value, decoded as the input document's parsed_query decodes it.
        view.path = "/p?api_key=a+b&api_key=c";
        assert_eq!(view.query_param("api_key").as_deref(), Some("a b"));
        // A query Go refuses (and the Check then fails to parse) yields no credential.
        for path in ["/p?api_key=sk_x;y=1", "/p?api_key=sk_x&z=%zz"] {
            view.path = path;
            assert_eq!(view.query_param("api_key"), None, "{path}");
        }
    }
}
