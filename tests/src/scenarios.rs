//! The scenario catalogue. A is the client side (198.18.0.0/16, 2001:2:0:1::/64), B the server
//! side (198.19.0.0/16, 2001:2:0:2::/64). Every scenario runs in fresh namespaces, so addresses
//! and ports may repeat between scenarios; sequence numbers are fixed so tables are deterministic.

// The catalogue is a run of `v.push(...)` with a comment before each scenario; that reads better
// than one long `vec![...]`.
#![allow(clippy::vec_init_then_push)]

use std::net::{Ipv4Addr, Ipv6Addr};

use proto::build::{self, opt, Chunk, PacketBuilder};
use proto::checksum;
use proto::packet::{self, ipproto, sctp_chunk, tcp_flags::*};

use crate::scenario::Scenario;
use crate::testbed::Side;

/// Scenarios whose kernel/engine difference is intended: (name, why). Keep empty unless a
/// difference is deliberate and explained.
pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    // UDP-Lite: the kernel checks the checksum against the wrong pseudo-header (and, over IPv4,
    // with length and protocol swapped, so lengths of 256 and more fail even then). Copying that
    // would refuse every correct UDP-Lite packet; README "Known differences" says so.
    ("udplite_two_way_v4", UDPLITE_RFC),
    ("udplite_partial_coverage_v4", UDPLITE_RFC),
    ("udplite_bad_coverage_v4", UDPLITE_RFC),
    ("udplite_udp_pseudo_header_v4", UDPLITE_KERNEL_SUM),
    ("udplite_udp_pseudo_header_long_v4", UDPLITE_KERNEL_SUM),
    ("udplite_two_way_v6", UDPLITE_RFC),
    ("udplite_partial_coverage_v6", UDPLITE_RFC),
    ("udplite_bad_coverage_v6", UDPLITE_RFC),
    ("udplite_udp_pseudo_header_v6", UDPLITE_KERNEL_SUM),
    ("udplite_udp_pseudo_header_long_v6", UDPLITE_KERNEL_SUM),
];

const UDPLITE_RFC: &str = "Linux verifies UDP-Lite checksums over a UDP (17) pseudo-header (udplite_error passes IPPROTO_UDP), so correctly checksummed UDP-Lite (RFC 3828) is invalid there; ferrowall verifies the RFC 3828 checksum";
const UDPLITE_KERNEL_SUM: &str = "built with the kernel's wrong (UDP) pseudo-header, which the kernel accepts and ferrowall, verifying RFC 3828, refuses";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

const BOTH: [Fam; 2] = [Fam::V4, Fam::V6];

impl Fam {
    fn suffix(self) -> &'static str {
        match self {
            Fam::V4 => "v4",
            Fam::V6 => "v6",
        }
    }

    /// Host `n` on side A.
    fn a_host(self, n: u8) -> PacketBuilderAddr {
        match self {
            Fam::V4 => PacketBuilderAddr::V4(Ipv4Addr::new(198, 18, 0, n)),
            Fam::V6 => PacketBuilderAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, u16::from(n))),
        }
    }

    /// Host `n` on side B.
    fn b_host(self, n: u8) -> PacketBuilderAddr {
        match self {
            Fam::V4 => PacketBuilderAddr::V4(Ipv4Addr::new(198, 19, 0, n)),
            Fam::V6 => PacketBuilderAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, u16::from(n))),
        }
    }

    /// (A→B, B→A) between host 1 on each side.
    fn pair(self) -> (PacketBuilder, PacketBuilder) {
        let ab = builder(self.a_host(1), self.b_host(1));
        let ba = ab.reverse();
        (ab, ba)
    }
}

#[derive(Debug, Clone, Copy)]
enum PacketBuilderAddr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

fn builder(src: PacketBuilderAddr, dst: PacketBuilderAddr) -> PacketBuilder {
    match (src, dst) {
        (PacketBuilderAddr::V4(s), PacketBuilderAddr::V4(d)) => PacketBuilder::v4(s, d),
        (PacketBuilderAddr::V6(s), PacketBuilderAddr::V6(d)) => PacketBuilder::v6(s, d),
        _ => panic!("mixed address families"),
    }
}

// ---------------------------------------------------------------------------------------------
// Byte surgery on built datagrams (the builder makes correct packets; these break them on purpose).

/// Offset of the L4 header in a datagram.
fn l4_offset(d: &[u8]) -> usize {
    packet::parse_ip(d, 0).expect("scenario datagrams parse before surgery").l4_offset
}

/// Flips a bit in the L4 checksum field at `field` bytes into the L4 header.
fn corrupt_l4_checksum(mut d: Vec<u8>, field: usize) -> Vec<u8> {
    let at = l4_offset(&d) + field;
    d[at] ^= 0x40;
    d
}

/// Sets the L4 checksum field to zero.
fn zero_l4_checksum(mut d: Vec<u8>, field: usize) -> Vec<u8> {
    let at = l4_offset(&d) + field;
    d[at..at + 2].fill(0);
    d
}

/// Cuts the datagram to `len` bytes of L4 and fixes the IP length (and IPv4 header checksum).
fn truncate_l4(mut d: Vec<u8>, len: usize) -> Vec<u8> {
    let at = l4_offset(&d);
    d.truncate(at + len);
    fix_ip_length(d)
}

fn fix_ip_length(mut d: Vec<u8>) -> Vec<u8> {
    if d[0] >> 4 == 4 {
        let total = d.len() as u16;
        d[2..4].copy_from_slice(&total.to_be_bytes());
        d[10..12].fill(0);
        let ihl = usize::from(d[0] & 0xf) * 4;
        let c = checksum::internet(&d[..ihl]);
        d[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let plen = (d.len() - 40) as u16;
        d[4..6].copy_from_slice(&plen.to_be_bytes());
    }
    d
}

/// Recomputes a UDP-Lite checksum with protocol 17 (UDP) in the pseudo-header instead of 136, as
/// nf_conntrack's udplite_error verifies it (it passes IPPROTO_UDP to nf_checksum_partial).
fn udplite_csum_as_udp(mut d: Vec<u8>) -> Vec<u8> {
    let p = packet::parse_ip(&d, 0).expect("scenario datagrams parse before surgery");
    let at = p.l4_offset;
    let cov = usize::from(u16::from_be_bytes([d[at + 4], d[at + 5]]));
    let seg_len = p.end - at;
    let cover = if cov == 0 { seg_len } else { cov };
    d[at + 6..at + 8].fill(0);
    let mut c = checksum::l4(p.family, &p.src, &p.dst, ipproto::UDP, &d[at..p.end], cover);
    if c == 0 {
        c = 0xffff;
    }
    d[at + 6..at + 8].copy_from_slice(&c.to_be_bytes());
    d
}

/// Sets the TCP data offset (header length in 32-bit words).
fn set_tcp_data_offset(mut d: Vec<u8>, words: u8) -> Vec<u8> {
    let at = l4_offset(&d) + 12;
    d[at] = (words << 4) | (d[at] & 0x0f);
    d
}

/// Breaks the IPv4 header checksum.
fn corrupt_ip_checksum(mut d: Vec<u8>) -> Vec<u8> {
    d[10] ^= 0x5a;
    d
}

// ---------------------------------------------------------------------------------------------
// TCP

/// Client and server initial sequence numbers.
const CI: u32 = 1_000;
const SI: u32 = 5_000;
const WIN: u16 = 64_240;

struct Tcp {
    ab: PacketBuilder,
    ba: PacketBuilder,
    sport: u16,
    dport: u16,
}

impl Tcp {
    fn new(fam: Fam, sport: u16) -> Tcp {
        let (ab, ba) = fam.pair();
        Tcp { ab, ba, sport, dport: 80 }
    }

    fn with_ext(fam: Fam, sport: u16, ext: &[u8]) -> Tcp {
        let (ab, ba) = fam.pair();
        Tcp { ab: ab.ext_headers(ext), ba: ba.ext_headers(ext), sport, dport: 80 }
    }

    /// A segment from A (the client).
    #[allow(clippy::too_many_arguments)]
    fn a(&self, seq: u32, ack: u32, flags: u8, win: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        self.ab.tcp(self.sport, self.dport, seq, ack, flags, win, opts, payload)
    }

    /// A segment from B (the server).
    fn b(&self, seq: u32, ack: u32, flags: u8, win: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        self.ba.tcp(self.dport, self.sport, seq, ack, flags, win, opts, payload)
    }

    fn syn_opts() -> Vec<u8> {
        [opt::mss(1460), opt::sack_perm()].concat()
    }

    /// SYN, SYN/ACK, ACK with ISNs CI and SI.
    fn handshake(&self, sc: Scenario) -> Scenario {
        sc.a(self.a(CI, 0, SYN, WIN, &Self::syn_opts(), b""))
            .b(self.b(SI, CI + 1, SYN | ACK, WIN, &Self::syn_opts(), b""))
            .a(self.a(CI + 1, SI + 1, ACK, WIN, &[], b""))
    }
}

fn tcp_scenarios(fam: Fam) -> Vec<Scenario> {
    let f = fam.suffix();
    let mut v = Vec::new();
    let t = Tcp::new(fam, 40000);
    let name = |n: &str| format!("{n}_{f}");

    v.push(t.handshake(Scenario::new(name("tcp_handshake"))));

    v.push(
        t.handshake(Scenario::new(name("tcp_data_both_ways")))
            .a(t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'q'; 100]))
            .b(t.b(SI + 1, CI + 101, ACK, WIN, &[], b""))
            .b(t.b(SI + 1, CI + 101, PSH | ACK, WIN, &[], &[b'r'; 50]))
            .a(t.a(CI + 101, SI + 51, ACK, WIN, &[], b"")),
    );

    v.push(
        t.handshake(Scenario::new(name("tcp_fin_from_a")))
            .a(t.a(CI + 1, SI + 1, FIN | ACK, WIN, &[], b""))
            .b(t.b(SI + 1, CI + 2, FIN | ACK, WIN, &[], b""))
            .a(t.a(CI + 2, SI + 2, ACK, WIN, &[], b"")),
    );

    v.push(
        t.handshake(Scenario::new(name("tcp_fin_from_b")))
            .b(t.b(SI + 1, CI + 1, FIN | ACK, WIN, &[], b""))
            .a(t.a(CI + 1, SI + 2, FIN | ACK, WIN, &[], b""))
            .b(t.b(SI + 2, CI + 2, ACK, WIN, &[], b"")),
    );

    v.push(t.handshake(Scenario::new(name("tcp_rst_from_a"))).a(t.a(CI + 1, SI + 1, RST | ACK, 0, &[], b"")));

    v.push(t.handshake(Scenario::new(name("tcp_rst_from_b"))).b(t.b(SI + 1, CI + 1, RST | ACK, 0, &[], b"")));

    // Both ends send SYN; each answers the other's with SYN/ACK (RFC 793 figure 8).
    v.push(
        Scenario::new(name("tcp_simultaneous_open"))
            .a(t.a(CI, 0, SYN, WIN, &Tcp::syn_opts(), b""))
            .b(t.b(SI, 0, SYN, WIN, &Tcp::syn_opts(), b""))
            .a(t.a(CI, SI + 1, SYN | ACK, WIN, &Tcp::syn_opts(), b""))
            .b(t.b(SI, CI + 1, SYN | ACK, WIN, &Tcp::syn_opts(), b""))
            .a(t.a(CI + 1, SI + 1, ACK, WIN, &[], b""))
            .b(t.b(SI + 1, CI + 1, ACK, WIN, &[], b"")),
    );

    v.push(
        Scenario::new(name("tcp_syn_retransmission"))
            .a(t.a(CI, 0, SYN, WIN, &Tcp::syn_opts(), b""))
            .a(t.a(CI, 0, SYN, WIN, &Tcp::syn_opts(), b""))
            .b(t.b(SI, CI + 1, SYN | ACK, WIN, &Tcp::syn_opts(), b""))
            .b(t.b(SI, CI + 1, SYN | ACK, WIN, &Tcp::syn_opts(), b""))
            .a(t.a(CI + 1, SI + 1, ACK, WIN, &[], b"")),
    );

    // Data a million bytes past the window: invalid; in-window data afterwards is fine.
    v.push(
        t.handshake(Scenario::new(name("tcp_out_of_window")))
            .a(t.a(CI + 1 + 1_000_000, SI + 1, PSH | ACK, WIN, &[], &[b'x'; 10]))
            .b(t.b(SI + 1 + 1_000_000, CI + 1, PSH | ACK, WIN, &[], &[b'y'; 10]))
            .a(t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'z'; 10])),
    );

    // Both sides scale by 7. B's SYN/ACK offers 1000 bytes (never scaled in a SYN), its next
    // ACK 1000 << 7; A's segment 5000 bytes ahead fits only the scaled window. The segment
    // 300000 bytes ahead overshoots even that by more than B's largest window: invalid (the
    // kernel tolerates an overshoot of up to td_maxwin, which a 200000-byte jump would be).
    let ws = Tcp::new(fam, 40001);
    let ws_opts = [opt::mss(1460), opt::wscale(7)].concat();
    v.push(
        Scenario::new(name("tcp_window_scaling"))
            .a(ws.a(CI, 0, SYN, WIN, &ws_opts, b""))
            .b(ws.b(SI, CI + 1, SYN | ACK, 1000, &ws_opts, b""))
            .a(ws.a(CI + 1, SI + 1, ACK, 502, &[], b""))
            .b(ws.b(SI + 1, CI + 1, ACK, 1000, &[], b""))
            .a(ws.a(CI + 1 + 5000, SI + 1, PSH | ACK, 502, &[], &[b'w'; 100]))
            .a(ws.a(CI + 1 + 300_000, SI + 1, PSH | ACK, 502, &[], &[b'w'; 100])),
    );

    // Without scaling, the same segment 5000 bytes ahead is out of B's 1000-byte window.
    v.push(
        Scenario::new(name("tcp_no_window_scaling"))
            .a(ws.a(CI, 0, SYN, WIN, &[opt::mss(1460)].concat(), b""))
            .b(ws.b(SI, CI + 1, SYN | ACK, 1000, &ws_opts, b""))
            .a(ws.a(CI + 1, SI + 1, ACK, 502, &[], b""))
            .b(ws.b(SI + 1, CI + 1, ACK, 1000, &[], b""))
            .a(ws.a(CI + 1 + 5000, SI + 1, PSH | ACK, 502, &[], &[b'w'; 100])),
    );

    // A sends two segments with a gap; B acknowledges the first and SACKs the second.
    let sack = Tcp::new(fam, 40002);
    let sack_hs = |sc: Scenario| {
        sack.handshake(sc).a(sack.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'1'; 100])).a(sack.a(
            CI + 201,
            SI + 1,
            PSH | ACK,
            WIN,
            &[],
            &[b'3'; 100],
        ))
    };
    v.push(sack_hs(Scenario::new(name("tcp_sack"))).b(sack.b(
        SI + 1,
        CI + 101,
        ACK,
        WIN,
        &[opt::nop(), opt::nop(), opt::sack(&[(CI + 201, CI + 301)])].concat(),
        b"",
    )));
    // A SACK block beyond anything A sent.
    v.push(sack_hs(Scenario::new(name("tcp_sack_beyond_sent_data"))).b(sack.b(
        SI + 1,
        CI + 101,
        ACK,
        WIN,
        &[opt::nop(), opt::nop(), opt::sack(&[(CI + 201, CI + 900_001)])].concat(),
        b"",
    )));

    // No SYN seen: conntrack picks the connection up from an ACK (nf_conntrack_tcp_loose=1).
    v.push(
        Scenario::new(name("tcp_midstream_pickup"))
            .a(t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'm'; 20]))
            .b(t.b(SI + 1, CI + 21, ACK, WIN, &[], b""))
            .a(t.a(CI + 21, SI + 1, PSH | ACK, WIN, &[], &[b'n'; 20])),
    );

    // Close from A into TIME_WAIT, then a new SYN on the same ports reopens.
    v.push(
        t.handshake(Scenario::new(name("tcp_syn_in_time_wait")))
            .a(t.a(CI + 1, SI + 1, FIN | ACK, WIN, &[], b""))
            .b(t.b(SI + 1, CI + 2, FIN | ACK, WIN, &[], b""))
            .a(t.a(CI + 2, SI + 2, ACK, WIN, &[], b""))
            .a(t.a(CI + 100_000, 0, SYN, WIN, &Tcp::syn_opts(), b""))
            .b(t.b(SI + 100_000, CI + 100_001, SYN | ACK, WIN, &Tcp::syn_opts(), b"")),
    );

    v.push(
        Scenario::new(name("tcp_bad_checksum"))
            .a(corrupt_l4_checksum(t.a(CI, 0, SYN, WIN, &Tcp::syn_opts(), b""), 16))
            .a(t.a(CI, 0, SYN, WIN, &Tcp::syn_opts(), b""))
            .b(corrupt_l4_checksum(t.b(SI, CI + 1, SYN | ACK, WIN, &Tcp::syn_opts(), b""), 16))
            .b(t.b(SI, CI + 1, SYN | ACK, WIN, &Tcp::syn_opts(), b"")),
    );

    v.push(Scenario::new(name("tcp_syn_fin")).a(t.a(CI, 0, SYN | FIN, WIN, &[], b"")).a(t.a(
        CI,
        0,
        SYN,
        WIN,
        &Tcp::syn_opts(),
        b"",
    )));

    v.push(t.handshake(Scenario::new(name("tcp_null_flags"))).a(t.a(CI + 1, SI + 1, 0, WIN, &[], b"")));

    // Connection refused: the server answers the SYN with RST/ACK.
    v.push(Scenario::new(name("tcp_connection_refused")).a(t.a(CI, 0, SYN, WIN, &Tcp::syn_opts(), b"")).b(t.b(
        0,
        CI + 1,
        RST | ACK,
        0,
        &[],
        b"",
    )));

    // Data after the connection was reset.
    v.push(
        t.handshake(Scenario::new(name("tcp_data_after_rst")))
            .a(t.a(CI + 1, SI + 1, RST | ACK, 0, &[], b""))
            .a(t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'd'; 10]))
            .b(t.b(SI + 1, CI + 1, ACK, WIN, &[], b"")),
    );

    // A closes its half; B keeps sending, then closes too.
    v.push(
        t.handshake(Scenario::new(name("tcp_half_close")))
            .a(t.a(CI + 1, SI + 1, FIN | ACK, WIN, &[], b""))
            .b(t.b(SI + 1, CI + 2, ACK, WIN, &[], b""))
            .b(t.b(SI + 1, CI + 2, PSH | ACK, WIN, &[], &[b'h'; 40]))
            .a(t.a(CI + 2, SI + 41, ACK, WIN, &[], b""))
            .b(t.b(SI + 41, CI + 2, FIN | ACK, WIN, &[], b""))
            .a(t.a(CI + 2, SI + 42, ACK, WIN, &[], b"")),
    );

    // Keep-alive probes: one byte before the next sequence number, no data.
    v.push(t.handshake(Scenario::new(name("tcp_keepalive"))).a(t.a(CI, SI + 1, ACK, WIN, &[], b"")).b(t.b(
        SI + 1,
        CI + 1,
        ACK,
        WIN,
        &[],
        b"",
    )));

    // B acknowledges data A never sent.
    v.push(
        t.handshake(Scenario::new(name("tcp_ack_beyond_sent")))
            .a(t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'a'; 10]))
            .b(t.b(SI + 1, CI + 1 + 500_000, ACK, WIN, &[], b""))
            .b(t.b(SI + 1, CI + 11, ACK, WIN, &[], b"")),
    );

    // A header length below 20 bytes.
    v.push(
        Scenario::new(name("tcp_bad_data_offset"))
            .a(set_tcp_data_offset(t.a(CI, 0, SYN, WIN, &[], b"12345678"), 4))
            .a(set_tcp_data_offset(t.a(CI, 0, SYN, WIN, &[], b""), 15))
            .a(t.a(CI, 0, SYN, WIN, &[], b"")),
    );

    // A RST far outside the window is ignored as invalid; the connection stays up.
    v.push(
        t.handshake(Scenario::new(name("tcp_rst_out_of_window")))
            .b(t.b(SI + 1 + 3_000_000, 0, RST, 0, &[], b""))
            .a(t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'k'; 10])),
    );

    // A SYN/ACK acknowledging the wrong sequence number.
    v.push(
        Scenario::new(name("tcp_synack_wrong_ack"))
            .a(t.a(CI, 0, SYN, WIN, &Tcp::syn_opts(), b""))
            .b(t.b(SI, CI + 77, SYN | ACK, WIN, &Tcp::syn_opts(), b""))
            .b(t.b(SI, CI + 1, SYN | ACK, WIN, &Tcp::syn_opts(), b""))
            .a(t.a(CI + 1, SI + 1, ACK, WIN, &[], b"")),
    );

    // 12 bytes of TCP header: ports and sequence number, no flags.
    v.push(Scenario::new(name("tcp_truncated_header")).a(truncate_l4(t.a(CI, 0, SYN, WIN, &[], b""), 12)).a(t.a(
        CI,
        0,
        SYN,
        WIN,
        &[],
        b"",
    )));

    v
}

// ---------------------------------------------------------------------------------------------
// UDP and UDP-Lite

fn udp_scenarios(fam: Fam) -> Vec<Scenario> {
    let f = fam.suffix();
    let name = |n: &str| format!("{n}_{f}");
    let (ab, ba) = fam.pair();
    let mut v = Vec::new();

    v.push(
        Scenario::new(name("udp_one_way"))
            .a(ab.udp(5000, 53, b"one"))
            .a(ab.udp(5000, 53, b"two"))
            .a(ab.udp(5000, 53, b"three")),
    );

    v.push(
        Scenario::new(name("udp_two_way"))
            .a(ab.udp(5001, 53, b"query"))
            .b(ba.udp(53, 5001, b"answer"))
            .a(ab.udp(5001, 53, b"again")),
    );

    v.push(
        Scenario::new(name("udp_bad_checksum"))
            .a(corrupt_l4_checksum(ab.udp(5002, 53, b"bad"), 6))
            .a(ab.udp(5002, 53, b"good"))
            .b(corrupt_l4_checksum(ba.udp(53, 5002, b"bad"), 6)),
    );

    // No checksum: optional for UDP over IPv4, mandatory over IPv6 (RFC 8200), but conntrack's
    // udp_error accepts a zero checksum in either family.
    v.push(
        Scenario::new(name("udp_zero_checksum"))
            .a(zero_l4_checksum(ab.udp(5003, 53, b"nocsum"), 6))
            .b(zero_l4_checksum(ba.udp(53, 5003, b"nocsum"), 6)),
    );

    // The UDP length field claims more than the datagram holds.
    let mut long = ab.udp(5004, 53, b"short");
    let at = l4_offset(&long) + 4;
    long[at..at + 2].copy_from_slice(&100u16.to_be_bytes());
    v.push(Scenario::new(name("udp_length_exceeds_datagram")).a(long).a(ab.udp(5004, 53, b"ok")));

    v.push(
        Scenario::new(name("udplite_two_way"))
            .a(ab.udplite(5005, 6000, 0, b"lite query"))
            .b(ba.udplite(6000, 5005, 0, b"lite answer"))
            .a(ab.udplite(5005, 6000, 0, b"lite again")),
    );

    // Coverage 8: only the header is checksummed.
    v.push(
        Scenario::new(name("udplite_partial_coverage"))
            .a(ab.udplite(5006, 6000, 8, b"payload not covered"))
            .b(ba.udplite(6000, 5006, 8, b"nor here")),
    );

    // Coverage 4 is below the header's own length: invalid (RFC 3828 3.1).
    v.push(Scenario::new(name("udplite_bad_coverage")).a(ab.udplite(5007, 6000, 4, b"bad coverage")).a(ab.udplite(
        5007,
        6000,
        0,
        b"good coverage",
    )));

    // The same packets with the checksum computed over a UDP (17) pseudo-header, which is what
    // conntrack checks. Over IPv4 it also swaps the length and protocol arguments of
    // csum_tcpudp_nofold, truncating the length to 8 bits: a 308-byte segment sums differently.
    v.push(
        Scenario::new(name("udplite_udp_pseudo_header"))
            .a(udplite_csum_as_udp(ab.udplite(5008, 6000, 0, b"lite query")))
            .b(udplite_csum_as_udp(ba.udplite(6000, 5008, 0, b"lite answer")))
            .a(udplite_csum_as_udp(ab.udplite(5008, 6000, 8, b"partial coverage"))),
    );
    v.push(
        Scenario::new(name("udplite_udp_pseudo_header_long"))
            .a(udplite_csum_as_udp(ab.udplite(5009, 6000, 0, &[b'L'; 300])))
            .a(udplite_csum_as_udp(ab.udplite(5009, 6000, 0, b"short"))),
    );

    v
}

// ---------------------------------------------------------------------------------------------
// ICMP and ICMPv6

fn echo(id: u16, seq: u16) -> u32 {
    (u32::from(id) << 16) | u32::from(seq)
}

fn icmp_scenarios() -> Vec<Scenario> {
    let (ab, ba) = Fam::V4.pair();
    let mut v = Vec::new();

    v.push(
        Scenario::new("icmp_echo_v4")
            .a(ab.icmp(8, 0, echo(0x1234, 1), b"ping"))
            .b(ba.icmp(0, 0, echo(0x1234, 1), b"ping"))
            .a(ab.icmp(8, 0, echo(0x1234, 2), b"ping")),
    );

    // Destination unreachable about an echo request: RELATED to the ICMP connection.
    let ping = ab.icmp(8, 0, echo(0x5555, 1), b"ping");
    v.push(Scenario::new("icmp_error_about_echo_v4").a(ping.clone()).b(ba.icmp(3, 1, 0, &ping)));

    // An ICMP error quoting an ICMP error: never related.
    let udp0 = ab.udp(5000, 9999, b"x");
    let inner_err = ab.icmp(3, 3, 0, &udp0);
    v.push(Scenario::new("icmp_error_quoting_icmp_error_v4").a(udp0.clone()).b(ba.icmp(3, 1, 0, &inner_err)));

    v.push(Scenario::new("icmp_echo_reply_without_request_v4").b(ba.icmp(0, 0, echo(0x4321, 1), b"pong")));

    // B answers a UDP datagram with port unreachable quoting it: RELATED, in the reply direction.
    let udp = ab.udp(5000, 9999, b"anyone?");
    v.push(
        Scenario::new("icmp_port_unreachable_related_v4")
            .a(udp.clone())
            .b(ba.icmp(3, 3, 0, &udp))
            .a(ab.udp(5000, 9999, b"still?")),
    );

    // A router on B's side (not the destination) reports time exceeded: RELATED as well.
    let router = builder(Fam::V4.b_host(254), Fam::V4.a_host(1));
    v.push(Scenario::new("icmp_time_exceeded_from_router_v4").a(udp.clone()).b(router.icmp(11, 0, 0, &udp)));

    // An error quoting a flow conntrack never saw: invalid.
    v.push(Scenario::new("icmp_error_quoting_untracked_v4").b(ba.icmp(3, 3, 0, &ab.udp(5999, 9999, b"never sent"))));

    // An error with a bad ICMP checksum quoting a tracked flow: invalid.
    v.push(
        Scenario::new("icmp_error_bad_checksum_v4").a(udp.clone()).b(corrupt_l4_checksum(ba.icmp(3, 3, 0, &udp), 2)),
    );

    let (ab6, ba6) = Fam::V6.pair();
    v.push(
        Scenario::new("icmpv6_echo_v6")
            .a(ab6.icmp(128, 0, echo(0x1234, 1), b"ping6"))
            .b(ba6.icmp(129, 0, echo(0x1234, 1), b"ping6"))
            .a(ab6.icmp(128, 0, echo(0x1234, 2), b"ping6")),
    );

    v.push(Scenario::new("icmpv6_echo_reply_without_request_v6").b(ba6.icmp(129, 0, echo(0x4321, 1), b"pong6")));

    // Neighbour discovery is never tracked (nf_conntrack_icmpv6's noct_valid_new).
    let target = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1).octets();
    v.push(Scenario::new("icmpv6_neighbour_solicitation_v6").a(ab6.clone().ttl(255).icmp(135, 0, 0, &target)));

    // Packet too big from B's side about a TCP segment A sent.
    let t = Tcp::new(Fam::V6, 40010);
    let big = t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'b'; 1200]);
    v.push(
        t.handshake(Scenario::new("icmpv6_packet_too_big_related_v6")).a(big.clone()).b(builder(
            Fam::V6.b_host(254),
            Fam::V6.a_host(1),
        )
        .icmp(2, 0, 1280, &big[..1232])),
    );

    let udp6 = ab6.udp(5000, 9999, b"anyone6?");
    v.push(
        Scenario::new("icmpv6_port_unreachable_related_v6")
            .a(udp6.clone())
            .b(ba6.icmp(1, 4, 0, &udp6))
            .a(ab6.udp(5000, 9999, b"still6?")),
    );

    v.push(Scenario::new("icmpv6_error_quoting_untracked_v6").b(ba6.icmp(1, 4, 0, &ab6.udp(5999, 9999, b"never"))));

    v
}

// ---------------------------------------------------------------------------------------------
// SCTP

fn data_chunk(tsn: u32, payload: &[u8]) -> Chunk {
    let mut v = tsn.to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // stream 0, sequence 0, PPID 0
    v.extend_from_slice(payload);
    Chunk::new(sctp_chunk::DATA, 0x03, &v)
}

fn sack_chunk(cum_tsn: u32) -> Chunk {
    let mut v = cum_tsn.to_be_bytes().to_vec();
    v.extend_from_slice(&65535u32.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    Chunk::new(sctp_chunk::SACK, 0, &v)
}

fn sctp_scenarios() -> Vec<Scenario> {
    const TAG_A: u32 = 0x0a0a_0a0a;
    const TAG_B: u32 = 0x0b0b_0b0b;
    let mut v = Vec::new();
    let setup = |fam: Fam, name: String| {
        let (ab, ba) = fam.pair();
        let sc = Scenario::new(name)
            .a(ab.sctp(7000, 7001, 0, &[Chunk::new(sctp_chunk::INIT, 0, &Chunk::init_value(TAG_A, 100))]))
            .b(ba.sctp(7001, 7000, TAG_A, &[Chunk::new(sctp_chunk::INIT_ACK, 0, &Chunk::init_value(TAG_B, 900))]))
            .a(ab.sctp(7000, 7001, TAG_B, &[Chunk::new(sctp_chunk::COOKIE_ECHO, 0, b"cookie!!")]))
            .b(ba.sctp(7001, 7000, TAG_A, &[Chunk::new(sctp_chunk::COOKIE_ACK, 0, b"")]));
        (sc, ab, ba)
    };
    for fam in BOTH {
        let (sc, ab, ba) = setup(fam, format!("sctp_association_{}", fam.suffix()));
        v.push(
            sc.a(ab.sctp(7000, 7001, TAG_B, &[data_chunk(100, b"hello")]))
                .b(ba.sctp(7001, 7000, TAG_A, &[sack_chunk(100)]))
                .a(ab.sctp(7000, 7001, TAG_B, &[Chunk::new(sctp_chunk::SHUTDOWN, 0, &899u32.to_be_bytes())]))
                .b(ba.sctp(7001, 7000, TAG_A, &[Chunk::new(sctp_chunk::SHUTDOWN_ACK, 0, b"")]))
                .a(ab.sctp(7000, 7001, TAG_B, &[Chunk::new(sctp_chunk::SHUTDOWN_COMPLETE, 0, b"")])),
        );
    }
    let (sc, ab, _) = setup(Fam::V4, "sctp_wrong_vtag_v4".to_owned());
    v.push(sc.a(ab.sctp(7000, 7001, 0xdead_beef, &[data_chunk(100, b"wrong tag")])).a(ab.sctp(
        7000,
        7001,
        TAG_B,
        &[data_chunk(100, b"right tag")],
    )));
    v
}

// ---------------------------------------------------------------------------------------------
// GRE, other protocols, IPv6 extension headers

fn gre_and_generic_scenarios() -> Vec<Scenario> {
    let (ab, ba) = Fam::V4.pair();
    let (ab6, ba6) = Fam::V6.pair();
    let inner = [0x45u8; 28];
    let mut v = Vec::new();

    v.push(
        Scenario::new("gre_v0_v4")
            .a(ab.gre(0, 0x0800, None, 0, &inner))
            .b(ba.gre(0, 0x0800, None, 0, &inner))
            .a(ab.gre(0, 0x0800, None, 0, &inner)),
    );

    v.push(Scenario::new("gre_v0_with_key_v4").a(ab.gre(0, 0x6558, Some(0x1111), 0, &inner)).b(ba.gre(
        0,
        0x6558,
        Some(0x2222),
        0,
        &inner,
    )));

    // PPTP: each side puts its peer's call ID in the key field.
    v.push(
        Scenario::new("gre_v1_pptp_v4")
            .a(ab.gre(1, 0x880b, None, 0x2222, &inner))
            .b(ba.gre(1, 0x880b, None, 0x1111, &inner))
            .a(ab.gre(1, 0x880b, None, 0x2222, &inner)),
    );

    v.push(Scenario::new("gre_v0_v6").a(ab6.gre(0, 0x86dd, None, 0, &inner)).b(ba6.gre(0, 0x86dd, None, 0, &inner)));

    for (fam, ab, ba) in [(Fam::V4, &ab, &ba), (Fam::V6, &ab6, &ba6)] {
        v.push(
            Scenario::new(format!("unknown_protocol_253_{}", fam.suffix()))
                .a(ab.raw(253, b"experimental"))
                .b(ba.raw(253, b"experimental"))
                .a(ab.raw(253, b"experimental")),
        );
    }

    // Hop-by-hop and destination options before the transport header.
    let ext = [ipproto::HOPOPTS, ipproto::DSTOPTS];
    let t = Tcp::with_ext(Fam::V6, 40020, &ext);
    v.push(
        t.handshake(Scenario::new("tcp_ext_headers_v6"))
            .a(t.a(CI + 1, SI + 1, PSH | ACK, WIN, &[], &[b'e'; 30]))
            .b(t.b(SI + 1, CI + 31, ACK, WIN, &[], b"")),
    );
    let (eab, eba) = (ab6.clone().ext_headers(&ext), ba6.clone().ext_headers(&ext));
    v.push(
        Scenario::new("udp_ext_headers_v6")
            .a(eab.udp(5010, 53, b"with options"))
            .b(eba.udp(53, 5010, b"with options"))
            .a(eab.udp(5010, 53, b"again")),
    );

    v
}

// ---------------------------------------------------------------------------------------------
// Fragments and malformed IP

fn fragment_scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();
    for fam in BOTH {
        let (ab, ba) = fam.pair();
        let ab = ab.id(0x4242);
        let big = ab.udp(5020, 53, &[b'f'; 300]);
        let frags = build::fragment(&big, 128);
        assert_eq!(frags.len(), 3, "fragment count");
        let f = fam.suffix();
        v.push(Scenario::new(format!("fragments_in_order_{f}")).send_all(Side::A, frags.clone()).b(ba.udp(
            53,
            5020,
            b"reassembled",
        )));
        v.push(
            Scenario::new(format!("fragments_out_of_order_{f}"))
                .send_all(Side::A, vec![frags[2].clone(), frags[0].clone(), frags[1].clone()])
                .b(ba.udp(53, 5020, b"reassembled")),
        );
    }
    let (ab, _) = Fam::V4.pair();
    v.push(
        Scenario::new("ip_bad_header_checksum_v4").a(corrupt_ip_checksum(ab.udp(5030, 53, b"bad header"))).a(ab.udp(
            5030,
            53,
            b"good header",
        )),
    );
    v
}

// ---------------------------------------------------------------------------------------------

/// A slower one: UDP replied to and still active after two seconds becomes a stream (ASSURED,
/// 120 s timeout).
fn timed_scenarios() -> Vec<Scenario> {
    let (ab, ba) = Fam::V4.pair();
    vec![Scenario::new("udp_stream_after_2s_v4")
        .a(ab.udp(5040, 53, b"first"))
        .b(ba.udp(53, 5040, b"reply"))
        .wait_ms(2100)
        .a(ab.udp(5040, 53, b"later"))]
}

/// Every scenario, in the order they run.
pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    for fam in BOTH {
        v.extend(tcp_scenarios(fam));
    }
    for fam in BOTH {
        v.extend(udp_scenarios(fam));
    }
    v.extend(icmp_scenarios());
    v.extend(sctp_scenarios());
    v.extend(gre_and_generic_scenarios());
    v.extend(fragment_scenarios());
    v.extend(timed_scenarios());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Step;

    #[test]
    fn names_are_unique_and_packets_fit_the_mtu() {
        let all = all();
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate scenario names");
        for s in &all {
            for st in &s.steps {
                if let Step::Send(_, d) = st {
                    assert!(d.len() <= 1500, "{}: {} bytes", s.name, d.len());
                }
            }
        }
        for (k, _) in KNOWN_DIFFERENCES {
            assert!(names.contains(k), "KNOWN_DIFFERENCES names unknown scenario {k}");
        }
    }
}
