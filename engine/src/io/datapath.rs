//! Router mode: worker threads that receive from AF_PACKET ports and run every packet through the
//! router step, the rule set and conntrack (see `engine::route` for the order of steps).
//!
//! Each worker owns one port per interface (AF_PACKET, joined to a per-interface fanout group so
//! the kernel spreads flows over workers and reassembles IPv4 fragments first) and its own mio
//! loop. Fragments the kernel did not reassemble (IPv6 always, IPv4 with one worker) are
//! reassembled by the worker before the prerouting rules and conntrack see them, as
//! `nf_defrag_ipv4`/`nf_defrag_ipv6` do in the kernel, and the datagram is sent on fragmented
//! again where it exceeds the next link's MTU (IPv6 with the fragments' identification); a
//! fragment that does not complete its datagram counts as `held`. The conntrack table, the rule
//! set (an `ArcSwap`, replaced whole on reload), the registry and the router (routes behind an
//! `ArcSwap`, the neighbour cache) are shared.
//!
//! A received frame is borrowed from the ring: it is parsed, filtered at prerouting and tracked
//! there, a ring batch at a time ([`Conntrack::track_batch`]); a packet that is forwarded is then
//! copied into the worker's scratch buffer, where the router rewrites its Ethernet header and TTL,
//! and from there into the transmit ring (a super-frame: only its headers, see below). Frames whose checksum the sender left to offload
//! (`CSUM_NOT_READY`) get it completed in the scratch copy (conntrack, like the kernel's, does
//! not verify such a checksum, nor one the kernel reports verified), so the receiver gets one.
//!
//! **GSO super-frames** (peers with TSO/GSO on; the port's vnet header says how to cut one, see
//! `crate::gso`) are one packet here: parsed, filtered and tracked once (conntrack sees one TCP
//! segment with the whole payload; its checksum, partial, counts as verified as the kernel's
//! conntrack skips `CHECKSUM_PARTIAL` packets), routed once (one TTL decrement and IPv4 header
//! checksum update), and sent on whole with a vnet header that describes it again — GSO kind,
//! segment size, header length, and the partial checksum's offsets in the new frame (`NEEDS_CSUM`:
//! its checksum is *not* completed here) — so that the egress veth or NIC cuts it, or the
//! receiving stack takes it whole as it takes a GRO packet. Only its headers are copied to be
//! rewritten; the payload is sent from the receive buffer, gathered after them by `sendmsg`
//! ([`TxFrame::tail`]), so that its bytes are copied once from the kernel and once back, as few
//! times as a user-space forwarder can. The MTU is checked against the pieces.
//! Where it cannot go whole (its next hop unresolved, its pieces to be fragmented) the router cuts
//! it in software (`gso_segmented`). A super-frame whose vnet header does not describe its packet
//! (kind against protocol and family, checksum offsets against the L4 header) is dropped as
//! `gso_malformed`. Counted: `rx_gso` in the datapath counters, `rx_gso`/`tx_gso` per interface.
//!
//! **Counters** (all three modes). Every received frame ends one way: forwarded, delivered locally
//! (to ferrowall itself: ARP, neighbour discovery, pings, accepted input), held for reassembly,
//! or dropped under one [`DropReason`], so that `rx = forwarded + local + held + dropped` and
//! `dropped` is the sum over the reasons. A worker counts in its batch (plain integers), then
//! adds the batch to its own [`WorkerCounters`] (one writer: no locked
//! instruction, no cache line shared with another worker); `ferroctl stats` sums the workers'
//! ([`Shared::datapath_stats`]). Datagrams ferrowall originates are counted apart: `originated`,
//! or dropped under a reason of their own list.
#![allow(clippy::disallowed_methods)] // the datapath's clock: Instant::now, here only

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mio::Registry as MioRegistry;
use proto::packet::{self, Layer, Packet, ParseError, L4};
use smallvec::SmallVec;

use super::afpacket::AfPacket;
use super::port::{Frame, Offload, PartialCsum, Port, PortStats, RxFlags, Tx, TxFrame};
use super::worker::{self, forward_verdict, Batch, Pipeline, Served, Worker, RX_BATCH};
use crate::clock::Timestamp;
use crate::conntrack::{Conntrack, CtState, Invalid, Stats, Tracked};
use crate::defrag::{Defrag, DefragConfig, DefragError, Reassembly};
use crate::filter::{Hook, Meta, Reject, RuleSet, Verdict};
use crate::gso::{self, Gso};
use crate::route::{self, icmp, Forward, Hop, NeighDrop, Routed, Router, Rx, Split};
use crate::timeouts::Registry;

/// What the control plane and the workers share.
pub struct Shared {
    pub registry: Registry,
    pub ct: Conntrack,
    /// The running rule set; the control loop replaces it on reload.
    pub rules: ArcSwap<RuleSet>,
    /// The datapath's clock: nanoseconds since this instant.
    pub epoch: Instant,
    /// Each worker's datapath counters, registered as the worker is made; summed when shown.
    pub workers: parking_lot::Mutex<Vec<Arc<WorkerCounters>>>,
    /// Each worker's port counters, by (interface, worker), refreshed at every tick.
    pub ports: parking_lot::Mutex<BTreeMap<(String, usize), PortStats>>,
    /// Each worker's conntrack counters, by worker, refreshed at every tick.
    pub ct_stats: parking_lot::Mutex<BTreeMap<usize, Stats>>,
    /// How long a worker keeps looking at its rings after a frame before it waits for the next,
    /// while frames come closer together than that (`busy_poll`); zero: it waits at once.
    pub busy_poll: Duration,
}

impl Shared {
    /// The shared state of a daemon starting now (the clock's epoch).
    pub fn new(registry: Registry, ct: Conntrack, rules: RuleSet) -> Shared {
        Shared {
            registry,
            ct,
            rules: ArcSwap::from_pointee(rules),
            epoch: Instant::now(),
            workers: parking_lot::Mutex::new(Vec::new()),
            ports: parking_lot::Mutex::new(BTreeMap::new()),
            ct_stats: parking_lot::Mutex::new(BTreeMap::new()),
            busy_poll: Duration::ZERO,
        }
    }

    /// Now, on the engine's clock.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.epoch.elapsed().as_nanos() as u64)
    }

    /// A new worker's counters, registered for [`Shared::datapath_stats`].
    pub fn register_worker(&self) -> Arc<WorkerCounters> {
        let c = Arc::new(WorkerCounters::default());
        self.workers.lock().push(c.clone());
        c
    }

    /// The datapath counters summed over the workers. Each worker publishes its counts at the end
    /// of a batch, so a snapshot taken while traffic flows may be a batch behind on some counter;
    /// once traffic stops, `rx = forwarded + local + held + dropped` holds exactly.
    pub fn datapath_stats(&self) -> DatapathStats {
        let mut s = DatapathStats::default();
        for w in self.workers.lock().iter() {
            w.add_to(&mut s);
        }
        s
    }
}

/// Declares [`DropReason`] from one list: variant, counter name and doc, so that the enum, its
/// counter order ([`DropReason::ALL`]) and its names cannot drift apart.
macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal,)+) => {
        /// Why the datapath dropped a frame it received (or a datagram it originated): every way
        /// a frame can end other than forwarded, delivered locally or held for reassembly has a
        /// name and a counter (as pf's `PFRES_*` and Linux's `skb_drop_reason` do). Each worker
        /// counts them in its own [`WorkerCounters`]; `ferroctl stats` shows the sums.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropReason {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl DropReason {
            /// Every reason, in counter order (`reason as usize` is its index).
            pub const ALL: [DropReason; [$($name),+].len()] = [$(DropReason::$variant),+];
            /// How many reasons there are.
            pub const COUNT: usize = DropReason::ALL.len();

            /// The reason's counter name (snake_case, as `ferroctl stats` prints it).
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)+
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (with its VLAN tags).
    L2Truncated = "l2_truncated",
    /// Neither ARP, IPv4 nor IPv6 (router mode).
    UnsupportedEthertype = "unsupported_ethertype",
    /// Unicast to another MAC address (router mode; Linux's `PACKET_OTHERHOST`).
    OtherHost = "other_host",
    /// A group or all-zero source MAC address (bridge mode).
    BadSourceMac = "bad_source_mac",
    /// Received on a port that is not one of the router's interfaces.
    UnknownIface = "unknown_iface",
    /// An IP version neither 4 nor 6, or not the one the ethertype announces.
    IpBadVersion = "ip_bad_version",
    /// The frame ends before the IPv4 header, or before the total length says the datagram does.
    Ipv4Truncated = "ipv4_truncated",
    /// An IPv4 header length (IHL) under 5 words.
    Ipv4BadHeaderLength = "ipv4_bad_header_length",
    /// An IPv4 total length under the header length.
    Ipv4BadTotalLength = "ipv4_bad_total_length",
    /// A wrong IPv4 header checksum.
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// The frame ends before the IPv6 header, or before the payload length says it does.
    Ipv6Truncated = "ipv6_truncated",
    /// An IPv6 payload length of 0 (a jumbogram, which is not forwarded).
    Ipv6BadPayloadLength = "ipv6_bad_payload_length",
    /// An IPv6 extension header runs past the datagram.
    Ipv6ExtTruncated = "ipv6_ext_truncated",
    /// The datagram ends inside the TCP header.
    TcpTruncated = "tcp_truncated",
    /// A TCP data offset under 5 words or past the segment.
    TcpBadHeaderLength = "tcp_bad_header_length",
    /// The datagram ends inside the UDP (or UDP-Lite) header.
    UdpTruncated = "udp_truncated",
    /// The datagram ends inside the ICMP or ICMPv6 header.
    IcmpTruncated = "icmp_truncated",
    /// The datagram ends inside the SCTP common header.
    SctpTruncated = "sctp_truncated",
    /// The datagram ends inside the GRE header.
    GreTruncated = "gre_truncated",
    /// Another L4 header the parser refuses.
    L4Malformed = "l4_malformed",
    /// A fragment overlapping data held for its datagram (reassembly, bridge mode).
    ReassemblyOverlap = "reassembly_overlap",
    /// A fragment repeating data held for its datagram.
    ReassemblyDuplicate = "reassembly_duplicate",
    /// A fragment whose length contradicts its datagram's.
    ReassemblyBadLength = "reassembly_bad_length",
    /// A reassembled datagram would exceed the largest IP datagram.
    ReassemblyTooBig = "reassembly_too_big",
    /// Fragments disagreeing on ECN.
    ReassemblyEcn = "reassembly_ecn",
    /// Reassembly's memory limit was reached.
    ReassemblyMemoryLimit = "reassembly_memory_limit",
    /// A fragment reassembly could not take (inconsistent descriptor).
    ReassemblyMalformed = "reassembly_malformed",
    /// The prerouting chain dropped it.
    RuleDropPrerouting = "rule_drop_prerouting",
    /// The input chain dropped it (a packet to the router itself).
    RuleDropInput = "rule_drop_input",
    /// The forward chain dropped it.
    RuleDropForward = "rule_drop_forward",
    /// The output chain dropped it (a datagram the router originated).
    RuleDropOutput = "rule_drop_output",
    /// A `reject` in the prerouting chain.
    RuleRejectPrerouting = "rule_reject_prerouting",
    /// A `reject` in the input chain (answered).
    RuleRejectInput = "rule_reject_input",
    /// A `reject` in the forward chain (answered).
    RuleRejectForward = "rule_reject_forward",
    /// A `reject` in the output chain.
    RuleRejectOutput = "rule_reject_output",
    /// Dropped by the rules, conntrack having found it invalid: truncated L4 header.
    CtInvalidTruncated = "ct_invalid_truncated",
    /// Dropped by the rules, invalid: wrong L4 checksum.
    CtInvalidChecksum = "ct_invalid_checksum",
    /// Dropped by the rules, invalid: impossible TCP flags.
    CtInvalidTcpFlags = "ct_invalid_tcp_flags",
    /// Dropped by the rules, invalid: a TCP packet that cannot start a connection.
    CtInvalidTcpNew = "ct_invalid_tcp_new",
    /// Dropped by the rules, invalid: refused in the TCP connection's state.
    CtInvalidTcpState = "ct_invalid_tcp_state",
    /// Dropped by the rules, invalid: outside the TCP window.
    CtInvalidTcpWindow = "ct_invalid_tcp_window",
    /// Dropped by the rules, invalid: an unacceptable TCP RST.
    CtInvalidTcpRst = "ct_invalid_tcp_rst",
    /// Dropped by the rules, invalid: an ICMP type that cannot start a connection.
    CtInvalidIcmpType = "ct_invalid_icmp_type",
    /// Dropped by the rules, invalid: an ICMP error about no tracked connection.
    CtInvalidIcmpError = "ct_invalid_icmp_error",
    /// Dropped by the rules, invalid: malformed SCTP chunks.
    CtInvalidSctpChunks = "ct_invalid_sctp_chunks",
    /// Dropped by the rules, invalid: a wrong SCTP verification tag.
    CtInvalidSctpVtag = "ct_invalid_sctp_vtag",
    /// Dropped by the rules, invalid: an SCTP chunk refused in the association's state.
    CtInvalidSctpState = "ct_invalid_sctp_state",
    /// Dropped by the rules, invalid: a GRE packet the tracker refuses.
    CtInvalidGre = "ct_invalid_gre",
    /// Dropped by the rules, invalid: no tuple can be formed.
    CtInvalidNoTuple = "ct_invalid_no_tuple",
    /// Accepted, but the connection table is full and early drop found no unassured entry to
    /// make room (`insert_failed` in the conntrack counters).
    CtTableFull = "ct_table_full",
    /// A multicast, broadcast, unspecified or loopback source address.
    MartianSource = "martian_source",
    /// A loopback or unspecified destination, or an IPv6 link-local one not ours.
    MartianDestination = "martian_destination",
    /// No route to the destination (answered with net unreachable when the limiter allows).
    NoRoute = "no_route",
    /// TTL or hop limit exhausted (answered with time exceeded when the limiter allows).
    TtlExpired = "ttl_expired",
    /// Larger than the next link's MTU and not to be fragmented (answered when allowed).
    TooBig = "too_big",
    /// An IPv6 link-local source that would leave its link.
    BeyondScope = "beyond_scope",
    /// The neighbour cache had no room to hold it while resolving.
    NeighTableFull = "neigh_table_full",
    /// No source address to resolve the next hop from.
    NeighNoSource = "neigh_no_source",
    /// Too large to hold while resolving.
    NeighTooLarge = "neigh_too_large",
    /// The next hop never answered.
    NeighFailed = "neigh_failed",
    /// No address of ours to send an answer from.
    NoSourceAddress = "no_source_address",
    /// A datagram the router could not process as described (internal inconsistency).
    Malformed = "malformed",
    /// Bridge mode: the destination MAC lives behind the port the frame came in on.
    SamePort = "same_port",
    /// The egress port's transmit queue refused it (full ring, kernel error).
    TxFailed = "tx_failed",
    /// A GSO super-frame whose vnet header does not describe its packet (kind against protocol
    /// and family, checksum offsets against the L4 header, a fragment).
    GsoMalformed = "gso_malformed",
}

impl DropReason {
    /// The reason for a frame whose headers do not parse: `e`, from parsing `buf` whose IP header
    /// starts at `l3` (the version and length fields tell the IPv4 faults apart).
    pub fn unparsable(e: ParseError, buf: &[u8], l3: usize) -> DropReason {
        let version = buf.get(l3).map(|b| b >> 4);
        match e {
            ParseError::Truncated { layer, .. } | ParseError::Malformed { layer, .. }
                if matches!(layer, Layer::Ethernet | Layer::Vlan) =>
            {
                DropReason::L2Truncated
            }
            ParseError::NotIp { .. } => DropReason::UnsupportedEthertype,
            ParseError::BadIpChecksum => DropReason::Ipv4BadChecksum,
            ParseError::Malformed { layer: Layer::Ipv4, .. } if version != Some(4) => DropReason::IpBadVersion,
            ParseError::Malformed { layer: Layer::Ipv4, .. } => match buf.get(l3).map(|b| b & 0x0f) {
                Some(ihl) if ihl < 5 => DropReason::Ipv4BadHeaderLength,
                _ => DropReason::Ipv4BadTotalLength,
            },
            ParseError::Malformed { layer: Layer::Ipv6, .. } if version != Some(6) => DropReason::IpBadVersion,
            ParseError::Malformed { layer: Layer::Ipv6, .. } => DropReason::Ipv6BadPayloadLength,
            ParseError::Truncated { layer: Layer::Ipv4, .. } => DropReason::Ipv4Truncated,
            ParseError::Truncated { layer: Layer::Ipv6, .. } => DropReason::Ipv6Truncated,
            ParseError::Truncated { layer: Layer::Ipv6Ext, .. }
            | ParseError::Malformed { layer: Layer::Ipv6Ext, .. } => DropReason::Ipv6ExtTruncated,
            ParseError::Truncated { layer: Layer::Tcp, .. } => DropReason::TcpTruncated,
            ParseError::Malformed { layer: Layer::Tcp, .. } => DropReason::TcpBadHeaderLength,
            ParseError::Truncated { layer: Layer::Udp, .. } => DropReason::UdpTruncated,
            ParseError::Truncated { layer: Layer::Icmp, .. } => DropReason::IcmpTruncated,
            ParseError::Truncated { layer: Layer::Sctp, .. } => DropReason::SctpTruncated,
            ParseError::Truncated { layer: Layer::Gre, .. } => DropReason::GreTruncated,
            ParseError::Truncated { .. } | ParseError::Malformed { .. } => DropReason::L4Malformed,
        }
    }

    /// A packet conntrack found invalid for `why`, dropped by the rules.
    pub const fn ct_invalid(why: Invalid) -> DropReason {
        match why {
            Invalid::Truncated => DropReason::CtInvalidTruncated,
            Invalid::Checksum => DropReason::CtInvalidChecksum,
            Invalid::TcpFlags => DropReason::CtInvalidTcpFlags,
            Invalid::TcpNew => DropReason::CtInvalidTcpNew,
            Invalid::TcpState => DropReason::CtInvalidTcpState,
            Invalid::TcpWindow => DropReason::CtInvalidTcpWindow,
            Invalid::TcpRst => DropReason::CtInvalidTcpRst,
            Invalid::IcmpType => DropReason::CtInvalidIcmpType,
            Invalid::IcmpError => DropReason::CtInvalidIcmpError,
            Invalid::SctpChunks => DropReason::CtInvalidSctpChunks,
            Invalid::SctpVtag => DropReason::CtInvalidSctpVtag,
            Invalid::SctpState => DropReason::CtInvalidSctpState,
            Invalid::Gre => DropReason::CtInvalidGre,
            Invalid::NoTuple => DropReason::CtInvalidNoTuple,
        }
    }

    /// A fragment reassembly discarded.
    pub const fn reassembly(why: DefragError) -> DropReason {
        match why {
            DefragError::Overlap => DropReason::ReassemblyOverlap,
            DefragError::Duplicate => DropReason::ReassemblyDuplicate,
            DefragError::BadLength => DropReason::ReassemblyBadLength,
            DefragError::TooBig => DropReason::ReassemblyTooBig,
            DefragError::Ecn => DropReason::ReassemblyEcn,
            DefragError::MemoryLimit => DropReason::ReassemblyMemoryLimit,
            DefragError::Malformed => DropReason::ReassemblyMalformed,
        }
    }

    /// The rules' `verdict` at `hook` refused a packet that conntrack classified with `invalid`
    /// (its reason, when it was invalid): a plain drop of an invalid packet is counted under the
    /// invalid reason, any other under the hook's rule drop or reject.
    pub fn rules(hook: Hook, verdict: Verdict, invalid: Option<Invalid>) -> DropReason {
        let reject = matches!(verdict, Verdict::Reject(_));
        if let (false, Some(why)) = (reject, invalid) {
            return DropReason::ct_invalid(why);
        }
        match (hook, reject) {
            (Hook::Prerouting, false) => DropReason::RuleDropPrerouting,
            (Hook::Input, false) => DropReason::RuleDropInput,
            (Hook::Forward, false) => DropReason::RuleDropForward,
            (Hook::Output, false) => DropReason::RuleDropOutput,
            (Hook::Prerouting, true) => DropReason::RuleRejectPrerouting,
            (Hook::Input, true) => DropReason::RuleRejectInput,
            (Hook::Forward, true) => DropReason::RuleRejectForward,
            (Hook::Output, true) => DropReason::RuleRejectOutput,
        }
    }

    /// The router's reason `r` for dropping `frame` (whose parse error, if that is the reason,
    /// is named by [`DropReason::unparsable`]).
    pub fn routed(r: route::DropReason, frame: &[u8]) -> DropReason {
        match r {
            route::DropReason::Unparsable(e) => {
                let l3 = packet::parse_ethernet(frame).map_or(ETH, |eth| eth.l3_offset);
                DropReason::unparsable(e, frame, l3)
            }
            route::DropReason::UnsupportedEthertype => DropReason::UnsupportedEthertype,
            route::DropReason::Malformed => DropReason::Malformed,
            route::DropReason::UnknownIface => DropReason::UnknownIface,
            route::DropReason::OtherHost => DropReason::OtherHost,
            route::DropReason::MartianSource => DropReason::MartianSource,
            route::DropReason::MartianDestination => DropReason::MartianDestination,
            route::DropReason::NoRoute => DropReason::NoRoute,
            route::DropReason::TtlExpired => DropReason::TtlExpired,
            route::DropReason::TooBig => DropReason::TooBig,
            route::DropReason::BeyondScope => DropReason::BeyondScope,
            route::DropReason::Filtered => DropReason::RuleDropForward,
            route::DropReason::Neighbour(NeighDrop::TableFull) => DropReason::NeighTableFull,
            route::DropReason::Neighbour(NeighDrop::NoSourceAddress) => DropReason::NeighNoSource,
            route::DropReason::Neighbour(NeighDrop::TooLarge) => DropReason::NeighTooLarge,
            route::DropReason::NeighbourFailed => DropReason::NeighFailed,
            route::DropReason::NoSourceAddress => DropReason::NoSourceAddress,
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Ethernet header length (untagged).
const ETH: usize = 14;

/// One worker's datapath counters. Only that worker writes them, once per batch (a load and a
/// store, no locked instruction: there is one writer); the control plane reads every worker's and
/// sums them. On cache lines of their own, so workers never share one.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerCounters {
    rx: AtomicU64,
    rx_gso: AtomicU64,
    gso_segmented: AtomicU64,
    forwarded: AtomicU64,
    local: AtomicU64,
    held: AtomicU64,
    originated: AtomicU64,
    /// Received frames dropped, by [`DropReason`].
    drops: [AtomicU64; DropReason::COUNT],
    /// Datagrams the datapath originated (ICMP errors, echo replies, resets) and then dropped.
    originate_drops: [AtomicU64; DropReason::COUNT],
}

impl Default for WorkerCounters {
    fn default() -> WorkerCounters {
        let zero = || AtomicU64::new(0);
        WorkerCounters {
            rx: zero(),
            rx_gso: zero(),
            gso_segmented: zero(),
            forwarded: zero(),
            local: zero(),
            held: zero(),
            originated: zero(),
            drops: std::array::from_fn(|_| zero()),
            originate_drops: std::array::from_fn(|_| zero()),
        }
    }
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

impl WorkerCounters {
    /// Adds one batch's counts (the owning worker only).
    pub(super) fn publish(&self, b: &Batch) {
        bump(&self.rx, b.rx);
        bump(&self.rx_gso, b.rx_gso);
        bump(&self.gso_segmented, b.gso_segmented);
        bump(&self.forwarded, b.forwarded);
        bump(&self.local, b.local);
        bump(&self.held, b.held);
        bump(&self.originated, b.originated);
        if b.dropped > 0 {
            for (c, &n) in self.drops.iter().zip(&b.drops) {
                bump(c, n);
            }
        }
        for (c, &n) in self.originate_drops.iter().zip(&b.originate_drops) {
            bump(c, n);
        }
    }

    fn add_to(&self, s: &mut DatapathStats) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.rx += n(&self.rx);
        s.rx_gso += n(&self.rx_gso);
        s.gso_segmented += n(&self.gso_segmented);
        s.forwarded += n(&self.forwarded);
        s.local += n(&self.local);
        s.held += n(&self.held);
        s.originated += n(&self.originated);
        for (i, c) in self.drops.iter().enumerate() {
            s.drops[i] += n(c);
        }
        for (i, c) in self.originate_drops.iter().enumerate() {
            s.originate_drops[i] += n(c);
        }
    }
}

/// The datapath's counters, summed over the workers: every received frame is forwarded,
/// delivered locally (to ferrowall itself: ARP, neighbour discovery, pings, accepted input, link-local
/// control frames in bridge mode), held for reassembly, or dropped under one [`DropReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathStats {
    pub rx: u64,
    /// GSO super-frames among `rx` (each counted once, like any frame, in its outcome).
    pub rx_gso: u64,
    /// Super-frames the datapath cut in software instead of passing them on whole.
    pub gso_segmented: u64,
    pub forwarded: u64,
    pub local: u64,
    pub held: u64,
    pub originated: u64,
    /// Received frames dropped, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::COUNT],
    /// Originated datagrams dropped, indexed like [`DropReason::ALL`].
    pub originate_drops: [u64; DropReason::COUNT],
}

impl Default for DatapathStats {
    fn default() -> DatapathStats {
        DatapathStats {
            rx: 0,
            rx_gso: 0,
            gso_segmented: 0,
            forwarded: 0,
            local: 0,
            held: 0,
            originated: 0,
            drops: [0; DropReason::COUNT],
            originate_drops: [0; DropReason::COUNT],
        }
    }
}

impl DatapathStats {
    /// Received frames dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Originated datagrams dropped, all reasons.
    pub fn originate_dropped(&self) -> u64 {
        self.originate_drops.iter().sum()
    }

    /// Received frames dropped for `r`.
    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

/// Three lines, the totals (and the GSO super-frames among them) and the nonzero reasons of each
/// kind of drop:
///
/// ```text
/// datapath: rx=120 forwarded=100 local=4 held=0 dropped=16 originated=2 originate_dropped=1 rx_gso=30 gso_segmented=0
/// datapath dropped: ipv4_bad_checksum=6 rule_drop_forward=10
/// datapath originate_dropped: no_route=1
/// ```
impl std::fmt::Display for DatapathStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "datapath: rx={} forwarded={} local={} held={} dropped={} originated={} originate_dropped={} rx_gso={} \
             gso_segmented={}",
            self.rx,
            self.forwarded,
            self.local,
            self.held,
            self.dropped(),
            self.originated,
            self.originate_dropped(),
            self.rx_gso,
            self.gso_segmented
        )?;
        for (what, counts) in [("dropped", &self.drops), ("originate_dropped", &self.originate_drops)] {
            write!(f, "datapath {what}:")?;
            for (r, n) in DropReason::ALL.iter().zip(counts) {
                if *n > 0 {
                    write!(f, " {}={n}", r.name())?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Router mode's part of a worker: the shared router and the worker's scratch space.
struct Routing {
    router: Arc<Router>,
    scratch: Vec<u8>,
    /// Fragments waiting for the rest of their datagram (IPv6 always; IPv4 with one worker, the
    /// fanout group of several having reassembled it in the kernel already).
    defrag: Defrag,
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
        let w = Worker::new(i, ports, shared.clone());
        let routing = Routing {
            router: router.clone(),
            scratch: Vec::with_capacity(65_536 + 64),
            defrag: Defrag::new(DefragConfig::default()),
        };
        handles.push(worker::spawn('w', "worker", w, routing, stop.clone()));
    }
    Ok(handles)
}

impl Pipeline for Routing {
    type Port = AfPacket;

    fn serve(&mut self, w: &mut Worker<AfPacket>, _: &MioRegistry) -> io::Result<Served> {
        worker::serve_all(w.ports.len(), |at| self.serve_port(w, at))
    }

    /// Neighbour retries and failures; reassembly's timeouts.
    fn tick(&mut self, w: &mut Worker<AfPacket>, now: Timestamp) {
        self.defrag.expire(now);
        let t = self.router.tick(now);
        for f in t.frames {
            if let Some(p) = w.ports.get_mut(f.iface) {
                let _ = p.tx_plain(&[&f.frame]);
            }
        }
        let mut batch = Batch::default();
        for e in t.errors {
            originate(w, &self.router, now, &e, &mut batch);
        }
        w.counters.publish(&batch);
    }
}

impl Routing {
    /// Receives and handles one batch from port `at`; returns how many frames it had.
    ///
    /// In two passes over the ring's batch, tracking the whole batch with
    /// [`Conntrack::track_batch`] (whose prefetches overlap the packets' cache misses): first
    /// every frame goes through the router's receive step and the prerouting rules, straight from
    /// the ring; then conntrack tracks the IP packets in order, and each packet's verdict, routing
    /// and transmission run as conntrack hands it over, before the next packet is tracked (a
    /// flow's second packet finds the connection its first one confirmed).
    fn serve_port(&mut self, w: &mut Worker<AfPacket>, at: usize) -> io::Result<usize> {
        let Routing { router, scratch, defrag } = self;
        let Worker { ports, shared, stats, .. } = w;
        let (before, rest) = ports.split_at_mut(at);
        let Some((port, after)) = rest.split_first_mut() else { return Ok(0) };
        let mut batch = Batch::default();
        let mut originate_later: Vec<Vec<u8>> = Vec::new();
        let n = port.rx_batch(RX_BATCH, &mut |frames, this| {
            let now = shared.now();
            let rules = shared.rules.load();
            let iif = router.ifaces().get(at).map_or("", |i| i.name.as_str());
            let mut out = |to: usize, frame: TxFrame<'_>| worker::send(before, this, after, at, to, frame);
            let cx = Cx { shared, router, rules: &rules, now, at, iif };
            // Pass 1: the IP packets to track; for each, its frame, GSO description and `notrack`.
            // On the stack: a ring batch is at most RX_BATCH frames (with V2 slots often one), and
            // the heap would cost two allocations a batch.
            let mut ip: SmallVec<[(&[u8], Packet); RX_BATCH]> = SmallVec::new();
            let mut meta: SmallVec<[(&Frame<'_>, Option<Gso>, bool); RX_BATCH]> = SmallVec::new();
            for f in frames {
                batch.rx += 1;
                batch.rx_gso += u64::from(f.flags.contains(RxFlags::GSO));
                match receive(router, defrag, &rules, now, at, iif, f, &mut out, &mut batch) {
                    Received::Packet(p, gso, notrack) => {
                        ip.push((f.data, p));
                        meta.push((f, gso, notrack));
                    }
                    Received::Reassembled(whole, notrack) => {
                        // In order: the packets before it first, then the datagram, alone.
                        cx.track_and_handle(stats, scratch, &ip, &meta, &mut out, &mut batch, &mut originate_later);
                        ip.clear();
                        meta.clear();
                        let frame = Frame {
                            data: &whole.frame,
                            wire_len: whole.frame.len() as u32,
                            flags: RxFlags::empty(),
                            vlan: None,
                            timestamp_ns: f.timestamp_ns,
                            offload: Offload::NONE,
                        };
                        let t = if notrack {
                            Tracked::untracked()
                        } else {
                            shared.ct.track(now, &whole.frame, &whole.p, stats)
                        };
                        let (p, id) = (whole.p, Some(whole.id));
                        cx.handle(stats, scratch, &frame, p, None, id, t, &mut out, &mut batch, &mut originate_later);
                    }
                    Received::Done => {}
                }
            }
            // Pass 2: runs of tracked packets through `track_batch`; untracked ones between them.
            cx.track_and_handle(stats, scratch, &ip, &meta, &mut out, &mut batch, &mut originate_later);
        })?;
        // Datagrams we originate (echo replies, ICMP errors, resets) take the output path.
        let now = w.shared.now();
        for d in originate_later {
            originate(w, &self.router, now, &d, &mut batch);
        }
        w.counters.publish(&batch);
        Ok(n)
    }
}

/// A datagram the router originates: tracked (an ICMP error is RELATED, an echo reply
/// ESTABLISHED), the output chain, then routed and framed. Counted in `batch` as originated, or
/// under the reason it was dropped for.
fn originate(w: &mut Worker<AfPacket>, router: &Router, now: Timestamp, datagram: &[u8], batch: &mut Batch) {
    let p = match packet::parse_ip(datagram, 0) {
        Ok(p) => p,
        Err(e) => return batch.originate_drop(DropReason::unparsable(e, datagram, 0)),
    };
    let rules = w.shared.rules.load();
    let mut t = w.shared.ct.track(now, datagram, &p, &mut w.stats);
    let d = rules.eval(Hook::Output, &Meta { iif: "", oif: "" }, &p, t.state);
    if !matches!(d.verdict, Verdict::Accept) {
        return batch.originate_drop(DropReason::rules(Hook::Output, d.verdict, t.invalid));
    }
    if w.shared.ct.confirm(&mut t, &mut w.stats).is_err() {
        return batch.originate_drop(DropReason::CtTableFull);
    }
    match router.send_local(now, datagram) {
        Ok(frames) => {
            let mut sent = true;
            for f in frames {
                sent &= w.ports.get_mut(f.iface).is_some_and(|port| matches!(port.tx_plain(&[&f.frame]), Ok(1)));
            }
            if sent {
                batch.originated += 1;
            } else {
                batch.originate_drop(DropReason::TxFailed);
            }
        }
        Err(why) => batch.originate_drop(DropReason::routed(why, datagram)),
    }
}

/// The GSO description in the vnet header `offload` of a received frame (parsed as `p`, from the
/// frame's first byte), checked against the packet: `Ok(None)` for a frame that is not a
/// super-frame, `Err` when the header does not describe the packet (a kind that is not its
/// protocol and family, a fragment, a partial checksum that is missing or not its L4 header's).
pub(crate) fn gso_of(offload: &Offload, p: &Packet) -> Result<Option<Gso>, DropReason> {
    let Some(g) = offload.gso else { return Ok(None) };
    let csum_ok =
        |c: PartialCsum| usize::from(c.start) == p.l4_offset && gso::checksum_field(p) == Some(usize::from(c.offset));
    if !g.fits(p) || !offload.csum.is_some_and(csum_ok) {
        return Err(DropReason::GsoMalformed);
    }
    Ok(Some(g))
}

/// The vnet header to send super-packet `p` (described by `g`) with from a frame that starts at
/// `start` of the buffer `p` was parsed from: its offsets counted from there, its checksum partial.
pub(crate) fn gso_offload(g: &Gso, p: &Packet, start: usize) -> Offload {
    let l4 = p.l4_offset - start;
    Offload {
        gso: Some(Gso { hdr_len: (l4 + gso::l4_header_len(p)) as u16, ..*g }),
        csum: Some(PartialCsum { start: l4 as u16, offset: gso::checksum_field(p).unwrap_or(0) as u16 }),
        data_valid: false,
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

/// The IP datagram of `p` (`datagram`, cut from the buffer `p` was parsed from) with its L4
/// checksum completed when it is `partial` (in a copy; as it is otherwise): what a reject of it
/// must look at, since the kernel's `nf_reject` takes a `CHECKSUM_PARTIAL` packet's checksum for
/// good where ours would verify the bytes (and its answer quotes them).
pub(crate) fn completed<'a>(datagram: &'a [u8], partial: bool, p: &Packet) -> Cow<'a, [u8]> {
    if !partial {
        return Cow::Borrowed(datagram);
    }
    let mut d = datagram.to_vec();
    let base = p.l3_offset;
    let q = Packet { l3_offset: 0, l4_offset: p.l4_offset - base, end: p.end - base, ..*p };
    complete_checksum(&mut d, &q);
    Cow::Owned(d)
}

/// The answer a `reject` sends for `datagram` (an IP datagram, its checksum `partial` or not),
/// from our address facing its sender.
fn reject_answer(
    router: &Router,
    in_iface: usize,
    datagram: &[u8],
    partial: bool,
    p: &Packet,
    kind: Reject,
) -> Option<Vec<u8>> {
    let datagram = &completed(datagram, partial, p)[..];
    match kind {
        Reject::TcpReset => icmp::tcp_reset(datagram),
        Reject::IcmpPortUnreachable | Reject::Icmpv6PortUnreachable => {
            let from = router.address_on(in_iface, p.family, &p.src)?;
            icmp::port_unreachable(datagram, from)
        }
    }
}

/// A datagram reassembled from fragments: its frame (the completing fragment's bytes before
/// the IP header, then the datagram), the packet parsed from it, and the fragments'
/// identification (to fragment it again where it exceeds a link's MTU).
pub(super) struct Whole {
    pub frame: Vec<u8>,
    pub p: Packet,
    pub id: u32,
}

/// What reassembly made of a received packet.
pub(super) enum Defragged {
    /// Not a fragment (or one to pass on as it is): the packet itself.
    Packet,
    /// The datagram this fragment completed.
    Whole(Whole),
    /// Held until the rest of its datagram comes, or dropped: counted in the batch.
    Consumed,
}

/// Reassembly, the same in every mode: fragments are tracked and filtered as their whole
/// datagram, as `nf_defrag_ipv4`/`nf_defrag_ipv6` have the kernel's conntrack see them. `p` is
/// parsed from `frame`; a held fragment counts as `held`, a dropped one under its reason.
pub(super) fn reassemble(
    defrag: &mut Defrag,
    now: Timestamp,
    frame: &[u8],
    p: &Packet,
    batch: &mut Batch,
) -> Defragged {
    let Some(frag) = p.fragment else { return Defragged::Packet };
    match defrag.push(now, frame, p) {
        Reassembly::Whole => Defragged::Packet,
        Reassembly::Held => {
            batch.held += 1;
            Defragged::Consumed
        }
        Reassembly::Dropped(why) => {
            batch.drop(DropReason::reassembly(why));
            Defragged::Consumed
        }
        Reassembly::Done(datagram) => {
            let mut whole = Vec::with_capacity(p.l3_offset + datagram.len());
            whole.extend_from_slice(&frame[..p.l3_offset]);
            whole.extend_from_slice(&datagram);
            match packet::parse_ip(&whole, p.l3_offset) {
                Ok(p) => Defragged::Whole(Whole { frame: whole, p, id: frag.id }),
                Err(e) => {
                    batch.drop(DropReason::unparsable(e, &whole, p.l3_offset));
                    Defragged::Consumed
                }
            }
        }
    }
}

/// What [`receive`] made of a frame.
enum Received {
    /// An IP packet to track, with its GSO description and whether `notrack` applies.
    Packet(Packet, Option<Gso>, bool),
    /// A datagram its last fragment completed, to track and handle alone, and whether `notrack`
    /// applies.
    Reassembled(Whole, bool),
    /// Consumed (ARP, neighbour discovery), held for reassembly or dropped; counted.
    Done,
}

/// The receive step of a frame from port `at`: the router's (ARP and neighbour discovery are
/// answered through `out`), reassembly (fragments are tracked and filtered as their whole
/// datagram, as `nf_defrag_ipv4`/`nf_defrag_ipv6` have the kernel's conntrack see them), then
/// the prerouting rules. Counted in `batch` unless it is a packet to track.
#[allow(clippy::too_many_arguments)]
fn receive(
    router: &Router,
    defrag: &mut Defrag,
    rules: &RuleSet,
    now: Timestamp,
    at: usize,
    iif: &str,
    f: &Frame<'_>,
    out: &mut dyn FnMut(usize, TxFrame<'_>) -> bool,
    batch: &mut Batch,
) -> Received {
    let (frame, flags) = (f.data, f.flags);
    let mut p = match router.receive(now, at, frame) {
        Rx::Ip(p) => p,
        Rx::Handled(frames) => {
            // ARP and neighbour discovery: consumed by the router itself.
            batch.local += 1;
            for f in frames {
                out(f.iface, TxFrame::plain(&f.frame));
            }
            return Received::Done;
        }
        Rx::Drop(why) => {
            batch.drop(DropReason::routed(why, frame));
            return Received::Done;
        }
    };
    let whole = match reassemble(defrag, now, frame, &p, batch) {
        Defragged::Packet => None,
        Defragged::Whole(w) => Some(w),
        Defragged::Consumed => return Received::Done,
    };
    let gso = match whole {
        Some(ref w) => {
            // Conntrack verifies its checksum: nothing verified the datagram whole.
            p = w.p;
            None
        }
        None => match gso_of(&f.offload, &p) {
            Ok(g) => {
                // A checksum the kernel verified, one it left for us to complete (done in the
                // copy that is forwarded), or a super-frame's, left to the egress, is not
                // verified by conntrack, as the kernel's own conntrack skips
                // CHECKSUM_UNNECESSARY and CHECKSUM_PARTIAL packets.
                p.l4_checksum_verified = flags.contains(RxFlags::CSUM_VALID) || flags.contains(RxFlags::CSUM_NOT_READY);
                g
            }
            Err(why) => {
                batch.drop(why);
                return Received::Done;
            }
        },
    };
    let pre = rules.eval(Hook::Prerouting, &Meta { iif, oif: "" }, &p, CtState::Untracked);
    if !matches!(pre.verdict, Verdict::Accept) {
        batch.drop(DropReason::rules(Hook::Prerouting, pre.verdict, None));
        return Received::Done;
    }
    match whole {
        Some(w) => Received::Reassembled(w, pre.notrack),
        None => Received::Packet(p, gso, pre.notrack),
    }
}

/// What every packet of a received batch shares.
struct Cx<'a> {
    shared: &'a Shared,
    router: &'a Router,
    rules: &'a RuleSet,
    now: Timestamp,
    /// The port (interface index) the batch came in on, and its name.
    at: usize,
    iif: &'a str,
}

impl Cx<'_> {
    /// Pass 2 over the packets [`receive`] kept (`ip`, with their frames, GSO descriptions and
    /// `notrack` in `meta`): runs of tracked packets through [`Conntrack::track_batch`], untracked
    /// ones between them, each handled as conntrack hands it over.
    #[allow(clippy::too_many_arguments)]
    fn track_and_handle(
        &self,
        stats: &mut Stats,
        scratch: &mut Vec<u8>,
        ip: &[(&[u8], Packet)],
        meta: &[(&Frame<'_>, Option<Gso>, bool)],
        out: &mut dyn FnMut(usize, TxFrame<'_>) -> bool,
        batch: &mut Batch,
        originate: &mut Vec<Vec<u8>>,
    ) {
        let mut after_track = |k: usize, t: Tracked, stats: &mut Stats| {
            let (f, gso, _) = meta[k];
            self.handle(stats, scratch, f, ip[k].1, gso, None, t, out, batch, originate);
        };
        let mut i = 0;
        while i < ip.len() {
            if meta[i].2 {
                after_track(i, Tracked::untracked(), stats);
                i += 1;
                continue;
            }
            let run = meta[i..].iter().position(|m| m.2).map_or(ip.len(), |r| i + r);
            self.shared.ct.track_batch(self.now, &ip[i..run], stats, |k, t, stats| after_track(i + k, t, stats));
            i = run;
        }
    }

    /// The rest of a received packet's journey once conntrack has classified it (`t`): routing,
    /// the input or forward rules, confirmation, transmission. Counted in `batch` as forwarded,
    /// local or dropped under its reason. `out` sends a frame on a port and says whether the port
    /// took it.
    #[allow(clippy::too_many_arguments)]
    fn handle(
        &self,
        stats: &mut Stats,
        scratch: &mut Vec<u8>,
        f: &Frame<'_>,
        p: Packet,
        gso: Option<Gso>,
        reassembled: Option<u32>,
        mut t: Tracked,
        out: &mut dyn FnMut(usize, TxFrame<'_>) -> bool,
        batch: &mut Batch,
        originate: &mut Vec<Vec<u8>>,
    ) {
        let Cx { shared, router, rules, now, at, iif } = *self;
        // Work on a copy: the router rewrites headers in place, and a partial checksum is
        // completed — but not a super-frame's, which stays partial for whoever cuts it. Of a
        // super-frame only the headers are copied: its payload (up to 64 KB) goes out from where
        // it was received (`tail`), unless it has to be answered, cut or held (see `Split`).
        let copied = match (gso, p.l4) {
            (Some(_), L4::Tcp(t)) => p.l4_offset + usize::from(t.header_len),
            (Some(_), L4::Udp(_)) => p.l4_offset + 8,
            _ => f.data.len(),
        }
        .min(f.data.len());
        scratch.clear();
        scratch.extend_from_slice(&f.data[..copied]);
        let mut tail = &f.data[copied..];
        if f.flags.contains(RxFlags::CSUM_NOT_READY) && gso.is_none() {
            complete_checksum(scratch, &p);
        }
        let datagram_range = p.l3_offset..p.end;
        let decide = |hook: Hook, oif: &str, t: &Tracked| rules.eval(hook, &Meta { iif, oif }, &p, t.state);
        let routed = router.route(at, &p);
        if !matches!(routed, Routed::Forward(_)) {
            // Answered or dropped here: every such path reads the datagram whole.
            scratch.extend_from_slice(tail);
            tail = &[];
        }
        match routed {
            Routed::Local { .. } | Routed::Broadcast => {
                let d = decide(Hook::Input, "", &t);
                match d.verdict {
                    Verdict::Accept => {
                        let _ = shared.ct.confirm(&mut t, stats);
                        batch.local += 1;
                        match router.local(scratch, &p) {
                            Forward::Reply(r) | Forward::Icmp(_, r) => originate.push(r),
                            _ => {}
                        }
                    }
                    Verdict::Drop => batch.drop(DropReason::rules(Hook::Input, d.verdict, t.invalid)),
                    Verdict::Reject(kind) => {
                        batch.drop(DropReason::rules(Hook::Input, d.verdict, t.invalid));
                        let partial = gso.is_some();
                        originate.extend(reject_answer(router, at, &scratch[datagram_range], partial, &p, kind));
                    }
                }
            }
            Routed::Forward(hop) => {
                let how = (gso, reassembled);
                forward(shared, router, stats, scratch, tail, now, at, &p, how, hop, t, decide, out, batch, originate)
            }
            Routed::Unreachable => {
                batch.drop(DropReason::NoRoute);
                originate.extend(router.error(now, icmp::IcmpKind::NetUnreachable, &scratch[datagram_range], Some(at)));
            }
            Routed::Drop(why) => batch.drop(DropReason::routed(why, scratch)),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    shared: &Shared,
    router: &Router,
    stats: &mut Stats,
    scratch: &mut [u8],
    tail: &[u8],
    now: Timestamp,
    at: usize,
    p: &Packet,
    (gso, reassembled): (Option<Gso>, Option<u32>),
    hop: Hop,
    mut t: Tracked,
    decide: impl Fn(Hook, &str, &Tracked) -> crate::filter::Decision,
    out: &mut dyn FnMut(usize, TxFrame<'_>) -> bool,
    batch: &mut Batch,
    originate: &mut Vec<Vec<u8>>,
) {
    let oif = router.ifaces().get(hop.iface).map_or("", |i| i.name.as_str());
    let d = decide(Hook::Forward, oif, &t);
    let partial = gso.is_some();
    // The datagram is `scratch[l3..held]` then `tail` (empty unless a super-frame's payload was
    // left in the receive buffer).
    let (l3, end) = (p.l3_offset, p.end);
    let held = end.min(scratch.len());
    let tail = &tail[..end - held];
    let reject = |kind, _: &mut Stats, _: &mut Batch| {
        let datagram = route::joined(&scratch[l3..held], tail);
        originate.extend(reject_answer(router, at, &datagram, partial, p, kind))
    };
    if !forward_verdict(shared, now, &d, &mut t, stats, batch, reject) {
        return;
    }
    match router.transmit_gso(now, at, Split { head: &mut *scratch, tail }, p, hop, gso.as_ref(), reassembled) {
        Forward::Transmit { iface, start, end, .. } => {
            // A super-frame goes whole, described again for its new frame: its headers from the
            // copy, its payload from where it was received.
            let offload = gso.map_or(Offload::NONE, |g| gso_offload(&g, p, start));
            debug_assert_eq!(end, p.end, "a packet goes out whole");
            let frame = TxFrame { data: &scratch[start..held], tail, offload };
            if out(iface, frame) {
                batch.forwarded += 1;
            } else {
                batch.drop(DropReason::TxFailed);
            }
        }
        Forward::Frames { iface, frames } => {
            batch.gso_segmented += u64::from(gso.is_some());
            let mut sent = true;
            for f in &frames {
                sent &= out(iface, TxFrame::plain(f));
            }
            if sent {
                batch.forwarded += 1;
            } else {
                batch.drop(DropReason::TxFailed);
            }
        }
        Forward::Queued { iface, request } => {
            // Held by the neighbour cache: forwarded as far as this frame goes (a failed
            // resolution is the neighbour cache's to answer).
            batch.gso_segmented += u64::from(gso.is_some());
            if let Some(r) = request {
                out(iface, TxFrame::plain(&r));
            }
            batch.forwarded += 1;
        }
        Forward::Icmp(why, e) => {
            batch.drop(DropReason::routed(why, scratch));
            originate.push(e);
        }
        // `transmit` answers neither with an echo reply nor with local delivery.
        Forward::Reply(e) => {
            batch.drop(DropReason::Malformed);
            originate.push(e);
        }
        Forward::Deliver => batch.drop(DropReason::Malformed),
        Forward::Drop(why) => batch.drop(DropReason::routed(why, scratch)),
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use proto::build::{ethernet, PacketBuilder};
    use proto::packet::{parse_frame, tcp_flags};

    use super::*;

    #[test]
    fn every_reason_has_its_index_and_a_unique_name() {
        let mut names = HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(names.insert(r.name()), "{} twice", r.name());
            assert!(r.name().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{r}");
        }
        for why in Invalid::ALL {
            assert_eq!(DropReason::ct_invalid(why).name(), format!("ct_invalid_{}", why.name()));
        }
        for why in DefragError::ALL {
            assert_eq!(DropReason::reassembly(why).name(), format!("reassembly_{}", why.name()));
        }
    }

    /// Each header fault of a received frame, by name.
    #[test]
    fn parse_errors_are_named_by_header_and_fault() {
        let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1));
        let syn = b.tcp(1000, 80, 1, 0, tcp_flags::SYN, 1000, &[], &[]);
        let good = ethernet(mac_a, mac_b, &syn);
        assert!(parse_frame(&good).is_ok());
        let why = |f: &[u8]| match parse_frame(f) {
            Ok(_) => None,
            Err(e) => Some(DropReason::unparsable(e, f, ETH)),
        };
        let edit = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            f
        };
        assert_eq!(why(&good[..10]), Some(DropReason::L2Truncated));
        assert_eq!(why(&good[..14 + 12]), Some(DropReason::Ipv4Truncated));
        assert_eq!(why(&good[..good.len() - 4]), Some(DropReason::Ipv4Truncated), "total length past the end");
        assert_eq!(why(&edit(14, 0x55)), Some(DropReason::IpBadVersion));
        assert_eq!(why(&edit(14, 0x44)), Some(DropReason::Ipv4BadHeaderLength));
        assert_eq!(why(&edit(17, 10)), Some(DropReason::Ipv4BadTotalLength), "total length 10 < 20");
        assert_eq!(why(&edit(24, 0x77)), Some(DropReason::Ipv4BadChecksum));
        // A TCP header cut short, with lengths and checksum made consistent.
        let short = &syn[..20 + 12];
        let mut cut = short.to_vec();
        cut[2..4].copy_from_slice(&32u16.to_be_bytes());
        cut[10..12].fill(0);
        let c = proto::checksum::internet(&cut[..20]);
        cut[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(why(&ethernet(mac_a, mac_b, &cut)), Some(DropReason::TcpTruncated));
        let mut bad_off = syn.clone();
        bad_off[20 + 12] = 0x20;
        assert_eq!(why(&ethernet(mac_a, mac_b, &bad_off)), Some(DropReason::TcpBadHeaderLength));
        let v6 = PacketBuilder::v6("2001:2::1".parse().unwrap(), "2001:2::2".parse().unwrap()).udp(1, 2, b"x");
        let mut v6f = ethernet(mac_a, mac_b, &v6);
        v6f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(why(&v6f[..14 + 30]), Some(DropReason::Ipv6Truncated));
        let mut jumbo = v6f.clone();
        jumbo[14 + 4..14 + 6].fill(0);
        assert_eq!(why(&jumbo), Some(DropReason::Ipv6BadPayloadLength));
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        assert_eq!(why(&arp), Some(DropReason::UnsupportedEthertype));
    }

    #[test]
    fn rule_verdicts_name_the_hook_or_the_invalid_reason() {
        let reject = Verdict::Reject(Reject::TcpReset);
        assert_eq!(DropReason::rules(Hook::Forward, Verdict::Drop, None), DropReason::RuleDropForward);
        assert_eq!(DropReason::rules(Hook::Input, reject, None), DropReason::RuleRejectInput);
        let w = Some(Invalid::TcpWindow);
        assert_eq!(DropReason::rules(Hook::Forward, Verdict::Drop, w), DropReason::CtInvalidTcpWindow);
        assert_eq!(DropReason::rules(Hook::Forward, reject, w), DropReason::RuleRejectForward, "answered");
    }

    #[test]
    fn counters_add_up_over_workers_and_print_named_reasons() {
        let sh = Shared::new(Registry::new(), Conntrack::new(16, Default::default()), RuleSet::default());
        let (w0, w1) = (sh.register_worker(), sh.register_worker());
        let mut b = Batch { rx: 5, forwarded: 2, local: 1, ..Batch::default() };
        b.drop(DropReason::Ipv4BadChecksum);
        b.drop(DropReason::CtTableFull);
        b.originate_drop(DropReason::NoRoute);
        w0.publish(&b);
        w1.publish(&b);
        w0.publish(&b);
        let s = sh.datapath_stats();
        assert_eq!((s.rx, s.forwarded, s.local, s.dropped(), s.originate_dropped()), (15, 6, 3, 6, 3));
        assert_eq!(s.rx, s.forwarded + s.local + s.held + s.dropped());
        assert_eq!(
            s.to_string(),
            "datapath: rx=15 forwarded=6 local=3 held=0 dropped=6 originated=0 originate_dropped=3 rx_gso=0 \
             gso_segmented=0\n\
             datapath dropped: ipv4_bad_checksum=3 ct_table_full=3\n\
             datapath originate_dropped: no_route=3\n"
        );
    }
}
