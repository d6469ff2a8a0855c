//! Router mode: longest-prefix routes, the neighbour cache (ARP, NDP), and the per-packet router
//! step, all sans-IO: frames and `now` in, frames and decisions out. The datapath (`engine::io`)
//! does the I/O and runs the rule set and conntrack between the steps below.
//!
//! # One packet, in order
//! ```text
//!  frame from port `in`
//!   1. Router::receive      parse; ARP and NS/NA go to the neighbour cache (answers and released
//!                           packets come back as frames); frames for another MAC are dropped
//!   2. rules prerouting, conntrack                                          (datapath: filter, conntrack)
//!   3. Router::route        local address / broadcast -> to us; else longest-prefix match;
//!                           martians dropped; no route -> ICMP net unreachable
//!   4a. to us:  rules input -> Router::local     echo requests answered (Forward::Reply)
//!   4b. onward: rules forward -> Router::transmit (Router::transmit_gso for a GSO super-packet)
//!                           TTL/hop limit (time exceeded), MTU (frag needed / packet too big;
//!                           IPv4 without DF is fragmented: Forward::Frames), TTL decrement,
//!                           neighbour: Ethernet header rewritten in place (Forward::Transmit)
//!                           or the datagram held while resolving (Forward::Queued)
//!  datagrams the router originates (Forward::Icmp, Forward::Reply, Router::tick's errors):
//!   5. rules output -> Router::send_local    route, resolve, frame
//! ```
//! [`Router::forward`] runs 3–4 with the rule set's input/forward decision as a closure, for
//! datapaths that do not need to interleave anything else.
//!
//! Steps 3–4b allocate nothing for a packet forwarded to a resolved neighbour: the route lookup
//! scans fixed arrays, the neighbour read takes a shard read lock, the TTL is decremented with an
//! incremental checksum update and the new Ethernet header is written over the old one (for a
//! VLAN-tagged frame, 4 or 8 bytes later: [`Forward::Transmit`] gives the range to send).
//!
//! A GSO super-packet (`crate::gso`) is routed as one packet: its TTL is decremented once and it
//! is passed on whole (`Forward::Transmit`), for the egress to cut. The MTU applies to the pieces
//! it will be cut into, as Linux's `ip_exceeds_mtu`/`ip6_pkt_too_big` check GSO packets. Where it
//! cannot go whole — its pieces must be fragmented (IPv4 without DF over a smaller MTU), or its
//! next hop is not resolved yet (held packets are released as plain frames) — it is cut in
//! software here and its pieces go as `Forward::Frames` or `Forward::Queued`, as fragments do.
//!
//! ICMP errors are built as Linux's `icmp_send`/`icmp6_send` ([`icmp::icmp_error`]) from the
//! address of the interface the error leaves by (Linux's default, `icmp_errors_use_inbound_ifaddr
//! = 0`), and limited per destination and globally ([`icmp::IcmpLimiter`]).
//!
//! An interface whose MAC is all zeros is a layer-3 port (TUN): nothing is resolved on it and
//! datagrams are sent bare.

pub mod icmp;
pub mod neigh;
pub mod table;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use proto::build::ethernet;
use proto::packet::{ethertype, parse_ethernet, parse_ip, Layer, Packet, ParseError, L4};
use proto::Family;

use crate::clock::Timestamp;
use crate::gso::{self, Gso};
pub use icmp::{
    decrement_ttl, echo_reply, icmp_error, port_unreachable, reject_icmp, tcp_reset, IcmpKind, IcmpLimiter, IcmpLimits,
    TtlError,
};
pub use neigh::{Frame, NeighConfig, NeighDrop, NeighState, Neighbours, Resolve};
pub use table::{parse_route, Hop, Iface, RouteSyntaxError, Routes, RoutesError, StaticRoute};

use table::{join, split};

/// Why the router drops a packet (the datapath counts each under its own `DropReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The received frame does not parse (the datapath names the header and the fault from the
    /// error): dropped before anything else sees it, as the kernel's `ip_rcv` drops it. An IP
    /// header whose version is not its ethertype's is `Malformed` at that layer.
    Unparsable(ParseError),
    /// An Ethernet frame that is neither ARP, IPv4 nor IPv6.
    UnsupportedEthertype,
    /// A datagram the router cannot process as its descriptor says (offsets out of range, an
    /// echo request or a datagram to fragment that does not rebuild).
    Malformed,
    /// The port number is not one of the router's interfaces.
    UnknownIface,
    /// Unicast to another MAC (Linux: PACKET_OTHERHOST).
    OtherHost,
    /// Source multicast, broadcast, unspecified or loopback.
    MartianSource,
    /// Destination loopback, unspecified, or (IPv6) link-local and not ours.
    MartianDestination,
    /// No route (the net unreachable was suppressed).
    NoRoute,
    /// TTL / hop limit exhausted (the time exceeded was suppressed).
    TtlExpired,
    /// Larger than the next link's MTU (the error was suppressed).
    TooBig,
    /// IPv6 link-local source would leave its link.
    BeyondScope,
    /// The rule set said drop.
    Filtered,
    /// The neighbour cache could not hold it.
    Neighbour(NeighDrop),
    /// The neighbour never answered (the host unreachable was suppressed).
    NeighbourFailed,
    /// We have no address to send an error from.
    NoSourceAddress,
}

impl DropReason {
    /// A short name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Unparsable(_) => "unparsable",
            DropReason::UnsupportedEthertype => "unsupported-ethertype",
            DropReason::Malformed => "malformed",
            DropReason::UnknownIface => "unknown-iface",
            DropReason::OtherHost => "other-host",
            DropReason::MartianSource => "martian-source",
            DropReason::MartianDestination => "martian-destination",
            DropReason::NoRoute => "no-route",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::TooBig => "too-big",
            DropReason::BeyondScope => "beyond-scope",
            DropReason::Filtered => "filtered",
            DropReason::Neighbour(NeighDrop::TableFull) => "neigh-table-full",
            DropReason::Neighbour(NeighDrop::NoSourceAddress) => "neigh-no-source",
            DropReason::Neighbour(NeighDrop::TooLarge) => "neigh-too-large",
            DropReason::NeighbourFailed => "neigh-failed",
            DropReason::NoSourceAddress => "no-source-address",
        }
    }

    /// The packet drop an ICMP error of `kind` stands for.
    pub fn of(kind: IcmpKind) -> DropReason {
        match kind {
            IcmpKind::TimeExceeded => DropReason::TtlExpired,
            IcmpKind::NetUnreachable => DropReason::NoRoute,
            IcmpKind::HostUnreachable => DropReason::NeighbourFailed,
            IcmpKind::TooBig { .. } => DropReason::TooBig,
            IcmpKind::BeyondScope => DropReason::BeyondScope,
            IcmpKind::PortUnreachable | IcmpKind::AdminProhibited => DropReason::Filtered,
        }
    }
}

/// What [`Router::receive`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rx {
    /// An IP packet for the rule set, conntrack and [`Router::route`].
    Ip(Packet),
    /// ARP or neighbour discovery, consumed; these frames (answers, released packets) go out.
    Handled(Vec<Frame>),
    Drop(DropReason),
}

/// Where [`Router::route`] sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// To one of our unicast addresses (on this interface).
    Local {
        iface: usize,
    },
    /// To a broadcast or multicast address: ours to see, never forwarded.
    Broadcast,
    /// Onward.
    Forward(Hop),
    /// No route: answer net unreachable ([`Router::error`]).
    Unreachable,
    Drop(DropReason),
}

/// The netfilter hook whose rules decide a packet, for [`Router::forward`]'s closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Forward,
}

/// The outcome of the router step for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Send `frame[start..end]` on `iface`: the Ethernet header was rewritten and the TTL
    /// decremented in place.
    Transmit {
        iface: usize,
        next_hop: [u8; 16],
        start: usize,
        end: usize,
    },
    /// Send these newly built frames on `iface`: the fragments of an IPv4 datagram without DF
    /// larger than the link's MTU, or a datagram from a layer-3 port (no room for an Ethernet
    /// header in place).
    Frames {
        iface: usize,
        frames: Vec<Vec<u8>>,
    },
    /// Held while the next hop is resolved; send `request` (if any) on `iface`.
    Queued {
        iface: usize,
        request: Option<Vec<u8>>,
    },
    /// For us, nothing to answer: the datapath's local delivery (or a reject) takes it.
    Deliver,
    /// An answer we originate (an echo reply): an IP datagram for the output rules, then
    /// [`Router::send_local`].
    Reply(Vec<u8>),
    /// An ICMP error we originate about this packet, which is dropped for the reason given: the
    /// error goes as for `Reply`.
    Icmp(DropReason, Vec<u8>),
    Drop(DropReason),
}

/// What [`Router::tick`] produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    /// ARP/NDP retries and probes to send.
    pub frames: Vec<Frame>,
    /// Host/address unreachable errors for packets whose neighbour failed: for the output rules,
    /// then [`Router::send_local`].
    pub errors: Vec<Vec<u8>>,
}

/// Why a router cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    /// Interface ids must be 0, 1, 2, ... in order: the id at this position is not.
    IfaceId {
        position: usize,
        id: usize,
    },
    Routes(RoutesError),
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterError::IfaceId { position, id } => write!(f, "interface at position {position} has id {id}"),
            RouterError::Routes(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RouterError {}

/// A frame to forward, in two pieces: `head`, which the router rewrites in place (the worker's
/// copy), and `tail`, the rest of the frame, only read. A super-packet is forwarded with only its
/// headers copied, its payload left where it was received; every other frame is whole in `head`.
pub struct Split<'a> {
    pub head: &'a mut [u8],
    pub tail: &'a [u8],
}

impl<'a> Split<'a> {
    /// `frame`, whole.
    pub fn whole(frame: &'a mut [u8]) -> Split<'a> {
        Split { head: frame, tail: &[] }
    }
}

/// A datagram's bytes in one piece: borrowed when `tail` is empty, else copied (for the paths that
/// quote, cut, fragment or hold a split datagram).
pub fn joined<'a>(head: &'a [u8], tail: &[u8]) -> Cow<'a, [u8]> {
    if tail.is_empty() {
        Cow::Borrowed(head)
    } else {
        Cow::Owned([head, tail].concat())
    }
}

/// The router: interfaces, routes, neighbours and the ICMP limiter, shared by all workers.
#[derive(Debug)]
pub struct Router {
    ifaces: Vec<Iface>,
    routes: ArcSwap<Routes>,
    neighbours: Neighbours,
    limiter: Mutex<IcmpLimiter>,
    /// The identification of the next IPv6 datagram we fragment (from a random start, RFC 7739).
    v6_frag_id: AtomicU32,
}

fn is_l3(iface: &Iface) -> bool {
    iface.mac == [0; 6]
}

impl Router {
    /// A router over `ifaces` (ids 0, 1, 2, ... in order) with `statics` besides the connected
    /// routes.
    pub fn new(
        ifaces: Vec<Iface>,
        statics: &[StaticRoute],
        neigh: NeighConfig,
        limits: IcmpLimits,
    ) -> Result<Router, RouterError> {
        if let Some((position, i)) = ifaces.iter().enumerate().find(|(p, i)| i.id != *p) {
            return Err(RouterError::IfaceId { position, id: i.id });
        }
        let routes = Routes::new(&ifaces, statics).map_err(RouterError::Routes)?;
        let routes = ArcSwap::from_pointee(routes);
        let start = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0);
        let v6_frag_id = AtomicU32::new(start as u32);
        Ok(Router {
            ifaces,
            routes,
            neighbours: Neighbours::new(neigh),
            limiter: Mutex::new(IcmpLimiter::new(limits)),
            v6_frag_id,
        })
    }

    /// The interfaces, indexed by id.
    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// The routing table in use.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Replaces the static routes (a configuration reload): the new table is built off the hot
    /// path and published atomically; packets in flight finish with the old one. Interfaces, and
    /// so the connected routes and the neighbour cache, stay.
    pub fn replace_routes(&self, statics: &[StaticRoute]) -> Result<(), RoutesError> {
        let routes = Routes::new(&self.ifaces, statics)?;
        self.routes.store(Arc::new(routes));
        Ok(())
    }

    /// The neighbour cache.
    pub fn neighbours(&self) -> &Neighbours {
        &self.neighbours
    }

    /// Step 1: a frame received on `in_iface`.
    pub fn receive(&self, now: Timestamp, in_iface: usize, frame: &[u8]) -> Rx {
        let Some(ifc) = self.ifaces.get(in_iface) else { return Rx::Drop(DropReason::UnknownIface) };
        let eth = match parse_ethernet(frame) {
            Ok(eth) => eth,
            Err(e) => return Rx::Drop(DropReason::Unparsable(e)),
        };
        let family = match eth.ethertype {
            ethertype::ARP => return Rx::Handled(self.neighbours.input_arp(now, ifc, frame)),
            ethertype::IPV4 => Family::V4,
            ethertype::IPV6 => Family::V6,
            _ => return Rx::Drop(DropReason::UnsupportedEthertype),
        };
        if frame[0] & 1 == 0 && frame[..6] != ifc.mac {
            return Rx::Drop(DropReason::OtherHost);
        }
        let p = match parse_ip(frame, eth.l3_offset) {
            Ok(p) => p,
            Err(e) => return Rx::Drop(DropReason::Unparsable(e)),
        };
        // The version must be the ethertype's, as `ip_rcv`/`ipv6_rcv` require.
        if p.family != family {
            let layer = if family == Family::V4 { Layer::Ipv4 } else { Layer::Ipv6 };
            return Rx::Drop(DropReason::Unparsable(ParseError::Malformed { layer, offset: eth.l3_offset }));
        }
        match p.l4 {
            L4::Icmpv6(i) if i.ty == proto::ndp::NS || i.ty == proto::ndp::NA => {
                Rx::Handled(self.neighbours.input_ndp(now, ifc, frame, &p))
            }
            // Router solicitations/advertisements and redirects: not acted on.
            L4::Icmpv6(i) if matches!(i.ty, 133 | 134 | 137) => Rx::Handled(Vec::new()),
            _ => Rx::Ip(p),
        }
    }

    /// Step 3: where `p` (received on `in_iface`) goes. Pure, allocation-free.
    ///
    /// `in_iface` is for reverse-path filtering, which is not done (Linux's own default,
    /// `rp_filter=0`).
    pub fn route(&self, in_iface: usize, p: &Packet) -> Routed {
        let _ = in_iface;
        let routes = self.routes.load();
        match p.family {
            Family::V4 => {
                let (s, d) = (&p.src, &p.dst);
                if d[0] >= 224 && d[0] < 240 || routes.is_broadcast(d) {
                    return Routed::Broadcast;
                }
                if s[0] >= 224 || s[0] == 127 || s[..4] == [0; 4] || routes.is_broadcast(s) {
                    return Routed::Drop(DropReason::MartianSource);
                }
                if d[0] == 127 || d[0] == 0 || d[0] >= 240 {
                    return Routed::Drop(DropReason::MartianDestination);
                }
            }
            Family::V6 => {
                if p.dst[0] == 0xff {
                    return Routed::Broadcast;
                }
                if p.src[0] == 0xff || p.src == [0; 16] || is_v6_loopback(&p.src) {
                    return Routed::Drop(DropReason::MartianSource);
                }
                if p.dst == [0; 16] || is_v6_loopback(&p.dst) {
                    return Routed::Drop(DropReason::MartianDestination);
                }
            }
        }
        if let Some(iface) = routes.is_local(p.family, &p.dst) {
            return Routed::Local { iface };
        }
        if p.family == Family::V6 && is_link_local(&p.dst) {
            return Routed::Drop(DropReason::MartianDestination);
        }
        match routes.lookup(p.family, &p.dst) {
            Some(hop) => Routed::Forward(hop),
            None => Routed::Unreachable,
        }
    }

    /// Step 4a: a packet for us that the input rules accepted. Echo requests to our unicast
    /// address are answered; everything else is delivered (broadcast pings are ignored, as
    /// `icmp_echo_ignore_broadcasts=1`).
    pub fn local(&self, frame: &[u8], p: &Packet) -> Forward {
        let is_echo = matches!(p.l4, L4::Icmp(i) if i.ty == 8) || matches!(p.l4, L4::Icmpv6(i) if i.ty == 128);
        if !is_echo || self.routes.load().is_local(p.family, &p.dst).is_none() {
            return Forward::Deliver;
        }
        match frame.get(p.l3_offset..p.end).and_then(echo_reply) {
            Some(r) => Forward::Reply(r),
            None => Forward::Drop(DropReason::Malformed),
        }
    }

    /// Step 4b: a packet the forward rules accepted, towards `hop`. Checks scope, TTL and MTU
    /// (answering with ICMP errors), decrements the TTL, resolves the next hop and rewrites the
    /// Ethernet header in place.
    pub fn transmit(&self, now: Timestamp, in_iface: usize, frame: &mut [u8], p: &Packet, hop: Hop) -> Forward {
        self.transmit_gso(now, in_iface, Split::whole(frame), p, hop, None, None)
    }

    /// Step 4b for a packet that may be a GSO super-packet described by `gso` (`None`: a plain
    /// packet, as [`Router::transmit`]). A super-packet whose pieces fit the next link goes on
    /// whole when its next hop is known (`Forward::Transmit`: the caller sends it with its GSO
    /// description); otherwise it is cut here (complete checksums) and its pieces are fragmented,
    /// framed or held like fragments (`Forward::Frames`, `Forward::Queued`). The frame may come
    /// split ([`Split`]): only its head is rewritten, and `Forward::Transmit`'s range then spans
    /// the head and the tail; the other outcomes are built from the datagram joined.
    /// `reassembled`: the identification of the fragments the datagram was reassembled from,
    /// if it was; an IPv6 one over the next link's MTU is then fragmented again with it, as
    /// Linux does after `nf_defrag_ipv6`, rather than answered "packet too big".
    #[allow(clippy::too_many_arguments)]
    pub fn transmit_gso(
        &self,
        now: Timestamp,
        in_iface: usize,
        frame: Split<'_>,
        p: &Packet,
        hop: Hop,
        gso: Option<&Gso>,
        reassembled: Option<u32>,
    ) -> Forward {
        let Some(out) = self.ifaces.get(hop.iface) else { return Forward::Drop(DropReason::UnknownIface) };
        let (l3, end) = (p.l3_offset, p.end);
        let Split { head, tail } = frame;
        // The head holds at least the IP header (the TTL), unless it holds the whole datagram.
        let ip_header = if p.family == Family::V4 { 20 } else { 40 };
        if l3 > end || end > head.len() + tail.len() || (end > head.len() && head.len() < l3 + ip_header) {
            return Forward::Drop(DropReason::Malformed);
        }
        let held = end.min(head.len());
        let tail = &tail[..end - held];
        if p.family == Family::V6 && is_link_local(&p.src) {
            return self.error_or_drop(now, IcmpKind::BeyondScope, &joined(&head[l3..held], tail), in_iface);
        }
        if p.ttl <= 1 {
            return self.error_or_drop(now, IcmpKind::TimeExceeded, &joined(&head[l3..held], tail), in_iface);
        }
        let ip_len = gso.map_or(end - l3, |g| g.segment_ip_len(p));
        let too_big = ip_len > usize::from(out.mtu);
        // IPv4 with DF, and IPv6 unless it came as fragments: a router does not fragment them.
        let unfragmentable = match p.family {
            Family::V4 => head.get(l3 + 6).is_some_and(|b| b & 0x40 != 0),
            Family::V6 => reassembled.is_none(),
        };
        if too_big && unfragmentable {
            let mtu = u32::from(out.mtu);
            return self.error_or_drop(now, IcmpKind::TooBig { mtu }, &joined(&head[l3..held], tail), in_iface);
        }
        if decrement_ttl(&mut head[l3..held]).is_err() {
            return Forward::Drop(DropReason::Malformed);
        }
        let next_hop = hop.next_hop;
        let ip = join(p.family, &next_hop);
        if let Some(g) = gso {
            // Cut here when it cannot go whole: pieces to fragment, no room for an Ethernet
            // header in place, or a next hop to resolve first (held packets go out plain).
            let unresolved = !is_l3(out) && self.neighbours.lookup(out.id, ip).is_none();
            if too_big || (l3 < 14 && !is_l3(out)) || unresolved {
                let Some(pieces) = gso::segment(&joined(&head[l3..held], tail), g) else {
                    return Forward::Drop(DropReason::Malformed);
                };
                let mut all = Vec::with_capacity(pieces.len());
                for piece in pieces {
                    match proto::build::fragment_to_mtu(&piece, usize::from(out.mtu)) {
                        Some(frags) => all.extend(frags),
                        // IPv6, or a piece the MTU check above let through: whole.
                        None if piece.len() <= usize::from(out.mtu) => all.push(piece),
                        None => return Forward::Drop(DropReason::Malformed),
                    }
                }
                return self.send_pieces(now, out, next_hop, all);
            }
        }
        if too_big {
            let datagram = joined(&head[l3..held], tail);
            let mtu = usize::from(out.mtu);
            let Some(pieces) = proto::build::fragment_ip_to_mtu(&datagram, mtu, reassembled) else {
                return Forward::Drop(DropReason::Malformed);
            };
            return self.send_pieces(now, out, next_hop, pieces);
        }
        if is_l3(out) {
            return Forward::Transmit { iface: out.id, next_hop, start: l3, end };
        }
        let mac = match self.neighbours.resolve(now, out, ip, &[&head[l3..held], tail]) {
            Resolve::Ready(mac) => mac,
            Resolve::Queued { request, .. } => return Forward::Queued { iface: out.id, request },
            Resolve::Dropped(why) => return Forward::Drop(DropReason::Neighbour(why)),
        };
        if l3 < 14 {
            let frame = ethernet(mac, out.mac, &joined(&head[l3..held], tail));
            return Forward::Frames { iface: out.id, frames: vec![frame] };
        }
        let start = l3 - 14;
        let et = if p.family == Family::V4 { ethertype::IPV4 } else { ethertype::IPV6 };
        head[start..start + 6].copy_from_slice(&mac);
        head[start + 6..start + 12].copy_from_slice(&out.mac);
        head[start + 12..start + 14].copy_from_slice(&et.to_be_bytes());
        Forward::Transmit { iface: out.id, next_hop, start, end }
    }

    /// Datagrams that replace one (its fragments, or the pieces of a super-packet), each fitting
    /// `out`'s MTU: framed, or held one by one while the next hop is resolved.
    fn send_pieces(&self, now: Timestamp, out: &Iface, next_hop: [u8; 16], frags: Vec<Vec<u8>>) -> Forward {
        if is_l3(out) {
            return Forward::Frames { iface: out.id, frames: frags };
        }
        let family =
            if frags.first().and_then(|f| f.first()).is_some_and(|b| b >> 4 == 6) { Family::V6 } else { Family::V4 };
        let ip = join(family, &next_hop);
        match self.neighbours.resolve(now, out, ip, &[frags.first().map_or(&[][..], |f| &f[..])]) {
            Resolve::Ready(mac) => {
                Forward::Frames { iface: out.id, frames: frags.iter().map(|f| ethernet(mac, out.mac, f)).collect() }
            }
            Resolve::Queued { request, .. } => {
                for f in frags.iter().skip(1) {
                    self.neighbours.resolve(now, out, ip, &[f]);
                }
                Forward::Queued { iface: out.id, request }
            }
            Resolve::Dropped(why) => Forward::Drop(DropReason::Neighbour(why)),
        }
    }

    /// Steps 3–4 in one call: `allow` is the rule set's verdict at the input hook (for packets to
    /// us, with no output interface) or the forward hook (with the output interface).
    pub fn forward(
        &self,
        now: Timestamp,
        in_iface: usize,
        frame: &mut [u8],
        p: &Packet,
        allow: impl FnOnce(Hook, Option<usize>) -> bool,
    ) -> Forward {
        match self.route(in_iface, p) {
            Routed::Local { .. } | Routed::Broadcast => {
                if allow(Hook::Input, None) {
                    self.local(frame, p)
                } else {
                    Forward::Drop(DropReason::Filtered)
                }
            }
            Routed::Forward(hop) => {
                if allow(Hook::Forward, Some(hop.iface)) {
                    self.transmit(now, in_iface, frame, p, hop)
                } else {
                    Forward::Drop(DropReason::Filtered)
                }
            }
            Routed::Unreachable => match frame.get(p.l3_offset..p.end) {
                Some(d) => self.error_or_drop(now, IcmpKind::NetUnreachable, d, in_iface),
                None => Forward::Drop(DropReason::Malformed),
            },
            Routed::Drop(why) => Forward::Drop(why),
        }
    }

    /// Our address to send an error to `dst` from: that of the interface the route to `dst` leaves
    /// by, else of `fallback` (the interface the packet came in on).
    fn source_toward(&self, family: Family, dst: &[u8; 16], fallback: Option<usize>) -> Option<IpAddr> {
        let via = self.routes.load().lookup(family, dst).and_then(|h| {
            let ifc = self.ifaces.get(h.iface)?;
            ifc.source_for(family, &h.next_hop)
        });
        let b = via.or_else(|| self.ifaces.get(fallback?)?.source_for(family, dst))?;
        Some(join(family, &b))
    }

    /// The ICMP error `kind` about `original` (a datagram received on `in_iface`, if known), rate
    /// limited; `None` where none may be sent (see [`icmp_error`]) or the limiter refuses.
    pub fn error(&self, now: Timestamp, kind: IcmpKind, original: &[u8], in_iface: Option<usize>) -> Option<Vec<u8>> {
        let p = proto::packet::parse_quoted(original, 0).ok()?;
        if p.family == Family::V4 && self.routes.load().is_broadcast(&p.dst) {
            return None;
        }
        let (ty, code) = kind.type_code(p.family)?;
        let from = self.source_toward(p.family, &p.src, in_iface)?;
        let e = icmp_error(kind, original, from)?;
        self.limiter.lock().allow(now, p.family, &p.src, ty, code).then_some(e)
    }

    fn error_or_drop(&self, now: Timestamp, kind: IcmpKind, original: &[u8], in_iface: usize) -> Forward {
        match self.error(now, kind, original, Some(in_iface)) {
            Some(e) => Forward::Icmp(DropReason::of(kind), e),
            None => Forward::Drop(DropReason::of(kind)),
        }
    }

    /// Step 5: a datagram we originate (echo reply, ICMP error, TCP reset), after the output
    /// rules: routed, resolved and framed. Gives the frames to send (the datagram, or the request
    /// for its next hop while it is held).
    pub fn send_local(&self, now: Timestamp, datagram: &[u8]) -> Result<Vec<Frame>, DropReason> {
        let p = parse_ip(datagram, 0).map_err(|_| DropReason::Malformed)?;
        let hop = self.routes.load().lookup(p.family, &p.dst).ok_or(DropReason::NoRoute)?;
        let out = self.ifaces.get(hop.iface).ok_or(DropReason::UnknownIface)?;
        let d = &datagram[..p.end];
        if d.len() > usize::from(out.mtu) {
            // Ours and over the link's MTU (an answer to a large echo request): a host fragments
            // what it sends, IPv4 unless DF is set, IPv6 at the source (RFC 8200, 4.5), as Linux
            // answers such a ping.
            let id = (p.family == Family::V6).then(|| self.v6_frag_id.fetch_add(1, Ordering::Relaxed));
            let pieces = proto::build::fragment_ip_to_mtu(d, usize::from(out.mtu), id).ok_or(DropReason::TooBig)?;
            return match self.send_pieces(now, out, hop.next_hop, pieces) {
                Forward::Frames { iface, frames } => {
                    Ok(frames.into_iter().map(|frame| Frame { iface, frame }).collect())
                }
                Forward::Queued { iface, request } => {
                    Ok(request.into_iter().map(|frame| Frame { iface, frame }).collect())
                }
                Forward::Drop(why) => Err(why),
                _ => Err(DropReason::Malformed),
            };
        }
        if is_l3(out) {
            return Ok(vec![Frame { iface: out.id, frame: d.to_vec() }]);
        }
        match self.neighbours.resolve(now, out, join(p.family, &hop.next_hop), &[d]) {
            Resolve::Ready(mac) => Ok(vec![Frame { iface: out.id, frame: ethernet(mac, out.mac, d) }]),
            Resolve::Queued { request, .. } => {
                Ok(request.into_iter().map(|frame| Frame { iface: out.id, frame }).collect())
            }
            Resolve::Dropped(why) => Err(DropReason::Neighbour(why)),
        }
    }

    /// Runs the neighbour timers: requests to resend, and host unreachable errors for packets
    /// whose neighbour never answered.
    pub fn tick(&self, now: Timestamp) -> Tick {
        let t = self.neighbours.tick(now, &self.ifaces);
        let errors = t.failed.iter().filter_map(|d| self.error(now, IcmpKind::HostUnreachable, d, None)).collect();
        Tick { frames: t.frames, errors }
    }

    /// Our address on `iface` of `family` to use towards `peer` (for a `reject` rule's errors).
    pub fn address_on(&self, iface: usize, family: Family, peer: &[u8; 16]) -> Option<IpAddr> {
        self.ifaces.get(iface)?.source_for(family, peer).map(|b| join(family, &b))
    }
}

fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

fn is_v6_loopback(a: &[u8; 16]) -> bool {
    a[..15] == [0; 15] && a[15] == 1
}

/// `split` re-exported for the datapath's convenience: an address as family and 16 bytes.
pub fn addr_bytes(a: IpAddr) -> (Family, [u8; 16]) {
    split(a)
}

#[cfg(test)]
mod tests;
