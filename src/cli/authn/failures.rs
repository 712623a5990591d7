//! `authn failures`: the newest `authn_failure` events of an audit log (JSON lines, as
//! [`crate::authn::audit`] writes them), newest first.
//!
//! The file is read backwards from its end in fixed-size blocks, so a log of any size costs
//! the same memory: one block, one line of at most [`MAX_LINE`] bytes, and the events kept
//! (at most [`MAX_KEPT`] bytes of them). Reading stops once `--limit` events are found or
//! `--max-scan` bytes were read. Lines that are not a JSON
//! object (garbage, a line cut short by a crash, over-long lines) are skipped and counted;
//! `audit_events_dropped` events in the range read are summed, so a full queue's losses show.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use serde_json::{Map, Value as Json, json};

use super::{OutputArgs, printable};
use crate::cli::CliError;
use crate::cli::output::{self, Format};

/// The block read at a time.
const BLOCK: usize = 64 * 1024;
/// The longest line read; longer ones are skipped (and counted).
const MAX_LINE: usize = 64 * 1024;
/// The most event text kept for printing; reading stops there (`partial`).
const MAX_KEPT: usize = 64 * 1024 * 1024;

/// Flags of `authn failures`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailuresArgs {
    /// The audit log (`authentication.audit.sink`).
    #[arg(long, value_name = "FILE")]
    pub audit_log: PathBuf,
    /// Only this policy's failures.
    #[arg(long)]
    pub policy: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub limit: u64,
    /// Read at most this many bytes from the end of the file.
    #[arg(long, default_value_t = 256 * 1024 * 1024, value_name = "BYTES")]
    pub max_scan: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What a scan found.
#[derive(Debug, Default)]
struct Scan {
    /// Newest first.
    events: Vec<Map<String, Json>>,
    /// Lines that are not JSON objects (or too long).
    skipped: u64,
    /// `authn_failure` events the audit queue dropped, as its reports count them.
    dropped: u64,
    scanned: u64,
    /// Bytes of the events kept.
    kept: usize,
    /// Whether reading stopped before the start of the file.
    partial: bool,
}

/// `authn failures`.
pub fn run(a: &FailuresArgs) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Failed(format!("{}: {e}", a.audit_log.display()));
    let mut file = File::open(&a.audit_log).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!(
            "{}: not a regular file",
            a.audit_log.display()
        )));
    }
    let limit = usize::try_from(a.limit).unwrap_or(usize::MAX);
    let scan = scan(
        &mut file,
        meta.len(),
        a.policy.as_deref(),
        limit,
        a.max_scan,
    )
    .map_err(fail)?;
    print(&scan, a.output.format())
}

/// Reads `file` (of `len` bytes) backwards.
fn scan(
    file: &mut File,
    len: u64,
    policy: Option<&str>,
    limit: usize,
    max_scan: u64,
) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    // The start of the line that continues into the block read before (bytes after the
    // earliest newline seen so far), or `None` while that line is over-long.
    let mut carry: Option<Vec<u8>> = Some(Vec::new());
    let mut pos = len;
    let mut block = vec![0u8; BLOCK];
    while pos > 0 && out.events.len() < limit {
        if out.scanned >= max_scan || out.kept >= MAX_KEPT {
            out.partial = true;
            break;
        }
        let start = pos.saturating_sub(BLOCK as u64);
        let n = usize::try_from(pos - start).unwrap_or(BLOCK);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        out.scanned += n as u64;
        pos = start;
        let data = &block[..n];
        // Lines wholly inside this block (after its first newline), newest first.
        let mut end = n;
        while let Some(nl) = data[..end].iter().rposition(|&b| b == b'\n') {
            let tail = carry.take();
            match tail {
                Some(rest) => {
                    let mut line = data[nl + 1..end].to_vec();
                    line.extend_from_slice(&rest);
                    take(&line, policy, &mut out);
                }
                None => out.skipped += 1,
            }
            carry = Some(Vec::new());
            end = nl;
            if out.events.len() >= limit || out.kept >= MAX_KEPT {
                out.partial |= out.kept >= MAX_KEPT;
                return Ok(out);
            }
        }
        // The block's first bytes continue a line that starts in an earlier block.
        carry = carry.and_then(|mut rest| {
            if end + rest.len() > MAX_LINE {
                return None;
            }
            let mut line = data[..end].to_vec();
            line.append(&mut rest);
            Some(line)
        });
    }
    if pos == 0 && out.events.len() < limit && !out.partial {
        match carry {
            Some(line) => take(&line, policy, &mut out),
            None => out.skipped += 1,
        }
    }
    Ok(out)
}

/// Counts or keeps one line.
fn take(line: &[u8], policy: Option<&str>, out: &mut Scan) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if line.len() > MAX_LINE {
        out.skipped += 1;
        return;
    }
    let Ok(Json::Object(event)) = serde_json::from_slice::<Json>(line) else {
        out.skipped += 1;
        return;
    };
    match event.get("event").and_then(Json::as_str) {
        Some("authn_failure")
            if policy.is_none_or(|p| event.get("policy").and_then(Json::as_str) == Some(p)) =>
        {
            out.kept += line.len();
            out.events.push(event);
        }
        Some("audit_events_dropped") => {
            let counts = event.get("counts").and_then(Json::as_array);
            out.dropped += counts
                .into_iter()
                .flatten()
                .filter(|c| c["event"] == "authn_failure")
                .filter_map(|c| c["dropped"].as_u64())
                .sum::<u64>();
        }
        _ => {}
    }
}

fn print(scan: &Scan, format: Format) -> Result<(), CliError> {
    match format {
        Format::Json => output::json_line(&json!({
            "events": scan.events,
            "skipped_lines": scan.skipped,
            "dropped": scan.dropped,
            "scanned_bytes": scan.scanned,
            "partial": scan.partial,
        })),
        Format::Table => {
            let cell = |e: &Map<String, Json>, k: &str| {
                printable(e.get(k).and_then(Json::as_str).unwrap_or_default())
            };
            let rows: Vec<Vec<String>> = scan
                .events
                .iter()
                .map(|e| {
                    [
                        "time",
                        "policy",
                        "method",
                        "result",
                        "reason",
                        "subject",
                        "decision_id",
                    ]
                    .iter()
                    .map(|k| cell(e, k))
                    .collect()
                })
                .collect();
            let mut text = output::table(
                &[
                    "TIME", "POLICY", "METHOD", "RESULT", "REASON", "SUBJECT", "DECISION",
                ],
                &rows,
            );
            if scan.skipped > 0 {
                text.push_str(&format!("{} unreadable lines skipped\n", scan.skipped));
            }
            if scan.dropped > 0 {
                text.push_str(&format!(
                    "{} failures were dropped by a full audit queue\n",
                    scan.dropped
                ));
            }
            if scan.partial {
                text.push_str(&format!(
                    "only the last {} bytes were read (--max-scan, or 64 MiB of events)\n",
                    scan.scanned
                ));
            }
            output::text(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn failure(i: usize, policy: &str) -> String {
        format!(
            "{{\"event\":\"authn_failure\",\"decision_id\":\"d{i}\",\"policy\":\"{policy}\",\"result\":\"invalid_token\",\"reason\":\"expired\"}}\n"
        )
    }

    fn scan_text(text: &[u8], policy: Option<&str>, limit: usize) -> Scan {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text).unwrap();
        scan(&mut f, text.len() as u64, policy, limit, u64::MAX).unwrap()
    }

    fn ids(s: &Scan) -> Vec<String> {
        s.events
            .iter()
            .map(|e| e["decision_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn newest_first_across_block_boundaries() {
        let mut text = String::new();
        // Enough lines to span several blocks, with a line cut by each boundary.
        for i in 0..5000 {
            text.push_str(&failure(i, if i % 2 == 0 { "a" } else { "b" }));
        }
        assert!(text.len() > 3 * BLOCK);
        let s = scan_text(text.as_bytes(), None, 3);
        assert_eq!(ids(&s), ["d4999", "d4998", "d4997"]);
        let s = scan_text(text.as_bytes(), Some("a"), 100_000);
        assert_eq!(s.events.len(), 2500);
        assert_eq!(s.events[0]["decision_id"], "d4998");
        assert_eq!(s.events[2499]["decision_id"], "d0");
        assert_eq!(s.skipped, 0);
    }

    #[test]
    fn garbage_is_skipped_and_counted() {
        let mut text = Vec::new();
        text.extend_from_slice(failure(1, "a").as_bytes());
        text.extend_from_slice(b"not json\n[1,2]\n\n\xff\xfe\n");
        text.extend_from_slice(&vec![b'x'; 3 * MAX_LINE]);
        text.push(b'\n');
        text.extend_from_slice(b"{\"event\":\"token_minted\"}\n");
        text.extend_from_slice(
            b"{\"event\":\"audit_events_dropped\",\"counts\":[{\"event\":\"authn_failure\",\"result\":\"x\",\"dropped\":7}]}\n",
        );
        text.extend_from_slice(failure(2, "a").as_bytes());
        // A last line cut short by a crash.
        text.extend_from_slice(b"{\"event\":\"authn_fai");
        let s = scan_text(&text, None, 10);
        assert_eq!(ids(&s), ["d2", "d1"]);
        assert_eq!(
            s.skipped, 5,
            "cut line, over-long line, \\xff, [1,2], not json"
        );
        assert_eq!(s.dropped, 7);
    }

    #[test]
    fn an_over_long_first_line_is_skipped() {
        let mut text = vec![b'{'; 2 * MAX_LINE];
        text.push(b'\n');
        text.extend_from_slice(failure(1, "a").as_bytes());
        let s = scan_text(&text, None, 10);
        assert_eq!(ids(&s), ["d1"]);
        assert_eq!(s.skipped, 1);
    }

    #[test]
    fn max_scan_bounds_the_read() {
        let text: String = (0..3000).map(|i| failure(i, "a")).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let s = scan(&mut f, text.len() as u64, None, 100_000, BLOCK as u64).unwrap();
        assert!(s.partial);
        assert_eq!(s.scanned, BLOCK as u64);
        assert!(!s.events.is_empty() && s.events.len() < 3000);
    }
}
