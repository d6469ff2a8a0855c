//! Abusive control clients against the real `ferrowall run` daemon (issue "Reliability", point 5).
//! Needs root, `setpriv` and `/usr/bin/python3` (which uid 65534 can run); without them it fails, by design.
//!
//! `abusive_clients_are_contained` runs one daemon holding 300 policies through a warm-up round and
//! [`ROUNDS`] measured rounds of every abuse below, with [`IDLE`] idle connections (connected, never
//! sending or reading) and one client whose single 300-policy dump it reads only at the end of the
//! round, all open throughout the round:
//! * [`CONCURRENT`] clients on as many threads, released together by a barrier, each creating,
//!   getting, dumping and deleting a policy of its own: every reply is checked (type, name, errno,
//!   sequence number, the client's own port id, at most 4096 bytes per datagram) and the port ids
//!   are all distinct;
//! * malformed datagrams on one connection: exactly 64 KiB (processed), 64 KiB + 1 and 100 KiB
//!   (`EMSGSIZE`, the daemon's documented answer for a datagram that did not fit its buffer, where
//!   the kernel refuses the send with the same errno), cut short, `nlmsg_len` larger than the
//!   datagram, smaller than a header and zero, an empty datagram, and [`RANDOM`] random datagrams:
//!   each answer is compared byte for byte with what `engine::control::handle` (the kernel's
//!   `nfnetlink_rcv`/`netlink_rcv_skb` walk) answers on a model fed the same requests, and after
//!   each one a sentinel request on the same connection, and one on another, are answered;
//! * a client sending dump requests without ever reading: it is dropped once its queue passes
//!   `QUEUE_LIMIT` (its sends fail with `EPIPE`), while another client is served meanwhile;
//! * at the end of the round the late reader gets its whole dump, every connection is closed, and
//!   the daemon's descriptors and threads are back to what they were.
//!
//! The daemon's `VmRSS` (from `/proc/PID/status`) after the measured rounds may exceed the most
//! it held during the warm-up round (its `VmHWM` then: the allocator hands memory back at moments
//! of its own, so the RSS sampled just after a round varies by megabytes, 19–24 MiB in five runs of
//! the same binary) by at most [`RSS_GROWTH_LIMIT_KIB`], and its peak (`VmHWM`) may exceed its
//! RSS before the abuse by at most [`RSS_PEAK_LIMIT_KIB`]. At the end `nfct timeout list` (through
//! `ferroctl exec`) lists the 300 policies and the log names the reason of every drop.
//!
//! `only_the_owner_and_the_group_may_connect` checks the socket file's mode (0660) and that uid
//! 65534 outside every group gets `EACCES` from `connect` (and connects once the file is widened
//! to 0666, so the mode is what refused it).
//!
//! Every daemon runs in a directory of its own and is stopped by its PID and the directory removed
//! when the test ends, also on failure; every loop is bounded in count and time.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Barrier;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use engine::conntrack::{self, Conntrack};
use engine::control::{self, Control, Peer};
use engine::timeouts::Registry;
use ferrowall_tests::clock;
use ferrowall_tests::daemon::{run, Daemon, LIMIT};
use proto::cttimeout::{attr, nlmsg_type, MsgType};
use proto::netlink::{flags, msg_type, pack, Attrs, Header, MessageBuilder, Messages, Nfgenmsg, HDRLEN};
use proto::{private, Errno};

/// Where the daemons' directories are named from.
const DIR: &str = "ferrowall-abuse-";
/// Policies the daemon holds throughout.
const POLICIES: usize = 300;
/// Measured rounds (after one warm-up round).
const ROUNDS: usize = 10;
/// Concurrent well-behaved clients per round.
const CONCURRENT: usize = 200;
/// Idle connections per round.
const IDLE: usize = 50;
/// Random datagrams per round.
const RANDOM: usize = 100;
/// Allowed growth of the daemon's RSS over the measured rounds, above the most it held during
/// the warm-up round.
const RSS_GROWTH_LIMIT_KIB: u64 = 4096;
/// Allowed peak RSS above the daemon's before the abuse: one flooding client's queue
/// (`control_socket::QUEUE_LIMIT`, 8 MiB) and as much again for everything else.
const RSS_PEAK_LIMIT_KIB: u64 = 16 * 1024;
/// How long any single read from the daemon may take.
const READ_LIMIT: Duration = Duration::from_secs(20);
/// How long a served client may wait for an answer while others abuse the daemon.
const LATENCY_LIMIT: Duration = Duration::from_secs(2);
/// The daemon's receive buffer (`control_socket::RECV_BUFFER`).
const RECV_BUFFER: usize = 64 * 1024;
/// The largest reply datagram (`control_socket::REPLY_DATAGRAM_MAX`).
const REPLY_MAX: usize = 4096;
/// Sequence numbers of sentinel requests (random datagrams may carry anything, but the generator
/// is seeded, and none of its datagrams use this range).
const SENTINEL_SEQ: u32 = 0x5e00_0000;

// ---- messages -------------------------------------------------------------------------------

fn policy_name(i: usize) -> String {
    format!("p{i:03}")
}

fn builder(t: MsgType, fl: u16, seq: u32, family: u8) -> MessageBuilder {
    let mut b = MessageBuilder::new(nlmsg_type(t), flags::REQUEST | fl, seq, 0);
    b.nfgenmsg(Nfgenmsg { family, version: 0, res_id: 0 });
    b
}

/// `nfct timeout add NAME inet tcp established SECS`.
fn new_msg(name: &str, secs: u32, seq: u32) -> Vec<u8> {
    let mut b = builder(MsgType::New, flags::ACK | flags::CREATE, seq, libc::AF_INET as u8);
    b.put_strz(attr::NAME, name.as_bytes()).put_be16(attr::L3PROTO, libc::AF_INET as u16).put_u8(attr::L4PROTO, 6);
    let nest = b.nest_start(attr::DATA);
    b.put_be32(3, secs); // CTA_TIMEOUT_TCP_ESTABLISHED
    b.nest_end(nest);
    b.finish()
}

fn get_msg(name: &str, seq: u32) -> Vec<u8> {
    let mut b = builder(MsgType::Get, flags::ACK, seq, 0);
    b.put_strz(attr::NAME, name.as_bytes());
    b.finish()
}

fn dump_msg(seq: u32) -> Vec<u8> {
    builder(MsgType::Get, flags::DUMP, seq, 0).finish()
}

fn delete_msg(name: &str, seq: u32) -> Vec<u8> {
    let mut b = builder(MsgType::Delete, flags::ACK, seq, 0);
    b.put_strz(attr::NAME, name.as_bytes());
    b.finish()
}

/// The policy name of an object message.
fn name_of(msg: &[u8]) -> Option<String> {
    let h = Header::parse(msg).ok()?;
    let attrs = msg.get(HDRLEN + Nfgenmsg::LEN..(h.len as usize).min(msg.len()))?;
    let a = Attrs::new(attrs).map_while(Result::ok).find(|a| a.kind == attr::NAME)?;
    let s = a.payload.split(|&c| c == 0).next().unwrap_or(a.payload);
    Some(String::from_utf8_lossy(s).into_owned())
}

/// The errno of an `NLMSG_ERROR` message (0 for an ack).
fn errno_of(msg: &[u8]) -> Option<i32> {
    let h = Header::parse(msg).ok()?;
    if h.kind != msg_type::ERROR {
        return None;
    }
    Some(i32::from_ne_bytes(msg.get(HDRLEN..HDRLEN + 4)?.try_into().ok()?).wrapping_neg())
}

// ---- a client -------------------------------------------------------------------------------

/// One control connection, with the port id its greeting announced.
struct Client {
    s: Socket,
    portid: u32,
    seq: u32,
}

impl Client {
    /// Connects and reads the greeting.
    fn connect(path: &Path) -> io::Result<Client> {
        let s = Client::connect_raw(path)?;
        let hello = recv_on(&s)?;
        let portid = private::parse_hello(&hello).ok_or_else(|| io::Error::other("no greeting"))?;
        Ok(Client { s, portid, seq: 1 })
    }

    /// Connects without reading anything.
    fn connect_raw(path: &Path) -> io::Result<Socket> {
        let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        s.connect(&SockAddr::unix(path)?)?;
        s.set_read_timeout(Some(READ_LIMIT))?;
        s.set_write_timeout(Some(READ_LIMIT))?;
        Ok(s)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn send(&self, d: &[u8]) -> Result<(), String> {
        match self.s.send(d) {
            Ok(n) if n == d.len() => Ok(()),
            Ok(n) => Err(format!("sent {n} of {} bytes", d.len())),
            Err(e) => Err(format!("send: {e}")),
        }
    }

    fn recv(&self) -> Result<Vec<u8>, String> {
        recv_on(&self.s).map_err(|e| format!("receive (port id {}): {e}", self.portid))
    }

    /// Sends request `msg` and returns the reply messages up to the `NLMSG_ERROR` or `NLMSG_DONE`
    /// that ends it, checking that each datagram fits 4096 bytes and each message carries the
    /// request's sequence number and this connection's port id.
    fn request(&mut self, msg: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let seq = Header::parse(msg).map_err(|e| e.to_string())?.seq;
        self.send(msg)?;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let d = self.recv()?;
            if d.len() > REPLY_MAX {
                return Err(format!("a {}-byte reply datagram", d.len()));
            }
            for m in Messages::new(&d) {
                let m = m.map_err(|e| format!("malformed reply: {e}"))?;
                let h = m.header;
                if h.seq != seq || h.pid != self.portid {
                    return Err(format!("reply seq {} pid {}, expected {seq} and {}", h.seq, h.pid, self.portid));
                }
                out.push(d[m.offset..m.offset + h.len as usize].to_vec());
                if h.kind == msg_type::ERROR || h.kind == msg_type::DONE {
                    return Ok(out);
                }
            }
        }
        Err("no end to the reply after 10000 datagrams".into())
    }

    /// A request answered by a single ack or error: its errno.
    fn errno(&mut self, msg: &[u8]) -> Result<i32, String> {
        let r = self.request(msg)?;
        match r.as_slice() {
            [m] => errno_of(m).ok_or_else(|| "not an NLMSG_ERROR".into()),
            _ => Err(format!("{} messages, expected one NLMSG_ERROR", r.len())),
        }
    }

    /// GET `name`: the object's name, then an ack.
    fn get(&mut self, name: &str) -> Result<(), String> {
        let seq = self.next_seq();
        let r = self.request(&get_msg(name, seq))?;
        match r.as_slice() {
            [obj, ack] if name_of(obj).as_deref() == Some(name) && errno_of(ack) == Some(0) => Ok(()),
            _ => Err(format!(
                "GET {name}: {} messages: {:?}",
                r.len(),
                r.iter().map(|m| errno_of(m)).collect::<Vec<_>>()
            )),
        }
    }

    /// A dump: the names, in order, after checking it ends with `NLMSG_DONE`.
    fn dump(&mut self) -> Result<Vec<String>, String> {
        let seq = self.next_seq();
        let r = self.request(&dump_msg(seq))?;
        let (done, objs) = r.split_last().ok_or("empty dump")?;
        if Header::parse(done).map(|h| h.kind) != Ok(msg_type::DONE) {
            return Err(format!("dump ended with errno {:?}", errno_of(done)));
        }
        objs.iter().map(|m| name_of(m).ok_or_else(|| "object without a name".to_owned())).collect()
    }
}

fn recv_on(s: &Socket) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; 2 * RECV_BUFFER];
    let n = (&*s).read(&mut b)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    b.truncate(n);
    Ok(b)
}

// ---- the model --------------------------------------------------------------------------------

/// The handler the daemon runs, on state of its own fed the same requests: what the daemon must
/// answer, datagram by datagram.
struct Model {
    registry: Registry,
    ct: Conntrack,
}

impl Model {
    fn new() -> Model {
        Model { registry: Registry::new(), ct: Conntrack::new(conntrack::DEFAULT_MAX, conntrack::Config::default()) }
    }

    fn answer(&self, portid: u32, datagram: &[u8]) -> Vec<Vec<u8>> {
        let ctl = Control { registry: &self.registry, ct: &self.ct };
        pack(&control::handle(&ctl, Peer { portid, privileged: true }, datagram), REPLY_MAX)
    }
}

/// Sends `datagram`, then a sentinel GET of `p000`; returns the datagrams that came before the
/// sentinel's answer (which is checked), i.e. the whole answer to `datagram`.
fn exchange(c: &mut Client, datagram: &[u8], sentinel: u32) -> Result<Vec<Vec<u8>>, String> {
    c.send(datagram)?;
    let seq = SENTINEL_SEQ + sentinel;
    c.send(&get_msg(&policy_name(0), seq))?;
    let mut before = Vec::new();
    for _ in 0..10_000 {
        let d = c.recv()?;
        if Header::parse(&d).is_ok_and(|h| h.seq == seq) {
            let mut msgs: Vec<Vec<u8>> = Messages::new(&d)
                .map_while(Result::ok)
                .map(|m| d[m.offset..m.offset + m.header.len as usize].to_vec())
                .collect();
            if msgs.len() == 1 {
                msgs.push(c.recv()?);
            }
            if msgs.len() != 2 || name_of(&msgs[0]).as_deref() != Some("p000") || errno_of(&msgs[1]) != Some(0) {
                return Err("the sentinel GET of p000 was not answered with p000 and an ack".into());
            }
            return Ok(before);
        }
        before.push(d);
    }
    Err("no sentinel answer after 10000 datagrams".into())
}

// ---- the abuses ---------------------------------------------------------------------------------

/// A seeded xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A random datagram: raw bytes, a header with a random payload, or a cttimeout header with random
/// attributes; never of the private subsystem (which the model does not cover), never with a
/// sentinel sequence number, never with a DELETE message (see below).
fn random_datagram(rng: &mut Rng) -> Vec<u8> {
    loop {
        let d = match rng.below(3) {
            0 => {
                let n = rng.below(64);
                rng.bytes(n)
            }
            kind => {
                let n = rng.below(200);
                let mut d = rng.bytes(HDRLEN + n);
                let t = if kind == 1 {
                    rng.below(0x10000) as u16
                } else {
                    nlmsg_type(MsgType::from_u8(rng.below(6) as u8))
                };
                let fl = (rng.next() as u16) | flags::REQUEST;
                let len = if rng.below(4) == 0 { rng.next() as u32 } else { d.len() as u32 };
                let mut h = Header::parse(&d).expect("16 bytes");
                (h.len, h.kind, h.flags) = (len, t, fl);
                if kind == 2 {
                    d.truncate(HDRLEN);
                    d.extend_from_slice(&Nfgenmsg { family: rng.below(11) as u8, version: 0, res_id: 0 }.to_bytes());
                    for _ in 0..rng.below(6) {
                        let plen = rng.below(40);
                        let nla_len = if rng.below(8) == 0 { rng.below(0x10000) } else { 4 + plen };
                        d.extend_from_slice(&(nla_len as u16).to_ne_bytes());
                        d.extend_from_slice(&(rng.below(8) as u16 | (rng.below(4) as u16) << 14).to_ne_bytes());
                        let p = rng.bytes(plen);
                        d.extend_from_slice(&p);
                        d.resize(d.len().next_multiple_of(4), 0);
                    }
                    if len as usize == HDRLEN + n {
                        h.len = d.len() as u32;
                    }
                }
                h.emit(&mut d);
                d
            }
        };
        let sentinel = Header::parse(&d).is_ok_and(|h| h.seq & 0xff00_0000 == SENTINEL_SEQ);
        // A DELETE without a name is a flush, which would take the policies the other checks use.
        let delete = Messages::new(&d).map_while(Result::ok).any(|m| m.header.kind == nlmsg_type(MsgType::Delete));
        if !private::is_private(&d) && !sentinel && !delete {
            return d;
        }
    }
}

/// The malformed datagrams of one round on connection `c`, with `observer` served after each.
fn malformed(c: &mut Client, observer: &mut Client, model: &Model, round: u64) -> Result<usize, String> {
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // Exactly the receive buffer: processed. A GET of p007 padded with an unknown attribute.
    let mut b = builder(MsgType::Get, flags::ACK, 11, 0);
    b.put_strz(attr::NAME, b"p007");
    let used = HDRLEN + Nfgenmsg::LEN + 12 + 4;
    b.put(99, &vec![0xa5; RECV_BUFFER - used]);
    let full = b.finish();
    assert_eq!(full.len(), RECV_BUFFER);
    cases.push(("a 64 KiB datagram".into(), full.clone()));
    let good = new_msg("never-made", 5, 12);
    let mut cut = good.clone();
    cut.truncate(30);
    cases.push(("a message cut short (nlmsg_len beyond the datagram)".into(), cut));
    cases.push(("10 bytes, less than a header".into(), good[..10].to_vec()));
    cases.push(("an empty datagram".into(), Vec::new()));
    for (what, len) in [
        ("nlmsg_len 1000 in 40 bytes", 1000u32),
        ("nlmsg_len 8", 8),
        ("nlmsg_len 0", 0),
        ("nlmsg_len 2^32-1", u32::MAX),
    ] {
        let mut d = good.clone();
        d[..4].copy_from_slice(&len.to_ne_bytes());
        cases.push((what.into(), d));
    }
    // A good first message followed by one whose length lies: the first is processed, the walk
    // stops at the second.
    let mut two = get_msg("p001", 13);
    let mut bad = delete_msg("p002", 14);
    bad[..4].copy_from_slice(&4000u32.to_ne_bytes());
    two.extend_from_slice(&bad);
    cases.push(("a good message, then a lying one".into(), two));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (round + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    for i in 0..RANDOM {
        cases.push((format!("random datagram {i} of round {round}"), random_datagram(&mut rng)));
    }
    let mut n = 0u32;
    for (what, d) in &cases {
        n += 1;
        let expected = model.answer(c.portid, d);
        let got = exchange(c, d, n)
            .map_err(|e| format!("{what} ({d:02x?}): {e}; the kernel's walk answers {expected:02x?}"))?;
        if got != expected {
            return Err(format!(
                "{what} ({d:02x?}): the daemon answered {got:02x?}, the kernel's walk {expected:02x?}"
            ));
        }
        observer.get("p000").map_err(|e| format!("another client after {what}: {e}"))?;
    }
    // Larger than the receive buffer: EMSGSIZE, quoting the header.
    for size in [RECV_BUFFER + 1, 100 * 1024] {
        let mut d = full.clone();
        d.resize(size, 0);
        let h = Header::parse(&d).expect("a header");
        n += 1;
        let got = exchange(c, &d, n).map_err(|e| format!("a {size}-byte datagram: {e}"))?;
        let expected = vec![private::error(&h, c.portid, Errno::EMSGSIZE, None)];
        if got != expected || errno_of(&got[0]) != Some(libc::EMSGSIZE) {
            return Err(format!("a {size}-byte datagram: answered {got:02x?}, expected EMSGSIZE {expected:02x?}"));
        }
        observer.get("p000").map_err(|e| format!("another client after a {size}-byte datagram: {e}"))?;
    }
    Ok(cases.len() + 2)
}

/// [`CONCURRENT`] clients released together, each with a policy of its own: the port ids.
fn concurrent(path: &Path, round: usize) -> Result<Vec<u32>, String> {
    let barrier = Barrier::new(CONCURRENT);
    let results: Vec<Result<u32, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let c = Client::connect(path).map_err(|e| format!("connect: {e}"));
                    barrier.wait();
                    session(c?, &format!("c{round}-{i}"), i).map_err(|e| format!("client {i}: {e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect()
    });
    let portids = results.into_iter().collect::<Result<Vec<u32>, String>>()?;
    let distinct: HashSet<u32> = portids.iter().copied().collect();
    if distinct.len() != portids.len() || distinct.contains(&0) {
        return Err(format!("{} distinct nonzero port ids among {} clients", distinct.len(), portids.len()));
    }
    Ok(portids)
}

fn session(mut c: Client, name: &str, i: usize) -> Result<u32, String> {
    let seq = c.next_seq();
    match c.errno(&new_msg(name, 100 + i as u32, seq))? {
        0 => {}
        e => return Err(format!("NEW {name}: errno {e}")),
    }
    c.get(name)?;
    c.get(&policy_name(i % POLICIES))?;
    let names = c.dump()?;
    let ours = names.iter().filter(|n| n.as_str() == name).count();
    let preset = names.iter().filter(|n| n.len() == 4 && n.starts_with('p')).count();
    if ours != 1 || preset != POLICIES {
        return Err(format!(
            "dump of {} objects: {ours} named {name}, {preset} preset (want 1 and {POLICIES})",
            names.len()
        ));
    }
    let seq = c.next_seq();
    match c.errno(&delete_msg(name, seq))? {
        0 => {}
        e => return Err(format!("DELETE {name}: errno {e}")),
    }
    let seq = c.next_seq();
    match c.errno(&get_msg(name, seq))? {
        e if e == libc::ENOENT => Ok(c.portid),
        e => Err(format!("GET {name} after DELETE: errno {e}, expected ENOENT")),
    }
}

/// Dump requests without ever reading, until the daemon drops the connection; `observer` is
/// served meanwhile. Returns (requests sent, the observer's slowest answer).
fn flood(path: &Path, observer: &mut Client) -> Result<(usize, Duration), String> {
    let s = Client::connect_raw(path).map_err(|e| format!("connect: {e}"))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let req = dump_msg(1);
    let start = clock::now();
    let (mut sent, mut slowest) = (0usize, Duration::ZERO);
    while start.elapsed() < Duration::from_secs(60) && sent < 200_000 {
        match s.send(&req) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => clock::sleep(Duration::from_millis(1)),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) || e.raw_os_error() == Some(libc::ECONNRESET) => {
                return Ok((sent, slowest));
            }
            Err(e) => return Err(format!("flood send after {sent} requests: {e}")),
        }
        if sent % 64 == 0 {
            let t = clock::now();
            observer.get("p000").map_err(|e| format!("another client during the flood: {e}"))?;
            slowest = slowest.max(t.elapsed());
        }
    }
    Err(format!("the flooding client was not dropped after {sent} requests in {:?}", start.elapsed()))
}

// ---- the daemon's resources ---------------------------------------------------------------------

/// A field of `/proc/PID/status` (its first number).
fn status_field(pid: u32, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the daemon's status");
    let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {s}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(usize::MAX)
}

/// Waits (at most 10 s) for the daemon to be back at `fds` descriptors.
fn fds_back_to(pid: u32, fds: usize) -> Result<(), String> {
    let start = clock::now();
    loop {
        let now = open_fds(pid);
        if now == fds {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("the daemon holds {now} descriptors, {fds} without clients"));
        }
        clock::sleep(Duration::from_millis(10));
    }
}

/// What one round saw.
struct Round {
    malformed: usize,
    flood_requests: usize,
    flood_slowest: Duration,
}

/// One round of every abuse.
/// `fds` and `threads`: the daemon's descriptors and threads without clients.
fn round(d: &Daemon, model: &Model, r: usize, fds: usize, threads: u64) -> Result<Round, String> {
    let pid = d.pid();
    let idle: Vec<Socket> = (0..IDLE)
        .map(|_| Client::connect_raw(&d.socket))
        .collect::<io::Result<_>>()
        .map_err(|e| format!("idle: {e}"))?;
    let late = Client::connect(&d.socket).map_err(|e| format!("late reader: {e}"))?;
    late.send(&dump_msg(7))?;
    let mut observer = Client::connect(&d.socket).map_err(|e| format!("observer: {e}"))?;

    concurrent(&d.socket, r)?;
    let mut c = Client::connect(&d.socket).map_err(|e| format!("malformed: {e}"))?;
    let malformed = malformed(&mut c, &mut observer, model, r as u64)?;
    let (flood_requests, flood_slowest) = flood(&d.socket, &mut observer)?;
    if flood_slowest > LATENCY_LIMIT {
        return Err(format!("another client waited {flood_slowest:?} during the flood"));
    }
    let now_threads = status_field(pid, "Threads:");
    if now_threads != threads {
        return Err(format!("the daemon runs {now_threads} threads with {IDLE} idle clients, {threads} before"));
    }

    // The late reader's dump is whole.
    let mut names = Vec::new();
    'read: for _ in 0..10_000 {
        let dg = late.recv()?;
        for m in Messages::new(&dg).map_while(Result::ok) {
            if m.header.kind == msg_type::DONE {
                break 'read;
            }
            names.push(name_of(&dg[m.offset..m.offset + m.header.len as usize]).unwrap_or_default());
        }
    }
    let want: Vec<String> = (0..POLICIES).map(policy_name).collect();
    if names != want {
        return Err(format!("the late reader's dump: {} objects, not the {POLICIES} policies", names.len()));
    }
    drop((idle, late, observer, c));
    fds_back_to(pid, fds)?;
    Ok(Round { malformed, flood_requests, flood_slowest })
}

#[test]
fn abusive_clients_are_contained() {
    let mut d = Daemon::start(DIR, None, &[]);
    let model = Model::new();
    let pid = d.pid();
    let (fds, threads) = (open_fds(pid), status_field(pid, "Threads:"));
    let setup = Client::connect(&d.socket).expect("connecting");
    for i in 0..POLICIES {
        let m = new_msg(&policy_name(i), 100 + i as u32, 1000 + i as u32);
        let expected = model.answer(setup.portid, &m);
        setup.send(&m).expect("send");
        let got = setup.recv().expect("an answer");
        assert_eq!(vec![got], expected, "NEW {}", policy_name(i));
    }
    drop(setup);
    let rss_start = status_field(pid, "VmRSS:");

    let fail = |r: usize, e: String| -> Round { panic!("round {r}: {e}\n(daemon log:\n{})", d.log()) };
    let warmup = round(&d, &model, 0, fds, threads).unwrap_or_else(|e| fail(0, e));
    let rss_after_warmup = status_field(pid, "VmRSS:");
    let peak_after_warmup = status_field(pid, "VmHWM:");
    let rounds: Vec<Round> =
        (1..=ROUNDS).map(|r| round(&d, &model, r, fds, threads).unwrap_or_else(|e| fail(r, e))).collect();
    let rss_end = status_field(pid, "VmRSS:");
    let rss_peak = status_field(pid, "VmHWM:");
    let all: Vec<&Round> = std::iter::once(&warmup).chain(&rounds).collect();
    eprintln!(
        "abusive clients: VmRSS {rss_start} KiB with the policies, {rss_after_warmup} KiB after the warm-up round (peak {peak_after_warmup} KiB), {rss_end} KiB after {ROUNDS} more, peak {rss_peak} KiB; \
         {} malformed datagrams per round; flood dropped after {}..{} dump requests; slowest answer during a flood {:?}",
        all[0].malformed,
        all.iter().map(|r| r.flood_requests).min().unwrap_or(0),
        all.iter().map(|r| r.flood_requests).max().unwrap_or(0),
        all.iter().map(|r| r.flood_slowest).max().unwrap_or_default(),
    );
    assert!(
        rss_end <= peak_after_warmup + RSS_GROWTH_LIMIT_KIB,
        "the daemon's RSS grew from at most {peak_after_warmup} KiB during the warm-up to {rss_end} KiB over {ROUNDS} rounds"
    );
    assert!(
        rss_peak <= rss_start + RSS_PEAK_LIMIT_KIB,
        "the daemon's peak RSS was {rss_peak} KiB, {rss_start} KiB before the abuse"
    );
    assert!(d.running(), "the daemon survived: {}", d.log());

    let list = d.nfct(&["timeout", "list"]);
    assert_eq!(list.code, Some(0), "{list}");
    assert_eq!(list.stdout.matches(".l3proto").count(), POLICIES, "{list}");
    let log = d.log();
    let drops: Vec<&str> = log.lines().filter(|l| l.contains("dropped:")).collect();
    assert_eq!(drops.len(), all.len(), "one drop per flood, no other: {log}");
    assert!(drops.iter().all(|l| l.contains("stopped reading its replies")), "{log}");
    assert_eq!(d.stop(), Some(0), "SIGTERM ends the daemon cleanly: {}", d.log());
}

#[test]
fn only_the_owner_and_the_group_may_connect() {
    let d = Daemon::start(DIR, None, &[]);
    let mode = fs::metadata(&d.socket).expect("the socket file").permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "socket file mode {mode:o}");
    Client::connect(&d.socket).expect("root, the owner, connects");
    let script = r#"
import errno, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    s.connect(sys.argv[1])
    print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"#;
    let nobody = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script]).arg(&d.socket);
        run(c.current_dir("/"), LIMIT)
    };
    let out = nobody();
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "EACCES\n"), "{out}");
    // The same user connects once the file is widened: the mode is what refused it.
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).expect("chmod the socket");
    let out = nobody();
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "connected\n"), "{out}");
}
