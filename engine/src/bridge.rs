//! Bridge mode's forwarding database: which port each source MAC was last seen on, as Linux's
//! bridge `fdb` learns it, and the forwarding decision taken from it for a destination MAC.
//!
//! Sans-IO like the rest of the engine: time is an argument, and the table is shared by all
//! workers through `&self`.
//!
//! * **Learning** ([`MacTable::learn`]): a frame's source MAC (a valid unicast address, see
//!   [`is_valid_source`]) is recorded against its ingress port. A MAC heard on another port than
//!   its entry says has moved: the entry follows it at once (Linux's `br_fdb_update`). The entry's
//!   last-seen time is refreshed at most once per [`REFRESH_NS`], so that busy flows do not write a
//!   shared cache line on every frame.
//! * **Ageing**: an entry not refreshed for the ageing time (Linux's default `ageing_time`,
//!   300 s, [`DEFAULT_AGEING_SECS`]) is expired: lookups ignore it at once and [`MacTable::age`]
//!   removes it (a full sweep at most once per second, whoever calls it).
//! * **Deciding** ([`MacTable::egress`]): link-local group addresses `01:80:c2:00:00:0X` (STP,
//!   LACP, 802.1X, LLDP) are never forwarded; broadcast, multicast and unknown unicast are flooded
//!   to every other port; known unicast goes to its port, and is filtered (dropped) when that port
//!   is the one it came in on.
//!
//! The table is 16 shards, each a `parking_lot::RwLock<HashMap>` (foldhash) allocated once for its
//! share of [`FdbConfig::max_entries`] (twice over, so that churn rehashes in place instead of
//! growing): the per-frame path (lookup, refresh, move) takes only read locks and allocates
//! nothing; only a new MAC takes a shard's write lock. When a shard is full, new MACs are not
//! learned (their frames are flooded) until ageing makes room: a flood of random source MACs
//! cannot grow memory.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::clock::Timestamp;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Linux's default bridge `ageing_time`, in seconds.
pub const DEFAULT_AGEING_SECS: u32 = 300;
/// Default capacity of the table.
pub const DEFAULT_MAX_ENTRIES: usize = 16_384;
/// How stale an entry's last-seen time may get before a frame from it writes it again.
pub const REFRESH_NS: u64 = 1_000_000_000;
/// The least time between two sweeps of [`MacTable::age`].
const SWEEP_EVERY_NS: u64 = 1_000_000_000;
const SHARDS: usize = 16;

/// Whether `mac` is in `01:80:c2:00:00:00`–`0f`, the IEEE 802.1 link-local group addresses a
/// bridge must not forward (Linux's `is_link_local_ether_addr`).
#[inline]
pub fn is_link_local(mac: &Mac) -> bool {
    mac[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && mac[5] & 0xf0 == 0
}

/// Whether `mac` may be a frame's source: not multicast (nor broadcast) and not all zeros
/// (Linux's `is_valid_ether_addr`; the bridge drops frames whose source fails it).
#[inline]
pub fn is_valid_source(mac: &Mac) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

/// Whether `mac` is a group (multicast or broadcast) address.
#[inline]
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// The table's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Seconds an entry lives without being refreshed.
    pub ageing_secs: u32,
    /// The most entries the table holds (about: the limit is per shard).
    pub max_entries: usize,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig { ageing_secs: DEFAULT_AGEING_SECS, max_entries: DEFAULT_MAX_ENTRIES }
    }
}

/// What [`MacTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// A new entry (or an expired one brought back).
    New,
    /// Already known on this port.
    Known,
    /// Known on port `from` until now: moved to the new port.
    Moved { from: u16 },
    /// Not learned: the shard is full.
    Full,
    /// Not learned: not a valid unicast source address.
    Invalid,
}

/// Where a frame goes, by its destination MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Out of this port only.
    Port(u16),
    /// Out of every port but the ingress one (broadcast, multicast, unknown unicast).
    Flood,
    /// Nowhere: the destination lives behind the port the frame came in on.
    Filtered,
    /// Nowhere: an IEEE 802.1 link-local group address, for the bridge itself.
    LinkLocal,
}

#[derive(Debug)]
struct Entry {
    port: AtomicU16,
    /// Last time a frame from this MAC was seen (nanoseconds, [`Timestamp`]).
    seen: AtomicU64,
}

type Shard = RwLock<HashMap<Mac, Entry, foldhash::fast::RandomState>>;

/// The forwarding database, shared by all workers.
#[derive(Debug)]
pub struct MacTable {
    ageing_ns: u64,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
    count: AtomicUsize,
    /// When [`MacTable::age`] sweeps next.
    next_sweep: AtomicU64,
}

impl MacTable {
    /// An empty table with all its memory allocated.
    pub fn new(cfg: FdbConfig) -> MacTable {
        let per_shard = cfg.max_entries.div_ceil(SHARDS).max(1);
        let hasher = foldhash::fast::RandomState::default();
        MacTable {
            ageing_ns: u64::from(cfg.ageing_secs) * 1_000_000_000,
            per_shard,
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_capacity_and_hasher(2 * per_shard, hasher)))
                .collect(),
            hasher,
            count: AtomicUsize::new(0),
            next_sweep: AtomicU64::new(0),
        }
    }

    #[inline]
    fn shard(&self, mac: &Mac) -> &Shard {
        &self.shards[(self.hasher.hash_one(mac) as usize) % SHARDS]
    }

    #[inline]
    fn expired(&self, now: Timestamp, e: &Entry) -> bool {
        now.since(Timestamp(e.seen.load(Ordering::Relaxed))) >= self.ageing_ns
    }

    /// Entries in the table (expired ones included until a sweep removes them).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records that `mac` was heard on `port` at `now`.
    #[inline]
    pub fn learn(&self, now: Timestamp, mac: Mac, port: u16) -> Learn {
        if !is_valid_source(&mac) {
            return Learn::Invalid;
        }
        let shard = self.shard(&mac);
        if let Some(e) = shard.read().get(&mac) {
            return self.update(now, e, port);
        }
        let mut g = shard.write();
        if let Some(e) = g.get(&mac) {
            // Learned by another worker since the read.
            return self.update(now, e, port);
        }
        if g.len() >= self.per_shard {
            return Learn::Full;
        }
        g.insert(mac, Entry { port: AtomicU16::new(port), seen: AtomicU64::new(now.0) });
        self.count.fetch_add(1, Ordering::Relaxed);
        Learn::New
    }

    /// An existing entry heard from again (under either lock: its fields are atomics).
    #[inline]
    fn update(&self, now: Timestamp, e: &Entry, port: u16) -> Learn {
        let expired = self.expired(now, e);
        let old = e.port.swap(port, Ordering::Relaxed);
        let seen = e.seen.load(Ordering::Relaxed);
        if old != port || expired || now.0.saturating_sub(seen) >= REFRESH_NS {
            e.seen.store(now.0, Ordering::Relaxed);
        }
        match () {
            _ if expired => Learn::New,
            _ if old != port => Learn::Moved { from: old },
            _ => Learn::Known,
        }
    }

    /// The port `mac` lives behind, if it is known and not expired.
    #[inline]
    pub fn lookup(&self, now: Timestamp, mac: &Mac) -> Option<u16> {
        let g = self.shard(mac).read();
        let e = g.get(mac)?;
        (!self.expired(now, e)).then(|| e.port.load(Ordering::Relaxed))
    }

    /// Where a frame for `dst` that came in on port `ingress` goes.
    #[inline]
    pub fn egress(&self, now: Timestamp, ingress: u16, dst: &Mac) -> Egress {
        if is_link_local(dst) {
            return Egress::LinkLocal;
        }
        if is_group(dst) {
            return Egress::Flood;
        }
        match self.lookup(now, dst) {
            Some(p) if p == ingress => Egress::Filtered,
            Some(p) => Egress::Port(p),
            None => Egress::Flood,
        }
    }

    /// Removes expired entries, if the last sweep was at least a second ago; returns how many.
    /// Every worker may call this at every tick: one of them sweeps.
    pub fn age(&self, now: Timestamp) -> usize {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now.0 < due
            || self
                .next_sweep
                .compare_exchange(due, now.0 + SWEEP_EVERY_NS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        self.sweep(now)
    }

    /// Removes every expired entry now; returns how many.
    pub fn sweep(&self, now: Timestamp) -> usize {
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut g = s.write();
            let before = g.len();
            g.retain(|_, e| !self.expired(now, e));
            removed += before - g.len();
        }
        self.count.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Forgets every entry on `port` (a port that went away); returns how many.
    pub fn flush_port(&self, port: u16) -> usize {
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut g = s.write();
            let before = g.len();
            g.retain(|_, e| e.port.load(Ordering::Relaxed) != port);
            removed += before - g.len();
        }
        self.count.fetch_sub(removed, Ordering::Relaxed);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];
    const BCAST: Mac = [0xff; 6];
    const T0: Timestamp = Timestamp::from_secs(10);

    fn table() -> MacTable {
        MacTable::new(FdbConfig::default())
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(10 + secs)
    }

    #[test]
    fn learns_sources_and_forwards_known_unicast() {
        let t = table();
        assert_eq!(t.egress(T0, 0, &B), Egress::Flood, "unknown unicast floods");
        assert_eq!(t.learn(T0, A, 0), Learn::New);
        assert_eq!(t.learn(T0, B, 1), Learn::New);
        assert_eq!(t.learn(T0, A, 0), Learn::Known);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(T0, &A), Some(0));
        assert_eq!(t.egress(T0, 0, &B), Egress::Port(1));
        assert_eq!(t.egress(T0, 1, &A), Egress::Port(0));
        // Never back out of the ingress port.
        assert_eq!(t.egress(T0, 0, &A), Egress::Filtered);
    }

    #[test]
    fn group_and_link_local_destinations() {
        let t = table();
        t.learn(T0, A, 0);
        assert_eq!(t.egress(T0, 0, &BCAST), Egress::Flood);
        assert_eq!(t.egress(T0, 1, &[0x33, 0x33, 0xff, 0, 0, 1]), Egress::Flood, "IPv6 multicast");
        assert_eq!(t.egress(T0, 1, &[0x01, 0x00, 0x5e, 0, 0, 1]), Egress::Flood, "IPv4 multicast");
        for last in [0x00, 0x02, 0x03, 0x0e, 0x0f] {
            assert_eq!(t.egress(T0, 1, &[0x01, 0x80, 0xc2, 0, 0, last]), Egress::LinkLocal);
        }
        assert_eq!(t.egress(T0, 1, &[0x01, 0x80, 0xc2, 0, 0, 0x10]), Egress::Flood, "not link-local");
        // Group and zero sources are not learned.
        assert_eq!(t.learn(T0, BCAST, 1), Learn::Invalid);
        assert_eq!(t.learn(T0, [0x01, 0, 0x5e, 0, 0, 1], 1), Learn::Invalid);
        assert_eq!(t.learn(T0, [0; 6], 1), Learn::Invalid);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_mac_moving_ports_is_followed() {
        let t = table();
        t.learn(T0, A, 0);
        assert_eq!(t.learn(at(1), A, 2), Learn::Moved { from: 0 });
        assert_eq!(t.lookup(at(1), &A), Some(2));
        assert_eq!(t.egress(at(1), 1, &A), Egress::Port(2));
        assert_eq!(t.egress(at(1), 2, &A), Egress::Filtered);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn entries_age_out_unless_refreshed() {
        let t = table();
        t.learn(T0, A, 0);
        t.learn(T0, B, 1);
        // Just before the ageing time: still there. Refresh A.
        assert_eq!(t.lookup(at(299), &A), Some(0));
        assert_eq!(t.learn(at(299), A, 0), Learn::Known);
        // At 300 s, B (last seen at 0) is expired: unknown again, flooded; A is not.
        assert_eq!(t.lookup(at(300), &B), None);
        assert_eq!(t.egress(at(300), 0, &B), Egress::Flood);
        assert_eq!(t.lookup(at(300), &A), Some(0));
        assert_eq!(t.sweep(at(300)), 1);
        assert_eq!(t.len(), 1);
        // A ages out 300 s after its refresh.
        assert_eq!(t.lookup(at(598), &A), Some(0));
        assert_eq!(t.lookup(at(599), &A), None);
        // An expired entry heard from again is new, on its new port.
        assert_eq!(t.learn(at(600), A, 3), Learn::New);
        assert_eq!(t.lookup(at(600), &A), Some(3));
    }

    #[test]
    fn refreshes_are_coarse_but_moves_are_not() {
        let t = MacTable::new(FdbConfig { ageing_secs: 10, max_entries: 64 });
        t.learn(Timestamp::from_millis(0), A, 0);
        // Seen again within REFRESH_NS: the timestamp is not rewritten ...
        t.learn(Timestamp::from_millis(500), A, 0);
        assert_eq!(t.lookup(Timestamp::from_millis(9_999), &A), Some(0));
        assert_eq!(t.lookup(Timestamp::from_millis(10_000), &A), None);
        // ... but after it, it is.
        t.learn(Timestamp::from_millis(11_000), A, 0);
        t.learn(Timestamp::from_millis(12_000), A, 0);
        assert_eq!(t.lookup(Timestamp::from_millis(21_999), &A), Some(0));
        // A move is recorded at once, with its time.
        t.learn(Timestamp::from_millis(12_100), A, 1);
        assert_eq!(t.lookup(Timestamp::from_millis(22_099), &A), Some(1));
    }

    #[test]
    fn age_sweeps_at_most_once_a_second() {
        let t = MacTable::new(FdbConfig { ageing_secs: 1, max_entries: 64 });
        t.learn(T0, A, 0);
        assert_eq!(t.age(T0), 0, "nothing expired yet");
        t.learn(T0, B, 0);
        assert_eq!(t.age(at(5)), 2);
        t.learn(at(5), A, 0);
        assert_eq!(t.age(Timestamp(at(6).0 + 1)), 1);
        t.learn(at(6), A, 0);
        assert_eq!(t.age(Timestamp(at(6).0 + 900_000_000)), 0, "swept less than a second ago");
        assert_eq!(t.len(), 1);
        assert_eq!(t.age(at(8)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_stops_learning_and_floods() {
        let t = MacTable::new(FdbConfig { ageing_secs: 300, max_entries: SHARDS });
        let mut full = 0;
        for i in 0..200u8 {
            if t.learn(T0, [0x02, 0, 0, 0, 1, i], 1) == Learn::Full {
                full += 1;
            }
        }
        assert_eq!(t.len(), SHARDS);
        assert_eq!(full, 200 - SHARDS);
        // Unlearned MACs are flooded to; ageing makes room again.
        assert_eq!(t.sweep(at(300)), SHARDS);
        assert_eq!(t.learn(at(300), A, 0), Learn::New);
    }

    #[test]
    fn flush_port_forgets_its_macs() {
        let t = table();
        t.learn(T0, A, 0);
        t.learn(T0, B, 1);
        assert_eq!(t.flush_port(1), 1);
        assert_eq!(t.lookup(T0, &B), None);
        assert_eq!(t.lookup(T0, &A), Some(0));
    }

    #[test]
    fn the_per_frame_path_does_not_grow_the_shards() {
        let t = MacTable::new(FdbConfig { ageing_secs: 1, max_entries: 256 });
        let caps: Vec<usize> = t.shards.iter().map(|s| s.read().capacity()).collect();
        // Churn: fill, age out, refill with other MACs, many times over.
        for round in 0..50u64 {
            for i in 0..=255u8 {
                t.learn(Timestamp::from_secs(round * 2), [0x02, round as u8, 0, 0, 0, i], 0);
            }
            t.sweep(Timestamp::from_secs(round * 2 + 1));
        }
        let after: Vec<usize> = t.shards.iter().map(|s| s.read().capacity()).collect();
        assert_eq!(caps, after);
    }
}
