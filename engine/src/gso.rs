//! GSO super-packets: what they are, how large the packets cut from one are, and cutting one up in
//! software when it cannot be passed on whole.
//!
//! With segmentation offload on (TSO/GSO on a veth or a NIC that hands packets up before cutting
//! them), a sending stack builds one *super-packet*: an IP datagram holding a single TCP segment
//! (or UDP datagram) with the payload of many, up to 64 KiB, and a description of how to cut it:
//! the kind (TCP over IPv4 or IPv6, UDP), the payload size of each piece (`gso_size`, the MSS) and
//! the length of the headers every piece repeats. Its L4 checksum is *partial* (the field holds
//! the pseudo-header's sum only), left for whoever cuts it to finish per piece. Linux carries this
//! description beside the bytes as `struct virtio_net_hdr` (the `io` ports read and write it).
//!
//! ferrowall parses, filters and tracks a super-packet once, as the kernel's own forwarding path
//! does with GSO and GRO packets, and passes it on whole with its description, so that the egress
//! (the kernel, a device with TSO) cuts it. The IP header of a super-packet is that of the whole:
//! the IPv4 total length, or the IPv6 payload length, counts the whole payload (at most 65535).
//!
//! Where a super-packet cannot be passed on whole — its next hop is not resolved yet, so it must
//! be held and later sent as plain frames, or its pieces exceed the next link's MTU and must be
//! fragmented — [`segment`] cuts it as Linux's `tcp_gso_segment`/`__udp_gso_segment` do: each
//! piece gets the headers with its own lengths, IPv4 identification (incremented per piece) and
//! header checksum, TCP sequence number (FIN and PSH only on the last piece, CWR only on the
//! first) and a complete L4 checksum.

use proto::checksum;
use proto::packet::{parse_ip, tcp_flags, Packet, L4};
use proto::Family;

/// What a super-packet holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`, `SKB_GSO_TCPV4`).
    Tcp4,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`, `SKB_GSO_TCPV6`).
    Tcp6,
    /// UDP datagrams of `size` bytes each (`VIRTIO_NET_HDR_GSO_UDP_L4`, `SKB_GSO_UDP_L4`).
    Udp,
}

/// How to cut a super-packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    pub kind: GsoKind,
    /// The TCP segments carry ECN's CWR on the first piece only (`VIRTIO_NET_HDR_GSO_ECN`).
    pub ecn: bool,
    /// Payload bytes per piece (the MSS); at least 1.
    pub size: u16,
    /// The length of the headers, from the start of the frame to the payload: a hint to the
    /// receiver of how much to keep linear.
    pub hdr_len: u16,
}

impl Gso {
    /// Whether this describes the packet `p`: the kind is its L4 protocol and family, and it is
    /// not a fragment.
    pub fn fits(&self, p: &Packet) -> bool {
        self.size > 0
            && p.fragment.is_none()
            && matches!(
                (self.kind, p.family, p.l4),
                (GsoKind::Tcp4, Family::V4, L4::Tcp(_))
                    | (GsoKind::Tcp6, Family::V6, L4::Tcp(_))
                    | (GsoKind::Udp, _, L4::Udp(_))
            )
    }

    /// The IP length of the largest packet cut from `p` (what an MTU is compared with, as Linux's
    /// `skb_gso_validate_network_len` does): the IP and L4 headers plus one piece's payload, or
    /// the whole when it is smaller.
    pub fn segment_ip_len(&self, p: &Packet) -> usize {
        let headers = p.l4_offset - p.l3_offset + l4_header_len(p);
        (headers + usize::from(self.size)).min(p.end - p.l3_offset)
    }
}

/// The length of `p`'s TCP or UDP header (0 for anything else).
pub fn l4_header_len(p: &Packet) -> usize {
    match p.l4 {
        L4::Tcp(t) => usize::from(t.header_len),
        L4::Udp(_) => 8,
        _ => 0,
    }
}

/// The offset of the checksum field in `p`'s TCP or UDP header.
pub fn checksum_field(p: &Packet) -> Option<usize> {
    match p.l4 {
        L4::Tcp(_) => Some(16),
        L4::Udp(_) => Some(6),
        _ => None,
    }
}

/// Cuts the super-packet `datagram` (an IP datagram, its header at 0, described by `gso`) into the
/// datagrams a link carries, each with complete checksums. `None` when `gso` does not describe it
/// or it does not parse. A datagram with no more payload than one piece comes back as one piece
/// (with its checksum completed).
pub fn segment(datagram: &[u8], gso: &Gso) -> Option<Vec<Vec<u8>>> {
    let p = parse_ip(datagram, 0).ok()?;
    if !gso.fits(&p) || p.end > datagram.len() {
        return None;
    }
    let d = &datagram[..p.end];
    let hlen = p.l4_offset + l4_header_len(&p);
    if hlen > d.len() {
        return None;
    }
    let (headers, payload) = d.split_at(hlen);
    let size = usize::from(gso.size);
    let pieces = payload.len().div_ceil(size).max(1);
    let ipv4_id = (p.family == Family::V4).then(|| u16::from_be_bytes([d[4], d[5]]));
    let mut out = Vec::with_capacity(pieces);
    for i in 0..pieces {
        let part = payload.get(i * size..((i + 1) * size).min(payload.len())).unwrap_or(&[]);
        let mut s = Vec::with_capacity(hlen + part.len());
        s.extend_from_slice(headers);
        s.extend_from_slice(part);
        let l4 = p.l4_offset;
        match p.l4 {
            L4::Tcp(t) => {
                let seq = t.seq.wrapping_add((i * size) as u32);
                s[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                let mut flags = t.flags;
                if i + 1 < pieces {
                    flags &= !(tcp_flags::FIN | tcp_flags::PSH);
                }
                if i > 0 {
                    flags &= !tcp_flags::CWR;
                }
                s[l4 + 13] = flags;
            }
            L4::Udp(_) => {
                let len = (s.len() - l4) as u16;
                s[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
            }
            _ => return None,
        }
        let total = s.len();
        match ipv4_id {
            Some(id) => {
                let ihl = usize::from(s[0] & 0x0f) * 4;
                s[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                s[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
                s[10..12].fill(0);
                let c = checksum::internet(&s[..ihl]);
                s[10..12].copy_from_slice(&c.to_be_bytes());
            }
            None => s[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes()),
        }
        let field = l4 + checksum_field(&p)?;
        s[field..field + 2].fill(0);
        let mut c = checksum::l4(p.family, &p.src, &p.dst, p.proto, &s[l4..], s.len() - l4);
        if matches!(p.l4, L4::Udp(_)) && c == 0 {
            c = 0xffff;
        }
        s[field..field + 2].copy_from_slice(&c.to_be_bytes());
        out.push(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proto::build::PacketBuilder;
    use proto::packet::parse_ip;

    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A super-segment as a sending stack leaves it: lengths of the whole, checksum partial
    /// (here: garbage, which segmentation must not care about).
    fn super_tcp(b: &PacketBuilder, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut d = b.tcp(40000, 80, 1_000_000, 7, flags, 512, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], payload);
        let l4 = if d[0] >> 4 == 4 { 20 } else { 40 };
        d[l4 + 16..l4 + 18].copy_from_slice(&[0xde, 0xad]);
        d
    }

    #[test]
    fn a_tcp_super_segment_is_cut_into_mss_pieces_with_their_own_headers() {
        let v4 = PacketBuilder::v4(Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 19, 1, 2)).id(100);
        let v6 = PacketBuilder::v6("2001:2:0:1::2".parse().unwrap(), "2001:2:0:2::2".parse().unwrap());
        for (b, kind) in [(v4, GsoKind::Tcp4), (v6, GsoKind::Tcp6)] {
            let payload = pattern(10_000);
            let flags = tcp_flags::ACK | tcp_flags::PSH | tcp_flags::FIN | tcp_flags::CWR;
            let d = super_tcp(&b, &payload, flags);
            let gso = Gso { kind, ecn: true, size: 1448, hdr_len: 0 };
            let p = parse_ip(&d, 0).unwrap();
            assert!(gso.fits(&p));
            let hdrs = p.l4_offset + 32;
            assert_eq!(gso.segment_ip_len(&p), hdrs + 1448);
            let pieces = segment(&d, &gso).unwrap();
            assert_eq!(pieces.len(), 7, "10000 bytes in 1448-byte pieces");
            let mut got = Vec::new();
            for (i, s) in pieces.iter().enumerate() {
                let q = parse_ip(s, 0).unwrap();
                assert_eq!(q.end, s.len());
                let L4::Tcp(t) = q.l4 else { panic!("not TCP") };
                assert_eq!(t.seq, 1_000_000 + (i as u32) * 1448);
                assert_eq!(t.ack, 7);
                let last = i + 1 == pieces.len();
                assert_eq!(t.flags & (tcp_flags::FIN | tcp_flags::PSH) != 0, last, "piece {i}");
                assert_eq!(t.flags & tcp_flags::CWR != 0, i == 0, "piece {i}");
                assert_eq!(t.options(&s[q.l4_offset..]).timestamp, Some((1, 2)), "options repeated");
                assert_eq!(checksum::l4(q.family, &q.src, &q.dst, 6, &s[q.l4_offset..], s.len()), 0);
                if q.family == Family::V4 {
                    assert_eq!(checksum::internet(&s[..20]), 0);
                    assert_eq!(u16::from_be_bytes([s[4], s[5]]), 100 + i as u16);
                }
                assert!(s.len() <= hdrs + 1448);
                got.extend_from_slice(&s[hdrs..]);
            }
            assert_eq!(got, payload);
        }
    }

    #[test]
    fn udp_super_datagrams_become_datagrams_and_mismatches_are_refused() {
        let b = PacketBuilder::v4(Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 19, 1, 2));
        let payload = pattern(3000);
        let d = b.udp(5000, 53, &payload);
        let gso = Gso { kind: GsoKind::Udp, ecn: false, size: 1200, hdr_len: 0 };
        let pieces = segment(&d, &gso).unwrap();
        assert_eq!(pieces.iter().map(|s| s.len() - 28).collect::<Vec<_>>(), [1200, 1200, 600]);
        for s in &pieces {
            let q = parse_ip(s, 0).unwrap();
            let L4::Udp(u) = q.l4 else { panic!("not UDP") };
            assert_eq!(usize::from(u.len_or_coverage), s.len() - 20);
            assert_eq!(checksum::l4(q.family, &q.src, &q.dst, 17, &s[20..], s.len() - 20), 0);
        }
        // The description must be the packet's.
        assert!(segment(&d, &Gso { kind: GsoKind::Tcp4, ..gso }).is_none());
        assert!(segment(&d, &Gso { size: 0, ..gso }).is_none());
        let tcp6 = super_tcp(
            &PacketBuilder::v6("2001:2::1".parse().unwrap(), "2001:2::2".parse().unwrap()),
            &payload,
            tcp_flags::ACK,
        );
        assert!(segment(&tcp6, &Gso { kind: GsoKind::Tcp4, ..gso }).is_none());
        // Small enough for one piece: one piece, checksum completed.
        let one = segment(&tcp6, &Gso { kind: GsoKind::Tcp6, size: 4000, ..gso }).unwrap();
        assert_eq!(one.len(), 1);
        let q = parse_ip(&one[0], 0).unwrap();
        assert_eq!(checksum::l4(q.family, &q.src, &q.dst, 6, &one[0][40..], one[0].len() - 40), 0);
    }

    proptest::proptest! {
        /// Whatever the bytes and the description, cutting never panics, and what it gives back
        /// parses, fits the piece size and carries the whole payload.
        #[test]
        fn cutting_mangled_super_packets_never_panics(
            len in 0usize..5000,
            v6: bool,
            udp: bool,
            size in 0u16..3000,
            edits in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..4),
        ) {
            let b = if v6 {
                PacketBuilder::v6("2001:2::1".parse().unwrap(), "2001:2::2".parse().unwrap())
            } else {
                PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1))
            };
            let payload = pattern(len);
            let mut d = if udp { b.udp(1, 2, &payload) } else { super_tcp(&b, &payload, tcp_flags::ACK) };
            for (at, v) in &edits {
                if let Some(x) = d.get_mut(*at) {
                    *x = *v;
                }
            }
            let kind = match (udp, v6) {
                (true, _) => GsoKind::Udp,
                (false, false) => GsoKind::Tcp4,
                (false, true) => GsoKind::Tcp6,
            };
            let gso = Gso { kind, ecn: false, size, hdr_len: 0 };
            if let Some(pieces) = segment(&d, &gso) {
                let mut carried = 0;
                for s in &pieces {
                    let q = parse_ip(s, 0).expect("a piece parses");
                    let hlen = q.l4_offset + l4_header_len(&q);
                    proptest::prop_assert!(s.len() - hlen <= usize::from(size));
                    carried += s.len() - hlen;
                }
                let p = parse_ip(&d, 0).unwrap();
                proptest::prop_assert_eq!(carried, p.end - p.l4_offset - l4_header_len(&p));
            }
        }
    }
}
