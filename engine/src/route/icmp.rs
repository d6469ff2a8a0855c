//! What a router writes besides forwarding: the TTL decrement, ICMP/ICMPv6 errors as Linux's
//! `icmp_send`/`icmp6_send` build them, their rate limiter, echo replies, and the TCP reset and
//! port unreachable of a `reject` rule as `nf_reject` builds them.
//!
//! Everything here is a pure function of its arguments (the limiter takes `now`); nothing panics on
//! malformed input: a datagram that cannot be answered gives `None`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proto::build::PacketBuilder;
use proto::checksum;
use proto::packet::{ipproto, parse_ip, parse_quoted, tcp_flags, L4};
use proto::Family;

use crate::clock::Timestamp;
use crate::route::table::split;

/// Why the TTL / hop limit could not be decremented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlError {
    /// It was 0 or 1: the packet must not be forwarded (answer [`IcmpKind::TimeExceeded`]).
    Expired,
    /// Not an IPv4 or IPv6 header.
    Malformed,
}

/// Decrements the TTL of an IPv4 datagram (updating the header checksum incrementally, RFC 1624)
/// or the hop limit of an IPv6 one, in place. Leaves the datagram untouched on error.
#[inline]
pub fn decrement_ttl(d: &mut [u8]) -> Result<(), TtlError> {
    match d.first().map(|b| b >> 4) {
        Some(4) if d.len() >= 20 => {
            if d[8] <= 1 {
                return Err(TtlError::Expired);
            }
            let old = u16::from_be_bytes([d[8], d[9]]);
            d[8] -= 1;
            let new = u16::from_be_bytes([d[8], d[9]]);
            let c = checksum::update16(u16::from_be_bytes([d[10], d[11]]), old, new);
            d[10..12].copy_from_slice(&c.to_be_bytes());
            Ok(())
        }
        Some(6) if d.len() >= 40 => {
            if d[7] <= 1 {
                return Err(TtlError::Expired);
            }
            d[7] -= 1;
            Ok(())
        }
        _ => Err(TtlError::Malformed),
    }
}

/// An ICMP error the router sends, named by meaning; each maps to an ICMP and an ICMPv6 type/code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    /// TTL / hop limit exceeded in transit (v4 11/0, v6 3/0).
    TimeExceeded,
    /// No route (v4 3/0 net unreachable, v6 1/0 no route).
    NetUnreachable,
    /// The neighbour did not answer (v4 3/1 host unreachable, v6 1/3 address unreachable).
    HostUnreachable,
    /// No one listens (v4 3/3, v6 1/4); also `reject` of non-TCP.
    PortUnreachable,
    /// A rule rejected it (v4 3/13 communication administratively filtered, v6 1/1).
    AdminProhibited,
    /// IPv6 only: a link-local source would leave its link (1/2 beyond scope of source address).
    BeyondScope,
    /// The datagram exceeds the next link's MTU: v4 3/4 fragmentation needed (only when DF is set),
    /// v6 2/0 packet too big.
    TooBig { mtu: u32 },
}

impl IcmpKind {
    fn v4(self) -> Option<(u8, u8, u32)> {
        Some(match self {
            IcmpKind::TimeExceeded => (11, 0, 0),
            IcmpKind::NetUnreachable => (3, 0, 0),
            IcmpKind::HostUnreachable => (3, 1, 0),
            IcmpKind::PortUnreachable => (3, 3, 0),
            IcmpKind::AdminProhibited => (3, 13, 0),
            IcmpKind::BeyondScope => return None,
            IcmpKind::TooBig { mtu } => (3, 4, mtu & 0xffff),
        })
    }

    fn v6(self) -> (u8, u8, u32) {
        match self {
            IcmpKind::TimeExceeded => (3, 0, 0),
            IcmpKind::NetUnreachable => (1, 0, 0),
            IcmpKind::HostUnreachable => (1, 3, 0),
            IcmpKind::PortUnreachable => (1, 4, 0),
            IcmpKind::AdminProhibited => (1, 1, 0),
            IcmpKind::BeyondScope => (1, 2, 0),
            IcmpKind::TooBig { mtu } => (2, 0, mtu),
        }
    }

    /// The (type, code) this kind has in `family`, for the rate limiter; `None` if it has none.
    pub fn type_code(self, family: Family) -> Option<(u8, u8)> {
        match family {
            Family::V4 => self.v4().map(|(t, c, _)| (t, c)),
            Family::V6 => {
                let (t, c, _) = self.v6();
                Some((t, c))
            }
        }
    }
}

/// The default TTL / hop limit of packets we originate (`ip_default_ttl`, IPv6 `hop_limit`).
pub const DEFAULT_TTL: u8 = 64;
/// An IPv4 error carries as much of the original as fits in 576 bytes (RFC 1812 4.3.2.3).
const V4_ERROR_MAX: usize = 576;
/// An ICMPv6 error carries as much as fits in the minimum MTU, 1280 (RFC 4443 2.4(c)).
const V6_ERROR_MAX: usize = 1280;
/// ICMP types up to NR_ICMP_TYPES (18) are known to Linux; errors are 3, 4, 5, 11 and 12.
const NR_ICMP_TYPES: u8 = 18;

fn v4_is_error(ty: u8) -> bool {
    matches!(ty, 3 | 4 | 5 | 11 | 12)
}

fn v4_bad_source(a: &[u8; 16]) -> bool {
    a[..4] == [0; 4] || a[0] >= 224 || a[0] == 127
}

fn v4_bad_dest(a: &[u8; 16]) -> bool {
    (224..240).contains(&a[0]) || a[..4] == [255; 4]
}

/// An IPv4 datagram with a plain 20-byte header (DF clear, identification 0).
fn ipv4(src: &[u8; 16], dst: &[u8; 16], tos: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut p = Vec::with_capacity(20 + l4.len());
    p.extend_from_slice(&[0x45, tos]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, DEFAULT_TTL, proto, 0, 0]);
    p.extend_from_slice(&src[..4]);
    p.extend_from_slice(&dst[..4]);
    let c = checksum::internet(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// The ICMP (IPv4) or ICMPv6 error `kind` about `original` (the IP datagram that caused it, as it
/// arrived), sent from our address `from` back to the original source — or `None` where Linux
/// sends nothing: the original is an ICMP error (or an unknown ICMP type), a non-first fragment,
/// addressed to a multicast/broadcast address (IPv6: except packet too big), from an unspecified,
/// multicast, broadcast or loopback source; or it does not parse; or `from` is of the other
/// family; or `kind` has no meaning in this family (IPv4 beyond scope; fragmentation needed for a
/// datagram without DF, which the router fragments instead).
///
/// The quote is the original from its IP header on, cut so that the error fits in 576 bytes
/// (IPv4) or 1280 bytes (IPv6) — `icmp_send` and `icmp6_send`. The error's IPv4 TOS is the
/// original's TOS bits with precedence "internetwork control" (0xc0); TTL / hop limit 64.
pub fn icmp_error(kind: IcmpKind, original: &[u8], from: IpAddr) -> Option<Vec<u8>> {
    let p = parse_quoted(original, 0).ok()?;
    let (from_family, from) = split(from);
    if from_family != p.family || p.fragment.is_some_and(|f| f.offset != 0) {
        return None;
    }
    let quote = original.get(..p.end)?;
    match p.family {
        Family::V4 => {
            let (ty, code, rest) = kind.v4()?;
            if v4_bad_source(&p.src) || v4_bad_dest(&p.dst) {
                return None;
            }
            if let L4::Icmp(i) = p.l4 {
                if i.ty > NR_ICMP_TYPES || v4_is_error(i.ty) {
                    return None;
                }
            } else if p.proto == ipproto::ICMP {
                return None;
            }
            if matches!(kind, IcmpKind::TooBig { .. }) && original[6] & 0x40 == 0 {
                return None;
            }
            let quote = &quote[..quote.len().min(V4_ERROR_MAX - 20 - 8)];
            let mut icmp = Vec::with_capacity(8 + quote.len());
            icmp.extend_from_slice(&[ty, code, 0, 0]);
            icmp.extend_from_slice(&rest.to_be_bytes());
            icmp.extend_from_slice(quote);
            let c = checksum::internet(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let tos = (original[1] & 0x1e) | 0xc0;
            Some(ipv4(&from, &p.src, tos, ipproto::ICMP, &icmp))
        }
        Family::V6 => {
            let (ty, code, rest) = kind.v6();
            if p.src == [0; 16] || p.src[0] == 0xff {
                return None;
            }
            if p.dst[0] == 0xff && !matches!(kind, IcmpKind::TooBig { .. }) {
                return None;
            }
            match p.l4 {
                L4::Icmpv6(i) if i.ty < 128 => return None,
                L4::Other if p.proto == ipproto::ICMPV6 => return None,
                _ => {}
            }
            let quote = &quote[..quote.len().min(V6_ERROR_MAX - 40 - 8)];
            let b = PacketBuilder::v6(Ipv6Addr::from(from), Ipv6Addr::from(p.src)).ttl(DEFAULT_TTL);
            Some(b.icmp(ty, code, rest, quote))
        }
    }
}

/// The echo reply to `request`, an ICMP echo request (type 8) or ICMPv6 echo request (128)
/// addressed to our unicast address: same identifier, sequence and data, from that address.
pub fn echo_reply(request: &[u8]) -> Option<Vec<u8>> {
    let p = parse_ip(request, 0).ok()?;
    if p.is_fragment() {
        return None;
    }
    let body = request.get(p.l4_offset..p.end)?;
    if body.len() < 8 {
        return None;
    }
    let rest = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    match p.l4 {
        L4::Icmp(i) if i.ty == 8 && i.code == 0 => {
            // Incrementally: only the type changes (8 -> 0).
            let mut icmp = body.to_vec();
            icmp[0] = 0;
            let c = checksum::update16(
                u16::from_be_bytes([body[2], body[3]]),
                0x0800 | u16::from(body[1]),
                u16::from(body[1]),
            );
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            Some(ipv4(&p.dst, &p.src, request[1], ipproto::ICMP, &icmp))
        }
        L4::Icmpv6(i) if i.ty == 128 && i.code == 0 && p.dst[0] != 0xff => {
            let b = PacketBuilder::v6(Ipv6Addr::from(p.dst), Ipv6Addr::from(p.src)).ttl(DEFAULT_TTL);
            Some(b.icmp(129, 0, rest, &body[8..]))
        }
        _ => None,
    }
}

/// The TCP reset `nf_send_reset`/`nf_send_reset6` send for `original` (a whole IP datagram): from
/// its destination to its source, ports swapped, window 0, no options; if the original had ACK,
/// `seq = original ack` and only RST, else `seq = 0`, `ack = original seq + SYN + FIN + payload
/// length` and RST|ACK. IPv4: TTL 64, DF, identification 0, TOS 0; IPv6: hop limit 64, traffic
/// class 0. `None` for a non-TCP datagram, a fragment, a RST, a bad TCP checksum, or a
/// non-unicast source or destination — as `nf_reject` does.
pub fn tcp_reset(original: &[u8]) -> Option<Vec<u8>> {
    let p = parse_ip(original, 0).ok()?;
    let L4::Tcp(t) = p.l4 else { return None };
    if p.is_fragment() || t.flags & tcp_flags::RST != 0 {
        return None;
    }
    let bad = match p.family {
        Family::V4 => v4_bad_source(&p.src) || v4_bad_dest(&p.dst),
        Family::V6 => p.src[0] == 0xff || p.dst[0] == 0xff || p.src == [0; 16] || p.dst == [0; 16],
    };
    let seg = p.l4_bytes(original);
    if bad || checksum::l4(p.family, &p.src, &p.dst, ipproto::TCP, seg, seg.len()) != 0 {
        return None;
    }
    let (seq, ack, flags) = if t.flags & tcp_flags::ACK != 0 {
        (t.ack, 0, tcp_flags::RST)
    } else {
        let len = (seg.len() - usize::from(t.header_len)) as u32;
        let syn = u32::from(t.flags & tcp_flags::SYN != 0);
        let fin = u32::from(t.flags & tcp_flags::FIN != 0);
        (0, t.seq.wrapping_add(syn).wrapping_add(fin).wrapping_add(len), tcp_flags::RST | tcp_flags::ACK)
    };
    let b = match p.family {
        Family::V4 => PacketBuilder::v4(
            Ipv4Addr::new(p.dst[0], p.dst[1], p.dst[2], p.dst[3]),
            Ipv4Addr::new(p.src[0], p.src[1], p.src[2], p.src[3]),
        )
        .id(0),
        Family::V6 => PacketBuilder::v6(Ipv6Addr::from(p.dst), Ipv6Addr::from(p.src)),
    };
    Some(b.ttl(DEFAULT_TTL).tcp(t.dport, t.sport, seq, ack, flags, 0, &[], &[]))
}

/// A `reject` of a non-TCP datagram: port unreachable from `from` (see [`reject_icmp`]).
pub fn port_unreachable(original: &[u8], from: IpAddr) -> Option<Vec<u8>> {
    reject_icmp(IcmpKind::PortUnreachable, original, from)
}

/// A `reject with icmp(x) KIND` of `original`, as `nf_send_unreach`/`nf_send_unreach6`: the
/// [`icmp_error`] rules, and first the datagram's own checksum must be right where it covers the
/// whole datagram (TCP, UDP unless its checksum is 0 over IPv4, ICMP, ICMPv6): a corrupted
/// packet is dropped without an answer. Other protocols are answered unchecked.
pub fn reject_icmp(kind: IcmpKind, original: &[u8], from: IpAddr) -> Option<Vec<u8>> {
    let p = parse_ip(original, 0).ok()?;
    if p.fragment.is_some_and(|f| f.offset != 0) {
        return None;
    }
    if !p.is_fragment() {
        let seg = p.l4_bytes(original);
        let ok = match (p.l4, p.family) {
            (L4::Tcp(_), _) | (L4::Udp(_), Family::V6) | (L4::Icmpv6(_), _) => {
                checksum::l4(p.family, &p.src, &p.dst, p.proto, seg, seg.len()) == 0
            }
            (L4::Udp(u), Family::V4) => {
                u.checksum == 0 || checksum::l4(p.family, &p.src, &p.dst, p.proto, seg, seg.len()) == 0
            }
            (L4::Icmp(_), _) => checksum::internet(seg) == 0,
            _ => true,
        };
        if !ok {
            return None;
        }
    }
    icmp_error(kind, original, from)
}

/// Linux's limits on the ICMP errors we send, as its sysctls name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpLimits {
    /// `icmp_ratelimit`: the per-destination interval for IPv4, ms (1000).
    pub ratelimit_ms: u64,
    /// `net.ipv6.icmp.ratelimit`: the same for IPv6 (1000). Kernels up to 6.19 shorten it for
    /// destinations behind wider routes (`tmo >>= (128 - plen) >> 5`), which is not modelled
    /// here; the newest kernels drop that scaling and default to 100 ms.
    pub ratelimit_v6_ms: u64,
    /// `icmp_ratemask`: the IPv4 types limited (0x1818: 3, 4, 11, 12). IPv6 limits every error
    /// but packet too big (the default `ratemask` 0-1,3-127).
    pub ratemask: u32,
    /// `icmp_msgs_per_sec` (1000) and `icmp_msgs_burst` (50): the global bucket.
    pub msgs_per_sec: u32,
    pub msgs_burst: u32,
    /// Destinations remembered (Linux keeps them in the inet_peer cache).
    pub max_peers: usize,
}

impl Default for IcmpLimits {
    fn default() -> Self {
        IcmpLimits {
            ratelimit_ms: 1000,
            ratelimit_v6_ms: 1000,
            ratemask: 0x1818,
            msgs_per_sec: 1000,
            msgs_burst: 50,
            max_peers: 4096,
        }
    }
}

/// `XRLIM_BURST_FACTOR`: a destination may take 6 errors at once, then one per interval.
const BURST_FACTOR: u64 = 6;
const MS: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Peer {
    tokens: u64,
    last: Timestamp,
}

/// The token buckets in front of every ICMP error: a global one (`icmp_global_allow`) and one per
/// destination (`inet_peer_xrlim_allow`). Not shared: put it behind a lock (the router does).
#[derive(Debug, Clone)]
pub struct IcmpLimiter {
    limits: IcmpLimits,
    credit: u32,
    stamp: Option<Timestamp>,
    peers: HashMap<(Family, [u8; 16]), Peer, foldhash::fast::RandomState>,
}

impl IcmpLimiter {
    /// A limiter with full buckets (the global one fills at the first use).
    pub fn new(limits: IcmpLimits) -> IcmpLimiter {
        IcmpLimiter { limits, credit: 0, stamp: None, peers: HashMap::default() }
    }

    fn limited(&self, family: Family, ty: u8, code: u8) -> bool {
        match family {
            // Fragmentation needed is never limited: PMTU discovery depends on it.
            Family::V4 => ty < 32 && self.limits.ratemask & (1 << ty) != 0 && !(ty == 3 && code == 4),
            Family::V6 => ty < 128 && ty != 2,
        }
    }

    /// Whether an error of `ty`/`code` to `dst` may be sent at `now`; takes a token if so.
    pub fn allow(&mut self, now: Timestamp, family: Family, dst: &[u8; 16], ty: u8, code: u8) -> bool {
        if !self.limited(family, ty, code) {
            return true;
        }
        // Global bucket (`icmp_global_allow`): only when it is empty, refilled for the time since
        // the last refill (at most 1 s, at least 20 ms) at msgs_per_sec, up to the burst.
        if self.credit == 0 {
            let delta = self.stamp.map_or(1_000 * MS, |s| now.since(s).min(1_000 * MS));
            let incr = u64::from(self.limits.msgs_per_sec) * delta / (1_000 * MS);
            if delta < 20 * MS || incr == 0 {
                return false;
            }
            self.stamp = Some(now);
            self.credit = incr.min(u64::from(self.limits.msgs_burst)) as u32;
            if self.credit == 0 {
                return false;
            }
        }
        // Per destination: tokens are nanoseconds of credit, capped at 6 intervals.
        let interval = if family == Family::V4 { self.limits.ratelimit_ms } else { self.limits.ratelimit_v6_ms };
        let timeout = interval.saturating_mul(MS);
        let full = timeout.saturating_mul(BURST_FACTOR);
        if timeout > 0 {
            if self.peers.len() >= self.limits.max_peers && !self.peers.contains_key(&(family, *dst)) {
                // Forget destinations whose bucket is full again; if none, forget all.
                self.peers.retain(|_, p| now.since(p.last) < full);
                if self.peers.len() >= self.limits.max_peers {
                    self.peers.clear();
                }
            }
            let peer = self.peers.entry((family, *dst)).or_insert(Peer { tokens: full, last: now });
            let tokens = peer.tokens.saturating_add(now.since(peer.last)).min(full);
            peer.last = now;
            if tokens < timeout {
                peer.tokens = tokens;
                return false;
            }
            peer.tokens = tokens - timeout;
        }
        // Linux takes 0-2 tokens at random (against the SAD DNS side channel); one, here.
        self.credit = self.credit.saturating_sub(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::packet::parse_ip;

    fn v4() -> PacketBuilder {
        PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 19, 1, 2))
    }
    fn v6() -> PacketBuilder {
        PacketBuilder::v6("2001:1::2".parse().unwrap(), "2001:2::2".parse().unwrap())
    }
    fn r4() -> IpAddr {
        "198.18.0.1".parse().unwrap()
    }
    fn r6() -> IpAddr {
        "2001:1::1".parse().unwrap()
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        let mut d = v4().ttl(3).udp(1, 2, b"x");
        decrement_ttl(&mut d).unwrap();
        let p = parse_ip(&d, 0).unwrap();
        assert_eq!(p.ttl, 2);
        decrement_ttl(&mut d).unwrap();
        assert_eq!(decrement_ttl(&mut d), Err(TtlError::Expired));
        assert_eq!(parse_ip(&d, 0).unwrap().ttl, 1);
        let mut d = v6().ttl(2).udp(1, 2, b"x");
        decrement_ttl(&mut d).unwrap();
        assert_eq!(parse_ip(&d, 0).unwrap().ttl, 1);
        assert_eq!(decrement_ttl(&mut d), Err(TtlError::Expired));
        assert_eq!(decrement_ttl(&mut [0x45, 0, 0]), Err(TtlError::Malformed));
        assert_eq!(decrement_ttl(&mut []), Err(TtlError::Malformed));
        let mut d = v4().ttl(0).udp(1, 2, b"x");
        assert_eq!(decrement_ttl(&mut d), Err(TtlError::Expired));
    }

    #[test]
    fn time_exceeded_v4_quotes_up_to_576() {
        let orig = v4().ttl(1).udp(1000, 53, &[0xab; 1000]);
        let e = icmp_error(IcmpKind::TimeExceeded, &orig, r4()).unwrap();
        assert_eq!(e.len(), 576);
        let p = parse_ip(&e, 0).unwrap();
        assert_eq!((p.src[..4].to_vec(), p.dst[..4].to_vec(), p.ttl), (vec![198, 18, 0, 1], vec![198, 18, 0, 2], 64));
        assert_eq!(e[1], 0xc0);
        assert_eq!(e[6] & 0x40, 0, "errors are sent without DF");
        let L4::Icmp(i) = p.l4 else { panic!() };
        assert_eq!((i.ty, i.code, i.quoted), (11, 0, Some(28)));
        assert_eq!(checksum::internet(&e[20..]), 0);
        assert_eq!(&e[28..], &orig[..548]);
        // A short original is quoted whole, without Ethernet padding.
        let mut small = v4().udp(1, 2, b"hi");
        let n = small.len();
        small.extend_from_slice(&[0; 16]);
        let e = icmp_error(IcmpKind::PortUnreachable, &small, r4()).unwrap();
        assert_eq!(e.len(), 28 + n);
        assert_eq!((e[20], e[21]), (3, 3));
    }

    #[test]
    fn packet_too_big_v6_quotes_up_to_1280() {
        let orig = v6().udp(1000, 53, &[0xab; 1400]);
        let e = icmp_error(IcmpKind::TooBig { mtu: 1400 }, &orig, r6()).unwrap();
        assert_eq!(e.len(), 1280);
        let p = parse_ip(&e, 0).unwrap();
        let seg = p.l4_bytes(&e);
        assert_eq!(checksum::l4(Family::V6, &p.src, &p.dst, 58, seg, seg.len()), 0);
        assert_eq!((seg[0], seg[1], &seg[4..8]), (2, 0, &1400u32.to_be_bytes()[..]));
        assert_eq!(&seg[8..], &orig[..1232]);
        assert_eq!(p.ttl, 64);
        // v4 frag needed carries the MTU in the low 16 bits, and only with DF (the builder sets it).
        let big = v4().udp(1, 2, &[0; 1500]);
        let e = icmp_error(IcmpKind::TooBig { mtu: 1400 }, &big, r4()).unwrap();
        assert_eq!(&e[20..28], &[3, 4, e[22], e[23], 0, 0, 0x05, 0x78]);
        let mut no_df = big.clone();
        no_df[6] = 0;
        no_df[10..12].fill(0);
        let c = checksum::internet(&no_df[..20]);
        no_df[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(icmp_error(IcmpKind::TooBig { mtu: 1400 }, &no_df, r4()), None);
    }

    #[test]
    fn never_an_error_about_an_error() {
        let err = icmp_error(IcmpKind::TimeExceeded, &v4().udp(1, 2, b"x"), r4()).unwrap();
        let mut fwd = err.clone();
        fwd[12..16].copy_from_slice(&[198, 18, 0, 9]);
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &fwd, r4()), None);
        // An echo request is a query: it gets errors.
        let ping = v4().icmp(8, 0, 0x0001_0001, b"abc");
        assert!(icmp_error(IcmpKind::TimeExceeded, &ping, r4()).is_some());
        // An unknown ICMP type does not.
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &v4().icmp(42, 0, 0, b""), r4()), None);
        let e6 = icmp_error(IcmpKind::TimeExceeded, &v6().udp(1, 2, b"x"), r6()).unwrap();
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &e6, r6()), None);
        assert!(icmp_error(IcmpKind::TimeExceeded, &v6().icmp(128, 0, 1, b"x"), r6()).is_some());
    }

    #[test]
    fn never_for_fragments_multicast_or_bad_sources() {
        let d = v4().udp(1, 2, &[0; 100]);
        let frags = proto::build::fragment(&d, 40);
        assert!(icmp_error(IcmpKind::TimeExceeded, &frags[0], r4()).is_some());
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &frags[1], r4()), None);
        let d6 = v6().udp(1, 2, &[0; 100]);
        let frags6 = proto::build::fragment(&d6, 40);
        assert!(icmp_error(IcmpKind::TimeExceeded, &frags6[0], r6()).is_some());
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &frags6[2], r6()), None);

        let to = |dst: &str| PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 2), dst.parse().unwrap()).udp(1, 2, b"");
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &to("224.0.0.5"), r4()), None);
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &to("255.255.255.255"), r4()), None);
        let from = |src: &str| PacketBuilder::v4(src.parse().unwrap(), Ipv4Addr::new(198, 19, 1, 2)).udp(1, 2, b"");
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &from("0.0.0.0"), r4()), None);
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &from("239.1.1.1"), r4()), None);
        let from6 = |src: &str| PacketBuilder::v6(src.parse().unwrap(), "2001:2::2".parse().unwrap()).udp(1, 2, b"");
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &from6("::"), r6()), None);
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &from6("ff02::1"), r6()), None);
        let to6 = PacketBuilder::v6("2001:1::2".parse().unwrap(), "ff0e::1".parse().unwrap()).udp(1, 2, &[0; 1500]);
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &to6, r6()), None);
        assert!(icmp_error(IcmpKind::TooBig { mtu: 1280 }, &to6, r6()).is_some());
        // Family mismatch and meaningless kinds.
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &d, r6()), None);
        assert_eq!(icmp_error(IcmpKind::BeyondScope, &d, r4()), None);
        assert_eq!(icmp_error(IcmpKind::TimeExceeded, &[0x45, 0, 1], r4()), None);
    }

    #[test]
    fn reset_fields_as_nf_reject() {
        use proto::packet::tcp_flags::*;
        // A SYN: RST|ACK, seq 0, ack = seq + 1.
        let syn = v4().tcp(40000, 80, 1000, 0, SYN, 64240, &[], b"");
        let r = tcp_reset(&syn).unwrap();
        let p = parse_ip(&r, 0).unwrap();
        let L4::Tcp(t) = p.l4 else { panic!() };
        assert_eq!((t.sport, t.dport, t.seq, t.ack, t.flags, t.window), (80, 40000, 0, 1001, RST | ACK, 0));
        assert_eq!(
            (p.src[..4].to_vec(), p.ttl, r[6] & 0x40, r[4..6].to_vec()),
            (vec![198, 19, 1, 2], 64, 0x40, vec![0, 0])
        );
        let seg = p.l4_bytes(&r);
        assert_eq!(checksum::l4(p.family, &p.src, &p.dst, 6, seg, seg.len()), 0);
        // Data with ACK: seq = their ack, no ACK flag.
        let data = v6().tcp(40000, 80, 5000, 7777, ACK | PSH, 100, &[], b"hello");
        let r = tcp_reset(&data).unwrap();
        let L4::Tcp(t) = parse_ip(&r, 0).unwrap().l4 else { panic!() };
        assert_eq!((t.seq, t.ack, t.flags), (7777, 0, RST));
        // FIN without ACK with 3 bytes: ack = seq + 1 + 3.
        let fin = v4().tcp(1, 2, 0xffff_fffe, 0, FIN, 0, &[], b"abc");
        let L4::Tcp(t) = parse_ip(&tcp_reset(&fin).unwrap(), 0).unwrap().l4 else { panic!() };
        assert_eq!(t.ack, 2);
        // Never for a RST, a bad checksum, UDP.
        assert_eq!(tcp_reset(&v4().tcp(1, 2, 3, 4, RST | ACK, 0, &[], b"")), None);
        let mut bad = syn.clone();
        bad[36] ^= 1;
        assert_eq!(tcp_reset(&bad), None);
        assert_eq!(tcp_reset(&v4().udp(1, 2, b"")), None);
        assert!(port_unreachable(&v4().udp(1, 2, b""), r4()).is_some());
    }

    #[test]
    fn reject_checks_the_checksum_first() {
        let u = v4().udp(1, 2, b"data");
        assert!(port_unreachable(&u, r4()).is_some());
        let mut bad = u.clone();
        bad[30] ^= 1;
        assert_eq!(port_unreachable(&bad, r4()), None);
        // UDP over IPv4 without a checksum is answered.
        let mut none = u.clone();
        none[26..28].fill(0);
        none[30] ^= 1;
        assert!(port_unreachable(&none, r4()).is_some());
        let mut bad6 = v6().udp(1, 2, b"data");
        let n = bad6.len();
        bad6[n - 1] ^= 1;
        assert_eq!(port_unreachable(&bad6, r6()), None);
        let mut ping = v4().icmp(8, 0, 1, b"x");
        assert!(reject_icmp(IcmpKind::AdminProhibited, &ping, r4()).is_some_and(|e| e[20..22] == [3, 13]));
        ping[28] ^= 1;
        assert_eq!(reject_icmp(IcmpKind::AdminProhibited, &ping, r4()), None);
        // Unchecked protocols.
        assert!(reject_icmp(IcmpKind::AdminProhibited, &v4().raw(253, b"opaque"), r4()).is_some());
    }

    #[test]
    fn echo_replies() {
        let req = v4().icmp(8, 0, 0x1234_0007, b"payload");
        let rep = echo_reply(&req).unwrap();
        let p = parse_ip(&rep, 0).unwrap();
        assert_eq!((p.src[..4].to_vec(), p.dst[..4].to_vec()), (vec![198, 19, 1, 2], vec![198, 18, 0, 2]));
        assert_eq!(&rep[20..], &[0, 0, rep[22], rep[23], 0x12, 0x34, 0, 7, b'p', b'a', b'y', b'l', b'o', b'a', b'd']);
        assert_eq!(checksum::internet(&rep[20..]), 0);
        let req6 = v6().icmp(128, 0, 0x1234_0007, b"payload");
        let rep6 = echo_reply(&req6).unwrap();
        let p = parse_ip(&rep6, 0).unwrap();
        let seg = p.l4_bytes(&rep6);
        assert_eq!((seg[0], checksum::l4(Family::V6, &p.src, &p.dst, 58, seg, seg.len())), (129, 0));
        assert_eq!(echo_reply(&v4().icmp(0, 0, 1, b"")), None);
        assert_eq!(echo_reply(&v4().udp(1, 2, b"")), None);
    }

    #[test]
    fn limiter_per_destination_and_global() {
        let mut l = IcmpLimiter::new(IcmpLimits::default());
        let a = [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let t0 = Timestamp::from_secs(100);
        // A burst of 6 to one destination, then one per second.
        let sent = (0..10).filter(|_| l.allow(t0, Family::V4, &a, 11, 0)).count();
        assert_eq!(sent, 6);
        assert!(!l.allow(Timestamp::from_millis(100_500), Family::V4, &a, 3, 1));
        assert!(l.allow(Timestamp::from_millis(101_000), Family::V4, &a, 3, 1));
        assert!(!l.allow(Timestamp::from_millis(101_000), Family::V4, &a, 3, 1));
        // Not limited: echo replies, fragmentation needed, IPv6 packet too big.
        assert!((0..100).all(|_| l.allow(t0, Family::V4, &a, 0, 0)));
        assert!((0..100).all(|_| l.allow(t0, Family::V4, &a, 3, 4)));
        assert!((0..100).all(|_| l.allow(t0, Family::V6, &a, 2, 0)));
        // Global: 50 at once over many destinations, then 1000/s.
        let mut l = IcmpLimiter::new(IcmpLimits::default());
        let mut n = 0;
        for i in 0..200u8 {
            let mut d = a;
            d[3] = i;
            n += usize::from(l.allow(t0, Family::V6, &d, 1, 0));
        }
        assert_eq!(n, 50);
        let t1 = Timestamp(t0.0 + 30 * MS);
        let mut m = 0;
        for i in 0..200u8 {
            let mut d = a;
            d[4] = i;
            m += usize::from(l.allow(t1, Family::V6, &d, 1, 0));
        }
        assert_eq!(m, 30);
    }

    #[test]
    fn limiter_table_is_bounded() {
        let mut l = IcmpLimiter::new(IcmpLimits { max_peers: 8, msgs_burst: 1000, ..IcmpLimits::default() });
        for i in 0..100u8 {
            let mut d = [0u8; 16];
            d[0] = i;
            assert!(l.allow(Timestamp::from_secs(1), Family::V4, &d, 11, 0));
            assert!(l.peers.len() <= 8);
        }
    }

    proptest::proptest! {
        #[test]
        fn helpers_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), v6: bool) {
            let mut b = b;
            if let Some(x) = b.first_mut() {
                *x = if v6 { 0x60 } else { 0x45 };
            }
            let _ = icmp_error(IcmpKind::TimeExceeded, &b, if v6 { r6() } else { r4() });
            let _ = tcp_reset(&b);
            let _ = echo_reply(&b);
            let _ = decrement_ttl(&mut b);
        }
    }
}
