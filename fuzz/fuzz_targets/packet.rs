//! Frames through the parser, defragmentation and the table: never a panic, the table never
//! past its maximum, a parsed packet's offsets inside the buffer. The same bytes also go to the
//! neighbour-resolution decoders (ARP after the Ethernet header, NS/NA as ICMPv6), the quoted-packet
//! parser and the SCTP chunk walk.
#![no_main]

use std::sync::OnceLock;

use ferrowall_engine::clock::Timestamp;
use ferrowall_engine::conntrack::{Config, Conntrack, Stats};
use ferrowall_proto::arp::{self, Arp};
use ferrowall_proto::ndp::{self, Ndp};
use ferrowall_proto::packet::{parse_ethernet, parse_frame, parse_ip, parse_quoted, sctp_chunks, Packet, L4};
use libfuzzer_sys::fuzz_target;

static CT: OnceLock<Conntrack> = OnceLock::new();

fn check_offsets(p: &Packet, buf: &[u8]) {
    assert!(p.l3_offset <= p.l4_offset && p.l4_offset <= p.end && p.end <= buf.len(), "{p:?}");
    let _ = p.payload_len();
    let _ = p.ip_len();
}

fn neighbour(icmp: &[u8]) {
    if let Ok(m) = Ndp::parse(icmp) {
        assert!(m.ty == ndp::NS || m.ty == ndp::NA);
        assert_eq!(m.flags & !(ndp::flags::ROUTER | ndp::flags::SOLICITED | ndp::flags::OVERRIDE), 0);
        assert_eq!(&m.target[..], &icmp[8..24]);
    }
}

fuzz_target!(|data: &[u8]| {
    let ct = CT.get_or_init(|| Conntrack::new(64, Config::default()));
    let mut st = Stats::default();
    let now = Timestamp::from_secs(1000 + u64::from(data.first().copied().unwrap_or(0)));
    for p in [parse_frame(data), parse_ip(data, 0)].into_iter().flatten() {
        check_offsets(&p, data);
        let seg = p.l4_bytes(data);
        match p.l4 {
            L4::Icmpv6(_) => neighbour(seg),
            L4::Sctp(_) => {
                for c in sctp_chunks(seg) {
                    let Ok(c) = c else { break };
                    assert!(c.value.len() + 4 <= seg.len());
                }
            }
            _ => {}
        }
        let mut t = ct.track(now, data, &p, &mut st);
        let _ = ct.confirm(&mut t, &mut st);
    }
    assert!(ct.len() <= ct.max());

    // The packet an ICMP error quotes, from any offset the first byte picks.
    let off = usize::from(data.first().copied().unwrap_or(0) & 0x3f);
    if let Ok(p) = parse_quoted(data, off) {
        assert!(p.l3_offset == off && p.l4_offset <= data.len() && p.end <= data.len(), "{p:?}");
    }

    // ARP after the Ethernet header (VLAN tags included), and raw; NS/NA on the raw bytes.
    let l3 = parse_ethernet(data).map_or(14, |f| f.l3_offset);
    for b in [data.get(l3..).unwrap_or(&[]), data] {
        if let Ok(a) = Arp::parse(b) {
            assert_eq!(&a.emit()[..], &b[..arp::LEN]);
            let _ = a.is_gratuitous();
        }
    }
    neighbour(data);
});
