//! The process' own resource use, read from `/proc/self` at every scrape, under the names every
//! Prometheus client library uses (so stock dashboards and the one in `deploy/grafana/` work):
//!
//! | metric | type |
//! |---|---|
//! | `process_cpu_seconds_total` | counter: user + system CPU time |
//! | `process_resident_memory_bytes` | gauge |
//! | `process_virtual_memory_bytes` | gauge |
//! | `process_threads` | gauge |
//! | `process_open_fds`, `process_max_fds` | gauge |
//! | `process_start_time_seconds` | gauge: Unix seconds |
//!
//! A value that cannot be read (a kernel without `/proc`) is left out of the scrape rather than
//! reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Reads `/proc/self` when scraped.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// What one read of `/proc/self/stat` (and friends) gives.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    threads: Option<u64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl Sample {
    fn read() -> Self {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let mut sample = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .map(|s| parse_stat(&s, ticks, page, boot_time))
            .unwrap_or_default();
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        sample.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s));
        sample
    }
}

/// The fields of `/proc/self/stat` (proc(5)); the command name, in parentheses, may itself
/// hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str, ticks: f64, page: u64, boot_time: Option<u64>) -> Sample {
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // fields[0] is field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu_seconds = match (field(14), field(15)) {
        (Some(utime), Some(stime)) if ticks > 0.0 => Some((utime + stime) as f64 / ticks),
        _ => None,
    };
    let start_time_seconds = match (boot_time, field(22)) {
        (Some(boot), Some(start)) if ticks > 0.0 => Some(boot as f64 + start as f64 / ticks),
        _ => None,
    };
    Sample {
        cpu_seconds,
        resident_bytes: field(24).map(|pages| pages.saturating_mul(page)),
        virtual_bytes: field(23),
        threads: field(20),
        start_time_seconds,
        ..Default::default()
    }
}

/// `btime` of `/proc/stat`: when the system booted, in Unix seconds.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files from `/proc/self/limits` (`unlimited` is left out).
fn max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read();
        if let Some(v) = s.cpu_seconds {
            let mut e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time the process used, user and system, in seconds",
                None,
                MetricType::Counter,
            )?;
            e.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Memory of the process held in RAM (RSS), in bytes",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Address space the process has mapped, in bytes",
                s.virtual_bytes,
            ),
            ("process_threads", "Threads of the process", s.threads),
            (
                "process_open_fds",
                "File descriptors the process has open",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "The soft limit on open file descriptors",
                s.max_fds,
            ),
        ] {
            if let Some(v) = value {
                let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                e.encode_gauge(&v)?;
            }
        }
        if let Some(v) = s.start_time_seconds {
            let mut e = encoder.encode_descriptor(
                "process_start_time_seconds",
                "When the process started, in Unix seconds",
                None,
                MetricType::Gauge,
            )?;
            e.encode_gauge(&v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as a process can name itself.
        let stat = "4242 (port cullis) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 150 0 0 20 0 \
                    7 0 5000 123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let s = parse_stat(stat, 100.0, 4096, Some(1_700_000_000));
        assert_eq!(s.cpu_seconds, Some(4.0));
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.start_time_seconds, Some(1_700_000_050.0));
        assert_eq!(s.virtual_bytes, Some(123_456_789));
        assert_eq!(s.resident_bytes, Some(300 * 4096));
    }

    #[test]
    fn garbage_gives_nothing_rather_than_zeros() {
        assert_eq!(parse_stat("", 100.0, 4096, None), Sample::default());
        assert_eq!(parse_stat("1 (x) S", 100.0, 4096, None), Sample::default());
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            max_open_files(
                "Max open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
    }

    #[test]
    fn this_process_reads() {
        let s = Sample::read();
        assert!(s.cpu_seconds.is_some_and(|v| v >= 0.0), "{s:?}");
        assert!(s.resident_bytes.is_some_and(|v| v > 0), "{s:?}");
        assert!(s.open_fds.is_some_and(|v| v > 0), "{s:?}");
        assert!(s.threads.is_some_and(|v| v > 0), "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0 * 365.0),
            "{s:?}"
        );
    }
}
