//! Time: the kernel's CLOCK_BOOTTIME stamps turned into wall-clock time, and the wall clock
//! now.

use crate::record::UnixNanos;

/// Converts kernel CLOCK_BOOTTIME stamps (bpf_ktime_get_boot_ns) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// CLOCK_REALTIME - CLOCK_BOOTTIME, in nanoseconds.
    offset_ns: i64,
}

fn now_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Wall-clock time now (CLOCK_REALTIME), as the clock rows are stamped with.
pub fn wall_now() -> UnixNanos {
    UnixNanos(now_ns(libc::CLOCK_REALTIME))
}

impl Clock {
    /// Measures the offset now. Cheap (vDSO); re-measured every drain so that wall-clock
    /// steps (NTP) show up in later rows.
    pub fn now() -> Self {
        let boot = now_ns(libc::CLOCK_BOOTTIME);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    pub fn wall(&self, boot_ns: u64) -> UnixNanos {
        UnixNanos(
            i64::try_from(boot_ns)
                .unwrap_or(i64::MAX)
                .saturating_add(self.offset_ns),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_boot_time_to_now() {
        let clock = Clock::now();
        let wall = clock.wall(now_ns(libc::CLOCK_BOOTTIME) as u64).0;
        let real = now_ns(libc::CLOCK_REALTIME);
        assert!((real - wall).abs() < 1_000_000_000, "{real} vs {wall}");
    }
}
