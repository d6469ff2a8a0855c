//! The shim's logic, in safe code: which descriptors are ours, their netlink address, and the
//! few private messages exchanged with the daemon.
//!
//! The private messages are `proto::private`'s (subsystem `0xf0`), shared with the daemon: the
//! daemon greets every connection with `HELLO` carrying the port id; an explicit `bind` sends `BIND`
//! and waits for its ack; a change of multicast groups (`bind` with `nl_groups`, a membership
//! option) sends `GROUPS` and waits for its ack; the daemon's `OVERRUN` notice (events were
//! dropped for this connection) becomes one `ENOBUFS` on a receive, unless `NETLINK_NO_ENOBUFS` is
//! set. A datagram that arrives while the shim waits for an ack (an event, when the groups change
//! while events flow) cannot be handed back to the program: it is dropped and the next receive
//! fails with `ENOBUFS`, as for any lost event.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

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
/// `NETLINK_NO_ENOBUFS` is set: overruns are not reported.
const NO_ENOBUFS: u64 = 1 << 60;
/// The next receive fails with `ENOBUFS` (datagrams were dropped while waiting for an ack).
const OVERRUN: u64 = 1 << 59;

static TABLE: [AtomicU64; MAX_FDS] = [const { AtomicU64::new(0) }; MAX_FDS];
/// The multicast groups joined, by descriptor (`nl_groups`: group `n` is bit `n - 1`).
static GROUPS: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];
/// By emulated descriptor: its shadow's descriptor + 1 (0: none). A shadow is a real
/// `NETLINK_NETFILTER` socket bound to the emulated socket's port id and otherwise unused, so that
/// the port id appears in `/proc/net/netlink` with an inode among the process's descriptors:
/// `conntrack -E` finds the name of the program that caused an event that way.
static SHADOW: [AtomicI32; MAX_FDS] = [const { AtomicI32::new(0) }; MAX_FDS];
/// By shadow descriptor: the emulated descriptor it shadows + 1 (0: not a shadow).
static SHADOWS: [AtomicI32; MAX_FDS] = [const { AtomicI32::new(0) }; MAX_FDS];

/// What we know of one emulated netlink socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) portid: u32,
    pub(crate) fixed: bool,
    pub(crate) dgram: bool,
    /// The multicast groups joined (`nl_groups`).
    pub(crate) groups: u32,
    /// `NETLINK_NO_ENOBUFS`.
    pub(crate) no_enobufs: bool,
}

impl Slot {
    /// A socket just created: port id `portid`, no groups, no options.
    pub(crate) fn new(portid: u32, dgram: bool) -> Slot {
        Slot { portid, fixed: false, dgram, groups: 0, no_enobufs: false }
    }

    fn encode(self) -> u64 {
        OURS | u64::from(self.portid)
            | if self.fixed { FIXED } else { 0 }
            | if self.dgram { DGRAM } else { 0 }
            | if self.no_enobufs { NO_ENOBUFS } else { 0 }
    }

    fn decode(v: u64, groups: u32) -> Option<Slot> {
        (v & OURS != 0).then_some(Slot {
            portid: v as u32,
            fixed: v & FIXED != 0,
            dgram: v & DGRAM != 0,
            groups,
            no_enobufs: v & NO_ENOBUFS != 0,
        })
    }
}

fn index(fd: i32) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_FDS)
}

/// The slot of `fd` if it is one of our emulated sockets.
#[inline]
pub(crate) fn ours(fd: i32) -> Option<Slot> {
    let i = index(fd)?;
    let v = TABLE[i].load(Ordering::Acquire);
    if v & OURS == 0 {
        return None;
    }
    Slot::decode(v, GROUPS[i].load(Ordering::Acquire))
}

/// Records `fd` as ours; false if it is beyond the table.
pub(crate) fn insert(fd: i32, slot: Slot) -> bool {
    match index(fd) {
        Some(i) => {
            GROUPS[i].store(slot.groups, Ordering::Release);
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
            GROUPS[i].store(0, Ordering::Release);
        }
    }
}

/// Records `shadow` as the shadow of emulated descriptor `fd`; false if either is beyond the
/// table.
pub(crate) fn set_shadow(fd: i32, shadow: i32) -> bool {
    match (index(fd), index(shadow)) {
        (Some(i), Some(j)) => {
            SHADOWS[j].store(fd + 1, Ordering::Release);
            SHADOW[i].store(shadow + 1, Ordering::Release);
            true
        }
        _ => false,
    }
}

/// The shadow of emulated descriptor `fd`, unlinked (for the caller to close).
pub(crate) fn take_shadow(fd: i32) -> Option<i32> {
    let i = index(fd)?;
    if SHADOW[i].load(Ordering::Relaxed) == 0 {
        return None;
    }
    let s = SHADOW[i].swap(0, Ordering::AcqRel) - 1;
    if s < 0 {
        return None;
    }
    if let Some(j) = index(s) {
        let _ = SHADOWS[j].compare_exchange(fd + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
    Some(s)
}

/// `fd` is being closed (or replaced) by the program: if it is a shadow, it shadows nothing any
/// more (so that its number, reused, is never closed as a shadow).
pub(crate) fn unlink_if_shadow(fd: i32) {
    let Some(j) = index(fd) else { return };
    if SHADOWS[j].load(Ordering::Relaxed) == 0 {
        return;
    }
    let owner = SHADOWS[j].swap(0, Ordering::AcqRel) - 1;
    if let Some(i) = index(owner) {
        let _ = SHADOW[i].compare_exchange(fd + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
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

/// Records the groups of `fd` after the daemon acknowledged a change.
pub(crate) fn set_groups(fd: i32, groups: u32) {
    if let Some(mut s) = ours(fd) {
        s.groups = groups;
        insert(fd, s);
    }
}

/// Sets or clears `NETLINK_NO_ENOBUFS` on `fd`.
pub(crate) fn set_no_enobufs(fd: i32, on: bool) {
    if let Some(mut s) = ours(fd) {
        s.no_enobufs = on;
        insert(fd, s);
    }
}

/// Makes the next receive on `fd` fail with `ENOBUFS`.
pub(crate) fn mark_overrun(fd: i32) {
    if let Some(i) = index(fd) {
        if TABLE[i].load(Ordering::Acquire) & OURS != 0 {
            TABLE[i].fetch_or(OVERRUN, Ordering::AcqRel);
        }
    }
}

/// Whether a receive on `fd` is to fail with `ENOBUFS` now (clearing the mark).
pub(crate) fn take_overrun(fd: i32) -> bool {
    match index(fd) {
        Some(i) if TABLE[i].load(Ordering::Relaxed) & OVERRUN != 0 => {
            TABLE[i].fetch_and(!OVERRUN, Ordering::AcqRel) & OVERRUN != 0
        }
        _ => false,
    }
}

/// Whether a received datagram whose first bytes are `head` is the daemon's overrun notice (its
/// `nlmsg_type` is enough, so that a truncated read still counts).
pub(crate) fn is_overrun_notice(head: &[u8]) -> bool {
    head.len() >= 6 && u16::from_ne_bytes([head[4], head[5]]) == private::nlmsg_type(private::MSG_OVERRUN)
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
/// Sequence number of the shim's groups requests.
pub(crate) const GROUPS_SEQ: u32 = 0x6677_0002;

/// The port id announced by the daemon's greeting.
pub(crate) use private::parse_hello;

/// A `BIND` request for `portid`.
pub(crate) fn bind_request(portid: u32) -> Vec<u8> {
    private::bind_request(BIND_SEQ, portid)
}

/// A `GROUPS` request: `op` is one of `proto::private::GROUPS_*`.
pub(crate) fn groups_request(op: u8, groups: u32) -> Vec<u8> {
    private::groups_request(GROUPS_SEQ, 0, op, groups)
}

/// The errno (0 = ack) of the daemon's answer to our request of sequence number `seq`, if `b` is
/// that answer.
pub(crate) fn parse_answer(b: &[u8], seq: u32) -> Option<i32> {
    let h = Header::parse(b).ok()?;
    if h.seq != seq || h.kind != proto::netlink::msg_type::ERROR {
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
        assert!(insert(40, Slot::new(7, false)));
        assert_eq!(ours(40), Some(Slot::new(7, false)));
        mark_used(40);
        assert!(ours(40).unwrap().fixed);
        duplicate(40, 41);
        assert_eq!(ours(41).unwrap().portid, 7);
        set_portid(41, 9);
        assert_eq!(ours(41).unwrap().portid, 9);
        forget(40);
        duplicate(40, 41);
        assert_eq!((ours(40), ours(41)), (None, None));
        assert!(!insert(MAX_FDS as i32, Slot::new(1, false)));
        assert_eq!(ours(-1), None);
        let s = Slot { portid: u32::MAX, fixed: true, dgram: true, groups: u32::MAX, no_enobufs: true };
        assert_eq!(Slot::decode(s.encode(), u32::MAX), Some(s));
        // Groups, options and the overrun mark.
        assert!(insert(42, Slot::new(9, true)));
        set_groups(42, 0xffff_ffff);
        set_no_enobufs(42, true);
        assert_eq!(ours(42), Some(Slot { groups: 0xffff_ffff, no_enobufs: true, ..Slot::new(9, true) }));
        duplicate(42, 44);
        assert_eq!(ours(44), ours(42));
        forget(44);
        assert_eq!(ours(44), None);
        // Shadows: linked both ways, unlinked from either side.
        assert!(set_shadow(42, 50));
        assert_eq!(take_shadow(42), Some(50));
        assert_eq!(take_shadow(42), None);
        assert!(set_shadow(42, 51));
        unlink_if_shadow(51);
        assert_eq!(take_shadow(42), None, "closed by the program: not ours to close");
        unlink_if_shadow(51);
        assert!(!set_shadow(42, MAX_FDS as i32));
        insert(44, Slot::new(1, false));
        assert_eq!(ours(44).unwrap().groups, 0, "a new socket on a reused descriptor has no groups");
        assert!(!take_overrun(42));
        mark_overrun(42);
        assert_eq!(ours(42).unwrap().portid, 9);
        assert!(take_overrun(42));
        assert!(!take_overrun(42));
        mark_overrun(43);
        assert!(!take_overrun(43), "not ours: no mark");
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
        assert_eq!(parse_answer(&err, BIND_SEQ), Some(libc::EADDRINUSE));
        assert_eq!(parse_answer(&err, GROUPS_SEQ), None);
        assert_eq!(parse_answer(&hello, BIND_SEQ), None);
        let g = groups_request(private::GROUPS_SET, 7);
        assert_eq!(private::parse_groups_request(&g), Some((private::GROUPS_SET, 7)));
        let ack = private::ack(&Header::parse(&g).unwrap(), 5);
        assert_eq!(parse_answer(&ack, GROUPS_SEQ), Some(0));
        let notice = private::overrun(5, 3);
        assert!(is_overrun_notice(&notice));
        assert!(is_overrun_notice(&notice[..6]), "recognised when truncated");
        assert!(!is_overrun_notice(&notice[..5]));
        assert!(!is_overrun_notice(&hello));
    }
}
