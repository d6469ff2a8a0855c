//! The neighbour cache: ARP (IPv4) and NDP (IPv6) resolution with Linux's state machine.
//!
//! ```text
//!            resolve (miss): request, hold packet          reply / NA(S)
//!   (none) ------------------------------> INCOMPLETE -----------------------> REACHABLE
//!                     3 requests, 1 s apart |  no answer: FAILED, held           | 30 s
//!                                           v  packets get host unreachable      v
//!   (removed) <--------------------------- FAILED          REACHABLE <--- PROBE <- DELAY <- STALE
//!                                                           reply       5 s after a use  (used)
//! ```
//!
//! * REACHABLE for `reachable_ms` after a confirmation (a unicast ARP reply, a solicited NA),
//!   then STALE. Linux randomises 0.5–1.5 × base_reachable_time (30 s); here it is exactly the
//!   configured value, so tests are deterministic.
//! * A STALE entry is still used; its first use moves it to DELAY, and 5 s later (no confirmation)
//!   to PROBE: up to 3 unicast requests 1 s apart, then FAILED (removed).
//! * INCOMPLETE: up to 3 broadcast/multicast requests 1 s apart, packets held meanwhile (at most
//!   `queue_packets` and `queue_bytes`, the oldest dropped first, as Linux does), released as
//!   frames when the answer comes, or handed back as failed (for ICMP host unreachable).
//! * Learning as Linux with `arp_accept=0`: an ARP request for our address and an NS create a
//!   STALE entry for the sender; replies, NAs and gratuitous ARP only update existing entries.
//!   STALE entries unused for `gc_stale_ms` (60 s) are removed by [`Neighbours::tick`].
//!
//! # Sharing between workers
//! Entries live in 16 shards, each a `parking_lot::RwLock<HashMap>` (foldhash). The per-packet
//! path ([`Neighbours::resolve`] on a REACHABLE/DELAY/PROBE entry, [`Neighbours::lookup`]) takes
//! one uncontended shard read lock, copies 6 bytes and records the use in an atomic: no
//! allocation, no write. This is what dashmap does; dashmap is not in the lock file and needs no
//! more than this, so the shards are written out here rather than adding the dependency.

use std::collections::hash_map::Entry as Entry_;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use proto::arp::{self, Arp};
use proto::build::ethernet;
use proto::ndp::{self, Ndp};
use proto::packet::{ethertype, ipproto, parse_ethernet, Packet};
use proto::{checksum, Family};

use crate::clock::Timestamp;
use crate::route::table::{join, split, Iface};

/// Timers and limits, named after Linux's `neigh` sysctls, with their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighConfig {
    /// `base_reachable_time_ms`: 30 000.
    pub reachable_ms: u64,
    /// `delay_first_probe_time`: 5 s.
    pub delay_ms: u64,
    /// `retrans_time_ms`: 1000.
    pub retrans_ms: u64,
    /// `mcast_solicit`: broadcast/multicast requests while INCOMPLETE (3).
    pub mcast_probes: u8,
    /// `ucast_solicit`: unicast requests while PROBE (3).
    pub ucast_probes: u8,
    /// `unres_qlen`: packets held per unresolved neighbour (3, the historical Linux default).
    pub queue_packets: usize,
    /// `unres_qlen_bytes`: bytes held per unresolved neighbour (SK_WMEM_MAX, 212 992).
    pub queue_bytes: usize,
    /// `gc_stale_time`: an unused STALE entry is removed after this long (60 s).
    pub gc_stale_ms: u64,
    /// `gc_thresh3`: at most this many entries (1024); a miss beyond it drops the packet.
    pub max_entries: usize,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            reachable_ms: 30_000,
            delay_ms: 5_000,
            retrans_ms: 1_000,
            mcast_probes: 3,
            ucast_probes: 3,
            queue_packets: 3,
            queue_bytes: 212_992,
            gc_stale_ms: 60_000,
            max_entries: 1024,
        }
    }
}

/// A neighbour entry's state (`ip neigh` prints these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
}

/// What to do with a datagram whose next hop is being resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolve {
    /// Send it to this MAC now.
    Ready([u8; 6]),
    /// Held until the neighbour answers. `request` is a frame to send on the interface (the first
    /// request for a new entry; retries come from [`Neighbours::tick`]); `evicted` older held
    /// packets were dropped to make room.
    Queued { request: Option<Vec<u8>>, evicted: usize },
    /// Not held.
    Dropped(NeighDrop),
}

/// Why [`Neighbours::resolve`] could not hold a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighDrop {
    /// `max_entries` reached.
    TableFull,
    /// The interface has no address of the family to ask from.
    NoSourceAddress,
    /// The datagram alone exceeds `queue_bytes`.
    TooLarge,
}

/// A frame to transmit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub iface: usize,
    pub frame: Vec<u8>,
}

/// What [`Neighbours::tick`] produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NeighTick {
    /// Requests to send (retries and probes).
    pub frames: Vec<Frame>,
    /// Datagrams held for neighbours that never answered: each deserves a host / address
    /// unreachable to its source.
    pub failed: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Entry {
    state: NeighState,
    mac: [u8; 6],
    /// Last confirmation (REACHABLE until `confirmed + reachable_ms`).
    confirmed: Timestamp,
    /// When the current INCOMPLETE/DELAY/PROBE step times out.
    timer: Timestamp,
    probes: u8,
    /// Last use by a packet, in ns; written under the read lock.
    used: AtomicU64,
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
}

impl Entry {
    fn new(now: Timestamp, state: NeighState, mac: [u8; 6]) -> Entry {
        Entry {
            state,
            mac,
            confirmed: now,
            timer: now,
            probes: 0,
            used: AtomicU64::new(now.0),
            queue: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    fn valid(&self) -> bool {
        self.state != NeighState::Incomplete
    }
}

type Key = (usize, IpAddr);
type Shard = RwLock<HashMap<Key, Entry, foldhash::fast::RandomState>>;

const SHARDS: usize = 16;

/// The neighbour cache, shared by all workers (`&self` everywhere).
#[derive(Debug)]
pub struct Neighbours {
    cfg: NeighConfig,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Shard>,
    count: AtomicUsize,
}

fn ms(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

fn after(now: Timestamp, ms_: u64) -> Timestamp {
    Timestamp(now.0.saturating_add(ms(ms_)))
}

/// A request for `ip` from `iface`, broadcast/multicast or unicast to a known MAC.
fn request(iface: &Iface, ip: IpAddr, unicast: Option<[u8; 6]>) -> Option<Vec<u8>> {
    let (family, target) = split(ip);
    let src = iface.source_for(family, &target)?;
    Some(match family {
        Family::V4 => arp::request(
            iface.mac,
            [src[0], src[1], src[2], src[3]],
            [target[0], target[1], target[2], target[3]],
            unicast,
        ),
        Family::V6 => ndp::solicitation(iface.mac, src, target, unicast),
    })
}

/// How an incoming message updates an entry.
#[derive(Clone, Copy)]
struct Update {
    /// REACHABLE (a confirmation) or STALE (heard of, not confirmed).
    confirm: bool,
    /// Create the entry if missing.
    create: bool,
    /// May replace a different MAC of a valid entry (ARP always; NA only with the O flag).
    override_: bool,
}

impl Neighbours {
    /// An empty cache.
    pub fn new(cfg: NeighConfig) -> Neighbours {
        Neighbours {
            cfg,
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect(),
            count: AtomicUsize::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NeighConfig {
        &self.cfg
    }

    #[inline]
    fn shard(&self, k: &Key) -> &Shard {
        &self.shards[(self.hasher.hash_one(k) as usize) % SHARDS]
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The MAC of `ip` on `iface` if known (any state but INCOMPLETE), without changing state.
    #[inline]
    pub fn lookup(&self, iface: usize, ip: IpAddr) -> Option<[u8; 6]> {
        let k = (iface, ip);
        self.shard(&k).read().get(&k).filter(|e| e.valid()).map(|e| e.mac)
    }

    /// The state of the entry for `ip` on `iface`, if there is one.
    pub fn state(&self, iface: usize, ip: IpAddr) -> Option<NeighState> {
        let k = (iface, ip);
        self.shard(&k).read().get(&k).map(|e| e.state)
    }

    /// Adds or replaces a confirmed entry, as `ip neigh replace ... nud reachable` (tests, static
    /// configuration).
    pub fn insert(&self, now: Timestamp, iface: usize, ip: IpAddr, mac: [u8; 6]) {
        let k = (iface, ip);
        if self.shard(&k).write().insert(k, Entry::new(now, NeighState::Reachable, mac)).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The MAC to send `datagram` to `ip` on `iface` with, or holds a copy of it while `ip` is
    /// resolved. Allocation-free when the neighbour is known. The datagram comes in pieces, one
    /// after the other: a forwarded super-packet is its rewritten headers and its payload where it
    /// was received (see `Router::transmit_gso`); everything else is one piece.
    pub fn resolve(&self, now: Timestamp, iface: &Iface, ip: IpAddr, datagram: &[&[u8]]) -> Resolve {
        let k = (iface.id, ip);
        let shard = self.shard(&k);
        {
            let g = shard.read();
            if let Some(e) = g.get(&k) {
                let fresh = now < after(e.confirmed, self.cfg.reachable_ms);
                if matches!(e.state, NeighState::Delay | NeighState::Probe)
                    || (e.state == NeighState::Reachable && fresh)
                {
                    e.used.store(now.0, Ordering::Relaxed);
                    return Resolve::Ready(e.mac);
                }
            }
        }
        let mut g = shard.write();
        let full = self.len() >= self.cfg.max_entries;
        let len: usize = datagram.iter().map(|d| d.len()).sum();
        let (e, request_frame) = match g.entry(k) {
            Entry_::Occupied(o) => (o.into_mut(), None),
            Entry_::Vacant(v) => {
                if full {
                    return Resolve::Dropped(NeighDrop::TableFull);
                }
                if len > self.cfg.queue_bytes {
                    return Resolve::Dropped(NeighDrop::TooLarge);
                }
                let Some(req) = request(iface, ip, None) else {
                    return Resolve::Dropped(NeighDrop::NoSourceAddress);
                };
                let mut e = Entry::new(now, NeighState::Incomplete, [0; 6]);
                e.probes = 1;
                e.timer = after(now, self.cfg.retrans_ms);
                self.count.fetch_add(1, Ordering::Relaxed);
                (v.insert(e), Some(req))
            }
        };
        e.used.store(now.0, Ordering::Relaxed);
        match e.state {
            NeighState::Incomplete => {
                if len > self.cfg.queue_bytes {
                    return Resolve::Dropped(NeighDrop::TooLarge);
                }
                e.queue.push_back(datagram.concat());
                e.queued_bytes += len;
                let mut evicted = 0;
                while e.queue.len() > self.cfg.queue_packets.max(1) || e.queued_bytes > self.cfg.queue_bytes {
                    if let Some(old) = e.queue.pop_front() {
                        e.queued_bytes -= old.len();
                        evicted += 1;
                    }
                }
                Resolve::Queued { request: request_frame, evicted }
            }
            NeighState::Stale | NeighState::Reachable => {
                // Used after it went stale: wait `delay_ms` for a confirmation, then probe.
                e.state = NeighState::Delay;
                e.timer = after(now, self.cfg.delay_ms);
                Resolve::Ready(e.mac)
            }
            NeighState::Delay | NeighState::Probe => Resolve::Ready(e.mac),
        }
    }

    /// Applies what a message told us about `ip` on `iface`; returns the frames held for it, now
    /// addressed.
    fn update(&self, now: Timestamp, iface: &Iface, ip: IpAddr, mac: Option<[u8; 6]>, how: Update) -> Vec<Frame> {
        let k = (iface.id, ip);
        let mut g = self.shard(&k).write();
        let full = self.len() >= self.cfg.max_entries;
        let e = match g.entry(k) {
            Entry_::Occupied(o) => o.into_mut(),
            Entry_::Vacant(v) => {
                if let (Some(mac), true, false) = (mac, how.create, full) {
                    let state = if how.confirm { NeighState::Reachable } else { NeighState::Stale };
                    v.insert(Entry::new(now, state, mac));
                    self.count.fetch_add(1, Ordering::Relaxed);
                }
                return Vec::new();
            }
        };
        let was_valid = e.valid();
        match (mac, was_valid) {
            // Nothing to learn from.
            (None, false) => return Vec::new(),
            (None, true) => {
                if how.confirm {
                    e.state = NeighState::Reachable;
                    e.confirmed = now;
                }
            }
            (Some(m), false) => {
                e.mac = m;
                e.state = if how.confirm { NeighState::Reachable } else { NeighState::Stale };
                e.confirmed = now;
            }
            (Some(m), true) if m == e.mac => {
                // Same address: a confirmation refreshes, hearsay leaves the state alone.
                if how.confirm {
                    e.state = NeighState::Reachable;
                    e.confirmed = now;
                }
            }
            (Some(m), true) => {
                if how.override_ {
                    e.mac = m;
                    e.state = if how.confirm { NeighState::Reachable } else { NeighState::Stale };
                    e.confirmed = now;
                } else if e.state == NeighState::Reachable {
                    // RFC 4861 7.2.5: a different address without O only makes us doubt.
                    e.state = NeighState::Stale;
                }
            }
        }
        if was_valid || e.queue.is_empty() {
            return Vec::new();
        }
        e.queued_bytes = 0;
        let mac = e.mac;
        e.queue.drain(..).map(|d| Frame { iface: iface.id, frame: ethernet(mac, iface.mac, &d) }).collect()
    }

    /// Handles an ARP frame received on `iface`: answers requests for its addresses, learns, and
    /// returns those answers and any packets released by what was learnt.
    pub fn input_arp(&self, now: Timestamp, iface: &Iface, frame: &[u8]) -> Vec<Frame> {
        let Ok(eth) = parse_ethernet(frame) else { return Vec::new() };
        if eth.ethertype != ethertype::ARP {
            return Vec::new();
        }
        let Ok(a) = frame.get(eth.l3_offset..).map_or(Err(arp::ArpError::Truncated), Arp::parse) else {
            return Vec::new();
        };
        if a.sha == iface.mac || (a.op != arp::op::REQUEST && a.op != arp::op::REPLY) {
            return Vec::new();
        }
        let bad = |ip: [u8; 4]| ip[0] >= 224 || ip[0] == 127 || ip == [255; 4];
        if bad(a.tpa) || bad(a.spa) || a.sha[0] & 1 != 0 {
            return Vec::new();
        }
        let mut tpa = [0u8; 16];
        tpa[..4].copy_from_slice(&a.tpa);
        let ours = iface.owns(Family::V4, &tpa);
        if a.spa == [0; 4] {
            // Duplicate address detection probe: answer if it asks for ours, learn nothing.
            if a.op == arp::op::REQUEST && ours {
                return vec![Frame { iface: iface.id, frame: arp::reply(&a, iface.mac) }];
            }
            return Vec::new();
        }
        let sender = IpAddr::from(a.spa);
        let mut out = Vec::new();
        if a.op == arp::op::REQUEST && ours {
            out.push(Frame { iface: iface.id, frame: arp::reply(&a, iface.mac) });
            out.extend(self.update(
                now,
                iface,
                sender,
                Some(a.sha),
                Update { confirm: false, create: true, override_: true },
            ));
        } else {
            // Replies and requests not for us (gratuitous ARP among them) update existing entries:
            // a reply unicast to us confirms, anything else is hearsay.
            let to_us = frame.get(..6) == Some(&iface.mac[..]);
            let confirm = a.op == arp::op::REPLY && to_us;
            out.extend(self.update(
                now,
                iface,
                sender,
                Some(a.sha),
                Update { confirm, create: false, override_: true },
            ));
        }
        out
    }

    /// Handles an NS or NA (`p` parsed from `frame`, ICMPv6 type 135/136) received on `iface`:
    /// answers solicitations for its addresses with router advertisements of ours (R, S, O set),
    /// learns from the link-layer address options, and returns the answers and released packets.
    /// Invalid messages (hop limit not 255, bad checksum, multicast target, ...) are ignored.
    pub fn input_ndp(&self, now: Timestamp, iface: &Iface, frame: &[u8], p: &Packet) -> Vec<Frame> {
        if p.family != Family::V6 || p.proto != ipproto::ICMPV6 || p.ttl != 255 || p.is_fragment() {
            return Vec::new();
        }
        let Some(seg) = frame.get(p.l4_offset..p.end) else { return Vec::new() };
        if checksum::l4(Family::V6, &p.src, &p.dst, ipproto::ICMPV6, seg, seg.len()) != 0 {
            return Vec::new();
        }
        let Ok(m) = Ndp::parse(seg) else { return Vec::new() };
        if m.target[0] == 0xff {
            return Vec::new();
        }
        let unspecified = p.src == [0; 16];
        let ours = iface.owns(Family::V6, &m.target);
        if m.ty == ndp::NS {
            if unspecified {
                // DAD for an address we hold: defend it to all nodes (no S flag).
                if ours && m.lladdr.is_none() {
                    let mac = ndp::multicast_mac(&ndp::ALL_NODES);
                    let flags = ndp::flags::ROUTER | ndp::flags::OVERRIDE;
                    return vec![Frame {
                        iface: iface.id,
                        frame: ndp::advertisement(iface.mac, m.target, mac, ndp::ALL_NODES, flags),
                    }];
                }
                return Vec::new();
            }
            if p.dst[0] == 0xff && p.dst != ndp::solicited_node(&m.target) {
                return Vec::new();
            }
            let sender = join(Family::V6, &p.src);
            let mut out = Vec::new();
            if ours {
                let dst_mac = match (m.lladdr, frame.get(6..12)) {
                    (Some(mac), _) => mac,
                    (None, Some(s)) => [s[0], s[1], s[2], s[3], s[4], s[5]],
                    (None, None) => return Vec::new(),
                };
                let flags = ndp::flags::ROUTER | ndp::flags::SOLICITED | ndp::flags::OVERRIDE;
                out.push(Frame {
                    iface: iface.id,
                    frame: ndp::advertisement(iface.mac, m.target, dst_mac, p.src, flags),
                });
            }
            if m.lladdr.is_some() {
                out.extend(self.update(
                    now,
                    iface,
                    sender,
                    m.lladdr,
                    Update { confirm: false, create: true, override_: true },
                ));
            }
            out
        } else {
            let solicited = m.flags & ndp::flags::SOLICITED != 0;
            if p.dst[0] == 0xff && solicited {
                return Vec::new();
            }
            let how = Update { confirm: solicited, create: false, override_: m.flags & ndp::flags::OVERRIDE != 0 };
            self.update(now, iface, join(Family::V6, &m.target), m.lladdr, how)
        }
    }

    /// Runs the timers at `now`: retries and probes to send, entries gone stale, failed and
    /// garbage-collected. `ifaces[i]` must be the interface with id `i` (as the router keeps them).
    /// Call it every few hundred milliseconds.
    pub fn tick(&self, now: Timestamp, ifaces: &[Iface]) -> NeighTick {
        let mut out = NeighTick::default();
        let cfg = self.cfg;
        for shard in &self.shards {
            let mut g = shard.write();
            let before = g.len();
            g.retain(|&(iface, ip), e| {
                let Some(ifc) = ifaces.get(iface) else { return false };
                match e.state {
                    NeighState::Reachable => {
                        if now >= after(e.confirmed, cfg.reachable_ms) {
                            e.state = NeighState::Stale;
                        }
                        true
                    }
                    NeighState::Stale => now.since(Timestamp(e.used.load(Ordering::Relaxed))) < ms(cfg.gc_stale_ms),
                    NeighState::Delay if now >= e.timer => {
                        e.state = NeighState::Probe;
                        e.probes = 1;
                        e.timer = after(now, cfg.retrans_ms);
                        out.frames.extend(request(ifc, ip, Some(e.mac)).map(|frame| Frame { iface, frame }));
                        true
                    }
                    NeighState::Incomplete | NeighState::Probe if now >= e.timer => {
                        let unicast = (e.state == NeighState::Probe).then_some(e.mac);
                        let max = if unicast.is_some() { cfg.ucast_probes } else { cfg.mcast_probes };
                        if e.probes < max {
                            if let Some(frame) = request(ifc, ip, unicast) {
                                e.probes += 1;
                                e.timer = after(now, cfg.retrans_ms);
                                out.frames.push(Frame { iface, frame });
                                return true;
                            }
                        }
                        // FAILED: drop the entry; a later packet starts over, as from Linux's FAILED.
                        out.failed.extend(e.queue.drain(..));
                        false
                    }
                    NeighState::Delay | NeighState::Incomplete | NeighState::Probe => true,
                }
            });
            let removed = before - g.len();
            self.count.fetch_sub(removed, Ordering::Relaxed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::build::PacketBuilder;
    use proto::packet::{parse_frame, L4};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 0x22];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 0x33];

    fn ifaces() -> Vec<Iface> {
        vec![Iface {
            id: 0,
            name: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            addrs: vec![("198.18.0.1".parse().unwrap(), 24), ("2001:1::1".parse().unwrap(), 64)],
        }]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(ms_: u64) -> Timestamp {
        Timestamp::from_millis(ms_)
    }

    fn arp_frame(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4], eth_dst: [u8; 6]) -> Vec<u8> {
        Arp { op, sha, spa, tha, tpa }.frame(eth_dst, sha)
    }

    fn datagram(n: u8) -> Vec<u8> {
        PacketBuilder::v4(Ipv4Addr::new(198, 19, 0, 9), Ipv4Addr::new(198, 18, 0, 2)).udp(1, 2, &[n; 10])
    }

    #[test]
    fn incomplete_then_reply_releases_held_packets() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        let peer = ip("198.18.0.2");
        let Resolve::Queued { request: Some(req), evicted: 0 } = n.resolve(t(0), &ifs[0], peer, &[&datagram(1)]) else {
            panic!()
        };
        let a = Arp::parse(&req[14..]).unwrap();
        assert_eq!(
            (a.op, a.spa, a.tpa, &req[..6]),
            (arp::op::REQUEST, [198, 18, 0, 1], [198, 18, 0, 2], &arp::BROADCAST[..])
        );
        // Further packets are held without another request; the oldest beyond 3 is dropped.
        // (One in two pieces, as a split super-packet comes: held joined.)
        let two = datagram(2);
        let (head, tail) = two.split_at(20);
        assert_eq!(n.resolve(t(10), &ifs[0], peer, &[head, tail]), Resolve::Queued { request: None, evicted: 0 });
        assert_eq!(n.resolve(t(20), &ifs[0], peer, &[&datagram(3)]), Resolve::Queued { request: None, evicted: 0 });
        assert_eq!(n.resolve(t(30), &ifs[0], peer, &[&datagram(4)]), Resolve::Queued { request: None, evicted: 1 });
        assert_eq!(n.lookup(0, peer), None);
        let reply = arp_frame(arp::op::REPLY, PEER, [198, 18, 0, 2], ifs[0].mac, [198, 18, 0, 1], ifs[0].mac);
        let out = n.input_arp(t(40), &ifs[0], &reply);
        assert_eq!(out.len(), 3);
        for (f, want) in out.iter().zip([2u8, 3, 4]) {
            assert_eq!((&f.frame[..6], &f.frame[6..12], f.iface), (&PEER[..], &ifs[0].mac[..], 0));
            assert_eq!(f.frame[14..], datagram(want)[..]);
        }
        assert_eq!(n.state(0, peer), Some(NeighState::Reachable));
        assert_eq!(n.resolve(t(50), &ifs[0], peer, &[&datagram(5)]), Resolve::Ready(PEER));
        assert_eq!(n.lookup(0, peer), Some(PEER));
    }

    #[test]
    fn three_requests_then_failed() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        let peer = ip("198.18.0.2");
        assert!(matches!(n.resolve(t(0), &ifs[0], peer, &[&datagram(1)]), Resolve::Queued { request: Some(_), .. }));
        assert_eq!(n.tick(t(999), &ifs), NeighTick::default());
        assert_eq!(n.tick(t(1000), &ifs).frames.len(), 1);
        assert_eq!(n.tick(t(2000), &ifs).frames.len(), 1);
        let last = n.tick(t(3000), &ifs);
        assert_eq!((last.frames.len(), last.failed), (0, vec![datagram(1)]));
        assert_eq!(n.state(0, peer), None);
        assert!(n.is_empty());
        // The next packet starts over.
        assert!(matches!(n.resolve(t(4000), &ifs[0], peer, &[&datagram(2)]), Resolve::Queued { request: Some(_), .. }));
    }

    #[test]
    fn reachable_stale_delay_probe() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        let peer = ip("198.18.0.2");
        n.insert(t(0), 0, peer, PEER);
        assert_eq!(n.resolve(t(29_999), &ifs[0], peer, &[]), Resolve::Ready(PEER));
        assert!(n.tick(t(30_000), &ifs).frames.is_empty());
        assert_eq!(n.state(0, peer), Some(NeighState::Stale));
        // Used while stale: still sent, DELAY, then unicast probes.
        assert_eq!(n.resolve(t(31_000), &ifs[0], peer, &[]), Resolve::Ready(PEER));
        assert_eq!(n.state(0, peer), Some(NeighState::Delay));
        let probe = n.tick(t(36_000), &ifs);
        assert_eq!(probe.frames.len(), 1);
        assert_eq!(&probe.frames[0].frame[..6], &PEER);
        assert_eq!(n.state(0, peer), Some(NeighState::Probe));
        assert_eq!(n.resolve(t(36_100), &ifs[0], peer, &[]), Resolve::Ready(PEER));
        // A unicast reply confirms.
        let reply = arp_frame(arp::op::REPLY, PEER, [198, 18, 0, 2], ifs[0].mac, [198, 18, 0, 1], ifs[0].mac);
        assert!(n.input_arp(t(36_200), &ifs[0], &reply).is_empty());
        assert_eq!(n.state(0, peer), Some(NeighState::Reachable));
        // Without an answer: 3 probes, then gone.
        n.tick(t(70_000), &ifs);
        n.resolve(t(70_000), &ifs[0], peer, &[]);
        assert_eq!(n.tick(t(75_000), &ifs).frames.len(), 1);
        assert_eq!(n.tick(t(76_000), &ifs).frames.len(), 1);
        assert_eq!(n.tick(t(77_000), &ifs).frames.len(), 1);
        assert_eq!(n.tick(t(78_000), &ifs).frames.len(), 0);
        assert_eq!(n.state(0, peer), None);
    }

    #[test]
    fn stale_unused_entries_are_collected() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        n.insert(t(0), 0, ip("198.18.0.2"), PEER);
        n.tick(t(30_000), &ifs);
        n.tick(t(59_999), &ifs);
        assert_eq!(n.len(), 1);
        n.tick(t(60_000), &ifs);
        assert_eq!(n.len(), 0);
    }

    #[test]
    fn arp_requests_answered_and_learnt() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        let req = arp_frame(arp::op::REQUEST, PEER, [198, 18, 0, 2], [0; 6], [198, 18, 0, 1], arp::BROADCAST);
        let out = n.input_arp(t(0), &ifs[0], &req);
        assert_eq!(out.len(), 1);
        let r = Arp::parse(&out[0].frame[14..]).unwrap();
        assert_eq!(
            (r.op, r.sha, r.spa, r.tha, r.tpa),
            (arp::op::REPLY, ifs[0].mac, [198, 18, 0, 1], PEER, [198, 18, 0, 2])
        );
        assert_eq!(&out[0].frame[..6], &PEER);
        assert_eq!(n.state(0, ip("198.18.0.2")), Some(NeighState::Stale));
        // A request for someone else: no answer, no entry.
        let req = arp_frame(arp::op::REQUEST, OTHER, [198, 18, 0, 3], [0; 6], [198, 18, 0, 4], arp::BROADCAST);
        assert!(n.input_arp(t(0), &ifs[0], &req).is_empty());
        assert_eq!(n.state(0, ip("198.18.0.3")), None);
        // A DAD probe for our address is answered; nothing learnt.
        let dad = arp_frame(arp::op::REQUEST, OTHER, [0; 4], [0; 6], [198, 18, 0, 1], arp::BROADCAST);
        let out = n.input_arp(t(0), &ifs[0], &dad);
        assert_eq!(Arp::parse(&out[0].frame[14..]).unwrap().tpa, [0; 4]);
        assert_eq!(n.len(), 1);
        // Garbage is ignored.
        assert!(n.input_arp(t(0), &ifs[0], &req[..30]).is_empty());
    }

    #[test]
    fn gratuitous_arp_updates_but_does_not_create() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        let garp = |mac| arp_frame(arp::op::REQUEST, mac, [198, 18, 0, 2], [0; 6], [198, 18, 0, 2], arp::BROADCAST);
        assert!(n.input_arp(t(0), &ifs[0], &garp(PEER)).is_empty());
        assert_eq!(n.state(0, ip("198.18.0.2")), None);
        n.insert(t(0), 0, ip("198.18.0.2"), PEER);
        n.input_arp(t(1), &ifs[0], &garp(OTHER));
        assert_eq!(n.lookup(0, ip("198.18.0.2")), Some(OTHER));
        assert_eq!(n.state(0, ip("198.18.0.2")), Some(NeighState::Stale));
        // A broadcast reply is not a confirmation either.
        let bcast_reply = arp_frame(arp::op::REPLY, PEER, [198, 18, 0, 2], [0; 6], [198, 18, 0, 2], arp::BROADCAST);
        n.input_arp(t(2), &ifs[0], &bcast_reply);
        assert_eq!(
            (n.lookup(0, ip("198.18.0.2")), n.state(0, ip("198.18.0.2"))),
            (Some(PEER), Some(NeighState::Stale))
        );
    }

    fn ns(src: &str, dst: &str, target: &str, slla: Option<[u8; 6]>, hop: u8) -> Vec<u8> {
        let mut body = Ipv6Addr::from(split(ip(target)).1).octets().to_vec();
        if let Some(m) = slla {
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&m);
        }
        let d = PacketBuilder::v6(src.parse().unwrap(), dst.parse().unwrap()).ttl(hop).icmp(135, 0, 0, &body);
        ethernet([0x33, 0x33, 0xff, 0, 0, 1], PEER, &d)
    }

    #[test]
    fn ns_answered_with_router_na_and_sender_learnt() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        let f = ns("2001:1::2", "ff02::1:ff00:1", "2001:1::1", Some(PEER), 255);
        let p = parse_frame(&f).unwrap();
        let out = n.input_ndp(t(0), &ifs[0], &f, &p);
        assert_eq!(out.len(), 1);
        let na = parse_frame(&out[0].frame).unwrap();
        let L4::Icmpv6(i) = na.l4 else { panic!() };
        assert_eq!((i.ty, na.ttl, na.dst, &out[0].frame[..6]), (136, 255, split(ip("2001:1::2")).1, &PEER[..]));
        let m = Ndp::parse(na.l4_bytes(&out[0].frame)).unwrap();
        assert_eq!((m.flags, m.lladdr, m.target), (0xe0, Some(ifs[0].mac), split(ip("2001:1::1")).1));
        assert_eq!(n.state(0, ip("2001:1::2")), Some(NeighState::Stale));
        // Hop limit not 255: ignored.
        let f = ns("2001:1::3", "ff02::1:ff00:1", "2001:1::1", Some(PEER), 64);
        assert!(n.input_ndp(t(0), &ifs[0], &f, &parse_frame(&f).unwrap()).is_empty());
        // For another address: learn, don't answer.
        let f = ns("2001:1::4", "ff02::1:ff00:5", "2001:1::5", Some(OTHER), 255);
        assert!(n.input_ndp(t(0), &ifs[0], &f, &parse_frame(&f).unwrap()).is_empty());
        assert_eq!(n.lookup(0, ip("2001:1::4")), Some(OTHER));
        // DAD for our address: defended to all nodes without S.
        let f = ns("::", "ff02::1:ff00:1", "2001:1::1", None, 255);
        let out = n.input_ndp(t(0), &ifs[0], &f, &parse_frame(&f).unwrap());
        let na = parse_frame(&out[0].frame).unwrap();
        assert_eq!((na.dst, Ndp::parse(na.l4_bytes(&out[0].frame)).unwrap().flags), (ndp::ALL_NODES, 0xa0));
    }

    #[test]
    fn na_resolves_v6_and_releases() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        let peer = ip("2001:1::2");
        let d = PacketBuilder::v6("2001:9::1".parse().unwrap(), "2001:1::2".parse().unwrap()).udp(1, 2, b"x");
        let Resolve::Queued { request: Some(req), .. } = n.resolve(t(0), &ifs[0], peer, &[&d]) else { panic!() };
        let p = parse_frame(&req).unwrap();
        assert_eq!((p.dst, p.src), (ndp::solicited_node(&split(peer).1), split(ip("2001:1::1")).1));
        let na = ndp::advertisement(
            PEER,
            split(peer).1,
            ifs[0].mac,
            split(ip("2001:1::1")).1,
            ndp::flags::SOLICITED | ndp::flags::OVERRIDE,
        );
        let out = n.input_ndp(t(5), &ifs[0], &na, &parse_frame(&na).unwrap());
        assert_eq!(out.len(), 1);
        assert_eq!((&out[0].frame[..6], &out[0].frame[14..]), (&PEER[..], &d[..]));
        assert_eq!(n.state(0, peer), Some(NeighState::Reachable));
        // An unsolicited NA without O for a different MAC only makes us doubt.
        let na = ndp::advertisement(OTHER, split(peer).1, ifs[0].mac, split(ip("2001:1::1")).1, 0);
        n.input_ndp(t(6), &ifs[0], &na, &parse_frame(&na).unwrap());
        assert_eq!((n.lookup(0, peer), n.state(0, peer)), (Some(PEER), Some(NeighState::Stale)));
        // With O it takes over.
        let na = ndp::advertisement(OTHER, split(peer).1, ifs[0].mac, split(ip("2001:1::1")).1, ndp::flags::OVERRIDE);
        n.input_ndp(t(7), &ifs[0], &na, &parse_frame(&na).unwrap());
        assert_eq!(n.lookup(0, peer), Some(OTHER));
        // A corrupted checksum is ignored.
        let mut bad =
            ndp::advertisement(PEER, split(peer).1, ifs[0].mac, split(ip("2001:1::1")).1, ndp::flags::OVERRIDE);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        n.input_ndp(t(8), &ifs[0], &bad, &parse_frame(&bad).unwrap());
        assert_eq!(n.lookup(0, peer), Some(OTHER));
    }

    #[test]
    fn limits() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig { max_entries: 2, queue_bytes: 100, ..NeighConfig::default() });
        assert!(matches!(n.resolve(t(0), &ifs[0], ip("198.18.0.2"), &[&datagram(1)]), Resolve::Queued { .. }));
        assert!(matches!(n.resolve(t(0), &ifs[0], ip("198.18.0.3"), &[&datagram(1)]), Resolve::Queued { .. }));
        assert_eq!(n.resolve(t(0), &ifs[0], ip("198.18.0.4"), &[&datagram(1)]), Resolve::Dropped(NeighDrop::TableFull));
        // 101 bytes, in two pieces as a split super-packet comes: over the 100 allowed.
        let big: [&[u8]; 2] = [&[0; 60], &[0; 41]];
        assert_eq!(n.resolve(t(0), &ifs[0], ip("198.18.0.2"), &big), Resolve::Dropped(NeighDrop::TooLarge));
        // 38-byte datagrams, 100 bytes: only two fit.
        assert_eq!(
            n.resolve(t(0), &ifs[0], ip("198.18.0.2"), &[&datagram(2)]),
            Resolve::Queued { request: None, evicted: 0 }
        );
        assert_eq!(
            n.resolve(t(0), &ifs[0], ip("198.18.0.2"), &[&datagram(3)]),
            Resolve::Queued { request: None, evicted: 1 }
        );
        let no_v6 = Iface { addrs: vec![], ..ifs[0].clone() };
        let n = Neighbours::new(NeighConfig::default());
        assert_eq!(n.resolve(t(0), &no_v6, ip("2001:1::2"), &[]), Resolve::Dropped(NeighDrop::NoSourceAddress));
    }

    #[test]
    fn shared_between_threads() {
        let ifs = ifaces();
        let n = Neighbours::new(NeighConfig::default());
        n.insert(t(0), 0, ip("198.18.0.2"), PEER);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..1000 {
                        assert_eq!(n.resolve(t(i), &ifs[0], ip("198.18.0.2"), &[]), Resolve::Ready(PEER));
                    }
                });
            }
        });
    }
}
