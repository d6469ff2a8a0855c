//! Time as the engine sees it: a timestamp passed in by the caller, never read from a clock here.

/// Nanoseconds since an arbitrary epoch chosen by whoever drives the engine (a monotonic clock in
/// the daemon, the capture's timestamps in replay, a virtual clock in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

const NS: u64 = 1_000_000_000;

impl Timestamp {
    /// A timestamp `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs * NS)
    }

    /// A timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms * 1_000_000)
    }

    /// This time plus `secs` seconds.
    #[inline]
    pub fn plus_secs(self, secs: u32) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::from(secs) * NS))
    }

    /// Nanoseconds from `earlier` to `self` (zero if `earlier` is later).
    #[inline]
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Whole seconds left until `self` as seen at `now`, as the kernel prints a timeout: time has
    /// always passed since the last refresh, so exactly N seconds left prints as N-1.
    pub fn secs_left(self, now: Timestamp) -> u64 {
        self.0.saturating_sub(now.0).saturating_sub(1) / NS
    }
}
