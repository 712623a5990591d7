//! The redirect URI of `auth login`: `http://127.0.0.1:<ephemeral>/callback` (RFC 8252 §7.3),
//! served until one request reaches `/callback` or the time is up.
//!
//! That one request decides: its `state` must be this login's (compared in constant time),
//! no parameter may be repeated, and with a provider that names itself (RFC 9207) its `iss`
//! must be the issuer. Anything else ends the login with an error, so a forged or replayed
//! redirect cannot be retried against the same state. Other paths answer 404.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use subtle::ConstantTimeEq as _;
use tokio::sync::oneshot;

use super::oidc::{Provider, clean};
use crate::cli::CliError;

/// A bound redirect listener.
pub struct Callback {
    listener: tokio::net::TcpListener,
    pub redirect_uri: String,
}

/// What the one callback request must carry.
struct Expect {
    state: String,
    issuer: String,
    require_iss: bool,
}

type Reply = Arc<Mutex<Option<oneshot::Sender<Result<String, CliError>>>>>;

impl Callback {
    /// Binds 127.0.0.1 on a port the system picks.
    pub async fn bind() -> Result<Self, CliError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| CliError::Failed(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| CliError::Failed(e.to_string()))?
            .port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}/callback"),
        })
    }

    /// Waits up to `wait` for the callback and returns the authorization code.
    pub async fn code(
        self,
        provider: &Provider,
        state: &str,
        wait: Duration,
    ) -> Result<String, CliError> {
        let (tx, rx) = oneshot::channel();
        let expect = Arc::new(Expect {
            state: state.to_string(),
            issuer: provider.issuer.clone(),
            require_iss: provider.iss_parameter,
        });
        let reply: Reply = Arc::new(Mutex::new(Some(tx)));
        let app = axum::Router::new()
            .route("/callback", axum::routing::get(callback))
            .with_state((expect, reply));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(self.listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        let result = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CliError::Failed("the redirect listener stopped".into())),
            Err(_) => Err(CliError::Failed(format!(
                "no login came back to {} within {}s",
                self.redirect_uri,
                wait.as_secs()
            ))),
        };
        // Let the browser's answer go out, then close the listener.
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        result
    }
}

async fn callback(
    State((expect, reply)): State<(Arc<Expect>, Reply)>,
    RawQuery(query): RawQuery,
) -> (StatusCode, &'static str) {
    let Some(tx) = reply.lock().ok().and_then(|mut r| r.take()) else {
        return (StatusCode::GONE, "This login is already over.\n");
    };
    let result = check(&expect, query.as_deref().unwrap_or(""));
    let page = match &result {
        Ok(_) => (
            StatusCode::OK,
            "Portcullis: you are logged in. You can close this window.\n",
        ),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "Portcullis: the login failed; the command line says why.\n",
        ),
    };
    let _ = tx.send(result);
    page
}

/// The code of a callback query, or why it is refused.
fn check(expect: &Expect, query: &str) -> Result<String, CliError> {
    let refuse = |m: &str| CliError::Failed(format!("login refused: {m}"));
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if params.iter().any(|(n, _)| *n == k) {
            return Err(refuse(&format!(
                "the parameter {:?} is repeated",
                clean(&k)
            )));
        }
        params.push((k.into_owned(), v.into_owned()));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let state = get("state").unwrap_or("");
    if !bool::from(state.as_bytes().ct_eq(expect.state.as_bytes())) {
        return Err(refuse("the state does not match this login's"));
    }
    match get("iss") {
        Some(iss) if iss != expect.issuer => {
            return Err(refuse("the answer names another issuer (iss)"));
        }
        None if expect.require_iss => {
            return Err(refuse("the answer does not name its issuer (iss)"));
        }
        _ => {}
    }
    if let Some(error) = get("error") {
        let description = get("error_description")
            .map(|d| format!(": {}", clean(d)))
            .unwrap_or_default();
        return Err(CliError::Failed(format!(
            "the provider refused the login: {}{description}",
            clean(error)
        )));
    }
    match get("code") {
        Some(code) if !code.is_empty() => Ok(code.to_string()),
        _ => Err(refuse("no code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(require_iss: bool) -> Expect {
        Expect {
            state: "s1".into(),
            issuer: "https://i".into(),
            require_iss,
        }
    }

    #[test]
    fn only_this_logins_answer_is_taken() {
        let e = expect(true);
        assert_eq!(
            check(&e, "code=c&state=s1&iss=https%3A%2F%2Fi").unwrap(),
            "c"
        );
        for (query, why) in [
            ("code=c&state=s2&iss=https%3A%2F%2Fi", "state"),
            ("code=c&iss=https%3A%2F%2Fi", "state"),
            ("code=c&state=s1", "iss"),
            ("code=c&state=s1&iss=https%3A%2F%2Fevil", "another issuer"),
            ("code=c&code=d&state=s1&iss=https%3A%2F%2Fi", "repeated"),
            ("state=s1&state=s1&code=c&iss=https%3A%2F%2Fi", "repeated"),
            ("state=s1&iss=https%3A%2F%2Fi", "no code"),
            (
                "error=access_denied&error_description=no%1b&state=s1&iss=https%3A%2F%2Fi",
                "access_denied: no",
            ),
        ] {
            let e = check(&e, query).unwrap_err().to_string();
            assert!(e.contains(why), "{query}: {e}");
        }
        // A provider that does not name itself is not asked to.
        assert_eq!(check(&expect(false), "code=c&state=s1").unwrap(), "c");
    }
}
