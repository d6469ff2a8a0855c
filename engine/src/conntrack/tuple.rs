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

    /// Whether this is the inverse of `orig` ([`Tuple::invert`]), compared without building it.
    #[inline]
    pub fn answers(&self, orig: &Tuple) -> bool {
        match self.proto {
            ipproto::ICMP | ipproto::ICMPV6 => orig.invert().is_some_and(|r| r == *self),
            _ => {
                self.src == orig.dst
                    && self.dst == orig.src
                    && self.sport == orig.dport
                    && self.dport == orig.sport
                    && self.proto == orig.proto
                    && self.family == orig.family
            }
        }
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

/// The table's hash of a tuple: keyed with a per-process secret, and equal for a tuple and its
/// inverse, so both directions of a connection land in one place.
///
/// Written by hand because it runs once per packet: the two endpoints are put in a canonical
/// order with 128-bit compares, and the five 64-bit words that result are mixed by folded
/// 64×64→128-bit multiplications with secret keys (the construction of foldhash and wyhash).
/// Hashing the same words through `Hash` and foldhash walked the byte arrays field by field and
/// cost several times as much (see `bench/README.md`).
#[derive(Debug, Clone)]
pub struct TupleHasher {
    keys: [u64; 6],
}

/// The high and low halves of the 128-bit product, folded together.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl TupleHasher {
    /// Keys drawn from the operating system's random source, once per table.
    pub fn random() -> TupleHasher {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        TupleHasher { keys: std::array::from_fn(|_| rng.gen()) }
    }

    /// Fixed, publicly known keys: anyone can compute where a tuple lands. For tests and
    /// benchmarks that show why tables use [`TupleHasher::random`].
    pub fn fixed() -> TupleHasher {
        // Digits of pi, as any "nothing up my sleeve" constants.
        TupleHasher {
            keys: [
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
                0x4528_21e6_38d0_1377,
                0xbe54_66cf_34e9_0c6c,
            ],
        }
    }

    /// The hash of `t`.
    #[inline]
    pub fn hash(&self, t: &Tuple) -> u64 {
        let (a, b) = (u128::from_le_bytes(t.src), u128::from_le_bytes(t.dst));
        let (lo, hi, ports) = match t.proto {
            // The type changes between a query and its answer: only the id identifies the flow.
            ipproto::ICMP | ipproto::ICMPV6 => (a.min(b), a.max(b), u64::from(t.sport)),
            _ if (a, t.sport) <= (b, t.dport) => (a, b, u64::from(t.sport) << 16 | u64::from(t.dport)),
            _ => (b, a, u64::from(t.dport) << 16 | u64::from(t.sport)),
        };
        let k = &self.keys;
        let rest = ports | u64::from(t.proto) << 32 | (t.family as u64) << 40;
        let x = fold(lo as u64 ^ k[0], (lo >> 64) as u64 ^ k[1]) ^ fold(hi as u64 ^ k[2], (hi >> 64) as u64 ^ k[3]);
        fold(x ^ k[4], rest ^ k[5])
    }

    /// A keyed hash of `t` together with a 64-bit value `extra` (asymmetric in nothing but
    /// `extra`: a tuple and its inverse still hash alike).
    #[inline]
    pub fn hash_with(&self, t: &Tuple, extra: u64) -> u64 {
        fold(self.hash(t) ^ self.keys[1], extra ^ self.keys[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tuple(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, v6: bool, proto: u8) -> Tuple {
        let family = if v6 { Family::V6 } else { Family::V4 };
        Tuple { src, dst, sport, dport, family, proto }
    }

    proptest! {
        #[test]
        fn a_tuple_and_its_inverse_hash_alike(
            src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, v6: bool,
            proto in prop::sample::select(vec![6u8, 17, 136, 132, 47, 1, 58, 50]),
        ) {
            let h = TupleHasher::random();
            // ICMP(v6) tuples that can be inverted: echo request / reply.
            let dport = match proto { 1 => 8 << 8, 58 => 128 << 8, _ => dport };
            let t = tuple(src, dst, sport, dport, v6, proto);
            let inv = t.invert().expect("invertible");
            prop_assert_eq!(h.hash(&t), h.hash(&inv));
            prop_assert_eq!(h.hash_with(&t, 7), h.hash_with(&inv, 7));
        }
    }

    #[test]
    fn every_field_and_the_key_change_the_hash() {
        let t = tuple([1; 16], [2; 16], 1000, 80, false, 6);
        let h = TupleHasher::fixed();
        let mut variants = vec![
            tuple([3; 16], [2; 16], 1000, 80, false, 6),
            tuple([1; 16], [3; 16], 1000, 80, false, 6),
            tuple([1; 16], [2; 16], 1001, 80, false, 6),
            tuple([1; 16], [2; 16], 1000, 81, false, 6),
            tuple([1; 16], [2; 16], 1000, 80, true, 6),
            tuple([1; 16], [2; 16], 1000, 80, false, 17),
            // Ports swapped without addresses: a different flow.
            tuple([1; 16], [2; 16], 80, 1000, false, 6),
        ]
        .into_iter()
        .map(|v| h.hash(&v))
        .collect::<Vec<_>>();
        variants.push(TupleHasher::random().hash(&t));
        assert!(variants.iter().all(|&v| v != h.hash(&t)), "{variants:x?}");
    }
}
