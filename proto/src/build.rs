//! Building packets: whole IP datagrams with correct lengths and checksums, for tests,
//! benchmarks, fuzz seeds and the packets ferrowall itself sends.
//!
//! ```
//! use ferrowall_proto::build::{opt, PacketBuilder};
//! use ferrowall_proto::packet::tcp_flags::SYN;
//! let ip = PacketBuilder::v4("198.18.0.1".parse().unwrap(), "198.19.0.1".parse().unwrap());
//! let syn = ip.tcp(40000, 80, 1000, 0, SYN, 64240, &[opt::mss(1460), opt::wscale(7)].concat(), b"");
//! assert!(ferrowall_proto::packet::parse_ip(&syn, 0).is_ok());
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::packet::{ipproto, Family};

/// TCP option encoders; concatenate them and pass the bytes to [`PacketBuilder::tcp`], which pads.
pub mod opt {
    /// Maximum segment size.
    pub fn mss(v: u16) -> Vec<u8> {
        let b = v.to_be_bytes();
        vec![2, 4, b[0], b[1]]
    }
    /// Window scale shift.
    pub fn wscale(shift: u8) -> Vec<u8> {
        vec![3, 3, shift]
    }
    /// SACK permitted.
    pub fn sack_perm() -> Vec<u8> {
        vec![4, 2]
    }
    /// SACK blocks (left, right edges).
    pub fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut v = vec![5, (2 + 8 * blocks.len()) as u8];
        for (l, r) in blocks {
            v.extend_from_slice(&l.to_be_bytes());
            v.extend_from_slice(&r.to_be_bytes());
        }
        v
    }
    /// Timestamps (value, echo reply).
    pub fn timestamp(val: u32, ecr: u32) -> Vec<u8> {
        let mut v = vec![8, 10];
        v.extend_from_slice(&val.to_be_bytes());
        v.extend_from_slice(&ecr.to_be_bytes());
        v
    }
    /// No-operation (padding).
    pub fn nop() -> Vec<u8> {
        vec![1]
    }
}

/// One SCTP chunk to put in a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub ty: u8,
    pub flags: u8,
    pub value: Vec<u8>,
}

impl Chunk {
    /// A chunk of type `ty` with `flags` and `value`.
    pub fn new(ty: u8, flags: u8, value: &[u8]) -> Chunk {
        Chunk { ty, flags, value: value.to_vec() }
    }

    /// An INIT or INIT ACK value: initiate tag, a_rwnd, streams and initial TSN.
    pub fn init_value(initiate_tag: u32, initial_tsn: u32) -> Vec<u8> {
        let mut v = initiate_tag.to_be_bytes().to_vec();
        v.extend_from_slice(&65535u32.to_be_bytes());
        v.extend_from_slice(&[0, 10, 0, 10]);
        v.extend_from_slice(&initial_tsn.to_be_bytes());
        v
    }
}

/// Builds datagrams between two addresses.
#[derive(Debug, Clone)]
pub struct PacketBuilder {
    family: Family,
    src: [u8; 16],
    dst: [u8; 16],
    ttl: u8,
    id: u16,
    /// IPv6 extension headers to put before the upper layer: (kind, body length in 8-byte units).
    ext: Vec<u8>,
}

impl PacketBuilder {
    /// IPv4 from `src` to `dst`, TTL 64.
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr) -> PacketBuilder {
        let mut s = [0; 16];
        let mut d = [0; 16];
        s[..4].copy_from_slice(&src.octets());
        d[..4].copy_from_slice(&dst.octets());
        PacketBuilder { family: Family::V4, src: s, dst: d, ttl: 64, id: 1, ext: Vec::new() }
    }

    /// IPv6 from `src` to `dst`, hop limit 64.
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr) -> PacketBuilder {
        PacketBuilder { family: Family::V6, src: src.octets(), dst: dst.octets(), ttl: 64, id: 1, ext: Vec::new() }
    }

    /// The same endpoints the other way round.
    pub fn reverse(&self) -> PacketBuilder {
        PacketBuilder { src: self.dst, dst: self.src, ..self.clone() }
    }

    /// Sets the TTL / hop limit.
    pub fn ttl(mut self, ttl: u8) -> PacketBuilder {
        self.ttl = ttl;
        self
    }

    /// Sets the IPv4 identification.
    pub fn id(mut self, id: u16) -> PacketBuilder {
        self.id = id;
        self
    }

    /// IPv6 only: extension headers (ipproto::HOPOPTS, DSTOPTS, ROUTING) placed before the upper
    /// layer, each the minimal 8 bytes (PadN options; routing type 4 with segments left 0).
    pub fn ext_headers(mut self, kinds: &[u8]) -> PacketBuilder {
        self.ext = kinds.to_vec();
        self
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// A datagram carrying `l4` (whose checksum the caller already set) as protocol `proto`.
    pub fn ip(&self, proto: u8, l4: &[u8]) -> Vec<u8> {
        match self.family {
            Family::V4 => {
                let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, self.ttl, proto, 0, 0];
                p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                p[4..6].copy_from_slice(&self.id.to_be_bytes());
                p.extend_from_slice(&self.src[..4]);
                p.extend_from_slice(&self.dst[..4]);
                let c = checksum::internet(&p);
                p[10..12].copy_from_slice(&c.to_be_bytes());
                p.extend_from_slice(l4);
                p
            }
            Family::V6 => {
                let mut ext = Vec::new();
                let first = self.ext.first().copied().unwrap_or(proto);
                for (i, &kind) in self.ext.iter().enumerate() {
                    let next = self.ext.get(i + 1).copied().unwrap_or(proto);
                    match kind {
                        ipproto::ROUTING => ext.extend_from_slice(&[next, 0, 4, 0, 0, 0, 0, 0]),
                        _ => ext.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
                    }
                }
                let mut p = vec![0x60, 0, 0, 0, 0, 0, first, self.ttl];
                p[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                p.extend_from_slice(&self.src);
                p.extend_from_slice(&self.dst);
                p.extend_from_slice(&ext);
                p.extend_from_slice(l4);
                p
            }
        }
    }

    fn l4_checksum(&self, proto: u8, seg: &mut [u8], at: usize, cover: usize) {
        seg[at..at + 2].fill(0);
        let c = checksum::l4(self.family, &self.src, &self.dst, proto, seg, cover);
        seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// A TCP segment. `opts` is padded with NOPs to a multiple of 4 bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        &self,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        opts: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut o = opts.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(1);
        }
        let hlen = 20 + o.len();
        let mut s = Vec::with_capacity(hlen + payload.len());
        s.extend_from_slice(&sport.to_be_bytes());
        s.extend_from_slice(&dport.to_be_bytes());
        s.extend_from_slice(&seq.to_be_bytes());
        s.extend_from_slice(&ack.to_be_bytes());
        s.push(((hlen / 4) as u8) << 4);
        s.push(flags);
        s.extend_from_slice(&window.to_be_bytes());
        s.extend_from_slice(&[0, 0, 0, 0]);
        s.extend_from_slice(&o);
        s.extend_from_slice(payload);
        let n = s.len();
        self.l4_checksum(ipproto::TCP, &mut s, 16, n);
        self.ip(ipproto::TCP, &s)
    }

    /// A UDP datagram.
    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut s = Vec::with_capacity(8 + payload.len());
        s.extend_from_slice(&sport.to_be_bytes());
        s.extend_from_slice(&dport.to_be_bytes());
        s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(payload);
        let n = s.len();
        self.l4_checksum(ipproto::UDP, &mut s, 6, n);
        if s[6..8] == [0, 0] {
            // A computed zero is sent as all ones (RFC 768).
            s[6..8].copy_from_slice(&[0xff, 0xff]);
        }
        self.ip(ipproto::UDP, &s)
    }

    /// A UDP-Lite datagram with checksum coverage `coverage` (0 = everything).
    pub fn udplite(&self, sport: u16, dport: u16, coverage: u16, payload: &[u8]) -> Vec<u8> {
        let mut s = Vec::with_capacity(8 + payload.len());
        s.extend_from_slice(&sport.to_be_bytes());
        s.extend_from_slice(&dport.to_be_bytes());
        s.extend_from_slice(&coverage.to_be_bytes());
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(payload);
        let cover = if coverage == 0 { s.len() } else { usize::from(coverage) };
        self.l4_checksum(ipproto::UDPLITE, &mut s, 6, cover);
        if s[6..8] == [0, 0] {
            s[6..8].copy_from_slice(&[0xff, 0xff]);
        }
        self.ip(ipproto::UDPLITE, &s)
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) message; `rest` is the second header word (id << 16 | seq
    /// for queries, unused/MTU/pointer for errors), `payload` follows (for errors: the quoted
    /// datagram).
    pub fn icmp(&self, ty: u8, code: u8, rest: u32, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![ty, code, 0, 0];
        s.extend_from_slice(&rest.to_be_bytes());
        s.extend_from_slice(payload);
        let c = match self.family {
            Family::V4 => checksum::internet(&s),
            Family::V6 => checksum::l4(self.family, &self.src, &self.dst, ipproto::ICMPV6, &s, s.len()),
        };
        s[2..4].copy_from_slice(&c.to_be_bytes());
        let proto = if self.family == Family::V4 { ipproto::ICMP } else { ipproto::ICMPV6 };
        self.ip(proto, &s)
    }

    /// An SCTP packet with verification tag `vtag` and `chunks`, CRC32c filled in.
    pub fn sctp(&self, sport: u16, dport: u16, vtag: u32, chunks: &[Chunk]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&sport.to_be_bytes());
        s.extend_from_slice(&dport.to_be_bytes());
        s.extend_from_slice(&vtag.to_be_bytes());
        s.extend_from_slice(&[0, 0, 0, 0]);
        for c in chunks {
            s.push(c.ty);
            s.push(c.flags);
            s.extend_from_slice(&((4 + c.value.len()) as u16).to_be_bytes());
            s.extend_from_slice(&c.value);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        }
        checksum::sctp_fill(&mut s);
        self.ip(ipproto::SCTP, &s)
    }

    /// A GRE packet. Version 0: `key` (if any) goes in the key field. Version 1 (PPTP): the key
    /// field carries payload length and `call_id`.
    pub fn gre(&self, version: u8, protocol: u16, key: Option<u32>, call_id: u16, payload: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        if version == 1 {
            s.extend_from_slice(&[0x20, 0x01]);
            s.extend_from_slice(&protocol.to_be_bytes());
            s.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            s.extend_from_slice(&call_id.to_be_bytes());
        } else {
            s.extend_from_slice(&[if key.is_some() { 0x20 } else { 0 }, version & 7]);
            s.extend_from_slice(&protocol.to_be_bytes());
            if let Some(k) = key {
                s.extend_from_slice(&k.to_be_bytes());
            }
        }
        s.extend_from_slice(payload);
        self.ip(ipproto::GRE, &s)
    }

    /// A datagram of any protocol with `payload` as its body.
    pub fn raw(&self, proto: u8, payload: &[u8]) -> Vec<u8> {
        self.ip(proto, payload)
    }
}

/// An Ethernet frame carrying `datagram` (IPv4 or IPv6 by its version nibble).
pub fn ethernet(dst: [u8; 6], src: [u8; 6], datagram: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + datagram.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    let ethertype: u16 = if datagram.first().map(|b| b >> 4) == Some(6) { 0x86dd } else { 0x0800 };
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(datagram);
    f
}

/// Splits an unfragmented IP datagram into fragments carrying at most `max_payload` bytes of
/// fragmentable data each (rounded down to a multiple of 8). IPv6 fragments put the fragment
/// header after all extension headers (hop-by-hop, routing and destination options are kept in
/// every fragment), with identification `0x1234_5678`; IPv4 keeps the datagram's identification.
pub fn fragment(datagram: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    let step = (max_payload / 8).max(1) * 8;
    match datagram[0] >> 4 {
        4 => {
            let ihl = usize::from(datagram[0] & 0xf) * 4;
            let (hdr, data) = datagram.split_at(ihl);
            data.chunks(step)
                .enumerate()
                .map(|(i, part)| {
                    let mut p = hdr.to_vec();
                    p[2..4].copy_from_slice(&((ihl + part.len()) as u16).to_be_bytes());
                    let more = (i + 1) * step < data.len();
                    let word = ((i * step / 8) as u16) | if more { 0x2000 } else { 0 };
                    p[6..8].copy_from_slice(&word.to_be_bytes());
                    p[10..12].fill(0);
                    let c = checksum::internet(&p);
                    p[10..12].copy_from_slice(&c.to_be_bytes());
                    p.extend_from_slice(part);
                    p
                })
                .collect()
        }
        _ => {
            // Find the end of the unfragmentable part: IPv6 header plus the extension headers.
            let mut next = datagram[6];
            let mut prev_next = 6;
            let mut at = 40;
            while matches!(next, ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS) {
                prev_next = at;
                next = datagram[at];
                at += (usize::from(datagram[at + 1]) + 1) * 8;
            }
            let (hdr, data) = datagram.split_at(at);
            data.chunks(step)
                .enumerate()
                .map(|(i, part)| {
                    let mut p = hdr.to_vec();
                    p[prev_next] = ipproto::FRAGMENT;
                    let more = (i + 1) * step < data.len();
                    let word = ((i * step) as u16) | u16::from(more);
                    p.extend_from_slice(&[next, 0]);
                    p.extend_from_slice(&word.to_be_bytes());
                    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                    p.extend_from_slice(part);
                    let plen = (p.len() - 40) as u16;
                    p[4..6].copy_from_slice(&plen.to_be_bytes());
                    p
                })
                .collect()
        }
    }
}

/// Splits an IPv4 datagram for a link of `mtu` bytes as a router does (Linux's `ip_do_fragment`):
/// each fragment carries a multiple of 8 data bytes at its offset within the original datagram
/// (which may itself be a fragment: offsets add up and the last piece keeps its MF bit), the
/// first keeps all IP options and the others have the options not marked "copied" replaced by
/// NOPs (`ip_options_fragment`), so every header is as long as the original's. `None` when the
/// datagram is not IPv4, is malformed, has DF set, or `mtu` leaves no room for 8 data bytes; the
/// datagram itself (one piece) when it fits.
pub fn fragment_to_mtu(datagram: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    if datagram.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(datagram[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]));
    if ihl < 20 || total < ihl || total > datagram.len() {
        return None;
    }
    let d = &datagram[..total];
    if d.len() <= mtu {
        return Some(vec![d.to_vec()]);
    }
    let word = u16::from_be_bytes([d[6], d[7]]);
    if word & 0x4000 != 0 || mtu < ihl + 8 {
        return None;
    }
    let base = usize::from(word & 0x1fff) * 8;
    let more_after = word & 0x2000 != 0;
    let step = (mtu - ihl) / 8 * 8;
    let (hdr, data) = d.split_at(ihl);
    // The header of every fragment but the first: non-copied options become NOPs.
    let mut later = hdr.to_vec();
    let mut at = 20;
    while at < ihl {
        match later[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let len = usize::from(*later.get(at + 1)?);
                if len < 2 || at + len > ihl {
                    return None;
                }
                if kind & 0x80 == 0 {
                    later[at..at + len].fill(1);
                }
                at += len;
            }
        }
    }
    let mut out = Vec::with_capacity(data.len().div_ceil(step));
    for (i, part) in data.chunks(step).enumerate() {
        let offset = base + i * step;
        if offset / 8 > 0x1fff {
            return None;
        }
        let mut p = Vec::with_capacity(ihl + part.len());
        p.extend_from_slice(if i == 0 { hdr } else { &later });
        p.extend_from_slice(part);
        let more = (i + 1) * step < data.len() || more_after;
        p[2..4].copy_from_slice(&((ihl + part.len()) as u16).to_be_bytes());
        let w = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&w.to_be_bytes());
        p[10..12].fill(0);
        let c = checksum::internet(&p[..ihl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        out.push(p);
    }
    Some(out)
}

/// Fragments of an IP datagram for a link of `mtu` bytes: IPv4 as [`fragment_to_mtu`] cuts it;
/// IPv6 with identification `v6_id`, which only a datagram that may be fragmented has — its
/// source's own, or one reassembled from fragments (`nf_defrag_ipv6`), fragmented again with
/// their identification, where a router would otherwise answer "packet too big" — so `None` for
/// an IPv6 datagram over the MTU without one. The datagram itself (one piece) when it fits.
pub fn fragment_ip_to_mtu(datagram: &[u8], mtu: usize, v6_id: Option<u32>) -> Option<Vec<Vec<u8>>> {
    match datagram.first()? >> 4 {
        4 => fragment_to_mtu(datagram, mtu),
        6 if datagram.len() <= mtu => Some(vec![datagram.to_vec()]),
        6 => fragment_v6_to_mtu(datagram, mtu, v6_id?),
        _ => None,
    }
}

/// An IPv6 datagram's fragments for a link of `mtu` bytes, with identification `id`: the
/// fragment header goes after the hop-by-hop, routing and destination-options headers. `None`
/// when the datagram is malformed or `mtu` leaves no room for 8 data bytes.
fn fragment_v6_to_mtu(datagram: &[u8], mtu: usize, id: u32) -> Option<Vec<Vec<u8>>> {
    // The unfragmentable part: the IPv6 header and the extension headers before a fragment header.
    let mut next = *datagram.get(6)?;
    let mut at = 40;
    while matches!(next, ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS) {
        next = *datagram.get(at)?;
        at += (usize::from(*datagram.get(at + 1)?) + 1) * 8;
    }
    if at >= datagram.len() || mtu < at + 16 {
        return None;
    }
    let mut pieces = fragment(datagram, mtu - at - 8);
    for piece in &mut pieces {
        piece.get_mut(at + 4..at + 8)?.copy_from_slice(&id.to_be_bytes());
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{parse_ip, L4};

    fn v4() -> PacketBuilder {
        PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1))
    }

    fn v6() -> PacketBuilder {
        PacketBuilder::v6("2001:2:0:1::1".parse().unwrap(), "2001:2:0:2::1".parse().unwrap())
    }

    #[test]
    fn built_packets_parse_with_valid_checksums() {
        for b in [v4(), v6()] {
            let t = b.tcp(1, 2, 3, 4, 0x12, 5, &[opt::mss(1400), opt::sack_perm(), opt::wscale(3)].concat(), b"abc");
            let p = parse_ip(&t, 0).unwrap();
            let seg = p.l4_bytes(&t);
            assert_eq!(checksum::l4(p.family, &p.src, &p.dst, 6, seg, seg.len()), 0);
            let L4::Tcp(tcp) = p.l4 else { panic!() };
            let o = tcp.options(seg);
            assert_eq!((o.mss, o.wscale, p.payload_len()), (Some(1400), Some(3), 3));

            let u = b.udp(5, 6, b"hello");
            let p = parse_ip(&u, 0).unwrap();
            let seg = p.l4_bytes(&u);
            assert_eq!(checksum::l4(p.family, &p.src, &p.dst, 17, seg, seg.len()), 0);

            let s = b.sctp(7, 8, 0, &[Chunk::new(1, 0, &Chunk::init_value(42, 1))]);
            let p = parse_ip(&s, 0).unwrap();
            assert!(checksum::sctp_ok(p.l4_bytes(&s)));
        }
    }

    #[test]
    fn fragments_carry_the_datagram() {
        for b in [v4(), v6().ext_headers(&[ipproto::HOPOPTS, ipproto::DSTOPTS])] {
            let d = b.udp(5000, 53, &[7u8; 100]);
            let frags = fragment(&d, 40);
            assert_eq!(frags.len(), 3);
            let first = parse_ip(&frags[0], 0).unwrap();
            let f = first.fragment.unwrap();
            assert!(f.more && f.offset == 0);
            assert!(matches!(first.l4, L4::Udp(_)));
            let last = parse_ip(&frags[2], 0).unwrap();
            let f = last.fragment.unwrap();
            assert!(!f.more && f.offset == 80);
        }
    }

    #[test]
    fn fragment_to_mtu_as_a_router() {
        let mut d = v4().udp(5000, 53, &[7u8; 3000]);
        // Clear DF, as a sender that allows fragmentation does.
        d[6] = 0;
        d[10..12].fill(0);
        let c = checksum::internet(&d[..20]);
        d[10..12].copy_from_slice(&c.to_be_bytes());
        let frags = fragment_to_mtu(&d, 1400).unwrap();
        assert_eq!(frags.iter().map(Vec::len).collect::<Vec<_>>(), [1396, 1396, 276]);
        let mut data = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let p = parse_ip(f, 0).unwrap();
            let fr = p.fragment.unwrap();
            assert_eq!((fr.offset as usize, fr.more), (i * 1376, i < 2));
            data.extend_from_slice(&f[20..]);
        }
        assert_eq!(data, d[20..]);
        // A fragment fragmented again: offsets add up, the last piece keeps MF.
        let again = fragment_to_mtu(&frags[1], 600).unwrap();
        let last = parse_ip(again.last().unwrap(), 0).unwrap().fragment.unwrap();
        let first = parse_ip(&again[0], 0).unwrap().fragment.unwrap();
        assert_eq!((first.offset, last.more), (1376, true));
        // DF set, too small an MTU, fits as is.
        assert_eq!(fragment_to_mtu(&v4().udp(1, 2, &[0; 3000]), 1400), None);
        assert_eq!(fragment_to_mtu(&d, 27), None);
        assert_eq!(fragment_to_mtu(&d, 4000).unwrap(), vec![d.clone()]);
        assert_eq!(fragment_to_mtu(&d[..10], 100), None);
    }

    #[test]
    fn fragment_to_mtu_copies_only_copied_options() {
        // Header with a record-route option (7, not copied) and a security-like option 0x82
        // (copied), padded with EOL.
        let mut d = v4().udp(1, 2, &[1u8; 100]);
        let opts = [7, 7, 4, 0, 0, 0, 0, 0x82, 4, 9, 9, 0];
        d.splice(20..20, opts);
        d[0] = 0x48;
        d[6] = 0;
        let total = d.len() as u16;
        d[2..4].copy_from_slice(&total.to_be_bytes());
        d[10..12].fill(0);
        let c = checksum::internet(&d[..32]);
        d[10..12].copy_from_slice(&c.to_be_bytes());
        let frags = fragment_to_mtu(&d, 80).unwrap();
        assert_eq!(&frags[0][20..32], &opts);
        assert_eq!(&frags[1][20..32], &[1, 1, 1, 1, 1, 1, 1, 0x82, 4, 9, 9, 0]);
        for f in &frags {
            assert!(parse_ip(f, 0).is_ok());
        }
    }

    proptest::proptest! {
        #[test]
        fn fragment_to_mtu_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), mtu in 0usize..200) {
            let mut b = b;
            if let Some(x) = b.first_mut() {
                *x = 0x40 | (*x & 0xf);
            }
            let _ = fragment_to_mtu(&b, mtu);
        }
    }
}
