//! How much memory this machine has, so that a size param (draws, heads, widths, repeats)
//! is refused with an error naming it before a kind allocates, instead of the allocation
//! aborting the whole process.
//!
//! Validation (at plan time) compares a param's lower-bound estimate with the machine's
//! physical memory, which does not change between plans; a kind compares its estimate with the
//! memory available when it starts, on the machine that runs it.

/// Physical memory of this machine in bytes (`u64::MAX` when it cannot be read).
pub fn physical() -> u64 {
    // SAFETY: sysconf reads system constants; no pointers are involved.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        (pages as u64).saturating_mul(page as u64)
    } else {
        u64::MAX
    }
}

/// Memory available to a new allocation now: `MemAvailable` of `/proc/meminfo`, else
/// [`physical`].
pub fn available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(physical, |kb| kb.saturating_mul(1024))
}

/// `bytes` as GiB (or MiB) for a message.
pub fn human(bytes: f64) -> String {
    if bytes >= (1u64 << 50) as f64 {
        format!("{bytes:.1e} bytes")
    } else if bytes >= (1u64 << 40) as f64 {
        format!("{:.1} TiB", bytes / (1u64 << 40) as f64)
    } else if bytes >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", (bytes / (1u64 << 20) as f64).ceil())
    }
}

/// Fails when `bytes` (an estimate, computed in f64 so that it cannot overflow) exceed
/// `limit`: "`what` needs about N GiB, more than the M GiB of `whose`".
fn check_against(bytes: f64, what: &str, limit: u64, whose: &str) -> Result<(), String> {
    if bytes.is_finite() && bytes <= limit as f64 {
        Ok(())
    } else {
        Err(format!(
            "{what} needs about {}, more than the {} of {whose}",
            human(bytes),
            human(limit as f64)
        ))
    }
}

/// For validation: `bytes` must fit in this machine's physical memory.
pub fn fits_physical(bytes: f64, what: &str) -> Result<(), String> {
    check_against(bytes, what, physical(), "this machine's memory")
}

/// Before allocating: `bytes` must fit in the memory available now.
pub fn fits_available(bytes: f64, what: &str) -> Result<(), String> {
    check_against(bytes, what, available(), "memory available now")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_machine_are_refused_with_their_estimate() {
        assert!(physical() > 1 << 20 && available() <= physical());
        assert!(fits_physical(1024.0, "a small table").is_ok());
        let e = fits_physical(1e18, "1e14 draws").unwrap_err();
        assert!(
            e.starts_with("1e14 draws needs about") && e.contains("GiB"),
            "{e}"
        );
        assert!(fits_available(f64::INFINITY, "x").is_err());
        assert!(fits_available(f64::NAN, "x").is_err());
    }
}
