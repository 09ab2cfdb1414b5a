//! What Linux's /proc says about memory and CPU.

/// This process's memory, from /proc/self/status and /proc/self/maps.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub rss_bytes: u64,
    /// Page tables: memory the kernel spends on this process that RSS does not show.
    pub pte_bytes: u64,
    pub maps: u64,
}

impl Status {
    pub fn read() -> anyhow::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        let maps = std::fs::read("/proc/self/maps")?
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        Ok(Self {
            rss_bytes: field("VmRSS:"),
            pte_bytes: field("VmPTE:"),
            maps,
        })
    }
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = Stat::of(pid)?;
    Some((stat.utime + stat.stime) as f64 / clock_ticks_per_sec())
}

/// CPU time (user + system) of a server made of several processes, in seconds: the process's
/// own, its ended children's (counted into it when it reaped them) and its live children's.
/// PostgreSQL is such a server: a postmaster, and a backend per connection that comes and goes.
pub fn tree_cpu_secs(pid: u32) -> Option<f64> {
    let parent = Stat::of(pid)?;
    let mut ticks = parent.utime + parent.stime + parent.cutime + parent.cstime;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
            .and_then(Stat::of)
        else {
            continue;
        };
        if child.ppid == pid {
            ticks += child.utime + child.stime + child.cutime + child.cstime;
        }
    }
    Some(ticks as f64 / clock_ticks_per_sec())
}

/// CPU time (user + system) of the threads of process `pid` whose name (`comm`, at most 15
/// bytes) starts with `prefix`, in seconds: a store's writer thread, say. `None` when the
/// process is gone or has no such thread.
pub fn threads_cpu_secs(pid: u32, prefix: &str) -> Option<f64> {
    let mut ticks = 0;
    let mut found = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = entry.path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let Some(stat) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|text| Stat::parse(&text))
        else {
            continue;
        };
        ticks += stat.utime + stat.stime;
        found = true;
    }
    found.then(|| ticks as f64 / clock_ticks_per_sec())
}

/// What /proc/PID/stat says of a process's parent and CPU time, in clock ticks.
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    /// Of its children it has waited for.
    cutime: u64,
    cstime: u64,
}

impl Stat {
    fn of(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// A process's or a thread's `stat` line.
    fn parse(stat: &str) -> Option<Self> {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field n of the whole line is field n - 3 after the name: ppid is 4, utime, stime,
        // cutime and cstime are 14 to 17.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            ppid: u32::try_from(field(4)?).ok()?,
            utime: field(14)?,
            stime: field(15)?,
            cutime: field(16)?,
            cstime: field(17)?,
        })
    }
}

/// Linux reports CPU time in USER_HZ ticks, 100 a second on every mainstream configuration.
fn clock_ticks_per_sec() -> f64 {
    100.0
}

/// The machine's memory, as /proc/meminfo puts it.
pub fn mem_total() -> Option<String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
}

/// What another process holds, from /proc/PID: what a leak would make grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holdings {
    pub rss_bytes: u64,
    /// Open file descriptors: sockets, store files, pipes.
    pub fds: u64,
    pub threads: u64,
}

impl Holdings {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
        let count = |dir: &str| -> anyhow::Result<u64> {
            Ok(std::fs::read_dir(format!("/proc/{pid}/{dir}"))?.count() as u64)
        };
        Ok(Self {
            rss_bytes: rss_kib * 1024,
            fds: count("fd")?,
            threads: count("task")?,
        })
    }
}
