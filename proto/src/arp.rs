//! ARP for IPv4 over Ethernet (RFC 826): the 28-byte packet, its view and repr, and the frames a
//! router sends (requests, probes, replies).
//!
//! ```
//! use ferrowall_proto::arp::{self, Arp};
//! let mac = [2, 0, 0, 0, 0, 1];
//! let frame = arp::request(mac, [198, 18, 0, 1], [198, 18, 0, 2], None);
//! let a = Arp::parse(&frame[14..]).unwrap();
//! assert_eq!((a.op, a.spa, a.tpa), (arp::op::REQUEST, [198, 18, 0, 1], [198, 18, 0, 2]));
//! ```

use crate::packet::ethertype;

/// ARP operation codes.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// Byte offsets in the ARP packet, named once.
mod field {
    use std::ops::Range;
    pub(super) const HTYPE: Range<usize> = 0..2;
    pub(super) const PTYPE: Range<usize> = 2..4;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: Range<usize> = 6..8;
    pub(super) const SHA: Range<usize> = 8..14;
    pub(super) const SPA: Range<usize> = 14..18;
    pub(super) const THA: Range<usize> = 18..24;
    pub(super) const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;
/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Why bytes are not an ARP packet we handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    /// Fewer than 28 bytes.
    Truncated,
    /// Not Ethernet (htype 1, hlen 6) resolving IPv4 (ptype 0x0800, plen 4).
    Unsupported,
}

impl std::fmt::Display for ArpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArpError::Truncated => f.write_str("truncated ARP packet"),
            ArpError::Unsupported => f.write_str("ARP for other than Ethernet/IPv4"),
        }
    }
}

impl std::error::Error for ArpError {}

/// An Ethernet/IPv4 ARP packet's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    /// Sender hardware and protocol address.
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    /// Target hardware and protocol address.
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(b);
    a
}

impl Arp {
    /// Reads the ARP packet at the start of `b` (the Ethernet payload; padding after it is ignored).
    pub fn parse(b: &[u8]) -> Result<Arp, ArpError> {
        let b = b.get(..LEN).ok_or(ArpError::Truncated)?;
        if b[field::HTYPE] != [0, 1] || b[field::PTYPE] != [8, 0] || b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return Err(ArpError::Unsupported);
        }
        Ok(Arp {
            op: u16::from_be_bytes(arr(&b[field::OPER])),
            sha: arr(&b[field::SHA]),
            spa: arr(&b[field::SPA]),
            tha: arr(&b[field::THA]),
            tpa: arr(&b[field::TPA]),
        })
    }

    /// The 28 bytes of this packet.
    pub fn emit(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[field::HTYPE].copy_from_slice(&[0, 1]);
        b[field::PTYPE].copy_from_slice(&[8, 0]);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER].copy_from_slice(&self.op.to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sha);
        b[field::SPA].copy_from_slice(&self.spa);
        b[field::THA].copy_from_slice(&self.tha);
        b[field::TPA].copy_from_slice(&self.tpa);
        b
    }

    /// This packet in an Ethernet frame to `eth_dst` from `eth_src` (not padded to 60 bytes: the
    /// NIC or the kernel pads short frames).
    pub fn frame(&self, eth_dst: [u8; 6], eth_src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + LEN);
        f.extend_from_slice(&eth_dst);
        f.extend_from_slice(&eth_src);
        f.extend_from_slice(&ethertype::ARP.to_be_bytes());
        f.extend_from_slice(&self.emit());
        f
    }

    /// Whether this is gratuitous: the sender announces its own address (`spa == tpa`).
    pub fn is_gratuitous(&self) -> bool {
        self.spa == self.tpa
    }
}

/// A request from `mac`/`ip` for `target`, broadcast, or unicast to `unicast` (a reachability
/// probe of a known neighbour, as Linux sends in the PROBE state). The target hardware address is
/// zero, as Linux sends it.
pub fn request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4], unicast: Option<[u8; 6]>) -> Vec<u8> {
    Arp { op: op::REQUEST, sha: mac, spa: ip, tha: [0; 6], tpa: target }.frame(unicast.unwrap_or(BROADCAST), mac)
}

/// The reply to `req` from `mac`, which owns `req.tpa`: unicast back to the requester.
pub fn reply(req: &Arp, mac: [u8; 6]) -> Vec<u8> {
    Arp { op: op::REPLY, sha: mac, spa: req.tpa, tha: req.sha, tpa: req.spa }.frame(req.sha, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn request_reply_round_trip() {
        let f = request(MAC, [10, 0, 0, 1], [10, 0, 0, 2], None);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &BROADCAST);
        assert_eq!(&f[12..14], &[8, 6]);
        let req = Arp::parse(&f[14..]).unwrap();
        assert_eq!(req, Arp { op: op::REQUEST, sha: MAC, spa: [10, 0, 0, 1], tha: [0; 6], tpa: [10, 0, 0, 2] });
        assert!(!req.is_gratuitous());
        let r = reply(&req, PEER);
        assert_eq!(&r[..6], &MAC);
        let rep = Arp::parse(&r[14..]).unwrap();
        assert_eq!((rep.op, rep.sha, rep.spa, rep.tha, rep.tpa), (op::REPLY, PEER, [10, 0, 0, 2], MAC, [10, 0, 0, 1]));
        assert_eq!(Arp::parse(&rep.emit()).unwrap(), rep);
        let probe = request(MAC, [10, 0, 0, 1], [10, 0, 0, 2], Some(PEER));
        assert_eq!(&probe[..6], &PEER);
    }

    #[test]
    fn golden_request_bytes() {
        // As tcpdump -xx shows a Linux request "who-has 10.0.0.2 tell 10.0.0.1".
        let f = request(MAC, [10, 0, 0, 1], [10, 0, 0, 2], None);
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, // Ethernet
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn rejects_short_and_foreign() {
        let f = request(MAC, [10, 0, 0, 1], [10, 0, 0, 2], None);
        assert_eq!(Arp::parse(&f[14..41]), Err(ArpError::Truncated));
        let mut b = f[14..].to_vec();
        b[1] = 6; // IEEE 802 htype
        assert_eq!(Arp::parse(&b), Err(ArpError::Unsupported));
        // Ethernet padding after the packet is fine.
        let mut padded = f[14..].to_vec();
        padded.extend_from_slice(&[0; 18]);
        assert!(Arp::parse(&padded).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(a) = Arp::parse(&b) {
                proptest::prop_assert_eq!(&a.emit()[..], &b[..LEN]);
            }
        }
    }
}
