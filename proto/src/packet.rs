//! One parse per packet: a frame or an IP datagram in, a [`Packet`] descriptor out.
//!
//! The descriptor holds copies of the few header fields the engine needs (addresses, ports, flags,
//! TCP options, offsets) so that nothing downstream re-reads headers. The headers every packet
//! has (IPv4, TCP, UDP) are read as fixed-size arrays, one bounds check each, because this runs for
//! every packet and pnet's views check bounds in every getter; Ethernet, IPv6 and ICMP are read
//! through pnet's views; SCTP, GRE and IPv6 extension headers, which pnet does not cover the way we
//! need, are walked here with named offsets.

use pnet_packet::ethernet::EthernetPacket;
use pnet_packet::icmp::IcmpPacket;
use pnet_packet::ipv6::Ipv6Packet;

/// IP protocol numbers used by the parser and the engine.
pub mod ipproto {
    pub const HOPOPTS: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NONE: u8 = 59;
    pub const DSTOPTS: u8 = 60;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// Ethertypes the parser recognises.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

/// TCP flag bits as they sit in the header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Why a frame could not be described. Offsets are into the buffer given to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The frame ends before the named header does.
    Truncated { layer: Layer, offset: usize },
    /// A header field has a value that cannot be right (bad version, length, header length).
    Malformed { layer: Layer, offset: usize },
    /// The IPv4 header checksum is wrong (the kernel drops such packets before conntrack).
    BadIpChecksum,
    /// An Ethernet frame whose type is not IPv4 or IPv6.
    NotIp { ethertype: u16 },
}

/// The header a [`ParseError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Ethernet,
    Vlan,
    Ipv4,
    Ipv6,
    Ipv6Ext,
    Tcp,
    Udp,
    Icmp,
    Sctp,
    Gre,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Truncated { layer, offset } => write!(f, "truncated {layer:?} header at byte {offset}"),
            ParseError::Malformed { layer, offset } => write!(f, "malformed {layer:?} header at byte {offset}"),
            ParseError::BadIpChecksum => f.write_str("bad IPv4 header checksum"),
            ParseError::NotIp { ethertype } => write!(f, "not IP (ethertype {ethertype:#06x})"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The address family of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Address length in bytes.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// The `AF_*` number the kernel uses (2 or 10).
    pub fn af(self) -> u8 {
        match self {
            Family::V4 => 2,
            Family::V6 => 10,
        }
    }
}

/// IP fragment information of a datagram that is a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
    /// Offset in the buffer of the fragment's data (after all unfragmentable headers).
    pub data_offset: usize,
    /// For IPv6: the offset of the fragment header's "next header" byte position holder
    /// (the byte that names the fragment header), so reassembly can splice it out.
    pub prev_next_offset: usize,
}

/// TCP options the trackers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    /// Up to four SACK blocks (left, right).
    pub sack: [(u32, u32); 4],
    pub sack_len: u8,
    pub timestamp: Option<(u32, u32)>,
}

impl TcpOptions {
    /// The SACK blocks present.
    pub fn sack_blocks(&self) -> &[(u32, u32)] {
        &self.sack[..usize::from(self.sack_len)]
    }
}

/// A TCP header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Header length in bytes (data offset × 4).
    pub header_len: u8,
}

impl Tcp {
    /// The header's options, read from the segment `seg` this header was parsed from (read on
    /// demand: kept in every parsed packet they would make it 40 bytes bigger and cost a walk
    /// per packet, while the TCP tracker reads the few it needs from the bytes itself).
    pub fn options(&self, seg: &[u8]) -> TcpOptions {
        seg.get(20..usize::from(self.header_len)).map_or_else(TcpOptions::default, parse_tcp_options)
    }
}

/// A UDP or UDP-Lite header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    /// UDP: the length field. UDP-Lite: the checksum coverage field.
    pub len_or_coverage: u16,
    pub checksum: u16,
}

/// An ICMP or ICMPv6 header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    pub ty: u8,
    pub code: u8,
    /// The identifier of query messages (echo, timestamp, information, node information).
    pub id: u16,
    /// For error messages: the offset in the buffer of the quoted IP packet.
    pub quoted: Option<usize>,
}

/// An SCTP common header's fields; chunks are walked with [`sctp_chunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sctp {
    pub sport: u16,
    pub dport: u16,
    pub vtag: u32,
}

/// A GRE header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gre {
    pub version: u8,
    pub protocol: u16,
    /// Version 0 with the K bit: the key.
    pub key: Option<u32>,
    /// Version 1 (enhanced GRE, PPTP): the call ID.
    pub call_id: Option<u16>,
}

/// The transport part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp(Tcp),
    Udp(Udp),
    UdpLite(Udp),
    Icmp(Icmp),
    Icmpv6(Icmp),
    Sctp(Sctp),
    Gre(Gre),
    /// Any other protocol, or a protocol whose header lies in a later fragment.
    Other,
}

/// A parsed IP packet: everything the engine needs, found once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub family: Family,
    /// Source address; IPv4 in the first four bytes, the rest zero.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Offset in the buffer of the IP header.
    pub l3_offset: usize,
    /// Offset in the buffer of the upper-layer header.
    pub l4_offset: usize,
    /// Offset in the buffer where the IP datagram ends (the IP length, which may be less than the
    /// buffer: Ethernet padding).
    pub end: usize,
    /// Set when this datagram is a fragment.
    pub fragment: Option<Fragment>,
    /// Set by whoever received the packet when its L4 checksum is already known good (the NIC
    /// or the sending kernel verified it: `TP_STATUS_CSUM_VALID`, the kernel's
    /// `CHECKSUM_UNNECESSARY`); conntrack then does not verify it again, as the kernel does not.
    /// The parser leaves it unset.
    pub l4_checksum_verified: bool,
    pub l4: L4,
}

impl Packet {
    /// The L4 segment bytes (header and payload) inside `buf`.
    pub fn l4_bytes<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.l4_offset..self.end]
    }

    /// Bytes of L4 payload, after the TCP/UDP/... header.
    pub fn payload_len(&self) -> usize {
        let seg = self.end - self.l4_offset;
        let hdr = match self.l4 {
            L4::Tcp(t) => usize::from(t.header_len),
            L4::Udp(_) | L4::UdpLite(_) => 8,
            L4::Icmp(_) | L4::Icmpv6(_) => 8,
            L4::Sctp(_) => 12,
            L4::Gre(_) | L4::Other => 0,
        };
        seg.saturating_sub(hdr)
    }

    /// The IP datagram's length in bytes.
    pub fn ip_len(&self) -> usize {
        self.end - self.l3_offset
    }

    /// Whether this is a fragment that is not the whole datagram.
    pub fn is_fragment(&self) -> bool {
        self.fragment.is_some()
    }
}

/// What an Ethernet frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the L3 header.
    pub l3_offset: usize,
    pub ethertype: u16,
    /// The outermost 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
}

/// Reads the Ethernet header (with up to two 802.1Q / 802.1ad tags).
#[inline]
pub fn parse_ethernet(buf: &[u8]) -> Result<Frame, ParseError> {
    let eth = EthernetPacket::new(buf).ok_or(ParseError::Truncated { layer: Layer::Ethernet, offset: 0 })?;
    let mut ethertype = eth.get_ethertype().0;
    let mut off = 14;
    let mut vlan = None;
    for _ in 0..2 {
        if ethertype != ethertype::VLAN && ethertype != ethertype::QINQ {
            break;
        }
        let tag = buf.get(off..off + 4).ok_or(ParseError::Truncated { layer: Layer::Vlan, offset: off })?;
        vlan.get_or_insert(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
    }
    Ok(Frame { l3_offset: off, ethertype, vlan })
}

/// Parses an Ethernet frame down to L4.
#[inline]
pub fn parse_frame(buf: &[u8]) -> Result<Packet, ParseError> {
    let frame = parse_ethernet(buf)?;
    match frame.ethertype {
        ethertype::IPV4 | ethertype::IPV6 => parse_ip(buf, frame.l3_offset),
        other => Err(ParseError::NotIp { ethertype: other }),
    }
}

/// Parses the IP datagram starting at `off` in `buf` down to L4, validating it as a receiving
/// host's IP layer would (version, lengths, IPv4 header checksum).
#[inline(always)]
pub fn parse_ip(buf: &[u8], off: usize) -> Result<Packet, ParseError> {
    parse_ip_inner(buf, off, false)
}

/// Parses the packet quoted inside an ICMP error: lengths may be cut short by the quoting, so only
/// the addresses and the first 8 bytes of L4 (ports, ids) are required.
pub fn parse_quoted(buf: &[u8], off: usize) -> Result<Packet, ParseError> {
    parse_ip_inner(buf, off, true)
}

#[inline(always)]
fn parse_ip_inner(buf: &[u8], off: usize, quoted: bool) -> Result<Packet, ParseError> {
    let data = buf.get(off..).ok_or(ParseError::Truncated { layer: Layer::Ipv4, offset: off })?;
    match data.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(buf, off, quoted),
        Some(6) => parse_ipv6(buf, off, quoted),
        Some(_) => Err(ParseError::Malformed { layer: Layer::Ipv4, offset: off }),
        None => Err(ParseError::Truncated { layer: Layer::Ipv4, offset: off }),
    }
}

#[inline(always)]
fn parse_ipv4(buf: &[u8], off: usize, quoted: bool) -> Result<Packet, ParseError> {
    let trunc = ParseError::Truncated { layer: Layer::Ipv4, offset: off };
    let bad = ParseError::Malformed { layer: Layer::Ipv4, offset: off };
    // The fixed header read as one array rather than through pnet's view: every packet passes
    // here, and each of the view's getters checks bounds again (a third of the parse's cost).
    let h: &[u8; 20] = buf.get(off..).and_then(<[u8]>::first_chunk).ok_or(trunc)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(bad);
    }
    if buf.len() < off + ihl {
        return Err(trunc);
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let end = if quoted {
        // A quoted packet keeps its original length field but is usually cut short.
        (off + total.max(ihl)).min(buf.len())
    } else {
        if total < ihl {
            return Err(bad);
        }
        if off + total > buf.len() {
            return Err(trunc);
        }
        let sum =
            if ihl == 20 { crate::checksum::internet(h) } else { crate::checksum::internet(&buf[off..off + ihl]) };
        if sum != 0 {
            return Err(ParseError::BadIpChecksum);
        }
        off + total
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&h[12..16]);
    dst[..4].copy_from_slice(&h[16..20]);
    let frag_word = u16::from_be_bytes([h[6], h[7]]);
    let more = frag_word & 0x2000 != 0;
    let frag_off = u32::from(frag_word & 0x1fff) * 8;
    let proto = h[9];
    let l4_offset = off + ihl;
    let fragment = (more || frag_off != 0).then_some(Fragment {
        id: u32::from(u16::from_be_bytes([h[4], h[5]])),
        offset: frag_off,
        more,
        data_offset: l4_offset,
        prev_next_offset: off + 9,
    });
    // The descriptor is built in one expression, by the L4 parser's arm that knows the L4 part
    // (and this whole path is inlined into the caller). Built as a temporary, its L4 part
    // assigned afterwards and the whole then copied, it was reloaded in wide words straight after
    // narrow stores: a store-forwarding stall each, a third of the parse's time (perf record).
    let packet = |l4| Packet {
        family: Family::V4,
        src,
        dst,
        proto,
        ttl: h[8],
        l3_offset: off,
        l4_offset,
        end,
        fragment,
        l4_checksum_verified: false,
        l4,
    };
    if frag_off == 0 {
        parse_l4(buf, l4_offset, end, proto, quoted, packet)
    } else {
        Ok(packet(L4::Other))
    }
}

fn parse_ipv6(buf: &[u8], off: usize, quoted: bool) -> Result<Packet, ParseError> {
    let trunc = ParseError::Truncated { layer: Layer::Ipv6, offset: off };
    let ip = Ipv6Packet::new(&buf[off..]).ok_or(trunc)?;
    let payload = usize::from(ip.get_payload_length());
    let end = if quoted {
        (off + 40 + payload).min(buf.len())
    } else {
        if payload == 0 {
            // A jumbogram (hop-by-hop jumbo option) is not something we forward.
            return Err(ParseError::Malformed { layer: Layer::Ipv6, offset: off + 4 });
        }
        if off + 40 + payload > buf.len() {
            return Err(trunc);
        }
        off + 40 + payload
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&ip.get_source().octets());
    dst.copy_from_slice(&ip.get_destination().octets());

    // Walk the extension headers, as the kernel's ipv6_skip_exthdr does.
    let mut next = ip.get_next_header().0;
    let mut prev_next_offset = off + 6;
    let mut cur = off + 40;
    let mut fragment = None;
    loop {
        let ext_trunc = ParseError::Truncated { layer: Layer::Ipv6Ext, offset: cur };
        match next {
            ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS | ipproto::AH => {
                let h = buf.get(cur..cur + 2).filter(|_| cur + 2 <= end).ok_or(ext_trunc)?;
                let len = if next == ipproto::AH { (usize::from(h[1]) + 2) * 4 } else { (usize::from(h[1]) + 1) * 8 };
                if cur + len > end {
                    return Err(ext_trunc);
                }
                prev_next_offset = cur;
                next = h[0];
                cur += len;
            }
            ipproto::FRAGMENT => {
                let h = buf.get(cur..cur + 8).filter(|_| cur + 8 <= end).ok_or(ext_trunc)?;
                let word = u16::from_be_bytes([h[2], h[3]]);
                let offset = u32::from(word >> 3) * 8;
                let more = word & 1 != 0;
                let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let this_next = h[0];
                cur += 8;
                if offset == 0 && !more {
                    // An atomic fragment (RFC 6946): the datagram is whole.
                    prev_next_offset = cur - 8;
                    next = this_next;
                    continue;
                }
                fragment = Some(Fragment { id, offset, more, data_offset: cur, prev_next_offset });
                next = this_next;
                if offset != 0 {
                    break;
                }
            }
            _ => break,
        }
    }
    // Built in one expression by the L4 parser, as for IPv4.
    let ttl = ip.get_hop_limit();
    let packet = |l4| Packet {
        family: Family::V6,
        src,
        dst,
        proto: next,
        ttl,
        l3_offset: off,
        l4_offset: cur,
        end,
        fragment,
        l4_checksum_verified: false,
        l4,
    };
    if fragment.is_none_or(|f| f.offset == 0) {
        parse_l4(buf, cur, end, next, quoted, packet)
    } else {
        Ok(packet(L4::Other))
    }
}

/// Parses the L4 header at `off` (the datagram ending at `end`) and hands it to `packet`, which
/// builds the descriptor. Always inlined, like the IPv4 path above it, so the descriptor is written
/// once, in place.
#[inline(always)]
fn parse_l4(
    buf: &[u8],
    off: usize,
    end: usize,
    proto: u8,
    quoted: bool,
    packet: impl FnOnce(L4) -> Packet,
) -> Result<Packet, ParseError> {
    let seg = &buf[off..end];
    match proto {
        ipproto::TCP => {
            let trunc = ParseError::Truncated { layer: Layer::Tcp, offset: off };
            if quoted {
                // Quoted TCP: ports and sequence number are all that is promised.
                let h = seg.get(..8).ok_or(trunc)?;
                return Ok(packet(L4::Tcp(Tcp {
                    sport: u16::from_be_bytes([h[0], h[1]]),
                    dport: u16::from_be_bytes([h[2], h[3]]),
                    seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    ack: 0,
                    flags: 0,
                    window: 0,
                    header_len: 0,
                })));
            }
            // One array read, as for IPv4 above.
            let h: &[u8; 20] = seg.first_chunk().ok_or(trunc)?;
            let hlen = usize::from(h[12] >> 4) * 4;
            if hlen < 20 || hlen > seg.len() {
                return Err(ParseError::Malformed { layer: Layer::Tcp, offset: off });
            }
            Ok(packet(L4::Tcp(Tcp {
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
                flags: h[13],
                window: u16::from_be_bytes([h[14], h[15]]),
                header_len: hlen as u8,
            })))
        }
        ipproto::UDP | ipproto::UDPLITE => {
            let u: &[u8; 8] = seg.first_chunk().ok_or(ParseError::Truncated { layer: Layer::Udp, offset: off })?;
            let udp = Udp {
                sport: u16::from_be_bytes([u[0], u[1]]),
                dport: u16::from_be_bytes([u[2], u[3]]),
                len_or_coverage: u16::from_be_bytes([u[4], u[5]]),
                checksum: u16::from_be_bytes([u[6], u[7]]),
            };
            Ok(packet(if proto == ipproto::UDP { L4::Udp(udp) } else { L4::UdpLite(udp) }))
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let v6 = proto == ipproto::ICMPV6;
            let i = IcmpPacket::new(seg).ok_or(ParseError::Truncated { layer: Layer::Icmp, offset: off })?;
            let ty = i.get_icmp_type().0;
            let code = i.get_icmp_code().0;
            let error = if v6 { ty < 128 } else { matches!(ty, 3 | 4 | 5 | 11 | 12) };
            let id = match seg.get(4..6) {
                Some(b) if !error => u16::from_be_bytes([b[0], b[1]]),
                _ => 0,
            };
            if !error && seg.len() < 8 {
                return Err(ParseError::Truncated { layer: Layer::Icmp, offset: off });
            }
            let quoted_off = (error && !quoted && seg.len() > 8).then_some(off + 8);
            let icmp = Icmp { ty, code, id, quoted: quoted_off };
            Ok(packet(if v6 { L4::Icmpv6(icmp) } else { L4::Icmp(icmp) }))
        }
        ipproto::SCTP => {
            let h = seg
                .get(..if quoted { 8 } else { 12 })
                .ok_or(ParseError::Truncated { layer: Layer::Sctp, offset: off })?;
            Ok(packet(L4::Sctp(Sctp {
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                vtag: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            })))
        }
        ipproto::GRE => parse_gre(seg, off, quoted).map(packet),
        _ => Ok(packet(L4::Other)),
    }
}

fn parse_gre(seg: &[u8], off: usize, quoted: bool) -> Result<L4, ParseError> {
    let trunc = ParseError::Truncated { layer: Layer::Gre, offset: off };
    let h = seg.get(..4).ok_or(trunc)?;
    let flags = u16::from_be_bytes([h[0], h[1]]);
    let version = (flags & 0x7) as u8;
    let protocol = u16::from_be_bytes([h[2], h[3]]);
    let (key, call_id) = match version {
        1 => {
            // Enhanced GRE (RFC 2637): payload length, then the call ID; the K bit must be set.
            let b = match seg.get(4..8) {
                Some(b) => b,
                None if quoted => return Ok(L4::Gre(Gre { version, protocol, key: None, call_id: None })),
                None => return Err(trunc),
            };
            (None, Some(u16::from_be_bytes([b[2], b[3]])))
        }
        _ => {
            // RFC 2890: optional checksum (C, 4 bytes), then the key (K).
            let mut at = 4;
            if flags & 0x8000 != 0 {
                at += 4;
            }
            let key = if flags & 0x2000 != 0 {
                seg.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            } else {
                None
            };
            (key, None)
        }
    };
    Ok(L4::Gre(Gre { version, protocol, key, call_id }))
}

/// Reads the TCP options the trackers use. Malformed options end the walk, as in the kernel.
pub fn parse_tcp_options(mut opts: &[u8]) -> TcpOptions {
    let mut o = TcpOptions::default();
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => {
                opts = &opts[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(1) else { break };
        let len = usize::from(len);
        if len < 2 || len > opts.len() {
            break;
        }
        let body = &opts[2..len];
        match (kind, len) {
            (2, 4) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (3, 3) => o.wscale = Some(body[0]),
            (4, 2) => o.sack_perm = true,
            (5, _) if len >= 10 && (len - 2) % 8 == 0 => {
                for (i, b) in body.chunks_exact(8).take(4).enumerate() {
                    o.sack[i] =
                        (u32::from_be_bytes([b[0], b[1], b[2], b[3]]), u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
                    o.sack_len = i as u8 + 1;
                }
            }
            (8, 10) => {
                o.timestamp = Some((
                    u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                ))
            }
            _ => {}
        }
        opts = &opts[len..];
    }
    o
}

/// One SCTP chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SctpChunk<'a> {
    pub ty: u8,
    pub flags: u8,
    /// The chunk's value (after the 4-byte chunk header), as long as its length field says.
    pub value: &'a [u8],
}

/// SCTP chunk types the tracker distinguishes.
pub mod sctp_chunk {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const SACK: u8 = 3;
    pub const HEARTBEAT: u8 = 4;
    pub const HEARTBEAT_ACK: u8 = 5;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const SHUTDOWN_ACK: u8 = 8;
    pub const ERROR: u8 = 9;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// Walks the chunks of an SCTP packet (`seg` = common header onwards). Yields `Err` once, then
/// stops, if a chunk's length is below 4 or runs past the packet.
pub fn sctp_chunks(seg: &[u8]) -> impl Iterator<Item = Result<SctpChunk<'_>, ParseError>> + '_ {
    let mut at = 12usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= seg.len() {
            return None;
        }
        let h = match seg.get(at..at + 4) {
            Some(h) => h,
            None => {
                failed = true;
                return Some(Err(ParseError::Truncated { layer: Layer::Sctp, offset: at }));
            }
        };
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 4 || at + len > seg.len() {
            failed = true;
            return Some(Err(ParseError::Malformed { layer: Layer::Sctp, offset: at }));
        }
        let c = SctpChunk { ty: h[0], flags: h[1], value: &seg[at + 4..at + len] };
        at += (len + 3) & !3;
        Some(Ok(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp_syn() -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 1];
        let tcp = [
            0x04, 0xd2, 0x00, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
            // MSS 1460, SACK-permitted, timestamps, NOP, window scale 7
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let total = (20 + tcp.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let c = crate::checksum::internet(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn parses_tcp_syn_with_options() {
        let f = ipv4_tcp_syn();
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.family, Family::V4);
        assert_eq!(&p.src[..4], &[198, 18, 0, 1]);
        let L4::Tcp(t) = p.l4 else { panic!("not tcp: {:?}", p.l4) };
        assert_eq!((t.sport, t.dport, t.seq, t.flags), (1234, 80, 1000, tcp_flags::SYN));
        let o = t.options(p.l4_bytes(&f));
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(7));
        assert!(o.sack_perm);
        assert_eq!(o.timestamp, Some((1, 0)));
        assert_eq!(p.payload_len(), 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let f = ipv4_tcp_syn();
        for n in 0..f.len() {
            assert!(parse_frame(&f[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn bad_ip_checksum_is_refused() {
        let mut f = ipv4_tcp_syn();
        f[14 + 10] ^= 0xff;
        assert_eq!(parse_frame(&f), Err(ParseError::BadIpChecksum));
    }

    #[test]
    fn vlan_tag_is_skipped() {
        let plain = ipv4_tcp_syn();
        let mut f = plain[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        f.extend_from_slice(&plain[12..]);
        let fr = parse_ethernet(&f).unwrap();
        assert_eq!((fr.vlan, fr.l3_offset, fr.ethertype), (Some(42), 18, ethertype::IPV4));
        assert!(matches!(parse_frame(&f).unwrap().l4, L4::Tcp(_)));
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        // IPv6, hop-by-hop (8 bytes) -> destination options (8) -> fragment (first) -> UDP
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]);
        p.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        let pk = parse_ip(&p, 0).unwrap();
        assert_eq!(pk.proto, ipproto::UDP);
        assert_eq!(pk.l4_offset, 64);
        let f = pk.fragment.unwrap();
        assert_eq!((f.id, f.offset, f.more), (9, 0, true));
        assert!(matches!(pk.l4, L4::Udp(Udp { sport: 5000, dport: 53, .. })));
    }

    #[test]
    fn sctp_chunk_walk_stops_on_bad_length() {
        let mut s = vec![0u8; 12];
        s.extend_from_slice(&[1, 0, 0, 8, 0, 0, 0, 0]); // INIT, 8 bytes
        s.extend_from_slice(&[0, 0, 0, 3]); // length 3: bad
        let v: Vec<_> = sctp_chunks(&s).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].unwrap().ty, sctp_chunk::INIT);
        assert!(v[1].is_err());
    }

    proptest::proptest! {
        /// The headers read by hand (IPv4, TCP, UDP) give the fields pnet's views give, for any
        /// header bytes that parse.
        #[test]
        fn hand_read_headers_agree_with_pnet_views(
            head in proptest::collection::vec(proptest::prelude::any::<u8>(), 28..80),
            udp in proptest::prelude::any::<bool>(),
        ) {
            use pnet_packet::ipv4::Ipv4Packet;
            use pnet_packet::tcp::TcpPacket;
            use pnet_packet::udp::UdpPacket;
            let mut d = head;
            // A plausible IPv4 header: version 4, IHL 5, total length = the buffer, not a
            // fragment, a valid checksum; everything else (addresses, TTL, L4 bytes) random.
            let len = d.len() as u16;
            d[0] = 0x45;
            d[2..4].copy_from_slice(&len.to_be_bytes());
            d[6] &= 0x40;
            d[7] = 0;
            d[9] = if udp { ipproto::UDP } else { ipproto::TCP };
            d[10..12].fill(0);
            let c = crate::checksum::internet(&d[..20]);
            d[10..12].copy_from_slice(&c.to_be_bytes());
            let Ok(p) = parse_ip(&d, 0) else { return Ok(()) };
            let ip = Ipv4Packet::new(&d).unwrap();
            proptest::prop_assert_eq!(&p.src[..4], &ip.get_source().octets());
            proptest::prop_assert_eq!(&p.dst[..4], &ip.get_destination().octets());
            proptest::prop_assert_eq!(p.ttl, ip.get_ttl());
            proptest::prop_assert_eq!(p.proto, ip.get_next_level_protocol().0);
            proptest::prop_assert_eq!(p.end, usize::from(ip.get_total_length()));
            match p.l4 {
                L4::Tcp(t) => {
                    let v = TcpPacket::new(&d[20..]).unwrap();
                    proptest::prop_assert_eq!(
                        (t.sport, t.dport, t.seq, t.ack, t.window),
                        (v.get_source(), v.get_destination(), v.get_sequence(), v.get_acknowledgement(), v.get_window())
                    );
                    proptest::prop_assert_eq!(t.flags, v.get_flags());
                    proptest::prop_assert_eq!(t.header_len, v.get_data_offset() * 4);
                }
                L4::Udp(u) => {
                    let v = UdpPacket::new(&d[20..]).unwrap();
                    proptest::prop_assert_eq!(
                        (u.sport, u.dport, u.len_or_coverage, u.checksum),
                        (v.get_source(), v.get_destination(), v.get_length(), v.get_checksum())
                    );
                }
                other => proptest::prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
