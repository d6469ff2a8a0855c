//! Timeout values: per-protocol defaults, and the slot layout shared with named policies.
//!
//! Values are seconds in `AtomicU32` slots so that the control plane can change them in place
//! (cttimeout's `DEFAULT_SET`, a policy `REPLACE`) while workers read them per packet with a relaxed
//! load: a change is seen at each connection's next packet, never retroactively, as in Linux.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::conntrack::l4::Proto;

/// Slots per protocol: enough for TCP's 12 (10 states + RETRANS + UNACK).
pub const MAX_SLOTS: usize = 12;

/// One protocol's timeout values, in seconds, indexed by the tracker's timeout slot.
#[derive(Debug)]
pub struct Values {
    slots: [AtomicU32; MAX_SLOTS],
}

impl Values {
    /// Values initialised from `init` (missing slots are zero).
    pub fn new(init: &[u32]) -> Values {
        let v = Values { slots: std::array::from_fn(|_| AtomicU32::new(0)) };
        v.set_all(init);
        v
    }

    /// The value of slot `i`, in seconds.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        self.slots[i].load(Ordering::Relaxed)
    }

    /// Sets slot `i`.
    pub fn set(&self, i: usize, secs: u32) {
        self.slots[i].store(secs, Ordering::Relaxed);
    }

    /// Sets the first `init.len()` slots.
    pub fn set_all(&self, init: &[u32]) {
        for (i, &s) in init.iter().enumerate() {
            self.set(i, s);
        }
    }

    /// A copy of the first `n` slots.
    pub fn snapshot(&self, n: usize) -> Vec<u32> {
        (0..n).map(|i| self.get(i)).collect()
    }
}

/// The per-protocol defaults used by connections without a policy (the kernel's per-netns
/// `nf_*_pernet` timeouts, shown in `/proc/sys/net/netfilter/`).
#[derive(Debug)]
pub struct Defaults {
    by_proto: [Values; Proto::COUNT],
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { by_proto: std::array::from_fn(|i| Values::new(Proto::ALL[i].default_timeouts())) }
    }
}

impl Defaults {
    /// The values of protocol `p`.
    #[inline]
    pub fn of(&self, p: Proto) -> &Values {
        &self.by_proto[p as usize]
    }
}

/// A named timeout policy (cttimeout object): a name, the protocols it applies to, and its values.
///
/// Connections hold an `Arc<Policy>` and read `values` at each packet, so a replace (which writes
/// the values in place) is seen by every connection using the policy at its next packet.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    /// The L3 protocol number as cttimeout carries it (`AF_INET` 2, `AF_INET6` 10).
    pub l3num: u16,
    pub proto: Proto,
    pub values: Values,
}
