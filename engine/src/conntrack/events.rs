//! Connection events, as the kernel's `nf_conntrack_ecache` reports them to ctnetlink's multicast
//! groups: `NEW` when a connection is confirmed (or created over ctnetlink), `UPDATE` when a packet
//! changes its status bits or its protocol state, `DESTROY` when it leaves the table (expiry,
//! early drop, a TCP reset, a delete or flush).
//!
//! The table pushes events into one bounded queue that the control plane drains and delivers to
//! its subscribers. Nothing is recorded unless someone listens ([`Events::want`]): the cost on
//! the packet path is then one relaxed load at each point where an event could arise, none on a
//! packet that changes nothing. A push never blocks: when the queue is full the event is dropped
//! and counted ([`Events::lost`]), and the control plane tells its subscribers they lost events,
//! as the kernel reports `ENOBUFS` to a listener that fell behind.
//!
//! An event caused by a ctnetlink request (a create, update or delete) carries the requester's
//! port id, which the kernel puts in the event message's `nlmsg_pid`: the control plane runs the
//! request inside [`caused_by`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam::queue::ArrayQueue;

use super::conn::Conn;

/// What happened to a connection (the kernel's multicast groups, `NFNLGRP_CONNTRACK_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    New = 0,
    Update = 1,
    Destroy = 2,
}

impl EventKind {
    /// The event's bit in [`Events::want`]'s mask.
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The name `conntrack -E` prints.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::New => "NEW",
            EventKind::Update => "UPDATE",
            EventKind::Destroy => "DESTROY",
        }
    }
}

/// One event: what happened and the connection as it was then.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub conn: Box<Conn>,
    /// The port id of the ctnetlink request that caused it; 0 for a packet, an expiry or an early
    /// drop.
    pub portid: u32,
    /// Whether the tracker's state is part of what changed (the kernel's `IPCT_PROTOINFO`): false
    /// only for an UPDATE whose packet changed status bits alone.
    pub state_changed: bool,
}

thread_local! {
    /// The port id of the ctnetlink request this thread is carrying out (0: none).
    static REQUESTER: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` with the events it causes attributed to the ctnetlink request of port `portid`.
pub fn caused_by<R>(portid: u32, f: impl FnOnce() -> R) -> R {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            REQUESTER.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REQUESTER.with(|r| r.replace(portid)));
    f()
}

/// Events not yet delivered, at most this many.
pub const QUEUE: usize = 65_536;

/// The table's event queue.
pub struct Events {
    queue: ArrayQueue<Event>,
    /// Bits of the kinds someone listens to.
    wanted: AtomicU32,
    lost: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Events { queue: ArrayQueue::new(QUEUE), wanted: AtomicU32::new(0), lost: AtomicU64::new(0) }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("queued", &self.queue.len()).field("wanted", &self.wanted).finish()
    }
}

impl Events {
    /// Records events of the kinds in `mask` (bits of [`EventKind::bit`]) from now on; 0 stops.
    pub fn want(&self, mask: u32) {
        self.wanted.store(mask, Ordering::Relaxed);
    }

    /// Whether events of `kind` are recorded.
    #[inline]
    pub fn wants(&self, kind: EventKind) -> bool {
        self.wanted.load(Ordering::Relaxed) & kind.bit() != 0
    }

    /// Queues an event, or counts it lost when the queue is full.
    pub(crate) fn push(&self, kind: EventKind, conn: Box<Conn>) {
        self.push_with(kind, conn, true);
    }

    /// [`Events::push`] for an UPDATE that may not have changed the tracker's state.
    pub(crate) fn push_with(&self, kind: EventKind, conn: Box<Conn>, state_changed: bool) {
        let portid = REQUESTER.with(Cell::get);
        if self.queue.push(Event { kind, conn, portid, state_changed }).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The oldest event not yet taken.
    pub fn pop(&self) -> Option<Event> {
        self.queue.pop()
    }

    /// Events dropped because the queue was full, since the start.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}
