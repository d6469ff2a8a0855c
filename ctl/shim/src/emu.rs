//! The shim's logic, in safe code: which descriptors are ours, their netlink address, and the
//! few private messages exchanged with the daemon.
//!
//! The private messages are `proto::private`'s (subsystem `0xf0`), shared with the daemon: the
//! daemon greets every connection with `HELLO` carrying the port id; an explicit `bind` sends `BIND`
//! and waits for its ack.

use std::sync::atomic::{AtomicU64, Ordering};

use proto::netlink::Header;
use proto::private;

/// Descriptors the table covers; a netlink socket emulated on a higher one is refused (`EMFILE`).
pub(crate) const MAX_FDS: usize = 65536;

const OURS: u64 = 1 << 63;
/// The port id is fixed: bound explicitly, or used by traffic (a later bind to another id is
/// `EINVAL`, as for an autobound netlink socket).
const FIXED: u64 = 1 << 62;
/// Created as `SOCK_DGRAM` rather than `SOCK_RAW` (what `SO_TYPE` reports).
const DGRAM: u64 = 1 << 61;

static TABLE: [AtomicU64; MAX_FDS] = [const { AtomicU64::new(0) }; MAX_FDS];

/// What we know of one emulated netlink socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) portid: u32,
    pub(crate) fixed: bool,
    pub(crate) dgram: bool,
}

impl Slot {
    fn encode(self) -> u64 {
        OURS | u64::from(self.portid) | if self.fixed { FIXED } else { 0 } | if self.dgram { DGRAM } else { 0 }
    }

    fn decode(v: u64) -> Option<Slot> {
        (v & OURS != 0).then_some(Slot { portid: v as u32, fixed: v & FIXED != 0, dgram: v & DGRAM != 0 })
    }
}

fn index(fd: i32) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_FDS)
}

/// The slot of `fd` if it is one of our emulated sockets.
#[inline]
pub(crate) fn ours(fd: i32) -> Option<Slot> {
    Slot::decode(TABLE[index(fd)?].load(Ordering::Acquire))
}

/// Records `fd` as ours; false if it is beyond the table.
pub(crate) fn insert(fd: i32, slot: Slot) -> bool {
    match index(fd) {
        Some(i) => {
            TABLE[i].store(slot.encode(), Ordering::Release);
            true
        }
        None => false,
    }
}

/// Forgets `fd` (closed, or reused for something else).
#[inline]
pub(crate) fn forget(fd: i32) {
    if let Some(i) = index(fd) {
        if TABLE[i].load(Ordering::Relaxed) != 0 {
            TABLE[i].store(0, Ordering::Release);
        }
    }
}

/// `new` now refers to what `old` refers to (dup/dup2/dup3).
pub(crate) fn duplicate(old: i32, new: i32) {
    match ours(old) {
        Some(s) => {
            insert(new, s);
        }
        None => forget(new),
    }
}

/// Marks the port id of `fd` as fixed by traffic.
#[inline]
pub(crate) fn mark_used(fd: i32) {
    if let Some(i) = index(fd) {
        TABLE[i].fetch_or(FIXED, Ordering::AcqRel);
    }
}

/// Sets the port id of `fd` after a successful explicit bind.
pub(crate) fn set_portid(fd: i32, portid: u32) {
    if let Some(mut s) = ours(fd) {
        s.portid = portid;
        s.fixed = true;
        insert(fd, s);
    }
}

/// `AF_NETLINK`.
pub(crate) const AF_NETLINK: u16 = 16;
/// `sizeof(struct sockaddr_nl)`.
pub(crate) const SOCKADDR_NL_LEN: usize = 12;

/// `struct sockaddr_nl { nl_family, nl_pad, nl_pid, nl_groups }` as bytes.
pub(crate) fn sockaddr_nl(pid: u32, groups: u32) -> [u8; SOCKADDR_NL_LEN] {
    let mut b = [0u8; SOCKADDR_NL_LEN];
    b[..2].copy_from_slice(&AF_NETLINK.to_ne_bytes());
    b[4..8].copy_from_slice(&pid.to_ne_bytes());
    b[8..12].copy_from_slice(&groups.to_ne_bytes());
    b
}

/// `(nl_pid, nl_groups)` of a `bind` address, or the errno the kernel would give.
pub(crate) fn parse_bind_addr(b: &[u8]) -> Result<(u32, u32), i32> {
    if b.len() < SOCKADDR_NL_LEN || u16::from_ne_bytes([b[0], b[1]]) != AF_NETLINK {
        return Err(libc::EINVAL);
    }
    let pid = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
    let groups = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
    Ok((pid, groups))
}

/// Copies `src` into a caller's address buffer of `cap` bytes (truncating as the kernel does) and
/// returns the full length to report.
pub(crate) fn fill_addr(dst: &mut [u8], src: &[u8]) -> usize {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
    src.len()
}

/// Sequence number of the shim's bind requests.
pub(crate) const BIND_SEQ: u32 = 0x6677_0001;

/// The port id announced by the daemon's greeting.
pub(crate) use private::parse_hello;

/// A `BIND` request for `portid`.
pub(crate) fn bind_request(portid: u32) -> Vec<u8> {
    private::bind_request(BIND_SEQ, portid)
}

/// The errno (0 = ack) of the daemon's answer to our bind request, if `b` is that answer.
pub(crate) fn parse_bind_answer(b: &[u8]) -> Option<i32> {
    if Header::parse(b).ok()?.seq != BIND_SEQ {
        return None;
    }
    private::parse_error(b).map(|(errno, _)| errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_tracks_our_descriptors() {
        assert_eq!(ours(40), None);
        assert!(insert(40, Slot { portid: 7, fixed: false, dgram: false }));
        assert_eq!(ours(40), Some(Slot { portid: 7, fixed: false, dgram: false }));
        mark_used(40);
        assert!(ours(40).unwrap().fixed);
        duplicate(40, 41);
        assert_eq!(ours(41).unwrap().portid, 7);
        set_portid(41, 9);
        assert_eq!(ours(41).unwrap().portid, 9);
        forget(40);
        duplicate(40, 41);
        assert_eq!((ours(40), ours(41)), (None, None));
        assert!(!insert(MAX_FDS as i32, Slot { portid: 1, fixed: false, dgram: false }));
        assert_eq!(ours(-1), None);
        let s = Slot { portid: u32::MAX, fixed: true, dgram: true };
        assert_eq!(Slot::decode(s.encode()), Some(s));
    }

    #[test]
    fn addresses() {
        let a = sockaddr_nl(0x1234, 0);
        assert_eq!(parse_bind_addr(&a), Ok((0x1234, 0)));
        assert_eq!(parse_bind_addr(&a[..8]), Err(libc::EINVAL));
        let mut inet = a;
        inet[0] = 2;
        assert_eq!(parse_bind_addr(&inet), Err(libc::EINVAL));
        let mut small = [0u8; 4];
        assert_eq!(fill_addr(&mut small, &a), 12);
        assert_eq!(small, a[..4]);
    }

    #[test]
    fn private_messages() {
        // HELLO for port id 0xfffff000, as the daemon sends it.
        let hello = private::hello(0xfffff000);
        assert_eq!(parse_hello(&hello), Some(0xfffff000));
        assert_eq!(parse_hello(&hello[..20]), None);
        let b = bind_request(5);
        assert_eq!(b.len(), 28);
        let err = private::error(&Header::parse(&b).unwrap(), 0, proto::Errno(libc::EADDRINUSE), None);
        assert_eq!(parse_bind_answer(&err), Some(libc::EADDRINUSE));
        assert_eq!(parse_bind_answer(&hello), None);
    }
}
