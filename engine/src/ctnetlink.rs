//! ctnetlink on the control socket: the connection table served as Linux 6.18's
//! `nf_conntrack_netlink.c` serves it, so that the unmodified `conntrack` (and anything built on
//! libnetfilter_conntrack) works against ferrowall through the shim.
//!
//! [`message`] handles one request message of subsystem `NFNL_SUBSYS_CTNETLINK` (1) or
//! `NFNL_SUBSYS_CTNETLINK_EXP` (2); [`crate::control`] dispatches to it, and does the per-datagram
//! work (privilege, acks, errors) for every subsystem alike. The handlers follow the kernel's:
//!
//! * `GET` of one connection by tuple (either direction); `GET` with `NLM_F_DUMP` walks the table
//!   with the kernel's dump filters (family, `CTA_MARK`/`CTA_MARK_MASK`, `CTA_STATUS`/
//!   `CTA_STATUS_MASK`, `CTA_ZONE`, tuple parts through `CTA_FILTER`); `GET_CTRZERO` as `GET`,
//!   zeroing the packet and byte counts.
//! * `NEW` creates (`NLM_F_CREATE`; `NLM_F_EXCL` makes an existing one `EEXIST`) or updates (tuple,
//!   status with the kernel's `EBUSY` rules, timeout, mark under a mask, TCP and SCTP state).
//! * `DELETE` by tuple (and `CTA_ID`), or, without a tuple, a flush (filtered as a dump is).
//! * `GET_STATS` (the count), `GET_STATS_CPU` (a dump, one message per worker as the kernel's per
//!   CPU), `GET_DYING` and `GET_UNCONFIRMED` (empty dumps).
//! * Expectations: there are none (no helpers), so their table dumps empty, a lookup is `ENOENT`
//!   and creating one is refused as the kernel refuses it for a connection without a helper.
//!
//! A dump produces its first `NLMSG_GOODSIZE` bytes at once, as the kernel does, and returns a
//! [`Dump`]: a cursor into the table that produces the rest in chunks as the client reads
//! ([`Dump::next`]), never holding a shard lock for long (see [`crate::conntrack::ops`]).
//!
//! Ids are a keyed hash of a connection's original tuple and creation time
//! ([`Conntrack::conn_id`]); `CTA_USE` is 1 in dumps and 2 in a `GET` (the kernel counts the
//! reference its lookup holds). Differences from the kernel, all refused rather than faked:
//! zones other than 0, NAT (`CTA_NAT_*`, and reply tuples that are not the inverse of the
//! original), helpers, expected connections (`CTA_TUPLE_MASTER`), sequence adjustment and labels.
//! Accounting (`nf_conntrack_acct`) and timestamps are off, as the kernel's defaults are, so
//! replies carry no counters.
//!
//! Events (the NEW/UPDATE/DESTROY multicast groups): the table records them
//! ([`crate::conntrack::events`]); the requests that change it run inside
//! [`events::caused_by`], so that their events carry the requester's port id as the kernel's do,
//! and an update reports an `UPDATE` as `ctnetlink_new_conntrack` does (even when nothing
//! changed). [`event_message`] encodes a recorded event as `ctnetlink_conntrack_event` does.

use proto::ctnetlink::{
    self as wire, attr, exp_msg, expect_attr, filter_flag, msg, status as st, CtAttrs, Filter, Object, ProtoInfo,
    ProtoInfoReq,
};
use proto::netlink::{self, flags, Message, Nfgenmsg};
use proto::packet::Family;
use proto::Errno;

use crate::clock::Timestamp;
use crate::conntrack::events::{self, Event, EventKind};
use crate::conntrack::l4::sctp::SctpState;
use crate::conntrack::l4::tcp::TcpState;
use crate::conntrack::ops::{Cursor, InsertError, VIA_NETLINK};
use crate::conntrack::{Conn, Conntrack, Dir, ProtoState, Stats, Status, Tuple};

/// What the handlers need besides the table: the time, and the workers' counters for
/// `GET_STATS_CPU`.
pub struct Env<'a> {
    pub now: Timestamp,
    /// Each worker's conntrack counters, reported as the kernel reports each CPU's. An empty list
    /// (a daemon without workers) is reported as one CPU with zero counts.
    pub cpu_stats: &'a dyn Fn() -> Vec<Stats>,
}

/// How a request message was handled, when it was not an error.
#[derive(Debug)]
pub enum Handled {
    /// Done: the caller acks it if asked.
    Ack,
    /// A dump started (never acked). `None`: it already ended (its `NLMSG_DONE` is in the
    /// output); `Some`: the rest comes from [`Dump::next`].
    Dump(Option<Dump>),
}

/// `NLMSG_GOODSIZE` on a 4 KiB-page x86-64 kernel: what a dump's first datagram holds.
pub const DUMP_FIRST_CHUNK: usize = 4096 - 320;
/// Table slots a dump examines per call, at most, so that a call stays short even when the
/// filter matches nothing.
pub const DUMP_SCAN: usize = 16 * 1024;

/// The rest of a dump: where it stands and what it reports.
#[derive(Debug)]
pub struct Dump {
    seq: u32,
    portid: u32,
    kind: DumpKind,
}

#[derive(Debug)]
enum DumpKind {
    /// The connection table from `cursor` on.
    Table { filter: Option<Filter>, cursor: Cursor, zero: bool },
    /// Prepared messages (per-CPU statistics), from `next` on.
    Rows { rows: Vec<Vec<u8>>, next: usize },
}

impl Dump {
    /// The next messages of the dump, about `budget` bytes of them (at least one message while
    /// any remain), then `NLMSG_DONE`; also true once `NLMSG_DONE` has been produced. A call may
    /// produce nothing when it examined [`DUMP_SCAN`] slots without a match.
    pub fn next(&mut self, ct: &Conntrack, now: Timestamp, budget: usize) -> (Vec<Vec<u8>>, bool) {
        let mut out = Vec::new();
        let finished = self.fill(ct, now, budget, &mut out);
        if finished {
            out.push(netlink::done_message(self.seq, self.portid));
        }
        (out, finished)
    }

    /// Adds messages to `out` within `budget`; true when nothing remains.
    fn fill(&mut self, ct: &Conntrack, now: Timestamp, budget: usize, out: &mut Vec<Vec<u8>>) -> bool {
        let (seq, portid) = (self.seq, self.portid);
        let mut used: usize = out.iter().map(Vec::len).sum();
        match &mut self.kind {
            DumpKind::Table { filter, cursor, zero } => {
                let extra = if filter.is_some() { flags::DUMP_FILTERED } else { 0 };
                ct.walk(now, cursor, DUMP_SCAN, |c| {
                    if !filter.as_ref().is_none_or(|f| filter_match(f, c)) {
                        return true;
                    }
                    let m = wire::object_message(&object(ct, c, now, 1), extra, seq, portid);
                    if used > 0 && used + m.len() > budget {
                        return false;
                    }
                    used += m.len();
                    out.push(m);
                    if *zero {
                        c.packets = [0; 2];
                        c.bytes = [0; 2];
                    }
                    true
                })
            }
            DumpKind::Rows { rows, next } => {
                while let Some(m) = rows.get(*next) {
                    if used > 0 && used + m.len() > budget {
                        return false;
                    }
                    used += m.len();
                    out.push(m.clone());
                    *next += 1;
                }
                true
            }
        }
    }

    /// Produces everything that remains, `NLMSG_DONE` included (for tests and small tables).
    pub fn drain(mut self, ct: &Conntrack, now: Timestamp) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let (m, done) = self.next(ct, now, 1 << 20);
            all.extend(m);
            if done {
                return all;
            }
        }
    }
}

/// Starts a dump: its first chunk into `out`; `Handled::Dump(None)` when that was all.
fn start_dump(mut d: Dump, ct: &Conntrack, now: Timestamp, out: &mut Vec<Vec<u8>>) -> Handled {
    let mut first = Vec::new();
    let finished = d.fill(ct, now, DUMP_FIRST_CHUNK, &mut first);
    if finished && first.is_empty() {
        out.push(netlink::done_message(d.seq, d.portid));
        return Handled::Dump(None);
    }
    out.extend(first);
    Handled::Dump(Some(d))
}

/// Handles one ctnetlink request message `m` (its payload at least an `nfgenmsg`) from port
/// `portid`; `dumping`: a dump of this client is still running (a new one is `EBUSY`).
pub fn message(
    ct: &Conntrack,
    env: &Env<'_>,
    m: &Message<'_>,
    portid: u32,
    dumping: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<Handled, Errno> {
    let h = &m.header;
    let g = Nfgenmsg::parse(m.payload).map_err(|_| Errno::EINVAL)?;
    // Attributes start at NLMSG_ALIGN(sizeof(struct nfgenmsg)).
    let attrs = &m.payload[Nfgenmsg::LEN..];
    let req = Req {
        seq: h.seq,
        portid,
        family: g.family,
        version: g.version,
        flags: h.flags,
        dump: h.flags & flags::DUMP != 0,
    };
    let t = h.kind as u8;
    if (h.kind >> 8) as u8 == wire::SUBSYS_EXP {
        return expect(ct, env, &req, t, attrs, dumping, out);
    }
    match t {
        msg::NEW | msg::GET | msg::DELETE | msg::GET_CTRZERO => {
            let a = wire::parse_ct(attrs)?;
            match t {
                msg::NEW => events::caused_by(portid, || new(ct, env.now, &req, &a)).map(|()| Handled::Ack),
                msg::DELETE => events::caused_by(portid, || delete(ct, env.now, &req, &a)).map(|()| Handled::Ack),
                _ => get(ct, env.now, &req, &a, t == msg::GET_CTRZERO, dumping, out),
            }
        }
        msg::GET_STATS_CPU if req.dump => {
            if dumping {
                return Err(Errno::EBUSY);
            }
            let mut stats = (env.cpu_stats)();
            if stats.is_empty() {
                stats.push(Stats::default());
            }
            let rows = stats
                .iter()
                .enumerate()
                .map(|(cpu, s)| wire::stats_cpu_message(cpu as u16, &cpu_values(s), req.seq, portid))
                .collect();
            Ok(start_dump(req.dump_of(DumpKind::Rows { rows, next: 0 }), ct, env.now, out))
        }
        msg::GET_STATS_CPU => Ok(Handled::Ack),
        msg::GET_STATS => {
            let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
            out.push(wire::stats_message(n(ct.len()), n(ct.max()), req.seq, portid));
            Ok(Handled::Ack)
        }
        msg::GET_DYING | msg::GET_UNCONFIRMED if req.dump => empty_dump(&req, dumping, out),
        msg::GET_DYING | msg::GET_UNCONFIRMED => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::EINVAL),
    }
}

/// What every handler needs of the request's header.
struct Req {
    seq: u32,
    portid: u32,
    family: u8,
    version: u8,
    flags: u16,
    dump: bool,
}

impl Req {
    fn dump_of(&self, kind: DumpKind) -> Dump {
        Dump { seq: self.seq, portid: self.portid, kind }
    }
}

/// A dump of an empty list: `NLMSG_DONE` at once.
fn empty_dump(req: &Req, dumping: bool, out: &mut Vec<Vec<u8>>) -> Result<Handled, Errno> {
    if dumping {
        return Err(Errno::EBUSY);
    }
    out.push(netlink::done_message(req.seq, req.portid));
    Ok(Handled::Dump(None))
}

/// A worker's counters in `GET_STATS_CPU` order (the kernel's are 32-bit).
fn cpu_values(s: &Stats) -> [u32; 10] {
    let c = |v: u64| v as u32;
    [
        c(s.found),
        c(s.invalid),
        c(s.insert),
        c(s.insert_failed),
        c(s.drop),
        c(s.early_drop),
        c(s.error),
        c(s.search_restart),
        c(s.clash_resolve),
        0,
    ]
}

// ---- conversions ----

fn l3num(f: Family) -> u8 {
    match f {
        Family::V4 => wire::AF_INET,
        Family::V6 => wire::AF_INET6,
    }
}

/// The wire form of one of our tuples.
pub fn wire_tuple(t: &Tuple) -> wire::Tuple {
    wire::Tuple { family: l3num(t.family), src: t.src, dst: t.dst, proto: t.proto, l4: [t.sport, t.dport] }
}

/// Our tuple for a parsed one (whose family is `AF_INET` or `AF_INET6`).
fn engine_tuple(t: &wire::Tuple) -> Tuple {
    let family = if t.family == wire::AF_INET6 { Family::V6 } else { Family::V4 };
    Tuple { src: t.src, dst: t.dst, sport: t.l4[0], dport: t.l4[1], family, proto: t.proto }
}

/// The status bits ctnetlink reports.
fn reported_status(s: Status) -> u32 {
    s.0 & !VIA_NETLINK.0
}

/// `c` as replies show it, with reference count `use_count`.
pub fn object(ct: &Conntrack, c: &Conn, now: Timestamp, use_count: u32) -> Object {
    let status = reported_status(c.status);
    let protoinfo = match &c.proto {
        ProtoState::Tcp(s) => {
            let (o, r) = (s.side(Dir::Original), s.side(Dir::Reply));
            ProtoInfo::Tcp { state: s.state().code(), wscale: [o.scale(), r.scale()], flags: [o.flags(), r.flags()] }
        }
        ProtoState::Sctp(s) => ProtoInfo::Sctp {
            state: crate::conntrack::l4::sctp::state_code(s),
            vtag: [s.vtag(Dir::Original), s.vtag(Dir::Reply)],
        },
        ProtoState::Stateless => ProtoInfo::None,
    };
    Object {
        tuple: [wire_tuple(&c.orig), wire_tuple(&c.reply())],
        status,
        mark: c.mark,
        id: ct.conn_id(c),
        use_count,
        timeout: (status & st::OFFLOAD == 0).then(|| u32::try_from(c.expires.secs_left(now)).unwrap_or(u32::MAX)),
        protoinfo: if status & st::OFFLOAD == 0 { protoinfo } else { ProtoInfo::None },
        synproxy: c.status.contains(VIA_NETLINK).then_some([0; 3]),
        zone: None,
    }
}

/// A recorded event as `ctnetlink_conntrack_event` reports it at `now`: the bit of its multicast
/// group in `nl_groups` and its message. What a `NEW` or `UPDATE` carries depends on its cause: a
/// ctnetlink request's reports the protocol state, the mark (even 0) and the synproxy values; a
/// packet's, the protocol state only when the packet changed the tracker's state (`IPCT_PROTOINFO`:
/// not for a picked-up connection's first reply, which only sets status bits). A `DESTROY` has the
/// dying bit set, as the kernel sets it before reporting.
pub fn event_message(ct: &Conntrack, ev: &Event, now: Timestamp) -> (u32, Vec<u8>) {
    let mut o = object(ct, &ev.conn, now, 0);
    let by_request = ev.portid != 0;
    let kind = match ev.kind {
        EventKind::New => wire::EventKind::New,
        EventKind::Update => wire::EventKind::Update,
        EventKind::Destroy => {
            o.status |= st::DYING;
            wire::EventKind::Destroy
        }
    };
    let parts = wire::EventParts { protoinfo: ev.state_changed || by_request, synproxy: by_request, mark: by_request };
    (kind.group_bit(), wire::event_message(kind, &o, parts, ev.portid))
}

/// `ctnetlink_filter_match`.
fn filter_match(f: &Filter, c: &Conn) -> bool {
    if f.family != 0 && l3num(c.orig.family) != f.family {
        return false;
    }
    // Every connection is in zone 0.
    if f.zone.is_some_and(|z| z != 0) {
        return false;
    }
    if f.orig.is_some_and(|tf| !tf.matches(f.family, &wire_tuple(&c.orig))) {
        return false;
    }
    if f.reply.is_some_and(|tf| !tf.matches(f.family, &wire_tuple(&c.reply()))) {
        return false;
    }
    let (mv, mm) = f.mark;
    let (sv, sm) = f.status;
    c.mark & mm == mv && reported_status(c.status) & sm == sv
}

/// `nf_ct_change_status_common`: the status `cur` becomes when a request asks for `new`, or
/// `EBUSY` for a change the kernel refuses (unchangeable bits, clearing SEEN_REPLY or ASSURED).
fn change_status(cur: Status, new: u32) -> Result<Status, Errno> {
    let d = reported_status(cur) ^ new;
    if d & (st::EXPECTED | st::CONFIRMED | st::DYING) != 0
        || (d & st::SEEN_REPLY != 0 && new & st::SEEN_REPLY == 0)
        || (d & st::ASSURED != 0 && new & st::ASSURED == 0)
    {
        return Err(Errno::EBUSY);
    }
    Ok(Status(cur.0 | (new & !st::UNCHANGEABLE & ((1 << st::MAX_BIT) - 1))))
}

/// `__nf_ct_set_timeout`: `secs` from `now`, capped at `INT_MAX` jiffies (HZ = 250).
fn expiry(now: Timestamp, secs: u32) -> Timestamp {
    const HZ: u64 = 250;
    let jiffies = (u64::from(secs) * HZ).min(i32::MAX as u64);
    Timestamp(now.0.saturating_add(jiffies * (1_000_000_000 / HZ)))
}

// ---- conntrack requests ----

/// The tuple a `GET`, `DELETE` or `NEW` names in `which`, with the zone it is looked up in
/// (`CTA_ZONE`, or the tuple's own zone: both non-zero is `EINVAL`).
fn tuple_of(a: &CtAttrs<'_>, which: u16, family: u8, zone: &mut u16) -> Result<Tuple, Errno> {
    let nest = a.get(which).ok_or(Errno::EINVAL)?;
    let p = wire::parse_tuple(nest, family, filter_flag::ALL)?;
    if let Some(z) = p.zone {
        if *zone != 0 {
            return Err(Errno::EINVAL);
        }
        *zone = z;
    }
    Ok(engine_tuple(&p.tuple))
}

/// `ctnetlink_get_conntrack` (and `GET_CTRZERO`).
fn get(
    ct: &Conntrack,
    now: Timestamp,
    req: &Req,
    a: &CtAttrs<'_>,
    zero: bool,
    dumping: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<Handled, Errno> {
    if req.dump {
        if dumping {
            return Err(Errno::EBUSY);
        }
        let filter = wire::parse_filter(a, req.family)?;
        let d = req.dump_of(DumpKind::Table { filter, cursor: Cursor::default(), zero });
        return Ok(start_dump(d, ct, now, out));
    }
    let mut zone = a.be16(attr::ZONE).unwrap_or(0);
    let which = if a.has(attr::TUPLE_ORIG) {
        attr::TUPLE_ORIG
    } else if a.has(attr::TUPLE_REPLY) {
        attr::TUPLE_REPLY
    } else {
        return Err(Errno::EINVAL);
    };
    let t = tuple_of(a, which, req.family, &mut zone)?;
    if zone != 0 {
        return Err(Errno::ENOENT);
    }
    let m = ct
        .with_conn(now, &t, |c| {
            let m = wire::object_message(&object(ct, c, now, 2), 0, req.seq, req.portid);
            if zero {
                c.packets = [0; 2];
                c.bytes = [0; 2];
            }
            m
        })
        .ok_or(Errno::ENOENT)?;
    out.push(m);
    Ok(Handled::Ack)
}

/// `ctnetlink_del_conntrack`: one connection by tuple (and `CTA_ID`), or a flush.
fn delete(ct: &Conntrack, now: Timestamp, req: &Req, a: &CtAttrs<'_>) -> Result<(), Errno> {
    let mut zone = a.be16(attr::ZONE).unwrap_or(0);
    let filtered = a.has(attr::FILTER);
    let which = match (a.has(attr::TUPLE_ORIG), a.has(attr::TUPLE_REPLY)) {
        (true, _) if !filtered => attr::TUPLE_ORIG,
        (_, true) if !filtered => attr::TUPLE_REPLY,
        _ => {
            // The family restricts a flush only for version 1 requests or with CTA_FILTER.
            let family = if req.version != 0 || filtered { req.family } else { 0 };
            return flush(ct, now, a, family);
        }
    };
    let t = tuple_of(a, which, req.family, &mut zone)?;
    if zone != 0 {
        return Err(Errno::ENOENT);
    }
    let id = a.be32(attr::ID);
    match ct.remove_by_tuple(now, &t, |c| id.is_none_or(|id| id == ct.conn_id(c))) {
        Some(true) => Ok(()),
        Some(false) | None => Err(Errno::ENOENT),
    }
}

/// `ctnetlink_flush_conntrack`: every connection, or those the request's filter keeps.
fn flush(ct: &Conntrack, now: Timestamp, a: &CtAttrs<'_>, family: u8) -> Result<(), Errno> {
    match wire::parse_filter(a, family)? {
        None => ct.flush(),
        Some(f) => {
            ct.remove_where(now, |c| filter_match(&f, c));
        }
    }
    Ok(())
}

/// `ctnetlink_new_conntrack`: update the connection a tuple names, or create it.
fn new(ct: &Conntrack, now: Timestamp, req: &Req, a: &CtAttrs<'_>) -> Result<(), Errno> {
    let mut zone = a.be16(attr::ZONE).unwrap_or(0);
    let orig = a.has(attr::TUPLE_ORIG).then(|| tuple_of(a, attr::TUPLE_ORIG, req.family, &mut zone)).transpose()?;
    let reply = a.has(attr::TUPLE_REPLY).then(|| tuple_of(a, attr::TUPLE_REPLY, req.family, &mut zone)).transpose()?;
    let key = orig.or(reply);
    // Only zone 0 exists: a connection of another zone is never found.
    let found = match key {
        Some(t) if zone == 0 => ct.with_conn(now, &t, |c| {
            if req.flags & flags::EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            update(c, now, a)?;
            if ct.events.wants(EventKind::Update) {
                ct.events.push(EventKind::Update, Box::new(c.clone()));
            }
            Ok(())
        }),
        _ => None,
    };
    if let Some(r) = found {
        return r;
    }
    if req.flags & flags::CREATE == 0 {
        return Err(Errno::ENOENT);
    }
    let (Some(orig), Some(reply)) = (orig, reply) else { return Err(Errno::EINVAL) };
    if orig.proto != reply.proto {
        return Err(Errno::EINVAL);
    }
    create(ct, now, a, orig, reply, zone)
}

/// Checks `CTA_HELP`: an empty name is no helper; ferrowall has none to attach (`EOPNOTSUPP`).
fn check_help(a: &CtAttrs<'_>) -> Result<(), Errno> {
    match a.get(attr::HELP) {
        Some(nest) if !wire::parse_help(nest)?.is_empty() => Err(Errno::EOPNOTSUPP),
        _ => Ok(()),
    }
}

/// Applies `CTA_PROTOINFO` to a connection's tracker state (`ctnetlink_change_protoinfo`).
fn apply_protoinfo(c: &mut Conn, nest: &[u8]) -> Result<(), Errno> {
    match (wire::parse_protoinfo(nest, c.orig.proto)?, &mut c.proto) {
        (Some(ProtoInfoReq::Tcp(i)), ProtoState::Tcp(s)) => {
            s.apply_netlink(i.state.and_then(TcpState::from_code), i.flags, i.wscale);
        }
        (Some(ProtoInfoReq::Sctp(i)), ProtoState::Sctp(s)) => {
            s.apply_netlink(SctpState::from_code(i.state).ok_or(Errno::EINVAL)?, i.vtag);
        }
        _ => {}
    }
    Ok(())
}

/// `ctnetlink_change_mark`: the bits outside `CTA_MARK_MASK` kept, `CTA_MARK` xor-ed in.
fn apply_mark(c: &mut Conn, a: &CtAttrs<'_>) {
    if let Some(mark) = a.be32(attr::MARK) {
        let keep = a.be32(attr::MARK_MASK).map_or(0, |m| !m);
        c.mark = (c.mark & keep) ^ mark;
    }
}

/// `ctnetlink_change_conntrack`: the changes a `NEW` without `NLM_F_EXCL` makes to an existing
/// connection, in the kernel's order (an error leaves the earlier changes made).
fn update(c: &mut Conn, now: Timestamp, a: &CtAttrs<'_>) -> Result<(), Errno> {
    if a.has(attr::NAT_SRC) || a.has(attr::NAT_DST) || a.has(attr::TUPLE_MASTER) {
        return Err(Errno::EOPNOTSUPP);
    }
    check_help(a)?;
    if let Some(secs) = a.be32(attr::TIMEOUT) {
        if c.status.contains(Status::FIXED_TIMEOUT) {
            return Err(Errno::EPERM);
        }
        c.expires = expiry(now, secs);
    }
    if let Some(s) = a.be32(attr::STATUS) {
        c.status = change_status(c.status, s)?;
    }
    if let Some(nest) = a.get(attr::PROTOINFO) {
        apply_protoinfo(c, nest)?;
    }
    apply_mark(c, a);
    // Sequence adjustment and synproxy values exist only on connections created over ctnetlink
    // (the kernel gives those the extensions); neither is kept here.
    if c.status.contains(VIA_NETLINK) {
        for which in [attr::SEQ_ADJ_ORIG, attr::SEQ_ADJ_REPLY] {
            if let Some(nest) = a.get(which) {
                wire::parse_seqadj(nest)?;
                return Err(Errno::EOPNOTSUPP);
            }
        }
        if let Some(nest) = a.get(attr::SYNPROXY) {
            wire::parse_synproxy(nest)?;
        }
    }
    if let Some(labels) = a.get(attr::LABELS) {
        wire::check_labels(labels, a.get(attr::LABELS_MASK))?;
        // No connection has a labels extension: nf_connlabels_replace's ENOSPC.
        return Err(Errno(28));
    }
    Ok(())
}

/// `ctnetlink_create_conntrack`: a new confirmed connection, in the kernel's order of checks.
fn create(ct: &Conntrack, now: Timestamp, a: &CtAttrs<'_>, orig: Tuple, reply: Tuple, zone: u16) -> Result<(), Errno> {
    let secs = a.be32(attr::TIMEOUT).ok_or(Errno::EINVAL)?;
    check_help(a)?;
    if a.has(attr::NAT_SRC) || a.has(attr::NAT_DST) || zone != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let proto = match orig.proto {
        6 => ProtoState::Tcp(Default::default()),
        132 => ProtoState::Sctp(Default::default()),
        _ => ProtoState::Stateless,
    };
    let mut c = Conn {
        orig,
        status: Status(st::CONFIRMED | VIA_NETLINK.0),
        mark: 0,
        start: now,
        expires: expiry(now, secs),
        packets: [0; 2],
        bytes: [0; 2],
        proto,
        policy: None,
    };
    if let Some(s) = a.be32(attr::STATUS) {
        c.status = change_status(c.status, s)?;
    }
    for which in [attr::SEQ_ADJ_ORIG, attr::SEQ_ADJ_REPLY] {
        if let Some(nest) = a.get(which) {
            wire::parse_seqadj(nest)?;
            return Err(Errno::EOPNOTSUPP);
        }
    }
    if let Some(nest) = a.get(attr::PROTOINFO) {
        apply_protoinfo(&mut c, nest)?;
    }
    if let Some(nest) = a.get(attr::SYNPROXY) {
        wire::parse_synproxy(nest)?;
    }
    apply_mark(&mut c, a);
    if let Some(nest) = a.get(attr::TUPLE_MASTER) {
        let p = wire::parse_tuple(nest, l3num(orig.family), filter_flag::ALL)?;
        if p.zone.is_some() {
            return Err(Errno::EINVAL);
        }
        ct.with_conn(now, &engine_tuple(&p.tuple), |_| ()).ok_or(Errno::ENOENT)?;
        // Expected connections need helpers, which ferrowall does not have.
        return Err(Errno::EOPNOTSUPP);
    }
    // Both tuples are indexed under one hash, which holds only for a reply that is the inverse
    // of the original: a NATed connection cannot be represented.
    if orig.invert() != Some(reply) {
        return Err(Errno::EOPNOTSUPP);
    }
    match ct.insert_new(now, c) {
        Ok(()) => Ok(()),
        Err(InsertError::Exists) => Err(Errno::EEXIST),
        Err(InsertError::Full) => Err(Errno::ENOMEM),
    }
}

// ---- expectations ----

/// The expectation subsystem's handlers, for an empty expectation table.
fn expect(
    ct: &Conntrack,
    env: &Env<'_>,
    req: &Req,
    t: u8,
    attrs: &[u8],
    dumping: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<Handled, Errno> {
    if t >= exp_msg::COUNT {
        return Err(Errno::EINVAL);
    }
    if t == exp_msg::GET_STATS_CPU {
        if !req.dump {
            return Ok(Handled::Ack);
        }
        if dumping {
            return Err(Errno::EBUSY);
        }
        let n = (env.cpu_stats)().len().max(1);
        let rows = (0..n).map(|cpu| wire::exp_stats_cpu_message(cpu as u16, [0; 3], req.seq, req.portid)).collect();
        return Ok(start_dump(req.dump_of(DumpKind::Rows { rows, next: 0 }), ct, env.now, out));
    }
    let a = wire::parse_exp(attrs)?;
    // Expectation tuples are parsed without a zone: a tuple zone is EINVAL.
    let tuple = |which: u16| -> Result<Tuple, Errno> {
        let p = wire::parse_tuple(a.get(which).ok_or(Errno::EINVAL)?, req.family, filter_flag::ALL)?;
        if p.zone.is_some() {
            return Err(Errno::EINVAL);
        }
        Ok(engine_tuple(&p.tuple))
    };
    let zone = a.be16(expect_attr::ZONE).unwrap_or(0);
    let master_exists = |t: &Tuple| zone == 0 && ct.with_conn(env.now, t, |_| ()).is_some();
    match t {
        exp_msg::GET if req.dump => {
            if a.has(expect_attr::MASTER) {
                // ctnetlink_dump_exp_ct: the master must exist; without a helper it has no
                // expectations and nothing is dumped (not even NLMSG_DONE: the request is acked).
                let m = tuple(expect_attr::MASTER)?;
                return if master_exists(&m) { Ok(Handled::Ack) } else { Err(Errno::ENOENT) };
            }
            empty_dump(req, dumping, out)
        }
        exp_msg::GET => {
            if a.has(expect_attr::TUPLE) {
                tuple(expect_attr::TUPLE)?;
            } else if a.has(expect_attr::MASTER) {
                tuple(expect_attr::MASTER)?;
            } else {
                return Err(Errno::EINVAL);
            }
            Err(Errno::ENOENT)
        }
        exp_msg::DELETE => {
            if a.has(expect_attr::TUPLE) {
                tuple(expect_attr::TUPLE)?;
                return Err(Errno::ENOENT);
            }
            // By helper name, or all: nothing to remove.
            Ok(Handled::Ack)
        }
        _ => {
            // exp_msg::NEW
            if !(a.has(expect_attr::TUPLE) && a.has(expect_attr::MASK) && a.has(expect_attr::MASTER)) {
                return Err(Errno::EINVAL);
            }
            tuple(expect_attr::TUPLE)?;
            if req.flags & flags::CREATE == 0 {
                return Err(Errno::ENOENT);
            }
            tuple(expect_attr::TUPLE)?;
            tuple(expect_attr::MASK)?;
            let m = tuple(expect_attr::MASTER)?;
            if !master_exists(&m) {
                return Err(Errno::ENOENT);
            }
            // A helper named is not found, and the master has no helper extension: EOPNOTSUPP.
            Err(Errno::EOPNOTSUPP)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Config;
    use proto::netlink::{Header, MessageBuilder, Messages};

    fn env_at(now: Timestamp) -> Env<'static> {
        Env { now, cpu_stats: &|| vec![Stats::default(), Stats::default()] }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    fn tup(sport: u16) -> wire::Tuple {
        wire::Tuple { family: 2, src: v4([198, 18, 0, 1]), dst: v4([198, 18, 0, 2]), proto: 6, l4: [sport, 80] }
    }

    fn inv(t: &wire::Tuple) -> wire::Tuple {
        wire::Tuple { src: t.dst, dst: t.src, l4: [t.l4[1], t.l4[0]], ..*t }
    }

    /// Runs one request message through [`message`] and returns (result, messages incl. a drained dump).
    fn run(
        ct: &Conntrack,
        now: Timestamp,
        kind: u8,
        fl: u16,
        f: impl FnOnce(&mut MessageBuilder),
    ) -> (Result<(), Errno>, Vec<Vec<u8>>) {
        let mut b = MessageBuilder::new(wire::nlmsg_type(kind), fl, 1, 0);
        b.nfgenmsg(Nfgenmsg { family: 2, version: 0, res_id: 0 });
        f(&mut b);
        let bytes = b.finish();
        let m = Messages::new(&bytes).next().unwrap().unwrap();
        let mut out = Vec::new();
        let r = message(ct, &env_at(now), &m, 77, false, &mut out);
        let r = match r {
            Ok(Handled::Ack) => Ok(()),
            Ok(Handled::Dump(d)) => {
                if let Some(d) = d {
                    out.extend(d.drain(ct, now));
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        (r, out)
    }

    fn create_tcp(ct: &Conntrack, now: Timestamp, sport: u16, mark: u32) -> Result<(), Errno> {
        run(ct, now, msg::NEW, flags::REQUEST | flags::ACK | flags::CREATE | flags::EXCL, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(sport));
            wire::put_tuple(b, attr::TUPLE_REPLY, &inv(&tup(sport)));
            b.put_be32(attr::TIMEOUT, 100)
                .put_be32(attr::MARK, mark)
                .put_be32(attr::STATUS, st::ASSURED | st::CONFIRMED);
        })
        .0
    }

    #[test]
    fn create_get_update_delete() {
        let ct = Conntrack::new(1000, Config::default());
        let now = Timestamp::from_secs(10);
        assert_eq!(create_tcp(&ct, now, 1000, 5), Ok(()));
        assert_eq!(create_tcp(&ct, now, 1000, 5), Err(Errno::EEXIST));
        let (r, out) = run(&ct, now, msg::GET, flags::REQUEST | flags::ACK, |b| {
            wire::put_tuple(b, attr::TUPLE_REPLY, &inv(&tup(1000)));
        });
        assert_eq!(r, Ok(()));
        let o = wire::parse_object(&out[0][16..]).unwrap();
        assert_eq!((o.mark, o.use_count, o.timeout, o.status), (5, 2, Some(99), st::ASSURED | st::CONFIRMED));
        assert_eq!(o.synproxy, Some([0; 3]));
        // Clearing ASSURED is refused; the timeout set before the refusal stays.
        let (r, _) = run(&ct, now, msg::NEW, flags::REQUEST | flags::ACK, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000));
            b.put_be32(attr::TIMEOUT, 500).put_be32(attr::STATUS, st::CONFIRMED);
        });
        assert_eq!(r, Err(Errno::EBUSY));
        let (_, out) = run(&ct, now, msg::GET, flags::REQUEST, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000)));
        assert_eq!(wire::parse_object(&out[0][16..]).unwrap().timeout, Some(499));
        // Mark under a mask.
        let (r, out) = run(&ct, now, msg::NEW, flags::REQUEST, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000));
            b.put_be32(attr::MARK, 0x10).put_be32(attr::MARK_MASK, 0xf0);
        });
        assert_eq!((r, out.len()), (Ok(()), 0));
        let (_, out) = run(&ct, now, msg::GET, flags::REQUEST, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000)));
        let o = wire::parse_object(&out[0][16..]).unwrap();
        assert_eq!(o.mark, 0x15);
        // Delete with a wrong id: ENOENT; with the right one: gone.
        let (r, _) = run(&ct, now, msg::DELETE, flags::REQUEST, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000));
            b.put_be32(attr::ID, o.id ^ 1);
        });
        assert_eq!(r, Err(Errno::ENOENT));
        let (r, _) = run(&ct, now, msg::DELETE, flags::REQUEST, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000));
            b.put_be32(attr::ID, o.id);
        });
        assert_eq!(r, Ok(()));
        assert!(ct.is_empty());
    }

    #[test]
    fn requests_report_events_with_the_requesters_port() {
        let ct = Conntrack::new(1000, Config::default());
        let now = Timestamp::from_secs(10);
        create_tcp(&ct, now, 999, 0).unwrap();
        assert!(ct.events.pop().is_none(), "nothing recorded while nobody listens");
        ct.events.want(7);
        create_tcp(&ct, now, 1000, 0).unwrap();
        let (r, _) = run(&ct, now, msg::NEW, flags::REQUEST | flags::ACK, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000));
            b.put_be32(attr::MARK, 3);
        });
        assert_eq!(r, Ok(()));
        // A refused update reports nothing.
        let (r, _) = run(&ct, now, msg::NEW, flags::REQUEST | flags::ACK, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000));
            b.put_be32(attr::STATUS, 0);
        });
        assert_eq!(r, Err(Errno::EBUSY));
        let (r, _) = run(&ct, now, msg::DELETE, flags::REQUEST | flags::ACK, |b| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1000));
        });
        assert_eq!(r, Ok(()));
        let evs: Vec<Event> = std::iter::from_fn(|| ct.events.pop()).collect();
        let kinds: Vec<_> = evs.iter().map(|e| (e.kind, e.portid)).collect();
        assert_eq!(kinds, [(EventKind::New, 77), (EventKind::Update, 77), (EventKind::Destroy, 77)]);
        let msgs: Vec<(u32, Vec<u8>)> = evs.iter().map(|e| event_message(&ct, e, now)).collect();
        assert_eq!(msgs.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2, 4]);
        let hdr = |m: &[u8]| Header::parse(m).unwrap();
        assert_eq!((hdr(&msgs[0].1).flags, hdr(&msgs[0].1).pid), (flags::CREATE | flags::EXCL, 77));
        let objs: Vec<Object> = msgs.iter().map(|(_, m)| wire::parse_object(&m[16..]).unwrap()).collect();
        // A created connection's NEW: its mark (0) and synproxy values reported.
        assert_eq!((objs[0].mark, objs[0].synproxy, objs[0].timeout), (0, Some([0; 3]), Some(99)));
        assert_eq!(objs[1].mark, 3);
        assert_eq!(objs[2].status, st::ASSURED | st::CONFIRMED | st::DYING);
        assert_eq!(objs[2].timeout, Some(99), "a deleted connection's DESTROY has its timeout left");
        assert!(objs.iter().all(|o| o.id == objs[0].id));
    }

    #[test]
    fn dumps_filter_and_stream() {
        let ct = Conntrack::new(10_000, Config::default());
        let now = Timestamp::from_secs(10);
        for p in 0..300 {
            create_tcp(&ct, now, 2000 + p, u32::from(p % 3)).unwrap();
        }
        let (r, out) = run(&ct, now, msg::GET, flags::REQUEST | flags::DUMP, |_| {});
        assert_eq!(r, Ok(()));
        assert_eq!(out.len(), 301);
        let done = Header::parse(out.last().unwrap()).unwrap();
        assert_eq!(done.kind, netlink::msg_type::DONE);
        let h = Header::parse(&out[0]).unwrap();
        assert_eq!(h.flags, flags::MULTI | flags::DUMP_FILTERED, "family AF_INET filters");
        let (_, out) = run(&ct, now, msg::GET, flags::REQUEST | flags::DUMP, |b| {
            b.put_be32(attr::MARK, 1);
        });
        assert_eq!(out.len(), 101);
        // Flush what has mark 2, then count.
        let (r, _) = run(&ct, now, msg::DELETE, flags::REQUEST, |b| {
            b.put_be32(attr::MARK, 2);
        });
        assert_eq!(r, Ok(()));
        let (_, out) = run(&ct, now, msg::GET_STATS, flags::REQUEST, |_| {});
        assert_eq!(wire::parse_stats(&out[0][16..]), Some((200, 10_000)));
        // A first chunk is at most NLMSG_GOODSIZE bytes, the rest comes from the cursor.
        let mut b = MessageBuilder::new(wire::nlmsg_type(msg::GET), flags::REQUEST | flags::DUMP, 1, 0);
        b.nfgenmsg(Nfgenmsg::default());
        let bytes = b.finish();
        let m = Messages::new(&bytes).next().unwrap().unwrap();
        let mut out = Vec::new();
        let Ok(Handled::Dump(Some(mut d))) = message(&ct, &env_at(now), &m, 77, false, &mut out) else { panic!() };
        assert!(out.iter().map(Vec::len).sum::<usize>() <= DUMP_FIRST_CHUNK);
        let mut n = out.len();
        for _ in 0..1000 {
            let (more, done) = d.next(&ct, now, 4096);
            assert!(more.iter().map(Vec::len).sum::<usize>() <= 4096);
            n += more.len();
            if done {
                break;
            }
        }
        assert_eq!(n, 201);
        // A dump while one runs: EBUSY.
        assert_eq!(message(&ct, &env_at(now), &m, 77, true, &mut out).unwrap_err(), Errno::EBUSY);
    }

    proptest::proptest! {
        /// Random attributes under every ctnetlink message type, flag set and family, on a table
        /// with a few connections: no panic, and every answer is a walk of well-formed messages.
        #[test]
        fn random_requests_are_answered(
            subsys in 1u8..=2,
            kind in 0u8..10,
            fl in proptest::prelude::any::<u16>(),
            family in proptest::sample::select(vec![0u8, 2, 10, 7]),
            attrs in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            seed in proptest::collection::vec((1u16..7, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)), 0..6),
        ) {
            let ct = Conntrack::new(1000, Config::default());
            let now = Timestamp::from_secs(10);
            for p in 0..5 {
                create_tcp(&ct, now, 100 + p, u32::from(p)).unwrap();
            }
            let mut b = MessageBuilder::new(u16::from(subsys) << 8 | u16::from(kind), fl | flags::REQUEST, 1, 0);
            b.nfgenmsg(Nfgenmsg { family, version: 0, res_id: 0 });
            // Some well-formed attributes of random type (nested or not), then random bytes.
            for (t, payload) in &seed {
                if t % 2 == 0 {
                    let n = b.nest_start(*t);
                    b.put(1, payload);
                    b.nest_end(n);
                } else {
                    b.put(*t, payload);
                }
            }
            b.append(&attrs);
            let bytes = b.finish();
            let registry = crate::timeouts::Registry::new();
            let ctl = crate::control::Control { registry: &registry, ct: &ct };
            let env = env_at(now);
            let answer = crate::control::handle_at(&ctl, &env, crate::control::Peer { portid: 9, privileged: true }, &bytes);
            let mut all = answer.datagrams;
            if let Some(d) = answer.dump {
                all.extend(d.drain(&ct, now));
            }
            for d in &all {
                for m in Messages::new(d) {
                    proptest::prop_assert!(m.is_ok(), "malformed answer {:02x?}", d);
                }
            }
        }
    }

    #[test]
    fn errors() {
        let ct = Conntrack::new(1000, Config::default());
        let now = Timestamp::from_secs(10);
        let e = |kind, fl, f: &dyn Fn(&mut MessageBuilder)| run(&ct, now, kind, fl, f).0;
        let rq = flags::REQUEST | flags::ACK;
        assert_eq!(e(msg::GET, rq, &|_| {}), Err(Errno::EINVAL));
        assert_eq!(e(msg::GET, rq, &|b| wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1))), Err(Errno::ENOENT));
        assert_eq!(e(msg::NEW, rq, &|b| wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1))), Err(Errno::ENOENT));
        assert_eq!(
            e(msg::NEW, rq | flags::CREATE, &|b| wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1))),
            Err(Errno::EINVAL)
        );
        let no_timeout = |b: &mut MessageBuilder| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1));
            wire::put_tuple(b, attr::TUPLE_REPLY, &inv(&tup(1)));
        };
        assert_eq!(e(msg::NEW, rq | flags::CREATE, &no_timeout), Err(Errno::EINVAL));
        let natted = |b: &mut MessageBuilder| {
            wire::put_tuple(b, attr::TUPLE_ORIG, &tup(1));
            wire::put_tuple(b, attr::TUPLE_REPLY, &inv(&tup(2)));
            b.put_be32(attr::TIMEOUT, 5);
        };
        assert_eq!(e(msg::NEW, rq | flags::CREATE, &natted), Err(Errno::EOPNOTSUPP));
        assert_eq!(e(msg::GET_DYING, rq, &|_| {}), Err(Errno::EOPNOTSUPP));
        assert_eq!(e(msg::COUNT, rq, &|_| {}), Err(Errno::EINVAL));
        assert_eq!(change_status(Status(st::CONFIRMED), 0), Err(Errno::EBUSY));
        assert_eq!(change_status(Status(st::CONFIRMED), st::CONFIRMED | st::SRC_NAT | st::ASSURED), Ok(Status(12)));
    }
}
