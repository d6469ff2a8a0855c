//! The engine's only `unsafe` code: hints to the CPU. (Sockets, rings and syscalls will live in
//! `io`, behind one syscall helper, when the datapath lands.)
#![allow(unsafe_code)]

/// Asks the CPU to bring the cache line holding `p` into all cache levels.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is only a hint: it never faults and has no architectural effect, so
    // any address (even a dangling one) is sound. SSE, which it needs, is part of the x86_64
    // baseline every target of ours has.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
