//! IPv6 Neighbor Discovery (RFC 4861): Neighbor Solicitation and Advertisement messages with their
//! link-layer address options, the solicited-node multicast addresses, and the frames a router sends.
//!
//! [`Ndp::parse`] takes the ICMPv6 message (from its type byte). The checks that need the IP header
//! (hop limit 255, the checksum, the source/destination rules) are the caller's, because it has the
//! parsed [`crate::Packet`].

use std::net::Ipv6Addr;

use crate::build::{ethernet, PacketBuilder};

/// ICMPv6 type of a Neighbor Solicitation.
pub const NS: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const NA: u8 = 136;

/// NA flag bits, in the byte after the checksum.
pub mod flags {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// Option types.
mod opt {
    pub(super) const SOURCE_LLADDR: u8 = 1;
    pub(super) const TARGET_LLADDR: u8 = 2;
}

/// Byte offsets in NS/NA, named once.
mod field {
    use std::ops::Range;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const FLAGS: usize = 4;
    pub(super) const TARGET: Range<usize> = 8..24;
    pub(super) const OPTIONS: usize = 24;
}

/// Why an ICMPv6 message is not a well-formed NS or NA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpError {
    /// Shorter than the 24-byte fixed part.
    Truncated,
    /// Another ICMPv6 type.
    NotNeighbor,
    /// Code other than 0.
    BadCode,
    /// An option with length zero or running past the end, at this offset in the message.
    BadOption { offset: usize },
}

impl std::fmt::Display for NdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NdpError::Truncated => f.write_str("truncated neighbor discovery message"),
            NdpError::NotNeighbor => f.write_str("not a neighbor solicitation or advertisement"),
            NdpError::BadCode => f.write_str("neighbor discovery message with a non-zero code"),
            NdpError::BadOption { offset } => write!(f, "bad neighbor discovery option at byte {offset}"),
        }
    }
}

impl std::error::Error for NdpError {}

/// An NS or NA message's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ndp {
    /// [`NS`] or [`NA`].
    pub ty: u8,
    /// NA flags ([`flags`]); zero for NS.
    pub flags: u8,
    pub target: [u8; 16],
    /// The source link-layer address option of an NS, or the target link-layer address option of
    /// an NA (an option of the other kind is ignored, as RFC 4861 says for unknown options).
    pub lladdr: Option<[u8; 6]>,
}

impl Ndp {
    /// Reads an NS or NA from `icmp`, the ICMPv6 message starting at its type byte.
    pub fn parse(icmp: &[u8]) -> Result<Ndp, NdpError> {
        let ty = *icmp.get(field::TYPE).ok_or(NdpError::Truncated)?;
        if ty != NS && ty != NA {
            return Err(NdpError::NotNeighbor);
        }
        if icmp.len() < field::OPTIONS {
            return Err(NdpError::Truncated);
        }
        if icmp[field::CODE] != 0 {
            return Err(NdpError::BadCode);
        }
        let mut target = [0; 16];
        target.copy_from_slice(&icmp[field::TARGET]);
        let want = if ty == NS { opt::SOURCE_LLADDR } else { opt::TARGET_LLADDR };
        let mut lladdr = None;
        let mut at = field::OPTIONS;
        while at < icmp.len() {
            let (kind, len) = match icmp.get(at..at + 2) {
                Some(h) => (h[0], usize::from(h[1]) * 8),
                None => return Err(NdpError::BadOption { offset: at }),
            };
            if len == 0 || at + len > icmp.len() {
                return Err(NdpError::BadOption { offset: at });
            }
            // Ethernet addresses fill an 8-byte option; longer ones are another link type's.
            if kind == want && len == 8 {
                let mut mac = [0; 6];
                mac.copy_from_slice(&icmp[at + 2..at + 8]);
                lladdr = Some(mac);
            }
            at += len;
        }
        let flags =
            if ty == NA { icmp[field::FLAGS] & (flags::ROUTER | flags::SOLICITED | flags::OVERRIDE) } else { 0 };
        Ok(Ndp { ty, flags, target, lladdr })
    }
}

/// The solicited-node multicast address of `addr` (ff02::1:ffXX:XXXX).
pub fn solicited_node(addr: &[u8; 16]) -> [u8; 16] {
    let mut a = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    a[13..].copy_from_slice(&addr[13..]);
    a
}

/// The Ethernet multicast address of an IPv6 multicast address (33:33 and its last 32 bits).
pub fn multicast_mac(addr: &[u8; 16]) -> [u8; 6] {
    [0x33, 0x33, addr[12], addr[13], addr[14], addr[15]]
}

/// The all-nodes multicast address ff02::1.
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 16], dst: [u8; 16], ty: u8, rest: u32, body: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::v6(Ipv6Addr::from(src), Ipv6Addr::from(dst)).ttl(255).icmp(ty, 0, rest, body);
    ethernet(dst_mac, src_mac, &ip)
}

/// An NS from `mac`/`src` for `target` with the source link-layer option: to the target's
/// solicited-node group, or unicast to `unicast` (a reachability probe of a known neighbour).
pub fn solicitation(mac: [u8; 6], src: [u8; 16], target: [u8; 16], unicast: Option<[u8; 6]>) -> Vec<u8> {
    let (dst_mac, dst) = match unicast {
        Some(m) => (m, target),
        None => {
            let group = solicited_node(&target);
            (multicast_mac(&group), group)
        }
    };
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(&target);
    body[16..].copy_from_slice(&[opt::SOURCE_LLADDR, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
    frame(mac, dst_mac, src, dst, NS, 0, &body)
}

/// An NA from `mac` for our address `target` (also the source address) to `dst`/`dst_mac`, with
/// `flags` and the target link-layer option.
pub fn advertisement(mac: [u8; 6], target: [u8; 16], dst_mac: [u8; 6], dst: [u8; 16], flags: u8) -> Vec<u8> {
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(&target);
    body[16..].copy_from_slice(&[opt::TARGET_LLADDR, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
    frame(mac, dst_mac, target, dst, NA, u32::from(flags) << 24, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::packet::{parse_frame, Family, L4};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    fn a(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn solicitation_is_multicast_with_slla() {
        let f = solicitation(MAC, a("2001:db8::1"), a("2001:db8::1234:5678"), None);
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x34, 0x56, 0x78]);
        let p = parse_frame(&f).unwrap();
        assert_eq!((p.family, p.ttl, p.dst), (Family::V6, 255, a("ff02::1:ff34:5678")));
        assert!(matches!(p.l4, L4::Icmpv6(i) if i.ty == NS));
        let seg = p.l4_bytes(&f);
        assert_eq!(checksum::l4(Family::V6, &p.src, &p.dst, 58, seg, seg.len()), 0);
        let ns = Ndp::parse(seg).unwrap();
        assert_eq!(ns, Ndp { ty: NS, flags: 0, target: a("2001:db8::1234:5678"), lladdr: Some(MAC) });
        let probe = solicitation(MAC, a("2001:db8::1"), a("2001:db8::2"), Some([2, 0, 0, 0, 0, 9]));
        let p = parse_frame(&probe).unwrap();
        assert_eq!((p.dst, &probe[..6]), (a("2001:db8::2"), &[2, 0, 0, 0, 0, 9][..]));
    }

    #[test]
    fn advertisement_carries_flags_and_tlla() {
        let f = advertisement(
            MAC,
            a("2001:db8::1"),
            [2, 0, 0, 0, 0, 2],
            a("2001:db8::2"),
            flags::ROUTER | flags::SOLICITED,
        );
        let p = parse_frame(&f).unwrap();
        let seg = p.l4_bytes(&f);
        assert_eq!(checksum::l4(Family::V6, &p.src, &p.dst, 58, seg, seg.len()), 0);
        let na = Ndp::parse(seg).unwrap();
        assert_eq!(na, Ndp { ty: NA, flags: 0xc0, target: a("2001:db8::1"), lladdr: Some(MAC) });
        assert_eq!(p.src, a("2001:db8::1"));
    }

    #[test]
    fn bad_messages() {
        let f = advertisement(MAC, a("2001:db8::1"), MAC, a("2001:db8::2"), 0);
        let seg = &f[54..];
        assert_eq!(Ndp::parse(&seg[..20]), Err(NdpError::Truncated));
        let mut m = seg.to_vec();
        m[1] = 1;
        assert_eq!(Ndp::parse(&m), Err(NdpError::BadCode));
        let mut m = seg.to_vec();
        m[25] = 0;
        assert_eq!(Ndp::parse(&m), Err(NdpError::BadOption { offset: 24 }));
        let mut m = seg.to_vec();
        m[25] = 2;
        assert_eq!(Ndp::parse(&m), Err(NdpError::BadOption { offset: 24 }));
        let mut m = seg.to_vec();
        m[0] = 128;
        assert_eq!(Ndp::parse(&m), Err(NdpError::NotNeighbor));
        // No options at all: valid, no link-layer address.
        assert_eq!(Ndp::parse(&seg[..24]).unwrap().lladdr, None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(mut b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), na: bool) {
            if let Some(t) = b.first_mut() {
                *t = if na { NA } else { NS };
            }
            let _ = Ndp::parse(&b);
        }
    }
}
