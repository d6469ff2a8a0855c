//! The `io` module's only `unsafe` code, each call behind the [`syscall!`] helper that turns `-1`
//! into `io::Error::last_os_error()`:
//!
//! * the control plane's Unix `SOCK_SEQPACKET` calls std does not offer (listen, accept,
//!   `SO_PEERCRED`/`SO_PEERGROUPS`, `recvmsg` with its `MSG_TRUNC` flag, non-blocking `send`), and
//!   a non-blocking gathered send ([`send_parts`]: a vnet header and its frame);
//! * the ports' calls: `AF_PACKET` sockets and their options, [`Mmap`] (a ring shared with the
//!   kernel, read and written through bounds-checked accessors), the TUN ioctls and gathered
//!   writes, the interface flags and the rtnetlink socket of TUN mode, and [`unshare_netns`] for
//!   tests;
//! * [`drop_privileges`]: `setgroups`/`setresgid`/`setresuid` once the sockets are open.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `SO_PEERGROUPS` (Linux 4.13): the peer's supplementary groups at `connect` time. Not in libc.
const SO_PEERGROUPS: libc::c_int = 59;

/// Calls a libc function, mapping a `-1` result to the thread's errno.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes descriptors it owns and pointers to live, correctly
        // sized buffers; see the comment at each use.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Switches the whole process (every thread: glibc and musl apply `setgroups`/`setgid`/`setuid`
/// to all threads of the process) to `uid`/`gid` with supplementary groups `groups`. Called as
/// root without `PR_SET_KEEPCAPS`, the kernel clears the permitted, effective and ambient
/// capability sets when the last root uid goes; the caller checks that in `/proc`.
pub(crate) fn drop_privileges(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: `groups` is a live slice of `gid_t` (u32) of the length passed.
    let r = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // Integer arguments only; the calls touch no memory of ours. Real, effective and saved ids
    // all change (group first: once the uid is not 0 the gid can no longer be changed).
    syscall!(setresgid(gid, gid, gid))?;
    syscall!(setresuid(uid, uid, uid))?;
    Ok(())
}

/// A `sockaddr_un` for `path`, and its length; `ENAMETOOLONG` if it does not fit.
fn unix_addr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is integers and a byte array, for which all-zero bytes are valid.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // Arguments are constants; the call touches no memory of ours.
    let fd = syscall!(socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | flags, 0))?;
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking listening `SOCK_SEQPACKET` socket bound at `path`, created with `mode` (the umask
/// is narrowed around `bind`, so the file never exists with wider permissions).
pub(crate) fn listen_seqpacket(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let fd = seqpacket(libc::SOCK_NONBLOCK)?;
    let (addr, len) = unix_addr(path)?;
    // SAFETY: umask only swaps the process's file-creation mask; the daemon calls this at start-up,
    // before any other thread creates files.
    let old = unsafe { libc::umask(!mode & 0o777) };
    // `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
    let bound = syscall!(bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len));
    // SAFETY: as above: restores the previous mask.
    unsafe { libc::umask(old) };
    bound?;
    // Plain syscall on our own descriptor.
    syscall!(listen(fd.as_raw_fd(), 128))?;
    Ok(fd)
}

/// Whether something accepts connections at `path` (used before replacing a socket file).
pub(crate) fn is_listening(path: &Path) -> bool {
    let Ok(fd) = seqpacket(0) else { return false };
    let Ok((addr, len)) = unix_addr(path) else { return false };
    // `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
    syscall!(connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len)).is_ok()
}

/// Accepts one connection as a non-blocking descriptor (`WouldBlock` when none is pending).
pub(crate) fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    // Null address pointers are allowed: we do not want the (unnamed) peer address.
    let fd = syscall!(accept4(
        listener,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    ))?;
    // SAFETY: `fd` was just returned by accept4 and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Who is at the other end of a connection, as the kernel recorded it at `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cred {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `SO_PEERCRED`.
pub(crate) fn peer_cred(fd: RawFd) -> io::Result<Cred> {
    // SAFETY: ucred is three integers; all-zero is valid.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // `cred` and `len` are live and `len` is cred's exact size.
    syscall!(getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len))?;
    Ok(Cred { pid: cred.pid, uid: cred.uid, gid: cred.gid })
}

/// `SO_PEERGROUPS`: the peer's supplementary group ids.
pub(crate) fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * size_of::<u32>()) as libc::socklen_t;
        // `groups` holds `len` bytes; the kernel writes at most `len` and updates it.
        match syscall!(getsockopt(fd, libc::SOL_SOCKET, SO_PEERGROUPS, groups.as_mut_ptr().cast(), &mut len)) {
            Ok(_) => {
                groups.truncate(len as usize / size_of::<u32>());
                return Ok(groups);
            }
            // ERANGE: `len` now says how much room is needed.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && (len as usize) > groups.len() * 4 => {
                groups.resize(len as usize / size_of::<u32>() + 1, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One received datagram: its length in the buffer and whether it was longer than the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) truncated: bool,
}

/// Receives one datagram without blocking.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is integers and pointers; all-zero (no name, no control) is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // `msg` points at one iovec describing `buf`, both live for the call.
    let n = syscall!(recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC))?;
    Ok(Received { len: n as usize, truncated: msg.msg_flags & libc::MSG_TRUNC != 0 })
}

/// Receives one frame from a packet socket without blocking (`packet_recvmsg` refuses flags it
/// does not know, `MSG_CMSG_CLOEXEC` among them).
pub(crate) fn recv_frame(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // `buf` is live and the kernel writes at most `buf.len()` bytes of it.
    let n = syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_TRUNC))?;
    let len = n as usize;
    Ok(Received { len: len.min(buf.len()), truncated: len > buf.len() })
}

/// Sends one datagram without blocking and without `SIGPIPE`.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // `buf` is live and `send` reads at most `buf.len()` bytes of it.
    let n = syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL))?;
    Ok(n as usize)
}

/// The iovecs describing `parts` (at most 4; `EINVAL` for more), for a gathering write or send.
/// Only ever read through by the kernel: the pointers are not written.
fn gather(parts: &[&[u8]]) -> io::Result<[libc::iovec; 4]> {
    let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    let mut iov = [empty; 4];
    if parts.len() > iov.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = libc::iovec { iov_base: p.as_ptr().cast_mut().cast(), iov_len: p.len() };
    }
    Ok(iov)
}

/// Sends one datagram gathered from `parts` (at most 4) without blocking and without `SIGPIPE`:
/// a vnet header and the frame after it, with no copy to join them.
pub(crate) fn send_parts(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov = gather(parts)?;
    // SAFETY: msghdr is integers and pointers; all-zero (no name, no control) is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len();
    // `msg` points at `parts.len()` iovecs describing live slices, all live for the call.
    let n = syscall!(sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL))?;
    Ok(n as usize)
}

// ---- Ports -------------------------------------------------------------------------------------

/// An `AF_PACKET`/`SOCK_RAW` socket for `protocol` (host order; 0 receives nothing until bound).
pub(crate) fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // Arguments are constants; the call touches no memory of ours.
    let fd = syscall!(socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol.to_be())))?;
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, level, name, value)`, `value` passed by address with its exact size.
pub(crate) fn setsockopt<T: Copy>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // `value` is live and `size_of::<T>()` bytes long; the kernel only reads it.
    syscall!(setsockopt(fd, level, name, (value as *const T).cast(), size_of::<T>() as libc::socklen_t))?;
    Ok(())
}

/// `PACKET_STATISTICS` of a packet socket: packets seen and drops since the previous call (the
/// kernel resets the counters on every read; it fills `tp_freeze_q_cnt` for `TPACKET_V3` only).
pub(crate) fn packet_statistics(fd: RawFd) -> io::Result<libc::tpacket_stats_v3> {
    let mut st = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
    let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // `st` and `len` are live and `len` is st's exact size.
    syscall!(getsockopt(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_STATISTICS,
        (&mut st as *mut libc::tpacket_stats_v3).cast(),
        &mut len
    ))?;
    Ok(st)
}

/// Binds a packet socket to interface `ifindex` for `protocol` (host order).
pub(crate) fn bind_packet(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is integers and a byte array, for which all-zero bytes are valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // `sll` is a valid sockaddr_ll of the size passed, live for the call.
    syscall!(bind(fd, (&sll as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t))?;
    Ok(())
}

/// The index of interface `name` (`ENODEV` if there is none, `EINVAL` for a name with a NUL).
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx)
}

/// An `ifreq` naming `name`; `EINVAL` if the name does not fit `IFNAMSIZ` or holds a NUL.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is a byte array and a union of integers and pointers; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    if name.len() >= ifr.ifr_name.len() || name.as_bytes().contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `TUNSETIFF` on an open `/dev/net/tun`: attaches it to interface `name` (created if missing; an
/// empty name lets the kernel choose) with `flags`; returns the interface's name.
pub(crate) fn tun_set_iff(fd: RawFd, name: &str, flags: libc::c_int) -> io::Result<String> {
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // `ifr` is a live ifreq; TUNSETIFF reads it and writes the chosen name back into it.
    syscall!(ioctl(fd, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq))?;
    Ok(ifreq_name(&ifr))
}

/// `TUNSETOFFLOAD`: the offloads (`TUN_F_*`) the reader of TUN queue `fd` takes, so that the
/// kernel hands it partial checksums and GSO super-packets of those kinds instead of finishing
/// them first. Needs `IFF_VNET_HDR`.
pub(crate) fn tun_set_offload(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // TUNSETOFFLOAD takes its argument by value; no memory of ours is touched.
    syscall!(ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)))?;
    Ok(())
}

/// Writes one datagram gathered from `parts` (at most 4) with one `writev`: a vnet header and the
/// datagram after it, into a TUN queue.
pub(crate) fn write_parts(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let iov = gather(parts)?;
    // `iov` holds `parts.len()` iovecs describing live slices, all live for the call.
    let n = syscall!(writev(fd, iov.as_ptr(), parts.len() as libc::c_int))?;
    Ok(n as usize)
}

/// The MTU of interface `name` (`SIOCGIFMTU`).
pub(crate) fn if_mtu(name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name)?;
    // A datagram socket only to carry the ioctl; arguments are constants.
    let fd = syscall!(socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: `fd` was just created and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // `ifr` is a live ifreq; SIOCGIFMTU writes the MTU into its union.
    syscall!(ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr as *mut libc::ifreq))?;
    // SAFETY: SIOCGIFMTU succeeded, so the union holds `ifru_mtu`, an integer.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}

/// A datagram socket of `family` only to carry interface ioctls.
fn ioctl_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // Arguments are constants; the call touches no memory of ours.
    let fd = syscall!(socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Brings interface `name` up (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP` added).
pub(crate) fn if_up(name: &str) -> io::Result<()> {
    let sock = ioctl_socket(libc::AF_INET)?;
    let mut ifr = ifreq(name)?;
    // `ifr` is a live ifreq; SIOCGIFFLAGS writes the flags into its union.
    syscall!(ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr as *mut libc::ifreq))?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds `ifru_flags`, an integer.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // `ifr` is a live ifreq holding the name and the new flags; SIOCSIFFLAGS only reads it.
    syscall!(ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr as *mut libc::ifreq))?;
    Ok(())
}

/// A `NETLINK_ROUTE` socket, to send rtnetlink requests to the kernel with [`send`] (an unbound,
/// unconnected netlink socket sends to the kernel) and read its answers with [`recv`].
pub(crate) fn route_netlink() -> io::Result<OwnedFd> {
    // Arguments are constants; the call touches no memory of ours.
    let fd = syscall!(socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE))?;
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread (only it: network namespaces are per thread) into a new, empty
/// network namespace. Tests use it to make interfaces that vanish with the thread.
#[cfg(test)]
pub(crate) fn unshare_netns() -> io::Result<()> {
    // A constant flag; unshare touches no memory of ours.
    syscall!(unshare(libc::CLONE_NEWNET))?;
    Ok(())
}

/// The system's page size (ring blocks are multiples of it).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system; it touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Values that any bit pattern makes valid: what [`Mmap::read`] may copy out of shared memory.
pub(crate) trait Pod: Copy {}
impl Pod for u16 {}
impl Pod for u32 {}
impl Pod for libc::tpacket2_hdr {}
impl<const N: usize> Pod for [u8; N] {}

/// A shared, read-write memory mapping of a descriptor (a packet ring), unmapped on drop.
///
/// The memory is shared with the kernel, which writes it concurrently under the ring protocol:
/// a region belongs to user space only while its status word says so. The accessors are bounds-
/// and alignment-checked (they panic rather than touch memory outside the mapping); which regions
/// may be read or written at a given moment is the ring code's business, as with any ring.
pub(crate) struct Mmap {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to another thread moves that
// ownership (nothing here is tied to the creating thread).
unsafe impl Send for Mmap {}

impl Mmap {
    /// Maps `len` bytes of `fd` from offset 0, shared and pre-faulted.
    pub(crate) fn map(fd: RawFd, len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps nothing of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mmap { ptr, len })
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, off: usize, size: usize, align: usize) {
        assert!(off.checked_add(size).is_some_and(|end| end <= self.len), "ring access {off}+{size} out of bounds");
        // `align` is a power of two.
        assert!((self.ptr.as_ptr() as usize + off) & (align - 1) == 0, "ring access at {off} misaligned");
    }

    /// The 32-bit status word at `off`, which the kernel reads and writes concurrently.
    pub(crate) fn status(&self, off: usize) -> &std::sync::atomic::AtomicU32 {
        self.check(off, 4, 4);
        // SAFETY: in bounds and 4-aligned (checked); the mapping lives as long as `self`; every
        // access to the word, ours and the kernel's, is atomic.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    /// A copy of the `T` at `off`.
    pub(crate) fn read<T: Pod>(&self, off: usize) -> T {
        self.check(off, size_of::<T>(), 1);
        // SAFETY: in bounds (checked), unaligned reads allowed, and any bits are a valid `T` (Pod).
        unsafe { self.ptr.as_ptr().add(off).cast::<T>().read_unaligned() }
    }

    /// The `len` bytes at `off`.
    pub(crate) fn bytes(&self, off: usize, len: usize) -> &[u8] {
        self.check(off, len, 1);
        // SAFETY: in bounds (checked) and live as long as `self`; the ring code reads only regions
        // the kernel has handed to user space, which it leaves alone until they are handed back.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    /// Copies `data` to `off`.
    pub(crate) fn write(&mut self, off: usize, data: &[u8]) {
        self.check(off, data.len(), 1);
        // SAFETY: in bounds (checked); `data` cannot overlap the mapping (we hold `&mut self`).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) }
    }

    /// Writes the 32-bit value `v` at `off`.
    pub(crate) fn write_u32(&mut self, off: usize, v: u32) {
        self.write(off, &v.to_ne_bytes());
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` created; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_do_not_fit_are_refused() {
        assert!(unix_addr(Path::new("/run/x.sock")).is_ok());
        let long = "/".to_owned() + &"a".repeat(200);
        assert_eq!(unix_addr(Path::new(&long)).unwrap_err().raw_os_error(), Some(libc::ENAMETOOLONG));
    }

    #[test]
    fn a_connection_reports_our_credentials_and_truncation() {
        struct TempDir(std::path::PathBuf);
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = TempDir(std::env::temp_dir().join(format!("ferrowall-sys-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = listen_seqpacket(&path, 0o660).unwrap();
        assert!(is_listening(&path));
        // The probe's own connection, already closed by the prober.
        let probe = accept(l.as_raw_fd()).unwrap();
        assert_eq!(recv(probe.as_raw_fd(), &mut [0u8; 4]).unwrap(), Received { len: 0, truncated: false });
        let c = seqpacket(0).unwrap();
        let (addr, len) = unix_addr(&path).unwrap();
        syscall!(connect(c.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len)).unwrap();
        let s = accept(l.as_raw_fd()).unwrap();
        let cred = peer_cred(s.as_raw_fd()).unwrap();
        assert_eq!(cred.pid as u32, std::process::id());
        assert!(peer_groups(s.as_raw_fd()).is_ok());
        send(c.as_raw_fd(), &[7u8; 100]).unwrap();
        let mut small = [0u8; 10];
        assert_eq!(recv(s.as_raw_fd(), &mut small).unwrap(), Received { len: 10, truncated: true });
        assert_eq!(recv(s.as_raw_fd(), &mut small).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
