//! One tracked connection.

use std::sync::Arc;

use super::l4::{Proto, ProtoState};
use super::tuple::{Dir, Tuple};
use crate::clock::Timestamp;
use crate::timeouts::Policy;

/// Connection status bits, with the kernel's bit numbers (`enum ip_conntrack_status`) so that
/// ctnetlink can carry them unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status(pub u32);

impl Status {
    pub const EXPECTED: Status = Status(1 << 0);
    pub const SEEN_REPLY: Status = Status(1 << 1);
    pub const ASSURED: Status = Status(1 << 2);
    pub const CONFIRMED: Status = Status(1 << 3);
    pub const FIXED_TIMEOUT: Status = Status(1 << 10);

    /// Whether every bit of `s` is set.
    #[inline]
    pub fn contains(self, s: Status) -> bool {
        self.0 & s.0 == s.0
    }

    /// Sets the bits of `s`.
    #[inline]
    pub fn insert(&mut self, s: Status) {
        self.0 |= s.0;
    }
}

/// A connection: both tuples, status, counters, protocol state and timeout policy.
#[derive(Debug, Clone)]
pub struct Conn {
    /// `tuple[Dir::Original as usize]` and `tuple[Dir::Reply as usize]`.
    pub tuple: [Tuple; 2],
    pub status: Status,
    pub mark: u32,
    pub start: Timestamp,
    pub expires: Timestamp,
    /// Packets and bytes per direction.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub proto: ProtoState,
    /// The named timeout policy attached by a rule, if any; otherwise the defaults apply.
    pub policy: Option<Arc<Policy>>,
}

impl Conn {
    /// The tracker of this connection.
    #[inline]
    pub fn l4(&self) -> Proto {
        Proto::of(self.tuple[0].proto)
    }

    /// The tuple of direction `d`.
    #[inline]
    pub fn tuple(&self, d: Dir) -> &Tuple {
        &self.tuple[d as usize]
    }

    /// Counts one packet of `len` bytes in direction `d`.
    #[inline]
    pub(crate) fn account(&mut self, d: Dir, len: usize) {
        self.packets[d as usize] += 1;
        self.bytes[d as usize] += len as u64;
    }
}
