//! The standard `process_*` metrics, read from `/proc/self` at each scrape (as the official
//! clients do): CPU time, resident and virtual memory, open and maximum file descriptors, and
//! the start time. Off Linux, or where `/proc` is not mounted, the metrics that cannot be
//! read are left out rather than reported as zero.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A collector of the `process_*` metrics of this process.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What `/proc/self/stat` says, in the units it says it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    utime: u64,
    stime: u64,
    /// Start time, in clock ticks since boot.
    starttime: u64,
    /// Virtual memory size, in bytes.
    vsize: u64,
    /// Resident set size, in pages.
    rss: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold
/// spaces or parentheses itself, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss: field(24)?,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn open_fds() -> Option<i64> {
    let n = fs::read_dir("/proc/self/fd").ok()?.count();
    i64::try_from(n).ok()
}

fn max_fds() -> Option<i64> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    // `None` is "unlimited": no number to report.
    limit.current.and_then(|n| i64::try_from(n).ok())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: ConstGauge<f64>,
) -> Result<(), std::fmt::Error> {
    value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)
}

fn int_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let value = ConstGauge::new(value);
    value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t));
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        if let Some(s) = stat.filter(|_| ticks > 0.0) {
            // Registered without `_total`: the encoder appends it to counters.
            let cpu = ConstCounter::new((s.utime + s.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            let page = rustix::param::page_size() as i64;
            int_gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (s.rss as i64).saturating_mul(page),
            )?;
            int_gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.vsize as i64,
            )?;
            let boot = fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_boot_time(&t));
            if let Some(boot) = boot {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    ConstGauge::new(boot as f64 + s.starttime as f64 / ticks),
                )?;
            }
        }
        if let Some(n) = open_fds() {
            int_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                n,
            )?;
        }
        if let Some(n) = max_fds() {
            int_gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                n,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let text = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 9 0 \
                    12345 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 150,
                stime: 25,
                starttime: 12345,
                vsize: 987654321,
                rss: 2048,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        let stat = parse_stat(&fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        assert!(stat.rss > 0 && stat.vsize > 0);
        let boot = parse_boot_time(&fs::read_to_string("/proc/stat").unwrap()).unwrap();
        assert!(boot > 1_500_000_000, "{boot}");
        assert!(open_fds().unwrap() >= 3);
        assert!(max_fds().unwrap() >= open_fds().unwrap());
    }
}
