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
//! * Connection events: a client joins the conntrack multicast groups (`NFNLGRP_CONNTRACK_NEW`,
//!   `UPDATE`, `DESTROY`: bits 0 to 2 of its mask) with [`private::MSG_GROUPS`], as the shim sends
//!   for `bind` with `nl_groups` or `NETLINK_ADD_MEMBERSHIP`; joining needs privilege (`EPERM`
//!   otherwise, as the kernel's `CAP_NET_ADMIN` check). While anyone listens, the loop asks the
//!   backend to record the union of the groups ([`Backend::want_events`]) and, every
//!   [`EVENT_TICK`] and after every turn, takes the recorded events ([`Backend::next_event`]),
//!   each encoded once, and queues each as a datagram of its own (a netlink listener receives one
//!   event per datagram) for every client in its group. The workers record events without ever
//!   waiting for this loop. A client whose queue holds more than [`EVENT_QUEUE_LIMIT`] bytes (or
//!   when all clients' queues together hold more than [`EVENT_TOTAL_LIMIT`]) is congested: its
//!   events are dropped and counted until its queue has drained, and it is sent a
//!   [`private::MSG_OVERRUN`] notice at the next chance, ahead of anything else queued for it,
//!   which the shim turns into one `ENOBUFS` — as the kernel marks a netlink listener whose
//!   receive buffer overran. Events the backend itself had to drop (its queue was full) congest
//!   every listener alike. The counts appear in the `events` line of [`private::SHOW_STATS`].
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
/// How often recorded events are taken and delivered while anyone listens.
pub const EVENT_TICK: std::time::Duration = std::time::Duration::from_millis(5);
/// Events taken from the backend per turn of the loop, at most.
pub const EVENT_BATCH: usize = 4096;
/// Queued bytes beyond which a listener is congested and its events are dropped (conntrackd's
/// usual netlink buffer size).
pub const EVENT_QUEUE_LIMIT: usize = 2 << 20;
/// Queued bytes of all clients together beyond which events are dropped for every listener.
pub const EVENT_TOTAL_LIMIT: usize = 64 << 20;
/// The groups that carry connection events (NEW, UPDATE, DESTROY).
pub const CONNTRACK_GROUPS: u32 = 0b111;

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
    /// Re-reads the configuration and the rule file; on error the running rules stay and the
    /// error says where and why. `Ok(Some(warning))`: reloaded, but the warning names what the
    /// reload could not apply.
    fn reload(&mut self) -> Result<Option<String>, String>;
    /// The text of a view of the daemon's state ([`private::SHOW_CONNTRACK`],
    /// [`private::SHOW_STATS`]); `None` for a view it does not know.
    fn show(&mut self, what: u8) -> Option<String>;
    /// Records connection events of the groups in `mask` (bits of [`CONNTRACK_GROUPS`]) from now
    /// on; 0 stops.
    fn want_events(&mut self, _mask: u32) {}
    /// The oldest recorded event, encoded: the bit of its group and its message.
    fn next_event(&mut self) -> Option<(u32, Vec<u8>)> {
        None
    }
    /// Events the backend dropped since the start because they were not taken fast enough.
    fn events_dropped(&self) -> u64 {
        0
    }
    /// Called every [`EVENT_TICK`] or so while anyone listens, before the events are taken (the
    /// daemon without workers sweeps its table then, so that expiries are reported).
    fn events_tick(&mut self) {}
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
    /// The multicast groups joined (group `n` is bit `n - 1`).
    groups: u32,
    /// Events are being dropped for this client until its queue drains.
    congested: bool,
    /// An overrun notice is to be sent before anything else.
    notice: bool,
    /// Events dropped since the last notice was sent.
    lost_unreported: u32,
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
    /// Bytes queued for all clients together.
    queued: usize,
    /// Clients in at least one conntrack group, and the union of their groups.
    listeners: Vec<Token>,
    wanted: u32,
    /// Events the backend had recorded and not yet delivered when the last turn ended.
    events_waiting: bool,
    events: EventCounts,
    /// When [`Backend::events_tick`] was last called.
    last_tick: std::time::Instant,
}

/// What happened to the connection events, since the start.
#[derive(Debug, Default, Clone, Copy)]
struct EventCounts {
    /// Event datagrams queued for listeners (one per listener per event).
    delivered: u64,
    /// Events dropped for a congested listener (one per listener per event).
    lost: u64,
    /// Events the backend dropped, as last read.
    dropped: u64,
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
            queued: 0,
            listeners: Vec::new(),
            wanted: 0,
            events_waiting: false,
            events: EventCounts::default(),
            last_tick: now(),
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
            let timeout = if !self.more.is_empty() || self.events_waiting {
                Some(std::time::Duration::ZERO)
            } else if self.wanted != 0 {
                Some(EVENT_TICK)
            } else {
                None
            };
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
            self.deliver_events(&poll, backend);
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
            groups: 0,
            congested: false,
            notice: false,
            lost_unreported: 0,
        };
        let hello = private::hello(portid);
        c.out_bytes += hello.len();
        self.queued += hello.len();
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
            // The events the request caused go out before its answer, as the kernel multicasts
            // them from within the request's handler: a listener learns of a change before the
            // requester is told it is done.
            self.deliver_events(poll, backend);
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
            private::MSG_SHOW => match private::show_what(datagram) {
                Some(w) => match backend.show(w) {
                    Some(mut text) => {
                        if w == private::SHOW_STATS {
                            text.push_str(&self.event_stats(backend));
                        }
                        private::show_replies(&req, peer.portid, &text)
                    }
                    None => vec![private::error(&req, peer.portid, Errno::EINVAL, None)],
                },
                None => vec![private::error(&req, peer.portid, Errno::EINVAL, None)],
            },
            private::MSG_GROUPS => {
                let result = match private::parse_groups_request(datagram) {
                    None => Err(Errno::EINVAL),
                    Some((op, groups)) => self.change_groups(t, peer.privileged, op, groups),
                };
                match result {
                    Ok(()) => vec![private::ack(&req, peer.portid)],
                    Err(e) => vec![private::error(&req, peer.portid, e, None)],
                }
            }
            private::MSG_RELOAD if !peer.privileged => {
                vec![private::error(&req, peer.portid, Errno::EPERM, None)]
            }
            private::MSG_RELOAD => match reload(backend, &format!("request of uid {} pid {}", peer.uid, peer.pid)) {
                Ok(None) => vec![private::ack(&req, peer.portid)],
                // An ack that carries a message: what the kernel's extended acks call a warning.
                Ok(Some(warning)) => vec![private::error(&req, peer.portid, Errno(0), Some(&warning))],
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
                self.queued += p.len();
                c.out.push_back(p);
            }
        }
        if c.out_bytes > QUEUE_LIMIT {
            return Err(DropReason::QueueFull);
        }
        self.flush(t)
    }

    /// Sends an overrun notice if one is due, then queued datagrams, until the socket would block.
    fn flush(&mut self, t: Token) -> Result<(), DropReason> {
        let Some(c) = self.clients.get_mut(&t) else { return Ok(()) };
        while c.notice {
            match sys::send(c.fd.as_raw_fd(), &private::overrun(c.peer.portid, c.lost_unreported)) {
                Ok(_) => {
                    c.notice = false;
                    c.lost_unreported = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)) => {
                    return Err(DropReason::Closed)
                }
                Err(e) => return Err(DropReason::Io("send", e)),
            }
        }
        while let Some(d) = c.out.front() {
            match sys::send(c.fd.as_raw_fd(), d) {
                Ok(_) => {
                    c.out_bytes -= d.len();
                    self.queued -= d.len();
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
            self.listeners.retain(|&m| m != t);
            self.queued -= c.out_bytes;
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

    /// Changes the multicast groups of client `t` as a netlink socket's change: `op`
    /// [`private::GROUPS_SET`] replaces them by the mask `groups`, [`private::GROUPS_ADD`] and
    /// [`private::GROUPS_DROP`] join or leave group number `groups` (1 to
    /// [`private::GROUPS_MAX`]). Joining, or any membership option, needs privilege.
    fn change_groups(&mut self, t: Token, privileged: bool, op: u8, groups: u32) -> Result<(), Errno> {
        let Some(c) = self.clients.get_mut(&t) else { return Ok(()) };
        c.groups = match op {
            private::GROUPS_SET if groups != 0 && !privileged => return Err(Errno::EPERM),
            private::GROUPS_SET => groups,
            private::GROUPS_ADD | private::GROUPS_DROP if !privileged => return Err(Errno::EPERM),
            private::GROUPS_ADD | private::GROUPS_DROP if groups == 0 || groups > private::GROUPS_MAX => {
                return Err(Errno::EINVAL)
            }
            private::GROUPS_ADD => c.groups | 1 << (groups - 1),
            private::GROUPS_DROP => c.groups & !(1 << (groups - 1)),
            _ => return Err(Errno::EINVAL),
        };
        let listening = c.groups & CONNTRACK_GROUPS != 0;
        match (listening, self.listeners.contains(&t)) {
            (true, false) => self.listeners.push(t),
            (false, true) => self.listeners.retain(|&m| m != t),
            _ => {}
        }
        Ok(())
    }

    /// Tells the backend which events to record (the union of the listeners' groups), then takes up
    /// to [`EVENT_BATCH`] recorded events and queues each for every listener of its group that is
    /// not congested.
    fn deliver_events(&mut self, poll: &Poll, backend: &mut dyn Backend) {
        let wanted =
            self.listeners.iter().filter_map(|t| self.clients.get(t)).fold(0, |m, c| m | c.groups) & CONNTRACK_GROUPS;
        if wanted != self.wanted {
            backend.want_events(wanted);
            self.wanted = wanted;
            if wanted == 0 {
                // Nobody listens: what is left is nobody's (bounded by the backend's queue).
                for _ in 0..1 << 20 {
                    if backend.next_event().is_none() {
                        break;
                    }
                }
            }
        }
        if wanted == 0 {
            self.events_waiting = false;
            return;
        }
        if self.last_tick.elapsed() >= EVENT_TICK {
            self.last_tick = now();
            backend.events_tick();
        }
        let mut touched = Vec::new();
        // Events the backend dropped were lost to every listener: each is told, once.
        let dropped = backend.events_dropped();
        if dropped > self.events.dropped {
            let n = u32::try_from(dropped - self.events.dropped).unwrap_or(u32::MAX);
            self.events.dropped = dropped;
            for &t in &self.listeners {
                if let Some(c) = self.clients.get_mut(&t) {
                    c.notice = true;
                    c.lost_unreported = c.lost_unreported.saturating_add(n);
                    touched.push(t);
                }
            }
        }
        let mut taken = 0;
        while taken < EVENT_BATCH {
            let Some((bit, msg)) = backend.next_event() else { break };
            taken += 1;
            for &t in &self.listeners {
                let Some(c) = self.clients.get_mut(&t) else { continue };
                if c.groups & bit == 0 {
                    continue;
                }
                // Congestion ends once the client has taken everything queued for it.
                if c.congested && c.out.is_empty() && !c.notice {
                    c.congested = false;
                }
                let room = c.out_bytes + msg.len() <= EVENT_QUEUE_LIMIT && self.queued + msg.len() <= EVENT_TOTAL_LIMIT;
                if c.congested || !room {
                    if !c.congested {
                        c.congested = true;
                        c.notice = true;
                        touched.push(t);
                    }
                    c.lost_unreported = c.lost_unreported.saturating_add(1);
                    self.events.lost += 1;
                    continue;
                }
                c.out_bytes += msg.len();
                self.queued += msg.len();
                c.out.push_back(msg.clone());
                self.events.delivered += 1;
                if touched.last() != Some(&t) {
                    touched.push(t);
                }
            }
        }
        self.events_waiting = taken == EVENT_BATCH;
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            if let Err(why) = self.flush(t) {
                self.drop_client(poll, t, why);
            }
        }
    }

    /// The `events` line of the statistics.
    fn event_stats(&self, backend: &dyn Backend) -> String {
        let e = &self.events;
        format!(
            "events: listeners={} delivered={} lost={} dropped={}\n",
            self.listeners.len(),
            e.delivered,
            e.lost,
            backend.events_dropped()
        )
    }
}

/// The control loop's clock.
#[allow(clippy::disallowed_methods)] // io owns the clocks
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Reloads and logs the outcome.
fn reload(backend: &mut dyn Backend, why: &str) -> Result<Option<String>, String> {
    let r = backend.reload();
    match &r {
        Ok(None) => eprintln!("ferrowall: reload ({why}): done"),
        Ok(Some(warning)) => eprintln!("ferrowall: reload ({why}): done; {warning}"),
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

    /// A backend with `left` events of `size` bytes (group NEW) to give.
    struct Source {
        left: usize,
        size: usize,
        wanted: u32,
    }

    impl Backend for Source {
        fn handle(&mut self, _: &PeerInfo, _: &[u8]) -> Reply {
            Vec::new().into()
        }
        fn reload(&mut self) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn show(&mut self, _: u8) -> Option<String> {
            None
        }
        fn want_events(&mut self, mask: u32) {
            self.wanted = mask;
        }
        fn next_event(&mut self) -> Option<(u32, Vec<u8>)> {
            (self.left > 0 && self.wanted & 1 != 0).then(|| {
                self.left -= 1;
                let mut m = vec![0xee; self.size];
                m[..4].copy_from_slice(&(self.size as u32).to_ne_bytes());
                m[4..6].copy_from_slice(&0x100u16.to_ne_bytes());
                (1, m)
            })
        }
    }

    /// Reads every datagram waiting on `sock`: (events, the notice's lost count if one came, and
    /// at which position).
    fn read_all(sock: &std::os::unix::net::UnixDatagram) -> (usize, Vec<(usize, u32)>) {
        let mut buf = vec![0u8; 4096];
        let (mut events, mut notices) = (0, Vec::new());
        while let Ok(n) = sock.recv(&mut buf) {
            match private::parse_overrun(&buf[..n]) {
                Some(lost) => notices.push((events, lost)),
                None => events += 1,
            }
        }
        (events, notices)
    }

    #[test]
    fn a_listener_that_falls_behind_loses_events_and_is_told_once() {
        let l = std::fs::File::open("/dev/null").unwrap();
        let mut s = ControlServer::new(l.into(), None);
        let poll = Poll::new().unwrap();
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        s.add_client(&poll, OwnedFd::from(ours)).unwrap();
        let t = Token(FIRST_CLIENT);
        let mut hello = [0u8; 64];
        let n = theirs.recv(&mut hello).unwrap();
        assert!(private::parse_hello(&hello[..n]).is_some());
        // Joining needs privilege; group numbers run from 1 to 32.
        assert_eq!(s.change_groups(t, false, private::GROUPS_SET, 1), Err(Errno::EPERM));
        assert_eq!(s.change_groups(t, false, private::GROUPS_SET, 0), Ok(()));
        assert_eq!(s.change_groups(t, true, private::GROUPS_ADD, 33), Err(Errno::EINVAL));
        assert_eq!(s.change_groups(t, true, private::GROUPS_ADD, 0), Err(Errno::EINVAL));
        assert_eq!(s.change_groups(t, true, private::GROUPS_ADD, 1), Ok(()));
        assert_eq!(s.clients[&t].groups, 1);
        // 4 MiB of events for a listener that does not read: about 2 MiB are queued (besides what
        // the socket holds), the rest dropped and counted.
        let size = 200;
        let total = (4 << 20) / size;
        let mut b = Source { left: total, size, wanted: 0 };
        for _ in 0..total / EVENT_BATCH + 2 {
            s.deliver_events(&poll, &mut b);
        }
        assert_eq!((b.wanted, b.left), (1, 0));
        let (queued, lost) = (s.clients[&t].out_bytes, s.events.lost);
        assert!(queued <= EVENT_QUEUE_LIMIT && queued + size > EVENT_QUEUE_LIMIT, "{queued}");
        assert!(lost > 0 && s.events.delivered + lost == total as u64, "{lost} {:?}", s.events);
        assert!(s.clients[&t].congested);
        // It reads: what the socket held, the notice (with the count), what was queued.
        let mut got = 0;
        let mut notices = Vec::new();
        for _ in 0..10_000 {
            let (n, seen) = read_all(&theirs);
            notices.extend(seen.iter().map(|(at, l)| (at + got, *l)));
            got += n;
            if s.clients[&t].out.is_empty() && !s.clients[&t].notice {
                break;
            }
            s.flush(t).unwrap();
        }
        let (n, seen) = read_all(&theirs);
        got += n;
        assert!(seen.is_empty());
        assert_eq!(got as u64, s.events.delivered);
        assert_eq!(notices.len(), 1, "told once: {notices:?}");
        assert!(notices[0].0 > 0 && notices[0].0 < got, "after what the socket held: {notices:?}");
        assert_eq!(u64::from(notices[0].1), lost, "{notices:?}");
        // Caught up: later events flow again, no new notice.
        b.left = 10;
        s.deliver_events(&poll, &mut b);
        assert!(!s.clients[&t].congested);
        assert_eq!(read_all(&theirs), (10, Vec::new()));
        // Nobody listens: the backend stops recording.
        assert_eq!(s.change_groups(t, true, private::GROUPS_DROP, 1), Ok(()));
        s.deliver_events(&poll, &mut b);
        assert_eq!(b.wanted, 0);
        assert_eq!(s.queued, 0);
    }
}
