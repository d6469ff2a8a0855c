//! Table-level scenarios on a virtual clock: directions, confirm, clash, expiry, early drop,
//! UDP and ICMP classification, RELATED errors; and property tests of the table's invariants.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proto::build::{opt, PacketBuilder};
use proto::packet::{parse_ip, tcp_flags};

use super::*;
use crate::display::conntrack_line;

fn a() -> PacketBuilder {
    PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1))
}

fn a6() -> PacketBuilder {
    PacketBuilder::v6("2001:2:0:1::1".parse::<Ipv6Addr>().unwrap(), "2001:2:0:2::1".parse().unwrap())
}

/// Tracks and (when `accept`) confirms one datagram; returns (state, dir).
fn run(ct: &Conntrack, now: Timestamp, dgram: &[u8], st: &mut Stats) -> (CtState, Dir) {
    let p = parse_ip(dgram, 0).expect("test packet parses");
    let mut t = ct.track(now, dgram, &p, st);
    ct.confirm(&mut t, st).expect("room in the table");
    (t.state, t.dir)
}

fn lines(ct: &Conntrack, now: Timestamp) -> Vec<String> {
    let mut v = Vec::new();
    ct.for_each(now, |c| v.push(conntrack_line(c, now)));
    v.sort();
    v
}

const T0: Timestamp = Timestamp::from_secs(1000);

#[test]
fn udp_both_directions_share_one_entry_and_assure_after_two_seconds() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    assert_eq!(run(&ct, T0, &a().udp(5000, 53, b"q"), &mut st), (CtState::New, Dir::Original));
    assert_eq!(
        lines(&ct, T0),
        ["udp      17 29 src=198.18.0.1 dst=198.19.0.1 sport=5000 dport=53 [UNREPLIED] src=198.19.0.1 dst=198.18.0.1 sport=53 dport=5000 mark=0 use=1"]
    );
    // A second original packet before any reply is still NEW.
    assert_eq!(run(&ct, T0, &a().udp(5000, 53, b"q"), &mut st).0, CtState::New);
    assert_eq!(run(&ct, T0, &a().reverse().udp(53, 5000, b"r"), &mut st), (CtState::Established, Dir::Reply));
    assert_eq!(ct.len(), 1);
    // Replied but younger than 2 s: unreplied timeout, not assured.
    assert_eq!(
        lines(&ct, T0),
        ["udp      17 29 src=198.18.0.1 dst=198.19.0.1 sport=5000 dport=53 src=198.19.0.1 dst=198.18.0.1 sport=53 dport=5000 mark=0 use=1"]
    );
    let later = Timestamp::from_secs(1003);
    assert_eq!(run(&ct, later, &a().udp(5000, 53, b"q"), &mut st), (CtState::Established, Dir::Original));
    assert_eq!(
        lines(&ct, later),
        ["udp      17 119 src=198.18.0.1 dst=198.19.0.1 sport=5000 dport=53 src=198.19.0.1 dst=198.18.0.1 sport=53 dport=5000 [ASSURED] mark=0 use=1"]
    );
    assert_eq!(st.insert, 1);
}

#[test]
fn expired_entries_vanish_on_lookup_and_by_sweep() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    run(&ct, T0, &a().udp(5000, 53, b"q"), &mut st);
    run(&ct, T0, &a().udp(5001, 53, b"q"), &mut st);
    let late = Timestamp::from_secs(1031);
    assert!(lines(&ct, late).is_empty(), "expired entries are not listed");
    // Lookup meets the expired entry: it is removed and the packet starts a new connection.
    assert_eq!(run(&ct, late, &a().udp(5000, 53, b"q"), &mut st).0, CtState::New);
    assert_eq!(st.expired, 1);
    assert_eq!(ct.len(), 2);
    // The other one goes with the sweep.
    let mut removed = 0;
    for _ in 0..SHARDS {
        removed += ct.sweep(late, SHARDS * 4, &mut st);
    }
    assert_eq!(removed, 1);
    assert_eq!(ct.len(), 1);
}

#[test]
fn unconfirmed_connections_never_enter_the_table() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let d = a().udp(5000, 53, b"q");
    let p = parse_ip(&d, 0).unwrap();
    let t = ct.track(T0, &d, &p, &mut st);
    assert!(t.is_pending());
    drop(t); // the packet was dropped by the rules
    assert!(ct.is_empty());
    assert_eq!(ct.track(T0, &d, &p, &mut st).state, CtState::New);
}

#[test]
fn two_workers_confirming_one_flow_make_one_entry() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let (mut s1, mut s2) = (Stats::default(), Stats::default());
    let d = a().udp(5000, 53, b"q");
    let p = parse_ip(&d, 0).unwrap();
    let mut t1 = ct.track(T0, &d, &p, &mut s1);
    let mut t2 = ct.track(T0, &d, &p, &mut s2);
    ct.confirm(&mut t1, &mut s1).unwrap();
    ct.confirm(&mut t2, &mut s2).unwrap();
    assert_eq!(ct.len(), 1);
    assert_eq!((s1.insert, s2.insert, s2.clash_resolve), (1, 0, 1));
}

#[test]
fn full_table_drops_unassured_first_then_refuses() {
    let ct = Conntrack::new(4, Config::default());
    let mut st = Stats::default();
    for port in 0..4 {
        run(&ct, T0, &a().udp(6000 + port, 53, b"q"), &mut st);
    }
    assert_eq!(ct.len(), 4);
    run(&ct, T0, &a().udp(7000, 53, b"q"), &mut st);
    assert_eq!((ct.len(), st.early_drop), (4, 1));

    // Now make every entry assured: nothing may be dropped, the new packet's flow is refused.
    let ct = Conntrack::new(2, Config::default());
    let mut st = Stats::default();
    let later = Timestamp::from_secs(1003);
    for port in 0..2 {
        run(&ct, T0, &a().udp(6000 + port, 53, b"q"), &mut st);
        run(&ct, T0, &a().reverse().udp(53, 6000 + port, b"r"), &mut st);
        run(&ct, later, &a().udp(6000 + port, 53, b"q"), &mut st);
    }
    let d = a().udp(7000, 53, b"q");
    let p = parse_ip(&d, 0).unwrap();
    let mut t = ct.track(later, &d, &p, &mut st);
    assert_eq!(ct.confirm(&mut t, &mut st), Err(Refused::TableFull));
    assert_eq!((ct.len(), st.drop, st.early_drop), (2, 1, 0));
}

#[test]
fn icmp_echo_pairs_and_unsolicited_reply() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let echo = a().icmp(8, 0, 0x0042_0001, b"ping");
    let reply = a().reverse().icmp(0, 0, 0x0042_0001, b"ping");
    assert_eq!(run(&ct, T0, &echo, &mut st), (CtState::New, Dir::Original));
    assert_eq!(run(&ct, T0, &reply, &mut st), (CtState::Established, Dir::Reply));
    assert_eq!(
        lines(&ct, T0),
        ["icmp     1 29 src=198.18.0.1 dst=198.19.0.1 type=8 code=0 id=66 src=198.19.0.1 dst=198.18.0.1 type=0 code=0 id=66 mark=0 use=1"]
    );
    // An echo reply that answers nothing is invalid, and so is an unknown type.
    let stray = a().reverse().icmp(0, 0, 0x0099_0001, b"x");
    assert_eq!(run(&ct, T0, &stray, &mut st).0, CtState::Invalid);
    assert_eq!(run(&ct, T0, &a().icmp(42, 0, 0, b""), &mut st).0, CtState::Invalid);
    assert_eq!(st.invalid_by[Invalid::IcmpType as usize], 2);
}

#[test]
fn icmp_errors_are_related_to_the_flow_they_quote() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let udp = a().udp(5000, 53, b"query");
    run(&ct, T0, &udp, &mut st);
    // The server answers with port unreachable quoting the datagram.
    let unreach = a().reverse().icmp(3, 3, 0, &udp);
    assert_eq!(run(&ct, T0, &unreach, &mut st), (CtState::Related, Dir::Reply));
    // Quoting a flow nobody tracks: invalid.
    let other = a().udp(5999, 53, b"query");
    assert_eq!(run(&ct, T0, &a().reverse().icmp(3, 3, 0, &other), &mut st).0, CtState::Invalid);
    // Addressed elsewhere than the flow's source: invalid.
    let elsewhere = PacketBuilder::v4(Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 18, 0, 99)).icmp(3, 3, 0, &udp);
    assert_eq!(run(&ct, T0, &elsewhere, &mut st).0, CtState::Invalid);
    // The error changed nothing in the table.
    assert_eq!(ct.len(), 1);
}

#[test]
fn icmpv6_neighbour_discovery_is_untracked_and_errors_related() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let ns = a6().icmp(135, 0, 0, &[0u8; 16]);
    assert_eq!(run(&ct, T0, &ns, &mut st).0, CtState::Untracked);
    let udp = a6().udp(5000, 53, b"query");
    run(&ct, T0, &udp, &mut st);
    let ptb = a6().reverse().icmp(2, 0, 1280, &udp);
    assert_eq!(run(&ct, T0, &ptb, &mut st), (CtState::Related, Dir::Reply));
    let echo = a6().icmp(128, 0, 0x0007_0001, b"");
    assert_eq!(run(&ct, T0, &echo, &mut st).0, CtState::New);
    assert_eq!(ct.len(), 2);
}

#[test]
fn bad_checksums_are_invalid_and_counted() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let mut d = a().udp(5000, 53, b"q");
    let last = d.len() - 1;
    d[last] ^= 0xff;
    assert_eq!(run(&ct, T0, &d, &mut st).0, CtState::Invalid);
    assert_eq!(st.invalid_by[Invalid::Checksum as usize], 1);
    assert!(ct.is_empty());
}

#[test]
fn generic_and_gre_use_their_timeouts() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    run(&ct, T0, &a().raw(253, b"abc"), &mut st);
    run(&ct, T0, &a().gre(0, 0x0800, None, 0, b"inner"), &mut st);
    run(&ct, T0, &a().reverse().gre(0, 0x0800, None, 0, b"inner"), &mut st);
    // The first reply still gets the unreplied timeout (SEEN_REPLY is set after the tracker ran);
    // the next packet finds a replied connection: stream timeout and ASSURED.
    run(&ct, T0, &a().gre(0, 0x0800, None, 0, b"inner"), &mut st);
    assert_eq!(
        lines(&ct, T0),
        [
            "gre      47 179 src=198.18.0.1 dst=198.19.0.1 srckey=0x0 dstkey=0x0 src=198.19.0.1 dst=198.18.0.1 srckey=0x0 dstkey=0x0 [ASSURED] mark=0 use=1",
            "unknown  253 599 src=198.18.0.1 dst=198.19.0.1 [UNREPLIED] src=198.19.0.1 dst=198.18.0.1 mark=0 use=1",
        ]
    );
    // GRE over IPv6 is tracked too.
    assert_eq!(run(&ct, T0, &a6().gre(0, 0x86dd, None, 0, b"x"), &mut st).0, CtState::New);
}

/// A random packet among a few hosts and ports, of the trackers with the least state.
fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    (0u8..4, 0u8..4, 0u16..6, 0u16..6, 0u8..5, any::<u32>(), any::<u8>()).prop_map(
        |(s, d, sp, dp, kind, seq, flags)| {
            let b = PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, s), Ipv4Addr::new(198, 19, 0, d));
            let b = if seq % 2 == 0 { b } else { b.reverse() };
            match kind {
                0 => b.udp(1000 + sp, 2000 + dp, b"x"),
                1 => b.icmp(if flags % 2 == 0 { 8 } else { 0 }, 0, u32::from(sp) << 16, b""),
                2 => b.tcp(1000 + sp, 2000 + dp, seq, seq / 2, flags, 1000, &opt::mss(1460), b""),
                3 => b.tcp(1000 + sp, 2000 + dp, seq, 0, tcp_flags::SYN, 1000, b"", b""),
                _ => b.raw(253, b"x"),
            }
        },
    )
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let ct = Conntrack::new(64, Config::default());
        let mut st = Stats::default();
        if let Ok(p) = proto::packet::parse_frame(&bytes) {
            let mut t = ct.track(T0, &bytes, &p, &mut st);
            let _ = ct.confirm(&mut t, &mut st);
        }
        if let Ok(p) = parse_ip(&bytes, 0) {
            let mut t = ct.track(T0, &bytes, &p, &mut st);
            let _ = ct.confirm(&mut t, &mut st);
        }
    }

    #[test]
    fn table_stays_within_max_and_counters_agree(
        pkts in proptest::collection::vec((arb_packet(), 0u64..40_000), 1..300),
    ) {
        let max = 16;
        let ct = Conntrack::new(max, Config::default());
        let mut st = Stats::default();
        let mut now = T0;
        let mut removed_by_kill = 0u64;
        for (d, dt_ms) in pkts {
            now = Timestamp(now.0 + dt_ms * 1_000_000);
            let p = parse_ip(&d, 0).unwrap();
            let before = ct.len();
            let mut t = ct.track(now, &d, &p, &mut st);
            let _ = ct.confirm(&mut t, &mut st);
            prop_assert!(ct.len() <= max, "table grew to {} > {}", ct.len(), max);
            // Entries only go away by expiry, early drop or a tracker's kill/repeat.
            if ct.len() < before {
                removed_by_kill += (before - ct.len()) as u64;
            }
            let mut live = 0;
            ct.for_each(Timestamp(0), |_| live += 1);
            prop_assert_eq!(live, ct.len());
        }
        prop_assert!(st.insert >= ct.len() as u64);
        prop_assert!(st.insert - ct.len() as u64 <= st.expired + st.early_drop + st.search_restart + removed_by_kill);
    }
}

#[test]
fn batches_classify_like_packet_by_packet_and_confirm_in_order() {
    // A new UDP flow's first two packets, a reply, an ICMP error and a stray reply, in one batch.
    let q = a().udp(5000, 53, b"q");
    let frames = [
        q.clone(),
        q.clone(),
        a().reverse().udp(53, 5000, b"r"),
        a().reverse().icmp(3, 3, 0, &q),
        a().reverse().icmp(0, 0, 0x0099_0001, b"x"),
    ];
    let expect = [
        (CtState::New, Dir::Original),
        (CtState::New, Dir::Original),
        (CtState::Established, Dir::Reply),
        (CtState::Related, Dir::Reply),
        (CtState::Invalid, Dir::Original),
    ];
    let parsed: Vec<(&[u8], Packet)> = frames.iter().map(|f| (f.as_slice(), parse_ip(f, 0).unwrap())).collect();
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let mut got = Vec::new();
    ct.track_batch(T0, &parsed, &mut st, |i, mut t, st| {
        got.push((i, t.state, t.dir));
        ct.confirm(&mut t, st).unwrap();
    });
    let want: Vec<_> = expect.iter().enumerate().map(|(i, &(s, d))| (i, s, d)).collect();
    assert_eq!(got, want);
    // The second packet found the connection the first one confirmed: one insert, no clash.
    assert_eq!((ct.len(), st.insert, st.clash_resolve), (1, 1, 0));
}

#[test]
fn a_packed_classification_unpacks_to_what_was_packed() {
    let states = [CtState::New, CtState::Established, CtState::Related, CtState::Invalid, CtState::Untracked];
    for state in states {
        for dir in [Dir::Original, Dir::Reply] {
            let t = Class::of(state, dir).tracked(None);
            assert_eq!((t.state, t.dir, t.invalid), (state, dir, None));
        }
    }
    for r in Invalid::ALL {
        let t = Class::invalid(r).tracked(None);
        assert_eq!((t.state, t.invalid), (CtState::Invalid, Some(r)));
    }
}

/// Tracks `frames` packet by packet and as batches (`track_batch`, which looks up runs of
/// packets of one shard under one lock), confirming every new connection in both; asserts the
/// same classification of every packet, the same counters and the same table.
fn assert_batches_agree(frames: &[Vec<u8>], now: Timestamp) {
    let parsed: Vec<(&[u8], Packet)> = frames.iter().map(|f| (f.as_slice(), parse_ip(f, 0).unwrap())).collect();
    let one = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st_one = Stats::default();
    let want: Vec<_> = parsed
        .iter()
        .map(|(d, p)| {
            let mut t = one.track(now, d, p, &mut st_one);
            let seen = (t.state, t.dir, t.invalid);
            one.confirm(&mut t, &mut st_one).unwrap();
            seen
        })
        .collect();
    let batched = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let mut got = Vec::new();
    batched.track_batch(now, &parsed, &mut st, |i, mut t, st| {
        assert_eq!(i, got.len(), "decide is called in packet order");
        got.push((t.state, t.dir, t.invalid));
        batched.confirm(&mut t, st).unwrap();
    });
    assert_eq!(got, want);
    assert_eq!(format!("{st:?}"), format!("{st_one:?}"));
    assert_eq!(lines(&batched, now), lines(&one, now));
}

#[test]
fn a_tcp_flow_in_one_batch_is_tracked_as_packet_by_packet() {
    // Handshake, bursts of data each way (runs of one connection under one lock), an
    // out-of-window segment, a UDP flow's packets in between, FINs, and a SYN re-opening the
    // closed connection (the tracker's Repeat), then an ICMP error quoting the UDP flow.
    let (c, s) = (a(), a().reverse());
    let q = a().udp(5000, 53, b"q");
    let mut f = vec![
        c.tcp(40000, 80, 1, 0, tcp_flags::SYN, 65535, &opt::mss(1460), &[]),
        s.tcp(80, 40000, 500, 2, tcp_flags::SYN | tcp_flags::ACK, 65535, &opt::mss(1460), &[]),
        c.tcp(40000, 80, 2, 501, tcp_flags::ACK, 65535, &[], &[]),
    ];
    for i in 0..20u32 {
        f.push(c.tcp(40000, 80, 2 + i * 100, 501, tcp_flags::ACK, 65535, &[], &[0u8; 100]));
    }
    f.push(q.clone());
    f.push(q.clone());
    for i in 0..10u32 {
        f.push(s.tcp(80, 40000, 501 + i * 10, 2002, tcp_flags::ACK, 65535, &[], &[1u8; 10]));
    }
    f.push(c.tcp(40000, 80, 9_000_000, 601, tcp_flags::ACK, 65535, &[], b"far"));
    f.push(a().reverse().udp(53, 5000, b"r"));
    f.push(c.tcp(40000, 80, 2002, 601, tcp_flags::FIN | tcp_flags::ACK, 65535, &[], &[]));
    f.push(s.tcp(80, 40000, 601, 2003, tcp_flags::FIN | tcp_flags::ACK, 65535, &[], &[]));
    f.push(c.tcp(40000, 80, 2003, 602, tcp_flags::ACK, 65535, &[], &[]));
    f.push(c.tcp(40000, 80, 90_000, 0, tcp_flags::SYN, 65535, &opt::mss(1460), &[]));
    f.push(a().reverse().icmp(3, 3, 0, &q));
    assert!(f.len() > BATCH, "more than one batch");
    assert_batches_agree(&f, T0);
}

proptest! {
    #[test]
    fn batches_agree_with_packet_by_packet(
        pkts in proptest::collection::vec((arb_packet(), 1usize..5), 1..80),
    ) {
        // Each random packet repeated 1–4 times: runs of one connection, as rings deliver them.
        let frames: Vec<Vec<u8>> = pkts.iter().flat_map(|(d, n)| std::iter::repeat_n(d.clone(), *n)).collect();
        assert_batches_agree(&frames, T0);
    }
}

#[test]
fn the_keyed_hash_spreads_tuples_chosen_to_collide() {
    // Tuples that all share one shard and bucket under the public (fixed-seed) hash...
    let unkeyed = Conntrack::with_fixed_hash(100_000, Config::default());
    let keyed = Conntrack::new(100_000, Config::default());
    let tuple = |i: u32| Tuple {
        src: {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&(0xc612_0000u32 | (i >> 14)).to_be_bytes());
            a
        },
        dst: [198, 19, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        sport: 1024 + (i & 0x3fff) as u16,
        dport: 80,
        family: proto::packet::Family::V4,
        proto: 6,
    };
    let target = unkeyed.placement(&tuple(0));
    let chosen: Vec<Tuple> =
        (0..20_000_000u32).map(tuple).filter(|t| unkeyed.placement(t) == target).take(24).collect();
    assert_eq!(chosen.len(), 24, "found tuples colliding under the fixed hash");
    // ...land all over the keyed table.
    let mut places: Vec<_> = chosen.iter().map(|t| keyed.placement(t)).collect();
    places.sort_unstable();
    places.dedup();
    assert!(places.len() >= 20, "keyed placements of colliding tuples: {places:?}");
}

#[test]
fn checksums_the_receiver_verified_are_not_verified_again() {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    for mut d in
        [a().tcp(40000, 80, 1, 0, tcp_flags::SYN, 65535, &[], &[]), a().udp(5000, 53, b"q"), a6().udp(5001, 53, b"q")]
    {
        let last = d.len() - 1;
        d[last] ^= 0xff; // a payload byte (or the last option byte): the checksum no longer matches
        let mut p = parse_ip(&d, 0).unwrap();
        let t = ct.track(T0, &d, &p, &mut st);
        assert_eq!(t.invalid, Some(Invalid::Checksum));
        // Received with TP_STATUS_CSUM_VALID: as the kernel with CHECKSUM_UNNECESSARY, no check.
        p.l4_checksum_verified = true;
        let mut t = ct.track(T0, &d, &p, &mut st);
        assert_eq!(t.state, CtState::New);
        ct.confirm(&mut t, &mut st).unwrap();
    }
    assert_eq!(ct.len(), 3);
}

#[test]
fn events_follow_the_kernels_new_update_destroy() {
    use super::events::EventKind::{self, *};
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    let drain = |ct: &Conntrack| {
        std::iter::from_fn(|| ct.events.pop())
            .map(|e| (e.kind, e.conn.proto.name().unwrap_or("-").to_owned()))
            .collect::<Vec<_>>()
    };
    let (c, s) = (a(), a().reverse());
    // Nobody listens: nothing is recorded.
    run(&ct, T0, &c.tcp(40000, 80, 1, 0, tcp_flags::SYN, 65535, &[], &[]), &mut st);
    assert!(ct.events.pop().is_none());
    ct.flush();
    ct.events.want(New.bit() | Update.bit() | Destroy.bit());
    run(&ct, T0, &c.tcp(40000, 80, 1, 0, tcp_flags::SYN, 65535, &[], &[]), &mut st);
    run(&ct, T0, &s.tcp(80, 40000, 500, 2, tcp_flags::SYN | tcp_flags::ACK, 65535, &[], &[]), &mut st);
    run(&ct, T0, &c.tcp(40000, 80, 2, 501, tcp_flags::ACK, 65535, &[], &[]), &mut st);
    // Data that changes neither status nor state: no event.
    run(&ct, T0, &c.tcp(40000, 80, 2, 501, tcp_flags::ACK | tcp_flags::PSH, 65535, &[], b"GET"), &mut st);
    run(&ct, T0, &c.tcp(40000, 80, 5, 501, tcp_flags::RST, 0, &[], &[]), &mut st);
    let s = |k: EventKind, n: &str| (k, n.to_owned());
    assert_eq!(drain(&ct), [s(New, "SYN_SENT"), s(Update, "SYN_RECV"), s(Update, "ESTABLISHED"), s(Update, "CLOSE")]);
    // A reset connection stays until its CLOSE timeout (10 s); the sweep then destroys it.
    ct.sweep(T0.plus_secs(11), usize::MAX, &mut st);
    assert_eq!(drain(&ct), [s(Destroy, "CLOSE")]);
    // UDP: NEW, then UPDATE at the first reply; the flush destroys.
    let u = a().udp(5000, 53, b"q");
    run(&ct, T0, &u, &mut st);
    run(&ct, T0, &a().reverse().udp(53, 5000, b"a"), &mut st);
    ct.flush();
    assert_eq!(drain(&ct), [s(New, "-"), s(Update, "-"), s(Destroy, "-")]);
    // Only the kinds asked for.
    ct.events.want(Destroy.bit());
    run(&ct, T0, &u, &mut st);
    ct.flush();
    assert_eq!(drain(&ct), [s(Destroy, "-")]);
    assert_eq!(ct.events.lost(), 0);
}

#[test]
fn workers_confirming_at_once_never_take_the_table_past_its_maximum() {
    // Each round: two threads confirm a new connection each into a table one short of full whose
    // entries are all assured: one takes the last place, the other can only drop that one (the
    // only unassured entry) or fail. Never 65 entries.
    for round in 0..200u16 {
        let ct = Conntrack::new(64, Config::default());
        let mut st = Stats::default();
        for i in 0..63u16 {
            let (c, s) = (a().udp(1000 + i, 53, b"q"), a().reverse().udp(53, 1000 + i, b"a"));
            run(&ct, T0, &c, &mut st);
            run(&ct, T0, &s, &mut st);
            run(&ct, T0.plus_secs(3), &c, &mut st); // assured: not early-droppable
        }
        assert_eq!(ct.len(), 63);
        let together = std::sync::Barrier::new(2);
        let results: Vec<bool> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2u16)
                .map(|t| {
                    let (ct, together) = (&ct, &together);
                    sc.spawn(move || {
                        let d = a().udp(30000 + t * 1000 + round, 53, b"q");
                        let p = parse_ip(&d, 0).unwrap();
                        let mut st = Stats::default();
                        let mut tr = ct.track(T0.plus_secs(3), &d, &p, &mut st);
                        together.wait();
                        ct.confirm(&mut tr, &mut st).is_ok()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(ct.len(), 64, "round {round}: {results:?}");
        assert!(results.contains(&true), "round {round}");
    }
}

#[test]
fn an_update_says_whether_the_tracker_state_changed() {
    use super::events::EventKind::*;
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut st = Stats::default();
    ct.events.want(New.bit() | Update.bit() | Destroy.bit());
    // Picked up mid-stream (ESTABLISHED from its first packet): the first reply only sets
    // SEEN_REPLY, as the kernel's IPCT_REPLY without IPCT_PROTOINFO.
    run(&ct, T0, &a().tcp(40000, 80, 100, 500, tcp_flags::ACK, 65535, &[], &[]), &mut st);
    run(&ct, T0, &a().reverse().tcp(80, 40000, 500, 100, tcp_flags::ACK, 65535, &[], &[]), &mut st);
    // A handshake's SYN/ACK changes the state too.
    run(&ct, T0, &a().tcp(40001, 80, 1, 0, tcp_flags::SYN, 65535, &[], &[]), &mut st);
    run(&ct, T0, &a().reverse().tcp(80, 40001, 9, 2, tcp_flags::SYN | tcp_flags::ACK, 65535, &[], &[]), &mut st);
    let seen: Vec<_> = std::iter::from_fn(|| ct.events.pop()).map(|e| (e.kind, e.state_changed)).collect();
    assert_eq!(seen, [(New, true), (Update, false), (New, true), (Update, true)]);
}

#[test]
fn a_connection_slot_is_three_cache_lines_on_a_line_boundary() {
    // What an established packet must bring in: three lines, all prefetched by track_batch.
    assert_eq!(std::mem::size_of::<Slot>(), 192);
    assert_eq!(std::mem::align_of::<Slot>(), 64);
    let ct = Conntrack::new(1000, Config::default());
    assert!(ct.shards.iter().all(|s| s.base % 64 == 0));
}

#[test]
fn reply_tuples_are_matched_without_being_stored() {
    // A packet of either direction finds the one entry, for ports and for ICMP ids and types.
    let ct = Conntrack::new(1000, Config::default());
    let mut st = Stats::default();
    let now = Timestamp::from_secs(1);
    let b = a();
    assert_eq!(run(&ct, now, &b.udp(1000, 53, b"q"), &mut st), (CtState::New, Dir::Original));
    assert_eq!(run(&ct, now, &b.reverse().udp(53, 1000, b"r"), &mut st), (CtState::Established, Dir::Reply));
    // Same ports the other way round on the reply side would be a different flow.
    assert_eq!(run(&ct, now, &b.reverse().udp(1000, 53, b"x"), &mut st).0, CtState::New);
    assert_eq!(run(&ct, now, &b.icmp(8, 0, 77 << 16 | 1, b""), &mut st), (CtState::New, Dir::Original));
    assert_eq!(run(&ct, now, &b.reverse().icmp(0, 0, 77 << 16 | 1, b""), &mut st), (CtState::Established, Dir::Reply));
    let all = lines(&ct, now);
    assert!(all.iter().any(|l| l.contains("type=8 code=0 id=77") && l.contains("type=0 code=0 id=77")), "{all:?}");
}
