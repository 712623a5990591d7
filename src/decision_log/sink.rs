//! Local sinks: JSON lines on stdout (console) and to a file rotated by size.
//!
//! Both buffer their writes and are flushed by the log writer whenever its queue runs empty,
//! so that a burst costs few system calls and a quiet log is never left unwritten.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// OPA prints console decision logs through its logger; these fields make the lines look the
/// same to log pipelines that filter on them.
const CONSOLE_PREFIX: &[u8] =
    br#"{"level":"info","msg":"Decision Log","type":"openpolicyagent.org/decision_logs","#;

/// JSON lines on a writer (stdout in production).
pub(crate) struct Console {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Console {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(64 * 1024, out),
        }
    }

    /// Writes one event (a serialized JSON object).
    pub(crate) fn write(&mut self, event: &[u8]) -> io::Result<()> {
        match event.strip_prefix(b"{") {
            Some(rest) if rest != b"}" => {
                self.out.write_all(CONSOLE_PREFIX)?;
                self.out.write_all(rest)?;
            }
            _ => self.out.write_all(event)?,
        }
        self.out.write_all(b"\n")
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// JSON lines to `path`; when a write would take the file past `max_size`, the file is
/// renamed to `path.1` (older ones shift to `path.2` ... `path.<max_backups>`, the oldest is
/// removed) and a new one started.
pub(crate) struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_backups: usize,
    file: Option<BufWriter<File>>,
    size: u64,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating it.
    pub(crate) fn open(path: &Path, max_size: u64, max_backups: usize) -> io::Result<Self> {
        let mut f = Self {
            path: path.to_path_buf(),
            max_size,
            max_backups,
            file: None,
            size: 0,
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Decisions hold request data: readable by the sidecar's user only.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    /// Writes one event and a newline, rotating first when needed.
    pub(crate) fn write(&mut self, event: &[u8]) -> io::Result<()> {
        let len = event.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("decision log file is not open"));
        };
        file.write_all(event)?;
        file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    fn backup(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        if self.max_backups == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.backup(self.max_backups)).or_else(ignore_missing)?;
            for n in (1..self.max_backups).rev() {
                std::fs::rename(self.backup(n), self.backup(n + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&self.path, self.backup(1)).or_else(ignore_missing)?;
        }
        self.reopen()
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_carry_opa_logger_fields() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let mut c = Console::new(Box::new(buf.clone()));
        c.write(br#"{"decision_id":"x"}"#).unwrap();
        c.flush().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["msg"], "Decision Log");
        assert_eq!(v["decision_id"], "x");
    }

    #[test]
    fn file_rotates_by_size_and_keeps_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let mut f = RotatingFile::open(&path, 25, 2).unwrap();
        for i in 0..7 {
            f.write(format!("{{\"n\":{i:04}}}").as_bytes()).unwrap(); // 11 bytes + \n
        }
        f.flush().unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(path.clone()), "{\"n\":0006}\n");
        assert_eq!(
            read(dir.path().join("d.log.1")),
            "{\"n\":0004}\n{\"n\":0005}\n"
        );
        assert_eq!(
            read(dir.path().join("d.log.2")),
            "{\"n\":0002}\n{\"n\":0003}\n"
        );
        assert!(!dir.path().join("d.log.3").exists());
    }
}
