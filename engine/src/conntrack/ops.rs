//! Table operations for the control plane (ctnetlink): find a connection by either of its tuples,
//! insert one built by a request, remove by tuple or by predicate, and walk the table from a
//! resumable [`Cursor`] — the kernel's `cb->args` of a dump.
//!
//! None of these holds a shard lock for more than [`LOCK_SPAN`] slots: a walk of a million
//! connections takes and releases each shard's lock many times, so a worker waiting for that lock
//! waits for at most a few microseconds, as it would behind another worker.

use super::{Conn, Conntrack, Room, Shard, Slab, Status, Tuple, SHARDS};
use crate::clock::Timestamp;

/// Slots examined, at most, per acquisition of a shard's lock.
pub const LOCK_SPAN: usize = 64;

/// A status bit outside the kernel's range, set on connections created over ctnetlink: the kernel
/// gives those extensions (synproxy) that connections created by packets lack, and ctnetlink
/// reports them. Never reported as a status bit.
pub const VIA_NETLINK: Status = Status(1 << 31);

/// Where a walk of the table continues: a shard and a slot in it. The default is the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    shard: usize,
    slot: usize,
}

impl Cursor {
    /// Whether the walk has passed the last shard.
    pub fn at_end(&self) -> bool {
        self.shard >= SHARDS
    }
}

/// Why [`Conntrack::insert_new`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// A live connection already has one of its tuples.
    Exists,
    /// The table is full and nothing could be dropped to make room.
    Full,
}

/// The slot of the live connection in `shard` with tuple `t` (hashing to `h`). Caller holds the
/// shard's lock.
fn live_slot(shard: &Shard, slab: &Slab, h: u64, t: &Tuple, now: Timestamp) -> Option<usize> {
    super::lookup(shard, slab, h, t, |c| c.expires > now).map(|(slot, _)| slot)
}

impl Conntrack {
    /// The connection's id, as ctnetlink reports it in `CTA_ID`: a keyed hash of its original
    /// tuple and its creation time, stable for the connection's life and unguessable from outside.
    pub fn conn_id(&self, c: &Conn) -> u32 {
        let h = self.hasher.hash_with(&c.orig, c.start.0);
        (h ^ (h >> 32)) as u32
    }

    /// Runs `f` on the live connection that has `t` as one of its tuples, under its shard's lock;
    /// `None` when there is none (an expired one counts as none).
    pub fn with_conn<R>(&self, now: Timestamp, t: &Tuple, f: impl FnOnce(&mut Conn) -> R) -> Option<R> {
        let h = self.hash(t);
        let shard = self.shard(h);
        let mut guard = shard.slab.lock();
        let slab = &mut *guard;
        let slot = live_slot(shard, slab, h, t, now)?;
        slab.slots[slot].as_mut().map(f)
    }

    /// Removes the live connection that has `t` as one of its tuples if `remove_if` says so.
    /// `None`: no such connection; `Some(removed)` otherwise.
    pub fn remove_by_tuple(&self, now: Timestamp, t: &Tuple, remove_if: impl FnOnce(&Conn) -> bool) -> Option<bool> {
        let h = self.hash(t);
        let shard = self.shard(h);
        let mut guard = shard.slab.lock();
        let slab = &mut *guard;
        let slot = live_slot(shard, slab, h, t, now)?;
        let c = slab.slots[slot].as_ref()?;
        if !remove_if(c) {
            return Some(false);
        }
        // `t` may be the reply tuple: the hash is symmetric, so `h` is the connection's either way.
        self.remove(shard, slab, h, slot);
        Some(true)
    }

    /// Inserts a connection built by the control plane (ctnetlink's create), confirmed. Its
    /// original tuple must have an inverse, its reply tuple ([`Conn::reply`]): ctnetlink refuses a
    /// reply tuple that is not that inverse before it gets here. A full table first drops an
    /// unassured connection, as for a packet's new connection.
    pub fn insert_new(&self, now: Timestamp, mut c: Conn) -> Result<(), InsertError> {
        debug_assert!(c.orig.invert().is_some(), "a connection needs a reply tuple");
        let h = self.hash(&c.orig);
        let shard = self.shard(h);
        let mut guard = shard.slab.lock();
        let slab = &mut *guard;
        if Self::clashes(shard, slab, h, &c, now) {
            return Err(InsertError::Exists);
        }
        if matches!(self.make_room(shard, slab, h, now), Room::Full { .. }) {
            return Err(InsertError::Full);
        }
        c.status.insert(Status::CONFIRMED);
        self.insert_locked(shard, slab, h, c);
        Ok(())
    }

    /// Visits the live connections from `cursor` on, in table order, calling `f` on each under its
    /// shard's lock (at most [`LOCK_SPAN`] slots per acquisition). `f` returns false to stop
    /// *before* the connection it was given, which the next walk from `cursor` visits again.
    /// Examines at most `budget` slots. Returns true once the walk has passed the table's end.
    pub fn walk(
        &self,
        now: Timestamp,
        cursor: &mut Cursor,
        mut budget: usize,
        mut f: impl FnMut(&mut Conn) -> bool,
    ) -> bool {
        while cursor.shard < SHARDS && budget > 0 {
            let shard = &self.shards[cursor.shard];
            let mut slab = shard.slab.lock();
            let n = slab.slots.len();
            let end = n.min(cursor.slot.saturating_add(LOCK_SPAN.min(budget)));
            while cursor.slot < end {
                if let Some(c) = slab.slots[cursor.slot].as_mut() {
                    if c.expires > now && !f(c) {
                        return false;
                    }
                }
                cursor.slot += 1;
                budget -= 1;
            }
            drop(slab);
            if cursor.slot >= n {
                cursor.shard += 1;
                cursor.slot = 0;
                // An empty shard costs a lock but no slot: count it, so a walk of an empty table ends.
                budget = budget.saturating_sub(1);
            }
        }
        cursor.at_end()
    }

    /// Removes every live connection for which `pred` holds, shard by shard in spans of
    /// [`LOCK_SPAN`] slots; returns how many went.
    pub fn remove_where(&self, now: Timestamp, mut pred: impl FnMut(&Conn) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut at = 0;
            loop {
                let mut guard = shard.slab.lock();
                let slab = &mut *guard;
                let n = slab.slots.len();
                if at >= n {
                    break;
                }
                let end = n.min(at + LOCK_SPAN);
                for slot in at..end {
                    let Some(c) = slab.slots[slot].as_ref() else { continue };
                    if c.expires > now && pred(c) {
                        let h = self.hash(&c.orig);
                        self.remove(shard, slab, h, slot);
                        removed += 1;
                    }
                }
                at = end;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Config, ProtoState};
    use proto::packet::Family;

    fn conn(n: u8, now: Timestamp) -> Conn {
        let t = Tuple { src: [n; 16], dst: [200; 16], sport: 1000, dport: 80, family: Family::V6, proto: 6 };
        Conn {
            orig: t,
            status: Status::default(),
            mark: u32::from(n),
            start: now,
            expires: now.plus_secs(100),
            packets: [0; 2],
            bytes: [0; 2],
            proto: ProtoState::Stateless,
            policy: None,
        }
    }

    #[test]
    fn insert_find_remove() {
        let ct = Conntrack::new(1000, Config::default());
        let now = Timestamp::from_secs(1);
        let c = conn(1, now);
        let (orig, reply) = (c.orig, c.reply());
        assert_eq!(ct.insert_new(now, c.clone()), Ok(()));
        assert_eq!(ct.insert_new(now, c.clone()), Err(InsertError::Exists));
        assert_eq!(ct.with_conn(now, &reply, |c| c.mark), Some(1));
        assert!(ct.with_conn(now, &orig, |c| c.status.contains(Status::CONFIRMED)).unwrap());
        // Expired: gone for lookups.
        assert_eq!(ct.with_conn(now.plus_secs(100), &orig, |_| ()), None);
        assert_eq!(ct.remove_by_tuple(now, &orig, |_| false), Some(false));
        assert_eq!(ct.remove_by_tuple(now, &reply, |_| true), Some(true));
        assert_eq!(ct.remove_by_tuple(now, &orig, |_| true), None);
        assert!(ct.is_empty());
    }

    #[test]
    fn full_table_refuses_when_all_are_assured() {
        let ct = Conntrack::new(2, Config::default());
        let now = Timestamp::from_secs(1);
        for n in 0..2 {
            let mut c = conn(n, now);
            c.status.insert(Status::ASSURED);
            ct.insert_new(now, c).unwrap();
        }
        assert_eq!(ct.insert_new(now, conn(9, now)), Err(InsertError::Full));
        // An unassured one makes room by early drop.
        ct.remove_where(now, |c| c.mark == 0);
        ct.insert_new(now, conn(3, now)).unwrap();
        assert_eq!(ct.insert_new(now, conn(4, now)), Ok(()));
        assert_eq!(ct.len(), 2);
    }

    #[test]
    fn walks_resume_and_see_everything_once() {
        let ct = Conntrack::new(10_000, Config::default());
        let now = Timestamp::from_secs(1);
        for n in 0..200u8 {
            ct.insert_new(now, conn(n, now)).unwrap();
        }
        let mut seen = Vec::new();
        let mut cur = Cursor::default();
        let mut calls = 0;
        // A small budget and a callback that refuses every third connection once: resumes exactly.
        let mut refuse = true;
        while !ct.walk(now, &mut cur, 7, |c| {
            if refuse && c.mark % 3 == 0 {
                refuse = false;
                return false;
            }
            refuse = true;
            seen.push(c.mark);
            true
        }) {
            calls += 1;
            assert!(calls < 100_000, "the walk must end");
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<u32>>());
        assert_eq!(ct.remove_where(now, |c| c.mark >= 100), 100);
        assert_eq!(ct.len(), 100);
        // Ids differ between connections and stay put.
        let a = ct.with_conn(now, &conn(1, now).orig, |c| ct_id(&ct, c)).unwrap();
        let b = ct.with_conn(now, &conn(2, now).orig, |c| ct_id(&ct, c)).unwrap();
        assert_ne!(a, b);
        assert_eq!(ct.with_conn(now, &conn(1, now).reply(), |c| ct_id(&ct, c)), Some(a));
    }

    fn ct_id(ct: &Conntrack, c: &Conn) -> u32 {
        ct.conn_id(c)
    }
}
