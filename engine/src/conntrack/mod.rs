//! The connection table and the per-packet classification.
//!
//! # Layout
//! The table is split into shards, each a lock around a slab of connections plus a hash index.
//! Both tuples of a connection hash with one *symmetric* keyed hash (equal for a tuple and its
//! inverse), so both land in the same shard and a packet costs one hash and one uncontended lock,
//! whichever its direction. The index (see `index.rs`) stores one entry per connection, its slot
//! with a hash tag, one cache line per bucket, and a lookup compares the packet's tuple with the
//! original tuple held in the slab, then with its inverse (see [`Conn`]): about 20 bytes of index
//! per connection at a full table. A slot is three cache lines, line-aligned. Index and slabs are
//! reserved up front for `max`
//! connections, as the kernel sizes its hash table, so their addresses never move and
//! [`Conntrack::track_batch`] can prefetch a batch's buckets and slots before taking any lock.
//!
//! We write this by hand rather than use `dashmap`: a dashmap of `Arc<Mutex<Conn>>` keyed by tuple
//! costs two entries of a full tuple each, an allocation per connection and a refcount round trip
//! per packet (about 80 ns per lookup at 100k connections measured here), and offers no way to
//! prefetch; this layout needs none of those on an established connection's packet.
//!
//! # Life of a packet (as in `nf_conntrack_in`)
//! [`Conntrack::track`] runs the tracker's checks, looks the tuple up, and either updates the
//! connection found or prepares a new, unconfirmed one that travels with the [`Tracked`] result.
//! Only [`Conntrack::confirm`], called once the packet is accepted, inserts it: dropped packets
//! never fill the table, and of two workers confirming the same flow at once the second finds the
//! first's entry and uses it.
//!
//! Expired connections vanish when a lookup meets them and through [`Conntrack::sweep`].

pub mod conn;
pub mod events;
mod index;
pub mod l4;
pub mod ops;
pub mod snapshot;
pub mod tuple;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proto::packet::{parse_quoted, Packet};

use crate::clock::Timestamp;
use crate::sys;
use crate::timeouts::{Defaults, Policy};
pub use conn::{Conn, Status};
use events::{EventKind, Events};
use index::Index;
pub use l4::{Config, Invalid, Proto, ProtoState, Verdict};
pub use tuple::{Dir, Tuple, TupleHasher};

/// The conntrack state of a packet, as nftables' `ct state` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

impl CtState {
    /// The word nftables uses.
    pub fn name(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
            CtState::Untracked => "untracked",
        }
    }
}

/// Why the table refused a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table is full and no unassured connection could be dropped to make room.
    TableFull,
}

/// Counters in the shape of `conntrack -S`, plus named invalid reasons. Each worker owns one and
/// passes it in, so counting never shares a cache line.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub found: u64,
    pub invalid: u64,
    pub insert: u64,
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub error: u64,
    pub search_restart: u64,
    pub clash_resolve: u64,
    /// Invalid packets per reason, indexed like [`Invalid::ALL`].
    pub invalid_by: [u64; Invalid::ALL.len()],
    /// Connections removed because they expired.
    pub expired: u64,
}

impl Stats {
    fn invalid(&mut self, r: Invalid) {
        self.invalid += 1;
        self.invalid_by[r as usize] += 1;
    }

    /// Adds `o`'s counts to these.
    pub fn merge(&mut self, o: &Stats) {
        self.found += o.found;
        self.invalid += o.invalid;
        self.insert += o.insert;
        self.insert_failed += o.insert_failed;
        self.drop += o.drop;
        self.early_drop += o.early_drop;
        self.error += o.error;
        self.search_restart += o.search_restart;
        self.clash_resolve += o.clash_resolve;
        self.expired += o.expired;
        for (a, b) in self.invalid_by.iter_mut().zip(o.invalid_by) {
            *a += b;
        }
    }
}

/// `conntrack -S`'s counters, then the invalid packets per named reason (those that occurred):
/// `found=0 invalid=2 insert=5 … expired=1 invalid_by: checksum=1 tcp_window=1`.
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "found={} invalid={} insert={} insert_failed={} drop={} early_drop={} error={} search_restart={} clash_resolve={} expired={}",
            self.found,
            self.invalid,
            self.insert,
            self.insert_failed,
            self.drop,
            self.early_drop,
            self.error,
            self.search_restart,
            self.clash_resolve,
            self.expired
        )?;
        let mut first = true;
        for (r, n) in Invalid::ALL.iter().zip(self.invalid_by) {
            if n > 0 {
                write!(f, "{} {}={n}", if first { " invalid_by:" } else { "" }, r.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

/// The result of tracking one packet.
#[derive(Debug)]
pub struct Tracked {
    pub state: CtState,
    pub dir: Dir,
    /// Why the packet is invalid, when it is.
    pub invalid: Option<Invalid>,
    /// A new connection waiting for [`Conntrack::confirm`]: boxed, so that the result of every
    /// packet stays a few bytes to move.
    pending: Option<Box<Conn>>,
}

/// A packet's classification (state, direction, reason if invalid) packed in one word, for the
/// packet path: a [`Tracked`] is built field by field in memory and copied whole, and each such
/// copy waited for the stores it reads (a failed store-to-load forward: perf put two of them at
/// 18–24% of `track_keyed`'s and `track_batch`'s samples). A word is built in a register, comes
/// back from a call in one, and is stored and loaded whole. The caller unpacks it into the
/// `Tracked` it hands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class(u32);

impl Class {
    /// `Option<Invalid>`'s `None` in the third byte.
    const VALID: u32 = 0xff;

    #[inline(always)]
    fn of(state: CtState, dir: Dir) -> Class {
        Class(state as u32 | (dir as u32) << 8 | Self::VALID << 16)
    }

    #[inline(always)]
    fn invalid(r: Invalid) -> Class {
        Class(CtState::Invalid as u32 | (r as u32) << 16)
    }

    /// `t`'s classification; its pending connection, if any, goes to `pending`.
    #[inline(always)]
    fn split(t: Tracked, pending: &mut Option<Box<Conn>>) -> Class {
        *pending = t.pending;
        match t.invalid {
            Some(r) => Class::invalid(r),
            None => Class::of(t.state, t.dir),
        }
    }

    #[inline(always)]
    fn tracked(self, pending: Option<Box<Conn>>) -> Tracked {
        let state = match self.0 & 0xff {
            0 => CtState::New,
            1 => CtState::Established,
            2 => CtState::Related,
            3 => CtState::Invalid,
            _ => CtState::Untracked,
        };
        let dir = if self.0 & 0x100 == 0 { Dir::Original } else { Dir::Reply };
        let invalid = Invalid::ALL.get((self.0 >> 16 & 0xff) as usize).copied();
        Tracked { state, dir, invalid, pending }
    }
}

impl Tracked {
    fn invalid(r: Invalid) -> Tracked {
        Tracked { state: CtState::Invalid, dir: Dir::Original, invalid: Some(r), pending: None }
    }

    fn of(state: CtState, dir: Dir) -> Tracked {
        Tracked { state, dir, invalid: None, pending: None }
    }

    /// A packet that is not tracked (a `notrack` rule, ICMPv6 neighbour discovery).
    pub fn untracked() -> Tracked {
        Tracked::of(CtState::Untracked, Dir::Original)
    }

    /// Whether a new connection waits for confirmation.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Attaches a timeout policy to the new connection this packet creates (`ct timeout set`),
    /// when its protocol matches; the connection's timeout is re-armed from the policy, as
    /// `nft_ct_timeout_obj_eval` does with `values[0]`... for us, with the value of its state.
    pub fn set_policy(&mut self, now: Timestamp, policy: &Arc<Policy>) -> bool {
        let Some(c) = self.pending.as_mut() else { return false };
        if c.l4() != policy.proto || policy.is_deleted() {
            return false;
        }
        let slot = c.proto.timeout_slot();
        c.expires = now.plus_secs(policy.values.get(slot));
        c.policy = Some(policy.clone());
        true
    }

    /// Sets the connection mark of the new connection.
    pub fn set_mark(&mut self, mark: u32) {
        if let Some(c) = self.pending.as_mut() {
            c.mark = mark;
        }
    }
}

/// Default maximum number of connections, like `nf_conntrack_max`.
pub const DEFAULT_MAX: usize = 262_144;

/// Whether a new connection found a place, and how many unassured connections were dropped
/// looking for one.
enum Room {
    Made { dropped: u64 },
    Full { dropped: u64 },
}

/// Entries examined, at most, to find an unassured connection to drop when the table is full.
const EARLY_DROP_SCAN: usize = 256;

/// How many shards: enough that workers rarely meet on one lock.
const SHARDS: usize = 256;

/// Packets tracked together by [`Conntrack::track_batch`]: enough misses in flight to cover
/// memory latency, few enough that prefetched lines are still in cache when used.
pub const BATCH: usize = 32;

/// In [`Conntrack::track_batch`], the shard of a packet that is tracked on its own.
const ALONE: u16 = u16::MAX;

/// The most packets [`Conntrack::track_batch`] tracks under one taking of a shard's lock: enough
/// to make the lock's cost small, few enough that another worker waiting for the shard (the
/// other direction of the same connection, say) waits for a handful of packets, not a batch.
const RUN: usize = 8;

/// A shard's lock: a spin lock, because a packet holds it for a few hundred instructions and
/// workers rarely meet on one of 256 shards. Taking it is one atomic read-modify-write and
/// releasing it a plain store; `parking_lot::Mutex` releases with a second `lock cmpxchg`, a full
/// fence on x86 that also held back the next packet's loads (measured in `bench/README.md`: 5–7%
/// of an established packet). A waiter yields the CPU between looks, so a holder that was
/// preempted is not spun against for a whole time slice.
type Mutex<T> = spin::mutex::SpinMutex<T, spin::relax::Yield>;

/// The slot of the connection in `slab` that has `t` as one of its tuples, among those `shard`'s
/// index holds under hash `h`, and the direction `t` goes in; only a connection that `accept`s.
/// One index entry serves both directions (the hash is symmetric): the original tuple is compared
/// first. Caller holds the shard's lock. Always inlined: it is the lookup of every packet.
#[inline(always)]
fn lookup(shard: &Shard, slab: &Slab, h: u64, t: &Tuple, accept: impl Fn(&Conn) -> bool) -> Option<(usize, Dir)> {
    let mut dir = Dir::Original;
    let slot = shard.index.find(h, |slot| {
        let Some(c) = slab.slots.get(slot as usize).and_then(|s| s.as_ref()) else { return false };
        match c.dir_of(t) {
            Some(d) if accept(c) => {
                dir = d;
                true
            }
            _ => false,
        }
    })?;
    Some((slot as usize, dir))
}

/// A place for a connection in a slab, aligned to a cache line: a connection (168 bytes) then
/// spans exactly three lines, all of which an established packet touches and
/// [`Conntrack::track_batch`] prefetches. Unaligned, the 200-byte record it replaced spanned four
/// or five (`bench/README.md` has the counts).
#[repr(align(64))]
struct Slot(Option<Conn>);

impl std::ops::Deref for Slot {
    type Target = Option<Conn>;

    #[inline]
    fn deref(&self) -> &Option<Conn> {
        &self.0
    }
}

impl std::ops::DerefMut for Slot {
    #[inline]
    fn deref_mut(&mut self) -> &mut Option<Conn> {
        &mut self.0
    }
}

/// What the shard lock protects: the connections.
struct Slab {
    /// Fixed capacity, never reallocated, so slot addresses stay valid for prefetching.
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Where the sweeper and early drop continue.
    cursor: usize,
}

/// A shard, on cache lines of its own so workers locking neighbouring shards do not share one.
#[repr(align(128))]
struct Shard {
    slab: Mutex<Slab>,
    /// Each connection's slot by its symmetric hash; written under `slab`'s lock.
    index: Index,
    /// Connections this shard can hold (the slab's capacity).
    cap: usize,
    /// Address of slot 0, for prefetching without the lock.
    base: usize,
}

impl Shard {
    fn new(cap: usize) -> Shard {
        let slots = Vec::with_capacity(cap);
        let base = slots.as_ptr() as usize;
        Shard {
            slab: Mutex::new(Slab { slots, free: Vec::new(), cursor: 0 }),
            index: Index::with_capacity(cap),
            cap,
            base,
        }
    }

    /// The connection slot `slot`'s address, to prefetch.
    #[inline]
    fn slot_addr(&self, slot: u32) -> *const u8 {
        (self.base + slot as usize * std::mem::size_of::<Slot>()) as *const u8
    }
}

/// The connection table.
pub struct Conntrack {
    shards: Box<[Shard]>,
    /// Keyed with a per-process random seed, so tuples cannot be chosen to collide.
    hasher: TupleHasher,
    count: AtomicUsize,
    max: usize,
    pub cfg: Config,
    pub defaults: Defaults,
    /// Connection events for the control plane's subscribers.
    pub events: Events,
}

impl Conntrack {
    /// A table holding at most `max` connections. Index and slab space are reserved up front, as
    /// the kernel sizes its hash table: a shard holds 1.5 times its share, plus some slack.
    pub fn new(max: usize, cfg: Config) -> Conntrack {
        Conntrack::with_hasher(max, cfg, TupleHasher::random())
    }

    /// A table whose hash has a fixed, publicly known seed: anyone can compute where a tuple lands
    /// and choose tuples that collide. For tests and benchmarks that show why [`Conntrack::new`]
    /// keys the hash with a per-process random secret; never for traffic.
    pub fn with_fixed_hash(max: usize, cfg: Config) -> Conntrack {
        Conntrack::with_hasher(max, cfg, TupleHasher::fixed())
    }

    fn with_hasher(max: usize, cfg: Config, hasher: TupleHasher) -> Conntrack {
        let cap = max.div_ceil(SHARDS) * 3 / 2 + 64;
        Conntrack {
            shards: (0..SHARDS).map(|_| Shard::new(cap)).collect(),
            hasher,
            count: AtomicUsize::new(0),
            max,
            cfg,
            defaults: Defaults::default(),
            events: Events::default(),
        }
    }

    /// Where a connection with tuple `t` lands: (shard, home bucket of the shard's index). Two
    /// tuples with the same placement share a probe chain.
    pub fn placement(&self, t: &Tuple) -> (usize, usize) {
        let h = self.hash(t);
        (Self::shard_index(h), self.shard(h).index.home(h))
    }

    /// Number of confirmed connections (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the table holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maximum number of connections.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes reserved for the hash index (all shards).
    pub fn index_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.index.bytes()).sum()
    }

    #[inline]
    fn hash(&self, t: &Tuple) -> u64 {
        self.hasher.hash(t)
    }

    /// The shard of the connections with hash `h`.
    #[inline]
    fn shard_index(h: u64) -> usize {
        (h >> 56) as usize % SHARDS
    }

    #[inline]
    fn shard(&self, h: u64) -> &Shard {
        &self.shards[Self::shard_index(h)]
    }

    /// Classifies one packet (`pkt` parsed from `buf`), updating the connection it belongs to.
    /// A packet that starts a connection comes back with the new connection pending: call
    /// [`Conntrack::confirm`] once the packet is accepted.
    pub fn track(&self, now: Timestamp, buf: &[u8], pkt: &Packet, stats: &mut Stats) -> Tracked {
        let key = Tuple::of(pkt).map(|t| (t, self.hash(&t)));
        let mut pending = None;
        self.track_keyed(now, buf, pkt, &key, &mut pending, stats).tracked(pending)
    }

    /// Classifies a batch of packets exactly as [`Conntrack::track`] would one after the other,
    /// calling `decide(i, tracked)` for the packets in order. A packet that starts a connection
    /// is decided before the next packet is tracked, so the caller can run its rules and
    /// [`Conntrack::confirm`] it (a flow's second packet finds the connection its first one
    /// created, as in the kernel); packets in a row that find their connections in one shard are
    /// tracked under one taking of its lock and decided once it is released (nothing the caller
    /// decides about them changes how the next ones are classified). Before tracking, it
    /// prefetches the index buckets of the whole batch, then the connection slots they point to,
    /// so that the cache misses of all packets overlap instead of queueing behind each packet's
    /// lock (a locked instruction is a full fence on x86).
    pub fn track_batch(
        &self,
        now: Timestamp,
        pkts: &[(&[u8], Packet)],
        stats: &mut Stats,
        mut decide: impl FnMut(usize, Tracked, &mut Stats),
    ) {
        for (c, chunk) in pkts.chunks(BATCH).enumerate() {
            let mut keys: [Option<(Tuple, u64)>; BATCH] = [None; BATCH];
            // Each packet's shard, for the runs below; `ALONE` for one that cannot join a run:
            // no tuple, or ICMP (an error's RELATED lookup takes a lock of its own).
            let mut shard_of = [ALONE; BATCH];
            // Bit i: packet i has the tuple of packet i - 1 (a flow's burst, as rings deliver
            // them), so it has its hash, its lines are already asked for, and in a run it finds
            // the connection the packet before it found without looking again.
            let mut repeats = 0u32;
            for (i, (_, pkt)) in chunk.iter().enumerate() {
                let Some(t) = Tuple::of(pkt) else { continue };
                let prev = if i > 0 { keys[i - 1].as_ref() } else { None };
                // Ports first: they tell most flows apart (and all of one host pair's).
                if let Some(&(_, h)) = prev.filter(|(p, _)| (p.sport, p.dport) == (t.sport, t.dport) && *p == t) {
                    keys[i] = Some((t, h));
                    shard_of[i] = shard_of[i - 1];
                    repeats |= 1 << i;
                    continue;
                }
                let h = self.hash(&t);
                keys[i] = Some((t, h));
                sys::prefetch(self.shard(h).index.bucket_addr(h));
                if !matches!(Proto::of(pkt.proto), Proto::Icmp | Proto::Icmpv6) {
                    shard_of[i] = Self::shard_index(h) as u16;
                }
            }
            for (i, key) in keys.iter().enumerate() {
                let Some(&(_, h)) = key.as_ref().filter(|_| repeats >> i & 1 == 0) else { continue };
                let shard = self.shard(h);
                if let Some(slot) = shard.index.hint(h).filter(|&slot| (slot as usize) < shard.cap) {
                    let at = shard.slot_addr(slot);
                    for line in (0..std::mem::size_of::<Slot>()).step_by(64) {
                        sys::prefetch(at.wrapping_add(line));
                    }
                }
            }
            let base = c * BATCH;
            let mut done = [Class(0); BATCH];
            let mut k = 0;
            while k < chunk.len() {
                // Packets in a row whose connections live in one shard (a flow's burst, as rings
                // deliver them) are looked up under one taking of its lock: its locked
                // instruction is 11–14% of an established packet's time (perf, cpu-clock).
                let si = shard_of[k];
                if si == ALONE || shard_of.get(k + 1) != Some(&si) {
                    let (buf, pkt) = &chunk[k];
                    let mut pending = None;
                    let class = self.track_keyed(now, buf, pkt, &keys[k], &mut pending, stats);
                    decide(base + k, class.tracked(pending), stats);
                    k += 1;
                    continue;
                }
                let most = chunk.len().min(k + RUN);
                let end = shard_of[k..most].iter().position(|&s| s != si).map_or(most, |r| k + r);
                let (n, new) = self.track_run(now, &chunk[k..end], &keys[k..end], repeats >> k, &mut done, stats);
                for (i, class) in done[..n].iter().enumerate() {
                    decide(base + k + i, class.tracked(None), stats);
                }
                k += n;
                if let Some((p, tuple)) = new {
                    let (buf, pkt) = &chunk[k];
                    let t = self.prepare_new(now, buf, pkt, p, tuple, stats);
                    decide(base + k, t, stats);
                    k += 1;
                }
            }
        }
    }

    /// Tracks `run`, packets whose connections are all in one shard (`keys` their tuples and
    /// hashes; bit n of `repeats` set when packet n has the tuple of the one before it), under one
    /// taking of its lock, writing what each came to in `done`; stops at the first packet that
    /// finds no connection. Returns how many were tracked and, if it stopped early, the tracker
    /// and tuple of the packet that starts a connection (the next one, which the caller must hand
    /// to `decide` before the flow's next packet is looked up). Out of line: the packets tracked
    /// one by one keep [`Conntrack::track_batch`]'s loop to themselves.
    #[inline(never)]
    fn track_run(
        &self,
        now: Timestamp,
        run: &[(&[u8], Packet)],
        keys: &[Option<(Tuple, u64)>],
        repeats: u32,
        done: &mut [Class; BATCH],
        stats: &mut Stats,
    ) -> (usize, Option<(Proto, Tuple)>) {
        let (_, first) = keys[0].as_ref().expect("a packet joins a run only with a tuple");
        let shard = self.shard(*first);
        let mut guard = shard.slab.lock();
        // The slot (and direction) of the connection the packet before found and left in the
        // table: while the lock is held, the next packet with the same tuple belongs to it.
        let mut at = None;
        for (n, ((buf, pkt), key)) in run.iter().zip(keys).enumerate() {
            let (tuple, h) = key.as_ref().expect("a packet joins a run only with a tuple");
            if n == 0 || repeats >> n & 1 == 0 {
                at = None;
            }
            let p = Proto::of(pkt.proto);
            done[n] = match self.checks(p, pkt, buf, stats) {
                Err(class) => class,
                Ok(()) => match self.update(now, buf, pkt, p, tuple, *h, shard, &mut guard, &mut at, stats) {
                    Some(class) => class,
                    // No connection: this packet starts one.
                    None => return (n, Some((p, *tuple))),
                },
            };
        }
        (run.len(), None)
    }

    /// [`Conntrack::track`] with the tuple and its hash already computed (`None`: the packet has
    /// no tuple); a new connection goes to `pending`. Out of line: the one copy of the packet path
    /// for packets tracked one at a time.
    #[inline(never)]
    fn track_keyed(
        &self,
        now: Timestamp,
        buf: &[u8],
        pkt: &Packet,
        key: &Option<(Tuple, u64)>,
        pending: &mut Option<Box<Conn>>,
        stats: &mut Stats,
    ) -> Class {
        let p = Proto::of(pkt.proto);
        if let Err(class) = self.checks(p, pkt, buf, stats) {
            return class;
        }
        if matches!(p, Proto::Icmp | Proto::Icmpv6) {
            match l4::icmp::kind(pkt) {
                l4::icmp::Kind::Query => {}
                l4::icmp::Kind::Untracked => return Class::of(CtState::Untracked, Dir::Original),
                l4::icmp::Kind::Error(off) => return Class::split(self.related(now, buf, pkt, off, stats), pending),
            }
        }
        let Some((tuple, h)) = key else {
            stats.invalid(Invalid::NoTuple);
            return Class::invalid(Invalid::NoTuple);
        };
        let shard = self.shard(*h);
        if let Some(class) = self.update(now, buf, pkt, p, tuple, *h, shard, &mut shard.slab.lock(), &mut None, stats) {
            return class;
        }
        Class::split(self.prepare_new(now, buf, pkt, p, *tuple, stats), pending)
    }

    /// The tracker's checks before the lookup (`l4::error`); a packet that fails them is invalid,
    /// counted under its reason.
    #[inline(always)]
    fn checks(&self, p: Proto, pkt: &Packet, buf: &[u8], stats: &mut Stats) -> Result<(), Class> {
        l4::error(p, pkt, buf, &self.cfg).map_err(|r| {
            stats.invalid(r);
            Class::invalid(r)
        })
    }

    /// Finds the connection of the packet (tuple `tuple`, hash `h`, in `shard`, whose slab the
    /// caller has locked) and lets its tracker update it; `None` when there is none (or only an
    /// expired one, now removed). `at`: the connection's slot and the packet's direction when the
    /// caller knows them (else they are looked up); on return, the same if the connection is still
    /// in the table. Shared by the packets tracked alone and in runs; removal and events are out
    /// of line, so that an established packet's path keeps its values in registers.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn update(
        &self,
        now: Timestamp,
        buf: &[u8],
        pkt: &Packet,
        p: Proto,
        tuple: &Tuple,
        h: u64,
        shard: &Shard,
        slab: &mut Slab,
        at: &mut Option<(usize, Dir)>,
        stats: &mut Stats,
    ) -> Option<Class> {
        // A Repeat (a TCP SYN re-opening a closing connection) removes the entry and looks again.
        for _ in 0..2 {
            let (slot, dir) = match at.take() {
                Some(found) => found,
                None => lookup(shard, slab, h, tuple, |_| true)?,
            };
            let c = slab.slots[slot].as_mut().expect("indexed slot is live");
            if c.expires <= now {
                self.remove(shard, slab, h, slot);
                stats.expired += 1;
                return None;
            }
            let state = if dir == Dir::Reply || c.status.contains(Status::SEEN_REPLY) {
                CtState::Established
            } else {
                CtState::New
            };
            // What an UPDATE event compares, when someone listens.
            let before = self.events.wants(EventKind::Update).then(|| (c.status, c.proto.state_code()));
            let verdict = {
                let values = match &c.policy {
                    Some(pol) if !pol.is_deleted() => &pol.values,
                    _ => self.defaults.of(p),
                };
                let mut ctx = l4::Ctx {
                    dir,
                    now,
                    start: c.start,
                    status: &mut c.status,
                    expires: &mut c.expires,
                    timeouts: values,
                    cfg: &self.cfg,
                };
                l4::packet(p, &mut c.proto, &mut ctx, pkt, buf)
            };
            // As nf_ct_refresh_acct: a refresh also counts the packet; an ignored one (Keep) is
            // neither counted nor refreshes; a FIXED_TIMEOUT connection is never refreshed.
            match verdict {
                Verdict::Refresh(secs) => {
                    if !c.status.contains(Status::FIXED_TIMEOUT) {
                        c.expires = now.plus_secs(secs);
                    }
                    c.account(dir, pkt.ip_len());
                }
                Verdict::Keep => {}
                Verdict::Invalid(r) => {
                    stats.invalid(r);
                    *at = Some((slot, dir));
                    return Some(Class::invalid(r));
                }
                Verdict::Kill => {
                    self.remove(shard, slab, h, slot);
                    return Some(Class::of(state, dir));
                }
                Verdict::Repeat => {
                    self.remove(shard, slab, h, slot);
                    stats.search_restart += 1;
                    continue;
                }
            }
            if dir == Dir::Reply {
                c.status.insert(Status::SEEN_REPLY);
            }
            if let Some((status, state)) = before {
                self.update_event(c, status, state);
            }
            *at = Some((slot, dir));
            return Some(Class::of(state, dir));
        }
        None
    }

    /// Queues an UPDATE event for `c` if its status or tracker state changed from `status` and
    /// `state`.
    #[cold]
    #[inline(never)]
    fn update_event(&self, c: &Conn, status: Status, state: u8) {
        let state_changed = state != c.proto.state_code();
        if state_changed || status != c.status {
            self.events.push_with(EventKind::Update, Box::new(c.clone()), state_changed);
        }
    }

    /// Builds the unconfirmed connection for a packet that found none.
    fn prepare_new(
        &self,
        now: Timestamp,
        buf: &[u8],
        pkt: &Packet,
        p: Proto,
        tuple: Tuple,
        stats: &mut Stats,
    ) -> Tracked {
        let state = match l4::new(p, pkt, buf, &self.cfg) {
            Ok(s) => s,
            Err(r) => {
                stats.invalid(r);
                return Tracked::invalid(r);
            }
        };
        if tuple.invert().is_none() {
            stats.invalid(Invalid::NoTuple);
            return Tracked::invalid(Invalid::NoTuple);
        }
        let mut c = Conn {
            orig: tuple,
            status: Status::default(),
            mark: 0,
            start: now,
            expires: now,
            packets: [0; 2],
            bytes: [0; 2],
            proto: state,
            policy: None,
        };
        let verdict = {
            let mut ctx = l4::Ctx {
                dir: Dir::Original,
                now,
                start: now,
                status: &mut c.status,
                expires: &mut c.expires,
                timeouts: self.defaults.of(p),
                cfg: &self.cfg,
            };
            l4::packet(p, &mut c.proto, &mut ctx, pkt, buf)
        };
        match verdict {
            Verdict::Refresh(secs) => {
                c.expires = now.plus_secs(secs);
                c.account(Dir::Original, pkt.ip_len());
            }
            Verdict::Keep => {}
            Verdict::Invalid(_) | Verdict::Kill | Verdict::Repeat => {
                // Kill and Repeat need a connection in the table; for a first packet they mean
                // the packet cannot start one.
                let r = if let Verdict::Invalid(r) = verdict { r } else { Invalid::TcpState };
                stats.invalid(r);
                return Tracked::invalid(r);
            }
        }
        Tracked { state: CtState::New, dir: Dir::Original, invalid: None, pending: Some(Box::new(c)) }
    }

    /// Classifies an ICMP error by the connection of the packet it quotes (`nf_conntrack_inet_error`).
    fn related(&self, now: Timestamp, buf: &[u8], pkt: &Packet, quoted: usize, stats: &mut Stats) -> Tracked {
        let inner = match parse_quoted(&buf[..pkt.end], quoted) {
            Ok(inner) if inner.family == pkt.family => inner,
            _ => {
                stats.invalid(Invalid::IcmpError);
                return Tracked::invalid(Invalid::IcmpError);
            }
        };
        // The quoted packet went the other way: its inverse is what this error travels along.
        let Some(t) = Tuple::of(&inner).and_then(|t| t.invert()) else {
            stats.invalid(Invalid::IcmpError);
            return Tracked::invalid(Invalid::IcmpError);
        };
        let h = self.hash(&t);
        let shard = self.shard(h);
        let slab = shard.slab.lock();
        if let Some((slot, dir)) = lookup(shard, &slab, h, &t, |c| c.expires > now) {
            let c = slab.slots[slot].as_ref().expect("indexed slot is live");
            // The error must be addressed to where the connection's packets in that direction go.
            if c.tuple(dir).dst == pkt.dst {
                return Tracked::of(CtState::Related, dir);
            }
        }
        stats.invalid(Invalid::IcmpError);
        Tracked::invalid(Invalid::IcmpError)
    }

    /// Inserts the connection a packet created, once that packet is accepted.
    #[inline]
    pub fn confirm(&self, tracked: &mut Tracked, stats: &mut Stats) -> Result<(), Refused> {
        // Inline, the common case (nothing pending: every packet of an unreplied flow is NEW)
        // costs the caller a test, not a call.
        match tracked.pending.take() {
            None => Ok(()),
            Some(c) => self.confirm_pending(c, stats),
        }
    }

    /// [`Conntrack::confirm`] for a packet that created connection `c`.
    #[inline(never)]
    fn confirm_pending(&self, mut c: Box<Conn>, stats: &mut Stats) -> Result<(), Refused> {
        let h = self.hash(&c.orig);
        let shard = self.shard(h);
        let mut guard = shard.slab.lock();
        let slab = &mut *guard;
        let now = c.start;
        // Another worker may have confirmed the same flow meanwhile: keep theirs (clash resolution).
        if Self::clashes(shard, slab, h, &c, now) {
            stats.clash_resolve += 1;
            return Ok(());
        }
        match self.make_room(shard, slab, h, now) {
            Room::Made { dropped } => stats.early_drop += dropped,
            Room::Full { dropped } => {
                stats.early_drop += dropped;
                stats.drop += 1;
                stats.insert_failed += 1;
                return Err(Refused::TableFull);
            }
        }
        c.status.insert(Status::CONFIRMED);
        self.insert_locked(shard, slab, h, *c);
        stats.insert += 1;
        Ok(())
    }

    /// Takes a place in the table for one more connection in the shard of hash `h` (its lock
    /// held), dropping unassured ones while the table or the shard is full. The count is raised
    /// only from below the maximum, atomically, so that two workers confirming at once cannot both
    /// take the last place, and it never reads above the maximum.
    fn make_room(&self, shard: &Shard, slab: &mut Slab, h: u64, now: Timestamp) -> Room {
        let mut budget = EARLY_DROP_SCAN;
        let mut dropped = 0;
        loop {
            let shard_full = slab.free.is_empty() && slab.slots.len() == shard.cap;
            if !shard_full && self.reserve() {
                return Room::Made { dropped };
            }
            // Each attempt examines entries off `budget`, so this ends.
            let freed = self.early_drop(shard, slab, now, &mut budget)
                || (!shard_full && self.early_drop_elsewhere(h, now, &mut budget));
            if !freed {
                return Room::Full { dropped };
            }
            // Another worker may take the place before us: then we drop again.
            dropped += 1;
        }
    }

    /// Raises the count by one if it is below the maximum.
    fn reserve(&self) -> bool {
        self.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).is_ok()
    }

    /// Whether a live connection with one of `c`'s tuples is in the shard of hash `h`.
    fn clashes(shard: &Shard, slab: &Slab, h: u64, c: &Conn, now: Timestamp) -> bool {
        lookup(shard, slab, h, &c.orig, |o| o.expires > now).is_some()
    }

    /// Puts `c` (hashing to `h`) into a free slot of its shard and indexes it (one entry for both
    /// its tuples). Caller holds the lock and has taken the place ([`Conntrack::make_room`]).
    fn insert_locked(&self, shard: &Shard, slab: &mut Slab, h: u64, c: Conn) {
        if self.events.wants(EventKind::New) {
            self.events.push(EventKind::New, Box::new(c.clone()));
        }
        let slot = match slab.free.pop() {
            Some(s) => {
                slab.slots[s as usize] = Slot(Some(c));
                s
            }
            None => {
                debug_assert!(slab.slots.len() < shard.cap, "slab never grows past its capacity");
                slab.slots.push(Slot(Some(c)));
                (slab.slots.len() - 1) as u32
            }
        };
        // The index holds an entry per slot of capacity, so this cannot fail.
        let inserted = shard.index.insert(h, slot);
        debug_assert!(inserted, "index sized for the slab");
    }

    /// Inserts a connection carried over from a snapshot, as it was (no early drop); `false`
    /// when the table is full or already holds one of its tuples.
    fn insert_restored(&self, c: Conn, now: Timestamp) -> bool {
        let h = self.hash(&c.orig);
        let shard = self.shard(h);
        let mut guard = shard.slab.lock();
        let slab = &mut *guard;
        let shard_full = slab.free.is_empty() && slab.slots.len() == shard.cap;
        if shard_full || Self::clashes(shard, slab, h, &c, now) {
            return false;
        }
        if !self.reserve() {
            return false;
        }
        self.insert_locked(shard, slab, h, c);
        true
    }

    /// Drops one unassured connection of this shard (expired ones first): the kernel's early
    /// drop. Examines at most `budget` entries and takes what it examined off `budget`.
    fn early_drop(&self, shard: &Shard, slab: &mut Slab, now: Timestamp, budget: &mut usize) -> bool {
        let n = slab.slots.len();
        let scan = n.min(*budget);
        if scan == 0 {
            return false;
        }
        // The first expired or unassured entry, as the kernel's `early_drop_list` takes the
        // first unassured one it meets (reaping expired ones on the way). What was examined
        // comes off the budget.
        let victim = (0..scan).find(|&k| {
            slab.slots[(slab.cursor + k) % n]
                .as_ref()
                .is_some_and(|c| c.expires <= now || !c.status.contains(Status::ASSURED))
        });
        let Some(k) = victim else {
            *budget -= scan;
            slab.cursor = (slab.cursor + scan) % n;
            return false;
        };
        *budget -= k + 1;
        let s = (slab.cursor + k) % n;
        slab.cursor = (s + 1) % n;
        let h = self.hash(&slab.slots[s].as_ref().expect("victim is live").orig);
        self.remove(shard, slab, h, s);
        true
    }

    /// Early drop in the shards after the one of hash `h`, skipping any that is locked (so lock
    /// order does not matter), until `budget` entries have been examined: a sparse table may have
    /// nothing to drop in one shard, and a full table of assured entries must fail fast.
    fn early_drop_elsewhere(&self, h: u64, now: Timestamp, budget: &mut usize) -> bool {
        let own = Self::shard_index(h);
        for k in 1..SHARDS {
            if *budget == 0 {
                break;
            }
            let shard = &self.shards[(own + k) % SHARDS];
            let Some(mut guard) = shard.slab.try_lock() else { continue };
            if self.early_drop(shard, &mut guard, now, budget) {
                return true;
            }
        }
        false
    }

    /// Removes the connection in `slot` (hashing to `h`) from its shard. Caller holds the lock.
    /// Out of line: the packet path calls it only for an expired or killed connection.
    #[inline(never)]
    fn remove(&self, shard: &Shard, slab: &mut Slab, h: u64, slot: usize) {
        shard.index.remove(h, slot as u32);
        let gone = slab.slots[slot].take();
        if let Some(c) = gone.filter(|_| self.events.wants(EventKind::Destroy)) {
            self.events.push(EventKind::Destroy, Box::new(c));
        }
        slab.free.push(slot as u32);
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes up to `budget` expired connections, continuing where the last call stopped;
    /// returns how many were removed. Call it regularly (the daemon does, per worker tick).
    pub fn sweep(&self, now: Timestamp, budget: usize, stats: &mut Stats) -> usize {
        let mut removed = 0;
        let per_shard = budget.div_ceil(SHARDS).max(1);
        for shard in self.shards.iter() {
            let mut guard = shard.slab.lock();
            let slab = &mut *guard;
            let n = slab.slots.len();
            for _ in 0..per_shard.min(n) {
                slab.cursor = (slab.cursor + 1) % n;
                let s = slab.cursor;
                let Some(c) = slab.slots[s].as_ref() else { continue };
                if c.expires <= now {
                    let h = self.hash(&c.orig);
                    self.remove(shard, slab, h, s);
                    removed += 1;
                }
            }
        }
        stats.expired += removed as u64;
        removed
    }

    /// Calls `f` with every live connection (expired ones not yet swept are skipped).
    pub fn for_each(&self, now: Timestamp, mut f: impl FnMut(&Conn)) {
        for shard in self.shards.iter() {
            let slab = shard.slab.lock();
            for c in slab.slots.iter().filter_map(|s| s.as_ref()) {
                if c.expires > now {
                    f(c);
                }
            }
        }
    }

    /// Removes every connection.
    pub fn flush(&self) {
        for shard in self.shards.iter() {
            let mut slab = shard.slab.lock();
            let live = slab.slots.iter().filter_map(|s| s.as_ref()).count();
            if self.events.wants(EventKind::Destroy) {
                for c in slab.slots.drain(..).filter_map(|s| s.0) {
                    self.events.push(EventKind::Destroy, Box::new(c));
                }
            }
            // Clear in place: the slab keeps its allocation, so slot addresses stay valid.
            slab.slots.clear();
            slab.free.clear();
            slab.cursor = 0;
            shard.index.clear();
            self.count.fetch_sub(live, Ordering::Relaxed);
        }
    }

    /// Detaches `policy` from every connection using it: they fall back to the defaults
    /// (`nf_ct_untimeout`).
    pub fn untimeout(&self, policy: &Arc<Policy>) {
        for shard in self.shards.iter() {
            let mut slab = shard.slab.lock();
            for c in slab.slots.iter_mut().filter_map(|s| s.as_mut()) {
                if c.policy.as_ref().is_some_and(|p| Arc::ptr_eq(p, policy)) {
                    c.policy = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
