//! Server (and load generator) resource use read from `/proc`, so any
//! lookupd, whatever its language, can be measured by PID alone.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

/// One reading of a process's CPU time and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// User + system CPU time consumed so far, in seconds.
    pub cpu_s: f64,
    /// The system (kernel) part of `cpu_s`.
    pub system_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`,
/// which is 100 on every Linux this tool is likely to meet).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// (user, system) CPU ticks from the text of `/proc/<pid>/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// A `VmRSS:`-style field (in kB) from the text of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads the CPU time and memory of process `pid` ("self" for this one).
pub fn sample(pid: &str) -> Result<ProcSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    let (user, system) = parse_stat_cpu_ticks(&stat).ok_or("unparseable /proc stat")?;
    Ok(ProcSample {
        cpu_s: (user + system) as f64 / clock_ticks(),
        system_s: system as f64 / clock_ticks(),
        rss_kib: parse_status_kib(&status, "VmRSS:").unwrap_or(0),
        peak_rss_kib: parse_status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// Open file descriptors of process `pid` (the entries of `/proc/PID/fd`).
pub fn open_fds(pid: &str) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

/// Resource use of a process over one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcDelta {
    /// CPU seconds (user + system) consumed during the phase.
    pub cpu_s: f64,
    /// The system (kernel) part of `cpu_s`: where a server's time goes
    /// when its own code is cheap (socket calls, and the wake-ups of the
    /// peers it answers).
    pub system_s: f64,
    /// CPU used as a fraction of one core (1.0 = one core fully busy).
    pub cores: f64,
    /// RSS at the end of the phase, KiB.
    pub rss_end_kib: u64,
    /// Peak RSS at the end of the phase, KiB.
    pub peak_rss_kib: u64,
}

/// Measures a process between [`Probe::start`] and [`Probe::finish`].
pub struct Probe {
    pid: String,
    start: Option<ProcSample>,
    at: std::time::Instant,
}

impl Probe {
    pub fn start(pid: &str) -> Probe {
        Probe {
            pid: pid.to_string(),
            start: sample(pid).ok(),
            at: std::time::Instant::now(),
        }
    }

    /// The figures since `start`, or None if the process could not be read.
    pub fn finish(&self) -> Option<ProcDelta> {
        let start = self.start?;
        let end = sample(&self.pid).ok()?;
        let wall = self.at.elapsed().max(Duration::from_millis(1));
        let cpu_s = (end.cpu_s - start.cpu_s).max(0.0);
        Some(ProcDelta {
            cpu_s,
            system_s: (end.system_s - start.system_s).max(0.0),
            cores: cpu_s / wall.as_secs_f64(),
            rss_end_kib: end.rss_kib,
            peak_rss_kib: end.peak_rss_kib,
        })
    }
}

/// Waits until process `pid` is idle (under 5% of a core over the last
/// second) or `limit` passes; returns the wall time waited, the CPU time it
/// used meanwhile, and whether it went idle. Used to see how long a server
/// keeps working after the fleet disconnects, and so that the next phase
/// does not measure against a server still busy cleaning up.
pub async fn wait_idle(pid: &str, limit: Duration) -> Option<(f64, f64, bool)> {
    let start = std::time::Instant::now();
    let first = sample(pid).ok()?.cpu_s;
    let mut window: std::collections::VecDeque<(std::time::Instant, f64)> = Default::default();
    window.push_back((start, first));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = std::time::Instant::now();
        let Ok(s) = sample(pid) else {
            // The process is gone: it certainly is not busy any more.
            let last = window.back().map_or(first, |w| w.1);
            return Some((start.elapsed().as_secs_f64(), last - first, true));
        };
        window.push_back((now, s.cpu_s));
        while window.len() > 2 && now.duration_since(window[1].0) >= Duration::from_secs(1) {
            window.pop_front();
        }
        let (t0, c0) = window[0];
        let span = now.duration_since(t0);
        // CPU time ticks every 10 ms: judge over a full second.
        if span >= Duration::from_secs(1) && (s.cpu_s - c0) / span.as_secs_f64() < 0.05 {
            // Idle since the start of that quiet second.
            return Some((t0.duration_since(start).as_secs_f64(), c0 - first, true));
        }
        if start.elapsed() >= limit {
            return Some((start.elapsed().as_secs_f64(), s.cpu_s - first, false));
        }
    }
}

/// CPU seconds of the whole machine since boot, from `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MachineCpu {
    /// Time spent running processes (user, nice, system, steal).
    pub tasks_s: f64,
    /// Time spent in interrupts and softirqs: on loopback that is mostly
    /// the kernel moving the benchmark's own packets, charged to no process.
    pub interrupts_s: f64,
    /// Everything, idle included.
    pub total_s: f64,
}

/// Parses the first (`cpu`) line of the text of `/proc/stat`.
pub fn parse_machine_cpu(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal ...
    let tasks = v[0] + v[1] + v[2] + v[7];
    let interrupts = v[5] + v[6];
    let total: u64 = v.iter().take(8).sum();
    let t = clock_ticks();
    Some(MachineCpu {
        tasks_s: tasks as f64 / t,
        interrupts_s: interrupts as f64 / t,
        total_s: total as f64 / t,
    })
}

/// How busy the whole machine was over a phase, in cores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MachineUse {
    pub cores: f64,
    /// Cores busy running processes (any process).
    pub tasks_cores: f64,
    /// Cores busy in interrupts and softirqs.
    pub interrupt_cores: f64,
}

/// Measures how busy the whole machine is over a phase, so that a run
/// disturbed by other work on the machine can be told apart.
pub struct MachineProbe {
    start: Option<MachineCpu>,
    at: std::time::Instant,
}

impl MachineProbe {
    pub fn start() -> Self {
        MachineProbe {
            start: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_machine_cpu(&s)),
            at: std::time::Instant::now(),
        }
    }

    /// The machine's use since `start`; None for phases too short to say
    /// (the counters tick every 10 ms).
    pub fn finish(&self) -> Option<MachineUse> {
        if self.at.elapsed() < Duration::from_millis(500) {
            return None;
        }
        let a = self.start?;
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let b = parse_machine_cpu(&stat)?;
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count()
            .max(1) as f64;
        let total = (b.total_s - a.total_s).max(1e-9);
        Some(MachineUse {
            cores,
            tasks_cores: (b.tasks_s - a.tasks_s) / total * cores,
            interrupt_cores: (b.interrupts_s - a.interrupts_s) / total * cores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some((250, 50)));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_fields() {
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn parses_machine_cpu() {
        let stat = "cpu  100 0 50 800 50 2 10 3 0 0\ncpu0 50 0 25 400 25 0 5 0 0 0\n";
        let m = parse_machine_cpu(stat).unwrap();
        let t = clock_ticks();
        assert!((m.tasks_s - 153.0 / t).abs() < 1e-9);
        assert!((m.interrupts_s - 12.0 / t).abs() < 1e-9);
        assert!((m.total_s - 1015.0 / t).abs() < 1e-9);
        assert!(parse_machine_cpu("intr 1 2 3").is_none());
    }

    #[test]
    fn samples_itself() {
        let s = sample("self").unwrap();
        assert!(s.rss_kib > 0);
        // stdin, stdout, stderr at least (other tests open more meanwhile).
        assert!(open_fds("self").unwrap() >= 3);
        assert_eq!(open_fds("no-such-process"), None);
    }
}
