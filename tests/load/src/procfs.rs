//! CPU time and memory of a process, from /proc (Linux).

use anyhow::Context;

/// Clock ticks per second for /proc/*/stat times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn stat_path(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    }
}

/// utime + stime of a process (all its threads), in seconds; `None` is this process.
pub fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = stat_path(pid);
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&s)
        .map(|t| t as f64 / clk_tck())
        .with_context(|| format!("parsing {path}"))
}

/// utime + stime (fields 14 and 15) in ticks; the command name in field 2
/// may hold spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Mem {
    pub vm_rss_kib: u64,
    pub vm_hwm_kib: u64,
}

pub fn mem(pid: u32) -> anyhow::Result<Mem> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_status(&s))
}

pub fn parse_status(s: &str) -> Mem {
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_ascii_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        vm_rss_kib: field("VmRSS:"),
        vm_hwm_kib: field("VmHWM:"),
    }
}

/// Raises this process's open-file limit to fit `want` descriptors (as far
/// as allowed); returns the soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// Cores a process used between consecutive readings of its CPU time,
/// each reading `(seconds since the first, CPU seconds)`: 1.0 is one core
/// busy the whole interval. `None` for an interval under a tenth of a
/// second (two readings close together after a stall of the harness):
/// /proc counts in 10 ms steps, too coarse to divide by so little time.
pub fn cores_between(readings: &[(f64, f64)]) -> Vec<Option<f64>> {
    readings
        .windows(2)
        .map(|w| {
            let dt = w[1].0 - w[0].0;
            (dt >= 0.1).then(|| (w[1].1 - w[0].1) / dt)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_between_readings_are_cpu_over_wall_time() {
        let r = [(0.0, 10.0), (1.0, 10.8), (2.0, 11.8), (2.5, 12.0), (2.5001, 12.01)];
        let cores = cores_between(&r);
        assert_eq!(cores.len(), 4);
        assert!((cores[0].unwrap() - 0.8).abs() < 1e-9, "{cores:?}");
        assert!((cores[1].unwrap() - 1.0).abs() < 1e-9, "{cores:?}");
        assert!((cores[2].unwrap() - 0.4).abs() < 1e-9, "{cores:?}");
        // Readings a moment apart (the harness stalled past a second):
        // no figure, rather than 0 or one tick divided by 100 µs.
        assert_eq!(cores[3], None);
        assert!(cores_between(&r[..1]).is_empty());
    }

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let m = parse_status("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n");
        assert_eq!((m.vm_rss_kib, m.vm_hwm_kib), (1024, 2048));
    }

    #[test]
    fn own_cpu_time_grows_while_working() {
        let before = cpu_seconds(None).unwrap();
        // Spin until the clock-tick counter moves (at most a few ticks).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(None).unwrap() <= before && start.elapsed() < std::time::Duration::from_secs(5) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(
            cpu_seconds(None).unwrap() > before,
            "5 s of spinning did not show in /proc/self/stat"
        );
    }
}
