//! Bridge mode (L2): ferrowall joins its interfaces into one Ethernet segment, learning where
//! each MAC lives and filtering the IP traffic that crosses it as Linux's `br_netfilter` does with
//! `bridge-nf-call-iptables=1` and `bridge-nf-call-ip6tables=1`.
//!
//! ```text
//! mode = bridge
//! interface = veth-cli        # ports only: a bridge has no addresses of its own
//! interface = veth-srv
//! rules = fw.rules
//! ```
//!
//! Addresses on `interface` lines and `route` lines are refused in this mode. The host's own
//! stack sees the same frames (the ports are promiscuous): give it no addresses on the bridged
//! interfaces, and no IPv6, so that it neither answers nor originates anything there.
//!
//! **Ports and workers.** Each worker owns one `AF_PACKET` port per interface, in promiscuous
//! mode (frames for every MAC) and, with more than one worker, in a per-interface fanout group
//! (flows spread over workers by the kernel's symmetric flow hash; IPv4 fragments reassembled
//! first so they follow their flow). Each worker runs its own mio loop; the MAC table
//! ([`crate::bridge::MacTable`]), the conntrack table and the rule set are shared. The
//! interfaces should have GRO/LRO off; their peers may have TSO/GSO on (see *GSO* below).
//!
//! **Forwarding**, per frame, as Linux's bridge does it:
//! 1. A frame with a group or all-zero source MAC is dropped; one shorter than an Ethernet header
//!    too.
//! 2. The source MAC is learned against the ingress port (moves are followed at once; entries age
//!    out after 300 s, Linux's default `ageing_time`). For IP frames this happens after the
//!    prerouting chain accepted the packet, as Linux learns after `NF_BR_PRE_ROUTING`.
//! 3. The destination decides the egress ([`crate::bridge::Egress`]): `01:80:c2:00:00:0X`
//!    (STP, LACP, LLDP, 802.1X) is consumed, not forwarded (counted as `local`); known unicast
//!    goes to its port, or is dropped when that is the ingress port; broadcast, multicast and
//!    unknown unicast are flooded to every other port. Nothing goes back out the ingress port.
//!
//! **Filtering.** Untagged IPv4 and IPv6 frames (an IP header that does not parse, or whose
//! version disagrees with the ethertype, is dropped as `br_netfilter` drops it) go through:
//! the `prerouting` chain (`iifname` = the ingress port; `notrack` here bypasses tracking),
//! conntrack, then the `forward` chain with `iifname` = ingress port and `oifname` = egress port.
//! **A flooded frame is evaluated once, with `oifname` empty** (Linux runs `FORWARD` once per
//! copy, each with its port): a rule matching `oifname "X"` does not match broadcast, multicast
//! or unknown-unicast frames, so write such policies with `iifname` (or accept the flood
//! explicitly). On accept, `ct timeout set` and `mark set` apply and the connection is confirmed;
//! `drop` drops; `reject` drops and answers out of the ingress port — a TCP RST, or an ICMP /
//! ICMPv6 port unreachable whose source address is the rejected packet's destination — framed
//! with the rejected frame's MACs swapped (not answered when its destination MAC is a group
//! address), neither tracked nor filtered, as nftables' bridge `reject` sends it. Frames the
//! sender left with a partial checksum (`CSUM_NOT_READY`) get it completed in a copy before
//! tracking, and that copy is forwarded. Fragments are reassembled before the rules and conntrack
//! see them, as `nf_defrag_ipv4`/`nf_defrag_ipv6` do for `br_netfilter` (with several workers the
//! kernel's fanout has reassembled IPv4 already; the rest, IPv6 always, by the worker's
//! [`Defrag`]); the whole datagram is filtered and tracked once, then sent on fragmented again to
//! the egress port's MTU (IPv6 with the original identification; an IPv4 datagram with DF that
//! does not fit is dropped). A fragment that does not complete its datagram is held, counted as
//! `held`, neither forwarded nor dropped. The `input` and `output` chains never run: nothing is
//! addressed to the bridge.
//!
//! **GSO.** A super-frame from a peer with TSO/GSO on (its port's vnet header describes it, see
//! `crate::gso`) is filtered and tracked once as one packet, its partial checksum left as it is
//! (counted as verified, as for `CSUM_NOT_READY`), and forwarded — or flooded — whole, with its
//! vnet header, for the egress to cut: straight from the receive ring, like any unchanged frame. If
//! its pieces exceed the egress port's MTU it is dropped (`too_big`), as a reassembled datagram
//! with DF is; one whose vnet header does not describe its packet is dropped (`gso_malformed`).
//!
//! **Unfiltered.** ARP, and every other non-IP ethertype, pass without rules or tracking, as they
//! do with `br_netfilter` (no `arptables`/`ebtables` here). VLAN-tagged frames also pass
//! unfiltered (Linux's default `bridge-nf-filter-vlan-tagged=0`); a tag the kernel took off is
//! put back before forwarding. IPv6 neighbour discovery *is* IP: conntrack sees it as untracked,
//! so a rule set with `policy drop` must accept it (`icmpv6 type { nd-neighbor-solicit,
//! nd-neighbor-advert } accept`).
//!
//! **Counters.** `rx` counts every frame received, `forwarded` every frame or reassembled
//! datagram sent on (a flooded one once), `local` link-local frames consumed, `held` fragments
//! taken into reassembly, and every other frame is dropped under its
//! [`DropReason`](super::datapath::DropReason) (`bad_source_mac`, `same_port`, `reassembly_*`,
//! the IP header faults, the rules' and conntrack's reasons); port counters are published per
//! worker at every tick, as in router mode, for `ferroctl stats`. Each tick (100
//! ms) a worker also sweeps expired connections, and one worker a second sweeps expired MACs.
//!
//! **No allocation per forwarded frame**: frames are sent straight from the receive ring (or the
//! worker's scratch buffer when they had to be changed: checksum, VLAN tag); the MAC table is
//! preallocated. Allocations remain only off the common path: reject answers, and fragments
//! (held for reassembly, and fragmented again).
//!
//! **Limits.** No STP (a loop in the topology loops frames forever: do not build one); no
//! VLAN-aware filtering; no per-port isolation, hairpin or static MAC entries; the MAC table is
//! bounded (16384 entries; when full, new MACs are flooded to until ageing makes room) and its
//! ageing time fixed at 300 s, and `ferroctl` does not show it; MTU changes of the interfaces need
//! a restart; a super-frame whose pieces do not fit the egress MTU is not cut in software.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mio::Registry;
use proto::packet::{ethertype, parse_ip, Family, Packet};

use super::afpacket::AfPacket;
use super::config::Config;
use super::datapath::{
    complete_checksum, completed, gso_of, gso_offload, link_info, reassemble, Defragged, DropReason, Shared,
};
use super::port::{Frame, Offload, Port, RxFlags, TxFrame};
use super::worker::{self, destination, forward_verdict, Batch, Pipeline, Served, Worker, RX_BATCH};
use super::RunError;
use crate::bridge::{is_valid_source, Egress, FdbConfig, Mac, MacTable};
use crate::clock::Timestamp;
use crate::conntrack::{CtState, Stats, Tracked};
use crate::defrag::{Defrag, DefragConfig};
use crate::filter::{Hook, Meta, Reject, RuleSet, Verdict};
use crate::gso::Gso;
use crate::route::icmp;

/// Ethernet header length (untagged).
const ETH: usize = 14;

/// The bridge's ports as every worker sees them: names (for `iifname`/`oifname`) and MTUs, by
/// port index.
struct Links {
    names: Vec<String>,
    mtus: Vec<usize>,
}

/// Bridge mode's part of a worker: the shared MAC table and ports, its scratch space and
/// reassembly.
struct Bridging {
    macs: Arc<MacTable>,
    links: Arc<Links>,
    scratch: Vec<u8>,
    defrag: Defrag,
}

/// Opens `workers` sets of bridge ports on the configured interfaces, one worker each, to start
/// (they stop when `stop` is set).
pub(crate) fn start(
    shared: Arc<Shared>,
    cfg: &Config,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> Result<Vec<worker::Pending>, RunError> {
    // Addresses and routes are refused with the configuration ([`Config::parse_with`]).
    if cfg.interfaces.len() > usize::from(u16::MAX) {
        return Err(RunError::Unsupported("a bridge has at most 65535 ports".into()));
    }
    let mut links = Links { names: Vec::new(), mtus: Vec::new() };
    for (_, i) in &cfg.interfaces {
        let (_, mtu) = link_info(&i.name).map_err(|e| RunError::Ports(io::Error::other(format!("{}: {e}", i.name))))?;
        links.names.push(i.name.clone());
        links.mtus.push(usize::from(mtu));
    }
    let links = Arc::new(links);
    let macs = Arc::new(MacTable::new(FdbConfig::default()));
    let names: Vec<&str> = links.names.iter().map(String::as_str).collect();
    let sets = worker::open_afpacket_sets(&names, workers, true).map_err(|e| RunError::Ports(io::Error::other(e)))?;
    let mut handles = Vec::new();
    for (i, ports) in sets.into_iter().enumerate() {
        let w = Worker::new(i, ports, shared.clone());
        let bridging = Bridging {
            macs: macs.clone(),
            links: links.clone(),
            scratch: Vec::with_capacity(65_536 + 64),
            defrag: Defrag::new(DefragConfig::default()),
        };
        handles.push(worker::spawn('b', "bridge worker", w, bridging, stop.clone()));
    }
    Ok(handles)
}

impl Pipeline for Bridging {
    type Port = AfPacket;

    fn serve(&mut self, w: &mut Worker<AfPacket>, _: &Registry) -> io::Result<Served> {
        worker::serve_all(w.ports.len(), |at| self.serve_port(w, at))
    }

    /// MAC ageing, and the reassembly's timeouts.
    fn tick(&mut self, _: &mut Worker<AfPacket>, now: Timestamp) {
        self.macs.age(now);
        self.defrag.expire(now);
    }
}

impl Bridging {
    /// Receives and handles one batch from port `at`; returns how many frames it had.
    fn serve_port(&mut self, w: &mut Worker<AfPacket>, at: usize) -> io::Result<usize> {
        let Bridging { macs, links, scratch, defrag } = self;
        let Worker { ports, shared, stats, counters, .. } = w;
        let (before, rest) = ports.split_at_mut(at);
        let Some((port, after)) = rest.split_first_mut() else { return Ok(0) };
        let mut batch = Batch::default();
        let n = port.rx_batch(RX_BATCH, &mut |frames, this| {
            let rules = shared.rules.load();
            let mut cx = Cx { shared, macs, links, rules: &rules, stats, scratch, defrag, now: shared.now() };
            for f in frames {
                batch.rx += 1;
                batch.rx_gso += u64::from(f.flags.contains(RxFlags::GSO));
                let mut out = |to: usize, frame: TxFrame<'_>| worker::send(before, this, after, at, to, frame);
                cx.handle(at, f, &mut out, &mut batch);
            }
        })?;
        counters.publish(&batch);
        Ok(n)
    }
}

/// What handling one frame needs.
struct Cx<'a> {
    shared: &'a Shared,
    macs: &'a MacTable,
    links: &'a Links,
    rules: &'a RuleSet,
    stats: &'a mut Stats,
    scratch: &'a mut Vec<u8>,
    defrag: &'a mut Defrag,
    now: Timestamp,
}

impl Cx<'_> {
    /// One received frame, through the bridge: counted in `batch` as forwarded, local, held or
    /// dropped under its reason. `out` sends a frame on a port and says whether the port took it.
    fn handle(&mut self, at: usize, f: &Frame<'_>, out: &mut dyn FnMut(usize, TxFrame<'_>) -> bool, batch: &mut Batch) {
        let data = f.data;
        let (Some(dst), Some(src)) = (mac(data, 0), mac(data, 6)) else {
            return batch.drop(DropReason::L2Truncated);
        };
        if !is_valid_source(&src) {
            return batch.drop(DropReason::BadSourceMac);
        }
        let port = at as u16;
        let ty = u16::from_be_bytes([data[12], data[13]]);
        if f.vlan.is_some() || !matches!(ty, ethertype::IPV4 | ethertype::IPV6) {
            // Not filtered: ARP, other ethertypes, VLAN-tagged frames.
            self.macs.learn(self.now, src, port);
            let egress = self.macs.egress(self.now, port, &dst);
            let (frame, offload) = match f.vlan {
                Some(v) => {
                    // Put back the tag the kernel took off (the vnet header's offsets move with it).
                    self.scratch.clear();
                    self.scratch.extend_from_slice(&data[..12]);
                    self.scratch.extend_from_slice(&v.tpid.to_be_bytes());
                    self.scratch.extend_from_slice(&v.tci.to_be_bytes());
                    self.scratch.extend_from_slice(&data[12..]);
                    (&self.scratch[..], f.offload.shifted(4))
                }
                None => (data, f.offload),
            };
            let offload = Offload { data_valid: false, ..offload };
            self.deliver(at, egress, TxFrame::new(frame, offload), None, out, batch);
            return;
        }
        let mut p = match parse_ip(data, ETH) {
            Ok(p) if matches!((p.family, ty), (Family::V4, ethertype::IPV4) | (Family::V6, ethertype::IPV6)) => p,
            Ok(_) => return batch.drop(DropReason::IpBadVersion),
            Err(e) => return batch.drop(DropReason::unparsable(e, data, ETH)),
        };
        // Fragments are tracked and filtered as their whole datagram, as `nf_defrag` does it.
        let whole = match reassemble(self.defrag, self.now, data, &p, batch) {
            Defragged::Packet => None,
            Defragged::Whole(w) => Some(w),
            Defragged::Consumed => return,
        };
        if let Some(w) = &whole {
            p = w.p;
        }
        let reassembled = whole.as_ref().map(|w| w.id);
        let gso = match gso_of(&f.offload, &p) {
            Ok(g) => g,
            Err(why) => return batch.drop(why),
        };
        let frame: &[u8] = if let Some(w) = &whole {
            &w.frame
        } else if f.flags.contains(RxFlags::CSUM_NOT_READY) && gso.is_none() {
            self.scratch.clear();
            self.scratch.extend_from_slice(data);
            complete_checksum(self.scratch, &p);
            &self.scratch[..]
        } else {
            data
        };
        // A super-frame goes on whole, its checksum partial, described again from its packet.
        let offload = gso.map_or(Offload::NONE, |g| gso_offload(&g, &p, 0));
        // As in router mode: a checksum the kernel verified, or one just completed (or left to the
        // egress, a super-frame's), is not verified again (a reassembled datagram's is).
        p.l4_checksum_verified = reassembled.is_none()
            && (f.flags.contains(RxFlags::CSUM_VALID) || f.flags.contains(RxFlags::CSUM_NOT_READY));
        let iif = self.links.names[at].as_str();
        let pre = self.rules.eval(Hook::Prerouting, &Meta { iif, oif: "" }, &p, CtState::Untracked);
        if !matches!(pre.verdict, Verdict::Accept) {
            return batch.drop(DropReason::rules(Hook::Prerouting, pre.verdict, None));
        }
        let mut t =
            if pre.notrack { Tracked::untracked() } else { self.shared.ct.track(self.now, frame, &p, self.stats) };
        self.macs.learn(self.now, src, port);
        let egress = self.macs.egress(self.now, port, &dst);
        let oif = match egress {
            Egress::Port(o) => self.links.names[usize::from(o)].as_str(),
            Egress::Flood => "",
            Egress::Filtered | Egress::LinkLocal => {
                // Nowhere to go: not forwarded, so never confirmed.
                self.deliver(at, egress, TxFrame::new(frame, offload), None, out, batch);
                return;
            }
        };
        let d = self.rules.eval(Hook::Forward, &Meta { iif, oif }, &p, t.state);
        let reject = |kind, _: &mut Stats, _: &mut Batch| {
            // A super-frame's checksum is partial: completed in a copy for the reject's checks.
            let fixed;
            let frame = if gso.is_some() {
                fixed = [&frame[..p.l3_offset], &completed(&frame[p.l3_offset..p.end], true, &p)].concat();
                &fixed[..]
            } else {
                frame
            };
            if let Some(answer) = reject_frame(frame, &p, kind) {
                out(at, TxFrame::plain(&answer));
            }
        };
        if !forward_verdict(self.shared, self.now, &d, &mut t, self.stats, batch, reject) {
            return;
        }
        self.deliver(at, egress, TxFrame::new(frame, offload), Some((&p, gso, reassembled)), out, batch);
    }

    /// Sends `frame` (from port `at`) where `egress` says; `ip` is its parsed IP packet when it is
    /// an untagged IP frame, with its GSO description if it is a super-frame and the
    /// identification of the fragments it was reassembled from if it was (so that an oversized one
    /// can be fragmented).
    fn deliver(
        &self,
        at: usize,
        egress: Egress,
        frame: TxFrame<'_>,
        ip: Option<IpFrame<'_>>,
        out: &mut dyn FnMut(usize, TxFrame<'_>) -> bool,
        batch: &mut Batch,
    ) {
        let n = self.links.names.len();
        let sent = match egress {
            Egress::Port(o) => self.transmit(usize::from(o), frame, ip, out),
            Egress::Flood => {
                // Forwarded if any port took it; else dropped for the first port's reason.
                let mut sent = Err(DropReason::TxFailed);
                for o in (0..n).filter(|&o| o != at) {
                    match (self.transmit(o, frame, ip, out), &sent) {
                        (Ok(()), _) => sent = Ok(()),
                        (Err(why), Err(DropReason::TxFailed)) => sent = Err(why),
                        (Err(_), _) => {}
                    }
                }
                sent
            }
            Egress::Filtered => Err(DropReason::SamePort),
            Egress::LinkLocal => {
                batch.local += 1;
                return;
            }
        };
        match sent {
            Ok(()) => batch.forwarded += 1,
            Err(why) => batch.drop(why),
        }
    }

    /// Sends `frame` on port `to`, fragmenting an IP datagram larger than the port's MTU (one
    /// that reassembly made: IPv4 without DF, IPv6 that came as fragments); why it could not be
    /// sent, if it could not.
    fn transmit(
        &self,
        to: usize,
        tx: TxFrame<'_>,
        ip: Option<IpFrame<'_>>,
        out: &mut dyn FnMut(usize, TxFrame<'_>) -> bool,
    ) -> Result<(), DropReason> {
        let mtu = self.links.mtus[to];
        let frame = tx.data;
        match ip {
            // A super-frame whose pieces fit goes whole; one whose pieces do not is not cut here.
            Some((p, Some(g), _)) if g.segment_ip_len(p) > mtu => Err(DropReason::TooBig),
            Some((_, Some(_), _)) if out(to, tx) => Ok(()),
            Some((_, Some(_), _)) => Err(DropReason::TxFailed),
            Some((p, None, frag_id)) if p.end - p.l3_offset > mtu => {
                let datagram = &frame[p.l3_offset..p.end];
                let Some(pieces) = proto::build::fragment_ip_to_mtu(datagram, mtu, frag_id) else {
                    return Err(DropReason::TooBig);
                };
                let mut f = Vec::with_capacity(ETH + mtu);
                let mut sent = true;
                for piece in pieces {
                    f.clear();
                    f.extend_from_slice(&frame[..ETH]);
                    f.extend_from_slice(&piece);
                    sent &= out(to, TxFrame::plain(&f));
                }
                if sent {
                    Ok(())
                } else {
                    Err(DropReason::TxFailed)
                }
            }
            _ if out(to, tx) => Ok(()),
            _ => Err(DropReason::TxFailed),
        }
    }
}

/// An untagged IP frame on its way out: its packet, its GSO description if it is a super-frame,
/// and the identification of the fragments it was reassembled from if it was.
type IpFrame<'p> = (&'p Packet, Option<Gso>, Option<u32>);

/// The 6 bytes of `data` at `at`, if there are 14 (an Ethernet header).
fn mac(data: &[u8], at: usize) -> Option<Mac> {
    if data.len() < ETH {
        return None;
    }
    data[at..at + 6].try_into().ok()
}

/// The frame answering a rejected one: a TCP reset or a port unreachable from the rejected
/// packet's destination, with the rejected frame's MACs swapped. `None` when there is no answer
/// (see [`icmp::tcp_reset`], [`icmp::port_unreachable`]) or the rejected frame's destination MAC
/// is a group address (it cannot be a source).
fn reject_frame(frame: &[u8], p: &Packet, kind: Reject) -> Option<Vec<u8>> {
    let (dst, src) = (mac(frame, 0)?, mac(frame, 6)?);
    if crate::bridge::is_group(&dst) {
        return None;
    }
    let datagram = frame.get(p.l3_offset..p.end)?;
    let answer = match kind {
        Reject::TcpReset => icmp::tcp_reset(datagram)?,
        Reject::IcmpPortUnreachable | Reject::Icmpv6PortUnreachable => {
            icmp::port_unreachable(datagram, destination(p))?
        }
    };
    Some(proto::build::ethernet(src, dst, &answer))
}

#[cfg(test)]
mod tests {
    //! The per-frame pipeline without sockets: frames in, (port, frame) pairs out.

    use std::net::Ipv4Addr;

    use proto::build::{ethernet, PacketBuilder};
    use proto::packet::{parse_frame, tcp_flags, L4};

    use super::super::port::Vlan;
    use super::*;
    use crate::conntrack::{Config as CtConfig, Conntrack};
    use crate::defrag::Reassembly;
    use crate::timeouts::Registry;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];
    const C: Mac = [0x02, 0, 0, 0, 0, 0x0c];
    const BCAST: Mac = [0xff; 6];

    struct Bridge {
        shared: Shared,
        macs: MacTable,
        links: Links,
        stats: Stats,
        scratch: Vec<u8>,
        defrag: Defrag,
        batch: Batch,
    }

    impl Bridge {
        /// Three ports p0, p1, p2 and a rule set.
        fn new(rules: &str) -> Bridge {
            let registry = Registry::new();
            let rules = RuleSet::parse("test.rules", rules, &registry).expect("rules parse");
            let shared = Shared::new(registry, Conntrack::new(1024, CtConfig::default()), rules);
            Bridge {
                shared,
                macs: MacTable::new(FdbConfig::default()),
                links: Links { names: vec!["p0".into(), "p1".into(), "p2".into()], mtus: vec![1500; 3] },
                stats: Stats::default(),
                scratch: Vec::with_capacity(65_600),
                defrag: Defrag::new(DefragConfig::default()),
                batch: Batch::default(),
            }
        }

        /// Handles `frame` arriving on port `at`; what was sent, by port.
        fn rx_with(&mut self, at: usize, frame: &[u8], flags: RxFlags, vlan: Option<Vlan>) -> Vec<(usize, Vec<u8>)> {
            let sent = self.rx_offload(at, frame, flags, vlan, Offload::NONE);
            assert!(sent.iter().all(|(_, _, o)| *o == Offload::NONE));
            sent.into_iter().map(|(p, f, _)| (p, f)).collect()
        }

        /// Handles `frame` arriving on port `at` with vnet header `offload`; what was sent, by
        /// port, with its vnet header.
        fn rx_offload(
            &mut self,
            at: usize,
            frame: &[u8],
            flags: RxFlags,
            vlan: Option<Vlan>,
            offload: Offload,
        ) -> Vec<(usize, Vec<u8>, Offload)> {
            let rules = self.shared.rules.load();
            let mut cx = Cx {
                shared: &self.shared,
                macs: &self.macs,
                links: &self.links,
                rules: &rules,
                stats: &mut self.stats,
                scratch: &mut self.scratch,
                defrag: &mut self.defrag,
                now: Timestamp::from_secs(1),
            };
            let mut sent = Vec::new();
            let f = Frame { data: frame, wire_len: frame.len() as u32, flags, vlan, timestamp_ns: 0, offload };
            let mut out = |to, tx: TxFrame<'_>| {
                sent.push((to, tx.data.to_vec(), tx.offload));
                true
            };
            let outcomes = |b: &Batch| b.forwarded + b.local + b.held + b.dropped;
            let before = outcomes(&self.batch);
            self.batch.rx += 1;
            cx.handle(at, &f, &mut out, &mut self.batch);
            assert_eq!(outcomes(&self.batch), before + 1, "every frame has exactly one outcome");
            assert_eq!(self.batch.drops.iter().sum::<u64>(), self.batch.dropped);
            sent
        }

        fn rx(&mut self, at: usize, frame: &[u8]) -> Vec<(usize, Vec<u8>)> {
            self.rx_with(at, frame, RxFlags::empty(), None)
        }

        fn ports(&mut self, at: usize, frame: &[u8]) -> Vec<usize> {
            self.rx(at, frame).into_iter().map(|(p, _)| p).collect()
        }
    }

    fn frame(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = [&dst[..], &src[..], &ethertype.to_be_bytes()].concat();
        f.extend_from_slice(payload);
        f
    }

    fn arp(dst: Mac, src: Mac) -> Vec<u8> {
        frame(dst, src, ethertype::ARP, &[0u8; 28])
    }

    fn a_to_b() -> PacketBuilder {
        PacketBuilder::v4(Ipv4Addr::new(198, 18, 2, 2), Ipv4Addr::new(198, 18, 2, 3))
    }

    #[test]
    fn floods_until_learned_then_forwards_to_one_port() {
        let mut b = Bridge::new("");
        // A broadcast goes everywhere but back.
        assert_eq!(b.ports(0, &arp(BCAST, A)), [1, 2]);
        // B answers A: A is known behind p0.
        assert_eq!(b.ports(1, &arp(A, B)), [0]);
        // To B (learned), from C on p2.
        assert_eq!(b.ports(2, &arp(B, C)), [1]);
        // Unknown unicast floods.
        assert_eq!(b.ports(1, &arp([0x02, 9, 9, 9, 9, 9], B)), [0, 2]);
        // A frame for a MAC behind its own ingress port is not sent back out.
        assert_eq!(b.ports(1, &arp(B, [0x02, 0, 0, 0, 0, 0x0d])), Vec::<usize>::new());
        // A moves to p2.
        assert_eq!(b.ports(2, &arp(B, A)), [1]);
        assert_eq!(b.ports(1, &arp(A, B)), [2]);
        let n = &b.batch;
        assert_eq!((n.forwarded, n.dropped, n.local), (6, 1, 0));
        assert_eq!(n.drops_of(DropReason::SamePort), 1);
        // IPv4 and IPv6 multicast flood too.
        let mc = ethernet([0x01, 0, 0x5e, 0, 0, 1], A, &a_to_b().udp(1, 2, b"x"));
        assert_eq!(b.ports(2, &mc), [0, 1]);
    }

    #[test]
    fn link_local_bad_sources_and_runts_are_not_forwarded() {
        let mut b = Bridge::new("");
        let stp = frame([0x01, 0x80, 0xc2, 0, 0, 0], A, 0x0026, &[0x42; 40]);
        assert!(b.rx(0, &stp).is_empty());
        assert_eq!(b.macs.lookup(Timestamp::from_secs(1), &A), Some(0), "but its source is learned");
        assert!(b.rx(0, &arp(BCAST, BCAST)).is_empty(), "group source");
        assert!(b.rx(0, &arp(BCAST, [0; 6])).is_empty(), "zero source");
        assert!(b.rx(0, &[0xff; 13]).is_empty(), "runt");
        assert_eq!((b.batch.local, b.batch.dropped, b.batch.forwarded), (1, 3, 0));
        assert_eq!(b.batch.drops_of(DropReason::BadSourceMac), 2);
        assert_eq!(b.batch.drops_of(DropReason::L2Truncated), 1);
    }

    #[test]
    fn ip_goes_through_prerouting_conntrack_and_forward_with_ports_as_interfaces() {
        let mut b = Bridge::new(
            "chain prerouting { udp dport 9 drop; }
             chain forward { policy drop; ct state established accept; iifname \"p1\" ct state new drop;
                             oifname \"p2\" drop; iifname \"p0\" oifname { \"p1\", \"\" } accept; }",
        );
        b.ports(1, &arp(BCAST, B));
        b.ports(2, &arp(BCAST, C));
        let q = ethernet(B, A, &a_to_b().udp(5000, 53, b"q"));
        let r = ethernet(A, B, &a_to_b().reverse().udp(53, 5000, b"r"));
        // A new flow from p1 is dropped, and A is not learned from a frame prerouting drops.
        let early = ethernet(B, A, &a_to_b().udp(5000, 9, b"q"));
        assert!(b.rx(0, &early).is_empty());
        assert_eq!(b.macs.lookup(Timestamp::from_secs(1), &A), None);
        // From p0 to p1: accepted, tracked; its reply from p1 passes as established.
        assert_eq!(b.ports(0, &q), [1]);
        assert_eq!(b.shared.ct.len(), 1);
        assert_eq!(b.ports(1, &r), [0]);
        // New from p1: dropped.
        let new_from_p1 = ethernet(A, B, &a_to_b().reverse().udp(6000, 53, b"n"));
        assert!(b.rx(1, &new_from_p1).is_empty());
        // oifname is the egress port: to C (behind p2) is dropped ...
        let to_c = ethernet(C, A, &a_to_b().udp(5001, 53, b"q"));
        assert!(b.rx(0, &to_c).is_empty());
        // ... and a flooded frame is evaluated once with oifname "", then sent to every port.
        let flooded = ethernet([0x02, 9, 9, 9, 9, 9], A, &a_to_b().udp(5002, 53, b"q"));
        assert_eq!(b.ports(0, &flooded), [1, 2]);
        assert_eq!(b.shared.ct.len(), 2);
        // ARP is not filtered at all, even from p1 to p2.
        assert_eq!(b.ports(1, &arp(C, B)), [2]);
    }

    #[test]
    fn reject_answers_out_of_the_ingress_port_with_the_macs_swapped() {
        let mut b = Bridge::new("chain forward { tcp dport 9 reject; udp dport 9 reject; }");
        b.ports(1, &arp(BCAST, B));
        let syn = a_to_b().tcp(40000, 9, 1000, 0, tcp_flags::SYN, 1000, &[], &[]);
        let sent = b.rx(0, &ethernet(B, A, &syn));
        assert_eq!(sent.len(), 1);
        let (port, rst) = &sent[0];
        assert_eq!((*port, &rst[..6], &rst[6..12]), (0, &A[..], &B[..]));
        let p = parse_frame(rst).unwrap();
        assert_eq!((&p.src[..4], &p.dst[..4]), (&[198, 18, 2, 3][..], &[198, 18, 2, 2][..]));
        let L4::Tcp(t) = p.l4 else { panic!("not TCP: {p:?}") };
        assert_eq!((t.sport, t.dport, t.flags, t.ack), (9, 40000, tcp_flags::RST | tcp_flags::ACK, 1001));

        let udp = a_to_b().udp(40000, 9, b"x");
        let sent = b.rx(0, &ethernet(B, A, &udp));
        assert_eq!(sent.len(), 1);
        let (port, unreach) = &sent[0];
        assert_eq!((*port, &unreach[..6], &unreach[6..12]), (0, &A[..], &B[..]));
        let p = parse_frame(unreach).unwrap();
        assert_eq!(&p.src[..4], &[198, 18, 2, 3], "from the rejected packet's destination");
        assert!(matches!(p.l4, L4::Icmp(i) if i.ty == 3 && i.code == 3), "{p:?}");
        // Nothing rejected was tracked; a broadcast-addressed frame gets no answer.
        assert_eq!(b.shared.ct.len(), 0);
        assert!(b.rx(0, &ethernet(BCAST, A, &udp)).is_empty());
        assert_eq!((b.batch.forwarded, b.batch.dropped), (1, 3));
        assert_eq!(b.batch.drops_of(DropReason::RuleRejectForward), 3);
    }

    #[test]
    fn a_partial_checksum_is_completed_before_tracking() {
        let mut b = Bridge::new("chain forward { ct state invalid drop; }");
        b.ports(1, &arp(BCAST, B));
        let good = ethernet(B, A, &a_to_b().udp(5000, 53, b"query"));
        // As the sending stack leaves it with offload: a checksum that is not the final one.
        let mut partial = good.clone();
        let at = 14 + 20 + 6;
        partial[at..at + 2].copy_from_slice(&[0x12, 0x34]);
        // Without the flag, a bad checksum: invalid, dropped.
        assert!(b.rx(0, &partial).is_empty());
        assert_eq!(b.batch.drops_of(DropReason::CtInvalidChecksum), 1);
        let sent = b.rx_with(0, &partial, RxFlags::CSUM_NOT_READY, None);
        assert_eq!(sent, [(1, good)]);
        assert_eq!(b.shared.ct.len(), 1);
    }

    #[test]
    fn tagged_frames_pass_unfiltered_with_their_tag_put_back() {
        let mut b = Bridge::new("chain forward { policy drop; }");
        b.ports(1, &arp(BCAST, B));
        let untagged = ethernet(B, A, &a_to_b().udp(5000, 53, b"q"));
        assert!(b.rx(0, &untagged).is_empty(), "policy drop");
        let vlan = Vlan { tci: 0x2064, tpid: 0x8100 };
        let sent = b.rx_with(0, &untagged, RxFlags::empty(), Some(vlan));
        let want = [&untagged[..12], &[0x81, 0x00, 0x20, 0x64], &untagged[12..]].concat();
        assert_eq!(sent, [(1, want.clone())]);
        // A tag still in the frame: also unfiltered, forwarded as it is.
        assert_eq!(b.rx(0, &want), [(1, want)]);
        assert_eq!(b.shared.ct.len(), 0);
    }

    #[test]
    fn fragments_are_tracked_and_filtered_whole_then_sent_as_fragments() {
        let mut b = Bridge::new("chain forward { policy drop; ct state invalid drop; udp dport 53 accept; }");
        b.ports(1, &arp(BCAST, B));
        let v6 = PacketBuilder::v6("2001:2:0:3::2".parse().unwrap(), "2001:2:0:3::3".parse().unwrap());
        for (datagram, id) in
            [(v6.udp(5000, 53, &[6u8; 3000]), 0xabcd_0001u32), (a_to_b().udp(5000, 53, &[4u8; 3000]), 0)]
        {
            let pieces = proto::build::fragment(&datagram, 1400);
            let mut pieces: Vec<Vec<u8>> = pieces.into_iter().map(|f| ethernet(B, A, &f)).collect();
            if datagram[0] >> 4 == 6 {
                for f in &mut pieces {
                    f[14 + 40 + 4..14 + 40 + 8].copy_from_slice(&id.to_be_bytes());
                }
            }
            let last = pieces.pop().unwrap();
            for f in &pieces {
                assert!(b.rx(0, f).is_empty(), "held until the datagram is whole");
            }
            let sent = b.rx(0, &last);
            assert!(sent.len() >= 3, "{}", sent.len());
            let mut d = Defrag::new(DefragConfig::default());
            let mut whole = None;
            for (port, f) in &sent {
                assert_eq!(*port, 1);
                assert!(f.len() <= 14 + 1500);
                let p = parse_frame(f).unwrap();
                let frag = p.fragment.expect("sent as fragments");
                if datagram[0] >> 4 == 6 {
                    assert_eq!(frag.id, id);
                }
                if let Reassembly::Done(w) = d.push(Timestamp::from_secs(1), f, &p) {
                    whole = Some(w);
                }
            }
            assert_eq!(whole.map(|w| w[w.len() - 3000..].to_vec()), Some(datagram[datagram.len() - 3000..].to_vec()));
        }
        assert_eq!(b.shared.ct.len(), 2, "one connection each, tracked whole");
        // Every fragment but the last of each datagram was held; each datagram went once.
        assert_eq!((b.batch.held, b.batch.forwarded, b.batch.dropped), (4, 3, 0), "the ARP flooded");
    }

    #[test]
    fn a_reassembled_datagram_over_the_mtu_is_fragmented_again() {
        let mut b = Bridge::new("");
        b.ports(1, &arp(BCAST, B));
        let mut d = a_to_b().udp(5000, 53, &[7u8; 3000]);
        // With DF, as the kernel's reassembly leaves it when the largest fragment had DF: dropped.
        assert!(b.rx(0, &ethernet(B, A, &d)).is_empty());
        d[6] = 0;
        d[10..12].fill(0);
        let c = proto::checksum::internet(&d[..20]);
        d[10..12].copy_from_slice(&c.to_be_bytes());
        let big = ethernet(B, A, &d);
        let sent = b.rx(0, &big);
        assert_eq!(sent.len(), 3);
        for (port, f) in &sent {
            assert_eq!(*port, 1);
            assert!(f.len() <= 14 + 1500);
            assert_eq!(&f[..14], &big[..14]);
        }
        assert_eq!((b.batch.forwarded, b.batch.dropped), (2, 1), "the ARP and the datagram; the DF one");
        assert_eq!(b.batch.drops_of(DropReason::TooBig), 1);
    }

    #[test]
    fn a_super_frame_is_tracked_once_and_forwarded_whole_with_its_vnet_header() {
        use super::super::port::PartialCsum;
        use crate::gso::{Gso, GsoKind};
        let mut b = Bridge::new("chain forward { policy drop; ct state invalid drop; ip saddr 198.18.2.2 accept; }");
        b.ports(1, &arp(BCAST, B));
        let mut d = a_to_b().tcp(40000, 80, 1, 1, tcp_flags::ACK, 512, &[], &[3u8; 20_000]);
        d[36..38].copy_from_slice(&[0xab, 0xcd]); // partial: not the final checksum
        let f = ethernet(B, A, &d);
        let gso = Gso { kind: GsoKind::Tcp4, ecn: false, size: 1448, hdr_len: 128 };
        let rx = Offload { gso: Some(gso), csum: Some(PartialCsum { start: 34, offset: 16 }), data_valid: false };
        let flags = RxFlags::GSO.with(RxFlags::CSUM_NOT_READY);
        let sent = b.rx_offload(0, &f, flags, None, rx);
        // Whole, unchanged, described again from the packet (headers: 14 + 20 + 20).
        let want = Offload { gso: Some(Gso { hdr_len: 54, ..gso }), ..rx };
        assert_eq!(sent, [(1, f.clone(), want)]);
        assert_eq!((b.shared.ct.len(), b.batch.forwarded), (1, 2), "one connection; the ARP and one packet");
        // A tagged one passes unfiltered, its offsets moved by the tag put back.
        let vlan = Vlan { tci: 7, tpid: 0x8100 };
        let sent = b.rx_offload(0, &f, flags, Some(vlan), rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].2.csum, Some(PartialCsum { start: 38, offset: 16 }));
        // Pieces over the egress MTU: not cut here, dropped.
        b.links.mtus[1] = 1000;
        assert!(b.rx_offload(0, &f, flags, None, rx).is_empty());
        assert_eq!(b.batch.drops_of(DropReason::TooBig), 1);
        // A description that is not the packet's.
        let bad = Offload { csum: Some(PartialCsum { start: 34, offset: 6 }), ..rx };
        assert!(b.rx_offload(0, &f, flags, None, bad).is_empty());
        assert_eq!(b.batch.drops_of(DropReason::GsoMalformed), 1);
    }
}
