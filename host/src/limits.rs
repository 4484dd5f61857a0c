//! Operating-system limits a host runs into before its own: open files
//! (one per connection) and memory mappings (a few per room instance).
//! Checked at start-up, so the operator reads about them in the log
//! instead of meeting refused connections or failed room creations later.

/// Memory mappings each instance slot of the pool takes from start-up:
/// its fiber stack and the stack's guard page. Measured with
/// `/proc/<pid>/maps` (40,077 mappings for 20,000 slots).
pub const MAPPINGS_PER_SLOT: u64 = 2;

/// Memory mappings a live instance adds: its linear memories (the guest's
/// and the WASI adapter's) made accessible inside their slots. Measured:
/// 10,000 rooms added 40,002 mappings.
pub const MAPPINGS_PER_INSTANCE: u64 = 4;

/// Everything else a host maps (code, heap, libraries), with room to spare.
const MAPPINGS_BASE: u64 = 10_000;

/// Raises the soft open-file limit towards `want` (never above the hard
/// limit); returns the limit in force.
pub fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
        let target = want.min(hard);
        if target > soft {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return target;
            }
        }
        soft
    }
}

/// A number the kernel shows in a `/proc/sys` file, if readable.
fn sysctl<T: std::str::FromStr>(path: &str) -> Option<T> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The kernel's limit on memory mappings per process, if readable.
pub fn max_map_count() -> Option<u64> {
    sysctl("/proc/sys/vm/max_map_count")
}

/// The kernel's cap on a listening socket's backlog, if readable.
pub fn somaxconn() -> Option<u32> {
    sysctl("/proc/sys/net/core/somaxconn")
}

/// Mappings a host with `instances` instance slots may need at most.
pub fn mappings_needed(instances: u64) -> u64 {
    instances * (MAPPINGS_PER_SLOT + MAPPINGS_PER_INSTANCE) + MAPPINGS_BASE
}

/// Live instances a host with `slots` instance slots can create under a
/// mapping limit of `max`.
pub fn instances_within(max: u64, slots: u64) -> u64 {
    max.saturating_sub(slots * MAPPINGS_PER_SLOT + MAPPINGS_BASE) / MAPPINGS_PER_INSTANCE
}

/// Raises the open-file limit for `connections` and logs a warning for each
/// limit that is too low for the configuration.
pub fn check(connections: usize, instances: u32, backlog: u32) {
    // Listeners, the admin API, module files, the database: some spare.
    let want = connections as u64 + 256;
    let files = raise_open_files(want);
    if files < want {
        tracing::warn!(
            open_files = files,
            max_connections = connections,
            "the open-file limit is below net.max_connections; connections beyond it will be refused \
             (raise LimitNOFILE in the systemd unit or `ulimit -Hn`)"
        );
    }
    if let Some(cap) = somaxconn()
        && cap < backlog
    {
        tracing::warn!(
            somaxconn = cap,
            listen_backlog = backlog,
            "net.core.somaxconn caps the listeners' backlog below net.listen_backlog: a burst of connections \
             beyond it is dropped by the kernel (`sysctl -w net.core.somaxconn={backlog}`, and persist it with deploy/sysctl.conf)"
        );
    }
    let needed = mappings_needed(u64::from(instances));
    if let Some(max) = max_map_count()
        && max < needed
    {
        tracing::warn!(
            vm_max_map_count = max,
            needed,
            max_instances = instances,
            "vm.max_map_count is too low for sandbox.max_instances: creating instances will fail beyond about {} \
             (rooms, and the second instance each room needs during a hot swap; set `sysctl vm.max_map_count={}`, \
             see deploy/sysctl.conf, or lower sandbox.max_instances)",
            instances_within(max, u64::from(instances)),
            needed.next_power_of_two()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft_and_hard() -> (u64, u64) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes `lim`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        (lim.rlim_cur, lim.rlim_max)
    }

    #[test]
    fn the_open_file_limit_is_raised_but_never_lowered_or_beyond_the_hard_limit() {
        let (soft, hard) = soft_and_hard();
        assert_eq!(raise_open_files(0), soft, "asking for less changes nothing");
        assert_eq!(soft_and_hard().0, soft);
        if soft < hard {
            assert_eq!(raise_open_files(soft + 1), soft + 1, "raised as asked");
            assert_eq!(soft_and_hard().0, soft + 1, "and in force");
        }
        assert_eq!(raise_open_files(u64::MAX), hard, "never beyond the hard limit");
        assert_eq!(soft_and_hard().0, hard);
    }

    #[test]
    fn mappings_grow_with_the_pool() {
        assert!(
            mappings_needed(20_000) > 65_530,
            "the default pool needs more than Linux's default"
        );
        assert!(mappings_needed(2_000) < 65_530);
        // What was measured: the default pool under Linux's default limit
        // holds about 3,900 more instances; raised to 262,144, all of them.
        assert_eq!(instances_within(65_530, 20_000), 3_882);
        assert!(instances_within(262_144, 20_000) >= 20_000);
        assert!(instances_within(mappings_needed(5_000), 5_000) >= 5_000);
    }
}
