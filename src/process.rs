//! Processes, as tests and benchmarks see them from the outside.

/// The child processes of `pid` (the executors of a local driver), read from `/proc`, sorted.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so parse after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out.sort();
    out
}

/// The executors' peak RSS in MiB that `sluice run` prints with each committed epoch (`peak
/// RSS N MiB`): the largest, or 0 when the text has none.
pub fn summary_peak_rss_mib(stderr: &str) -> u64 {
    stderr
        .split("peak RSS ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// CPU time (user + system) of this process's waited-for children so far, with their own
/// waited-for children (what `getrusage(RUSAGE_CHILDREN)` counts): around a `sluice run`, the
/// driver's and its executors'.
pub fn children_cpu() -> std::time::Duration {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
