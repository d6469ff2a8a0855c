//! Scenarios for the router step: frames in, decisions and frames out, on a virtual clock.

use std::net::{Ipv4Addr, Ipv6Addr};

use proto::arp::{self, Arp};
use proto::build::{ethernet, PacketBuilder};
use proto::packet::{parse_frame, parse_ip, L4};
use proto::{checksum, ndp};

use super::*;

const R0: [u8; 6] = [2, 0, 0, 0, 0, 1];
const R1: [u8; 6] = [2, 0, 0, 0, 1, 1];
const HOST0: [u8; 6] = [2, 0, 0, 0, 0, 0x22];
const HOST1: [u8; 6] = [2, 0, 0, 0, 1, 0x22];
const GW: [u8; 6] = [2, 0, 0, 0, 1, 0xfe];

fn router() -> Router {
    let ifaces = vec![
        Iface {
            id: 0,
            name: "eth0".into(),
            mac: R0,
            mtu: 1500,
            addrs: vec![("198.18.0.1".parse().unwrap(), 24), ("2001:1::1".parse().unwrap(), 64)],
        },
        Iface {
            id: 1,
            name: "eth1".into(),
            mac: R1,
            mtu: 1400,
            addrs: vec![("198.19.1.1".parse().unwrap(), 24), ("2001:2::1".parse().unwrap(), 64)],
        },
        Iface { id: 2, name: "tun0".into(), mac: [0; 6], mtu: 1500, addrs: vec![("100.64.0.1".parse().unwrap(), 30)] },
    ];
    let statics: Vec<StaticRoute> =
        ["203.0.113.0/24 via 198.19.1.254", "2001:db8::/32 via 2001:2::fe", "10.0.0.0/8 dev tun0"]
            .iter()
            .map(|l| parse_route(l).unwrap().unwrap())
            .collect();
    Router::new(ifaces, &statics, NeighConfig::default(), IcmpLimits::default()).unwrap()
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn from_host0(dst: &str) -> PacketBuilder {
    PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 2), dst.parse().unwrap())
}

fn from_host0_v6(dst: &str) -> PacketBuilder {
    PacketBuilder::v6("2001:1::2".parse().unwrap(), dst.parse().unwrap())
}

/// Receive a frame on port 0 and run steps 3-4 with an accepting rule set.
fn run(r: &Router, now: Timestamp, frame: &mut [u8]) -> Forward {
    let Rx::Ip(p) = r.receive(now, 0, frame) else { panic!("not IP") };
    r.forward(now, 0, frame, &p, |_, _| true)
}

fn arp_reply_from(mac: [u8; 6], ip: [u8; 4], to_mac: [u8; 6], to_ip: [u8; 4]) -> Vec<u8> {
    Arp { op: arp::op::REPLY, sha: mac, spa: ip, tha: to_mac, tpa: to_ip }.frame(to_mac, mac)
}

#[test]
fn forwards_after_resolution_rewriting_in_place() {
    let r = router();
    let d = from_host0("198.19.1.2").ttl(64).udp(1000, 53, b"query");
    let mut f = ethernet(R0, HOST0, &d);
    // Unknown neighbour: held, ARP request out of eth1.
    let Forward::Queued { iface: 1, request: Some(req) } = run(&r, t(0), &mut f) else { panic!() };
    let a = Arp::parse(&req[14..]).unwrap();
    assert_eq!((a.spa, a.tpa, a.sha), ([198, 19, 1, 1], [198, 19, 1, 2], R1));
    // The reply releases it, TTL already decremented.
    let Rx::Handled(out) = r.receive(t(5), 1, &arp_reply_from(HOST1, [198, 19, 1, 2], R1, [198, 19, 1, 1])) else {
        panic!()
    };
    assert_eq!(out.len(), 1);
    let p = parse_frame(&out[0].frame).unwrap();
    assert_eq!((out[0].iface, &out[0].frame[..6], &out[0].frame[6..12], p.ttl), (1, &HOST1[..], &R1[..], 63));
    // Now resolved: in place.
    let mut f = ethernet(R0, HOST0, &d);
    let Forward::Transmit { iface: 1, start: 0, end, .. } = run(&r, t(10), &mut f) else { panic!() };
    assert_eq!(end, f.len());
    let p = parse_frame(&f).unwrap();
    assert_eq!((&f[..6], &f[6..12], p.ttl), (&HOST1[..], &R1[..], 63));
    let mut want = d.clone();
    decrement_ttl(&mut want).unwrap();
    assert_eq!(&f[14..], &want[..]);
}

#[test]
fn vlan_tagged_and_padded_frames() {
    let r = router();
    r.neighbours().insert(t(0), 1, "198.19.1.2".parse().unwrap(), HOST1);
    let d = from_host0("198.19.1.2").udp(1, 2, b"x");
    let mut f = ethernet(R0, HOST0, &d);
    f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    f.extend_from_slice(&[0; 20]); // Ethernet padding
    let Forward::Transmit { start, end, .. } = run(&r, t(1), &mut f) else { panic!() };
    assert_eq!((start, end), (4, 18 + d.len()));
    let out = &f[start..end];
    assert_eq!(&out[12..14], &[8, 0]);
    assert_eq!(parse_frame(out).unwrap().ttl, 63);
}

#[test]
fn gateway_routes_resolve_the_gateway() {
    let r = router();
    r.neighbours().insert(t(0), 1, "198.19.1.254".parse().unwrap(), GW);
    r.neighbours().insert(t(0), 1, "2001:2::fe".parse().unwrap(), GW);
    let mut f = ethernet(R0, HOST0, &from_host0("203.0.113.9").udp(1, 2, b"x"));
    let Forward::Transmit { iface: 1, next_hop, .. } = run(&r, t(1), &mut f) else { panic!() };
    assert_eq!(&next_hop[..4], &[198, 19, 1, 254]);
    assert_eq!(&f[..6], &GW);
    let mut f = ethernet(R0, HOST0, &from_host0_v6("2001:db8::9").udp(1, 2, b"x"));
    let Forward::Transmit { iface: 1, .. } = run(&r, t(1), &mut f) else { panic!() };
    assert_eq!((&f[..6], parse_frame(&f).unwrap().ttl), (&GW[..], 63));
}

#[test]
fn layer3_port_needs_no_neighbour() {
    let r = router();
    let d = from_host0("10.1.2.3").udp(1, 2, b"x");
    let mut f = ethernet(R0, HOST0, &d);
    let Forward::Transmit { iface: 2, start: 14, end, .. } = run(&r, t(1), &mut f) else { panic!() };
    assert_eq!(parse_ip(&f[14..end], 0).unwrap().ttl, 63);
    // And from a layer-3 port to an Ethernet one: a new frame.
    r.neighbours().insert(t(0), 0, "198.18.0.2".parse().unwrap(), HOST0);
    let mut d = PacketBuilder::v4(Ipv4Addr::new(10, 9, 9, 9), Ipv4Addr::new(198, 18, 0, 2)).udp(1, 2, b"x");
    let p = parse_ip(&d, 0).unwrap();
    let Forward::Frames { iface: 0, frames } = r.forward(t(2), 2, &mut d, &p, |_, _| true) else { panic!() };
    assert_eq!((frames.len(), &frames[0][..6]), (1, &HOST0[..]));
}

#[test]
fn ttl_expiry_answers_time_exceeded_from_the_incoming_side() {
    let r = router();
    let d = from_host0("198.19.1.2").ttl(1).udp(1000, 33434, b"traceroute");
    let mut f = ethernet(R0, HOST0, &d);
    let Forward::Icmp(_, e) = run(&r, t(0), &mut f) else { panic!() };
    let p = parse_ip(&e, 0).unwrap();
    assert_eq!((&p.src[..4], &p.dst[..4]), (&[198, 18, 0, 1][..], &[198, 18, 0, 2][..]));
    let L4::Icmp(i) = p.l4 else { panic!() };
    assert_eq!((i.ty, i.code), (11, 0));
    assert_eq!(&e[28..], &d[..], "the original is quoted as received");
    // The error goes out after the output rules; its neighbour is resolved first.
    let frames = r.send_local(t(0), &e).unwrap();
    assert_eq!(Arp::parse(&frames[0].frame[14..]).unwrap().tpa, [198, 18, 0, 2]);
    // IPv6 too, from our eth0 address.
    let d6 = from_host0_v6("2001:2::2").ttl(1).udp(1, 2, b"x");
    let mut f = ethernet(R0, HOST0, &d6);
    let Forward::Icmp(_, e) = run(&r, t(0), &mut f) else { panic!() };
    let p = parse_ip(&e, 0).unwrap();
    assert_eq!((p.src, p.l4_bytes(&e)[0]), ("2001:1::1".parse::<Ipv6Addr>().unwrap().octets(), 3));
}

#[test]
fn errors_are_rate_limited_per_source() {
    let r = router();
    let d = from_host0("198.19.1.2").ttl(1).udp(1, 2, b"x");
    let outcomes: Vec<bool> =
        (0..8).map(|_| matches!(run(&r, t(0), &mut ethernet(R0, HOST0, &d)), Forward::Icmp(..))).collect();
    assert_eq!(outcomes, [true, true, true, true, true, true, false, false]);
    assert_eq!(run(&r, t(0), &mut ethernet(R0, HOST0, &d)), Forward::Drop(DropReason::TtlExpired));
    assert!(matches!(run(&r, t(1000), &mut ethernet(R0, HOST0, &d)), Forward::Icmp(..)));
}

#[test]
fn no_route_and_too_big() {
    let r = router();
    let mut f = ethernet(R0, HOST0, &from_host0("192.0.2.1").udp(1, 2, b"x"));
    let Forward::Icmp(_, e) = run(&r, t(0), &mut f) else { panic!() };
    assert_eq!((e[20], e[21]), (3, 0));
    let mut f = ethernet(R0, HOST0, &from_host0_v6("2001:99::1").udp(1, 2, b"x"));
    let Forward::Icmp(_, e) = run(&r, t(0), &mut f) else { panic!() };
    assert_eq!((e[40], e[41]), (1, 0));
    // eth1's MTU is 1400.
    let mut f = ethernet(R0, HOST0, &from_host0("198.19.1.2").udp(1, 2, &[0; 1400]));
    let Forward::Icmp(_, e) = run(&r, t(0), &mut f) else { panic!() };
    assert_eq!(&e[20..28], &[3, 4, e[22], e[23], 0, 0, 0x05, 0x78]);
    let mut f = ethernet(R0, HOST0, &from_host0_v6("2001:2::2").udp(1, 2, &[0; 1400]));
    let Forward::Icmp(_, e) = run(&r, t(0), &mut f) else { panic!() };
    assert_eq!(&e[40..48], &[2, 0, e[42], e[43], 0, 0, 0x05, 0x78]);
}

#[test]
fn ipv4_without_df_is_fragmented() {
    let r = router();
    let mut d = from_host0("198.19.1.2").udp(1, 2, &[9; 2000]);
    d[6] = 0;
    d[10..12].fill(0);
    let c = checksum::internet(&d[..20]);
    d[10..12].copy_from_slice(&c.to_be_bytes());
    // Unresolved: every fragment is held (up to the queue's 3), one request.
    let Forward::Queued { iface: 1, request: Some(_) } = run(&r, t(0), &mut ethernet(R0, HOST0, &d)) else { panic!() };
    let Rx::Handled(out) = r.receive(t(1), 1, &arp_reply_from(HOST1, [198, 19, 1, 2], R1, [198, 19, 1, 1])) else {
        panic!()
    };
    assert_eq!(out.len(), 2);
    // Resolved: frames at once, each within eth1's 1400 bytes, TTL decremented in each.
    let Forward::Frames { iface: 1, frames } = run(&r, t(2), &mut ethernet(R0, HOST0, &d)) else { panic!() };
    assert_eq!(frames.len(), 2);
    let mut data = Vec::new();
    for f in &frames {
        assert!(f.len() - 14 <= 1400);
        assert_eq!(&f[..6], &HOST1);
        let p = parse_frame(f).unwrap();
        assert_eq!(p.ttl, 63);
        data.extend_from_slice(&f[34..]);
    }
    assert_eq!(data, d[20..]);
}

#[test]
fn pings_to_us_are_answered() {
    let r = router();
    let d = from_host0("198.19.1.1").icmp(8, 0, 0x0042_0001, b"ping");
    let Forward::Reply(rep) = run(&r, t(0), &mut ethernet(R0, HOST0, &d)) else { panic!() };
    let p = parse_ip(&rep, 0).unwrap();
    assert_eq!((&p.src[..4], &p.dst[..4], rep[20]), (&[198, 19, 1, 1][..], &[198, 18, 0, 2][..], 0));
    let d6 = from_host0_v6("2001:1::1").icmp(128, 0, 7, b"ping");
    let Forward::Reply(rep) = run(&r, t(0), &mut ethernet(R0, HOST0, &d6)) else { panic!() };
    assert_eq!(rep[40], 129);
    // Broadcast pings are ignored; other traffic for us is delivered.
    let b = from_host0("198.18.0.255").icmp(8, 0, 1, b"");
    assert_eq!(run(&r, t(0), &mut ethernet(arp::BROADCAST, HOST0, &b)), Forward::Deliver);
    let u = from_host0("198.18.0.1").udp(1, 53, b"");
    assert_eq!(run(&r, t(0), &mut ethernet(R0, HOST0, &u)), Forward::Deliver);
    // The input rules see them first.
    let Rx::Ip(p) = r.receive(t(0), 0, &ethernet(R0, HOST0, &d)) else { panic!() };
    let mut f = ethernet(R0, HOST0, &d);
    let mut seen = None;
    let v = r.forward(t(0), 0, &mut f, &p, |h, o| {
        seen = Some((h, o));
        false
    });
    assert_eq!((v, seen), (Forward::Drop(DropReason::Filtered), Some((Hook::Input, None))));
}

#[test]
fn forward_rules_see_the_output_interface() {
    let r = router();
    let d = from_host0("198.19.1.2").udp(1, 2, b"x");
    let mut f = ethernet(R0, HOST0, &d);
    let Rx::Ip(p) = r.receive(t(0), 0, &f) else { panic!() };
    let mut seen = None;
    let v = r.forward(t(0), 0, &mut f, &p, |h, o| {
        seen = Some((h, o));
        false
    });
    assert_eq!((v, seen), (Forward::Drop(DropReason::Filtered), Some((Hook::Forward, Some(1)))));
    assert_eq!(f, ethernet(R0, HOST0, &d), "a filtered frame is left untouched");
}

#[test]
fn martians_and_other_hosts() {
    let r = router();
    let d = from_host0("198.19.1.2").udp(1, 2, b"x");
    assert_eq!(r.receive(t(0), 0, &ethernet(HOST1, HOST0, &d)), Rx::Drop(DropReason::OtherHost));
    assert_eq!(r.receive(t(0), 7, &ethernet(R0, HOST0, &d)), Rx::Drop(DropReason::UnknownIface));
    assert!(matches!(r.receive(t(0), 0, &ethernet(R0, HOST0, &d[..10])), Rx::Drop(DropReason::Unparsable(_))));
    // An IPv4 datagram behind the IPv6 ethertype: malformed at the IPv6 layer; an unknown
    // ethertype is named as such.
    let mut v4_as_v6 = ethernet(R0, HOST0, &d);
    v4_as_v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let bad = ParseError::Malformed { layer: proto::packet::Layer::Ipv6, offset: 14 };
    assert_eq!(r.receive(t(0), 0, &v4_as_v6), Rx::Drop(DropReason::Unparsable(bad)));
    v4_as_v6[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    assert_eq!(r.receive(t(0), 0, &v4_as_v6), Rx::Drop(DropReason::UnsupportedEthertype));
    let m = PacketBuilder::v4(Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::new(198, 19, 1, 2)).udp(1, 2, b"");
    assert_eq!(run(&r, t(0), &mut ethernet(R0, HOST0, &m)), Forward::Drop(DropReason::MartianSource));
    let lo = from_host0("127.0.0.1").udp(1, 2, b"");
    assert_eq!(run(&r, t(0), &mut ethernet(R0, HOST0, &lo)), Forward::Drop(DropReason::MartianDestination));
    let ll = from_host0_v6("fe80::9").udp(1, 2, b"");
    assert_eq!(run(&r, t(0), &mut ethernet(R0, HOST0, &ll)), Forward::Drop(DropReason::MartianDestination));
    // A link-local source may not be forwarded: beyond scope.
    let lls = PacketBuilder::v6("fe80::2".parse().unwrap(), "2001:2::2".parse().unwrap()).udp(1, 2, b"");
    let Forward::Icmp(_, e) = run(&r, t(0), &mut ethernet(R0, HOST0, &lls)) else { panic!() };
    assert_eq!((e[40], e[41]), (1, 2));
    // Multicast is ours to see, never forwarded.
    let mc = from_host0("239.1.1.1").udp(1, 2, b"");
    assert_eq!(run(&r, t(0), &mut ethernet([1, 0, 0x5e, 1, 1, 1], HOST0, &mc)), Forward::Deliver);
}

#[test]
fn arp_and_ndp_are_handled_on_receive() {
    let r = router();
    let req = Arp { op: arp::op::REQUEST, sha: HOST0, spa: [198, 18, 0, 2], tha: [0; 6], tpa: [198, 18, 0, 1] }
        .frame(arp::BROADCAST, HOST0);
    let Rx::Handled(out) = r.receive(t(0), 0, &req) else { panic!() };
    assert_eq!(Arp::parse(&out[0].frame[14..]).unwrap().sha, R0);
    let ns = ndp::solicitation(
        HOST0,
        "2001:1::2".parse::<Ipv6Addr>().unwrap().octets(),
        "2001:1::1".parse::<Ipv6Addr>().unwrap().octets(),
        None,
    );
    let Rx::Handled(out) = r.receive(t(0), 0, &ns) else { panic!() };
    let na = parse_frame(&out[0].frame).unwrap();
    let m = ndp::Ndp::parse(na.l4_bytes(&out[0].frame)).unwrap();
    assert_eq!((m.ty, m.flags & ndp::flags::ROUTER), (ndp::NA, ndp::flags::ROUTER));
    assert_eq!(r.neighbours().lookup(0, "2001:1::2".parse().unwrap()), Some(HOST0));
}

#[test]
fn failed_resolution_gives_host_unreachable() {
    let r = router();
    let d = from_host0("198.19.1.9").udp(1, 2, b"x");
    assert!(matches!(run(&r, t(0), &mut ethernet(R0, HOST0, &d)), Forward::Queued { .. }));
    assert_eq!(r.tick(t(1000)).frames.len(), 1);
    assert_eq!(r.tick(t(2000)).frames.len(), 1);
    let last = r.tick(t(3000));
    assert_eq!(last.errors.len(), 1);
    let e = &last.errors[0];
    let p = parse_ip(e, 0).unwrap();
    assert_eq!((&p.src[..4], &p.dst[..4], e[20], e[21]), (&[198, 18, 0, 1][..], &[198, 18, 0, 2][..], 3, 1));
    // The quoted packet is the one that was held: TTL already decremented, as Linux quotes it.
    assert_eq!(parse_ip(&e[28..], 0).unwrap().ttl, 63);
    let d6 = from_host0_v6("2001:2::9").udp(1, 2, b"x");
    assert!(matches!(run(&r, t(4000), &mut ethernet(R0, HOST0, &d6)), Forward::Queued { .. }));
    assert_eq!(r.tick(t(5000)).frames.len(), 1);
    assert_eq!(r.tick(t(6000)).frames.len(), 1);
    let e = r.tick(t(7000)).errors;
    assert_eq!((e.len(), e[0][40], e[0][41]), (1, 1, 3));
}

#[test]
fn reject_helpers_from_the_router() {
    let r = router();
    let syn = from_host0("198.19.1.2").tcp(40000, 22, 5, 0, proto::packet::tcp_flags::SYN, 1000, &[], b"");
    let rst = tcp_reset(&syn).unwrap();
    assert_eq!(r.send_local(t(0), &rst).map(|f| f.len()), Ok(1), "an ARP request for the host");
    let u = from_host0("198.19.1.2").udp(1, 2, b"");
    let from = r.address_on(0, Family::V4, &[198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let e = port_unreachable(&u, from).unwrap();
    assert_eq!((e[20], e[21]), (3, 3));
}

#[test]
fn routes_are_replaced_atomically() {
    let r = router();
    r.neighbours().insert(t(0), 1, "198.19.1.254".parse().unwrap(), GW);
    let d = from_host0("192.0.2.1").udp(1, 2, b"x");
    assert!(matches!(run(&r, t(0), &mut ethernet(R0, HOST0, &d)), Forward::Icmp(..)));
    let before = r.routes();
    r.replace_routes(&[parse_route("default via 198.19.1.254").unwrap().unwrap()]).unwrap();
    assert!(matches!(run(&r, t(1), &mut ethernet(R0, HOST0, &d)), Forward::Transmit { iface: 1, .. }));
    // The old table is still whole for whoever holds it; the new one lost the old statics.
    assert!(before.lookup(Family::V4, &addr_bytes("203.0.113.1".parse().unwrap()).1).is_some());
    assert_eq!(r.routes().len(), before.len() - 3 + 1);
    assert!(r.replace_routes(&[parse_route("default via 192.0.2.1").unwrap().unwrap()]).is_err());
}

#[test]
fn router_rejects_bad_interface_ids() {
    let mut ifs = router().ifaces().to_vec();
    ifs[1].id = 5;
    let e = Router::new(ifs, &[], NeighConfig::default(), IcmpLimits::default()).unwrap_err();
    assert_eq!(e, RouterError::IfaceId { position: 1, id: 5 });
}

proptest::proptest! {
    #[test]
    fn any_frame_is_handled_without_panic(
        mut f in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        v6: bool,
        port in 0usize..4,
    ) {
        let r = router();
        if f.len() > 14 {
            f[..6].copy_from_slice(&R0);
            f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[8, 0] });
            f[14] = if v6 { 0x60 } else { 0x45 };
        }
        if let Rx::Ip(p) = r.receive(t(0), port, &f) {
            let _ = r.forward(t(0), port, &mut f, &p, |_, _| true);
        }
        let _ = r.tick(t(5000));
    }
}

/// Frame `f` through [`Router::transmit_gso`], whole or (`split`) as the datapath hands a
/// super-frame over: only its Ethernet, IP and TCP headers in the rewritable copy, the payload
/// apart. The outcome and the frame after it (put back together).
fn transmit_split(r: &Router, now: Timestamp, f: &[u8], g: &Gso, split: bool) -> (Forward, Vec<u8>) {
    let Rx::Ip(p) = r.receive(now, 0, f) else { panic!("not IP") };
    let Routed::Forward(hop) = r.route(0, &p) else { panic!("not forwarded") };
    let L4::Tcp(tcp) = p.l4 else { panic!("not TCP") };
    let at = if split { p.l4_offset + usize::from(tcp.header_len) } else { f.len() };
    let (mut head, tail) = (f[..at].to_vec(), &f[at..]);
    let fw = r.transmit_gso(now, 0, Split { head: &mut head, tail }, &p, hop, Some(g), None);
    (fw, [&head[..], tail].concat())
}

/// A TCP super-segment of `len` payload bytes through the router with a GSO description of
/// `mss`-byte pieces, as the datapath hands it over; the outcome and the frame after it.
fn transmit_super(
    r: &Router,
    now: Timestamp,
    b: PacketBuilder,
    len: usize,
    mss: u16,
    split: bool,
) -> (Forward, Vec<u8>) {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let d = b.tcp(40000, 80, 5000, 1, proto::packet::tcp_flags::ACK, 512, &[], &payload);
    let kind = if d[0] >> 4 == 4 { crate::gso::GsoKind::Tcp4 } else { crate::gso::GsoKind::Tcp6 };
    transmit_split(r, now, &ethernet(R0, HOST0, &d), &Gso { kind, ecn: false, size: mss, hdr_len: 0 }, split)
}

#[test]
fn a_gso_super_packet_goes_whole_when_its_pieces_fit_and_its_next_hop_is_known() {
    for split in [false, true] {
        goes_whole(split);
    }
}

fn goes_whole(split: bool) {
    let r = router();
    r.neighbours().insert(t(0), 1, "198.19.1.2".parse().unwrap(), HOST1);
    // 40000 bytes, pieces of 20 + 20 + 1360 = 1400: whole, TTL decremented once, in place.
    let (fw, f) = transmit_super(&r, t(1), from_host0("198.19.1.2").ttl(64), 40_000, 1360, split);
    let Forward::Transmit { iface: 1, start: 0, end, .. } = fw else { panic!("{fw:?}") };
    assert_eq!(end, f.len());
    let p = parse_frame(&f).unwrap();
    assert_eq!((p.ttl, p.end - p.l3_offset, &f[..6]), (63, 40_040, &HOST1[..]));
    assert_eq!(checksum::internet(&f[14..34]), 0, "header checksum updated");
    // Pieces of 1401 bytes do not fit eth1 (MTU 1400): with DF, too big, answered with the MTU.
    let (fw, _) = transmit_super(&r, t(2), from_host0("198.19.1.2"), 40_000, 1361, split);
    let Forward::Icmp(DropReason::TooBig, e) = fw else { panic!("{fw:?}") };
    let q = parse_ip(&e, 0).unwrap();
    assert!(matches!(q.l4, L4::Icmp(i) if i.ty == 3 && i.code == 4), "{q:?}");
    assert_eq!(u16::from_be_bytes([e[26], e[27]]), 1400);
    // IPv6 likewise: 40 + 20 + 1340 fits.
    r.neighbours().insert(t(0), 1, "2001:2::2".parse().unwrap(), HOST1);
    let (fw, _) = transmit_super(&r, t(3), from_host0_v6("2001:2::2"), 30_000, 1340, split);
    assert!(matches!(fw, Forward::Transmit { iface: 1, .. }), "{fw:?}");
    let (fw, _) = transmit_super(&r, t(4), from_host0_v6("2001:2::2"), 30_000, 1341, split);
    assert!(matches!(fw, Forward::Icmp(DropReason::TooBig, _)), "{fw:?}");
}

#[test]
fn a_gso_super_packet_is_cut_when_it_must_be_held_or_fragmented() {
    for split in [false, true] {
        is_cut(split);
    }
}

fn is_cut(split: bool) {
    let r = router();
    // Next hop unknown: cut into complete pieces, held, released as plain frames.
    let (fw, _) = transmit_super(&r, t(0), from_host0("198.19.1.2").ttl(64), 4_000, 1360, split);
    let Forward::Queued { iface: 1, request: Some(_) } = fw else { panic!("{fw:?}") };
    let Rx::Handled(out) = r.receive(t(5), 1, &arp_reply_from(HOST1, [198, 19, 1, 2], R1, [198, 19, 1, 1])) else {
        panic!()
    };
    assert_eq!(out.len(), 3, "4000 bytes in 1360-byte pieces");
    let mut seqs = Vec::new();
    for o in &out {
        let p = parse_frame(&o.frame).unwrap();
        assert!(o.frame.len() - 14 <= 1400);
        assert_eq!(p.ttl, 63);
        assert_eq!(checksum::l4(p.family, &p.src, &p.dst, 6, &o.frame[34..], o.frame.len() - 34), 0);
        let L4::Tcp(tcp) = p.l4 else { panic!() };
        seqs.push(tcp.seq);
    }
    assert_eq!(seqs, [5000, 6360, 7720]);
    // Without DF, pieces over the MTU are cut, then fragmented.
    let payload = vec![9u8; 4000];
    let mut d = from_host0("198.19.1.2").tcp(40000, 80, 1, 1, 0x10, 512, &[], &payload);
    d[6] = 0;
    d[10..12].fill(0);
    let c = checksum::internet(&d[..20]);
    d[10..12].copy_from_slice(&c.to_be_bytes());
    let g = Gso { kind: crate::gso::GsoKind::Tcp4, ecn: false, size: 2000, hdr_len: 0 };
    let (fw, _) = transmit_split(&r, t(6), &ethernet(R0, HOST0, &d), &g, split);
    let Forward::Frames { iface: 1, frames } = fw else { panic!("{fw:?}") };
    assert_eq!(frames.len(), 4, "two pieces of 2040 bytes, two fragments each");
    assert!(frames.iter().all(|f| f.len() - 14 <= 1400 && parse_frame(f).unwrap().fragment.is_some()));
}

#[test]
fn a_split_super_packet_comes_out_as_the_whole_one_does() {
    // TTL expiring, too big for the link (answered with ICMP errors that quote it), fitting with a
    // known next hop (sent), an unknown next hop (cut and held), over IPv4 and IPv6.
    let cases: [(&str, PacketBuilder, u16, bool); 7] = [
        ("expires", from_host0("198.19.1.2").ttl(1), 1360, true),
        ("too big", from_host0("198.19.1.2"), 1361, true),
        ("fits", from_host0("198.19.1.2").ttl(64), 1360, true),
        ("unresolved", from_host0("198.19.1.2").ttl(64), 1360, false),
        ("v6 too big", from_host0_v6("2001:2::2"), 1341, true),
        ("v6 fits", from_host0_v6("2001:2::2"), 1340, true),
        ("v6 unresolved", from_host0_v6("2001:2::2"), 1340, false),
    ];
    for (what, b, mss, known) in cases {
        let outcome = |split: bool| {
            let r = router();
            if known {
                r.neighbours().insert(t(0), 1, "198.19.1.2".parse().unwrap(), HOST1);
                r.neighbours().insert(t(0), 1, "2001:2::2".parse().unwrap(), HOST1);
            }
            let (fw, f) = transmit_super(&r, t(1), b.clone(), 6_000, mss, split);
            // What the neighbour cache held, released by the answer.
            let arp = arp_reply_from(HOST1, [198, 19, 1, 2], R1, [198, 19, 1, 1]);
            let released = match r.receive(t(5), 1, &arp) {
                Rx::Handled(out) => out.into_iter().map(|o| o.frame).collect(),
                _ => Vec::new(),
            };
            (format!("{fw:?}"), f, released)
        };
        let (whole, split) = (outcome(false), outcome(true));
        assert_eq!(whole, split, "{what}");
        assert!(!whole.0.starts_with("Drop"), "{what}: {}", whole.0);
    }
}
