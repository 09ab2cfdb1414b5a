//! What the operating system allows this process: its limit on memory mappings, and how many
//! live instances fit under it.

/// The value Elasticsearch and others ask for.
const RECOMMENDED_MAX_MAP_COUNT: u64 = 262_144;

/// The configured capacity, lowered if the kernel's `vm.max_map_count` could not hold that many
/// live instances at `per_task` mappings each (as measured by the sandbox at start); says so,
/// and how to raise the limit, as Elasticsearch does.
pub fn effective_capacity(configured: u32, per_task: u64) -> u32 {
    let (Some(max), Some(in_use)) = (max_map_count(), map_count()) else {
        return configured;
    };
    match instances_within_map_count(max, in_use, per_task) {
        Some(fits) if fits < u64::from(configured) => {
            tracing::warn!(
                vm.max_map_count = max,
                mappings_in_use = in_use,
                mappings_per_task = per_task,
                configured,
                capacity = fits,
                "vm.max_map_count is too low for the configured capacity; capacity lowered. \
                 Raise it with `sudo sysctl -w vm.max_map_count={RECOMMENDED_MAX_MAP_COUNT}` \
                 (persist it in /etc/sysctl.d/) and restart"
            );
            fits as u32
        }
        _ => {
            tracing::info!(
                vm.max_map_count = max,
                mappings_in_use = in_use,
                mappings_per_task = per_task,
                capacity = configured,
                "capacity"
            );
            configured
        }
    }
}

/// Where Linux keeps the per-process limit on memory mappings.
const MAX_MAP_COUNT_PATH: &str = "/proc/sys/vm/max_map_count";

/// Mappings kept free for everything else the process maps: thread stacks, the allocator's
/// arenas, compiled code, sockets.
const MAP_HEADROOM: u64 = 4096;

/// The kernel's limit on this process's memory mappings, if it can be read.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string(MAX_MAP_COUNT_PATH)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many memory mappings this process holds now, if it can tell.
pub fn map_count() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// How many live instances fit under `max_map_count` when each costs `per_instance` mappings
/// beyond the `in_use` ones the process holds already. `None` when mappings do not limit it.
pub fn instances_within_map_count(
    max_map_count: u64,
    in_use: u64,
    per_instance: u64,
) -> Option<u64> {
    (per_instance > 0).then(|| max_map_count.saturating_sub(in_use + MAP_HEADROOM) / per_instance)
}

/// File descriptors kept for everything but client connections: the store's files, the event
/// loop, module files being read, connections being refused.
const FD_RESERVE: u64 = 256;

/// Raises this process's soft limit on open files to its hard limit, as Go's runtime and most
/// servers do (the soft limit is often 1024, a relic of `select`), and returns the soft limit
/// now in force, if it can be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    Some(limit.rlim_cur)
}

/// The configured cap on open HTTP connections, lowered if the open-file limit (raised first,
/// see [`raise_open_file_limit`]) could not hold that many beside what the host itself keeps
/// open; says so, and how to raise the limit.
pub fn effective_max_connections(configured: usize) -> usize {
    let Some(open_files) = raise_open_file_limit() else {
        return configured;
    };
    let fits = usize::try_from(open_files.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX);
    if fits < configured {
        tracing::warn!(
            open_files,
            configured,
            max_connections = fits,
            "the open-file limit is too low for --max-connections; lowered. Raise it with \
             `ulimit -n` (or LimitNOFILE= in a systemd unit) and restart"
        );
        fits
    } else {
        configured
    }
}

/// Gives the calling thread the niceness `nice` (0 to 19: the higher, the sooner it yields the
/// CPU to threads of lower niceness). On Linux a thread's niceness is its own, so this leaves
/// the process's other threads as they are. Raising one's own niceness needs no privilege.
pub fn set_thread_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        // SAFETY: setpriority reads only its arguments; PRIO_PROCESS with a thread id is
        // that thread on Linux.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "could not lower a guest thread's priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_count_limit() {
        assert_eq!(instances_within_map_count(65_530, 1_000, 0), None);
        assert_eq!(instances_within_map_count(65_530, 1_434, 6), Some(10_000));
        assert_eq!(instances_within_map_count(1_000, 2_000, 2), Some(0));
    }
}
