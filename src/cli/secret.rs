//! Secrets the command line reads: from a flag (visible in `ps` and the shell's history, so
//! every such flag has a file alternative), from a file or standard input (`-`), or from a
//! prompt on the terminal that does not echo what is typed.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::Path;

use super::CliError;

/// The longest secret read from a file or standard input: more is refused, never truncated.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads a secret from `path` (`-`: standard input), without its final line break. `what`
/// names the flag in errors. `owner_only` refuses a file that others can read or write.
pub fn from_file(path: &Path, what: &str, owner_only: bool) -> Result<String, CliError> {
    let mut text = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| CliError::Usage(format!("{what}: standard input: {e}")))?;
    } else {
        if owner_only {
            crate::jose::keys::check_owner_only(path, "a secret")
                .map_err(|e| CliError::Usage(format!("{what}: {e}")))?;
        }
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_end(&mut text))
            .map_err(|e| CliError::Usage(format!("{what}: {}: {e}", path.display())))?;
    }
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(CliError::Usage(format!(
            "{what}: more than {MAX_SECRET_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(text)
        .map_err(|_| CliError::Usage(format!("{what}: the secret is not UTF-8")))?;
    let text = strip_line_break(&text);
    if text.is_empty() {
        return Err(CliError::Usage(format!("{what}: the secret is empty")));
    }
    Ok(text.to_string())
}

/// `text` without one final `\n` or `\r\n` (what `echo` and editors add).
fn strip_line_break(text: &str) -> &str {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.strip_suffix('\r').unwrap_or(text)
}

/// A secret from a flag or its file alternative (at most one is given), if any.
pub fn either(
    value: Option<&str>,
    file: Option<&Path>,
    what: &str,
    owner_only: bool,
) -> Result<Option<String>, CliError> {
    match (value, file) {
        (Some(""), _) => Err(CliError::Usage(format!("{what}: empty"))),
        (Some(v), _) => Ok(Some(v.to_string())),
        (None, Some(path)) => from_file(path, &format!("{what}-file"), owner_only).map(Some),
        (None, None) => Ok(None),
    }
}

/// Reads a secret: typed at a prompt on the terminal (not echoed) when standard input is one,
/// else from standard input. `confirm` asks twice at a prompt.
pub fn read_stdin_or_prompt(prompt: &str, confirm: bool) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return from_file(Path::new("-"), "standard input", false);
    }
    let first = prompt_hidden(prompt)?;
    if confirm && prompt_hidden("again: ")? != first {
        return Err(CliError::Usage("the two entries differ".into()));
    }
    if first.is_empty() {
        return Err(CliError::Usage("empty".into()));
    }
    Ok(first)
}

/// One line typed on the terminal with echo off (restored afterwards, also on error). Echo
/// goes off before the prompt shows, so nothing typed early is echoed.
fn prompt_hidden(prompt: &str) -> Result<String, CliError> {
    let io = |e: std::io::Error| CliError::Failed(format!("terminal: {e}"));
    let _echo = EchoOff::new()?;
    let mut err = std::io::stderr();
    err.write_all(prompt.as_bytes()).map_err(io)?;
    err.flush().map_err(io)?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(io)?;
    Ok(strip_line_break(&line).to_string())
}

/// Terminal echo turned off on standard input until dropped.
struct EchoOff(rustix::termios::Termios);

impl EchoOff {
    fn new() -> Result<Self, CliError> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let fail = |e: rustix::io::Errno| CliError::Failed(format!("terminal: {e}"));
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).map_err(fail)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(fail)?;
        Ok(Self(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_lose_one_line_break_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\r\n").unwrap();
        assert_eq!(from_file(&p, "--x", false).unwrap(), "abc");
        std::fs::write(&p, "abc\n\n").unwrap();
        assert_eq!(from_file(&p, "--x", false).unwrap(), "abc\n");
        std::fs::write(&p, "\n").unwrap();
        assert!(from_file(&p, "--x", false).is_err());
        std::fs::write(&p, vec![b'a'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        assert!(from_file(&p, "--x", false).is_err());
    }

    #[test]
    fn owner_only_files_are_enforced_when_asked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(from_file(&p, "--x", false).is_ok());
        let e = from_file(&p, "--x", true).unwrap_err().to_string();
        assert!(e.contains("owner only"), "{e}");
    }
}
