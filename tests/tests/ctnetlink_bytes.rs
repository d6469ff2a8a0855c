//! The kernel as the oracle of ctnetlink, byte for byte: every case sends the same request
//! datagrams to (a) Linux, through a `NETLINK_NETFILTER` socket inside a fresh network namespace,
//! and (b) `engine::control::handle_at` on a fresh table, and requires the same reply messages,
//! up to the things that cannot be equal: `CTA_ID` (the kernel hashes a pointer), `CTA_TIMEOUT`
//! (time passes differently; compared within 2 s), per-CPU statistics' values (the kernel's CPUs
//! counted other namespaces' packets too) and the order of the connections in a dump (the
//! kernel's is its hash order): connection messages are compared as a multiset, everything else
//! in order. Both tables start empty and are filled by the cases' own requests. Needs root.
//!
//! `CTNETLINK_BYTES_ONLY=dump,filter` runs the cases whose names contain a pattern;
//! `CTNETLINK_BYTES_RECORD=1` writes every exchange of the cases that need no id learnt on the way
//! to `tests/ctnetlink_vectors.txt`, which `recorded_vectors` replays against the handler alone
//! (no namespace, no root): the kernel's answers kept, checked on every run.

use engine::clock::Timestamp;
use engine::conntrack::{Config, Conntrack, Stats};
use engine::control::{self, Control, Peer};
use engine::ctnetlink::Env;
use engine::timeouts::Registry;
use ferrowall_tests::netns::NetlinkSocket;
use ferrowall_tests::{clock, cmd, testbed};
use proto::ctnetlink::{
    self as wire, attr, exp_msg, expect_attr, filter_attr, filter_flag as ff, msg, proto_attr, protoinfo_attr,
    sctp_attr, status as st, tcp_attr, Tuple, AF_INET, AF_INET6,
};
use proto::netlink::{self, flags, Attrs, Header, MessageBuilder, Messages, Nfgenmsg, NLA_F_NESTED};

/// `REQUEST | ACK`, what libnetfilter_conntrack sends for changes and gets.
const RA: u16 = flags::REQUEST | flags::ACK;
const CREATE: u16 = RA | flags::CREATE | flags::EXCL;
const DUMP: u16 = flags::REQUEST | flags::DUMP;

/// One thing a case does, on both sides.
enum Step {
    /// A request datagram.
    Send(Vec<u8>),
    /// A request datagram from a sender without `CAP_NET_ADMIN`.
    Unprivileged(Vec<u8>),
    /// A request built with the `CTA_ID` the side reported last.
    WithId(Box<dyn Fn(u32) -> Vec<u8>>),
}

struct Case {
    name: String,
    steps: Vec<Step>,
}

fn case(name: impl Into<String>, steps: Vec<Step>) -> Case {
    Case { name: name.into(), steps }
}

use Step::{Send, Unprivileged, WithId};

// ---- request builders ----

fn ct(t: u8, fl: u16, seq: u32, family: u8, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let mut b = MessageBuilder::new(wire::nlmsg_type(t), fl, seq, 0);
    b.nfgenmsg(Nfgenmsg { family, version: 0, res_id: 0 });
    f(&mut b);
    b.finish()
}

fn exp(t: u8, fl: u16, seq: u32, family: u8, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let mut b = MessageBuilder::new(wire::exp_nlmsg_type(t), fl, seq, 0);
    b.nfgenmsg(Nfgenmsg { family, version: 0, res_id: 0 });
    f(&mut b);
    b.finish()
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn v6(last: u8) -> [u8; 16] {
    let mut x = [0; 16];
    x[..6].copy_from_slice(&[0x20, 0x01, 0, 2, 0, 1]);
    x[15] = last;
    x
}

fn tuple(family: u8, src: [u8; 16], dst: [u8; 16], proto: u8, l4: [u16; 2]) -> Tuple {
    Tuple { family, src, dst, proto, l4 }
}

fn tcp4(sport: u16, dport: u16) -> Tuple {
    tuple(AF_INET, v4([198, 18, 0, 1]), v4([198, 19, 0, 1]), 6, [sport, dport])
}

fn udp6(sport: u16, dport: u16) -> Tuple {
    tuple(AF_INET6, v6(1), v6(2), 17, [sport, dport])
}

fn icmp4(id: u16) -> Tuple {
    tuple(AF_INET, v4([198, 18, 0, 1]), v4([198, 19, 0, 1]), 1, [id, 8 << 8])
}

fn icmp6(id: u16) -> Tuple {
    tuple(AF_INET6, v6(1), v6(2), 58, [id, 128 << 8])
}

/// The reply tuple of `t` as the kernel inverts it.
fn inverse(t: &Tuple) -> Tuple {
    let l4 = match t.proto {
        1 | 58 => {
            let ty = (t.l4[1] >> 8) as u8;
            let inv = match ty {
                8 => 0,
                0 => 8,
                128 => 129,
                129 => 128,
                13 => 14,
                x => x,
            };
            [t.l4[0], u16::from(inv) << 8 | (t.l4[1] & 0xff)]
        }
        _ => [t.l4[1], t.l4[0]],
    };
    Tuple { src: t.dst, dst: t.src, l4, ..*t }
}

/// `NEW` creating `t` (reply: its inverse) with `extra` attributes after the tuples.
fn create(seq: u32, t: Tuple, extra: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    ct(msg::NEW, CREATE, seq, t.family, |b| {
        wire::put_tuple(b, attr::TUPLE_ORIG, &t);
        wire::put_tuple(b, attr::TUPLE_REPLY, &inverse(&t));
        extra(b);
    })
}

/// `NEW` creating `t` with timeout 100 s, status ASSURED|CONFIRMED as conntrack -I sends it, and
/// `mark`.
fn create_std(seq: u32, t: Tuple, mark: u32) -> Vec<u8> {
    create(seq, t, |b| {
        b.put_be32(attr::TIMEOUT, 100).put_be32(attr::MARK, mark).put_be32(attr::STATUS, st::CONFIRMED | st::ASSURED);
    })
}

fn tcp_info(b: &mut MessageBuilder, state: u8, flags: Option<(u8, u8)>) {
    let pi = b.nest_start(attr::PROTOINFO);
    let n = b.nest_start(protoinfo_attr::TCP);
    b.put_u8(tcp_attr::STATE, state);
    if let Some((f, m)) = flags {
        b.put(tcp_attr::FLAGS_ORIGINAL, &[f, m]).put(tcp_attr::FLAGS_REPLY, &[f, m]);
    }
    b.nest_end(n);
    b.nest_end(pi);
}

fn get(seq: u32, which: u16, t: Tuple) -> Vec<u8> {
    ct(msg::GET, RA, seq, t.family, |b| wire::put_tuple(b, which, &t))
}

fn dump(seq: u32, family: u8, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    ct(msg::GET, DUMP, seq, family, f)
}

fn del(seq: u32, which: u16, t: Tuple) -> Vec<u8> {
    ct(msg::DELETE, RA, seq, t.family, |b| wire::put_tuple(b, which, &t))
}

/// A `CTA_FILTER` nest with these flags (native-endian u32s).
fn filter(b: &mut MessageBuilder, orig: Option<u32>, reply: Option<u32>) {
    let n = b.nest_start(attr::FILTER);
    if let Some(o) = orig {
        b.put(filter_attr::ORIG_FLAGS, &o.to_ne_bytes());
    }
    if let Some(r) = reply {
        b.put(filter_attr::REPLY_FLAGS, &r.to_ne_bytes());
    }
    b.nest_end(n);
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A table every dump case starts from: TCP (two), UDP over IPv6, ICMP, ICMPv6, SCTP, GRE and a
/// protocol without a tracker, with marks 1, 2 and 3.
fn populate() -> Vec<Step> {
    let mut v = vec![
        Send(create_std(1, tcp4(1000, 80), 1)),
        Send(create(2, tcp4(1001, 443), |b| {
            b.put_be32(attr::TIMEOUT, 60).put_be32(attr::MARK, 2).put_be32(attr::STATUS, st::CONFIRMED);
            tcp_info(b, 1, Some((0x0a, 0x0a)));
        })),
        Send(create_std(3, udp6(5000, 53), 3)),
        Send(create(4, icmp4(77), |b| {
            b.put_be32(attr::TIMEOUT, 30).put_be32(attr::STATUS, st::CONFIRMED | st::SEEN_REPLY);
        })),
        Send(create(5, icmp6(78), |b| {
            b.put_be32(attr::TIMEOUT, 30).put_be32(attr::MARK, 1);
        })),
        Send(create(6, tuple(AF_INET, v4([198, 18, 0, 3]), v4([198, 19, 0, 3]), 132, [3868, 3868]), |b| {
            b.put_be32(attr::TIMEOUT, 200).put_be32(attr::STATUS, st::CONFIRMED | st::ASSURED | st::SEEN_REPLY);
            let pi = b.nest_start(attr::PROTOINFO);
            let n = b.nest_start(protoinfo_attr::SCTP);
            b.put_u8(sctp_attr::STATE, 4)
                .put_be32(sctp_attr::VTAG_ORIGINAL, 0x1234)
                .put_be32(sctp_attr::VTAG_REPLY, 0x5678);
            b.nest_end(n);
            b.nest_end(pi);
        })),
        Send(create(7, tuple(AF_INET, v4([198, 18, 0, 4]), v4([198, 19, 0, 4]), 47, [0, 9]), |b| {
            b.put_be32(attr::TIMEOUT, 180).put_be32(attr::MARK, 2);
        })),
        Send(create(8, tuple(AF_INET6, v6(5), v6(6), 253, [0, 0]), |b| {
            b.put_be32(attr::TIMEOUT, 600).put_be32(attr::MARK, 3);
        })),
    ];
    v.push(Send(create(9, tcp4(1002, 22), |b| {
        b.put_be32(attr::TIMEOUT, 120).put_be32(attr::STATUS, st::CONFIRMED | st::SEEN_REPLY | st::ASSURED);
        tcp_info(b, 3, Some((0x23, 0xff)));
    })));
    v
}

fn with(mut first: Vec<Step>, then: Vec<Step>) -> Vec<Step> {
    first.extend(then);
    first
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // Create and read back, every tracker kind, both families.
    v.push(case(
        "create_get_every_kind",
        with(
            populate(),
            vec![
                Send(get(20, attr::TUPLE_ORIG, tcp4(1000, 80))),
                Send(get(21, attr::TUPLE_REPLY, inverse(&tcp4(1001, 443)))),
                Send(get(22, attr::TUPLE_ORIG, udp6(5000, 53))),
                Send(get(23, attr::TUPLE_REPLY, inverse(&icmp4(77)))),
                Send(get(24, attr::TUPLE_ORIG, icmp6(78))),
                Send(get(
                    25,
                    attr::TUPLE_ORIG,
                    tuple(AF_INET, v4([198, 18, 0, 3]), v4([198, 19, 0, 3]), 132, [3868, 3868]),
                )),
                Send(get(26, attr::TUPLE_ORIG, tuple(AF_INET, v4([198, 18, 0, 4]), v4([198, 19, 0, 4]), 47, [0, 9]))),
                Send(get(27, attr::TUPLE_ORIG, tuple(AF_INET6, v6(5), v6(6), 253, [0, 0]))),
                Send(dump(28, 0, |_| {})),
            ],
        ),
    ));
    v.push(case(
        "create_errors",
        with(
            populate(),
            vec![
                Send(create_std(30, tcp4(1000, 80), 1)),
                // The reply tuple of another connection: EEXIST at insertion.
                Send(ct(msg::NEW, CREATE, 31, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &inverse(&tcp4(1002, 22)));
                    wire::put_tuple(b, attr::TUPLE_REPLY, &tcp4(1002, 22));
                    b.put_be32(attr::TIMEOUT, 5);
                })),
                Send(ct(msg::NEW, RA, 32, AF_INET, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(9, 9)))),
                Send(ct(msg::NEW, CREATE, 33, AF_INET, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(9, 9)))),
                Send(ct(msg::NEW, CREATE, 34, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(9, 9));
                    wire::put_tuple(b, attr::TUPLE_REPLY, &Tuple { proto: 17, ..inverse(&tcp4(9, 9)) });
                    b.put_be32(attr::TIMEOUT, 5);
                })),
                Send(create(35, tcp4(9, 9), |_| {})),
                Send(create(36, tcp4(9, 10), |b| {
                    b.put_be32(attr::TIMEOUT, 5);
                    tcp_info(b, 10, None);
                })),
                Send(create(37, tcp4(9, 11), |b| {
                    b.put_be32(attr::TIMEOUT, 5).put_be32(attr::STATUS, 0);
                })),
                Send(create(38, tcp4(9, 12), |b| {
                    b.put_be32(attr::TIMEOUT, 5);
                    let h = b.nest_start(attr::HELP);
                    b.put_strz(1, b"nosuchhelper");
                    b.nest_end(h);
                })),
                Send(create(39, tcp4(9, 13), |b| {
                    b.put_be32(attr::TIMEOUT, 5);
                    let pi = b.nest_start(attr::PROTOINFO);
                    let n = b.nest_start(protoinfo_attr::SCTP);
                    b.put_u8(sctp_attr::STATE, 3);
                    b.nest_end(n);
                    b.nest_end(pi);
                })),
                Send(create(40, tuple(AF_INET, v4([1, 1, 1, 1]), v4([2, 2, 2, 2]), 132, [1, 2]), |b| {
                    b.put_be32(attr::TIMEOUT, 5);
                    let pi = b.nest_start(attr::PROTOINFO);
                    let n = b.nest_start(protoinfo_attr::SCTP);
                    b.put_u8(sctp_attr::STATE, 3).put_be32(sctp_attr::VTAG_ORIGINAL, 1);
                    b.nest_end(n);
                    b.nest_end(pi);
                })),
                Send(create(41, tcp4(9, 14), |b| {
                    b.put(attr::TIMEOUT, &[0, 5]);
                })),
                Send(create(42, tcp4(9, 15), |b| {
                    b.put_be32(attr::TIMEOUT, 5).put(attr::TIMESTAMP_EVENT, &[0; 8]);
                })),
                // ICMP destination unreachable has no answer type: not a tuple.
                Send(create(43, tuple(AF_INET, v4([1, 1, 1, 1]), v4([2, 2, 2, 2]), 1, [1, 3 << 8]), |b| {
                    b.put_be32(attr::TIMEOUT, 5);
                })),
                Send(ct(msg::NEW, CREATE, 44, 0, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(9, 9)))),
                Send(create(45, tcp4(9, 16), |b| {
                    b.put_be32(attr::TIMEOUT, 5);
                    wire::put_tuple(b, attr::TUPLE_MASTER, &tcp4(7, 7));
                })),
                Send(dump(46, 0, |_| {})),
            ],
        ),
    ));
    // Protocol state values at and beyond the trackers' ranges.
    let sctp_state = |seq: u32, port: u16, state: u8| {
        create(seq, tuple(AF_INET, v4([1, 1, 1, 1]), v4([2, 2, 2, 2]), 132, [port, 2]), move |b| {
            b.put_be32(attr::TIMEOUT, 5);
            let pi = b.nest_start(attr::PROTOINFO);
            let n = b.nest_start(protoinfo_attr::SCTP);
            b.put_u8(sctp_attr::STATE, state).put_be32(sctp_attr::VTAG_ORIGINAL, 1).put_be32(sctp_attr::VTAG_REPLY, 2);
            b.nest_end(n);
            b.nest_end(pi);
        })
    };
    let tcp_wscale = |seq: u32, port: u16, ws: u8| {
        create(seq, tcp4(port, 1), move |b| {
            b.put_be32(attr::TIMEOUT, 5);
            let pi = b.nest_start(attr::PROTOINFO);
            let n = b.nest_start(protoinfo_attr::TCP);
            b.put_u8(tcp_attr::STATE, 9).put_u8(tcp_attr::WSCALE_ORIGINAL, ws).put_u8(tcp_attr::WSCALE_REPLY, ws);
            b.put(tcp_attr::FLAGS_ORIGINAL, &[1, 1]).put(tcp_attr::FLAGS_REPLY, &[1, 1]);
            b.nest_end(n);
            b.nest_end(pi);
        })
    };
    v.push(case(
        "protoinfo_ranges",
        vec![
            Send(sctp_state(1, 1, 8)),
            Send(sctp_state(2, 2, 9)),
            Send(sctp_state(3, 3, 10)),
            Send(sctp_state(4, 4, 200)),
            Send(tcp_wscale(5, 5, 14)),
            Send(tcp_wscale(6, 6, 15)),
            Send(tcp_wscale(7, 7, 255)),
            Send(dump(8, 0, |_| {})),
        ],
    ));
    v.push(case(
        "create_variants",
        vec![
            // No status: CONFIRMED alone; no protoinfo: TCP state NONE; a mark with a mask.
            Send(create(1, tcp4(2000, 80), |b| {
                b.put_be32(attr::TIMEOUT, 50).put_be32(attr::MARK, 0x55).put_be32(attr::MARK_MASK, 0xf0);
            })),
            // A huge timeout is capped at INT_MAX jiffies.
            Send(create(2, tcp4(2001, 80), |b| {
                b.put_be32(attr::TIMEOUT, u32::MAX);
            })),
            // FIXED_TIMEOUT and HELPER are settable, the NAT bits are ignored.
            Send(create(3, udp6(7, 7), |b| {
                b.put_be32(attr::TIMEOUT, 77).put_be32(
                    attr::STATUS,
                    st::CONFIRMED | st::FIXED_TIMEOUT | st::SRC_NAT | st::SEEN_REPLY | (1 << 20),
                );
            })),
            // TCP window scales without WINDOW_SCALE on both sides are ignored; with it, kept.
            Send(create(4, tcp4(2002, 80), |b| {
                b.put_be32(attr::TIMEOUT, 50);
                let pi = b.nest_start(attr::PROTOINFO);
                let n = b.nest_start(protoinfo_attr::TCP);
                b.put_u8(tcp_attr::STATE, 3)
                    .put_u8(tcp_attr::WSCALE_ORIGINAL, 7)
                    .put_u8(tcp_attr::WSCALE_REPLY, 8)
                    .put(tcp_attr::FLAGS_ORIGINAL, &[0x01, 0x01])
                    .put(tcp_attr::FLAGS_REPLY, &[0x03, 0x03]);
                b.nest_end(n);
                b.nest_end(pi);
            })),
            Send(create(5, tcp4(2003, 80), |b| {
                b.put_be32(attr::TIMEOUT, 50);
                let pi = b.nest_start(attr::PROTOINFO);
                let n = b.nest_start(protoinfo_attr::TCP);
                b.put_u8(tcp_attr::WSCALE_ORIGINAL, 7).put_u8(tcp_attr::WSCALE_REPLY, 8);
                b.put(tcp_attr::FLAGS_ORIGINAL, &[0x01, 0x01]);
                b.nest_end(n);
                b.nest_end(pi);
            })),
            // Protocol info of another tracker is ignored.
            Send(create(6, udp6(8, 8), |b| {
                b.put_be32(attr::TIMEOUT, 50);
                tcp_info(b, 3, None);
            })),
            Send(dump(7, 0, |_| {})),
            Send(get(8, attr::TUPLE_ORIG, tcp4(2000, 80))),
        ],
    ));
    v.push(case(
        "update",
        with(
            populate(),
            vec![
                Send(ct(msg::NEW, RA, 20, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1000, 80));
                    b.put_be32(attr::MARK, 0x0f00).put_be32(attr::MARK_MASK, 0xff00);
                })),
                Send(ct(msg::NEW, RA, 21, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_REPLY, &inverse(&tcp4(1001, 443)));
                    b.put_be32(attr::TIMEOUT, 1000).put_be32(attr::STATUS, st::CONFIRMED | st::SEEN_REPLY);
                    tcp_info(b, 3, Some((0x20, 0x20)));
                })),
                // Clearing ASSURED: EBUSY, after the timeout was changed.
                Send(ct(msg::NEW, RA, 22, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1000, 80));
                    b.put_be32(attr::TIMEOUT, 2000).put_be32(attr::STATUS, st::CONFIRMED);
                })),
                Send(ct(msg::NEW, RA, 23, AF_INET6, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &udp6(5000, 53));
                    b.put_be32(attr::STATUS, st::CONFIRMED | st::ASSURED | st::FIXED_TIMEOUT);
                })),
                Send(ct(msg::NEW, RA, 24, AF_INET6, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &udp6(5000, 53));
                    b.put_be32(attr::TIMEOUT, 5);
                })),
                Send(ct(msg::NEW, flags::REQUEST | flags::ACK | flags::EXCL, 25, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1000, 80));
                    b.put_be32(attr::MARK, 1);
                })),
                Send(ct(msg::NEW, RA, 26, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1002, 22));
                    let h = b.nest_start(attr::HELP);
                    b.put_strz(1, b"");
                    b.nest_end(h);
                    b.put_be32(attr::MARK, 77);
                })),
                Send(ct(msg::NEW, RA, 27, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1002, 22));
                    b.put(attr::LABELS, &[1, 0, 0, 0]);
                })),
                Send(ct(msg::NEW, RA, 28, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1002, 22));
                    b.put(attr::LABELS, &[1, 0, 0]);
                })),
                Send(ct(msg::NEW, RA, 29, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1002, 22));
                    tcp_info(b, 12, None);
                })),
                Send(ct(msg::NEW, RA, 30, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1002, 22));
                    wire::put_tuple(b, attr::TUPLE_MASTER, &tcp4(1000, 80));
                })),
                Send(dump(31, 0, |_| {})),
            ],
        ),
    ));
    v.push(case(
        "delete",
        with(
            populate(),
            vec![
                Send(del(20, attr::TUPLE_ORIG, tcp4(1000, 80))),
                Send(del(21, attr::TUPLE_ORIG, tcp4(1000, 80))),
                Send(del(22, attr::TUPLE_REPLY, inverse(&udp6(5000, 53)))),
                Send(get(23, attr::TUPLE_ORIG, icmp6(78))),
                WithId(Box::new(|id| {
                    ct(msg::DELETE, RA, 24, AF_INET6, |b| {
                        wire::put_tuple(b, attr::TUPLE_ORIG, &icmp6(78));
                        b.put_be32(attr::ID, id ^ 1);
                    })
                })),
                WithId(Box::new(|id| {
                    ct(msg::DELETE, RA, 25, AF_INET6, |b| {
                        wire::put_tuple(b, attr::TUPLE_ORIG, &icmp6(78));
                        b.put_be32(attr::ID, id);
                    })
                })),
                Send(ct(msg::DELETE, RA, 26, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1001, 443));
                    b.put_be16(attr::ZONE, 5);
                })),
                Send(ct(msg::DELETE, RA, 27, 0, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1001, 443)))),
                Send(dump(28, 0, |_| {})),
            ],
        ),
    ));
    // Flushes: everything, by mark, by family (which version 0 ignores), filtered by tuple.
    for (name, req) in [
        ("flush_all", ct(msg::DELETE, RA, 20, 0, |_| {})),
        (
            "flush_mark",
            ct(msg::DELETE, RA, 20, 0, |b| {
                b.put_be32(attr::MARK, 1);
            }),
        ),
        (
            "flush_mark_mask",
            ct(msg::DELETE, RA, 20, AF_INET, |b| {
                b.put_be32(attr::MARK, 2).put_be32(attr::MARK_MASK, 2);
            }),
        ),
        ("flush_family_v0", ct(msg::DELETE, RA, 20, AF_INET6, |_| {})),
        ("flush_family_v1", {
            let mut m = ct(msg::DELETE, RA, 20, AF_INET6, |_| {});
            m[17] = 1;
            m
        }),
        (
            "flush_status",
            ct(msg::DELETE, RA, 20, 0, |b| {
                b.put_be32(attr::STATUS, st::ASSURED);
            }),
        ),
        (
            "flush_filter_proto",
            ct(msg::DELETE, RA, 20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                filter(b, Some(ff::PROTO_NUM), None);
            }),
        ),
        (
            "flush_mark_mask_only",
            ct(msg::DELETE, RA, 20, 0, |b| {
                b.put_be32(attr::MARK_MASK, 1);
            }),
        ),
    ] {
        v.push(case(
            name,
            with(populate(), vec![Send(req), Send(dump(21, 0, |_| {})), Send(ct(msg::GET_STATS, RA, 22, 0, |_| {}))]),
        ));
    }
    // Dump filters, each on the full table.
    let filters: Vec<(&str, Vec<u8>)> = vec![
        ("dump_family_v4", dump(20, AF_INET, |_| {})),
        ("dump_family_v6", dump(20, AF_INET6, |_| {})),
        (
            "dump_mark",
            dump(20, 0, |b| {
                b.put_be32(attr::MARK, 1);
            }),
        ),
        (
            "dump_mark_mask",
            dump(20, 0, |b| {
                b.put_be32(attr::MARK, 2).put_be32(attr::MARK_MASK, 2);
            }),
        ),
        (
            "dump_mark_mask_only",
            dump(20, 0, |b| {
                b.put_be32(attr::MARK_MASK, 2);
            }),
        ),
        (
            "dump_status",
            dump(20, 0, |b| {
                b.put_be32(attr::STATUS, st::ASSURED);
            }),
        ),
        (
            "dump_status_mask",
            dump(20, 0, |b| {
                b.put_be32(attr::STATUS, 0).put_be32(attr::STATUS_MASK, st::SEEN_REPLY);
            }),
        ),
        (
            "dump_status_zero",
            dump(20, 0, |b| {
                b.put_be32(attr::STATUS, 0);
            }),
        ),
        (
            "dump_status_mask_only",
            dump(20, AF_INET, |b| {
                b.put_be32(attr::STATUS_MASK, 4);
            }),
        ),
        (
            "dump_zone0",
            dump(20, 0, |b| {
                b.put_be16(attr::ZONE, 0);
            }),
        ),
        (
            "dump_zone1",
            dump(20, 0, |b| {
                b.put_be16(attr::ZONE, 1);
            }),
        ),
        (
            "dump_filter_orig_src",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                filter(b, Some(ff::IP_SRC), None);
            }),
        ),
        (
            "dump_filter_reply_dst_port",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_REPLY, &inverse(&tcp4(1000, 443)));
                filter(b, None, Some(ff::PROTO_NUM | ff::PROTO_SRC_PORT));
            }),
        ),
        (
            "dump_filter_v6_src",
            dump(20, AF_INET6, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &udp6(1, 1));
                filter(b, Some(ff::IP_SRC), None);
            }),
        ),
        (
            "dump_filter_icmp",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &icmp4(77));
                filter(b, Some(ff::PROTO_NUM | ff::PROTO_ICMP_TYPE | ff::PROTO_ICMP_ID), None);
            }),
        ),
        (
            "dump_filter_sctp_ports_ignored",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tuple(AF_INET, v4([0; 4]), v4([0; 4]), 132, [1, 1]));
                filter(b, Some(ff::PROTO_NUM | ff::PROTO_DST_PORT), None);
            }),
        ),
        (
            "dump_filter_unspec",
            dump(20, 0, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                filter(b, Some(ff::PROTO_NUM), None);
            }),
        ),
        ("dump_filter_no_tuple", dump(20, AF_INET, |b| filter(b, Some(ff::IP_SRC), None))),
        (
            "dump_filter_bad_flags",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                filter(b, Some(1 << 12), None);
            }),
        ),
        (
            "dump_filter_bad_reply_flags",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_REPLY, &tcp4(0, 0));
                filter(b, None, Some(1 << 31));
            }),
        ),
        (
            "dump_filter_short_flags",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                let n = b.nest_start(attr::FILTER);
                b.put(filter_attr::ORIG_FLAGS, &[1, 0]);
                b.nest_end(n);
            }),
        ),
        (
            "dump_filter_unknown_attr",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                let n = b.nest_start(attr::FILTER);
                b.put(filter_attr::ORIG_FLAGS, &1u32.to_ne_bytes()).put(3, &1u32.to_ne_bytes());
                b.nest_end(n);
            }),
        ),
        (
            "dump_filter_ports_no_proto",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                filter(b, Some(ff::PROTO_DST_PORT), None);
            }),
        ),
        (
            "dump_filter_not_nested",
            dump(20, AF_INET, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(0, 0));
                b.put(attr::FILTER, &[8, 0, 1, 0, 8, 0, 0, 0]);
            }),
        ),
        ("dump_filter_empty", dump(20, AF_INET, |b| filter(b, None, None))),
        (
            "dump_filter_zone",
            dump(20, AF_INET, |b| {
                let o = b.nest_start(attr::TUPLE_ORIG);
                b.put_be16(3, 0);
                b.nest_end(o);
                filter(b, Some(ff::TUPLE_ZONE), None);
            }),
        ),
        ("dump_ctrzero", ct(msg::GET_CTRZERO, DUMP, 20, 0, |_| {})),
        ("dump_root_only", ct(msg::GET, flags::REQUEST | flags::ROOT, 20, 0, |_| {})),
    ];
    for (name, req) in filters {
        v.push(case(name, with(populate(), vec![Send(req)])));
    }
    // A table larger than one datagram, dumped whole, then by mark; counted.
    let mut big = Vec::new();
    for i in 0..300u16 {
        big.push(Send(create_std(u32::from(i) + 1, tcp4(10_000 + i, 80), u32::from(i % 4))));
    }
    big.push(Send(dump(400, 0, |_| {})));
    big.push(Send(dump(401, AF_INET, |b| {
        b.put_be32(attr::MARK, 3);
    })));
    big.push(Send(ct(msg::GET_STATS, flags::REQUEST, 402, 0, |_| {})));
    v.push(case("big_table", big));
    // Several messages in one datagram, and a second dump while the first runs.
    v.push(case(
        "batched",
        with(
            populate(),
            vec![
                Send(cat(&[dump(20, 0, |_| {}), get(21, attr::TUPLE_ORIG, tcp4(1000, 80)), dump(22, 0, |_| {})])),
                Send(cat(&[
                    ct(msg::GET_STATS, RA, 23, 0, |_| {}),
                    ct(msg::GET_DYING, DUMP, 24, 0, |_| {}),
                    ct(msg::GET_STATS_CPU, DUMP, 25, 0, |_| {}),
                ])),
            ],
        ),
    ));
    v.push(case(
        "stats_and_lists",
        with(
            populate(),
            vec![
                Send(ct(msg::GET_STATS, flags::REQUEST, 20, 0, |_| {})),
                Send(ct(msg::GET_STATS, DUMP, 21, 0, |_| {})),
                Send(ct(msg::GET_STATS, RA, 22, AF_INET6, |b| {
                    b.put_be32(attr::MARK, 1);
                })),
                Send(ct(msg::GET_STATS_CPU, DUMP, 23, 0, |_| {})),
                Send(ct(msg::GET_STATS_CPU, RA, 24, 0, |_| {})),
                Send(ct(msg::GET_DYING, DUMP, 25, 0, |_| {})),
                Send(ct(msg::GET_DYING, RA, 26, 0, |_| {})),
                Send(ct(msg::GET_UNCONFIRMED, DUMP, 27, 0, |_| {})),
                Send(ct(msg::GET_UNCONFIRMED, RA, 28, 0, |_| {})),
                Send(ct(msg::COUNT, RA, 29, 0, |_| {})),
                Send(ct(msg::GET_CTRZERO, RA, 30, AF_INET, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1000, 80)))),
            ],
        ),
    ));
    v.push(case(
        "get_errors",
        with(
            populate(),
            vec![
                Send(ct(msg::GET, RA, 20, AF_INET, |_| {})),
                Send(get(21, attr::TUPLE_ORIG, tcp4(4, 4))),
                Send(ct(msg::GET, RA, 22, 0, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1000, 80)))),
                Send(ct(msg::GET, RA, 23, AF_INET6, |b| wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1000, 80)))),
                Send(ct(msg::GET, RA, 24, AF_INET, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &tcp4(1000, 80));
                    b.put_be16(attr::ZONE, 1);
                })),
                Send(ct(msg::GET, RA, 25, AF_INET, |b| {
                    let o = b.nest_start(attr::TUPLE_ORIG);
                    let ip = b.nest_start(1);
                    b.put(1, &[198, 18, 0, 1]);
                    b.nest_end(ip);
                    b.nest_end(o);
                })),
                Send(ct(msg::GET, RA, 26, AF_INET, |b| {
                    let o = b.nest_start(attr::TUPLE_ORIG);
                    let ip = b.nest_start(1);
                    b.put(1, &[198, 18, 0, 1]).put(2, &[198, 19, 0, 1]);
                    b.nest_end(ip);
                    let p = b.nest_start(2);
                    b.put_u8(proto_attr::NUM, 6).put_be16(proto_attr::SRC_PORT, 1000);
                    b.nest_end(p);
                    b.nest_end(o);
                })),
                Send(ct(msg::GET, RA, 27, AF_INET, |b| {
                    let o = b.nest_start(attr::TUPLE_ORIG);
                    let ip = b.nest_start(1);
                    b.put(1, &[198, 18]).put(2, &[198, 19, 0, 1]);
                    b.nest_end(ip);
                    b.nest_end(o);
                })),
                Send(ct(msg::GET, RA, 28, AF_INET, |b| {
                    b.put(attr::TUPLE_ORIG, &[1, 2]);
                })),
                // A tuple with a zone of its own.
                Send(ct(msg::GET, RA, 29, AF_INET, |b| {
                    let mut m = MessageBuilder::new(0, 0, 0, 0);
                    wire::put_tuple(&mut m, attr::TUPLE_ORIG, &tcp4(1000, 80));
                    let t = m.finish();
                    let mut inner = t[20..].to_vec();
                    inner.extend_from_slice(&[6, 0, 3, 0, 0, 0, 0, 0]);
                    let len = (inner.len() + 4) as u16;
                    let mut a = len.to_ne_bytes().to_vec();
                    a.extend_from_slice(&(attr::TUPLE_ORIG | NLA_F_NESTED).to_ne_bytes());
                    a.extend(inner);
                    b.append(&a);
                })),
            ],
        ),
    ));
    v.push(case(
        "expectations",
        with(
            populate(),
            vec![
                Send(exp(exp_msg::GET, DUMP, 20, AF_INET, |_| {})),
                Send(exp(exp_msg::GET, DUMP, 21, AF_INET, |b| {
                    wire::put_tuple(b, expect_attr::MASTER, &tcp4(1000, 80))
                })),
                Send(exp(exp_msg::GET, DUMP, 22, AF_INET, |b| wire::put_tuple(b, expect_attr::MASTER, &tcp4(5, 5)))),
                Send(exp(exp_msg::GET, RA, 23, AF_INET, |b| wire::put_tuple(b, expect_attr::TUPLE, &tcp4(1000, 80)))),
                Send(exp(exp_msg::GET, RA, 24, AF_INET, |_| {})),
                Send(exp(exp_msg::DELETE, RA, 25, AF_INET, |_| {})),
                Send(exp(exp_msg::DELETE, RA, 26, AF_INET, |b| {
                    b.put_strz(expect_attr::HELP_NAME, b"ftp");
                })),
                Send(exp(exp_msg::DELETE, RA, 27, AF_INET, |b| wire::put_tuple(b, expect_attr::TUPLE, &tcp4(1, 2)))),
                Send(exp(exp_msg::NEW, RA | flags::CREATE, 28, AF_INET, |_| {})),
                Send(exp(exp_msg::NEW, RA, 29, AF_INET, |b| {
                    wire::put_tuple(b, expect_attr::MASTER, &tcp4(1000, 80));
                    wire::put_tuple(b, expect_attr::TUPLE, &tcp4(3000, 21));
                    wire::put_tuple(b, expect_attr::MASK, &tcp4(0xffff, 0xffff));
                })),
                Send(exp(exp_msg::NEW, RA | flags::CREATE, 30, AF_INET, |b| {
                    wire::put_tuple(b, expect_attr::MASTER, &tcp4(5, 5));
                    wire::put_tuple(b, expect_attr::TUPLE, &tcp4(3000, 21));
                    wire::put_tuple(b, expect_attr::MASK, &tcp4(0xffff, 0xffff));
                })),
                Send(exp(exp_msg::NEW, RA | flags::CREATE, 31, AF_INET, |b| {
                    wire::put_tuple(b, expect_attr::MASTER, &tcp4(1000, 80));
                    wire::put_tuple(b, expect_attr::TUPLE, &tcp4(3000, 21));
                    wire::put_tuple(b, expect_attr::MASK, &tcp4(0xffff, 0xffff));
                })),
                Send(exp(exp_msg::GET_STATS_CPU, DUMP, 32, 0, |_| {})),
                Send(exp(exp_msg::GET_STATS_CPU, RA, 33, 0, |_| {})),
                Send(exp(exp_msg::COUNT, RA, 34, 0, |_| {})),
                Send(exp(exp_msg::GET, RA, 35, AF_INET, |b| {
                    b.put(expect_attr::HELP_NAME, b"abc");
                })),
            ],
        ),
    ));
    v.push(case(
        "unprivileged",
        with(
            populate(),
            vec![
                Unprivileged(dump(20, 0, |_| {})),
                Unprivileged(cat(&[
                    get(21, attr::TUPLE_ORIG, tcp4(1000, 80)),
                    del(22, attr::TUPLE_ORIG, tcp4(1000, 80)),
                ])),
                Send(ct(msg::GET_STATS, flags::REQUEST, 23, 0, |_| {})),
            ],
        ),
    ));
    v
}

// ---- running ----

/// What one step produced on each side.
struct Exchange {
    request: Vec<u8>,
    kernel: Vec<Vec<u8>>,
    ours: Vec<Vec<u8>>,
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

/// The `CTA_ID` of the last connection message in `msgs`.
fn last_id(msgs: &[Vec<u8>]) -> Option<u32> {
    msgs.iter()
        .filter(|m| Header::parse(m).is_ok_and(|h| h.kind == wire::nlmsg_type(msg::NEW)))
        .filter_map(|m| wire::parse_object(&m[16..]).ok())
        .map(|o| o.id)
        .next_back()
}

/// The number of possible CPUs (`nr_cpu_ids`), which the kernel reports statistics for.
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    text.trim().rsplit(['-', ',']).next().and_then(|n| n.parse::<usize>().ok()).map_or(1, |n| n + 1)
}

fn run_case(c: &Case, ns_name: &str) -> Result<Vec<Ran>, String> {
    let mut ns = testbed::Namespaces::default();
    ns.add(ns_name).map_err(|e| e.to_string())?;
    let registry = Registry::new();
    let max: usize = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(engine::conntrack::DEFAULT_MAX);
    let table = Conntrack::new(max, Config::default());
    let ctl = Control { registry: &registry, ct: &table };
    let cpus = possible_cpus();
    let cpu_stats = move || vec![Stats::default(); cpus];
    let start = clock::now();
    let mut ids = (0u32, 0u32);
    let mut out = Vec::new();
    for (i, step) in c.steps.iter().enumerate() {
        let privileged = !matches!(step, Step::Unprivileged(_));
        let (kbytes, obytes) = match step {
            Step::Send(b) | Step::Unprivileged(b) => (b.clone(), b.clone()),
            Step::WithId(f) => (f(ids.0), f(ids.1)),
        };
        let sock = NetlinkSocket::open(ns_name).map_err(|e| e.to_string())?;
        let sent = if privileged { sock.send(&kbytes) } else { sock.send_unprivileged(&kbytes) };
        sent.map_err(|e| format!("step {i}: send: {e}"))?;
        let datagrams = sock.drain(1 << 16).map_err(|e| format!("step {i}: recv: {e}"))?;
        let now = Timestamp(1_000_000_000 + clock::now().duration_since(start).as_nanos() as u64);
        let env = Env { now, cpu_stats: &cpu_stats };
        let answer = control::handle_at(&ctl, &env, Peer { portid: sock.portid(), privileged }, &obytes);
        let mut ours = split(&answer.datagrams);
        if let Some(d) = answer.dump {
            ours.extend(d.drain(&table, now));
        }
        let kernel = split(&datagrams);
        if let Some(id) = last_id(&kernel) {
            ids.0 = id;
        }
        if let Some(id) = last_id(&ours) {
            ids.1 = id;
        }
        out.push((privileged, sock.portid(), Exchange { request: kbytes, kernel, ours }));
    }
    Ok(out)
}

/// A message with what cannot match taken out: `(normalised bytes, timeouts)`. Connection
/// messages lose their `CTA_ID` and `CTA_TIMEOUT` values (the timeouts are returned), per-CPU
/// statistics their values; an error's echoed request loses its `CTA_ID`.
fn normalise(m: &[u8]) -> (Vec<u8>, Vec<u32>) {
    let mut out = m.to_vec();
    let mut timeouts = Vec::new();
    let Ok(h) = Header::parse(m) else { return (out, timeouts) };
    // Which attributes, from where to where, and what to do with them.
    let (from, to, stats) = match h.kind {
        k if k == wire::nlmsg_type(msg::NEW) => (20, m.len(), false),
        // GET_STATS_CPU, and EXP_GET_STATS_CPU (which the kernel sends as type 3 of subsystem 1).
        k if k == wire::nlmsg_type(msg::GET_STATS_CPU) || k == wire::nlmsg_type(exp_msg::GET_STATS_CPU) => {
            (20, m.len(), true)
        }
        // nlmsghdr, error, the echoed nlmsghdr and nfgenmsg, then the echoed attributes.
        netlink::msg_type::ERROR if m.len() >= 40 => {
            let echoed = u32::from_ne_bytes(m[20..24].try_into().expect("4 bytes")) as usize;
            (40, (20 + echoed).min(m.len()), false)
        }
        _ => return (out, timeouts),
    };
    if from > to {
        return (out, timeouts);
    }
    for a in Attrs::new(&m[from..to]).map_while(Result::ok) {
        let at = from + a.offset + 4;
        let p = a.payload.len();
        if stats || a.kind == attr::ID {
            out[at..at + p].fill(0);
        } else if a.kind == attr::TIMEOUT && h.kind != netlink::msg_type::ERROR && p >= 4 {
            timeouts.push(u32::from_be_bytes(a.payload[..4].try_into().expect("4 bytes")));
            out[at..at + 4].fill(0);
        }
    }
    (out, timeouts)
}

/// Where the recorded exchanges live.
fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("ctnetlink_vectors.txt")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

fn flat_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One step as run: whether the sender was privileged, its socket's port id, the exchange.
type Ran = (bool, u32, Exchange);

/// The recording of cases (name, steps) run against the kernel.
fn render_vectors(recorded: &[(String, Vec<Ran>)]) -> String {
    let kernel = cmd::run("uname", &["-r"]).unwrap_or_default();
    let mut out = format!(
        "# ctnetlink exchanges recorded from Linux {} by\n\
         # `CTNETLINK_BYTES_RECORD=1 cargo test -p ferrowall-tests --test ctnetlink_bytes`, replayed by\n\
         # `recorded_vectors`. Each case ran in a fresh network namespace. `> PORTID HEX`: a request\n\
         # datagram from a socket with that port id (`>!`: from a sender without CAP_NET_ADMIN);\n\
         # `< HEX`: a message of the kernel's answer.\ncpus {}\n",
        kernel.trim(),
        possible_cpus()
    );
    for (name, steps) in recorded {
        out.push_str(&format!("case {name}\n"));
        for (privileged, portid, x) in steps {
            out.push_str(&format!("{} {portid} {}\n", if *privileged { ">" } else { ">!" }, flat_hex(&x.request)));
            for m in &x.kernel {
                out.push_str(&format!("< {}\n", flat_hex(m)));
            }
        }
    }
    out
}

/// Compares one exchange: `None` when equal up to normalisation, else why not.
fn compare(x: &Exchange) -> Option<String> {
    let is_object = |m: &[u8]| Header::parse(m).is_ok_and(|h| h.kind == wire::nlmsg_type(msg::NEW));
    let side = |msgs: &[Vec<u8>]| {
        let mut objects: Vec<(Vec<u8>, Vec<u32>)> =
            msgs.iter().filter(|m| is_object(m)).map(|m| normalise(m)).collect();
        objects.sort();
        let rest: Vec<Vec<u8>> = msgs.iter().filter(|m| !is_object(m)).map(|m| normalise(m).0).collect();
        (objects, rest)
    };
    let (ko, kr) = side(&x.kernel);
    let (oo, or) = side(&x.ours);
    if kr != or {
        return Some(format!("other messages differ:\n    kernel: {}\n    ours:   {}", hexes(&kr), hexes(&or)));
    }
    if ko.len() != oo.len() {
        return Some(format!("{} connection messages from the kernel, {} ours", ko.len(), oo.len()));
    }
    for ((kb, kt), (ob, ot)) in ko.iter().zip(&oo) {
        if kb != ob {
            return Some(format!("connection messages differ:\n    kernel: {}\n    ours:   {}", hex(kb), hex(ob)));
        }
        if kt.iter().zip(ot).any(|(a, b)| a.abs_diff(*b) > 2) {
            return Some(format!("timeouts differ: kernel {kt:?}, ours {ot:?}"));
        }
    }
    None
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n            ")
}

fn hexes(ms: &[Vec<u8>]) -> String {
    ms.iter().map(|m| hex(m)).collect::<Vec<_>>().join("\n          | ")
}

#[test]
fn ctnetlink_bytes() {
    let uid = cmd::run("id", &["-u"]).expect("running id");
    assert_eq!(uid.trim(), "0", "ctnetlink-bytes needs root (it creates network namespaces)");
    testbed::remove_stale_namespaces().expect("removing namespaces left by earlier runs");
    let only = std::env::var("CTNETLINK_BYTES_ONLY").ok();
    let record = std::env::var_os("CTNETLINK_BYTES_RECORD").is_some();
    let all: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| o.split(',').any(|p| c.name.contains(p))))
        .collect();
    let pid = std::process::id();
    let (mut identical, mut steps, mut messages) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut recorded = Vec::new();
    for (n, c) in all.iter().enumerate() {
        // Names start with "fwt-<pid>-" so that remove_stale_namespaces cleans up after a crash.
        let ns_name = format!("fwt-{pid}-ctn{n}");
        let exchanges = match run_case(c, &ns_name) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{}: harness: {e}", c.name));
                continue;
            }
        };
        let mut same = true;
        for (i, (_, _, x)) in exchanges.iter().enumerate() {
            steps += 1;
            messages += x.kernel.len();
            if let Some(why) = compare(x) {
                same = false;
                failures.push(format!("{} step {i}: {why}\n  request: {}", c.name, hex(&x.request)));
            }
        }
        if same {
            identical += 1;
        }
        if c.name != "big_table" && !c.steps.iter().any(|s| matches!(s, Step::WithId(_))) {
            recorded.push((c.name.clone(), exchanges));
        }
    }
    if record {
        std::fs::write(vectors_path(), render_vectors(&recorded)).expect("writing the vectors");
    }
    for f in &failures {
        println!("{f}");
    }
    println!(
        "ctnetlink-bytes: {} cases, {identical} identical ({steps} request datagrams, {messages} kernel reply messages)",
        all.len()
    );
    assert!(failures.is_empty(), "{} difference(s); see above", failures.len());
}

/// The recorded kernel answers (`tests/ctnetlink_vectors.txt`) replayed against the handler alone.
#[test]
fn recorded_vectors() {
    let text = std::fs::read_to_string(vectors_path()).expect("reading tests/ctnetlink_vectors.txt");
    let cpus: usize = text.lines().find_map(|l| l.strip_prefix("cpus ")?.parse().ok()).expect("a cpus line");
    let cpu_stats = move || vec![Stats::default(); cpus];
    let registry = Registry::new();
    let mut table = Conntrack::new(engine::conntrack::DEFAULT_MAX, Config::default());
    let mut x: Option<Exchange> = None;
    let mut name = String::new();
    let (mut cases, mut steps, mut failures) = (0, 0, Vec::new());
    let finish = |x: Option<Exchange>, name: &str, failures: &mut Vec<String>| {
        if let Some(x) = x {
            if let Some(why) = compare(&x) {
                failures.push(format!("{name}: {why}\n  request: {}", hex(&x.request)));
            }
        }
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(n) = line.strip_prefix("case ") {
            finish(x.take(), &name, &mut failures);
            name = n.to_owned();
            table = Conntrack::new(engine::conntrack::DEFAULT_MAX, Config::default());
            cases += 1;
        } else if let Some(rest) = line.strip_prefix('>') {
            finish(x.take(), &name, &mut failures);
            steps += 1;
            let privileged = !rest.starts_with('!');
            let mut words = rest.trim_start_matches('!').split_whitespace();
            let portid: u32 = words.next().and_then(|w| w.parse().ok()).expect("a port id");
            let request = unhex(words.next().unwrap_or_default());
            let ctl = Control { registry: &registry, ct: &table };
            let now = Timestamp::from_secs(1);
            let env = Env { now, cpu_stats: &cpu_stats };
            let answer = control::handle_at(&ctl, &env, Peer { portid, privileged }, &request);
            let mut ours = split(&answer.datagrams);
            if let Some(d) = answer.dump {
                ours.extend(d.drain(&table, now));
            }
            x = Some(Exchange { request, kernel: Vec::new(), ours });
        } else if let Some(m) = line.strip_prefix("< ") {
            if let Some(x) = x.as_mut() {
                x.kernel.push(unhex(m));
            }
        }
    }
    finish(x.take(), &name, &mut failures);
    for f in &failures {
        println!("{f}");
    }
    println!("ctnetlink recorded vectors: {cases} cases, {steps} requests, {} differences", failures.len());
    assert!(cases >= 40, "only {cases} recorded cases");
    assert!(failures.is_empty(), "{} difference(s); see above", failures.len());
}
