//! TUN mode: the kernel routes, ferrowall filters.
//!
//! For each configured `interface` (a TUN device name) ferrowall creates the device, or attaches
//! to a persistent one, with one queue per worker (`IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`, see
//! [`super::tun`]), gives it the configured addresses if any (optional: the set-up below needs
//! none) and brings it up. The kernel's policy routing sends the traffic to be filtered into the
//! device; each worker reads the datagrams of its queues and runs every one through
//!
//! 0. reassembly: fragments are held until their datagram is whole (counted `held`), as
//!    `nf_defrag_ipv4`/`nf_defrag_ipv6` have the kernel's conntrack see them; the datagram is
//!    written back fragmented again to the TUN's MTU (IPv6 with the fragments' identification),
//! 1. the `prerouting` chain (before tracking; `notrack` applies),
//! 2. connection tracking,
//! 3. the `forward` chain, with `iifname` = the TUN device and `oifname` = `""` (the kernel picks
//!    the real output interface only after ferrowall has decided, so it is not known here),
//!
//! and, on accept, applies `ct timeout set` and the mark, confirms the connection and writes the
//! datagram back, unchanged, into the same device: the kernel receives it as arriving on the TUN
//! and routes it onward by its main table. A `reject` writes its answer into the TUN instead (a
//! TCP RST, or an ICMP / ICMPv6 port unreachable whose source is the rejected datagram's
//! destination, as if the destination had answered); like everything ferrowall originates it is
//! tracked and passes the `output` chain (`iifname` and `oifname` both `""`). Drop and reject
//! answer nothing else; a datagram that does not parse as IP is dropped.
//!
//! # The kernel set-up this expects
//!
//! Traffic entering from the real interfaces is routed into the TUN; what comes back out of the
//! TUN is routed normally. With clients on `eth-cli`, servers on `eth-srv` and `interface = fw0`:
//!
//! ```text
//! sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
//! sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.fw0.rp_filter=0   # once fw0 exists
//! ip rule add iif eth-cli lookup 100
//! ip rule add iif eth-srv lookup 100
//! ip route add default dev fw0 table 100
//! ip -6 rule add iif eth-cli lookup 100
//! ip -6 rule add iif eth-srv lookup 100
//! ip -6 route add default dev fw0 table 100
//! # Fail closed: when fw0 is gone, table 100 answers "prohibited" instead of falling through
//! # to the main table (a device ferrowall created vanishes with it, and its routes with it).
//! ip route add prohibit default table 100 metric 4294967295
//! ip -6 route add prohibit default table 100 metric 4294967295
//! ```
//!
//! * The `iif` rules do not touch traffic for the router itself: the `local` table (rule 0) is
//!   looked up first, so its own addresses, broadcasts, ARP and NDP never enter the TUN.
//! * Forwarded packets cross the kernel twice (real interface → TUN, TUN → real interface), so
//!   their TTL / hop limit drops by 2.
//! * `rp_filter` must be off (or loose) on the TUN: the sources arriving there are reachable
//!   through the real interfaces, which strict reverse-path filtering refuses.
//! * The `fw0` routes can only be added once the device exists. Either add them after ferrowall
//!   has started, or create the device persistent beforehand with the flags ferrowall attaches
//!   with: `ip tuntap add dev fw0 mode tun multi_queue`. A persistent device also keeps its
//!   routes while ferrowall restarts, and the kernel drops what it routes into a TUN no one reads.
//! * The TUN takes offloads (vnet headers, see [`super::tun`]): the kernel routes GSO and GRO
//!   super-packets (TCP with offloads on) into it whole, and ferrowall filters and tracks each
//!   once, as one packet, and writes it back whole with its description for the kernel to route
//!   on; a checksum the kernel left partial stays partial (counted as verified, as the kernel's
//!   conntrack skips `CHECKSUM_PARTIAL` packets). A super-packet whose vnet header does not
//!   describe it is dropped (`gso_malformed`). Keep the MTU equal to the real interfaces' (1500
//!   by default).
//! * Addresses given on the `interface` line are added with rtnetlink (`RTM_NEWADDR`, as `ip
//!   address replace`: one already there is kept, so a restart on a persistent device is fine).
//!   They are optional: the set-up above needs none. Mind that packets the kernel routes into the
//!   TUN towards the TUN's own subnet come straight back to it after ferrowall writes them (the
//!   TTL ends that loop).
//!
//! # What the rules see
//!
//! Every datagram arrives on the TUN, so `iifname` names the TUN, not the interface the packet
//! entered the router by; write policies with addresses (`ip saddr 10.0.0.0/8 accept`). To keep
//! interfaces apart, give each zone a TUN of its own: `ip rule add iif eth-cli lookup 100` with
//! `default dev fw-cli table 100`, `ip rule add iif eth-srv lookup 101` with `default dev fw-srv
//! table 101`, and two `interface` lines; `iifname "fw-cli"` then means "entered from the
//! clients". The kernel may also send its own link-local traffic into the TUN (IPv6 multicast
//! listener reports, router solicitations): it goes through `forward` like the rest.
//!
//! # Workers
//!
//! Worker `i` owns queue `i` of every TUN and one mio loop over their descriptors; the kernel
//! spreads flows over the queues by hash. Readiness is edge-triggered, so a queue is read until it
//! is empty (in batches, round-robin between queues). Nothing is allocated per packet: a datagram
//! is read into the queue's buffer pool, tracked and filtered in place and written back from there
//! (only a `reject` builds an answer, and reassembly its datagram). Datapath counters go to the worker's own counters once per
//! batch, each drop under its `DropReason` (`local` stays 0: the router's own traffic never passes
//! ferrowall), per-queue counters to `shared.ports` and the conntrack sweep runs at every tick. A TUN that disappears (`ip link
//! del`) is no longer read, with a message; a worker left without TUNs stops (the control plane
//! stays up).

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::Registry;
use proto::netlink::{flags, msg_type, MessageBuilder, Messages};
use proto::packet::{self, Packet};

use super::config::{Config, Interface};
use super::datapath::{completed, gso_of, reassemble, Defragged, DropReason, Shared};
use super::port::{Offload, Port, PortError, RxFlags, Tx, TxFrame};
use super::sys;
use super::tun::{Tun, TunQueue};
use super::worker::{self, destination, forward_verdict, passes, Batch, Pipeline, Served, Worker, RX_BATCH};
use super::RunError;
use crate::clock::Timestamp;
use crate::conntrack::{CtState, Stats, Tracked};
use crate::defrag::{Defrag, DefragConfig};
use crate::filter::{Hook, Meta, Reject, RuleSet, Verdict};
use crate::route::icmp;

/// Batches taken from one queue before the next queue's turn.
const DRAIN: usize = 8;

/// Creates the TUN devices with `workers` queues each and configures them: one worker per queue
/// index, to start (they stop when `stop` is set).
pub(crate) fn start(
    shared: Arc<Shared>,
    cfg: &Config,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> Result<Vec<worker::Pending>, RunError> {
    let workers = workers.max(1);
    let mut sets: Vec<Vec<TunQueue>> = (0..workers).map(|_| Vec::with_capacity(cfg.interfaces.len())).collect();
    for (_, ifc) in &cfg.interfaces {
        let queues = Tun::open(&ifc.name, workers).map_err(port_error)?;
        configure(ifc)?;
        for (set, q) in sets.iter_mut().zip(queues) {
            set.push(q);
        }
    }
    let mut handles = Vec::with_capacity(workers);
    for (i, queues) in sets.into_iter().enumerate() {
        let names = queues.iter().map(|q| q.name().to_owned()).collect();
        let tunneling =
            Tunneling { names, defrag: Defrag::new(DefragConfig::default()), dead: vec![false; queues.len()] };
        let w = Worker::new(i, queues, shared.clone());
        handles.push(worker::spawn('t', "worker", w, tunneling, stop.clone()));
    }
    Ok(handles)
}

fn port_error(e: PortError) -> RunError {
    RunError::Ports(io::Error::other(e))
}

/// Gives the device its configured addresses and brings it up.
fn configure(ifc: &Interface) -> Result<(), RunError> {
    let fail = |op: &'static str, e: io::Error| port_error(PortError::new(&ifc.name, op, e));
    let index = sys::if_index(&ifc.name).map_err(|e| fail("finding the interface", e))?;
    for &(addr, len) in &ifc.addrs {
        add_address(index, addr, len).map_err(|e| {
            RunError::Ports(io::Error::new(e.kind(), format!("port {}: assigning {addr}/{len}: {e}", ifc.name)))
        })?;
    }
    sys::if_up(&ifc.name).map_err(|e| fail("bringing the interface up", e))
}

/// rtnetlink's `RTM_NEWADDR` and its attributes (`linux/rtnetlink.h`, `linux/if_addr.h`).
const RTM_NEWADDR: u16 = 20;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

/// Adds `addr/len` to interface `index` with one `RTM_NEWADDR`, as `ip address replace` does (an
/// address already there stays). Not with the `SIOCSIF*` ioctls: `SIOCSIFNETMASK` deletes and
/// re-adds the address, and deleting a device's last IPv4 address flushes every route through
/// the device, such as the administrator's `default dev fw0 table 100` on a persistent device.
fn add_address(index: u32, addr: IpAddr, len: u8) -> io::Result<()> {
    let (v4, v6);
    let (family, bytes) = match addr {
        IpAddr::V4(a) => {
            v4 = a.octets();
            (libc::AF_INET as u8, &v4[..])
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            (libc::AF_INET6 as u8, &v6[..])
        }
    };
    // struct ifaddrmsg: family, prefix length, flags, scope (universe), interface index.
    let mut ifa = [family, len, 0, 0, 0, 0, 0, 0];
    ifa[4..].copy_from_slice(&index.to_ne_bytes());
    let mut m = MessageBuilder::new(RTM_NEWADDR, flags::REQUEST | flags::ACK | flags::CREATE | flags::REPLACE, 1, 0);
    m.append(&ifa).put(IFA_LOCAL, bytes).put(IFA_ADDRESS, bytes);
    let request = m.finish();
    let sock = sys::route_netlink()?;
    sys::send(sock.as_raw_fd(), &request)?;
    // The kernel handles the request inside `send`: its answer is queued when that returns.
    let mut buf = [0u8; 1024];
    let got = sys::recv(sock.as_raw_fd(), &mut buf)?;
    for m in Messages::new(&buf[..got.len]) {
        let m = m.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let (msg_type::ERROR, Some(code)) = (m.header.kind, m.payload.get(..4)) {
            let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(errno)) };
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "no acknowledgement of RTM_NEWADDR"))
}

/// TUN mode's part of a worker, whose ports are queue `id` of every TUN (index = interface).
struct Tunneling {
    /// The queues' interface names (`iifname`).
    names: Vec<String>,
    /// Fragments waiting for the rest of their datagram.
    defrag: Defrag,
    /// Queues whose device is gone, no longer read.
    dead: Vec<bool>,
}

impl Pipeline for Tunneling {
    type Port = TunQueue;
    const EDGE_TRIGGERED: bool = true;

    /// Reassembly's timeouts.
    fn tick(&mut self, _: &mut Worker<TunQueue>, now: Timestamp) {
        self.defrag.expire(now);
    }

    fn serve(&mut self, w: &mut Worker<TunQueue>, registry: &Registry) -> io::Result<Served> {
        let mut served = Served::default();
        for at in 0..w.ports.len() {
            if self.dead[at] {
                continue;
            }
            match self.serve_queue(w, at) {
                Ok(s) => {
                    served.frames += s.frames;
                    served.more |= s.more;
                }
                // The device was deleted (EBADFD): the other TUNs go on.
                Err(e) => {
                    eprintln!("ferrowall: worker {}: {}: {e}; no longer read", w.id, self.names[at]);
                    if let Some(fd) = w.ports[at].raw_fd() {
                        let _ = registry.deregister(&mut SourceFd(&fd));
                    }
                    self.dead[at] = true;
                }
            }
        }
        if self.dead.iter().all(|&d| d) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "every TUN is gone"));
        }
        Ok(served)
    }
}

impl Tunneling {
    /// Reads and handles up to [`DRAIN`] batches from queue `at`.
    fn serve_queue(&mut self, w: &mut Worker<TunQueue>, at: usize) -> io::Result<Served> {
        let Worker { ports, shared, stats, counters, .. } = w;
        let mut served = Served::default();
        let (Some(q), Some(iif)) = (ports.get_mut(at), self.names.get(at)) else { return Ok(served) };
        for _ in 0..DRAIN {
            let mut batch = Batch::default();
            let n = q.rx_batch(RX_BATCH, &mut |frames, tx| {
                let now = shared.now();
                let rules = shared.rules.load();
                for f in frames {
                    batch.rx_gso += u64::from(f.flags.contains(RxFlags::GSO));
                    handle(shared, &rules, stats, &mut self.defrag, now, iif, f.data, f.offload, tx, &mut batch);
                }
            })?;
            counters.publish(&batch);
            served.frames += n;
            if n == 0 {
                return Ok(served);
            }
        }
        served.more = true;
        Ok(served)
    }
}

/// One datagram read from TUN `iif` with its vnet header `offload`, through the rules and
/// conntrack; what is accepted is written back through `tx` with the same header. Fragments are
/// reassembled first (`defrag`), as `nf_defrag_ipv4`/`nf_defrag_ipv6` have the kernel's
/// conntrack see them, and the datagram goes back fragmented again if it exceeds the TUN's MTU.
/// Counted in `batch` as forwarded, held or dropped under its reason.
#[allow(clippy::too_many_arguments)]
fn handle(
    shared: &Shared,
    rules: &RuleSet,
    stats: &mut Stats,
    defrag: &mut Defrag,
    now: Timestamp,
    iif: &str,
    datagram: &[u8],
    offload: Offload,
    tx: &mut dyn Tx,
    batch: &mut Batch,
) {
    batch.rx += 1;
    let mut p = match packet::parse_ip(datagram, 0) {
        Ok(p) => p,
        Err(e) => return batch.drop(DropReason::unparsable(e, datagram, 0)),
    };
    let whole = match reassemble(defrag, now, datagram, &p, batch) {
        Defragged::Packet => None,
        Defragged::Whole(w) => Some(w),
        Defragged::Consumed => return,
    };
    let (datagram, reassembled) = match &whole {
        Some(w) => {
            p = w.p;
            (&w.frame[..], Some(w.id))
        }
        None => (datagram, None),
    };
    if let Err(why) = gso_of(&offload, &p) {
        return batch.drop(why);
    }
    // A checksum the kernel left partial (the egress finishes it) or verified: not verified again
    // (a reassembled datagram's is: nothing verified it whole).
    let offload = if reassembled.is_some() { Offload::NONE } else { offload };
    let partial = offload.csum.is_some();
    p.l4_checksum_verified = partial || offload.data_valid;
    let meta = Meta { iif, oif: "" };
    let pre = rules.eval(Hook::Prerouting, &meta, &p, CtState::Untracked);
    let answer = |kind, stats: &mut Stats, batch: &mut Batch| {
        reject(shared, rules, stats, now, datagram, partial, &p, kind, &mut *tx, batch);
    };
    if !passes(Hook::Prerouting, pre.verdict, None, stats, batch, answer) {
        return;
    }
    let mut t = if pre.notrack { Tracked::untracked() } else { shared.ct.track(now, datagram, &p, stats) };
    let d = rules.eval(Hook::Forward, &meta, &p, t.state);
    let answer = |kind, stats: &mut Stats, batch: &mut Batch| {
        reject(shared, rules, stats, now, datagram, partial, &p, kind, &mut *tx, batch);
    };
    if !forward_verdict(shared, now, &d, &mut t, stats, batch, answer) {
        return;
    }
    // Back unchanged, with its vnet header (a super-packet whole, a partial checksum partial). The
    // port counts what the kernel refuses; a failing device shows up at the next read.
    let offload = Offload { data_valid: false, ..offload };
    if let Some(id) = reassembled {
        return write_back_fragmented(iif, datagram, id, tx, batch);
    }
    match tx.tx(&[TxFrame::new(datagram, offload)]) {
        Ok(1) => batch.forwarded += 1,
        _ => batch.drop(DropReason::TxFailed),
    }
}

/// A datagram reassembled from fragments with identification `id`, accepted: written back into
/// TUN `iif` fragmented again to the device's MTU (IPv6 with that identification, as Linux
/// sends on what `nf_defrag_ipv6` reassembled; IPv4 with DF whole, for the kernel to answer),
/// whole if it fits. Read on this rare path only, the MTU follows changes to the device.
fn write_back_fragmented(iif: &str, datagram: &[u8], id: u32, tx: &mut dyn Tx, batch: &mut Batch) {
    let mtu = sys::if_mtu(iif).map_or(1280, |m| m as usize);
    let pieces = proto::build::fragment_ip_to_mtu(datagram, mtu, Some(id)).unwrap_or_else(|| vec![datagram.to_vec()]);
    let sent = pieces.iter().all(|piece| matches!(tx.tx(&[TxFrame::new(piece, Offload::NONE)]), Ok(1)));
    if sent {
        batch.forwarded += 1;
    } else {
        batch.drop(DropReason::TxFailed);
    }
}

/// `reject` of `datagram` (its checksum `partial` or not): its answer, tracked and through the
/// `output` chain, into the TUN.
#[allow(clippy::too_many_arguments)]
fn reject(
    shared: &Shared,
    rules: &RuleSet,
    stats: &mut Stats,
    now: Timestamp,
    datagram: &[u8],
    partial: bool,
    p: &Packet,
    kind: Reject,
    tx: &mut dyn Tx,
    batch: &mut Batch,
) {
    // The kernel's `nf_reject` takes a partial checksum for good; ours verifies: complete it.
    let datagram = &completed(datagram, partial, p)[..];
    let answer = match kind {
        Reject::TcpReset => icmp::tcp_reset(datagram),
        Reject::IcmpPortUnreachable | Reject::Icmpv6PortUnreachable => icmp::port_unreachable(datagram, destination(p)),
    };
    // No answer (to an ICMP error, a RST, a broadcast): nothing originated.
    let Some(answer) = answer else { return };
    let a = match packet::parse_ip(&answer, 0) {
        Ok(a) => a,
        Err(e) => return batch.originate_drop(DropReason::unparsable(e, &answer, 0)),
    };
    let mut t = shared.ct.track(now, &answer, &a, stats);
    let d = rules.eval(Hook::Output, &Meta { iif: "", oif: "" }, &a, t.state);
    if !matches!(d.verdict, Verdict::Accept) {
        return batch.originate_drop(DropReason::rules(Hook::Output, d.verdict, t.invalid));
    }
    if shared.ct.confirm(&mut t, stats).is_err() {
        return batch.originate_drop(DropReason::CtTableFull);
    }
    match tx.tx_plain(&[&answer]) {
        Ok(1) => batch.originated += 1,
        _ => batch.originate_drop(DropReason::TxFailed),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proto::build::PacketBuilder;
    use proto::packet::{parse_ip, tcp_flags, L4};

    use super::*;
    use crate::conntrack::{self, Conntrack};
    use crate::timeouts::Registry;

    /// What the worker wrote into the TUN, and the vnet headers it wrote them with.
    #[derive(Default)]
    struct Sink(Vec<Vec<u8>>, Vec<Offload>);

    impl Tx for Sink {
        fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
            self.0.extend(frames.iter().map(|f| f.data.to_vec()));
            self.1.extend(frames.iter().map(|f| f.offload));
            Ok(frames.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const RULES: &str = r#"chain prerouting { udp dport 53 notrack; }
chain forward {
  policy drop
  iifname != "fw0" drop
  ct state established,related accept
  udp dport 53 accept
  tcp dport 2223 reject
  udp dport 9998 reject
  ip saddr 10.1.0.0/16 accept
  ip6 saddr 2001:db8:1::/48 accept
}
"#;

    fn shared() -> Shared {
        let registry = Registry::new();
        let rules = RuleSet::parse("fw.rules", RULES, &registry).unwrap();
        Shared::new(registry, Conntrack::new(1024, conntrack::Config::default()), rules)
    }

    /// Runs `datagrams` through the pipeline as read from `fw0`; what was written back.
    /// [`handle`] at 1 s, with a reassembly of its own (nothing held).
    #[allow(clippy::too_many_arguments)]
    fn handle_at(
        sh: &Shared,
        rules: &RuleSet,
        st: &mut Stats,
        iif: &str,
        d: &[u8],
        offload: Offload,
        tx: &mut dyn Tx,
        batch: &mut Batch,
    ) {
        let mut defrag = Defrag::new(DefragConfig::default());
        handle(sh, rules, st, &mut defrag, Timestamp::from_secs(1), iif, d, offload, tx, batch);
    }

    fn feed(sh: &Shared, datagrams: &[Vec<u8>]) -> (Vec<Vec<u8>>, Batch) {
        let (mut sink, mut batch, mut stats) = (Sink::default(), Batch::default(), Stats::default());
        let rules = sh.rules.load();
        for d in datagrams {
            handle_at(sh, &rules, &mut stats, "fw0", d, Offload::NONE, &mut sink, &mut batch);
        }
        (sink.0, batch)
    }

    const CLI: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const SRV: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

    #[test]
    fn accepted_datagrams_go_back_unchanged_and_replies_are_established() {
        let sh = shared();
        let out = PacketBuilder::v4(CLI, SRV).udp(4000, 7000, b"q");
        let back = PacketBuilder::v4(SRV, CLI).udp(7000, 4000, b"r");
        let (written, b) = feed(&sh, &[out.clone(), back.clone()]);
        assert_eq!(written, [out, back]);
        assert_eq!((b.rx, b.forwarded, b.dropped, b.originated), (2, 2, 0, 0));
        assert_eq!(sh.ct.len(), 1);
    }

    #[test]
    fn new_connections_from_elsewhere_are_dropped_untracked() {
        let sh = shared();
        let syn = PacketBuilder::v4(SRV, CLI).tcp(5000, 22, 1, 0, tcp_flags::SYN, 1000, &[], &[]);
        let (written, b) = feed(&sh, &[syn, vec![0x45, 0, 0]]);
        assert!(written.is_empty());
        assert_eq!((b.rx, b.forwarded, b.dropped), (2, 0, 2));
        assert_eq!(b.drops_of(DropReason::RuleDropForward), 1, "policy drop");
        assert_eq!(b.drops_of(DropReason::Ipv4Truncated), 1, "three bytes of IPv4");
        assert_eq!(sh.ct.len(), 0, "a dropped packet leaves no connection");
        // Another interface's datagram (a second TUN the rules do not accept) is dropped too.
        let (mut sink, mut batch, mut st) = (Sink::default(), Batch::default(), Stats::default());
        let d = PacketBuilder::v4(CLI, SRV).udp(1, 2, b"x");
        let rules = sh.rules.load();
        handle_at(&sh, &rules, &mut st, "fw1", &d, Offload::NONE, &mut sink, &mut batch);
        assert!(sink.0.is_empty() && batch.dropped == 1);
    }

    #[test]
    fn notrack_in_prerouting_bypasses_the_table() {
        let sh = shared();
        let (written, b) = feed(&sh, &[PacketBuilder::v4(CLI, SRV).udp(4000, 53, b"q")]);
        assert_eq!((written.len(), b.forwarded), (1, 1));
        assert_eq!(sh.ct.len(), 0);
    }

    #[test]
    fn a_reject_answers_in_the_destinations_name() {
        let sh = shared();
        let syn = PacketBuilder::v4(CLI, SRV).tcp(5000, 2223, 77, 0, tcp_flags::SYN, 1000, &[], &[]);
        let (written, b) = feed(&sh, &[syn]);
        assert_eq!((b.dropped, b.originated, written.len()), (1, 1, 1));
        let rst = parse_ip(&written[0], 0).unwrap();
        assert_eq!((&rst.src[..4], &rst.dst[..4]), (&SRV.octets()[..], &CLI.octets()[..]));
        let L4::Tcp(t) = rst.l4 else { panic!("not TCP: {rst:?}") };
        assert_eq!((t.sport, t.dport, t.ack, t.flags & tcp_flags::RST != 0), (2223, 5000, 78, true));

        let (cli6, srv6): (Ipv6Addr, Ipv6Addr) = ("2001:db8:1::2".parse().unwrap(), "2001:db8:2::2".parse().unwrap());
        let (written, b) = feed(&sh, &[PacketBuilder::v6(cli6, srv6).udp(4000, 9998, b"q")]);
        assert_eq!((b.dropped, b.originated, written.len()), (1, 1, 1));
        let unreach = parse_ip(&written[0], 0).unwrap();
        assert_eq!((unreach.src, unreach.dst), (srv6.octets(), cli6.octets()));
        let L4::Icmpv6(i) = unreach.l4 else { panic!("not ICMPv6: {unreach:?}") };
        assert_eq!((i.ty, i.code), (1, 4), "port unreachable");
        assert_eq!(sh.ct.len(), 0, "neither the rejected flows nor the answers stay in the table");
    }

    #[test]
    fn a_super_packet_is_tracked_once_and_written_back_whole_with_its_header() {
        use super::super::port::PartialCsum;
        use crate::gso::{Gso, GsoKind};
        let sh = shared();
        // As the kernel hands it over: the lengths of the whole, the checksum field partial.
        let mut d = PacketBuilder::v4(CLI, SRV).tcp(4000, 7000, 1, 1, tcp_flags::ACK, 512, &[], &[7u8; 30_000]);
        d[36..38].copy_from_slice(&[0x12, 0x34]);
        let gso = Gso { kind: GsoKind::Tcp4, ecn: false, size: 1448, hdr_len: 40 };
        let offload = Offload { gso: Some(gso), csum: Some(PartialCsum { start: 20, offset: 16 }), data_valid: false };
        let (mut sink, mut batch, mut st) = (Sink::default(), Batch::default(), Stats::default());
        let rules = sh.rules.load();
        handle_at(&sh, &rules, &mut st, "fw0", &d, offload, &mut sink, &mut batch);
        assert_eq!((sink.0, sink.1), (vec![d.clone()], vec![offload]), "whole, checksum still partial");
        assert_eq!((batch.forwarded, batch.dropped, sh.ct.len()), (1, 0, 1));
        // A header that does not describe the packet (TCP over IPv6 for an IPv4 packet).
        let wrong = Offload { gso: Some(Gso { kind: GsoKind::Tcp6, ..gso }), ..offload };
        let mut sink = Sink::default();
        handle_at(&sh, &rules, &mut st, "fw0", &d, wrong, &mut sink, &mut batch);
        assert!(sink.0.is_empty());
        assert_eq!(batch.drops_of(DropReason::GsoMalformed), 1);
        // A rejected SYN whose checksum the kernel left partial is answered all the same, as
        // `nf_reject` takes a partial checksum for good.
        let mut syn = PacketBuilder::v4(CLI, SRV).tcp(5000, 2223, 77, 0, tcp_flags::SYN, 1000, &[], &[]);
        syn[36..38].copy_from_slice(&[0x12, 0x34]);
        let partial = Offload { csum: Some(PartialCsum { start: 20, offset: 16 }), ..Offload::NONE };
        let mut sink = Sink::default();
        handle_at(&sh, &rules, &mut st, "fw0", &syn, partial, &mut sink, &mut batch);
        assert_eq!(sink.0.len(), 1, "the reset");
        let rst = parse_ip(&sink.0[0], 0).unwrap();
        assert!(matches!(rst.l4, L4::Tcp(t) if t.flags & tcp_flags::RST != 0 && t.ack == 78), "{rst:?}");
    }
}
