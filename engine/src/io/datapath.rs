//! Router mode: worker threads that receive from AF_PACKET ports and run every packet through the
//! router step, the rule set and conntrack (see `engine::route` for the order of steps).
//!
//! Each worker owns one port per interface (AF_PACKET, joined to a per-interface fanout group so
//! the kernel spreads flows over workers and reassembles IPv4 fragments first) and its own mio
//! loop. The conntrack table, the rule set (an `ArcSwap`, replaced whole on reload), the registry
//! and the router (routes behind an `ArcSwap`, the neighbour cache) are shared.
//!
//! A received frame is borrowed from the ring; a packet that is forwarded is copied into the
//! worker's scratch buffer, where the router rewrites its Ethernet header and TTL, and from there
//! into the transmit ring. Frames whose checksum the sender left to offload (`CSUM_NOT_READY`)
//! get it completed in the scratch copy before anything reads it: conntrack then verifies a real
//! checksum, and the receiver gets one.
#![allow(clippy::disallowed_methods)] // the datapath's clock: Instant::now, here only

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use mio::Registry as MioRegistry;
use proto::packet::{self, Packet, L4};

use super::afpacket::AfPacket;
use super::port::{Port, PortStats, RxFlags, Tx};
use super::worker::{self, forward_verdict, Batch, Pipeline, Worker, RX_BATCH};
use crate::clock::Timestamp;
use crate::conntrack::{Conntrack, CtState, Stats, Tracked};
use crate::filter::{Hook, Meta, Reject, RuleSet, Verdict};
use crate::route::{icmp, Forward, Hop, Routed, Router, Rx};
use crate::timeouts::Registry;

/// What the control plane and the workers share.
pub struct Shared {
    pub registry: Registry,
    pub ct: Conntrack,
    /// The running rule set; the control loop replaces it on reload.
    pub rules: ArcSwap<RuleSet>,
    /// The datapath's clock: nanoseconds since this instant.
    pub epoch: Instant,
    pub counters: Counters,
    /// Each worker's port counters, by (interface, worker), refreshed at every tick.
    pub ports: parking_lot::Mutex<BTreeMap<(String, usize), PortStats>>,
    /// Each worker's conntrack counters, by worker, refreshed at every tick.
    pub ct_stats: parking_lot::Mutex<BTreeMap<usize, Stats>>,
}

impl Shared {
    /// The shared state of a daemon starting now (the clock's epoch).
    pub fn new(registry: Registry, ct: Conntrack, rules: RuleSet) -> Shared {
        Shared {
            registry,
            ct,
            rules: ArcSwap::from_pointee(rules),
            epoch: Instant::now(),
            counters: Counters::default(),
            ports: parking_lot::Mutex::new(BTreeMap::new()),
            ct_stats: parking_lot::Mutex::new(BTreeMap::new()),
        }
    }

    /// Now, on the engine's clock.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.epoch.elapsed().as_nanos() as u64)
    }
}

/// Datapath counters summed over workers (relaxed atomics, added once per batch).
#[derive(Debug, Default)]
pub struct Counters {
    pub rx: AtomicU64,
    pub forwarded: AtomicU64,
    pub local: AtomicU64,
    pub originated: AtomicU64,
    pub dropped: AtomicU64,
}

/// Router mode's part of a worker: the shared router and the worker's scratch space.
struct Routing {
    router: Arc<Router>,
    scratch: Vec<u8>,
}

/// Opens `workers` sets of ports on the router's interfaces, one worker each, to start (they
/// stop when `stop` is set).
pub(crate) fn start(
    shared: Arc<Shared>,
    router: Arc<Router>,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> io::Result<Vec<worker::Pending>> {
    let names: Vec<&str> = router.ifaces().iter().map(|i| i.name.as_str()).collect();
    let sets = worker::open_afpacket_sets(&names, workers, false).map_err(io::Error::other)?;
    let mut handles = Vec::new();
    for (i, ports) in sets.into_iter().enumerate() {
        let w = Worker { id: i, ports, shared: shared.clone(), stats: Stats::default() };
        let routing = Routing { router: router.clone(), scratch: Vec::with_capacity(65_536 + 64) };
        handles.push(worker::spawn('w', "worker", w, routing, stop.clone()));
    }
    Ok(handles)
}

impl Pipeline for Routing {
    type Port = AfPacket;

    fn serve(&mut self, w: &mut Worker<AfPacket>, _: &MioRegistry) -> io::Result<bool> {
        // A few ports: serve all of them on every wake rather than track readiness per port
        // (blocks retire on a timer, so readiness is coarse anyway).
        for at in 0..w.ports.len() {
            self.serve_port(w, at)?;
        }
        Ok(false)
    }

    /// Neighbour retries and failures.
    fn tick(&mut self, w: &mut Worker<AfPacket>, now: Timestamp) {
        let t = self.router.tick(now);
        for f in t.frames {
            if let Some(p) = w.ports.get_mut(f.iface) {
                let _ = p.tx(&[&f.frame]);
            }
        }
        for e in t.errors {
            originate(w, &self.router, now, &e);
        }
    }
}

impl Routing {
    /// Receives and handles what port `at` has.
    fn serve_port(&mut self, w: &mut Worker<AfPacket>, at: usize) -> io::Result<()> {
        let Routing { router, scratch } = self;
        let Worker { ports, shared, stats, .. } = w;
        let (before, rest) = ports.split_at_mut(at);
        let Some((port, after)) = rest.split_first_mut() else { return Ok(()) };
        let mut batch = Batch::default();
        let mut originate_later: Vec<Vec<u8>> = Vec::new();
        port.rx_batch(RX_BATCH, &mut |frames, this| {
            let now = shared.now();
            let rules = shared.rules.load();
            for f in frames {
                batch.rx += 1;
                let mut out = |to: usize, frame: &[u8]| worker::send(before, this, after, at, to, frame);
                handle(
                    shared,
                    router,
                    &rules,
                    stats,
                    scratch,
                    now,
                    at,
                    f.data,
                    f.flags,
                    &mut out,
                    &mut batch,
                    &mut originate_later,
                );
            }
        })?;
        batch.publish(&shared.counters);
        // Datagrams we originate (echo replies, ICMP errors, resets) take the output path.
        let now = w.shared.now();
        for d in originate_later {
            originate(w, &self.router, now, &d);
        }
        Ok(())
    }
}

/// A datagram the router originates: tracked (an ICMP error is RELATED, an echo reply
/// ESTABLISHED), the output chain, then routed and framed.
fn originate(w: &mut Worker<AfPacket>, router: &Router, now: Timestamp, datagram: &[u8]) {
    let Ok(p) = packet::parse_ip(datagram, 0) else { return };
    let rules = w.shared.rules.load();
    let mut t = w.shared.ct.track(now, datagram, &p, &mut w.stats);
    let d = rules.eval(Hook::Output, &Meta { iif: "", oif: "" }, &p, t.state);
    if !matches!(d.verdict, Verdict::Accept) || w.shared.ct.confirm(&mut t, &mut w.stats).is_err() {
        w.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match router.send_local(now, datagram) {
        Ok(frames) => {
            for f in frames {
                if let Some(port) = w.ports.get_mut(f.iface) {
                    let _ = port.tx(&[&f.frame]);
                }
            }
            w.shared.counters.originated.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            w.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Completes the L4 checksum of a TCP or UDP packet whose sender left it to offload.
pub(crate) fn complete_checksum(frame: &mut [u8], p: &Packet) {
    let (at, proto) = match p.l4 {
        L4::Tcp(_) => (16, 6),
        L4::Udp(_) => (6, 17),
        _ => return,
    };
    let (start, end) = (p.l4_offset, p.end);
    if end < start + at + 2 {
        return;
    }
    frame[start + at..start + at + 2].fill(0);
    let seg = &frame[start..end];
    let mut c = proto::checksum::l4(p.family, &p.src, &p.dst, proto, seg, seg.len());
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[start + at..start + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The answer a `reject` sends for `datagram` (an IP datagram), from our address facing its
/// sender.
fn reject_answer(router: &Router, in_iface: usize, datagram: &[u8], p: &Packet, kind: Reject) -> Option<Vec<u8>> {
    match kind {
        Reject::TcpReset => icmp::tcp_reset(datagram),
        Reject::IcmpPortUnreachable | Reject::Icmpv6PortUnreachable => {
            let from = router.address_on(in_iface, p.family, &p.src)?;
            icmp::port_unreachable(datagram, from)
        }
    }
}

/// One received frame, through the whole pipeline.
#[allow(clippy::too_many_arguments)]
fn handle(
    shared: &Shared,
    router: &Router,
    rules: &RuleSet,
    stats: &mut Stats,
    scratch: &mut Vec<u8>,
    now: Timestamp,
    at: usize,
    frame: &[u8],
    flags: RxFlags,
    out: &mut dyn FnMut(usize, &[u8]),
    batch: &mut Batch,
    originate: &mut Vec<Vec<u8>>,
) {
    let p = match router.receive(now, at, frame) {
        Rx::Ip(p) => p,
        Rx::Handled(frames) => {
            for f in frames {
                out(f.iface, &f.frame);
            }
            return;
        }
        Rx::Drop(_) => {
            batch.dropped += 1;
            return;
        }
    };
    // Work on a copy: the router rewrites headers in place, and a partial checksum is completed.
    scratch.clear();
    scratch.extend_from_slice(frame);
    if flags.contains(RxFlags::CSUM_NOT_READY) {
        complete_checksum(scratch, &p);
    }
    let ifaces = router.ifaces();
    let iif = ifaces.get(at).map_or("", |i| i.name.as_str());
    let pre = rules.eval(Hook::Prerouting, &Meta { iif, oif: "" }, &p, CtState::Untracked);
    if !matches!(pre.verdict, Verdict::Accept) {
        batch.dropped += 1;
        return;
    }
    let mut t = if pre.notrack { Tracked::untracked() } else { shared.ct.track(now, scratch, &p, stats) };
    let datagram_range = p.l3_offset..p.end;
    let decide = |hook: Hook, oif: &str, t: &Tracked| rules.eval(hook, &Meta { iif, oif }, &p, t.state);
    match router.route(at, &p) {
        Routed::Local { .. } | Routed::Broadcast => {
            let d = decide(Hook::Input, "", &t);
            match d.verdict {
                Verdict::Accept => {
                    let _ = shared.ct.confirm(&mut t, stats);
                    batch.local += 1;
                    match router.local(scratch, &p) {
                        Forward::Reply(r) | Forward::Icmp(r) => originate.push(r),
                        _ => {}
                    }
                }
                Verdict::Drop => batch.dropped += 1,
                Verdict::Reject(kind) => {
                    batch.dropped += 1;
                    originate.extend(reject_answer(router, at, &scratch[datagram_range], &p, kind));
                }
            }
        }
        Routed::Forward(hop) => {
            forward(shared, router, stats, scratch, now, at, &p, hop, t, decide, out, batch, originate)
        }
        Routed::Unreachable => {
            batch.dropped += 1;
            originate.extend(router.error(now, icmp::IcmpKind::NetUnreachable, &scratch[datagram_range], Some(at)));
        }
        Routed::Drop(_) => batch.dropped += 1,
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    shared: &Shared,
    router: &Router,
    stats: &mut Stats,
    scratch: &mut [u8],
    now: Timestamp,
    at: usize,
    p: &Packet,
    hop: Hop,
    mut t: Tracked,
    decide: impl Fn(Hook, &str, &Tracked) -> crate::filter::Decision,
    out: &mut dyn FnMut(usize, &[u8]),
    batch: &mut Batch,
    originate: &mut Vec<Vec<u8>>,
) {
    let oif = router.ifaces().get(hop.iface).map_or("", |i| i.name.as_str());
    let d = decide(Hook::Forward, oif, &t);
    let datagram = &scratch[p.l3_offset..p.end];
    let reject = |kind, _: &mut Stats, _: &mut Batch| originate.extend(reject_answer(router, at, datagram, p, kind));
    if !forward_verdict(shared, now, &d, &mut t, stats, batch, reject) {
        return;
    }
    match router.transmit(now, at, scratch, p, hop) {
        Forward::Transmit { iface, start, end, .. } => {
            out(iface, &scratch[start..end]);
            batch.forwarded += 1;
        }
        Forward::Frames { iface, frames } => {
            for f in &frames {
                out(iface, f);
            }
            batch.forwarded += 1;
        }
        Forward::Queued { iface, request } => {
            if let Some(r) = request {
                out(iface, &r);
            }
            batch.forwarded += 1;
        }
        Forward::Icmp(e) | Forward::Reply(e) => {
            batch.dropped += 1;
            originate.push(e);
        }
        Forward::Deliver | Forward::Drop(_) => batch.dropped += 1,
    }
}

/// The interface's MAC address and MTU, as the kernel reports them.
pub fn link_info(name: &str) -> io::Result<([u8; 6], u16)> {
    let read = |what: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{what}"));
    let mac_text = read("address")?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = mac_text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{name}: not an Ethernet interface")));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad MAC"))?;
    }
    let mtu = read("mtu")?.trim().parse::<u16>().unwrap_or(1500);
    Ok((mac, mtu))
}
