//! Output: JSON by default when stdout is not a terminal, readable tables when it is;
//! `--output json|table` decides explicitly.

use std::io::{IsTerminal, Write};

use serde_json::Value as Json;

use super::CliError;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document (one line per entry for streams).
    Json,
    /// Aligned columns for people.
    #[value(alias = "text")]
    Table,
}

impl Format {
    /// The format asked for, else JSON unless stdout is a terminal.
    pub fn resolve(asked: Option<Format>) -> Format {
        asked.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Json
            }
        })
    }
}

fn write_err(e: std::io::Error) -> CliError {
    CliError::Failed(format!("cannot write the output: {e}"))
}

/// Prints one JSON document on a line.
pub fn json_line(value: &Json) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(|e| CliError::Failed(e.to_string()))?;
    out.write_all(b"\n").map_err(write_err)?;
    out.flush().map_err(write_err)
}

/// Prints lines of text.
pub fn text(lines: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes()).map_err(write_err)?;
    if !lines.ends_with('\n') {
        out.write_all(b"\n").map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

/// Renders rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}"));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

/// `key: value` lines, keys aligned.
pub fn pairs(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<w$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table(
            &["ID", "SOURCE"],
            &[
                vec!["a.rego".into(), "file".into()],
                vec!["b".into(), "gateway".into()],
            ],
        );
        assert_eq!(t, "ID      SOURCE\na.rego  file\nb       gateway\n");
    }
}
