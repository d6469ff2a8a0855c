//! A traffic generator for the hostile-traffic tests: spoofed TCP SYNs and garbage frames, built
//! in place from a template and sent in `sendmmsg` batches on a packet socket
//! ([`PacketSocket::send_batch`]), paced to a rate and bounded in count and in time.
//!
//! * [`SynFlood`]: SYNs to one destination from random sources of a prefix, random ports and
//!   sequence numbers, with correct IPv4 and TCP checksums (updated incrementally from the
//!   template's, RFC 1624).
//! * [`Garbage`]: frames the datapath must drop, one kind per [`DropReason`]: random bytes, IP
//!   headers with a bad version, length or checksum, truncated TCP/UDP/ICMP/IPv6, a TCP checksum
//!   that conntrack refuses. [`Garbage::expected`] names the reason each kind must be counted
//!   under.
//! * [`blast`]: sends what a frame maker produces until the count or the time is up.
//!
//! No external generator (trafgen, pktgen): the frames are ours, so each test knows exactly what it
//! sent.

use std::net::Ipv4Addr;
use std::time::Duration;

use engine::io::datapath::DropReason;
use proto::build::{ethernet, PacketBuilder};
use proto::checksum;
use proto::packet::tcp_flags;

use crate::clock;
use crate::netns::{PacketSocket, MAX_SEND_BATCH};

/// A small, fast, seeded generator (SplitMix64): reproducible runs, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// Ethernet + IPv4 + TCP offsets in a template frame (no options).
const ETH: usize = 14;
const IP_CSUM: usize = ETH + 10;
const IP_SRC: usize = ETH + 12;
const TCP: usize = ETH + 20;
const TCP_CSUM: usize = TCP + 16;
/// An untagged Ethernet frame's largest size on a 1500-byte link.
const MAX_FRAME: usize = ETH + 1500;

/// Where the hostile frames go: from `src_mac` to the router's `dst_mac`, to `dst`:`dport`,
/// spoofed sources from `sources` (a prefix).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub sources: (Ipv4Addr, u8),
}

impl Target {
    /// A SYN frame from `src`:`sport` with sequence number `seq`: the template of the generators.
    fn syn(&self, src: Ipv4Addr, sport: u16, seq: u32) -> Vec<u8> {
        let d = PacketBuilder::v4(src, self.dst).tcp(sport, self.dport, seq, 0, tcp_flags::SYN, 64240, &[], &[]);
        ethernet(self.dst_mac, self.src_mac, &d)
    }

    /// A random source address of the prefix.
    fn source(&self, rng: &mut Rng) -> u32 {
        let (net, len) = self.sources;
        let host_bits = 32 - u32::from(len);
        let mask = if host_bits == 32 { u32::MAX } else { (1u32 << host_bits) - 1 };
        (u32::from(net) & !mask) | (rng.next_u64() as u32 & mask)
    }
}

/// Spoofed SYNs: every frame from a random source of the target's prefix, a random source port
/// (1024–65535) and sequence number; checksums correct.
#[derive(Debug, Clone)]
pub struct SynFlood {
    target: Target,
    template: Vec<u8>,
    rng: Rng,
}

impl SynFlood {
    pub fn new(target: Target, seed: u64) -> SynFlood {
        let template = target.syn(target.sources.0, 1024, 0);
        SynFlood { target, template, rng: Rng::new(seed) }
    }

    /// Writes the next SYN into `buf` (replacing what it held).
    pub fn next_into(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.template);
        let src = self.target.source(&mut self.rng);
        let r = self.rng.next_u64();
        let sport = 1024 + (r as u16) % (65535 - 1024);
        let seq = (r >> 32) as u32;
        let old_src = u32::from_be_bytes(self.template[IP_SRC..IP_SRC + 4].try_into().expect("4 bytes"));
        let be = |at: usize, b: &[u8]| u16::from_be_bytes([b[at], b[at + 1]]);
        buf[IP_SRC..IP_SRC + 4].copy_from_slice(&src.to_be_bytes());
        let ip = checksum::update32(be(IP_CSUM, &self.template), old_src, src);
        buf[IP_CSUM..IP_CSUM + 2].copy_from_slice(&ip.to_be_bytes());
        buf[TCP..TCP + 2].copy_from_slice(&sport.to_be_bytes());
        buf[TCP + 4..TCP + 8].copy_from_slice(&seq.to_be_bytes());
        // The pseudo-header's source address, the source port and the sequence number changed.
        let mut c = checksum::update32(be(TCP_CSUM, &self.template), old_src, src);
        c = checksum::update16(c, be(TCP, &self.template), sport);
        c = checksum::update32(c, 0, seq);
        buf[TCP_CSUM..TCP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// The kinds of garbage, each counted by the datapath under its own drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Garbage {
    /// Random bytes of random length (14 to 1514) with an ethertype that is not IP, ARP or VLAN.
    Random,
    /// A good SYN to another unicast MAC.
    OtherHost,
    /// An IPv4 header whose version is neither 4 nor 6.
    BadVersion,
    /// An IPv4 header cut short, or a total length past the frame's end.
    Ipv4Truncated,
    /// An IHL under 5.
    Ipv4BadIhl,
    /// A total length under the header length.
    Ipv4BadTotalLength,
    /// A wrong IPv4 header checksum.
    Ipv4BadChecksum,
    /// A TCP header cut short (consistent IP lengths and checksum).
    TcpTruncated,
    /// A TCP data offset under 5 or past the segment.
    TcpBadDataOffset,
    /// A wrong TCP checksum (the IP header is good): conntrack finds it invalid, the rule set's
    /// `policy drop` drops it.
    TcpBadChecksum,
    /// A UDP header cut short.
    UdpTruncated,
    /// An ICMP echo cut short.
    IcmpTruncated,
    /// An IPv6 header cut short, or a payload length past the frame's end.
    Ipv6Truncated,
    /// An IPv6 payload length of 0 (a jumbogram without its option).
    Ipv6Jumbo,
}

impl Garbage {
    pub const ALL: [Garbage; 14] = [
        Garbage::Random,
        Garbage::OtherHost,
        Garbage::BadVersion,
        Garbage::Ipv4Truncated,
        Garbage::Ipv4BadIhl,
        Garbage::Ipv4BadTotalLength,
        Garbage::Ipv4BadChecksum,
        Garbage::TcpTruncated,
        Garbage::TcpBadDataOffset,
        Garbage::TcpBadChecksum,
        Garbage::UdpTruncated,
        Garbage::IcmpTruncated,
        Garbage::Ipv6Truncated,
        Garbage::Ipv6Jumbo,
    ];

    /// The reason the datapath must count a frame of this kind under (by a router whose rule set
    /// drops invalid packets).
    pub fn expected(self) -> DropReason {
        match self {
            Garbage::Random => DropReason::UnsupportedEthertype,
            Garbage::OtherHost => DropReason::OtherHost,
            Garbage::BadVersion => DropReason::IpBadVersion,
            Garbage::Ipv4Truncated => DropReason::Ipv4Truncated,
            Garbage::Ipv4BadIhl => DropReason::Ipv4BadHeaderLength,
            Garbage::Ipv4BadTotalLength => DropReason::Ipv4BadTotalLength,
            Garbage::Ipv4BadChecksum => DropReason::Ipv4BadChecksum,
            Garbage::TcpTruncated => DropReason::TcpTruncated,
            Garbage::TcpBadDataOffset => DropReason::TcpBadHeaderLength,
            Garbage::TcpBadChecksum => DropReason::CtInvalidChecksum,
            Garbage::UdpTruncated => DropReason::UdpTruncated,
            Garbage::IcmpTruncated => DropReason::IcmpTruncated,
            Garbage::Ipv6Truncated => DropReason::Ipv6Truncated,
            Garbage::Ipv6Jumbo => DropReason::Ipv6BadPayloadLength,
        }
    }
}

/// Makes garbage frames of every kind towards a target.
#[derive(Debug, Clone)]
pub struct GarbageMaker {
    target: Target,
    rng: Rng,
}

impl GarbageMaker {
    pub fn new(target: Target, seed: u64) -> GarbageMaker {
        GarbageMaker { target, rng: Rng::new(seed) }
    }

    /// Writes a frame of kind `kind` into `buf` (replacing what it held).
    pub fn next_into(&mut self, kind: Garbage, buf: &mut Vec<u8>) {
        let t = self.target;
        let rng = &mut self.rng;
        let src = Ipv4Addr::from(t.source(rng));
        let r = rng.next_u64();
        let (sport, seq) = (1024 + (r as u16) % 60000, (r >> 32) as u32);
        let syn = || t.syn(src, sport, seq);
        // An IPv4 datagram from `src` of protocol `proto` carrying `l4` (whose lengths and
        // checksum the caller chose), in a frame to the router.
        let ip = |proto: u8, l4: &[u8]| ethernet(t.dst_mac, t.src_mac, &PacketBuilder::v4(src, t.dst).ip(proto, l4));
        let fix_ip_checksum = |f: &mut Vec<u8>| {
            f[IP_CSUM..IP_CSUM + 2].fill(0);
            let c = checksum::internet(&f[ETH..ETH + 20]);
            f[IP_CSUM..IP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
        };
        let frame = match kind {
            Garbage::Random => {
                let mut f = vec![0u8; ETH + rng.below(1501) as usize];
                rng.fill(&mut f);
                while matches!(u16::from_be_bytes([f[12], f[13]]), 0x0800 | 0x0806 | 0x86dd | 0x8100 | 0x88a8) {
                    f[12] = rng.next_u64() as u8;
                }
                f
            }
            Garbage::OtherHost => {
                let mut f = syn();
                rng.fill(&mut f[..6]);
                f[0] = (f[0] & 0xfc) | 0x02; // unicast, locally administered
                if f[..6] == t.dst_mac {
                    f[5] ^= 1;
                }
                f
            }
            Garbage::BadVersion => {
                let mut f = syn();
                let v = [0u8, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15][rng.below(14) as usize];
                f[ETH] = v << 4 | 5;
                f
            }
            Garbage::Ipv4Truncated => {
                let mut f = syn();
                if rng.below(2) == 0 {
                    // Cut inside the header.
                    f.truncate(ETH + rng.below(20) as usize);
                } else {
                    // A total length past the end of the frame.
                    let total = 41 + rng.below(1460) as u16;
                    f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
                    fix_ip_checksum(&mut f);
                }
                f
            }
            Garbage::Ipv4BadIhl => {
                let mut f = syn();
                f[ETH] = 0x40 | rng.below(5) as u8;
                f
            }
            Garbage::Ipv4BadTotalLength => {
                let mut f = syn();
                f[ETH + 2..ETH + 4].copy_from_slice(&(rng.below(20) as u16).to_be_bytes());
                fix_ip_checksum(&mut f);
                f
            }
            Garbage::Ipv4BadChecksum => {
                let mut f = syn();
                f[IP_CSUM] ^= 1 + rng.below(255) as u8;
                f
            }
            Garbage::TcpTruncated => {
                let mut l4 = vec![0u8; rng.below(20) as usize];
                rng.fill(&mut l4);
                ip(6, &l4)
            }
            Garbage::TcpBadDataOffset => {
                let mut f = syn();
                let off = [0u8, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15][rng.below(15) as usize];
                f[TCP + 12] = off << 4;
                f
            }
            Garbage::TcpBadChecksum => {
                let mut f = syn();
                f[TCP_CSUM] ^= 1 + rng.below(255) as u8;
                f
            }
            Garbage::UdpTruncated => {
                let mut l4 = vec![0u8; rng.below(8) as usize];
                rng.fill(&mut l4);
                ip(17, &l4)
            }
            Garbage::IcmpTruncated => {
                // An echo request (type 8) cut before its identifier and sequence number end.
                let mut l4 = vec![8u8, 0, 0, 0, 0, 0, 0];
                l4.truncate(rng.below(8) as usize);
                ip(1, &l4)
            }
            Garbage::Ipv6Truncated | Garbage::Ipv6Jumbo => {
                let v6 = PacketBuilder::v6("2001:2:0:6::2".parse().expect("v6"), "2001:2:0:2::2".parse().expect("v6"));
                let d = v6.tcp(sport, t.dport, seq, 0, tcp_flags::SYN, 64240, &[], &[]);
                let mut f = ethernet(t.dst_mac, t.src_mac, &d);
                f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                match (kind, rng.below(2)) {
                    (Garbage::Ipv6Jumbo, _) => f[ETH + 4..ETH + 6].fill(0),
                    // Cut inside the header (at least its first byte: the version).
                    (_, 0) => f.truncate(ETH + 1 + rng.below(39) as usize),
                    // A payload length past the end of the frame.
                    _ => f[ETH + 4..ETH + 6].copy_from_slice(&(21 + rng.below(1440) as u16).to_be_bytes()),
                }
                f
            }
        };
        debug_assert!(frame.len() <= MAX_FRAME);
        *buf = frame;
    }
}

/// How to send: at most `count` frames, at most `rate` per second (`None`: as fast as the
/// kernel takes them), for at most `time`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub count: u64,
    pub rate: Option<u64>,
    pub time: Duration,
}

/// What [`blast`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sent {
    /// Frames the kernel took.
    pub sent: u64,
    /// Frames the kernel refused (`EINVAL`, `EMSGSIZE`, `ENOBUFS`), skipped.
    pub refused: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl Sent {
    /// Frames taken per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends frames made by `make` (which writes frame number `i` into the buffer) on `sock`, in
/// batches, until `pace.count` frames were offered or `pace.time` is up, no faster than
/// `pace.rate`. Errors other than a refused frame end it.
pub fn blast(sock: &PacketSocket, pace: Pace, mut make: impl FnMut(u64, &mut Vec<u8>)) -> std::io::Result<Sent> {
    let start = clock::now();
    let mut bufs: Vec<Vec<u8>> = (0..MAX_SEND_BATCH).map(|_| Vec::with_capacity(MAX_FRAME)).collect();
    let mut done = Sent::default();
    let mut offered = 0u64;
    while offered < pace.count {
        let elapsed = start.elapsed();
        if elapsed >= pace.time {
            break;
        }
        if let Some(rate) = pace.rate {
            // Frames due by now at the rate; wait for the next batch's time if ahead.
            let due = (elapsed.as_secs_f64() * rate as f64) as u64;
            if offered >= due {
                let next = Duration::from_secs_f64((offered + 1) as f64 / rate as f64);
                clock::sleep(next.saturating_sub(elapsed).min(Duration::from_millis(5)));
                continue;
            }
        }
        let n = (pace.count - offered).min(MAX_SEND_BATCH as u64) as usize;
        for (k, b) in bufs.iter_mut().take(n).enumerate() {
            make(offered + k as u64, b);
        }
        let mut at = 0;
        while at < n {
            let frames: Vec<&[u8]> = bufs[at..n].iter().map(Vec::as_slice).collect();
            match sock.send_batch(&frames) {
                Ok(k) if k > 0 => {
                    done.sent += k as u64;
                    at += k;
                }
                // The kernel took none without saying why: skip the frame rather than spin.
                Ok(_) => {
                    done.refused += 1;
                    at += 1;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EMSGSIZE | libc::ENOBUFS)) => {
                    done.refused += 1;
                    at += 1;
                }
                Err(e) => return Err(e),
            }
        }
        offered += n as u64;
    }
    done.elapsed = start.elapsed();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::packet::{parse_frame, L4};

    fn target() -> Target {
        Target {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst: Ipv4Addr::new(198, 19, 1, 2),
            dport: 9,
            sources: (Ipv4Addr::new(198, 18, 128, 0), 17),
        }
    }

    #[test]
    fn syns_are_valid_and_spread_over_the_prefix() {
        let mut g = SynFlood::new(target(), 7);
        let mut buf = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            g.next_into(&mut buf);
            let p = parse_frame(&buf).expect("a good frame");
            assert_eq!(&p.src[..2], &[198, 18]);
            assert!(p.src[2] >= 128, "{:?}", &p.src[..4]);
            let L4::Tcp(t) = p.l4 else { panic!("not TCP") };
            assert_eq!((t.flags, t.dport), (tcp_flags::SYN, 9));
            assert!(t.sport >= 1024);
            let seg = &buf[p.l4_offset..p.end];
            assert_eq!(checksum::l4(p.family, &p.src, &p.dst, 6, seg, seg.len()), 0, "TCP checksum");
            seen.insert((p.src, t.sport));
        }
        assert!(seen.len() > 1990, "random sources and ports: {}", seen.len());
    }

    /// Each kind is dropped for its reason, as the datapath names a parse failure; the kinds that
    /// parse (other host, bad TCP checksum) are good datagrams.
    #[test]
    fn each_kind_of_garbage_fails_as_it_should() {
        let mut g = GarbageMaker::new(target(), 11);
        let mut buf = Vec::new();
        for kind in Garbage::ALL {
            for _ in 0..300 {
                g.next_into(kind, &mut buf);
                assert!((ETH..=MAX_FRAME).contains(&buf.len()), "{kind:?}: {} bytes", buf.len());
                let got = match parse_frame(&buf) {
                    Ok(_) => None,
                    Err(e) => Some(DropReason::unparsable(e, &buf, ETH)),
                };
                match kind {
                    Garbage::OtherHost | Garbage::TcpBadChecksum => assert_eq!(got, None, "{kind:?}"),
                    _ => assert_eq!(got, Some(kind.expected()), "{kind:?}: {buf:02x?}"),
                }
            }
        }
    }
}
