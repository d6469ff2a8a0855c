//! The control-socket loop: a Unix `SOCK_SEQPACKET` listener carrying nfnetlink, one mio loop for
//! every client and the signals.
//!
//! * Every connection gets a distinct nonzero netlink port id, chosen as the kernel's autobind does:
//!   the peer's pid if free, else a counter going down from `-4096`. It is announced in a
//!   [`private::hello`] greeting (the shim reports it through `getsockname`); the shim's explicit
//!   `bind` can change it once ([`private::MSG_BIND`]). The private messages are `proto`'s, shared
//!   with the clients.
//! * The peer is checked once, with `SO_PEERCRED`/`SO_PEERGROUPS`: root or a member of `ctl_group`
//!   is privileged; anyone else still gets answers, the handler making them `EPERM`.
//! * A request datagram is read into a 64 KiB buffer; one that did not fit is answered with
//!   `EMSGSIZE` rather than processed. An empty datagram is ignored, as a netlink socket ignores
//!   one shorter than a header: on a `SOCK_SEQPACKET` socket it reads as 0 bytes, like the end of
//!   the connection, so a read of 0 bytes ends the connection only once the peer has hung up
//!   (`EPOLLRDHUP`; datagrams it sent after an empty one just before hanging up may be lost).
//!   Replies are cut at message boundaries into datagrams of at most 4096 bytes (libmnl's receive
//!   buffer) and queued; sends never block. A client whose queue passes [`QUEUE_LIMIT`] bytes has
//!   stopped reading and is dropped, with the reason logged.
//! * Clients are served round-robin, at most [`READ_BUDGET`] datagrams per turn, so one busy client
//!   cannot starve the others.
//! * A reply the backend produces piece by piece ([`Pending`]: a dump of a large connection table)
//!   is produced as the client reads it: a chunk whenever its queue is below [`PUMP_LOW_WATER`],
//!   at most [`PUMP_TURN`] bytes per turn. Its later requests wait until the dump is complete, as
//!   a netlink client reads a dump to its end before asking again.
//! * `SIGHUP` calls [`Backend::reload`]; `SIGTERM`/`SIGINT` end [`ControlServer::run`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::SIGHUP;
use signal_hook_mio::v1_0::Signals;

use proto::netlink::Header;
use proto::{private, Errno};

use super::sys;

/// Receive buffer for one request datagram.
pub const RECV_BUFFER: usize = 64 * 1024;
/// Largest reply datagram: libmnl reads into `MNL_SOCKET_BUFFER_SIZE` = 4096 bytes on x86.
pub const REPLY_DATAGRAM_MAX: usize = 4096;
/// Unsent reply bytes a client may have queued before it is dropped.
pub const QUEUE_LIMIT: usize = 8 << 20;
/// Datagrams read from one client per turn.
pub const READ_BUDGET: usize = 32;
/// A pending reply's next chunk is produced once fewer bytes than this are queued for the client.
pub const PUMP_LOW_WATER: usize = 64 * 1024;
/// Bytes of a pending reply produced per call to [`Pending::next`].
pub const PUMP_CHUNK: usize = 32 * 1024;
/// Bytes of a pending reply produced per turn of one client, at most.
pub const PUMP_TURN: usize = 1 << 20;

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The connection's netlink port id.
    pub portid: u32,
    /// Root, or a member of the control group.
    pub privileged: bool,
    pub pid: i32,
    pub uid: u32,
}

/// The rest of a reply that the backend produces piece by piece.
pub trait Pending {
    /// The next reply messages, about `budget` bytes of them (possibly none yet); `true` once the
    /// reply is complete.
    fn next(&mut self, budget: usize) -> (Vec<Vec<u8>>, bool);
}

/// The answer to one request datagram.
pub struct Reply {
    /// Datagrams of complete netlink messages, in order, sent at once (one longer than
    /// [`REPLY_DATAGRAM_MAX`] is cut at message boundaries).
    pub datagrams: Vec<Vec<u8>>,
    /// What follows them, produced as the client reads.
    pub pending: Option<Box<dyn Pending>>,
}

/// Reply messages packed into as few datagrams as fit.
impl From<Vec<Vec<u8>>> for Reply {
    fn from(messages: Vec<Vec<u8>>) -> Reply {
        Reply { datagrams: proto::netlink::pack(&messages, REPLY_DATAGRAM_MAX), pending: None }
    }
}

/// What the loop serves: the daemon's request handler and its reload.
pub trait Backend {
    /// The reply to one request datagram.
    fn handle(&mut self, peer: &PeerInfo, datagram: &[u8]) -> Reply;
    /// Re-reads the rule file; on error the running rules stay and the error says where and why.
    fn reload(&mut self) -> Result<(), String>;
    /// The text of a view of the daemon's state ([`private::SHOW_CONNTRACK`],
    /// [`private::SHOW_STATS`]); `None` for a view it does not know.
    fn show(&mut self, what: u8) -> Option<String>;
}

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_CLIENT: usize = 2;

/// One connection.
struct Client {
    fd: OwnedFd,
    peer: PeerInfo,
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    /// The port id was fixed (explicit bind, or traffic sent with it).
    portid_fixed: bool,
    /// The peer hung up or shut down its sending side (`EPOLLRDHUP` was seen): a read of 0 bytes
    /// is the end of the connection, not an empty datagram.
    read_closed: bool,
    /// A reply still being produced.
    pending: Option<Box<dyn Pending>>,
}

/// Why a client was dropped.
#[derive(Debug)]
enum DropReason {
    Closed,
    QueueFull,
    Io(&'static str, io::Error),
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::Closed => f.write_str("closed"),
            DropReason::QueueFull => write!(f, "stopped reading its replies (more than {QUEUE_LIMIT} bytes queued)"),
            DropReason::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// The listener, its clients and the port ids in use.
pub struct ControlServer {
    listener: OwnedFd,
    ctl_gid: Option<u32>,
    clients: HashMap<Token, Client>,
    portids: HashSet<u32>,
    rover: u32,
    next_token: usize,
    /// Clients that may have more datagrams waiting (their read budget ran out).
    more: VecDeque<Token>,
    buf: Vec<u8>,
}

impl ControlServer {
    /// Serves `listener` (a listening non-blocking SEQPACKET socket); `ctl_gid` is the group whose
    /// members are privileged besides root.
    pub fn new(listener: OwnedFd, ctl_gid: Option<u32>) -> ControlServer {
        ControlServer {
            listener,
            ctl_gid,
            clients: HashMap::new(),
            portids: HashSet::new(),
            rover: (-4096i32) as u32,
            next_token: FIRST_CLIENT,
            more: VecDeque::new(),
            buf: vec![0; RECV_BUFFER],
        }
    }

    /// Runs until `SIGTERM` or `SIGINT` arrives through `signals` (which must include `SIGHUP`,
    /// `SIGTERM` and `SIGINT`).
    pub fn run(&mut self, backend: &mut dyn Backend, mut signals: Signals) -> io::Result<()> {
        let mut poll = Poll::new()?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let lfd = self.listener.as_raw_fd();
        poll.registry().register(&mut SourceFd(&lfd), LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = if self.more.is_empty() { None } else { Some(std::time::Duration::ZERO) };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(&poll),
                    SIGNALS => {
                        for sig in signals.pending() {
                            if sig == SIGHUP {
                                let _ = reload(backend, "SIGHUP");
                            } else {
                                eprintln!("ferrowall: signal {sig}: exiting");
                                return Ok(());
                            }
                        }
                    }
                    t => {
                        if ev.is_read_closed() {
                            if let Some(c) = self.clients.get_mut(&t) {
                                c.read_closed = true;
                            }
                        }
                        let mut pumping = false;
                        if ev.is_writable() {
                            if let Err(why) = self.flush(t) {
                                self.drop_client(&poll, t, why);
                                continue;
                            }
                            pumping = self.clients.get(&t).is_some_and(|c| c.pending.is_some());
                        }
                        if pumping || ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.serve(&poll, t, backend);
                        }
                    }
                }
            }
            // Clients that still had datagrams waiting get another turn, in order.
            for _ in 0..self.more.len() {
                if let Some(t) = self.more.pop_front() {
                    self.serve(&poll, t, backend);
                }
            }
        }
    }

    fn accept_all(&mut self, poll: &Poll) {
        loop {
            match sys::accept(self.listener.as_raw_fd()) {
                Ok(fd) => {
                    if let Err(e) = self.add_client(poll, fd) {
                        eprintln!("ferrowall: control socket: new client: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and wait for the next readiness event.
                    eprintln!("ferrowall: control socket: accept: {e}");
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, poll: &Poll, fd: OwnedFd) -> io::Result<()> {
        let cred = sys::peer_cred(fd.as_raw_fd())?;
        let privileged = cred.uid == 0
            || self
                .ctl_gid
                .is_some_and(|g| cred.gid == g || sys::peer_groups(fd.as_raw_fd()).is_ok_and(|gs| gs.contains(&g)));
        let portid = self.autobind(cred.pid);
        let token = Token(self.next_token);
        self.next_token += 1;
        let raw = fd.as_raw_fd();
        if let Err(e) = poll.registry().register(&mut SourceFd(&raw), token, Interest::READABLE | Interest::WRITABLE) {
            self.portids.remove(&portid);
            return Err(e);
        }
        let peer = PeerInfo { portid, privileged, pid: cred.pid, uid: cred.uid };
        let mut c = Client {
            fd,
            peer,
            out: VecDeque::new(),
            out_bytes: 0,
            portid_fixed: false,
            read_closed: false,
            pending: None,
        };
        let hello = private::hello(portid);
        c.out_bytes += hello.len();
        c.out.push_back(hello);
        self.clients.insert(token, c);
        if let Err(why) = self.flush(token) {
            self.drop_client(poll, token, why);
        }
        Ok(())
    }

    /// A free port id: the peer's pid as the kernel's first autobind picks, else the next free value
    /// of a counter going down from -4096.
    fn autobind(&mut self, pid: i32) -> u32 {
        let mut id = pid as u32;
        if pid <= 0 || self.portids.contains(&id) {
            loop {
                id = self.rover;
                self.rover = if self.rover == 0x8000_0000 { (-4096i32) as u32 } else { self.rover - 1 };
                if id != 0 && !self.portids.contains(&id) {
                    break;
                }
            }
        }
        self.portids.insert(id);
        id
    }

    /// Continues the client's pending reply, then reads and answers up to [`READ_BUDGET`]
    /// datagrams of it.
    fn serve(&mut self, poll: &Poll, t: Token, backend: &mut dyn Backend) {
        if !self.pump(poll, t) {
            return;
        }
        for _ in 0..READ_BUDGET {
            let Some(c) = self.clients.get(&t) else { return };
            let got = match sys::recv(c.fd.as_raw_fd(), &mut self.buf) {
                // End of the connection once the peer hung up; else an empty datagram, which
                // `answer` ignores (if the hang-up's event is still on its way, the next turn
                // sees it: this loop and the `more` queue are bounded).
                Ok(r) if r.len == 0 && !r.truncated && c.read_closed => Err(DropReason::Closed),
                Ok(r) => Ok(r),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(DropReason::Closed),
                Err(e) => Err(DropReason::Io("receive", e)),
            };
            let r = match got {
                Ok(r) => r,
                Err(why) => return self.drop_client(poll, t, why),
            };
            let buf = std::mem::take(&mut self.buf);
            let reply = self.answer(t, &buf[..r.len], r.truncated, backend);
            self.buf = buf;
            if let Err(why) = self.enqueue(t, reply.datagrams) {
                return self.drop_client(poll, t, why);
            }
            if let Some(p) = reply.pending {
                if let Some(c) = self.clients.get_mut(&t) {
                    c.pending = Some(p);
                }
                if !self.pump(poll, t) {
                    return;
                }
            }
        }
        if !self.more.contains(&t) {
            self.more.push_back(t);
        }
    }

    /// Produces the client's pending reply while its queue is short, [`PUMP_TURN`] bytes at most;
    /// true once no reply is pending. When it stops with one pending, a writable event (the queue
    /// drains) or the next turn (`more`) continues it.
    fn pump(&mut self, poll: &Poll, t: Token) -> bool {
        let mut produced = 0;
        loop {
            let Some(c) = self.clients.get_mut(&t) else { return false };
            let Some(p) = c.pending.as_mut() else { return true };
            if c.out_bytes >= PUMP_LOW_WATER {
                return false;
            }
            let (messages, done) = p.next(PUMP_CHUNK);
            if done {
                c.pending = None;
            }
            let n: usize = messages.iter().map(Vec::len).sum();
            produced += n;
            if let Err(why) = self.enqueue(t, proto::netlink::pack(&messages, REPLY_DATAGRAM_MAX)) {
                self.drop_client(poll, t, why);
                return false;
            }
            if !done && (n == 0 || produced >= PUMP_TURN) {
                if !self.more.contains(&t) {
                    self.more.push_back(t);
                }
                return false;
            }
        }
    }

    /// The reply to one datagram.
    fn answer(&mut self, t: Token, datagram: &[u8], truncated: bool, backend: &mut dyn Backend) -> Reply {
        let Some(c) = self.clients.get_mut(&t) else { return Vec::new().into() };
        let peer = c.peer;
        let Ok(req) = Header::parse(datagram) else {
            // Shorter than a header: a netlink socket ignores it silently.
            return Vec::new().into();
        };
        if truncated {
            return vec![private::error(&req, peer.portid, Errno::EMSGSIZE, None)].into();
        }
        if !private::is_private(datagram) {
            c.portid_fixed = true;
            return backend.handle(&peer, datagram);
        }
        let cmd = (req.kind & 0xff) as u8;
        let replies = match cmd {
            private::MSG_BIND => match private::portid_attr(datagram) {
                None | Some(0) => vec![private::error(&req, peer.portid, Errno::EINVAL, None)],
                Some(id) if id == peer.portid => {
                    c.portid_fixed = true;
                    vec![private::ack(&req, id)]
                }
                Some(_) if c.portid_fixed => vec![private::error(&req, peer.portid, Errno::EINVAL, None)],
                Some(id) if self.portids.contains(&id) => {
                    vec![private::error(&req, peer.portid, Errno(libc::EADDRINUSE), None)]
                }
                Some(id) => {
                    c.peer.portid = id;
                    c.portid_fixed = true;
                    self.portids.remove(&peer.portid);
                    self.portids.insert(id);
                    vec![private::ack(&req, id)]
                }
            },
            private::MSG_SHOW if !peer.privileged => {
                vec![private::error(&req, peer.portid, Errno::EPERM, None)]
            }
            private::MSG_SHOW => match private::show_what(datagram).and_then(|w| backend.show(w)) {
                Some(text) => private::show_replies(&req, peer.portid, &text),
                None => vec![private::error(&req, peer.portid, Errno::EINVAL, None)],
            },
            private::MSG_RELOAD if !peer.privileged => {
                vec![private::error(&req, peer.portid, Errno::EPERM, None)]
            }
            private::MSG_RELOAD => match reload(backend, &format!("request of uid {} pid {}", peer.uid, peer.pid)) {
                Ok(()) => vec![private::ack(&req, peer.portid)],
                Err(text) => vec![private::error(&req, peer.portid, Errno::EINVAL, Some(&text))],
            },
            _ => vec![private::error(&req, peer.portid, Errno::EOPNOTSUPP, None)],
        };
        replies.into()
    }

    /// Queues `datagrams` (one longer than [`REPLY_DATAGRAM_MAX`] cut at message boundaries) and
    /// sends what the socket takes.
    fn enqueue(&mut self, t: Token, datagrams: Vec<Vec<u8>>) -> Result<(), DropReason> {
        let Some(c) = self.clients.get_mut(&t) else { return Ok(()) };
        for d in datagrams {
            let parts = if d.len() > REPLY_DATAGRAM_MAX {
                let messages: Vec<Vec<u8>> = proto::netlink::Messages::new(&d)
                    .flatten()
                    .map(|m| d[m.offset..m.offset + m.header.len as usize].to_vec())
                    .collect();
                proto::netlink::pack(&messages, REPLY_DATAGRAM_MAX)
            } else {
                vec![d]
            };
            for p in parts.into_iter().filter(|p| !p.is_empty()) {
                c.out_bytes += p.len();
                c.out.push_back(p);
            }
        }
        if c.out_bytes > QUEUE_LIMIT {
            return Err(DropReason::QueueFull);
        }
        self.flush(t)
    }

    /// Sends queued datagrams until the socket would block.
    fn flush(&mut self, t: Token) -> Result<(), DropReason> {
        let Some(c) = self.clients.get_mut(&t) else { return Ok(()) };
        while let Some(d) = c.out.front() {
            match sys::send(c.fd.as_raw_fd(), d) {
                Ok(_) => {
                    c.out_bytes -= d.len();
                    c.out.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)) => {
                    return Err(DropReason::Closed)
                }
                Err(e) => return Err(DropReason::Io("send", e)),
            }
        }
        Ok(())
    }

    fn drop_client(&mut self, poll: &Poll, t: Token, why: DropReason) {
        if let Some(c) = self.clients.remove(&t) {
            let raw = c.fd.as_raw_fd();
            let _ = poll.registry().deregister(&mut SourceFd(&raw));
            self.portids.remove(&c.peer.portid);
            self.more.retain(|&m| m != t);
            if !matches!(why, DropReason::Closed) {
                eprintln!(
                    "ferrowall: control client pid {} uid {} portid {}: dropped: {why}",
                    c.peer.pid, c.peer.uid, c.peer.portid
                );
            }
        }
    }

    /// Number of connected clients.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

/// Reloads and logs the outcome.
fn reload(backend: &mut dyn Backend, why: &str) -> Result<(), String> {
    let r = backend.reload();
    match &r {
        Ok(()) => eprintln!("ferrowall: reload ({why}): done"),
        Err(e) => eprintln!("ferrowall: reload ({why}): {e}; keeping the running rules"),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autobind_prefers_the_pid_then_counts_down() {
        let l = std::fs::File::open("/dev/null").unwrap();
        let mut s = ControlServer::new(l.into(), None);
        assert_eq!(s.autobind(1234), 1234);
        assert_eq!(s.autobind(1234), (-4096i32) as u32);
        assert_eq!(s.autobind(1234), (-4097i32) as u32);
        assert_eq!(s.autobind(0), (-4098i32) as u32);
        s.portids.remove(&1234);
        assert_eq!(s.autobind(1234), 1234);
    }
}
