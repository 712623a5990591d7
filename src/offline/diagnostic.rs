//! Policy errors as OPA reports them: a code (`rego_parse_error`, `rego_compile_error`, ...), a
//! message and a location, printed as `file:row:col: code: message` or as OPA's JSON error
//! object.
//!
//! regorus formats its errors for people (`--> file:line:col`, the source line, a caret, then
//! `error: message`); Portcullis' own load-time checks write `file:line:col: code: message`.
//! [`RegoError::from_message`] reads either back into fields.

use serde::Serialize;

/// Where an error is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub row: u32,
    pub col: u32,
}

/// One error, in OPA's JSON shape (`{"message", "code", "location"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegoError {
    pub message: String,
    /// OPA's error code; absent for errors that are not about policy text (a file that cannot be
    /// read), as OPA leaves it out for those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The source line and a caret under the column, when known.
    #[serde(skip)]
    pub details: Vec<String>,
}

/// An OPA error code: `rego_` then lowercase letters and `_`.
fn is_code(text: &str) -> bool {
    text.starts_with("rego_") && text.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The 1-based character column of regorus' column `col` in `line` (regorus counts a tab as
/// four columns; OPA counts it as one).
pub fn char_col(line: &str, col: u32) -> u32 {
    let mut visual = 1u32;
    for (i, c) in line.chars().enumerate() {
        if visual >= col {
            return u32::try_from(i + 1).unwrap_or(col);
        }
        visual = visual.saturating_add(if c == '\t' { 4 } else { 1 });
    }
    u32::try_from(line.chars().count() + 1)
        .unwrap_or(col)
        .min(col)
}

/// `file:row:col` (the file may itself hold `:`).
fn parse_location(text: &str) -> Option<Location> {
    let mut parts = text.rsplitn(3, ':');
    let col = parts.next()?.trim().parse().ok()?;
    let row = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_string();
    Some(Location { file, row, col })
}

impl RegoError {
    /// An error with a code and a location.
    pub fn new(code: &str, message: impl Into<String>, location: Option<Location>) -> Self {
        Self {
            message: message.into(),
            code: Some(code.to_string()),
            location,
            details: Vec::new(),
        }
    }

    /// An error that is not about policy text: a message only.
    pub fn plain(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
            location: None,
            details: Vec::new(),
        }
    }

    /// Reads a regorus or Portcullis error message; `code` is used when the message names none.
    pub fn from_message(text: &str, code: &str) -> Self {
        // Portcullis' own: `file:row:col: rego_x_error: message`.
        if let Some(at) = text.find(": rego_") {
            let (head, rest) = text.split_at(at);
            let rest = &rest[2..];
            if let Some((found, message)) = rest.split_once(": ")
                && is_code(found)
                && let Some(location) = parse_location(head)
            {
                return Self::new(found, message.trim(), Some(location));
            }
        }
        // regorus': `--> file:line:col`, `N | source`, `  |   ^`, `error: message`.
        let lines: Vec<&str> = text.lines().collect();
        let arrow = lines
            .iter()
            .position(|l| l.trim_start().starts_with("--> "));
        if let Some(i) = arrow {
            let location = lines
                .get(i)
                .and_then(|l| l.trim_start().strip_prefix("--> "))
                .and_then(parse_location);
            let message_at = lines
                .iter()
                .skip(i)
                .position(|l| l.starts_with("error: "))
                .map(|p| p + i);
            if let (Some(location), Some(m)) = (location, message_at) {
                let mut message: Vec<&str> = lines
                    .get(m..)
                    .unwrap_or_default()
                    .iter()
                    .map(|l| l.trim_end())
                    .collect();
                if let Some(first) = message.first_mut() {
                    *first = first.trim_start_matches("error: ");
                }
                let details: Vec<String> = lines
                    .get(i + 1..m)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|l| l.split_once('|').map(|(_, code)| code))
                    .filter(|code| !code.trim().is_empty())
                    .map(|code| code.strip_prefix(' ').unwrap_or(code).to_string())
                    .collect();
                let prefix = lines
                    .get(..i)
                    .unwrap_or_default()
                    .iter()
                    .map(|l| l.trim())
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut location = location;
                if let Some(source) = details.first() {
                    location.col = char_col(source, location.col);
                }
                let mut text = message.join("\n");
                if !prefix.is_empty() {
                    text = format!("{prefix}: {text}");
                }
                return Self {
                    message: text,
                    code: Some(code.to_string()),
                    location: Some(location),
                    details,
                };
            }
        }
        Self::new(code, text.trim(), None)
    }

    /// OPA's text form, with the column: `file:row:col: code: message`, then the details, each
    /// on a line starting with a tab.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(l) = &self.location {
            out.push_str(&format!("{}:{}:{}: ", l.file, l.row, l.col));
        }
        if let Some(code) = &self.code {
            out.push_str(code);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        for d in &self.details {
            out.push_str("\n\t");
            out.push_str(d);
        }
        out
    }
}

/// OPA's summary of several errors: `1 error occurred: ...`, or `N errors occurred:` and one
/// error per line.
pub fn summary(errors: &[RegoError]) -> String {
    match errors {
        [] => "no error(s)".to_string(),
        [one] => format!("1 error occurred: {}", one.text()),
        many => format!(
            "{} errors occurred:\n{}",
            many.len(),
            many.iter()
                .map(RegoError::text)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// OPA's JSON error document: `{"errors": [...]}`, indented.
pub fn json(errors: &[RegoError]) -> String {
    #[derive(Serialize)]
    struct Document<'a> {
        errors: &'a [RegoError],
    }
    serde_json::to_string_pretty(&Document { errors })
        .unwrap_or_else(|_| "{\"errors\":[]}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regorus_messages_are_read_into_fields() {
        let text =
            "\n--> dir/p.rego:3:12\n  |\n3 |   input.x ==\n  |            ^\nerror: unexpected eof";
        let e = RegoError::from_message(text, "rego_parse_error");
        assert_eq!(
            e.location,
            Some(Location {
                file: "dir/p.rego".into(),
                row: 3,
                col: 12
            })
        );
        assert_eq!(e.message, "unexpected eof");
        assert_eq!(e.code.as_deref(), Some("rego_parse_error"));
        assert_eq!(e.details, vec!["  input.x ==", "           ^"]);
        // A tab is one column, as OPA counts.
        let tabbed = RegoError::from_message(
            "\n--> p.rego:2:6\n  |\n2 | \tx ==\n  |      ^\nerror: bad",
            "rego_parse_error",
        );
        assert_eq!(tabbed.location.map(|l| l.col), Some(3));
        assert_eq!(
            e.text(),
            "dir/p.rego:3:12: rego_parse_error: unexpected eof\n\t  input.x ==\n\t           ^"
        );
    }

    #[test]
    fn own_messages_keep_their_code() {
        let e = RegoError::from_message(
            "c:/x.rego:4:1: rego_recursion_error: rule data.p.f is recursive: data.p.f -> data.p.f",
            "rego_compile_error",
        );
        assert_eq!(e.code.as_deref(), Some("rego_recursion_error"));
        assert_eq!(
            e.location.as_ref().map(|l| l.file.as_str()),
            Some("c:/x.rego")
        );
        assert!(e.message.starts_with("rule data.p.f"));
        // Anything else is kept whole, under the given code.
        let e = RegoError::from_message("something: odd", "rego_compile_error");
        assert_eq!(e.message, "something: odd");
        assert!(e.location.is_none());
    }

    #[test]
    fn summaries_count_like_opa() {
        let a = RegoError::new("rego_parse_error", "bad", None);
        assert_eq!(
            summary(std::slice::from_ref(&a)),
            "1 error occurred: rego_parse_error: bad"
        );
        assert_eq!(
            summary(&[a.clone(), a]),
            "2 errors occurred:\nrego_parse_error: bad\nrego_parse_error: bad"
        );
    }
}
