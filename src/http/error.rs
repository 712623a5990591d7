//! OPA's error object, `{"code", "message", "errors"}`, and how Portcullis' errors map to it.
//!
//! The codes are OPA's: `invalid_parameter` (400), `invalid_operation` (400, a policy delete
//! the other policies still need), `resource_not_found` (404),
//! `resource_conflict` (OPA answers it with 404), `undefined_document` (404), `unauthorized`
//! (401, and 403 for writes this listener refuses), `internal_error` (500). `errors` is left out
//! when empty, as OPA leaves it out; each detailed error is `{"code", "message", "location":
//! {"file", "row", "col"}}` when the engine named a location.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use crate::policy::EvalError;
use crate::policy::overlay::WriteError;

/// OPA's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidParameter,
    InvalidOperation,
    ResourceNotFound,
    ResourceConflict,
    UndefinedDocument,
    Unauthorized,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidParameter => "invalid_parameter",
            Code::InvalidOperation => "invalid_operation",
            Code::ResourceNotFound => "resource_not_found",
            Code::ResourceConflict => "resource_conflict",
            Code::UndefinedDocument => "undefined_document",
            Code::Unauthorized => "unauthorized",
            Code::Internal => "internal_error",
        }
    }
}

/// OPA's message for module compile errors.
pub const MSG_COMPILE_MODULE: &str = "error(s) occurred while compiling module(s)";
/// OPA's message for query parse errors.
pub const MSG_PARSE_QUERY: &str = "error(s) occurred while parsing query";
/// OPA's message for query compile errors.
pub const MSG_COMPILE_QUERY: &str = "error(s) occurred while compiling query";
/// OPA's message for evaluation errors.
pub const MSG_EVALUATION: &str = "error(s) occurred while evaluating query";

/// One error answer of the REST API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub errors: Vec<Json>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// 400 `invalid_parameter`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidParameter, message)
    }

    /// 500 `internal_error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, message)
    }

    pub fn with_errors(mut self, errors: Vec<Json>) -> Self {
        self.errors = errors;
        self
    }

    /// The JSON object OPA writes.
    pub fn body(&self) -> Json {
        let mut body = json!({"code": self.code.as_str(), "message": self.message});
        if !self.errors.is_empty() {
            body["errors"] = Json::Array(self.errors.clone());
        }
        body
    }

    /// An evaluation failure: OPA's 500 with one detailed error.
    pub fn eval(e: &EvalError) -> Self {
        let (code, text) = match e {
            EvalError::Timeout(_) => ("eval_cancel_error", e.to_string()),
            EvalError::Limit(m) => ("eval_internal_error", m.clone()),
            EvalError::Failed(m) if m.contains("multiple") || m.contains("conflict") => {
                ("eval_conflict_error", m.clone())
            }
            EvalError::Failed(m) => ("eval_internal_error", m.clone()),
        };
        Self::internal(MSG_EVALUATION).with_errors(vec![detail(code, &text)])
    }

    /// A refused runtime write, as OPA answers the same refusal.
    pub fn write(e: WriteError) -> Self {
        match e {
            WriteError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                Code::ResourceNotFound,
                format!("storage_not_found_error: {what}"),
            ),
            WriteError::FileOnly(_) | WriteError::Invalid(_) | WriteError::Limit(_) => {
                Self::bad_request(e.to_string())
            }
            WriteError::Policy(p) => {
                let text = p.to_string();
                Self::bad_request(MSG_COMPILE_MODULE)
                    .with_errors(vec![detail(compile_code(&text), &text)])
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// The OPA code of a compile error from its text.
pub fn compile_code(text: &str) -> &'static str {
    if text.contains("is unsafe") {
        "rego_unsafe_var_error"
    } else {
        "rego_compile_error"
    }
}

/// One detailed error: `{"code", "message", "location"}`, the location read from the engine's
/// `--> file:row:col` line when there is one, and the message from its last `error:` line.
pub fn detail(code: &str, text: &str) -> Json {
    let location = text.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("--> ")?;
        let (rest, col) = rest.rsplit_once(':')?;
        let (file, row) = rest.rsplit_once(':')?;
        Some(json!({
            "file": file,
            "row": row.trim().parse::<u64>().ok()?,
            "col": col.trim().parse::<u64>().ok()?,
        }))
    });
    let message = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:").map(str::trim))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| text.trim());
    let mut out = json!({"code": code, "message": message});
    if let Some(location) = location {
        out["location"] = location;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_become_opa_details() {
        let text = "error: \n--> p.rego:4:1\n  |\n4 | }\n  | ^\nerror: expecting expression";
        assert_eq!(
            detail("rego_parse_error", text),
            json!({"code": "rego_parse_error", "message": "expecting expression",
                   "location": {"file": "p.rego", "row": 4, "col": 1}})
        );
        // A file name with colons keeps them; no location line, the whole text.
        let text = "--> a:b.rego:2:12\nerror: use of undefined variable `y` is unsafe";
        assert_eq!(detail("x", text)["location"]["file"], "a:b.rego");
        assert_eq!(detail("x", "plain")["message"], "plain");
        assert!(detail("x", "plain").get("location").is_none());
    }

    #[test]
    fn errors_key_is_left_out_when_empty() {
        let e = ApiError::bad_request("m");
        assert_eq!(
            e.body(),
            json!({"code": "invalid_parameter", "message": "m"})
        );
    }
}
