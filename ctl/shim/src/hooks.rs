//! The exported C functions that stand in front of libc's.
//!
//! Each has exactly the contract of the libc function of the same name (the caller's pointers are
//! valid for the lengths it passes), which is what every `SAFETY` comment below relies on.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::ptr;

use libc::{c_int, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::emu::{self, Slot};
use crate::real;

const NETLINK_NETFILTER: c_int = 12;
const SOL_NETLINK: c_int = 270;
const NETLINK_ADD_MEMBERSHIP: c_int = 1;
const NETLINK_DROP_MEMBERSHIP: c_int = 2;
const NETLINK_NO_ENOBUFS: c_int = 5;
const NETLINK_LIST_MEMBERSHIPS: c_int = 9;
const DEFAULT_SOCKET: &str = "/run/ferrowall/ctl.sock";
/// How long `socket()` and `bind()` wait for the daemon's answer.
const ANSWER_TIMEOUT_MS: c_int = 5000;

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// `-1` with errno `e`.
fn fail<T: From<i8>>(e: c_int) -> T {
    set_errno(e);
    T::from(-1)
}

/// Writes a socket address into a caller's `(addr, len)` pair as the kernel does: truncated to
/// `*len`, then `*len` set to the full length. `EFAULT` for null pointers.
///
/// # Safety
/// `addr` must be valid for `*len` bytes and `len` for a `socklen_t`, or null.
unsafe fn put_addr(addr: *mut sockaddr, len: *mut socklen_t, src: &[u8]) -> c_int {
    if addr.is_null() || len.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: the caller gives `addr` room for `*len` bytes.
    let dst = unsafe { std::slice::from_raw_parts_mut(addr.cast::<u8>(), *len as usize) };
    let full = emu::fill_addr(dst, src);
    // SAFETY: `len` is valid (checked non-null; the caller's contract).
    unsafe { *len = full as socklen_t };
    0
}

/// Writes an `int` option value.
///
/// # Safety
/// As for `getsockopt`'s `optval`/`optlen`.
unsafe fn put_int(val: *mut c_void, len: *mut socklen_t, v: c_int) -> c_int {
    if val.is_null() || len.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: `len` is non-null and valid by the caller's contract.
    if unsafe { *len } < 4 {
        return fail(libc::EINVAL);
    }
    // SAFETY: `val` has room for at least 4 bytes (checked); it may be unaligned.
    unsafe {
        ptr::write_unaligned(val.cast::<c_int>(), v);
        *len = 4;
    }
    0
}

/// Receives on our descriptor `fd` with `recv_once(flags)`, which returns what the libc call
/// returned and up to 6 first bytes of the datagram (where it put them). An end of file (the
/// daemon went away) becomes `ECONNRESET`, which a netlink socket could report, instead of a 0 it
/// never returns. The daemon's overrun notice becomes one `ENOBUFS`, as the kernel reports a
/// listener's overrun, or is passed over with `NETLINK_NO_ENOBUFS`; so is a loss the shim itself
/// noticed ([`emu::mark_overrun`]).
fn receive_ours(
    fd: c_int,
    asked: size_t,
    flags: c_int,
    mut recv_once: impl FnMut(c_int) -> (ssize_t, Vec<u8>),
) -> ssize_t {
    let report = |fd| !emu::ours(fd).is_some_and(|s| s.no_enobufs);
    if emu::take_overrun(fd) && report(fd) {
        return fail(libc::ENOBUFS);
    }
    // Notices come one per overrun; the bound only keeps this loop finite.
    for _ in 0..1024 {
        let (n, head) = recv_once(flags);
        if n == 0 && asked > 0 {
            return fail(libc::ECONNRESET);
        }
        if n < 0 || !emu::is_overrun_notice(&head) {
            return n;
        }
        if flags & libc::MSG_PEEK != 0 {
            // A peek left it queued: take it off.
            let mut scratch = [0u8; 64];
            // SAFETY: `scratch` is a live buffer of 64 bytes.
            unsafe { real::recv(fd, scratch.as_mut_ptr().cast(), scratch.len(), libc::MSG_DONTWAIT) };
        }
        if report(fd) {
            return fail(libc::ENOBUFS);
        }
    }
    fail(libc::EAGAIN)
}

/// Up to 6 first bytes of the `n` bytes a receive put at `buf`.
///
/// # Safety
/// `buf` must be valid for `n.min(asked)` bytes (what the receive wrote), or null.
unsafe fn head_of(buf: *const c_void, n: ssize_t, asked: size_t) -> Vec<u8> {
    let len = usize::try_from(n).unwrap_or(0).min(asked).min(6);
    if buf.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the receive wrote at least `len` bytes at `buf` (the caller's contract).
    unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.to_vec()
}

/// Waits up to [`ANSWER_TIMEOUT_MS`] for `fd` to be readable.
fn wait_readable(fd: c_int) -> Result<(), c_int> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, ANSWER_TIMEOUT_MS) } {
            1 => return Ok(()),
            0 => return Err(libc::ETIMEDOUT),
            _ if errno() == libc::EINTR => continue,
            _ => return Err(errno()),
        }
    }
}

/// Receives one datagram into `buf`, waiting for it.
fn recv_answer(fd: c_int, buf: &mut [u8]) -> Result<usize, c_int> {
    loop {
        wait_readable(fd)?;
        // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
        let n = unsafe { real::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        match n {
            n if n > 0 => return Ok(n as usize),
            0 => return Err(libc::ECONNRESET),
            _ if matches!(errno(), libc::EAGAIN | libc::EINTR) => continue,
            _ => return Err(errno()),
        }
    }
}

/// Connects to the daemon at `path` and reads its greeting: the descriptor and its port id.
fn connect_daemon(path: &OsStr, cloexec: bool) -> Result<(c_int, u32), c_int> {
    // SAFETY: sockaddr_un is integers and a byte array; all-zero is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.is_empty() || bytes.len() >= sun.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let flags = if cloexec { libc::SOCK_CLOEXEC } else { 0 };
    // SAFETY: constant arguments.
    let fd = unsafe { real::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | flags, 0) };
    if fd < 0 {
        return Err(errno());
    }
    emu::forget(fd);
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as socklen_t;
    let result = loop {
        // SAFETY: `sun` is a valid sockaddr_un of `len` bytes.
        if unsafe { libc::connect(fd, (&sun as *const libc::sockaddr_un).cast(), len) } == 0 {
            break Ok(());
        }
        if errno() != libc::EINTR {
            break Err(errno());
        }
    };
    let result = result.and_then(|()| {
        let mut buf = [0u8; 256];
        let n = recv_answer(fd, &mut buf)?;
        emu::parse_hello(&buf[..n]).ok_or(libc::EPROTO)
    });
    match result {
        Ok(portid) => Ok((fd, portid)),
        Err(e) => {
            // SAFETY: closes the descriptor we created above.
            unsafe { real::close(fd) };
            Err(e)
        }
    }
}

/// Gives emulated descriptor `fd` a shadow bound to `portid` (see [`emu::set_shadow`]), replacing
/// the one it had (bound to `old_portid`); nothing when the port id is taken in the kernel
/// (another program's real socket) or the socket cannot be made. Leaves errno as it was.
fn shadow(fd: c_int, old_portid: u32, portid: u32) {
    let saved = errno();
    drop_shadow(fd, old_portid);
    // SAFETY: constant arguments.
    let s = unsafe { real::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if s >= 0 {
        emu::forget(s);
        emu::unlink_if_shadow(s);
        let addr = emu::sockaddr_nl(portid, 0);
        // SAFETY: `addr` is a sockaddr_nl of its length.
        let bound = unsafe { real::bind(s, addr.as_ptr().cast(), addr.len() as socklen_t) } == 0;
        if !bound || !emu::set_shadow(fd, s) {
            // SAFETY: our own descriptor.
            unsafe { real::close(s) };
        }
    }
    set_errno(saved);
}

/// Closes the shadow of emulated descriptor `fd` (bound to `portid`), if it has one and it is
/// still that: a program may have closed it behind the shim's back (`close_range`), and its
/// number may be something else of the program's now.
fn drop_shadow(fd: c_int, portid: u32) {
    let Some(s) = emu::take_shadow(fd) else { return };
    let saved = errno();
    let mut addr = [0u8; 16];
    let mut len = addr.len() as socklen_t;
    let (mut proto, mut plen): (c_int, socklen_t) = (0, 4);
    // SAFETY: `addr`/`len` and `proto`/`plen` are live buffers of the lengths given.
    let still = unsafe {
        real::getsockname(s, addr.as_mut_ptr().cast(), &mut len) == 0
            && real::getsockopt(s, libc::SOL_SOCKET, libc::SO_PROTOCOL, (&mut proto as *mut c_int).cast(), &mut plen)
                == 0
    } && len as usize >= emu::SOCKADDR_NL_LEN
        && emu::parse_bind_addr(&addr[..emu::SOCKADDR_NL_LEN]).is_ok_and(|(pid, _)| pid == portid)
        && proto == NETLINK_NETFILTER;
    if still {
        // SAFETY: a netlink socket of this process bound to `portid`: our shadow (port ids are
        // unique), which nothing else uses.
        unsafe { real::close(s) };
    }
    set_errno(saved);
}

/// `socket(AF_NETLINK, ty, NETLINK_NETFILTER)`: a connection to the daemon.
fn open_emulated(ty: c_int) -> c_int {
    let saved = errno();
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if base != libc::SOCK_RAW && base != libc::SOCK_DGRAM {
        return fail(libc::ESOCKTNOSUPPORT);
    }
    let path = std::env::var_os("FERROWALL_SOCKET").filter(|p| !p.is_empty());
    let path = path.as_deref().unwrap_or(OsStr::new(DEFAULT_SOCKET));
    let (fd, portid) = match connect_daemon(path, ty & libc::SOCK_CLOEXEC != 0) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "ferrowall-shim: cannot reach the ferrowall daemon at {}: {}",
                path.to_string_lossy(),
                std::io::Error::from_raw_os_error(e)
            );
            return fail(e);
        }
    };
    if ty & libc::SOCK_NONBLOCK != 0 {
        // SAFETY: F_GETFL/F_SETFL on our own descriptor.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    emu::unlink_if_shadow(fd);
    if !emu::insert(fd, Slot::new(portid, base == libc::SOCK_DGRAM)) {
        // SAFETY: our own descriptor, beyond the table.
        unsafe { real::close(fd) };
        return fail(libc::EMFILE);
    }
    shadow(fd, 0, portid);
    set_errno(saved);
    fd
}

/// Sends private request `req` (of sequence number `seq`) on `fd` and waits for its answer: 0
/// (an ack) or an errno. A datagram that comes first cannot be given back to the program: it is
/// dropped, and the next receive reports the loss as `ENOBUFS`.
fn ask(fd: c_int, req: &[u8], seq: u32) -> c_int {
    // SAFETY: `req` is a live buffer of `req.len()` bytes.
    if unsafe { real::send(fd, req.as_ptr().cast(), req.len(), libc::MSG_NOSIGNAL) } < 0 {
        return errno();
    }
    let mut buf = [0u8; 4096];
    loop {
        match recv_answer(fd, &mut buf) {
            Ok(n) => match emu::parse_answer(&buf[..n], seq) {
                Some(e) => return e,
                None => emu::mark_overrun(fd),
            },
            Err(e) => return e,
        }
    }
}

/// Claims port id `pid` for `fd` at the daemon: 0 or an errno.
fn claim(fd: c_int, pid: u32) -> c_int {
    ask(fd, &emu::bind_request(pid), emu::BIND_SEQ)
}

/// Changes the multicast groups of `fd` at the daemon (`op`: `proto::private::GROUPS_*`): 0 or
/// an errno.
fn change_groups(fd: c_int, op: u8, groups: u32) -> c_int {
    ask(fd, &emu::groups_request(op, groups), emu::GROUPS_SEQ)
}

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if domain == libc::AF_NETLINK && protocol == NETLINK_NETFILTER {
        return open_emulated(ty);
    }
    // SAFETY: the caller's arguments, passed on.
    let fd = unsafe { real::socket(domain, ty, protocol) };
    emu::forget(fd);
    fd
}

#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(slot) = emu::ours(fd) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real::bind(fd, addr, len) };
    };
    if addr.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: the caller gives `addr` as `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len as usize) };
    let (pid, groups) = match emu::parse_bind_addr(bytes) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let saved = errno();
    // As netlink_bind: a bound socket (explicitly, or by traffic) accepts only its own port id
    // again; an unbound one takes the one asked for, or keeps the one it was given (0).
    if slot.fixed && pid != slot.portid {
        return fail(libc::EINVAL);
    }
    if pid != 0 && pid != slot.portid {
        match claim(fd, pid) {
            0 => {
                emu::set_portid(fd, pid);
                shadow(fd, slot.portid, pid);
            }
            e => return fail(e),
        }
    }
    emu::mark_used(fd);
    // `nl_groups` replaces the groups joined (the daemon checks the privilege to join).
    if groups != slot.groups {
        match change_groups(fd, proto::private::GROUPS_SET, groups) {
            0 => emu::set_groups(fd, groups),
            e => return fail(e),
        }
    }
    set_errno(saved);
    0
}

#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match emu::ours(fd) {
        // SAFETY: the caller's (addr, len) contract.
        Some(slot) => unsafe { put_addr(addr, len, &emu::sockaddr_nl(slot.portid, slot.groups)) },
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { real::getsockname(fd, addr, len) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match emu::ours(fd) {
        // SAFETY: the caller's (addr, len) contract.
        Some(_) => unsafe { put_addr(addr, len, &emu::sockaddr_nl(0, 0)) },
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { real::getpeername(fd, addr, len) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int {
    if level == SOL_NETLINK && emu::ours(fd).is_some() {
        // As the kernel reads it: an int, or 0 when the option is shorter.
        let v = if len as usize >= std::mem::size_of::<c_int>() && !val.is_null() {
            // SAFETY: the caller gives `len` (at least 4) readable bytes at `val`.
            unsafe { ptr::read_unaligned(val.cast::<c_int>()) }
        } else {
            0
        };
        let saved = errno();
        match name {
            NETLINK_ADD_MEMBERSHIP | NETLINK_DROP_MEMBERSHIP => {
                let (op, add) = if name == NETLINK_ADD_MEMBERSHIP {
                    (proto::private::GROUPS_ADD, true)
                } else {
                    (proto::private::GROUPS_DROP, false)
                };
                match change_groups(fd, op, v as u32) {
                    0 => {
                        // The daemon accepted a group number from 1 to 32.
                        if let (Some(s), Some(bit)) = (emu::ours(fd), 1u32.checked_shl((v as u32).wrapping_sub(1))) {
                            emu::set_groups(fd, if add { s.groups | bit } else { s.groups & !bit });
                        }
                    }
                    e => return fail(e),
                }
            }
            NETLINK_NO_ENOBUFS => emu::set_no_enobufs(fd, v != 0),
            // NETLINK_PKTINFO, NETLINK_BROADCAST_ERROR, NETLINK_CAP_ACK, ...: accepted, nothing
            // to do (the daemon never sends what they change).
            _ => {}
        }
        set_errno(saved);
        return 0;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::setsockopt(fd, level, name, val, len) }
}

#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if let Some(slot) = emu::ours(fd) {
        let emulated = match (level, name) {
            (SOL_NETLINK, NETLINK_NO_ENOBUFS) => Some(c_int::from(slot.no_enobufs)),
            (SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS) => Some(slot.groups as c_int),
            (SOL_NETLINK, _) => Some(0),
            (libc::SOL_SOCKET, libc::SO_TYPE) => Some(if slot.dgram { libc::SOCK_DGRAM } else { libc::SOCK_RAW }),
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => Some(libc::AF_NETLINK),
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => Some(NETLINK_NETFILTER),
            _ => None,
        };
        if let Some(v) = emulated {
            // SAFETY: the caller's (optval, optlen) contract.
            return unsafe { put_int(val, len, v) };
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::getsockopt(fd, level, name, val, len) }
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    if emu::ours(fd).is_some() {
        emu::mark_used(fd);
        // SAFETY: the caller's buffer; the netlink destination is dropped (the daemon is the only
        // peer), and a closed connection must not raise SIGPIPE.
        return unsafe { real::send(fd, buf, n, flags | libc::MSG_NOSIGNAL) };
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::sendto(fd, buf, n, flags, addr, len) }
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    if emu::ours(fd).is_some() {
        emu::mark_used(fd);
        // SAFETY: the caller's arguments, with MSG_NOSIGNAL.
        return unsafe { real::send(fd, buf, n, flags | libc::MSG_NOSIGNAL) };
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::send(fd, buf, n, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if emu::ours(fd).is_some() {
        emu::mark_used(fd);
        // SAFETY: the caller's buffer, sent as one datagram without SIGPIPE.
        return unsafe { real::send(fd, buf, n, libc::MSG_NOSIGNAL) };
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::write(fd, buf, n) }
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if emu::ours(fd).is_some() && !msg.is_null() {
        emu::mark_used(fd);
        // SAFETY: `msg` is a valid msghdr (the caller's contract); the copy keeps its iovecs and
        // drops the netlink destination and any netlink control messages.
        let mut m = unsafe { *msg };
        m.msg_name = ptr::null_mut();
        m.msg_namelen = 0;
        m.msg_control = ptr::null_mut();
        m.msg_controllen = 0;
        // SAFETY: `m` is a valid msghdr whose buffers are the caller's.
        return unsafe { real::sendmsg(fd, &m, flags | libc::MSG_NOSIGNAL) };
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::sendmsg(fd, msg, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if emu::ours(fd).is_none() || msg.is_null() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real::recvmsg(fd, msg, flags) };
    }
    // SAFETY: `msg` is a valid, writable msghdr (the caller's contract).
    let m = unsafe { &mut *msg };
    let (name, namelen) = (m.msg_name, m.msg_namelen);
    let asked: usize = if m.msg_iov.is_null() {
        0
    } else {
        // SAFETY: `msg_iov` points at `msg_iovlen` iovecs (the caller's contract).
        unsafe { std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen) }.iter().map(|v| v.iov_len).sum()
    };
    let mut copy = *m;
    copy.msg_name = ptr::null_mut();
    copy.msg_namelen = 0;
    let n = receive_ours(fd, asked, flags, |fl| {
        // SAFETY: `copy` is the caller's msghdr without the name; its buffers are the caller's.
        let n = unsafe { real::recvmsg(fd, &mut copy, fl) };
        let mut head = Vec::new();
        if n > 0 && !copy.msg_iov.is_null() {
            // SAFETY: as above; the receive filled the iovecs in order.
            for v in unsafe { std::slice::from_raw_parts(copy.msg_iov, copy.msg_iovlen) } {
                let want = (n as usize).min(6) - head.len();
                // SAFETY: the receive wrote up to `iov_len` bytes of each iovec, in order.
                head.extend(unsafe { head_of(v.iov_base, want as ssize_t, v.iov_len) });
                if head.len() >= (n as usize).min(6) {
                    break;
                }
            }
        }
        (n, head)
    });
    if n < 0 {
        return n;
    }
    m.msg_flags = copy.msg_flags;
    m.msg_controllen = copy.msg_controllen;
    if !name.is_null() {
        // SAFETY: the caller gives `msg_name` room for `msg_namelen` bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(name.cast::<u8>(), namelen as usize) };
        m.msg_namelen = emu::fill_addr(dst, &emu::sockaddr_nl(0, 0)) as socklen_t;
    }
    n
}

/// `recvfrom` on our descriptor.
///
/// # Safety
/// As for `recvfrom`.
unsafe fn recvfrom_ours(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    let got = receive_ours(fd, n, flags, |fl| {
        // SAFETY: the caller's buffer of `n` bytes.
        let got = unsafe { real::recv(fd, buf, n, fl) };
        // SAFETY: the receive wrote `got` bytes (at most `n`) at `buf`.
        (got, unsafe { head_of(buf, got, n) })
    });
    if got >= 0 && !addr.is_null() && !len.is_null() {
        let saved = errno();
        // SAFETY: the caller's (addr, len) contract.
        unsafe { put_addr(addr, len, &emu::sockaddr_nl(0, 0)) };
        set_errno(saved);
    }
    got
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if emu::ours(fd).is_some() {
        // SAFETY: the caller's arguments.
        return unsafe { recvfrom_ours(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::recvfrom(fd, buf, n, flags, addr, len) }
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if n <= buflen && emu::ours(fd).is_some() {
        // SAFETY: the caller's arguments; `n` fits the buffer.
        return unsafe { recvfrom_ours(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: the caller's arguments, passed on (an overflow aborts there).
    unsafe { real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len) }
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    if emu::ours(fd).is_some() {
        return receive_ours(fd, n, flags, |fl| {
            // SAFETY: the caller's arguments.
            let got = unsafe { real::recv(fd, buf, n, fl) };
            // SAFETY: the receive wrote `got` bytes (at most `n`) at `buf`.
            (got, unsafe { head_of(buf, got, n) })
        });
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::recv(fd, buf, n, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t {
    if emu::ours(fd).is_some() {
        return receive_ours(fd, n, flags, |fl| {
            // SAFETY: the caller's arguments (an overflow aborts in the checked call).
            let got = unsafe { real::__recv_chk(fd, buf, n, buflen, fl) };
            // SAFETY: the receive wrote `got` bytes (at most `n`) at `buf`.
            (got, unsafe { head_of(buf, got, n) })
        });
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::__recv_chk(fd, buf, n, buflen, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if emu::ours(fd).is_some() {
        return receive_ours(fd, n, 0, |_| {
            // SAFETY: the caller's arguments (read on a SEQPACKET socket is one datagram).
            let got = unsafe { real::read(fd, buf, n) };
            // SAFETY: the read wrote `got` bytes (at most `n`) at `buf`.
            (got, unsafe { head_of(buf, got, n) })
        });
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::read(fd, buf, n) }
}

#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t {
    if emu::ours(fd).is_some() {
        return receive_ours(fd, n, 0, |_| {
            // SAFETY: the caller's arguments (an overflow aborts in the checked call).
            let got = unsafe { real::__read_chk(fd, buf, n, buflen) };
            // SAFETY: the read wrote `got` bytes (at most `n`) at `buf`.
            (got, unsafe { head_of(buf, got, n) })
        });
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::__read_chk(fd, buf, n, buflen) }
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(slot) = emu::ours(fd) {
        drop_shadow(fd, slot.portid);
    }
    emu::unlink_if_shadow(fd);
    emu::forget(fd);
    // SAFETY: the caller's argument, passed on.
    unsafe { real::close(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the caller's argument, passed on.
    let new = unsafe { real::dup(fd) };
    if new >= 0 {
        emu::duplicate(fd, new);
    }
    new
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { real::dup2(old, new) };
    if r >= 0 && old != new {
        // `new` was closed by the call: what it was goes.
        if let Some(slot) = emu::ours(new) {
            drop_shadow(new, slot.portid);
        }
        emu::unlink_if_shadow(new);
        emu::duplicate(old, new);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { real::dup3(old, new, flags) };
    if r >= 0 {
        if let Some(slot) = emu::ours(new) {
            drop_shadow(new, slot.portid);
        }
        emu::unlink_if_shadow(new);
        emu::duplicate(old, new);
    }
    r
}
