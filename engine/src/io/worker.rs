//! What the worker threads of the three datapath modes share around their per-packet pipelines
//! (router: [`super::datapath`], bridge: [`super::bridge`], TUN: [`super::tunnel`]): a worker's
//! ports and the mio loop over them (register the descriptors, poll through signals, serve the
//! ports, run the timers, flush), the timers every mode has (the conntrack sweep, the port
//! counters published to [`Shared::ports`]), the batch counts (every frame's outcome, each drop
//! under its [`DropReason`]) published to the worker's own [`WorkerCounters`], and the handling
//! of a `forward` verdict.
//!
//! A mode is a [`Pipeline`]: its own state (router, MAC table, scratch buffers) and how it serves
//! its ports. The loop is generic over it, so the per-packet path has no dynamic dispatch it did
//! not have before.
#![allow(clippy::disallowed_methods)] // the datapath's clock: Instant::now, here only

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use proto::packet::{Family, Packet};

use super::afpacket::{AfPacket, AfPacketConfig, Fanout};
use super::datapath::{DropReason, Shared, WorkerCounters};
use super::port::{Port, PortError, Tx, TxFrame};
use crate::clock::Timestamp;
use crate::conntrack::{Stats, Tracked};
use crate::filter::{Decision, Hook, Reject, Verdict};

/// Frames taken from a port per call.
pub(super) const RX_BATCH: usize = 64;
/// Batches served from one port per wake at most, so that a busy port does not starve the others.
pub(super) const ROUNDS: usize = 8;

/// What serving the ports once found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Served {
    /// Frames received.
    pub(super) frames: usize,
    /// A port may have more waiting (it gave a full batch), which its readiness need not signal
    /// again: the loop comes straight back instead of waiting.
    pub(super) more: bool,
}

/// Serves each of `ports` ports with `serve_port` (one batch a call, returning its size) until it
/// is empty or has had [`ROUNDS`] batches: the AF_PACKET modes serve every port on every wake.
pub(super) fn serve_all(ports: usize, mut serve_port: impl FnMut(usize) -> io::Result<usize>) -> io::Result<Served> {
    let mut served = Served::default();
    for at in 0..ports {
        for _ in 0..ROUNDS {
            let n = serve_port(at)?;
            served.frames += n;
            served.more |= n == RX_BATCH;
            if n < RX_BATCH {
                break;
            }
        }
    }
    Ok(served)
}

/// How often a worker runs its timers.
const TICK: Duration = Duration::from_millis(100);
/// Expired connections a worker removes per tick, at most.
const SWEEP_BUDGET: usize = 4096;
/// The longest a worker waits for readiness.
const POLL: Duration = Duration::from_millis(20);

/// What every worker has: its number, its ports (index = interface), the shared state, its
/// conntrack statistics and its datapath counters.
pub(super) struct Worker<P> {
    pub(super) id: usize,
    pub(super) ports: Vec<P>,
    pub(super) shared: Arc<Shared>,
    pub(super) stats: Stats,
    pub(super) counters: Arc<WorkerCounters>,
}

impl<P> Worker<P> {
    /// Worker `id` over `ports`, its counters registered with `shared`.
    pub(super) fn new(id: usize, ports: Vec<P>, shared: Arc<Shared>) -> Worker<P> {
        let counters = shared.register_worker();
        Worker { id, ports, shared, stats: Stats::default(), counters }
    }
}

/// A datapath mode's part of a worker: its state, how it serves its ports, its own timers.
pub(super) trait Pipeline: Send + 'static {
    type Port: Port + Send + 'static;

    /// The ports' readiness is edge-triggered (TUN): read before the first wait, and do not wait
    /// while [`Pipeline::serve`] says a port may have more. Otherwise the loop serves every port
    /// on every wake, at least every 20 ms.
    const EDGE_TRIGGERED: bool = false;

    /// Serves the ports once. A port that failed may be deregistered from `registry` (its token is
    /// its index).
    fn serve(&mut self, w: &mut Worker<Self::Port>, registry: &Registry) -> io::Result<Served>;

    /// The mode's timers, run at every tick before the conntrack sweep.
    fn tick(&mut self, _w: &mut Worker<Self::Port>, _now: Timestamp) {}
}

/// A worker whose ports are open and whose thread is not started yet: the daemon drops its
/// privileges in between, so every thread starts unprivileged.
pub(crate) type Pending = Box<dyn FnOnce() -> io::Result<JoinHandle<()>> + Send>;

/// Worker `w` with `pipeline`, to start on a thread named `ferrowall-<tag><id>`; it runs until
/// `stop` is set, and reports a failure as `ferrowall: <what> <id>: <error>`.
pub(super) fn spawn<L: Pipeline + Send + 'static>(
    tag: char,
    what: &'static str,
    mut w: Worker<L::Port>,
    mut pipeline: L,
    stop: Arc<AtomicBool>,
) -> Pending
where
    Worker<L::Port>: Send + 'static,
{
    let i = w.id;
    Box::new(move || {
        std::thread::Builder::new().name(format!("ferrowall-{tag}{i}")).spawn(move || {
            if let Err(e) = run(&mut w, &mut pipeline, &stop) {
                eprintln!("ferrowall: {what} {i}: {e}");
            }
        })
    })
}

/// The worker's loop: one mio poll over its ports' descriptors.
fn run<L: Pipeline>(w: &mut Worker<L::Port>, pipeline: &mut L, stop: &AtomicBool) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (i, p) in w.ports.iter().enumerate() {
        if let Some(fd) = p.raw_fd() {
            poll.registry().register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
        }
    }
    let mut events = Events::with_capacity(64);
    // `now` is the loop's one clock read, taken after serving.
    let mut now = Instant::now();
    let mut spin = Spin::new(w.shared.busy_poll, now);
    let mut spin_until = now;
    let mut next_tick = now;
    // Edge-triggered: datagrams may be queued already, so read before waiting.
    let mut busy = L::EDGE_TRIGGERED;
    while !stop.load(Ordering::Relaxed) {
        let spinning = !busy && now < spin_until;
        if spinning {
            std::hint::spin_loop();
        } else {
            let wait = match (busy, L::EDGE_TRIGGERED) {
                (true, _) => Duration::ZERO,
                (false, true) => next_tick.saturating_duration_since(now),
                (false, false) => POLL,
            };
            match poll.poll(&mut events, Some(wait.min(POLL))) {
                Ok(()) => {}
                // A signal for the daemon (a reload's SIGHUP) landed on this thread: not a reason
                // to stop forwarding.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let served = pipeline.serve(w, poll.registry())?;
        busy = served.more;
        now = Instant::now();
        if served.frames > 0 {
            spin_until = spin.after_frames(now);
        }
        if now >= next_tick {
            next_tick = now + TICK;
            tick(w, pipeline);
        }
        if served.frames > 0 || !spinning {
            for p in &mut w.ports {
                let _ = p.flush();
            }
        }
    }
    Ok(())
}

/// When a worker that served frames keeps looking at its rings instead of waiting (busy polling,
/// `busy_poll`): so that the next frame of a conversation is not held up by a wake-up, which on a
/// virtual machine's idle CPU costs several µs each way. Only while frames come closer together
/// than the window, though, when the next one is likely to arrive during the spin: a gap that short
/// arms it for [`Spin::STREAK`] batches, each longer gap disarms it by one. So sparse traffic (a
/// ping a second, or frames every 50 µs with a 20 µs window) costs no spinning, where spinning
/// after every frame would burn up to a core while catching nothing.
#[derive(Debug, Clone, Copy)]
struct Spin {
    window: Duration,
    /// When frames were last served.
    last: Instant,
    /// Batches left to spin after, since the last short gap.
    streak: u8,
}

impl Spin {
    /// Batches a short gap arms the spin for.
    const STREAK: u8 = 8;

    fn new(window: Duration, now: Instant) -> Spin {
        Spin { window, last: now, streak: 0 }
    }

    /// Frames were served at `now`: until when to look again without waiting.
    fn after_frames(&mut self, now: Instant) -> Instant {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        self.streak = if gap < self.window { Self::STREAK } else { self.streak.saturating_sub(1) };
        if self.streak > 0 {
            now + self.window
        } else {
            now
        }
    }
}

/// The timers: the mode's, the conntrack sweep, the ports' counters published by (interface,
/// worker).
fn tick<L: Pipeline>(w: &mut Worker<L::Port>, pipeline: &mut L) {
    let now = w.shared.now();
    pipeline.tick(w, now);
    w.shared.ct.sweep(now, SWEEP_BUDGET, &mut w.stats);
    w.shared.ct_stats.lock().insert(w.id, w.stats.clone());
    let mut ports = w.shared.ports.lock();
    for p in &mut w.ports {
        ports.insert((p.name().to_owned(), w.id), p.stats());
    }
}

/// Opens `workers` sets of `AF_PACKET` ports on the interfaces `names` (index = interface); with
/// more than one worker, each interface's ports join a fanout group of their own (flows spread
/// by the kernel, IPv4 fragments reassembled first).
pub(super) fn open_afpacket_sets(
    names: &[&str],
    workers: usize,
    promiscuous: bool,
) -> Result<Vec<Vec<AfPacket>>, PortError> {
    // Fanout groups are per interface and must not collide with other processes' groups.
    let base = (std::process::id() as u16).wrapping_mul(16);
    let mut sets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut ports = Vec::new();
        for (id, name) in names.iter().enumerate() {
            let cfg = AfPacketConfig {
                promiscuous,
                fanout: (workers > 1).then_some(Fanout { group: base.wrapping_add(id as u16), defrag: true }),
                ..AfPacketConfig::default()
            };
            ports.push(AfPacket::open(name, &cfg)?);
        }
        sets.push(ports);
    }
    Ok(sets)
}

/// Sends `frame` (with its vnet header) on port `to`: `this` is the port being received from
/// (index `at`), whose own transmit side the batch callback lends; the others are split around it.
/// Whether the port queued it.
pub(super) fn send(
    before: &mut [AfPacket],
    this: &mut dyn Tx,
    after: &mut [AfPacket],
    at: usize,
    to: usize,
    frame: TxFrame<'_>,
) -> bool {
    let frames = [frame];
    let sent = match to {
        t if t == at => this.tx(&frames),
        t if t < at => before[t].tx(&frames),
        t => match after.get_mut(t - at - 1) {
            Some(p) => p.tx(&frames),
            None => Ok(0),
        },
    };
    matches!(sent, Ok(1))
}

/// A worker's counts within one batch, added to its [`WorkerCounters`] at the end. Every
/// received frame counted in `rx` ends in exactly one of `forwarded`, `local`, `held` or
/// [`Batch::drop`].
pub(super) struct Batch {
    pub(super) rx: u64,
    /// GSO super-frames among the received frames (each also counted once in its outcome).
    pub(super) rx_gso: u64,
    /// Super-frames cut in software (their next hop unresolved, or their pieces to fragment).
    pub(super) gso_segmented: u64,
    pub(super) forwarded: u64,
    pub(super) local: u64,
    /// Fragments taken into reassembly (the datagram they complete is counted when it goes).
    pub(super) held: u64,
    pub(super) originated: u64,
    /// Received frames dropped, all reasons.
    pub(super) dropped: u64,
    /// Received frames dropped, by [`DropReason`].
    pub(super) drops: [u64; DropReason::COUNT],
    /// Originated datagrams dropped, by [`DropReason`].
    pub(super) originate_drops: [u64; DropReason::COUNT],
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            rx: 0,
            rx_gso: 0,
            gso_segmented: 0,
            forwarded: 0,
            local: 0,
            held: 0,
            originated: 0,
            dropped: 0,
            drops: [0; DropReason::COUNT],
            originate_drops: [0; DropReason::COUNT],
        }
    }
}

impl Batch {
    /// A received frame dropped for `why`.
    #[inline]
    pub(super) fn drop(&mut self, why: DropReason) {
        self.dropped += 1;
        self.drops[why as usize] += 1;
    }

    /// A datagram we originated, dropped for `why`.
    #[inline]
    pub(super) fn originate_drop(&mut self, why: DropReason) {
        self.originate_drops[why as usize] += 1;
    }

    /// How many received frames were dropped for `why`.
    #[cfg(test)]
    pub(super) fn drops_of(&self, why: DropReason) -> u64 {
        self.drops[why as usize]
    }
}

/// Whether a packet with `verdict` at `hook` goes on. A dropped one, and a rejected one (which
/// `reject` answers), is counted in `batch` under [`DropReason::rules`] (a plain drop of a packet
/// conntrack found invalid, `invalid`, under that reason).
pub(super) fn passes(
    hook: Hook,
    verdict: Verdict,
    invalid: Option<crate::conntrack::Invalid>,
    stats: &mut Stats,
    batch: &mut Batch,
    reject: impl FnOnce(Reject, &mut Stats, &mut Batch),
) -> bool {
    match verdict {
        Verdict::Accept => return true,
        Verdict::Drop => batch.drop(DropReason::rules(hook, verdict, invalid)),
        Verdict::Reject(kind) => {
            batch.drop(DropReason::rules(hook, verdict, invalid));
            reject(kind, stats, batch);
        }
    }
    false
}

/// The `forward` chain's decision `d` on tracked packet `t`, as [`passes`]; on accept, `ct timeout
/// set` and `mark set` apply and the connection is confirmed (a refused one counts as dropped,
/// [`DropReason::CtTableFull`]). Whether the packet goes on.
pub(super) fn forward_verdict(
    shared: &Shared,
    now: Timestamp,
    d: &Decision,
    t: &mut Tracked,
    stats: &mut Stats,
    batch: &mut Batch,
    reject: impl FnOnce(Reject, &mut Stats, &mut Batch),
) -> bool {
    if !passes(Hook::Forward, d.verdict, t.invalid, stats, batch, reject) {
        return false;
    }
    if let Some(policy) = &d.timeout {
        t.set_policy(now, policy);
    }
    if let Some(mark) = d.mark {
        t.set_mark(mark);
    }
    if shared.ct.confirm(t, stats).is_err() {
        batch.drop(DropReason::CtTableFull);
        return false;
    }
    true
}

/// The destination address of `p`, the source of an answer on its destination's behalf.
pub(super) fn destination(p: &Packet) -> IpAddr {
    match p.family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(p.dst[0], p.dst[1], p.dst[2], p.dst[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(p.dst)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn busy_polling_follows_short_gaps_and_stops_after_long_ones() {
        let t0 = Instant::now();
        let mut spin = Spin::new(us(20), t0);
        // The first frames after a quiet spell: the worker waits at once.
        let mut t = t0 + us(5_000);
        assert_eq!(spin.after_frames(t), t);
        // A conversation: frames 10 µs apart arm it.
        t += us(10);
        assert_eq!(spin.after_frames(t), t + us(20));
        // Gaps longer than the window: it still spins after STREAK - 1 batches, then no more.
        for k in 1..Spin::STREAK {
            t += us(50);
            assert_eq!(spin.after_frames(t), t + us(20), "long gap {k}");
        }
        t += us(50);
        assert_eq!(spin.after_frames(t), t);
        // Traffic sparser than the window never arms it.
        for _ in 0..100 {
            t += us(50);
            assert_eq!(spin.after_frames(t), t);
        }
        // One short gap arms it again.
        t += us(5);
        assert_eq!(spin.after_frames(t), t + us(20));
    }

    #[test]
    fn busy_polling_off_never_spins() {
        let t0 = Instant::now();
        let mut spin = Spin::new(Duration::ZERO, t0);
        for k in 0..10 {
            let t = t0 + Duration::from_nanos(k);
            assert_eq!(spin.after_frames(t), t);
        }
    }
}
