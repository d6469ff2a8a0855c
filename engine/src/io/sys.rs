//! The control plane's only `unsafe` code: the Unix `SOCK_SEQPACKET` calls std does not offer
//! (listen, accept, `SO_PEERCRED`/`SO_PEERGROUPS`, `recvmsg` with its `MSG_TRUNC` flag, non-blocking
//! `send`), each behind the [`syscall!`] helper that turns `-1` into `io::Error::last_os_error()`.
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

/// Sends one datagram without blocking and without `SIGPIPE`.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // `buf` is live and `send` reads at most `buf.len()` bytes of it.
    let n = syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL))?;
    Ok(n as usize)
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
