//! The harness's only `unsafe` code: opening an `AF_PACKET` socket inside a network namespace and
//! sending Ethernet frames on it.
//!
//! A socket belongs to the namespace it was created in, whatever thread later uses it, so a
//! throwaway thread enters the namespace (`setns` changes only the calling thread), creates and
//! binds the socket, hands the descriptor back and exits. The rest of the harness never leaves the
//! namespace it started in.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A send-only packet socket bound to one interface of one namespace.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    what: String,
}

impl PacketSocket {
    /// Opens a packet socket bound to `ifname` inside the namespace `netns` (a name under
    /// /run/netns, as `ip netns add` creates).
    pub fn open(netns: &str, ifname: &str) -> io::Result<PacketSocket> {
        let what = format!("{ifname} in netns {netns}");
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("packet socket on {what}: {e}"));
        let ns = File::open(format!("/run/netns/{netns}")).map_err(ctx)?;
        let name = CString::new(ifname).map_err(|e| ctx(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let fd = std::thread::scope(|s| {
            s.spawn(|| open_in(&ns, &name))
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
        })
        .map_err(ctx)?;
        Ok(PacketSocket { fd, what })
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is a live slice for the duration of the call and `send` reads at most
        // `frame.len()` bytes from it; the descriptor is owned by `self` and open.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("send on {}: {e}", self.what)));
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!("send on {}: short write {n} of {}", self.what, frame.len())));
        }
        Ok(())
    }
}

/// Runs on a thread of its own: enters `ns`, then creates and binds the socket.
fn open_in(ns: &File, ifname: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `ns` is an open namespace file; setns only changes this (throwaway) thread's
    // network namespace and touches no memory of ours.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ifname` is a valid NUL-terminated string that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a plain syscall with constant arguments; protocol 0 makes the socket send-only.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just created and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain integers and arrays, for which all-zero bytes are valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and we pass its exact size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
