//! The kernel as the oracle of the cttimeout control plane, byte for byte: every case sends the same
//! request datagrams to (a) Linux, through a `NETLINK_NETFILTER` socket inside a fresh network
//! namespace, and (b) `engine::control::handle` on a fresh registry and table, and requires the
//! same reply messages in the same order. Needs root and `ip`, `iptables`, `ip6tables`; without
//! them the test fails, by design.
//!
//! Both sides use the same port id (the kernel's socket's), so nothing is normalised. Datagram
//! boundaries are not compared (the kernel's depend on the reader's buffer; `proto::netlink::pack`
//! cuts ours), message order and bytes are.
//!
//! `CTTIMEOUT_BYTES_ONLY=dump,name` runs the cases whose names contain a pattern;
//! `CTTIMEOUT_BYTES_RECORD=1` (with `--nocapture`) prints every exchange as Rust byte arrays, the
//! source of the golden vectors in `engine/src/control.rs`.

use engine::conntrack::{Config, Conntrack, DEFAULT_MAX};
use engine::control::{self, Control, Peer};
use engine::timeouts::{PolicyRef, Registry};
use ferrowall_tests::netns::NetlinkSocket;
use ferrowall_tests::{cmd, testbed};
use proto::cttimeout::{attr, nlmsg_type, MsgType};
use proto::netlink::{flags, MessageBuilder, Messages, Nfgenmsg, NLA_F_NESTED};

/// `REQUEST | ACK`, what nfct sends.
const RA: u16 = flags::REQUEST | flags::ACK;
const INET: u16 = 2;
const INET6: u16 = 10;

/// One thing a case does, on both sides.
enum Step {
    /// A request datagram.
    Send(Vec<u8>),
    /// A request datagram from a sender without `CAP_NET_ADMIN`.
    Unprivileged(Vec<u8>),
    /// A rule naming a policy: `iptables -t raw … -j CT --timeout NAME` in the kernel's namespace,
    /// a `PolicyRef` held by the case on ours.
    Rule { name: &'static str, l4: &'static str, v6: bool },
}

struct Case {
    name: String,
    steps: Vec<Step>,
}

fn case(name: impl Into<String>, steps: Vec<Step>) -> Case {
    Case { name: name.into(), steps }
}

// ---- request builders ----

fn msg(kind: u16, fl: u16, seq: u32, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let mut b = MessageBuilder::new(kind, fl, seq, 0);
    b.nfgenmsg(Nfgenmsg::default());
    f(&mut b);
    b.finish()
}

fn data(b: &mut MessageBuilder, vals: &[(u16, u32)]) {
    let n = b.nest_start(attr::DATA);
    for &(id, v) in vals {
        b.put_be32(id, v);
    }
    b.nest_end(n);
}

fn new_fl(seq: u32, fl: u16, name: &str, l3: u16, l4: u8, vals: &[(u16, u32)]) -> Vec<u8> {
    msg(nlmsg_type(MsgType::New), fl, seq, |b| {
        b.put_strz(attr::NAME, name.as_bytes()).put_be16(attr::L3PROTO, l3).put_u8(attr::L4PROTO, l4);
        data(b, vals);
    })
}

fn new(seq: u32, name: &str, l3: u16, l4: u8, vals: &[(u16, u32)]) -> Vec<u8> {
    new_fl(seq, RA | flags::CREATE, name, l3, l4, vals)
}

fn get(seq: u32, name: &str) -> Vec<u8> {
    msg(nlmsg_type(MsgType::Get), RA, seq, |b| {
        b.put_strz(attr::NAME, name.as_bytes());
    })
}

fn dump(seq: u32) -> Vec<u8> {
    msg(nlmsg_type(MsgType::Get), RA | flags::DUMP, seq, |_| {})
}

fn del(seq: u32, name: &str) -> Vec<u8> {
    msg(nlmsg_type(MsgType::Delete), RA, seq, |b| {
        b.put_strz(attr::NAME, name.as_bytes());
    })
}

fn flush(seq: u32) -> Vec<u8> {
    msg(nlmsg_type(MsgType::Delete), RA, seq, |_| {})
}

fn dset(seq: u32, l4: u8, vals: &[(u16, u32)]) -> Vec<u8> {
    msg(nlmsg_type(MsgType::DefaultSet), RA, seq, |b| {
        b.put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, l4);
        data(b, vals);
    })
}

fn dget(seq: u32, l3: u16, l4: u8) -> Vec<u8> {
    msg(nlmsg_type(MsgType::DefaultGet), RA, seq, |b| {
        b.put_be16(attr::L3PROTO, l3).put_u8(attr::L4PROTO, l4);
    })
}

/// A request of type `t` with raw attributes.
fn raw(t: MsgType, fl: u16, seq: u32, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    msg(nlmsg_type(t), fl, seq, f)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn set_len(mut m: Vec<u8>, len: u32) -> Vec<u8> {
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

use Step::{Send, Unprivileged};

/// Every L4 protocol cttimeout knows, with its number and its number of timeout values.
const PROTOS: [(&str, u8, u16); 8] = [
    ("tcp", 6, 11),
    ("udp", 17, 2),
    ("udplite", 136, 2),
    ("icmp", 1, 1),
    ("icmpv6", 58, 1),
    ("sctp", 132, 8),
    ("gre", 47, 2),
    ("generic", 255, 1),
];

fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // Every protocol, both families: create with some values, get, dump, default-get.
    for (pname, l4, n) in PROTOS {
        for (fname, l3) in [("inet", INET), ("inet6", INET6)] {
            let vals: Vec<(u16, u32)> = (1..=n).filter(|i| i % 2 == 1).map(|i| (i, 1000 + u32::from(i))).collect();
            v.push(case(
                format!("new_get_{pname}_{fname}"),
                vec![Send(new(1, "pol", l3, l4, &vals)), Send(get(2, "pol")), Send(dump(3)), Send(dget(4, l3, l4))],
            ));
        }
    }
    // Every protocol's defaults changed, then read back (UDP and UDP-Lite share theirs).
    for (pname, l4, n) in PROTOS {
        let vals: Vec<(u16, u32)> = (1..=n).map(|i| (i, 7 * u32::from(i))).collect();
        v.push(case(
            format!("default_set_{pname}"),
            vec![
                Send(dset(1, l4, &vals)),
                Send(dget(2, INET, l4)),
                Send(dget(3, INET, 17)),
                Send(dget(4, INET, 136)),
                Send(new(5, "after", INET, l4, &[])),
                Send(get(6, "after")),
            ],
        ));
    }
    v.push(case(
        "default_set_then_replace_reseeds",
        vec![
            Send(new(1, "r", INET, 17, &[(1, 5), (2, 6)])),
            Send(dset(2, 17, &[(2, 77)])),
            Send(new_fl(3, RA | flags::REPLACE, "r", INET, 17, &[(1, 9)])),
            Send(get(4, "r")),
        ],
    ));
    v.push(case(
        "default_errors",
        vec![
            Send(dset(1, 99, &[(1, 5)])),
            Send(dget(2, INET, 99)),
            Send(raw(MsgType::DefaultSet, RA, 3, |b| {
                b.put_u8(attr::L4PROTO, 6);
            })),
            Send(raw(MsgType::DefaultSet, RA, 4, |b| data(b, &[(1, 5)]))),
            Send(raw(MsgType::DefaultGet, RA, 5, |b| {
                b.put_u8(attr::L4PROTO, 6);
            })),
            Send(raw(MsgType::DefaultGet, RA, 6, |b| {
                b.put_be16(attr::L3PROTO, INET);
            })),
            Send(dget(7, 12345, 6)),
            Send(dset(8, 33, &[])),
        ],
    ));
    v.push(case(
        "new_missing_attributes",
        vec![
            Send(raw(MsgType::New, RA, 1, |b| {
                b.put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 2, |b| {
                b.put_strz(attr::NAME, b"x").put_u8(attr::L4PROTO, 6);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 3, |b| {
                b.put_strz(attr::NAME, b"x").put_be16(attr::L3PROTO, INET);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 4, |b| {
                b.put_strz(attr::NAME, b"x").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
            })),
            Send(raw(MsgType::Get, RA, 5, |_| {})),
            Send(dump(6)),
        ],
    ));
    v.push(case(
        "existing_name_flags",
        vec![
            Send(new(1, "t", INET, 6, &[(3, 100)])),
            Send(new(2, "t", INET, 6, &[(3, 200)])),
            Send(new_fl(3, RA | flags::CREATE | flags::EXCL, "t", INET, 6, &[(3, 300)])),
            Send(new_fl(4, RA | flags::EXCL | flags::REPLACE, "t", INET, 6, &[(3, 300)])),
            Send(new_fl(5, RA | flags::REPLACE, "t", INET, 6, &[(3, 400), (1, 1)])),
            Send(get(6, "t")),
            Send(new_fl(7, RA | flags::REPLACE, "t", INET6, 6, &[])),
            Send(new_fl(8, RA | flags::REPLACE, "t", INET, 17, &[])),
            Send(new_fl(9, RA | flags::REPLACE, "t", INET, 99, &[])),
            Send(new_fl(10, RA | flags::REPLACE, "fresh", INET, 17, &[(1, 3)])),
            Send(dump(11)),
        ],
    ));
    v.push(case(
        "unsupported_l4",
        vec![
            Send(new(1, "a", INET, 99, &[])),
            Send(new(2, "b", INET, 0, &[])),
            Send(new(3, "c", INET, 33, &[])),
            Send(new(4, "d", INET, 254, &[])),
            Send(dump(5)),
        ],
    ));
    let n31 = "a".repeat(31);
    let n32 = "b".repeat(32);
    v.push(case(
        "name_lengths",
        vec![
            Send(new(1, &n31, INET, 6, &[])),
            Send(get(2, &n31)),
            Send(new(3, &n32, INET, 6, &[])),
            Send(get(4, &n32)),
            Send(raw(MsgType::New, RA, 5, |b| {
                b.put(attr::NAME, b"nonul").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 6, |b| {
                b.put(attr::NAME, b"ab\0junk").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                data(b, &[]);
            })),
            Send(get(7, "ab")),
            Send(raw(MsgType::New, RA, 8, |b| {
                let mut n = vec![b'c'; 31];
                n.extend_from_slice(&[0, 0]);
                b.put(attr::NAME, &n).put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 9, |b| {
                b.put(attr::NAME, &[]).put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 10, |b| {
                b.put(attr::NAME, b"\0").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 11, |b| {
                b.put(attr::NAME, b"\xff\xfe\xc3\0").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 1);
                data(b, &[]);
            })),
            Send(dump(12)),
        ],
    ));
    v.push(case(
        "integer_lengths",
        vec![
            Send(raw(MsgType::New, RA, 1, |b| {
                b.put_strz(attr::NAME, b"s").put(attr::L3PROTO, &[2]).put_u8(attr::L4PROTO, 6);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 2, |b| {
                b.put_strz(attr::NAME, b"s").put(attr::L3PROTO, &[0, 10, 7, 7]).put(attr::L4PROTO, &[17, 9]);
                data(b, &[]);
            })),
            Send(get(3, "s")),
            Send(raw(MsgType::New, RA, 4, |b| {
                b.put_strz(attr::NAME, b"t").put_be16(attr::L3PROTO, INET).put(attr::L4PROTO, &[]);
                data(b, &[]);
            })),
            Send(raw(MsgType::New, RA, 5, |b| {
                b.put_strz(attr::NAME, b"u").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17);
                let n = b.nest_start(attr::DATA);
                b.put(1, &[0, 0, 1]);
                b.nest_end(n);
            })),
            Send(raw(MsgType::New, RA, 6, |b| {
                b.put_strz(attr::NAME, b"w").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17);
                let n = b.nest_start(attr::DATA);
                b.put(1, &[0, 0, 0, 50, 0xff, 0xff, 0xff, 0xff]).put(2, &[0, 0, 0, 60, 1]);
                b.nest_end(n);
            })),
            Send(get(7, "w")),
            Send(raw(MsgType::New, RA, 8, |b| {
                b.put_strz(attr::NAME, b"x").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17);
                b.put(attr::DATA | NLA_F_NESTED, &[1, 0]);
            })),
            Send(raw(MsgType::New, RA, 9, |b| {
                b.put_strz(attr::NAME, b"y").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17);
                b.put(attr::DATA, &[]);
            })),
            Send(get(10, "y")),
            Send(raw(MsgType::Get, RA, 11, |b| {
                b.put_strz(attr::NAME, b"y").put(attr::L3PROTO, &[1]);
            })),
            Send(raw(MsgType::New, RA, 12, |b| {
                b.put_strz(attr::NAME, b"z").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17);
                let n = b.nest_start(attr::DATA);
                b.put_be32(1, u32::MAX).put_be32(2, 17_179_870);
                b.nest_end(n);
            })),
            Send(get(13, "z")),
        ],
    ));
    v.push(case(
        "data_nested_or_not",
        vec![
            Send(raw(MsgType::New, RA, 1, |b| {
                b.put_strz(attr::NAME, b"flat").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                let mut d = Vec::new();
                for (id, val) in [(1u16, 11u32), (11, 22)] {
                    d.extend_from_slice(&8u16.to_ne_bytes());
                    d.extend_from_slice(&id.to_ne_bytes());
                    d.extend_from_slice(&val.to_be_bytes());
                }
                b.put(attr::DATA, &d);
            })),
            Send(get(2, "flat")),
            Send(raw(MsgType::DefaultSet, RA, 3, |b| {
                b.put_u8(attr::L4PROTO, 1);
                b.put(attr::DATA, &[8, 0, 1, 0, 0, 0, 0, 44]);
            })),
            Send(dget(4, INET, 1)),
        ],
    ));
    v.push(case(
        "data_unknown_and_duplicate_ids",
        vec![
            Send(new(1, "tcp", INET, 6, &[(12, 5), (0, 5), (1, 10), (1, 20), (13, 1)])),
            Send(get(2, "tcp")),
            Send(new(3, "sctp", INET, 132, &[(8, 80), (9, 90), (10, 100), (11, 110)])),
            Send(get(4, "sctp")),
            Send(raw(MsgType::New, RA, 5, |b| {
                b.put_strz(attr::NAME, b"sctp9").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 132);
                let n = b.nest_start(attr::DATA);
                b.put(9, &[1]);
                b.nest_end(n);
            })),
            Send(raw(MsgType::New, RA, 6, |b| {
                b.put_strz(attr::NAME, b"sctp10").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 132);
                let n = b.nest_start(attr::DATA);
                b.put(10, &[1]);
                b.nest_end(n);
            })),
            Send(raw(MsgType::New, RA, 7, |b| {
                b.put_strz(attr::NAME, b"udp3").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17);
                let n = b.nest_start(attr::DATA);
                b.put(3, &[1]);
                b.nest_end(n);
            })),
            Send(raw(MsgType::New, RA, 8, |b| {
                b.put_strz(attr::NAME, b"dup").put_strz(attr::NAME, b"dup2").put_be16(attr::L3PROTO, 1);
                b.put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 17).put(7, &[1]).put(0, &[]);
                b.put_be32(attr::USE, 9);
                data(b, &[(1, 1)]);
            })),
            Send(dump(9)),
        ],
    ));
    v.push(case(
        "error_precedence",
        vec![
            Send(new(1, "e", INET, 6, &[])),
            Send(raw(MsgType::New, flags::REQUEST | flags::EXCL, 2, |b| {
                b.put_strz(attr::NAME, b"e").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                b.put(attr::DATA, &[5, 0, 1, 0, 1, 0, 0, 0]);
            })),
            Send(raw(MsgType::New, flags::REQUEST | flags::REPLACE, 3, |b| {
                b.put_strz(attr::NAME, b"e").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                b.put(attr::DATA, &[5, 0, 1, 0, 1, 0, 0, 0]);
            })),
            Send(raw(MsgType::New, flags::REQUEST, 4, |b| {
                b.put_strz(attr::NAME, b"f").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 99);
                b.put(attr::DATA, &[5, 0, 1, 0, 1, 0, 0, 0]);
            })),
            Send(raw(MsgType::New, flags::REQUEST, 5, |b| {
                b.put(attr::L3PROTO, &[1]).put(attr::NAME, b"nonul");
            })),
            Send(raw(MsgType::Delete, RA, 6, |b| {
                b.put(attr::NAME, b"nonul");
            })),
            Send(get(7, "e")),
        ],
    ));
    v.push(case(
        "unknown_message_types",
        vec![
            Send(raw(MsgType::Other(5), RA, 1, |_| {})),
            Send(raw(MsgType::Other(6), flags::REQUEST, 2, |b| {
                b.put_strz(attr::NAME, b"x");
            })),
            Send(raw(MsgType::Other(255), RA, 3, |_| {})),
        ],
    ));
    v.push(case(
        "unknown_subsystems",
        vec![
            Send(msg(0x0011, RA, 1, |_| {})),
            Send(msg(0x0d00, RA, 2, |_| {})),
            Send(msg(0xff04, RA, 3, |b| {
                b.put_u8(attr::L4PROTO, 6);
            })),
            Send(msg(0x2001, flags::REQUEST, 4, |_| {})),
        ],
    ));
    v.push(case(
        "several_messages_in_one_datagram",
        vec![
            Send(cat(&[
                new(1, "m1", INET, 6, &[(1, 1)]),
                new(2, "m2", INET6, 17, &[]),
                new(3, "m1", INET, 6, &[]),
                get(4, "m2"),
                del(5, "m1"),
                get(6, "m1"),
                dget(7, INET6, 58),
            ])),
            Send(dump(8)),
        ],
    ));
    v.push(case(
        "without_ack",
        vec![
            Send(new_fl(1, flags::REQUEST | flags::CREATE, "q", INET, 47, &[(2, 9)])),
            Send(new_fl(2, flags::REQUEST | flags::CREATE, "q", INET, 47, &[(2, 9)])),
            Send(msg(nlmsg_type(MsgType::Get), flags::REQUEST, 3, |b| {
                b.put_strz(attr::NAME, b"q");
            })),
            Send(msg(nlmsg_type(MsgType::Get), flags::REQUEST | flags::DUMP, 4, |_| {})),
            Send(msg(nlmsg_type(MsgType::DefaultGet), flags::REQUEST, 5, |b| {
                b.put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 47);
            })),
            Send(msg(nlmsg_type(MsgType::Delete), flags::REQUEST, 6, |b| {
                b.put_strz(attr::NAME, b"q");
            })),
            Send(msg(nlmsg_type(MsgType::Delete), flags::REQUEST, 7, |b| {
                b.put_strz(attr::NAME, b"q");
            })),
        ],
    ));
    // 300 policies created without acks, 50 per datagram, then dumped.
    let mut big = Vec::new();
    for chunk in 0..6 {
        let msgs: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                let k = chunk * 50 + i;
                let (_, l4, n) = PROTOS[k % PROTOS.len()];
                let l3 = if k % 3 == 0 { INET6 } else { INET };
                let name = format!("policy-{k:03}-{}", "x".repeat(k % 17));
                new_fl(k as u32, flags::REQUEST | flags::CREATE, &name, l3, l4, &[(n, k as u32)])
            })
            .collect();
        big.push(Send(cat(&msgs)));
    }
    big.push(Send(dump(1000)));
    big.push(Send(msg(nlmsg_type(MsgType::Get), flags::REQUEST | flags::ROOT, 1001, |_| {})));
    big.push(Send(cat(&[dump(1002), dget(1003, INET, 6), dump(1004)])));
    big.push(Send(flush(1005)));
    big.push(Send(dump(1006)));
    v.push(case("dump_300_policies", big));
    v.push(case(
        "dump_then_more_in_one_datagram",
        vec![
            Send(cat(&[dump(1), dump(2), new(3, "d1", INET, 6, &[]), dump(4), get(5, "d1")])),
            Send(cat(&[new(6, "d2", INET, 17, &[]), dump(7), new(8, "d3", INET, 1, &[]), dump(9), dget(10, INET, 1)])),
        ],
    ));
    v.push(case(
        "delete_in_use_and_unused",
        vec![
            Send(new(1, "busy", INET, 6, &[(3, 1234)])),
            Send(new(2, "idle", INET, 6, &[])),
            Send(new(3, "busy6", INET6, 17, &[])),
            Step::Rule { name: "busy", l4: "tcp", v6: false },
            Step::Rule { name: "busy6", l4: "udp", v6: true },
            Send(get(4, "busy")),
            Send(del(5, "busy")),
            Send(del(6, "busy6")),
            Send(del(7, "idle")),
            Send(del(8, "idle")),
            Send(del(9, "never")),
            Send(new(10, "idle2", INET, 6, &[])),
            Send(flush(11)),
            Send(dump(12)),
            Send(new_fl(13, RA | flags::REPLACE, "busy", INET, 6, &[(3, 99)])),
            Send(get(14, "busy")),
        ],
    ));
    v.push(case(
        "control_and_non_requests",
        vec![
            Send(msg(1, RA, 1, |_| {})),
            Send(msg(3, RA, 2, |_| {})),
            Send(msg(15, flags::REQUEST, 3, |_| {})),
            Send(new_fl(4, flags::ACK | flags::CREATE, "nr", INET, 6, &[])),
            Send(new_fl(5, flags::CREATE, "nr", INET, 6, &[])),
            Send(get(6, "nr")),
            Send(set_len(msg(nlmsg_type(MsgType::New), RA, 7, |_| {}), 18)),
            Send(set_len(msg(nlmsg_type(MsgType::New), flags::REQUEST, 8, |_| {}), 16)),
        ],
    ));
    v.push(case(
        "malformed_datagrams",
        vec![
            Send(set_len(get(1, "x"), 200)),
            Send(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            Send(cat(&[get(2, "x"), set_len(get(3, "x"), 3)])),
            Send(cat(&[get(4, "x"), vec![0; 8]])),
            Send(cat(&[get(5, "x"), set_len(get(6, "x"), 1000)])),
            Send(cat(&[set_len(get(7, "x"), 23), get(8, "y")])),
            Send({
                // The last message's length leaves out its padding, and the datagram ends there.
                let m = raw(MsgType::New, RA, 9, |b| {
                    b.put_strz(attr::NAME, b"pad").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                });
                let n = m.len() - 3;
                set_len(m, n as u32)[..n].to_vec()
            }),
            Send({
                let m = raw(MsgType::New, RA, 10, |b| {
                    b.put_strz(attr::NAME, b"pad2").put_be16(attr::L3PROTO, INET).put_u8(attr::L4PROTO, 6);
                    data(b, &[]);
                    b.put_u8(9, 1);
                });
                let n = m.len() - 3;
                set_len(m, n as u32)
            }),
            Send(get(11, "pad2")),
            Send(cat(&[
                get(12, "x"),
                raw(MsgType::Get, RA, 13, |b| {
                    b.put_strz(attr::NAME, b"x");
                    b.append(&[9, 0, 1]);
                }),
            ])),
        ],
    ));
    v.push(case(
        "unprivileged",
        vec![
            Unprivileged(cat(&[new(1, "np", INET, 6, &[]), get(2, "np")])),
            Unprivileged(dump(3)),
            Unprivileged(set_len(dump(4), 100)),
            Send(dump(5)),
        ],
    ));
    v.push(case(
        "echo_and_get_modifiers",
        vec![
            Send(new_fl(1, RA | flags::ECHO | flags::CREATE, "e", INET, 6, &[])),
            Send(msg(nlmsg_type(MsgType::Get), RA | flags::ECHO, 2, |b| {
                b.put_strz(attr::NAME, b"e");
            })),
            Send(msg(nlmsg_type(MsgType::Get), RA | flags::MATCH, 3, |b| {
                b.put_strz(attr::NAME, b"nothere");
            })),
            Send(msg(nlmsg_type(MsgType::Get), RA | flags::ATOMIC, 4, |b| {
                b.put_strz(attr::NAME, b"e");
            })),
            Send(msg(nlmsg_type(MsgType::Delete), RA | flags::DUMP, 5, |_| {})),
            Send(dump(6)),
        ],
    ));
    v.push(case(
        "batches",
        vec![
            Send(cat(&[
                msg(0x10, flags::REQUEST, 1, |b| {
                    b.put_be32(1, 0);
                }),
                new(2, "b", INET, 6, &[]),
            ])),
            Send(msg(0x10, RA, 3, |_| {})),
            Send({
                let mut m = msg(0x10, flags::REQUEST, 4, |_| {});
                m[18..20].copy_from_slice(&300u16.to_be_bytes());
                m
            }),
            Send({
                let mut m = msg(0x10, flags::REQUEST, 5, |b| {
                    b.put(1, &[1]);
                });
                m[18..20].copy_from_slice(&8u16.to_be_bytes());
                m
            }),
            Send({
                let mut m = msg(0x10, flags::REQUEST, 6, |_| {});
                m[18..20].copy_from_slice(&8u16.to_be_bytes());
                m
            }),
            Send(set_len(msg(0x10, flags::REQUEST, 7, |_| {}), 16)[..16].to_vec()),
            Send(msg(0x11, RA, 8, |_| {})),
            Send(dump(9)),
        ],
    ));
    v
}

// ---- running ----

/// What one step produced on each side.
struct Exchange {
    request: Vec<u8>,
    kernel: Vec<Vec<u8>>,
    ours: Vec<Vec<u8>>,
    kernel_datagrams: usize,
}

fn split(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for d in datagrams {
        for m in Messages::new(d) {
            match m {
                Ok(m) => out.push(d[m.offset..m.offset + m.header.len as usize].to_vec()),
                Err(e) => out.push(format!("<malformed kernel datagram: {e}>").into_bytes()),
            }
        }
    }
    out
}

fn run_case(c: &Case, ns_name: &str) -> Result<Vec<Exchange>, String> {
    let mut ns = testbed::Namespaces::default();
    ns.add(ns_name).map_err(|e| e.to_string())?;
    let registry = Registry::new();
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let ctl = Control { registry: &registry, ct: &ct };
    let mut refs: Vec<PolicyRef> = Vec::new();
    let mut out = Vec::new();
    for (i, step) in c.steps.iter().enumerate() {
        match step {
            Step::Send(bytes) | Step::Unprivileged(bytes) => {
                let privileged = matches!(step, Step::Send(_));
                // A fresh socket per datagram: the kernel sizes a dump's first datagram from the
                // largest read the socket has seen, and a new socket has seen none.
                let sock = NetlinkSocket::open(ns_name).map_err(|e| e.to_string())?;
                let sent = if privileged { sock.send(bytes) } else { sock.send_unprivileged(bytes) };
                sent.map_err(|e| format!("step {i}: send: {e}"))?;
                let datagrams = sock.drain(1 << 16).map_err(|e| format!("step {i}: recv: {e}"))?;
                let ours = control::handle(&ctl, Peer { portid: sock.portid(), privileged }, bytes);
                out.push(Exchange {
                    request: bytes.clone(),
                    kernel: split(&datagrams),
                    ours,
                    kernel_datagrams: datagrams.len(),
                });
            }
            Step::Rule { name, l4, v6 } => {
                let tool = if *v6 { "ip6tables" } else { "iptables" };
                let args = ["netns", "exec", ns_name, tool, "-t", "raw", "-A", "PREROUTING", "-p", l4];
                let mut args = args.to_vec();
                args.extend(["-j", "CT", "--timeout", name]);
                cmd::run("ip", &args).map_err(|e| format!("step {i}: {e}"))?;
                refs.push(registry.acquire(name).ok_or_else(|| format!("step {i}: no policy {name} on our side"))?);
            }
        }
    }
    drop(refs);
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n      ")
}

fn rust_bytes(b: &[u8]) -> String {
    let lines: Vec<String> =
        b.chunks(16).map(|c| c.iter().map(|x| format!("0x{x:02x},")).collect::<Vec<_>>().join(" ")).collect();
    format!("&[\n    {}\n]", lines.join("\n    "))
}

#[test]
fn cttimeout_bytes() {
    let uid = cmd::run("id", &["-u"]).expect("running id");
    assert_eq!(uid.trim(), "0", "cttimeout-bytes needs root (it creates network namespaces)");
    for tool in ["iptables", "ip6tables"] {
        cmd::run(tool, &["--version"]).unwrap_or_else(|e| panic!("required tool `{tool}` is not usable: {e}"));
    }
    testbed::remove_stale_namespaces().expect("removing namespaces left by earlier runs");
    let only = std::env::var("CTTIMEOUT_BYTES_ONLY").ok();
    let record = std::env::var_os("CTTIMEOUT_BYTES_RECORD").is_some();
    let all: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| o.split(',').any(|p| c.name.contains(p))))
        .collect();
    let pid = std::process::id();
    let (mut identical, mut steps, mut messages) = (0, 0, 0);
    let mut failures = Vec::new();
    for (n, c) in all.iter().enumerate() {
        // Names start with "fwt-<pid>-" so that remove_stale_namespaces cleans up after a crash.
        let ns_name = format!("fwt-{pid}-ctb{n}");
        let exchanges = match run_case(c, &ns_name) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{}: harness: {e}", c.name));
                continue;
            }
        };
        let mut same = true;
        for (i, x) in exchanges.iter().enumerate() {
            steps += 1;
            messages += x.kernel.len();
            if record {
                println!("// case {} step {i}: request\n{}", c.name, rust_bytes(&x.request));
                for (k, m) in x.kernel.iter().enumerate() {
                    println!("// case {} step {i}: kernel reply {k}\n{}", c.name, rust_bytes(m));
                }
            }
            if x.kernel != x.ours {
                same = false;
                let mut s = format!(
                    "{} step {i}: replies differ ({} kernel messages in {} datagrams, {} ours)\n  request:\n      {}\n",
                    c.name,
                    x.kernel.len(),
                    x.kernel_datagrams,
                    x.ours.len(),
                    hex(&x.request)
                );
                for k in 0..x.kernel.len().max(x.ours.len()) {
                    let (a, b) = (x.kernel.get(k), x.ours.get(k));
                    if a == b {
                        continue;
                    }
                    s.push_str(&format!(
                        "  message {k}:\n    kernel: {}\n    ours:   {}\n",
                        a.map_or("-".into(), |m| hex(m)),
                        b.map_or("-".into(), |m| hex(m))
                    ));
                }
                failures.push(s);
            }
        }
        if same {
            identical += 1;
        }
    }
    for f in &failures {
        println!("{f}");
    }
    println!(
        "cttimeout-bytes: {} cases, {identical} identical ({steps} request datagrams, {messages} kernel reply messages)",
        all.len()
    );
    assert!(failures.is_empty(), "{} difference(s); see above", failures.len());
}
