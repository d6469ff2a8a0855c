//! The harness's only `unsafe` code: opening an `AF_PACKET` socket inside a network namespace and
//! sending Ethernet frames on it (one by one, or in batches with `sendmmsg`); opening a
//! `NETLINK_NETFILTER` socket there and talking to that namespace's kernel through it.
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

    /// Sends `frames` (at most [`MAX_SEND_BATCH`]), in order, with one `sendmmsg` call: returns how
    /// many the kernel took from the front of the batch. A frame the kernel refuses (shorter than
    /// an Ethernet header, longer than the link allows: `EINVAL`, `EMSGSIZE`; a full queue:
    /// `ENOBUFS`) ends the call there; if it is the first one, that is the error, and the caller
    /// decides whether to skip it.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let frames = &frames[..frames.len().min(MAX_SEND_BATCH)];
        if frames.is_empty() {
            return Ok(0);
        }
        // SAFETY: iovec and mmsghdr are plain integers and pointers, for which all-zero bytes are
        // valid (null pointers, zero lengths).
        let mut iov: [libc::iovec; MAX_SEND_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX_SEND_BATCH] = unsafe { std::mem::zeroed() };
        for (i, f) in frames.iter().enumerate() {
            // The kernel only reads through iov_base (sendmmsg), so the const-to-mut cast is sound.
            iov[i] = libc::iovec { iov_base: f.as_ptr() as *mut libc::c_void, iov_len: f.len() };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..frames.len()]` are initialised mmsghdrs whose single iovec each points at a
        // frame that outlives the call; the kernel reads those bytes and writes only `msg_len`
        // fields inside `msgs`; the descriptor is owned by `self` and open.
        let n = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), frames.len() as libc::c_uint, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("sendmmsg on {}: {e}", self.what)));
        }
        Ok(n as usize)
    }
}

/// The most frames one [`PacketSocket::send_batch`] sends.
pub const MAX_SEND_BATCH: usize = 64;

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

/// A `NETLINK_NETFILTER` socket created inside a network namespace, talking to that namespace's
/// kernel (nfnetlink). Bound with port id 0, so the kernel assigns one ([`NetlinkSocket::portid`]).
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    portid: u32,
}

impl NetlinkSocket {
    /// Opens a netfilter netlink socket inside `netns` (a name under /run/netns).
    pub fn open(netns: &str) -> io::Result<NetlinkSocket> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("netlink socket in netns {netns}: {e}"));
        let ns = File::open(format!("/run/netns/{netns}")).map_err(ctx)?;
        std::thread::scope(|s| {
            s.spawn(|| open_netlink_in(&ns))
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
        })
        .map_err(ctx)
    }

    /// The port id the kernel bound the socket to.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Sends one datagram to the kernel.
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        send_to_kernel(&self.fd, datagram)
    }

    /// Sends one datagram from a thread that has dropped `CAP_NET_ADMIN` from its effective
    /// capabilities (the kernel checks the sender's capabilities as it processes the message).
    pub fn send_unprivileged(&self, datagram: &[u8]) -> io::Result<()> {
        std::thread::scope(|s| {
            s.spawn(|| {
                drop_net_admin()?;
                send_to_kernel(&self.fd, datagram)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")))
        })
    }

    /// Reads every datagram queued now, without waiting (reading lets the kernel continue a dump,
    /// which it queues before the next read returns). Each datagram is returned whole: a
    /// datagram longer than `buf_size` is an error.
    pub fn drain(&self, buf_size: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; buf_size];
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the duration of
            // the call; the descriptor is owned by `self` and open.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(out);
                }
                return Err(e);
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(io::Error::other(format!("datagram of {n} bytes truncated to {}", buf.len())));
            }
            out.push(buf[..n].to_vec());
        }
    }
}

fn send_to_kernel(fd: &OwnedFd, datagram: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain integers, for which all-zero bytes are valid (nl_pid 0: the kernel).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `datagram` is live for the call and sendto reads at most its length; `sa` is a valid
    // sockaddr_nl passed with its exact size; the descriptor is open.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            datagram.as_ptr().cast(),
            datagram.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != datagram.len() {
        return Err(io::Error::other(format!("short netlink send: {n} of {}", datagram.len())));
    }
    Ok(())
}

/// Runs on a throwaway thread: enters `ns`, creates, binds and names the socket.
fn open_netlink_in(ns: &File) -> io::Result<NetlinkSocket> {
    // SAFETY: `ns` is an open namespace file; setns only changes this (throwaway) thread's
    // network namespace and touches no memory of ours.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a plain syscall with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just created and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain integers, for which all-zero bytes are valid (nl_pid 0: autobind).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `sa` is a valid sockaddr_nl and we pass its exact size.
    if unsafe { libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_nl).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut got = len;
    // SAFETY: `sa` and `got` are valid for writes; getsockname writes at most `got` bytes.
    if unsafe { libc::getsockname(fd.as_raw_fd(), (&mut sa as *mut libc::sockaddr_nl).cast(), &mut got) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NetlinkSocket { fd, portid: sa.nl_pid })
}

/// Clears `CAP_NET_ADMIN` from the calling thread's effective capabilities (capabilities are per
/// thread; the thread should be a throwaway one).
fn drop_net_admin() -> io::Result<()> {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes one header and two data structs (version 3), which `hdr` and `data`
    // are, laid out as the kernel's __user_cap_header_struct/__user_cap_data_struct.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above; capset reads them and changes only this thread's credentials.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
