//! `multipart/form-data` bodies, read the way OPA-Envoy reads them with Go's
//! `mime.ParseMediaType` and `mime/multipart.Reader.NextPart`:
//!
//! - line endings may be CRLF or, when the first boundary line ends in a bare LF, LF;
//! - a preamble before the first boundary is skipped, the epilogue after the last is ignored;
//! - a part whose headers are cut off by the end of the body ends the form quietly (Go's
//!   reader reports plain `io.EOF` there, which the plugin treats as the normal end);
//! - a part without a closing boundary is an error (`unexpected EOF`);
//! - `Content-Transfer-Encoding: quoted-printable` parts are decoded;
//! - parts without a `form-data` disposition `name` are skipped; parts whose `Content-Type`
//!   contains `application/json` are parsed as JSON, the others are strings.
//!
//! The result is `{name: [values...]}`; without a `boundary` parameter the body is `null`.

use std::collections::{BTreeMap, HashMap};

use regorus::Value;

use super::goutil::{lossy, quote, str_value};
use super::{InputError, json};

/// Go's `bufio` default buffer size: a line read with `ReadSlice` may not be longer.
const BUFIO_SIZE: usize = 4096;

/// Parses a multipart body; `Ok(None)` when the content type has no boundary.
pub(super) fn parse(content_type: &str, payload: &[u8]) -> Result<Option<Value>, InputError> {
    let (_, params) = parse_media_type(content_type.as_bytes()).map_err(InputError::new)?;
    let Some(boundary) = params.get("boundary") else {
        return Ok(None);
    };

    let mut reader = Reader::new(payload, boundary);
    let mut values: BTreeMap<Value, Vec<Value>> = BTreeMap::new();
    while let Some(part) = reader.next_part()? {
        let name = part.form_name();
        if name.is_empty() {
            // Skipped, but its content is still consumed up to the next boundary.
            scan_body(&mut reader);
            continue;
        }
        let content = part.read(&mut reader)?;
        let value = if part
            .header("Content-Type")
            .is_some_and(|ct| contains(ct, b"application/json"))
        {
            json::parse(&content)?
        } else {
            str_value(&content)
        };
        values.entry(str_value(&name)).or_default().push(value);
    }
    Ok(Some(Value::from(
        values
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect::<BTreeMap<_, _>>(),
    )))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The reader.

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// `\r\n` or, once the first boundary line ends in a bare `\n`, `\n`.
    nl: &'static [u8],
    /// `--boundary`
    dash_boundary: Vec<u8>,
    parts_read: usize,
}

struct Part {
    headers: Vec<(String, Vec<u8>)>,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], boundary: &[u8]) -> Self {
        let mut dash_boundary = b"--".to_vec();
        dash_boundary.extend_from_slice(boundary);
        Self {
            data,
            pos: 0,
            nl: b"\r\n",
            dash_boundary,
            parts_read: 0,
        }
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// `bufio.Reader.ReadSlice('\n')` over the remaining bytes: the line with its `\n`;
    /// `Err(true)`-style end reporting is folded into the returned flag (`true` at EOF).
    fn read_slice(&mut self) -> Result<(&'a [u8], bool), InputError> {
        let rest = self.rest();
        let window = rest.get(..BUFIO_SIZE.min(rest.len())).unwrap_or_default();
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            self.pos += i + 1;
            return Ok((&rest[..=i], false));
        }
        if rest.len() >= BUFIO_SIZE {
            return Err(InputError::new("multipart: NextPart: bufio: buffer full"));
        }
        self.pos = self.data.len();
        Ok((rest, true))
    }

    fn is_final_boundary(&self, line: &[u8]) -> bool {
        let Some(rest) = line.strip_prefix(self.dash_boundary.as_slice()) else {
            return false;
        };
        let Some(rest) = rest.strip_prefix(b"--") else {
            return false;
        };
        let rest = skip_lwsp(rest);
        rest.is_empty() || rest == self.nl
    }

    fn is_boundary_delimiter_line(&mut self, line: &[u8]) -> bool {
        let Some(rest) = line.strip_prefix(self.dash_boundary.as_slice()) else {
            return false;
        };
        let rest = skip_lwsp(rest);
        // The first boundary line decides between CRLF and bare-LF line endings.
        if self.parts_read == 0 && rest == b"\n" {
            self.nl = b"\n";
        }
        rest == self.nl
    }

    /// `Reader.NextPart`: the next part's headers, `None` at the end of the form.
    fn next_part(&mut self) -> Result<Option<Part>, InputError> {
        if self.dash_boundary == b"--" {
            return Err(InputError::new("multipart: boundary is empty"));
        }
        let mut expect_new_part = false;
        loop {
            let (line, eof) = self.read_slice()?;
            if eof && self.is_final_boundary(line) {
                return Ok(None);
            }
            if eof {
                return Err(InputError::new("multipart: NextPart: EOF"));
            }
            if self.is_boundary_delimiter_line(line) {
                self.parts_read += 1;
                return self.read_headers();
            }
            if self.is_final_boundary(line) {
                return Ok(None);
            }
            if expect_new_part {
                return Err(InputError::new(format!(
                    "multipart: expecting a new Part; got line {}",
                    quote(line)
                )));
            }
            if self.parts_read == 0 {
                continue;
            }
            if line == self.nl {
                expect_new_part = true;
                continue;
            }
            return Err(InputError::new(format!(
                "multipart: unexpected line in Next(): {}",
                quote(line)
            )));
        }
    }

    /// `textproto.Reader.ReadLine`: a line without its `\n` / `\r\n`; `None` at EOF.
    fn read_line(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                let line = &rest[..i];
                Some(line.strip_suffix(b"\r").unwrap_or(line))
            }
            None => {
                self.pos = self.data.len();
                Some(rest)
            }
        }
    }

    /// The part's MIME header (`textproto.ReadMIMEHeader`). Reaching the end of the body
    /// before the blank line ends the form without an error, as in Go.
    fn read_headers(&mut self) -> Result<Option<Part>, InputError> {
        let mut headers = Vec::new();
        if let Some(b' ' | b'\t') = self.rest().first() {
            return match self.read_line() {
                None => Ok(None),
                Some(line) if line.len() > 80 => {
                    Err(InputError::new("multipart: message too large"))
                }
                Some(line) => Err(InputError::new(format!(
                    "malformed MIME header initial line: {}",
                    lossy(line)
                ))),
            };
        }
        loop {
            let Some(first) = self.read_line() else {
                return Ok(None);
            };
            if first.is_empty() {
                return Ok(Some(Part { headers }));
            }
            if !first.contains(&b':') {
                return Err(InputError::new(format!(
                    "malformed MIME header: missing colon: {}",
                    quote(first)
                )));
            }
            let mut kv = trim(first).to_vec();
            // Continuation lines start with a space or tab.
            loop {
                let spaces = self
                    .rest()
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                if spaces == 0 {
                    break;
                }
                self.pos += spaces;
                kv.push(b' ');
                match self.read_line() {
                    Some(line) => kv.extend_from_slice(trim(line)),
                    None => break,
                }
            }
            let colon = kv.iter().position(|&b| b == b':').unwrap_or(kv.len());
            let (k, v) = (&kv[..colon], kv.get(colon + 1..).unwrap_or_default());
            let malformed =
                || InputError::new(format!("malformed MIME header line: {}", lossy(&kv)));
            let key = canonical_header_key(k).ok_or_else(malformed)?;
            if !v.iter().all(|&c| valid_header_value_byte(c)) {
                return Err(malformed());
            }
            let value = skip_lwsp(v).to_vec();
            headers.push((key, value));
        }
    }
}

impl Part {
    /// `Header.Get`: the first value under the canonical key.
    fn header(&self, canonical: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == canonical)
            .map(|(_, v)| v.as_slice())
    }

    /// `Part.FormName`: the `name` parameter of a `form-data` disposition, else empty.
    fn form_name(&self) -> Vec<u8> {
        let disposition = self.header("Content-Disposition").unwrap_or_default();
        match parse_media_type(disposition) {
            Ok((kind, mut params)) if kind == "form-data" => {
                params.remove("name").unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// The part's content up to the next boundary (`io.ReadAll(part)`), decoded when it is
    /// quoted-printable.
    fn read(&self, reader: &mut Reader<'_>) -> Result<Vec<u8>, InputError> {
        let (body, complete) = scan_body(reader);
        let quoted_printable = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"quoted-printable"));
        if quoted_printable {
            let decoded = quoted_printable_decode(body, complete)?;
            if !complete {
                return Err(InputError::new("unexpected EOF"));
            }
            return Ok(decoded);
        }
        if !complete {
            return Err(InputError::new("unexpected EOF"));
        }
        Ok(body.to_vec())
    }
}

/// The part body: everything up to the newline before the next boundary delimiter
/// (`--boundary` followed by space, tab, CR, LF, `--` or the end of the data; at the very
/// start of the body the newline is not needed). `false` when no boundary follows; the reader
/// is then at the end of the data, else at the newline before the boundary.
fn scan_body<'a>(reader: &mut Reader<'a>) -> (&'a [u8], bool) {
    let rest = reader.rest();
    let dash = reader.dash_boundary.as_slice();
    if rest.starts_with(dash) && boundary_ends(rest, dash.len()) {
        return (&[], true);
    }
    let mut nl_dash = reader.nl.to_vec();
    nl_dash.extend_from_slice(dash);
    let mut from = 0;
    while let Some(i) = find(rest.get(from..).unwrap_or_default(), &nl_dash) {
        let at = from + i;
        if boundary_ends(&rest[at..], nl_dash.len()) {
            reader.pos += at;
            return (&rest[..at], true);
        }
        from = at + nl_dash.len();
    }
    reader.pos = reader.data.len();
    (rest, false)
}

/// Go's `matchAfterPrefix` with all data at hand: whether the prefix of length `len` at the
/// start of `buf` is a boundary.
fn boundary_ends(buf: &[u8], len: usize) -> bool {
    match buf.get(len) {
        None => true,
        Some(b' ' | b'\t' | b'\r' | b'\n') => true,
        Some(b'-') => buf.get(len + 1) == Some(&b'-'),
        Some(_) => false,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn skip_lwsp(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    b.get(n..).unwrap_or_default()
}

fn trim(b: &[u8]) -> &[u8] {
    let b = skip_lwsp(b);
    let n = b
        .iter()
        .rev()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    b.get(..b.len() - n).unwrap_or_default()
}

/// RFC 7230 token characters.
fn is_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// `textproto`'s `validHeaderValueByte`: HTAB, SP, VCHAR and obs-text.
fn valid_header_value_byte(c: u8) -> bool {
    c == b'\t' || (0x20..0x7f).contains(&c) || c >= 0x80
}

/// `textproto.canonicalMIMEHeaderKey`: `None` for an invalid key; keys containing spaces are
/// accepted but kept as they are.
fn canonical_header_key(k: &[u8]) -> Option<String> {
    if k.is_empty() {
        return None;
    }
    let mut spaces = false;
    for &c in k {
        if c == b' ' {
            spaces = true;
        } else if !is_token_byte(c) {
            return None;
        }
    }
    let mut out = String::with_capacity(k.len());
    let mut upper = true;
    for &c in k {
        let c = if spaces {
            c
        } else if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        };
        out.push(char::from(c));
        upper = c == b'-';
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// quoted-printable (Go's `mime/quotedprintable.Reader`, lenient as it is).

fn quoted_printable_decode(body: &[u8], complete: bool) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        // `bufio.ReadSlice('\n')` with its 4096-byte buffer.
        let window = rest.get(..BUFIO_SIZE.min(rest.len())).unwrap_or_default();
        let (whole, buffer_full) = match window.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..=i], false),
            None if rest.len() >= BUFIO_SIZE => (window, true),
            None => (rest, false),
        };
        rest = rest.get(whole.len()..).unwrap_or_default();
        let at_eof = complete && rest.is_empty() && !whole.ends_with(b"\n");

        let has_lf = whole.ends_with(b"\n");
        let has_cr = whole.ends_with(b"\r\n");
        let kept = whole.len()
            - whole
                .iter()
                .rev()
                .take_while(|&&c| matches!(c, b'\n' | b'\r' | b' ' | b'\t'))
                .count();
        let mut line = whole[..kept].to_vec();
        let mut line_err = None;
        if line.ends_with(b"=") {
            let stripped = skip_lwsp(&whole[kept..]);
            line.pop();
            let soft_break = stripped.starts_with(b"\n")
                || stripped.starts_with(b"\r\n")
                || (stripped.is_empty() && !line.is_empty() && at_eof);
            if !soft_break {
                line_err = Some(InputError::new(format!(
                    "quotedprintable: invalid bytes after =: {}",
                    quote(stripped)
                )));
            }
        } else if has_lf {
            line.extend_from_slice(if has_cr { b"\r\n" } else { b"\n" });
        }

        let mut i = 0;
        while let Some(&b) = line.get(i) {
            match b {
                b'=' => {
                    let after = line.get(i + 1..).unwrap_or_default();
                    match qp_hex_byte(after) {
                        Ok(decoded) => {
                            out.push(decoded);
                            i += 3;
                            continue;
                        }
                        // `=` not followed by two hex digits is a literal `=`, except at
                        // the end of the line.
                        Err(_) if after.first().is_some_and(|&c| c != b'\r' && c != b'\n') => {
                            out.push(b'=');
                        }
                        Err(e) => return Err(e),
                    }
                }
                b'\t' | b'\r' | b'\n' => out.push(b),
                b if b >= 0x80 => out.push(b),
                b if !(b' '..=b'~').contains(&b) => {
                    return Err(InputError::new(format!(
                        "quotedprintable: invalid unescaped byte 0x{b:02x} in body"
                    )));
                }
                b => out.push(b),
            }
            i += 1;
        }
        if let Some(e) = line_err {
            return Err(e);
        }
        if buffer_full {
            return Err(InputError::new("bufio: buffer full"));
        }
    }
    Ok(out)
}

/// `quotedprintable.readHexByte`.
fn qp_hex_byte(v: &[u8]) -> Result<u8, InputError> {
    let (Some(&hi), Some(&lo)) = (v.first(), v.get(1)) else {
        return Err(InputError::new("unexpected EOF"));
    };
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or_else(|| InputError::new(format!("quotedprintable: invalid hex byte 0x{c:02x}")))
    };
    Ok(digit(hi)? << 4 | digit(lo)?)
}

// ---------------------------------------------------------------------------------------------
// mime.ParseMediaType

/// Go's `mime.ParseMediaType`: the lower-cased media type and its parameters (RFC 2231
/// continuations and charsets resolved). Parameter values are bytes.
fn parse_media_type(v: &[u8]) -> Result<(String, HashMap<String, Vec<u8>>), String> {
    let base_len = v.iter().position(|&b| b == b';').unwrap_or(v.len());
    let base = &v[..base_len];
    let lowered = go_to_lower(base);
    let media_type = lowered.trim().to_owned();
    check_media_type_disposition(&media_type)?;

    let mut params: HashMap<String, Vec<u8>> = HashMap::new();
    let mut continuation: HashMap<String, HashMap<String, Vec<u8>>> = HashMap::new();
    let mut rest = &v[base_len..];
    while !rest.is_empty() {
        rest = trim_left_space(rest);
        if rest.is_empty() {
            break;
        }
        let Some((key, value, after)) = consume_media_param(rest) else {
            if trim_space(rest) == b";" {
                break;
            }
            return Err("mime: invalid media parameter".to_owned());
        };
        let map = match key.split_once('*') {
            Some((base_name, _)) => continuation.entry(base_name.to_owned()).or_default(),
            None => &mut params,
        };
        if map.get(&key).is_some_and(|existing| *existing != value) {
            return Err("mime: duplicate parameter name".to_owned());
        }
        map.insert(key, value);
        rest = after;
    }

    for (key, pieces) in continuation {
        if let Some(v) = pieces.get(&format!("{key}*")) {
            if let Some(decoded) = decode_2231(v) {
                params.insert(key, decoded);
            }
            continue;
        }
        let mut buf = Vec::new();
        let mut valid = false;
        for n in 0.. {
            let simple = format!("{key}*{n}");
            if let Some(v) = pieces.get(&simple) {
                valid = true;
                buf.extend_from_slice(v);
                continue;
            }
            let Some(v) = pieces.get(&format!("{simple}*")) else {
                break;
            };
            valid = true;
            if n == 0 {
                if let Some(decoded) = decode_2231(v) {
                    buf.extend_from_slice(&decoded);
                }
            } else if let Ok(decoded) = percent_hex_unescape(v) {
                buf.extend_from_slice(&decoded);
            }
        }
        if valid {
            params.insert(key, buf);
        }
    }
    Ok((media_type, params))
}

/// `strings.ToLower` (invalid UTF-8 bytes become U+FFFD).
fn go_to_lower(b: &[u8]) -> String {
    if b.is_ascii() {
        return lossy(b).to_ascii_lowercase();
    }
    lossy(b).to_lowercase()
}

fn check_media_type_disposition(s: &str) -> Result<(), String> {
    let (kind, rest) = consume_token(s.as_bytes());
    if kind.is_empty() {
        return Err("mime: no media type".to_owned());
    }
    if rest.is_empty() {
        return Ok(());
    }
    let Some(rest) = rest.strip_prefix(b"/") else {
        return Err("mime: expected slash after first token".to_owned());
    };
    let (subtype, rest) = consume_token(rest);
    if subtype.is_empty() {
        return Err("mime: expected token after slash".to_owned());
    }
    if !rest.is_empty() {
        return Err("mime: unexpected content after media subtype".to_owned());
    }
    Ok(())
}

fn is_tspecial(c: u8) -> bool {
    b"()<>@,;:\\\"/[]?=".contains(&c)
}

fn is_mime_token_byte(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !is_tspecial(c)
}

fn consume_token(v: &[u8]) -> (&[u8], &[u8]) {
    let n = v.iter().take_while(|&&c| is_mime_token_byte(c)).count();
    v.split_at(n)
}

/// A parameter value: a token or a quoted string (`\` escapes only tspecials, as Go does for
/// MSIE's unescaped paths). `None` when there is no value.
fn consume_value(v: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    if v.first() != Some(&b'"') {
        let (token, rest) = consume_token(v);
        return (!token.is_empty()).then(|| (token.to_vec(), rest));
    }
    let mut out = Vec::new();
    let mut i = 1;
    while let Some(&c) = v.get(i) {
        match c {
            b'"' => return Some((out, v.get(i + 1..).unwrap_or_default())),
            b'\\' if v.get(i + 1).is_some_and(|&n| is_tspecial(n)) => {
                out.extend(v.get(i + 1).copied());
                i += 2;
                continue;
            }
            b'\r' | b'\n' => return None,
            _ => out.push(c),
        }
        i += 1;
    }
    None
}

fn consume_media_param(v: &[u8]) -> Option<(String, Vec<u8>, &[u8])> {
    let rest = trim_left_space(v).strip_prefix(b";")?;
    let (param, rest) = consume_token(trim_left_space(rest));
    if param.is_empty() {
        return None;
    }
    let param = lossy(param).to_ascii_lowercase();
    let rest = trim_left_space(trim_left_space(rest).strip_prefix(b"=")?);
    let (value, rest) = consume_value(rest)?;
    Some((param, value, rest))
}

/// `strings.TrimLeftFunc(s, unicode.IsSpace)` on bytes (stops at invalid UTF-8).
fn trim_left_space(mut b: &[u8]) -> &[u8] {
    loop {
        let Some(c) = first_char(b) else {
            return b;
        };
        if !c.is_whitespace() {
            return b;
        }
        b = b.get(c.len_utf8()..).unwrap_or_default();
    }
}

fn trim_space(b: &[u8]) -> &[u8] {
    let mut b = trim_left_space(b);
    while let Some(c) = last_char(b) {
        if !c.is_whitespace() {
            break;
        }
        b = b.get(..b.len() - c.len_utf8()).unwrap_or_default();
    }
    b
}

fn first_char(b: &[u8]) -> Option<char> {
    let len = b.len().min(4);
    (1..=len).find_map(|n| {
        std::str::from_utf8(b.get(..n)?)
            .ok()
            .and_then(|s| s.chars().next())
    })
}

fn last_char(b: &[u8]) -> Option<char> {
    let len = b.len().min(4);
    (1..=len).find_map(|n| {
        std::str::from_utf8(b.get(b.len() - n..)?)
            .ok()
            .and_then(|s| s.chars().next())
    })
}

/// RFC 2231 `charset'lang'value` with a `us-ascii` or `utf-8` charset.
fn decode_2231(v: &[u8]) -> Option<Vec<u8>> {
    let mut parts = v.splitn(3, |&b| b == b'\'');
    let charset = parts.next()?;
    let _lang = parts.next()?;
    let value = parts.next()?;
    let charset = go_to_lower(charset);
    if charset.is_empty() || (charset != "us-ascii" && charset != "utf-8") {
        return None;
    }
    percent_hex_unescape(value).ok()
}

fn percent_hex_unescape(s: &[u8]) -> Result<Vec<u8>, ()> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        let hex = |j: usize| s.get(j).and_then(|&c| char::from(c).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(());
        };
        out.push(u8::try_from(hi << 4 | lo).map_err(|_| ())?);
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &str) -> Result<(String, Vec<(String, String)>), String> {
        parse_media_type(v.as_bytes()).map(|(t, p)| {
            let mut p: Vec<_> = p
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            p.sort();
            (t, p)
        })
    }

    #[test]
    fn media_types() {
        assert_eq!(
            params("multipart/form-data; boundary=foo").unwrap(),
            (
                "multipart/form-data".into(),
                vec![("boundary".into(), "foo".into())]
            )
        );
        assert_eq!(
            params("Form-Data; NAME=\"a \\\"b\\\"\"; filename=x.txt;").unwrap(),
            (
                "form-data".into(),
                vec![
                    ("filename".into(), "x.txt".into()),
                    ("name".into(), "a \"b\"".into())
                ]
            )
        );
        assert_eq!(
            params("form-data; name*=UTF-8''%e2%82%ac").unwrap().1,
            vec![("name".into(), "\u{20ac}".into())]
        );
        assert_eq!(
            params("form-data; name*0=a; name*1=b").unwrap().1,
            vec![("name".into(), "ab".into())]
        );
        assert_eq!(params("").unwrap_err(), "mime: no media type");
        assert_eq!(
            params("text/").unwrap_err(),
            "mime: expected token after slash"
        );
        assert_eq!(
            params("text/plain; x").unwrap_err(),
            "mime: invalid media parameter"
        );
        assert_eq!(
            params("text/plain; a=1; a=2").unwrap_err(),
            "mime: duplicate parameter name"
        );
        assert!(params("text/plain; a=1; a=1").is_ok());
    }

    #[test]
    fn quoted_printable() {
        assert_eq!(
            quoted_printable_decode(b"a=3Db=\r\nc\r\n", true).unwrap(),
            b"a=bc\r\n"
        );
        assert_eq!(quoted_printable_decode(b"x=4y", true).unwrap(), b"x=4y");
        assert!(quoted_printable_decode(b"a\x01", true).is_err());
    }

    #[test]
    fn header_keys() {
        assert_eq!(
            canonical_header_key(b"content-disposition").as_deref(),
            Some("Content-Disposition")
        );
        assert_eq!(canonical_header_key(b"a b").as_deref(), Some("a b"));
        assert_eq!(canonical_header_key(b"a(b"), None);
    }
}
