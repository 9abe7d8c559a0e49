//! Resident memory of this process, from `/proc/self/statm` (Linux).

/// Resident set size in bytes, or `None` where `/proc` is unavailable.
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The page size `/proc/self/statm` counts in: the kernel page size from
/// `/proc/self/smaps`, else 4 KiB.
fn page_size() -> usize {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|smaps| {
            let line = smaps.lines().find(|line| line.starts_with("KernelPageSize:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok().map(|kib| kib * 1024)
        })
        .unwrap_or(4096)
}
