//! `libferrowall_shim.so`: lets an unmodified netfilter tool (`nfct`, or anything built on libmnl,
//! or Python's `socket` module) talk to the ferrowall daemon instead of the kernel.
//!
//! Loaded with `LD_PRELOAD` (which `ferroctl exec` sets up), it replaces every
//! `socket(AF_NETLINK, …, NETLINK_NETFILTER)` with a Unix `SOCK_SEQPACKET` connection to the
//! daemon's control socket (`FERROWALL_SOCKET`, default `/run/ferrowall/ctl.sock`), and emulates on
//! that descriptor what a netlink socket looks like from user space:
//!
//! * `bind` accepts a `sockaddr_nl` (an explicit `nl_pid` is claimed at the daemon, `nl_groups`
//!   become the connection's multicast groups there: the conntrack event groups); `getsockname`
//!   returns `{AF_NETLINK, nl_pid = the port id the daemon assigned, nl_groups}` with the length of
//!   a `sockaddr_nl`, as libmnl checks;
//! * `setsockopt` at `SOL_NETLINK`: `NETLINK_ADD_MEMBERSHIP`/`NETLINK_DROP_MEMBERSHIP` join and
//!   leave a group at the daemon, `NETLINK_NO_ENOBUFS` is kept (and read back by `getsockopt`, as
//!   is `NETLINK_LIST_MEMBERSHIPS`), the others succeed and do nothing; `SO_TYPE`, `SO_DOMAIN` and
//!   `SO_PROTOCOL` report a netlink socket; other options reach the Unix socket (`SO_RCVBUF` works);
//! * sends (`sendto`, `sendmsg`, `send`, `write`) drop the netlink destination and never raise
//!   `SIGPIPE`; receives (`recvmsg`, `recvfrom`, `recv`, `read`) report the kernel (`nl_pid` 0) as
//!   sender with `msg_namelen = sizeof(sockaddr_nl)`. The daemon sends datagrams of at most 4096
//!   bytes, so libmnl's buffer never sees `MSG_TRUNC`; a closed connection reads as `ECONNRESET`
//!   rather than an end of file a netlink socket cannot have; the daemon's notice that events were
//!   dropped for a listener that did not keep up reads as one `ENOBUFS`, as the kernel reports an
//!   overrun (nothing with `NETLINK_NO_ENOBUFS`);
//! * each emulated socket has a shadow: a real, otherwise unused `NETLINK_NETFILTER` socket bound
//!   to the same port id (when that port id is free in the kernel), so that the port id shows in
//!   `/proc/net/netlink` as this process's, where `conntrack -E` looks up the name of the program
//!   whose request caused an event (`[USERSPACE] portid=N progname=NAME`).
//!
//! Every other call and descriptor goes to the next definition (`dlsym(RTLD_NEXT, …)`), and errno
//! is left as it was whenever a call succeeds. The logic lives in safe code ([`emu`]); this crate
//! needs `unsafe` for the C ABI itself, with a `SAFETY` comment on each block.
#![allow(unsafe_code)]

mod emu;
#[cfg(not(test))]
pub mod hooks;
#[cfg(not(test))]
mod real;
