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

/// A connection: its tuple, status, counters, protocol state and timeout policy.
///
/// Only the original direction's tuple is kept: the reply tuple is always its inverse, because
/// ferrowall does no NAT and the table admits no other (ctnetlink refuses a reply tuple that is
/// not the inverse; a snapshot's is checked on restore). Not storing it keeps a connection on three
/// cache lines, which an established packet's lookup must bring in.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The tuple of the original direction; [`Conn::tuple`] gives either.
    pub orig: Tuple,
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
        Proto::of(self.orig.proto)
    }

    /// The tuple of direction `d`.
    #[inline]
    pub fn tuple(&self, d: Dir) -> Tuple {
        match d {
            Dir::Original => self.orig,
            Dir::Reply => self.reply(),
        }
    }

    /// The tuple of the reply direction: the original one inverted.
    pub fn reply(&self) -> Tuple {
        self.orig.invert().expect("a connection's tuple has an inverse (checked when it entered the table)")
    }

    /// The direction in which `t` is one of this connection's tuples (the original one first, for
    /// a tuple that is its own inverse), if it is.
    #[inline]
    pub fn dir_of(&self, t: &Tuple) -> Option<Dir> {
        if self.orig == *t {
            Some(Dir::Original)
        } else if t.answers(&self.orig) {
            Some(Dir::Reply)
        } else {
            None
        }
    }

    /// Counts one packet of `len` bytes in direction `d`.
    #[inline]
    pub(crate) fn account(&mut self, d: Dir, len: usize) {
        self.packets[d as usize] += 1;
        self.bytes[d as usize] += len as u64;
    }
}
