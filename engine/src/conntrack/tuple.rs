//! Connection tuples: what identifies one direction of a connection.

use proto::packet::{ipproto, Family, Packet, L4};

/// One direction of a connection, as the kernel's `nf_conntrack_tuple`.
///
/// `sport`/`dport` carry the L4 identifiers: ports for TCP, UDP, UDP-Lite and SCTP; for ICMP and
/// ICMPv6 `sport` is the query id and `dport` is `type << 8 | code`; for GRE they are the keys
/// (PPTP: `dport` is the call ID). Other protocols use zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: Family,
    pub proto: u8,
}

/// Direction of a packet relative to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dir {
    Original = 0,
    Reply = 1,
}

impl Dir {
    /// The other direction.
    pub fn flip(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }

    /// `original` or `reply`, as the replay output prints it.
    pub fn name(self) -> &'static str {
        match self {
            Dir::Original => "original",
            Dir::Reply => "reply",
        }
    }
}

/// The ICMP query types that have a reply type, as (request, reply) pairs.
const ICMP_PAIRS: [(u8, u8); 4] = [(8, 0), (13, 14), (15, 16), (17, 18)];
/// The ICMPv6 query types that have a reply type: echo and node information.
const ICMPV6_PAIRS: [(u8, u8); 2] = [(128, 129), (139, 140)];

/// The type that answers ICMP(v6) type `ty`, either way round; `None` when it has none.
pub(crate) fn icmp_inverse(family_v6: bool, ty: u8) -> Option<u8> {
    let pairs: &[(u8, u8)] = if family_v6 { &ICMPV6_PAIRS } else { &ICMP_PAIRS };
    pairs.iter().find_map(|&(a, b)| {
        if a == ty {
            Some(b)
        } else if b == ty {
            Some(a)
        } else {
            None
        }
    })
}

impl Tuple {
    /// The tuple of `pkt` in its own direction. `None` when the protocol header is missing
    /// (a later fragment) or an ICMP type cannot be inverted.
    pub fn of(pkt: &Packet) -> Option<Tuple> {
        let (sport, dport) = match pkt.l4 {
            L4::Tcp(t) => (t.sport, t.dport),
            L4::Udp(u) | L4::UdpLite(u) => (u.sport, u.dport),
            L4::Sctp(s) => (s.sport, s.dport),
            L4::Icmp(i) | L4::Icmpv6(i) => (i.id, u16::from(i.ty) << 8 | u16::from(i.code)),
            // Without the PPTP helper's keymap the source key is always 0 (nf_conntrack_proto_gre.c).
            L4::Gre(g) => (0, g.call_id.unwrap_or(0)),
            L4::Other => match pkt.proto {
                ipproto::TCP | ipproto::UDP | ipproto::UDPLITE | ipproto::SCTP | ipproto::ICMP | ipproto::ICMPV6 => {
                    return None
                }
                _ => (0, 0),
            },
        };
        Some(Tuple { src: pkt.src, dst: pkt.dst, sport, dport, family: pkt.family, proto: pkt.proto })
    }

    /// The tuple of the other direction (`nf_ct_invert_tuple`). ICMP types become their answer
    /// types; `None` for an ICMP type that has no answer.
    pub fn invert(&self) -> Option<Tuple> {
        let (sport, dport) = match self.proto {
            ipproto::ICMP | ipproto::ICMPV6 => {
                let ty = (self.dport >> 8) as u8;
                let inv = icmp_inverse(self.proto == ipproto::ICMPV6, ty)?;
                (self.sport, u16::from(inv) << 8 | (self.dport & 0xff))
            }
            ipproto::GRE => (self.dport, self.sport),
            _ => (self.dport, self.sport),
        };
        Some(Tuple { src: self.dst, dst: self.src, sport, dport, family: self.family, proto: self.proto })
    }

    /// A value equal for a tuple and its inverse, so both directions of a connection hash alike.
    pub(crate) fn symmetric_key(&self) -> (Family, u8, [u8; 16], [u8; 16], u32) {
        let (lo, hi, ports) = match self.proto {
            ipproto::ICMP | ipproto::ICMPV6 => {
                let (lo, hi) = if self.src <= self.dst { (self.src, self.dst) } else { (self.dst, self.src) };
                (lo, hi, u32::from(self.sport))
            }
            _ => {
                let a = (self.src, self.sport);
                let b = (self.dst, self.dport);
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                (lo.0, hi.0, u32::from(lo.1) << 16 | u32::from(hi.1))
            }
        };
        (self.family, self.proto, lo, hi, ports)
    }

    /// ICMP type (for ICMP tuples).
    pub fn icmp_type(&self) -> u8 {
        (self.dport >> 8) as u8
    }

    /// ICMP code (for ICMP tuples).
    pub fn icmp_code(&self) -> u8 {
        (self.dport & 0xff) as u8
    }
}
